//! The backend control connection: connecting one (first of the pool's
//! preference, PROXY header, implicit TLS), its `AUTH TLS` upgrade when the
//! core says so, and leaving it to route another user.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Duration;
use tracing::{error, info};

use super::stream::{self, BackendTls, Reader, Writer};
use super::{tune_control, Session, UNROUTED};
use crate::backend::{ActiveGuard, Choice};
use crate::config::{BackendProtocol, BackendTlsMode, Config, ProxyVersion};
use crate::data::BackendDataTls;
use crate::error::{Error, ErrorKind};
use crate::live::Shared;
use crate::net::BackendAddr;
use crate::proto::session::{BackendTls as CoreTls, Event};

/// How ftpgate talks to the server it connects to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Toward {
    /// Send the `backend_proxy_protocol` header (pool backends only).
    proxy_header: bool,
    /// TLS toward it (`backend_tls` for pool backends; gateway
    /// destinations are foreign servers: plain).
    tls: BackendTlsMode,
}

impl Toward {
    pub(super) fn pool(cfg: &Config) -> Toward {
        Toward {
            proxy_header: true,
            tls: cfg.backend_tls,
        }
    }

    pub(super) const GATEWAY: Toward = Toward {
        proxy_header: false,
        tls: BackendTlsMode::Off,
    };
}

/// A backend control connection, open and ready for its greeting.
pub(super) struct Connected {
    pub(super) addr: BackendAddr,
    pub(super) name: String,
    pub(super) active: ActiveGuard,
    pub(super) local: SocketAddr,
    pub(super) rd: Reader<BackendTls>,
    pub(super) wr: Writer<BackendTls>,
    /// TLS for this session's backend connections, when the backend speaks TLS.
    pub(super) tls: Option<BackendDataTls>,
    /// TLS toward it on the control connection, as the core knows it.
    pub(super) tls_mode: CoreTls,
}

/// Sends the PROXY protocol header `backend_proxy_protocol` asks for on a
/// fresh backend control connection (never on data connections).
async fn send_proxy_header(
    cfg: &Config,
    backend: &mut TcpStream,
    client: SocketAddr,
    seen_local: SocketAddr,
) -> std::io::Result<()> {
    let header = match cfg.backend_proxy_protocol {
        ProxyVersion::Off => return Ok(()),
        ProxyVersion::V1 => crate::proto::proxy::encode_v1(client, seen_local),
        ProxyVersion::V2 => crate::proto::proxy::encode_v2(client, seen_local),
    };
    backend.write_all(&header).await
}

