//! Day-two operations on a running cluster (docs/operations.md): `status`, `backup`, `restore`,
//! renewing certificates (`renew`), what each host serves (`served`), removing a host (`remove`),
//! tearing the cluster down (`reset`) and upgrading it (`upgrade`). Each runs in the same context
//! as apply (`context::Ctx`) and reuses apply's phases where it changes files (`files::sync`).

pub mod backup;
pub mod defrag;
pub mod drain;
pub mod remove;
pub mod renew;
pub mod reset;
pub mod restore;
pub mod served;
pub mod status;
pub mod upgrade;

use std::path::PathBuf;

use crate::plan::FailureTolerance;
use crate::state::StateDir;

pub use backup::{BackupOptions, BackupReport};
pub use restore::{RestoreOptions, RestoreReport};
pub use status::{Health, Status};

/// One line per fact about what the cluster tolerates.
pub fn describe_tolerance(t: &FailureTolerance) -> Vec<String> {
    let mut out = vec![format!(
        "tolerates the loss of {} at once",
        crate::words::count(t.host_failures_tolerated, "host")
    )];
    if !t.fatal_host_losses.is_empty() {
        out.push(format!(
            "losing any of these alone stops the cluster: {}",
            t.fatal_host_losses.join(", ")
        ));
    }
    out
}

/// Where `kbs backup` writes by default and `kbs status` looks for the last backup.
pub fn backups_dir(state: &StateDir) -> PathBuf {
    state.root().join("backups")
}

/// The shell snippet that prints `etcdutl` when this host has it (etcd 3.5+), else `etcdctl`:
/// the offline snapshot commands (status, restore) moved to etcdutl in 3.5 and left etcdctl in 3.6.
pub(crate) const SNAPSHOT_TOOL: &str = "if command -v etcdutl >/dev/null 2>&1; then tool=etcdutl; else tool=etcdctl; export ETCDCTL_API=3; fi";
