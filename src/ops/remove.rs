//! `kbs remove-node`: take one host out of a running cluster.
//!
//! Order: refuse what would leave etcd without quorum or with nothing to spare (unless
//! `--force`); cordon and drain its Node through the API; remove its etcd members by ID from a
//! surviving member; tear the host down (`reset::reset_host`) when it answers; delete its Node;
//! for a removed control plane, re-render the front (haproxy's backends) for the remaining
//! control planes from the running layout minus the host and sync it like apply does. A dead host
//! is removed the same way without its teardown. Every step skips what is already done, so a
//! cut-off run is finished by running it again.

use super::drain::drain;
use super::reset::reset_host;
use crate::context::etcd::{etcdctl_at, wait_healthy_with};
use crate::context::{Ctx, RunError};
use crate::inventory::{EndpointMode, Inventory, Role};
use crate::plan::ClusterPlan;
use crate::ssh::Exec;
use crate::words::count;

/// Why a removal is refused, decided from the plan alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Allowed with `--force` only.
    NeedsForce(String),
    /// Never: another command does this.
    Refused(String),
}

/// How many member failures `n` voting members tolerate.
fn spare(n: usize) -> usize {
    n.saturating_sub(n / 2 + 1)
}

/// The quorum rule: removing `host` must leave at least one member and one control plane, and
/// without `--force` the remaining members must still tolerate a failure (3 → 2 keeps quorum but
/// the 2 tolerate nothing: refused; 4 → 3, 5 → 4 are fine).
pub fn verdict(plan: &ClusterPlan, host: &str) -> Verdict {
    let Some(h) = plan.host(host) else {
        return Verdict::Refused(format!("there is no host `{host}` in the inventory"));
    };
    if plan.hosts.len() == 1 {
        return Verdict::Refused(
            "it is the only host; to tear the cluster down use `kbs reset`".into(),
        );
    }
    let before = plan.etcd.len();
    let here = plan.etcd.iter().filter(|m| m.host == host).count();
    let after = before - here;
    if here > 0 && after == 0 {
        return Verdict::Refused(format!(
            "it carries every etcd member ({before}); removing it would delete the cluster's data (use `kbs reset`)"
        ));
    }
    if h.has(Role::ControlPlane) && plan.control_planes().count() == 1 {
        return Verdict::Refused(
            "it is the only control plane; add another control plane first".into(),
        );
    }
    if here > 0 && spare(after) == 0 {
        return Verdict::NeedsForce(format!(
            "etcd would go from {before} to {}: it keeps quorum ({} needed) but then tolerates no further member failure",
            count(after, "member"),
            after / 2 + 1
        ));
    }
    Verdict::Allowed
}

/// How to take hosts that are down out of the cluster, decided from the plan alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalAdvice {
    /// etcd keeps quorum: `kbs remove-node` for each host in this order; each line says what
    /// etcd has after that step.
    Order(Vec<String>),
    /// etcd lost quorum: removing a member needs quorum, so no removal can run.
    NoQuorum { alive: usize, members: usize },
}

/// The order of `kbs remove-node` calls that takes the `down` hosts out while etcd keeps quorum
/// at every step: the hosts with the most etcd members first (each removal shrinks the quorum the
/// survivors must meet), then the rest. Live hosts are never part of it.
pub fn removal_order(
    plan: &ClusterPlan,
    down: &std::collections::BTreeSet<String>,
    inventory: &std::path::Path,
) -> RemovalAdvice {
    let on = |h: &str| plan.etcd.iter().filter(|m| m.host == h).count();
    let mut members = plan.etcd.len();
    let alive = members - down.iter().map(|h| on(h)).sum::<usize>();
    if members > 0 && alive < members / 2 + 1 {
        return RemovalAdvice::NoQuorum { alive, members };
    }
    let mut order: Vec<&String> = down.iter().collect();
    order.sort_by_key(|h| std::cmp::Reverse(on(h)));
    let mut current = plan.clone();
    let mut steps = Vec::new();
    for h in order {
        let force = match verdict(&current, h) {
            Verdict::Refused(why) => {
                steps.push(format!("{h} cannot be removed: {why}"));
                break;
            }
            Verdict::NeedsForce(_) => " --force",
            Verdict::Allowed => "",
        };
        members -= on(h);
        current = current.without_host(h);
        let etcd = if on(h) > 0 {
            format!(
                " (etcd then has {}, {alive} up; quorum {})",
                count(members, "member"),
                members / 2 + 1
            )
        } else {
            String::new()
        };
        steps.push(format!(
            "kbs remove-node {} --host {h}{force}{etcd}",
            inventory.display()
        ));
    }
    RemovalAdvice::Order(steps)
}

