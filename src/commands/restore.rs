//! `kbs restore`: etcd disaster recovery from a snapshot (docs/operations.md).

use std::process::ExitCode;

use crate::cli::RunArgs;
use crate::ops::{RestoreOptions, restore};

pub fn run(args: &RunArgs, opts: RestoreOptions) -> miette::Result<ExitCode> {
    // Restore changes every etcd member: it holds the state dir's lock like apply.
    let (cx, runtime) = super::open_ctx(args, super::Access::Change { verbose: 0 })?;
    let report = runtime.block_on(restore::restore(&cx, &opts))?;
    println!(
        "restored revision {} on every etcd member (cluster token {})",
        report.revision, report.token
    );
    println!("old data dirs kept (remove them once the cluster is verified):");
    for k in &report.kept {
        println!("  {k}");
    }
    Ok(ExitCode::SUCCESS)
}
