//! The one context for everything that talks to a cluster: apply and add-node, and every day-two
//! operation (status, backup, restore, renew, remove-node, reset, upgrade). It holds the plan, the
//! state dir, one SSH connection per host made on first use, and, for a run that changes the
//! cluster, the journal (the state dir's lock) and the change log. Its helpers are the only ways
//! to run a command on a host (`root`, `sh`), to record a change (`change`), to wait for
//! something (`retry::until`), to reach etcd (`etcd`) and the API (`api`).

pub mod api;
pub mod connect;
pub mod etcd;
pub mod journal;
pub mod retry;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use crate::facts::Facts;
use crate::plan::{ClusterPlan, EtcdMember};
use crate::render::Templates;
use crate::ssh::{Connector, Exec, Progress, Session, SshError, Target, Timeouts};
use crate::state::StateDir;

pub use journal::{Journal, JournalError, StepStatus};

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    pub accept_new_host_keys: bool,
    /// Preflight checks to skip deliberately, by name.
    pub skip_checks: BTreeSet<String>,
    /// Only these hosts (add-node); `None` for the whole cluster.
    pub only_hosts: Option<BTreeSet<String>>,
    /// Replaces every host's SSH timeouts (status uses short ones so a dead host cannot make it
    /// hang).
    pub timeouts: Option<Timeouts>,
    /// How many hosts are worked on at once (`--concurrency`).
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            accept_new_host_keys: false,
            skip_checks: BTreeSet::new(),
            only_hosts: None,
            timeouts: None,
            concurrency: crate::ssh::DEFAULT_CONCURRENCY,
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RunError {
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
    #[error("{} could not be reached or read:\n{details}", crate::words::count(*count, "host"))]
    #[diagnostic(help(
        "fix the hosts above and run the same command again; nothing was changed on any host"
    ))]
    Unreachable { count: usize, details: String },
    #[error("preflight failed: {0}")]
    #[diagnostic(help(
        "fix what the table above shows, or skip a check deliberately with --skip-check NAME; nothing was changed on any host"
    ))]
    Preflight(String),
    #[error("{host}: {step} failed: {message}")]
    #[diagnostic(help(
        "fix the cause and run the same command again: it finds what is already done and goes on from there"
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

impl From<SshError> for RunError {
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

/// The changes per host: hosts in `order` (the plan's), then any other in order of appearance;
/// each host's changes in the order they were made.
pub fn changes_by_host<'a>(changes: &'a [Change], order: &[&str]) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for c in changes {
        match groups.iter_mut().find(|(h, _)| *h == c.host) {
            Some((_, whats)) => whats.push(&c.what),
            None => groups.push((&c.host, vec![&c.what])),
        }
    }
    let rank = |h: &str| order.iter().position(|o| *o == h).unwrap_or(order.len());
    groups.sort_by_key(|(h, _)| rank(h));
    groups
}

/// How many hosts `changes` touch.
pub fn hosts_changed(changes: &[Change]) -> usize {
    changes
        .iter()
        .map(|c| &c.host)
        .collect::<BTreeSet<_>>()
        .len()
}

/// Everything a phase or an operation needs; built once per run and passed explicitly.
pub struct Ctx {
    pub plan: ClusterPlan,
    pub state: StateDir,
    pub opts: Options,
    pub templates: Templates,
    pub progress: Progress,
    connector: Connector,
    targets: BTreeMap<String, Target>,
    pub(crate) facts: BTreeMap<String, Facts>,
    /// `None` for a run that only reads (status, backup): it neither takes the lock nor changes.
    journal: Option<Mutex<Journal>>,
    changes: Mutex<Vec<Change>>,
    /// The run lock on the hosts (`connect::lock`), held until `disconnect_all`.
    locks: tokio::sync::Mutex<Vec<crate::ssh::Held>>,
}

impl Ctx {
    pub fn facts(&self, host: &str) -> Option<&Facts> {
        self.facts.get(host)
    }

