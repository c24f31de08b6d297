//! What `kbs check` reads on a host: one read-only sh script (sent on stdin, run with sudo) that
//! prints sections `### kbs:<name>` with the raw text below each, and the parser for that output.
//!
//! The script writes nothing and never prints a secret: keys and the encryption config are only
//! `find`-stat'ed, kubeconfigs give only their `client-certificate-data` line, and from the
//! encryption config only the provider names are printed.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::inventory::Role;
use crate::pki::{REMOTE_ETCD_PKI_DIR, REMOTE_KUBECONFIG_DIR, REMOTE_PKI_DIR};
use crate::plan::{ClusterPlan, PlannedHost};
use crate::render::{ADMISSION_CONFIG_PATH, AUDIT_POLICY_PATH, Component, ENCRYPTION_CONFIG_PATH};
use crate::ssh::quote;

pub(crate) const MARK: &str = "### kbs:";
pub(crate) const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
pub(crate) const KUBELET_PATCH: &str =
    "/etc/kubernetes/kubeadm/patches/kubeletconfiguration+merge.yaml";
/// The sysctls the kubelet checks with protectKernelDefaults, with the values it wants (and
/// /etc/sysctl.d/90-kbs.conf sets).
pub(crate) const KERNEL_DEFAULTS: [(&str, &str); 6] = [
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];
/// Time synchronisation services that count.
pub(crate) const TIME_SERVICES: [&str; 6] = [
    "systemd-timesyncd",
    "chrony",
    "chronyd",
    "ntp",
    "ntpsec",
    "openntpd",
];

/// `cat FILE` under a section header, or nothing when the file does not exist.
fn cat(out: &mut String, section: &str, path: &str) {
    let p = quote(path);
    let _ = writeln!(
        out,
        "[ -f {p} ] && {{ echo '{MARK}{section}'; cat {p}; echo; }}"
    );
}

/// The read-only audit script for `host`.
pub(crate) fn script(plan: &ClusterPlan, host: &PlannedHost) -> String {
    let mut s = String::from("# kbs check: read-only\nexec 2>/dev/null\n");
    let node = host.has(Role::ControlPlane) || host.has(Role::Worker);
    let members: Vec<_> = plan.etcd.iter().filter(|m| m.host == host.name).collect();

    let _ = writeln!(s, "echo '{MARK}files'");
    let _ = writeln!(
        s,
        "find /etc/kubernetes /etc/kbs -xdev -printf '%m %u %g %y %p\\n'; find /var/lib/kubelet -maxdepth 2 -xdev -printf '%m %u %g %y %p\\n'"
    );
    for m in &members {
        let _ = writeln!(
            s,
            "find {} -maxdepth 0 -printf '%m %u %g %y %p\\n'",
            quote(&m.data_dir)
        );
    }
    if host.has(Role::ControlPlane) {
        for c in Component::ALL {
            // The running component's own arguments (`[k]` so the pattern does not match itself).
            let (short, bin) = (c.short(), &c.binary()[1..]);
            let _ = writeln!(
                s,
                "pid=$(pgrep -o -f '[k]{bin}.* --'); [ -n \"$pid\" ] && {{ echo '{MARK}{short}-process'; tr '\\0' '\\n' < /proc/$pid/cmdline; echo; }}"
            );
            cat(&mut s, &format!("{short}-manifest"), &c.manifest());
        }
        cat(&mut s, "audit-policy", AUDIT_POLICY_PATH);
        cat(&mut s, "admission", ADMISSION_CONFIG_PATH);
        let p = quote(ENCRYPTION_CONFIG_PATH);
        // Provider names only: the file holds the key.
        let _ = writeln!(
            s,
            "[ -f {p} ] && {{ echo '{MARK}encryption-providers'; sed -nE 's/^[[:space:]]*- (aescbc|aesgcm|secretbox|kms|identity):.*/\\1/p' {p}; }}"
        );
    }
    if node {
        cat(&mut s, "kubelet-config", KUBELET_CONFIG);
        cat(&mut s, "kubelet-patch", KUBELET_PATCH);
        let _ = writeln!(s, "echo '{MARK}sysctl'");
        for (k, _) in KERNEL_DEFAULTS {
            let _ = writeln!(s, "echo \"{k} $(sysctl -n {k})\"");
        }
    }
    for m in &members {
        cat(
            &mut s,
            &format!("etcd-env {}", m.name),
            &format!("/etc/kbs/etcd/{}.env", m.name),
        );
    }
    let _ = writeln!(
        s,
        "echo '{MARK}sshd'; sshd -T 2>/dev/null | grep -i '^permitrootlogin' || /usr/sbin/sshd -T | grep -i '^permitrootlogin'"
    );
    cat(&mut s, "swaps", "/proc/swaps");
    let _ = writeln!(
        s,
        "echo '{MARK}fstab-swap'; grep -E '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab"
    );
    let _ = writeln!(s, "echo '{MARK}timesync'");
    for u in TIME_SERVICES {
        let _ = writeln!(s, "echo \"service {u} $(systemctl is-active {u}.service)\"");
    }
    let _ = writeln!(
        s,
        // Not timedatectl: it activates systemd-timedated, which makes PrivateTmp dirs.
        "[ -e /run/systemd/timesync/synchronized ] && echo 'ntp-synchronized yes'; echo \"container $(systemd-detect-virt --container || echo none)\""
    );
    // Certificates: the .crt files and the client certificates of kubeconfigs (that line only:
    // the key is on another line), and the kubelet's rotated client certificate (cert blocks only).
    let _ = writeln!(
        s,
        "for f in $(find {REMOTE_PKI_DIR} {REMOTE_ETCD_PKI_DIR} -name '*.crt' | sort); do echo \"{MARK}cert $f\"; cat \"$f\"; echo; done"
    );
    let _ = writeln!(
        s,
        "for f in $(find {REMOTE_KUBECONFIG_DIR} -maxdepth 1 -name '*.conf' | sort); do echo \"{MARK}kubeconfig-cert $f\"; sed -nE 's/^[[:space:]]*client-certificate-data:[[:space:]]*//p' \"$f\"; done"
    );
    let _ = writeln!(
        s,
        "f=/var/lib/kubelet/pki/kubelet-client-current.pem; [ -f $f ] && {{ echo \"{MARK}cert $f\"; sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' $f; }}"
    );
    // The kubelet's serving certificate, from its approved kubelet-serving CSR (empty: none).
    let _ = writeln!(
        s,
        "f=/var/lib/kubelet/pki/kubelet-server-current.pem; echo \"{MARK}serving-cert $f\"; [ -f $f ] && sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' $f"
    );
    s.push_str("exit 0\n");
    s
}

