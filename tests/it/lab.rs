//! The one helper through which tests use the Docker lab (tests/lab/lab). One lab per test
//! binary: every lab test holds `LAB` while it brings the lab up, uses it and takes it down
//! (on drop). Skipped, with the reason printed, only when the `docker` command is absent.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kbs::inventory::Inventory;
use kbs::ssh::{ConnectOptions, Connector, KnownHosts, Target, Timeouts};

static LAB: Mutex<()> = Mutex::new(());

pub struct Lab {
    script: PathBuf,
    run: PathBuf,
    id: u8,
    _serial: MutexGuard<'static, ()>,
}

/// `lab up ARGS`, or `None` when Docker is not installed.
pub fn up(args: &[&str]) -> Option<Lab> {
    if Command::new("docker").arg("--version").output().is_err() {
        eprintln!("skipped: the `docker` command is absent, the lab needs Docker");
        return None;
    }
    let serial = LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::env::var_os("KBS_LAB_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/lab"),
        PathBuf::from,
    );
    // KBS_LAB_ID picks one of several side-by-side labs (tests/lab/lab explains).
    let id: u8 = std::env::var("KBS_LAB_ID")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let default_run = if id == 0 {
        dir.join("run")
    } else {
        dir.join(format!("run-{id}"))
    };
    let run = std::env::var_os("KBS_LAB_RUN").map_or(default_run, PathBuf::from);
    let lab = Lab {
        script: dir.join("lab"),
        run,
        id,
        _serial: serial,
    };
    lab.cmd(&[&["up"], args].concat());
    // The bundle the lab inventory names, made by kbs from the lab mirror and registry (behind a
    // bastion this machine cannot reach them, and those tests install nothing).
    if !args.contains(&"--bastion") {
        let out = Command::new(env!("CARGO_BIN_EXE_kbs"))
            .arg("bundle")
            .arg(lab.inventory())
            .output()
            .expect("run kbs bundle");
        assert!(
            out.status.success(),
            "kbs bundle {}: {}",
            lab.inventory().display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(lab)
}

impl Lab {
    pub fn cmd(&self, args: &[&str]) {
        let st = Command::new(&self.script)
            .args(args)
            .status()
            .expect("run tests/lab/lab");
        assert!(st.success(), "lab {args:?} failed");
    }

    pub fn sudo_user(&self) -> String {
        std::fs::read_to_string(self.run.join("sudo-user"))
            .expect("run/sudo-user")
            .trim()
            .to_string()
    }

    /// Targets from run/inventory.toml, built by kbs itself (pinned host keys, jump host), as
    /// `user` when given, with short timeouts so that dead hosts fail fast.
    pub fn targets(&self, user: Option<&str>) -> Vec<Target> {
        let inv = Inventory::load(&self.inventory()).expect("the lab's inventory is valid");
        let timeouts = Timeouts {
            connect: Duration::from_secs(8),
            command: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(2),
            keepalive_max: 2,
        };
        let mut all = kbs::context::connect::targets(&inv);
        inv.hosts
            .iter()
            .filter_map(|h| all.remove(&h.name))
            .map(|mut t| {
                if let Some(u) = user {
                    t.user = u.to_string();
                }
                t.timeouts = timeouts;
                if let Some(j) = t.jump.as_mut() {
                    j.timeouts = timeouts;
                }
                t
            })
            .collect()
    }

    /// The lab network's address ending in `last`: node-i is `ip(10 + i)`, the VIP `ip(100)`.
    pub fn ip(&self, last: u8) -> String {
        format!("172.30.{}.{last}", u16::from(self.id) * 2)
    }

    /// The bastion's address on its outer network (`lab up N --bastion`).
    pub fn bastion_ip(&self) -> String {
        format!("172.30.{}.5", u16::from(self.id) * 2 + 1)
    }

    pub fn inventory(&self) -> PathBuf {
        self.run.join("inventory.toml")
    }

    /// The lab's run directory (tests/lab/run): the mirror's files are under mirror/www.
    pub fn run_dir(&self) -> &std::path::Path {
        &self.run
    }

    /// `lab exec HOST -- sh -c CMD`: straight into the container, not through SSH.
    pub fn exec(&self, host: &str, cmd: &str) -> String {
        let out = Command::new(&self.script)
            .args(["exec", host, "--", "sh", "-c", cmd])
            .output()
            .expect("run tests/lab/lab exec");
        assert!(
            out.status.success(),
            "lab exec {host} {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Command::new(&self.script).arg("down").status().ok();
    }
}

pub fn connector() -> (tempfile::TempDir, Connector) {
    let state = tempfile::tempdir().expect("tmp");
    let kh = KnownHosts::with_files(None, state.path().join("known_hosts"), false);
    let c = Connector::new(ConnectOptions {
        known_hosts: kh,
        agent: None,
    });
    (state, c)
}
