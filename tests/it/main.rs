//! kbs's integration tests: one binary, one module per area (matklad's "one test binary").

mod common;
mod kubeadm_fields;
mod real_tools;
mod render;