/// The script's output, by section name.
#[derive(Debug, Clone, Default)]
pub struct Sections(pub(crate) BTreeMap<String, String>);

impl Sections {
    pub fn parse(output: &str) -> Self {
        let mut map = BTreeMap::new();
        let mut name: Option<String> = None;
        let mut body = String::new();
        for line in output.lines() {
            if let Some(n) = line.strip_prefix(MARK) {
                if let Some(prev) = name.take() {
                    map.insert(prev, std::mem::take(&mut body));
                }
                name = Some(n.trim().to_string());
            } else if name.is_some() {
                body.push_str(line);
                body.push('\n');
            }
        }
        if let Some(prev) = name {
            map.insert(prev, body);
        }
        Self(map)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Sections whose name starts with `prefix ` (e.g. `cert `), with the rest of the name.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0.iter().filter_map(move |(k, v)| {
            k.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix(' '))
                .map(|r| (r, v.as_str()))
        })
    }
}

/// One entry of the `files` section: `find -printf '%m %u %g %y %p'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub mode: u32,
    pub user: String,
    pub group: String,
    /// `f` file, `d` directory, `l` link.
    pub kind: char,
}

pub(crate) fn file_stats(text: &str) -> BTreeMap<String, FileStat> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(5, ' ');
            let mode = u32::from_str_radix(it.next()?, 8).ok()?;
            let user = it.next()?.to_string();
            let group = it.next()?.to_string();
            let kind = it.next()?.chars().next()?;
            let path = it.next()?.to_string();
            Some((
                path,
                FileStat {
                    mode,
                    user,
                    group,
                    kind,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_split_on_markers() {
        let s = Sections::parse(
            "noise\n### kbs:files\n600 root root f /etc/kubernetes/admin.conf\n### kbs:cert /a.crt\nPEM\n### kbs:sshd\n",
        );
        assert_eq!(
            s.get("files"),
            Some("600 root root f /etc/kubernetes/admin.conf\n")
        );
        assert_eq!(s.get("sshd"), Some(""));
        assert_eq!(
            s.with_prefix("cert").collect::<Vec<_>>(),
            [("/a.crt", "PEM\n")]
        );
        let f = file_stats(s.get("files").unwrap_or_default());
        assert_eq!(f["/etc/kubernetes/admin.conf"].mode, 0o600);
    }
}
