//! Cordon, drain and uncordon a Node by `kubectl drain`'s rules: DaemonSet and mirror pods stay
//! (they would come straight back), pods that no controller would recreate and pods with
//! emptyDir data are refused unless forced (they would be lost), and every other pod is evicted
//! through the Eviction API, so PodDisruptionBudgets are respected. Cordoning is a merge patch:
//! it cannot conflict with the kubelet updating the Node's status at the same moment.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use reqwest::StatusCode;

use crate::context::api::Api;
use crate::context::retry;
use crate::words::count;

/// How long evictions may take (a PodDisruptionBudget may hold them back).
const EVICTION_WAIT: Duration = Duration::from_secs(300);

/// What drain does with one pod.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Left alone: the reason.
    Stays(&'static str),
    Evict,
    /// Would be lost for good: the reason, and the flag that allows it.
    Refused(&'static str),
}

fn fate(pod: &Pod, force: bool) -> Fate {
    let meta = &pod.metadata;
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
    {
        return Fate::Stays("a static pod's mirror");
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Fate::Stays("finished");
    }
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if controller.is_some_and(|c| c.kind == "DaemonSet") {
        return Fate::Stays("managed by a DaemonSet");
    }
    if force {
        return Fate::Evict;
    }
    if controller.is_none() {
        return Fate::Refused("declares no controller, so nothing would recreate it");
    }
    let empty_dir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()));
    if empty_dir {
        return Fate::Refused("has emptyDir data, which eviction deletes");
    }
    Fate::Evict
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("?")
    )
}

/// Marks the Node unschedulable (`kubectl cordon`).
pub async fn cordon(api: &Api, node: &str) -> Result<(), String> {
    set_unschedulable(api, node, serde_json::Value::Bool(true)).await
}

/// Makes the Node schedulable again (`kubectl uncordon`).
pub async fn uncordon(api: &Api, node: &str) -> Result<(), String> {
    set_unschedulable(api, node, serde_json::Value::Null).await
}

async fn set_unschedulable(api: &Api, node: &str, value: serde_json::Value) -> Result<(), String> {
    api.merge_patch(
        &format!("/api/v1/nodes/{node}"),
        &serde_json::json!({ "spec": { "unschedulable": value } }),
    )
    .await
}

/// Cordons the Node and evicts its pods. `force` also evicts pods that would be lost (no
/// controller, emptyDir data); without it, such pods stop the drain before anything is evicted.
/// Returns what was done.
pub async fn drain(api: &Api, node: &str, force: bool) -> Result<Vec<String>, String> {
    let path = format!("/api/v1/nodes/{node}");
    let Some(n) = api.get::<k8s_openapi::api::core::v1::Node>(&path).await? else {
        return Ok(vec![format!(
            "no Node `{node}` in the API: nothing to drain"
        )]);
    };
    let mut out = Vec::new();
    if !n.spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        cordon(api, node).await?;
        out.push(format!("cordoned Node {node} (spec.unschedulable = true)"));
    }
    let pods = pods_on(api, node).await?;
    let refused: Vec<String> = pods
        .iter()
        .filter_map(|p| match fate(p, force) {
            Fate::Refused(why) => Some(format!("{} {why}", pod_name(p))),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        return Err(format!(
            "cannot drain {node}: {}; with --force they are evicted and lost",
            refused.join("; ")
        ));
    }
    for p in &pods {
        if let Fate::Stays(why) = fate(p, force) {
            out.push(format!("{} stays ({why})", pod_name(p)));
        }
    }
    let evicted = retry::until(EVICTION_WAIT, Duration::from_secs(5), || async {
        let left: Vec<Pod> = pods_on(api, node)
            .await?
            .into_iter()
            .filter(|p| fate(p, force) == Fate::Evict)
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        let mut blocked = Vec::new();
        for p in &left {
            if let Err(why) = evict(api, p).await {
                blocked.push(format!("{}: {why}", pod_name(p)));
            }
        }
        Err(format!(
            "{} still on {node}{}",
            count(left.len(), "pod"),
            if blocked.is_empty() {
                String::new()
            } else {
                format!(" ({})", blocked.join("; "))
            }
        ))
    })
    .await;
    match evicted {
        Ok(()) => {
            out.push(format!("no pods left to evict on {node}"));
            Ok(out)
        }
        Err(last) => Err(format!(
            "{last} after {} minutes; a PodDisruptionBudget may hold them back",
            EVICTION_WAIT.as_secs() / 60
        )),
    }
}

/// The pods the API places on `node`. The field selector is the server's filter; the check
/// here keeps the answer right from a server that ignores it.
async fn pods_on(api: &Api, node: &str) -> Result<Vec<Pod>, String> {
    let pods: Vec<Pod> = api
        .list(&format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
        ))
        .await?;
    Ok(pods
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .collect())
}

/// Asks the API to evict one pod. A 429 is a disruption budget saying "not now"; a 404 means the
/// pod is already gone.
async fn evict(api: &Api, pod: &Pod) -> Result<(), String> {
    let (ns, name) = (
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
    );
    let body = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": { "name": name, "namespace": ns },
    });
    match api
        .post(
            &format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"),
            &body,
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(r) if r.code == Some(StatusCode::NOT_FOUND) => Ok(()),
        Err(r) => Err(r.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn kubectl_drain_rules() {
        let owned = |kind: &str| serde_json::json!([{"apiVersion": "apps/v1", "kind": kind, "name": "x", "uid": "u", "controller": true}]);
        let replicated = pod(
            serde_json::json!({"metadata": {"name": "a", "ownerReferences": owned("ReplicaSet")}}),
        );
        assert_eq!(fate(&replicated, false), Fate::Evict);
        let daemon = pod(
            serde_json::json!({"metadata": {"name": "d", "ownerReferences": owned("DaemonSet")}}),
        );
        assert_eq!(fate(&daemon, true), Fate::Stays("managed by a DaemonSet"));
        let mirror = pod(
            serde_json::json!({"metadata": {"name": "m", "annotations": {"kubernetes.io/config.mirror": "x"}}}),
        );
        assert!(matches!(fate(&mirror, false), Fate::Stays(_)));
        let bare = pod(serde_json::json!({"metadata": {"name": "b"}}));
        assert!(matches!(fate(&bare, false), Fate::Refused(_)));
        assert_eq!(fate(&bare, true), Fate::Evict);
        let finished =
            pod(serde_json::json!({"metadata": {"name": "f"}, "status": {"phase": "Succeeded"}}));
        assert!(matches!(fate(&finished, false), Fate::Stays(_)));
        let scratch = pod(serde_json::json!({
            "metadata": {"name": "s", "ownerReferences": owned("ReplicaSet")},
            "spec": {"containers": [], "volumes": [{"name": "tmp", "emptyDir": {}}]}
        }));
        assert!(matches!(fate(&scratch, false), Fate::Refused(_)));
        assert_eq!(fate(&scratch, true), Fate::Evict);
    }
}
