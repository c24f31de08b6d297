//! Facts: what a host is, read (never changed) before anything is planned against it. The
//! gathering scripts are plain sh; parsing them is pure and tested on captured output.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::Serialize;

/// The read-only script that gathers a host's facts in one round trip.
pub const GATHER_SCRIPT: &str = include_str!("gather.sh");
/// The fsync probe; its one argument is the etcd data dir.
pub const FSYNC_SCRIPT: &str = include_str!("fsync.sh");

#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub os_id: String,
    pub os_version: String,
    pub arch: String,
    pub kernel: String,
    pub hostname: String,
    pub cgroup_version: u8,
    pub systemd: bool,
    pub mem_mb: u64,
    pub swap_mb: u64,
    pub cpus: u32,
    /// Listening TCP ports and the process that holds each (as `ss -p` names it, may be empty).
    pub listening: BTreeMap<u16, String>,
    /// Network interfaces with their addresses.
    pub addresses: Vec<(String, IpNet)>,
    /// Kubernetes-related binaries found on PATH, with their paths.
    pub binaries: BTreeMap<String, String>,
    /// The host's clock minus ours, in milliseconds (within half a round trip).
    pub clock_skew_ms: i64,
    /// p99 fsync latency per etcd data dir, from the fsync probe.
    pub fsync_p99_ms: BTreeMap<String, f64>,
    /// The etcd data dirs asked about that hold a member already.
    pub etcd_members: std::collections::BTreeSet<String>,
    /// `kubeadm version -o short`, where kubeadm has set the host up (its kubelet.conf exists);
    /// empty when kubeadm is missing.
    pub kubeadm_version: Option<String>,
    /// Whether the kubelet has its serving certificate.
    pub kubelet_serving: bool,
    /// The CA files of a cluster found on the host (`pki::identity_cas`): path, base64 DER.
    pub cas: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected facts output: {0}")]
pub struct FactsError(String);

impl Facts {
    /// Parses the gather script's output. `local_mid_ns` is our clock (ns since the epoch) halfway
    /// through the round trip.
    pub fn parse(output: &str, local_mid_ns: i128) -> Result<Self, FactsError> {
        let mut f = Facts::default();
        let mut clock_start: Option<i128> = None;
        let num = |v: &str, what: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| FactsError(format!("{what}={v}")))
        };
        for line in output.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "os_id" => f.os_id = value.into(),
                "os_version" => f.os_version = value.into(),
                "arch" => f.arch = value.into(),
                "kernel" => f.kernel = value.into(),
                "hostname" => f.hostname = value.into(),
                "cgroup" => f.cgroup_version = if value == "2" { 2 } else { 1 },
                "systemd" => f.systemd = value == "yes",
                "mem_kb" => f.mem_mb = num(value, key)? / 1024,
                "swap_kb" => f.swap_mb = num(value, key)? / 1024,
                "cpus" => f.cpus = num(value, key)? as u32,
                "listen" => {
                    let (port, process) = value.split_once(' ').unwrap_or((value, ""));
                    if let Ok(port) = port.parse() {
                        f.listening.insert(port, process_name(process));
                    }
                }
                "addr" => {
                    if let Some((iface, net)) = value.split_once(' ')
                        && let Ok(net) = net.parse()
                    {
                        f.addresses.push((iface.to_string(), net));
                    }
                }
                "binary" => {
                    if let Some((name, path)) = value.split_once(' ') {
                        f.binaries.insert(name.into(), path.into());
                    }
                }
                "etcd_member" => {
                    f.etcd_members.insert(value.into());
                }
                "kubeadm_version" => f.kubeadm_version = Some(value.trim().into()),
                "kubelet_serving" => f.kubelet_serving = value == "yes",
                "ca" => {
                    if let Some((path, der)) = value.split_once(' ') {
                        f.cas.insert(path.into(), der.into());
                    }
                }
                "clock_start_ns" | "clock_ns" => {
                    let remote: i128 = value
                        .trim()
                        .parse()
                        .map_err(|_| FactsError(format!("{key}={value}")))?;
                    if key == "clock_ns" {
                        // The middle of the script's run, when it read the clock at its start.
                        let mid = clock_start.map_or(remote, |s| s + (remote - s) / 2);
                        f.clock_skew_ms = ((mid - local_mid_ns) / 1_000_000) as i64;
                    } else {
                        clock_start = Some(remote);
                    }
                }
                _ => {}
            }
        }
        if f.arch.is_empty() || f.cpus == 0 {
            return Err(FactsError(
                "the gather script printed no arch or cpu count".into(),
            ));
        }
        Ok(f)
    }

    /// The interface that carries `address`, and its prefix: where a VIP in that subnet goes.
    pub fn interface_for(&self, address: IpAddr) -> Option<&(String, IpNet)> {
        self.addresses.iter().find(|(_, net)| net.addr() == address)
    }

    /// The process listening on `port`, if any.
    pub fn listener(&self, port: u16) -> Option<&str> {
        self.listening.get(&port).map(String::as_str)
    }
}

