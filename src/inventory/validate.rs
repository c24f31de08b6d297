//! Turns the raw TOML into a typed `Inventory`, reporting every problem with its span.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use russh::keys::PublicKey;
use toml::Spanned;

use super::components;
use super::error::{InventoryErrors, Reporter};
use super::layout::etcd_layout;
use super::raw::{
    RawBackup, RawEndpoint, RawHost, RawInventory, RawNamespace, RawSecurity, RawSsh,
};
use super::{
    BackupSettings, Cluster, Endpoint, EndpointMode, EtcdSettings, Host, HostName, Inventory,
    JumpHost, KubeVersion, NamespaceBaseline, PkiSettings, Quantity, Role, SecuritySettings,
    SshSettings,
};

const MAX_ETCD_MEMBERS: usize = 7;

pub(super) fn parse(
    path: &Path,
    text: &str,
    allow_unsupported: bool,
) -> Result<Inventory, InventoryErrors> {
    let name = path.display().to_string();
    let mut r = Reporter::new(&name, text);
    let raw: RawInventory = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let (message, help) = explain_toml_error(e.message());
            r.error(span, message, "here", help);
            return r.finish(None);
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let inventory = build(&mut r, base, path, raw, allow_unsupported);
    r.finish(inventory)
}

/// serde's messages name the field and the valid values; add what to do.
fn explain_toml_error(message: &str) -> (String, String) {
    let help = if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        // "unknown field `rol`, expected one of `name`, `roles`": suggest the closest valid word.
        let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
        let suggestion = quoted.split_first().and_then(|(given, valid)| {
            valid
                .iter()
                .map(|v| (strsim::damerau_levenshtein(given, v), *v))
                .filter(|(d, _)| *d <= 3)
                .min()
        });
        let what = if message.starts_with("unknown field") {
            "key"
        } else {
            "value"
        };
        return (
            message.to_string(),
            match suggestion {
                Some((_, s)) => format!(
                    "did you mean `{s}`? Otherwise remove the {what} or use one listed above"
                ),
                None => format!("remove the {what} or use one of those listed above"),
            },
        );
    } else if message.starts_with("missing field") {
        "add the field; see inventories/ for complete examples"
    } else {
        "fix the TOML syntax; see https://toml.io for the format"
    };
    (message.to_string(), help.to_string())
}

fn build(
    r: &mut Reporter,
    base: &Path,
    path: &Path,
    raw: RawInventory,
    allow_unsupported: bool,
) -> Option<Inventory> {
    let versions = components::components(r, &raw, allow_unsupported);
    let cluster = cluster(r, &raw, versions.as_ref().map(|c| c.kubernetes));
    let defaults = ssh_settings(r, base, &raw.ssh, None);
    let hosts = hosts(r, base, &raw, &defaults);
    let endpoint = endpoint(r, &raw.endpoint, &hosts);
    let pki = pki(r, base, &raw);
    let security = security(r, &raw.security);
    let backup = raw
        .backup
        .as_ref()
        .map_or_else(BackupSettings::default, |b| backup(r, b));
    if let (Some(c), Some(_)) = (&cluster, &endpoint) {
        check_addresses_outside_subnets(r, c, &raw);
    }
    let etcd = etcd(r, &raw, &hosts);
    let artifacts = components::artifacts(r, base, &raw);
    let registry = components::registry(r, base, &raw);
    let cni = components::cni(r, base, &raw, &artifacts.source);
    let logging = components::logging(r, base, &raw);
    let ingress = components::ingress(r, &raw, endpoint.as_ref());
    let grafana = components::grafana(r, base, &raw);
    let (addons, addons_off_by_default) = components::addons(
        r,
        &raw,
        &security,
        logging.is_some(),
        ingress.as_ref(),
        grafana.is_some(),
    );
    let typed_hosts: Vec<Option<Host>> = hosts.iter().map(|(h, _)| h.clone()).collect();
    let hooks = super::hooks::hooks(r, &raw, &typed_hosts);
    Some(Inventory {
        path: path.to_path_buf(),
        cluster: cluster?,
        endpoint: endpoint?,
        ssh: defaults?,
        etcd,
        pki,
        versions: versions?,
        artifacts,
        registry,
        containerd: components::containerd(&raw),
        cni,
        addons,
        addons_off_by_default,
        logging,
        ingress,
        grafana,
        security,
        backup,
        hosts: typed_hosts.into_iter().collect::<Option<_>>()?,
        hooks,
    })
}

fn span<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

