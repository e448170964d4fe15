//! The control session as a pure state machine: events in, steps out, time
//! passed in.
//!
//! [`Control`] makes every decision of one client session: which commands
//! reach the backend and which ftpgate answers itself, the order replies
//! reach the client in, when a transfer's final reply may go out and what
//! it may say, how data connections are set up (ftpgate's own `PASV`/`EPSV`
//! or `PORT`/`EPRT` toward the backend), TLS on either control connection,
//! per-user routing, login failures, timeouts and how the session ends.
//!
//! Its driver (`crate::session`) owns the sockets: it appends what it reads
//! to [`Control::client_buffer`] / [`Control::backend_buffer`], reports what
//! happened with the `on_*` methods and [`Event`]s, carries out the
//! [`Step`]s in order, and sleeps until [`Control::deadline`]. Time is a
//! [`Duration`] since the session started. Nothing here touches a socket or
//! a clock, logs or counts: [`Note`]s say what the driver should log and
//! count. `script` runs whole sessions against it with invariants, for the
//! simulation test and the `session_script` fuzz target.
//!
//! States are named after what they wait for (`Own`: `ExpectGreeting`,
//! `ExpectPassiveReply`, ...); a transfer's lifecycle is one
//! [`transfer::Phase`].

mod client_tls;
mod commands;
mod data;
mod order;
mod replies;
pub mod script;
#[cfg(test)]
mod tests;
pub mod transfer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

pub use order::{Awaiting, Completion, ReplyOrder};
pub use transfer::{Outcome, Phase, Transfer, TransferKind};

use super::line::LineFramer;
use super::reply::{Reply, ReplyAssembler};
use super::rewrite::{ClientPassive, PassiveCommand};
use super::upstream::Chat;
use crate::error::{reply_for, After, End, Error, ErrorKind};
use crate::net::{BackendAddr, ClientAddr, Networks, PublicAddr};

/// Longest backend reply line; a longer one (or one that never ends) ends
/// the session with 421.
pub const MAX_REPLY_LINE: usize = 16 * 1024;
/// Most bytes of one multi-line reply (STAT can list a directory); a longer
/// one ends the session with 421.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// ftpgate's own greeting, when the backend is picked after USER.
pub const GREETING: &str = "220 ftpgate ready: log in with USER.";

/// How ftpgate reaches the backend's data port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendData {
    /// ftpgate's own PASV/EPSV, then a connect.
    Passive,
    /// ftpgate's own listener and PORT/EPRT.
    Active,
}

/// TLS on the backend's control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTls {
    /// None.
    Off,
    /// `AUTH TLS` after the greeting.
    Explicit,
    /// From the first byte (the driver's connect did the handshake).
    Implicit,
}

/// A client certificate ftpgate verified (mutual TLS), as plain names: the
/// core never sees a certificate (`crate::client_cert` reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// What the logs and the transfer log show: the subject's CN, else the
    /// first email SAN, else the first DNS SAN.
    pub subject: String,
    /// The names USER may be with `tls_client_cert_user`: the CN and every
    /// email SAN, whole (never a local part alone).
    pub user_names: Vec<String>,
}

/// The configuration values the decisions need, so the core never reads
/// the configuration itself.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The client (the real one, from a PROXY header if any).
    pub client: ClientAddr,
    /// PORT/EPRT allowed (`active_mode`).
    pub active_mode: bool,
    /// A private PORT address is replaced by the control peer's (`active_nat_fix`).
    pub active_nat_fix: bool,
    /// AUTH TLS is offered on this listener, or the session is implicit TLS.
    pub tls_offered: bool,
    /// Login and transfers need TLS (implicit, or `tls = "required"`).
    pub tls_required: bool,
    /// The client control connection was TLS from its first byte.
    pub implicit_tls: bool,
    /// `max_login_failures`.
    pub max_login_failures: u32,
    /// `login_failures_before_delay`.
    pub login_failures_before_delay: u32,
    /// `login_failure_delay`.
    pub login_failure_delay: Duration,
    /// `trust_backend_pasv_address`.
    pub trust_backend_pasv_address: bool,
    /// `backend_data_networks`: where ftpgate may connect for backend data
    /// besides the backend's own address.
    pub backend_data_networks: Networks,
    /// `backend_data_mode`.
    pub backend_data: BackendData,
    /// `backend_tls_protect_data`: PROT P (else C) toward a TLS backend.
    pub backend_protect_data: bool,
    /// `max_line_length`.
    pub max_line_length: usize,
    /// `greeting_timeout`.
    pub greeting_timeout: Duration,
    /// `login_timeout`.
    pub login_timeout: Duration,
    /// `idle_timeout`.
    pub idle_timeout: Duration,
    /// `backend_reply_timeout`.
    pub backend_reply_timeout: Duration,
    /// `tls_client_cert_user`: USER must be one of the names of the
    /// client's certificate.
    pub cert_user: bool,
    /// The certificate an implicit-TLS client showed in the handshake that
    /// preceded the session (explicit TLS reports it with
    /// [`Event::ClientTlsDone`]).
    pub client_cert: Option<Box<ClientCert>>,
}

