//! Mutual TLS (issue 15) against real clients and servers.
//!
//! Toward clients (`tls_client_auth`, `tls_client_ca`): curl (`--cert`,
//! `--key`), lftp (`ssl:cert-file`, `ssl:key-file`) and Python's ftplib
//! (`load_cert_chain`) through ftpgate in front of a plain vsftpd, with
//! client certificates from the test CA and from a second CA nobody
//! trusts (`certs::TestPki`); `required` and `optional`, explicit and
//! implicit TLS; the certificate's subject in the `logged in` and `session
//! closed` lines and in the transfer log's user field (`xferlog_user`, the
//! real binary's log); `tls_client_cert_user` letting in only the user the
//! certificate names; a data connection showing another certificate than
//! its control connection.
//!
//! Toward backends (`backend_tls_client_cert`, `backend_tls_client_key`):
//! vsftpd with `require_cert=YES`, `validate_cert=YES` and `ca_certs_file`
//! serves ftpgate's sessions and health checks with ftpgate's certificate,
//! and without it a client gets 421 and the log says why.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::certs::{ClientCertFiles, TestPki};
use crate::clients::{self, ClientTls, Mode, Target};
use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind, TlsSetup};
use crate::scaleout::{free_range_on, port_free_on_all, Ftpgate};

/// The file every backend serves.
const BODY: &[u8] = b"hello over mutual TLS\n";
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A plain vsftpd serving `f.txt`; `None` (a SKIP line) when it is missing.
fn vsftpd_or_skip(test: &str) -> Option<FtpServer> {
    peers::available_or_skip(ServerKind::Vsftpd, test).then(|| {
        FtpServer::start_with(ServerKind::Vsftpd, |root| {
            peers::put_file(root, "f.txt", BODY);
        })
    })
}

/// ftpgate's client side: the PKI's server certificate, client
/// certificates as `auth` says, issued by the test CA.
fn client_auth_toml(pki: &TestPki, auth: &str) -> String {
    format!(
        "tls_cert = {}\ntls_key = {}\ntls_client_auth = \"{auth}\"\ntls_client_ca = {}\n",
        toml_path(&pki.server_cert),
        toml_path(&pki.server_key),
        toml_path(&pki.ca_pem)
    )
}

/// Explicit TLS verifying ftpgate against the test CA, showing `cert`.
fn tls_with(pki: &TestPki, cert: Option<&ClientCertFiles>) -> ClientTls {
    let tls = ClientTls::verify(&pki.ca_pem);
    match cert {
        Some(c) => tls.with_client_cert(&c.cert, &c.key),
        None => tls,
    }
}

/// `ftpgate_tls_handshakes_total` toward clients on control connections.
fn control_handshakes(gw: &Gateway, result: &str) -> u64 {
    let want = format!(
        "ftpgate_tls_handshakes_total{{channel=\"control\",result=\"{result}\",side=\"client\"}} "
    );
    gw.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The real binary in front of `backend` with `extra` keys, on free
/// loopback ports; its control address.
fn binary(backend: SocketAddr, extra: &str) -> (Ftpgate, SocketAddr) {
    let lo = [Ipv4Addr::LOCALHOST];
    for _ in 0..5 {
        let (first, last) = free_range_on(&lo, 10);
        let port = port_free_on_all(&lo);
        let config = format!(
            "listen = [\"127.0.0.1:{port}\"]\nbackends = [\"{backend}\"]\n\
             public_address = \"127.0.0.1\"\npassive_ports = \"{first}-{last}\"\n{extra}"
        );
        match Ftpgate::start(&config) {
            Ok(g) => return (g, SocketAddr::from(([127, 0, 0, 1], port))),
            Err(e) if e.contains("not available") || e.contains("cannot listen") => {}
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free ports for ftpgate");
}

// === a control connection from Rust (rustls), for exact replies ===

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One whole reply (multi-line aware), its lines joined by `\n`.
fn read_reply(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {lines:?}"),
            ));
        }
        let l = l.trim_end().to_owned();
        let last = l.len() >= 4
            && l.as_bytes()[3] == b' '
            && lines.first().is_none_or(|f| f[..3] == l[..3]);
        let single = lines.is_empty() && l.len() >= 4 && l.as_bytes()[3] == b' ';
        lines.push(l);
        if last || single {
            return Ok(lines.join("\n"));
        }
    }
}

