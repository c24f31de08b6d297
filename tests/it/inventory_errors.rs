//! Every rejected inventory gets an error naming the file, line, column and field, with what
//! would be valid, and a non-zero exit.

use crate::common::{kbs, write_inventory};

const VALID: &str = r#"[cluster]
name = "edge-1"
kubernetes_version = "1.37.1"
pod_subnet = "10.244.0.0/16"
service_subnet = "10.96.0.0/12"

[endpoint]
mode = "vip"
address = "192.0.2.100"
port = 8443

[[host]]
name = "node-1"
address = "192.0.2.11"

[[host]]
name = "node-2"
address = "192.0.2.12"

[[host]]
name = "node-3"
address = "192.0.2.13"
"#;

/// Replaces the first occurrence of `from` in the valid inventory, runs `kbs plan` and returns
/// stderr after checking the exit code and that stdout is empty.
fn plan_error(from: &str, to: &str) -> String {
    assert!(
        VALID.contains(from),
        "test bug: `{from}` not in the base inventory"
    );
    plan_error_text(&VALID.replacen(from, to, 1))
}

fn plan_error_text(text: &str) -> String {
    let (_dir, path) = write_inventory(text);
    let out = kbs().arg("plan").arg(&path).output().expect("run kbs");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout when the inventory is bad"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Each problem is printed as itself, not nested under a header with a bare "Error:".
    assert!(!stderr.contains("Error:"), "{stderr}");
    assert!(!stderr.contains("1 error in"), "{stderr}");
    stderr
}

fn assert_has(stderr: &str, expected: &[&str]) {
    for e in expected {
        assert!(stderr.contains(e), "expected `{e}` in:\n{stderr}");
    }
}

#[test]
fn the_base_inventory_is_valid() {
    let (_dir, path) = write_inventory(VALID);
    kbs().arg("plan").arg(&path).assert().success();
}

#[test]
fn toml_syntax_error() {
    let e = plan_error("name = \"edge-1\"", "name = \"edge-1");
    assert_has(&e, &["inventory.toml:2:", "fix the TOML syntax"]);
}

#[test]
fn unknown_or_misspelt_keys() {
    let e = plan_error("pod_subnet", "pod_subnett");
    assert_has(
        &e,
        &[
            "unknown field `pod_subnett`",
            "inventory.toml:4:1",
            "did you mean `pod_subnet`?",
        ],
    );
    let e = plan_error(
        "address = \"192.0.2.12\"",
        "address = \"192.0.2.12\"\nrole = [\"worker\"]",
    );
    assert_has(
        &e,
        &[
            "unknown field `role`",
            "inventory.toml:19:1",
            "did you mean `roles`?",
        ],
    );
    let e = plan_error("[endpoint]", "[endpoint]\nvip = true");
    assert_has(&e, &["unknown field `vip`", "inventory.toml:8:1"]);
}

#[test]
fn missing_section() {
    let text = VALID.replace(
        "[endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\nport = 8443\n",
        "",
    );
    let e = plan_error_text(&text);
    assert_has(&e, &["missing field `endpoint`", "inventory.toml:1:1"]);
}

#[test]
fn duplicate_host_names() {
    let e = plan_error("name = \"node-2\"", "name = \"node-1\"");
    assert_has(
        &e,
        &[
            "host.name `node-1` is used twice",
            "inventory.toml:17:8",
            "first `node-1` is on line 13",
        ],
    );
}

#[test]
fn duplicate_host_addresses() {
    let e = plan_error("address = \"192.0.2.13\"", "address = \"192.0.2.11\"");
    assert_has(
        &e,
        &[
            "host.address 192.0.2.11 is used twice",
            "inventory.toml:22:11",
            "first used on line 14",
        ],
    );
}

#[test]
fn address_that_is_not_an_ip() {
    let e = plan_error(
        "address = \"192.0.2.12\"",
        "address = \"node-2.example.com\"",
    );
    assert_has(
        &e,
        &[
            "host.address `node-2.example.com` is not an IP address",
            "inventory.toml:18:11",
            "host names are not accepted",
        ],
    );
}

