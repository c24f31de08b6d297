//! Per-host progress: a spinner per host on a terminal (at most `MAX_BARS`, then one summary
//! line for the rest), plain lines otherwise, or a JSON event stream (one object per line:
//! host, step, status, duration_ms).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    Auto,
    Bars,
    Plain,
    /// JSON events on stderr.
    Json,
    Quiet,
}

/// Hosts shown one spinner each: past this many, at most this many spinners run at once, a
/// finished one makes room, and one summary line counts the rest, so that 1,000 hosts make a
/// screen of output, not thousands of lines redrawn.
const MAX_BARS: usize = 12;

struct Bars {
    multi: MultiProgress,
    summary: OnceLock<ProgressBar>,
    hosts: Mutex<std::collections::HashSet<String>>,
    /// Spinners running now.
    live: AtomicUsize,
    started: AtomicUsize,
    finished: AtomicUsize,
    failed: AtomicUsize,
}

impl Bars {
    fn new(target: ProgressDrawTarget) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(target),
            summary: OnceLock::new(),
            hosts: Mutex::default(),
            live: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    fn crowded(&self) -> bool {
        self.hosts.lock().map_or(true, |h| h.len() > MAX_BARS)
    }

    /// A spinner for a host's step, or `None` when the run is crowded and `MAX_BARS` run already.
    fn start(&self, host: &str, step: &str) -> Option<ProgressBar> {
        self.started.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.insert(host.to_string());
        }
        let crowded = self.crowded();
        let bar = self
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (!crowded || n < MAX_BARS).then_some(n + 1)
            })
            .is_ok()
            .then(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(spinner_style());
                bar.set_prefix(host.to_string());
                bar.set_message(step.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
        self.show_summary(crowded);
        bar
    }

    /// A step's end: while every host fits, its spinner stays with ✓/✗; past that it is cleared
    /// to make room, and only a failure is kept, as a line above.
    fn finish(&self, bar: Option<&ProgressBar>, kept: &str, failed: Option<&str>) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if failed.is_some() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if bar.is_some() {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
        let crowded = self.crowded();
        match bar {
            Some(bar) if !crowded => bar.finish_with_message(kept.to_string()),
            bar => {
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                    self.multi.remove(bar);
                }
                if let Some(line) = failed {
                    self.multi.println(line).ok();
                }
            }
        }
        self.show_summary(crowded);
    }

    fn show_summary(&self, crowded: bool) {
        if !crowded {
            return;
        }
        let summary = self.summary.get_or_init(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let (started, finished, failed) = (
            self.started.load(Ordering::Relaxed),
            self.finished.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        let hosts = self.hosts.lock().map_or(0, |h| h.len());
        summary.set_message(format!(
            "{hosts} hosts: {} steps running, {} done, {failed} failed",
            started.saturating_sub(finished),
            finished.saturating_sub(failed),
        ));
    }
}

enum Sink {
    Bars(Bars),
    Plain,
    Json(Mutex<Box<dyn Write + Send>>),
    Quiet,
}

/// Shared by all host tasks of a run. Cheap to clone.
#[derive(Clone)]
pub struct Progress(Arc<Sink>);

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        let sink = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => {
                Sink::Bars(Bars::new(ProgressDrawTarget::stderr()))
            }
            ProgressMode::Auto | ProgressMode::Plain => Sink::Plain,
            ProgressMode::Bars => Sink::Bars(Bars::new(ProgressDrawTarget::stderr())),
            ProgressMode::Json => Sink::Json(Mutex::new(Box::new(std::io::stderr()))),
            ProgressMode::Quiet => Sink::Quiet,
        };
        Self(Arc::new(sink))
    }

    /// Whether progress is drawn as bars on a terminal (where download bars may go too).
    pub fn is_interactive(&self) -> bool {
        matches!(*self.0, Sink::Bars(_))
    }

    /// JSON events to any writer (a run log file, a test buffer).
    pub fn json_to(w: Box<dyn Write + Send>) -> Self {
        Self(Arc::new(Sink::Json(Mutex::new(w))))
    }

    /// Starts tracking `host` at `step`.
    pub fn host(&self, host: &str, step: &str) -> HostProgress {
        let bar = match &*self.0 {
            Sink::Bars(b) => b.start(host, step),
            _ => None,
        };
        let hp = HostProgress {
            sink: self.clone(),
            host: host.to_string(),
            bar,
            state: Mutex::new(StepState {
                step: step.to_string(),
                started: Instant::now(),
                failure: None,
            }),
        };
        hp.event(step, "started", None, None);
        hp
    }

    /// Runs `f` with bars hidden, e.g. to print a log line or ask a question.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &*self.0 {
            Sink::Bars(b) => b.multi.suspend(f),
            _ => f(),
        }
    }
}

/// `tracing_subscriber::fmt().with_writer(progress.clone())`: log lines go to stderr
/// above the bars instead of through them.
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Progress {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            progress: self.clone(),
            buf: Vec::new(),
        }
    }
}

