//! kbs's integration tests: one binary, one module per area (matklad's "one test binary").

mod common;
mod inventory_errors;
mod kubeadm_fields;
mod plan;
mod real_tools;
mod render;
