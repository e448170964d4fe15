//! FTP health checks: connect, expect a 220 greeting, optionally complete
//! `AUTH TLS` and a login, send QUIT, all within a timeout, every interval,
//! with rise and fall counts. A failed check's reason (the backend's reply
//! text, the user name, never the password) goes to the log. Members of
//! pools behind plain TCP listeners ([`CheckKind::Connect`]) are checked by
//! the TCP connect alone: nothing is known of their protocol. SFTP members
//! ([`CheckKind::Ssh`]) by the SSH version exchange and key exchange, their
//! host key checked against `sftp_known_hosts`, without a login.
//!
//! A backend starts `Unknown` (usable, but not counted as up for `/readyz`)
//! until its first check, which decides at once. Until it has been up once,
//! it is checked every `fast_interval` and one success brings it up, so a
//! service started together with its backends serves as soon as they
//! listen; after that it takes `rise` consecutive successes to come up and
//! `fall` consecutive failures to go down, checked every `interval`. With
//! health checks off, every backend stays `Unknown`: always usable, and
//! ready.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{BackendSpec, BackendTlsMode, Config, Password, ProxyVersion};
use crate::metrics::Metrics;
use crate::proto::reply::{Reply, ReplyAssembler};
use crate::proto::upstream::{Chat, ChatError, Login, Next, Plan};

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The health of one backend.
#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
    /// Consecutive results against the current state.
    streak: AtomicU32,
    rise: u32,
    fall: u32,
    /// Whether checks run at all (set when the checker starts).
    checked: std::sync::atomic::AtomicBool,
    /// Whether it has ever been up (until then: fast checks, rise 1).
    ever_up: std::sync::atomic::AtomicBool,
}

/// A state change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Now up.
    Up,
    /// Now down.
    Down,
}

impl Health {
    /// Unknown health, with the given rise and fall counts.
    pub fn new(rise: u32, fall: u32) -> Self {
        Health {
            state: AtomicU8::new(UNKNOWN),
            streak: AtomicU32::new(0),
            rise: rise.max(1),
            fall: fall.max(1),
            checked: std::sync::atomic::AtomicBool::new(false),
            ever_up: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether a check has ever found it up (it is then checked at the
    /// normal interval, and `rise` applies).
    pub fn ever_up(&self) -> bool {
        self.ever_up.load(Ordering::Relaxed)
    }

    /// Marks this backend as health-checked: until its first check passes
    /// it is not counted as ready (but is still usable).
    pub fn expect_checks(&self) {
        self.checked.store(true, Ordering::Relaxed);
    }

    /// New sessions may go to this backend.
    pub fn usable(&self) -> bool {
        self.state.load(Ordering::Relaxed) != DOWN
    }

    /// Counts for readiness: up, or not checked at all.
    pub fn ready(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            UP => true,
            UNKNOWN => !self.checked.load(Ordering::Relaxed),
            _ => false,
        }
    }

    /// Whether the backend is currently considered up (for the gauge).
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) != DOWN
    }

