//! `SshError`: every variant names the host and says what to do next.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::exec::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "{host}: cannot connect to {addr}: {source} (is the host up and sshd listening on that port?)"
    )]
    Unreachable {
        host: String,
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error(
        "{host}: no SSH answer from {addr} within {after:?} (host down, firewall, or wrong address?)"
    )]
    ConnectTimeout {
        host: String,
        addr: SocketAddr,
        after: Duration,
    },

    #[error("{host}: cannot reach it through jump host {via}: {source}")]
    Jump {
        host: String,
        via: String,
        source: Arc<SshError>,
    },

    #[error(
        "{host}: unknown {short} host key {fingerprint} at {addr}.\n  \
         Check it on the host with `ssh-keygen -lf /etc/ssh/ssh_host_{short}_key.pub`, then re-run \
         with --accept-new-host-keys to record it in {kbs_file}, or pin it in the inventory."
    )]
    HostKeyUnknown {
        host: String,
        addr: String,
        short: String,
        fingerprint: String,
        kbs_file: PathBuf,
    },

    #[error(
        "{host}: HOST KEY CHANGED at {addr}: it presented {presented}, but {expected} is recorded \
         ({source_of_expected}). Someone may be intercepting the connection, or the host was \
         reinstalled. Refusing to connect. If the change is legitimate, remove the old entry with \
         `ssh-keygen -R '{addr}' -f <file>` or update the pinned key."
    )]
    HostKeyChanged {
        host: String,
        addr: String,
        presented: String,
        expected: String,
        source_of_expected: String,
    },

    #[error("{host}: the server offered a host certificate; kbs does not verify SSH certificates")]
    HostCertificate { host: String },

    #[error("{host}: cannot use known_hosts file {}: {reason}", path.display())]
    KnownHosts {
        host: String,
        path: PathBuf,
        reason: String,
    },

    #[error("{host}: authentication as {user} failed; tried: {}. Add one of these public keys to ~{user}/.ssh/authorized_keys, or load the right key into ssh-agent", tried.join(", "))]
    Auth {
        host: String,
        user: String,
        tried: Vec<String>,
    },

    #[error(
        "{host}: sudo needs a password for {user}; kbs requires passwordless sudo (e.g. `{user} ALL=(ALL) NOPASSWD: ALL` in /etc/sudoers.d/kbs)"
    )]
    SudoPassword { host: String, user: String },

    #[error("{host}: `{command}` failed with {status}{}", tail(last_lines))]
    CommandFailed {
        host: String,
        command: String,
        status: ExitStatus,
        last_lines: Vec<String>,
    },

    #[error(
        "{host}: `{command}` did not finish within {after:?}{}",
        tail(last_lines)
    )]
    CommandTimeout {
        host: String,
        command: String,
        after: Duration,
        last_lines: Vec<String>,
    },

    #[error(
        "{host}: connection lost while running `{command}` (host down or network cut; keepalive gave up){}",
        tail(last_lines)
    )]
    ConnectionLost {
        host: String,
        command: String,
        last_lines: Vec<String>,
    },

    #[error("{host}: cannot run the command: {reason}")]
    BadCommand { host: String, reason: String },

    #[error("{host}: {what} failed: {source} (connection lost?)")]
    Ssh {
        host: String,
        what: &'static str,
        source: russh::Error,
    },

    #[error("{host}: upload to {path} failed: {reason}")]
    Upload {
        host: String,
        path: String,
        reason: String,
    },
}

impl SshError {
    pub fn host(&self) -> &str {
        match self {
            Self::Unreachable { host, .. }
            | Self::ConnectTimeout { host, .. }
            | Self::Jump { host, .. }
            | Self::HostKeyUnknown { host, .. }
            | Self::HostKeyChanged { host, .. }
            | Self::HostCertificate { host }
            | Self::KnownHosts { host, .. }
            | Self::Auth { host, .. }
            | Self::SudoPassword { host, .. }
            | Self::CommandFailed { host, .. }
            | Self::CommandTimeout { host, .. }
            | Self::ConnectionLost { host, .. }
            | Self::BadCommand { host, .. }
            | Self::Ssh { host, .. }
            | Self::Upload { host, .. } => host,
        }
    }

    /// Output lines the host printed last, when the error came from a command.
    pub fn last_lines(&self) -> &[String] {
        match self {
            Self::CommandFailed { last_lines, .. }
            | Self::CommandTimeout { last_lines, .. }
            | Self::ConnectionLost { last_lines, .. } => last_lines,
            _ => &[],
        }
    }
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut s = String::from("; last output:");
    for l in lines {
        s.push_str("\n    ");
        s.push_str(l);
    }
    s
}
