//! One session's adapter state ([`Adapter`]) and what every command
//! handler shares: reading command lines, writing replies, turning an SFTP
//! failure into a reply (or `421` when the SSH connection is gone) and
//! resolving a path argument. No command is answered here.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use russh_sftp::client::SftpSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::config::Config;
use crate::proto::command::{parse_command, Command};
use crate::proto::line::{Frame, LineFramer};
use crate::sftp::listing::{self, FactSet};
use crate::sftp::path::{self, PathError};
use crate::sftp::ssh::Ssh;

/// The SFTP server a session reaches, for the login and a reconnect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The member's name as configured (logs).
    pub name: String,
    /// The host as written, for `sftp_known_hosts`.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The address connected to.
    pub addr: SocketAddr,
}

/// A prepared data connection.
pub(super) enum DataSetup {
    /// PASV/EPSV: the adapter listens.
    Passive(TcpListener),
    /// PORT/EPRT: the adapter connects at the transfer.
    Active(SocketAddr),
}

/// One session's adapter state.
pub(super) struct Adapter {
    pub(super) cfg: Arc<Config>,
    pub(super) target: Target,
    pub(super) session: u64,
    pub(super) rd: OwnedReadHalf,
    pub(super) wr: OwnedWriteHalf,
    pub(super) lines: LineFramer,
    /// The SSH connection (`None` once closed).
    pub(super) ssh: Option<Ssh>,
    /// The SFTP subsystem, after login.
    pub(super) sftp: Option<Arc<SftpSession>>,
    pub(super) user: Option<String>,
    pub(super) logged_in: bool,
    /// Working directory: absolute, normalised, line-safe.
    pub(super) cwd: String,
    pub(super) ascii: bool,
    /// REST offset for the next transfer.
    pub(super) rest: u64,
    pub(super) rename_from: Option<String>,
    pub(super) data: Option<DataSetup>,
    pub(super) facts: FactSet,
    /// The session's address (data connections must come from it).
    pub(super) peer_ip: IpAddr,
    /// The adapter's own address (passive listeners bind it).
    pub(super) local_ip: IpAddr,
    /// Commands read while a transfer ran, answered after it.
    pub(super) queued: std::collections::VecDeque<Command>,
    /// The adapter closes after the current reply.
    pub(super) closing: bool,
}

/// Why a command failed on the SFTP side.
pub(super) enum Fail {
    /// The SSH connection is gone: 421 and close.
    Gone,
    /// The operation failed: the command's own error reply.
    Refused(String),
}

impl Adapter {
    /// The next command line from the session (`None`: it closed).
    /// Cancel-safe: bytes read stay in the framer.
    pub(super) async fn next_command(&mut self) -> Option<Command> {
        loop {
            match self.lines.next_frame() {
                Some(Frame::Line(l)) => return Some(parse_command(&l)),
                Some(Frame::TooLong) => {
                    return Some(parse_command(b"\x00TOOLONG"));
                }
                None => {}
            }
            match self.rd.read_buf(self.lines.buffer_mut()).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Sends one reply line; CR, LF and NUL in `text` become `?`.
    pub(super) async fn reply(&mut self, code: u16, text: &str) -> std::io::Result<()> {
        let text: String = text
            .chars()
            .map(|c| {
                if matches!(c, '\r' | '\n' | '\0') {
                    '?'
                } else {
                    c
                }
            })
            .collect();
        self.wr
            .write_all(format!("{code} {text}\r\n").as_bytes())
            .await
    }

    /// Sends a multi-line reply: `code-first`, the body lines (each must
    /// be line-safe; a leading space keeps them from looking like a
    /// reply's end), `code last`.
    pub(super) async fn reply_multi(
        &mut self,
        code: u16,
        first: &str,
        body: &[String],
        last: &str,
    ) -> std::io::Result<()> {
        let mut s = format!("{code}-{first}\r\n");
        for l in body {
            if listing::is_line_safe(l) {
                s.push_str(l);
                s.push_str("\r\n");
            }
        }
        s.push_str(&format!("{code} {last}\r\n"));
        self.wr.write_all(s.as_bytes()).await
    }

    pub(super) fn sftp(&self) -> Result<Arc<SftpSession>, Fail> {
        self.sftp.clone().ok_or(Fail::Gone)
    }

    /// Classifies an SFTP error: the connection's end, or a refusal.
    pub(super) fn fail(&self, e: impl std::fmt::Display) -> Fail {
        if self.ssh.as_ref().is_none_or(|s| s.is_closed()) {
            Fail::Gone
        } else {
            Fail::Refused(e.to_string())
        }
    }

    /// The SSH connection is gone: 421, and the adapter closes.
    pub(super) async fn gone(&mut self) -> std::io::Result<()> {
        warn!(session = self.session, backend = %self.target.name, "the SFTP server closed the SSH connection");
        self.closing = true;
        self.reply(
            421,
            "Service not available, remote server has closed connection.",
        )
        .await
    }

    /// Answers `fail` with `code text` (refused) or 421 (gone).
    pub(super) async fn refused(
        &mut self,
        fail: Fail,
        code: u16,
        text: &str,
        what: &str,
    ) -> std::io::Result<()> {
        match fail {
            Fail::Gone => self.gone().await,
            Fail::Refused(why) => {
                debug!(session = self.session, backend = %self.target.name, operation = what, error = %why, "SFTP operation refused");
                self.reply(code, text).await
            }
        }
    }

    /// Resolves a path argument; `Err`: already answered (553).
    pub(super) async fn path_arg(&mut self, cmd: &Command) -> std::io::Result<Option<String>> {
        self.resolve_or_refuse(cmd.arg.as_deref().unwrap_or_default())
            .await
    }

    /// `arg` resolved against the working directory, or `None` after a
    /// `553` (a name the adapter does not pass to the server).
    pub(super) async fn resolve_or_refuse(
        &mut self,
        arg: &[u8],
    ) -> std::io::Result<Option<String>> {
        match path::resolve(&self.cwd, arg) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                self.note_bad_name(e);
                self.reply(553, "Requested action not taken. File name not allowed.")
                    .await?;
                Ok(None)
            }
        }
    }

    pub(super) fn note_bad_name(&self, e: PathError) {
        warn!(session = self.session, error = %e, "SFTP adapter: path refused before reaching the server");
    }
}
