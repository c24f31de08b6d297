//! The audit's judgement: what a host's probe output (and this machine's etcd probes) says about
//! each checklist item. Pure, so every rule is unit-tested on captured output.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use serde_json::Value;
use time::OffsetDateTime;

use super::probe::{FileStat, KERNEL_DEFAULTS, Sections, file_stats};
use crate::facts::Facts;
use crate::inventory::{NamespaceBaseline, PodSecurityLevel, Quantity, Role};
use crate::phases::{Check, CheckStatus};
use crate::pki::{CertInfo, HostFile, REMOTE_ETCD_PKI_DIR, REMOTE_PKI_DIR};
use crate::plan::{ClusterPlan, PlannedHost};
use crate::render::{
    BASELINE_LIMITS, BASELINE_POLICY, BASELINE_QUOTA, Component, ENCRYPTION_CONFIG_PATH,
};

/// What a request to an etcd client port got, from this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// TLS handshake refused, connection reset, or an error status: no data.
    Refused(String),
    /// A successful HTTP answer: data without credentials.
    Answered(String),
    /// The port could not be reached from here: no verdict.
    Unreachable(String),
}

/// The two no-credential probes of one etcd member's client port.
#[derive(Debug, Clone)]
pub struct MemberProbe {
    pub member: String,
    /// HTTPS (trusting the etcd CA) without a client certificate.
    pub without_cert: ProbeOutcome,
    /// Plain HTTP.
    pub plain_http: ProbeOutcome,
}

/// Everything one host's checks are judged on.
pub struct HostInput<'a> {
    pub plan: &'a ClusterPlan,
    pub host: &'a PlannedHost,
    pub ssh_user: &'a str,
    pub facts: Option<&'a Facts>,
    pub sections: &'a Sections,
    /// This host's members' probes.
    pub etcd_probes: &'a [MemberProbe],
    /// The PKI files apply places on this host.
    pub expected_files: &'a [HostFile],
    pub warn_days: u32,
    pub now: OffsetDateTime,
}

struct Out<'a> {
    host: &'a str,
    checks: Vec<Check>,
}

impl Out<'_> {
    fn push(&mut self, name: &'static str, status: CheckStatus, found: String, fix: &str) {
        self.checks
            .push(Check::new(self.host, name, status, found, fix));
    }

    /// Pass when `problems` is empty (found = `ok`), else `status` with the problems listed.
    fn judge(
        &mut self,
        name: &'static str,
        problems: &[String],
        status: CheckStatus,
        ok: String,
        fix: &str,
    ) {
        if problems.is_empty() {
            self.push(name, CheckStatus::Pass, ok, fix);
        } else {
            self.push(name, status, problems.join("; "), fix);
        }
    }
}

fn yaml(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_saphyr::from_str::<Value>(t).ok())
}

fn ptr<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    v.pointer(path)
}

/// A component's effective flags (the last occurrence wins), from its process or its manifest.
fn component_args(s: &Sections, c: Component) -> Option<(&'static str, BTreeMap<String, String>)> {
    let short = c.short();
    let (source, lines): (&str, Vec<String>) = if let Some(p) = s.get(&format!("{short}-process")) {
        ("running process", p.lines().map(str::to_string).collect())
    } else {
        let manifest = yaml(s.get(&format!("{short}-manifest")))?;
        let cmd = ptr(&manifest, "/spec/containers/0/command")?.as_array()?;
        let mut lines: Vec<String> = cmd
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if let Some(args) = ptr(&manifest, "/spec/containers/0/args").and_then(Value::as_array) {
            lines.extend(args.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
        ("manifest", lines)
    };
    let mut map = BTreeMap::new();
    for l in lines {
        if let Some(flag) = l.trim().strip_prefix("--") {
            let (k, v) = flag.split_once('=').unwrap_or((flag, "true"));
            map.insert(k.to_string(), v.to_string());
        }
    }
    Some((source, map))
}

fn env(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .collect()
}

fn mode_str(m: u32) -> String {
    format!("{m:04o}")
}

/// Judges one host. `None` facts: the facts script failed (reported by the caller).
pub fn evaluate(i: &HostInput) -> Vec<Check> {
    let mut o = Out {
        host: &i.host.name,
        checks: Vec::new(),
    };
    let s = i.sections;
    let cp = i.host.has(Role::ControlPlane);
    let node = cp || i.host.has(Role::Worker);
    let members: Vec<_> = i
        .plan
        .etcd
        .iter()
        .filter(|m| m.host == i.host.name)
        .collect();
    let files = file_stats(s.get("files").unwrap_or_default());
    let in_container = s
        .get("timesync")
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("container ")))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "none");

    // Host basics shared with preflight: cgroup version and clock skew.
    if let Some(f) = i.facts {
        o.checks.extend(
            crate::phases::preflight_evaluate(i.plan, i.host, f)
                .into_iter()
                .filter(|c| c.name == "cgroup" || c.name == "clock-skew"),
        );
    }
    time_sync(&mut o, s, in_container);
    swap(&mut o, s);
    if cp {
        apiserver(&mut o, i);
    }
    if node {
        kubelet(&mut o, i, in_container);
    }
    file_modes(&mut o, i, &files, node);
    if !members.is_empty() {
        let mut dir_problems = Vec::new();
        for m in &members {
            let d = m.data_dir.to_string_lossy();
            match files.get(d.as_ref()) {
                None => dir_problems.push(format!("{d} missing")),
                Some(st) if st.mode != 0o700 || st.user != crate::pki::ETCD_USER => {
                    dir_problems.push(format!("{d} is {} {}", mode_str(st.mode), st.user))
                }
                Some(_) => {}
            }
        }
        let dirs: Vec<String> = members
            .iter()
            .map(|m| m.data_dir.display().to_string())
            .collect();
        o.judge(
            "etcd-data-dir",
            &dir_problems,
            CheckStatus::Fail,
            format!("{} 0700 etcd", dirs.join(", ")),
            "chmod 0700 and chown etcd:etcd the data dir (kbs apply does): it holds every Secret of the cluster",
        );
        etcd_auth(&mut o, i, &members);
    }
    ssh_root_login(&mut o, i, s);
    host_certs(&mut o, i);
    serving_cert(&mut o, i);
    kubelet_client_rotation(&mut o, i);
    o.checks
}

