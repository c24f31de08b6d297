//! `kbs reset`: tear the cluster down on every host, after confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use miette::miette;

use crate::cli::RunArgs;
use crate::inventory::Inventory;

pub fn run(args: &RunArgs, verbose: u8, yes: bool) -> miette::Result<ExitCode> {
    let name = Inventory::load(&args.inventory)?.cluster.name;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(miette!(
                help = "pass --yes to reset without a question",
                "refusing to reset cluster `{name}`: stdin is not a terminal to confirm on"
            ));
        }
        eprint!(
            "This stops Kubernetes and etcd on every host of `{name}` and deletes their data.\nType the cluster name to confirm: "
        );
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| miette!("cannot read the confirmation: {e}"))?;
        if line.trim() != name {
            return Err(miette!("not confirmed; nothing was changed"));
        }
    }
    let (cx, runtime) = super::open_ctx(args, super::Access::Change { verbose })?;
    let report = runtime.block_on(crate::ops::reset::run(&cx))?;
    for h in &report.reset {
        println!("{h}: reset");
    }
    for (h, why) in &report.failed {
        println!("{h}: NOT reset: {why}");
    }
    println!(
        "The state dir {} (CAs, keys, kubeconfigs) is kept; `kbs apply` builds the cluster again.",
        cx.state.root().display()
    );
    if report.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("Run `kbs reset` again once those hosts answer (it skips what is already done).");
        Ok(ExitCode::FAILURE)
    }
}
