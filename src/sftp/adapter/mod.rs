//! The adapter: an FTP server on a loopback port, serving one ftpgate
//! session from one SFTP server.
//!
//! [`start`] binds `127.0.0.1:0`, accepts the session's own control
//! connection there (and no other) and runs [`Adapter::serve`] on it. The
//! session core talks to it as to any FTP backend: it reads the greeting,
//! forwards the client's commands, and makes the data connections the
//! adapter names in its 227/229 (or accepts the one the adapter opens for
//! `PORT`/`EPRT`), so the core's data path, limits and logs stay as they
//! are. Data connections are accepted from the control connection's
//! address only.
//!
//! Login: `USER`, then `PASS` authenticates over SSH (a per-user key from
//! `[sftp_user_key]`, decrypted with the password; else the password, then
//! keyboard-interactive) and opens the `sftp` subsystem. A refusal is `530`;
//! the core counts it like any failed login. Every command of RFC 959,
//! 2389, 2428 and 3659 a real client sends is answered from SFTP
//! operations; what FTP cannot express faithfully (`REST` in `TYPE A`,
//! `REIN`, `SMNT`) is refused with `502`. When the SSH connection dies, a
//! running transfer gets `426`, then `421`, and the adapter closes.
//!
//! This file starts the adapter and runs its command loop: the greeting,
//! the dispatch of each command, and the commands about the session itself
//! (`FEAT`, `OPTS`, `TYPE`, `HELP`, ...). The commands are answered in
//! `login` (`USER`, `PASS`), `data` (data connections and transfers),
//! `directory` (listings) and `files` (commands on one path), all on the
//! state and reply helpers of `state`.

mod data;
mod directory;
mod files;
mod login;
mod state;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::listing::FactSet;
use super::path;
use super::ssh::{self, Ssh};
use crate::config::Config;
use crate::proto::command::Command;
use crate::proto::line::LineFramer;
use data::Xfer;
use files::Simple;
pub use login::connect;
use state::Adapter;
pub use state::Target;

/// Starts the adapter for one session over `ssh` (key exchange done, not
/// logged in) and returns the session's end of the control connection.
pub async fn start(
    cfg: Arc<Config>,
    target: Target,
    ssh: Ssh,
    session: u64,
) -> std::io::Result<TcpStream> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let ours = TcpStream::connect(listener.local_addr()?).await?;
    let our_addr = ours.local_addr()?;
    // Only the session's own connection: a local process that raced it in
    // is dropped.
    let theirs = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (s, peer) = listener.accept().await?;
            if peer == our_addr {
                return Ok::<_, std::io::Error>(s);
            }
            warn!(session, peer = %peer, "SFTP adapter: a foreign connection to its control port; closed");
        }
    })
    .await
    .map_err(|_| std::io::Error::other("the adapter's control connection did not arrive"))??;
    drop(listener);
    let _ = theirs.set_nodelay(true);
    let _ = ours.set_nodelay(true);
    let peer_ip = our_addr.ip();
    let local_ip = theirs.local_addr()?.ip();
    let (rd, wr) = theirs.into_split();
    let adapter = Adapter {
        cfg,
        target,
        session,
        rd,
        wr,
        lines: LineFramer::new(64 * 1024),
        ssh: Some(ssh),
        sftp: None,
        user: None,
        logged_in: false,
        cwd: "/".into(),
        ascii: false,
        rest: 0,
        rename_from: None,
        data: None,
        facts: FactSet::default(),
        peer_ip,
        local_ip,
        queued: std::collections::VecDeque::new(),
        closing: false,
    };
    tokio::spawn(adapter.serve());
    Ok(ours)
}

impl Adapter {
    /// Runs the session until QUIT, the session's end (its connection
    /// closes) or the SSH connection's.
    async fn serve(mut self) {
        if self
            .reply(220, "ftpgate SFTP gateway ready.")
            .await
            .is_err()
        {
            return self.finish().await;
        }
        while !self.closing {
            let cmd = match self.queued.pop_front() {
                Some(c) => c,
                None => match self.next_command().await {
                    Some(c) => c,
                    None => break,
                },
            };
            if self.on_command(cmd).await.is_err() {
                break;
            }
        }
        self.finish().await;
    }

    async fn finish(mut self) {
        if let Some(s) = self.sftp.take() {
            let _ = s.close().await;
        }
        if let Some(ssh) = self.ssh.take() {
            ssh::disconnect(&ssh).await;
        }
        let _ = self.wr.shutdown().await;
        debug!(session = self.session, backend = %self.target.name, "SFTP adapter closed");
    }

