//! `kbs etcd defrag`: gives the free pages of every member's database back to the disk.
//! Kubernetes compacts etcd's history but never defragments, so the database file only grows
//! until it reaches the quota and etcd refuses writes (a NOSPACE alarm).
//!
//! A defrag blocks the member it runs on, so it goes one member at a time, followers first and
//! the leader last (a blocked leader would stall every write and may cause an election), with
//! every member healthy before each step. Alarms and sizes are read before and after; a NOSPACE
//! alarm is disarmed once every member is defragmented.

use std::time::Duration;

use super::status::{MemberStatus, etcd as member_statuses, human_bytes};
use crate::context::etcd::{etcdctl, etcdctl_at, wait_healthy};
use crate::context::{Ctx, RunError};

/// What a defragmentation did.
#[derive(Debug, Default)]
pub struct DefragReport {
    /// One line per member, in the order they were done: its size before and after.
    pub members: Vec<String>,
    /// Alarms found before, and whether they were disarmed.
    pub alarms: Vec<String>,
}

/// How long one member's defrag may take (it rewrites the whole database file).
const DEFRAG_LIMIT: Duration = Duration::from_secs(600);

fn refuse(message: String) -> RunError {
    RunError::Step {
        host: "etcd".into(),
        step: "etcd/defrag".into(),
        message,
    }
}

/// Followers first, the leader last; by name otherwise, so the order is stable.
fn order(members: &[MemberStatus]) -> Vec<&MemberStatus> {
    let mut order: Vec<&MemberStatus> = members.iter().collect();
    order.sort_by_key(|m| (m.leader, m.name.clone()));
    order
}

pub async fn run(cx: &Ctx) -> Result<DefragReport, RunError> {
    let before = member_statuses(cx).await;
    if let Some(m) = before.iter().find(|m| !m.healthy) {
        return Err(refuse(format!(
            "member {} is not healthy ({}): a defrag blocks one member at a time, which could then cost quorum; fix it first (kbs status). Nothing was changed",
            m.name,
            m.error.as_deref().unwrap_or("?")
        )));
    }
    let Some(ask) = before.first().map(|m| m.host.clone()) else {
        return Ok(DefragReport::default());
    };
    let alarms = alarm_list(cx, &ask).await?;
    let mut report = DefragReport::default();
    for m in order(&before) {
        let host = m.host.as_str();
        let s = cx.session(host).await?;
        let cmd = etcdctl_at(
            std::slice::from_ref(&m.endpoint),
            &format!("--command-timeout={}s defrag", DEFRAG_LIMIT.as_secs()),
        );
        cx.change(
            host,
            "etcd/defrag",
            format!(
                "defragment etcd member {}{} ({} on disk, {} in use)",
                m.name,
                if m.leader { ", the leader, last" } else { "" },
                m.db_size.map_or("-".into(), human_bytes),
                m.db_size_in_use.map_or("-".into(), human_bytes)
            ),
            Ctx::root(
                &s,
                host,
                "etcd/defrag",
                crate::ssh::Exec::new(&cmd).timeout(DEFRAG_LIMIT + Duration::from_secs(30)),
            ),
        )
        .await?;
        if !cx.opts.dry_run {
            wait_healthy(cx, host).await?;
        }
    }
    let after = if cx.opts.dry_run {
        Vec::new()
    } else {
        member_statuses(cx).await
    };
    for m in order(&before).into_iter().filter(|_| !cx.opts.dry_run) {
        let now = after.iter().find(|a| a.name == m.name);
        report.members.push(format!(
            "{} on {}: {} → {}",
            m.name,
            m.host,
            m.db_size.map_or("-".into(), human_bytes),
            now.and_then(|a| a.db_size).map_or("-".into(), human_bytes)
        ));
    }
    if !alarms.is_empty() {
        let s = cx.session(&ask).await?;
        let disarm = etcdctl(cx, "alarm disarm");
        cx.change(
            &ask,
            "etcd/alarm-disarm",
            format!("disarm the alarms ({})", alarms.join("; ")),
            Ctx::root(
                &s,
                &ask,
                "etcd/alarm-disarm",
                crate::ssh::Exec::new(&disarm),
            ),
        )
        .await?;
        let left = if cx.opts.dry_run {
            Vec::new()
        } else {
            alarm_list(cx, &ask).await?
        };
        report.alarms = alarms
            .into_iter()
            .map(|a| format!("{a}: disarmed"))
            .collect();
        if !left.is_empty() {
            return Err(refuse(format!(
                "alarms remain after the defrag and disarm: {}; the database may still be over its quota: delete data, or raise --quota-backend-bytes",
                left.join("; ")
            )));
        }
    }
    cx.disconnect_all().await;
    Ok(report)
}

/// `etcdctl alarm list`: one `memberID:<id> alarm:<NOSPACE|CORRUPT>` line per alarm.
async fn alarm_list(cx: &Ctx, host: &str) -> Result<Vec<String>, RunError> {
    let out = cx
        .sh(
            host,
            "etcd/alarm-list",
            &etcdctl(cx, "alarm list"),
            Duration::from_secs(30),
        )
        .await?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("alarm:"))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_goes_last() {
        let m = |name: &str, leader| MemberStatus {
            name: name.into(),
            leader,
            ..Default::default()
        };
        let members = [m("a", true), m("c", false), m("b", false)];
        let names: Vec<&str> = order(&members).iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
    }
}
