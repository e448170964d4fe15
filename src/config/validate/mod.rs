//! Raw settings -> [`Config`]. One [`ConfigError`] per operator mistake, each
//! naming the key and where it was set (file and line, or flag). Defaults are
//! applied here.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ipnet::IpNet;

use super::file::{FileError, Located, Origin, RawConfig};
use super::{BackendDataMode, BackendSpec, Config, LogFormat, ProxyVersion, PublicAddressSpec};
use crate::proto::hostport::parse_port_range;

mod listeners;
mod tls;

pub use listeners::default_passive_bind;
use listeners::listen_overlap;

/// A configuration mistake.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A key has a value that is not allowed.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// The config key.
        key: &'static str,
        /// Where it was set.
        origin: Origin,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A required key is missing.
    #[error("missing required setting `{key}` (flag {flag})")]
    Missing {
        /// The config key.
        key: &'static str,
        /// The equivalent flag.
        flag: &'static str,
    },
    /// A key has no default that fits the other settings: the operator
    /// must choose.
    #[error("set `{key}` (flag {flag}): {why}")]
    Needed {
        /// The config key.
        key: &'static str,
        /// The equivalent flag.
        flag: &'static str,
        /// Why no default fits.
        why: String,
    },
}

fn invalid<T>(
    key: &'static str,
    origin: &Origin,
    message: impl Into<String>,
) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key,
        origin: origin.clone(),
        message: message.into(),
    })
}

/// Parses "30s", "5m", "1h", "250ms" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    Some(d)
}

fn duration(
    key: &'static str,
    v: &Option<Located<String>>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(l) = v else { return Ok(default) };
    match parse_duration(&l.value) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => invalid(
            key,
            &l.origin,
            format!(
                "`{}` is not a duration above zero (examples: \"500ms\", \"30s\", \"5m\", \"1h\")",
                l.value
            ),
        ),
    }
}

/// A path setting: relative paths written in a file are relative to that
/// file's directory (flags: to the working directory).
fn relative_to_file(l: &Located<String>) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(l.value.trim());
    let p = match &l.origin {
        Origin::File { path, .. } if p.is_relative() => {
            path.parent().map(|d| d.join(&p)).unwrap_or(p)
        }
        _ => p,
    };
    // Absolute, so `check` prints a path that means the same from anywhere.
    if p.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(p);
        }
    }
    p
}

/// An integer setting within `min..=max`.
fn count(
    key: &'static str,
    v: &Option<Located<i64>>,
    default: u64,
    (min, max): (u64, u64),
) -> Result<u64, ConfigError> {
    let Some(l) = v else { return Ok(default) };
    match u64::try_from(l.value) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => invalid(
            key,
            &l.origin,
            format!(
                "{} is out of range: must be between {min} and {max}",
                l.value
            ),
        ),
    }
}

/// A user or group to switch to, which must exist on this machine.
fn account(
    key: &'static str,
    v: &Option<Located<String>>,
    group: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(l) = v else { return Ok(None) };
    let name = l.value.trim();
    let found = if group {
        crate::privileges::lookup_group(name).map(|g| g.is_some())
    } else {
        crate::privileges::lookup_user(name).map(|u| u.is_some())
    };
    match found {
        Ok(true) => Ok(Some(name.to_owned())),
        Ok(false) => invalid(
            key,
            &l.origin,
            format!("no such {key} `{name}` on this machine"),
        ),
        Err(e) => invalid(key, &l.origin, format!("cannot look up `{name}`: {e}")),
    }
}

fn flag(v: &Option<Located<bool>>, default: bool) -> bool {
    v.as_ref().map_or(default, |l| l.value)
}

/// Parses a public-address value: "auto", an IP address, or a hostname.
fn public_spec(
    key: &'static str,
    value: &str,
    origin: &Origin,
) -> Result<PublicAddressSpec, ConfigError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("auto") {
        return Ok(PublicAddressSpec::Auto);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return invalid(
                key,
                origin,
                "0.0.0.0 and :: are not addresses a client can connect to (use \"auto\")",
            );
        }
        return Ok(PublicAddressSpec::Ip(ip.to_canonical()));
    }
    let host_ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if !host_ok {
        return invalid(
            key,
            origin,
            format!("`{v}` is not \"auto\", an IP address or a hostname"),
        );
    }
    if (v, 0)
        .to_socket_addrs()
        .map(|mut a| a.next().is_none())
        .unwrap_or(true)
    {
        return invalid(key, origin, format!("hostname `{v}` does not resolve"));
    }
    Ok(PublicAddressSpec::Host(v.to_owned()))
}

