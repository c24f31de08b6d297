//! One module per subcommand. Each returns the process exit code, or an error that main reports.

mod certs;
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
    }
}
