//! `kbs plan` output: for people, as JSON, and as Graphviz.

use std::fmt::Write;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::{ClusterPlan, EtcdMember, FailureTolerance, Front, PlannedHost};
use crate::inventory::{Addon, EndpointMode, IngressExposure, Inventory, Role};
use crate::versions::{AddonKind, Component};
use crate::words::count;

/// The ordered steps `kbs apply` will take for this plan.
pub fn apply_steps(plan: &ClusterPlan) -> Vec<String> {
    let names = |it: &mut dyn Iterator<Item = &PlannedHost>| {
        it.map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ")
    };
    let all = names(&mut plan.hosts.iter());
    let etcd_hosts = names(&mut plan.hosts.iter().filter(|h| h.has(Role::Etcd)));
    let cps = names(&mut plan.control_planes());
    let first = plan.first_control_plane().map_or("", |h| h.name.as_str());
    let joining_cps = names(&mut plan.control_planes().skip(1));
    let workers = names(&mut plan.workers());
    let v = &plan.inventory.cluster.kubernetes_version;
    let mut steps = vec![
        match &plan.inventory.artifacts.source {
            crate::inventory::Artifacts::Bundle(d) => format!("artifacts: check every file and image of the bundle {} against bundle.toml", d.display()),
            crate::inventory::Artifacts::Online => "artifacts: download the release files and images on this machine (into the state dir) and check them against upstream's sums".to_string(),
        },
        format!("connect to {all} over SSH (host keys verified) and gather facts"),
        "preflight: OS, kernel, cgroups, swap, ports, clock skew, reachability, etcd disk fsync latency, no host of another cluster".to_string(),
        format!("prepare hosts: kernel modules, sysctls, swap off, containerd {} with the images imported, kubelet and kubeadm {v}, etcd {} on {etcd_hosts}", plan.inventory.versions.containerd, plan.inventory.versions.etcd),
        "PKI: create or reuse the cluster, front-proxy and etcd CAs and every certificate; copy to each host only what it needs".to_string(),
        match plan.etcd.len() {
            1 => format!("etcd: start its one member on {etcd_hosts}, then check health over mTLS"),
            n => format!("etcd: start all {n} members together on {etcd_hosts}, then check health over mTLS"),
        } + if plan.inventory.backup.schedule.is_some() { "; enable the snapshot timer" } else { "" },
    ];
    match plan.front.mode {
        EndpointMode::Vip => steps.push(format!(
            "front: keepalived + haproxy on {cps} for {}",
            plan.front.endpoint
        )),
        EndpointMode::KubeVip => steps.push(format!(
            "front: kube-vip static pods on {cps} for {}",
            plan.front.endpoint
        )),
        EndpointMode::External | EndpointMode::Dns => {}
    }
    steps.push(format!("kubeadm init on {first}"));
    if !joining_cps.is_empty() {
        steps.push(format!("kubeadm join --control-plane on {joining_cps}"));
    }
    if !workers.is_empty() {
        steps.push(format!("kubeadm join on {workers}"));
    }
    let verify = "verify the API through the endpoint and that every node registered";
    let mut last: Vec<String> = plan
        .inventory
        .cni
        .iter()
        .map(|cni| {
            format!(
                "CNI {}: kubectl apply on {first} (again only when it changes)",
                cni.describe()
            )
        })
        .collect();
    let namespaces = &plan.inventory.security.namespaces;
    if !namespaces.is_empty() {
        let names: Vec<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
        last.push(format!(
            "namespace baselines {}: kubectl apply on {first} where the cluster differs",
            names.join(", ")
        ));
    }
    let addons = &plan.inventory.addons;
    if !addons.is_empty() {
        let names: Vec<String> = addons.iter().map(|a| a.describe()).collect();
        last.push(format!(
            "addons {}: kubectl apply on {first} where the cluster differs",
            names.join(", ")
        ));
    }
    let no_cni = "no CNI is installed ([cni] manifest is unset)";
    steps.push(match (last.is_empty(), plan.inventory.cni.is_some()) {
        (true, _) => format!("{verify}; {no_cni}"),
        (false, true) => format!("{}, then {verify}", last.join("; ")),
        (false, false) => format!("{}, then {verify}; {no_cni}", last.join("; ")),
    });
    steps
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    cluster: &'a str,
    kubernetes_version: String,
    versions: JsonVersions,
    topology: &'static str,
    hosts: &'a [PlannedHost],
    etcd: JsonEtcd<'a>,
    front: &'a Front,
    failure_tolerance: &'a FailureTolerance,
    rationale: &'a [String],
    warnings: &'a [String],
    steps: Vec<String>,
}

