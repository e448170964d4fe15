//! Never a 2xx for a cut transfer, never a reply nobody asked for.
//!
//! Every way a transfer can end, with real vsftpd wherever a real server can
//! produce the situation (its session processes killed while a slow client
//! is still reading, a client that resets or stalls its data connection,
//! ABOR, reload, drain) and a scripted fake backend where it cannot (a data
//! connection reset followed by a lying 226, replies sent unasked, bytes
//! after a 234). The rule each test checks: a client that reads a 2xx has
//! every byte, in order; otherwise it reads a 4xx and its data connection
//! ends with a reset, not a clean close. docs/testing.md has the table.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::gateway::{self, Gateway};
use crate::hostile::{data_from, fake, file_bytes, parse_227, verb, Client, Then};
use crate::peers::{self, FtpServer, ServerKind};

const MIB: usize = 1024 * 1024;

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// vsftpd serving `big.bin` (`len` bytes), ftpgate in front, and a raw
/// client logged in with TYPE I. `None` when vsftpd is missing (and peers
/// are not required).
fn setup(test: &str, len: usize, extra: &str) -> Option<(FtpServer, Gateway, Client, Vec<u8>)> {
    setup_on(ServerKind::Vsftpd, test, len, extra)
}

/// As [`setup`], with `kind` as the backend.
fn setup_on(
    kind: ServerKind,
    test: &str,
    len: usize,
    extra: &str,
) -> Option<(FtpServer, Gateway, Client, Vec<u8>)> {
    if !peers::available_or_skip(kind, test) {
        return None;
    }
    let data = file_bytes(len, len as u64 ^ 0x5eed);
    let body = data.clone();
    let srv = FtpServer::start_with(kind, move |root| {
        peers::put_file(root, "big.bin", &body);
    });
    let gw = gateway::start(&[srv.addr], extra);
    let mut c = Client::connect(gw.addr);
    c.cmd(&format!("USER {}", srv.user), 331);
    c.cmd(&format!("PASS {}", srv.pass), 230);
    c.cmd("TYPE I", 200);
    Some((srv, gw, c, data))
}

/// How the client gets its data connection.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Passive,
    Active,
}

/// Sets up a data connection in `mode` and sends RETR big.bin, expecting
/// 150; returns the client's data socket.
fn start_retr(c: &mut Client, gw: &Gateway, mode: Mode) -> TcpStream {
    let d = match mode {
        Mode::Passive => {
            let r = c.cmd("PASV", 227);
            let (_, port) = parse_227(&r.text);
            let d = data_from(Ipv4Addr::LOCALHOST, gw, port);
            c.cmd("RETR big.bin", 150);
            d
        }
        Mode::Active => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let p = l.local_addr().unwrap().port();
            c.cmd(&format!("PORT 127,0,0,1,{},{}", p >> 8, p & 0xff), 200);
            c.cmd("RETR big.bin", 150);
            l.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("ftpgate never connected to the active-mode client: {e}"),
                }
            }
        }
    };
    d.set_nonblocking(false).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    d
}

/// How a data connection ended, as the client reads it.
#[derive(Debug, PartialEq, Eq)]
enum DataEnd {
    /// FIN: a clean end of stream.
    Clean,
    /// A TCP reset.
    Reset,
}

/// A client reading its data connection slowly, in a thread: `chunk`
/// bytes, then a pause of `pause`, while `hold` is set it reads nothing.
struct SlowReader {
    read: Arc<AtomicU64>,
    hold: Arc<AtomicBool>,
    done: thread::JoinHandle<(Vec<u8>, DataEnd)>,
}