    async fn on_command(&mut self, cmd: Command) -> std::io::Result<()> {
        let verb = String::from_utf8_lossy(&cmd.verb_text).to_ascii_uppercase();
        let arg = cmd.arg_str();
        // Commands that need no login.
        match verb.as_str() {
            "USER" => return self.on_user(arg).await,
            "PASS" => return self.on_pass(arg).await,
            "QUIT" => {
                self.closing = true;
                return self.reply(221, "Goodbye.").await;
            }
            "NOOP" => return self.reply(200, "NOOP ok.").await,
            "SYST" => return self.reply(215, "UNIX Type: L8").await,
            "FEAT" => return self.on_feat().await,
            "HELP" => {
                return self
                    .reply_multi(
                        214,
                        "The following commands are recognized.",
                        &[" ABOR ACCT ALLO APPE CDUP CWD DELE EPRT EPSV FEAT HELP LIST MDTM MKD MLSD MLST MODE NLST NOOP OPTS PASS PASV PORT PWD QUIT REST RETR RMD RNFR RNTO SITE SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD XPWD XRMD".into()],
                        "Help OK.",
                    )
                    .await
            }
            "OPTS" => return self.on_opts(&arg).await,
            "ABOR" => return self.reply(225, "No transfer to ABOR.").await,
            "REIN" | "SMNT" => {
                return self
                    .reply(502, "Command not implemented for SFTP servers.")
                    .await
            }
            "\u{0}TOOLONG" => return self.reply(500, "Command line too long.").await,
            _ => {}
        }
        if !self.logged_in {
            return self.reply(530, "Please login with USER and PASS.").await;
        }
        match verb.as_str() {
            "PWD" | "XPWD" => {
                let q = path::quote_257(&self.cwd);
                self.reply(257, &format!("\"{q}\" is the current directory"))
                    .await
            }
            "CWD" | "XCWD" => self.on_cwd(&cmd).await,
            "CDUP" | "XCUP" => {
                let up = Command {
                    arg: Some(bytes::Bytes::from_static(b"..")),
                    ..cmd
                };
                self.on_cwd(&up).await
            }
            "TYPE" => self.on_type(&arg).await,
            "MODE" => match arg.trim().to_ascii_uppercase().as_str() {
                "S" => self.reply(200, "Mode set to S.").await,
                _ => self.reply(504, "Bad MODE command.").await,
            },
            "STRU" => match arg.trim().to_ascii_uppercase().as_str() {
                "F" => self.reply(200, "Structure set to F.").await,
                _ => self.reply(504, "Bad STRU command.").await,
            },
            "ALLO" | "ACCT" => self.reply(202, "Command not needed; ignored.").await,
            "PASV" => self.on_pasv(false).await,
            "EPSV" => match arg.trim().to_ascii_uppercase().as_str() {
                "ALL" => self.reply(200, "EPSV ALL ok.").await,
                "" | "1" => self.on_pasv(true).await,
                _ => {
                    self.reply(522, "Network protocol not supported, use (1)")
                        .await
                }
            },
            "PORT" | "EPRT" => self.on_port(&verb, &cmd).await,
            "REST" => match arg.trim().parse::<u64>() {
                Ok(n) => {
                    self.rest = n;
                    self.reply(350, &format!("Restart position accepted ({n})."))
                        .await
                }
                Err(_) => self.reply(501, "REST needs a byte offset.").await,
            },
            "RETR" => self.on_transfer(Xfer::Retr, &cmd).await,
            "STOR" => self.on_transfer(Xfer::Stor, &cmd).await,
            "APPE" => self.on_transfer(Xfer::Appe, &cmd).await,
            "STOU" => self.on_transfer(Xfer::Stou, &cmd).await,
            "LIST" | "NLST" | "MLSD" => self.on_listing(&verb, &cmd).await,
            "MLST" => self.on_mlst(&cmd).await,
            "STAT" => self.on_stat(&cmd).await,
            "SIZE" => self.on_size(&cmd).await,
            "MDTM" => self.on_mdtm(&cmd).await,
            "DELE" => self.simple(&cmd, Simple::Dele).await,
            "MKD" | "XMKD" => self.simple(&cmd, Simple::Mkd).await,
            "RMD" | "XRMD" => self.simple(&cmd, Simple::Rmd).await,
            "RNFR" => self.on_rnfr(&cmd).await,
            "RNTO" => self.on_rnto(&cmd).await,
            "SITE" => self.on_site(&arg).await,
            _ => self.reply(500, "Unknown command.").await,
        }
    }

    async fn on_feat(&mut self) -> std::io::Result<()> {
        let body: Vec<String> = [
            "EPRT".to_owned(),
            "EPSV".into(),
            "MDTM".into(),
            self.facts.feat_line(),
            "PASV".into(),
            "REST STREAM".into(),
            "SIZE".into(),
            "TVFS".into(),
            "UTF8".into(),
        ]
        .into_iter()
        .map(|f| format!(" {f}"))
        .collect();
        self.reply_multi(211, "Features:", &body, "End").await
    }

    async fn on_opts(&mut self, arg: &str) -> std::io::Result<()> {
        let (opt, rest) = arg.trim().split_once(' ').unwrap_or((arg.trim(), ""));
        match opt.to_ascii_uppercase().as_str() {
            "UTF8" | "UTF-8" => self.reply(200, "Always in UTF8 mode.").await,
            "MLST" => {
                self.facts = FactSet::parse(rest);
                let names = self.facts.names();
                self.reply(200, &format!("MLST OPTS {names}")).await
            }
            _ => self.reply(501, "Option not understood.").await,
        }
    }

    async fn on_type(&mut self, arg: &str) -> std::io::Result<()> {
        let words: Vec<String> = arg
            .split_whitespace()
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["A"] | ["A", "N"] => {
                self.ascii = true;
                self.reply(200, "Switching to ASCII mode.").await
            }
            ["I"] | ["L", "8"] => {
                self.ascii = false;
                self.reply(200, "Switching to Binary mode.").await
            }
            _ => self.reply(504, "Bad TYPE command.").await,
        }
    }
}