    /// Records one check result; returns the transition it caused, if any.
    /// Only the backend's own checker task calls this.
    pub fn record(&self, ok: bool) -> Option<Transition> {
        let state = self.state.load(Ordering::Relaxed);
        let (target, needed) = match (state, ok) {
            (UNKNOWN, true) => (UP, 1),
            (UNKNOWN, false) => (DOWN, 1),
            (UP, true) | (DOWN, false) => {
                self.streak.store(0, Ordering::Relaxed);
                return None;
            }
            (UP, false) => (DOWN, self.fall),
            // Never up yet (it was down from the first check): nothing to
            // damp, the first success decides as the first check did.
            _ if !self.ever_up() => (UP, 1),
            _ => (UP, self.rise),
        };
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < needed {
            return None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.state.store(target, Ordering::Relaxed);
        if target == UP {
            self.ever_up.store(true, Ordering::Relaxed);
        }
        Some(if target == UP {
            Transition::Up
        } else {
            Transition::Down
        })
    }
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The check did not finish within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection within the timeout (plain TCP check).
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// Connect, read or write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The backend closed before a complete reply.
    #[error("connection closed before a complete reply")]
    Closed,
    /// A greeting that is not 220, or a reply that is not one.
    #[error("greeting was `{0}`, expected 220")]
    Unexpected(String),
    /// `AUTH TLS` answered with something other than 234.
    #[error("AUTH TLS refused: {0}")]
    AuthTlsRefused(String),
    /// The TLS handshake failed (e.g. an untrusted certificate), after 234
    /// or at connect (implicit TLS); said in words by
    /// [`crate::tls::describe_backend_handshake_error`].
    #[error("TLS handshake failed: {}", crate::tls::describe_backend_handshake_error(.0))]
    Tls(std::io::Error),
    /// The backend sent bytes after 234, before the handshake (RFC 4217 4:
    /// the handshake starts right after the reply; anything in between is
    /// plaintext that would otherwise be read as if protected).
    #[error("bytes after the 234 reply, before the TLS handshake")]
    BytesBeforeHandshake,
    /// The SSH handshake of an SFTP member failed (or its host key is
    /// not trusted).
    #[error("{0}")]
    Ssh(crate::sftp::ssh::SshError),
    /// `USER` or `PASS` answered with something other than 331 or 230.
    #[error("login as `{user}` refused: {reply}")]
    LoginRefused {
        /// The user name (never the password).
        user: String,
        /// The backend's reply.
        reply: String,
    },
}

impl CheckError {
    /// A short class for the failure metric (bounded label values).
    pub fn reason(&self) -> &'static str {
        match self {
            CheckError::Timeout(_) | CheckError::ConnectTimeout(_) => "timeout",
            CheckError::Io(_) => "io",
            CheckError::Closed => "closed",
            CheckError::Unexpected(_) => "greeting",
            CheckError::AuthTlsRefused(_) => "auth_tls",
            CheckError::Tls(_) | CheckError::BytesBeforeHandshake => "tls",
            CheckError::LoginRefused { .. } => "login",
            CheckError::Ssh(e) => e.reason(),
        }
    }
}

/// TLS for checks: the backend-facing TLS configuration and the name the
/// backend's certificate is checked against.
#[derive(Clone)]
pub struct CheckTls {
    /// The backend-facing TLS configuration.
    pub connector: tokio_rustls::TlsConnector,
    /// The name its certificate is checked against.
    pub name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for CheckTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckTls")
            .field("name", &self.name)
            .finish()
    }
}

/// What a check expects of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// An FTP 220 greeting (then QUIT).
    FtpGreeting,
    /// A TCP connection, closed at once (plain TCP pools).
    Connect,
    /// An SSH version exchange and key exchange with a trusted host key,
    /// no login (SFTP members).
    Ssh,
}

/// The password sent to a server that asks for one (331) when no password
/// file is configured: anonymous servers take any address-like password.
pub const ANONYMOUS_PASSWORD: &str = "health@ftpgate";

/// A login completed by every check.
#[derive(Debug, Clone)]
pub struct CheckLogin {
    /// Sent with `USER`; may be logged.
    pub user: String,
    /// Sent with `PASS` after a 331; [`ANONYMOUS_PASSWORD`] when `None`.
    pub password: Option<Password>,
}

/// How a backend is checked.
#[derive(Debug, Clone)]
pub struct CheckHow {
    /// What a check expects.
    pub kind: CheckKind,
    /// Time between checks.
    pub interval: Duration,
    /// Time between checks until the backend has been up once (at most
    /// `interval`).
    pub fast_interval: Duration,
    /// Time one check may take, from connect to the last reply.
    pub timeout: Duration,
    /// TLS first (implicit-TLS backends).
    pub tls: Option<CheckTls>,
    /// `AUTH TLS` after the greeting, then a handshake (explicit-TLS backends).
    pub starttls: Option<CheckTls>,
    /// A login after the greeting (and TLS).
    pub login: Option<CheckLogin>,
    /// A PROXY header to send first (v1 UNKNOWN or v2 LOCAL), for backends
    /// that expect one on every connection.
    pub proxy: Option<Vec<u8>>,
    /// The trusted host keys ([`CheckKind::Ssh`]).
    pub known_hosts: Option<Arc<crate::sftp::KnownHosts>>,
}

