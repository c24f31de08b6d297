//! The control-plane front. `vip`: keepalived and haproxy as host services on every control
//! plane, restarted only when their config changed. `kube-vip`: its static pod (on the first
//! control plane, until `kubeadm init` has made admin.conf useful, the bootstrap variant that uses
//! super-admin.conf). `external` and `dns`: nothing to install.

use std::collections::BTreeMap;
use std::path::Path;

use super::files::{Desired, Part, sync};
use super::probe::{Task, ensure};
use super::{ApplyError, Ctx, each_host, files_of};
use crate::inventory::{EndpointMode, Role};
use crate::render::{KUBE_VIP_BOOTSTRAP_PATH, RenderedFile};

const KUBE_VIP_MANIFEST: &str = "/etc/kubernetes/manifests/kube-vip.yaml";

pub(crate) async fn run(
    cx: &Ctx,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(), ApplyError> {
    match cx.plan.front.mode {
        EndpointMode::Vip => vip(cx, rendered).await,
        EndpointMode::KubeVip => {
            kube_vip(cx, rendered, !super::kubeadm::initialised(cx).await?).await
        }
        EndpointMode::External | EndpointMode::Dns => Ok(()),
    }
}

async fn vip(cx: &Ctx, rendered: &BTreeMap<String, Vec<RenderedFile>>) -> Result<(), ApplyError> {
    each_host(
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
) -> Result<(), ApplyError> {
    let hp = cx.progress.host(host, "front");
    let files: Vec<Desired> = files_of(rendered, host, Part::Front)
        .into_iter()
        .map(Desired::from)
        .collect();
    let changed = sync(cx, host, "front/files", &files).await?;
    for (service, dir) in [
        ("haproxy", "/etc/haproxy/"),
        ("keepalived", "/etc/keepalived/"),
    ] {
        let unit = format!("{service}.service");
        if changed.iter().any(|p| p.starts_with(dir)) {
            ensure(
                cx,
                host,
                Task::new(
                    "front/restart",
                    format!("restart {unit} (its config changed)"),
                    "echo restart",
                    format!("systemctl enable {unit} && systemctl restart {unit}"),
                ),
            )
            .await?;
        } else {
            ensure(cx, host, Task::new("front/start", format!("enable and start {unit}"), format!("systemctl is-enabled --quiet {unit} && systemctl is-active --quiet {unit} || echo start"), format!("systemctl enable {unit} && systemctl start {unit}")))
            .await?;
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
) -> Result<(), ApplyError> {
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
