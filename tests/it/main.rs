//! kbs's integration tests: one binary, one module per area (matklad's "one test binary").
//! Everything here talks to real things: OpenSSH `sshd` on loopback (sshd.rs), the Docker lab
//! (lab.rs), openssl, etcd, haproxy, keepalived and systemd-analyze.

mod addons;
mod apply;
mod bundle;
mod check;
mod cni;
mod common;
mod inventory_errors;
mod keys;
mod kubeadm_fields;
mod lab;
mod lifecycle;
mod ops;
mod pki;
mod pki_common;
mod plan;
mod real_tools;
mod render;
mod scale;
mod security;
mod ssh;
mod ssh_lab;
mod sshd;
mod tls;
mod upgrade;
