use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kbs::cli::Cli::parse();
    match kbs::commands::run(cli) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}
