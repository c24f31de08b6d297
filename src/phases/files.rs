//! Putting files on hosts: one read-only probe per host finds which files differ (content, mode
//! or owner), and only those are written. A converged host is probed and left untouched, so
//! file mtimes survive a second run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::probe::{Probe, Question};
use crate::artifacts::sha256_hex;
use crate::context::{Ctx, RunError};
use crate::render::{HostResources, RenderInputs, RenderedFile, TEXTFILE_DIR, render_some_hosts};
use crate::ssh::{Exec, FileAttrs, Session, quote};

/// Which part of the workflow a rendered file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Kernel modules, sysctls, containerd, the kubelet drop-in.
    Host,
    Etcd,
    Front,
    /// kubeadm's init/join/upgrade configs: uploaded only for the run that uses them, then
    /// removed (init and join carry the bootstrap token).
    Kubeadm,
}

pub(crate) fn part_of(path: &Path) -> Part {
    let p = path.to_string_lossy();
    if p.starts_with("/etc/kubernetes/kubeadm/")
        && !p.starts_with("/etc/kubernetes/kubeadm/patches/")
    {
        Part::Kubeadm
    } else if p.starts_with("/etc/kbs/etcd/")
        || p.contains("kbs-etcd@")
        || p.contains("kbs-etcd-backup.")
    {
        Part::Etcd
    } else if p.starts_with("/etc/keepalived/")
        || p.starts_with("/etc/haproxy/")
        || p.contains("kube-vip")
    {
        Part::Front
    } else {
        Part::Host
    }
}

/// The renderer's tree for every host, with the secrets and facts only a run knows.
pub(crate) fn render(
    cx: &Ctx,
    join: &crate::render::JoinSecrets,
) -> Result<BTreeMap<String, Vec<RenderedFile>>, RunError> {
    let vip_interfaces = cx
        .plan
        .hosts
        .iter()
        .filter_map(|h| {
            cx.facts(&h.name)
                .and_then(|f| f.interface_for(h.address))
                .map(|(i, _)| (h.name.clone(), i.clone()))
        })
        .collect();
    let host_resources = cx
        .facts
        .iter()
        .map(|(h, f)| {
            (
                h.clone(),
                HostResources {
                    mem_mb: f.mem_mb,
                    cpus: f.cpus,
                },
            )
        })
        .collect();
    // The key is made once and kept; in a dry run before the first real run it does not exist yet.
    let encryption_key =
        if cx.opts.dry_run && !crate::secrets::encryption_key_path(&cx.state).exists() {
            crate::secrets::EncryptionKey::placeholder()
        } else {
            crate::secrets::ensure_encryption_key(&cx.state)?
        };
    let inputs = RenderInputs {
        join: join.clone(),
        vip_interfaces,
        encryption_key,
        host_resources,
    };
    let mut rendered = render_some_hosts(&cx.plan, &cx.templates, &inputs, |h| cx.in_scope(h))?;
    for host in crate::pki::host_files(&cx.plan, &cx.state) {
        if let Some(files) = rendered.get_mut(&host.host) {
            files.push(certificate_expiry(&host)?);
        }
    }
    Ok(rendered)
}

/// The expiry of every certificate kbs puts on the host, as node-exporter's textfile collector
/// reads it: `kbs_certificate_expiry_timestamp_seconds{path="..."}`. Written from the state dir
/// with the certificates themselves, so it changes exactly when kbs renews one; the monitoring
/// addon alerts on it. A certificate not made yet (a dry run before the first run) is left out.
fn certificate_expiry(host: &crate::pki::HostFiles) -> Result<RenderedFile, RunError> {
    let mut text = String::from(
        "# HELP kbs_certificate_expiry_timestamp_seconds When a certificate kbs installed expires (kbs apply renews it).\n\
         # TYPE kbs_certificate_expiry_timestamp_seconds gauge\n",
    );
    for f in host
        .files
        .iter()
        .filter(|f| f.remote.extension().is_some_and(|e| e == "crt"))
    {
        let Some(pem) = crate::state::read_optional(&f.local)? else {
            continue;
        };
        let cert = crate::pki::CertInfo::from_pem(&pem).map_err(|e| RunError::Step {
            host: host.host.clone(),
            step: "pki".into(),
            message: format!("{}: {e}", f.local.display()),
        })?;
        text.push_str(&format!(
            "kbs_certificate_expiry_timestamp_seconds{{path=\"{}\"}} {}\n",
            f.remote.display(),
            cert.not_after.unix_timestamp()
        ));
    }
    Ok(RenderedFile {
        path: PathBuf::from(format!("{TEXTFILE_DIR}/kbs-certificates.prom")),
        mode: 0o644,
        content: text.into_bytes(),
    })
}

