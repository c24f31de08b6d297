//! Kubeconfig files with embedded client certificates, in the shape client-go and kubeadm write.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    clusters: Vec<NamedCluster>,
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context")]
    current_context: String,
    users: Vec<NamedUser>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cluster {
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
    server: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Debug, Serialize, Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Debug, Serialize, Deserialize)]
struct User {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: String,
    #[serde(rename = "client-key-data")]
    client_key_data: String,
}

impl Kubeconfig {
    /// One cluster, one user named after the certificate's CN, context `<CN>@<cluster>`.
    pub fn new(
        cluster: &str,
        server: &str,
        ca_pem: &[u8],
        user: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Self {
        let context = format!("{user}@{cluster}");
        Self {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: cluster.into(),
                cluster: Cluster {
                    certificate_authority_data: B64.encode(ca_pem),
                    server: server.into(),
                },
            }],
            contexts: vec![NamedContext {
                name: context.clone(),
                context: Context {
                    cluster: cluster.into(),
                    user: user.into(),
                },
            }],
            current_context: context,
            users: vec![NamedUser {
                name: user.into(),
                user: User {
                    client_certificate_data: B64.encode(cert_pem),
                    client_key_data: B64.encode(key_pem),
                },
            }],
        }
    }

    pub fn to_yaml(&self) -> Result<String, serde_saphyr::ser::Error> {
        // Plain one-line base64 like client-go writes, not a `>-` folded block.
        let mut opts = serde_saphyr::SerializerOptions::default();
        opts.prefer_block_scalars = false;
        serde_saphyr::to_string_with_options(self, opts)
    }

    /// `None` when the text is not a kubeconfig of this shape.
    pub fn parse(text: &[u8]) -> Option<Self> {
        serde_saphyr::from_slice(text).ok()
    }

    fn current(&self) -> Option<(&Cluster, &User)> {
        let ctx = &self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)?
            .context;
        let cluster = &self
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)?
            .cluster;
        let user = &self.users.iter().find(|u| u.name == ctx.user)?.user;
        Some((cluster, user))
    }

    pub fn server(&self) -> Option<&str> {
        self.current().map(|(c, _)| c.server.as_str())
    }

    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        self.current()
            .and_then(|(c, _)| B64.decode(&c.certificate_authority_data).ok())
    }

    pub fn client_cert_pem(&self) -> Option<Vec<u8>> {
        self.current()
            .and_then(|(_, u)| B64.decode(&u.client_certificate_data).ok())
    }

    pub fn client_key_pem(&self) -> Option<Vec<u8>> {
        self.current()
            .and_then(|(_, u)| B64.decode(&u.client_key_data).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let key = "KEY".repeat(100);
        let k = Kubeconfig::new(
            "edge-1",
            "https://192.0.2.100:8443",
            b"CA",
            "kubernetes-admin",
            b"CERT",
            key.as_bytes(),
        );
        let yaml = k.to_yaml().unwrap();
        assert!(
            yaml.contains("current-context: kubernetes-admin@edge-1"),
            "{yaml}"
        );
        // One plain line, as client-go writes it, not a folded `>-` block.
        assert!(yaml.contains("client-key-data: S0VZS0VZ"), "{yaml}");
        let back = Kubeconfig::parse(yaml.as_bytes()).unwrap();
        assert_eq!(back.server(), Some("https://192.0.2.100:8443"));
        assert_eq!(back.ca_pem().unwrap(), b"CA");
        assert_eq!(back.client_cert_pem().unwrap(), b"CERT");
        assert_eq!(back.client_key_pem().unwrap(), key.as_bytes());
    }
}
