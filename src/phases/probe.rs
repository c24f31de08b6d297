//! Read-only questions to one host, asked together in one round trip, then the changes for the
//! answers that call for one. A converged host costs a phase one probe, not one per question:
//! on 20 hosts sharing a machine's cores, each round trip (sshd channel, sudo, a shell) counts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::files::Desired;
use super::{ApplyError, Ctx};
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

    /// The content hash, mode and owner of each file that exists (see `file_states`).
    pub fn files(&mut self, files: &[Desired]) -> Question {
        let paths: Vec<String> = files.iter().map(|f| quote(&f.path)).collect();
        // Two processes for all the files, whatever their number.
        self.ask(&format!(
            "set --; for p in {}; do [ -f \"$p\" ] && set -- \"$@\" \"$p\"; done\n\
             [ $# -eq 0 ] || {{ sha256sum -- \"$@\"; stat -c '%a %U %n' -- \"$@\"; }}",
            paths.join(" ")
        ))
    }

    /// Asks every question at once, as root.
    pub async fn run(self, s: &Session) -> Result<Answers, ApplyError> {
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

/// What `Probe::files` found: "SHA256 MODE OWNER" per existing file.
pub(crate) fn file_states(answer: &str) -> BTreeMap<PathBuf, String> {
    let (mut sums, mut attrs) = (BTreeMap::new(), BTreeMap::new());
    for line in answer.lines() {
        match line.split_once("  ") {
            Some((sum, path)) if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) => {
                sums.insert(PathBuf::from(path), sum.to_string());
            }
            _ => {
                let mut it = line.splitn(3, ' ');
                if let (Some(mode), Some(owner), Some(path)) = (it.next(), it.next(), it.next()) {
                    attrs.insert(PathBuf::from(path), format!("{mode} {owner}"));
                }
            }
        }
    }
    sums.into_iter()
        .filter_map(|(p, sum)| {
            let a = attrs.remove(&p)?;
            Some((p, format!("{sum} {a}")))
        })
        .collect()
}

/// Runs `task`'s action as one change when its answer asks for it; returns whether it did.
pub(crate) async fn act(
    cx: &Ctx,
    s: &Session,
    host: &str,
    task: &Task,
    answers: &Answers,
    q: Question,
) -> Result<bool, ApplyError> {
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
) -> Result<Vec<bool>, ApplyError> {
    let mut done = Vec::with_capacity(tasks.len());
    for (t, q) in tasks.iter().zip(questions) {
        done.push(act(cx, s, host, t, answers, *q).await?);
    }
    Ok(done)
}

pub(crate) fn quote(p: &Path) -> String {
    shlex::try_quote(&p.to_string_lossy())
        .map(|q| q.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_states_pair_sums_with_modes() {
        let sum = "a".repeat(64);
        let answer = format!(
            "{sum}  /etc/a b.conf\n{sum}  /etc/c\n644 root /etc/a b.conf\n600 etcd /etc/c\n"
        );
        let states = file_states(&answer);
        assert_eq!(
            states[Path::new("/etc/a b.conf")],
            format!("{sum} 644 root")
        );
        assert_eq!(states[Path::new("/etc/c")], format!("{sum} 600 etcd"));
        assert!(file_states("").is_empty());
    }
}
