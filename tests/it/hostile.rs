//! Hostile and broken peers that a real server or client would not produce,
//! through a real ftpgate: a scripted fake backend on one side, a raw
//! `TcpStream` speaking FTP by hand on the other, so every reply code the
//! client receives can be asserted exactly (the reply table is STYLE.md
//! section 2 / docs/errors.md).
//!
//! Each scenario is one short function: start a [`fake`] backend with a
//! script (a closure from command line to action, falling back to
//! [`Ctl::standard`]), start a gateway in front of it, talk. Every socket read
//! has a timeout, so a hang fails the test instead of hanging it.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

/// How long any single read waits before the test fails.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Deterministic file content: large enough to span many TCP segments.
pub(crate) fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// What the fake backend serves for RETR.
fn fake_file() -> Vec<u8> {
    file_bytes(100_000, 0xfa4e)
}

// === fake backend ===

/// What the fake backend does after handling a command.
pub(crate) enum Then {
    /// Read the next command.
    Go,
    /// Never answer again (keep reading and ignoring until the peer closes).
    Hang,
    /// Close the control connection at once.
    Close,
}

/// One control connection of the fake backend, as its script sees it.
pub(crate) struct Ctl {
    pub(crate) stream: TcpStream,
    /// The USER name sent on this connection, "" before USER.
    pub(crate) user: String,
    /// The passive data listener of the last PASV/EPSV.
    pub(crate) data: Option<TcpListener>,
}

impl Ctl {
    /// Writes `text` and CRLF (multi-line replies carry their inner CRLFs).
    pub(crate) fn reply(&mut self, text: &str) {
        let _ = self.stream.write_all(format!("{text}\r\n").as_bytes());
    }

    /// Binds a passive data listener on 127.0.0.1 and returns its port.
    pub(crate) fn listen_data(&mut self) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("fake: bind data port");
        let port = l.local_addr().unwrap().port();
        self.data = Some(l);
        port
    }

    /// Accepts the data connection (ftpgate makes it right after the
    /// 227/229) and sends `bytes` on it, framed by 150 and 226.
    pub(crate) fn send_file(&mut self, bytes: &[u8]) {
        let Some(l) = self.data.take() else {
            return self.reply("425 Use PASV or EPSV first.");
        };
        self.reply("150 Opening BINARY mode data connection.");
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(_) => return self.reply("425 No data connection."),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        if s.write_all(bytes).is_err() {
            return self.reply("426 Connection closed; transfer aborted.");
        }
        let _ = s.shutdown(Shutdown::Write);
        drop(s);
        self.reply("226 Transfer complete.");
    }

    /// What a well-behaved little server answers.
    pub(crate) fn standard(&mut self, line: &str) -> Then {
        match verb(line).as_str() {
            "USER" => {
                self.user = arg(line).to_owned();
                self.reply("331 Please specify the password.");
            }
            "PASS" => self.reply("230 Login successful."),
            "NOOP" => self.reply("200 NOOP ok."),
            "SYST" => self.reply("215 UNIX Type: L8"),
            "PWD" => self.reply("257 \"/\" is the current directory"),
            "TYPE" => self.reply("200 Switching to Binary mode."),
            "ABOR" => self.reply("225 No transfer to ABOR."),
            "PASV" => {
                let p = self.listen_data();
                self.reply(&format!(
                    "227 Entering Passive Mode (127,0,0,1,{},{}).",
                    p >> 8,
                    p & 0xff
                ));
            }
            "EPSV" => {
                let p = self.listen_data();
                self.reply(&format!("229 Entering Extended Passive Mode (|||{p}|)"));
            }
            "RETR" => self.send_file(&fake_file()),
            "QUIT" => {
                self.reply("221 Goodbye.");
                return Then::Close;
            }
            _ => self.reply("502 Command not implemented."),
        }
        Then::Go
    }
}

/// The upper-cased verb of a command line.
pub(crate) fn verb(line: &str) -> String {
    line.split(' ').next().unwrap_or("").to_ascii_uppercase()
}

/// The argument of a command line, "" if none.
pub(crate) fn arg(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, a)| a)
}

type Script = dyn Fn(&mut Ctl, &str) -> Then + Send + Sync;

