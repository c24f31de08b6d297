//! `kbs restore`: disaster recovery from a snapshot. Everything that can be checked is checked
//! before anything is stopped (the checksum here, the snapshot itself on every etcd host, every
//! host reachable); then: API servers stopped, etcd members stopped, data dirs moved aside
//! (kept), every member restored from the same snapshot with its own name and peer URL and a new
//! cluster token, all members started together, health awaited, API servers started, the API
//! checked through the endpoint. docs/operations.md is the runbook.

use std::path::{Path, PathBuf};
use std::time::Duration;

use miette::{IntoDiagnostic, miette};

use super::SNAPSHOT_TOOL;
use crate::artifacts::sha256_hex;
use crate::context::api::{admin_client, ready};
use crate::context::etcd::{client_urls, etcdctl_at, wait_healthy_with};
use crate::context::{Ctx, retry};
use crate::ssh::FileAttrs;
use crate::ssh::quote;
use crate::state::utc_stamp;

/// Where the snapshot is put on each etcd host for the restore.
const REMOTE_SNAPSHOT: &str = "/var/tmp/kbs-restore.db";
/// A static-pod manifest is moved here (out of the kubelet's sight) while etcd is restored.
const MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
const MANIFEST_ASIDE: &str = "/etc/kubernetes/kbs-restore/kube-apiserver.yaml";
/// The lab's API server stand-in runs as this unit (tests/lab/standins/README.md).
const STANDIN_UNIT: &str = "kube-apiserver-standin.service";

const WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub snapshot: PathBuf,
    /// An age identity file, for `.age` snapshots.
    pub identity: Option<PathBuf>,
    /// Go ahead: without it, only the checks run and nothing is stopped.
    pub yes: bool,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub revision: u64,
    pub token: String,
    /// `host:path` of every old data dir kept.
    pub kept: Vec<String>,
}

/// Reads the snapshot, checks it against its `.sha256` sidecar and decrypts it when it is `.age`.
/// Touches nothing but local files.
pub fn load_snapshot(path: &Path, identity: Option<&Path>) -> miette::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .into_diagnostic()
        .map_err(|e| e.context(format!("cannot read {}", path.display())))?;
    let sidecar = super::backup::sidecar_path(path);
    let text = std::fs::read_to_string(&sidecar).map_err(|e| {
        miette!(
            help = "kbs backup writes FILE.sha256 next to every snapshot; put it back, or write one with `sha256sum FILE > FILE.sha256` only if you trust the file",
            "cannot read the checksum {}: {e}",
            sidecar.display()
        )
    })?;
    let want = text.split_whitespace().next().unwrap_or_default();
    let have = sha256_hex(&bytes);
    if !want.eq_ignore_ascii_case(&have) {
        return Err(miette!(
            help = "the file is damaged or not the one the checksum was written for; use another backup. Nothing was changed.",
            "{} does not match its checksum: sha256 {have}, {} says {want}",
            path.display(),
            sidecar.display()
        ));
    }
    if !path.to_string_lossy().ends_with(".age") {
        return Ok(bytes);
    }
    let id_path = identity.ok_or_else(|| {
        miette!(
            help = "pass --identity FILE with the age identity (AGE-SECRET-KEY-1...) the backup was encrypted for",
            "{} is encrypted",
            path.display()
        )
    })?;
    let id_text = std::fs::read(id_path)
        .into_diagnostic()
        .map_err(|e| e.context(format!("cannot read {}", id_path.display())))?;
    let identities = age::IdentityFile::from_buffer(&id_text[..])
        .and_then(|f| {
            f.into_identities()
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .map_err(|e| miette!("{} is not an age identity file: {e}", id_path.display()))?;
    let decryptor =
        age::Decryptor::new(&bytes[..]).map_err(|e| miette!("{}: {e}", path.display()))?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| {
            miette!(
                "cannot decrypt {} with {}: {e}",
                path.display(),
                id_path.display()
            )
        })?;
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut plain)
        .map_err(|e| miette!("decrypting {}: {e}", path.display()))?;
    Ok(plain)
}