/// A file as it should be on a host. The content is shared, not copied, between hosts (bundle
/// binaries are large) and its SHA-256 is computed once.
#[derive(Debug, Clone)]
pub(crate) struct Desired {
    pub path: PathBuf,
    pub mode: u32,
    pub owner: Option<String>,
    pub content: Body,
    pub sha256: String,
}

/// What a file holds: bytes made by this run (rendered files, PKI), or a bundle file, read from
/// disk only if some host needs it written.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Bytes(Arc<[u8]>),
    Bundle(Arc<crate::artifacts::Content>),
}

impl Body {
    pub fn bytes(&self) -> Result<Arc<[u8]>, crate::artifacts::ArtifactError> {
        match self {
            Self::Bytes(b) => Ok(b.clone()),
            Self::Bundle(c) => c.bytes(),
        }
    }
}

impl Desired {
    pub fn new(path: PathBuf, mode: u32, owner: Option<String>, content: Arc<[u8]>) -> Self {
        let sha256 = sha256_hex(&content);
        Self {
            path,
            mode,
            owner,
            content: Body::Bytes(content),
            sha256,
        }
    }
}

impl From<&crate::artifacts::Artifact> for Desired {
    fn from(a: &crate::artifacts::Artifact) -> Self {
        // The bundle's sum was checked when it was loaded: no need to hash again.
        Self {
            path: a.install.clone(),
            mode: a.mode,
            owner: None,
            content: Body::Bundle(a.content.clone()),
            sha256: a.sha256.clone(),
        }
    }
}

impl From<&RenderedFile> for Desired {
    fn from(f: &RenderedFile) -> Self {
        Self::new(
            f.path.clone(),
            f.mode,
            None,
            Arc::from(f.content.as_slice()),
        )
    }
}

/// The state dir's PKI files that `host` needs.
pub(crate) fn pki_files(
    cx: &Ctx,
    host: &str,
    filter: impl Fn(&Path) -> bool,
) -> Result<Vec<Desired>, RunError> {
    let all = crate::pki::host_files(&cx.plan, &cx.state);
    let Some(mine) = all.into_iter().find(|h| h.host == host) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for f in mine.files.into_iter().filter(|f| filter(&f.remote)) {
        // In a dry run before the first real one, the PKI does not exist yet: it would be new.
        let content = match crate::state::read_optional(&f.local)? {
            Some(c) => c,
            None if cx.opts.dry_run => Vec::new(),
            None => {
                return Err(RunError::Step {
                    host: host.into(),
                    step: "pki".into(),
                    message: format!("{} is missing from the state dir", f.local.display()),
                });
            }
        };
        out.push(Desired::new(
            f.remote,
            f.mode,
            f.owner.map(str::to_string),
            Arc::from(content),
        ));
    }
    Ok(out)
}

/// Where each host keeps the SHA-256 of the files kbs checks, keyed by size, mtime, inode and
/// ctime (`KEY SHA256 PATH` per line): a file whose key is unchanged is not read again. Hashing
/// every bundle binary on every run cost each etcd host ~0.3 CPU-s for etcd alone. Any write
/// changes ctime, which no tool can set back, so a stale entry cannot hide an edit.
pub(super) const SUMS: &str = "/var/lib/kbs/file-sums";

/// Asks for the content hash, mode and owner of each of `files` that exists (`file_states`
/// reads the answer). Hashes only the files whose key differs from the host's record of sums,
/// and, unless `dry_run`, records the new sums.
pub(crate) fn ask_states(probe: &mut Probe, files: &[Desired], dry_run: bool) -> Question {
    let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    probe.ask(&states_script(&paths, SUMS, !dry_run))
}

/// Merges `$stale` ("KEY PATH" lines, from `stat`) and `$sums` ("SUM  PATH" lines) into the
/// record at `sums`, replaced whole, so no reader sees half of it.
fn merge_sums(sums: &str) -> String {
    let m = quote(sums);
    let dir = quote(Path::new(sums).parent().unwrap_or(Path::new("/")));
    format!(
        "mkdir -p {dir}; umask 077; printf '%s%s\\n' \"$stale\" \"$sums\" | awk -v m={m} '\n\
         length($1) == 64 && substr($0, 65, 2) == \"  \" {{ sum[substr($0, 67)] = $1; next }}\n\
         {{ i = index($0, \" \"); key[substr($0, i + 1)] = substr($0, 1, i - 1) }}\n\
         END {{ while ((getline l < m) > 0) {{ p = l; sub(/^[^ ]* [^ ]* /, \"\", p); if (!(p in sum)) print l }}\n\
         for (p in sum) if (p in key) print key[p] \" \" sum[p] \" \" p }}' > {m}.$$ && mv {m}.$$ {m}",
    )
}