#[derive(Serialize)]
struct JsonVersions {
    etcd: String,
    containerd: String,
    runc: String,
    cni_plugins: String,
    crictl: Option<String>,
    pause: String,
    coredns: String,
    min_external_etcd: String,
    unsupported: Option<String>,
    images: Vec<String>,
    /// "metrics-server v0.8.1", ...: the addons applied after the CNI.
    addons: Vec<String>,
}

#[derive(Serialize)]
struct JsonEtcd<'a> {
    members: Vec<JsonMember<'a>>,
    /// The snapshot timer on every etcd host; `null` when it is off.
    backup_schedule: Option<&'a str>,
    backup_keep: u32,
    backup_dir: &'a str,
}

#[derive(Serialize)]
struct JsonMember<'a> {
    name: &'a str,
    host: &'a str,
    client_url: String,
    peer_url: String,
    data_dir: String,
}

pub fn render_json(plan: &ClusterPlan) -> String {
    let members = plan.etcd.iter().map(|m: &EtcdMember| JsonMember {
        name: &m.name,
        host: &m.host,
        client_url: m.client_url(),
        peer_url: m.peer_url(),
        data_dir: m.data_dir.display().to_string(),
    });
    let json = JsonPlan {
        cluster: &plan.inventory.cluster.name,
        kubernetes_version: plan.inventory.cluster.kubernetes_version.to_string(),
        versions: {
            let v = &plan.inventory.versions;
            JsonVersions {
                etcd: v.etcd.to_string(),
                containerd: v.containerd.to_string(),
                runc: v.runc.to_string(),
                cni_plugins: v.cni_plugins.to_string(),
                crictl: plan
                    .inventory
                    .artifacts
                    .crictl
                    .then(|| v.crictl.to_string()),
                pause: v.pause.clone(),
                coredns: v.coredns.clone(),
                min_external_etcd: v.min_external_etcd.to_string(),
                unsupported: v.unsupported.clone(),
                images: plan
                    .inventory
                    .images()
                    .into_iter()
                    .map(|w| w.name)
                    .collect(),
                addons: plan.inventory.addons.iter().map(|a| a.describe()).collect(),
            }
        },
        topology: plan.topology.as_str(),
        hosts: &plan.hosts,
        etcd: JsonEtcd {
            members: members.collect(),
            backup_schedule: plan.inventory.backup.schedule.as_deref(),
            backup_keep: plan.inventory.backup.keep,
            backup_dir: &plan.inventory.backup.dir,
        },
        front: &plan.front,
        failure_tolerance: &plan.tolerance,
        rationale: &plan.rationale,
        warnings: &plan.warnings,
        steps: apply_steps(plan),
    };
    // Serialising plain structs and strings cannot fail.
    serde_json::to_string_pretty(&json).unwrap_or_default() + "\n"
}

/// Every component version, and where the artifacts and images come from.
fn versions_table(plan: &ClusterPlan) -> Table {
    let inv = &plan.inventory;
    let v = &inv.versions;
    let cat = crate::versions::catalog();
    let mut t = table(&["component", "version", "note"]);
    let support = cat
        .release(v.kubernetes.minor_of())
        .filter(|_| v.unsupported.is_none())
        .map_or_else(
            || "UNSUPPORTED".to_string(),
            |r| format!("supported until {}", r.end_of_life),
        );
    let pinned = |c: Component| {
        if v.overridden.contains(&c) {
            "set in [versions]"
        } else {
            "pinned"
        }
    };
    let etcd_note = format!(
        "{}; kubeadm accepts {} or newer",
        pinned(Component::Etcd),
        v.min_external_etcd
    );
    let rows: Vec<(&str, String, String)> = vec![
        ("kubernetes", v.kubernetes.to_string(), support),
        ("etcd", v.etcd.to_string(), etcd_note),
        (
            "containerd",
            v.containerd.to_string(),
            pinned(Component::Containerd).into(),
        ),
        ("runc", v.runc.to_string(), pinned(Component::Runc).into()),
        (
            "cni plugins",
            v.cni_plugins.to_string(),
            pinned(Component::CniPlugins).into(),
        ),
        (
            "crictl",
            v.crictl.to_string(),
            if inv.artifacts.crictl {
                pinned(Component::Crictl).into()
            } else {
                "not installed ([artifacts] crictl = false)".into()
            },
        ),
        ("pause", v.pause.clone(), "kubeadm's".into()),
        ("coredns", v.coredns.clone(), "kubeadm's".into()),
    ];
    for (c, ver, note) in rows {
        t.add_row(vec![c.to_string(), ver, note]);
    }
    if let Some(cni) = &inv.cni {
        t.add_row(vec![
            "cni".to_string(),
            cni.describe(),
            match cni.release.as_ref().and_then(|r| r.sha256.as_ref()) {
                Some(_) => "manifest sum pinned".into(),
                None if cni.release.is_some() => {
                    "manifest sum recorded by kbs bundle (upstream publishes none)".into()
                }
                None => "hand-written manifest".into(),
            },
        ]);
    }
    for a in &inv.addons {
        t.add_row(vec![
            a.kind.as_str().to_string(),
            a.version.clone(),
            addon_note(a, inv),
        ]);
    }
    for (kind, why) in &inv.addons_off_by_default {
        t.add_row(vec![kind.as_str().to_string(), "-".into(), (*why).into()]);
    }
    let source = match &inv.artifacts.source {
        crate::inventory::Artifacts::Bundle(d) => format!("bundle {}", d.display()),
        crate::inventory::Artifacts::Online => "downloaded by apply on this machine".into(),
    };
    let via = if inv.artifacts.mirrors.is_empty() {
        String::new()
    } else {
        format!(" through {}", count(inv.artifacts.mirrors.len(), "mirror"))
    };
    t.add_row(vec![
        "artifacts".into(),
        source,
        format!("upstream releases{via}, checked against upstream's sums"),
    ]);
    t.add_row(vec![
        "images".into(),
        inv.registry
            .as_ref()
            .map_or_else(|| "upstream registries".into(), |r| r.address.clone()),
        "imported into containerd on every node, checked by digest".into(),
    ]);
    t
}

