//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The kbs binary under test, with colours and terminal links off so output is stable.
pub fn kbs() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("kbs"));
    cmd.env("NO_COLOR", "1")
        .env_remove("FORCE_COLOR")
        .env("COLUMNS", "400");
    cmd
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn inventory(name: &str) -> PathBuf {
    root().join("inventories").join(name)
}

/// Writes `text` as an inventory in a fresh temporary directory.
pub fn write_inventory(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inventory.toml");
    std::fs::write(&path, text).expect("write inventory");
    (dir, path)
}

/// stdout of a successful run.
pub fn stdout_of(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.output().expect("run kbs");
    assert!(
        out.status.success(),
        "kbs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
