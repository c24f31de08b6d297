//! Prepare hosts: swap off, kernel modules and sysctls, the etcd user, and the binaries and units
//! from the artifact source (an offline bundle checked against its manifest, or the package
//! repositories), then the host-level rendered files.

use super::files::{Desired, Part, write_differing};
use super::probe::{Probe, Task, act_all, quote};
use super::{ApplyError, Ctx, each_host, files_of};
use crate::artifacts::Bundle;
use crate::inventory::{Artifacts, Role};
use crate::plan::PlannedHost;
use crate::render::RenderedFile;
use crate::ssh::Exec;
use std::collections::BTreeMap;

pub(crate) fn load_artifacts(cx: &Ctx) -> Result<Option<Bundle>, ApplyError> {
    match &cx.plan.inventory.artifacts {
        Artifacts::Bundle(dir) => Ok(Some(Bundle::load(
            dir,
            &cx.plan.inventory.cluster.kubernetes_version,
        )?)),
        Artifacts::Online => Ok(None),
    }
}

pub(crate) async fn run(
    cx: &Ctx,
    bundle: Option<&Bundle>,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<Vec<String>, ApplyError> {
    let warnings = each_host(cx.hosts().map(|h| h.name.as_str()), |host| async move {
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
    bundle: Option<&Bundle>,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<Vec<String>, ApplyError> {
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
    let (artifacts, mut then) = match bundle {
        Some(b) => (
            b.files_for(h).map(Desired::from).collect(),
            b.links_for(h)
                .map(|l| {
                    let (p, t) = (quote(&l.path), quote(&l.target));
                    Task::new(
                        "prepare/artifacts",
                        format!("link {} -> {}", l.path.display(), l.target.display()),
                        format!("[ \"$(readlink {p})\" = {t} ] || echo differs"),
                        format!("ln -sfn {t} {p}"),
                    )
                })
                .collect(),
        ),
        None => (Vec::new(), vec![online_install(cx, h)?]),
    };
    if h.has(Role::Etcd) {
        // Debian's etcd-server package runs a default single-member etcd on the same ports.
        then.push(Task::new("prepare/distro-etcd", "stop and disable the distribution's etcd.service", "systemctl is-enabled etcd.service 2>/dev/null | grep -x enabled; systemctl is-active etcd.service 2>/dev/null | grep -x active; true", "systemctl disable --now etcd.service"));
    }
    let host_files: Vec<Desired> = files_of(rendered, host, Part::Host)
        .into_iter()
        .map(Desired::from)
        .collect();
    let mut last = Vec::new();
    if node {
        last.push(Task::new(
            "prepare/kubelet",
            "enable kubelet.service",
            "systemctl is-enabled kubelet.service 2>/dev/null | grep -qx enabled || echo disabled",
            "systemctl enable kubelet.service",
        ));
    }

    let s = cx.session(host).await?;
    let mut probe = Probe::default();
    let (q_first, q_artifacts) = (probe.tasks(&first), probe.files(&artifacts));
    let (q_then, q_files, q_last) = (
        probe.tasks(&then),
        probe.files(&host_files),
        probe.tasks(&last),
    );
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
    act_all(cx, &s, host, &last, &answers, &q_last).await?;
    hp.finish(None);
    Ok(warnings)
}

/// The package repositories: Kubernetes' own apt repository for kubeadm and kubelet pinned to the
/// inventory's version, containerd and etcd from the distribution. Debian and Ubuntu only.
fn online_install(cx: &Ctx, h: &PlannedHost) -> Result<Task, ApplyError> {
    let host = h.name.as_str();
    let v = cx.plan.inventory.cluster.kubernetes_version;
    let os = cx.facts(host).map(|f| f.os_id.clone()).unwrap_or_default();
    if !matches!(os.as_str(), "debian" | "ubuntu") {
        return Err(ApplyError::Step {
            host: host.into(),
            step: "prepare/artifacts".into(),
            message: format!(
                "online installation supports Debian and Ubuntu; {os} needs an offline bundle ([artifacts] bundle = \"DIR\")"
            ),
        });
    }
    let want = format!("{}.{}.{}", v.major, v.minor, v.patch);
    let mut pkgs = Vec::new();
    if h.has(Role::ControlPlane) || h.has(Role::Worker) {
        pkgs.extend(["kubelet", "kubeadm", "containerd"]);
    }
    // The CNI phase applies its manifest with kubectl on the first control plane; any control
    // plane may become the one an operator uses.
    if h.has(Role::ControlPlane) {
        pkgs.push("kubectl");
    }
    if h.has(Role::Etcd) {
        pkgs.push("etcd-server");
    }
    let repo = format!(
        "https://pkgs.k8s.io/core:/stable:/v{}.{}/deb/",
        v.major, v.minor
    );
    let probe = format!(
        "dpkg-query -W -f='${{Version}}' kubeadm 2>/dev/null | grep -q '^{want}-' || echo install; for p in {}; do dpkg-query -W $p >/dev/null 2>&1 || echo $p; done",
        pkgs.join(" ")
    );
    let action = format!(
        "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq curl gpg ca-certificates; \
         install -d -m 0755 /etc/apt/keyrings; curl -fsSL {repo}Release.key | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes.gpg; \
         echo 'deb [signed-by=/etc/apt/keyrings/kubernetes.gpg] {repo} /' > /etc/apt/sources.list.d/kubernetes.list; apt-get update -qq; \
         apt-get install -y -qq --allow-downgrades {}; apt-mark hold {} 2>/dev/null || true; \
         ln -sf /usr/bin/etcd /usr/local/bin/etcd 2>/dev/null || true; ln -sf /usr/bin/etcdctl /usr/local/bin/etcdctl 2>/dev/null || true",
        pkgs.iter()
            .map(|p| match *p {
                "kubelet" | "kubeadm" | "kubectl" => format!("{p}={want}-*"),
                p => p.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        pkgs.iter()
            .filter(|p| p.starts_with("kube"))
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(Task::new(
        "prepare/artifacts",
        format!(
            "install {} {want} from the package repositories",
            pkgs.join(", ")
        ),
        probe,
        action,
    ))
}
