//! `kbs apply` and `kbs add-node` end to end on lab hosts: real sshd, systemd, etcd, haproxy and
//! keepalived; only kubeadm, kubelet and the API server are the lab's stand-ins.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) use crate::common::ok;
use crate::common::{kill_at, run_kbs};
use crate::lab::{Lab, up};

/// Everything kbs writes on a host, for "nothing was rewritten" checks.
const WATCHED: &str = "/etc/kubernetes /etc/kbs /etc/haproxy /etc/keepalived /etc/systemd/system /etc/sysctl.d /etc/modules-load.d /etc/containerd /usr/local/bin /usr/local/lib/kbs-standins";

pub(crate) fn apply(lab: &Lab, state: &Path, args: &[&str]) -> std::process::Output {
    run_kbs(
        &[args.first().copied().unwrap_or("apply")],
        &lab.inventory(),
        state,
        args.get(1..).unwrap_or_default(),
    )
}

/// `s` without whitespace and table borders: error reports and tables wrap long lines.
pub(crate) fn flat(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '│' | '┆'))
        .collect()
}

/// Path, mtime and mode of every file kbs manages on `host`.
pub(crate) fn files(lab: &Lab, host: &str) -> String {
    lab.exec(
        host,
        &format!("find {WATCHED} -type f -printf '%p %T@ %m\\n' 2>/dev/null | sort"),
    )
}

/// etcdctl's endpoint and client-certificate flags: the state dir's apiserver-etcd-client.
pub(crate) fn etcd_client_args(state: &Path, endpoints: &[String]) -> Vec<String> {
    let pki = state.join("pki");
    vec![
        format!("--endpoints={}", endpoints.join(",")),
        format!("--cacert={}", pki.join("etcd/ca.crt").display()),
        format!("--cert={}", pki.join("apiserver-etcd-client.crt").display()),
        format!("--key={}", pki.join("apiserver-etcd-client.key").display()),
    ]
}

/// `etcdctl` on this machine with the state dir's apiserver-etcd-client certificate.
pub(crate) fn etcdctl(state: &Path, endpoints: &[String], args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(etcd_client_args(state, endpoints))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("etcdctl (apt-get install etcd-client)")
}

