//! `kbs apply` and `kbs add-node`: the phases that take bare hosts to a running cluster.
//!
//! The workflow is a literal list (`apply`): connect and gather facts, preflight, PKI, prepare
//! hosts, etcd, the front, kubeadm init and joins, the CNI, namespace baselines, verify. Each phase reads what is on the hosts,
//! compares it with what the plan and the renderer want, and changes only the difference, so a
//! second run changes nothing and a run cut off anywhere is finished by running it again. Every
//! change goes through `Ctx::change`, which in `--dry-run` records what would happen instead.

pub mod journal;

mod baselines;
mod cni;
pub(crate) mod connect;
pub(crate) mod etcd;
pub(crate) mod files;
pub(crate) mod front;
pub(crate) mod kubeadm;
mod preflight;
pub(crate) mod prepare;
pub(crate) mod probe;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tracing::Instrument;

use crate::facts::Facts;
use crate::inventory::Inventory;
use crate::plan::ClusterPlan;
use crate::render::{RenderedFile, Templates};
use crate::ssh::{Connector, Exec, Progress, Session, SshError, Target};
use crate::state::StateDir;

pub(crate) use connect::now_ns;
pub use connect::targets;
pub(crate) use etcd::etcdctl_at;
pub use journal::{Journal, JournalError, StepStatus};
pub use preflight::{CHECKS, Check, CheckStatus, evaluate as preflight_evaluate, render_table};
pub use verify::{admin_client, nodes};

/// The names `--skip-check` accepts.
pub fn preflight_checks() -> &'static [&'static str] {
    &CHECKS
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    pub accept_new_host_keys: bool,
    /// Preflight checks to skip deliberately, by name.
    pub skip_checks: BTreeSet<String>,
    /// Only these hosts (add-node); `None` for the whole cluster.
    pub only_hosts: Option<BTreeSet<String>>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Artifacts(#[from] crate::artifacts::ArtifactError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error("{0}")]
    Ssh(Box<SshError>),
    #[error("{count} host(s) could not be reached or read:\n{details}")]
    #[diagnostic(help(
        "fix the hosts above and run kbs apply again; nothing was changed on any host"
    ))]
    Unreachable { count: usize, details: String },
    #[error("preflight failed on {0}")]
    #[diagnostic(help(
        "fix what the table above shows, or skip a check deliberately with --skip-check NAME; nothing was changed on any host"
    ))]
    Preflight(String),
    #[error("{host}: {step} failed: {message}")]
    #[diagnostic(help(
        "the journal records how far the run got; fix the cause and run kbs apply again to resume"
    ))]
    Step {
        host: String,
        step: String,
        message: String,
    },
    #[error("{0}")]
    #[diagnostic(help("run kbs apply again once the cause is fixed"))]
    Verify(String),
    #[error("{host}: another run is changing this cluster: {by}")]
    #[diagnostic(help(
        "wait for that run to end; its lock goes with its SSH connection, so a killed run frees it at once. Nothing was changed"
    ))]
    Locked { host: String, by: String },
    #[error("{host} runs kubeadm {have}, but cluster.kubernetes_version in {} is {want}", inventory.display())]
    #[diagnostic(help(
        "change a running cluster's version with `kbs upgrade INVENTORY`, which goes host by host (docs/operations.md); to stay on {have}, set cluster.kubernetes_version back. Nothing was changed"
    ))]
    VersionChange {
        host: String,
        have: String,
        want: String,
        inventory: std::path::PathBuf,
    },
}

impl From<SshError> for ApplyError {
    fn from(e: SshError) -> Self {
        Self::Ssh(Box::new(e))
    }
}

/// One change made (or, in a dry run, that would be made) on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub host: String,
    pub what: String,
}

/// How many hosts `changes` touch.
pub fn hosts_changed(changes: &[Change]) -> usize {
    changes
        .iter()
        .map(|c| &c.host)
        .collect::<BTreeSet<_>>()
        .len()
}

