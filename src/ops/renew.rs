//! `kbs certs renew` on a running cluster. Everything goes over SSH, never through the API, so it
//! works when the certificates have already expired:
//!
//! 1. every etcd host and control plane must answer over SSH (else nothing is changed);
//! 2. the leaves and kubeconfigs are re-issued in the state dir (`pki::renew`; CAs stay);
//! 3. etcd hosts one at a time: upload the new certificates, restart each member, wait until
//!    every member is healthy. When etcd was not healthy to begin with (typically: expired
//!    certificates, so peers reject each other), a rolling restart cannot help: every host gets
//!    its files, all members restart together, then kbs waits for health;
//! 4. control planes one at a time: upload certificates and kubeconfigs, restart the API server
//!    (the lab's `kube-apiserver-standin.service`, or kubeadm's static pods by moving their
//!    manifests out and back), wait for that API server's `/readyz`;
//! 5. the served certificates are read back over TLS and must be the new ones.

use std::collections::BTreeMap;

use super::served::{Served, probe_all};
use crate::context::api::anonymous_client;
use crate::context::etcd::{etcdctl, wait_healthy};
use crate::context::{Ctx, RunError};
use crate::inventory::Role;
use crate::phases::files::{pki_files, sync};
use crate::phases::kubeadm::restart_control_plane;
use crate::pki::{PkiReport, REMOTE_ETCD_PKI_DIR};
use crate::ssh::Exec;

/// What a renewal did.
#[derive(Debug)]
pub struct RenewReport {
    pub pki: PkiReport,
    /// etcd was unhealthy before, so its members were restarted together.
    pub etcd_restarted_together: bool,
    /// What each host serves afterwards.
    pub served: Vec<Served>,
}

async fn etcd_healthy(cx: &Ctx, host: &str) -> Result<bool, RunError> {
    let s = cx.session(host).await?;
    let out = s
        .exec(
            Exec::new(&etcdctl(cx, "endpoint health"))
                .sudo(true)
                .timeout(std::time::Duration::from_secs(30)),
        )
        .await?;
    Ok(out.success())
}

pub async fn run(cx: &Ctx) -> Result<RenewReport, RunError> {
    let etcd_hosts: Vec<String> = cx
        .plan
        .hosts
        .iter()
        .filter(|h| cx.plan.etcd.iter().any(|m| m.host == h.name))
        .map(|h| h.name.clone())
        .collect();
    let control_planes: Vec<String> = cx.plan.control_planes().map(|h| h.name.clone()).collect();

    // 1. Reach everything that holds certificates before changing anything.
    let mut unreachable = Vec::new();
    for h in cx
        .plan
        .hosts
        .iter()
        .filter(|h| etcd_hosts.contains(&h.name) || h.has(Role::ControlPlane))
    {
        if !cx.reachable(&h.name).await {
            unreachable.push(format!("  {}: not reachable over SSH", h.name));
        }
    }
    if !unreachable.is_empty() {
        return Err(RunError::Unreachable {
            count: unreachable.len(),
            details: unreachable.join("\n"),
        });
    }
    let healthy_before = match etcd_hosts.first() {
        Some(h) => etcd_healthy(cx, h).await?,
        None => true,
    };

    // 2. New leaves in the state dir.
    let pki = crate::pki::renew(&cx.plan, &cx.state)?;

    // 3. etcd.
    let units = |host: &str| -> Vec<String> {
        cx.plan
            .etcd
            .iter()
            .filter(|m| m.host == host)
            .map(|m| format!("kbs-etcd@{}.service", m.name))
            .collect()
    };
    if healthy_before {
        for host in &etcd_hosts {
            let files = pki_files(cx, host, |p| p.starts_with(REMOTE_ETCD_PKI_DIR))?;
            sync(cx, host, "renew/etcd-files", &files).await?;
            for unit in units(host) {
                let s = cx.session(host).await?;
                cx.root_change(
                    &s,
                    host,
                    "renew/etcd-restart",
                    format!("restart {unit} (new certificates)"),
                    &format!("systemctl restart {unit}"),
                )
                .await?;
                wait_healthy(cx, host).await?;
            }
        }
    } else {
        tracing::warn!("etcd is not healthy: restarting every member together");
        cx.each_host(etcd_hosts.iter().map(String::as_str), |host| async move {
            let files = pki_files(cx, host, |p| p.starts_with(REMOTE_ETCD_PKI_DIR))?;
            sync(cx, host, "renew/etcd-files", &files).await
        })
        .await?;
        for host in &etcd_hosts {
            let list = units(host).join(" ");
            let s = cx.session(host).await?;
            cx.root_change(
                &s,
                host,
                "renew/etcd-restart",
                format!("restart {list} (new certificates; etcd was unhealthy, all together)"),
                &format!("systemctl restart --no-block {list}"),
            )
            .await?;
        }
        if let Some(first) = etcd_hosts.first() {
            wait_healthy(cx, first).await?;
        }
    }

    // 4. Control planes, one at a time, each ready before the next.
    let client = anonymous_client(cx)?;
    for host in &control_planes {
        let files = pki_files(cx, host, |p| p.starts_with("/etc/kubernetes"))?;
        sync(cx, host, "renew/apiserver-files", &files).await?;
        restart_control_plane(cx, &client, host, "renew/apiserver-restart").await?;
    }

    // 5. Read back what is served.
    let served = probe_all(&cx.plan, &cx.state).await;
    let stale: BTreeMap<String, String> = served
        .iter()
        .filter(|s| !s.ok())
        .map(|s| {
            (
                format!("{} {}", s.host, s.component),
                s.problem
                    .clone()
                    .unwrap_or_else(|| "serves an older certificate than the state dir's".into()),
            )
        })
        .collect();
    cx.disconnect_all().await;
    if !stale.is_empty() {
        return Err(RunError::Verify(format!(
            "after the renewal, some endpoints do not serve the new certificate:\n{}",
            stale
                .iter()
                .map(|(k, v)| format!("  {k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    Ok(RenewReport {
        pki,
        etcd_restarted_together: !healthy_before,
        served,
    })
}
