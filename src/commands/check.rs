//! `kbs check`: the production-checklist audit (src/audit/), printed as a table or JSON.

use std::process::ExitCode;

use miette::IntoDiagnostic;

use crate::audit::{self, Options};
use crate::cli::{CheckOutput, RunArgs};
use crate::inventory::Inventory;
use crate::plan::ClusterPlan;
use crate::state::StateDir;

pub fn run(
    args: &RunArgs,
    verbose: u8,
    warn_days: u32,
    output: CheckOutput,
) -> miette::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    let state = StateDir::resolve(&inventory, args.state_dir.as_deref());
    if args.accept_new_host_keys {
        state.create()?;
    }
    let plan = ClusterPlan::new(inventory);
    let progress = super::apply::progress(args.log_format, verbose);
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    let report = runtime.block_on(audit::run(
        &plan,
        &state,
        &Options {
            warn_days,
            accept_new_host_keys: args.accept_new_host_keys,
            concurrency: args.concurrency,
        },
        &progress,
    ))?;
    match output {
        CheckOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).into_diagnostic()?
        ),
        CheckOutput::Table => {
            println!(
                "kbs check: {} ({} hosts)",
                plan.inventory.cluster.name,
                plan.hosts.len()
            );
            println!("{}", crate::phases::render_table(&report.checks, true));
            println!(
                "score: {}/{} passed, {}, {}",
                report.passed,
                report.total,
                crate::words::count(report.warned, "warning"),
                crate::words::count(report.failed, "failure")
            );
        }
    }
    Ok(ExitCode::from(report.exit_code()))
}
