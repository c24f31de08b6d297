//! Versions: the upstream facts in `data/versions.toml` (one row per supported Kubernetes minor,
//! where every artifact comes from, the images kubeadm needs, the CNI releases), typed, and the
//! version policy built on them. Nothing here depends on the inventory: the inventory uses it.

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};
use time::Date;

/// The data file, compiled in: its facts change with upstream releases, not with the code.
const DATA: &str = include_str!("../data/versions.toml");

/// A release number `MAJOR.MINOR.PATCH` (etcd, containerd, runc, ...). A leading `v` and a
/// build suffix (`3.5.24-0`, kubeadm's image tag form) are accepted and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::str::FromStr for Version {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let t = text.strip_prefix('v').unwrap_or(text);
        let t = &t[..t.find(['-', '+']).unwrap_or(t.len())];
        let mut parts = t.split('.').map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        });
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) => Ok(Self {
                major,
                minor,
                patch,
            }),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Serde through a type's `Display` and `FromStr` forms: versions are written as text.
macro_rules! serde_as_text {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse()
                    .map_err(|()| serde::de::Error::custom(format!("`{s}` is not {}", $what)))
            }
        }
    };
}

serde_as_text!(Version, "MAJOR.MINOR.PATCH");

/// A Kubernetes release, `v1.37.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
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

    /// Without the leading `v`, as release URLs take it.
    pub fn bare(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.patch)
    }

    pub fn minor_of(&self) -> Minor {
        Minor(self.major, self.minor)
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = ();

    /// `1.31.4` or `v1.31.4`: three decimal numbers, nothing else.
    fn from_str(text: &str) -> Result<Self, ()> {
        if text.contains(['-', '+']) {
            return Err(());
        }
        let v: Version = text.parse()?;
        Ok(Self {
            major: v.major,
            minor: v.minor,
            patch: v.patch,
        })
    }
}

serde_as_text!(KubeVersion, "a Kubernetes version");

/// A Kubernetes minor, `1.37`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor(pub u32, pub u32);

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl<'de> Deserialize<'de> for Minor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.split_once('.')
            .and_then(|(a, b)| Some(Minor(a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not MAJOR.MINOR")))
    }
}

fn date<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
    let dt = toml::value::Datetime::deserialize(d)?;
    let day = dt
        .date
        .ok_or_else(|| serde::de::Error::custom("expected a date, e.g. 2027-10-28"))?;
    let month = time::Month::try_from(day.month).map_err(serde::de::Error::custom)?;
    Date::from_calendar_date(i32::from(day.year), month, day.day).map_err(serde::de::Error::custom)
}

/// One supported Kubernetes minor and what goes with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub minor: Minor,
    /// The newest patch release kbs knows, the default for this minor.
    pub latest: KubeVersion,
    #[serde(deserialize_with = "date")]
    pub released: Date,
    #[serde(deserialize_with = "date")]
    pub end_of_life: Date,
    /// The etcd kubeadm pins for this minor.
    pub etcd: Version,
    /// kubeadm's `MinExternalEtcdVersion`: its preflight refuses an older external etcd.
    pub min_external_etcd: Version,
    /// Image tags kubeadm uses: `registry.k8s.io/pause:<pause>`, `coredns/coredns:<coredns>`.
    pub pause: String,
    pub coredns: String,
    pub containerd: Version,
    pub runc: Version,
    pub cni_plugins: Version,
    pub crictl: Version,
}

/// An API version Kubernetes stopped serving in `removed_in`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovedApi {
    pub removed_in: Minor,
    pub group_version: String,
    pub resources: Vec<String>,
    pub replacement: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retired {
    pub minor: Minor,
    #[serde(deserialize_with = "date")]
    pub end_of_life: Date,
}

/// How a checksum file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumFormat {
    /// Only the hex digest (dl.k8s.io's `.sha256`).
    Hex,
    /// `<digest>  <file name>` lines, as `sha256sum` prints them.
    Sha256sum,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksumSpec {
    pub url: String,
    pub format: ChecksumFormat,
}

/// Which hosts get a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostClass {
    /// Every Kubernetes node (control plane or worker).
    Node,
    ControlPlane,
    Etcd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallSpec {
    pub from: String,
    pub to: String,
    pub mode: String,
    #[serde(rename = "for")]
    pub hosts: HostClass,
}

/// An upstream download: a binary or an archive, its checksum file, and what is installed from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadSpec {
    pub name: Component,
    pub url: String,
    pub checksum: ChecksumSpec,
    pub install: Vec<InstallSpec>,
}

