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

pub fn run(command: CertsCommand) -> miette::Result<ExitCode> {
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
        CertsCommand::Renew {
            inventory,
            state_dir,
        } => {
            let (plan, state) = load(&inventory, state_dir.as_deref())?;
            let report = pki::renew(&plan, &state)?;
            print_report(&plan, &state, &report);
            println!(
                "Upload the renewed files with `kbs apply`; running components pick them up on restart."
            );
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Check {
            inventory,
            state_dir,
            warn_days,
            output,
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