impl SlowReader {
    fn start(mut d: TcpStream, chunk: usize, pause: Duration, hold_after: Option<u64>) -> Self {
        let read = Arc::new(AtomicU64::new(0));
        let hold = Arc::new(AtomicBool::new(false));
        let (r2, h2) = (Arc::clone(&read), Arc::clone(&hold));
        let done = thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; chunk];
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut held_once = false;
            loop {
                assert!(
                    Instant::now() < deadline,
                    "slow reader ran over two minutes"
                );
                if !held_once && hold_after.is_some_and(|n| got.len() as u64 >= n) {
                    held_once = true;
                    h2.store(true, Ordering::SeqCst);
                }
                if h2.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                match d.read(&mut buf) {
                    Ok(0) => return (got, DataEnd::Clean),
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        r2.store(got.len() as u64, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                        return (got, DataEnd::Reset)
                    }
                    Err(e) => panic!("data read failed after {} bytes: {e}", got.len()),
                }
                thread::sleep(pause);
            }
        });
        SlowReader { read, hold, done }
    }

    fn read(&self) -> u64 {
        self.read.load(Ordering::SeqCst)
    }

    /// Waits until the reader holds (it read `hold_after` bytes).
    fn wait_held(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.hold.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "reader never reached its hold point"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn resume(&self) {
        self.hold.store(false, Ordering::SeqCst);
    }

    fn finish(self) -> (Vec<u8>, DataEnd) {
        self.resume();
        self.done.join().expect("slow reader panicked")
    }
}

/// Waits until vsftpd has logged the transfer complete (`OK DOWNLOAD` or
/// `OK UPLOAD`), then a moment more: it logs just before its 226.
fn wait_logged(srv: &FtpServer, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !srv.log().contains(what) {
        assert!(
            Instant::now() < deadline,
            "vsftpd never logged {what}: {}",
            srv.log()
        );
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(50));
}

/// Reads replies until the connection closes; returns their codes.
fn replies_until_close(c: &mut Client) -> Vec<u16> {
    let mut codes = Vec::new();
    while !c.at_end(Duration::from_secs(20)) {
        codes.push(c.reply().code);
    }
    codes
}

/// The backend writes the whole file and its 226, then dies, while a slow
/// client is still reading what ftpgate holds: every byte reaches the
/// client, its data connection ends cleanly, then 226, then 421.
fn backend_dies_after_226(mode: Mode, test: &str) {
    let Some((srv, gw, mut c, data)) = setup(test, 32 * MIB, "") else {
        return;
    };
    let d = start_retr(&mut c, &gw, mode);
    // About 12 MB/s: far slower than vsftpd, so it finishes first.
    let reader = SlowReader::start(d, 64 * 1024, Duration::from_millis(5), None);
    wait_logged(&srv, "OK DOWNLOAD");
    let killed = srv.kill_sessions();
    let read_at_kill = reader.read();
    assert!(killed > 0, "no vsftpd session process to kill");
    assert!(
        read_at_kill < data.len() as u64,
        "the client had everything before the backend died: the test proved nothing"
    );
    let (got, end) = reader.finish();
    assert_eq!(
        got.len(),
        data.len(),
        "{mode:?}: the client got {} of {} bytes (it had {read_at_kill} when the backend died)",
        got.len(),
        data.len()
    );
    assert!(sha(&got) == sha(&data), "{mode:?}: bytes differ");
    assert_eq!(
        end,
        DataEnd::Clean,
        "{mode:?}: a complete download ends with FIN"
    );
    assert_eq!(replies_until_close(&mut c), vec![226, 421], "{mode:?}");
    drop(gw);
}

#[test]
fn cut_backend_dies_after_226_slow_client_gets_every_byte_passive() {
    backend_dies_after_226(Mode::Passive, "cut_backend_dies_after_226_passive");
}

#[test]
fn cut_backend_dies_after_226_slow_client_gets_every_byte_active() {
    backend_dies_after_226(Mode::Active, "cut_backend_dies_after_226_active");
}

/// The backend dies in the middle of a download (no 226): the client gets
/// what the backend sent, then a 4xx, never a 2xx.
#[test]
fn cut_backend_dies_mid_download_never_2xx() {
    let Some((srv, gw, mut c, data)) = setup("cut_backend_dies_mid_download", 64 * MIB, "") else {
        return;
    };
    let d = start_retr(&mut c, &gw, Mode::Passive);
    let reader = SlowReader::start(d, 64 * 1024, Duration::ZERO, Some(MIB as u64));
    reader.wait_held();
    // vsftpd is blocked on a full pipe: 63 MiB cannot be in flight.
    assert!(srv.kill_sessions() > 0);
    thread::sleep(Duration::from_millis(200));
    let (got, _end) = reader.finish();
    assert!(
        got.len() < data.len(),
        "the backend died before sending it all"
    );
    assert!(
        got[..] == data[..got.len()],
        "the bytes that came are in order"
    );
    let codes = replies_until_close(&mut c);
    assert!(
        !codes.is_empty() && codes.iter().all(|&c| (400..500).contains(&c)),
        "after a cut download the client must read 4xx only, got {codes:?}"
    );
}

