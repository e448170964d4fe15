//! Gateway mode on loopback: the explicit forward proxy (`USER
//! name@host[:port]`) in front of a real vsftpd, with the allow and deny
//! lists, driven by suppaftp, curl and lftp. Transparent interception needs
//! iptables and namespaces: see `nat.rs`.
//!
//! Every destination a test names is on loopback or refused before any
//! connection is attempted (the lists are checked first).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::clients::{self, Mode, Target};
use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

struct Fx {
    srv: FtpServer,
    _gw: Gateway,
    /// The gateway listener.
    at: SocketAddr,
}

fn fx(test: &str, lists: &str) -> Option<Fx> {
    if !peers::available_or_skip(ServerKind::Vsftpd, test) {
        return None;
    }
    let srv = FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "who.txt", b"the server behind the gateway");
    });
    let at = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    // The FTP listener and its backend are unused here; the gateway
    // listener serves the tests.
    let gw = gateway::start(
        &[srv.addr],
        &format!("gateway_listen = [\"{at}\"]\n{lists}"),
    );
    Some(Fx { srv, _gw: gw, at })
}

const LISTS: &str =
    "gateway_allow = [\"127.0.0.0/8\"]\ngateway_deny = [\"localhost\", \"127.0.0.9\"]\n";

/// Greeting, then each command's reply (last line), over a raw connection.
fn converse(at: SocketAddr, lines: &[&str]) -> Vec<String> {
    let s = TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                return "<closed>".to_owned();
            }
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                last = line.trim_end().to_owned();
                return last;
            }
            last.clear();
        }
    };
    let mut out = vec![reply()];
    for l in lines {
        w.write_all(format!("{l}\r\n").as_bytes()).unwrap();
        out.push(reply());
    }
    out
}

#[test]
fn gateway_user_at_host_reaches_an_allowed_server() {
    let Some(f) = fx("gateway_user_at_host_reaches_an_allowed_server", LISTS) else {
        return;
    };
    let user = format!("anonymous@127.0.0.1:{}", f.srv.port());
    let got = converse(f.at, &[&format!("USER {user}"), "PASS x@y", "QUIT"]);
    assert!(got[0].starts_with("220 ftpgate"), "{got:?}");
    assert!(
        got[1].starts_with("331 "),
        "vsftpd's reply to USER anonymous: {got:?}"
    );
    assert!(got[2].starts_with("230 "), "{got:?}");
    // suppaftp, passive.
    let mut ftp = suppaftp::FtpStream::connect(f.at).unwrap();
    ftp.login(user.as_str(), "x@y").unwrap();
    let data = ftp.retr_as_buffer("who.txt").unwrap().into_inner();
    assert_eq!(data, b"the server behind the gateway");
    ftp.quit().unwrap();
    // lftp, active and passive (its `open -u user,pass` keeps the colon).
    for mode in [Mode::Epsv, Mode::Port] {
        let t = Target::new("127.0.0.1", f.at.port(), &user, "x@y");
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("who.txt");
        let out = clients::lftp(&t, &format!("get who.txt -o {}", dst.display()), mode);
        out.assert_ok("lftp through the gateway");
        assert_eq!(
            std::fs::read(&dst).unwrap(),
            b"the server behind the gateway"
        );
    }
    // curl: the user in the URL, percent-encoded.
    let url = format!(
        "ftp://anonymous%40127.0.0.1%3A{}:x@127.0.0.1:{}/who.txt",
        f.srv.port(),
        f.at.port()
    );
    let out = clients::run(
        {
            let mut c = std::process::Command::new("curl");
            c.args(["-q", "-sS", "--connect-timeout", "15", &url]);
            c
        },
        None,
        clients::default_timeout(),
    );
    out.assert_ok("curl through the gateway");
    assert_eq!(out.stdout_str(), "the server behind the gateway");
}

#[test]
fn gateway_refuses_denied_unlisted_and_unnamed_destinations() {
    let Some(f) = fx(
        "gateway_refuses_denied_unlisted_and_unnamed_destinations",
        LISTS,
    ) else {
        return;
    };
    let p = f.srv.port();
    let cases = [
        // Denied by name, though it resolves to an allowed address.
        (
            format!("USER anonymous@localhost:{p}"),
            "530 Destination not allowed",
        ),
        // Denied by address.
        (
            format!("USER anonymous@127.0.0.9:{p}"),
            "530 Destination not allowed",
        ),
        // Outside the allow list: refused before any connection.
        (
            "USER anonymous@192.0.2.1".to_owned(),
            "530 Destination not allowed",
        ),
        ("USER anonymous".to_owned(), "530 Log in as user@host"),
        (
            format!("USER anonymous@127.0.0.1:{p}0000"),
            "530 Log in as user@host",
        ),
    ];
    for (line, want) in &cases {
        let got = converse(f.at, &[line, "PASS x", "QUIT"]);
        assert!(got[1].starts_with(want), "{line}: {got:?}");
        assert!(
            got[2].starts_with("503 "),
            "{line}: no server took PASS: {got:?}"
        );
        assert!(got[3].starts_with("221 "), "{line}: {got:?}");
    }
    // The session survives a refusal: an allowed destination next works.
    let got = converse(
        f.at,
        &[
            "USER anonymous@192.0.2.1",
            &format!("USER anonymous@127.0.0.1:{p}"),
            "PASS x@y",
        ],
    );
    assert!(
        got[1].starts_with("530 ") && got[2].starts_with("331 ") && got[3].starts_with("230 "),
        "{got:?}"
    );
}

#[test]
fn gateway_with_an_empty_allow_list_is_no_open_relay() {
    let Some(f) = fx("gateway_with_an_empty_allow_list_is_no_open_relay", "") else {
        return;
    };
    let got = converse(
        f.at,
        &[&format!("USER anonymous@127.0.0.1:{}", f.srv.port())],
    );
    assert!(got[1].starts_with("530 Destination not allowed"), "{got:?}");
}

/// A connection made to the gateway listener itself is not "redirected":
/// without iptables there is no original destination, so it is explicit.
#[test]
fn gateway_direct_connection_is_explicit_mode() {
    let Some(f) = fx("gateway_direct_connection_is_explicit_mode", LISTS) else {
        return;
    };
    let got = converse(f.at, &["FEAT", "LIST"]);
    assert!(got[0].starts_with("220 ftpgate"), "{got:?}");
    assert!(got[1].starts_with("211"), "{got:?}");
    assert!(got[2].starts_with("530 "), "{got:?}");
}
