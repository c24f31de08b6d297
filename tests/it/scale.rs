//! kbs against 1,000 simulated hosts (tests/lab/lab sim): real sshd, each on its own address
//! with its own host key, one in 20 unreachable, hung or slow. What must hold at that size:
//! connections never exceed --concurrency, every bad host is named, kbs's memory stays flat
//! from 200 to 1,000 hosts, the progress stream stays a few events per host, and no run hangs.
//! Figures (wall time, CPU) are printed by benches/scale.sh, not asserted here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab;

/// What a kbs run used, read from /proc while it ran.
struct Usage {
    stdout: String,
    stderr: String,
    success: bool,
    peak_rss_kb: u64,
    peak_sockets: usize,
    wall: Duration,
}

/// Runs kbs with `args`, sampling its peak RSS (VmHWM) and its open sockets every 20 ms.
fn measure(args: &[&str]) -> Usage {
    let started = Instant::now();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("kbs"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kbs");
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let readers = (
        std::thread::spawn(move || std::io::read_to_string(&mut out).unwrap_or_default()),
        std::thread::spawn(move || std::io::read_to_string(&mut err).unwrap_or_default()),
    );
    let (mut peak_rss_kb, mut peak_sockets) = (0, 0);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        peak_rss_kb = peak_rss_kb.max(vm_hwm_kb(&proc_dir));
        peak_sockets = peak_sockets.max(sockets(&proc_dir));
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "kbs {args:?} hung"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Usage {
        stdout: readers.0.join().expect("stdout reader"),
        stderr: readers.1.join().expect("stderr reader"),
        success: status.success(),
        peak_rss_kb,
        peak_sockets,
        wall: started.elapsed(),
    }
}

fn vm_hwm_kb(proc_dir: &Path) -> u64 {
    std::fs::read_to_string(proc_dir.join("status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn sockets(proc_dir: &Path) -> usize {
    std::fs::read_dir(proc_dir.join("fd")).map_or(0, |fds| {
        fds.flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .count()
    })
}

/// The simulated hosts of `lab sim`, by kind ("ok", "slow", "hung", "unreachable").
fn kinds(lab: &lab::Lab, kind: &str) -> BTreeSet<String> {
    std::fs::read_to_string(lab.run_dir().join("sim/kinds"))
        .expect("run/sim/kinds")
        .lines()
        .filter(|l| l.ends_with(&format!(" {kind}")))
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect()
}

/// `kbs exec` on every endpoint: the hosts it reports failed, from its summary line.
fn failed_hosts(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            l.split_once(" failed (")
                .map(|(_, rest)| rest.trim_end_matches(')'))
        })
        .map(|list| list.split(", ").map(str::to_string).collect())
        .unwrap_or_default()
}

fn exec_true(lab: &lab::Lab, concurrency: &str) -> Usage {
    let inventory = lab.run_dir().join("sim/inventory.toml");
    let inventory = inventory.to_string_lossy();
    measure(&[
        "exec",
        &inventory,
        "--log-format",
        "json",
        "--concurrency",
        concurrency,
        "--",
        "true",
    ])
}

#[test]
fn lab_thousand_simulated_hosts_stay_bounded_and_bad_ones_are_named() {
    let Some(lab) = lab::up(&["1"]) else { return };

    lab.cmd(&["sim", "200"]);
    let small = exec_true(&lab, "16");
    let bad: BTreeSet<String> = kinds(&lab, "unreachable")
        .union(&kinds(&lab, "hung"))
        .cloned()
        .collect();
    assert!(!small.success, "bad hosts must fail the run");
    assert_eq!(failed_hosts(&small.stdout), bad, "{}", small.stdout);
    assert!(
        small.peak_sockets <= 16 + 2,
        "--concurrency 16 but {} sockets open at once",
        small.peak_sockets
    );

    lab.cmd(&["sim", "1000"]);
    // 32 at once: the 1,000 sshd share the test machine's cores, and a handshake starved past
    // the 10 s connect timeout would count as a dead host.
    let big = exec_true(&lab, "32");
    let bad: BTreeSet<String> = kinds(&lab, "unreachable")
        .union(&kinds(&lab, "hung"))
        .cloned()
        .collect();
    assert_eq!(
        bad.len(),
        34,
        "one in 20 misbehaves, two thirds of them fatally"
    );
    assert_eq!(failed_hosts(&big.stdout), bad, "{}", big.stdout);
    for slow in kinds(&lab, "slow") {
        assert!(
            big.stdout.contains(&format!("── {slow} ── exit status 0")),
            "the slow host {slow} answers within the SSH timeout: {}",
            big.stdout
        );
    }
    // Each bad host is named with its cause, within the 10 s SSH connect timeout.
    for line in big.stdout.lines().filter(|l| l.contains("── FAILED ──")) {
        let secs: f64 = line
            .rsplit(" ── ")
            .next()
            .and_then(|s| s.trim_end_matches('s').parse().ok())
            .expect("duration");
        assert!(secs < 11.0, "{line}");
    }
    assert!(
        big.stdout.contains("No route to host") && big.stdout.contains("no SSH answer"),
        "{}",
        big.stdout
    );
    assert!(
        big.peak_sockets <= 32 + 2,
        "--concurrency 32 but {} sockets open at once",
        big.peak_sockets
    );
    // Flat memory: five times the hosts, not five times the memory (the outputs kept for the
    // report are a few bytes per host).
    assert!(
        big.peak_rss_kb < small.peak_rss_kb + 30 * 1024,
        "peak RSS {} kB at 200 hosts, {} kB at 1,000",
        small.peak_rss_kb,
        big.peak_rss_kb
    );
    // The JSON event stream: a handful of events per host, not one per line of output.
    let events = big.stderr.lines().filter(|l| l.starts_with('{')).count();
    assert!(events <= 1000 * 4, "{events} events for 1,000 hosts");
    eprintln!(
        "kbs exec -- true: 200 hosts {:.1}s {} MB; 1,000 hosts {:.1}s {} MB, at most {} sockets",
        small.wall.as_secs_f64(),
        small.peak_rss_kb / 1024,
        big.wall.as_secs_f64(),
        big.peak_rss_kb / 1024,
        big.peak_sockets
    );

    // Facts and preflight over all 1,000: the unreachable and hung hosts stop the run before
    // anything changes, every one of them named.
    let inventory = lab.run_dir().join("sim/inventory.toml");
    let dry = measure(&[
        "apply",
        &inventory.to_string_lossy(),
        "--dry-run",
        "--log-format",
        "json",
        "--concurrency",
        "32",
    ]);
    assert!(!dry.success);
    for host in &bad {
        assert!(
            dry.stderr.contains(&format!("  {host}: ")),
            "{host} not named: {}",
            dry.stderr
        );
    }
    // The 34 at least: on a loaded machine a healthy sshd may miss the 10 s timeout too.
    assert!(
        dry.stderr.contains("hosts could not be reached"),
        "{}",
        dry.stderr
    );

    // Without the dead ones: facts and every preflight probe on 966 hosts, including the
    // control planes' reachability probes to every kubelet. The sims have no systemd, so
    // preflight fails, in one table row per outcome, not one per host.
    let text = std::fs::read_to_string(&inventory).expect("sim inventory");
    let mut parts = text.split("\n[[host]]\n");
    let mut live = parts.next().expect("settings").to_string();
    for host in parts.filter(|h| !bad.iter().any(|b| h.contains(&format!("\"{b}\"")))) {
        live.push_str("\n[[host]]\n");
        live.push_str(host);
    }
    let live_inventory = lab.run_dir().join("sim/live.toml");
    std::fs::write(&live_inventory, live).expect("write");
    let pre = measure(&[
        "apply",
        &live_inventory.to_string_lossy(),
        "--dry-run",
        "--log-format",
        "json",
        "--concurrency",
        "32",
    ]);
    assert!(!pre.success);
    assert!(pre.stderr.contains("preflight failed"), "{}", pre.stderr);
    assert_eq!(pre.stderr.matches("not PID 1").count(), 1, "{}", pre.stderr);
    let report = pre.stderr.lines().filter(|l| !l.starts_with('{')).count();
    assert!(report < 200, "{}", pre.stderr);
    assert!(
        pre.peak_rss_kb < 250 * 1024,
        "peak RSS {} kB with 966 connections held",
        pre.peak_rss_kb
    );
    eprintln!(
        "kbs apply --dry-run, facts and preflight on 966 hosts: {:.1}s, {} MB",
        pre.wall.as_secs_f64(),
        pre.peak_rss_kb / 1024
    );
}