#[test]
fn bad_cidr() {
    let e = plan_error("10.244.0.0/16", "10.244.0.0/33");
    assert_has(
        &e,
        &[
            "cluster.pod_subnet `10.244.0.0/33` is not a CIDR",
            "inventory.toml:4:14",
        ],
    );
    let e = plan_error("10.244.0.0/16", "10.244.1.0/16");
    assert_has(&e, &["has host bits set", "\"10.244.0.0/16\""]);
    let e = plan_error("10.96.0.0/12", "10.0.0.0/8");
    assert_has(&e, &["larger than the API server accepts", "/12 or longer"]);
}

#[test]
fn overlapping_cidrs() {
    let e = plan_error("10.96.0.0/12", "10.244.128.0/17");
    assert_has(
        &e,
        &[
            "cluster.service_subnet 10.244.128.0/17 overlaps cluster.pod_subnet 10.244.0.0/16",
            "inventory.toml:5:18",
            "disjoint",
        ],
    );
}

#[test]
fn host_inside_a_cluster_subnet() {
    let e = plan_error("192.0.2.13", "10.96.0.13");
    assert_has(
        &e,
        &[
            "host.address 10.96.0.13 lies inside cluster.service_subnet 10.96.0.0/12",
            "inventory.toml:22:11",
        ],
    );
}

#[test]
fn unknown_endpoint_mode() {
    let e = plan_error("mode = \"vip\"", "mode = \"keepalived\"");
    assert_has(
        &e,
        &[
            "unknown variant `keepalived`",
            "`vip`, `kube-vip`, `external`",
            "inventory.toml:8:8",
            "remove the value or use one",
        ],
    );
}

#[test]
fn unknown_role() {
    let e = plan_error(
        "address = \"192.0.2.13\"",
        "address = \"192.0.2.13\"\nroles = [\"master\"]",
    );
    assert_has(
        &e,
        &[
            "unknown variant `master`",
            "`control-plane`, `etcd`",
            "inventory.toml:23:10",
        ],
    );
    let e = plan_error(
        "address = \"192.0.2.13\"",
        "address = \"192.0.2.13\"\nroles = [\"worke\"]",
    );
    assert_has(&e, &["did you mean `worker`?"]);
}

#[test]
fn cluster_name_not_a_dns_label() {
    let e = plan_error("name = \"edge-1\"", "name = \"Edge_1\"");
    assert_has(
        &e,
        &[
            "cluster.name `Edge_1` is not a DNS label",
            "inventory.toml:2:8",
            "lower-case letters",
        ],
    );
}

#[test]
fn not_a_kubernetes_version() {
    let e = plan_error("1.37.1", "1.31");
    assert_has(
        &e,
        &[
            "cluster.kubernetes_version `1.31` is not a Kubernetes version",
            "inventory.toml:3:22",
            "\"1.37.1\"",
        ],
    );
    let e = plan_error("1.37.1", "1.28.2");
    assert_has(&e, &["v1.28.2 is not supported", "starts at 1.31"]);
}

#[test]
fn an_end_of_life_version_is_refused_with_its_date() {
    let e = plan_error("1.37.1", "1.31.4");
    assert_has(
        &e,
        &[
            "cluster.kubernetes_version v1.31.4: Kubernetes 1.31 reached its end of life on 2025-10-28",
            "inventory.toml:3:22",
            "1.37 (until 2027-10-28)",
            "--allow-unsupported-version",
        ],
    );
    let e = plan_error("1.37.1", "1.99.0");
    assert_has(&e, &["no release facts for Kubernetes 1.99"]);
}

#[test]
fn an_etcd_below_kubeadms_minimum_is_refused() {
    let e = plan_error("[[host]]", "[versions]\netcd = \"3.5.16\"\n\n[[host]]");
    assert_has(
        &e,
        &[
            "versions.etcd 3.5.16 is older than 3.5.24, the oldest external etcd kubeadm 1.37 accepts",
            "use etcd 3.5.24 or newer",
        ],
    );
}

#[test]
fn even_etcd_member_count() {
    let e = plan_error("[[host]]", "[etcd]\nmembers = 2\n\n[[host]]");
    assert_has(
        &e,
        &[
            "etcd.members = 2 must be odd",
            "inventory.toml:13:11",
            "1, 3, 5 or 7",
        ],
    );
}

#[test]
fn more_than_seven_etcd_members() {
    let e = plan_error("[[host]]", "[etcd]\nmembers = 9\n\n[[host]]");
    assert_has(
        &e,
        &["etcd.members = 9 must be at most 7", "inventory.toml:13:11"],
    );
}