/// Opens a control connection to the first of `choices` that accepts (with
/// the PROXY header and implicit TLS where configured). On failure: the
/// session outcome label and the error.
pub(super) async fn connect_backend(
    shared: &Shared,
    cfg: &Arc<Config>,
    id: u64,
    choices: Vec<Choice>,
    client: SocketAddr,
    seen_local: SocketAddr,
    toward: Toward,
) -> Result<Connected, (&'static str, Error)> {
    // A pool is all FTP or all SFTP (config validation).
    if choices.first().map(|c| c.protocol) == Some(BackendProtocol::Sftp) {
        return connect_sftp(cfg, id, choices, client).await;
    }
    let Some((choice, mut backend, active)) =
        crate::backend::connect_first(choices, cfg.backend_connect_timeout, id).await
    else {
        error!(session = id, client = %client, "no backend reachable; refusing client");
        return Err(("no_backend", Error::backend(ErrorKind::BackendUnreachable)));
    };
    let (addr, name) = (choice.addr, choice.name);
    let closed = || ("backend_error", Error::backend(ErrorKind::BackendClosed));
    tune_control(&backend, cfg.tcp_keepalive, false);
    let local = backend.local_addr().map_err(|_| closed())?;
    if toward.proxy_header {
        if let Err(e) = send_proxy_header(cfg, &mut backend, client, seen_local).await {
            error!(session = id, backend = %name, error = %e, "cannot send the PROXY protocol header");
            return Err(closed());
        }
    }
    // The session's own TLS client configuration: its session store keeps
    // this control connection's tickets for the data connections.
    let base = cfg
        .backend_tls_config
        .as_ref()
        .filter(|_| toward.tls != BackendTlsMode::Off);
    let tls = base.and_then(|base| {
        let server_name =
            crate::tls::backend_server_name(cfg.backend_tls_server_name.as_deref(), &name)?;
        Some(BackendDataTls {
            connector: tokio_rustls::TlsConnector::from(crate::tls::per_session(base)),
            name: server_name,
            timeout: cfg.tls_handshake_timeout,
        })
    });
    if toward.tls != BackendTlsMode::Off && tls.is_none() {
        let e = Error::backend(ErrorKind::BackendTls(format!(
            "`{name}` has no host name to check a certificate against; set backend_tls_server_name"
        )));
        error!(session = id, backend = %name, "{:?}", e.kind);
        return Err(("backend_error", e));
    }
    let (rd, wr) = match (&tls, toward.tls) {
        (Some(t), BackendTlsMode::Implicit) => {
            match crate::tls::connect(t, backend, &shared.metrics.tls_handshakes_total, "control")
                .await
            {
                Ok(s) => stream::split_tls(s),
                Err(e) => {
                    error!(session = id, backend = %name, error = %e, "implicit TLS to the backend failed");
                    return Err(("backend_error", Error::backend(ErrorKind::BackendTls(e))));
                }
            }
        }
        _ => stream::split_plain(backend),
    };
    Ok(Connected {
        addr,
        name,
        active,
        local,
        rd,
        wr,
        tls,
        tls_mode: match toward.tls {
            BackendTlsMode::Off => CoreTls::Off,
            BackendTlsMode::Explicit => CoreTls::Explicit,
            BackendTlsMode::Implicit => CoreTls::Implicit,
        },
    })
}

/// SFTP members: the first of `choices` that accepts a TCP connection
/// and completes the SSH key exchange, with its host key trusted, gets an
/// adapter ([`crate::sftp::adapter`]); the session connects to the
/// adapter's loopback port as to any FTP backend (no PROXY header, no
/// TLS: the adapter is ftpgate itself). A host key that is not trusted
/// refuses the session (`421`) with a log line naming the host and the
/// key's fingerprint.
async fn connect_sftp(
    cfg: &Arc<Config>,
    id: u64,
    choices: Vec<Choice>,
    client: SocketAddr,
) -> Result<Connected, (&'static str, Error)> {
    use crate::sftp::{adapter, ssh::SshError};
    for choice in choices {
        let connect = TcpStream::connect(choice.addr.0);
        let tcp = match tokio::time::timeout(cfg.backend_connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(session = id, backend = %choice.name, error = %e, "SFTP backend unreachable; trying the next");
                continue;
            }
            Err(_) => {
                tracing::warn!(session = id, backend = %choice.name, "SFTP backend connect timed out; trying the next");
                continue;
            }
        };
        tune_control(&tcp, cfg.tcp_keepalive, false);
        let active = ActiveGuard::new(&choice.active);
        let target = adapter::Target {
            host: crate::config::backend_host(&choice.name),
            port: choice.addr.0.port(),
            addr: choice.addr.0,
            name: choice.name.clone(),
        };
        let ssh = match adapter::connect(cfg, &target, tcp).await {
            Ok(s) => s,
            Err(SshError::HostKey {
                host,
                what,
                fingerprint,
            }) => {
                error!(session = id, client = %client, backend = %choice.name, host = %host, fingerprint = %fingerprint, "SFTP backend's host key {what}; refusing the session");
                let e = Error::backend(ErrorKind::BackendHostKey(format!("{host} {fingerprint}")));
                return Err(("backend_error", e));
            }
            Err(e) => {
                tracing::warn!(session = id, backend = %choice.name, error = %e, "SSH handshake with the SFTP backend failed; trying the next");
                continue;
            }
        };
        let stream = match adapter::start(Arc::clone(cfg), target, ssh, id).await {
            Ok(s) => s,
            Err(e) => {
                error!(session = id, backend = %choice.name, error = %e, "cannot start the SFTP adapter");
                return Err(("error", Error::internal(ErrorKind::Bug(e.to_string()))));
            }
        };
        let (Ok(addr), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
            return Err(("backend_error", Error::backend(ErrorKind::BackendClosed)));
        };
        let (rd, wr) = stream::split_plain(stream);
        return Ok(Connected {
            addr: BackendAddr(addr),
            name: choice.name,
            active,
            local,
            rd,
            wr,
            tls: None,
            tls_mode: CoreTls::Off,
        });
    }
    error!(session = id, client = %client, "no SFTP backend reachable; refusing client");
    Err(("no_backend", Error::backend(ErrorKind::BackendUnreachable)))
}

