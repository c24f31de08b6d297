//! Tests on the Docker lab (tests/lab/lab): the non-root sudo user, a host killed with
//! `docker kill`, nodes reachable only through the bastion. One lab per test binary:
//! every lab test holds `LAB` while it brings the lab up, uses it and takes it down.
//! Skipped, with the reason printed, only when the `docker` command is absent.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kbs::ssh::{
    ConnectOptions, Connector, Exec, ExecOptions, FileAttrs, KnownHosts, Progress, ProgressMode,
    SshError, Target, Timeouts, exec_on_all, parse_host_key,
};

static LAB: Mutex<()> = Mutex::new(());

struct Lab {
    script: PathBuf,
    run: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

/// `lab up ARGS`, or `None` when Docker is not installed.
fn up(args: &[&str]) -> Option<Lab> {
    if Command::new("docker").arg("--version").output().is_err() {
        eprintln!("skipped: the `docker` command is absent, the lab needs Docker");
        return None;
    }
    let serial = LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::env::var_os("KBS_LAB_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/lab"),
        PathBuf::from,
    );
    let run = std::env::var_os("KBS_LAB_RUN").map_or_else(|| dir.join("run"), PathBuf::from);
    let lab = Lab {
        script: dir.join("lab"),
        run,
        _serial: serial,
    };
    lab.cmd(&[&["up"], args].concat());
    Some(lab)
}

impl Lab {
    fn cmd(&self, args: &[&str]) {
        let st = Command::new(&self.script)
            .args(args)
            .status()
            .expect("run tests/lab/lab");
        assert!(st.success(), "lab {args:?} failed");
    }

    fn sudo_user(&self) -> String {
        std::fs::read_to_string(self.run.join("sudo-user"))
            .expect("run/sudo-user")
            .trim()
            .to_string()
    }

