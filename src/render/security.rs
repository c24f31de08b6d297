//! The hardened defaults as template values: API server, controller-manager and scheduler
//! flags, API server mounts, kubelet settings, per-host node allocatable, namespace baselines.
//! docs/security.md explains every choice.

use serde::Serialize;

use crate::inventory::{NamespaceBaseline, Quantity, Role, SecuritySettings};
use crate::plan::{ClusterPlan, PlannedHost};

use super::{HostResources, RenderInputs};

pub const AUDIT_POLICY_PATH: &str = "/etc/kubernetes/audit/policy.yaml";
pub const ENCRYPTION_CONFIG_PATH: &str = "/etc/kubernetes/encryption/config.yaml";
pub const ADMISSION_CONFIG_PATH: &str = "/etc/kubernetes/admission/config.yaml";
pub const AUTHENTICATION_CONFIG_PATH: &str = "/etc/kubernetes/authentication/config.yaml";
/// kubeadm reads per-node patches from here on init and join (`patches.directory`).
pub const KUBEADM_PATCHES_DIR: &str = "/etc/kubernetes/kubeadm/patches";
const AUDIT_LOG_DIR: &str = "/var/log/kubernetes/audit";
/// The API server's audit log (the logging addon ships it).
pub(super) const AUDIT_LOG_PATH: &str = "/var/log/kubernetes/audit/audit.log";

/// TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are not configurable in Go).
const CIPHER_SUITES: [&str; 6] = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// Paths anonymous requests may reach from 1.32 on: kubeadm's static-pod probes and the front's
/// health checks (no credentials), and the ConfigMap `kubeadm join` reads before it has any.
const ANONYMOUS_PATHS: [&str; 4] = [
    "/healthz",
    "/livez",
    "/readyz",
    "/api/v1/namespaces/kube-public/configmaps/cluster-info",
];

/// The first minor whose AuthenticationConfiguration (v1beta1) has `anonymous.conditions`
/// enabled by default (AnonymousAuthConfigurableEndpoints beta).
const ANONYMOUS_CONDITIONS_MINOR: u32 = 32;

/// Sizes node allocatable when apply gave no facts for a host: kubeadm's minimum machine, so
/// the reservation fits any host that can run Kubernetes at all.
const ASSUMED_HOST: HostResources = HostResources {
    mem_mb: 2048,
    cpus: 2,
};

/// The control-plane components whose flags kbs renders into the ClusterConfiguration
/// (`apiServer`, `controllerManager`, `scheduler` `.extraArgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    ApiServer,
    ControllerManager,
    Scheduler,
}

impl Component {
    pub const ALL: [Self; 3] = [Self::ApiServer, Self::ControllerManager, Self::Scheduler];

    /// The binary, which also names its static pod manifest.
    pub fn binary(self) -> &'static str {
        match self {
            Self::ApiServer => "kube-apiserver",
            Self::ControllerManager => "kube-controller-manager",
            Self::Scheduler => "kube-scheduler",
        }
    }

    /// The short name `kbs check` uses (`apiserver-flags`, ...).
    pub fn short(self) -> &'static str {
        match self {
            Self::ApiServer => "apiserver",
            Self::ControllerManager => "controller-manager",
            Self::Scheduler => "scheduler",
        }
    }

    /// Where kubeadm writes its static pod manifest.
    pub fn manifest(self) -> String {
        format!("/etc/kubernetes/manifests/{}.yaml", self.binary())
    }
}

#[derive(Serialize)]
pub struct SecurityCtx {
    apiserver_args: Vec<Arg>,
    apiserver_volumes: Vec<Volume>,
    controller_manager_args: Vec<Arg>,
    scheduler_args: Vec<Arg>,
    encryption_key: String,
    anonymous_paths: Vec<&'static str>,
    pod_security_enforce: &'static str,
    server_tls_bootstrap: bool,
    protect_kernel_defaults: bool,
    tls_cipher_suites: &'static [&'static str],
    patches_dir: &'static str,
    /// None when the inventory turned reservations off.
    reserved: Option<ReservedCtx>,
}

#[derive(Serialize)]
struct Arg {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    name: &'static str,
    host_path: &'static str,
    mount_path: &'static str,
    read_only: bool,
    path_type: &'static str,
}

