//! Which files each host needs, and where they go on it. Only what the host's roles use: a
//! worker never holds a CA key, an etcd host never holds the etcd CA key.

use std::path::PathBuf;

use super::spec::{self, CaKind};
use crate::inventory::Role;
use crate::plan::ClusterPlan;
use crate::state::{PUBLIC_MODE, SECRET_MODE, StateDir};

/// kubeadm's certificatesDir.
pub const REMOTE_PKI_DIR: &str = "/etc/kubernetes/pki";
/// Where kubeadm keeps admin.conf, controller-manager.conf, ...
pub const REMOTE_KUBECONFIG_DIR: &str = "/etc/kubernetes";
/// etcd's own certificates. Not under /etc/kubernetes/pki: `kubeadm reset` empties that
/// directory, and etcd must outlive a reset of the control plane on its host.
pub const REMOTE_ETCD_PKI_DIR: &str = "/etc/kbs/etcd/pki";
/// The user etcd runs as (kbs-etcd@.service).
pub const ETCD_USER: &str = "etcd";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// In the state directory.
    pub local: PathBuf,
    /// Absolute path on the host.
    pub remote: PathBuf,
    pub mode: u32,
    /// The owning user on the host when not root (etcd reads its own keys).
    pub owner: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFiles {
    pub host: String,
    pub files: Vec<HostFile>,
}

struct Builder<'a> {
    state: &'a StateDir,
    files: Vec<HostFile>,
}

impl Builder<'_> {
    fn push(&mut self, local: PathBuf, remote: PathBuf, mode: u32) {
        self.push_owned(local, remote, mode, None);
    }

    fn push_owned(
        &mut self,
        local: PathBuf,
        remote: PathBuf,
        mode: u32,
        owner: Option<&'static str>,
    ) {
        if !self.files.iter().any(|f| f.remote == remote) {
            self.files.push(HostFile {
                local,
                remote,
                mode,
                owner,
            });
        }
    }

    /// `local` below the state's pki dir, installed as `remote` below /etc/kubernetes/pki.
    fn pki(&mut self, local: &str, remote: &str, mode: u32) {
        self.push(
            self.state.pki_dir().join(local),
            PathBuf::from(REMOTE_PKI_DIR).join(remote),
            mode,
        );
    }

    fn cert(&mut self, local_base: &str, remote_base: &str) {
        self.pki(
            &format!("{local_base}.crt"),
            &format!("{remote_base}.crt"),
            PUBLIC_MODE,
        );
    }

    fn cert_and_key(&mut self, local_base: &str, remote_base: &str) {
        self.cert(local_base, remote_base);
        self.pki(
            &format!("{local_base}.key"),
            &format!("{remote_base}.key"),
            SECRET_MODE,
        );
    }

    /// A certificate (and key, if `key`) of etcd's own, below /etc/kbs/etcd/pki.
    fn etcd(&mut self, local_base: &str, remote_base: &str, key: bool) {
        let dir = PathBuf::from(REMOTE_ETCD_PKI_DIR);
        self.push_owned(
            self.state.pki_dir().join(format!("{local_base}.crt")),
            dir.join(format!("{remote_base}.crt")),
            PUBLIC_MODE,
            Some(ETCD_USER),
        );
        if key {
            self.push_owned(
                self.state.pki_dir().join(format!("{local_base}.key")),
                dir.join(format!("{remote_base}.key")),
                SECRET_MODE,
                Some(ETCD_USER),
            );
        }
    }

    fn kubeconfig(&mut self, rel: &str, name: &str) {
        self.push(
            self.state.kubeconfig_dir().join(rel),
            PathBuf::from(REMOTE_KUBECONFIG_DIR).join(name),
            SECRET_MODE,
        );
    }
}

/// Where a host keeps the CAs that say which cluster it belongs to, with the CA each one is:
/// the cluster CA (every Kubernetes node: kbs places it on control planes, `kubeadm join`
/// writes it on workers) and etcd's (every etcd host).
pub fn identity_cas() -> [(PathBuf, CaKind); 2] {
    [
        (
            PathBuf::from(REMOTE_PKI_DIR).join(format!("{}.crt", CaKind::Cluster.base())),
            CaKind::Cluster,
        ),
        (
            PathBuf::from(REMOTE_ETCD_PKI_DIR).join("ca.crt"),
            CaKind::Etcd,
        ),
    ]
}

