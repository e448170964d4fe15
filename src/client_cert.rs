//! What a verified client certificate says, as the plain names the session
//! core works with ([`ClientCert`]): the subject shown in logs and the
//! names USER may be with `tls_client_cert_user`.
//!
//! rustls has verified the certificate (chain to `tls_client_ca`, dates,
//! key usage) before anything here runs; this module only reads names out
//! of its DER with a small reader for the few X.509 fields it needs
//! (RFC 5280 4.1: the subject's CN; 4.2.1.6: the subjectAltName's
//! rfc822Name and dNSName entries). No I/O, no panics on any input: a
//! field that does not parse is skipped.
//!
//! - subject: the CN, else the first email SAN, else the first DNS SAN,
//!   else `serial:` and the serial number in hex;
//! - user names: the CN and every email SAN, each whole. An email's local
//!   part alone is not a name: `alice@a.example` and `alice@b.example`
//!   would both be `alice`. Names with control characters are left out.

use crate::proto::session::ClientCert;

/// `2.5.4.3`, id-at-commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// `2.5.29.17`, id-ce-subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
/// `[0] EXPLICIT` version.
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT` extensions.
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `[1] IMPLICIT IA5String`.
const RFC822_NAME: u8 = 0x81;
/// GeneralName `[2] IMPLICIT IA5String`.
const DNS_NAME: u8 = 0x82;

/// One DER element at the start of `input`: its tag, its contents, and
/// what follows it. `None` for a truncated or over-long element.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The contents of the element at the start of `input` if its tag is `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = element(input)?;
    (t == tag).then_some((body, rest))
}

/// The elements of a SEQUENCE's or SET's contents, in order.
fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, body, rest) = element(input)?;
        input = rest;
        Some((tag, body))
    })
}

