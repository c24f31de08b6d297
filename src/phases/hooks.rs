//! The operator's `[[hook]]`s (inventory), run as root on the hosts they select at one point of
//! a run. Each hook is one recorded change (a dry run only lists it); its output is logged line by
//! line; a failing hook stops the run with its name and its last lines.

use std::time::Duration;

use crate::context::{Ctx, RunError};
use crate::inventory::HookPoint;
use crate::ssh::{Exec, Stream};

/// How long one hook may run.
const HOOK_LIMIT: Duration = Duration::from_secs(600);

/// The `point` hooks on every host in scope, hosts in parallel, each host's hooks in order.
pub(crate) async fn run(cx: &Ctx, point: HookPoint) -> Result<(), RunError> {
    if !cx.plan.inventory.hooks.iter().any(|h| h.when == point) {
        return Ok(());
    }
    cx.each_host(cx.hosts().map(|h| h.name.as_str()), |host| {
        run_on(cx, host, point)
    })
    .await?;
    Ok(())
}

/// The `point` hooks that select `host`, in inventory order.
pub(crate) async fn run_on(cx: &Ctx, host: &str, point: HookPoint) -> Result<(), RunError> {
    let roles = cx
        .plan
        .host(host)
        .map(|h| h.roles.clone())
        .unwrap_or_default();
    for hook in cx
        .plan
        .inventory
        .hooks
        .iter()
        .filter(|h| h.when == point && h.selects(host, &roles))
    {
        let step = format!("hook/{}", hook.name);
        let hp = cx.progress.host(host, &step);
        let log = |_: Stream, line: &str| {
            tracing::info!(host, hook = %hook.name, "{line}");
            hp.line(line);
        };
        let s = cx.session(host).await?;
        let result = cx
            .change(
                host,
                &step,
                format!("run the {point} hook `{}`", hook.name),
                Ctx::root(
                    &s,
                    host,
                    &step,
                    Exec::new("sh -s")
                        .stdin(hook.run.as_bytes())
                        .on_line(&log)
                        .timeout(HOOK_LIMIT),
                ),
            )
            .await;
        hp.finish(result.as_ref().err().map(ToString::to_string).as_deref());
        result?;
    }
    Ok(())
}
