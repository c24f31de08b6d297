//! The rules on output captured from a lab control plane after `kbs apply` (testdata/node-1.out:
//! the probe script's output on node-1, certificates issued 2026-11-21; the controller-manager
//! and scheduler manifests are the kubeadm stand-in's for the same ClusterConfiguration), each
//! item then broken by editing the captured text.

use std::path::Path;

use super::*;
use crate::inventory::Inventory;

const CAPTURED: &str = include_str!("../testdata/node-1.out");
/// 2026-12-01: ten days after the capture.
const NOW: i64 = 1_796_083_200;

fn plan() -> ClusterPlan {
    // Captured from a lab host at v1.31.4, which is end of life now.
    let text = include_str!("../testdata/inventory.toml");
    ClusterPlan::new(
        Inventory::parse_allowing_unsupported(Path::new("inventory.toml"), text).expect("valid"),
    )
}

fn refused(member: &str) -> MemberProbe {
    MemberProbe {
        member: member.into(),
        without_cert: ProbeOutcome::Refused("handshake failed".into()),
        plain_http: ProbeOutcome::Refused("HTTP 400".into()),
    }
}

struct Run {
    text: String,
    user: &'static str,
    probes: Vec<MemberProbe>,
    now: i64,
}

impl Run {
    fn new() -> Self {
        Self {
            text: CAPTURED.to_string(),
            user: "root",
            probes: vec![refused("node-1")],
            now: NOW,
        }
    }

    fn edit(mut self, from: &str, to: &str) -> Self {
        assert!(self.text.contains(from), "fixture lacks {from:?}");
        self.text = self.text.replacen(from, to, 1);
        self
    }

    fn checks(&self) -> Vec<Check> {
        let p = plan();
        let state = crate::state::StateDir::new("/nonexistent");
        let expected = crate::pki::host_files(&p, &state);
        let sections = Sections::parse(&self.text);
        evaluate(&HostInput {
            plan: &p,
            host: &p.hosts[0],
            ssh_user: self.user,
            facts: None,
            sections: &sections,
            etcd_probes: &self.probes,
            expected_files: &expected[0].files,
            warn_days: 30,
            now: OffsetDateTime::from_unix_timestamp(self.now).expect("time"),
        })
    }

    fn get(&self, name: &str) -> Check {
        self.checks()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}"))
    }
}

#[test]
fn a_converged_lab_host_passes_all_but_what_the_lab_cannot_do() {
    let checks = Run::new().checks();
    let not_pass: Vec<(&str, CheckStatus)> = checks
        .iter()
        .filter(|c| c.status != CheckStatus::Pass)
        .map(|c| (c.name, c.status))
        .collect();
    // The container shares the Docker host's clock; the kubeadm stand-in does not merge patches;
    // and the capture predates the stand-in's kubelet-finalize (kubelet.conf embedded its cert).
    assert_eq!(
        not_pass,
        [
            ("time-sync", CheckStatus::Warn),
            ("kubelet-reserved", CheckStatus::Warn),
            ("kubelet-client-rotation", CheckStatus::Warn)
        ],
        "{checks:#?}"
    );
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    for n in [
        "swap",
        "apiserver-flags",
        "audit-policy",
        "encryption-config",
        "pod-security",
        "kubelet-config",
        "kernel-defaults",
        "key-files",
        "kubeconfigs",
        "pki-dirs",
        "etcd-data-dir",
        "etcd-client-auth",
        "etcd-peer-auth",
        "ssh-root-login",
        "cert-expiry",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(checks.iter().all(|c| c.host == "node-1"));
}

#[test]
fn a_loose_key_fails_key_files() {
    let c = Run::new()
        .edit(
            "600 root root f /etc/kubernetes/pki/apiserver.key",
            "644 root root f /etc/kubernetes/pki/apiserver.key",
        )
        .get("key-files");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.found
            .contains("/etc/kubernetes/pki/apiserver.key 0644 root"),
        "{}",
        c.found
    );
    assert!(c.fix.contains("chmod 0600"));
}