/// A check's control connection: commands out, whole replies in.
struct Exchange<S> {
    stream: S,
    replies: ReplyAssembler,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Exchange<S> {
    fn new(stream: S) -> Self {
        Exchange {
            stream,
            replies: ReplyAssembler::new(4096, 64 * 1024),
        }
    }

    /// The next final reply; 1yz replies (e.g. 120 before a 220, RFC 959
    /// 4.2) are skipped.
    async fn read_reply(&mut self) -> Result<Reply, CheckError> {
        loop {
            match self.replies.next_reply() {
                Some(Ok(reply)) if reply.is_preliminary() => continue,
                Some(Ok(reply)) => return Ok(reply),
                Some(Err(_)) => return Err(CheckError::Unexpected("malformed reply".into())),
                None => {}
            }
            if self.stream.read_buf(self.replies.buffer_mut()).await? == 0 {
                return Err(CheckError::Closed);
            }
        }
    }

    /// Sends `line` (CRLF included). The line is not logged: it may be `PASS`.
    async fn send(&mut self, line: &[u8]) -> Result<(), CheckError> {
        self.stream.write_all(line).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Bytes received after the last reply.
    fn buffered(&self) -> usize {
        self.replies.buffered()
    }

    /// Says QUIT without waiting for the answer (best effort).
    async fn quit(&mut self) {
        let _ = self.stream.write_all(b"QUIT\r\n").await;
        let _ = self.stream.flush().await;
    }

    /// Says QUIT and reads the answer, whatever it is: proof that the
    /// server took the TLS session. In TLS 1.3 a client's handshake ends
    /// before the server has checked the client's certificate, so a server
    /// that refuses it (vsftpd `require_cert=YES` without
    /// `backend_tls_client_cert`) says so only in its next read.
    async fn quit_answered(&mut self) -> Result<(), CheckError> {
        let answered = async {
            self.send(b"QUIT\r\n").await?;
            self.read_reply().await.map(|_| ())
        };
        match answered.await {
            // A TLS alert (a refused client certificate) is a TLS failure.
            Err(CheckError::Io(e))
                if e.get_ref()
                    .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some()) =>
            {
                Err(CheckError::Tls(e))
            }
            r => r,
        }
    }
}

impl From<ChatError> for CheckError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Greeting(r) => CheckError::Unexpected(r.text_lossy()),
            ChatError::AuthTlsRefused(r) => CheckError::AuthTlsRefused(r.text_lossy()),
            ChatError::BytesAfter234 => CheckError::BytesBeforeHandshake,
            ChatError::Refused { reply, .. } => CheckError::Unexpected(reply.text_lossy()),
            ChatError::LoginRefused { user, reply } => CheckError::LoginRefused {
                user,
                reply: reply.text_lossy(),
            },
        }
    }
}

/// Where a run of the conversation stopped.
enum Stop {
    /// The caller's TLS handshake is due.
    StartTls,
    /// The plan is complete.
    Done,
}

/// Feeds replies to `chat` and sends what it asks until it wants a TLS
/// handshake or is done.
async fn run_chat<S: AsyncRead + AsyncWrite + Unpin>(
    chat: &mut Chat,
    x: &mut Exchange<S>,
    mut next: Option<Next>,
) -> Result<Stop, CheckError> {
    loop {
        match next.take() {
            Some(Next::Send(line)) => x.send(&line).await?,
            Some(Next::StartTls) => return Ok(Stop::StartTls),
            Some(Next::Done(_)) => return Ok(Stop::Done),
            None => {}
        }
        let reply = x.read_reply().await?;
        next = chat.on_reply(&reply, x.buffered())?;
    }
}

/// The FTP part of a check on an open connection (`tls`: inside TLS
/// already), the one backend conversation sessions use too
/// (`proto::upstream`): greeting 220, then `AUTH TLS` (234, no byte after
/// it) and a handshake if `starttls`, then the login if any, then QUIT
/// (answered, inside a TLS session begun here).
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: bool,
    starttls: Option<&CheckTls>,
    login: Option<&CheckLogin>,
) -> Result<(), CheckError> {
    let plan = Plan {
        starttls: starttls.is_some(),
        protect: None,
        login: login.map(|l| Login {
            user: l.user.clone(),
            password: l
                .password
                .as_ref()
                .map_or(ANONYMOUS_PASSWORD, Password::expose)
                .to_owned(),
        }),
    };
    let mut chat = Chat::new(plan, tls);
    let mut x = Exchange::new(stream);
    match (run_chat(&mut chat, &mut x, None).await?, starttls) {
        (Stop::StartTls, Some(t)) => {
            let tls = t
                .connector
                .connect(t.name.clone(), x.stream)
                .await
                .map_err(CheckError::Tls)?;
            let mut x = Exchange::new(tls);
            let next = chat.on_tls();
            run_chat(&mut chat, &mut x, Some(next)).await?;
            x.quit_answered().await?;
        }
        _ => x.quit().await,
    }
    Ok(())
}

