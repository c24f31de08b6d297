//! kbs's integration tests: one binary, one module per area (matklad's "one test binary").
//! The pki modules check kbs's output with the real tools that consume it: openssl, etcd.

mod common;
mod etcd;
mod inventory_errors;
mod kubeadm_fields;
mod pki;
mod pki_common;
mod plan;
mod real_tools;
mod render;
mod security;
mod tls;
