//! Two-way copy between a client and a backend data connection.
//!
//! Each direction copies until EOF and then half-closes its destination, so
//! an upload's EOF reaches the server while the reverse direction may still be
//! open. Bytes are moved in order; nothing is dropped. The end of the
//! backend-to-client direction is reported as soon as it happens: it means
//! the server has closed its side and every byte it sent has been written to
//! the client, which is when the transfer's final reply may be released (see
//! `session`).
//!
//! The relay borrows both connections and never closes them: the data task
//! that owns them decides how they end. A transfer that completed closes with
//! FIN (and close_notify under TLS); a transfer that was cut (an I/O error,
//! a stall, an abort, the session ending) is ended with a TCP reset
//! ([`DataStream::reset`]), so that no peer mistakes a cut stream for a
//! complete one (a clean FIN after a partial download reads as success to a
//! client that does not check the final reply).
//!
//! Each direction copies through its own buffer, which starts at
//! [`INITIAL_BUFFER`] and doubles whenever a read fills it, up to the
//! configured cap (`relay_buffer_max`, default 4 MiB): a bulk transfer gets
//! few large system calls, an idle or slow one stays small. Measured on
//! loopback, buffer size is what decides throughput, and splice(2) through a
//! pipe gained nothing over a large buffer (docs/PERFORMANCE.md).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Starting size of each direction's buffer.
pub const INITIAL_BUFFER: usize = 128 * 1024;

/// Default cap of each direction's buffer (`relay_buffer_max`).
pub const DEFAULT_BUFFER_MAX: usize = 4 * 1024 * 1024;

/// With [`RelayLimits::quickack`], the first bytes of a transfer that are
/// acknowledged at once read by read (a listing, a small file).
pub const QUICKACK_BYTES: u64 = 64 * 1024;

/// Default of `data_stall_timeout`: a transfer that moves no byte in either
/// direction for this long is cut (vsftpd's `data_connection_timeout`).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the client-to-backend direction of an FTP data connection may
/// stay open after the backend has closed its side (a client that sent ABOR
/// may never close).
pub const LINGER_AFTER_BACKEND_DONE: Duration = Duration::from_secs(10);

/// The limits a relay runs under.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// First size of each direction's buffer (it doubles while reads fill it).
    pub initial: usize,
    /// Largest buffer per direction (`relay_buffer_max`).
    pub buffer_max: usize,
    /// No byte moved in either direction for this long: the relay is cut
    /// (`data_stall_timeout` for FTP data; none for plain TCP listeners,
    /// whose SSH sessions may sit idle for hours).
    pub stall: Option<Duration>,
    /// Once the backend-to-client direction has ended cleanly, how long the
    /// other may go on (FTP data: [`LINGER_AFTER_BACKEND_DONE`]; plain TCP:
    /// no limit, a half-closed connection is legitimate).
    pub linger: Option<Duration>,
    /// Acknowledge the backend's data at once (`TCP_QUICKACK`) instead of
    /// after the kernel's delayed-ACK timer: after each read of a
    /// transfer's first [`QUICKACK_BYTES`], and at its end (the FIN). vsftpd
    /// closes a data connection with `SO_LINGER` on and sends its 226 only
    /// when the peer has acknowledged the last byte and the FIN, so on a
    /// session that has been going for a while a delayed ACK costs 40 ms or
    /// more on every transfer (docs/PERFORMANCE.md, "Delayed ACKs"). Not
    /// after every read of a bulk transfer: an ACK per segment costs the
    /// sender throughput.
    pub quickack: bool,
}

impl RelayLimits {
    /// The limits of an FTP data connection.
    pub fn data(buffer_max: usize, stall: Duration) -> Self {
        RelayLimits {
            initial: INITIAL_BUFFER,
            buffer_max,
            stall: Some(stall),
            linger: Some(LINGER_AFTER_BACKEND_DONE),
            quickack: true,
        }
    }

