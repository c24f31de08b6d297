//! Prepare hosts: swap off, kernel modules and sysctls, the etcd user, the binaries and units
//! from the bundle (checked against its manifest), containerd running with the bundle's images
//! imported and checked by digest, then the host-level rendered files.

use super::files::{Desired, Part, ask_states, write_differing};
use super::files_of;
use super::probe::{Probe, Task, act_all};
use crate::artifacts::{Bundle, Image};
use crate::context::{Ctx, RunError};
use crate::inventory::{Artifacts, Role};
use crate::plan::PlannedHost;
use crate::render::RenderedFile;
use crate::ssh::quote;
use crate::ssh::{Exec, Session};
use std::collections::{BTreeMap, BTreeSet};

/// The bundle the inventory names, or, without one, a bundle made now in the state dir from
/// upstream (or the inventory's mirrors and registry): one checked path for both. Nothing on any
/// host has changed yet, so a mirror that cannot be reached stops the run cleanly.
pub(crate) async fn load_artifacts(cx: &Ctx) -> Result<Bundle, RunError> {
    let inv = &cx.plan.inventory;
    let dir = match &inv.artifacts.source {
        Artifacts::Bundle(dir) => dir.clone(),
        Artifacts::Online => {
            let dir = cx.state.root().join("bundle");
            crate::artifacts::make::make(inv, &dir, cx.progress.is_interactive()).await?;
            dir
        }
    };
    Ok(Bundle::load(&dir, &inv.cluster.kubernetes_version)?)
}

pub(crate) async fn run(
    cx: &Ctx,
    bundle: &Bundle,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<Vec<String>, RunError> {
    let warnings = cx
        .each_host(cx.hosts().map(|h| h.name.as_str()), |host| async move {
            match cx.plan.host(host) {
                Some(h) => prepare_host(cx, h, bundle, rendered).await,
                None => Ok(Vec::new()),
            }
        })
        .await?;
    Ok(warnings.into_iter().flatten().collect())
}

pub(crate) async fn prepare_host(
    cx: &Ctx,
    h: &PlannedHost,
    bundle: &Bundle,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<Vec<String>, RunError> {
    let host = h.name.as_str();
    let hp = cx.progress.host(host, "prepare");
    let node = h.has(Role::ControlPlane) || h.has(Role::Worker);

    // Everything this phase checks is asked in one round trip, then put right in order.
    let mut first = Vec::new();
    if node {
        first.push(Task::new(
            "prepare/swap",
            "turn swap off and keep it off in /etc/fstab",
            "awk 'NR > 1' /proc/swaps; grep -E '^[^#].*\\sswap\\s' /etc/fstab || true",
            "swapoff -a && sed -i -E 's/^([^#].*\\sswap\\s)/#\\1/' /etc/fstab",
        ));
    }
    if h.has(Role::Etcd) {
        first.push(Task::new("prepare/etcd-user", "create the system user etcd", "id -u etcd >/dev/null 2>&1 || echo missing", "useradd --system --home-dir /var/lib/etcd --no-create-home --shell /usr/sbin/nologin etcd"));
    }
    let images: Vec<&Image> = bundle.images_for(h).collect();
    let artifacts: Vec<Desired> = bundle
        .files_for(h)
        .chain(images.iter().map(|i| &i.archive))
        .map(Desired::from)
        .collect();
    let mut then: Vec<Task> = bundle
        .links_for(h)
        .map(|l| {
            let (p, t) = (quote(&l.path), quote(&l.target));
            Task::new(
                "prepare/artifacts",
                format!("link {} -> {}", l.path.display(), l.target.display()),
                format!("[ \"$(readlink {p})\" = {t} ] || echo differs"),
                format!("ln -sfn {t} {p}"),
            )
        })
        .collect();
    if h.has(Role::Etcd) {
        // Debian's etcd-server package runs a default single-member etcd on the same ports.
        then.push(Task::new("prepare/distro-etcd", "stop and disable the distribution's etcd.service", "systemctl is-enabled etcd.service 2>/dev/null | grep -x enabled; systemctl is-active etcd.service 2>/dev/null | grep -x active; true", "systemctl disable --now etcd.service"));
    }
    let host_files: Vec<Desired> = files_of(rendered, host, Part::Host)
        .into_iter()
        .map(Desired::from)
        .collect();
    let mut runtime = Vec::new();
    let mut last = Vec::new();
    if node {
        runtime.push(Task::new(
            "prepare/containerd",
            "enable and start containerd.service",
            "systemctl is-enabled containerd.service 2>/dev/null | grep -qx enabled && systemctl is-active -q containerd.service || echo stopped",
            "systemctl enable --now containerd.service",
        ));
        last.push(Task::new(
            "prepare/kubelet",
            "enable kubelet.service",
            "systemctl is-enabled kubelet.service 2>/dev/null | grep -qx enabled || echo disabled",
            "systemctl enable kubelet.service",
        ));
    }

    let s = cx.session(host).await?;
    let mut probe = Probe::default();
    let (q_first, q_artifacts) = (
        probe.tasks(&first),
        ask_states(&mut probe, &artifacts, cx.opts.dry_run),
    );
    let (q_then, q_files, q_runtime, q_last) = (
        probe.tasks(&then),
        ask_states(&mut probe, &host_files, cx.opts.dry_run),
        probe.tasks(&runtime),
        probe.tasks(&last),
    );
    let q_images = probe.ask(LIST_IMAGES);
    let answers = probe.run(&s).await?;

    act_all(cx, &s, host, &first, &answers, &q_first).await?;
    hp.step("artifacts");
    let mut changed = write_differing(
        cx,
        &s,
        host,
        "prepare/artifacts",
        &artifacts,
        answers.get(q_artifacts),
    )
    .await?;
    act_all(cx, &s, host, &then, &answers, &q_then).await?;
    hp.step("host settings");
    changed.extend(
        write_differing(
            cx,
            &s,
            host,
            "prepare/files",
            &host_files,
            answers.get(q_files),
        )
        .await?,
    );
    let touched = |suffix: &str| {
        changed
            .iter()
            .any(|p| p.to_string_lossy().ends_with(suffix) || p.to_string_lossy().contains(suffix))
    };
    if touched(".service") || touched(".service.d/") {
        cx.root_change(
            &s,
            host,
            "prepare/daemon-reload",
            "reload systemd units",
            "systemctl daemon-reload",
        )
        .await?;
    }
    let mut warnings = Vec::new();
    if touched("/modules-load.d/") || touched("/sysctl.d/") {
        // Containers share the kernel of their host and cannot load modules or set every sysctl:
        // report what did not take instead of failing.
        let out = s
            .exec(Exec::new("for m in overlay br_netfilter; do [ -d /sys/module/$m ] || modprobe $m >/dev/null 2>&1 || echo \"module $m not loaded\"; done; sysctl --system >/dev/null 2>/tmp/kbs-sysctl.err || cat /tmp/kbs-sysctl.err; rm -f /tmp/kbs-sysctl.err").sudo(true))
            .await?;
        warnings.extend(
            out.stdout_lossy()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("{host}: {l}")),
        );
    }
    if node {
        hp.step("containerd");
        let started = act_all(cx, &s, host, &runtime, &answers, &q_runtime).await?;
        let runtime_changed = changed.iter().any(|p| {
            let p = p.to_string_lossy();
            p.starts_with("/etc/containerd/") || p.contains("containerd") || p.ends_with("/runc")
        });
        if runtime_changed && !started.iter().any(|s| *s) {
            cx.root_change(
                &s,
                host,
                "prepare/containerd",
                "restart containerd.service for its new configuration or binaries",
                "systemctl restart containerd.service",
            )
            .await?;
        }
        hp.step("images");
        import_images(cx, &s, host, &images, answers.get(q_images)).await?;
    }
    act_all(cx, &s, host, &last, &answers, &q_last).await?;
    hp.finish(None);
    Ok(warnings)
}

/// Every image containerd holds for Kubernetes, as `NAME DIGEST` lines.
const LIST_IMAGES: &str = "ctr -n k8s.io images ls 2>/dev/null | awk 'NR > 1 { print $1, $3 }'";

fn missing<'a>(images: &[&'a Image], listed: &str) -> Vec<&'a Image> {
    let have: BTreeSet<(&str, &str)> = listed.lines().filter_map(|l| l.split_once(' ')).collect();
    images
        .iter()
        .filter(|i| !have.contains(&(i.name.as_str(), i.digest.as_str())))
        .copied()
        .collect()
}

