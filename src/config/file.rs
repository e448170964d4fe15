//! Raw configuration as written: the TOML file and the command-line flags.
//!
//! Every value carries where it came from ([`Origin`]) so that `validate/`
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
    backend_data_networks: Vec<String>,
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
    health_check_fast_interval: String,
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
    tls_client_auth: String,
    tls_client_ca: String,
    tls_client_cert_user: bool,
    tls_server_names: Vec<String>,
    xferlog_user: String,
    backend_tls_client_cert: String,
    backend_tls_client_key: String,
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
    user_lookup_url: String,
    user_lookup_timeout: String,
    user_lookup_cache_ttl: String,
    user_lookup_unknown_ttl: String,
    user_lookup_cache_size: i64,
    user_lookup_fallback_pool: String,
    user_lookup_any_backend: bool,
    user_lookup_ca: String,
    sftp_known_hosts: String,
    sftp_user_key: BTreeMap<String, String>,
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

/// Says serde's messages in an operator's words: an unknown key names the
/// known key nearest to it (not all of them), and types are named as the
/// file writes them (`an integer`, not `i64`).
fn operator_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let Some((unknown, known)) = rest.split_once('`') else {
            return message.to_owned();
        };
        // "..., expected one of `a`, `b`" or "..., expected `a`": the keys
        // of the table the unknown one is in.
        let keys: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
        return match nearest(unknown, &keys) {
            Some(near) => format!("unknown key `{unknown}`; did you mean `{near}`?"),
            // A small table's keys fit on the line; the top level's do not.
            None if keys.len() <= 8 => format!(
                "unknown key `{unknown}` (keys here: {})",
                keys.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!(
                "unknown key `{unknown}` (the README's configuration reference lists every key)"
            ),
        };
    }
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let said = match expected.trim() {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        "a boolean" => "a boolean (true or false)",
        "a string" => "a string in quotes",
        "a sequence" => "a list, e.g. [\"...\"]",
        "a map" => "a table",
        t if t.starts_with("struct ") => "a table",
        _ => return message.to_owned(),
    };
    format!("{head}, expected {said}")
}

/// The key in `keys` nearest to `typed` by edit distance (adjacent swaps
/// count once), if it is near enough to be a typo: at most a third of the
/// typed length (at least one edit).
fn nearest<'a>(typed: &str, keys: &[&'a str]) -> Option<&'a str> {
    let limit = (typed.chars().count() / 3).max(1);
    keys.iter()
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of two adjacent characters each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
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
        let mut message = operator_message(e.message());
        // Type errors ("invalid type: string, expected a boolean") do not
        // name the key; the line they point at does.
        if !message.starts_with("unknown key") {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse_str(Path::new("t.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_key_names_the_nearest_one_only() {
        let e = error("listen = [\"127.0.0.1:21\"]\npassve_ports = \"1-2\"\n");
        assert_eq!(
            e,
            "t.toml:2: unknown key `passve_ports`; did you mean `passive_ports`?"
        );
        let e = error("health_check_intervall = \"5s\"\n");
        assert!(e.ends_with("did you mean `health_check_interval`?"), "{e}");
        // Swapped letters are one edit.
        let e = error("lsiten = []\n");
        assert!(e.ends_with("did you mean `listen`?"), "{e}");
        // Inside a table: its own keys.
        let e = error("[pool.a]\nbackends = []\npolcy = \"round_robin\"\n");
        assert!(e.ends_with("did you mean `policy`?"), "{e}");
        // A small table's keys are listed when none is near.
        let e = error("[pool.a]\nbackends = []\nmembers = []\n");
        assert!(
            e.ends_with(
                "unknown key `members` (keys here: `backends`, `policy`, `weights`, `drain`)"
            ),
            "{e}"
        );
        // Nothing near: no guess, and never the whole list.
        let e = error("frobnicate = 1\n");
        assert!(e.starts_with("t.toml:1: unknown key `frobnicate` ("), "{e}");
        assert!(!e.contains("passive_ports"), "{e}");
    }

    #[test]
    fn wrong_types_are_said_in_words() {
        let cases = [
            (
                "max_line_length = \"4k\"\n",
                "max_line_length: invalid type: string \"4k\", expected an integer",
            ),
            (
                "max_sessions = 2.5\n",
                "max_sessions: invalid type: floating point `2.5`, expected an integer",
            ),
            (
                "active_mode = \"yes\"\n",
                "active_mode: invalid type: string \"yes\", expected a boolean (true or false)",
            ),
            (
                "public_address = 3\n",
                "public_address: invalid type: integer `3`, expected a string in quotes",
            ),
            (
                "listen = \"127.0.0.1:21\"\n",
                "listen: invalid type: string \"127.0.0.1:21\", expected a list",
            ),
            (
                "user_pool = 1\n",
                "user_pool: invalid type: integer `1`, expected a table",
            ),
        ];
        for (text, want) in cases {
            let e = error(text);
            assert!(e.starts_with("t.toml:1: "), "{e}");
            assert!(e.contains(want), "{e:?} should contain {want:?}");
            for rust in ["i64", "u64", "sequence", "map", "struct"] {
                assert!(!e.contains(rust), "{e:?} says {rust}");
            }
        }
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("passve_ports", "passive_ports"), 1);
        assert_eq!(edit_distance("lsiten", "listen"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