/// How the session begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The driver connected the listener's pool (or a transparent
    /// gateway's destination): the backend's greeting comes first.
    Connected {
        /// The backend.
        backend: BackendAddr,
        /// TLS toward it.
        tls: BackendTls,
    },
    /// Per-user routing or the explicit gateway: ftpgate greets, and USER
    /// picks the backend.
    Unrouted,
}

/// What the driver reports, besides bytes and closed connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// [`Step::Route`] connected a backend; `user` is the USER to send it.
    Routed {
        /// The backend.
        backend: BackendAddr,
        /// TLS toward it.
        tls: BackendTls,
        /// The name to send with USER (the gateway strips `@host`).
        user: String,
    },
    /// [`Step::Route`] refused the user (answered with `kind`'s reply, a
    /// failed login).
    RouteRefused(ErrorKind),
    /// [`Step::Route`] failed (no backend up or reachable): the session ends.
    RouteFailed(Error),
    /// [`Step::BackendTls`] finished.
    BackendTlsDone(Result<(), String>),
    /// [`Step::ClientTls`] finished; `Some`: the client showed a
    /// certificate ftpgate verified.
    ClientTlsDone(Result<Option<ClientCert>, String>),
    /// [`Step::ConnectBackendData`] connected.
    BackendDataConnected {
        /// The data setup.
        gen: u64,
    },
    /// [`Step::ListenBackendData`] listens on `addr`.
    BackendDataListening {
        /// The data setup.
        gen: u64,
        /// ftpgate's listener, named in PORT/EPRT.
        addr: SocketAddr,
    },
    /// The backend leg of a data setup failed (connect or listen).
    BackendDataFailed {
        /// The data setup.
        gen: u64,
        /// Why.
        error: Error,
    },
    /// [`Step::LeasePassive`] leased `port` and started the data task.
    Leased {
        /// The data setup.
        gen: u64,
        /// The address the client is told.
        public: PublicAddr,
        /// The leased port.
        port: u16,
    },
    /// [`Step::LeasePassive`] failed (no free port, no IPv4 to show).
    LeaseFailed {
        /// The data setup.
        gen: u64,
        /// Why.
        error: Error,
    },
    /// [`Step::ConnectClient`] connected to the client's PORT address.
    ClientDataConnected {
        /// The prepared data connection.
        gen: u64,
    },
    /// [`Step::ConnectClient`] failed.
    ClientDataFailed {
        /// The prepared data connection.
        gen: u64,
        /// Why.
        error: Error,
    },
    /// A data task reports.
    Data {
        /// Its generation.
        gen: u64,
        /// What happened.
        news: DataNews,
    },
    /// A graceful shutdown started: close once idle.
    Draining,
    /// Shutdown: close now.
    Shutdown,
}

/// What a data task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataNews {
    /// Both legs are up: the relay runs.
    Relaying,
    /// The backend-to-client direction ended.
    DownDone {
        /// Every byte reached the client.
        clean: bool,
    },
    /// Both directions ended.
    Finished {
        /// The relay's error (an I/O error or a stall), if it was cut.
        error: Option<String>,
        /// It was cut by a stall (`data_stall_timeout`).
        stalled: bool,
    },
    /// The task ended without relaying.
    Failed {
        /// The client never connected (`pending_data_timeout`).
        client_timeout: bool,
        /// Why, for the log.
        why: String,
    },
}

