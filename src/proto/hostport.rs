//! Host-port forms: PORT and EPRT arguments, 227 and 229 reply bodies.
//!
//! Parsers are lenient where real servers differ (a 227 is scanned for its six
//! numbers, as RFC 1123 section 4.1.2.6 advises) and strict where a client
//! could abuse them (PORT, EPRT). Formatters produce the canonical forms of
//! RFC 959 and RFC 2428. No I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use nom::bytes::complete::{tag, take_while1, take_while_m_n};
use nom::character::complete::{char, digit1, space0};
use nom::combinator::{all_consuming, map_res, verify};
use nom::sequence::{delimited, preceded, terminated, tuple};
use nom::IResult;

/// Why a PORT or EPRT argument was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPortError {
    /// Not of the form the command requires (reply 501).
    Malformed,
    /// EPRT names a network protocol other than 1 (IPv4) or 2 (IPv6) (reply 522).
    UnknownProtocol,
}

fn byte(input: &[u8]) -> IResult<&[u8], u8> {
    map_res(
        take_while_m_n(1, 3, |c: u8| c.is_ascii_digit()),
        |d: &[u8]| std::str::from_utf8(d).unwrap_or("x").parse::<u8>(),
    )(input)
}

fn comma(input: &[u8]) -> IResult<&[u8], char> {
    delimited(space0, char(','), space0)(input)
}

/// Six comma-separated numbers h1,h2,h3,h4,p1,p2.
fn six(input: &[u8]) -> IResult<&[u8], SocketAddrV4> {
    let (rest, (a, _, b, _, c, _, d, _, p1, _, p2)) = tuple((
        byte, comma, byte, comma, byte, comma, byte, comma, byte, comma, byte,
    ))(input)?;
    let port = u16::from(p1) << 8 | u16::from(p2);
    Ok((rest, SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port)))
}

/// Parses a PORT argument: `h1,h2,h3,h4,p1,p2` (RFC 959 4.1.2).
pub fn parse_port_arg(arg: &[u8]) -> Result<SocketAddrV4, HostPortError> {
    all_consuming(delimited(space0, six, space0))(arg)
        .map(|(_, a)| a)
        .map_err(|_| HostPortError::Malformed)
}

/// Formats a PORT argument.
pub fn format_port_arg(addr: SocketAddrV4) -> String {
    let mut s = String::with_capacity(24);
    push_port_arg(&mut s, addr);
    s
}

/// Appends a PORT argument (`h1,h2,h3,h4,p1,p2`) to `s`.
fn push_port_arg(s: &mut String, addr: SocketAddrV4) {
    let [a, b, c, d] = addr.ip().octets();
    let p = addr.port();
    let [hi, lo] = p.to_be_bytes();
    for (i, v) in [a, b, c, d, hi, lo].into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.extend(
            crate::decimal::Decimal::new(v.into())
                .as_bytes()
                .iter()
                .map(|&d| char::from(d)),
        );
    }
}

/// Parses an EPRT argument: `<d>proto<d>addr<d>port<d>` (RFC 2428 section 2).
pub fn parse_eprt_arg(arg: &[u8]) -> Result<SocketAddr, HostPortError> {
    let arg = arg.trim_ascii();
    let (&d, body) = arg.split_first().ok_or(HostPortError::Malformed)?;
    if !(33..=126).contains(&d) {
        return Err(HostPortError::Malformed);
    }
    let fields: Vec<&[u8]> = body.split(|&c| c == d).collect();
    // proto, addr, port, and the empty remainder after the closing delimiter.
    let [proto, addr, port, end] = fields[..] else {
        return Err(HostPortError::Malformed);
    };
    if !end.is_empty() {
        return Err(HostPortError::Malformed);
    }
    let port = parse_port_number(port).ok_or(HostPortError::Malformed)?;
    let addr = std::str::from_utf8(addr).map_err(|_| HostPortError::Malformed)?;
    let ip = match proto {
        b"1" => IpAddr::V4(
            addr.parse::<Ipv4Addr>()
                .map_err(|_| HostPortError::Malformed)?,
        ),
        b"2" => IpAddr::V6(
            addr.parse::<Ipv6Addr>()
                .map_err(|_| HostPortError::Malformed)?,
        ),
        p if !p.is_empty() && p.iter().all(u8::is_ascii_digit) => {
            return Err(HostPortError::UnknownProtocol)
        }
        _ => return Err(HostPortError::Malformed),
    };
    Ok(SocketAddr::new(ip, port))
}