/// A scripted FTP server on 127.0.0.1; stopped when dropped.
pub(crate) struct Fake {
    pub(crate) addr: SocketAddr,
    /// Every command line received, on any connection, in arrival order.
    log: Arc<Mutex<Vec<String>>>,
    /// The same lines byte for byte, terminator included.
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Control connections accepted, and ended.
    conns: Arc<(AtomicUsize, AtomicUsize)>,
    stop: Arc<AtomicBool>,
}

/// Starts a fake backend: greets with 220, then hands every command line
/// (without CRLF) to `script`.
pub(crate) fn fake(script: impl Fn(&mut Ctl, &str) -> Then + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").expect("fake: bind");
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let raw = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let script: Arc<Script> = Arc::new(script);
    let (log2, raw2, conns2, stop2) = (
        Arc::clone(&log),
        Arc::clone(&raw),
        Arc::clone(&conns),
        Arc::clone(&stop),
    );
    thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                return;
            }
            let Ok(stream) = conn else { continue };
            conns2.0.fetch_add(1, Ordering::SeqCst);
            let (script, log, raw, conns) = (
                Arc::clone(&script),
                Arc::clone(&log2),
                Arc::clone(&raw2),
                Arc::clone(&conns2),
            );
            thread::spawn(move || {
                serve_fake(stream, &*script, &log, &raw);
                conns.1.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Fake {
        addr,
        log,
        raw,
        conns,
        stop,
    }
}

fn serve_fake(
    stream: TcpStream,
    script: &Script,
    log: &Mutex<Vec<String>>,
    raw_log: &Mutex<Vec<Vec<u8>>>,
) {
    // A forgotten connection ends on its own eventually.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("fake: clone"));
    let mut ctl = Ctl {
        stream,
        user: String::new(),
        data: None,
    };
    ctl.reply("220 fake FTP server ready.");
    loop {
        let mut raw = Vec::new();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        raw_log.lock().unwrap().push(raw.clone());
        log.lock().unwrap().push(line.clone());
        match script(&mut ctl, &line) {
            Then::Go => {}
            Then::Close => {
                let _ = ctl.stream.shutdown(Shutdown::Both);
                return;
            }
            Then::Hang => {
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// A fake that answers everything the standard way.
fn standard_fake() -> Fake {
    fake(|c, l| c.standard(l))
}

impl Fake {
    /// The command lines received so far.
    pub(crate) fn commands(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The command lines received so far, byte for byte with their
    /// terminators.
    pub(crate) fn raw_commands(&self) -> Vec<Vec<u8>> {
        self.raw.lock().unwrap().clone()
    }

    /// Control connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.conns.0.load(Ordering::SeqCst)
    }

    /// Waits (at most `within`) until every accepted control connection
    /// has ended; true if they did.
    pub(crate) fn wait_all_closed(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.conns.1.load(Ordering::SeqCst) >= self.conns.0.load(Ordering::SeqCst) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

// === raw FTP client ===

/// One reply as the client read it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    /// Every line, CRLF removed, joined by "\n".
    pub(crate) text: String,
}

/// A client speaking FTP by hand over a plain TCP stream.
pub(crate) struct Client {
    reader: BufReader<TcpStream>,
}

/// A TCP connection to `to` from `from_ip` (port chosen by the kernel).
pub(crate) fn tcp_from(from_ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from_ip, 0)).into())
        .unwrap_or_else(|e| panic!("bind {from_ip}: {e}"));
    s.connect_timeout(&to.into(), READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {to} from {from_ip}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

impl Client {
    /// Connects from 127.0.0.1 without reading the greeting.
    pub(crate) fn connect_raw(addr: SocketAddr) -> Client {
        Client::connect_raw_from(Ipv4Addr::LOCALHOST, addr)
    }

    pub(crate) fn connect_raw_from(ip: Ipv4Addr, addr: SocketAddr) -> Client {
        let s = tcp_from(ip, addr);
        s.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(s),
        }
    }

    /// Connects and expects the 220 greeting.
    pub(crate) fn connect(addr: SocketAddr) -> Client {
        Client::connect_from(Ipv4Addr::LOCALHOST, addr)
    }

    pub(crate) fn connect_from(ip: Ipv4Addr, addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw_from(ip, addr);
        c.expect(220);
        c
    }

    pub(crate) fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Writes raw bytes.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream()
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("client write: {e}"));
    }

    /// Writes one command line with CRLF.
    pub(crate) fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// Reads one complete reply (RFC 959 4.2 multi-line form included).
    #[track_caller]
    pub(crate) fn reply(&mut self) -> Reply {
        let first = self.line();
        let code: u16 = first
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a reply line: {first:?}"));
        let mut text = first.clone();
        if first.as_bytes().get(3) == Some(&b'-') {
            let end = format!("{code} ");
            loop {
                let l = self.line();
                text.push('\n');
                text.push_str(&l);
                if l.starts_with(&end) || l == end.trim_end() {
                    break;
                }
            }
        }
        Reply { code, text }
    }

    #[track_caller]
    pub(crate) fn line(&mut self) -> String {
        let mut raw = Vec::new();
        match self.reader.read_until(b'\n', &mut raw) {
            Ok(0) => panic!("connection closed while waiting for a reply"),
            Ok(_) if raw.ends_with(b"\n") => {}
            Ok(_) => panic!("connection closed inside a reply line: {raw:?}"),
            Err(e) => panic!(
                "no reply within {READ_TIMEOUT:?} ({e}); partial: {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
        String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    }

    /// Sends `line` and returns its reply, whatever the code.
    pub(crate) fn reply_to(&mut self, line: &str) -> Reply {
        self.send(line);
        self.reply()
    }

    /// Reads a reply and asserts its code.
    #[track_caller]
    pub(crate) fn expect(&mut self, code: u16) -> Reply {
        let r = self.reply();
        assert_eq!(r.code, code, "expected {code}, got {:?}", r.text);
        r
    }

    /// Sends `line` and asserts the reply code.
    #[track_caller]
    pub(crate) fn cmd(&mut self, line: &str, code: u16) -> Reply {
        self.send(line);
        self.expect(code)
    }

    /// USER and PASS with the fake backend's standard answers.
    pub(crate) fn login(&mut self, user: &str) {
        self.cmd(&format!("USER {user}"), 331);
        self.cmd("PASS secret", 230);
    }

    /// Waits for the next byte or the end of the connection: true at the
    /// end (a close or a reset), false when a byte is waiting.
    #[track_caller]
    pub(crate) fn at_end(&mut self, wait: Duration) -> bool {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let r = match self.reader.fill_buf() {
            Ok(b) => Ok(b.is_empty()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e),
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        r.unwrap_or_else(|e| panic!("neither a reply nor the end within {wait:?}: {e}"))
    }

    /// Asserts the server closes the connection (no more bytes) in time.
    #[track_caller]
    pub(crate) fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected close, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "connection not closed within {READ_TIMEOUT:?} ({e}); got {:?}",
                String::from_utf8_lossy(&rest)
            ),
        }
    }

    /// Sends PASV, checks the 227 names 127.0.0.1 and a port of the
    /// gateway's range, and returns the port.
    #[track_caller]
    pub(crate) fn pasv(&mut self, gw: &Gateway) -> u16 {
        let r = self.cmd("PASV", 227);
        let (ip, port) = parse_227(&r.text);
        assert_eq!(ip, Ipv4Addr::LOCALHOST, "227 address: {}", r.text);
        assert!(
            gw.owns_passive_port(port),
            "227 port {port} outside {:?}",
            gw.passive_ports
        );
        port
    }
}

/// The address and port of a 227 reply text.
#[track_caller]
pub(crate) fn parse_227(text: &str) -> (Ipv4Addr, u16) {
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
                .unwrap_or_else(|_| panic!("bad 227: {text:?}"))
        })
        .collect();
    assert_eq!(n.len(), 6, "bad 227: {text:?}");
    (
        Ipv4Addr::new(n[0], n[1], n[2], n[3]),
        u16::from(n[4]) << 8 | u16::from(n[5]),
    )
}

