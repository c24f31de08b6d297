//! The CNI: the manifest `[cni] manifest` names is put on the first control plane and applied
//! there with kubectl and the admin kubeconfig, once kubeadm has brought the API up. The SHA-256
//! of the manifest last applied is kept next to it on that host, so a run applies it only when it
//! is new or changed. The marker is written only after kubectl succeeded, and `kubectl apply` is
//! itself idempotent, so a run cut off in between simply applies the same manifest again.

use std::path::PathBuf;

use super::files::{Desired, ask_states, write_differing};
use super::kubectl::{ADMIN_CONF, NEED_KUBECTL};
use super::probe::Probe;
use crate::artifacts::Bundle;
use crate::context::{Ctx, RunError};
use crate::inventory::Cni;
use crate::plan::PlannedHost;
use crate::ssh::Exec;
use crate::ssh::quote;

/// Where the manifest, with the cluster's values rendered in, goes on the first control plane.
const MANIFEST: &str = "/etc/kbs/cni/cni.yaml";
/// The SHA-256 of the manifest last applied successfully.
const APPLIED: &str = "/etc/kbs/cni/applied.sha256";
const STEP: &str = "cni/apply";

/// The manifest as it should be on `first`: a CNI release's from the bundle, or a hand-written one
/// (from the bundle, so its sum was checked, or next to the inventory), with the cluster's values.
fn desired(cx: &Ctx, cni: &Cni, bundle: &Bundle, first: &PlannedHost) -> Result<Desired, RunError> {
    let bad = |message: String| RunError::Step {
        host: first.name.clone(),
        step: "cni".into(),
        message,
    };
    let content: Vec<u8> = match &cni.manifest {
        Some(path) if path.starts_with(&bundle.dir) => bundle
            .file(path)
            .ok_or_else(|| {
                bad(format!(
                    "cni.manifest {} is not one of the bundle's files: list it in {} as a [[file]] so that its SHA-256 is checked",
                    path.display(),
                    bundle.dir.join(crate::artifacts::MANIFEST).display()
                ))
            })?
            .content
            .bytes()?
            .to_vec(),
        Some(path) => std::fs::read(path).map_err(|e| RunError::Step {
            host: "local".into(),
            step: "cni".into(),
            message: format!("cannot read cni.manifest {}: {e}", path.display()),
        })?,
        None => bundle
            .cni
            .as_ref()
            .ok_or_else(|| {
                bad(format!(
                    "the bundle in {} holds no CNI manifest for {}: make it again with `kbs bundle` from this inventory",
                    bundle.dir.display(),
                    cni.describe()
                ))
            })?
            .content
            .to_vec(),
    };
    let text = String::from_utf8(content)
        .map_err(|_| bad(format!("the {} manifest is not UTF-8 text", cni.describe())))?;
    Ok(Desired::new(
        PathBuf::from(MANIFEST),
        0o644,
        None,
        render(&text, &cx.plan.inventory).into_bytes().into(),
    ))
}

/// The cluster's values in a CNI release's manifest: its pod network, and image names in the
/// site's registry.
fn render(manifest: &str, inv: &crate::inventory::Inventory) -> String {
    let mut out = manifest.to_string();
    let pods = inv.cluster.pod_subnet.to_string();
    if let Some(r) = inv.cni.as_ref().and_then(|c| c.release.as_ref()) {
        // Flannel's net-conf.json and Calico's pool default to these ranges.
        out = out
            .replace(
                "\"Network\": \"10.244.0.0/16\"",
                &format!("\"Network\": \"{pods}\""),
            )
            .replace(
                "# - name: CALICO_IPV4POOL_CIDR\n            #   value: \"192.168.0.0/16\"",
                &format!("- name: CALICO_IPV4POOL_CIDR\n              value: \"{pods}\""),
            );
        if let Some(mtu) = inv.cni.as_ref().and_then(|c| c.mtu) {
            // calico-config's veth_mtu: "0" lets Calico detect it.
            out = out.replace("veth_mtu: \"0\"", &format!("veth_mtu: \"{mtu}\""));
        }
        if let Some(reg) = &inv.registry {
            for image in &r.images {
                out = out.replace(image.as_str(), &reg.map(image));
            }
        }
    }
    out
}

