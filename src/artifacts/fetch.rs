//! HTTP downloads for `make`: mirror rewrites, upstream checksum files, resumable transfers into
//! `.part` files, and nothing kept whose SHA-256 does not match.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ArtifactError;
use crate::inventory::Mirror;
use crate::versions::ChecksumFormat;

pub(super) struct Fetcher {
    client: reqwest::Client,
    mirrors: Vec<Mirror>,
    pub progress: MultiProgress,
}

/// What one download did.
pub(super) struct Fetched {
    pub path: PathBuf,
    pub sha256: String,
    /// Bytes that crossed the network in this run (0 when the file was already there).
    pub downloaded: u64,
}

impl Fetcher {
    pub fn new(mirrors: Vec<Mirror>, progress: MultiProgress) -> Result<Self, ArtifactError> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("kbs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ArtifactError::Fetch {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(Self {
            client,
            mirrors,
            progress,
        })
    }

    /// The URL actually fetched: the first mirror whose `from` prefixes it, else the URL itself.
    pub fn rewrite(&self, url: &str) -> String {
        self.mirrors
            .iter()
            .find_map(|m| {
                url.strip_prefix(&m.from)
                    .map(|rest| format!("{}{rest}", m.to))
            })
            .unwrap_or_else(|| url.to_string())
    }

    async fn get(&self, url: &str, range_from: u64) -> Result<reqwest::Response, ArtifactError> {
        let from = self.rewrite(url);
        let fail = |message: String| ArtifactError::Fetch {
            url: from.clone(),
            message,
        };
        let mut req = self.client.get(&from);
        if range_from > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={range_from}-"));
        }
        let resp = req.send().await.map_err(|e| fail(error_chain(&e)))?;
        // A range past the end is the caller's to handle (a `.part` already whole, or longer).
        let past_end =
            range_from > 0 && resp.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE;
        if !resp.status().is_success() && !past_end {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        Ok(resp)
    }

    /// The SHA-256 that an upstream checksum file gives for `file_name`.
    pub async fn checksum(
        &self,
        url: &str,
        format: ChecksumFormat,
        file_name: &str,
    ) -> Result<String, ArtifactError> {
        let text = self
            .get(url, 0)
            .await?
            .text()
            .await
            .map_err(|e| ArtifactError::Fetch {
                url: self.rewrite(url),
                message: error_chain(&e),
            })?;
        parse_checksum(&text, format, file_name).ok_or_else(|| ArtifactError::Fetch {
            url: self.rewrite(url),
            message: format!("holds no SHA-256 for {file_name}"),
        })
    }

    /// Downloads `url` to `dest` unless `dest` already has `sha256`; resumes a `.part` left by an
    /// interrupted run. A wrong sum deletes what was fetched.
    pub async fn file(
        &self,
        url: &str,
        dest: &Path,
        sha256: &str,
    ) -> Result<Fetched, ArtifactError> {
        let io = |path: &Path, e: std::io::Error| ArtifactError::Read {
            path: path.to_path_buf(),
            source: e,
        };
        if dest.is_file() && hash_file(dest).await.map_err(|e| io(dest, e))? == sha256 {
            return Ok(Fetched {
                path: dest.to_path_buf(),
                sha256: sha256.to_string(),
                downloaded: 0,
            });
        }
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io(dir, e))?;
        }
        let part = dest.with_extension(format!(
            "{}part",
            dest.extension()
                .map(|e| format!("{}.", e.to_string_lossy()))
                .unwrap_or_default()
        ));
        // What an earlier run left: hashed first, so the sum covers the whole file.
        let mut hasher = Sha256::new();
        let mut have = 0u64;
        if let Ok(mut f) = tokio::fs::File::open(&part).await {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| io(&part, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                have += n as u64;
            }
        }
        // Cut off after the last byte but before the rename: the `.part` is the whole file.
        if have > 0 && hex::encode(hasher.clone().finalize()) == sha256 {
            tokio::fs::rename(&part, dest)
                .await
                .map_err(|e| io(dest, e))?;
            return Ok(Fetched {
                path: dest.to_path_buf(),
                sha256: sha256.to_string(),
                downloaded: 0,
            });
        }
        let mut resp = self.get(url, have).await?;
        if resp.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            // Nothing past what the `.part` holds, yet it is not the file: start over.
            hasher = Sha256::new();
            have = 0;
            resp = self.get(url, 0).await?;
        }
        if have > 0 && resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            // The server ignored the range: start over.
            hasher = Sha256::new();
            have = 0;
        }
        let name = dest
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let bar = self
            .progress
            .add(ProgressBar::new(have + resp.content_length().unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:40} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(name.clone());
        bar.set_position(have);
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(have > 0)
            .truncate(have == 0)
            .open(&part)
            .await
            .map_err(|e| io(&part, e))?;
        let mut stream = resp.bytes_stream();
        let mut downloaded = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ArtifactError::Fetch {
                url: self.rewrite(url),
                message: error_chain(&e),
            })?;
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(|e| io(&part, e))?;
            downloaded += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
        }
        out.flush().await.map_err(|e| io(&part, e))?;
        drop(out);
        bar.finish_and_clear();
        let found = hex::encode(hasher.finalize());
        if found != sha256 {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(ArtifactError::Checksum {
                path: PathBuf::from(self.rewrite(url)),
                expected: sha256.to_string(),
                found,
            });
        }
        tokio::fs::rename(&part, dest)
            .await
            .map_err(|e| io(dest, e))?;
        Ok(Fetched {
            path: dest.to_path_buf(),
            sha256: found,
            downloaded,
        })
    }

    /// A small file whose sum may be pinned (a CNI manifest), kept in memory.
    pub async fn bytes(&self, url: &str) -> Result<Vec<u8>, ArtifactError> {
        let resp = self.get(url, 0).await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ArtifactError::Fetch {
                url: self.rewrite(url),
                message: error_chain(&e),
            })
    }
}

