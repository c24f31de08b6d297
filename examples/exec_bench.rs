//! Times `exec_on_all` over many hosts; driven by benches/exec.sh.
//!
//! exec_bench --user kbs --key id_ed25519 --known-hosts FILE [--runs 10] [--cmd true] IP...
//!
//! Prints two medians: `cold` (connect + authenticate + run, as one `kbs exec`) and
//! `warm` (run on already open sessions, as each further command of `kbs apply`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use kbs::ssh::{
    ConnectOptions, Connector, ExecOptions, KnownHosts, Progress, ProgressMode, Target, exec_on_all,
};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    user: String,
    #[arg(long)]
    key: PathBuf,
    /// OpenSSH known_hosts file with every host's key (read only).
    #[arg(long)]
    known_hosts: PathBuf,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[arg(long, default_value = "true")]
    cmd: String,
    hosts: Vec<IpAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let targets: Vec<Target> = args
        .hosts
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let mut t = Target::new(format!("node-{}", i + 1), *ip, args.user.clone());
            t.identity_file = Some(args.key.clone());
            t
        })
        .collect();
    let state = tempfile::tempdir().context("temp state dir")?;
    let opts = || {
        Connector::new(ConnectOptions {
            known_hosts: KnownHosts::with_files(
                Some(args.known_hosts.clone()),
                state.path().join("known_hosts"),
                false,
            ),
            agent: None,
        })
    };
    let quiet = Progress::new(ProgressMode::Quiet);
    // Warm runs reuse the sessions of the run before.
    let exec = ExecOptions {
        keep_connections: true,
        ..Default::default()
    };

    let mut cold = Vec::new();
    for _ in 0..args.runs {
        let c = opts();
        let t = Instant::now();
        check(&exec_on_all(&c, &targets, &args.cmd, &exec, &quiet).await)?;
        cold.push(t.elapsed());
        c.disconnect_all().await;
    }
    let c = opts();
    check(&exec_on_all(&c, &targets, &args.cmd, &exec, &quiet).await)?;
    let mut warm = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        check(&exec_on_all(&c, &targets, &args.cmd, &exec, &quiet).await)?;
        warm.push(t.elapsed());
    }
    println!("cold {:.1}", median_ms(cold));
    println!("warm {:.1}", median_ms(warm));
    Ok(())
}

fn check(results: &[kbs::ssh::HostResult<kbs::ssh::Output>]) -> anyhow::Result<()> {
    for r in results {
        match &r.result {
            Ok(o) if o.success() => {}
            Ok(o) => bail!("{}: {}", r.host, o.status),
            Err(e) => bail!("{e}"),
        }
    }
    Ok(())
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
