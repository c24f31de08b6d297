//! `kbs upgrade`: move a running cluster to the inventory's `cluster.kubernetes_version` and to the
//! bundle's etcd, the way kubeadm-based tools do it.
//!
//! 1. Read what runs, on the hosts and through the API: every Node's kubelet version (what the
//!    running kubelet reports), every API server's `/version`, `kubeadm version` on every node,
//!    the installed etcd binaries' SHA-256 and `etcd --version` on every etcd host. A downgrade
//!    or a skipped minor is refused here, before anything changes.
//! 2. The plan: per host, from → to, in order. `--dry-run` prints it and stops.
//! 3. etcd hosts one at a time: the bundle's etcd is installed, each member restarted, and every
//!    member must be healthy over mTLS (so quorum holds) before the next host.
//! 4. The first control plane: drained, the cluster's ClusterConfiguration (kubeadm-config) is
//!    re-rendered for the new version (what `kubeadm init phase upload-config` does), the new
//!    binaries and host files installed, `kubeadm upgrade apply`, the kubelet restarted, its API
//!    server and its Node checked, uncordoned, and the endpoint must answer `/readyz`. Then the
//!    other control planes the same way with `kubeadm upgrade node`, one at a time.
//! 5. Workers in batches of `--max-unavailable`, each drained, upgraded and uncordoned.
//! 6. Every Node and API server must report the target, and etcd must be healthy.
//!
//! Each host's upgrade is one journaled step: a run cut off mid-host does that host again (every
//! part is safe to repeat), hosts already at the target are skipped, and a cluster already at the
//! target is "no changes".

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures::StreamExt;

use super::drain::{drain, uncordon};
use crate::artifacts::{Bundle, HostClass};
use crate::context::api::{Api, admin_client};
use crate::context::api::{anonymous_client, apiserver_url, wait_ready};
use crate::context::journal::StepStatus;
use crate::context::{Ctx, HEALTH_WAIT, RunError, retry};
use crate::inventory::{HookPoint, KubeVersion, Role};
use crate::phases::files::{Desired, Part, sync};
use crate::phases::files_of;
use crate::phases::hooks;
use crate::phases::prepare::{load_artifacts, prepare_host};
use crate::plan::PlannedHost;
use crate::render::{
    CA_CERT_HASH_PLACEHOLDER, JOIN_TOKEN_PLACEHOLDER, JoinSecrets, RenderedFile,
    UPGRADE_CONFIG_PATH,
};
use crate::ssh::Exec;
use crate::ssh::quote;

const NODE_STEP: &str = "upgrade/node";
const ETCD_STEP: &str = "upgrade/etcd";
const KUBEADM_CONFIG: &str = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum UpgradeError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Apply(RunError),
    /// Refused before any host changed.
    #[error("{message}")]
    #[diagnostic(help("{help}"))]
    Refused { message: String, help: String },
    #[error("{host}: {step} failed: {message}")]
    #[diagnostic(help(
        "the journal records which hosts are done; fix the cause and run kbs upgrade again to resume"
    ))]
    Step {
        host: String,
        step: String,
        message: String,
    },
}

impl From<RunError> for UpgradeError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Step {
                host,
                step,
                message,
            } => Self::Step {
                host,
                step,
                message,
            },
            e => Self::Apply(e),
        }
    }
}

impl From<crate::ssh::SshError> for UpgradeError {
    fn from(e: crate::ssh::SshError) -> Self {
        RunError::from(e).into()
    }
}

/// What a host runs now.
#[derive(Debug, Clone, Default)]
pub struct Running {
    /// The running kubelet's version, as its Node reports it.
    pub kubelet: Option<KubeVersion>,
    /// `kubeadm version -o short` (the binary on disk).
    pub kubeadm: Option<KubeVersion>,
    /// `/version` of the API server on this host (control planes).
    pub apiserver: Option<KubeVersion>,
    /// The first line of `etcd --version` (etcd hosts).
    pub etcd: Option<String>,
    /// The installed etcd binaries equal the bundle's (etcd hosts; `None` elsewhere).
    pub etcd_current: Option<bool>,
}

