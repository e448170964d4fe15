//! Plain TCP listeners (`[tcp.NAME]`): every connection is relayed byte for
//! byte to a member of the listener's pool, with no FTP parsing, so one
//! ftpgate fronts SFTP/SSH and other TCP services next to FTP.
//!
//! A connection passes the same admission limits as an FTP session, then
//! takes the first member of the pool's preference order (down and draining
//! members left out) that accepts within `backend_connect_timeout`, and
//! relays both ways with half-close until both directions have ended, one
//! fails, or shutdown cancels it after the drain timeout. There is no
//! protocol to tell a client why it is refused: with no member left the
//! connection is closed at once, and the log says why. Quiet connections
//! are kept open (and dead peers found) by TCP keepalive on both legs.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backend::connect_first;
use crate::limits::{Admitted, Limits};
use crate::live::{Live, Shared};
use crate::net::canonical_ip;
use crate::session::net::tune_control;

/// First size of each direction's buffer. Most of these connections are
/// interactive (SSH), so it starts small and doubles while reads fill it,
/// up to `relay_buffer_max`.
const INITIAL_BUFFER: usize = 16 * 1024;

/// One side of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

/// How a relayed connection ended.
#[derive(Debug)]
enum End {
    /// Both directions ended cleanly; `first` closed its side first.
    Closed { first: Side },
    /// A read from or write to `side` failed.
    Failed { side: Side, error: io::Error },
    /// Cancelled by shutdown (after the drain timeout).
    Shutdown,
}

impl End {
    /// The `outcome` label of `ftpgate_sessions_total` (as FTP sessions: a
    /// client's I/O error counts as `client_closed`).
    fn outcome(&self) -> &'static str {
        match self {
            End::Closed {
                first: Side::Client,
            }
            | End::Failed {
                side: Side::Client, ..
            } => "client_closed",
            End::Closed {
                first: Side::Backend,
            } => "backend_closed",
            End::Failed {
                side: Side::Backend,
                ..
            } => "backend_error",
            End::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed {
                first: Side::Client,
            } => f.write_str("client closed first"),
            End::Closed {
                first: Side::Backend,
            } => f.write_str("backend closed first"),
            End::Failed {
                side: Side::Client,
                error,
            } => write!(f, "client i/o error: {error}"),
            End::Failed {
                side: Side::Backend,
                error,
            } => write!(f, "backend i/o error: {error}"),
            End::Shutdown => f.write_str("closed by shutdown"),
        }
    }
}

/// Bytes moved so far each way; read after the relay ends, however it ends.
#[derive(Debug, Default)]
struct Moved {
    to_backend: AtomicU64,
    to_client: AtomicU64,
}

/// Accepts connections on one address of `[tcp.NAME]` until `stop`; each
/// admitted one runs in `conns` with a child token of `shutdown`.
pub async fn accept_tcp(
    name: String,
    l: TcpListener,
    shared: Arc<Shared>,
    conns: TaskTracker,
    stop: CancellationToken,
    shutdown: CancellationToken,
    ids: Arc<AtomicU64>,
) {
    let listener = l
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = l.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(tcp = %name, error = %e, "accept failed on a plain TCP listener");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let live = shared.live();
        let limits = Limits {
            max_sessions: live.config.max_sessions,
            max_sessions_per_client: live.config.max_sessions_per_client,
            max_rate_per_client: live.config.max_connection_rate_per_client,
        };
        match shared
            .admission
            .admit(canonical_ip(peer.ip()), limits, std::time::Instant::now())
        {
            Ok(admitted) => {
                let conn = Conn {
                    name: name.clone(),
                    listener: listener.clone(),
                    client: stream,
                    peer,
                    id,
                    _admitted: admitted,
                };
                conns.spawn(serve(
                    Arc::clone(&shared),
                    live,
                    conn,
                    shutdown.child_token(),
                ));
            }
            Err(hit) => {
                shared.metrics.limit_hit(hit.key());
                shared
                    .metrics
                    .sessions_total
                    .with_label_values(&[&listener, "-", "refused_limit"])
                    .inc();
                warn!(tcp = %name, session = id, client = %peer, limit = hit.key(), "connection closed: limit reached");
            }
        }
    }
}

/// An admitted client connection.
struct Conn {
    /// Its `[tcp.NAME]`.
    name: String,
    /// The local listen address (metric label).
    listener: String,
    client: TcpStream,
    peer: SocketAddr,
    id: u64,
    /// Its admission slots, released when the connection ends.
    _admitted: Admitted,
}

