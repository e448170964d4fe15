//! PROXY protocol through a real ftpgate (issue 3): headers on the
//! `proxy_protocol_listen` listener and on the passive ports, in front of a
//! real vsftpd, driven by raw sockets that write the headers themselves
//! (with `ftpgate::proto::proxy::encode_v1`/`encode_v2`); and the header
//! ftpgate sends to backends (`backend_proxy_protocol`), recorded by a
//! small scripted backend that reads it with `ftpgate::proto::proxy::parse`.
//!
//! Addresses (loopback only): the "balancer" that may send headers is
//! 127.0.0.2 (`proxy_protocol_from = ["127.0.0.2/32"]`); the test binds its
//! sockets there. Clients the headers name are documentation addresses
//! (203.0.113.0/24) unless ftpgate must reach them (active mode: 127.0.0.3).
//! Every socket read has a timeout, so a hang fails the test.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ftpgate::proto::proxy::{self, Header, Parsed};
use sha2::{Digest, Sha256};

use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

/// How long any single read waits before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The trusted sender of headers (the "balancer").
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The size of the file vsftpd serves.
const FILE_LEN: usize = 300_000;

/// The file vsftpd and the scripted backend serve.
fn file() -> Vec<u8> {
    peers::random_bytes(FILE_LEN, 0x9e0c)
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A PROXY protocol version, as the test writes headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    fn header(self, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        match self {
            Version::V1 => proxy::encode_v1(source, destination),
            Version::V2 => proxy::encode_v2(source, destination),
        }
    }
}

// === the gateway ===

/// ftpgate with a PROXY listener next to its plain one.
struct Proxied {
    gw: Gateway,
    /// The `proxy_protocol_listen` address.
    proxied: SocketAddr,
}

/// Starts ftpgate in front of `backends` with a PROXY listener on
/// 127.0.0.1:<free> trusting only 127.0.0.2, and `extra` config lines.
fn start_proxied(backends: &[SocketAddr], extra: &str) -> Proxied {
    let proxied = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let gw = gateway::start(
        backends,
        &format!(
            "proxy_protocol_listen = [\"{proxied}\"]\nproxy_protocol_from = [\"127.0.0.2/32\"]\n{extra}"
        ),
    );
    Proxied { gw, proxied }
}

/// vsftpd serving [`file`] as `file.bin`, or None (SKIP printed).
fn vsftpd(test: &str) -> Option<FtpServer> {
    if !peers::available_or_skip(ServerKind::Vsftpd, test) {
        return None;
    }
    Some(FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "file.bin", &file());
    }))
}

/// Sum of the series of `name` with all of `labels` (Prometheus text).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, inner) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| inner.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Waits (at most 5 s) until the metric reaches `want`; returns its value.
fn wait_metric(gw: &Gateway, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let v = metric(&gw.metrics(), name, labels);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn refused_data(gw: &Gateway, reason: &str) -> f64 {
    metric(
        &gw.metrics(),
        "ftpgate_data_connections_refused_total",
        &[("reason", reason)],
    )
}

// === raw sockets ===

/// A TCP connection to `to` from `from_ip` (port chosen by the kernel).
fn tcp_from(from_ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from_ip, 0)).into())
        .unwrap_or_else(|e| panic!("bind {from_ip}: {e}"));
    s.connect_timeout(&to.into(), READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {to} from {from_ip}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until EOF (within the read timeout).
#[track_caller]
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v)
        .unwrap_or_else(|e| panic!("data read: {e} after {} bytes", v.len()));
    v
}

/// Asserts `s` is closed by the other side without a byte sent to us
/// (EOF or a reset), within `within`; returns how long that took.
#[track_caller]
fn assert_closed_silently(s: &mut TcpStream, within: Duration) -> Duration {
    let t0 = Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => assert!(
            got.is_empty(),
            "expected a close without data, got {:?}",
            String::from_utf8_lossy(&got)
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "not closed within {within:?} ({e}); got {:?}",
            String::from_utf8_lossy(&got)
        ),
    }
    t0.elapsed()
}

/// One reply.
#[derive(Debug)]
struct Reply {
    code: u16,
    text: String,
}

/// A client speaking FTP by hand.
struct Ctl {
    r: BufReader<TcpStream>,
}

impl Ctl {
    /// Connects from `from` to `to` and writes `header` first (if any),
    /// without reading the greeting.
    fn open(from: Ipv4Addr, to: SocketAddr, header: Option<&[u8]>) -> Ctl {
        let mut s = tcp_from(from, to);
        if let Some(h) = header {
            s.write_all(h).expect("write header");
        }
        Ctl {
            r: BufReader::new(s),
        }
    }

    /// [`Ctl::open`], then expects the 220 greeting.
    #[track_caller]
    fn connect(from: Ipv4Addr, to: SocketAddr, header: Option<&[u8]>) -> Ctl {
        let mut c = Ctl::open(from, to, header);
        c.expect(220);
        c
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.r.get_mut()
    }

    fn local_addr(&self) -> SocketAddr {
        self.r.get_ref().local_addr().unwrap()
    }

