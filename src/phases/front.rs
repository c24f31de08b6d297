//! The control-plane front. `vip`: keepalived and haproxy as host services on every control
//! plane, restarted only when their config changed. `kube-vip`: its static pod (on the first
//! control plane, until `kubeadm init` has made admin.conf useful, the bootstrap variant that uses
//! super-admin.conf). `external` and `dns`: nothing to install.

use std::collections::BTreeMap;
use std::path::Path;

use super::files::{Desired, Part, ask_states, sync, write_differing};
use super::files_of;
use super::probe::{Probe, Task, act};
use crate::context::{Ctx, RunError};
use crate::inventory::{EndpointMode, Role};
use crate::render::{KUBE_VIP_BOOTSTRAP_PATH, RenderedFile};

const KUBE_VIP_MANIFEST: &str = "/etc/kubernetes/manifests/kube-vip.yaml";

/// `bootstrap`: `kubeadm init` has yet to run on the first control plane.
pub(crate) async fn run(
    cx: &Ctx,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
    bootstrap: bool,
) -> Result<(), RunError> {
    match cx.plan.front.mode {
        EndpointMode::Vip => vip(cx, rendered).await,
        EndpointMode::KubeVip => kube_vip(cx, rendered, bootstrap).await,
        EndpointMode::External | EndpointMode::Dns => Ok(()),
    }
}

/// Once `kubeadm init` has made admin.conf useful: kube-vip leaves its bootstrap credentials.
pub(crate) async fn after_init(
    cx: &Ctx,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(), RunError> {
    match cx.plan.front.mode {
        EndpointMode::KubeVip => kube_vip(cx, rendered, false).await,
        _ => Ok(()),
    }
}

async fn vip(cx: &Ctx, rendered: &BTreeMap<String, Vec<RenderedFile>>) -> Result<(), RunError> {
    cx.each_host(
        cx.hosts()
            .filter(|h| h.has(Role::ControlPlane))
            .map(|h| h.name.as_str()),
        |host| vip_host(cx, host, rendered),
    )
    .await?;
    Ok(())
}

async fn vip_host(
    cx: &Ctx,
    host: &str,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(), RunError> {
    let hp = cx.progress.host(host, "front");
    let files: Vec<Desired> = files_of(rendered, host, Part::Front)
        .into_iter()
        .map(Desired::from)
        .collect();
    let services = [
        ("haproxy.service", "/etc/haproxy/"),
        ("keepalived.service", "/etc/keepalived/"),
    ];
    let start: Vec<Task> = services
        .iter()
        .map(|(unit, _)| {
            Task::new(
                "front/start",
                format!("enable and start {unit}"),
                format!("systemctl is-enabled --quiet {unit} && systemctl is-active --quiet {unit} || echo start"),
                format!("systemctl enable {unit} && systemctl start {unit}"),
            )
        })
        .collect();
    let s = cx.session(host).await?;
    let mut probe = Probe::default();
    let q_files = ask_states(&mut probe, &files, cx.opts.dry_run);
    let q_start = probe.tasks(&start);
    let answers = probe.run(&s).await?;
    let changed =
        write_differing(cx, &s, host, "front/files", &files, answers.get(q_files)).await?;
    for (((unit, dir), task), q) in services.iter().zip(&start).zip(q_start) {
        if changed.iter().any(|p| p.starts_with(dir)) {
            let cmd = format!("systemctl enable {unit} && systemctl restart {unit}");
            let what = format!("restart {unit} (its config changed)");
            cx.root_change(&s, host, "front/restart", what, &cmd)
                .await?;
        } else {
            act(cx, &s, host, task, &answers, q).await?;
        }
    }
    hp.finish(None);
    Ok(())
}

/// Places kube-vip's static pod; `bootstrapping` puts the super-admin variant on the first
/// control plane (kube-vip needs a working kubeconfig before `kubeadm init` grants admin.conf
/// its rights, the 1.29+ trap).
pub(crate) async fn kube_vip(
    cx: &Ctx,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
    bootstrapping: bool,
) -> Result<(), RunError> {
    let first = cx.plan.first_control_plane().map(|h| h.name.clone());
    for h in cx.hosts().filter(|h| h.has(Role::ControlPlane)) {
        let host = h.name.as_str();
        let files = files_of(rendered, host, Part::Front);
        let bootstrap = files
            .iter()
            .find(|f| f.path == Path::new(KUBE_VIP_BOOTSTRAP_PATH))
            .map(|f| f.content.clone());
        let mut desired: Vec<Desired> = files.into_iter().map(Desired::from).collect();
        if bootstrapping
            && first.as_deref() == Some(host)
            && let (Some(b), Some(m)) = (
                bootstrap,
                desired
                    .iter_mut()
                    .find(|d| d.path == Path::new(KUBE_VIP_MANIFEST)),
            )
        {
            *m = Desired::new(m.path.clone(), m.mode, None, b.into());
        }
        sync(cx, host, "front/files", &desired).await?;
    }
    Ok(())
}
