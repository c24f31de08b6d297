//! What gets installed and from where: the Kubernetes version and its policy, `[versions]`,
//! `[artifacts]`, `[registry]`, `[containerd]` and `[cni]`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use toml::Spanned;

use super::error::Reporter;
use super::raw::RawInventory;
use super::validate::resolve_path;
use super::{
    Addon, AddonImage, ArtifactSettings, Artifacts, Cni, CniChoice, CniRelease, ContainerdSettings,
    Endpoint, EndpointMode, GrafanaSettings, HostName, IngressExposure, IngressExposureKind,
    IngressSettings, Inventory, LogOutput, LogOutputKind, Mirror, Registry, SecuritySettings,
    StorageChoice,
};
use crate::versions::{
    self, AddonKind, CniPlugin, Component, Components, HostClass, KubeVersion, Support, Version,
    catalog,
};

/// kubeadm's v1beta4 configuration API, which kbs writes, starts at 1.31.
const OLDEST_MINOR: u32 = 31;

static ALLOW_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `--allow-unsupported-version`: accept an end-of-life or unknown Kubernetes minor, with a warning
/// in the plan, instead of refusing the inventory. Set once by the command line, for
/// `Inventory::load` and `Inventory::parse`.
pub fn allow_unsupported_version(allow: bool) {
    ALLOW_UNSUPPORTED.store(allow, Ordering::Relaxed);
}

pub(super) fn unsupported_allowed() -> bool {
    ALLOW_UNSUPPORTED.load(Ordering::Relaxed)
}

/// `cluster.kubernetes_version` (the newest supported release when unset) and every component
/// version that goes with it.
pub(super) fn components(r: &mut Reporter, raw: &RawInventory, allow: bool) -> Option<Components> {
    let cat = catalog();
    let today = versions::today();
    let supported = cat.supported_list(today);
    let Some(field) = &raw.cluster.kubernetes_version else {
        let newest = cat.newest(today)?;
        let mut c = Components::from_release(newest, newest.latest);
        return overrides(r, raw, &mut c).then_some(c);
    };
    let text = field.get_ref();
    let Ok(v) = text.parse::<KubeVersion>() else {
        r.error(
            field.span(),
            format!("cluster.kubernetes_version `{text}` is not a Kubernetes version"),
            "not MAJOR.MINOR.PATCH",
            format!(
                "write a released version such as \"{}\" (a leading 'v' is allowed), or leave it out for the newest supported release",
                cat.newest(today).map_or_else(String::new, |r| r.latest.bare())
            ),
        );
        return None;
    };
    if v.major != 1 || v.minor < OLDEST_MINOR {
        r.error(
            field.span(),
            format!("cluster.kubernetes_version {v} is not supported"),
            "unsupported version",
            format!("kbs writes kubeadm's v1beta4 configuration, which starts at 1.{OLDEST_MINOR}; supported now: {supported}"),
        );
        return None;
    }
    let (row, unsupported) = match cat.support(v, today) {
        Support::Supported(row) => (row, None),
        other => {
            let why = match other {
                Support::EndOfLife { minor, end_of_life } => format!(
                    "Kubernetes {minor} reached its end of life on {end_of_life}: it gets no security fixes"
                ),
                _ => format!(
                    "kbs has no release facts for Kubernetes {} (data/versions.toml)",
                    v.minor_of()
                ),
            };
            if !allow {
                r.error(
                    field.span(),
                    format!("cluster.kubernetes_version {v}: {why}"),
                    "unsupported version",
                    format!(
                        "use a supported minor: {supported}; or pass --allow-unsupported-version to install it anyway"
                    ),
                );
                return None;
            }
            // The nearest known row gives the component versions; [versions] can override them.
            let row = cat
                .kubernetes
                .iter()
                .min_by_key(|r| r.minor.1.abs_diff(v.minor))?;
            (row, Some(why))
        }
    };
    let mut c = Components::from_release(row, v);
    c.unsupported = unsupported;
    overrides(r, raw, &mut c).then_some(c)
}

