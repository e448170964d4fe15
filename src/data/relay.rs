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

/// How long the client-to-backend direction may stay open after the backend
/// has closed its side (a client that sent ABOR may never close).
const LINGER_AFTER_BACKEND_DONE: Duration = Duration::from_secs(10);

/// Bytes moved and the first error seen.
#[derive(Debug, Default)]
pub struct RelayOutcome {
    /// Client to backend (uploads).
    pub up: u64,
    /// Backend to client (downloads, listings).
    pub down: u64,
    /// The first I/O error, if any direction failed.
    pub error: Option<io::Error>,
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

type ReadSide = Box<dyn AsyncRead + Send + Unpin>;
type WriteSide = Box<dyn AsyncWrite + Send + Unpin>;

impl DataStream {
    /// Read and write halves. TCP splits without a lock; TLS through
    /// `tokio::io::split`. Shutting the write half of a TLS stream sends
    /// close_notify before the TCP FIN (vsftpd answers an upload without it
    /// with 426).
    ///
    /// Also returns, for TLS, a duplicate of the socket's descriptor: the
    /// way to end the TCP connection without close_notify when the other
    /// side failed (an abort must not look like a complete upload).
    fn into_halves(self) -> (ReadSide, WriteSide, Option<OwnedFd>) {
        match self {
            DataStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w), None)
            }
            DataStream::ServerTls(s) => {
                let fd = s.get_ref().0.as_fd().try_clone_to_owned().ok();
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w), fd)
            }
            DataStream::ClientTls(s) => {
                let fd = s.get_ref().0.as_fd().try_clone_to_owned().ok();
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w), fd)
            }
        }
    }
}

/// Copies `from` to `to` until EOF, then shuts `to` down for writing. The
/// buffer doubles each time a read fills it, up to `max`. Every write moves
/// `counter` (metrics) and `progress` (this transfer).
async fn copy_half<R, W>(
    mut from: R,
    mut to: W,
    max: usize,
    counter: IntCounter,
    progress: &AtomicU64,
    abort_to: Option<&OwnedFd>,
) -> (u64, Option<io::Error>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; INITIAL_BUFFER.min(max)];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // A TLS peer that closed TCP without close_notify: take it as
            // the end (servers and clients commonly do this after the last byte).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                // Pass the failure on. Plain TCP: dropping `to` sends FIN.
                // TLS: a write half (tokio::io::split) does not close its
                // socket when dropped, and a clean shutdown would send
                // close_notify, telling the server the upload is complete;
                // end the TCP connection under TLS instead, so the server
                // sees a truncated stream (vsftpd: 426).
                if let Some(fd) = abort_to {
                    let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Both);
                }
                return (total, Some(e));
            }
        };
        if let Err(e) = to.write_all(&buf[..n]).await {
            return (total, Some(e));
        }
        total += n as u64;
        counter.inc_by(n as u64);
        progress.fetch_add(n as u64, Ordering::Relaxed);
        if n == buf.len() && buf.len() < max {
            buf.resize((buf.len() * 2).min(max), 0);
        }
    }
    match to.shutdown().await {
        Ok(()) => (total, None),
        // The peer already closed: every byte was written, nothing is lost.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => (total, None),
        Err(e) => (total, Some(e)),
    }
}

/// Relays both ways until both directions end, with buffers of at most
/// `buffer_max` bytes each; `down_done` fires when the backend-to-client
/// direction has ended (with its byte count and whether it ended cleanly).
pub async fn relay(
    client: DataStream,
    backend: DataStream,
    buffer_max: usize,
    down_done: oneshot::Sender<(u64, bool)>,
    counters: ByteCounters,
    progress: Arc<Progress>,
) -> RelayOutcome {
    let (client_rd, client_wr, client_fd) = client.into_halves();
    let (backend_rd, backend_wr, backend_fd) = backend.into_halves();
    let up = copy_half(
        client_rd,
        backend_wr,
        buffer_max,
        counters.up,
        &progress.up,
        backend_fd.as_ref(),
    );
    let down = async {
        let (n, err) = copy_half(
            backend_rd,
            client_wr,
            buffer_max,
            counters.down,
            &progress.down,
            client_fd.as_ref(),
        )
        .await;
        let _ = down_done.send((n, err.is_none()));
        (n, err)
    };
    join_directions(up, down).await
}

/// Waits for both directions; once the backend-to-client one has ended, the
/// other gets [`LINGER_AFTER_BACKEND_DONE`] to finish.
async fn join_directions<U, D>(up: U, down: D) -> RelayOutcome
where
    U: std::future::Future<Output = (u64, Option<io::Error>)>,
    D: std::future::Future<Output = (u64, Option<io::Error>)>,
{
    tokio::pin!(up, down);
    let mut out = RelayOutcome::default();
    tokio::select! {
        (n, err) = &mut up => {
            out.up = n;
            out.error = err;
            let (n, err) = down.await;
            out.down = n;
            out.error = out.error.or(err);
        }
        (n, err) = &mut down => {
            out.down = n;
            out.error = err;
            match tokio::time::timeout(LINGER_AFTER_BACKEND_DONE, up).await {
                Ok((n, err)) => {
                    out.up = n;
                    out.error = out.error.or(err);
                }
                Err(_) => tracing::debug!("client kept its data connection open after the backend closed; dropped"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

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
        let up =
            tokio::spawn(
                async move { copy_half(c_rd, b_wr, 16 * 1024 * 1024, c2, &p1.up, None).await },
            );
        let down = tokio::spawn(async move {
            copy_half(
                b_rd,
                c_wr,
                4096,
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
        let task = tokio::spawn(relay(
            DataStream::Tcp(proxy_client),
            DataStream::Tcp(proxy_backend),
            DEFAULT_BUFFER_MAX,
            tx,
            counters.clone(),
            Arc::new(Progress::default()),
        ));
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
}
