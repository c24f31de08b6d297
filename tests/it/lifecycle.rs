//! Day-two lifecycle on lab hosts: `kbs certs renew` on a running cluster (also with expired
//! certificates), `kbs remove-node` (worker, etcd carrier with and without --force, dead host)
//! and `kbs reset` followed by a fresh `kbs apply`. Every assertion reads the hosts: what they
//! serve over TLS, real etcdctl, the API's node list, files and units.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kbs::inventory::Inventory;
use kbs::plan::ClusterPlan;
use kbs::state::StateDir;

use crate::apply::{
    apply, assert_etcd_healthy, endpoints, files, flat, members, node_names, ok, set,
};
use crate::common::{kbs, run_kbs};
use crate::lab::{Lab, up};

fn run(lab: &Lab, state: &Path, sub: &[&str], extra: &[&str]) -> std::process::Output {
    run_kbs(sub, &lab.inventory(), state, extra)
}

/// `kbs certs check INVENTORY --state-dir S --hosts`
fn check_hosts(lab: &Lab, state: &Path) -> std::process::Output {
    check_hosts_of(&lab.inventory(), state)
}

fn check_hosts_of(inventory: &Path, state: &Path) -> std::process::Output {
    kbs()
        .args(["certs", "check"])
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .arg("--hosts")
        .output()
        .expect("run kbs")
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Serial and expiry of what `addr` serves, waiting up to 60 s for it to listen: a restarted
/// API server (real or stand-in) takes seconds before it accepts connections.
fn served(addr: &str) -> kbs::pki::CertInfo {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr: SocketAddr = addr.parse().expect("address");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match rt.block_on(kbs::ops::served::served_cert(addr)) {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() > deadline => panic!("TLS to {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Every etcd client port and API server of a 3-host lab.
fn tls_endpoints(lab: &Lab) -> Vec<String> {
    (1..=3)
        .flat_map(|n| {
            let ip = lab.ip(10 + n);
            [format!("{ip}:2379"), format!("{ip}:6443")]
        })
        .collect()
}

/// Polls /readyz through the VIP every 300 ms until stopped.
pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Availability>,
}

/// What a [`Poller`] saw.
pub(crate) struct Availability {
    pub(crate) good: u32,
    /// Each failed probe: when (since the poller started) and why.
    pub(crate) failures: Vec<(Duration, String)>,
    pub(crate) longest: Duration,
}

impl Availability {
    /// The API stayed up through `what`: at most one probe in ten failed and no outage lasted
    /// over 3 s. Otherwise panics with every failure, timed, to tell an API server restart from
    /// an etcd leader change.
    pub(crate) fn assert_up(&self, what: &str) {
        let bad = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        assert!(
            self.good >= 10,
            "the poller hardly ran during {what}: {} answers, {bad} failures",
            self.good
        );
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(t, why)| format!("  at {:.1}s: {why}", t.as_secs_f64()))
            .collect();
        eprintln!(
            "availability during {what}: {} answered, {bad} failed\n{}",
            self.good,
            failures.join("\n")
        );
        assert!(
            bad * 10 <= self.good + bad && self.longest <= Duration::from_secs(3),
            "the API was down too long during {what}: {} answered, {bad} failed, longest outage {:?}\n{}",
            self.good,
            self.longest,
            failures.join("\n")
        );
    }
}

impl Poller {
    pub(crate) fn start(state: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let kbs::context::api::Api { client, server } =
            kbs::context::api::admin_client(&StateDir::new(state)).expect("admin client");
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let start = Instant::now();
            let mut seen = Availability {
                good: 0,
                failures: Vec::new(),
                longest: Duration::ZERO,
            };
            let mut down_since: Option<Instant> = None;
            while !flag.load(Ordering::Relaxed) {
                let at = start.elapsed();
                let r = rt.block_on(async {
                    let resp = tokio::time::timeout(
                        Duration::from_secs(3),
                        client.get(format!("{server}/readyz?verbose")).send(),
                    )
                    .await
                    .map_err(|_| "no answer within 3 s".to_string())?
                    .map_err(|e| format!("{e:?}"))?;
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("{status}: {}", body.trim()))
                    }
                });
                match r {
                    Ok(()) => {
                        seen.good += 1;
                        if let Some(t) = down_since.take() {
                            seen.longest = seen.longest.max(t.elapsed());
                        }
                    }
                    Err(why) => {
                        seen.failures.push((at, why));
                        down_since.get_or_insert_with(Instant::now);
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            if let Some(t) = down_since {
                seen.longest = seen.longest.max(t.elapsed());
            }
            seen
        });
        Self { stop, handle }
    }

    pub(crate) fn finish(self) -> Availability {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("poller")
    }
}

/// Puts the state dir's certificates on the hosts as they are, bypassing kbs (to plant expired
/// ones), through kbs's SSH engine with the lab's pinned host keys.
fn push_pki(lab: &Lab, state: &Path) {
    let plan = ClusterPlan::new(Inventory::load(&lab.inventory()).expect("inventory"));
    let all = kbs::pki::host_files(&plan, &StateDir::new(state));
    let (_tmp, connector) = crate::lab::connector();
    let targets = lab.targets(None);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        for hf in all {
            let t = targets.iter().find(|t| t.name == hf.host).expect("target");
            let s = connector.session(t).await.expect("ssh");
            for f in hf.files {
                let content = std::fs::read(&f.local).expect("local file");
                let attrs = kbs::ssh::FileAttrs {
                    mode: f.mode,
                    owner: f.owner.map(str::to_string),
                    sudo: true,
                };
                s.upload(&f.remote.to_string_lossy(), &content, &attrs)
                    .await
                    .expect("upload");
            }
        }
        connector.disconnect_all().await;
    });
}