    fn send(&mut self, line: &str) {
        self.stream()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("client write: {e}"));
    }

    #[track_caller]
    fn line(&mut self) -> String {
        let mut raw = Vec::new();
        match self.r.read_until(b'\n', &mut raw) {
            Ok(n) if n > 0 && raw.ends_with(b"\n") => {}
            Ok(_) => panic!(
                "connection closed while waiting for a reply (got {:?})",
                String::from_utf8_lossy(&raw)
            ),
            Err(e) => panic!("no reply within {READ_TIMEOUT:?}: {e}"),
        }
        String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    }

    #[track_caller]
    fn reply(&mut self) -> Reply {
        let first = self.line();
        let code: u16 = first
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a reply line: {first:?}"));
        let mut text = first.clone();
        if first.as_bytes().get(3) == Some(&b'-') {
            loop {
                let l = self.line();
                text.push('\n');
                text.push_str(&l);
                if l.starts_with(&format!("{code} ")) {
                    break;
                }
            }
        }
        Reply { code, text }
    }

    #[track_caller]
    fn expect(&mut self, code: u16) -> Reply {
        let r = self.reply();
        assert_eq!(r.code, code, "expected {code}, got {:?}", r.text);
        r
    }

    #[track_caller]
    fn cmd(&mut self, line: &str, code: u16) -> Reply {
        self.send(line);
        self.expect(code)
    }

    /// vsftpd's anonymous login (the scripted backend accepts it too), binary.
    #[track_caller]
    fn login(&mut self) {
        self.cmd(&format!("USER {}", peers::VSFTPD_USER), 331);
        self.cmd(&format!("PASS {}", peers::VSFTPD_PASS), 230);
        self.cmd("TYPE I", 200);
    }

    /// PASV; returns the address of the 227.
    #[track_caller]
    fn pasv(&mut self) -> SocketAddr {
        let r = self.cmd("PASV", 227);
        parse_227(&r.text)
    }

    #[track_caller]
    fn quit(&mut self) {
        self.cmd("QUIT", 221);
    }
}

/// The address of a 227 reply.
#[track_caller]
fn parse_227(text: &str) -> SocketAddr {
    let inner = text
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no (h1,h2,h3,h4,p1,p2) in {text:?}"));
    let n: Vec<u8> = inner
        .split(',')
        .map(|x| {
            x.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad 227 {text:?}"))
        })
        .collect();
    assert_eq!(n.len(), 6, "bad 227 {text:?}");
    SocketAddr::from((
        Ipv4Addr::new(n[0], n[1], n[2], n[3]),
        u16::from(n[4]) << 8 | u16::from(n[5]),
    ))
}

/// A data connection from the balancer to `to` whose header names `client`.
fn data_via_balancer(version: Version, client: SocketAddr, to: SocketAddr) -> TcpStream {
    let mut s = tcp_from(BALANCER, to);
    s.write_all(&version.header(client, to))
        .expect("write data header");
    s
}

/// RETR file.bin over `data` (already connected); checks the bytes.
#[track_caller]
fn retr_file(c: &mut Ctl, mut data: TcpStream) {
    c.cmd("RETR file.bin", 150);
    let got = read_all(&mut data);
    assert_eq!(got.len(), FILE_LEN, "bytes received");
    assert_eq!(sha(&got), sha(&file()), "SHA-256 of the file");
    c.expect(226);
}

// === inbound: headers on the PROXY listener and the passive ports ===

