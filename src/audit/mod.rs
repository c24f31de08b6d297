//! `kbs check`: audits a cluster's hosts against the production checklist (docs/security.md,
//! "kbs check"). It only reads: one facts script and one probe script per host over SSH (both
//! read-only), two credential-less requests to each etcd member's client port from this machine,
//! GET requests for the namespace baselines through the endpoint, and the state dir's PKI. The judgement is pure (`rules`), tested on captured output.

pub mod probe;
pub mod rules;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use crate::context::RunError;
use crate::facts::{Facts, GATHER_SCRIPT};
use crate::phases::{Check, CheckStatus};
use crate::plan::{ClusterPlan, EtcdMember, PlannedHost};
use crate::ssh::{ConnectOptions, Connector, Exec, KnownHosts, Progress, Target};
use crate::state::StateDir;
use probe::Sections;
use rules::{HostInput, MemberProbe, ProbeOutcome};

#[derive(Debug, Clone)]
pub struct Options {
    /// Certificates expiring within this many days warn.
    pub warn_days: u32,
    pub accept_new_host_keys: bool,
    /// How many hosts are read at once (`--concurrency`).
    pub concurrency: usize,
}

/// Every check of every host, in plan order (then `local`), with the score.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub passed: usize,
    pub warned: usize,
    pub failed: usize,
    pub total: usize,
    pub checks: Vec<Check>,
}

impl AuditReport {
    fn new(checks: Vec<Check>) -> Self {
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        Self {
            passed: count(CheckStatus::Pass),
            warned: count(CheckStatus::Warn),
            failed: count(CheckStatus::Fail),
            total: checks.len(),
            checks,
        }
    }

    /// 0 all passed, 1 warnings, 2 failures (as `kbs certs check`).
    pub fn exit_code(&self) -> u8 {
        if self.failed > 0 {
            2
        } else if self.warned > 0 {
            1
        } else {
            0
        }
    }
}

/// What one host gave back, or why it could not be read.
struct HostRead {
    facts: Option<Facts>,
    sections: Sections,
    error: Option<String>,
}

async fn read_host(
    connector: &Connector,
    target: &Target,
    plan: &ClusterPlan,
    host: &PlannedHost,
) -> HostRead {
    let r: Result<(Facts, Sections), String> = async {
        let s = connector.session(target).await.map_err(|e| e.to_string())?;
        let before = crate::facts::now_ns();
        let out = s
            .run(Exec::new(GATHER_SCRIPT).sudo(true))
            .await
            .map_err(|e| e.to_string())?;
        let mid = before + (crate::facts::now_ns() - before) / 2;
        let facts = Facts::parse(&out.stdout_lossy(), mid).map_err(|e| e.to_string())?;
        let script = probe::script(plan, host);
        let out = s
            .run(
                Exec::new("sh -s")
                    .sudo(true)
                    .stdin(script.as_bytes())
                    .timeout(Duration::from_secs(60)),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok((facts, Sections::parse(&out.stdout_lossy())))
    }
    .await;
    match r {
        Ok((facts, sections)) => HostRead {
            facts: Some(facts),
            sections,
            error: None,
        },
        Err(e) => HostRead {
            facts: None,
            sections: Sections::default(),
            error: Some(e),
        },
    }
}

/// One request without credentials; any 2xx answer is data.
async fn request(client: &reqwest::Client, url: &str) -> ProbeOutcome {
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => {
            let body = r.text().await.unwrap_or_default();
            ProbeOutcome::Answered(format!(
                "{url}: {}",
                body.chars().take(80).collect::<String>()
            ))
        }
        Ok(r) => ProbeOutcome::Refused(format!("{url}: HTTP {}", r.status())),
        Err(e) => ProbeOutcome::Refused(format!("{url}: {e}")),
    }
}

/// From this machine: the member's client port over HTTPS without a client certificate, and in
/// plain HTTP. Either answering means etcd gives data to anyone who reaches the port.
async fn probe_member(m: &EtcdMember) -> MemberProbe {
    let addr = std::net::SocketAddr::new(m.address, m.client_port);
    let reach =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await;
    if !matches!(reach, Ok(Ok(_))) {
        let why = ProbeOutcome::Unreachable(format!("{addr} not reachable from here"));
        return MemberProbe {
            member: m.name.clone(),
            without_cert: why.clone(),
            plain_http: why,
        };
    }
    // No identity, and the server certificate is not verified: the question is only whether the
    // member hands out anything without a client certificate; nothing is sent but a GET.
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build();
    let Ok(client) = client else {
        let why = ProbeOutcome::Unreachable("cannot build an HTTP client".into());
        return MemberProbe {
            member: m.name.clone(),
            without_cert: why.clone(),
            plain_http: why,
        };
    };
    let host = crate::inventory::HostName::Ip(m.address);
    MemberProbe {
        member: m.name.clone(),
        without_cert: request(
            &client,
            &format!("https://{host}:{}/version", m.client_port),
        )
        .await,
        plain_http: request(&client, &format!("http://{host}:{}/version", m.client_port)).await,
    }
}

