//! `kbs backup`: an etcd snapshot taken on a healthy member, checked there, streamed here,
//! checked again (SHA-256 of what arrived against what was written), optionally encrypted to an
//! age recipient, named `<cluster>-<UTC time>-rev<revision>.db[.age]` with a `.sha256` sidecar
//! (`sha256sum -c` format), and pruned to the newest N. `--fetch` collects the snapshots the
//! scheduled timer left on the etcd hosts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use miette::{IntoDiagnostic, miette};
use serde::Deserialize;

use super::SNAPSHOT_TOOL;
use crate::artifacts::sha256_hex;
use crate::context::Ctx;
use crate::ssh::quote;
use crate::state::utc_stamp;

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Exactly this file (and FILE.sha256); no retention.
    pub out: Option<PathBuf>,
    /// Keep the newest N in the backups directory [default: `[backup] keep`, else 10].
    pub keep: Option<u32>,
    /// An age recipient; overrides `[backup] recipient`.
    pub encrypt_to: Option<String>,
    /// Collect the scheduled snapshots from the etcd hosts instead of taking one.
    pub fetch: bool,
}

#[derive(Debug, Clone)]
pub struct BackupReport {
    /// Files written (snapshots, not sidecars).
    pub written: Vec<PathBuf>,
    /// Files removed by retention.
    pub removed: Vec<PathBuf>,
    /// The member the snapshot came from and its revision (not for `--fetch`).
    pub source: Option<(String, u64)>,
    pub encrypted: bool,
}

/// `etcdctl/etcdutl snapshot status -w json`.
#[derive(Deserialize)]
struct SnapshotStatus {
    revision: u64,
    #[serde(rename = "totalKey")]
    total_key: Option<u64>,
}

/// Where snapshots land on an etcd host while they are taken.
const REMOTE_TMP: &str = "/var/tmp";

pub async fn backup(cx: &Ctx, opts: &BackupOptions) -> miette::Result<BackupReport> {
    let recipient = match opts.encrypt_to.as_deref().or(cx
        .plan
        .inventory
        .backup
        .as_ref()
        .and_then(|b| b.recipient.as_deref()))
    {
        Some(r) => Some(r.trim().parse::<age::x25519::Recipient>().map_err(|e| {
            miette!(
                help = "give an age X25519 recipient (age1..., from `age-keygen -y IDENTITY`)",
                "--encrypt-to: not an age recipient: {e}"
            )
        })?),
        None => None,
    };
    let keep = opts
        .keep
        .or(cx.plan.inventory.backup.as_ref().map(|b| b.keep))
        .unwrap_or(crate::inventory::BackupSettings::DEFAULT_KEEP);
    if keep == 0 {
        return Err(miette!("--keep must be at least 1"));
    }
    let dir = super::backups_dir(&cx.state);
    if opts.fetch {
        return fetch(cx, &dir, keep).await;
    }

    let (host, member) = healthy_member(cx).await?;
    eprintln!("backup: snapshot of etcd member {member} on {host}");
    let url = cx
        .plan
        .etcd
        .iter()
        .find(|m| m.name == member)
        .map(|m| m.client_url())
        .unwrap_or_default();
    // The snapshot is written to a private temp dir, checked where it was taken, and the dir is
    // removed after the download (or at once when a step fails).
    let script = format!(
        "set -e\numask 077\nd=$(mktemp -d {REMOTE_TMP}/kbs-backup.XXXXXX)\n\
         trap '[ $? -eq 0 ] || rm -rf -- \"$d\"' EXIT\necho \"$d\"\n\
         {} >&2\n{SNAPSHOT_TOOL}\n$tool snapshot status \"$d/snapshot.db\" -w json\n\
         sha256sum < \"$d/snapshot.db\" | cut -c1-64\n",
        crate::context::etcd::etcdctl_at(
            &[url],
            "--command-timeout=600s snapshot save \"$d/snapshot.db\""
        ),
    );
    let out = cx
        .sh(&host, "backup", &script, Duration::from_secs(900))
        .await
        .map_err(|e| miette!("snapshot on {host} failed: {e}"))?;
    let mut lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
    let (Some(tmp), Some(status), Some(remote_sha)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(miette!("snapshot on {host}: unexpected output {out:?}"));
    };
    let tmp = tmp.to_string();
    let cleanup = format!("rm -rf -- {}", quote(&tmp));
    let result = async {
        let status: SnapshotStatus = serde_json::from_str(status)
            .map_err(|e| miette!("snapshot status on {host}: {e}: {status}"))?;
        let s = cx.session(&host).await.map_err(|e| miette!("{e}"))?;
        let bytes = s
            .download(&format!("{tmp}/snapshot.db"), true)
            .await
            .map_err(|e| miette!("download from {host}: {e}"))?;
        let sha = sha256_hex(&bytes);
        if sha != remote_sha {
            return Err(miette!(
                "the snapshot changed in transit from {host}: sha256 {sha} here, {remote_sha} there"
            ));
        }
        Ok((status, bytes))
    }
    .await;
    let _ = cx
        .sh(&host, "backup", &cleanup, Duration::from_secs(60))
        .await;
    let (status, bytes) = result?;
    eprintln!(
        "backup: revision {}, {} keys, {} bytes, sha256 {}",
        status.revision,
        status.total_key.unwrap_or(0),
        bytes.len(),
        &remote_sha[..16.min(remote_sha.len())]
    );

    let name = format!(
        "{}-{}-rev{}.db",
        cx.cluster(),
        utc_stamp(time::OffsetDateTime::now_utc()),
        status.revision
    );
    let (content, name) = match &recipient {
        Some(r) => (
            age::encrypt(r, &bytes).map_err(|e| miette!("age encryption failed: {e}"))?,
            format!("{name}.age"),
        ),
        None => (bytes, name),
    };
    let path = match &opts.out {
        Some(p) => p.clone(),
        None => dir.join(&name),
    };
    write_with_sidecar(&path, &content)?;
    let removed = if opts.out.is_none() {
        prune(&dir, cx.cluster(), keep)?
    } else {
        Vec::new()
    };
    cx.disconnect_all().await;
    Ok(BackupReport {
        written: vec![path],
        removed,
        source: Some((member, status.revision)),
        encrypted: recipient.is_some(),
    })
}

