//! The validated configuration the rest of the crate sees.
//!
//! `file.rs` holds what the operator wrote (file and flags); `validate/`
//! turns it into [`Config`] or a [`ConfigError`] naming the key and where it
//! was set. Defaults live in `validate/` and are listed in the README.
//! `display.rs` prints a `Config` back as TOML for `ftpgate check`. This file
//! keeps the types and the small questions the rest of the crate asks them.

mod display;
pub mod file;
pub mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use validate::{validate, ConfigError};

/// How the advertised (public) address is found for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicAddressSpec {
    /// The local address the client's control connection arrived on.
    Auto,
    /// A fixed address.
    Ip(IpAddr),
    /// A hostname, resolved at start and every `public_address_refresh`.
    Host(String),
}

impl std::fmt::Display for PublicAddressSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicAddressSpec::Auto => f.write_str("auto"),
            PublicAddressSpec::Ip(ip) => ip.fmt(f),
            PublicAddressSpec::Host(h) => f.write_str(h),
        }
    }
}

/// How ftpgate opens data connections toward the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendDataMode {
    /// ftpgate sends PASV/EPSV and connects to the backend (default).
    Passive,
    /// ftpgate listens and sends PORT/EPRT; the backend connects to it.
    Active,
}

/// Explicit FTPS on the plain listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// AUTH is refused.
    Off,
    /// AUTH TLS is offered; plaintext sessions work too.
    Optional,
    /// Login needs AUTH TLS first, and transfers need PROT P.
    Required,
}

impl TlsPolicy {
    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::Off => "off",
            TlsPolicy::Optional => "optional",
            TlsPolicy::Required => "required",
        }
    }

    /// Parses a config word.
    pub fn parse(s: &str) -> Option<TlsPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(TlsPolicy::Off),
            "optional" => Some(TlsPolicy::Optional),
            "required" => Some(TlsPolicy::Required),
            _ => None,
        }
    }

    /// The policy of the listener at `addr`.
    pub fn for_listener(config: &Config, addr: SocketAddr) -> TlsPolicy {
        config
            .tls_for_listener
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(config.tls, |(_, p)| *p)
    }
}

/// TLS toward the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTlsMode {
    /// Plaintext.
    Off,
    /// AUTH TLS after the greeting.
    Explicit,
    /// TLS from the first byte (port 990 servers).
    Implicit,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendProtocol {
    /// An FTP server (`host:port`).
    Ftp,
    /// An SFTP server (`sftp://host[:port]`), served through ftpgate's
    /// in-process adapter ([`crate::sftp`]).
    Sftp,
}

/// The SSH port an `sftp://` name without a port means.
pub const SFTP_PORT: u16 = 22;

/// Splits a backend name as written into its protocol and `host:port`
/// part (`sftp://` stripped; an `sftp://` name without a port gets 22).
pub fn split_backend_name(name: &str) -> (BackendProtocol, String) {
    let name = name.trim();
    let Some(rest) = name
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("sftp://"))
        .map(|_| &name[7..])
    else {
        return (BackendProtocol::Ftp, name.to_owned());
    };
    let rest = rest.trim_end_matches('/');
    let has_port = match rest.rsplit_once(':') {
        // `[v6]` alone has colons but no port.
        Some((h, p)) => {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        (BackendProtocol::Sftp, rest.to_owned())
    } else {
        (BackendProtocol::Sftp, format!("{rest}:{SFTP_PORT}"))
    }
}

/// A per-user private key for SFTP backends (`[sftp_user_key]`): an
/// encrypted OpenSSH key whose passphrase is the user's FTP password.
#[derive(Clone, PartialEq, Eq)]
pub struct UserKey {
    /// The file it was read from (printed instead of the key).
    pub path: PathBuf,
    /// The key file's text (encrypted).
    pub text: Arc<String>,
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserKey({})", self.path.display())
    }
}