#[derive(Serialize)]
struct ReservedCtx {
    /// Why these numbers: the host's facts, or the assumed minimum host.
    basis: String,
    kube_cpu: String,
    kube_memory: String,
    system_cpu: String,
    system_memory: String,
    eviction_memory: String,
}

/// The objects of a namespace baseline besides the Namespace; `kbs check` looks them up by name.
pub const BASELINE_QUOTA: &str = "kbs-quota";
pub const BASELINE_LIMITS: &str = "kbs-container-defaults";
pub const BASELINE_POLICY: &str = "kbs-default-deny";

/// One namespace baseline as `baseline-namespace.yaml` sees it.
#[derive(Serialize)]
pub struct NamespaceCtx<'a> {
    name: &'a str,
    quota_name: &'static str,
    limits_name: &'static str,
    policy_name: &'static str,
    quota: Vec<QuotaItem<'a>>,
    container_cpu: Option<&'a str>,
    container_memory: Option<&'a str>,
    default_deny: bool,
}

#[derive(Serialize)]
struct QuotaItem<'a> {
    key: &'static str,
    value: &'a str,
}

impl<'a> NamespaceCtx<'a> {
    pub fn new(ns: &'a NamespaceBaseline) -> Self {
        Self {
            name: &ns.name,
            quota_name: BASELINE_QUOTA,
            limits_name: BASELINE_LIMITS,
            policy_name: BASELINE_POLICY,
            quota: ns
                .quota
                .iter()
                .map(|(key, value)| QuotaItem {
                    key,
                    value: value.as_str(),
                })
                .collect(),
            container_cpu: ns.container_cpu.as_ref().map(Quantity::as_str),
            container_memory: ns.container_memory.as_ref().map(Quantity::as_str),
            default_deny: ns.default_deny,
        }
    }
}

impl SecurityCtx {
    pub fn new(plan: &ClusterPlan, host: &PlannedHost, inputs: &RenderInputs) -> Self {
        let s = &plan.inventory.security;
        let minor = plan.inventory.cluster.kubernetes_version.minor;
        let anonymous_paths = if !s.anonymous_auth && minor >= ANONYMOUS_CONDITIONS_MINOR {
            ANONYMOUS_PATHS.to_vec()
        } else {
            Vec::new()
        };
        let nodes = node_count(plan);
        let (args, volumes) = apiserver(s, !anonymous_paths.is_empty(), nodes);
        Self {
            apiserver_args: args,
            apiserver_volumes: volumes,
            controller_manager_args: controller_manager(s, nodes),
            scheduler_args: scheduler(s),
            encryption_key: inputs.encryption_key.as_base64().to_string(),
            anonymous_paths,
            pod_security_enforce: s.pod_security.as_str(),
            server_tls_bootstrap: s.kubelet_serving_certificates,
            protect_kernel_defaults: s.protect_kernel_defaults,
            tls_cipher_suites: &CIPHER_SUITES,
            patches_dir: KUBEADM_PATCHES_DIR,
            reserved: s
                .reserve_resources
                .then(|| reserved(inputs.host_resources.get(&host.name))),
        }
    }

    pub fn has_authentication_config(&self) -> bool {
        !self.anonymous_paths.is_empty()
    }
}

/// Control planes and workers: what the size-based limits count.
fn node_count(plan: &ClusterPlan) -> usize {
    plan.hosts
        .iter()
        .filter(|h| h.has(Role::ControlPlane) || h.has(Role::Worker))
        .count()
}

/// The flags apply renders into `component`'s `extraArgs` for this plan, as (name, value): what
/// `kbs check` expects to find on every control plane.
pub fn component_flags(plan: &ClusterPlan, component: Component) -> Vec<(&'static str, String)> {
    let s = &plan.inventory.security;
    let nodes = node_count(plan);
    let args = match component {
        Component::ApiServer => {
            let authn_config = !s.anonymous_auth
                && plan.inventory.cluster.kubernetes_version.minor >= ANONYMOUS_CONDITIONS_MINOR;
            apiserver(s, authn_config, nodes).0
        }
        Component::ControllerManager => controller_manager(s, nodes),
        Component::Scheduler => scheduler(s),
    };
    args.into_iter().map(|a| (a.name, a.value)).collect()
}