/// `[versions]`: each override replaces the pinned version; etcd must still satisfy kubeadm.
fn overrides(r: &mut Reporter, raw: &RawInventory, c: &mut Components) -> bool {
    let v = &raw.versions;
    let mut ok = true;
    let mut set = |r: &mut Reporter, comp: Component, field: &Option<Spanned<String>>| {
        let f = field.as_ref()?;
        match f.get_ref().parse::<Version>() {
            Ok(version) => {
                c.overridden.push(comp);
                Some(version)
            }
            Err(()) => {
                r.error(
                    f.span(),
                    format!(
                        "versions.{} `{}` is not a release number",
                        comp.as_str(),
                        f.get_ref()
                    ),
                    "not MAJOR.MINOR.PATCH",
                    format!(
                        "write the upstream release, e.g. \"{}\", or remove it to use the pinned one",
                        c.version(comp)
                    ),
                );
                ok = false;
                None
            }
        }
    };
    let etcd = set(r, Component::Etcd, &v.etcd);
    let containerd = set(r, Component::Containerd, &v.containerd);
    let runc = set(r, Component::Runc, &v.runc);
    let cni_plugins = set(r, Component::CniPlugins, &v.cni_plugins);
    let crictl = set(r, Component::Crictl, &v.crictl);
    c.etcd = etcd.unwrap_or(c.etcd);
    c.containerd = containerd.unwrap_or(c.containerd);
    c.runc = runc.unwrap_or(c.runc);
    c.cni_plugins = cni_plugins.unwrap_or(c.cni_plugins);
    c.crictl = crictl.unwrap_or(c.crictl);
    if c.etcd < c.min_external_etcd {
        let span = v.etcd.as_ref().map_or(0..0, Spanned::span);
        r.error(
            span,
            format!(
                "versions.etcd {} is older than {}, the oldest external etcd kubeadm {} accepts",
                c.etcd,
                c.min_external_etcd,
                c.kubernetes.minor_of()
            ),
            "below kubeadm's minimum",
            format!(
                "use etcd {} or newer (kubeadm {} pins {}), or remove versions.etcd",
                c.min_external_etcd,
                c.kubernetes.minor_of(),
                catalog()
                    .release(c.row)
                    .map_or_else(String::new, |r| r.etcd.to_string())
            ),
        );
        ok = false;
    }
    ok
}

pub(super) fn artifacts(r: &mut Reporter, base: &Path, raw: &RawInventory) -> ArtifactSettings {
    let a = &raw.artifacts;
    let mut mirrors = Vec::new();
    for m in &a.mirrors {
        let mut url = |f: &Spanned<String>, name: &str| {
            let t = f.get_ref();
            if t.starts_with("https://") || t.starts_with("http://") {
                Some(t.clone())
            } else {
                r.error(
                    f.span(),
                    format!("artifacts.mirrors {name} `{t}` is not an http(s) URL"),
                    "not a URL",
                    "write a URL prefix, e.g. from = \"https://dl.k8s.io/\", to = \"https://mirror.example/dl.k8s.io/\"",
                );
                None
            }
        };
        if let (Some(from), Some(to)) = (url(&m.from, "from"), url(&m.to, "to")) {
            mirrors.push(Mirror { from, to });
        }
    }
    ArtifactSettings {
        source: match &a.bundle {
            Some(b) => Artifacts::Bundle(resolve_path(base, b.get_ref())),
            None => Artifacts::Online,
        },
        mirrors,
        crictl: a.crictl.unwrap_or(true),
    }
}