/// What one step of the upgrade does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Install the bundle's etcd and restart this host's members.
    Etcd,
    /// `kubeadm upgrade apply` on the first control plane.
    Apply,
    /// `kubeadm upgrade node` on another control plane.
    ControlPlane,
    /// `kubeadm upgrade node` on a worker, in batch `n` (from 1).
    Worker { batch: usize },
}

#[derive(Debug, Clone)]
pub struct Step {
    pub host: String,
    pub action: Action,
    pub from: String,
    pub to: String,
    /// False when the host is already there (listed, not done).
    pub needed: bool,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.action {
            Action::Etcd => {
                "etcd: install the bundle's etcd, restart each member, wait until every member is healthy".to_string()
            }
            Action::Apply => "first control plane: drain, kubeadm-config for the new version, kubeadm upgrade apply, restart the kubelet, wait for its API server, uncordon".to_string(),
            Action::ControlPlane => "control plane: drain, kubeadm upgrade node, restart the kubelet, wait for its API server, uncordon".to_string(),
            Action::Worker { batch } => format!("worker (batch {batch}): drain, kubeadm upgrade node, restart the kubelet, uncordon"),
        };
        write!(f, "{}  {} → {}  {what}", self.host, self.from, self.to)
    }
}

/// The whole upgrade as it will run.
#[derive(Debug, Clone)]
pub struct UpgradePlan {
    pub target: KubeVersion,
    /// The oldest API server: what kubeadm calls the cluster version.
    pub cluster: KubeVersion,
    pub steps: Vec<Step>,
    pub running: BTreeMap<String, Running>,
    /// Objects served through API versions the target no longer serves, kept going by `--force`.
    pub forced: Vec<String>,
}

impl UpgradePlan {
    pub fn needed(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.needed)
    }
}

/// What a run did.
#[derive(Debug)]
pub struct UpgradeReport {
    pub plan: UpgradePlan,
    pub changes: Vec<crate::context::Change>,
    pub notes: Vec<String>,
}

/// kubeadm's version policy, decided before any host changes: no downgrade of any running
/// component, at most one minor above the oldest API server, kubelets within the supported skew.
pub fn check_versions(
    target: KubeVersion,
    running: &BTreeMap<String, Running>,
    inventory: &std::path::Path,
) -> Result<KubeVersion, UpgradeError> {
    let field = format!("cluster.kubernetes_version in {}", inventory.display());
    let newest = running
        .iter()
        .flat_map(|(h, r)| {
            [
                r.apiserver.map(|v| (v, format!("{h}'s API server"))),
                r.kubelet.map(|v| (v, format!("{h}'s kubelet"))),
            ]
        })
        .flatten()
        .max_by_key(|(v, _)| *v);
    if let Some((v, what)) = &newest
        && *v > target
    {
        return Err(UpgradeError::Refused {
            message: format!(
                "{field} is {target}, but {what} runs {v}: that would be a downgrade, which kubeadm does not support"
            ),
            help: format!(
                "set cluster.kubernetes_version to \"{}\" (what runs) or newer, with a bundle of that version; nothing was changed",
                v.to_string().trim_start_matches('v')
            ),
        });
    }
    let Some(cluster) = running.values().filter_map(|r| r.apiserver).min() else {
        return Err(UpgradeError::Refused {
            message: "no API server answered /version: the cluster is not up".into(),
            help: "run kbs status; kbs upgrade needs a running cluster (kbs apply builds one)"
                .into(),
        });
    };
    if target.minor > cluster.minor + 1 {
        return Err(UpgradeError::Refused {
            message: format!(
                "{field} is {target}, but the cluster runs {cluster}: that skips a minor version (kubeadm upgrades one minor at a time)"
            ),
            help: format!(
                "upgrade to 1.{}.x first (set cluster.kubernetes_version to a 1.{}.x release with its bundle and run kbs upgrade), then to {target}; nothing was changed",
                cluster.minor + 1,
                cluster.minor + 1
            ),
        });
    }
    // The kubelet may be up to three minors older than the API server (Kubernetes' skew policy).
    if let Some((h, v)) = running
        .iter()
        .filter_map(|(h, r)| r.kubelet.map(|v| (h, v)))
        .find(|(_, v)| v.minor + 3 < target.minor)
    {
        return Err(UpgradeError::Refused {
            message: format!(
                "{h}'s kubelet runs {v}, more than three minors below {target}: the API server would no longer support it"
            ),
            help: format!(
                "upgrade {h} on its own first, or go through the minors in between; nothing was changed"
            ),
        });
    }
    Ok(cluster)
}

