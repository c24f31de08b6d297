//! Preflight: a table of checks per host with pass, warn or fail and the fix. Any failure stops
//! the run before a single change; `--skip-check NAME` overrides one check deliberately.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use serde::Serialize;

use crate::context::{Ctx, RunError};
use crate::facts::Facts;
use crate::inventory::{EndpointMode, HostName, Role};
use crate::plan::{ClusterPlan, PlannedHost};
use crate::ssh::Exec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub host: String,
    pub name: &'static str,
    pub status: CheckStatus,
    pub found: String,
    /// What to do about a warning or failure.
    pub fix: String,
}

impl Check {
    /// A check result; the fix is kept only when there is something to fix.
    pub fn new(
        host: &str,
        name: &'static str,
        status: CheckStatus,
        found: String,
        fix: &str,
    ) -> Self {
        let fix = if status == CheckStatus::Pass {
            String::new()
        } else {
            fix.to_string()
        };
        Self {
            host: host.to_string(),
            name,
            status,
            found,
            fix,
        }
    }
}

/// Every check name: what `--skip-check` accepts.
pub const CHECKS: [&str; 13] = [
    "os",
    "arch",
    "systemd",
    "cpus",
    "memory",
    "cgroup",
    "swap",
    "ports",
    "clock-skew",
    "etcd-fsync",
    "vip-interface",
    "reachability",
    "cluster-identity",
];

/// Ports a host's roles need free, with the process allowed to hold each already (kbs's own,
/// from an earlier run).
fn needed_ports(plan: &ClusterPlan, host: &PlannedHost) -> Vec<(u16, &'static str)> {
    let mut ports = Vec::new();
    for m in plan.etcd.iter().filter(|m| m.host == host.name) {
        ports.extend([
            (m.client_port, "etcd"),
            (m.peer_port, "etcd"),
            (m.metrics_port, "etcd"),
        ]);
    }
    if host.has(Role::ControlPlane) {
        ports.push((plan.front.apiserver_port, "kube-apiserver"));
        if plan.front.mode == EndpointMode::Vip {
            ports.push((plan.inventory.endpoint.port, "haproxy"));
        }
        // The ingress addon on the VIP: its host ports would take the traffic of a server the
        // host runs there already.
        if plan.inventory.ingress.as_ref().map(|i| i.exposure)
            == Some(crate::inventory::IngressExposure::Vip)
        {
            ports.extend([(80, "traefik"), (443, "traefik")]);
        }
    }
    if host.has(Role::ControlPlane) || host.has(Role::Worker) {
        ports.push((10250, "kubelet"));
        // The monitoring addon's node-exporter listens there on the host's network: a
        // node_exporter the host runs already would keep it from starting.
        if monitoring(plan) {
            ports.push((crate::render::NODE_EXPORTER_PORT, "node_exporter"));
        }
    }
    ports
}

/// Ports on `to` that `from` connects to: etcd members to each other's peer port, API servers
/// to etcd's client port and to every kubelet, every node to the API servers.
fn ports_between(plan: &ClusterPlan, from: &PlannedHost, to: &PlannedHost) -> Vec<u16> {
    let (cp, node) = (Role::ControlPlane, |h: &PlannedHost| {
        h.has(Role::ControlPlane) || h.has(Role::Worker)
    });
    let mut ports = Vec::new();
    for m in plan.etcd.iter().filter(|m| m.host == to.name) {
        if from.has(Role::Etcd) {
            ports.push(m.peer_port);
        }
        if from.has(cp) {
            ports.push(m.client_port);
        }
    }
    if to.has(cp) && node(from) {
        ports.push(plan.front.apiserver_port);
    }
    if node(to) && from.has(cp) {
        ports.push(10250);
    }
    // The monitoring addon's Prometheus runs on any node and scrapes every etcd member's metrics
    // listener, every kubelet and every node-exporter.
    if monitoring(plan) && node(from) {
        ports.extend(
            plan.etcd
                .iter()
                .filter(|m| m.host == to.name)
                .map(|m| m.metrics_port),
        );
        if node(to) {
            ports.push(crate::render::NODE_EXPORTER_PORT);
            if !from.has(cp) {
                ports.push(10250);
            }
        }
    }
    ports
}

fn monitoring(plan: &ClusterPlan) -> bool {
    plan.inventory
        .addons
        .iter()
        .any(|a| a.kind == crate::inventory::AddonKind::Monitoring)
}

