//! `kbs init`: a commented starter inventory, as `k0sctl init` writes one.

use std::fmt::Write;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use miette::{IntoDiagnostic, WrapErr, miette};

use crate::inventory::Topology;

pub fn run(addresses: &[String], name: &str, out: Option<&Path>) -> miette::Result<ExitCode> {
    let ips = addresses
        .iter()
        .map(|a| {
            a.trim().parse::<IpAddr>().map_err(|_| {
                miette!(help = "list IP addresses separated by commas, e.g. --hosts 10.0.0.11,10.0.0.12,10.0.0.13", "--hosts: `{a}` is not an IP address")
            })
        })
        .collect::<miette::Result<Vec<_>>>()?;
    if !crate::inventory::is_dns_label(name) {
        return Err(miette!(
            help = "use lower-case letters, digits and '-', e.g. --name edge-1",
            "--name: `{name}` is not a DNS label"
        ));
    }
    let text = starter(name, &ips);
    match out {
        None => print!("{text}"),
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .into_diagnostic()
                .wrap_err_with(|| {
                    format!(
                        "cannot create {} (kbs init never overwrites a file)",
                        path.display()
                    )
                })?;
            f.write_all(text.as_bytes()).into_diagnostic()?;
            eprintln!(
                "wrote {}; check it, then run: kbs plan {}",
                path.display(),
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn starter(name: &str, ips: &[IpAddr]) -> String {
    let topology = Topology::for_host_count(ips.len());
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"# kbs inventory for {n} host(s): topology {t}. `kbs plan` shows what it means before anything runs.

[cluster]
name = "{name}"                    # a DNS label: lower-case letters, digits, '-'
# kubernetes_version = "1.37.1"   # the newest supported release when unset (data/versions.toml)
pod_subnet = "10.244.0.0/16"       # must not overlap the hosts' network or service_subnet
service_subnet = "10.96.0.0/12"
# dns_domain = "cluster.local"

[endpoint]                         # how clients reach the API servers
mode = "vip"                       # vip (keepalived + haproxy) | kube-vip | external (your LB) | dns (round robin)
address = "{vip}"{pad}# CHECK: a free IP in the hosts' subnet for vip/kube-vip; your LB's address or a DNS name otherwise
port = 8443                        # the port clients use; in vip mode the API servers keep 6443
# interface = "eth0"               # the NIC for the VIP; found from each host's address when unset

[ssh]                              # defaults for every host; a host may override them in its own `ssh` table
user = "root"                      # a non-root user needs passwordless sudo
identity_file = "~/.ssh/id_ed25519"
# jump_host = "root@192.0.2.5:22"  # a bastion to go through

# [etcd]
# members = 3                      # 1, 3, 5 or 7; chosen from the host count when unset

# [pki]
# algorithm = "ecdsa-p256"         # or "rsa-2048"
# extra_sans = ["api.example.com"]

[cni]
plugin = "calico"                  # flannel | calico | cilium (with a rendered manifest) | none
# version = "v3.32.1"              # the release kbs pins when unset
# manifest = "calico.yaml"         # a hand-written manifest instead; relative to this file, or to [artifacts] bundle

# [addons]                         # applied after the CNI (docs/addons.md)
# metrics_server = true            # kubectl top, HPA
# storage = "local-path"           # a default StorageClass on node-local disk (not replicated) | none
# monitoring = true                # Prometheus, node-exporter, kube-state-metrics, alert rules (default off on 1 host)
# [addons.grafana]                 # Grafana on monitoring's Prometheus, with kbs's dashboard; off without this table
# admin_password_file = "secrets/grafana.pass"  # required: the admin's password; mode 0600 or 0400, yours
# [addons.logging]                 # Fluent Bit ships container logs and the audit log; off while output is unset
# output = "loki"                  # syslog | http | loki | elasticsearch
# host = "logs.example.net"        # an IP address or DNS name
# port = 3100
# token_file = "secrets/logs.token"  # optional: mode 0600 or 0400, yours; becomes a Kubernetes Secret
# [addons.ingress]                 # Traefik, IngressClass traefik (the default class); off without this table
# exposure = "node-ports"          # node-ports (30080, 30443; http_node_port, https_node_port) | vip (80, 443 on the VIP)
# gateway_api = true               # also the Gateway API: its CRDs, GatewayClass traefik, Gateway kbs-ingress/traefik

# [artifacts]                      # where kubeadm, kubelet, etcd, containerd, the images... come from
# bundle = "bundle"                # an air-gap bundle made by `kbs bundle` (docs/airgap.md); unset: apply downloads them here
# mirrors = [{{ from = "https://dl.k8s.io/", to = "https://mirror.example/dl.k8s.io/" }}]

# [registry]                       # the site's registry, holding every image (docs/mirrors.md)
# address = "registry.example:5000/k8s"
# ca_file = "registry-ca.crt"
"#,
        n = ips.len(),
        t = topology.as_str(),
        vip = suggest_vip(ips),
        pad = " ".repeat(23usize.saturating_sub(suggest_vip(ips).len())),
    );
    for (i, ip) in ips.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"[[host]]
name = "node-{}"
address = "{ip}"
# roles = ["control-plane", "etcd"]   # control-plane | etcd | worker; chosen from the host count when unset
# reliability = 10                     # higher = more reliable; on two hosts etcd goes to the most reliable
# etcd_data_dirs = ["/disk1/etcd"]     # one etcd member per directory
# host_key = "ssh-ed25519 AAAA..."     # pin the host's key; otherwise known_hosts decides
"#,
            i + 1
        );
    }
    s
}

/// A guess at a free VIP in the first host's /24 (.100, or the highest address no host uses);
/// the starter file tells the operator to check it.
fn suggest_vip(ips: &[IpAddr]) -> String {
    let Some(IpAddr::V4(first)) = ips.first() else {
        return "CHANGE-ME".into();
    };
    let [a, b, c, _] = first.octets();
    [100u8]
        .into_iter()
        .chain((2..=254).rev())
        .map(|d| IpAddr::from([a, b, c, d]))
        .find(|ip| !ips.contains(ip))
        .map_or_else(|| "CHANGE-ME".into(), |ip| ip.to_string())
}