fn cluster(r: &mut Reporter, raw: &RawInventory, version: Option<KubeVersion>) -> Option<Cluster> {
    let c = &raw.cluster;
    let name = c.name.get_ref();
    let name_ok = is_dns_label(name);
    if !name_ok {
        r.error(
            span(&c.name),
            format!("cluster.name `{name}` is not a DNS label"),
            "not a DNS label",
            "use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. \"edge-1\"",
        );
    }
    let pod = parse_subnet(r, "cluster.pod_subnet", &c.pod_subnet);
    let svc = parse_subnet(r, "cluster.service_subnet", &c.service_subnet);
    if let (Some(p), Some(s)) = (pod, svc) {
        if p.contains(&s.network()) || s.contains(&p.network()) {
            r.error(
                span(&c.service_subnet),
                format!("cluster.service_subnet {s} overlaps cluster.pod_subnet {p}"),
                "overlaps the pod subnet",
                "choose two disjoint ranges, e.g. pod_subnet = \"10.244.0.0/16\" and service_subnet = \"10.96.0.0/12\"",
            );
        }
        // kube-apiserver refuses a service range of more than 2^20 addresses.
        let too_big = match s {
            IpNet::V4(n) => n.prefix_len() < 12,
            IpNet::V6(n) => n.prefix_len() < 108,
        };
        if too_big {
            r.error(
                span(&c.service_subnet),
                format!("cluster.service_subnet {s} is larger than the API server accepts"),
                "too large",
                "use at most 2^20 addresses: a prefix of /12 or longer for IPv4, /108 or longer for IPv6",
            );
        }
    }
    let dns_domain = match &c.dns_domain {
        Some(d) if !d.get_ref().split('.').all(is_dns_label) => {
            r.error(
                span(d),
                format!("cluster.dns_domain `{}` is not a DNS domain", d.get_ref()),
                "not a DNS domain",
                "use dot-separated DNS labels, e.g. \"cluster.local\"",
            );
            None
        }
        Some(d) => Some(d.get_ref().clone()),
        None => Some("cluster.local".to_string()),
    };
    Some(Cluster {
        name: name_ok.then(|| name.clone())?,
        kubernetes_version: version?,
        pod_subnet: pod?,
        service_subnet: svc?,
        dns_domain: dns_domain?,
    })
}

pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub(super) fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn parse_subnet(r: &mut Reporter, field: &str, v: &Spanned<String>) -> Option<IpNet> {
    let text = v.get_ref();
    match text.parse::<IpNet>() {
        Ok(net) if net != net.trunc() => {
            r.error(
                span(v),
                format!("{field} `{text}` has host bits set"),
                "not a network address",
                format!("write the network address: \"{}\"", net.trunc()),
            );
            None
        }
        Ok(net) => Some(net),
        Err(_) => {
            r.error(
                span(v),
                format!("{field} `{text}` is not a CIDR"),
                "not a CIDR",
                "write an address and a prefix length, e.g. \"10.244.0.0/16\" or \"fd00:10:244::/56\"",
            );
            None
        }
    }
}

fn parse_ip(r: &mut Reporter, field: &str, v: &Spanned<String>) -> Option<IpAddr> {
    let text = v.get_ref();
    match text.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            r.error(
                span(v),
                format!("{field} `{text}` is not an IP address"),
                "not an IP address",
                "write an IPv4 address like \"192.0.2.11\" or an IPv6 address like \"2001:db8::11\"; host names are not accepted here",
            );
            None
        }
    }
}

/// A user-written path: `~/` is the home directory, relative paths are relative to the inventory.
pub(super) fn resolve_path(base: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    base.join(p)
}

