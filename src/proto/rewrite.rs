//! Pure rewriting decisions for the data-connection commands and replies.
//!
//! - backend 227/229 -> the backend's data address ([`backend_data_addr`]),
//!   and whether ftpgate may connect there ([`backend_data_allowed`]);
//! - ftpgate's public address and port -> the client's 227/229 ([`client_passive_reply`]);
//! - a client's PORT/EPRT -> the address ftpgate may connect to ([`check_active_target`]);
//! - a backend FEAT reply -> one that advertises what ftpgate provides ([`rewrite_feat`]).
//!
//! No I/O here: addresses in, addresses and replies out.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use super::hostport::{
    format_227, format_229, format_eprt_arg, format_port_arg, parse_227_text, parse_229_text,
};
use super::reply::Reply;
use crate::net::{canonical, canonical_ip, is_private, BackendAddr, Networks, PublicAddr};

/// Which passive command ftpgate sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveCommand {
    /// PASV, answered by 227.
    Pasv,
    /// EPSV, answered by 229.
    Epsv,
}

impl PassiveCommand {
    /// The command line to send.
    pub fn line(self) -> &'static [u8] {
        match self {
            PassiveCommand::Pasv => b"PASV\r\n",
            PassiveCommand::Epsv => b"EPSV\r\n",
        }
    }
}

/// A backend passive reply that could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveReplyError {
    /// The backend refused the command in a way that suggests the other one may work (500, 501, 502, 504).
    Unsupported,
    /// Any other refusal (4xx, 5xx).
    Refused,
    /// A 227/229 whose address or port could not be found, or a success of another code.
    Malformed,
}

/// The backend's data address from its reply to PASV or EPSV.
///
/// The address inside a 227 is ignored unless `trust_227_address` is set: the
/// backend's control address is used with the port from the reply, because
/// servers behind NAT name private or wrong addresses (BRIEF field problem 1).
pub fn backend_data_addr(
    reply: &Reply,
    sent: PassiveCommand,
    backend: BackendAddr,
    trust_227_address: bool,
) -> Result<BackendAddr, PassiveReplyError> {
    let text = reply
        .lines
        .iter()
        .flat_map(|l| l.get(4..).unwrap_or(&[]).iter().copied().chain([b' ']))
        .collect::<Vec<u8>>();
    match (reply.code, sent) {
        (227, PassiveCommand::Pasv) => {
            let named = parse_227_text(&text).ok_or(PassiveReplyError::Malformed)?;
            if named.port() == 0 {
                return Err(PassiveReplyError::Malformed);
            }
            let ip = if trust_227_address && !named.ip().is_unspecified() {
                IpAddr::V4(*named.ip())
            } else {
                backend.0.ip()
            };
            Ok(BackendAddr(canonical(SocketAddr::new(ip, named.port()))))
        }
        (229, PassiveCommand::Epsv) => {
            let port = parse_229_text(&text).ok_or(PassiveReplyError::Malformed)?;
            Ok(BackendAddr(SocketAddr::new(backend.0.ip(), port)))
        }
        (500 | 501 | 502 | 504 | 522, _) => Err(PassiveReplyError::Unsupported),
        (400..=599, _) => Err(PassiveReplyError::Refused),
        _ => Err(PassiveReplyError::Malformed),
    }
}

/// Whether ftpgate may connect to `addr` for a data connection of the
/// session whose backend is `backend`: the backend's own address, or one in
/// `networks` (`backend_data_networks`). A backend trusted for its 227
/// address (`trust_backend_pasv_address`) must not be a lever to make
/// ftpgate connect anywhere the operator did not allow (SSRF, FTP bounce
/// from the server side, RFC 2577).
pub fn backend_data_allowed(addr: BackendAddr, backend: BackendAddr, networks: &Networks) -> bool {
    let ip = canonical_ip(addr.0.ip());
    ip == canonical_ip(backend.0.ip()) || networks.contains(ip)
}

/// Which passive command the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPassive {
    /// PASV: the reply names an IPv4 address and port.
    Pasv,
    /// EPSV: the reply names the port only.
    Epsv,
}

