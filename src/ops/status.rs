//! `kbs status`: one look at the whole cluster. Every probe has its own time limit and all run
//! at once, so a dead host costs a few seconds, never a hang.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The share of its quota past which an etcd member's database degrades the status; the
/// monitoring addon's alert fires at the same share.
pub const ETCD_QUOTA_DEGRADED_PERCENT: u32 = 80;

use serde::{Deserialize, Serialize};

use super::remove::RemovalAdvice;
use crate::context::Ctx;
use crate::context::etcd::client_urls;
use crate::inventory::HostName;
use crate::ssh::{Timeouts, quote};

/// Short SSH limits for status: a host that does not answer within these is "unreachable".
pub const STATUS_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    command: Duration::from_secs(20),
    keepalive_interval: Duration::from_secs(2),
    keepalive_max: 2,
};

/// Per probe (one host, one etcd query, one /readyz), whatever happens inside.
const PROBE_LIMIT: Duration = Duration::from_secs(25);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    /// Works, but with less margin: a host, member or API server is down, certificates expire
    /// soon, or something could not be checked.
    Degraded,
    /// etcd has no quorum or the API does not answer through the endpoint.
    Down,
}

impl Health {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Degraded => 1,
            Self::Down => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub cluster: String,
    pub health: Health,
    /// Why it is not healthy, one line each.
    pub problems: Vec<String>,
    pub hosts: Vec<HostStatus>,
    pub etcd: Vec<MemberStatus>,
    pub api: Vec<ApiStatus>,
    pub certificates: Option<CertSummary>,
    pub last_backup: Option<BackupSummary>,
    /// The snapshot timer on each etcd host; empty when `[backup]` turns it off.
    pub scheduled_snapshots: Vec<ScheduledSnapshots>,
    /// With hosts down: how to take them out while etcd keeps quorum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removal_advice: Option<RemovalAdvice>,
}

