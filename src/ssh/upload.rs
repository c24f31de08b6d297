//! File transfer over exec (`cat`), so sudo works and nothing but coreutils is needed.
//! Uploads are atomic (temp file + mv in the same directory) and skipped when the
//! remote file already has the content, mode and owner asked for.

use sha2::{Digest, Sha256};

use super::error::SshError;
use super::exec::Exec;
use super::session::Session;

/// Mode, owner and privilege of an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAttrs {
    pub mode: u32,
    /// `user` or `user:group`; `None` keeps whoever writes it (root under sudo).
    pub owner: Option<String>,
    /// Write as root (`sudo -n`) when the login user is not root.
    pub sudo: bool,
}

impl FileAttrs {
    pub fn new(mode: u32) -> Self {
        Self {
            mode,
            owner: None,
            sudo: false,
        }
    }
}

/// What is on the remote side now: checksum, octal mode, `user:group`.
struct Remote {
    sha256: String,
    mode: String,
    owner: String,
}

impl Session {
    /// Writes `content` to `path`; returns whether anything changed.
    pub async fn upload(
        &self,
        path: &str,
        content: &[u8],
        attrs: &FileAttrs,
    ) -> Result<bool, SshError> {
        let p = self.quote_path(path)?;
        let want_sha = hex::encode(Sha256::digest(content));
        let want_mode = format!("{:o}", attrs.mode);
        let owner = match &attrs.owner {
            Some(o) => Some(self.quote_arg(path, o)?),
            None => None,
        };
        let current = self.stat(path, &p, attrs.sudo).await?;
        let owner_ok = |r: &Remote| match &attrs.owner {
            None => true,
            Some(o) if o.contains(':') => &r.owner == o,
            Some(o) => r.owner.split(':').next() == Some(o.as_str()),
        };
        let chown = owner
            .map(|o| format!("chown {o} \"$t\"\n"))
            .unwrap_or_default();

        let script = match &current {
            Some(r) if r.sha256 == want_sha && r.mode == want_mode && owner_ok(r) => {
                return Ok(false);
            }
            // Same bytes: fix the attributes in place, no transfer.
            Some(r) if r.sha256 == want_sha => {
                format!("set -e\nt={p}\nchmod {want_mode} \"$t\"\n{chown}")
            }
            _ => format!(
                "set -e\np={p}\nd=$(dirname -- \"$p\")\nmkdir -p -- \"$d\"\n\
                 t=$(mktemp -- \"$d/.kbs-upload.XXXXXX\")\ntrap 'rm -f -- \"$t\"' EXIT\n\
                 cat > \"$t\"\n\
                 [ \"$(sha256sum < \"$t\" | cut -c1-64)\" = {want_sha} ] || \
                 {{ echo 'upload corrupted in transit' >&2; exit 1; }}\n\
                 chmod {want_mode} \"$t\"\n{chown}mv -f -- \"$t\" \"$p\"\ntrap - EXIT\n"
            ),
        };
        let out = self
            .exec(Exec::new(&script).sudo(attrs.sudo).stdin(content))
            .await?;
        if !out.success() {
            return Err(self.upload_error(path, &out.last_lines.join("; ")));
        }
        tracing::debug!(host = %self.host(), path, bytes = content.len(), "uploaded");
        Ok(true)
    }

    /// Reads a remote file.
    pub async fn download(&self, path: &str, sudo: bool) -> Result<Vec<u8>, SshError> {
        let p = self.quote_path(path)?;
        let out = self
            .run(Exec::new(&format!("cat -- {p}")).sudo(sudo))
            .await?;
        Ok(out.stdout)
    }

    /// Streams a remote file to `chunk` as it arrives, in constant memory, with at most `limit`
    /// for the whole transfer.
    pub async fn download_to(
        &self,
        path: &str,
        sudo: bool,
        limit: std::time::Duration,
        chunk: &crate::ssh::ChunkFn<'_>,
    ) -> Result<(), SshError> {
        let p = self.quote_path(path)?;
        self.run(
            Exec::new(&format!("cat -- {p}"))
                .sudo(sudo)
                .timeout(limit)
                .stdout_to(chunk),
        )
        .await
        .map(drop)
    }

    async fn stat(&self, path: &str, quoted: &str, sudo: bool) -> Result<Option<Remote>, SshError> {
        let script = format!(
            "if [ -f {quoted} ]; then sha256sum < {quoted} | cut -c1-64; stat -c '%a %U:%G' {quoted}; fi"
        );
        let out = self.run(Exec::new(&script).sudo(sudo)).await?;
        let text = out.stdout_lossy();
        let mut lines = text.lines();
        let (Some(sha), Some(stat)) = (lines.next(), lines.next()) else {
            return Ok(None);
        };
        let (mode, owner) = stat
            .split_once(' ')
            .ok_or_else(|| self.upload_error(path, &format!("unexpected stat output {stat:?}")))?;
        Ok(Some(Remote {
            sha256: sha.trim().to_string(),
            mode: mode.to_string(),
            owner: owner.trim().to_string(),
        }))
    }

    fn quote_path(&self, path: &str) -> Result<String, SshError> {
        if !path.starts_with('/') || path.ends_with('/') {
            return Err(self.upload_error(path, "the remote path must be an absolute file path"));
        }
        self.quote_arg(path, path)
    }

    fn quote_arg(&self, path: &str, arg: &str) -> Result<String, SshError> {
        if arg.contains('\n') {
            return Err(self.upload_error(path, "newlines are not allowed in paths or owners"));
        }
        shlex::try_quote(arg)
            .map(|q| q.into_owned())
            .map_err(|_| self.upload_error(path, "NUL bytes are not allowed"))
    }

    fn upload_error(&self, path: &str, reason: &str) -> SshError {
        SshError::Upload {
            host: self.host().to_string(),
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }
}
