//! Host key verification, OpenSSH-compatible and strict: pinned key, then the user's
//! known_hosts (read only), then kbs's own known_hosts (the only file kbs writes).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::known_hosts::{known_host_keys_path, learn_known_hosts_path};
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};

use super::error::SshError;
use super::target::Target;

/// Where recorded host keys live and whether unknown hosts may be learned.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    /// The user's OpenSSH file (usually ~/.ssh/known_hosts); never written.
    pub user_file: Option<PathBuf>,
    /// kbs's own file, OpenSSH format; new keys are appended here.
    pub kbs_file: PathBuf,
    /// `--accept-new-host-keys`: record keys of hosts that have no entry at all.
    pub accept_new: bool,
    /// Serialises appends from concurrent connections.
    write_lock: Arc<Mutex<()>>,
}

impl KnownHosts {
    /// Reads `~/.ssh/known_hosts` and keeps kbs's own file in `state_dir/known_hosts`.
    pub fn new(state_dir: &Path, accept_new: bool) -> Self {
        let user_file = std::env::home_dir().map(|h| h.join(".ssh").join("known_hosts"));
        Self::with_files(user_file, state_dir.join("known_hosts"), accept_new)
    }

    pub fn with_files(user_file: Option<PathBuf>, kbs_file: PathBuf, accept_new: bool) -> Self {
        Self {
            user_file,
            kbs_file,
            accept_new,
            write_lock: Arc::default(),
        }
    }

    /// Accepts the key or explains, with fingerprints, why not.
    pub(crate) fn verify(&self, target: &Target, key: &PublicKey) -> Result<(), SshError> {
        let (host, known_name) = (target.name.as_str(), target.known_hosts_name());
        let (addr, port) = (target.address.to_string(), target.port);
        let presented = fingerprint(key);
        if let Some(pin) = &target.host_key {
            return if pin == key {
                Ok(())
            } else {
                Err(SshError::HostKeyChanged {
                    host: host.into(),
                    addr: known_name,
                    presented,
                    expected: fingerprint(pin),
                    source_of_expected: "pinned in the inventory".into(),
                })
            };
        }

        let files = self.user_file.iter().chain(std::iter::once(&self.kbs_file));
        let mut recorded = Vec::new();
        for path in files {
            // known_host_keys_path adds the `[addr]:port` form itself.
            let keys =
                known_host_keys_path(&addr, port, path).map_err(|e| SshError::KnownHosts {
                    host: host.into(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            for (line, k) in keys {
                if &k == key {
                    return Ok(());
                }
                recorded.push(format!("{} in {}:{line}", fingerprint(&k), path.display()));
            }
        }
        // Any entry for this host that does not match — same algorithm or not — is a
        // change: learning a key of another algorithm would be a downgrade hole.
        if !recorded.is_empty() {
            return Err(SshError::HostKeyChanged {
                host: host.into(),
                addr: known_name,
                presented,
                expected: recorded.join(", "),
                source_of_expected: "known_hosts".into(),
            });
        }
        if !self.accept_new {
            return Err(SshError::HostKeyUnknown {
                host: host.into(),
                addr: known_name,
                short: short_algorithm(key),
                fingerprint: presented,
                kbs_file: self.kbs_file.clone(),
            });
        }
        self.learn(host, &addr, port, key)
    }

    fn learn(&self, host: &str, addr: &str, port: u16, key: &PublicKey) -> Result<(), SshError> {
        let fail = |reason: String| SshError::KnownHosts {
            host: host.into(),
            path: self.kbs_file.clone(),
            reason,
        };
        let _guard = self
            .write_lock
            .lock()
            .map_err(|_| fail("lock poisoned".into()))?;
        // Another connection to the same host may have learned it meanwhile.
        let again =
            known_host_keys_path(addr, port, &self.kbs_file).map_err(|e| fail(e.to_string()))?;
        if again.iter().any(|(_, k)| k == key) {
            return Ok(());
        }
        if let Some(dir) = self.kbs_file.parent() {
            create_private_dir(dir).map_err(|e| fail(e.to_string()))?;
        }
        learn_known_hosts_path(addr, port, key, &self.kbs_file).map_err(|e| fail(e.to_string()))?;
        tracing::info!(host, fingerprint = %fingerprint(key), "recorded new host key");
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// `SHA256:…`, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The file-name part OpenSSH uses for host keys: ed25519, ecdsa, rsa.
fn short_algorithm(key: &PublicKey) -> String {
    let alg = key.algorithm();
    let s = alg.as_str();
    if s.starts_with("ecdsa") {
        "ecdsa".into()
    } else {
        s.trim_start_matches("ssh-").into()
    }
}

/// russh's connection handler: only checks the server's key.
pub(crate) struct Verifier {
    pub target: Target,
    pub known_hosts: KnownHosts,
}

#[derive(Debug)]
pub(crate) enum HandlerError {
    Ssh(russh::Error),
    HostKey(SshError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        Self::Ssh(e)
    }
}

impl client::Handler for Verifier {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return Err(HandlerError::HostKey(SshError::HostCertificate {
                    host: self.target.name.clone(),
                }));
            }
        };
        self.known_hosts
            .verify(&self.target, key)
            .map_err(HandlerError::HostKey)?;
        Ok(true)
    }
}
