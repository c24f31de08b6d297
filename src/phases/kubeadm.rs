//! kubeadm: `init` on the first control plane with the rendered config (the certificates are
//! already in place), `join --control-plane` on the others one at a time (kbs copies their
//! certificates, so no upload-certs), and `join` on workers in parallel with a bootstrap token
//! and the CA hash. A node counts as done once it has /etc/kubernetes/kubelet.conf and the
//! journal does not say its step was cut off; a cut-off step is reset and done again.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngExt;

use super::files::{Desired, Part, pki_files, sync};
use super::files_of;
use crate::context::StepStatus;
use crate::context::api::{anonymous_client, apiserver_url, wait_ready};
use crate::context::{Ctx, RunError};
use crate::inventory::Role;
use crate::plan::PlannedHost;
use crate::render::{CA_CERT_HASH_PLACEHOLDER, JOIN_TOKEN_PLACEHOLDER, JoinSecrets, RenderedFile};
use crate::ssh::Exec;

pub(super) const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
const INIT_CONFIG: &str = "/etc/kubernetes/kubeadm/init.yaml";
const JOIN_CONFIG: &str = "/etc/kubernetes/kubeadm/join.yaml";

fn step_of(host: &PlannedHost, first: bool) -> &'static str {
    match (first, host.has(Role::ControlPlane)) {
        (true, _) => "kubeadm/init",
        (false, true) => "kubeadm/join-control-plane",
        (false, false) => "kubeadm/join",
    }
}

/// Whether `host` has been set up by kubeadm: kubelet.conf exists and the journal does not say
/// the step was cut off.
async fn done(cx: &Ctx, host: &PlannedHost, first: bool) -> Result<bool, RunError> {
    if cx.journal_status(&host.name, step_of(host, first)) == Some(StepStatus::Started) {
        return Ok(false);
    }
    // The facts of this run tell, for the hosts in its scope.
    if let Some(f) = cx.facts(&host.name) {
        return Ok(f.kubeadm_version.is_some());
    }
    let s = cx.session(&host.name).await?;
    Ok(
        s.exec(Exec::new(&format!("test -f {KUBELET_CONF}")).sudo(true))
            .await?
            .success(),
    )
}

/// The nodes kubeadm has yet to set up: the hosts in scope, plus the first control plane (a
/// join needs it initialised), checked all at once.
pub(crate) async fn pending(cx: &Ctx) -> Result<BTreeSet<String>, RunError> {
    let Some(first) = cx.plan.first_control_plane() else {
        return Ok(BTreeSet::new());
    };
    let nodes = cx.plan.hosts.iter().filter(|h| {
        (h.has(Role::ControlPlane) || h.has(Role::Worker))
            && (h.name == first.name || cx.in_scope(&h.name))
    });
    let checked = cx
        .each_host(nodes.map(|h| h.name.as_str()), |host| async move {
            let first = host == first.name;
            match cx.plan.host(host) {
                Some(h) => Ok((host, done(cx, h, first).await?)),
                None => Ok((host, true)),
            }
        })
        .await?;
    Ok(checked
        .into_iter()
        .filter(|(_, done)| !done)
        .map(|(h, _)| h.to_string())
        .collect())
}

/// A running cluster changes version only through `kbs upgrade`, which goes host by host: apply
/// would install the new kubeadm and kubelet everywhere at once. Every node kubeadm has set up
/// must have the inventory's kubeadm.
pub(crate) fn refuse_version_change(cx: &Ctx) -> Result<(), RunError> {
    let want = cx.plan.inventory.cluster.kubernetes_version;
    let nodes = cx
        .hosts()
        .filter(|h| h.has(Role::ControlPlane) || h.has(Role::Worker));
    for h in nodes {
        let reported = cx.facts(&h.name).and_then(|f| f.kubeadm_version.as_deref());
        if let Some(have) = reported.and_then(crate::inventory::KubeVersion::from_reported)
            && have != want
        {
            return Err(RunError::VersionChange {
                host: h.name.clone(),
                have: have.to_string(),
                want: want.to_string(),
                inventory: cx.plan.inventory.path.clone(),
            });
        }
    }
    Ok(())
}

fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut pick = |n: usize| {
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect::<String>()
    };
    format!("{}.{}", pick(6), pick(16))
}

