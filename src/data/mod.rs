//! Data connections: the passive routing table, the relay, and the task that
//! joins a client leg to a backend leg for one transfer.
//!
//! A session prepares a data connection when the client sends PASV, EPSV,
//! PORT or EPRT, and spawns one [`spawn_data_task`] for it. The task owns both
//! legs, reports back through [`DataEvent`]s, and never touches session state
//! (one task owns a session; data tasks talk to it by channel).

pub mod accept;
pub mod port_pool;
pub mod relay;

use std::io;
use std::net::IpAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::net::canonical_ip;
use relay::DataStream;

/// The routing table of pending passive connections: each route hands the
/// accepted client stream to the session's data task.
pub type PassivePool = port_pool::PortPool<oneshot::Sender<TcpStream>>;

/// The backend side of a data connection.
#[derive(Debug)]
pub enum BackendLeg {
    /// Already connected to the backend's passive port (made before the
    /// transfer command is sent, so the command cannot race it).
    Connected(TcpStream),
    /// Waiting for the backend to connect after PORT/EPRT; only `backend_ip` may.
    Listening {
        /// ftpgate's listener, on the backend control connection's local address.
        listener: TcpListener,
        /// The backend's address; connections from elsewhere are dropped.
        backend_ip: IpAddr,
    },
}

/// Why a data task ended without relaying.
#[derive(Debug)]
pub enum DataFailure {
    /// The client did not connect before the pending timeout.
    ClientTimeout,
    /// The session dropped the client leg (it could not connect to the client).
    ClientGone,
    /// Accepting the backend's connection failed.
    BackendAccept(io::Error),
    /// A TLS handshake on the data connection failed (or did not resume
    /// the control session when that is required).
    Tls(String),
}

/// TLS toward the client on this data connection (PROT P).
#[derive(Clone)]
pub struct ClientDataTls {
    /// The session's data-connection configuration (with its session cache).
    pub config: std::sync::Arc<rustls::ServerConfig>,
    /// Refuse a handshake that does not resume a session.
    pub require_resumption: bool,
    /// Handshake time limit.
    pub timeout: std::time::Duration,
    /// With client certificates on (`tls_client_auth`): the certificate
    /// the control connection showed (`None`: none), which the data
    /// connection must show too (resuming the session shows it again).
    /// `None`: not checked.
    pub control_cert: Option<Option<rustls::pki_types::CertificateDer<'static>>>,
}

pub use crate::tls::BackendDataTls;

impl std::fmt::Debug for ClientDataTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientDataTls")
            .field("require_resumption", &self.require_resumption)
            .finish_non_exhaustive()
    }
}

async fn client_side(
    s: TcpStream,
    tls: Option<&ClientDataTls>,
    handshakes: &prometheus::IntCounterVec,
) -> Result<DataStream, DataFailure> {
    let Some(t) = tls else {
        return Ok(DataStream::Tcp(s));
    };
    let cfg = std::sync::Arc::clone(&t.config);
    let s = crate::tls::accept(cfg, s, t.timeout, handshakes, "data", t.require_resumption)
        .await
        .map_err(|e| DataFailure::Tls(format!("client data TLS handshake: {e}")))?;
    if let Some(want) = &t.control_cert {
        if crate::tls::client_certificate(s.get_ref().1).as_ref() != want.as_ref() {
            return Err(DataFailure::Tls(
                "client data TLS handshake: another client certificate than the control connection's"
                    .into(),
            ));
        }
    }
    Ok(DataStream::ServerTls(Box::new(s)))
}

async fn backend_side(
    s: TcpStream,
    tls: Option<&BackendDataTls>,
    handshakes: &prometheus::IntCounterVec,
) -> Result<DataStream, DataFailure> {
    let Some(t) = tls else {
        return Ok(DataStream::Tcp(s));
    };
    crate::tls::connect(t, s, handshakes, "data")
        .await
        .map(|s| DataStream::ClientTls(Box::new(s)))
        .map_err(|e| DataFailure::Tls(format!("backend data TLS handshake: {e}")))
}

