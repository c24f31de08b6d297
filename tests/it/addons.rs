//! Addons (`[addons]`): every object kbs renders is a valid object of the Kubernetes API (its
//! typed struct reads and writes it back without losing a field), and on the lab the addons are
//! applied after the CNI through the API into etcd, with their images in the bundle and in
//! containerd on every node; a second run changes nothing, an object deleted by hand comes back,
//! an object a new release drops is deleted, and an addon turned off loses exactly its objects.

use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kbs::inventory::{Addon, AddonKind, Inventory};
use kbs::phases::addons::{ADDON_LABEL, MANAGED_BY, render};
use kbs::plan::ClusterPlan;
use kbs::render::{Templates, addon_manifest};
use serde_json::Value;

use crate::cni::{bundle_of, changed_bundle};
use crate::common::{api_get, api_send, apply, ok, root};
use crate::lab::{Lab, up};

/// The lab's manifest of each addon with a release manifest (what the lab mirror serves at the
/// release's URL); kbs's own objects for the others.
fn manifest(a: &Addon, inv: &Inventory) -> String {
    let file = match a.kind {
        AddonKind::MetricsServer => "metrics-server.yaml",
        AddonKind::LocalPathProvisioner => "local-path-storage.yaml",
        AddonKind::GatewayApi => GATEWAY_API_FILE,
        AddonKind::Monitoring | AddonKind::Grafana | AddonKind::Logging | AddonKind::Ingress => {
            let plan = ClusterPlan::new(inv.clone());
            return addon_manifest(&plan, &Templates::builtin().expect("templates"), a)
                .expect("renders")
                .expect("kbs renders these");
        }
    };
    std::fs::read_to_string(root().join("tests/lab/addons").join(file)).expect("lab manifest")
}

/// The lab's standard-install.yaml of the Gateway API: its CRDs carry upstream's schema for the
/// fields of the GatewayClass and the Gateway kbs renders.
const GATEWAY_API_FILE: &str = "gateway-api-standard-install.yaml";

/// `obj`, a custom resource, checked against its CRD's schema in the lab's Gateway API file with
/// the API server stand-in's validator (tests/lab/standins/crd-schema-check).
fn assert_valid_custom_resource(obj: &Value) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, obj.to_string()).expect("write");
    let out = std::process::Command::new("python3")
        .arg(root().join("tests/lab/standins/crd-schema-check"))
        .arg(root().join("tests/lab/addons").join(GATEWAY_API_FILE))
        .arg(&file)
        .output()
        .expect("crd-schema-check");
    assert!(
        out.status.success(),
        "{} {}: {}{}",
        obj["kind"],
        obj["metadata"]["name"],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `obj` read into `T` and written back: the same JSON, so no field is unknown or misspelt.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) {
    let typed: T = serde_json::from_value(obj.clone())
        .unwrap_or_else(|e| panic!("{e}: not a valid {}: {obj:#}", obj["kind"]));
    let back = serde_json::to_value(&typed).expect("serialise");
    // By value: a schema's `maximum: 65535` comes back as 65535.0 (a float in the typed struct).
    assert_eq!(
        numbers_as_floats(&back),
        numbers_as_floats(obj),
        "fields lost in the typed round trip"
    );
}

fn numbers_as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| serde_json::json!(f)),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Checks `obj` against the API's typed struct for its apiVersion and kind (k8s-openapi, the
/// oldest Kubernetes minor kbs deploys); a kind with no check here fails the test.
fn assert_valid_object(obj: &Value) {
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    match (av, kind) {
        ("v1", "Namespace") => round_trip::<Namespace>(obj),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(obj),
        ("v1", "Service") => round_trip::<Service>(obj),
        ("v1", "ConfigMap") => {
            round_trip::<ConfigMap>(obj);
            // local-path-provisioner's helper pod, created from this text at run time.
            if let Some(pod) = obj["data"]["helperPod.yaml"].as_str() {
                let pod: Value = serde_saphyr::from_str(pod).expect("helperPod.yaml is YAML");
                round_trip::<Pod>(&pod);
            }
        }
        ("apps/v1", "Deployment") => round_trip::<Deployment>(obj),
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(obj)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(obj),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(obj),
        ("storage.k8s.io/v1", "StorageClass") => round_trip::<StorageClass>(obj),
        ("networking.k8s.io/v1", "IngressClass") => round_trip::<IngressClass>(obj),
        ("apiregistration.k8s.io/v1", "APIService") => round_trip::<APIService>(obj),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            round_trip::<CustomResourceDefinition>(obj)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            round_trip::<ValidatingAdmissionPolicy>(obj)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            round_trip::<ValidatingAdmissionPolicyBinding>(obj)
        }
        ("gateway.networking.k8s.io/v1", _) => assert_valid_custom_resource(obj),
        other => panic!("no typed check for {other:?}: add its k8s-openapi type here"),
    }
}

fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every `image:` a rendered manifest names (also inside a ConfigMap's embedded YAML).
fn images_named(yaml: &str) -> Vec<String> {
    let mut out: Vec<String> = yaml
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("image: "))
        .map(|i| i.trim_matches(['"', '\'']).to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn lab_like_inventory(extra: &str) -> Inventory {
    let text = format!(
        "[cluster]\nname = \"t\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
         [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\n\
         [registry]\naddress = \"192.0.2.3:5000\"\n{extra}\n\
         [[host]]\nname = \"n1\"\naddress = \"192.0.2.11\"\n\
         [[host]]\nname = \"n2\"\naddress = \"192.0.2.12\"\n\
         [[host]]\nname = \"n3\"\naddress = \"192.0.2.13\"\n"
    );
    Inventory::parse(Path::new("i.toml"), &text).expect("valid")
}

#[test]
fn rendered_addon_objects_are_valid_api_objects_whose_images_the_bundle_holds() {
    let inv = lab_like_inventory("");
    let kinds: Vec<AddonKind> = inv.addons.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        AddonKind::ALL[..3],
        "all addons but logging (no output) are on by default on 3 hosts"
    );
    let bundled: Vec<String> = inv.images().into_iter().map(|w| w.name).collect();
    for a in &inv.addons {
        let yaml = render(a, &manifest(a, &inv), &inv, &[]).expect("renders");
        let objs = objects(&yaml);
        assert!(objs.len() > 3, "{yaml}");
        for o in &objs {
            assert_valid_object(o);
            assert_eq!(o["metadata"]["labels"][MANAGED_BY], "kbs");
            assert_eq!(o["metadata"]["labels"][ADDON_LABEL], a.kind.as_str());
        }
        for image in images_named(&yaml) {
            assert!(
                image.starts_with("192.0.2.3:5000/") && bundled.contains(&image),
                "{image} of {} is not one of the bundle's images {bundled:?}",
                a.describe()
            );
        }
    }
}

#[test]
fn a_misspelt_field_fails_the_typed_check() {
    let bad: Value = serde_json::json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "x"}, "provisioner": "p", "volumeBindingMod": "WaitForFirstConsumer"
    });
    let caught = std::panic::catch_unwind(|| assert_valid_object(&bad));
    assert!(caught.is_err(), "volumeBindingMod slipped through");
}