/// `AUTH TLS` on a new control connection to `addr`, then a TLS handshake
/// with `cfg`; `Err` when anything fails (a refused handshake included).
fn auth_tls(
    addr: SocketAddr,
    cfg: std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<BufReader<Tls>> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut r = BufReader::new(s.try_clone()?);
    let greeting = read_reply(&mut r)?;
    assert!(greeting.starts_with("220"), "{greeting}");
    (&s).write_all(b"AUTH TLS\r\n")?;
    let r234 = read_reply(&mut r)?;
    assert!(r234.starts_with("234"), "{r234}");
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let mut t = rustls::StreamOwned::new(conn, s);
    while t.conn.is_handshaking() {
        t.conn.complete_io(&mut t.sock)?;
    }
    Ok(BufReader::new(t))
}

fn cmd(t: &mut BufReader<Tls>, line: &str) -> std::io::Result<String> {
    t.get_mut().write_all(format!("{line}\r\n").as_bytes())?;
    read_reply(t)
}

// === toward clients ===

/// `required`: curl, lftp and ftplib showing a certificate of the test CA
/// download through ftpgate; none of them gets in without one or with a
/// certificate of another CA (refused in the handshake, so they never see
/// a 220 inside TLS).
#[test]
fn mtls_required_takes_the_cas_certificates_and_refuses_others() {
    let Some(srv) = vsftpd_or_skip("mtls_required_takes_the_cas_certificates_and_refuses_others")
    else {
        return;
    };
    let pki = TestPki::new();
    let gw = gateway::start(&[srv.addr], &client_auth_toml(&pki, "required"));
    let t = Target::for_server(&srv).via(gw.addr);
    let alice = pki.client_cert("alice", &["alice@example.com"]);
    let mallory = pki.other_ca_client_cert("alice", &["alice@example.com"]);
    let out_dir = tempfile::tempdir().unwrap();

    let ok = tls_with(&pki, Some(&alice));
    let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &ok);
    assert!(
        out.ok && out.stdout == BODY,
        "curl with a CA certificate: {out:?}"
    );
    let dest = out_dir.path().join("lftp.txt");
    let out = clients::lftp_tls(
        &t,
        &format!("get f.txt -o {}", dest.display()),
        Mode::Pasv,
        &ok,
    );
    assert!(
        out.ok && fs::read(&dest).unwrap_or_default() == BODY,
        "lftp with a CA certificate: {out:?}"
    );
    let out = clients::ftplib_tls(
        &t,
        "print('GOT', get_bytes('f.txt').decode().strip())",
        Mode::Pasv,
        &ok,
    );
    assert!(
        out.ok && out.stdout_str().contains("GOT hello over mutual TLS"),
        "ftplib with a CA certificate: {out:?}"
    );
    let served = control_handshakes(&gw, "ok");
    assert!(served >= 3, "{}", gw.metrics());

    for (who, tls) in [
        ("no certificate", tls_with(&pki, None)),
        ("another CA's certificate", tls_with(&pki, Some(&mallory))),
    ] {
        let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &tls);
        assert!(!out.ok && out.stdout.is_empty(), "curl, {who}: {out:?}");
        assert!(
            !out.stderr.contains("230"),
            "curl, {who}, logged in: {out:?}"
        );
        let out = clients::lftp_tls(
            &t,
            &format!("get f.txt -o {}", out_dir.path().join("no.txt").display()),
            Mode::Pasv,
            &tls,
        );
        assert!(!out.ok, "lftp, {who}: {out:?}");
        let out = clients::ftplib_tls(&t, "print('GOT', get_bytes('f.txt'))", Mode::Pasv, &tls);
        assert!(
            !out.ok && !out.stdout_str().contains("GOT"),
            "ftplib, {who}: {out:?}"
        );
    }
    assert!(control_handshakes(&gw, "failed") >= 4, "{}", gw.metrics());
    // A plaintext session is not a TLS session: tls = "optional" still lets
    // it in (tls = "required" would not).
    let out = clients::curl_get(&t, "f.txt", Mode::Epsv);
    assert!(out.ok && out.stdout == BODY, "plaintext curl: {out:?}");
}

