//! A real OpenSSH sshd on a loopback address, with temporary host keys and
//! authorized_keys. Its per-connection processes (sshd puts them in sessions of their
//! own) are found through /proc, so they can be frozen (SIGSTOP: a host that vanished
//! without closing its TCP connections) or killed with it.

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kbs::inventory::parse_host_key;
use kbs::ssh::{Target, Timeouts};
use russh::keys::PublicKey;

use crate::keys::{client_keys, keygen};

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub ip: IpAddr,
    pub port: u16,
    pub host_key: PublicKey,
    child: Option<Child>,
}

/// Host key algorithm: "ed25519" or "ecdsa".
impl Sshd {
    pub fn start(ip: &str) -> Sshd {
        Self::start_with(ip, "ed25519", None)
    }

    /// Starts sshd on `ip`, on `port` or a free one, with a fresh host key of `alg`.
    pub fn start_with(ip: &str, alg: &str, port: Option<u16>) -> Sshd {
        let ip: IpAddr = ip.parse().expect("ip");
        let port = port.unwrap_or_else(|| free_port(ip));
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let host_key = d.join(format!("ssh_host_{alg}_key"));
        keygen(&host_key, alg, "");
        std::fs::write(d.join("authorized_keys"), client_keys().authorized())
            .expect("authorized_keys");
        let config = format!(
            "ListenAddress {ip}:{port}\nHostKey {hk}\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             AllowTcpForwarding yes\nLogLevel DEBUG1\n",
            hk = host_key.display(),
            d = d.display(),
        );
        std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd (privilege separation dir)");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .spawn()
            .expect("/usr/sbin/sshd (apt-get install openssh-server)");
        let line =
            std::fs::read_to_string(format!("{}.pub", host_key.display())).expect("host .pub");
        let sshd = Sshd {
            host_key: parse_host_key(&line).expect("host key"),
            dir,
            ip,
            port,
            child: Some(child),
        };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((self.ip, self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A root target with the ed25519 client key and the host key pinned.
    pub fn target(&self, name: &str) -> Target {
        let mut t = Target::new(name, self.ip, "root");
        t.port = self.port;
        t.identity_file = Some(client_keys().ed25519.clone());
        t.host_key = Some(self.host_key.clone());
        t.timeouts = Timeouts {
            connect: Duration::from_secs(5),
            command: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(1),
            keepalive_max: 2,
        };
        t
    }

    /// Signals sshd and all its descendants (connections and the commands they run).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let pids = descendants(c.id());
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg("--")
                .args(pids.iter().map(u32::to_string))
                .stderr(std::process::Stdio::null())
                .status()
                .expect("kill");
        }
    }

    /// Kills sshd and every connection it serves; the port is free afterwards.
    pub fn stop(&mut self) {
        self.signal("CONT");
        self.signal("KILL");
        if let Some(mut c) = self.child.take() {
            c.wait().ok();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pid` and every process below it, from /proc/<pid>/stat.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the parenthesised command name: state, ppid, ...
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while let Some(&p) = found.get(i) {
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
}

fn free_port(ip: IpAddr) -> u16 {
    let l = TcpListener::bind((ip, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// known_hosts files for a test: an (empty) "user" file and kbs's own file.
pub fn known_hosts_files(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join("user_known_hosts"),
        dir.join("state").join("known_hosts"),
    )
}
