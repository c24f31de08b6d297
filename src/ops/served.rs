//! What each host actually serves: a TLS handshake with every etcd member's client port and every
//! API server, keeping the certificate the server presents (without trusting it: an expired
//! certificate is exactly what this must show), compared with the state dir's copy.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use time::OffsetDateTime;

use crate::inventory::Role;
use crate::pki::CertInfo;
use crate::plan::ClusterPlan;
use crate::state::StateDir;

/// The certificate one endpoint serves.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub host: String,
    /// `etcd <member>` or `kube-apiserver`.
    pub component: String,
    pub endpoint: String,
    pub subject: Option<String>,
    pub serial: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    /// Same serial as the state dir's certificate for this endpoint.
    pub matches_state: Option<bool>,
    /// Why the endpoint could not be read, or what is wrong with its certificate.
    pub problem: Option<String>,
}

impl Served {
    pub fn ok(&self) -> bool {
        self.problem.is_none() && self.matches_state != Some(false)
    }
}

#[derive(Debug)]
struct Capture {
    cert: Mutex<Option<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.cert.lock() {
            *c = Some(end_entity.to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate `addr` presents in a TLS handshake (no client certificate is offered; a
/// server that requires one has sent its own certificate by then).
pub async fn served_cert(addr: SocketAddr) -> Result<CertInfo, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let capture = Arc::new(Capture {
        cert: Mutex::new(None),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let name = ServerName::IpAddress(addr.ip().into());
        // The outcome does not matter once the server's certificate was seen.
        let _ = connector.connect(name, tcp).await;
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .map_err(|_| format!("{addr}: no TLS handshake within 5 s"))??;
    let der = capture
        .cert
        .lock()
        .ok()
        .and_then(|mut c| c.take())
        .ok_or_else(|| format!("{addr}: the server presented no certificate"))?;
    CertInfo::from_der(&der)
}

/// Every etcd member and API server of the plan, probed concurrently, each certificate judged
/// against the state dir's copy and against the names the inventory now implies (a new address,
/// `pki.extra_sans`, a moved endpoint): SAN drift.
pub async fn probe_all(plan: &ClusterPlan, state: &StateDir) -> Vec<Served> {
    let pki = state.pki_dir();
    let wanted = crate::pki::spec::leaf_specs(plan);
    let (wanted, pki_dir) = (&wanted, &pki);
    let mut targets: Vec<(String, String, SocketAddr, std::path::PathBuf)> = Vec::new();
    for m in &plan.etcd {
        targets.push((
            m.host.clone(),
            format!("etcd {}", m.name),
            SocketAddr::new(m.address, m.client_port),
            pki.join(format!(
                "{}.crt",
                crate::pki::spec::etcd_server_base(&m.host)
            )),
        ));
    }
    for h in plan.hosts.iter().filter(|h| h.has(Role::ControlPlane)) {
        targets.push((
            h.name.clone(),
            "kube-apiserver".into(),
            SocketAddr::new(h.address, plan.front.apiserver_port),
            pki.join(format!("{}.crt", crate::pki::spec::apiserver_base(&h.name))),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let probes = targets
        .into_iter()
        .map(|(host, component, addr, local)| async move {
            let endpoint = endpoint(addr.ip(), addr.port());
            let mut s = Served {
                host,
                component,
                endpoint,
                subject: None,
                serial: None,
                not_after: None,
                days_left: None,
                matches_state: None,
                problem: None,
            };
            match served_cert(addr).await {
                Err(e) => s.problem = Some(e),
                Ok(c) => {
                    let days = (c.not_after - now).whole_days();
                    if c.not_after <= now {
                        s.problem = Some("expired".into());
                    } else if c.not_before > now {
                        s.problem = Some("not valid yet".into());
                    }
                    s.matches_state = std::fs::read(&local)
                        .ok()
                        .and_then(|pem| CertInfo::from_pem(&pem).ok())
                        .map(|l| l.serial == c.serial);
                    let base = local
                        .strip_prefix(pki_dir)
                        .ok()
                        .map(|p| p.with_extension("").to_string_lossy().into_owned());
                    let missing: Vec<String> = wanted
                        .iter()
                        .find(|w| Some(&w.base) == base.as_ref())
                        .map(|w| {
                            w.sans
                                .iter()
                                .filter(|n| !c.sans.contains(n))
                                .map(ToString::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    if s.problem.is_none() && !missing.is_empty() {
                        s.problem = Some(format!(
                            "SAN drift: lacks {} that the inventory now implies; run kbs apply (it re-issues and rolls it out)",
                            missing.join(", ")
                        ));
                    }
                    s.subject = Some(c.subject);
                    s.serial = Some(c.serial);
                    s.not_after = c
                        .not_after
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok();
                    s.days_left = Some(days);
                }
            }
            s
        });
    futures::future::join_all(probes).await
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    format!("https://{}:{port}", crate::inventory::HostName::Ip(ip))
}
