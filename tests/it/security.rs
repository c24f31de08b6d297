//! The hardened defaults: which files hold secrets and their modes, what each `[security]`
//! relaxation changes, etcd's TLS, namespace baselines as real Kubernetes objects.

use std::path::Path;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kbs::inventory::Inventory;
use kbs::plan::ClusterPlan;
use kbs::render::{
    AUTHENTICATION_CONFIG_PATH, ENCRYPTION_CONFIG_PATH, EncryptionKey, HostResources, JoinSecrets,
    RenderInputs, RenderedFile,
};
use serde_json::Value;

use crate::common::{all_files, inventory, kbs, render, stdout_of, text, write_inventory};

const TOKEN: &str = "abcdef.0123456789abcdef";
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Inputs as apply gives them: real-looking secrets, facts for node-1 only.
fn apply_inputs() -> RenderInputs {
    RenderInputs {
        join: JoinSecrets {
            token: TOKEN.into(),
            ca_cert_hashes: vec!["sha256:00ff".into()],
        },
        encryption_key: EncryptionKey::from_base64(KEY).unwrap(),
        host_resources: [(
            "node-1".to_string(),
            HostResources {
                mem_mb: 16384,
                cpus: 8,
            },
        )]
        .into(),
        ..RenderInputs::default()
    }
}

/// three-host.toml with `[security]` settings appended and its version replaced.
fn plan_with(version: &str, security: &str) -> ClusterPlan {
    let path = inventory("three-host.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"1.37.1\"", &format!("\"{version}\""));
    let text = format!("{text}\n{security}");
    // Older minors are end of life but their behaviour is still tested.
    ClusterPlan::new(
        Inventory::parse_allowing_unsupported(&path, &text).unwrap_or_else(|e| panic!("{e:?}")),
    )
}

const RELAXED: &str = "[security]\nanonymous_auth = true\nprofiling = true\naudit_log = false\n\
    encrypt_secrets = false\npod_security = \"privileged\"\nprotect_kernel_defaults = false\n\
    kubelet_serving_certificates = false\nreserve_resources = false\nexpose_component_ports = true\n";

const TIGHTENED: &str = "[security]\npod_security = \"restricted\"\nmax_requests_inflight = 150\n\
    terminated_pod_gc_threshold = 2000\n\
    [[security.namespace]]\nname = \"shop\"\nrequests_cpu = \"4\"\nrequests_memory = \"8Gi\"\n\
    limits_cpu = \"8\"\nlimits_memory = \"16Gi\"\npods = 50\ncontainer_cpu = \"250m\"\n\
    container_memory = \"256Mi\"\n\
    [[security.namespace]]\nname = \"lab\"\ndefault_deny = false\n";

/// The trees of a fully relaxed and a tightened inventory, for checks that run on every tree.
pub fn relaxed_and_tightened_files() -> Vec<(String, String, RenderedFile)> {
    let mut out = Vec::new();
    for (case, plan) in [
        ("relaxed", plan_with("1.34.1", RELAXED)),
        ("tightened", plan_with("1.34.1", TIGHTENED)),
    ] {
        for (host, files) in render(&plan, &apply_inputs()) {
            out.extend(
                files
                    .into_iter()
                    .map(|f| (case.to_string(), host.clone(), f)),
            );
        }
    }
    out
}

fn find<'a>(files: &'a [RenderedFile], path: &str) -> Option<&'a RenderedFile> {
    files.iter().find(|f| f.path == Path::new(path))
}

fn documents(f: &RenderedFile) -> Vec<Value> {
    serde_saphyr::from_multiple(text(f)).unwrap()
}