/// The first etcd member (in plan order) that answers `endpoint health` by itself.
async fn healthy_member(cx: &Ctx) -> miette::Result<(String, String)> {
    let mut problems = Vec::new();
    for host in cx.etcd_hosts() {
        for m in cx.members_on(&host) {
            let cmd = crate::context::etcd::etcdctl_at(&[m.client_url()], "endpoint health");
            match cx.sh(&host, "backup", &cmd, Duration::from_secs(30)).await {
                Ok(_) => return Ok((host.clone(), m.name.clone())),
                Err(e) => problems.push(format!("  {}: {e}", m.name)),
            }
        }
    }
    Err(miette!(
        help = "a snapshot needs one member that is up; `kbs status` shows what is wrong",
        "no healthy etcd member to take a snapshot from:\n{}",
        problems.join("\n")
    ))
}

/// Writes `path` and `path.sha256` (`<hex>  <file name>`) atomically, private to the owner.
pub fn write_with_sidecar(path: &Path, content: &[u8]) -> miette::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .into_diagnostic()
        .map_err(|e| e.context(format!("cannot create {}", dir.display())))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| miette!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let sidecar = sidecar_path(path);
    let write = |p: &Path, bytes: &[u8]| -> miette::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir).into_diagnostic()?;
        tmp.write_all(bytes).into_diagnostic()?;
        tmp.as_file().sync_all().into_diagnostic()?;
        tmp.persist(p)
            .map_err(|e| miette!("cannot write {}: {}", p.display(), e.error))?;
        Ok(())
    };
    write(path, content)?;
    write(
        &sidecar,
        format!("{}  {file_name}\n", sha256_hex(content)).as_bytes(),
    )?;
    Ok(())
}

pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// `<cluster>-YYYYMMDDTHHMMSSZ-rev<N>.db[.age]`: the files retention may remove.
fn is_backup_name(cluster: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(cluster).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let rest = rest
        .strip_suffix(".db.age")
        .or_else(|| rest.strip_suffix(".db"));
    let Some((stamp, rev)) = rest.and_then(|r| r.split_once("-rev")) else {
        return false;
    };
    stamp.len() == 16
        && stamp.as_bytes()[8] == b'T'
        && stamp.ends_with('Z')
        && stamp[..8].bytes().all(|b| b.is_ascii_digit())
        && stamp[9..15].bytes().all(|b| b.is_ascii_digit())
        && !rev.is_empty()
        && rev.bytes().all(|b| b.is_ascii_digit())
}

