//! The topology engine: a pure function from a validated inventory to a `ClusterPlan` that says
//! where every etcd member, control-plane component and front goes, and what each host's loss does.
//! It never touches a host.

mod report;
mod tolerance;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::inventory::{
    EndpointMode, EtcdLayout, Host, HostName, Inventory, Role, Topology, by_reliability,
    etcd_layout, explicit_roles,
};
use crate::words::count;

pub use report::{render_dot, render_human, render_json};
pub use tolerance::{FailureTolerance, HostLoss};

/// Where everything goes.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub inventory: Inventory,
    pub topology: Topology,
    /// Same order as the inventory's hosts.
    pub hosts: Vec<PlannedHost>,
    pub etcd: Vec<EtcdMember>,
    pub front: Front,
    pub tolerance: FailureTolerance,
    /// Why this layout was chosen, in plain sentences.
    pub rationale: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedHost {
    pub name: String,
    pub address: IpAddr,
    /// Sorted; `worker` on a control plane means it takes workloads (no taint).
    pub roles: Vec<Role>,
}

impl PlannedHost {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EtcdMember {
    pub name: String,
    pub host: String,
    pub address: IpAddr,
    pub client_port: u16,
    pub peer_port: u16,
    /// Plain-HTTP /metrics and /health, bound to 127.0.0.1 (and to `address` with the
    /// monitoring addon).
    pub metrics_port: u16,
    pub data_dir: PathBuf,
}

impl EtcdMember {
    pub fn client_url(&self) -> String {
        format!(
            "https://{}:{}",
            HostName::Ip(self.address),
            self.client_port
        )
    }

    /// `address:metrics_port`, where the monitoring addon scrapes the member.
    pub fn metrics_target(&self) -> String {
        format!("{}:{}", HostName::Ip(self.address), self.metrics_port)
    }

    pub fn peer_url(&self) -> String {
        format!("https://{}:{}", HostName::Ip(self.address), self.peer_port)
    }
}

/// The control-plane front: what clients connect to and what serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Front {
    pub mode: EndpointMode,
    /// `address:port` as kubeadm's controlPlaneEndpoint.
    pub endpoint: String,
    pub apiserver_port: u16,
    /// Hosts that run keepalived + haproxy or kube-vip; empty for external and dns.
    pub hosts: Vec<String>,
    /// What the operator must set up outside kbs (external LB, DNS records); empty otherwise.
    pub operator_actions: Vec<String>,
}

/// Members on one host beyond the first need their own ports; etcd's docs space them by 10000.
const PORT_STRIDE: u16 = 10_000;
impl ClusterPlan {
    /// Plans a validated inventory. Validation has already rejected layouts that cannot work.
    pub fn new(inventory: Inventory) -> Self {
        let hosts_in = &inventory.hosts;
        let topology = Topology::for_host_count(hosts_in.len());
        let layout = etcd_layout(hosts_in, inventory.etcd.members);
        let hosts = plan_roles(hosts_in, topology, &layout);
        let etcd = place_members(hosts_in, &layout);
        let front = front(&inventory, &hosts);
        let mut plan = Self::assemble(inventory, topology, hosts, etcd, front);
        plan.rationale = rationale(&plan);
        plan.warnings = warnings(&plan, &layout);
        plan
    }

    pub fn control_planes(&self) -> impl Iterator<Item = &PlannedHost> {
        self.hosts.iter().filter(|h| h.has(Role::ControlPlane))
    }

    /// The host that runs `kubeadm init`.
    pub fn host(&self, name: &str) -> Option<&PlannedHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn first_control_plane(&self) -> Option<&PlannedHost> {
        self.control_planes().next()
    }

    /// The cluster as it runs now, minus `host`: the same members on the same hosts (no
    /// re-planning, which could move etcd members), that host gone from the inventory, the
    /// front and the tolerance computed for what is left.
    pub fn without_host(&self, host: &str) -> Self {
        let mut inventory = self.inventory.clone();
        inventory.hosts.retain(|h| h.name != host);
        let hosts: Vec<PlannedHost> = self
            .hosts
            .iter()
            .filter(|h| h.name != host)
            .cloned()
            .collect();
        let etcd: Vec<EtcdMember> = self
            .etcd
            .iter()
            .filter(|m| m.host != host)
            .cloned()
            .collect();
        let mut front = self.front.clone();
        front.hosts.retain(|h| h != host);
        Self::assemble(inventory, self.topology, hosts, etcd, front)
    }

