//! The rewrites: backend 227/229 -> data address, public address -> client
//! 227/229, FEAT, and PORT/EPRT targets.
//!
//! Input (see `ftpgate_fuzz::Cursor`): flags byte (bit 0 trust the 227
//! address, bit 1 active NAT fix, bit 2 ftpgate sent EPSV instead of PASV,
//! bit 3 the client sent EPSV instead of PASV, bit 4 active mode off), backend IP, backend port
//! (2 bytes), public IP, leased port (2 bytes), client IP, PORT/EPRT IP,
//! PORT/EPRT port (2 bytes); the rest is a backend reply stream (each
//! complete reply is used) and is also tried as a PORT and an EPRT argument.
//!
//! Checks:
//! - a backend data address is the backend's own IP (unless the 227 address
//!   is trusted and named), with a non-zero port taken from the reply;
//! - the client's 227/229 is one line, names only the public address and the
//!   leased port, and never any address the backend named;
//! - `check_active_target` never accepts a port below 1024 or an address
//!   other than the client's, and refuses for the documented reason only;
//! - the PORT/EPRT ftpgate sends the backend is one line that parses back to
//!   the target;
//! - `rewrite_feat` leaves non-211 replies alone, keeps the reply
//!   well-formed and the backend's lines in order, adds every provided
//!   feature, drops every withheld one (AUTH, PBSZ, PROT, CCC), and is
//!   idempotent.

#![no_main]

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use ftpgate::net::{canonical, canonical_ip, is_private, BackendAddr, PublicAddr};
use ftpgate::proto::command::{parse_command, Verb};
use ftpgate::proto::hostport::{
    format_port_arg, parse_227_text, parse_229_text, parse_eprt_arg, parse_port_arg,
};
use ftpgate::proto::reply::{Reply, ReplyAssembler};
use ftpgate::proto::rewrite::{
    backend_active_command, backend_data_addr, check_active_target, client_passive_reply,
    rewrite_feat, ActiveRefusal, ClientPassive, PassiveCommand,
};
use ftpgate_fuzz::Cursor;
use libfuzzer_sys::fuzz_target;

/// Upper bound on replies checked per input.
const MAX_REPLIES: usize = 64;

/// Features the session adds to FEAT (EPRT only with active mode on).
const PROVIDED_ACTIVE: &[&str] = &["EPSV", "EPRT"];
const PROVIDED_PASSIVE_ONLY: &[&str] = &["EPSV"];
/// Features the session removes while FTPS is not carried.
const WITHHELD: &[&str] = &["AUTH", "PBSZ", "PROT", "CCC"];

/// A FEAT line's feature name: first word, upper-cased (RFC 2389 section 3).
fn feature(line: &[u8]) -> Vec<u8> {
    let t = line.trim_ascii_start();
    let end = t.iter().position(|&c| c == b' ').unwrap_or(t.len());
    t[..end].to_ascii_uppercase()
}

fn reply_text(r: &Reply) -> Vec<u8> {
    r.lines
        .iter()
        .flat_map(|l| l.get(4..).unwrap_or(&[]).iter().copied().chain(*b" "))
        .collect()
}

fn reassemble(r: &Reply) -> Reply {
    let mut a = ReplyAssembler::new(1 << 20, 1 << 20);
    a.push(&r.to_bytes());
    let got = a.next_reply().expect("a whole reply").expect("well-formed");
    assert!(a.next_reply().is_none(), "one reply became several");
    got
}

fn check_backend_reply(r: &Reply, sent: PassiveCommand, backend: BackendAddr, trust: bool) {
    let Ok(data) = backend_data_addr(r, sent, backend, trust) else {
        return;
    };
    assert_ne!(data.0.port(), 0);
    let text = reply_text(r);
    match sent {
        PassiveCommand::Pasv => {
            assert_eq!(r.code, 227);
            let named = parse_227_text(&text).expect("accepted 227 names an address");
            assert_eq!(data.0.port(), named.port());
            let backend_ip = canonical_ip(backend.0.ip());
            if trust && !named.ip().is_unspecified() {
                assert_eq!(data.0.ip(), IpAddr::V4(*named.ip()));
            } else {
                assert_eq!(data.0.ip(), backend_ip, "untrusted 227 address used");
            }
        }
        PassiveCommand::Epsv => {
            assert_eq!(r.code, 229);
            assert_eq!(Some(data.0.port()), parse_229_text(&text));
            assert_eq!(canonical(data.0).ip(), canonical_ip(backend.0.ip()));
        }
    }
}

fn check_client_reply(
    kind: ClientPassive,
    public: PublicAddr,
    port: u16,
    backend_named: &[SocketAddrV4],
) {
    let Some(out) = client_passive_reply(kind, public, port) else {
        assert!(
            kind == ClientPassive::Pasv && public.ip().is_ipv6(),
            "no reply for {public}"
        );
        return;
    };
    assert_eq!(out.lines.len(), 1);
    assert_eq!(reassemble(&out), out);
    let text = out.first_text();
    match kind {
        ClientPassive::Pasv => {
            assert_eq!(out.code, 227);
            let IpAddr::V4(v4) = public.ip() else {
                panic!("227 for an IPv6 public address");
            };
            let want = SocketAddrV4::new(v4, port);
            assert_eq!(parse_227_text(text), Some(want));
            // Only the public address: the six numbers appear once, and no
            // address the backend named (unless it is the public one).
            let six = format_port_arg(want);
            let s = String::from_utf8_lossy(text);
            assert_eq!(s.matches(&six).count(), 1);
            for b in backend_named {
                let bs = format!("({},", b.ip().to_string().replace('.', ","));
                assert!(
                    b.ip() == &v4 || !s.contains(&bs),
                    "backend address {b} leaked: {s}"
                );
            }
        }
        ClientPassive::Epsv => {
            assert_eq!(out.code, 229);
            if port != 0 {
                assert_eq!(parse_229_text(text), Some(port));
            }
            assert!(
                !text.contains(&b'.') && !text.contains(&b','),
                "229 names an address"
            );
        }
    }
}

