//! Backends and how sessions reach them: `backends` (the pool `default`)
//! with its weights, drain list and policy, the `[pool.NAME]` tables, which
//! pool a listener or a user gets (`[pool_for_listener]`, `[user_pool]`,
//! `user_pool_default`), and the plain TCP listeners (`[tcp.NAME]`) checked
//! against all of them. Backend names are resolved here (one member per
//! address); no connection is made.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use super::listeners::{listen_overlap, Listeners};
use super::{invalid, ConfigError};
use crate::backend::policy::Policy;
use crate::config::file::{Origin, PoolToml, RawConfig, TcpToml};
use crate::config::{
    split_backend_name, BackendProtocol, BackendSpec, Pool, TcpService, DEFAULT_POOL,
};

/// The pool part of [`crate::config::Config`] (`[tcp.NAME]` aside: see
/// [`validate_tcp`]); its fields have the same names and meaning there.
pub(super) struct Pools {
    pub backends: Vec<BackendSpec>,
    pub backend_policy: Policy,
    pub pools: Vec<Pool>,
    pub pool_for_listener: Vec<(SocketAddr, String)>,
    pub user_pool: BTreeMap<String, String>,
    pub user_pool_default: Option<String>,
}

/// The pools of `raw` and the routing to them, given the members of
/// `backends` ([`backends`]); every FTP listener in `listeners` must end up
/// with a pool.
pub(super) fn validate(
    raw: &RawConfig,
    listeners: &Listeners,
    mut backends: Vec<BackendSpec>,
) -> Result<Pools, ConfigError> {
    let backend_policy = match &raw.backend_policy {
        None => Policy::RoundRobin,
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
        (name == DEFAULT_POOL && !backends.is_empty()) || pools.iter().any(|p| p.name == name)
    };
    let ftp = || {
        listeners
            .listen
            .iter()
            .chain(&listeners.implicit_tls_listen)
            .chain(&listeners.proxy_protocol_listen)
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
            if !ftp().any(|f| *f == a) {
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
    let mut user_pool = BTreeMap::new();
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
        Some(l) if raw.user_lookup_url.is_some() => return invalid(
            "user_pool_default",
            &l.origin,
            "with user_lookup_url the lookup answers for every user [user_pool] does not name, \
                 so this pool would never be used: drop it (user_lookup_fallback_pool is the pool \
                 for users whose lookup fails)",
        ),
        Some(l) if user_pool.is_empty() => {
            return invalid(
                "user_pool_default",
                &l.origin,
                "it only applies with per-user routing: set [user_pool] too",
            )
        }
        Some(l) => Some(l.value.trim().to_owned()),
    };
    if user_pool.is_empty() && raw.user_lookup_url.is_none() {
        // Without per-user routing every listener needs a pool of its own.
        for a in ftp() {
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
    Ok(Pools {
        backends,
        backend_policy,
        pools,
        pool_for_listener,
        user_pool,
        user_pool_default,
    })
}

/// The members of `backends` (the pool `default`), each name resolved.
/// Not needed with named pools (checked with them) or without FTP
/// listeners.
pub(super) fn backends(
    raw: &RawConfig,
    listeners: &Listeners,
) -> Result<Vec<BackendSpec>, ConfigError> {
    // Only gateway or plain TCP listeners: no pool `default` is needed.
    let no_ftp_listener = listeners.listen.is_empty()
        && listeners.implicit_tls_listen.is_empty()
        && listeners.proxy_protocol_listen.is_empty();
    Ok(match &raw.backends {
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
    })
}

/// The `[tcp.NAME]` listeners, each checked on its own and then against
/// the FTP listeners, the passive ports, the other tables and the pools.
pub(super) fn validate_tcp(
    raw: &RawConfig,
    listeners: &Listeners,
    pools: &Pools,
) -> Result<Vec<TcpService>, ConfigError> {
    let tcp = match &raw.tcp {
        None => Vec::new(),
        Some(tables) => tables
            .iter()
            .map(|(name, t)| tcp_service(name, &t.value, &t.origin))
            .collect::<Result<Vec<_>, _>>()?,
    };
    // `backends` too: its members must not be in a plain TCP pool either.
    let every_pool: Vec<Pool> = pools
        .pools
        .iter()
        .cloned()
        .chain((!pools.backends.is_empty()).then(|| Pool {
            name: DEFAULT_POOL.to_owned(),
            backends: pools.backends.clone(),
            policy: pools.backend_policy,
        }))
        .collect();
    for t in &tcp {
        let origin = &raw.tcp.as_ref().expect("tcp is set")[&t.name].origin;
        check_tcp(t, &tcp, listeners, pools, &every_pool, origin)?;
    }
    Ok(tcp)
}

impl Pools {
    /// How FTP uses `pool`, if it does (for the message).
    fn ftp_use_of(&self, pool: &str) -> Option<String> {
        if pool == DEFAULT_POOL && !self.backends.is_empty() {
            return Some("`backends` (the pool `default`)".into());
        }
        if let Some((a, _)) = self.pool_for_listener.iter().find(|(_, p)| p == pool) {
            return Some(format!("[pool_for_listener] for {a}"));
        }
        if let Some((u, _)) = self.user_pool.iter().find(|(_, p)| *p == pool) {
            return Some(format!("[user_pool] for `{u}`"));
        }
        (self.user_pool_default.as_deref() == Some(pool)).then(|| "user_pool_default".into())
    }
}

/// One `[tcp.NAME]` table, on its own (see [`check_tcp`] for the rest).
fn tcp_service(name: &str, t: &TcpToml, origin: &Origin) -> Result<TcpService, ConfigError> {
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
    Ok(TcpService {
        name: name.to_owned(),
        listen,
        pool: t.pool.trim().to_owned(),
    })
}

/// A `[tcp.*]` table against the rest: its pool (exists, not FTP's, not
/// `user_hash`, no member shared with a pool checked by FTP greeting) and
/// its addresses (no collision with any other listener or the passive range).
fn check_tcp(
    t: &TcpService,
    all: &[TcpService],
    ftp: &Listeners,
    ftp_pools: &Pools,
    pools: &[Pool],
    origin: &Origin,
) -> Result<(), ConfigError> {
    let in_tcp = format!("[tcp.{}]: ", t.name);
    if let Some(how) = ftp_pools.ftp_use_of(&t.pool) {
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
    if let Some(b) = pool
        .backends
        .iter()
        .find(|b| b.protocol == BackendProtocol::Sftp)
    {
        return invalid(
            "tcp",
            origin,
            format!(
                "{in_tcp}pool `{}` has `{}`: plain TCP listeners relay bytes to host:port members; sftp:// members are for FTP clients",
                t.pool, b.name
            ),
        );
    }
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
    others.extend(named("listen", &ftp.listen));
    others.extend(named("implicit_tls_listen", &ftp.implicit_tls_listen));
    others.extend(named("proxy_protocol_listen", &ftp.proxy_protocol_listen));
    others.extend(named("gateway_listen", &ftp.gateway_listen));
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
        let (ip, (first, last)) = (ftp.passive_bind_address, ftp.passive_ports);
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
    let mut specs: Vec<BackendSpec> = Vec::new();
    for s in names {
        let name = s.trim();
        let (protocol, dial) = split_backend_name(name);
        // A pool is served one way: by FTP or through the SFTP adapter.
        if let Some(other) = specs.iter().find(|b| b.protocol != protocol) {
            let (ftp, sftp) = if protocol == BackendProtocol::Sftp {
                (&other.name[..], name)
            } else {
                (name, &other.name[..])
            };
            return invalid(
                key,
                origin,
                format!(
                    "{in_pool}`{sftp}` is an SFTP server and `{ftp}` an FTP server: a pool is all FTP or all SFTP (give each its own [pool.NAME])"
                ),
            );
        }
        // A host name that resolves to several addresses: one member each
        // (re-resolved every `backend_resolve_interval` while running).
        let mut addrs: Vec<SocketAddr> = dial
            .as_str()
            .to_socket_addrs()
            .map(|a| a.map(crate::net::canonical).collect())
            .unwrap_or_default();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return invalid(
                key,
                origin,
                format!("{in_pool}`{name}` is not host:port (or sftp://host[:port]) or does not resolve"),
            );
        }
        specs.extend(addrs.into_iter().map(|addr| BackendSpec {
            name: name.to_owned(),
            protocol,
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
) -> Result<Policy, ConfigError> {
    value
        .trim()
        .parse::<Policy>()
        .or_else(|e| invalid(key, origin, format!("{in_pool}{e}")))
}

fn weights(
    key: &'static str,
    in_pool: &str,
    backends: &mut [BackendSpec],
    table: &BTreeMap<String, i64>,
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

fn pool(name: &str, p: &PoolToml, origin: &Origin) -> Result<Pool, ConfigError> {
    let in_pool = format!("[pool.{name}]: ");
    if name == DEFAULT_POOL {
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
        None => Policy::RoundRobin,
        Some(v) => policy("pool", &in_pool, v, origin)?,
    };
    if let Some(w) = &p.weights {
        weights("pool", &in_pool, &mut backends, w, origin)?;
        not_all_standby("pool", &in_pool, &backends, Some(origin))?;
    }
    if let Some(d) = &p.drain {
        drain("pool", &in_pool, &mut backends, d, origin)?;
    }
    Ok(Pool {
        name: name.to_owned(),
        backends,
        policy,
    })
}