    /// A plan from its parts, with the failure tolerance computed for them.
    fn assemble(
        inventory: Inventory,
        topology: Topology,
        hosts: Vec<PlannedHost>,
        etcd: Vec<EtcdMember>,
        front: Front,
    ) -> Self {
        let members: Vec<usize> = hosts
            .iter()
            .map(|h| etcd.iter().filter(|m| m.host == h.name).count())
            .collect();
        let tolerance = FailureTolerance::compute(&hosts, &members, &front);
        Self {
            inventory,
            topology,
            hosts,
            etcd,
            front,
            tolerance,
            rationale: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Hosts that only run workloads.
    pub fn workers(&self) -> impl Iterator<Item = &PlannedHost> {
        self.hosts
            .iter()
            .filter(|h| h.has(Role::Worker) && !h.has(Role::ControlPlane))
    }
}

fn plan_roles(hosts: &[Host], topology: Topology, layout: &EtcdLayout) -> Vec<PlannedHost> {
    let control_planes: Vec<bool> = if explicit_roles(hosts) {
        hosts
            .iter()
            .map(|h| {
                h.roles
                    .as_ref()
                    .is_some_and(|r| r.contains(&Role::ControlPlane))
            })
            .collect()
    } else {
        let mut cp = vec![topology != Topology::MultiHost; hosts.len()];
        for &i in by_reliability(hosts).iter().take(3) {
            cp[i] = true;
        }
        cp
    };
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut roles = match &h.roles {
                Some(r) => r.clone(),
                // A host left without roles next to hosts that have them is a worker.
                None if explicit_roles(hosts) => vec![Role::Worker],
                None => {
                    let mut r = Vec::new();
                    if control_planes[i] {
                        r.push(Role::ControlPlane);
                    }
                    if layout.per_host[i] > 0 {
                        r.push(Role::Etcd);
                    }
                    // With three hosts or fewer the control planes must also carry workloads.
                    if !control_planes[i] || hosts.len() <= 3 {
                        r.push(Role::Worker);
                    }
                    r
                }
            };
            roles.sort();
            PlannedHost {
                name: h.name.clone(),
                address: h.address,
                roles,
            }
        })
        .collect()
}

fn place_members(hosts: &[Host], layout: &EtcdLayout) -> Vec<EtcdMember> {
    let mut members = Vec::with_capacity(layout.wanted);
    for (h, &count) in hosts.iter().zip(&layout.per_host) {
        for k in 0..count {
            let name = if count == 1 {
                h.name.clone()
            } else {
                format!("{}-etcd-{}", h.name, k + 1)
            };
            let data_dir = match h.etcd_data_dirs.get(k) {
                Some(d) => d.clone(),
                None if count == 1 => PathBuf::from("/var/lib/etcd"),
                None => PathBuf::from(format!("/var/lib/etcd/{name}")),
            };
            let offset = PORT_STRIDE * k as u16;
            members.push(EtcdMember {
                name,
                host: h.name.clone(),
                address: h.address,
                client_port: 2379 + offset,
                peer_port: 2380 + offset,
                metrics_port: 2381 + offset,
                data_dir,
            });
        }
    }
    members
}