/// The components whose version kbs chooses (and an inventory may override).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Kubeadm,
    Kubelet,
    Kubectl,
    Etcd,
    Containerd,
    Runc,
    CniPlugins,
    Crictl,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubeadm => "kubeadm",
            Self::Kubelet => "kubelet",
            Self::Kubectl => "kubectl",
            Self::Etcd => "etcd",
            Self::Containerd => "containerd",
            Self::Runc => "runc",
            Self::CniPlugins => "cni_plugins",
            Self::Crictl => "crictl",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpecs {
    pub kubeadm: Vec<String>,
    pub control_plane_only: Vec<String>,
    /// Paths an image has in a site's registry when they are not its upstream path.
    pub registry_paths: std::collections::BTreeMap<String, String>,
    pub kube_vip: String,
}

/// The CNI plugins kbs can install from their upstream release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CniPlugin {
    Flannel,
    Calico,
    Cilium,
}

impl CniPlugin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flannel => "flannel",
            Self::Calico => "calico",
            Self::Cilium => "cilium",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniRelease {
    pub plugin: CniPlugin,
    pub version: String,
    /// The release's own manifest (`{version}` substituted); empty where upstream has none.
    pub manifest: String,
    pub images: Vec<String>,
    /// The manifest's pinned SHA-256; empty where none is pinned.
    pub sha256: String,
}

/// The addons kbs can install from their upstream release (`[addons]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddonKind {
    MetricsServer,
    LocalPathProvisioner,
    /// Prometheus, node-exporter and kube-state-metrics, rendered by kbs (no upstream manifest).
    Monitoring,
    /// Grafana on the monitoring addon's Prometheus, rendered by kbs (upstream ships a Helm chart).
    Grafana,
    /// Fluent Bit, rendered by kbs (upstream ships a Helm chart).
    Logging,
    /// The Gateway API's CRDs (standard channel), for the ingress addon's Gateway API option.
    GatewayApi,
    /// Traefik as the ingress controller, rendered by kbs (upstream ships a Helm chart).
    Ingress,
}

impl AddonKind {
    /// In the order they are applied (and the reverse of the order they are removed in):
    /// Grafana after the monitoring addon whose namespace and Prometheus it uses, the Gateway
    /// API's CRDs before the Gateway that uses them.
    pub const ALL: [Self; 7] = [
        Self::MetricsServer,
        Self::LocalPathProvisioner,
        Self::Monitoring,
        Self::Grafana,
        Self::Logging,
        Self::GatewayApi,
        Self::Ingress,
    ];

    /// The name in data/versions.toml, bundle.toml, labels and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MetricsServer => "metrics-server",
            Self::LocalPathProvisioner => "local-path-provisioner",
            Self::Monitoring => "monitoring",
            Self::Grafana => "grafana",
            Self::Logging => "logging",
            Self::GatewayApi => "gateway-api",
            Self::Ingress => "ingress",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An image an addon's manifest runs: its full name, and how the manifest writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddonImage {
    pub name: String,
    pub written: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddonRelease {
    pub name: AddonKind,
    pub version: String,
    /// The release's own manifest (`{version}` substituted); empty where kbs renders the objects
    /// from templates/ (upstream has no plain manifest).
    pub manifest: String,
    pub images: Vec<AddonImage>,
    /// The manifest's pinned SHA-256; empty where none is pinned.
    pub sha256: String,
    /// Applied with `kubectl apply --server-side`, as upstream's install guide says.
    #[serde(default)]
    pub server_side: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub arch: String,
    /// What `kbs status` compares each member's database size with.
    pub etcd_default_quota_bytes: u64,
    pub kubernetes: Vec<Release>,
    pub retired: Vec<Retired>,
    #[serde(rename = "download")]
    pub downloads: Vec<DownloadSpec>,
    pub images: ImageSpecs,
    pub cni: Vec<CniRelease>,
    #[serde(rename = "addon")]
    pub addons: Vec<AddonRelease>,
    #[serde(rename = "removed_api")]
    pub removed_apis: Vec<RemovedApi>,
}

/// The compiled-in catalog. The data file is checked by a unit test, so this cannot fail in a
/// released build.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| match toml::from_str(DATA) {
        Ok(c) => c,
        Err(e) => unreachable!("data/versions.toml is checked by tests: {e}"),
    })
}

/// Where a Kubernetes version stands.
#[derive(Debug, Clone)]
pub enum Support<'a> {
    Supported(&'a Release),
    /// Past its end of life (a retired minor, or a listed one whose date has passed).
    EndOfLife {
        minor: Minor,
        end_of_life: Date,
    },
    /// A minor kbs has no facts for (too new or too old).
    Unknown,
}

