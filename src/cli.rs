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
    /// Make, check and renew the cluster PKI in the local state directory.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the CAs, keys, certificates and kubeconfigs the inventory needs; keeps whatever is still valid.
    Generate {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The state directory [default: .kbs/<cluster name>/ next to the inventory].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// List every certificate with its expiry. Exit 1 if one expires within --warn-days, 2 if one
    /// has expired or does not chain to its CA.
    Check {
        /// The inventory file; only used to find the state directory.
        #[arg(required_unless_present = "state_dir")]
        inventory: Option<PathBuf>,
        /// The state directory [default: .kbs/<cluster name>/ next to the inventory].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Warn about certificates that expire within this many days.
        #[arg(long, default_value_t = 30)]
        warn_days: u32,
        #[arg(long, short, value_enum, default_value_t = CheckOutput::Table)]
        output: CheckOutput,
    },
    /// Re-issue every leaf certificate and kubeconfig with the same names (new keys); CAs stay.
    Renew {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The state directory [default: .kbs/<cluster name>/ next to the inventory].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckOutput {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanOutput {
    Human,
    Json,
    Dot,
}
