//! Connect to every host (host keys verified, sudo checked) and gather its facts in one round
//! trip, plus the fsync latency where etcd's data will live.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use super::{ApplyError, Ctx, Options};
use crate::facts::{FSYNC_SCRIPT, Facts, GATHER_SCRIPT, fsync_p99_ms};
use crate::inventory::{Inventory, JumpHost};
use crate::plan::ClusterPlan;
use crate::ssh::{ConnectOptions, Connector, Exec, Held, KnownHosts, Target, parse_host_key};
use crate::state::StateDir;

/// SSH targets for every host of the inventory, keyed by host name.
pub fn targets(inventory: &Inventory) -> Result<BTreeMap<String, Target>, ApplyError> {
    let bad_key = |host: &str, e: String| ApplyError::Step {
        host: host.into(),
        step: "connect".into(),
        message: format!("host_key: {e}"),
    };
    inventory
        .hosts
        .iter()
        .map(|h| {
            let mut t = Target::new(&h.name, h.address, &h.ssh.user);
            t.port = h.ssh.port;
            t.identity_file = h.ssh.identity_file.clone();
            t.host_key = h
                .host_key
                .as_deref()
                .map(parse_host_key)
                .transpose()
                .map_err(|e| bad_key(&h.name, e))?;
            t.jump = match &h.ssh.jump_host {
                Some(j) => Some(Box::new(
                    jump_target(j, &t).map_err(|e| bad_key(&h.name, e))?,
                )),
                None => None,
            };
            Ok((h.name.clone(), t))
        })
        .collect()
}

fn jump_target(j: &JumpHost, behind: &Target) -> Result<Target, String> {
    let mut t = Target::new(format!("{}@{}", j.user, j.address), j.address, &j.user);
    t.port = j.port;
    t.identity_file = behind.identity_file.clone();
    t.host_key = j.host_key.as_deref().map(parse_host_key).transpose()?;
    Ok(t)
}

pub(crate) fn connector(
    plan: &ClusterPlan,
    state: &StateDir,
    opts: &Options,
) -> Result<(Connector, BTreeMap<String, Target>), ApplyError> {
    let known = KnownHosts::new(state.root(), opts.accept_new_host_keys);
    Ok((
        Connector::new(ConnectOptions::new(known)),
        targets(&plan.inventory)?,
    ))
}

pub(crate) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Facts of every host in scope, gathered in parallel; any host that fails stops the run here,
/// before anything changed, with every failure listed.
pub(crate) async fn gather(cx: &Ctx) -> Result<BTreeMap<String, Facts>, ApplyError> {
    let hosts: Vec<String> = cx.hosts().map(|h| h.name.clone()).collect();
    let results: Vec<(String, Result<Facts, ApplyError>)> = futures::stream::iter(hosts)
        .map(|h| async move {
            let r = gather_one(cx, &h).await;
            (h, r)
        })
        .buffer_unordered(crate::ssh::DEFAULT_CONCURRENCY)
        .collect()
        .await;
    let mut facts = BTreeMap::new();
    let mut errors = Vec::new();
    for (host, r) in results {
        match r {
            Ok(f) => {
                facts.insert(host, f);
            }
            Err(e) => errors.push(format!("  {host}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(facts)
    } else {
        errors.sort();
        Err(ApplyError::Unreachable {
            count: errors.len(),
            details: errors.join("\n"),
        })
    }
}

async fn gather_one(cx: &Ctx, host: &str) -> Result<Facts, ApplyError> {
    let hp = cx.progress.host(host, "connect");
    let result = async {
        let s = cx.session(host).await?;
        hp.step("facts");
        let before = now_ns();
        // sudo -n here proves passwordless sudo before any change is attempted.
        let out = s.run(Exec::new(GATHER_SCRIPT).sudo(true)).await?;
        let mid = before + (now_ns() - before) / 2;
        let mut facts = Facts::parse(&out.stdout_lossy(), mid).map_err(|e| ApplyError::Step {
            host: host.into(),
            step: "facts".into(),
            message: e.to_string(),
        })?;
        hp.step("fsync probe");
        for m in cx.plan.etcd.iter().filter(|m| m.host == host) {
            let dir = m.data_dir.display().to_string();
            let q = shlex::try_quote(&dir).map_err(|_| ApplyError::Step {
                host: host.into(),
                step: "facts".into(),
                message: format!("data dir {dir} cannot be quoted"),
            })?;
            let out = s
                .run(
                    Exec::new(&format!("sh -s {q}"))
                        .sudo(true)
                        .stdin(FSYNC_SCRIPT.as_bytes())
                        .timeout(Duration::from_secs(120)),
                )
                .await?;
            if let Some(p99) = fsync_p99_ms(&out.stdout_lossy()) {
                facts.fsync_p99_ms.insert(dir, p99);
            }
        }
        Ok(facts)
    }
    .await;
    hp.finish(result.as_ref().err().map(ToString::to_string).as_deref());
    result
}

/// Where every host keeps kbs's run lock (tmpfs: a reboot frees it) and who holds it.
const LOCK: &str = "/run/lock/kbs.lock";

/// Takes the cluster's run lock on every host in scope and on the first control plane, so two
/// runs from two machines (or two state dirs) cannot change one cluster at once. A remote
/// process holds `flock` for as long as kbs's SSH channel stays open: the lock is gone the
/// moment the run ends, whether it finished, failed or was killed.
pub(crate) async fn lock(cx: &Ctx) -> Result<Vec<Held>, ApplyError> {
    let first = cx.plan.first_control_plane().map(|h| h.name.as_str());
    let hosts: Vec<&str> = cx
        .plan
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .filter(|h| cx.in_scope(h) || Some(*h) == first)
        .collect();
    let owner = format!(
        "kbs pid {} on {} since {}",
        std::process::id(),
        local_hostname(),
        crate::ops::utc_stamp(time::OffsetDateTime::now_utc())
    );
    let script = format!(
        "exec 9>>{LOCK} || exit 4\n\
         if ! flock -n 9; then echo \"held by $(cat {LOCK}.owner 2>/dev/null)\"; exit 3; fi\n\
         echo {} > {LOCK}.owner\necho locked\nexec cat >/dev/null",
        crate::ops::q(&owner)
    );
    let held = super::each_host(hosts, |host| {
        let script = &script;
        async move {
            let s = cx.session(host).await?;
            match s.hold(Exec::new(script).sudo(true), "locked").await? {
                Ok(h) => Ok(h),
                Err(out) => Err(ApplyError::Locked {
                    host: host.into(),
                    by: out
                        .stdout_lossy()
                        .lines()
                        .find_map(|l| l.strip_prefix("held by "))
                        .map_or_else(
                            || format!("(cannot take {LOCK}: {})", out.last_lines.join(" | ")),
                            str::to_string,
                        ),
                }),
            }
        }
    })
    .await?;
    Ok(held)
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
