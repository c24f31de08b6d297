//! Artifacts: the binaries and images a host needs (kubeadm, kubelet, etcd, containerd, …) and
//! where they come from. A bundle is a directory with a `bundle.toml` manifest that names every
//! file, where it is installed, for which hosts, and its SHA-256, and every image with its digest;
//! every sum is checked before anything is copied, so a corrupt or tampered bundle changes no host.
//! `make` builds a bundle from upstream (or a site's mirrors): `kbs bundle`, and apply in online
//! mode, go through it alike.

mod fetch;
pub mod make;
mod oci;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::inventory::{KubeVersion, Role};
use crate::plan::PlannedHost;
pub use crate::versions::HostClass;

/// The manifest's file name inside a bundle directory.
pub const MANIFEST: &str = "bundle.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    kubernetes_version: String,
    #[serde(default, rename = "file")]
    files: Vec<ManifestFile>,
    #[serde(default, rename = "link")]
    links: Vec<ManifestLink>,
    #[serde(default, rename = "image")]
    images: Vec<ManifestImage>,
    /// Where the bundle's files came from (for people; not read).
    #[serde(default, rename = "download")]
    _downloads: Vec<toml::Value>,
    /// The CNI manifest made from a CNI release (`[cni] plugin`).
    #[serde(default)]
    cni: Option<ManifestRelease>,
    /// The manifests of the addons' releases (`[addons]`).
    #[serde(default, rename = "addon")]
    addons: Vec<ManifestRelease>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestImage {
    /// The name containerd knows it by on the hosts (what kubeadm and the manifests ask for).
    name: String,
    /// An OCI archive, relative to the bundle directory.
    source: PathBuf,
    sha256: String,
    /// The image manifest's digest, as containerd reports it after the import.
    digest: String,
    #[serde(rename = "for")]
    hosts: HostClass,
}

/// A release's manifest: `[cni]` names it by `plugin`, `[[addon]]` by `name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestRelease {
    #[serde(alias = "plugin")]
    name: String,
    version: String,
    source: PathBuf,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    /// Relative to the bundle directory.
    source: PathBuf,
    install: PathBuf,
    /// Octal, as a string: "0755".
    mode: String,
    sha256: String,
    #[serde(rename = "for")]
    hosts: HostClass,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestLink {
    path: PathBuf,
    target: PathBuf,
    #[serde(rename = "for")]
    hosts: HostClass,
}

impl HostClass {
    pub fn includes(self, host: &PlannedHost) -> bool {
        match self {
            Self::Node => host.has(Role::ControlPlane) || host.has(Role::Worker),
            Self::ControlPlane => host.has(Role::ControlPlane),
            Self::Etcd => host.has(Role::Etcd),
        }
    }
}

/// A verified file to install: its bytes were read and matched the manifest's sum.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Where it came from, relative to the bundle directory.
    pub source: PathBuf,
    pub install: PathBuf,
    pub mode: u32,
    /// Shared by every host that gets the file.
    pub content: Arc<Content>,
    /// Lower-case hex, as checked.
    pub sha256: String,
    pub hosts: HostClass,
}

/// A symlink to create, e.g. /usr/bin/kubeadm → the installed file.
#[derive(Debug, Clone)]
pub struct Link {
    pub path: PathBuf,
    pub target: PathBuf,
    pub hosts: HostClass,
}

/// A container image to import into containerd, from a checked OCI archive.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub digest: String,
    /// The archive, as checked.
    pub archive: Artifact,
}

/// The manifest of a CNI or addon release, as fetched (kbs renders the cluster's values into it).
#[derive(Debug, Clone)]
pub struct ReleaseManifest {
    /// The CNI plugin or the addon.
    pub name: String,
    pub version: String,
    pub content: Arc<[u8]>,
}

/// A bundle file's bytes, read only when a host needs them, and checked against the manifest's
/// sum again as they are read (the file was checked when the bundle loaded, but may have changed
/// since). A run that changes nothing holds none of the bundle (hundreds of MB with its images)
/// in memory; a run that uploads a file reads it once for every host.
#[derive(Debug)]
pub struct Content {
    path: PathBuf,
    sha256: String,
    bytes: std::sync::OnceLock<Arc<[u8]>>,
}

impl Content {
    pub fn bytes(&self) -> Result<Arc<[u8]>, ArtifactError> {
        if let Some(b) = self.bytes.get() {
            return Ok(b.clone());
        }
        let content = fs::read(&self.path).map_err(|source| ArtifactError::Read {
            path: self.path.clone(),
            source,
        })?;
        let found = sha256_hex(&content);
        if found != self.sha256 {
            return Err(ArtifactError::Checksum {
                path: self.path.clone(),
                expected: self.sha256.clone(),
                found,
            });
        }
        Ok(self.bytes.get_or_init(|| Arc::from(content)).clone())
    }
}

