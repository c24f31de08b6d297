//! Talking to the cluster's API from this machine: with the admin credentials of the state dir
//! (`admin_client`), or anonymously for `/readyz` (`anonymous_client`), which answers even when
//! every client certificate has expired.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::{Ctx, HEALTH_WAIT, RunError, retry};
use crate::inventory::HostName;
use crate::pki::kubeconfig::Kubeconfig;

#[derive(Deserialize)]
struct NodeList {
    items: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    metadata: Meta,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
}

/// An HTTPS client for the cluster's API with the admin credentials from the state dir; it
/// trusts only the cluster CA.
pub fn admin_client(state: &crate::state::StateDir) -> Result<(reqwest::Client, String), String> {
    let path = crate::pki::kubeconfig_path(state, crate::pki::spec::ADMIN_CONF);
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let kc = Kubeconfig::parse(&text)
        .ok_or_else(|| format!("{} is not a kubeconfig", path.display()))?;
    let (Some(server), Some(ca), Some(cert), Some(key)) = (
        kc.server(),
        kc.ca_pem(),
        kc.client_cert_pem(),
        kc.client_key_pem(),
    ) else {
        return Err(format!(
            "{} lacks the server, CA or client credentials",
            path.display()
        ));
    };
    let mut identity = cert;
    identity.extend_from_slice(&key);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).map_err(|e| e.to_string())?])
        .identity(reqwest::Identity::from_pem(&identity).map_err(|e| e.to_string())?)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    Ok((client, server.trim_end_matches('/').to_string()))
}

/// The names of the registered nodes.
pub async fn nodes(client: &reqwest::Client, server: &str) -> Result<BTreeSet<String>, String> {
    let resp = client
        .get(format!("{server}/api/v1/nodes"))
        .send()
        .await
        .map_err(|e| format!("{server}: {e:#}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("GET /api/v1/nodes: {status}"));
    }
    let list: NodeList = resp
        .json()
        .await
        .map_err(|e| format!("GET /api/v1/nodes: {e}"))?;
    Ok(list.items.into_iter().map(|n| n.metadata.name).collect())
}

/// An HTTPS client that trusts only the cluster CA of the state dir and presents no client
/// certificate: for the anonymous `/readyz`, which answers even when every client certificate
/// has expired.
pub(crate) fn anonymous_client(cx: &Ctx) -> Result<reqwest::Client, RunError> {
    let path = crate::pki::ca_cert_path(&cx.state);
    let fail = |message: String| RunError::Step {
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
) -> Result<(), RunError> {
    let hp = cx.progress.host(host, "API /readyz");
    let result = retry::until(HEALTH_WAIT, Duration::from_secs(1), || async {
        ready(client, url).await.inspect_err(|p| hp.line(p))
    })
    .await;
    hp.finish(result.as_ref().err().map(String::as_str));
    result.map_err(|problem| RunError::Step {
        host: host.into(),
        step: "apiserver/readyz".into(),
        message: format!("not ready after {} s: {problem}", HEALTH_WAIT.as_secs()),
    })
}

/// Sends `req`, again for a few seconds when it cannot be sent: a removed VIP holder moves the
/// VIP, and a restarted API server takes a moment to listen.
pub(crate) async fn api_call(req: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
    retry::until(Duration::from_secs(10), Duration::from_secs(2), || async {
        let r = req.try_clone().ok_or("the request cannot be sent twice")?;
        r.send().await.map_err(|e| format!("{e:#}"))
    })
    .await
}