fn ssh_settings(
    r: &mut Reporter,
    base: &Path,
    raw: &RawSsh,
    defaults: Option<&SshSettings>,
) -> Option<SshSettings> {
    let field = |name: &str| {
        if defaults.is_some() {
            format!("host.ssh.{name}")
        } else {
            format!("ssh.{name}")
        }
    };
    let user = match &raw.user {
        Some(u) if u.get_ref().is_empty() || u.get_ref().contains(char::is_whitespace) => {
            r.error(
                span(u),
                format!("{} `{}` is not a user name", field("user"), u.get_ref()),
                "not a user name",
                "write a login name such as \"root\" or \"kbs\"",
            );
            None
        }
        Some(u) => Some(u.get_ref().clone()),
        None => Some(defaults.map_or_else(|| "root".to_string(), |d| d.user.clone())),
    };
    let jump_host = match &raw.jump_host {
        Some(j) => parse_jump_host(r, &field("jump_host"), j, raw.jump_host_key.as_ref()),
        None => Some(defaults.and_then(|d| d.jump_host.clone())),
    };
    if let (None, Some(k)) = (&raw.jump_host, &raw.jump_host_key) {
        r.error(
            span(k),
            format!(
                "{} is set without {}",
                field("jump_host_key"),
                field("jump_host")
            ),
            "no jump host",
            "set jump_host = \"user@address:port\" beside it, or remove the key",
        );
    }
    Some(SshSettings {
        user: user?,
        port: raw
            .port
            .as_ref()
            .map(|p| *p.get_ref())
            .or(defaults.map(|d| d.port))
            .unwrap_or(22),
        identity_file: raw
            .identity_file
            .as_ref()
            .map(|f| resolve_path(base, f.get_ref()))
            .or_else(|| defaults.and_then(|d| d.identity_file.clone())),
        known_hosts: raw
            .known_hosts
            .as_ref()
            .map(|f| resolve_path(base, f.get_ref()))
            .or_else(|| defaults.and_then(|d| d.known_hosts.clone())),
        jump_host: jump_host?,
    })
}

fn parse_jump_host(
    r: &mut Reporter,
    field: &str,
    v: &Spanned<String>,
    key: Option<&Spanned<String>>,
) -> Option<Option<JumpHost>> {
    let host_key = match key {
        Some(k) => Some(host_key(r, &format!("{field}_key"), k)?),
        None => None,
    };
    let text = v.get_ref();
    let (user, rest) = text.split_once('@').unwrap_or(("root", text));
    let (addr, port) = match rest.rsplit_once(':') {
        Some((a, p)) if !a.ends_with(':') && p.parse::<u16>().is_ok() => {
            (a.trim_matches(['[', ']']), p.parse().ok())
        }
        _ => (rest.trim_matches(['[', ']']), Some(22)),
    };
    match (addr.parse::<IpAddr>(), port) {
        (Ok(address), Some(port)) if !user.is_empty() => Some(Some(JumpHost {
            user: user.to_string(),
            address,
            port,
            host_key,
        })),
        _ => {
            r.error(
                span(v),
                format!("{field} `{text}` is not USER@ADDRESS[:PORT]"),
                "not USER@ADDRESS[:PORT]",
                "write e.g. \"root@192.0.2.5:22\"; the address must be an IP address",
            );
            None
        }
    }
}

type HostEntry = (Option<Host>, Range<usize>);

fn hosts(
    r: &mut Reporter,
    base: &Path,
    raw: &RawInventory,
    defaults: &Option<SshSettings>,
) -> Vec<HostEntry> {
    if raw.hosts.is_empty() {
        r.error(
            0..0,
            "the inventory lists no hosts",
            "no [[host]] tables",
            "add at least one [[host]] table with a name and an address",
        );
    }
    let mut names: HashMap<&str, Range<usize>> = HashMap::with_capacity(raw.hosts.len());
    let mut addresses: HashMap<IpAddr, Range<usize>> = HashMap::with_capacity(raw.hosts.len());
    let mut out = Vec::with_capacity(raw.hosts.len());
    for h in &raw.hosts {
        let host_span = h.span();
        let h: &RawHost = h.get_ref();
        let name = h.name.get_ref();
        let mut ok = true;
        if !is_dns_label(name) {
            r.error(span(&h.name), format!("host.name `{name}` is not a DNS label"), "not a DNS label", "use lower-case letters, digits and '-', as Kubernetes node names require, e.g. \"node-1\"");
            ok = false;
        } else if let Some(first) = names.insert(name, span(&h.name)) {
            let line = r.line(first.start);
            r.error(
                span(&h.name),
                format!("host.name `{name}` is used twice"),
                "duplicate name",
                format!("host names must be unique; the first `{name}` is on line {line}"),
            );
            ok = false;
        }
        let address = parse_ip(r, "host.address", &h.address);
        if let Some(ip) = address
            && let Some(first) = addresses.insert(ip, span(&h.address))
        {
            let line = r.line(first.start);
            r.error(
                span(&h.address),
                format!("host.address {ip} is used twice"),
                "duplicate address",
                format!("every host needs its own address; {ip} is first used on line {line}"),
            );
            ok = false;
        }
        let roles = match &h.roles {
            Some(roles) if roles.get_ref().is_empty() => {
                r.error(span(roles), format!("host `{name}` has an empty roles list"), "empty", "list at least one of \"control-plane\", \"etcd\", \"worker\", or remove `roles` to let the topology choose");
                ok = false;
                None
            }
            Some(roles) => {
                let mut v = roles.get_ref().clone();
                v.sort();
                v.dedup();
                Some(v)
            }
            None => None,
        };
        let etcd_data_dirs = data_dirs(r, h);
        let pinned = h.host_key.as_ref().map(|k| host_key(r, "host.host_key", k));
        let ssh = match (&h.ssh, defaults) {
            (Some(s), Some(d)) => ssh_settings(r, base, s, Some(d)),
            (None, Some(d)) => Some(d.clone()),
            (_, None) => None,
        };
        let host = match (ok, address, etcd_data_dirs, ssh, pinned) {
            // A key that did not parse (`Some(None)`) was reported.
            (
                true,
                Some(address),
                Some(etcd_data_dirs),
                Some(ssh),
                pinned @ (None | Some(Some(_))),
            ) => Some(Host {
                name: name.clone(),
                address,
                roles,
                reliability: h.reliability,
                etcd_data_dirs,
                host_key: pinned.flatten(),
                ssh,
            }),
            _ => None,
        };
        out.push((host, host_span));
    }
    out
}

