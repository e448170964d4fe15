//! FTPS bad input toward ftpgate's client side, against a real vsftpd
//! backend: AUTH without a certificate, garbage instead of a ClientHello, a
//! stalled handshake, plaintext on the implicit port, plaintext pipelined
//! after AUTH, and the policy replies (530, 521, 503, 533, 536). Each case
//! checks that another session on the same ftpgate is not disturbed.
//!
//! The TLS client here is rustls itself (blocking `StreamOwned`), accepting
//! ftpgate's test certificate whatever it is: these tests are about ftpgate's
//! replies, not certificate checking (tests/it/ftps.rs covers real clients).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config/tls")
        .join(name)
}

/// TOML lines giving ftpgate the fixture certificate.
fn cert_toml() -> String {
    format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        fixture("cert.pem").display().to_string(),
        fixture("key.pem").display().to_string()
    )
}

/// Reads one whole reply (multi-line aware) from `r`; returns its lines.
fn read_reply(r: &mut impl BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        let n = r.read_line(&mut l).expect("read reply");
        assert!(
            n > 0,
            "connection closed while reading a reply; got {lines:?}"
        );
        let l = l.trim_end().to_owned();
        let done = l.len() >= 4
            && l.as_bytes()[3] == b' '
            && lines.first().is_none_or(|f: &String| f[..3] == l[..3]);
        let single = lines.is_empty() && (l.len() == 3 || l.as_bytes()[3] == b' ');
        lines.push(l);
        if single || done {
            return lines;
        }
    }
}

fn code(lines: &[String]) -> u16 {
    lines[0][..3].parse().unwrap()
}

