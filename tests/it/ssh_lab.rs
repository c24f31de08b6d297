//! The SSH engine on lab hosts: the non-root sudo user, a host killed with `docker kill`,
//! nodes reachable only through the bastion.

use std::time::{Duration, Instant};

use kbs::ssh::{Exec, ExecOptions, FileAttrs, Progress, ProgressMode, SshError, exec_on_all};

use crate::lab::{connector, up};

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
        text.starts_with(&format!("node-2: cannot connect to {}:22", lab.ip(12)))
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
    let jump = format!("root@{}", lab.bastion_ip());
    assert!(
        err.to_string().starts_with(&format!(
            "node-1: cannot reach it through jump host {jump}: {jump}: HOST KEY CHANGED"
        )),
        "{err}"
    );
}

/// `kbs exec` through the CLI: output grouped per host, a summary line, role selection, and a
/// non-zero exit when any host fails.
#[test]
fn lab_kbs_exec_groups_output_per_host() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let exec = |args: &[&str]| {
        crate::common::kbs()
            .arg("exec")
            .arg(lab.inventory())
            .arg("--state-dir")
            .arg(state.path())
            .args(["--log-format", "plain"])
            .args(args)
            .output()
            .expect("run kbs")
    };
    let out = exec(&["--", "hostname"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for h in ["node-1", "node-2", "node-3"] {
        assert!(
            text.contains(&format!("── {h} ── exit status 0"))
                && text.contains(&format!("\n{h}\n")),
            "{text}"
        );
    }
    assert!(text.ends_with("3 hosts: 3 ok, 0 failed\n"), "{text}");

    let out = exec(&[
        "--hosts",
        "node-2",
        "--",
        "test",
        "$(hostname)",
        "!=",
        "node-2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.ends_with("1 hosts: 0 ok, 1 failed (node-2)\n"),
        "{text}"
    );

    // Three hosts: every one is a control plane, none only a worker.
    let out = exec(&["--role", "etcd", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 hosts: 3 ok"));
    let out = exec(&["--hosts", "node-9", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host `node-9`"));
}