pub(super) async fn run(cx: &Ctx, bundle: &Bundle) -> Result<(), RunError> {
    let (Some(cni), Some(first)) = (&cx.plan.inventory.cni, cx.plan.first_control_plane()) else {
        return Ok(());
    };
    let host = first.name.as_str();
    // add-node without the first control plane in scope leaves the running cluster's CNI alone;
    // a manifest change is rolled out by `kbs apply`.
    if !cx.in_scope(host) {
        return Ok(());
    }
    let file = desired(cx, cni, bundle, first)?;
    let hp = cx.progress.host(host, "cni");
    let files = std::slice::from_ref(&file);
    // One round trip asks for the manifest's state and the marker of the one last applied.
    let s = cx.session(host).await?;
    let mut probe = Probe::default();
    let (q_file, q_applied) = (
        ask_states(&mut probe, files, cx.opts.dry_run),
        probe.ask(&format!("cat {APPLIED}")),
    );
    let answers = probe.run(&s).await?;
    write_differing(cx, &s, host, "cni/manifest", files, answers.get(q_file)).await?;

    let sum = file.sha256.clone();
    let applied = answers.get(q_applied).trim().to_string();
    if applied == sum {
        hp.finish(None);
        return Ok(());
    }
    let path = quote(&file.path);
    let what = format!(
        "kubectl apply -f {} ({} CNI manifest {})",
        file.path.display(),
        if applied.is_empty() { "new" } else { "changed" },
        cni.describe()
    );
    cx.change(host, STEP, what, async {
        let show = |_: crate::ssh::Stream, line: &str| hp.line(line);
        // The marker goes in atomically and only after kubectl succeeded.
        let script = format!(
            "{NEED_KUBECTL}; \
             kubectl --kubeconfig {ADMIN_CONF} apply -f {path} && install -d -m 0755 /etc/kbs/cni && \
             printf '%s\\n' {sum} > {APPLIED}.tmp && mv -f {APPLIED}.tmp {APPLIED}"
        );
        let cmd = Exec::new(&script)
            .on_line(&show)
            .timeout(std::time::Duration::from_secs(300));
        Ctx::root(&s, host, STEP, cmd).await
    })
    .await?;
    hp.finish(None);
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    use super::*;
    use crate::inventory::Inventory;

    /// A one-host inventory with `extra` tables (the addons' tests use it too).
    pub(in crate::phases) fn inventory(extra: &str) -> Inventory {
        let text = format!(
            "[cluster]\nname = \"t\"\npod_subnet = \"10.32.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
             [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\n{extra}\n\
             [[host]]\nname = \"n1\"\naddress = \"192.0.2.11\"\n"
        );
        Inventory::parse(Path::new("i.toml"), &text).expect("valid")
    }

    #[test]
    fn calico_gets_the_pod_cidr_mtu_and_registry_names() {
        let inv = inventory(
            "[cni]\nplugin = \"calico\"\nmtu = 1400\n[registry]\naddress = \"reg.example:5000/k8s\"\n",
        );
        // The shape of manifests/calico.yaml at v3.32.1.
        let manifest = "data:\n  veth_mtu: \"0\"\n---\n          containers:\n            - name: calico-node\n              image: quay.io/calico/node:v3.32.1\n              env:\n            # - name: CALICO_IPV4POOL_CIDR\n            #   value: \"192.168.0.0/16\"\n";
        let out = render(manifest, &inv);
        assert!(out.contains("  veth_mtu: \"1400\"\n"), "{out}");
        assert!(
            out.contains(
                "            - name: CALICO_IPV4POOL_CIDR\n              value: \"10.32.0.0/16\"\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("image: reg.example:5000/k8s/calico/node:v3.32.1"),
            "{out}"
        );
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).expect("still YAML");
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn flannel_gets_the_pod_cidr_and_keeps_upstream_names_without_a_registry() {
        let inv = inventory("[cni]\nplugin = \"flannel\"\n");
        let manifest = "  net-conf.json: |\n    {\n      \"Network\": \"10.244.0.0/16\",\n    }\n        image: ghcr.io/flannel-io/flannel:v0.28.9\n";
        let out = render(manifest, &inv);
        assert!(out.contains("\"Network\": \"10.32.0.0/16\""), "{out}");
        assert!(
            out.contains("image: ghcr.io/flannel-io/flannel:v0.28.9"),
            "{out}"
        );
    }
}
