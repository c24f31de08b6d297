//! The inventory: one TOML file that describes the cluster and its hosts.
//!
//! `Inventory::load` parses and validates it completely; everything downstream works on typed
//! values (an address is an `IpAddr`, a subnet an `IpNet`, a role an enum) and never re-checks.

mod error;
mod raw;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use error::{InventoryError, InventoryErrors};
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
    pub artifacts: Artifacts,
    /// The CNI to apply once the control plane is up; `None` leaves networking to the operator.
    pub cni: Option<Cni>,
    pub security: SecuritySettings,
    /// `[backup]`: scheduled etcd snapshots on the etcd hosts and the default backup recipient.
    pub backup: Option<BackupSettings>,
    pub hosts: Vec<Host>,
}

/// Where scheduled snapshots go on each etcd host, how often, and how many are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// A systemd `OnCalendar=` expression; `None`: no timer, only `kbs backup` from here.
    pub schedule: Option<String>,
    /// Snapshots kept (on each host by the timer; locally by `kbs backup` unless `--keep`).
    pub keep: u32,
    /// The directory on each etcd host.
    pub dir: String,
    /// An age recipient (`age1...`) every backup made by `kbs backup` is encrypted to.
    pub recipient: Option<String>,
}

impl BackupSettings {
    pub const DEFAULT_KEEP: u32 = 10;
    pub const DEFAULT_DIR: &str = "/var/backups/kbs-etcd";
}

/// Where kubeadm, kubelet, etcd and the rest come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifacts {
    /// The distribution's and upstream's package repositories, reached by each host.
    Online,
    /// An offline bundle directory on this machine (air-gapped sites), checked against its
    /// manifest of SHA-256 sums before anything is copied.
    Bundle(PathBuf),
}

/// `[cni] manifest`: the CNI is whatever this manifest installs (Calico, Flannel, Cilium, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cni {
    /// The manifest on this machine. With an offline bundle it was written relative to the
    /// bundle directory and must be one of the bundle's files (so its SHA-256 is checked);
    /// otherwise it was written relative to the inventory.
    pub manifest: PathBuf,
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
    /// The bastion's pinned host key, as an OpenSSH public key line.
    pub host_key: Option<String>,
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
    /// Extra API server SANs.
    pub extra_sans: Vec<HostName>,
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
    pub quota: Vec<(&'static str, String)>,
    /// LimitRange container default and default request; `None` means no LimitRange entry.
    pub container_cpu: Option<String>,
    pub container_memory: Option<String>,
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
    /// The host's pinned SSH host key, as an OpenSSH public key line.
    pub host_key: Option<String>,
    pub ssh: SshSettings,
}

/// A Kubernetes release, `v1.31.4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubeVersion {
    /// The oldest and newest minors kbs knows; kubeadm's v1beta4 config API starts at 1.31.
    pub const OLDEST_MINOR: u32 = 31;
    pub const NEWEST_MINOR: u32 = 37;
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl KubeVersion {
    /// The version in what a binary or the API reports: `Kubernetes v1.31.4`, `v1.32.0+k3s1`,
    /// `v1.33.0-rc.1`, `1.31.4`.
    pub fn from_reported(text: &str) -> Option<Self> {
        let t = text.trim();
        let t = t.strip_prefix("Kubernetes ").unwrap_or(t);
        let end = t.find(['+', '-']).unwrap_or(t.len());
        t[..end].parse().ok()
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = ();

    /// `1.31.4` or `v1.31.4`: three decimal numbers, nothing else.
    fn from_str(text: &str) -> Result<Self, ()> {
        let parts: Vec<Option<u32>> = text
            .strip_prefix('v')
            .unwrap_or(text)
            .split('.')
            .map(|p| {
                (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| p.parse().ok())
                    .flatten()
            })
            .collect();
        match parts[..] {
            [Some(major), Some(minor), Some(patch)] => Ok(Self {
                major,
                minor,
                patch,
            }),
            _ => Err(()),
        }
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Inventory {
    /// Reads and validates an inventory file. All problems are reported together.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(path, &text)?)
    }

    /// Parses inventory text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InventoryErrors> {
        validate::parse(path, text)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error("cannot read inventory {}: {source}", path.display())]
    #[diagnostic(help("pass the path of an inventory file; `kbs init` writes a starter one"))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] InventoryErrors),
}
