//! Whole sessions run against [`Control`] with a simulated client, backend,
//! data tasks and clock, checking invariants after every step. The seeded
//! simulation test (10,000 sessions, each replayable from its seed) and the
//! `session_script` fuzz target (the fuzzer's bytes as the choices) both
//! run [`run`]. No I/O, no clock, no randomness of its own: every choice
//! comes from a [`Source`].
//!
//! The invariants:
//! 1. a transfer's final reply never reaches the client before its data
//!    task reported its end (or the core cut it), and is a 2xx only for
//!    data the task reported whole;
//! 2. nothing sent toward the backend in PORT/EPRT names an address other
//!    than ftpgate's own listener;
//! 3. nothing the client sent after AUTH TLS, before the handshake, is
//!    forwarded or answered after it;
//! 4. every passive port leased is released by the end of the session
//!    (its task ended or was cancelled);
//! 5. replies reach the client in the order of the commands they answer,
//!    and none that nobody asked for (but a 421) reaches it;
//! 6. no step after the close, and no deadline that is already due after
//!    time was reported (a driver would spin);
//! 7. nothing the client sends reaches the backend after its QUIT, nor
//!    while ftpgate's own data setup (PASV/EPSV/PORT/EPRT toward the
//!    backend, the connect, the lease) is under way: a pipelined
//!    `PASV`, `RETR` reaches the backend as `PASV` ... `RETR` only once the
//!    data connection is prepared;
//! 8. ftpgate connects for backend data only to the backend's own address
//!    or one in `backend_data_networks`, whatever a 227 names, and a
//!    backend reply line over [`super::MAX_REPLY_LINE`] ends the session
//!    with 421 at once.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;

mod backend;
mod check;
mod client;
mod source;

pub use source::{FromBytes, Seeded, Source};

use super::super::reply::ReplyAssembler;
use super::{BackendData, BackendTls, Control, DataNews, Event, Policy, Start, Step, TransferKind};
use crate::error::{Error, ErrorKind};
use crate::net::{BackendAddr, ClientAddr, Networks, PublicAddr};

/// An invariant that did not hold, with the session's trace.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which invariant, and how.
    pub what: String,
    /// The last events and steps, oldest first.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.what)?;
        for l in &self.trace {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// What one session did, for the simulation's coverage figures.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Replies the client read.
    pub replies: usize,
    /// Transfers whose command reached the backend.
    pub transfers: usize,
    /// 2xx final replies to transfers.
    pub complete: usize,
    /// Sessions that ended with a Close step.
    pub closed: bool,
    /// How it ended.
    pub end: String,
    /// Actions taken.
    pub actions: usize,
}

/// ftpgate's listener address for active backends in the simulation.
const GATE_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
/// The address a misbehaving backend names in a 227 nobody asked for.
const THIRD_PARTY: &str = "6,6,6,6";
/// The backend at the start, and the one per-user routing connects.
const BACKEND_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const ROUTED_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 6);

/// A client command awaiting its final reply.
#[derive(Debug, Clone)]
struct Cmd {
    idx: usize,
    /// The line as forwarded (CRLF excluded).
    line: Vec<u8>,
    forwarded: bool,
    /// The backend answered it (its final reply, or its 150).
    backend_answered: bool,
    /// Discarded with the plaintext after AUTH: no reply will come.
    discarded: bool,
    /// A transfer command forwarded with this data generation.
    transfer: Option<(Option<u64>, TransferKind)>,
}

/// What the simulation knows of one data generation.
#[derive(Debug, Clone, Default)]
struct Gen {
    /// Its data task was started (a lease, or an active client leg).
    task: bool,
    /// Active client: the task waits for ftpgate's connect to the client.
    active: bool,
    leased: bool,
    /// Its data task ended (Failed or Finished fed) or the core cancelled it.
    released: bool,
    cancelled: bool,
    /// Cancelled before its data settled (a download reported whole, or
    /// both directions ended): the data did not arrive whole.
    cut: bool,
    down_clean: Option<bool>,
    finished: Option<bool>,
    failed: bool,
    relaying: bool,
    client_connected: bool,
}