#[test]
fn every_file_holding_a_secret_is_0600() {
    let mut files = all_files(&apply_inputs());
    files.extend(relaxed_and_tightened_files());
    let mut holders = 0;
    for (case, host, f) in files {
        let t = text(&f);
        let secret = t.contains(TOKEN)
            || t.contains(KEY)
            || t.contains("PRIVATE KEY")
            || t.contains("client-key-data");
        if secret {
            holders += 1;
            assert_eq!(f.mode, 0o600, "{case}/{host}: {}", f.path.display());
        }
        assert!(
            f.mode & 0o002 == 0,
            "{case}/{host}: {} is world-writable",
            f.path.display()
        );
    }
    assert!(holders > 0);
}

#[test]
fn every_control_plane_gets_the_same_encryption_key() {
    let hosts = render(
        &crate::common::inventory_plan("three-host"),
        &apply_inputs(),
    );
    for files in hosts.values() {
        let f = find(files, ENCRYPTION_CONFIG_PATH).expect("encryption config");
        assert_eq!(f.mode, 0o600);
        assert!(!f.has_placeholder());
        let doc = &documents(f)[0];
        let provider = &doc["resources"][0]["providers"][0];
        assert_eq!(provider["secretbox"]["keys"][0]["secret"], KEY);
        assert_eq!(
            doc["resources"][0]["providers"][1],
            serde_json::json!({"identity": {}})
        );
    }
    // Without apply's key, the file keeps a placeholder apply refuses to upload.
    let placeholder = render(
        &crate::common::inventory_plan("three-host"),
        &RenderInputs::default(),
    );
    assert!(
        find(&placeholder["node-1"], ENCRYPTION_CONFIG_PATH)
            .unwrap()
            .has_placeholder()
    );
}

fn apiserver_args(files: &[RenderedFile]) -> Vec<(String, String)> {
    extra_args(files, "apiServer")
}

