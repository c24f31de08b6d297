//! Making a bundle: every artifact the inventory's hosts need, resolved from data/versions.toml,
//! fetched in parallel (through the site's mirrors and registry), checked against upstream's
//! checksums and digests, unpacked where the hosts need single files, and listed in bundle.toml.
//! `kbs bundle` writes one for an air-gapped site; `kbs apply` without a bundle makes one in the
//! state dir first, so both paths install the same checked files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use indicatif::{MultiProgress, ProgressDrawTarget};
use serde::Serialize;

use super::fetch::{Fetcher, hash_file};
use super::oci::Puller;
use super::{ArtifactError, HashingWriter, HostClass, MANIFEST};
use crate::inventory::Inventory;
use crate::versions::{self, Component, DownloadSpec, catalog};

/// How many downloads run at once.
const PARALLEL: usize = 8;

/// What a `make` did, for its summary and the benchmark.
#[derive(Debug, Clone)]
pub struct Made {
    pub dir: PathBuf,
    pub files: usize,
    pub images: usize,
    /// Bytes fetched over the network in this run.
    pub downloaded: u64,
    /// The bundle's size on disk (what `kbs apply` reads).
    pub size: u64,
    pub elapsed: Duration,
}

/// The downloads the inventory's hosts need.
fn wanted_downloads(inv: &Inventory) -> Vec<&'static DownloadSpec> {
    catalog()
        .downloads
        .iter()
        .filter(|d| d.name != Component::Crictl || inv.artifacts.crictl)
        .collect()
}

#[derive(Serialize)]
struct OutManifest {
    kubernetes_version: String,
    #[serde(rename = "download")]
    downloads: Vec<OutDownload>,
    #[serde(rename = "file")]
    files: Vec<OutFile>,
    #[serde(rename = "image")]
    images: Vec<OutImage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cni: Option<OutRelease>,
    #[serde(rename = "addon")]
    addons: Vec<OutRelease>,
}

#[derive(Serialize)]
struct OutDownload {
    url: String,
    fetched_from: String,
    sha256: String,
}

#[derive(Serialize)]
struct OutFile {
    source: String,
    install: String,
    mode: String,
    sha256: String,
    #[serde(rename = "for")]
    hosts: HostClass,
}

#[derive(Serialize)]
struct OutImage {
    name: String,
    source: String,
    sha256: String,
    digest: String,
    #[serde(rename = "for")]
    hosts: HostClass,
}

/// A CNI or addon release's manifest; bundle.toml names a CNI by `plugin`, an addon by `name`.
#[derive(Serialize)]
struct OutRelease {
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    version: String,
    source: String,
    sha256: String,
}

enum Done {
    Download(OutDownload, Vec<OutFile>, u64),
    Image(OutImage, u64),
}

