//! The listing commands: `LIST`, `NLST` and `MLSD` over a data connection,
//! `MLST` and `STAT` on the control connection. Directories are read over
//! SFTP here; the lines are formatted by `sftp::listing`.

use russh_sftp::client::SftpSession;
use russh_sftp::protocol::FileAttributes;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::state::Adapter;
use crate::proto::command::Command;
use crate::sftp::listing::{self, Attrs, Entry, Kind};
use crate::sftp::path;
use crate::sftp::transfer::{self, Done};

/// The listing's view of SFTP attributes.
fn attrs(a: &FileAttributes) -> Attrs {
    Attrs {
        size: a.size,
        uid: a.uid,
        gid: a.gid,
        mode: a.permissions,
        mtime: a.mtime,
    }
}

impl Adapter {
    /// Entries of directory `dir` (links' targets read), sorted by name.
    async fn read_dir(&self, sftp: &SftpSession, dir: &str) -> Result<Vec<Entry>, String> {
        let rd = sftp
            .read_dir(dir.to_owned())
            .await
            .map_err(|e| e.to_string())?;
        let mut entries: Vec<Entry> = rd
            .map(|e| Entry {
                name: e.file_name(),
                attrs: attrs(&e.metadata()),
                link_target: None,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries.iter_mut().filter(|e| e.attrs.kind() == Kind::Link) {
            let full = format!("{}/{}", dir.trim_end_matches('/'), e.name);
            e.link_target = sftp.read_link(full).await.ok();
        }
        Ok(entries)
    }

    pub(super) async fn on_listing(&mut self, verb: &str, cmd: &Command) -> std::io::Result<()> {
        if self.data.is_none() {
            return self.reply(425, "Use PORT or PASV first.").await;
        }
        self.rest = 0;
        let raw = cmd.arg.as_deref().unwrap_or_default();
        let arg: &[u8] = if verb == "LIST" {
            match std::str::from_utf8(raw) {
                Ok(s) => listing::split_list_arg(s).as_bytes(),
                Err(_) => raw,
            }
        } else {
            raw
        };
        let Some(dir) = self.resolve_or_refuse(arg).await? else {
            self.data = None;
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 450, "", "list").await,
        };
        let entries = match sftp.metadata(dir.clone()).await {
            Ok(a) if a.is_dir() => self.read_dir(&sftp, &dir).await,
            Ok(_) if verb == "MLSD" => {
                self.data = None;
                return self.reply(501, "MLSD needs a directory.").await;
            }
            Ok(a) => Ok(vec![Entry {
                name: path::file_name(&dir).to_owned(),
                attrs: attrs(&a),
                link_target: None,
            }]),
            Err(e) => Err(e.to_string()),
        };
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                self.data = None;
                let f = self.fail(e);
                return self
                    .refused(f, 550, "No such file or directory.", "list")
                    .await;
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut text = String::new();
        let mut hidden = 0;
        for e in &entries {
            let line = match verb {
                "LIST" => listing::format_list_line(e, now),
                "NLST" => listing::format_nlst_line(e),
                _ => listing::format_mlsd_line(e, self.facts),
            };
            match line {
                Some(l) => text.push_str(&l),
                None => hidden += 1,
            }
        }
        if hidden > 0 {
            warn!(session = self.session, dir = %dir, hidden, "names with CR, LF or NUL left out of a listing (FTP cannot carry them)");
        }
        let mut data = match self.open_data().await {
            Ok(d) => d,
            Err(why) => {
                debug!(session = self.session, error = %why, "SFTP adapter: no data connection");
                return self.reply(425, "Failed to establish connection.").await;
            }
        };
        self.reply(150, "Here comes the directory listing.").await?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let sent = tokio::select! {
                _ = stop.cancelled() => return Done::Aborted,
                r = async {
                    data.write_all(text.as_bytes()).await?;
                    data.shutdown().await
                } => r,
            };
            match sent {
                Ok(()) => Done::Complete {
                    bytes: text.len() as u64,
                },
                Err(e) => {
                    transfer::reset(data);
                    Done::DataBroken(e.to_string())
                }
            }
        });
        let done = self.run_transfer(task, cancel).await;
        if let Some(Done::Complete { .. }) = done {
            return self.reply(226, "Directory send OK.").await;
        }
        self.finish_transfer(done, &dir).await
    }

    pub(super) async fn on_mlst(&mut self, cmd: &Command) -> std::io::Result<()> {
        let Some(p) = self.path_arg(cmd).await? else {
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 550, "", "mlst").await,
        };
        match sftp.metadata(p.clone()).await {
            Ok(a) => match listing::format_mlst_fact_line(&p, &attrs(&a), self.facts) {
                Some(line) => {
                    self.reply_multi(250, &format!("Listing {}", p), &[line], "End")
                        .await
                }
                None => self.reply(550, "No such file or directory.").await,
            },
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, "No such file or directory.", "mlst")
                    .await
            }
        }
    }

    pub(super) async fn on_stat(&mut self, cmd: &Command) -> std::io::Result<()> {
        if cmd.arg.as_deref().is_none_or(|a| a.is_empty()) {
            let body = vec![
                format!(" Connected to the SFTP server {}", self.target.name),
                format!(" Logged in as {}", self.user.clone().unwrap_or_default()),
                format!(" TYPE: {}", if self.ascii { "ASCII" } else { "BINARY" }),
            ];
            return self
                .reply_multi(211, "FTP server status:", &body, "End of status")
                .await;
        }
        let Some(p) = self.path_arg(cmd).await? else {
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 450, "", "stat").await,
        };
        let entries = match sftp.metadata(p.clone()).await {
            Ok(a) if a.is_dir() => self.read_dir(&sftp, &p).await,
            Ok(a) => Ok(vec![Entry {
                name: path::file_name(&p).to_owned(),
                attrs: attrs(&a),
                link_target: None,
            }]),
            Err(e) => Err(e.to_string()),
        };
        match entries {
            Ok(entries) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let body: Vec<String> = entries
                    .iter()
                    .filter_map(|e| listing::format_list_line(e, now))
                    .map(|l| format!(" {}", l.trim_end()))
                    .collect();
                self.reply_multi(213, "Status follows:", &body, "End of status")
                    .await
            }
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, "No such file or directory.", "stat")
                    .await
            }
        }
    }
}