#[test]
fn lab_certs_renew_rolls_without_api_outage_and_recovers_expired_certificates() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    ok(&apply(&lab, state.path(), &["apply"]));
    let eps = endpoints(&lab, &[1, 2, 3], &[2379]);
    let before: Vec<String> = tls_endpoints(&lab)
        .iter()
        .map(|a| served(a).serial)
        .collect();

    // Renewal of a healthy cluster: rolling, the API answers through the VIP all along.
    let poller = Poller::start(state.path());
    std::thread::sleep(Duration::from_secs(2));
    let out = run(&lab, state.path(), &["certs", "renew"], &[]);
    std::thread::sleep(Duration::from_secs(1));
    let seen = poller.finish();
    let log = ok(&out);
    assert!(!log.contains("restarted together"), "{log}");
    let after: Vec<String> = tls_endpoints(&lab)
        .iter()
        .map(|a| served(a).serial)
        .collect();
    for ((addr, b), a) in tls_endpoints(&lab).iter().zip(&before).zip(&after) {
        assert_ne!(b, a, "{addr} still serves its old certificate");
    }
    seen.assert_up("certs renew");
    assert_etcd_healthy(state.path(), &eps);
    let check = check_hosts(&lab, state.path());
    assert!(check.status.success(), "{}", text(&check));
    assert_eq!(members(state.path(), &eps), 3);

    // Expired leaves, planted on every host and served: etcd peers reject each other, the API is
    // down. Renewal over SSH brings everything back.
    let plan = ClusterPlan::new(Inventory::load(&lab.inventory()).expect("inventory"));
    let days = i64::from(plan.inventory.pki.cert_validity_days) + 10;
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    kbs::pki::renew_at(&plan, &StateDir::new(state.path()), past).expect("renew_at");
    push_pki(&lab, state.path());
    for n in 1..=3 {
        lab.exec(
            &format!("node-{n}"),
            "systemctl restart --no-block 'kbs-etcd@*' kube-apiserver-standin.service",
        );
    }
    std::thread::sleep(Duration::from_secs(5));
    // etcd serves clients only once its peers form a quorum, which expired peer certificates
    // prevent: its client port accepts TCP but completes no handshake.
    let health = crate::apply::etcdctl(state.path(), &eps, &["endpoint", "health"]);
    assert!(
        !health.status.success(),
        "etcd is healthy with expired certificates"
    );
    for n in 1..=3 {
        let addr = format!("{}:6443", lab.ip(10 + n));
        let c = served(&addr);
        assert!(
            c.not_after < time::OffsetDateTime::now_utc(),
            "{addr} does not serve an expired certificate"
        );
    }
    let check = check_hosts(&lab, state.path());
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    assert!(text(&check).contains("expired"), "{}", text(&check));

    let log = ok(&run(&lab, state.path(), &["certs", "renew"], &[]));
    assert!(log.contains("restarted together"), "{log}");
    for addr in tls_endpoints(&lab) {
        let c = served(&addr);
        assert!(
            c.not_after > time::OffsetDateTime::now_utc() + time::Duration::days(30),
            "{addr} still serves an expired certificate"
        );
    }
    assert_etcd_healthy(state.path(), &eps);
    assert_eq!(
        node_names(&lab, state.path()),
        set(&["node-1", "node-2", "node-3"])
    );

    // Certificates 15 days from expiry, on every host and served: `kbs apply` renews them
    // (pki.renew_before_days = 30) and rolls them out, API servers one at a time.
    let soon = time::OffsetDateTime::now_utc() - time::Duration::days(350);
    kbs::pki::renew_at(&plan, &StateDir::new(state.path()), soon).expect("renew_at");
    push_pki(&lab, state.path());
    for n in 1..=3 {
        lab.exec(
            &format!("node-{n}"),
            "systemctl restart 'kbs-etcd@*' kube-apiserver-standin.service",
        );
    }
    assert_etcd_healthy(state.path(), &eps);
    for addr in tls_endpoints(&lab) {
        served(&addr);
    }
    let expiring = check_hosts(&lab, state.path());
    assert_eq!(expiring.status.code(), Some(1), "{}", text(&expiring));
    let poller = Poller::start(state.path());
    let log = ok(&run(&lab, state.path(), &["apply"], &[]));
    let seen = poller.finish();
    assert!(
        log.contains("restart the API server, controller-manager and scheduler (new certificates)"),
        "{log}"
    );
    seen.assert_up("apply's renewal");
    for addr in tls_endpoints(&lab) {
        let c = served(&addr);
        assert!(
            c.not_after > time::OffsetDateTime::now_utc() + time::Duration::days(300),
            "{addr} still serves a certificate close to expiry"
        );
    }
    let check = check_hosts(&lab, state.path());
    assert!(check.status.success(), "{}", text(&check));
    assert_etcd_healthy(state.path(), &eps);

    // SAN drift: the inventory now asks for another API server name; what the hosts serve lacks
    // it until apply re-issues and rolls the certificates out.
    let inv = state.path().join("inventory.toml");
    let text3 = std::fs::read_to_string(lab.inventory()).expect("inventory");
    std::fs::write(
        &inv,
        format!("{text3}\n[pki]\nextra_sans = [\"api.edge.test\"]\n"),
    )
    .expect("write");
    let drift = check_hosts_of(&inv, state.path());
    assert_eq!(drift.status.code(), Some(2), "{}", text(&drift));
    assert!(
        text(&drift).contains("SAN drift: lacks api.edge.test"),
        "{}",
        text(&drift)
    );
    ok(&run_kbs(&["apply"], &inv, state.path(), &[]));
    let fixed = check_hosts_of(&inv, state.path());
    assert!(fixed.status.success(), "{}", text(&fixed));
}