fn data_dirs(r: &mut Reporter, h: &RawHost) -> Option<Vec<PathBuf>> {
    let Some(dirs) = &h.etcd_data_dirs else {
        return Some(Vec::new());
    };
    let mut ok = true;
    let mut seen = Vec::new();
    for d in dirs.get_ref() {
        let p = d.get_ref();
        if !p.starts_with('/') {
            r.error(
                span(d),
                format!("host.etcd_data_dirs entry `{p}` is not an absolute path"),
                "not absolute",
                "write an absolute path on the host, e.g. \"/disk1/etcd\"",
            );
            ok = false;
        } else if seen.contains(p) {
            r.error(
                span(d),
                format!("host.etcd_data_dirs lists `{p}` twice"),
                "duplicate",
                "each etcd member needs its own data directory",
            );
            ok = false;
        }
        seen.push(p.clone());
    }
    ok.then(|| seen.into_iter().map(PathBuf::from).collect())
}

/// A pinned host key, parsed here so that a bad key is an inventory error, not a failure at
/// connect time.
fn host_key(r: &mut Reporter, field: &str, k: &Spanned<String>) -> Option<PublicKey> {
    super::parse_host_key(k.get_ref())
        .map_err(|why| {
            r.error(
                span(k),
                format!("{field} is not an OpenSSH public key: {why}"),
                "not a public key",
                "paste the host's key as it appears in /etc/ssh/ssh_host_ed25519_key.pub, e.g. \"ssh-ed25519 AAAAC3Nza...\"",
            );
        })
        .ok()
}

