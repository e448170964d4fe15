//! Per-user routing through an in-process ftpgate in front of real servers:
//! ftpgate greets, reads USER, picks the pool ([user_pool], user_pool_default,
//! user_hash), connects, consumes the backend's greeting and replays USER.
//! Which backend a session reached is read from a file naming it.
//!
//! vsftpd knows two anonymous login names, `anonymous` and `ftp`, so two
//! users can be routed to different vsftpd pools; ProFTPD's virtual user
//! gives a login that can fail.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::certs::TestPki;
use crate::clients::{self, ClientTls, Mode, Target};
use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind, TlsSetup, VIRTUAL_PASS, VIRTUAL_USER};

fn vsftpd(name: &str) -> FtpServer {
    FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "who.txt", name.as_bytes());
    })
}

fn login(gw: &Gateway, user: &str, pass: &str) -> suppaftp::FtpStream {
    let mut f = suppaftp::FtpStream::connect(gw.addr).unwrap();
    f.login(user, pass)
        .unwrap_or_else(|e| panic!("login {user}: {e}"));
    f
}

fn who(f: &mut suppaftp::FtpStream) -> String {
    String::from_utf8(f.retr_as_buffer("who.txt").unwrap().into_inner()).unwrap()
}

/// One session as `user`: which backend it reached.
fn one(gw: &Gateway, user: &str) -> String {
    let mut f = login(gw, user, "x@example.com");
    let w = who(&mut f);
    f.quit().unwrap();
    w
}

/// ftpgate with `backends` as the default pool and `tables` after it.
fn start(default: &FtpServer, tables: &str) -> Gateway {
    gateway::start(&[default.addr], tables)
}

/// A raw control connection: the greeting, then one reply per command.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> (Raw, String) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Raw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = raw.reply();
        (raw, greeting)
    }

    /// The next complete reply (last line of a multi-line one).
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap() == 0 {
                return format!("{all}<closed>");
            }
            all.push_str(&line);
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.reply()
    }
}

fn three(test: &str) -> Option<(FtpServer, FtpServer, FtpServer)> {
    peers::available_or_skip(ServerKind::Vsftpd, test)
        .then(|| (vsftpd("A"), vsftpd("B"), vsftpd("C")))
}

#[test]
fn user_routing_sends_each_user_to_its_pool_and_refuses_the_unmapped() {
    let Some((a, b, c)) =
        three("user_routing_sends_each_user_to_its_pool_and_refuses_the_unmapped")
    else {
        return;
    };
    let gw = start(
        &c,
        &format!(
            "[pool.pa]\nbackends = [\"{}\"]\n[pool.pb]\nbackends = [\"{}\"]\n\
             [user_pool]\nanonymous = \"pa\"\nftp = \"pb\"\n",
            a.addr, b.addr
        ),
    );
    for _ in 0..3 {
        assert_eq!(one(&gw, "anonymous"), "A");
        assert_eq!(one(&gw, "ftp"), "B");
    }
    // An unmapped user with no default pool: 530 from ftpgate, nothing
    // reaches any backend (C, the default pool, is not a fallback), and
    // the session may go on with a user that has a pool.
    let (mut raw, greeting) = Raw::connect(gw.addr);
    assert!(greeting.starts_with("220 ftpgate"), "{greeting}");
    let r = raw.cmd("USER mallory");
    assert!(r.starts_with("530 "), "{r}");
    assert!(raw.cmd("PASS x").starts_with("503 "));
    assert!(raw.cmd("LIST").starts_with("530 "));
    assert!(raw.cmd("SYST").starts_with("215 "));
    let feat = raw.cmd("FEAT");
    assert!(feat.starts_with("211") && feat.contains(" EPSV"), "{feat}");
    let r = raw.cmd("USER anonymous");
    assert!(r.starts_with("331 "), "vsftpd's own reply expected: {r}");
    assert!(raw.cmd("PASS x@y").starts_with("230 "));
    assert!(raw.cmd("QUIT").starts_with("221 "));
    assert!(
        !c.log().contains("mallory"),
        "the unmapped user reached the default pool"
    );
}

#[test]
fn user_routing_unmapped_users_take_the_default_pool() {
    let Some((a, b, c)) = three("user_routing_unmapped_users_take_the_default_pool") else {
        return;
    };
    let gw = start(
        &c,
        &format!(
            "user_pool_default = \"default\"\n[pool.pb]\nbackends = [\"{}\", \"{}\"]\n\
             [user_pool]\nftp = \"pb\"\n",
            a.addr, b.addr
        ),
    );
    assert_eq!(one(&gw, "anonymous"), "C");
    let seen: Vec<String> = (0..4).map(|_| one(&gw, "ftp")).collect();
    assert_eq!(seen, ["A", "B", "A", "B"], "round robin inside pool pb");
}

