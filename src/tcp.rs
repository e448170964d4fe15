//! Plain TCP listeners (`[tcp.NAME]`): every connection is relayed byte for
//! byte to a member of the listener's pool, with no FTP parsing, so one
//! ftpgate fronts SFTP/SSH and other TCP services next to FTP.
//!
//! A connection passes the same accept loop and admission limits as an FTP
//! session (`accept`), then takes the first member of the pool's preference
//! order (down and draining members left out) that accepts within
//! `backend_connect_timeout`, and runs through the one relay
//! (`data::relay`, without the FTP data limits) until both directions have
//! ended, one fails, or shutdown cancels it after the drain timeout. There
//! is no protocol to tell a client why it is refused: with no member left
//! the connection is closed at once, and the log says why. Quiet
//! connections are kept open (and dead peers found) by TCP keepalive on
//! both legs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backend::connect_first;
use crate::data::relay::{relay, ByteCounters, DataStream, Leg, Progress, RelayLimits};
use crate::error::{End, Error, ErrorKind};
use crate::limits::Admitted;
use crate::live::{Live, Shared};
use crate::net::{canonical_ip, ListenAddr};
use crate::session::net::tune_control;

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
    let Ok(bound) = l.local_addr() else {
        warn!(tcp = %name, "a plain TCP listener has no local address; not serving it");
        return;
    };
    let listener = ListenAddr::new(bound);
    let what = format!("tcp.{name}");
    crate::accept::accept_loop(l, &what, stop, |stream, peer| {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let live = shared.live();
        let Ok(admitted) = crate::accept::admit(&shared, &live, peer, &listener.label(), id) else {
            // Closed at once: there is no protocol to say why.
            return;
        };
        let conn = Conn {
            name: name.clone(),
            listener,
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
    })
    .await;
}

/// An admitted client connection.
struct Conn {
    /// Its `[tcp.NAME]`.
    name: String,
    /// The listener it came in on (metric label).
    listener: ListenAddr,
    client: TcpStream,
    peer: SocketAddr,
    id: u64,
    /// Its admission slots, released when the connection ends.
    _admitted: Admitted,
}

/// How a relayed connection ended.
fn ended(out: &crate::data::relay::RelayOutcome) -> End {
    match (&out.error, out.error_on) {
        (Some(e), Some(Leg::Client)) => End::ClientIo(e.to_string()),
        (Some(e), _) => End::BackendIo(e.to_string()),
        (None, _) if out.client_ended_first => End::ClientClosed,
        (None, _) => End::BackendClosed,
    }
}

/// Serves one connection to its end with the configuration `live`.
async fn serve(shared: Arc<Shared>, live: Arc<Live>, conn: Conn, cancel: CancellationToken) {
    let started = Instant::now();
    let cfg = &live.config;
    let m = &shared.metrics;
    let (name, id, peer) = (conn.name.as_str(), conn.id, conn.peer);
    let listener = conn.listener.label();
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
            .with_label_values(&[&listener, "-", outcome])
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
        .with_label_values(&[&listener, &backend_name])
        .inc();
    let counters = ByteCounters {
        up: m
            .tcp_bytes_total
            .with_label_values(&[&listener, "to_backend"]),
        down: m
            .tcp_bytes_total
            .with_label_values(&[&listener, "to_client"]),
    };
    let progress = Arc::new(Progress::default());
    let (mut client, mut backend) = (DataStream::Tcp(conn.client), DataStream::Tcp(backend));
    let limits = RelayLimits::tcp(cfg.relay_buffer_max);
    let end = tokio::select! {
        out = relay(&mut client, &mut backend, limits, None, counters, Arc::clone(&progress)) => ended(&out),
        _ = cancel.cancelled() => End::Error(Error::internal(ErrorKind::Shutdown)),
    };
    drop((client, backend));
    m.sessions_active
        .with_label_values(&[&listener, &backend_name])
        .dec();
    m.sessions_total
        .with_label_values(&[&listener, &backend_name, end.outcome()])
        .inc();
    let (up, down) = progress.get();
    info!(
        tcp = name,
        session = id,
        client = %peer,
        backend = %backend_name,
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_up = up,
        bytes_down = down,
        end = %end,
        "tcp connection closed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    fn counters() -> ByteCounters {
        ByteCounters {
            up: prometheus::IntCounter::new("u", "u").unwrap(),
            down: prometheus::IntCounter::new("d", "d").unwrap(),
        }
    }

    /// Relays two connections as a plain TCP listener does.
    async fn run(client: TcpStream, backend: TcpStream, c: ByteCounters) -> (End, (u64, u64)) {
        let progress = Arc::new(Progress::default());
        let (mut a, mut b) = (DataStream::Tcp(client), DataStream::Tcp(backend));
        let out = relay(
            &mut a,
            &mut b,
            RelayLimits::tcp(64 * 1024),
            None,
            c,
            Arc::clone(&progress),
        )
        .await;
        (ended(&out), progress.get())
    }

    /// The client half-closes after its upload; the server still answers,
    /// then closes: every byte arrives in order, both ways.
    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut server) = pair().await;
        let c = counters();
        let metric = c.up.clone();
        let task = tokio::spawn(run(proxy_client, proxy_backend, c));
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
        assert_eq!(end, End::ClientClosed);
        assert_eq!(end.outcome(), "client_closed");
        assert_eq!(moved, (500_000, 15));
        assert_eq!(metric.get(), 500_000);
    }

    /// A backend reset ends the whole connection at once, blamed on the
    /// backend, even though the client keeps its side open.
    #[tokio::test]
    async fn a_reset_ends_both_directions() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, server) = pair().await;
        let task = tokio::spawn(run(proxy_client, proxy_backend, counters()));
        // SO_LINGER 0: close sends RST.
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        let end = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("relay ended")
            .unwrap()
            .0;
        assert_eq!(end.outcome(), "backend_error", "{end:?}");
        let mut rest = Vec::new();
        // EOF or a reset, either way at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .expect("the client's side is closed too");
    }
}