fn endpoint(r: &mut Reporter, e: &RawEndpoint, hosts: &[HostEntry]) -> Option<Endpoint> {
    let mode = *e.mode.get_ref();
    let text = e.address.get_ref();
    let address = match (text.parse::<IpAddr>(), mode) {
        (Ok(ip), _) => Some(HostName::Ip(ip)),
        (Err(_), EndpointMode::Dns | EndpointMode::External) if is_dns_name(text) => {
            Some(HostName::Dns(text.clone()))
        }
        (Err(_), EndpointMode::Vip | EndpointMode::KubeVip) => {
            r.error(span(&e.address), format!("endpoint.address `{text}` is not an IP address"), "not an IP address", format!("mode \"{}\" announces a virtual IP: write a free IP address in the hosts' subnet, e.g. \"192.0.2.100\"", mode.as_str()));
            None
        }
        (Err(_), _) => {
            r.error(
                span(&e.address),
                format!("endpoint.address `{text}` is neither an IP address nor a DNS name"),
                "not an address",
                "write the load balancer's IP address or DNS name, e.g. \"api.example.com\"",
            );
            None
        }
    };
    if let Some(HostName::Ip(ip)) = address {
        if mode == EndpointMode::Dns {
            r.error(span(&e.address), format!("endpoint.address {ip} is an IP address, but mode \"dns\" needs a DNS name"), "not a DNS name", "write the name whose records list the control planes, e.g. \"api.edge-1.example.com\", or use mode \"external\" for a load balancer's IP");
        }
        for (h, _) in hosts.iter() {
            if let Some(h) = h
                && h.address == ip
            {
                r.error(span(&e.address), format!("endpoint.address {ip} is the address of host `{}`", h.name), "a host's own address", "the endpoint must be an address of its own (a free VIP or the load balancer), so that it survives the loss of any one host");
            }
        }
    }
    let port = e.port.as_ref().map_or(6443, |p| *p.get_ref());
    let default_api_port = match mode {
        // haproxy runs beside each API server in vip mode, so the two cannot share a port.
        EndpointMode::Vip if port == 6443 => 6444,
        EndpointMode::Vip | EndpointMode::External => 6443,
        // Without a balancer, clients reach an API server directly on the endpoint's port.
        EndpointMode::KubeVip | EndpointMode::Dns => port,
    };
    let apiserver_port = e
        .apiserver_port
        .as_ref()
        .map_or(default_api_port, |p| *p.get_ref());
    if let (EndpointMode::KubeVip | EndpointMode::Dns, Some(p)) = (mode, &e.apiserver_port)
        && *p.get_ref() != port
    {
        r.error(span(p), format!("endpoint.apiserver_port {} differs from endpoint.port {port}", p.get_ref()), "differs from endpoint.port", format!("mode \"{}\" has no balancer to translate ports: remove apiserver_port or make it equal to port", mode.as_str()));
    }
    if port == 0 || apiserver_port == 0 {
        r.error(
            e.port.as_ref().map_or(span(&e.mode), span),
            "endpoint ports must not be 0",
            "port 0",
            "use a TCP port such as 6443",
        );
    }
    if let (EndpointMode::Vip, Some(p)) = (mode, &e.apiserver_port)
        && *p.get_ref() == port
    {
        r.error(span(p), format!("endpoint.apiserver_port {port} clashes with haproxy on endpoint.port {port}"), "same port as the endpoint", "in mode \"vip\" haproxy listens on endpoint.port on every control plane; give the API servers another port (e.g. 6443 with endpoint.port = 8443)");
    }
    let vrid = e.virtual_router_id.as_ref().map_or(51, |v| *v.get_ref());
    if vrid == 0 {
        r.error(
            e.virtual_router_id.as_ref().map_or(0..0, span),
            "endpoint.virtual_router_id must be 1 to 255",
            "0",
            "pick a VRRP router id unique on this network segment, e.g. 51",
        );
    }
    Some(Endpoint {
        mode,
        address: address?,
        port,
        apiserver_port,
        interface: e.interface.as_ref().map(|i| i.get_ref().clone()),
        virtual_router_id: vrid,
    })
}

fn check_addresses_outside_subnets(r: &mut Reporter, c: &Cluster, raw: &RawInventory) {
    for h in &raw.hosts {
        let a = &h.get_ref().address;
        if let Ok(ip) = a.get_ref().parse::<IpAddr>() {
            for (field, net) in [
                ("cluster.pod_subnet", c.pod_subnet),
                ("cluster.service_subnet", c.service_subnet),
            ] {
                if net.contains(&ip) {
                    r.error(span(a), format!("host.address {ip} lies inside {field} {net}"), "inside a cluster subnet", format!("the pod and service subnets must not contain host addresses; move {field} to an unused range"));
                }
            }
        }
    }
}

fn pki(r: &mut Reporter, base: &Path, raw: &RawInventory) -> PkiSettings {
    let p = &raw.pki;
    let days = |v: &Option<Spanned<u32>>, default: u32, field: &str, r: &mut Reporter| match v {
        Some(d) if *d.get_ref() == 0 => {
            r.error(
                span(d),
                format!("pki.{field} must be at least 1"),
                "0 days",
                "give a lifetime in days, e.g. 365",
            );
            default
        }
        Some(d) => *d.get_ref(),
        None => default,
    };
    let ca_validity_days = days(&p.ca_validity_days, 3650, "ca_validity_days", r);
    let cert_validity_days = days(&p.cert_validity_days, 365, "cert_validity_days", r);
    if cert_validity_days > ca_validity_days {
        let at = p.cert_validity_days.as_ref().map_or(0..0, span);
        r.error(
            at,
            "pki.cert_validity_days is longer than pki.ca_validity_days",
            "outlives the CA",
            "a certificate cannot be valid longer than the CA that signs it",
        );
    }
    let renew_before_days = days(
        &p.renew_before_days,
        PkiSettings::DEFAULT_RENEW_BEFORE_DAYS.min(cert_validity_days / 2),
        "renew_before_days",
        r,
    );
    if let Some(d) = &p.renew_before_days
        && *d.get_ref() >= cert_validity_days
    {
        r.error(
            span(d),
            format!(
                "pki.renew_before_days ({}) is not shorter than pki.cert_validity_days ({cert_validity_days})",
                d.get_ref()
            ),
            "every certificate would be renewed on every apply",
            "renew some days before expiry, e.g. 30 with 365-day certificates",
        );
    }
    let mut extra_sans = Vec::new();
    for s in &p.extra_sans {
        match s.get_ref().parse::<IpAddr>() {
            Ok(ip) => extra_sans.push(HostName::Ip(ip)),
            Err(_)
                if is_dns_name(s.get_ref())
                    || s.get_ref().strip_prefix("*.").is_some_and(is_dns_name) =>
            {
                extra_sans.push(HostName::Dns(s.get_ref().clone()))
            }
            Err(_) => r.error(
                span(s),
                format!(
                    "pki.extra_sans entry `{}` is neither an IP address nor a DNS name",
                    s.get_ref()
                ),
                "not a SAN",
                "write an IP address or a DNS name such as \"api.example.com\"",
            ),
        }
    }
    PkiSettings {
        algorithm: p.algorithm.unwrap_or_default(),
        ca_dir: p.ca_dir.as_ref().map(|d| resolve_path(base, d.get_ref())),
        ca_validity_days,
        cert_validity_days,
        renew_before_days,
        extra_sans,
    }
}

