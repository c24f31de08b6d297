//! Day-two operations on a running cluster (docs/operations.md): `status`, `backup` and
//! `restore`, which read or do one operation through `Ops`; and renewing certificates (`renew`),
//! what each host serves (`served`), removing a host (`remove`) and tearing the cluster down
//! (`reset`) and upgrading it (`upgrade`), which reuse apply's context (`phases::Ctx`, `files::sync`, `etcd::etcdctl`, ...).

pub mod backup;
pub mod remove;
pub mod renew;
pub mod reset;
pub mod restore;
pub mod served;
pub mod status;
pub mod upgrade;

pub(crate) use crate::artifacts::sha256_hex;

use std::time::{Duration, Instant};

use crate::inventory::HostName;
use crate::phases::{ApplyError, Ctx};
use crate::plan::FailureTolerance;

/// An HTTPS client that trusts only the cluster CA of the state dir and presents no client
/// certificate: for the anonymous `/readyz`, which answers even when every client certificate
/// has expired.
pub(crate) fn anonymous_client(cx: &Ctx) -> Result<reqwest::Client, ApplyError> {
    let path = crate::pki::ca_cert_path(&cx.state);
    let fail = |message: String| ApplyError::Step {
        host: "local".into(),
        step: "pki".into(),
        message,
    };
    let ca = std::fs::read(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).map_err(|e| fail(e.to_string()))?])
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| fail(e.to_string()))
}

/// `https://<address>:<port>` of the API server on `host`.
pub(crate) fn apiserver_url(cx: &Ctx, host: &str) -> Option<String> {
    let h = cx.plan.host(host)?;
    Some(format!(
        "https://{}:{}",
        HostName::Ip(h.address),
        cx.plan.front.apiserver_port
    ))
}

/// Whether `url`/readyz answers 200 now.
pub(crate) async fn ready(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client.get(format!("{url}/readyz")).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url}/readyz: {}", r.status())),
        Err(e) => Err(format!("{url}/readyz: {e:#}")),
    }
}

/// Waits until the API server at `url` answers `/readyz` with 200.
pub(crate) async fn wait_ready(
    cx: &Ctx,
    client: &reqwest::Client,
    host: &str,
    url: &str,
) -> Result<(), ApplyError> {
    let hp = cx.progress.host(host, "API /readyz");
    let started = Instant::now();
    loop {
        match ready(client, url).await {
            Ok(()) => {
                hp.finish(None);
                return Ok(());
            }
            Err(problem) if started.elapsed() > crate::phases::HEALTH_WAIT => {
                hp.finish(Some(&problem));
                return Err(ApplyError::Step {
                    host: host.into(),
                    step: "apiserver/readyz".into(),
                    message: format!(
                        "not ready after {} s: {problem}",
                        crate::phases::HEALTH_WAIT.as_secs()
                    ),
                });
            }
            Err(problem) => hp.line(&problem),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One line per fact about what the cluster tolerates.
pub fn describe_tolerance(t: &FailureTolerance) -> Vec<String> {
    let mut out = vec![format!(
        "tolerates the loss of {} host(s) at once",
        t.host_failures_tolerated
    )];
    if !t.fatal_host_losses.is_empty() {
        out.push(format!(
            "losing any of these alone stops the cluster: {}",
            t.fatal_host_losses.join(", ")
        ));
    }
    out
}

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::inventory::Inventory;
use crate::plan::{ClusterPlan, EtcdMember};
use crate::ssh::{ConnectOptions, Connector, Exec, KnownHosts, Session, Target, Timeouts};
use crate::state::StateDir;

pub use backup::{BackupOptions, BackupReport};
pub use restore::{RestoreOptions, RestoreReport};
pub use status::{Health, Status};

/// Where `kbs backup` writes by default and `kbs status` looks for the last backup.
pub fn backups_dir(state: &StateDir) -> PathBuf {
    state.root().join("backups")
}

/// The plan, the state dir and one SSH connection per host, made on first use.
pub struct Ops {
    pub plan: ClusterPlan,
    pub state: StateDir,
    connector: Connector,
    targets: BTreeMap<String, Target>,
}

impl Ops {
    /// `timeouts` replaces every host's SSH timeouts (status uses short ones so a dead host
    /// cannot make it hang).
    pub fn new(
        inventory: Inventory,
        state: StateDir,
        accept_new_host_keys: bool,
        timeouts: Option<Timeouts>,
    ) -> miette::Result<Self> {
        let known = KnownHosts::new(state.root(), accept_new_host_keys);
        let mut targets = crate::phases::targets(&inventory)?;
        if let Some(t) = timeouts {
            for target in targets.values_mut() {
                target.timeouts = t;
                if let Some(j) = target.jump.as_mut() {
                    j.timeouts = t;
                }
            }
        }
        Ok(Self {
            plan: ClusterPlan::new(inventory),
            state,
            connector: Connector::new(ConnectOptions::new(known)),
            targets,
        })
    }

    pub fn cluster(&self) -> &str {
        &self.plan.inventory.cluster.name
    }

    /// The run's session to `host`; the error is one line naming the host.
    pub async fn session(&self, host: &str) -> Result<Session, String> {
        let target = self
            .targets
            .get(host)
            .ok_or_else(|| format!("{host}: not in the inventory"))?;
        self.connector
            .session(target)
            .await
            .map_err(|e| e.to_string())
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

    pub fn client_urls(&self) -> Vec<String> {
        self.plan.etcd.iter().map(EtcdMember::client_url).collect()
    }

    pub async fn disconnect(&self) {
        self.connector.disconnect_all().await;
    }

    /// Runs a root shell script on `host`; a non-zero exit is an error with the last lines.
    pub async fn sh(&self, host: &str, script: &str, limit: Duration) -> Result<String, String> {
        let s = self.session(host).await?;
        let out = s
            .exec(Exec::new(script).sudo(true).timeout(limit))
            .await
            .map_err(|e| e.to_string())?;
        if out.success() {
            Ok(out.stdout_lossy())
        } else {
            Err(format!(
                "{host}: {}: {}",
                out.status,
                out.last_lines.join(" | ")
            ))
        }
    }

    /// Polls `etcdctl endpoint health` against every member, from `host`, until all answer.
    pub async fn wait_etcd_healthy(&self, host: &str, limit: Duration) -> Result<(), String> {
        let cmd = crate::phases::etcdctl_at(&self.client_urls(), "endpoint health");
        let started = Instant::now();
        loop {
            let last = match self.sh(host, &cmd, Duration::from_secs(30)).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if started.elapsed() > limit {
                return Err(format!(
                    "etcd is not healthy after {} s: {last}",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// A shell word for a remote script.
pub(crate) fn q(s: &str) -> String {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| "''".into())
}

/// The shell snippet that prints `etcdutl` when this host has it (etcd 3.5+), else `etcdctl`:
/// the offline snapshot commands (status, restore) moved to etcdutl in 3.5 and left etcdctl in 3.6.
pub(crate) const SNAPSHOT_TOOL: &str = "if command -v etcdutl >/dev/null 2>&1; then tool=etcdutl; else tool=etcdctl; export ETCDCTL_API=3; fi";

/// `20261122T031500Z`: sorts by time, safe in file names.
pub(crate) fn utc_stamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
