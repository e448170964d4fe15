//! Control-connection halves that are plain TCP or TLS, so the session loop
//! reads and writes one type whether or not AUTH TLS (or implicit TLS) has
//! happened. Plain halves stay tokio's owned TCP halves (no lock, and the
//! urgent-data drain can reach the socket); TLS halves are `tokio::io::split`
//! of a tokio-rustls stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// TLS toward a client (ftpgate is the TLS server).
pub type ClientTls = tokio_rustls::server::TlsStream<TcpStream>;
/// TLS toward a backend (ftpgate is the TLS client).
pub type BackendTls = tokio_rustls::client::TlsStream<TcpStream>;

/// The read half of a control connection.
#[derive(Debug)]
pub enum Reader<T> {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// Inside TLS.
    Tls(ReadHalf<T>),
    /// Taken for a TLS upgrade that did not finish.
    Gone,
}

/// The write half of a control connection.
#[derive(Debug)]
pub enum Writer<T> {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// Inside TLS.
    Tls(WriteHalf<T>),
    /// Taken for a TLS upgrade that did not finish.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection taken by a failed TLS upgrade",
    )
}

impl<T> Reader<T> {
    /// The TCP half, when not inside TLS.
    pub fn plain(&self) -> Option<&OwnedReadHalf> {
        match self {
            Reader::Plain(r) => Some(r),
            _ => None,
        }
    }
}

/// Puts plain halves back together for a TLS upgrade; `None` if they are not
/// plain TCP halves of one connection.
pub fn reunite<T>(r: Reader<T>, w: Writer<T>) -> Option<TcpStream> {
    match (r, w) {
        (Reader::Plain(r), Writer::Plain(w)) => r.reunite(w).ok(),
        _ => None,
    }
}

/// Splits a TLS stream into control halves.
pub fn split_tls<T: AsyncRead + AsyncWrite>(s: T) -> (Reader<T>, Writer<T>) {
    let (r, w) = tokio::io::split(s);
    (Reader::Tls(r), Writer::Tls(w))
}

/// Splits a plain stream into control halves.
pub fn split_plain<T>(s: TcpStream) -> (Reader<T>, Writer<T>) {
    let (r, w) = s.into_split();
    (Reader::Plain(r), Writer::Plain(w))
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Reader<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Plain(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Tls(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Writer<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tls(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_flush(cx),
            Writer::Tls(w) => Pin::new(w).poll_flush(cx),
            Writer::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Gone => Poll::Ready(Err(gone())),
        }
    }
}
