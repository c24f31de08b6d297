//! The CNI phase on lab hosts: the lab inventory's `[cni] plugin = "flannel"` (the lab mirror's
//! kube-flannel.yml, carried by the bundle kbs made) is rendered with the cluster's values (its
//! images named in the lab registry), applied once with kubectl (the lab's stand-in) through the API
//! into etcd, not applied again while it is unchanged, and applied again once it changes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{api_get, apply};
use crate::lab::{Lab, up};

const MARKER: &str = "/etc/kbs/cni/applied.sha256";
/// data/versions.toml's Flannel, which the lab mirror serves.
const FLANNEL: &str = "v0.28.9";

/// The marker's content and mtime on node-1.
fn marker(lab: &Lab) -> String {
    lab.exec("node-1", &format!("cat {MARKER}; stat -c %Y.%y {MARKER}"))
}

fn sha256_of(path: &Path) -> String {
    kbs::artifacts::sha256_hex(&std::fs::read(path).expect("read manifest"))
}

/// A copy of the lab's bundle whose file `file` (a CNI or addon manifest) has `edit` applied (and
/// its sum updated in bundle.toml), and a copy of the lab's inventory that uses it. The lab's own
/// bundle is left as kbs made it.
/// The bundle an inventory's text names.
pub fn bundle_of(inventory: &str) -> String {
    inventory
        .lines()
        .find_map(|l| l.strip_prefix("bundle = \""))
        .and_then(|l| l.split('"').next())
        .expect("the lab inventory names its bundle")
        .to_string()
}

pub fn changed_bundle(lab: &Lab, dir: &Path, file: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let inventory = std::fs::read_to_string(lab.inventory()).expect("inventory");
    let bundle = bundle_of(&inventory);
    let copy = dir.join("bundle");
    let st = std::process::Command::new("cp")
        .args(["-a", &bundle])
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(st.success());
    let cni = copy.join(file);
    let old = sha256_of(&cni);
    let text = std::fs::read_to_string(&cni).expect("cni.yaml");
    std::fs::write(&cni, edit(&text)).expect("write cni.yaml");
    let manifest = std::fs::read_to_string(copy.join("bundle.toml")).expect("bundle.toml");
    assert!(manifest.contains(&old), "bundle.toml lists {file}'s sum");
    std::fs::write(
        copy.join("bundle.toml"),
        manifest.replace(&old, &sha256_of(&cni)),
    )
    .expect("write bundle.toml");
    let path = dir.join("inventory.toml");
    std::fs::write(&path, inventory.replace(&bundle, &copy.to_string_lossy()))
        .expect("write inventory");
    path
}

#[test]
fn lab_cni_applied_once_then_only_when_it_changes() {
    let Some(lab) = up(&["3"]) else { return };
    let state = tempfile::tempdir().expect("tmp");
    let inventory = lab.inventory();

    let out = apply(&inventory, state.path(), &[]);
    assert!(
        out.contains("kubectl apply -f /etc/kbs/cni/cni.yaml (new CNI manifest flannel v0.28.9)"),
        "{out}"
    );
    // Rendered: the DaemonSet runs Flannel's images under their names in the lab registry, which
    // containerd holds on every node.
    let rendered = lab.exec("node-1", "cat /etc/kbs/cni/cni.yaml");
    let image = format!("{}:5000/flannel-io/flannel:{FLANNEL}", lab.ip(3));
    assert!(rendered.contains(&format!("image: {image}")), "{rendered}");
    assert!(!rendered.contains("ghcr.io/"), "{rendered}");
    for host in ["node-1", "node-2", "node-3"] {
        assert!(
            lab.exec(host, "ctr -n k8s.io images ls -q")
                .contains(&image),
            "{host} lacks {image}"
        );
    }
    // The objects are in the cluster, read back through the endpoint from this machine.
    let ds = api_get(
        state.path(),
        "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds",
    );
    assert_eq!(ds["kind"], "DaemonSet", "{ds}");
    let cm = api_get(
        state.path(),
        "/api/v1/namespaces/kube-flannel/configmaps/kube-flannel-cfg",
    );
    let net_conf = cm["data"]["net-conf.json"].as_str().unwrap_or_default();
    assert!(net_conf.contains("10.244.0.0/16"), "{cm}");
    for path in [
        "/api/v1/namespaces/kube-flannel",
        "/api/v1/namespaces/kube-flannel/serviceaccounts/flannel",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/flannel",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/flannel",
    ] {
        assert_eq!(
            api_get(state.path(), path)["metadata"]["name"],
            path.rsplit('/').next().unwrap_or_default()
        );
    }
    // ... and kubectl on the host lists them.
    let listed: Value = serde_json::from_str(&lab.exec(
        "node-1",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get daemonsets -A -o json",
    ))
    .expect("kubectl get -o json");
    // (The monitoring addon's node-exporter is a DaemonSet too.)
    let namespaces: Vec<&str> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    assert!(namespaces.contains(&"kube-flannel"), "{listed}");
    let applied = marker(&lab);
    let bundle_manifest = lab.exec("node-1", "sha256sum < /etc/kbs/cni/cni.yaml");
    assert!(
        applied.starts_with(bundle_manifest.split_whitespace().next().unwrap_or("?")),
        "{applied}"
    );

    // Unchanged: nothing is done and kubectl is not run again (the marker is not rewritten, the
    // objects keep their resourceVersion).
    let out = apply(&inventory, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");
    assert_eq!(marker(&lab), applied);
    let again = api_get(
        state.path(),
        "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds",
    );
    assert_eq!(
        again["metadata"]["resourceVersion"],
        ds["metadata"]["resourceVersion"]
    );

    // Changed (a new bundle with another backend): a dry run only reports it, a run applies it.
    let dir = tempfile::tempdir().expect("tmp");
    let changed = changed_bundle(
        &lab,
        dir.path(),
        &format!("cni/flannel-{FLANNEL}.yaml"),
        |t| t.replace("\"Type\": \"vxlan\"", "\"Type\": \"host-gw\""),
    );
    let out = apply(&changed, state.path(), &["--dry-run"]);
    assert!(
        out.contains("would kubectl apply -f /etc/kbs/cni/cni.yaml (changed CNI manifest"),
        "{out}"
    );
    assert_eq!(marker(&lab), applied, "a dry run changed the marker");
    let out = apply(&changed, state.path(), &[]);
    assert!(
        out.contains("kubectl apply -f /etc/kbs/cni/cni.yaml (changed CNI manifest"),
        "{out}"
    );
    let cm = api_get(
        state.path(),
        "/api/v1/namespaces/kube-flannel/configmaps/kube-flannel-cfg",
    );
    assert!(
        cm["data"]["net-conf.json"]
            .as_str()
            .unwrap_or_default()
            .contains("host-gw"),
        "{cm}"
    );
    let now = marker(&lab);
    assert_ne!(now, applied);
    let on_host = lab.exec("node-1", "sha256sum < /etc/kbs/cni/cni.yaml");
    assert!(
        now.starts_with(on_host.split_whitespace().next().unwrap_or("?")),
        "{now}"
    );
    let out = apply(&changed, state.path(), &[]);
    assert!(out.starts_with("no changes"), "{out}");
}