fn etcd(r: &mut Reporter, raw: &RawInventory, hosts: &[HostEntry]) -> EtcdSettings {
    let asked = raw.etcd.members.as_ref();
    if let Some(m) = asked {
        let n = *m.get_ref();
        let problem = if n < 1 {
            Some("must be at least 1")
        } else if n as usize > MAX_ETCD_MEMBERS {
            Some("must be at most 7")
        } else if n % 2 == 0 {
            Some("must be odd")
        } else {
            None
        };
        if let Some(p) = problem {
            r.error(span(m), format!("etcd.members = {n} {p}"), p, "use 1, 3, 5 or 7: an even count tolerates no more failures than the odd count below it, and more than 7 slows every write");
            return EtcdSettings::default();
        }
    }
    let members = asked.map(|m| *m.get_ref() as usize);
    // The placement checks need every host; earlier errors were already reported.
    let typed: Option<Vec<Host>> = hosts.iter().map(|(h, _)| h.clone()).collect();
    let Some(typed) = typed.filter(|t| !t.is_empty()) else {
        return EtcdSettings { members };
    };
    let layout = etcd_layout(&typed, members);
    let at = asked.map(span).or_else(|| {
        typed
            .iter()
            .zip(hosts)
            .find(|(h, _)| h.roles.as_ref().is_some_and(|r| r.contains(&Role::Etcd)))
            .map(|(_, (_, s))| s.clone())
    });
    if layout.etcd_hosts == 0 {
        r.error(at.unwrap_or(0..0), "no host carries etcd", "no etcd host", "give at least one host the \"etcd\" role, or remove `roles` everywhere to let kbs choose");
    } else if !typed.iter().any(|h| {
        h.roles
            .as_ref()
            .is_none_or(|r| r.contains(&Role::ControlPlane))
    }) {
        r.error(
            hosts.first().map_or(0..0, |(_, s)| s.clone()),
            "no host is a control plane",
            "no control-plane host",
            "give at least one host the \"control-plane\" role (three for high availability)",
        );
    } else if layout.idle_etcd_hosts > 0 {
        r.error(
            at.unwrap_or(0..0),
            format!(
                "{} members are asked for, but {} hosts have the etcd role",
                layout.wanted,
                layout.etcd_hosts + layout.idle_etcd_hosts
            ),
            "fewer members than etcd hosts",
            "give the etcd role to as many hosts as there are members, or remove etcd.members",
        );
    } else if layout.wanted > layout.capacity {
        r.error(
            at.unwrap_or(0..0),
            format!("{} etcd members do not fit: the etcd hosts and data dirs hold {}", layout.wanted, layout.capacity),
            "too many members",
            "each etcd host holds one member, or one per entry in its etcd_data_dirs: lower etcd.members, add etcd hosts, or list more data dirs",
        );
    } else if layout.wanted.is_multiple_of(2) || layout.wanted > MAX_ETCD_MEMBERS {
        r.error(
            at.unwrap_or(0..0),
            format!(
                "the etcd hosts give {} members, which is {}",
                layout.wanted,
                if layout.wanted.is_multiple_of(2) {
                    "even"
                } else {
                    "more than 7"
                }
            ),
            "member count",
            "set etcd.members to 1, 3, 5 or 7, or change which hosts have the \"etcd\" role",
        );
    }
    EtcdSettings { members }
}