/// The reply to a client's PASV or EPSV, naming `public` and `port`.
///
/// Returns `None` for PASV when the public address is IPv6: a 227 cannot
/// express it (RFC 2428 exists for that), so the caller answers 425.
pub fn client_passive_reply(kind: ClientPassive, public: PublicAddr, port: u16) -> Option<Reply> {
    match kind {
        ClientPassive::Epsv => Some(Reply::from_line(format_229(port))),
        ClientPassive::Pasv => match public.ip() {
            IpAddr::V4(v4) => Some(Reply::from_line(format_227(SocketAddrV4::new(v4, port)))),
            IpAddr::V6(_) => None,
        },
    }
}

/// Why a PORT/EPRT target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveRefusal {
    /// Port below 1024 (RFC 2577 section 3).
    PrivilegedPort,
    /// An address other than the client's own: an FTP bounce attempt (RFC 2577).
    ForeignHost,
}

/// The address ftpgate may connect to for a client's PORT/EPRT.
///
/// Accepts the client's own address. With `nat_fix`, a private address that
/// differs from the control connection's peer is taken for a client behind
/// NAT and replaced by that peer's address, keeping the port (BRIEF field
/// problem 5). Returns the target and whether the address was replaced.
pub fn check_active_target(
    named: SocketAddr,
    client_ip: IpAddr,
    nat_fix: bool,
) -> Result<(SocketAddr, bool), ActiveRefusal> {
    let named = canonical(named);
    let client_ip = canonical_ip(client_ip);
    if named.port() < 1024 {
        return Err(ActiveRefusal::PrivilegedPort);
    }
    if named.ip() == client_ip {
        return Ok((named, false));
    }
    if nat_fix && is_private(named.ip()) {
        return Ok((SocketAddr::new(client_ip, named.port()), true));
    }
    Err(ActiveRefusal::ForeignHost)
}

/// The PORT or EPRT command that tells the backend to connect to `addr`.
pub fn backend_active_command(addr: SocketAddr) -> String {
    match canonical(addr) {
        SocketAddr::V4(v4) => format!("PORT {}\r\n", format_port_arg(v4)),
        v6 => format!("EPRT {}\r\n", format_eprt_arg(v6)),
    }
}

/// Features a FEAT reply line names: its first word, upper-cased.
fn feature_name(line: &[u8]) -> Vec<u8> {
    let t = line.trim_ascii_start();
    let end = t.iter().position(|&c| c == b' ').unwrap_or(t.len());
    t[..end].to_ascii_uppercase()
}

