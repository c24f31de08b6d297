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

use sha2::Digest;

use super::SNAPSHOT_TOOL;
use crate::artifacts::HashingWriter;
use crate::context::Ctx;
use crate::ssh::{Session, quote};
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
pub(super) struct SnapshotStatus {
    pub revision: u64,
    #[serde(rename = "totalKey")]
    pub total_key: Option<u64>,
}

/// Where snapshots land on an etcd host while they are taken.
const REMOTE_TMP: &str = "/var/tmp";

pub async fn backup(cx: &Ctx, opts: &BackupOptions) -> miette::Result<BackupReport> {
    let settings = &cx.plan.inventory.backup;
    let recipient = match opts.encrypt_to.as_deref().or(settings.recipient.as_deref()) {
        Some(r) => Some(r.trim().parse::<age::x25519::Recipient>().map_err(|e| {
            miette!(
                help = "give an age X25519 recipient (age1..., from `age-keygen -y IDENTITY`)",
                "--encrypt-to: not an age recipient: {e}"
            )
        })?),
        None => None,
    };
    let keep = opts.keep.unwrap_or(settings.keep);
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
    let status: SnapshotStatus = serde_json::from_str(status)
        .map_err(|e| miette!("snapshot status on {host}: {e}: {status}"))?;
    let name = format!(
        "{}-{}-rev{}.db{}",
        cx.cluster(),
        utc_stamp(time::OffsetDateTime::now_utc()),
        status.revision,
        if recipient.is_some() { ".age" } else { "" }
    );
    let path = match &opts.out {
        Some(p) => p.clone(),
        None => dir.join(&name),
    };
    let result = async {
        let s = cx.session(&host).await.map_err(|e| miette!("{e}"))?;
        let got = download(&s, &format!("{tmp}/snapshot.db"), &path, recipient.as_ref())
            .await
            .map_err(|e| e.context(format!("download from {host}")))?;
        if got.plain_sha256 != remote_sha {
            return Err(miette!(
                "the snapshot changed in transit from {host}: sha256 {} here, {remote_sha} there",
                got.plain_sha256
            ));
        }
        let size = got.size;
        got.persist(&path)?;
        Ok(size)
    }
    .await;
    let _ = cx
        .sh(&host, "backup", &cleanup, Duration::from_secs(60))
        .await;
    let size = result?;
    eprintln!(
        "backup: revision {}, {} keys, {} bytes, sha256 {}",
        status.revision,
        status.total_key.unwrap_or(0),
        size,
        &remote_sha[..16.min(remote_sha.len())]
    );
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

/// How long one snapshot may take to arrive (the etcd quota is 8 GiB).
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(3600);

/// A snapshot that arrived whole in a temp file beside its destination: the plain bytes' sum (to
/// check against the source's), and the file's own sum for the sidecar.
struct Downloaded {
    file: tempfile::NamedTempFile,
    plain_sha256: String,
    file_sha256: String,
    size: u64,
}

type Hashed = HashingWriter<tempfile::NamedTempFile>;

/// Where the bytes go: straight into the file, or through age's stream encryption.
enum Sink {
    Plain(Hashed),
    Age(age::stream::StreamWriter<Hashed>),
}

/// Streams `remote` from `s` into a private temp file in `dest`'s directory, hashing and (with a
/// recipient) encrypting on the way, in constant memory whatever the snapshot's size.
async fn download(
    s: &Session,
    remote: &str,
    dest: &Path,
    recipient: Option<&age::x25519::Recipient>,
) -> miette::Result<Downloaded> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .into_diagnostic()
        .map_err(|e| e.context(format!("cannot create {}", dir.display())))?;
    // NamedTempFile is 0600: the snapshot holds every Secret of the cluster.
    let file = HashingWriter::new(tempfile::NamedTempFile::new_in(dir).into_diagnostic()?);
    let sink = match recipient {
        Some(r) => Sink::Age(
            age::Encryptor::with_recipients(std::iter::once(r as &dyn age::Recipient))
                .map_err(|e| miette!("age: {e}"))?
                .wrap_output(file)
                .into_diagnostic()?,
        ),
        None => Sink::Plain(file),
    };
    // The first write error is kept and ends the download's use of the bytes.
    let state = std::sync::Mutex::new((sink, sha2::Sha256::new(), 0u64, None::<std::io::Error>));
    let chunk = |data: &[u8]| {
        let mut st = state.lock().expect("download state");
        let (sink, plain, size, failed) = &mut *st;
        if failed.is_some() {
            return;
        }
        plain.update(data);
        *size += data.len() as u64;
        let written = match sink {
            Sink::Plain(w) => w.write_all(data),
            Sink::Age(w) => w.write_all(data),
        };
        if let Err(e) = written {
            *failed = Some(e);
        }
    };
    s.download_to(remote, true, DOWNLOAD_LIMIT, &chunk)
        .await
        .into_diagnostic()?;
    let (sink, plain, size, failed) = state.into_inner().expect("download state");
    if let Some(e) = failed {
        return Err(miette!("cannot write beside {}: {e}", dest.display()));
    }
    let hashed = match sink {
        Sink::Plain(w) => w,
        Sink::Age(w) => w.finish().into_diagnostic()?,
    };
    let (file, file_sha256) = hashed.finish();
    file.as_file().sync_all().into_diagnostic()?;
    Ok(Downloaded {
        file,
        plain_sha256: hex::encode(plain.finalize()),
        file_sha256,
        size,
    })
}

impl Downloaded {
    /// Puts the file at `path`, then its `.sha256` sidecar (`<hex>  <file name>`).
    fn persist(self, path: &Path) -> miette::Result<()> {
        self.file
            .persist(path)
            .map_err(|e| miette!("cannot write {}: {}", path.display(), e.error))?;
        let file_name = path
            .file_name()
            .ok_or_else(|| miette!("{} is not a file path", path.display()))?
            .to_string_lossy();
        let sidecar = sidecar_path(path);
        let mut tmp = tempfile::NamedTempFile::new_in(path.parent().unwrap_or(Path::new(".")))
            .into_diagnostic()?;
        writeln!(tmp, "{}  {file_name}", self.file_sha256).into_diagnostic()?;
        tmp.as_file().sync_all().into_diagnostic()?;
        tmp.persist(&sidecar)
            .map_err(|e| miette!("cannot write {}: {}", sidecar.display(), e.error))?;
        Ok(())
    }
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
    let remote_dir = &cx.plan.inventory.backup.dir;
    let mut report = BackupReport {
        written: Vec::new(),
        removed: Vec::new(),
        source: None,
        encrypted: false,
    };
    let mut problems = Vec::new();
    for host in cx.etcd_hosts() {
        let list = format!("[ -d {d} ] && ls -1 {d} || true", d = quote(remote_dir));
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
                let sum = s
                    .download(&format!("{remote}.sha256"), true)
                    .await
                    .into_diagnostic()?;
                Ok::<_, miette::Report>((sum, download(&s, &remote, &path, None).await?))
            }
            .await;
            let (sum, got) = match got {
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
            if got.plain_sha256 != want {
                problems.push(format!(
                    "{host}: {name}: does not match its .sha256; not copied"
                ));
                continue;
            }
            got.persist(&path)?;
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
            std::fs::write(&p, b"x").unwrap();
            std::fs::write(
                sidecar_path(&p),
                b"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  x\n",
            )
            .unwrap();
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
