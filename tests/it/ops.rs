//! `kbs status`, `kbs backup` and `kbs restore` on lab hosts: real etcd 3.4, systemd and SSH;
//! data is written and read back through the (stand-in) API server on the VIP.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;

use crate::common::kbs;
use crate::lab::{Lab, up};

fn run(args: &[&str], inventory: &Path, state: &Path, extra: &[&str]) -> Output {
    kbs()
        .args(args)
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .output()
        .expect("run kbs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kbs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(inventory: &Path, state: &Path) {
    ok(&run(
        &["apply"],
        inventory,
        state,
        &["--log-format", "plain"],
    ));
}

fn status(inventory: &Path, state: &Path) -> (i32, serde_json::Value, Duration) {
    let started = Instant::now();
    let out = run(&["status"], inventory, state, &["--output", "json"]);
    let took = started.elapsed();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status JSON: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json, took)
}

/// A backup into the default directory; returns the file it wrote.
fn backup(inventory: &Path, state: &Path, extra: &[&str]) -> PathBuf {
    let out = ok(&run(&["backup"], inventory, state, extra));
    PathBuf::from(out.lines().last().expect("backup prints the file").trim())
}

/// The API through the VIP with the admin credentials of the state dir.
struct Api {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    server: String,
}

impl Api {
    fn new(state: &Path) -> Self {
        let kbs::context::api::Api { client, server } =
            kbs::context::api::admin_client(&kbs::state::StateDir::new(state))
                .expect("admin kubeconfig");
        Self {
            rt: tokio::runtime::Runtime::new().expect("runtime"),
            client,
            server,
        }
    }

    fn put_configmap(&self, name: &str, value: &str) {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
            "data": {"value": value},
        });
        let url = format!(
            "{}/api/v1/namespaces/default/configmaps/{name}",
            self.server
        );
        let status = self
            .rt
            .block_on(async { self.client.put(&url).json(&body).send().await })
            .expect("PUT configmap")
            .status();
        assert!(status.is_success(), "PUT {url}: {status}");
    }

    /// The configmap's `data.value`, or None when it does not exist.
    fn configmap(&self, name: &str) -> Option<String> {
        let url = format!(
            "{}/api/v1/namespaces/default/configmaps/{name}",
            self.server
        );
        self.rt.block_on(async {
            let r = self.client.get(&url).send().await.expect("GET configmap");
            if r.status() == reqwest::StatusCode::NOT_FOUND {
                return None;
            }
            assert!(r.status().is_success(), "GET {url}: {}", r.status());
            let v: serde_json::Value = r.json().await.expect("JSON");
            v["data"]["value"].as_str().map(str::to_string)
        })
    }
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