/// What a data task reports to its session.
#[derive(Debug)]
pub enum DataEventKind {
    /// Both legs are up (handshakes done): the relay starts.
    Relaying,
    /// The backend closed its side and every byte it sent reached the client.
    DownDone {
        /// Bytes backend to client.
        bytes: u64,
        /// Whether that direction ended without an error.
        clean: bool,
    },
    /// Both directions ended.
    Finished(relay::RelayOutcome),
    /// The task ended without a relay.
    Failed(DataFailure),
}

/// An event tagged with the data task's generation number.
#[derive(Debug)]
pub struct DataEvent {
    /// The generation the session gave the task; stale ones are ignored.
    pub gen: u64,
    /// What happened.
    pub kind: DataEventKind,
}

/// Everything a data task needs.
#[derive(Debug)]
pub struct DataTask {
    /// Generation number, unique within the session.
    pub gen: u64,
    /// Delivers the client's data connection (from the passive table or from
    /// the session's own connect for active mode).
    pub client_rx: oneshot::Receiver<TcpStream>,
    /// The passive lease, held until the client connects.
    pub lease: Option<port_pool::Lease<oneshot::Sender<TcpStream>>>,
    /// When waiting for the client gives up (`None`: no limit, the session decides).
    pub client_deadline: Option<Instant>,
    /// The backend side.
    pub backend: BackendLeg,
    /// Where to report.
    pub events: mpsc::UnboundedSender<DataEvent>,
    /// Cancelled by the session when the transfer is abandoned or the session ends.
    pub cancel: CancellationToken,
    /// Buffer cap and stall limit of the relay.
    pub limits: relay::RelayLimits,
    /// Metrics counters the relay moves.
    pub counters: relay::ByteCounters,
    /// This transfer's byte counts, shared with the session.
    pub progress: std::sync::Arc<relay::Progress>,
    /// TLS toward the client (PROT P), if any.
    pub client_tls: Option<ClientDataTls>,
    /// TLS toward the backend, if any.
    pub backend_tls: Option<BackendDataTls>,
    /// `ftpgate_tls_handshakes_total`.
    pub handshakes: prometheus::IntCounterVec,
}

async fn accept_backend(listener: TcpListener, backend_ip: IpAddr) -> io::Result<TcpStream> {
    loop {
        let (s, peer) = listener.accept().await?;
        if canonical_ip(peer.ip()) == canonical_ip(backend_ip) {
            return Ok(s);
        }
        tracing::warn!(peer = %peer, expected = %backend_ip, "dropped a data connection to the backend-side listener from a foreign address");
    }
}

/// The two legs of a relaying transfer. A leg whose `reset_*` is set when
/// they are dropped is closed with a TCP reset ([`DataStream::arm_reset`])
/// instead of FIN and close_notify: set from the first byte relayed until
/// the transfer is known complete, so a cancel, a cut relay, a task
/// dropped at shutdown or a panic all reset. The socket option is set only
/// then, at the drop: a transfer that completes costs none.
struct RelayLegs {
    client: DataStream,
    backend: DataStream,
    reset_client: bool,
    reset_backend: bool,
}

impl Drop for RelayLegs {
    fn drop(&mut self) {
        if self.reset_client {
            self.client.arm_reset();
        }
        if self.reset_backend {
            self.backend.arm_reset();
        }
    }
}