#[test]
fn addons_can_be_turned_off_and_metrics_server_needs_verifiable_kubelets() {
    let inv = lab_like_inventory(
        "[addons]\nmetrics_server = false\nstorage = \"none\"\nmonitoring = false\n",
    );
    assert!(inv.addons.is_empty());
    assert!(
        inv.images()
            .iter()
            .all(|w| !w.name.contains("metrics-server") && !w.name.contains("busybox"))
    );
    // Without signed kubelet serving certificates metrics-server is off unless asked for, and
    // asking for it is an error naming the field.
    let inv = lab_like_inventory("[security]\nkubelet_serving_certificates = false\n");
    assert_eq!(
        inv.addons.iter().map(|a| a.kind).collect::<Vec<_>>(),
        [AddonKind::LocalPathProvisioner, AddonKind::Monitoring]
    );
    assert_eq!(inv.addons_off_by_default[0].0, AddonKind::MetricsServer);
    let text = "[cluster]\nname = \"t\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
                [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\n\
                [security]\nkubelet_serving_certificates = false\n\
                [addons]\nmetrics_server = true\nstorage = \"local-pth\"\n\
                [[host]]\nname = \"n1\"\naddress = \"192.0.2.11\"\n";
    let e = Inventory::parse(Path::new("inv.toml"), text).expect_err("refused");
    let first = &e.errors[0];
    assert!(
        first.message.contains("unknown variant `local-pth`"),
        "{}",
        first.message
    );
    assert_eq!(first.location(), "inv.toml:12:11");
    assert!(
        first
            .help
            .as_deref()
            .unwrap_or_default()
            .contains("did you mean `local-path`"),
        "{:?}",
        first.help
    );
    let text = text.replace("local-pth", "local-path");
    let e = Inventory::parse(Path::new("inv.toml"), &text).expect_err("refused");
    let first = &e.errors[0];
    assert_eq!(first.location(), "inv.toml:11:18");
    assert!(
        first
            .message
            .contains("addons.metrics_server = true needs kubelet serving certificates"),
        "{}",
        first.message
    );
}

#[test]
fn monitoring_is_on_from_two_hosts_and_the_plan_says_why_not_on_one() {
    let one = "[cluster]\nname = \"t\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
               [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\n{extra}\n\
               [[host]]\nname = \"n1\"\naddress = \"192.0.2.11\"\n";
    let parse = |extra: &str| {
        Inventory::parse(Path::new("i.toml"), &one.replace("{extra}", extra)).expect("valid")
    };
    let inv = parse("");
    assert!(inv.addons.iter().all(|a| a.kind != AddonKind::Monitoring));
    assert_eq!(inv.addons_off_by_default.len(), 1);
    assert_eq!(inv.addons_off_by_default[0].0, AddonKind::Monitoring);
    let (dir, path) = crate::common::write_inventory(&one.replace("{extra}", ""));
    let plan = crate::common::stdout_of(crate::common::kbs().args(["plan"]).arg(&path));
    drop(dir);
    assert!(
        plan.contains("monitoring") && plan.contains("off by default on a 1-host cluster"),
        "{plan}"
    );
    // Asked for on one host: on, and no reason to give.
    let inv = parse("[addons]\nmonitoring = true\n");
    assert!(inv.addons.iter().any(|a| a.kind == AddonKind::Monitoring));
    assert!(inv.addons_off_by_default.is_empty());
    // Turned off on three: off, no images in the bundle.
    let inv = lab_like_inventory("[addons]\nmonitoring = false\n");
    assert!(inv.addons.iter().all(|a| a.kind != AddonKind::Monitoring));
    assert!(inv.addons_off_by_default.is_empty());
    assert!(inv.images().iter().all(|w| !w.name.contains("prometheus")));
    let e = Inventory::parse(
        Path::new("inv.toml"),
        &one.replace("{extra}", "[addons]\nmonitoring = \"yes\"\n"),
    )
    .expect_err("not a bool");
    assert_eq!(e.errors[0].location(), "inv.toml:9:14");
}

/// The rendered monitoring ConfigMap's files, checked by Prometheus's own promtool (Debian's
/// `prometheus` package; tests/run installs it): the alert rules, and the configuration but for
/// its Kubernetes service discovery.
#[test]
fn monitoring_config_and_alert_rules_pass_promtool() {
    let inv = lab_like_inventory("");
    let a = inv
        .addons
        .iter()
        .find(|a| a.kind == AddonKind::Monitoring)
        .expect("on for 3 hosts");
    let yaml = render(a, &manifest(a, &inv), &inv, &[]).expect("renders");
    let cm = objects(&yaml)
        .into_iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the prometheus ConfigMap");
    let dir = tempfile::tempdir().expect("tmp");
    let rules = dir.path().join("kbs-alerts.yml");
    std::fs::write(
        &rules,
        cm["data"]["kbs-alerts.yml"].as_str().expect("rules"),
    )
    .expect("write");
    let config = cm["data"]["prometheus.yml"].as_str().expect("config");
    // Every member's metrics listener is a target, and the rules name what the issue asks for.
    for m in ["192.0.2.11:2381", "192.0.2.12:2381", "192.0.2.13:2381"] {
        assert!(config.contains(m), "{m} not scraped:\n{config}");
    }
    let text = cm["data"]["kbs-alerts.yml"].as_str().unwrap_or_default();
    for alert in [
        "EtcdMemberDown",
        "EtcdQuorumAtRisk",
        "EtcdNoLeader",
        "EtcdDatabaseNearQuota",
        "APIServerErrors",
        "NodeNotReady",
        "KbsCertificateExpiresSoon",
        "KbsCertificateRenewalOverdue",
    ] {
        assert!(text.contains(&format!("alert: {alert}")), "{alert}");
    }
    assert!(text.contains("> 0.8\n"), "kbs status's 80%:\n{text}");
    let config = config.replace(
        "/etc/prometheus/kbs-alerts.yml",
        &rules.display().to_string(),
    );
    // Debian builds Prometheus without Kubernetes service discovery, so its promtool refuses
    // `kubernetes_sd_configs`: those blocks go (what they select is tested on a real cluster
    // only); the rest of each job is checked.
    let mut config: Value = serde_saphyr::from_str(&config).expect("config is YAML");
    let mut discovered = 0;
    for job in config["scrape_configs"].as_array_mut().expect("jobs") {
        if let Some(job) = job.as_object_mut()
            && job.remove("kubernetes_sd_configs").is_some()
        {
            discovered += 1;
        }
    }
    assert_eq!(discovered, 3, "apiserver, kubelet, node-exporter");
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(
        &config_path,
        serde_saphyr::to_string(&config).expect("YAML"),
    )
    .expect("write");
    promtool(&["check", "rules"], Some(&rules), None);
    // What fires, on made-up series (promtool's clock starts at 0).
    let summary = |alert: &str| -> String {
        let groups: Value = serde_saphyr::from_str(text).expect("rules YAML");
        groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .find(|r| r["alert"] == alert)
            .and_then(|r| r["annotations"]["summary"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no {alert}"))
    };
    let cert = "kbs_certificate_expiry_timestamp_seconds";
    let day = 86_400;
    let tests = serde_json::json!({
        "rule_files": [rules.display().to_string()],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                // 10 days left: past kbs's renewal point (30 days) and its warning (90).
                {"series": format!("{cert}{{path=\"/a.crt\"}}"), "values": format!("{}x20", 10 * day)},
                // 60 days left: warned about only. 200 days: nothing.
                {"series": format!("{cert}{{path=\"/b.crt\"}}"), "values": format!("{}x20", 60 * day)},
                {"series": format!("{cert}{{path=\"/c.crt\"}}"), "values": format!("{}x20", 200 * day)},
                // One of three etcd members answers: no quorum.
                {"series": "up{job=\"etcd\",instance=\"m1\"}", "values": "1x20"},
                {"series": "up{job=\"etcd\",instance=\"m2\"}", "values": "0x20"},
                {"series": "up{job=\"etcd\",instance=\"m3\"}", "values": "0x20"},
                // 84% of the 2 GiB quota, for 20 minutes.
                {"series": "etcd_mvcc_db_total_size_in_bytes{job=\"etcd\",instance=\"m1\"}", "values": "1800000000x20"},
                {"series": "etcd_server_quota_backend_bytes{job=\"etcd\",instance=\"m1\"}", "values": "2147483648x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "KbsCertificateRenewalOverdue", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "path": "/a.crt"},
                     "exp_annotations": {"summary": summary("KbsCertificateRenewalOverdue")}}]},
                {"eval_time": "2m", "alertname": "KbsCertificateExpiresSoon", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "path": "/a.crt"},
                     "exp_annotations": {"summary": summary("KbsCertificateExpiresSoon")}},
                    {"exp_labels": {"severity": "warning", "path": "/b.crt"},
                     "exp_annotations": {"summary": summary("KbsCertificateExpiresSoon")}}]},
                {"eval_time": "3m", "alertname": "EtcdQuorumAtRisk", "exp_alerts": [
                    {"exp_labels": {"severity": "critical"},
                     "exp_annotations": {"summary": summary("EtcdQuorumAtRisk")}}]},
                {"eval_time": "5m", "alertname": "EtcdDatabaseNearQuota", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "EtcdDatabaseNearQuota", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "job": "etcd", "instance": "m1"},
                     "exp_annotations": {"summary": summary("EtcdDatabaseNearQuota")}}]},
            ],
        }],
    });
    let tests_path = dir.path().join("tests.yml");
    std::fs::write(&tests_path, tests.to_string()).expect("write");
    promtool(&["test", "rules"], Some(&tests_path), None);
    // --syntax-only: the service account's files exist only in the pod.
    promtool(
        &["check", "config", "--syntax-only"],
        Some(&config_path),
        None,
    );
}

/// `promtool ARGS [FILE]`, with `stdin` on its standard input; fails the test with its report.
fn promtool(args: &[&str], file: Option<&Path>, stdin: Option<&str>) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .args(file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; tests/run installs it)");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write to promtool");
    drop(input);
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn etcd_metrics_listen_on_the_member_address_only_with_monitoring() {
    let env_of = |inv: &Inventory| {
        let files = crate::common::render(
            &ClusterPlan::new(inv.clone()),
            &kbs::render::RenderInputs::default(),
        );
        let f = files["n1"]
            .iter()
            .find(|f| {
                f.path.extension().is_some_and(|e| e == "env")
                    && f.path.starts_with("/etc/kbs/etcd")
            })
            .expect("etcd member env");
        crate::common::text(f)
            .lines()
            .find(|l| l.starts_with("ETCD_LISTEN_METRICS_URLS="))
            .expect("metrics URLs")
            .to_string()
    };
    assert_eq!(
        env_of(&lab_like_inventory("")),
        "ETCD_LISTEN_METRICS_URLS=http://127.0.0.1:2381,http://192.0.2.11:2381"
    );
    assert_eq!(
        env_of(&lab_like_inventory("[addons]\nmonitoring = false\n")),
        "ETCD_LISTEN_METRICS_URLS=http://127.0.0.1:2381"
    );
}

