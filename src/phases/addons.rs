//! Addons (`[addons]`): each enabled addon's release manifest, from the bundle (or, for an addon
//! upstream ships no plain manifest for, its objects from templates/), is rendered with the
//! cluster's values, put on the first control plane as `/etc/kbs/addons/<addon>.yaml` and
//! applied where the cluster differs (`super::kubectl`), after the CNI. Every object carries
//! `app.kubernetes.io/managed-by: kbs` and `kbs.io/addon: <addon>`. The file left on the host is
//! the record of what kbs installed: an addon the inventory no longer enables is removed with
//! `kubectl delete -f` of that file, so exactly its objects go, and nothing else; an object a new
//! release of an addon no longer has is deleted the same way, before the new file replaces it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::files::{Desired, sync};
use super::kubectl::{ADMIN_CONF, NEED_KUBECTL, Objects, apply_differing};
use crate::artifacts::Bundle;
use crate::context::{Ctx, RunError};
use crate::inventory::{Addon, AddonKind, Inventory};
use crate::render::AddonSecret;
use crate::ssh::Exec;

const DIR: &str = "/etc/kbs/addons";
const STEP: &str = "addons/apply";
const REMOVE: &str = "addons/remove";
const PRUNE: &str = "addons/prune";
const SECRET: &str = "addons/secret";
/// The labels every object an addon installs carries.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const ADDON_LABEL: &str = "kbs.io/addon";
/// The pod template annotation that holds the hash of the configuration its pods mount.
pub const CONFIG_SUM: &str = "kbs.io/config-sha256";
/// The pod template annotation that holds a keyed digest of the addon Secret its pods read.
pub const SECRET_SUM: &str = "kbs.io/secret-hmac-sha256";
/// The annotation that makes a StorageClass the cluster's default.
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

fn path_of(kind: AddonKind) -> PathBuf {
    PathBuf::from(format!("{DIR}/{}.yaml", kind.as_str()))
}

/// The objects of `addon`'s release `manifest` as kbs applies them: every image under its pinned
/// name (in the site's registry when there is one), the kbs labels on every object, and the
/// storage addon's StorageClass marked default, and pod templates rolled on a changed
/// configuration or `secrets` (name, digest). An image the data file does not list is an error:
/// the bundle would not hold it.
pub fn render(
    addon: &Addon,
    manifest: &str,
    inv: &Inventory,
    secrets: &[(&str, String)],
) -> Result<String, String> {
    let final_name = |name: &str| {
        inv.registry
            .as_ref()
            .map_or_else(|| name.to_string(), |r| r.map(name))
    };
    let mut text = String::with_capacity(manifest.len());
    for line in manifest.lines() {
        // `image: X` as a mapping entry or list item, also inside a ConfigMap's embedded YAML.
        let image = line.find("image:").and_then(|at| {
            let before = line[..at].trim_start().trim_start_matches("- ");
            (before.is_empty()).then(|| (at, line[at + 6..].trim().trim_matches(['"', '\''])))
        });
        match image {
            Some((at, written)) => {
                let Some(i) = addon.images.iter().find(|i| i.written == written) else {
                    return Err(format!(
                        "the manifest runs image `{written}`, which data/versions.toml does not list for {}: the bundle does not hold it",
                        addon.describe()
                    ));
                };
                text.push_str(&line[..at]);
                text.push_str("image: ");
                text.push_str(&final_name(&i.name));
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| format!("the manifest of {} is not YAML: {e}", addon.describe()))?;
    let mut objects = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let mut obj = doc;
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(format!(
                "an object of the {} manifest has no metadata",
                addon.describe()
            ));
        };
        let labels = entry_map(meta, "labels");
        labels.insert(MANAGED_BY.into(), "kbs".into());
        labels.insert(ADDON_LABEL.into(), addon.kind.as_str().into());
        if addon.kind == AddonKind::LocalPathProvisioner
            && obj.get("kind").and_then(Value::as_str) == Some("StorageClass")
            && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            entry_map(meta, "annotations").insert(DEFAULT_CLASS.into(), "true".into());
        }
        objects.push(obj);
    }
    roll_on_change(&mut objects, secrets);
    let yaml = serde_saphyr::to_string_multiple(&objects)
        .map_err(|e| format!("cannot write the {} objects: {e}", addon.describe()))?;
    Ok(format!(
        "# {}, rendered by kbs (docs/addons.md).\n{yaml}",
        addon.describe()
    ))
}