/// kubelet.conf must point at the kubelet's rotating `kubelet-client-current.pem`, as kubeadm
/// leaves it: a certificate embedded there is never renewed and the node drops out of the cluster
/// a year later (a well-known kubeadm outage).
fn kubelet_client_rotation(o: &mut Out, i: &HostInput) {
    let node = i.host.has(Role::ControlPlane) || i.host.has(Role::Worker);
    let Some((_, data)) = i
        .sections
        .with_prefix("kubeconfig-cert")
        .find(|(p, _)| *p == "/etc/kubernetes/kubelet.conf")
    else {
        return;
    };
    if !node {
        return;
    }
    let (status, found) = if data.trim().is_empty() {
        (
            CheckStatus::Pass,
            "kubelet.conf uses /var/lib/kubelet/pki/kubelet-client-current.pem, which the kubelet rotates".to_string(),
        )
    } else {
        (
            CheckStatus::Warn,
            "kubelet.conf embeds its client certificate: it is never rotated and expires with it"
                .to_string(),
        )
    };
    o.push(
        "kubelet-client-rotation",
        status,
        found,
        "point kubelet.conf's user at /var/lib/kubelet/pki/kubelet-client-current.pem (client-certificate and client-key), as `kubeadm init phase kubelet-finalize enable-client-cert-rotation` does, then restart the kubelet",
    );
}

/// With `kubelet_serving_certificates`, a node's kubelet needs the certificate of its approved
/// kubelet-serving CSR: without it `kubectl logs/exec` and metrics-server fail on that node.
fn serving_cert(o: &mut Out, i: &HostInput) {
    let node = i.host.has(Role::ControlPlane) || i.host.has(Role::Worker);
    if !node || !i.plan.inventory.security.kubelet_serving_certificates {
        return;
    }
    // No section at all: a probe from before this check (older output); nothing to judge.
    let Some((path, pem)) = i.sections.with_prefix("serving-cert").next() else {
        return;
    };
    let fix = "run kbs apply: it approves the kubelet's own kubelet-serving CSR after checking its requester and names";
    let (status, found) = if pem.trim().is_empty() {
        (
            CheckStatus::Fail,
            format!("no {path}: the kubelet's serving CSR was never approved"),
        )
    } else {
        match CertInfo::from_pem(pem.as_bytes()) {
            Err(e) => (CheckStatus::Fail, format!("{path} unreadable: {e}")),
            Ok(c) => {
                let (st, days) = lifetime(&c, i.warn_days, i.now);
                (
                    st,
                    format!("{path}, expires in {days} days (the kubelet renews it)"),
                )
            }
        }
    };
    o.push("kubelet-serving-cert", status, found, fix);
}

fn time_sync(o: &mut Out, s: &Sections, in_container: Option<&str>) {
    let text = s.get("timesync").unwrap_or_default();
    let active: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("service "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, state)| state.trim() == "active")
        .map(|(u, _)| u)
        .collect();
    let synced = text.lines().any(|l| l.trim() == "ntp-synchronized yes");
    let fix = "install and enable a time sync service (systemd-timesyncd or chrony): etcd leases, certificates and logs need agreeing clocks";
    if let Some(u) = active.first() {
        o.push("time-sync", CheckStatus::Pass, format!("{u} active"), fix);
    } else if synced {
        o.push(
            "time-sync",
            CheckStatus::Pass,
            "kernel clock synchronised (NTPSynchronized=yes)".into(),
            fix,
        );
    } else if let Some(c) = in_container {
        o.push(
            "time-sync",
            CheckStatus::Warn,
            format!("no time sync service; a {c} container uses its host's clock"),
            "synchronise the container host's clock (a container cannot set it)",
        );
    } else {
        o.push(
            "time-sync",
            CheckStatus::Fail,
            "no time sync service active".into(),
            fix,
        );
    }
}

