//! Data connections and file transfers: `PASV`/`EPSV` (listen),
//! `PORT`/`EPRT` (connect back, to the session's own address only), the
//! connection made when a transfer starts ([`Adapter::open_data`]), and
//! `RETR`, `STOR`, `APPE`, `STOU` from the `REST` offset. While data flows
//! ([`Adapter::run_transfer`]) the control connection is still read: `ABOR`
//! stops the transfer, other commands wait; [`Adapter::finish_transfer`]
//! gives the final reply. The copying itself is `sftp::transfer`.

use std::net::{SocketAddr, SocketAddrV4};

use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::state::{Adapter, DataSetup};
use crate::proto::command::Command;
use crate::proto::hostport::{format_227, format_229, parse_eprt_arg, parse_port_arg};
use crate::sftp::path;
use crate::sftp::transfer::{self, Done};

/// What a transfer command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Xfer {
    Retr,
    Stor,
    Appe,
    Stou,
}

impl Adapter {
    pub(super) async fn on_pasv(&mut self, epsv: bool) -> std::io::Result<()> {
        self.data = None;
        let l = match TcpListener::bind(SocketAddr::new(self.local_ip, 0)).await {
            Ok(l) => l,
            Err(e) => {
                warn!(session = self.session, error = %e, "SFTP adapter cannot listen for data");
                return self.reply(425, "Cannot open a data connection.").await;
            }
        };
        let addr = l.local_addr()?;
        self.data = Some(DataSetup::Passive(l));
        match (epsv, addr) {
            (false, SocketAddr::V4(a)) => {
                self.wr
                    .write_all(format!("{}\r\n", format_227(a)).as_bytes())
                    .await
            }
            (false, SocketAddr::V6(a)) => {
                let v4 = SocketAddrV4::new(
                    a.ip()
                        .to_ipv4_mapped()
                        .unwrap_or(std::net::Ipv4Addr::LOCALHOST),
                    a.port(),
                );
                self.wr
                    .write_all(format!("{}\r\n", format_227(v4)).as_bytes())
                    .await
            }
            (true, a) => {
                self.wr
                    .write_all(format!("{}\r\n", format_229(a.port())).as_bytes())
                    .await
            }
        }
    }

    pub(super) async fn on_port(&mut self, verb: &str, cmd: &Command) -> std::io::Result<()> {
        let arg = cmd.arg.as_deref().unwrap_or_default();
        let parsed = if verb == "PORT" {
            parse_port_arg(arg).map(SocketAddr::V4)
        } else {
            parse_eprt_arg(arg)
        };
        match parsed {
            // Only the session's own listener (RFC 2577: no bounce).
            Ok(a) if a.ip() == self.peer_ip && a.port() != 0 => {
                self.data = Some(DataSetup::Active(a));
                self.reply(200, "PORT command successful.").await
            }
            Ok(_) => self.reply(500, "Illegal PORT command.").await,
            Err(_) => self.reply(501, "Bad PORT argument.").await,
        }
    }