#[test]
fn user_routing_user_hash_keeps_each_user_on_one_backend() {
    let Some((a, b, _c)) = three("user_routing_user_hash_keeps_each_user_on_one_backend") else {
        return;
    };
    let gw = gateway::start(&[a.addr, b.addr], "backend_policy = \"user_hash\"\n");
    for user in ["anonymous", "ftp"] {
        let first = one(&gw, user);
        for _ in 0..4 {
            assert_eq!(one(&gw, user), first, "{user} moved between backends");
        }
    }
}

#[test]
fn user_routing_another_user_after_a_failed_login_is_routed_again() {
    if !peers::available_or_skip(
        ServerKind::Proftpd,
        "user_routing_another_user_after_a_failed_login_is_routed_again",
    ) {
        return;
    }
    let Some((a, _b, c)) = three("user_routing_another_user_after_a_failed_login_is_routed_again")
    else {
        return;
    };
    let pro = FtpServer::start_with(ServerKind::Proftpd, |root| {
        peers::put_file(root, "who.txt", b"P");
    });
    let gw = start(
        &c,
        &format!(
            "max_login_failures = 5\n[pool.pa]\nbackends = [\"{}\"]\n[pool.pp]\nbackends = [\"{}\"]\n\
             [user_pool]\nanonymous = \"pa\"\n{VIRTUAL_USER} = \"pp\"\n",
            a.addr, pro.addr
        ),
    );
    let mut f = suppaftp::FtpStream::connect(gw.addr).unwrap();
    assert!(
        f.login(VIRTUAL_USER, "wrong").is_err(),
        "wrong password accepted"
    );
    // The next user belongs to another pool: ftpgate leaves ProFTPD.
    f.login("anonymous", "x@y").unwrap();
    assert_eq!(who(&mut f), "A");
    f.quit().unwrap();
    // And the virtual user, logged in properly, reaches ProFTPD.
    let mut f = login(&gw, VIRTUAL_USER, VIRTUAL_PASS);
    assert_eq!(who(&mut f), "P");
    // Once logged in, switching to a user of another pool is refused.
    let r = f.login("anonymous", "x@y");
    assert!(r.is_err(), "switched pools inside a logged-in session");
    f.quit().unwrap();
}

/// Real clients: curl and lftp, passive and active, through per-user routing.
#[test]
fn user_routing_with_curl_and_lftp() {
    let Some((a, b, c)) = three("user_routing_with_curl_and_lftp") else {
        return;
    };
    let gw = start(
        &c,
        &format!(
            "[pool.pa]\nbackends = [\"{}\"]\n[pool.pb]\nbackends = [\"{}\"]\n\
             [user_pool]\nanonymous = \"pa\"\nftp = \"pb\"\n",
            a.addr, b.addr
        ),
    );
    for mode in [Mode::Epsv, Mode::Port] {
        let t = Target::new("127.0.0.1", gw.addr.port(), "anonymous", "x@y");
        let out = clients::curl_get(&t, "who.txt", mode);
        out.assert_ok("curl anonymous");
        assert_eq!(out.stdout_str(), "A", "{out:?}");
        let t = Target::new("127.0.0.1", gw.addr.port(), "ftp", "x@y");
        let local = tempfile::tempdir().unwrap();
        let dst = local.path().join("who.txt");
        let out = clients::lftp(&t, &format!("get who.txt -o {}", dst.display()), mode);
        out.assert_ok("lftp ftp");
        assert_eq!(std::fs::read_to_string(&dst).unwrap(), "B", "{out:?}");
    }
}

/// AUTH TLS before USER is answered by ftpgate itself; the backend, picked
/// on USER, is secured with its own AUTH TLS (its greeting consumed).
#[test]
fn user_routing_under_tls_on_both_sides() {
    if !peers::available_tls_or_skip(ServerKind::Vsftpd, "user_routing_under_tls_on_both_sides") {
        return;
    }
    let pki = TestPki::new();
    let start_tls = |name: &'static str| {
        FtpServer::start_tls(
            ServerKind::Vsftpd,
            TlsSetup::explicit(&pki).required(),
            move |root| {
                peers::put_file(root, "who.txt", name.as_bytes());
            },
        )
    };
    let (a, b) = (start_tls("A"), start_tls("B"));
    let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let gw = gateway::start(
        &[a.addr],
        &format!(
            "tls = \"required\"\ntls_cert = {}\ntls_key = {}\nbackend_tls = \"explicit\"\n\
             backend_tls_ca = {}\n\
             [pool.pb]\nbackends = [\"{}\"]\n[user_pool]\nanonymous = \"default\"\nftp = \"pb\"\n",
            path(&pki.server_cert),
            path(&pki.server_key),
            path(&pki.ca_pem),
            b.addr
        ),
    );
    let tls = ClientTls::verify(&pki.ca_pem);
    for (user, want) in [("anonymous", "A"), ("ftp", "B")] {
        let t = Target::new("127.0.0.1", gw.addr.port(), user, "x@y");
        let out = clients::curl_tls_get(&t, "who.txt", Mode::Epsv, &tls);
        out.assert_ok(&format!("curl --ssl-reqd as {user}"));
        assert_eq!(out.stdout_str(), want, "{out:?}");
    }
}
