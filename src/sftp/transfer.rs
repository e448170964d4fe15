//! File data between one data connection of the adapter and one SFTP file,
//! in chunks: memory per transfer stays bounded whatever the file size (a
//! chunk buffer each way, and the SFTP client's bounded window of reads or
//! writes in flight).
//!
//! A transfer ends [`Done::Complete`] only when every byte went through: a
//! download wrote the whole file to the data connection and closed it
//! cleanly; an upload read the data connection to its end, every SFTP write
//! was acknowledged and the remote close succeeded. Any other end resets
//! the data connection (never a clean close that a client could take for
//! the end of the file).

use russh_sftp::client::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::ascii::{FromNetwork, ToNetwork};

/// Chunk size of the copy loops.
const CHUNK: usize = 256 * 1024;

/// How a transfer ended.
#[derive(Debug)]
pub enum Done {
    /// Every byte went through (and an upload is closed on the server).
    Complete {
        /// Bytes moved on the data connection.
        bytes: u64,
    },
    /// The data connection broke (the client left, ftpgate cut it).
    DataBroken(String),
    /// The SFTP server failed a read or refused a write or the close.
    Sftp(String),
    /// ABOR.
    Aborted,
}

/// Resets `data` instead of closing it: a cut transfer must not end with
/// a FIN.
pub fn reset(data: TcpStream) {
    crate::data::relay::arm_reset(&data);
    drop(data);
}

/// Streams `file` to `data` (`ascii`: LF to CRLF).
pub async fn download(
    mut file: File,
    mut data: TcpStream,
    ascii: bool,
    cancel: CancellationToken,
) -> Done {
    let mut buf = vec![0u8; CHUNK];
    let mut conv = ascii.then(ToNetwork::default);
    let mut out = Vec::new();
    let mut bytes = 0u64;
    let done = loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => break Done::Aborted,
            r = file.read(&mut buf) => match r {
                Ok(n) => n,
                Err(e) => break Done::Sftp(e.to_string()),
            },
        };
        if n == 0 {
            // The whole file: a clean end.
            break match data.shutdown().await {
                Ok(()) => Done::Complete { bytes },
                Err(e) => Done::DataBroken(e.to_string()),
            };
        }
        let chunk = match conv.as_mut() {
            Some(c) => {
                out.clear();
                c.convert(&buf[..n], &mut out);
                &out[..]
            }
            None => &buf[..n],
        };
        tokio::select! {
            _ = cancel.cancelled() => break Done::Aborted,
            r = data.write_all(chunk) => if let Err(e) = r {
                break Done::DataBroken(e.to_string());
            },
        }
        bytes += chunk.len() as u64;
    };
    // Reading is over either way; the handle is closed in the background
    // (a read-only close has nothing to report).
    drop(file);
    if !matches!(done, Done::Complete { .. }) {
        reset(data);
    }
    done
}

/// Streams `data` into `file` (`ascii`: CRLF to LF), then closes `file`
/// and waits for the server to acknowledge every write and the close.
pub async fn upload(
    mut file: File,
    mut data: TcpStream,
    ascii: bool,
    cancel: CancellationToken,
) -> Done {
    let mut buf = vec![0u8; CHUNK];
    let mut conv = ascii.then(FromNetwork::default);
    let mut out = Vec::new();
    let mut bytes = 0u64;
    let ended = loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => break Some(Done::Aborted),
            r = data.read(&mut buf) => match r {
                Ok(n) => n,
                Err(e) => break Some(Done::DataBroken(e.to_string())),
            },
        };
        bytes += n as u64;
        out.clear();
        let chunk = match conv.as_mut() {
            Some(c) if n == 0 => {
                c.finish(&mut out);
                &out[..]
            }
            Some(c) => {
                c.convert(&buf[..n], &mut out);
                &out[..]
            }
            None => &buf[..n],
        };
        if !chunk.is_empty() {
            // No flush: the SFTP file's flush is an fsync.
            let w = tokio::select! {
                _ = cancel.cancelled() => break Some(Done::Aborted),
                r = file.write_all(chunk) => r,
            };
            if let Err(e) = w {
                break Some(Done::Sftp(e.to_string()));
            }
        }
        if n == 0 {
            break None;
        }
    };
    match ended {
        None => {
            // Every write acknowledged, then the remote close.
            let closed = tokio::select! {
                _ = cancel.cancelled() => Err(None),
                r = file.shutdown() => r.map_err(|e| Some(e.to_string())),
            };
            match closed {
                Ok(()) => {
                    let _ = data.shutdown().await;
                    Done::Complete { bytes }
                }
                Err(why) => {
                    reset(data);
                    why.map_or(Done::Aborted, Done::Sftp)
                }
            }
        }
        Some(done) => {
            reset(data);
            // What was written stays (as on any FTP server); the handle is
            // closed without waiting.
            drop(file);
            done
        }
    }
}
