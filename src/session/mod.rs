//! One task per client control connection.
//!
//! The session owns all of its state: both control streams, the queue of
//! replies it expects from the backend, the prepared data connection and the
//! running transfer. Data tasks report back by channel. The FTP decisions
//! (parsing, rewriting, refusals) are the pure functions of `proto`; this
//! module sequences them and does the I/O.
//!
//! Ordering rules that keep replies correct:
//! - Replies reach the client in command order. ftpgate's own replies are
//!   queued behind backend replies still outstanding (`proto::session::ReplyOrder`).
//! - A data-setup command (PASV, EPSV, PORT, EPRT) is handled only once every
//!   earlier command has its reply, because ftpgate then talks to the backend
//!   itself; client input waits meanwhile (it stays in the socket buffer).
//! - A transfer's final reply is held until the backend-to-client direction
//!   of the relay has ended, so no client reads 226 while bytes are in
//!   flight. Later replies queue behind it.

pub(crate) mod net;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backend::{ActiveGuard, Choice, Key};
use crate::config::{BackendDataMode, BackendTlsMode, Config, ProxyVersion, TlsPolicy};
use crate::data::relay::{ByteCounters, Progress, RelayLimits};
use crate::data::{
    spawn_data_task, BackendDataTls, BackendLeg, ClientDataTls, DataEvent, DataEventKind,
    DataFailure, DataTask,
};
use crate::error::{reply_for, After, Error, ErrorKind};
use crate::limits::Admitted;
use crate::net::{BackendAddr, ClientAddr, PublicAddr};
use crate::proto::command::{parse_command, parse_epsv_arg, Command, EpsvArg, Verb};
use crate::proto::hostport::{parse_eprt_arg, parse_port_arg, HostPortError};
use crate::proto::line::{Frame, LineFramer};
use crate::proto::reply::{Reply, ReplyAssembler, ReplyCode, ReplyError};
use crate::proto::rewrite::{
    backend_active_command, backend_data_addr, check_active_target, client_passive_reply,
    rewrite_feat, ClientPassive, PassiveCommand, PassiveReplyError,
};
use crate::proto::session::{Awaiting, Completion, ReplyOrder};
use crate::server::{Live, Shared};
use crate::xferlog;

pub use net::{connect_from, tune_control};
use stream::{BackendTls, ClientTls, Reader, Writer};

/// Longest backend reply line kept; longer lines are dropped.
const MAX_REPLY_LINE: usize = 16 * 1024;
/// Most lines kept of one multi-line reply (STAT can list a directory).
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// The backend label of a session whose backend is not picked yet.
const UNROUTED: &str = "-";
/// ftpgate's own greeting, when the backend is picked after USER.
const GREETING: &str = "220 ftpgate ready: log in with USER.";

/// What the client asked for with PASV/EPSV/PORT/EPRT, already validated.
#[derive(Debug, Clone, Copy)]
enum ClientLeg {
    Passive(ClientPassive),
    Active { target: SocketAddr, verb: Verb },
}

#[derive(Debug)]
enum PreparedClient {
    Passive,
    Active {
        target: SocketAddr,
        tx: oneshot::Sender<TcpStream>,
    },
}

/// A data connection prepared by PASV/EPSV/PORT/EPRT, not yet used.
#[derive(Debug)]
struct Prepared {
    gen: u64,
    cancel: CancellationToken,
    client: PreparedClient,
    /// The client chose PORT/EPRT.
    active: bool,
    /// Bytes the relay has moved.
    progress: Arc<Progress>,
}

/// The transfer whose data task is running.
#[derive(Debug)]
struct Transfer {
    gen: u64,
    cancel: CancellationToken,
    verb: Bytes,
    /// The command's argument (the file name), for the transfer log.
    arg: String,
    kind: TransferKind,
    active: bool,
    /// TYPE A was in effect.
    ascii: bool,
    started: Instant,
    /// The backend's final reply code, once seen.
    reply_code: Option<u16>,
    /// Bytes the relay has moved so far.
    progress: Arc<Progress>,
    /// The backend-to-client direction ended, cleanly or not.
    down_clean: Option<bool>,
    /// Counted in metrics and the transfer log.
    recorded: bool,
    /// ABOR ended it.
    aborted: bool,
    /// The relay ended with an I/O error.
    relay_error: bool,
    /// The backend-to-client direction has ended (or the task failed): the
    /// final reply may go out.
    down_done: bool,
    /// The task ended without relaying.
    failed: bool,
    /// Both directions ended.
    finished: bool,
}

impl Transfer {
    /// The data side has ended one way or another, so the final reply may
    /// go out: a download's data has all been written to the client (or
    /// the relay was cut); an upload's relay has ended in both directions.
    fn settled(&self) -> bool {
        self.failed
            || match self.kind {
                TransferKind::Upload => self.finished,
                _ => self.down_done,
            }
    }

    /// The data is known to have arrived whole: every byte the backend sent
    /// reached the client (downloads, listings), or the upload's relay ended
    /// without an error. Only then may a 2xx final reply reach the client.
    fn whole(&self) -> bool {
        !self.failed
            && !self.aborted
            && match self.kind {
                TransferKind::Upload => self.finished && !self.relay_error,
                _ => self.down_clean == Some(true),
            }
    }

    /// The final reply the client may see for `reply`: a success for data
    /// that did not arrive whole becomes 425 (never connected) or 426 (cut).
    fn verdict(&self, reply: Reply) -> Reply {
        if !reply.is_success() || self.whole() {
            return reply;
        }
        let kind = if self.failed {
            ErrorKind::DataConnectFailed("data connection failed".into())
        } else {
            ErrorKind::TransferCut
        };
        reply_for(&Error::client(kind)).0
    }
}

/// A command that must wait until every earlier reply has gone out,
/// because ftpgate then works on the connections itself.
#[derive(Debug, Clone, Copy)]
enum Deferred {
    /// PASV/EPSV/PORT/EPRT: ftpgate talks to the backend.
    Data(ClientLeg),
    /// AUTH TLS: 234, then the handshake on the client connection.
    Auth,
}

/// What a transfer command moves, for metrics and the transfer log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferKind {
    Download,
    Upload,
    Listing,
}

impl TransferKind {
    fn of(verb: Verb) -> TransferKind {
        match verb {
            Verb::Retr => TransferKind::Download,
            Verb::Stor | Verb::Appe | Verb::Stou => TransferKind::Upload,
            _ => TransferKind::Listing,
        }
    }

    fn label(self) -> &'static str {
        match self {
            TransferKind::Download => "download",
            TransferKind::Upload => "upload",
            TransferKind::Listing => "listing",
        }
    }
}

/// How a session ended, for the session log line.
#[derive(Debug)]
enum End {
    ClientQuit,
    ClientClosed,
    /// The backend closed after telling the client 421 itself.
    ServerGoodbye,
    Error(Error),
    Io(std::io::Error),
}

/// A client connection the accept loop admitted.
#[derive(Debug)]
pub struct Arrival {
    /// The connection.
    pub client: TcpStream,
    /// Session number (logs).
    pub id: u64,
    /// The listener's address (metrics label).
    pub listener: String,
    /// It came in on an implicit-TLS listener.
    pub implicit_tls: bool,
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

/// How ftpgate talks to the server it connects to.
#[derive(Debug, Clone, Copy)]
struct Toward {
    /// Send the `backend_proxy_protocol` header (pool backends only).
    proxy_header: bool,
    /// TLS toward it (`backend_tls` for pool backends; gateway
    /// destinations are foreign servers: plain).
    tls: BackendTlsMode,
}

impl Toward {
    fn pool(cfg: &Config) -> Toward {
        Toward {
            proxy_header: true,
            tls: cfg.backend_tls,
        }
    }