/// `optional`: a client without a certificate is served; one with the
/// test CA's is served and named; one with another CA's is refused (a
/// certificate shown is verified).
#[test]
fn mtls_optional_takes_clients_without_a_certificate() {
    let Some(srv) = vsftpd_or_skip("mtls_optional_takes_clients_without_a_certificate") else {
        return;
    };
    let pki = TestPki::new();
    let gw = gateway::start(&[srv.addr], &client_auth_toml(&pki, "optional"));
    let t = Target::for_server(&srv).via(gw.addr);
    let alice = pki.client_cert("alice", &[]);
    let mallory = pki.other_ca_client_cert("mallory", &[]);
    let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &tls_with(&pki, None));
    assert!(out.ok && out.stdout == BODY, "no certificate: {out:?}");
    let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &tls_with(&pki, Some(&alice)));
    assert!(out.ok && out.stdout == BODY, "CA certificate: {out:?}");
    let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &tls_with(&pki, Some(&mallory)));
    assert!(!out.ok, "another CA's certificate: {out:?}");
    let dest = tempfile::tempdir().unwrap();
    let out = clients::lftp_tls(
        &t,
        &format!("get f.txt -o {}", dest.path().join("f").display()),
        Mode::Epsv,
        &tls_with(&pki, None),
    );
    assert!(out.ok, "lftp without a certificate: {out:?}");
}

/// Implicit TLS: the certificate is checked in the first handshake.
#[test]
fn mtls_implicit_listener_requires_the_certificate() {
    let Some(srv) = vsftpd_or_skip("mtls_implicit_listener_requires_the_certificate") else {
        return;
    };
    let pki = TestPki::new();
    let implicit = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let gw = gateway::start(
        &[srv.addr],
        &format!(
            "{}implicit_tls_listen = [\"{implicit}\"]\n",
            client_auth_toml(&pki, "required")
        ),
    );
    let t = Target::for_server(&srv).via(implicit);
    let alice = pki.client_cert("alice", &[]);
    let out = clients::curl_tls_get(
        &t,
        "f.txt",
        Mode::Epsv,
        &tls_with(&pki, Some(&alice)).implicit(),
    );
    assert!(out.ok && out.stdout == BODY, "with a certificate: {out:?}");
    let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &tls_with(&pki, None).implicit());
    assert!(!out.ok && out.stdout.is_empty(), "without: {out:?}");
    let dest = tempfile::tempdir().unwrap();
    let out = clients::lftp_tls(
        &t,
        &format!("get f.txt -o {}", dest.path().join("f").display()),
        Mode::Epsv,
        &tls_with(&pki, Some(&alice)).implicit(),
    );
    assert!(out.ok, "lftp with a certificate: {out:?}");
    drop(gw);
}

/// The subject of the client's certificate in the `logged in` and
/// `session closed` lines, and with `xferlog_user = "certificate"` as the
/// transfer log's user field (the access mode still says anonymous).
#[test]
fn mtls_subject_in_the_log_lines_and_the_xferlog() {
    let Some(srv) = vsftpd_or_skip("mtls_subject_in_the_log_lines_and_the_xferlog") else {
        return;
    };
    let pki = TestPki::new();
    let xferlog = pki.dir().join("xferlog");
    let (gate, addr) = binary(
        srv.addr,
        &format!(
            "health_check = false\n{}xferlog = {}\nxferlog_user = \"certificate\"\n",
            client_auth_toml(&pki, "required"),
            toml_path(&xferlog)
        ),
    );
    let t = Target::for_server(&srv).via(addr);
    let cert = pki.client_cert("Alice Example", &["alice@example.com"]);
    let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &tls_with(&pki, Some(&cert)));
    assert!(
        out.ok && out.stdout == BODY,
        "curl: {out:?}\n{}",
        gate.log()
    );
    let log = gate.wait_log(READ_TIMEOUT, |l| l.contains("session closed"));
    let line = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line in:\n{log}"))
            .to_owned()
    };
    let logged_in = line("logged in");
    assert!(
        logged_in.contains("user=anonymous") && logged_in.contains("client_cert=Alice Example"),
        "{logged_in}"
    );
    let closed = line("session closed");
    assert!(closed.contains("client_cert=Alice Example"), "{closed}");
    let deadline = Instant::now() + READ_TIMEOUT;
    let x = loop {
        let x = fs::read_to_string(&xferlog).unwrap_or_default();
        if !x.is_empty() || Instant::now() > deadline {
            break x;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        x.trim_end()
            .ends_with(" f.txt b _ o a Alice_Example ftp 0 * c"),
        "xferlog: {x:?}"
    );
    // A session without a certificate (plaintext here) logs no client_cert.
    let out = clients::curl_get(&t, "f.txt", Mode::Epsv);
    assert!(out.ok, "{out:?}");
    let log = gate.wait_log(READ_TIMEOUT, |l| l.matches("session closed").count() == 2);
    let second = log
        .lines()
        .filter(|l| l.contains("session closed"))
        .nth(1)
        .unwrap_or_else(|| panic!("one session closed line:\n{log}"));
    assert!(!second.contains("client_cert"), "{second}");
}

