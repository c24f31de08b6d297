//! `kbs apply` and `kbs add-node`: one engine, the second limited to the new hosts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use crate::cli::{LogFormat, RunArgs};
use crate::context::Options;
use crate::inventory::Inventory;
use crate::phases::{self, CHECKS};
use crate::render::Templates;
use crate::ssh::{Progress, ProgressMode};
use crate::state::StateDir;
use crate::words::count;

pub enum Scope {
    Cluster {
        dry_run: bool,
        templates: Option<PathBuf>,
    },
    Hosts(Vec<String>),
}

/// The progress display and, with -v, tracing lines printed above it.
pub fn progress(format: LogFormat, verbose: u8) -> Progress {
    let progress = Progress::new(match format {
        LogFormat::Auto => ProgressMode::Auto,
        LogFormat::Plain => ProgressMode::Plain,
        LogFormat::Json => ProgressMode::Json,
    });
    log_to(&progress, verbose);
    progress
}

/// With -v, tracing lines printed above `progress`.
pub fn log_to(progress: &Progress, verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "kbs=info",
        _ => "kbs=debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(progress.clone())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .try_init();
}

pub fn run(
    args: &RunArgs,
    verbose: u8,
    scope: Scope,
    skip_checks: Vec<String>,
) -> miette::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    for name in &skip_checks {
        if !CHECKS.contains(&name.as_str()) {
            return Err(miette!(
                help = format!("the checks are: {}", CHECKS.join(", ")),
                "--skip-check: there is no check `{name}`"
            ));
        }
    }
    let (dry_run, templates, only_hosts) = match scope {
        Scope::Cluster { dry_run, templates } => (dry_run, templates, None),
        Scope::Hosts(hosts) => {
            for h in &hosts {
                if inventory.host(h).is_none() {
                    return Err(miette!(
                        help =
                            "add the host to the inventory first, then run add-node with its name",
                        "--host {h}: no such host in {}",
                        args.inventory.display()
                    ));
                }
            }
            (
                false,
                None,
                Some(hosts.into_iter().collect::<BTreeSet<_>>()),
            )
        }
    };
    let templates = match &templates {
        Some(dir) => Templates::with_overrides(dir)?,
        None => Templates::builtin()?,
    };
    let state = StateDir::resolve(&inventory, args.state_dir.as_deref());
    let host_order: Vec<String> = inventory.hosts.iter().map(|h| h.name.clone()).collect();
    let opts = Options {
        dry_run,
        accept_new_host_keys: args.accept_new_host_keys,
        skip_checks: skip_checks.into_iter().collect(),
        only_hosts,
        timeouts: None,
        concurrency: args.concurrency,
    };
    let progress = progress(args.log_format, verbose);
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    let report = runtime.block_on(phases::apply(
        inventory,
        state.clone(),
        opts,
        templates,
        progress.clone(),
    ))?;

    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.changes.is_empty() {
        println!("no changes");
    } else {
        let verb = if dry_run { "would change" } else { "changed" };
        let hosts: Vec<&str> = host_order.iter().map(String::as_str).collect();
        super::print_changes(&report.changes, &hosts, if dry_run { "would" } else { "-" });
        println!(
            "{} {verb} on {}",
            count(report.changes.len(), "change"),
            count(crate::context::hosts_changed(&report.changes), "host")
        );
    }
    if !dry_run {
        println!(
            "admin kubeconfig: {}",
            crate::pki::kubeconfig_path(&state, crate::pki::spec::ADMIN_CONF).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