/// A backend server as configured: the name written and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// As written (`host:port`, or `sftp://host:port`).
    pub name: String,
    /// What it speaks (from the name: `sftp://` or not).
    pub protocol: BackendProtocol,
    /// Resolved at start.
    pub addr: SocketAddr,
    /// Share of new sessions (`backend_weights`; 0: standby).
    pub weight: u32,
    /// Takes no new sessions (`backend_drain`); its running sessions go on.
    pub drain: bool,
}

/// A named backend pool (`[pool.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Its members (not empty, not every weight 0).
    pub backends: Vec<BackendSpec>,
    /// How its members share new sessions.
    pub policy: crate::backend::policy::Policy,
}

/// The pool `backends` forms.
pub const DEFAULT_POOL: &str = "default";

/// Plain TCP listeners (`[tcp.NAME]`): bytes relayed both ways to a member
/// of `pool`, no FTP parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpService {
    /// The table's name (logs).
    pub name: String,
    /// Its listeners (not empty; none shared with another listener).
    pub listen: Vec<SocketAddr>,
    /// A `[pool.NAME]` no FTP listener uses, whose policy is not `user_hash`.
    pub pool: String,
}

/// A secret read from a file: `Debug` and `Display` print stars, so a
/// logged or printed `Config` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: String) -> Password {
        Password(secret)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(****)")
    }
}

impl std::fmt::Display for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("****")
    }
}

