//! Objects applied with kubectl on the first control plane, as namespace baselines and addons
//! are. What the API holds decides, not a marker: `kubectl diff` on the rendered objects (sent on
//! stdin, so a dry run compares what this run would write), and only a file that differs is
//! applied. A second run changes nothing; an object deleted or edited by hand is put back.

use std::path::Path;
use std::time::Duration;

use crate::context::{Ctx, RunError};
use crate::ssh::{Exec, ExitStatus, HostProgress, Session, quote};

pub(super) const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// Fails the remote script early, with the reason, where kubectl is missing.
pub(super) const NEED_KUBECTL: &str = "command -v kubectl >/dev/null || { echo 'kubectl is not installed: the bundle needs it for control planes' >&2; exit 1; }";

/// Why a file needs applying, from `kubectl diff`'s exit status; `None`: the cluster holds it.
fn verdict(status: &ExitStatus) -> Option<&'static str> {
    match status {
        ExitStatus::Code(0) => None,
        ExitStatus::Code(1) => Some("differs from the cluster"),
        // No cluster yet (a dry run on new hosts), a namespace a server-side dry run cannot see
        // yet, ...: apply, which reports a real problem itself.
        _ => Some("not in the cluster yet, or not comparable"),
    }
}

/// One file of objects for [`apply_differing`]: where it is on the host (`None`: nowhere, a
/// Secret is applied from stdin only), what it holds, how the change is named ("namespace
/// baseline team-a"), and whether it is applied server-side (CRDs too big for client-side
/// apply, whose copy of the object in an annotation would pass the API's 256 KiB limit).
pub(super) struct Objects<'a> {
    pub path: Option<&'a Path>,
    pub content: &'a [u8],
    pub what: String,
    pub server_side: bool,
}

/// The field manager kbs applies server-side as: it owns the fields it sets, and takes them back
/// (`--force-conflicts`) from whoever changed them, as a client-side apply would overwrite them.
const SERVER_SIDE: &str = " --server-side --force-conflicts --field-manager=kbs";

/// `kubectl apply -f` of `f.path` on `host`, as one change of `step`, when `kubectl diff` says
/// the cluster differs from `f.content`.
pub(super) async fn apply_differing(
    cx: &Ctx,
    s: &Session,
    host: &str,
    hp: &HostProgress,
    step: &str,
    f: &Objects<'_>,
) -> Result<(), RunError> {
    let mode = if f.server_side { SERVER_SIDE } else { "" };
    let diff = s
        .exec(
            // No kubectl or admin kubeconfig yet (a dry run on new hosts): exit 2, as kubectl
            // diff does when it cannot compare; 1 means "differs".
            Exec::new(&format!(
                "command -v kubectl >/dev/null && [ -f {ADMIN_CONF} ] || exit 2; kubectl --kubeconfig {ADMIN_CONF} diff{mode} -f -"
            ))
            .sudo(true)
            .stdin(f.content)
            .timeout(Duration::from_secs(60)),
        )
        .await?;
    let Some(why) = verdict(&diff.status) else {
        return Ok(());
    };
    let (file, shown) = match f.path {
        Some(p) => (quote(p), p.display().to_string()),
        None => ("-".to_string(), "-".to_string()),
    };
    let server_side = if f.server_side { " --server-side" } else { "" };
    let what = format!("kubectl apply{server_side} -f {shown} ({}: {why})", f.what);
    cx.change(host, step, what, async {
        let show = |_: crate::ssh::Stream, line: &str| hp.line(line);
        let cmd =
            format!("{NEED_KUBECTL}; kubectl --kubeconfig {ADMIN_CONF} apply{mode} -f {file}");
        let mut cmd = Exec::new(&cmd)
            .on_line(&show)
            .timeout(Duration::from_secs(120));
        if f.path.is_none() {
            cmd = cmd.stdin(f.content);
        }
        Ctx::root(s, host, step, cmd).await
    })
    .await?;
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