/// Debian's etcdctl on this machine reads the snapshot; returns its revision.
fn local_snapshot_revision(path: &Path) -> u64 {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .expect("etcdctl (apt-get install etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl snapshot status {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["revision"].as_u64().expect("revision")
}

fn data_dirs(lab: &Lab, node: &str) -> String {
    lab.exec(node, "ls -1d /var/lib/etcd*; ls -1A /var/lib/etcd")
}

/// Stops every member and deletes every data dir: all of etcd's data is gone.
fn destroy_etcd(lab: &Lab) {
    for n in ["node-1", "node-2", "node-3"] {
        lab.exec(
            n,
            "systemctl stop 'kbs-etcd@*' && rm -rf /var/lib/etcd/member && ! systemctl is-active -q 'kbs-etcd@*'",
        );
    }
}

/// The lab inventory plus a `[backup]` table, in a temp dir.
fn inventory_with_backup(lab: &Lab, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(lab.inventory()).expect("inventory");
    let path = dir.join("inventory.toml");
    std::fs::write(
        &path,
        format!(
            "{text}\n[backup]\nschedule = \"hourly\"\nkeep = 3\ndir = \"/var/backups/kbs-etcd\"\n"
        ),
    )
    .expect("write inventory");
    path
}

#[test]
fn lab_status_backup_restore_drill() {
    let Some(lab) = up(&["3"]) else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let inv = inventory_with_backup(&lab, tmp.path());
    apply(&inv, &state);

    // status on a healthy cluster: exit 0, 3 healthy members, one leader, endpoint ready.
    let (code, s, _) = status(&inv, &state);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["health"], "healthy");
    let members = s["etcd"].as_array().expect("etcd");
    assert_eq!(members.len(), 3, "{s:#}");
    assert!(members.iter().all(|m| m["healthy"] == true), "{s:#}");
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1);
    assert!(members.iter().all(|m| m["raft_index"].as_u64() > Some(0)));
    let api = s["api"].as_array().expect("api");
    assert_eq!(api[0]["name"], "endpoint");
    assert!(api.iter().all(|a| a["ready"] == true), "{s:#}");
    assert!(s["certificates"]["days_left"].as_i64() > Some(300));
    assert!(s["last_backup"].is_null());
    // The snapshot timer is on (hourly here): no snapshot yet, which is no problem.
    let snaps = s["scheduled_snapshots"]
        .as_array()
        .expect("scheduled_snapshots");
    assert_eq!(snaps.len(), 3, "{s:#}");
    assert!(snaps.iter().all(|h| h["timer_enabled"] == true), "{s:#}");
    assert!(snaps.iter().all(|h| h["interval_seconds"] == 3600), "{s:#}");

    // Data through the API path.
    let api = Api::new(&state);
    for i in 0..20 {
        api.put_configmap(&format!("drill-{i}"), &format!("value-{i}"));
    }

    // A backup: named with the revision, sidecar matches, Debian's etcdctl here reads it.
    let first = backup(&inv, &state, &[]);
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        first.starts_with(state.join("backups")),
        "{}",
        first.display()
    );
    let rev = local_snapshot_revision(&first);
    assert!(
        name.starts_with("lab-") && name.ends_with(&format!("-rev{rev}.db")),
        "{name}"
    );
    let sidecar = std::fs::read_to_string(format!("{}.sha256", first.display())).expect("sidecar");
    assert_eq!(sidecar, format!("{}  {name}\n", sha256(&first)));
    let (_, s, _) = status(&inv, &state);
    assert!(
        s["last_backup"]["age_seconds"].as_u64() < Some(120),
        "{s:#}"
    );

    // Retention: --keep 2 leaves the two newest.
    std::thread::sleep(Duration::from_secs(1));
    let second = backup(&inv, &state, &["--keep", "2"]);
    std::thread::sleep(Duration::from_secs(1));
    let third = backup(&inv, &state, &["--keep", "2"]);
    let mut left: Vec<String> = std::fs::read_dir(state.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect();
    left.sort();
    let want = [&second, &third].map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
    assert_eq!(left, want);
    assert!(!first.exists() && !Path::new(&format!("{}.sha256", first.display())).exists());

    // Encrypted: only the identity opens it, to a snapshot etcdctl reads at the same revision.
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let enc_path = tmp.path().join("encrypted.db.age");
    ok(&run(
        &["backup"],
        &inv,
        &state,
        &[
            "--encrypt-to",
            &recipient,
            "--out",
            enc_path.to_str().unwrap(),
        ],
    ));
    let ct = std::fs::read(&enc_path).expect("encrypted backup");
    assert!(ct.starts_with(b"age-encryption.org/v1"));
    let plain = age::decrypt(&identity, &ct).expect("decrypts with the identity");
    let plain_path = tmp.path().join("decrypted.db");
    std::fs::write(&plain_path, &plain).unwrap();
    assert_eq!(local_snapshot_revision(&plain_path), rev);
    let id_file = tmp.path().join("identity.txt");
    std::fs::write(&id_file, identity.to_string().expose_secret()).unwrap();

    // The scheduled backup: timer installed by apply; one run now; --fetch collects it.
    lab.exec("node-1", "systemctl is-active kbs-etcd-backup.timer");
    lab.exec("node-1", "systemctl start kbs-etcd-backup.service");
    let remote = lab.exec("node-1", "ls -1 /var/backups/kbs-etcd/");
    assert!(remote.contains(".db.sha256"), "{remote}");
    let (code, s, _) = status(&inv, &state);
    assert_eq!(code, 0, "{s:#}");
    let node1 = &s["scheduled_snapshots"][0];
    assert!(node1["newest_age_seconds"].as_u64() < Some(120), "{s:#}");
    let table = String::from_utf8_lossy(&run(&["status"], &inv, &state, &[]).stdout).into_owned();
    assert!(
        table.contains("scheduled snapshots (every 1h 0m): node-1 "),
        "{table}"
    );
    // A failed run is a warning, with where to look.
    lab.exec(
        "node-2",
        "mv /etc/kbs/etcd/backup.sh /etc/kbs/etcd/backup.sh.aside; systemctl start kbs-etcd-backup.service || true",
    );
    let (code, s, _) = status(&inv, &state);
    assert_eq!(code, 1, "{s:#}");
    assert!(
        s["problems"]
            .to_string()
            .contains("snapshots on node-2: the last scheduled snapshot failed"),
        "{s:#}"
    );
    lab.exec(
        "node-2",
        "mv /etc/kbs/etcd/backup.sh.aside /etc/kbs/etcd/backup.sh; systemctl reset-failed kbs-etcd-backup.service",
    );
    let fetched = ok(&run(&["backup"], &inv, &state, &["--fetch"]));
    assert!(fetched.contains("backups/node-1/lab-"), "{fetched}");
    let f = PathBuf::from(fetched.lines().next().unwrap().trim());
    local_snapshot_revision(&f);

    // Disaster: every member's data is gone.
    destroy_etcd(&lab);
    let (code, s, _) = status(&inv, &state);
    assert_eq!(code, 2, "no quorum is down: {s:#}");

    // A snapshot that fails its checksum is refused, and nothing changes on the hosts.
    let bad = tmp.path().join("bad.db");
    let mut bytes = std::fs::read(&third).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    std::fs::copy(
        format!("{}.sha256", third.display()),
        format!("{}.sha256", bad.display()),
    )
    .unwrap();
    let before: Vec<String> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| data_dirs(&lab, n))
        .collect();
    let out = run(
        &["restore"],
        &inv,
        &state,
        &[bad.to_str().unwrap(), "--yes"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match its checksum"), "{err}");
    let after: Vec<String> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| data_dirs(&lab, n))
        .collect();
    assert_eq!(before, after, "a refused restore changes nothing");
    assert_eq!(
        lab.exec("node-1", "systemctl is-active kbs-etcd@node-1 || true")
            .trim(),
        "inactive"
    );

    // The real restore, from the encrypted backup: the keys are back through the API.
    let out = ok(&run(
        &["restore"],
        &inv,
        &state,
        &[
            enc_path.to_str().unwrap(),
            "--identity",
            id_file.to_str().unwrap(),
            "--yes",
        ],
    ));
    assert!(out.contains(&format!("restored revision {rev}")), "{out}");
    let api = Api::new(&state);
    for i in 0..20 {
        assert_eq!(
            api.configmap(&format!("drill-{i}")).as_deref(),
            Some(format!("value-{i}").as_str())
        );
    }
    let (code, s, _) = status(&inv, &state);
    assert_eq!(code, 0, "{s:#}");
    // etcd started from the restored dirs although the env files still say
    // ETCD_INITIAL_CLUSTER_STATE=new and the old token: the data dir wins.
    let env = lab.exec("node-2", "cat /etc/kbs/etcd/*.env");
    assert!(env.contains("ETCD_INITIAL_CLUSTER_STATE=new"));
    // A second apply leaves the restored cluster alone and healthy.
    apply(&inv, &state);
    assert_eq!(api.configmap("drill-7").as_deref(), Some("value-7"));

    // A host down: degraded (exit 1), named, and status does not hang.
    lab.cmd(&["kill", "node-3"]);
    let (code, s, took) = status(&inv, &state);
    assert_eq!(code, 1, "{s:#}");
    let node3 = s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "node-3")
        .unwrap()
        .clone();
    assert_eq!(node3["reachable"], false, "{s:#}");
    assert!(took < Duration::from_secs(45), "status took {took:?}");
}

