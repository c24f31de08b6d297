//! One integration-test binary (links once). Everything here talks to real OpenSSH:
//! `sshd` on loopback addresses (sshd.rs), and the Docker lab (lab.rs) when Docker exists.

mod keys;
mod lab;
mod ssh;
mod sshd;
