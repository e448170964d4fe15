//! PROXY protocol headers, versions 1 and 2 (HAProxy's `proxy-protocol.txt`).
//!
//! A trusted load balancer puts one header in front of a TCP connection to
//! say whose connection it relays; ftpgate reads it on listeners that accept
//! it and writes one toward backends that ask for it. [`parse`] is given the
//! bytes received so far and says as early as it can whether they hold a
//! complete header, need more bytes, or can never become a valid header.
//! `consumed` is exact: whatever follows the header (a client's first FTP
//! command, the first bytes of an upload) belongs to the connection.
//!
//! No I/O here, and no timer. In FTP the server speaks first, so a control
//! connection without a header is usually silent rather than wrong: the
//! caller must bound the wait itself (section 2: at least 3 seconds).
//! Addresses are returned as sent; an IPv4-mapped one is not folded here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nom::bytes::complete::{take, take_while_m_n};
use nom::combinator::{all_consuming, map, map_res, verify};
use nom::multi::many0_count;
use nom::number::complete::{be_u128, be_u16, be_u32, u8 as byte};
use nom::sequence::tuple;
use nom::IResult;

/// Longest v1 line, CRLF included: `PROXY UNKNOWN` with two full-length IPv6
/// addresses and ports (section 2.1).
const MAX_V1_LEN: usize = 107;

/// Largest v2 address-plus-TLV block accepted. The spec allows 65535 bytes;
/// real senders put addresses and a few short TLVs there (TLS details, a
/// unique ID of at most 128 bytes, a cloud endpoint ID), so 4 KiB is ample
/// and bounds what a peer can make us buffer.
const MAX_V2_BLOCK: usize = 4096;

/// The bytes a caller may have to buffer before [`parse`] decides: with this
/// many bytes it never answers [`Parsed::Incomplete`].
pub const MAX_HEADER_LEN: usize = V2_FIXED + MAX_V2_BLOCK;

const V1_SIGNATURE: &[u8] = b"PROXY";

/// Section 2.2: chosen to be rejected early by common protocols' parsers.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family/protocol, block length.
const V2_FIXED: usize = 16;

/// Version 2 in the high nibble, PROXY command in the low one.
const V2_PROXY: u8 = 0x21;
/// TCP over IPv4 (AF_INET, STREAM) and over IPv6 (AF_INET6, STREAM).
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// What a complete header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection was relayed on behalf of a client.
    Proxy {
        /// The client: the address to route, log and check data connections by.
        source: SocketAddr,
        /// The address the client connected to, as the relaying proxy saw it.
        destination: SocketAddr,
    },
    /// v2 `LOCAL` (the proxy's own connection, e.g. a health check) or v1
    /// `UNKNOWN`: use the connection's own addresses.
    Local,
}

/// The outcome of [`parse`] that is not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid header occupies the first `consumed` bytes.
    Complete {
        /// What the header says.
        header: Header,
        /// Length of the header; later bytes belong to the connection.
        consumed: usize,
    },
    /// The bytes so far are the start of a valid header; read more.
    Incomplete,
}

/// Why the bytes cannot start a valid header. Every case means: close the
/// connection (section 2: a receiver must not guess whether a header is there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No v1 or v2 signature: the peer is not speaking the PROXY protocol.
    NotProxy,
    /// A signature, then something the spec does not allow; says what.
    Malformed(&'static str),
    /// A v1 line without CRLF in its first 107 bytes, or a v2 block longer
    /// than ftpgate accepts (4 KiB).
    TooLong,
    /// A v2 `PROXY` header for something other than TCP over IPv4 or IPv6
    /// (UDP, UNIX sockets, unspecified): no client address to use.
    UnsupportedFamily,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("no PROXY protocol header"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
            ProxyError::TooLong => f.write_str("PROXY protocol header too long"),
            ProxyError::UnsupportedFamily => {
                f.write_str("PROXY protocol header for a transport other than TCP over IPv4/IPv6")
            }
        }
    }
}

impl std::error::Error for ProxyError {}

// === parse ===

