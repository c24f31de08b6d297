//! `kbs remove-node`.

use std::process::ExitCode;

use miette::miette;

use crate::cli::RunArgs;
use crate::ops::remove::{RemoveOptions, Verdict, verdict};

pub fn run(args: &RunArgs, verbose: u8, host: String, force: bool) -> miette::Result<ExitCode> {
    let (cx, runtime) = super::open_ctx(args, super::Access::Change { verbose })?;
    let after = cx.plan.without_host(&host);
    match verdict(&cx.plan, &host) {
        Verdict::Allowed => {}
        Verdict::Refused(why) => return Err(miette!("cannot remove {host}: {why}")),
        Verdict::NeedsForce(why) if !force => {
            let t = crate::ops::describe_tolerance(&after.tolerance).join("; ");
            return Err(miette!(
                help = "add a host first (then remove this one), or pass --force to accept it",
                "refusing to remove {host}: {why}; afterwards the cluster {t}. Nothing was changed"
            ));
        }
        Verdict::NeedsForce(why) => eprintln!("warning: {why} (--force)"),
    }
    let opts = RemoveOptions { host, force };
    let report = runtime.block_on(crate::ops::remove::run(cx, &args.inventory, &opts))?;
    for d in &report.done {
        println!("  - {d}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!("Next:");
    for n in &report.next_steps {
        println!("  - {n}");
    }
    Ok(ExitCode::SUCCESS)
}