/// Records the sums of files kbs just wrote (it knows them: the upload checked them), so the
/// next run finds them unchanged without reading them: right after an install, the first run
/// that changes nothing would otherwise hash every binary again (~0.3 CPU-s on a worker).
fn record_script(written: &[(&Path, &str)], sums: &str) -> String {
    let paths: Vec<String> = written.iter().map(|(p, _)| quote(p)).collect();
    let pairs: Vec<String> = written
        .iter()
        .map(|(p, sum)| format!("{} {}", quote(sum), quote(p)))
        .collect();
    format!(
        "stale=\"$(stat -c '%s:%.9Y:%i:%.9Z %n' -- {})\n\"\nsums=$(printf '%s  %s\\n' {})\n{}\n",
        paths.join(" "),
        pairs.join(" "),
        merge_sums(sums)
    )
}

fn states_script(paths: &[&Path], sums: &str, record: bool) -> String {
    let paths: Vec<String> = paths.iter().map(quote).collect();
    let m = quote(sums);
    // A fixed number of processes whatever the number of files. awk marks each file "=" with its
    // recorded sum when its key is unchanged, else "?" with its key; the "?" ones are hashed
    // together and merged into the record.
    let record = if record {
        merge_sums(sums)
    } else {
        String::new()
    };
    format!(
        "set --; for p in {paths}; do [ -f \"$p\" ] && set -- \"$@\" \"$p\"; done\n\
         [ $# -eq 0 ] || {{\n\
         stat -c '%a %U %n' -- \"$@\"\n\
         known=$(stat -c '%s:%.9Y:%i:%.9Z %n' -- \"$@\" | awk -v m={m} '\n\
           BEGIN {{ while ((getline l < m) > 0) {{ i = index(l, \" \"); r = substr(l, i + 1); j = index(r, \" \");\n\
             key[substr(r, j + 1)] = substr(l, 1, i - 1); sum[substr(r, j + 1)] = substr(r, 1, j - 1) }} }}\n\
           {{ i = index($0, \" \"); p = substr($0, i + 1)\n\
             if (p in key && key[p] == substr($0, 1, i - 1)) print \"= \" sum[p] \"  \" p; else print \"? \" $0 }}')\n\
         set --; stale=\n\
         while IFS= read -r l; do case $l in\n\
           \"= \"*) printf '%s\\n' \"${{l#= }}\" ;;\n\
           \"? \"*) l=${{l#\"? \"}}; stale=\"$stale$l\n\"; set -- \"$@\" \"${{l#* }}\" ;;\n\
         esac; done <<KBS_KNOWN\n$known\nKBS_KNOWN\n\
         [ $# -eq 0 ] || {{ sums=$(sha256sum -- \"$@\"); printf '%s\\n' \"$sums\"\n{record}\n}}\n\
         }}",
        paths = paths.join(" "),
    )
}

/// What `ask_states` found: "SHA256 MODE OWNER" per existing file.
pub(crate) fn file_states(answer: &str) -> BTreeMap<PathBuf, String> {
    let (mut sums, mut attrs) = (BTreeMap::new(), BTreeMap::new());
    for line in answer.lines() {
        match line.split_once("  ") {
            Some((sum, path)) if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) => {
                sums.insert(PathBuf::from(path), sum.to_string());
            }
            _ => {
                let mut it = line.splitn(3, ' ');
                if let (Some(mode), Some(owner), Some(path)) = (it.next(), it.next(), it.next()) {
                    attrs.insert(PathBuf::from(path), format!("{mode} {owner}"));
                }
            }
        }
    }
    sums.into_iter()
        .filter_map(|(p, sum)| {
            let a = attrs.remove(&p)?;
            Some((p, format!("{sum} {a}")))
        })
        .collect()
}

/// Writes every file that differs; returns the paths written (or that would be, in a dry run).
pub(crate) async fn sync(
    cx: &Ctx,
    host: &str,
    step: &str,
    files: &[Desired],
) -> Result<Vec<PathBuf>, RunError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let s = cx.session(host).await?;
    let mut probe = Probe::default();
    let q = ask_states(&mut probe, files, cx.opts.dry_run);
    let answers = probe.run(&s).await?;
    write_differing(cx, &s, host, step, files, answers.get(q)).await
}