fn ingress_objects(inv: &Inventory) -> Vec<Value> {
    let a = inv
        .addons
        .iter()
        .find(|a| a.kind == AddonKind::Ingress)
        .expect("on with [addons.ingress]");
    let yaml = render(a, &manifest(a, inv), inv, &[]).expect("renders");
    let bundled: Vec<String> = inv.images().into_iter().map(|w| w.name).collect();
    for image in images_named(&yaml) {
        assert!(bundled.contains(&image), "{image} not in {bundled:?}");
    }
    let objs = objects(&yaml);
    for o in &objs {
        assert_valid_object(o);
        assert_eq!(o["metadata"]["labels"][ADDON_LABEL], "ingress");
    }
    objs
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn ingress_is_off_until_asked_for_and_exposed_as_the_inventory_says() {
    let inv = lab_like_inventory("");
    assert!(inv.addons.iter().all(|a| a.kind != AddonKind::Ingress));
    assert!(inv.images().iter().all(|w| !w.name.contains("traefik")));

    // On node ports (the default): a Deployment behind a NodePort Service; the class is default.
    let objs = ingress_objects(&lab_like_inventory("[addons.ingress]\n"));
    let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "IngressClass",
            "Deployment",
            "Service"
        ]
    );
    let class = of_kind(&objs, "IngressClass");
    assert_eq!(class["spec"]["controller"], "traefik.io/ingress-controller");
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );
    let svc = of_kind(&objs, "Service");
    assert_eq!(svc["spec"]["type"], "NodePort");
    let node_ports: Vec<&Value> = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| &p["nodePort"])
        .collect();
    assert_eq!(node_ports, [30080, 30443]);
    let pod = &of_kind(&objs, "Deployment")["spec"]["template"]["spec"];
    assert!(!pod.to_string().contains("hostPort"), "{pod}");
    assert_eq!(
        of_kind(&objs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // Other node ports, not the default class.
    let objs = ingress_objects(&lab_like_inventory(
        "[addons.ingress]\nhttp_node_port = 31080\nhttps_node_port = 31443\ndefault_class = false\n",
    ));
    assert_eq!(
        of_kind(&objs, "Service")["spec"]["ports"][1]["nodePort"],
        31443
    );
    assert!(
        of_kind(&objs, "IngressClass")["metadata"]
            .get("annotations")
            .is_none()
    );

    // On the VIP: a DaemonSet on the control planes, tolerating their taint, on host ports 80
    // and 443 (so its namespace is privileged), and no node ports.
    let objs = ingress_objects(&lab_like_inventory(
        "[addons.ingress]\nexposure = \"vip\"\n",
    ));
    let ds = of_kind(&objs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"]["node-role.kubernetes.io/control-plane"],
        ""
    );
    assert_eq!(
        pod["tolerations"][0]["key"],
        "node-role.kubernetes.io/control-plane"
    );
    let host_ports: Vec<&Value> = pod["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p.get("hostPort"))
        .collect();
    assert_eq!(host_ports, [80, 443]);
    assert_eq!(of_kind(&objs, "Service")["spec"]["type"], "ClusterIP");
    assert!(!of_kind(&objs, "Service").to_string().contains("nodePort"));
    assert_eq!(
        of_kind(&objs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

#[test]
fn the_gateway_api_option_installs_its_crds_server_side_before_a_gateway_they_accept() {
    let inv = lab_like_inventory("[addons.ingress]\n");
    assert!(inv.addons.iter().all(|a| a.kind != AddonKind::GatewayApi));
    let objs = ingress_objects(&inv);
    assert!(objs.iter().all(|o| o["kind"] != "Gateway"));
    assert!(
        !serde_json::to_string(&objs)
            .expect("json")
            .contains("kubernetesgateway")
    );

    let inv = lab_like_inventory("[addons.ingress]\nexposure = \"vip\"\ngateway_api = true\n");
    let kinds: Vec<AddonKind> = inv.addons.iter().map(|a| a.kind).collect();
    let at = |k| kinds.iter().position(|x| *x == k).expect("on");
    assert!(
        at(AddonKind::GatewayApi) < at(AddonKind::Ingress),
        "{kinds:?}"
    );
    let crds = inv
        .addons
        .iter()
        .find(|a| a.kind == AddonKind::GatewayApi)
        .expect("on");
    assert!(crds.server_side && crds.images.is_empty());
    assert_eq!(
        crds.manifest_url.as_deref(),
        Some(
            "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.3/standard-install.yaml"
        )
    );
    // kbs's rendering of the release's file keeps every object valid, the CRDs included.
    let yaml = render(crds, &manifest(crds, &inv), &inv, &[]).expect("renders");
    let defined: Vec<String> = objects(&yaml)
        .iter()
        .inspect(|o| assert_valid_object(o))
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|o| {
            o["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for k in [
        "GatewayClass",
        "Gateway",
        "HTTPRoute",
        "GRPCRoute",
        "ReferenceGrant",
    ] {
        assert!(defined.iter().any(|d| d == k), "{k} not in {defined:?}");
    }

    // Traefik serves the class with its Gateway provider, may read and report on those kinds,
    // and the Gateway (checked against its CRD's schema) listens on the web entry point.
    let objs = ingress_objects(&inv);
    let args = of_kind(&objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string();
    assert!(
        args.contains("--providers.kubernetesgateway=true"),
        "{args}"
    );
    let rules = of_kind(&objs, "ClusterRole")["rules"].to_string();
    for r in [
        "\"gateways\"",
        "\"httproutes\"",
        "\"gateways/status\"",
        "\"namespaces\"",
    ] {
        assert!(rules.contains(r), "{r} not in {rules}");
    }
    let class = of_kind(&objs, "GatewayClass");
    assert_eq!(
        class["spec"]["controllerName"],
        "traefik.io/gateway-controller"
    );
    let gw = of_kind(&objs, "Gateway");
    assert_eq!(gw["metadata"]["namespace"], "kbs-ingress");
    assert_eq!(gw["spec"]["gatewayClassName"], "traefik");
    let web = &gw["spec"]["listeners"][0];
    assert_eq!(
        (web["port"].as_u64(), web["protocol"].as_str()),
        (Some(8000), Some("HTTP"))
    );
    let entry_points =
        of_kind(&objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["ports"]
            .to_string();
    assert!(entry_points.contains("8000"), "{entry_points}");
    // kbs plan says what it gets.
    let (dir, path) = crate::common::write_inventory(
        "[cluster]\nname = \"t\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
         [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\n\
         [addons.ingress]\ngateway_api = true\n[[host]]\nname = \"n1\"\naddress = \"192.0.2.11\"\n",
    );
    let plan = crate::common::stdout_of(crate::common::kbs().args(["plan"]).arg(&path));
    drop(dir);
    assert!(
        plan.contains("gateway-api")
            && plan.contains("v1.6.3")
            && plan.contains("GatewayClass traefik"),
        "{plan}"
    );
}

#[test]
fn ingress_settings_the_cluster_cannot_have_are_refused_where_written() {
    let text = |endpoint: &str, ingress: &str| {
        format!(
            "[cluster]\nname = \"t\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
             [endpoint]\n{endpoint}\n\
             [addons.ingress]\n{ingress}\
             [[host]]\nname = \"n1\"\naddress = \"192.0.2.11\"\n"
        )
    };
    let refused = |endpoint: &str, ingress: &str| {
        let e =
            Inventory::parse(Path::new("inv.toml"), &text(endpoint, ingress)).expect_err("refused");
        let first = &e.errors[0];
        (
            first.location(),
            format!(
                "{} {}",
                first.message,
                first.help.as_deref().unwrap_or_default()
            ),
        )
    };
    let vip = "mode = \"vip\"\naddress = \"192.0.2.100\"";
    let (at, why) = refused(
        "mode = \"external\"\naddress = \"lb.example.net\"",
        "exposure = \"vip\"\n",
    );
    assert_eq!(at, "inv.toml:9:12");
    assert!(
        why.contains("needs a VIP, but endpoint.mode is \"external\""),
        "{why}"
    );
    let (at, why) = refused(vip, "exposure = \"node-port\"\n");
    assert_eq!(at, "inv.toml:9:12");
    assert!(why.contains("did you mean `node-ports`"), "{why}");
    let (at, why) = refused(vip, "http_node_port = 8080\n");
    assert_eq!(at, "inv.toml:9:18");
    assert!(why.contains("outside the node port range"), "{why}");
    let (_, why) = refused(vip, "http_node_port = 30443\n");
    assert!(why.contains("both 30443"), "{why}");
    let (at, why) = refused(vip, "exposure = \"vip\"\nhttps_node_port = 30443\n");
    assert_eq!(at, "inv.toml:10:19");
    assert!(
        why.contains("node ports are for exposure = \"node-ports\""),
        "{why}"
    );
    let (_, why) = refused(&format!("{vip}\nport = 443"), "exposure = \"vip\"\n");
    assert!(why.contains("takes ports 80 and 443"), "{why}");
    let (_, why) = refused(vip, "exposure = \"vip\"\nclass = \"x\"\n");
    assert!(why.contains("class"), "{why}");
    // kube-vip is a VIP too; kbs plan names the exposure.
    let ok = text(
        "mode = \"kube-vip\"\naddress = \"192.0.2.100\"",
        "exposure = \"vip\"\n",
    );
    assert!(Inventory::parse(Path::new("inv.toml"), &ok).is_ok());
    let (dir, path) = crate::common::write_inventory(&ok);
    let plan = crate::common::stdout_of(crate::common::kbs().args(["plan"]).arg(&path));
    drop(dir);
    assert!(
        plan.contains("ingress") && plan.contains("v3.8.0") && plan.contains("ports 80 and 443"),
        "{plan}"
    );
}

/// A file of the user's named `name` in `dir`, holding `text`, with `mode`.
fn users_file(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A token file as the logging addon wants it: the user's, with `mode`.
fn token_file(dir: &Path, mode: u32) -> std::path::PathBuf {
    users_file(dir, &format!("logs-{mode:o}.token"), "s3cret-token\n", mode)
}

/// Grafana's admin password as `[addons.grafana]` wants it: the user's, with `mode`.
const GRAFANA_PASSWORD: &str = "gr4fana-Pass";
fn password_file(dir: &Path, mode: u32) -> std::path::PathBuf {
    users_file(
        dir,
        &format!("grafana-{mode:o}.pass"),
        &format!("{GRAFANA_PASSWORD}\n"),
        mode,
    )
}

fn logging_config(a: &Addon, inv: &Inventory) -> String {
    let yaml = render(a, &manifest(a, inv), inv, &[]).expect("renders");
    let cm = objects(&yaml)
        .into_iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the fluent-bit ConfigMap");
    cm["data"]["fluent-bit.conf"]
        .as_str()
        .expect("config")
        .to_string()
}

fn logging_addon(inv: &Inventory) -> &Addon {
    inv.addons
        .iter()
        .find(|a| a.kind == AddonKind::Logging)
        .expect("on with an output")
}

#[test]
fn logging_ships_to_the_output_the_inventory_names_with_the_token_only_in_a_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = token_file(dir.path(), 0o600);
    for (output, extra, name) in [
        ("loki", "port = 3100\n", "loki"),
        ("http", "port = 8443\nuri = \"/ingest\"\n", "http"),
        (
            "elasticsearch",
            "port = 9200\nuser = \"fluent-bit\"\n",
            "es",
        ),
    ] {
        let inv = lab_like_inventory(&format!(
            "[addons.logging]\noutput = \"{output}\"\nhost = \"logs.example.net\"\n{extra}token_file = \"{}\"\n",
            token.display()
        ));
        let a = logging_addon(&inv);
        let yaml = render(a, &manifest(a, &inv), &inv, &[]).expect("renders");
        for o in objects(&yaml) {
            assert_valid_object(&o);
            assert_eq!(o["metadata"]["labels"][ADDON_LABEL], "logging");
        }
        assert!(!yaml.contains("s3cret"), "the token is in the objects");
        let bundled: Vec<String> = inv.images().into_iter().map(|w| w.name).collect();
        for image in images_named(&yaml) {
            assert!(bundled.contains(&image), "{image} not in the bundle");
        }
        let conf = logging_config(a, &inv);
        assert!(
            conf.contains(&format!("Name              {name}\n")),
            "{conf}"
        );
        assert!(
            conf.contains("Host              logs.example.net"),
            "{conf}"
        );
        assert!(conf.contains("${KBS_LOGGING_TOKEN}"), "{conf}");
        assert!(
            conf.contains("tls.verify        On"),
            "TLS by default: {conf}"
        );
        // The audit log is on by default, and shipped.
        assert!(
            conf.contains("Path              /var/log/kubernetes/audit/audit.log"),
            "{conf}"
        );
        assert!(yaml.contains("secretKeyRef"), "{yaml}");
    }
    // syslog over plain TCP to an IP address; no token, so no Secret referenced.
    let inv = lab_like_inventory(
        "[addons.logging]\noutput = \"syslog\"\nhost = \"192.0.2.50\"\nport = 514\ntls = false\n",
    );
    let a = logging_addon(&inv);
    let conf = logging_config(a, &inv);
    assert!(conf.contains("Mode              tcp"), "{conf}");
    assert!(
        !conf.contains("KBS_LOGGING_TOKEN") && !conf.contains("tls"),
        "{conf}"
    );
    let yaml = render(a, &manifest(a, &inv), &inv, &[]).expect("renders");
    assert!(!yaml.contains("secretKeyRef"), "{yaml}");
    assert!(lab_like_inventory("").logging.is_none());
    // kbs plan lists it, and says the logs go unencrypted.
    let text = "[cluster]\nname = \"t\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
                [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\n\
                [addons.logging]\noutput = \"syslog\"\nhost = \"192.0.2.50\"\nport = 514\ntls = false\n\
                [[host]]\nname = \"n1\"\naddress = \"192.0.2.11\"\n";
    let (_d, path) = crate::common::write_inventory(text);
    let plan = crate::common::stdout_of(
        crate::common::kbs()
            .args(["plan", "--output", "json"])
            .arg(&path),
    );
    assert!(plan.contains("\"logging 4.2.2\""), "{plan}");
    let plan = crate::common::stdout_of(crate::common::kbs().arg("plan").arg(&path));
    // The table wraps its notes: the words, without the table's lines.
    let words: Vec<&str> = plan
        .split_whitespace()
        .filter(|w| !["│", "┆"].contains(w))
        .collect();
    let words = words.join(" ");
    assert!(
        words.contains("Fluent Bit ships container logs and the audit log to syslog 192.0.2.50:514, NOT encrypted"),
        "{plan}"
    );
}

#[test]
fn logging_settings_that_cannot_work_are_refused_with_their_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let loose = token_file(dir.path(), 0o644);
    let ok = token_file(dir.path(), 0o400);
    let head = "[cluster]\nname = \"t\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
                [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\n[addons.logging]\n";
    let refused = |logging: &str| {
        let text = format!("{head}{logging}[[host]]\nname = \"n1\"\naddress = \"192.0.2.11\"\n");
        let e = Inventory::parse(Path::new("inv.toml"), &text).expect_err("refused");
        let first = &e.errors[0];
        (
            first.location(),
            format!(
                "{} {}",
                first.message,
                first.help.as_deref().unwrap_or_default()
            ),
        )
    };
    let (at, why) = refused(&format!(
        "output = \"loki\"\nhost = \"logs.example.net\"\nport = 3100\ntoken_file = \"{}\"\n",
        loose.display()
    ));
    assert_eq!(at, "inv.toml:12:14");
    assert!(
        why.contains("can be read by other users (mode 644)") && why.contains("chmod 600"),
        "{why}"
    );
    let (at, why) = refused("output = \"loki\"\nhost = \"logs example\"\nport = 3100\n");
    assert_eq!(at, "inv.toml:10:8");
    assert!(
        why.contains("neither an IP address nor a DNS name"),
        "{why}"
    );
    let (at, why) = refused("output = \"loki\"\nhost = \"logs.example.net\"\n");
    assert_eq!(at, "inv.toml:9:10");
    assert!(why.contains("needs port"), "{why}");
    let (at, why) = refused("output = \"loki\"\nhost = \"logs.example.net\"\nport = 70000\n");
    assert_eq!(at, "inv.toml:11:8");
    assert!(why.contains("70000"), "{why}");
    let (at, why) = refused("output = \"lokki\"\n");
    assert_eq!(at, "inv.toml:9:10");
    assert!(why.contains("did you mean `loki`"), "{why}");
    let (_, why) =
        refused("output = \"loki\"\nhost = \"logs.example.net\"\nport = 3100\nuri = \"/x\"\n");
    assert!(why.contains("uri is for output = \"http\""), "{why}");
    let (at, why) = refused(&format!(
        "output = \"syslog\"\nhost = \"logs.example.net\"\nport = 6514\ntoken_file = \"{}\"\n",
        ok.display()
    ));
    assert_eq!(at, "inv.toml:12:14");
    assert!(why.contains("syslog takes no token"), "{why}");
    // Someone else's file, even 0400: refused (as root, the test can give it away).
    let theirs = token_file(dir.path(), 0o640);
    std::fs::set_permissions(&theirs, std::os::unix::fs::PermissionsExt::from_mode(0o400))
        .expect("chmod");
    if std::os::unix::fs::chown(&theirs, Some(65534), None).is_ok() {
        let (at, why) = refused(&format!(
            "output = \"loki\"\nhost = \"logs.example.net\"\nport = 3100\ntoken_file = \"{}\"\n",
            theirs.display()
        ));
        assert_eq!(at, "inv.toml:12:14");
        assert!(why.contains("belongs to user id 65534"), "{why}");
    }
    let (_, why) = refused(&format!(
        "output = \"elasticsearch\"\nhost = \"logs.example.net\"\nport = 9200\ntoken_file = \"{}\"\n",
        ok.display()
    ));
    assert!(why.contains("needs user"), "{why}");
}

fn addon_of(inv: &Inventory, kind: AddonKind) -> &Addon {
    inv.addons
        .iter()
        .find(|a| a.kind == kind)
        .unwrap_or_else(|| panic!("{kind:?} is off"))
}

/// The metric names a PromQL expression reads (each name before a `{` selector).
fn metrics_in(expr: &str) -> Vec<&str> {
    expr.match_indices('{')
        .filter_map(|(at, _)| {
            let before = &expr[..at];
            let start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(0, |i| i + 1);
            (start < at).then(|| &expr[start..at])
        })
        .collect()
}

#[test]
fn grafana_is_monitorings_option_with_its_password_only_in_a_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let pass = password_file(dir.path(), 0o600);
    let inv = lab_like_inventory(&format!(
        "[addons.grafana]\nadmin_password_file = \"{}\"\n",
        pass.display()
    ));
    assert!(lab_like_inventory("").grafana.is_none());
    // Applied right after the monitoring addon, whose namespace and Prometheus it uses (and so
    // removed before it).
    let kinds: Vec<AddonKind> = inv.addons.iter().map(|a| a.kind).collect();
    let at = |k| kinds.iter().position(|x| *x == k).expect("on");
    assert_eq!(at(AddonKind::Grafana), at(AddonKind::Monitoring) + 1);
    let a = addon_of(&inv, AddonKind::Grafana);
    let yaml = render(a, &manifest(a, &inv), &inv, &[]).expect("renders");
    assert!(
        !yaml.contains(GRAFANA_PASSWORD),
        "the password is in the objects"
    );
    let bundled: Vec<String> = inv.images().into_iter().map(|w| w.name).collect();
    assert_eq!(
        images_named(&yaml),
        [format!("192.0.2.3:5000/grafana/grafana:{}", a.version)]
    );
    assert!(bundled.contains(&images_named(&yaml)[0]), "{bundled:?}");
    let objs = objects(&yaml);
    for o in &objs {
        assert_valid_object(o);
        assert_eq!(o["metadata"]["labels"][ADDON_LABEL], "grafana");
        assert_eq!(o["metadata"]["namespace"], "kbs-monitoring");
    }
    // The monitoring addon's file makes the namespace.
    let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Service"
        ]
    );
    assert_eq!(
        of_kind(&objs, "ServiceAccount")["automountServiceAccountToken"],
        false
    );
    let svc = of_kind(&objs, "Service");
    assert!(svc["spec"].get("type").is_none(), "ClusterIP: {svc}");
    assert_eq!(svc["spec"]["ports"][0]["port"], 3000);

    // The pod: non-root as the image's user, nothing it does not need, the password from the
    // Secret's file, no calls home, and rolled when its configuration changes.
    let deployment = of_kind(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let template = &deployment["spec"]["template"];
    assert!(
        template["metadata"]["annotations"]["kbs.io/config-sha256"].is_string(),
        "{template}"
    );
    let pod = &template["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 472);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/api/health", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 3000);
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let env = |name: &str| -> String {
        c["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no {name}"))
            .to_string()
    };
    assert_eq!(env("GF_SECURITY_ADMIN_USER"), "admin");
    for off in [
        "GF_AUTH_ANONYMOUS_ENABLED",
        "GF_USERS_ALLOW_SIGN_UP",
        "GF_ANALYTICS_REPORTING_ENABLED",
        "GF_ANALYTICS_CHECK_FOR_UPDATES",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES",
        "GF_NEWS_NEWS_FEED_ENABLED",
    ] {
        assert_eq!(env(off), "false", "{off}");
    }
    assert_eq!(env("GF_PLUGINS_PREINSTALL_DISABLED"), "true");
    let mounted = |volume: &str| -> String {
        c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("{volume} not mounted"))
            .to_string()
    };
    let volume = |name: &str| -> &Value {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let admin = &volume("admin")["secret"];
    assert_eq!(admin["secretName"], "grafana-admin");
    assert_eq!(admin["items"][0]["key"], "admin-password");
    assert_eq!(
        env("GF_SECURITY_ADMIN_PASSWORD__FILE"),
        format!("{}/admin-password", mounted("admin"))
    );
    // Grafana's database and scratch space are the pod's own; the root is read-only.
    for (name, path) in [("data", "/var/lib/grafana"), ("tmp", "/tmp")] {
        assert_eq!(mounted(name), path);
        assert!(volume(name)["emptyDir"].is_object(), "{name}");
    }

    // The data source is the monitoring addon's Prometheus Service, the default, not editable.
    let monitoring = objects(&manifest(addon_of(&inv, AddonKind::Monitoring), &inv));
    let prometheus = monitoring
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "prometheus")
        .expect("monitoring's Prometheus Service");
    let url = format!(
        "http://prometheus.kbs-monitoring.svc.cluster.local:{}",
        prometheus["spec"]["ports"][0]["port"]
    );
    let config_map = |name: &str| -> &Value {
        objs.iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))
    };
    let sources = config_map("grafana-datasources");
    assert_eq!(
        volume("datasources")["configMap"]["name"],
        "grafana-datasources"
    );
    assert_eq!(
        mounted("datasources"),
        "/etc/grafana/provisioning/datasources"
    );
    let sources: Value =
        serde_saphyr::from_str(sources["data"]["prometheus.yaml"].as_str().expect("file"))
            .expect("YAML");
    let source = &sources["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    assert_eq!(source["url"], url);
    assert_eq!(source["isDefault"], true);
    assert_eq!(source["editable"], false);

    // The dashboard: its provider reads the directory it is mounted in, and every panel queries
    // the metrics monitoring's alert rules watch, in PromQL promtool accepts.
    let dashboards = config_map("grafana-dashboards");
    let provider: Value =
        serde_saphyr::from_str(dashboards["data"]["kbs.yaml"].as_str().expect("provider"))
            .expect("YAML");
    assert_eq!(
        mounted("dashboard-provider"),
        "/etc/grafana/provisioning/dashboards"
    );
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some(mounted("dashboards").as_str())
    );
    let dashboard: Value = serde_json::from_str(
        dashboards["data"]["kbs-cluster.json"]
            .as_str()
            .expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let rules = of_kind(&monitoring, "ConfigMap")["data"]["kbs-alerts.yml"]
        .as_str()
        .expect("monitoring's rules")
        .to_string();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 4, "{dashboard:#}");
    let mut exprs = Vec::new();
    for p in panels {
        assert_eq!(p["datasource"]["uid"], source["uid"], "{p}");
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for metric in metrics_in(expr) {
                assert!(
                    rules.contains(metric),
                    "{metric} ({}) is no metric of the alert rules",
                    p["title"]
                );
            }
            exprs.push(expr.to_string());
        }
    }
    let all = exprs.join(" ");
    for watched in [
        "kube_node_status_condition",
        "etcd_server_has_leader",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_server_quota_backend_bytes",
        "apiserver_request_total",
    ] {
        assert!(all.contains(watched), "no panel on {watched}");
    }
    // The alerts' thresholds mark the panels: etcd's quota share, the 5xx share.
    let json = dashboard.to_string();
    assert!(json.contains("\"value\":0.8"), "{json}");
    assert!(json.contains("\"value\":0.05"), "{json}");
    let recording = serde_json::json!({"groups": [{"name": "panels", "rules": exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("kbs:panel:{i}"), "expr": e}))
        .collect::<Vec<_>>()}]});
    let file = dir.path().join("panels.yml");
    std::fs::write(&file, recording.to_string()).expect("write");
    promtool(&["check", "rules"], Some(&file), None);
}