#[test]
fn an_etcd_key_owned_by_root_and_a_missing_key_fail() {
    let r = Run::new()
        .edit(
            "600 etcd root f /etc/kbs/etcd/pki/server.key",
            "600 root root f /etc/kbs/etcd/pki/server.key",
        )
        .edit("600 root root f /etc/kubernetes/pki/sa.key\n", "");
    let c = r.get("key-files");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.found.contains("/etc/kbs/etcd/pki/server.key 0600 root"));
    assert!(c.found.contains("/etc/kubernetes/pki/sa.key missing"));
    assert_eq!(r.get("pki-dirs").status, CheckStatus::Fail);
}

#[test]
fn kubeconfig_encryption_config_and_data_dir_modes() {
    let r = Run::new()
        .edit(
            "600 root root f /etc/kubernetes/admin.conf",
            "644 root root f /etc/kubernetes/admin.conf",
        )
        .edit(
            "600 root root f /etc/kubernetes/encryption/config.yaml",
            "640 root root f /etc/kubernetes/encryption/config.yaml",
        )
        .edit(
            "700 etcd etcd d /var/lib/etcd\n",
            "755 root root d /var/lib/etcd\n",
        )
        .edit(
            "755 root root d /etc/kubernetes/pki\n",
            "777 root root d /etc/kubernetes/pki\n",
        );
    assert_eq!(r.get("kubeconfigs").status, CheckStatus::Fail);
    let e = r.get("encryption-config");
    assert_eq!(
        (e.status, e.found.as_str()),
        (CheckStatus::Fail, "mode 0640 owner root")
    );
    let d = r.get("etcd-data-dir");
    assert_eq!(
        (d.status, d.found.as_str()),
        (CheckStatus::Fail, "/var/lib/etcd is 0755 root")
    );
    assert!(r.get("pki-dirs").found.contains("/etc/kubernetes/pki 0777"));
}

#[test]
fn identity_first_is_secrets_in_clear() {
    let c = Run::new()
        .edit("secretbox\nidentity", "identity\nsecretbox")
        .get("encryption-config");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.found.contains("identity"));
}

#[test]
fn etcd_without_client_cert_auth_fails_from_the_env_and_from_the_probe() {
    let env = Run::new()
        .edit("ETCD_CLIENT_CERT_AUTH=true", "ETCD_CLIENT_CERT_AUTH=false")
        .get("etcd-client-auth");
    assert_eq!(env.status, CheckStatus::Fail);
    assert!(env.found.contains("node-1: ETCD_CLIENT_CERT_AUTH=false"));

    // The env file says true but the running member answers (not restarted since an edit).
    let mut r = Run::new();
    r.probes[0].without_cert =
        ProbeOutcome::Answered("https://172.30.6.11:2379/version: {\"etcdserver\"}".into());
    let c = r.get("etcd-client-auth");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.found
            .contains("HTTPS without a client certificate got an answer")
    );

    // Not reachable from here: no verdict, a warning.
    let mut r = Run::new();
    r.probes[0].without_cert = ProbeOutcome::Unreachable("no route".into());
    assert_eq!(r.get("etcd-client-auth").status, CheckStatus::Warn);
}

#[test]
fn etcd_peer_auth() {
    let c = Run::new()
        .edit(
            "ETCD_PEER_CLIENT_CERT_AUTH=true",
            "ETCD_PEER_CLIENT_CERT_AUTH=false",
        )
        .get("etcd-peer-auth");
    assert_eq!(c.status, CheckStatus::Fail);
    let c = Run::new()
        .edit(
            "ETCD_LISTEN_PEER_URLS=https://",
            "ETCD_LISTEN_PEER_URLS=http://",
        )
        .get("etcd-peer-auth");
    assert!(c.found.contains("peer URL is not https"), "{}", c.found);
}