/// What a removal did and what the operator does next.
#[derive(Debug, Default)]
pub struct RemoveReport {
    pub done: Vec<String>,
    pub warnings: Vec<String>,
    pub next_steps: Vec<String>,
}

/// etcdctl `member list -w json`: the members, each with its ID as a number (etcdctl's other
/// commands take it in hex).
#[derive(Debug, serde::Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Debug, serde::Deserialize)]
struct Member {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(default)]
    name: String,
}

/// Removes the etcd members on `host`, asking a surviving member; waits until the survivors are
/// healthy. Members already gone are skipped.
async fn remove_members(
    cx: &Ctx,
    after: &ClusterPlan,
    host: &str,
    report: &mut RemoveReport,
) -> Result<(), RunError> {
    let names: Vec<String> = cx
        .plan
        .etcd
        .iter()
        .filter(|m| m.host == host)
        .map(|m| m.name.clone())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let survivors: Vec<String> = after.etcd.iter().map(|m| m.client_url()).collect();
    // The surviving members on hosts that answer: with other hosts down too (removed one after
    // another, as `kbs status` advises), health is asked of these only.
    let mut live = Vec::new();
    for m in &after.etcd {
        if cx.reachable(&m.host).await {
            live.push(m);
        }
    }
    let Some(via) = live.first().map(|m| m.host.clone()) else {
        return Err(RunError::Step {
            host: host.into(),
            step: "etcd/member-remove".into(),
            message: "no surviving etcd host answers over SSH".into(),
        });
    };
    let s = cx.session(&via).await?;
    let out = Ctx::root(
        &s,
        &via,
        "etcd/member-list",
        Exec::new(&etcdctl_at(&survivors, "member list -w json")),
    )
    .await?;
    let members: MemberList = serde_json::from_str(&out).map_err(|e| RunError::Step {
        host: via.clone(),
        step: "etcd/member-list".into(),
        message: format!("etcdctl member list -w json: {e}"),
    })?;
    for name in &names {
        let Some(m) = members.members.iter().find(|m| &m.name == name) else {
            report
                .done
                .push(format!("etcd member {name}: already removed"));
            continue;
        };
        let cmd = etcdctl_at(&survivors, &format!("member remove {:x}", m.id));
        cx.change(
            &via,
            "etcd/member-remove",
            format!("etcdctl member remove {:x} ({name})", m.id),
            async {
                let out = s.exec(Exec::new(&cmd).sudo(true)).await?;
                if out.success() {
                    Ok(())
                } else {
                    Err(Ctx::step_error(&via, "etcd/member-remove", &out))
                }
            },
        )
        .await?;
        report.done.push(format!(
            "removed etcd member {name} (ID {:x}) via {via}",
            m.id
        ));
    }
    let live_urls: Vec<String> = live.iter().map(|m| m.client_url()).collect();
    wait_healthy_with(
        cx,
        &via,
        &etcdctl_at(&live_urls, "endpoint health"),
        crate::context::HEALTH_WAIT,
    )
    .await?;
    report.done.push(format!(
        "etcd healthy with {} ({} up): {}",
        count(after.etcd.len(), "member"),
        live.len(),
        live.iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// Re-renders the front for the remaining control planes and syncs it (haproxy and keepalived are
/// restarted only where their config changed).
async fn update_front(cx: &mut Ctx, after: ClusterPlan) -> Result<Vec<String>, RunError> {
    let remaining: std::collections::BTreeSet<String> =
        after.control_planes().map(|h| h.name.clone()).collect();
    let before = cx.changes().len();
    cx.plan = after;
    cx.opts.only_hosts = Some(remaining);
    cx.facts = crate::phases::connect::gather(cx, None).await?;
    let placeholders = crate::render::JoinSecrets {
        token: crate::render::JOIN_TOKEN_PLACEHOLDER.into(),
        ca_cert_hashes: vec![crate::render::CA_CERT_HASH_PLACEHOLDER.into()],
    };
    let rendered = crate::phases::files::render(cx, &placeholders)?;
    crate::phases::front::run(cx, &rendered, false).await?;
    Ok(cx.changes()[before..]
        .iter()
        .map(|c| format!("{}: {}", c.host, c.what))
        .collect())
}

/// What the operator writes in the inventory afterwards so that `kbs apply` agrees with the
/// cluster.
fn inventory_advice(after: &ClusterPlan, host: &str, inventory: &std::path::Path) -> Vec<String> {
    let mut out = vec![format!(
        "remove the [[host]] block of `{host}` from {} now",
        inventory.display()
    )];
    let same = |p: &ClusterPlan| {
        p.hosts.len() == after.hosts.len()
            && p.hosts
                .iter()
                .zip(&after.hosts)
                .all(|(a, b)| a.name == b.name && a.roles == b.roles)
            && p.etcd.len() == after.etcd.len()
            && p.etcd.iter().zip(&after.etcd).all(|(a, b)| {
                a.name == b.name
                    && a.host == b.host
                    && a.client_port == b.client_port
                    && a.data_dir == b.data_dir
            })
    };
    if same(&ClusterPlan::new(after.inventory.clone())) {
        out.push("`kbs apply` with that inventory plans exactly the cluster that remains".into());
        return out;
    }
    // Without roles the planner would lay out the smaller inventory differently (e.g. two hosts
    // get all etcd members on one): pin the running layout with explicit roles.
    let mut pinned: Inventory = after.inventory.clone();
    for (h, p) in pinned.hosts.iter_mut().zip(&after.hosts) {
        h.roles = Some(p.roles.clone());
    }
    let roles: Vec<String> = after
        .hosts
        .iter()
        .map(|h| {
            format!(
                "{}: roles = [{}]",
                h.name,
                h.roles
                    .iter()
                    .map(|r| format!("\"{}\"", r.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    if same(&ClusterPlan::new(pinned)) {
        out.push(format!(
            "without roles, the planner would lay out the remaining hosts differently (and `kbs apply` would then fight the running etcd): give each remaining host its roles explicitly: {}",
            roles.join("; ")
        ));
    } else {
        out.push(format!(
            "the planner cannot express the remaining etcd layout from this inventory; do not run `kbs apply` before adding a host back (running roles: {})",
            roles.join("; ")
        ));
    }
    out
}

pub struct RemoveOptions {
    pub host: String,
    pub force: bool,
}

pub async fn run(
    mut cx: Ctx,
    inventory_path: &std::path::Path,
    opts: &RemoveOptions,
) -> Result<RemoveReport, RunError> {
    let host = opts.host.as_str();
    let mut report = RemoveReport::default();
    let after = cx.plan.without_host(host);
    let removed = cx
        .plan
        .hosts
        .iter()
        .find(|h| h.name == host)
        .cloned()
        .ok_or_else(|| RunError::Step {
            host: host.into(),
            step: "remove-node".into(),
            message: "not in the inventory".into(),
        })?;

    let alive = cx.reachable(host).await;
    if !alive {
        report.warnings.push(format!(
            "{host} does not answer over SSH: it is removed from the cluster but not torn down; wipe it before it boots on this network again (or run remove-node again once it is up)"
        ));
    }

    // Drain through the API with the admin credentials. A dead host's pods are not running
    // anyway: evicting them would wait for a kubelet that never answers. Deleting its Node below
    // lets Kubernetes recreate them elsewhere.
    let kube_node = removed.has(Role::ControlPlane) || removed.has(Role::Worker);
    let api = crate::context::api::admin_client(&cx.state);
    if kube_node && !alive {
        report.done.push(format!(
            "{host} is down: not drained; its pods are recreated elsewhere once its Node is deleted"
        ));
    } else if kube_node {
        match &api {
            Ok(api) => match drain(api, host, opts.force).await {
                Ok(lines) => report.done.extend(lines),
                Err(e) if opts.force => report
                    .warnings
                    .push(format!("drain failed ({e}); going on because of --force")),
                Err(e) => {
                    return Err(RunError::Step {
                        host: host.into(),
                        step: "drain".into(),
                        message: format!(
                            "{e} (nothing was changed on the hosts; --force removes the host without draining)"
                        ),
                    });
                }
            },
            Err(e) => report.warnings.push(format!("cannot drain: {e}")),
        }
    }

    remove_members(&cx, &after, host, &mut report).await?;

    if alive {
        reset_host(&cx, host).await?;
        report.done.push(format!(
            "reset {host}: kubeadm reset -f, kubelet, etcd, haproxy and keepalived stopped and disabled, kbs's files removed"
        ));
    }

    if kube_node {
        match &api {
            Ok(api) => match api.delete(&format!("/api/v1/nodes/{host}")).await {
                Ok(true) => report.done.push(format!("deleted Node {host}")),
                Ok(false) => report.done.push(format!("Node {host}: already gone")),
                Err(e) => report.warnings.push(format!(
                    "could not delete Node {host}: {e}; delete it with `kubectl delete node {host}`"
                )),
            },
            Err(_) => report.warnings.push(format!(
                "delete the Node yourself: `kubectl delete node {host}`"
            )),
        }
    }

    if removed.has(Role::ControlPlane) {
        match cx.plan.front.mode {
            EndpointMode::Vip => {
                let changes = update_front(&mut cx, after.clone()).await?;
                if changes.is_empty() {
                    report
                        .done
                        .push("front: already without the removed control plane".into());
                }
                for c in changes {
                    report.done.push(format!("front: {c}"));
                }
            }
            EndpointMode::KubeVip => {}
            EndpointMode::External => report.next_steps.push(format!(
                "take {} out of your load balancer's backends",
                removed.address
            )),
            EndpointMode::Dns => report.next_steps.push(format!(
                "remove {} from the DNS records of the endpoint",
                removed.address
            )),
        }
        if !after.etcd.is_empty() {
            report.next_steps.push(
                "the remaining API servers still list the removed member's URL in --etcd-servers (harmless: they use the others); the next `kbs apply` with the edited inventory drops it".into(),
            );
        }
    }
    cx.disconnect_all().await;

    report
        .next_steps
        .splice(0..0, inventory_advice(&after, host, inventory_path));
    let mut tolerance = vec![format!(
        "the cluster now has {}, {}, {}",
        count(after.hosts.len(), "host"),
        count(after.control_planes().count(), "control plane"),
        count(after.etcd.len(), "etcd member")
    )];
    tolerance.extend(super::describe_tolerance(&after.tolerance));
    report.done.extend(tolerance);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn plan(text: &str) -> ClusterPlan {
        ClusterPlan::new(Inventory::parse(Path::new("i.toml"), text).unwrap())
    }

    #[test]
    fn quorum_rule() {
        let three = plan(include_str!("../../inventories/three-host.toml"));
        let h = three.etcd[0].host.clone();
        assert!(
            matches!(verdict(&three, &h), Verdict::NeedsForce(_)),
            "3 → 2 members"
        );
        let five = plan(include_str!("../../inventories/five-host.toml"));
        if let Some(w) = five.workers().next() {
            assert_eq!(verdict(&five, &w.name), Verdict::Allowed);
        }
        let two = plan(include_str!("../../inventories/two-host.toml"));
        let carrier = two.etcd[0].host.clone();
        assert!(matches!(verdict(&two, &carrier), Verdict::Refused(_)));
        let single = plan(include_str!("../../inventories/single-host.toml"));
        assert!(matches!(
            verdict(&single, &single.hosts[0].name),
            Verdict::Refused(_)
        ));
        assert!(matches!(verdict(&three, "nope"), Verdict::Refused(_)));
    }

    #[test]
    fn removal_advice_keeps_quorum_or_says_it_is_lost() {
        let five = plan(include_str!("../../inventories/five-host.toml"));
        let etcd: Vec<String> = five.etcd.iter().map(|m| m.host.clone()).collect();
        assert_eq!(etcd.len(), 5);
        let worker = five
            .hosts
            .iter()
            .find(|h| !etcd.contains(&h.name))
            .map(|h| h.name.clone());
        // Two etcd hosts of five down, and a worker: the etcd hosts first, the worker last.
        let mut down: std::collections::BTreeSet<String> =
            [etcd[3].clone(), etcd[4].clone()].into();
        down.extend(worker.clone());
        let RemovalAdvice::Order(steps) = removal_order(&five, &down, Path::new("i.toml")) else {
            panic!("quorum is kept: 3 of 5 members up")
        };
        assert_eq!(steps.len(), down.len(), "{steps:?}");
        assert!(
            steps[0].contains("(etcd then has 4 members, 3 up; quorum 3)"),
            "{steps:?}"
        );
        assert!(
            steps[1].contains("(etcd then has 3 members, 3 up; quorum 2)"),
            "{steps:?}"
        );
        if let Some(w) = worker {
            assert!(steps[2].ends_with(&format!("--host {w}")), "{steps:?}");
        }
        // Three of five down: no quorum, no order.
        let down: std::collections::BTreeSet<String> = etcd[2..].iter().cloned().collect();
        assert_eq!(
            removal_order(&five, &down, Path::new("i.toml")),
            RemovalAdvice::NoQuorum {
                alive: 2,
                members: 5
            }
        );
    }

    #[test]
    fn member_list_is_read_from_json_and_ids_are_hex() {
        // etcdctl 3.5 `member list -w json`, trimmed.
        let text = r#"{"header":{"cluster_id":1,"member_id":2,"raft_term":3},"members":[
            {"ID":10276657743932975437,"name":"node-1","peerURLs":["https://172.30.4.11:2380"],"clientURLs":["https://172.30.4.11:2379"]},
            {"ID":10501334649042878790,"name":"node-2","peerURLs":["https://172.30.4.12:2380"]}]}"#;
        let m: MemberList = serde_json::from_str(text).expect("json");
        assert_eq!(m.members.len(), 2);
        assert_eq!(format!("{:x}", m.members[0].id), "8e9e05c52164694d");
        assert_eq!(m.members[1].name, "node-2");
    }
}
