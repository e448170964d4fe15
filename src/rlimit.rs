//! The open-files limit (RLIMIT_NOFILE): raised at start from the soft
//! limit ftpgate was started with (1024 outside systemd) to the hard limit,
//! and the number of sessions that fit, logged, with a warning when
//! `max_sessions` does not fit. The arithmetic ([`sessions_that_fit`],
//! [`fixed_descriptors`]) is pure; [`raise_to_hard_limit`] is the one call
//! that changes the process.

use crate::config::Config;

/// Descriptors one session may hold at once: the client's and the backend's
/// control connections, a data connection's two legs, and while a transfer
/// relays a second descriptor of its backend leg (for quick ACKs, see
/// [`crate::data::relay::RelayLimits::quickack`]).
pub const PER_SESSION: u64 = 5;

/// Descriptors kept for everything else: stdio, the runtime's epoll and
/// wake-up descriptors, the transfer log, health checks, name lookups and
/// admin requests.
pub const HEADROOM: u64 = 64;

/// The limit on Linux when the hard limit is unlimited and
/// /proc/sys/fs/nr_open cannot be read (its default).
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// Descriptors `config` holds whatever the load: every listener, and the
/// passive range (each port is bound at start) when FTP is served.
pub fn fixed_descriptors(config: &Config) -> u64 {
    let listeners = config.listen.len()
        + config.implicit_tls_listen.len()
        + config.proxy_protocol_listen.len()
        + config.gateway_listen.len()
        + config.tcp.iter().map(|t| t.listen.len()).sum::<usize>()
        + usize::from(config.admin_listen.is_some());
    let (first, last) = config.passive_ports;
    let passive = if config.serves_ftp() {
        u64::from(last - first) + 1
    } else {
        0
    };
    listeners as u64 + passive
}

/// How many sessions fit in `limit` open files after `fixed` descriptors
/// and [`HEADROOM`], at [`PER_SESSION`] each.
pub fn sessions_that_fit(limit: u64, fixed: u64) -> u64 {
    limit.saturating_sub(fixed.saturating_add(HEADROOM)) / PER_SESSION
}

/// The open-files limits before and after [`raise_to_hard_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit ftpgate was started with.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
    /// The hard limit (the most an unprivileged process may raise to).
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard limit (capped at the
/// kernel's `nr_open` when the hard limit is unlimited).
pub fn raise_to_hard_limit() -> nix::Result<OpenFiles> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(NR_OPEN_DEFAULT)
    } else {
        hard
    };
    if before < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    }
    let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(OpenFiles { before, now, hard })
}

/// Raises the limit and logs how many sessions fit; warns when
/// `max_sessions` does not. Call before binding: the passive range alone
/// may need more than a soft limit of 1024.
pub fn raise_and_report(config: &Config) {
    let files = match raise_to_hard_limit() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit (RLIMIT_NOFILE)");
            return;
        }
    };
    let fixed = fixed_descriptors(config);
    let fit = sessions_that_fit(files.now, fixed);
    tracing::info!(
        open_files = files.now,
        started_with = files.before,
        hard_limit = files.hard,
        sessions = fit,
        "open-files limit: {fit} sessions fit ({PER_SESSION} files each, after {fixed} for listeners and passive ports)"
    );
    if (config.max_sessions as u64) > fit {
        let needed = (config.max_sessions as u64)
            .saturating_mul(PER_SESSION)
            .saturating_add(fixed + HEADROOM);
        tracing::warn!(
            max_sessions = config.max_sessions,
            sessions = fit,
            open_files = files.now,
            "max_sessions = {} needs about {needed} open files, but the limit is {}: past about {fit} sessions, \
             new connections fail; raise the hard limit (systemd LimitNOFILE=, ulimit -Hn) or lower max_sessions",
            config.max_sessions,
            files.now
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_fit_after_listeners_and_headroom() {
        // 1024 files, a 100-port range and two listeners.
        assert_eq!(sessions_that_fit(1024, 102), (1024 - 102 - HEADROOM) / 5);
        assert_eq!(sessions_that_fit(1024, 102), 171);
        assert_eq!(sessions_that_fit(4096, 102), 786);
        assert_eq!(sessions_that_fit(1_048_576, 10_005), 207_701);
        // Not even the listeners fit: none, not a wrap-around.
        assert_eq!(sessions_that_fit(100, 10_000), 0);
        assert_eq!(sessions_that_fit(u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn fixed_descriptors_count_listeners_and_the_passive_range() {
        let c = crate::config::validate(
            &crate::config::file::parse_str(
                std::path::Path::new("t.toml"),
                "listen = [\"127.0.0.1:2121\", \"127.0.0.1:2122\"]\nbackends = [\"127.0.0.1:21\"]\n\
                 admin_listen = \"127.0.0.1:9121\"\npassive_ports = \"50000-50099\"\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(fixed_descriptors(&c), 2 + 1 + 100);
    }
}