fn swap(o: &mut Out, s: &Sections) {
    let mut problems = Vec::new();
    let active: Vec<&str> = s
        .get("swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if !active.is_empty() {
        problems.push(format!("active: {}", active.join(", ")));
    }
    let fstab: Vec<&str> = s
        .get("fstab-swap")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if !fstab.is_empty() {
        problems.push(format!("in /etc/fstab (on at boot): {}", fstab.join(", ")));
    }
    o.judge(
        "swap",
        &problems,
        CheckStatus::Fail,
        "off (/proc/swaps empty, none in /etc/fstab)".into(),
        "swapoff -a and comment swap out of /etc/fstab (kbs apply does): the kubelet refuses to run with swap (failSwapOn)",
    );
}

/// Values that weaken a component when kbs did not render them itself.
fn relaxing_values(c: Component) -> &'static [(&'static str, &'static str)] {
    match c {
        Component::ApiServer => &[("anonymous-auth", "true"), ("profiling", "true")],
        Component::ControllerManager | Component::Scheduler => &[("profiling", "true")],
    }
}

fn component_flags(o: &mut Out, i: &HostInput, c: Component) {
    let name = match c {
        Component::ApiServer => "apiserver-flags",
        Component::ControllerManager => "controller-manager-flags",
        Component::Scheduler => "scheduler-flags",
    };
    let fix = format!(
        "run kbs apply (it renders {}.extraArgs) and re-create {}; relax a default only in the inventory's [security]",
        match c {
            Component::ApiServer => "apiServer",
            Component::ControllerManager => "controllerManager",
            Component::Scheduler => "scheduler",
        },
        c.binary()
    );
    let want = crate::render::component_flags(i.plan, c);
    let Some((source, have)) = component_args(i.sections, c) else {
        o.push(
            name,
            CheckStatus::Fail,
            format!("no running {} and no manifest", c.binary()),
            &fix,
        );
        return;
    };
    let mut problems: Vec<String> = want
        .iter()
        .filter_map(|(k, v)| match have.get(*k) {
            None => Some(format!("--{k} missing")),
            Some(h) if h != v => Some(format!("--{k}={h} (want {v})")),
            Some(_) => None,
        })
        .collect();
    problems.extend(
        relaxing_values(c)
            .iter()
            .filter(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
            .filter(|(k, _)| !want.iter().any(|(w, _)| w == k))
            .map(|(k, v)| format!("--{k}={v}")),
    );
    // Serving certificates for kubelets need the controller-manager's CSR signer to sign them
    // (on by default; CIS 1.3.6).
    if c == Component::ControllerManager
        && have.get("feature-gates").is_some_and(|g| {
            g.split(',')
                .any(|f| f.trim() == "RotateKubeletServerCertificate=false")
        })
    {
        problems.push("--feature-gates has RotateKubeletServerCertificate=false".into());
    }
    if problems.is_empty() {
        let found = format!("{} hardened flags as rendered ({source})", want.len());
        o.push(name, CheckStatus::Pass, found, &fix);
    } else {
        let found = format!("{} ({source})", problems.join("; "));
        o.push(name, CheckStatus::Fail, found, &fix);
    }
}

fn apiserver(o: &mut Out, i: &HostInput) {
    let s = i.sections;
    let sec = &i.plan.inventory.security;
    for c in Component::ALL {
        component_flags(o, i, c);
    }
    if sec.audit_log {
        let policy = s.get("audit-policy");
        let ok = policy.is_some_and(|p| p.contains("kind: Policy"));
        o.push(
            "audit-policy",
            if ok {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            match policy {
                None => format!("{} missing", crate::render::AUDIT_POLICY_PATH),
                Some(_) if !ok => "not an audit Policy".into(),
                Some(_) => format!("{} present", crate::render::AUDIT_POLICY_PATH),
            },
            "run kbs apply: without the policy the API server writes no audit log",
        );
    }
    if sec.encrypt_secrets {
        let files = file_stats(s.get("files").unwrap_or_default());
        let mut problems = Vec::new();
        match files.get(ENCRYPTION_CONFIG_PATH) {
            None => problems.push(format!("{ENCRYPTION_CONFIG_PATH} missing")),
            Some(st) => {
                if st.mode != 0o600 || st.user != "root" {
                    problems.push(format!("mode {} owner {}", mode_str(st.mode), st.user));
                }
                let providers: Vec<&str> = s
                    .get("encryption-providers")
                    .unwrap_or_default()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                match providers.first() {
                    None => problems.push("no providers".into()),
                    Some(&"identity") => {
                        problems.push("first provider is identity (Secrets stored in clear)".into())
                    }
                    Some(_) => {}
                }
            }
        }
        let providers = s
            .get("encryption-providers")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        o.judge(
            "encryption-config",
            &problems,
            CheckStatus::Fail,
            format!("0600 root, providers {providers}"),
            "run kbs apply (EncryptionConfiguration 0600, secretbox first): the file holds the key that protects Secrets in etcd",
        );
    }
    let admission = yaml(s.get("admission"));
    let enforce = admission.as_ref().and_then(|a| {
        a.get("plugins")?
            .as_array()?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some("PodSecurity"))?
            .pointer("/configuration/defaults/enforce")?
            .as_str()
            .map(str::to_string)
    });
    let want = sec.pod_security.as_str();
    let rank = |l: &str| {
        [
            PodSecurityLevel::Privileged,
            PodSecurityLevel::Baseline,
            PodSecurityLevel::Restricted,
        ]
        .iter()
        .position(|x| x.as_str() == l)
    };
    // Weaker than the inventory asks: fail; stricter: warn (workloads may be refused).
    let status = match enforce.as_deref().map(rank) {
        Some(r) if r == rank(want) => CheckStatus::Pass,
        Some(Some(r)) if rank(want).is_some_and(|w| r > w) => CheckStatus::Warn,
        _ => CheckStatus::Fail,
    };
    o.push(
        "pod-security",
        status,
        match (&admission, &enforce) {
            (None, _) => format!("{} missing", crate::render::ADMISSION_CONFIG_PATH),
            (Some(_), None) => "no PodSecurity plugin configuration".into(),
            (Some(_), Some(e)) => format!("enforce: {e} (inventory: {want})"),
        },
        "run kbs apply: the AdmissionConfiguration sets Pod Security Admission's cluster default",
    );
}

fn kubelet(o: &mut Out, i: &HostInput, in_container: Option<&str>) {
    let s = i.sections;
    let sec = &i.plan.inventory.security;
    let fix = "run kbs apply (KubeletConfiguration in init.yaml) and restart the kubelet";
    let Some(cfg) = yaml(s.get("kubelet-config")) else {
        o.push(
            "kubelet-config",
            CheckStatus::Fail,
            format!("{} missing or unreadable", super::probe::KUBELET_CONFIG),
            fix,
        );
        return;
    };
    let mut problems = Vec::new();
    // Absent fields take KubeletConfiguration v1beta1's defaults.
    let b = |p: &str, default: bool| ptr(&cfg, p).and_then(Value::as_bool).unwrap_or(default);
    if b("/authentication/anonymous/enabled", false) {
        problems.push("anonymous auth on".to_string());
    }
    if !b("/authentication/webhook/enabled", true) {
        problems.push("webhook authentication off".into());
    }
    let mode = ptr(&cfg, "/authorization/mode")
        .and_then(Value::as_str)
        .unwrap_or("Webhook");
    if mode != "Webhook" {
        problems.push(format!("authorization mode {mode}"));
    }
    let ro = ptr(&cfg, "/readOnlyPort")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if ro != 0 {
        problems.push(format!("readOnlyPort {ro}"));
    }
    let pkd = b("/protectKernelDefaults", false);
    if sec.protect_kernel_defaults && !pkd {
        problems.push("protectKernelDefaults false".into());
    }
    o.judge(
        "kubelet-config",
        &problems,
        CheckStatus::Fail,
        format!("anonymous off, webhook authn+authz, readOnlyPort 0, protectKernelDefaults {pkd}"),
        fix,
    );

    if sec.reserve_resources {
        let has = |v: &Value| v.get("kubeReserved").is_some() && v.get("systemReserved").is_some();
        let (status, found) = if has(&cfg) {
            let mem = |k: &str| {
                ptr(&cfg, &format!("/{k}/memory"))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            };
            (
                CheckStatus::Pass,
                format!(
                    "kubeReserved memory {}, systemReserved memory {}",
                    mem("kubeReserved"),
                    mem("systemReserved")
                ),
            )
        } else if yaml(s.get("kubelet-patch")).is_some_and(|p| has(&p)) {
            (
                CheckStatus::Warn,
                "only in the kubeadm patch, not in the kubelet's config.yaml".into(),
            )
        } else {
            (CheckStatus::Fail, "no kubeReserved/systemReserved".into())
        };
        o.push(
            "kubelet-reserved",
            status,
            found,
            "run kbs apply (per-node patch in /etc/kubernetes/kubeadm/patches) and `kubeadm upgrade node phase kubelet-config`, or add the reservations to /var/lib/kubelet/config.yaml",
        );
    }

    if sec.protect_kernel_defaults {
        let have: BTreeMap<&str, &str> = s
            .get("sysctl")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k, v.trim()))
            .collect();
        let wrong: Vec<String> = KERNEL_DEFAULTS
            .iter()
            .filter(|(k, v)| have.get(k) != Some(v))
            .map(|(k, v)| format!("{k}={} (want {v})", have.get(k).copied().unwrap_or("?")))
            .collect();
        let status = match (wrong.is_empty(), in_container) {
            (true, _) => CheckStatus::Pass,
            (false, Some(_)) => CheckStatus::Warn,
            (false, None) => CheckStatus::Fail,
        };
        o.push(
            "kernel-defaults",
            status,
            if wrong.is_empty() {
                format!("{} sysctls as the kubelet wants", KERNEL_DEFAULTS.len())
            } else {
                wrong.join("; ")
            },
            if in_container.is_some() {
                "a container shares its host's kernel: set these sysctls on the container host"
            } else {
                "sysctl --system (kbs apply loads /etc/sysctl.d/90-kbs.conf): with protectKernelDefaults the kubelet refuses to start otherwise"
            },
        );
    }
}

