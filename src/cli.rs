//! Command-line flags. Every config key has a flag of the same name with
//! dashes; flags override the file given with `--config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::file::{read_file, Located, RawConfig};
use crate::config::ConfigError;

/// FTP-aware TCP proxy: makes passive and active FTP work through NAT,
/// firewalls and load balancers.
#[derive(Debug, Parser)]
#[command(name = "ftpgate", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand, ftpgate serves.
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Validate the configuration (file and flags), print the effective
    /// configuration and exit.
    Check,
}

/// Settings shared by serving and `check`; accepted before or after the
/// subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct Settings {
    /// TOML configuration file; flags given as well override its keys.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Control listener, IP:PORT (repeatable). Key: listen.
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub listen: Vec<String>,
    /// Backend FTP server, HOST:PORT (repeatable; round-robin). Key: backends.
    #[arg(long = "backend", global = true, value_name = "HOST:PORT")]
    pub backends: Vec<String>,
    /// Address shown in 227 replies: an IP, a hostname, or "auto" (the address the client connected to). Key: public_address.
    #[arg(long, global = true, value_name = "IP|HOST|auto")]
    pub public_address: Option<String>,
    /// Address for clients in a network, NET=ADDR (repeatable), e.g. 10.0.0.0/8=10.0.0.20. Key: [public_address_for].
    #[arg(long, global = true, value_name = "NET=ADDR")]
    pub public_address_for: Vec<String>,
    /// How often hostnames in public addresses are resolved again. Key: public_address_refresh.
    #[arg(long, global = true, value_name = "DURATION")]
    pub public_address_refresh: Option<String>,
    /// Passive data ports, FIRST-LAST. Key: passive_ports.
    #[arg(long, global = true, value_name = "FIRST-LAST")]
    pub passive_ports: Option<String>,
    /// Local IP the passive ports bind. Key: passive_bind_address.
    #[arg(long, global = true, value_name = "IP")]
    pub passive_bind_address: Option<String>,
    /// Use the address inside a backend's 227 reply. Key: trust_backend_pasv_address.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub trust_backend_pasv_address: Option<bool>,
    /// Networks or addresses ftpgate may connect to for a backend's data besides the backend itself (repeatable). Key: backend_data_networks.
    #[arg(long, global = true, value_name = "NET")]
    pub backend_data_networks: Vec<String>,
    /// Accept data connections from addresses other than the client's. Key: allow_foreign_data_address.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_foreign_data_address: Option<bool>,
    /// Accept PORT and EPRT. Key: active_mode.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub active_mode: Option<bool>,
    /// Replace a private PORT/EPRT address with the client's control address. Key: active_nat_fix.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub active_nat_fix: Option<bool>,
    /// How ftpgate reaches the backend for data: passive or active. Key: backend_data_mode.
    #[arg(long, global = true, value_name = "passive|active")]
    pub backend_data_mode: Option<String>,
    /// Connect to active-mode clients from port 20. Key: active_source_port_20.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub active_source_port_20: Option<bool>,
    /// How long a prepared passive port waits for the client. Key: pending_data_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub pending_data_timeout: Option<String>,
    /// Timeout of ftpgate's own data connects. Key: data_connect_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub data_connect_timeout: Option<String>,
    /// Cut a transfer that moves no byte this long. Key: data_stall_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub data_stall_timeout: Option<String>,
    /// Close clients that have not logged in by then. Key: login_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub login_timeout: Option<String>,
    /// Close clients idle this long (no transfer running). Key: idle_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Backend control connect timeout. Key: backend_connect_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub backend_connect_timeout: Option<String>,
    /// How long to wait for the backend's answer to ftpgate's own commands. Key: backend_reply_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub backend_reply_timeout: Option<String>,
    /// Longest client command line in bytes. Key: max_line_length.
    #[arg(long, global = true, value_name = "BYTES")]
    pub max_line_length: Option<i64>,
    /// Largest relay buffer per direction, in bytes. Key: relay_buffer_max.
    #[arg(long, global = true, value_name = "BYTES")]
    pub relay_buffer_max: Option<i64>,
    /// TCP keepalive idle time on control connections. Key: tcp_keepalive.
    #[arg(long, global = true, value_name = "DURATION")]
    pub tcp_keepalive: Option<String>,
    /// Log format: text or json. Key: log_format.
    #[arg(long, global = true, value_name = "text|json")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or ftpgate=debug (RUST_LOG overrides). Key: log_level.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Admin HTTP listener for /metrics, /healthz and /readyz, IP:PORT (off when unset). Key: admin_listen.
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub admin_listen: Option<String>,
    /// Transfer log file in xferlog format (off when unset). Key: xferlog.
    #[arg(long, global = true, value_name = "FILE")]
    pub xferlog: Option<String>,
    /// On SIGTERM/SIGINT, how long running sessions and transfers may finish. Key: shutdown_drain_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub shutdown_drain_timeout: Option<String>,
    /// How long to wait for a backend's greeting. Key: greeting_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub greeting_timeout: Option<String>,
    /// Most concurrent sessions in total. Key: max_sessions.
    #[arg(long, global = true, value_name = "N")]
    pub max_sessions: Option<i64>,
    /// Most concurrent sessions per client address. Key: max_sessions_per_client.
    #[arg(long, global = true, value_name = "N")]
    pub max_sessions_per_client: Option<i64>,
    /// Most new connections per second per client address. Key: max_connection_rate_per_client.
    #[arg(long, global = true, value_name = "N")]
    pub max_connection_rate_per_client: Option<i64>,
    /// Failed logins answered at once before each further one is delayed. Key: login_failures_before_delay.
    #[arg(long, global = true, value_name = "N")]
    pub login_failures_before_delay: Option<i64>,
    /// Delay of each failed-login reply past that count. Key: login_failure_delay.
    #[arg(long, global = true, value_name = "DURATION")]
    pub login_failure_delay: Option<String>,
    /// Failed logins after which the session is closed (421). Key: max_login_failures.
    #[arg(long, global = true, value_name = "N")]
    pub max_login_failures: Option<i64>,
    /// Check backends by FTP greeting. Key: health_check.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub health_check: Option<bool>,
    /// Time between health checks of a backend. Key: health_check_interval.
    #[arg(long, global = true, value_name = "DURATION")]
    pub health_check_interval: Option<String>,
    /// Time between health checks of a backend that has never been up (a server starting with ftpgate). Key: health_check_fast_interval.
    #[arg(long, global = true, value_name = "DURATION")]
    pub health_check_fast_interval: Option<String>,
    /// How long one health check may take. Key: health_check_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub health_check_timeout: Option<String>,
    /// Successful checks before a down backend is up. Key: health_check_rise.
    #[arg(long, global = true, value_name = "N")]
    pub health_check_rise: Option<i64>,
    /// Failed checks before an up backend is down. Key: health_check_fall.
    #[arg(long, global = true, value_name = "N")]
    pub health_check_fall: Option<i64>,
    /// Health checks complete AUTH TLS (needs backend_tls explicit). Key: health_check_tls.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub health_check_tls: Option<bool>,
    /// Health checks log in as this user. Key: health_check_user.
    #[arg(long, global = true, value_name = "USER")]
    pub health_check_user: Option<String>,
    /// File whose first line is the health-check password. Key: health_check_password_file.
    #[arg(long, global = true, value_name = "PATH")]
    pub health_check_password_file: Option<String>,
    /// After binding, switch to this user (name or uid). Key: user.
    #[arg(long, global = true, value_name = "USER")]
    pub user: Option<String>,
    /// After binding, switch to this group (default: the user's group). Key: group.
    #[arg(long, global = true, value_name = "GROUP")]
    pub group: Option<String>,
    /// Explicit FTPS (AUTH TLS) on the `listen` listeners: off, optional or required. Key: tls.
    #[arg(long, global = true, value_name = "off|optional|required")]
    pub tls: Option<String>,
    /// Certificate chain shown to clients, PEM. Key: tls_cert.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// Private key of that certificate, PEM. Key: tls_key.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Implicit FTPS listener, IP:PORT (repeatable; conventionally port 990). Key: implicit_tls_listen.
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub implicit_tls_listen: Vec<String>,
    /// Refuse protected data connections that do not resume the control session. Key: tls_require_data_resumption.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_require_data_resumption: Option<bool>,
    /// Time a TLS handshake may take. Key: tls_handshake_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub tls_handshake_timeout: Option<String>,
    /// Lowest TLS version offered to clients: 1.2 or 1.3. Key: tls_min_version.
    #[arg(long, global = true, value_name = "1.2|1.3")]
    pub tls_min_version: Option<String>,
    /// TLS toward the backends: off, explicit (AUTH TLS) or implicit. Key: backend_tls.
    #[arg(long, global = true, value_name = "off|explicit|implicit")]
    pub backend_tls: Option<String>,
    /// CA certificates that verify backends, PEM. Key: backend_tls_ca.
    #[arg(long, global = true, value_name = "FILE")]
    pub backend_tls_ca: Option<String>,
    /// The backend certificate to accept (pinned), PEM. Key: backend_tls_pin.
    #[arg(long, global = true, value_name = "FILE")]
    pub backend_tls_pin: Option<String>,
    /// Verify backend certificates (false: accept any, for self-signed servers). Key: backend_tls_verify.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub backend_tls_verify: Option<bool>,
    /// Name backend certificates must carry (default: the backend's host). Key: backend_tls_server_name.
    #[arg(long, global = true, value_name = "NAME")]
    pub backend_tls_server_name: Option<String>,
    /// Protect backend data connections with TLS (PROT P). Key: backend_tls_protect_data.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub backend_tls_protect_data: Option<bool>,
    /// Client certificates: off, optional or required (verified against tls_client_ca). Key: tls_client_auth.
    #[arg(long, global = true, value_name = "off|optional|required")]
    pub tls_client_auth: Option<String>,
    /// CA certificates that issue client certificates, PEM. Key: tls_client_ca.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// USER must be the client certificate's CN or one of its email addresses. Key: tls_client_cert_user.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_client_cert_user: Option<bool>,
    /// A host name clients may ask for with SNI (repeatable; others are refused). Key: tls_server_names.
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_server_names: Vec<String>,
    /// The transfer log's user field: login or certificate (the client certificate's subject). Key: xferlog_user.
    #[arg(long, global = true, value_name = "login|certificate")]
    pub xferlog_user: Option<String>,
    /// ftpgate's client certificate toward backends that ask for one, PEM. Key: backend_tls_client_cert.
    #[arg(long, global = true, value_name = "FILE")]
    pub backend_tls_client_cert: Option<String>,
    /// Its private key, PEM. Key: backend_tls_client_key.
    #[arg(long, global = true, value_name = "FILE")]
    pub backend_tls_client_key: Option<String>,
    /// Control listener whose clients arrive through a PROXY-protocol balancer, IP:PORT (repeatable). Key: proxy_protocol_listen.
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub proxy_protocol_listen: Vec<String>,
    /// Networks trusted to send PROXY protocol headers (repeatable). Key: proxy_protocol_from.
    #[arg(long, global = true, value_name = "NET")]
    pub proxy_protocol_from: Vec<String>,
    /// Time a PROXY protocol header may take to arrive. Key: proxy_protocol_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub proxy_protocol_timeout: Option<String>,
    /// Send a PROXY protocol header to backends: off, v1 or v2. Key: backend_proxy_protocol.
    #[arg(long, global = true, value_name = "off|v1|v2")]
    pub backend_proxy_protocol: Option<String>,
    /// How sessions are spread: round_robin, least_connections or source_hash. Key: backend_policy.
    #[arg(long, global = true, value_name = "POLICY")]
    pub backend_policy: Option<String>,
    /// Weight of a backend, HOST:PORT=N (repeatable; default 1, 0 = standby). Key: [backend_weights].
    #[arg(long = "backend-weight", global = true, value_name = "HOST:PORT=N")]
    pub backend_weights: Vec<String>,
    /// A backend that takes no new sessions (repeatable). Key: backend_drain.
    #[arg(long = "backend-drain", global = true, value_name = "HOST:PORT")]
    pub backend_drain: Vec<String>,
    /// TLS policy of one listener, IP:PORT=off|optional|required (repeatable). Key: [tls_for_listener].
    #[arg(
        long = "tls-for-listener",
        global = true,
        value_name = "IP:PORT=POLICY"
    )]
    pub tls_for_listener: Vec<String>,
    /// A named backend pool, NAME=HOST:PORT[,HOST:PORT...] (repeatable; policy round_robin). Key: [pool.NAME].
    #[arg(long = "pool", global = true, value_name = "NAME=HOST:PORT,...")]
    pub pool: Vec<String>,
    /// The pool of one listener, IP:PORT=NAME (repeatable; default: `backends`). Key: [pool_for_listener].
    #[arg(long = "pool-for-listener", global = true, value_name = "IP:PORT=NAME")]
    pub pool_for_listener: Vec<String>,
    /// Route a user to a pool, USER=NAME (repeatable; turns on per-user routing). Key: [user_pool].
    #[arg(long = "user-pool", global = true, value_name = "USER=NAME")]
    pub user_pool: Vec<String>,
    /// Pool of users not in [user_pool] (unset: they are refused with 530). Key: user_pool_default.
    #[arg(long, global = true, value_name = "NAME")]
    pub user_pool_default: Option<String>,
    /// Gateway listener for a client network, IP:PORT (repeat): redirected connections go to their original destination, others log in as USER name@host. Key: gateway_listen.
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub gateway_listen: Vec<String>,
    /// Destination a gateway session may reach: network, address, host or .domain (repeat; none by default). Key: gateway_allow.
    #[arg(long, global = true, value_name = "NET|HOST")]
    pub gateway_allow: Vec<String>,
    /// Destination no gateway session may reach; wins over gateway_allow (repeat). Key: gateway_deny.
    #[arg(long, global = true, value_name = "NET|HOST")]
    pub gateway_deny: Vec<String>,
    /// Time resolving a USER name@host destination may take. Key: gateway_resolve_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub gateway_resolve_timeout: Option<String>,
    /// Ports ftpgate listens on for backend data connections in active mode, FIRST-LAST (default: any free port). Key: backend_active_ports.
    #[arg(long, global = true, value_name = "FIRST-LAST")]
    pub backend_active_ports: Option<String>,
    /// How often backend host names are resolved again (a name with several addresses is one member per address). Key: backend_resolve_interval.
    #[arg(long, global = true, value_name = "DURATION")]
    pub backend_resolve_interval: Option<String>,
    /// Ask this HTTP service for the route of users [user_pool] does not name; {user}, {client_ip} and {listener} are filled in, encoded (turns on per-user routing). Key: user_lookup_url.
    #[arg(long, global = true, value_name = "URL")]
    pub user_lookup_url: Option<String>,
    /// Time one user lookup may take. Key: user_lookup_timeout.
    #[arg(long, global = true, value_name = "DURATION")]
    pub user_lookup_timeout: Option<String>,
    /// How long a user lookup's route is kept (0: not kept). Key: user_lookup_cache_ttl.
    #[arg(long, global = true, value_name = "DURATION")]
    pub user_lookup_cache_ttl: Option<String>,
    /// How long an unknown user (404) is kept (0: not kept; at most user_lookup_cache_ttl). Key: user_lookup_unknown_ttl.
    #[arg(long, global = true, value_name = "DURATION")]
    pub user_lookup_unknown_ttl: Option<String>,
    /// Most user lookup answers kept. Key: user_lookup_cache_size.
    #[arg(long, global = true, value_name = "N")]
    pub user_lookup_cache_size: Option<i64>,
    /// Pool of users whose lookup failed (unset: they get 421). Key: user_lookup_fallback_pool.
    #[arg(long, global = true, value_name = "NAME")]
    pub user_lookup_fallback_pool: Option<String>,
    /// Let the lookup name backends outside every pool. Key: user_lookup_any_backend.
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub user_lookup_any_backend: Option<bool>,
    /// CA certificates (PEM) that verify an https:// lookup service (default: the system's). Key: user_lookup_ca.
    #[arg(long, global = true, value_name = "FILE")]
    pub user_lookup_ca: Option<String>,
    /// OpenSSH known_hosts file with the host keys of the sftp:// backends (required with them). Key: sftp_known_hosts.
    #[arg(long, global = true, value_name = "FILE")]
    pub sftp_known_hosts: Option<String>,
    /// A user's private key for sftp:// backends, USER=FILE (repeatable; an encrypted OpenSSH key whose passphrase is the user's FTP password). Key: [sftp_user_key].
    #[arg(long = "sftp-user-key", global = true, value_name = "USER=FILE")]
    pub sftp_user_key: Vec<String>,
    /// Plain TCP listeners in front of a pool, NAME=IP:PORT[,IP:PORT...]@POOL (repeatable; no FTP parsing, e.g. for SFTP). Key: [tcp.NAME].
    #[arg(long = "tcp", global = true, value_name = "NAME=IP:PORT,...@POOL")]
    pub tcp: Vec<String>,
}

