//! `kbs plan` and `kbs init` through the binary: every example inventory is planned, the output
//! is snapshot-tested, and the JSON carries the documented fields.

use serde_json::Value;

use crate::common::{inventory, kbs, stdout_of, write_inventory};

const EXAMPLES: [&str; 5] = [
    "single-host.toml",
    "two-host.toml",
    "three-host.toml",
    "five-host.toml",
    "external-etcd.toml",
];

fn plan_json(name: &str) -> Value {
    let out = stdout_of(
        kbs()
            .arg("plan")
            .arg(inventory(name))
            .args(["--output", "json"]),
    );
    serde_json::from_str(&out).expect("plan --output json is JSON")
}

#[test]
fn human_output_of_every_example() {
    for name in EXAMPLES {
        let out = stdout_of(kbs().arg("plan").arg(inventory(name)));
        insta::assert_snapshot!(format!("plan-{name}"), out);
    }
}

#[test]
fn dot_output_of_every_example() {
    for name in EXAMPLES {
        let out = stdout_of(
            kbs()
                .arg("plan")
                .arg(inventory(name))
                .args(["--output", "dot"]),
        );
        assert!(
            out.starts_with("digraph") && out.trim_end().ends_with('}'),
            "{out}"
        );
        insta::assert_snapshot!(format!("dot-{name}"), out);
    }
}

#[test]
fn json_output_of_every_example() {
    for name in EXAMPLES {
        insta::assert_json_snapshot!(format!("json-{name}"), plan_json(name));
    }
}

fn members_per_host(plan: &Value) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for m in plan["etcd"]["members"].as_array().expect("members") {
        let host = m["host"].as_str().expect("host").to_string();
        match out.iter_mut().find(|(h, _)| *h == host) {
            Some((_, n)) => *n += 1,
            None => out.push((host, 1)),
        }
    }
    out
}

