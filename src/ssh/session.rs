//! One SSH connection per host, reused for every command of a run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use russh::ChannelMsg;
use russh::client::{self, Handle};
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, Semaphore};

use super::auth::authenticate;
use super::error::SshError;
use super::exec::{Collector, Exec, ExitStatus, Output, Stream, summarize};
use super::hostkey::{HandlerError, KnownHosts, Verifier};
use super::target::Target;

/// sshd's MaxSessions defaults to 10 channels per connection; stay below it.
pub const MAX_CHANNELS: usize = 8;

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub known_hosts: KnownHosts,
    /// ssh-agent socket whose keys are tried; `new` takes it from `SSH_AUTH_SOCK`.
    pub agent: Option<PathBuf>,
}

impl ConnectOptions {
    pub fn new(known_hosts: KnownHosts) -> Self {
        Self {
            known_hosts,
            agent: std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
        }
    }
}

type JumpCell = Arc<OnceCell<Result<Session, Arc<SshError>>>>;

/// Opens sessions and keeps one per host for the whole run. Targets behind the same
/// jump host share one bastion connection (its sshd would otherwise throttle parallel
/// handshakes, MaxStartups).
pub struct Connector {
    opts: ConnectOptions,
    sessions: tokio::sync::Mutex<HashMap<String, Session>>,
    jumps: tokio::sync::Mutex<HashMap<String, JumpCell>>,
    /// Commands run per host (each one SSH round trip), over all of the host's connections.
    commands: std::sync::Mutex<BTreeMap<String, Arc<AtomicUsize>>>,
}

impl Connector {
    pub fn new(opts: ConnectOptions) -> Self {
        Self {
            opts,
            sessions: Default::default(),
            jumps: Default::default(),
            commands: Default::default(),
        }
    }

