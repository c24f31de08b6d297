//! Artifacts: the binaries and units a host needs (kubeadm, kubelet, etcd, …) and where they come
//! from. An offline bundle is a directory with a `bundle.toml` manifest that names every file, where
//! it is installed, for which hosts, and its SHA-256; every sum is checked before anything is
//! copied, so a corrupt or tampered bundle changes no host.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::inventory::{KubeVersion, Role};
use crate::plan::PlannedHost;

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

/// Which hosts get a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostClass {
    /// Every Kubernetes node (control plane or worker).
    Node,
    ControlPlane,
    Etcd,
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
    pub content: Arc<[u8]>,
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

/// A bundle whose every file has been checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub kubernetes_version: String,
    pub files: Vec<Artifact>,
    pub links: Vec<Link>,
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
    #[error("the bundle holds Kubernetes {bundle}, but the inventory asks for {inventory}")]
    #[diagnostic(help(
        "use a bundle made for {inventory}, or set cluster.kubernetes_version to the bundle's version"
    ))]
    Version { bundle: String, inventory: String },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
        let mut files = Vec::with_capacity(manifest.files.len());
        for f in manifest.files {
            let bad = |message: String| ArtifactError::Manifest {
                path: manifest_path.clone(),
                message,
            };
            if f.source.is_absolute()
                || f.source
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(bad(format!(
                    "source {} must be a path inside the bundle",
                    f.source.display()
                )));
            }
            if !f.install.is_absolute() {
                return Err(bad(format!(
                    "install {} must be an absolute path",
                    f.install.display()
                )));
            }
            let mode = u32::from_str_radix(&f.mode, 8)
                .map_err(|_| bad(format!("mode `{}` is not octal, e.g. \"0755\"", f.mode)))?;
            let path = dir.join(&f.source);
            let content = read(&path)?;
            let found = sha256_hex(&content);
            if !found.eq_ignore_ascii_case(&f.sha256) {
                return Err(ArtifactError::Checksum {
                    path,
                    expected: f.sha256,
                    found,
                });
            }
            files.push(Artifact {
                source: f.source,
                install: f.install,
                mode,
                content: Arc::from(content),
                sha256: found,
                hosts: f.hosts,
            });
        }
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