/// The client resets its data connection mid-download: it is told 426,
/// never 226, and the session goes on with every later reply answering
/// its own command. pure-ftpd answers the failed data write with a final
/// reply coded 150 (`150 0.001 seconds (measured here), ...`): passed on
/// as a preliminary, it left the client waiting and the next NOOP read
/// the RETR's 426. Three rounds per server, since the server's reply
/// depends on how far its writes got.
fn client_resets_data_connection(kind: ServerKind, test: &str) {
    let Some((_srv, gw, mut c, _data)) = setup_on(kind, test, 64 * MIB, "") else {
        return;
    };
    for round in 0..3 {
        let d = start_retr(&mut c, &gw, Mode::Passive);
        let mut buf = vec![0u8; MIB];
        let mut d2 = d.try_clone().unwrap();
        d2.read_exact(&mut buf).unwrap();
        socket2::SockRef::from(&d)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop((d, d2));
        let r = c.reply();
        assert_eq!(
            r.code, 426,
            "{test} round {round}: a reset download: {:?}",
            r.text
        );
        let noop = c.cmd("NOOP", 200);
        assert_eq!(noop.code, 200, "{test} round {round}: {:?}", noop.text);
    }
    let m = gw.metrics();
    if kind == ServerKind::PureFtpd {
        assert!(
            m.contains("ftpgate_backend_replies_dropped_total{reason=\"preliminary_as_final\"}"),
            "pure-ftpd's 150-coded final reply must be counted: {m}"
        );
    }
}

#[test]
fn cut_client_resets_data_connection_gets_426() {
    client_resets_data_connection(ServerKind::Vsftpd, "cut_client_resets_data");
}

#[test]
fn cut_client_resets_data_connection_gets_426_proftpd() {
    client_resets_data_connection(ServerKind::Proftpd, "cut_client_resets_data_proftpd");
}

#[test]
fn cut_client_resets_data_connection_gets_426_pureftpd() {
    client_resets_data_connection(ServerKind::PureFtpd, "cut_client_resets_data_pureftpd");
}

/// The client stops reading (its data connection stays open): after
/// `data_stall_timeout` both data connections are reset and the client
/// reads 426; the session goes on.
#[test]
fn cut_stalled_client_is_reset_after_data_stall_timeout() {
    let extra = "data_stall_timeout = \"1s\"\n";
    let Some((_srv, gw, mut c, _data)) = setup("cut_stalled_client", 64 * MIB, extra) else {
        return;
    };
    let d = start_retr(&mut c, &gw, Mode::Passive);
    let reader = SlowReader::start(d, 64 * 1024, Duration::ZERO, Some(MIB as u64));
    reader.wait_held();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = c.reply();
    assert_eq!(r.code, 426, "a stalled download: {:?}", r.text);
    let (_, end) = reader.finish();
    assert_eq!(end, DataEnd::Reset, "a cut download must end with a reset");
    c.cmd("NOOP", 200);
    let m = gw.metrics();
    assert!(
        m.contains("ftpgate_transfers_cut_total{cause=\"stalled\"} 1"),
        "{m}"
    );
}

/// ABOR in the middle of a download: the transfer's reply is 426 (never
/// a 2xx), then ABOR's own 225/226, and the data connection is reset.
fn abor_mid_download(kind: ServerKind, test: &str) {
    let Some((_srv, gw, mut c, _data)) = setup_on(kind, test, 64 * MIB, "") else {
        return;
    };
    for round in 0..3 {
        let d = start_retr(&mut c, &gw, Mode::Passive);
        let reader = SlowReader::start(d, 64 * 1024, Duration::ZERO, Some(MIB as u64));
        reader.wait_held();
        c.send("ABOR");
        let first = c.reply();
        assert_eq!(
            first.code, 426,
            "{test} round {round}: the aborted RETR: {:?}",
            first.text
        );
        let second = c.reply();
        assert!(
            [225, 226].contains(&second.code),
            "{test} round {round}: ABOR's own reply: {:?}",
            second.text
        );
        let (_, end) = reader.finish();
        assert_eq!(end, DataEnd::Reset, "{test} round {round}");
        c.cmd("NOOP", 200);
    }
}

