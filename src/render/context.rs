//! What templates see: plain serialisable values computed from the plan, one context per host.
//! Every derived string (URLs, `host:port`, taints) is computed here so templates stay dumb.

use std::net::IpAddr;

use serde::Serialize;

use crate::inventory::{AddonKind, EndpointMode, HostName, IngressExposure, Role};
use crate::plan::{ClusterPlan, EtcdMember, PlannedHost};

use super::RenderInputs;
use super::security::SecurityCtx;

/// Shown where a value is only known at apply time and none was given.
pub const VIP_INTERFACE_PLACEHOLDER: &str = "${KBS_VIP_INTERFACE}";

const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane";

#[derive(Serialize)]
pub struct HostContext<'a> {
    cluster: ClusterCtx,
    endpoint: EndpointCtx,
    etcd: EtcdCtx,
    control_planes: Vec<ControlPlaneCtx>,
    host: HostCtx,
    join: &'a super::JoinSecrets,
    /// Only for hosts in a vip or kube-vip front.
    #[serde(skip_serializing_if = "Option::is_none")]
    vip: Option<VipCtx>,
    containerd: ContainerdCtx,
    pub security: SecurityCtx,
    /// Only on etcd hosts when `[backup] schedule` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupCtx>,
}

#[derive(Serialize)]
pub struct BackupCtx {
    schedule: String,
    keep: u32,
    dir: String,
    /// The member the snapshot is taken from: this host's first.
    member: String,
    /// Its client URL.
    endpoint: String,
}

#[derive(Serialize)]
struct ClusterCtx {
    name: String,
    kubernetes_version: String,
    /// kubeadm's imageRepository: the site's registry, or upstream's default.
    image_repository: Option<String>,
    pod_subnet: String,
    service_subnet: String,
    dns_domain: String,
    encryption_algorithm: &'static str,
    /// Extra API server SANs: the endpoint's address and the inventory's extra_sans.
    cert_sans: Vec<String>,
}

#[derive(Serialize)]
struct EndpointCtx {
    mode: &'static str,
    /// `address:port`, kubeadm's controlPlaneEndpoint.
    control_plane_endpoint: String,
    port: u16,
    apiserver_port: u16,
}

#[derive(Serialize)]
struct EtcdCtx {
    /// Every member's client URL.
    endpoints: Vec<String>,
    /// `name=peerURL,...` for every founding member.
    initial_cluster: String,
    initial_cluster_token: String,
}

#[derive(Serialize)]
pub struct MemberCtx {
    name: String,
    data_dir: String,
    client_url: String,
    local_client_url: String,
    peer_url: String,
    metrics_url: String,
}

#[derive(Serialize)]
struct ControlPlaneCtx {
    name: String,
    /// `addr:apiserver_port`, an haproxy backend.
    apiserver: String,
}

#[derive(Serialize)]
struct HostCtx {
    name: String,
    address: String,
    control_plane: bool,
    /// Runs keepalived + haproxy or kube-vip.
    front: bool,
    /// kubeadm `nodeRegistration.taints`, always written: an absent list means kubeadm's default.
    taints: Vec<Taint>,
    ignore_preflight_errors: Vec<&'static str>,
}

#[derive(Serialize)]
struct Taint {
    key: &'static str,
    effect: &'static str,
}

#[derive(Serialize)]
struct VipCtx {
    address: String,
    /// The VIP as it appears in a URL (IPv6 in brackets).
    url_host: String,
    prefix_len: u8,
    interface: String,
    /// keepalived's VRRP instance name.
    instance: String,
    state: &'static str,
    priority: u8,
    virtual_router_id: u8,
    /// The other front hosts' addresses (unicast VRRP).
    peers: Vec<String>,
}

#[derive(Serialize)]
struct ContainerdCtx {
    sandbox_image: String,
    snapshotter: &'static str,
    registry: Option<RegistryCtx>,
}

