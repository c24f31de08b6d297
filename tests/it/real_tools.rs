//! Rendered files checked by the real programs that will read them. These need Debian packages:
//! haproxy, keepalived, systemd (systemd-analyze) and etcd-server (/usr/bin/etcd).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::Pod;
use kbs::render::{RenderInputs, RenderedFile};
use serde_json::Value;

use crate::common::{all_plans, files_ending, render, text};

/// A scratch dir under target/: keepalived refuses scripts in world-writable dirs such as /tmp.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {:?} ({e}); install the Debian package for it (see tests/it/real_tools.rs)", cmd.get_program()))
        .tap(what)
}

trait Tap {
    fn tap(self, what: &str) -> Self;
}

impl Tap for Output {
    /// Fails unless the tool exited 0; prints its output either way for the test log.
    fn tap(self, what: &str) -> Self {
        let (out, err) = (
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr),
        );
        assert!(
            self.status.success(),
            "{what}: {}\n{out}\n{err}",
            self.status
        );
        self
    }
}

fn write(path: &Path, content: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn haproxy_accepts_every_config() {
    for (case, host, f) in files_ending(&RenderInputs::default(), "/haproxy.cfg") {
        let dir = scratch();
        let cfg = dir.path().join("haproxy.cfg");
        write(&cfg, &f.content, 0o644);
        let out = run(
            Command::new("haproxy").arg("-c").arg("-f").arg(&cfg),
            &format!("haproxy -c {case}/{host}"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("WARNING"), "{case}/{host}: {err}");
    }
}

/// An interface that exists here, as apply would pass the VIP host's NIC from facts.
fn local_interface() -> String {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .iter()
        .find(|n| *n != "lo")
        .cloned()
        .unwrap_or_else(|| "lo".into())
}

#[test]
fn keepalived_accepts_every_config() {
    let nic = local_interface();
    let mut checked = 0;
    for (case, plan) in all_plans() {
        let inputs = RenderInputs {
            vip_interfaces: plan
                .hosts
                .iter()
                .map(|h| (h.name.clone(), nic.clone()))
                .collect(),
            ..Default::default()
        };
        for (host, files) in render(&plan, &inputs) {
            let Some(conf) = files.iter().find(|f| f.path.ends_with("keepalived.conf")) else {
                continue;
            };
            let script = files
                .iter()
                .find(|f| f.path.ends_with("check_apiserver.sh"))
                .expect("the check script goes with keepalived");
            assert_eq!(script.mode, 0o755);
            // keepalived -t checks the script exists and is safe; point it at the rendered copy.
            let dir = scratch();
            let script_path = dir.path().join("check_apiserver.sh");
            write(&script_path, &script.content, script.mode);
            let conf_text = text(conf).replace(
                "/etc/keepalived/check_apiserver.sh",
                script_path.to_str().unwrap(),
            );
            let conf_path = dir.path().join("keepalived.conf");
            write(&conf_path, conf_text.as_bytes(), 0o644);
            run(
                Command::new("keepalived")
                    .arg("-t")
                    .arg("-f")
                    .arg(&conf_path),
                &format!("keepalived -t {case}/{host}"),
            );
            run(
                Command::new("sh").arg("-n").arg(&script_path),
                &format!("sh -n check_apiserver.sh {case}/{host}"),
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

/// `systemd-analyze verify` exits 0 on unknown keys but complains on stderr: require silence.
fn verify_units(units: &[PathBuf], unit_path: Option<&Path>, what: &str) {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").args(units);
    if let Some(p) = unit_path {
        // Trailing ':' keeps the built-in search path after ours.
        cmd.env("SYSTEMD_UNIT_PATH", format!("{}:", p.display()));
    }
    let out = run(&mut cmd, what);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().is_empty(), "{what}: {err}");
}

#[test]
fn systemd_accepts_the_etcd_unit_for_every_member() {
    for (case, host, unit) in files_ending(&RenderInputs::default(), "/kbs-etcd@.service") {
        let dir = scratch();
        // etcd comes from the artifact source at apply time; Debian's binary stands for it here.
        let template = dir.path().join("kbs-etcd@.service");
        let content = text(&unit).replace("/usr/local/bin/etcd", "/usr/bin/etcd");
        write(&template, content.as_bytes(), unit.mode);
        let mut units = vec![template.clone()];
        for m in all_plans()
            .into_iter()
            .find(|(c, _)| *c == case)
            .unwrap()
            .1
            .etcd
            .iter()
            .filter(|m| m.host == host)
        {
            let instance = dir.path().join(format!("kbs-etcd@{}.service", m.name));
            fs::copy(&template, &instance).unwrap();
            units.push(instance);
        }
        verify_units(
            &units,
            None,
            &format!("systemd-analyze verify kbs-etcd@ {case}/{host}"),
        );
    }
}

#[test]
fn systemd_accepts_the_kubelet_and_containerd_units() {
    let inputs = RenderInputs::default();
    let units_of = |suffix: &str| files_ending(&inputs, suffix);
    let dropins = units_of("/kubelet.service.d/10-kubeadm.conf");
    let kubelets = units_of("/system/kubelet.service");
    let containerds = units_of("/system/containerd.service");
    assert_eq!(dropins.len(), kubelets.len());
    assert_eq!(dropins.len(), containerds.len());
    for (((case, host, dropin), (_, _, kubelet)), (_, _, containerd)) in
        dropins.into_iter().zip(kubelets).zip(containerds)
    {
        let dir = scratch();
        // The binaries come from the bundle at apply time: stubs stand for them here.
        let units = dir.path().join("units");
        let fix = |f: &RenderedFile, name: &str| {
            let stub = dir.path().join(name);
            write(&stub, b"#!/bin/sh\n", 0o755);
            let content =
                text(f).replace(&format!("/usr/local/bin/{name}"), stub.to_str().unwrap());
            let rel = f.path.to_string_lossy().replace("/etc/systemd/system/", "");
            write(&units.join(rel), content.as_bytes(), f.mode);
        };
        fix(&kubelet, "kubelet");
        fix(&dropin, "kubelet");
        fix(&containerd, "containerd");
        verify_units(
            &[
                units.join("kubelet.service"),
                units.join("containerd.service"),
            ],
            Some(&units),
            &format!("systemd-analyze verify kubelet, containerd {case}/{host}"),
        );
    }
}

/// etcd 3.4 (Debian's) logs every ETCD_* variable it takes and warns about unknown ones; it then
/// fails to bind the TEST-NET address, which is expected here.
#[test]
fn etcd_accepts_every_member_env_file() {
    for (case, host, env) in files_ending(&RenderInputs::default(), ".env") {
        let dir = scratch();
        let vars: BTreeMap<String, String> = text(&env)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .unwrap()
            })
            .collect();
        assert!(vars.keys().all(|k| k.starts_with("ETCD_")), "{case}/{host}");
        let out = Command::new("timeout")
            .arg("20")
            .arg("/usr/bin/etcd")
            .env_clear()
            .envs(&vars)
            .env("ETCD_DATA_DIR", dir.path().join("data"))
            .output()
            .expect("etcd-server must be installed (/usr/bin/etcd)");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            !log.contains("unrecognized environment variable"),
            "{case}/{host}: {log}"
        );
        assert!(
            !log.contains("error verifying flags"),
            "{case}/{host}: {log}"
        );
        for k in vars.keys() {
            assert!(
                log.contains(&format!("recognized and used environment variable {k}=")),
                "{case}/{host}: {k} unused\n{log}"
            );
        }
        assert_eq!(env.mode, 0o600);
    }
}

#[test]
fn static_pods_are_v1_pods_with_no_field_dropped() {
    for (case, host, f) in files_ending(&RenderInputs::default(), "kube-vip.yaml")
        .into_iter()
        .chain(files_ending(&RenderInputs::default(), "/bootstrap.yaml"))
    {
        let original: Value = serde_saphyr::from_str(text(&f)).unwrap();
        let pod: Pod = serde_json::from_value(original.clone())
            .unwrap_or_else(|e| panic!("{case}/{host}: {e}"));
        let back = serde_json::to_value(&pod).unwrap();
        assert_eq!(back, original, "{case}/{host}: {}", f.path.display());
    }
}