#[test]
fn swap_active_or_in_fstab_fails() {
    let c = Run::new()
        .edit(
            "### kbs:swaps\nFilename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
            "### kbs:swaps\nFilename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swapfile  file  1048572  0  -2\n",
        )
        .get("swap");
    assert_eq!(
        (c.status, c.found.as_str()),
        (CheckStatus::Fail, "active: /swapfile")
    );
    let c = Run::new()
        .edit(
            "### kbs:fstab-swap\n",
            "### kbs:fstab-swap\n/swapfile none swap sw 0 0\n",
        )
        .get("swap");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.found.contains("on at boot"));
}

#[test]
fn root_login_as_the_inventory_expects() {
    let c = Run::new()
        .edit("permitrootlogin without-password", "permitrootlogin yes")
        .get("ssh-root-login");
    assert_eq!(c.status, CheckStatus::Fail);
    let mut r = Run::new();
    r.user = "kbs";
    assert_eq!(r.get("ssh-root-login").status, CheckStatus::Warn);
    let mut r = Run::new().edit("permitrootlogin without-password", "permitrootlogin no");
    assert_eq!(r.get("ssh-root-login").status, CheckStatus::Fail);
    r.user = "kbs";
    assert_eq!(r.get("ssh-root-login").status, CheckStatus::Pass);
}

#[test]
fn certificates_near_expiry_warn_and_expired_fail() {
    let mut r = Run::new();
    r.now = 1_825_804_800; // 2027-11-10: leaves issued 2026-11-21 have 11 days left
    let c = r.get("cert-expiry");
    assert_eq!(c.status, CheckStatus::Warn);
    assert!(
        c.found
            .contains("/etc/kubernetes/pki/apiserver.crt expires in 11 days")
    );
    r.now = 1_827_619_200; // 2027-12-01
    let c = r.get("cert-expiry");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.found
            .contains("/etc/kubernetes/pki/apiserver.crt expired 9 days ago")
    );
    // The CA (ten years) is not reported.
    assert!(!c.found.contains("/etc/kubernetes/pki/ca.crt"));
}

#[test]
fn apiserver_flags_as_deployed() {
    let c = Run::new()
        .edit("--profiling=false\n", "--profiling=true\n")
        .get("apiserver-flags");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.found.contains("--profiling=true (want false)"),
        "{}",
        c.found
    );
    let c = Run::new()
        .edit("--authorization-mode=Node,RBAC\n", "")
        .get("apiserver-flags");
    assert!(c.found.contains("--authorization-mode missing"));

    // No process (the API server is down): the static-pod manifest is read instead.
    let start = CAPTURED.find("### kbs:apiserver-process").expect("section");
    let end = CAPTURED
        .find("### kbs:apiserver-manifest")
        .expect("section");
    let mut r = Run::new();
    r.text.replace_range(start..end, "");
    let c = r.get("apiserver-flags");
    assert_eq!(c.status, CheckStatus::Pass, "{}", c.found);
    assert!(c.found.contains("manifest"));
}

#[test]
fn kubelet_settings_and_audit_and_pod_security() {
    let r = Run::new()
        .edit(
            "  anonymous:\n    enabled: false",
            "  anonymous:\n    enabled: true",
        )
        .edit("readOnlyPort: 0", "readOnlyPort: 10255")
        .edit("enforce: \"baseline\"", "enforce: \"privileged\"")
        .edit("kind: Policy", "kind: Nothing");
    let k = r.get("kubelet-config");
    assert_eq!(k.status, CheckStatus::Fail);
    assert!(k.found.contains("anonymous auth on") && k.found.contains("readOnlyPort 10255"));
    assert_eq!(r.get("pod-security").status, CheckStatus::Fail);
    assert_eq!(r.get("audit-policy").status, CheckStatus::Fail);
}

#[test]
fn kernel_defaults_fail_on_a_machine_and_warn_in_a_container() {
    let r = Run::new().edit("vm.overcommit_memory 1", "vm.overcommit_memory 0");
    assert_eq!(r.get("kernel-defaults").status, CheckStatus::Warn);
    let r = r.edit("container docker", "container none");
    let c = r.get("kernel-defaults");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.found.contains("vm.overcommit_memory=0 (want 1)"));
}