impl Catalog {
    pub fn release(&self, minor: Minor) -> Option<&Release> {
        self.kubernetes.iter().find(|r| r.minor == minor)
    }

    /// The newest minor still supported on `today`.
    pub fn newest(&self, today: Date) -> Option<&Release> {
        self.kubernetes
            .iter()
            .filter(|r| r.released <= today && today <= r.end_of_life)
            .max_by_key(|r| r.minor)
    }

    /// The supported minors on `today`, newest first, as "1.37, 1.36 and 1.35".
    pub fn supported_list(&self, today: Date) -> String {
        let mut v: Vec<&Release> = self
            .kubernetes
            .iter()
            .filter(|r| r.released <= today && today <= r.end_of_life)
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.minor));
        let names: Vec<String> = v
            .iter()
            .map(|r| format!("{} (until {})", r.minor, r.end_of_life))
            .collect();
        match names.split_last() {
            None => "none".into(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        }
    }

    pub fn support(&self, v: KubeVersion, today: Date) -> Support<'_> {
        let minor = v.minor_of();
        if let Some(r) = self.release(minor) {
            if today > r.end_of_life {
                return Support::EndOfLife {
                    minor,
                    end_of_life: r.end_of_life,
                };
            }
            return Support::Supported(r);
        }
        match self.retired.iter().find(|r| r.minor == minor) {
            Some(r) => Support::EndOfLife {
                minor,
                end_of_life: r.end_of_life,
            },
            None => Support::Unknown,
        }
    }

    pub fn download(&self, c: Component) -> Option<&DownloadSpec> {
        self.downloads.iter().find(|d| d.name == c)
    }

    pub fn cni(&self, plugin: CniPlugin) -> Option<&CniRelease> {
        self.cni.iter().find(|c| c.plugin == plugin)
    }

    pub fn addon(&self, kind: AddonKind) -> Option<&AddonRelease> {
        self.addons.iter().find(|a| a.name == kind)
    }
}

/// The version of every component kbs installs for one cluster: a row of the data file with the
/// inventory's `[versions]` overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components {
    pub kubernetes: KubeVersion,
    pub etcd: Version,
    pub containerd: Version,
    pub runc: Version,
    pub cni_plugins: Version,
    pub crictl: Version,
    /// Image tags kubeadm picks for this minor.
    pub pause: String,
    pub coredns: String,
    /// kubeadm's oldest accepted external etcd.
    pub min_external_etcd: Version,
    /// The minor whose row these came from.
    pub row: Minor,
    /// The components the inventory set itself.
    pub overridden: Vec<Component>,
    /// Why this version is unsupported, when it was allowed anyway (`--allow-unsupported-version`).
    pub unsupported: Option<String>,
}

impl Components {
    /// A row's versions, for `kubernetes`.
    pub fn from_release(r: &Release, kubernetes: KubeVersion) -> Self {
        Self {
            kubernetes,
            etcd: r.etcd,
            containerd: r.containerd,
            runc: r.runc,
            cni_plugins: r.cni_plugins,
            crictl: r.crictl,
            pause: r.pause.clone(),
            coredns: r.coredns.clone(),
            min_external_etcd: r.min_external_etcd,
            row: r.minor,
            overridden: Vec::new(),
            unsupported: None,
        }
    }

    pub fn version(&self, c: Component) -> String {
        match c {
            Component::Kubeadm | Component::Kubelet | Component::Kubectl => self.kubernetes.bare(),
            Component::Etcd => self.etcd.to_string(),
            Component::Containerd => self.containerd.to_string(),
            Component::Runc => self.runc.to_string(),
            Component::CniPlugins => self.cni_plugins.to_string(),
            Component::Crictl => self.crictl.to_string(),
        }
    }

    /// The placeholders of the data file's URLs and image names.
    pub fn vars(&self, arch: &str) -> Vec<(&'static str, String)> {
        vec![
            ("kubernetes", self.kubernetes.bare()),
            ("etcd", self.etcd.to_string()),
            ("containerd", self.containerd.to_string()),
            ("runc", self.runc.to_string()),
            ("cni_plugins", self.cni_plugins.to_string()),
            ("crictl", self.crictl.to_string()),
            ("pause", self.pause.clone()),
            ("coredns", self.coredns.clone()),
            ("arch", arch.to_string()),
        ]
    }