    /// The limits of a plain TCP listener's connection: most are
    /// interactive (SSH), so buffers start small.
    pub fn tcp(buffer_max: usize) -> Self {
        RelayLimits {
            initial: 16 * 1024,
            buffer_max,
            stall: None,
            linger: None,
            quickack: false,
        }
    }
}

/// Which connection of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The client's.
    Client,
    /// The backend's.
    Backend,
}

/// Bytes moved and how the relay ended.
#[derive(Debug, Default)]
pub struct RelayOutcome {
    /// Client to backend (uploads).
    pub up: u64,
    /// Backend to client (downloads, listings).
    pub down: u64,
    /// The backend-to-client direction reached the backend's end of stream
    /// and every byte before it was written to the client (its FIN sent).
    pub down_clean: bool,
    /// The first I/O error (or stall), if the relay was cut.
    pub error: Option<io::Error>,
    /// The connection the error came from (reading it or writing to it).
    pub error_on: Option<Leg>,
    /// The client's direction reached its end of stream first (plain TCP:
    /// who closed first).
    pub client_ended_first: bool,
}

/// Live byte counters of the two directions (metrics), moved as bytes are
/// written so a scrape during a long transfer sees it progress.
#[derive(Debug, Clone)]
pub struct ByteCounters {
    /// Client to backend.
    pub up: IntCounter,
    /// Backend to client.
    pub down: IntCounter,
}

/// Bytes written so far in each direction of one transfer, readable by its
/// session at any time (an aborted transfer still reports what it moved).
#[derive(Debug, Default)]
pub struct Progress {
    /// Client to backend.
    pub up: AtomicU64,
    /// Backend to client.
    pub down: AtomicU64,
}

impl Progress {
    /// (up, down) now.
    pub fn get(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }

    fn total(&self) -> u64 {
        let (up, down) = self.get();
        up.wrapping_add(down)
    }
}

/// A data connection: plain TCP, or TLS toward the client (ftpgate is the
/// TLS server) or toward the backend (ftpgate is the TLS client).
#[derive(Debug)]
pub enum DataStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, ftpgate as server.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, ftpgate as client.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

type ReadSide<'a> = Box<dyn AsyncRead + Send + Unpin + 'a>;
type WriteSide<'a> = Box<dyn AsyncWrite + Send + Unpin + 'a>;

impl DataStream {
    /// The TCP connection underneath.
    fn tcp(&self) -> &TcpStream {
        match self {
            DataStream::Tcp(s) => s,
            DataStream::ServerTls(s) => s.get_ref().0,
            DataStream::ClientTls(s) => s.get_ref().0,
        }
    }

    /// Borrowed read and write halves. Neither closes anything when
    /// dropped: shutting the write half down sends FIN (after close_notify
    /// under TLS; vsftpd answers an upload without it with 426), and only
    /// the owner closes the connection.
    fn halves(&mut self) -> (ReadSide<'_>, WriteSide<'_>) {
        match self {
            DataStream::Tcp(s) => {
                let (r, w) = s.split();
                (Box::new(r), Box::new(w))
            }
            DataStream::ServerTls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (Box::new(r), Box::new(w))
            }
            DataStream::ClientTls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (Box::new(r), Box::new(w))
            }
        }
    }

    /// Ends the connection with a TCP reset: no FIN and no close_notify,
    /// so the peer cannot take what it received for the whole stream.
    pub fn reset(self) {
        arm_reset(self.tcp());
        drop(self);
    }

    /// Makes closing this connection a reset ([`arm_reset`]).
    pub fn arm_reset(&self) {
        arm_reset(self.tcp());
    }
}