/// Validates raw settings into a [`Config`].
pub fn validate(raw: &RawConfig) -> Result<Config, ConfigError> {
    let listeners = listeners::validate(raw)?;
    let (listen, implicit_tls_listen, proxy_protocol_listen, gateway_listen) = (
        &listeners.listen,
        &listeners.implicit_tls_listen,
        &listeners.proxy_protocol_listen,
        &listeners.gateway_listen,
    );
    // Only gateway or plain TCP listeners: no pool `default` is needed.
    let no_ftp_listener =
        listen.is_empty() && implicit_tls_listen.is_empty() && proxy_protocol_listen.is_empty();
    let backends = match &raw.backends {
        // Named pools may stand in for `backends`; checked with them below.
        None if raw.pool.as_ref().is_some_and(|p| !p.is_empty()) => Vec::new(),
        None if no_ftp_listener => Vec::new(),
        Some(l) if l.value.is_empty() && no_ftp_listener => Vec::new(),
        None => {
            return Err(ConfigError::Missing {
                key: "backends",
                flag: "--backend",
            })
        }
        Some(l) => members("backends", "", &l.value, &l.origin)?,
    };
    let public_address = match &raw.public_address {
        None => PublicAddressSpec::Auto,
        Some(l) => public_spec("public_address", &l.value, &l.origin)?,
    };
    let mut public_address_for = Vec::new();
    if let Some(l) = &raw.public_address_for {
        for (net, addr) in &l.value {
            let parsed: IpNet = match net.trim().parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match net.trim().parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return invalid(
                            "public_address_for",
                            &l.origin,
                            format!("`{net}` is not a network like 10.0.0.0/8"),
                        )
                    }
                },
            };
            public_address_for.push((parsed, public_spec("public_address_for", addr, &l.origin)?));
        }
        // Most specific network first, so the first match is the best match.
        public_address_for.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    }
    let backend_data_mode = match &raw.backend_data_mode {
        None => BackendDataMode::Passive,
        Some(l) => match l.value.trim().to_ascii_lowercase().as_str() {
            "passive" => BackendDataMode::Passive,
            "active" => BackendDataMode::Active,
            other => {
                return invalid(
                    "backend_data_mode",
                    &l.origin,
                    format!("`{other}` is not \"passive\" or \"active\""),
                )
            }
        },
    };
    let max_line_length = match &raw.max_line_length {
        None => 4096,
        Some(l) if (512..=1_048_576).contains(&l.value) => l.value as usize,
        Some(l) => {
            return invalid(
                "max_line_length",
                &l.origin,
                "must be between 512 and 1048576 bytes (RFC 959 commands need at least 512)",
            )
        }
    };
    let relay_buffer_max = match &raw.relay_buffer_max {
        None => crate::data::relay::DEFAULT_BUFFER_MAX,
        Some(l) if (16_384..=67_108_864).contains(&l.value) => l.value as usize,
        Some(l) => {
            return invalid(
                "relay_buffer_max",
                &l.origin,
                "must be between 16384 and 67108864 bytes",
            )
        }
    };
    let log_format = match &raw.log_format {
        None => LogFormat::Text,
        Some(l) => match l.value.trim().to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return invalid(
                    "log_format",
                    &l.origin,
                    format!("`{other}` is not \"text\" or \"json\""),
                )
            }
        },
    };
    let log_level = match &raw.log_level {
        None => "info".to_owned(),
        Some(l) => match tracing_subscriber::EnvFilter::try_new(&l.value) {
            Ok(_) => l.value.clone(),
            Err(e) => return invalid("log_level", &l.origin, format!("`{}`: {e}", l.value)),
        },
    };
    let xferlog = match &raw.xferlog {
        None => None,
        Some(l) if l.value.trim().is_empty() => {
            return invalid("xferlog", &l.origin, "must be a file path")
        }
        Some(l) => Some(relative_to_file(l)),
    };
    let user = account("user", &raw.user, false)?;
    let group = account("group", &raw.group, true)?;
    if let (None, Some(l)) = (&user, &raw.group) {
        return invalid(
            "group",
            &l.origin,
            "set `user` as well (ftpgate switches user and group together)",
        );
    }
    let active_source_port_20 = flag(&raw.active_source_port_20, false);
    let unprivileged = user.as_deref().is_some_and(|u| {
        crate::privileges::lookup_user(u)
            .ok()
            .flatten()
            .is_some_and(|u| !u.uid.is_root())
    });
    if unprivileged && active_source_port_20 {
        let origin = raw
            .user
            .as_ref()
            .map(|l| l.origin.clone())
            .expect("user is set");
        return invalid(
            "user",
            &origin,
            "active_source_port_20 needs to bind port 20 for every transfer, which an unprivileged user cannot; \
             drop one of them (or run unprivileged with CAP_NET_BIND_SERVICE instead of `user`)",
        );
    }
    let tls = tls::validate(raw, &listeners)?;
    let backend_proxy_protocol = match &raw.backend_proxy_protocol {
        None => ProxyVersion::Off,
        Some(l) => match l.value.trim().to_ascii_lowercase().as_str() {
            "off" => ProxyVersion::Off,
            "v1" | "1" => ProxyVersion::V1,
            "v2" | "2" => ProxyVersion::V2,
            other => {
                return invalid(
                    "backend_proxy_protocol",
                    &l.origin,
                    format!("`{other}` is not \"off\", \"v1\" or \"v2\""),
                )
            }
        },
    };
    let mut backends = backends;
    let backend_policy = match &raw.backend_policy {
        None => crate::backend::policy::Policy::RoundRobin,
        Some(l) => policy("backend_policy", "", &l.value, &l.origin)?,
    };
    if let Some(l) = &raw.backend_weights {
        weights("backend_weights", "", &mut backends, &l.value, &l.origin)?;
    }
    if let Some(l) = &raw.backend_drain {
        drain("backend_drain", "", &mut backends, &l.value, &l.origin)?;
    }
    if !backends.is_empty() {
        not_all_standby(
            "backend_weights",
            "",
            &backends,
            raw.backend_weights.as_ref().map(|l| &l.origin),
        )?;
    }
    let pools = match &raw.pool {
        None => Vec::new(),
        Some(pools) => pools
            .iter()
            .map(|(name, p)| pool(name, &p.value, &p.origin))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let pool_exists = |name: &str| {
        (name == super::DEFAULT_POOL && !backends.is_empty())
            || pools.iter().any(|p| p.name == name)
    };
    let mut pool_for_listener = Vec::new();
    if let Some(l) = &raw.pool_for_listener {
        for (addr, name) in &l.value {
            let Ok(a) = addr.trim().parse::<SocketAddr>() else {
                return invalid(
                    "pool_for_listener",
                    &l.origin,
                    format!("`{addr}` is not IP:port"),
                );
            };
            if !listen.contains(&a)
                && !implicit_tls_listen.contains(&a)
                && !proxy_protocol_listen.contains(&a)
            {
                return invalid(
                    "pool_for_listener",
                    &l.origin,
                    format!("`{addr}` is not one of listen, implicit_tls_listen or proxy_protocol_listen"),
                );
            }
            if !pool_exists(name.trim()) {
                return invalid("pool_for_listener", &l.origin, unknown_pool(name));
            }
            pool_for_listener.push((a, name.trim().to_owned()));
        }
    }
    let mut user_pool = std::collections::BTreeMap::new();
    if let Some(l) = &raw.user_pool {
        for (user, name) in &l.value {
            if !pool_exists(name.trim()) {
                return invalid(
                    "user_pool",
                    &l.origin,
                    format!("user `{user}`: {}", unknown_pool(name)),
                );
            }
            user_pool.insert(user.clone(), name.trim().to_owned());
        }
    }
    let user_pool_default = match &raw.user_pool_default {
        None => None,
        Some(l) if !pool_exists(l.value.trim()) => {
            return invalid("user_pool_default", &l.origin, unknown_pool(&l.value))
        }
        Some(l) if user_pool.is_empty() => {
            return invalid(
                "user_pool_default",
                &l.origin,
                "it only applies with per-user routing: set [user_pool] too",
            )
        }
        Some(l) => Some(l.value.trim().to_owned()),
    };
    if user_pool.is_empty() {
        // Without per-user routing every listener needs a pool of its own.
        for a in listen
            .iter()
            .chain(implicit_tls_listen)
            .chain(proxy_protocol_listen)
        {
            if backends.is_empty() && !pool_for_listener.iter().any(|(l, _)| l == a) {
                let origin = raw
                    .pool
                    .as_ref()
                    .and_then(|p| p.values().next())
                    .map(|l| l.origin.clone())
                    .unwrap_or(Origin::Flag("--pool"));
                return invalid(
                    "pool_for_listener",
                    &origin,
                    format!("listener {a} has no pool: set `backends` or name its pool in [pool_for_listener]"),
                );
            }
        }
    }
    let rules = |key: &'static str, v: &Option<Located<Vec<String>>>| match v {
        None => Ok(Vec::new()),
        Some(l) => l
            .value
            .iter()
            .map(|r| {
                crate::gateway::Rule::parse(r).map_or_else(
                    || {
                        invalid(
                            key,
                            &l.origin,
                            format!("`{r}` is not a network, an address, a host name or a .domain"),
                        )
                    },
                    Ok,
                )
            })
            .collect::<Result<Vec<_>, _>>(),
    };
    let gateway = crate::gateway::Policy {
        allow: rules("gateway_allow", &raw.gateway_allow)?,
        deny: rules("gateway_deny", &raw.gateway_deny)?,
    };
    if let (false, true, Some(l)) = (
        gateway_listen.is_empty(),
        gateway.allow.is_empty(),
        &raw.gateway_listen,
    ) {
        // Not an error: a gateway that refuses everything is safe. Say why.
        tracing::warn!(origin = %l.origin, "gateway_allow is empty: every gateway destination is refused");
    }
    let backend_resolve_interval = duration(
        "backend_resolve_interval",
        &raw.backend_resolve_interval,
        Duration::from_secs(30),
    )?;
    let backend_active_ports = match &raw.backend_active_ports {
        None => None,
        Some(l) => match parse_port_range(&l.value) {
            Some((lo, hi)) if lo >= 1024 => Some((lo, hi)),
            _ => {
                return invalid(
                    "backend_active_ports",
                    &l.origin,
                    format!("`{}` is not FIRST-LAST with ports from 1024 up", l.value),
                )
            }
        },
    };
    let tcp = match &raw.tcp {
        None => Vec::new(),
        Some(tables) => tables
            .iter()
            .map(|(name, t)| tcp_service(name, &t.value, &t.origin))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let ftp_listeners = TcpUse {
        listen,
        implicit_tls_listen,
        proxy_protocol_listen,
        gateway_listen,
        admin_listen: listeners.admin_listen,
        passive: (listeners.passive_bind_address, listeners.passive_ports),
    };
    let ftp_pools = FtpPools {
        backends: !backends.is_empty(),
        pool_for_listener: &pool_for_listener,
        user_pool: &user_pool,
        user_pool_default: user_pool_default.as_deref(),
    };
    // `backends` too: its members must not be in a plain TCP pool either.
    let every_pool: Vec<super::Pool> = pools
        .iter()
        .cloned()
        .chain((!backends.is_empty()).then(|| super::Pool {
            name: super::DEFAULT_POOL.to_owned(),
            backends: backends.clone(),
            policy: backend_policy,
        }))
        .collect();
    for t in &tcp {
        let origin = &raw.tcp.as_ref().expect("tcp is set")[&t.name].origin;
        check_tcp(t, &tcp, &ftp_listeners, &ftp_pools, &every_pool, origin)?;
    }
    Ok(Config {
        listen: listeners.listen,
        backends,
        public_address,
        public_address_for,
        public_address_refresh: duration(
            "public_address_refresh",
            &raw.public_address_refresh,
            Duration::from_secs(60),
        )?,
        passive_ports: listeners.passive_ports,
        passive_bind_address: listeners.passive_bind_address,
        trust_backend_pasv_address: flag(&raw.trust_backend_pasv_address, false),
        allow_foreign_data_address: flag(&raw.allow_foreign_data_address, false),
        active_mode: flag(&raw.active_mode, true),
        active_nat_fix: flag(&raw.active_nat_fix, true),
        backend_data_mode,
        active_source_port_20,
        pending_data_timeout: duration(
            "pending_data_timeout",
            &raw.pending_data_timeout,
            Duration::from_secs(30),
        )?,
        data_connect_timeout: duration(
            "data_connect_timeout",
            &raw.data_connect_timeout,
            Duration::from_secs(10),
        )?,
        data_stall_timeout: duration(
            "data_stall_timeout",
            &raw.data_stall_timeout,
            crate::data::relay::DEFAULT_STALL_TIMEOUT,
        )?,
        login_timeout: duration("login_timeout", &raw.login_timeout, Duration::from_secs(60))?,
        idle_timeout: duration("idle_timeout", &raw.idle_timeout, Duration::from_secs(300))?,
        backend_connect_timeout: duration(
            "backend_connect_timeout",
            &raw.backend_connect_timeout,
            Duration::from_secs(5),
        )?,
        backend_reply_timeout: duration(
            "backend_reply_timeout",
            &raw.backend_reply_timeout,
            Duration::from_secs(30),
        )?,
        max_line_length,
        relay_buffer_max,
        tcp_keepalive: duration("tcp_keepalive", &raw.tcp_keepalive, Duration::from_secs(60))?,
        log_format,
        log_level,
        admin_listen: listeners.admin_listen,
        xferlog,
        shutdown_drain_timeout: duration(
            "shutdown_drain_timeout",
            &raw.shutdown_drain_timeout,
            Duration::from_secs(30),
        )?,
        greeting_timeout: duration(
            "greeting_timeout",
            &raw.greeting_timeout,
            Duration::from_secs(15),
        )?,
        max_sessions: count("max_sessions", &raw.max_sessions, 10_000, (1, 1_000_000))? as usize,
        max_sessions_per_client: count(
            "max_sessions_per_client",
            &raw.max_sessions_per_client,
            100,
            (1, 1_000_000),
        )? as usize,
        max_connection_rate_per_client: count(
            "max_connection_rate_per_client",
            &raw.max_connection_rate_per_client,
            100,
            (1, 1_000_000),
        )? as u32,
        login_failures_before_delay: count(
            "login_failures_before_delay",
            &raw.login_failures_before_delay,
            1,
            (0, 1000),
        )? as u32,
        login_failure_delay: duration(
            "login_failure_delay",
            &raw.login_failure_delay,
            Duration::from_secs(2),
        )?,
        max_login_failures: count("max_login_failures", &raw.max_login_failures, 3, (1, 1000))?
            as u32,
        health_check: flag(&raw.health_check, true),
        health_check_interval: duration(
            "health_check_interval",
            &raw.health_check_interval,
            Duration::from_secs(5),
        )?,
        health_check_fast_interval: duration(
            "health_check_fast_interval",
            &raw.health_check_fast_interval,
            Duration::from_millis(250),
        )?,
        health_check_timeout: duration(
            "health_check_timeout",
            &raw.health_check_timeout,
            Duration::from_secs(3),
        )?,
        health_check_rise: count("health_check_rise", &raw.health_check_rise, 2, (1, 100))? as u32,
        health_check_fall: count("health_check_fall", &raw.health_check_fall, 3, (1, 100))? as u32,
        health_check_tls: tls.health_check_tls,
        health_check_user: tls.health_check_user,
        health_check_password_file: tls.health_check_password_file,
        health_check_password: tls.health_check_password,
        user,
        group,
        tls: tls.tls,
        tls_for_listener: tls.tls_for_listener,
        tls_cert: tls.tls_cert,
        tls_key: tls.tls_key,
        client_tls: tls.client_tls,
        implicit_tls_listen: listeners.implicit_tls_listen,
        tls_require_data_resumption: tls.tls_require_data_resumption,
        tls_handshake_timeout: tls.tls_handshake_timeout,
        tls_min_version_13: tls.tls_min_version_13,
        backend_tls: tls.backend_tls,
        backend_tls_verify: tls.backend_tls_verify,
        backend_tls_verify_flag: tls.backend_tls_verify_flag,
        backend_tls_server_name: tls.backend_tls_server_name,
        backend_tls_protect_data: tls.backend_tls_protect_data,
        backend_tls_config: tls.backend_tls_config,
        proxy_protocol_listen: listeners.proxy_protocol_listen,
        proxy_protocol_from: listeners.proxy_protocol_from,
        proxy_protocol_timeout: duration(
            "proxy_protocol_timeout",
            &raw.proxy_protocol_timeout,
            Duration::from_secs(5),
        )?,
        backend_proxy_protocol,
        backend_policy,
        pools,
        pool_for_listener,
        user_pool,
        user_pool_default,
        gateway_listen: listeners.gateway_listen,
        gateway,
        backend_active_ports,
        backend_resolve_interval,
        gateway_resolve_timeout: duration(
            "gateway_resolve_timeout",
            &raw.gateway_resolve_timeout,
            Duration::from_secs(5),
        )?,
        tcp,
    })
}

