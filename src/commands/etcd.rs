//! `kbs etcd defrag`.

use std::process::ExitCode;

use crate::cli::RunArgs;

pub fn defrag(args: &RunArgs, verbose: u8, dry_run: bool) -> miette::Result<ExitCode> {
    let (mut cx, runtime) = super::open_ctx(args, super::Access::Change { verbose })?;
    cx.opts.dry_run = dry_run;
    let report = runtime.block_on(crate::ops::defrag::run(&cx))?;
    let hosts: Vec<&str> = cx.plan.hosts.iter().map(|h| h.name.as_str()).collect();
    super::print_changes(&cx.changes(), &hosts, if dry_run { "would" } else { "-" });
    for line in report.members.iter().chain(&report.alarms) {
        println!("{line}");
    }
    if dry_run {
        println!("dry run: nothing was changed");
    }
    Ok(ExitCode::SUCCESS)
}
