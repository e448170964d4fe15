//! FTP health checks: connect, expect a 220 greeting within a timeout,
//! send QUIT, every interval, with rise and fall counts. Members of pools
//! behind plain TCP listeners ([`CheckKind::Connect`]) are checked by the
//! TCP connect alone: nothing is known of their protocol.
//!
//! A backend starts `Unknown` (usable, but not counted as up for `/readyz`)
//! until its first check, which decides at once; after that it takes `rise`
//! consecutive successes to come up and `fall` consecutive failures to go
//! down. With health checks off, every backend stays `Unknown`: always
//! usable, and ready.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::BackendSpec;
use crate::metrics::Metrics;
use crate::proto::reply::ReplyAssembler;

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
        }
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
            _ => (UP, self.rise),
        };
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < needed {
            return None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.state.store(target, Ordering::Relaxed);
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
    /// No answer within the timeout.
    #[error("no greeting within {0:?}")]
    Timeout(Duration),
    /// No connection within the timeout (plain TCP check).
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// Connect or read failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The backend closed before a complete reply.
    #[error("connection closed before a greeting")]
    Closed,
    /// A reply that is not 220.
    #[error("greeting was `{0}`, expected 220")]
    Unexpected(String),
}

/// TLS for checks of an implicit-TLS backend: its greeting is inside TLS.
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
}

/// How a backend is checked.
#[derive(Debug, Clone)]
pub struct CheckHow {
    /// What a check expects.
    pub kind: CheckKind,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// TLS first (implicit-TLS backends).
    pub tls: Option<CheckTls>,
    /// A PROXY header to send first (v1 UNKNOWN or v2 LOCAL), for backends
    /// that expect one on every connection.
    pub proxy: Option<Vec<u8>>,
}

/// Reads the greeting from `s`, expects 220, says QUIT.
async fn greet<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    started: Instant,
) -> Result<Duration, CheckError> {
    let mut replies = ReplyAssembler::new(4096, 64 * 1024);
    loop {
        if let Some(r) = replies.next_reply() {
            match r {
                Ok(reply) if reply.is_preliminary() => continue,
                Ok(reply) if reply.code == 220 => {
                    let _ = s.write_all(b"QUIT\r\n").await;
                    let _ = s.flush().await;
                    return Ok(started.elapsed());
                }
                Ok(reply) => return Err(CheckError::Unexpected(reply.text_lossy())),
                Err(_) => return Err(CheckError::Unexpected("malformed reply".into())),
            }
        }
        if s.read_buf(replies.buffer_mut()).await? == 0 {
            return Err(CheckError::Closed);
        }
    }
}

/// One check: connect (and TLS for an implicit-TLS backend), read the
/// greeting, expect 220, say QUIT.
pub async fn check_once(
    spec: &BackendSpec,
    timeout: Duration,
    tls: Option<&CheckTls>,
    proxy: Option<&[u8]>,
) -> Result<Duration, CheckError> {
    let started = Instant::now();
    let attempt = async {
        let mut s = TcpStream::connect(spec.addr).await?;
        if let Some(header) = proxy {
            // A backend that expects PROXY headers waits for one first.
            s.write_all(header).await?;
        }
        if let Some(t) = tls {
            let s = t.connector.connect(t.name.clone(), s).await?;
            return greet(s, started).await;
        }
        greet(s, started).await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| CheckError::Timeout(timeout))?
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

/// Checks `spec` every `interval` until `cancel`.
pub async fn check_loop(
    spec: BackendSpec,
    health: Arc<Health>,
    how: CheckHow,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let CheckHow {
        kind,
        interval,
        timeout,
        tls,
        proxy,
    } = how;
    let label = spec.label();
    let name = label.as_str();
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = async {
                match kind {
                    CheckKind::FtpGreeting => {
                        check_once(&spec, timeout, tls.as_ref(), proxy.as_deref()).await
                    }
                    CheckKind::Connect => connect_once(&spec, timeout).await,
                }
            } => r,
        };
        let ok = result.is_ok();
        metrics
            .health_checks_total
            .with_label_values(&[name, if ok { "success" } else { "failure" }])
            .inc();
        if let Ok(took) = &result {
            metrics
                .health_check_seconds
                .with_label_values(&[name])
                .observe(took.as_secs_f64());
        }
        match (health.record(ok), &result) {
            (Some(Transition::Up), _) => info!(backend = name, "backend is up"),
            (Some(Transition::Down), Err(e)) => {
                warn!(backend = name, error = %e, "backend is down: no new sessions go to it")
            }
            _ => {}
        }
        metrics
            .backend_up
            .with_label_values(&[name])
            .set(health.is_up() as i64);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
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
            addr,
            weight: 1,
            drain: false,
        };
        let open = spec(l.local_addr().unwrap());
        assert!(connect_once(&open, Duration::from_secs(2)).await.is_ok());
        assert!(
            check_once(&open, Duration::from_millis(200), None, None)
                .await
                .is_err(),
            "an FTP check needs a greeting"
        );
        drop(l);
        assert!(connect_once(&open, Duration::from_secs(2)).await.is_err());
    }

    #[test]
    fn first_failure_takes_an_unknown_backend_down() {
        let h = Health::new(2, 3);
        assert_eq!(h.record(false), Some(Transition::Down));
        assert!(!h.usable());
    }
}
