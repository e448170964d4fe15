//! One task per client control connection: the driver of
//! [`crate::proto::session::Control`].
//!
//! The session owns the sockets: both control connections, the legs of
//! data connections being set up, and the handles of running data tasks
//! (which report back by channel). Every FTP decision is the core's; this
//! module reads into the core's buffers, feeds it what happened and
//! carries out the steps it returns, in order:
//!
//! - `driver.rs`: the select loop and `execute(Step)`;
//! - `upstream.rs`: connecting a backend (PROXY header, implicit TLS), the
//!   backend control connection's TLS upgrade;
//! - `routing.rs`: per-user routing and the explicit gateway on USER;
//! - `data_setup.rs`: the data legs, passive leases and data tasks;
//! - `accounting.rs`: what the core's notes mean for logs, metrics and the
//!   transfer log, and the closing log line.

mod accounting;
mod data_setup;
mod driver;
pub(crate) mod net;
mod routing;
mod stream;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backend::ActiveGuard;
use crate::config::{BackendDataMode, Config, TlsPolicy};
use crate::data::relay::ByteCounters;
use crate::data::{BackendDataTls, DataEvent};
use crate::error::{reply_for, Error, ErrorKind};
use crate::limits::Admitted;
use crate::live::{Live, Shared};
use crate::net::{BackendAddr, ClientAddr, ListenAddr};
use crate::proto::session::{self as core, Control, Policy, Start};

pub use net::{connect_from, tune_control};
use stream::{BackendTls, ClientTls, Reader, Writer};
use upstream::{connect_backend, Toward};

/// The backend label of a session whose backend is not picked yet.
const UNROUTED: &str = "-";

/// A client connection the accept loop admitted.
#[derive(Debug)]
pub struct Arrival {
    /// The connection.
    pub client: TcpStream,
    /// Its TCP peer, as accepted.
    pub peer: SocketAddr,
    /// Session number (logs).
    pub id: u64,
    /// The listener it came in on.
    pub listener: ListenAddr,
    /// That listener's metrics label (its address), made once per listener.
    pub label: Arc<str>,
    /// It came in on an implicit-TLS listener.
    pub implicit_tls: bool,
    /// The listener gave it the control options with this keepalive
    /// ([`net::tune_listener`]); `None`: the session sets them.
    pub tuned: Option<std::time::Duration>,
    /// Its slots in the connection limits.
    pub admitted: Admitted,
    /// The client named by a PROXY protocol header (else the TCP peer).
    pub real_client: Option<SocketAddr>,
    /// The address the client connected to, from a PROXY protocol header
    /// (else the local address): what `public_address = "auto"` shows.
    pub seen_local: Option<SocketAddr>,
    /// On a gateway listener: how the server is found.
    pub gateway: Option<GatewayRoute>,
}

/// How a connection on a gateway listener finds its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayRoute {
    /// Redirected by iptables/nftables: the original destination.
    Transparent(SocketAddr),
    /// Made to ftpgate itself: `USER name@host[:port]` names the server.
    Explicit,
}

/// Answers a client that cannot be served with `e`'s reply and closes.
pub(crate) async fn refuse<W: tokio::io::AsyncWrite + Unpin>(mut w: W, e: &Error) {
    let reply = reply_for(e).0.to_bytes();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        w.write_all(&reply).await?;
        w.flush().await?;
        w.shutdown().await
    })
    .await;
}

/// Counts a session that ended before it began (`outcome`) and refuses it.
async fn refuse_counted(
    shared: &Shared,
    listener: &str,
    outcome: &str,
    w: Writer<ClientTls>,
    e: &Error,
) {
    shared
        .metrics
        .sessions_total
        .with_label_values(&[listener, "-", outcome])
        .inc();
    refuse(w, e).await;
}

/// What the core needs to know of the configuration and this listener;
/// `client_cert`: the certificate an implicit-TLS client showed.
fn policy(
    cfg: &Config,
    listener: ListenAddr,
    client: ClientAddr,
    implicit: bool,
    client_cert: Option<core::ClientCert>,
) -> Policy {
    let tls = TlsPolicy::for_listener(cfg, listener.addr());
    Policy {
        client,
        active_mode: cfg.active_mode,
        active_nat_fix: cfg.active_nat_fix,
        tls_offered: implicit || (cfg.client_tls.is_some() && tls != TlsPolicy::Off),
        tls_required: implicit || tls == TlsPolicy::Required,
        implicit_tls: implicit,
        max_login_failures: cfg.max_login_failures,
        login_failures_before_delay: cfg.login_failures_before_delay,
        login_failure_delay: cfg.login_failure_delay,
        trust_backend_pasv_address: cfg.trust_backend_pasv_address,
        backend_data_networks: crate::net::Networks(cfg.backend_data_networks.clone()),
        backend_data: match cfg.backend_data_mode {
            BackendDataMode::Passive => core::BackendData::Passive,
            BackendDataMode::Active => core::BackendData::Active,
        },
        backend_protect_data: cfg.backend_tls_protect_data,
        max_line_length: cfg.max_line_length,
        greeting_timeout: cfg.greeting_timeout,
        login_timeout: cfg.login_timeout,
        idle_timeout: cfg.idle_timeout,
        backend_reply_timeout: cfg.backend_reply_timeout,
        cert_user: cfg.tls_client_cert_user,
        client_cert: client_cert.map(Box::new),
    }
}