pub(super) fn registry(r: &mut Reporter, base: &Path, raw: &RawInventory) -> Option<Registry> {
    let reg = raw.registry.as_ref()?;
    let address = reg.address.get_ref().trim_end_matches('/').to_string();
    let (host, path) = address.split_once('/').unwrap_or((&address, ""));
    let host_ok = !host.is_empty()
        && !host.contains("://")
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let path_ok = path.split('/').all(|p| {
        path.is_empty()
            || (!p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)))
    });
    if !host_ok || !path_ok {
        r.error(
            reg.address.span(),
            format!("registry.address `{address}` is not a registry address"),
            "not HOST[:PORT][/PATH]",
            "write the registry's host, port and optional path, without a scheme, e.g. \"registry.example:5000/k8s\"",
        );
    }
    let ca_file = reg
        .ca_file
        .as_ref()
        .map(|f| checked_file(r, base, f, "registry.ca_file", None));
    let credentials_file = reg
        .credentials_file
        .as_ref()
        .map(|f| checked_file(r, base, f, "registry.credentials_file", Some("a password")));
    let ca_pem = match (&ca_file, &reg.ca_file) {
        (Some(p), Some(f)) => match std::fs::read_to_string(p) {
            Ok(t) if t.contains("-----BEGIN CERTIFICATE-----") => Some(t),
            Ok(_) => {
                r.error(
                    f.span(),
                    format!("registry.ca_file: {} holds no PEM certificate", p.display()),
                    "not a PEM certificate",
                    "give the registry's CA certificate in PEM form (-----BEGIN CERTIFICATE-----)",
                );
                None
            }
            Err(_) => None,
        },
        _ => None,
    };
    (host_ok && path_ok).then_some(Registry {
        address,
        ca_file,
        ca_pem,
        credentials_file,
    })
}

/// A file `field` names, relative to the inventory: it must be a file. A secret (`holds`: what
/// it holds) must also be owned by the user running kbs and readable by nobody else (0600 or
/// 0400), as ssh insists for a private key.
pub(super) fn checked_file(
    r: &mut Reporter,
    base: &Path,
    f: &Spanned<String>,
    field: &str,
    holds: Option<&str>,
) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let path = resolve_path(base, f.get_ref());
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => r.error(
            f.span(),
            format!("{field}: {} is not a file", path.display()),
            "not a file",
            "give the path of a file",
        ),
        Ok(m) if holds.is_some() && m.mode() & 0o077 != 0 => r.error(
            f.span(),
            format!(
                "{field}: {} can be read by other users (mode {:o})",
                path.display(),
                m.mode() & 0o777
            ),
            "loose permissions",
            format!(
                "it holds {}: chmod 600 {}",
                holds.unwrap_or_default(),
                path.display()
            ),
        ),
        Ok(m) if holds.is_some() && m.uid() != me => r.error(
            f.span(),
            format!(
                "{field}: {} belongs to user id {}, not to the user running kbs ({me})",
                path.display(),
                m.uid()
            ),
            "not yours",
            format!(
                "it holds {}: chown it to the user who runs kbs",
                holds.unwrap_or_default()
            ),
        ),
        Ok(_) => {}
        Err(e) => r.error(
            f.span(),
            format!("{field}: cannot read {}: {e}", path.display()),
            "cannot read",
            "give the path of an existing file (relative to the inventory)",
        ),
    }
    path
}