/// Connects a data connection to the gateway's passive `port` from `ip`.
pub(crate) fn data_from(ip: Ipv4Addr, gw: &Gateway, port: u16) -> TcpStream {
    tcp_from(ip, SocketAddr::new(gw.addr.ip(), port))
}

/// Reads a data connection to its end.
#[track_caller]
pub(crate) fn read_data(mut s: TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v)
        .unwrap_or_else(|e| panic!("data read failed after {} bytes: {e}", v.len()));
    v
}

/// Asserts a data connection yields nothing and ends (closed or reset).
#[track_caller]
fn assert_refused(mut s: TcpStream, what: &str) {
    let mut v = Vec::new();
    match s.read_to_end(&mut v) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: connection neither closed nor reset ({e})"),
    }
    assert!(v.is_empty(), "{what}: got {} bytes of data", v.len());
}

/// PASV through the gateway, RETR, and check the fake's file arrives with 226.
#[track_caller]
fn retr_fake_file(c: &mut Client, gw: &Gateway, from: Ipv4Addr) {
    let port = c.pasv(gw);
    let d = data_from(from, gw, port);
    c.cmd("RETR file", 150);
    let got = read_data(d);
    assert!(got == fake_file(), "file differs: {} bytes", got.len());
    c.expect(226);
}