/// Runs one client session to its end. `live` is the configuration the
/// session keeps for its whole life; `admitted` holds its limit slots.
pub async fn run_session(
    shared: Arc<Shared>,
    live: Arc<Live>,
    arrival: Arrival,
    cancel: CancellationToken,
) {
    // The start is boxed and over before the loop begins: the session's
    // future, held for its whole life, is then only the session and its
    // loop, not also the locals of TLS handshakes and backend connects.
    // (`let else`, not `if let`: the temporaries of an `if let` would live
    // on beside the session.)
    let Some(mut s) = Box::pin(start_session(shared, live, arrival, cancel)).await else {
        return;
    };
    s.run().await;
}

/// Accepts implicit TLS, picks and connects the backend (unless routing
/// waits for USER) and builds the session; `None` when the client was
/// refused or went away.
async fn start_session(
    shared: Arc<Shared>,
    live: Arc<Live>,
    arrival: Arrival,
    cancel: CancellationToken,
) -> Option<Session> {
    let Arrival {
        client,
        peer,
        id,
        listener,
        label,
        implicit_tls,
        tuned,
        admitted,
        real_client,
        seen_local,
        gateway,
    } = arrival;
    let started = Instant::now();
    let Ok(local) = client.local_addr() else {
        return None;
    };
    let client_addr = ClientAddr::new(real_client.unwrap_or(peer));
    let seen_local = seen_local.unwrap_or(local);
    let cfg = Arc::clone(&live.config);
    if tuned != Some(cfg.tcp_keepalive) {
        tune_control(&client, cfg.tcp_keepalive, !implicit_tls);
    }
    // This session's own TLS server configuration, once it speaks TLS.
    let mut session_tls = None;
    // The certificate an implicit-TLS client showed.
    let mut shown = None;
    let (client_rd, client_wr): (Reader<ClientTls>, Writer<ClientTls>) = if implicit_tls {
        // Implicit FTPS: TLS from the first byte, before any backend is contacted.
        let server_cfg = cfg
            .client_tls
            .as_ref()
            .map(crate::tls::per_client_session)?;
        session_tls = Some((Arc::clone(&server_cfg), crate::tls::for_data(&server_cfg)));
        match crate::tls::accept(
            server_cfg,
            client,
            cfg.tls_handshake_timeout,
            &shared.metrics.tls_handshakes_total,
            "control",
            false,
        )
        .await
        {
            Ok(tls) => {
                shown = crate::client_cert::of_connection(tls.get_ref().1);
                stream::split_tls(tls)
            }
            Err(e) => {
                warn!(session = id, client = %client_addr, error = %e, "implicit TLS handshake failed (a plaintext client on the implicit port?); closing");
                shared
                    .metrics
                    .sessions_total
                    .with_label_values(&[&label, "-", "tls_failed"])
                    .inc();
                return None;
            }
        }
    } else {
        stream::split_plain(client)
    };

    // Per-user routing picks the backend after USER; otherwise the
    // listener's pool (or the transparent gateway's destination) now.
    let by_user = cfg.routes_by_user(listener.addr());
    let route = if let Some(GatewayRoute::Transparent(dst)) = gateway {
        if let Err(why) = cfg.gateway.check(None, dst) {
            warn!(session = id, client = %client_addr, destination = %dst, reason = %why, "gateway destination refused");
            let e = Error::client(ErrorKind::DestinationRefused);
            refuse_counted(&shared, &label, "gateway_refused", client_wr, &e).await;
            return None;
        }
        info!(session = id, client = %client_addr, destination = %dst, "gateway: transparent session");
        Some((routing::destination(dst, dst.to_string()), Toward::GATEWAY))
    } else if by_user || gateway.is_some() {
        None
    } else {
        let rotation = cfg
            .listener_pool(listener.addr())
            .and_then(|p| live.pool(p))
            .map(|p| p.preference(client_addr.ip()))
            .unwrap_or_default();
        if rotation.is_empty() {
            error!(session = id, client = %client_addr, "every backend is down; refusing client");
            let e = Error::backend(ErrorKind::NoBackendUp);
            refuse_counted(&shared, &label, "no_backend", client_wr, &e).await;
            return None;
        }
        Some((rotation, Toward::pool(&cfg)))
    };
    let connected = match route {
        None => None,
        Some((choices, toward)) => {
            let client = client_addr.addr();
            match connect_backend(&shared, &cfg, id, choices, client, seen_local, toward).await {
                Ok(c) => Some(c),
                Err((outcome, e)) => {
                    refuse_counted(&shared, &label, outcome, client_wr, &e).await;
                    return None;
                }
            }
        }
    };
    let start = match &connected {
        Some(c) => Start::Connected {
            backend: c.addr,
            tls: c.tls_mode,
        },
        None => Start::Unrouted,
    };
    let (client_cert, client_cert_der) = shown.unzip();
    let policy = policy(&cfg, listener, client_addr, implicit_tls, client_cert);
    let ctl = Control::new(policy, start);
    shared
        .metrics
        .sessions_active
        .with_label_values(&[&label, UNROUTED])
        .inc();
    let counters = ByteCounters {
        up: shared.metrics.bytes_total.with_label_values(&["upload"]),
        down: shared.metrics.bytes_total.with_label_values(&["download"]),
    };
    let mut s = Session {
        shared,
        live,
        cfg,
        ctl,
        session_tls,
        client_cert_der,
        backend_tls: None,
        listener,
        listener_label: label,
        backend_name: UNROUTED.to_owned(),
        gateway,
        _admitted: admitted,
        _active: None,
        counters,
        id,
        client_addr,
        local,
        seen_local,
        backend_addr: BackendAddr(SocketAddr::from(([0, 0, 0, 0], 0))),
        backend_local: SocketAddr::from(([0, 0, 0, 0], 0)),
        client_rd,
        client_wr,
        backend_rd: Reader::Gone,
        backend_wr: Writer::Gone,
        legs: LegsByGen::default(),
        events: None,
        drain_seen: false,
        started,
        relayed_since: None,
        relayed: 0,
        bytes_up: 0,
        bytes_down: 0,
        transfers: 0,
        cancel,
    };
    if let Some(c) = connected {
        s.install(c);
        debug!(session = id, client = %s.client_addr, backend = %s.backend_addr, "session started");
    }
    Some(s)
}