/// Where image archives are put on the hosts before they are imported.
pub const IMAGE_DIR: &str = "/var/lib/kbs/images";

/// A bundle whose every file has been checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub kubernetes_version: String,
    pub files: Vec<Artifact>,
    pub links: Vec<Link>,
    pub images: Vec<Image>,
    pub cni: Option<ReleaseManifest>,
    pub addons: Vec<ReleaseManifest>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ArtifactError {
    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(help(
        "[artifacts] bundle must name a directory holding bundle.toml and the files it lists"
    ))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    #[diagnostic(help(
        "fix the manifest; every [[file]] needs source, install, mode, sha256 and for"
    ))]
    Manifest { path: PathBuf, message: String },
    #[error("{} does not match its SHA-256 in the bundle manifest (expected {expected}, found {found})", path.display())]
    #[diagnostic(help(
        "the bundle is corrupt or was changed after it was made: copy it again from its source; nothing was installed"
    ))]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("cannot fetch {url}: {message}")]
    #[diagnostic(help(
        "check the URL, the network and [artifacts] mirrors (a site's mirror must serve upstream's paths); nothing was installed"
    ))]
    Fetch { url: String, message: String },
    #[error("image {image}: {message}")]
    #[diagnostic(help(
        "check [registry] (address, ca_file, credentials_file) and that the registry holds the image for linux/amd64; nothing was installed"
    ))]
    Image { image: String, message: String },
    #[error("{}: {message}", path.display())]
    #[diagnostic(help(
        "the archive is not in upstream's layout; delete it and run kbs bundle again"
    ))]
    Archive { path: PathBuf, message: String },
    #[error("the bundle holds Kubernetes {bundle}, but the inventory asks for {inventory}")]
    #[diagnostic(help(
        "use a bundle made for {inventory}, or set cluster.kubernetes_version to the bundle's version"
    ))]
    Version { bundle: String, inventory: String },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes through to `inner` and hashes what passes: a file's sum without reading it again.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: std::io::Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The writer and the hex SHA-256 of everything written.
    pub fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Bundle {
    /// Reads `dir/bundle.toml` and every file it lists, checking each SHA-256 and the version.
    pub fn load(dir: &Path, version: &KubeVersion) -> Result<Self, ArtifactError> {
        let manifest_path = dir.join(MANIFEST);
        let read = |p: &Path| {
            fs::read(p).map_err(|source| ArtifactError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let text = String::from_utf8_lossy(&read(&manifest_path)?).into_owned();
        let manifest: Manifest = toml::from_str(&text).map_err(|e| ArtifactError::Manifest {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let wanted = version.to_string();
        if manifest.kubernetes_version.trim_start_matches('v') != wanted.trim_start_matches('v') {
            return Err(ArtifactError::Version {
                bundle: manifest.kubernetes_version,
                inventory: wanted,
            });
        }
        let bad = |message: String| ArtifactError::Manifest {
            path: manifest_path.clone(),
            message,
        };
        // Hashes a file the manifest names as it streams past (the bytes are not kept),
        // refusing paths outside the bundle and wrong sums.
        let checked = |source: &Path, sha256: &str| -> Result<Arc<Content>, ArtifactError> {
            if source.is_absolute()
                || source
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(bad(format!(
                    "source {} must be a path inside the bundle",
                    source.display()
                )));
            }
            let path = dir.join(source);
            let read_error = |source| ArtifactError::Read {
                path: path.clone(),
                source,
            };
            let mut file = fs::File::open(&path).map_err(read_error)?;
            let mut hashing = HashingWriter::new(std::io::sink());
            std::io::copy(&mut file, &mut hashing).map_err(read_error)?;
            let (_, found) = hashing.finish();
            if !found.eq_ignore_ascii_case(sha256) {
                return Err(ArtifactError::Checksum {
                    path,
                    expected: sha256.to_string(),
                    found,
                });
            }
            Ok(Arc::new(Content {
                path,
                sha256: found,
                bytes: std::sync::OnceLock::new(),
            }))
        };
        let mut files = Vec::with_capacity(manifest.files.len());
        for f in manifest.files {
            if !f.install.is_absolute() {
                return Err(bad(format!(
                    "install {} must be an absolute path",
                    f.install.display()
                )));
            }
            let mode = u32::from_str_radix(&f.mode, 8)
                .map_err(|_| bad(format!("mode `{}` is not octal, e.g. \"0755\"", f.mode)))?;
            let content = checked(&f.source, &f.sha256)?;
            files.push(Artifact {
                source: f.source,
                install: f.install,
                mode,
                sha256: content.sha256.clone(),
                content,
                hosts: f.hosts,
            });
        }
        let mut images = Vec::with_capacity(manifest.images.len());
        for i in manifest.images {
            let content = checked(&i.source, &i.sha256)?;
            let file = i
                .source
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| i.source.clone());
            images.push(Image {
                name: i.name,
                digest: i.digest,
                archive: Artifact {
                    install: Path::new(IMAGE_DIR).join(file),
                    source: i.source,
                    mode: 0o644,
                    sha256: content.sha256.clone(),
                    content,
                    hosts: i.hosts,
                },
            });
        }
        let release = |m: ManifestRelease| -> Result<ReleaseManifest, ArtifactError> {
            Ok(ReleaseManifest {
                content: checked(&m.source, &m.sha256)?.bytes()?,
                name: m.name,
                version: m.version,
            })
        };
        let cni = manifest.cni.map(release).transpose()?;
        let addons = manifest
            .addons
            .into_iter()
            .map(release)
            .collect::<Result<_, _>>()?;
        let links = manifest
            .links
            .into_iter()
            .map(|l| Link {
                path: l.path,
                target: l.target,
                hosts: l.hosts,
            })
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            kubernetes_version: manifest.kubernetes_version,
            files,
            links,
            images,
            cni,
            addons,
        })
    }

    /// The files `host` needs from this bundle.
    pub fn files_for<'a>(&'a self, host: &'a PlannedHost) -> impl Iterator<Item = &'a Artifact> {
        self.files.iter().filter(move |f| f.hosts.includes(host))
    }

    /// The checked file whose source is `path` (a path under the bundle directory).
    pub fn file(&self, path: &Path) -> Option<&Artifact> {
        self.files.iter().find(|f| self.dir.join(&f.source) == path)
    }

    pub fn links_for<'a>(&'a self, host: &'a PlannedHost) -> impl Iterator<Item = &'a Link> {
        self.links.iter().filter(move |l| l.hosts.includes(host))
    }

    /// The fetched manifest of an addon's release.
    pub fn addon(&self, name: &str) -> Option<&ReleaseManifest> {
        self.addons.iter().find(|a| a.name == name)
    }

    pub fn images_for<'a>(&'a self, host: &'a PlannedHost) -> impl Iterator<Item = &'a Image> {
        self.images
            .iter()
            .filter(move |i| i.archive.hosts.includes(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> KubeVersion {
        KubeVersion {
            major: 1,
            minor: 31,
            patch: 4,
        }
    }

    fn bundle(dir: &Path, sum: &str, version: &str) {
        fs::create_dir_all(dir.join("bin")).expect("mkdir");
        fs::write(dir.join("bin/kubeadm"), b"#!/bin/sh\n").expect("write");
        fs::write(
            dir.join(MANIFEST),
            format!(
                "kubernetes_version = \"{version}\"\n[[file]]\nsource = \"bin/kubeadm\"\ninstall = \"/usr/bin/kubeadm\"\nmode = \"0755\"\nsha256 = \"{sum}\"\nfor = \"node\"\n"
            ),
        )
        .expect("write");
    }

    #[test]
    fn loads_a_bundle_whose_sums_match() {
        let dir = tempfile::tempdir().expect("tmp");
        bundle(dir.path(), &sha256_hex(b"#!/bin/sh\n"), "v1.31.4");
        let b = Bundle::load(dir.path(), &version()).expect("loads");
        assert_eq!(b.files[0].mode, 0o755);
        assert_eq!(b.files[0].install, Path::new("/usr/bin/kubeadm"));
        // [cni] manifest names a bundle file by its path under the bundle directory.
        assert!(b.file(&dir.path().join("bin/kubeadm")).is_some());
        assert!(b.file(&dir.path().join("bin/other")).is_none());
    }

    #[test]
    fn refuses_a_tampered_file_and_a_version_mismatch() {
        let dir = tempfile::tempdir().expect("tmp");
        bundle(dir.path(), &sha256_hex(b"something else"), "v1.31.4");
        let e = Bundle::load(dir.path(), &version()).expect_err("tampered");
        assert!(
            e.to_string()
                .contains("bin/kubeadm does not match its SHA-256"),
            "{e}"
        );
        bundle(dir.path(), &sha256_hex(b"#!/bin/sh\n"), "v1.32.0");
        let e = Bundle::load(dir.path(), &version()).expect_err("version");
        assert!(
            e.to_string()
                .contains("holds Kubernetes v1.32.0, but the inventory asks for v1.31.4"),
            "{e}"
        );
    }
}
