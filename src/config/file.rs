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

/// The TOML file's shape (serde). Field names are the config keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    listen: Option<Spanned<Vec<String>>>,
    backends: Option<Spanned<Vec<String>>>,
    public_address: Option<Spanned<String>>,
    public_address_for: Option<Spanned<BTreeMap<String, String>>>,
    public_address_refresh: Option<Spanned<String>>,
    passive_ports: Option<Spanned<String>>,
    passive_bind_address: Option<Spanned<String>>,
    trust_backend_pasv_address: Option<Spanned<bool>>,
    allow_foreign_data_address: Option<Spanned<bool>>,
    active_mode: Option<Spanned<bool>>,
    active_nat_fix: Option<Spanned<bool>>,
    backend_data_mode: Option<Spanned<String>>,
    active_source_port_20: Option<Spanned<bool>>,
    pending_data_timeout: Option<Spanned<String>>,
    data_connect_timeout: Option<Spanned<String>>,
    login_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    backend_connect_timeout: Option<Spanned<String>>,
    backend_reply_timeout: Option<Spanned<String>>,
    max_line_length: Option<Spanned<i64>>,
    relay_buffer_max: Option<Spanned<i64>>,
    tcp_keepalive: Option<Spanned<String>>,
    log_format: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
}

/// Every setting, each optional; file values with flags laid over them.
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct RawConfig {
    pub listen: Option<Located<Vec<String>>>,
    pub backends: Option<Located<Vec<String>>>,
    pub public_address: Option<Located<String>>,
    pub public_address_for: Option<Located<Vec<(String, String)>>>,
    pub public_address_refresh: Option<Located<String>>,
    pub passive_ports: Option<Located<String>>,
    pub passive_bind_address: Option<Located<String>>,
    pub trust_backend_pasv_address: Option<Located<bool>>,
    pub allow_foreign_data_address: Option<Located<bool>>,
    pub active_mode: Option<Located<bool>>,
    pub active_nat_fix: Option<Located<bool>>,
    pub backend_data_mode: Option<Located<String>>,
    pub active_source_port_20: Option<Located<bool>>,
    pub pending_data_timeout: Option<Located<String>>,
    pub data_connect_timeout: Option<Located<String>>,
    pub login_timeout: Option<Located<String>>,
    pub idle_timeout: Option<Located<String>>,
    pub backend_connect_timeout: Option<Located<String>>,
    pub backend_reply_timeout: Option<Located<String>>,
    pub max_line_length: Option<Located<i64>>,
    pub relay_buffer_max: Option<Located<i64>>,
    pub tcp_keepalive: Option<Located<String>>,
    pub log_format: Option<Located<String>>,
    pub log_level: Option<Located<String>>,
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
    macro_rules! conv {
        ($field:expr) => {
            $field.map(|s| {
                let origin = loc(s.span());
                Located {
                    value: s.into_inner(),
                    origin,
                }
            })
        };
    }
    Ok(RawConfig {
        listen: conv!(f.listen),
        backends: conv!(f.backends),
        public_address: conv!(f.public_address),
        public_address_for: f.public_address_for.map(|s| {
            let origin = loc(s.span());
            Located {
                value: s.into_inner().into_iter().collect(),
                origin,
            }
        }),
        public_address_refresh: conv!(f.public_address_refresh),
        passive_ports: conv!(f.passive_ports),
        passive_bind_address: conv!(f.passive_bind_address),
        trust_backend_pasv_address: conv!(f.trust_backend_pasv_address),
        allow_foreign_data_address: conv!(f.allow_foreign_data_address),
        active_mode: conv!(f.active_mode),
        active_nat_fix: conv!(f.active_nat_fix),
        backend_data_mode: conv!(f.backend_data_mode),
        active_source_port_20: conv!(f.active_source_port_20),
        pending_data_timeout: conv!(f.pending_data_timeout),
        data_connect_timeout: conv!(f.data_connect_timeout),
        login_timeout: conv!(f.login_timeout),
        idle_timeout: conv!(f.idle_timeout),
        backend_connect_timeout: conv!(f.backend_connect_timeout),
        backend_reply_timeout: conv!(f.backend_reply_timeout),
        max_line_length: conv!(f.max_line_length),
        relay_buffer_max: conv!(f.relay_buffer_max),
        tcp_keepalive: conv!(f.tcp_keepalive),
        log_format: conv!(f.log_format),
        log_level: conv!(f.log_level),
    })
}

impl RawConfig {
    /// Lays `over` (flags) on top of `self` (file): a value set in `over` wins.
    pub fn overlay(self, over: RawConfig) -> RawConfig {
        macro_rules! pick {
            ($($f:ident),*) => { RawConfig { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            listen,
            backends,
            public_address,
            public_address_for,
            public_address_refresh,
            passive_ports,
            passive_bind_address,
            trust_backend_pasv_address,
            allow_foreign_data_address,
            active_mode,
            active_nat_fix,
            backend_data_mode,
            active_source_port_20,
            pending_data_timeout,
            data_connect_timeout,
            login_timeout,
            idle_timeout,
            backend_connect_timeout,
            backend_reply_timeout,
            max_line_length,
            relay_buffer_max,
            tcp_keepalive,
            log_format,
            log_level
        )
    }
}