#[test]
fn lab_restore_onto_replaced_hosts() {
    let Some(lab) = up(&["3"]) else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    apply(&lab.inventory(), &state);
    let api = Api::new(&state);
    for i in 0..10 {
        api.put_configmap(&format!("keep-{i}"), &format!("v{i}"));
    }
    let snap = backup(&lab.inventory(), &state, &[]);

    // New machines with the same names and addresses: new host keys, empty disks.
    lab.cmd(&["down"]);
    lab.cmd(&["up", "3"]);
    apply(&lab.inventory(), &state);
    assert_eq!(
        api.configmap("keep-3"),
        None,
        "a rebuilt cluster starts empty"
    );
    ok(&run(
        &["restore"],
        &lab.inventory(),
        &state,
        &[snap.to_str().unwrap(), "--yes"],
    ));
    for i in 0..10 {
        assert_eq!(
            api.configmap(&format!("keep-{i}")).as_deref(),
            Some(format!("v{i}").as_str())
        );
    }
    let (code, s, _) = status(&lab.inventory(), &state);
    assert_eq!(code, 0, "{s:#}");
}

/// inventories/three-host.toml plus `extra`, in a temp dir (its hosts are never reached).
fn three_host_with(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let text = std::fs::read_to_string(crate::common::inventory("three-host.toml")).unwrap();
    crate::common::write_inventory(&format!("{text}\n{extra}"))
}

