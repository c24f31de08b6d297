//! The inventory: one TOML file that describes the cluster and its hosts.
//!
//! `Inventory::load` parses and validates it completely; everything downstream works on typed
//! values (an address is an `IpAddr`, a subnet an `IpNet`, a role an enum) and never re-checks.

mod components;
mod error;
mod hooks;
mod hostkey;
mod layout;
mod quantity;
mod raw;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use russh::keys::PublicKey;
use serde::{Deserialize, Serialize};

pub use crate::versions::{AddonKind, CniPlugin, Components, KubeVersion, Version};
pub use components::{WantedImage, allow_unsupported_version};
pub use error::{InventoryError, InventoryErrors};
pub use hooks::{Hook, HookPoint};
pub use hostkey::parse_host_key;
pub use layout::{EtcdLayout, Topology, by_reliability, etcd_layout, explicit_roles};
pub use quantity::Quantity;
pub use validate::is_dns_label;

/// A validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Where it was read from; relative paths inside it are resolved against its directory.
    pub path: PathBuf,
    pub cluster: Cluster,
    pub endpoint: Endpoint,
    pub ssh: SshSettings,
    pub etcd: EtcdSettings,
    pub pki: PkiSettings,
    /// Every component version: the minor's row of data/versions.toml with `[versions]` applied.
    pub versions: Components,
    pub artifacts: ArtifactSettings,
    /// `[registry]`: the site's own registry, which every image name points at.
    pub registry: Option<Registry>,
    pub containerd: ContainerdSettings,
    /// The CNI to apply once the control plane is up; `None` leaves networking to the operator.
    pub cni: Option<Cni>,
    pub security: SecuritySettings,
    /// `[addons]`: what kbs applies after the CNI, each from its pinned upstream release.
    pub addons: Vec<Addon>,
    /// `[addons.logging]`: where the logging addon ships the logs; `None`: no logging addon.
    pub logging: Option<LogOutput>,
    /// `[addons.ingress]`: how the ingress controller is reached; `None`: no ingress addon.
    pub ingress: Option<IngressSettings>,
    /// `[addons.grafana]`: Grafana's admin password; `None`: no Grafana.
    pub grafana: Option<GrafanaSettings>,
    /// Addons off only because of their default here, with why (for `kbs plan`).
    pub addons_off_by_default: Vec<(AddonKind, &'static str)>,
    /// `[backup]`: scheduled etcd snapshots on the etcd hosts and the default backup recipient.
    pub backup: BackupSettings,
    pub hosts: Vec<Host>,
    /// `[[hook]]`: the operator's commands before and after apply, upgrade and reset.
    pub hooks: Vec<Hook>,
}

/// Where scheduled snapshots go on each etcd host, how often, and how many are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// A systemd `OnCalendar=` expression; `None` (`enabled = false`): no timer, only
    /// `kbs backup` from here.
    pub schedule: Option<String>,
    /// Snapshots kept (on each host by the timer; locally by `kbs backup` unless `--keep`).
    pub keep: u32,
    /// The directory on each etcd host.
    pub dir: String,
    /// An age recipient (`age1...`) every backup made by `kbs backup` is encrypted to.
    pub recipient: Option<String>,
}

impl BackupSettings {
    /// On by default, every 12 hours: a cluster's state changes slowly at the sites kbs serves,
    /// so half a day bounds what a restore loses, and two runs a day cost little disk
    /// (docs/operations.md). RKE2 chose the same interval.
    pub const DEFAULT_SCHEDULE: &str = "*-*-* 00,12:00:00";
    /// A week of history at the default interval: a bad change noticed days later, after a
    /// long weekend, still has a snapshot from before it.
    pub const DEFAULT_KEEP: u32 = 14;
    pub const DEFAULT_DIR: &str = "/var/backups/kbs-etcd";
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            schedule: Some(Self::DEFAULT_SCHEDULE.into()),
            keep: Self::DEFAULT_KEEP,
            dir: Self::DEFAULT_DIR.into(),
            recipient: None,
        }
    }
}