    /// How many commands ran on each host so far.
    pub fn commands(&self) -> BTreeMap<String, usize> {
        self.commands
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(h, n)| (h.clone(), n.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn counter(&self, host: &str) -> Arc<AtomicUsize> {
        self.commands
            .lock()
            .map(|mut m| m.entry(host.to_string()).or_default().clone())
            .unwrap_or_default()
    }

    /// Closes and forgets `host`'s cached session; returns once its socket is closed.
    pub async fn close(&self, host: &str) {
        let s = self.sessions.lock().await.remove(host);
        if let Some(s) = s {
            s.close().await;
        }
    }

    /// The run's session for `target` (by name), connecting if there is none or it died.
    pub async fn session(&self, target: &Target) -> Result<Session, SshError> {
        if let Some(s) = self.sessions.lock().await.get(&target.name)
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let s = self.connect(target).await?;
        self.sessions
            .lock()
            .await
            .insert(target.name.clone(), s.clone());
        Ok(s)
    }

    /// Closes every cached session.
    pub async fn disconnect_all(&self) {
        let sessions: Vec<Session> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        futures::future::join_all(sessions.iter().map(Session::disconnect)).await;
        let counts = self.commands();
        if let Some((host, most)) = counts.iter().max_by_key(|(_, n)| **n) {
            // Round trips per host are what a run costs each host; benches/scale.sh reads this.
            tracing::info!(
                "SSH: {} on {} (most on one host: {most}, {host})",
                crate::words::count(counts.values().sum(), "command"),
                crate::words::count(counts.len(), "host"),
            );
        }
    }

    /// A new connection, not cached.
    pub async fn connect(&self, target: &Target) -> Result<Session, SshError> {
        let jump = match &target.jump {
            Some(j) => Some(self.jump(j).await.map_err(|source| SshError::Jump {
                host: target.name.clone(),
                via: j.name.clone(),
                source,
            })?),
            None => None,
        };
        let limit = target.timeouts.connect;
        tokio::time::timeout(limit, self.handshake(target, jump))
            .await
            .map_err(|_| SshError::ConnectTimeout {
                host: target.name.clone(),
                addr: target.socket_addr(),
                after: limit,
            })?
    }

    async fn jump(&self, j: &Target) -> Result<Session, Arc<SshError>> {
        let key = format!("{}@{}", j.user, j.socket_addr());
        let cell = {
            let mut jumps = self.jumps.lock().await;
            // A failure is kept for the run (no timeout per host); a dead bastion is redialled.
            let dead =
                matches!(jumps.get(&key).and_then(|c| c.get()), Some(Ok(s)) if s.is_closed());
            if dead {
                jumps.remove(&key);
            }
            jumps.entry(key).or_default().clone()
        };
        cell.get_or_init(|| async { Box::pin(self.connect(j)).await.map_err(Arc::new) })
            .await
            .clone()
    }

    async fn handshake(&self, target: &Target, jump: Option<Session>) -> Result<Session, SshError> {
        let t = &target.timeouts;
        let config = Arc::new(client::Config {
            keepalive_interval: Some(t.keepalive_interval),
            keepalive_max: t.keepalive_max,
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        });
        let verifier = Verifier {
            target: target.clone(),
            known_hosts: self.opts.known_hosts.clone(),
        };
        let addr = target.socket_addr();
        let ssh_err = |source| SshError::Ssh {
            host: target.name.clone(),
            what: "SSH handshake",
            source,
        };
        let connected = match &jump {
            None => {
                let tcp =
                    TcpStream::connect(addr)
                        .await
                        .map_err(|source| SshError::Unreachable {
                            host: target.name.clone(),
                            addr,
                            source,
                        })?;
                tcp.set_nodelay(true).ok();
                client::connect_stream(config, tcp, verifier).await
            }
            Some(j) => {
                let tunnel = j
                    .handle
                    .channel_open_direct_tcpip(
                        addr.ip().to_string(),
                        addr.port().into(),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|source| SshError::Ssh {
                        host: target.name.clone(),
                        what: "opening a tunnel through the jump host",
                        source,
                    })?;
                client::connect_stream(config, tunnel.into_stream(), verifier).await
            }
        };
        let mut handle = connected.map_err(|e| match e {
            HandlerError::HostKey(e) => e,
            HandlerError::Ssh(source) => ssh_err(source),
        })?;
        authenticate(&mut handle, target, self.opts.agent.as_deref()).await?;
        tracing::debug!(host = %target.name, %addr, "connected");
        Ok(Session {
            target: Arc::new(target.clone()),
            handle: Arc::new(handle),
            channels: Arc::new(Semaphore::new(MAX_CHANNELS)),
            commands: self.counter(&target.name),
            _jump: jump.map(Box::new),
        })
    }
}

/// A command started by `Session::hold`, running until released.
pub struct Held {
    channel: russh::Channel<client::Msg>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Held {
    /// Closes the command's stdin and its channel: it ends.
    pub async fn release(self) {
        self.channel.eof().await.ok();
        self.channel.close().await.ok();
    }
}

/// An authenticated connection. Cheap to clone; commands may run concurrently.
#[derive(Clone)]
pub struct Session {
    target: Arc<Target>,
    handle: Arc<Handle<Verifier>>,
    channels: Arc<Semaphore>,
    commands: Arc<AtomicUsize>,
    /// Keeps the bastion connection open as long as this session lives.
    _jump: Option<Box<Session>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.target.name)
            .finish()
    }
}

impl Session {
    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn host(&self) -> &str {
        &self.target.name
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs a command; a non-zero exit is `Ok`. Fails on transport problems, timeouts
    /// and a sudo that wants a password.
    pub async fn exec(&self, e: Exec<'_>) -> Result<Output, SshError> {
        let host = || self.target.name.clone();
        let command = self.remote_command(&e)?;
        tracing::debug!(host = %self.target.name, command = %command, "exec");
        let started = std::time::Instant::now();
        let lost = |source| SshError::Ssh {
            host: host(),
            what: "opening a channel",
            source,
        };
        let _permit = self
            .channels
            .acquire()
            .await
            .map_err(|_| lost(russh::Error::Disconnect))?;
        let channel = self.handle.channel_open_session().await.map_err(lost)?;
        self.commands.fetch_add(1, Ordering::Relaxed);
        channel.exec(true, command.as_bytes()).await.map_err(lost)?;
        let (mut rd, wr) = channel.split();

        let mut out = Collector::new(e.on_line).streaming_stdout(e.stdout_to);
        let limit = e.timeout.unwrap_or(self.target.timeouts.command);
        let io = async {
            let write = async {
                if let Some(input) = e.stdin {
                    wr.data(input).await?;
                }
                wr.eof().await
            };
            let read = async {
                while let Some(msg) = rd.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => out.push(Stream::Stdout, &data),
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            out.push(Stream::Stderr, &data)
                        }
                        ChannelMsg::ExitStatus { exit_status } => {
                            out.status = ExitStatus::Code(exit_status);
                        }
                        ChannelMsg::ExitSignal { signal_name, .. } => {
                            out.status = ExitStatus::Signal(format!("{signal_name:?}"));
                        }
                        _ => {}
                    }
                }
            };
            // Stdin is written while output is read, so neither side can block the other;
            // when the command ends first, unsent stdin no longer matters.
            tokio::pin!(write, read);
            let mut writing = true;
            loop {
                tokio::select! {
                    r = &mut write, if writing => {
                        writing = false;
                        if let Err(err) = r {
                            tracing::debug!(host = %self.target.name, "stdin not fully sent: {err}");
                        }
                    }
                    () = &mut read => break,
                }
            }
        };
        let timed_out = tokio::time::timeout(limit, io).await.is_err();
        if timed_out {
            wr.close().await.ok();
            return Err(SshError::CommandTimeout {
                host: host(),
                command: summarize(e.command),
                after: limit,
                last_lines: out.last_lines(),
            });
        }
        tracing::debug!(host = %self.target.name, elapsed_ms = started.elapsed().as_millis(), status = ?out.status, "exec done");
        if out.status == ExitStatus::Unknown && self.handle.is_closed() {
            return Err(SshError::ConnectionLost {
                host: host(),
                command: summarize(e.command),
                last_lines: out.last_lines(),
            });
        }
        if e.sudo
            && out.status == ExitStatus::Code(1)
            && (out.stderr_contains("sudo: a password is required")
                || out.stderr_contains("sudo: a terminal is required"))
        {
            return Err(SshError::SudoPassword {
                host: host(),
                user: self.target.user.clone(),
            });
        }
        Ok(out.finish())
    }

    /// Like `exec`, but a non-zero exit is a `CommandFailed` error with the last lines.
    pub async fn run(&self, e: Exec<'_>) -> Result<Output, SshError> {
        let command = summarize(e.command);
        let out = self.exec(e).await?;
        if out.success() {
            return Ok(out);
        }
        Err(SshError::CommandFailed {
            host: self.target.name.clone(),
            command,
            status: out.status,
            last_lines: out.last_lines,
        })
    }

    /// Starts a command that keeps running while the returned `Held` lives (a lock holder).
    /// Returns once it prints the line `ready`; if it ends first, returns its output instead.
    /// The command sees its stdin close when the `Held` is released or the connection dies,
    /// kbs killed included.
    pub async fn hold(&self, e: Exec<'_>, ready: &str) -> Result<Result<Held, Output>, SshError> {
        let command = self.remote_command(&e)?;
        tracing::debug!(host = %self.target.name, command = %command, "hold");
        let lost = |source| SshError::Ssh {
            host: self.target.name.clone(),
            what: "opening a channel",
            source,
        };
        let permit = self
            .channels
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| lost(russh::Error::Disconnect))?;
        let mut channel = self.handle.channel_open_session().await.map_err(lost)?;
        self.commands.fetch_add(1, Ordering::Relaxed);
        channel.exec(true, command.as_bytes()).await.map_err(lost)?;
        let seen = std::sync::atomic::AtomicBool::new(false);
        let watch = |_: Stream, line: &str| {
            if line == ready {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let mut out = Collector::new(Some(&watch));
        let limit = e.timeout.unwrap_or(self.target.timeouts.command);
        let wait = async {
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.push(Stream::Stdout, &data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => out.push(Stream::Stderr, &data),
                    ChannelMsg::ExitStatus { exit_status } => {
                        out.status = ExitStatus::Code(exit_status);
                    }
                    _ => {}
                }
                if seen.load(std::sync::atomic::Ordering::Relaxed) {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(true) => Ok(Ok(Held {
                channel,
                _permit: permit,
            })),
            Ok(false) => Ok(Err(out.finish())),
            Err(_) => Err(SshError::CommandTimeout {
                host: self.target.name.clone(),
                command: summarize(e.command),
                after: limit,
                last_lines: out.last_lines(),
            }),
        }
    }

    fn remote_command(&self, e: &Exec<'_>) -> Result<String, SshError> {
        if !e.sudo || self.target.is_root() {
            return Ok(e.command.to_string());
        }
        let quoted = shlex::try_quote(e.command).map_err(|_| SshError::BadCommand {
            host: self.target.name.clone(),
            reason: "it contains a NUL byte".into(),
        })?;
        Ok(format!("sudo -n -- sh -c {quoted}"))
    }

    /// Closes the connection politely and, when this was its last user, waits (a moment at
    /// most) for the connection to end, so that its socket is freed before the caller goes on.
    pub async fn close(self) {
        self.disconnect().await;
        if let Ok(handle) = Arc::try_unwrap(self.handle) {
            tokio::time::timeout(std::time::Duration::from_secs(2), handle)
                .await
                .ok();
        }
    }

    /// Closes the connection politely.
    pub async fn disconnect(&self) {
        self.handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .ok();
    }
}