/// A whole session through the PROXY listener: the control connection and
/// the PASV data connection both come from the balancer, each with a
/// header naming the same client; login, RETR (SHA-256 checked), QUIT.
fn header_session(version: Version, test: &str) {
    let Some(v) = vsftpd(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let xferlog = dir.path().join("xferlog");
    let p = start_proxied(&[v.addr], &format!("xferlog = \"{}\"\n", xferlog.display()));
    let client = addr("203.0.113.7:40001");
    let mut c = Ctl::connect(
        BALANCER,
        p.proxied,
        Some(&version.header(client, addr("198.51.100.10:21"))),
    );
    c.login();
    let to = c.pasv();
    assert_eq!(to.ip().to_string(), "127.0.0.1", "227 address");
    assert!(p.gw.owns_passive_port(to.port()), "227 port {to}");
    let data = data_via_balancer(version, addr("203.0.113.7:40002"), to);
    retr_file(&mut c, data);
    c.quit();
    let m = |n, l: &[(&str, &str)], want| wait_metric(&p.gw, n, l, want);
    assert_eq!(
        m(
            "ftpgate_transfers_total",
            &[
                ("direction", "download"),
                ("mode", "passive"),
                ("outcome", "complete")
            ],
            1.0
        ),
        1.0
    );
    assert_eq!(
        m(
            "ftpgate_sessions_total",
            &[("listener", &p.proxied.to_string()), ("outcome", "quit")],
            1.0
        ),
        1.0,
        "{}",
        p.gw.metrics()
    );
    // The transfer log names the client from the header.
    let deadline = Instant::now() + READ_TIMEOUT;
    let line = loop {
        let t = std::fs::read_to_string(&xferlog).unwrap_or_default();
        if !t.is_empty() || Instant::now() > deadline {
            break t;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert!(
        line.contains(&format!(" 203.0.113.7 {FILE_LEN} file.bin ")),
        "xferlog: {line:?}"
    );
    let text = p.gw.metrics();
    assert_eq!(
        metric(&text, "ftpgate_data_connections_refused_total", &[]),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "ftpgate_sessions_total",
            &[("outcome", "proxy_refused")]
        ),
        0.0,
        "{text}"
    );
}

/// v1 headers on control and data: the session and its transfer work.
#[test]
fn proxy_protocol_v1_session_and_data_through_vsftpd() {
    header_session(
        Version::V1,
        "proxy_protocol_v1_session_and_data_through_vsftpd",
    );
}

/// v2 headers on control and data: the session and its transfer work.
#[test]
fn proxy_protocol_v2_session_and_data_through_vsftpd() {
    header_session(
        Version::V2,
        "proxy_protocol_v2_session_and_data_through_vsftpd",
    );
}

/// `max_sessions_per_client = 1` counts the client the header names, not
/// the balancer every connection comes from: two sessions naming different
/// clients are both admitted; a third naming the first client again gets
/// 421 (metrics: the limit hit, `refused_limit`).
#[test]
fn proxy_protocol_limits_count_the_header_client() {
    let Some(v) = vsftpd("proxy_protocol_limits_count_the_header_client") else {
        return;
    };
    let p = start_proxied(&[v.addr], "max_sessions_per_client = 1\n");
    let dst = addr("198.51.100.10:21");
    let h = |src: &str| Version::V2.header(addr(src), dst);
    let mut one = Ctl::connect(BALANCER, p.proxied, Some(&h("203.0.113.1:1111")));
    let mut two = Ctl::connect(BALANCER, p.proxied, Some(&h("203.0.113.2:2222")));
    let mut again = Ctl::open(BALANCER, p.proxied, Some(&h("203.0.113.1:3333")));
    let r = again.reply();
    assert_eq!(r.code, 421, "a second session of 203.0.113.1: {:?}", r.text);
    assert!(r.text.contains("your address"), "{:?}", r.text);
    assert_closed_silently(again.stream(), READ_TIMEOUT);
    // The first two still work.
    one.login();
    two.login();
    let text = p.gw.metrics();
    assert_eq!(
        metric(
            &text,
            "ftpgate_limit_hits_total",
            &[("limit", "max_sessions_per_client")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "ftpgate_sessions_total",
            &[("outcome", "refused_limit")]
        ),
        1.0,
        "{text}"
    );
    one.quit();
    two.quit();
    // Once the first session is gone, its client may come back.
    assert_eq!(
        wait_metric(&p.gw, "ftpgate_sessions_total", &[("outcome", "quit")], 2.0),
        2.0
    );
    let mut back = Ctl::connect(BALANCER, p.proxied, Some(&h("203.0.113.1:4444")));
    back.login();
    back.quit();
}

// --- a backend that counts connections (nothing may reach it) ---

/// A TCP listener that greets every connection with 220 and counts them.
struct Counting {
    addr: SocketAddr,
    count: Arc<Mutex<usize>>,
}

fn counting_backend() -> Counting {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(Mutex::new(0));
    let c2 = Arc::clone(&count);
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            *c2.lock().unwrap() += 1;
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = s.write_all(b"220 counting backend\r\n");
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                    let reply: &[u8] = if line.starts_with("QUIT") {
                        b"221 bye\r\n"
                    } else {
                        b"230 ok\r\n"
                    };
                    let _ = s.write_all(reply);
                    if line.starts_with("QUIT") {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    Counting { addr, count }
}

impl Counting {
    fn connections(&self) -> usize {
        *self.count.lock().unwrap()
    }
}

/// A sender outside `proxy_protocol_from` is closed on the PROXY listener
/// even with a valid header (v1 from 127.0.0.1, v2 from 127.0.0.3), before
/// any backend is contacted; `proxy_refused` counts each. The trusted
/// balancer with the same header is served.
#[test]
fn proxy_protocol_untrusted_sender_is_closed() {
    let b = counting_backend();
    let p = start_proxied(&[b.addr], "");
    let (src, dst) = (addr("203.0.113.7:40001"), addr("198.51.100.10:21"));
    for (from, version) in [
        (Ipv4Addr::LOCALHOST, Version::V1),
        (Ipv4Addr::new(127, 0, 0, 3), Version::V2),
    ] {
        let mut c = Ctl::open(from, p.proxied, Some(&version.header(src, dst)));
        assert_closed_silently(c.stream(), READ_TIMEOUT);
    }
    assert_eq!(
        wait_metric(
            &p.gw,
            "ftpgate_sessions_total",
            &[("outcome", "proxy_refused")],
            2.0
        ),
        2.0
    );
    assert_eq!(
        b.connections(),
        0,
        "an untrusted sender reached the backend"
    );
    let mut ok = Ctl::connect(BALANCER, p.proxied, Some(&Version::V1.header(src, dst)));
    ok.quit();
    assert_eq!(b.connections(), 1);
}

/// With `proxy_protocol_timeout = "300ms"`, each of these from the trusted
/// balancer is closed without a byte and without contacting the backend:
/// silence (no header), a command instead of a header, HTTP garbage, a
/// truncated v1 and a truncated v2 header followed by silence, a v1 header
/// with a bad address, a v2 header with version 3. Silent ones are closed
/// after the timeout (not long after). The plain listener next to it still
/// serves a client without a header, and a valid header still works after.
#[test]
fn proxy_protocol_bad_headers_are_closed() {
    let b = counting_backend();
    let p = start_proxied(&[b.addr], "proxy_protocol_timeout = \"300ms\"\n");
    let v2 = Version::V2.header(addr("203.0.113.7:40001"), addr("198.51.100.10:21"));
    let mut bad_version = v2.clone();
    bad_version[12] = 0x31;
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("silence", Vec::new(), true),
        ("a command", b"USER anonymous\r\n".to_vec(), false),
        ("HTTP", b"GET / HTTP/1.0\r\n\r\n".to_vec(), false),
        ("truncated v1", b"PROXY TCP4 203.0.113.7 ".to_vec(), true),
        ("truncated v2", v2[..20].to_vec(), true),
        (
            "v1 bad address",
            b"PROXY TCP4 203.0.113 198.51.100.10 40001 21\r\n".to_vec(),
            false,
        ),
        ("v2 version 3", bad_version, false),
    ];
    for (what, bytes, silent) in &cases {
        let mut c = Ctl::open(BALANCER, p.proxied, Some(bytes));
        let took = assert_closed_silently(c.stream(), Duration::from_secs(3));
        if *silent {
            assert!(
                took >= Duration::from_millis(250) && took < Duration::from_secs(2),
                "{what}: closed after {took:?}, expected about 300ms"
            );
        }
    }
    assert_eq!(
        wait_metric(
            &p.gw,
            "ftpgate_sessions_total",
            &[("outcome", "proxy_refused")],
            cases.len() as f64
        ),
        cases.len() as f64
    );
    assert_eq!(
        b.connections(),
        0,
        "a refused connection reached the backend"
    );
    // The plain listener: no header, any source.
    let mut plain = Ctl::connect(Ipv4Addr::LOCALHOST, p.gw.addr, None);
    plain.cmd("USER x", 230);
    plain.quit();
    // The PROXY listener still serves a valid header.
    let mut ok = Ctl::connect(BALANCER, p.proxied, Some(&v2));
    ok.quit();
    assert_eq!(b.connections(), 2);
}

/// On a passive port, a data connection from the trusted balancer is
/// matched by the client its header names: naming another client is
/// refused (`foreign_address`: the port waits for someone else), a trusted
/// sender without a header is refused (`proxy_header`), a direct connection
/// from 127.0.0.1 is refused (`foreign_address`), and none of these spends
/// the route: the right header then gets the file. A late one after the
/// transfer finds nothing pending (`no_pending_transfer`).
#[test]
fn proxy_protocol_data_connection_for_another_client_is_refused() {
    let Some(v) = vsftpd("proxy_protocol_data_connection_for_another_client_is_refused") else {
        return;
    };
    let p = start_proxied(&[v.addr], "");
    let client = addr("203.0.113.7:40001");
    let mut c = Ctl::connect(
        BALANCER,
        p.proxied,
        Some(&Version::V2.header(client, addr("198.51.100.10:21"))),
    );
    c.login();
    let to = c.pasv();

    let mut other = data_via_balancer(Version::V2, addr("203.0.113.99:5000"), to);
    assert_closed_silently(&mut other, READ_TIMEOUT);
    assert_eq!(refused_data(&p.gw, "foreign_address"), 1.0);

    let mut garbage = tcp_from(BALANCER, to);
    garbage.write_all(b"hello, no header\r\n").unwrap();
    assert_closed_silently(&mut garbage, READ_TIMEOUT);
    assert_eq!(refused_data(&p.gw, "proxy_header"), 1.0);

    let mut direct = tcp_from(Ipv4Addr::LOCALHOST, to);
    assert_closed_silently(&mut direct, READ_TIMEOUT);
    assert_eq!(refused_data(&p.gw, "foreign_address"), 2.0);

    let data = data_via_balancer(Version::V1, addr("203.0.113.7:40002"), to);
    retr_file(&mut c, data);

    let mut late = data_via_balancer(Version::V2, addr("203.0.113.7:40003"), to);
    assert_closed_silently(&mut late, READ_TIMEOUT);
    assert_eq!(refused_data(&p.gw, "no_pending_transfer"), 1.0);
    c.quit();
}

/// Active mode checks PORT against the client the header names
/// (127.0.0.3), not the balancer the control connection comes from
/// (127.0.0.2), with `active_nat_fix = false`: PORT naming the balancer is
/// refused (504, `bounce`), PORT naming the header's client is accepted and
/// ftpgate connects there with the file (no header of its own in front).
#[test]
fn proxy_protocol_port_is_checked_against_the_header_client() {
    let Some(v) = vsftpd("proxy_protocol_port_is_checked_against_the_header_client") else {
        return;
    };
    let p = start_proxied(&[v.addr], "active_nat_fix = false\n");
    let client_ip = Ipv4Addr::new(127, 0, 0, 3);
    let mut c = Ctl::connect(
        BALANCER,
        p.proxied,
        Some(&Version::V1.header(
            SocketAddr::from((client_ip, 40001)),
            addr("198.51.100.10:21"),
        )),
    );
    c.login();
    let port_arg = |l: &TcpListener| {
        let a = l.local_addr().unwrap();
        let SocketAddr::V4(v4) = a else {
            unreachable!()
        };
        let o = v4.ip().octets();
        format!(
            "PORT {},{},{},{},{},{}",
            o[0],
            o[1],
            o[2],
            o[3],
            a.port() >> 8,
            a.port() & 0xff
        )
    };
    let at_balancer = TcpListener::bind((BALANCER, 0)).unwrap();
    let r = c.cmd(&port_arg(&at_balancer), 504);
    assert!(r.text.contains("client's own"), "{:?}", r.text);
    assert_eq!(refused_data(&p.gw, "bounce"), 1.0);

    let at_client = TcpListener::bind((client_ip, 0)).unwrap();
    c.cmd(&port_arg(&at_client), 200);
    c.cmd("RETR file.bin", 150);
    at_client.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + READ_TIMEOUT;
    let (mut data, from) = loop {
        match at_client.accept() {
            Ok(x) => break x,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("ftpgate did not connect to the PORT address: {e}"),
        }
    };
    data.set_nonblocking(false).unwrap();
    data.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let got = read_all(&mut data);
    assert_eq!(sha(&got), sha(&file()), "active data from {from}");
    c.expect(226);
    at_balancer.set_nonblocking(true).unwrap();
    assert!(
        at_balancer.accept().is_err(),
        "ftpgate connected to the refused PORT address"
    );
    c.quit();
}

/// `public_address = "auto"` advertises what the header says the client
/// connected to (127.0.0.9), on the PROXY listener; the plain listener
/// next to it advertises its own address (127.0.0.1). The passive ports
/// are bound on 127.0.0.9, so the proxied client's transfer to the
/// advertised address works.
#[test]
fn proxy_protocol_auto_public_address_is_the_header_destination() {
    let Some(v) = vsftpd("proxy_protocol_auto_public_address_is_the_header_destination") else {
        return;
    };
    let p = start_proxied(
        &[v.addr],
        "public_address = \"auto\"\npassive_bind_address = \"127.0.0.9\"\n",
    );
    let mut c = Ctl::connect(
        BALANCER,
        p.proxied,
        Some(&Version::V2.header(addr("203.0.113.7:40001"), addr("127.0.0.9:21"))),
    );
    c.login();
    let to = c.pasv();
    assert_eq!(
        to.ip().to_string(),
        "127.0.0.9",
        "227 on the PROXY listener"
    );
    let data = data_via_balancer(Version::V2, addr("203.0.113.7:40002"), to);
    retr_file(&mut c, data);
    c.quit();

    let mut plain = Ctl::connect(Ipv4Addr::LOCALHOST, p.gw.addr, None);
    plain.login();
    let to = plain.pasv();
    assert_eq!(
        to.ip().to_string(),
        "127.0.0.1",
        "227 on the plain listener"
    );
    plain.quit();
}

/// An upload whose data connection brings its header and the first
/// bytes of the file in one write (a balancer may coalesce them): ftpgate
/// takes exactly the header off the stream, and vsftpd stores the file
/// byte for byte.
#[test]
fn proxy_protocol_upload_with_header_and_data_in_one_write() {
    let Some(v) = vsftpd("proxy_protocol_upload_with_header_and_data_in_one_write") else {
        return;
    };
    let p = start_proxied(&[v.addr], "");
    let client = addr("203.0.113.7:40001");
    let mut c = Ctl::connect(
        BALANCER,
        p.proxied,
        Some(&Version::V1.header(client, addr("198.51.100.10:21"))),
    );
    c.login();
    let to = c.pasv();
    let mut data = tcp_from(BALANCER, to);
    c.send(&format!("STOR {}/up.bin", peers::UPLOAD_DIR));
    let body = peers::random_bytes(FILE_LEN, 0x0b10ad);
    let mut bytes = Version::V1.header(addr("203.0.113.7:40002"), to);
    bytes.extend_from_slice(&body);
    data.write_all(&bytes).expect("upload");
    data.shutdown(Shutdown::Write).unwrap();
    c.expect(150);
    c.expect(226);
    drop(data);
    let stored = std::fs::read(v.upload_path().join("up.bin")).expect("uploaded file");
    assert_eq!(stored.len(), body.len(), "stored length");
    assert_eq!(sha(&stored), sha(&body), "stored content");
    c.quit();
}

/// A header that arrives in pieces (a v1 line in three writes, a v2 header
/// in two, 100 ms apart) is read whole.
#[test]
fn proxy_protocol_header_split_across_writes() {
    let b = counting_backend();
    let p = start_proxied(&[b.addr], "");
    let (src, dst) = (addr("203.0.113.7:40001"), addr("198.51.100.10:21"));
    let v1 = Version::V1.header(src, dst);
    let v2 = Version::V2.header(src, dst);
    for pieces in [
        vec![&v1[..6], &v1[6..20], &v1[20..]],
        vec![&v2[..13], &v2[13..]],
    ] {
        let mut c = Ctl::open(BALANCER, p.proxied, None);
        for piece in pieces {
            c.stream().write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(100));
        }
        c.expect(220);
        c.quit();
    }
    assert_eq!(b.connections(), 2);
}

/// A v2 TCP6 header (no v1 here: the family matters, not the text).
fn v2_tcp6(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V6(s), SocketAddr::V6(d)) = (src, dst) else {
        panic!("v2_tcp6 wants IPv6 addresses");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

/// Clients named in TCP6 headers, through an IPv4 listener: an IPv6 client
/// (EPSV; its data header names it again; a data header naming another
/// IPv6 address is refused), and an IPv4-mapped client in a TCP6 header
/// whose data header is plain TCP4 (HAProxy may send either): the same
/// client, so the route matches.
#[test]
fn proxy_protocol_ipv6_and_mapped_header_clients() {
    let Some(v) = vsftpd("proxy_protocol_ipv6_and_mapped_header_clients") else {
        return;
    };
    let p = start_proxied(&[v.addr], "");

    let mut c = Ctl::connect(
        BALANCER,
        p.proxied,
        Some(&v2_tcp6(
            addr("[2001:db8::7]:40001"),
            addr("[2001:db8::1]:21"),
        )),
    );
    c.login();
    let r = c.cmd("EPSV", 229);
    let port: u16 = r
        .text
        .split("|||")
        .nth(1)
        .and_then(|x| x.split('|').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("bad 229 {:?}", r.text));
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let mut wrong = data_via_balancer(Version::V2, addr("[2001:db8::8]:40002"), to);
    assert_closed_silently(&mut wrong, READ_TIMEOUT);
    assert_eq!(refused_data(&p.gw, "foreign_address"), 1.0);
    let data = data_via_balancer(Version::V2, addr("[2001:db8::7]:40002"), to);
    retr_file(&mut c, data);
    c.quit();

    let mut m = Ctl::connect(
        BALANCER,
        p.proxied,
        Some(&v2_tcp6(
            addr("[::ffff:203.0.113.8]:40001"),
            addr("[::ffff:198.51.100.10]:21"),
        )),
    );
    m.login();
    let to = m.pasv();
    let data = data_via_balancer(Version::V2, addr("203.0.113.8:40002"), to);
    retr_file(&mut m, data);
    m.quit();
}

/// `max_connection_rate_per_client = 2` counts the header's client: five
/// connections a second from the balancer naming three clients are
/// admitted while the third from one client is refused (421).
#[test]
fn proxy_protocol_rate_limit_counts_the_header_client() {
    let b = counting_backend();
    let p = start_proxied(&[b.addr], "max_connection_rate_per_client = 2\n");
    let dst = addr("198.51.100.10:21");
    let h = |src: &str| Version::V1.header(addr(src), dst);
    let t0 = Instant::now();
    let mut open = Vec::new();
    for src in [
        "203.0.113.1:1",
        "203.0.113.2:2",
        "203.0.113.3:3",
        "203.0.113.1:4",
    ] {
        open.push(Ctl::connect(BALANCER, p.proxied, Some(&h(src))));
    }
    let mut third = Ctl::open(BALANCER, p.proxied, Some(&h("203.0.113.1:5")));
    let r = third.reply();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "too slow to test a per-second rate ({:?})",
        t0.elapsed()
    );
    assert_eq!(
        r.code, 421,
        "third connection of 203.0.113.1 in a second: {:?}",
        r.text
    );
    assert_eq!(
        metric(
            &p.gw.metrics(),
            "ftpgate_limit_hits_total",
            &[("limit", "max_connection_rate_per_client")]
        ),
        1.0
    );
    for mut c in open {
        c.quit();
    }
}

/// A connection still waiting for its header is not a session: stopping
/// ftpgate (drain 0, as the second SIGTERM or the test gateway's drop does)
/// must not wait `proxy_protocol_timeout` (10 s here) for it.
#[test]
fn proxy_protocol_waiting_header_does_not_delay_stop() {
    let b = counting_backend();
    let p = start_proxied(&[b.addr], "proxy_protocol_timeout = \"10s\"\n");
    let mut silent = Ctl::open(BALANCER, p.proxied, None);
    thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    drop(p.gw);
    let took = t0.elapsed();
    assert_closed_silently(silent.stream(), READ_TIMEOUT);
    assert!(
        took < Duration::from_secs(3),
        "stopping ftpgate took {took:?}: it waited for the PROXY header of a connection that is not a session"
    );
}

// === outbound: backend_proxy_protocol ===

/// What the scripted backend saw on one control connection.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The header's bytes exactly as received.
    raw_header: Vec<u8>,
    /// The header, when one came.
    header: Option<Header>,
    /// Why the first bytes were no header, when they were not.
    header_error: Option<String>,
    /// The command lines after the header.
    commands: Vec<String>,
    /// For each RETR: the bytes that arrived on its data connection before
    /// the backend wrote (a PROXY header there would show up here).
    data_prefixes: Vec<Vec<u8>>,
}

/// A minimal FTP server that reads a PROXY header first, as proftpd's
/// mod_proxy_protocol does: no valid header within 1 s, and the connection
/// is closed without a greeting. Then 220, USER/PASS (331/230), TYPE, PASV
/// (its own data listener), RETR of [`file`], QUIT.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

fn scripted_backend() -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
    thread::spawn(move || {
        for s in l.incoming() {
            if stop2.load(Ordering::SeqCst) {
                return;
            }
            let Ok(s) = s else { continue };
            let i = {
                let mut v = seen2.lock().unwrap();
                v.push(Seen::default());
                v.len() - 1
            };
            let seen = Arc::clone(&seen2);
            thread::spawn(move || serve_scripted(s, &seen, i));
        }
    });
    Scripted { addr, seen, stop }
}