    const GATEWAY: Toward = Toward {
        proxy_header: false,
        tls: BackendTlsMode::Off,
    };
}

/// What routing on USER picked: backends best first, how to talk to
/// them, and the USER line to send.
type Routed = (Vec<Choice>, Toward, Command);

/// A gateway destination as a one-member choice.
fn destination(addr: SocketAddr, name: String) -> Vec<Choice> {
    vec![Choice {
        addr: BackendAddr(addr),
        name,
        active: Default::default(),
    }]
}

/// Runs one client session to its end. `live` is the configuration the
/// session keeps for its whole life; `admitted` holds its limit slots.
pub async fn run_session(
    shared: Arc<Shared>,
    live: Arc<Live>,
    arrival: Arrival,
    cancel: CancellationToken,
) {
    let Arrival {
        client,
        id,
        listener,
        implicit_tls,
        admitted,
        real_client,
        seen_local,
        gateway,
    } = arrival;
    let started = Instant::now();
    let (Ok(peer), Ok(local)) = (client.peer_addr(), client.local_addr()) else {
        return;
    };
    let client_addr = ClientAddr::new(real_client.unwrap_or(peer));
    let seen_local = seen_local.unwrap_or(local);
    let cfg = Arc::clone(&live.config);
    tune_control(&client, cfg.tcp_keepalive, !implicit_tls);
    // This session's own TLS server configuration, once it speaks TLS.
    let mut session_tls = None;
    let (client_rd, client_wr): (Reader<ClientTls>, Writer<ClientTls>) = if implicit_tls {
        // Implicit FTPS: TLS from the first byte, before any backend is contacted.
        let Some(server_cfg) = cfg.client_tls.as_ref().map(crate::tls::per_client_session) else {
            return;
        };
        session_tls = Some((Arc::clone(&server_cfg), crate::tls::for_data(&server_cfg)));
        match accept_tls(&shared, &cfg, server_cfg, client).await {
            Ok(tls) => stream::split_tls(tls),
            Err(e) => {
                warn!(session = id, client = %client_addr, error = %e, "implicit TLS handshake failed (a plaintext client on the implicit port?); closing");
                shared
                    .metrics
                    .sessions_total
                    .with_label_values(&[&listener, "-", "tls_failed"])
                    .inc();
                return;
            }
        }
    } else {
        stream::split_plain(client)
    };

    // Per-user routing picks the backend after USER; otherwise the
    // listener's pool picks it now.
    let listen_addr = listener.parse::<SocketAddr>().ok();
    let by_user = listen_addr.is_some_and(|l| cfg.routes_by_user(l));
    let route = if let Some(GatewayRoute::Transparent(dst)) = gateway {
        if let Err(why) = cfg.gateway.check(None, dst) {
            warn!(session = id, client = %client_addr, destination = %dst, reason = %why, "gateway destination refused");
            let e = Error::client(ErrorKind::DestinationRefused);
            return refuse_counted(&shared, &listener, "gateway_refused", client_wr, &e).await;
        }
        info!(session = id, client = %client_addr, destination = %dst, "gateway: transparent session");
        Some((destination(dst, dst.to_string()), Toward::GATEWAY))
    } else if by_user || gateway.is_some() {
        None
    } else {
        let pool = listen_addr
            .and_then(|l| cfg.listener_pool(l))
            .and_then(|p| live.pool(p));
        let rotation = pool
            .map(|p| p.preference(client_addr.ip()))
            .unwrap_or_default();
        if rotation.is_empty() {
            error!(session = id, client = %client_addr, "every backend is down; refusing client");
            let e = Error::backend(ErrorKind::NoBackendUp);
            return refuse_counted(&shared, &listener, "no_backend", client_wr, &e).await;
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
                    return refuse_counted(&shared, &listener, outcome, client_wr, &e).await
                }
            }
        }
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let commands = LineFramer::new(cfg.max_line_length);
    shared
        .metrics
        .sessions_active
        .with_label_values(&[&listener, UNROUTED])
        .inc();
    let counters = ByteCounters {
        up: shared.metrics.bytes_total.with_label_values(&["upload"]),
        down: shared.metrics.bytes_total.with_label_values(&["download"]),
    };
    let mut s = Session {
        shared,
        live,
        session_tls,
        implicit_tls,
        // An implicit-TLS session starts protected: its clients take data
        // protection for granted (and clear data is refused there anyway).
        prot_private: implicit_tls,
        backend_tls: None,
        cfg,
        listener,
        backend_name: UNROUTED.to_owned(),
        routed_user: None,
        gateway,
        backend_tls_mode: BackendTlsMode::Off,
        _admitted: admitted,
        _active: None,
        counters,
        greeted: false,
        login_failures: 0,
        ascii: false,
        drain_seen: false,
        id,
        client_addr,
        local,
        seen_local,
        backend_addr: BackendAddr(SocketAddr::from(([0, 0, 0, 0], 0))),
        backend_local: SocketAddr::from(([0, 0, 0, 0], 0)),
        backend_started: started,
        client_rd,
        client_wr,
        backend_rd: Reader::Gone,
        backend_wr: Writer::Gone,
        commands,
        replies: ReplyAssembler::new(MAX_REPLY_LINE, MAX_REPLY_BYTES),
        order: ReplyOrder::new(),
        deferred: None,
        prepared: None,
        prepared_expired: false,
        transfer: None,
        next_gen: 1,
        events_tx,
        events_rx,
        passive_cmd: PassiveCommand::Pasv,
        epsv_all: false,
        user: None,
        logged_in: false,
        quitting: false,
        quit_sent: false,
        backend_said_421: false,
        backend_gone: None,
        started,
        last_command: started,
        bytes_up: 0,
        bytes_down: 0,
        transfers: 0,
        cancel,
    };
    let end = match connected {
        // The client hears ftpgate's greeting and picks the backend with USER.
        None => match s.greet_locally().await {
            Ok(()) => s.run().await,
            Err(end) => end,
        },
        Some(c) => {
            s.install(c);
            debug!(session = id, client = %s.client_addr, backend = %s.backend_addr, "session started");
            if s.backend_tls_mode != BackendTlsMode::Off {
                // ftpgate secures the backend itself (AUTH TLS when explicit,
                // then PBSZ and PROT either way), then shows the client the
                // greeting.
                match s.backend_starttls(true).await {
                    Ok(()) => s.run().await,
                    Err(end) => end,
                }
            } else {
                // The greeting is the backend's first reply, passed through.
                s.order.expect(Awaiting::Command(Verb::Other));
                s.run().await
            }
        }
    };
    s.finish(end).await;
}

struct Session {
    shared: Arc<Shared>,
    /// This session's TLS server configurations (own session cache and
    /// ticket keys): for its control connection, and for its data
    /// connections (the same keys, no new tickets).
    session_tls: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)>,
    /// The client came in on an implicit-TLS listener.
    implicit_tls: bool,
    /// PROT P is in effect toward the client.
    prot_private: bool,
    /// TLS toward the backend's data connections, when the backend speaks TLS.
    backend_tls: Option<BackendDataTls>,
    /// The configuration this session started with (a reload does not change it).
    live: Arc<Live>,
    cfg: Arc<Config>,
    /// The control listener's address (metrics label).
    listener: String,
    /// The backend as configured (metrics label); [`UNROUTED`] until
    /// per-user routing has picked one.
    backend_name: String,
    /// Per-user routing: the user the backend was picked for.
    routed_user: Option<String>,
    /// On a gateway listener: how the server is found.
    gateway: Option<GatewayRoute>,
    /// TLS toward the connected backend.
    backend_tls_mode: BackendTlsMode,
    /// Held for the session's life: its slots in the connection limits.
    _admitted: Admitted,
    /// Held while connected: the session's count on the backend (least-connections).
    _active: Option<ActiveGuard>,
    counters: ByteCounters,
    /// The backend's greeting has arrived.
    greeted: bool,
    /// Failed logins in this session.
    login_failures: u32,
    /// TYPE A is in effect (for the transfer log).
    ascii: bool,
    /// A graceful shutdown started: close as soon as idle.
    drain_seen: bool,
    id: u64,
    client_addr: ClientAddr,
    /// Local address of the client control connection (for `auto` and active connects).
    local: SocketAddr,
    /// What the client connected to (a balancer's address with PROXY
    /// protocol): the address `auto` advertises.
    seen_local: SocketAddr,
    backend_addr: BackendAddr,
    /// Local address of the backend control connection: backend data
    /// connections leave from this IP, because vsftpd and proftpd refuse data
    /// connections from any other address.
    backend_local: SocketAddr,
    /// When the backend control connection was opened (greeting timeout).
    backend_started: Instant,
    client_rd: Reader<ClientTls>,
    client_wr: Writer<ClientTls>,
    backend_rd: Reader<BackendTls>,
    backend_wr: Writer<BackendTls>,
    commands: LineFramer,
    replies: ReplyAssembler,
    /// Replies awaited from the backend, ftpgate's own in their turn, the held one.
    order: ReplyOrder,
    /// A validated data-setup command waiting for `order` to be quiet, and since when.
    deferred: Option<(Deferred, Instant)>,
    prepared: Option<Prepared>,
    /// The last prepared data connection expired unused.
    prepared_expired: bool,
    transfer: Option<Transfer>,
    next_gen: u64,
    events_tx: mpsc::UnboundedSender<DataEvent>,
    events_rx: mpsc::UnboundedReceiver<DataEvent>,
    /// The passive command the backend accepts; switched once if refused.
    passive_cmd: PassiveCommand,
    /// EPSV ALL was sent: only EPSV may set up data connections (RFC 2428 4).
    epsv_all: bool,
    user: Option<String>,
    logged_in: bool,
    /// QUIT was answered; the backend closing now is expected.
    quitting: bool,
    /// The client sent QUIT; its closing now is expected.
    quit_sent: bool,
    /// The backend sent 421 (it is closing): the client already knows.
    backend_said_421: bool,
    /// The backend's control connection ended while a transfer's data was
    /// still on its way: how the session ends once the data has settled,
    /// and the data progress last seen (a stall ends the wait).
    backend_gone: Option<(End, Instant, u64)>,
    started: Instant,
    last_command: Instant,
    bytes_up: u64,
    bytes_down: u64,
    transfers: u32,
    cancel: CancellationToken,
}

/// How a session ended, in lower-case words for the log line, like every
/// other outcome there: `IdleTimeout` reads `idle timeout`, and a detail
/// keeps its text (`backend tls: AUTH TLS refused`).
fn describe(kind: &ErrorKind) -> String {
    let debug = format!("{kind:?}");
    let name_end = debug
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(debug.len());
    let (name, rest) = debug.split_at(name_end);
    let mut words = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    match rest.strip_prefix("(\"").and_then(|r| r.strip_suffix("\")")) {
        Some(detail) => format!("{words}: {detail}"),
        None if rest.is_empty() => words,
        None => format!("{words} {rest}"),
    }
}

/// A TLS stream that ended without close_notify reads as `UnexpectedEof`;
/// on a control connection that is just the end of the stream.
fn eof_as_zero(r: std::io::Result<usize>) -> std::io::Result<usize> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        r => r,
    }
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

/// A backend control connection, open and ready for its greeting.
struct Connected {
    addr: BackendAddr,
    name: String,
    active: ActiveGuard,
    local: SocketAddr,
    rd: Reader<BackendTls>,
    wr: Writer<BackendTls>,
    /// TLS for this session's backend connections, when the backend speaks TLS.
    tls: Option<BackendDataTls>,
    /// TLS toward it on the control connection.
    tls_mode: BackendTlsMode,
}

/// Opens a control connection to the first of `choices` that accepts (with
/// the PROXY header and implicit TLS where configured). On failure: the
/// session outcome label and the error.
async fn connect_backend(
    shared: &Shared,
    cfg: &Config,
    id: u64,
    choices: Vec<Choice>,
    client: SocketAddr,
    seen_local: SocketAddr,
    toward: Toward,
) -> Result<Connected, (&'static str, Error)> {
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
    if !toward.proxy_header {
        // Gateway destinations get no PROXY header.
    } else if let Err(e) = send_proxy_header(cfg, &mut backend, client, seen_local).await {
        error!(session = id, backend = %name, error = %e, "cannot send the PROXY protocol header");
        return Err(closed());
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
        (Some(t), BackendTlsMode::Implicit) => match tls_connect(shared, t, backend).await {
            Ok(s) => stream::split_tls(s),
            Err(e) => {
                error!(session = id, backend = %name, error = %e, "implicit TLS to the backend failed");
                return Err(("backend_error", Error::backend(ErrorKind::BackendTls(e))));
            }
        },
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
        tls_mode: toward.tls,
    })
}

/// A listener for a backend's active-mode data connection on `ip`: any
/// free port, or one of `range` (`backend_active_ports`), tried from a
/// random starting point.
async fn bind_active(
    ip: std::net::IpAddr,
    range: Option<(u16, u16)>,
) -> Result<TcpListener, Error> {
    let failed = |e: String| Error::internal(ErrorKind::DataConnectFailed(e));
    let Some((first, last)) = range else {
        return TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| failed(e.to_string()));
    };
    let len = u32::from(last - first) + 1;
    let start = rand::random::<u32>() % len;
    for i in 0..len {
        let port = first + ((start + i) % len) as u16;
        if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)).await {
            return Ok(l);
        }
    }
    warn!(range = %format!("{first}-{last}"), "no free port in backend_active_ports");
    Err(failed("no free port in backend_active_ports".into()))
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

