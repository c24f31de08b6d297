//! Cluster secrets other than the PKI, made once and kept in the state directory: today the key
//! that encrypts Secrets at rest. Losing it makes every Secret in etcd unreadable, so an existing
//! key is never replaced, and a damaged one is an error rather than a reason to make a new one.

use std::fmt;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::state::{StateDir, StateError, read_optional};

/// Shown where the key is only known at apply time (`RenderInputs::default`).
pub const ENCRYPTION_KEY_PLACEHOLDER: &str = "${KBS_ENCRYPTION_KEY}";

/// Bytes of a `secretbox` key (XSalsa20-Poly1305).
const KEY_LEN: usize = 32;

/// The `secretbox` key of the API servers' EncryptionConfiguration, base64 as the file takes it.
/// `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey(String);

impl EncryptionKey {
    /// Checks that `b64` is standard base64 of 32 bytes.
    pub fn from_base64(b64: &str) -> Result<Self, String> {
        match B64.decode(b64.trim()) {
            Ok(bytes) if bytes.len() == KEY_LEN => Ok(Self(b64.trim().to_string())),
            Ok(bytes) => Err(format!("{} bytes, expected {KEY_LEN}", bytes.len())),
            Err(e) => Err(format!("not base64: {e}")),
        }
    }

    pub fn placeholder() -> Self {
        Self(ENCRYPTION_KEY_PLACEHOLDER.to_string())
    }

    pub fn as_base64(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SecretsError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] StateError),
    #[error("the encryption key {} is damaged: {reason}", path.display())]
    #[diagnostic(help(
        "restore it from a backup of the state directory: Secrets encrypted with the old key cannot \
         be read without it. Only on a cluster that never started may you delete it to make a new one"
    ))]
    BadKey { path: PathBuf, reason: String },
}

/// `<state>/secrets/encryption-key`.
pub fn encryption_key_path(state: &StateDir) -> PathBuf {
    state.root().join("secrets").join("encryption-key")
}

/// The cluster's encryption-at-rest key: read from the state directory, or made (rand's
/// thread-local CSPRNG, seeded from the OS) and written 0600 on first use. Apply calls this
/// before rendering and passes the key in `RenderInputs::encryption_key`, so every control
/// plane gets the same key.
pub fn ensure_encryption_key(state: &StateDir) -> Result<EncryptionKey, SecretsError> {
    let path = encryption_key_path(state);
    if let Some(bytes) = read_optional(&path)? {
        let text = String::from_utf8_lossy(&bytes);
        return EncryptionKey::from_base64(&text).map_err(|reason| SecretsError::BadKey {
            path: path.clone(),
            reason,
        });
    }
    state.create()?;
    let key: [u8; KEY_LEN] = rand::random();
    let b64 = B64.encode(key);
    state.write_secret(&path, format!("{b64}\n").as_bytes())?;
    Ok(EncryptionKey(b64))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_made_once_0600_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("s"));
        let first = ensure_encryption_key(&state).unwrap();
        let path = encryption_key_path(&state);
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(B64.decode(first.as_base64()).unwrap().len(), KEY_LEN);
        assert_eq!(ensure_encryption_key(&state).unwrap(), first);
        assert!(!format!("{first:?}").contains(first.as_base64()));
    }

    #[test]
    fn a_damaged_key_is_an_error_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let path = encryption_key_path(&state);
        state.write_secret(&path, b"c2hvcnQ=\n").unwrap();
        assert!(matches!(
            ensure_encryption_key(&state),
            Err(SecretsError::BadKey { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"c2hvcnQ=\n");
    }
}