// === scenarios: the backend's passive replies ===

#[test]
fn hostile_malformed_227_gets_425_and_session_continues() {
    let be = fake(|c, l| match verb(l).as_str() {
        "PASV" => {
            c.reply("227 Entering Passive Mode (1,2,3)");
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.cmd("PASV", 425);
    c.cmd("NOOP", 200);
    c.cmd("PASV", 425);
    c.cmd("SYST", 215);
}

#[test]
fn hostile_multiline_227_works() {
    let be = fake(|c, l| match verb(l).as_str() {
        "PASV" => {
            let p = c.listen_data();
            c.reply(&format!(
                "227-Entering Passive Mode\r\n227 (127,0,0,1,{},{})",
                p >> 8,
                p & 0xff
            ));
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let r = c.cmd("PASV", 227);
    assert!(
        !r.text.contains('\n'),
        "ftpgate's own 227 is one line: {:?}",
        r.text
    );
    let (ip, port) = parse_227(&r.text);
    assert_eq!(ip, Ipv4Addr::LOCALHOST);
    assert!(gw.owns_passive_port(port));
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.cmd("RETR file", 150);
    assert!(read_data(d) == fake_file());
    c.expect(226);
    c.cmd("NOOP", 200);
}

#[test]
fn hostile_pasv_500_falls_back_to_epsv() {
    let be = fake(|c, l| match verb(l).as_str() {
        "PASV" => {
            c.reply("500 Unknown command.");
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    retr_fake_file(&mut c, &gw, Ipv4Addr::LOCALHOST);
    // The second transfer goes straight to EPSV: the refusal is remembered.
    retr_fake_file(&mut c, &gw, Ipv4Addr::LOCALHOST);
    let setup: Vec<String> = be
        .commands()
        .into_iter()
        .filter(|l| l == "PASV" || l == "EPSV")
        .collect();
    assert_eq!(
        setup,
        ["PASV", "EPSV", "EPSV"],
        "backend saw {:?}",
        be.commands()
    );
}

#[test]
fn hostile_both_passive_commands_refused_gets_425() {
    let be = fake(|c, l| match verb(l).as_str() {
        "PASV" | "EPSV" => {
            c.reply("502 Not implemented.");
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.cmd("PASV", 425);
    c.cmd("EPSV", 425);
    c.cmd("NOOP", 200);
}

// === scenarios: the backend fails ===

#[test]
fn hostile_hanging_backend_gets_421_and_others_unaffected() {
    // Connections that logged in as "hang" never answer PASV.
    let be = fake(|c, l| {
        if verb(l) == "PASV" && c.user == "hang" {
            return Then::Hang;
        }
        c.standard(l)
    });
    let gw = gateway::start(&[be.addr], "backend_reply_timeout = \"2s\"");
    let mut ok = Client::connect(gw.addr);
    ok.login("ok");
    let mut hung = Client::connect(gw.addr);
    hung.login("hang");
    let t0 = Instant::now();
    hung.send("PASV");
    // Meanwhile the healthy session is served promptly, transfer included.
    for _ in 0..3 {
        let t = Instant::now();
        ok.cmd("NOOP", 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "NOOP took {:?}",
            t.elapsed()
        );
    }
    retr_fake_file(&mut ok, &gw, Ipv4Addr::LOCALHOST);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "healthy session was slowed down"
    );
    hung.expect(421);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "421 after {waited:?}, want about backend_reply_timeout = 2s"
    );
    hung.expect_closed();
    ok.cmd("NOOP", 200);
    retr_fake_file(&mut ok, &gw, Ipv4Addr::LOCALHOST);
}

#[test]
fn hostile_backend_closes_control_mid_session_gets_421() {
    let be = fake(|c, l| match verb(l).as_str() {
        "SYST" => Then::Close,
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.cmd("NOOP", 200);
    c.cmd("SYST", 421);
    c.expect_closed();
}

#[test]
fn hostile_backend_closes_during_ftpgates_own_pasv_gets_421() {
    let be = fake(|c, l| match verb(l).as_str() {
        "PASV" => Then::Close,
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.cmd("PASV", 421);
    c.expect_closed();
}

#[test]
fn hostile_unreachable_backend_gets_421_on_connect() {
    let closed = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let gw = gateway::start(&[closed], "backend_connect_timeout = \"1s\"");
    let mut c = Client::connect_raw(gw.addr);
    c.expect(421);
    c.expect_closed();
}

#[test]
fn hostile_unreachable_backend_falls_over_to_the_next() {
    let closed = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let be = standard_fake();
    let gw = gateway::start(&[closed, be.addr], "backend_connect_timeout = \"1s\"");
    // Rotation starts at a different backend each time: both orders happen.
    for _ in 0..2 {
        let mut c = Client::connect(gw.addr);
        c.login("u");
        c.cmd("NOOP", 200);
    }
}

// === scenarios: data connections ===

#[test]
fn hostile_data_connection_from_another_address_is_refused() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "hostile_data_connection_from_another_address_is_refused",
    ) {
        return;
    }
    let body = file_bytes(300_000, 7);
    let srv = FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "f.bin", &body);
    });
    let gw = gateway::start(&[srv.addr], "");
    let mut c = Client::connect(gw.addr);
    c.cmd(&format!("USER {}", srv.user), 331);
    c.cmd(&format!("PASS {}", srv.pass), 230);
    c.cmd("TYPE I", 200);
    let port = c.pasv(&gw);
    let intruder = Ipv4Addr::new(127, 0, 0, 2);
    // Before the transfer command ...
    assert_refused(data_from(intruder, &gw, port), "intruder before RETR");
    c.cmd("RETR f.bin", 150);
    // ... and while the transfer waits for the client.
    assert_refused(data_from(intruder, &gw, port), "intruder after RETR");
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    let got = read_data(d);
    assert!(
        got == body,
        "file differs: {} of {} bytes",
        got.len(),
        body.len()
    );
    c.expect(226);
    c.cmd("NOOP", 200);
}

#[test]
fn hostile_active_mode_refusals() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    for (line, code) in [
        ("PORT 8,8,8,8,4,1", 504), // a third party (FTP bounce)
        ("EPRT |1|8.8.8.8|1025|", 504),
        ("EPRT |2|2001:db8::1|1025|", 504),
        ("PORT 127,0,0,1,0,21", 504), // own address, port < 1024
        ("EPRT |1|127.0.0.1|1023|", 504),
        ("PORT 1,2,3", 501), // malformed
        ("PORT 127,0,0,1,4,300", 501),
        ("PORT", 501),
        ("EPRT |1|127.0.0.1|", 501),
        ("EPRT garbage", 501),
        ("EPRT |3|127.0.0.1|1025|", 522), // unknown network protocol
    ] {
        let r = c.reply_to(line);
        assert_eq!(r.code, code, "{line} -> {:?}", r.text);
        c.cmd("NOOP", 200);
    }
    let refused: Vec<String> = be
        .commands()
        .into_iter()
        .filter(|l| ["PORT", "EPRT", "PASV", "EPSV"].contains(&verb(l).as_str()))
        .collect();
    assert!(
        refused.is_empty(),
        "refused commands reached the backend: {refused:?}"
    );
}

#[test]
fn hostile_port_to_another_loopback_without_nat_fix_is_504() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "active_nat_fix = false");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.cmd("PORT 127,0,0,2,4,1", 504);
    c.cmd("EPRT |1|127.0.0.2|1025|", 504);
    c.cmd("NOOP", 200);
}

/// vsftpd logged in through a gateway started with `extra`, file `f.bin`.
fn vsftpd_session(body: &[u8], extra: &str) -> (FtpServer, Gateway, Client) {
    let srv = FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "f.bin", body);
    });
    let gw = gateway::start(&[srv.addr], extra);
    let mut c = Client::connect(gw.addr);
    c.cmd(&format!("USER {}", srv.user), 331);
    c.cmd(&format!("PASS {}", srv.pass), 230);
    c.cmd("TYPE I", 200);
    (srv, gw, c)
}

/// Sends `line` and reads replies up to the final one; returns all texts.
fn final_reply(c: &mut Client, line: &str) -> (u16, Vec<String>) {
    c.send(line);
    let mut seen = Vec::new();
    loop {
        let r = c.reply();
        seen.push(r.text);
        if r.code >= 200 {
            return (r.code, seen);
        }
    }
}

#[test]
fn hostile_pending_data_route_expires() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "hostile_pending_data_route_expires") {
        return;
    }
    let (_srv, gw, mut c) = vsftpd_session(&file_bytes(50_000, 3), "pending_data_timeout = \"1s\"");
    let port = c.pasv(&gw);
    thread::sleep(Duration::from_secs(2));
    assert_refused(
        data_from(Ipv4Addr::LOCALHOST, &gw, port),
        "connection after expiry",
    );
    c.cmd("NOOP", 200);
    // A fresh PASV works again.
    let port = c.pasv(&gw);
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.cmd("RETR f.bin", 150);
    assert_eq!(read_data(d).len(), 50_000);
    c.expect(226);
}

#[test]
fn hostile_transfer_after_expired_route_is_not_226() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "hostile_transfer_after_expired_route_is_not_226",
    ) {
        return;
    }
    let (_srv, gw, mut c) = vsftpd_session(&file_bytes(50_000, 3), "pending_data_timeout = \"1s\"");
    let port = c.pasv(&gw);
    thread::sleep(Duration::from_secs(2));
    // The client connects late (refused) and then asks for the file.
    assert_refused(
        data_from(Ipv4Addr::LOCALHOST, &gw, port),
        "connection after expiry",
    );
    let (code, seen) = final_reply(&mut c, "RETR f.bin");
    assert!(
        !(200..300).contains(&code),
        "RETR after expiry succeeded: {seen:?}"
    );
    c.cmd("NOOP", 200);
}

