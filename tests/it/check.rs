//! `kbs check` on a cluster made by `kbs apply` on lab hosts (with a namespace baseline):
//! everything passes (warnings only for what a container cannot do), then each item is broken by
//! hand on one host (or in the cluster) and check must name it (exit 2, that check failing on
//! that host), and check itself changes nothing. The baseline is read back through the API and
//! kubectl, and a second apply changes nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{api_get, apply, kbs};
use crate::lab::{Lab, up};

/// Everything kbs manages on a host, and SSH's and root's files.
const WATCHED: &str = "/etc/kubernetes /etc/kbs /etc/haproxy /etc/keepalived /etc/systemd/system /etc/sysctl.d /etc/ssh /etc/fstab /var/lib/kubelet /usr/local/bin /usr/local/lib/kbs-standins /root";

/// What a container cannot pass: cgroup v1 on the Docker host, no time sync service of its own
/// (it uses the host's clock), the kubeadm stand-in not merging the kubelet patch, kernel
/// sysctls shared with the Docker host.
const LAB_WARNINGS: [&str; 4] = ["cgroup", "time-sync", "kubelet-reserved", "kernel-defaults"];

/// The namespace baseline the lab inventory gets.
const BASELINE: &str = "\n[[security.namespace]]\nname = \"shop\"\nrequests_cpu = \"4\"\npods = 50\n\
    container_cpu = \"250m\"\ncontainer_memory = \"256Mi\"\n";

