//! Reaching the SFTP server and logging in: [`connect`] (TCP and the SSH
//! key exchange, for the session's first connection and a reconnect),
//! `USER` and `PASS` (SSH authentication with the user's key or password,
//! then the `sftp` subsystem and the home directory as the working
//! directory).

use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::state::{Adapter, Target};
use crate::config::Config;
use crate::sftp::listing;
use crate::sftp::path;
use crate::sftp::ssh::{self, Credential, Ssh, SshError};

/// Connects to `target` and completes the SSH key exchange within the
/// configuration's timeouts (TCP: `backend_connect_timeout`; SSH:
/// `greeting_timeout`).
pub async fn connect(cfg: &Config, target: &Target, tcp: TcpStream) -> Result<Ssh, SshError> {
    let known = cfg
        .sftp_known_hosts
        .clone()
        .ok_or_else(|| SshError::Protocol("sftp_known_hosts is not set".into()))?;
    ssh::handshake(tcp, &target.host, target.port, known, cfg.greeting_timeout).await
}

impl Adapter {
    pub(super) async fn on_user(&mut self, name: String) -> std::io::Result<()> {
        if self.logged_in {
            return self.reply(530, "Can't change to another user.").await;
        }
        if name.is_empty() || !listing::is_line_safe(&name) {
            return self.reply(501, "USER needs a name.").await;
        }
        self.user = Some(name);
        self.reply(331, "Please specify the password.").await
    }

    pub(super) async fn on_pass(&mut self, password: String) -> std::io::Result<()> {
        if self.logged_in {
            return self.reply(230, "Already logged in.").await;
        }
        let Some(user) = self.user.clone() else {
            return self.reply(503, "Login with USER first.").await;
        };
        // sshd may have closed the unauthenticated connection meanwhile
        // (LoginGraceTime, MaxAuthTries): connect again once.
        if self.ssh.as_ref().is_none_or(|s| s.is_closed()) {
            match self.reconnect().await {
                Ok(s) => self.ssh = Some(s),
                Err(e) => {
                    warn!(session = self.session, backend = %self.target.name, error = %e, "SFTP server unreachable at login");
                    self.closing = true;
                    return self
                        .reply(
                            421,
                            "Service not available, remote server has closed connection.",
                        )
                        .await;
                }
            }
        }
        let credential = match self.cfg.sftp_user_key.get(&user) {
            Some(k) => {
                let text = Arc::clone(&k.text);
                let pw = password.clone();
                // bcrypt-pbkdf is slow on purpose: off the runtime's threads.
                let key = tokio::task::spawn_blocking(move || {
                    russh::keys::decode_secret_key(&text, Some(&pw))
                })
                .await;
                match key {
                    Ok(Ok(key)) => Some(Credential::Key(Box::new(key))),
                    _ => None,
                }
            }
            None => Some(Credential::Password(&password)),
        };
        let ssh = self.ssh.as_mut().expect("connected above");
        let ok = match credential {
            // Wrong passphrase for the user's key: a wrong password.
            None => Ok(false),
            Some(c) => ssh::login(ssh, &user, c).await,
        };
        match ok {
            Ok(true) => {}
            Ok(false) => {
                info!(session = self.session, backend = %self.target.name, user = %user, "SFTP server refused the login");
                self.user = None;
                return self.reply(530, "Login incorrect.").await;
            }
            Err(e) => {
                warn!(session = self.session, backend = %self.target.name, user = %user, error = %e, "SSH login failed");
                self.closing = true;
                return self
                    .reply(
                        421,
                        "Service not available, remote server has closed connection.",
                    )
                    .await;
            }
        }
        let opened = ssh::open_sftp(ssh, self.cfg.backend_reply_timeout).await;
        let sftp = match opened {
            Ok(s) => Arc::new(s),
            Err(e) => {
                warn!(session = self.session, backend = %self.target.name, user = %user, error = %e, "cannot open the sftp subsystem");
                self.closing = true;
                return self
                    .reply(421, "Service not available: the server offers no SFTP.")
                    .await;
            }
        };
        let home = sftp.canonicalize(".").await.unwrap_or_else(|_| "/".into());
        self.cwd = path::resolve("/", home.as_bytes()).unwrap_or_else(|_| "/".into());
        self.sftp = Some(sftp);
        self.logged_in = true;
        info!(session = self.session, backend = %self.target.name, user = %user, home = %self.cwd, "SFTP login");
        self.reply(230, "Login successful.").await
    }

    async fn reconnect(&self) -> Result<Ssh, SshError> {
        let tcp = tokio::time::timeout(
            self.cfg.backend_connect_timeout,
            TcpStream::connect(self.target.addr),
        )
        .await
        .map_err(|_| SshError::Timeout(self.cfg.backend_connect_timeout))??;
        connect(&self.cfg, &self.target, tcp).await
    }
}