/// The simulated backend: answers lines in order, one transfer at a time.
#[derive(Debug, Default)]
struct Backend {
    connected: bool,
    inbox: VecDeque<Vec<u8>>,
    outbox: VecDeque<Bytes>,
    /// A transfer command being served: its index.
    busy: Option<usize>,
    closing: bool,
}

struct Sim<'s, S: Source> {
    src: &'s mut S,
    ctl: Control,
    now: Duration,
    backend: Backend,
    fifo: VecDeque<Cmd>,
    next_cmd: usize,
    gens: HashMap<u64, Gen>,
    /// The generation the next transfer command uses.
    prepared: Option<u64>,
    listen_addrs: Vec<SocketAddr>,
    client_replies: ReplyAssembler,
    trace: VecDeque<String>,
    closed: bool,
    stats: Stats,
    /// Client command indices sent after an AUTH not yet handshaken.
    after_auth: Vec<usize>,
    auth_pending: bool,
    greeting_seen: bool,
    /// The backend connected now (its data address is always allowed).
    backend_ip: IpAddr,
    /// `backend_data_networks` of this session.
    networks: Networks,
    /// The client's QUIT reached the backend.
    quit_forwarded: bool,
    /// ftpgate's own data setup is under way (its PASV/EPSV/PORT/EPRT or
    /// listener, until the lease, the prepared active leg or a cancel).
    setup_open: bool,
}

/// A client certificate, or none: its names are every other USER the
/// simulated client sends (`u0`, `u2`, ...).
fn sim_cert<S: Source>(src: &mut S) -> Option<super::ClientCert> {
    (src.pick(3) != 0).then(|| super::ClientCert {
        subject: "sim".into(),
        user_names: (0..64).step_by(2).map(|k| format!("u{k}")).collect(),
    })
}

fn violation(what: String, trace: &VecDeque<String>) -> Violation {
    Violation {
        what,
        trace: trace.iter().cloned().collect(),
    }
}

/// Runs one session from `src`'s choices, at most `max_actions` of them.
pub fn run<S: Source>(src: &mut S, max_actions: usize) -> Result<Stats, Violation> {
    let policy = Policy {
        client: ClientAddr::new(SocketAddr::from(([192, 0, 2, 7], 40000))),
        active_mode: src.pick(4) != 0,
        active_nat_fix: src.pick(2) == 0,
        tls_offered: src.pick(3) != 0,
        tls_required: false,
        implicit_tls: false,
        max_login_failures: 2 + src.pick(5),
        login_failures_before_delay: src.pick(3),
        login_failure_delay: Duration::from_millis(u64::from(src.pick(3)) * 500),
        trust_backend_pasv_address: src.pick(2) == 0,
        backend_data_networks: if src.pick(3) == 0 {
            Networks(vec!["10.0.0.0/8".parse().expect("network")])
        } else {
            Networks::default()
        },
        backend_data: if src.pick(3) == 0 {
            BackendData::Active
        } else {
            BackendData::Passive
        },
        backend_protect_data: src.pick(2) == 0,
        max_line_length: 64,
        greeting_timeout: Duration::from_secs(10),
        login_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(900),
        backend_reply_timeout: Duration::from_secs(10),
        cert_user: src.pick(4) == 0,
        client_cert: None,
    };
    let mut policy = policy;
    if policy.tls_offered && src.pick(3) == 0 {
        policy.tls_required = true;
        policy.implicit_tls = src.pick(2) == 0;
        policy.client_cert = sim_cert(src).map(Box::new);
    }
    let unrouted = src.pick(3) == 0;
    let start = if unrouted {
        Start::Unrouted
    } else {
        Start::Connected {
            backend: BackendAddr(SocketAddr::from((BACKEND_IP, 21))),
            tls: pick_tls(src),
        }
    };
    let networks = policy.backend_data_networks.clone();
    let mut sim = Sim {
        ctl: Control::new(policy, start),
        src,
        now: Duration::ZERO,
        backend: Backend {
            connected: !unrouted,
            ..Backend::default()
        },
        fifo: VecDeque::new(),
        next_cmd: 0,
        gens: HashMap::new(),
        prepared: None,
        listen_addrs: Vec::new(),
        client_replies: ReplyAssembler::new(4096, 1 << 20),
        trace: VecDeque::new(),
        closed: false,
        stats: Stats::default(),
        after_auth: Vec::new(),
        auth_pending: false,
        greeting_seen: false,
        backend_ip: IpAddr::V4(BACKEND_IP),
        networks,
        quit_forwarded: false,
        setup_open: false,
    };
    if !unrouted {
        sim.greet();
    }
    sim.drain()?;
    for _ in 0..max_actions {
        if sim.closed || sim.src.exhausted() {
            break;
        }
        sim.act()?;
        sim.stats.actions += 1;
        sim.drain()?;
    }
    // Wind down: the client leaves; every task ends.
    if !sim.closed {
        sim.log("client closes".into());
        sim.ctl.on_client_closed(None);
        sim.drain()?;
    }
    sim.final_checks()?;
    sim.stats.closed = sim.closed;
    Ok(sim.stats)
}