fn check(inventory: &Path, state: &Path) -> (i32, Value) {
    let out = kbs()
        .arg("check")
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .args(["--log-format", "plain", "--output", "json"])
        .output()
        .expect("run kbs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// (host, check, status) of every check that did not pass.
fn not_passed(report: &Value) -> Vec<(String, String, String)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] != "pass")
        .map(|c| {
            (
                c["host"].as_str().unwrap_or_default().to_string(),
                c["name"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn assert_clean(inventory: &Path, state: &Path) {
    let (code, report) = check(inventory, state);
    let bad = not_passed(&report);
    assert!(
        bad.iter()
            .all(|(_, name, status)| status == "warn" && LAB_WARNINGS.contains(&name.as_str())),
        "only the lab's known warnings may remain: {bad:?}\n{report:#}"
    );
    assert_eq!(report["failed"], 0);
    assert_eq!(code, if bad.is_empty() { 0 } else { 1 }, "{bad:?}");
}

/// Check exits 2 and `name` fails on `host` (and the found text contains `found`).
fn assert_fails(inventory: &Path, state: &Path, host: &str, name: &str, found: &str) {
    let (code, report) = check(inventory, state);
    let c = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["host"] == host && c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no check {host}/{name}: {report:#}"));
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(
        c["found"].as_str().unwrap_or_default().contains(found),
        "{c:#}"
    );
    assert!(!c["fix"].as_str().unwrap_or_default().is_empty(), "{c:#}");
    assert_eq!(code, 2, "{report:#}");
    // Nothing else broke.
    let others: Vec<_> = not_passed(&report)
        .into_iter()
        .filter(|(h, n, s)| s == "fail" && !(h == host && n == name))
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

fn snapshot(lab: &Lab, host: &str) -> String {
    lab.exec(
        host,
        // The temp dirs by their contents only: the cluster's own processes touch them.
        &format!(
            "{{ find {WATCHED} -xdev -printf '%p %T@ %m %U\\n'; find /tmp /var/tmp -mindepth 1 -xdev -printf '%p %T@ %m %U\\n'; }} 2>/dev/null | sort"
        ),
    )
}

fn restart_member(lab: &Lab, host: &str) {
    lab.exec(host, &format!("systemctl restart kbs-etcd@{host}.service"));
    let started = Instant::now();
    // Wait until the member serves clients again (with kbs's own client certificate).
    while !lab
        .exec(
            host,
            "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kbs/etcd/pki/ca.crt \
             --cert=/etc/kbs/etcd/pki/healthcheck-client.crt --key=/etc/kbs/etcd/pki/healthcheck-client.key \
             --command-timeout=3s endpoint health >/dev/null 2>&1 && echo up || true",
        )
        .contains("up")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "etcd on {host} did not come back"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `etcdctl endpoint health` from this machine with only the CA: no client certificate.
fn health_without_client_cert(state: &Path, endpoint: &str) -> bool {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!(
            "--cacert={}",
            state.join("pki/etcd/ca.crt").display()
        ))
        .args([
            "--command-timeout=3s",
            "--dial-timeout=3s",
            "endpoint",
            "health",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// An already expired certificate in PEM.
fn expired_pem() -> String {
    let mut params =
        rcgen::CertificateParams::new(vec!["front-proxy-client".into()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("cert").pem()
}

#[test]
fn lab_check_passes_after_apply_finds_each_break_and_changes_nothing() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let s = state.path();
    let inv = s.join("inventory.toml");
    let text = std::fs::read_to_string(lab.inventory()).expect("inventory");
    std::fs::write(&inv, format!("{text}{BASELINE}")).expect("write inventory");
    let out = apply(&inv, s, &[]);
    assert!(
        out.contains("kubectl apply -f /etc/kbs/baselines/shop.yaml (namespace baseline shop"),
        "{out}"
    );

    // The baseline is in the cluster: read back through the endpoint, and with kubectl on node-1.
    let quota = api_get(s, "/api/v1/namespaces/shop/resourcequotas/kbs-quota");
    assert_eq!(quota["spec"]["hard"]["requests.cpu"], "4", "{quota}");
    let limits = api_get(
        s,
        "/api/v1/namespaces/shop/limitranges/kbs-container-defaults",
    );
    assert_eq!(
        limits["spec"]["limits"][0]["default"]["memory"], "256Mi",
        "{limits}"
    );
    let policy = api_get(
        s,
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/kbs-default-deny",
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let listed = lab.exec(
        "node-1",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get namespaces -o name && \
         kubectl --kubeconfig /etc/kubernetes/admin.conf get networkpolicies -n shop -o name",
    );
    assert!(
        listed.contains("namespace/shop")
            && listed.contains("networkpolicy.networking.k8s.io/kbs-default-deny"),
        "{listed}"
    );
    // Converged: a second apply changes nothing (kubectl diff finds the cluster as rendered).
    let again = apply(&inv, s, &[]);
    assert!(again.starts_with("no changes"), "{again}");

    // A converged cluster: nothing fails; the table form prints a score.
    assert_clean(&inv, s);
    let table = kbs()
        .arg("check")
        .arg(&inv)
        .arg("--state-dir")
        .arg(s)
        .output()
        .expect("run kbs");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("score: ") && text.contains("etcd-client-auth"),
        "{text}"
    );

    // Read-only: no file kbs manages (nor a temp file) changed, appeared or vanished.
    let hosts = ["node-1", "node-2", "node-3"];
    let before: Vec<String> = hosts.iter().map(|h| snapshot(&lab, h)).collect();
    let _ = check(&inv, s);
    let after: Vec<String> = hosts.iter().map(|h| snapshot(&lab, h)).collect();
    for (b, a) in before.iter().zip(&after) {
        let gone: Vec<&str> = b.lines().filter(|l| !a.lines().any(|x| x == *l)).collect();
        let new: Vec<&str> = a.lines().filter(|l| !b.lines().any(|x| x == *l)).collect();
        assert!(
            gone.is_empty() && new.is_empty(),
            "kbs check changed a host: before {gone:?}, after {new:?}"
        );
    }

    // 1. A loose private key.
    lab.exec("node-2", "chmod 644 /etc/kubernetes/pki/apiserver.key");
    assert_fails(
        &inv,
        s,
        "node-2",
        "key-files",
        "/etc/kubernetes/pki/apiserver.key 0644",
    );
    lab.exec("node-2", "chmod 600 /etc/kubernetes/pki/apiserver.key");

    // 2. etcd open to clients without a certificate: the env file and the live probe. etcd 3.4
    //    still demands a client certificate while ETCD_TRUSTED_CA_FILE is set (found here:
    //    CLIENT_CERT_AUTH=false alone is still refused), so the CA line goes too.
    let endpoint = format!("https://{}:2379", lab.ip(13));
    assert!(
        !health_without_client_cert(s, &endpoint),
        "etcd answered without a client cert"
    );
    lab.exec(
        "node-3",
        "cp -p /etc/kbs/etcd/node-3.env /root/node-3.env.orig && \
         sed -i -e 's/^ETCD_CLIENT_CERT_AUTH=true/ETCD_CLIENT_CERT_AUTH=false/' \
                -e 's/^ETCD_TRUSTED_CA_FILE=/#ETCD_TRUSTED_CA_FILE=/' /etc/kbs/etcd/node-3.env",
    );
    restart_member(&lab, "node-3");
    assert!(
        health_without_client_cert(s, &endpoint),
        "with client-cert-auth off, etcdctl with only --cacert gets through"
    );
    assert_fails(
        &inv,
        s,
        "node-3",
        "etcd-client-auth",
        "HTTPS without a client certificate got an answer",
    );
    lab.exec(
        "node-3",
        "mv /root/node-3.env.orig /etc/kbs/etcd/node-3.env",
    );
    restart_member(&lab, "node-3");
    assert!(!health_without_client_cert(s, &endpoint));

    // 3. Swap. `swapon` is not possible here (no swap-capable file system in the container, and
    //    the kernel is the Docker host's, so it would change the host): check reads /proc/swaps
    //    (unit-tested) and /etc/fstab, and a swap entry in fstab, which turns swap on at boot,
    //    stands in for active swap.
    lab.exec(
        "node-1",
        "cp -p /etc/fstab /root/fstab.orig && echo '/swapfile none swap sw 0 0' >> /etc/fstab",
    );
    assert_fails(&inv, s, "node-1", "swap", "/swapfile");
    lab.exec("node-1", "mv /root/fstab.orig /etc/fstab");

    // 4. Root may log in with a password.
    lab.exec(
        "node-2",
        "cp -p /etc/ssh/sshd_config.d/kbs-lab.conf /root/kbs-lab.conf.orig && \
         sed -i 's/^PermitRootLogin .*/PermitRootLogin yes/' /etc/ssh/sshd_config.d/kbs-lab.conf",
    );
    assert_fails(&inv, s, "node-2", "ssh-root-login", "PermitRootLogin yes");
    lab.exec(
        "node-2",
        "mv /root/kbs-lab.conf.orig /etc/ssh/sshd_config.d/kbs-lab.conf",
    );

    // 5. An expired certificate on a host (front-proxy-client: the stand-in does not use it).
    lab.exec(
        "node-3",
        &format!(
            "cp -p /etc/kubernetes/pki/front-proxy-client.crt /root/fpc.crt.orig && \
             cat > /etc/kubernetes/pki/front-proxy-client.crt <<'EOF'\n{}EOF",
            expired_pem()
        ),
    );
    assert_fails(
        &inv,
        s,
        "node-3",
        "cert-expiry",
        "/etc/kubernetes/pki/front-proxy-client.crt expired",
    );
    lab.exec(
        "node-3",
        "mv /root/fpc.crt.orig /etc/kubernetes/pki/front-proxy-client.crt",
    );

    // 6. A controller-manager flag (the stand-in writes the static pod manifest kubeadm would).
    let manifest = "/etc/kubernetes/manifests/kube-controller-manager.yaml";
    lab.exec(
        "node-2",
        &format!(
            "cp -p {manifest} /root/kcm.yaml.orig && sed -i 's/--profiling=false/--profiling=true/' {manifest}"
        ),
    );
    assert_fails(
        &inv,
        s,
        "node-2",
        "controller-manager-flags",
        "--profiling=true (want false)",
    );
    lab.exec("node-2", &format!("mv /root/kcm.yaml.orig {manifest}"));

    // 7. A baseline object deleted by hand: check names it, and apply puts it back.
    lab.exec(
        "node-1",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf delete networkpolicy kbs-default-deny -n shop",
    );
    assert_fails(
        &inv,
        s,
        "cluster",
        "namespace-baseline",
        "NetworkPolicy kbs-default-deny missing",
    );
    // A dry run says what apply would do, and does nothing.
    let dry = apply(&inv, s, &["--dry-run"]);
    assert!(
        dry.contains(
            "would kubectl apply -f /etc/kbs/baselines/shop.yaml (namespace baseline shop: differs from the cluster)"
        ),
        "{dry}"
    );
    let out = apply(&inv, s, &[]);
    assert!(
        out.contains("(namespace baseline shop: differs from the cluster)"),
        "{out}"
    );

    // Everything restored: clean again.
    assert_clean(&inv, s);
}
