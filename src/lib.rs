//! kbs: turns 1, 2 or 3+ Linux hosts into a highly available Kubernetes cluster over SSH.
//!
//! Data flows through the modules in this order:
//! versions (upstream facts, data/versions.toml) → inventory → plan (topology) → pki → render →
//! artifacts (bundles) → ssh/exec → context (the one context of every run against a cluster) →
//! phases (apply) → ops (day two) → commands → cli.

pub mod inventory;
pub mod plan;
pub mod versions;
pub mod words;

pub mod pki;
pub mod secrets;
pub mod state;

pub mod render;

pub mod artifacts;
pub mod facts;
pub mod ssh;

pub mod context;
pub mod phases;

pub mod audit;
pub mod ops;

pub mod cli;
pub mod commands;
