//! The SSH engine against real OpenSSH sshd processes on 127.0.0.x.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kbs::ssh::{
    ConnectOptions, Connector, Exec, ExecOptions, ExitStatus, FileAttrs, KnownHosts, Progress,
    ProgressMode, Session, SshError, Stream, Target, exec_on_all, print_report,
};

use crate::keys::{Agent, client_keys};
use crate::sshd::{Sshd, known_hosts_files};

/// A connector with test-local known_hosts files and no agent.
fn connector(dir: &Path, accept_new: bool) -> Connector {
    let (user, kbs) = known_hosts_files(dir);
    Connector::new(ConnectOptions {
        known_hosts: KnownHosts::with_files(Some(user), kbs, accept_new),
        agent: None,
    })
}

fn quiet() -> Progress {
    Progress::new(ProgressMode::Quiet)
}

/// `SHA256:…` as OpenSSH's ssh-keygen prints it for a public key file.
fn openssh_fingerprint(pub_file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_file)
        .output()
        .expect("ssh-keygen -lf");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

fn unpinned(sshd: &Sshd, name: &str) -> Target {
    let mut t = sshd.target(name);
    t.host_key = None;
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_on_three_hosts_in_parallel() {
    let hosts: Vec<Sshd> = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
        .map(Sshd::start)
        .into();
    let targets: Vec<Target> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| h.target(&format!("node-{i}")))
        .collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let c = connector(tmp.path(), false);

    let cmd = "echo out; echo err >&2; exit 3";
    let keep = ExecOptions {
        keep_connections: true,
        ..Default::default()
    };
    let results = exec_on_all(&c, &targets, cmd, &keep, &quiet()).await;
    assert_eq!(results.len(), 3);
    for (r, t) in results.iter().zip(&targets) {
        assert_eq!(r.host, t.name);
        let out = r.result.as_ref().expect("exec ok");
        assert_eq!(out.status, ExitStatus::Code(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
    let mut report = Vec::new();
    assert_eq!(print_report(&results, &mut report).expect("report"), 3);
    let report = String::from_utf8(report).expect("utf8");
    assert!(report.contains("── node-1 ── exit status 3"), "{report}");
    assert!(
        report.ends_with("3 hosts: 0 ok, 3 failed (node-0, node-1, node-2)\n"),
        "{report}"
    );

    // The second command reuses the kept sessions (one connection per host per run)...
    let results = exec_on_all(&c, &targets, "echo $SSH_CONNECTION", &keep, &quiet()).await;
    let mut report = Vec::new();
    assert_eq!(print_report(&results, &mut report).expect("report"), 0);
    for h in &hosts {
        let accepted = h.log().matches("Accepted publickey").count();
        assert_eq!(accepted, 1, "one login per host expected: {}", h.log());
    }
    // ... and by default (`kbs exec`) each host's connection is closed when its command ends.
    let results = exec_on_all(&c, &targets, "true", &ExecOptions::default(), &quiet()).await;
    assert!(results.iter().all(|r| r.result.is_ok()));
    let again = exec_on_all(&c, &targets, "true", &ExecOptions::default(), &quiet()).await;
    assert!(again.iter().all(|r| r.result.is_ok()));
    for h in &hosts {
        let accepted = h.log().matches("Accepted publickey").count();
        assert_eq!(accepted, 2, "a new login after a closing run: {}", h.log());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_lines_takes_stdin_and_reports_signals_and_timeouts() {
    let h = Sshd::start("127.0.0.26");
    let tmp = tempfile::tempdir().expect("tmp");
    let c = connector(tmp.path(), false);
    let s = c.session(&h.target("n")).await.expect("connect");

    let seen = Mutex::new(Vec::new());
    let f = |st: Stream, l: &str| seen.lock().expect("lock").push((st, l.to_string()));
    let out = s
        .exec(Exec::new("echo a; echo b >&2; printf c").on_line(&f))
        .await
        .expect("exec");
    assert!(out.success());
    let seen = seen.into_inner().expect("lock");
    assert!(seen.contains(&(Stream::Stdout, "a".into())), "{seen:?}");
    assert!(seen.contains(&(Stream::Stderr, "b".into())), "{seen:?}");
    assert!(seen.contains(&(Stream::Stdout, "c".into())), "{seen:?}");

    // Secrets go over stdin; large input does not deadlock against output.
    let secret = vec![b'x'; 3 << 20];
    let out = s
        .run(Exec::new("sha256sum | cut -c1-64").stdin(&secret))
        .await
        .expect("stdin");
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&secret))
    };
    assert_eq!(out.stdout_lossy(), format!("{want}\n"));

    let out = s.exec(Exec::new("kill -TERM $$")).await.expect("signal");
    assert_eq!(out.status, ExitStatus::Signal("TERM".into()));

    let err = s
        .run(Exec::new("echo first; echo last >&2; exit 7"))
        .await
        .expect_err("must fail");
    let text = err.to_string();
    assert!(matches!(err, SshError::CommandFailed { .. }), "{text}");
    assert!(
        text.contains("n: `echo first; echo last >&2; exit 7` failed with exit status 7"),
        "{text}"
    );
    assert!(text.contains("last output:\n    first\n    last"), "{text}");

    let started = Instant::now();
    let err = s
        .exec(Exec::new("echo working; sleep 20").timeout(Duration::from_secs(1)))
        .await
        .expect_err("timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        err.to_string().contains("did not finish within 1s"),
        "{err}"
    );
    assert_eq!(err.last_lines(), ["working"]);

    // More parallel commands than sshd's MaxSessions (10) on one connection.
    let runs = (0..24).map(|i| {
        let s = s.clone();
        async move { s.run(Exec::new(&format!("sleep 0.2; echo {i}"))).await }
    });
    for r in futures::future::join_all(runs).await {
        r.expect("every command gets a channel");
    }

    // Root needs no sudo: the command runs as is.
    let out = s
        .run(Exec::new("id -u").sudo(true))
        .await
        .expect("sudo as root");
    assert_eq!(out.stdout, b"0\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_is_atomic_idempotent_and_fixes_attributes() {
    let h = Sshd::start("127.0.0.27");
    let tmp = tempfile::tempdir().expect("tmp");
    let c = connector(tmp.path(), false);
    let s = c.session(&h.target("n")).await.expect("connect");
    let path = h.path("etc/kbs/config.yaml");
    let remote = path.to_str().expect("utf8 path");

    let attrs = FileAttrs::new(0o600);
    assert!(s.upload(remote, b"a: 1\n", &attrs).await.expect("upload"));
    let meta = std::fs::metadata(&path).expect("uploaded");
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(&path).expect("read"), b"a: 1\n");
    assert_eq!(
        s.download(remote, false).await.expect("download"),
        b"a: 1\n"
    );

    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        !s.upload(remote, b"a: 1\n", &attrs)
            .await
            .expect("re-upload")
    );
    let again = std::fs::metadata(&path).expect("still there");
    assert_eq!(
        (again.mtime(), again.ino()),
        (meta.mtime(), meta.ino()),
        "unchanged file was rewritten"
    );

    // Same content, other mode and owner: changed in place.
    let attrs = FileAttrs {
        mode: 0o640,
        owner: Some("nobody".into()),
        sudo: true,
    };
    assert!(s.upload(remote, b"a: 1\n", &attrs).await.expect("chmod"));
    let meta = std::fs::metadata(&path).expect("meta");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_ne!(meta.uid(), 0);
    assert!(
        !s.upload(remote, b"a: 1\n", &attrs)
            .await
            .expect("idempotent")
    );

    // New content replaces the file atomically (new inode) and leaves no temp file.
    assert!(s.upload(remote, b"a: 2\n", &attrs).await.expect("replace"));
    let replaced = std::fs::metadata(&path).expect("meta");
    assert_ne!(replaced.ino(), meta.ino());
    let leftovers: Vec<_> = std::fs::read_dir(h.path("etc/kbs")).expect("dir").collect();
    assert_eq!(leftovers.len(), 1, "temp files left behind");

    let err = s
        .upload("relative/path", b"x", &attrs)
        .await
        .expect_err("relative");
    assert!(err.to_string().contains("absolute"), "{err}");
    let err = s
        .download(h.path("missing").to_str().expect("utf8"), false)
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("No such file"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_key_is_refused_then_learned_and_openssh_agrees() {
    let h = Sshd::start("127.0.0.28");
    let tmp = tempfile::tempdir().expect("tmp");
    let (_, kbs_file) = known_hosts_files(tmp.path());
    let t = unpinned(&h, "cp1");

    let err = connector(tmp.path(), false)
        .connect(&t)
        .await
        .expect_err("unknown key");
    let text = err.to_string();
    let fp = openssh_fingerprint(&h.path("ssh_host_ed25519_key.pub"));
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{text}");
    assert!(text.starts_with("cp1: unknown ed25519 host key"), "{text}");
    assert!(text.contains(&fp), "fingerprint {fp} missing: {text}");
    assert!(text.contains("--accept-new-host-keys"), "{text}");
    assert!(
        !kbs_file.exists(),
        "nothing may be recorded without consent"
    );

    let s = connector(tmp.path(), true)
        .connect(&t)
        .await
        .expect("accept new");
    s.run(Exec::new("true")).await.expect("exec");
    // Recorded: later runs need no flag.
    connector(tmp.path(), false)
        .connect(&t)
        .await
        .expect("known now");

    let st = Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kbs_file.display()))
        .arg("-i")
        .arg(&client_keys().ed25519)
        .args(["-p", &h.port.to_string(), &format!("root@{}", h.ip), "true"])
        .status()
        .expect("ssh");
    assert!(st.success(), "OpenSSH rejected kbs's known_hosts entry");
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_host_key_is_always_refused() {
    let mut h = Sshd::start("127.0.0.29");
    let tmp = tempfile::tempdir().expect("tmp");
    let t = unpinned(&h, "cp2");
    connector(tmp.path(), true)
        .connect(&t)
        .await
        .expect("learn");
    let old_fp = openssh_fingerprint(&h.path("ssh_host_ed25519_key.pub"));
    let port = h.port;

    // Reinstalled host: same address, new key of the same algorithm.
    h.stop();
    let h = Sshd::start_with("127.0.0.29", "ed25519", Some(port));
    let new_fp = openssh_fingerprint(&h.path("ssh_host_ed25519_key.pub"));
    let err = connector(tmp.path(), true)
        .connect(&t)
        .await
        .expect_err("changed");
    let text = err.to_string();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{text}");
    assert!(
        text.contains("HOST KEY CHANGED") && text.contains("cp2"),
        "{text}"
    );
    assert!(text.contains(&old_fp) && text.contains(&new_fp), "{text}");

    // A key of another algorithm is a change too, never a new key to learn.
    drop(h);
    let h = Sshd::start_with("127.0.0.29", "ecdsa", Some(port));
    let ecdsa_fp = openssh_fingerprint(&h.path("ssh_host_ecdsa_key.pub"));
    let err = connector(tmp.path(), true)
        .connect(&t)
        .await
        .expect_err("other algorithm");
    let text = err.to_string();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{text}");
    assert!(text.contains(&old_fp) && text.contains(&ecdsa_fp), "{text}");

    // A pinned key that does not match is refused the same way.
    let mut pinned = h.target("cp2");
    pinned.host_key = Some(client_keys_pub());
    let err = connector(tmp.path(), true)
        .connect(&pinned)
        .await
        .expect_err("pin mismatch");
    assert!(err.to_string().contains("pinned in the inventory"), "{err}");
}

fn client_keys_pub() -> russh::keys::PublicKey {
    let line = std::fs::read_to_string(crate::keys::pub_of(&client_keys().ed25519)).expect("pub");
    kbs::inventory::parse_host_key(&line).expect("parse")
}

#[tokio::test(flavor = "multi_thread")]
async fn users_hashed_known_hosts_entry_is_honoured_and_not_modified() {
    let h = Sshd::start("127.0.0.30");
    let tmp = tempfile::tempdir().expect("tmp");
    let (user_file, kbs_file) = known_hosts_files(tmp.path());
    let key = std::fs::read_to_string(h.path("ssh_host_ed25519_key.pub")).expect("pub");
    std::fs::write(&user_file, format!("[{}]:{} {key}", h.ip, h.port)).expect("write");
    let st = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&user_file)
        .status()
        .expect("ssh-keygen -H");
    assert!(st.success());
    let before = std::fs::read_to_string(&user_file).expect("read");
    assert!(before.starts_with("|1|"), "{before}");

    let t = unpinned(&h, "w1");
    connector(tmp.path(), false)
        .connect(&t)
        .await
        .expect("known via hashed entry");
    assert_eq!(std::fs::read_to_string(&user_file).expect("read"), before);
    assert!(!kbs_file.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_type_authenticates_and_failures_name_the_keys() {
    let h = Sshd::start("127.0.0.31");
    let tmp = tempfile::tempdir().expect("tmp");
    let c = connector(tmp.path(), false);
    let keys = client_keys();
    for key in [&keys.ed25519, &keys.ecdsa, &keys.rsa] {
        let mut t = h.target("n");
        t.identity_file = Some(key.clone());
        let s = c
            .connect(&t)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        s.run(Exec::new("true")).await.expect("exec");
    }
    let rsa_sigs =
        h.log().matches("RSA-SHA2-512").count() + h.log().matches("rsa-sha2-512").count();
    assert!(rsa_sigs > 0, "RSA must sign with SHA-2: {}", h.log());

    let mut t = h.target("n");
    t.identity_file = Some(keys.stranger.clone());
    let err = c.connect(&t).await.expect_err("unauthorized key");
    let text = err.to_string();
    assert!(matches!(err, SshError::Auth { .. }), "{text}");
    assert!(
        text.contains("authentication as root failed") && text.contains("id_stranger"),
        "{text}"
    );

    t.identity_file = Some(keys.protected.clone());
    let err = c.connect(&t).await.expect_err("needs passphrase");
    assert!(
        err.to_string()
            .contains("passphrase-protected: load it with `ssh-add"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passphrase_protected_key_works_through_ssh_agent() {
    let h = Sshd::start("127.0.0.32");
    let agent = Agent::start_with_protected_key();
    let tmp = tempfile::tempdir().expect("tmp");
    let (user, kbs) = known_hosts_files(tmp.path());
    let c = Connector::new(ConnectOptions {
        known_hosts: KnownHosts::with_files(Some(user), kbs, false),
        agent: Some(agent.socket.clone()),
    });
    let mut t = h.target("n");
    t.identity_file = Some(client_keys().protected.clone());
    let s = c.connect(&t).await.expect("agent auth");
    s.run(Exec::new("true")).await.expect("exec");
    let fp = openssh_fingerprint(&crate::keys::pub_of(&client_keys().protected));
    assert!(h.log().contains(&fp), "sshd should log the agent key {fp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_host_fails_fast_and_clearly_while_the_others_finish() {
    let hosts: Vec<Sshd> = ["127.0.0.33", "127.0.0.34", "127.0.0.35"]
        .map(Sshd::start)
        .into();
    let targets: Vec<Target> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| h.target(&format!("w{i}")))
        .collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let c = connector(tmp.path(), false);

    // Freeze w1 mid-command: no FIN, no RST, like a host that lost power.
    let (opts, progress) = (ExecOptions::default(), quiet());
    let started = Instant::now();
    let run = exec_on_all(&c, &targets, "sleep 4; echo done", &opts, &progress);
    let freeze = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        hosts[1].signal("STOP");
    };
    let (results, ()) = tokio::join!(run, freeze);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for i in [0, 2] {
        let out = results[i].result.as_ref().expect("healthy host");
        assert_eq!(out.stdout, b"done\n");
    }
    let err = results[1].result.as_ref().expect_err("frozen host");
    assert!(matches!(err, SshError::ConnectionLost { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("w1: connection lost while running `sleep 4; echo done`"),
        "{err}"
    );

    // Connecting to it now: TCP is accepted by the kernel but SSH never answers.
    let mut t = targets[1].clone();
    t.timeouts.connect = Duration::from_secs(2);
    let started = Instant::now();
    let err = c.connect(&t).await.expect_err("frozen sshd");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        err.to_string().contains("no SSH answer from 127.0.0.34"),
        "{err}"
    );

    // And once the process is gone: refused at once.
    let mut dead = hosts;
    dead[1].stop();
    let err = c.connect(&t).await.expect_err("killed sshd");
    assert!(matches!(err, SshError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains("w1: cannot connect to 127.0.0.34"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jump_host_reaches_the_target_and_both_keys_are_verified() {
    let bastion = Sshd::start("127.0.0.36");
    let inner = Sshd::start("127.0.0.37");
    let tmp = tempfile::tempdir().expect("tmp");
    let c = connector(tmp.path(), false);

    let mut t = inner.target("db1");
    t.jump = Some(Box::new(bastion.target("bastion")));
    let s = c.connect(&t).await.expect("through the bastion");
    let out = s.run(Exec::new("echo via-jump")).await.expect("exec");
    assert_eq!(out.stdout, b"via-jump\n");
    assert!(
        bastion
            .log()
            .contains(&format!("127.0.0.37 port {}", inner.port)),
        "the bastion should have forwarded the connection: {}",
        bastion.log()
    );

    // The inner host's key is checked even though the bastion's is fine.
    let mut bad_inner = t.clone();
    bad_inner.host_key = None;
    let err = connector(tmp.path(), false)
        .connect(&bad_inner)
        .await
        .expect_err("inner unknown");
    assert!(
        err.to_string().starts_with("db1: unknown ed25519 host key"),
        "{err}"
    );

    // An unverifiable bastion stops everything behind it.
    let mut bad_bastion = t.clone();
    if let Some(j) = bad_bastion.jump.as_mut() {
        j.host_key = None;
    }
    let err = connector(tmp.path(), false)
        .connect(&bad_bastion)
        .await
        .expect_err("bastion unknown");
    let text = err.to_string();
    assert!(matches!(err, SshError::Jump { .. }), "{text}");
    assert!(
        text.starts_with("db1: cannot reach it through jump host bastion: bastion: unknown"),
        "{text}"
    );
}

/// The engine's futures can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(c: &Connector, s: &Session, targets: &[Target]) {
    fn send<T: Send>(_: T) {}
    let (opts, progress) = (ExecOptions::default(), quiet());
    send(exec_on_all(c, targets, "true", &opts, &progress));
    send(c.session(&targets[0]));
    send(s.exec(Exec::new("true")));
    send(s.upload("/x", b"", &FileAttrs::new(0o644)));
}