impl Settings {
    /// The file's settings with the flags laid over them.
    pub fn raw_config(&self) -> Result<RawConfig, ConfigError> {
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => RawConfig::default(),
        };
        Ok(file.overlay(self.flags()))
    }

    fn flags(&self) -> RawConfig {
        fn opt<T: Clone>(flag: &'static str, v: &Option<T>) -> Option<Located<T>> {
            v.clone().map(|v| Located::flag(flag, v))
        }
        fn list(flag: &'static str, v: &[String]) -> Option<Located<Vec<String>>> {
            (!v.is_empty()).then(|| Located::flag(flag, v.to_vec()))
        }
        /// `KEY=VALUE` flags as a table (a missing `=` leaves the value empty).
        fn table(
            flag: &'static str,
            v: &[String],
        ) -> Option<Located<std::collections::BTreeMap<String, String>>> {
            (!v.is_empty()).then(|| {
                let pairs = v.iter().map(|r| match r.split_once('=') {
                    Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
                    None => (r.clone(), String::new()),
                });
                Located::flag(flag, pairs.collect())
            })
        }
        RawConfig {
            listen: list("--listen", &self.listen),
            backends: list("--backend", &self.backends),
            public_address: opt("--public-address", &self.public_address),
            public_address_for: (!self.public_address_for.is_empty()).then(|| {
                Located::flag(
                    "--public-address-for",
                    self.public_address_for
                        .iter()
                        .map(|r| match r.split_once('=') {
                            Some((n, a)) => (n.to_owned(), a.to_owned()),
                            None => (r.clone(), String::new()),
                        })
                        .collect(),
                )
            }),
            public_address_refresh: opt("--public-address-refresh", &self.public_address_refresh),
            passive_ports: opt("--passive-ports", &self.passive_ports),
            passive_bind_address: opt("--passive-bind-address", &self.passive_bind_address),
            trust_backend_pasv_address: opt(
                "--trust-backend-pasv-address",
                &self.trust_backend_pasv_address,
            ),
            backend_data_networks: list("--backend-data-networks", &self.backend_data_networks),
            allow_foreign_data_address: opt(
                "--allow-foreign-data-address",
                &self.allow_foreign_data_address,
            ),
            active_mode: opt("--active-mode", &self.active_mode),
            active_nat_fix: opt("--active-nat-fix", &self.active_nat_fix),
            backend_data_mode: opt("--backend-data-mode", &self.backend_data_mode),
            active_source_port_20: opt("--active-source-port-20", &self.active_source_port_20),
            pending_data_timeout: opt("--pending-data-timeout", &self.pending_data_timeout),
            data_connect_timeout: opt("--data-connect-timeout", &self.data_connect_timeout),
            data_stall_timeout: opt("--data-stall-timeout", &self.data_stall_timeout),
            login_timeout: opt("--login-timeout", &self.login_timeout),
            idle_timeout: opt("--idle-timeout", &self.idle_timeout),
            backend_connect_timeout: opt(
                "--backend-connect-timeout",
                &self.backend_connect_timeout,
            ),
            backend_reply_timeout: opt("--backend-reply-timeout", &self.backend_reply_timeout),
            max_line_length: opt("--max-line-length", &self.max_line_length),
            relay_buffer_max: opt("--relay-buffer-max", &self.relay_buffer_max),
            tcp_keepalive: opt("--tcp-keepalive", &self.tcp_keepalive),
            log_format: opt("--log-format", &self.log_format),
            log_level: opt("--log-level", &self.log_level),
            admin_listen: opt("--admin-listen", &self.admin_listen),
            xferlog: opt("--xferlog", &self.xferlog),
            shutdown_drain_timeout: opt("--shutdown-drain-timeout", &self.shutdown_drain_timeout),
            greeting_timeout: opt("--greeting-timeout", &self.greeting_timeout),
            max_sessions: opt("--max-sessions", &self.max_sessions),
            max_sessions_per_client: opt(
                "--max-sessions-per-client",
                &self.max_sessions_per_client,
            ),
            max_connection_rate_per_client: opt(
                "--max-connection-rate-per-client",
                &self.max_connection_rate_per_client,
            ),
            login_failures_before_delay: opt(
                "--login-failures-before-delay",
                &self.login_failures_before_delay,
            ),
            login_failure_delay: opt("--login-failure-delay", &self.login_failure_delay),
            max_login_failures: opt("--max-login-failures", &self.max_login_failures),
            health_check: opt("--health-check", &self.health_check),
            health_check_interval: opt("--health-check-interval", &self.health_check_interval),
            health_check_fast_interval: opt(
                "--health-check-fast-interval",
                &self.health_check_fast_interval,
            ),
            health_check_timeout: opt("--health-check-timeout", &self.health_check_timeout),
            health_check_rise: opt("--health-check-rise", &self.health_check_rise),
            health_check_fall: opt("--health-check-fall", &self.health_check_fall),
            health_check_tls: opt("--health-check-tls", &self.health_check_tls),
            health_check_user: opt("--health-check-user", &self.health_check_user),
            health_check_password_file: opt(
                "--health-check-password-file",
                &self.health_check_password_file,
            ),
            user: opt("--user", &self.user),
            group: opt("--group", &self.group),
            tls: opt("--tls", &self.tls),
            tls_cert: opt("--tls-cert", &self.tls_cert),
            tls_key: opt("--tls-key", &self.tls_key),
            implicit_tls_listen: list("--implicit-tls-listen", &self.implicit_tls_listen),
            tls_require_data_resumption: opt(
                "--tls-require-data-resumption",
                &self.tls_require_data_resumption,
            ),
            tls_handshake_timeout: opt("--tls-handshake-timeout", &self.tls_handshake_timeout),
            tls_min_version: opt("--tls-min-version", &self.tls_min_version),
            backend_tls: opt("--backend-tls", &self.backend_tls),
            backend_tls_ca: opt("--backend-tls-ca", &self.backend_tls_ca),
            backend_tls_pin: opt("--backend-tls-pin", &self.backend_tls_pin),
            backend_tls_verify: opt("--backend-tls-verify", &self.backend_tls_verify),
            backend_tls_server_name: opt(
                "--backend-tls-server-name",
                &self.backend_tls_server_name,
            ),
            backend_tls_protect_data: opt(
                "--backend-tls-protect-data",
                &self.backend_tls_protect_data,
            ),
            tls_client_auth: opt("--tls-client-auth", &self.tls_client_auth),
            tls_client_ca: opt("--tls-client-ca", &self.tls_client_ca),
            tls_client_cert_user: opt("--tls-client-cert-user", &self.tls_client_cert_user),
            tls_server_names: list("--tls-server-names", &self.tls_server_names),
            xferlog_user: opt("--xferlog-user", &self.xferlog_user),
            backend_tls_client_cert: opt(
                "--backend-tls-client-cert",
                &self.backend_tls_client_cert,
            ),
            backend_tls_client_key: opt("--backend-tls-client-key", &self.backend_tls_client_key),
            proxy_protocol_listen: list("--proxy-protocol-listen", &self.proxy_protocol_listen),
            proxy_protocol_from: list("--proxy-protocol-from", &self.proxy_protocol_from),
            proxy_protocol_timeout: opt("--proxy-protocol-timeout", &self.proxy_protocol_timeout),
            backend_proxy_protocol: opt("--backend-proxy-protocol", &self.backend_proxy_protocol),
            backend_policy: opt("--backend-policy", &self.backend_policy),
            backend_weights: (!self.backend_weights.is_empty()).then(|| {
                Located::flag(
                    "--backend-weight",
                    self.backend_weights
                        .iter()
                        .map(|w| match w.rsplit_once('=') {
                            Some((b, n)) => (b.to_owned(), n.trim().parse().unwrap_or(-1)),
                            None => (w.clone(), -1),
                        })
                        .collect(),
                )
            }),
            backend_drain: list("--backend-drain", &self.backend_drain),
            tls_for_listener: table("--tls-for-listener", &self.tls_for_listener),
            pool: table("--pool", &self.pool).map(|t| {
                t.value
                    .into_iter()
                    .map(|(name, members)| {
                        let backends = members
                            .split(',')
                            .map(|m| m.trim().to_owned())
                            .filter(|m| !m.is_empty())
                            .collect();
                        let pool = crate::config::file::PoolToml {
                            backends,
                            ..Default::default()
                        };
                        (name, Located::flag("--pool", pool))
                    })
                    .collect()
            }),
            pool_for_listener: table("--pool-for-listener", &self.pool_for_listener),
            user_pool: table("--user-pool", &self.user_pool),
            user_pool_default: opt("--user-pool-default", &self.user_pool_default),
            gateway_listen: list("--gateway-listen", &self.gateway_listen),
            gateway_allow: list("--gateway-allow", &self.gateway_allow),
            gateway_deny: list("--gateway-deny", &self.gateway_deny),
            gateway_resolve_timeout: opt(
                "--gateway-resolve-timeout",
                &self.gateway_resolve_timeout,
            ),
            backend_active_ports: opt("--backend-active-ports", &self.backend_active_ports),
            backend_resolve_interval: opt(
                "--backend-resolve-interval",
                &self.backend_resolve_interval,
            ),
            user_lookup_url: opt("--user-lookup-url", &self.user_lookup_url),
            user_lookup_timeout: opt("--user-lookup-timeout", &self.user_lookup_timeout),
            user_lookup_cache_ttl: opt("--user-lookup-cache-ttl", &self.user_lookup_cache_ttl),
            user_lookup_unknown_ttl: opt(
                "--user-lookup-unknown-ttl",
                &self.user_lookup_unknown_ttl,
            ),
            user_lookup_cache_size: opt("--user-lookup-cache-size", &self.user_lookup_cache_size),
            user_lookup_fallback_pool: opt(
                "--user-lookup-fallback-pool",
                &self.user_lookup_fallback_pool,
            ),
            user_lookup_any_backend: opt(
                "--user-lookup-any-backend",
                &self.user_lookup_any_backend,
            ),
            user_lookup_ca: opt("--user-lookup-ca", &self.user_lookup_ca),
            sftp_known_hosts: opt("--sftp-known-hosts", &self.sftp_known_hosts),
            sftp_user_key: table("--sftp-user-key", &self.sftp_user_key),
            tcp: table("--tcp", &self.tcp).map(|t| {
                t.value
                    .into_iter()
                    .map(|(name, spec)| {
                        let (addrs, pool) = spec.rsplit_once('@').unwrap_or((&spec, ""));
                        let tcp = crate::config::file::TcpToml {
                            listen: addrs
                                .split(',')
                                .map(|a| a.trim().to_owned())
                                .filter(|a| !a.is_empty())
                                .collect(),
                            pool: pool.trim().to_owned(),
                        };
                        (name, Located::flag("--tcp", tcp))
                    })
                    .collect()
            }),
        }
    }
}
