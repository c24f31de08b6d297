//! `kbs certs check`: every certificate in the state directory, its expiry and whether it
//! chains to the CA it belongs to. Works from the files alone, so it needs no inventory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::cert::{CertInfo, san_string};
use super::kubeconfig::Kubeconfig;
use super::spec::CaKind;
use super::{PkiError, spec};
use crate::state::{StateDir, StateError, read_optional};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Ok,
    /// Expires within the warning window.
    Expiring,
    Expired,
    /// Unreadable, or not signed by the CA it belongs to.
    Invalid,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CertStatus {
    /// Relative to the state directory.
    pub path: PathBuf,
    pub subject: String,
    pub sans: Vec<String>,
    pub issuer: String,
    /// RFC 3339.
    pub not_after: String,
    pub days_left: i64,
    pub health: Health,
    /// What is wrong, for `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub certificates: Vec<CertStatus>,
}

impl CheckReport {
    pub fn worst(&self) -> Health {
        self.certificates
            .iter()
            .map(|c| c.health)
            .max()
            .unwrap_or(Health::Ok)
    }

    /// 0 all fine, 1 something expires within the window, 2 something expired or does not chain.
    pub fn exit_code(&self) -> u8 {
        match self.worst() {
            Health::Ok => 0,
            Health::Expiring => 1,
            Health::Expired | Health::Invalid => 2,
        }
    }
}

/// Which CA a file under the pki dir belongs to, from the layout's naming (docs/pki.md).
fn expected_ca(rel: &Path) -> CaKind {
    // Per-host files (`hosts/<host>/...`) follow the same rules as their on-host path.
    let on_host = match rel.strip_prefix("hosts") {
        Ok(rest) => rest.components().skip(1).collect::<PathBuf>(),
        Err(_) => rel.to_path_buf(),
    };
    let s = on_host.to_string_lossy();
    let base = s.strip_suffix(".crt").unwrap_or(&s);
    if base == CaKind::FrontProxy.base() || base == spec::FRONT_PROXY_CLIENT {
        CaKind::FrontProxy
    } else if base.starts_with("etcd/") || base == spec::APISERVER_ETCD_CLIENT {
        CaKind::Etcd
    } else {
        CaKind::Cluster
    }
}

pub fn check(
    state: &StateDir,
    warn_days: u32,
    now: OffsetDateTime,
) -> Result<CheckReport, PkiError> {
    let pki = state.pki_dir();
    let mut crts = Vec::new();
    walk(&pki, "crt", &mut crts)?;
    if crts.is_empty() {
        return Err(PkiError::NothingToCheck { path: pki });
    }
    let mut cas = Vec::new();
    for kind in CaKind::ALL {
        let p = pki.join(format!("{}.crt", kind.base()));
        let ca = read_optional(&p)?.and_then(|pem| CertInfo::from_pem(&pem).ok().map(|c| (c, pem)));
        cas.push((kind, ca));
    }
    let ca_of = |kind: CaKind| {
        cas.iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, c)| c.as_ref())
    };

    let mut out = Vec::new();
    for path in crts {
        let rel = path.strip_prefix(&pki).unwrap_or(&path).to_path_buf();
        let kind = expected_ca(&rel);
        let is_ca_file = rel == Path::new(&format!("{}.crt", kind.base()));
        let pem = read_optional(&path)?.unwrap_or_default();
        out.push(status(
            state,
            &path,
            &pem,
            ca_of(kind).map(|(c, _)| c),
            is_ca_file,
            warn_days,
            now,
        ));
    }

    let mut confs = Vec::new();
    walk(&state.kubeconfig_dir(), "conf", &mut confs)?;
    let cluster_ca = ca_of(CaKind::Cluster);
    for path in confs {
        let text = read_optional(&path)?.unwrap_or_default();
        let kc = Kubeconfig::parse(&text);
        let pem = kc
            .as_ref()
            .and_then(Kubeconfig::client_cert_pem)
            .unwrap_or_default();
        let mut s = status(
            state,
            &path,
            &pem,
            cluster_ca.map(|(c, _)| c),
            false,
            warn_days,
            now,
        );
        if s.health != Health::Invalid
            && kc.and_then(|k| k.ca_pem()).as_deref() != cluster_ca.map(|(_, pem)| pem.as_slice())
        {
            s.health = Health::Invalid;
            s.problem = Some("embedded CA data is not the cluster CA".into());
        }
        out.push(s);
    }
    Ok(CheckReport { certificates: out })
}

fn status(
    state: &StateDir,
    path: &Path,
    pem: &[u8],
    ca: Option<&CertInfo>,
    self_signed: bool,
    warn_days: u32,
    now: OffsetDateTime,
) -> CertStatus {
    let rel = path
        .strip_prefix(state.root())
        .unwrap_or(path)
        .to_path_buf();
    let c = match CertInfo::from_pem(pem) {
        Ok(c) => c,
        Err(e) => {
            return CertStatus {
                path: rel,
                subject: String::new(),
                sans: Vec::new(),
                issuer: String::new(),
                not_after: String::new(),
                days_left: 0,
                health: Health::Invalid,
                problem: Some(e),
            };
        }
    };
    let days_left = (c.not_after - now).whole_days();
    let chains = if self_signed {
        c.signed_by(&c)
    } else {
        ca.is_some_and(|ca| c.signed_by(ca))
    };
    let (health, problem) = if !chains {
        let why = match ca {
            None if !self_signed => "its CA certificate is missing or unreadable".to_owned(),
            _ => format!(
                "not signed by {}",
                if self_signed { "itself" } else { "its CA" }
            ),
        };
        (Health::Invalid, Some(why))
    } else if now >= c.not_after {
        (Health::Expired, None)
    } else if c.not_after - now < time::Duration::days(i64::from(warn_days)) {
        (Health::Expiring, None)
    } else {
        (Health::Ok, None)
    };
    CertStatus {
        path: rel,
        subject: c.subject.clone(),
        sans: c.sans.iter().map(san_string).collect(),
        issuer: c.issuer.clone(),
        not_after: c.not_after.format(&Rfc3339).unwrap_or_default(),
        days_left,
        health,
        problem,
    }
}

/// Files ending in `.ext` below `dir`, sorted; a missing dir is empty.
fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result<(), PkiError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StateError::Read {
                path: dir.to_path_buf(),
                source,
            }
            .into());
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, ext, out)?;
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_to_their_ca() {
        assert_eq!(expected_ca(Path::new("ca.crt")), CaKind::Cluster);
        assert_eq!(
            expected_ca(Path::new("front-proxy-ca.crt")),
            CaKind::FrontProxy
        );
        assert_eq!(
            expected_ca(Path::new("front-proxy-client.crt")),
            CaKind::FrontProxy
        );
        assert_eq!(expected_ca(Path::new("etcd/ca.crt")), CaKind::Etcd);
        assert_eq!(
            expected_ca(Path::new("etcd/healthcheck-client.crt")),
            CaKind::Etcd
        );
        assert_eq!(
            expected_ca(Path::new("apiserver-etcd-client.crt")),
            CaKind::Etcd
        );
        assert_eq!(
            expected_ca(Path::new("hosts/n1/etcd/peer.crt")),
            CaKind::Etcd
        );
        assert_eq!(
            expected_ca(Path::new("hosts/n1/apiserver.crt")),
            CaKind::Cluster
        );
        assert_eq!(
            expected_ca(Path::new("hosts/etcd/apiserver.crt")),
            CaKind::Cluster
        );
        assert_eq!(
            expected_ca(Path::new("apiserver-kubelet-client.crt")),
            CaKind::Cluster
        );
    }
}
