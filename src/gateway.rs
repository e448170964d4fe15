//! Gateway mode, pure parts: the destination a client names in
//! `USER name@host[:port]` (the convention of SuSE's ftp-proxy and frox),
//! and the allow and deny lists every gateway destination must pass.
//!
//! No I/O here: resolution and connecting live in the session, the original
//! destination of a redirected connection in `session::net`.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The FTP control port, when `USER name@host` names none.
pub const FTP_PORT: u16 = 21;

/// A destination named by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The user name to log in with at the destination.
    pub user: String,
    /// The host as written (a name or an address, without brackets).
    pub host: String,
    /// The port (default 21).
    pub port: u16,
}

/// Why a `USER` argument names no destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No `@host` part.
    #[error("log in as user@host or user@host:port")]
    NoHost,
    /// Empty user, empty host, bad port or bad characters.
    #[error("`{0}` is not user@host[:port]")]
    Malformed(String),
}

/// Splits `name@host[:port]` at the last `@` (user names may contain `@`,
/// e.g. e-mail addresses). IPv6 hosts are written in brackets:
/// `user@[2001:db8::1]:2121`.
pub fn parse_user_at_host(arg: &str) -> Result<Named, NameError> {
    let arg = arg.trim();
    let (user, dest) = arg.rsplit_once('@').ok_or(NameError::NoHost)?;
    let bad = || NameError::Malformed(arg.to_owned());
    if user.is_empty() || dest.is_empty() {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = dest.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match dest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (dest, None),
        }
    };
    let port = match port {
        None => FTP_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
    if !host_ok {
        return Err(bad());
    }
    Ok(Named {
        user: user.to_owned(),
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// One entry of `gateway_allow` or `gateway_deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// An address or network.
    Net(IpNet),
    /// A host name, exactly (lower case).
    Host(String),
    /// `.example.com`: every name under example.com (not the name itself).
    Domain(String),
}

impl Rule {
    /// Parses a list entry: `10.0.0.0/8`, `192.0.2.7`, `ftp.example.com`,
    /// `.example.com`.
    pub fn parse(s: &str) -> Option<Rule> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Some(Rule::Net(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(Rule::Net(IpNet::from(ip)));
        }
        let name = s.strip_prefix('.').unwrap_or(s);
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return None;
        }
        let name = name.to_ascii_lowercase();
        Some(if s.starts_with('.') {
            Rule::Domain(name)
        } else {
            Rule::Host(name)
        })
    }

    fn matches_name(&self, host: &str) -> bool {
        match self {
            Rule::Host(h) => h == host,
            Rule::Domain(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|rest| rest.ends_with('.')),
            Rule::Net(_) => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            Rule::Net(n) => n.contains(&crate::net::canonical_ip(ip)),
            _ => false,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Net(n) => write!(f, "{n}"),
            Rule::Host(h) => f.write_str(h),
            Rule::Domain(d) => write!(f, ".{d}"),
        }
    }
}

/// Where gateway sessions may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `gateway_allow`: empty allows nothing (never an open relay).
    pub allow: Vec<Rule>,
    /// `gateway_deny`: always wins.
    pub deny: Vec<Rule>,
}

/// A destination refused by [`Policy::check`], with the rule's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Matched `gateway_deny`.
    #[error("{0} is in gateway_deny")]
    Denied(String),
    /// Matched nothing in `gateway_allow`.
    #[error("{0} is not in gateway_allow")]
    NotAllowed(String),
}

impl Policy {
    /// Checks a destination: `name` as the client wrote it (if it wrote
    /// one) and the address it resolved to. The deny list is checked
    /// against both; the allow list passes if either matches.
    pub fn check(&self, name: Option<&str>, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = addr.ip();
        let what = match name {
            Some(n) if n.parse::<IpAddr>().is_err() => format!("{n} ({addr})"),
            _ => addr.to_string(),
        };
        let by_name = |r: &Rule| name.is_some_and(|n| r.matches_name(n));
        if self.deny.iter().any(|r| r.matches_ip(ip) || by_name(r)) {
            return Err(Refusal::Denied(what));
        }
        if self.allow.iter().any(|r| r.matches_ip(ip) || by_name(r)) {
            return Ok(());
        }
        Err(Refusal::NotAllowed(what))
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
