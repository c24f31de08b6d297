//! One module per subcommand. Each returns the process exit code, or an error that main reports.

mod apply;
mod backup;
mod certs;
mod exec;
mod init;
mod plan;
mod render;
mod restore;
mod status;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::ops as kbs_ops;

pub fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Plan { inventory, output } => plan::run(&inventory, output),
        Command::Render {
            inventory,
            out,
            templates,
        } => render::run(&inventory, &out, templates.as_deref()),
        Command::Init { hosts, name, out } => init::run(&hosts, &name, out.as_deref()),
        Command::Certs { command } => certs::run(command),
        Command::Status { run, output } => status::run(&run, output),
        Command::Backup {
            run,
            out,
            keep,
            encrypt_to,
            fetch,
        } => backup::run(
            &run,
            kbs_ops::BackupOptions {
                out,
                keep,
                encrypt_to,
                fetch,
            },
        ),
        Command::Restore {
            run,
            snapshot,
            identity,
            yes,
        } => restore::run(
            &run,
            kbs_ops::RestoreOptions {
                snapshot,
                identity,
                yes,
            },
        ),
        Command::Apply {
            run,
            dry_run,
            skip_checks,
            templates,
        } => apply::run(
            &run,
            cli.verbose,
            apply::Scope::Cluster { dry_run, templates },
            skip_checks,
        ),
        Command::AddNode {
            run,
            hosts,
            skip_checks,
        } => apply::run(&run, cli.verbose, apply::Scope::Hosts(hosts), skip_checks),
        Command::Exec {
            run,
            hosts,
            role,
            sudo,
            command,
        } => exec::run(&run, cli.verbose, &hosts, role, sudo, &command.join(" ")),
    }
}
