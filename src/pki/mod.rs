//! The cluster PKI: CAs, service-account keys, leaf certificates and kubeconfigs, made locally in
//! the state directory in kubeadm's layout so `kubeadm init/join` finds them and mints nothing.
//!
//! `ensure` converges: it never touches a CA or a leaf that still serves its purpose, and issues
//! only what is missing or no longer fits the plan. Layout and tables: docs/pki.md.

mod cert;
mod check;
mod files;
pub mod kubeconfig;
pub mod spec;

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::inventory::PkiSettings;
use crate::plan::ClusterPlan;
use crate::state::{StateDir, StateError, Written, read_optional};

pub use cert::CertInfo;
pub use check::{CertStatus, CheckReport, Health, check};
pub use files::{
    ETCD_USER, HostFile, HostFiles, REMOTE_ETCD_PKI_DIR, REMOTE_KUBECONFIG_DIR, REMOTE_PKI_DIR,
    host_files, identity_cas,
};

use cert::Identity;
use kubeconfig::Kubeconfig;
use spec::{CaKind, KubeconfigSpec, LeafSpec};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PkiError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] StateError),
    #[error("cannot use certificate {}: {reason}", path.display())]
    #[diagnostic(help(
        "restore the file from a backup; deleting a CA and running `kbs certs generate` makes a new CA, \
         which invalidates everything the old one signed"
    ))]
    BadCert { path: PathBuf, reason: String },
    #[error("cannot use private key {}: {reason}", path.display())]
    #[diagnostic(help("provide an unencrypted RSA or ECDSA key in PEM (PKCS#8, PKCS#1 or SEC1)"))]
    BadKey { path: PathBuf, reason: String },
    #[error("{} is a CA certificate but its key {} is missing", cert.display(), key.display())]
    #[diagnostic(help(
        "kbs signs certificates with the CA key; put the key next to the certificate"
    ))]
    CaKeyMissing { cert: PathBuf, key: PathBuf },
    #[error("the key {} does not belong to the certificate {}", key.display(), cert.display())]
    #[diagnostic(help("pair each CA certificate with its own key"))]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{} from pki.ca_dir differs from the copy already in the state directory ({})", given.display(), existing.display())]
    #[diagnostic(help(
        "kbs never replaces a CA or the service-account key silently: remove the state directory's copy if you \
         really mean to switch (everything signed by the old one is then re-issued), or point pki.ca_dir at the one in use"
    ))]
    Conflict { given: PathBuf, existing: PathBuf },
    #[error("the CA {} expired on {not_after}", path.display())]
    #[diagnostic(help(
        "kbs does not rotate CAs; replace it by hand (or via pki.ca_dir) and re-run `kbs certs generate`"
    ))]
    CaExpired {
        path: PathBuf,
        not_after: OffsetDateTime,
    },
    #[error("there is no CA at {}", path.display())]
    #[diagnostic(help("run `kbs certs generate INVENTORY` first"))]
    NoCa { path: PathBuf },
    #[error("cannot sign {what}: {source}")]
    Sign { what: String, source: rcgen::Error },
    #[error("cannot write kubeconfig {}: {source}", path.display())]
    Yaml {
        path: PathBuf,
        source: serde_saphyr::ser::Error,
    },
    #[error("no certificates under {}", path.display())]
    #[diagnostic(help(
        "run `kbs certs generate INVENTORY` to create them, or pass the right --state-dir"
    ))]
    NothingToCheck { path: PathBuf },
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    /// Copied from `pki.ca_dir`.
    Imported,
    Kept,
    /// Issued again; the reason says what was wrong with the old one.
    Reissued(String),
}

#[derive(Debug, Clone)]
pub struct ReportItem {
    /// Relative to the state directory.
    pub path: PathBuf,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct PkiReport {
    pub items: Vec<ReportItem>,
    /// `sha256:<hex>` for `kubeadm join --discovery-token-ca-cert-hash`.
    pub discovery_hash: String,
}

impl PkiReport {
    pub fn changed(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.action != Action::Kept)
            .count()
    }
}

/// Makes or completes the PKI for `plan` in `state`, as of now.
pub fn ensure(plan: &ClusterPlan, state: &StateDir) -> Result<PkiReport, PkiError> {
    ensure_at(plan, state, OffsetDateTime::now_utc())
}

/// `ensure` with an explicit clock, for reproducible runs and tests of expiry handling.
pub fn ensure_at(
    plan: &ClusterPlan,
    state: &StateDir,
    now: OffsetDateTime,
) -> Result<PkiReport, PkiError> {
    Run {
        plan,
        state,
        now,
        renew: false,
        items: Vec::new(),
    }
    .go()
}