/// Removes all but the newest `keep` backups of `cluster` in `dir` (with their sidecars).
pub fn prune(dir: &Path, cluster: &str, keep: u32) -> miette::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_diagnostic()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_backup_name(cluster, n))
        .collect();
    // The stamp follows the common prefix, so names sort by time.
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for n in names.into_iter().skip(keep as usize) {
        let p = dir.join(&n);
        std::fs::remove_file(&p)
            .into_diagnostic()
            .map_err(|e| e.context(format!("cannot remove {}", p.display())))?;
        let _ = std::fs::remove_file(sidecar_path(&p));
        removed.push(p);
    }
    Ok(removed)
}

/// Copies the timer's snapshots from every reachable etcd host into `<dir>/<host>/`, checking
/// each against its sidecar; files already here are skipped.
async fn fetch(cx: &Ctx, dir: &Path, keep: u32) -> miette::Result<BackupReport> {
    let remote_dir = cx.plan.inventory.backup.as_ref().map_or(
        crate::inventory::BackupSettings::DEFAULT_DIR.to_string(),
        |b| b.dir.clone(),
    );
    let mut report = BackupReport {
        written: Vec::new(),
        removed: Vec::new(),
        source: None,
        encrypted: false,
    };
    let mut problems = Vec::new();
    for host in cx.etcd_hosts() {
        let list = format!("[ -d {d} ] && ls -1 {d} || true", d = quote(&remote_dir));
        let names = match cx.sh(&host, "backup", &list, Duration::from_secs(30)).await {
            Ok(out) => out,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let local = dir.join(&host);
        let mut newest: Vec<&str> = names
            .lines()
            .filter(|n| is_backup_name(cx.cluster(), n) && n.ends_with(".db"))
            .collect();
        newest.sort_unstable_by(|a, b| b.cmp(a));
        newest.truncate(keep as usize);
        for name in newest {
            let path = local.join(name);
            if path.exists() {
                continue;
            }
            let remote = format!("{remote_dir}/{name}");
            let s = cx.session(&host).await.map_err(|e| miette!("{e}"))?;
            let got = async {
                let sum = s.download(&format!("{remote}.sha256"), true).await?;
                let bytes = s.download(&remote, true).await?;
                Ok::<_, crate::ssh::SshError>((sum, bytes))
            }
            .await;
            let (sum, bytes) = match got {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{host}: {name}: {e}"));
                    continue;
                }
            };
            let want = String::from_utf8_lossy(&sum)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if sha256_hex(&bytes) != want {
                problems.push(format!(
                    "{host}: {name}: does not match its .sha256; not copied"
                ));
                continue;
            }
            write_with_sidecar(&path, &bytes)?;
            eprintln!("backup: fetched {host}:{remote}");
            report.written.push(path);
        }
        if local.is_dir() {
            report.removed.extend(prune(&local, cx.cluster(), keep)?);
        }
    }
    cx.disconnect_all().await;
    if !problems.is_empty() {
        return Err(miette!(
            "fetched {}, but:\n  {}",
            crate::words::count(report.written.len(), "snapshot"),
            problems.join("\n  ")
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names() {
        assert!(is_backup_name("lab", "lab-20261122T031500Z-rev42.db"));
        assert!(is_backup_name("lab", "lab-20261122T031500Z-rev42.db.age"));
        assert!(!is_backup_name(
            "lab",
            "lab-20261122T031500Z-rev42.db.sha256"
        ));
        assert!(!is_backup_name("lab", "other-20261122T031500Z-rev42.db"));
        assert!(!is_backup_name("lab", "lab-2026112T031500Z-rev42.db"));
        assert!(!is_backup_name("lab", "lab-20261122T031500Z-rev.db"));
        assert!(!is_backup_name("lab", "lab-x.db"));
    }

    #[test]
    fn retention_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        for i in 1..=5 {
            let p = d.path().join(format!("c-2026010{i}T000000Z-rev{i}.db"));
            write_with_sidecar(&p, b"x").unwrap();
        }
        std::fs::write(d.path().join("notes.txt"), "keep me").unwrap();
        let removed = prune(d.path(), "c", 2).unwrap();
        assert_eq!(removed.len(), 3);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "c-20260104T000000Z-rev4.db",
                "c-20260104T000000Z-rev4.db.sha256",
                "c-20260105T000000Z-rev5.db",
                "c-20260105T000000Z-rev5.db.sha256",
                "notes.txt"
            ]
        );
    }
}
