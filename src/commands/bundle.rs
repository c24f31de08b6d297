use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use miette::IntoDiagnostic;

use crate::artifacts::make;
use crate::inventory::{Artifacts, Inventory};

pub fn run(inventory: &Path, out: Option<&Path>) -> miette::Result<ExitCode> {
    let inv = Inventory::load(inventory)?;
    let dir = match (out, &inv.artifacts.source) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Artifacts::Bundle(dir)) => dir.clone(),
        (None, Artifacts::Online) => miette::bail!(miette::miette!(
            help = "pass --out DIR, or set [artifacts] bundle = \"DIR\" in the inventory (the directory apply will read)",
            "where should the bundle go? {} sets no [artifacts] bundle",
            inventory.display()
        )),
    };
    let runtime = tokio::runtime::Runtime::new().into_diagnostic()?;
    let made = runtime.block_on(make::make(&inv, &dir, std::io::stderr().is_terminal()))?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "bundle for Kubernetes {} in {}: {} files, {} images, {:.1} MiB; fetched {:.1} MiB in {:.1}s ({:.1} MiB/s)",
        inv.versions.kubernetes,
        made.dir.display(),
        made.files,
        made.images,
        mib(made.size),
        mib(made.downloaded),
        made.elapsed.as_secs_f64(),
        mib(made.downloaded) / made.elapsed.as_secs_f64().max(0.001),
    );
    Ok(ExitCode::SUCCESS)
}