fn file_modes(o: &mut Out, i: &HostInput, files: &BTreeMap<String, FileStat>, node: bool) {
    let under = |p: &str, dir: &str| p.starts_with(&format!("{dir}/"));
    // Keys: every *.key below the PKI dirs and the kubelet's key files, plus the expected ones.
    let mut keys = Vec::new();
    let mut key_count = 0;
    for (p, st) in files.iter().filter(|(_, st)| st.kind == 'f') {
        let is_key = (p.ends_with(".key")
            && (under(p, REMOTE_PKI_DIR) || under(p, REMOTE_ETCD_PKI_DIR)))
            || (under(p, "/var/lib/kubelet/pki") && (p.ends_with(".key") || p.ends_with(".pem")));
        if !is_key {
            continue;
        }
        key_count += 1;
        let owner = if under(p, REMOTE_ETCD_PKI_DIR) {
            crate::pki::ETCD_USER
        } else {
            "root"
        };
        if st.mode & 0o077 != 0 || st.user != owner {
            keys.push(format!("{p} {} {}", mode_str(st.mode), st.user));
        }
    }
    let mut missing = Vec::new();
    for f in i.expected_files {
        let p = f.remote.to_string_lossy();
        if !files.contains_key(p.as_ref()) {
            missing.push(p.into_owned());
        }
    }
    let (miss_keys, miss_other): (Vec<String>, Vec<String>) =
        missing.into_iter().partition(|p| p.ends_with(".key"));
    keys.extend(miss_keys.into_iter().map(|p| format!("{p} missing")));
    o.judge(
        "key-files",
        &keys,
        CheckStatus::Fail,
        format!("{key_count} private keys 0600, owned by root (etcd's by etcd)"),
        "chmod 0600 the key (kbs apply restores modes): a readable private key lets any local user impersonate the component",
    );

    if node || i.expected_files.iter().any(|f| f.remote.ends_with(".conf")) {
        let mut bad = Vec::new();
        let mut n = 0;
        for (p, st) in files.iter().filter(|(p, st)| {
            st.kind == 'f'
                && p.ends_with(".conf")
                && std::path::Path::new(p.as_str()).parent()
                    == Some(std::path::Path::new(crate::pki::REMOTE_KUBECONFIG_DIR))
        }) {
            n += 1;
            if st.mode & 0o077 != 0 || st.user != "root" {
                bad.push(format!("{p} {} {}", mode_str(st.mode), st.user));
            }
        }
        bad.extend(
            miss_other
                .iter()
                .filter(|p| p.ends_with(".conf"))
                .map(|p| format!("{p} missing")),
        );
        o.judge(
            "kubeconfigs",
            &bad,
            CheckStatus::Fail,
            format!("{n} kubeconfigs 0600 root"),
            "chmod 0600 the kubeconfig (kbs apply restores modes): it holds a client key",
        );
    }

    // PKI directories: root's, not writable by others; etcd's certificates owned by etcd.
    let mut bad = Vec::new();
    let dirs = [
        REMOTE_PKI_DIR.to_string(),
        format!("{REMOTE_PKI_DIR}/etcd"),
        REMOTE_ETCD_PKI_DIR.to_string(),
        "/etc/kbs/etcd".to_string(),
    ];
    let mut n = 0;
    for d in &dirs {
        if let Some(st) = files.get(d.as_str()) {
            n += 1;
            if st.mode & 0o022 != 0 || st.user != "root" {
                bad.push(format!("{d} {} {}", mode_str(st.mode), st.user));
            }
        }
    }
    for (p, st) in files
        .iter()
        .filter(|(p, st)| st.kind == 'f' && under(p, REMOTE_ETCD_PKI_DIR))
    {
        if st.user != crate::pki::ETCD_USER {
            bad.push(format!("{p} owned by {}", st.user));
        }
    }
    for (p, st) in files.iter().filter(|(p, st)| {
        st.kind == 'f' && (under(p, REMOTE_PKI_DIR) || under(p, REMOTE_ETCD_PKI_DIR))
    }) {
        if st.mode & 0o022 != 0 {
            bad.push(format!("{p} {} writable by others", mode_str(st.mode)));
        }
    }
    bad.extend(
        miss_other
            .iter()
            .filter(|p| p.ends_with(".crt") || p.ends_with(".pub"))
            .map(|p| format!("{p} missing")),
    );
    o.judge(
        "pki-dirs",
        &bad,
        CheckStatus::Fail,
        format!("{n} PKI dirs root-owned, not writable by others; etcd's files owned by etcd"),
        "chown root and chmod go-w the directory; chown etcd the files in /etc/kbs/etcd/pki (kbs apply does)",
    );
}