/// Everything a phase needs; built once per run and passed to each phase explicitly.
pub struct Ctx {
    pub plan: ClusterPlan,
    pub state: StateDir,
    pub opts: Options,
    pub templates: Templates,
    pub progress: Progress,
    connector: Connector,
    targets: BTreeMap<String, Target>,
    pub(crate) facts: BTreeMap<String, Facts>,
    journal: Mutex<Journal>,
    changes: Mutex<Vec<Change>>,
    /// The run lock on the hosts (`connect::lock`), held until `disconnect_all`.
    locks: tokio::sync::Mutex<Vec<crate::ssh::Held>>,
}

impl Ctx {
    pub fn facts(&self, host: &str) -> Option<&Facts> {
        self.facts.get(host)
    }

    pub async fn session(&self, host: &str) -> Result<Session, ApplyError> {
        let target = self.targets.get(host).ok_or_else(|| ApplyError::Step {
            host: host.into(),
            step: "connect".into(),
            message: "not in the inventory".into(),
        })?;
        Ok(self.connector.session(target).await?)
    }

    /// Hosts this run may touch, in plan order.
    pub fn hosts(&self) -> impl Iterator<Item = &crate::plan::PlannedHost> {
        self.plan.hosts.iter().filter(|h| {
            self.opts
                .only_hosts
                .as_ref()
                .is_none_or(|o| o.contains(&h.name))
        })
    }

    pub fn in_scope(&self, host: &str) -> bool {
        self.opts
            .only_hosts
            .as_ref()
            .is_none_or(|o| o.contains(host))
    }

    /// Runs `action` as one recorded change on `host`, or only records it in a dry run. Journals
    /// `step` as started before and done after, so a resumed run knows what was cut off.
    pub async fn change<F, T>(
        &self,
        host: &str,
        step: &str,
        what: impl Into<String>,
        action: F,
    ) -> Result<Option<T>, ApplyError>
    where
        F: Future<Output = Result<T, ApplyError>>,
    {
        let what = what.into();
        self.changes.lock().expect("change log").push(Change {
            host: host.into(),
            what: what.clone(),
        });
        if self.opts.dry_run {
            return Ok(None);
        }
        tracing::info!(host, step, "{what}");
        self.journal
            .lock()
            .expect("journal")
            .record(host, step, StepStatus::Started)?;
        let value = action.await?;
        self.journal
            .lock()
            .expect("journal")
            .record(host, step, StepStatus::Done)?;
        Ok(Some(value))
    }

    pub fn journal_status(&self, host: &str, step: &str) -> Option<StepStatus> {
        self.journal.lock().expect("journal").status(host, step)
    }

    pub fn changes(&self) -> Vec<Change> {
        self.changes.lock().expect("change log").clone()
    }

    /// Runs `cmd` as root; a non-zero exit is an error of `step` on `host` with the last lines.
    pub async fn root(
        s: &Session,
        host: &str,
        step: &str,
        cmd: Exec<'_>,
    ) -> Result<(), ApplyError> {
        let out = s.exec(cmd.sudo(true)).await?;
        if out.success() {
            Ok(())
        } else {
            Err(Self::step_error(host, step, &out))
        }
    }

    /// One root command as one recorded change: `change` around `root`.
    pub async fn root_change(
        &self,
        s: &Session,
        host: &str,
        step: &str,
        what: impl Into<String>,
        cmd: &str,
    ) -> Result<(), ApplyError> {
        self.change(host, step, what, Self::root(s, host, step, Exec::new(cmd)))
            .await
            .map(|_| ())
    }

    /// A failed remote command as a step error with its last lines.
    pub fn step_error(host: &str, step: &str, out: &crate::ssh::Output) -> ApplyError {
        ApplyError::Step {
            host: host.into(),
            step: step.into(),
            message: format!("{}: {}", out.status, out.last_lines.join(" | ")),
        }
    }
}