/// Spawns the task that waits for both legs and relays between them.
pub fn spawn_data_task(t: DataTask) {
    // Boxed: a task's future is moved whole when spawned and when it
    // ends; this one is ~3.3 KiB, the box 8 bytes.
    tokio::spawn(Box::pin(async move {
        let DataTask {
            gen,
            client_rx,
            lease,
            client_deadline,
            backend,
            events,
            cancel,
            limits,
            counters,
            progress,
            client_tls,
            backend_tls,
            handshakes,
        } = t;
        let report = |kind| {
            let _ = events.send(DataEvent { gen, kind });
        };
        let client = async {
            match client_deadline {
                Some(d) => tokio::time::timeout_at(d, client_rx)
                    .await
                    .map_err(|_| DataFailure::ClientTimeout)?,
                None => client_rx.await,
            }
            .map_err(|_| DataFailure::ClientGone)
        };
        let client = tokio::select! {
            _ = cancel.cancelled() => return,
            c = client => c,
        };
        drop(lease);
        let client = match client {
            Ok(c) => c,
            Err(f) => return report(DataEventKind::Failed(f)),
        };
        let backend = match backend {
            BackendLeg::Connected(s) => s,
            BackendLeg::Listening {
                listener,
                backend_ip,
            } => {
                let accepted = tokio::select! {
                    _ = cancel.cancelled() => return,
                    a = accept_backend(listener, backend_ip) => a,
                };
                match accepted {
                    Ok(s) => s,
                    Err(e) => return report(DataEventKind::Failed(DataFailure::BackendAccept(e))),
                }
            }
        };
        let (client, backend) = if client_tls.is_none() && backend_tls.is_none() {
            (DataStream::Tcp(client), DataStream::Tcp(backend))
        } else {
            // Both handshakes at once: a server starts its side only after
            // the transfer command, a client whenever it likes. Boxed: the
            // handshakes' state is a few KiB that a plain transfer's task
            // would otherwise carry (and copy when spawned) too.
            let handshaking = Box::pin(async {
                tokio::join!(
                    client_side(client, client_tls.as_ref(), &handshakes),
                    backend_side(backend, backend_tls.as_ref(), &handshakes),
                )
            });
            let wrapped = tokio::select! {
                _ = cancel.cancelled() => return,
                w = handshaking => w,
            };
            match wrapped {
                (Ok(c), Ok(b)) => (c, b),
                (Err(f), _) | (_, Err(f)) => return report(DataEventKind::Failed(f)),
            }
        };
        report(DataEventKind::Relaying);
        // From the first byte relayed until the transfer is known to be
        // complete, dropping the legs resets them (a cancel, a cut relay,
        // a dropped task). Before that no byte has moved, and a refused
        // data connection closes as before (clients then read the 425
        // calmly).
        let mut legs = RelayLegs {
            client,
            backend,
            reset_client: true,
            reset_backend: true,
        };
        let (down_tx, down_rx) = oneshot::channel();
        // The download reached the client whole: a later cancel (the
        // session ending while the client keeps its data socket open) must
        // not reset what was delivered.
        let mut down_clean = false;
        let ended = {
            let relay = relay::relay(
                &mut legs.client,
                &mut legs.backend,
                limits,
                Some(down_tx),
                counters,
                progress,
            );
            tokio::pin!(relay);
            let mut down_rx = Some(down_rx);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break None,
                    Ok((bytes, clean)) = async { down_rx.as_mut().expect("polled only while Some").await }, if down_rx.is_some() => {
                        down_rx = None;
                        down_clean = clean;
                        report(DataEventKind::DownDone { bytes, clean });
                    }
                    out = &mut relay => {
                        if let Some(rx) = down_rx.take() {
                            if let Ok((bytes, clean)) = rx.await {
                                down_clean = clean;
                                report(DataEventKind::DownDone { bytes, clean });
                            }
                        }
                        break Some(out);
                    }
                }
            }
        };
        // A transfer that did not complete ends with a reset on both legs,
        // never with a FIN a peer could take for the end of the file; a
        // download that reached the client whole closes cleanly.
        let cut = ended.as_ref().is_none_or(|out| out.error.is_some());
        legs.reset_backend = cut;
        legs.reset_client = cut && !down_clean;
        drop(legs);
        if let Some(out) = ended {
            report(DataEventKind::Finished(out));
        }
    }));
}