/// The bootstrap token and CA hash joins use. Before init, a new random token that init.yaml
/// registers; after init, a fresh one-hour token from `kubeadm token create` on the first control
/// plane, only when some node still has to join. Never written to the state dir or a log.
pub(crate) async fn join_secrets(
    cx: &Ctx,
    pending: &BTreeSet<String>,
) -> Result<JoinSecrets, RunError> {
    let placeholder = JoinSecrets {
        token: JOIN_TOKEN_PLACEHOLDER.into(),
        ca_cert_hashes: vec![CA_CERT_HASH_PLACEHOLDER.into()],
    };
    if cx.opts.dry_run {
        return Ok(placeholder);
    }
    let ca = std::fs::read(crate::pki::ca_cert_path(&cx.state)).map_err(|e| RunError::Step {
        host: "local".into(),
        step: "pki".into(),
        message: format!("cannot read the cluster CA: {e}"),
    })?;
    let hash = crate::pki::discovery_hash(&ca).map_err(|message| RunError::Step {
        host: "local".into(),
        step: "pki".into(),
        message,
    })?;
    let Some(first) = cx.plan.first_control_plane() else {
        return Ok(placeholder);
    };
    if pending.contains(&first.name) {
        return Ok(JoinSecrets {
            token: random_token(),
            ca_cert_hashes: vec![hash],
        });
    }
    if pending.is_empty() {
        return Ok(placeholder);
    }
    let s = cx.session(&first.name).await?;
    let out = s
        .run(
            Exec::new("kubeadm token create --ttl 1h --kubeconfig /etc/kubernetes/admin.conf")
                .sudo(true),
        )
        .await?;
    let token = out
        .stdout_lossy()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(JoinSecrets {
        token,
        ca_cert_hashes: vec![hash],
    })
}

