//! What `kbs certs` writes, read back with openssl and compared with kubeadm's tables
//! (docs/pki.md), plus idempotence, expiry exit codes, renewal and user-provided CAs.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kbs::inventory::Inventory;
use kbs::plan::ClusterPlan;
use kbs::state::StateDir;
use time::{Duration, OffsetDateTime};

use crate::pki_common::{
    Cluster, ext, kbs, kubeconfig_field, openssl, subject, verifies, x509_text,
};

const HOSTS: [(&str, &str); 3] = [
    ("n1", "10.0.0.11"),
    ("n2", "10.0.0.12"),
    ("n3", "10.0.0.13"),
];
const EXTRA: &str = "[pki]\nextra_sans = [\"10.0.0.100\", \"api.alt.test\"]\n";

const SERVER: &str = "TLS Web Server Authentication";
const CLIENT: &str = "TLS Web Client Authentication";
const BOTH: &str = "TLS Web Server Authentication, TLS Web Client Authentication";
const LEAF_KU: &str = "Digital Signature, Key Encipherment";

fn sans_of(text: &str) -> Vec<String> {
    let mut v: Vec<String> = ext(text, "X509v3 Subject Alternative Name")
        .map(|l| l.split(", ").map(str::to_owned).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Asserts a leaf: subject, SANs, KU, EKU, AKI, and that openssl verifies it against `ca`.
fn assert_leaf(path: &Path, ca: &Path, want_subject: &str, want_sans: &[&str], want_eku: &str) {
    let t = x509_text(path);
    assert_eq!(subject(&t), want_subject, "{}", path.display());
    assert_eq!(sans_of(&t), sorted(want_sans), "{}", path.display());
    assert_eq!(
        ext(&t, "X509v3 Key Usage").as_deref(),
        Some(LEAF_KU),
        "{}",
        path.display()
    );
    assert_eq!(
        ext(&t, "X509v3 Extended Key Usage").as_deref(),
        Some(want_eku),
        "{}",
        path.display()
    );
    assert!(
        t.contains("X509v3 Authority Key Identifier"),
        "{}",
        path.display()
    );
    assert!(!t.contains("CA:TRUE"), "{}", path.display());
    assert!(
        verifies(ca, path),
        "openssl verify {} against {}",
        path.display(),
        ca.display()
    );
}

fn assert_ca(path: &Path, cn: &str) {
    let t = x509_text(path);
    assert_eq!(subject(&t), format!("CN = {cn}"));
    assert_eq!(sans_of(&t), vec![format!("DNS:{cn}")]);
    assert_eq!(
        ext(&t, "X509v3 Key Usage").as_deref(),
        Some("Digital Signature, Key Encipherment, Certificate Sign")
    );
    assert_eq!(
        ext(&t, "X509v3 Basic Constraints").as_deref(),
        Some("CA:TRUE")
    );
    assert!(verifies(path, path));
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn certificates_match_kubeadms_table() {
    let c = Cluster::new("edge", &HOSTS, EXTRA);
    let out = c.generate();
    let (ca, fp_ca, etcd_ca) = (
        c.pki("ca.crt"),
        c.pki("front-proxy-ca.crt"),
        c.pki("etcd/ca.crt"),
    );
    assert_ca(&ca, "kubernetes");
    assert_ca(&fp_ca, "front-proxy-ca");
    assert_ca(&etcd_ca, "etcd-ca");

    for (host, addr) in HOSTS {
        let ip = format!("IP Address:{addr}");
        let node = format!("DNS:{host}");
        assert_leaf(
            &c.pki(&format!("hosts/{host}/apiserver.crt")),
            &ca,
            "CN = kube-apiserver",
            &[
                &node,
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
                "IP Address:10.96.0.1",
                &ip,
                "DNS:api.edge.test",
                "IP Address:10.0.0.100",
                "DNS:api.alt.test",
            ],
            SERVER,
        );
        let etcd_sans = [
            node.as_str(),
            "DNS:localhost",
            &ip,
            "IP Address:127.0.0.1",
            "IP Address:0:0:0:0:0:0:0:1",
        ];
        let cn = format!("CN = {host}");
        assert_leaf(
            &c.pki(&format!("hosts/{host}/etcd/server.crt")),
            &etcd_ca,
            &cn,
            &etcd_sans,
            BOTH,
        );
        assert_leaf(
            &c.pki(&format!("hosts/{host}/etcd/peer.crt")),
            &etcd_ca,
            &cn,
            &etcd_sans,
            BOTH,
        );
    }
    // From 1.37 kubeadm gives it no group (kubernetes_1_36_keeps_the_kubelet_client_group).
    let kubelet_client = "CN = kube-apiserver-kubelet-client";
    assert_leaf(
        &c.pki("apiserver-kubelet-client.crt"),
        &ca,
        kubelet_client,
        &[],
        CLIENT,
    );
    assert_leaf(
        &c.pki("front-proxy-client.crt"),
        &fp_ca,
        "CN = front-proxy-client",
        &[],
        CLIENT,
    );
    assert_leaf(
        &c.pki("apiserver-etcd-client.crt"),
        &etcd_ca,
        "CN = kube-apiserver-etcd-client",
        &[],
        CLIENT,
    );
    assert_leaf(
        &c.pki("etcd/healthcheck-client.crt"),
        &etcd_ca,
        "CN = kube-etcd-healthcheck-client",
        &[],
        CLIENT,
    );
    // A leaf must not verify against a CA it does not belong to.
    assert!(!verifies(&ca, &c.pki("apiserver-etcd-client.crt")));

    let endpoint = "https://api.edge.test:6443";
    let mut confs = vec![
        (
            "admin.conf".to_owned(),
            "O = kubeadm:cluster-admins, CN = kubernetes-admin",
            endpoint.to_owned(),
        ),
        (
            "super-admin.conf".to_owned(),
            "O = system:masters, CN = kubernetes-super-admin",
            endpoint.to_owned(),
        ),
    ];
    for (host, addr) in HOSTS {
        let local = format!("https://{addr}:6443");
        confs.push((
            format!("hosts/{host}/controller-manager.conf"),
            "CN = system:kube-controller-manager",
            local.clone(),
        ));
        confs.push((
            format!("hosts/{host}/scheduler.conf"),
            "CN = system:kube-scheduler",
            local,
        ));
    }
    for (rel, subj, server) in confs {
        let rel = rel.as_str();
        let path = c.state.join("kubeconfig").join(rel);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(kubeconfig_field(&text, "server"), server, "{rel}");
        let cn = subj.rsplit("CN = ").next().unwrap();
        assert_eq!(
            kubeconfig_field(&text, "current-context"),
            format!("{cn}@edge"),
            "{rel}"
        );
        assert_eq!(mode(&path), 0o600, "{rel}");
        let (crt, key) = c.kubeconfig_client(rel);
        assert_leaf(&crt, &ca, subj, &[], CLIENT);
        let (ok, _) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-noout"]);
        assert!(ok, "{rel} key readable");
    }

    // Modes: state dir 0700, keys 0600, certs 0644.
    assert_eq!(mode(&c.state), 0o700);
    for (path, _) in snapshot(&c.state) {
        let want = if path.extension().is_some_and(|e| e == "crt" || e == "pub") {
            0o644
        } else {
            0o600
        };
        assert_eq!(mode(&path), want, "{}", path.display());
    }

    // The discovery hash printed is openssl's sha256 over the CA's DER public key.
    let (ok, pubkey) = openssl(&["x509", "-in", ca.to_str().unwrap(), "-noout", "-pubkey"]);
    assert!(ok);
    let pub_pem = c.dir.path().join("ca.pub.pem");
    fs::write(&pub_pem, pubkey).unwrap();
    let der = c.dir.path().join("ca.pub.der");
    assert!(
        openssl(&[
            "pkey",
            "-pubin",
            "-in",
            pub_pem.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap()
        ])
        .0
    );
    let (ok, digest) = openssl(&["dgst", "-sha256", "-r", der.to_str().unwrap()]);
    assert!(ok);
    let hex = digest.split_whitespace().next().unwrap();
    assert!(out.contains(&format!("sha256:{hex}")), "{out}");
    assert_eq!(
        kbs::pki::discovery_hash(&fs::read(&ca).unwrap()).unwrap(),
        format!("sha256:{hex}")
    );
}

#[test]
fn kubernetes_1_36_keeps_the_kubelet_client_group() {
    let c = Cluster::new("edge", &HOSTS[..1], "");
    let text = fs::read_to_string(&c.inventory)
        .unwrap()
        .replace("1.37.1", "1.36.5");
    fs::write(&c.inventory, text).unwrap();
    c.generate();
    assert_eq!(
        subject(&x509_text(&c.pki("apiserver-kubelet-client.crt"))),
        "O = kubeadm:cluster-admins, CN = kube-apiserver-kubelet-client"
    );
}

#[test]
fn rsa_2048_on_request() {
    let c = Cluster::new("edge", &HOSTS[..1], "[pki]\nalgorithm = \"rsa-2048\"\n");
    c.generate();
    for rel in ["ca.crt", "hosts/n1/apiserver.crt", "sa.pub"] {
        let path = c.pki(rel);
        let (ok, text) = if rel.ends_with(".pub") {
            openssl(&[
                "pkey",
                "-pubin",
                "-in",
                path.to_str().unwrap(),
                "-noout",
                "-text",
            ])
        } else {
            (true, x509_text(&path))
        };
        assert!(ok && text.contains("(2048 bit)"), "{rel}: {text}");
    }
    assert!(verifies(&c.pki("ca.crt"), &c.pki("hosts/n1/apiserver.crt")));
}

/// Every file below `dir` with its bytes and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let m = fs::metadata(&p).unwrap().modified().unwrap();
                out.insert(p.clone(), (fs::read(&p).unwrap(), m));
            }
        }
    }
    out
}