/// Runs the audit over every host of the plan.
pub async fn run(
    plan: &ClusterPlan,
    state: &StateDir,
    opts: &Options,
    progress: &Progress,
) -> Result<AuditReport, RunError> {
    let now = OffsetDateTime::now_utc();
    let connector = Connector::new(ConnectOptions::new(KnownHosts::new(
        state.root(),
        opts.accept_new_host_keys,
    )));
    let targets = crate::context::connect::targets(&plan.inventory);
    let reads: BTreeMap<String, HostRead> = futures::stream::iter(plan.hosts.iter())
        .map(|h| {
            let connector = &connector;
            let targets = &targets;
            async move {
                let hp = progress.host(&h.name, "check");
                let read = match targets.get(&h.name) {
                    Some(t) => read_host(connector, t, plan, h).await,
                    None => HostRead {
                        facts: None,
                        sections: Sections::default(),
                        error: Some("not in the inventory".into()),
                    },
                };
                hp.finish(read.error.as_deref());
                (h.name.clone(), read)
            }
        })
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    connector.disconnect_all().await;
    let probes: Vec<MemberProbe> = futures::stream::iter(plan.etcd.iter())
        .map(probe_member)
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;

    let expected = crate::pki::host_files(plan, state);
    let mut checks = Vec::new();
    for h in &plan.hosts {
        let Some(read) = reads.get(&h.name) else {
            continue;
        };
        if let Some(e) = &read.error {
            checks.push(Check {
                host: h.name.clone(),
                name: "reachable",
                status: CheckStatus::Fail,
                found: e.clone(),
                fix: "kbs check reads every host over SSH with sudo: fix the connection and run it again".into(),
            });
            continue;
        }
        let mine: Vec<MemberProbe> = probes
            .iter()
            .filter(|p| {
                plan.etcd
                    .iter()
                    .any(|m| m.name == p.member && m.host == h.name)
            })
            .cloned()
            .collect();
        let files = expected
            .iter()
            .find(|f| f.host == h.name)
            .map(|f| f.files.clone())
            .unwrap_or_default();
        let user = plan
            .inventory
            .host(&h.name)
            .map_or("root", |i| i.ssh.user.as_str());
        checks.extend(rules::evaluate(&HostInput {
            plan,
            host: h,
            ssh_user: user,
            facts: read.facts.as_ref(),
            sections: &read.sections,
            etcd_probes: &mine,
            expected_files: &files,
            warn_days: opts.warn_days,
            now,
        }));
    }
    let local = crate::pki::check(state, opts.warn_days, now);
    checks.push(rules::local_certs(
        local.as_ref().map_err(|e| e.to_string()),
    ));
    checks.extend(baselines(plan, state).await);
    Ok(AuditReport::new(checks))
}

/// The inventory's namespace baselines as the API holds them, read from this machine through
/// the endpoint with the state dir's admin kubeconfig (GET requests only).
async fn baselines(plan: &ClusterPlan, state: &StateDir) -> Vec<Check> {
    let namespaces = &plan.inventory.security.namespaces;
    if namespaces.is_empty() {
        return Vec::new();
    }
    use crate::render::{BASELINE_LIMITS, BASELINE_POLICY, BASELINE_QUOTA};
    let client = crate::context::api::admin_client(state);
    let mut checks = Vec::new();
    async fn get<T: serde::de::DeserializeOwned>(
        api: &Result<crate::context::api::Api, String>,
        path: String,
    ) -> rules::Fetched<T> {
        match api {
            Ok(api) => api.get(&path).await,
            Err(e) => Err(e.clone()),
        }
    }
    for ns in namespaces {
        let n = &ns.name;
        let read = rules::BaselineRead {
            namespace: get(&client, format!("/api/v1/namespaces/{n}")).await,
            quota: get(
                &client,
                format!("/api/v1/namespaces/{n}/resourcequotas/{BASELINE_QUOTA}"),
            )
            .await,
            limits: get(
                &client,
                format!("/api/v1/namespaces/{n}/limitranges/{BASELINE_LIMITS}"),
            )
            .await,
            policy: get(
                &client,
                format!(
                    "/apis/networking.k8s.io/v1/namespaces/{n}/networkpolicies/{BASELINE_POLICY}"
                ),
            )
            .await,
        };
        checks.push(rules::namespace_baseline(ns, &read));
    }
    checks
}