fn check_active(named: SocketAddr, client: IpAddr, nat_fix: bool) {
    let result = check_active_target(named, client, nat_fix);
    let cn = canonical(named);
    let cc = canonical_ip(client);
    match result {
        Ok((target, replaced)) => {
            assert!(target.port() >= 1024, "port below 1024 accepted: {target}");
            assert_eq!(target.port(), named.port());
            assert_eq!(
                canonical_ip(target.ip()),
                cc,
                "target {target} is not the client {client}"
            );
            assert_eq!(replaced, cn.ip() != cc);
            assert!(!replaced || (nat_fix && is_private(cn.ip())));
            let cmd = backend_active_command(target);
            assert!(cmd.ends_with("\r\n"));
            assert_eq!(cmd.matches('\n').count(), 1);
            let c = parse_command(cmd.trim_end().as_bytes());
            let arg = c.arg.as_deref().expect("argument");
            match c.verb {
                Verb::Port => assert_eq!(
                    parse_port_arg(arg).map(SocketAddr::V4),
                    Ok(canonical(target))
                ),
                Verb::Eprt => assert_eq!(parse_eprt_arg(arg), Ok(canonical(target))),
                v => panic!("backend active command is {v:?}"),
            }
        }
        Err(ActiveRefusal::PrivilegedPort) => assert!(named.port() < 1024),
        Err(ActiveRefusal::ForeignHost) => {
            assert!(named.port() >= 1024);
            assert_ne!(cn.ip(), cc);
            assert!(!nat_fix || !is_private(cn.ip()));
        }
    }
}

fn check_feat(r: &Reply, provided: &[&str]) {
    let out = rewrite_feat(r, provided, WITHHELD);
    if r.code != 211 {
        assert_eq!(&out, r);
        return;
    }
    assert_eq!(out.code, 211);
    assert_eq!(
        reassemble(&out),
        out,
        "rewritten FEAT is not a well-formed reply"
    );
    assert_eq!(
        rewrite_feat(&out, provided, WITHHELD),
        out,
        "rewrite_feat is not idempotent"
    );
    let n = out.lines.len();
    assert!(n >= 2, "a FEAT reply with features added is multi-line");
    let middle = &out.lines[1..n - 1];
    for f in provided {
        assert!(
            middle.iter().any(|l| feature(l) == f.as_bytes()),
            "{f} missing from {out:?}"
        );
    }
    for l in middle {
        assert!(
            !WITHHELD.iter().any(|w| feature(l) == w.as_bytes()),
            "withheld feature {l:?} kept"
        );
    }
    if r.lines.len() > 1 {
        assert_eq!(out.lines.first(), r.lines.first());
        assert_eq!(out.lines.last(), r.lines.last());
        // The backend's own lines keep their order; added ones come after.
        let orig: Vec<_> = r.lines[1..r.lines.len() - 1]
            .iter()
            .filter(|l| !WITHHELD.iter().any(|w| feature(l) == w.as_bytes()))
            .collect();
        assert_eq!(middle[..orig.len()].iter().collect::<Vec<_>>(), orig);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let trust = flags & 1 != 0;
    let nat_fix = flags & 2 != 0;
    let sent = if flags & 4 != 0 {
        PassiveCommand::Epsv
    } else {
        PassiveCommand::Pasv
    };
    let active_mode = flags & 16 == 0;
    let client_kind = if flags & 8 != 0 {
        ClientPassive::Epsv
    } else {
        ClientPassive::Pasv
    };
    let backend = BackendAddr(SocketAddr::new(c.ip(), c.u16()));
    let public = PublicAddr::new(c.ip());
    let lease_port = c.u16();
    let client = c.ip();
    let named = SocketAddr::new(c.ip(), c.u16());
    let stream = c.rest();

    check_active(named, client, nat_fix);
    if let Ok(a) = parse_port_arg(stream) {
        check_active(SocketAddr::V4(a), client, nat_fix);
    }
    if let Ok(a) = parse_eprt_arg(stream) {
        check_active(a, client, nat_fix);
    }

    // The session's limits: 16 KiB lines, 1 MiB per reply.
    let mut asm = ReplyAssembler::new(16 * 1024, 1024 * 1024);
    asm.push(stream);
    let mut backend_named = Vec::new();
    for _ in 0..MAX_REPLIES {
        let Some(r) = asm.next_reply() else { break };
        let Ok(r) = r else { continue };
        for s in [PassiveCommand::Pasv, PassiveCommand::Epsv] {
            check_backend_reply(&r, s, backend, trust);
        }
        check_backend_reply(&r, sent, backend, !trust);
        if let Some(a) = parse_227_text(&reply_text(&r)) {
            backend_named.push(a);
        }
        check_feat(
            &r,
            if active_mode {
                PROVIDED_ACTIVE
            } else {
                PROVIDED_PASSIVE_ONLY
            },
        );
    }
    check_client_reply(client_kind, public, lease_port, &backend_named);
    check_client_reply(ClientPassive::Pasv, public, lease_port, &backend_named);
    check_client_reply(ClientPassive::Epsv, public, lease_port, &backend_named);
});