/// `[addons.logging]`: off while `output` is unset; then `host` and `port` are needed, `uri` only
/// means something for http, and `user` (with a token) for elasticsearch.
pub(super) fn logging(r: &mut Reporter, base: &Path, raw: &RawInventory) -> Option<LogOutput> {
    let l = raw.addons.logging.as_ref()?;
    let Some(kind) = l.output.as_ref().map(|o| *o.get_ref()) else {
        if let Some(h) = &l.host {
            r.error(
                h.span(),
                "addons.logging has no output: nothing would ship the logs",
                "no output",
                "add output = \"syslog\", \"http\", \"loki\" or \"elasticsearch\"",
            );
        }
        return None;
    };
    let output_span = l.output.as_ref().map(Spanned::span).unwrap_or_default();
    let host = match &l.host {
        Some(h) => match h.get_ref().parse::<IpAddr>() {
            Ok(ip) => Some(HostName::Ip(ip)),
            Err(_) if super::validate::is_dns_name(h.get_ref()) => {
                Some(HostName::Dns(h.get_ref().clone()))
            }
            Err(_) => {
                r.error(
                    h.span(),
                    format!(
                        "addons.logging.host `{}` is neither an IP address nor a DNS name",
                        h.get_ref()
                    ),
                    "not an address",
                    "write the log receiver's address, e.g. \"logs.example.net\" or \"192.0.2.50\"",
                );
                None
            }
        },
        None => {
            r.error(
                output_span.clone(),
                format!("addons.logging.output = \"{}\" needs host", kind.as_str()),
                "no host",
                "add host = \"logs.example.net\" (the log receiver's address)",
            );
            None
        }
    };
    let port = match &l.port {
        Some(p) if *p.get_ref() == 0 => {
            r.error(
                p.span(),
                "addons.logging.port 0 is not a port",
                "not a port",
                "write the receiver's port, 1 to 65535",
            );
            None
        }
        Some(p) => Some(*p.get_ref()),
        None => {
            r.error(
                output_span.clone(),
                format!("addons.logging.output = \"{}\" needs port", kind.as_str()),
                "no port",
                "add port = ... (e.g. 6514 for syslog over TLS, 3100 for Loki, 9200 for Elasticsearch)",
            );
            None
        }
    };
    let uri = match (&l.uri, kind) {
        (Some(u), LogOutputKind::Http)
            if !u.get_ref().starts_with('/') || u.get_ref().contains(char::is_whitespace) =>
        {
            r.error(
                u.span(),
                format!("addons.logging.uri `{}` is not a request path", u.get_ref()),
                "not a path",
                "write the path the receiver takes logs on, starting with /, e.g. \"/ingest\"",
            );
            String::new()
        }
        (Some(u), LogOutputKind::Http) => u.get_ref().clone(),
        (Some(u), _) => {
            r.error(
                u.span(),
                format!(
                    "addons.logging.uri is for output = \"http\", not \"{}\"",
                    kind.as_str()
                ),
                "not used",
                "remove uri",
            );
            String::new()
        }
        (None, _) => "/".into(),
    };
    let token_file = l
        .token_file
        .as_ref()
        .map(|f| checked_file(r, base, f, "addons.logging.token_file", Some("a token")));
    if let (Some(f), LogOutputKind::Syslog) = (&l.token_file, kind) {
        r.error(
            f.span(),
            "addons.logging.token_file: syslog takes no token",
            "not used",
            "remove token_file, or use an output that authenticates (http, loki, elasticsearch)",
        );
    }
    let user = l.user.as_ref().map(|u| u.get_ref().clone());
    match (&l.user, kind, &l.token_file) {
        (Some(u), k, _) if k != LogOutputKind::Elasticsearch => r.error(
            u.span(),
            format!("addons.logging.user is for output = \"elasticsearch\", not \"{}\"", k.as_str()),
            "not used",
            "remove user (http and loki send the token as a bearer token)",
        ),
        (None, LogOutputKind::Elasticsearch, Some(f)) => r.error(
            f.span(),
            "addons.logging.token_file for elasticsearch needs user: the token is that user's password",
            "no user",
            "add user = \"fluent-bit\" (the Elasticsearch user)",
        ),
        _ => {}
    }
    Some(LogOutput {
        kind,
        host: host?,
        port: port?,
        tls: l.tls.unwrap_or(true),
        uri,
        user,
        token_file,
    })
}