impl Scripted {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Reads a header byte by byte (so nothing after it is consumed) within 1 s.
fn read_header(s: &mut TcpStream) -> Result<(Vec<u8>, Header), String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no header within 1s (got {buf:?})"));
        }
        s.set_read_timeout(Some(left)).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => return Err(format!("closed before a header (got {buf:?})")),
            Ok(_) => buf.push(b[0]),
            Err(_) => return Err(format!("no header within 1s (got {buf:?})")),
        }
        match proxy::parse(&buf) {
            Ok(Parsed::Complete { header, consumed }) => {
                assert_eq!(consumed, buf.len());
                return Ok((buf, header));
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => return Err(format!("{e} (got {buf:?})")),
        }
    }
}

fn serve_scripted(mut s: TcpStream, seen: &Mutex<Vec<Seen>>, i: usize) {
    let record = |f: &dyn Fn(&mut Seen)| f(&mut seen.lock().unwrap()[i]);
    match read_header(&mut s) {
        Ok((raw, header)) => record(&|x| {
            x.raw_header = raw.clone();
            x.header = Some(header);
        }),
        Err(e) => {
            record(&|x| x.header_error = Some(e.clone()));
            return;
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut reply = |t: &str| {
        let _ = s.write_all(format!("{t}\r\n").as_bytes());
    };
    reply("220 scripted backend ready.");
    let mut pasv: Option<TcpListener> = None;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = line.trim_end().to_owned();
        record(&|x| x.commands.push(line.clone()));
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "USER" => reply("331 Please specify the password."),
            "PASS" => reply("230 Login successful."),
            "TYPE" => reply("200 Switching to Binary mode."),
            "PASV" => {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let port = l.local_addr().unwrap().port();
                pasv = Some(l);
                reply(&format!(
                    "227 Entering Passive Mode (127,0,0,1,{},{}).",
                    port >> 8,
                    port & 0xff
                ));
            }
            "RETR" => {
                let Some(l) = pasv.take() else {
                    reply("425 Use PASV first.");
                    continue;
                };
                reply("150 Opening BINARY mode data connection.");
                l.set_nonblocking(true).unwrap();
                let deadline = Instant::now() + READ_TIMEOUT;
                let accepted = loop {
                    match l.accept() {
                        Ok((d, _)) => break Some(d),
                        Err(_) if Instant::now() < deadline => {
                            thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => break None,
                    }
                };
                let Some(mut d) = accepted else {
                    reply("425 No data connection.");
                    continue;
                };
                d.set_nonblocking(false).unwrap();
                // Whatever ftpgate sends before the file starts (it should
                // send nothing at all on a download) arrives within this.
                d.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut prefix = vec![0u8; 4096];
                let n = d.read(&mut prefix).unwrap_or(0);
                prefix.truncate(n);
                record(&|x| x.data_prefixes.push(prefix.clone()));
                d.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
                if d.write_all(&file()).is_err() {
                    reply("426 Connection closed; transfer aborted.");
                    continue;
                }
                let _ = d.shutdown(Shutdown::Write);
                drop(d);
                reply("226 Transfer complete.");
            }
            "QUIT" => {
                reply("221 Goodbye.");
                return;
            }
            _ => reply("502 Command not implemented."),
        }
    }
}

/// A session through the plain listener with `backend_proxy_protocol =
/// version`: the backend receives one header of that version naming the
/// client's own address and the address it connected to, then the first
/// command (nothing between); the PASV data connection to the backend
/// carries no header (nothing arrives before the backend writes) and the
/// client receives exactly the backend's bytes.
fn backend_header(version: Version) {
    let b = scripted_backend();
    let name = match version {
        Version::V1 => "v1",
        Version::V2 => "v2",
    };
    let gw = gateway::start(&[b.addr], &format!("backend_proxy_protocol = \"{name}\"\n"));
    let mut c = Ctl::connect(Ipv4Addr::LOCALHOST, gw.addr, None);
    let me = c.local_addr();
    c.login();
    let to = c.pasv();
    let data = tcp_from(Ipv4Addr::LOCALHOST, to);
    retr_file(&mut c, data);
    c.quit();

    let seen = b.seen();
    assert_eq!(seen.len(), 1, "backend connections: {seen:?}");
    let s = &seen[0];
    assert_eq!(s.header_error, None);
    assert_eq!(
        s.header,
        Some(Header::Proxy {
            source: me,
            destination: gw.addr
        }),
        "header the backend received"
    );
    match version {
        Version::V1 => assert!(
            s.raw_header.starts_with(b"PROXY TCP4 "),
            "{:?}",
            String::from_utf8_lossy(&s.raw_header)
        ),
        Version::V2 => assert!(
            s.raw_header.starts_with(b"\r\n\r\n\0\r\nQUIT\n\x21\x11"),
            "{:?}",
            s.raw_header
        ),
    }
    assert_eq!(
        s.commands.first().map(String::as_str),
        Some("USER anonymous"),
        "first command after the header: {:?}",
        s.commands
    );
    assert_eq!(
        s.data_prefixes,
        vec![Vec::<u8>::new()],
        "bytes ftpgate sent on the backend data connection before the file"
    );
}

/// `backend_proxy_protocol = "v1"`: see [`backend_header`].
#[test]
fn proxy_protocol_backend_v1_header_names_the_client() {
    backend_header(Version::V1);
}

/// `backend_proxy_protocol = "v2"`: see [`backend_header`].
#[test]
fn proxy_protocol_backend_v2_header_names_the_client() {
    backend_header(Version::V2);
}

/// PROXY on both ends: a client arriving with a v2 header naming
/// 203.0.113.7:40001 -> 198.51.100.10:21 is announced to the backend with
/// a v1 header naming exactly those two addresses (not the balancer, not
/// ftpgate's listener); its data connection (also with a header) works and
/// the backend's data connection carries none.
#[test]
fn proxy_protocol_backend_header_names_the_header_client() {
    let b = scripted_backend();
    let p = start_proxied(&[b.addr], "backend_proxy_protocol = \"v1\"\n");
    let (src, dst) = (addr("203.0.113.7:40001"), addr("198.51.100.10:21"));
    let mut c = Ctl::connect(BALANCER, p.proxied, Some(&Version::V2.header(src, dst)));
    c.login();
    let to = c.pasv();
    let data = data_via_balancer(Version::V2, addr("203.0.113.7:40002"), to);
    retr_file(&mut c, data);
    c.quit();
    let seen = b.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].header,
        Some(Header::Proxy {
            source: src,
            destination: dst
        })
    );
    assert_eq!(
        String::from_utf8_lossy(&seen[0].raw_header),
        "PROXY TCP4 203.0.113.7 198.51.100.10 40001 21\r\n"
    );
    assert_eq!(seen[0].data_prefixes, vec![Vec::<u8>::new()]);
}