#[test]
fn rerun_changes_nothing_and_new_hosts_keep_the_ca() {
    let c = Cluster::new("edge", &HOSTS[..1], "");
    c.generate();
    let first = snapshot(&c.state);
    let out = c.generate();
    assert!(out.contains("0 changed"), "{out}");
    assert_eq!(
        snapshot(&c.state),
        first,
        "a re-run must not touch any file"
    );

    // Two more hosts: new apiserver and etcd leaves for them, same CAs and SA key.
    c.write("edge", &HOSTS, "");
    let out = c.generate();
    let after = snapshot(&c.state);
    for rel in [
        "ca.crt",
        "ca.key",
        "front-proxy-ca.crt",
        "etcd/ca.crt",
        "etcd/ca.key",
        "sa.key",
        "sa.pub",
        "hosts/n1/apiserver.crt",
    ] {
        assert_eq!(after[&c.pki(rel)], first[&c.pki(rel)], "{rel} must be kept");
    }
    for rel in [
        "hosts/n2/apiserver.crt",
        "hosts/n3/etcd/peer.crt",
        "hosts/n3/etcd/server.crt",
    ] {
        assert!(
            !first.contains_key(&c.pki(rel)) && after.contains_key(&c.pki(rel)),
            "{rel} must be new: {out}"
        );
        assert!(verifies(
            &c.pki(if rel.contains("etcd") {
                "etcd/ca.crt"
            } else {
                "ca.crt"
            }),
            &c.pki(rel)
        ));
    }

    // A new SAN re-issues every apiserver cert (and nothing signed by the other CAs).
    c.write("edge", &HOSTS, EXTRA);
    let out = c.generate();
    let again = snapshot(&c.state);
    for (host, _) in HOSTS {
        let rel = format!("hosts/{host}/apiserver.crt");
        assert_ne!(again[&c.pki(&rel)].0, after[&c.pki(&rel)].0, "{rel}");
        assert!(
            out.contains(&format!(
                "reissued  pki/{rel} (SANs lack IP:10.0.0.100, DNS:api.alt.test)"
            )),
            "{out}"
        );
        assert!(sans_of(&x509_text(&c.pki(&rel))).contains(&"DNS:api.alt.test".to_owned()));
    }
    assert_eq!(again[&c.pki("ca.crt")], first[&c.pki("ca.crt")]);
    assert_eq!(
        again[&c.pki("hosts/n2/etcd/peer.crt")],
        after[&c.pki("hosts/n2/etcd/peer.crt")]
    );
}