/// kube-apiserver's default `--service-node-port-range` (kbs does not change it).
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// `[addons.ingress]`: Traefik, on while the table is there. On node ports (the default: it works
/// behind any front) or on the VIP, which needs a VIP (keepalived or kube-vip) and ports 80 and
/// 443 free on the control planes.
pub(super) fn ingress(
    r: &mut Reporter,
    raw: &RawInventory,
    endpoint: Option<&Endpoint>,
) -> Option<IngressSettings> {
    let i = raw.addons.ingress.as_ref()?;
    let kind = i
        .exposure
        .as_ref()
        .map_or(IngressExposureKind::NodePorts, |e| *e.get_ref());
    let exposure_span = i.exposure.as_ref().map(Spanned::span).unwrap_or_default();
    let mut ok = true;
    let exposure = match kind {
        IngressExposureKind::NodePorts => {
            let mut port = |f: &Option<Spanned<u16>>, name: &str, default: u16| match f {
                Some(p) if !NODE_PORTS.contains(p.get_ref()) => {
                    r.error(
                        p.span(),
                        format!(
                            "addons.ingress.{name} {} is outside the node port range",
                            p.get_ref()
                        ),
                        "not a node port",
                        format!(
                            "write a port from {} to {} (kube-apiserver's --service-node-port-range), e.g. {default}",
                            NODE_PORTS.start(),
                            NODE_PORTS.end()
                        ),
                    );
                    ok = false;
                    default
                }
                Some(p) => *p.get_ref(),
                None => default,
            };
            let http = port(&i.http_node_port, "http_node_port", 30080);
            let https = port(&i.https_node_port, "https_node_port", 30443);
            if http == https {
                let span = i
                    .https_node_port
                    .as_ref()
                    .or(i.http_node_port.as_ref())
                    .map(Spanned::span)
                    .unwrap_or_default();
                r.error(
                    span,
                    format!("addons.ingress: http_node_port and https_node_port are both {http}"),
                    "the same port",
                    "give HTTP and HTTPS different node ports, e.g. 30080 and 30443",
                );
                ok = false;
            }
            IngressExposure::NodePorts { http, https }
        }
        IngressExposureKind::Vip => {
            for f in [&i.http_node_port, &i.https_node_port]
                .into_iter()
                .flatten()
            {
                r.error(
                    f.span(),
                    "addons.ingress node ports are for exposure = \"node-ports\"",
                    "not used",
                    "remove it: on the VIP the controller listens on 80 and 443",
                );
                ok = false;
            }
            match endpoint {
                Some(e) if !matches!(e.mode, EndpointMode::Vip | EndpointMode::KubeVip) => {
                    r.error(
                        exposure_span.clone(),
                        format!(
                            "addons.ingress.exposure = \"vip\" needs a VIP, but endpoint.mode is \"{}\"",
                            e.mode.as_str()
                        ),
                        "no VIP",
                        "use exposure = \"node-ports\" (and point the site's load balancer at them), or endpoint.mode = \"vip\" or \"kube-vip\"",
                    );
                    ok = false;
                }
                Some(e)
                    if [e.port, e.apiserver_port]
                        .iter()
                        .any(|p| [80, 443].contains(p)) =>
                {
                    r.error(
                        exposure_span.clone(),
                        "addons.ingress.exposure = \"vip\" takes ports 80 and 443 on the control planes, where the API server's endpoint listens",
                        "port taken",
                        "move endpoint.port (and the API servers' port) off 80 and 443, or use exposure = \"node-ports\"",
                    );
                    ok = false;
                }
                _ => {}
            }
            IngressExposure::Vip
        }
    };
    ok.then_some(IngressSettings {
        exposure,
        default_class: i.default_class.unwrap_or(true),
        gateway_api: i.gateway_api.unwrap_or(false),
    })
}

/// Whether the monitoring addon is on: `[addons] monitoring`, else from 2 hosts. One host is a
/// lab or an edge box: a Prometheus next to the workloads costs more there than it tells, and the
/// alerts it has are about losing members, which one host cannot do.
fn monitoring(raw: &RawInventory) -> bool {
    raw.addons
        .monitoring
        .as_ref()
        .map_or(raw.hosts.len() > 1, |m| *m.get_ref())
}