/// A workload's pod template carries the hash of the ConfigMaps of the same file it mounts, and
/// the digest of each of `secrets` (name, digest) it reads: a changed configuration, password or
/// token rolls its pods, which `kubectl apply` of the ConfigMap or Secret alone would not
/// (Prometheus reads its configuration, Grafana and Fluent Bit their Secret, only at start).
fn roll_on_change(objects: &mut [Value], secrets: &[(&str, String)]) {
    let data: Vec<(String, String)> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .filter_map(|o| {
            Some((
                o["metadata"]["name"].as_str()?.into(),
                o["data"].to_string(),
            ))
        })
        .collect();
    for o in objects.iter_mut().filter(|o| {
        matches!(
            o["kind"].as_str(),
            Some("Deployment" | "DaemonSet" | "StatefulSet")
        )
    }) {
        let pod = &o["spec"]["template"]["spec"];
        let mounted: String = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["configMap"]["name"].as_str())
            .filter_map(|name| data.iter().find(|(n, _)| n == name))
            .map(|(_, d)| d.as_str())
            .collect();
        let read: String = secrets
            .iter()
            .filter(|(name, _)| reads_secret(pod, name))
            .map(|(_, d)| d.as_str())
            .collect();
        let Some(meta) = o
            .pointer_mut("/spec/template/metadata")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (key, value) in [(CONFIG_SUM, mounted), (SECRET_SUM, read)] {
            if !value.is_empty() {
                let sum = crate::artifacts::sha256_hex(value.as_bytes());
                entry_map(meta, "annotations").insert(key.into(), sum.into());
            }
        }
    }
}

/// Whether a pod spec reads Secret `name`: a volume, a projected source, `env` or `envFrom`.
fn reads_secret(v: &Value, name: &str) -> bool {
    match v {
        Value::Object(m) => {
            m.get("secretName").is_some_and(|n| n == name)
                || ["secretKeyRef", "secretRef", "secret"]
                    .iter()
                    .any(|k| m.get(*k).is_some_and(|r| r["name"] == name))
                || m.values().any(|v| reads_secret(v, name))
        }
        Value::Array(a) => a.iter().any(|v| reads_secret(v, name)),
        _ => false,
    }
}

/// HMAC-SHA256 of an addon Secret's value, keyed with the cluster CA's key: it changes with the
/// value, and tells whoever can read a Deployment nothing of a weak password.
fn secret_digest(key: &[u8], value: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(value);
    hex::encode(mac.finalize().into_bytes())
}

/// The file of the user's that `kind`'s Secret is made from, where the inventory names one.
fn secret_file(inv: &Inventory, kind: AddonKind) -> Option<&Path> {
    match kind {
        AddonKind::Logging => inv.logging.as_ref()?.token_file.as_deref(),
        AddonKind::Grafana => inv
            .grafana
            .as_ref()
            .map(|g| g.admin_password_file.as_path()),
        _ => None,
    }
}

/// The content of `file` (its mode was checked when the inventory loaded), but for the line
/// ending an editor leaves. It goes to kubectl on stdin only: never in a file on the host, in a
/// process's arguments or in a log.
fn secret_value(secret: &AddonSecret, file: &Path) -> Result<Vec<u8>, String> {
    let mut content =
        std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if content.ends_with(b"\n") {
        content.pop();
        if content.ends_with(b"\r") {
            content.pop();
        }
    }
    if content.is_empty() {
        return Err(format!(
            "{} is empty: it must hold {}",
            file.display(),
            secret.holds
        ));
    }
    Ok(content)
}

