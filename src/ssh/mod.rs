//! The SSH engine: one verified, authenticated connection per host (russh), commands
//! with streamed output, idempotent uploads, jump hosts, and bounded fan-out.
//!
//! ```text
//! Target ──Connector::connect──▶ Session ──exec/run/upload──▶ Output
//!    (hostkey: pinned → ~/.ssh/known_hosts → <state>/known_hosts; auth: key, agent)
//! ```

mod auth;
mod error;
mod exec;
mod fanout;
mod hostkey;
mod progress;
mod session;
mod target;
mod upload;

pub use error::SshError;
pub use exec::{ChunkFn, Exec, ExitStatus, LineFn, Output, Stream, TAIL_LINES};
pub use fanout::{
    DEFAULT_CONCURRENCY, ExecOptions, HostResult, exec_on_all, fan_out, print_report,
};
pub use hostkey::{KnownHosts, fingerprint};
pub use progress::{HostProgress, Progress, ProgressMode};
pub use session::{ConnectOptions, Connector, Held, MAX_CHANNELS, Session};
pub use target::{Target, Timeouts};
pub use upload::FileAttrs;

/// One shell word for a remote script. A string with a NUL byte cannot be a shell word: it
/// becomes `''`, an empty argument that keeps its place (and fails visibly), never a dropped one.
/// Paths and names reach here validated, so this does not happen with a valid inventory.
pub fn quote(s: impl AsRef<std::ffi::OsStr>) -> String {
    shlex::try_quote(&s.as_ref().to_string_lossy()).map_or_else(|_| "''".into(), |q| q.into_owned())
}
