//! SSH toward an SFTP backend (russh): the version exchange and key
//! exchange with the host key checked against `sftp_known_hosts`
//! ([`handshake`], for sessions and health checks alike), then for a
//! session the login ([`login`]: a per-user key, else password, else
//! keyboard-interactive answered with the password) and the `sftp`
//! subsystem ([`open_sftp`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{cipher, MethodKind, Preferred};
use russh_sftp::client::SftpSession;
use tokio::net::TcpStream;

use super::known_hosts::{fingerprint, KnownHosts, Verdict};

/// The SSH client identification ftpgate sends (RFC 4253 4.2).
pub const CLIENT_ID: &str = concat!("SSH-2.0-ftpgate_", env!("CARGO_PKG_VERSION"));

/// Why an SSH connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// TCP failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The handshake did not finish in time.
    #[error("no SSH handshake within {0:?}")]
    Timeout(Duration),
    /// The host key is not the one `sftp_known_hosts` trusts.
    #[error("host key of {host} {what}: {fingerprint}")]
    HostKey {
        /// The name the key was looked up under (`host` or `[host]:port`).
        host: String,
        /// `is unknown`, `changed`, `is revoked`.
        what: &'static str,
        /// `SHA256:...` of the key presented.
        fingerprint: String,
    },
    /// The SSH protocol failed (version exchange, key exchange, closed).
    #[error("SSH: {0}")]
    Protocol(String),
}

impl SshError {
    /// A short class for the health-check failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            SshError::Io(_) => "io",
            SshError::Timeout(_) => "timeout",
            SshError::HostKey { .. } => "host_key",
            SshError::Protocol(_) => "ssh",
        }
    }
}

/// What `check_server_key` decided, kept for the error.
type Seen = Arc<Mutex<Option<(Verdict, String)>>>;

/// The russh client handler: checks the host key, nothing else.
pub struct Checker {
    host: String,
    port: u16,
    known: Arc<KnownHosts>,
    seen: Seen,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => (
                self.known.check(&self.host, self.port, key),
                fingerprint(key),
            ),
            // Never asked for (no certificate algorithms are offered).
            PublicKeyOrCertificate::Certificate(c) => {
                let key = russh::keys::PublicKey::from(c.public_key().clone());
                (Verdict::Unknown, fingerprint(&key))
            }
        };
        let ok = verdict.0 == Verdict::Known;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
        Ok(ok)
    }
}

/// An SSH connection after key exchange.
pub type Ssh = Handle<Checker>;

fn config() -> Arc<client::Config> {
    let preferred = Preferred {
        // AES-GCM first: with AES-NI it is the cheapest per byte in ring.
        cipher: std::borrow::Cow::Borrowed(&[
            cipher::AES_256_GCM,
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_CTR,
            cipher::AES_128_CTR,
        ]),
        ..Preferred::default()
    };
    Arc::new(client::Config {
        client_id: russh::SshId::Standard(std::borrow::Cow::Borrowed(CLIENT_ID)),
        preferred,
        nodelay: true,
        window_size: 8 * 1024 * 1024,
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        ..Default::default()
    })
}

/// Version exchange and key exchange over `tcp`, the host key checked as
/// `host` (as written in the backend's name) and `port` against `known`,
/// all within `timeout`.
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    port: u16,
    known: Arc<KnownHosts>,
    timeout: Duration,
) -> Result<Ssh, SshError> {
    let _ = tcp.set_nodelay(true);
    let seen: Seen = Arc::default();
    let checker = Checker {
        host: host.to_owned(),
        port,
        known,
        seen: Arc::clone(&seen),
    };
    let result = tokio::time::timeout(timeout, client::connect_stream(config(), tcp, checker))
        .await
        .map_err(|_| SshError::Timeout(timeout))?;
    match result {
        Ok(h) => Ok(h),
        Err(e) => {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
            match seen {
                Some((v, fp)) if v != Verdict::Known => Err(SshError::HostKey {
                    host: super::known_hosts::host_key_name(host, port),
                    what: match v {
                        Verdict::Unknown => "is unknown (not in sftp_known_hosts)",
                        Verdict::Changed => "changed (sftp_known_hosts has another key)",
                        _ => "is revoked in sftp_known_hosts",
                    },
                    fingerprint: fp,
                }),
                _ => Err(SshError::Protocol(e.to_string())),
            }
        }
    }
}

/// What the login offers the server.
pub enum Credential<'a> {
    /// The client's password (password, then keyboard-interactive).
    Password(&'a str),
    /// A private key (already decrypted with the client's password).
    Key(Box<russh::keys::PrivateKey>),
}

/// Logs `user` in. `Ok(false)`: refused.
pub async fn login(
    ssh: &mut Ssh,
    user: &str,
    credential: Credential<'_>,
) -> Result<bool, SshError> {
    let proto = |e: russh::Error| SshError::Protocol(e.to_string());
    match credential {
        Credential::Key(key) => {
            let hash = ssh
                .best_supported_rsa_hash()
                .await
                .map_err(proto)?
                .flatten();
            let key = PrivateKeyWithHashAlg::new(Arc::new(*key), hash);
            Ok(ssh
                .authenticate_publickey(user, key)
                .await
                .map_err(proto)?
                .success())
        }
        Credential::Password(password) => {
            let methods = match ssh
                .authenticate_password(user, password)
                .await
                .map_err(proto)?
            {
                AuthResult::Success => return Ok(true),
                AuthResult::Failure {
                    remaining_methods, ..
                } => remaining_methods,
            };
            if !methods.contains(&MethodKind::KeyboardInteractive) {
                return Ok(false);
            }
            // PAM's "Password: " prompt (and any other) gets the password.
            let mut reply = ssh
                .authenticate_keyboard_interactive_start(user, None)
                .await
                .map_err(proto)?;
            for _round in 0..4 {
                match reply {
                    KeyboardInteractiveAuthResponse::Success => return Ok(true),
                    KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
                    KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                        let answers = prompts.iter().map(|_| password.to_owned()).collect();
                        reply = ssh
                            .authenticate_keyboard_interactive_respond(answers)
                            .await
                            .map_err(proto)?;
                    }
                }
            }
            Ok(false)
        }
    }
}

/// Opens the `sftp` subsystem on a logged-in connection; each SFTP request
/// must be answered within `request_timeout`.
pub async fn open_sftp(ssh: &Ssh, request_timeout: Duration) -> Result<SftpSession, SshError> {
    let proto = |e: russh::Error| SshError::Protocol(e.to_string());
    let channel = ssh.channel_open_session().await.map_err(proto)?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(proto)?;
    // Writes as OpenSSH's sftp sends them: 64 requests of 32 KiB in
    // flight (2 MiB); reads: 16 of up to the server's read limit (about
    // 256 KiB with OpenSSH, 4 MiB). Both bound a transfer's memory.
    let cfg = russh_sftp::client::Config {
        request_timeout_secs: request_timeout.as_secs().max(1),
        max_concurrent_writes: 64,
        max_concurrent_reads: 16,
        ..Default::default()
    };
    SftpSession::new_with_config(channel.into_stream(), cfg)
        .await
        .map_err(|e| SshError::Protocol(format!("sftp subsystem: {e}")))
}

/// Closes the connection politely (best effort, bounded).
pub async fn disconnect(ssh: &Ssh) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        ssh.disconnect(russh::Disconnect::ByApplication, "bye", "en"),
    )
    .await;
}