#[test]
fn backup_section_is_validated() {
    let (_d, inv) = three_host_with(
        "[backup]\nschedule = \"daily\\n\"\nkeep = 0\ndir = \"relative/dir\"\nrecipient = \"age1nope\"\n",
    );
    let out = kbs().arg("plan").arg(&inv).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "backup.schedule is not a systemd calendar expression",
        "backup.keep must be at least 1",
        "backup.dir must be an absolute path",
        "backup.recipient is not an age recipient",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// `kbs render` of the three-host example with `extra`: the temp dir and the output tree.
fn rendered(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let (d, inv) = three_host_with(extra);
    let out = d.path().join("out");
    ok(&kbs()
        .arg("render")
        .arg(&inv)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap());
    (d, out)
}

#[test]
fn scheduled_backup_renders_a_timer_on_every_etcd_host() {
    let (_d, out) = rendered("[backup]\nschedule = \"*-*-* 02:30:00\"\nkeep = 4\n");
    for n in ["node-1", "node-2", "node-3"] {
        let root = out.join(n);
        let timer =
            std::fs::read_to_string(root.join("etc/systemd/system/kbs-etcd-backup.timer")).unwrap();
        assert!(timer.contains("OnCalendar=*-*-* 02:30:00"), "{timer}");
        let script = std::fs::read_to_string(root.join("etc/kbs/etcd/backup.sh")).unwrap();
        assert!(script.contains("keep=4"), "{script}");
        assert!(script.contains(&format!(
            "--endpoints=\"https://192.0.2.1{}:2379\"",
            &n[5..]
        )));
        assert!(
            root.join("etc/systemd/system/kbs-etcd-backup.service")
                .exists()
        );
    }
    // Without a schedule: the default one, every 12 hours, a week kept.
    let (_d, out) = rendered("");
    let timer =
        std::fs::read_to_string(out.join("node-1/etc/systemd/system/kbs-etcd-backup.timer"))
            .expect("a timer by default");
    assert!(timer.contains("OnCalendar=*-*-* 00,12:00:00"), "{timer}");
    let script = std::fs::read_to_string(out.join("node-1/etc/kbs/etcd/backup.sh")).unwrap();
    assert!(script.contains("keep=14"), "{script}");
    // Turned off: no timer.
    let (_d, out) = rendered("[backup]\nenabled = false\n");
    assert!(
        !out.join("node-1/etc/systemd/system/kbs-etcd-backup.timer")
            .exists()
    );
}

#[test]
fn bad_input_is_refused_before_any_host_is_contacted() {
    let (d, inv) = three_host_with("");
    let state = d.path().join("state");
    let fail = |args: &[&str], want: &str| {
        let out = run(args, &inv, &state, &[]);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    fail(
        &["backup", "--encrypt-to", "age1nope"],
        "not an age recipient",
    );
    fail(&["backup", "--keep", "0"], "--keep must be at least 1");
    let missing = d.path().join("missing.db");
    let snap = d.path().join("snap.db");
    std::fs::write(&snap, b"not a snapshot").unwrap();
    let out = run(
        &["restore"],
        &inv,
        &state,
        &[missing.to_str().unwrap(), "--yes"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = run(
        &["restore"],
        &inv,
        &state,
        &[snap.to_str().unwrap(), "--yes"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the checksum"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(format!("{}.sha256", snap.display()), "00  snap.db\n").unwrap();
    let out = run(
        &["restore"],
        &inv,
        &state,
        &[snap.to_str().unwrap(), "--yes"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match its checksum"));
    // An encrypted snapshot needs --identity.
    let enc = d.path().join("snap.db.age");
    std::fs::write(&enc, b"x").unwrap();
    std::fs::write(
        format!("{}.sha256", enc.display()),
        format!("{}  snap.db.age\n", sha256(&enc)),
    )
    .unwrap();
    let out = run(&["restore"], &inv, &state, &[enc.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is encrypted"));
}

/// Each member's database size, by name, from `kbs status`.
fn db_sizes(inventory: &Path, state: &Path) -> Vec<(String, u64, bool)> {
    let (_, s, _) = status(inventory, state);
    s["etcd"]
        .as_array()
        .expect("etcd")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["db_size"].as_u64().unwrap_or(0),
                m["leader"] == true,
            )
        })
        .collect()
}

#[test]
fn lab_etcd_defrag_shrinks_a_database_with_deleted_keys() {
    let Some(lab) = up(&["3"]) else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let inv = lab.inventory();
    apply(&inv, &state);
    // 30 MB of values, deleted and compacted away: the file keeps its size until a defrag.
    let etcdctl = "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kbs/etcd/pki/ca.crt \
                   --cert=/etc/kbs/etcd/pki/healthcheck-client.crt --key=/etc/kbs/etcd/pki/healthcheck-client.key";
    lab.exec(
        "node-1",
        &format!(
            "set -e; for i in $(seq 1 200); do head -c 150000 /dev/zero | tr '\\0' x | {etcdctl} put /kbs-defrag-test/$i >/dev/null; done; \
             {etcdctl} del --prefix /kbs-defrag-test/ >/dev/null; \
             rev=$({etcdctl} endpoint status -w json | sed -n 's/.*\"revision\":\\([0-9]*\\).*/\\1/p'); {etcdctl} compact $rev"
        ),
    );
    let before = db_sizes(&inv, &state);
    assert!(
        before.iter().all(|(_, size, _)| *size > 20 << 20),
        "{before:?}"
    );

    let dry = ok(&run(&["etcd", "defrag"], &inv, &state, &["--dry-run"]));
    assert!(dry.contains("would defragment etcd member"), "{dry}");
    assert_eq!(db_sizes(&inv, &state), before, "a dry run changed nothing");

    let out = ok(&run(&["etcd", "defrag"], &inv, &state, &[]));
    // The sizes, in the order the members were done: the leader last.
    let order: Vec<&str> = out.lines().filter(|l| l.contains(" → ")).collect();
    assert_eq!(order.len(), 3, "{out}");
    let leader = before
        .iter()
        .find(|(_, _, l)| *l)
        .expect("a leader")
        .0
        .clone();
    assert!(order[2].starts_with(&format!("{leader} on ")), "{out}");
    assert!(
        out.contains(&format!(
            "defragment etcd member {leader}, the leader, last"
        )),
        "{out}"
    );
    let after = db_sizes(&inv, &state);
    for ((name, b, _), (_, a, _)) in before.iter().zip(&after) {
        assert!(a * 4 < *b, "{name}: {b} bytes before, {a} after the defrag");
    }
    let (code, s, _) = status(&inv, &state);
    assert_eq!(code, 0, "{s:#}");
}