#[test]
fn grafana_settings_that_cannot_work_are_refused_with_their_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let ok = password_file(dir.path(), 0o600);
    let loose = password_file(dir.path(), 0o644);
    let text = |addons: &str, hosts: usize| {
        let hosts: String = (1..=hosts)
            .map(|i| format!("[[host]]\nname = \"n{i}\"\naddress = \"192.0.2.1{i}\"\n"))
            .collect();
        format!(
            "[cluster]\nname = \"t\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
             [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\n{addons}{hosts}"
        )
    };
    let refused = |addons: &str, hosts: usize| {
        let e = Inventory::parse(Path::new("inv.toml"), &text(addons, hosts)).expect_err("refused");
        let first = &e.errors[0];
        (
            first.location(),
            format!(
                "{} {}",
                first.message,
                first.help.as_deref().unwrap_or_default()
            ),
        )
    };
    let with = |f: &Path| format!("admin_password_file = \"{}\"\n", f.display());
    assert!(
        Inventory::parse(
            Path::new("inv.toml"),
            &text(&format!("[addons.grafana]\n{}", with(&ok)), 3)
        )
        .is_ok()
    );
    // No password: Grafana's admin/admin is not an option.
    let (at, why) = refused("[addons.grafana]\n", 3);
    assert_eq!(at, "inv.toml:8:1", "the table's line");
    assert!(
        why.contains("addons.grafana has no admin_password_file") && why.contains("chmod 600"),
        "{why}"
    );
    let (at, why) = refused(&format!("[addons.grafana]\n{}", with(&loose)), 3);
    assert_eq!(at, "inv.toml:9:23");
    assert!(
        why.contains("can be read by other users (mode 644)") && why.contains("chmod 600"),
        "{why}"
    );
    // Without the monitoring addon: turned off, or off by default on one host.
    let (at, why) = refused(
        &format!(
            "[addons]\nmonitoring = false\n[addons.grafana]\n{}",
            with(&ok)
        ),
        3,
    );
    assert_eq!(at, "inv.toml:10:1", "the table's line");
    assert!(
        why.contains("needs the monitoring addon, but [addons] monitoring = false")
            && why.contains("set `[addons] monitoring = true`")
            && why.contains("remove [addons.grafana]"),
        "{why}"
    );
    let (at, why) = refused(&format!("[addons.grafana]\n{}", with(&ok)), 1);
    assert_eq!(at, "inv.toml:8:1", "the table's line");
    assert!(why.contains("off by default on a 1-host cluster"), "{why}");
    assert!(
        Inventory::parse(
            Path::new("inv.toml"),
            &text(
                &format!(
                    "[addons]\nmonitoring = true\n[addons.grafana]\n{}",
                    with(&ok)
                ),
                1
            )
        )
        .is_ok()
    );
    let (at, why) = refused(
        &format!("[addons.grafana]\n{}admin_user = \"root\"\n", with(&ok)),
        3,
    );
    assert_eq!(at, "inv.toml:10:1");
    assert!(why.contains("admin_user"), "{why}");
    // kbs plan lists it with its version and says what its database keeps.
    let (_d, path) =
        crate::common::write_inventory(&text(&format!("[addons.grafana]\n{}", with(&ok)), 3));
    let plan = crate::common::stdout_of(
        crate::common::kbs()
            .args(["plan", "--output", "json"])
            .arg(&path),
    );
    let inv = Inventory::load(&path).expect("valid");
    let version = &addon_of(&inv, AddonKind::Grafana).version;
    assert!(plan.contains(&format!("\"grafana {version}\"")), "{plan}");
    let plan = crate::common::stdout_of(crate::common::kbs().arg("plan").arg(&path));
    let words: Vec<&str> = plan
        .split_whitespace()
        .filter(|w| !["│", "┆"].contains(w))
        .collect();
    let words = words.join(" ");
    assert!(
        words.contains("Grafana on the monitoring addon's Prometheus")
            && words.contains("dashboards made in the UI go with the pod"),
        "{plan}"
    );
}

