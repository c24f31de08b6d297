//! `kbs restore`: etcd disaster recovery from a snapshot (docs/operations.md).

use std::process::ExitCode;

use miette::IntoDiagnostic;

use crate::cli::RunArgs;
use crate::inventory::Inventory;
use crate::ops::{Ops, RestoreOptions, restore};
use crate::state::StateDir;

pub fn run(args: &RunArgs, opts: RestoreOptions) -> miette::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    let state = StateDir::resolve(&inventory, args.state_dir.as_deref());
    let ops = Ops::new(inventory, state, args.accept_new_host_keys, None)?;
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    let report = runtime.block_on(restore::restore(&ops, &opts))?;
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
