//! Client keys made once per test binary with ssh-keygen, plus a real ssh-agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PASSPHRASE: &str = "correct horse battery";

pub struct ClientKeys {
    pub ed25519: PathBuf,
    pub ecdsa: PathBuf,
    pub rsa: PathBuf,
    /// ed25519 protected by `PASSPHRASE`.
    pub protected: PathBuf,
    /// Valid key that no sshd authorizes.
    pub stranger: PathBuf,
}

impl ClientKeys {
    /// Public keys every test sshd authorizes.
    pub fn authorized(&self) -> String {
        [&self.ed25519, &self.ecdsa, &self.rsa, &self.protected]
            .iter()
            .map(|k| std::fs::read_to_string(pub_of(k)).expect("read .pub"))
            .collect()
    }
}

pub fn pub_of(key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", key.display()))
}

pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let mut args = vec!["-q", "-t", kind, "-N", passphrase, "-C", "kbs-test", "-f"];
    if kind == "rsa" {
        args.splice(0..0, ["-b", "2048"]);
    }
    let st = Command::new("ssh-keygen")
        .args(&args)
        .arg(path)
        .status()
        .expect("ssh-keygen (install openssh-client)");
    assert!(st.success(), "ssh-keygen -t {kind} failed");
}

pub fn client_keys() -> &'static ClientKeys {
    static KEYS: OnceLock<ClientKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        // Lives as long as the test process.
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let k = |n: &str| dir.join(n);
        keygen(&k("id_ed25519"), "ed25519", "");
        keygen(&k("id_ecdsa"), "ecdsa", "");
        keygen(&k("id_rsa"), "rsa", "");
        keygen(&k("id_protected"), "ed25519", PASSPHRASE);
        keygen(&k("id_stranger"), "ed25519", "");
        ClientKeys {
            ed25519: k("id_ed25519"),
            ecdsa: k("id_ecdsa"),
            rsa: k("id_rsa"),
            protected: k("id_protected"),
            stranger: k("id_stranger"),
        }
    })
}

/// A real `ssh-agent -D` holding the passphrase-protected key; killed on drop.
pub struct Agent {
    pub socket: PathBuf,
    child: Child,
}

impl Agent {
    pub fn start_with_protected_key() -> Agent {
        let keys = client_keys();
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // ssh-add reads the passphrase from SSH_ASKPASS when forced to.
        let askpass = dir.join("askpass.sh");
        std::fs::write(&askpass, format!("#!/bin/sh\necho '{PASSPHRASE}'\n")).expect("askpass");
        Command::new("chmod")
            .arg("700")
            .arg(&askpass)
            .status()
            .expect("chmod");
        let st = Command::new("ssh-add")
            .arg(&keys.protected)
            .env("SSH_AUTH_SOCK", &socket)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("ssh-add");
        assert!(st.success(), "ssh-add of the protected key failed");
        Agent { socket, child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