/// What the driver does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write to the client.
    Reply(Bytes),
    /// Write to the backend.
    Send(Bytes),
    /// Pick a backend for `user` (per-user routing, `USER name@host`) and
    /// connect it; report [`Event::Routed`], `RouteRefused` or `RouteFailed`.
    Route {
        /// The USER argument.
        user: String,
    },
    /// Leave the backend (QUIT, close), so that USER can pick another.
    Disconnect,
    /// TLS handshake on the backend control connection (after its 234).
    BackendTls,
    /// TLS handshake on the client control connection (its 234 was the
    /// last reply; plaintext sent after AUTH was discarded).
    ClientTls,
    /// Connect to the backend's data port for data setup `gen`.
    ConnectBackendData {
        /// The data setup.
        gen: u64,
        /// Where.
        addr: BackendAddr,
    },
    /// Open ftpgate's listener for the backend's data connection (active
    /// toward the backend).
    ListenBackendData {
        /// The data setup.
        gen: u64,
    },
    /// Lease a passive port for the client and start the data task with
    /// the backend leg of `gen`.
    LeasePassive {
        /// The data setup.
        gen: u64,
        /// PASV needs an IPv4 address to show.
        pasv: bool,
    },
    /// Start the data task of `gen`; its client leg comes from
    /// [`Step::ConnectClient`].
    PrepareActive {
        /// The data setup.
        gen: u64,
    },
    /// Connect to the client's PORT/EPRT address for prepared `gen`.
    ConnectClient {
        /// The prepared data connection.
        gen: u64,
        /// Where.
        target: SocketAddr,
    },
    /// Abandon data setup or transfer `gen`: drop its legs; a running relay
    /// resets both.
    Cancel {
        /// Its generation.
        gen: u64,
    },
    /// Log or count.
    Note(Note),
    /// The session is over: write `farewell` (with a time limit), close both
    /// control connections.
    Close {
        /// How it ended.
        end: End,
        /// Replies still owed, then ftpgate's 421 when there is one.
        farewell: Vec<Bytes>,
    },
}

/// Something for the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A backend reply passed straight to the client (reply latency).
    Relayed,
    /// 230.
    LoggedIn {
        /// The user.
        user: String,
    },
    /// 530 to USER/PASS, or a user routing refused.
    LoginFailed {
        /// The user.
        user: String,
        /// Failures so far in this session.
        failures: u32,
    },
    /// A configured limit or timeout ended something (`limit` is its key).
    Limit {
        /// The config key.
        limit: &'static str,
    },
    /// PORT/EPRT named another host or a privileged port.
    BounceRefused {
        /// The command line.
        line: String,
    },
    /// A private PORT address replaced by the control peer's.
    NatFixed {
        /// What the client named.
        named: SocketAddr,
        /// What is used.
        using: SocketAddr,
    },
    /// A backend reply not passed on (`reason` is the metric label).
    ReplyDropped {
        /// `unsolicited`, `passive_reply`, `transfer_without_data`,
        /// `preliminary_as_final`.
        reason: &'static str,
        /// The reply.
        text: String,
    },
    /// The backend refused or garbled ftpgate's own data-setup command.
    DataSetupRefused {
        /// The reply.
        text: String,
    },
    /// A prepared data connection expired unused.
    DataExpired,
    /// A data task failed.
    DataFailed {
        /// The client never connected.
        client_timeout: bool,
        /// Why.
        why: String,
    },
    /// A transfer's data did not arrive whole (`cause` is the metric label).
    TransferCut {
        /// `relay_error`, `stalled`, `aborted`, `session_end`.
        cause: &'static str,
        /// The error, if any.
        error: Option<String>,
    },
    /// A transfer ended: count it and write its transfer-log line.
    TransferDone {
        /// Its generation (the driver knows its byte counts).
        gen: u64,
        /// What moved.
        kind: TransferKind,
        /// The client chose PORT/EPRT.
        active: bool,
        /// TYPE A.
        ascii: bool,
        /// The file.
        arg: String,
        /// How it ended.
        outcome: Outcome,
    },
    /// Plaintext after AUTH TLS, discarded.
    PlaintextDiscarded {
        /// How many bytes.
        bytes: usize,
    },
    /// Client bytes after QUIT, discarded (noted once per session).
    AfterQuitDiscarded {
        /// How many bytes (the first piece).
        bytes: usize,
    },
    /// The backend's 227 named a data address ftpgate may not connect to.
    BackendDataRefused {
        /// What the backend named.
        addr: SocketAddr,
    },
    /// A backend reply over [`MAX_REPLY_LINE`] or [`MAX_REPLY_BYTES`].
    ReplyTooLong {
        /// `line` or `reply`.
        what: &'static str,
        /// The cap in bytes.
        limit: usize,
    },
    /// USER or PASS before AUTH TLS where TLS is required.
    LoginBeforeTls,
    /// USER is not a name of the client's certificate
    /// (`tls_client_cert_user`); answered 530, a failed login.
    CertUserMismatch {
        /// The USER argument.
        user: String,
        /// The certificate's subject, if the client showed one.
        subject: Option<String>,
    },
    /// A command that would weaken TLS protection, refused (`PROT C` where
    /// TLS is required, `REIN` inside TLS).
    DowngradeRefused {
        /// The command line.
        line: String,
    },
    /// A command line over `max_line_length`.
    LineTooLong,
    /// The backend did not answer earlier commands within
    /// `backend_reply_timeout` while a data setup waited behind them.
    BackendSilent {
        /// Replies still awaited.
        awaited: usize,
    },
    /// The backend closed during a transfer; its data goes on first.
    BackendGoneDuringTransfer,
    /// A TLS handshake failed (`side`: `client` or `backend`).
    TlsFailed {
        /// Which control connection.
        side: &'static str,
        /// Why.
        why: String,
    },
    /// The backend conversation failed (greeting, AUTH TLS, PBSZ, PROT).
    UpstreamFailed {
        /// Why.
        why: String,
    },
    /// Per-user routing picked a backend for `user`.
    Routed {
        /// The user.
        user: String,
    },
    /// Closing an idle session during a graceful shutdown.
    DrainClosed,
}

