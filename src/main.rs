use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when stdout is a closed pipe (`kbs plan ... | head`)
    // instead of panicking in println!.
    // SAFETY: called first, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
            kbs::commands::print_error(report);
            ExitCode::FAILURE
        }
    }
}
