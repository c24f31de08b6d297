//! `kbs render`: the files apply would place on each host, written to a local directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};
use std::process::ExitCode;

use miette::{IntoDiagnostic, WrapErr, miette};

use crate::inventory::Inventory;
use crate::plan::ClusterPlan;
use crate::render::{RenderInputs, Templates, render_host_files};

pub fn run(inventory: &Path, out: &Path, templates: Option<&Path>) -> miette::Result<ExitCode> {
    let plan = ClusterPlan::new(Inventory::load(inventory)?);
    let templates = match templates {
        Some(dir) => Templates::with_overrides(dir)?,
        None => Templates::builtin()?,
    };
    let hosts = render_host_files(&plan, &templates, &RenderInputs::default())?;
    // Only the rendered tree may end up in OUT: stale files would pass for rendered ones.
    if out.exists() && fs::read_dir(out).into_diagnostic()?.next().is_some() {
        return Err(miette!(
            help = "remove it or pick another directory",
            "--out {} is not empty",
            out.display()
        ));
    }
    let mut placeholders = 0;
    for (host, files) in &hosts {
        for f in files {
            // Host paths are absolute; strip the root so they nest under OUT/<host>.
            let rel: std::path::PathBuf = f
                .path
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect();
            let dest = out.join(host).join(rel);
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("cannot create {}", dir.display()))?;
            }
            fs::write(&dest, &f.content)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write {}", dest.display()))?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(f.mode)).into_diagnostic()?;
            placeholders += usize::from(f.has_placeholder());
        }
    }
    let count: usize = hosts.values().map(Vec::len).sum();
    eprintln!(
        "wrote {count} files for {} hosts under {}",
        hosts.len(),
        out.display()
    );
    if !templates.overridden().is_empty() {
        eprintln!(
            "templates overridden: {}",
            templates.overridden().join(", ")
        );
    }
    if placeholders > 0 {
        eprintln!(
            "{placeholders} files hold ${{KBS_...}} placeholders (join token, CA hash, VIP interface, encryption key) that kbs apply fills in"
        );
    }
    Ok(ExitCode::SUCCESS)
}