/// The site's registry as containerd's hosts.toml names it.
#[derive(Serialize)]
struct RegistryCtx {
    /// `host[:port]`: the directory under /etc/containerd/certs.d.
    host: String,
    server: String,
    /// The CA certificate (PEM), when the registry's is not publicly trusted.
    ca: Option<String>,
    ca_path: String,
}

#[derive(Serialize)]
pub struct KubeVipCtx {
    pub image: String,
    /// Host path mounted as kube-vip's kubeconfig.
    pub kubeconfig: &'static str,
}

impl KubeVipCtx {
    pub fn new(inv: &crate::inventory::Inventory, kubeconfig: &'static str) -> Self {
        Self {
            image: inv.image_name(&crate::versions::catalog().images.kube_vip),
            kubeconfig,
        }
    }
}

impl<'a> HostContext<'a> {
    pub fn new(plan: &ClusterPlan, host: &PlannedHost, inputs: &'a RenderInputs) -> Self {
        let inv = &plan.inventory;
        let e = &inv.endpoint;
        let front = plan.front.hosts.contains(&host.name);
        let control_plane = host.has(Role::ControlPlane);
        let mut cert_sans = vec![bare(&e.address)];
        for san in inv.pki.extra_sans.iter().map(bare) {
            if !cert_sans.contains(&san) {
                cert_sans.push(san);
            }
        }
        let vip = (front && matches!(e.mode, EndpointMode::Vip | EndpointMode::KubeVip))
            .then(|| vip(plan, host, inputs));
        Self {
            cluster: ClusterCtx {
                name: inv.cluster.name.clone(),
                kubernetes_version: inv.cluster.kubernetes_version.to_string(),
                image_repository: inv.registry.as_ref().map(|r| r.address.clone()),
                pod_subnet: inv.cluster.pod_subnet.to_string(),
                service_subnet: inv.cluster.service_subnet.to_string(),
                dns_domain: inv.cluster.dns_domain.clone(),
                encryption_algorithm: inv.pki.algorithm.kubeadm_name(),
                cert_sans,
            },
            endpoint: EndpointCtx {
                mode: e.mode.as_str(),
                control_plane_endpoint: plan.front.endpoint.clone(),
                port: e.port,
                apiserver_port: plan.front.apiserver_port,
            },
            etcd: EtcdCtx {
                endpoints: plan.etcd.iter().map(EtcdMember::client_url).collect(),
                initial_cluster: plan
                    .etcd
                    .iter()
                    .map(|m| format!("{}={}", m.name, m.peer_url()))
                    .collect::<Vec<_>>()
                    .join(","),
                initial_cluster_token: format!("kbs-{}", inv.cluster.name),
            },
            control_planes: plan
                .control_planes()
                .map(|h| ControlPlaneCtx {
                    name: h.name.clone(),
                    apiserver: host_port(h.address, plan.front.apiserver_port),
                })
                .collect(),
            host: HostCtx {
                name: host.name.clone(),
                address: host.address.to_string(),
                control_plane,
                front,
                taints: if control_plane && !host.has(Role::Worker) {
                    vec![Taint {
                        key: CONTROL_PLANE_TAINT,
                        effect: "NoSchedule",
                    }]
                } else {
                    Vec::new()
                },
                ignore_preflight_errors: ignore_preflight_errors(plan, control_plane),
            },
            join: &inputs.join,
            backup: backup(plan, host),
            vip,
            containerd: ContainerdCtx {
                sandbox_image: inv.image_name(&inv.versions.pause_image()),
                snapshotter: inv.containerd.snapshotter.as_str(),
                registry: inv.registry.as_ref().map(|r| RegistryCtx {
                    host: r.host().to_string(),
                    server: format!("https://{}", r.host()),
                    ca: r.ca_pem.clone(),
                    ca_path: format!("{REGISTRY_CERTS_DIR}/{}/ca.crt", r.host()),
                }),
            },
            security: SecurityCtx::new(plan, host, inputs),
        }
    }
}

