//! Raw configuration as written: the TOML file and the command-line flags.
//!
//! Every value carries where it came from ([`Origin`]) so that `validate.rs`
//! can name the file, key and line (or the flag) of a mistake. Unknown keys
//! are rejected by serde. Nothing outside `config` reads these types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// Where a raw value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Line `line` (1-based) of a config file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
    },
    /// A command-line flag such as `--passive-ports`.
    Flag(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{}", path.display(), line),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A raw value and its origin.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The value as written.
    pub value: T,
    /// Where it was written.
    pub origin: Origin,
}

impl<T> Located<T> {
    /// A value set by a flag.
    pub fn flag(flag: &'static str, value: T) -> Self {
        Located {
            value,
            origin: Origin::Flag(flag),
        }
    }
}

/// Declares every simple setting once: the TOML file's shape (serde, field
/// names are the config keys), [`RawConfig`], and the file-to-raw and overlay
/// plumbing. `public_address_for`, `pool` and `tcp` (tables) are written out
/// by hand.
macro_rules! settings {
    ($($key:ident : $ty:ty),* $(,)?) => {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileToml {
            public_address_for: Option<Spanned<BTreeMap<String, String>>>,
            // toml cannot span a table of tables as a whole: each pool is spanned.
            pool: Option<BTreeMap<String, Spanned<PoolToml>>>,
            tcp: Option<BTreeMap<String, Spanned<TcpToml>>>,
            $($key: Option<Spanned<$ty>>,)*
        }

        /// Every setting, each optional; file values with flags laid over them.
        #[derive(Debug, Default, Clone)]
        #[allow(missing_docs)]
        pub struct RawConfig {
            pub public_address_for: Option<Located<Vec<(String, String)>>>,
            /// `[pool.NAME]` tables, each where it was written.
            pub pool: Option<BTreeMap<String, Located<PoolToml>>>,
            /// `[tcp.NAME]` tables, each where it was written.
            pub tcp: Option<BTreeMap<String, Located<TcpToml>>>,
            $(pub $key: Option<Located<$ty>>,)*
        }

        impl RawConfig {
            fn from_file(f: FileToml, loc: impl Fn(std::ops::Range<usize>) -> Origin) -> RawConfig {
                RawConfig {
                    public_address_for: f.public_address_for.map(|s| {
                        let origin = loc(s.span());
                        Located { value: s.into_inner().into_iter().collect(), origin }
                    }),
                    pool: f.pool.map(|pools| {
                        pools
                            .into_iter()
                            .map(|(name, s)| {
                                let origin = loc(s.span());
                                (name, Located { value: s.into_inner(), origin })
                            })
                            .collect()
                    }),
                    tcp: f.tcp.map(|tables| {
                        tables
                            .into_iter()
                            .map(|(name, s)| {
                                let origin = loc(s.span());
                                (name, Located { value: s.into_inner(), origin })
                            })
                            .collect()
                    }),
                    $($key: f.$key.map(|s| {
                        let origin = loc(s.span());
                        Located { value: s.into_inner(), origin }
                    }),)*
                }
            }

            /// Lays `over` (flags) on top of `self` (file): a value set in `over` wins.
            pub fn overlay(self, over: RawConfig) -> RawConfig {
                RawConfig {
                    public_address_for: over.public_address_for.or(self.public_address_for),
                    pool: over.pool.or(self.pool),
                    tcp: over.tcp.or(self.tcp),
                    $($key: over.$key.or(self.$key),)*
                }
            }
        }
    };
}