#[test]
fn cut_abor_mid_download_is_426_then_abor_reply() {
    abor_mid_download(ServerKind::Vsftpd, "cut_abor_mid_download");
}

#[test]
fn cut_abor_mid_download_is_426_then_abor_reply_proftpd() {
    abor_mid_download(ServerKind::Proftpd, "cut_abor_mid_download_proftpd");
}

#[test]
fn cut_abor_mid_download_is_426_then_abor_reply_pureftpd() {
    abor_mid_download(ServerKind::PureFtpd, "cut_abor_mid_download_pureftpd");
}

/// Shutdown whose drain ends before a slow download does: 421 (a held
/// success would have become 426), the data connection reset.
#[test]
fn cut_drain_timeout_mid_download_never_2xx() {
    let Some((_srv, gw, mut c, _data)) = setup("cut_drain_timeout", 64 * MIB, "") else {
        return;
    };
    let d = start_retr(&mut c, &gw, Mode::Passive);
    let reader = SlowReader::start(d, 64 * 1024, Duration::ZERO, Some(MIB as u64));
    reader.wait_held();
    gw.begin_shutdown(Duration::from_millis(500));
    let codes = replies_until_close(&mut c);
    assert!(
        codes.last() == Some(&421) && codes.iter().all(|&c| (400..500).contains(&c)),
        "drain timeout during a download: {codes:?}"
    );
    let (_, end) = reader.finish();
    assert_eq!(end, DataEnd::Reset);
}

/// Shutdown with a drain long enough: the slow download completes with
/// every byte and 226, then the idle session gets 421.
#[test]
fn cut_drain_lets_a_slow_download_finish() {
    let Some((_srv, gw, mut c, data)) = setup("cut_drain_finishes", 16 * MIB, "") else {
        return;
    };
    let d = start_retr(&mut c, &gw, Mode::Passive);
    let reader = SlowReader::start(d, 64 * 1024, Duration::from_millis(2), None);
    thread::sleep(Duration::from_millis(100));
    gw.begin_shutdown(Duration::from_secs(60));
    let (got, end) = reader.finish();
    assert!(
        sha(&got) == sha(&data),
        "{} of {} bytes",
        got.len(),
        data.len()
    );
    assert_eq!(end, DataEnd::Clean);
    assert_eq!(replies_until_close(&mut c), vec![226, 421]);
}

/// A reload (SIGHUP) in the middle of a slow download changes nothing for
/// it: every byte, 226, and the session goes on.
#[test]
fn cut_reload_mid_download_changes_nothing() {
    let Some((srv, gw, mut c, data)) = setup("cut_reload_mid_download", 16 * MIB, "") else {
        return;
    };
    let d = start_retr(&mut c, &gw, Mode::Passive);
    let reader = SlowReader::start(d, 64 * 1024, Duration::from_millis(2), None);
    thread::sleep(Duration::from_millis(100));
    let text = format!(
        "listen = [\"{}\"]\nbackends = [\"{}\"]\npublic_address = \"127.0.0.1\"\npassive_ports = \"{}-{}\"\nhealth_check = false\nidle_timeout = \"10m\"\n",
        gw.addr, srv.addr, gw.passive_ports.0, gw.passive_ports.1
    );
    gw.reload(&text).expect("reload");
    let (got, end) = reader.finish();
    assert!(
        sha(&got) == sha(&data),
        "{} of {} bytes",
        got.len(),
        data.len()
    );
    assert_eq!(end, DataEnd::Clean);
    c.expect(226);
    c.cmd("NOOP", 200);
}

// === scripted backends: what a real server does not do ===

