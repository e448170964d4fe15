//! PROXY protocol v1/v2 headers: `proxy::parse`, `encode_v1`, `encode_v2`.
//!
//! Input: raw bytes, as the first bytes read from a connection on a listener
//! that accepts the PROXY protocol.
//!
//! Checks: `parse` never panics; a complete header lies within the input and
//! within `MAX_HEADER_LEN`, parses the same from its own bytes and with other
//! bytes behind it (`consumed` is exact); `Incomplete` only below
//! `MAX_HEADER_LEN` bytes; no prefix of the input decides differently from
//! the whole; the addresses of a PROXY header, encoded as v1 and as v2,
//! parse back to the same addresses (IPv4-mapped ones folded).

#![no_main]

use std::net::SocketAddr;

use ftpgate::proto::proxy::{encode_v1, encode_v2, parse, Header, Parsed, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// The shortest headers: `PROXY UNKNOWN\r\n` and a v2 LOCAL with no block.
const MIN_HEADER_LEN: usize = 15;

fn round_trip(source: SocketAddr, destination: SocketAddr) {
    for (v, h) in [
        (1, encode_v1(source, destination)),
        (2, encode_v2(source, destination)),
    ] {
        if v == 1 {
            assert!(h.len() <= 107, "v1 line of {} bytes", h.len());
        }
        match parse(&h) {
            Ok(Parsed::Complete {
                header:
                    Header::Proxy {
                        source: s,
                        destination: d,
                    },
                consumed,
            }) => {
                assert_eq!(consumed, h.len(), "v{v}: consumed");
                assert_eq!(s.ip().to_canonical(), source.ip().to_canonical(), "v{v}");
                assert_eq!(
                    d.ip().to_canonical(),
                    destination.ip().to_canonical(),
                    "v{v}"
                );
                assert_eq!((s.port(), d.port()), (source.port(), destination.port()));
            }
            other => panic!(
                "v{v} header {:?} parsed as {other:?}",
                h.escape_ascii().to_string()
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    match whole {
        Ok(Parsed::Complete { header, consumed }) => {
            assert!(
                consumed <= data.len(),
                "consumed {consumed} of {}",
                data.len()
            );
            assert!((MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(&consumed));
            assert_eq!(parse(&data[..consumed]), whole, "header alone");
            let behind = [&data[..consumed], b"USER anonymous\r\n"].concat();
            assert_eq!(parse(&behind), whole, "header with a command behind");
            if let Header::Proxy {
                source,
                destination,
            } = header
            {
                round_trip(source, destination);
            }
        }
        Ok(Parsed::Incomplete) => assert!(data.len() < MAX_HEADER_LEN),
        Err(_) => {}
    }
    // Prefixes: every one for short inputs, about 64 spread over long ones,
    // plus the byte before the end of a complete header.
    let step = (data.len() / 64).max(1);
    let mut cuts: Vec<usize> = (0..data.len()).step_by(step).collect();
    if let Ok(Parsed::Complete { consumed, .. }) = whole {
        cuts.push(consumed - 1);
    }
    for n in cuts {
        let part = parse(&data[..n]);
        match (part, whole) {
            (Ok(Parsed::Incomplete), _) => {}
            (_, Ok(Parsed::Complete { consumed, .. })) if n < consumed => {
                panic!("prefix {n} of a {consumed}-byte header decided {part:?}")
            }
            _ => assert_eq!(part, whole, "prefix {n} decided differently"),
        }
    }
});
