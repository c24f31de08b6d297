use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kbs::cli::Cli::parse();
    // Honour COLUMNS so error reports wrap where the caller wants (and not at all in tests).
    if let Some(width) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        let _ = miette::set_hook(Box::new(move |_| {
            Box::new(miette::MietteHandlerOpts::new().width(width).build())
        }));
    }
    match kbs::commands::run(cli) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}
