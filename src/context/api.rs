//! Talking to the cluster's API from this machine: with the admin credentials of the state dir
//! (`admin_client`), or anonymously for `/readyz` (`anonymous_client`), which answers even when
//! every client certificate has expired.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Ctx, HEALTH_WAIT, RunError, retry};
use crate::inventory::HostName;
use crate::pki::kubeconfig::Kubeconfig;

/// The cluster's API with the admin credentials of the state dir, read and written as typed
/// objects (k8s-openapi); a refusal is reported with the API server's own message.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    /// `https://host:port`, without a trailing slash.
    pub server: String,
}

/// The `items` of any list; each item is decoded as its type.
#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

/// An HTTPS client for the cluster's API with the admin credentials from the state dir; it
/// trusts only the cluster CA.
pub fn admin_client(state: &crate::state::StateDir) -> Result<Api, String> {
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
    Ok(Api {
        client,
        server: server.trim_end_matches('/').to_string(),
    })
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// One object; `None` when the API has none by that name.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, String> {
        let r = api_call(self.client.get(self.url(path))).await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        decode(r, "GET", path).await.map(Some)
    }

    /// Every object of a list (`path` may carry a query).
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, String> {
        let r = api_call(self.client.get(self.url(path))).await?;
        decode::<Items<T>>(r, "GET", path).await.map(|l| l.items)
    }

    pub async fn nodes(&self) -> Result<Vec<Node>, String> {
        self.list("/api/v1/nodes").await
    }

    /// Replaces an object whole (it carries the resourceVersion it was read at).
    pub async fn put<T: Serialize>(&self, path: &str, object: &T) -> Result<(), String> {
        let r = api_call(self.client.put(self.url(path)).json(object)).await?;
        check(r, "PUT", path).await
    }

    /// A JSON merge patch (RFC 7386): only the fields named change, so a concurrent writer of
    /// other fields is no conflict. `null` removes a field.
    pub async fn merge_patch(&self, path: &str, patch: &serde_json::Value) -> Result<(), String> {
        let r = api_call(
            self.client
                .patch(self.url(path))
                .header(CONTENT_TYPE, "application/merge-patch+json")
                .body(patch.to_string()),
        )
        .await?;
        check(r, "PATCH", path).await
    }

    /// Creates an object; the API's refusal (status and message) is returned as it is, for the
    /// caller to tell a "not now" (429) from a failure.
    pub async fn post<T: Serialize>(&self, path: &str, object: &T) -> Result<(), Refusal> {
        let r = api_call(self.client.post(self.url(path)).json(object))
            .await
            .map_err(|message| Refusal {
                code: None,
                message,
            })?;
        if r.status().is_success() {
            return Ok(());
        }
        let code = r.status();
        Err(Refusal {
            code: Some(code),
            message: failure(r, "POST", path).await,
        })
    }

    /// Deletes an object; whether it was there.
    pub async fn delete(&self, path: &str) -> Result<bool, String> {
        let r = api_call(self.client.delete(self.url(path))).await?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(failure(r, "DELETE", path).await),
        }
    }
}

/// A request the API did not carry out: its HTTP status (none when it was not reached) and why.
#[derive(Debug)]
pub struct Refusal {
    pub code: Option<StatusCode>,
    pub message: String,
}

async fn decode<T: DeserializeOwned>(
    r: reqwest::Response,
    method: &str,
    path: &str,
) -> Result<T, String> {
    if !r.status().is_success() {
        return Err(failure(r, method, path).await);
    }
    let body = r
        .bytes()
        .await
        .map_err(|e| format!("{method} {path}: {e:#}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("{method} {path}: {e}"))
}

async fn check(r: reqwest::Response, method: &str, path: &str) -> Result<(), String> {
    if r.status().is_success() {
        Ok(())
    } else {
        Err(failure(r, method, path).await)
    }
}

/// "METHOD path: 409 Conflict: <the Status object's message>", or the body's first line when
/// the answer is not a Status.
async fn failure(r: reqwest::Response, method: &str, path: &str) -> String {
    let code = r.status();
    let body = r.bytes().await.unwrap_or_default();
    let why = serde_json::from_slice::<Status>(&body)
        .ok()
        .and_then(|s| s.message)
        .or_else(|| {
            String::from_utf8_lossy(&body)
                .lines()
                .next()
                .map(str::to_string)
        })
        .filter(|m| !m.is_empty());
    match why {
        Some(why) => format!("{method} {path}: {code}: {why}"),
        None => format!("{method} {path}: {code}"),
    }
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
    retry::until_shown(&hp, HEALTH_WAIT, Duration::from_secs(1), || {
        ready(client, url)
    })
    .await
    .map_err(|problem| RunError::Step {
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
