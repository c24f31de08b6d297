//! What a remote command is (`Exec`) and what it gave back (`Output`).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// Lines kept for error messages and progress.
pub const TAIL_LINES: usize = 10;

/// One remote command. Built with `Exec::new(cmd)` and the chained setters.
pub struct Exec<'a> {
    pub(crate) command: &'a str,
    pub(crate) sudo: bool,
    pub(crate) stdin: Option<&'a [u8]>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_line: Option<&'a LineFn<'a>>,
    pub(crate) stdout_to: Option<&'a ChunkFn<'a>>,
}

/// Called for every complete output line, in arrival order.
pub type LineFn<'a> = dyn Fn(Stream, &str) + Send + Sync + 'a;

/// Called for every chunk of stdout as it arrives, instead of keeping it in `Output`.
pub type ChunkFn<'a> = dyn Fn(&[u8]) + Send + Sync + 'a;

impl<'a> Exec<'a> {
    /// A shell command line, run by the login shell of the target user.
    pub fn new(command: &'a str) -> Self {
        Self {
            command,
            sudo: false,
            stdin: None,
            timeout: None,
            on_line: None,
            stdout_to: None,
        }
    }

    /// Run as root: `sudo -n -- sh -c '<command>'` unless the user is root already.
    pub fn sudo(mut self, yes: bool) -> Self {
        self.sudo = yes;
        self
    }

    /// Bytes for the command's stdin: the way to pass secrets (never on the command line).
    pub fn stdin(mut self, bytes: &'a [u8]) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    pub fn on_line(mut self, f: &'a LineFn<'a>) -> Self {
        self.on_line = Some(f);
        self
    }

    /// Streams stdout to `f` (a download of any size in constant memory); `Output::stdout` stays
    /// empty and only stderr makes lines.
    pub fn stdout_to(mut self, f: &'a ChunkFn<'a>) -> Self {
        self.stdout_to = Some(f);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Code(u32),
    Signal(String),
    /// The channel closed without an exit status.
    Unknown,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit status {c}"),
            Self::Signal(s) => write!(f, "signal {s}"),
            Self::Unknown => f.write_str("no exit status"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Last lines of stdout and stderr, interleaved as they arrived.
    pub last_lines: Vec<String>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == ExitStatus::Code(0)
    }

    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Accumulates output, splitting it into lines for the callback and the tail.
pub(crate) struct Collector<'a> {
    pub status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Index in stdout/stderr up to which lines were emitted.
    emitted: [usize; 2],
    tail: VecDeque<String>,
    on_line: Option<&'a LineFn<'a>>,
    stdout_to: Option<&'a ChunkFn<'a>>,
}

impl<'a> Collector<'a> {
    pub fn new(on_line: Option<&'a LineFn<'a>>) -> Self {
        Self {
            status: ExitStatus::Unknown,
            stdout: Vec::new(),
            stderr: Vec::new(),
            emitted: [0, 0],
            tail: VecDeque::with_capacity(TAIL_LINES),
            on_line,
            stdout_to: None,
        }
    }

    pub fn streaming_stdout(mut self, to: Option<&'a ChunkFn<'a>>) -> Self {
        self.stdout_to = to;
        self
    }

    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        if let (Stream::Stdout, Some(to)) = (stream, self.stdout_to) {
            to(data);
            return;
        }
        let (buf, i) = match stream {
            Stream::Stdout => (&mut self.stdout, 0),
            Stream::Stderr => (&mut self.stderr, 1),
        };
        buf.extend_from_slice(data);
        while let Some(nl) = buf[self.emitted[i]..].iter().position(|&b| b == b'\n') {
            let end = self.emitted[i] + nl;
            let line = String::from_utf8_lossy(&buf[self.emitted[i]..end]).into_owned();
            self.emitted[i] = end + 1;
            Self::emit(&mut self.tail, self.on_line, stream, line);
        }
    }

    /// Flushes unterminated last lines.
    fn flush(&mut self) {
        for (i, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let buf = if i == 0 { &self.stdout } else { &self.stderr };
            if self.emitted[i] < buf.len() {
                let line = String::from_utf8_lossy(&buf[self.emitted[i]..]).into_owned();
                self.emitted[i] = buf.len();
                Self::emit(&mut self.tail, self.on_line, stream, line);
            }
        }
    }

    fn emit(
        tail: &mut VecDeque<String>,
        on_line: Option<&LineFn<'_>>,
        stream: Stream,
        line: String,
    ) {
        let line = line.trim_end_matches('\r');
        if let Some(f) = on_line {
            f(stream, line);
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    }

    pub fn last_lines(&mut self) -> Vec<String> {
        self.flush();
        self.tail.iter().cloned().collect()
    }

    pub fn stderr_contains(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.stderr).contains(needle)
    }

    pub fn finish(mut self) -> Output {
        let last_lines = self.last_lines();
        Output {
            status: self.status,
            stdout: self.stdout,
            stderr: self.stderr,
            last_lines,
        }
    }
}

/// Short form of a command for messages: first line, at most 80 characters.
pub(crate) fn summarize(command: &str) -> String {
    let first = command.lines().next().unwrap_or_default();
    let mut s: String = first.chars().take(80).collect();
    if s.len() < command.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn splits_lines_across_chunks_and_keeps_tail() {
        let seen = Mutex::new(Vec::new());
        let f = |s: Stream, l: &str| seen.lock().expect("lock").push((s, l.to_string()));
        let mut c = Collector::new(Some(&f));
        c.push(Stream::Stdout, b"a\nb");
        c.push(Stream::Stderr, b"err\r\n");
        c.push(Stream::Stdout, b"c\nd");
        let out = c.finish();
        assert_eq!(out.stdout, b"a\nbc\nd");
        assert_eq!(out.last_lines, ["a", "err", "bc", "d"]);
        assert_eq!(seen.lock().expect("lock").len(), 4);
    }

    #[test]
    fn tail_is_bounded() {
        let mut c = Collector::new(None);
        for i in 0..25 {
            c.push(Stream::Stdout, format!("{i}\n").as_bytes());
        }
        let out = c.finish();
        assert_eq!(out.last_lines.len(), TAIL_LINES);
        assert_eq!(out.last_lines.last().map(String::as_str), Some("24"));
    }

    #[test]
    fn summarize_cuts_long_commands() {
        assert_eq!(summarize("true"), "true");
        assert_eq!(summarize("a\nb"), "a…");
        assert_eq!(summarize(&"x".repeat(100)).chars().count(), 81);
    }
}