fn front(inv: &Inventory, hosts: &[PlannedHost]) -> Front {
    let e = &inv.endpoint;
    let endpoint = format!("{}:{}", e.address, e.port);
    let cps: Vec<&PlannedHost> = hosts.iter().filter(|h| h.has(Role::ControlPlane)).collect();
    let backends = || {
        cps.iter()
            .map(|h| format!("{}:{}", HostName::Ip(h.address), e.apiserver_port))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (front_hosts, operator_actions) = match e.mode {
        EndpointMode::Vip | EndpointMode::KubeVip => (cps.iter().map(|h| h.name.clone()).collect(), Vec::new()),
        EndpointMode::External => (
            Vec::new(),
            vec![
                format!("Your load balancer must accept TCP on {endpoint} and forward it to {}.", backends()),
                format!("Health-check each backend with HTTPS GET /readyz on port {} (TLS passthrough; do not terminate TLS).", e.apiserver_port),
            ],
        ),
        EndpointMode::Dns => (
            Vec::new(),
            vec![
                format!(
                    "The DNS name {} must resolve to every control plane: {}.",
                    e.address,
                    cps.iter().map(|h| h.address.to_string()).collect::<Vec<_>>().join(", ")
                ),
                "Keep the records' TTL short (30 s or less): clients only stop using a dead control plane once its record is gone.".into(),
            ],
        ),
    };
    Front {
        mode: e.mode,
        endpoint,
        apiserver_port: e.apiserver_port,
        hosts: front_hosts,
        operator_actions,
    }
}

fn rationale(plan: &ClusterPlan) -> Vec<String> {
    let n = plan.hosts.len();
    let m = plan.etcd.len();
    let cps = plan.control_planes().count();
    if explicit_roles(&plan.inventory.hosts) {
        return vec![format!(
            "Roles are set in the inventory and honoured as written: {}, {} on {}.",
            count(cps, "control plane"),
            count(m, "etcd member"),
            count(
                plan.hosts.iter().filter(|h| h.has(Role::Etcd)).count(),
                "host"
            )
        )];
    }
    match plan.topology {
        Topology::SingleHost => vec![format!(
            "1 host: {}, the control plane and workloads all run on {}.",
            count(m, "etcd member"),
            plan.hosts[0].name
        )],
        Topology::TwoHost => {
            let etcd_host = &plan.etcd[0].host;
            vec![
                format!("2 hosts: all {m} etcd members run on {etcd_host}, the more reliable host (highest `reliability`, ties go to the first listed)."),
                "Splitting etcd 2+1 would gain nothing: losing the host with two members loses quorum either way, while 3+0 makes the other host's loss harmless.".into(),
                "API server, scheduler and controller-manager run on both hosts, behind the front.".into(),
            ]
        }
        Topology::MultiHost => vec![
            if m < n {
                format!("{n} hosts: {m} etcd members, one per host, on the most reliable hosts.")
            } else {
                format!("{n} hosts: {m} etcd members, one on every host.")
            },
            format!(
                "{cps} control planes{}.",
                if n <= 3 {
                    " that also run workloads (there are no other hosts)"
                } else {
                    "; every other host is a worker"
                }
            ),
        ],
    }
}

fn warnings(plan: &ClusterPlan, layout: &EtcdLayout) -> Vec<String> {
    let mut w = Vec::new();
    let v = &plan.inventory.versions;
    if let Some(why) = &v.unsupported {
        w.push(format!(
            "Unsupported Kubernetes {}: {why}. Allowed by --allow-unsupported-version; component versions come from the {} row of data/versions.toml.",
            v.kubernetes, v.row
        ));
    }
    if !v.overridden.is_empty() {
        let names: Vec<String> = v
            .overridden
            .iter()
            .map(|c| format!("{} {}", c.as_str(), v.version(*c)))
            .collect();
        w.push(format!(
            "[versions] replaces the versions kbs pins for {}: {}.",
            v.kubernetes.minor_of(),
            names.join(", ")
        ));
    }
    if plan.topology == Topology::SingleHost {
        w.push(format!(
            "This is a lab, not production: {} is a single point of failure for etcd, the API and every workload. \
             What makes it safer: put etcd's data on redundant storage (RAID 1 or a mirrored volume) or list several \
             etcd_data_dirs on separate disks, and take scheduled etcd backups that are kept off this host.",
            plan.hosts[0].name
        ));
    }
    if plan.topology == Topology::TwoHost && !explicit_roles(&plan.inventory.hosts) {
        w.push(format!(
            "Losing {} (it carries every etcd member) stops the cluster; give it redundant storage for etcd and take scheduled backups kept off it.",
            plan.etcd[0].host
        ));
    }
    for (h, &count) in plan.inventory.hosts.iter().zip(&layout.per_host) {
        if count > 1 && h.etcd_data_dirs.len() < count {
            w.push(format!(
                "{count} etcd members on {} share one disk: every write is synced {count} times on one device. List etcd_data_dirs on separate disks for this host.",
                h.name
            ));
        }
    }
    if plan.topology == Topology::MultiHost && plan.etcd.len() == 1 {
        w.push(format!(
            "Only one etcd member: losing {} stops the cluster. Use 3 members.",
            plan.etcd[0].host
        ));
    }
    let cps = plan.control_planes().count();
    if plan.topology == Topology::MultiHost && cps < 2 {
        w.push("Only one control plane: its loss stops the API. Give three hosts the control-plane role.".into());
    }
    if !plan.tolerance.fatal_host_losses.is_empty() && plan.topology == Topology::MultiHost {
        w.push(format!(
            "Single host losses that stop the cluster: {}.",
            plan.tolerance.fatal_host_losses.join(", ")
        ));
    }
    w.extend(plan.inventory.security.relaxations());
    w
}

#[cfg(test)]
mod tests;