/// Judges one host's facts. Pure, so every rule is unit-tested.
pub fn evaluate(plan: &ClusterPlan, host: &PlannedHost, f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let mut check = |name, status, found: String, fix: &str| {
        out.push(Check::new(&host.name, name, status, found, fix))
    };
    let cp = host.has(Role::ControlPlane);
    let os_ok = matches!(
        f.os_id.as_str(),
        "debian" | "ubuntu" | "rhel" | "rocky" | "almalinux" | "centos" | "fedora"
    );
    check(
        "os",
        if os_ok {
            CheckStatus::Pass
        } else {
            CheckStatus::Warn
        },
        format!("{} {}", f.os_id, f.os_version),
        "kbs installs static binaries with its own units on Debian, Ubuntu and the RHEL family; other distributions may need manual steps",
    );
    // The artifacts are built for one architecture (data/versions.toml `arch`).
    let arch = &crate::versions::catalog().arch;
    let arch_ok = matches!(
        (f.arch.as_str(), arch.as_str()),
        ("x86_64", "amd64") | ("aarch64", "arm64")
    );
    check(
        "arch",
        if arch_ok {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        },
        f.arch.clone(),
        &format!("kbs installs {arch} artifacts (data/versions.toml): use {arch} hosts"),
    );
    check(
        "systemd",
        if f.systemd {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        },
        if f.systemd {
            "running".into()
        } else {
            "not PID 1".into()
        },
        "kbs runs etcd, the kubelet and the front as systemd services: boot the host with systemd",
    );
    if cp {
        check(
            "cpus",
            if f.cpus >= 2 {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            f.cpus.to_string(),
            "a control plane needs at least 2 CPUs (kubeadm's NumCPU check)",
        );
    }
    let (need_mb, why) = if cp {
        (
            1700,
            "a control plane needs at least 1700 MB (kubeadm's Mem check)",
        )
    } else if host.has(Role::Etcd) {
        (2048, "etcd wants at least 2 GB of memory")
    } else {
        (0, "")
    };
    check(
        "memory",
        if f.mem_mb >= need_mb {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        },
        format!("{} MB", f.mem_mb),
        why,
    );
    check(
        "cgroup",
        if f.cgroup_version == 2 {
            CheckStatus::Pass
        } else {
            CheckStatus::Warn
        },
        format!("v{}", f.cgroup_version),
        "cgroup v1 is in maintenance mode since Kubernetes 1.31: boot with systemd.unified_cgroup_hierarchy=1",
    );
    check(
        "swap",
        if f.swap_mb == 0 {
            CheckStatus::Pass
        } else {
            CheckStatus::Warn
        },
        format!("{} MB", f.swap_mb),
        "apply turns swap off (swapoff -a) and comments it out of /etc/fstab",
    );

    let mut busy = Vec::new();
    for (port, ours) in needed_ports(plan, host) {
        if let Some(p) = f.listener(port).filter(|p| !p.starts_with(ours)) {
            busy.push(format!(
                "{port} ({})",
                if p.is_empty() { "unknown process" } else { p }
            ));
        }
    }
    check(
        "ports",
        if busy.is_empty() {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        },
        if busy.is_empty() {
            "free".into()
        } else {
            busy.join(", ")
        },
        "stop what listens there, or move it: these ports are needed by etcd, the API server, haproxy or the kubelet",
    );

    let skew = f.clock_skew_ms.abs();
    let status = match skew {
        0..=500 => CheckStatus::Pass,
        501..=5000 => CheckStatus::Warn,
        _ => CheckStatus::Fail,
    };
    check(
        "clock-skew",
        status,
        format!("{} ms", f.clock_skew_ms),
        "run time synchronisation (chrony or systemd-timesyncd) on every host: TLS and etcd leases need agreeing clocks",
    );

    for (dir, p99) in &f.fsync_p99_ms {
        let status = if *p99 > 10.0 {
            CheckStatus::Warn
        } else {
            CheckStatus::Pass
        };
        check(
            "etcd-fsync",
            status,
            format!("p99 {p99:.1} ms in {dir}"),
            "etcd wants fsync under ~10 ms: put its data dir on an SSD/NVMe of its own",
        );
    }

    if host.has(Role::ControlPlane) && plan.front.mode == EndpointMode::Vip {
        let iface = plan
            .inventory
            .endpoint
            .interface
            .clone()
            .or_else(|| f.interface_for(host.address).map(|(i, _)| i.clone()));
        let in_subnet = match (
            &plan.inventory.endpoint.address,
            f.interface_for(host.address),
        ) {
            (HostName::Ip(vip), Some((_, net))) => net.contains(vip),
            _ => false,
        };
        let status = match (&iface, in_subnet) {
            (Some(_), true) => CheckStatus::Pass,
            (Some(_), false) => CheckStatus::Warn,
            (None, _) => CheckStatus::Fail,
        };
        check(
            "vip-interface",
            status,
            iface.unwrap_or_else(|| format!("no interface holds {}", host.address)),
            "the VIP must be in the subnet of the interface carrying the host's address; set [endpoint] interface if it is another NIC",
        );
    }
    out
}

/// This cluster's CAs, by where a host keeps them (`pki::identity_cas`), as DER; `None` where the
/// state dir has none yet (a new cluster, whose PKI is made after preflight).
type OurCas = Vec<(String, Option<Vec<u8>>)>;

fn our_cas(state: &crate::state::StateDir) -> OurCas {
    crate::pki::identity_cas()
        .into_iter()
        .map(|(remote, kind)| {
            let local = state.pki_dir().join(format!("{}.crt", kind.base()));
            let der = std::fs::read(local).ok().and_then(|pem| {
                x509_parser::pem::parse_x509_pem(&pem)
                    .ok()
                    .map(|(_, block)| block.contents)
            });
            (remote.display().to_string(), der)
        })
        .collect()
}

/// Whether the CAs on `host` (if any) are this cluster's: a host of another cluster (another
/// state dir's, or one whose state dir was lost) would have its certificates replaced by this
/// run, which breaks that cluster and leaves etcd unable to start with its old data.
fn identity(host: &str, f: &Facts, ours: &OurCas) -> Check {
    use base64::Engine;
    let foreign: Vec<&str> = f
        .cas
        .iter()
        .filter(|(path, b64)| {
            let theirs = base64::engine::general_purpose::STANDARD.decode(b64.trim());
            let ours = ours
                .iter()
                .find(|(p, _)| p == *path)
                .and_then(|(_, d)| d.as_ref());
            !matches!((theirs, ours), (Ok(t), Some(o)) if t == *o)
        })
        .map(|(path, _)| path.as_str())
        .collect();
    let (status, found) = match (foreign.is_empty(), f.cas.is_empty()) {
        (true, true) => (CheckStatus::Pass, "no cluster yet".to_string()),
        (true, false) => (CheckStatus::Pass, "this cluster's CAs".to_string()),
        (false, _) if ours.iter().all(|(_, d)| d.is_none()) => (
            CheckStatus::Fail,
            format!(
                "a cluster's CA in {}, and this state dir has none",
                foreign.join(", ")
            ),
        ),
        (false, _) => (
            CheckStatus::Fail,
            format!("another cluster's CA in {}", foreign.join(", ")),
        ),
    };
    Check::new(
        host,
        "cluster-identity",
        status,
        found,
        "the host belongs to another cluster, whose certificates this run would replace: if it is this cluster, run with the state dir that made it (--state-dir); if its old cluster is to go, `kbs reset` an inventory of the old cluster's hosts first (it deletes their Kubernetes and etcd data)",
    )
}

/// How many of the next workers (in inventory order, wrapping) a worker probes for node-to-node
/// ports: a ring, so that every worker is probed by as many others, and the probes grow with the
/// host count, not with its square (1,000 nodes probing each other would be a million probes).
const RING_PEERS: usize = 3;

/// The hosts `host` probes: every other host from a control plane (its API server reaches every
/// kubelet); else the control planes, the etcd hosts and the next [`RING_PEERS`] workers.
fn probed<'a>(plan: &'a ClusterPlan, host: &PlannedHost) -> Vec<&'a PlannedHost> {
    let others = plan.hosts.iter().filter(|h| h.name != host.name);
    if host.has(Role::ControlPlane) {
        return others.collect();
    }
    let nodes: Vec<&PlannedHost> = plan
        .hosts
        .iter()
        .filter(|h| h.has(Role::Worker) && !h.has(Role::ControlPlane))
        .collect();
    let ring: Vec<&str> = nodes
        .iter()
        .position(|h| h.name == host.name)
        .map(|at| {
            (1..=RING_PEERS.min(nodes.len() - 1))
                .map(|k| nodes[(at + k) % nodes.len()].name.as_str())
                .collect()
        })
        .unwrap_or_default();
    others
        .filter(|h| {
            h.has(Role::ControlPlane) || h.has(Role::Etcd) || ring.contains(&h.name.as_str())
        })
        .collect()
}