/// `inventory` pointed at a bundle of its own in `dir`, made with `kbs bundle` (it holds the images
/// of the addons `inventory` turns on).
fn own_bundle(inventory: &Path, dir: &Path) {
    let text = std::fs::read_to_string(inventory).expect("inventory");
    let bundle = dir.join("bundle");
    std::fs::write(
        inventory,
        text.replace(&bundle_of(&text), &bundle.to_string_lossy()),
    )
    .expect("write inventory");
    ok(&crate::common::kbs()
        .arg("bundle")
        .arg(inventory)
        .output()
        .expect("kbs bundle"));
}

/// The lab inventory with `extra` appended (an `[addons]` table), next to it.
fn with_addons(lab: &Lab, dir: &Path, extra: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(lab.inventory()).expect("inventory");
    // [addons] goes before the first [[host]], among the tables.
    let at = text.find("\n[[host]]").expect("hosts");
    let path = dir.join("inventory.toml");
    std::fs::write(&path, format!("{}\n{extra}\n{}", &text[..at], &text[at..]))
        .expect("write inventory");
    path
}

const METRICS_DEPLOYMENT: &str = "/apis/apps/v1/namespaces/kube-system/deployments/metrics-server";
const APISERVICE: &str = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io";
const STORAGE_CLASS: &str = "/apis/storage.k8s.io/v1/storageclasses/local-path";
const LOCAL_PATH_DEPLOYMENT: &str =
    "/apis/apps/v1/namespaces/local-path-storage/deployments/local-path-provisioner";