/// `ClusterConfiguration.<component>.extraArgs` of init.yaml as (name, value).
fn extra_args(files: &[RenderedFile], component: &str) -> Vec<(String, String)> {
    let init = find(files, "/etc/kubernetes/kubeadm/init.yaml").unwrap();
    let docs = documents(init);
    let cluster = docs
        .iter()
        .find(|d| d["kind"] == "ClusterConfiguration")
        .unwrap();
    cluster[component]["extraArgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn anonymous_auth_is_limited_to_health_and_discovery_from_1_32() {
    // 1.31: the anonymous conditions are alpha there; anonymous stays on, restricted by RBAC.
    let old = render(&plan_with("1.31.4", ""), &apply_inputs());
    assert!(find(&old["node-1"], AUTHENTICATION_CONFIG_PATH).is_none());
    let args = apiserver_args(&old["node-1"]);
    assert!(
        !args
            .iter()
            .any(|(n, _)| n.starts_with("anonymous-auth") || n == "authentication-config")
    );

    let new = render(&plan_with("1.32.0", ""), &apply_inputs());
    for host in ["node-1", "node-2", "node-3"] {
        let f = find(&new[host], AUTHENTICATION_CONFIG_PATH).expect("authentication config");
        let doc = &documents(f)[0];
        assert_eq!(doc["anonymous"]["enabled"], true);
        let paths: Vec<_> = doc["anonymous"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap())
            .collect();
        assert!(paths.contains(&"/livez") && paths.contains(&"/readyz"));
        assert!(paths.contains(&"/api/v1/namespaces/kube-public/configmaps/cluster-info"));
    }
    let args = apiserver_args(&new["node-1"]);
    assert!(args.contains(&(
        "authentication-config".into(),
        AUTHENTICATION_CONFIG_PATH.into()
    )));
    // --anonymous-auth and an `anonymous` section are mutually exclusive in the API server.
    assert!(!args.iter().any(|(n, _)| n == "anonymous-auth"));
}

#[test]
fn hardened_defaults_are_rendered() {
    let hosts = render(&plan_with("1.32.0", ""), &apply_inputs());
    let args = apiserver_args(&hosts["node-1"]);
    for (name, value) in [
        ("authorization-mode", "Node,RBAC"),
        ("profiling", "false"),
        ("tls-min-version", "VersionTLS12"),
        ("encryption-provider-config", ENCRYPTION_CONFIG_PATH),
        (
            "admission-control-config-file",
            "/etc/kubernetes/admission/config.yaml",
        ),
        ("audit-policy-file", "/etc/kubernetes/audit/policy.yaml"),
        // Three nodes: a small cluster.
        ("max-requests-inflight", "200"),
        ("max-mutating-requests-inflight", "100"),
    ] {
        assert!(
            args.contains(&(name.into(), value.into())),
            "{name}={value} in {args:?}"
        );
    }
    let init = documents(find(&hosts["node-1"], "/etc/kubernetes/kubeadm/init.yaml").unwrap());
    let kubelet = init
        .iter()
        .find(|d| d["kind"] == "KubeletConfiguration")
        .unwrap();
    assert_eq!(kubelet["authentication"]["anonymous"]["enabled"], false);
    assert_eq!(kubelet["authorization"]["mode"], "Webhook");
    assert_eq!(kubelet["readOnlyPort"], 0);
    assert_eq!(kubelet["serverTLSBootstrap"], true);
    assert_eq!(kubelet["protectKernelDefaults"], true);
    let sysctl = text(find(&hosts["node-2"], "/etc/sysctl.d/90-kbs.conf").unwrap());
    for line in [
        "vm.overcommit_memory = 1",
        "vm.panic_on_oom = 0",
        "kernel.panic = 10",
        "kernel.panic_on_oops = 1",
        "kernel.keys.root_maxkeys = 1000000",
        "kernel.keys.root_maxbytes = 25000000",
    ] {
        assert!(sysctl.lines().any(|l| l == line), "{line}");
    }
    let admission =
        &documents(find(&hosts["node-3"], "/etc/kubernetes/admission/config.yaml").unwrap())[0];
    let psa = &admission["plugins"][0]["configuration"];
    assert_eq!(psa["defaults"]["enforce"], "baseline");
    assert_eq!(psa["defaults"]["warn"], "restricted");
    assert_eq!(psa["defaults"]["audit"], "restricted");
    assert_eq!(
        psa["exemptions"]["namespaces"],
        serde_json::json!(["kube-system"])
    );
}

#[test]
fn controller_manager_and_scheduler_follow_the_cis_benchmark() {
    let args = |plan: &ClusterPlan, component: &str| {
        extra_args(&render(plan, &apply_inputs())["node-1"], component)
    };
    let has = |args: &[(String, String)], name: &str, value: &str| {
        args.contains(&(name.to_string(), value.to_string()))
    };
    let plan = plan_with("1.32.0", "");
    let cm = args(&plan, "controllerManager");
    let sched = args(&plan, "scheduler");
    for a in [&cm, &sched] {
        assert!(has(a, "profiling", "false"), "{a:?}");
        assert!(has(a, "bind-address", "127.0.0.1"), "{a:?}");
        assert!(has(a, "tls-min-version", "VersionTLS12"), "{a:?}");
        assert!(
            a.iter()
                .any(|(n, v)| n == "tls-cipher-suites" && !v.contains("CBC"))
        );
    }
    assert!(has(&cm, "use-service-account-credentials", "true"));
    // Three nodes: the 500 floor.
    assert!(has(&cm, "terminated-pod-gc-threshold", "500"), "{cm:?}");
    // What kbs check expects is what is rendered.
    for (component, got) in [
        (kbs::render::Component::ControllerManager, &cm),
        (kbs::render::Component::Scheduler, &sched),
    ] {
        let want: Vec<(String, String)> = kbs::render::component_flags(&plan, component)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        assert_eq!(&want, got);
    }

    let tightened = args(&plan_with("1.34.1", TIGHTENED), "controllerManager");
    assert!(has(&tightened, "terminated-pod-gc-threshold", "2000"));
    let relaxed = plan_with("1.34.1", RELAXED);
    for component in ["controllerManager", "scheduler"] {
        let a = args(&relaxed, component);
        assert!(has(&a, "bind-address", "0.0.0.0"), "{a:?}");
        assert!(!a.iter().any(|(n, _)| n == "profiling"), "{a:?}");
    }
}

#[test]
fn every_relaxation_changes_what_is_rendered() {
    let hosts = render(&plan_with("1.34.1", RELAXED), &apply_inputs());
    let files = &hosts["node-1"];
    for path in [
        AUTHENTICATION_CONFIG_PATH,
        ENCRYPTION_CONFIG_PATH,
        "/etc/kubernetes/audit/policy.yaml",
        "/etc/kubernetes/kubeadm/patches/kubeletconfiguration+merge.yaml",
    ] {
        assert!(find(files, path).is_none(), "{path}");
    }
    let names: Vec<_> = apiserver_args(files).into_iter().map(|(n, _)| n).collect();
    for gone in [
        "profiling",
        "audit-log-path",
        "encryption-provider-config",
        "authentication-config",
    ] {
        assert!(!names.iter().any(|n| n == gone), "{gone}");
    }
    let init = text(find(files, "/etc/kubernetes/kubeadm/init.yaml").unwrap());
    assert!(
        init.contains("serverTLSBootstrap: false") && init.contains("protectKernelDefaults: false")
    );
    assert!(!init.contains("patches:"));
    assert!(!text(find(files, "/etc/sysctl.d/90-kbs.conf").unwrap()).contains("kernel.panic"));
    let admission = text(find(files, "/etc/kubernetes/admission/config.yaml").unwrap());
    assert!(admission.contains("enforce: \"privileged\""));
}

#[test]
fn node_allocatable_comes_from_host_facts_or_a_marked_default() {
    let hosts = render(
        &crate::common::inventory_plan("three-host"),
        &apply_inputs(),
    );
    let patch = |host: &str| {
        let f = find(
            &hosts[host],
            "/etc/kubernetes/kubeadm/patches/kubeletconfiguration+merge.yaml",
        )
        .unwrap();
        (text(f).to_string(), documents(f).remove(0))
    };
    // node-1: 8 CPUs, 16 GiB from facts.
    let (t, doc) = patch("node-1");
    assert!(t.contains("sized for this host: 8 CPUs, 16384 MiB"));
    assert_eq!(doc["kubeReserved"]["cpu"], "90m");
    assert_eq!(doc["kubeReserved"]["memory"], "2663Mi");
    assert_eq!(doc["systemReserved"]["memory"], "819Mi");
    assert_eq!(doc["evictionHard"]["memory.available"], "163Mi");
    // node-2: no facts.
    let (t, doc) = patch("node-2");
    assert!(t.contains("CONSERVATIVE DEFAULT, no host facts"));
    assert_eq!(doc["kubeReserved"]["memory"], "512Mi");
    let join = text(find(&hosts["node-2"], "/etc/kubernetes/kubeadm/join.yaml").unwrap());
    assert!(join.contains("directory: \"/etc/kubernetes/kubeadm/patches\""));
}

#[test]
fn etcd_takes_client_certificates_only_and_serves_plain_http_on_loopback_only() {
    for (case, host, f) in crate::common::files_ending(&RenderInputs::default(), ".env") {
        let vars: std::collections::BTreeMap<&str, &str> = text(&f)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let at = format!("{case}/{host}: {}", f.path.display());
        assert_eq!(vars["ETCD_CLIENT_CERT_AUTH"], "true", "{at}");
        assert_eq!(vars["ETCD_PEER_CLIENT_CERT_AUTH"], "true", "{at}");
        for key in [
            "ETCD_TRUSTED_CA_FILE",
            "ETCD_PEER_TRUSTED_CA_FILE",
            "ETCD_CERT_FILE",
            "ETCD_KEY_FILE",
        ] {
            assert!(
                vars[key].starts_with(kbs::pki::REMOTE_ETCD_PKI_DIR),
                "{at}: {key}"
            );
        }
        for key in [
            "ETCD_LISTEN_CLIENT_URLS",
            "ETCD_ADVERTISE_CLIENT_URLS",
            "ETCD_LISTEN_PEER_URLS",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        ] {
            assert!(
                vars[key].split(',').all(|u| u.starts_with("https://")),
                "{at}: {key}={}",
                vars[key]
            );
        }
        assert!(
            vars["ETCD_LISTEN_METRICS_URLS"].starts_with("http://127.0.0.1:"),
            "{at}"
        );
        for unsafe_var in [
            "ETCD_AUTO_TLS",
            "ETCD_PEER_AUTO_TLS",
            "ETCD_LISTEN_CLIENT_HTTP_URLS",
        ] {
            assert!(!vars.contains_key(unsafe_var), "{at}: {unsafe_var}");
        }
    }
}

/// Round trip through k8s-openapi: a field the type does not know would be dropped.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, at: &str) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
    assert_eq!(&serde_json::to_value(&typed).unwrap(), doc, "{at}");
}