/// Each host opens a TCP connection to every port it will use on the hosts it probes ([`probed`]:
/// etcd, API server, kubelet), all at once. An answer, even "connection refused" before anything listens, proves
/// the path is open; silence for 3 s (and 1 s more per 100 probes, as a control plane of a large
/// cluster forks one per node and port) means a firewall drops it. Probing the real ports, not
/// SSH, also spares every sshd a connection per peer.
async fn reachability(cx: &Ctx, host: &PlannedHost) -> Result<Check, RunError> {
    let wanted: Vec<(String, IpAddr, u16)> = probed(&cx.plan, host)
        .into_iter()
        .flat_map(|h| {
            ports_between(&cx.plan, host, h)
                .into_iter()
                .map(|port| (format!("{}:{port}", h.name), h.address, port))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Check::new(
            &host.name,
            "reachability",
            CheckStatus::Pass,
            "no other host to reach".into(),
            "",
        ));
    }
    // Each probe is one forked subshell (no exec, no second fork): it says "ok NAME:PORT" when
    // the connection opens, and bash's own error names `/dev/tcp/IP/PORT` when it fails (on
    // stdout too). Job control gives each its own process group, so the ones still waiting when
    // the watchdog fires are killed whole, and are missing from the output.
    let mut script = String::from("set -m\npids=\n");
    for (label, ip, port) in &wanted {
        let _ = writeln!(
            script,
            "( exec 2>&1; exec 3<>/dev/tcp/{ip}/{port} && echo ok {label} ) & pids=\"$pids $!\""
        );
    }
    let wait = 3 + wanted.len() / 100;
    let _ = write!(
        script,
        "( sleep {wait}; for p in $pids; do kill -- -$p; done ) 2>/dev/null & watchdog=$!\n\
         wait $pids 2>/dev/null\nkill -- -$watchdog 2>/dev/null\nexit 0\n",
    );
    let s = cx.session(&host.name).await?;
    let out = s.run(Exec::new("bash -s").stdin(script.as_bytes())).await?;
    let blocked = unanswered(&wanted, &out.stdout_lossy());
    Ok(Check::new(
        &host.name,
        "reachability",
        if blocked.is_empty() {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        },
        if blocked.is_empty() {
            format!("reaches {} ports on the other hosts", wanted.len())
        } else {
            format!("no answer from {}", blocked.join(", "))
        },
        "open the network between the hosts: etcd (2379, 2380), the API server, the kubelet (10250)",
    ))
}