/// Makes (or completes) the bundle for `inv` in `out`. Files already there with the right sum are
/// kept; bundle.toml is written last, so a bundle cut off halfway is never mistaken for a whole one.
pub async fn make(inv: &Inventory, out: &Path, show_progress: bool) -> Result<Made, ArtifactError> {
    let started = Instant::now();
    let cat = catalog();
    let io = |path: &Path, source: std::io::Error| ArtifactError::Read {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let manifest_path = out.join(MANIFEST);
    match std::fs::remove_file(&manifest_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&manifest_path, e)),
        _ => {}
    }
    let progress = MultiProgress::with_draw_target(if show_progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let fetcher = Fetcher::new(inv.artifacts.mirrors.clone(), progress)?;
    let puller = puller(inv)?;
    let vars = inv.versions.vars(&cat.arch);
    let blobs = out.join(".partial/blobs");

    let mut jobs: Vec<BoxFuture<'_, Result<Done, ArtifactError>>> = Vec::new();
    for d in wanted_downloads(inv) {
        let (fetcher, vars) = (&fetcher, &vars);
        jobs.push(Box::pin(async move {
            let url = versions::expand(&d.url, vars);
            let file_name = url.rsplit('/').next().unwrap_or(&url).to_string();
            let sha256 = fetcher
                .checksum(
                    &versions::expand(&d.checksum.url, vars),
                    d.checksum.format,
                    &file_name,
                )
                .await?;
            let dest = out.join("downloads").join(&file_name);
            let got = fetcher.file(&url, &dest, &sha256).await?;
            let files = unpack(d, vars, out, &got.path, &got.sha256).await?;
            Ok(Done::Download(
                OutDownload {
                    fetched_from: fetcher.rewrite(&url),
                    url,
                    sha256: got.sha256,
                },
                files,
                got.downloaded,
            ))
        }));
    }
    for w in inv.images() {
        let (puller, blobs) = (&puller, &blobs);
        jobs.push(Box::pin(async move {
            let file = format!("images/{}.oci.tar", file_safe(&w.name));
            let dest = out.join(&file);
            let pulled = puller.pull(&w.from, &w.name, blobs, &dest).await?;
            let sha256 = hash_file(&dest).await.map_err(|e| io(&dest, e))?;
            Ok(Done::Image(
                OutImage {
                    name: w.name,
                    source: file,
                    sha256,
                    digest: pulled.digest,
                    hosts: w.hosts,
                },
                pulled.downloaded,
            ))
        }));
    }
    let results: Vec<Result<Done, ArtifactError>> = futures::stream::iter(jobs)
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut manifest = OutManifest {
        kubernetes_version: inv.versions.kubernetes.to_string(),
        downloads: Vec::new(),
        files: Vec::new(),
        images: Vec::new(),
        cni: None,
        addons: Vec::new(),
    };
    let mut downloaded = 0;
    for r in results {
        match r? {
            Done::Download(d, files, n) => {
                manifest.downloads.push(d);
                manifest.files.extend(files);
                downloaded += n;
            }
            Done::Image(i, n) => {
                manifest.images.push(i);
                downloaded += n;
            }
        }
    }
    // The CNI's and the addons' manifests: their sums are filled in as they are fetched.
    let mut releases: Vec<(&str, Option<&String>, OutRelease)> = Vec::new();
    if let Some(r) = inv.cni.as_ref().and_then(|c| c.release.as_ref())
        && let Some(url) = &r.manifest_url
    {
        releases.push((
            url,
            r.sha256.as_ref(),
            OutRelease {
                plugin: Some(r.plugin.as_str().into()),
                name: None,
                version: r.version.clone(),
                source: format!("cni/{}-{}.yaml", r.plugin.as_str(), file_safe(&r.version)),
                sha256: String::new(),
            },
        ));
    }
    // An addon kbs renders from templates/ has no manifest to fetch, only its images.
    for a in &inv.addons {
        let Some(url) = &a.manifest_url else { continue };
        releases.push((
            url,
            a.sha256.as_ref(),
            OutRelease {
                plugin: None,
                name: Some(a.kind.as_str().into()),
                version: a.version.clone(),
                source: format!("addons/{}-{}.yaml", a.kind.as_str(), file_safe(&a.version)),
                sha256: String::new(),
            },
        ));
    }
    for (url, pinned, mut release) in releases {
        let (download, sha256, n) =
            fetch_manifest(&fetcher, out, url, pinned, &release.source).await?;
        manifest.downloads.push(download);
        downloaded += n;
        release.sha256 = sha256;
        if release.plugin.is_some() {
            manifest.cni = Some(release);
        } else {
            manifest.addons.push(release);
        }
    }
    // A stable order: the same inputs give the same bundle.toml.
    manifest.downloads.sort_by(|a, b| a.url.cmp(&b.url));
    manifest.files.sort_by(|a, b| a.install.cmp(&b.install));
    manifest.images.sort_by(|a, b| a.name.cmp(&b.name));
    let text = format!(
        "# Made by kbs bundle {} for Kubernetes {}: every file with its SHA-256, every image with its digest.\n{}",
        env!("CARGO_PKG_VERSION"),
        inv.versions.kubernetes,
        toml::to_string(&manifest).map_err(|e| ArtifactError::Manifest {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?
    );
    let tmp = out.join(".bundle.toml.tmp");
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &manifest_path).map_err(|e| io(&manifest_path, e))?;
    let _ = std::fs::remove_dir_all(out.join(".partial"));
    Ok(Made {
        dir: out.to_path_buf(),
        files: manifest.files.len(),
        images: manifest.images.len(),
        downloaded,
        size: dir_size(out),
        elapsed: started.elapsed(),
    })
}

/// A release's manifest (a CNI's or an addon's) fetched to `out/source`, checked against its
/// pinned sum where there is one: the download record, its SHA-256 and the bytes fetched.
async fn fetch_manifest(
    fetcher: &Fetcher,
    out: &Path,
    url: &str,
    pinned: Option<&String>,
    source: &str,
) -> Result<(OutDownload, String, u64), ArtifactError> {
    let bytes = fetcher.bytes(url).await?;
    let sha256 = super::sha256_hex(&bytes);
    if let Some(pinned) = pinned
        && *pinned != sha256
    {
        return Err(ArtifactError::Checksum {
            path: PathBuf::from(fetcher.rewrite(url)),
            expected: pinned.clone(),
            found: sha256,
        });
    }
    let path = out.join(source);
    let io = |source: std::io::Error| ArtifactError::Read {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&path, &bytes).map_err(io)?;
    Ok((
        OutDownload {
            fetched_from: fetcher.rewrite(url),
            url: url.to_string(),
            sha256: sha256.clone(),
        },
        sha256,
        bytes.len() as u64,
    ))
}

fn puller(inv: &Inventory) -> Result<Puller, ArtifactError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ArtifactError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let Some(reg) = &inv.registry else {
        return Ok(Puller::new(None, None, &catalog().arch));
    };
    let ca = reg.ca_file.as_deref().map(read).transpose()?;
    let auth = match &reg.credentials_file {
        Some(p) => {
            let text = String::from_utf8_lossy(&read(p)?).trim().to_string();
            let (user, pass) = text
                .split_once(':')
                .ok_or_else(|| ArtifactError::Manifest {
                    path: p.clone(),
                    message: "must hold `user:password` on one line".into(),
                })?;
            Some((reg.host().to_string(), user.to_string(), pass.to_string()))
        }
        None => None,
    };
    Ok(Puller::new(ca, auth, &catalog().arch))
}

