//! Verify from this machine, as an operator would: the API answers through the endpoint with a
//! certificate that verifies against the cluster CA, and every node has registered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{ApplyError, Ctx, HEALTH_WAIT};
use crate::inventory::Role;
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

pub(super) async fn run(cx: &Ctx) -> Result<(), ApplyError> {
    if cx.opts.dry_run {
        return Ok(());
    }
    let (client, server) = admin_client(&cx.state).map_err(ApplyError::Verify)?;
    // add-node checks its own hosts: others in the inventory may be waiting for their turn.
    let want: BTreeSet<String> = cx
        .hosts()
        .filter(|h| h.has(Role::ControlPlane) || h.has(Role::Worker))
        .map(|h| h.name.clone())
        .collect();
    let hp = cx.progress.host("cluster", "verify");
    let started = Instant::now();
    loop {
        let problem = match client.get(format!("{server}/readyz")).send().await {
            Err(e) => format!("{server}/readyz: {e:#}"),
            Ok(r) if !r.status().is_success() => format!("{server}/readyz: {}", r.status()),
            Ok(_) => match nodes(&client, &server).await {
                Err(e) => e,
                Ok(have) => {
                    let missing: Vec<&String> = want.difference(&have).collect();
                    if missing.is_empty() {
                        hp.finish(None);
                        return Ok(());
                    }
                    format!(
                        "nodes not registered yet: {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            },
        };
        if started.elapsed() > HEALTH_WAIT {
            hp.finish(Some(&problem));
            return Err(ApplyError::Verify(format!(
                "the cluster did not become ready through {server}: {problem}"
            )));
        }
        hp.line(&problem);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