/// The probes of `wanted` that got no answer in the probe script's output: neither "ok NAME:PORT"
/// nor "connection refused" (nothing listens yet, but the path is open) from bash's
/// `/dev/tcp/IP/PORT: Connection refused`.
fn unanswered<'a>(wanted: &'a [(String, IpAddr, u16)], output: &str) -> Vec<&'a str> {
    let answered: std::collections::BTreeSet<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    let refused: std::collections::BTreeSet<&str> = output
        .lines()
        .filter_map(|l| {
            l.strip_suffix(": Connection refused")?
                .split("/dev/tcp/")
                .nth(1)
        })
        .collect();
    wanted
        .iter()
        .filter(|(label, ip, port)| {
            !answered.contains(label.as_str()) && !refused.contains(format!("{ip}/{port}").as_str())
        })
        .map(|(label, ..)| label.as_str())
        .collect()
}

pub(super) async fn run(cx: &Ctx) -> Result<Vec<Check>, RunError> {
    let mut checks = Vec::new();
    let ours = our_cas(&cx.state);
    for h in cx.hosts() {
        if let Some(f) = cx.facts(&h.name) {
            checks.extend(evaluate(&cx.plan, h, f));
            checks.push(identity(&h.name, f, &ours));
        }
    }
    let hosts: Vec<&PlannedHost> = cx.hosts().collect();
    let reach: Vec<Result<Check, RunError>> = futures::stream::iter(hosts)
        .map(|h| reachability(cx, h))
        .buffer_unordered(cx.opts.concurrency)
        .collect()
        .await;
    for r in reach {
        checks.push(r?);
    }
    for c in &mut checks {
        if cx.opts.skip_checks.contains(c.name) && c.status != CheckStatus::Pass {
            c.status = CheckStatus::Skipped;
        }
    }
    checks.sort_by(|a, b| {
        (cx.plan.hosts.iter().position(|h| h.name == a.host), a.name)
            .cmp(&(cx.plan.hosts.iter().position(|h| h.name == b.host), b.name))
    });
    // One part per failed check, its hosts shortened as in the table: bounded at any host count.
    let mut failed: Vec<(&str, Vec<&str>)> = Vec::new();
    for c in checks.iter().filter(|c| c.status == CheckStatus::Fail) {
        match failed.iter_mut().find(|(name, _)| *name == c.name) {
            Some((_, hosts)) => hosts.push(&c.host),
            None => failed.push((c.name, vec![&c.host])),
        }
    }
    let shown = checks.iter().any(|c| c.status != CheckStatus::Pass);
    if shown {
        cx.progress.suspend(|| eprintln!("{}", table(&checks)));
    }
    if failed.is_empty() {
        Ok(checks)
    } else {
        let parts: Vec<String> = failed
            .iter()
            .map(|(name, hosts)| format!("{name} on {}", crate::words::some(hosts)))
            .collect();
        Err(RunError::Preflight(parts.join("; ")))
    }
}