#[test]
fn more_members_than_hosts_and_dirs_hold() {
    let e = plan_error("[[host]]", "[etcd]\nmembers = 5\n\n[[host]]");
    assert_has(
        &e,
        &[
            "5 etcd members do not fit: the etcd hosts and data dirs hold 3",
            "inventory.toml:13:11",
            "etcd_data_dirs",
        ],
    );
    // The same five fit once one host lists more data dirs.
    let text = VALID
        .replacen("[[host]]", "[etcd]\nmembers = 5\n\n[[host]]", 1)
        .replace(
            "address = \"192.0.2.13\"",
            "address = \"192.0.2.13\"\netcd_data_dirs = [\"/d1/etcd\", \"/d2/etcd\", \"/d3/etcd\"]",
        );
    let (_dir, path) = write_inventory(&text);
    kbs().arg("plan").arg(&path).assert().success();
}

#[test]
fn explicit_roles_with_an_even_member_count() {
    let text = VALID
        .replace(
            "address = \"192.0.2.11\"",
            "address = \"192.0.2.11\"\nroles = [\"control-plane\", \"etcd\"]",
        )
        .replace(
            "address = \"192.0.2.12\"",
            "address = \"192.0.2.12\"\nroles = [\"etcd\"]",
        );
    let e = plan_error_text(&text);
    assert_has(
        &e,
        &[
            "the etcd hosts give 2 members, which is even",
            "inventory.toml:12:1",
        ],
    );
}

#[test]
fn endpoint_address_equal_to_a_host_address() {
    let e = plan_error("address = \"192.0.2.100\"", "address = \"192.0.2.12\"");
    assert_has(
        &e,
        &[
            "endpoint.address 192.0.2.12 is the address of host `node-2`",
            "inventory.toml:9:11",
            "survives the loss of any one host",
        ],
    );
}

#[test]
fn vip_that_is_not_an_ip() {
    let e = plan_error("address = \"192.0.2.100\"", "address = \"api.example.com\"");
    assert_has(
        &e,
        &[
            "endpoint.address `api.example.com` is not an IP address",
            "mode \"vip\" announces a virtual IP",
        ],
    );
}