/// One check: connect (and TLS for an implicit-TLS backend), read the
/// greeting, expect 220, then `AUTH TLS` and a login as `how` says, then
/// QUIT, all within `how.timeout`. Returns the time it took.
pub async fn check_once(spec: &BackendSpec, how: &CheckHow) -> Result<Duration, CheckError> {
    let started = Instant::now();
    let attempt = async {
        let mut s = TcpStream::connect(spec.addr).await?;
        if let Some(header) = &how.proxy {
            // A backend that expects PROXY headers waits for one first.
            s.write_all(header).await?;
        }
        let (starttls, login) = (how.starttls.as_ref(), how.login.as_ref());
        match &how.tls {
            Some(t) => {
                let s = t
                    .connector
                    .connect(t.name.clone(), s)
                    .await
                    .map_err(CheckError::Tls)?;
                converse(s, true, starttls, login).await
            }
            None => converse(s, false, starttls, login).await,
        }
    };
    tokio::time::timeout(how.timeout, attempt)
        .await
        .map_err(|_| CheckError::Timeout(how.timeout))??;
    Ok(started.elapsed())
}

/// One check of a plain TCP backend: the connect succeeds within `timeout`.
pub async fn connect_once(spec: &BackendSpec, timeout: Duration) -> Result<Duration, CheckError> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect(spec.addr)).await {
        Ok(Ok(_closed_on_drop)) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(CheckError::Io(e)),
        Err(_) => Err(CheckError::ConnectTimeout(timeout)),
    }
}

/// One check of an SFTP member: TCP connect, SSH version exchange and key
/// exchange with its host key trusted, then disconnect; within `timeout`.
pub async fn ssh_once(spec: &BackendSpec, how: &CheckHow) -> Result<Duration, CheckError> {
    use crate::sftp::ssh::{disconnect, handshake, SshError};
    let started = Instant::now();
    let known = how.known_hosts.clone().unwrap_or_default();
    let attempt = async {
        let tcp = TcpStream::connect(spec.addr).await?;
        let ssh = handshake(tcp, &spec.host(), spec.addr.port(), known, how.timeout)
            .await
            .map_err(|e| match e {
                SshError::Io(e) => CheckError::Io(e),
                e => CheckError::Ssh(e),
            })?;
        disconnect(&ssh).await;
        Ok::<_, CheckError>(())
    };
    tokio::time::timeout(how.timeout, attempt)
        .await
        .map_err(|_| CheckError::Timeout(how.timeout))??;
    Ok(started.elapsed())
}

