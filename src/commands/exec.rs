//! `kbs exec`: an ad-hoc command over the cluster's hosts.

use std::process::ExitCode;

use miette::{IntoDiagnostic, miette};

use crate::cli::{RoleArg, RunArgs};
use crate::inventory::{Inventory, Role};
use crate::plan::ClusterPlan;
use crate::ssh::{ConnectOptions, Connector, ExecOptions, KnownHosts, exec_on_all, print_report};
use crate::state::StateDir;

pub fn run(
    args: &RunArgs,
    verbose: u8,
    hosts: &[String],
    role: Option<RoleArg>,
    sudo: bool,
    command: &str,
) -> miette::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    let state = StateDir::resolve(&inventory, args.state_dir.as_deref());
    for h in hosts {
        if inventory.host(h).is_none() {
            return Err(miette!(
                help = "use host names as written in the inventory",
                "--hosts: no host `{h}` in {}",
                args.inventory.display()
            ));
        }
    }
    let plan = ClusterPlan::new(inventory);
    let role = role.map(|r| match r {
        RoleArg::ControlPlane => Role::ControlPlane,
        RoleArg::Etcd => Role::Etcd,
        RoleArg::Worker => Role::Worker,
    });
    let mut all = crate::context::connect::targets(&plan.inventory);
    let targets: Vec<_> = plan
        .hosts
        .iter()
        .filter(|h| hosts.is_empty() || hosts.contains(&h.name))
        .filter(|h| role.is_none_or(|r| h.has(r)))
        .filter_map(|h| all.remove(&h.name))
        .collect();
    if targets.is_empty() {
        return Err(miette!("no host matches the selection"));
    }
    if args.accept_new_host_keys {
        state.create()?;
    }
    let progress = super::apply::progress(args.log_format, verbose);
    let connector = Connector::new(ConnectOptions::new(KnownHosts::new(
        state.root(),
        args.accept_new_host_keys,
    )));
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    let results = runtime.block_on(async {
        let r = exec_on_all(
            &connector,
            &targets,
            command,
            &ExecOptions {
                sudo,
                concurrency: args.concurrency,
                ..Default::default()
            },
            &progress,
        )
        .await;
        connector.disconnect_all().await;
        r
    });
    let failed = print_report(&results, &mut std::io::stdout()).into_diagnostic()?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
