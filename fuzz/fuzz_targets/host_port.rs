//! Host-port forms: PORT and EPRT arguments, 227 and 229 texts, port ranges.
//!
//! Input: the whole input is given to every parser (`parse_port_range` only
//! when it is UTF-8).
//!
//! Checks: whatever parses formats to the canonical form and parses back to
//! the same value; parsed ports and ranges obey the rules (229 port != 0,
//! range `0 < lo <= hi`); a canonical 227/229 line assembled as a reply is
//! read back by `backend_data_addr` to the same port.

#![no_main]

use std::net::{IpAddr, SocketAddr};

use ftpgate::net::BackendAddr;
use ftpgate::proto::hostport::{
    format_227, format_229, format_eprt_arg, format_port_arg, parse_227_text, parse_229_text,
    parse_eprt_arg, parse_port_arg, parse_port_range, HostPortError,
};
use ftpgate::proto::reply::Reply;
use ftpgate::proto::rewrite::{backend_data_addr, PassiveCommand};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_port_arg(data) {
        let s = format_port_arg(a);
        assert_eq!(parse_port_arg(s.as_bytes()), Ok(a), "PORT {s}");
        // A PORT argument is also a valid 227 body.
        assert_eq!(parse_227_text(s.as_bytes()), Some(a));
    }

    match parse_eprt_arg(data) {
        Ok(a) => {
            let s = format_eprt_arg(a);
            assert_eq!(parse_eprt_arg(s.as_bytes()), Ok(a), "EPRT {s}");
            // The protocol field says what the address is.
            let proto = if a.is_ipv4() { "|1|" } else { "|2|" };
            assert!(s.starts_with(proto));
        }
        Err(HostPortError::UnknownProtocol | HostPortError::Malformed) => {}
    }

    if let Some(a) = parse_227_text(data) {
        let line = format_227(a);
        assert_eq!(parse_227_text(&line.as_bytes()[4..]), Some(a), "{line}");
        if a.port() != 0 {
            let backend = BackendAddr(SocketAddr::from(([127, 0, 0, 2], 21)));
            let r = Reply::from_line(line.clone());
            let got = backend_data_addr(&r, PassiveCommand::Pasv, backend, true)
                .expect("canonical 227 is accepted");
            assert_eq!(got.0.port(), a.port());
            if !a.ip().is_unspecified() {
                assert_eq!(got.0.ip(), IpAddr::V4(*a.ip()));
            }
        }
    }

    if let Some(p) = parse_229_text(data) {
        assert_ne!(p, 0, "229 port 0 accepted");
        let line = format_229(p);
        assert_eq!(parse_229_text(&line.as_bytes()[4..]), Some(p), "{line}");
        let backend = BackendAddr(SocketAddr::from(([127, 0, 0, 2], 21)));
        let r = Reply::from_line(line);
        let got = backend_data_addr(&r, PassiveCommand::Epsv, backend, false)
            .expect("canonical 229 is accepted");
        assert_eq!(got.0, SocketAddr::new(backend.0.ip(), p));
    }

    if let Ok(s) = std::str::from_utf8(data) {
        if let Some((lo, hi)) = parse_port_range(s) {
            assert!(lo > 0 && lo <= hi);
            assert_eq!(parse_port_range(&format!("{lo}-{hi}")), Some((lo, hi)));
        }
    }
});