/// Health checks are backend control connections too: with
/// `backend_proxy_protocol = "v2"` and health checks on (the default), a
/// backend that requires the header (as proftpd's mod_proxy_protocol does,
/// which the README names as the reader of this header) must still pass
/// its checks, so every connection it receives must start with a header
/// (v2 LOCAL would be the spec's choice for a check) and clients are served.
#[test]
fn proxy_protocol_backend_health_checks_carry_the_header() {
    let b = scripted_backend();
    let gw = gateway::start(
        &[b.addr],
        "backend_proxy_protocol = \"v2\"\nhealth_check = true\nhealth_check_interval = \"1s\"\nhealth_check_timeout = \"2s\"\n",
    );
    // Wait for the first check's verdict.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&gw.metrics(), "ftpgate_health_checks_total", &[]) < 1.0 {
        assert!(Instant::now() < deadline, "no health check ran");
        thread::sleep(Duration::from_millis(20));
    }
    let headerless: Vec<Seen> = b
        .seen()
        .into_iter()
        .filter(|s| s.header.is_none())
        .collect();
    let up = metric(&gw.metrics(), "ftpgate_backend_up", &[]);
    let mut c = Ctl::open(Ipv4Addr::LOCALHOST, gw.addr, None);
    let greeting = c.reply();
    assert!(
        headerless.is_empty() && up == 1.0 && greeting.code == 220,
        "health check without a PROXY header: the backend saw {headerless:?}; \
         ftpgate_backend_up = {up}; a client got {:?}",
        greeting.text
    );
    c.quit();
}