/// Makes closing `tcp` send a reset instead of FIN (SO_LINGER 0): how a
/// data connection whose transfer did not complete is closed (the data
/// task's `RelayLegs`); shutting down the write side still sends FIN.
pub fn arm_reset(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

/// Copies `from` to `to` until EOF, then shuts `to` down for writing. The
/// buffer doubles each time a read fills it, up to `max`. Every write moves
/// `counter` (metrics) and `progress` (this transfer), partial writes
/// included, so a slow reader that still reads is never taken for a stall.
/// An error names the leg it came from (`legs`: from, to). `ack_now`: the
/// socket `from` reads, to acknowledge at once ([`RelayLimits::quickack`]).
async fn copy_half<R, W>(
    mut from: R,
    mut to: W,
    (from_leg, to_leg): (Leg, Leg),
    (initial, max): (usize, usize),
    counter: IntCounter,
    progress: &AtomicU64,
    ack_now: Option<&OwnedFd>,
) -> (u64, Option<(io::Error, Leg)>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Reads go into spare capacity, never zeroed first: a short transfer
    // (a listing) touches one page of a large buffer, not all of them.
    let mut buf: Vec<u8> = Vec::with_capacity(initial.min(max));
    let mut total = 0u64;
    loop {
        buf.clear();
        let read = from.read_buf(&mut buf).await;
        if let Some(fd) = ack_now {
            if matches!(read, Ok(0) | Err(_)) || total < QUICKACK_BYTES {
                // Linux leaves quick-ACK mode by itself; setting it again
                // sends a pending ACK now. Best effort: a failure only
                // costs time.
                let _ = socket2::SockRef::from(fd).set_quickack(true);
            }
        }
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            // A TLS peer that closed TCP without close_notify: take it as
            // the end (servers and clients commonly do this after the last byte).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return (total, Some((e, from_leg))),
        };
        let mut at = 0;
        while at < n {
            match to.write(&buf[at..n]).await {
                Ok(0) => return (total, Some((io::ErrorKind::WriteZero.into(), to_leg))),
                Ok(w) => {
                    at += w;
                    total += w as u64;
                    counter.inc_by(w as u64);
                    progress.fetch_add(w as u64, Ordering::Relaxed);
                }
                Err(e) => return (total, Some((e, to_leg))),
            }
        }
        if n == buf.capacity() && buf.capacity() < max {
            let more = (buf.capacity() * 2).min(max) - buf.len();
            buf.reserve_exact(more);
        }
    }
    let flushed = async {
        to.flush().await?;
        to.shutdown().await
    };
    match flushed.await {
        Ok(()) => (total, None),
        // The peer already closed: every byte was written, nothing is lost.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => (total, None),
        Err(e) => (total, Some((e, to_leg))),
    }
}

/// Resolves once no byte has moved in either direction for a whole
/// `limit` (checked every `limit`, so a stall is noticed within two);
/// never without a limit.
async fn watch_stall(progress: &Progress, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    let mut last = progress.total();
    loop {
        tokio::time::sleep(limit).await;
        let now = progress.total();
        if now == last {
            return;
        }
        last = now;
    }
}

/// Relays both ways between borrowed connections until both directions
/// end, the first error, or a stall; `down_done` (if any) fires when the
/// backend-to-client direction has ended (with its byte count and whether
/// it ended cleanly). The caller closes or resets the connections. The one
/// relay of ftpgate: FTP data connections and plain TCP listeners.
pub async fn relay(
    client: &mut DataStream,
    backend: &mut DataStream,
    limits: RelayLimits,
    down_done: Option<oneshot::Sender<(u64, bool)>>,
    counters: ByteCounters,
    progress: Arc<Progress>,
) -> RelayOutcome {
    // A second descriptor of the backend's socket, for TCP_QUICKACK while
    // the stream itself is split; if it cannot be had, ACKs are the kernel's.
    let ack_now = limits
        .quickack
        .then(|| backend.tcp().as_fd().try_clone_to_owned().ok())
        .flatten();
    let (client_rd, client_wr) = client.halves();
    let (backend_rd, backend_wr) = backend.halves();
    let up = copy_half(
        client_rd,
        backend_wr,
        (Leg::Client, Leg::Backend),
        (limits.initial, limits.buffer_max),
        counters.up,
        &progress.up,
        None,
    );
    let down = async {
        let (n, err) = copy_half(
            backend_rd,
            client_wr,
            (Leg::Backend, Leg::Client),
            (limits.initial, limits.buffer_max),
            counters.down,
            &progress.down,
            ack_now.as_ref(),
        )
        .await;
        if let Some(tx) = down_done {
            let _ = tx.send((n, err.is_none()));
        }
        (n, err)
    };
    join_directions(up, down, watch_stall(&progress, limits.stall), limits).await
}