/// TLS handshake with a client on its control connection, counted in metrics.
async fn accept_tls(
    shared: &Shared,
    cfg: &Config,
    server_cfg: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
) -> Result<ClientTls, String> {
    let accepted = tokio::time::timeout(
        cfg.tls_handshake_timeout,
        tokio_rustls::TlsAcceptor::from(server_cfg).accept(tcp),
    )
    .await;
    let result = match accepted {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".to_owned()),
    };
    shared
        .metrics
        .tls_handshakes_total
        .with_label_values(&[
            "client",
            "control",
            if result.is_ok() { "ok" } else { "failed" },
        ])
        .inc();
    result
}

/// TLS handshake toward a backend's control port, counted in metrics.
async fn tls_connect(
    shared: &Shared,
    t: &BackendDataTls,
    tcp: TcpStream,
) -> Result<BackendTls, String> {
    let r = match tokio::time::timeout(t.timeout, t.connector.connect(t.name.clone(), tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(crate::tls::describe_backend_handshake_error(&e)),
        Err(_) => Err("TLS handshake timed out".to_owned()),
    };
    shared
        .metrics
        .tls_handshakes_total
        .with_label_values(&[
            "backend",
            "control",
            if r.is_ok() { "ok" } else { "failed" },
        ])
        .inc();
    r
}

// === impl Session ===

impl Session {
    async fn run(&mut self) -> End {
        loop {
            if self.backend_gone.is_some() {
                match self.wait_for_data_after_backend().await {
                    Some(end) => return end,
                    None => continue,
                }
            }
            if let Err(end) = self.process_buffered_commands().await {
                return end;
            }
            if self.drain_seen && self.is_idle() {
                info!(session = self.id, client = %self.client_addr, "shutting down: closing the idle session");
                return End::Error(Error::internal(ErrorKind::Shutdown));
            }
            if self.deferred.is_some() && self.order.is_quiet() {
                let (what, _) = self.deferred.take().expect("checked above");
                let done = match what {
                    Deferred::Data(leg) => self.setup_data(leg).await,
                    Deferred::Auth => self.start_client_tls().await,
                };
                if let Err(end) = done {
                    return end;
                }
                continue;
            }
            let deadline = self.deadline();
            let reading_client = self.deferred.is_none();
            tokio::select! {
                _ = self.cancel.cancelled() => return End::Error(Error::internal(ErrorKind::Shutdown)),
                _ = self.shared.draining.cancelled(), if !self.drain_seen => self.drain_seen = true,
                Some(ev) = self.events_rx.recv() => {
                    if let Err(end) = self.on_data_event(ev).await {
                        return end;
                    }
                }
                // TLS peers often close without close_notify (after QUIT or
                // 421): that is an end of stream like any other.
                r = self.backend_rd.read_buf(self.replies.buffer_mut()), if !self.unrouted() => match eof_as_zero(r) {
                    Ok(0) if self.quit_sent => return End::ClientQuit,
                    Ok(0) if self.backend_said_421 => {
                        if let Some(end) = self.backend_ended(End::ServerGoodbye) {
                            return end;
                        }
                    }
                    Ok(0) => {
                        if let Some(end) = self.backend_ended(End::Error(Error::backend(ErrorKind::BackendClosed))) {
                            return end;
                        }
                    }
                    Ok(_) => {
                        if let Err(end) = self.process_replies().await {
                            return end;
                        }
                    }
                    Err(e) => {
                        warn!(session = self.id, error = %e, "backend control connection failed");
                        if let Some(end) = self.backend_ended(End::Error(Error::backend(ErrorKind::BackendClosed))) {
                            return end;
                        }
                    }
                },
                r = self.client_rd.read_buf(self.commands.buffer_mut()), if reading_client => match eof_as_zero(r) {
                    // After QUIT the client may close before the backend does.
                    Ok(0) if self.quit_sent => return End::ClientQuit,
                    Ok(0) => return End::ClientClosed,
                    Ok(_) => {
                        if let Err(e) = self.drain_client_socket() {
                            return End::Io(e);
                        }
                    }
                    Err(e) => return End::Io(e),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if self.deferred.is_some() {
                        // The backend never answered some earlier command (a
                        // server may skip a reply, e.g. around ABOR): forget
                        // those expectations rather than wait forever.
                        let stale = self.order.drop_awaited();
                        warn!(session = self.id, stale, "backend replies missing; dropping stale expectations");
                        if let Err(end) = self.write_ready().await {
                            return end;
                        }
                        continue;
                    }
                    let kind = if !self.greeted {
                        ErrorKind::GreetingTimeout
                    } else if self.logged_in {
                        ErrorKind::IdleTimeout
                    } else {
                        ErrorKind::LoginTimeout
                    };
                    let limit = match kind {
                        ErrorKind::GreetingTimeout => "greeting_timeout",
                        ErrorKind::IdleTimeout => "idle_timeout",
                        _ => "login_timeout",
                    };
                    self.shared.metrics.limit_hit(limit);
                    warn!(session = self.id, client = %self.client_addr, limit, "session timed out");
                    return End::Error(Error::internal(kind));
                }
            }
        }
    }

    /// The backend's control connection ended with `end`. With a transfer's
    /// data still on its way, the session waits for it (the backend's
    /// final reply may be held already): bytes the backend sent must reach
    /// the client before the session ends. `Some`: end the session now.
    fn backend_ended(&mut self, end: End) -> Option<End> {
        let Some(t) = self.transfer.as_ref().filter(|t| !t.settled()) else {
            return Some(end);
        };
        info!(session = self.id, client = %self.client_addr, backend = %self.backend_addr, "backend closed its control connection during a transfer; relaying the rest of the data first");
        let (up, down) = t.progress.get();
        self.backend_gone = Some((end, Instant::now(), up + down));
        None
    }

    /// With the backend gone: waits until the transfer's data has settled
    /// (its reply, held or owed, then goes out by the usual rules), then
    /// ends the session. A transfer that moves no byte for
    /// `data_stall_timeout` is cut. `None`: keep waiting.
    async fn wait_for_data_after_backend(&mut self) -> Option<End> {
        let settled = self.transfer.as_ref().is_none_or(|t| t.settled());
        if settled {
            return self.backend_gone.take().map(|(end, _, _)| end);
        }
        let (since, seen) = self.backend_gone.as_ref().map(|(_, s, b)| (*s, *b))?;
        let stall = self.cfg.data_stall_timeout;
        tokio::select! {
            _ = self.cancel.cancelled() => Some(End::Error(Error::internal(ErrorKind::Shutdown))),
            Some(ev) = self.events_rx.recv() => self.on_data_event(ev).await.err(),
            _ = tokio::time::sleep_until(since + stall) => {
                let t = self.transfer.as_ref()?;
                let (up, down) = t.progress.get();
                if up + down != seen {
                    if let Some(g) = self.backend_gone.as_mut() {
                        (g.1, g.2) = (Instant::now(), up + down);
                    }
                    return None;
                }
                warn!(session = self.id, client = %self.client_addr, limit = ?stall, "transfer stalled after the backend closed; cutting it");
                self.cut_transfer("stalled");
                self.backend_gone.take().map(|(end, _, _)| end)
            }
        }
    }

    /// Abandons the running transfer: its data task resets both data
    /// connections, and a held success becomes 426 when the session's
    /// owed replies go out.
    fn cut_transfer(&mut self, cause: &str) {
        if let Some(t) = self.transfer.as_mut().filter(|t| !t.settled()) {
            self.shared
                .metrics
                .transfers_cut_total
                .with_label_values(&[cause])
                .inc();
            t.cancel.cancel();
            t.down_done = true;
            t.finished = true;
        }
    }

    /// Reads what the socket still holds after a read returned.
    ///
    /// A read stops at the TCP urgent mark (the ABOR synch; Python's ftplib
    /// sends the whole `ABOR\r\n` as urgent data), and tokio takes a short
    /// read as "drained" and waits for the next readiness edge, which never
    /// comes for bytes already queued (its `try_read` trusts the same cached
    /// readiness). So read the socket directly until it would block.
    fn drain_client_socket(&mut self) -> std::io::Result<()> {
        for _ in 0..16 {
            if self.commands.buffered() > self.cfg.max_line_length * 2 {
                break;
            }
            // Inside TLS there is no urgent data to chase.
            let Some(plain) = self.client_rd.plain() else {
                break;
            };
            match net::read_nonblocking(plain.as_ref(), self.commands.buffer_mut()) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether this listener offers AUTH TLS (or the session is implicit TLS).
    fn tls_offered(&self) -> bool {
        self.implicit_tls || (self.cfg.client_tls.is_some() && self.policy() != TlsPolicy::Off)
    }

    /// Login and transfers need TLS here.
    fn tls_required(&self) -> bool {
        self.implicit_tls || self.policy() == TlsPolicy::Required
    }

    /// The TLS policy of the listener this session came in on.
    fn policy(&self) -> TlsPolicy {
        match self.listener.parse::<SocketAddr>() {
            Ok(l) => TlsPolicy::for_listener(&self.cfg, l),
            Err(_) => self.cfg.tls,
        }
    }

    /// TLS for the client side of the next data connection (PROT P).
    fn client_data_tls(&self) -> Option<ClientDataTls> {
        if !(self.client_rd.is_tls() && self.prot_private) {
            return None;
        }
        let cfg = Arc::clone(&self.session_tls.as_ref()?.1);
        Some(ClientDataTls {
            acceptor: tokio_rustls::TlsAcceptor::from(cfg),
            require_resumption: self.cfg.tls_require_data_resumption,
            timeout: self.cfg.tls_handshake_timeout,
        })
    }

    /// Validates AUTH without I/O; `Ok` means: answer 234 and shake hands
    /// once every earlier reply is out.
    fn check_auth(&self, cmd: &Command) -> Result<(), Error> {
        if self.client_rd.is_tls() {
            return Err(Error::client(ErrorKind::AlreadyTls));
        }
        if !self.tls_offered() {
            return Err(Error::client(ErrorKind::TlsUnsupported));
        }
        match cmd.arg_str().trim().to_ascii_uppercase().as_str() {
            // TLS-C and TLS-P are old drafts' names; SSL is what old clients send.
            "TLS" | "TLS-C" | "SSL" | "TLS-P" => Ok(()),
            _ => Err(Error::client(ErrorKind::AuthMechanism)),
        }
    }

    /// Answers AUTH with 234 and takes the client connection into TLS.
    async fn start_client_tls(&mut self) -> Result<(), End> {
        let Some(server_cfg) = self
            .cfg
            .client_tls
            .as_ref()
            .map(crate::tls::per_client_session)
        else {
            return self
                .local_error(Error::client(ErrorKind::TlsUnsupported))
                .await;
        };
        self.session_tls = Some((Arc::clone(&server_cfg), crate::tls::for_data(&server_cfg)));
        self.local_reply(Reply::new(ReplyCode::AuthOk, "AUTH TLS successful."))
            .await?;
        // Anything the client sent after AUTH in plaintext is not trusted
        // into the protected session (command injection, CVE-2011-0411 style).
        let injected = self.commands.buffered();
        if injected > 0 {
            warn!(session = self.id, client = %self.client_addr, bytes = injected, "discarded plaintext sent after AUTH TLS");
            self.commands.buffer_mut().clear();
        }
        let rd = std::mem::replace(&mut self.client_rd, Reader::Gone);
        let wr = std::mem::replace(&mut self.client_wr, Writer::Gone);
        let Some(tcp) = stream::reunite(rd, wr) else {
            return Err(End::Error(Error::internal(ErrorKind::Bug(
                "AUTH on a connection that is not plain TCP".into(),
            ))));
        };
        let result = accept_tls(&self.shared, &self.cfg, server_cfg, tcp).await;
        match result {
            Ok(tls) => {
                let (r, w) = stream::split_tls(tls);
                self.client_rd = r;
                self.client_wr = w;
                self.prot_private = false;
                debug!(session = self.id, "client control connection now TLS");
                Ok(())
            }
            Err(e) => {
                warn!(session = self.id, client = %self.client_addr, error = %e, "client TLS handshake failed");
                Err(End::Error(Error::client(ErrorKind::TlsHandshake(e))))
            }
        }
    }

    /// TLS toward the backend: read its greeting; when explicit, AUTH TLS and
    /// the handshake (implicit: already inside TLS); then PBSZ 0 and PROT
    /// (an implicit vsftpd session starts with clear data); then show the
    /// client the greeting.
    async fn backend_starttls(&mut self, show_greeting: bool) -> Result<(), End> {
        let fail = |what: String| End::Error(Error::backend(ErrorKind::BackendTls(what)));
        let greeting = self.read_greeting().await?;
        if self.backend_rd.is_tls() {
            return self
                .backend_protection(show_greeting.then_some(greeting))
                .await;
        }
        let auth = self
            .backend_exchange(b"AUTH TLS\r\n")
            .await
            .map_err(End::Error)?;
        if auth.code != 234 {
            error!(session = self.id, backend = %self.backend_addr, reply = %auth.text_lossy(), "backend refused AUTH TLS");
            return Err(fail(format!("AUTH TLS refused: {}", auth.text_lossy())));
        }
        // RFC 4217 4: the handshake follows 234 at once. Bytes already
        // received after it came in plaintext and would be read as
        // protected replies (the backend side of CVE-2011-0411).
        let early = self.replies.buffered();
        if early > 0 {
            error!(session = self.id, backend = %self.backend_addr, bytes = early, "backend sent bytes after its 234 reply, before the TLS handshake; closing the session");
            return Err(fail(
                "bytes after the 234 reply, before the TLS handshake".into(),
            ));
        }
        let Some(t) = self.backend_tls.clone() else {
            return Err(fail("no TLS configuration".into()));
        };
        let rd = std::mem::replace(&mut self.backend_rd, Reader::Gone);
        let wr = std::mem::replace(&mut self.backend_wr, Writer::Gone);
        let Some(tcp) = stream::reunite(rd, wr) else {
            return Err(fail("backend connection is not plain TCP".into()));
        };
        match tls_connect(&self.shared, &t, tcp).await {
            Ok(tls) => {
                let (r, w) = stream::split_tls(tls);
                self.backend_rd = r;
                self.backend_wr = w;
            }
            Err(e) => {
                error!(session = self.id, backend = %self.backend_addr, error = %e, "TLS to the backend failed");
                return Err(fail(e));
            }
        }
        self.backend_protection(show_greeting.then_some(greeting))
            .await
    }

    /// PBSZ 0 and PROT P (or C) on the backend's TLS control connection,
    /// then the greeting (if given) to the client.
    async fn backend_protection(&mut self, greeting: Option<Reply>) -> Result<(), End> {
        let fail = |what: String| End::Error(Error::backend(ErrorKind::BackendTls(what)));
        let prot: &[u8] = if self.cfg.backend_tls_protect_data {
            b"PROT P\r\n"
        } else {
            b"PROT C\r\n"
        };
        for line in [&b"PBSZ 0\r\n"[..], prot] {
            let r = self.backend_exchange(line).await.map_err(End::Error)?;
            if !r.is_success() {
                error!(session = self.id, backend = %self.backend_addr, command = %String::from_utf8_lossy(line).trim_end(), reply = %r.text_lossy(), "backend refused");
                return Err(fail(r.text_lossy()));
            }
        }
        debug!(session = self.id, backend = %self.backend_addr, "backend control connection now TLS");
        match greeting {
            Some(g) => self.local_reply(g).await,
            None => Ok(()),
        }
    }

    /// Moves this session's count in `sessions_active` to backend `name`.
    fn relabel(&mut self, name: String) {
        let m = &self.shared.metrics;
        m.sessions_active
            .with_label_values(&[&self.listener, &self.backend_name])
            .dec();
        m.sessions_active
            .with_label_values(&[&self.listener, &name])
            .inc();
        self.backend_name = name;
    }

    /// Reads the backend's greeting within `greeting_timeout`. Anything but
    /// 220 (421 too many users and the like) goes to the client as is and
    /// ends the session.
    async fn read_greeting(&mut self) -> Result<Reply, End> {
        let greeting = self
            .read_backend_reply(self.backend_started + self.cfg.greeting_timeout)
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::BackendTimeout {
                    self.shared.metrics.limit_hit("greeting_timeout");
                    End::Error(Error::backend(ErrorKind::GreetingTimeout))
                } else {
                    End::Error(e)
                }
            })?;
        self.greeted = true;
        if greeting.code != 220 {
            self.local_reply(greeting).await?;
            return Err(End::ServerGoodbye);
        }
        Ok(greeting)
    }

    /// Takes `c` as this session's backend.
    fn install(&mut self, c: Connected) {
        self.relabel(c.name);
        self.passive_cmd = if c.addr.0.is_ipv6() {
            PassiveCommand::Epsv
        } else {
            PassiveCommand::Pasv
        };
        self.backend_addr = c.addr;
        self._active = Some(c.active);
        self.backend_local = c.local;
        self.backend_rd = c.rd;
        self.backend_wr = c.wr;
        self.backend_tls = c.tls;
        self.backend_tls_mode = c.tls_mode;
        self.backend_started = Instant::now();
        self.replies = ReplyAssembler::new(MAX_REPLY_LINE, MAX_REPLY_BYTES);
    }

    /// ftpgate's own greeting (the backend's comes after USER).
    async fn greet_locally(&mut self) -> Result<(), End> {
        self.greeted = true;
        self.local_reply(Reply::from_line(GREETING.to_owned()))
            .await
    }

    /// No backend yet: per-user routing waits for USER.
    fn unrouted(&self) -> bool {
        matches!(self.backend_wr, Writer::Gone)
    }

    /// Drops the backend (QUIT first) so that USER can pick another.
    async fn disconnect_backend(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.backend_wr.write_all(b"QUIT\r\n").await;
            let _ = self.backend_wr.shutdown().await;
        })
        .await;
        info!(session = self.id, backend = %self.backend_name, "left the backend to route another user");
        self.relabel(UNROUTED.to_owned());
        self.backend_rd = Reader::Gone;
        self.backend_wr = Writer::Gone;
        self.backend_tls = None;
        self._active = None;
        self.routed_user = None;
    }

    /// A command before per-user routing has picked a backend: only what
    /// ftpgate can answer itself, and USER, which picks the backend.
    async fn before_routing(&mut self, cmd: Command) -> Result<(), End> {
        let word = cmd.verb_text.to_ascii_uppercase();
        let reply = match (cmd.verb, word.as_slice()) {
            (Verb::Quit, _) => {
                self.local_reply(Reply::from_line("221 Goodbye.".into()))
                    .await?;
                return Err(End::ClientQuit);
            }
            (Verb::Feat, _) => {
                let mut provided = vec!["EPSV", "PASV"];
                if self.cfg.active_mode {
                    provided.push("EPRT");
                }
                if self.tls_offered() {
                    provided.extend(["AUTH TLS", "PBSZ", "PROT"]);
                }
                rewrite_feat(&Reply::from_line("211 End".into()), &provided, &[])
            }
            (_, b"SYST") => Reply::from_line("215 UNIX Type: L8".into()),
            (_, b"NOOP") => Reply::new(ReplyCode::CommandOk, "NOOP ok."),
            (Verb::Pass, _) => Reply::new(ReplyCode::BadSequence, "Login with USER first."),
            _ => Reply::new(ReplyCode::NotLoggedIn, "Please login with USER and PASS."),
        };
        self.local_reply(reply).await
    }

    /// USER under per-user routing: pick the pool and a backend for this
    /// user, connect, consume the backend's greeting (and secure it), then
    /// send USER there. A user no pool takes gets 530.
    async fn route_user(&mut self, cmd: Command) -> Result<(), End> {
        let user = cmd.arg_str();
        if !self.unrouted() {
            if self.routed_user.as_deref() == Some(user.as_str()) {
                return self.forward(&cmd, Awaiting::Command(Verb::User)).await;
            }
            if self.logged_in || !self.is_idle() {
                return self
                    .local_reply(Reply::new(
                        ReplyCode::NotLoggedIn,
                        "To log in as another user, open a new session.",
                    ))
                    .await;
            }
            // A failed login, then another user: that user's own pool.
            self.disconnect_backend().await;
        }
        self.user = Some(user.clone());
        let picked = if self.gateway == Some(GatewayRoute::Explicit) {
            self.named_destination(&user).await?
        } else {
            self.pool_for(&user)?
        };
        let Some((choices, toward, send)) = picked else {
            // Refused, and answered.
            return self.on_login_failure().await;
        };
        let c = connect_backend(
            &self.shared,
            &self.cfg,
            self.id,
            choices,
            self.client_addr.addr(),
            self.seen_local,
            toward,
        )
        .await
        .map_err(|(_, e)| End::Error(e))?;
        self.install(c);
        info!(session = self.id, client = %self.client_addr, user = %user, backend = %self.backend_name, "routed by USER");
        self.routed_user = Some(user);
        // The backend's greeting is for ftpgate: the client had its own.
        if self.backend_tls_mode != BackendTlsMode::Off {
            self.backend_starttls(false).await?;
        } else {
            self.read_greeting().await?;
        }
        self.user = Some(send.arg_str());
        self.forward(&send, Awaiting::Command(Verb::User)).await
    }

    /// Per-user routing: the backends of `user`'s pool, best first, and
    /// the USER line to send. `None`: refused (the 530 is queued).
    fn pool_for(&mut self, user: &str) -> Result<Option<Routed>, End> {
        let pool_name = self
            .listener
            .parse::<SocketAddr>()
            .ok()
            .and_then(|l| self.cfg.pool_for_user(l, user))
            .map(str::to_owned);
        let Some(pool_name) = pool_name else {
            warn!(session = self.id, client = %self.client_addr, user = %user, "no pool for this user ([user_pool] has no entry and there is no user_pool_default); refused");
            self.order
                .local(&Reply::new(ReplyCode::NotLoggedIn, "User not known here."));
            return Ok(None);
        };
        let Some(pool) = self.live.pool(&pool_name).cloned() else {
            return Err(End::Error(Error::internal(ErrorKind::Bug(format!(
                "pool `{pool_name}` is missing"
            )))));
        };
        let choices = if pool.policy().needs_user() {
            pool.preference_by(Key::User(user))
        } else {
            pool.preference(self.client_addr.ip())
        };
        if choices.is_empty() {
            error!(session = self.id, client = %self.client_addr, user = %user, pool = %pool_name, "every backend of the pool is down; refusing client");
            return Err(End::Error(Error::backend(ErrorKind::NoBackendUp)));
        }
        debug!(session = self.id, user = %user, pool = %pool_name, "pool picked");
        let send = parse_command(format!("USER {user}").as_bytes());
        Ok(Some((choices, Toward::pool(&self.cfg), send)))
    }

    /// Explicit gateway: `USER name@host[:port]` names the server. The host
    /// is resolved within `gateway_resolve_timeout` and every address must
    /// pass `gateway_allow`/`gateway_deny`. `None`: refused (reply queued).
    async fn named_destination(&mut self, arg: &str) -> Result<Option<Routed>, End> {
        let refuse = |s: &mut Self, kind: ErrorKind| {
            s.order.local(&reply_for(&Error::client(kind)).0);
            Ok(None)
        };
        let named = match crate::gateway::parse_user_at_host(arg) {
            Ok(n) => n,
            Err(e) => {
                warn!(session = self.id, client = %self.client_addr, user = %arg, error = %e, "gateway: USER names no destination");
                return refuse(self, ErrorKind::GatewayLogin);
            }
        };
        let lookup = tokio::net::lookup_host((named.host.as_str(), named.port));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(
            self.cfg.gateway_resolve_timeout,
            lookup,
        )
        .await
        {
            Ok(Ok(a)) => a.map(crate::net::canonical).collect(),
            Ok(Err(e)) => {
                warn!(session = self.id, client = %self.client_addr, host = %named.host, error = %e, "gateway: cannot resolve the destination");
                return refuse(self, ErrorKind::DestinationUnresolvable);
            }
            Err(_) => {
                warn!(session = self.id, client = %self.client_addr, host = %named.host, timeout = ?self.cfg.gateway_resolve_timeout, "gateway: resolving the destination timed out");
                return refuse(self, ErrorKind::DestinationUnresolvable);
            }
        };
        if addrs.is_empty() {
            warn!(session = self.id, client = %self.client_addr, host = %named.host, "gateway: the destination has no address");
            return refuse(self, ErrorKind::DestinationUnresolvable);
        }
        // Every address must pass: a permitted name must not lead inside.
        for &a in &addrs {
            if let Err(why) = self.cfg.gateway.check(Some(&named.host), a) {
                warn!(session = self.id, client = %self.client_addr, destination = %named.host, reason = %why, "gateway destination refused");
                return refuse(self, ErrorKind::DestinationRefused);
            }
        }
        let label = format!("{}:{}", named.host, named.port);
        let choices = addrs
            .into_iter()
            .flat_map(|a| destination(a, label.clone()))
            .collect();
        let send = parse_command(format!("USER {}", named.user).as_bytes());
        Ok(Some((choices, Toward::GATEWAY, send)))
    }

    /// Nothing in flight: no reply owed, no data connection prepared or running.
    fn is_idle(&self) -> bool {
        self.order.is_quiet()
            && self.order.held_gen().is_none()
            && self.deferred.is_none()
            && self.prepared.is_none()
            && self
                .transfer
                .as_ref()
                .is_none_or(|t| t.finished || t.failed)
    }

    /// When the session times out if nothing happens.
    fn deadline(&self) -> Instant {
        if !self.greeted {
            return self.started + self.cfg.greeting_timeout;
        }
        let busy = self.order.held_gen().is_some()
            || self
                .transfer
                .as_ref()
                .is_some_and(|t| !t.finished && !t.failed);
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        if let Some((_, since)) = self.deferred {
            // A transfer still running legitimately holds replies back.
            return if busy {
                far
            } else {
                since + self.cfg.backend_reply_timeout
            };
        }
        if busy {
            // A long transfer keeps the session alive; keepalive keeps the control legs alive.
            return far;
        }
        let idle = self.last_command + self.cfg.idle_timeout;
        if self.logged_in {
            idle
        } else {
            idle.min(self.started + self.cfg.login_timeout)
        }
    }

    async fn process_buffered_commands(&mut self) -> Result<(), End> {
        while self.deferred.is_none() && !self.quitting && self.backend_gone.is_none() {
            let Some(frame) = self.commands.next_frame() else {
                break;
            };
            self.last_command = Instant::now();
            match frame {
                Frame::TooLong => {
                    warn!(session = self.id, client = %self.client_addr, limit = self.cfg.max_line_length, "command line too long; discarded");
                    self.local_error(Error::client(ErrorKind::LineTooLong))
                        .await?;
                }
                Frame::Line(line) => self.on_command(parse_command(&line)).await?,
            }
        }
        Ok(())
    }

    async fn on_command(&mut self, cmd: Command) -> Result<(), End> {
        self.quit_sent |= cmd.verb == Verb::Quit;
        let local_only = matches!(cmd.verb, Verb::Auth | Verb::Pbsz | Verb::Prot | Verb::Ccc);
        if self.unrouted() && !local_only && cmd.verb != Verb::User {
            return self.before_routing(cmd).await;
        }
        match cmd.verb {
            v if v.is_data_setup() => match self.check_data_setup(&cmd) {
                Ok(Some(leg)) => self.deferred = Some((Deferred::Data(leg), Instant::now())),
                Ok(None) => self.write_ready().await?,
                Err(e) => {
                    if matches!(e.kind, ErrorKind::ActiveRefused(_)) {
                        self.shared
                            .metrics
                            .data_refused_total
                            .with_label_values(&["bounce"])
                            .inc();
                        warn!(session = self.id, client = %self.client_addr, command = %String::from_utf8_lossy(&cmd.line), "refused PORT/EPRT target");
                    }
                    self.local_error(e).await?;
                }
            },
            v if v.is_transfer() && self.tls_required() && !self.prot_private => {
                // The prepared data connection will not be used.
                if let Some(p) = self.prepared.take() {
                    p.cancel.cancel();
                }
                self.local_error(Error::client(ErrorKind::ProtectionRequired))
                    .await?
            }
            v if v.is_transfer() => self.start_transfer(cmd).await?,
            Verb::Abor => {
                if let Some(t) = self.transfer.as_mut().filter(|t| !t.finished) {
                    // The client no longer wants the data, and may have stopped
                    // reading it: reset both data legs now (as a direct server
                    // would close them) so the final reply is not held behind
                    // them; a held success becomes 426, since the data did not
                    // all arrive. This also unblocks a server stuck writing or
                    // reading data, so ABOR is forwarded as a plain line:
                    // pure-ftpd silently drops an `IAC IP IAC DM ABOR` line once
                    // its transfer has ended, which would leave a reply missing.
                    t.aborted = true;
                    self.cut_transfer("aborted");
                    if self.order.held_gen() == self.transfer.as_ref().map(|t| t.gen) {
                        self.release_held().await?;
                    }
                }
                self.forward(&cmd, Awaiting::Command(Verb::Abor)).await?;
            }
            // ftpgate terminates TLS itself: AUTH, PBSZ, PROT and CCC are
            // answered here and never reach the backend.
            Verb::Auth => match self.check_auth(&cmd) {
                Ok(()) => self.deferred = Some((Deferred::Auth, Instant::now())),
                Err(e) => self.local_error(e).await?,
            },
            Verb::Pbsz => {
                if self.client_rd.is_tls() {
                    self.local_reply(Reply::new(ReplyCode::CommandOk, "PBSZ=0"))
                        .await?
                } else {
                    self.local_error(Error::client(ErrorKind::PbszFirst))
                        .await?
                }
            }
            Verb::Prot => {
                let level = cmd.arg_str().trim().to_ascii_uppercase();
                // RFC 4217 wants PBSZ first; clients (ftplib's prot_c) skip
                // it and every server accepts that, so only TLS is required.
                if !self.client_rd.is_tls() {
                    self.local_error(Error::client(ErrorKind::PbszFirst))
                        .await?
                } else if level == "P" || level == "C" {
                    self.prot_private = level == "P";
                    let text = if self.prot_private {
                        "PROT now Private."
                    } else {
                        "PROT now Clear."
                    };
                    self.local_reply(Reply::new(ReplyCode::CommandOk, text))
                        .await?
                } else {
                    self.local_error(Error::client(ErrorKind::ProtLevel))
                        .await?
                }
            }
            Verb::Ccc => {
                self.local_error(Error::client(ErrorKind::CccRefused))
                    .await?
            }
            Verb::User | Verb::Pass if self.tls_required() && !self.client_rd.is_tls() => {
                warn!(session = self.id, client = %self.client_addr, "login before AUTH TLS refused (tls = required)");
                self.local_error(Error::client(ErrorKind::TlsRequired))
                    .await?
            }
            Verb::User if self.routed_user.is_some() || self.unrouted() => {
                self.route_user(cmd).await?
            }
            Verb::User => {
                self.user = Some(cmd.arg_str());
                self.forward(&cmd, Awaiting::Command(Verb::User)).await?;
            }
            Verb::Type => {
                // The transfer log notes ASCII or binary; TYPE A N, A T, ... are ASCII.
                self.ascii = cmd
                    .arg_str()
                    .trim_start()
                    .to_ascii_uppercase()
                    .starts_with('A');
                self.forward(&cmd, Awaiting::Command(Verb::Type)).await?;
            }
            verb => self.forward(&cmd, Awaiting::Command(verb)).await?,
        }
        Ok(())
    }

    /// Validates PASV/EPSV/PORT/EPRT without I/O. `Ok(None)`: answered locally.
    fn check_data_setup(&mut self, cmd: &Command) -> Result<Option<ClientLeg>, Error> {
        let arg = cmd.arg.as_deref();
        match cmd.verb {
            Verb::Epsv => match parse_epsv_arg(arg) {
                EpsvArg::All => {
                    self.epsv_all = true;
                    self.order
                        .local(&Reply::new(ReplyCode::CommandOk, "EPSV ALL ok."));
                    Ok(None)
                }
                EpsvArg::Invalid => Err(Error::client(ErrorKind::MalformedArgument)),
                EpsvArg::Any | EpsvArg::Protocol(1 | 2) => {
                    Ok(Some(ClientLeg::Passive(ClientPassive::Epsv)))
                }
                // RFC 2428 section 3: an unsupported network protocol gets 522.
                EpsvArg::Protocol(_) => Err(Error::client(ErrorKind::UnknownNetworkProtocol)),
            },
            _ if self.epsv_all => Err(Error::client(ErrorKind::EpsvAllInEffect)),
            Verb::Pasv => Ok(Some(ClientLeg::Passive(ClientPassive::Pasv))),
            Verb::Port | Verb::Eprt => {
                if !self.cfg.active_mode {
                    return Err(Error::client(ErrorKind::ActiveDisabled));
                }
                let named = if cmd.verb == Verb::Port {
                    parse_port_arg(arg.unwrap_or_default()).map(SocketAddr::V4)
                } else {
                    parse_eprt_arg(arg.unwrap_or_default())
                };
                let named = named.map_err(|e| match e {
                    HostPortError::Malformed => Error::client(ErrorKind::MalformedArgument),
                    HostPortError::UnknownProtocol => {
                        Error::client(ErrorKind::UnknownNetworkProtocol)
                    }
                })?;
                let (target, fixed) =
                    check_active_target(named, self.client_addr.ip(), self.cfg.active_nat_fix)
                        .map_err(|r| Error::client(ErrorKind::ActiveRefused(r)))?;
                if fixed {
                    info!(session = self.id, named = %named, using = %target, "active mode behind NAT: using the control connection's address");
                }
                Ok(Some(ClientLeg::Active {
                    target,
                    verb: cmd.verb,
                }))
            }
            _ => Err(Error::client(ErrorKind::NotImplemented)),
        }
    }

    /// Prepares both legs of a data connection and answers the client.
    async fn setup_data(&mut self, leg: ClientLeg) -> Result<(), End> {
        self.prepared_expired = false;
        if let Some(old) = self.prepared.take() {
            old.cancel.cancel();
        }
        // Check what needs no backend round trip first.
        let public = match leg {
            ClientLeg::Passive(ClientPassive::Pasv) => {
                match self
                    .live
                    .public
                    .for_client(self.client_addr.ip(), self.seen_local.ip(), true)
                {
                    Some(p) => Some(p),
                    None => {
                        return self
                            .local_error(Error::client(ErrorKind::NoIpv4ForPasv))
                            .await
                    }
                }
            }
            _ => None,
        };
        let backend = match self.backend_leg().await {
            Ok(b) => b,
            Err(e) => return self.local_error(e).await,
        };
        let gen = self.next_gen;
        self.next_gen += 1;
        let cancel = self.cancel.child_token();
        let (tx, rx) = oneshot::channel();
        let progress = Arc::new(Progress::default());
        let mut task = DataTask {
            gen,
            client_rx: rx,
            lease: None,
            client_deadline: None,
            backend,
            events: self.events_tx.clone(),
            cancel: cancel.clone(),
            limits: RelayLimits {
                buffer_max: self.cfg.relay_buffer_max,
                stall: self.cfg.data_stall_timeout,
            },
            counters: self.counters.clone(),
            progress: Arc::clone(&progress),
            client_tls: self.client_data_tls(),
            backend_tls: self
                .backend_tls
                .clone()
                .filter(|_| self.cfg.backend_tls_protect_data),
            handshakes: self.shared.metrics.tls_handshakes_total.clone(),
        };
        match leg {
            ClientLeg::Passive(kind) => {
                let Some(lease) = self.shared.pool.lease(self.client_addr.ip(), tx) else {
                    self.shared.metrics.passive_exhausted_total.inc();
                    warn!(session = self.id, client = %self.client_addr, pending = self.shared.pool.pending(), "passive port range exhausted for this client");
                    return self
                        .local_error(Error::internal(ErrorKind::PortRangeExhausted))
                        .await;
                };
                let port = lease.port();
                task.lease = Some(lease);
                task.client_deadline = Some(Instant::now() + self.cfg.pending_data_timeout);
                let shown = public.unwrap_or(PublicAddr::new(self.local.ip()));
                let Some(reply) = client_passive_reply(kind, shown, port) else {
                    return self
                        .local_error(Error::client(ErrorKind::NoIpv4ForPasv))
                        .await;
                };
                debug!(session = self.id, gen, port, public = %shown, "passive data connection prepared");
                spawn_data_task(task);
                self.prepared = Some(Prepared {
                    gen,
                    cancel,
                    client: PreparedClient::Passive,
                    active: false,
                    progress,
                });
                self.local_reply(reply).await
            }
            ClientLeg::Active { target, verb } => {
                debug!(session = self.id, gen, target = %target, "active data connection prepared");
                spawn_data_task(task);
                self.prepared = Some(Prepared {
                    gen,
                    cancel,
                    client: PreparedClient::Active { target, tx },
                    active: true,
                    progress,
                });
                let text = if verb == Verb::Port {
                    "PORT command successful."
                } else {
                    "EPRT command successful."
                };
                self.local_reply(Reply::new(ReplyCode::CommandOk, text))
                    .await
            }
        }
    }

    /// Opens the backend side: passive (connect now, before the transfer
    /// command can race it) or active (listen, send PORT/EPRT).
    async fn backend_leg(&mut self) -> Result<BackendLeg, Error> {
        let connect_timeout = self.cfg.data_connect_timeout;
        match self.cfg.backend_data_mode {
            BackendDataMode::Passive => {
                let mut cmd = self.passive_cmd;
                for attempt in 0..2 {
                    let reply = self.backend_exchange(cmd.line()).await?;
                    match backend_data_addr(
                        &reply,
                        cmd,
                        self.backend_addr,
                        self.cfg.trust_backend_pasv_address,
                    ) {
                        Ok(addr) => {
                            self.passive_cmd = cmd;
                            let from = SocketAddr::new(self.backend_local.ip(), 0);
                            return match connect_from(from, addr.0, connect_timeout).await {
                                Ok(s) => Ok(BackendLeg::Connected(s)),
                                Err(e) => {
                                    error!(session = self.id, backend_data = %addr, error = %e, "cannot connect to the backend's data port");
                                    Err(Error::backend(ErrorKind::DataConnectFailed(e.to_string())))
                                }
                            };
                        }
                        Err(PassiveReplyError::Unsupported)
                            if attempt == 0 && self.backend_addr.0.is_ipv4() =>
                        {
                            debug!(session = self.id, reply = %reply.text_lossy(), "backend refused {:?}; trying the other passive command", cmd);
                            cmd = if cmd == PassiveCommand::Pasv {
                                PassiveCommand::Epsv
                            } else {
                                PassiveCommand::Pasv
                            };
                        }
                        Err(kind) => {
                            error!(session = self.id, backend = %self.backend_addr, reply = %reply.text_lossy(), problem = ?kind, "unusable backend reply to {:?}", cmd);
                            return Err(Error::backend(ErrorKind::BackendDataSetup(
                                reply.text_lossy(),
                            )));
                        }
                    }
                }
                Err(Error::backend(ErrorKind::BackendDataSetup(
                    "no passive command accepted".into(),
                )))
            }
            BackendDataMode::Active => {
                let listener =
                    bind_active(self.backend_local.ip(), self.cfg.backend_active_ports).await?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| Error::internal(ErrorKind::DataConnectFailed(e.to_string())))?;
                let reply = self
                    .backend_exchange(backend_active_command(addr).as_bytes())
                    .await?;
                if !reply.is_success() {
                    error!(session = self.id, backend = %self.backend_addr, reply = %reply.text_lossy(), "backend refused ftpgate's PORT/EPRT");
                    return Err(Error::backend(ErrorKind::BackendDataSetup(
                        reply.text_lossy(),
                    )));
                }
                Ok(BackendLeg::Listening {
                    listener,
                    backend_ip: self.backend_addr.0.ip(),
                })
            }
        }
    }

    /// Sends one of ftpgate's own commands and reads its final reply. Only
    /// called with no other reply outstanding, so the next reply is ours.
    async fn backend_exchange(&mut self, line: &[u8]) -> Result<Reply, Error> {
        debug_assert!(self.order.is_quiet());
        // Nothing is awaited: a reply already here was sent unasked and
        // must not be taken for the answer to ftpgate's own command.
        while let Some(r) = self.replies.next_reply() {
            match r {
                Ok(r) if r.code == 421 => {
                    self.backend_said_421 = true;
                    self.order.send(r.to_bytes());
                }
                Ok(r) => self.drop_reply("unsolicited", &r),
                Err(ReplyError::Malformed(line)) => {
                    warn!(session = self.id, backend = %self.backend_addr, line = %String::from_utf8_lossy(&line), "skipped a backend line that is not a reply")
                }
            }
        }
        let w = &mut self.backend_wr;
        async { w.write_all(line).await.and(w.flush().await) }
            .await
            .map_err(|_| Error::backend(ErrorKind::BackendClosed))?;
        let deadline = Instant::now() + self.cfg.backend_reply_timeout;
        self.read_backend_reply(deadline).await
    }

    /// Reads the backend's next final reply (skipping preliminary ones).
    async fn read_backend_reply(&mut self, deadline: Instant) -> Result<Reply, Error> {
        loop {
            while let Some(r) = self.replies.next_reply() {
                match r {
                    Ok(reply) if reply.is_preliminary() => continue,
                    Ok(reply) => return Ok(reply),
                    Err(e) => {
                        warn!(session = self.id, problem = ?e, "skipped a malformed backend reply line")
                    }
                }
            }
            match tokio::time::timeout_at(
                deadline,
                self.backend_rd.read_buf(self.replies.buffer_mut()),
            )
            .await
            {
                Err(_) => return Err(Error::backend(ErrorKind::BackendTimeout)),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Error::backend(ErrorKind::BackendClosed)),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn start_transfer(&mut self, cmd: Command) -> Result<(), End> {
        let Some(p) = self.prepared.take() else {
            if std::mem::take(&mut self.prepared_expired) {
                // The backend still expects a data connection that no longer
                // exists: answering for it avoids passing on a 226 for data
                // that went nowhere.
                return self
                    .local_error(Error::client(ErrorKind::DataConnectFailed(
                        "data connection expired before the transfer command".into(),
                    )))
                    .await;
            }
            // No PASV/PORT first: the backend answers that itself (425/503).
            return self.forward(&cmd, Awaiting::Transfer { gen: None }).await;
        };
        let active = p.active;
        let progress = Arc::clone(&p.progress);
        if let PreparedClient::Active { target, tx } = p.client {
            let port = if self.cfg.active_source_port_20 {
                20
            } else {
                0
            };
            let from = SocketAddr::new(self.local.ip(), port);
            match connect_from(from, target, self.cfg.data_connect_timeout).await {
                Ok(s) => {
                    let _ = tx.send(s);
                }
                Err(e) => {
                    p.cancel.cancel();
                    warn!(session = self.id, target = %target, error = %e, "cannot connect to the client's active-mode address");
                    return self
                        .local_error(Error::client(ErrorKind::DataConnectFailed(e.to_string())))
                        .await;
                }
            }
        }
        self.record_transfer();
        self.transfer = Some(Transfer {
            gen: p.gen,
            cancel: p.cancel,
            verb: cmd.verb_text.clone(),
            arg: cmd.arg_str(),
            kind: TransferKind::of(cmd.verb),
            active,
            ascii: self.ascii,
            started: Instant::now(),
            reply_code: None,
            progress,
            down_clean: None,
            recorded: false,
            aborted: false,
            relay_error: false,
            down_done: false,
            failed: false,
            finished: false,
        });
        self.forward(&cmd, Awaiting::Transfer { gen: Some(p.gen) })
            .await
    }

    async fn on_data_event(&mut self, ev: DataEvent) -> Result<(), End> {
        if let Some(p) = &self.prepared {
            if p.gen == ev.gen {
                if let DataEventKind::Failed(f) = &ev.kind {
                    self.shared
                        .metrics
                        .data_refused_total
                        .with_label_values(&["expired"])
                        .inc();
                    self.shared.metrics.limit_hit("pending_data_timeout");
                    warn!(session = self.id, client = %self.client_addr, problem = ?f, "prepared data connection expired unused");
                    self.prepared = None;
                    self.prepared_expired = true;
                }
                return Ok(());
            }
        }
        let Some(t) = self.transfer.as_mut().filter(|t| t.gen == ev.gen) else {
            return Ok(());
        };
        match ev.kind {
            DataEventKind::ClientConnected(peer) => {
                debug!(session = self.id, gen = ev.gen, peer = %peer, "client data connection up")
            }
            DataEventKind::DownDone { clean, .. } => {
                t.down_done = true;
                t.down_clean = Some(clean);
            }
            DataEventKind::Finished(out) => {
                t.down_done = true;
                t.finished = true;
                t.relay_error = out.error.is_some();
                if let Some(e) = &out.error {
                    let cause = if e.kind() == std::io::ErrorKind::TimedOut {
                        "stalled"
                    } else {
                        "relay_error"
                    };
                    warn!(session = self.id, client = %self.client_addr, error = %e, bytes_up = out.up, bytes_down = out.down, "transfer cut: both data connections reset");
                    self.shared
                        .metrics
                        .transfers_cut_total
                        .with_label_values(&[cause])
                        .inc();
                }
                debug!(
                    session = self.id,
                    command = %String::from_utf8_lossy(&t.verb),
                    bytes_up = out.up,
                    bytes_down = out.down,
                    ms = t.started.elapsed().as_millis() as u64,
                    error = ?out.error.as_ref().map(|e| e.to_string()),
                    "transfer finished"
                );
            }
            DataEventKind::Failed(f) => {
                match &f {
                    DataFailure::ClientTimeout => {
                        warn!(session = self.id, client = %self.client_addr, "client did not open its data connection in time")
                    }
                    other => warn!(session = self.id, problem = ?other, "data connection failed"),
                }
                t.failed = true;
                t.cancel.cancel();
            }
        }
        if self.order.held_gen() == Some(ev.gen) && t.settled() {
            self.release_held().await?;
        }
        self.record_transfer_if_done();
        Ok(())
    }

    async fn process_replies(&mut self) -> Result<(), End> {
        while let Some(r) = self.replies.next_reply() {
            match r {
                Ok(reply) => self.on_reply(reply).await?,
                Err(ReplyError::Malformed(line)) => {
                    warn!(session = self.id, backend = %self.backend_addr, line = %String::from_utf8_lossy(&line), "skipped a backend line that is not a reply")
                }
            }
            let dropped = self.replies.take_dropped();
            if dropped > 0 {
                warn!(
                    session = self.id,
                    dropped, "backend reply too long; lines dropped"
                );
            }
        }
        Ok(())
    }

    async fn on_reply(&mut self, reply: Reply) -> Result<(), End> {
        let arrived = Instant::now();
        self.greeted = true;
        // The server is closing and said so; no second 421 from ftpgate.
        self.backend_said_421 |= reply.code == 421;
        // Only replies passed straight through measure ftpgate's own latency.
        let mut measure = false;
        match self.order.on_reply(&reply) {
            Completion::Preliminary => self.order.send(reply.to_bytes()),
            // A server closing says 421 unasked (RFC 959 5.4): the client
            // must hear it. Anything else nobody asked for would answer the
            // client's next command in its place.
            Completion::Unsolicited if reply.code == 421 => self.order.send(reply.to_bytes()),
            Completion::Unsolicited => self.drop_reply("unsolicited", &reply),
            // Only ftpgate's own PASV/EPSV (never forwarded) is answered by a
            // 227/229: one arriving for another command names an address
            // the client must not be sent to.
            Completion::Command(verb) if matches!(reply.code, 227 | 229) => {
                self.drop_reply("passive_reply", &reply);
                debug!(session = self.id, verb = ?verb, "answered the command locally instead");
                self.order.send(
                    reply_for(&Error::backend(ErrorKind::UnexpectedBackendReply))
                        .0
                        .to_bytes(),
                );
            }
            Completion::Command(verb) => {
                let reply = match verb {
                    // What ftpgate offers the client, not what the backend
                    // offers ftpgate: TLS is ftpgate's own on each side.
                    Verb::Feat => {
                        let mut provided = vec!["EPSV"];
                        if self.cfg.active_mode {
                            provided.push("EPRT");
                        }
                        if self.tls_offered() {
                            provided.extend(["AUTH TLS", "PBSZ", "PROT"]);
                        }
                        rewrite_feat(&reply, &provided, &["AUTH", "PBSZ", "PROT", "CCC"])
                    }
                    _ => reply,
                };
                measure = true;
                match (verb, reply.code) {
                    (Verb::User | Verb::Pass, 230) => {
                        self.logged_in = true;
                        self.shared
                            .metrics
                            .logins_total
                            .with_label_values(&["success"])
                            .inc();
                        info!(session = self.id, client = %self.client_addr, user = %self.user.as_deref().unwrap_or("-"), "logged in");
                    }
                    (Verb::User | Verb::Pass, 530) => {
                        self.order.send(reply.to_bytes());
                        return self.on_login_failure().await;
                    }
                    (Verb::Rein, 200..=299) => self.logged_in = false,
                    (Verb::Quit, _) => self.quitting = true,
                    _ => {}
                }
                self.order.send(reply.to_bytes());
            }
            Completion::Transfer {
                gen: Some(gen),
                after_preliminary,
            } => self.on_transfer_reply(gen, after_preliminary, reply),
            // No data connection went through ftpgate for this transfer, so
            // no data reached the client: no success for it.
            Completion::Transfer { gen: None, .. } if reply.is_success() => {
                self.drop_reply("transfer_without_data", &reply);
                self.order.send(
                    reply_for(&Error::client(ErrorKind::DataConnectFailed(
                        "no data connection".into(),
                    )))
                    .0
                    .to_bytes(),
                );
            }
            Completion::Transfer { gen: None, .. } => self.order.send(reply.to_bytes()),
        }
        self.write_ready().await?;
        if measure {
            self.shared
                .metrics
                .reply_latency_seconds
                .observe(arrived.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// A backend reply not passed on: a warning quoting it, and a count.
    fn drop_reply(&self, reason: &'static str, reply: &Reply) {
        warn!(session = self.id, backend = %self.backend_addr, reason, reply = %reply.text_lossy(), "dropped a backend reply");
        self.shared
            .metrics
            .backend_replies_dropped_total
            .with_label_values(&[reason])
            .inc();
    }

    /// A 530 to USER or PASS (already queued): count it, slow the client
    /// down past `login_failures_before_delay`, close past `max_login_failures`.
    async fn on_login_failure(&mut self) -> Result<(), End> {
        self.login_failures += 1;
        self.shared
            .metrics
            .logins_total
            .with_label_values(&["failure"])
            .inc();
        warn!(session = self.id, client = %self.client_addr, user = %self.user.as_deref().unwrap_or("-"), failures = self.login_failures, "login failed");
        if self.login_failures >= self.cfg.max_login_failures {
            self.write_ready().await?;
            self.shared.metrics.limit_hit("max_login_failures");
            warn!(session = self.id, client = %self.client_addr, "too many failed logins; closing the session");
            return Err(End::Error(Error::client(ErrorKind::TooManyLoginFailures)));
        }
        if self.login_failures > self.cfg.login_failures_before_delay {
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = tokio::time::sleep(self.cfg.login_failure_delay) => {}
            }
        }
        self.write_ready().await
    }

    /// Counts the current transfer once its data and its final reply are
    /// both known (or it failed or was aborted).
    fn record_transfer_if_done(&mut self) {
        // A download is done when the backend's data has all reached the
        // client: a client that keeps its data socket open (or closes it only
        // after QUIT) must not make it look unfinished.
        let done = self.transfer.as_ref().is_some_and(|t| {
            let data_done =
                t.finished || (t.kind != TransferKind::Upload && t.down_clean.is_some());
            !t.recorded && (t.failed || t.aborted || (data_done && t.reply_code.is_some()))
        });
        if done {
            self.record_transfer();
        }
    }

    /// Counts the current transfer in metrics and the transfer log, once.
    /// Also called when it is replaced or the session ends before it is done.
    fn record_transfer(&mut self) {
        let Some(t) = self.transfer.as_mut().filter(|t| !t.recorded) else {
            return;
        };
        t.recorded = true;
        let data_ok = match t.kind {
            TransferKind::Upload => t.finished && !t.relay_error,
            _ => t.down_clean == Some(true),
        };
        let complete = !t.aborted
            && !t.failed
            && data_ok
            && t.reply_code.is_some_and(|c| (200..300).contains(&c));
        let (up, down) = t.progress.get();
        self.bytes_up += up;
        self.bytes_down += down;
        self.transfers += 1;
        let outcome = if t.aborted {
            "aborted"
        } else if complete {
            "complete"
        } else {
            "failed"
        };
        self.shared
            .metrics
            .transfers_total
            .with_label_values(&[
                t.kind.label(),
                if t.active { "active" } else { "passive" },
                outcome,
            ])
            .inc();
        if t.kind == TransferKind::Listing {
            return;
        }
        if let Some(log) = &self.shared.xferlog {
            let entry = xferlog::Entry {
                end: std::time::SystemTime::now(),
                duration: t.started.elapsed(),
                client: self.client_addr.ip().to_string(),
                bytes: if t.kind == TransferKind::Upload {
                    up
                } else {
                    down
                },
                file: t.arg.clone(),
                ascii: t.ascii,
                outgoing: t.kind == TransferKind::Download,
                user: self.user.clone(),
                complete,
            };
            if let Err(e) = log.write(&entry) {
                error!(path = %log.path().display(), error = %e, "cannot write the transfer log");
            }
        }
    }

    /// A transfer's final reply: pass it now, or hold it for the relay.
    fn on_transfer_reply(&mut self, gen: u64, after_preliminary: bool, reply: Reply) {
        let Some(t) = self.transfer.as_mut().filter(|t| t.gen == gen) else {
            return self.order.send(reply.to_bytes());
        };
        t.reply_code = Some(reply.code);
        if !after_preliminary {
            // Refused before any data flowed (550, 425, ...): the prepared
            // connection will not be used. Not a transfer: not logged.
            t.cancel.cancel();
            self.transfer = None;
            return self.order.send(reply.to_bytes());
        }
        self.record_transfer_if_done();
        let Some(t) = self.transfer.as_ref() else {
            return self.order.send(reply.to_bytes());
        };
        if t.settled() {
            // A success for data that did not arrive whole becomes 425/426.
            let shown = t.verdict(reply);
            return self.order.send(shown.to_bytes());
        }
        if let Err(reply) = self.order.hold(gen, reply) {
            error!(session = self.id, "bug: two held replies");
            self.order.send(reply.to_bytes());
        }
    }

    /// Releases the held transfer reply and writes what is ready.
    async fn release_held(&mut self) -> Result<(), End> {
        self.release_held_reply();
        self.write_ready().await
    }

    /// Moves the held transfer reply to the output: as the backend sent
    /// it, or, when the data did not arrive whole, a success replaced by
    /// 425 (never connected) or 426 (cut), because only a client that has
    /// every byte may read a 2xx.
    fn release_held_reply(&mut self) {
        let held = self.order.held_gen();
        let transfer = self.transfer.as_ref().filter(|t| Some(t.gen) == held);
        self.order.release(|r| {
            let shown = match transfer {
                Some(t) => t.verdict(r.clone()),
                // Nothing vouches for the data: no success.
                None if r.is_success() => reply_for(&Error::client(ErrorKind::TransferCut)).0,
                None => r.clone(),
            };
            (shown != *r).then_some(shown)
        });
    }

    /// Writes every reply whose turn has come.
    async fn write_ready(&mut self) -> Result<(), End> {
        let ready: Vec<Bytes> = self.order.take_ready().collect();
        for b in ready {
            self.write_client(&b).await?;
        }
        Ok(())
    }

    /// Sends one of ftpgate's own replies in its turn.
    async fn local_reply(&mut self, reply: Reply) -> Result<(), End> {
        self.order.local(&reply);
        self.write_ready().await
    }

    /// Answers an error per `reply_for`; ends the session if it says so.
    async fn local_error(&mut self, e: Error) -> Result<(), End> {
        let (reply, after) = reply_for(&e);
        if after == After::Close {
            return Err(End::Error(e));
        }
        self.local_reply(reply).await
    }

    async fn forward(&mut self, cmd: &Command, awaiting: Awaiting) -> Result<(), End> {
        self.order.expect(awaiting);
        let mut line = Vec::with_capacity(cmd.line.len() + 2);
        line.extend_from_slice(&cmd.line);
        line.extend_from_slice(b"\r\n");
        self.write_backend(&line).await
    }

    async fn write_backend(&mut self, bytes: &[u8]) -> Result<(), End> {
        let w = &mut self.backend_wr;
        async { w.write_all(bytes).await.and(w.flush().await) }
            .await
            .map_err(|_| End::Error(Error::backend(ErrorKind::BackendClosed)))
    }

    async fn write_client(&mut self, bytes: &[u8]) -> Result<(), End> {
        let w = &mut self.client_wr;
        async { w.write_all(bytes).await.and(w.flush().await) }
            .await
            .map_err(End::Io)
    }

    /// Says goodbye where needed and writes the session log line.
    async fn finish(&mut self, end: End) {
        if let Some(p) = self.prepared.take() {
            p.cancel.cancel();
        }
        self.cut_transfer("session_end");
        if let Some(t) = self.transfer.as_mut() {
            t.cancel.cancel();
        }
        // A held reply goes out only as the data allows (a success for data
        // that was cut becomes 426), before anything else owed.
        self.release_held_reply();
        self.record_transfer();
        let outcome = match &end {
            End::ClientQuit => "quit",
            End::ClientClosed | End::Io(_) => "client_closed",
            End::ServerGoodbye => "backend_closed",
            End::Error(e) => match e.kind {
                ErrorKind::Shutdown => "shutdown",
                ErrorKind::LoginTimeout | ErrorKind::IdleTimeout | ErrorKind::GreetingTimeout => {
                    "timeout"
                }
                ErrorKind::TooManyLoginFailures => "login_failures",
                ErrorKind::BackendClosed | ErrorKind::BackendTimeout => "backend_error",
                _ => "error",
            },
        };
        let m = &self.shared.metrics;
        m.sessions_active
            .with_label_values(&[&self.listener, &self.backend_name])
            .dec();
        m.sessions_total
            .with_label_values(&[&self.listener, &self.backend_name, outcome])
            .inc();
        let how = match &end {
            End::ClientQuit => "quit".to_owned(),
            End::ClientClosed => "client closed".to_owned(),
            End::Io(e) => format!("client i/o error: {e}"),
            End::ServerGoodbye | End::Error(_) => {
                // Anything still owed to the client goes first (the held
                // reply, released above by the data's rules), then the 421.
                let mut owed = self.order.take_owed();
                if let End::Error(e) = &end {
                    owed.push(reply_for(e).0.to_bytes());
                }
                let w = &mut self.client_wr;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    for b in owed {
                        w.write_all(&b).await?;
                    }
                    w.flush().await
                })
                .await;
                match &end {
                    End::Error(e) => describe(&e.kind),
                    _ => "server sent 421 and closed".to_owned(),
                }
            }
        };
        let _ = self.client_wr.shutdown().await;
        let _ = self.backend_wr.shutdown().await;
        info!(
            session = self.id,
            client = %self.client_addr,
            backend = %self.backend_addr,
            user = %self.user.as_deref().unwrap_or("-"),
            duration_ms = self.started.elapsed().as_millis() as u64,
            bytes_up = self.bytes_up,
            bytes_down = self.bytes_down,
            transfers = self.transfers,
            end = %how,
            "session closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(kind: TransferKind) -> Transfer {
        Transfer {
            gen: 1,
            cancel: CancellationToken::new(),
            verb: Bytes::from_static(b"RETR"),
            arg: "f".into(),
            kind,
            active: false,
            ascii: false,
            started: Instant::now(),
            reply_code: None,
            progress: Arc::new(Progress::default()),
            down_clean: None,
            recorded: false,
            aborted: false,
            relay_error: false,
            down_done: false,
            failed: false,
            finished: false,
        }
    }

    fn code(t: &Transfer, line: &str) -> u16 {
        t.verdict(Reply::from_line(line.into())).code
    }

    /// The rule every final reply passes: a 2xx only for data that arrived
    /// whole; otherwise 425 (never connected) or 426 (cut). Failures pass.
    #[test]
    fn a_success_passes_only_for_whole_data() {
        use TransferKind::*;
        let ok = "226 Transfer complete.";
        // (kind, down_clean, finished, relay_error, failed, aborted) -> code
        let table = [
            (Download, Some(true), false, false, false, false, 226),
            (Download, Some(true), true, true, false, false, 226),
            (Download, Some(false), true, true, false, false, 426),
            (Download, None, true, true, false, false, 426),
            (Download, Some(true), true, false, false, true, 426),
            (Download, None, false, false, true, false, 425),
            (Listing, Some(true), false, false, false, false, 226),
            (Listing, None, false, false, false, false, 426),
            (Upload, Some(true), true, false, false, false, 226),
            (Upload, Some(true), true, true, false, false, 426),
            (Upload, Some(true), false, false, false, false, 426),
            (Upload, None, false, false, true, false, 425),
        ];
        for (kind, down_clean, finished, relay_error, failed, aborted, want) in table {
            let mut t = transfer(kind);
            (t.down_clean, t.finished, t.relay_error, t.failed, t.aborted) =
                (down_clean, finished, relay_error, failed, aborted);
            t.down_done = down_clean.is_some() || finished;
            assert_eq!(code(&t, ok), want, "{kind:?} {down_clean:?} fin={finished} err={relay_error} failed={failed} aborted={aborted}");
            assert_eq!(
                code(&t, "550 No such file."),
                550,
                "failures pass as they are"
            );
        }
    }

    #[test]
    fn a_download_settles_when_its_data_has_reached_the_client() {
        let mut t = transfer(TransferKind::Download);
        assert!(!t.settled());
        t.down_done = true;
        assert!(t.settled());
        let mut u = transfer(TransferKind::Upload);
        u.down_done = true;
        assert!(!u.settled(), "an upload waits for both directions");
        u.finished = true;
        assert!(u.settled());
    }

    #[test]
    fn session_ends_read_in_lower_case_words() {
        assert_eq!(describe(&ErrorKind::Shutdown), "shutdown");
        assert_eq!(describe(&ErrorKind::IdleTimeout), "idle timeout");
        assert_eq!(
            describe(&ErrorKind::BackendTls("AUTH TLS refused".into())),
            "backend tls: AUTH TLS refused"
        );
        assert_eq!(
            describe(&ErrorKind::LimitReached("max_sessions")),
            "limit reached: max_sessions"
        );
    }
}
