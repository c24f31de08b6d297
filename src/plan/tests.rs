//! Topology rules on typed inventories; the CLI tests in tests/it/plan.rs cover the examples.

use std::path::Path;

use super::*;

fn inventory(hosts: &str, extra: &str) -> Inventory {
    let text = format!(
        "[cluster]\nname = \"t\"\nkubernetes_version = \"1.37.1\"\npod_subnet = \"10.244.0.0/16\"\nservice_subnet = \"10.96.0.0/12\"\n\
         [endpoint]\nmode = \"vip\"\naddress = \"192.0.2.100\"\nport = 8443\n{extra}\n{hosts}"
    );
    match Inventory::parse(Path::new("t.toml"), &text) {
        Ok(i) => i,
        Err(e) => panic!("{e:?}"),
    }
}

fn hosts(n: usize) -> String {
    (1..=n)
        .map(|i| format!("[[host]]\nname = \"n{i}\"\naddress = \"192.0.2.{i}\"\n"))
        .collect()
}

#[test]
fn one_host_gets_one_member_per_listed_data_dir() {
    let inv = inventory(
        "[[host]]\nname = \"n1\"\naddress = \"192.0.2.1\"\netcd_data_dirs = [\"/a\", \"/b\", \"/c\"]\n",
        "",
    );
    let plan = ClusterPlan::new(inv);
    let ports: Vec<u16> = plan.etcd.iter().map(|m| m.client_port).collect();
    assert_eq!(ports, [2379, 12379, 22379]);
    let dirs: Vec<&Path> = plan.etcd.iter().map(|m| m.data_dir.as_path()).collect();
    assert_eq!(dirs, [Path::new("/a"), Path::new("/b"), Path::new("/c")]);
    // Three members on one host survive a member, not the host.
    assert_eq!(plan.tolerance.host_failures_tolerated, 0);
    assert_eq!(plan.tolerance.fatal_host_losses, ["n1"]);
}

#[test]
fn reliability_decides_placement_on_many_hosts() {
    let mut h = hosts(5);
    h = h.replace(
        "address = \"192.0.2.5\"",
        "address = \"192.0.2.5\"\nreliability = 9",
    );
    let plan = ClusterPlan::new(inventory(&h, ""));
    let etcd_hosts: Vec<&str> = plan.etcd.iter().map(|m| m.host.as_str()).collect();
    assert_eq!(
        etcd_hosts,
        ["n1", "n2", "n5"],
        "members listed in inventory order, n5 chosen first"
    );
    let cps: Vec<&str> = plan.control_planes().map(|h| h.name.as_str()).collect();
    assert_eq!(cps, ["n1", "n2", "n5"]);
    let workers: Vec<&str> = plan.workers().map(|h| h.name.as_str()).collect();
    assert_eq!(workers, ["n3", "n4"]);
}

#[test]
fn members_deal_round_robin_before_doubling_up() {
    let h = hosts(3).replace(
        "address = \"192.0.2.1\"",
        "address = \"192.0.2.1\"\netcd_data_dirs = [\"/a\", \"/b\", \"/c\"]",
    );
    let plan = ClusterPlan::new(inventory(&h, "[etcd]\nmembers = 5\n"));
    let per_host: Vec<usize> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| plan.etcd.iter().filter(|m| m.host == *n).count())
        .collect();
    assert_eq!(per_host, [3, 1, 1]);
    // Losing n1 takes 3 of 5 members: fatal. Nothing else is.
    assert_eq!(plan.tolerance.fatal_host_losses, ["n1"]);
    assert_eq!(plan.tolerance.host_failures_tolerated, 0);
}

#[test]
fn explicit_roles_leave_unnamed_hosts_as_workers() {
    let h = hosts(4).replace(
        "address = \"192.0.2.1\"",
        "address = \"192.0.2.1\"\nroles = [\"control-plane\", \"etcd\"]",
    );
    let plan = ClusterPlan::new(inventory(&h, ""));
    assert_eq!(plan.hosts[0].roles, [Role::ControlPlane, Role::Etcd]);
    assert!(plan.hosts[1..].iter().all(|h| h.roles == [Role::Worker]));
    assert_eq!(plan.etcd.len(), 1);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("Only one etcd member"))
    );
}

#[test]
fn thousands_of_hosts_plan_with_three_control_planes() {
    let plan = ClusterPlan::new(inventory(
        &(1..=2000)
            .map(|i| {
                format!(
                    "[[host]]\nname = \"n{i}\"\naddress = \"10.1.{}.{}\"\n",
                    i / 250,
                    i % 250 + 1
                )
            })
            .collect::<String>(),
        "",
    ));
    assert_eq!(plan.control_planes().count(), 3);
    assert_eq!(plan.etcd.len(), 3);
    assert_eq!(plan.workers().count(), 1997);
    assert_eq!(plan.tolerance.host_failures_tolerated, 1);
}
