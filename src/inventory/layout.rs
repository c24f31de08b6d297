//! How the inventory's hosts can be laid out: the topology their count implies, and where etcd
//! members can go. Validation uses it to report what does not fit; the planner to place them.

use serde::Serialize;

use super::{Host, Role};

/// The shape chosen from the host count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    SingleHost,
    TwoHost,
    MultiHost,
}

impl Topology {
    pub fn for_host_count(n: usize) -> Self {
        match n {
            0 | 1 => Self::SingleHost,
            2 => Self::TwoHost,
            _ => Self::MultiHost,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SingleHost => "single-host",
            Self::TwoHost => "two-host",
            Self::MultiHost => "multi-host",
        }
    }
}

/// How many etcd members the inventory asks for, how many it can hold, and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdLayout {
    pub wanted: usize,
    pub capacity: usize,
    /// Hosts that get at least one member.
    pub etcd_hosts: usize,
    /// Hosts given the etcd role explicitly that no member would go to.
    pub idle_etcd_hosts: usize,
    /// Per inventory host, how many members it carries.
    pub per_host: Vec<usize>,
}

/// Enough slots for every member on one host when kbs makes the data dirs itself.
const GENERATED_DIR_SLOTS: usize = 7;

/// Whether any host lists its roles: then roles are taken as given, not chosen by host count.
pub fn explicit_roles(hosts: &[Host]) -> bool {
    hosts.iter().any(|h| h.roles.is_some())
}

/// Host indices in placement order: most reliable first, ties kept in inventory order.
pub fn by_reliability(hosts: &[Host]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(hosts[i].reliability));
    order
}

/// Places etcd members by the host-count rules (see docs/topology.md). Shared by validation,
/// which reports what does not fit, and by the planner.
pub fn etcd_layout(hosts: &[Host], members: Option<usize>) -> EtcdLayout {
    let slots = |h: &Host| h.etcd_data_dirs.len().max(1);
    // (host index, how many members it can hold), in the order members are dealt out.
    let (candidates, default_count): (Vec<(usize, usize)>, usize) = if explicit_roles(hosts) {
        let c: Vec<_> = (0..hosts.len())
            .filter(|&i| {
                hosts[i]
                    .roles
                    .as_ref()
                    .is_some_and(|r| r.contains(&Role::Etcd))
            })
            .map(|i| (i, slots(&hosts[i])))
            .collect();
        let total = c.iter().map(|(_, s)| s).sum();
        (c, total)
    } else {
        match Topology::for_host_count(hosts.len()) {
            Topology::SingleHost => (vec![(0, slots(&hosts[0]))], slots(&hosts[0])),
            Topology::TwoHost => {
                // All members on the more reliable host: a 2+1 split gains nothing, as losing the
                // majority host is fatal either way, while 3+0 keeps the other host harmless.
                let i = by_reliability(hosts)[0];
                let cap = if hosts[i].etcd_data_dirs.is_empty() {
                    GENERATED_DIR_SLOTS
                } else {
                    hosts[i].etcd_data_dirs.len()
                };
                (vec![(i, cap)], 3)
            }
            Topology::MultiHost => (
                by_reliability(hosts)
                    .into_iter()
                    .map(|i| (i, slots(&hosts[i])))
                    .collect(),
                3,
            ),
        }
    };
    let wanted = members.unwrap_or(default_count);
    let capacity = candidates.iter().map(|(_, s)| s).sum();
    let mut per_host = vec![0; hosts.len()];
    // Deal members round-robin so they spread one per host before any host gets a second.
    let mut left = wanted.min(capacity);
    while left > 0 {
        for &(i, cap) in &candidates {
            if left > 0 && per_host[i] < cap {
                per_host[i] += 1;
                left -= 1;
            }
        }
    }
    let etcd_hosts = per_host.iter().filter(|&&n| n > 0).count();
    let idle_etcd_hosts = if explicit_roles(hosts) {
        candidates.len() - etcd_hosts
    } else {
        0
    };
    EtcdLayout {
        wanted,
        capacity,
        etcd_hosts,
        idle_etcd_hosts,
        per_host,
    }
}