pub async fn restore(cx: &Ctx, opts: &RestoreOptions) -> miette::Result<RestoreReport> {
    // 1. Local checks: checksum, decryption.
    let snapshot = load_snapshot(&opts.snapshot, opts.identity.as_deref())?;
    let etcd_hosts = cx.etcd_hosts();
    let control_planes: Vec<String> = cx.plan.control_planes().map(|h| h.name.clone()).collect();
    let mut all: Vec<String> = etcd_hosts.clone();
    for h in &control_planes {
        if !all.contains(h) {
            all.push(h.clone());
        }
    }

    // 2. Every host answers.
    let reach = futures::future::join_all(all.iter().map(|h| async move {
        cx.sh(h, "restore", "true", Duration::from_secs(30))
            .await
            .err()
            .map(|e| format!("  {h}: {e}"))
    }))
    .await;
    let unreachable: Vec<String> = reach.into_iter().flatten().collect();
    if !unreachable.is_empty() {
        return Err(miette!(
            help = "a restore rebuilds every member at once; bring the hosts back, or replace them (same names in the inventory) and run kbs apply first. Nothing was changed.",
            "hosts cannot be reached:\n{}",
            unreachable.join("\n")
        ));
    }

    // 3. The snapshot on every etcd host, read back by etcd's own tool there.
    let mut revision = 0;
    for host in &etcd_hosts {
        let s = cx.session(host).await.map_err(|e| miette!("{e}"))?;
        let mut attrs = FileAttrs::new(0o600);
        attrs.sudo = true;
        s.upload(REMOTE_SNAPSHOT, &snapshot, &attrs)
            .await
            .map_err(|e| miette!("{e}"))?;
        let mut check = String::from("set -e\n");
        for m in cx.members_on(host) {
            let dd = quote(&m.data_dir);
            check.push_str(&format!(
                "if mountpoint -q {dd}; then echo {dd}' is a mount point: kbs restore moves data dirs aside and cannot move a mount point; see docs/operations.md' >&2; exit 3; fi\n"
            ));
        }
        check.push_str(&format!(
            "{SNAPSHOT_TOOL}\n$tool snapshot status {REMOTE_SNAPSHOT} -w json"
        ));
        let status = cx
            .sh(host, "restore", &check, Duration::from_secs(300))
            .await
            .map_err(|e| e.to_string())
            .and_then(|out| {
                serde_json::from_str::<super::backup::SnapshotStatus>(out.trim())
                    .map_err(|e| format!("snapshot status: {e}: {out}"))
            });
        match status {
            Ok(status) => revision = status.revision,
            Err(e) => {
                cleanup(cx, &etcd_hosts).await;
                return Err(miette!(
                    help = "nothing was changed",
                    "{}: the check on {host} failed: {e}",
                    opts.snapshot.display()
                ));
            }
        }
    }
    eprintln!(
        "restore: {} checked (revision {revision}) on {}",
        opts.snapshot.display(),
        etcd_hosts.join(", ")
    );
    if !opts.yes {
        cleanup(cx, &etcd_hosts).await;
        return Err(miette!(
            help = "run again with --yes to stop the API servers and etcd on every host and replace etcd's data with this snapshot (old data dirs are kept)",
            "the checks passed; nothing was changed"
        ));
    }

    let stamp = utc_stamp(time::OffsetDateTime::now_utc());
    let token = format!("kbs-{}-restore-{}", cx.cluster(), stamp.to_lowercase());
    let initial_cluster = cx
        .plan
        .etcd
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",");

    // 4. API servers down, so nothing writes or watches while etcd is replaced.
    let apiserver_port = cx.plan.front.apiserver_port;
    let stop_api = format!(
        "set -e\nif [ -f {MANIFEST} ]; then install -d -m 0700 \"$(dirname {MANIFEST_ASIDE})\"; mv -f {MANIFEST} {MANIFEST_ASIDE}; fi\n\
         if systemctl cat {STANDIN_UNIT} >/dev/null 2>&1; then systemctl stop {STANDIN_UNIT}; fi\n\
         # the kubelet stops a static pod whose manifest is gone within about 20 s\n\
         for i in $(seq 90); do ss -Hltn 'sport = :{apiserver_port}' | grep -q . || exit 0; sleep 1; done\n\
         echo 'the API server still listens on port {apiserver_port}' >&2; exit 1\n"
    );
    each(cx, &control_planes, "stop the API server", |_| {
        stop_api.clone()
    })
    .await?;

    // 5. Every etcd member down.
    each(cx, &etcd_hosts, "stop etcd", |h| {
        let units: Vec<String> = cx
            .members_on(h)
            .map(|m| format!("kbs-etcd@{}.service", m.name))
            .collect();
        format!("systemctl stop {}", units.join(" "))
    })
    .await?;

    // 6. Each member restored from the snapshot, old data dir kept beside it.
    let mut kept = Vec::new();
    for host in &etcd_hosts {
        for m in cx.members_on(host) {
            let dd = m.data_dir.to_string_lossy().into_owned();
            let aside = format!("{dd}.before-restore-{stamp}");
            kept.push(format!("{host}:{aside}"));
        }
    }
    each(cx, &etcd_hosts, "restore the snapshot", |h| {
        let mut script = format!("set -e\n{SNAPSHOT_TOOL}\n");
        for m in cx.members_on(h) {
            let dd = quote(&m.data_dir);
            let aside = quote(format!("{}.before-restore-{stamp}", m.data_dir.display()));
            script.push_str(&format!(
                "if [ -e {dd} ]; then mv -T -- {dd} {aside}; fi\n\
                 $tool snapshot restore {REMOTE_SNAPSHOT} --name {name} --data-dir {dd} \
                 --initial-cluster {ic} --initial-cluster-token {token} \
                 --initial-advertise-peer-urls {peer} >&2\n\
                 chown -R etcd:etcd {dd}\nchmod 0700 {dd}\n",
                name = quote(&m.name),
                ic = quote(&initial_cluster),
                token = quote(&token),
                peer = quote(m.peer_url()),
            ));
        }
        script
    })
    .await?;

    // 7. All members at once (each reports ready only at quorum), then health.
    each(cx, &etcd_hosts, "start etcd", |h| {
        let units: Vec<String> = cx
            .members_on(h)
            .map(|m| format!("kbs-etcd@{}.service", m.name))
            .collect();
        format!("systemctl start --no-block {}", units.join(" "))
    })
    .await?;
    let health = etcdctl_at(&client_urls(cx), "endpoint health");
    wait_healthy_with(cx, &etcd_hosts[0], &health, WAIT)
        .await
        .map_err(|e| miette!("after the restore: {e}"))?;
    eprintln!("restore: etcd is healthy (new cluster token {token})");
    let check = etcdctl_at(&client_urls(cx), "endpoint status -w json");
    let _ = cx
        .sh(&etcd_hosts[0], "restore", &check, Duration::from_secs(30))
        .await;

    // 8. API servers back.
    let start_api = format!(
        "set -e\nif [ -f {MANIFEST_ASIDE} ] && [ ! -e {MANIFEST} ]; then mv -f {MANIFEST_ASIDE} {MANIFEST}; fi\n\
         if systemctl cat {STANDIN_UNIT} >/dev/null 2>&1; then systemctl start {STANDIN_UNIT}; fi\n"
    );
    each(cx, &control_planes, "start the API server", |_| {
        start_api.clone()
    })
    .await?;
    cleanup(cx, &etcd_hosts).await;

    // 9. The API through the endpoint, as clients see it.
    if !control_planes.is_empty() {
        wait_api(cx).await?;
        eprintln!("restore: the API answers /readyz through the endpoint");
    }
    cx.disconnect_all().await;
    Ok(RestoreReport {
        revision,
        token,
        kept,
    })
}