/// `[addons.grafana]`: Grafana, on while the table is there. It needs the monitoring addon (its
/// Prometheus is the data source, its namespace Grafana's) and an admin password of the user's:
/// Grafana's default admin/admin would be anyone's.
pub(super) fn grafana(
    r: &mut Reporter,
    base: &Path,
    raw: &RawInventory,
) -> Option<GrafanaSettings> {
    let g = raw.addons.grafana.as_ref()?;
    let mut ok = true;
    if !monitoring(raw) {
        let why = if raw.addons.monitoring.is_some() {
            "[addons] monitoring = false"
        } else {
            "monitoring is off by default on a 1-host cluster"
        };
        r.error(
            g.span(),
            format!("addons.grafana needs the monitoring addon, but {why}"),
            "no Prometheus",
            "set `[addons] monitoring = true` (Grafana shows its Prometheus), or remove [addons.grafana]",
        );
        ok = false;
    }
    let admin_password_file = match &g.get_ref().admin_password_file {
        Some(f) => Some(checked_file(
            r,
            base,
            f,
            "addons.grafana.admin_password_file",
            Some("a password"),
        )),
        None => {
            r.error(
                g.span(),
                "addons.grafana has no admin_password_file: Grafana's admin would keep its default password, admin",
                "no admin password",
                "add admin_password_file = \"secrets/grafana.pass\": a file next to the inventory holding the password, yours, mode 0600 (chmod 600)",
            );
            None
        }
    };
    ok.then_some(GrafanaSettings {
        admin_password_file: admin_password_file?,
    })
}

pub(super) fn containerd(raw: &RawInventory) -> ContainerdSettings {
    ContainerdSettings {
        snapshotter: raw.containerd.snapshotter.unwrap_or_default(),
    }
}

/// `[cni]`: a plugin kbs installs from its release (`plugin` and optionally `version`), or a
/// hand-written `manifest`: inside the bundle for offline sites (the bundle is the only thing
/// that travels there, and its manifest checks the file's sum), else relative to the inventory.
pub(super) fn cni(
    r: &mut Reporter,
    base: &Path,
    raw: &RawInventory,
    artifacts: &Artifacts,
) -> Option<Cni> {
    let c = &raw.cni;
    let choice = c.plugin.as_ref().map(|p| (*p.get_ref(), p.span()));
    let manifest = match &c.manifest {
        Some(m) => Some(manifest_path(r, base, m, artifacts)?),
        None => None,
    };
    let plugin = match choice {
        None if manifest.is_none() => {
            if let Some(v) = &c.version {
                r.error(
                    v.span(),
                    "cni.version is set but cni.plugin is not",
                    "which plugin?",
                    "add plugin = \"flannel\", \"calico\" or \"cilium\"",
                );
            }
            return None;
        }
        None => None,
        Some((CniChoice::None, span)) => {
            if manifest.is_some() {
                r.error(
                    span,
                    "cni.plugin = \"none\" but cni.manifest is set",
                    "contradicts manifest",
                    "remove cni.manifest to install no CNI, or set plugin to the manifest's CNI",
                );
            }
            return None;
        }
        Some((CniChoice::Flannel, _)) => Some(CniPlugin::Flannel),
        Some((CniChoice::Calico, _)) => Some(CniPlugin::Calico),
        Some((CniChoice::Cilium, _)) => Some(CniPlugin::Cilium),
    };
    let release = match plugin {
        Some(p) => {
            let pinned = catalog().cni(p)?;
            let version = c
                .version
                .as_ref()
                .map_or_else(|| pinned.version.clone(), |v| v.get_ref().clone());
            let vars = [("version", version.clone())];
            let url = versions::expand(&pinned.manifest, &vars);
            if url.is_empty() && manifest.is_none() {
                r.error(
                    c.plugin.as_ref().map_or(0..0, Spanned::span),
                    format!("{} publishes no plain manifest to install from", p.as_str()),
                    "needs a manifest",
                    "render one (e.g. `cilium install --dry-run` or `helm template`) and name it in cni.manifest",
                );
            }
            // A pinned sum holds for the pinned version only; another version brings its own.
            let sha256 = match &c.sha256 {
                Some(s) => Some(s.get_ref().to_lowercase()),
                None if c.version.is_none() && !pinned.sha256.is_empty() => {
                    Some(pinned.sha256.clone())
                }
                None => None,
            };
            if let Some(s) = &c.sha256
                && !(s.get_ref().len() == 64 && s.get_ref().bytes().all(|b| b.is_ascii_hexdigit()))
            {
                r.error(
                    s.span(),
                    "cni.sha256 is not a SHA-256",
                    "not 64 hex digits",
                    "write the manifest's SHA-256 (`sha256sum kube-flannel.yml`)",
                );
            }
            Some(CniRelease {
                plugin: p,
                images: pinned
                    .images
                    .iter()
                    .map(|i| versions::expand(i, &vars))
                    .collect(),
                manifest_url: (!url.is_empty()).then_some(url),
                sha256,
                version,
            })
        }
        None => None,
    };
    // Only Calico's manifest takes an MTU (its calico-config `veth_mtu`); Flannel and Cilium
    // find it from the host's interface, and a hand-written manifest is the operator's own.
    if let Some(m) = &c.mtu
        && release.as_ref().map(|r| r.plugin) != Some(CniPlugin::Calico)
    {
        r.error(
            m.span(),
            "cni.mtu is rendered into Calico's manifest only",
            "not used",
            "remove it: Flannel and Cilium take the MTU from the host's interface, and a hand-written manifest sets its own",
        );
    }
    Some(Cni {
        release,
        manifest,
        mtu: c.mtu.as_ref().map(|m| *m.get_ref()),
    })
}

