//! Keys and certificates: generating, signing, loading and reading them back.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::PkiError;
use super::spec::{CaKind, Usage};
use crate::inventory::{HostName, KeyAlgorithm};

/// kubeadm's CertificateBackdate: tolerate clocks a little behind ours.
const BACKDATE: Duration = Duration::minutes(5);

/// Who a certificate is for.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub common_name: &'a str,
    pub organization: Option<&'a str>,
    pub sans: &'a [HostName],
    pub usage: Usage,
}

pub fn generate_key(alg: KeyAlgorithm) -> Result<KeyPair, rcgen::Error> {
    match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
    }
}

/// Loads a PEM private key: PKCS#8, PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`, possibly
/// after an `EC PARAMETERS` block as `openssl ecparam -genkey` writes). RSA and ECDSA only, as
/// kubeadm. The caller keeps the file's bytes: re-serialising a PKCS#1/SEC1 key would mislabel it.
pub fn parse_key(path: &Path, pem: &[u8]) -> Result<KeyPair, PkiError> {
    let bad = |reason: String| PkiError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    let mut found = None;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| bad(format!("not valid PEM ({e})")))?;
        match block.label.as_str() {
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                found = Some(block);
                break;
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(bad("the key is encrypted; kbs needs it unencrypted".into()));
            }
            _ => {}
        }
    }
    let block = found
        .ok_or_else(|| bad("no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block".into()))?;
    let key = KeyPair::try_from(block.contents.as_slice()).map_err(|e| bad(e.to_string()))?;
    if key.algorithm() == &PKCS_ED25519 {
        return Err(bad(
            "Ed25519 keys are not accepted by kubeadm; use RSA or ECDSA".into(),
        ));
    }
    Ok(key)
}

/// Random serial in [1, 2^63), as Go's crypto/x509 users (kubeadm) pick them.
fn random_serial() -> SerialNumber {
    let n = loop {
        let n = rand::random::<u64>() >> 1;
        if n != 0 {
            break n;
        }
    };
    SerialNumber::from_slice(&n.to_be_bytes())
}

fn base_params(
    common_name: &str,
    organization: Option<&str>,
    now: OffsetDateTime,
    days: u32,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    // rcgen's defaults (CN "rcgen self signed cert", 1975..4096, serial from the key) are never wanted.
    p.distinguished_name = DistinguishedName::new();
    if let Some(o) = organization {
        p.distinguished_name.push(DnType::OrganizationName, o);
    }
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(i64::from(days));
    p.serial_number = Some(random_serial());
    p
}

/// A self-signed CA like kubeadm's NewSelfSignedCACert (including the DNS SAN equal to the CN).
pub fn self_signed_ca(
    kind: CaKind,
    key: &KeyPair,
    now: OffsetDateTime,
    days: u32,
) -> Result<Certificate, rcgen::Error> {
    let cn = kind.common_name();
    let mut p = base_params(cn, None, now, days);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    p.subject_alt_names = vec![SanType::DnsName(cn.try_into()?)];
    p.self_signed(key)
}