/// Runs one step's script on every host in parallel; all finish, then any failure is reported.
async fn each(
    cx: &Ctx,
    hosts: &[String],
    step: &str,
    script: impl Fn(&str) -> String,
) -> miette::Result<()> {
    eprintln!("restore: {step} on {}", hosts.join(", "));
    let runs = hosts.iter().map(|h| {
        let s = script(h);
        async move {
            cx.sh(h, "restore", &s, Duration::from_secs(300))
                .await
                .err()
                .map(|e| format!("  {e}"))
        }
    });
    let failed: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(miette!(
            help = "fix the cause and run the same kbs restore again: every step can be repeated (docs/operations.md)",
            "restore: {step} failed:\n{}",
            failed.join("\n")
        ))
    }
}

async fn cleanup(cx: &Ctx, hosts: &[String]) {
    for h in hosts {
        let _ = cx
            .sh(
                h,
                "restore",
                &format!("rm -f {REMOTE_SNAPSHOT}"),
                Duration::from_secs(30),
            )
            .await;
    }
}

async fn wait_api(cx: &Ctx) -> miette::Result<()> {
    let api = admin_client(&cx.state).map_err(|e| miette!("{e}"))?;
    retry::until(WAIT, Duration::from_secs(2), || {
        ready(&api.client, &api.server)
    })
    .await
    .map_err(|problem| {
        miette!(
            "etcd is restored, but the API does not answer through {}: {problem}",
            api.server
        )
    })
}