/// Reads a v1 or v2 header from the start of `buf`, the bytes received so far.
///
/// Decides as soon as the bytes allow: a first byte that starts neither
/// signature is [`ProxyError::NotProxy`] at once, a v2 version, command,
/// family or length is checked as soon as its byte arrives, and a v1 line
/// is checked byte by byte for CR, LF and non-printable bytes up to its
/// CRLF. A decision never changes when more bytes arrive, and it is always
/// made by [`MAX_HEADER_LEN`] bytes.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// True once all of `sig` is there; false while `buf` is a proper prefix of it.
fn has_signature(buf: &[u8], sig: &[u8]) -> Result<bool, ProxyError> {
    let n = buf.len().min(sig.len());
    if buf[..n] != sig[..n] {
        return Err(ProxyError::NotProxy);
    }
    Ok(n == sig.len())
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if !has_signature(buf, V1_SIGNATURE)? {
        return Ok(Parsed::Incomplete);
    }
    let Some(end) = v1_line_end(buf)? else {
        return Ok(Parsed::Incomplete);
    };
    let header = parse_v1_line(&buf[..end - 2])?;
    Ok(Parsed::Complete {
        header,
        consumed: end,
    })
}

/// Finds the end of the v1 line (just past its CRLF); `None` while the line
/// can still be completed. Section 2.1: a lone CR or LF does not end it.
fn v1_line_end(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    for (i, &b) in buf.iter().enumerate().take(MAX_V1_LEN) {
        match b {
            b'\r' if i + 2 > MAX_V1_LEN => return Err(ProxyError::TooLong),
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(_) => Err(ProxyError::Malformed("v1: CR without LF")),
                }
            }
            b'\n' => return Err(ProxyError::Malformed("v1: LF without CR")),
            b' '..=b'~' => {}
            _ => return Err(ProxyError::Malformed("v1: byte outside printable ASCII")),
        }
    }
    if buf.len() >= MAX_V1_LEN {
        Err(ProxyError::TooLong)
    } else {
        Ok(None)
    }
}