fn pick_tls<S: Source>(src: &mut S) -> BackendTls {
    match src.pick(4) {
        0 => BackendTls::Explicit,
        1 => BackendTls::Implicit,
        _ => BackendTls::Off,
    }
}

impl<S: Source> Sim<'_, S> {
    fn log(&mut self, s: String) {
        if self.trace.len() >= 60 {
            self.trace.pop_front();
        }
        self.trace.push_back(s);
    }

    fn fail(&self, what: String) -> Violation {
        violation(what, &self.trace)
    }

    fn greet(&mut self) {
        let g = if self.src.pick(40) == 0 {
            "421 Too many users."
        } else {
            "220 sim ready."
        };
        self.backend
            .outbox
            .push_back(Bytes::from(format!("{g}\r\n")));
    }

    /// One random happening.
    fn act(&mut self) -> Result<(), Violation> {
        match self.src.pick(20) {
            0..=6 => self.client_sends(),
            7..=11 => self.backend_delivers(),
            12..=14 => self.data_happens(),
            15 => self.backend_finishes_transfer(),
            16 => {
                let dt = Duration::from_millis(u64::from(self.src.pick(4)) * 400)
                    + Duration::from_secs(u64::from(self.src.pick(8) == 0) * 30);
                self.now += dt;
                self.log(format!("time +{dt:?}"));
                self.ctl.on_time(self.now);
                Ok(())
            }
            17 => {
                // Now and then, jump to the deadline.
                if self.src.pick(8) != 0 {
                    return self.backend_delivers();
                }
                if let Some(d) = self.ctl.deadline() {
                    self.now = self.now.max(d);
                    self.log(format!("time -> deadline {d:?}"));
                    self.ctl.on_time(self.now);
                }
                Ok(())
            }
            18 => {
                let what = self.src.pick(48);
                match what {
                    0 if self.backend.connected => {
                        self.log("backend closes".into());
                        self.backend.connected = false;
                        self.ctl.on_backend_closed(self.now);
                    }
                    1 => {
                        self.log("client closes".into());
                        self.ctl.on_client_closed(None);
                    }
                    2 => {
                        self.log("draining".into());
                        self.ctl.on_event(Event::Draining, self.now);
                    }
                    3 => {
                        self.log("shutdown".into());
                        self.ctl.on_event(Event::Shutdown, self.now);
                    }
                    // A reply nobody asked for, when nothing is outstanding
                    // (while a command is, no proxy could tell it from the
                    // answer; the 451 for a stray 227 covers that case).
                    // A reply line that never ends: the session ends at once.
                    8 if self.backend.connected
                        && self.ctl.wants_backend()
                        && self.src.pick(4) == 0 =>
                    {
                        self.log("backend: an endless reply line".into());
                        let mut line = b"215 ".to_vec();
                        line.resize(super::MAX_REPLY_LINE + 100, b'x');
                        self.ctl.backend_buffer().extend_from_slice(&line);
                        self.ctl.on_backend_data(self.now);
                        self.drain()?;
                        if !self.closed || !self.stats.end.contains("reply too long") {
                            return Err(self.fail(format!(
                                "invariant 8: an endless backend reply line did not end the session (end: {:?})",
                                self.stats.end
                            )));
                        }
                    }
                    4..=7
                        if self.backend.connected
                            && self.ctl.wants_backend()
                            && self.backend_quiet() =>
                    {
                        let r = if what == 4 {
                            format!("227 Entering Passive Mode ({THIRD_PARTY},1,1).")
                        } else {
                            "200 unasked".to_owned()
                        };
                        self.log(format!("backend unasked: {r}"));
                        self.ctl
                            .backend_buffer()
                            .extend_from_slice(format!("{r}\r\n").as_bytes());
                        self.ctl.on_backend_data(self.now);
                    }
                    _ => {}
                }
                Ok(())
            }
            _ => match self.src.pick(3) {
                // Bytes in pieces: half a line now, the rest later.
                0 if self.ctl.wants_client() => {
                    self.ctl.client_buffer().extend_from_slice(b"NO");
                    self.ctl.on_client_data(self.now);
                    self.ctl.client_buffer().extend_from_slice(b"OP split\r\n");
                    self.push_cmd(b"NOOP split".to_vec());
                    self.ctl.on_client_data(self.now);
                    Ok(())
                }
                1 => self.client_pipelines_a_transfer(),
                _ => Ok(()),
            },
        }
    }

    /// The backend owes no reply and holds none.
    fn backend_quiet(&self) -> bool {
        self.backend.inbox.is_empty()
            && self.backend.outbox.is_empty()
            && self.backend.busy.is_none()
            && self.fifo.iter().all(|c| !c.forwarded || c.backend_answered)
    }

    /// The backend's next reply reaches ftpgate.
    fn backend_delivers(&mut self) -> Result<(), Violation> {
        if !self.backend.connected || !self.ctl.wants_backend() {
            return Ok(());
        }
        let Some(b) = self.backend.outbox.pop_front() else {
            return Ok(());
        };
        self.log(format!(
            "backend: {}",
            String::from_utf8_lossy(&b).trim_end()
        ));
        self.ctl.backend_buffer().extend_from_slice(&b);
        self.ctl.on_backend_data(self.now);
        if self.backend.closing && self.backend.outbox.is_empty() {
            self.backend.connected = false;
            self.log("backend closes after its reply".into());
            self.ctl.on_backend_closed(self.now);
        }
        Ok(())
    }

    /// The backend ends the transfer it serves.
    fn backend_finishes_transfer(&mut self) -> Result<(), Violation> {
        if let Some(k) = self.backend.busy.take() {
            // pure-ftpd ends a transfer whose data write failed with a
            // final reply coded 150.
            let reply = match self.src.pick(8) {
                0 => format!("426 done #{k}"),
                1 => format!("150 0.001 seconds (measured here) #{k}"),
                _ => format!("226 done #{k}"),
            };
            self.backend
                .outbox
                .push_back(Bytes::from(format!("{reply}\r\n")));
            self.serve_inbox();
        }
        Ok(())
    }

    /// A data task reports something.
    fn data_happens(&mut self) -> Result<(), Violation> {
        // Tasks that run: started, not ended or cancelled, and (active
        // clients) given their client leg.
        let mut live: Vec<u64> = self
            .gens
            .iter()
            .filter(|(_, g)| g.task && !g.cancelled && !g.failed && g.finished.is_none())
            .filter(|(_, g)| !g.active || g.client_connected)
            .map(|(k, _)| *k)
            .collect();
        live.sort_unstable();
        if live.is_empty() {
            return Ok(());
        }
        let gen = live[self.src.pick(live.len() as u32) as usize];
        let g = self.gens.get(&gen).cloned().unwrap_or_default();
        let news = if !g.relaying {
            // A passive task still waits for its client, who may never come.
            if !g.client_connected && self.src.pick(4) == 0 {
                DataNews::Failed {
                    client_timeout: true,
                    why: "sim".into(),
                }
            } else {
                DataNews::Relaying
            }
        } else if g.down_clean.is_none() && self.src.pick(3) != 0 {
            DataNews::DownDone {
                clean: self.src.pick(4) != 0,
            }
        } else {
            let err = self.src.pick(4) == 0;
            DataNews::Finished {
                error: err.then(|| "reset".to_owned()),
                stalled: err && self.src.pick(2) == 0,
            }
        };
        let e = self.gens.entry(gen).or_default();
        match &news {
            DataNews::Relaying => {
                // Both legs are up: a passive lease ended when the client came.
                e.relaying = true;
                e.released = e.released || e.leased;
                e.client_connected = true;
            }
            DataNews::DownDone { clean } => e.down_clean = Some(*clean),
            DataNews::Finished { error, .. } => {
                e.finished = Some(error.is_some());
                e.released = true;
            }
            DataNews::Failed { .. } => {
                e.failed = true;
                e.released = true;
            }
        }
        self.log(format!("data {gen}: {news:?}"));
        self.ctl.on_event(Event::Data { gen, news }, self.now);
        Ok(())
    }

    /// Carries out the core's steps until there are none.
    fn drain(&mut self) -> Result<(), Violation> {
        let mut guard = 0;
        while let Some(step) = self.ctl.next_step() {
            guard += 1;
            if guard > 10_000 {
                return Err(self.fail("the core produced over 10,000 steps at once".into()));
            }
            if self.closed {
                return Err(self.fail(format!("a step after the close: {step:?}")));
            }
            self.step(step)?;
        }
        // A due deadline must be acted on by on_time: a wake-up that does
        // nothing and leaves it due would make a driver spin.
        for _ in 0..100 {
            if self.closed || self.ctl.deadline().is_none_or(|d| d > self.now) {
                return Ok(());
            }
            self.ctl.on_time(self.now);
            let mut progressed = false;
            while let Some(step) = self.ctl.next_step() {
                progressed = true;
                self.step(step)?;
            }
            if !progressed && self.ctl.deadline().is_some_and(|d| d <= self.now) {
                return Err(self.fail(format!(
                    "deadline still due at {:?} after on_time did nothing: a driver would spin",
                    self.now
                )));
            }
        }
        Err(self.fail("on_time kept a deadline due 100 times in a row".into()))
    }

    fn step(&mut self, step: Step) -> Result<(), Violation> {
        if !matches!(step, Step::Note(_)) {
            self.log(format!("step {step:?}"));
        }
        match step {
            Step::Reply(b) => self.client_reads(&b)?,
            Step::Send(b) => self.backend_reads(b)?,
            Step::Route { user } => {
                let ev = match self.src.pick(6) {
                    0 => Event::RouteRefused(ErrorKind::UnknownUser),
                    1 => Event::RouteFailed(Error::backend(ErrorKind::NoBackendUp)),
                    _ => {
                        self.backend = Backend {
                            connected: true,
                            ..Backend::default()
                        };
                        self.greet();
                        self.backend_ip = IpAddr::V4(ROUTED_IP);
                        Event::Routed {
                            backend: BackendAddr(SocketAddr::from((ROUTED_IP, 21))),
                            tls: pick_tls(self.src),
                            user,
                        }
                    }
                };
                self.event(ev);
            }
            Step::Disconnect => self.backend = Backend::default(),
            Step::BackendTls => {
                let ok = self.src.pick(8) != 0;
                self.event(Event::BackendTlsDone(if ok {
                    Ok(())
                } else {
                    Err("sim".into())
                }));
            }
            Step::ClientTls => {
                // Whatever was sent after AUTH is gone now.
                for c in self.fifo.iter_mut() {
                    if self.after_auth.contains(&c.idx) && !c.forwarded {
                        c.discarded = true;
                    }
                }
                self.auth_pending = false;
                self.after_auth.clear();
                let ok = self.src.pick(8) != 0;
                let cert = sim_cert(self.src);
                self.event(Event::ClientTlsDone(if ok {
                    Ok(cert)
                } else {
                    Err("sim".into())
                }));
            }
            Step::ConnectBackendData { gen, addr } => {
                if addr.0.ip() != self.backend_ip && !self.networks.contains(addr.0.ip()) {
                    return Err(self.fail(format!(
                        "invariant 8: a backend data connection to {addr}, neither the backend ({}) nor in {:?}",
                        self.backend_ip, self.networks
                    )));
                }
                let ev = if self.src.pick(6) == 0 {
                    Event::BackendDataFailed {
                        gen,
                        error: Error::backend(ErrorKind::DataConnectFailed("sim".into())),
                    }
                } else {
                    Event::BackendDataConnected { gen }
                };
                if matches!(ev, Event::BackendDataFailed { .. }) {
                    self.setup_open = false;
                }
                self.event(ev);
            }
            Step::ListenBackendData { gen } => {
                self.setup_open = true;
                let addr = SocketAddr::new(IpAddr::V4(GATE_IP), 30000 + gen as u16);
                self.listen_addrs.push(addr);
                self.event(Event::BackendDataListening { gen, addr });
            }
            Step::LeasePassive { gen, .. } => {
                let ev = match self.src.pick(8) {
                    0 => Event::LeaseFailed {
                        gen,
                        error: Error::internal(ErrorKind::PortRangeExhausted),
                    },
                    1 => Event::Leased {
                        gen,
                        public: PublicAddr::new("2001:db8::1".parse().expect("v6")),
                        port: 50000,
                    },
                    _ => Event::Leased {
                        gen,
                        public: PublicAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))),
                        port: 50000 + (gen % 20) as u16,
                    },
                };
                self.setup_open = false;
                if matches!(ev, Event::Leased { .. }) {
                    let g = self.gens.entry(gen).or_default();
                    g.leased = true;
                    g.task = true;
                    self.prepared = Some(gen);
                }
                self.event(ev);
            }
            Step::PrepareActive { gen } => {
                self.setup_open = false;
                let g = self.gens.entry(gen).or_default();
                g.task = true;
                g.active = true;
                self.prepared = Some(gen);
            }
            Step::ConnectClient { gen, .. } => {
                let ev = if self.src.pick(6) == 0 {
                    Event::ClientDataFailed {
                        gen,
                        error: Error::client(ErrorKind::DataConnectFailed("sim".into())),
                    }
                } else {
                    self.gens.entry(gen).or_default().client_connected = true;
                    Event::ClientDataConnected { gen }
                };
                self.event(ev);
            }
            Step::Cancel { gen } => {
                self.setup_open = false;
                let g = self.gens.entry(gen).or_default();
                // A download that reached the client whole stays whole
                // (its data task closes it cleanly).
                g.cut |= !g.cancelled && g.finished.is_none() && g.down_clean != Some(true);
                g.cancelled = true;
                g.released = true;
                if self.prepared == Some(gen) {
                    self.prepared = None;
                }
            }
            Step::Note(_) => {}
            Step::Close { farewell, end } => {
                self.log(format!("close: {end}"));
                self.stats.end = end.to_string();
                for b in farewell {
                    self.client_reads(&b)?;
                }
                self.closed = true;
            }
        }
        Ok(())
    }

    fn event(&mut self, ev: Event) {
        self.log(format!("event {ev:?}"));
        self.ctl.on_event(ev, self.now);
    }
}