impl MemberCtx {
    /// `expose_metrics`: the monitoring addon scrapes the member, so its plain-HTTP metrics
    /// listener is on the member's address too, not only on 127.0.0.1.
    pub fn new(m: &EtcdMember, expose_metrics: bool) -> Self {
        let local = format!("http://127.0.0.1:{}", m.metrics_port);
        Self {
            name: m.name.clone(),
            data_dir: m.data_dir.display().to_string(),
            client_url: m.client_url(),
            local_client_url: format!("https://127.0.0.1:{}", m.client_port),
            peer_url: m.peer_url(),
            metrics_url: if expose_metrics {
                format!("{local},http://{}", m.metrics_target())
            } else {
                local
            },
        }
    }
}

/// A SAN as kubeadm takes it: no brackets around IPv6.
fn bare(name: &HostName) -> String {
    match name {
        HostName::Ip(ip) => ip.to_string(),
        HostName::Dns(n) => n.clone(),
    }
}

fn host_port(ip: IpAddr, port: u16) -> String {
    format!("{}:{port}", HostName::Ip(ip))
}

/// Where containerd finds each registry's hosts.toml and CA.
pub const REGISTRY_CERTS_DIR: &str = "/etc/containerd/certs.d";

/// kubeadm preflight checks that kbs's layout trips on purpose.
fn ignore_preflight_errors(plan: &ClusterPlan, control_plane: bool) -> Vec<&'static str> {
    let mut checks = Vec::new();
    if control_plane {
        // A control-plane join refuses a non-empty manifests dir; kube-vip's pod is already there.
        if plan.front.mode == EndpointMode::KubeVip {
            checks.push("DirAvailable--etc-kubernetes-manifests");
        }
    }
    checks
}

fn vip(plan: &ClusterPlan, host: &PlannedHost, inputs: &RenderInputs) -> VipCtx {
    let e = &plan.inventory.endpoint;
    let first = plan
        .first_control_plane()
        .is_some_and(|f| f.name == host.name);
    let prefix_len = if matches!(e.address, HostName::Ip(IpAddr::V6(_))) {
        128
    } else {
        32
    };
    let interface = e
        .interface
        .clone()
        .or_else(|| inputs.vip_interfaces.get(&host.name).cloned())
        .unwrap_or_else(|| VIP_INTERFACE_PLACEHOLDER.to_string());
    VipCtx {
        address: bare(&e.address),
        url_host: e.address.to_string(),
        prefix_len,
        interface,
        instance: format!("{}_api", plan.inventory.cluster.name.replace('-', "_")),
        state: if first { "MASTER" } else { "BACKUP" },
        priority: if first { 101 } else { 100 },
        virtual_router_id: e.virtual_router_id,
        peers: plan
            .hosts
            .iter()
            .filter(|h| h.name != host.name && plan.front.hosts.contains(&h.name))
            .map(|h| h.address.to_string())
            .collect(),
    }
}

fn backup(plan: &ClusterPlan, host: &PlannedHost) -> Option<BackupCtx> {
    let b = &plan.inventory.backup;
    let member = plan.etcd.iter().find(|m| m.host == host.name)?;
    Some(BackupCtx {
        schedule: b.schedule.clone()?,
        keep: b.keep,
        dir: b.dir.clone(),
        member: member.name.clone(),
        endpoint: member.client_url(),
    })
}

/// What templates/monitoring.yaml sees.
#[derive(Serialize)]
pub struct MonitoringCtx {
    namespace: &'static str,
    prometheus_image: String,
    node_exporter_image: String,
    kube_state_metrics_image: String,
    retention: &'static str,
    /// The kubelets are scraped only where their serving certificates are signed by the cluster
    /// CA, so Prometheus can verify them.
    kubelet_tls: bool,
    etcd: Vec<EtcdTargetCtx>,
    /// `kbs status`'s threshold for a member's database against its quota.
    etcd_quota_ratio: f64,
    etcd_quota_percent: u32,
    /// `APIServerErrors` fires past this share of 5xx responses.
    api_error_ratio: f64,
    textfile_dir: &'static str,
    node_exporter_port: u16,
    /// `kbs status` warns this many days before a certificate expires.
    certificate_warn_days: u32,
    /// `kbs apply` renews a certificate this many days before it expires: one closer to expiry
    /// means apply has not run since.
    renew_before_days: u32,
}