/// A backend that resets its data connection mid-file and then claims
/// 226: the client is told 426 and its data connection is reset.
#[test]
fn cut_backend_data_reset_then_lying_226_is_426() {
    let body = file_bytes(4 * MIB, 7);
    let sent = body.clone();
    let f = fake(move |c, l| match verb(l).as_str() {
        "RETR" => {
            let Some(listener) = c.data.take() else {
                c.reply("425 Use PASV first.");
                return Then::Go;
            };
            c.reply("150 Opening BINARY mode data connection.");
            let (mut s, _) = listener.accept().expect("data accept");
            let _ = s.write_all(&sent[..MIB]);
            thread::sleep(Duration::from_millis(100));
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
            c.reply("226 Transfer complete.");
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[f.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let port = c.pasv(&gw);
    let mut d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.cmd("RETR file", 150);
    let mut got = Vec::new();
    let end = d.read_to_end(&mut got).map_err(|e| e.kind());
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "got {} bytes",
        got.len()
    );
    assert!(got.len() <= MIB && got[..] == body[..got.len()]);
    let r = c.reply();
    assert_eq!(r.code, 426, "a lying 226 must not pass: {:?}", r.text);
    c.cmd("NOOP", 200);
}

/// A 227 sent unasked right after login is dropped (logged and counted);
/// the client's next command gets its own reply.
#[test]
fn unasked_227_after_login_is_dropped() {
    let f = fake(|c, l| match verb(l).as_str() {
        "PASS" => {
            c.reply("230 Login successful.\r\n227 Entering Passive Mode (198,51,100,66,117,48).");
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[f.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let r = c.cmd("NOOP", 200);
    assert!(r.text.contains("NOOP"), "{:?}", r.text);
    c.cmd("SYST", 215);
    let m = gw.metrics();
    assert!(
        m.contains("ftpgate_backend_replies_dropped_total{reason=\"unsolicited\"} 1"),
        "{m}"
    );
}

/// A 227 answering a command other than ftpgate's own PASV is never
/// passed on: the client gets 451 and no address.
#[test]
fn a_227_answering_another_command_is_refused() {
    let f = fake(|c, l| match verb(l).as_str() {
        "NOOP" => {
            c.reply("227 Entering Passive Mode (198,51,100,66,117,48).");
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[f.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let r = c.cmd("NOOP", 451);
    assert!(!r.text.contains("198,51,100,66"), "{:?}", r.text);
    c.cmd("SYST", 215);
    let m = gw.metrics();
    assert!(
        m.contains("ftpgate_backend_replies_dropped_total{reason=\"passive_reply\"} 1"),
        "{m}"
    );
}

/// A server closing says 421 unasked: that one reaches the client.
#[test]
fn unasked_421_reaches_the_client() {
    let f = fake(|c, l| match verb(l).as_str() {
        "PASS" => {
            c.reply("230 Login successful.");
            thread::sleep(Duration::from_millis(100));
            c.reply("421 Timeout.");
            Then::Close
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[f.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let r = c.expect(421);
    assert!(r.text.contains("Timeout"), "{:?}", r.text);
    c.expect_closed();
}

/// Bytes after the backend's 234, before the handshake, are refused: the
/// session ends with 421 and ftpgate never starts TLS on them.
#[test]
fn plaintext_after_backend_234_closes_with_421() {
    let pki = crate::certs::TestPki::new();
    let f = fake(|c, l| match verb(l).as_str() {
        "AUTH" => {
            c.reply("234 Proceed with negotiation.\r\n230 injected");
            Then::Go
        }
        _ => c.standard(l),
    });
    let extra = format!(
        "backend_tls = \"explicit\"\nbackend_tls_ca = {:?}\n",
        pki.ca_pem
    );
    let gw = gateway::start(&[f.addr], &extra);
    let mut c = Client::connect_raw(gw.addr);
    let r = c.reply();
    assert_eq!(r.code, 421, "{:?}", r.text);
    c.expect_closed();
    // The fake logs any bytes it received as a line, a ClientHello too.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(f.commands(), vec!["AUTH TLS".to_owned()]);
}

/// The backend's data connection ends (FIN) and its control connection
/// closes without a final reply, with ftpgate still holding data for a
/// slow client: the bytes are delivered, then 421 (a 4xx), never 226.
#[test]
fn cut_backend_gone_without_final_reply_is_4xx() {
    let body = file_bytes(8 * MIB, 9);
    let sent = body.clone();
    let f = fake(move |c, l| match verb(l).as_str() {
        "RETR" => {
            let Some(listener) = c.data.take() else {
                c.reply("425 Use PASV first.");
                return Then::Go;
            };
            c.reply("150 Opening BINARY mode data connection.");
            let (mut s, _) = listener.accept().expect("data accept");
            let _ = s.write_all(&sent[..2 * MIB]);
            let _ = s.shutdown(Shutdown::Write);
            Then::Close
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[f.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let port = c.pasv(&gw);
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.cmd("RETR file", 150);
    let reader = SlowReader::start(d, 64 * 1024, Duration::from_millis(1), None);
    let (got, _) = reader.finish();
    assert_eq!(
        got.len(),
        2 * MIB,
        "every byte the backend sent is delivered"
    );
    assert!(got[..] == body[..got.len()]);
    assert_eq!(replies_until_close(&mut c), vec![421]);
}

// === uploads ===

/// Sets up a data connection in `mode` and sends STOR `name`, expecting 150.
fn start_stor(c: &mut Client, gw: &Gateway, mode: Mode, name: &str) -> TcpStream {
    let d = match mode {
        Mode::Passive => {
            let r = c.cmd("PASV", 227);
            let (_, port) = parse_227(&r.text);
            let d = data_from(Ipv4Addr::LOCALHOST, gw, port);
            c.cmd(&format!("STOR {name}"), 150);
            d
        }
        Mode::Active => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let p = l.local_addr().unwrap().port();
            c.cmd(&format!("PORT 127,0,0,1,{},{}", p >> 8, p & 0xff), 200);
            c.cmd(&format!("STOR {name}"), 150);
            l.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("ftpgate never connected to the active-mode client: {e}"),
                }
            }
        }
    };
    d.set_nonblocking(false).unwrap();
    d.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    d
}

/// The client resets its data connection in the middle of an upload: the
/// server must see a reset too, not a clean end it would store as the whole
/// file; the client reads a 4xx, never 226, and the session goes on.
fn client_resets_upload(mode: Mode, test: &str) {
    let Some((srv, gw, mut c, _)) = setup(test, 1, "") else {
        return;
    };
    let mut d = start_stor(&mut c, &gw, mode, "upload/cut.bin");
    let part = file_bytes(2 * MIB, 3);
    d.write_all(&part).unwrap();
    thread::sleep(Duration::from_millis(200));
    socket2::SockRef::from(&d)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(d);
    let r = c.reply();
    assert!(
        (400..500).contains(&r.code),
        "{mode:?}: a cut upload must not be reported complete: {:?}\n{}",
        r.text,
        srv.log()
    );
    c.cmd("NOOP", 200);
    assert!(
        !srv.log().contains("OK UPLOAD"),
        "{mode:?}: the server stored a cut upload as complete:\n{}",
        srv.log()
    );
}

#[test]
fn cut_client_resets_upload_server_sees_a_reset_passive() {
    client_resets_upload(Mode::Passive, "cut_client_resets_upload_passive");
}

#[test]
fn cut_client_resets_upload_server_sees_a_reset_active() {
    client_resets_upload(Mode::Active, "cut_client_resets_upload_active");
}

/// The backend dies in the middle of an upload: the client's data
/// connection is reset and it reads a 4xx, never a 2xx.
#[test]
fn cut_backend_dies_mid_upload_never_2xx() {
    let Some((srv, gw, mut c, _)) = setup("cut_backend_dies_mid_upload", 1, "") else {
        return;
    };
    let mut d = start_stor(&mut c, &gw, Mode::Passive, "upload/dies.bin");
    let chunk = file_bytes(MIB, 4);
    d.write_all(&chunk).unwrap();
    assert!(srv.kill_sessions() > 0);
    // Keep writing until the cut reaches the client (bounded).
    let mut failed = false;
    for _ in 0..256 {
        if d.write_all(&chunk).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the client's upload connection was never cut");
    let codes = replies_until_close(&mut c);
    assert!(
        !codes.is_empty() && codes.iter().all(|&c| (400..500).contains(&c)),
        "after a cut upload the client must read 4xx only, got {codes:?}"
    );
}

/// The backend takes the whole upload, answers 226, then dies: the client
/// reads 226, then 421.
#[test]
fn cut_backend_dies_after_upload_226() {
    let Some((srv, gw, mut c, _)) = setup("cut_backend_dies_after_upload", 1, "") else {
        return;
    };
    let body = file_bytes(8 * MIB, 5);
    let mut d = start_stor(&mut c, &gw, Mode::Active, "upload/whole.bin");
    d.write_all(&body).unwrap();
    d.shutdown(Shutdown::Write).unwrap();
    wait_logged(&srv, "OK UPLOAD");
    srv.kill_sessions();
    assert_eq!(replies_until_close(&mut c), vec![226, 421]);
    let stored = std::fs::read(srv.upload_path().join("whole.bin")).unwrap();
    assert!(sha(&stored) == sha(&body));
}

/// A backend with implicit TLS corrupts its TLS data stream in the middle
/// of a file (bytes written under the TLS layer), then claims 226: the
/// client's data connection is reset and it reads 426.
#[test]
fn cut_backend_tls_error_mid_download_is_426() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{BufRead, BufReader};
    let pki = crate::certs::TestPki::new();
    let cfg = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(pki.server_cert_der.clone())],
                PrivateKeyDer::try_from(pki.server_key_der.clone()).unwrap(),
            )
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = file_bytes(4 * MIB, 11);
    let sent = body.clone();
    thread::spawn(move || {
        let Ok((s, _)) = listener.accept() else {
            return;
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn = rustls::ServerConnection::new(Arc::clone(&cfg)).unwrap();
        let mut ctl = BufReader::new(rustls::StreamOwned::new(conn, s));
        let reply = |ctl: &mut BufReader<rustls::StreamOwned<_, TcpStream>>, text: &str| {
            let w = ctl.get_mut();
            let _ = w.write_all(format!("{text}\r\n").as_bytes());
            let _ = w.flush();
        };
        reply(&mut ctl, "220 TLS fake ready.");
        let mut data: Option<TcpListener> = None;
        loop {
            let mut line = String::new();
            match ctl.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            match verb(line.trim_end()).as_str() {
                "USER" => reply(&mut ctl, "331 Password."),
                "PASS" => reply(&mut ctl, "230 Logged in."),
                "PASV" => {
                    let l = TcpListener::bind("127.0.0.1:0").unwrap();
                    let p = l.local_addr().unwrap().port();
                    data = Some(l);
                    reply(
                        &mut ctl,
                        &format!(
                            "227 Entering Passive Mode (127,0,0,1,{},{}).",
                            p >> 8,
                            p & 0xff
                        ),
                    );
                }
                "RETR" => {
                    let Some(l) = data.take() else {
                        reply(&mut ctl, "425 Use PASV first.");
                        continue;
                    };
                    reply(&mut ctl, "150 Opening BINARY mode data connection.");
                    let (d, _) = l.accept().unwrap();
                    let conn = rustls::ServerConnection::new(Arc::clone(&cfg)).unwrap();
                    let mut d = rustls::StreamOwned::new(conn, d);
                    let _ = d.write_all(&sent[..MIB]);
                    let _ = d.flush();
                    // An application-data record no key opens.
                    let mut bogus = vec![0x17, 0x03, 0x03, 0x00, 0x20];
                    bogus.extend_from_slice(&[0x5a; 0x20]);
                    let _ = d.sock.write_all(&bogus);
                    thread::sleep(Duration::from_millis(200));
                    drop(d);
                    reply(&mut ctl, "226 Transfer complete.");
                }
                "QUIT" => {
                    reply(&mut ctl, "221 Goodbye.");
                    return;
                }
                // PBSZ, PROT, TYPE, NOOP
                _ => reply(&mut ctl, "200 OK."),
            }
        }
    });
    let extra = format!(
        "backend_tls = \"implicit\"\nbackend_tls_ca = {:?}\n",
        pki.ca_pem
    );
    let gw = gateway::start(&[addr], &extra);
    let mut c = Client::connect(gw.addr);
    c.cmd("USER u", 331);
    c.cmd("PASS p", 230);
    let port = c.pasv(&gw);
    let mut d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    d.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.cmd("RETR file", 150);
    let mut got = Vec::new();
    let end = d.read_to_end(&mut got).map_err(|e| e.kind());
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "got {} bytes",
        got.len()
    );
    assert!(got.len() <= MIB && got[..] == body[..got.len()]);
    let r = c.reply();
    assert_eq!(r.code, 426, "a corrupt TLS data stream: {:?}", r.text);
    c.cmd("NOOP", 200);
    let m = gw.metrics();
    assert!(
        m.contains("ftpgate_transfers_cut_total{cause=\"relay_error\"} 1"),
        "{m}"
    );
}