#[test]
fn hostile_client_late_after_retr_gets_425() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "hostile_client_late_after_retr_gets_425",
    ) {
        return;
    }
    let (_srv, gw, mut c) = vsftpd_session(&file_bytes(50_000, 4), "pending_data_timeout = \"1s\"");
    let port = c.pasv(&gw);
    c.cmd("RETR f.bin", 150);
    thread::sleep(Duration::from_secs(2));
    assert_refused(
        data_from(Ipv4Addr::LOCALHOST, &gw, port),
        "connection after expiry",
    );
    // The backend may well have said 226 into ftpgate's leg: the client must not see it.
    c.expect(425);
    c.cmd("NOOP", 200);
}

#[test]
fn hostile_passive_range_exhausted_per_client_address() {
    let be = standard_fake();
    let p = peers::free_port();
    let gw = gateway::start(&[be.addr], &format!("passive_ports = \"{p}-{p}\""));
    let mut a = Client::connect(gw.addr);
    a.login("a");
    assert_eq!(a.pasv(&gw), p);
    let mut b = Client::connect(gw.addr);
    b.login("b");
    b.cmd("PASV", 425);
    b.cmd("NOOP", 200);
    // Another client address may lease the same port at the same time.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let mut c = Client::connect_from(other, gw.addr);
    c.login("c");
    let port = c.pasv(&gw);
    assert_eq!(port, p);
    let d = data_from(other, &gw, port);
    c.cmd("RETR file", 150);
    assert!(read_data(d) == fake_file());
    c.expect(226);
    // And the first client's lease still routes to the first client.
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, p);
    a.cmd("RETR file", 150);
    assert!(read_data(d) == fake_file());
    a.expect(226);
    // Its lease is returned: now the second client gets the port.
    assert_eq!(b.pasv(&gw), p);
}