pub(crate) fn members(state: &Path, endpoints: &[String]) -> usize {
    let out = etcdctl(state, endpoints, &["member", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

pub(crate) fn assert_etcd_healthy(state: &Path, endpoints: &[String]) {
    let out = etcdctl(state, endpoints, &["endpoint", "health"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("is healthy").count(),
        endpoints.len(),
        "{text}"
    );
}

/// Client URLs of the members on nodes `nodes` at `ports`.
pub(crate) fn endpoints(lab: &Lab, nodes: &[u8], ports: &[u16]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| {
            ports
                .iter()
                .map(move |p| format!("https://{}:{p}", lab.ip(10 + n)))
        })
        .collect()
}

pub(crate) fn node_names(lab: &Lab, state: &Path) -> BTreeSet<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = kbs::context::api::admin_client(&kbs::state::StateDir::new(state))
        .expect("admin kubeconfig");
    assert_eq!(
        api.server,
        format!("https://{}:8443", lab.ip(100)),
        "admin.conf points at the endpoint"
    );
    // Right after a host is killed or the front restarted, the VIP may be moving: retry a while.
    let started = Instant::now();
    loop {
        match rt.block_on(api.nodes()) {
            Ok(nodes) => return nodes.into_iter().filter_map(|n| n.metadata.name).collect(),
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                panic!("the API lists no nodes with the admin kubeconfig: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The endpoint's TLS certificate verifies, for the VIP, against the state dir's CA.
fn assert_endpoint_tls(lab: &Lab, state: &Path) {
    let vip = lab.ip(100);
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("{vip}:8443")])
        .args(["-verify_return_error", "-verify_ip", &vip, "-CAfile"])
        .arg(state.join("pki/ca.crt"))
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
}

pub(crate) fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn lab_three_control_planes_and_a_worker_then_no_changes_then_add_node() {
    let Some(lab) = up(&["4"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let out = ok(&apply(&lab, state.path(), &["apply"]));
    assert!(out.contains("changed on 4 hosts"), "{out}");
    assert_etcd_healthy(state.path(), &endpoints(&lab, &[1, 2, 3], &[2379]));
    assert_endpoint_tls(&lab, state.path());
    assert_eq!(
        node_names(&lab, state.path()),
        set(&["node-1", "node-2", "node-3", "node-4"])
    );
    // From the bundle: every image kubeadm lists for the version (as its own `config images list`
    // names them under the lab registry, minus etcd, which kbs runs) is in containerd on every
    // control plane, the node-wide ones on the worker too; etcd is the pinned build.
    let registry = format!("{}:5000", lab.ip(3));
    let listed = lab.exec(
        "node-1",
        &format!(
            "kubeadm config images list --kubernetes-version v1.37.1 --image-repository {registry}"
        ),
    );
    let wanted: Vec<&str> = listed.lines().filter(|l| !l.contains("/etcd:")).collect();
    assert_eq!(wanted.len(), 6, "{listed}");
    for n in 1..=4 {
        let host = format!("node-{n}");
        let have = lab.exec(&host, "ctr -n k8s.io images ls -q");
        for image in &wanted {
            let control_plane_only = [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ]
            .iter()
            .any(|c| image.contains(&format!("/{c}:")));
            if n <= 3 || !control_plane_only {
                assert!(
                    have.lines().any(|l| l == *image),
                    "{host} lacks {image}: {have}"
                );
            }
        }
        if n <= 3 {
            let etcd = lab.exec(&host, "etcd --version | head -n 1");
            assert!(etcd.contains("etcd Version: 3.5.30"), "{host}: {etcd}");
        }
    }

    // A second run changes nothing, and rewrites no file.
    let before: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    let out = ok(&apply(&lab, state.path(), &["apply"]));
    assert!(out.starts_with("no changes"), "{out}");
    let after: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    assert_eq!(before, after);

    // Another run holds the lock on node-4: apply stops before any change, saying who holds it.
    lab.exec(
        "node-4",
        "echo 'kbs pid 7 on elsewhere since then' > /run/lock/kbs.lock.owner; \
         (flock --close /run/lock/kbs.lock sleep 600 >/dev/null 2>&1 &)",
    );
    let out = apply(&lab, state.path(), &["apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        flat(&err).contains(&flat(
            "node-4: another run is changing this cluster: kbs pid 7 on elsewhere"
        )),
        "{err}"
    );
    // --close: the lock is flock's own, not its child's; `-x` spares this very shell.
    lab.exec("node-4", "pkill -x flock");
    let after: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    assert_eq!(before, after);

    // A fifth host joins; nothing on the other four changes. A sixth, already in the inventory,
    // waits for its own add-node.
    lab.cmd(&["up", "6"]);
    let out = ok(&apply(
        &lab,
        state.path(),
        &["add-node", "--host", "node-5"],
    ));
    assert!(
        out.contains("node-5:") && out.contains("kubeadm join") && !out.contains("node-1:"),
        "{out}"
    );
    assert_eq!(
        node_names(&lab, state.path()),
        set(&["node-1", "node-2", "node-3", "node-4", "node-5"])
    );
    let after: Vec<String> = (1..=4).map(|i| files(&lab, &format!("node-{i}"))).collect();
    assert_eq!(before, after, "add-node touched another host");
}

#[test]
fn lab_single_host() {
    let Some(lab) = up(&["1"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    ok(&apply(&lab, state.path(), &["apply"]));
    assert_etcd_healthy(state.path(), &endpoints(&lab, &[1], &[2379]));
    assert_endpoint_tls(&lab, state.path());
    assert_eq!(node_names(&lab, state.path()), set(&["node-1"]));
}

/// Polls GET /readyz through the VIP until it answers 200; returns how long that took.
fn readyz_through_vip(state: &Path, limit: Duration) -> Duration {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kbs::context::api::Api { client, server } =
        kbs::context::api::admin_client(&kbs::state::StateDir::new(state)).expect("client");
    let started = Instant::now();
    rt.block_on(async {
        loop {
            let short = tokio::time::timeout(
                Duration::from_secs(1),
                client.get(format!("{server}/readyz")).send(),
            )
            .await;
            if let Ok(Ok(r)) = short
                && r.status().is_success()
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "the endpoint did not answer within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[test]
fn lab_two_hosts_keep_serving_without_the_host_that_has_no_etcd() {
    let Some(lab) = up(&["2"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    ok(&apply(&lab, state.path(), &["apply"]));
    // All three members on node-1 (equal reliability: the first host).
    let members_on_1 = endpoints(&lab, &[1], &[2379, 12379, 22379]);
    assert_etcd_healthy(state.path(), &members_on_1);
    assert_eq!(members(state.path(), &members_on_1), 3);
    assert_eq!(node_names(&lab, state.path()), set(&["node-1", "node-2"]));

    lab.cmd(&["kill", "node-2"]);
    readyz_through_vip(state.path(), Duration::from_secs(15));
    assert_etcd_healthy(state.path(), &members_on_1);
    assert!(node_names(&lab, state.path()).contains("node-1"));
}

#[test]
fn lab_three_hosts_lose_the_vip_holder_and_keep_quorum() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    ok(&apply(&lab, state.path(), &["apply"]));
    let holder = (1..=3)
        .map(|i| format!("node-{i}"))
        .find(|h| {
            lab.exec(h, "ip -o addr show")
                .contains(&format!(" {}/", lab.ip(100)))
        })
        .expect("a host holds the VIP");
    lab.cmd(&["kill", &holder]);
    let took = readyz_through_vip(state.path(), Duration::from_secs(30));
    assert!(
        took < Duration::from_secs(5),
        "the endpoint answered again only after {took:?}"
    );
    let survivors: Vec<u8> = (1..=3).filter(|i| format!("node-{i}") != holder).collect();
    let survivors = endpoints(&lab, &survivors, &[2379]);
    assert_etcd_healthy(state.path(), &survivors);
}

#[test]
fn lab_killing_kbs_in_any_phase_then_applying_again_converges() {
    let Some(lab) = up(&["3"]) else { return };
    for marker in [
        "facts started",
        "artifacts started",
        "etcd started",
        "front started",
        "kubeadm/init started",
        "kubeadm/join-control-plane started",
        "cni started",
        "verify started",
    ] {
        lab.cmd(&["down"]);
        lab.cmd(&["up", "3"]);
        let state = tempfile::tempdir().expect("tmp");
        kill_at(
            "apply",
            &lab.inventory(),
            state.path(),
            marker,
            Duration::from_millis(400),
        );

        let out = ok(&apply(&lab, state.path(), &["apply"]));
        assert!(out.contains("admin kubeconfig"), "{out}");
        let all = endpoints(&lab, &[1, 2, 3], &[2379]);
        assert_etcd_healthy(state.path(), &all);
        assert_eq!(
            members(state.path(), &all),
            3,
            "no duplicate etcd member after killing at `{marker}`"
        );
        assert_eq!(
            node_names(&lab, state.path()),
            set(&["node-1", "node-2", "node-3"])
        );
        let out = ok(&apply(&lab, state.path(), &["apply"]));
        assert!(
            out.starts_with("no changes"),
            "after killing at `{marker}`: {out}"
        );
    }
}

fn fails(lab: &Lab, state: &Path, inventory: &Path) -> String {
    // The hosts may hold an earlier test's cluster: "nothing changed" is judged against a mark.
    for h in ["node-1", "node-3"] {
        lab.exec(h, "touch /run/kbs-test-mark");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let out = run_kbs(&["apply"], inventory, state, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nothing was changed anywhere: kbs writes nothing before preflight passes.
    for h in ["node-1", "node-3"] {
        assert_eq!(
            lab.exec(
                h,
                "find /etc/kbs /etc/kubernetes /etc/systemd/system /usr/local/bin -newer /run/kbs-test-mark 2>/dev/null | head -3"
            )
            .trim(),
            "",
            "{h}"
        );
    }
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn lab_bad_input_is_a_clear_error_and_changes_nothing() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let text = std::fs::read_to_string(lab.inventory()).expect("inventory");

    // A host that is down.
    lab.cmd(&["kill", "node-2"]);
    let err = fails(&lab, state.path(), &lab.inventory());
    assert!(
        err.contains(&format!("node-2: cannot connect to {}:22", lab.ip(12)))
            || err.contains("node-2: no SSH answer"),
        "{err}"
    );
    assert!(err.contains("nothing was changed on any host"), "{err}");
    lab.cmd(&["start", "node-2"]);

    // A key the hosts do not accept.
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("stranger");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen")
            .success()
    );
    let identity = text
        .lines()
        .find(|l| l.starts_with("identity_file"))
        .expect("identity_file");
    let wrong_key = dir.path().join("wrong-key.toml");
    std::fs::write(
        &wrong_key,
        text.replace(identity, &format!("identity_file = \"{}\"", key.display())),
    )
    .expect("write");
    let err = fails(&lab, state.path(), &wrong_key);
    assert!(
        err.contains("node-1: ") && err.to_lowercase().contains("auth"),
        "{err}"
    );

    // node-2 presents another key than the one pinned for it.
    let keys: Vec<&str> = text.lines().filter(|l| l.starts_with("host_key")).collect();
    let changed = dir.path().join("changed-key.toml");
    std::fs::write(&changed, text.replacen(keys[1], keys[2], 1)).expect("write");
    let err = fails(&lab, state.path(), &changed);
    assert!(err.contains("node-2: HOST KEY CHANGED"), "{err}");

    // A firewall on node-2 drops etcd's peer traffic from node-3: preflight names the port.
    let drop = format!(
        "iptables -A INPUT -p tcp --dport 2380 -s {} -j DROP",
        lab.ip(13)
    );
    lab.exec("node-2", &drop);
    let out = run_kbs(&["apply"], &lab.inventory(), state.path(), &[]);
    lab.exec("node-2", &drop.replace("-A INPUT", "-D INPUT"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("reachability on node-3"), "{err}");
    assert!(
        flat(&err).contains(&flat("no answer from node-2:2380")),
        "{err}"
    );
}

#[test]
fn lab_hooks_run_before_and_after_apply_and_a_failing_one_stops_it() {
    let Some(lab) = up(&["1"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let text = std::fs::read_to_string(lab.inventory()).expect("inventory");
    let inv = state.path().join("inventory.toml");
    let hooks = |check: &str| {
        format!(
            "{text}\n[[hook]]\nname = \"disk-check\"\nwhen = \"before-apply\"\nhosts = [\"node-1\"]\nrun = \"echo checking the disk; {check}\"\n\n\
             [[hook]]\nname = \"mark\"\nwhen = \"after-apply\"\nroles = [\"control-plane\"]\nrun = \"echo applied > /root/kbs-after-apply\"\n"
        )
    };
    std::fs::write(&inv, hooks("exit 3")).expect("write");
    let dry = ok(&run_kbs(&["apply"], &inv, state.path(), &["--dry-run"]));
    assert!(
        dry.contains("would run the before-apply hook `disk-check`"),
        "{dry}"
    );
    let out = run_kbs(&["apply"], &inv, state.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("node-1: hook/disk-check failed: exit status 3: checking the disk"),
        "{err}"
    );
    let left = lab.exec("node-1", "ls /etc/kubernetes /etc/kbs 2>/dev/null | wc -l");
    assert_eq!(
        left.trim(),
        "0",
        "a failing before-apply hook stops apply before any change"
    );

    std::fs::write(&inv, hooks("true")).expect("write");
    ok(&run_kbs(&["apply"], &inv, state.path(), &[]));
    assert_eq!(
        lab.exec("node-1", "cat /root/kbs-after-apply").trim(),
        "applied"
    );
}

#[test]
fn lab_kubelet_serving_csrs_are_approved_only_for_the_nodes_own_names() {
    let Some(lab) = up(&["1"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    ok(&apply(&lab, state.path(), &["apply"]));
    // The kubelet filed its kubelet-serving CSR; apply checked and approved it; it has its cert.
    let csrs = crate::common::api_get(
        state.path(),
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
    );
    let serving: Vec<&serde_json::Value> = csrs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kubelet-serving")
        .collect();
    assert_eq!(serving.len(), 1, "{csrs:#}");
    assert_eq!(serving[0]["spec"]["username"], "system:node:node-1");
    assert_eq!(
        serving[0]["status"]["conditions"][0]["reason"],
        "KbsApproved"
    );
    lab.exec(
        "node-1",
        "for i in $(seq 1 30); do [ -s /var/lib/kubelet/pki/kubelet-server-current.pem ] && exit 0; sleep 1; done; exit 1",
    );

    // A request from node-1 for a name that is not its own is refused, and says so.
    lab.exec(
        "node-1",
        "systemctl stop kubelet; rm -f /var/lib/kubelet/pki/kubelet-server*; \
         python3 - <<'PY'\n\
import base64, json, ssl, subprocess, urllib.request, yaml\n\
kc = yaml.safe_load(open('/etc/kubernetes/kubelet.conf'))\n\
u = kc['users'][0]['user']; cl = kc['clusters'][0]['cluster']\n\
open('/tmp/c.pem','wb').write(base64.b64decode(u['client-certificate-data']) if 'client-certificate-data' in u else open(u['client-certificate'],'rb').read())\n\
open('/tmp/k.pem','wb').write(base64.b64decode(u['client-key-data']) if 'client-key-data' in u else open(u['client-key'],'rb').read())\n\
open('/tmp/ca.pem','wb').write(base64.b64decode(cl['certificate-authority-data']))\n\
subprocess.run(['openssl','ecparam','-name','prime256v1','-genkey','-noout','-out','/tmp/s.key'], check=True)\n\
csr = subprocess.run(['openssl','req','-new','-key','/tmp/s.key','-subj','/O=system:nodes/CN=system:node:node-1','-addext','subjectAltName=DNS:node-1,DNS:evil.example'], check=True, capture_output=True).stdout\n\
ctx = ssl.create_default_context(cafile='/tmp/ca.pem'); ctx.load_cert_chain('/tmp/c.pem','/tmp/k.pem')\n\
body = {'apiVersion':'certificates.k8s.io/v1','kind':'CertificateSigningRequest','metadata':{'name':'forged'},'spec':{'request':base64.b64encode(csr).decode(),'signerName':'kubernetes.io/kubelet-serving','usages':['digital signature','server auth']}}\n\
req = urllib.request.Request(cl['server']+'/apis/certificates.k8s.io/v1/certificatesigningrequests', data=json.dumps(body).encode(), headers={'Content-Type':'application/json'})\n\
urllib.request.urlopen(req, context=ctx)\n\
PY",
    );
    let out = run_kbs(&["apply"], &lab.inventory(), state.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "request forged from system:node:node-1 is not approved: it asks for evil.example"
        ),
        "{err}"
    );
    let forged = crate::common::api_get(
        state.path(),
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/forged",
    );
    assert!(forged["status"]["conditions"].is_null(), "{forged:#}");
    // The kubelet's own request, filed after it, is approved.
    std::thread::sleep(Duration::from_secs(1));
    lab.exec("node-1", "systemctl start kubelet");
    ok(&apply(&lab, state.path(), &["apply"]));
    lab.exec(
        "node-1",
        "for i in $(seq 1 30); do [ -s /var/lib/kubelet/pki/kubelet-server-current.pem ] && exit 0; sleep 1; done; exit 1",
    );
}
