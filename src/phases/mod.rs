//! `kbs apply` and `kbs add-node`: the phases that take bare hosts to a running cluster.
//!
//! The workflow is a literal list (`apply`): connect and gather facts, preflight, PKI, prepare
//! hosts, etcd, the front, kubeadm init and joins, the CNI, namespace baselines, addons, verify. Each phase reads what is on the hosts,
//! compares it with what the plan and the renderer want, and changes only the difference, so a
//! second run changes nothing and a run cut off anywhere is finished by running it again. Every
//! change goes through `Ctx::change`, which in `--dry-run` records what would happen instead.

pub mod addons;
mod baselines;
mod cni;
pub(crate) mod connect;
pub(crate) mod etcd;
pub(crate) mod files;
pub(crate) mod front;
pub(crate) mod hooks;
pub(crate) mod kubeadm;
mod kubectl;
mod preflight;
pub(crate) mod prepare;
pub(crate) mod probe;
mod serving;
mod verify;

use std::collections::BTreeMap;

use tracing::Instrument;

use crate::context::{Change, Ctx, Options, RunError};
use crate::inventory::{HookPoint, Inventory};
use crate::plan::ClusterPlan;
use crate::render::{RenderedFile, Templates};
use crate::ssh::Progress;
use crate::state::StateDir;

pub use preflight::{CHECKS, Check, CheckStatus, evaluate as preflight_evaluate, render_table};

/// The names `--skip-check` accepts.
pub fn preflight_checks() -> &'static [&'static str] {
    &CHECKS
}

/// What a run did: the changes per host (or that would be made, in a dry run) and the checks.
#[derive(Debug, Default)]
pub struct Report {
    pub changes: Vec<Change>,
    pub checks: Vec<Check>,
    pub warnings: Vec<String>,
}

/// Runs the whole apply. The order is the workflow; each phase skips what is already in place.
pub async fn apply(
    inventory: Inventory,
    state: StateDir,
    mut opts: Options,
    templates: Templates,
    progress: Progress,
) -> Result<Report, RunError> {
    let plan = ClusterPlan::new(inventory);
    if let Some(only) = &mut opts.only_hosts {
        if let Some(m) = plan.etcd.iter().find(|m| only.contains(&m.host)) {
            return Err(RunError::Step {
                host: m.host.clone(),
                step: "add-node".into(),
                message: format!(
                    "the plan puts etcd member {} on this new host; growing etcd with add-node is not supported yet: give the host the roles [\"worker\"] or [\"control-plane\"]",
                    m.name
                ),
            });
        }
        // A new control plane must be known to the front on every control plane (haproxy's
        // backends), so those hosts are in scope too; their unchanged files stay untouched.
        if plan
            .hosts
            .iter()
            .any(|h| only.contains(&h.name) && h.has(crate::inventory::Role::ControlPlane))
        {
            only.extend(plan.control_planes().map(|h| h.name.clone()));
        }
    }
    let mut cx = Ctx::open(plan, state, opts, templates, progress)?;
    let mut report = Report::default();
    // The artifacts first, on this machine: a bundle that fails its sums, or a mirror that cannot
    // be reached, stops the run before any host is touched.
    let bundle = prepare::load_artifacts(&cx)
        .instrument(phase("artifacts"))
        .await?;
    cx.facts = connect::gather(&cx, Some(&bundle))
        .instrument(phase("facts"))
        .await?;
    if !cx.opts.dry_run {
        cx.lock().await?;
    }
    report.checks = preflight::run(&cx).instrument(phase("preflight")).await?;
    kubeadm::refuse_version_change(&cx)?;
    hooks::run(&cx, HookPoint::BeforeApply)
        .instrument(phase("hooks"))
        .await?;

    // Local first: the PKI is made (or reused) before any host is touched.
    let local = phase("local").entered();
    if !cx.opts.dry_run {
        crate::pki::ensure(&cx.plan, &cx.state)?;
    }
    drop(local);
    let pending = kubeadm::pending(&cx)
        .instrument(phase("kubeadm-pending"))
        .await?;
    let secrets = kubeadm::join_secrets(&cx, &pending).await?;
    let rendered = phase("render").in_scope(|| files::render(&cx, &secrets))?;

    report.warnings.extend(
        prepare::run(&cx, &bundle, &rendered)
            .instrument(phase("prepare"))
            .await?,
    );
    etcd::run(&cx, &rendered).instrument(phase("etcd")).await?;
    // `kubeadm init` is still to come on the first control plane (a new cluster).
    let bootstrap = cx
        .plan
        .first_control_plane()
        .is_some_and(|first| cx.in_scope(&first.name) && pending.contains(&first.name));
    front::run(&cx, &rendered, bootstrap)
        .instrument(phase("front"))
        .await?;
    kubeadm::init(&cx, &rendered, &pending)
        .instrument(phase("kubeadm-init"))
        .await?;
    if bootstrap {
        front::after_init(&cx, &rendered)
            .instrument(phase("front"))
            .await?;
    }
    kubeadm::join(&cx, &rendered, &pending)
        .instrument(phase("kubeadm-join"))
        .await?;
    cni::run(&cx, &bundle).instrument(phase("cni")).await?;
    baselines::run(&cx, &rendered)
        .instrument(phase("baselines"))
        .await?;
    addons::run(&cx, &bundle)
        .instrument(phase("addons"))
        .await?;
    serving::run(&cx)
        .instrument(phase("kubelet-serving"))
        .await?;
    verify::run(&cx).instrument(phase("verify")).await?;
    hooks::run(&cx, HookPoint::AfterApply)
        .instrument(phase("hooks"))
        .await?;
    cx.disconnect_all().await;
    report.changes = cx.changes();
    Ok(report)
}

/// A span around one phase: with `-vv` its close line tells how long the phase took.
fn phase(name: &'static str) -> tracing::Span {
    tracing::debug_span!("phase", name)
}

/// The rendered files of one host that belong to one part of the workflow.
pub(crate) fn files_of<'a>(
    rendered: &'a BTreeMap<String, Vec<RenderedFile>>,
    host: &str,
    part: files::Part,
) -> Vec<&'a RenderedFile> {
    rendered
        .get(host)
        .map(|fs| {
            fs.iter()
                .filter(|f| files::part_of(&f.path) == part)
                .collect()
        })
        .unwrap_or_default()
}