    pub async fn session(&self, host: &str) -> Result<Session, RunError> {
        let target = self.targets.get(host).ok_or_else(|| RunError::Step {
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
    ) -> Result<Option<T>, RunError>
    where
        F: Future<Output = Result<T, RunError>>,
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
        self.record(host, step, StepStatus::Started)?;
        let value = action.await?;
        self.record(host, step, StepStatus::Done)?;
        Ok(Some(value))
    }

    /// Journals a step of a change; a read-only context has no journal and refuses to change.
    pub fn record(&self, host: &str, step: &str, status: StepStatus) -> Result<(), RunError> {
        match &self.journal {
            Some(j) => Ok(j.lock().expect("journal").record(host, step, status)?),
            None => Err(RunError::Step {
                host: host.into(),
                step: step.into(),
                message: "this command only reads the cluster and may not change it".into(),
            }),
        }
    }

    pub fn journal_status(&self, host: &str, step: &str) -> Option<StepStatus> {
        self.journal
            .as_ref()
            .and_then(|j| j.lock().expect("journal").status(host, step))
    }

    pub fn changes(&self) -> Vec<Change> {
        self.changes.lock().expect("change log").clone()
    }

    /// Runs `cmd` as root and returns its output; a non-zero exit is an error of `step` on
    /// `host` with the last lines.
    pub async fn root(
        s: &Session,
        host: &str,
        step: &str,
        cmd: Exec<'_>,
    ) -> Result<String, RunError> {
        let out = s.exec(cmd.sudo(true)).await?;
        if out.success() {
            Ok(out.stdout_lossy())
        } else {
            Err(Self::step_error(host, step, &out))
        }
    }

    /// `root` on `host`'s session, with a time limit: a script that only reads.
    pub async fn sh(
        &self,
        host: &str,
        step: &str,
        script: &str,
        limit: Duration,
    ) -> Result<String, RunError> {
        let s = self.session(host).await?;
        Self::root(&s, host, step, Exec::new(script).timeout(limit)).await
    }

    /// One root command as one recorded change: `change` around `root`.
    pub async fn root_change(
        &self,
        s: &Session,
        host: &str,
        step: &str,
        what: impl Into<String>,
        cmd: &str,
    ) -> Result<(), RunError> {
        self.change(host, step, what, Self::root(s, host, step, Exec::new(cmd)))
            .await
            .map(drop)
    }

    /// A failed remote command as a step error with its last lines.
    pub fn step_error(host: &str, step: &str, out: &crate::ssh::Output) -> RunError {
        RunError::Step {
            host: host.into(),
            step: step.into(),
            message: format!("{}: {}", out.status, out.last_lines.join(" | ")),
        }
    }
}

impl Ctx {
    /// A context for a run that changes the cluster: takes the state dir's lock (the journal)
    /// and readies the SSH targets; nothing is connected yet.
    pub fn open(
        plan: ClusterPlan,
        state: StateDir,
        opts: Options,
        templates: Templates,
        progress: Progress,
    ) -> Result<Self, RunError> {
        state.create()?;
        let journal = Journal::open(&state)?;
        let mut cx = Self::observe(plan, state, opts, templates, progress)?;
        cx.journal = Some(Mutex::new(journal));
        Ok(cx)
    }

    /// A context that only reads (status, backup): no lock, so it runs beside an apply.
    pub fn observe(
        plan: ClusterPlan,
        state: StateDir,
        opts: Options,
        templates: Templates,
        progress: Progress,
    ) -> Result<Self, RunError> {
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
            journal: None,
            changes: Mutex::new(Vec::new()),
            locks: Default::default(),
        })
    }

    pub fn cluster(&self) -> &str {
        &self.plan.inventory.cluster.name
    }

    /// Hosts with at least one etcd member, in plan order.
    pub fn etcd_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for m in &self.plan.etcd {
            if !hosts.contains(&m.host) {
                hosts.push(m.host.clone());
            }
        }
        hosts
    }

    pub fn members_on<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a EtcdMember> + 'a {
        self.plan.etcd.iter().filter(move |m| m.host == host)
    }

    /// Whether `host` answers over SSH (within the connect timeout).
    pub(crate) async fn reachable(&self, host: &str) -> bool {
        match self.session(host).await {
            Ok(s) => s.exec(Exec::new("true")).await.is_ok_and(|o| o.success()),
            Err(_) => false,
        }
    }

    /// Takes the run lock on the hosts this run may change (see `connect::lock`).
    pub(crate) async fn lock(&self) -> Result<(), RunError> {
        let held = connect::lock(self).await?;
        self.locks.lock().await.extend(held);
        Ok(())
    }

    /// Runs `f` for every host, `--concurrency` at a time; every host finishes its work even
    /// when another fails, then the first error is returned.
    pub(crate) async fn each_host<'a, T, F, Fut>(
        &self,
        hosts: impl IntoIterator<Item = &'a str>,
        f: F,
    ) -> Result<Vec<T>, RunError>
    where
        F: Fn(&'a str) -> Fut,
        Fut: Future<Output = Result<T, RunError>>,
    {
        use futures::StreamExt;
        let results: Vec<Result<T, RunError>> = futures::stream::iter(hosts.into_iter().map(f))
            .buffer_unordered(self.opts.concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }

    pub async fn disconnect_all(&self) {
        for h in self.locks.lock().await.drain(..) {
            h.release().await;
        }
        self.connector.disconnect_all().await;
    }
}

/// How long etcd and the API get to become healthy after a start.
pub(crate) const HEALTH_WAIT: Duration = Duration::from_secs(90);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_grouped_per_host_in_plan_order() {
        let c = |host: &str, what: &str| Change {
            host: host.into(),
            what: what.into(),
        };
        let changes = [
            c("b", "one"),
            c("a", "two"),
            c("local", "three"),
            c("b", "four"),
            c("a", "five"),
        ];
        assert_eq!(
            changes_by_host(&changes, &["a", "b"]),
            vec![
                ("a", vec!["two", "five"]),
                ("b", vec!["one", "four"]),
                ("local", vec!["three"]),
            ]
        );
    }
}