/// Restarts the API server on a control plane so it reads its new certificates. The stand-in is a
/// systemd unit; kubeadm's components are static pods, which the kubelet stops when their
/// manifest leaves /etc/kubernetes/manifests and starts again when it comes back. A manifest left
/// parked by a cut-off run is put back first.
const RESTART_APISERVER: &str = r#"set -eu
m=/etc/kubernetes/manifests; p=/etc/kubernetes/kbs-restart
for f in "$p"/*.yaml; do [ -e "$f" ] && mv "$f" "$m/"; done
if systemctl cat kube-apiserver-standin.service >/dev/null 2>&1; then
  systemctl restart kube-apiserver-standin.service
  echo kube-apiserver-standin.service restarted
  exit 0
fi
install -d -m 0700 "$p"
moved=""
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  if [ -f "$m/$c.yaml" ]; then mv "$m/$c.yaml" "$p/"; moved="$moved $c"; fi
done
if [ -z "$moved" ]; then echo "no API server here: neither kube-apiserver-standin.service nor a static pod manifest" >&2; exit 1; fi
i=0
while [ $i -lt 60 ]; do
  i=$((i + 1))
  if command -v crictl >/dev/null 2>&1; then
    [ -z "$(crictl ps -q --name '^kube-apiserver$' 2>/dev/null)" ] && break
  elif [ $i -ge 20 ]; then break; fi
  sleep 1
done
for c in $moved; do mv "$p/$c.yaml" "$m/"; done
echo "static pods restarted:$moved"
"#;

/// Restarts the control-plane components on `host` (new certificates or kubeconfigs) as one
/// recorded change, then waits for its API server's `/readyz` (anonymous: it answers whatever the
/// client certificates' state).
pub(crate) async fn restart_control_plane(
    cx: &Ctx,
    anonymous: &reqwest::Client,
    host: &str,
    step: &str,
) -> Result<(), RunError> {
    let s = cx.session(host).await?;
    cx.root_change(
        &s,
        host,
        step,
        "restart the API server, controller-manager and scheduler (new certificates)",
        RESTART_APISERVER,
    )
    .await?;
    if !cx.opts.dry_run
        && let Some(url) = apiserver_url(cx, host)
    {
        wait_ready(cx, anonymous, host, &url).await?;
    }
    Ok(())
}

/// Every control plane's certificates and kubeconfigs, then `kubeadm init` on the first control
/// plane when it is pending. A running control plane whose files changed (certificates renewed
/// within `pki.renew_before_days`, or new SANs) restarts its components, one host at a time,
/// each API server ready before the next: the API stays up.
pub(crate) async fn init(
    cx: &Ctx,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
    pending: &BTreeSet<String>,
) -> Result<(), RunError> {
    let Some(first) = cx.plan.first_control_plane().cloned() else {
        return Ok(());
    };
    // Every control plane's certificates and kubeconfigs, before init or any join needs them.
    let changed = cx
        .each_host(
            cx.hosts()
                .filter(|h| h.has(Role::ControlPlane))
                .map(|h| h.name.as_str()),
            |host| async move {
                let files = pki_files(cx, host, |p| p.starts_with("/etc/kubernetes"))?;
                let written = sync(cx, host, "pki/files", &files).await?;
                Ok((host, !written.is_empty()))
            },
        )
        .await?;
    let running: Vec<&str> = changed
        .into_iter()
        .filter(|(host, changed)| *changed && !pending.contains(*host))
        .map(|(host, _)| host)
        .collect();
    if !running.is_empty() {
        let anonymous = anonymous_client(cx)?;
        for host in running {
            restart_control_plane(cx, &anonymous, host, "pki/restart").await?;
        }
    }
    if cx.in_scope(&first.name) && pending.contains(&first.name) {
        node(cx, &first, true, rendered).await?;
    }
    Ok(())
}

/// `kubeadm join` on every pending host: control planes one at a time (each adds an API
/// server the next one may use), then the workers together.
pub(crate) async fn join(
    cx: &Ctx,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
    pending: &BTreeSet<String>,
) -> Result<(), RunError> {
    let Some(first) = cx.plan.first_control_plane().cloned() else {
        return Ok(());
    };
    for h in cx
        .hosts()
        .filter(|h| h.has(Role::ControlPlane) && h.name != first.name && pending.contains(&h.name))
    {
        node(cx, h, false, rendered).await?;
    }
    let workers = cx
        .hosts()
        .filter(|h| h.has(Role::Worker) && !h.has(Role::ControlPlane) && pending.contains(&h.name));
    cx.each_host(workers.map(|h| h.name.as_str()), |host| async move {
        match cx.plan.host(host) {
            Some(h) => node(cx, h, false, rendered).await,
            None => Ok(()),
        }
    })
    .await?;
    Ok(())
}

/// Runs kubeadm on one host: resets what a cut-off earlier attempt left, uploads the config
/// (0600, it holds the token), runs it, removes the config, and starts the kubelet.
async fn node(
    cx: &Ctx,
    h: &PlannedHost,
    first: bool,
    rendered: &BTreeMap<String, Vec<RenderedFile>>,
) -> Result<(), RunError> {
    let host = h.name.as_str();
    let step = step_of(h, first);
    let hp = cx.progress.host(host, step);
    let (config, verb) = if first {
        (INIT_CONFIG, "init")
    } else {
        (JOIN_CONFIG, "join")
    };
    let Some(file) = files_of(rendered, host, Part::Kubeadm)
        .into_iter()
        .find(|f| f.path.to_string_lossy() == config)
    else {
        return Err(RunError::Step {
            host: host.into(),
            step: step.into(),
            message: format!("the renderer made no {config}"),
        });
    };
    if file.has_placeholder() && !cx.opts.dry_run {
        return Err(RunError::Step {
            host: host.into(),
            step: step.into(),
            message: format!("{config} still holds a placeholder"),
        });
    }
    let s = cx.session(host).await?;
    if cx.journal_status(host, step) == Some(StepStatus::Started) {
        cx.change(
            host,
            &format!("{step}/reset"),
            "reset what the cut-off kubeadm run left (kubeadm reset -f)",
            async {
                s.exec(Exec::new("kubeadm reset -f").sudo(true)).await?;
                Ok(())
            },
        )
        .await?;
        // reset empties /etc/kubernetes/pki: put the certificates back.
        if h.has(Role::ControlPlane) {
            let files = pki_files(cx, host, |p| p.starts_with("/etc/kubernetes"))?;
            sync(cx, host, "pki/files", &files).await?;
        }
    }
    sync(cx, host, &format!("{step}/config"), &[Desired::from(file)]).await?;
    cx.change(
        host,
        step,
        format!(
            "kubeadm {verb}{}",
            if h.has(Role::ControlPlane) && !first {
                " --control-plane"
            } else {
                ""
            }
        ),
        async {
            let show = |_: crate::ssh::Stream, line: &str| hp.line(line);
            let kubeadm =
                format!("kubeadm {verb} --config {config}; rc=$?; rm -f {config}; exit $rc");
            let cmd = Exec::new(&kubeadm)
                .on_line(&show)
                .timeout(std::time::Duration::from_secs(600));
            Ctx::root(&s, host, step, cmd).await?;
            let kubelet = "systemctl is-active --quiet kubelet || systemctl restart kubelet";
            Ctx::root(&s, host, "kubelet/start", Exec::new(kubelet)).await
        },
    )
    .await?;
    hp.finish(None);
    Ok(())
}