/// Re-issues every leaf and kubeconfig certificate (new keys, same names); CAs and the
/// service-account pair stay. The CAs must already exist.
pub fn renew(plan: &ClusterPlan, state: &StateDir) -> Result<PkiReport, PkiError> {
    renew_at(plan, state, OffsetDateTime::now_utc())
}

/// `renew` with an explicit clock (tests use a past one to make expired leaves).
pub fn renew_at(
    plan: &ClusterPlan,
    state: &StateDir,
    now: OffsetDateTime,
) -> Result<PkiReport, PkiError> {
    Run {
        plan,
        state,
        now,
        renew: true,
        items: Vec::new(),
    }
    .go()
}

/// `sha256:<hex>` over the DER SubjectPublicKeyInfo of a CA certificate (PEM), as kubeadm's
/// `discovery.bootstrapToken.caCertHashes` expects.
pub fn discovery_hash(ca_pem: &[u8]) -> Result<String, String> {
    CertInfo::from_pem(ca_pem).map(|ca| spki_hash(&ca))
}

fn spki_hash(ca: &CertInfo) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(ca.spki_der())))
}

/// Where the cluster CA certificate lives in the state directory.
pub fn ca_cert_path(state: &StateDir) -> PathBuf {
    state.pki_dir().join("ca.crt")
}

/// A kubeconfig in the state directory; `rel` is one of `spec::ADMIN_CONF`,
/// `spec::SUPER_ADMIN_CONF`, `spec::controller_manager_conf(host)`, `spec::scheduler_conf(host)`.
pub fn kubeconfig_path(state: &StateDir, rel: &str) -> PathBuf {
    state.kubeconfig_dir().join(rel)
}

/// A CA with its key, loaded from the state directory.
struct LoadedCa {
    cert: CertInfo,
    pem: Vec<u8>,
    key: KeyPair,
}

impl LoadedCa {
    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_der(&self.cert.der.as_slice().into(), &self.key).map_err(|source| {
            PkiError::Sign {
                what: format!("with CA {}", self.cert.subject),
                source,
            }
        })
    }
}

struct Run<'a> {
    plan: &'a ClusterPlan,
    state: &'a StateDir,
    now: OffsetDateTime,
    renew: bool,
    items: Vec<ReportItem>,
}

