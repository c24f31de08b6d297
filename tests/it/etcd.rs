//! A real three-member etcd cluster (Debian's etcd 3.4 binaries) running on kbs's certificates
//! with client and peer certificate authentication.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::pki_common::{Cluster, free_port};

const MEMBERS: [(&str, &str); 3] = [
    ("e1", "127.0.0.11"),
    ("e2", "127.0.0.12"),
    ("e3", "127.0.0.13"),
];

/// The member processes; killed on drop.
struct Etcd {
    children: Vec<Child>,
    logs: TempDir,
    client_urls: Vec<String>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Etcd {
    /// Starts all members at once: a new etcd cluster only becomes ready at quorum.
    fn start(c: &Cluster) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = MEMBERS
            .iter()
            .map(|(_, ip)| (free_port(ip), free_port(ip)))
            .collect();
        let initial: Vec<String> = MEMBERS
            .iter()
            .zip(&ports)
            .map(|((n, ip), (_, peer))| format!("{n}=https://{ip}:{peer}"))
            .collect();
        let ca = c.pki("etcd/ca.crt");
        let mut children = Vec::new();
        let mut client_urls = Vec::new();
        for ((name, ip), (client, peer)) in MEMBERS.iter().zip(&ports) {
            let host = |f: &str| c.pki(&format!("hosts/{name}/etcd/{f}"));
            let client_url = format!("https://{ip}:{client}");
            let peer_url = format!("https://{ip}:{peer}");
            let log = fs::File::create(logs.path().join(format!("{name}.log"))).unwrap();
            let child = Command::new("etcd")
                .args(["--name", name, "--logger", "zap", "--log-outputs", "stderr"])
                .arg("--data-dir")
                .arg(logs.path().join(format!("{name}.etcd")))
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args([
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                ])
                .args([
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--initial-cluster-token", "kbs-it"])
                .args(["--client-cert-auth", "--peer-client-cert-auth"])
                .arg("--trusted-ca-file")
                .arg(&ca)
                .arg("--peer-trusted-ca-file")
                .arg(&ca)
                .arg("--cert-file")
                .arg(host("server.crt"))
                .arg("--key-file")
                .arg(host("server.key"))
                .arg("--peer-cert-file")
                .arg(host("peer.crt"))
                .arg("--peer-key-file")
                .arg(host("peer.key"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("etcd is installed (apt-get install etcd-server)");
            children.push(child);
            client_urls.push(client_url);
        }
        Self {
            children,
            logs,
            client_urls,
        }
    }

    fn health(&self, ca: &Path, cert: &Path, key: &Path) -> (bool, String) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client_urls.join(",")))
            .arg("--cacert")
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args([
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "4s",
                "endpoint",
                "health",
                "--cluster",
            ])
            .output()
            .expect("etcdctl is installed (apt-get install etcd-client)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn logs(&self) -> String {
        MEMBERS
            .iter()
            .map(|(n, _)| {
                let log = fs::read_to_string(self.logs.path().join(format!("{n}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {n}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn etcd_cluster_runs_on_kbs_certificates() {
    let c = Cluster::new("edge", &MEMBERS, "");
    c.generate();
    let etcd = Etcd::start(&c);
    let ca = c.pki("etcd/ca.crt");
    let (cert, key) = (
        c.pki("apiserver-etcd-client.crt"),
        c.pki("apiserver-etcd-client.key"),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ok, mut out) = etcd.health(&ca, &cert, &key);
    while !(ok && out.matches("is healthy").count() == 3) {
        assert!(
            Instant::now() < deadline,
            "etcd never became healthy:\n{out}\n{}",
            etcd.logs()
        );
        sleep(Duration::from_millis(500));
        (ok, out) = etcd.health(&ca, &cert, &key);
    }
    for (_, ip) in MEMBERS {
        assert!(out.contains(&format!("https://{ip}:")), "{out}");
    }

    // kbs's own health-check identity works too.
    let (ok, out) = etcd.health(
        &ca,
        &c.pki("etcd/healthcheck-client.crt"),
        &c.pki("etcd/healthcheck-client.key"),
    );
    assert!(ok, "{out}");

    // A client certificate from another cluster's etcd CA is refused.
    let other = Cluster::new("other", &MEMBERS, "");
    other.generate();
    let (ok, out) = etcd.health(
        &ca,
        &other.pki("apiserver-etcd-client.crt"),
        &other.pki("apiserver-etcd-client.key"),
    );
    assert!(!ok, "a foreign client certificate must be refused:\n{out}");
}
