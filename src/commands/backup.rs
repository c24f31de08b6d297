//! `kbs backup`: one etcd snapshot to this machine, or `--fetch` the scheduled ones.

use std::process::ExitCode;

use crate::cli::RunArgs;
use crate::ops::{BackupOptions, backup};

pub fn run(args: &RunArgs, verbose: u8, opts: BackupOptions) -> miette::Result<ExitCode> {
    let (cx, runtime) = super::open_ctx(
        args,
        super::Access::Read {
            timeouts: None,
            verbose,
        },
    )?;
    let report = runtime.block_on(backup::backup(&cx, &opts))?;
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
