//! FTPS bad input toward ftpgate's client side, against a real vsftpd
//! backend: AUTH without a certificate, garbage instead of a ClientHello, a
//! stalled handshake, plaintext on the implicit port, plaintext pipelined
//! after AUTH, and the policy replies (530, 521, 503, 533, 536). Each case
//! checks that another session on the same ftpgate is not disturbed.
//!
//! Issue 15: cross-protocol ClientHellos (ALPACA: ALPN without `ftp`, SNI
//! outside `tls_server_names`) on explicit and implicit listeners, what
//! curl, lftp and ftplib put in their ClientHello, and the downgrades
//! refused inside TLS (`PROT C` 534 where TLS is required, `CCC` 533, a
//! second `AUTH` 503, `REIN` 502).
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
    tls_upgrade_with(sock, crate::certs::accept_any_server_config(), "127.0.0.1")
}

/// [`tls_upgrade`] with `cfg`, naming `name` (SNI unless an IP address).
fn tls_upgrade_with(
    sock: TcpStream,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    name: &str,
) -> BufReader<TlsStream> {
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from(name.to_owned()).unwrap()).unwrap();
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

// === issue 15: cross-protocol ClientHellos (ALPACA) ===

/// A control session into TLS with `cfg` naming `name`: explicit (`AUTH
/// TLS` on `addr`) or implicit; `Ok` with the first reply inside TLS
/// (`PBSZ 0`'s, or the implicit greeting) and the ALPN protocol agreed,
/// `Err` when the handshake (or that reply) fails.
fn tls_session_with(
    addr: SocketAddr,
    implicit: bool,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<(String, Option<Vec<u8>>), String> {
    let sock = if implicit {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s
    } else {
        let mut c = Plain::connect(addr);
        assert_eq!(code(&c.cmd("AUTH TLS")), 234);
        c.w
    };
    let mut t = tls_upgrade_with(sock, cfg, name);
    let first = if implicit {
        let mut l = String::new();
        t.read_line(&mut l).map(|_| l)
    } else {
        t.get_mut().write_all(b"PBSZ 0\r\n").and_then(|_| {
            let mut l = String::new();
            t.read_line(&mut l).map(|_| l)
        })
    };
    match first {
        Ok(l) if !l.is_empty() => Ok((
            l.trim_end().to_owned(),
            t.get_ref().conn.alpn_protocol().map(<[u8]>::to_vec),
        )),
        Ok(_) => Err("closed".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// On every listener that speaks TLS to clients (explicit AUTH TLS and
/// implicit), a ClientHello offering ALPN without `ftp` (a browser's
/// `http/1.1`, `h2`) is refused with `no_application_protocol`; `ftp`
/// among the offers is agreed; no ALPN at all is fine (FTP clients).
#[test]
fn ftps_hostile_alpn_without_ftp_is_refused_on_every_tls_listener() {
    let Some(server) =
        vsftpd_or_skip("ftps_hostile_alpn_without_ftp_is_refused_on_every_tls_listener")
    else {
        return;
    };
    let implicit = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let gw = gateway::start(
        &[server.addr],
        &format!("{}implicit_tls_listen = [\"{implicit}\"]\n", cert_toml()),
    );
    // ALPN offered, and the protocol agreed (`None` with an offer: refused).
    type Case = (&'static [&'static [u8]], Option<&'static [u8]>);
    let cases: [Case; 5] = [
        (&[b"http/1.1"], None),
        (&[b"h2", b"http/1.1"], None),
        (&[b"ftp"], Some(b"ftp")),
        (&[b"http/1.1", b"ftp"], Some(b"ftp")),
        (&[], None),
    ];
    for (addr, is_implicit) in [(gw.addr, false), (implicit, true)] {
        for (offered, agreed) in cases {
            let cfg = crate::certs::client_config_with(None, offered);
            let r = tls_session_with(addr, is_implicit, cfg, "127.0.0.1");
            let what = format!("implicit={is_implicit} ALPN {offered:?}");
            let refused = !offered.is_empty() && agreed.is_none();
            if refused {
                let e = r.expect_err(&what);
                assert!(e.contains("NoApplicationProtocol"), "{what}: {e}");
            } else {
                let (first, alpn) = r.unwrap_or_else(|e| panic!("{what}: {e}"));
                let want = if is_implicit { "220" } else { "200 PBSZ=0" };
                assert!(first.starts_with(want), "{what}: {first}");
                assert_eq!(alpn.as_deref(), agreed, "{what}");
            }
        }
    }
    assert!(handshakes(&gw, "failed") >= 4, "{}", gw.metrics());
    let mut other = Plain::connect(gw.addr);
    other.login();
}

/// `tls_server_names`: a ClientHello naming (SNI) a host outside the list
/// is refused, on both kinds of listener; a listed name (in any case) and
/// no SNI at all (a client that connected to an address) are served.
/// Real curl, sending SNI through `--resolve`, agrees.
#[test]
fn ftps_hostile_sni_outside_tls_server_names_is_refused() {
    let Some(server) = vsftpd_or_skip("ftps_hostile_sni_outside_tls_server_names_is_refused")
    else {
        return;
    };
    let implicit = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let gw = gateway::start(
        &[server.addr],
        &format!(
            "{}implicit_tls_listen = [\"{implicit}\"]\ntls_server_names = [\"ftp.example.com\"]\n",
            cert_toml()
        ),
    );
    for (addr, is_implicit) in [(gw.addr, false), (implicit, true)] {
        for (name, ok) in [
            ("ftp.example.com", true),
            ("FTP.Example.COM", true),
            ("127.0.0.1", true),
            ("other.example", false),
            ("www.ftp.example.com", false),
        ] {
            let cfg = crate::certs::client_config_with(None, &[]);
            let r = tls_session_with(addr, is_implicit, cfg, name);
            let what = format!("implicit={is_implicit} SNI {name}");
            match (ok, r) {
                (true, Ok(_)) => {}
                (false, Err(e)) => assert!(
                    e.contains("AccessDenied") || e.contains("alert"),
                    "{what}: {e}"
                ),
                (_, r) => panic!("{what}: {r:?}"),
            }
        }
    }
    let login = crate::clients::Target::new("127.0.0.1", gw.port(), "anonymous", "x@y");
    for (host, ok) in [("ftp.example.com", true), ("other.example", false)] {
        let t = crate::clients::Target {
            host: host.to_owned(),
            ..login.clone()
        };
        let resolve = format!("{host}:{}:127.0.0.1", gw.port());
        let out = crate::clients::curl_tls(
            &t,
            "f.txt",
            crate::clients::Mode::Epsv,
            &crate::clients::ClientTls::no_verify(),
            &["--resolve", &resolve],
        );
        assert_eq!(out.ok, ok, "curl naming {host}: {out:?}");
        if ok {
            assert_eq!(out.stdout, b"hello over tls\n");
        }
    }
}

/// What a ClientHello offers: ALPN protocols and SNI.
#[derive(Debug, PartialEq, Eq)]
struct Hello {
    alpn: Option<Vec<String>>,
    sni: Option<String>,
}

/// A one-shot FTP server that answers up to `AUTH` (234), reads the
/// ClientHello that follows, reports it and hangs up; `client` runs
/// against its address meanwhile (and fails, which is expected).
fn client_hello_of(client: impl FnOnce(SocketAddr)) -> Hello {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let probe = std::thread::spawn(move || -> Result<Hello, String> {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(format!("no client: {e}")),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(b"220 probe\r\n").unwrap();
        for _ in 0..10 {
            let mut line = String::new();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("closed before AUTH".into());
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match verb.as_str() {
                "AUTH" => {
                    w.write_all(b"234 go\r\n").unwrap();
                    break;
                }
                "FEAT" => w
                    .write_all(b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n")
                    .unwrap(),
                _ => w.write_all(b"500 no\r\n").unwrap(),
            }
        }
        let mut acceptor = rustls::server::Acceptor::default();
        for _ in 0..100 {
            acceptor
                .read_tls(r.get_mut())
                .map_err(|e| format!("reading the ClientHello: {e}"))?;
            if let Some(accepted) = acceptor.accept().map_err(|(e, _)| e.to_string())? {
                let hello = accepted.client_hello();
                return Ok(Hello {
                    alpn: hello.alpn().map(|protocols| {
                        protocols
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect()
                    }),
                    sni: hello.server_name().map(str::to_owned),
                });
            }
        }
        Err("no whole ClientHello".into())
    });
    client(addr);
    probe.join().unwrap().unwrap()
}

/// curl, lftp and Python's ftplib offer no ALPN at all (so ALPN `ftp`
/// toward clients costs them nothing), and send SNI only for a host name.
/// Noted here so a client update that starts sending ALPN is seen.
#[test]
fn ftps_hostile_what_real_clients_put_in_their_client_hello() {
    use crate::clients::{self, ClientTls, Mode, Target};
    let tls = ClientTls::no_verify();
    let target = |a: SocketAddr| Target::new("127.0.0.1", a.port(), "anonymous", "x@y");
    let curl = client_hello_of(|a| {
        clients::curl_tls(&target(a), "f.txt", Mode::Epsv, &tls, &[]);
    });
    assert_eq!(
        curl,
        Hello {
            alpn: None,
            sni: None
        },
        "curl"
    );
    let curl_named = client_hello_of(|a| {
        let t = Target {
            host: "ftp.example.com".into(),
            ..target(a)
        };
        let resolve = format!("ftp.example.com:{}:127.0.0.1", a.port());
        clients::curl_tls(&t, "f.txt", Mode::Epsv, &tls, &["--resolve", &resolve]);
    });
    assert_eq!(
        curl_named,
        Hello {
            alpn: None,
            sni: Some("ftp.example.com".into())
        },
        "curl to a host name"
    );
    let lftp = client_hello_of(|a| {
        clients::lftp_tls(&target(a), "ls", Mode::Epsv, &tls);
    });
    assert_eq!(lftp.alpn, None, "lftp: {lftp:?}");
    let ftplib = client_hello_of(|a| {
        clients::ftplib_tls(&target(a), "print(1)", Mode::Epsv, &tls);
    });
    assert_eq!(ftplib.alpn, None, "ftplib: {ftplib:?}");
}

// === issue 15: no downgrade inside TLS ===

/// Inside TLS nothing weakens protection: where TLS is required, PROT C
/// after PROT P gets 534 (implicit sessions start with PROT P); CCC 533
/// (no option enables it); a second AUTH 503; REIN 502 from ftpgate, never
/// reaching the server, before and after login. The session goes on. In
/// a plaintext session REIN is still the server's.
#[test]
fn ftps_hostile_no_downgrade_inside_tls() {
    let Some(server) = vsftpd_or_skip("ftps_hostile_no_downgrade_inside_tls") else {
        return;
    };
    let implicit = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let (required, optional) = (peers::free_port(), peers::free_port());
    let gw = gateway::start_on(
        &format!("127.0.0.1:{optional}\", \"127.0.0.1:{required}"),
        &[server.addr],
        &format!(
            "{}implicit_tls_listen = [\"{implicit}\"]\n[tls_for_listener]\n\"127.0.0.1:{required}\" = \"required\"\n",
            cert_toml()
        ),
    );
    const PROT_C: &str = "534 PROT C refused: data protection is required here.";
    const REIN: &str = "502 REIN not available inside TLS; open a new session.";
    let one = |t: &mut BufReader<TlsStream>, line: &str| tls_cmd(t, line).join("\n");

    let mut c = Plain::connect(SocketAddr::from(([127, 0, 0, 1], required)));
    assert_eq!(code(&c.cmd("AUTH TLS")), 234);
    let mut t = tls_upgrade(c.w);
    assert_eq!(one(&mut t, "PBSZ 0"), "200 PBSZ=0");
    assert_eq!(one(&mut t, "PROT P"), "200 PROT now Private.");
    assert_eq!(one(&mut t, "PROT C"), PROT_C);
    assert_eq!(
        one(&mut t, "CCC"),
        "533 CCC refused: the control connection stays protected."
    );
    assert_eq!(one(&mut t, "AUTH TLS"), "503 Already using TLS.");
    assert_eq!(one(&mut t, "REIN"), REIN);
    assert_eq!(code(&tls_cmd(&mut t, "USER anonymous")), 331);
    assert_eq!(code(&tls_cmd(&mut t, "PASS x@y")), 230);
    assert_eq!(one(&mut t, "REIN"), REIN);
    assert_eq!(one(&mut t, "PROT C"), PROT_C);
    // Still logged in, still protected.
    assert_eq!(code(&tls_cmd(&mut t, "NOOP")), 200);
    assert_eq!(one(&mut t, "PROT P"), "200 PROT now Private.");

    // Implicit TLS: PROT P from the start.
    let s = TcpStream::connect(implicit).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut t = tls_upgrade(s);
    assert_eq!(code(&read_reply(&mut t)), 220);
    assert_eq!(one(&mut t, "PROT C"), PROT_C);
    assert_eq!(one(&mut t, "REIN"), REIN);
    assert_eq!(one(&mut t, "AUTH TLS"), "503 Already using TLS.");

    // Optional TLS: PROT C is the client's choice; REIN inside TLS is not.
    let mut c = Plain::connect(SocketAddr::from(([127, 0, 0, 1], optional)));
    assert_eq!(code(&c.cmd("AUTH TLS")), 234);
    let mut t = tls_upgrade(c.w);
    assert_eq!(one(&mut t, "PROT P"), "200 PROT now Private.");
    assert_eq!(one(&mut t, "PROT C"), "200 PROT now Clear.");
    assert_eq!(one(&mut t, "REIN"), REIN);

    // Plaintext: REIN goes to the server (vsftpd does not implement it).
    let mut c = Plain::connect(SocketAddr::from(([127, 0, 0, 1], optional)));
    c.login();
    let r = c.cmd("REIN").join("\n");
    assert!(r.starts_with("502") && !r.contains("inside TLS"), "{r}");
    assert_eq!(gw.addr.port(), optional);
}
