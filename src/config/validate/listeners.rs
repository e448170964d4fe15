//! Where ftpgate listens: `listen`, `implicit_tls_listen`, the PROXY protocol
//! listeners and the networks allowed to send headers, `gateway_listen`,
//! `admin_listen`, the passive port range and the address it binds. Only
//! parsing and consistency: nothing is bound here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use super::{invalid, ConfigError};
use crate::config::file::{Located, RawConfig};
use crate::proto::hostport::parse_port_range;

/// Every listener address, checked.
pub(super) struct Listeners {
    /// Plain FTP listeners (may be empty when another kind is set).
    pub listen: Vec<SocketAddr>,
    /// Implicit FTPS listeners (their certificate is checked with TLS).
    pub implicit_tls_listen: Vec<SocketAddr>,
    /// Listeners that expect a PROXY protocol header.
    pub proxy_protocol_listen: Vec<SocketAddr>,
    /// Who may send PROXY headers; not empty when `proxy_protocol_listen` is not.
    pub proxy_protocol_from: Vec<IpNet>,
    /// FTP gateway listeners.
    pub gateway_listen: Vec<SocketAddr>,
    /// The metrics and admin listener, if any.
    pub admin_listen: Option<SocketAddr>,
    /// First and last passive port.
    pub passive_ports: (u16, u16),
    /// The address the passive ports bind: as set, or the default for the
    /// FTP listeners ([`default_passive_bind`]).
    pub passive_bind_address: IpAddr,
}

