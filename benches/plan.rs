//! `kbs plan` on a generated 5,000-host inventory: parse, validate, plan and render every output
//! format. Prints the median wall time and the process's peak memory (target: < 0.5 s, < 100 MB).

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use kbs::inventory::Inventory;
use kbs::plan::{ClusterPlan, render_dot, render_human, render_json};

const HOSTS: usize = 5_000;
const RUNS: usize = 7;

fn inventory_text() -> String {
    let mut s = String::from(
        "[cluster]\nname = \"bench\"\nkubernetes_version = \"1.37.1\"\npod_subnet = \"10.244.0.0/16\"\n\
         service_subnet = \"10.96.0.0/12\"\n\n[endpoint]\nmode = \"vip\"\naddress = \"172.16.0.1\"\nport = 8443\n\n\
         [etcd]\nmembers = 5\n",
    );
    for i in 0..HOSTS {
        let _ = write!(
            s,
            "\n[[host]]\nname = \"node-{i}\"\naddress = \"10.{}.{}.{}\"\nreliability = {}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256,
            i % 7
        );
    }
    s
}

/// Peak resident memory of this process, from the kernel.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

fn main() {
    let dir = std::env::temp_dir().join(format!("kbs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("inventory.toml");
    std::fs::write(&path, inventory_text()).expect("write inventory");

    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let plan =
                ClusterPlan::new(Inventory::load(Path::new(&path)).expect("valid inventory"));
            let bytes =
                render_human(&plan).len() + render_json(&plan).len() + render_dot(&plan).len();
            std::hint::black_box(bytes);
            start.elapsed()
        })
        .collect();
    times.sort();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "plan {HOSTS} hosts ({} KiB inventory), {RUNS} runs",
        size / 1024
    );
    println!(
        "  median  {:>8.1} ms   (target < 500 ms)",
        times[RUNS / 2].as_secs_f64() * 1e3
    );
    println!("  min     {:>8.1} ms", times[0].as_secs_f64() * 1e3);
    println!("  peak RSS {:>7.1} MB   (target < 100 MB)", peak_rss_mb());
    let _ = std::fs::remove_dir_all(&dir);
}
