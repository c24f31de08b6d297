//! Kubelet serving certificates. With `serverTLSBootstrap: true` every kubelet asks for its
//! serving certificate through a CSR (signer `kubernetes.io/kubelet-serving`) that nothing in
//! Kubernetes approves; until one is, `kubectl logs/exec/port-forward` to that node fail and
//! metrics-server cannot scrape it. kbs approves each node's own request, one by one, only after
//! checking that its requester is `system:node:<name>` and that the certificate would name that
//! node and nothing else: its name and its address. Never in bulk.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::context::api::{Api, admin_client};
use crate::context::{Ctx, HEALTH_WAIT, RunError, retry};
use crate::inventory::{HostName, Role};
use crate::plan::PlannedHost;

const SIGNER: &str = "kubernetes.io/kubelet-serving";
const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
/// Where the kubelet keeps the serving certificate it was issued.
pub(super) const SERVING_CERT: &str = "/var/lib/kubelet/pki/kubelet-server-current.pem";

pub(crate) async fn run(cx: &Ctx) -> Result<(), RunError> {
    if !cx.plan.inventory.security.kubelet_serving_certificates {
        return Ok(());
    }
    let nodes: Vec<&PlannedHost> = cx
        .hosts()
        .filter(|h| h.has(Role::ControlPlane) || h.has(Role::Worker))
        .collect();
    // Which kubelets still lack their serving certificate: asked on the hosts, where it lives
    // (issued CSRs are garbage-collected from the API after an hour). The facts gathered at the
    // start of the run answer for the kubelets that had it then.
    let unknown = nodes
        .iter()
        .filter(|h| !cx.facts(&h.name).is_some_and(|f| f.kubelet_serving));
    let missing = cx
        .each_host(unknown.map(|h| h.name.as_str()), |host| async move {
            let out = cx
                .sh(
                    host,
                    "kubelet/serving",
                    &format!("[ -s {SERVING_CERT} ] || echo missing"),
                    Duration::from_secs(30),
                )
                .await?;
            Ok((host, !out.trim().is_empty()))
        })
        .await?;
    let missing: Vec<&PlannedHost> = nodes
        .into_iter()
        .filter(|h| missing.iter().any(|(m, yes)| *m == h.name && *yes))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let api = if cx.opts.dry_run {
        None
    } else {
        Some(admin_client(&cx.state).map_err(RunError::Verify)?)
    };
    let api = api.as_ref();
    cx.each_host(missing.iter().map(|h| h.name.as_str()), |host| async move {
        let what = format!(
            "approve {host}'s kubelet-serving certificate request (requester and names checked)"
        );
        cx.change(host, "kubelet/serving-csr", what, async {
            if let (Some(api), Some(h)) = (api, cx.plan.host(host)) {
                approve(api, h).await?;
                issued(cx, host).await?;
            }
            Ok(())
        })
        .await
    })
    .await?;
    Ok(())
}

/// Waits until the kubelet has written the certificate of its approved request.
async fn issued(cx: &Ctx, host: &str) -> Result<(), RunError> {
    let probe = format!("[ -s {SERVING_CERT} ] || echo missing");
    retry::until(HEALTH_WAIT, Duration::from_secs(1), || async {
        match cx
            .sh(host, "kubelet/serving", &probe, Duration::from_secs(30))
            .await
        {
            Ok(out) if out.trim().is_empty() => Ok(()),
            Ok(_) => Err(format!("the kubelet has not written {SERVING_CERT} yet")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(|last| RunError::Step {
        host: host.into(),
        step: "kubelet/serving".into(),
        message: format!("approved, but after {} s: {last}", HEALTH_WAIT.as_secs()),
    })
}

/// Waits for `h`'s pending kubelet-serving CSR and approves it once it passes `check`.
async fn approve(api: &Api, h: &PlannedHost) -> Result<(), RunError> {
    let fail = |message: String| RunError::Step {
        host: h.name.clone(),
        step: "kubelet/serving-csr".into(),
        message,
    };
    let user = format!("system:node:{}", h.name);
    let found = retry::until(HEALTH_WAIT, Duration::from_secs(2), || async {
        let csrs: Vec<CertificateSigningRequest> = api.list(CSRS).await?;
        let mine: Vec<CertificateSigningRequest> = csrs
            .into_iter()
            .filter(|c| {
                c.spec.signer_name == SIGNER
                    && c.spec.username.as_deref() == Some(user.as_str())
                    && c.status.as_ref().is_none_or(|s| s.conditions.is_none())
            })
            .collect();
        mine.into_iter()
            .max_by_key(|c| c.metadata.creation_timestamp.clone())
            .ok_or_else(|| format!("no pending {SIGNER} request from {user} yet"))
    })
    .await
    .map_err(|last| {
        fail(format!(
            "{last} after {} s: is the kubelet running with serverTLSBootstrap?",
            HEALTH_WAIT.as_secs()
        ))
    })?;
    let name = found.metadata.name.clone().unwrap_or_default();
    check(&found, h).map_err(|why| {
        fail(format!(
            "{SIGNER} request {name} from {user} is not approved: {why}; deny it with `kubectl certificate deny {name}` and find out who made it"
        ))
    })?;
    let mut approved = found;
    approved
        .status
        .get_or_insert_with(Default::default)
        .conditions = Some(vec![CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("KbsApproved".into()),
        message: Some(format!(
            "kbs: requested by {user} for its own name and address only"
        )),
        ..Default::default()
    }]);
    api.put(&format!("{CSRS}/{name}/approval"), &approved)
        .await
        .map_err(fail)
}

/// The request must come from the node itself, ask for a serving certificate, and name only the
/// node: its name (DNS) and its inventory address (IP).
fn check(csr: &CertificateSigningRequest, h: &PlannedHost) -> Result<(), String> {
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if !usages.iter().any(|u| u == "server auth")
        || usages.iter().any(|u| {
            !matches!(
                u.as_str(),
                "server auth" | "digital signature" | "key encipherment"
            )
        })
    {
        return Err(format!(
            "its usages are {usages:?}, not a server certificate's"
        ));
    }
    let pem = x509_parser::pem::parse_x509_pem(&csr.spec.request.0)
        .map_err(|e| format!("spec.request is not PEM: {e}"))?
        .1;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| format!("spec.request is not a CSR: {e}"))?;
    let subject = &req.certification_request_info.subject;
    let cn: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|c| c.as_str().ok())
        .collect();
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    let want_cn = format!("system:node:{}", h.name);
    if cn != [want_cn.as_str()] || orgs != ["system:nodes"] {
        return Err(format!(
            "its subject is {subject}, not CN={want_cn}, O=system:nodes"
        ));
    }
    let mut names = Vec::new();
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                names.push(match n {
                    GeneralName::DNSName(d) => HostName::Dns((*d).to_string()),
                    GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                        Ok(v4) => HostName::Ip(v4.into()),
                        Err(_) => match <[u8; 16]>::try_from(*b) {
                            Ok(v6) => HostName::Ip(v6.into()),
                            Err(_) => return Err("it holds a malformed IP address".into()),
                        },
                    },
                    other => return Err(format!("it asks for the name {other:?}")),
                });
            }
        }
    }
    let allowed = [HostName::Dns(h.name.clone()), HostName::Ip(h.address)];
    if let Some(foreign) = names.iter().find(|n| !allowed.contains(n)) {
        return Err(format!(
            "it asks for {foreign}, which is not {}'s name or address",
            h.name
        ));
    }
    if !names.contains(&HostName::Ip(h.address)) {
        return Err(format!("it does not name the node's address {}", h.address));
    }
    Ok(())
}