/// What an addon gives the cluster, and its limits, for the versions table.
fn addon_note(a: &Addon, inv: &Inventory) -> String {
    match a.kind {
        AddonKind::MetricsServer => "addon ([addons] metrics_server): kubectl top and HPA".into(),
        AddonKind::LocalPathProvisioner => {
            "addon ([addons] storage): default StorageClass local-path; node-local storage, NOT replicated: a lost node loses its volumes".into()
        }
        AddonKind::Monitoring => {
            // Prometheus is the version; the other two by their image tags.
            let others: Vec<&str> = a
                .images
                .iter()
                .skip(1)
                .filter_map(|i| i.name.rsplit('/').next())
                .collect();
            format!(
                "addon ([addons] monitoring): Prometheus with {}, alert rules (no Alertmanager); metrics kept 15 days, on the pod's node only",
                others.join(", ")
            )
        }
        AddonKind::Grafana => match &inv.grafana {
            Some(g) => format!(
                "addon ([addons.grafana]): Grafana on the monitoring addon's Prometheus, with kbs's cluster dashboard; admin's password from {}; its database in an emptyDir: dashboards made in the UI go with the pod",
                g.admin_password_file.display()
            ),
            None => String::new(),
        },
        AddonKind::Logging => match &inv.logging {
            Some(l) => format!(
                "addon ([addons.logging]): Fluent Bit ships container logs and the audit log to {} {}:{}{}",
                l.kind.as_str(),
                l.host,
                l.port,
                if l.tls { " over TLS" } else { ", NOT encrypted" }
            ),
            None => String::new(),
        },
        AddonKind::GatewayApi => {
            "addon ([addons.ingress] gateway_api): the Gateway API's CRDs, standard channel, applied server-side".into()
        }
        AddonKind::Ingress => match &inv.ingress {
            Some(i) => format!(
                "addon ([addons.ingress]): Traefik, IngressClass traefik{}{}, on {}",
                if i.default_class { " (the default)" } else { "" },
                if i.gateway_api {
                    ", GatewayClass traefik and Gateway kbs-ingress/traefik (HTTP, routes from every namespace)"
                } else {
                    ""
                },
                match i.exposure {
                    IngressExposure::Vip => "the VIP's ports 80 and 443".to_string(),
                    IngressExposure::NodePorts { http, https } =>
                        format!("every node's ports {http} (HTTP) and {https} (HTTPS)"),
                }
            ),
            None => String::new(),
        },
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    // A fixed width keeps the output the same on every terminal and in snapshots.
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(110)
        .set_header(header.to_vec());
    t
}

fn roles(h: &PlannedHost) -> String {
    h.roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render_human(plan: &ClusterPlan) -> String {
    let inv = &plan.inventory;
    let mut out = String::new();
    let c = &inv.cluster;
    let _ = writeln!(
        out,
        "Cluster {} — Kubernetes {}, topology {}",
        c.name,
        c.kubernetes_version,
        plan.topology.as_str()
    );
    let _ = writeln!(
        out,
        "Pods {}, services {}, DNS domain {}\n",
        c.pod_subnet, c.service_subnet, c.dns_domain
    );
    for r in &plan.rationale {
        let _ = writeln!(out, "  {r}");
    }
    let _ = writeln!(out, "\nVersions\n{}", versions_table(plan));

    let mut hosts = table(&["host", "address", "roles", "runs"]);
    for h in &plan.hosts {
        let mut runs = Vec::new();
        let members = plan.etcd.iter().filter(|m| m.host == h.name).count();
        if members > 0 {
            runs.push(format!("etcd ×{members}"));
        }
        if h.has(Role::ControlPlane) {
            runs.push("kube-apiserver, kube-scheduler, kube-controller-manager".into());
            if plan.front.hosts.contains(&h.name) {
                runs.push(match plan.front.mode {
                    EndpointMode::KubeVip => "kube-vip".into(),
                    _ => "keepalived, haproxy".into(),
                });
            }
        }
        if h.has(Role::Worker) {
            runs.push("workloads".into());
        }
        hosts.add_row(vec![
            h.name.clone(),
            h.address.to_string(),
            roles(h),
            runs.join("; "),
        ]);
    }
    let _ = writeln!(out, "\nHosts\n{hosts}");

    let mut etcd = table(&["member", "host", "client URL", "peer URL", "data dir"]);
    for m in &plan.etcd {
        etcd.add_row(vec![
            m.name.clone(),
            m.host.clone(),
            m.client_url(),
            m.peer_url(),
            m.data_dir.display().to_string(),
        ]);
    }
    let quorum = plan.etcd.len() / 2 + 1;
    let _ = writeln!(
        out,
        "\netcd: {}, quorum {quorum}\n{etcd}",
        count(plan.etcd.len(), "member")
    );
    let b = &plan.inventory.backup;
    let _ = match &b.schedule {
        Some(s) => writeln!(
            out,
            "Snapshots: on every etcd host at `{s}` (systemd calendar), the newest {} kept in {}; `kbs backup --fetch` copies them here.",
            b.keep, b.dir
        ),
        None => writeln!(
            out,
            "Snapshots: none scheduled (backup.enabled = false): take them with `kbs backup`."
        ),
    };

    let f = &plan.front;
    let _ = writeln!(
        out,
        "\nFront ({}): clients use https://{}",
        f.mode.as_str(),
        f.endpoint
    );
    match f.mode {
        EndpointMode::Vip => {
            let _ = writeln!(
                out,
                "  keepalived moves the VIP between {}; haproxy there forwards to each API server on port {}.",
                f.hosts.join(", "),
                f.apiserver_port
            );
        }
        EndpointMode::KubeVip => {
            let _ = writeln!(
                out,
                "  kube-vip on {} holds the VIP by leader election; the API servers listen on port {}.",
                f.hosts.join(", "),
                f.apiserver_port
            );
        }
        EndpointMode::External | EndpointMode::Dns => {
            let _ = writeln!(out, "  kbs installs no front. You must:");
            for a in &f.operator_actions {
                let _ = writeln!(out, "  - {a}");
            }
        }
    }

    let t = &plan.tolerance;
    let _ = writeln!(
        out,
        "\nFailure tolerance: survives the loss of {} at once",
        count(t.host_failures_tolerated, "host")
    );
    let mut losses = table(&["if this host is lost", "effect"]);
    for l in &t.per_host {
        losses.add_row(vec![l.host.clone(), l.effect.clone()]);
    }
    let _ = writeln!(out, "{losses}");

    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings");
        for w in &plan.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    let _ = writeln!(out, "\n`kbs apply` will:");
    for (i, s) in apply_steps(plan).iter().enumerate() {
        let _ = writeln!(out, "  {:>2}. {s}", i + 1);
    }
    out
}

pub fn render_dot(plan: &ClusterPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];",
        plan.inventory.cluster.name
    );
    let _ = writeln!(
        out,
        "  front [label=\"{}\\n{}\", shape=ellipse];",
        plan.front.mode.as_str(),
        plan.front.endpoint
    );
    for h in &plan.hosts {
        let _ = writeln!(
            out,
            "  subgraph \"cluster_{0}\" {{\n    label=\"{0}\\n{1}\";",
            h.name, h.address
        );
        if h.has(Role::ControlPlane) {
            let _ = writeln!(
                out,
                "    \"{0}/apiserver\" [label=\"kube-apiserver\\nscheduler\\ncontroller-manager\"];",
                h.name
            );
        }
        for m in plan.etcd.iter().filter(|m| m.host == h.name) {
            let _ = writeln!(
                out,
                "    \"etcd/{0}\" [label=\"etcd {0}\\n:{1}\", shape=cylinder];",
                m.name, m.client_port
            );
        }
        if h.has(Role::Worker) {
            let _ = writeln!(
                out,
                "    \"{}/workloads\" [label=\"workloads\", style=dashed];",
                h.name
            );
        }
        let _ = writeln!(out, "  }}");
    }
    for h in plan.control_planes() {
        let _ = writeln!(out, "  front -> \"{}/apiserver\";", h.name);
        for m in &plan.etcd {
            let _ = writeln!(
                out,
                "  \"{}/apiserver\" -> \"etcd/{}\" [style=dotted];",
                h.name, m.name
            );
        }
    }
    out.push_str("}\n");
    out
}
