//! Raw settings -> [`Config`]. One [`ConfigError`] per operator mistake, each
//! naming the key and where it was set (file and line, or flag). Defaults are
//! applied here.
//!
//! [`validate`] checks the parts in turn and assembles `Config`: `listeners`
//! (listener addresses, the passive ports and their bind address), `tls`
//! (certificates, FTPS policies, backend TLS, health-check login),
//! `pools` (backends, named pools, routing to them, `[tcp.NAME]` listeners)
//! and `lookup` (`user_lookup_url` and its settings).
//! Settings of one key each are checked here, with the helpers the parts
//! share. The first mistake found is the one reported. Files the settings
//! name are read and host names resolved; nothing is bound or connected.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use ipnet::IpNet;

use super::file::{FileError, Located, Origin, RawConfig};
use super::{BackendDataMode, Config, LogFormat, ProxyVersion, PublicAddressSpec};
use crate::proto::hostport::parse_port_range;

mod listeners;
mod lookup;
mod pools;
mod sftp;
mod tls;

pub use listeners::default_passive_bind;

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

/// A list of networks (`10.0.0.0/8`) or addresses (`10.0.0.7`), host bits
/// cleared.
fn networks(
    key: &'static str,
    v: &Option<Located<Vec<String>>>,
) -> Result<Vec<IpNet>, ConfigError> {
    let Some(l) = v else {
        return Ok(Vec::new());
    };
    l.value
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| s.parse::<IpAddr>().map(|ip| IpNet::from(ip.to_canonical())))
                .or_else(|_| {
                    invalid(
                        key,
                        &l.origin,
                        format!("`{s}` is not a network like 10.0.0.0/8 or an address"),
                    )
                })
        })
        .collect()
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

/// Validates raw settings into a [`Config`]. The first mistake found is
/// returned; the order: listener addresses (the other parts refer to them),
/// the members of `backends`, the settings of one key each, TLS, pools and
/// routing, gateway rules, `[tcp.NAME]` listeners, the user lookup, the
/// SFTP keys (`sftp_known_hosts`, `[sftp_user_key]`), then the remaining
/// durations and counts.
pub fn validate(raw: &RawConfig) -> Result<Config, ConfigError> {
    let listeners = listeners::validate(raw)?;
    let backends = pools::backends(raw, &listeners)?;
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
    let pools = pools::validate(raw, &listeners, backends)?;
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
        listeners.gateway_listen.is_empty(),
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
    let tcp = pools::validate_tcp(raw, &listeners, &pools)?;
    let user_lookup = lookup::validate(raw, &pools, &tcp)?;
    let has_sftp = pools
        .backends
        .iter()
        .chain(pools.pools.iter().flat_map(|p| &p.backends))
        .any(|b| b.protocol == super::BackendProtocol::Sftp);
    let sftp = sftp::validate(raw, has_sftp)?;
    Ok(Config {
        listen: listeners.listen,
        backends: pools.backends,
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
        backend_data_networks: networks("backend_data_networks", &raw.backend_data_networks)?,
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
        tls_client_auth: tls.tls_client_auth,
        tls_client_ca: tls.tls_client_ca,
        tls_client_cert_user: tls.tls_client_cert_user,
        tls_server_names: tls.tls_server_names,
        xferlog_user: tls.xferlog_user,
        backend_tls_identity: tls.backend_tls_identity,
        proxy_protocol_listen: listeners.proxy_protocol_listen,
        proxy_protocol_from: listeners.proxy_protocol_from,
        proxy_protocol_timeout: duration(
            "proxy_protocol_timeout",
            &raw.proxy_protocol_timeout,
            Duration::from_secs(5),
        )?,
        backend_proxy_protocol,
        backend_policy: pools.backend_policy,
        pools: pools.pools,
        pool_for_listener: pools.pool_for_listener,
        user_pool: pools.user_pool,
        user_pool_default: pools.user_pool_default,
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
        user_lookup,
        sftp_known_hosts_file: sftp.sftp_known_hosts_file,
        sftp_known_hosts: sftp.sftp_known_hosts,
        sftp_user_key: sftp.sftp_user_key,
    })
}

#[cfg(test)]
mod tests;
