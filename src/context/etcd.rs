//! Reaching etcd from a host with kbs's own client certificate.

use std::time::Duration;

use super::{Ctx, HEALTH_WAIT, RunError, retry};
use crate::pki::REMOTE_ETCD_PKI_DIR;
use crate::plan::EtcdMember;

/// `etcdctl` with kbs's own client certificate, against every member.
pub fn etcdctl(cx: &Ctx, args: &str) -> String {
    etcdctl_at(&client_urls(cx), args)
}

/// Every member's client URL.
pub fn client_urls(cx: &Ctx) -> Vec<String> {
    cx.plan.etcd.iter().map(EtcdMember::client_url).collect()
}

/// `etcdctl` with kbs's own client certificate (on an etcd host), against `endpoints`.
pub fn etcdctl_at(endpoints: &[String], args: &str) -> String {
    format!(
        "ETCDCTL_API=3 etcdctl --endpoints={} --cacert={d}/ca.crt --cert={d}/healthcheck-client.crt --key={d}/healthcheck-client.key --command-timeout=5s {args}",
        endpoints.join(","),
        d = REMOTE_ETCD_PKI_DIR
    )
}

/// Waits until every member answers healthy over mTLS, asking from `host`.
pub async fn wait_healthy(cx: &Ctx, host: &str) -> Result<(), RunError> {
    wait_healthy_with(cx, host, &etcdctl(cx, "endpoint health"), HEALTH_WAIT).await
}

/// Waits up to `limit` until `cmd` (an `etcdctl ... endpoint health`) succeeds on `host`.
pub async fn wait_healthy_with(
    cx: &Ctx,
    host: &str,
    cmd: &str,
    limit: Duration,
) -> Result<(), RunError> {
    let hp = cx.progress.host(host, "etcd health");
    retry::until_shown(&hp, limit, Duration::from_secs(2), || async {
        cx.sh(host, "etcd/health", cmd, Duration::from_secs(30))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|problem| RunError::Step {
        host: host.into(),
        step: "etcd/health".into(),
        message: format!("etcd is not healthy after {} s: {problem}", limit.as_secs()),
    })
}