// === scenarios: timeouts ===

#[test]
fn hostile_login_timeout_gets_421() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "login_timeout = \"1s\"");
    let t0 = Instant::now();
    let mut c = Client::connect(gw.addr);
    // Activity before login does not extend the login deadline. (The NOOP
    // goes 300 ms in: its 200 must come before the 1 s deadline, and a
    // loaded machine may delay connect, USER and NOOP.)
    c.cmd("USER u", 331);
    thread::sleep(Duration::from_millis(300));
    c.cmd("NOOP", 200);
    c.expect(421);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "421 after {waited:?}"
    );
    c.expect_closed();
}

#[test]
fn hostile_idle_timeout_gets_421() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "idle_timeout = \"1s\"");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    // Commands keep the session alive for 1.5 s, past the 1 s timeout, each
    // sent 250 ms after the last reply (well inside the timeout even when a
    // loaded machine delays a round trip) ...
    let mut last_sent = Instant::now();
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(250));
        last_sent = Instant::now();
        c.cmd("NOOP", 200);
    }
    // ... silence does not. Measured from before the last NOOP was sent,
    // as ftpgate's idle clock restarts when it reads it; measured from the
    // reply, a test thread delayed by 200 ms would see the 421 too early.
    c.expect(421);
    let waited = last_sent.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "421 after {waited:?}"
    );
    c.expect_closed();
}

