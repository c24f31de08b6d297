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
mod hostkey;
mod session;
mod target;

pub use error::SshError;
pub use exec::{Exec, ExitStatus, LineFn, Output, Stream, TAIL_LINES};
pub use hostkey::{KnownHosts, fingerprint};
pub use session::{ConnectOptions, Connector, MAX_CHANNELS, Session};
pub use target::{Target, Timeouts, parse_host_key};
