//! The rendered trees: snapshots per inventory and endpoint mode, determinism, overrides.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{self, all_plans, render, text};
use kbs::render::{JoinSecrets, RenderError, RenderInputs, Templates, render_host_files};

/// Per host, `mode path` of every file: the shape of the tree at a glance.
fn tree_index(plan: &kbs::plan::ClusterPlan) -> BTreeMap<String, Vec<String>> {
    render(plan, &RenderInputs::default())
        .into_iter()
        .map(|(host, files)| {
            (
                host,
                files
                    .iter()
                    .map(|f| format!("{:04o} {}", f.mode, f.path.display()))
                    .collect(),
            )
        })
        .collect()
}

/// Every file's content under a `=== host path (mode)` header, for review as plain text.
fn tree_contents(plan: &kbs::plan::ClusterPlan) -> String {
    let mut out = String::new();
    for (host, files) in render(plan, &RenderInputs::default()) {
        for f in files {
            out.push_str(&format!(
                "=== {host} {} ({:04o})\n{}\n",
                f.path.display(),
                f.mode,
                text(&f)
            ));
        }
    }
    out
}

#[test]
fn snapshots_of_every_tree() {
    for (case, plan) in all_plans() {
        insta::assert_yaml_snapshot!(format!("{case}-index"), tree_index(&plan));
        insta::assert_snapshot!(case, tree_contents(&plan));
    }
}

#[test]
fn same_plan_renders_identical_bytes() {
    for (case, plan) in all_plans() {
        assert_eq!(
            render(&plan, &RenderInputs::default()),
            render(&plan, &RenderInputs::default()),
            "{case}"
        );
    }
}

fn tree(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    (mode, std::fs::read(&p).unwrap()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn cli_renders_twice_to_identical_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = common::inventory("two-host.toml");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        assert_cmd::cargo::cargo_bin_cmd!("kbs")
            .arg("render")
            .arg(&inv)
            .arg("--out")
            .arg(out)
            .assert()
            .success();
    }
    let (ta, tb) = (tree(&a), tree(&b));
    assert_eq!(ta, tb);
    assert_eq!(ta["node-1/etc/kubernetes/kubeadm/init.yaml"].0, 0o600);
    assert_eq!(ta["node-2/etc/keepalived/check_apiserver.sh"].0, 0o755);
    // Exactly the library's files, nothing else.
    let lib: usize = render(
        &common::inventory_plan("two-host"),
        &RenderInputs::default(),
    )
    .values()
    .map(Vec::len)
    .sum();
    assert_eq!(ta.len(), lib);
}

#[test]
fn cli_refuses_a_non_empty_out_dir() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("stale"), "x").unwrap();
    let inv = common::inventory("single-host.toml");
    let out = assert_cmd::cargo::cargo_bin_cmd!("kbs")
        .arg("render")
        .arg(&inv)
        .arg("--out")
        .arg(tmp.path())
        .assert()
        .failure();
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("not empty"));
}

#[test]
fn join_secrets_and_interfaces_come_from_inputs() {
    let plan = common::inventory_plan("three-host");
    let inputs = RenderInputs {
        join: JoinSecrets {
            token: "abcdef.0123456789abcdef".into(),
            ca_cert_hashes: vec!["sha256:00ff".into()],
        },
        vip_interfaces: [("node-2".to_string(), "bond0".to_string())].into(),
        ..RenderInputs::default()
    };
    let hosts = render(&plan, &inputs);
    let file = |host: &str, path: &str| {
        hosts[host]
            .iter()
            .find(|f| f.path == Path::new(path))
            .unwrap()
            .clone()
    };
    let join = file("node-2", "/etc/kubernetes/kubeadm/join.yaml");
    assert!(
        text(&join).contains("token: \"abcdef.0123456789abcdef\"")
            && text(&join).contains("[\"sha256:00ff\"]")
    );
    assert!(!join.has_placeholder());
    assert_eq!(join.mode, 0o600);
    assert!(
        text(&file("node-1", "/etc/kubernetes/kubeadm/init.yaml"))
            .contains("abcdef.0123456789abcdef")
    );
    assert!(text(&file("node-2", "/etc/keepalived/keepalived.conf")).contains("interface bond0"));
    // node-1 got no interface: the placeholder stays and marks the file.
    assert!(file("node-1", "/etc/keepalived/keepalived.conf").has_placeholder());
}

#[test]
fn taints_are_always_written() {
    let five = render(
        &common::inventory_plan("five-host"),
        &RenderInputs::default(),
    );
    let kubeadm = |host: &str| {
        let f = five[host]
            .iter()
            .find(|f| f.path.starts_with("/etc/kubernetes/kubeadm"))
            .unwrap();
        text(f).to_string()
    };
    // five-host: control planes without the worker role are tainted; workers are not.
    assert!(kubeadm("cp-1").contains(
        "taints: [{\"key\":\"node-role.kubernetes.io/control-plane\",\"effect\":\"NoSchedule\"}]"
    ));
    assert!(kubeadm("cp-2").contains("taints: [{\"key\""));
    assert!(kubeadm("worker-1").contains("taints: []"));
    // three-host: control planes take workloads.
    let three = render(
        &common::inventory_plan("three-host"),
        &RenderInputs::default(),
    );
    let init = three["node-1"]
        .iter()
        .find(|f| f.path.ends_with("init.yaml"))
        .unwrap();
    assert!(text(init).contains("taints: []"));
}

fn override_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

fn render_with(dir: &Path) -> Result<(), RenderError> {
    let templates = Templates::with_overrides(dir)?;
    render_host_files(
        &common::inventory_plan("single-host"),
        &templates,
        &RenderInputs::default(),
    )
    .map(drop)
}

#[test]
fn an_override_replaces_the_builtin_template() {
    let dir = override_dir(&[("modules-load.conf", "overlay\n")]);
    let templates = Templates::with_overrides(dir.path()).unwrap();
    assert_eq!(templates.overridden(), ["modules-load.conf"]);
    let hosts = render_host_files(
        &common::inventory_plan("single-host"),
        &templates,
        &RenderInputs::default(),
    )
    .unwrap();
    let f = hosts["node-1"]
        .iter()
        .find(|f| f.path.ends_with("kbs.conf"))
        .unwrap();
    assert_eq!(text(f), "overlay\n");
}

#[test]
fn an_undefined_variable_is_an_error_naming_the_template() {
    let dir = override_dir(&[("sysctl.conf", "x = {{ host.no_such_field }}\n")]);
    let err = render_with(dir.path()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Template { name, .. } if name == "sysctl.conf"),
        "{err}"
    );
}

#[test]
fn a_broken_yaml_override_fails_locally_with_the_template_name() {
    let dir = override_dir(&[("kubeadm-init.yaml", "apiVersion: [unclosed\n")]);
    let err = render_with(dir.path()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Invalid { template, .. } if template == "kubeadm-init.yaml"),
        "{err}"
    );
}

#[test]
fn a_broken_toml_override_fails_locally() {
    let dir = override_dir(&[("containerd-config.toml", "version = \n")]);
    assert!(matches!(
        render_with(dir.path()),
        Err(RenderError::Invalid { .. })
    ));
}

#[test]
fn an_override_matching_no_template_is_an_error() {
    let dir = override_dir(&[("kubeadm-int.yaml", "")]);
    assert!(matches!(
        render_with(dir.path()),
        Err(RenderError::UnknownOverride { .. })
    ));
}