fn parse_port_number(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Formats an EPRT argument with `|` as delimiter.
pub fn format_eprt_arg(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("|1|{}|{}|", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("|2|{}|{}|", a.ip(), a.port()),
    }
}

/// Finds the address in the text of a 227 reply.
///
/// RFC 1123 4.1.2.6: the text is scanned for the first run of six numbers,
/// with or without parentheses, because servers word the reply differently.
pub fn parse_227_text(text: &[u8]) -> Option<SocketAddrV4> {
    (0..text.len())
        .filter(|&i| text[i].is_ascii_digit() && (i == 0 || !text[i - 1].is_ascii_digit()))
        .find_map(|i| six(&text[i..]).ok().map(|(_, a)| a))
}

/// Formats a 227 reply line (without CRLF) for an IPv4 address and port.
pub fn format_227(addr: SocketAddrV4) -> String {
    // One allocation, sized for the longest reply (a String grown by
    // format! reallocates a few times on the way).
    let mut s = String::with_capacity(56);
    s.push_str("227 Entering Passive Mode (");
    push_port_arg(&mut s, addr);
    s.push_str(").");
    s
}

fn epsv_body(input: &[u8]) -> IResult<&[u8], u16> {
    let (input, d) = verify(nom::number::complete::u8, |c| (33..=126).contains(c))(input)?;
    let delim = [d];
    let (input, _) = tuple((tag(&delim[..]), tag(&delim[..])))(input)?;
    let (input, port) = map_res(terminated(digit1, tag(&delim[..])), |p: &[u8]| {
        parse_port_number(p).ok_or(())
    })(input)?;
    Ok((input, port))
}

/// Finds the port in the text of a 229 reply: `(<d><d><d>port<d>)`.
pub fn parse_229_text(text: &[u8]) -> Option<u16> {
    text.iter()
        .enumerate()
        .filter(|(_, &c)| c == b'(')
        .find_map(|(i, _)| {
            let parsed: IResult<&[u8], u16> =
                terminated(preceded(char('('), epsv_body), preceded(space0, char(')')))(&text[i..]);
            parsed.ok().map(|(_, p)| p).filter(|&p| p != 0)
        })
}

/// Formats a 229 reply line (without CRLF).
pub fn format_229(port: u16) -> String {
    format!("229 Entering Extended Passive Mode (|||{port}|)")
}

/// Splits "first-last" into a port range; used for config values.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    type Range<'a> = (&'a [u8], char, &'a [u8]);
    let parsed: IResult<&[u8], Range<'_>> = all_consuming(tuple((
        take_while1(|c: u8| c.is_ascii_digit()),
        delimited(space0, char('-'), space0),
        take_while1(|c: u8| c.is_ascii_digit()),
    )))(s.trim().as_bytes());
    let (_, (a, _, b)) = parsed.ok()?;
    let lo = parse_port_number(a)?;
    let hi = parse_port_number(b)?;
    (lo > 0 && lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn port_arg_table() {
        assert_eq!(
            parse_port_arg(b"127,0,0,1,4,1"),
            Ok("127.0.0.1:1025".parse().unwrap())
        );
        assert_eq!(
            parse_port_arg(b" 10,0,0,5,195,80 "),
            Ok("10.0.0.5:50000".parse().unwrap())
        );
        assert_eq!(
            parse_port_arg(b"127, 0, 0, 1, 4, 1"),
            Ok("127.0.0.1:1025".parse().unwrap())
        );
        for bad in [
            &b"127,0,0,1,4"[..],
            b"256,0,0,1,4,1",
            b"1,2,3,4,5,6,7",
            b"a,b,c,d,e,f",
            b"",
            b"1,2,3,4,5,0006",
        ] {
            assert_eq!(
                parse_port_arg(bad),
                Err(HostPortError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn eprt_arg_table() {
        assert_eq!(
            parse_eprt_arg(b"|1|132.235.1.2|6275|"),
            Ok("132.235.1.2:6275".parse().unwrap())
        );
        assert_eq!(
            parse_eprt_arg(b"|2|1080::8:800:200C:417A|5282|"),
            Ok("[1080::8:800:200C:417A]:5282".parse().unwrap())
        );
        assert_eq!(
            parse_eprt_arg(b"!2!::1!2000!"),
            Ok("[::1]:2000".parse().unwrap())
        );
        assert_eq!(
            parse_eprt_arg(b"|3|x|1|"),
            Err(HostPortError::UnknownProtocol)
        );
        for bad in [
            &b"|1|::1|5|"[..],
            b"|2|1.2.3.4|5|",
            b"|1|1.2.3.4|70000|",
            b"|1|1.2.3.4|5",
            b"|1|1.2.3.4|5|x",
            b"",
            b"|||||",
            b" 1|1.2.3.4|5 ",
        ] {
            assert_eq!(
                parse_eprt_arg(bad),
                Err(HostPortError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn reply_227_as_servers_word_it() {
        let want: SocketAddrV4 = "192.168.1.1:62380".parse().unwrap();
        for text in [
            &b"Entering Passive Mode (192,168,1,1,243,172)."[..],
            b"Entering Passive Mode 192,168,1,1,243,172",
            b"=192,168,1,1,243,172",
            b"Passive mode on 2024 (192,168,1,1,243,172)",
        ] {
            assert_eq!(
                parse_227_text(text),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(
            parse_227_text(b"Entering Passive Mode (192,168,1,1,243)"),
            None
        );
        assert_eq!(
            parse_227_text(b"Entering Passive Mode (300,168,1,1,243,1)"),
            None
        );
    }

    #[test]
    fn reply_229_as_servers_word_it() {
        assert_eq!(
            parse_229_text(b"Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(
            parse_229_text(b"Extended Passive mode OK (|||30001|)"),
            Some(30001)
        );
        assert_eq!(parse_229_text(b"EPSV ok (!!!40000!)"), Some(40000));
        assert_eq!(
            parse_229_text(b"Entering Extended Passive Mode (|||0|)"),
            None
        );
        assert_eq!(
            parse_229_text(b"Entering Extended Passive Mode (||6446|)"),
            None
        );
        assert_eq!(parse_229_text(b"Entering Extended Passive Mode"), None);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("50000-50099"), Some((50000, 50099)));
        assert_eq!(parse_port_range(" 1 - 1 "), Some((1, 1)));
        assert_eq!(parse_port_range("0-10"), None);
        assert_eq!(parse_port_range("10-9"), None);
        assert_eq!(parse_port_range("10-70000"), None);
        assert_eq!(parse_port_range("10"), None);
    }

    fn any_v6() -> impl Strategy<Value = Ipv6Addr> {
        any::<[u16; 8]>()
            .prop_map(|s| Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
    }

    proptest! {
        #[test]
        fn port_arg_round_trips(ip in any::<[u8; 4]>(), port in any::<u16>()) {
            let a = SocketAddrV4::new(Ipv4Addr::from(ip), port);
            prop_assert_eq!(parse_port_arg(format_port_arg(a).as_bytes()), Ok(a));
        }

        #[test]
        fn eprt_round_trips_v4(ip in any::<[u8; 4]>(), port in any::<u16>()) {
            let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port);
            prop_assert_eq!(parse_eprt_arg(format_eprt_arg(a).as_bytes()), Ok(a));
        }

        #[test]
        fn eprt_round_trips_v6(ip in any_v6(), port in any::<u16>()) {
            let a = SocketAddr::new(IpAddr::V6(ip), port);
            prop_assert_eq!(parse_eprt_arg(format_eprt_arg(a).as_bytes()), Ok(a));
        }

        #[test]
        fn reply_227_round_trips(ip in any::<[u8; 4]>(), port in any::<u16>()) {
            let a = SocketAddrV4::new(Ipv4Addr::from(ip), port);
            let line = format_227(a);
            prop_assert_eq!(parse_227_text(&line.as_bytes()[4..]), Some(a));
        }

        #[test]
        fn reply_229_round_trips(port in 1u16..) {
            prop_assert_eq!(parse_229_text(&format_229(port).as_bytes()[4..]), Some(port));
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_port_arg(&bytes);
            let _ = parse_eprt_arg(&bytes);
            let _ = parse_227_text(&bytes);
            let _ = parse_229_text(&bytes);
        }
    }
}