    /// kubeadm's pause image (the sandbox image containerd pins), from the data file's list.
    pub fn pause_image(&self) -> String {
        self.kubeadm_images()
            .into_iter()
            .find(|i| {
                i.rsplit_once(':')
                    .is_some_and(|(repo, _)| repo.ends_with("/pause"))
            })
            .unwrap_or_default()
    }

    /// The upstream names of the images kubeadm needs, in `kubeadm config images list` order.
    pub fn kubeadm_images(&self) -> Vec<String> {
        let c = catalog();
        let vars = self.vars(&c.arch);
        c.images.kubeadm.iter().map(|i| expand(i, &vars)).collect()
    }
}

/// Today in UTC: the date end-of-life is judged on.
pub fn today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

/// `{name}` placeholders replaced from `vars`; an unknown placeholder is left as it is so that a
/// data-file mistake shows in the URL it produces.
pub fn expand(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_data_file_is_complete_and_consistent() {
        let c: Catalog = toml::from_str(DATA).expect("data/versions.toml parses");
        assert!(!c.kubernetes.is_empty());
        let newest = Components::from_release(&c.kubernetes[0], c.kubernetes[0].latest);
        assert_eq!(
            newest.pause_image(),
            format!("registry.k8s.io/pause:{}", c.kubernetes[0].pause)
        );
        for r in &c.kubernetes {
            assert_eq!(
                r.latest.minor_of(),
                r.minor,
                "{}: latest is of another minor",
                r.minor
            );
            assert!(r.released < r.end_of_life, "{}", r.minor);
            assert!(
                r.etcd >= r.min_external_etcd,
                "{}: pinned etcd below kubeadm's minimum",
                r.minor
            );
        }
        for comp in [
            Component::Kubeadm,
            Component::Kubelet,
            Component::Kubectl,
            Component::Etcd,
            Component::Containerd,
            Component::Runc,
            Component::CniPlugins,
            Component::Crictl,
        ] {
            let d = c
                .download(comp)
                .unwrap_or_else(|| panic!("no download for {comp:?}"));
            assert!(d.url.starts_with("https://"), "{}", d.url);
            assert!(!d.install.is_empty());
        }
        for p in [CniPlugin::Flannel, CniPlugin::Calico, CniPlugin::Cilium] {
            assert!(c.cni(p).is_some(), "{p:?}");
        }
        for k in AddonKind::ALL {
            let a = c.addon(k).unwrap_or_else(|| panic!("no [[addon]] {k:?}"));
            assert!(
                a.manifest.is_empty() || a.manifest.starts_with("https://"),
                "{}",
                a.manifest
            );
            // Only the Gateway API's CRDs run nothing.
            assert!(!a.images.is_empty() || k == AddonKind::GatewayApi, "{k:?}");
            // Fully qualified: the bundle pulls them by this name.
            for i in &a.images {
                assert!(
                    i.name.split('/').next().is_some_and(|h| h.contains('.')),
                    "{}",
                    i.name
                );
            }
        }
    }

    #[test]
    fn support_follows_the_dates() {
        let c = catalog();
        let v = |s: &str| s.parse::<KubeVersion>().expect("version");
        let day = date!(2026 - 12 - 06);
        assert!(matches!(c.support(v("1.37.2"), day), Support::Supported(_)));
        match c.support(v("1.31.4"), day) {
            Support::EndOfLife { end_of_life, .. } => {
                assert_eq!(end_of_life, date!(2025 - 10 - 28))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.support(v("1.99.0"), day), Support::Unknown));
        // A listed minor past its date is end of life too.
        assert!(matches!(
            c.support(v("1.35.1"), date!(2030 - 01 - 01)),
            Support::EndOfLife { .. }
        ));
        assert_eq!(c.newest(day).map(|r| r.minor), Some(Minor(1, 37)));
    }

    #[test]
    fn versions_parse_as_upstream_writes_them() {
        let v = |s: &str| s.parse::<Version>();
        assert_eq!(v("3.5.24-0").map(|v| v.to_string()), Ok("3.5.24".into()));
        assert_eq!(v("v2.1.5").map(|v| v.to_string()), Ok("2.1.5".into()));
        assert!(v("3.5").is_err() && v("3.5.x").is_err() && v("1.2.3.4").is_err());
        assert!("1.37.0-rc.1".parse::<KubeVersion>().is_err());
        assert_eq!(
            expand(
                "a/v{etcd}/{arch}/{nope}",
                &[("etcd", "3.6.11".into()), ("arch", "amd64".into())]
            ),
            "a/v3.6.11/amd64/{nope}"
        );
    }
}
