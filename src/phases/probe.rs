//! Read-only questions to one host, asked together in one round trip, then the changes for the
//! answers that call for one. A converged host costs a phase one probe, not one per question:
//! on 20 hosts sharing a machine's cores, each round trip (sshd channel, sudo, a shell) counts.

use std::fmt::Write;

use crate::context::{Ctx, RunError};
use crate::ssh::{Exec, Session};

/// Separates the answers in the probe's output; no question prints it.
const MARK: &str = "--kbs-probe-answer--";

/// Something to keep true on a host: a probe that prints nothing when all is well, and the
/// action that puts it right.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub step: String,
    pub what: String,
    pub probe: String,
    pub action: String,
}

impl Task {
    pub fn new(
        step: &str,
        what: impl Into<String>,
        probe: impl Into<String>,
        action: impl Into<String>,
    ) -> Self {
        Self {
            step: step.into(),
            what: what.into(),
            probe: probe.into(),
            action: action.into(),
        }
    }
}

/// The questions for one host.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    script: String,
    count: usize,
}

/// Which answer is whose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Question(usize);

impl Probe {
    /// A shell snippet whose output is the answer.
    pub fn ask(&mut self, snippet: &str) -> Question {
        let _ = writeln!(self.script, "echo {MARK}\n{{\n{snippet}\n}} 2>/dev/null");
        self.count += 1;
        Question(self.count - 1)
    }

    /// The probe of each task.
    pub fn tasks(&mut self, tasks: &[Task]) -> Vec<Question> {
        tasks.iter().map(|t| self.ask(&t.probe)).collect()
    }

    /// Asks every question at once, as root.
    pub async fn run(self, s: &Session) -> Result<Answers, RunError> {
        if self.count == 0 {
            return Ok(Answers(Vec::new()));
        }
        let script = self.script + "true\n";
        let out = s
            .run(Exec::new("sh -s").sudo(true).stdin(script.as_bytes()))
            .await?;
        let text = out.stdout_lossy();
        let mut answers: Vec<String> = text
            .split(&format!("{MARK}\n"))
            .skip(1)
            .map(str::to_string)
            .collect();
        answers.resize(self.count, String::new());
        Ok(Answers(answers))
    }
}

pub(crate) struct Answers(Vec<String>);

impl Answers {
    pub fn get(&self, q: Question) -> &str {
        self.0.get(q.0).map_or("", String::as_str)
    }

    /// Whether the task asked by `q` has work to do (its probe printed something).
    pub fn needs_work(&self, q: Question) -> bool {
        !self.get(q).trim().is_empty()
    }
}

/// Runs `task`'s action as one change when its answer asks for it; returns whether it did.
pub(crate) async fn act(
    cx: &Ctx,
    s: &Session,
    host: &str,
    task: &Task,
    answers: &Answers,
    q: Question,
) -> Result<bool, RunError> {
    if !answers.needs_work(q) {
        return Ok(false);
    }
    cx.root_change(s, host, &task.step, task.what.clone(), &task.action)
        .await?;
    Ok(true)
}

/// Acts on each of `tasks` in order, by its answer.
pub(crate) async fn act_all(
    cx: &Ctx,
    s: &Session,
    host: &str,
    tasks: &[Task],
    answers: &Answers,
    questions: &[Question],
) -> Result<Vec<bool>, RunError> {
    let mut done = Vec::with_capacity(tasks.len());
    for (t, q) in tasks.iter().zip(questions) {
        done.push(act(cx, s, host, t, answers, *q).await?);
    }
    Ok(done)
}