impl Run<'_> {
    fn settings(&self) -> &PkiSettings {
        &self.plan.inventory.pki
    }

    fn record(&mut self, path: &Path, action: Action) {
        let path = path
            .strip_prefix(self.state.root())
            .unwrap_or(path)
            .to_path_buf();
        self.items.push(ReportItem { path, action });
    }

    fn go(mut self) -> Result<PkiReport, PkiError> {
        self.state.create()?;
        let cluster = self.ca(CaKind::Cluster)?;
        let front_proxy = self.ca(CaKind::FrontProxy)?;
        let etcd = self.ca(CaKind::Etcd)?;
        self.service_account()?;
        for spec in spec::leaf_specs(self.plan) {
            let ca = match spec.ca {
                CaKind::Cluster => &cluster,
                CaKind::FrontProxy => &front_proxy,
                CaKind::Etcd => &etcd,
            };
            self.leaf(&spec, ca)?;
        }
        for spec in spec::kubeconfig_specs(self.plan) {
            self.kubeconfig(&spec, &cluster)?;
        }
        let discovery_hash = spki_hash(&cluster.cert);
        Ok(PkiReport {
            items: self.items,
            discovery_hash,
        })
    }

    /// Loads a CA from the state dir, imports it from `pki.ca_dir`, or makes it.
    fn ca(&mut self, kind: CaKind) -> Result<LoadedCa, PkiError> {
        let pki = self.state.pki_dir();
        let crt = pki.join(format!("{}.crt", kind.base()));
        let key = pki.join(format!("{}.key", kind.base()));
        let existing = read_optional(&crt)?;

        let given = self
            .settings()
            .ca_dir
            .as_ref()
            .map(|d| d.join(format!("{}.crt", kind.base())));
        if let Some(given_crt) = given.filter(|p| p.exists()) {
            let given_key = given_crt.with_extension("key");
            let (crt_pem, key_pem) = read_pair(&given_crt, &given_key)?;
            let loaded = load_ca(&given_crt, &given_key, crt_pem.clone(), &key_pem)?;
            if existing.as_ref().is_some_and(|e| *e != crt_pem) {
                return Err(PkiError::Conflict {
                    given: given_crt,
                    existing: crt,
                });
            }
            // Verbatim: the user's key encoding (PKCS#1/SEC1/PKCS#8) is kept as is.
            let w1 = self.state.write_secret(&key, &key_pem)?;
            let w2 = self.state.write_public(&crt, &crt_pem)?;
            let action = if w1 == Written::Unchanged && w2 == Written::Unchanged {
                Action::Kept
            } else {
                Action::Imported
            };
            self.record(&crt, action);
            return self.usable(loaded, &crt);
        }

        if let Some(crt_pem) = existing {
            let key_pem = read_optional(&key)?.ok_or_else(|| PkiError::CaKeyMissing {
                cert: crt.clone(),
                key: key.clone(),
            })?;
            let loaded = load_ca(&crt, &key, crt_pem, &key_pem)?;
            self.record(&crt, Action::Kept);
            return self.usable(loaded, &crt);
        }
        if self.renew {
            return Err(PkiError::NoCa { path: crt });
        }

        let what = || format!("the {} CA", kind.common_name());
        let sign_err = |source| PkiError::Sign {
            what: what(),
            source,
        };
        let k = cert::generate_key(self.settings().algorithm).map_err(sign_err)?;
        let c = cert::self_signed_ca(kind, &k, self.now, self.settings().ca_validity_days)
            .map_err(sign_err)?;
        // Key first: a crash in between leaves a key without certificate, which is simply remade.
        self.state
            .write_secret(&key, k.serialize_pem().as_bytes())?;
        self.state.write_public(&crt, c.pem().as_bytes())?;
        self.record(&crt, Action::Created);
        let pem = c.pem().into_bytes();
        let cert = CertInfo::from_pem(&pem).map_err(|reason| PkiError::BadCert {
            path: crt.clone(),
            reason,
        })?;
        Ok(LoadedCa { cert, pem, key: k })
    }

    fn usable(&self, ca: LoadedCa, path: &Path) -> Result<LoadedCa, PkiError> {
        if self.now >= ca.cert.not_after {
            return Err(PkiError::CaExpired {
                path: path.to_path_buf(),
                not_after: ca.cert.not_after,
            });
        }
        Ok(ca)
    }

    /// sa.key / sa.pub: from `pki.ca_dir` if there, kept if present, else generated. Every API
    /// server must share them, or tokens minted by one are rejected by the others.
    fn service_account(&mut self) -> Result<(), PkiError> {
        let pki = self.state.pki_dir();
        let key = pki.join("sa.key");
        let public = pki.join("sa.pub");
        let given = self
            .settings()
            .ca_dir
            .as_ref()
            .map(|d| d.join("sa.key"))
            .filter(|p| p.exists());
        let (key_pem, action) = match (given, read_optional(&key)?) {
            (Some(given), existing) => {
                let pem = fs::read(&given).map_err(|source| StateError::Read {
                    path: given.clone(),
                    source,
                })?;
                cert::parse_key(&given, &pem)?;
                let action = match existing {
                    Some(e) if e == pem => Action::Kept,
                    // Swapping the SA key invalidates every issued token: as for CAs, refuse.
                    Some(_) => {
                        return Err(PkiError::Conflict {
                            given,
                            existing: key,
                        });
                    }
                    None => Action::Imported,
                };
                self.state.write_secret(&key, &pem)?;
                (pem, action)
            }
            (None, Some(pem)) => (pem, Action::Kept),
            (None, None) => {
                let k = cert::generate_key(self.settings().algorithm).map_err(|source| {
                    PkiError::Sign {
                        what: "the service-account key".into(),
                        source,
                    }
                })?;
                let pem = k.serialize_pem().into_bytes();
                self.state.write_secret(&key, &pem)?;
                (pem, Action::Created)
            }
        };
        // Always derived from the key, so a stale or hand-edited sa.pub cannot disagree with it.
        let k = cert::parse_key(&key, &key_pem)?;
        self.state
            .write_public(&public, k.public_key_pem().as_bytes())?;
        self.record(&key, action);
        Ok(())
    }

    fn leaf(&mut self, spec: &LeafSpec, ca: &LoadedCa) -> Result<(), PkiError> {
        let pki = self.state.pki_dir();
        let crt = pki.join(format!("{}.crt", spec.base));
        let key = pki.join(format!("{}.key", spec.base));
        let id = Identity {
            common_name: &spec.common_name,
            organization: spec.organization,
            sans: &spec.sans,
            usage: spec.usage,
        };
        let action = match (read_optional(&crt)?, read_optional(&key)?) {
            (Some(c), Some(k)) => match self.why_reissue(&c, &k, &id, ca) {
                None => {
                    self.record(&crt, Action::Kept);
                    return Ok(());
                }
                Some(why) => Action::Reissued(why),
            },
            (None, None) => Action::Created,
            _ => Action::Reissued("certificate or key missing".into()),
        };
        let (c, k) = self.issue(&id, ca, &spec.base)?;
        self.state
            .write_secret(&key, k.serialize_pem().as_bytes())?;
        self.state.write_public(&crt, c.pem().as_bytes())?;
        self.record(&crt, action);
        Ok(())
    }

    fn kubeconfig(&mut self, spec: &KubeconfigSpec, ca: &LoadedCa) -> Result<(), PkiError> {
        let path = kubeconfig_path(self.state, &spec.rel);
        let id = Identity {
            common_name: spec.common_name,
            organization: spec.organization,
            sans: &[],
            usage: spec::Usage::Client,
        };
        let action = match read_optional(&path)? {
            None => Action::Created,
            Some(text) => match Kubeconfig::parse(&text) {
                None => Action::Reissued("not a kubeconfig kbs can read".into()),
                Some(kc) if kc.server() != Some(spec.server.as_str()) => {
                    Action::Reissued("server URL differs".into())
                }
                Some(kc) if kc.ca_pem().as_deref() != Some(ca.pem.as_slice()) => {
                    Action::Reissued("CA data differs".into())
                }
                Some(kc) => {
                    let (c, k) = (
                        kc.client_cert_pem().unwrap_or_default(),
                        kc.client_key_pem().unwrap_or_default(),
                    );
                    match self.why_reissue(&c, &k, &id, ca) {
                        None => {
                            self.record(&path, Action::Kept);
                            return Ok(());
                        }
                        Some(why) => Action::Reissued(why),
                    }
                }
            },
        };
        let (c, k) = self.issue(&id, ca, &spec.rel)?;
        let kc = Kubeconfig::new(
            &self.plan.inventory.cluster.name,
            &spec.server,
            &ca.pem,
            spec.common_name,
            c.pem().as_bytes(),
            k.serialize_pem().as_bytes(),
        );
        let yaml = kc.to_yaml().map_err(|source| PkiError::Yaml {
            path: path.clone(),
            source,
        })?;
        self.state.write_secret(&path, yaml.as_bytes())?;
        self.record(&path, action);
        Ok(())
    }

    /// Why an existing certificate/key pair must be issued again, `None` when it is fine.
    fn why_reissue(
        &self,
        crt: &[u8],
        key: &[u8],
        id: &Identity<'_>,
        ca: &LoadedCa,
    ) -> Option<String> {
        if self.renew {
            return Some("renewal requested".into());
        }
        let c = match CertInfo::from_pem(crt) {
            Ok(c) => c,
            Err(e) => return Some(e),
        };
        if let Some(problem) = c.problem(id, &ca.cert, self.now) {
            return Some(problem);
        }
        let before = self.settings().renew_before_days;
        if c.not_after - self.now < time::Duration::days(i64::from(before)) {
            return Some(format!(
                "expires on {}, within pki.renew_before_days = {before}",
                c.not_after.date()
            ));
        }
        match cert::parse_key(Path::new(""), key) {
            Ok(k) if c.matches_key(&k) => None,
            _ => Some("key does not match the certificate".into()),
        }
    }

    fn issue(
        &self,
        id: &Identity<'_>,
        ca: &LoadedCa,
        what: &str,
    ) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
        let sign_err = |source| PkiError::Sign {
            what: what.to_owned(),
            source,
        };
        let key = cert::generate_key(self.settings().algorithm).map_err(sign_err)?;
        let c = cert::sign_leaf(
            id,
            &key,
            &ca.issuer()?,
            self.now,
            self.settings().cert_validity_days,
        )
        .map_err(sign_err)?;
        Ok((c, key))
    }
}

fn read_pair(crt: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let crt_pem = read_optional(crt)?.ok_or_else(|| PkiError::NoCa {
        path: crt.to_path_buf(),
    })?;
    let key_pem = read_optional(key)?.ok_or_else(|| PkiError::CaKeyMissing {
        cert: crt.to_path_buf(),
        key: key.to_path_buf(),
    })?;
    Ok((crt_pem, key_pem))
}

fn load_ca(
    crt: &Path,
    key_path: &Path,
    pem: Vec<u8>,
    key_pem: &[u8],
) -> Result<LoadedCa, PkiError> {
    let bad = |reason: String| PkiError::BadCert {
        path: crt.to_path_buf(),
        reason,
    };
    let cert = CertInfo::from_pem(&pem).map_err(bad)?;
    if !cert.is_ca {
        return Err(bad(
            "it is not a CA certificate (basicConstraints CA:TRUE missing)".into(),
        ));
    }
    let key = cert::parse_key(key_path, key_pem)?;
    if !cert.matches_key(&key) {
        return Err(PkiError::KeyMismatch {
            cert: crt.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    Ok(LoadedCa { cert, pem, key })
}
