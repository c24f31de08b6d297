//! One module per subcommand. Each returns the process exit code, or an error that main reports.

mod apply;
mod backup;
mod bundle;
mod certs;
mod check;
mod etcd;
mod exec;
mod init;
mod plan;
mod remove;
mod render;
mod reset;
mod restore;
mod status;
mod upgrade;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::ops as kbs_ops;

pub fn run(cli: Cli) -> miette::Result<ExitCode> {
    crate::inventory::allow_unsupported_version(cli.allow_unsupported_version);
    match cli.command {
        Command::Bundle { inventory, out } => bundle::run(&inventory, out.as_deref()),
        Command::Plan { inventory, output } => plan::run(&inventory, output),
        Command::Render {
            inventory,
            out,
            templates,
        } => render::run(&inventory, &out, templates.as_deref()),
        Command::Init { hosts, name, out } => init::run(&hosts, &name, out.as_deref()),
        Command::Certs { command } => certs::run(command, cli.verbose),
        Command::Etcd {
            command: crate::cli::EtcdCommand::Defrag { run, dry_run },
        } => etcd::defrag(&run, cli.verbose, dry_run),
        Command::Status { run, output } => status::run(&run, cli.verbose, output),
        Command::Backup {
            run,
            out,
            keep,
            encrypt_to,
            fetch,
        } => backup::run(
            &run,
            cli.verbose,
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
        Command::RemoveNode { run, host, force } => remove::run(&run, cli.verbose, host, force),
        Command::Reset { run, yes } => reset::run(&run, cli.verbose, yes),
        Command::Upgrade {
            run,
            dry_run,
            max_unavailable,
            force,
        } => upgrade::run(
            &run,
            cli.verbose,
            dry_run,
            usize::from(max_unavailable),
            force,
        ),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "kbs", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => man(out.as_deref()),
        Command::Exec {
            run,
            hosts,
            role,
            sudo,
            command,
        } => exec::run(&run, cli.verbose, &hosts, role, sudo, &command.join(" ")),
    }
}

/// kbs(1) on stdout, or every page into `out`.
fn man(out: Option<&std::path::Path>) -> miette::Result<ExitCode> {
    use miette::IntoDiagnostic;
    let cmd = <Cli as clap::CommandFactory>::command();
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).into_diagnostic()?;
            clap_mangen::generate_to(cmd, dir).into_diagnostic()?;
            println!("man pages written to {}", dir.display());
        }
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .into_diagnostic()?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a failed command's error on stderr. The problems of an invalid inventory are printed
/// one by one, as a compiler prints its errors, with a count at the end when there are several.
pub fn print_error(report: miette::Report) {
    use crate::inventory::LoadError;
    let errors = match report.downcast_ref::<LoadError>() {
        Some(LoadError::Invalid(e)) => Some(e),
        _ => report.downcast_ref::<crate::inventory::InventoryErrors>(),
    };
    match errors {
        Some(e) => {
            for one in &e.errors {
                eprintln!("{:?}", miette::Report::new(one.clone()));
            }
            if e.errors.len() > 1 {
                eprintln!("{e}");
            }
        }
        None => eprintln!("{report:?}"),
    }
}

/// Prints the changes grouped per host, hosts in `order`, each line after `mark`.
fn print_changes(changes: &[crate::context::Change], order: &[&str], mark: &str) {
    for (host, whats) in crate::context::changes_by_host(changes, order) {
        println!("{host}:");
        for what in whats {
            println!("  {mark} {what}");
        }
    }
}

/// How a command uses the cluster: to change it (under the state dir's lock, with progress on
/// stderr) or only to read it (no lock, no progress).
enum Access {
    Change {
        verbose: u8,
    },
    Read {
        timeouts: Option<crate::ssh::Timeouts>,
        verbose: u8,
    },
}

/// The context a day-two command runs in: inventory, plan, state dir and SSH targets, and for a
/// change, the cluster lock and the progress display.
fn open_ctx(
    args: &crate::cli::RunArgs,
    access: Access,
) -> miette::Result<(crate::context::Ctx, tokio::runtime::Runtime)> {
    use crate::context::{Ctx, Options};
    use miette::IntoDiagnostic;
    let inventory = crate::inventory::Inventory::load(&args.inventory)?;
    let state = crate::state::StateDir::resolve(&inventory, args.state_dir.as_deref());
    let plan = crate::plan::ClusterPlan::new(inventory);
    let templates = crate::render::Templates::builtin()?;
    let mut opts = Options {
        accept_new_host_keys: args.accept_new_host_keys,
        concurrency: args.concurrency,
        ..Default::default()
    };
    let cx = match access {
        Access::Change { verbose } => {
            let progress = apply::progress(args.log_format, verbose);
            Ctx::open(plan, state, opts, templates, progress)?
        }
        Access::Read { timeouts, verbose } => {
            opts.timeouts = timeouts;
            let progress = crate::ssh::Progress::new(crate::ssh::ProgressMode::Quiet);
            apply::log_to(&progress, verbose);
            Ctx::observe(plan, state, opts, templates, progress)?
        }
    };
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    Ok((cx, runtime))
}
