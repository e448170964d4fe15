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
//! On Linux each direction moves data with splice(2) through a pipe, so bytes
//! never cross into user space (see docs/PERFORMANCE.md); elsewhere, or if a
//! pipe cannot be made, it copies through a buffer. `FTPGATE_RELAY=copy` in
//! the environment forces the copy loop (for benchmarks).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Size of each direction's copy buffer. Large buffers matter for throughput
/// (see docs/PERFORMANCE.md); two per transfer.
pub const BUFFER_SIZE: usize = 128 * 1024;

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

/// Copies `from` to `to` until EOF through a user-space buffer, then shuts
/// `to` down for writing.
async fn copy_half<R, W>(mut from: R, mut to: W) -> (u64, Option<io::Error>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return (total, Some(e)),
        };
        if let Err(e) = to.write_all(&buf[..n]).await {
            return (total, Some(e));
        }
        total += n as u64;
    }
    match to.shutdown().await {
        Ok(()) => (total, None),
        // The peer already closed: every byte was written, nothing is lost.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => (total, None),
        Err(e) => (total, Some(e)),
    }
}

/// Whether to move bytes with splice(2) (Linux) rather than a copy loop.
fn use_splice() -> bool {
    static SPLICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPLICE.get_or_init(|| {
        cfg!(target_os = "linux") && std::env::var("FTPGATE_RELAY").map_or(true, |v| v != "copy")
    })
}

/// Relays both ways until both directions end; `down_done` fires when the
/// backend-to-client direction has ended (with its byte count and whether it
/// ended cleanly).
pub async fn relay(
    client: TcpStream,
    backend: TcpStream,
    down_done: oneshot::Sender<(u64, bool)>,
) -> RelayOutcome {
    #[cfg(target_os = "linux")]
    if use_splice() {
        if let (Ok(up_pipe), Ok(down_pipe)) = (zero_copy::Pipe::new(), zero_copy::Pipe::new()) {
            let up = zero_copy::splice_half(&client, &backend, up_pipe);
            let down = async {
                let (n, err) = zero_copy::splice_half(&backend, &client, down_pipe).await;
                let _ = down_done.send((n, err.is_none()));
                (n, err)
            };
            return join_directions(up, down).await;
        }
        tracing::debug!("no pipe for splice; copying through a buffer");
    }
    let (client_rd, client_wr) = client.into_split();
    let (backend_rd, backend_wr) = backend.into_split();
    let up = copy_half(client_rd, backend_wr);
    let down = async move {
        let (n, err) = copy_half(backend_rd, client_wr).await;
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

#[cfg(target_os = "linux")]
mod zero_copy {
    //! splice(2) from a socket into a pipe and from the pipe into the other
    //! socket, driven by tokio's readiness (no user-space copy).

    use std::io;
    use std::net::Shutdown;
    use std::os::fd::OwnedFd;

    use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Pipe capacity asked for; the kernel may grant less (pipe-max-size).
    const PIPE_SIZE: i32 = 1024 * 1024;

    /// A non-blocking pipe that holds the bytes in flight for one direction.
    pub struct Pipe {
        rd: OwnedFd,
        wr: OwnedFd,
        size: usize,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let (rd, wr) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
            let size = fcntl(&wr, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE))
                .or_else(|_| fcntl(&wr, FcntlArg::F_GETPIPE_SZ))
                .map_or(64 * 1024, |n| n.max(4096) as usize);
            Ok(Pipe { rd, wr, size })
        }
    }

    const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

    /// Moves `from` to `to` until EOF, then shuts `to` down for writing.
    /// The pipe is empty whenever the socket is read, so a splice into it
    /// only waits for the socket.
    pub async fn splice_half(
        from: &TcpStream,
        to: &TcpStream,
        pipe: Pipe,
    ) -> (u64, Option<io::Error>) {
        let mut total = 0u64;
        loop {
            let n = loop {
                if let Err(e) = from.readable().await {
                    return (total, Some(e));
                }
                match from.try_io(Interest::READABLE, || {
                    splice(from, None, &pipe.wr, None, pipe.size, FLAGS).map_err(io::Error::from)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return (total, Some(e)),
                }
            };
            if n == 0 {
                break;
            }
            let mut left = n;
            while left > 0 {
                if let Err(e) = to.writable().await {
                    return (total, Some(e));
                }
                match to.try_io(Interest::WRITABLE, || {
                    splice(&pipe.rd, None, to, None, left, FLAGS).map_err(io::Error::from)
                }) {
                    Ok(m) => {
                        left -= m;
                        total += m as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return (total, Some(e)),
                }
            }
        }
        match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
            Ok(()) => (total, None),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => (total, None),
            Err(e) => (total, Some(e)),
        }
    }
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

    /// The same with the copy loop (the splice path is the default on Linux).
    #[tokio::test]
    async fn copy_loop_keeps_order_and_half_close() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut server) = pair().await;
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let (c_rd, c_wr) = proxy_client.into_split();
        let (b_rd, b_wr) = proxy_backend.into_split();
        let up = tokio::spawn(copy_half(c_rd, b_wr));
        let down = tokio::spawn(copy_half(b_rd, c_wr));
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
        drop(server);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(up.await.unwrap().0, 1_000_000);
        assert_eq!(down.await.unwrap().0, 0);
    }

    async fn upload_and_trailer() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut server) = pair().await;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(relay(proxy_client, proxy_backend, tx));
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
        assert!(out.error.is_none());
    }
}
