use std::path::Path;
use std::process::ExitCode;

use comfy_table::Table;
use miette::IntoDiagnostic;
use time::OffsetDateTime;

use crate::cli::{CertsCommand, CheckOutput};
use crate::inventory::Inventory;
use crate::pki::{self, Action, PkiReport};
use crate::plan::ClusterPlan;
use crate::state::StateDir;

pub fn run(command: CertsCommand, verbose: u8) -> miette::Result<ExitCode> {
    match command {
        CertsCommand::Generate {
            inventory,
            state_dir,
        } => {
            let (plan, state) = load(&inventory, state_dir.as_deref())?;
            let report = pki::ensure(&plan, &state)?;
            print_report(&plan, &state, &report);
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Renew { run, local: true } => {
            let (plan, state) = load(&run.inventory, run.state_dir.as_deref())?;
            let report = pki::renew(&plan, &state)?;
            print_report(&plan, &state, &report);
            println!(
                "Only the state directory changed. `kbs certs renew INVENTORY` (without --local) uploads them and restarts what uses them."
            );
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Renew { run, local: false } => {
            let (cx, runtime) = super::open_ctx(&run, super::Access::Change { verbose })?;
            let report = runtime.block_on(crate::ops::renew::run(&cx))?;
            print_report(&cx.plan, &cx.state, &report.pki);
            if report.etcd_restarted_together {
                println!(
                    "etcd was not healthy before the renewal: its members were restarted together."
                );
            }
            print_served(&report.served);
            println!("Every etcd member and API server serves its new certificate.");
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Check {
            inventory: Some(inventory),
            state_dir,
            warn_days,
            output,
            hosts: true,
        } => {
            let (plan, state) = load(&inventory, state_dir.as_deref())?;
            let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
            let served = runtime.block_on(crate::ops::served::probe_all(&plan, &state));
            match output {
                CheckOutput::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&served).into_diagnostic()?
                ),
                CheckOutput::Table => print_served(&served),
            }
            let code = if served.iter().any(|s| !s.ok()) {
                2
            } else if served
                .iter()
                .any(|s| s.days_left.is_some_and(|d| d < i64::from(warn_days)))
            {
                1
            } else {
                0
            };
            Ok(ExitCode::from(code))
        }
        CertsCommand::Check {
            inventory,
            state_dir,
            warn_days,
            output,
            hosts: _,
        } => {
            let state = match (state_dir, inventory) {
                (Some(dir), _) => StateDir::new(dir),
                (None, Some(inv)) => StateDir::resolve(&Inventory::load(&inv)?, None),
                (None, None) => miette::bail!("pass an INVENTORY or --state-dir"),
            };
            let report = pki::check(&state, warn_days, OffsetDateTime::now_utc())?;
            match output {
                CheckOutput::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).into_diagnostic()?
                ),
                CheckOutput::Table => {
                    let mut t = Table::new();
                    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
                    t.set_header([
                        "PATH",
                        "SUBJECT",
                        "SANS",
                        "ISSUER",
                        "EXPIRES",
                        "DAYS LEFT",
                        "STATUS",
                    ]);
                    for c in &report.certificates {
                        let status = match &c.problem {
                            Some(p) => format!("{}: {p}", c.health.as_str()),
                            None => c.health.as_str().to_owned(),
                        };
                        t.add_row([
                            c.path.display().to_string(),
                            c.subject.clone(),
                            c.sans.join("\n"),
                            c.issuer.clone(),
                            c.not_after.clone(),
                            c.days_left.to_string(),
                            status,
                        ]);
                    }
                    println!("{t}");
                }
            }
            Ok(ExitCode::from(report.exit_code()))
        }
    }
}

fn load(inventory: &Path, state_dir: Option<&Path>) -> miette::Result<(ClusterPlan, StateDir)> {
    let inv = Inventory::load(inventory)?;
    let state = StateDir::resolve(&inv, state_dir);
    Ok((ClusterPlan::new(inv), state))
}

fn print_served(served: &[crate::ops::served::Served]) {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header([
        "HOST",
        "SERVES",
        "ENDPOINT",
        "SUBJECT",
        "SERIAL",
        "EXPIRES",
        "DAYS LEFT",
        "STATUS",
    ]);
    for s in served {
        let status = match (&s.problem, s.matches_state) {
            (Some(p), _) => p.clone(),
            (None, Some(false)) => "differs from the state dir (not renewed here yet)".into(),
            (None, Some(true)) => "ok (the state dir's)".into(),
            (None, None) => "ok".into(),
        };
        t.add_row([
            s.host.clone(),
            s.component.clone(),
            s.endpoint.clone(),
            s.subject.clone().unwrap_or_default(),
            s.serial.clone().unwrap_or_default(),
            s.not_after.clone().unwrap_or_default(),
            s.days_left.map(|d| d.to_string()).unwrap_or_default(),
            status,
        ]);
    }
    println!("{t}");
}

fn print_report(plan: &ClusterPlan, state: &StateDir, report: &PkiReport) {
    let pki = &plan.inventory.pki;
    println!(
        "PKI for {} in {} ({}, leaves valid {} days)",
        plan.inventory.cluster.name,
        state.root().display(),
        pki.algorithm.kubeadm_name(),
        pki.cert_validity_days
    );
    for item in &report.items {
        let (verb, why) = match &item.action {
            Action::Kept => continue,
            Action::Created => ("created", String::new()),
            Action::Imported => ("imported", " (from pki.ca_dir)".to_owned()),
            Action::Reissued(why) => ("reissued", format!(" ({why})")),
        };
        println!("  {verb:<9} {}{why}", item.path.display());
    }
    let kept = report.items.len() - report.changed();
    println!("{} changed, {kept} kept.", report.changed());
    println!("Discovery hash for kubeadm join: {}", report.discovery_hash);
}