    /// The prepared data connection, made now.
    pub(super) async fn open_data(&mut self) -> Result<TcpStream, String> {
        let timeout = self.cfg.data_connect_timeout;
        match self.data.take() {
            None => Err("no PASV or PORT".into()),
            Some(DataSetup::Active(addr)) => {
                match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("connect timed out".into()),
                }
            }
            Some(DataSetup::Passive(l)) => {
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    match tokio::time::timeout_at(deadline, l.accept()).await {
                        Ok(Ok((s, peer))) if peer.ip() == self.peer_ip => return Ok(s),
                        Ok(Ok((_, peer))) => {
                            warn!(session = self.session, peer = %peer, "SFTP adapter: data connection from a foreign address; closed")
                        }
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err("nobody connected".into()),
                    }
                }
            }
        }
    }

    pub(super) async fn on_transfer(&mut self, kind: Xfer, cmd: &Command) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.rest);
        if self.data.is_none() {
            return self.reply(425, "Use PORT or PASV first.").await;
        }
        if self.ascii && rest > 0 {
            self.data = None;
            return self
                .reply(502, "REST in ASCII mode is not supported: use TYPE I.")
                .await;
        }
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 451, "", "open").await,
        };
        let (path, opened) = if kind == Xfer::Stou {
            let mut last = None;
            let mut made = None;
            for _ in 0..8 {
                let name = format!(
                    "{}/ftpgate.{:08x}",
                    self.cwd.trim_end_matches('/'),
                    rand::random::<u32>()
                );
                let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE;
                match sftp
                    .open_with_flags_and_attributes(name.clone(), flags, FileAttributes::empty())
                    .await
                {
                    Ok(f) => {
                        made = Some((name, f));
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            match made {
                Some((n, f)) => (n, Ok(f)),
                None => (
                    String::new(),
                    Err(last.map_or_else(|| "no name".into(), |e| e.to_string())),
                ),
            }
        } else {
            let Some(p) = self.path_arg(cmd).await? else {
                self.data = None;
                return Ok(());
            };
            let opened = match kind {
                Xfer::Retr => match sftp.metadata(p.clone()).await {
                    Ok(a) if a.is_dir() => Err("is a directory".into()),
                    Ok(_) => sftp.open(p.clone()).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Xfer::Stor if rest > 0 => sftp
                    .open_with_flags(p.clone(), OpenFlags::CREATE | OpenFlags::WRITE)
                    .await
                    .map_err(|e| e.to_string()),
                Xfer::Stor => sftp.create(p.clone()).await.map_err(|e| e.to_string()),
                _ => sftp
                    .open_with_flags(
                        p.clone(),
                        OpenFlags::CREATE | OpenFlags::WRITE | OpenFlags::APPEND,
                    )
                    .await
                    .map_err(|e| e.to_string()),
            };
            (p, opened)
        };
        let mut file = match opened {
            Ok(f) => f,
            Err(e) => {
                self.data = None;
                let f = self.fail(e);
                let text = if kind == Xfer::Retr {
                    "Failed to open file."
                } else {
                    "Could not create file."
                };
                return self.refused(f, 550, text, "open").await;
            }
        };
        // Where the data starts: REST, or the end for APPE.
        let start = match kind {
            Xfer::Appe => file.metadata().await.ok().and_then(|a| a.size).unwrap_or(0),
            _ => rest,
        };
        if start > 0 {
            if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
                self.data = None;
                let f = self.fail(e);
                return self.refused(f, 550, "Cannot restart there.", "seek").await;
            }
        }
        let data = match self.open_data().await {
            Ok(d) => d,
            Err(why) => {
                debug!(session = self.session, error = %why, "SFTP adapter: no data connection");
                return self.reply(425, "Failed to establish connection.").await;
            }
        };
        let mode = if self.ascii { "ASCII" } else { "BINARY" };
        let opening = match kind {
            Xfer::Stou => format!("FILE: {}", path::file_name(&path)),
            Xfer::Retr => format!(
                "Opening {mode} mode data connection for {}.",
                path::file_name(&path)
            ),
            _ => "Ok to send data.".into(),
        };
        self.reply(150, &opening).await?;
        let cancel = CancellationToken::new();
        let ascii = self.ascii;
        let task = match kind {
            Xfer::Retr => tokio::spawn(transfer::download(file, data, ascii, cancel.clone())),
            _ => tokio::spawn(transfer::upload(file, data, ascii, cancel.clone())),
        };
        let done = self.run_transfer(task, cancel).await;
        self.finish_transfer(done, &path).await
    }

    /// Waits for a transfer, reading the control connection meanwhile: ABOR
    /// stops it; other commands wait their turn.
    pub(super) async fn run_transfer(
        &mut self,
        mut task: tokio::task::JoinHandle<Done>,
        cancel: CancellationToken,
    ) -> Option<Done> {
        let mut session_gone = false;
        loop {
            tokio::select! {
                r = &mut task => return Some(r.unwrap_or(Done::Sftp("transfer task failed".into()))),
                c = self.next_command(), if !session_gone => match c {
                    Some(c) if c.verb_text.eq_ignore_ascii_case(b"ABOR") => {
                        cancel.cancel();
                        let _ = (&mut task).await;
                        return None;
                    }
                    Some(c) => self.queued.push_back(c),
                    None => {
                        // The session is gone: stop at once.
                        session_gone = true;
                        self.closing = true;
                        cancel.cancel();
                    }
                },
            }
        }
    }

    /// The transfer's final reply (`None`: ABOR).
    pub(super) async fn finish_transfer(
        &mut self,
        done: Option<Done>,
        path: &str,
    ) -> std::io::Result<()> {
        let gone = self.ssh.as_ref().is_none_or(|s| s.is_closed());
        match done {
            None => {
                self.reply(426, "Connection closed; transfer aborted.")
                    .await?;
                self.reply(226, "ABOR successful.").await
            }
            Some(Done::Complete { bytes }) => {
                debug!(session = self.session, path = %path, bytes, "SFTP transfer complete");
                self.reply(226, "Transfer complete.").await
            }
            Some(Done::Aborted) => {
                self.reply(426, "Connection closed; transfer aborted.")
                    .await
            }
            Some(Done::DataBroken(why)) => {
                debug!(session = self.session, error = %why, "SFTP adapter: data connection broken");
                self.reply(426, "Connection closed; transfer aborted.")
                    .await
            }
            Some(Done::Sftp(why)) if gone => {
                warn!(session = self.session, backend = %self.target.name, path = %path, error = %why, "SSH connection lost mid-transfer");
                self.reply(426, "Connection closed; transfer aborted.")
                    .await?;
                self.gone().await
            }
            Some(Done::Sftp(why)) => {
                warn!(session = self.session, backend = %self.target.name, path = %path, error = %why, "SFTP server failed the transfer");
                self.reply(
                    451,
                    "Requested action aborted: the server failed the transfer.",
                )
                .await
            }
        }
    }
}
