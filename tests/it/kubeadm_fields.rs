//! Every field kbs writes into a kubeadm document exists in kubeadm's v1beta4 types, as
//! `kubeadm config validate` (strict decoding) would insist; component configs against the
//! fields kbs sets, with their upstream sources (tests/fixtures/README.md).

use serde_json::Value;

use kbs::render::RenderInputs;

use crate::common::{files_ending, root, text};

fn fixture(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join(format!("tests/fixtures/{name}"))).unwrap(),
    )
    .unwrap()
}

const SCALARS: [&str; 7] = [
    "string", "bool", "int", "int32", "duration", "time", "quantity",
];

/// Checks `value` against the type named `ty` in the field list; returns the bad field paths.
fn check(fields: &Value, ty: &str, value: &Value, path: &str, bad: &mut Vec<String>) {
    let ty = ty.trim_start_matches('*');
    if let Some(elem) = ty.strip_prefix("[]") {
        match value.as_array() {
            Some(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| check(fields, elem, v, &format!("{path}[{i}]"), bad)),
            None => bad.push(format!("{path}: expected a list")),
        }
        return;
    }
    if ty.starts_with("map[") || SCALARS.contains(&ty) {
        return;
    }
    if let Some(e) = fields["enums"].get(ty) {
        if !e["values"].as_array().unwrap().contains(value) {
            bad.push(format!("{path}: {value} is not one of {}", e["values"]));
        }
        return;
    }
    let def = fields["structs"]
        .get(ty)
        .or_else(|| fields["externalStructs"].get(ty));
    let Some(def) = def else {
        // Go enum-ish strings the list types only by Go name (TaintEffect, HostPathType...).
        assert!(value.is_string(), "{path}: unknown type {ty}");
        return;
    };
    let Some(map) = value.as_object() else {
        bad.push(format!("{path}: expected a mapping for {ty}"));
        return;
    };
    for (k, v) in map {
        match def["fields"].get(k) {
            Some(f) => check(
                fields,
                f["type"].as_str().unwrap(),
                v,
                &format!("{path}.{k}"),
                bad,
            ),
            None => bad.push(format!("{path}.{k}: no such field in {ty}")),
        }
    }
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).unwrap()
}

#[test]
fn every_kubeadm_field_exists_in_v1beta4() {
    let fields = fixture("kubeadm-v1beta4-fields.json");
    let components = fixture("component-config-fields.json");
    let mut files = files_ending(&RenderInputs::default(), "/init.yaml");
    files.extend(files_ending(&RenderInputs::default(), "/join.yaml"));
    let mut kinds_seen = std::collections::BTreeSet::new();
    for (case, host, f) in files {
        for doc in documents(text(&f)) {
            let api = doc["apiVersion"].as_str().unwrap();
            let kind = doc["kind"].as_str().unwrap();
            kinds_seen.insert(kind.to_string());
            let at = format!("{case}/{host}:{}:{kind}", f.path.display());
            let mut bad = Vec::new();
            if api == "kubeadm.k8s.io/v1beta4" {
                assert!(
                    fields["kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k == kind),
                    "{at}: unknown kind"
                );
                check(&fields, kind, &doc, "", &mut bad);
            } else {
                bad.extend(unknown_component_fields(&components, api, kind, &doc));
            }
            assert!(bad.is_empty(), "{at}: {bad:?}");
        }
    }
    let expected = [
        "ClusterConfiguration",
        "InitConfiguration",
        "JoinConfiguration",
        "KubeProxyConfiguration",
        "KubeletConfiguration",
    ];
    assert_eq!(kinds_seen.into_iter().collect::<Vec<_>>(), expected);
}

/// Dotted paths of `doc` that the component-config list does not name; map-typed fields (free
/// keys) are not descended into.
fn unknown_component_fields(components: &Value, api: &str, kind: &str, doc: &Value) -> Vec<String> {
    fn walk(v: &Value, path: &str, maps: &[Value], out: &mut Vec<String>) {
        match v.as_object() {
            Some(map) if !maps.iter().any(|m| m == path) => {
                for (k, v) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, &p, maps, out);
                }
            }
            _ => out.push(path.to_string()),
        }
    }
    let allowed = components["kinds"]
        .get(format!("{api}/{kind}"))
        .unwrap_or_else(|| panic!("unknown {api}/{kind}"))
        .as_array()
        .unwrap();
    let mut paths = Vec::new();
    walk(doc, "", components["maps"].as_array().unwrap(), &mut paths);
    paths.retain(|p| !allowed.iter().any(|a| a == p));
    paths
}