/// Checks `spec` every `interval` (every `fast_interval` until it has been
/// up once) until `cancel`.
pub async fn check_loop(
    spec: BackendSpec,
    health: Arc<Health>,
    how: CheckHow,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let label = spec.label();
    let name = label.as_str();
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = async {
                match how.kind {
                    CheckKind::FtpGreeting => check_once(&spec, &how).await,
                    CheckKind::Connect => connect_once(&spec, how.timeout).await,
                    CheckKind::Ssh => ssh_once(&spec, &how).await,
                }
            } => r,
        };
        let ok = result.is_ok();
        metrics
            .health_checks_total
            .with_label_values(&[name, if ok { "success" } else { "failure" }])
            .inc();
        match &result {
            Ok(took) => metrics
                .health_check_seconds
                .with_label_values(&[name])
                .observe(took.as_secs_f64()),
            Err(e) => metrics
                .health_check_failures_total
                .with_label_values(&[name, e.reason()])
                .inc(),
        }
        match (health.record(ok), &result) {
            (Some(Transition::Up), _) => info!(backend = name, "backend is up"),
            (Some(Transition::Down), Err(e)) => {
                warn!(backend = name, error = %e, "backend is down: no new sessions go to it")
            }
            (None, Err(e)) => debug!(backend = name, error = %e, "health check failed"),
            _ => {}
        }
        metrics
            .backend_up
            .with_label_values(&[name])
            .set(health.is_up() as i64);
        let pause = if health.ever_up() {
            how.interval
        } else {
            how.fast_interval.min(how.interval)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// How `spec` is checked under `config`: TLS first for implicit-TLS
/// backends, `AUTH TLS` for explicit ones (`health_check_tls`), a login
/// (`health_check_user`), a PROXY header (`backend_proxy_protocol`); plain
/// TCP pools (`kind` [`CheckKind::Connect`]) get the connect alone.
pub fn how(config: &Config, spec: &BackendSpec, kind: CheckKind) -> CheckHow {
    // TLS, logins and PROXY headers are FTP's; SSH checks need the host keys.
    let ftp = kind == CheckKind::FtpGreeting;
    let check_tls = || {
        let c = config.backend_tls_config.as_ref()?;
        crate::tls::backend_server_name(config.backend_tls_server_name.as_deref(), &spec.name).map(
            |name| CheckTls {
                connector: tokio_rustls::TlsConnector::from(std::sync::Arc::clone(c)),
                name,
            },
        )
    };
    let (tls, starttls) = match config.backend_tls {
        // Plain TCP pools: the connect alone.
        _ if !ftp => (None, None),
        BackendTlsMode::Implicit => (check_tls(), None),
        // Validation allows health_check_tls with explicit only.
        BackendTlsMode::Explicit if config.health_check_tls => {
            let t = check_tls();
            if t.is_none() {
                warn!(
                    backend = %spec.name,
                    "no host name to check a certificate against: health checks skip AUTH TLS; \
                     set backend_tls_server_name"
                );
            }
            (None, t)
        }
        _ => (None, None),
    };
    let login = config
        .health_check_user
        .as_ref()
        .filter(|_| ftp)
        .map(|user| CheckLogin {
            user: user.clone(),
            password: config.health_check_password.clone(),
        });
    CheckHow {
        kind,
        interval: config.health_check_interval,
        fast_interval: config.health_check_fast_interval,
        timeout: config.health_check_timeout,
        tls,
        starttls,
        login,
        proxy: match config.backend_proxy_protocol {
            _ if !ftp => None,
            ProxyVersion::Off => None,
            ProxyVersion::V1 => Some(crate::proto::proxy::encode_local(false)),
            ProxyVersion::V2 => Some(crate::proto::proxy::encode_local(true)),
        },
        known_hosts: config
            .sftp_known_hosts
            .clone()
            .filter(|_| kind == CheckKind::Ssh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_check_decides_then_rise_and_fall_apply() {
        let h = Health::new(2, 3);
        assert!(h.usable() && h.ready(), "unchecked: usable and ready");
        h.expect_checks();
        assert!(
            h.usable() && !h.ready(),
            "checked, no result yet: not ready"
        );
        assert_eq!(h.record(true), Some(Transition::Up));
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None, "a success resets the fall streak");
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(Transition::Down));
        assert!(!h.usable() && !h.ready());
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(Transition::Up));
        assert!(h.usable() && h.ready());
    }

    /// A plain TCP check needs nothing but the connect: a listener that
    /// never says a word passes, a closed port fails.
    #[tokio::test]
    async fn connect_check_passes_a_silent_listener_and_fails_a_closed_port() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let spec = |addr| BackendSpec {
            name: "t".into(),
            protocol: crate::config::BackendProtocol::Ftp,
            addr,
            weight: 1,
            drain: false,
        };
        let open = spec(l.local_addr().unwrap());
        assert!(connect_once(&open, Duration::from_secs(2)).await.is_ok());
        assert!(
            check_once(
                &open,
                &CheckHow {
                    kind: CheckKind::FtpGreeting,
                    interval: Duration::from_secs(1),
                    fast_interval: Duration::from_millis(250),
                    timeout: Duration::from_millis(200),
                    tls: None,
                    starttls: None,
                    login: None,
                    proxy: None,
                    known_hosts: None,
                }
            )
            .await
            .is_err(),
            "an FTP check needs a greeting"
        );
        drop(l);
        assert!(connect_once(&open, Duration::from_secs(2)).await.is_err());
    }

    /// Runs `converse` (plain, no TLS) against a scripted peer that answers
    /// each expected line with its reply; returns the result and what the
    /// peer received.
    async fn scripted(
        login: Option<CheckLogin>,
        greeting: &str,
        script: &[(&str, &str)],
    ) -> (Result<(), CheckError>, String) {
        use tokio::io::AsyncBufReadExt;
        let (ours, theirs) = tokio::io::duplex(4096);
        let greeting = greeting.to_owned();
        let script: Vec<(String, String)> = script
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let peer = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(theirs);
            let mut r = tokio::io::BufReader::new(r);
            w.write_all(greeting.as_bytes()).await.unwrap();
            let mut seen = String::new();
            for (want, reply) in script {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                assert_eq!(line, format!("{want}\r\n"));
                seen.push_str(&line);
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            // QUIT (or nothing) until the client closes.
            let mut rest = String::new();
            let _ = r.read_to_string(&mut rest).await;
            seen.push_str(&rest);
            seen
        });
        let result = converse(ours, false, None, login.as_ref()).await;
        (result, peer.await.unwrap())
    }

    fn login(user: &str, password: Option<&str>) -> Option<CheckLogin> {
        Some(CheckLogin {
            user: user.into(),
            password: password.map(|p| Password::new(p.into())),
        })
    }

    #[tokio::test]
    async fn login_with_password_331_then_230() {
        let (r, seen) = scripted(
            login("alice", Some("s3cret")),
            "220 ready\r\n",
            &[
                ("USER alice", "331 password please\r\n"),
                ("PASS s3cret", "230 logged in\r\n"),
            ],
        )
        .await;
        r.unwrap();
        assert_eq!(seen, "USER alice\r\nPASS s3cret\r\nQUIT\r\n");
    }

    #[tokio::test]
    async fn login_accepted_at_user_sends_no_password() {
        let (r, seen) = scripted(
            login("bob", Some("unused")),
            "120 wait\r\n220-multi\r\n220 line greeting\r\n",
            &[("USER bob", "230 no password needed\r\n")],
        )
        .await;
        r.unwrap();
        assert_eq!(seen, "USER bob\r\nQUIT\r\n");
    }

    #[tokio::test]
    async fn anonymous_login_without_password_file_sends_default() {
        let (r, seen) = scripted(
            login("anonymous", None),
            "220 ready\r\n",
            &[
                ("USER anonymous", "331 send your address\r\n"),
                ("PASS health@ftpgate", "230 welcome\r\n"),
            ],
        )
        .await;
        r.unwrap();
        assert!(seen.ends_with("QUIT\r\n"));
    }

    #[tokio::test]
    async fn wrong_password_fails_with_reply_text_and_never_the_password() {
        let (r, seen) = scripted(
            login("alice", Some("wrong-pass")),
            "220 ready\r\n",
            &[
                ("USER alice", "331 password please\r\n"),
                ("PASS wrong-pass", "530 Login incorrect.\r\n"),
            ],
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.reason(), "login");
        let text = e.to_string();
        assert_eq!(text, "login as `alice` refused: 530 Login incorrect.");
        assert!(!format!("{e:?}").contains("wrong-pass"));
        assert!(
            !seen.contains("QUIT"),
            "no QUIT after a failure: the connection just closes"
        );
    }

    #[tokio::test]
    async fn user_refused_and_bad_greeting_fail() {
        let (r, _) = scripted(
            login("alice", None),
            "220 ready\r\n",
            &[("USER alice", "530 not allowed\r\n")],
        )
        .await;
        assert!(matches!(r, Err(CheckError::LoginRefused { .. })), "{r:?}");
        let (r, _) = scripted(None, "421 too many\r\n", &[]).await;
        assert_eq!(
            r.unwrap_err().to_string(),
            "greeting was `421 too many`, expected 220"
        );
        let (r, seen) = scripted(None, "220 ready\r\n", &[]).await;
        r.unwrap();
        assert_eq!(
            seen, "QUIT\r\n",
            "no login configured: greeting and QUIT only"
        );
    }

    #[tokio::test]
    async fn auth_tls_refused_fails_before_any_handshake() {
        let (ours, theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut theirs = theirs;
            theirs.write_all(b"220 ready\r\n").await.unwrap();
            let mut buf = [0u8; 64];
            let n = theirs.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"AUTH TLS\r\n");
            theirs
                .write_all(b"500 AUTH not understood\r\n")
                .await
                .unwrap();
        });
        let tls = CheckTls {
            connector: tokio_rustls::TlsConnector::from(
                crate::tls::client_config(&crate::tls::BackendVerify::None, None).unwrap(),
            ),
            name: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        };
        let r = converse(ours, false, Some(&tls), None).await;
        peer.await.unwrap();
        let e = r.unwrap_err();
        assert_eq!(e.to_string(), "AUTH TLS refused: 500 AUTH not understood");
        assert_eq!(e.reason(), "auth_tls");
    }

    #[tokio::test]
    async fn bytes_after_234_are_refused() {
        let (ours, theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut theirs = theirs;
            theirs.write_all(b"220 ready\r\n").await.unwrap();
            let mut buf = [0u8; 64];
            let _ = theirs.read(&mut buf).await.unwrap();
            theirs
                .write_all(b"234 go ahead\r\n230 injected\r\n")
                .await
                .unwrap();
        });
        let tls = CheckTls {
            connector: tokio_rustls::TlsConnector::from(
                crate::tls::client_config(&crate::tls::BackendVerify::None, None).unwrap(),
            ),
            name: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        };
        let r = converse(ours, false, Some(&tls), None).await;
        peer.await.unwrap();
        assert!(matches!(r, Err(CheckError::BytesBeforeHandshake)), "{r:?}");
    }

    #[test]
    fn password_never_prints() {
        let p = Password::new("hunter2".into());
        assert_eq!(p.to_string(), "****");
        assert!(!format!("{:?}", login("u", Some("hunter2"))).contains("hunter2"));
    }

    #[test]
    fn first_failure_takes_an_unknown_backend_down() {
        let h = Health::new(2, 3);
        assert_eq!(h.record(false), Some(Transition::Down));
        assert!(!h.usable());
    }

    /// A backend down since its first check (not started yet) comes up at
    /// its first success; once it has been up, `rise` applies again.
    #[test]
    fn never_up_backend_comes_up_at_its_first_success() {
        let h = Health::new(3, 1);
        assert_eq!(h.record(false), Some(Transition::Down));
        assert_eq!(h.record(false), None);
        assert!(!h.ever_up());
        assert_eq!(h.record(true), Some(Transition::Up));
        assert!(h.ever_up() && h.usable());
        assert_eq!(h.record(false), Some(Transition::Down));
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(Transition::Up));
    }

    /// Until it is up, a backend is checked every `fast_interval`, not
    /// every `interval`: counted by the checks made in half a second.
    #[tokio::test]
    async fn fast_interval_until_first_up() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let spec = BackendSpec {
            name: addr.to_string(),
            protocol: crate::config::BackendProtocol::Ftp,
            addr,
            weight: 1,
            drain: false,
        };
        let health = Arc::new(Health::new(2, 3));
        let cancel = CancellationToken::new();
        let how = CheckHow {
            kind: CheckKind::Connect,
            interval: Duration::from_secs(60),
            fast_interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            tls: None,
            starttls: None,
            login: None,
            proxy: None,
            known_hosts: None,
        };
        let metrics = Arc::new(Metrics::new());
        let label = spec.label();
        let checks = |result: &str| {
            metrics
                .health_checks_total
                .with_label_values(&[label.as_str(), result])
                .get()
        };
        tokio::spawn(check_loop(
            spec.clone(),
            Arc::clone(&health),
            how,
            Arc::clone(&metrics),
            cancel.clone(),
        ));
        // A closed port: every check fails, about ten in 500 ms (one at
        // the 60 s interval).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(checks("failure") >= 3, "{} checks", checks("failure"));
        assert!(!health.usable() && !health.ever_up());
        // It listens now: up at the next check (bounded wait).
        let _l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !health.ever_up() {
            assert!(Instant::now() < deadline, "never up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(health.usable() && checks("success") == 1);
        // Up once: back to the normal interval, no more checks soon.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(checks("success"), 1);
        cancel.cancel();
    }
}