/// `secret` holding `value`, as JSON for kubectl's stdin.
fn secret_object(secret: &AddonSecret, value: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret.name,
            "namespace": secret.namespace,
            "labels": {MANAGED_BY: "kbs", ADDON_LABEL: secret.addon.as_str()},
        },
        "type": "Opaque",
        "data": {secret.key: base64::engine::general_purpose::STANDARD.encode(value)},
    });
    object.to_string().into_bytes()
}

/// Whether `namespace` is in the cluster (false where there is no cluster or kubectl yet).
async fn namespace_exists(
    s: &crate::ssh::Session,
    host: &str,
    namespace: &str,
) -> Result<bool, RunError> {
    let out = Ctx::root(
        s,
        host,
        "addons/namespace",
        Exec::new(&format!(
            "command -v kubectl >/dev/null && [ -f {ADMIN_CONF} ] && kubectl --kubeconfig {ADMIN_CONF} get namespace {} -o name 2>/dev/null || true",
            crate::ssh::quote(namespace)
        )),
    )
    .await?;
    Ok(!out.trim().is_empty())
}

/// Each object of a rendered file by what names it: apiVersion, kind, namespace and name.
fn identities(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap_or_default();
    docs.iter()
        .filter(|o| o.is_object())
        .map(|o| {
            let mut meta = Map::new();
            for k in ["name", "namespace"] {
                if let Some(v) = o["metadata"].get(k) {
                    meta.insert(k.into(), v.clone());
                }
            }
            serde_json::json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": meta})
        })
        .collect()
}

/// The objects of the file applied before (`old`) that the new one no longer has: a new release
/// of the addon dropped them, and kbs installed them, so they go.
fn dropped(old: &str, new: &str) -> Vec<Value> {
    let keep = identities(new);
    identities(old)
        .into_iter()
        .filter(|o| !keep.contains(o))
        .collect()
}

/// What `kubectl get` calls the kinds that the CustomResourceDefinitions of a file define:
/// `plural.group`.
fn defined_resources(yaml: &str) -> Vec<String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap_or_default();
    docs.iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| {
            let spec = &o["spec"];
            Some(format!(
                "{}.{}",
                spec["names"]["plural"].as_str()?,
                spec["group"].as_str()?
            ))
        })
        .collect()
}

