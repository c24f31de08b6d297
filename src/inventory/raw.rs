//! The inventory exactly as written in TOML, with the source spans that error messages point at.
//! Nothing here is validated beyond what serde checks; `super::validate` turns it into typed values.

use serde::Deserialize;
use toml::Spanned;

use super::{
    CniChoice, EndpointMode, IngressExposureKind, KeyAlgorithm, LogOutputKind, PodSecurityLevel,
    Role, Snapshotter, StorageChoice,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    pub cluster: RawCluster,
    pub endpoint: RawEndpoint,
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub etcd: RawEtcd,
    #[serde(default)]
    pub pki: RawPki,
    #[serde(default)]
    pub versions: RawVersions,
    #[serde(default)]
    pub artifacts: RawArtifacts,
    #[serde(default)]
    pub registry: Option<RawRegistry>,
    #[serde(default)]
    pub containerd: RawContainerd,
    #[serde(default)]
    pub cni: RawCni,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub addons: RawAddons,
    #[serde(default)]
    pub backup: Option<RawBackup>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<Spanned<RawHost>>,
    #[serde(default, rename = "hook")]
    pub hooks: Vec<super::hooks::RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: Spanned<String>,
    pub kubernetes_version: Option<Spanned<String>>,
    pub pod_subnet: Spanned<String>,
    pub service_subnet: Spanned<String>,
    pub dns_domain: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub mode: Spanned<EndpointMode>,
    pub address: Spanned<String>,
    pub port: Option<Spanned<u16>>,
    pub apiserver_port: Option<Spanned<u16>>,
    pub interface: Option<Spanned<String>>,
    pub virtual_router_id: Option<Spanned<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsh {
    pub user: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub identity_file: Option<Spanned<String>>,
    pub known_hosts: Option<Spanned<String>>,
    pub jump_host: Option<Spanned<String>>,
    pub jump_host_key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    pub members: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPki {
    pub algorithm: Option<KeyAlgorithm>,
    pub ca_dir: Option<Spanned<String>>,
    pub ca_validity_days: Option<Spanned<u32>>,
    pub cert_validity_days: Option<Spanned<u32>>,
    pub renew_before_days: Option<Spanned<u32>>,
    #[serde(default)]
    pub extra_sans: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArtifacts {
    pub bundle: Option<Spanned<String>>,
    #[serde(default)]
    pub mirrors: Vec<RawMirror>,
    pub crictl: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirror {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

/// `[versions]`: overrides of the components `data/versions.toml` pins for the minor.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVersions {
    pub etcd: Option<Spanned<String>>,
    pub containerd: Option<Spanned<String>>,
    pub runc: Option<Spanned<String>>,
    pub cni_plugins: Option<Spanned<String>>,
    pub crictl: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub address: Spanned<String>,
    pub ca_file: Option<Spanned<String>>,
    pub credentials_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainerd {
    pub snapshotter: Option<Snapshotter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCni {
    pub plugin: Option<Spanned<CniChoice>>,
    pub version: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    pub manifest: Option<Spanned<String>>,
    pub mtu: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddons {
    pub metrics_server: Option<Spanned<bool>>,
    pub storage: Option<Spanned<StorageChoice>>,
    pub monitoring: Option<Spanned<bool>>,
    #[serde(default)]
    pub logging: Option<RawLogging>,
    #[serde(default)]
    pub ingress: Option<RawIngress>,
    /// Spanned: its errors point at the table.
    #[serde(default)]
    pub grafana: Option<Spanned<RawGrafana>>,
}

/// `[addons.grafana]`: Grafana on the monitoring addon's Prometheus; on while the table is there.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrafana {
    pub admin_password_file: Option<Spanned<String>>,
}

/// `[addons.ingress]`: Traefik; on while the table is there.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngress {
    pub exposure: Option<Spanned<IngressExposureKind>>,
    pub http_node_port: Option<Spanned<u16>>,
    pub https_node_port: Option<Spanned<u16>>,
    pub default_class: Option<bool>,
    pub gateway_api: Option<bool>,
}

/// `[addons.logging]`: where Fluent Bit ships the logs; off while `output` is unset.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    pub output: Option<Spanned<LogOutputKind>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub tls: Option<bool>,
    /// http: the request path.
    pub uri: Option<Spanned<String>>,
    /// elasticsearch: the user the token is the password of.
    pub user: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurity {
    pub anonymous_auth: Option<bool>,
    pub profiling: Option<bool>,
    pub audit_log: Option<bool>,
    pub audit_log_max_age_days: Option<Spanned<u32>>,
    pub audit_log_max_backups: Option<Spanned<u32>>,
    pub audit_log_max_size_mb: Option<Spanned<u32>>,
    pub encrypt_secrets: Option<bool>,
    pub pod_security: Option<PodSecurityLevel>,
    pub protect_kernel_defaults: Option<bool>,
    pub kubelet_serving_certificates: Option<bool>,
    pub reserve_resources: Option<bool>,
    pub max_requests_inflight: Option<Spanned<u32>>,
    pub max_mutating_requests_inflight: Option<Spanned<u32>>,
    pub expose_component_ports: Option<bool>,
    pub terminated_pod_gc_threshold: Option<Spanned<u32>>,
    #[serde(default, rename = "namespace")]
    pub namespaces: Vec<RawNamespace>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNamespace {
    pub name: Spanned<String>,
    pub requests_cpu: Option<Spanned<String>>,
    pub requests_memory: Option<Spanned<String>>,
    pub limits_cpu: Option<Spanned<String>>,
    pub limits_memory: Option<Spanned<String>>,
    pub pods: Option<Spanned<u32>>,
    pub container_cpu: Option<Spanned<String>>,
    pub container_memory: Option<Spanned<String>>,
    pub default_deny: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    pub enabled: Option<Spanned<bool>>,
    pub schedule: Option<Spanned<String>>,
    pub keep: Option<Spanned<u32>>,
    pub dir: Option<Spanned<String>>,
    pub recipient: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub roles: Option<Spanned<Vec<Role>>>,
    #[serde(default)]
    pub reliability: i64,
    pub etcd_data_dirs: Option<Spanned<Vec<Spanned<String>>>>,
    pub host_key: Option<Spanned<String>>,
    pub ssh: Option<RawSsh>,
}