fn roles_of(plan: &Value, host: &str) -> Vec<String> {
    let h = plan["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["name"] == host)
        .expect("host in plan");
    h["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|r| r.as_str().expect("role").to_string())
        .collect()
}

#[test]
fn single_host_is_a_lab() {
    let p = plan_json("single-host.toml");
    assert_eq!(p["cluster"], "lab-1");
    assert_eq!(p["topology"], "single-host");
    assert_eq!(roles_of(&p, "node-1"), ["control-plane", "etcd", "worker"]);
    assert_eq!(members_per_host(&p), [("node-1".to_string(), 1)]);
    assert_eq!(p["failure_tolerance"]["host_failures_tolerated"], 0);
    assert_eq!(
        p["failure_tolerance"]["fatal_host_losses"],
        serde_json::json!(["node-1"])
    );
    let warning = p["warnings"][0].as_str().expect("a warning");
    assert!(
        warning.contains("This is a lab, not production")
            && warning.contains("redundant storage")
            && warning.contains("backups")
    );
}

#[test]
fn two_hosts_put_all_etcd_members_on_the_more_reliable_host() {
    let p = plan_json("two-host.toml");
    assert_eq!(p["topology"], "two-host");
    // node-2 has the higher reliability; each member has its own ports and data dir.
    assert_eq!(members_per_host(&p), [("node-2".to_string(), 3)]);
    let members = p["etcd"]["members"].as_array().expect("members");
    let urls: Vec<&str> = members
        .iter()
        .map(|m| m["client_url"].as_str().expect("url"))
        .collect();
    assert_eq!(
        urls,
        [
            "https://192.0.2.12:2379",
            "https://192.0.2.12:12379",
            "https://192.0.2.12:22379"
        ]
    );
    let dirs: Vec<&str> = members
        .iter()
        .map(|m| m["data_dir"].as_str().expect("dir"))
        .collect();
    assert_eq!(dirs, ["/disk1/etcd", "/disk2/etcd", "/disk3/etcd"]);
    assert_eq!(roles_of(&p, "node-1"), ["control-plane", "worker"]);
    assert_eq!(roles_of(&p, "node-2"), ["control-plane", "etcd", "worker"]);
    assert_eq!(p["front"]["hosts"], serde_json::json!(["node-1", "node-2"]));
    // Losing the etcd host is fatal; losing the other is not.
    assert_eq!(p["failure_tolerance"]["host_failures_tolerated"], 0);
    assert_eq!(
        p["failure_tolerance"]["fatal_host_losses"],
        serde_json::json!(["node-2"])
    );
}

#[test]
fn two_hosts_with_equal_reliability_pick_the_first() {
    let text = std::fs::read_to_string(inventory("two-host.toml"))
        .expect("read")
        .replace("reliability = 10", "reliability = 5")
        .replace(
            "etcd_data_dirs = [\"/disk1/etcd\", \"/disk2/etcd\", \"/disk3/etcd\"]\n",
            "",
        );
    let (_dir, path) = write_inventory(&text);
    let p: Value = serde_json::from_str(&stdout_of(
        kbs().arg("plan").arg(&path).args(["-o", "json"]),
    ))
    .expect("json");
    assert_eq!(members_per_host(&p), [("node-1".to_string(), 3)]);
    let dirs: Vec<&str> = p["etcd"]["members"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["data_dir"].as_str().expect("d"))
        .collect();
    assert_eq!(
        dirs,
        [
            "/var/lib/etcd/node-1-etcd-1",
            "/var/lib/etcd/node-1-etcd-2",
            "/var/lib/etcd/node-1-etcd-3"
        ]
    );
    assert!(p["warnings"].to_string().contains("share one disk"));
}

#[test]
fn three_hosts_spread_etcd_and_run_workloads_on_control_planes() {
    let p = plan_json("three-host.toml");
    assert_eq!(p["topology"], "multi-host");
    assert_eq!(members_per_host(&p).len(), 3);
    for h in ["node-1", "node-2", "node-3"] {
        assert_eq!(roles_of(&p, h), ["control-plane", "etcd", "worker"]);
    }
    assert_eq!(p["failure_tolerance"]["host_failures_tolerated"], 1);
    assert_eq!(
        p["failure_tolerance"]["fatal_host_losses"],
        serde_json::json!([])
    );
    assert_eq!(p["warnings"], serde_json::json!([]));
}

#[test]
fn five_members_on_six_hosts() {
    let p = plan_json("five-host.toml");
    assert_eq!(members_per_host(&p).len(), 5, "one member per host");
    assert_eq!(
        roles_of(&p, "cp-1"),
        ["control-plane", "etcd"],
        "control planes take no workloads beyond 3 hosts"
    );
    assert_eq!(roles_of(&p, "worker-3"), ["worker"]);
    assert_eq!(p["failure_tolerance"]["host_failures_tolerated"], 2);
}

#[test]
fn external_etcd_hosts_are_honoured() {
    let p = plan_json("external-etcd.toml");
    assert_eq!(
        members_per_host(&p),
        [
            ("etcd-1".into(), 1),
            ("etcd-2".into(), 1),
            ("etcd-3".into(), 1)
        ]
    );
    assert_eq!(roles_of(&p, "cp-1"), ["control-plane"]);
    assert_eq!(roles_of(&p, "worker-2"), ["worker"]);
    assert_eq!(p["front"]["hosts"], serde_json::json!([]));
    let actions = p["front"]["operator_actions"].to_string();
    assert!(
        actions.contains("192.0.2.11:6443") && actions.contains("/readyz"),
        "{actions}"
    );
}

#[test]
fn seven_hosts_with_seven_members_tolerate_three_losses() {
    let mut text = std::fs::read_to_string(inventory("three-host.toml")).expect("read");
    text = text
        .replace("[[host]]", "[etcd]\nmembers = 7\n\n[[host]]")
        .replacen("[etcd]\nmembers = 7\n\n", "", 2);
    for i in 4..=7 {
        text.push_str(&format!(
            "\n[[host]]\nname = \"node-{i}\"\naddress = \"192.0.2.1{i}\"\n"
        ));
    }
    let (_dir, path) = write_inventory(&text);
    let p: Value = serde_json::from_str(&stdout_of(
        kbs().arg("plan").arg(&path).args(["-o", "json"]),
    ))
    .expect("json");
    assert_eq!(members_per_host(&p).len(), 7);
    // Seven members tolerate three losses, but only three control planes: two host losses.
    assert_eq!(p["failure_tolerance"]["host_failures_tolerated"], 2);
}

#[test]
fn init_writes_an_inventory_that_plans() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("inv.toml");
    kbs()
        .args(["init", "--hosts", "10.0.0.11,10.0.0.12,10.0.0.13", "--out"])
        .arg(&path)
        .assert()
        .success();
    let text = std::fs::read_to_string(&path).expect("written");
    assert!(text.contains("address = \"10.0.0.100\""), "{text}");
    let p: Value = serde_json::from_str(&stdout_of(
        kbs().arg("plan").arg(&path).args(["-o", "json"]),
    ))
    .expect("json");
    assert_eq!(p["topology"], "multi-host");
    // It never overwrites.
    let out = kbs()
        .args(["init", "--hosts", "10.0.0.11", "--out"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwrites"));
    let out = kbs()
        .args(["init", "--hosts", "10.0.0.11,bad"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`bad` is not an IP address"));
}

#[test]
fn version_completions_and_man_pages() {
    let version = stdout_of(kbs().arg("--version"));
    assert!(version.starts_with("kbs "), "{version}");
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(kbs().args(["completion", shell]));
        assert!(
            script.contains("apply") && script.contains("add-node"),
            "{shell}: {script}"
        );
    }
    let page = stdout_of(kbs().arg("man"));
    assert!(page.contains(".TH kbs 1"), "{page}");
    let dir = tempfile::tempdir().expect("tempdir");
    kbs()
        .args(["man", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    for name in ["kbs.1", "kbs-apply.1", "kbs-certs-renew.1"] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
}
