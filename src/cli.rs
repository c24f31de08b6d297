//! The command line: clap types only. Commands take these and do the work in `crate::commands`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kbs",
    version,
    about = "Turns 1, 2 or 3+ Linux hosts into a highly available Kubernetes cluster over SSH"
)]
pub struct Cli {
    /// More detail in logs (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show where everything goes and what apply will do, without touching any host.
    Plan {
        /// The inventory file (TOML).
        inventory: PathBuf,
        #[arg(long, short, value_enum, default_value_t = PlanOutput::Human)]
        output: PlanOutput,
    },
    /// Write, per host, the files apply would place there (configs, units, manifests; no certificates).
    Render {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// An empty or missing directory; files go to OUT/<host>/<absolute path on the host>.
        #[arg(long)]
        out: PathBuf,
        /// A directory of templates that replace the built-in ones of the same file name.
        #[arg(long)]
        templates: Option<PathBuf>,
    },
    /// Write a commented starter inventory for the given hosts.
    Init {
        /// Host addresses, comma-separated: --hosts 10.0.0.11,10.0.0.12,10.0.0.13
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// The cluster name.
        #[arg(long, default_value = "edge-1")]
        name: String,
        /// Write to this file instead of stdout (refuses to overwrite).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanOutput {
    Human,
    Json,
    Dot,
}
