//! `kbs backup`: one etcd snapshot to this machine, or `--fetch` the scheduled ones.

use std::process::ExitCode;

use miette::IntoDiagnostic;

use crate::cli::RunArgs;
use crate::inventory::Inventory;
use crate::ops::{BackupOptions, Ops, backup};
use crate::state::StateDir;

pub fn run(args: &RunArgs, opts: BackupOptions) -> miette::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    let state = StateDir::resolve(&inventory, args.state_dir.as_deref());
    let ops = Ops::new(inventory, state, args.accept_new_host_keys, None)?;
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    let report = runtime.block_on(backup::backup(&ops, &opts))?;
    for p in &report.written {
        println!("{}", p.display());
    }
    for p in &report.removed {
        eprintln!("backup: removed {} (retention)", p.display());
    }
    if opts.fetch && report.written.is_empty() {
        eprintln!("backup: nothing new on the etcd hosts");
    }
    Ok(ExitCode::SUCCESS)
}
