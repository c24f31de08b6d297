//! The CNI: the manifest `[cni] manifest` names is put on the first control plane and applied
//! there with kubectl and the admin kubeconfig, once kubeadm has brought the API up. The SHA-256
//! of the manifest last applied is kept next to it on that host, so a run applies it only when it
//! is new or changed. The marker is written only after kubectl succeeded, and `kubectl apply` is
//! itself idempotent, so a run cut off in between simply applies the same manifest again.

use std::path::{Path, PathBuf};

use super::files::{Desired, sync};
use super::{ApplyError, Ctx};
use crate::artifacts::{Bundle, sha256_hex};
use crate::inventory::Cni;
use crate::plan::PlannedHost;
use crate::ssh::Exec;

/// Where the manifest goes in online mode; a bundle names its own install path.
const MANIFEST: &str = "/etc/kbs/cni/cni.yaml";
/// The SHA-256 of the manifest last applied successfully.
const APPLIED: &str = "/etc/kbs/cni/applied.sha256";
pub(super) const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// Fails the remote script early, with the reason, where kubectl is missing.
pub(super) const NEED_KUBECTL: &str = "command -v kubectl >/dev/null || { echo 'kubectl is not installed: the bundle needs it for control planes (or use online mode)' >&2; exit 1; }";
const STEP: &str = "cni/apply";

/// The manifest as it should be on `first`.
fn desired(cni: &Cni, bundle: Option<&Bundle>, first: &PlannedHost) -> Result<Desired, ApplyError> {
    let bad = |message: String| ApplyError::Step {
        host: first.name.clone(),
        step: "cni".into(),
        message,
    };
    match bundle {
        // From the bundle, so its sum was checked, and to the place prepare already put it on
        // every control plane (same bytes and mode, so nothing is written twice).
        Some(b) => {
            let a = b.file(&cni.manifest).ok_or_else(|| {
                bad(format!(
                    "cni.manifest {} is not one of the bundle's files: list it in {} as a [[file]] with for = \"control-plane\" so that its SHA-256 is checked",
                    cni.manifest.display(),
                    b.dir.join(crate::artifacts::MANIFEST).display()
                ))
            })?;
            if !a.hosts.includes(first) {
                return Err(bad(format!(
                    "the bundle installs cni.manifest {} only on etcd hosts: give its [[file]] for = \"control-plane\"",
                    a.source.display()
                )));
            }
            Ok(Desired::from(a))
        }
        None => {
            let content = std::fs::read(&cni.manifest).map_err(|e| ApplyError::Step {
                host: "local".into(),
                step: "cni".into(),
                message: format!("cannot read cni.manifest {}: {e}", cni.manifest.display()),
            })?;
            Ok(Desired::new(
                PathBuf::from(MANIFEST),
                0o644,
                None,
                content.into(),
            ))
        }
    }
}

pub(super) fn quote(p: &Path) -> String {
    shlex::try_quote(&p.to_string_lossy())
        .map(|q| q.into_owned())
        .unwrap_or_default()
}

pub(super) async fn run(cx: &Ctx, bundle: Option<&Bundle>) -> Result<(), ApplyError> {
    let (Some(cni), Some(first)) = (&cx.plan.inventory.cni, cx.plan.first_control_plane()) else {
        return Ok(());
    };
    let host = first.name.as_str();
    // add-node without the first control plane in scope leaves the running cluster's CNI alone;
    // a manifest change is rolled out by `kbs apply`.
    if !cx.in_scope(host) {
        return Ok(());
    }
    let file = desired(cni, bundle, first)?;
    let hp = cx.progress.host(host, "cni");
    sync(cx, host, "cni/manifest", std::slice::from_ref(&file)).await?;

    let sum = sha256_hex(&file.content);
    let s = cx.session(host).await?;
    let out = s
        .exec(Exec::new(&format!("cat {APPLIED} 2>/dev/null")).sudo(true))
        .await?;
    let applied = out.stdout_lossy().trim().to_string();
    if applied == sum {
        hp.finish(None);
        return Ok(());
    }
    let path = quote(&file.path);
    let what = format!(
        "kubectl apply -f {} ({} CNI manifest {})",
        file.path.display(),
        if applied.is_empty() { "new" } else { "changed" },
        cni.manifest.display()
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