/// A directory string's text: UTF8String, PrintableString, IA5String,
/// TeletexString (read as UTF-8, as browsers do) or BMPString.
fn text(tag: u8, body: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(body).ok().map(str::to_owned),
        0x1e if body.len().is_multiple_of(2) => {
            let units: Vec<u16> = body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// The first CN of a Name (a SEQUENCE of SETs of type-and-value pairs).
fn common_name(name: &[u8]) -> Option<String> {
    elements(name)
        .filter(|(tag, _)| *tag == SET)
        .flat_map(|(_, rdn)| elements(rdn))
        .filter(|(tag, _)| *tag == SEQUENCE)
        .find_map(|(_, atv)| {
            let (oid, rest) = expect(atv, OID)?;
            if oid != OID_CN {
                return None;
            }
            let (tag, value, _) = element(rest)?;
            text(tag, value)
        })
}

/// The email and DNS entries of the subjectAltName in `extensions` (the
/// contents of the `[3]` element).
fn alt_names(extensions: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut emails, mut dns) = (Vec::new(), Vec::new());
    let Some((list, _)) = expect(extensions, SEQUENCE) else {
        return (emails, dns);
    };
    for (_, ext) in elements(list).filter(|(tag, _)| *tag == SEQUENCE) {
        let Some((oid, mut rest)) = expect(ext, OID) else {
            continue;
        };
        if oid != OID_SAN {
            continue;
        }
        // `critical BOOLEAN DEFAULT FALSE` may come first.
        if let Some((0x01, _, after)) = element(rest) {
            rest = after;
        }
        let Some((value, _)) = expect(rest, OCTET_STRING) else {
            continue;
        };
        let Some((names, _)) = expect(value, SEQUENCE) else {
            continue;
        };
        for (tag, body) in elements(names) {
            let Ok(s) = std::str::from_utf8(body) else {
                continue;
            };
            match tag {
                RFC822_NAME => emails.push(s.to_owned()),
                DNS_NAME => dns.push(s.to_owned()),
                _ => {}
            }
        }
    }
    (emails, dns)
}

/// The pieces of a certificate this module reads.
struct Fields {
    serial: Vec<u8>,
    cn: Option<String>,
    emails: Vec<String>,
    dns: Vec<String>,
}

fn fields(der: &[u8]) -> Option<Fields> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    if let Some((VERSION, _, rest)) = element(tbs) {
        tbs = rest;
    }
    let (serial, rest) = expect(tbs, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (_validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, rest) = expect(rest, SEQUENCE)?;
    let (_spki, mut rest) = expect(rest, SEQUENCE)?;
    let (mut emails, mut dns) = (Vec::new(), Vec::new());
    // issuerUniqueID [1], subjectUniqueID [2], then extensions [3].
    while let Some((tag, body, after)) = element(rest) {
        if tag == EXTENSIONS {
            (emails, dns) = alt_names(body);
        }
        rest = after;
    }
    Some(Fields {
        serial: serial.to_vec(),
        cn: common_name(subject),
        emails,
        dns,
    })
}

/// A name fit for logs and comparison: no control characters.
fn printable(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// The names of a verified certificate (its DER); `None` when it is not a
/// certificate this reader can walk.
pub fn read(der: &[u8]) -> Option<ClientCert> {
    let f = fields(der)?;
    let cn = f.cn.filter(|n| printable(n));
    let emails: Vec<String> = f.emails.into_iter().filter(|n| printable(n)).collect();
    let dns = f.dns.into_iter().find(|n| printable(n));
    let subject = cn
        .clone()
        .or_else(|| emails.first().cloned())
        .or(dns)
        .unwrap_or_else(|| {
            let hex: String = f.serial.iter().map(|b| format!("{b:02x}")).collect();
            format!("serial:{hex}")
        });
    let user_names = cn.into_iter().chain(emails).collect();
    Some(ClientCert {
        subject,
        user_names,
    })
}

/// The certificate a client showed on `conn` (verified by the handshake,
/// or restored from the session it resumed): its names and its DER.
pub fn of_connection(
    conn: &rustls::ServerConnection,
) -> Option<(ClientCert, rustls::pki_types::CertificateDer<'static>)> {
    let der = crate::tls::client_certificate(conn)?;
    // rustls parsed it already; a certificate this reader cannot walk
    // still counts as shown, with no name to log in as.
    let names = read(&der).unwrap_or_else(|| ClientCert {
        subject: "(unreadable certificate)".into(),
        user_names: Vec::new(),
    });
    Some((names, der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "ftpgate tests");
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans;
        p.serial_number = Some(vec![0x01, 0xab].into());
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn email(s: &str) -> SanType {
        SanType::Rfc822Name(s.try_into().unwrap())
    }

    fn dns(s: &str) -> SanType {
        SanType::DnsName(s.try_into().unwrap())
    }

    /// CN, SANs, then the subject and user names expected.
    type Case<'a> = (Option<&'a str>, Vec<SanType>, &'a str, Vec<&'a str>);

    #[test]
    fn subject_and_user_names() {
        let table: Vec<Case> = vec![
            (Some("alice"), vec![], "alice", vec!["alice"]),
            (
                Some("alice"),
                vec![dns("host.example"), email("alice@example.com")],
                "alice",
                vec!["alice", "alice@example.com"],
            ),
            (
                None,
                vec![
                    dns("host.example"),
                    email("bob@example.com"),
                    email("bob@other.example"),
                ],
                "bob@example.com",
                vec!["bob@example.com", "bob@other.example"],
            ),
            (None, vec![dns("host.example")], "host.example", vec![]),
            (None, vec![], "serial:01ab", vec![]),
            (
                Some("Zoë Ünïcode"),
                vec![],
                "Zoë Ünïcode",
                vec!["Zoë Ünïcode"],
            ),
            // Control characters are no name.
            (
                Some("evil\r\nUSER root"),
                vec![email("ok@example.com")],
                "ok@example.com",
                vec!["ok@example.com"],
            ),
        ];
        for (cn, sans, subject, names) in table {
            let c = read(&cert(cn, sans)).unwrap();
            assert_eq!(c.subject, subject, "{cn:?}");
            assert_eq!(c.user_names, names, "{cn:?}");
        }
    }

    #[test]
    fn not_a_certificate_is_none_and_never_panics() {
        let good = cert(Some("alice"), vec![email("a@b.example")]);
        assert!(read(&good).is_some());
        assert_eq!(read(&[]), None);
        assert_eq!(read(b"\x30\x84\xff\xff\xff\xff"), None);
        // Every prefix, and every single-byte change, of a real certificate.
        for n in 0..good.len() {
            let _ = read(&good[..n]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = read(&bad);
        }
    }

    #[test]
    fn bmp_strings_read_as_utf16() {
        assert_eq!(text(0x1e, &[0, b'h', 0, b'i']).as_deref(), Some("hi"));
        assert_eq!(text(0x1e, &[0, b'h', 0]), None);
        assert_eq!(text(0x04, b"hi"), None);
    }
}
