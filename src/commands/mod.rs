//! One module per subcommand. Each returns the process exit code, or an error that main reports.

mod apply;
mod certs;
mod check;
mod exec;
mod init;
mod plan;
mod render;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

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
        Command::Check {
            run,
            warn_days,
            output,
        } => check::run(&run, cli.verbose, warn_days, output),
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
