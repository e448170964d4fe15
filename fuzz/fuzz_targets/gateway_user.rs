//! Gateway mode: `USER name@host[:port]` arguments and allow/deny list
//! entries (`gateway::parse_user_at_host`, `gateway::Rule::parse`).
//!
//! Input: raw bytes as a client's USER argument (lossy UTF-8, as the
//! session reads it) and, split at the first NUL, a list entry.
//!
//! Checks: neither parser panics; a parsed destination has a non-empty
//! user and host, a non-zero port, a host of allowed characters and lower
//! case, and writing it back as `user@host:port` (brackets for IPv6)
//! parses to the same; a parsed rule prints to text that parses to the
//! same rule; a policy check against any address never panics.

#![no_main]

use std::net::SocketAddr;

use ftpgate::gateway::{parse_user_at_host, Policy, Rule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (arg, entry) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let arg = String::from_utf8_lossy(arg);
    if let Ok(n) = parse_user_at_host(&arg) {
        assert!(!n.user.is_empty() && !n.host.is_empty() && n.port != 0, "{n:?}");
        assert_eq!(n.host, n.host.to_ascii_lowercase());
        assert!(n.host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c)));
        let host = if n.host.contains(':') {
            format!("[{}]", n.host)
        } else {
            n.host.clone()
        };
        let again = parse_user_at_host(&format!("{}@{}:{}", n.user, host, n.port));
        // A bare IPv6 host without brackets is read as host:port; the
        // bracketed form always round-trips.
        if !n.host.contains(':') || n.host.parse::<std::net::Ipv6Addr>().is_ok() {
            assert_eq!(again.as_ref(), Ok(&n), "{arg:?}");
        }
    }
    let entry = String::from_utf8_lossy(entry);
    if let Some(rule) = Rule::parse(&entry) {
        assert_eq!(Rule::parse(&rule.to_string()), Some(rule.clone()), "{entry:?}");
        let policy = Policy {
            allow: vec![rule.clone()],
            deny: vec![rule],
        };
        let addr = SocketAddr::from(([192, 0, 2, 1], 21));
        assert!(policy.check(Some(&arg), addr).is_err(), "deny must win");
    }
});