#[test]
fn empty_host_list() {
    let text = &VALID[..VALID.find("[[host]]").expect("hosts")];
    let e = plan_error_text(text);
    assert_has(
        &e,
        &[
            "the inventory lists no hosts",
            "inventory.toml:1:1",
            "add at least one [[host]]",
        ],
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = VALID
        .replace("\"edge-1\"", "\"Edge\"")
        .replace("192.0.2.12", "192.0.2.300");
    let e = plan_error_text(&text);
    assert_has(
        &e,
        &["2 errors in", "inventory.toml:2:8", "inventory.toml:18:11"],
    );
}

#[test]
fn missing_inventory_file() {
    let out = kbs()
        .args(["plan", "/nonexistent/inventory.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read inventory /nonexistent/inventory.toml"),
        "{stderr}"
    );
    // The cause once, in the message, not again as a nested source.
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}

#[test]
fn security_settings_are_checked() {
    let e = plan_error_text(&format!(
        "{VALID}\n[security]\nanonymous_auth = true\nprofilling = true\n"
    ));
    assert_has(
        &e,
        &["unknown field `profilling`", "did you mean `profiling`?"],
    );
    let e = plan_error_text(&format!("{VALID}\n[security]\npod_security = \"strict\"\n"));
    assert_has(&e, &["unknown variant `strict`", "`restricted`"]);
    let e = plan_error_text(&format!("{VALID}\n[security]\naudit_log_max_size_mb = 0\n"));
    assert_has(
        &e,
        &[
            "security.audit_log_max_size_mb must be at least 1",
            "inventory.toml:25:25",
        ],
    );
    let e = plan_error_text(&format!(
        "{VALID}\n[security]\nterminated_pod_gc_threshold = 0\n"
    ));
    assert_has(
        &e,
        &[
            "security.terminated_pod_gc_threshold must be at least 1",
            "size it from the cluster",
        ],
    );
    let e = plan_error_text(&format!(
        "{VALID}\n[security]\nterminated_pod_gc_threshold = 3000000000\n"
    ));
    assert_has(
        &e,
        &["security.terminated_pod_gc_threshold must be at most 2147483647"],
    );
    let e = plan_error_text(&format!(
        "{VALID}\n[[security.namespace]]\nname = \"kube-tools\"\n\n[[security.namespace]]\nname = \"shop\"\nrequests_memory = \"8 GB\"\n\n[[security.namespace]]\nname = \"shop\"\n"
    ));
    assert_has(
        &e,
        &[
            "3 errors",
            "security.namespace `kube-tools` is a system namespace",
            "security.namespace.requests_memory `8 GB` is not a Kubernetes quantity",
            "inventory.toml:29:19",
            "security.namespace `shop` is listed twice",
            "the first `shop` is on line 28",
        ],
    );
}

#[test]
fn cni_manifest_must_exist() {
    // Online: relative to the inventory.
    let e = plan_error("[[host]]", "[cni]\nmanifest = \"calico.yaml\"\n\n[[host]]");
    assert_has(
        &e,
        &[
            "cni.manifest: ",
            "calico.yaml does not exist or is not a file",
            "inventory.toml:13:12",
            "relative to the inventory",
        ],
    );
    // Offline: inside the bundle, never outside it (the bundle's load checks the file, since
    // `kbs bundle` may not have made the bundle yet).
    let bundle = "[artifacts]\nbundle = \"/nonexistent-bundle\"\n\n[cni]\n";
    let e = plan_error(
        "[[host]]",
        &format!("{bundle}manifest = \"../cni.yaml\"\n\n[[host]]"),
    );
    assert_has(
        &e,
        &[
            "cni.manifest `../cni.yaml` is not a path inside the artifact bundle",
            "inventory.toml:16:12",
        ],
    );
}

#[test]
fn cni_manifest_next_to_the_inventory_is_accepted() {
    let text = VALID.replacen(
        "[[host]]",
        "[cni]\nmanifest = \"calico.yaml\"\n\n[[host]]",
        1,
    );
    let (dir, path) = write_inventory(&text);
    std::fs::write(dir.path().join("calico.yaml"), "kind: List\n").expect("write");
    let out = kbs().arg("plan").arg(&path).output().expect("run kbs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("CNI calico.yaml: kubectl apply on node-1"),
        "{stdout}"
    );
}

#[test]
fn pinned_host_keys_are_parsed_when_the_inventory_loads() {
    // Right shape, but the base64 is not a whole ed25519 key: found at load, not at connect.
    let e = plan_error(
        "address = \"192.0.2.12\"",
        "address = \"192.0.2.12\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3a\"",
    );
    assert_has(
        &e,
        &[
            "host.host_key is not an OpenSSH public key",
            "inventory.toml:19:12",
        ],
    );
    let e = plan_error(
        "address = \"192.0.2.13\"",
        "address = \"192.0.2.13\"\nssh = { jump_host = \"root@192.0.2.5\", jump_host_key = \"nonsense\" }",
    );
    assert_has(&e, &["jump_host_key is not an OpenSSH public key"]);
    let (_dir, path) = write_inventory(&VALID.replacen(
        "address = \"192.0.2.12\"",
        "address = \"192.0.2.12\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ host\"",
        1,
    ));
    kbs().arg("plan").arg(&path).assert().success();
}

#[test]
fn renew_before_days_must_be_shorter_than_the_validity() {
    let e = plan_error_text(&format!(
        "{VALID}\n[pki]\ncert_validity_days = 30\nrenew_before_days = 30\n"
    ));
    assert_has(
        &e,
        &["pki.renew_before_days (30) is not shorter than pki.cert_validity_days (30)"],
    );
}

#[test]
fn hooks_are_checked() {
    let e = plan_error_text(&format!(
        "{VALID}\n[[hook]]\nname = \"ok\"\nwhen = \"before-apply\"\nrun = \"  \"\nhosts = [\"node-9\"]\n"
    ));
    assert_has(
        &e,
        &[
            "hook `ok` has nothing to run",
            "hook `ok` names host `node-9`, which is not in the inventory",
        ],
    );
    let e = plan_error_text(&format!(
        "{VALID}\n[[hook]]\nname = \"x\"\nwhen = \"before-lunch\"\nrun = \"true\"\n"
    ));
    assert_has(&e, &["before-lunch", "before-apply"]);
}
