use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::cargo_bin_cmd;
use base64::Engine;
use tempfile::TempDir;

/// A temp directory holding an inventory; the state dir is kbs's default next to it.
pub struct Cluster {
    pub dir: TempDir,
    pub inventory: PathBuf,
    pub state: PathBuf,
}

impl Cluster {
    /// `hosts` as (name, address); `extra` is appended verbatim (e.g. a `[pki]` table).
    pub fn new(name: &str, hosts: &[(&str, &str)], extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let inventory = dir.path().join("inventory.toml");
        let state = dir.path().join(".kbs").join(name);
        let c = Self {
            dir,
            inventory,
            state,
        };
        c.write(name, hosts, extra);
        c
    }

    pub fn write(&self, name: &str, hosts: &[(&str, &str)], extra: &str) {
        let mut text = format!(
            "[cluster]\nname = \"{name}\"\nkubernetes_version = \"1.37.1\"\npod_subnet = \"10.244.0.0/16\"\n\
             service_subnet = \"10.96.0.0/12\"\n\n[endpoint]\nmode = \"external\"\naddress = \"api.edge.test\"\nport = 6443\n\n\
             [ssh]\nuser = \"root\"\n\n{extra}\n"
        );
        for (n, a) in hosts {
            text.push_str(&format!("[[host]]\nname = \"{n}\"\naddress = \"{a}\"\n\n"));
        }
        fs::write(&self.inventory, text).unwrap();
    }

    pub fn pki(&self, rel: &str) -> PathBuf {
        self.state.join("pki").join(rel)
    }

    /// Runs `kbs certs generate` and returns its stdout.
    pub fn generate(&self) -> String {
        let out = kbs()
            .args(["certs", "generate"])
            .arg(&self.inventory)
            .assert()
            .success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    }

    /// Decodes a kubeconfig's client cert and key into `<name>.crt` / `<name>.key` in the temp dir.
    pub fn kubeconfig_client(&self, rel: &str) -> (PathBuf, PathBuf) {
        kubeconfig_client(&self.state.join("kubeconfig").join(rel), self.dir.path())
    }
}

pub fn kbs() -> assert_cmd::Command {
    cargo_bin_cmd!("kbs")
}

pub fn kubeconfig_field(text: &str, key: &str) -> String {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    line.trim().to_owned()
}

pub fn kubeconfig_client(conf: &Path, out_dir: &Path) -> (PathBuf, PathBuf) {
    let text = fs::read_to_string(conf).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let stem = conf.file_stem().unwrap().to_string_lossy().into_owned();
    let crt = out_dir.join(format!("{stem}-client.crt"));
    let key = out_dir.join(format!("{stem}-client.key"));
    fs::write(
        &crt,
        b64.decode(kubeconfig_field(&text, "client-certificate-data"))
            .unwrap(),
    )
    .unwrap();
    fs::write(
        &key,
        b64.decode(kubeconfig_field(&text, "client-key-data"))
            .unwrap(),
    )
    .unwrap();
    (crt, key)
}

/// Runs openssl; returns (success, stdout + stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `openssl x509 -noout -text` of a certificate file.
pub fn x509_text(path: &Path) -> String {
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", path.to_str().unwrap()]);
    assert!(ok, "openssl cannot read {}: {text}", path.display());
    text
}

/// The value line after an extension header in openssl's text, e.g. "X509v3 Key Usage".
pub fn ext(text: &str, header: &str) -> Option<String> {
    let mut lines = text.lines();
    lines.find(|l| l.trim_start().starts_with(header))?;
    lines.next().map(|l| l.trim().to_owned())
}

pub fn subject(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Subject: "))
        .unwrap()
        .to_owned()
}

/// `openssl verify -CAfile ca leaf` succeeds.
pub fn verifies(ca: &Path, leaf: &Path) -> bool {
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    ok && text.contains(": OK")
}

/// A port that was free on `ip` a moment ago.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
