//! Public-key authentication: the target's key file, ssh-agent, then ~/.ssh/id_*.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::Handle;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use super::error::SshError;
use super::hostkey::{Verifier, fingerprint};
use super::target::Target;

const DEFAULT_KEYS: [&str; 3] = ["id_ed25519", "id_ecdsa", "id_rsa"];

pub(crate) async fn authenticate(
    h: &mut Handle<Verifier>,
    target: &Target,
    agent: Option<&Path>,
) -> Result<(), SshError> {
    let mut tried = Vec::new();
    let preferred = target
        .identity_file
        .as_deref()
        .and_then(|f| russh::keys::load_public_key(pub_path(f)).ok());

    // The configured key file comes first; if it needs a passphrase, the agent may hold it.
    if let Some(first) = target.identity_file.as_deref()
        && let Some(key) = load(first, &mut tried)
        && try_key(h, target, key, first, &mut tried).await?
    {
        return Ok(());
    }
    if let Some(sock) = agent
        && try_agent(h, target, sock, preferred.as_ref(), &mut tried).await?
    {
        return Ok(());
    }
    if target.identity_file.is_none() {
        for f in default_key_files() {
            if let Some(key) = load(&f, &mut tried)
                && try_key(h, target, key, &f, &mut tried).await?
            {
                return Ok(());
            }
        }
    }
    if tried.is_empty() {
        tried.push("no key (set identity_file, or start ssh-agent with a key loaded)".into());
    }
    Err(SshError::Auth {
        host: target.name.clone(),
        user: target.user.clone(),
        tried,
    })
}

fn default_key_files() -> Vec<PathBuf> {
    let Some(home) = std::env::home_dir() else {
        return Vec::new();
    };
    DEFAULT_KEYS
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .filter(|p| p.exists())
        .collect()
}

fn pub_path(f: &Path) -> PathBuf {
    let mut s = f.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

/// Loads an unencrypted key; records why not otherwise.
fn load(path: &Path, tried: &mut Vec<String>) -> Option<PrivateKey> {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Some(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            tried.push(format!(
                "{} (passphrase-protected: load it with `ssh-add {}`)",
                path.display(),
                path.display()
            ));
            None
        }
        Err(e) => {
            tried.push(format!("{} (unusable: {e})", path.display()));
            None
        }
    }
}

async fn try_key(
    h: &mut Handle<Verifier>,
    target: &Target,
    key: PrivateKey,
    path: &Path,
    tried: &mut Vec<String>,
) -> Result<bool, SshError> {
    tried.push(format!(
        "{} key {} ({})",
        key.algorithm().as_str(),
        path.display(),
        fingerprint(key.public_key())
    ));
    let hash = rsa_hash(h, target, key.public_key()).await?;
    let res = h
        .authenticate_publickey(
            &target.user,
            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
        )
        .await
        .map_err(auth_error(target))?;
    Ok(res.success())
}

async fn try_agent(
    h: &mut Handle<Verifier>,
    target: &Target,
    sock: &Path,
    preferred: Option<&PublicKey>,
    tried: &mut Vec<String>,
) -> Result<bool, SshError> {
    let mut agent = match AgentClient::connect_uds(sock).await {
        Ok(a) => a,
        Err(e) => {
            tried.push(format!("ssh-agent (cannot connect: {e})"));
            return Ok(false);
        }
    };
    let mut keys: Vec<PublicKey> = match agent.request_identities().await {
        Ok(ids) => ids
            .into_iter()
            .filter_map(|id| match id {
                AgentIdentity::PublicKey { key, .. } => Some(key),
                AgentIdentity::Certificate { .. } => None,
            })
            .collect(),
        Err(e) => {
            tried.push(format!("ssh-agent (cannot list keys: {e})"));
            return Ok(false);
        }
    };
    // Servers allow few attempts (MaxAuthTries): offer the configured key first.
    if let Some(p) = preferred {
        keys.sort_by_key(|k| k != p);
    }
    for key in keys {
        tried.push(format!("agent key {}", fingerprint(&key)));
        let hash = rsa_hash(h, target, &key).await?;
        match h
            .authenticate_publickey_with(&target.user, key, hash, &mut agent)
            .await
        {
            Ok(r) if r.success() => return Ok(true),
            Ok(_) => {}
            Err(e) => tried.push(format!("(agent refused to sign: {e})")),
        }
    }
    Ok(false)
}

/// rsa-sha2-512/256 as the server advertises; `None` for non-RSA keys.
async fn rsa_hash(
    h: &Handle<Verifier>,
    target: &Target,
    key: &PublicKey,
) -> Result<Option<HashAlg>, SshError> {
    if !matches!(key.algorithm(), Algorithm::Rsa { .. }) {
        return Ok(None);
    }
    let best = h
        .best_supported_rsa_hash()
        .await
        .map_err(auth_error(target))?;
    Ok(best.flatten())
}

fn auth_error(target: &Target) -> impl FnOnce(russh::Error) -> SshError + '_ {
    |source| SshError::Ssh {
        host: target.name.clone(),
        what: "authentication",
        source,
    }
}