fn arg(name: &'static str, value: impl Into<String>) -> Arg {
    Arg {
        name,
        value: value.into(),
    }
}

/// What the controller-manager and the scheduler share (CIS 1.3.2, 1.3.7, 1.4.1, 1.4.2): no
/// pprof, their secure port (10257 / 10259) on loopback only, and the API server's TLS.
/// kubeadm already binds them to 127.0.0.1; written anyway so the config says what runs.
fn component_common(s: &SecuritySettings) -> Vec<Arg> {
    let mut args = Vec::new();
    if !s.profiling {
        args.push(arg("profiling", "false"));
    }
    let bind = if s.expose_component_ports {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    args.push(arg("bind-address", bind));
    args.push(arg("tls-min-version", "VersionTLS12"));
    args.push(arg("tls-cipher-suites", CIPHER_SUITES.join(",")));
    args
}

fn controller_manager(s: &SecuritySettings, nodes: usize) -> Vec<Arg> {
    let mut args = component_common(s);
    // Each controller acts with its own service account, so RBAC limits each one (CIS 1.3.3).
    args.push(arg("use-service-account-credentials", "true"));
    args.push(arg(
        "terminated-pod-gc-threshold",
        s.terminated_pod_gc_threshold
            .unwrap_or_else(|| terminated_pod_gc_threshold(nodes))
            .to_string(),
    ));
    args
}

fn scheduler(s: &SecuritySettings) -> Vec<Arg> {
    component_common(s)
}

/// Terminated pods kept before the pod garbage collector deletes the oldest (CIS 1.3.1): 100 per
/// node, at least 500, at most Kubernetes' default 12500. Every one stays in etcd and in every
/// pod informer's cache; 12500 suits large clusters, not small control planes.
pub fn terminated_pod_gc_threshold(nodes: usize) -> u32 {
    u32::try_from(nodes.saturating_mul(100))
        .unwrap_or(u32::MAX)
        .clamp(500, 12_500)
}

fn apiserver(s: &SecuritySettings, authn_config: bool, nodes: usize) -> (Vec<Arg>, Vec<Volume>) {
    let mut args = Vec::new();
    let mut volumes = Vec::new();
    let mut push = |name, value: &str| args.push(arg(name, value));
    // Mounting directories, not files: apply replaces files by rename, which a file bind mount
    // would not see.
    let config_dir = |name, dir| Volume {
        name,
        host_path: dir,
        mount_path: dir,
        read_only: true,
        path_type: "Directory",
    };
    push("authorization-mode", "Node,RBAC");
    if authn_config {
        push("authentication-config", AUTHENTICATION_CONFIG_PATH);
        volumes.push(config_dir(
            "kbs-authentication",
            "/etc/kubernetes/authentication",
        ));
    }
    if !s.profiling {
        push("profiling", "false");
    }
    push("tls-min-version", "VersionTLS12");
    push("tls-cipher-suites", &CIPHER_SUITES.join(","));
    if s.audit_log {
        push("audit-policy-file", AUDIT_POLICY_PATH);
        push("audit-log-path", AUDIT_LOG_PATH);
        push("audit-log-maxage", &s.audit_log_max_age_days.to_string());
        push("audit-log-maxbackup", &s.audit_log_max_backups.to_string());
        push("audit-log-maxsize", &s.audit_log_max_size_mb.to_string());
        volumes.push(config_dir("kbs-audit-policy", "/etc/kubernetes/audit"));
        volumes.push(Volume {
            name: "kbs-audit-log",
            host_path: AUDIT_LOG_DIR,
            mount_path: AUDIT_LOG_DIR,
            read_only: false,
            path_type: "DirectoryOrCreate",
        });
    }
    if s.encrypt_secrets {
        push("encryption-provider-config", ENCRYPTION_CONFIG_PATH);
        volumes.push(config_dir("kbs-encryption", "/etc/kubernetes/encryption"));
    }
    push("admission-control-config-file", ADMISSION_CONFIG_PATH);
    volumes.push(config_dir("kbs-admission", "/etc/kubernetes/admission"));
    let (reads, writes) = inflight_limits(nodes);
    push(
        "max-requests-inflight",
        &s.max_requests_inflight.unwrap_or(reads).to_string(),
    );
    push(
        "max-mutating-requests-inflight",
        &s.max_mutating_requests_inflight
            .unwrap_or(writes)
            .to_string(),
    );
    (args, volumes)
}

/// Per API server (reads, writes) in flight by node count: kube's defaults 400/200 are meant
/// for tens of nodes; small clusters run on small control planes and are better protected by
/// lower limits, large ones need more.
pub fn inflight_limits(nodes: usize) -> (u32, u32) {
    match nodes {
        0..=5 => (200, 100),
        6..=50 => (400, 200),
        51..=500 => (800, 400),
        _ => (1600, 800),
    }
}

fn reserved(facts: Option<&HostResources>) -> ReservedCtx {
    let (host, basis) = match facts {
        Some(h) => (
            *h,
            format!("sized for this host: {} CPUs, {} MiB", h.cpus, h.mem_mb),
        ),
        None => (
            ASSUMED_HOST,
            format!(
                "CONSERVATIVE DEFAULT, no host facts: sized for {} CPUs, {} MiB",
                ASSUMED_HOST.cpus, ASSUMED_HOST.mem_mb
            ),
        ),
    };
    ReservedCtx {
        basis,
        kube_cpu: format!("{}m", kube_reserved_cpu_millis(host.cpus)),
        kube_memory: format!("{}Mi", kube_reserved_memory_mib(host.mem_mb)),
        system_cpu: "100m".into(),
        system_memory: format!("{}Mi", (host.mem_mb / 20).clamp(128, 1024)),
        eviction_memory: format!("{}Mi", (host.mem_mb / 100).clamp(100, 500)),
    }
}

/// GKE's kube-reserved memory: 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8,
/// 6% of the next 112, 2% above; rounded up to a MiB.
pub fn kube_reserved_memory_mib(mem_mib: u64) -> u64 {
    const TIERS: [(u64, u64); 5] = [
        (4096, 25),
        (4096, 20),
        (8192, 10),
        (114_688, 6),
        (u64::MAX, 2),
    ];
    let (mut left, mut hundredths) = (mem_mib, 0);
    for (size, pct) in TIERS {
        let part = left.min(size);
        hundredths += part * pct;
        left -= part;
    }
    hundredths.div_ceil(100)
}

/// GKE's kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of the next two,
/// 0.25% of every core above four; rounded up to a millicore.
pub fn kube_reserved_cpu_millis(cpus: u32) -> u64 {
    // Tenths of a millicore per core, per tier.
    const TIERS: [(u64, u64); 4] = [(1, 600), (1, 100), (2, 50), (u64::MAX, 25)];
    let (mut left, mut tenths) = (u64::from(cpus), 0);
    for (cores, per_core) in TIERS {
        let part = left.min(cores);
        tenths += part * per_core;
        left -= part;
    }
    tenths.div_ceil(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_follow_the_documented_tiers() {
        assert_eq!(kube_reserved_memory_mib(2048), 512);
        assert_eq!(kube_reserved_memory_mib(4096), 1024);
        assert_eq!(kube_reserved_memory_mib(8192), 1024 + 820);
        // 16 GiB: 1024 + 819.2 + 819.2 = 2662.4
        assert_eq!(kube_reserved_memory_mib(16384), 2663);
        // 128 GiB adds 6% of 112 GiB; above that 2%.
        assert_eq!(kube_reserved_memory_mib(131_072), 2663 + 6881);
        assert_eq!(kube_reserved_cpu_millis(1), 60);
        assert_eq!(kube_reserved_cpu_millis(2), 70);
        assert_eq!(kube_reserved_cpu_millis(4), 80);
        assert_eq!(kube_reserved_cpu_millis(8), 90);
        assert_eq!(kube_reserved_cpu_millis(64), 230);
    }

    #[test]
    fn inflight_limits_grow_with_the_cluster() {
        assert_eq!(inflight_limits(1), (200, 100));
        assert_eq!(inflight_limits(20), (400, 200));
        assert_eq!(inflight_limits(1000), (1600, 800));
    }

    #[test]
    fn the_pod_gc_threshold_grows_with_the_cluster_up_to_kubes_default() {
        assert_eq!(terminated_pod_gc_threshold(1), 500);
        assert_eq!(terminated_pod_gc_threshold(20), 2000);
        assert_eq!(terminated_pod_gc_threshold(1000), 12_500);
    }
}
