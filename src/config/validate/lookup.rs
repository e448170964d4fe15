//! Per-user routing by the operator's HTTP service: `user_lookup_url` and
//! the `user_lookup_*` keys that tune it. The URL template is checked
//! (placeholders, host, scheme), the fallback pool against the pools, and
//! for an `https://` service its CA file is read (or the system's CA
//! certificates loaded); no request is made.

use std::time::Duration;

use super::pools::Pools;
use super::{count, flag, invalid, parse_duration, relative_to_file, ConfigError};
use crate::config::file::{Located, RawConfig};
use crate::config::{LookupSettings, TcpService, DEFAULT_POOL};
use crate::lookup::{http, UrlTemplate};

/// Default of `user_lookup_timeout`.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Default of `user_lookup_cache_ttl`.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Default of `user_lookup_unknown_ttl` (capped by the cache TTL).
const UNKNOWN_TTL: Duration = Duration::from_secs(5);
/// Default of `user_lookup_cache_size`.
const CACHE_SIZE: u64 = 10_000;

/// A duration that may be zero (zero: nothing is cached).
fn ttl(
    key: &'static str,
    v: &Option<Located<String>>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(l) = v else { return Ok(default) };
    parse_duration(&l.value).map_or_else(
        || {
            invalid(
                key,
                &l.origin,
                format!(
                    "`{}` is not a duration (examples: \"0s\" to keep nothing, \"5s\", \"1m\")",
                    l.value
                ),
            )
        },
        Ok,
    )
}

/// The `user_lookup_*` settings of `raw`; `None` without `user_lookup_url`.
pub(super) fn validate(
    raw: &RawConfig,
    pools: &Pools,
    tcp: &[TcpService],
) -> Result<Option<LookupSettings>, ConfigError> {
    let Some(url_l) = &raw.user_lookup_url else {
        // Every other user_lookup_* key needs the URL.
        let set = [
            (
                "user_lookup_timeout",
                raw.user_lookup_timeout.as_ref().map(|l| &l.origin),
            ),
            (
                "user_lookup_cache_ttl",
                raw.user_lookup_cache_ttl.as_ref().map(|l| &l.origin),
            ),
            (
                "user_lookup_unknown_ttl",
                raw.user_lookup_unknown_ttl.as_ref().map(|l| &l.origin),
            ),
            (
                "user_lookup_cache_size",
                raw.user_lookup_cache_size.as_ref().map(|l| &l.origin),
            ),
            (
                "user_lookup_fallback_pool",
                raw.user_lookup_fallback_pool.as_ref().map(|l| &l.origin),
            ),
            (
                "user_lookup_any_backend",
                raw.user_lookup_any_backend.as_ref().map(|l| &l.origin),
            ),
            (
                "user_lookup_ca",
                raw.user_lookup_ca.as_ref().map(|l| &l.origin),
            ),
        ];
        if let Some((key, Some(origin))) = set.into_iter().find(|(_, o)| o.is_some()) {
            return invalid(
                key,
                origin,
                "it only applies with user_lookup_url: set it too",
            );
        }
        return Ok(None);
    };
    let url = UrlTemplate::parse(&url_l.value)
        .or_else(|e| invalid("user_lookup_url", &url_l.origin, e))?;
    let timeout = super::duration("user_lookup_timeout", &raw.user_lookup_timeout, TIMEOUT)?;
    let cache_ttl = ttl(
        "user_lookup_cache_ttl",
        &raw.user_lookup_cache_ttl,
        CACHE_TTL,
    )?;
    let unknown_ttl = match &raw.user_lookup_unknown_ttl {
        None => UNKNOWN_TTL.min(cache_ttl),
        Some(l) => {
            let d = ttl(
                "user_lookup_unknown_ttl",
                &raw.user_lookup_unknown_ttl,
                UNKNOWN_TTL,
            )?;
            if d > cache_ttl {
                return invalid(
                    "user_lookup_unknown_ttl",
                    &l.origin,
                    format!(
                        "{d:?} is longer than user_lookup_cache_ttl ({cache_ttl:?}): unknown users are kept for less"
                    ),
                );
            }
            d
        }
    };
    let cache_size = count(
        "user_lookup_cache_size",
        &raw.user_lookup_cache_size,
        CACHE_SIZE,
        (1, 10_000_000),
    )? as usize;
    let fallback_pool = match &raw.user_lookup_fallback_pool {
        None => None,
        Some(l) => {
            let name = l.value.trim();
            let exists = (name == DEFAULT_POOL && !pools.backends.is_empty())
                || pools.pools.iter().any(|p| p.name == name);
            if !exists {
                return invalid(
                    "user_lookup_fallback_pool",
                    &l.origin,
                    format!("no pool is named `{name}` (pools: `default` from `backends`, and each [pool.NAME])"),
                );
            }
            if let Some(t) = tcp.iter().find(|t| t.pool == name) {
                return invalid(
                    "user_lookup_fallback_pool",
                    &l.origin,
                    format!(
                        "pool `{name}` serves the plain TCP listeners of [tcp.{}], not FTP",
                        t.name
                    ),
                );
            }
            Some(name.to_owned())
        }
    };
    let ca = raw.user_lookup_ca.as_ref().map(relative_to_file);
    if let (false, Some(l)) = (url.is_https(), &raw.user_lookup_ca) {
        return invalid(
            "user_lookup_ca",
            &l.origin,
            "user_lookup_url is http://: there is no certificate to verify (use https://)",
        );
    }
    let tls = if url.is_https() {
        let origin = raw.user_lookup_ca.as_ref().unwrap_or(url_l);
        let key = if ca.is_some() {
            "user_lookup_ca"
        } else {
            "user_lookup_url"
        };
        Some(http::client_config(ca.as_deref()).or_else(|e| invalid(key, &origin.origin, e))?)
    } else {
        None
    };
    Ok(Some(LookupSettings {
        url,
        timeout,
        cache_ttl,
        unknown_ttl,
        cache_size,
        fallback_pool,
        any_backend: flag(&raw.user_lookup_any_backend, false),
        ca,
        tls,
    }))
}
