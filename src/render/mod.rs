//! The rendering layer: a pure function from a `ClusterPlan` to the files `kbs apply` places on
//! each host (kubeadm configs, etcd units, the front, host settings). Certificates are not part
//! of it; the configs reference kubeadm's standard paths under /etc/kubernetes/pki.
//!
//! Same plan, same inputs → byte-identical output: apply compares hashes of these files with
//! what the hosts hold to decide what to change. See docs/render.md.

mod check;
mod context;
mod security;
mod templates;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::inventory::{Addon, AddonKind, EndpointMode, Role};
use crate::plan::{ClusterPlan, PlannedHost};

pub use crate::secrets::{ENCRYPTION_KEY_PLACEHOLDER, EncryptionKey};
pub use context::VIP_INTERFACE_PLACEHOLDER;
pub use context::{
    AddonSecret, GRAFANA_SECRET, INGRESS_NAMESPACE, LOGGING_NAMESPACE, LOGGING_SECRET,
    MONITORING_NAMESPACE, NODE_EXPORTER_PORT, PROMETHEUS_PORT, PROMETHEUS_SERVICE, TEXTFILE_DIR,
};
use context::{
    GrafanaCtx, HostContext, IngressCtx, KubeVipCtx, LoggingCtx, MemberCtx, MonitoringCtx,
};
use security::NamespaceCtx;
pub use security::{
    ADMISSION_CONFIG_PATH, AUDIT_POLICY_PATH, AUTHENTICATION_CONFIG_PATH, BASELINE_LIMITS,
    BASELINE_POLICY, BASELINE_QUOTA, Component, ENCRYPTION_CONFIG_PATH, KUBEADM_PATCHES_DIR,
    component_flags, terminated_pod_gc_threshold,
};
pub use templates::Templates;

/// Where the namespace baselines go on the first control plane; apply `kubectl apply`s them
/// once the cluster is up.
pub const BASELINES_DIR: &str = "/etc/kbs/baselines";

/// The scheduled-snapshot units and script on etcd hosts (`[backup] schedule`).
pub const BACKUP_TIMER_PATH: &str = "/etc/systemd/system/kbs-etcd-backup.timer";
pub const BACKUP_SERVICE_PATH: &str = "/etc/systemd/system/kbs-etcd-backup.service";
pub const BACKUP_SCRIPT_PATH: &str = "/etc/kbs/etcd/backup.sh";

/// Where kbs keeps the kube-vip manifest for the `kubeadm init` node's first start; apply copies
/// it over /etc/kubernetes/manifests/kube-vip.yaml before `kubeadm init` and restores the
/// rendered one afterwards.
pub const KUBE_VIP_BOOTSTRAP_PATH: &str = "/etc/kbs/kube-vip/bootstrap.yaml";

/// The kubeadm UpgradeConfiguration `kbs upgrade` hands to `kubeadm upgrade apply|node`.
pub const UPGRADE_CONFIG_PATH: &str = "/etc/kubernetes/kubeadm/upgrade.yaml";

/// Placeholders written when a value is only known at apply time (see `RenderInputs::default`).
pub const JOIN_TOKEN_PLACEHOLDER: &str = "${KBS_JOIN_TOKEN}";
pub const CA_CERT_HASH_PLACEHOLDER: &str = "${KBS_CA_CERT_HASH}";

/// One file as it must exist on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path on the host.
    pub path: PathBuf,
    pub mode: u32,
    pub content: Vec<u8>,
}

impl RenderedFile {
    /// True when the file still holds an apply-time placeholder (`${KBS_...}`); apply must never
    /// upload such a file.
    pub fn has_placeholder(&self) -> bool {
        self.content.windows(6).any(|w| w == b"${KBS_")
    }
}

/// The kubeadm join discovery, known only once the bootstrap token exists and the cluster CA is
/// made. Files holding it are mode 0600.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JoinSecrets {
    /// `[a-z0-9]{6}.[a-z0-9]{16}`; also pre-set in the init node's `bootstrapTokens`.
    pub token: String,
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo.
    pub ca_cert_hashes: Vec<String>,
}