/// A plaintext control connection.
struct Plain {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Plain {
    fn connect(addr: SocketAddr) -> Plain {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut p = Plain {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        assert_eq!(code(&read_reply(&mut p.r)), 220);
        p
    }
    fn cmd(&mut self, line: &str) -> Vec<String> {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        read_reply(&mut self.r)
    }
    fn login(&mut self) {
        assert_eq!(code(&self.cmd("USER anonymous")), 331);
        assert_eq!(code(&self.cmd("PASS x@y")), 230);
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Takes a plain control connection (after its 234) into TLS.
fn tls_upgrade(sock: TcpStream) -> BufReader<TlsStream> {
    let cfg = crate::certs::accept_any_server_config();
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    BufReader::new(rustls::StreamOwned::new(conn, sock))
}

fn tls_cmd(t: &mut BufReader<TlsStream>, line: &str) -> Vec<String> {
    t.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .unwrap();
    read_reply(t)
}

/// Whether the peer closes `s` within `within` (EOF or reset), ignoring
/// whatever bytes (a TLS alert) come first.
fn closes_within(mut s: TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn vsftpd_or_skip(test: &str) -> Option<FtpServer> {
    peers::available_or_skip(ServerKind::Vsftpd, test).then(|| {
        FtpServer::start_with(ServerKind::Vsftpd, |root| {
            peers::put_file(root, "f.txt", b"hello over tls\n");
        })
    })
}

fn handshakes(gw: &Gateway, result: &str) -> u64 {
    let want = format!(
        "ftpgate_tls_handshakes_total{{channel=\"control\",result=\"{result}\",side=\"client\"}} "
    );
    gw.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn ftps_hostile_auth_without_a_certificate_is_504_and_the_session_goes_on() {
    let Some(server) =
        vsftpd_or_skip("ftps_hostile_auth_without_a_certificate_is_504_and_the_session_goes_on")
    else {
        return;
    };
    let gw = gateway::start(&[server.addr], "");
    let mut c = Plain::connect(gw.addr);
    let r = c.cmd("AUTH TLS");
    assert_eq!(code(&r), 504, "{r:?}");
    let feat = c.cmd("FEAT");
    assert!(
        !feat.iter().any(|l| l.contains("AUTH")),
        "FEAT offers AUTH: {feat:?}"
    );
    assert_eq!(code(&c.cmd("PBSZ 0")), 503);
    c.login();
    assert_eq!(code(&c.cmd("NOOP")), 200);
}

#[test]
fn ftps_hostile_garbage_instead_of_a_client_hello_closes_only_that_session() {
    let Some(server) =
        vsftpd_or_skip("ftps_hostile_garbage_instead_of_a_client_hello_closes_only_that_session")
    else {
        return;
    };
    let gw = gateway::start(&[server.addr], &cert_toml());
    let mut other = Plain::connect(gw.addr);
    other.login();
    let mut c = Plain::connect(gw.addr);
    let feat = c.cmd("FEAT");
    assert!(feat.iter().any(|l| l.trim() == "AUTH TLS"), "{feat:?}");
    assert_eq!(code(&c.cmd("AUTH TLS")), 234);
    c.w.write_all(b"USER anonymous\r\nthis is not a ClientHello\r\n\x00\x01\x02")
        .unwrap();
    assert!(
        closes_within(c.w, Duration::from_secs(5)),
        "garbage did not close the session"
    );
    assert_eq!(
        code(&other.cmd("NOOP")),
        200,
        "another session was disturbed"
    );
    assert!(handshakes(&gw, "failed") >= 1, "{}", gw.metrics());
}

#[test]
fn ftps_hostile_stalled_handshake_times_out() {
    let Some(server) = vsftpd_or_skip("ftps_hostile_stalled_handshake_times_out") else {
        return;
    };
    let gw = gateway::start(
        &[server.addr],
        &format!("{}tls_handshake_timeout = \"300ms\"\n", cert_toml()),
    );
    let mut c = Plain::connect(gw.addr);
    // Taken before AUTH TLS is sent, so before ftpgate can start the
    // handshake timer: taken after the 234 arrived, a test thread delayed
    // by 50 ms on a loaded machine would measure less than the timeout.
    let t = Instant::now();
    assert_eq!(code(&c.cmd("AUTH TLS")), 234);
    assert!(
        closes_within(c.w, Duration::from_secs(5)),
        "a stalled handshake kept the session"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "closed before the timeout: {:?}",
        t.elapsed()
    );
    let mut other = Plain::connect(gw.addr);
    other.login();
}

#[test]
fn ftps_hostile_plaintext_on_the_implicit_port_is_closed() {
    let Some(server) = vsftpd_or_skip("ftps_hostile_plaintext_on_the_implicit_port_is_closed")
    else {
        return;
    };
    let implicit = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let gw = gateway::start(
        &[server.addr],
        &format!("{}implicit_tls_listen = [\"{implicit}\"]\n", cert_toml()),
    );
    let mut s = TcpStream::connect(implicit).unwrap();
    s.write_all(b"USER anonymous\r\n").unwrap();
    let mut got = Vec::new();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let _ = s.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("220"),
        "the implicit port spoke plaintext FTP: {got:?}"
    );
    // The explicit listener is unaffected.
    let mut c = Plain::connect(gw.addr);
    c.login();
}

/// A full explicit session with a TLS client: plaintext pipelined after AUTH
/// is dropped, and the policy replies of `tls = "required"`.
#[test]
fn ftps_hostile_required_policy_and_injected_plaintext() {
    let Some(server) = vsftpd_or_skip("ftps_hostile_required_policy_and_injected_plaintext") else {
        return;
    };
    let gw = gateway::start(
        &[server.addr],
        &format!("{}tls = \"required\"\n", cert_toml()),
    );
    let mut c = Plain::connect(gw.addr);
    let r = c.cmd("USER anonymous");
    assert_eq!(code(&r), 530, "{r:?}");
    assert!(r[0].contains("TLS required"), "{r:?}");
    assert_eq!(code(&c.cmd("PROT P")), 503);
    // AUTH with a command pipelined behind it in plaintext: the command
    // must not reach the server (no extra reply appears inside TLS).
    c.w.write_all(b"AUTH TLS\r\nUSER injected\r\n").unwrap();
    assert_eq!(code(&read_reply(&mut c.r)), 234);
    let mut t = tls_upgrade(c.w);
    // (vsftpd answers NOOP with 530 before login: use ftpgate's own PBSZ.)
    let r = tls_cmd(&mut t, "PBSZ 0");
    assert_eq!(
        code(&r),
        200,
        "an injected command was answered first: {r:?}"
    );
    assert_eq!(code(&tls_cmd(&mut t, "AUTH TLS")), 503);
    assert_eq!(code(&tls_cmd(&mut t, "USER anonymous")), 331);
    assert_eq!(code(&tls_cmd(&mut t, "PASS x@y")), 230);
    assert_eq!(code(&tls_cmd(&mut t, "PROT S")), 536);
    assert_eq!(code(&tls_cmd(&mut t, "CCC")), 533);
    assert_eq!(code(&tls_cmd(&mut t, "PROT C")), 200);
    assert_eq!(code(&tls_cmd(&mut t, "PASV")), 227);
    let r = tls_cmd(&mut t, "RETR f.txt");
    assert_eq!(code(&r), 521, "{r:?}");
    let feat = tls_cmd(&mut t, "FEAT");
    for want in ["AUTH TLS", "PBSZ", "PROT"] {
        assert!(
            feat.iter().any(|l| l.trim() == want),
            "FEAT lacks {want}: {feat:?}"
        );
    }
    assert_eq!(code(&tls_cmd(&mut t, "QUIT")), 221);
    assert!(handshakes(&gw, "ok") >= 1);
}

/// The DER of the first certificate in a PEM file.
fn cert_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Opens a TLS control session and returns it with the certificate shown.
fn tls_session(addr: SocketAddr) -> (BufReader<TlsStream>, Vec<u8>) {
    let mut c = Plain::connect(addr);
    assert_eq!(code(&c.cmd("AUTH TLS")), 234);
    let mut t = tls_upgrade(c.w);
    assert_eq!(code(&tls_cmd(&mut t, "PBSZ 0")), 200);
    let shown = t.get_ref().conn.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec();
    (t, shown)
}

/// SIGHUP's path in-process: a reload with another certificate is what new
/// sessions see, while a session opened before keeps its TLS session.
#[test]
fn ftps_certificate_reload_applies_to_new_sessions_only() {
    let Some(server) = vsftpd_or_skip("ftps_certificate_reload_applies_to_new_sessions_only")
    else {
        return;
    };
    let gw = gateway::start(&[server.addr], &cert_toml());
    let (mut old, shown) = tls_session(gw.addr);
    assert_eq!(shown, cert_der(&fixture("cert.pem")));

    let dir = tempfile::tempdir().unwrap();
    let fresh = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("new.pem"), dir.path().join("new.key"));
    std::fs::write(&cert, fresh.cert.pem()).unwrap();
    std::fs::write(&key, fresh.key_pair.serialize_pem()).unwrap();
    let text = format!(
        "listen = [\"{}\"]\nbackends = [\"{}\"]\npublic_address = \"127.0.0.1\"\npassive_ports = \"{}-{}\"\nhealth_check = false\ntls_cert = {:?}\ntls_key = {:?}\n",
        gw.config.listen[0],
        server.addr,
        gw.passive_ports.0,
        gw.passive_ports.1,
        cert.display().to_string(),
        key.display().to_string(),
    );
    // A reload naming a key that does not exist is refused; nothing changes.
    let bad = text.replace("new.key", "missing.key");
    let e = gw.reload(&bad).unwrap_err();
    assert!(e.contains("tls_key") && e.contains("missing.key"), "{e}");
    assert_eq!(tls_session(gw.addr).1, cert_der(&fixture("cert.pem")));

    gw.reload(&text).expect("reload with a new certificate");
    let (mut new, shown) = tls_session(gw.addr);
    assert_eq!(
        shown,
        cert_der(&cert),
        "new sessions get the new certificate"
    );
    // The session from before the reload goes on inside its TLS session.
    assert_eq!(code(&tls_cmd(&mut old, "PROT P")), 200);
    assert_eq!(code(&tls_cmd(&mut old, "USER anonymous")), 331);
    assert_eq!(code(&tls_cmd(&mut new, "QUIT")), 221);
}

/// `[tls_for_listener]`: one listener requires TLS, the other keeps the
/// default (optional), in the same ftpgate.
#[test]
fn ftps_policy_per_listener() {
    let Some(server) = vsftpd_or_skip("ftps_policy_per_listener") else {
        return;
    };
    let (strict, lax) = (peers::free_port(), peers::free_port());
    let gw = gateway::start_on(
        &format!("127.0.0.1:{lax}\", \"127.0.0.1:{strict}"),
        &[server.addr],
        &format!(
            "{}[tls_for_listener]\n\"127.0.0.1:{strict}\" = \"required\"\n",
            cert_toml()
        ),
    );
    let mut c = Plain::connect(SocketAddr::from(([127, 0, 0, 1], strict)));
    assert_eq!(
        code(&c.cmd("USER anonymous")),
        530,
        "the strict listener let a plaintext login in"
    );
    let mut c = Plain::connect(SocketAddr::from(([127, 0, 0, 1], lax)));
    c.login();
    assert_eq!(gw.addr.port(), lax);
}
