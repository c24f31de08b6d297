//! `kbs status`: prints the cluster's state; the exit code is the verdict (0/1/2).

use std::process::ExitCode;

use miette::IntoDiagnostic;

use crate::cli::{CheckOutput, RunArgs};
use crate::inventory::Inventory;
use crate::ops::{Ops, status};
use crate::state::StateDir;

pub fn run(args: &RunArgs, output: CheckOutput) -> miette::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    let state = StateDir::resolve(&inventory, args.state_dir.as_deref());
    let ops = Ops::new(
        inventory,
        state,
        args.accept_new_host_keys,
        Some(status::STATUS_TIMEOUTS),
    )?;
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    let s = runtime.block_on(status::status(&ops));
    match output {
        CheckOutput::Json => println!("{}", serde_json::to_string_pretty(&s).into_diagnostic()?),
        CheckOutput::Table => print!("{}", status::render_table(&s)),
    }
    Ok(ExitCode::from(s.health.exit_code()))
}