/// What the client asked for with PASV/EPSV/PORT/EPRT, already validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLeg {
    /// PASV or EPSV.
    Passive(ClientPassive),
    /// PORT or EPRT to `target` (`eprt`: the reply names EPRT).
    Active {
        /// The checked address.
        target: SocketAddr,
        /// EPRT (else PORT).
        eprt: bool,
    },
}

/// A command that must wait until every earlier reply has gone out,
/// because ftpgate then works on the connections itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deferred {
    /// PASV/EPSV/PORT/EPRT: ftpgate talks to the backend.
    Data(ClientLeg),
    /// AUTH TLS: 234, then the handshake on the client connection.
    Auth,
}

/// Which backend reply (or driver report) ftpgate's own exchange waits for.
// States are named after what they wait for (rustls's `Expect*`).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Eq)]
enum DataWait {
    /// The reply to ftpgate's PASV/EPSV (`retried`: the other one was refused).
    ExpectPassiveReply { cmd: PassiveCommand, retried: bool },
    /// The connect to the backend's data port.
    ExpectBackendConnect,
    /// ftpgate's listener for an active backend.
    ExpectBackendListen,
    /// The reply to ftpgate's PORT/EPRT.
    ExpectPortReply,
    /// The passive lease and the data task; `connect`: the backend's data
    /// port, connected once the client has its 227/229 (the client's next
    /// command waits for that connect, so it cannot race it).
    ExpectLease { connect: Option<BackendAddr> },
}

/// An exchange ftpgate runs itself; client commands wait meanwhile.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone)]
enum Own {
    /// The backend conversation before commands flow (greeting, TLS);
    /// `show`: the client sees the greeting (it had none from ftpgate).
    ExpectGreeting {
        chat: Box<Chat>,
        show: bool,
        since: Duration,
    },
    /// The backend TLS handshake of the conversation.
    ExpectBackendTls {
        chat: Box<Chat>,
        show: bool,
        since: Duration,
    },
    /// Per-user routing of `user`.
    ExpectRoute { user: String },
    /// Data setup `gen` for the client's `leg`.
    ExpectData {
        gen: u64,
        leg: ClientLeg,
        wait: DataWait,
        since: Duration,
    },
    /// ftpgate's connect to an active client before the transfer command.
    ExpectClientConnect {
        gen: u64,
        line: Bytes,
        arg: String,
        kind: TransferKind,
    },
    /// The client's TLS handshake after 234.
    ExpectClientTls,
}

/// A data connection prepared by PASV/EPSV/PORT/EPRT, not yet used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prepared {
    gen: u64,
    /// PORT/EPRT: ftpgate connects to `target` when the transfer comes.
    active: Option<SocketAddr>,
    /// Its relay already runs (a passive client connected early).
    relaying: bool,
}

