//! Day-two operations on a running cluster: renewing certificates (`renew`), what each host
//! serves (`served`), removing a host (`remove`) and tearing the cluster down (`reset`). They reuse
//! apply's context and helpers (`phases::Ctx`, `files::sync`, `etcd::etcdctl`, ...).

pub mod remove;
pub mod renew;
pub mod reset;
pub mod served;

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
    let h = cx.plan.hosts.iter().find(|h| h.name == host)?;
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