fn etcd_auth(o: &mut Out, i: &HostInput, members: &[&crate::plan::EtcdMember]) {
    let s = i.sections;
    let mut client = Vec::new();
    let mut peer = Vec::new();
    for m in members {
        let Some(text) = s.get(&format!("etcd-env {}", m.name)) else {
            client.push(format!("/etc/kbs/etcd/{}.env missing", m.name));
            peer.push(format!("/etc/kbs/etcd/{}.env missing", m.name));
            continue;
        };
        let e = env(text);
        let is = |k: &str, v: &str| e.get(k).is_some_and(|x| x.eq_ignore_ascii_case(v));
        let urls_https = |k: &str| {
            e.get(k)
                .is_some_and(|v| v.split(',').all(|u| u.trim().starts_with("https://")))
        };
        if !is("ETCD_CLIENT_CERT_AUTH", "true") {
            client.push(format!(
                "{}: ETCD_CLIENT_CERT_AUTH={}",
                m.name,
                e.get("ETCD_CLIENT_CERT_AUTH").copied().unwrap_or("unset")
            ));
        }
        if !urls_https("ETCD_LISTEN_CLIENT_URLS") {
            client.push(format!("{}: a client URL is not https", m.name));
        }
        if e.get("ETCD_TRUSTED_CA_FILE").is_none_or(|v| v.is_empty()) {
            client.push(format!("{}: no ETCD_TRUSTED_CA_FILE", m.name));
        }
        if is("ETCD_AUTO_TLS", "true") {
            client.push(format!("{}: ETCD_AUTO_TLS=true", m.name));
        }
        if !is("ETCD_PEER_CLIENT_CERT_AUTH", "true") {
            peer.push(format!(
                "{}: ETCD_PEER_CLIENT_CERT_AUTH={}",
                m.name,
                e.get("ETCD_PEER_CLIENT_CERT_AUTH")
                    .copied()
                    .unwrap_or("unset")
            ));
        }
        if !urls_https("ETCD_LISTEN_PEER_URLS") {
            peer.push(format!("{}: a peer URL is not https", m.name));
        }
        if e.get("ETCD_PEER_TRUSTED_CA_FILE")
            .is_none_or(|v| v.is_empty())
        {
            peer.push(format!("{}: no ETCD_PEER_TRUSTED_CA_FILE", m.name));
        }
        if is("ETCD_PEER_AUTO_TLS", "true") {
            peer.push(format!("{}: ETCD_PEER_AUTO_TLS=true", m.name));
        }
    }
    let mut unreachable = Vec::new();
    for p in i.etcd_probes {
        for (what, outcome) in [
            ("HTTPS without a client certificate", &p.without_cert),
            ("plain HTTP", &p.plain_http),
        ] {
            match outcome {
                ProbeOutcome::Answered(d) => {
                    client.push(format!("{}: {what} got an answer: {d}", p.member))
                }
                ProbeOutcome::Unreachable(d) => {
                    unreachable.push(format!("{}: {what}: {d}", p.member))
                }
                ProbeOutcome::Refused(_) => {}
            }
        }
    }
    let fix = "set ETCD_CLIENT_CERT_AUTH=true with https client URLs in /etc/kbs/etcd/<member>.env and restart the member (kbs apply does): etcd without client certificates hands out every Secret";
    if client.is_empty() && !unreachable.is_empty() {
        o.push(
            "etcd-client-auth",
            CheckStatus::Warn,
            format!(
                "ETCD_CLIENT_CERT_AUTH=true; not probed: {}",
                unreachable.join("; ")
            ),
            "run kbs check from a machine that reaches the etcd client ports to probe them",
        );
    } else {
        o.judge(
            "etcd-client-auth",
            &client,
            CheckStatus::Fail,
            format!(
                "ETCD_CLIENT_CERT_AUTH=true; without a client certificate refused ({})",
                crate::words::count(i.etcd_probes.len() * 2, "probe")
            ),
            fix,
        );
    }
    o.judge(
        "etcd-peer-auth",
        &peer,
        CheckStatus::Fail,
        "ETCD_PEER_CLIENT_CERT_AUTH=true, https peer URLs".into(),
        "set ETCD_PEER_CLIENT_CERT_AUTH=true with https peer URLs and restart the member (kbs apply does): otherwise anyone can join as a peer",
    );
}

