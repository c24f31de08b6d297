//! One module per subcommand. Each returns the process exit code, or an error that main reports.

mod apply;
mod backup;
mod bundle;
mod certs;
mod check;
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
        } => upgrade::run(&run, cli.verbose, dry_run, usize::from(max_unavailable)),
        Command::Exec {
            run,
            hosts,
            role,
            sudo,
            command,
        } => exec::run(&run, cli.verbose, &hosts, role, sudo, &command.join(" ")),
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
        ..Default::default()
    };
    let cx = match access {
        Access::Change { verbose } => {
            let progress = apply::progress(args.log_format, verbose);
            Ctx::open(plan, state, opts, templates, progress)?
        }
        Access::Read { timeouts } => {
            opts.timeouts = timeouts;
            let progress = crate::ssh::Progress::new(crate::ssh::ProgressMode::Quiet);
            Ctx::observe(plan, state, opts, templates, progress)?
        }
    };
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    Ok((cx, runtime))
}
