//! `kbs upgrade` on lab hosts: 3 control planes and a worker built at v1.35.8, then upgraded to
//! v1.36.5, each from a bundle `kbs bundle` made from the lab mirror (the stand-ins claiming each
//! version; for the upgrade, the mirror's relabelled copy of the same etcd 3.5.30, so its SHA-256
//! differs: the member-by-member etcd roll is real, the etcd version does not change, as Debian has
//! one etcd at or above kubeadm's minimum). Every assertion reads the hosts or the cluster: the
//! binaries' versions, each API server's /version, each Node's kubelet version and its cordon
//! history in etcd's revisions, etcd's health and members.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::apply::{assert_etcd_healthy, endpoints, etcd_client_args, etcdctl, files, members, ok};
use crate::common::{api_send, kill_at, run_kbs};
use crate::lab::{Lab, up};
use crate::lifecycle::Poller;

const OLD: &str = "v1.35.8";
const NEW: &str = "v1.36.5";
/// tests/lab/versions.env's ETCD_RELABEL.
const ETCD_BUILD: &str = "upgrade-test";

/// A copy of the lab's inventory that asks for `version`, with its own bundle made by `kbs bundle`
/// from the lab mirror; with `relabelled_etcd`, etcd comes from the mirror's relabelled copy.
fn inventory_at(lab: &Lab, dir: &Path, version: &str, relabelled_etcd: bool) -> PathBuf {
    let bundle = dir.join(format!("bundle-{version}"));
    let text = std::fs::read_to_string(lab.inventory()).expect("inventory");
    let old_bundle = text
        .lines()
        .find_map(|l| l.strip_prefix("bundle = \""))
        .and_then(|l| l.split('"').next())
        .expect("the lab inventory names its bundle")
        .to_string();
    let current = text
        .lines()
        .find(|l| l.starts_with("kubernetes_version = "))
        .expect("the lab inventory names its version")
        .to_string();
    let mut text = text
        .replace(&old_bundle, &bundle.to_string_lossy())
        .replace(
            &current,
            &format!("kubernetes_version = \"{}\"", &version[1..]),
        );
    if relabelled_etcd {
        // The first matching mirror wins.
        text = text.replace(
            "mirrors = [\n",
            &format!(
                "mirrors = [\n  {{ from = \"https://github.com/etcd-io/\", to = \"http://{}/lab-relabelled/github.com/etcd-io/\" }},\n",
                lab.ip(3)
            ),
        );
    }
    let path = dir.join(format!("inventory-{version}.toml"));
    std::fs::write(&path, text).expect("write inventory");
    let out = Command::new(env!("CARGO_BIN_EXE_kbs"))
        .arg("bundle")
        .arg(&path)
        .output()
        .expect("kbs bundle");
    assert!(
        out.status.success(),
        "kbs bundle {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn upgrade(inventory: &Path, state: &Path, extra: &[&str]) -> std::process::Output {
    run_kbs(&["upgrade"], inventory, state, extra)
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `kubelet --version` and `kubeadm version -o short` on node-`n`, and for control planes what
/// its API server's /version says.
fn versions(lab: &Lab, state: &Path, n: u8) -> String {
    let mut v = lab.exec(
        &format!("node-{n}"),
        "kubelet --version; kubeadm version -o short",
    );
    if n <= 3 {
        let ca = std::fs::read(state.join("pki/ca.crt")).expect("ca.crt");
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA")])
            .build()
            .expect("client");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let body: serde_json::Value = rt.block_on(async {
            client
                .get(format!("https://{}:6443/version", lab.ip(10 + n)))
                .send()
                .await
                .expect("GET /version")
                .json()
                .await
                .expect("JSON")
        });
        v.push_str(&format!("API server {}\n", body["gitVersion"]));
    }
    v
}

/// Each Node's kubelet version as the API lists it.
fn node_versions(state: &Path) -> Vec<(String, String)> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kbs::context::api::Api { client, server } =
        kbs::context::api::admin_client(&kbs::state::StateDir::new(state))
            .expect("admin kubeconfig");
    let list: serde_json::Value = rt.block_on(async {
        client
            .get(format!("{server}/api/v1/nodes"))
            .send()
            .await
            .expect("GET nodes")
            .json()
            .await
            .expect("JSON")
    });
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                n["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn revision(state: &Path, eps: &[String]) -> i64 {
    let out = etcdctl(
        state,
        eps,
        &["get", "/registry/minions/node-1", "-w", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl JSON");
    v["header"]["revision"].as_i64().expect("revision")
}

/// Every value each Node had in etcd since revision `from`, in order: was it cordoned
/// (`spec.unschedulable`) at some point, and is it schedulable at the end?
fn cordon_history(state: &Path, eps: &[String], from: i64) -> Vec<(String, bool, bool)> {
    // A watch from an old revision replays the history at once; it then waits, so it is cut off.
    let out = Command::new("timeout")
        .args(["5", "etcdctl"])
        .env("ETCDCTL_API", "3")
        .args(etcd_client_args(state, eps))
        .args(["watch", "--prefix", "/registry/minions/"])
        .arg(format!("--rev={from}"))
        .output()
        .expect("etcdctl watch");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    (1..=4)
        .map(|n| {
            let key = format!("/registry/minions/node-{n}");
            let values: Vec<&str> = lines
                .windows(2)
                .filter(|w| w[0] == key)
                .map(|w| w[1])
                .collect();
            let cordoned = values.iter().any(|v| v.contains("\"unschedulable\": true"));
            let last_free = values
                .last()
                .is_some_and(|v| !v.contains("\"unschedulable\": true"));
            (format!("node-{n}"), cordoned, last_free)
        })
        .collect()
}

#[test]
fn lab_upgrade_one_minor_rolls_etcd_and_nodes_refuses_a_skip_and_resumes() {
    let Some(lab) = up(&["4"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let dir = tempfile::tempdir().expect("tmp");
    let old = inventory_at(&lab, dir.path(), OLD, false);
    ok(&run_kbs(&["apply"], &old, state.path(), &[]));
    let eps = endpoints(&lab, &[1, 2, 3], &[2379]);
    for n in 1..=4 {
        let v = versions(&lab, state.path(), n);
        assert!(!v.contains(NEW) && v.contains(OLD), "node-{n}: {v}");
    }
    let before: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();

    // Skipping a minor is refused before any host changes.
    let skip = inventory_at(&lab, dir.path(), "v1.37.1", false);
    let out = upgrade(&skip, state.path(), &[]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("cluster.kubernetes_version in")
            && log.contains("skips a minor version")
            && log.contains("upgrade to 1.36.x first"),
        "{log}"
    );
    let after: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    assert_eq!(before, after, "a refused upgrade changed a host");

    // An object the API still serves through a version the target does not serve blocks the
    // upgrade, named, before any host changes (the stand-in serves the versions objects were
    // written in; a real 1.35 server no longer serves this one, removed in 1.32).
    let inventory = inventory_at(&lab, dir.path(), NEW, true);
    let legacy = "/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas/kbs-legacy";
    let body = serde_json::json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1beta3", "kind": "FlowSchema",
        "metadata": {"name": "kbs-legacy"}, "spec": {"matchingPrecedence": 1000}
    });
    assert_eq!(api_send(state.path(), "PUT", legacy, Some(body)), 201);
    let out = upgrade(&inventory, state.path(), &["--dry-run"]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("flowschemas kbs-legacy in flowcontrol.apiserver.k8s.io/v1beta3 (removed in 1.32; use flowcontrol.apiserver.k8s.io/v1)"),
        "{log}"
    );
    let after: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    assert_eq!(before, after, "a refused upgrade changed a host");
    assert_eq!(api_send(state.path(), "DELETE", legacy, None), 200);

    // The plan, without changes.
    let plan = ok(&upgrade(&inventory, state.path(), &["--dry-run"]));
    for line in [
        format!("the cluster runs {OLD}, the inventory asks for {NEW}"),
        "1. node-1  etcd Version: 3.5.30 → the bundle's etcd".into(),
        format!("4. node-1  API server {OLD}, kubelet {OLD} → {NEW}  first control plane"),
        "5. node-2  API server".into(),
        format!("7. node-4  kubelet {OLD} → {NEW}  worker (batch 1)"),
        "dry run: nothing was changed".into(),
    ] {
        assert!(plan.contains(&line), "missing `{line}` in:\n{plan}");
    }
    let after: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    assert_eq!(before, after, "a dry run changed a host");

    // Cut off while kubeadm runs on the second control plane, as a crash would...
    let from = revision(state.path(), &eps);
    let poller = Poller::start(state.path());
    kill_at(
        "upgrade",
        &inventory,
        state.path(),
        "node-2: kubeadm upgrade node started",
        Duration::from_millis(300),
    );
    assert!(versions(&lab, state.path(), 1).contains(&format!("API server \"{NEW}\"")));

    // ... then run again: it finishes the job.
    let out = ok(&upgrade(&inventory, state.path(), &[]));
    std::thread::sleep(Duration::from_secs(1));
    let seen = poller.finish();
    assert!(
        out.contains(&format!(
            "already done: the bundle's etcd on node-1, node-2, node-3; Kubernetes {NEW} on node-1\n"
        )) && out.contains(&format!("upgraded to {NEW}")),
        "{out}"
    );
    for n in 1..=4 {
        let v = versions(&lab, state.path(), n);
        assert!(
            !v.contains(OLD) && v.matches(NEW).count() == if n <= 3 { 3 } else { 2 },
            "node-{n}: {v}"
        );
    }
    assert_eq!(
        node_versions(state.path()),
        (1..=4)
            .map(|n| (format!("node-{n}"), NEW.to_string()))
            .collect::<Vec<_>>()
    );
    for (node, cordoned, free) in cordon_history(state.path(), &eps, from) {
        assert!(
            cordoned && free,
            "{node}: cordoned {cordoned}, uncordoned at the end {free}"
        );
    }
    // etcd: every member healthy, three of them, each host runs the bundle's binary (same 3.5.30).
    assert_etcd_healthy(state.path(), &eps);
    assert_eq!(members(state.path(), &eps), 3);
    for n in 1..=3 {
        let etcd = lab.exec(
            &format!("node-{n}"),
            "tail -c 64 /usr/local/bin/etcd | tr -d '\\0'; etcd --version | head -n 1",
        );
        assert!(
            etcd.contains(&format!("kbs-lab-etcd-build={ETCD_BUILD}"))
                && etcd.contains("etcd Version: 3.5.30"),
            "node-{n}: {etcd}"
        );
    }
    // The endpoint answered throughout (the cut-off run's API servers restarted too).
    seen.assert_up("the upgrade");

    // At the target: nothing to do, for upgrade and for apply.
    let out = ok(&upgrade(&inventory, state.path(), &[]));
    assert!(out.contains("no changes"), "{out}");
    let out = ok(&run_kbs(&["apply"], &inventory, state.path(), &[]));
    assert!(
        out.starts_with("no changes"),
        "apply after the upgrade: {out}"
    );

    // Back to the old inventory: upgrade refuses the downgrade, apply refuses to change the
    // version, and neither touches a host.
    let before: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    let out = upgrade(&old, state.path(), &[]);
    let log = text(&out);
    assert!(
        !out.status.success() && log.contains("would be a downgrade"),
        "{log}"
    );
    let out = run_kbs(&["apply"], &old, state.path(), &[]);
    let log = text(&out);
    assert!(
        !out.status.success()
            && log.contains(&format!("runs kubeadm {NEW}"))
            && log.contains("kbs upgrade"),
        "{log}"
    );
    let after: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    assert_eq!(before, after, "a refused downgrade changed a host");
}