fn ssh_root_login(o: &mut Out, i: &HostInput, s: &Sections) {
    let value = s.get("sshd").unwrap_or_default().lines().find_map(|l| {
        let (k, v) = l.trim().split_once(' ')?;
        k.eq_ignore_ascii_case("permitrootlogin")
            .then(|| v.trim().to_ascii_lowercase())
    });
    let root = i.ssh_user == "root";
    let Some(v) = value else {
        o.push(
            "ssh-root-login",
            CheckStatus::Warn,
            "sshd -T printed no permitrootlogin".into(),
            "run `sshd -T` on the host as root to see the effective setting",
        );
        return;
    };
    let status = match (root, v.as_str()) {
        (true, "prohibit-password" | "without-password") => CheckStatus::Pass,
        (true, "forced-commands-only") => CheckStatus::Warn,
        (false, "no") => CheckStatus::Pass,
        (false, "prohibit-password" | "without-password" | "forced-commands-only") => {
            CheckStatus::Warn
        }
        _ => CheckStatus::Fail,
    };
    o.push(
        "ssh-root-login",
        status,
        format!("PermitRootLogin {v} (ssh user {})", i.ssh_user),
        if root {
            "set PermitRootLogin prohibit-password in sshd_config (keys only) and reload sshd"
        } else {
            "set PermitRootLogin no in sshd_config (kbs logs in as a sudo user) and reload sshd"
        },
    );
}