#[derive(Serialize)]
struct EtcdTargetCtx {
    name: String,
    /// `address:metrics_port`.
    target: String,
}

/// node-exporter's port on every host's network (preflight checks it is free and reachable).
pub const NODE_EXPORTER_PORT: u16 = 9100;
/// The monitoring addon's namespace.
pub const MONITORING_NAMESPACE: &str = "kbs-monitoring";
/// Where node-exporter's textfile collector reads `*.prom` files on every host; kbs writes the
/// expiry of its certificates there (phases/files.rs).
pub const TEXTFILE_DIR: &str = "/var/lib/kbs/node-exporter";

impl MonitoringCtx {
    /// `images`: the addon's, in data/versions.toml's order (Prometheus, node-exporter,
    /// kube-state-metrics).
    pub fn new(plan: &ClusterPlan, images: &[String]) -> Option<Self> {
        let [prometheus, node_exporter, kube_state_metrics] = images else {
            return None;
        };
        Some(Self {
            namespace: MONITORING_NAMESPACE,
            prometheus_image: prometheus.clone(),
            node_exporter_image: node_exporter.clone(),
            kube_state_metrics_image: kube_state_metrics.clone(),
            retention: "15d",
            kubelet_tls: plan.inventory.security.kubelet_serving_certificates,
            etcd: plan
                .etcd
                .iter()
                .map(|m| EtcdTargetCtx {
                    name: m.name.clone(),
                    target: m.metrics_target(),
                })
                .collect(),
            etcd_quota_ratio: etcd_quota_ratio(),
            api_error_ratio: API_ERROR_RATIO,
            etcd_quota_percent: crate::ops::status::ETCD_QUOTA_DEGRADED_PERCENT,
            textfile_dir: TEXTFILE_DIR,
            node_exporter_port: NODE_EXPORTER_PORT,
            certificate_warn_days: crate::inventory::PkiSettings::WARN_DAYS,
            renew_before_days: plan.inventory.pki.renew_before_days,
        })
    }
}

/// A Secret an addon's pods read that kbs makes from a file of the user's (the inventory names
/// it) and applies from kubectl's stdin: it is never in the addon's file on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AddonSecret {
    #[serde(skip)]
    pub addon: AddonKind,
    pub namespace: &'static str,
    pub name: &'static str,
    /// The key of its `data` that holds the file's content.
    pub key: &'static str,
    /// What the file holds, for messages.
    #[serde(skip)]
    pub holds: &'static str,
}

impl AddonSecret {
    /// The Secret of `addon`'s, if it has one.
    pub fn of(addon: AddonKind) -> Option<Self> {
        match addon {
            AddonKind::Logging => Some(LOGGING_SECRET),
            AddonKind::Grafana => Some(GRAFANA_SECRET),
            _ => None,
        }
    }
}

/// The logging addon's namespace, and the Secret there that holds the output's token.
pub const LOGGING_NAMESPACE: &str = "kbs-logging";
pub const LOGGING_SECRET: AddonSecret = AddonSecret {
    addon: AddonKind::Logging,
    namespace: LOGGING_NAMESPACE,
    name: "fluent-bit-output",
    key: "token",
    holds: "the logging output's token",
};

/// What templates/logging.yaml sees.
#[derive(Serialize)]
pub struct LoggingCtx {
    namespace: &'static str,
    image: String,
    output: &'static str,
    host: String,
    port: u16,
    tls: bool,
    uri: String,
    user: Option<String>,
    /// The Secret with the token, which Fluent Bit gets as an environment variable; none
    /// without `token_file`.
    secret: Option<AddonSecret>,
    /// The API server's audit log on the control planes; none when it is off.
    audit_log: Option<String>,
}