// === logs, through the real binary ===

/// The `session closed` line names the client from the header, and a
/// refused sender is logged with its address and reason.
#[test]
fn proxy_protocol_log_names_the_header_client() {
    use crate::scaleout::{free_range_on, port_free_on_all, Ftpgate};
    let b = counting_backend();
    let lo = [Ipv4Addr::LOCALHOST];
    let mut gate = None;
    let mut proxied = addr("127.0.0.1:1");
    for _ in 0..5 {
        let (first, last) = free_range_on(&lo, 5);
        let (plain, px) = (port_free_on_all(&lo), port_free_on_all(&lo));
        proxied = SocketAddr::from(([127, 0, 0, 1], px));
        let config = format!(
            "listen = [\"127.0.0.1:{plain}\"]\n\
             proxy_protocol_listen = [\"{proxied}\"]\n\
             proxy_protocol_from = [\"127.0.0.2/32\"]\n\
             backends = [\"{}\"]\n\
             passive_ports = \"{first}-{last}\"\n\
             health_check = false\n",
            b.addr
        );
        match Ftpgate::start(&config) {
            Ok(g) => {
                gate = Some(g);
                break;
            }
            Err(e) if e.contains("not available") || e.contains("cannot listen") => {}
            Err(e) => panic!("{e}"),
        }
    }
    let gate = gate.expect("no free ports for ftpgate");
    let mut c = Ctl::connect(
        BALANCER,
        proxied,
        Some(&Version::V2.header(addr("203.0.113.77:45678"), addr("198.51.100.10:21"))),
    );
    c.cmd("USER x", 230);
    c.quit();
    let mut refused = Ctl::open(
        Ipv4Addr::LOCALHOST,
        proxied,
        Some(&Version::V1.header(addr("203.0.113.78:1"), addr("198.51.100.10:21"))),
    );
    assert_closed_silently(refused.stream(), READ_TIMEOUT);
    let log = gate.wait_log(READ_TIMEOUT, |l| {
        l.contains("session closed") && l.contains("PROXY protocol listener")
    });
    let closed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session closed"))
        .collect();
    assert_eq!(closed.len(), 1, "log:\n{log}");
    assert!(
        closed[0].contains("client=203.0.113.77:45678"),
        "session closed line: {}",
        closed[0]
    );
    let warn = log
        .lines()
        .find(|l| l.contains("connection closed on the PROXY protocol listener"))
        .unwrap_or_else(|| panic!("no refusal line in:\n{log}"));
    assert!(
        warn.contains("peer=127.0.0.1:") && warn.contains("proxy_protocol_from"),
        "refusal line: {warn}"
    );
}