/// The steps in order: etcd hosts whose binaries differ, the first control plane, the other
/// control planes, then workers in batches of `max_unavailable`. A host whose journal says its
/// step was cut off is done again even if it looks upgraded.
pub fn steps(
    cx: &Ctx,
    target: KubeVersion,
    running: &BTreeMap<String, Running>,
    max_unavailable: usize,
) -> Vec<Step> {
    let cut_off =
        |host: &str, step: &str| cx.journal_status(host, step) == Some(StepStatus::Started);
    let show = |v: Option<KubeVersion>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    let mut out = Vec::new();
    for h in cx.plan.hosts.iter().filter(|h| h.has(Role::Etcd)) {
        let r = running.get(&h.name).cloned().unwrap_or_default();
        let Some(current) = r.etcd_current else {
            continue;
        };
        out.push(Step {
            host: h.name.clone(),
            action: Action::Etcd,
            from: r.etcd.clone().unwrap_or_else(|| "etcd ?".into()),
            to: if current {
                "the bundle's etcd (installed)".into()
            } else {
                "the bundle's etcd".into()
            },
            needed: !current || cut_off(&h.name, ETCD_STEP),
        });
    }
    let node = |h: &PlannedHost, action: Action| {
        let r = running.get(&h.name).cloned().unwrap_or_default();
        let at_target = r.kubelet == Some(target)
            && r.kubeadm == Some(target)
            && (!h.has(Role::ControlPlane) || r.apiserver == Some(target));
        let from = if h.has(Role::ControlPlane) {
            format!(
                "API server {}, kubelet {}",
                show(r.apiserver),
                show(r.kubelet)
            )
        } else {
            format!("kubelet {}", show(r.kubelet))
        };
        Step {
            host: h.name.clone(),
            action,
            from,
            to: target.to_string(),
            needed: !at_target || cut_off(&h.name, NODE_STEP),
        }
    };
    let first = cx.plan.first_control_plane().map(|h| h.name.clone());
    for h in cx.plan.control_planes() {
        let action = if Some(&h.name) == first.as_ref() {
            Action::Apply
        } else {
            Action::ControlPlane
        };
        out.push(node(h, action));
    }
    let workers: Vec<Step> = cx
        .plan
        .workers()
        .filter(|h| !h.has(Role::ControlPlane))
        .map(|h| node(h, Action::Worker { batch: 1 }))
        .collect();
    let needed: Vec<bool> = workers.iter().map(|s| s.needed).collect();
    for (mut s, batch) in workers.into_iter().zip(batches(&needed, max_unavailable)) {
        s.action = Action::Worker { batch };
        out.push(s);
    }
    out
}

/// Batch numbers (from 1) for the workers in order: a batch holds at most `max` workers that need
/// the upgrade; workers already done take no room in it.
fn batches(needed: &[bool], max: usize) -> Vec<usize> {
    let (mut batch, mut room) = (1, max.max(1));
    needed
        .iter()
        .map(|&n| {
            if n {
                if room == 0 {
                    batch += 1;
                    room = max.max(1);
                }
                room -= 1;
            }
            batch
        })
        .collect()
}

/// The Node list: name → (kubelet version it reports, unschedulable).
async fn nodes(api: &Api) -> Result<BTreeMap<String, (Option<KubeVersion>, bool)>, String> {
    Ok(api
        .nodes()
        .await?
        .into_iter()
        .filter_map(|n| {
            let version = n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .and_then(|i| KubeVersion::from_reported(&i.kubelet_version));
            let unschedulable = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
            Some((n.metadata.name?, (version, unschedulable)))
        })
        .collect())
}