/// The files a download installs: the download itself, or files taken out of its archive into
/// `files/<component>/`.
async fn unpack(
    d: &'static DownloadSpec,
    vars: &[(&str, String)],
    out: &Path,
    archive: &Path,
    archive_sha256: &str,
) -> Result<Vec<OutFile>, ArtifactError> {
    let rel = |p: &Path| {
        p.strip_prefix(out)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let mut files = Vec::new();
    let dir = out.join("files").join(d.name.as_str());
    let mut from_archive = Vec::new();
    for i in &d.install {
        if i.from == "." {
            files.push(OutFile {
                source: rel(archive),
                install: i.to.clone(),
                mode: i.mode.clone(),
                sha256: archive_sha256.to_string(),
                hosts: i.hosts,
            });
        } else {
            from_archive.push(i);
        }
    }
    if from_archive.is_empty() {
        return Ok(files);
    }
    let wanted: Vec<(String, &versions::InstallSpec)> = from_archive
        .iter()
        .map(|i| (versions::expand(&i.from, vars), *i))
        .collect();
    let (archive_path, dir2) = (archive.to_path_buf(), dir.clone());
    // Unpacking is blocking work (gzip): off the async threads.
    let extracted = tokio::task::spawn_blocking(move || extract(&archive_path, &wanted, &dir2))
        .await
        .map_err(|e| ArtifactError::Archive {
            path: archive.to_path_buf(),
            message: e.to_string(),
        })??;
    for (path, spec, sha256) in extracted {
        let install = if spec.to.ends_with('/') {
            format!(
                "{}{}",
                spec.to,
                path.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            )
        } else {
            spec.to.clone()
        };
        files.push(OutFile {
            source: rel(&path),
            install,
            mode: spec.mode.clone(),
            sha256,
            hosts: spec.hosts,
        });
    }
    Ok(files)
}

/// Takes the wanted entries out of a .tar.gz: `a/b` exactly, or `a/*` for every file in `a/`;
/// each file's SHA-256 is computed as it is written.
fn extract<'a>(
    archive: &Path,
    wanted: &[(String, &'a versions::InstallSpec)],
    dir: &Path,
) -> Result<Vec<(PathBuf, &'a versions::InstallSpec, String)>, ArtifactError> {
    let bad = |message: String| ArtifactError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let f = std::fs::File::open(archive).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
    let norm = |s: &str| s.trim_start_matches("./").trim_end_matches('/').to_string();
    let mut found = Vec::new();
    let mut seen = vec![false; wanted.len()];
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = norm(
            &entry
                .path()
                .map_err(|e| bad(e.to_string()))?
                .to_string_lossy(),
        );
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let hit = wanted.iter().position(|(from, _)| {
            let from = norm(from);
            match from
                .strip_suffix("/*")
                .or_else(|| (from == "*").then_some(""))
            {
                Some(d) => norm(d) == parent,
                None => from == path,
            }
        });
        if let Some(i) = hit {
            seen[i] = true;
            let dest = dir.join(name);
            let mut hashed =
                HashingWriter::new(std::fs::File::create(&dest).map_err(|e| bad(e.to_string()))?);
            std::io::copy(&mut entry, &mut hashed).map_err(|e| bad(e.to_string()))?;
            found.push((dest, wanted[i].1, hashed.finish().1));
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(bad(format!("holds no {}", wanted[i].0)));
    }
    Ok(found)
}

/// `registry.k8s.io/kube-apiserver:v1.37.1` → `registry.k8s.io_kube-apiserver_v1.37.1`.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(
            file_safe("registry.k8s.io/coredns/coredns:v1.14.6"),
            "registry.k8s.io_coredns_coredns_v1.14.6"
        );
    }
}