/// One client session's control state. See the module documentation.
#[derive(Debug)]
pub struct Control {
    policy: Policy,
    /// Client command framing (ftpgate reads the client into its buffer).
    commands: LineFramer,
    /// Backend reply assembly.
    replies: ReplyAssembler,
    /// Replies awaited from the backend, ftpgate's own in their turn, the held one.
    order: ReplyOrder,
    steps: VecDeque<Step>,
    own: Option<Box<Own>>,
    /// A validated command waiting for `order` to be quiet, and since when.
    deferred: Option<Box<(Deferred, Duration)>>,
    prepared: Option<Prepared>,
    /// The last prepared data connection expired unused.
    prepared_expired: bool,
    transfer: Option<Transfer>,
    next_gen: u64,
    /// Connected to a backend (else per-user routing waits for USER).
    backend: Option<BackendAddr>,
    /// The passive command the backend accepts; switched once if refused.
    passive_cmd: PassiveCommand,
    /// When the backend control connection was opened (greeting timeout).
    backend_started: Duration,
    /// Per-user routing: the user the backend was picked for.
    routed_user: Option<String>,
    /// Per-user routing: the name sent for it (the same but for the
    /// gateway's `@host` or a user lookup's `"user"`).
    routed_as: Option<String>,
    /// Per-user routing: the USER to send once the backend's greeting (and
    /// TLS) are done.
    replay_user: Option<String>,
    /// The client control connection is inside TLS.
    client_tls: bool,
    /// The certificate the client showed in its TLS handshake (mutual TLS).
    client_cert: Option<Box<ClientCert>>,
    /// PROT P in effect toward the client.
    prot_private: bool,
    /// EPSV ALL was sent: only EPSV may set up data connections (RFC 2428 4).
    epsv_all: bool,
    /// TYPE A in effect (transfer log).
    ascii: bool,
    user: Option<String>,
    logged_in: bool,
    /// The greeting (the backend's or ftpgate's) went out.
    greeted: bool,
    login_failures: u32,
    /// The client sent QUIT: its closing is expected.
    quit_sent: bool,
    /// QUIT was answered: the backend closing is expected, no more commands.
    quitting: bool,
    /// Client bytes after QUIT were discarded and noted.
    after_quit_noted: bool,
    /// The backend said 421: it is closing, the client knows.
    backend_said_421: bool,
    /// The backend's control connection ended during a transfer: how the
    /// session ends once the transfer's data has settled.
    backend_gone: Option<Box<End>>,
    /// A graceful shutdown started.
    draining: bool,
    /// After a failed login: output and input wait until then.
    paused_until: Option<Duration>,
    /// The last command, or the end of the last transfer: the idle clock.
    last_command: Duration,
    closed: bool,
}

impl Control {
    /// A session starting at time zero as `start` says.
    pub fn new(policy: Policy, start: Start) -> Control {
        let mut c = Control {
            commands: LineFramer::new(policy.max_line_length),
            replies: ReplyAssembler::bounded(MAX_REPLY_LINE, MAX_REPLY_BYTES),
            order: ReplyOrder::new(),
            steps: VecDeque::new(),
            own: None,
            deferred: None,
            prepared: None,
            prepared_expired: false,
            transfer: None,
            next_gen: 1,
            backend: None,
            passive_cmd: PassiveCommand::Pasv,
            backend_started: Duration::ZERO,
            routed_user: None,
            routed_as: None,
            replay_user: None,
            client_tls: policy.implicit_tls,
            client_cert: policy.client_cert.clone().filter(|_| policy.implicit_tls),
            // An implicit-TLS session starts protected: its clients take
            // data protection for granted (and clear data is refused there).
            prot_private: policy.implicit_tls,
            epsv_all: false,
            ascii: false,
            user: None,
            logged_in: false,
            greeted: false,
            login_failures: 0,
            quit_sent: false,
            quitting: false,
            after_quit_noted: false,
            backend_said_421: false,
            backend_gone: None,
            draining: false,
            paused_until: None,
            last_command: Duration::ZERO,
            closed: false,
            policy,
        };
        match start {
            Start::Connected { backend, tls } => c.install(backend, tls, Duration::ZERO, true),
            Start::Unrouted => {
                c.greeted = true;
                c.local(Reply::from_line(GREETING.to_owned()));
            }
        }
        c.flush();
        c
    }

    // === what the driver asks ===

    /// The buffer client bytes are read into; then call [`Control::on_client_data`].
    pub fn client_buffer(&mut self) -> &mut BytesMut {
        self.commands.buffer_mut()
    }

    /// Both read buffers at once (client, backend), for a driver that
    /// waits on both connections.
    pub fn buffers(&mut self) -> (&mut BytesMut, &mut BytesMut) {
        (self.commands.buffer_mut(), self.replies.buffer_mut())
    }

    /// Client bytes held, framed or not.
    pub fn client_buffered(&self) -> usize {
        self.commands.buffered()
    }

    /// The buffer backend bytes are read into; then call [`Control::on_backend_data`].
    pub fn backend_buffer(&mut self) -> &mut BytesMut {
        self.replies.buffer_mut()
    }

    /// Gives back the memory of empty queues before the driver waits: an
    /// idle session holds no buffer (its read buffers are released as they
    /// empty, see [`crate::proto::line::LineFramer::release_if_empty`]).
    ///
    /// Only once nothing is under way (no reply awaited or held, no
    /// exchange of ftpgate's own, no transfer): in between, the next turn
    /// fills the queues again, and made anew on each of a session's ~20
    /// turns they cost ~25 allocations per session.
    pub fn release_idle(&mut self) {
        let transferring = self.transfer.as_ref().is_some_and(|t| !t.over());
        if !self.order.is_quiet() || self.own.is_some() || transferring {
            return;
        }
        if self.steps.is_empty() && self.steps.capacity() > 0 {
            self.steps = VecDeque::new();
        }
        self.order.release_if_empty();
    }