/// The checks that did not pass, as a table.
pub fn table(checks: &[Check]) -> String {
    format!("Preflight\n{}", render_table(checks, false))
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skipped => "skipped",
        }
    }
}

/// Checks as a table (host, check, status, found, fix); with `all`, passed ones too. Shared by
/// preflight and `kbs check`.
pub fn render_table(checks: &[Check], all: bool) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(110)
        .set_header(vec!["host", "check", "status", "found", "fix"]);
    let shown: Vec<&Check> = checks
        .iter()
        .filter(|c| all || c.status != CheckStatus::Pass)
        .collect();
    let hosts: BTreeSet<&str> = shown.iter().map(|c| c.host.as_str()).collect();
    if hosts.len() <= GROUP_FROM {
        for c in shown {
            t.add_row(vec![
                c.host.clone(),
                c.name.to_string(),
                c.status.as_str().into(),
                c.found.clone(),
                c.fix.clone(),
            ]);
        }
        return t.to_string();
    }
    // Hundreds of hosts failing the same way make one row, not hundreds.
    let mut groups: Vec<(&Check, Vec<&Check>)> = Vec::new();
    for c in shown {
        match groups
            .iter_mut()
            .find(|(k, _)| (k.name, k.status, &k.fix) == (c.name, c.status, &c.fix))
        {
            Some((_, members)) => members.push(c),
            None => groups.push((c, vec![c])),
        }
    }
    for (first, members) in groups {
        let names: Vec<&str> = members.iter().map(|c| c.host.as_str()).collect();
        let host = crate::words::some(&names);
        let found = if members.iter().all(|c| c.found == first.found) {
            first.found.clone()
        } else {
            format!("{} (on {}; differs per host)", first.found, first.host)
        };
        t.add_row(vec![
            host,
            first.name.to_string(),
            first.status.as_str().into(),
            found,
            first.fix.clone(),
        ]);
    }
    t.to_string()
}

