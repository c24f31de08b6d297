//! What to connect to. Built by the inventory module; knows nothing about it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use russh::keys::PublicKey;

/// One host to reach over SSH.
#[derive(Debug, Clone)]
pub struct Target {
    /// Inventory name, used in every message about this host.
    pub name: String,
    /// Address as seen from kbs, or from the jump host when `jump` is set.
    pub address: IpAddr,
    pub port: u16,
    pub user: String,
    /// Private key file; the agent and ~/.ssh/id_* are tried as well.
    pub identity_file: Option<PathBuf>,
    /// Expected host key; when set, known_hosts files are not consulted.
    pub host_key: Option<PublicKey>,
    /// ProxyJump-style bastion, with its own identity and pinned key.
    pub jump: Option<Box<Target>>,
    pub timeouts: Timeouts,
}

impl Target {
    pub fn new(name: impl Into<String>, address: IpAddr, user: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            address,
            port: 22,
            user: user.into(),
            identity_file: None,
            host_key: None,
            jump: None,
            timeouts: Timeouts::default(),
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// The name OpenSSH uses for this host in known_hosts: `addr` or `[addr]:port`.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.address.to_string()
        } else {
            format!("[{}]:{}", self.address, self.port)
        }
    }

    pub fn is_root(&self) -> bool {
        self.user == "root"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus SSH handshake and authentication.
    pub connect: Duration,
    /// Default limit for one command; `Exec::timeout` overrides it.
    pub command: Duration,
    /// Keepalive probe period when the connection is idle.
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the connection is declared dead.
    pub keepalive_max: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(10),
            keepalive_max: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_name_uses_brackets_off_port_22() {
        let mut t = Target::new("n", "10.0.0.1".parse().expect("ip"), "root");
        assert_eq!(t.known_hosts_name(), "10.0.0.1");
        t.port = 2222;
        assert_eq!(t.known_hosts_name(), "[10.0.0.1]:2222");
    }
}