/// Per host (plan order), the files `kbs apply` uploads: control planes get the cluster and
/// front-proxy CAs with keys, the SA pair, etcd/ca.crt, the API server's client certs, their own
/// apiserver cert and the kubeconfigs (super-admin.conf only on the first control plane, where
/// `kubeadm init` runs); etcd hosts get etcd/ca.crt, their server/peer pair and the healthcheck
/// client; every Kubernetes node gets ca.crt.
pub fn host_files(plan: &ClusterPlan, state: &StateDir) -> Vec<HostFiles> {
    let first_cp = plan.first_control_plane().map(|h| h.name.as_str());
    plan.hosts
        .iter()
        .map(|h| {
            let mut b = Builder {
                state,
                files: Vec::new(),
            };
            if h.has(Role::ControlPlane) {
                b.cert_and_key(CaKind::Cluster.base(), "ca");
                b.cert_and_key(CaKind::FrontProxy.base(), "front-proxy-ca");
                b.pki("sa.key", "sa.key", SECRET_MODE);
                b.pki("sa.pub", "sa.pub", PUBLIC_MODE);
                b.cert(CaKind::Etcd.base(), "etcd/ca");
                b.cert_and_key(&spec::apiserver_base(&h.name), "apiserver");
                b.cert_and_key(
                    spec::APISERVER_KUBELET_CLIENT,
                    spec::APISERVER_KUBELET_CLIENT,
                );
                b.cert_and_key(spec::FRONT_PROXY_CLIENT, spec::FRONT_PROXY_CLIENT);
                b.cert_and_key(spec::APISERVER_ETCD_CLIENT, spec::APISERVER_ETCD_CLIENT);
                b.kubeconfig(spec::ADMIN_CONF, "admin.conf");
                if first_cp == Some(h.name.as_str()) {
                    b.kubeconfig(spec::SUPER_ADMIN_CONF, "super-admin.conf");
                }
                b.kubeconfig(
                    &spec::controller_manager_conf(&h.name),
                    "controller-manager.conf",
                );
                b.kubeconfig(&spec::scheduler_conf(&h.name), "scheduler.conf");
            }
            // Workers get nothing: `kubeadm join` refuses a pre-placed ca.crt
            // (FileAvailable--etc-kubernetes-pki-ca.crt) and writes it from discovery.
            if plan.etcd.iter().any(|m| m.host == h.name) {
                b.etcd(CaKind::Etcd.base(), "ca", false);
                b.etcd(&spec::etcd_server_base(&h.name), "server", true);
                b.etcd(&spec::etcd_peer_base(&h.name), "peer", true);
                b.etcd(spec::ETCD_HEALTHCHECK_CLIENT, "healthcheck-client", true);
            }
            HostFiles {
                host: h.name.clone(),
                files: b.files,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::inventory::Inventory;

    fn remote(files: &HostFiles) -> Vec<String> {
        files
            .files
            .iter()
            .map(|f| {
                let p = f.remote.display().to_string();
                p.strip_prefix("/etc/kubernetes/")
                    .or_else(|| p.strip_prefix("/etc/kbs/"))
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn each_host_gets_only_what_its_roles_use() {
        let text = include_str!("../../inventories/external-etcd.toml");
        let plan = ClusterPlan::new(Inventory::parse(Path::new("inventory.toml"), text).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        crate::pki::ensure(&plan, &state).unwrap();
        let all = host_files(&plan, &state);
        let of = |h: &str| all.iter().find(|f| f.host == h).unwrap();

        assert!(remote(of("worker-1")).is_empty());
        assert_eq!(
            remote(of("etcd-2")),
            [
                "etcd/pki/ca.crt",
                "etcd/pki/server.crt",
                "etcd/pki/server.key",
                "etcd/pki/peer.crt",
                "etcd/pki/peer.key",
                "etcd/pki/healthcheck-client.crt",
                "etcd/pki/healthcheck-client.key",
            ]
        );
        assert!(
            of("etcd-2")
                .files
                .iter()
                .all(|f| f.owner == Some(ETCD_USER))
        );
        let cp1 = remote(of("cp-1"));
        for want in [
            "pki/ca.crt",
            "pki/ca.key",
            "pki/front-proxy-ca.key",
            "pki/sa.key",
            "pki/sa.pub",
            "pki/etcd/ca.crt",
            "pki/apiserver.crt",
            "pki/apiserver.key",
            "pki/apiserver-etcd-client.key",
            "pki/apiserver-kubelet-client.key",
            "pki/front-proxy-client.key",
            "admin.conf",
            "super-admin.conf",
            "controller-manager.conf",
            "scheduler.conf",
        ] {
            assert!(cp1.iter().any(|f| f == want), "cp-1 lacks {want}: {cp1:?}");
        }
        assert!(
            !cp1.iter()
                .any(|f| f == "pki/etcd/ca.key" || f.starts_with("pki/etcd/server")),
            "{cp1:?}"
        );
        assert!(!remote(of("cp-2")).iter().any(|f| f == "super-admin.conf"));

        // Each control plane gets its own apiserver cert; every listed file exists with its mode.
        let cp2 = of("cp-2")
            .files
            .iter()
            .find(|f| f.remote.ends_with("apiserver.crt"))
            .unwrap();
        assert_eq!(cp2.local, state.pki_dir().join("hosts/cp-2/apiserver.crt"));
        for f in all.iter().flat_map(|h| &h.files) {
            assert!(f.local.exists(), "{}", f.local.display());
            let secret = f
                .remote
                .extension()
                .is_some_and(|e| e == "key" || e == "conf");
            assert_eq!(
                f.mode,
                if secret { SECRET_MODE } else { PUBLIC_MODE },
                "{}",
                f.remote.display()
            );
        }
    }
}