/// reqwest's Display stops at "error sending request"; the cause (refused, DNS, TLS) is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

pub(super) async fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The digest for `file_name` in an upstream checksum file.
fn parse_checksum(text: &str, format: ChecksumFormat, file_name: &str) -> Option<String> {
    let is_sum = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let sum = match format {
        ChecksumFormat::Hex => text.split_whitespace().next().filter(|s| is_sum(s))?,
        ChecksumFormat::Sha256sum => text.lines().find_map(|l| {
            let mut parts = l.split_whitespace();
            let (sum, name) = (parts.next()?, parts.next()?);
            // `*name` marks binary mode; `./name` appears in some projects' files.
            let name = name.trim_start_matches('*').trim_start_matches("./");
            (is_sum(sum) && name == file_name).then_some(sum)
        })?,
    };
    Some(sum.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_upstream_checksum_files() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        assert_eq!(
            parse_checksum(&format!("{a}\n"), ChecksumFormat::Hex, "kubeadm"),
            Some(a.clone())
        );
        let sums =
            format!("{a}  etcd-v3.6.8-linux-arm64.tar.gz\n{b} *etcd-v3.6.8-linux-amd64.tar.gz\n");
        assert_eq!(
            parse_checksum(
                &sums,
                ChecksumFormat::Sha256sum,
                "etcd-v3.6.8-linux-amd64.tar.gz"
            ),
            Some("b".repeat(64))
        );
        assert_eq!(
            parse_checksum(&sums, ChecksumFormat::Sha256sum, "other"),
            None
        );
        assert_eq!(parse_checksum("not a sum", ChecksumFormat::Hex, "x"), None);
    }

    #[test]
    fn mirrors_rewrite_by_prefix() {
        let f = Fetcher::new(
            vec![Mirror {
                from: "https://dl.k8s.io/".into(),
                to: "http://10.0.0.5/dl.k8s.io/".into(),
            }],
            MultiProgress::new(),
        )
        .expect("client");
        assert_eq!(
            f.rewrite("https://dl.k8s.io/release/v1.37.1/bin/linux/amd64/kubeadm"),
            "http://10.0.0.5/dl.k8s.io/release/v1.37.1/bin/linux/amd64/kubeadm"
        );
        assert_eq!(f.rewrite("https://github.com/x"), "https://github.com/x");
    }
}