/// Lifetime of one certificate: (status, days left).
pub(crate) fn lifetime(c: &CertInfo, warn_days: u32, now: OffsetDateTime) -> (CheckStatus, i64) {
    let days = (c.not_after - now).whole_days();
    let status = if now >= c.not_after {
        CheckStatus::Fail
    } else if days < i64::from(warn_days) {
        CheckStatus::Warn
    } else {
        CheckStatus::Pass
    };
    (status, days)
}

fn host_certs(o: &mut Out, i: &HostInput) {
    use base64::Engine;
    let s = i.sections;
    let mut certs: Vec<(String, Result<CertInfo, String>)> = s
        .with_prefix("cert")
        .map(|(p, pem)| (p.to_string(), CertInfo::from_pem(pem.as_bytes())))
        .collect();
    for (p, data) in s.with_prefix("kubeconfig-cert") {
        let data = data.trim();
        if data.is_empty() {
            continue; // a kubeconfig pointing at a cert file (kubelet.conf after rotation)
        }
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| e.to_string());
        certs.push((p.to_string(), pem.and_then(|pem| CertInfo::from_pem(&pem))));
    }
    if certs.is_empty() {
        if i.expected_files.is_empty() {
            return;
        }
        o.push(
            "cert-expiry",
            CheckStatus::Fail,
            "no certificates found".into(),
            "run kbs apply",
        );
        return;
    }
    let mut worst = CheckStatus::Pass;
    let mut problems = Vec::new();
    let mut soonest: Option<(i64, String)> = None;
    for (p, c) in &certs {
        match c {
            Err(e) => {
                worst = worst.max(CheckStatus::Fail);
                problems.push(format!("{p} unreadable: {e}"));
            }
            Ok(c) => {
                let (st, days) = lifetime(c, i.warn_days, i.now);
                if soonest.as_ref().is_none_or(|(d, _)| days < *d) {
                    soonest = Some((days, p.clone()));
                }
                match st {
                    CheckStatus::Fail => problems.push(format!("{p} expired {} days ago", -days)),
                    CheckStatus::Warn => problems.push(format!("{p} expires in {days} days")),
                    _ => {}
                }
                worst = worst.max(st);
            }
        }
    }
    let found = if problems.is_empty() {
        match soonest {
            Some((d, p)) => format!("{} certificates; soonest {p} in {d} days", certs.len()),
            None => format!("{} certificates", certs.len()),
        }
    } else {
        problems.join("; ")
    };
    o.push(
        "cert-expiry",
        worst,
        found,
        "kbs certs renew INVENTORY, then kbs apply to upload (components pick them up on restart)",
    );
}