    /// Targets from run/inventory.toml (pinned host keys, jump host if any).
    fn targets(&self, user: Option<&str>) -> Vec<Target> {
        let text = std::fs::read_to_string(self.run.join("inventory.toml")).expect("inventory");
        let inv: toml::Table = toml::from_str(&text).expect("inventory.toml");
        let ssh = inv["ssh"].as_table().expect("[ssh]");
        let s = |t: &toml::Table, k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let key = s(ssh, "identity_file").map(PathBuf::from);
        let user = user.map_or_else(|| s(ssh, "user").expect("ssh.user"), str::to_string);
        let timeouts = Timeouts {
            connect: Duration::from_secs(8),
            command: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(2),
            keepalive_max: 2,
        };
        let jump = s(ssh, "jump_host").map(|j| {
            let (juser, addr) = j.split_once('@').expect("user@address:port");
            let (ip, port) = addr.rsplit_once(':').expect("address:port");
            let mut t = Target::new("bastion", ip.parse::<IpAddr>().expect("ip"), juser);
            t.port = port.parse().expect("port");
            t.identity_file = key.clone();
            t.host_key = s(ssh, "jump_host_key").map(|k| parse_host_key(&k).expect("jump key"));
            t.timeouts = timeouts;
            Box::new(t)
        });
        inv["host"]
            .as_array()
            .expect("[[host]]")
            .iter()
            .map(|h| {
                let h = h.as_table().expect("host table");
                let ip: IpAddr = s(h, "address").expect("address").parse().expect("ip");
                let mut t = Target::new(s(h, "name").expect("name"), ip, user.clone());
                t.identity_file = key.clone();
                t.host_key = s(h, "host_key").map(|k| parse_host_key(&k).expect("host key"));
                t.jump = jump.clone();
                t.timeouts = timeouts;
                t
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Command::new(&self.script).arg("down").status().ok();
    }
}

fn connector() -> (tempfile::TempDir, Connector) {
    let state = tempfile::tempdir().expect("tmp");
    let kh = KnownHosts::with_files(None, state.path().join("known_hosts"), false);
    let c = Connector::new(ConnectOptions {
        known_hosts: kh,
        agent: None,
    });
    (state, c)
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_sudo_for_the_non_root_user() {
    let Some(lab) = up(&["2"]) else { return };
    let user = lab.sudo_user();
    let targets = lab.targets(Some(&user));
    let (_state, c) = connector();
    let s = c
        .session(&targets[0])
        .await
        .expect("connect as the sudo user");

    let out = s.run(Exec::new("id -un")).await.expect("plain");
    assert_eq!(out.stdout_lossy().trim(), user);
    let out = s
        .run(Exec::new("id -un; echo \"$HOME\"").sudo(true))
        .await
        .expect("sudo");
    assert_eq!(out.stdout_lossy(), "root\n/root\n");
    // The command is quoted once for sh -c: quotes and $ survive sudo.
    let out = s
        .run(Exec::new("printf '%s\\n' \"a b\" '$x'").sudo(true))
        .await
        .expect("quoting");
    assert_eq!(out.stdout_lossy(), "a b\n$x\n");

    let attrs = FileAttrs {
        mode: 0o600,
        owner: Some("root:root".into()),
        sudo: true,
    };
    let path = "/etc/kbs-test/secret.conf";
    assert!(
        s.upload(path, b"token\n", &attrs)
            .await
            .expect("upload as root")
    );
    assert!(!s.upload(path, b"token\n", &attrs).await.expect("unchanged"));
    let stat = s
        .run(Exec::new(&format!("stat -c '%a %U:%G' {path}")).sudo(true))
        .await
        .expect("stat");
    assert_eq!(stat.stdout_lossy(), "600 root:root\n");
    assert_eq!(s.download(path, true).await.expect("download"), b"token\n");
    let err = s
        .download(path, false)
        .await
        .expect_err("not readable without sudo");
    assert!(err.to_string().contains("Permission denied"), "{err}");

    // A user whose sudo wants a password gets the actionable error.
    lab.cmd(&[
        "exec",
        "node-1",
        "--",
        "sh",
        "-c",
        "id nopw >/dev/null 2>&1 || useradd -m -s /bin/sh nopw; \
         echo 'nopw ALL=(ALL) ALL' > /etc/sudoers.d/nopw; \
         install -d -o nopw -m 700 /home/nopw/.ssh; \
         install -o nopw -m 600 /root/.ssh/authorized_keys /home/nopw/.ssh/authorized_keys",
    ]);
    let mut t = targets[0].clone();
    t.user = "nopw".into();
    let s = c.connect(&t).await.expect("connect as nopw");
    let err = s
        .run(Exec::new("true").sudo(true))
        .await
        .expect_err("sudo needs a password");
    assert!(matches!(err, SshError::SudoPassword { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("node-1: sudo needs a password for nopw"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_killed_host_fails_within_the_timeout_while_others_finish() {
    let Some(lab) = up(&["3"]) else { return };
    let targets = lab.targets(None);
    let (_state, c) = connector();
    let (opts, progress) = (ExecOptions::default(), Progress::new(ProgressMode::Plain));

    let started = Instant::now();
    let run = exec_on_all(&c, &targets, "sleep 5; echo done", &opts, &progress);
    let kill = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| lab.cmd(&["kill", "node-2"]));
    };
    let (results, ()) = tokio::join!(run, kill);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    for i in [0, 2] {
        assert_eq!(results[i].result.as_ref().expect("alive").stdout, b"done\n");
    }
    let err = results[1].result.as_ref().expect_err("killed");
    assert!(matches!(err, SshError::ConnectionLost { .. }), "{err}");
    assert!(
        err.to_string().starts_with("node-2: connection lost"),
        "{err}"
    );

    let started = Instant::now();
    let err = c.connect(&targets[1]).await.expect_err("down");
    assert!(
        started.elapsed() <= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.starts_with("node-2: cannot connect to 172.30.0.12:22")
            || text.starts_with("node-2: no SSH answer"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_nodes_behind_the_bastion() {
    let Some(lab) = up(&["3", "--bastion"]) else {
        return;
    };
    let targets = lab.targets(None);
    assert!(
        targets.iter().all(|t| t.jump.is_some()),
        "inventory without jump_host"
    );
    let (_state, c) = connector();
    let results = exec_on_all(
        &c,
        &targets,
        "hostname",
        &ExecOptions::default(),
        &Progress::new(ProgressMode::Quiet),
    )
    .await;
    for (r, t) in results.iter().zip(&targets) {
        let out = r.result.as_ref().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.stdout_lossy().trim(), t.name);
    }

    // The docker host cannot reach the nodes directly (internal network).
    let mut direct = targets[0].clone();
    direct.jump = None;
    direct.timeouts.connect = Duration::from_secs(3);
    assert!(c.connect(&direct).await.is_err());

    // A wrong bastion key stops everything behind it.
    let mut bad = targets[0].clone();
    if let Some(j) = bad.jump.as_mut() {
        j.host_key = targets[1].host_key.clone();
    }
    let (_s, fresh) = connector();
    let err = fresh.connect(&bad).await.expect_err("bastion key mismatch");
    assert!(
        err.to_string().starts_with(
            "node-1: cannot reach it through jump host bastion: bastion: HOST KEY CHANGED"
        ),
        "{err}"
    );
}