/// `[addons]`: metrics-server, the default StorageClass (local-path-provisioner), monitoring
/// (with Grafana where `[addons.grafana]` is), logging (where `[addons.logging]` names an output)
/// and ingress (where `[addons.ingress]` is, with the Gateway API's CRDs before it where it asks
/// for them), from the releases data/versions.toml pins; with the addons off only by their
/// default, and why.
pub(super) fn addons(
    r: &mut Reporter,
    raw: &RawInventory,
    security: &SecuritySettings,
    logging: bool,
    ingress: Option<&IngressSettings>,
    grafana: bool,
) -> (Vec<Addon>, Vec<(AddonKind, &'static str)>) {
    let a = &raw.addons;
    // metrics-server verifies each kubelet's serving certificate against the cluster CA (its
    // manifest sets no --kubelet-insecure-tls): without signed serving certificates it scrapes
    // nothing, so it is on by default only where they are.
    let metrics_server = match &a.metrics_server {
        Some(m) if *m.get_ref() && !security.kubelet_serving_certificates => {
            r.error(
                m.span(),
                "addons.metrics_server = true needs kubelet serving certificates signed by the cluster CA",
                "cannot verify the kubelets",
                "remove security.kubelet_serving_certificates = false, or set addons.metrics_server = false",
            );
            false
        }
        Some(m) => *m.get_ref(),
        None => security.kubelet_serving_certificates,
    };
    let storage = a
        .storage
        .as_ref()
        .map_or(StorageChoice::LocalPath, |s| *s.get_ref());
    let mut off_by_default = Vec::new();
    if a.metrics_server.is_none() && !metrics_server {
        off_by_default.push((
            AddonKind::MetricsServer,
            "off by default without signed kubelet serving certificates",
        ));
    }
    let monitoring = monitoring(raw);
    if a.monitoring.is_none() && !monitoring {
        off_by_default.push((
            AddonKind::Monitoring,
            "off by default on a 1-host cluster (no members to lose, its resources are the workloads'); [addons] monitoring = true turns it on",
        ));
    }
    let mut kinds = Vec::new();
    if metrics_server {
        kinds.push(AddonKind::MetricsServer);
    }
    if storage == StorageChoice::LocalPath {
        kinds.push(AddonKind::LocalPathProvisioner);
    }
    if monitoring {
        kinds.push(AddonKind::Monitoring);
        // `grafana()` refused it without monitoring.
        if grafana {
            kinds.push(AddonKind::Grafana);
        }
    }
    if logging {
        kinds.push(AddonKind::Logging);
    }
    if let Some(i) = ingress {
        if i.gateway_api {
            kinds.push(AddonKind::GatewayApi);
        }
        kinds.push(AddonKind::Ingress);
    }
    let addons = kinds
        .into_iter()
        .filter_map(|k| catalog().addon(k))
        .map(|rel| {
            let vars = [("version", rel.version.clone())];
            Addon {
                kind: rel.name,
                version: rel.version.clone(),
                manifest_url: (!rel.manifest.is_empty())
                    .then(|| versions::expand(&rel.manifest, &vars)),
                sha256: (!rel.sha256.is_empty()).then(|| rel.sha256.clone()),
                images: rel
                    .images
                    .iter()
                    .map(|i| {
                        let name = versions::expand(&i.name, &vars);
                        AddonImage {
                            written: i
                                .written
                                .as_ref()
                                .map_or_else(|| name.clone(), |w| versions::expand(w, &vars)),
                            name,
                        }
                    })
                    .collect(),
                server_side: rel.server_side,
            }
        })
        .collect();
    (addons, off_by_default)
}

fn manifest_path(
    r: &mut Reporter,
    base: &Path,
    m: &Spanned<String>,
    artifacts: &Artifacts,
) -> Option<PathBuf> {
    let text = m.get_ref();
    match artifacts {
        // The bundle may not exist yet (kbs bundle makes it): its load checks the file.
        Artifacts::Bundle(dir) => {
            let rel = Path::new(text);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                r.error(
                    m.span(),
                    format!("cni.manifest `{text}` is not a path inside the artifact bundle"),
                    "outside the bundle",
                    "with [artifacts] bundle set, name the manifest relative to the bundle directory and list it in its bundle.toml, e.g. \"cni/calico.yaml\"",
                );
                return None;
            }
            Some(dir.join(rel))
        }
        Artifacts::Online => {
            let path = resolve_path(base, text);
            if !path.is_file() {
                r.error(
                    m.span(),
                    format!(
                        "cni.manifest: {} does not exist or is not a file",
                        path.display()
                    ),
                    "no such file",
                    "give the path of the CNI's YAML manifest (relative to the inventory), or remove it",
                );
                return None;
            }
            Some(path)
        }
    }
}