const PROMETHEUS: &str = "/apis/apps/v1/namespaces/kbs-monitoring/deployments/prometheus";
const NODE_EXPORTER: &str = "/apis/apps/v1/namespaces/kbs-monitoring/daemonsets/node-exporter";

/// Turning an addon off deleted every one of its objects, and these others stayed.
fn removed_exactly(state: &Path, gone: &[Value], kept: &[&str]) {
    for o in gone {
        let path = api_path(o);
        assert_eq!(
            api_send(state, "GET", &path, None),
            404,
            "{path} is still there"
        );
    }
    for path in kept {
        assert_eq!(api_send(state, "GET", path, None), 200, "{path} went too");
    }
}

/// Of kbs's addon manifests on the first control plane, only local-path's is left.
fn only_local_path_on_disk(lab: &Lab) {
    assert_eq!(
        lab.exec("node-1", "ls /etc/kbs/addons").trim(),
        "local-path-provisioner.yaml"
    );
}

/// The objects of `addon`'s file on the first control plane, each checked as a valid API object,
/// and the images it names, each checked to be in containerd on every node.
fn installed(lab: &Lab, addon: &str) -> (Vec<Value>, Vec<String>) {
    let yaml = lab.exec("node-1", &format!("cat /etc/kbs/addons/{addon}.yaml"));
    let objs = objects(&yaml);
    objs.iter().for_each(assert_valid_object);
    let images = images_named(&yaml);
    for image in &images {
        for h in ["node-1", "node-2", "node-3"] {
            assert!(
                lab.exec(h, "ctr -n k8s.io images ls -q").contains(image),
                "{h} lacks {image}"
            );
        }
    }
    (objs, images)
}

/// The API path of a rendered object (core or named group; namespaced or not).
fn api_path(o: &Value) -> String {
    let av = o["apiVersion"].as_str().unwrap_or_default();
    let group = if av.contains('/') {
        format!("/apis/{av}")
    } else {
        format!("/api/{av}")
    };
    let kind = o["kind"].as_str().unwrap_or_default().to_lowercase();
    // client-go's guess from a kind (IngressClass: ingressclasses).
    let plural = if kind.ends_with('s') {
        format!("{kind}es")
    } else {
        format!("{kind}s")
    };
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{group}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{group}/{plural}/{name}"),
    }
}

/// Where `needle` is in a run's output: the order of its changes.
fn position(out: &str, needle: &str) -> usize {
    out.find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in:\n{out}"))
}