/// `users:(("etcd",pid=12,fd=7))` → `etcd`.
fn process_name(ss_users: &str) -> String {
    ss_users.split('"').nth(1).unwrap_or_default().to_string()
}

/// The fsync probe's p99 write latency in milliseconds, start-up cost subtracted.
pub fn fsync_p99_ms(output: &str) -> Option<f64> {
    let mut base = Vec::new();
    let mut sync = Vec::new();
    for line in output.lines() {
        match line.split_once(' ') {
            Some(("base", v)) => base.extend(v.parse::<f64>().ok()),
            Some(("sync", v)) => sync.extend(v.parse::<f64>().ok()),
            _ => {}
        }
    }
    if sync.is_empty() {
        return None;
    }
    let overhead = percentile(&mut base, 0.5).unwrap_or(0.0);
    percentile(&mut sync, 0.99).map(|p| ((p - overhead).max(0.0)) / 1000.0)
}

fn percentile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied()
}

/// Nanoseconds since the epoch on this machine: the reference for each host's clock skew.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "os_id=debian\nos_version=12\narch=x86_64\nkernel=6.1.0-18-amd64\nhostname=node-1\ncgroup=2\nsystemd=yes\n\
        mem_kb=4030000\nswap_kb=0\ncpus=2\nlisten=22 users:((\"sshd\",pid=95,fd=3))\nlisten=2379 users:((\"etcd\",pid=7,fd=8))\n\
        addr=lo 127.0.0.1/8\naddr=eth0 172.30.0.11/24\nbinary=etcd /usr/bin/etcd\nclock_ns=1700000000500000000\n";

    #[test]
    fn parses_gathered_facts() {
        let f = Facts::parse(SAMPLE, 1_700_000_000_000_000_000).expect("parses");
        assert_eq!(
            (f.os_id.as_str(), f.arch.as_str(), f.cgroup_version, f.cpus),
            ("debian", "x86_64", 2, 2)
        );
        assert_eq!(f.mem_mb, 3935);
        assert_eq!(f.clock_skew_ms, 500);
        assert_eq!(f.listener(2379), Some("etcd"));
        assert_eq!(f.listener(6443), None);
        let (iface, net) = f
            .interface_for("172.30.0.11".parse().expect("ip"))
            .expect("found");
        assert_eq!((iface.as_str(), net.prefix_len()), ("eth0", 24));
        assert_eq!(
            f.binaries.get("etcd").map(String::as_str),
            Some("/usr/bin/etcd")
        );
    }

    /// What kbs set up already, and a script that took 2 s: the clock's midpoint counts.
    #[test]
    fn parses_what_kbs_set_up_and_reads_the_clock_at_the_scripts_middle() {
        let text = "clock_start_ns=1000000000000\narch=x86_64\ncpus=2\n\
                    etcd_member=/var/lib/etcd\nkubeadm_version=v1.37.1\nkubelet_serving=yes\n\
                    ca=/etc/kbs/etcd/pki/ca.crt MIIBkTCB+w==\nclock_ns=1002000000000\n";
        let f = Facts::parse(text, 1_001_000_000_000).expect("parses");
        assert_eq!(f.clock_skew_ms, 0);
        assert!(f.etcd_members.contains("/var/lib/etcd"));
        assert_eq!(f.kubeadm_version.as_deref(), Some("v1.37.1"));
        assert!(f.kubelet_serving);
        assert_eq!(
            f.cas.get("/etc/kbs/etcd/pki/ca.crt").map(String::as_str),
            Some("MIIBkTCB+w==")
        );
        let bare = Facts::parse("arch=x86_64\ncpus=2\n", 0).expect("parses");
        assert_eq!((bare.kubeadm_version, bare.kubelet_serving), (None, false));
    }

    #[test]
    fn rejects_output_that_is_not_facts() {
        assert!(Facts::parse("sh: 1: syntax error", 0).is_err());
    }

    #[test]
    fn fsync_p99_subtracts_start_up_cost() {
        let mut out = String::new();
        for _ in 0..20 {
            out.push_str("base 1000\n");
        }
        for i in 0..100 {
            out.push_str(&format!("sync {}\n", 2000 + i * 10));
        }
        let p99 = fsync_p99_ms(&out).expect("p99");
        assert!((p99 - 1.98).abs() < 0.02, "{p99}");
        assert_eq!(fsync_p99_ms("nothing"), None);
    }
}