/// `tls_client_cert_user`: the certificate whose CN is the login
/// (vsftpd's `anonymous`) logs in; another certificate of the same CA gets
/// `530` from ftpgate, counted as a failed login, and the backend never
/// sees that USER.
#[test]
fn mtls_cert_user_lets_in_only_the_certificates_user() {
    let Some(srv) = vsftpd_or_skip("mtls_cert_user_lets_in_only_the_certificates_user") else {
        return;
    };
    let pki = TestPki::new();
    let gw = gateway::start(
        &[srv.addr],
        &format!(
            "{}tls_client_cert_user = true\n",
            client_auth_toml(&pki, "required")
        ),
    );
    let t = Target::for_server(&srv).via(gw.addr);
    let anonymous = pki.client_cert("anonymous", &[]);
    let alice = pki.client_cert("alice", &["alice@example.com"]);
    let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &tls_with(&pki, Some(&anonymous)));
    assert!(
        out.ok && out.stdout == BODY,
        "matching certificate: {out:?}"
    );
    let out = clients::curl_tls_get(&t, "f.txt", Mode::Epsv, &tls_with(&pki, Some(&alice)));
    assert!(
        !out.ok
            && out
                .stderr
                .contains("530 User does not match the client certificate."),
        "another user's certificate: {out:?}"
    );

    // The exact exchange, from Rust.
    let mut c = auth_tls(gw.addr, crate::certs::client_config_with(Some(&alice), &[])).unwrap();
    assert_eq!(
        cmd(&mut c, "USER anonymous").unwrap(),
        "530 User does not match the client certificate."
    );
    assert!(
        gw.metrics()
            .lines()
            .any(|l| l.starts_with("ftpgate_logins_total{result=\"failure\"}")),
        "{}",
        gw.metrics()
    );
    let mut c = auth_tls(
        gw.addr,
        crate::certs::client_config_with(Some(&anonymous), &[]),
    )
    .unwrap();
    assert!(cmd(&mut c, "USER anonymous").unwrap().starts_with("331"));
}