fn security(r: &mut Reporter, raw: &RawSecurity) -> SecuritySettings {
    let d = SecuritySettings::default();
    let at_least_one = |r: &mut Reporter, v: &Option<Spanned<u32>>, field: &str, help: &str| {
        let n = v.as_ref()?;
        if *n.get_ref() == 0 {
            r.error(
                span(n),
                format!("security.{field} must be at least 1"),
                "0",
                help,
            );
            return None;
        }
        Some(*n.get_ref())
    };
    let audit_help = "give a positive number, or set audit_log = false to turn auditing off";
    let inflight_help = "give a positive request count, or remove the key to size it from the cluster (docs/security.md)";
    let gc_help = "give a positive pod count up to 2147483647 (the flag is an int32), or remove the key to size it from the cluster (docs/security.md)";
    let mut gc_threshold = at_least_one(
        r,
        &raw.terminated_pod_gc_threshold,
        "terminated_pod_gc_threshold",
        gc_help,
    );
    if let (Some(n), Some(v)) = (gc_threshold, &raw.terminated_pod_gc_threshold)
        && i32::try_from(n).is_err()
    {
        r.error(
            span(v),
            format!(
                "security.terminated_pod_gc_threshold must be at most {}",
                i32::MAX
            ),
            "too large",
            gc_help,
        );
        gc_threshold = None;
    }
    let mut names: HashMap<&str, Range<usize>> = HashMap::new();
    let mut namespaces = Vec::new();
    for ns in &raw.namespaces {
        if let Some(n) = namespace(r, ns, &mut names) {
            namespaces.push(n);
        }
    }
    SecuritySettings {
        anonymous_auth: raw.anonymous_auth.unwrap_or(d.anonymous_auth),
        profiling: raw.profiling.unwrap_or(d.profiling),
        audit_log: raw.audit_log.unwrap_or(d.audit_log),
        audit_log_max_age_days: at_least_one(
            r,
            &raw.audit_log_max_age_days,
            "audit_log_max_age_days",
            audit_help,
        )
        .unwrap_or(d.audit_log_max_age_days),
        audit_log_max_backups: at_least_one(
            r,
            &raw.audit_log_max_backups,
            "audit_log_max_backups",
            audit_help,
        )
        .unwrap_or(d.audit_log_max_backups),
        audit_log_max_size_mb: at_least_one(
            r,
            &raw.audit_log_max_size_mb,
            "audit_log_max_size_mb",
            audit_help,
        )
        .unwrap_or(d.audit_log_max_size_mb),
        encrypt_secrets: raw.encrypt_secrets.unwrap_or(d.encrypt_secrets),
        pod_security: raw.pod_security.unwrap_or(d.pod_security),
        protect_kernel_defaults: raw
            .protect_kernel_defaults
            .unwrap_or(d.protect_kernel_defaults),
        kubelet_serving_certificates: raw
            .kubelet_serving_certificates
            .unwrap_or(d.kubelet_serving_certificates),
        reserve_resources: raw.reserve_resources.unwrap_or(d.reserve_resources),
        max_requests_inflight: at_least_one(
            r,
            &raw.max_requests_inflight,
            "max_requests_inflight",
            inflight_help,
        ),
        max_mutating_requests_inflight: at_least_one(
            r,
            &raw.max_mutating_requests_inflight,
            "max_mutating_requests_inflight",
            inflight_help,
        ),
        expose_component_ports: raw
            .expose_component_ports
            .unwrap_or(d.expose_component_ports),
        terminated_pod_gc_threshold: gc_threshold,
        namespaces,
    }
}