// === scenarios: what the client sends ===

#[test]
fn hostile_line_too_long_default_limit() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let exactly = format!("NOOP {}", "x".repeat(4096 - 5));
    c.cmd(&exactly, 200);
    let over = format!("NOOP {}", "x".repeat(4096 - 4));
    let r = c.cmd(&over, 500);
    assert_eq!(r.text, "500 Command line too long.");
    c.cmd("NOOP", 200);
    assert!(
        !be.commands().iter().any(|l| l.len() > 4096),
        "an overlong line reached the backend"
    );
}

#[test]
fn hostile_line_too_long_configured_limit() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "max_line_length = 1024");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.cmd(&format!("NOOP {}", "y".repeat(1024 - 5)), 200);
    let r = c.cmd(&format!("NOOP {}", "y".repeat(1024 - 4)), 500);
    assert_eq!(r.text, "500 Command line too long.");
    c.cmd("SYST", 215);
}

#[test]
fn hostile_huge_line_in_pieces_is_discarded() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..16 {
        c.send_raw(&chunk);
    }
    c.send_raw(b"\r\nNOOP\r\n");
    let r = c.expect(500);
    assert_eq!(r.text, "500 Command line too long.");
    // Exactly one 500 for the whole line: the next reply is NOOP's.
    c.expect(200);
    c.cmd("SYST", 215);
}

#[test]
fn hostile_line_endings_and_pipelining() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    // Bare LF, several commands in one write.
    c.send_raw(b"USER u\nPASS p\nNOOP\n");
    c.expect(331);
    c.expect(230);
    c.expect(200);
    // Several CRLF commands in one write, answered in order.
    c.send_raw(b"NOOP\r\nSYST\r\nPWD\r\nTYPE I\r\n");
    for code in [200, 215, 257, 200] {
        c.expect(code);
    }
    // One command byte by byte.
    for b in b"SYST\r\n" {
        c.send_raw(&[*b]);
        thread::sleep(Duration::from_millis(20));
    }
    c.expect(215);
    // A mix, split in the middle of a line and of a CRLF.
    c.send_raw(b"NOOP\r\nSY");
    thread::sleep(Duration::from_millis(50));
    c.send_raw(b"ST\r");
    thread::sleep(Duration::from_millis(50));
    c.send_raw(b"\nPWD\n");
    for code in [200, 215, 257] {
        c.expect(code);
    }
    let cmds = be.commands();
    assert!(
        cmds.iter().all(|l| !l.contains('\r')),
        "a CR reached the backend inside a line: {cmds:?}"
    );
    assert_eq!(cmds.iter().filter(|l| *l == "SYST").count(), 3, "{cmds:?}");
}

#[test]
fn hostile_telnet_iac_around_abor() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.send_raw(b"\xff\xf4\xff\xf2ABOR\r\n");
    c.expect(225);
    c.cmd("NOOP", 200);
    let cmds = be.commands();
    assert!(cmds.iter().any(|l| l == "ABOR"), "backend saw {cmds:?}");
    assert!(
        !cmds.iter().any(|l| l.contains('\u{fffd}')),
        "Telnet bytes reached the backend: {cmds:?}"
    );
}

// === more scenarios: odd but legal, and odd and not ===