impl LoggingCtx {
    pub fn new(plan: &ClusterPlan, image: String) -> Option<Self> {
        let inv = &plan.inventory;
        let l = inv.logging.as_ref()?;
        Some(Self {
            namespace: LOGGING_NAMESPACE,
            image,
            output: l.kind.as_str(),
            // Bare, also an IPv6 address: Fluent Bit's Host takes no brackets.
            host: match &l.host {
                HostName::Ip(ip) => ip.to_string(),
                HostName::Dns(name) => name.clone(),
            },
            port: l.port,
            tls: l.tls,
            uri: l.uri.clone(),
            user: l.user.clone(),
            secret: l.token_file.is_some().then_some(LOGGING_SECRET),
            audit_log: inv
                .security
                .audit_log
                .then(|| super::security::AUDIT_LOG_PATH.to_string()),
        })
    }
}

pub const INGRESS_NAMESPACE: &str = "kbs-ingress";

/// What templates/ingress.yaml sees.
#[derive(Serialize)]
pub struct IngressCtx {
    namespace: &'static str,
    image: String,
    default_class: bool,
    /// Host ports 80 and 443 on the control planes (the VIP); else a NodePort Service on these.
    vip: bool,
    http_node_port: Option<u16>,
    https_node_port: Option<u16>,
    /// Traefik's Kubernetes Gateway provider, the GatewayClass and the cluster's Gateway.
    gateway_api: bool,
}

impl IngressCtx {
    pub fn new(plan: &ClusterPlan, image: String) -> Option<Self> {
        let i = plan.inventory.ingress.as_ref()?;
        let (vip, http_node_port, https_node_port) = match i.exposure {
            IngressExposure::Vip => (true, None, None),
            IngressExposure::NodePorts { http, https } => (false, Some(http), Some(https)),
        };
        Some(Self {
            namespace: INGRESS_NAMESPACE,
            image,
            default_class: i.default_class,
            vip,
            http_node_port,
            https_node_port,
            gateway_api: i.gateway_api,
        })
    }
}

/// The Secret with Grafana's admin password, in the monitoring addon's namespace.
pub const GRAFANA_SECRET: AddonSecret = AddonSecret {
    addon: AddonKind::Grafana,
    namespace: MONITORING_NAMESPACE,
    name: "grafana-admin",
    key: "admin-password",
    holds: "Grafana's admin password",
};
/// The monitoring addon's Prometheus Service (templates/monitoring.yaml), Grafana's data source.
pub const PROMETHEUS_SERVICE: &str = "prometheus";
pub const PROMETHEUS_PORT: u16 = 9090;
/// The share of 5xx responses monitoring's `APIServerErrors` alert fires at.
pub const API_ERROR_RATIO: f64 = 0.05;

/// What templates/grafana.yaml sees.
#[derive(Serialize)]
pub struct GrafanaCtx {
    namespace: &'static str,
    image: String,
    secret: AddonSecret,
    /// Prometheus's in-cluster URL.
    prometheus_url: String,
    /// The dashboard marks etcd's database past this share of its quota, and 5xx responses past
    /// this share, as the alerts do.
    etcd_quota_ratio: f64,
    api_error_ratio: f64,
}

impl GrafanaCtx {
    pub fn new(plan: &ClusterPlan, image: String) -> Option<Self> {
        plan.inventory.grafana.as_ref()?;
        Some(Self {
            namespace: MONITORING_NAMESPACE,
            image,
            secret: GRAFANA_SECRET,
            prometheus_url: format!(
                "http://{PROMETHEUS_SERVICE}.{MONITORING_NAMESPACE}.svc.{}:{PROMETHEUS_PORT}",
                plan.inventory.cluster.dns_domain
            ),
            etcd_quota_ratio: etcd_quota_ratio(),
            api_error_ratio: API_ERROR_RATIO,
        })
    }
}

/// `kbs status`'s threshold for a member's database against its quota, as a share.
fn etcd_quota_ratio() -> f64 {
    f64::from(crate::ops::status::ETCD_QUOTA_DEGRADED_PERCENT) / 100.0
}