/// Serves one connection to its end with the configuration `live`.
async fn serve(shared: Arc<Shared>, live: Arc<Live>, conn: Conn, cancel: CancellationToken) {
    let started = Instant::now();
    let cfg = &live.config;
    let m = &shared.metrics;
    let (name, id, peer) = (conn.name.as_str(), conn.id, conn.peer);
    tune_control(&conn.client, cfg.tcp_keepalive, false);
    let pool = cfg
        .tcp
        .iter()
        .find(|t| t.name == name)
        .map_or("-", |t| t.pool.as_str());
    let choices = live
        .pool(pool)
        .map(|p| p.preference(canonical_ip(peer.ip())))
        .unwrap_or_default();
    let count_refused = |outcome: &str| {
        m.sessions_total
            .with_label_values(&[&conn.listener, "-", outcome])
            .inc()
    };
    if choices.is_empty() {
        count_refused("no_backend");
        warn!(tcp = name, session = id, client = %peer, pool, "every backend of the pool is down or draining; connection closed");
        return;
    }
    let connected = tokio::select! {
        c = connect_first(choices, cfg.backend_connect_timeout, id) => c,
        _ = cancel.cancelled() => return count_refused("shutdown"),
    };
    let Some((choice, backend, _active)) = connected else {
        count_refused("no_backend");
        warn!(tcp = name, session = id, client = %peer, pool, "no backend of the pool is reachable; connection closed");
        return;
    };
    tune_control(&backend, cfg.tcp_keepalive, false);
    let backend_name = choice.name;
    m.sessions_active
        .with_label_values(&[&conn.listener, &backend_name])
        .inc();
    let counters = [
        m.tcp_bytes_total
            .with_label_values(&[&conn.listener, "to_backend"]),
        m.tcp_bytes_total
            .with_label_values(&[&conn.listener, "to_client"]),
    ];
    let moved = Moved::default();
    let end = tokio::select! {
        e = relay(conn.client, backend, cfg.relay_buffer_max, counters, &moved) => e,
        _ = cancel.cancelled() => End::Shutdown,
    };
    m.sessions_active
        .with_label_values(&[&conn.listener, &backend_name])
        .dec();
    m.sessions_total
        .with_label_values(&[&conn.listener, &backend_name, end.outcome()])
        .inc();
    info!(
        tcp = name,
        session = id,
        client = %peer,
        backend = %backend_name,
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_up = moved.to_backend.load(Ordering::Relaxed),
        bytes_down = moved.to_client.load(Ordering::Relaxed),
        end = %end,
        "tcp connection closed"
    );
}

/// Relays both ways. A direction that reaches EOF half-closes its
/// destination and the other goes on; the first I/O error ends both (the
/// sockets close when the halves drop).
async fn relay(
    client: TcpStream,
    backend: TcpStream,
    buffer_max: usize,
    [to_backend, to_client]: [IntCounter; 2],
    moved: &Moved,
) -> End {
    let (client_rd, client_wr) = client.into_split();
    let (backend_rd, backend_wr) = backend.into_split();
    let up = pump(
        client_rd,
        backend_wr,
        (Side::Client, Side::Backend),
        buffer_max,
        to_backend,
        &moved.to_backend,
    );
    let down = pump(
        backend_rd,
        client_wr,
        (Side::Backend, Side::Client),
        buffer_max,
        to_client,
        &moved.to_client,
    );
    tokio::pin!(up, down);
    let (first, result) = tokio::select! {
        r = &mut up => (Side::Client, r),
        r = &mut down => (Side::Backend, r),
    };
    let result = match (result, first) {
        (Err(e), _) => Err(e),
        (Ok(()), Side::Client) => down.await,
        (Ok(()), Side::Backend) => up.await,
    };
    match result {
        Ok(()) => End::Closed { first },
        Err((side, error)) => End::Failed { side, error },
    }
}

/// Copies `from` to `to` until EOF, then shuts `to` down for writing. An
/// error names the side it came from (`sides`: from, to). Every write moves
/// `counter` (metrics) and `moved` (this connection).
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    (from_side, to_side): (Side, Side),
    max: usize,
    counter: IntCounter,
    moved: &AtomicU64,
) -> Result<(), (Side, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; INITIAL_BUFFER.min(max)];
    loop {
        let n = from.read(&mut buf).await.map_err(|e| (from_side, e))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).await.map_err(|e| (to_side, e))?;
        counter.inc_by(n as u64);
        moved.fetch_add(n as u64, Ordering::Relaxed);
        if n == buf.len() && buf.len() < max {
            buf.resize((buf.len() * 2).min(max), 0);
        }
    }
    match to.shutdown().await {
        Ok(()) => Ok(()),
        // The peer already closed: every byte was written, nothing is lost.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        Err(e) => Err((to_side, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    fn counters() -> [IntCounter; 2] {
        [
            IntCounter::new("u", "u").unwrap(),
            IntCounter::new("d", "d").unwrap(),
        ]
    }

    /// The client half-closes after its upload; the server still answers,
    /// then closes: every byte arrives in order, both ways.
    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut server) = pair().await;
        let c = counters();
        let metric = c[0].clone();
        let task = tokio::spawn(async move {
            let moved = Moved::default();
            let end = relay(proxy_client, proxy_backend, 64 * 1024, c, &moved).await;
            (end, moved)
        });
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "upload corrupted");
        server.write_all(b"reply after EOF").await.unwrap();
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply after EOF");
        let (end, moved) = task.await.unwrap();
        assert!(
            matches!(
                end,
                End::Closed {
                    first: Side::Client
                }
            ),
            "{end:?}"
        );
        assert_eq!(end.outcome(), "client_closed");
        assert_eq!(moved.to_backend.load(Ordering::Relaxed), 500_000);
        assert_eq!(moved.to_client.load(Ordering::Relaxed), 15);
        assert_eq!(metric.get(), 500_000);
    }

    /// A backend reset ends the whole connection at once, blamed on the
    /// backend, even though the client keeps its side open.
    #[tokio::test]
    async fn a_reset_ends_both_directions() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, server) = pair().await;
        let task = tokio::spawn(async move {
            let moved = Moved::default();
            relay(proxy_client, proxy_backend, 64 * 1024, counters(), &moved).await
        });
        // SO_LINGER 0: close sends RST.
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        let end = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("relay ended")
            .unwrap();
        assert_eq!(end.outcome(), "backend_error", "{end:?}");
        let mut rest = Vec::new();
        // EOF or a reset, either way at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .expect("the client's side is closed too");
    }
}
