//! `kbs bundle` and online installs against the lab's real mirror (nginx at upstream's URL paths)
//! and registry (the CNCF distribution registry over TLS): every sum and digest in bundle.toml
//! matches what was fetched, a file corrupted on the mirror is refused and not kept, a run killed
//! mid-download resumes without fetching again what it has, an apply without a bundle gets the same
//! result from the mirror, and a mirror that cannot be reached stops apply before any change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::apply::{files, ok};
use crate::common::run_kbs;
use crate::lab::{Lab, up};

fn kbs_bundle(inventory: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kbs"))
        .arg("bundle")
        .arg(inventory)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run kbs bundle")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// "fetched 12.3 MiB" from kbs bundle's summary.
fn fetched_mib(out: &Output) -> f64 {
    let t = String::from_utf8_lossy(&out.stdout);
    t.split("fetched ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fetched size in: {t}"))
}

/// The lab inventory with `edit` applied, written into `dir`.
fn inventory_with(lab: &Lab, dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(lab.inventory()).expect("inventory");
    let path = dir.join("inventory.toml");
    std::fs::write(&path, edit(text)).expect("write inventory");
    path
}

fn sha256(path: &Path) -> String {
    kbs::artifacts::sha256_hex(&std::fs::read(path).expect("read"))
}

/// Every `[[file]]` and `[[image]]` of bundle.toml, checked independently of kbs: the file's sum,
/// and for images the manifest digest in the archive's index.json, which must also be the digest
/// of the manifest blob it names.
fn assert_bundle_consistent(dir: &Path) -> (usize, usize) {
    let manifest: toml::Table = std::fs::read_to_string(dir.join("bundle.toml"))
        .expect("bundle.toml")
        .parse()
        .expect("bundle.toml is TOML");
    let entries = |k: &str| manifest[k].as_array().expect(k).clone();
    let files = entries("file");
    for f in &files {
        let src = dir.join(f["source"].as_str().expect("source"));
        assert_eq!(
            sha256(&src),
            f["sha256"].as_str().expect("sha256"),
            "{src:?}"
        );
    }
    let images = entries("image");
    for i in &images {
        let src = dir.join(i["source"].as_str().expect("source"));
        assert_eq!(
            sha256(&src),
            i["sha256"].as_str().expect("sha256"),
            "{src:?}"
        );
        let listing = Command::new("tar")
            .args(["-xOf"])
            .arg(&src)
            .arg("index.json")
            .output()
            .expect("tar");
        let index: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("index.json");
        let digest = index["manifests"][0]["digest"].as_str().expect("digest");
        assert_eq!(digest, i["digest"].as_str().expect("digest"), "{src:?}");
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"].as_str(),
            i["name"].as_str(),
            "{src:?}"
        );
        let blob = Command::new("tar")
            .args(["-xOf"])
            .arg(&src)
            .arg(format!("blobs/sha256/{}", &digest[7..]))
            .output()
            .expect("tar");
        assert_eq!(
            format!("sha256:{}", kbs::artifacts::sha256_hex(&blob.stdout)),
            digest
        );
    }
    (files.len(), images.len())
}