/// The line without CRLF: `PROXY TCP4|TCP6 src dst sport dport`, fields
/// separated by exactly one space, or `PROXY UNKNOWN` with anything after it.
fn parse_v1_line(line: &[u8]) -> Result<Header, ProxyError> {
    let mut fields = line.split(|&b| b == b' ');
    fields.next(); // "PROXY", checked by the caller.
    let v6 = match fields.next() {
        Some(b"TCP4") => false,
        Some(b"TCP6") => true,
        // Section 2.1: the receiver ignores what follows UNKNOWN.
        Some(b"UNKNOWN") => return Ok(Header::Local),
        _ => {
            return Err(ProxyError::Malformed(
                "v1: protocol not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::Malformed(
            "v1: not four fields after the protocol",
        ));
    };
    let ip = |text: &[u8]| -> Result<IpAddr, ProxyError> {
        // Printable ASCII, so valid UTF-8; std rejects IPv4 octets with
        // leading zeros and IPv6 zone IDs, as the spec wants.
        let text = std::str::from_utf8(text).unwrap_or("");
        let parsed = if v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        parsed.map_err(|_| ProxyError::Malformed("v1: address not of the named family"))
    };
    let port = |text: &[u8]| -> Result<u16, ProxyError> {
        all_consuming(v1_port)(text)
            .map(|(_, p)| p)
            .map_err(|_| ProxyError::Malformed("v1: port not a decimal 0-65535"))
    };
    Ok(Header::Proxy {
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

/// A decimal port without leading zeros (section 2.1: no octal confusion).
fn v1_port(input: &[u8]) -> IResult<&[u8], u16> {
    map_res(
        verify(
            take_while_m_n(1, 5, |c: u8| c.is_ascii_digit()),
            |d: &[u8]| d == b"0" || d[0] != b'0',
        ),
        |d: &[u8]| std::str::from_utf8(d).unwrap_or("x").parse::<u16>(),
    )(input)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if !has_signature(buf, V2_SIGNATURE)? {
        return Ok(Parsed::Incomplete);
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(Parsed::Incomplete);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2: version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::Malformed("v2: command neither LOCAL nor PROXY")),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(Parsed::Incomplete);
    };
    // Section 2.2: LOCAL ignores the family and the whole block.
    let addr_len = match family {
        _ if local => 0,
        V2_TCP4 => 12,
        V2_TCP6 => 36,
        // Families above AF_UNIX and protocols above DGRAM are unassigned.
        f if f >> 4 > 3 || f & 0x0f > 2 => {
            return Err(ProxyError::Malformed("v2: unassigned family or protocol"))
        }
        // UNSPEC, UDP, UNIX: section 2.2 leaves PROXY with these to the
        // receiver; without a TCP client address there is nothing to route
        // or check by, so they are refused.
        _ => return Err(ProxyError::UnsupportedFamily),
    };
    let Some(&[hi, lo]) = buf.get(14..16) else {
        return Ok(Parsed::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_V2_BLOCK {
        return Err(ProxyError::TooLong);
    }
    if len < addr_len {
        return Err(ProxyError::Malformed(
            "v2: block shorter than its addresses",
        ));
    }
    let consumed = V2_FIXED + len;
    let Some(block) = buf.get(V2_FIXED..consumed) else {
        return Ok(Parsed::Incomplete);
    };
    let header = if local {
        Header::Local
    } else {
        let (_, header) = all_consuming(|input| {
            let (input, header) = v2_addresses(family == V2_TCP6, input)?;
            let (input, _) = many0_count(tlv)(input)?;
            Ok((input, header))
        })(block)
        .map_err(|_: nom::Err<nom::error::Error<&[u8]>>| {
            ProxyError::Malformed("v2: TLVs do not fill the block exactly")
        })?;
        header
    };
    Ok(Parsed::Complete { header, consumed })
}

/// Source and destination addresses, then source and destination ports,
/// all in network byte order (section 2.2, `union proxy_addr`).
fn v2_addresses(v6: bool, input: &[u8]) -> IResult<&[u8], Header> {
    let (input, (src, dst)) = if v6 {
        map(tuple((be_u128, be_u128)), |(s, d)| {
            (
                IpAddr::from(Ipv6Addr::from(s)),
                IpAddr::from(Ipv6Addr::from(d)),
            )
        })(input)?
    } else {
        map(tuple((be_u32, be_u32)), |(s, d)| {
            (
                IpAddr::from(Ipv4Addr::from(s)),
                IpAddr::from(Ipv4Addr::from(d)),
            )
        })(input)?
    };
    let (input, (sport, dport)) = tuple((be_u16, be_u16))(input)?;
    Ok((
        input,
        Header::Proxy {
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
        },
    ))
}

/// One TLV (type, 16-bit length, value), skipped: ftpgate uses none of them.
/// The CRC32C TLV is not verified (section 2.2.3 asks that only of
/// receivers that support it).
fn tlv(input: &[u8]) -> IResult<&[u8], ()> {
    let (input, (_kind, len)) = tuple((byte, be_u16))(input)?;
    map(take(len), |_| ())(input)
}

// === encode ===

/// The two addresses of a header, in one family.
enum Pair {
    V4([Ipv4Addr; 2]),
    V6([Ipv6Addr; 2]),
}

/// IPv4-mapped IPv6 addresses are folded to IPv4 first (as `net::canonical`
/// does), so a dual-stack listener still sends TCP4 for an IPv4 client. A
/// pair still mixed after that is sent as IPv6 with the IPv4 one mapped,
/// as HAProxy does.
fn pair(source: SocketAddr, destination: SocketAddr) -> Pair {
    match (source.ip().to_canonical(), destination.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Pair::V4([s, d]),
        (s, d) => Pair::V6([s, d].map(|ip| match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        })),
    }
}

/// IPv6 text in hex groups only: section 2.1 has no dotted-quad tail, which
/// `Display` writes for IPv4-mapped addresses.
fn v6_text(ip: Ipv6Addr) -> String {
    match ip.to_ipv4_mapped() {
        Some(v4) => {
            let [a, b, c, d] = v4.octets();
            let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            format!("::ffff:{hi:x}:{lo:x}")
        }
        None => ip.to_string(),
    }
}

/// A v1 `PROXY TCP4|TCP6` line for a connection from `source` to
/// `destination`. See [`encode_v2`] for how the family is chosen; IPv6 flow
/// labels and scope IDs are not carried.
/// A header that names no client: v1 `PROXY UNKNOWN`, or v2 `LOCAL`. For
/// connections a proxy makes on its own behalf (health checks).
pub fn encode_local(v2: bool) -> Vec<u8> {
    if v2 {
        let mut h = V2_SIGNATURE.to_vec();
        // Version 2, LOCAL; family UNSPEC; no address block.
        h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        h
    } else {
        b"PROXY UNKNOWN\r\n".to_vec()
    }
}

/// A v1 header for `source` connecting to `destination`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (sport, dport) = (source.port(), destination.port());
    let line = match pair(source, destination) {
        Pair::V4([s, d]) => format!("PROXY TCP4 {s} {d} {sport} {dport}\r\n"),
        Pair::V6([s, d]) => format!(
            "PROXY TCP6 {} {} {sport} {dport}\r\n",
            v6_text(s),
            v6_text(d)
        ),
    };
    debug_assert!(line.len() <= MAX_V1_LEN);
    line.into_bytes()
}

/// A v2 `PROXY` header (TCP, no TLVs) for a connection from `source` to
/// `destination`. TCP over IPv4 when both addresses are IPv4 or IPv4-mapped,
/// else TCP over IPv6 with an IPv4 address mapped.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED + 36);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(V2_PROXY);
    match pair(source, destination) {
        Pair::V4([s, d]) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        Pair::V6([s, d]) => {
            out.push(V2_TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod local_tests {
    use super::*;

    #[test]
    fn local_headers_parse_as_local() {
        for v2 in [false, true] {
            let h = encode_local(v2);
            assert_eq!(
                parse(&h),
                Ok(Parsed::Complete {
                    header: Header::Local,
                    consumed: h.len()
                })
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxy {
            source: sa(source),
            destination: sa(destination),
        }
    }

    fn complete(header: Header, consumed: usize) -> Result<Parsed, ProxyError> {
        Ok(Parsed::Complete { header, consumed })
    }

    fn show(b: &[u8]) -> String {
        b.escape_ascii().to_string()
    }

    /// A v2 header with the given version/command and family bytes and block.
    fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[ver_cmd, family]);
        h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    /// 192.0.2.1:56324 -> 198.51.100.7:21 as a v2 IPv4 address block.
    const V4_BLOCK: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0, 21];

    fn v6_block() -> Vec<u8> {
        let mut b = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        b.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&[0xdc, 0x04, 0, 21]);
        b
    }

    /// TLVs as AWS NLB and HAProxy send them: a custom one with an endpoint
    /// ID, ALPN, an empty NOOP, and SSL with a nested version sub-TLV.
    fn tlvs() -> Vec<u8> {
        let mut t = vec![0xea, 0, 23, 0x01];
        t.extend_from_slice(b"vpce-0123456789abcdef");
        t.push(0); // pad the endpoint TLV to its declared 23 bytes
        t.extend_from_slice(&[0x01, 0, 3]);
        t.extend_from_slice(b"ftp");
        t.extend_from_slice(&[0x04, 0, 0]);
        t.extend_from_slice(&[0x20, 0, 13, 0x01, 0, 0, 0, 0, 0x21, 0, 5]);
        t.extend_from_slice(b"TLSv1");
        t
    }

    fn valid_headers() -> Vec<(Vec<u8>, Header)> {
        let v4 = proxied("192.0.2.1:56324", "198.51.100.7:21");
        let v6 = proxied("[2001:db8::1]:56324", "[2001:db8::2]:21");
        let mut with_tlvs = V4_BLOCK.to_vec();
        with_tlvs.extend_from_slice(&tlvs());
        vec![
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 21\r\n".to_vec(),
                v4,
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 21\r\n".to_vec(),
                v6,
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), Header::Local),
            (v2(0x21, 0x11, &V4_BLOCK), v4),
            (v2(0x21, 0x21, &v6_block()), v6),
            (v2(0x21, 0x11, &with_tlvs), v4),
            (v2(0x20, 0x00, &[]), Header::Local),
            (v2(0x20, 0x11, &with_tlvs), Header::Local),
        ]
    }

    #[test]
    fn v1_valid_table() {
        let max6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let cases: Vec<(String, Header)> = vec![
            (
                "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".into(),
                proxied("192.168.0.1:56324", "192.168.0.11:443"),
            ),
            (
                "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".into(),
                proxied("255.255.255.255:65535", "255.255.255.255:65535"),
            ),
            (
                "PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n".into(),
                proxied("0.0.0.0:0", "10.0.0.1:0"),
            ),
            (
                format!("PROXY TCP6 {max6} {max6} 65535 65535\r\n"),
                Header::Proxy {
                    source: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(u128::MAX)), 65535),
                    destination: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(u128::MAX)), 65535),
                },
            ),
            (
                "PROXY TCP6 ::1 FE80::1 1024 21\r\n".into(),
                proxied("[::1]:1024", "[fe80::1]:21"),
            ),
            // inet_pton (HAProxy's own parser) takes a dotted tail; so do we.
            (
                "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:c000:202 1 2\r\n".into(),
                proxied("[::ffff:192.0.2.1]:1", "[::ffff:192.0.2.2]:2"),
            ),
            ("PROXY UNKNOWN\r\n".into(), Header::Local),
            (
                "PROXY UNKNOWN ignored, whatever it is\r\n".into(),
                Header::Local,
            ),
            (
                format!("PROXY UNKNOWN {max6} {max6} 65535 65535\r\n"),
                Header::Local,
            ),
        ];
        for (line, want) in cases {
            let b = line.as_bytes();
            assert_eq!(parse(b), complete(want, b.len()), "{line:?}");
        }
    }

    #[test]
    fn v1_longest_line_is_107_bytes() {
        let max6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY UNKNOWN {max6} {max6} 65535 65535\r\n");
        assert_eq!(line.len(), MAX_V1_LEN);
        assert_eq!(parse(line.as_bytes()), complete(Header::Local, 107));
        // One byte more: the CR lands at offset 107, beyond the limit, and
        // the decision comes before the LF does.
        let long = format!("PROXY UNKNOWN {max6} {max6} 65535 655355\r\n");
        assert_eq!(parse(long.as_bytes()), Err(ProxyError::TooLong));
        assert_eq!(parse(&long.as_bytes()[..107]), Err(ProxyError::TooLong));
        assert_eq!(parse(&long.as_bytes()[..106]), Ok(Parsed::Incomplete));
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse(&endless[..107]), Err(ProxyError::TooLong));
        assert_eq!(parse(&endless[..106]), Ok(Parsed::Incomplete));
    }

    #[test]
    fn v1_malformed_table() {
        use ProxyError::Malformed;
        let cases: &[&[u8]] = &[
            // bad ports
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 21\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1024 021\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 00 21\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 21\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 21\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 0x10 21\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 21\r\n",
            // bad addresses
            b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 ::1 1::2::3 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
            // shape
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY\r\n",
            b"PROXY \r\n",
            b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  UNKNOWN\r\n",
            // line end
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY UNKNOWN\n",
            b"PROXY UNKNOWN a\rb\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \x002\r\n",
            b"PROXY UNKNOWN \xff\r\n",
        ];
        for &line in cases {
            assert!(
                matches!(parse(line), Err(Malformed(_))),
                "{}: {:?}",
                show(line),
                parse(line)
            );
        }
    }

    #[test]
    fn not_proxy_at_the_first_wrong_byte() {
        let cases: &[&[u8]] = &[
            b"USER anonymous\r\n",
            b"\x16\x03\x01\x02\x00\x01",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXZ",
            b"PRO\r\n",
            b"\r\r",
            b"\r\n\r\n\x01",
            b"\r\n\r\n\0\r\nQUIT\r",
            b" PROXY UNKNOWN\r\n",
            b"\0",
        ];
        for &b in cases {
            assert_eq!(parse(b), Err(ProxyError::NotProxy), "{}", show(b));
        }
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PROX"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"\r\n"), Ok(Parsed::Incomplete));
        assert_eq!(parse(&V2_SIGNATURE[..11]), Ok(Parsed::Incomplete));
    }

    #[test]
    fn v2_valid_table() {
        for (h, want) in valid_headers().into_iter().filter(|(h, _)| h[0] == b'\r') {
            assert_eq!(parse(&h), complete(want, h.len()), "{}", show(&h));
        }
        // A LOCAL header may carry an address block of any family, ignored.
        let h = v2(0x20, 0x21, &v6_block());
        assert_eq!(parse(&h), complete(Header::Local, 52));
        let h = v2(0x20, 0xff, b"anything");
        assert_eq!(parse(&h), complete(Header::Local, 24));
        // The largest block accepted.
        let mut block = V4_BLOCK.to_vec();
        let pad = MAX_V2_BLOCK - 12 - 3;
        block.extend_from_slice(&[0x04, (pad >> 8) as u8, pad as u8]);
        block.resize(MAX_V2_BLOCK, 0);
        let h = v2(0x21, 0x11, &block);
        assert_eq!(h.len(), MAX_HEADER_LEN);
        assert_eq!(
            parse(&h),
            complete(
                proxied("192.0.2.1:56324", "198.51.100.7:21"),
                MAX_HEADER_LEN
            )
        );
    }

    #[test]
    fn v2_malformed_table() {
        use ProxyError::{Malformed, TooLong, UnsupportedFamily};
        let v6 = v6_block();
        let mut overrun = V4_BLOCK.to_vec();
        overrun.extend_from_slice(&[0x01, 0, 4, b'f', b't', b'p']);
        let mut stub = V4_BLOCK.to_vec();
        stub.extend_from_slice(&[0x04, 0]);
        type Case = (Vec<u8>, fn(&ProxyError) -> bool);
        let cases: Vec<Case> = vec![
            // version nibble
            (v2(0x11, 0x11, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            (v2(0x31, 0x11, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            (v2(0x01, 0x11, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            // command nibble
            (v2(0x22, 0x11, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            (v2(0x2f, 0x11, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            // family/protocol unassigned
            (v2(0x21, 0x41, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            (v2(0x21, 0x13, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            (v2(0x21, 0xff, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            // family/length mismatch
            (v2(0x21, 0x11, &V4_BLOCK[..11]), |e| {
                matches!(e, Malformed(_))
            }),
            (v2(0x21, 0x21, &V4_BLOCK), |e| matches!(e, Malformed(_))),
            (v2(0x21, 0x21, &v6[..35]), |e| matches!(e, Malformed(_))),
            (v2(0x21, 0x11, &[]), |e| matches!(e, Malformed(_))),
            // TLVs that do not fit
            (v2(0x21, 0x11, &overrun), |e| matches!(e, Malformed(_))),
            (v2(0x21, 0x11, &stub), |e| matches!(e, Malformed(_))),
            // supported by the spec, not by ftpgate
            (v2(0x21, 0x00, &[]), |e| *e == UnsupportedFamily),
            (v2(0x21, 0x12, &V4_BLOCK), |e| *e == UnsupportedFamily),
            (v2(0x21, 0x22, &v6), |e| *e == UnsupportedFamily),
            (v2(0x21, 0x31, &[0; 216]), |e| *e == UnsupportedFamily),
            (v2(0x21, 0x32, &[0; 216]), |e| *e == UnsupportedFamily),
            (v2(0x21, 0x10, &V4_BLOCK), |e| *e == UnsupportedFamily),
            // too long
            (v2(0x21, 0x11, &[0; MAX_V2_BLOCK + 1]), |e| *e == TooLong),
            (v2(0x20, 0x00, &[0; MAX_V2_BLOCK + 1]), |e| *e == TooLong),
        ];
        for (h, want) in cases {
            let got = parse(&h).expect_err(&show(&h));
            assert!(want(&got), "{}: {got:?}", show(&h));
        }
    }

    #[test]
    fn v2_decides_at_the_byte_that_decides() {
        // The version/command byte is enough, without family or length.
        assert!(matches!(
            parse(&v2(0x11, 0x11, &V4_BLOCK)[..13]),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(0x21, 0x41, &V4_BLOCK)[..14]),
            Err(ProxyError::Malformed(_))
        ));
        assert_eq!(
            parse(&v2(0x21, 0x12, &V4_BLOCK)[..14]),
            Err(ProxyError::UnsupportedFamily)
        );
        // The length field is enough: no need to buffer 64 KiB first.
        let mut h = v2(0x21, 0x11, &[]);
        h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
        h[14..16].copy_from_slice(&11u16.to_be_bytes());
        assert!(matches!(parse(&h), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn every_prefix_is_incomplete_then_complete() {
        for (h, want) in valid_headers() {
            for n in 0..h.len() {
                assert_eq!(
                    parse(&h[..n]),
                    Ok(Parsed::Incomplete),
                    "{} cut at {n}",
                    show(&h)
                );
            }
            assert_eq!(parse(&h), complete(want, h.len()), "{}", show(&h));
        }
    }

    #[test]
    fn bytes_after_the_header_stay() {
        // The client's first command, an upload's first bytes, and bytes
        // that look like a second header: none of them is consumed.
        let after: &[&[u8]] = &[
            b"USER anonymous\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c",
            b"PROXY UNKNOWN\r\n",
            b"\n",
            &[0xff; 300],
        ];
        for (h, want) in valid_headers() {
            for a in after {
                let buf = [h.as_slice(), a].concat();
                assert_eq!(parse(&buf), complete(want, h.len()), "{}", show(&buf));
                assert_eq!(&buf[h.len()..], *a);
            }
        }
    }

    #[test]
    fn encoders_write_the_spec_examples() {
        assert_eq!(
            encode_v1(sa("192.168.0.1:56324"), sa("192.168.0.11:443")),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            encode_v1(sa("[2001:db8::1]:56324"), sa("[2001:db8::2]:21")),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 21\r\n"
        );
        assert_eq!(
            encode_v2(sa("192.0.2.1:56324"), sa("198.51.100.7:21")),
            v2(0x21, 0x11, &V4_BLOCK)
        );
        assert_eq!(
            encode_v2(sa("[2001:db8::1]:56324"), sa("[2001:db8::2]:21")),
            v2(0x21, 0x21, &v6_block())
        );
    }

    #[test]
    fn encoders_fold_mapped_and_map_mixed_pairs() {
        // A dual-stack listener's view of an IPv4 client: sent as TCP4.
        let (s, d) = (
            sa("[::ffff:192.0.2.1]:56324"),
            sa("[::ffff:198.51.100.7]:21"),
        );
        assert_eq!(
            encode_v1(s, d),
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 21\r\n"
        );
        assert_eq!(encode_v2(s, d), v2(0x21, 0x11, &V4_BLOCK));
        // Mixed: IPv6, with the IPv4 address mapped and written in hex.
        let (s, d) = (sa("192.0.2.1:56324"), sa("[2001:db8::2]:21"));
        assert_eq!(
            encode_v1(s, d),
            b"PROXY TCP6 ::ffff:c000:201 2001:db8::2 56324 21\r\n"
        );
        let h = encode_v2(s, d);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            parse(&h),
            complete(proxied("[::ffff:192.0.2.1]:56324", "[2001:db8::2]:21"), 52)
        );
    }

    #[test]
    fn errors_read_as_log_lines() {
        let all = [
            ProxyError::NotProxy,
            ProxyError::Malformed("v1: LF without CR"),
            ProxyError::TooLong,
            ProxyError::UnsupportedFamily,
        ];
        let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert!(texts.iter().all(|t| t.contains("PROXY")));
        assert!(texts[1].ends_with("v1: LF without CR"));
        let mut dedup = texts.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), texts.len());
    }

    // === properties ===

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| IpAddr::from(Ipv4Addr::from(o))),
            any::<[u8; 16]>().prop_map(|o| IpAddr::from(Ipv6Addr::from(o))),
            any::<[u8; 4]>().prop_map(|o| IpAddr::from(Ipv4Addr::from(o).to_ipv6_mapped())),
            Just(IpAddr::from(Ipv6Addr::UNSPECIFIED)),
            Just(IpAddr::from(Ipv6Addr::LOCALHOST)),
        ]
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        (any_ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    /// A valid header, a byte of it replaced, and a tail: reaches the
    /// checks past the signatures that random bytes almost never do.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        (
            any_addr(),
            any_addr(),
            any::<bool>(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(s, d, v2, at, b, tail)| {
                let mut h = if v2 { encode_v2(s, d) } else { encode_v1(s, d) };
                let i = at.index(h.len());
                h[i] = b;
                h.extend_from_slice(&tail);
                h
            })
    }

    /// The checks every input must pass: no panic, `consumed` within the
    /// input, a decision by `MAX_HEADER_LEN` bytes, and no prefix deciding
    /// differently from the whole.
    fn check_any(buf: &[u8]) -> Result<(), TestCaseError> {
        let whole = parse(buf);
        match whole {
            Ok(Parsed::Complete { consumed, .. }) => {
                prop_assert!(consumed <= buf.len());
                prop_assert!(consumed <= MAX_HEADER_LEN);
                prop_assert_eq!(parse(&buf[..consumed]), whole);
            }
            Ok(Parsed::Incomplete) => prop_assert!(buf.len() < MAX_HEADER_LEN),
            Err(_) => {}
        }
        for n in 0..buf.len() {
            let part = parse(&buf[..n]);
            if part != Ok(Parsed::Incomplete) {
                prop_assert_eq!(part, whole, "prefix {} decided differently", n);
            }
        }
        Ok(())
    }

    fn check_round_trip(
        s: SocketAddr,
        d: SocketAddr,
        h: &[u8],
        tail: &[u8],
    ) -> Result<(), TestCaseError> {
        let buf = [h, tail].concat();
        let Ok(Parsed::Complete {
            header:
                Header::Proxy {
                    source,
                    destination,
                },
            consumed,
        }) = parse(&buf)
        else {
            return Err(TestCaseError::fail(format!("{:?}", parse(&buf))));
        };
        prop_assert_eq!(consumed, h.len());
        prop_assert_eq!(source.ip().to_canonical(), s.ip().to_canonical());
        prop_assert_eq!(destination.ip().to_canonical(), d.ip().to_canonical());
        prop_assert_eq!((source.port(), destination.port()), (s.port(), d.port()));
        // IPv4 on the wire exactly when both ends are IPv4 (or mapped).
        let both_v4 = s.ip().to_canonical().is_ipv4() && d.ip().to_canonical().is_ipv4();
        prop_assert_eq!(source.is_ipv4(), both_v4);
        prop_assert_eq!(destination.is_ipv4(), both_v4);
        for n in 0..h.len() {
            prop_assert_eq!(parse(&h[..n]), Ok(Parsed::Incomplete));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn v1_round_trips(
            s in any_addr(),
            d in any_addr(),
            tail in prop::collection::vec(any::<u8>(), 0..32),
        ) {
            let h = encode_v1(s, d);
            prop_assert!(h.len() <= MAX_V1_LEN);
            prop_assert!(!h.contains(&b'.') || h.starts_with(b"PROXY TCP4 "));
            check_round_trip(s, d, &h, &tail)?;
        }

        #[test]
        fn v2_round_trips(
            s in any_addr(),
            d in any_addr(),
            tail in prop::collection::vec(any::<u8>(), 0..32),
        ) {
            check_round_trip(s, d, &encode_v2(s, d), &tail)?;
        }

        #[test]
        fn arbitrary_bytes(buf in prop::collection::vec(any::<u8>(), 0..160)) {
            check_any(&buf)?;
        }

        #[test]
        fn arbitrary_bytes_after_a_signature(
            v2 in any::<bool>(),
            rest in prop::collection::vec(any::<u8>(), 0..160),
        ) {
            let sig: &[u8] = if v2 { V2_SIGNATURE } else { b"PROXY " };
            check_any(&[sig, &rest].concat())?;
        }

        #[test]
        fn mutated_headers(buf in mutated()) {
            check_any(&buf)?;
        }
    }
}
