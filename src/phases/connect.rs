//! Connect to every host in scope (host keys verified, sudo checked) and gather its facts in one
//! round trip, plus the fsync latency where etcd's data will live.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;

use crate::artifacts::Bundle;
use crate::context::{Ctx, RunError};
use crate::facts::{FSYNC_SCRIPT, Facts, GATHER_SCRIPT, fsync_p99_ms, now_ns};
use crate::inventory::KubeVersion;
use crate::ssh::{Exec, quote};

/// Facts of every host in scope, gathered in parallel; any host that fails stops the run here,
/// before anything changed, with every failure listed. With the run's `bundle`, a host whose
/// kubeadm kbs installed from it is not asked to run kubeadm for its version.
pub(crate) async fn gather(
    cx: &Ctx,
    bundle: Option<&Bundle>,
) -> Result<BTreeMap<String, Facts>, RunError> {
    let kubeadm = bundle
        .and_then(|b| {
            b.files
                .iter()
                .find(|f| f.install.file_name().is_some_and(|n| n == "kubeadm"))
        })
        .map(|f| {
            (
                f.sha256.as_str(),
                cx.plan.inventory.cluster.kubernetes_version,
            )
        });
    let hosts: Vec<String> = cx.hosts().map(|h| h.name.clone()).collect();
    let results: Vec<(String, Result<Facts, RunError>)> = futures::stream::iter(hosts)
        .map(|h| async move {
            let r = gather_one(cx, &h, kubeadm).await;
            (h, r)
        })
        .buffer_unordered(cx.opts.concurrency)
        .collect()
        .await;
    let mut facts = BTreeMap::new();
    let mut errors = Vec::new();
    for (host, r) in results {
        match r {
            Ok(f) => {
                facts.insert(host, f);
            }
            Err(e) => errors.push(format!("  {host}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(facts)
    } else {
        errors.sort();
        Err(RunError::Unreachable {
            count: errors.len(),
            details: errors.join("\n"),
        })
    }
}

async fn gather_one(
    cx: &Ctx,
    host: &str,
    kubeadm: Option<(&str, KubeVersion)>,
) -> Result<Facts, RunError> {
    let hp = cx.progress.host(host, "connect");
    let result = async {
        let s = cx.session(host).await?;
        hp.step("facts");
        let dirs: Vec<String> = cx
            .plan
            .etcd
            .iter()
            .filter(|m| m.host == host)
            .map(|m| quote(&m.data_dir))
            .collect();
        let (sum, version) = kubeadm.map_or((String::new(), String::new()), |(s, v)| {
            (s.to_string(), v.to_string())
        });
        let script = format!(
            "kubelet_conf={}; serving_cert={}; sums={}; kubeadm_sum={}; kubeadm_is={}; cas={}; set -- {}\n{GATHER_SCRIPT}",
            quote(super::kubeadm::KUBELET_CONF),
            quote(super::serving::SERVING_CERT),
            quote(super::files::SUMS),
            quote(&sum),
            quote(&version),
            quote(
                crate::pki::identity_cas()
                    .map(|(p, _)| p.display().to_string())
                    .join(" ")
            ),
            dirs.join(" ")
        );
        let before = now_ns();
        // sudo -n here proves passwordless sudo before any change is attempted.
        let out = s.run(Exec::new(&script).sudo(true)).await?;
        let mid = before + (now_ns() - before) / 2;
        let mut facts = Facts::parse(&out.stdout_lossy(), mid).map_err(|e| RunError::Step {
            host: host.into(),
            step: "facts".into(),
            message: e.to_string(),
        })?;
        hp.step("fsync probe");
        for m in cx.plan.etcd.iter().filter(|m| m.host == host) {
            let dir = m.data_dir.display().to_string();
            // Measuring next to a running member would only slow it down.
            if facts.etcd_members.contains(&dir) {
                continue;
            }
            let q = quote(&dir);
            let out = s
                .run(
                    Exec::new(&format!("sh -s {q}"))
                        .sudo(true)
                        .stdin(FSYNC_SCRIPT.as_bytes())
                        .timeout(Duration::from_secs(120)),
                )
                .await?;
            if let Some(p99) = fsync_p99_ms(&out.stdout_lossy()) {
                facts.fsync_p99_ms.insert(dir, p99);
            }
        }
        Ok(facts)
    }
    .await;
    hp.finish(result.as_ref().err().map(ToString::to_string).as_deref());
    result
}