/// Validated configuration. Invariants: some listener is set (`listen` may
/// be empty when another kind is); FTP listeners have a pool;
/// `passive_ports.0 <= passive_ports.1`; durations are non-zero.
#[derive(Debug, Clone)]
pub struct Config {
    /// Control-connection listeners.
    pub listen: Vec<SocketAddr>,
    /// Backends, used round-robin.
    pub backends: Vec<BackendSpec>,
    /// Advertised address for clients no rule matches.
    pub public_address: PublicAddressSpec,
    /// Advertised address by client network, first match wins (most specific first).
    pub public_address_for: Vec<(IpNet, PublicAddressSpec)>,
    /// How often hostnames in public addresses are resolved again.
    pub public_address_refresh: Duration,
    /// Passive data ports offered to clients, inclusive.
    pub passive_ports: (u16, u16),
    /// Local address the passive listeners bind.
    pub passive_bind_address: IpAddr,
    /// Use the address inside a backend's 227 instead of its control address.
    pub trust_backend_pasv_address: bool,
    /// Where ftpgate may connect for a backend's data besides the backend's
    /// own address (what a trusted 227 may name); empty: nowhere else.
    pub backend_data_networks: Vec<IpNet>,
    /// Accept client data connections from any address (client NAT pools).
    pub allow_foreign_data_address: bool,
    /// Accept PORT and EPRT from clients.
    pub active_mode: bool,
    /// Replace a private PORT/EPRT address with the control connection's address.
    pub active_nat_fix: bool,
    /// How data connections to the backend are made.
    pub backend_data_mode: BackendDataMode,
    /// Connect to active-mode clients from port 20.
    pub active_source_port_20: bool,
    /// How long a prepared data connection waits for its peer.
    pub pending_data_timeout: Duration,
    /// Timeout for ftpgate's own outgoing data connections.
    pub data_connect_timeout: Duration,
    /// A transfer that moves no byte in either direction this long is cut.
    pub data_stall_timeout: Duration,
    /// A client that has not logged in by then is closed.
    pub login_timeout: Duration,
    /// A logged-in client silent this long, with no transfer running, is closed.
    pub idle_timeout: Duration,
    /// Timeout for connecting to a backend's control port.
    pub backend_connect_timeout: Duration,
    /// How long ftpgate waits for a backend reply to its own commands.
    pub backend_reply_timeout: Duration,
    /// Longest client command line.
    pub max_line_length: usize,
    /// Largest buffer of each direction of a data relay, in bytes.
    pub relay_buffer_max: usize,
    /// TCP keepalive idle time on both control legs.
    pub tcp_keepalive: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    pub log_level: String,
    /// Admin HTTP listener (/metrics, /healthz, /readyz); off when `None`.
    pub admin_listen: Option<SocketAddr>,
    /// Transfer log in xferlog format; off when `None`.
    pub xferlog: Option<PathBuf>,
    /// How long sessions may run on after SIGTERM/SIGINT before a 421.
    pub shutdown_drain_timeout: Duration,
    /// How long ftpgate waits for a backend's greeting.
    pub greeting_timeout: Duration,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Most concurrent sessions from one client address.
    pub max_sessions_per_client: usize,
    /// Most new connections per second from one client address.
    pub max_connection_rate_per_client: u32,
    /// Failed logins answered at once; later ones wait `login_failure_delay`.
    pub login_failures_before_delay: u32,
    /// Delay of each failed-login reply past `login_failures_before_delay`.
    pub login_failure_delay: Duration,
    /// The session is closed after this many failed logins.
    pub max_login_failures: u32,
    /// Whether backends are health-checked.
    pub health_check: bool,
    /// Time between two checks of one backend.
    pub health_check_interval: Duration,
    /// Time between two checks of a backend that has never been up (used
    /// at most as long as `health_check_interval`).
    pub health_check_fast_interval: Duration,
    /// Time one check may take.
    pub health_check_timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub health_check_rise: u32,
    /// Consecutive failures that take an up backend down.
    pub health_check_fall: u32,
    /// Checks complete `AUTH TLS` after the greeting (only with
    /// `backend_tls = "explicit"`, and by default then).
    pub health_check_tls: bool,
    /// Checks log in as this user.
    pub health_check_user: Option<String>,
    /// The file the check password was read from (printed instead of it).
    pub health_check_password_file: Option<PathBuf>,
    /// The first line of that file. `None` with a user: the server needs no
    /// password, or takes any (anonymous), and gets `health@ftpgate`.
    pub health_check_password: Option<Password>,
    /// User to switch to after binding.
    pub user: Option<String>,
    /// Group to switch to after binding (default: the user's primary group).
    pub group: Option<String>,
    /// Explicit FTPS policy of the `listen` listeners.
    pub tls: TlsPolicy,
    /// Policies of single listeners, overriding `tls`.
    pub tls_for_listener: Vec<(SocketAddr, TlsPolicy)>,
    /// Certificate chain file shown to clients.
    pub tls_cert: Option<PathBuf>,
    /// Its private key file.
    pub tls_key: Option<PathBuf>,
    /// The client-facing TLS configuration, built from the two files.
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// Implicit FTPS listeners.
    pub implicit_tls_listen: Vec<SocketAddr>,
    /// Protected data connections must resume the control session.
    pub tls_require_data_resumption: bool,
    /// Time a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// Offer TLS 1.3 only.
    pub tls_min_version_13: bool,
    /// TLS toward backends.
    pub backend_tls: BackendTlsMode,
    /// How backend certificates are checked.
    pub backend_tls_verify: crate::tls::BackendVerify,
    /// `backend_tls_verify` as set (default `true`), for `ftpgate check`:
    /// with backend TLS off there is nothing to verify and the field above
    /// is `None` whatever this says.
    pub backend_tls_verify_flag: bool,
    /// Name backend certificates are checked against (default: the backend host).
    pub backend_tls_server_name: Option<String>,
    /// PROT P toward TLS backends.
    pub backend_tls_protect_data: bool,
    /// The backend-facing TLS configuration.
    pub backend_tls_config: Option<Arc<rustls::ClientConfig>>,
    /// Client certificates toward clients (`tls_client_auth`).
    pub tls_client_auth: crate::tls::ClientAuth,
    /// The CAs that issue client certificates (set unless `tls_client_auth` is off).
    pub tls_client_ca: Option<PathBuf>,
    /// USER must be a name of the client's certificate.
    pub tls_client_cert_user: bool,
    /// SNI names clients may ask for (empty: any).
    pub tls_server_names: Vec<String>,
    /// What the transfer log's username field shows.
    pub xferlog_user: crate::xferlog::UserField,
    /// ftpgate's own certificate toward backends that ask for one.
    pub backend_tls_identity: Option<crate::tls::BackendIdentity>,
    /// Control listeners whose every connection starts with a PROXY header.
    pub proxy_protocol_listen: Vec<SocketAddr>,
    /// Networks trusted to send PROXY headers (on those listeners, and on
    /// passive ports, where connections from them must carry one).
    pub proxy_protocol_from: Vec<IpNet>,
    /// Time a PROXY header may take.
    pub proxy_protocol_timeout: Duration,
    /// PROXY header sent on backend control connections.
    pub backend_proxy_protocol: ProxyVersion,
    /// How new sessions are spread over the backends.
    pub backend_policy: crate::backend::policy::Policy,
    /// Named pools besides `backends` (which is the pool `default`).
    pub pools: Vec<Pool>,
    /// The pool of a listener (others use `default`).
    pub pool_for_listener: Vec<(SocketAddr, String)>,
    /// Per-user routing: the pool of each user named (byte for byte),
    /// consulted before `user_lookup`.
    pub user_pool: std::collections::BTreeMap<String, String>,
    /// The pool of users `user_pool` does not name; `None` refuses them.
    pub user_pool_default: Option<String>,
    /// Gateway listeners (transparent interception and `USER name@host`).
    pub gateway_listen: Vec<SocketAddr>,
    /// Where gateway sessions may go (`gateway_allow`, `gateway_deny`).
    pub gateway: crate::gateway::Policy,
    /// Time resolving a `USER name@host` destination may take.
    pub gateway_resolve_timeout: Duration,
    /// Local ports for backend data connections in active mode (`None`: any).
    pub backend_active_ports: Option<(u16, u16)>,
    /// How often backend host names are resolved again.
    pub backend_resolve_interval: Duration,
    /// Plain TCP listeners, by table name.
    pub tcp: Vec<TcpService>,
    /// Per-user routing by the operator's HTTP service (`user_lookup_*`).
    pub user_lookup: Option<LookupSettings>,
    /// The file `sftp_known_hosts` names (required with `sftp://` backends).
    pub sftp_known_hosts_file: Option<PathBuf>,
    /// The host keys it trusts, read when the configuration was validated.
    pub sftp_known_hosts: Option<Arc<crate::sftp::KnownHosts>>,
    /// Per-user keys for SFTP backends, by user name.
    pub sftp_user_key: std::collections::BTreeMap<String, UserKey>,
}