/// The state dir's PKI (`kbs certs check`) as one line for the host `local`.
pub fn local_certs(report: Result<&crate::pki::CheckReport, String>) -> Check {
    use crate::pki::Health;
    let fix = "kbs certs renew INVENTORY (leaves); a CA near expiry must be replaced by hand (docs/pki.md)";
    let (status, found) = match report {
        Err(e) => (CheckStatus::Warn, e),
        Ok(r) => {
            let bad: Vec<String> = r
                .certificates
                .iter()
                .filter(|c| c.health != Health::Ok)
                .map(|c| {
                    format!(
                        "{} {}{}",
                        c.path.display(),
                        c.health.as_str(),
                        c.problem
                            .as_deref()
                            .map(|p| format!(" ({p})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let status = match r.worst() {
                Health::Ok => CheckStatus::Pass,
                Health::Expiring => CheckStatus::Warn,
                Health::Expired | Health::Invalid => CheckStatus::Fail,
            };
            let found = if bad.is_empty() {
                let soonest = r.certificates.iter().min_by_key(|c| c.days_left);
                format!(
                    "{} certificates in the state dir; soonest expiry in {} days",
                    r.certificates.len(),
                    soonest.map_or(0, |c| c.days_left)
                )
            } else {
                bad.join("; ")
            };
            (status, found)
        }
    };
    Check {
        host: "local".into(),
        name: "cert-expiry",
        status,
        found,
        fix: if status == CheckStatus::Pass {
            String::new()
        } else {
            fix.into()
        },
    }
}

/// What the API answered for one object of a namespace baseline: `Ok(None)` is 404.
/// An object read from the API: `None` when it does not exist.
pub type Fetched<T> = Result<Option<T>, String>;

/// What `namespace_baseline` judges, read through the API.
pub struct BaselineRead {
    pub namespace: Fetched<Namespace>,
    pub quota: Fetched<ResourceQuota>,
    pub limits: Fetched<LimitRange>,
    pub policy: Fetched<NetworkPolicy>,
}

/// Whether `have` is the amount `want` (the API returns quantities in canonical form).
fn same_amount(have: Option<&K8sQuantity>, want: &Quantity) -> bool {
    have.and_then(|h| Quantity::parse(&h.0)).as_ref() == Some(want)
}

fn shown(have: Option<&K8sQuantity>) -> &str {
    have.map_or("unset", |h| h.0.as_str())
}

/// One `namespace-baseline` check (host `cluster`): the namespace exists with the quota, the
/// container defaults and the default-deny policy the inventory asks for.
pub fn namespace_baseline(ns: &NamespaceBaseline, read: &BaselineRead) -> Check {
    let fix = "run kbs apply: it applies /etc/kbs/baselines/<namespace>.yaml on the first control plane again";
    let mut problems = Vec::new();
    let mut present = Vec::new();
    let mut need = |what: String, bad: Result<Option<Vec<String>>, &String>| match bad {
        Err(e) => problems.push(format!("{what}: cannot read it: {e}")),
        Ok(None) => problems.push(format!("{what} missing")),
        Ok(Some(bad)) if bad.is_empty() => present.push(what),
        Ok(Some(bad)) => problems.push(format!("{what}: {}", bad.join(", "))),
    };
    fn judge<T>(
        f: &Fetched<T>,
        j: impl Fn(&T) -> Vec<String>,
    ) -> Result<Option<Vec<String>>, &String> {
        f.as_ref().map(|o| o.as_ref().map(j))
    }
    need(
        format!("namespace {}", ns.name),
        judge(&read.namespace, |_| Vec::new()),
    );
    if !ns.quota.is_empty() {
        let bad = judge(&read.quota, |q| {
            let hard = q.spec.as_ref().and_then(|s| s.hard.as_ref());
            ns.quota
                .iter()
                .filter_map(|(k, want)| {
                    let have = hard.and_then(|h| h.get(*k));
                    (!same_amount(have, want)).then(|| format!("{k}={} (want {want})", shown(have)))
                })
                .collect()
        });
        need(format!("ResourceQuota {BASELINE_QUOTA}"), bad);
    }
    let defaults = [("cpu", &ns.container_cpu), ("memory", &ns.container_memory)];
    if defaults.iter().any(|(_, v)| v.is_some()) {
        let bad = judge(&read.limits, |l| {
            let container = l
                .spec
                .as_ref()
                .and_then(|s| s.limits.iter().find(|e| e.type_ == "Container"));
            let Some(c) = container else {
                return vec!["no Container limits".into()];
            };
            let mut bad = Vec::new();
            for (res, want) in defaults {
                let Some(want) = want else { continue };
                for (field, values) in [
                    ("default", &c.default),
                    ("defaultRequest", &c.default_request),
                ] {
                    let have = values.as_ref().and_then(|v| v.get(res));
                    if !same_amount(have, want) {
                        bad.push(format!("{field}.{res}={} (want {want})", shown(have)));
                    }
                }
            }
            bad
        });
        need(format!("LimitRange {BASELINE_LIMITS}"), bad);
    }
    if ns.default_deny {
        let bad = judge(&read.policy, |p| {
            let mut bad = Vec::new();
            let spec = p.spec.as_ref();
            let selects_all = spec.and_then(|s| s.pod_selector.as_ref()).is_none_or(|s| {
                s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
            });
            if !selects_all {
                bad.push("does not select every pod".to_string());
            }
            let types = spec.and_then(|s| s.policy_types.as_ref());
            for t in ["Ingress", "Egress"] {
                if !types.is_some_and(|types| types.iter().any(|x| x == t)) {
                    bad.push(format!("policyTypes lacks {t}"));
                }
            }
            if spec
                .and_then(|s| s.ingress.as_ref())
                .is_some_and(|i| !i.is_empty())
            {
                bad.push("allows ingress".into());
            }
            bad
        });
        need(format!("NetworkPolicy {BASELINE_POLICY}"), bad);
    }
    let (status, found) = if problems.is_empty() {
        (CheckStatus::Pass, present.join(", "))
    } else {
        (CheckStatus::Fail, problems.join("; "))
    };
    Check::new("cluster", "namespace-baseline", status, found, fix)
}

#[cfg(test)]
mod tests;