/// Where kubeadm, kubelet, etcd and the rest come from. Either way the files are the upstream
/// releases, checked against upstream's checksums, and copied to the hosts over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifacts {
    /// kbs downloads them on this machine at apply time (into the state dir), from upstream or
    /// through `[artifacts] mirrors`.
    Online,
    /// A bundle directory made by `kbs bundle` (air-gapped sites), checked against its manifest
    /// of SHA-256 sums and image digests before anything is copied.
    Bundle(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSettings {
    pub source: Artifacts,
    /// URL prefix rewrites, first match wins: a site's mirror of the upstream release sites.
    pub mirrors: Vec<Mirror>,
    /// Whether nodes get crictl (the CRI's command-line client).
    pub crictl: bool,
}

/// `https://dl.k8s.io/` → `https://mirror.example/k8s/`: every URL that starts with `from` is
/// fetched from `to` followed by the rest of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub from: String,
    pub to: String,
}

/// The site's registry: `host[:port][/path]`. An upstream image `registry.k8s.io/pause:3.10.1` is
/// known as `<address>/pause:3.10.1` (the upstream host is dropped, the path kept), which is
/// also kubeadm's `imageRepository`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub address: String,
    /// The CA that signed the registry's certificate, when it is not a public one.
    pub ca_file: Option<PathBuf>,
    /// That CA certificate (PEM), read when the inventory loads: containerd on every node gets it.
    pub ca_pem: Option<String>,
    /// A file (mode 0600) holding `user:password` for the registry.
    pub credentials_file: Option<PathBuf>,
}

impl Registry {
    /// The registry's host and port, without the path.
    pub fn host(&self) -> &str {
        self.address.split('/').next().unwrap_or(&self.address)
    }

    /// Where an upstream image reference lives in this registry: its path without the upstream
    /// host, except where kubeadm expects another path under a custom imageRepository.
    pub fn map(&self, upstream: &str) -> String {
        let path = match upstream.split_once('/') {
            Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
            _ => upstream,
        };
        let (repo, tag) = path.split_at(path.rfind([':', '@']).unwrap_or(path.len()));
        let repo = crate::versions::catalog()
            .images
            .registry_paths
            .get(repo)
            .map_or(repo, String::as_str);
        format!("{}/{repo}{tag}", self.address)
    }
}

/// containerd's snapshotter: `overlayfs` everywhere a kernel allows it; `native` (plain copies)
/// where overlayfs cannot mount, such as inside containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Snapshotter {
    #[default]
    Overlayfs,
    Native,
}

impl Snapshotter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overlayfs => "overlayfs",
            Self::Native => "native",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerdSettings {
    pub snapshotter: Snapshotter,
}

/// `[cni] plugin`: a CNI kbs installs from its release, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CniChoice {
    Flannel,
    Calico,
    Cilium,
    None,
}

/// The CNI kbs applies once the control plane is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cni {
    /// The release it comes from, for the plan and the bundle; `None` for a hand-written manifest.
    pub release: Option<CniRelease>,
    /// A hand-written manifest: with a bundle it is relative to the bundle directory and must be
    /// one of the bundle's files (so its SHA-256 is checked); otherwise relative to the inventory.
    pub manifest: Option<PathBuf>,
    /// The pod network's MTU, rendered into the manifest; `None` leaves the plugin's default.
    pub mtu: Option<u32>,
}

impl Cni {
    /// "flannel v0.28.9", or the hand-written manifest's file name.
    pub fn describe(&self) -> String {
        match (&self.release, &self.manifest) {
            (Some(r), None) => format!("{} {}", r.plugin.as_str(), r.version),
            (Some(r), Some(m)) => format!(
                "{} {} ({})",
                r.plugin.as_str(),
                r.version,
                m.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            ),
            (None, Some(m)) => m.file_name().map_or_else(
                || m.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            (None, None) => "no manifest".into(),
        }
    }
}

/// A CNI release: its manifest's URL and pinned sum, and the images it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniRelease {
    pub plugin: CniPlugin,
    pub version: String,
    pub manifest_url: Option<String>,
    pub sha256: Option<String>,
    pub images: Vec<String>,
}

