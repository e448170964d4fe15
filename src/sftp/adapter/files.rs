//! Commands on one path, each answered by one SFTP request: `CWD`,
//! `SIZE`, `MDTM`, `DELE`, `MKD`, `RMD`, `RNFR`/`RNTO` and `SITE CHMOD`.

use russh_sftp::protocol::FileAttributes;

use super::state::Adapter;
use crate::proto::command::Command;
use crate::sftp::listing;
use crate::sftp::path;

/// Commands that are one SFTP request on one path.
#[derive(Debug, Clone, Copy)]
pub(super) enum Simple {
    Dele,
    Mkd,
    Rmd,
}

impl Adapter {
    pub(super) async fn on_cwd(&mut self, cmd: &Command) -> std::io::Result<()> {
        let Some(p) = self.path_arg(cmd).await? else {
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 550, "", "cwd").await,
        };
        match sftp.metadata(p.clone()).await {
            Ok(a) if a.is_dir() => {
                self.cwd = p;
                self.reply(250, "Directory successfully changed.").await
            }
            Ok(_) => self.reply(550, "Failed to change directory.").await,
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, "Failed to change directory.", "cwd")
                    .await
            }
        }
    }

    pub(super) async fn on_size(&mut self, cmd: &Command) -> std::io::Result<()> {
        if self.ascii {
            // The size of the ASCII form is only known by reading it all.
            return self.reply(550, "SIZE not allowed in ASCII mode.").await;
        }
        let Some(p) = self.path_arg(cmd).await? else {
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 550, "", "size").await,
        };
        match sftp.metadata(p).await {
            Ok(a) if !a.is_dir() && a.size.is_some() => {
                self.reply(213, &a.size.unwrap_or(0).to_string()).await
            }
            Ok(_) => self.reply(550, "Could not get file size.").await,
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, "Could not get file size.", "size")
                    .await
            }
        }
    }

    pub(super) async fn on_mdtm(&mut self, cmd: &Command) -> std::io::Result<()> {
        let Some(p) = self.path_arg(cmd).await? else {
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 550, "", "mdtm").await,
        };
        match sftp.metadata(p).await {
            Ok(a) => match a.mtime {
                Some(t) => self.reply(213, &listing::format_time_val(t)).await,
                None => {
                    self.reply(550, "Could not get file modification time.")
                        .await
                }
            },
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, "Could not get file modification time.", "mdtm")
                    .await
            }
        }
    }

    pub(super) async fn simple(&mut self, cmd: &Command, op: Simple) -> std::io::Result<()> {
        let Some(p) = self.path_arg(cmd).await? else {
            return Ok(());
        };
        if cmd.arg.as_deref().is_none_or(|a| a.is_empty()) {
            return self.reply(501, "A path is needed.").await;
        }
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 550, "", "op").await,
        };
        let (r, ok, fail) = match op {
            Simple::Dele => (
                sftp.remove_file(p.clone()).await,
                (250, "Delete operation successful.".to_owned()),
                "Delete operation failed.",
            ),
            Simple::Mkd => (
                sftp.create_dir(p.clone()).await,
                (257, format!("\"{}\" created", path::quote_257(&p))),
                "Create directory operation failed.",
            ),
            Simple::Rmd => (
                sftp.remove_dir(p.clone()).await,
                (250, "Remove directory operation successful.".to_owned()),
                "Remove directory operation failed.",
            ),
        };
        match r {
            Ok(()) => self.reply(ok.0, &ok.1).await,
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, fail, "op").await
            }
        }
    }

    pub(super) async fn on_rnfr(&mut self, cmd: &Command) -> std::io::Result<()> {
        self.rename_from = None;
        let Some(p) = self.path_arg(cmd).await? else {
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 550, "", "rnfr").await,
        };
        match sftp.symlink_metadata(p.clone()).await {
            Ok(_) => {
                self.rename_from = Some(p);
                self.reply(350, "Ready for RNTO.").await
            }
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, "RNFR command failed.", "rnfr").await
            }
        }
    }

    pub(super) async fn on_rnto(&mut self, cmd: &Command) -> std::io::Result<()> {
        let Some(from) = self.rename_from.take() else {
            return self.reply(503, "RNFR required first.").await;
        };
        let Some(to) = self.path_arg(cmd).await? else {
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 550, "", "rnto").await,
        };
        match sftp.rename(from, to).await {
            Ok(()) => self.reply(250, "Rename successful.").await,
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, "Rename failed.", "rnto").await
            }
        }
    }

    pub(super) async fn on_site(&mut self, arg: &str) -> std::io::Result<()> {
        let mut words = arg.trim_start().splitn(3, ' ');
        let sub = words.next().unwrap_or_default().to_ascii_uppercase();
        if sub != "CHMOD" {
            return self.reply(500, "Unknown SITE command.").await;
        }
        let (Some(mode), Some(target)) = (words.next(), words.next()) else {
            return self.reply(501, "SITE CHMOD needs a mode and a path.").await;
        };
        let Ok(mode) = u32::from_str_radix(mode, 8) else {
            return self.reply(501, "Bad mode.").await;
        };
        if mode > 0o7777 {
            return self.reply(501, "Bad mode.").await;
        }
        let Some(p) = self.resolve_or_refuse(target.as_bytes()).await? else {
            return Ok(());
        };
        let sftp = match self.sftp() {
            Ok(s) => s,
            Err(f) => return self.refused(f, 550, "", "chmod").await,
        };
        let attrs = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        match sftp.set_metadata(p, attrs).await {
            Ok(()) => self.reply(200, "SITE CHMOD command ok.").await,
            Err(e) => {
                let f = self.fail(e);
                self.refused(f, 550, "SITE CHMOD command failed.", "chmod")
                    .await
            }
        }
    }
}
