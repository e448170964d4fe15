//! Listeners, the accept loops, reload, drain, and the cancellation tree.
//!
//! [`Listeners::bind`] binds every control listener, the whole passive range
//! and the admin listener at start, so a taken port is a startup error naming
//! it rather than a surprise under load. [`Server::start`] serves on bound
//! listeners. What a reload may change (backends, limits, timeouts, public
//! addresses) lives in [`Live`], swapped whole; each session keeps the
//! snapshot it started with, so a reload never disturbs a running session.
//! Sessions get child tokens of one shutdown token and register with a task
//! tracker, so shutdown cancels top-down and waits bottom-up.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::advertise::PublicAddresses;
use crate::backend::policy::Policy;
use crate::backend::{health, Backends, Health, Member};
use crate::config::{BackendTlsMode, Config};
use crate::data::port_pool::PortPool;
use crate::data::PassivePool;
use crate::error::{Error, ErrorKind};
use crate::limits::{Admission, Limits};
pub use crate::live::{Live, Shared};
use crate::metrics::Metrics;
use crate::net::{canonical_ip, ListenAddr};
use crate::proto::proxy::{self, Header, Parsed};
use crate::session::{refuse, run_session, Arrival, GatewayRoute};
use crate::xferlog::XferLog;

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A control listener.
    #[error("cannot listen on {addr} (setting `listen`): {source}")]
    Control {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A port of the passive range.
    #[error("passive port {port} on {ip} is not available (setting `passive_ports`): {source}")]
    Passive {
        /// The address bound.
        ip: IpAddr,
        /// The port that is taken.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// An implicit-TLS listener.
    #[error("cannot listen on {addr} (setting `implicit_tls_listen`): {source}")]
    Implicit {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PROXY protocol listener.
    #[error("cannot listen on {addr} (setting `proxy_protocol_listen`): {source}")]
    Proxied {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A gateway listener.
    #[error("cannot listen on {addr} (setting `gateway_listen`): {source}")]
    Gateway {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A plain TCP listener.
    #[error("cannot listen on {addr} (setting `listen` of [tcp.{name}]): {source}")]
    Tcp {
        /// Its `[tcp.NAME]`.
        name: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin listener.
    #[error("cannot listen on {addr} (setting `admin_listen`): {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The transfer log cannot be opened.
    #[error("cannot open the transfer log {path} (setting `xferlog`): {source}")]
    Xferlog {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Every listener ftpgate needs, bound.
#[derive(Debug)]
pub struct Listeners {
    /// Control listeners, one per `listen` address.
    pub control: Vec<TcpListener>,
    /// Implicit FTPS listeners, one per `implicit_tls_listen` address.
    pub implicit: Vec<TcpListener>,
    /// PROXY protocol listeners, one per `proxy_protocol_listen` address.
    pub proxied: Vec<TcpListener>,
    /// Gateway listeners, one per `gateway_listen` address.
    pub gateway: Vec<TcpListener>,
    /// One listener per passive port (none when no FTP is served).
    pub passive: Vec<(u16, TcpListener)>,
    /// Plain TCP listeners, one per address of each `[tcp.NAME]`, with its name.
    pub tcp: Vec<(String, TcpListener)>,
    /// The admin HTTP listener, if configured.
    pub admin: Option<TcpListener>,
    /// The transfer log, opened (before any privileges are dropped).
    pub xferlog: Option<XferLog>,
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind_with(addr, false)
}

/// Binds `addr`; `tproxy` also lets it take TPROXY-diverted connections
/// where ftpgate may (IPv4, CAP_NET_ADMIN).
fn bind_with(addr: SocketAddr, tproxy: bool) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if tproxy && addr.is_ipv4() {
        if let Err(e) = crate::session::net::allow_tproxy(&sock) {
            info!(listen = %addr, error = %e, "gateway listener: TPROXY unavailable (needs CAP_NET_ADMIN); REDIRECT works");
        }
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // [::] serves IPv4 clients too, whatever the sysctl default says.
        sock.set_only_v6(false)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

impl Listeners {
    /// Binds the control listeners, the whole passive range (when FTP is
    /// served) and the plain TCP listeners. Must run inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Listeners, BindError> {
        let control = config
            .listen
            .iter()
            .map(|&addr| bind_one(addr).map_err(|source| BindError::Control { addr, source }))
            .collect::<Result<Vec<_>, _>>()?;
        let ip = config.passive_bind_address;
        let (first, last) = config.passive_ports;
        let passive = (first..=last)
            // Only plain TCP listeners: nothing would use the range.
            .filter(|_| config.serves_ftp())
            .map(|port| {
                bind_one(SocketAddr::new(ip, port))
                    .map(|l| (port, l))
                    .map_err(|source| BindError::Passive { ip, port, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let implicit = config
            .implicit_tls_listen
            .iter()
            .map(|&addr| bind_one(addr).map_err(|source| BindError::Implicit { addr, source }))
            .collect::<Result<Vec<_>, _>>()?;
        let proxied = config
            .proxy_protocol_listen
            .iter()
            .map(|&addr| bind_one(addr).map_err(|source| BindError::Proxied { addr, source }))
            .collect::<Result<Vec<_>, _>>()?;
        let gateway = config
            .gateway_listen
            .iter()
            .map(|&addr| {
                bind_with(addr, true).map_err(|source| BindError::Gateway { addr, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tcp = config
            .tcp
            .iter()
            .flat_map(|t| t.listen.iter().map(move |&addr| (t, addr)))
            .map(|(t, addr)| {
                bind_one(addr)
                    .map(|l| (t.name.clone(), l))
                    .map_err(|source| BindError::Tcp {
                        name: t.name.clone(),
                        addr,
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let admin = config
            .admin_listen
            .map(|addr| bind_one(addr).map_err(|source| BindError::Admin { addr, source }))
            .transpose()?;
        let xferlog = match &config.xferlog {
            Some(path) => Some(XferLog::open(path).map_err(|source| BindError::Xferlog {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Listeners {
            control,
            implicit,
            proxied,
            gateway,
            passive,
            tcp,
            admin,
            xferlog,
        })
    }

    /// The bound control addresses (useful when binding port 0).
    pub fn control_addrs(&self) -> Vec<SocketAddr> {
        self.control
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound gateway addresses.
    pub fn gateway_addrs(&self) -> Vec<SocketAddr> {
        self.gateway
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound plain TCP addresses with their `[tcp.NAME]`.
    pub fn tcp_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.tcp
            .iter()
            .filter_map(|(name, l)| Some((name.clone(), l.local_addr().ok()?)))
            .collect()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Every bound listener for the startup line, each but the plain FTP ones
/// with its kind: `127.0.0.1:990 (implicit TLS)`, `0.0.0.0:2222 (tcp.sftp)`.
fn listening(
    control: &[TcpListener],
    implicit: &[TcpListener],
    proxied: &[TcpListener],
    gateway: &[TcpListener],
    tcp: &[(String, TcpListener)],
    admin: Option<SocketAddr>,
) -> Vec<String> {
    let kind = |ls: &[TcpListener], k: &str| -> Vec<String> {
        ls.iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| format!("{a}{k}"))
            .collect()
    };
    let mut all = kind(control, "");
    all.extend(kind(implicit, " (implicit TLS)"));
    all.extend(kind(proxied, " (PROXY protocol)"));
    all.extend(kind(gateway, " (gateway)"));
    all.extend(
        tcp.iter()
            .filter_map(|(name, l)| Some(format!("{} (tcp.{name})", l.local_addr().ok()?))),
    );
    all.extend(admin.map(|a| format!("{a} (admin)")));
    all
}

/// Pools built from members.
fn build_pools(
    members: BTreeMap<String, (Vec<Member>, Policy)>,
) -> BTreeMap<String, Arc<Backends>> {
    members
        .into_iter()
        .map(|(name, (m, policy))| (name, Arc::new(Backends::new(m, policy))))
        .collect()
}

/// Settings a reload cannot change (they are bound or opened at start).
const RESTART_ONLY: &[&str] = &[
    "listen",
    "implicit_tls_listen",
    "proxy_protocol_listen",
    "gateway_listen",
    "passive_ports",
    "passive_bind_address",
    "allow_foreign_data_address",
    "admin_listen",
    "xferlog",
    "user",
    "group",
    "log_format",
    "log_level",
    "tcp",
];

/// The listen addresses of each `[tcp.NAME]` (its pool may change on reload).
fn tcp_listen(c: &Config) -> Vec<(&str, &[SocketAddr])> {
    c.tcp
        .iter()
        .map(|t| (t.name.as_str(), t.listen.as_slice()))
        .collect()
}

fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let changed = [
        old.listen != new.listen,
        old.implicit_tls_listen != new.implicit_tls_listen,
        old.proxy_protocol_listen != new.proxy_protocol_listen,
        old.gateway_listen != new.gateway_listen,
        old.passive_ports != new.passive_ports,
        old.passive_bind_address != new.passive_bind_address,
        old.allow_foreign_data_address != new.allow_foreign_data_address,
        old.admin_listen != new.admin_listen,
        old.xferlog != new.xferlog,
        old.user != new.user,
        old.group != new.group,
        old.log_format != new.log_format,
        old.log_level != new.log_level,
        tcp_listen(old) != tcp_listen(new),
    ];
    RESTART_ONLY
        .iter()
        .zip(changed)
        .filter_map(|(k, c)| c.then_some(*k))
        .collect()
}

/// Keeps the running values of the settings a reload cannot change.
fn keep_restart_only(old: &Config, mut new: Config) -> Config {
    new.listen = old.listen.clone();
    new.implicit_tls_listen = old.implicit_tls_listen.clone();
    new.proxy_protocol_listen = old.proxy_protocol_listen.clone();
    new.gateway_listen = old.gateway_listen.clone();
    new.passive_ports = old.passive_ports;
    new.passive_bind_address = old.passive_bind_address;
    new.allow_foreign_data_address = old.allow_foreign_data_address;
    new.admin_listen = old.admin_listen;
    new.xferlog = old.xferlog.clone();
    new.user = old.user.clone();
    new.group = old.group.clone();
    new.log_format = old.log_format;
    new.log_level = old.log_level.clone();
    if tcp_listen(old) != tcp_listen(&new) {
        new.tcp = old.tcp.clone();
    }
    new
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Settings that changed but need a restart (their old values stay).
    pub restart_needed: Vec<&'static str>,
    /// Backends added and removed.
    pub added: Vec<String>,
    /// Backends removed (their running sessions continue).
    pub removed: Vec<String>,
}

type HealthKey = (SocketAddr, String);

/// What a backend keeps across reloads: its health (while the check
/// settings stay), its checker's token, and its open-session count.
#[derive(Debug)]
struct MemberState {
    health: Arc<Health>,
    /// How its checker checks it (a member that changes kind gets a new one).
    kind: health::CheckKind,
    token: CancellationToken,
    active: Arc<AtomicU64>,
}

/// A running ftpgate.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    sessions: TaskTracker,
    tasks: TaskTracker,
    /// Stops the control accept loops.
    stop_accepting: CancellationToken,
    /// Ends everything: sessions get a 421, background tasks stop.
    shutdown: CancellationToken,
    /// Health-check tasks by backend, each with its own token.
    checkers: Mutex<HashMap<HealthKey, MemberState>>,
    /// Stops the current public-address refresh loop.
    refresh: Mutex<CancellationToken>,
    admin_addr: Option<SocketAddr>,
    /// Held while the live configuration is replaced (reload, DNS).
    swap: tokio::sync::Mutex<()>,
}

impl Server {
    /// Starts serving on `listeners`. Must run inside a tokio runtime.
    pub async fn start(config: Arc<Config>, listeners: Listeners) -> Arc<Server> {
        let admin_addr = listeners.admin_addr();
        let Listeners {
            control,
            implicit,
            proxied,
            gateway,
            passive,
            tcp,
            admin,
            xferlog,
        } = listeners;
        let (first, last) = config.passive_ports;
        let pool: Arc<PassivePool> = PortPool::new(first, last, config.allow_foreign_data_address);
        let metrics = Arc::new(Metrics::new());
        let public = PublicAddresses::new(&config).await;
        let shutdown = CancellationToken::new();
        let server = Arc::new(Server {
            shared: Arc::new(Shared::new(
                // Replaced below once the health checkers exist.
                Live {
                    config: Arc::clone(&config),
                    pools: BTreeMap::new(),
                    public: Arc::clone(&public),
                },
                Arc::clone(&pool),
                Arc::clone(&metrics),
                Admission::new(),
                xferlog,
            )),
            sessions: TaskTracker::new(),
            tasks: TaskTracker::new(),
            stop_accepting: shutdown.child_token(),
            refresh: Mutex::new(shutdown.child_token()),
            shutdown,
            checkers: Mutex::new(HashMap::new()),
            admin_addr,
            swap: tokio::sync::Mutex::new(()),
        });
        let members = server.sync_health(&config, None);
        server.shared.set_live(Live {
            config: Arc::clone(&config),
            pools: build_pools(members),
            public: Arc::clone(&public),
        });
        server.tasks.spawn(
            public.refresh_loop(
                config.public_address_refresh,
                server
                    .refresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        );
        for (port, l) in passive {
            server.tasks.spawn(accept_data(
                port,
                l,
                Arc::clone(&server.shared),
                server.shutdown.clone(),
            ));
        }
        if let Some(l) = admin {
            server.tasks.spawn(crate::admin::serve(
                l,
                Arc::clone(&server.shared),
                server.shutdown.clone(),
            ));
        }
        let ids = Arc::new(AtomicU64::new(1));
        info!(
            listen = ?listening(&control, &implicit, &proxied, &gateway, &tcp, admin_addr),
            pools = ?config.all_pools().iter().map(|p| format!("{}: {}", p.name, p.backends.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(" "))).collect::<Vec<_>>(),
            public_address = %config.public_address,
            passive_ports = %if config.serves_ftp() { format!("{first}-{last}") } else { "none".to_owned() },
            "ftpgate listening"
        );
        for (l, tls) in control
            .into_iter()
            .map(|l| (l, ListenerKind::Plain))
            .chain(implicit.into_iter().map(|l| (l, ListenerKind::ImplicitTls)))
            .chain(proxied.into_iter().map(|l| (l, ListenerKind::Proxied)))
            .chain(gateway.into_iter().map(|l| (l, ListenerKind::Gateway)))
        {
            server.tasks.spawn(accept_control(
                l,
                tls,
                Arc::clone(&server.shared),
                server.sessions.clone(),
                server.stop_accepting.clone(),
                server.shutdown.clone(),
                Arc::clone(&ids),
            ));
        }
        for (name, l) in tcp {
            info!(tcp = %name, listen = ?l.local_addr().ok(), "plain TCP listening");
            server.tasks.spawn(crate::tcp::accept_tcp(
                name,
                l,
                Arc::clone(&server.shared),
                server.sessions.clone(),
                server.stop_accepting.clone(),
                server.shutdown.clone(),
                Arc::clone(&ids),
            ));
        }
        server
            .tasks
            .spawn(Arc::clone(&server).resolve_loop(server.shutdown.clone()));
        server
    }

    /// The shared state (metrics, readiness).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Members for `config`'s backends, reusing the health (and checker) of
    /// a backend that stays, starting checkers for new ones and stopping
    /// those of removed ones.
    fn sync_health(
        &self,
        config: &Config,
        old: Option<&Config>,
    ) -> BTreeMap<String, (Vec<Member>, Policy)> {
        let same_checks = old.is_some_and(|o| {
            (
                o.health_check,
                o.health_check_interval,
                o.health_check_fast_interval,
                o.health_check_timeout,
                o.health_check_rise,
                o.health_check_fall,
                o.backend_proxy_protocol,
                o.health_check_tls,
                &o.health_check_user,
                &o.health_check_password,
            ) == (
                config.health_check,
                config.health_check_interval,
                config.health_check_fast_interval,
                config.health_check_timeout,
                config.health_check_rise,
                config.health_check_fall,
                config.backend_proxy_protocol,
                config.health_check_tls,
                &config.health_check_user,
                &config.health_check_password,
            )
                // Checkers hold the TLS settings they started with.
                && (o.backend_tls, &o.backend_tls_verify, &o.backend_tls_server_name)
                    == (
                        config.backend_tls,
                        &config.backend_tls_verify,
                        &config.backend_tls_server_name,
                    )
        });
        let mut checkers = self.checkers.lock().unwrap_or_else(|p| p.into_inner());
        let mut old_checkers = std::mem::take(&mut *checkers);
        let mut pools = BTreeMap::new();
        for pool in config.all_pools() {
            let kind = if config.is_tcp_pool(&pool.name) {
                health::CheckKind::Connect
            } else {
                health::CheckKind::FtpGreeting
            };
            let mut members = Vec::new();
            for spec in &pool.backends {
                let key = (spec.addr, spec.name.clone());
                if let Some(st) = checkers.get(&key) {
                    // Listed twice: same member twice (a crude weight).
                    members.push(Member {
                        spec: spec.clone(),
                        health: Arc::clone(&st.health),
                        active: Arc::clone(&st.active),
                    });
                    continue;
                }
                let old_state = old_checkers.remove(&key);
                let active = old_state
                    .as_ref()
                    .map(|st| Arc::clone(&st.active))
                    .unwrap_or_default();
                let kept = match old_state {
                    Some(st) if same_checks && st.kind == kind => Some((st.health, st.token)),
                    Some(st) => {
                        // New check settings: a new checker replaces the old one.
                        st.token.cancel();
                        None
                    }
                    None => None,
                };
                let (health, token) = match kept {
                    Some(entry) => entry,
                    None => {
                        let h = Arc::new(Health::new(
                            config.health_check_rise,
                            config.health_check_fall,
                        ));
                        let token = self.shutdown.child_token();
                        if config.health_check {
                            h.expect_checks();
                            let ftp = kind == health::CheckKind::FtpGreeting;
                            let check_tls = || {
                                let c = config.backend_tls_config.as_ref()?;
                                crate::tls::backend_server_name(
                                    config.backend_tls_server_name.as_deref(),
                                    &spec.name,
                                )
                                .map(|name| health::CheckTls {
                                    connector: tokio_rustls::TlsConnector::from(Arc::clone(c)),
                                    name,
                                })
                            };
                            let (tls, starttls) = match config.backend_tls {
                                // Plain TCP pools: the connect alone.
                                _ if !ftp => (None, None),
                                BackendTlsMode::Implicit => (check_tls(), None),
                                // Validation allows health_check_tls with explicit only.
                                BackendTlsMode::Explicit if config.health_check_tls => {
                                    let t = check_tls();
                                    if t.is_none() {
                                        warn!(
                                            backend = %spec.name,
                                            "no host name to check a certificate against: health checks skip AUTH TLS; \
                                             set backend_tls_server_name"
                                        );
                                    }
                                    (None, t)
                                }
                                _ => (None, None),
                            };
                            let login =
                                config
                                    .health_check_user
                                    .as_ref()
                                    .filter(|_| ftp)
                                    .map(|user| health::CheckLogin {
                                        user: user.clone(),
                                        password: config.health_check_password.clone(),
                                    });
                            self.tasks.spawn(health::check_loop(
                                spec.clone(),
                                Arc::clone(&h),
                                health::CheckHow {
                                    kind,
                                    interval: config.health_check_interval,
                                    fast_interval: config.health_check_fast_interval,
                                    timeout: config.health_check_timeout,
                                    tls,
                                    starttls,
                                    login,
                                    proxy: match config.backend_proxy_protocol {
                                        _ if !ftp => None,
                                        crate::config::ProxyVersion::Off => None,
                                        crate::config::ProxyVersion::V1 => {
                                            Some(proxy::encode_local(false))
                                        }
                                        crate::config::ProxyVersion::V2 => {
                                            Some(proxy::encode_local(true))
                                        }
                                    },
                                },
                                Arc::clone(&self.shared.metrics),
                                token.clone(),
                            ));
                        }
                        (h, token)
                    }
                };
                members.push(Member {
                    spec: spec.clone(),
                    health: Arc::clone(&health),
                    active: Arc::clone(&active),
                });
                checkers.insert(
                    key,
                    MemberState {
                        health,
                        kind,
                        token,
                        active,
                    },
                );
            }
            pools.insert(pool.name, (members, pool.policy));
        }
        for ((addr, name), st) in old_checkers {
            st.token.cancel();
            if !checkers.contains_key(&(addr, name.clone())) {
                let label = crate::config::member_label(&name, addr);
                let _ = self
                    .shared
                    .metrics
                    .backend_up
                    .remove_label_values(&[&label]);
            }
        }
        pools
    }

    /// Applies a new configuration. Running sessions keep the one they
    /// started with; new sessions get this one. Settings that are bound at
    /// start keep their running values and are reported.
    pub async fn reload(&self, new: Config) -> ReloadReport {
        let _swap = self.swap.lock().await;
        let old = self.shared.live();
        let restart_needed = restart_only_changes(&old.config, &new);
        for key in &restart_needed {
            warn!(
                setting = key,
                "reload: this setting changed but needs a restart; keeping the running value"
            );
        }
        let new = Arc::new(keep_restart_only(&old.config, new));
        let members = self.sync_health(&new, Some(&old.config));
        let public = PublicAddresses::new(&new).await;
        {
            let mut refresh = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
            refresh.cancel();
            *refresh = self.shutdown.child_token();
            self.tasks.spawn(
                Arc::clone(&public).refresh_loop(new.public_address_refresh, refresh.clone()),
            );
        }
        let names = |c: &Config| -> Vec<String> {
            let mut v: Vec<String> = c
                .all_pools()
                .iter()
                .flat_map(|p| p.backends.iter().map(|b| b.name.clone()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let (old_names, new_names) = (names(&old.config), names(&new));
        let report = ReloadReport {
            restart_needed,
            added: new_names
                .iter()
                .filter(|n| !old_names.contains(n))
                .cloned()
                .collect(),
            removed: old_names
                .iter()
                .filter(|n| !new_names.contains(n))
                .cloned()
                .collect(),
        };
        self.shared.set_live(Live {
            pools: build_pools(members),
            config: new,
            public,
        });
        if let Some(x) = &self.shared.xferlog {
            // Reopen for logrotate.
            if let Err(e) = x.reopen() {
                error!(path = %x.path().display(), error = %e, "cannot reopen the transfer log; writing to the old file");
            }
        }
        self.shared
            .metrics
            .reloads_total
            .with_label_values(&["success"])
            .inc();
        info!(
            added = ?report.added,
            removed = ?report.removed,
            "configuration reloaded; running sessions keep their settings"
        );
        report
    }

    /// Resolves backend host names every `backend_resolve_interval`; when
    /// a name's addresses change, its members change with them (health
    /// and open-session counts kept for addresses that stay). A failed
    /// lookup keeps the members it had, with a warning.
    async fn resolve_loop(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let live = self.shared.live();
            let interval = live.config.backend_resolve_interval;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let names: std::collections::BTreeSet<String> = self
                .shared
                .live()
                .config
                .all_pools()
                .iter()
                .flat_map(|p| {
                    p.backends
                        .iter()
                        .filter(|b| b.is_hostname())
                        .map(|b| b.name.clone())
                })
                .collect();
            if names.is_empty() {
                continue;
            }
            let timeout = live.config.backend_connect_timeout;
            let mut resolved = BTreeMap::new();
            for name in names {
                let lookup = tokio::net::lookup_host(name.clone());
                match tokio::time::timeout(timeout, lookup).await {
                    Ok(Ok(addrs)) => {
                        let mut v: Vec<SocketAddr> = addrs.map(crate::net::canonical).collect();
                        v.sort();
                        v.dedup();
                        if v.is_empty() {
                            warn!(backend = %name, "backend name resolves to nothing; keeping its members");
                        } else {
                            resolved.insert(name, v);
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(backend = %name, error = %e, "cannot resolve backend name; keeping its members")
                    }
                    Err(_) => {
                        warn!(backend = %name, "resolving backend name timed out; keeping its members")
                    }
                }
            }
            let _swap = self.swap.lock().await;
            let old = self.shared.live();
            let Some(new) = old.config.with_resolved(&resolved) else {
                continue;
            };
            for (name, addrs) in &resolved {
                let before: Vec<SocketAddr> = old
                    .config
                    .all_pools()
                    .iter()
                    .flat_map(|p| {
                        p.backends
                            .iter()
                            .filter(|b| &b.name == name)
                            .map(|b| b.addr)
                    })
                    .collect();
                if before.iter().any(|a| !addrs.contains(a))
                    || addrs.iter().any(|a| !before.contains(a))
                {
                    info!(backend = %name, addresses = ?addrs, before = ?before, "backend name resolves differently: members updated");
                }
            }
            let members = self.sync_health(&new, Some(&old.config));
            self.shared.set_live(Live {
                pools: build_pools(members),
                config: Arc::new(new),
                public: Arc::clone(&old.public),
            });
        }
    }

    /// Counts a reload rejected before it reached [`Server::reload`].
    pub fn reload_failed(&self) {
        self.shared
            .metrics
            .reloads_total
            .with_label_values(&["failure"])
            .inc();
    }

    /// Ends every session now (421), e.g. on a second SIGTERM while draining.
    pub fn stop_now(&self) {
        self.stop_accepting.cancel();
        self.shared.draining.cancel();
        self.shutdown.cancel();
    }

    /// The drain timeout of the configuration in force.
    pub fn drain_timeout(&self) -> Duration {
        self.shared.live().config.shutdown_drain_timeout
    }

    /// Graceful shutdown: stops accepting, lets sessions finish their
    /// transfers for up to `drain`, closing each as soon as it is idle, then
    /// closes the rest with a 421 and stops.
    pub async fn shutdown(&self, drain: Duration) {
        self.stop_accepting.cancel();
        self.shared.draining.cancel();
        self.sessions.close();
        let open = self.shared.admission.sessions();
        if open > 0 {
            info!(sessions = open, drain_timeout = ?drain, "draining: open sessions may finish their transfers");
        }
        if tokio::time::timeout(drain, self.sessions.wait())
            .await
            .is_err()
        {
            warn!(
                sessions = self.shared.admission.sessions(),
                "drain timeout reached; closing the remaining sessions with 421"
            );
        }
        self.shutdown.cancel();
        self.sessions.wait().await;
        self.tasks.close();
        self.tasks.wait().await;
        info!("ftpgate stopped");
    }
}

/// What kind of control listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain FTP (AUTH TLS per `tls`).
    Plain,
    /// Implicit FTPS.
    ImplicitTls,
    /// Plain FTP behind a PROXY-protocol balancer: every connection must come
    /// from `proxy_protocol_from` and start with a header.
    Proxied,
    /// A client network's gateway: redirected connections go to their
    /// original destination, others name theirs in `USER name@host`.
    Gateway,
}

async fn accept_control(
    l: TcpListener,
    kind: ListenerKind,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    stop: CancellationToken,
    shutdown: CancellationToken,
    ids: Arc<AtomicU64>,
) {
    let Ok(bound) = l.local_addr() else {
        warn!("a control listener has no local address; not serving it");
        return;
    };
    let listener = ListenAddr::new(bound);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let arrival = admit(
                    Arc::clone(&shared),
                    stream,
                    peer,
                    id,
                    listener,
                    kind,
                    sessions.clone(),
                    shutdown.child_token(),
                );
                if kind == ListenerKind::Proxied {
                    // Reading the header may take a while: not in the accept loop.
                    sessions.spawn(arrival);
                } else {
                    arrival.await;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed on the control listener");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Whether `ip` may send PROXY protocol headers.
fn trusted_proxy(config: &Config, ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    config.proxy_protocol_from.iter().any(|n| n.contains(&ip))
}

/// Reads a PROXY protocol header from the start of `s`, consuming exactly
/// its bytes (what follows belongs to the connection). Peeks until the
/// header is complete, within `timeout`.
pub async fn read_proxy_header(s: &mut TcpStream, timeout: Duration) -> Result<Header, String> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; proxy::MAX_HEADER_LEN];
    loop {
        let n = tokio::time::timeout_at(deadline, s.peek(&mut buf))
            .await
            .map_err(|_| "no PROXY protocol header in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a PROXY protocol header".into());
        }
        match proxy::parse(&buf[..n]) {
            Ok(Parsed::Complete { header, consumed }) => {
                s.read_exact(&mut buf[..consumed])
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(header);
            }
            Ok(Parsed::Incomplete) => {
                // peek returns what is queued at once; wait for more.
                if tokio::time::Instant::now() >= deadline {
                    return Err("no complete PROXY protocol header in time".into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Admission of one control connection: the PROXY header where the listener
/// wants one, the connection limits by the real client address, then the
/// session (or a 421).
#[allow(clippy::too_many_arguments)]
async fn admit(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    listener: ListenAddr,
    kind: ListenerKind,
    sessions: TaskTracker,
    cancel: CancellationToken,
) {
    let live = shared.live();
    let mut client = None;
    let mut seen_local = None;
    if kind == ListenerKind::Proxied {
        let refused = |why: &str| {
            shared
                .metrics
                .sessions_total
                .with_label_values(&[&listener.label(), "-", "proxy_refused"])
                .inc();
            warn!(session = id, peer = %peer, reason = why, "connection closed on the PROXY protocol listener");
        };
        if !trusted_proxy(&live.config, peer.ip()) {
            return refused("source not in proxy_protocol_from");
        }
        // A shutdown (or drain) must not wait for a silent connection's header.
        let read = tokio::select! {
            r = read_proxy_header(&mut stream, live.config.proxy_protocol_timeout) => r,
            _ = cancel.cancelled() => Err("shutting down".to_owned()),
            _ = shared.draining.cancelled() => Err("shutting down".to_owned()),
        };
        match read {
            Ok(Header::Proxy {
                source,
                destination,
            }) => {
                client = Some(crate::net::canonical(source));
                seen_local = Some(crate::net::canonical(destination));
            }
            Ok(Header::Local) => {}
            Err(e) => return refused(&e),
        }
    }
    let gateway = (kind == ListenerKind::Gateway).then(|| {
        let l = listener.addr();
        match crate::session::net::original_destination(&stream, l) {
            Some(dst) => GatewayRoute::Transparent(dst),
            None => GatewayRoute::Explicit,
        }
    });
    let real = client.unwrap_or(peer);
    let limits = Limits {
        max_sessions: live.config.max_sessions,
        max_sessions_per_client: live.config.max_sessions_per_client,
        max_rate_per_client: live.config.max_connection_rate_per_client,
    };
    match shared
        .admission
        .admit(canonical_ip(real.ip()), limits, std::time::Instant::now())
    {
        Ok(admitted) => {
            sessions.spawn(run_session(
                Arc::clone(&shared),
                live,
                Arrival {
                    client: stream,
                    id,
                    listener,
                    implicit_tls: kind == ListenerKind::ImplicitTls,
                    admitted,
                    real_client: client,
                    seen_local,
                    gateway,
                },
                cancel,
            ));
        }
        Err(hit) => {
            shared.metrics.limit_hit(hit.key());
            warn!(session = id, client = %real, limit = hit.key(), "connection refused: limit reached");
            shared
                .metrics
                .sessions_total
                .with_label_values(&[&listener.label(), "-", "refused_limit"])
                .inc();
            sessions.spawn(async move {
                refuse(stream, &Error::client(ErrorKind::LimitReached(hit.key()))).await
            });
        }
    }
}

/// Hands each connection on a passive port to the session that leased the
/// port for that client address; anything else is refused.
async fn accept_data(port: u16, l: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((mut stream, peer)) => {
                let live = shared.live();
                if trusted_proxy(&live.config, peer.ip()) {
                    // A balancer in front of the passive ports: the header
                    // names the client whose route this connection claims.
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        match read_proxy_header(&mut stream, live.config.proxy_protocol_timeout)
                            .await
                        {
                            Ok(Header::Proxy { source, .. }) => {
                                route_data(&shared, port, stream, crate::net::canonical(source))
                            }
                            Ok(Header::Local) => route_data(&shared, port, stream, peer),
                            Err(e) => {
                                shared
                                    .metrics
                                    .data_refused_total
                                    .with_label_values(&["proxy_header"])
                                    .inc();
                                warn!(port, peer = %peer, error = %e, "refused data connection from a PROXY protocol sender")
                            }
                        }
                    });
                } else {
                    route_data(&shared, port, stream, peer);
                }
            }
            Err(e) => {
                warn!(port, error = %e, "accept failed on a passive port");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Hands a data connection from `client` to the session that leased `port`
/// for that address; refuses it otherwise.
fn route_data(shared: &Shared, port: u16, stream: TcpStream, client: SocketAddr) {
    let pool = &shared.pool;
    match pool.claim(port, canonical_ip(client.ip())) {
        Some(tx) => {
            if tx.send(stream).is_err() {
                debug!(port, peer = %client, "data connection arrived as its session gave up");
            }
        }
        None => {
            // Another client waits on this port: a foreign address.
            let reason = if pool.pending_on(port) {
                "foreign_address"
            } else {
                "no_pending_transfer"
            };
            shared
                .metrics
                .data_refused_total
                .with_label_values(&[reason])
                .inc();
            warn!(port, peer = %client, reason, "refused data connection: no transfer pending on this port for this address")
        }
    }
}