pub use crate::lookup::LookupSettings;

impl BackendSpec {
    /// Whether it was written as a host name (re-resolved while running).
    pub fn is_hostname(&self) -> bool {
        split_backend_name(&self.name)
            .1
            .parse::<SocketAddr>()
            .is_err()
    }

    /// The host as written (without scheme, port or brackets): the name
    /// `sftp_known_hosts` files its keys under.
    pub fn host(&self) -> String {
        backend_host(&self.name)
    }

    /// Its metrics and log label: the name, plus the address for a host
    /// name (each address of a name is a member of its own).
    pub fn label(&self) -> String {
        member_label(&self.name, self.addr)
    }
}

/// The host part of a backend name as written, without scheme, port or
/// brackets (see [`BackendSpec::host`]).
pub fn backend_host(name: &str) -> String {
    let hp = split_backend_name(name).1;
    let host = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// See [`BackendSpec::label`].
pub fn member_label(name: &str, addr: SocketAddr) -> String {
    if split_backend_name(name).1.parse::<SocketAddr>().is_err() {
        format!("{name}@{}", addr.ip())
    } else {
        name.to_owned()
    }
}

impl Config {
    /// This configuration with the backend host names in `resolved`
    /// (name -> its addresses now) expanded to one member per address,
    /// each keeping the weight and drain flag its name had. `None` when
    /// nothing changed. A name missing from `resolved` keeps its members.
    pub fn with_resolved(
        &self,
        resolved: &std::collections::BTreeMap<String, Vec<SocketAddr>>,
    ) -> Option<Config> {
        fn expand(
            specs: &[BackendSpec],
            resolved: &std::collections::BTreeMap<String, Vec<SocketAddr>>,
        ) -> Vec<BackendSpec> {
            let mut out: Vec<BackendSpec> = Vec::new();
            for spec in specs {
                match resolved.get(&spec.name) {
                    Some(addrs) if !addrs.is_empty() => {
                        if out.iter().any(|o| o.name == spec.name) {
                            continue;
                        }
                        out.extend(addrs.iter().map(|&addr| BackendSpec {
                            addr,
                            ..spec.clone()
                        }));
                    }
                    _ => out.push(spec.clone()),
                }
            }
            out
        }
        let mut new = self.clone();
        new.backends = expand(&self.backends, resolved);
        for p in &mut new.pools {
            p.backends = expand(&p.backends, resolved);
        }
        let changed = new.backends != self.backends || new.pools != self.pools;
        changed.then_some(new)
    }

    /// Every pool with its members and policy, `default` first when
    /// `backends` is set.
    pub fn all_pools(&self) -> Vec<Pool> {
        let default = (!self.backends.is_empty()).then(|| Pool {
            name: DEFAULT_POOL.to_owned(),
            backends: self.backends.clone(),
            policy: self.backend_policy,
        });
        default
            .into_iter()
            .chain(self.pools.iter().cloned())
            .collect()
    }

    /// The pool a listener's sessions use when routing is not by user.
    pub fn listener_pool(&self, listener: SocketAddr) -> Option<&str> {
        match self.pool_for_listener.iter().find(|(a, _)| *a == listener) {
            Some((_, name)) => Some(name),
            None => (!self.backends.is_empty()).then_some(DEFAULT_POOL),
        }
    }

    fn policy_of(&self, pool: &str) -> Option<crate::backend::policy::Policy> {
        if pool == DEFAULT_POOL && !self.backends.is_empty() {
            return Some(self.backend_policy);
        }
        self.pools.iter().find(|p| p.name == pool).map(|p| p.policy)
    }

    /// Whether sessions on `listener` pick their backend only after `USER`:
    /// per-user routing is on, or the listener's pool hashes user names.
    pub fn routes_by_user(&self, listener: SocketAddr) -> bool {
        !self.user_pool.is_empty()
            || self.user_lookup.is_some()
            || self
                .listener_pool(listener)
                .and_then(|p| self.policy_of(p))
                .is_some_and(|p| p.needs_user())
    }

    /// Whether FTP is served at all (else only `[tcp.*]` listeners are).
    pub fn serves_ftp(&self) -> bool {
        !(self.listen.is_empty()
            && self.implicit_tls_listen.is_empty()
            && self.proxy_protocol_listen.is_empty()
            && self.gateway_listen.is_empty())
    }

    /// Whether some pool has `sftp://` members.
    pub fn has_sftp(&self) -> bool {
        self.all_pools().iter().any(|p| {
            p.backends
                .iter()
                .any(|b| b.protocol == BackendProtocol::Sftp)
        })
    }

    /// Whether `pool` serves plain TCP listeners (its health checks are a
    /// TCP connect, not an FTP greeting).
    pub fn is_tcp_pool(&self, pool: &str) -> bool {
        self.tcp.iter().any(|t| t.pool == pool)
    }

    /// The pool for `user` on `listener` without asking `user_lookup`;
    /// `None`: the user is refused.
    pub fn pool_for_user(&self, listener: SocketAddr, user: &str) -> Option<&str> {
        if self.user_pool.is_empty() {
            return self.listener_pool(listener);
        }
        self.user_pool
            .get(user)
            .or(self.user_pool_default.as_ref())
            .map(String::as_str)
    }
}

/// A PROXY protocol version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// None.
    Off,
    /// Text.
    V1,
    /// Binary.
    V2,
}
