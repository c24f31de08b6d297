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
    /// Accept a Kubernetes version past its end of life (or one kbs has no facts for) instead of
    /// refusing the inventory; the plan says it is unsupported.
    #[arg(long, global = true)]
    pub allow_unsupported_version: bool,
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
    /// Download and check everything the inventory's hosts need (kubeadm, kubelet, kubectl,
    /// etcd, containerd, runc, CNI plugins, crictl, the container images, the CNI manifest) into
    /// a bundle directory with a bundle.toml of SHA-256 sums and digests, for an air-gapped site.
    /// Resumes an interrupted run; keeps nothing whose sum does not match.
    Bundle {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The bundle directory [default: the inventory's [artifacts] bundle].
        #[arg(long)]
        out: Option<PathBuf>,
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
    /// Build the cluster: preflight, PKI, artifacts, etcd, the front, kubeadm init and joins.
    /// Safe to run again: it changes only what differs, and resumes a run that was cut off.
    Apply {
        #[command(flatten)]
        run: RunArgs,
        /// Print, per host, what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Override one preflight check deliberately (repeatable): os, arch, systemd, cpus,
        /// memory, cgroup, swap, ports, clock-skew, etcd-fsync, vip-interface, reachability,
        /// cluster-identity.
        #[arg(long = "skip-check", value_name = "NAME")]
        skip_checks: Vec<String>,
        /// A directory of templates that replace the built-in ones of the same file name.
        #[arg(long)]
        templates: Option<PathBuf>,
    },
    /// Prepare and join hosts newly added to the inventory, touching no other host.
    AddNode {
        #[command(flatten)]
        run: RunArgs,
        /// The new hosts, as named in the inventory.
        #[arg(
            long = "host",
            value_name = "NAME",
            required = true,
            value_delimiter = ','
        )]
        hosts: Vec<String>,
        #[arg(long = "skip-check", value_name = "NAME")]
        skip_checks: Vec<String>,
    },
    /// Take a host out of the running cluster: drain its Node, remove its etcd members, tear the
    /// host down, delete its Node, update the front. Refuses what would leave etcd with no
    /// failure to spare unless --force. A dead host is removed without its teardown.
    RemoveNode {
        #[command(flatten)]
        run: RunArgs,
        /// The host to remove, as named in the inventory.
        #[arg(long = "host", value_name = "NAME")]
        host: String,
        /// Remove even when etcd is left tolerating no further failure, or draining fails.
        #[arg(long)]
        force: bool,
    },
    /// Upgrade the running cluster to the inventory's cluster.kubernetes_version (and to the
    /// bundle's etcd): etcd members one at a time, then the control planes one at a time, then
    /// workers in batches, each drained and uncordoned. Prints the plan first; refuses a
    /// downgrade or a skipped minor before touching any host; resumes a run that was cut off.
    Upgrade {
        #[command(flatten)]
        run: RunArgs,
        /// Print the plan (per host, from → to, in order) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// How many workers are drained and upgraded at the same time.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        max_unavailable: u16,
        /// Upgrade although objects are served through API versions the target removes.
        #[arg(long)]
        force: bool,
    },
    /// Tear the cluster down on every host (kubeadm reset, etcd, the front, kbs's files). The
    /// state dir (CAs, keys) and backups stay, so `kbs apply` can build the cluster again.
    Reset {
        #[command(flatten)]
        run: RunArgs,
        /// Do not ask for the cluster name (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Run a shell command on the cluster's hosts over SSH; output grouped per host.
    Exec {
        #[command(flatten)]
        run: RunArgs,
        /// Only these hosts (comma-separated names).
        #[arg(long, value_delimiter = ',', conflicts_with = "role")]
        hosts: Vec<String>,
        /// Only hosts with this role.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Run the command as root (sudo -n) when the SSH user is not root.
        #[arg(long)]
        sudo: bool,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// One table: hosts, etcd members, API servers, certificate expiry, last backup. Exit 0
    /// healthy, 1 degraded, 2 down (no etcd quorum or no API through the endpoint).
    Status {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, short, value_enum, default_value_t = CheckOutput::Table)]
        output: CheckOutput,
    },
    /// Take an etcd snapshot on a healthy member and store it here, checked, with a .sha256
    /// sidecar, under <state>/backups/ (the newest --keep are kept).
    Backup {
        #[command(flatten)]
        run: RunArgs,
        /// Write exactly this file (and FILE.sha256) instead; no retention.
        #[arg(long, conflicts_with = "fetch")]
        out: Option<PathBuf>,
        /// Keep the newest N backups [default: [backup] keep in the inventory, else 10].
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
        /// Encrypt to this age recipient (age1...); overrides [backup] recipient. The file ends
        /// in .db.age.
        #[arg(long, value_name = "RECIPIENT")]
        encrypt_to: Option<String>,
        /// Copy the snapshots the scheduled timer took on the etcd hosts into
        /// <state>/backups/<host>/ instead of taking one.
        #[arg(long)]
        fetch: bool,
    },
    /// Disaster recovery: replace etcd's data on every member with a snapshot (checked first),
    /// with the API servers stopped meanwhile. Without --yes only the checks run.
    Restore {
        #[command(flatten)]
        run: RunArgs,
        /// The snapshot (.db or .db.age), with its .sha256 sidecar next to it.
        snapshot: PathBuf,
        /// The age identity file for an encrypted snapshot (read from the file, never from the
        /// command line).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Really do it: stop the API servers and etcd everywhere and restore.
        #[arg(long)]
        yes: bool,
    },
    /// Audit the cluster's hosts against the production checklist (security defaults as
    /// deployed, file modes, etcd client auth, swap, time, SSH, certificates). Reads only.
    /// Exit 0 when every check passes, 1 with warnings, 2 with failures.
    Check {
        #[command(flatten)]
        run: RunArgs,
        /// Certificates expiring within this many days warn.
        #[arg(long, default_value_t = crate::inventory::PkiSettings::WARN_DAYS)]
        warn_days: u32,
        #[arg(long, short, value_enum, default_value_t = CheckOutput::Table)]
        output: CheckOutput,
    },
    /// Make, check and renew the cluster PKI in the local state directory.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// etcd maintenance on the running cluster.
    Etcd {
        #[command(subcommand)]
        command: EtcdCommand,
    },
    /// Print the shell completion script, e.g. `kbs completion bash > /etc/bash_completion.d/kbs`.
    Completion { shell: clap_complete::Shell },
    /// Print the man page kbs(1), or with --out write it and one page per subcommand there.
    Man {
        /// A directory for kbs.1 and kbs-SUBCOMMAND.1.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Give every member's free database pages back to the disk, one member at a time (followers
    /// first, the leader last, all healthy before each), then disarm a NOSPACE alarm. Kubernetes
    /// compacts etcd but never defragments it.
    Defrag {
        #[command(flatten)]
        run: RunArgs,
        /// Say what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
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
        #[arg(long, default_value_t = crate::inventory::PkiSettings::WARN_DAYS)]
        warn_days: u32,
        #[arg(long, short, value_enum, default_value_t = CheckOutput::Table)]
        output: CheckOutput,
        /// Instead of the files, check what every etcd member and API server serves (TLS
        /// handshake from here), and whether it is the state dir's certificate.
        #[arg(long, requires = "inventory")]
        hosts: bool,
    },
    /// Re-issue every leaf certificate and kubeconfig (new keys; CAs stay), upload them and
    /// restart etcd members and API servers one at a time so the API stays up. Works over SSH,
    /// also when the certificates have already expired.
    Renew {
        #[command(flatten)]
        run: RunArgs,
        /// Only re-issue them in the state directory; touch no host.
        #[arg(long)]
        local: bool,
    },
}

/// What every command that talks to hosts takes.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The inventory file (TOML).
    pub inventory: PathBuf,
    /// The state directory [default: .kbs/<cluster name>/ next to the inventory].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Record the host keys of hosts never seen before (in the state dir's known_hosts). A
    /// changed key is refused regardless.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// How progress is shown: bars on a terminal, plain lines, or one JSON object per event.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// How many hosts are worked on at the same time (connections opened, commands run).
    #[arg(long, default_value_t = crate::ssh::DEFAULT_CONCURRENCY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    ControlPlane,
    Etcd,
    Worker,
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