#[test]
fn lab_addons_applied_after_the_cni_kept_and_removed_exactly() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let inventory = lab.inventory();
    let inv = Inventory::load(&inventory).expect("lab inventory");

    let out = apply(&inventory, state.path(), &[]);
    let at = |needle: &str| position(&out, needle);
    let cni = at("kubectl apply -f /etc/kbs/cni/cni.yaml");
    for a in &inv.addons {
        let line = format!(
            "kubectl apply -f /etc/kbs/addons/{}.yaml (addon {}: ",
            a.kind.as_str(),
            a.describe()
        );
        assert!(
            cni < at(&line),
            "{} applied before the CNI:\n{out}",
            a.kind.as_str()
        );
    }

    // Stored through the API, labelled; the storage class is the default.
    for path in [
        METRICS_DEPLOYMENT,
        APISERVICE,
        STORAGE_CLASS,
        LOCAL_PATH_DEPLOYMENT,
        PROMETHEUS,
        NODE_EXPORTER,
    ] {
        let obj = api_get(state.path(), path);
        assert_eq!(obj["metadata"]["labels"][MANAGED_BY], "kbs", "{obj}");
    }
    // The expiry of kbs's certificates on each node, in node-exporter's textfile collector
    // format (checked by promtool), the CA's about ten years ahead.
    let prom = lab.exec(
        "node-1",
        "cat /var/lib/kbs/node-exporter/kbs-certificates.prom",
    );
    let ca = prom
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "kbs_certificate_expiry_timestamp_seconds{path=\"/etc/kubernetes/pki/ca.crt\"} ",
            )
        })
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no CA expiry in:\n{prom}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(ca - now > 5 * 365 * 86400, "{prom}");
    assert!(
        prom.contains("path=\"/etc/kbs/etcd/pki/server.crt\""),
        "{prom}"
    );
    promtool(&["check", "metrics"], None, Some(&prom));
    // etcd's metrics listener is on each member's address, where Prometheus scrapes it.
    let env = lab.exec("node-1", "cat /etc/kbs/etcd/*.env");
    assert!(
        env.contains(&format!(",http://{}:2381", lab.ip(11))),
        "{env}"
    );
    let sc = api_get(state.path(), STORAGE_CLASS);
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(
        api_get(state.path(), METRICS_DEPLOYMENT)["metadata"]["labels"][ADDON_LABEL],
        "metrics-server"
    );

    // What kbs applied is valid API objects, and every image they run is in the bundle and in
    // containerd on every node (the addons may be scheduled on any).
    let bundle = std::fs::read_to_string(lab.run_dir().join("bundle/bundle.toml")).expect("bundle");
    let in_containerd: Vec<String> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|h| lab.exec(h, "ctr -n k8s.io images ls -q"))
        .collect();
    for a in &inv.addons {
        let yaml = lab.exec(
            "node-1",
            &format!("cat /etc/kbs/addons/{}.yaml", a.kind.as_str()),
        );
        objects(&yaml).iter().for_each(assert_valid_object);
        let images = images_named(&yaml);
        assert!(!images.is_empty());
        for image in images {
            assert!(
                image.starts_with(&format!("{}:5000/", lab.ip(3))),
                "{image}"
            );
            assert!(
                bundle.contains(&format!("name = \"{image}\"")),
                "{image} not in bundle.toml"
            );
            for (i, list) in in_containerd.iter().enumerate() {
                assert!(list.contains(&image), "node-{} lacks {image}", i + 1);
            }
        }
    }

    // A second run changes nothing.
    let rv = api_get(state.path(), METRICS_DEPLOYMENT)["metadata"]["resourceVersion"].clone();
    let out = apply(&inventory, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");
    assert_eq!(
        api_get(state.path(), METRICS_DEPLOYMENT)["metadata"]["resourceVersion"],
        rv
    );

    // An object deleted by hand comes back, and only its addon is applied again.
    lab.exec(
        "node-1",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf delete deployment metrics-server -n kube-system",
    );
    assert_eq!(api_send(state.path(), "GET", METRICS_DEPLOYMENT, None), 404);
    let out = apply(&inventory, state.path(), &[]);
    assert!(
        out.contains("kubectl apply -f /etc/kbs/addons/metrics-server.yaml (addon metrics-server"),
        "{out}"
    );
    assert!(!out.contains("local-path-provisioner.yaml"), "{out}");
    assert_eq!(
        api_get(state.path(), METRICS_DEPLOYMENT)["kind"],
        "Deployment"
    );

    // A new release that no longer has an object: it is deleted, the rest stays.
    let dir = tempfile::tempdir().expect("tmp");
    let file = format!("addons/metrics-server-{}.yaml", inv.addons[0].version);
    let newer = changed_bundle(&lab, dir.path(), &file, |t| {
        t.split("---\napiVersion: apiregistration.k8s.io/v1")
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let out = apply(&newer, state.path(), &[]);
    assert!(
        out.contains(
            "kubectl delete APIService/v1beta1.metrics.k8s.io (no longer in addon metrics-server"
        ),
        "{out}"
    );
    assert_eq!(api_send(state.path(), "GET", APISERVICE, None), 404);
    assert_eq!(
        api_get(state.path(), METRICS_DEPLOYMENT)["kind"],
        "Deployment"
    );
    let out = apply(&newer, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");

    // Turned off: a dry run only says so; a run deletes the objects kbs installed for them and
    // nothing else (the other addon and the CNI stay).
    let monitoring = inv
        .addons
        .iter()
        .find(|a| a.kind == AddonKind::Monitoring)
        .expect("on for 3 hosts");
    let monitoring_objects = objects(&manifest(monitoring, &inv));
    let dir = tempfile::tempdir().expect("tmp");
    let off = with_addons(
        &lab,
        dir.path(),
        "[addons]\nmetrics_server = false\nmonitoring = false\n",
    );
    let out = apply(&off, state.path(), &["--dry-run"]);
    assert!(
        out.contains("would kubectl delete -f /etc/kbs/addons/metrics-server.yaml (addon metrics-server is disabled"),
        "{out}"
    );
    assert_eq!(
        api_get(state.path(), METRICS_DEPLOYMENT)["kind"],
        "Deployment"
    );
    let out = apply(&off, state.path(), &[]);
    assert!(
        out.contains("kubectl delete -f /etc/kbs/addons/metrics-server.yaml"),
        "{out}"
    );
    assert!(
        out.contains("kubectl delete -f /etc/kbs/addons/monitoring.yaml"),
        "{out}"
    );
    let metrics_objects = objects(&manifest(&inv.addons[0], &inv));
    for path in [
        METRICS_DEPLOYMENT,
        APISERVICE,
        "/api/v1/namespaces/kube-system/services/metrics-server",
        "/api/v1/namespaces/kube-system/serviceaccounts/metrics-server",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:metrics-server",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings/metrics-server-auth-reader",
    ] {
        assert_eq!(
            api_send(state.path(), "GET", path, None),
            404,
            "{path} is still there"
        );
    }
    assert_eq!(
        metrics_objects.len(),
        9,
        "the test lists the manifest's objects"
    );
    assert!(monitoring_objects.len() > 10);
    removed_exactly(
        state.path(),
        &monitoring_objects,
        &[
            STORAGE_CLASS,
            LOCAL_PATH_DEPLOYMENT,
            "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds",
        ],
    );
    only_local_path_on_disk(&lab);
    let out = apply(&off, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");

    // Logging on, shipping to Loki with a token: a bundle that holds Fluent Bit's image, the
    // token in the Secret and nowhere on the host or in kbs's output.
    let dir = tempfile::tempdir().expect("tmp");
    let token = token_file(dir.path(), 0o600);
    let logging = with_addons(
        &lab,
        dir.path(),
        &format!(
            "[addons]\nmetrics_server = false\nmonitoring = false\n[addons.logging]\noutput = \"loki\"\nhost = \"{}\"\nport = 3100\ntoken_file = \"{}\"\n",
            lab.ip(3),
            token.display()
        ),
    );
    own_bundle(&logging, dir.path());
    let out = apply(&logging, state.path(), &[]);
    assert!(
        out.contains("kubectl apply -f /etc/kbs/addons/logging.yaml (addon logging"),
        "{out}"
    );
    assert!(
        out.contains("kubectl apply -f - (Secret kbs-logging/fluent-bit-output"),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");
    const SECRET: &str = "/api/v1/namespaces/kbs-logging/secrets/fluent-bit-output";
    const FLUENT_BIT: &str = "/apis/apps/v1/namespaces/kbs-logging/daemonsets/fluent-bit";
    assert_eq!(
        api_get(state.path(), SECRET)["data"]["token"],
        "czNjcmV0LXRva2Vu",
        "the token, without its newline"
    );
    assert_eq!(
        api_get(state.path(), FLUENT_BIT)["metadata"]["labels"][ADDON_LABEL],
        "logging"
    );
    assert_eq!(
        lab.exec(
            "node-1",
            "grep -rl s3cret /etc/kbs /tmp /root 2>/dev/null || true"
        )
        .trim(),
        "",
        "the token is in a file on the host"
    );
    installed(&lab, "logging");
    let out = apply(&logging, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");
    // Off again: its objects and the Secret go.
    let out = apply(&off, state.path(), &[]);
    assert!(
        out.contains("kubectl delete -f /etc/kbs/addons/logging.yaml"),
        "{out}"
    );
    for path in [SECRET, FLUENT_BIT] {
        assert_eq!(api_send(state.path(), "GET", path, None), 404, "{path}");
    }
    only_local_path_on_disk(&lab);

    // Ingress on (node ports), from a bundle that holds Traefik's image.
    let dir = tempfile::tempdir().expect("tmp");
    let ingress = with_addons(
        &lab,
        dir.path(),
        "[addons]\nmetrics_server = false\nmonitoring = false\n[addons.ingress]\n",
    );
    own_bundle(&ingress, dir.path());
    let out = apply(&ingress, state.path(), &[]);
    assert!(
        out.contains("kubectl apply -f /etc/kbs/addons/ingress.yaml (addon ingress"),
        "{out}"
    );
    const CLASS: &str = "/apis/networking.k8s.io/v1/ingressclasses/traefik";
    const SERVICE: &str = "/api/v1/namespaces/kbs-ingress/services/traefik";
    assert_eq!(
        api_get(state.path(), CLASS)["metadata"]["labels"][ADDON_LABEL],
        "ingress"
    );
    assert_eq!(
        api_get(state.path(), SERVICE)["spec"]["ports"][0]["nodePort"],
        30080
    );
    let (ingress_objects, images) = installed(&lab, "ingress");
    assert_eq!(images.len(), 1, "{images:?}");
    let out = apply(&ingress, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");
    // The IngressClass deleted by hand comes back.
    assert_eq!(api_send(state.path(), "DELETE", CLASS, None), 200);
    let out = apply(&ingress, state.path(), &[]);
    assert!(
        out.contains("kubectl apply -f /etc/kbs/addons/ingress.yaml (addon ingress"),
        "{out}"
    );
    assert_eq!(api_get(state.path(), CLASS)["kind"], "IngressClass");
    // Moved to the VIP (the lab's front is keepalived): the Deployment a DaemonSet replaces is
    // deleted, and the DaemonSet on the control planes holds host ports 80 and 443.
    let text = std::fs::read_to_string(&ingress).expect("inventory");
    std::fs::write(
        &ingress,
        text.replace(
            "[addons.ingress]\n",
            "[addons.ingress]\nexposure = \"vip\"\n",
        ),
    )
    .expect("write inventory");
    let out = apply(&ingress, state.path(), &[]);
    assert!(
        out.contains("kubectl delete Deployment/traefik (no longer in addon ingress"),
        "{out}"
    );
    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/kbs-ingress/deployments/traefik";
    assert_eq!(api_send(state.path(), "GET", DEPLOYMENT, None), 404);
    let ds = api_get(
        state.path(),
        "/apis/apps/v1/namespaces/kbs-ingress/daemonsets/traefik",
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["ports"][1]["hostPort"],
        443
    );
    let mut ingress_objects = ingress_objects;
    ingress_objects.extend(installed(&lab, "ingress").0);
    let out = apply(&ingress, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");
    gateway_api_on_and_off(&lab, &ingress, dir.path(), state.path());
    // Off: exactly its objects go (those of both exposures).
    let out = apply(&off, state.path(), &[]);
    assert!(
        out.contains("kubectl delete -f /etc/kbs/addons/ingress.yaml"),
        "{out}"
    );
    removed_exactly(
        state.path(),
        &ingress_objects,
        &[STORAGE_CLASS, LOCAL_PATH_DEPLOYMENT],
    );
    only_local_path_on_disk(&lab);
}

/// The ingress addon's Gateway API option (`ingress` has `exposure = "vip"`): the CRDs applied
/// server-side before Traefik's GatewayClass and Gateway; a second run changes nothing; a Gateway
/// deleted by hand comes back; turned off while a site's HTTPRoute exists, kbs stops before any
/// change and names it; once it is gone, the Gateway and then the CRDs go, and the rest stays.
fn gateway_api_on_and_off(lab: &Lab, ingress: &Path, dir: &Path, state: &Path) {
    const CRD: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/httproutes.gateway.networking.k8s.io";
    const CLASS: &str = "/apis/gateway.networking.k8s.io/v1/gatewayclasses/traefik";
    const GATEWAY: &str =
        "/apis/gateway.networking.k8s.io/v1/namespaces/kbs-ingress/gateways/traefik";
    const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/web";
    let text = std::fs::read_to_string(ingress).expect("inventory");
    let off = text.clone();
    std::fs::write(
        ingress,
        text.replace(
            "[addons.ingress]\n",
            "[addons.ingress]\ngateway_api = true\n",
        ),
    )
    .expect("write inventory");
    own_bundle(ingress, dir);
    let out = apply(ingress, state, &[]);
    assert!(
        out.contains("kubectl apply --server-side -f /etc/kbs/addons/gateway-api.yaml (addon gateway-api v1.6.3")
            && out.contains("kubectl apply -f /etc/kbs/addons/ingress.yaml (addon ingress"),
        "{out}"
    );
    // Established, and applied server-side: kbs owns its fields, and no copy of the object sits
    // in an annotation (HTTPRoute's real CRD is over the annotations' 256 KiB).
    let crd = api_get(state, CRD);
    assert_eq!(crd["metadata"]["labels"][ADDON_LABEL], "gateway-api");
    let established = crd["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established, "{crd:#}");
    assert!(
        crd["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .is_none()
    );
    let managers: Vec<(&str, &str)> = crd["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|m| Some((m["manager"].as_str()?, m["operation"].as_str()?)))
        .collect();
    assert!(managers.contains(&("kbs", "Apply")), "{managers:?}");
    let gateway = api_get(state, GATEWAY);
    assert_eq!(gateway["spec"]["gatewayClassName"], "traefik");
    assert_eq!(
        api_get(state, CLASS)["spec"]["controllerName"],
        "traefik.io/gateway-controller"
    );
    for addon in ["gateway-api", "ingress"] {
        installed(lab, addon);
    }
    let out = apply(ingress, state, &[]);
    assert!(out.starts_with("no changes"), "{out}");
    assert_eq!(api_send(state, "DELETE", GATEWAY, None), 200);
    let out = apply(ingress, state, &[]);
    assert!(
        out.contains("kubectl apply -f /etc/kbs/addons/ingress.yaml (addon ingress")
            && !out.contains("gateway-api.yaml"),
        "{out}"
    );
    assert_eq!(api_get(state, GATEWAY)["kind"], "Gateway");

    // A site's route on kbs's Gateway: turning the option off would delete it with the CRDs.
    let route = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "traefik", "namespace": "kbs-ingress"}]}
    });
    let collection = ROUTE.trim_end_matches("/web");
    assert_eq!(api_send(state, "POST", collection, Some(route)), 201);
    std::fs::write(ingress, &off).expect("write inventory");
    let out = crate::common::run_kbs(&["apply"], ingress, state, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("addon gateway-api is disabled, but the cluster holds 1 object")
            && err.contains("HTTPRoute default/web"),
        "{err}"
    );
    for path in [CRD, CLASS, GATEWAY, ROUTE] {
        assert_eq!(api_send(state, "GET", path, None), 200, "{path} changed");
    }
    assert_eq!(api_send(state, "DELETE", ROUTE, None), 200);
    let out = apply(ingress, state, &[]);
    assert!(
        out.contains(
            "kubectl delete GatewayClass/traefik Gateway/traefik (no longer in addon ingress"
        ) && out.contains("kubectl delete -f /etc/kbs/addons/gateway-api.yaml"),
        "{out}"
    );
    for path in [CRD, CLASS, GATEWAY] {
        assert_eq!(
            api_send(state, "GET", path, None),
            404,
            "{path} is still there"
        );
    }
    assert_eq!(
        api_get(
            state,
            "/apis/apps/v1/namespaces/kbs-ingress/daemonsets/traefik"
        )["kind"],
        "DaemonSet"
    );
    let out = apply(ingress, state, &[]);
    assert!(out.starts_with("no changes"), "{out}");
}

/// Grafana on the lab (3 hosts: monitoring on by default), from a bundle that holds its image:
/// applied after the monitoring addon, its admin password only in the cluster's Secret (not in a
/// file on the host, nor in kbs's output), its image on every node; a second run changes nothing;
/// turned off, exactly its objects and the Secret go, and monitoring's stay.
#[test]
fn lab_grafana_applied_after_monitoring_with_its_password_only_in_a_secret() {
    use base64::Engine;
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let dir = tempfile::tempdir().expect("tmp");
    let pass = password_file(dir.path(), 0o600);
    let grafana = with_addons(
        &lab,
        dir.path(),
        &format!(
            "[addons.grafana]\nadmin_password_file = \"{}\"\n",
            pass.display()
        ),
    );
    own_bundle(&grafana, dir.path());
    let out = apply(&grafana, state.path(), &[]);
    let at = |needle: &str| position(&out, needle);
    assert!(
        at("kubectl apply -f /etc/kbs/addons/monitoring.yaml (addon monitoring")
            < at("kubectl apply -f /etc/kbs/addons/grafana.yaml (addon grafana")
    );
    at("kubectl apply -f - (Secret kbs-monitoring/grafana-admin, Grafana's admin password");
    assert!(!out.contains(GRAFANA_PASSWORD), "{out}");

    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/kbs-monitoring/deployments/grafana";
    const SECRET: &str = "/api/v1/namespaces/kbs-monitoring/secrets/grafana-admin";
    assert_eq!(
        api_get(state.path(), DEPLOYMENT)["metadata"]["labels"][ADDON_LABEL],
        "grafana"
    );
    let secret = api_get(state.path(), SECRET);
    assert_eq!(secret["metadata"]["labels"][ADDON_LABEL], "grafana");
    let stored = base64::engine::general_purpose::STANDARD
        .decode(
            secret["data"]["admin-password"]
                .as_str()
                .expect("admin-password"),
        )
        .expect("base64");
    assert_eq!(stored, GRAFANA_PASSWORD.as_bytes(), "without its newline");
    assert_eq!(
        lab.exec(
            "node-1",
            &format!("grep -rl {GRAFANA_PASSWORD} /etc/kbs /tmp /root 2>/dev/null || true")
        )
        .trim(),
        "",
        "the password is in a file on the host"
    );
    let (grafana_objects, images) = installed(&lab, "grafana");
    assert_eq!(images.len(), 1, "{images:?}");
    let out = apply(&grafana, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");

    // A new password: the Secret is updated before the Deployment, whose pods roll (its template
    // carries a digest of the password keyed with the cluster CA's key, not its plain hash).
    let digest = || {
        api_get(state.path(), DEPLOYMENT)["spec"]["template"]["metadata"]["annotations"]
            ["kbs.io/secret-hmac-sha256"]
            .as_str()
            .expect("the Secret's digest")
            .to_string()
    };
    let before = digest();
    std::fs::write(&pass, "an0ther-pass\n").expect("write");
    let out = apply(&grafana, state.path(), &[]);
    let at = |needle: &str| position(&out, needle);
    assert!(
        at("kubectl apply -f - (Secret kbs-monitoring/grafana-admin")
            < at("kubectl apply -f /etc/kbs/addons/grafana.yaml (addon grafana")
    );
    assert_ne!(digest(), before);
    assert_ne!(digest(), kbs::artifacts::sha256_hex(b"an0ther-pass"));
    let stored = api_get(state.path(), SECRET)["data"]["admin-password"].clone();
    assert_eq!(
        stored,
        base64::engine::general_purpose::STANDARD.encode("an0ther-pass")
    );
    let out = apply(&grafana, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");

    // Off: its objects and the Secret go; the monitoring addon's, its namespace among them, stay.
    let off_dir = tempfile::tempdir().expect("tmp");
    let off = with_addons(&lab, off_dir.path(), "");
    let out = apply(&off, state.path(), &[]);
    assert!(
        out.contains("kubectl delete -f /etc/kbs/addons/grafana.yaml (addon grafana is disabled"),
        "{out}"
    );
    assert_eq!(api_send(state.path(), "GET", SECRET, None), 404);
    removed_exactly(
        state.path(),
        &grafana_objects,
        &[
            PROMETHEUS,
            NODE_EXPORTER,
            "/api/v1/namespaces/kbs-monitoring",
        ],
    );
    assert!(
        !lab.exec("node-1", "ls /etc/kbs/addons")
            .contains("grafana.yaml")
    );
    let out = apply(&off, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");
}
