//! Real TLS handshakes with openssl s_server / s_client using the certificates kbs made.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::pki_common::{Cluster, free_port};

const HOSTS: [(&str, &str); 2] = [("n1", "10.0.0.11"), ("n2", "10.0.0.12")];

/// An `openssl s_server` that accepts one connection; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(cert: &Path, key: &Path, extra: &[&str]) -> Self {
        let port = free_port("127.0.0.1");
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-naccept",
                "1",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .args(extra)
            // Kept open: s_server stops on stdin EOF.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl is installed");
        Self { child, port }
    }

    /// Waits (bounded) for the server to finish its one connection; returns its output.
    fn output(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs s_client against the server, retrying while it is not listening yet.
fn client(server: &Server, args: &[&str]) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", server.port),
                "-verify_return_error",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !text.contains("errno=111") || Instant::now() > deadline {
            return (out.status.success(), text);
        }
        sleep(Duration::from_millis(100));
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn apiserver_certificate_passes_hostname_and_ip_verification() {
    let c = Cluster::new("edge", &HOSTS, "");
    c.generate();
    let (crt, key, ca) = (
        c.pki("hosts/n2/apiserver.crt"),
        c.pki("hosts/n2/apiserver.key"),
        c.pki("ca.crt"),
    );
    for check in [
        ["-verify_hostname", "api.edge.test"],
        ["-verify_hostname", "kubernetes.default.svc.cluster.local"],
        ["-verify_hostname", "n2"],
        ["-verify_ip", "10.96.0.1"],
        ["-verify_ip", "10.0.0.12"],
    ] {
        let server = Server::start(&crt, &key, &[]);
        let (ok, out) = client(&server, &["-CAfile", s(&ca), check[0], check[1]]);
        assert!(
            ok && out.contains("Verify return code: 0 (ok)"),
            "{check:?}: {out}"
        );
    }
    // The check is real: a name the certificate lacks, or n1's address on n2's cert, fails.
    for check in [
        ["-verify_hostname", "other.example"],
        ["-verify_ip", "10.0.0.11"],
    ] {
        let server = Server::start(&crt, &key, &[]);
        let (ok, out) = client(&server, &["-CAfile", s(&ca), check[0], check[1]]);
        assert!(!ok && out.contains("mismatch"), "{check:?}: {out}");
    }
}

#[test]
fn admin_client_certificate_is_accepted_and_a_foreign_one_refused() {
    let c = Cluster::new("edge", &HOSTS, "");
    c.generate();
    let other = Cluster::new("other", &HOSTS, "");
    other.generate();
    let (crt, key, ca) = (
        c.pki("hosts/n1/apiserver.crt"),
        c.pki("hosts/n1/apiserver.key"),
        c.pki("ca.crt"),
    );
    let require_client_cert = ["-Verify", "1", "-verify_return_error", "-CAfile", s(&ca)];

    let (admin_crt, admin_key) = c.kubeconfig_client("admin.conf");
    let server = Server::start(&crt, &key, &require_client_cert);
    // TLS 1.2 so a refused client certificate fails the client's handshake too.
    let (ok, out) = client(
        &server,
        &[
            "-tls1_2",
            "-CAfile",
            s(&ca),
            "-cert",
            s(&admin_crt),
            "-key",
            s(&admin_key),
        ],
    );
    assert!(ok, "{out}");
    let log = server.output();
    assert!(
        log.contains("subject=O = kubeadm:cluster-admins, CN = kubernetes-admin"),
        "{log}"
    );

    let (foreign_crt, foreign_key) = other.kubeconfig_client("admin.conf");
    let server = Server::start(&crt, &key, &require_client_cert);
    let (ok, out) = client(
        &server,
        &[
            "-tls1_2",
            "-CAfile",
            s(&ca),
            "-cert",
            s(&foreign_crt),
            "-key",
            s(&foreign_key),
        ],
    );
    assert!(!ok, "{out}");
    let log = server.output();
    assert!(log.contains("certificate verify failed"), "{log}");
}