/// The listener settings of `raw`; among themselves, checked in the order
/// validate() always used.
pub(super) fn validate(raw: &RawConfig) -> Result<Listeners, ConfigError> {
    let listen = listen(raw)?;
    let passive_ports = match &raw.passive_ports {
        None => (50000, 50099),
        Some(l) => match parse_port_range(&l.value) {
            Some((lo, hi)) if hi - lo < 10_000 => (lo, hi),
            Some(_) => return invalid(
                "passive_ports",
                &l.origin,
                "at most 10000 ports; a small range (e.g. 100 ports) serves thousands of clients",
            ),
            None => {
                return invalid(
                    "passive_ports",
                    &l.origin,
                    format!(
                        "`{}` is not FIRST-LAST with 1 <= FIRST <= LAST <= 65535",
                        l.value
                    ),
                )
            }
        },
    };
    // The default depends on every FTP listener: chosen below.
    let passive_bind_set = match &raw.passive_bind_address {
        Some(l) => Some(l.value.trim().parse::<IpAddr>().or_else(|_| {
            invalid(
                "passive_bind_address",
                &l.origin,
                format!("`{}` is not an IP address", l.value),
            )
        })?),
        None => None,
    };
    let admin_listen = match &raw.admin_listen {
        None => None,
        Some(l) if l.value.trim().is_empty() || l.value.trim() == "off" => None,
        Some(l) => Some(l.value.trim().parse::<SocketAddr>().or_else(|_| {
            invalid(
                "admin_listen",
                &l.origin,
                format!("`{}` is not IP:port, e.g. \"127.0.0.1:9121\"", l.value),
            )
        })?),
    };
    let implicit_tls_listen = addresses(
        "implicit_tls_listen",
        &raw.implicit_tls_listen,
        ", e.g. \"0.0.0.0:990\"",
    )?;
    let proxy_protocol_listen = addresses("proxy_protocol_listen", &raw.proxy_protocol_listen, "")?;
    let proxy_protocol_from = match &raw.proxy_protocol_from {
        None => Vec::new(),
        Some(l) => l
            .value
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .or_else(|_| {
                        invalid(
                            "proxy_protocol_from",
                            &l.origin,
                            format!("`{s}` is not a network like 10.0.0.0/8 or an address"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    if let (false, true, Some(l)) = (
        proxy_protocol_listen.is_empty(),
        proxy_protocol_from.is_empty(),
        &raw.proxy_protocol_listen,
    ) {
        return invalid(
            "proxy_protocol_listen",
            &l.origin,
            "set proxy_protocol_from too: the networks of the balancers that send the headers",
        );
    }
    let gateway_listen = addresses("gateway_listen", &raw.gateway_listen, "")?;
    let passive_bind_address = match passive_bind_set {
        Some(ip) => ip,
        None => {
            let ftp: Vec<SocketAddr> = listen
                .iter()
                .chain(&implicit_tls_listen)
                .chain(&proxy_protocol_listen)
                .chain(&gateway_listen)
                .copied()
                .collect();
            default_passive_bind(&ftp).map_err(|ips| ConfigError::Needed {
                key: "passive_bind_address",
                flag: "--passive-bind-address",
                why: format!(
                    "the FTP listeners bind different addresses ({}), and the passive ports \
                     bind one: name an address clients of every listener reach, or \"0.0.0.0\" or \"::\" for all",
                    ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ")
                ),
            })?
        }
    };
    Ok(Listeners {
        listen,
        implicit_tls_listen,
        proxy_protocol_listen,
        proxy_protocol_from,
        gateway_listen,
        admin_listen,
        passive_ports,
        passive_bind_address,
    })
}

/// `listen`: required unless another kind of listener is set, since every
/// kind is a valid setup alone.
fn listen(raw: &RawConfig) -> Result<Vec<SocketAddr>, ConfigError> {
    let set = |l: &Option<Located<Vec<String>>>| l.as_ref().is_some_and(|l| !l.value.is_empty());
    let other_listeners = set(&raw.implicit_tls_listen)
        || set(&raw.proxy_protocol_listen)
        || set(&raw.gateway_listen)
        || raw.tcp.as_ref().is_some_and(|t| !t.is_empty());
    Ok(match &raw.listen {
        None if other_listeners => Vec::new(),
        None => {
            return Err(ConfigError::Missing {
                key: "listen",
                flag: "--listen",
            })
        }
        Some(l) if l.value.is_empty() && other_listeners => Vec::new(),
        Some(l) if l.value.is_empty() => {
            return invalid(
                "listen",
                &l.origin,
                "at least one address is needed, e.g. \"0.0.0.0:2121\" \
                 (or another listener: implicit_tls_listen, proxy_protocol_listen, gateway_listen, [tcp.NAME])",
            )
        }
        Some(l) => l
            .value
            .iter()
            .map(|s| {
                s.trim().parse::<SocketAddr>().or_else(|_| {
                    invalid(
                        "listen",
                        &l.origin,
                        format!("`{s}` is not IP:port (use [::]:2121 for IPv6)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    })
}

/// A list of IP:port listener addresses; `example` ends the message.
fn addresses(
    key: &'static str,
    v: &Option<Located<Vec<String>>>,
    example: &str,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let Some(l) = v else { return Ok(Vec::new()) };
    l.value
        .iter()
        .map(|s| {
            s.trim()
                .parse::<SocketAddr>()
                .or_else(|_| invalid(key, &l.origin, format!("`{s}` is not IP:port{example}")))
        })
        .collect()
}

/// The default `passive_bind_address` for FTP listeners bound at
/// `listeners`: the address they all bind; a wildcard when one of them binds
/// one (`::`, which serves IPv4 too, when any of them is IPv6), since its
/// clients may arrive on any address. `Err` with the distinct addresses when
/// they bind different specific ones: no one address fits them all. Without
/// FTP listeners, 0.0.0.0 (nothing is bound then).
pub fn default_passive_bind(listeners: &[SocketAddr]) -> Result<IpAddr, Vec<IpAddr>> {
    if listeners.iter().any(|a| a.ip().is_unspecified()) {
        return Ok(if listeners.iter().any(|a| a.is_ipv6()) {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
    }
    let mut distinct: Vec<IpAddr> = Vec::new();
    for a in listeners {
        if !distinct.contains(&a.ip()) {
            distinct.push(a.ip());
        }
    }
    match distinct[..] {
        [] => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        [one] => Ok(one),
        _ => Err(distinct),
    }
}

/// Whether two listen addresses cannot both be bound: same port, and the
/// same IP or a wildcard covering the other (`[::]` is bound dual-stack, so
/// it covers IPv4 too). Port 0 (any free port) never collides.
pub(super) fn listen_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |w: IpAddr, x: IpAddr| w.is_unspecified() && (w.is_ipv6() || x.is_ipv4());
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}