fn nothing_left(lab: &Lab, host: &str) {
    let left = lab.exec(
        host,
        "for p in /etc/kubernetes /etc/kbs /var/lib/kubelet /etc/systemd/system/kbs-etcd@.service /etc/haproxy/haproxy.cfg /etc/keepalived/keepalived.conf /var/lib/etcd/member; do [ -e $p ] && echo $p; done; \
         systemctl list-units --plain --no-legend --state=running 'kbs-etcd@*' kube-apiserver-standin.service kubelet.service haproxy.service keepalived.service | awk '{print $1}'; \
         ls /etc/systemd/system/*.wants/ | grep kbs-etcd; true",
    );
    assert_eq!(left.trim(), "", "{host} still has: {left}");
}

#[test]
fn lab_remove_node_worker_then_quorum_refusal_then_forced_etcd_host() {
    let Some(lab) = up(&["4"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    ok(&apply(&lab, state.path(), &["apply"]));
    let eps = endpoints(&lab, &[1, 2, 3], &[2379]);
    let cps: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    let before: Vec<String> = cps.iter().map(|h| files(&lab, h)).collect();

    // The worker: drained (cordoned), reset, its Node gone; the control planes untouched.
    let out = ok(&run(
        &lab,
        state.path(),
        &["remove-node"],
        &["--host", "node-4"],
    ));
    assert!(out.contains("cordoned Node node-4"), "{out}");
    assert!(out.contains("deleted Node node-4"), "{out}");
    assert!(out.contains("remove the [[host]] block"), "{out}");
    assert!(out.contains("tolerates the loss of 1 host"), "{out}");
    assert_eq!(
        node_names(&lab, state.path()),
        set(&["node-1", "node-2", "node-3"])
    );
    nothing_left(&lab, "node-4");
    let after: Vec<String> = cps.iter().map(|h| files(&lab, h)).collect();
    assert_eq!(before, after, "removing the worker touched a control plane");
    assert_eq!(members(state.path(), &eps), 3);

    // node-3 carries an etcd member: 3 → 2 members keeps quorum but tolerates nothing more.
    let out = run(&lab, state.path(), &["remove-node"], &["--host", "node-3"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("tolerates no further member failure"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(
        members(state.path(), &eps),
        3,
        "a refused removal changed etcd"
    );
    assert_eq!(files(&lab, "node-3"), before[2]);

    // With --force: member removed, host reset, the front of node-1/node-2 drops it.
    let out = ok(&run(
        &lab,
        state.path(),
        &["remove-node"],
        &["--host", "node-3", "--force"],
    ));
    assert!(out.contains("removed etcd member node-3"), "{out}");
    assert!(out.contains("front: "), "{out}");
    let eps2 = endpoints(&lab, &[1, 2], &[2379]);
    assert_eq!(members(state.path(), &eps2), 2);
    assert_etcd_healthy(state.path(), &eps2);
    nothing_left(&lab, "node-3");
    let node3 = lab.ip(13);
    for h in ["node-1", "node-2"] {
        let cfg = lab.exec(h, "cat /etc/haproxy/haproxy.cfg");
        assert!(
            !cfg.contains(&node3),
            "{h}'s haproxy still balances to node-3:\n{cfg}"
        );
    }
    assert_eq!(node_names(&lab, state.path()), set(&["node-1", "node-2"]));
}

#[test]
fn lab_remove_dead_host() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    ok(&apply(&lab, state.path(), &["apply"]));
    lab.cmd(&["kill", "node-3"]);
    let started = Instant::now();
    let out = run(
        &lab,
        state.path(),
        &["remove-node"],
        &["--host", "node-3", "--force"],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("does not answer over SSH"), "{all}");
    assert!(all.contains("removed etcd member node-3"), "{all}");
    assert!(all.contains("deleted Node node-3"), "{all}");
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
    let eps2 = endpoints(&lab, &[1, 2], &[2379]);
    assert_eq!(members(state.path(), &eps2), 2);
    assert_etcd_healthy(state.path(), &eps2);
    assert_eq!(node_names(&lab, state.path()), set(&["node-1", "node-2"]));
}

#[test]
fn lab_reset_needs_confirmation_cleans_every_host_and_apply_rebuilds() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    ok(&apply(&lab, state.path(), &["apply"]));
    let eps = endpoints(&lab, &[1, 2, 3], &[2379]);

    // No terminal, no --yes: refused, nothing touched.
    let out = run(&lab, state.path(), &["reset"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_etcd_healthy(state.path(), &eps);

    // A state dir that did not make this cluster (a lost one, another cluster's): preflight
    // names the hosts before this run replaces a single certificate of theirs.
    let cas = "sha256sum /etc/kubernetes/pki/ca.crt /etc/kbs/etcd/pki/ca.crt";
    let held = lab.exec("node-1", cas);
    let stranger = tempfile::tempdir().expect("tmp");
    let out = apply(&lab, stranger.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for want in [
        "cluster-identity on node-1, node-2 and 1 more",
        "this state dir has none",
        "--state-dir",
    ] {
        assert!(flat(&text(&out)).contains(&flat(want)), "{}", text(&out));
    }
    assert_eq!(lab.exec("node-1", cas), held);
    assert!(
        !stranger.path().join("pki").exists(),
        "PKI made for a refused run"
    );
    assert_etcd_healthy(state.path(), &eps);

    let out = ok(&run(&lab, state.path(), &["reset"], &["--yes"]));
    assert!(out.contains("node-1: reset"), "{out}");
    for n in 1..=3 {
        nothing_left(&lab, &format!("node-{n}"));
    }
    assert!(
        state.path().join("pki/ca.crt").exists(),
        "the state dir was touched"
    );

    // A second reset finds nothing to do and succeeds; apply builds the cluster again.
    ok(&run(&lab, state.path(), &["reset"], &["--yes"]));
    ok(&apply(&lab, state.path(), &["apply"]));
    assert_etcd_healthy(state.path(), &eps);
    assert_eq!(members(state.path(), &eps), 3);
    assert_eq!(
        node_names(&lab, state.path()),
        set(&["node-1", "node-2", "node-3"])
    );
}

#[test]
fn lab_removal_advice_for_two_dead_hosts_of_five_keeps_quorum() {
    let Some(lab) = up(&["5"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let inv = state.path().join("inventory.toml");
    let text5 = std::fs::read_to_string(lab.inventory()).expect("inventory");
    std::fs::write(&inv, format!("{text5}\n[etcd]\nmembers = 5\n")).expect("write");
    ok(&run_kbs(&["apply"], &inv, state.path(), &[]));
    lab.cmd(&["kill", "node-4"]);
    lab.cmd(&["kill", "node-5"]);
    let out = run_kbs(&["status"], &inv, state.path(), &[]);
    let table = text(&out);
    assert_eq!(out.status.code(), Some(1), "degraded, not down: {table}");
    let steps: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("to remove the hosts that are down"))
        .skip(1)
        .collect();
    assert_eq!(steps.len(), 2, "{table}");
    assert!(
        steps[0].contains("--host node-4 (etcd then has 4 members, 3 up; quorum 3)"),
        "{table}"
    );
    assert!(
        steps[1].contains("--host node-5 (etcd then has 3 members, 3 up; quorum 2)"),
        "{table}"
    );
    // Following the advice works, and etcd keeps quorum throughout.
    for host in ["node-4", "node-5"] {
        let log = ok(&run_kbs(
            &["remove-node"],
            &inv,
            state.path(),
            &["--host", host],
        ));
        assert!(
            log.contains(&format!("removed etcd member {host}")),
            "{log}"
        );
        assert!(log.contains("is down: not drained"), "{log}");
    }
    let eps = endpoints(&lab, &[1, 2, 3], &[2379]);
    assert_eq!(members(state.path(), &eps), 3);
    assert_etcd_healthy(state.path(), &eps);
}
