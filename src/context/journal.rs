//! The apply journal: one JSON line per step that started or finished on a host, appended to
//! `<state>/journal.jsonl` and synced before the step's effect is relied on. A step that started
//! and never finished is what a resumed run repairs; the lock keeps two runs apart.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::state::StateDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Started,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// Seconds since the epoch.
    at: u64,
    host: String,
    step: String,
    status: StepStatus,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum JournalError {
    #[error("cannot use the journal {}: {source}", path.display())]
    #[diagnostic(help("check the permissions of the state directory"))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another kbs run holds the lock on this cluster ({})", path.display())]
    #[diagnostic(help(
        "wait for it to finish; if no kbs is running, the lock is released by itself (it is a kernel file lock)"
    ))]
    Locked { path: PathBuf },
}

/// The journal of one cluster, open for appending, with the lock held for as long as it lives.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    last: BTreeMap<(String, String), StepStatus>,
    _lock: File,
}

impl Journal {
    /// Takes the cluster's lock (failing at once if another run holds it) and reads the journal.
    pub fn open(state: &StateDir) -> Result<Self, JournalError> {
        let lock_path = state.root().join("apply.lock");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => JournalError::Locked {
                path: lock_path.clone(),
            },
            std::fs::TryLockError::Error(source) => JournalError::Io {
                path: lock_path.clone(),
                source,
            },
        })?;
        let path = state.root().join("journal.jsonl");
        let mut last = BTreeMap::new();
        if let Ok(f) = File::open(&path) {
            // A line cut by a crash mid-write is skipped: its step simply did not happen.
            for entry in BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| serde_json::from_str::<Entry>(&l).ok())
            {
                last.insert((entry.host, entry.step), entry.status);
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Self {
            path,
            file,
            last,
            _lock: lock,
        })
    }

    /// The last status recorded for `step` on `host`.
    pub fn status(&self, host: &str, step: &str) -> Option<StepStatus> {
        self.last
            .get(&(host.to_string(), step.to_string()))
            .copied()
    }

    pub fn is_done(&self, host: &str, step: &str) -> bool {
        self.status(host, step) == Some(StepStatus::Done)
    }

    /// Records and syncs a status, so that a run killed right after still finds it.
    pub fn record(
        &mut self,
        host: &str,
        step: &str,
        status: StepStatus,
    ) -> Result<(), JournalError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let entry = Entry {
            at,
            host: host.into(),
            step: step.into(),
            status,
        };
        let mut line = serde_json::to_string(&entry).unwrap_or_default();
        line.push('\n');
        let err = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(err)?;
        self.file.sync_data().map_err(err)?;
        self.last.insert((entry.host, entry.step), status);
        Ok(())
    }

    /// Steps that started and never finished, per host: what a resumed run must repair.
    pub fn unfinished(&self) -> Vec<(&str, &str)> {
        self.last
            .iter()
            .filter(|(_, s)| **s == StepStatus::Started)
            .map(|((h, st), _)| (h.as_str(), st.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_the_lock_excludes_a_second_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = StateDir::new(dir.path());
        {
            let mut j = Journal::open(&state).expect("open");
            j.record("node-1", "etcd/start", StepStatus::Started)
                .expect("record");
            j.record("node-1", "etcd/start", StepStatus::Done)
                .expect("record");
            j.record("node-2", "kubeadm/join", StepStatus::Started)
                .expect("record");
            assert!(matches!(
                Journal::open(&state),
                Err(JournalError::Locked { .. })
            ));
        }
        // A torn last line, as a crash mid-write leaves it, is ignored.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.jsonl"))
            .expect("open");
        f.write_all(b"{\"at\":1,\"host\":\"node-3\",\"st")
            .expect("write");
        let j = Journal::open(&state).expect("lock released with the first journal");
        assert!(j.is_done("node-1", "etcd/start"));
        assert_eq!(j.unfinished(), [("node-2", "kubeadm/join")]);
        assert_eq!(j.status("node-3", "etcd/start"), None);
    }
}