/// A data connection must show its control connection's certificate (or
/// resume its session): another certificate of the same CA, in a fresh
/// handshake, is refused and the transfer gets 425.
#[test]
fn mtls_data_connection_with_another_certificate_is_refused() {
    let Some(srv) = vsftpd_or_skip("mtls_data_connection_with_another_certificate_is_refused")
    else {
        return;
    };
    let pki = TestPki::new();
    let gw = gateway::start(&[srv.addr], &client_auth_toml(&pki, "required"));
    let alice = pki.client_cert("alice", &[]);
    let bob = pki.client_cert("bob", &[]);
    let data_with = |who: &ClientCertFiles| -> (String, Vec<u8>) {
        let mut c = auth_tls(gw.addr, crate::certs::client_config_with(Some(&alice), &[])).unwrap();
        assert!(cmd(&mut c, "USER anonymous").unwrap().starts_with("331"));
        assert!(cmd(&mut c, "PASS x@y").unwrap().starts_with("230"));
        assert!(cmd(&mut c, "PBSZ 0").unwrap().starts_with("200"));
        assert!(cmd(&mut c, "PROT P").unwrap().starts_with("200"));
        let r = cmd(&mut c, "EPSV").unwrap();
        let port: u16 = r
            .split("|||")
            .nth(1)
            .and_then(|p| {
                p.trim_end_matches(|ch: char| !ch.is_ascii_digit())
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{r}"));
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        // A config of its own: nothing to resume, a full handshake.
        let conn = rustls::ClientConnection::new(
            crate::certs::client_config_with(Some(who), &[]),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        let mut d = rustls::StreamOwned::new(conn, s);
        c.get_mut().write_all(b"RETR f.txt\r\n").unwrap();
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut d, &mut got);
        let mut replies = read_reply(&mut c).unwrap();
        if replies.starts_with("150") {
            replies = format!("{replies}\n{}", read_reply(&mut c).unwrap());
        }
        (replies, got)
    };
    let (replies, got) = data_with(&alice);
    assert!(
        replies.ends_with("226 Transfer complete.") && got == BODY,
        "{replies} {got:?}"
    );
    let (replies, got) = data_with(&bob);
    assert!(got.is_empty(), "{got:?}");
    let last = replies.lines().last().unwrap();
    assert!(last.starts_with("42"), "not a 425/426: {replies}");
}

// === toward backends ===

/// A vsftpd that wants a client certificate of the test CA.
fn vsftpd_requiring_certs(pki: &TestPki) -> FtpServer {
    FtpServer::start_tls(
        ServerKind::Vsftpd,
        TlsSetup::explicit(pki)
            .required()
            .require_client_cert(&pki.ca_pem),
        |root| {
            peers::put_file(root, "f.txt", BODY);
        },
    )
}

/// ftpgate's side toward that vsftpd: explicit TLS verified against the
/// test CA, and `identity` as its client certificate.
fn backend_toml(pki: &TestPki, identity: Option<&ClientCertFiles>) -> String {
    let mut s = format!(
        "backend_tls = \"explicit\"\nbackend_tls_ca = {}\n",
        toml_path(&pki.ca_pem)
    );
    if let Some(id) = identity {
        s.push_str(&format!(
            "backend_tls_client_cert = {}\nbackend_tls_client_key = {}\n",
            toml_path(&id.cert),
            toml_path(&id.key)
        ));
    }
    s
}

/// With `backend_tls_client_cert`/`_key`, sessions (control and data
/// connections, both directions) and health checks (AUTH TLS, login) get
/// through a vsftpd that requires a client certificate; the server itself
/// refuses a client without one.
#[test]
fn mtls_backend_requiring_a_certificate_gets_ftpgates() {
    if !peers::available_tls_or_skip(
        ServerKind::Vsftpd,
        "mtls_backend_requiring_a_certificate_gets_ftpgates",
    ) {
        return;
    }
    let pki = TestPki::new();
    let srv = vsftpd_requiring_certs(&pki);
    let direct = Target::for_server(&srv);
    let out = clients::curl_tls_get(&direct, "f.txt", Mode::Epsv, &tls_with(&pki, None));
    assert!(
        !out.ok,
        "vsftpd let in a client without a certificate: {out:?}"
    );

    let id = pki.client_cert("ftpgate", &[]);
    let gw = gateway::start(
        &[srv.addr],
        &format!(
            "{}{}health_check_user = \"anonymous\"\n",
            crate::health_checks::FAST_CHECKS,
            backend_toml(&pki, Some(&id))
        ),
    );
    crate::health_checks::wait_up(&gw, srv.addr, 1.0);
    let t = direct.via(gw.addr);
    for mode in [Mode::Pasv, Mode::Epsv] {
        let out = clients::curl_get(&t, "f.txt", mode);
        assert!(
            out.ok && out.stdout == BODY,
            "{mode:?}: {out:?}\n{}",
            srv.log()
        );
    }
    let up = pki.dir().join("up.bin");
    let data = peers::random_bytes(200_000, 15);
    fs::write(&up, &data).unwrap();
    let out = clients::curl_put(&t, &up, "upload/up.bin", Mode::Epsv);
    assert!(out.ok, "upload: {out:?}\n{}", srv.log());
    assert_eq!(
        fs::read(srv.root.join("upload/up.bin")).unwrap_or_default(),
        data
    );
}

/// Without ftpgate's certificate the same vsftpd refuses ftpgate: the
/// health check takes the backend down, and with checks off a client gets
/// 421 and the log names the missing certificate.
#[test]
fn mtls_backend_without_ftpgates_certificate_is_421_and_logged() {
    if !peers::available_tls_or_skip(
        ServerKind::Vsftpd,
        "mtls_backend_without_ftpgates_certificate_is_421_and_logged",
    ) {
        return;
    }
    let pki = TestPki::new();
    let srv = vsftpd_requiring_certs(&pki);
    let gw = gateway::start(
        &[srv.addr],
        &format!(
            "{}{}",
            crate::health_checks::FAST_CHECKS,
            backend_toml(&pki, None)
        ),
    );
    crate::health_checks::wait_up(&gw, srv.addr, 0.0);
    let tls_failures = format!(
        "ftpgate_health_check_failures_total{{backend=\"{}\",reason=\"tls\"}}",
        srv.addr
    );
    assert!(
        gw.metrics().lines().any(|l| l.starts_with(&tls_failures)),
        "{}",
        gw.metrics()
    );
    drop(gw);

    let (gate, addr) = binary(
        srv.addr,
        &format!("health_check = false\n{}", backend_toml(&pki, None)),
    );
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let first = read_reply(&mut BufReader::new(s)).unwrap();
    let log = gate.wait_log(READ_TIMEOUT, |l| l.contains("session closed"));
    assert_eq!(
        first, "421 Service not available: TLS to the server failed.",
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("backend_tls_client_cert")),
        "no line naming the missing certificate:\n{log}"
    );
}