#[test]
fn lab_bundle_checks_every_file_refuses_corruption_and_resumes() {
    let Some(lab) = up(&["1"]) else { return };
    let dir = tempfile::tempdir().expect("tmp");

    // A whole bundle: every file and image as bundle.toml says, the images kubeadm lists for the
    // version under the names the hosts use (the lab registry's), the CNI release's manifest,
    // the addons' manifests and images (metrics-server, local-path-provisioner and its busybox).
    let out_dir = dir.path().join("bundle");
    let out = kbs_bundle(&lab.inventory(), &out_dir);
    assert!(out.status.success(), "{}", text(&out));
    let full = fetched_mib(&out);
    let (files, images) = assert_bundle_consistent(&out_dir);
    assert!(
        files >= 20 && images == 11,
        "{files} files, {images} images"
    );
    let toml = std::fs::read_to_string(out_dir.join("bundle.toml")).expect("bundle.toml");
    let reg = format!("{}:5000", lab.ip(3));
    for name in [
        format!("{reg}/kube-apiserver:v1.37.1"),
        format!("{reg}/coredns:v1.14.6"),
        format!("{reg}/pause:3.10.2"),
        format!("{reg}/flannel-io/flannel:v0.28.9"),
        format!("{reg}/metrics-server/metrics-server:v0.8.1"),
        format!("{reg}/library/busybox:1.37.0"),
    ] {
        assert!(
            toml.contains(&format!("name = \"{name}\"")),
            "{name} in {toml}"
        );
    }
    for f in [
        "/usr/local/bin/etcd\"",
        "/usr/local/bin/containerd\"",
        "/usr/local/sbin/runc\"",
        "/opt/cni/bin/bridge\"",
    ] {
        assert!(toml.contains(&format!("install = \"{f}")), "{f}");
    }
    assert!(toml.contains("[cni]\nplugin = \"flannel\""), "{toml}");

    // A file corrupted on the mirror is refused, and nothing of it is kept.
    let www = lab.run_dir().join("mirror/www");
    let tarball = www.join(
        "github.com/containerd/containerd/releases/download/v2.1.9/containerd-2.1.9-linux-amd64.tar.gz",
    );
    let good = std::fs::read(&tarball).expect("mirror file");
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0xff;
    std::fs::write(&tarball, &bad).expect("corrupt");
    let fresh = dir.path().join("corrupt");
    let out = kbs_bundle(&lab.inventory(), &fresh);
    std::fs::write(&tarball, &good).expect("restore");
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("containerd-2.1.9-linux-amd64.tar.gz does not match its SHA-256"),
        "{log}"
    );
    let kept: Vec<_> = std::fs::read_dir(fresh.join("downloads"))
        .expect("downloads")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("containerd-"))
        .collect();
    assert!(kept.is_empty(), "kept {kept:?}");
    assert!(
        !fresh.join("bundle.toml").exists(),
        "a failed bundle has a manifest"
    );

    // Killed mid-download, then run again: it finishes, fetching less than a whole run.
    let resumed = dir.path().join("resumed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kbs"))
        .arg("bundle")
        .arg(lab.inventory())
        .arg("--out")
        .arg(&resumed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kbs bundle");
    let started = Instant::now();
    let downloads = resumed.join("downloads");
    // Killed once 10 MiB are on disk (whole files and `.part`s alike): what it has by then must
    // not be fetched again.
    let on_disk = || -> u64 {
        std::fs::read_dir(&downloads)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    while on_disk() < 10 << 20 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill kbs bundle");
    let _ = child.wait();
    assert!(
        !resumed.join("bundle.toml").exists(),
        "kbs bundle finished before it was killed"
    );
    let out = kbs_bundle(&lab.inventory(), &resumed);
    assert!(out.status.success(), "{}", text(&out));
    let second = fetched_mib(&out);
    assert!(
        second < full,
        "resumed run fetched {second} MiB of {full} MiB"
    );
    assert_bundle_consistent(&resumed);
    // Again: complete, nothing fetched.
    let out = kbs_bundle(&lab.inventory(), &resumed);
    assert!(out.status.success(), "{}", text(&out));
    assert!(fetched_mib(&out) < 0.1, "{}", text(&out));
    // Cut off after the last byte, before the rename: the whole `.part` is taken as it is.
    let kubelet = resumed.join("downloads/kubelet");
    std::fs::rename(&kubelet, resumed.join("downloads/kubelet.part")).expect("rename");
    let out = kbs_bundle(&lab.inventory(), &resumed);
    assert!(out.status.success(), "{}", text(&out));
    assert!(fetched_mib(&out) < 0.1, "{}", text(&out));
    assert!(kubelet.is_file());
}

#[test]
fn lab_online_apply_fetches_from_the_mirror_and_stops_cleanly_without_it() {
    let Some(lab) = up(&["1"]) else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let state = tempfile::tempdir().expect("tmp");
    // No [artifacts] bundle: apply fetches from the mirror on this machine.
    let online = inventory_with(&lab, dir.path(), |t| {
        t.lines()
            .filter(|l| !l.starts_with("bundle = "))
            .collect::<Vec<_>>()
            .join("\n")
    });

    // The mirror unreachable (nothing listens at .4): a clear error, and no host changed.
    let nowhere = dir.path().join("nowhere");
    std::fs::create_dir(&nowhere).expect("mkdir");
    let unreachable = inventory_with(&lab, &nowhere, |t| {
        t.lines()
            .filter(|l| !l.starts_with("bundle = "))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(
                &format!("http://{}/", lab.ip(3)),
                &format!("http://{}/", lab.ip(4)),
            )
    });
    let before = files(&lab, "node-1");
    let out = run_kbs(&["apply"], &unreachable, state.path(), &[]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("cannot fetch http://{}/", lab.ip(4))) && log.contains("mirrors"),
        "{log}"
    );
    assert_eq!(
        files(&lab, "node-1"),
        before,
        "a failed fetch changed the host"
    );

    ok(&run_kbs(&["apply"], &online, state.path(), &[]));
    // The state dir holds the bundle it made, and the node holds every image kubeadm lists.
    assert_bundle_consistent(&state.path().join("bundle"));
    let listed = lab.exec("node-1", "ctr -n k8s.io images ls -q");
    let reg = format!("{}:5000", lab.ip(3));
    for image in [
        "kube-apiserver:v1.37.1",
        "kube-controller-manager:v1.37.1",
        "kube-scheduler:v1.37.1",
        "kube-proxy:v1.37.1",
        "coredns:v1.14.6",
        "pause:3.10.2",
    ] {
        assert!(
            listed.contains(&format!("{reg}/{image}")),
            "{image}: {listed}"
        );
    }
    assert!(
        lab.exec("node-1", "etcd --version")
            .contains("etcd Version: 3.5.30"),
        "etcd"
    );
    let out = ok(&run_kbs(&["apply"], &online, state.path(), &[]));
    assert!(out.starts_with("no changes"), "{out}");
}