/// `[addons] storage`: the default StorageClass kbs installs, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageChoice {
    LocalPath,
    None,
}

/// `[addons.logging] output`: the kind of log receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogOutputKind {
    Syslog,
    Http,
    Loki,
    Elasticsearch,
}

impl LogOutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syslog => "syslog",
            Self::Http => "http",
            Self::Loki => "loki",
            Self::Elasticsearch => "elasticsearch",
        }
    }
}

/// `[addons.ingress] exposure`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressExposureKind {
    NodePorts,
    Vip,
}

/// Where traffic from outside reaches the ingress controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressExposure {
    /// A NodePort Service: every node's `http` and `https` port.
    NodePorts { http: u16, https: u16 },
    /// The controller on every control plane with host ports 80 and 443: the VIP's 80 and 443
    /// reach whichever control plane holds it.
    Vip,
}

/// The ingress addon (Traefik): its exposure, whether its IngressClass is the default, and
/// whether it also serves the Gateway API (its CRDs, a GatewayClass and a Gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    pub exposure: IngressExposure,
    pub default_class: bool,
    pub gateway_api: bool,
}

/// Grafana, the monitoring addon's option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrafanaSettings {
    /// The admin user's password (mode 0600 or 0400, owned by this user): it becomes a
    /// Kubernetes Secret, and is read only when applied.
    pub admin_password_file: PathBuf,
}

/// Where the logging addon ships container logs and the API server's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOutput {
    pub kind: LogOutputKind,
    pub host: HostName,
    pub port: u16,
    pub tls: bool,
    /// http: the request path, `/...`.
    pub uri: String,
    /// elasticsearch: the user whose password the token is.
    pub user: Option<String>,
    /// The token or password (mode 0600 or 0400, owned by this user): it becomes a Kubernetes
    /// Secret, and is read only when applied.
    pub token_file: Option<PathBuf>,
}

/// An addon kbs applies after the CNI: its release, from data/versions.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addon {
    pub kind: AddonKind,
    pub version: String,
    /// The release's manifest; `None`: kbs renders the objects from templates/.
    pub manifest_url: Option<String>,
    pub sha256: Option<String>,
    pub images: Vec<AddonImage>,
    /// Applied server-side (`kubectl apply --server-side`), as upstream installs it.
    pub server_side: bool,
}

/// An image an addon runs: its full upstream name, and the reference its manifest writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddonImage {
    pub name: String,
    pub written: String,
}

impl Addon {
    /// "metrics-server v0.8.1".
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.version)
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub kubernetes_version: KubeVersion,
    pub pod_subnet: IpNet,
    pub service_subnet: IpNet,
    pub dns_domain: String,
}

/// How clients reach the API servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointMode {
    /// keepalived (VRRP) moves a VIP between control planes; haproxy balances the API servers.
    Vip,
    /// kube-vip static pods announce the VIP (ARP, leader election).
    KubeVip,
    /// A load balancer the operator runs.
    External,
    /// A DNS name with one A/AAAA record per control plane.
    Dns,
}

impl EndpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vip => "vip",
            Self::KubeVip => "kube-vip",
            Self::External => "external",
            Self::Dns => "dns",
        }
    }
}

/// The endpoint address: an IP for a VIP or LB, or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostName {
    Ip(IpAddr),
    Dns(String),
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Dns(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub mode: EndpointMode,
    pub address: HostName,
    /// The port clients use on the endpoint.
    pub port: u16,
    /// The port every API server binds on its own host.
    pub apiserver_port: u16,
    /// The NIC that carries the VIP; found from the host's address at apply time when unset.
    pub interface: Option<String>,
    pub virtual_router_id: u8,
}