    /// Whether to read the client now (commands wait while ftpgate works on
    /// the connections itself, after a failed login's delay, and while
    /// QUIT's answer is awaited).
    pub fn wants_client(&self) -> bool {
        !self.closed
            && self.own.is_none()
            && self.deferred.is_none()
            && self.backend_gone.is_none()
            && self.paused_until.is_none()
            && (!self.quit_sent || self.quitting)
    }

    /// Whether to read the backend now.
    pub fn wants_backend(&self) -> bool {
        !self.closed
            && self.backend.is_some()
            && self.backend_gone.is_none()
            && !matches!(
                self.own.as_deref(),
                Some(Own::ExpectBackendTls { .. } | Own::ExpectRoute { .. })
            )
    }

    /// The steps to carry out, in order.
    pub fn next_step(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    /// The next step, only if it is a reply to the client: replies due
    /// one after another go out in one write (a transfer's 150 and 226
    /// often arrive together).
    pub fn next_reply(&mut self) -> Option<Bytes> {
        match self.steps.front() {
            Some(Step::Reply(_)) => match self.steps.pop_front() {
                Some(Step::Reply(b)) => Some(b),
                _ => None,
            },
            _ => None,
        }
    }

    /// The client's data connections are protected (PROT P inside TLS).
    pub fn protects_data(&self) -> bool {
        self.client_tls && self.prot_private
    }

    /// The session is over (a [`Step::Close`] was given).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The generation of the transfer whose transfer-log line is still due.
    pub fn transfer_gen(&self) -> Option<u64> {
        self.transfer
            .as_ref()
            .filter(|t| !t.recorded)
            .map(|t| t.gen)
    }

    /// The user name sent last (logs).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The certificate the client showed in its TLS handshake (logs, the
    /// transfer log).
    pub fn client_cert(&self) -> Option<&ClientCert> {
        self.client_cert.as_deref()
    }

    /// Nothing in flight: no reply owed, no data connection prepared or running.
    pub fn is_idle(&self) -> bool {
        self.order.is_quiet()
            && self.order.held_gen().is_none()
            && self.deferred.is_none()
            && self.own.is_none()
            && self.prepared.is_none()
            && self.transfer.as_ref().is_none_or(Transfer::over)
    }

    /// The features ftpgate offers (RFC 2389): what the client gets through
    /// it, whatever the backend offers ftpgate. TLS is ftpgate's own on
    /// each side. The one list for ftpgate's own FEAT and for rewriting the
    /// backend's.
    pub fn features(&self) -> Vec<&'static str> {
        let mut f = vec!["EPSV"];
        if self.policy.active_mode {
            f.push("EPRT");
        }
        if self.policy.tls_offered {
            f.extend(["AUTH TLS", "PBSZ", "PROT"]);
        }
        f
    }

    // === inputs ===

    /// Client bytes were appended to [`Control::client_buffer`].
    pub fn on_client_data(&mut self, now: Duration) {
        self.advance(now);
        self.commands.release_if_empty();
    }

    /// The client's control connection ended (`error`: a read error).
    pub fn on_client_closed(&mut self, error: Option<String>) {
        let end = match error {
            Some(e) => End::ClientIo(e),
            None if self.quit_sent => End::Quit,
            None => End::ClientClosed,
        };
        self.close(end);
    }

    /// Backend bytes were appended to [`Control::backend_buffer`].
    pub fn on_backend_data(&mut self, now: Duration) {
        while !self.closed && self.backend_gone.is_none() {
            // After 234, the handshake runs before anything else is read.
            if matches!(self.own.as_deref(), Some(Own::ExpectBackendTls { .. })) {
                break;
            }
            let Some(r) = self.replies.next_reply() else {
                break;
            };
            match r {
                Ok(reply) => self.on_reply(reply, now),
                Err(super::reply::ReplyError::Malformed(line)) => self.note(Note::ReplyDropped {
                    reason: "malformed",
                    text: String::from_utf8_lossy(&line).into_owned(),
                }),
                Err(e) => self.reply_too_long(&e),
            }
        }
        self.advance(now);
        self.replies.release_if_empty();
    }