/// A host's size from facts, for node allocatable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostResources {
    /// MemTotal in MiB.
    pub mem_mb: u64,
    pub cpus: u32,
}

/// What only apply knows. `Default` gives placeholders, which `kbs render` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderInputs {
    pub join: JoinSecrets,
    /// Host name → the NIC carrying the VIP, found from facts; used when the inventory sets no
    /// `endpoint.interface`.
    pub vip_interfaces: BTreeMap<String, String>,
    /// From `secrets::ensure_encryption_key`; the same on every control plane.
    pub encryption_key: EncryptionKey,
    /// Host name → its size from facts; a host missing here gets a conservative reservation.
    pub host_resources: BTreeMap<String, HostResources>,
}

impl Default for RenderInputs {
    fn default() -> Self {
        Self {
            join: JoinSecrets {
                token: JOIN_TOKEN_PLACEHOLDER.into(),
                ca_cert_hashes: vec![CA_CERT_HASH_PLACEHOLDER.into()],
            },
            vip_interfaces: BTreeMap::new(),
            encryption_key: EncryptionKey::placeholder(),
            host_resources: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RenderError {
    #[error("template {name}: {message}")]
    #[diagnostic(help("every variable a template uses must exist; docs/render.md lists them"))]
    Template { name: String, message: String },
    #[error("template {template} rendered an invalid {path}: {message}")]
    #[diagnostic(help("check the override of {template} in --templates"))]
    Invalid {
        template: String,
        path: PathBuf,
        message: String,
    },
    #[error("{} overrides no built-in template", path.display())]
    #[diagnostic(help("name override files like the built-in templates: {known}"))]
    UnknownOverride { path: PathBuf, known: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("built-in template {0} is missing or not UTF-8")]
    Builtin(String),
}

impl RenderError {
    fn template(name: &str, e: tera::Error) -> Self {
        // tera's report is in Display; causes (e.g. a filter's error) hang off source().
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        Self::Template {
            name: name.trim_start_matches("builtin/").to_string(),
            message,
        }
    }
}

/// The objects of an addon upstream ships no plain manifest for, rendered from its template
/// (`templates/<addon>.yaml`); `None` for an addon with a release manifest.
pub fn addon_manifest(
    plan: &ClusterPlan,
    templates: &Templates,
    addon: &Addon,
) -> Result<Option<String>, RenderError> {
    if addon.manifest_url.is_some() {
        return Ok(None);
    }
    let name = format!("{}.yaml", addon.kind.as_str());
    let mut ctx = tera::Context::new();
    match addon.kind {
        AddonKind::Monitoring => {
            let images: Vec<String> = addon.images.iter().map(|i| i.name.clone()).collect();
            let m = MonitoringCtx::new(plan, &images).ok_or_else(|| RenderError::Template {
                name: name.clone(),
                message: "data/versions.toml must list the images of Prometheus, node-exporter and kube-state-metrics, in that order".into(),
            })?;
            ctx.insert("monitoring", &m);
        }
        AddonKind::Logging => {
            let image = addon.images.first().map(|i| i.name.clone());
            let l = image
                .and_then(|i| LoggingCtx::new(plan, i))
                .ok_or_else(|| RenderError::Template {
                    name: name.clone(),
                    message: "logging needs [addons.logging] and Fluent Bit's image in data/versions.toml".into(),
                })?;
            ctx.insert("logging", &l);
        }
        AddonKind::Grafana => {
            let image = addon.images.first().map(|i| i.name.clone());
            let g = image
                .and_then(|i| GrafanaCtx::new(plan, i))
                .ok_or_else(|| RenderError::Template {
                    name: name.clone(),
                    message:
                        "grafana needs [addons.grafana] and Grafana's image in data/versions.toml"
                            .into(),
                })?;
            ctx.insert("grafana", &g);
        }
        AddonKind::Ingress => {
            let image = addon.images.first().map(|i| i.name.clone());
            let i = image
                .and_then(|i| IngressCtx::new(plan, i))
                .ok_or_else(|| RenderError::Template {
                    name: name.clone(),
                    message:
                        "ingress needs [addons.ingress] and Traefik's image in data/versions.toml"
                            .into(),
                })?;
            ctx.insert("ingress", &i);
        }
        AddonKind::MetricsServer | AddonKind::LocalPathProvisioner | AddonKind::GatewayApi => {}
    }
    templates.render(&name, &ctx).map(Some)
}

/// Every host's files, keyed by host name; each list sorted by path.
pub fn render_host_files(
    plan: &ClusterPlan,
    templates: &Templates,
    inputs: &RenderInputs,
) -> Result<BTreeMap<String, Vec<RenderedFile>>, RenderError> {
    render_some_hosts(plan, templates, inputs, |_| true)
}

/// `render_host_files` for the hosts `wanted` picks (add-node renders only the new hosts).
pub fn render_some_hosts(
    plan: &ClusterPlan,
    templates: &Templates,
    inputs: &RenderInputs,
    wanted: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Vec<RenderedFile>>, RenderError> {
    let mut out = BTreeMap::new();
    for host in plan.hosts.iter().filter(|h| wanted(&h.name)) {
        let mut files = host_files(plan, host, templates, inputs)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        out.insert(host.name.clone(), files);
    }
    Ok(out)
}

fn host_files(
    plan: &ClusterPlan,
    host: &PlannedHost,
    templates: &Templates,
    inputs: &RenderInputs,
) -> Result<Vec<RenderedFile>, RenderError> {
    let host_ctx = HostContext::new(plan, host, inputs);
    let scheduled_backup = host_ctx.backup.is_some();
    let authn_config = host_ctx.security.has_authentication_config();
    let ctx = tera::Context::from_serialize(&host_ctx)
        .map_err(|e| RenderError::template("(context)", e))?;
    let security = &plan.inventory.security;
    let mut r = Renderer {
        templates,
        ctx,
        files: Vec::new(),
    };
    let first = plan
        .first_control_plane()
        .is_some_and(|f| f.name == host.name);
    let kube_node = host.has(Role::ControlPlane) || host.has(Role::Worker);

    if kube_node {
        r.file("modules-load.conf", "/etc/modules-load.d/kbs.conf", 0o644)?;
        r.file("sysctl.conf", "/etc/sysctl.d/90-kbs.conf", 0o644)?;
        r.file(
            "containerd-config.toml",
            "/etc/containerd/config.toml",
            0o644,
        )?;
        r.file(
            "containerd.service",
            "/etc/systemd/system/containerd.service",
            0o644,
        )?;
        r.file(
            "kubelet.service",
            "/etc/systemd/system/kubelet.service",
            0o644,
        )?;
        if plan.inventory.artifacts.crictl {
            r.file("crictl.yaml", "/etc/crictl.yaml", 0o644)?;
        }
        if let Some(reg) = &plan.inventory.registry {
            let dir = format!("{}/{}", context::REGISTRY_CERTS_DIR, reg.host());
            r.file("registry-hosts.toml", &format!("{dir}/hosts.toml"), 0o644)?;
            if reg.ca_pem.is_some() {
                r.file("registry-ca.crt", &format!("{dir}/ca.crt"), 0o644)?;
            }
        }
        r.file(
            "10-kubeadm.conf",
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            0o644,
        )?;
        // Both hold the bootstrap token.
        let kubeadm = if first {
            "kubeadm-init.yaml"
        } else {
            "kubeadm-join.yaml"
        };
        let name = if first { "init.yaml" } else { "join.yaml" };
        r.file(kubeadm, &format!("/etc/kubernetes/kubeadm/{name}"), 0o600)?;
        r.file("kubeadm-upgrade.yaml", UPGRADE_CONFIG_PATH, 0o600)?;
        if security.reserve_resources {
            r.file(
                "kubelet-patch.yaml",
                &format!("{KUBEADM_PATCHES_DIR}/kubeletconfiguration+merge.yaml"),
                0o644,
            )?;
        }
    }

    if host.has(Role::ControlPlane) {
        if security.audit_log {
            r.file("audit-policy.yaml", AUDIT_POLICY_PATH, 0o644)?;
        }
        if security.encrypt_secrets {
            // Holds the key that decrypts every Secret.
            r.file("encryption-config.yaml", ENCRYPTION_CONFIG_PATH, 0o600)?;
        }
        r.file("admission-config.yaml", ADMISSION_CONFIG_PATH, 0o644)?;
        if authn_config {
            r.file(
                "authentication-config.yaml",
                AUTHENTICATION_CONFIG_PATH,
                0o644,
            )?;
        }
    }

    if first {
        for ns in &security.namespaces {
            r.ctx.insert("namespace", &NamespaceCtx::new(ns));
            r.file(
                "baseline-namespace.yaml",
                &format!("{BASELINES_DIR}/{}.yaml", ns.name),
                0o644,
            )?;
        }
        r.ctx.remove("namespace");
    }

    let members: Vec<_> = plan.etcd.iter().filter(|m| m.host == host.name).collect();
    let monitoring = plan
        .inventory
        .addons
        .iter()
        .any(|a| a.kind == AddonKind::Monitoring);
    if !members.is_empty() {
        r.file(
            "kbs-etcd@.service",
            "/etc/systemd/system/kbs-etcd@.service",
            0o644,
        )?;
        for m in members {
            r.ctx.insert("member", &MemberCtx::new(m, monitoring));
            r.file(
                "etcd-member.env",
                &format!("/etc/kbs/etcd/{}.env", m.name),
                0o600,
            )?;
        }
        r.ctx.remove("member");
        if scheduled_backup {
            r.file("etcd-backup.sh", BACKUP_SCRIPT_PATH, 0o700)?;
            r.file("kbs-etcd-backup.service", BACKUP_SERVICE_PATH, 0o644)?;
            r.file("kbs-etcd-backup.timer", BACKUP_TIMER_PATH, 0o644)?;
        }
    }

    if plan.front.hosts.contains(&host.name) {
        match plan.front.mode {
            EndpointMode::Vip => {
                r.file("keepalived.conf", "/etc/keepalived/keepalived.conf", 0o644)?;
                r.file(
                    "check_apiserver.sh",
                    "/etc/keepalived/check_apiserver.sh",
                    0o755,
                )?;
                r.file("haproxy.cfg", "/etc/haproxy/haproxy.cfg", 0o644)?;
            }
            EndpointMode::KubeVip => {
                r.ctx.insert(
                    "kube_vip",
                    &KubeVipCtx::new(&plan.inventory, "/etc/kubernetes/admin.conf"),
                );
                r.file(
                    "kube-vip.yaml",
                    "/etc/kubernetes/manifests/kube-vip.yaml",
                    0o600,
                )?;
                if first {
                    r.ctx.insert(
                        "kube_vip",
                        &KubeVipCtx::new(&plan.inventory, "/etc/kubernetes/super-admin.conf"),
                    );
                    r.file("kube-vip.yaml", KUBE_VIP_BOOTSTRAP_PATH, 0o600)?;
                }
            }
            EndpointMode::External | EndpointMode::Dns => {}
        }
    }
    Ok(r.files)
}

struct Renderer<'a> {
    templates: &'a Templates,
    ctx: tera::Context,
    files: Vec<RenderedFile>,
}

impl Renderer<'_> {
    fn file(&mut self, template: &str, path: &str, mode: u32) -> Result<(), RenderError> {
        let text = self.templates.render(template, &self.ctx)?;
        let path = Path::new(path);
        check::parses(template, path, &text)?;
        self.files.push(RenderedFile {
            path: path.to_path_buf(),
            mode,
            content: text.into_bytes(),
        });
        Ok(())
    }
}
