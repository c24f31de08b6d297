//! Namespace baselines (`[[security.namespace]]`): prepare puts `/etc/kbs/baselines/<ns>.yaml`
//! on the first control plane; once the cluster is up (after the CNI) each is applied there where
//! the cluster differs (`super::kubectl`).

use std::collections::BTreeMap;

use super::kubectl::{Objects, apply_differing};
use crate::context::{Ctx, RunError};
use crate::render::{BASELINES_DIR, RenderedFile};

const STEP: &str = "baselines/apply";

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
        let objects = Objects {
            path: Some(&f.path),
            content: &f.content,
            what: format!("namespace baseline {ns}"),
            server_side: false,
        };
        apply_differing(cx, &s, host, &hp, STEP, &objects).await?;
    }
    hp.finish(None);
    Ok(())
}