/// The objects in `kubectl get -o json` lists that kbs did not install (no `kbs.io/addon`
/// label), as `Kind namespace/name`.
fn not_installed_by_kbs(lists: &str) -> Vec<String> {
    serde_json::Deserializer::from_str(lists)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .flat_map(|l| l["items"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["metadata"]["labels"].get(ADDON_LABEL).is_none())
        .map(|o| {
            let m = &o["metadata"];
            let ns = m["namespace"]
                .as_str()
                .map(|n| format!("{n}/"))
                .unwrap_or_default();
            format!(
                "{} {ns}{}",
                o["kind"].as_str().unwrap_or("?"),
                m["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The custom resources of the kinds a disabled addon's file (on the host) defines that kbs did
/// not install: deleting the definitions would delete a site's objects (its HTTPRoutes, say) with
/// no word, so the removal stops on them. Read-only: a dry run says the same.
async fn custom_resources_left(
    s: &crate::ssh::Session,
    host: &str,
    path: &std::path::Path,
) -> Result<Vec<String>, RunError> {
    let kinds = defined_resources(&installed(s, host, path).await?);
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    // A kind whose definition is gone already (a removal cut off) lists nothing.
    let gets: Vec<String> = kinds
        .iter()
        .map(|k| {
            format!(
                "kubectl --kubeconfig {ADMIN_CONF} get {} -A -o json 2>/dev/null",
                crate::ssh::quote(k)
            )
        })
        .collect();
    let cmd = format!("{NEED_KUBECTL}; {}; true", gets.join("; "));
    let lists = Ctx::root(s, host, "addons/left", Exec::new(&cmd)).await?;
    Ok(not_installed_by_kbs(&lists))
}

/// The file kbs applied last for an addon, on the host: the record of what it installed ("" when
/// there is none).
async fn installed(
    s: &crate::ssh::Session,
    host: &str,
    path: &std::path::Path,
) -> Result<String, RunError> {
    let cmd = format!("cat {} 2>/dev/null || true", crate::ssh::quote(path));
    Ctx::root(s, host, "addons/read", Exec::new(&cmd)).await
}

/// `meta[key]` as a map, made when absent.
fn entry_map<'a>(meta: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = meta.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("made an object just above"),
    }
}

pub(super) async fn run(cx: &Ctx, bundle: &Bundle) -> Result<(), RunError> {
    let Some(first) = cx.plan.first_control_plane() else {
        return Ok(());
    };
    let host = first.name.as_str();
    // add-node without the first control plane in scope leaves the running cluster alone.
    if !cx.in_scope(host) {
        return Ok(());
    }
    let inv = &cx.plan.inventory;
    let bad = |message: String| RunError::Step {
        host: host.into(),
        step: "addons".into(),
        message,
    };
    // The key of the Secrets' digests in pod templates; no CA yet: a dry run of a new cluster.
    let key = std::fs::read(
        cx.state
            .pki_dir()
            .join(format!("{}.key", crate::pki::spec::CaKind::Cluster.base())),
    )
    .ok();
    let mut files = Vec::new();
    let mut secrets = Vec::new();
    for a in &inv.addons {
        let secret = match (AddonSecret::of(a.kind), secret_file(inv, a.kind)) {
            (Some(secret), Some(file)) => Some((secret, secret_value(&secret, file).map_err(bad)?)),
            _ => None,
        };
        let sums: Vec<(&str, String)> = secret
            .iter()
            .zip(&key)
            .map(|((secret, value), key)| (secret.name, secret_digest(key, value)))
            .collect();
        secrets.push(secret);
        let text = match crate::render::addon_manifest(&cx.plan, &cx.templates, a)
            .map_err(|e| bad(e.to_string()))?
        {
            Some(text) => text,
            None => {
                let m = bundle
                    .addon(a.kind.as_str())
                    .filter(|m| m.version == a.version)
                    .ok_or_else(|| {
                        bad(format!(
                            "the bundle in {} holds no manifest for {}: make it again with `kbs bundle` from this inventory",
                            bundle.dir.display(),
                            a.describe()
                        ))
                    })?;
                String::from_utf8(m.content.to_vec())
                    .map_err(|_| bad(format!("the {} manifest is not UTF-8 text", a.describe())))?
            }
        };
        let content = render(a, &text, inv, &sums).map_err(bad)?;
        files.push(Desired::new(
            path_of(a.kind),
            0o644,
            None,
            content.into_bytes().into(),
        ));
    }
    let hp = cx.progress.host(host, "addons");
    let s = cx.session(host).await?;
    // Addons applied before that the inventory no longer enables; their removal is checked
    // before anything changes.
    let listed = Ctx::root(
        &s,
        host,
        "addons/list",
        Exec::new(&format!("ls -1 {DIR} 2>/dev/null || true")),
    )
    .await?;
    let mut disabled: Vec<AddonKind> = listed
        .lines()
        .filter_map(|l| AddonKind::from_name(l.strip_suffix(".yaml")?))
        .filter(|k| !inv.addons.iter().any(|a| a.kind == *k))
        .collect();
    // In the reverse of the order they are applied: the ingress file's Gateway goes while the
    // Gateway API's definitions that kubectl needs to name it are still there.
    disabled.sort_by(|a, b| b.cmp(a));
    for kind in &disabled {
        let left = custom_resources_left(&s, host, &path_of(*kind)).await?;
        if !left.is_empty() {
            return Err(bad(format!(
                "addon {} is disabled, but the cluster holds {} of the kinds its CustomResourceDefinitions define that kbs did not make ({}): deleting the definitions would delete them too. Delete them first, or turn the addon back on",
                kind.as_str(),
                crate::words::count(left.len(), "object"),
                crate::words::some(&left)
            )));
        }
    }
    // Before the new files replace the old ones, which are the record of what kbs installed.
    for (a, f) in inv.addons.iter().zip(&files) {
        let old = installed(&s, host, &f.path).await?;
        let gone = dropped(&old, &String::from_utf8_lossy(&f.content.bytes()?));
        if gone.is_empty() {
            continue;
        }
        let names: Vec<String> = gone
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let what = format!(
            "kubectl delete {} (no longer in addon {})",
            names.join(" "),
            a.describe()
        );
        let list = serde_saphyr::to_string_multiple(&gone)
            .map_err(|e| bad(format!("cannot write the objects to delete: {e}")))?;
        cx.change(host, PRUNE, what, async {
            let show = |_: crate::ssh::Stream, line: &str| hp.line(line);
            let cmd = format!(
                "{NEED_KUBECTL}; kubectl --kubeconfig {ADMIN_CONF} delete --ignore-not-found -f -"
            );
            let cmd = Exec::new(&cmd)
                .stdin(list.as_bytes())
                .on_line(&show)
                .timeout(Duration::from_secs(120));
            Ctx::root(&s, host, PRUNE, cmd).await
        })
        .await?;
    }
    sync(cx, host, "addons/manifest", &files).await?;
    for ((a, f), secret) in inv.addons.iter().zip(&files).zip(&secrets) {
        let content = f.content.bytes()?;
        let mut steps = vec![(
            STEP,
            Objects {
                path: Some(&f.path),
                content: &content,
                what: format!("addon {}", a.describe()),
                server_side: a.server_side,
            },
        )];
        let secret_content = secret
            .as_ref()
            .map(|(secret, value)| secret_object(secret, value));
        if let (Some((secret, _)), Some(content)) = (secret, &secret_content) {
            let objects = Objects {
                path: None,
                content,
                what: format!(
                    "Secret {}/{}, {}",
                    secret.namespace, secret.name, secret.holds
                ),
                server_side: false,
            };
            // Before the addon's file, whose pods it rolls then read the new value; on a new
            // cluster after it, as the file makes the namespace.
            let at = if namespace_exists(&s, host, secret.namespace).await? {
                0
            } else {
                1
            };
            steps.insert(at, (SECRET, objects));
        }
        for (step, objects) in &steps {
            apply_differing(cx, &s, host, &hp, step, objects).await?;
        }
    }
    // Addons applied before that the inventory no longer enables.
    for kind in disabled {
        let path = path_of(kind);
        let what = format!(
            "kubectl delete -f {} (addon {} is disabled: the objects kbs installed for it)",
            path.display(),
            kind.as_str()
        );
        cx.change(host, REMOVE, what, async {
            let show = |_: crate::ssh::Stream, line: &str| hp.line(line);
            let p = crate::ssh::quote(&path);
            // Its Secret is not in the file (it never touches the host's disk).
            let secret = AddonSecret::of(kind).map_or_else(String::new, |secret| {
                format!(
                    "kubectl --kubeconfig {ADMIN_CONF} delete --ignore-not-found -n {} secret {} && ",
                    secret.namespace, secret.name
                )
            });
            // The file goes only once its objects are gone: a run cut off deletes them again.
            let cmd = format!(
                "{NEED_KUBECTL}; {secret}kubectl --kubeconfig {ADMIN_CONF} delete --ignore-not-found -f {p} && rm -f {p}"
            );
            let cmd = Exec::new(&cmd)
                .on_line(&show)
                .timeout(Duration::from_secs(120));
            Ctx::root(&s, host, REMOVE, cmd).await
        })
        .await?;
    }
    hp.finish(None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::cni::tests::inventory;
    use super::*;

    fn local_path(inv: &Inventory) -> &Addon {
        inv.addons
            .iter()
            .find(|a| a.kind == AddonKind::LocalPathProvisioner)
            .expect("on by default")
    }

    #[test]
    fn images_are_pinned_and_in_the_registry_and_objects_labelled() {
        let inv = inventory("[registry]\naddress = \"reg.example:5000\"\n");
        let a = local_path(&inv);
        let v = &a.version;
        let manifest = format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: local-path\nprovisioner: rancher.io/local-path\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-path-config\n  namespace: local-path-storage\ndata:\n  helperPod.yaml: |-\n    spec:\n      containers:\n      - name: helper-pod\n        image: busybox\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: p\nspec:\n  template:\n    spec:\n      containers:\n        - name: p\n          image: rancher/local-path-provisioner:{v}\n"
        );
        let out = render(a, &manifest, &inv, &[]).expect("renders");
        assert!(
            out.contains(&format!(
                "reg.example:5000/rancher/local-path-provisioner:{v}"
            )),
            "{out}"
        );
        assert!(
            out.contains("image: reg.example:5000/library/busybox:"),
            "{out}"
        );
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("YAML");
        assert_eq!(docs.len(), 3);
        for d in &docs {
            assert_eq!(d["metadata"]["labels"][MANAGED_BY], "kbs", "{d}");
            assert_eq!(
                d["metadata"]["labels"][ADDON_LABEL],
                "local-path-provisioner"
            );
        }
        assert_eq!(docs[0]["metadata"]["annotations"][DEFAULT_CLASS], "true");
        assert!(docs[2]["metadata"].get("annotations").is_none());
    }

    #[test]
    fn a_changed_config_map_rolls_the_pods_that_mount_it() {
        let inv = inventory("");
        let manifest = |setting: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\ndata:\n  a.yml: {setting}\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: uses\nspec:\n  template:\n    metadata:\n      labels: {{app: x}}\n    spec:\n      volumes:\n        - name: c\n          configMap:\n            name: conf\n---\n\
                 apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: other\nspec:\n  template:\n    metadata:\n      labels: {{app: y}}\n    spec: {{}}\n"
            )
        };
        let sums = |setting: &str| {
            let out = render(local_path(&inv), &manifest(setting), &inv, &[]).expect("renders");
            let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("YAML");
            (
                docs[1]["spec"]["template"]["metadata"]["annotations"][CONFIG_SUM].clone(),
                docs[2]["spec"]["template"]["metadata"]
                    .get("annotations")
                    .cloned(),
            )
        };
        let (one, untouched) = sums("one");
        assert!(one.as_str().is_some_and(|s| s.len() == 64), "{one}");
        assert_eq!(untouched, None, "mounts no ConfigMap of the file");
        assert_eq!(sums("one").0, one, "the same configuration, the same pods");
        assert_ne!(sums("two").0, one);
    }

    #[test]
    fn a_changed_secret_rolls_the_pods_that_read_it_by_a_keyed_digest() {
        let inv = inventory("");
        let manifest = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: reads\nspec:\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n      containers:\n        - name: c\n          env:\n            - name: T\n              valueFrom:\n                secretKeyRef: {name: tok, key: token}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: mounts\nspec:\n  template:\n    metadata:\n      labels: {app: y}\n    spec:\n      volumes:\n        - name: s\n          secret: {secretName: tok}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: other\nspec:\n  template:\n    metadata:\n      labels: {app: z}\n    spec: {}\n";
        let sums = |key: &[u8], value: &[u8]| -> Vec<Value> {
            let digest = secret_digest(key, value);
            let out =
                render(local_path(&inv), manifest, &inv, &[("tok", digest)]).expect("renders");
            let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("YAML");
            docs.iter()
                .map(|d| d["spec"]["template"]["metadata"]["annotations"][SECRET_SUM].clone())
                .collect()
        };
        let one = sums(b"ca key", b"pass-1");
        assert!(one[0].as_str().is_some_and(|s| s.len() == 64), "{one:?}");
        assert_eq!(one[1], one[0], "a volume reads it as env does");
        assert_eq!(one[2], Value::Null, "reads no Secret");
        assert_eq!(
            sums(b"ca key", b"pass-1"),
            one,
            "the same value, the same pods"
        );
        assert_ne!(sums(b"ca key", b"pass-2")[0], one[0]);
        // Keyed: another cluster's key gives another digest, and none is the value's plain hash.
        assert_ne!(sums(b"other key", b"pass-1")[0], one[0]);
        assert_ne!(
            secret_digest(b"ca key", b"pass-1"),
            crate::artifacts::sha256_hex(b"pass-1")
        );
    }

    #[test]
    fn an_addon_secret_holds_its_file_without_the_line_ending() {
        use crate::render::{GRAFANA_SECRET, LOGGING_SECRET};
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t");
        let made = |secret: &AddonSecret, text: &str| -> Result<Value, String> {
            std::fs::write(&path, text).expect("write");
            secret_value(secret, &path)
                .map(|v| serde_json::from_slice(&secret_object(secret, &v)).expect("JSON"))
        };
        let secret = made(&LOGGING_SECRET, "s3cret\n").expect("made");
        assert_eq!(secret["data"]["token"], "czNjcmV0");
        assert_eq!(secret["metadata"]["namespace"], "kbs-logging");
        assert_eq!(secret["metadata"]["labels"][ADDON_LABEL], "logging");
        // Only the line ending goes: a password's own trailing space stays.
        let secret = made(&GRAFANA_SECRET, "pass \r\n").expect("made");
        assert_eq!(secret["data"]["admin-password"], "cGFzcyA=");
        assert_eq!(secret["metadata"]["name"], "grafana-admin");
        assert_eq!(secret["metadata"]["namespace"], "kbs-monitoring");
        assert_eq!(secret["metadata"]["labels"][ADDON_LABEL], "grafana");
        let e = made(&GRAFANA_SECRET, "\n").expect_err("empty");
        assert!(
            e.contains("is empty: it must hold Grafana's admin password"),
            "{e}"
        );
    }

    #[test]
    fn objects_a_new_file_no_longer_has_are_dropped() {
        let old = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: x\nspec: {}\n---\n\
                   apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: x\n";
        let new = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: x\n  labels: {a: b}\n";
        let gone = dropped(old, new);
        assert_eq!(
            gone,
            [
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "x"}})
            ]
        );
        // Nothing applied before (a new cluster) or nothing dropped: nothing to delete.
        assert!(dropped("", new).is_empty());
        assert!(dropped(old, old).is_empty());
    }

    #[test]
    fn an_image_the_data_file_does_not_list_is_refused() {
        let inv = inventory("");
        let e = render(
            local_path(&inv),
            "kind: Pod\nmetadata:\n  name: x\nspec:\n  containers:\n  - image: evil.example/x:1\n",
            &inv,
            &[],
        )
        .expect_err("unlisted image");
        assert!(e.contains("`evil.example/x:1`"), "{e}");
    }

    #[test]
    fn a_removal_stops_on_custom_resources_kbs_did_not_make() {
        let file = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: httproutes.gateway.networking.k8s.io\nspec:\n  group: gateway.networking.k8s.io\n  names: {plural: httproutes, kind: HTTPRoute}\n---\n\
             apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: p\n";
        assert_eq!(
            defined_resources(file),
            ["httproutes.gateway.networking.k8s.io"]
        );
        assert!(defined_resources("kind: ConfigMap\nmetadata: {name: a}\n").is_empty());
        // Two lists, as `kubectl get -o json` prints them one after the other; kbs's own
        // Gateway (labelled) is not a reason to stop.
        let lists = r#"{"kind": "List", "items": [{"kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "shop"}}]}
{"kind": "List", "items": [{"kind": "Gateway", "metadata": {"name": "traefik", "namespace": "kbs-ingress", "labels": {"kbs.io/addon": "ingress"}}}, {"kind": "GatewayClass", "metadata": {"name": "other"}}]}"#;
        assert_eq!(
            not_installed_by_kbs(lists),
            ["HTTPRoute shop/web", "GatewayClass other"]
        );
        assert!(not_installed_by_kbs("").is_empty());
    }
}
