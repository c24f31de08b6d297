//! `kbs upgrade`.

use std::process::ExitCode;

use crate::cli::RunArgs;
use crate::ops::upgrade::{self, Action, UpgradePlan};

pub fn run(
    args: &RunArgs,
    verbose: u8,
    dry_run: bool,
    max_unavailable: usize,
    force: bool,
) -> miette::Result<ExitCode> {
    let (mut cx, runtime) = super::open_ctx(args, super::Access::Change { verbose })?;
    cx.opts.dry_run = dry_run;
    let (plan, bundle) = runtime.block_on(upgrade::plan(&mut cx, max_unavailable, force))?;
    print_plan(&plan);
    for f in &plan.forced {
        eprintln!("warning: --force: upgrading although the cluster serves {f}");
    }
    if plan.needed().next().is_none() {
        println!("no changes");
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        println!("dry run: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    let report = runtime.block_on(upgrade::run(&cx, plan, bundle))?;
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    let hosts: Vec<&str> = cx.plan.hosts.iter().map(|h| h.name.as_str()).collect();
    super::print_changes(&report.changes, &hosts, "-");
    println!(
        "upgraded to {}: {} on {}; every Node and API server reports {}",
        report.plan.target,
        crate::words::count(report.changes.len(), "change"),
        crate::words::count(crate::context::hosts_changed(&report.changes), "host"),
        report.plan.target
    );
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &UpgradePlan) {
    println!(
        "Upgrade plan: the cluster runs {}, the inventory asks for {}",
        plan.cluster, plan.target
    );
    for (i, step) in plan.needed().enumerate() {
        println!("  {:>2}. {step}", i + 1);
    }
    let mut already = Vec::new();
    let etcd = already_done(plan, true);
    if !etcd.is_empty() {
        already.push(format!("the bundle's etcd on {}", etcd.join(", ")));
    }
    let nodes = already_done(plan, false);
    if !nodes.is_empty() {
        already.push(format!(
            "Kubernetes {} on {}",
            plan.target,
            nodes.join(", ")
        ));
    }
    if !already.is_empty() {
        println!("  already done: {}", already.join("; "));
    }
}

/// Hosts whose etcd (or Kubernetes) step is already done.
fn already_done(plan: &UpgradePlan, etcd: bool) -> Vec<&str> {
    plan.steps
        .iter()
        .filter(|s| !s.needed && (s.action == Action::Etcd) == etcd)
        .map(|s| s.host.as_str())
        .collect()
}