/// What the snapshot timer left on one etcd host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScheduledSnapshots {
    pub host: String,
    /// Age of the newest snapshot; `None` when there is none yet.
    pub newest_age_seconds: Option<u64>,
    /// The schedule's interval (between its next two runs).
    pub interval_seconds: Option<u64>,
    /// The last run failed (`systemctl is-failed kbs-etcd-backup.service`).
    pub last_run_failed: bool,
    pub timer_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ScheduledSnapshots {
    /// Why this host's scheduled snapshots need attention, if they do.
    fn problem(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("cannot read its snapshots: {e}"));
        }
        if !self.timer_enabled {
            return Some("the snapshot timer is not enabled: run kbs apply".into());
        }
        if self.last_run_failed {
            return Some(
                "the last scheduled snapshot failed: journalctl -u kbs-etcd-backup.service".into(),
            );
        }
        match (self.newest_age_seconds, self.interval_seconds) {
            (Some(age), Some(every)) if age > 2 * every => Some(format!(
                "the newest snapshot is {} old, more than twice the schedule's {}",
                human_age(age),
                human_age(every)
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub address: String,
    pub roles: Vec<String>,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub host: String,
    pub endpoint: String,
    pub healthy: bool,
    pub leader: bool,
    pub db_size: Option<u64>,
    /// What the data takes; the rest of `db_size` is free pages a defrag gives back.
    pub db_size_in_use: Option<u64>,
    pub raft_index: Option<u64>,
    pub raft_term: Option<u64>,
    pub revision: Option<u64>,
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiStatus {
    /// `endpoint`, or the control plane's host name.
    pub name: String,
    pub url: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertSummary {
    /// The certificate that expires first, relative to the state directory.
    pub soonest: PathBuf,
    pub not_after: String,
    pub days_left: i64,
    /// The worst of all certificates: ok, expiring (within `PkiSettings::WARN_DAYS`), expired,
    /// invalid.
    pub worst: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub age_seconds: u64,
}

/// etcdctl `endpoint status -w json` (3.4 and 3.5 agree on these fields).
#[derive(Deserialize)]
struct EpStatus {
    #[serde(rename = "Endpoint")]
    endpoint: String,
    #[serde(rename = "Status")]
    status: EpStatusBody,
}

#[derive(Deserialize)]
struct EpStatusBody {
    header: EpHeader,
    version: Option<String>,
    #[serde(rename = "dbSize")]
    db_size: Option<u64>,
    #[serde(rename = "dbSizeInUse")]
    db_size_in_use: Option<u64>,
    leader: Option<u64>,
    #[serde(rename = "raftIndex")]
    raft_index: Option<u64>,
    #[serde(rename = "raftTerm")]
    raft_term: Option<u64>,
}

#[derive(Deserialize)]
struct EpHeader {
    member_id: Option<u64>,
    revision: Option<u64>,
}

/// etcdctl `endpoint health -w json`.
#[derive(Deserialize)]
struct EpHealth {
    endpoint: String,
    health: bool,
    #[serde(default)]
    error: Option<String>,
}

/// Looks at everything at once and classifies the result.
pub async fn status(cx: &Ctx) -> Status {
    let (hosts, etcd, api, scheduled_snapshots) =
        futures::join!(hosts(cx), etcd(cx), api(cx), scheduled_snapshots(cx));
    let certificates = certificates(cx);
    let last_backup = last_backup(&super::backups_dir(&cx.state));
    cx.disconnect_all().await;

    let down: std::collections::BTreeSet<String> = hosts
        .iter()
        .filter(|h| !h.reachable)
        .map(|h| h.name.clone())
        .collect();
    let removal_advice = (!down.is_empty())
        .then(|| super::remove::removal_order(&cx.plan, &down, &cx.plan.inventory.path));
    let mut problems = Vec::new();
    let mut health = Health::Healthy;
    let mut worse = |h: Health, p: String, problems: &mut Vec<String>| {
        health = health.max(h);
        problems.push(p);
    };
    for h in hosts.iter().filter(|h| !h.reachable) {
        worse(
            Health::Degraded,
            format!(
                "host {} is unreachable: {}",
                h.name,
                h.error.as_deref().unwrap_or("?")
            ),
            &mut problems,
        );
    }
    let healthy = etcd.iter().filter(|m| m.healthy).count();
    if !etcd.is_empty() && healthy <= etcd.len() / 2 {
        worse(
            Health::Down,
            format!(
                "etcd has no quorum: {healthy} of {} members healthy",
                etcd.len()
            ),
            &mut problems,
        );
    } else {
        for m in etcd.iter().filter(|m| !m.healthy) {
            worse(
                Health::Degraded,
                format!(
                    "etcd member {} is unhealthy: {}",
                    m.name,
                    m.error.as_deref().unwrap_or("?")
                ),
                &mut problems,
            );
        }
        let quota = crate::versions::catalog().etcd_default_quota_bytes;
        for m in etcd.iter().filter(|m| {
            m.db_size
                .is_some_and(|s| s > quota / 100 * u64::from(ETCD_QUOTA_DEGRADED_PERCENT))
        }) {
            worse(
                Health::Degraded,
                format!(
                    "etcd member {}'s database is {} of the {} quota: past it etcd refuses writes; run `kbs etcd defrag` (docs/operations.md)",
                    m.name,
                    m.db_size.map_or("-".into(), human_bytes),
                    human_bytes(quota)
                ),
                &mut problems,
            );
        }
        if !etcd.is_empty() && etcd.iter().filter(|m| m.leader).count() != 1 {
            worse(
                Health::Degraded,
                "etcd: no single leader among the members that answered".into(),
                &mut problems,
            );
        }
    }
    for a in api.iter().filter(|a| !a.ready) {
        let h = if a.name == "endpoint" {
            Health::Down
        } else {
            Health::Degraded
        };
        worse(
            h,
            format!(
                "API {} ({}) is not ready: {}",
                a.name,
                a.url,
                a.error.as_deref().unwrap_or("?")
            ),
            &mut problems,
        );
    }
    for s in &scheduled_snapshots {
        if let Some(p) = s.problem() {
            worse(
                Health::Degraded,
                format!("snapshots on {}: {p}", s.host),
                &mut problems,
            );
        }
    }
    match &certificates {
        Ok(c) if c.worst != "ok" => worse(
            Health::Degraded,
            format!(
                "certificates: {} (soonest {} in {} days)",
                c.worst,
                c.soonest.display(),
                c.days_left
            ),
            &mut problems,
        ),
        Ok(_) => {}
        Err(e) => worse(
            Health::Degraded,
            format!("certificates: {e}"),
            &mut problems,
        ),
    }
    Status {
        cluster: cx.cluster().to_string(),
        health,
        problems,
        hosts,
        etcd,
        api,
        certificates: certificates.ok(),
        last_backup,
        scheduled_snapshots,
        removal_advice,
    }
}

/// Each etcd host's newest scheduled snapshot, the schedule's interval (from systemd, which
/// understands every calendar expression), and whether the timer runs and its last run worked.
async fn scheduled_snapshots(cx: &Ctx) -> Vec<ScheduledSnapshots> {
    let b = &cx.plan.inventory.backup;
    let Some(schedule) = &b.schedule else {
        return Vec::new();
    };
    let script = format!(
        "dir={dir}; echo now $(date +%s)\n\
         n=$(ls -1 \"$dir\" 2>/dev/null | grep -E '^{cluster}-[0-9]{{8}}T[0-9]{{6}}Z-rev[0-9]+\\.db$' | sort -r | head -n 1)\n\
         [ -z \"$n\" ] || echo newest $(stat -c %Y \"$dir/$n\")\n\
         systemd-analyze calendar --iterations=2 {schedule} 2>/dev/null \\\n\
           | sed -n 's/^ *\\(Next elapse\\|Iter[a-z.]* #2\\): //p' \\\n\
           | while read -r t; do echo next $(date -u -d \"$t\" +%s); done\n\
         systemctl is-failed -q kbs-etcd-backup.service && echo failed\n\
         systemctl is-enabled -q kbs-etcd-backup.timer && echo enabled\n\
         true",
        dir = quote(&b.dir),
        cluster = cx.cluster(),
        schedule = quote(schedule),
    );
    let probes = cx.etcd_hosts().into_iter().map(|host| {
        let script = &script;
        async move {
            let mut s = ScheduledSnapshots {
                host: host.clone(),
                ..Default::default()
            };
            let out =
                tokio::time::timeout(PROBE_LIMIT, cx.sh(&host, "status", script, PROBE_LIMIT))
                    .await;
            match out {
                Ok(Ok(out)) => s.read(&out),
                Ok(Err(e)) => s.error = Some(e.to_string()),
                Err(_) => s.error = Some(format!("no answer within {} s", PROBE_LIMIT.as_secs())),
            }
            s
        }
    });
    futures::future::join_all(probes).await
}

impl ScheduledSnapshots {
    /// Reads the probe's `now`, `newest`, `next` (twice), `failed` and `enabled` lines.
    fn read(&mut self, out: &str) {
        let (mut now, mut newest, mut next) = (None, None, Vec::new());
        for line in out.lines() {
            let mut w = line.split_whitespace();
            let (key, value) = (w.next(), w.next().and_then(|v| v.parse::<u64>().ok()));
            match (key, value) {
                (Some("now"), v) => now = v,
                (Some("newest"), v) => newest = v,
                (Some("next"), Some(v)) => next.push(v),
                (Some("failed"), _) => self.last_run_failed = true,
                (Some("enabled"), _) => self.timer_enabled = true,
                _ => {}
            }
        }
        self.newest_age_seconds = now.zip(newest).map(|(n, t)| n.saturating_sub(t));
        self.interval_seconds = match next[..] {
            [a, b, ..] if b > a => Some(b - a),
            _ => None,
        };
    }
}

async fn hosts(cx: &Ctx) -> Vec<HostStatus> {
    let probes = cx.plan.hosts.iter().map(|h| async move {
        let probe = async {
            cx.sh(&h.name, "status", "true", Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        };
        let error = match tokio::time::timeout(PROBE_LIMIT, probe).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {} s", PROBE_LIMIT.as_secs())),
        };
        HostStatus {
            name: h.name.clone(),
            address: h.address.to_string(),
            roles: h.roles.iter().map(|r| r.as_str().to_string()).collect(),
            reachable: error.is_none(),
            error,
        }
    });
    futures::future::join_all(probes).await
}

/// Asks the etcd hosts in turn (the first that answers) for every member's status and health.
pub(crate) async fn etcd(cx: &Ctx) -> Vec<MemberStatus> {
    let mut members: Vec<MemberStatus> = cx
        .plan
        .etcd
        .iter()
        .map(|m| MemberStatus {
            name: m.name.clone(),
            host: m.host.clone(),
            endpoint: m.client_url(),
            ..Default::default()
        })
        .collect();
    let urls = client_urls(cx);
    // `endpoint status` stops at nothing: it prints what answered and exits 1 for the rest.
    let script = format!(
        "{}; echo '--- kbs ---'; {}; true",
        crate::context::etcd::etcdctl_at(&urls, "endpoint status -w json"),
        crate::context::etcd::etcdctl_at(&urls, "endpoint health -w json"),
    );
    let mut last_error = "no etcd host answered".to_string();
    for host in cx.etcd_hosts() {
        let out =
            match tokio::time::timeout(PROBE_LIMIT, cx.sh(&host, "status", &script, PROBE_LIMIT))
                .await
            {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    continue;
                }
                Err(_) => {
                    last_error = format!("{host}: no answer within {} s", PROBE_LIMIT.as_secs());
                    continue;
                }
            };
        let (status_json, health_json) = out.split_once("--- kbs ---").unwrap_or((&out, ""));
        let statuses: Vec<EpStatus> = serde_json::from_str(status_json.trim()).unwrap_or_default();
        let health: Vec<EpHealth> = serde_json::from_str(health_json.trim()).unwrap_or_default();
        let health: BTreeMap<&str, &EpHealth> =
            health.iter().map(|h| (h.endpoint.as_str(), h)).collect();
        for m in &mut members {
            let Some(st) = statuses.iter().find(|s| s.endpoint == m.endpoint) else {
                m.error = Some(
                    health
                        .get(m.endpoint.as_str())
                        .and_then(|h| h.error.clone())
                        .unwrap_or_else(|| format!("no status from {}", m.endpoint)),
                );
                continue;
            };
            let s = &st.status;
            m.leader = s.leader.is_some() && s.leader == s.header.member_id;
            m.db_size = s.db_size;
            m.db_size_in_use = s.db_size_in_use;
            m.raft_index = s.raft_index;
            m.raft_term = s.raft_term;
            m.revision = s.header.revision;
            m.version = s.version.clone();
            match health.get(m.endpoint.as_str()) {
                Some(h) if h.health => m.healthy = true,
                Some(h) => m.error = Some(h.error.clone().unwrap_or_else(|| "unhealthy".into())),
                // An etcdctl without `endpoint health -w json`: a member that reports a leader
                // answered and is part of a working cluster.
                None if health_json.trim().is_empty() || !health_json.contains('[') => {
                    m.healthy = s.leader.is_some_and(|l| l != 0);
                }
                None => m.error = Some("no health answer".into()),
            }
        }
        return members;
    }
    for m in &mut members {
        m.error = Some(last_error.clone());
    }
    members
}

/// `/readyz` through the endpoint with the admin kubeconfig, and on each control plane.
async fn api(cx: &Ctx) -> Vec<ApiStatus> {
    let mut targets: Vec<(String, String)> = Vec::new();
    let client = crate::context::api::admin_client(&cx.state);
    let crate::context::api::Api { client, server } = match client {
        Ok(c) => c,
        Err(e) => {
            return vec![ApiStatus {
                name: "endpoint".into(),
                url: cx.plan.front.endpoint.clone(),
                ready: false,
                error: Some(format!("no admin kubeconfig: {e}")),
            }];
        }
    };
    targets.push(("endpoint".into(), server.clone()));
    for h in cx.plan.control_planes() {
        targets.push((
            h.name.clone(),
            format!(
                "https://{}:{}",
                HostName::Ip(h.address),
                cx.plan.front.apiserver_port
            ),
        ));
    }
    let probes = targets.into_iter().map(|(name, url)| {
        let client = client.clone();
        async move {
            let get = client
                .get(format!("{url}/readyz"))
                .timeout(Duration::from_secs(8))
                .send();
            let error = match tokio::time::timeout(PROBE_LIMIT, get).await {
                Ok(Ok(r)) if r.status().is_success() => None,
                Ok(Ok(r)) => Some(format!("/readyz: {}", r.status())),
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some(format!("no answer within {} s", PROBE_LIMIT.as_secs())),
            };
            ApiStatus {
                name,
                url,
                ready: error.is_none(),
                error,
            }
        }
    });
    futures::future::join_all(probes).await
}

fn certificates(cx: &Ctx) -> Result<CertSummary, String> {
    let report = crate::pki::check(
        &cx.state,
        crate::inventory::PkiSettings::WARN_DAYS,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| e.to_string())?;
    let soonest = report
        .certificates
        .iter()
        .min_by_key(|c| c.days_left)
        .ok_or("no certificates in the state directory")?;
    Ok(CertSummary {
        soonest: soonest.path.clone(),
        not_after: soonest.not_after.clone(),
        days_left: soonest.days_left,
        worst: report.worst().as_str().to_string(),
    })
}

/// The newest backup file under `dir` (and its per-host subdirectories from `--fetch`).
pub fn last_backup(dir: &Path) -> Option<BackupSummary> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut consider = |p: PathBuf| {
        let name = p.file_name()?.to_string_lossy().into_owned();
        if !(name.ends_with(".db") || name.ends_with(".db.age")) {
            return None;
        }
        let t = p.metadata().ok()?.modified().ok()?;
        if newest.as_ref().is_none_or(|(n, _)| t > *n) {
            newest = Some((t, p));
        }
        Some(())
    };
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                consider(e.path());
            }
        } else {
            consider(p);
        }
    }
    let (t, path) = newest?;
    Some(BackupSummary {
        path,
        age_seconds: SystemTime::now()
            .duration_since(t)
            .map_or(0, |d| d.as_secs()),
    })
}