/// `/version` of the API server at `url` (anonymous).
async fn apiserver_version(client: &reqwest::Client, url: &str) -> Option<KubeVersion> {
    let r = client.get(format!("{url}/version")).send().await.ok()?;
    let v: k8s_openapi::apimachinery::pkg::version::Info = r.json().await.ok()?;
    KubeVersion::from_reported(&v.git_version)
}

fn etcd_files(bundle: &Bundle) -> Vec<Desired> {
    bundle
        .files
        .iter()
        .filter(|f| f.hosts == HostClass::Etcd)
        .map(Desired::from)
        .collect()
}

/// What every host runs, read on the hosts and through the API; nothing changes.
async fn read_running(
    cx: &Ctx,
    bundle: &Bundle,
    api: &Api,
) -> Result<BTreeMap<String, Running>, UpgradeError> {
    let listed = nodes(api)
        .await
        .map_err(|e| UpgradeError::Refused {
            message: format!("cannot list the Nodes through the endpoint {}: {e}", api.server),
            help: "kbs upgrade needs the API up through the endpoint: check kbs status; nothing was changed".into(),
        })?;
    let anon = anonymous_client(cx)?;
    let etcd = etcd_files(bundle);
    let (listed, anon, etcd) = (&listed, &anon, &etcd);
    let read: Vec<Result<(String, Running), UpgradeError>> =
        futures::stream::iter(cx.plan.hosts.iter().map(|h| async move {
            Ok((h.name.clone(), read_host(cx, h, listed, anon, etcd).await?))
        }))
        .buffer_unordered(cx.opts.concurrency)
        .collect()
        .await;
    read.into_iter().collect()
}

/// What one host runs.
async fn read_host(
    cx: &Ctx,
    h: &PlannedHost,
    listed: &BTreeMap<String, (Option<KubeVersion>, bool)>,
    anon: &reqwest::Client,
    etcd: &[Desired],
) -> Result<Running, UpgradeError> {
    let mut r = Running::default();
    let s = cx.session(&h.name).await?;
    if h.has(Role::ControlPlane) || h.has(Role::Worker) {
        let Some((kubelet, _)) = listed.get(&h.name) else {
            return Err(UpgradeError::Refused {
                message: format!("{} is not a Node of the cluster", h.name),
                help: "run kbs apply (or kbs add-node) to finish building the cluster first; nothing was changed".into(),
            });
        };
        r.kubelet = *kubelet;
        let out = s
            .exec(Exec::new("kubeadm version -o short").sudo(true))
            .await?;
        r.kubeadm = KubeVersion::from_reported(&out.stdout_lossy());
    }
    if h.has(Role::ControlPlane)
        && let Some(url) = apiserver_url(cx, &h.name)
    {
        r.apiserver = apiserver_version(anon, &url).await;
    }
    if h.has(Role::Etcd) {
        let out = s
            .exec(Exec::new("etcd --version 2>/dev/null | head -n 1").sudo(true))
            .await?;
        r.etcd = Some(out.stdout_lossy().trim().to_string()).filter(|v| !v.is_empty());
        if !etcd.is_empty() {
            let probe: String = etcd
                .iter()
                .map(|f| {
                    let p = quote(&f.path);
                    format!(
                        "if [ -f {p} ]; then sha256sum < {p} | cut -c1-64; else echo missing; fi\n"
                    )
                })
                .collect();
            let out = s.exec(Exec::new(&probe).sudo(true)).await?;
            let text = out.stdout_lossy();
            let have: Vec<&str> = text.lines().collect();
            r.etcd_current = Some(
                etcd.len() == have.len()
                    && etcd.iter().zip(&have).all(|(f, h)| f.sha256 == h.trim()),
            );
        }
    }
    Ok(r)
}

