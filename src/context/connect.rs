//! SSH targets for every host (host keys pinned or checked against the state dir's known hosts)
//! and the cluster's run lock on the hosts.

use std::collections::BTreeMap;

use super::{Ctx, Options, RunError};
use crate::inventory::{Inventory, JumpHost};
use crate::plan::ClusterPlan;
use crate::ssh::{ConnectOptions, Connector, Exec, Held, KnownHosts, Target};
use crate::state::StateDir;

/// SSH targets for every host of the inventory, keyed by host name.
pub fn targets(inventory: &Inventory) -> BTreeMap<String, Target> {
    inventory
        .hosts
        .iter()
        .map(|h| {
            let mut t = Target::new(&h.name, h.address, &h.ssh.user);
            t.port = h.ssh.port;
            t.identity_file = h.ssh.identity_file.clone();
            t.host_key = h.host_key.clone();
            t.jump = h
                .ssh
                .jump_host
                .as_ref()
                .map(|j| Box::new(jump_target(j, &t)));
            (h.name.clone(), t)
        })
        .collect()
}

fn jump_target(j: &JumpHost, behind: &Target) -> Target {
    let mut t = Target::new(format!("{}@{}", j.user, j.address), j.address, &j.user);
    t.port = j.port;
    t.identity_file = behind.identity_file.clone();
    t.host_key = j.host_key.clone();
    t
}

pub(crate) fn connector(
    plan: &ClusterPlan,
    state: &StateDir,
    opts: &Options,
) -> Result<(Connector, BTreeMap<String, Target>), RunError> {
    let known = KnownHosts::new(state.root(), opts.accept_new_host_keys);
    let mut targets = targets(&plan.inventory);
    if let Some(t) = opts.timeouts {
        for target in targets.values_mut() {
            target.timeouts = t;
            if let Some(j) = target.jump.as_mut() {
                j.timeouts = t;
            }
        }
    }
    Ok((Connector::new(ConnectOptions::new(known)), targets))
}

/// Where every host keeps kbs's run lock (tmpfs: a reboot frees it) and who holds it.
const LOCK: &str = "/run/lock/kbs.lock";

/// Takes the cluster's run lock on every host in scope and on the first control plane, so two
/// runs from two machines (or two state dirs) cannot change one cluster at once. A remote
/// process holds `flock` for as long as kbs's SSH channel stays open: the lock is gone the
/// moment the run ends, whether it finished, failed or was killed.
pub(crate) async fn lock(cx: &Ctx) -> Result<Vec<Held>, RunError> {
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
        crate::state::utc_stamp(time::OffsetDateTime::now_utc())
    );
    let script = format!(
        "exec 9>>{LOCK} || exit 4\n\
         if ! flock -n 9; then echo \"held by $(cat {LOCK}.owner 2>/dev/null)\"; exit 3; fi\n\
         echo {} > {LOCK}.owner\necho locked\nexec cat >/dev/null",
        crate::ssh::quote(&owner)
    );
    let held = cx
        .each_host(hosts, |host| {
            let script = &script;
            async move {
                let s = cx.session(host).await?;
                match s.hold(Exec::new(script).sudo(true), "locked").await? {
                    Ok(h) => Ok(h),
                    Err(out) => Err(RunError::Locked {
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