/// SSH settings after merging `[ssh]` defaults with a host's own `ssh` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    pub user: String,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    /// kbs's own known_hosts file; the user's `~/.ssh/known_hosts` is always read too.
    pub known_hosts: Option<PathBuf>,
    pub jump_host: Option<JumpHost>,
}

/// A bastion that connections go through (ProxyJump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    pub user: String,
    pub address: IpAddr,
    pub port: u16,
    /// The bastion's pinned host key.
    pub host_key: Option<PublicKey>,
}

#[derive(Debug, Clone, Default)]
pub struct EtcdSettings {
    /// The member count asked for; `None` lets the topology choose.
    pub members: Option<usize>,
}

/// The key algorithm for every key kbs generates (kubeadm's `encryptionAlgorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    // kebab-case alone would spell it `rsa2048`; `kbs init` documents `rsa-2048`.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyAlgorithm {
    /// The value kubeadm's `ClusterConfiguration.encryptionAlgorithm` takes.
    pub fn kubeadm_name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ECDSA-P256",
            Self::Rsa2048 => "RSA-2048",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PkiSettings {
    pub algorithm: KeyAlgorithm,
    /// A directory holding CAs the user provides (kubeadm layout), used instead of new ones.
    pub ca_dir: Option<PathBuf>,
    pub ca_validity_days: u32,
    pub cert_validity_days: u32,
    /// `kbs apply` re-issues (and rolls out) a leaf certificate or kubeconfig that expires
    /// within this many days.
    pub renew_before_days: u32,
    /// Extra API server SANs.
    pub extra_sans: Vec<HostName>,
}

impl PkiSettings {
    /// A month ahead: several applies (and `kbs status` warnings from 90 days) before expiry.
    pub const DEFAULT_RENEW_BEFORE_DAYS: u32 = 30;
    /// `kbs status`, `kbs check` and `kbs certs check` warn this many days before expiry.
    pub const WARN_DAYS: u32 = 90;
}

/// Pod Security Admission levels, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    Restricted,
}

impl PodSecurityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// `[security]`: every default is the hardened choice; each `false` (or a weaker level) relaxes
/// one and makes `kbs plan` warn. docs/security.md explains each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySettings {
    /// Anonymous requests to every API path (RBAC still applies), instead of health checks only.
    pub anonymous_auth: bool,
    pub profiling: bool,
    pub audit_log: bool,
    pub audit_log_max_age_days: u32,
    pub audit_log_max_backups: u32,
    pub audit_log_max_size_mb: u32,
    /// Secrets encrypted at rest in etcd with a key kbs keeps in the state directory.
    pub encrypt_secrets: bool,
    /// Cluster-wide Pod Security Admission `enforce` level; warn and audit are always `restricted`.
    pub pod_security: PodSecurityLevel,
    pub protect_kernel_defaults: bool,
    /// Kubelet serving certificates from the cluster CA (`serverTLSBootstrap`).
    pub kubelet_serving_certificates: bool,
    /// kubeReserved / systemReserved / evictionHard sized from each host.
    pub reserve_resources: bool,
    /// Overrides of the size-based API request limits.
    pub max_requests_inflight: Option<u32>,
    pub max_mutating_requests_inflight: Option<u32>,
    /// kube-controller-manager and kube-scheduler listen on every address instead of 127.0.0.1.
    pub expose_component_ports: bool,
    /// Override of the size-based `--terminated-pod-gc-threshold`.
    pub terminated_pod_gc_threshold: Option<u32>,
    /// Namespaces kbs creates after the cluster is up, with their guard rails.
    pub namespaces: Vec<NamespaceBaseline>,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            anonymous_auth: false,
            profiling: false,
            audit_log: true,
            audit_log_max_age_days: 30,
            audit_log_max_backups: 10,
            audit_log_max_size_mb: 100,
            encrypt_secrets: true,
            pod_security: PodSecurityLevel::Baseline,
            protect_kernel_defaults: true,
            kubelet_serving_certificates: true,
            reserve_resources: true,
            max_requests_inflight: None,
            max_mutating_requests_inflight: None,
            expose_component_ports: false,
            terminated_pod_gc_threshold: None,
            namespaces: Vec::new(),
        }
    }
}

