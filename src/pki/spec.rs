//! What the cluster needs, as data: every CA, leaf certificate and kubeconfig with its subject,
//! SANs and usage, computed from the plan. Pure; the tables are in docs/pki.md and come from
//! kubeadm's certlist.go / kubeconfig.go.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpAdd, IpNet};

use crate::inventory::{HostName, KubeVersion};
use crate::plan::ClusterPlan;

/// The three CAs kubeadm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaKind {
    Cluster,
    FrontProxy,
    Etcd,
}

impl CaKind {
    pub const ALL: [CaKind; 3] = [CaKind::Cluster, CaKind::FrontProxy, CaKind::Etcd];

    /// Path below the pki dir, without extension (kubeadm's base name).
    pub fn base(self) -> &'static str {
        match self {
            Self::Cluster => "ca",
            Self::FrontProxy => "front-proxy-ca",
            Self::Etcd => "etcd/ca",
        }
    }

    pub fn common_name(self) -> &'static str {
        match self {
            Self::Cluster => "kubernetes",
            Self::FrontProxy => "front-proxy-ca",
            Self::Etcd => "etcd-ca",
        }
    }
}

/// Extended key usage of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// etcd server and peer certs: peers dial each other with them, and kubeadm keeps
    /// clientAuth on the server cert for etcd 3.2.
    ServerAndClient,
}

/// One leaf certificate: identity, names and who signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// Path below the pki dir without extension, e.g. `hosts/node-1/etcd/server`.
    pub base: String,
    pub common_name: String,
    pub organization: Option<&'static str>,
    pub sans: Vec<HostName>,
    pub usage: Usage,
    pub ca: CaKind,
}

/// One kubeconfig with an embedded client certificate signed by the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigSpec {
    /// Path below the kubeconfig dir, e.g. `admin.conf`, `hosts/node-1/scheduler.conf`.
    pub rel: String,
    pub common_name: &'static str,
    pub organization: Option<&'static str>,
    /// The API server URL it points at.
    pub server: String,
}

const SUPER_ADMIN_GROUP: &str = "system:masters";
const CLUSTER_ADMINS_GROUP: &str = "kubeadm:cluster-admins";

/// `apiserver-kubelet-client`'s group: system:masters until 1.28, kubeadm:cluster-admins from
/// 1.29, none from 1.37 (kubeadm then binds the user to system:kubelet-api-admin instead).
pub fn kubelet_client_org(v: KubeVersion) -> Option<&'static str> {
    match (v.major, v.minor) {
        (1, ..=28) => Some(SUPER_ADMIN_GROUP),
        (1, 29..=36) => Some(CLUSTER_ADMINS_GROUP),
        _ => None,
    }
}

/// `admin.conf`'s group: system:masters until 1.28, then kubeadm:cluster-admins.
pub fn admin_org(v: KubeVersion) -> &'static str {
    if (v.major, v.minor) < (1, 29) {
        SUPER_ADMIN_GROUP
    } else {
        CLUSTER_ADMINS_GROUP
    }
}

/// The etcd client certs lost O=system:masters in 1.29.
pub fn etcd_client_org(v: KubeVersion) -> Option<&'static str> {
    ((v.major, v.minor) < (1, 29)).then_some(SUPER_ADMIN_GROUP)
}

/// The in-cluster `kubernetes` service IP: network + 1 (not `hosts().next()`, which is wrong for
/// IPv6).
pub fn first_service_ip(net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4(n.network().saturating_add(1u32)),
        IpNet::V6(n) => IpAddr::V6(n.network().saturating_add(1u128)),
    }
}

fn push_unique(sans: &mut Vec<HostName>, san: HostName) {
    if !sans.contains(&san) {
        sans.push(san);
    }
}

/// The API server's SANs on one control plane (kubeadm's GetAPIServerAltNames).
pub fn apiserver_sans(plan: &ClusterPlan, host: &str, address: IpAddr) -> Vec<HostName> {
    let inv = &plan.inventory;
    let dom = &inv.cluster.dns_domain;
    let mut sans = Vec::new();
    push_unique(&mut sans, HostName::Dns(host.to_owned()));
    for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
        push_unique(&mut sans, HostName::Dns(name.to_owned()));
    }
    push_unique(
        &mut sans,
        HostName::Dns(format!("kubernetes.default.svc.{dom}")),
    );
    push_unique(
        &mut sans,
        HostName::Ip(first_service_ip(inv.cluster.service_subnet)),
    );
    push_unique(&mut sans, HostName::Ip(address));
    push_unique(&mut sans, inv.endpoint.address.clone());
    for extra in &inv.pki.extra_sans {
        push_unique(&mut sans, extra.clone());
    }
    sans
}

/// etcd server/peer SANs (kubeadm's getAltNames for etcd): the host, not the member, so members
/// sharing a host share the pair.
pub fn etcd_member_sans(host: &str, address: IpAddr) -> Vec<HostName> {
    let mut sans = Vec::new();
    for san in [
        HostName::Dns(host.to_owned()),
        HostName::Dns("localhost".to_owned()),
        HostName::Ip(address),
        HostName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        HostName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ] {
        push_unique(&mut sans, san);
    }
    sans
}

/// Base names of the leaves that are the same on every control plane.
pub const APISERVER_KUBELET_CLIENT: &str = "apiserver-kubelet-client";
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";
pub const APISERVER_ETCD_CLIENT: &str = "apiserver-etcd-client";
pub const ETCD_HEALTHCHECK_CLIENT: &str = "etcd/healthcheck-client";