settings! {
    listen: Vec<String>,
    backends: Vec<String>,
    public_address: String,
    public_address_refresh: String,
    passive_ports: String,
    passive_bind_address: String,
    trust_backend_pasv_address: bool,
    allow_foreign_data_address: bool,
    active_mode: bool,
    active_nat_fix: bool,
    backend_data_mode: String,
    active_source_port_20: bool,
    pending_data_timeout: String,
    data_connect_timeout: String,
    data_stall_timeout: String,
    greeting_timeout: String,
    login_timeout: String,
    idle_timeout: String,
    backend_connect_timeout: String,
    backend_reply_timeout: String,
    max_line_length: i64,
    relay_buffer_max: i64,
    tcp_keepalive: String,
    log_format: String,
    log_level: String,
    admin_listen: String,
    xferlog: String,
    shutdown_drain_timeout: String,
    max_sessions: i64,
    max_sessions_per_client: i64,
    max_connection_rate_per_client: i64,
    login_failures_before_delay: i64,
    login_failure_delay: String,
    max_login_failures: i64,
    health_check: bool,
    health_check_interval: String,
    health_check_timeout: String,
    health_check_rise: i64,
    health_check_fall: i64,
    health_check_tls: bool,
    health_check_user: String,
    health_check_password_file: String,
    user: String,
    group: String,
    tls: String,
    tls_cert: String,
    tls_key: String,
    implicit_tls_listen: Vec<String>,
    tls_require_data_resumption: bool,
    tls_handshake_timeout: String,
    tls_min_version: String,
    backend_tls: String,
    backend_tls_ca: String,
    backend_tls_pin: String,
    backend_tls_verify: bool,
    backend_tls_server_name: String,
    backend_tls_protect_data: bool,
    proxy_protocol_listen: Vec<String>,
    proxy_protocol_from: Vec<String>,
    proxy_protocol_timeout: String,
    backend_proxy_protocol: String,
    backend_policy: String,
    backend_weights: BTreeMap<String, i64>,
    backend_drain: Vec<String>,
    tls_for_listener: BTreeMap<String, String>,
    pool_for_listener: BTreeMap<String, String>,
    user_pool: BTreeMap<String, String>,
    user_pool_default: String,
    gateway_listen: Vec<String>,
    gateway_allow: Vec<String>,
    gateway_deny: Vec<String>,
    gateway_resolve_timeout: String,
    backend_active_ports: String,
    backend_resolve_interval: String,
}

/// One `[pool.NAME]` table: a named set of backends with its own policy.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolToml {
    /// Members, `host:port`.
    pub backends: Vec<String>,
    /// Selection policy (default round_robin).
    pub policy: Option<String>,
    /// Member weights by name (default 1, 0 = standby).
    pub weights: Option<BTreeMap<String, i64>>,
    /// Members that take no new sessions.
    pub drain: Option<Vec<String>>,
}

/// One `[tcp.NAME]` table: plain TCP listeners relaying to a pool's members.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpToml {
    /// Addresses to listen on, `IP:PORT`.
    pub listen: Vec<String>,
    /// The `[pool.NAME]` whose members serve the connections.
    pub pool: String,
}

/// A file that could not be read or parsed as TOML of the right shape.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 if unknown.
        line: usize,
        /// The parser's explanation, naming the key.
        message: String,
    },
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads a config file.
pub fn read_file(path: &Path) -> Result<RawConfig, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(path, &text)
}

/// Parses config text; `path` is used in messages only.
pub fn parse_str(path: &Path, text: &str) -> Result<RawConfig, FileError> {
    let f: FileToml = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        let mut message = e.message().to_owned();
        // Type errors ("invalid type: string, expected a boolean") do not
        // name the key; the line they point at does.
        if !message.contains('`') {
            let key = text
                .lines()
                .nth(line.saturating_sub(1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().trim_matches('"'))
                .filter(|k| !k.is_empty());
            if let Some(key) = key {
                message = format!("{key}: {message}");
            }
        }
        FileError::Parse {
            path: path.to_owned(),
            line,
            message,
        }
    })?;
    let loc = |span: std::ops::Range<usize>| Origin::File {
        path: path.to_owned(),
        line: line_of(text, span.start),
    };
    Ok(RawConfig::from_file(f, loc))
}
