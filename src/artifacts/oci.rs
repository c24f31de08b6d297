//! Container images for `make`: one platform's image pulled over the OCI distribution API
//! (oci-client), every blob checked against its digest, written as an OCI image-layout archive
//! that `ctr images import` reads, named as the hosts will know it.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ArtifactError;
use super::fetch::hash_file;

pub(super) struct Puller {
    client: Client,
    /// The credentials for one registry host (the site's registry), anonymous elsewhere.
    auth: Option<(String, RegistryAuth)>,
    arch: String,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// A pulled image.
pub(super) struct Pulled {
    /// The platform image manifest's digest: what containerd lists after the import.
    pub digest: String,
    pub downloaded: u64,
}

impl Puller {
    pub fn new(ca: Option<Vec<u8>>, auth: Option<(String, String, String)>, arch: &str) -> Self {
        let config = ClientConfig {
            extra_root_certificates: ca
                .map(|data| {
                    vec![Certificate {
                        encoding: CertificateEncoding::Pem,
                        data,
                    }]
                })
                .unwrap_or_default(),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        Self {
            client: Client::new(config),
            auth: auth.map(|(host, user, pass)| (host, RegistryAuth::Basic(user, pass))),
            arch: arch.to_string(),
        }
    }

    fn auth_for(&self, r: &Reference) -> RegistryAuth {
        match &self.auth {
            Some((host, auth)) if host == r.registry() => auth.clone(),
            _ => RegistryAuth::Anonymous,
        }
    }

    /// Pulls `from` (linux/<arch> from an index) into `dest` as an OCI archive naming it `name`.
    /// Blobs are kept in `blobs` between runs, so an interrupted run fetches each only once; an
    /// archive already in place with the same digest is kept.
    pub async fn pull(
        &self,
        from: &str,
        name: &str,
        blobs: &Path,
        dest: &Path,
    ) -> Result<Pulled, ArtifactError> {
        let fail = |message: String| ArtifactError::Image {
            image: from.to_string(),
            message,
        };
        let reference: Reference = from
            .parse()
            .map_err(|e| fail(format!("not an image reference: {e}")))?;
        let auth = self.auth_for(&reference);
        let accepted = [
            OCI_IMAGE_INDEX_MEDIA_TYPE,
            IMAGE_MANIFEST_LIST_MEDIA_TYPE,
            OCI_IMAGE_MEDIA_TYPE,
            IMAGE_MANIFEST_MEDIA_TYPE,
        ];
        let (mut raw, mut digest) = self
            .client
            .pull_manifest_raw(&reference, &auth, &accepted)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut manifest: Manifest =
            serde_json::from_slice(&raw).map_err(|e| fail(format!("unreadable manifest: {e}")))?;
        if !manifest.manifests.is_empty() {
            let entry = manifest
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == self.arch)
                })
                .ok_or_else(|| fail(format!("the image index has no linux/{} image", self.arch)))?;
            let platform = reference.clone_with_digest(entry.digest.clone());
            (raw, digest) = self
                .client
                .pull_manifest_raw(&platform, &auth, &accepted)
                .await
                .map_err(|e| fail(e.to_string()))?;
            manifest = serde_json::from_slice(&raw)
                .map_err(|e| fail(format!("unreadable manifest: {e}")))?;
        }
        let found = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
        if found != digest {
            return Err(fail(format!(
                "the manifest's content has digest {found}, not {digest}"
            )));
        }
        if archive_digest(dest).as_deref() == Some(digest.as_str()) {
            return Ok(Pulled {
                digest,
                downloaded: 0,
            });
        }
        let config = manifest
            .config
            .as_ref()
            .ok_or_else(|| fail("the manifest names no config".into()))?;
        let mut downloaded = raw.len() as u64;
        let mut parts = Vec::new();
        for d in std::iter::once(config).chain(&manifest.layers) {
            let hex = d
                .digest
                .strip_prefix("sha256:")
                .ok_or_else(|| fail(format!("{} is not a sha256 digest", d.digest)))?;
            let path = blobs.join(hex);
            let have = hash_file(&path).await.ok();
            if have.as_deref() != Some(hex) {
                tokio::fs::create_dir_all(blobs)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let part = path.with_extension("part");
                let file = tokio::fs::File::create(&part)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                // oci-client checks the blob against its digest while it streams.
                self.client
                    .pull_blob(&reference, d.digest.as_str(), file)
                    .await
                    .map_err(|e| {
                        let _ = std::fs::remove_file(&part);
                        fail(format!("blob {}: {e}", d.digest))
                    })?;
                tokio::fs::rename(&part, &path)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                downloaded += u64::try_from(d.size).unwrap_or(0);
            }
            parts.push((hex.to_string(), path));
        }
        let media_type = if manifest.media_type.is_empty() {
            OCI_IMAGE_MEDIA_TYPE.to_string()
        } else {
            manifest.media_type.clone()
        };
        write_archive(dest, name, &media_type, &digest, &raw, &parts)
            .map_err(|e| fail(format!("cannot write {}: {e}", dest.display())))?;
        Ok(Pulled { digest, downloaded })
    }
}

/// The OCI image layout, in a tar: `oci-layout`, `index.json` (first, so that a later run can read
/// the digest cheaply), then the blobs. Fixed timestamps and owners: the same image gives the same
/// bytes, and so the same SHA-256 in bundle.toml.
fn write_archive(
    dest: &Path,
    name: &str,
    media_type: &str,
    digest: &str,
    manifest: &[u8],
    blobs: &[(String, PathBuf)],
) -> std::io::Result<()> {
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": manifest.len(),
            "annotations": {
                // containerd names the imported image by this; other tools read the ref name.
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            }
        }]
    });
    let tmp = dest.with_extension("tar.tmp");
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tar = tar::Builder::new(std::fs::File::create(&tmp)?);
    let mut add = |path: &str, data: &mut dyn Read, size: u64| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        tar.append_data(&mut h, path, data)
    };
    let index = serde_json::to_vec(&index)?;
    add("index.json", &mut index.as_slice(), index.len() as u64)?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add("oci-layout", &mut layout.as_slice(), layout.len() as u64)?;
    let mhex = digest.trim_start_matches("sha256:");
    add(
        &format!("blobs/sha256/{mhex}"),
        &mut &manifest[..],
        manifest.len() as u64,
    )?;
    for (hex, path) in blobs {
        let mut f = std::fs::File::open(path)?;
        let size = f.metadata()?.len();
        add(&format!("blobs/sha256/{hex}"), &mut f, size)?;
    }
    tar.into_inner()?.sync_all()?;
    std::fs::rename(tmp, dest)
}

/// The manifest digest an existing archive holds, read from its `index.json`.
fn archive_digest(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut a = tar::Archive::new(f);
    let mut entry = a.entries().ok()?.next()?.ok()?;
    if entry.path().ok()?.as_os_str() != "index.json" {
        return None;
    }
    let index: Manifest = serde_json::from_reader(&mut entry).ok()?;
    index.manifests.first().map(|m| m.digest.clone())
}