/// One `[tcp.NAME]` table, on its own (see [`check_tcp`] for the rest).
fn tcp_service(
    name: &str,
    t: &super::file::TcpToml,
    origin: &Origin,
) -> Result<super::TcpService, ConfigError> {
    let in_tcp = format!("[tcp.{name}]: ");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return invalid(
            "tcp",
            origin,
            format!("`{name}` is not a listener name (letters, digits, - _ .)"),
        );
    }
    if t.listen.is_empty() {
        return invalid(
            "tcp",
            origin,
            format!("{in_tcp}listen: at least one address is needed, e.g. \"0.0.0.0:2222\""),
        );
    }
    let listen = t
        .listen
        .iter()
        .map(|s| {
            s.trim().parse::<SocketAddr>().or_else(|_| {
                invalid(
                    "tcp",
                    origin,
                    format!("{in_tcp}listen: `{s}` is not IP:port (use [::]:2222 for IPv6)"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if t.pool.trim().is_empty() {
        return invalid(
            "tcp",
            origin,
            format!("{in_tcp}pool: name the [pool.NAME] whose members serve these connections"),
        );
    }
    Ok(super::TcpService {
        name: name.to_owned(),
        listen,
        pool: t.pool.trim().to_owned(),
    })
}

/// The other listeners a `[tcp.*]` address must not collide with.
struct TcpUse<'a> {
    listen: &'a [SocketAddr],
    implicit_tls_listen: &'a [SocketAddr],
    proxy_protocol_listen: &'a [SocketAddr],
    gateway_listen: &'a [SocketAddr],
    admin_listen: Option<SocketAddr>,
    /// Bound only when FTP is served (some FTP or gateway listener).
    passive: (IpAddr, (u16, u16)),
}

/// The pools FTP sessions may use.
struct FtpPools<'a> {
    backends: bool,
    pool_for_listener: &'a [(SocketAddr, String)],
    user_pool: &'a std::collections::BTreeMap<String, String>,
    user_pool_default: Option<&'a str>,
}

impl FtpPools<'_> {
    /// How FTP uses `pool`, if it does (for the message).
    fn use_of(&self, pool: &str) -> Option<String> {
        if pool == super::DEFAULT_POOL && self.backends {
            return Some("`backends` (the pool `default`)".into());
        }
        if let Some((a, _)) = self.pool_for_listener.iter().find(|(_, p)| p == pool) {
            return Some(format!("[pool_for_listener] for {a}"));
        }
        if let Some((u, _)) = self.user_pool.iter().find(|(_, p)| *p == pool) {
            return Some(format!("[user_pool] for `{u}`"));
        }
        (self.user_pool_default == Some(pool)).then(|| "user_pool_default".into())
    }
}

/// A `[tcp.*]` table against the rest: its pool (exists, not FTP's, not
/// `user_hash`, no member shared with a pool checked by FTP greeting) and
/// its addresses (no collision with any other listener or the passive range).
fn check_tcp(
    t: &super::TcpService,
    all: &[super::TcpService],
    ftp: &TcpUse<'_>,
    ftp_pools: &FtpPools<'_>,
    pools: &[super::Pool],
    origin: &Origin,
) -> Result<(), ConfigError> {
    let in_tcp = format!("[tcp.{}]: ", t.name);
    if let Some(how) = ftp_pools.use_of(&t.pool) {
        return invalid(
            "tcp",
            origin,
            format!(
                "{in_tcp}pool `{}` is used by FTP through {how}: give plain TCP listeners a [pool.NAME] of their own",
                t.pool
            ),
        );
    }
    let Some(pool) = pools.iter().find(|p| p.name == t.pool) else {
        return invalid("tcp", origin, format!("{in_tcp}{}", unknown_pool(&t.pool)));
    };
    if pool.policy.needs_user() {
        return invalid(
            "tcp",
            origin,
            format!(
                "{in_tcp}pool `{}` has policy user_hash, but plain TCP has no user: use round_robin, least_connections or source_hash",
                t.pool
            ),
        );
    }
    // A member is health-checked one way: by FTP greeting or by TCP connect.
    let tcp_pool = |name: &str| all.iter().any(|o| o.pool == name);
    for other in pools.iter().filter(|p| !tcp_pool(&p.name)) {
        if let Some(b) = pool
            .backends
            .iter()
            .find(|b| other.backends.iter().any(|o| o.addr == b.addr))
        {
            return invalid(
                "tcp",
                origin,
                format!(
                    "{in_tcp}`{}` of pool `{}` is also in pool `{}`, which FTP listeners may use: a backend is either an FTP server or a plain TCP one",
                    b.name, t.pool, other.name
                ),
            );
        }
    }
    let named = |key: &str, addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(move |a| (key.to_owned(), *a))
            .collect::<Vec<_>>()
    };
    let mut others = Vec::new();
    others.extend(named("listen", ftp.listen));
    others.extend(named("implicit_tls_listen", ftp.implicit_tls_listen));
    others.extend(named("proxy_protocol_listen", ftp.proxy_protocol_listen));
    others.extend(named("gateway_listen", ftp.gateway_listen));
    others.extend(named("admin_listen", ftp.admin_listen.as_slice()));
    for o in all.iter().filter(|o| o.name != t.name) {
        others.extend(named(&format!("[tcp.{}]", o.name), &o.listen));
    }
    for (i, &a) in t.listen.iter().enumerate() {
        let mine = named(&format!("[tcp.{}]", t.name), &t.listen[..i]);
        if let Some((key, b)) = others
            .iter()
            .chain(&mine)
            .find(|(_, b)| listen_overlap(a, *b))
        {
            return invalid(
                "tcp",
                origin,
                format!("{in_tcp}listen: {a} collides with {b} of {key}"),
            );
        }
        let (ip, (first, last)) = ftp.passive;
        let passive = SocketAddr::new(ip, a.port());
        let serves_ftp = !(ftp.listen.is_empty()
            && ftp.implicit_tls_listen.is_empty()
            && ftp.proxy_protocol_listen.is_empty()
            && ftp.gateway_listen.is_empty());
        if serves_ftp && (first..=last).contains(&a.port()) && listen_overlap(a, passive) {
            return invalid(
                "tcp",
                origin,
                format!(
                    "{in_tcp}listen: port {} of {a} is in passive_ports ({first}-{last}) on {ip}",
                    a.port()
                ),
            );
        }
    }
    Ok(())
}

fn unknown_pool(name: &str) -> String {
    format!("no pool is named `{name}` (pools: `default` from `backends`, and each [pool.NAME])")
}

/// `in_pool` prefixes messages about a `[pool.NAME]` table.
fn members(
    key: &'static str,
    in_pool: &str,
    names: &[String],
    origin: &Origin,
) -> Result<Vec<BackendSpec>, ConfigError> {
    if names.is_empty() {
        return invalid(
            key,
            origin,
            format!("{in_pool}at least one backend is needed, e.g. \"127.0.0.1:21\""),
        );
    }
    let mut specs = Vec::new();
    for s in names {
        let name = s.trim();
        // A host name that resolves to several addresses: one member each
        // (re-resolved every `backend_resolve_interval` while running).
        let mut addrs: Vec<SocketAddr> = name
            .to_socket_addrs()
            .map(|a| a.map(crate::net::canonical).collect())
            .unwrap_or_default();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return invalid(
                key,
                origin,
                format!("{in_pool}`{name}` is not host:port or does not resolve"),
            );
        }
        specs.extend(addrs.into_iter().map(|addr| BackendSpec {
            name: name.to_owned(),
            addr,
            weight: 1,
            drain: false,
        }));
    }
    Ok(specs)
}

