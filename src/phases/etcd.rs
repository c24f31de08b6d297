//! etcd as systemd services: certificates, one env file per member, data dirs 0700 owned by
//! etcd. A new cluster's members are all started together (each reports ready only at quorum,
//! so starting them one by one and waiting would hang); a member whose settings changed is
//! restarted alone, with the cluster healthy before and after.

use std::collections::BTreeMap;

use super::files::{Desired, Part, ask_states, pki_files, write_differing};
use super::files_of;
use super::probe::{Probe, Task, act_all};
use crate::context::etcd::wait_healthy;
use crate::context::{Ctx, RunError};
use crate::pki::REMOTE_ETCD_PKI_DIR;
use crate::plan::EtcdMember;
use crate::render::{BACKUP_SCRIPT_PATH, BACKUP_SERVICE_PATH, BACKUP_TIMER_PATH, RenderedFile};
use crate::ssh::quote;

pub(crate) async fn run(
    cx: &Ctx,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(), RunError> {
    let etcd_hosts: Vec<String> = cx
        .hosts()
        .filter(|h| cx.plan.etcd.iter().any(|m| m.host == h.name))
        .map(|h| h.name.clone())
        .collect();
    if etcd_hosts.is_empty() {
        return Ok(());
    }
    // Per host, the members to start (not running) and to restart (running, settings changed).
    let per_host = cx
        .each_host(etcd_hosts.iter().map(String::as_str), |host| {
            place_host(cx, host, rendered)
        })
        .await?;
    let (mut to_start, mut to_restart) = (Vec::new(), Vec::new());
    for (start, restart) in per_host {
        to_start.extend(start);
        to_restart.extend(restart);
    }

    // Founding members together: enable, then start without waiting for readiness.
    for (host, unit) in &to_start {
        let s = cx.session(host).await?;
        let cmd = format!("systemctl enable {unit} && systemctl start --no-block {unit}");
        cx.root_change(&s, host, "etcd/start", format!("start {unit}"), &cmd)
            .await?;
    }
    if !to_start.is_empty() && !cx.opts.dry_run {
        wait_healthy(cx, &etcd_hosts[0]).await?;
    }
    for (host, unit) in &to_restart {
        let s = cx.session(host).await?;
        let cmd = format!("systemctl restart {unit}");
        let what = format!("restart {unit} (its settings or certificates changed)");
        cx.root_change(&s, host, "etcd/restart", what, &cmd).await?;
        if !cx.opts.dry_run {
            wait_healthy(cx, &etcd_hosts[0]).await?;
        }
    }
    Ok(())
}

type Units = Vec<(String, String)>;

/// Certificates, env files, units and data dirs on one etcd host, probed in one round trip.
async fn place_host(
    cx: &Ctx,
    host: &str,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(Units, Units), RunError> {
    let (mut to_start, mut to_restart) = (Vec::new(), Vec::new());
    let hp = cx.progress.host(host, "etcd");
    let mut files = pki_files(cx, host, |p| p.starts_with(REMOTE_ETCD_PKI_DIR))?;
    files.extend(
        files_of(rendered, host, Part::Etcd)
            .into_iter()
            .map(Desired::from),
    );
    let members: Vec<_> = cx.plan.etcd.iter().filter(|m| m.host == host).collect();
    let mut tasks = Vec::new();
    if files
        .iter()
        .any(|f| f.path == std::path::Path::new(BACKUP_TIMER_PATH))
    {
        tasks.push(Task::new("etcd/backup-timer", "enable and start kbs-etcd-backup.timer (scheduled snapshots)", "systemctl is-enabled --quiet kbs-etcd-backup.timer && systemctl is-active --quiet kbs-etcd-backup.timer || echo fix", "systemctl enable --now kbs-etcd-backup.timer"));
    } else {
        // `[backup] enabled = false`: a timer an earlier apply placed goes; its snapshots stay.
        tasks.push(Task::new(
            "etcd/backup-timer",
            "disable and remove kbs-etcd-backup.timer (backup.enabled = false; the snapshots stay)",
            format!("[ ! -e {BACKUP_TIMER_PATH} ] || echo present"),
            format!(
                "systemctl disable --now kbs-etcd-backup.timer >/dev/null 2>&1 || true; \
                 rm -f {BACKUP_TIMER_PATH} {BACKUP_SERVICE_PATH} {BACKUP_SCRIPT_PATH}; systemctl daemon-reload"
            ),
        ));
    }
    for m in &members {
        let dir = quote(&m.data_dir);
        tasks.push(Task::new(
            "etcd/data-dir",
            format!("create {} (0700, owned by etcd)", m.data_dir.display()),
            format!("[ \"$(stat -c '%a %U' {dir} 2>/dev/null)\" = '700 etcd' ] || echo fix"),
            format!("install -d -m 0700 -o etcd -g etcd {dir}"),
        ));
    }

    let s = cx.session(host).await?;
    let mut probe = Probe::default();
    let q_files = ask_states(&mut probe, &files, cx.opts.dry_run);
    let q_tasks = probe.tasks(&tasks);
    let q_inactive: Vec<_> = members
        .iter()
        .map(|m| {
            probe.ask(&format!(
                "systemctl is-active --quiet {} || echo inactive",
                unit(m)
            ))
        })
        .collect();
    let answers = probe.run(&s).await?;

    let changed = write_differing(cx, &s, host, "etcd/files", &files, answers.get(q_files)).await?;
    if changed.iter().any(|p| {
        let p = p.to_string_lossy();
        p.ends_with(".service") || p.ends_with(".timer")
    }) {
        cx.root_change(
            &s,
            host,
            "etcd/daemon-reload",
            "reload systemd units",
            "systemctl daemon-reload",
        )
        .await?;
    }
    act_all(cx, &s, host, &tasks, &answers, &q_tasks).await?;
    for (m, q) in members.iter().zip(q_inactive) {
        let mine_changed = changed.iter().any(|p| {
            let p = p.to_string_lossy();
            p.ends_with(&format!("/{}.env", m.name))
                || p.starts_with(REMOTE_ETCD_PKI_DIR)
                || p.ends_with("/kbs-etcd@.service")
        });
        if answers.needs_work(q) {
            to_start.push((host.to_string(), unit(m)));
        } else if mine_changed {
            to_restart.push((host.to_string(), unit(m)));
        }
    }
    hp.finish(None);
    Ok((to_start, to_restart))
}

fn unit(m: &EtcdMember) -> String {
    format!("kbs-etcd@{}.service", m.name)
}