/// Imports the images containerd lacks (by name and digest) from their archives, then checks that
/// every one is there: kubeadm init and join find what they need without pulling.
async fn import_images(
    cx: &Ctx,
    s: &Session,
    host: &str,
    images: &[&Image],
    listed: &str,
) -> Result<(), RunError> {
    let todo = missing(images, listed);
    if todo.is_empty() {
        return Ok(());
    }
    let snapshotter = cx.plan.inventory.containerd.snapshotter.as_str();
    for i in &todo {
        // `--local`: the transfer service's unpacker knows only the default snapshotter.
        cx.root_change(
            s,
            host,
            "prepare/images",
            format!("import image {} ({})", i.name, i.digest),
            &format!(
                "ctr -n k8s.io images import --local --snapshotter {snapshotter} {}",
                quote(&i.archive.install)
            ),
        )
        .await?;
    }
    if cx.opts.dry_run {
        return Ok(());
    }
    let out = s.exec(Exec::new(LIST_IMAGES).sudo(true)).await?;
    let still = missing(images, &out.stdout_lossy());
    if let Some(first) = still.first() {
        return Err(RunError::Step {
            host: host.into(),
            step: "prepare/images".into(),
            message: format!(
                "containerd lacks image {} with digest {} after importing {}{}",
                first.name,
                first.digest,
                first.archive.install.display(),
                if still.len() > 1 {
                    format!(" (and {} more)", still.len() - 1)
                } else {
                    String::new()
                }
            ),
        });
    }
    Ok(())
}
