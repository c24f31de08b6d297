//! Verify from this machine, as an operator would: the API answers through the endpoint with a
//! certificate that verifies against the cluster CA, and every node has registered.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::context::api::{admin_client, ready};
use crate::context::{Ctx, HEALTH_WAIT, RunError, retry};
use crate::inventory::Role;

pub(super) async fn run(cx: &Ctx) -> Result<(), RunError> {
    if cx.opts.dry_run {
        return Ok(());
    }
    let api = admin_client(&cx.state).map_err(RunError::Verify)?;
    // add-node checks its own hosts: others in the inventory may be waiting for their turn.
    let want: BTreeSet<String> = cx
        .hosts()
        .filter(|h| h.has(Role::ControlPlane) || h.has(Role::Worker))
        .map(|h| h.name.clone())
        .collect();
    let hp = cx.progress.host("cluster", "verify");
    retry::until_shown(&hp, HEALTH_WAIT, Duration::from_secs(2), || async {
        ready(&api.client, &api.server).await?;
        let have: BTreeSet<String> = api
            .nodes()
            .await?
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        let missing: Vec<&str> = want.difference(&have).map(String::as_str).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("nodes not registered yet: {}", missing.join(", ")))
        }
    })
    .await
    .map_err(|problem| {
        RunError::Verify(format!(
            "the cluster did not become ready through {}: {problem}",
            api.server
        ))
    })
}