#[test]
fn time_sync_service_or_synchronised_kernel_clock() {
    let r = Run::new().edit("service chrony inactive", "service chrony active");
    assert_eq!(r.get("time-sync").found, "chrony active");
    let r = Run::new().edit("container docker", "container none");
    assert_eq!(r.get("time-sync").status, CheckStatus::Fail);
    let r = r.edit("container none", "ntp-synchronized yes\ncontainer none");
    assert_eq!(r.get("time-sync").status, CheckStatus::Pass);
}

#[test]
fn a_worker_gets_no_control_plane_or_etcd_checks() {
    let text = include_str!("../testdata/inventory.toml")
        .replace(
            "name = \"node-1\"",
            "name = \"node-1\"\nroles = [\"control-plane\", \"etcd\"]",
        )
        .replace(
            "name = \"node-2\"",
            "name = \"node-2\"\nroles = [\"control-plane\"]",
        )
        .replace(
            "name = \"node-3\"",
            "name = \"node-3\"\nroles = [\"worker\"]",
        );
    let p = ClusterPlan::new(
        Inventory::parse_allowing_unsupported(Path::new("i.toml"), &text).expect("valid"),
    );
    let worker = p.hosts.iter().find(|h| h.name == "node-3").expect("node-3");
    assert!(!worker.has(Role::ControlPlane));
    let script = super::super::probe::script(&p, worker);
    assert!(!script.contains("apiserver"));
    assert!(!script.contains("etcd-env"));
    assert!(script.contains("kubelet-config"));
}

fn q(s: &str) -> Quantity {
    Quantity::parse(s).expect("quantity")
}

fn fetched<T: serde::de::DeserializeOwned>(json: &str) -> Fetched<T> {
    Ok(Some(serde_json::from_str(json).expect("json")))
}

fn baseline() -> NamespaceBaseline {
    NamespaceBaseline {
        name: "shop".into(),
        quota: vec![("requests.cpu", q("4")), ("pods", q("50"))],
        container_cpu: Some(q("250m")),
        container_memory: None,
        default_deny: true,
    }
}