fn policy(
    key: &'static str,
    in_pool: &str,
    value: &str,
    origin: &Origin,
) -> Result<crate::backend::policy::Policy, ConfigError> {
    value
        .trim()
        .parse::<crate::backend::policy::Policy>()
        .or_else(|e| invalid(key, origin, format!("{in_pool}{e}")))
}

fn weights(
    key: &'static str,
    in_pool: &str,
    backends: &mut [BackendSpec],
    table: &std::collections::BTreeMap<String, i64>,
    origin: &Origin,
) -> Result<(), ConfigError> {
    for (name, w) in table {
        let mut found = false;
        for b in backends.iter_mut().filter(|b| b.name == name.trim()) {
            found = true;
            match u32::try_from(*w) {
                Ok(w) if w <= 1000 => b.weight = w,
                _ => {
                    return invalid(
                        key,
                        origin,
                        format!("{in_pool}weight of `{name}` must be between 0 and 1000"),
                    )
                }
            }
        }
        if !found {
            return invalid(
                key,
                origin,
                format!("{in_pool}`{name}` is not one of its backends"),
            );
        }
    }
    Ok(())
}

fn drain(
    key: &'static str,
    in_pool: &str,
    backends: &mut [BackendSpec],
    names: &[String],
    origin: &Origin,
) -> Result<(), ConfigError> {
    for name in names {
        let mut found = false;
        for b in backends.iter_mut().filter(|b| b.name == name.trim()) {
            found = true;
            b.drain = true;
        }
        if !found {
            return invalid(
                key,
                origin,
                format!("{in_pool}`{name}` is not one of its backends"),
            );
        }
    }
    Ok(())
}

