use std::path::Path;
use std::process::ExitCode;

use crate::cli::PlanOutput;
use crate::inventory::Inventory;
use crate::plan::{ClusterPlan, render_dot, render_human, render_json};

pub fn run(path: &Path, output: PlanOutput) -> miette::Result<ExitCode> {
    let plan = ClusterPlan::new(Inventory::load(path)?);
    let text = match output {
        PlanOutput::Human => render_human(&plan),
        PlanOutput::Json => render_json(&plan),
        PlanOutput::Dot => render_dot(&plan),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