/// `3d 4h`, `12m 5s`.
pub fn human_age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The human view: one table, then certificates, backup, and the verdict with its reasons.
pub fn render_table(s: &Status) -> String {
    use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["component", "name", "where", "state", "details"]);
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for h in &s.hosts {
        t.add_row([
            "host".to_string(),
            h.name.clone(),
            h.address.clone(),
            if h.reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            }
            .to_string(),
            h.error.clone().unwrap_or_else(|| h.roles.join(",")),
        ]);
    }
    for m in &s.etcd {
        let state = match (m.healthy, m.leader) {
            (true, true) => "healthy, leader",
            (true, false) => "healthy",
            (false, _) => "UNHEALTHY",
        };
        let details = match &m.error {
            Some(e) => e.clone(),
            None => format!(
                "db {}, raft index {}, term {}, rev {}",
                m.db_size.map_or("-".into(), human_bytes),
                opt(m.raft_index),
                opt(m.raft_term),
                opt(m.revision)
            ),
        };
        t.add_row([
            "etcd".to_string(),
            m.name.clone(),
            m.endpoint.clone(),
            state.to_string(),
            details,
        ]);
    }
    for a in &s.api {
        t.add_row([
            "api".to_string(),
            a.name.clone(),
            a.url.clone(),
            if a.ready { "ready" } else { "NOT READY" }.to_string(),
            a.error.clone().unwrap_or_default(),
        ]);
    }
    let mut out = format!("{t}\n");
    match &s.certificates {
        Some(c) => out.push_str(&format!(
            "certificates: {} (soonest: {} on {}, {} days)\n",
            c.worst,
            c.soonest.display(),
            c.not_after,
            c.days_left
        )),
        None => out.push_str("certificates: unknown\n"),
    }
    if !s.scheduled_snapshots.is_empty() {
        let each: Vec<String> = s
            .scheduled_snapshots
            .iter()
            .map(|h| match (&h.error, h.newest_age_seconds) {
                (Some(_), _) => format!("{} unknown", h.host),
                (None, Some(age)) => format!("{} {} ago", h.host, human_age(age)),
                (None, None) => format!("{} none yet", h.host),
            })
            .collect();
        let every = s
            .scheduled_snapshots
            .iter()
            .find_map(|h| h.interval_seconds)
            .map_or(String::new(), |i| format!(" (every {})", human_age(i)));
        out.push_str(&format!(
            "scheduled snapshots{every}: {}\n",
            each.join(", ")
        ));
    }
    match &s.last_backup {
        Some(b) => out.push_str(&format!(
            "last backup: {} ago ({})\n",
            human_age(b.age_seconds),
            b.path.display()
        )),
        None => out.push_str("last backup: none in the state directory\n"),
    }
    out.push_str(&format!("cluster {}: {}\n", s.cluster, s.health.as_str()));
    for p in &s.problems {
        out.push_str(&format!("  - {p}\n"));
    }
    match &s.removal_advice {
        Some(RemovalAdvice::Order(steps)) => {
            out.push_str("to remove the hosts that are down, keeping etcd quorum at every step:\n");
            for (i, step) in steps.iter().enumerate() {
                out.push_str(&format!("  {}. {step}\n", i + 1));
            }
        }
        Some(RemovalAdvice::NoQuorum { alive, members }) => out.push_str(&format!(
            "etcd has lost quorum ({alive} of {members} members up): no member can be removed; bring hosts back, or restore a snapshot with kbs restore (docs/operations.md)\n"
        )),
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ScheduledSnapshots;

    fn read(out: &str) -> ScheduledSnapshots {
        let mut s = ScheduledSnapshots::default();
        s.read(out);
        s
    }

    #[test]
    fn scheduled_snapshots_warn_when_old_failed_or_off() {
        let fresh = read("now 1000000\nnewest 990000\nnext 1003600\nnext 1007200\nenabled\n");
        assert_eq!(fresh.newest_age_seconds, Some(10000));
        assert_eq!(fresh.interval_seconds, Some(3600));
        assert!(
            fresh.problem().is_some(),
            "10000 s is more than twice 3600 s"
        );
        let ok = read("now 1000000\nnewest 999000\nnext 1003600\nnext 1007200\nenabled\n");
        assert_eq!(ok.problem(), None);
        let none_yet = read("now 1000000\nnext 1003600\nnext 1007200\nenabled\n");
        assert_eq!(none_yet.problem(), None);
        let failed = read("now 1000000\nnext 1003600\nnext 1007200\nfailed\nenabled\n");
        assert!(failed.problem().unwrap().contains("failed"));
        let off = read("now 1000000\n");
        assert!(off.problem().unwrap().contains("not enabled"));
    }
}