impl Ctx {
    /// A context for a day-two operation (renew, remove-node, reset): the plan, SSH targets and
    /// the cluster lock, no facts gathered, nothing connected yet.
    pub(crate) fn open(
        plan: ClusterPlan,
        state: StateDir,
        opts: Options,
        progress: Progress,
    ) -> Result<Self, ApplyError> {
        Self::new(plan, state, opts, Templates::builtin()?, progress)
    }

    /// Takes the state dir's lock (the journal) and readies the SSH targets.
    fn new(
        plan: ClusterPlan,
        state: StateDir,
        opts: Options,
        templates: Templates,
        progress: Progress,
    ) -> Result<Self, ApplyError> {
        state.create()?;
        let journal = Journal::open(&state)?;
        let (connector, targets) = connect::connector(&plan, &state, &opts)?;
        Ok(Self {
            plan,
            state,
            opts,
            templates,
            progress,
            connector,
            targets,
            facts: BTreeMap::new(),
            journal: Mutex::new(journal),
            changes: Mutex::new(Vec::new()),
            locks: Default::default(),
        })
    }

    /// Whether `host` answers over SSH (within the connect timeout).
    pub(crate) async fn reachable(&self, host: &str) -> bool {
        match self.session(host).await {
            Ok(s) => s.exec(Exec::new("true")).await.is_ok_and(|o| o.success()),
            Err(_) => false,
        }
    }

    /// Takes the run lock on the hosts this run may change (see `connect::lock`).
    pub(crate) async fn lock(&self) -> Result<(), ApplyError> {
        let held = connect::lock(self).await?;
        self.locks.lock().await.extend(held);
        Ok(())
    }

    pub(crate) async fn disconnect_all(&self) {
        for h in self.locks.lock().await.drain(..) {
            h.release().await;
        }
        self.connector.disconnect_all().await;
    }
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
) -> Result<Report, ApplyError> {
    let plan = ClusterPlan::new(inventory);
    if let Some(only) = &mut opts.only_hosts {
        if let Some(m) = plan.etcd.iter().find(|m| only.contains(&m.host)) {
            return Err(ApplyError::Step {
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
    let mut cx = Ctx::new(plan, state, opts, templates, progress)?;
    let mut report = Report::default();
    // The artifacts first, on this machine: a bundle that fails its sums, or a mirror that cannot
    // be reached, stops the run before any host is touched.
    let bundle = prepare::load_artifacts(&cx)
        .instrument(phase("artifacts"))
        .await?;
    cx.facts = connect::gather(&cx).instrument(phase("facts")).await?;
    if !cx.opts.dry_run {
        cx.lock().await?;
    }
    report.checks = preflight::run(&cx).instrument(phase("preflight")).await?;
    kubeadm::refuse_version_change(&cx)
        .instrument(phase("version"))
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
    front::run(&cx, &rendered)
        .instrument(phase("front"))
        .await?;
    kubeadm::run(&cx, &rendered, &pending)
        .instrument(phase("kubeadm"))
        .await?;
    cni::run(&cx, &bundle).instrument(phase("cni")).await?;
    baselines::run(&cx, &rendered)
        .instrument(phase("baselines"))
        .await?;
    verify::run(&cx).instrument(phase("verify")).await?;
    cx.disconnect_all().await;
    report.changes = cx.changes();
    Ok(report)
}

/// A span around one phase: with `-vv` its close line tells how long the phase took.
fn phase(name: &'static str) -> tracing::Span {
    tracing::debug_span!("phase", name)
}

/// How long etcd and the API get to become healthy after a start.
pub(crate) const HEALTH_WAIT: Duration = Duration::from_secs(90);

/// Runs `f` for every host concurrently (bounded); every host finishes its work even when another
/// fails, then the first error is returned.
pub(crate) async fn each_host<'a, T, F, Fut>(
    hosts: impl IntoIterator<Item = &'a str>,
    f: F,
) -> Result<Vec<T>, ApplyError>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<T, ApplyError>>,
{
    use futures::StreamExt;
    let results: Vec<Result<T, ApplyError>> = futures::stream::iter(hosts.into_iter().map(f))
        .buffer_unordered(crate::ssh::DEFAULT_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
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
