//! Namespace baselines (`[[security.namespace]]`): prepare puts `/etc/kbs/baselines/<ns>.yaml`
//! on the first control plane; once the cluster is up (after the CNI) each is applied there with
//! kubectl and the admin kubeconfig. What the API holds decides, not a marker: `kubectl diff` on
//! the rendered objects (sent on stdin, so a dry run compares what this run would write), and only
//! a file that differs is applied. A second run changes nothing; an object deleted or edited by
//! hand is put back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::cni::{ADMIN_CONF, NEED_KUBECTL};
use crate::context::{Ctx, RunError};
use crate::render::{BASELINES_DIR, RenderedFile};
use crate::ssh::quote;
use crate::ssh::{Exec, ExitStatus};

const STEP: &str = "baselines/apply";

/// Why a baseline needs applying, from `kubectl diff`'s exit status; `None`: the cluster holds it.
fn verdict(status: &ExitStatus) -> Option<&'static str> {
    match status {
        ExitStatus::Code(0) => None,
        ExitStatus::Code(1) => Some("differs from the cluster"),
        // No cluster yet (a dry run on new hosts), a namespace a server-side dry run cannot see
        // yet, ...: apply, which reports a real problem itself.
        _ => Some("not in the cluster yet, or not comparable"),
    }
}

pub(super) async fn run(
    cx: &Ctx,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(), RunError> {
    let Some(first) = cx.plan.first_control_plane() else {
        return Ok(());
    };
    let host = first.name.as_str();
    // add-node without the first control plane in scope leaves the running cluster alone.
    if !cx.in_scope(host) {
        return Ok(());
    }
    let files: Vec<&RenderedFile> = rendered
        .get(host)
        .into_iter()
        .flatten()
        .filter(|f| f.path.starts_with(BASELINES_DIR))
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    let hp = cx.progress.host(host, "baselines");
    let s = cx.session(host).await?;
    for f in files {
        let ns = f
            .path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let diff = s
            .exec(
                // No kubectl or admin kubeconfig yet (a dry run on new hosts): exit 2, as kubectl
                // diff does when it cannot compare; 1 means "differs".
                Exec::new(&format!(
                    "command -v kubectl >/dev/null && [ -f {ADMIN_CONF} ] || exit 2; kubectl --kubeconfig {ADMIN_CONF} diff -f -"
                ))
                .sudo(true)
                .stdin(&f.content)
                .timeout(Duration::from_secs(60)),
            )
            .await?;
        let Some(why) = verdict(&diff.status) else {
            continue;
        };
        let path = quote(Path::new(&f.path));
        let what = format!(
            "kubectl apply -f {} (namespace baseline {ns}: {why})",
            f.path.display()
        );
        cx.change(host, STEP, what, async {
            let show = |_: crate::ssh::Stream, line: &str| hp.line(line);
            let cmd = format!("{NEED_KUBECTL}; kubectl --kubeconfig {ADMIN_CONF} apply -f {path}");
            let cmd = Exec::new(&cmd)
                .on_line(&show)
                .timeout(Duration::from_secs(120));
            Ctx::root(&s, host, STEP, cmd).await
        })
        .await?;
    }
    hp.finish(None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_identical_cluster_skips_the_apply() {
        assert_eq!(verdict(&ExitStatus::Code(0)), None);
        assert!(verdict(&ExitStatus::Code(1)).is_some());
        assert!(verdict(&ExitStatus::Code(2)).is_some());
        assert!(verdict(&ExitStatus::Unknown).is_some());
    }
}