/// One image the hosts need, under the name they will know it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedImage {
    /// Where it is fetched from: the site's registry, or upstream.
    pub from: String,
    /// The name on the hosts (kubeadm's imageRepository applied).
    pub name: String,
    pub hosts: HostClass,
}

/// The images the inventory's cluster needs: kubeadm's (minus etcd), kube-vip's in that mode, the
/// CNI release's, the addons'.
impl Inventory {
    pub fn images(&self) -> Vec<WantedImage> {
        let inv = self;
        let cat = crate::versions::catalog();
        let cp_only = &cat.images.control_plane_only;
        let mut out: Vec<WantedImage> = Vec::new();
        let mut push = |upstream: String, hosts: HostClass| {
            let name = inv
                .registry
                .as_ref()
                .map_or_else(|| upstream.clone(), |r| r.map(&upstream));
            if !out.iter().any(|w| w.name == name) {
                out.push(WantedImage {
                    from: name.clone(),
                    name,
                    hosts,
                });
            }
        };
        for image in inv.versions.kubeadm_images() {
            let repo = image.rsplit_once(':').map_or(image.as_str(), |(r, _)| r);
            let short = repo.rsplit('/').next().unwrap_or(repo);
            let hosts = if cp_only.iter().any(|c| c == short) {
                HostClass::ControlPlane
            } else {
                HostClass::Node
            };
            push(image, hosts);
        }
        if inv.endpoint.mode == EndpointMode::KubeVip {
            push(cat.images.kube_vip.clone(), HostClass::ControlPlane);
        }
        if let Some(r) = inv.cni.as_ref().and_then(|c| c.release.as_ref()) {
            for i in &r.images {
                push(i.clone(), HostClass::Node);
            }
        }
        // Addons run on any node the scheduler picks.
        for a in &inv.addons {
            for i in &a.images {
                push(i.name.clone(), HostClass::Node);
            }
        }
        out
    }
}