pub fn apiserver_base(host: &str) -> String {
    format!("hosts/{host}/apiserver")
}

pub fn etcd_server_base(host: &str) -> String {
    format!("hosts/{host}/etcd/server")
}

pub fn etcd_peer_base(host: &str) -> String {
    format!("hosts/{host}/etcd/peer")
}

/// Hosts that run at least one etcd member, in plan order, with their address.
pub fn etcd_hosts(plan: &ClusterPlan) -> Vec<(&str, IpAddr)> {
    let mut out: Vec<(&str, IpAddr)> = Vec::new();
    for m in &plan.etcd {
        if !out.iter().any(|(h, _)| *h == m.host) {
            out.push((&m.host, m.address));
        }
    }
    out
}

/// Every leaf certificate the plan needs.
pub fn leaf_specs(plan: &ClusterPlan) -> Vec<LeafSpec> {
    let v = plan.inventory.cluster.kubernetes_version;
    let client = |base: &str, cn: &str, org, ca| LeafSpec {
        base: base.to_owned(),
        common_name: cn.to_owned(),
        organization: org,
        sans: Vec::new(),
        usage: Usage::Client,
        ca,
    };
    let mut specs = Vec::new();
    for cp in plan.control_planes() {
        specs.push(LeafSpec {
            base: apiserver_base(&cp.name),
            common_name: "kube-apiserver".to_owned(),
            organization: None,
            sans: apiserver_sans(plan, &cp.name, cp.address),
            usage: Usage::Server,
            ca: CaKind::Cluster,
        });
    }
    specs.push(client(
        APISERVER_KUBELET_CLIENT,
        "kube-apiserver-kubelet-client",
        kubelet_client_org(v),
        CaKind::Cluster,
    ));
    specs.push(client(
        FRONT_PROXY_CLIENT,
        "front-proxy-client",
        None,
        CaKind::FrontProxy,
    ));
    specs.push(client(
        APISERVER_ETCD_CLIENT,
        "kube-apiserver-etcd-client",
        etcd_client_org(v),
        CaKind::Etcd,
    ));
    specs.push(client(
        ETCD_HEALTHCHECK_CLIENT,
        "kube-etcd-healthcheck-client",
        etcd_client_org(v),
        CaKind::Etcd,
    ));
    for (host, address) in etcd_hosts(plan) {
        for base in [etcd_server_base(host), etcd_peer_base(host)] {
            specs.push(LeafSpec {
                base,
                common_name: host.to_owned(),
                organization: None,
                sans: etcd_member_sans(host, address),
                usage: Usage::ServerAndClient,
                ca: CaKind::Etcd,
            });
        }
    }
    specs
}

pub const ADMIN_CONF: &str = "admin.conf";
pub const SUPER_ADMIN_CONF: &str = "super-admin.conf";

pub fn controller_manager_conf(host: &str) -> String {
    format!("hosts/{host}/controller-manager.conf")
}

pub fn scheduler_conf(host: &str) -> String {
    format!("hosts/{host}/scheduler.conf")
}

/// Every kubeconfig the plan needs: admin and super-admin at the front endpoint, and per control
/// plane controller-manager and scheduler at that host's own API server, as kubeadm does.
pub fn kubeconfig_specs(plan: &ClusterPlan) -> Vec<KubeconfigSpec> {
    let v = plan.inventory.cluster.kubernetes_version;
    let endpoint = format!("https://{}", plan.front.endpoint);
    let mut specs = vec![
        KubeconfigSpec {
            rel: ADMIN_CONF.to_owned(),
            common_name: "kubernetes-admin",
            organization: Some(admin_org(v)),
            server: endpoint.clone(),
        },
        KubeconfigSpec {
            rel: SUPER_ADMIN_CONF.to_owned(),
            common_name: "kubernetes-super-admin",
            organization: Some(SUPER_ADMIN_GROUP),
            server: endpoint,
        },
    ];
    for cp in plan.control_planes() {
        let local = format!(
            "https://{}:{}",
            HostName::Ip(cp.address),
            plan.front.apiserver_port
        );
        specs.push(KubeconfigSpec {
            rel: controller_manager_conf(&cp.name),
            common_name: "system:kube-controller-manager",
            organization: None,
            server: local.clone(),
        });
        specs.push(KubeconfigSpec {
            rel: scheduler_conf(&cp.name),
            common_name: "system:kube-scheduler",
            organization: None,
            server: local,
        });
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u32) -> KubeVersion {
        KubeVersion {
            major: 1,
            minor,
            patch: 0,
        }
    }

    #[test]
    fn groups_follow_the_kubernetes_minor() {
        assert_eq!(kubelet_client_org(v(28)), Some("system:masters"));
        assert_eq!(kubelet_client_org(v(29)), Some("kubeadm:cluster-admins"));
        assert_eq!(kubelet_client_org(v(36)), Some("kubeadm:cluster-admins"));
        assert_eq!(kubelet_client_org(v(37)), None);
        assert_eq!(admin_org(v(28)), "system:masters");
        assert_eq!(admin_org(v(31)), "kubeadm:cluster-admins");
        assert_eq!(etcd_client_org(v(28)), Some("system:masters"));
        assert_eq!(etcd_client_org(v(29)), None);
    }

    #[test]
    fn first_service_ip_is_network_plus_one() {
        assert_eq!(
            first_service_ip("10.96.0.0/12".parse().unwrap()).to_string(),
            "10.96.0.1"
        );
        assert_eq!(
            first_service_ip("fd00:10:96::/108".parse().unwrap()).to_string(),
            "fd00:10:96::1"
        );
    }
}