pub fn sign_leaf(
    id: &Identity<'_>,
    key: &KeyPair,
    issuer: &Issuer<'_, &KeyPair>,
    now: OffsetDateTime,
    days: u32,
) -> Result<Certificate, rcgen::Error> {
    let mut p = base_params(id.common_name, id.organization, now, days);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = match id.usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    p.use_authority_key_identifier_extension = true;
    p.subject_alt_names = id
        .sans
        .iter()
        .map(|s| match s {
            HostName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            HostName::Dns(d) => Ok(SanType::DnsName(d.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    p.signed_by(key, issuer)
}

/// An owned summary of a parsed certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub der: Vec<u8>,
    /// The serial number, lowercase hex.
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub sans: Vec<HostName>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    pub server_auth: bool,
    pub client_auth: bool,
}

impl CertInfo {
    /// Reads the first certificate of a PEM file (kubeadm treats later blocks as intermediates).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|e| format!("not a PEM certificate ({e})"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "first PEM block is `{}`, not CERTIFICATE",
                block.label
            ));
        }
        Self::from_der(&block.contents)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let x = parse(der)?;
        let attr_strings =
            |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
                it.filter_map(|a| a.as_str().ok().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
        let sans = match x.subject_alternative_name().map_err(|e| e.to_string())? {
            Some(ext) => ext
                .value
                .general_names
                .iter()
                .filter_map(general_name)
                .collect(),
            None => Vec::new(),
        };
        let eku = x.extended_key_usage().map_err(|e| e.to_string())?;
        Ok(Self {
            der: der.to_vec(),
            serial: hex::encode(x.raw_serial()),
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            common_name: attr_strings(&mut x.subject().iter_common_name())
                .into_iter()
                .next(),
            organizations: attr_strings(&mut x.subject().iter_organization()),
            sans,
            not_before: x.validity().not_before.to_datetime(),
            not_after: x.validity().not_after.to_datetime(),
            is_ca: x
                .basic_constraints()
                .map_err(|e| e.to_string())?
                .is_some_and(|b| b.value.ca),
            server_auth: eku.as_ref().is_some_and(|e| e.value.server_auth),
            client_auth: eku.as_ref().is_some_and(|e| e.value.client_auth),
        })
    }

    /// Whether `ca` issued this certificate: issuer name matches byte for byte (what Go's chain
    /// builder looks up) and the signature verifies with the CA's key.
    pub fn signed_by(&self, ca: &CertInfo) -> bool {
        let (Ok(leaf), Ok(ca)) = (parse(&self.der), parse(&ca.der)) else {
            return false;
        };
        leaf.issuer().as_raw() == ca.subject().as_raw()
            && leaf.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// Whether `key` is the private half of this certificate's public key.
    pub fn matches_key(&self, key: &KeyPair) -> bool {
        parse(&self.der)
            .is_ok_and(|x| x.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
    }

    /// The DER SubjectPublicKeyInfo (what kubeadm's discovery hash covers).
    pub fn spki_der(&self) -> Vec<u8> {
        parse(&self.der)
            .map(|x| x.public_key().raw.to_vec())
            .unwrap_or_default()
    }

    /// Why this certificate does not serve `id` signed by `ca` at `now`, or `None` when it does.
    /// Like kubeadm, extra SANs are fine; unlike kubeadm, CN/O and usages are compared too, since
    /// a wrong group only shows up later as an authorisation failure.
    pub fn problem(&self, id: &Identity<'_>, ca: &CertInfo, now: OffsetDateTime) -> Option<String> {
        if !self.signed_by(ca) {
            return Some(format!(
                "not signed by the current {} CA",
                ca.common_name.as_deref().unwrap_or("?")
            ));
        }
        if now >= self.not_after {
            return Some("expired".into());
        }
        if self.common_name.as_deref() != Some(id.common_name)
            || self.organizations
                != id
                    .organization
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
        {
            return Some(format!("subject is `{}`", self.subject));
        }
        let (server, client) = match id.usage {
            Usage::Server => (true, false),
            Usage::Client => (false, true),
            Usage::ServerAndClient => (true, true),
        };
        if (server && !self.server_auth) || (client && !self.client_auth) {
            return Some("extended key usage differs".into());
        }
        let missing: Vec<String> = id
            .sans
            .iter()
            .filter(|s| !self.sans.contains(s))
            .map(san_string)
            .collect();
        if !missing.is_empty() {
            return Some(format!("SANs lack {}", missing.join(", ")));
        }
        None
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(der)
        .map(|(_, x)| x)
        .map_err(|e| format!("not an X.509 certificate ({e})"))
}

fn general_name(g: &GeneralName<'_>) -> Option<HostName> {
    match g {
        GeneralName::DNSName(d) => Some(HostName::Dns((*d).to_owned())),
        GeneralName::IPAddress(b) => match b.len() {
            4 => Some(HostName::Ip(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?))),
            16 => Some(HostName::Ip(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?))),
            _ => None,
        },
        _ => None,
    }
}

/// `DNS:name` / `IP:addr`, as openssl prints SANs.
pub fn san_string(s: &HostName) -> String {
    match s {
        HostName::Dns(d) => format!("DNS:{d}"),
        HostName::Ip(ip) => format!("IP:{ip}"),
    }
}
