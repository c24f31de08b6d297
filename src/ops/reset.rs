//! `kbs reset` and the per-host teardown `remove-node` shares: `kubeadm reset -f`, the kubelet,
//! every kbs-etcd member, haproxy and keepalived stopped and disabled, and every file kbs placed
//! removed, containerd stopped. Installed software (bundle binaries, imported images), the
//! scheduled etcd snapshots on the hosts and the local state dir stay, so `kbs apply` can build
//! the cluster again with the same CAs, and `kbs restore` can bring its data back.

use std::fmt::Write;

use crate::context::{Ctx, RunError};
use crate::inventory::HookPoint;
use crate::phases::hooks;
use crate::ssh::Exec;

/// Files and directories kbs writes on a host (see render::render_host_files and
/// pki::host_files); a unit test checks that every rendered path is covered.
pub(crate) const KBS_PATHS: &[&str] = &[
    "/etc/kubernetes",
    "/etc/kbs",
    "/var/lib/kubelet",
    crate::render::TEXTFILE_DIR,
    "/etc/systemd/system/kbs-etcd@.service",
    "/etc/systemd/system/kbs-etcd-backup.service",
    "/etc/systemd/system/kbs-etcd-backup.timer",
    "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "/etc/haproxy/haproxy.cfg",
    "/etc/keepalived/keepalived.conf",
    "/etc/keepalived/check_apiserver.sh",
    "/etc/modules-load.d/kbs.conf",
    "/etc/sysctl.d/90-kbs.conf",
    "/etc/containerd/config.toml",
    "/etc/containerd/certs.d",
    "/etc/systemd/system/containerd.service",
    "/etc/systemd/system/kubelet.service",
    "/etc/crictl.yaml",
];

/// The teardown script for `host`: idempotent, it succeeds on a host that has nothing left.
pub(crate) fn script(cx: &Ctx, host: &str) -> String {
    let mut s = String::from(
        "set -u\n\
         if command -v kubeadm >/dev/null 2>&1 && [ -d /etc/kubernetes ]; then\n\
         \x20 kubeadm reset -f >/tmp/kbs-reset.log 2>&1 || { echo 'kubeadm reset -f failed:' >&2; tail -n 5 /tmp/kbs-reset.log >&2; }\n\
         fi\n\
         systemctl disable --now kubelet.service >/dev/null 2>&1 || true\n\
         systemctl disable --now kube-apiserver-standin.service >/dev/null 2>&1 || true\n\
         systemctl stop 'kbs-etcd@*' >/dev/null 2>&1 || true\n\
         rm -f /etc/systemd/system/*.wants/kbs-etcd@*.service\n\
         systemctl disable --now kbs-etcd-backup.timer >/dev/null 2>&1 || true\n\
         for u in haproxy keepalived containerd; do systemctl disable --now $u.service >/dev/null 2>&1 || true; done\n",
    );
    // Only etcd's own data (`member/`) goes: the directory may be shared or a mount point.
    for m in cx.plan.etcd.iter().filter(|m| m.host == host) {
        let dir = m.data_dir.join("member");
        let _ = writeln!(s, "rm -rf {}", crate::ssh::quote(&dir));
    }
    let _ = writeln!(s, "rm -rf {}", KBS_PATHS.join(" "));
    s.push_str(
        "systemctl daemon-reload\n\
         systemctl reset-failed >/dev/null 2>&1 || true\n\
         if systemctl list-units --plain --no-legend 'kbs-etcd@*' | grep -q running; then echo 'an etcd member still runs' >&2; exit 1; fi\n",
    );
    s
}

/// Tears `host` down.
pub(crate) async fn reset_host(cx: &Ctx, host: &str) -> Result<(), RunError> {
    let s = cx.session(host).await?;
    let hp = cx.progress.host(host, "reset");
    let script = script(cx, host);
    let r = cx
        .change(
            host,
            "reset",
            "kubeadm reset -f; stop kubelet, etcd, haproxy, keepalived; remove kbs's files",
            async {
                let out = s
                    .exec(
                        Exec::new("sh -s")
                            .stdin(script.as_bytes())
                            .sudo(true)
                            .timeout(std::time::Duration::from_secs(300)),
                    )
                    .await?;
                if out.success() {
                    Ok(())
                } else {
                    Err(Ctx::step_error(host, "reset", &out))
                }
            },
        )
        .await;
    hp.finish(r.as_ref().err().map(ToString::to_string).as_deref());
    r.map(|_| ())
}

/// What `kbs reset` did.
#[derive(Debug, Default)]
pub struct ResetReport {
    pub reset: Vec<String>,
    /// Hosts that could not be reached (not reset) or whose reset failed, with why.
    pub failed: Vec<(String, String)>,
}

/// Tears down every host of the inventory, in parallel; a host that fails does not stop the
/// others.
pub async fn run(cx: &Ctx) -> Result<ResetReport, RunError> {
    let names: Vec<String> = cx.plan.hosts.iter().map(|h| h.name.clone()).collect();
    let results = cx
        .each_host(names.iter().map(String::as_str), |host| async move {
            if !cx.reachable(host).await {
                return Ok((host.to_string(), Err("unreachable over SSH".to_string())));
            }
            let r = async {
                hooks::run_on(cx, host, HookPoint::BeforeReset).await?;
                reset_host(cx, host).await?;
                hooks::run_on(cx, host, HookPoint::AfterReset).await
            }
            .await
            .map_err(|e| e.to_string());
            Ok((host.to_string(), r))
        })
        .await?;
    let mut report = ResetReport::default();
    for (host, r) in results {
        match r {
            Ok(()) => report.reset.push(host),
            Err(e) => report.failed.push((host, e)),
        }
    }
    report.reset.sort();
    report.failed.sort();
    cx.disconnect_all().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::KBS_PATHS;
    use crate::inventory::Inventory;
    use crate::plan::ClusterPlan;
    use crate::render::{RenderInputs, Templates, render_host_files};

    #[test]
    fn every_file_kbs_renders_or_uploads_is_removed_by_reset() {
        for text in [
            include_str!("../../inventories/external-etcd.toml"),
            include_str!("../../inventories/three-host.toml"),
            include_str!("../../inventories/five-host.toml"),
            include_str!("../../inventories/two-host.toml"),
        ] {
            let plan = ClusterPlan::new(Inventory::parse(Path::new("i.toml"), text).unwrap());
            let files = render_host_files(
                &plan,
                &Templates::builtin().unwrap(),
                &RenderInputs::default(),
            )
            .unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let state = crate::state::StateDir::new(tmp.path());
            let pki = crate::pki::host_files(&plan, &state);
            let paths = files
                .values()
                .flatten()
                .map(|f| f.path.clone())
                .chain(pki.into_iter().flat_map(|h| h.files).map(|f| f.remote));
            for p in paths {
                assert!(
                    KBS_PATHS.iter().any(|k| p.starts_with(k)),
                    "reset leaves {}",
                    p.display()
                );
            }
        }
    }
}