fn namespace<'a>(
    r: &mut Reporter,
    ns: &'a RawNamespace,
    names: &mut HashMap<&'a str, Range<usize>>,
) -> Option<NamespaceBaseline> {
    let name = ns.name.get_ref();
    let mut ok = true;
    if !is_dns_label(name) {
        r.error(
            span(&ns.name),
            format!("security.namespace name `{name}` is not a DNS label"),
            "not a DNS label",
            "use lower-case letters, digits and '-', e.g. \"shop-prod\"",
        );
        ok = false;
    } else if name.starts_with("kube-") {
        r.error(
            span(&ns.name),
            format!("security.namespace `{name}` is a system namespace"),
            "reserved for Kubernetes",
            "kube-* namespaces belong to the control plane; pick a name for your workloads",
        );
        ok = false;
    } else if let Some(first) = names.insert(name, span(&ns.name)) {
        let line = r.line(first.start);
        r.error(
            span(&ns.name),
            format!("security.namespace `{name}` is listed twice"),
            "duplicate",
            format!("the first `{name}` is on line {line}; merge the two tables"),
        );
        ok = false;
    }
    let mut quantity = |v: &Option<Spanned<String>>, field: &str| -> Option<Quantity> {
        let q = v.as_ref()?;
        let Some(parsed) = Quantity::parse(q.get_ref()) else {
            r.error(
                span(q),
                format!(
                    "security.namespace.{field} `{}` is not a Kubernetes quantity",
                    q.get_ref()
                ),
                "not a quantity",
                "write e.g. \"500m\" or \"2\" for CPU, \"512Mi\" or \"4Gi\" for memory",
            );
            ok = false;
            return None;
        };
        Some(parsed)
    };
    let mut quota = Vec::new();
    for (key, field, v) in [
        ("requests.cpu", "requests_cpu", &ns.requests_cpu),
        ("requests.memory", "requests_memory", &ns.requests_memory),
        ("limits.cpu", "limits_cpu", &ns.limits_cpu),
        ("limits.memory", "limits_memory", &ns.limits_memory),
    ] {
        if let Some(q) = quantity(v, field) {
            quota.push((key, q));
        }
    }
    let container_cpu = quantity(&ns.container_cpu, "container_cpu");
    let container_memory = quantity(&ns.container_memory, "container_memory");
    if let Some(p) = &ns.pods {
        quota.extend(Quantity::parse(&p.get_ref().to_string()).map(|q| ("pods", q)));
    }
    ok.then(|| NamespaceBaseline {
        name: name.clone(),
        quota,
        container_cpu,
        container_memory,
        default_deny: ns.default_deny.unwrap_or(true),
    })
}

fn backup(r: &mut Reporter, raw: &RawBackup) -> BackupSettings {
    let plain = |s: &str| {
        !s.trim().is_empty()
            && s.chars()
                .all(|c| !c.is_control() && !matches!(c, '"' | '\\' | '\'' | '`' | '$' | '%'))
    };
    let enabled = raw.enabled.as_ref().is_none_or(|e| *e.get_ref());
    if let (false, Some(s)) = (enabled, &raw.schedule) {
        r.error(
            span(s),
            "backup.schedule is set, but backup.enabled = false turns the timer off",
            "ignored",
            "remove one of the two: keep enabled = false for no scheduled snapshots, or the schedule for them",
        );
    }
    let schedule = match &raw.schedule {
        None if enabled => Some(BackupSettings::DEFAULT_SCHEDULE.to_string()),
        None => None,
        Some(_) if !enabled => None,
        Some(s) if plain(s.get_ref()) => Some(s.get_ref().trim().to_string()),
        Some(s) => {
            r.error(
                span(s),
                "backup.schedule is not a systemd calendar expression",
                "here",
                "use an OnCalendar= value such as \"daily\", \"hourly\" or \"*-*-* 02:30:00\" (man systemd.time)",
            );
            None
        }
    };
    let keep = match &raw.keep {
        Some(k) if *k.get_ref() == 0 => {
            r.error(
                span(k),
                "backup.keep must be at least 1",
                "0",
                "give how many snapshots to keep, e.g. 10",
            );
            BackupSettings::DEFAULT_KEEP
        }
        Some(k) => *k.get_ref(),
        None => BackupSettings::DEFAULT_KEEP,
    };
    let dir = match &raw.dir {
        Some(d) => {
            let v = d.get_ref();
            let ok = v.starts_with('/')
                && v.len() > 1
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
                && !v.split('/').any(|p| p == "..");
            if !ok {
                r.error(
                    span(d),
                    "backup.dir must be an absolute path of letters, digits, `/`, `.`, `_`, `-`",
                    "here",
                    "for example /var/backups/kbs-etcd",
                );
            }
            v.trim_end_matches('/').to_string()
        }
        None => BackupSettings::DEFAULT_DIR.to_string(),
    };
    let recipient = raw.recipient.as_ref().and_then(|k| {
        let v = k.get_ref().trim();
        if v.parse::<age::x25519::Recipient>().is_ok() {
            Some(v.to_string())
        } else {
            r.error(
                span(k),
                "backup.recipient is not an age recipient",
                "here",
                "give the public key printed by `age-keygen` (age1...); keep the identity itself off the hosts",
            );
            None
        }
    });
    BackupSettings {
        schedule,
        keep,
        dir,
        recipient,
    }
}
