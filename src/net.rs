//! Role-typed addresses and address classification.
//!
//! A [`PublicAddr`] is what ftpgate advertises to clients; a [`BackendAddr`]
//! is a server behind it; a [`ClientAddr`] is the peer of a client control
//! connection. Keeping them apart in types stops a backend's private address
//! from ever reaching a 227 reply. IPv4-mapped IPv6 addresses are folded to
//! IPv4 so that comparisons work on dual-stack listeners. No I/O here.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::decimal::Decimal;

/// Folds `::ffff:a.b.c.d` to `a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Folds the IP of a socket address; see [`canonical_ip`].
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// Addresses a NAT may hide a client behind: RFC 1918, RFC 6598 shared space,
/// link-local, loopback, unspecified, and IPv6 unique-local and link-local.
pub fn is_private(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (s & 0xfe00) == 0xfc00
                || (s & 0xffc0) == 0xfe80
        }
    }
}

/// The peer address of a client control or data connection (canonical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(SocketAddr);

impl ClientAddr {
    /// Wraps and canonicalises a peer address.
    pub fn new(addr: SocketAddr) -> Self {
        ClientAddr(canonical(addr))
    }
    /// The socket address.
    pub fn addr(self) -> SocketAddr {
        self.0
    }
    /// The IP address.
    pub fn ip(self) -> IpAddr {
        self.0.ip()
    }
}

/// The address of a backend server's control or data port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendAddr(pub SocketAddr);

/// The address ftpgate advertises to a client in a 227 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicAddr(IpAddr);

impl PublicAddr {
    /// Wraps and canonicalises an advertised address.
    pub fn new(ip: IpAddr) -> Self {
        PublicAddr(canonical_ip(ip))
    }
    /// The IP address.
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

/// Writes `addr` exactly as its `Display` does (`192.0.2.1:21`,
/// `[2001:db8::1]:21`, padded to a width if one is asked for), an IPv4
/// address straight into a small buffer: std's goes through six nested
/// format calls (about 1,300 instructions), and every session logs its
/// client's address twice and its backend's once.
fn fmt_socket_addr(addr: SocketAddr, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let SocketAddr::V4(v4) = addr else {
        return fmt::Display::fmt(&addr, f);
    };
    // "255.255.255.255:65535"
    let mut buf = [0u8; 21];
    let mut n = 0;
    let mut put = |part: &[u8]| {
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    };
    let [a, b, c, d] = v4.ip().octets();
    for (octet, sep) in [(a, b"."), (b, b"."), (c, b"."), (d, b":")] {
        put(Decimal::new(octet.into()).as_bytes());
        put(sep);
    }
    put(Decimal::new(v4.port().into()).as_bytes());
    // Only ASCII digits, dots and a colon were written.
    f.pad(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_socket_addr(self.0, f)
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_socket_addr(self.0, f)
    }
}

impl fmt::Display for PublicAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A control listener's bound address: its metrics label and the key of
/// its per-listener settings (`[tls_for_listener]`, `[pool_for_listener]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr(SocketAddr);

impl ListenAddr {
    /// Wraps a bound listener address.
    pub fn new(addr: SocketAddr) -> Self {
        ListenAddr(addr)
    }
    /// The socket address.
    pub fn addr(self) -> SocketAddr {
        self.0
    }
    /// The metrics label.
    pub fn label(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_socket_addr(self.0, f)
    }
}

/// A list of IP networks an address may fall in (`backend_data_networks`):
/// plain data, so the session core can check an address against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<ipnet::IpNet>);

impl Networks {
    /// Whether `ip` (IPv4-mapped folded) is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The addresses' own formatting writes what std's does, padded
        /// or not.
        #[test]
        fn addresses_format_as_std_does(ip in any::<u32>(), port in any::<u16>(), v6 in any::<u128>(), width in 0usize..30) {
            for a in [
                SocketAddr::from((std::net::Ipv4Addr::from(ip), port)),
                SocketAddr::from((std::net::Ipv6Addr::from(v6), port)),
            ] {
                prop_assert_eq!(ClientAddr(a).to_string(), a.to_string());
                prop_assert_eq!(BackendAddr(a).to_string(), a.to_string());
                prop_assert_eq!(ListenAddr(a).to_string(), a.to_string());
                prop_assert_eq!(format!("{:>width$}", ClientAddr(a)), format!("{:>width$}", a));
                prop_assert_eq!(format!("{:<width$}|", BackendAddr(a)), format!("{:<width$}|", a));
            }
        }
    }

    #[test]
    fn address_edges_format_as_std_does() {
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.0.0.1:21",
            "127.0.0.1:100",
            "[::1]:21",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(ClientAddr(a).to_string(), a.to_string());
        }
    }

    #[test]
    fn private_table() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "fd00::1",
            "fe80::1",
            "::1",
            "::ffff:192.168.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "203.0.113.10",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn networks_contain_addresses_mapped_or_not() {
        let n = Networks(vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::5/128".parse().unwrap(),
        ]);
        for (ip, inside) in [
            ("10.9.8.7", true),
            ("::ffff:10.1.1.1", true),
            ("11.0.0.1", false),
            ("2001:db8::5", true),
            ("2001:db8::6", false),
        ] {
            assert_eq!(n.contains(ip.parse().unwrap()), inside, "{ip}");
        }
        assert!(!Networks::default().contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn mapped_addresses_fold() {
        let a = ClientAddr::new("[::ffff:127.0.0.1]:5000".parse().unwrap());
        assert_eq!(a.addr(), "127.0.0.1:5000".parse().unwrap());
    }
}