#[test]
fn namespace_baselines_are_real_objects_on_the_first_control_plane() {
    let hosts = render(&plan_with("1.34.1", TIGHTENED), &apply_inputs());
    assert!(
        hosts["node-2"]
            .iter()
            .all(|f| !f.path.starts_with("/etc/kbs/baselines"))
    );
    let shop = find(&hosts["node-1"], "/etc/kbs/baselines/shop.yaml").unwrap();
    let lab = find(&hosts["node-1"], "/etc/kbs/baselines/lab.yaml").unwrap();
    let mut kinds = Vec::new();
    for f in [shop, lab] {
        for doc in documents(f) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            let at = format!("{}: {kind}", f.path.display());
            match kind.as_str() {
                "Namespace" => round_trip::<Namespace>(&doc, &at),
                "ResourceQuota" => round_trip::<ResourceQuota>(&doc, &at),
                "LimitRange" => round_trip::<LimitRange>(&doc, &at),
                "NetworkPolicy" => round_trip::<NetworkPolicy>(&doc, &at),
                other => panic!("{at}: unexpected {other}"),
            }
            if kind != "Namespace" {
                assert_eq!(doc["metadata"]["namespace"], doc_namespace(f), "{at}");
            }
            kinds.push(format!(
                "{}/{kind}",
                f.path.file_stem().unwrap().to_string_lossy()
            ));
        }
    }
    assert_eq!(
        kinds,
        [
            "shop/Namespace",
            "shop/ResourceQuota",
            "shop/LimitRange",
            "shop/NetworkPolicy",
            "lab/Namespace"
        ]
    );
    let quota = &documents(shop)[1];
    assert_eq!(quota["spec"]["hard"]["pods"], "50");
    assert_eq!(quota["spec"]["hard"]["requests.memory"], "8Gi");
}

fn doc_namespace(f: &RenderedFile) -> String {
    f.path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn plan_warns_for_each_relaxed_default_only() {
    let base = std::fs::read_to_string(inventory("three-host.toml")).unwrap();
    let (_d, strict) = write_inventory(&format!("{base}\n{TIGHTENED}"));
    let out = stdout_of(kbs().arg("plan").arg(&strict));
    assert!(!out.contains("security:"), "{out}");
    // The namespace baselines are a step of apply, after the CNI and before the addons and verify.
    assert!(
        out.contains(
            "namespace baselines shop, lab: kubectl apply on node-1 where the cluster differs; addons "
        ),
        "{out}"
    );
    let (_d, relaxed) = write_inventory(&format!("{base}\n{RELAXED}"));
    let out = stdout_of(kbs().arg("plan").arg(&relaxed).args(["--output", "json"]));
    let plan: Value = serde_json::from_str(&out).unwrap();
    let warnings: Vec<_> = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str().filter(|w| w.starts_with("security:")))
        .collect();
    assert_eq!(warnings.len(), 9, "{warnings:#?}");
}