/// The kubelet patch kubeadm merges into each node's KubeletConfiguration holds real fields too.
#[test]
fn kubelet_patches_use_real_kubelet_fields() {
    let components = fixture("component-config-fields.json");
    for (case, host, f) in files_ending(&RenderInputs::default(), "kubeletconfiguration+merge.yaml")
    {
        for doc in documents(text(&f)) {
            let bad = unknown_component_fields(
                &components,
                doc["apiVersion"].as_str().unwrap(),
                doc["kind"].as_str().unwrap(),
                &doc,
            );
            assert!(bad.is_empty(), "{case}/{host}: {bad:?}");
        }
    }
}

#[test]
fn the_component_check_catches_a_misspelt_nested_field() {
    let components = fixture("component-config-fields.json");
    let doc = &documents(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication: {anonymous: {enable: false}}\nkubeReserved: {cpu: 1m}\nreadOnlyPorts: 0\n",
    )[0];
    let bad = unknown_component_fields(
        &components,
        "kubelet.config.k8s.io/v1beta1",
        "KubeletConfiguration",
        doc,
    );
    assert_eq!(bad, ["authentication.anonymous.enable", "readOnlyPorts"]);
}

/// Every extraArgs name is a real flag of its component (kube-apiserver, kube-controller-manager,
/// kube-scheduler) and every kubeletExtraArgs name a real kubelet flag
/// (tests/fixtures/kube-flags.json, with sources).
#[test]
fn every_rendered_flag_is_a_real_flag() {
    let flags = fixture("kube-flags.json");
    let mut files = files_ending(&RenderInputs::default(), "/init.yaml");
    files.extend(files_ending(&RenderInputs::default(), "/join.yaml"));
    files.extend(
        crate::security::relaxed_and_tightened_files()
            .into_iter()
            .filter(|(_, _, f)| f.path.starts_with("/etc/kubernetes/kubeadm/")),
    );
    let mut seen = std::collections::BTreeSet::new();
    for (case, host, f) in files {
        for doc in documents(text(&f)) {
            let lists = [
                ("kube-apiserver", &doc["apiServer"]["extraArgs"]),
                (
                    "kube-controller-manager",
                    &doc["controllerManager"]["extraArgs"],
                ),
                ("kube-scheduler", &doc["scheduler"]["extraArgs"]),
                ("kubelet", &doc["nodeRegistration"]["kubeletExtraArgs"]),
            ];
            for (component, args) in lists {
                for a in args.as_array().into_iter().flatten() {
                    let name = a["name"].as_str().unwrap();
                    assert!(
                        flags[component].get(name).is_some(),
                        "{case}/{host}: {component} has no flag --{name}"
                    );
                    seen.insert(format!("{component}/{name}"));
                }
            }
        }
    }
    // The list holds nothing kbs does not render (so it stays the list of what was checked).
    for component in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
    ] {
        for name in flags[component].as_object().unwrap().keys() {
            assert!(
                seen.contains(&format!("{component}/{name}")),
                "{component}/{name} is never rendered"
            );
        }
    }
}

#[test]
fn the_field_check_catches_a_misspelt_field() {
    let fields = fixture("kubeadm-v1beta4-fields.json");
    let doc = &documents(
        "kind: ClusterConfiguration\ncontrolPlaneEndPoint: x\nnetworking: {podSubnets: y}\nencryptionAlgorithm: RSA-1024\n",
    )[0];
    let mut bad = Vec::new();
    check(&fields, "ClusterConfiguration", doc, "", &mut bad);
    assert_eq!(bad.len(), 3, "{bad:?}");
}

#[test]
fn kubeadm_documents_hold_what_the_plan_says() {
    for (case, _, f) in files_ending(&RenderInputs::default(), "/init.yaml") {
        let docs = documents(text(&f));
        let cluster = docs
            .iter()
            .find(|d| d["kind"] == "ClusterConfiguration")
            .unwrap();
        for key in [
            "kubernetesVersion",
            "controlPlaneEndpoint",
            "clusterName",
            "encryptionAlgorithm",
        ] {
            assert!(
                cluster[key].as_str().is_some_and(|s| !s.is_empty()),
                "{case}: {key}"
            );
        }
        assert!(cluster["etcd"].get("local").is_none(), "{case}");
        let kubelet = docs
            .iter()
            .find(|d| d["kind"] == "KubeletConfiguration")
            .unwrap();
        assert_eq!(kubelet["cgroupDriver"], "systemd", "{case}");
        let init = docs
            .iter()
            .find(|d| d["kind"] == "InitConfiguration")
            .unwrap();
        assert!(
            init["nodeRegistration"]["taints"].is_array(),
            "{case}: taints must always be written"
        );
    }
}