/// Rewrites a backend's FEAT reply (RFC 2389) to describe what the client
/// gets through ftpgate: `provided` features are added if missing, and
/// `withheld` ones (which ftpgate cannot carry, e.g. AUTH while FTPS is not
/// supported) are removed. A reply left with no features becomes `211 End`
/// framing of an empty list, which RFC 2389 allows.
pub fn rewrite_feat(reply: &Reply, provided: &[&str], withheld: &[&str]) -> Reply {
    if reply.code != 211 || reply.lines.is_empty() {
        return reply.clone();
    }
    let n = reply.lines.len();
    let middle: Vec<&bytes::Bytes> = if n > 2 {
        reply.lines[1..n - 1].iter().collect()
    } else {
        Vec::new()
    };
    let kept: Vec<bytes::Bytes> = middle
        .into_iter()
        .filter(|l| !withheld.iter().any(|w| feature_name(l) == w.as_bytes()))
        .cloned()
        .collect();
    let missing: Vec<bytes::Bytes> = provided
        .iter()
        .filter(|f| !kept.iter().any(|l| feature_name(l) == f.as_bytes()))
        .map(|f| bytes::Bytes::from(format!(" {f}")))
        .collect();
    let mut lines = Vec::with_capacity(kept.len() + provided.len() + 2);
    lines.push(if n > 1 {
        reply.lines[0].clone()
    } else {
        bytes::Bytes::from_static(b"211-Features:")
    });
    lines.extend(kept);
    lines.extend(missing);
    lines.push(if n > 1 {
        reply.lines[n - 1].clone()
    } else {
        bytes::Bytes::from_static(b"211 End")
    });
    if lines.len() == 2 && n == 1 {
        return reply.clone();
    }
    Reply { code: 211, lines }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reply::parse_reply_lines;
    use proptest::prelude::*;

    fn reply(lines: &[&str]) -> Reply {
        let v: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        parse_reply_lines(&v).unwrap()
    }

    fn backend() -> BackendAddr {
        BackendAddr("127.0.0.2:21".parse().unwrap())
    }

    #[test]
    fn pasv_address_is_not_trusted_by_default() {
        let r = reply(&["227 Entering Passive Mode (192,168,1,1,243,172)."]);
        assert_eq!(
            backend_data_addr(&r, PassiveCommand::Pasv, backend(), false),
            Ok(BackendAddr("127.0.0.2:62380".parse().unwrap()))
        );
        assert_eq!(
            backend_data_addr(&r, PassiveCommand::Pasv, backend(), true),
            Ok(BackendAddr("192.168.1.1:62380".parse().unwrap()))
        );
        let zero = reply(&["227 Entering Passive Mode (0,0,0,0,243,172)."]);
        assert_eq!(
            backend_data_addr(&zero, PassiveCommand::Pasv, backend(), true),
            Ok(BackendAddr("127.0.0.2:62380".parse().unwrap()))
        );
    }

    #[test]
    fn backend_data_address_must_be_the_backends_or_allowed() {
        let nets = Networks(vec!["10.20.0.0/16".parse().unwrap()]);
        for (addr, networks, allowed) in [
            ("127.0.0.2:5000", &Networks::default(), true),
            ("[::ffff:127.0.0.2]:5000", &Networks::default(), true),
            ("127.0.0.3:5000", &Networks::default(), false),
            ("169.254.169.254:80", &Networks::default(), false),
            ("10.20.1.1:5000", &Networks::default(), false),
            ("10.20.1.1:5000", &nets, true),
            ("10.21.1.1:5000", &nets, false),
            ("127.0.0.2:5000", &nets, true),
        ] {
            let a = BackendAddr(addr.parse().unwrap());
            assert_eq!(
                backend_data_allowed(a, backend(), networks),
                allowed,
                "{addr} {networks:?}"
            );
        }
    }

    #[test]
    fn passive_reply_table() {
        let b = backend();
        let cases: &[(&[&str], PassiveCommand, Result<u16, PassiveReplyError>)] = &[
            (
                &["229 Entering Extended Passive Mode (|||6446|)"],
                PassiveCommand::Epsv,
                Ok(6446),
            ),
            (
                &["227-Entering Passive Mode", "227 =127,0,0,2,4,1"],
                PassiveCommand::Pasv,
                Ok(1025),
            ),
            (
                &["227 Entering Passive Mode (127,0,0,2,4)"],
                PassiveCommand::Pasv,
                Err(PassiveReplyError::Malformed),
            ),
            (
                &["227 Entering Passive Mode (127,0,0,2,0,0)"],
                PassiveCommand::Pasv,
                Err(PassiveReplyError::Malformed),
            ),
            (
                &["229 Entering Extended Passive Mode (|||6446|)"],
                PassiveCommand::Pasv,
                Err(PassiveReplyError::Malformed),
            ),
            (
                &["200 OK"],
                PassiveCommand::Epsv,
                Err(PassiveReplyError::Malformed),
            ),
            (
                &["500 Unknown command"],
                PassiveCommand::Epsv,
                Err(PassiveReplyError::Unsupported),
            ),
            (
                &["425 Cannot open"],
                PassiveCommand::Epsv,
                Err(PassiveReplyError::Refused),
            ),
        ];
        for (lines, sent, want) in cases {
            let got = backend_data_addr(&reply(lines), *sent, b, false).map(|a| a.0.port());
            assert_eq!(got, *want, "{lines:?}");
        }
    }

    #[test]
    fn client_replies() {
        let p4 = PublicAddr::new("203.0.113.10".parse().unwrap());
        let p6 = PublicAddr::new("2001:db8::1".parse().unwrap());
        assert_eq!(
            client_passive_reply(ClientPassive::Pasv, p4, 50001)
                .unwrap()
                .to_bytes(),
            "227 Entering Passive Mode (203,0,113,10,195,81).\r\n"
        );
        assert_eq!(
            client_passive_reply(ClientPassive::Epsv, p6, 50001)
                .unwrap()
                .to_bytes(),
            "229 Entering Extended Passive Mode (|||50001|)\r\n"
        );
        assert_eq!(client_passive_reply(ClientPassive::Pasv, p6, 50001), None);
    }

    #[test]
    fn active_target_table() {
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let ok = |s: &str, fixed| Ok((s.parse::<SocketAddr>().unwrap(), fixed));
        assert_eq!(
            check_active_target("198.51.100.7:5000".parse().unwrap(), client, true),
            ok("198.51.100.7:5000", false)
        );
        assert_eq!(
            check_active_target("192.168.1.5:5000".parse().unwrap(), client, true),
            ok("198.51.100.7:5000", true)
        );
        assert_eq!(
            check_active_target("192.168.1.5:5000".parse().unwrap(), client, false),
            Err(ActiveRefusal::ForeignHost)
        );
        assert_eq!(
            check_active_target("203.0.113.99:5000".parse().unwrap(), client, true),
            Err(ActiveRefusal::ForeignHost)
        );
        assert_eq!(
            check_active_target("198.51.100.7:21".parse().unwrap(), client, true),
            Err(ActiveRefusal::PrivilegedPort)
        );
        assert_eq!(
            check_active_target("[::ffff:198.51.100.7]:2000".parse().unwrap(), client, false),
            ok("198.51.100.7:2000", false)
        );
        let c6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(
            check_active_target("[fd00::5]:2000".parse().unwrap(), c6, true),
            ok("[2001:db8::7]:2000", true)
        );
    }

    #[test]
    fn backend_active_commands() {
        assert_eq!(
            backend_active_command("127.0.0.1:1025".parse().unwrap()),
            "PORT 127,0,0,1,4,1\r\n"
        );
        assert_eq!(
            backend_active_command("[::1]:1025".parse().unwrap()),
            "EPRT |2|::1|1025|\r\n"
        );
    }

    #[test]
    fn feat_gains_epsv_and_eprt_once() {
        let r = reply(&["211-Features:", " EPSV", " MDTM", "211 End"]);
        let got = rewrite_feat(&r, &["EPSV", "EPRT"], &[]);
        assert_eq!(
            &got.to_bytes()[..],
            b"211-Features:\r\n EPSV\r\n MDTM\r\n EPRT\r\n211 End\r\n"
        );
        let none = reply(&["211 No features"]);
        assert_eq!(
            &rewrite_feat(&none, &["EPSV"], &[]).to_bytes()[..],
            b"211-Features:\r\n EPSV\r\n211 End\r\n"
        );
        let err = reply(&["500 FEAT not understood"]);
        assert_eq!(rewrite_feat(&err, &["EPSV"], &[]), err);
        let tls = reply(&[
            "211-Extensions supported:",
            " AUTH TLS",
            " PBSZ",
            " PROT",
            " SIZE",
            " epsv",
            "211 End.",
        ]);
        assert_eq!(
            &rewrite_feat(&tls, &["EPSV", "EPRT"], &["AUTH", "PBSZ", "PROT", "CCC"]).to_bytes()[..],
            b"211-Extensions supported:\r\n SIZE\r\n epsv\r\n EPRT\r\n211 End.\r\n"
        );
    }

    proptest! {
        /// The rewrite changes only the address: the port the client sees is the one leased.
        #[test]
        fn rewrite_keeps_port_changes_address(b in any::<[u8;4]>(), bport in 1u16.., pubip in any::<[u8;4]>(), port in 1u16..) {
            let r = Reply::from_line(format_227(SocketAddrV4::new(b.into(), bport)));
            let data = backend_data_addr(&r, PassiveCommand::Pasv, backend(), false).unwrap();
            prop_assert_eq!(data.0, SocketAddr::new(backend().0.ip(), bport));
            let out = client_passive_reply(ClientPassive::Pasv, PublicAddr::new(IpAddr::V4(pubip.into())), port).unwrap();
            prop_assert_eq!(parse_227_text(out.first_text()), Some(SocketAddrV4::new(pubip.into(), port)));
        }
    }
}