#[test]
fn hostile_227_naming_a_closed_port_gets_425() {
    let be = fake(|c, l| match verb(l).as_str() {
        "PASV" => {
            let p = peers::free_port();
            c.reply(&format!(
                "227 Entering Passive Mode (127,0,0,1,{},{}).",
                p >> 8,
                p & 0xff
            ));
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "data_connect_timeout = \"1s\"");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    // The client has its 227 while ftpgate connects to the backend's data
    // port: the transfer command waits for that connect and, when it
    // fails, gets ftpgate's own 425 (the backend never sees it).
    c.cmd("PASV", 227);
    let r = c.cmd("RETR f", 425);
    assert_eq!(
        r.text, "425 Can't open data connection.",
        "ftpgate's own 425"
    );
    c.cmd("NOOP", 200);
    c.cmd("PASV", 227);
    c.cmd("NOOP", 200);
}

#[test]
fn hostile_227_naming_a_foreign_address_uses_the_control_address() {
    // A backend behind NAT names an address nobody can reach.
    let be = fake(|c, l| match verb(l).as_str() {
        "PASV" => {
            let p = c.listen_data();
            c.reply(&format!(
                "227 Entering Passive Mode (10,9,8,7,{},{}).",
                p >> 8,
                p & 0xff
            ));
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    retr_fake_file(&mut c, &gw, Ipv4Addr::LOCALHOST);
}

#[test]
fn hostile_pipelined_data_setup_keeps_reply_order() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.send_raw(b"NOOP\r\nPASV\r\nSYST\r\n");
    c.expect(200);
    let (_, port) = parse_227(&c.expect(227).text);
    assert!(gw.owns_passive_port(port));
    c.expect(215);
    // PASV and RETR in one write, the data connection made afterwards.
    c.send_raw(b"PASV\r\nRETR file\r\n");
    let (_, port) = parse_227(&c.expect(227).text);
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.expect(150);
    assert!(read_data(d) == fake_file());
    c.expect(226);
    c.cmd("NOOP", 200);
}

#[test]
fn hostile_second_pasv_replaces_the_first() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let first = c.pasv(&gw);
    let second = c.pasv(&gw);
    if first != second {
        assert_refused(
            data_from(Ipv4Addr::LOCALHOST, &gw, first),
            "the replaced port",
        );
    }
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, second);
    c.cmd("RETR file", 150);
    assert!(read_data(d) == fake_file());
    c.expect(226);
    // One client connection per PASV: a second one on the same port gets nothing.
    let port = c.pasv(&gw);
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    let extra = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.cmd("RETR file", 150);
    assert!(read_data(d) == fake_file());
    c.expect(226);
    assert_refused(extra, "a second connection to a claimed port");
}

#[test]
fn hostile_epsv_all_and_long_forms() {
    let be = standard_fake();
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.cmd("LPSV", 502);
    c.cmd("LPRT 4,4,127,0,0,1,2,4,1", 502);
    c.cmd("EPSV x", 501);
    c.cmd("EPSV ALL", 200);
    c.cmd("PASV", 503);
    c.cmd("PORT 127,0,0,1,4,1", 503);
    c.cmd("EPRT |1|127.0.0.1|1025|", 503);
    let r = c.cmd("EPSV", 229);
    let port: u16 = r
        .text
        .split("|||")
        .nth(1)
        .and_then(|s| s.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad 229: {:?}", r.text));
    assert!(gw.owns_passive_port(port));
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.cmd("RETR file", 150);
    assert!(read_data(d) == fake_file());
    c.expect(226);
}

#[test]
fn hostile_backend_refuses_at_greeting() {
    // vsftpd at max_clients: a 421 greeting, then close.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"421 There are too many connected users, please try later.\r\n");
            let _ = s.shutdown(Shutdown::Both);
        }
    });
    let gw = gateway::start(&[addr], "");
    let mut c = Client::connect_raw(gw.addr);
    let r = c.expect(421);
    assert!(
        r.text.contains("too many"),
        "the backend's own 421 first: {:?}",
        r.text
    );
    // ftpgate may add its own 421; then the connection closes.
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.lines().all(|l| l.starts_with("421")),
        "after the 421: {rest:?}"
    );
    println!("after the backend's 421 the client also got: {rest:?}");
}

#[test]
fn hostile_overlong_backend_reply_line_still_answers() {
    let be = fake(|c, l| match verb(l).as_str() {
        "SYST" => {
            c.reply(&format!("215 {}", "x".repeat(20_000)));
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.send("SYST");
    let r = c.reply();
    assert!(
        r.code == 215 || r.code == 421,
        "SYST got {:?}",
        &r.text[..r.text.len().min(80)]
    );
}