/// Writes the files that differ from what `Probe::files` found (its `answer`).
pub(crate) async fn write_differing(
    cx: &Ctx,
    s: &Session,
    host: &str,
    step: &str,
    files: &[Desired],
    answer: &str,
) -> Result<Vec<PathBuf>, RunError> {
    let current = file_states(answer);
    let mut changed = Vec::new();
    for f in files {
        let want = format!(
            "{} {:o} {}",
            f.sha256,
            f.mode,
            f.owner.as_deref().unwrap_or("root")
        );
        let have = current.get(&f.path);
        if have == Some(&want) {
            continue;
        }
        let why = match have {
            None => "create",
            Some(h) if h.split(' ').next() == want.split(' ').next() => "fix mode/owner of",
            Some(_) => "update",
        };
        let attrs = FileAttrs {
            mode: f.mode,
            owner: f.owner.clone(),
            sudo: true,
        };
        let path = f.path.to_string_lossy().into_owned();
        cx.change(host, step, format!("{why} {path}"), async {
            s.upload(&path, &f.content.bytes()?, &attrs).await?;
            Ok(())
        })
        .await?;
        changed.push(f.path.clone());
    }
    if !changed.is_empty() && !cx.opts.dry_run {
        let written: Vec<(&Path, &str)> = files
            .iter()
            .filter(|f| changed.contains(&f.path))
            .map(|f| (f.path.as_path(), f.sha256.as_str()))
            .collect();
        let script = record_script(&written, SUMS);
        let cmd = Exec::new("sh -s").stdin(script.as_bytes());
        Ctx::root(s, host, "files/sums", cmd).await?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn file_states_pair_sums_with_modes() {
        let sum = "a".repeat(64);
        let answer = format!(
            "{sum}  /etc/a b.conf\n{sum}  /etc/c\n644 root /etc/a b.conf\n600 etcd /etc/c\n"
        );
        let states = file_states(&answer);
        assert_eq!(
            states[Path::new("/etc/a b.conf")],
            format!("{sum} 644 root")
        );
        assert_eq!(states[Path::new("/etc/c")], format!("{sum} 600 etcd"));
        assert!(file_states("").is_empty());
    }

    /// The states script under a real `sh`, coreutils and awk, against files in a temp dir.
    #[test]
    fn sums_kbs_wrote_are_recorded_so_the_next_run_reads_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a b"), dir.path().join("c"));
        std::fs::write(&a, "one").expect("write");
        std::fs::write(&b, "two").expect("write");
        let sums = dir.path().join("state/file-sums");
        let sh = |script: &str| {
            let out = std::process::Command::new("sh")
                .args(["-c", script])
                .output()
                .expect("sh");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        // What the upload wrote, by the sums kbs sent: a forged one for `a` shows that the next
        // states probe trusts the record rather than reading the file.
        let forged = "f".repeat(64);
        let two = sha256_hex(b"two");
        sh(&record_script(
            &[(a.as_path(), forged.as_str()), (b.as_path(), two.as_str())],
            &sums.to_string_lossy(),
        ));
        let states = file_states(&sh(&states_script(
            &[&a, &b],
            &sums.to_string_lossy(),
            true,
        )));
        assert!(states[&a].starts_with(&forged), "{states:?}");
        assert!(states[&b].starts_with(&two), "{states:?}");
        // Recording again replaces a path's line, never adds a second.
        sh(&record_script(
            &[(b.as_path(), two.as_str())],
            &sums.to_string_lossy(),
        ));
        let record = std::fs::read_to_string(&sums).expect("record");
        assert_eq!(record.lines().count(), 2, "{record}");
    }

    #[test]
    fn states_hash_only_files_whose_key_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a b"), dir.path().join("c"));
        let missing = dir.path().join("gone");
        std::fs::write(&a, "one").expect("write");
        std::fs::write(&b, "two").expect("write");
        let sums = dir.path().join("state/file-sums");
        let run = |record: bool| {
            let script = states_script(&[&a, &b, &missing], &sums.to_string_lossy(), record);
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .expect("sh");
            assert!(out.status.success(), "{out:?}");
            file_states(&String::from_utf8_lossy(&out.stdout))
        };
        // A dry run hashes and records nothing.
        let first = run(false);
        assert!(first[&a].starts_with(&sha256_hex(b"one")), "{first:?}");
        assert_eq!(first.len(), 2);
        assert!(!sums.exists());
        run(true);
        let record = std::fs::read_to_string(&sums).expect("record");
        assert_eq!(record.lines().count(), 2, "{record}");
        // A recorded sum is trusted while the key holds: forge one to see that it is not re-read.
        let forged = "f".repeat(64);
        std::fs::write(&sums, record.replace(&sha256_hex(b"one"), &forged)).expect("forge");
        assert!(run(true)[&a].starts_with(&forged));
        // Any write changes the key (ctime at least): the file is hashed again and re-recorded.
        std::fs::write(&a, "one").expect("rewrite");
        let again = run(true);
        assert!(again[&a].starts_with(&sha256_hex(b"one")), "{again:?}");
        assert!(
            !std::fs::read_to_string(&sums)
                .expect("record")
                .contains(&forged)
        );
    }
}