impl Session {
    /// The handshake the core asked for after the backend's 234 (the core
    /// has checked that no byte followed the 234).
    pub(super) async fn backend_starttls(&mut self) -> Event {
        let Some(t) = self.backend_tls.clone() else {
            return Event::BackendTlsDone(Err("no TLS configuration".into()));
        };
        let rd = std::mem::replace(&mut self.backend_rd, Reader::Gone);
        let wr = std::mem::replace(&mut self.backend_wr, Writer::Gone);
        let Some(tcp) = stream::reunite(rd, wr) else {
            return Event::BackendTlsDone(Err("backend connection is not plain TCP".into()));
        };
        match crate::tls::connect(
            &t,
            tcp,
            &self.shared.metrics.tls_handshakes_total,
            "control",
        )
        .await
        {
            Ok(tls) => {
                let (r, w) = stream::split_tls(tls);
                self.backend_rd = r;
                self.backend_wr = w;
                Event::BackendTlsDone(Ok(()))
            }
            Err(e) => {
                error!(session = self.id, backend = %self.backend_addr, error = %e, "TLS to the backend failed");
                Event::BackendTlsDone(Err(e))
            }
        }
    }

    /// The handshake the core asked for after its 234 to the client's AUTH.
    pub(super) async fn client_starttls(&mut self) -> Event {
        let Some(server_cfg) = self
            .cfg
            .client_tls
            .as_ref()
            .map(crate::tls::per_client_session)
        else {
            return Event::ClientTlsDone(Err("no certificate configured".into()));
        };
        self.session_tls = Some((Arc::clone(&server_cfg), crate::tls::for_data(&server_cfg)));
        let rd = std::mem::replace(&mut self.client_rd, Reader::Gone);
        let wr = std::mem::replace(&mut self.client_wr, Writer::Gone);
        let Some(tcp) = stream::reunite(rd, wr) else {
            return Event::ClientTlsDone(Err("AUTH on a connection that is not plain TCP".into()));
        };
        match crate::tls::accept(
            server_cfg,
            tcp,
            self.cfg.tls_handshake_timeout,
            &self.shared.metrics.tls_handshakes_total,
            "control",
            false,
        )
        .await
        {
            Ok(tls) => {
                let shown = crate::client_cert::of_connection(tls.get_ref().1);
                let (r, w) = stream::split_tls(tls);
                self.client_rd = r;
                self.client_wr = w;
                tracing::debug!(session = self.id, "client control connection now TLS");
                let (names, der) = shown.unzip();
                self.client_cert_der = der;
                Event::ClientTlsDone(Ok(names))
            }
            Err(e) => Event::ClientTlsDone(Err(e)),
        }
    }

    /// Drops the backend (QUIT first) so that USER can pick another.
    pub(super) async fn disconnect_backend(&mut self) {
        let w = &mut self.backend_wr;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = w.write_all(b"QUIT\r\n").await;
            let _ = w.shutdown().await;
        })
        .await;
        info!(session = self.id, backend = %self.backend_name, "left the backend to route another user");
        self.relabel(UNROUTED.to_owned());
        self.backend_rd = Reader::Gone;
        self.backend_wr = Writer::Gone;
        self.backend_tls = None;
        self._active = None;
    }
}
