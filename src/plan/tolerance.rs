//! Failure tolerance counted in hosts, not processes: three etcd members on one host survive a
//! crashed member but not the loss of that host.

use serde::Serialize;

use super::{Front, PlannedHost};
use crate::inventory::{EndpointMode, Role};

#[derive(Debug, Clone, Serialize)]
pub struct FailureTolerance {
    /// How many arbitrary hosts can be lost at once with the cluster still serving.
    pub host_failures_tolerated: usize,
    /// Hosts whose loss alone stops the cluster.
    pub fatal_host_losses: Vec<String>,
    /// What losing each host does.
    pub per_host: Vec<HostLoss>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostLoss {
    pub host: String,
    pub fatal: bool,
    pub effect: String,
}

impl FailureTolerance {
    /// `members[i]` is how many etcd members `hosts[i]` carries.
    pub fn compute(hosts: &[PlannedHost], members: &[usize], front: &Front) -> Self {
        let total: usize = members.iter().sum();
        let quorum = total / 2 + 1;
        let spare = total.saturating_sub(quorum);
        let cps: Vec<bool> = hosts.iter().map(|h| h.has(Role::ControlPlane)).collect();
        let cp_count = cps.iter().filter(|&&c| c).count();

        // The worst k losses take the hosts with the most members; they must leave quorum and at
        // least one control plane (which also keeps a VIP or kube-vip holder alive).
        let mut sorted = members.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let mut tolerated = 0;
        let mut lost = 0;
        for (k, m) in sorted.iter().enumerate() {
            lost += m;
            if lost > spare || k + 1 >= cp_count || k + 1 >= hosts.len() {
                break;
            }
            tolerated = k + 1;
        }

        let worker_count = hosts.iter().filter(|h| h.has(Role::Worker)).count();
        let mut fatal = Vec::new();
        let per_host = hosts
            .iter()
            .zip(members)
            .zip(&cps)
            .map(|((h, &m), &cp)| {
                let left = total - m;
                let etcd_dies = m > spare;
                let api_dies = cp && cp_count == 1;
                let fatal_here = etcd_dies || api_dies;
                if fatal_here {
                    fatal.push(h.name.clone());
                }
                let mut parts = Vec::new();
                if m > 0 {
                    parts.push(if etcd_dies {
                        format!(
                            "etcd loses quorum ({left} of {total} members left, {quorum} needed)"
                        )
                    } else {
                        format!("etcd keeps quorum ({left} of {total} members left)")
                    });
                }
                if etcd_dies {
                    if cp_count > usize::from(cp) {
                        parts.push("the other API servers cannot serve without etcd".into());
                    }
                } else if cp {
                    let others: Vec<&str> = hosts
                        .iter()
                        .zip(&cps)
                        .filter(|(o, c)| **c && o.name != h.name)
                        .map(|(o, _)| o.name.as_str())
                        .collect();
                    parts.push(if others.is_empty() {
                        "the API goes down (no other control plane)".to_string()
                    } else {
                        let moves = match front.mode {
                            EndpointMode::Vip | EndpointMode::KubeVip => {
                                ", the VIP moves if it was here"
                            }
                            EndpointMode::External => {
                                ", once the load balancer's health check drops it"
                            }
                            EndpointMode::Dns => ", for clients that retry another DNS record",
                        };
                        format!("the API is served by {}{moves}", others.join(", "))
                    });
                }
                if h.has(Role::Worker) {
                    let others = worker_count > 1;
                    parts.push(
                        if others {
                            "its pods are rescheduled on the other nodes"
                        } else {
                            "its workloads stop (no other node runs them)"
                        }
                        .into(),
                    );
                }
                let effect = if fatal_here {
                    format!("cluster stops: {}", parts.join("; "))
                } else {
                    parts.join("; ")
                };
                HostLoss {
                    host: h.name.clone(),
                    fatal: fatal_here,
                    effect,
                }
            })
            .collect();
        Self {
            host_failures_tolerated: tolerated,
            fatal_host_losses: fatal,
            per_host,
        }
    }
}
