//! Run work on many hosts at once, with bounded concurrency; one host's failure does
//! not stop the others, and every host's outcome is kept.

use std::future::Future;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::error::SshError;
use super::exec::{Exec, Output, Stream};
use super::progress::{HostProgress, Progress};
use super::session::{Connector, Session};
use super::target::Target;

pub const DEFAULT_CONCURRENCY: usize = 64;

/// The outcome for one host, in the order the targets were given.
#[derive(Debug)]
pub struct HostResult<T> {
    pub host: String,
    pub result: Result<T, SshError>,
    pub duration: Duration,
}

/// Connects to each target (reusing the connector's sessions) and runs `f` on it,
/// at most `concurrency` hosts at a time. Unless `keep`, each host's connection is closed when
/// its work ends, so that no more than `concurrency` are open at once, whatever the host count.
pub async fn fan_out<T, F, Fut>(
    connector: &Connector,
    targets: &[Target],
    concurrency: usize,
    keep: bool,
    progress: &Progress,
    f: F,
) -> Vec<HostResult<T>>
where
    F: Fn(Session, Arc<HostProgress>) -> Fut,
    Fut: Future<Output = Result<T, SshError>>,
{
    // Each host's future is made only when its turn comes: a connecting future is kilobytes,
    // and 1,000 made up front would be most of kbs's memory. Unordered: a host that hangs until
    // its timeout must not hold the slots of the hosts after it (`buffered` keeps finished
    // results queued behind it, and starts nothing new).
    let f = &f;
    // (Indices, not `&Target`s, go through `map`: a closure taking a reference makes the
    // stream not `Send`, a known rustc limitation with higher-ranked lifetimes.)
    let mut done: Vec<(usize, HostResult<T>)> = futures::stream::iter(0..targets.len())
        .map(move |i| numbered(i, one_host(connector, &targets[i], keep, progress, f)))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

async fn numbered<F: Future>(i: usize, f: F) -> (usize, F::Output) {
    (i, f.await)
}

async fn one_host<T, F, Fut>(
    connector: &Connector,
    t: &Target,
    keep: bool,
    progress: &Progress,
    f: &F,
) -> HostResult<T>
where
    F: Fn(Session, Arc<HostProgress>) -> Fut,
    Fut: Future<Output = Result<T, SshError>>,
{
    let started = Instant::now();
    let hp = Arc::new(progress.host(&t.name, "connect"));
    let result = match connector.session(t).await {
        Ok(s) => f(s, hp.clone()).await,
        Err(e) => Err(e),
    };
    if !keep {
        connector.close(&t.name).await;
    }
    hp.finish(result.as_ref().err().map(ToString::to_string).as_deref());
    HostResult {
        host: t.name.clone(),
        result,
        duration: started.elapsed(),
    }
}

#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub sudo: bool,
    pub concurrency: usize,
    /// Per-command limit; `None` uses each target's `timeouts.command`.
    pub timeout: Option<Duration>,
    /// Keep each host's connection for later commands instead of closing it when done.
    pub keep_connections: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            sudo: false,
            concurrency: DEFAULT_CONCURRENCY,
            timeout: None,
            keep_connections: false,
        }
    }
}

/// `kbs exec`: runs one shell command everywhere. A non-zero exit is an `Ok(Output)`
/// (its output is worth printing); `print_report` counts it as a failure.
pub async fn exec_on_all(
    connector: &Connector,
    targets: &[Target],
    command: &str,
    opts: &ExecOptions,
    progress: &Progress,
) -> Vec<HostResult<Output>> {
    fan_out(
        connector,
        targets,
        opts.concurrency,
        opts.keep_connections,
        progress,
        |s, hp| async move {
            hp.step("exec");
            let show = |_: Stream, line: &str| hp.line(line);
            let mut e = Exec::new(command).sudo(opts.sudo).on_line(&show);
            if let Some(t) = opts.timeout {
                e = e.timeout(t);
            }
            let out = s.exec(e).await?;
            if !out.success() {
                hp.fail(&out.status.to_string());
            }
            Ok(out)
        },
    )
    .await
}

/// Prints output grouped per host, then one summary line. Returns the number of
/// failed hosts (error or non-zero exit), for the exit code.
pub fn print_report(results: &[HostResult<Output>], w: &mut dyn Write) -> io::Result<usize> {
    let mut failed = Vec::new();
    for r in results {
        let secs = r.duration.as_secs_f64();
        match &r.result {
            Ok(out) => {
                writeln!(w, "── {} ── {} ── {secs:.2}s", r.host, out.status)?;
                w.write_all(&out.stdout)?;
                ensure_newline(w, &out.stdout)?;
                w.write_all(&out.stderr)?;
                ensure_newline(w, &out.stderr)?;
                if !out.success() {
                    failed.push(r.host.as_str());
                }
            }
            Err(e) => {
                writeln!(w, "── {} ── FAILED ── {secs:.2}s", r.host)?;
                writeln!(w, "{e}")?;
                failed.push(r.host.as_str());
            }
        }
    }
    let ok = results.len() - failed.len();
    write!(
        w,
        "{} hosts: {ok} ok, {} failed",
        results.len(),
        failed.len()
    )?;
    if !failed.is_empty() {
        write!(w, " ({})", failed.join(", "))?;
    }
    writeln!(w)?;
    Ok(failed.len())
}

fn ensure_newline(w: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    match bytes.last() {
        Some(b'\n') | None => Ok(()),
        Some(_) => writeln!(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::ExitStatus;

    fn output(status: ExitStatus, stdout: &str) -> Output {
        Output {
            status,
            stdout: stdout.into(),
            stderr: Vec::new(),
            last_lines: Vec::new(),
        }
    }

    #[test]
    fn report_groups_output_and_counts_failures() {
        let results = vec![
            HostResult {
                host: "a".into(),
                result: Ok(output(ExitStatus::Code(0), "hi")),
                duration: Duration::from_millis(10),
            },
            HostResult {
                host: "b".into(),
                result: Ok(output(ExitStatus::Code(2), "bad\n")),
                duration: Duration::from_millis(20),
            },
            HostResult {
                host: "c".into(),
                result: Err(SshError::BadCommand {
                    host: "c".into(),
                    reason: "x".into(),
                }),
                duration: Duration::ZERO,
            },
        ];
        let mut buf = Vec::new();
        let failed = print_report(&results, &mut buf).expect("write");
        let text = String::from_utf8(buf).expect("utf8");
        assert_eq!(failed, 2);
        assert!(
            text.contains("── a ── exit status 0 ── 0.01s\nhi\n"),
            "{text}"
        );
        assert!(text.contains("── b ── exit status 2"), "{text}");
        assert!(text.contains("c: cannot run the command: x"), "{text}");
        assert!(text.ends_with("3 hosts: 1 ok, 2 failed (b, c)\n"), "{text}");
    }
}