/// A pool whose every weight is 0 would never be used on purpose.
fn not_all_standby(
    key: &'static str,
    in_pool: &str,
    backends: &[BackendSpec],
    origin: Option<&Origin>,
) -> Result<(), ConfigError> {
    match origin {
        Some(origin) if backends.iter().all(|b| b.weight == 0) => invalid(
            key,
            origin,
            format!("{in_pool}every weight is 0: at least one backend must take sessions"),
        ),
        _ => Ok(()),
    }
}

fn pool(
    name: &str,
    p: &super::file::PoolToml,
    origin: &Origin,
) -> Result<super::Pool, ConfigError> {
    let in_pool = format!("[pool.{name}]: ");
    if name == super::DEFAULT_POOL {
        return invalid(
            "pool",
            origin,
            "the pool `default` is the one `backends` forms: list its members there",
        );
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return invalid(
            "pool",
            origin,
            format!("`{name}` is not a pool name (letters, digits, - _ .)"),
        );
    }
    let mut backends = members("pool", &in_pool, &p.backends, origin)?;
    let policy = match &p.policy {
        None => crate::backend::policy::Policy::RoundRobin,
        Some(v) => policy("pool", &in_pool, v, origin)?,
    };
    if let Some(w) = &p.weights {
        weights("pool", &in_pool, &mut backends, w, origin)?;
        not_all_standby("pool", &in_pool, &backends, Some(origin))?;
    }
    if let Some(d) = &p.drain {
        drain("pool", &in_pool, &mut backends, d, origin)?;
    }
    Ok(super::Pool {
        name: name.to_owned(),
        backends,
        policy,
    })
}

#[cfg(test)]
mod tests;