impl SecuritySettings {
    /// One sentence per default the inventory relaxed, for the plan's warnings.
    pub fn relaxations(&self) -> Vec<String> {
        let mut w = Vec::new();
        let mut relaxed = |on: bool, what: &str| {
            if on {
                w.push(format!("security: {what}"));
            }
        };
        relaxed(
            self.anonymous_auth,
            "anonymous_auth = true: the API server accepts anonymous requests on every path, not only health checks and join discovery.",
        );
        relaxed(
            self.profiling,
            "profiling = true: the API server, controller-manager and scheduler serve /debug/pprof.",
        );
        relaxed(
            self.expose_component_ports,
            "expose_component_ports = true: kube-controller-manager and kube-scheduler listen on every address, not only 127.0.0.1.",
        );
        relaxed(
            !self.audit_log,
            "audit_log = false: API requests are not audited.",
        );
        relaxed(
            !self.encrypt_secrets,
            "encrypt_secrets = false: Secrets are stored unencrypted in etcd.",
        );
        relaxed(
            self.pod_security < PodSecurityLevel::Baseline,
            "pod_security = \"privileged\": Pod Security Admission enforces nothing; privileged pods and host mounts are allowed.",
        );
        relaxed(
            !self.protect_kernel_defaults,
            "protect_kernel_defaults = false: the kubelet starts even when kernel tunables differ from what it expects.",
        );
        relaxed(
            !self.kubelet_serving_certificates,
            "kubelet_serving_certificates = false: kubelets serve self-signed certificates nobody can verify.",
        );
        relaxed(
            !self.reserve_resources,
            "reserve_resources = false: pods may use the memory and CPU the kubelet and system need.",
        );
        w
    }
}

/// An optional namespace with quota, container defaults and a default-deny NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceBaseline {
    pub name: String,
    /// ResourceQuota `hard`, in Kubernetes key order (`requests.cpu`, ...); empty means none.
    pub quota: Vec<(&'static str, Quantity)>,
    /// LimitRange container default and default request; `None` means no LimitRange entry.
    pub container_cpu: Option<Quantity>,
    pub container_memory: Option<Quantity>,
    pub default_deny: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Etcd,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ControlPlane => "control-plane",
            Self::Etcd => "etcd",
            Self::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub address: IpAddr,
    /// Roles written in the inventory; `None` lets the topology choose.
    pub roles: Option<Vec<Role>>,
    /// Higher is more reliable; decides where etcd goes on two hosts.
    pub reliability: i64,
    /// One etcd member per listed directory on this host.
    pub etcd_data_dirs: Vec<PathBuf>,
    /// The host's pinned SSH host key.
    pub host_key: Option<PublicKey>,
    pub ssh: SshSettings,
}

impl Inventory {
    /// Reads and validates an inventory file. All problems are reported together.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(Self::parse(path, &text)?)
    }

    /// Parses inventory text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InventoryErrors> {
        validate::parse(path, text, components::unsupported_allowed())
    }

    /// `parse` accepting an end-of-life Kubernetes version, as `--allow-unsupported-version` does.
    pub fn parse_allowing_unsupported(path: &Path, text: &str) -> Result<Self, InventoryErrors> {
        validate::parse(path, text, true)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The name an upstream image has on the hosts: in the site's registry when there is one.
    pub fn image_name(&self, upstream: &str) -> String {
        self.registry
            .as_ref()
            .map_or_else(|| upstream.to_string(), |r| r.map(upstream))
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    // The cause is in the message, not a `source`: miette would print it a second time.
    #[error("cannot read inventory {}: {error}", path.display())]
    #[diagnostic(help("pass the path of an inventory file; `kbs init` writes a starter one"))]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] InventoryErrors),
}