/// The channel data tasks report on. The session keeps only a weak
/// sender: once every data task has ended and every report is read, the
/// receiver says so (`None`) and the session drops the channel then.
type DataEvents = (
    mpsc::WeakUnboundedSender<DataEvent>,
    mpsc::UnboundedReceiver<DataEvent>,
);

/// The next data task report from `events`; `None` once every data task
/// has ended and every report was read; never, while there is no channel.
async fn next_data_event(events: &mut Option<DataEvents>) -> Option<DataEvent> {
    match events {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A leased passive port; the pool hands the client's connection over.
type PassiveLease = crate::data::port_pool::Lease<tokio::sync::oneshot::Sender<TcpStream>>;

/// The sockets and handles of one data setup or transfer, by generation.
#[derive(Debug, Default)]
struct Legs {
    /// The backend leg, between its setup and the data task's start.
    backend: Option<crate::data::BackendLeg>,
    /// The running data task's token (cancelled: both legs reset).
    cancel: Option<CancellationToken>,
    /// Active mode: hands ftpgate's connection to the client to the task.
    client_tx: Option<tokio::sync::oneshot::Sender<TcpStream>>,
    /// A passive port leased (the client has its 227/229) while the
    /// backend leg is still being connected: the data task starts with it.
    lease: Option<(PassiveLease, tokio::sync::oneshot::Receiver<TcpStream>)>,
    /// Bytes moved, for the transfer log.
    progress: Arc<crate::data::relay::Progress>,
    /// When the data task started.
    started: Option<Instant>,
}

/// The legs of each data setup or transfer, by generation. A session has
/// one or two at a time (the core cancels a setup a newer one replaces),
/// so a short list: no hashing on each lookup, and 24 bytes in the
/// session instead of a map's 48.
#[derive(Debug, Default)]
struct LegsByGen(Vec<(u64, Legs)>);

impl LegsByGen {
    /// The legs of `gen`, made empty if it has none yet.
    fn entry(&mut self, gen: u64) -> &mut Legs {
        let i = match self.0.iter().position(|(g, _)| *g == gen) {
            Some(i) => i,
            None => {
                self.0.push((gen, Legs::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    fn get_mut(&mut self, gen: u64) -> Option<&mut Legs> {
        self.0.iter_mut().find(|(g, _)| *g == gen).map(|(_, l)| l)
    }

    fn remove(&mut self, gen: u64) -> Option<Legs> {
        let i = self.0.iter().position(|(g, _)| *g == gen)?;
        Some(self.0.swap_remove(i).1)
    }

    fn gens(&self) -> Vec<u64> {
        self.0.iter().map(|(g, _)| *g).collect()
    }

    /// Gives the list's memory back once it is empty (an idle session).
    fn release_if_empty(&mut self) {
        if self.0.is_empty() && self.0.capacity() > 0 {
            self.0 = Vec::new();
        }
    }
}

/// One session's I/O: the core and the sockets it decides about.
struct Session {
    shared: Arc<Shared>,
    /// The configuration this session started with (a reload does not change it).
    live: Arc<Live>,
    cfg: Arc<Config>,
    /// Every decision.
    ctl: Control,
    /// This session's TLS server configurations (own session cache and
    /// ticket keys): for its control connection, and for its data
    /// connections (the same keys, no new tickets).
    session_tls: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)>,
    /// The certificate the client showed on its control connection (mutual
    /// TLS): its data connections must show the same one, or resume.
    client_cert_der: Option<rustls::pki_types::CertificateDer<'static>>,
    /// TLS toward the backend's data connections, when the backend speaks TLS.
    backend_tls: Option<BackendDataTls>,
    listener: ListenAddr,
    /// The listener's metrics label.
    listener_label: Arc<str>,
    /// The backend as configured (metrics label); [`UNROUTED`] until
    /// per-user routing has picked one.
    backend_name: String,
    /// On a gateway listener: how the server is found.
    gateway: Option<GatewayRoute>,
    /// Held for the session's life: its slots in the connection limits.
    _admitted: Admitted,
    /// Held while connected: the session's count on the backend (least-connections).
    _active: Option<ActiveGuard>,
    counters: ByteCounters,
    id: u64,
    client_addr: ClientAddr,
    /// Local address of the client control connection (for active connects).
    local: SocketAddr,
    /// What the client connected to (a balancer's address with PROXY
    /// protocol): the address `auto` advertises.
    seen_local: SocketAddr,
    backend_addr: BackendAddr,
    /// Local address of the backend control connection: backend data
    /// connections leave from this IP, because vsftpd and proftpd refuse data
    /// connections from any other address.
    backend_local: SocketAddr,
    client_rd: Reader<ClientTls>,
    client_wr: Writer<ClientTls>,
    backend_rd: Reader<BackendTls>,
    backend_wr: Writer<BackendTls>,
    /// Data setups and transfers by generation.
    legs: LegsByGen,
    /// Reports of data tasks: made by a transfer, not up front, and
    /// dropped once its tasks have ended and their reports are read (a
    /// channel's first block of slots is a few KiB, and an idle session
    /// never uses it).
    events: Option<DataEvents>,
    /// The graceful shutdown was reported to the core.
    drain_seen: bool,
    started: Instant,
    /// When the backend bytes being processed arrived (reply latency).
    relayed_since: Option<Instant>,
    /// Replies passed straight through since then.
    relayed: u32,
    bytes_up: u64,
    bytes_down: u64,
    transfers: u32,
    cancel: CancellationToken,
}

impl Session {
    /// Time since the session started: the core's clock.
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The sender a data task reports on: the channel's, while another
    /// task still holds one; else a new channel, with the reports the old
    /// one still held moved over first (their tasks have ended; the order
    /// stays).
    fn events_sender(&mut self) -> mpsc::UnboundedSender<DataEvent> {
        if let Some(tx) = self.events.as_ref().and_then(|(weak, _)| weak.upgrade()) {
            return tx;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some((_, mut old)) = self.events.take() {
            while let Ok(ev) = old.try_recv() {
                let _ = tx.send(ev);
            }
        }
        self.events = Some((tx.downgrade(), rx));
        tx
    }

    /// Moves this session's count in `sessions_active` to backend `name`.
    fn relabel(&mut self, name: String) {
        let m = &self.shared.metrics;
        let l: &str = &self.listener_label;
        m.sessions_active
            .with_label_values(&[l, &self.backend_name])
            .dec();
        m.sessions_active.with_label_values(&[l, &name]).inc();
        self.backend_name = name;
    }

    /// Takes `c` as this session's backend.
    fn install(&mut self, c: upstream::Connected) {
        self.relabel(c.name);
        self.backend_addr = c.addr;
        self._active = Some(c.active);
        self.backend_local = c.local;
        self.backend_rd = c.rd;
        self.backend_wr = c.wr;
        self.backend_tls = c.tls;
    }
}
