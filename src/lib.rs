//! kbs: turns 1, 2 or 3+ Linux hosts into a highly available Kubernetes cluster over SSH.
//!
//! Data flows through the modules in this order:
//! inventory → plan (topology) → pki → render → ssh/exec → phases → cli.

pub mod ssh;