/// The objects as the API server stand-in returns them after `kbs apply`.
fn applied() -> BaselineRead {
    BaselineRead {
        namespace: fetched(r#"{"kind":"Namespace","metadata":{"name":"shop"}}"#),
        // As the API server returns them: canonical quantities ("4" for "4", "250m").
        quota: fetched(r#"{"spec":{"hard":{"requests.cpu":"4","pods":"50"}}}"#),
        limits: fetched(
            r#"{"spec":{"limits":[{"type":"Container","default":{"cpu":"250m"},"defaultRequest":{"cpu":"250m"}}]}}"#,
        ),
        policy: fetched(
            r#"{"spec":{"podSelector":{},"policyTypes":["Ingress","Egress"],"egress":[{"ports":[{"port":53}]}]}}"#,
        ),
    }
}

#[test]
fn namespace_baselines_pass_as_applied_and_fail_when_an_object_goes() {
    let c = namespace_baseline(&baseline(), &applied());
    assert_eq!(c.status, CheckStatus::Pass, "{}", c.found);
    assert_eq!(c.host, "cluster");
    assert!(
        c.found.contains("NetworkPolicy kbs-default-deny"),
        "{}",
        c.found
    );

    let mut r = applied();
    r.quota = Ok(None);
    let c = namespace_baseline(&baseline(), &r);
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.found.contains("ResourceQuota kbs-quota missing"),
        "{}",
        c.found
    );

    let mut r = applied();
    r.quota = fetched(r#"{"spec": {"hard": {"requests.cpu": "8"}}}"#);
    r.policy = fetched(
        r#"{"spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Egress"], "ingress": [{}]}}"#,
    );
    let c = namespace_baseline(&baseline(), &r);
    for part in [
        "requests.cpu=8 (want 4)",
        "pods=unset (want 50)",
        "does not select every pod",
        "policyTypes lacks Ingress",
        "allows ingress",
    ] {
        assert!(c.found.contains(part), "{part} in {}", c.found);
    }

    let mut r = applied();
    r.namespace = Err("no admin kubeconfig".into());
    assert_eq!(
        namespace_baseline(&baseline(), &r).status,
        CheckStatus::Fail
    );
    // The API's canonical form of the same amounts passes: "4" as "4000m", "250m" as "0.25".
    let mut r = applied();
    r.quota = fetched(r#"{"spec":{"hard":{"requests.cpu":"4000m","pods":"50"}}}"#);
    r.limits = fetched(
        r#"{"spec":{"limits":[{"type":"Container","default":{"cpu":"0.25"},"defaultRequest":{"cpu":"250m"}}]}}"#,
    );
    let c = namespace_baseline(&baseline(), &r);
    assert_eq!(c.status, CheckStatus::Pass, "{}", c.found);
    // Only what the inventory asks for is required.
    let mut b = baseline();
    b.container_cpu = None;
    b.default_deny = false;
    let mut r = applied();
    r.limits = Ok(None);
    r.policy = Ok(None);
    assert_eq!(namespace_baseline(&b, &r).status, CheckStatus::Pass);
}

#[test]
fn controller_manager_and_scheduler_flags_as_deployed() {
    let r = Run::new();
    for name in ["controller-manager-flags", "scheduler-flags"] {
        let c = r.get(name);
        assert_eq!(c.status, CheckStatus::Pass, "{name}: {}", c.found);
    }
    let c = Run::new()
        .edit(
            "    - --bind-address=127.0.0.1\n    - --tls-min-version",
            "    - --bind-address=0.0.0.0\n    - --tls-min-version",
        )
        .get("controller-manager-flags");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.found.contains("--bind-address=0.0.0.0 (want 127.0.0.1)"),
        "{}",
        c.found
    );
    let c = Run::new()
        .edit(
            "    - kube-scheduler\n",
            "    - kube-scheduler\n    - --feature-gates=X=true\n",
        )
        .edit("    - --profiling=false\n    - --bind-address=127.0.0.1\n    - --tls-min-version=VersionTLS12\n    - --tls-cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256\n\n### kbs:audit", "    - --profiling=true\n    - --bind-address=127.0.0.1\n    - --tls-min-version=VersionTLS12\n\n### kbs:audit")
        .get("scheduler-flags");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.found.contains("--profiling=true (want false)"),
        "{}",
        c.found
    );
    assert!(
        c.found.contains("--tls-cipher-suites missing"),
        "{}",
        c.found
    );
}

#[test]
fn a_node_without_its_serving_certificate_fails() {
    let path = "/var/lib/kubelet/pki/kubelet-server-current.pem";
    let with = |text: &str| {
        let mut r = Run::new();
        r.text
            .push_str(&format!("\n### kbs:serving-cert {path}\n{text}"));
        r
    };
    let c = with("").get("kubelet-serving-cert");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.found.contains("never approved"), "{c:?}");
    // The serving certificate is a certificate like the others the capture holds: reuse one.
    let pem = CAPTURED
        .split("### kbs:cert /etc/kubernetes/pki/apiserver.crt\n")
        .nth(1)
        .and_then(|rest| rest.split("###").next())
        .expect("apiserver.crt in the capture");
    let c = with(pem).get("kubelet-serving-cert");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    // Output from before the check: no section, no verdict.
    assert!(
        Run::new()
            .checks()
            .iter()
            .all(|c| c.name != "kubelet-serving-cert")
    );
}

#[test]
fn kubelet_conf_must_point_at_the_rotating_certificate() {
    let head = "### kbs:kubeconfig-cert /etc/kubernetes/kubelet.conf\n";
    let embedded = CAPTURED
        .split(head)
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("kubelet.conf in the capture");
    assert_eq!(
        Run::new().get("kubelet-client-rotation").status,
        CheckStatus::Warn
    );
    let rotating = Run::new().edit(&format!("{head}{embedded}\n"), &format!("{head}\n"));
    assert_eq!(
        rotating.get("kubelet-client-rotation").status,
        CheckStatus::Pass
    );
}
