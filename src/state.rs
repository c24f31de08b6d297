//! The local state directory: where kbs keeps what it made for a cluster (PKI, kubeconfigs).
//!
//! It holds private keys, so it is created 0700 and every secret is written 0600 from the first
//! byte (the mode is set when the temp file is created, not afterwards). Writes are atomic: a
//! temp file in the same directory is renamed over the target, so a crash never leaves half a key.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::inventory::Inventory;

/// File mode for private keys and kubeconfigs.
pub const SECRET_MODE: u32 = 0o600;
/// File mode for certificates and public keys.
pub const PUBLIC_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StateError {
    #[error("cannot create state directory {}: {source}", path.display())]
    #[diagnostic(help(
        "check that the parent directory exists and is writable, or pass --state-dir"
    ))]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    #[diagnostic(help("check free space and permissions of the state directory"))]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(help("check the permissions of the state directory"))]
    Read { path: PathBuf, source: io::Error },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
    /// The file already had these bytes; it was not touched (mtime kept).
    Unchanged,
}

/// A cluster's local state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `explicit` if given, else `.kbs/<cluster name>/` next to the inventory file.
    pub fn resolve(inventory: &Inventory, explicit: Option<&Path>) -> Self {
        match explicit {
            Some(dir) => Self::new(dir),
            None => {
                let base = inventory.path.parent().unwrap_or(Path::new("."));
                Self::new(base.join(".kbs").join(&inventory.cluster.name))
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state>/pki`: kubeadm's `/etc/kubernetes/pki` layout plus per-host leaves.
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// `<state>/kubeconfig`.
    pub fn kubeconfig_dir(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    /// Creates the state directory (and parents) and forces it to 0700.
    pub fn create(&self) -> Result<(), StateError> {
        create_private_dir(&self.root)?;
        // An existing directory keeps its mode on mkdir; a state dir readable by others leaks keys.
        fs::set_permissions(&self.root, Permissions::from_mode(DIR_MODE)).map_err(|source| {
            StateError::CreateDir {
                path: self.root.clone(),
                source,
            }
        })
    }

    /// Writes a private key or kubeconfig (0600). Identical content is left untouched.
    pub fn write_secret(&self, path: &Path, bytes: &[u8]) -> Result<Written, StateError> {
        write_atomic(path, bytes, SECRET_MODE)
    }

    /// Writes a certificate or public key (0644). Identical content is left untouched.
    pub fn write_public(&self, path: &Path, bytes: &[u8]) -> Result<Written, StateError> {
        write_atomic(path, bytes, PUBLIC_MODE)
    }
}

/// Reads a file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_private_dir(path: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|source| StateError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<Written, StateError> {
    let existed = match read_optional(path)? {
        Some(old) if old == bytes => {
            // Same bytes: still fix a mode someone loosened, but leave content and mtime alone.
            fix_mode(path, mode)?;
            return Ok(Written::Unchanged);
        }
        Some(_) => true,
        None => false,
    };
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kbs-tmp-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    // The umask may have narrowed the mode at creation; certificates must stay world-readable.
    fs::set_permissions(tmp.path(), Permissions::from_mode(mode)).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(if existed {
        Written::Replaced
    } else {
        Written::Created
    })
}

fn fix_mode(path: &Path, mode: u32) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let current = fs::metadata(path).map_err(err)?.permissions().mode() & 0o777;
    if current != mode {
        fs::set_permissions(path, Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(())
}

/// `20261122T031500Z`: sorts by time, safe in file names.
pub fn utc_stamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_dir_and_writes_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("a/b"));
        state.create().unwrap();
        assert_eq!(mode(state.root()), 0o700);

        let key = state.pki_dir().join("etcd/ca.key");
        assert_eq!(state.write_secret(&key, b"k").unwrap(), Written::Created);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&state.pki_dir().join("etcd")), 0o700);

        let crt = state.pki_dir().join("ca.crt");
        state.write_public(&crt, b"c").unwrap();
        assert_eq!(mode(&crt), 0o644);

        let before = fs::metadata(&key).unwrap().modified().unwrap();
        assert_eq!(state.write_secret(&key, b"k").unwrap(), Written::Unchanged);
        assert_eq!(fs::metadata(&key).unwrap().modified().unwrap(), before);
        assert_eq!(state.write_secret(&key, b"k2").unwrap(), Written::Replaced);
        assert_eq!(fs::read(&key).unwrap(), b"k2");
        // No temp files left behind.
        assert_eq!(
            fs::read_dir(state.pki_dir().join("etcd")).unwrap().count(),
            1
        );
    }
}