/// Reads what runs and decides the steps; refuses what kubeadm would refuse.
pub async fn plan(
    cx: &mut Ctx,
    max_unavailable: usize,
    force: bool,
) -> Result<(UpgradePlan, Bundle), UpgradeError> {
    let bundle = load_artifacts(cx).await?;
    cx.facts = crate::phases::connect::gather(cx, Some(&bundle)).await?;
    let api = admin_client(&cx.state).map_err(|e| UpgradeError::Refused {
        message: format!("no admin credentials: {e}"),
        help: "kbs upgrade works on a cluster kbs built from this state dir (--state-dir)".into(),
    })?;
    let running = read_running(cx, &bundle, &api).await?;
    let target = cx.plan.inventory.cluster.kubernetes_version;
    let cluster = check_versions(target, &running, &cx.plan.inventory.path)?;
    let steps = steps(cx, target, &running, max_unavailable);
    let stale = if steps.iter().any(|s| s.needed) {
        removed_in(&api, target)
            .await
            .map_err(|e| UpgradeError::Refused {
                message: format!("cannot read the API's discovery: {e}"),
                help: "kbs upgrade checks for objects in API versions the target removes; fix the API, then run it again. Nothing was changed".into(),
            })?
    } else {
        Vec::new()
    };
    if !stale.is_empty() && !force {
        return Err(UpgradeError::Refused {
            message: format!(
                "the cluster serves {} through API versions Kubernetes {} no longer serves:\n  {}",
                crate::words::count(stale.len(), "object"),
                target.minor_of(),
                stale.join("\n  ")
            ),
            help: "clients and manifests still using these versions break after the upgrade: move them to the replacement, then run kbs upgrade again; --force upgrades anyway. Nothing was changed".into(),
        });
    }
    Ok((
        UpgradePlan {
            target,
            cluster,
            steps,
            running,
            forced: stale,
        },
        bundle,
    ))
}

/// Every object the API serves through a version that Kubernetes `target` does not serve any more
/// (data/versions.toml, from the deprecation guide), as Talos's `upgrade-k8s` checks: the API's
/// discovery says which of those versions it still serves, and each is listed.
async fn removed_in(api: &Api, target: KubeVersion) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Named {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    }
    let mut out = Vec::new();
    for r in crate::versions::catalog()
        .removed_apis
        .iter()
        .filter(|r| r.removed_in <= target.minor_of())
    {
        let Some(served) = api
            .get::<k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList>(&format!(
                "/apis/{}",
                r.group_version
            ))
            .await?
        else {
            continue;
        };
        for resource in r
            .resources
            .iter()
            .filter(|res| served.resources.iter().any(|s| &s.name == *res))
        {
            let items: Vec<Named> = api
                .list(&format!("/apis/{}/{resource}", r.group_version))
                .await?;
            for n in items {
                let name = match (n.metadata.namespace, n.metadata.name) {
                    (Some(ns), Some(name)) => format!("{ns}/{name}"),
                    (None, Some(name)) => name,
                    (_, None) => "?".into(),
                };
                out.push(format!(
                    "{resource} {name} in {} (removed in {}; use {})",
                    r.group_version, r.removed_in, r.replacement
                ));
            }
        }
    }
    Ok(out)
}

