//! `kbs status`: prints the cluster's state; the exit code is the verdict (0/1/2).

use std::process::ExitCode;

use miette::IntoDiagnostic;

use crate::cli::{CheckOutput, RunArgs};
use crate::ops::status;

pub fn run(args: &RunArgs, verbose: u8, output: CheckOutput) -> miette::Result<ExitCode> {
    let (cx, runtime) = super::open_ctx(
        args,
        super::Access::Read {
            timeouts: Some(status::STATUS_TIMEOUTS),
            verbose,
        },
    )?;
    let s = runtime.block_on(status::status(&cx));
    match output {
        CheckOutput::Json => println!("{}", serde_json::to_string_pretty(&s).into_diagnostic()?),
        CheckOutput::Table => print!("{}", status::render_table(&s)),
    }
    Ok(ExitCode::from(s.health.exit_code()))
}
