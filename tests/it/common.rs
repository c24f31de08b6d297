//! Helpers shared by the integration tests: the binary, inventories, and rendered trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kbs::inventory::Inventory;
use kbs::plan::ClusterPlan;
use kbs::render::{RenderInputs, RenderedFile, Templates, render_host_files};
use serde_json::Value;

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

pub const INVENTORIES: [&str; 5] = [
    "single-host",
    "two-host",
    "three-host",
    "five-host",
    "external-etcd",
];

/// three-host.toml with its `[endpoint]` table replaced, one per endpoint mode.
pub const MODES: [(&str, &str); 4] = [
    (
        "vip",
        "mode = \"vip\"\naddress = \"192.0.2.100\"\nport = 6443\nvirtual_router_id = 42\n",
    ),
    (
        "kube-vip",
        "mode = \"kube-vip\"\naddress = \"192.0.2.100\"\nport = 6443\ninterface = \"ens18\"\n",
    ),
    (
        "external",
        "mode = \"external\"\naddress = \"api.edge-1.example.com\"\nport = 6443\n",
    ),
    (
        "dns",
        "mode = \"dns\"\naddress = \"api.edge-1.example.com\"\nport = 6443\n",
    ),
];

pub fn inventory_plan(name: &str) -> ClusterPlan {
    let path = inventory(&format!("{name}.toml"));
    ClusterPlan::new(Inventory::load(&path).unwrap_or_else(|e| panic!("{name}: {e:?}")))
}

pub fn mode_plan(endpoint: &str) -> ClusterPlan {
    let path = inventory("three-host.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[endpoint]").unwrap() + "[endpoint]\n".len();
    let end = start + text[start..].find("\n[").unwrap() + 1;
    let text = format!("{}{endpoint}{}", &text[..start], &text[end..]);
    ClusterPlan::new(Inventory::parse(&path, &text).unwrap_or_else(|e| panic!("{endpoint}: {e:?}")))
}

/// Every plan under test, named.
pub fn all_plans() -> Vec<(String, ClusterPlan)> {
    let mut plans: Vec<_> = INVENTORIES
        .iter()
        .map(|n| (n.to_string(), inventory_plan(n)))
        .collect();
    plans.extend(
        MODES
            .iter()
            .map(|(mode, e)| (format!("mode-{mode}"), mode_plan(e))),
    );
    plans
}

pub fn render(plan: &ClusterPlan, inputs: &RenderInputs) -> BTreeMap<String, Vec<RenderedFile>> {
    render_host_files(plan, &Templates::builtin().unwrap(), inputs).unwrap()
}

/// Every rendered file of every plan, with inputs apply would give, as (case, host, file).
pub fn all_files(inputs: &RenderInputs) -> Vec<(String, String, RenderedFile)> {
    let mut out = Vec::new();
    for (case, plan) in all_plans() {
        for (host, files) in render(&plan, inputs) {
            out.extend(files.into_iter().map(|f| (case.clone(), host.clone(), f)));
        }
    }
    out
}

pub fn text(f: &RenderedFile) -> &str {
    std::str::from_utf8(&f.content).unwrap()
}

/// Files whose host path ends with `suffix`.
pub fn files_ending(inputs: &RenderInputs, suffix: &str) -> Vec<(String, String, RenderedFile)> {
    let files: Vec<_> = all_files(inputs)
        .into_iter()
        .filter(|(_, _, f)| f.path.to_string_lossy().ends_with(suffix))
        .collect();
    assert!(!files.is_empty(), "no rendered file ends with {suffix}");
    files
}

/// `method path` with a JSON `body` through the endpoint as the state dir's admin; the status.
pub fn api_send(state: &Path, method: &str, path: &str, body: Option<Value>) -> u16 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kbs::context::api::Api { client, server } =
        kbs::context::api::admin_client(&kbs::state::StateDir::new(state))
            .expect("admin kubeconfig");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    rt.block_on(async {
        let mut req = client.request(method, format!("{server}{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
            .await
            .expect("request through the endpoint")
            .status()
            .as_u16()
    })
}

/// GET `path` through the endpoint with the state dir's admin credentials, from this machine.
pub fn api_get(state: &Path, path: &str) -> Value {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kbs::context::api::Api { client, server } =
        kbs::context::api::admin_client(&kbs::state::StateDir::new(state))
            .expect("admin kubeconfig");
    rt.block_on(async {
        let resp = client
            .get(format!("{server}{path}"))
            .send()
            .await
            .expect("GET through the endpoint");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.expect("JSON")
    })
}

/// `kbs SUBCOMMAND... INVENTORY --state-dir STATE --log-format plain EXTRA...`.
pub fn run_kbs(
    sub: &[&str],
    inventory: &Path,
    state: &Path,
    extra: &[&str],
) -> std::process::Output {
    kbs()
        .args(sub)
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .args(["--log-format", "plain"])
        .args(extra)
        .output()
        .expect("run kbs")
}

/// The stdout of a run that must have succeeded.
pub fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kbs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kbs apply INVENTORY --state-dir STATE EXTRA...`, which must succeed; its stdout.
pub fn apply(inventory: &Path, state: &Path, extra: &[&str]) -> String {
    ok(&run_kbs(&["apply"], inventory, state, extra))
}

/// Starts `kbs CMD INVENTORY --state-dir STATE`, waits for a progress line containing `marker`,
/// lets the step get under way for `settle`, then kills kbs as a crash would.
pub fn kill_at(cmd: &str, inventory: &Path, state: &Path, marker: &str, settle: Duration) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("kbs"))
        .arg(cmd)
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .args(["--log-format", "plain"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kbs");
    let stderr = child.stderr.take().expect("stderr");
    let seen = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains(marker));
    assert!(seen, "kbs {cmd} never reached `{marker}`");
    std::thread::sleep(settle);
    child.kill().expect("kill kbs");
    child.wait().expect("reap");
}
