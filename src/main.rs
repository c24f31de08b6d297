use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when stdout is a closed pipe (`kbs plan ... | head`)
    // instead of panicking in println!.
    // SAFETY: called first, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    raise_open_file_limit();
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

/// A run keeps one SSH connection per host (a socket each), so 1,000 hosts need more than the
/// usual soft limit of 1,024 descriptors: raise it to the hard limit, as OpenSSH's and Ansible's
/// users do by hand. Failing to raise it is not fatal; a run that then lacks descriptors says so.
fn raise_open_file_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}