fn plan_of(c: &Cluster) -> ClusterPlan {
    ClusterPlan::new(Inventory::load(&c.inventory).unwrap())
}

fn check(c: &Cluster, args: &[&str]) -> (i32, String) {
    let out = kbs()
        .args(["certs", "check", "--state-dir"])
        .arg(&c.state)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_exit_codes_follow_expiry_and_trust() {
    let c = Cluster::new("edge", &HOSTS[..1], "");
    let state = StateDir::new(&c.state);
    let now = OffsetDateTime::now_utc();

    // Issued 350 days ago with 365-day leaves: 15 days left.
    kbs::pki::ensure_at(&plan_of(&c), &state, now - Duration::days(350)).unwrap();
    let (code, out) = check(&c, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expiring"), "{out}");
    assert_eq!(check(&c, &["--warn-days", "10"]).0, 0);
    // The inventory form finds the same default state dir.
    let by_inventory = kbs()
        .args(["certs", "check"])
        .arg(&c.inventory)
        .output()
        .unwrap();
    assert_eq!(by_inventory.status.code(), Some(1));

    // Issued 400 days ago: the leaves have expired, the CAs (10 years) have not.
    fs::remove_dir_all(&c.state).unwrap();
    kbs::pki::ensure_at(&plan_of(&c), &state, now - Duration::days(400)).unwrap();
    let (code, out) = check(&c, &["--output", "json"]);
    assert_eq!(code, 2, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let health = |path: &str| {
        json["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path)
            .unwrap()["health"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(health("pki/ca.crt"), "ok");
    assert_eq!(health("pki/hosts/n1/apiserver.crt"), "expired");
    assert_eq!(health("kubeconfig/admin.conf"), "expired");

    // generate replaces the expired leaves and keeps the CA.
    let ca = fs::read(c.pki("ca.crt")).unwrap();
    c.generate();
    assert_eq!(fs::read(c.pki("ca.crt")).unwrap(), ca);
    assert_eq!(check(&c, &[]).0, 0);

    // A leaf from another CA does not chain: exit 2.
    let other = Cluster::new("other", &HOSTS[..1], "");
    other.generate();
    fs::copy(
        other.pki("front-proxy-client.crt"),
        c.pki("front-proxy-client.crt"),
    )
    .unwrap();
    let (code, out) = check(&c, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("invalid: not signed by its CA"), "{out}");
    // ... and generate notices and re-issues it.
    let out = c.generate();
    assert!(
        out.contains(
            "reissued  pki/front-proxy-client.crt (not signed by the current front-proxy-ca CA)"
        ),
        "{out}"
    );
    assert_eq!(check(&c, &[]).0, 0);
}

#[test]
fn check_without_pki_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = kbs()
        .args(["certs", "check", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kbs certs generate"));
}

#[test]
fn renew_reissues_leaves_with_the_same_names_and_keeps_cas() {
    let c = Cluster::new("edge", &HOSTS, "");
    c.generate();
    let before = snapshot(&c.state);
    kbs()
        .args(["certs", "renew", "--local"])
        .arg(&c.inventory)
        .assert()
        .success();
    let after = snapshot(&c.state);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, (bytes, _)) in &before {
        let rel = path
            .strip_prefix(&c.state)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let keep = ["pki/ca.", "pki/front-proxy-ca.", "pki/etcd/ca.", "pki/sa."]
            .iter()
            .any(|p| rel.starts_with(p));
        assert_eq!(keep, after[path].0 == *bytes, "{rel}: kept={keep}");
        if rel.ends_with(".crt") && !keep {
            let old_copy = c.dir.path().join("old.crt");
            fs::write(&old_copy, bytes).unwrap();
            let (old, new) = (x509_text(&old_copy), x509_text(path));
            assert_eq!(subject(&old), subject(&new));
            assert_eq!(sans_of(&old), sans_of(&new));
        }
    }
    assert!(verifies(&c.pki("ca.crt"), &c.pki("hosts/n2/apiserver.crt")));
}

#[test]
fn renew_without_cas_fails_clearly() {
    let c = Cluster::new("edge", &HOSTS[..1], "");
    let out = kbs()
        .args(["certs", "renew", "--local"])
        .arg(&c.inventory)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run `kbs certs generate INVENTORY` first")
    );
}

#[test]
fn a_users_ca_is_used_verbatim() {
    let c = Cluster::new("edge", &HOSTS[..1], "[pki]\nca_dir = \"my-ca\"\n");
    let ca_dir = c.dir.path().join("my-ca");
    fs::create_dir_all(ca_dir.join("etcd")).unwrap();
    let p = |rel: &str| ca_dir.join(rel).to_str().unwrap().to_owned();
    // Cluster CA: RSA key in PKCS#1 ("RSA PRIVATE KEY"), as older openssl and kubeadm write.
    assert!(openssl(&["genrsa", "-traditional", "-out", &p("ca.key"), "2048"]).0);
    // etcd CA: SEC1 key ("EC PRIVATE KEY") after an "EC PARAMETERS" block.
    assert!(
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            &p("etcd/ca.key")
        ])
        .0
    );
    for (key, crt, cn) in [
        ("ca.key", "ca.crt", "user-root"),
        ("etcd/ca.key", "etcd/ca.crt", "user-etcd"),
    ] {
        let (ok, text) = openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &p(key),
            "-out",
            &p(crt),
            "-days",
            "100",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,digitalSignature",
        ]);
        assert!(ok, "{text}");
    }
    assert!(
        fs::read_to_string(p("ca.key"))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    assert!(
        fs::read_to_string(p("etcd/ca.key"))
            .unwrap()
            .contains("-----BEGIN EC PRIVATE KEY-----")
    );

    let out = c.generate();
    assert!(out.contains("imported  pki/ca.crt"), "{out}");
    for rel in ["ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key"] {
        assert_eq!(
            fs::read(c.pki(rel)).unwrap(),
            fs::read(p(rel)).unwrap(),
            "{rel} copied verbatim"
        );
    }
    // The front-proxy CA was not given, so kbs made one.
    assert_ca(&c.pki("front-proxy-ca.crt"), "front-proxy-ca");
    let user_ca = PathBuf::from(p("ca.crt"));
    assert!(verifies(&user_ca, &c.pki("hosts/n1/apiserver.crt")));
    assert!(verifies(&user_ca, &c.pki("apiserver-kubelet-client.crt")));
    assert!(verifies(
        &PathBuf::from(p("etcd/ca.crt")),
        &c.pki("hosts/n1/etcd/peer.crt")
    ));
    assert!(c.generate().contains("0 changed"));

    // Swapping the CA under an existing state dir is refused, not done silently.
    assert!(openssl(&["genrsa", "-out", &p("ca.key"), "2048"]).0);
    assert!(
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
            "-days",
            "100",
            "-subj",
            "/CN=x"
        ])
        .0
    );
    let out = kbs()
        .args(["certs", "generate"])
        .arg(&c.inventory)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differs from the copy"), "{err}");
}