/// Past this many hosts, `render_table` groups the hosts that share a check's outcome.
const GROUP_FROM: usize = 10;

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_or_a_refusal_is_a_path_silence_is_not() {
        let wanted: Vec<(String, IpAddr, u16)> = [
            ("a:2379", "192.0.2.11", 2379),
            ("b:10250", "192.0.2.12", 10250),
            ("c:10250", "2001:db8::3", 10250),
            ("d:9100", "192.0.2.14", 9100),
        ]
        .into_iter()
        .map(|(l, ip, p)| (l.to_string(), ip.parse().expect("ip"), p))
        .collect();
        // What the probe script prints: one open, two refused (nothing listens yet), one silent
        // until the watchdog killed it.
        let out = "ok a:2379\nbash: connect: Connection refused\n\
                   bash: line 3: /dev/tcp/192.0.2.12/10250: Connection refused\n\
                   bash: line 4: /dev/tcp/2001:db8::3/10250: Connection refused\n\
                   bash: line 5: /dev/tcp/192.0.2.14/9100: No route to host\n";
        assert_eq!(unanswered(&wanted, out), ["d:9100"]);
        assert_eq!(unanswered(&wanted, "").len(), 4);
    }

    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::inventory::Inventory;

    fn plan() -> ClusterPlan {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/three-host.toml"),
        )
        .expect("read");
        ClusterPlan::new(Inventory::parse(Path::new("three-host.toml"), &text).expect("valid"))
    }

    fn facts() -> Facts {
        let text = "os_id=debian\nos_version=12\narch=x86_64\nkernel=6.1\ncgroup=2\nsystemd=yes\nmem_kb=4000000\nswap_kb=0\ncpus=2\n\
                    addr=eth0 192.0.2.11/24\nlisten=22 users:((\"sshd\",pid=1,fd=3))\nclock_ns=0\n";
        Facts::parse(text, 0).expect("facts")
    }

    fn status(checks: &[Check], name: &str) -> CheckStatus {
        checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.status)
            .expect(name)
    }

    #[test]
    fn a_host_of_another_cluster_is_refused_before_its_certificates_are_replaced() {
        let p = plan();
        let state_dir = tempfile::tempdir().expect("tmp");
        let state = crate::state::StateDir::new(state_dir.path());
        let other_dir = tempfile::tempdir().expect("tmp");
        let other = crate::state::StateDir::new(other_dir.path());
        crate::pki::ensure(&p, &other).expect("another cluster's PKI");
        // What the facts script prints of a CA file: its base64 body on one line.
        let on_host = |s: &crate::state::StateDir| {
            let pem = std::fs::read_to_string(s.pki_dir().join("ca.crt")).expect("ca.crt");
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            let mut f = facts();
            f.cas.insert("/etc/kubernetes/pki/ca.crt".into(), body);
            f
        };
        let (bare, held) = (facts(), on_host(&other));

        // A new state dir: a bare host passes, one holding a cluster's CA does not.
        let ours = our_cas(&state);
        assert_eq!(identity("h", &bare, &ours).status, CheckStatus::Pass);
        let c = identity("h", &held, &ours);
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.found.contains("this state dir has none"), "{}", c.found);
        assert!(c.fix.contains("--state-dir"), "{}", c.fix);

        // That cluster's own state dir passes it; a third cluster's does not.
        assert_eq!(
            identity("h", &held, &our_cas(&other)).status,
            CheckStatus::Pass
        );
        crate::pki::ensure(&p, &state).expect("PKI");
        let c = identity("h", &held, &our_cas(&state));
        assert_eq!(c.status, CheckStatus::Fail);
        assert_eq!(
            c.found,
            "another cluster's CA in /etc/kubernetes/pki/ca.crt"
        );
        assert_eq!(
            identity("h", &on_host(&state), &our_cas(&state)).status,
            CheckStatus::Pass
        );
    }

    #[test]
    fn monitoring_needs_the_metrics_ports_free_and_reachable() {
        let p = plan();
        assert!(monitoring(&p), "on for three hosts");
        let (a, b) = (&p.hosts[0], &p.hosts[1]);
        let member = p.etcd.iter().find(|m| m.host == b.name).expect("a member");
        let between = ports_between(&p, a, b);
        assert!(between.contains(&member.metrics_port), "{between:?}");
        assert!(
            between.contains(&crate::render::NODE_EXPORTER_PORT),
            "{between:?}"
        );
        assert!(
            needed_ports(&p, a).contains(&(crate::render::NODE_EXPORTER_PORT, "node_exporter"))
        );
        let mut inv = p.inventory.clone();
        inv.addons
            .retain(|x| x.kind != crate::inventory::AddonKind::Monitoring);
        let off = ClusterPlan::new(inv);
        assert!(!ports_between(&off, a, b).contains(&crate::render::NODE_EXPORTER_PORT));
        assert!(
            !needed_ports(&off, a)
                .iter()
                .any(|(p, _)| *p == crate::render::NODE_EXPORTER_PORT)
        );
    }

    #[test]
    fn probes_grow_with_the_host_count_not_its_square() {
        let mut text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/three-host.toml"),
        )
        .expect("read");
        for i in 4..=40 {
            text.push_str(&format!(
                "\n[[host]]\nname = \"node-{i}\"\naddress = \"192.0.2.{}\"\n",
                10 + i
            ));
        }
        let p = ClusterPlan::new(Inventory::parse(Path::new("40.toml"), &text).expect("valid"));
        assert!(monitoring(&p), "node-to-node ports are probed");
        let mut probed_by: BTreeMap<&str, usize> = BTreeMap::new();
        for h in &p.hosts {
            let targets = probed(&p, h);
            let expected = if h.has(Role::ControlPlane) {
                39
            } else {
                3 + RING_PEERS
            };
            assert_eq!(targets.len(), expected, "{}", h.name);
            for t in targets {
                *probed_by.entry(t.name.as_str()).or_default() += 1;
            }
        }
        // Each worker is still reached from every control plane and from its ring neighbours.
        assert!(
            p.hosts
                .iter()
                .all(|h| probed_by.get(h.name.as_str()) >= Some(&(2 + RING_PEERS))),
            "{probed_by:?}"
        );
    }

    #[test]
    fn ingress_on_the_vip_needs_80_and_443_free_on_the_control_planes() {
        let p = plan();
        let cp = p
            .hosts
            .iter()
            .find(|h| h.has(Role::ControlPlane))
            .expect("a control plane");
        assert!(!needed_ports(&p, cp).iter().any(|(p, _)| *p == 80));
        let mut inv = p.inventory.clone();
        inv.ingress = Some(crate::inventory::IngressSettings {
            exposure: crate::inventory::IngressExposure::Vip,
            default_class: true,
            gateway_api: false,
        });
        let on = ClusterPlan::new(inv);
        let ports = needed_ports(&on, cp);
        assert!(
            ports.contains(&(80, "traefik")) && ports.contains(&(443, "traefik")),
            "{ports:?}"
        );
    }

    #[test]
    fn a_good_host_passes() {
        let p = plan();
        let checks = evaluate(&p, &p.hosts[0], &facts());
        assert!(
            checks.iter().all(|c| c.status == CheckStatus::Pass),
            "{checks:?}"
        );
    }

    #[test]
    fn each_problem_is_named_with_its_fix() {
        let p = plan();
        let mut f = facts();
        f.cpus = 1;
        f.swap_mb = 1024;
        f.clock_skew_ms = 9000;
        f.listening.insert(2379, "nginx".into());
        f.listening.insert(6443, "kube-apiserver".into());
        f.fsync_p99_ms.insert("/var/lib/etcd".into(), 25.0);
        f.addresses.clear();
        let checks = evaluate(&p, &p.hosts[0], &f);
        assert_eq!(status(&checks, "cpus"), CheckStatus::Fail);
        assert_eq!(status(&checks, "swap"), CheckStatus::Warn);
        assert_eq!(status(&checks, "clock-skew"), CheckStatus::Fail);
        assert_eq!(status(&checks, "etcd-fsync"), CheckStatus::Warn);
        assert_eq!(status(&checks, "vip-interface"), CheckStatus::Fail);
        let ports = checks.iter().find(|c| c.name == "ports").expect("ports");
        // The API server port held by an API server (an earlier run) is fine; nginx on 2379 is not.
        assert_eq!(
            (ports.status, ports.found.as_str()),
            (CheckStatus::Fail, "2379 (nginx)")
        );
        assert!(ports.fix.contains("stop what listens there"));
    }

    #[test]
    fn many_hosts_failing_alike_make_one_row() {
        let check = |i: usize, found: &str| {
            Check::new(
                &format!("sim-{i:04}"),
                "systemd",
                CheckStatus::Fail,
                found.into(),
                "boot the host with systemd",
            )
        };
        let mut checks: Vec<Check> = (1..=966).map(|i| check(i, "not PID 1")).collect();
        checks.push(Check::new(
            "sim-0001",
            "swap",
            CheckStatus::Warn,
            "2 GiB".into(),
            "swapoff",
        ));
        let table = render_table(&checks, false);
        assert!(table.contains("sim-0001, sim-0002 and 964 more"), "{table}");
        assert_eq!(table.matches("not PID 1").count(), 1, "{table}");
        assert!(table.contains("swap"), "{table}");
        // A few hosts keep a row each.
        let few: Vec<Check> = (1..=3).map(|i| check(i, "not PID 1")).collect();
        assert_eq!(render_table(&few, false).matches("not PID 1").count(), 3);
    }
}