/// One formatted log event, written out in one piece when dropped.
pub struct LogLine {
    progress: Progress,
    buf: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.progress
            .suspend(|| std::io::stderr().lock().write_all(&buf).ok());
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

struct StepState {
    step: String,
    started: Instant,
    failure: Option<String>,
}

/// Progress of one host. Methods take `&self` so output callbacks can use it.
pub struct HostProgress {
    sink: Progress,
    host: String,
    bar: Option<ProgressBar>,
    state: Mutex<StepState>,
}

impl HostProgress {
    /// Ends the current step successfully and starts the next one.
    pub fn step(&self, step: &str) {
        let previous = self.with_state(|s| {
            let prev = (s.step.clone(), s.started.elapsed());
            s.step = step.to_string();
            s.started = Instant::now();
            prev
        });
        if let Some((prev, took)) = previous {
            self.event(&prev, "ok", Some(took), None);
        }
        if let Some(bar) = &self.bar {
            bar.set_message(step.to_string());
        }
        self.event(step, "started", None, None);
    }

    /// Shows the latest output line next to the step.
    pub fn line(&self, line: &str) {
        tracing::debug!(host = %self.host, "{line}");
        if let Some(bar) = &self.bar {
            let step = self.with_state(|s| s.step.clone()).unwrap_or_default();
            bar.set_message(format!("{step}: {line}"));
        }
    }

    /// Marks the current step failed even though no error was returned (non-zero exit).
    pub fn fail(&self, why: &str) {
        self.with_state(|s| s.failure = Some(why.to_string()));
    }

    /// Reports the end of the host's work.
    pub fn finish(&self, error: Option<&str>) {
        let Some((step, took, failure)) =
            self.with_state(|s| (s.step.clone(), s.started.elapsed(), s.failure.take()))
        else {
            return;
        };
        let failure = error.map(str::to_string).or(failure);
        let status = if failure.is_some() { "failed" } else { "ok" };
        self.event(&step, status, Some(took), failure.as_deref());
        if let Sink::Bars(b) = &*self.sink.0 {
            let mark = if failure.is_some() { "✗" } else { "✓" };
            let kept = format!("{mark} {step} ({:.1}s)", took.as_secs_f64());
            let failed = failure.map(|why| format!("✗ {}: {step}: {why}", self.host));
            b.finish(self.bar.as_ref(), &kept, failed.as_deref());
        }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut StepState) -> R) -> Option<R> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    fn event(&self, step: &str, status: &str, took: Option<Duration>, error: Option<&str>) {
        let ms = took.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match &*self.sink.0 {
            Sink::Json(w) => {
                let mut ev =
                    serde_json::json!({ "host": self.host, "step": step, "status": status });
                if let Some(ms) = ms {
                    ev["duration_ms"] = ms.into();
                }
                if let Some(e) = error {
                    ev["error"] = e.into();
                }
                if let Ok(mut w) = w.lock() {
                    // A broken event sink must not fail the run.
                    writeln!(w, "{ev}").and_then(|()| w.flush()).ok();
                }
            }
            Sink::Plain => {
                let took = ms.map(|ms| format!(" ({ms} ms)")).unwrap_or_default();
                let error = error.map(|e| format!(": {e}")).unwrap_or_default();
                eprintln!("{}: {step} {status}{took}{error}", self.host);
            }
            Sink::Bars(_) | Sink::Quiet => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_events_have_host_step_status_duration() {
        let buf = Buf::default();
        let p = Progress::json_to(Box::new(buf.clone()));
        let h = p.host("node-1", "connect");
        h.step("exec");
        h.line("hello");
        h.finish(Some("boom"));
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let statuses: Vec<_> = events
            .iter()
            .map(|e| (e["step"].clone(), e["status"].clone()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("connect".into(), "started".into()),
                ("connect".into(), "ok".into()),
                ("exec".into(), "started".into()),
                ("exec".into(), "failed".into()),
            ]
        );
        assert!(events[3]["duration_ms"].is_u64());
        assert_eq!(events[3]["error"], "boom");
        assert_eq!(events[3]["host"], "node-1");
    }

    #[test]
    fn bars_stay_bounded_whatever_the_host_count() {
        let p = Progress(Arc::new(Sink::Bars(
            Bars::new(ProgressDrawTarget::hidden()),
        )));
        let Sink::Bars(b) = &*p.0 else { unreachable!() };
        // A few hosts: a spinner for every step, kept when done.
        for step in ["facts", "prepare", "etcd", "front", "kubeadm"] {
            for h in ["a", "b", "c"] {
                let hp = p.host(h, step);
                assert!(hp.bar.is_some());
                hp.finish(None);
            }
        }
        assert!(b.summary.get().is_none());
        // 1,000 hosts: never more than MAX_BARS running spinners, and a summary line.
        let hosts: Vec<HostProgress> = (0..1000)
            .map(|i| p.host(&format!("h{i}"), "connect"))
            .collect();
        assert!(b.live.load(Ordering::Relaxed) <= MAX_BARS);
        for (i, h) in hosts.iter().enumerate() {
            h.finish((i % 100 == 0).then_some("unreachable"));
            assert!(b.live.load(Ordering::Relaxed) <= MAX_BARS);
        }
        assert_eq!(b.live.load(Ordering::Relaxed), 0);
        assert_eq!(b.failed.load(Ordering::Relaxed), 10);
        assert!(b.summary.get().is_some());
    }
}