    /// The backend's control connection ended.
    pub fn on_backend_closed(&mut self, now: Duration) {
        if self.closed {
            return;
        }
        let end = if self.quit_sent {
            End::Quit
        } else if self.backend_said_421 {
            End::BackendClosed
        } else if matches!(self.own.as_deref(), Some(Own::ExpectGreeting { chat, .. }) if chat.in_tls())
        {
            // Inside TLS before the conversation is done: in TLS 1.3 a
            // server refuses a client certificate (or its absence) only
            // after ftpgate's handshake has ended.
            End::Error(Error::backend(ErrorKind::BackendTls(
                "the server closed the connection during the TLS setup (a refused client certificate?)"
                    .into(),
            )))
        } else {
            End::Error(Error::backend(ErrorKind::BackendClosed))
        };
        if self.own.is_some() || self.quit_sent {
            return self.close(end);
        }
        match self.transfer.as_ref().filter(|t| !t.settled()) {
            // An active backend will not connect now. A passive backend's
            // data connection is up already, and its bytes may be waiting
            // for the data task to report that the client's leg is up (a
            // server can write a small file into socket buffers and close
            // before then): wait for the task, whose every wait is bounded
            // (pending_data_timeout, handshakes, data_stall_timeout).
            Some(t)
                if t.phase == Phase::Waiting && self.policy.backend_data == BackendData::Active =>
            {
                self.cut_transfer("backend_closed");
                self.close(end);
            }
            // Bytes the backend sent must reach the client first.
            Some(_) => {
                self.note(Note::BackendGoneDuringTransfer);
                self.backend_gone = Some(Box::new(end));
                self.advance(now);
            }
            None => self.close(end),
        }
    }

    /// Time passed: act on whatever deadline is due.
    pub fn on_time(&mut self, now: Duration) {
        if self.closed {
            return;
        }
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        self.on_deadline(now);
        self.advance(now);
    }

    /// Something the driver did finished, or a data task reported.
    pub fn on_event(&mut self, ev: Event, now: Duration) {
        if self.closed {
            return;
        }
        match ev {
            Event::Draining => self.draining = true,
            Event::Shutdown => return self.close(End::Error(Error::internal(ErrorKind::Shutdown))),
            Event::Routed { backend, tls, user } => self.on_routed(backend, tls, user, now),
            Event::RouteRefused(kind) => {
                self.own = None;
                self.local(reply_for(&Error::client(kind)).0);
                self.login_failed(now);
            }
            Event::RouteFailed(e) => {
                self.own = None;
                return self.close(End::Error(e));
            }
            Event::BackendTlsDone(r) => self.on_backend_tls(r, now),
            Event::ClientTlsDone(r) => self.on_client_tls(r),
            Event::Data { gen, news } => {
                // The idle clock restarts when a transfer ends, as a
                // server's does after its 226: a transfer longer than
                // idle_timeout must not be followed by an instant 421.
                if news != DataNews::Relaying {
                    self.last_command = self.last_command.max(now);
                }
                self.on_data(gen, news)
            }
            other => self.on_data_setup_event(other, now),
        }
        self.advance(now);
    }

    /// When [`Control::on_time`] has something to do; `None`: never.
    pub fn deadline(&self) -> Option<Duration> {
        if self.closed {
            return None;
        }
        if let Some(t) = self.paused_until {
            return Some(t);
        }
        match self.own.as_deref() {
            Some(Own::ExpectGreeting { since, .. } | Own::ExpectBackendTls { since, .. }) => {
                return Some(*since + self.policy.greeting_timeout)
            }
            Some(Own::ExpectData {
                wait: DataWait::ExpectPassiveReply { .. } | DataWait::ExpectPortReply,
                since,
                ..
            }) => return Some(*since + self.policy.backend_reply_timeout),
            // The driver's own timeouts end these.
            Some(_) => return None,
            None => {}
        }
        if self.backend_gone.is_some() {
            // The data task's own limits end the transfer.
            return None;
        }
        if !self.greeted {
            return Some(self.backend_started + self.policy.greeting_timeout);
        }
        let busy =
            self.order.held_gen().is_some() || self.transfer.as_ref().is_some_and(|t| !t.over());
        if let Some(&(_, since)) = self.deferred.as_deref() {
            // A transfer still running legitimately holds replies back.
            return (!busy).then_some(since + self.policy.backend_reply_timeout);
        }
        if busy {
            // A long transfer keeps the session alive.
            return None;
        }
        let idle = self.last_command + self.policy.idle_timeout;
        Some(if self.logged_in {
            idle
        } else {
            idle.min(self.policy.login_timeout)
        })
    }

    // === shared machinery ===

    /// Takes a fresh backend control connection.
    fn install(&mut self, backend: BackendAddr, tls: BackendTls, now: Duration, show: bool) {
        self.passive_cmd = if backend.0.is_ipv6() {
            PassiveCommand::Epsv
        } else {
            PassiveCommand::Pasv
        };
        self.backend = Some(backend);
        self.backend_started = now;
        self.replies = ReplyAssembler::bounded(MAX_REPLY_LINE, MAX_REPLY_BYTES);
        let plan = super::upstream::Plan {
            starttls: tls == BackendTls::Explicit,
            protect: (tls != BackendTls::Off).then_some(self.policy.backend_protect_data),
            login: None,
        };
        self.own = Some(Box::new(Own::ExpectGreeting {
            chat: Box::new(Chat::new(plan, tls == BackendTls::Implicit)),
            show,
            since: now,
        }));
    }