#[test]
fn leaves_expiring_within_renew_before_days_are_reissued() {
    let c = Cluster::new("edge", &HOSTS[..1], "");
    let state = StateDir::new(&c.state);
    let now = OffsetDateTime::now_utc();
    // Issued 340 days ago with 365-day leaves: 25 days left, inside the default 30.
    kbs::pki::ensure_at(&plan_of(&c), &state, now - Duration::days(340)).unwrap();
    let report = kbs::pki::ensure(&plan_of(&c), &state).unwrap();
    let why: Vec<&str> = report
        .items
        .iter()
        .filter_map(|i| match &i.action {
            kbs::pki::Action::Reissued(why) => Some(why.as_str()),
            _ => None,
        })
        .collect();
    assert!(!why.is_empty());
    assert!(
        why.iter()
            .all(|w| w.contains("within pki.renew_before_days = 30")),
        "{why:?}"
    );
    // CAs are not leaves: they stay; and the next run keeps everything.
    assert!(
        report
            .items
            .iter()
            .any(|i| i.path.ends_with("ca.crt") && i.action == kbs::pki::Action::Kept)
    );
    assert_eq!(kbs::pki::ensure(&plan_of(&c), &state).unwrap().changed(), 0);
    // 25 days left is fine with renew_before_days = 10.
    let c = Cluster::new("edge", &HOSTS[..1], "[pki]\nrenew_before_days = 10\n");
    let state = StateDir::new(&c.state);
    kbs::pki::ensure_at(&plan_of(&c), &state, now - Duration::days(340)).unwrap();
    assert_eq!(kbs::pki::ensure(&plan_of(&c), &state).unwrap().changed(), 0);
}