/// Runs the upgrade `plan` (from [`plan`]) on the hosts.
pub async fn run(
    cx: &Ctx,
    plan: UpgradePlan,
    bundle: Bundle,
) -> Result<UpgradeReport, UpgradeError> {
    let notes = Vec::new();
    let admin = admin_client(&cx.state).map_err(RunError::Verify)?;
    let anon = anonymous_client(cx)?;
    if plan.needed().next().is_none() {
        cx.disconnect_all().await;
        return Ok(UpgradeReport {
            plan,
            changes: Vec::new(),
            notes,
        });
    }
    // The hosts' run lock, as apply takes it: no other kbs run changes the cluster meanwhile.
    cx.lock().await?;
    if let Some(first) = cx.plan.etcd.first() {
        crate::context::etcd::wait_healthy(cx, &first.host).await?;
    }
    hooks::run(cx, HookPoint::BeforeUpgrade).await?;

    // 3. etcd, one host at a time, healthy in between.
    let etcd = etcd_files(&bundle);
    for step in plan.needed().filter(|s| s.action == Action::Etcd) {
        let host = step.host.as_str();
        let units: Vec<String> = cx
            .plan
            .etcd
            .iter()
            .filter(|m| m.host == host)
            .map(|m| format!("kbs-etcd@{}.service", m.name))
            .collect();
        cx.change(
            host,
            ETCD_STEP,
            format!("install the bundle's etcd, restart {}", units.join(", ")),
            async {
                sync(cx, host, "upgrade/etcd-binary", &etcd).await?;
                let s = cx.session(host).await?;
                for unit in &units {
                    Ctx::root(
                        &s,
                        host,
                        "upgrade/etcd-restart",
                        Exec::new(&format!("systemctl restart {unit}")),
                    )
                    .await?;
                    crate::context::etcd::wait_healthy(cx, host).await?;
                }
                Ok(())
            },
        )
        .await?;
    }

    // 4. and 5. Kubernetes nodes.
    let placeholders = JoinSecrets {
        token: JOIN_TOKEN_PLACEHOLDER.into(),
        ca_cert_hashes: vec![CA_CERT_HASH_PLACEHOLDER.into()],
    };
    let rendered = crate::phases::files::render(cx, &placeholders)?;
    let api = Upgrading {
        api: &admin,
        anon: &anon,
        target: plan.target,
    };
    for step in plan
        .needed()
        .filter(|s| matches!(s.action, Action::Apply | Action::ControlPlane))
    {
        upgrade_node(cx, &api, step, &bundle, &rendered).await?;
    }
    let batches = plan
        .needed()
        .filter_map(|s| match s.action {
            Action::Worker { batch } => Some(batch),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    for batch in 1..=batches {
        let in_batch: Vec<&Step> = plan
            .needed()
            .filter(|s| s.action == Action::Worker { batch })
            .collect();
        let (api, in_batch) = (&api, &in_batch);
        let (bundle, rendered) = (&bundle, &rendered);
        cx.each_host(
            in_batch.iter().map(|s| s.host.as_str()),
            |host| async move {
                match in_batch.iter().find(|s| s.host == host) {
                    Some(step) => upgrade_node(cx, api, step, bundle, rendered).await,
                    None => Ok(()),
                }
            },
        )
        .await?;
    }

    // 6. Everything reports the target.
    let listed = nodes(&admin).await.map_err(RunError::Verify)?;
    let mut behind = Vec::new();
    for h in &cx.plan.hosts {
        if let Some((v, unschedulable)) = listed.get(&h.name) {
            if *v != Some(plan.target) {
                behind.push(format!(
                    "  {}: kubelet reports {}",
                    h.name,
                    v.map_or("nothing".into(), |v| v.to_string())
                ));
            }
            if *unschedulable {
                behind.push(format!("  {}: still cordoned", h.name));
            }
        }
        if h.has(Role::ControlPlane)
            && let Some(url) = apiserver_url(cx, &h.name)
        {
            let v = apiserver_version(&anon, &url).await;
            if v != Some(plan.target) {
                behind.push(format!(
                    "  {}: API server reports {}",
                    h.name,
                    v.map_or("nothing".into(), |v| v.to_string())
                ));
            }
        }
    }
    if let Some(first) = cx.plan.etcd.first() {
        crate::context::etcd::wait_healthy(cx, &first.host).await?;
    }
    if behind.is_empty() {
        hooks::run(cx, HookPoint::AfterUpgrade).await?;
    }
    cx.disconnect_all().await;
    if !behind.is_empty() {
        return Err(RunError::Verify(format!(
            "after the upgrade, not everything runs {}:\n{}",
            plan.target,
            behind.join("\n")
        ))
        .into());
    }
    Ok(UpgradeReport {
        plan,
        changes: cx.changes(),
        notes,
    })
}

/// The API through the endpoint (admin) and anonymous (for `/readyz` and `/version`), and the
/// version being upgraded to.
struct Upgrading<'a> {
    api: &'a Api,
    anon: &'a reqwest::Client,
    target: KubeVersion,
}

fn step_error(host: &str, step: &str, message: String) -> RunError {
    RunError::Step {
        host: host.into(),
        step: step.into(),
        message,
    }
}

/// One Kubernetes node, as one journaled step: drain, (first control plane: kubeadm-config),
/// binaries and host files, kubeadm upgrade, kubelet restart, checks, uncordon, endpoint ready.
async fn upgrade_node(
    cx: &Ctx,
    api: &Upgrading<'_>,
    step: &Step,
    bundle: &Bundle,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(), RunError> {
    let host = step.host.as_str();
    let Some(h) = cx.plan.hosts.iter().find(|h| h.name == host) else {
        return Ok(());
    };
    let (verb, what) = match step.action {
        Action::Apply => ("apply", "kubeadm upgrade apply"),
        _ => ("node", "kubeadm upgrade node"),
    };
    let hp = cx.progress.host(host, NODE_STEP);
    cx.change(
        host,
        NODE_STEP,
        format!("upgrade to {}: drain, {what}, restart the kubelet, uncordon", api.target),
        async {
            hp.step("drain");
            for line in drain(api.api, host, false)
                .await
                .map_err(|e| step_error(host, "upgrade/drain", e))?
            {
                hp.line(&line);
            }
            if step.action == Action::Apply {
                hp.step("kubeadm-config");
                upload_cluster_configuration(api, host, rendered).await?;
            }
            hp.step("binaries and host files");
            for w in prepare_host(cx, h, bundle, rendered).await? {
                hp.line(&w);
            }
            let config = files_of(rendered, host, Part::Kubeadm)
                .into_iter()
                .find(|f| f.path.to_string_lossy() == UPGRADE_CONFIG_PATH)
                .ok_or_else(|| {
                    step_error(host, NODE_STEP, format!("the renderer made no {UPGRADE_CONFIG_PATH}"))
                })?;
            sync(cx, host, "upgrade/config", &[Desired::from(config)]).await?;
            hp.step(what);
            let s = cx.session(host).await?;
            let show = |_: crate::ssh::Stream, line: &str| hp.line(line);
            let yes = if verb == "apply" { " --yes" } else { "" };
            let kubeadm = format!(
                "kubeadm upgrade {verb} --config {UPGRADE_CONFIG_PATH}{yes}; rc=$?; rm -f {UPGRADE_CONFIG_PATH}; exit $rc"
            );
            Ctx::root(
                &s,
                host,
                &format!("upgrade/kubeadm-{verb}"),
                Exec::new(&kubeadm)
                    .on_line(&show)
                    .timeout(Duration::from_secs(600)),
            )
            .await?;
            hp.step("kubelet");
            Ctx::root(
                &s,
                host,
                "upgrade/kubelet",
                Exec::new("systemctl daemon-reload && systemctl restart kubelet"),
            )
            .await?;
            if h.has(Role::ControlPlane)
                && let Some(url) = apiserver_url(cx, host)
            {
                wait_ready(cx, api.anon, host, &url).await?;
                let v = apiserver_version(api.anon, &url).await;
                if v != Some(api.target) {
                    return Err(step_error(
                        host,
                        "upgrade/apiserver",
                        format!(
                            "the API server reports {} after {what}, not {}",
                            v.map_or("nothing".into(), |v| v.to_string()),
                            api.target
                        ),
                    ));
                }
            }
            wait_kubelet(api, host).await?;
            hp.step("uncordon");
            uncordon(api.api, host)
                .await
                .map_err(|e| step_error(host, "upgrade/uncordon", e))?;
            wait_ready(cx, api.anon, "endpoint", &api.api.server).await?;
            Ok(())
        },
    )
    .await?;
    hp.finish(None);
    Ok(())
}

/// What `kubeadm init phase upload-config kubeadm` does: the rendered ClusterConfiguration (with
/// the new kubernetesVersion and this version's API server flags) into the kubeadm-config
/// ConfigMap, which `kubeadm upgrade` reads.
async fn upload_cluster_configuration(
    api: &Upgrading<'_>,
    host: &str,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(), RunError> {
    let fail = |m: String| step_error(host, "upgrade/kubeadm-config", m);
    let init = files_of(rendered, host, Part::Kubeadm)
        .into_iter()
        .find(|f| f.path.ends_with("init.yaml"))
        .ok_or_else(|| fail("the renderer made no init.yaml for the first control plane".into()))?;
    let text = String::from_utf8_lossy(&init.content);
    let cc = text
        .split("\n---\n")
        .find(|d| d.lines().any(|l| l.trim() == "kind: ClusterConfiguration"))
        .ok_or_else(|| fail("init.yaml holds no ClusterConfiguration".into()))?;
    // A merge patch of the one key: the ConfigMap's other keys stay as kubeadm wrote them.
    let patch =
        serde_json::json!({ "data": { "ClusterConfiguration": format!("{}\n", cc.trim()) } });
    api.api
        .merge_patch(KUBEADM_CONFIG, &patch)
        .await
        .map_err(fail)
}

/// Waits until the host's Node reports the target kubelet version (the restarted kubelet).
async fn wait_kubelet(api: &Upgrading<'_>, host: &str) -> Result<(), RunError> {
    retry::until(HEALTH_WAIT, Duration::from_secs(1), || async {
        match nodes(api.api).await?.get(host) {
            Some((Some(v), _)) if *v == api.target => Ok(()),
            Some((v, _)) => Err(format!(
                "its Node reports kubelet {}",
                v.map_or("nothing".into(), |v| v.to_string())
            )),
            None => Err("no Node".into()),
        }
    })
    .await
    .map_err(|last| {
        step_error(
            host,
            "upgrade/kubelet",
            format!(
                "the kubelet does not report {} after {} s: {last}",
                api.target,
                HEALTH_WAIT.as_secs()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().expect("version")
    }

    fn cluster(api: &str, kubelet: &str) -> BTreeMap<String, Running> {
        BTreeMap::from([
            (
                "node-1".to_string(),
                Running {
                    apiserver: Some(v(api)),
                    kubelet: Some(v(kubelet)),
                    ..Default::default()
                },
            ),
            (
                "node-2".to_string(),
                Running {
                    kubelet: Some(v(kubelet)),
                    ..Default::default()
                },
            ),
        ])
    }

    #[test]
    fn reported_versions_are_parsed() {
        assert_eq!(
            KubeVersion::from_reported("Kubernetes v1.31.4\n"),
            Some(v("1.31.4"))
        );
        assert_eq!(
            KubeVersion::from_reported("v1.32.0+k3s1"),
            Some(v("1.32.0"))
        );
        assert_eq!(
            KubeVersion::from_reported("v1.33.0-rc.1"),
            Some(v("1.33.0"))
        );
        assert_eq!(KubeVersion::from_reported("command not found"), None);
    }

    #[test]
    fn workers_go_in_batches_of_max_unavailable() {
        assert_eq!(batches(&[true; 5], 1), [1, 2, 3, 4, 5]);
        assert_eq!(batches(&[true; 5], 2), [1, 1, 2, 2, 3]);
        assert_eq!(batches(&[true, false, true, true], 2), [1, 1, 1, 2]);
        assert_eq!(batches(&[false, false], 3), [1, 1]);
    }

    #[test]
    fn version_policy() {
        let inv = Path::new("inventory.toml");
        let running = cluster("1.31.4", "1.31.4");
        assert_eq!(
            check_versions(v("1.32.4"), &running, inv).expect("one minor"),
            v("1.31.4")
        );
        check_versions(v("1.31.4"), &running, inv).expect("same version: nothing to do");
        check_versions(v("1.31.9"), &running, inv).expect("a patch");
        let e = check_versions(v("1.33.1"), &running, inv).expect_err("skips 1.32");
        let text = format!(
            "{e} {:?}",
            miette::Diagnostic::help(&e).map(|h| h.to_string())
        );
        assert!(
            text.contains("cluster.kubernetes_version in inventory.toml is v1.33.1")
                && text.contains("skips a minor")
                && text.contains("upgrade to 1.32.x first"),
            "{text}"
        );
        let e = check_versions(v("1.31.2"), &running, inv).expect_err("downgrade");
        assert!(e.to_string().contains("downgrade"), "{e}");
        // A run cut off after the first control plane: the oldest API server counts.
        let mut half = cluster("1.32.4", "1.32.4");
        half.get_mut("node-2").expect("node-2").apiserver = Some(v("1.31.4"));
        check_versions(v("1.32.4"), &half, inv).expect("resume");
        assert!(check_versions(v("1.33.0"), &half, inv).is_err());
    }
}