/// Waits for both directions. The first error (or a stall) ends the relay
/// at once: the transfer is cut, and waiting for the other direction would
/// only delay the news. Once the backend-to-client direction has ended
/// cleanly, the other gets `limits.linger` to finish.
async fn join_directions<U, D, S>(up: U, down: D, stall: S, limits: RelayLimits) -> RelayOutcome
where
    U: std::future::Future<Output = (u64, Option<(io::Error, Leg)>)>,
    D: std::future::Future<Output = (u64, Option<(io::Error, Leg)>)>,
    S: std::future::Future<Output = ()>,
{
    tokio::pin!(up, down, stall);
    let mut out = RelayOutcome::default();
    let stalled = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no data moved for {}s (data_stall_timeout)",
                limits.stall.unwrap_or_default().as_secs_f64()
            ),
        )
    };
    let fail = |out: &mut RelayOutcome, err: Option<(io::Error, Leg)>| {
        if let Some((e, leg)) = err {
            out.error = Some(e);
            out.error_on = Some(leg);
        }
    };
    tokio::select! {
        // The download's end first: when both are ready, a clean end of
        // the backend's data must not be reported as a cut.
        biased;
        (n, err) = &mut down => {
            out.down = n;
            out.down_clean = err.is_none();
            if err.is_some() {
                fail(&mut out, err);
                return out;
            }
            let rest = match limits.linger {
                Some(d) => tokio::time::timeout(d, &mut up).await.ok(),
                None => Some((&mut up).await),
            };
            match rest {
                Some((n, err)) => {
                    out.up = n;
                    fail(&mut out, err);
                }
                None => tracing::debug!("client kept its data connection open after the backend closed; dropped"),
            }
        }
        (n, err) = &mut up => {
            out.up = n;
            if err.is_some() {
                fail(&mut out, err);
                return out;
            }
            out.client_ended_first = true;
            tokio::select! {
                (n, err) = &mut down => {
                    out.down = n;
                    out.down_clean = err.is_none();
                    fail(&mut out, err);
                }
                () = &mut stall => out.error = Some(stalled()),
            }
        }
        () = &mut stall => out.error = Some(stalled()),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const LIMITS: RelayLimits = RelayLimits {
        initial: INITIAL_BUFFER,
        buffer_max: DEFAULT_BUFFER_MAX,
        stall: Some(DEFAULT_STALL_TIMEOUT),
        linger: Some(LINGER_AFTER_BACKEND_DONE),
        quickack: true,
    };

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn upload_eof_reaches_the_server_and_bytes_keep_order() {
        upload_and_trailer().await;
    }

    /// A buffer that grows to 16 MiB, and one capped below its start size.
    #[tokio::test]
    async fn growing_and_capped_buffers_keep_order_and_half_close() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut server) = pair().await;
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let (c_rd, c_wr) = proxy_client.into_split();
        let (b_rd, b_wr) = proxy_backend.into_split();
        let counter = IntCounter::new("t", "t").unwrap();
        let progress = Arc::new(Progress::default());
        let (p1, p2) = (Arc::clone(&progress), Arc::clone(&progress));
        let c2 = counter.clone();
        let up = tokio::spawn(async move {
            copy_half(
                c_rd,
                b_wr,
                (Leg::Client, Leg::Backend),
                (INITIAL_BUFFER, 16 * 1024 * 1024),
                c2,
                &p1.up,
                None,
            )
            .await
        });
        let down = tokio::spawn(async move {
            copy_half(
                b_rd,
                c_wr,
                (Leg::Backend, Leg::Client),
                (INITIAL_BUFFER, 4096),
                IntCounter::new("d", "d").unwrap(),
                &p2.down,
                None,
            )
            .await
        });
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
        drop(server);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(up.await.unwrap().0, 1_000_000);
        assert_eq!(counter.get(), 1_000_000, "the metric counts every byte");
        assert_eq!(progress.get(), (1_000_000, 0));
        assert_eq!(down.await.unwrap().0, 0);
    }

    async fn upload_and_trailer() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut server) = pair().await;
        let (tx, rx) = oneshot::channel();
        let counters = ByteCounters {
            up: IntCounter::new("u", "u").unwrap(),
            down: IntCounter::new("d", "d").unwrap(),
        };
        let c2 = counters.clone();
        let task = tokio::spawn(async move {
            let (mut c, mut b) = (
                DataStream::Tcp(proxy_client),
                DataStream::Tcp(proxy_backend),
            );
            relay(
                &mut c,
                &mut b,
                LIMITS,
                Some(tx),
                c2,
                Arc::new(Progress::default()),
            )
            .await
        });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            rest
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "upload corrupted");
        server.write_all(b"226-ish trailer").await.unwrap();
        drop(server);
        assert_eq!(writer.await.unwrap(), b"226-ish trailer");
        assert_eq!(rx.await.unwrap(), (15, true));
        let out = task.await.unwrap();
        assert_eq!((out.up, out.down), (3_000_000, 15));
        assert_eq!((counters.up.get(), counters.down.get()), (3_000_000, 15));
        assert!(out.error.is_none());
    }

    fn counters() -> ByteCounters {
        ByteCounters {
            up: IntCounter::new("u", "u").unwrap(),
            down: IntCounter::new("d", "d").unwrap(),
        }
    }

    /// A client that stops reading: once nothing moves for the stall
    /// limit, the relay ends with an error instead of waiting forever.
    #[tokio::test]
    async fn a_stalled_client_ends_the_relay_with_an_error() {
        let (client, proxy_client) = pair().await;
        let (proxy_backend, mut server) = pair().await;
        let (tx, rx) = oneshot::channel();
        let limits = RelayLimits {
            initial: 16 * 1024,
            buffer_max: 64 * 1024,
            stall: Some(Duration::from_millis(300)),
            linger: None,
            quickack: false,
        };
        let task = tokio::spawn(async move {
            let (mut c, mut b) = (
                DataStream::Tcp(proxy_client),
                DataStream::Tcp(proxy_backend),
            );
            let out = relay(
                &mut c,
                &mut b,
                limits,
                Some(tx),
                counters(),
                Arc::new(Progress::default()),
            )
            .await;
            (out, c)
        });
        // Far more than the socket buffers hold; the client never reads.
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 1 << 20];
            for _ in 0..64 {
                if server.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let (out, c) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the stall limit ends the relay")
            .unwrap();
        assert_eq!(
            out.error.as_ref().map(|e| e.kind()),
            Some(io::ErrorKind::TimedOut)
        );
        assert!(!out.down_clean);
        assert!(rx.await.is_err(), "the download did not end");
        c.reset();
        writer.abort();
        drop(client);
    }

    /// A backend that resets its data connection mid-download: the relay
    /// ends at once with the error, and the download is not clean.
    #[tokio::test]
    async fn a_reset_backend_is_an_error_not_an_end() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut server) = pair().await;
        let (tx, _rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut c, mut b) = (
                DataStream::Tcp(proxy_client),
                DataStream::Tcp(proxy_backend),
            );
            let out = relay(
                &mut c,
                &mut b,
                LIMITS,
                Some(tx),
                counters(),
                Arc::new(Progress::default()),
            )
            .await;
            if out.error.is_some() {
                c.reset();
            }
            out
        });
        server.write_all(b"partial").await.unwrap();
        let mut first = [0u8; 7];
        client.read_exact(&mut first).await.unwrap();
        DataStream::Tcp(server).reset();
        let out = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(out.error.is_some() && !out.down_clean, "{out:?}");
        // The client sees a reset, never a clean end of stream.
        let mut rest = Vec::new();
        let end = client.read_to_end(&mut rest).await;
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset),
            "a cut download must not end with FIN"
        );
    }
}
