//! Day-two operations on a running cluster: `kbs status`, `kbs backup`, `kbs restore`
//! (docs/operations.md). They reuse apply's building blocks (SSH targets from the inventory,
//! kbs's etcdctl client certificate on the etcd hosts, the admin client through the endpoint)
//! but not its phases: they never converge anything, they read or they do one operation.

pub mod backup;
pub mod restore;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

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

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