    /// Moves ready replies to the steps (not while a failed login's delay runs).
    fn flush(&mut self) {
        if self.paused_until.is_some() {
            return;
        }
        for b in self.order.take_ready() {
            self.steps.push_back(Step::Reply(b));
        }
    }

    fn note(&mut self, n: Note) {
        self.steps.push_back(Step::Note(n));
    }

    /// One of ftpgate's own replies, in its turn.
    fn local(&mut self, reply: Reply) {
        self.order.local(&reply);
    }

    /// Answers an error per `reply_for`; ends the session if it says so.
    fn local_error(&mut self, e: Error) {
        let (reply, after) = reply_for(&e);
        if after == After::Close {
            return self.close(End::Error(e));
        }
        self.local(reply);
    }

    /// Sends ftpgate's own line to the backend (no client reply awaits it).
    fn send_own(&mut self, line: Bytes) {
        self.steps.push_back(Step::Send(line));
    }

    /// Runs whatever can run now: buffered commands, a deferred command
    /// whose turn has come, the drain; then flushes ready replies.
    fn advance(&mut self, now: Duration) {
        loop {
            if self.closed {
                return;
            }
            if self.backend_gone.is_some() {
                if self.transfer.as_ref().is_none_or(Transfer::settled) {
                    let end = *self.backend_gone.take().expect("checked above");
                    return self.close(end);
                }
                break;
            }
            if self.paused_until.is_some() {
                break;
            }
            if self.own.is_none() && self.deferred.is_none() && !self.quit_sent {
                if let Some(frame) = self.commands.next_frame() {
                    self.on_frame(frame, now);
                    continue;
                }
            }
            if self.quitting {
                self.discard_after_quit();
            }
            if self.draining && self.is_idle() {
                self.note(Note::DrainClosed);
                return self.close(End::Error(Error::internal(ErrorKind::Shutdown)));
            }
            if self.own.is_none() && self.order.is_quiet() {
                if let Some(&(what, _)) = self.deferred.take().as_deref() {
                    match what {
                        Deferred::Data(leg) => self.start_data(leg, now),
                        Deferred::Auth => self.start_client_tls(),
                    }
                    continue;
                }
            }
            break;
        }
        self.flush();
    }

    /// What a client sends after QUIT was answered is never acted on (a
    /// pipelined `QUIT`, `DELE x` must not delete): discarded as it
    /// arrives, so the buffer stays empty until the connections close.
    fn discard_after_quit(&mut self) {
        let bytes = self.commands.buffered();
        if bytes == 0 {
            return;
        }
        self.commands.buffer_mut().clear();
        if !std::mem::replace(&mut self.after_quit_noted, true) {
            self.note(Note::AfterQuitDiscarded { bytes });
        }
    }

    /// A backend reply over the caps: the backend is broken or hostile, and
    /// what follows cannot be trusted to answer the client's commands.
    fn reply_too_long(&mut self, e: &super::reply::ReplyError) {
        let (what, limit) = match e {
            super::reply::ReplyError::LineTooLong => ("line", MAX_REPLY_LINE),
            _ => ("reply", MAX_REPLY_BYTES),
        };
        self.note(Note::ReplyTooLong { what, limit });
        self.close(End::Error(Error::backend(ErrorKind::ReplyTooLong)));
    }

    /// Ends the session: cuts what runs, sends what is owed (a held reply
    /// only as its data allows), then ftpgate's 421 if the end is an error.
    fn close(&mut self, end: End) {
        if self.closed {
            return;
        }
        // What is ready goes first, as it would have.
        self.flush();
        self.cut_transfer("session_end");
        if let Some(t) = &self.transfer {
            let gen = t.gen;
            self.steps.push_back(Step::Cancel { gen });
        }
        if let Some(p) = self.prepared.take() {
            self.steps.push_back(Step::Cancel { gen: p.gen });
        }
        if let Some(Own::ExpectData { gen, .. } | Own::ExpectClientConnect { gen, .. }) =
            self.own.as_deref()
        {
            let gen = *gen;
            self.steps.push_back(Step::Cancel { gen });
        }
        self.release_held();
        self.record_transfer();
        self.paused_until = None;
        self.flush();
        let mut farewell = match &end {
            End::Error(_) | End::BackendClosed => self.order.take_owed(),
            _ => Vec::new(),
        };
        if let End::Error(e) = &end {
            farewell.push(reply_for(e).0.to_bytes());
        }
        self.closed = true;
        self.steps.push_back(Step::Close { end, farewell });
    }
}
