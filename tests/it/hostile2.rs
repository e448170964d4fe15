//! Hostile input, round two (issue 15), through a real ftpgate: plaintext
//! injected around `AUTH TLS`, pipelined commands, a backend as an SSRF
//! lever, RFC 2640 framing, oversized backend replies, an error instead of
//! data under `PROT P`, and two sessions behind one address (CGNAT). The
//! transparent gateway's class (client-side injection, NAT slipstreaming)
//! is `nat::nat_lan_transparent_gateway_opens_data_only_to_its_client_and_server`.
//!
//! Most cases use the scripted fake backend and the raw client of
//! `hostile.rs`, whose command log shows what reached the backend; the
//! `PROT P` case uses vsftpd with TLS on both sides, ftplib and curl. Each
//! test's doc comment says whether it failed before its fix or proves
//! behaviour that already held.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::certs::TestPki;
use crate::clients::{self, ClientTls, Mode, Target};
use crate::gateway::{self, Gateway};
use crate::hostile::{data_from, fake, file_bytes, parse_227, read_data, verb, Client, Ctl, Then};
use crate::peers::{self, put_file, FtpServer, ServerKind, TlsSetup};

// === helpers ===

/// ftpgate's client-side certificate (the committed fixture).
fn cert_toml() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/tls");
    format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        dir.join("cert.pem").display().to_string(),
        dir.join("key.pem").display().to_string()
    )
}

/// One counter of the gateway's metrics text, 0 when absent.
fn metric(gw: &Gateway, series: &str) -> u64 {
    gw.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Takes a plain control connection (after its 234) into TLS, accepting
/// ftpgate's test certificate whatever it is.
fn tls_upgrade(sock: TcpStream) -> BufReader<Tls> {
    let cfg = crate::certs::accept_any_server_config();
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    BufReader::new(rustls::StreamOwned::new(conn, sock))
}

/// Sends `line` inside TLS and returns the reply's code (single-line replies).
fn tls_cmd(t: &mut BufReader<Tls>, line: &str) -> (u16, String) {
    t.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .unwrap();
    let mut l = String::new();
    t.read_line(&mut l).expect("a reply inside TLS");
    let code = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, l.trim_end().to_owned())
}

/// The fake's file for `user`: a different content per user name.
fn user_file(user: &str) -> Vec<u8> {
    let seed = user
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    file_bytes(120_000, seed)
}

/// A fake backend that serves [`user_file`] for RETR, otherwise standard.
fn per_user_fake() -> crate::hostile::Fake {
    fake(|c, l| match verb(l).as_str() {
        "RETR" => {
            let body = user_file(&c.user);
            c.send_file(&body);
            Then::Go
        }
        _ => c.standard(l),
    })
}

// === 1. plaintext injected around AUTH TLS ===

/// `AUTH TLS\r\nUSER x\r\n` in one segment on an explicit listener: the
/// USER is discarded before the handshake and never reaches the backend
/// (its command log), the session goes on inside TLS, and the discard is
/// counted. The discard already held (`Control::start_client_tls`); the
/// metric `ftpgate_client_input_discarded_total` is new, so the test
/// failed before on it.
#[test]
fn hostile_auth_tls_with_pipelined_user_on_an_explicit_listener() {
    let be = fake(|c, l| c.standard(l));
    let gw = gateway::start(&[be.addr], &cert_toml());
    let mut c = Client::connect(gw.addr);
    c.send_raw(b"AUTH TLS\r\nUSER injected\r\n");
    c.expect(234);
    let mut t = tls_upgrade(c.stream().try_clone().unwrap());
    // The first reply inside TLS is PBSZ's own: nothing answered USER.
    assert_eq!(tls_cmd(&mut t, "PBSZ 0").0, 200);
    assert_eq!(tls_cmd(&mut t, "USER alice").0, 331);
    assert_eq!(tls_cmd(&mut t, "PASS secret").0, 230);
    assert_eq!(tls_cmd(&mut t, "QUIT").0, 221);
    let cmds = be.commands();
    assert_eq!(
        cmds,
        ["USER alice", "PASS secret", "QUIT"],
        "the injected USER reached the backend"
    );
    assert_eq!(
        metric(
            &gw,
            "ftpgate_client_input_discarded_total{reason=\"plaintext_after_auth\"} "
        ),
        1,
        "{}",
        gw.metrics()
    );
}

/// The same through per-user routing, where ftpgate answers AUTH itself:
/// the injected USER routes nothing (the fake backend, the pool of every
/// user, is not even connected), and the real USER inside TLS is routed.
/// Already held (the core answers AUTH before routing the same way); the
/// metric is new.
#[test]
fn hostile_auth_tls_with_pipelined_user_before_user_routing() {
    let be = fake(|c, l| c.standard(l));
    let gw = gateway::start(
        &[be.addr],
        &format!(
            "{}user_pool_default = \"default\"\n[user_pool]\n\"alice\" = \"default\"\n",
            cert_toml()
        ),
    );
    let mut c = Client::connect(gw.addr);
    c.send_raw(b"AUTH TLS\r\nUSER injected\r\n");
    c.expect(234);
    let mut t = tls_upgrade(c.stream().try_clone().unwrap());
    assert_eq!(tls_cmd(&mut t, "PBSZ 0").0, 200);
    assert_eq!(be.connections(), 0, "the injected USER was routed");
    assert_eq!(tls_cmd(&mut t, "USER alice").0, 331);
    assert_eq!(tls_cmd(&mut t, "PASS secret").0, 230);
    assert_eq!(be.commands(), ["USER alice", "PASS secret"]);
    assert_eq!(be.connections(), 1);
    assert_eq!(
        metric(
            &gw,
            "ftpgate_client_input_discarded_total{reason=\"plaintext_after_auth\"} "
        ),
        1
    );
}

// === 2. pipelined clients ===

/// Seven commands in one segment: `NOOP PASV SYST RETR QUIT DELE NOOP`.
/// The replies come in command order, the RETR reaches the backend only
/// once ftpgate's data connection to it is made (the fake finds it waiting
/// when RETR arrives), and nothing after QUIT reaches the backend, which
/// keeps reading after its 221. Failed before: `DELE precious` and the
/// last `NOOP` were forwarded behind QUIT.
#[test]
fn hostile_pipelined_pasv_retr_and_quit_in_one_segment() {
    let data_was_ready = Arc::new(AtomicBool::new(false));
    let ready = Arc::clone(&data_was_ready);
    let be = fake(move |c, l| match verb(l).as_str() {
        "RETR" => {
            let Some(listener) = c.data.take() else {
                c.reply("425 Use PASV first.");
                return Then::Go;
            };
            // ftpgate connects right after the 227, before RETR: the
            // connection must be waiting already.
            listener.set_nonblocking(true).unwrap();
            let mut s = match listener.accept() {
                Ok((s, _)) => {
                    ready.store(true, Ordering::SeqCst);
                    s
                }
                Err(_) => {
                    listener.set_nonblocking(false).unwrap();
                    listener.accept().unwrap().0
                }
            };
            s.set_nonblocking(false).unwrap();
            c.reply("150 Here it comes.");
            s.write_all(&user_file("u")).unwrap();
            let _ = s.shutdown(Shutdown::Write);
            drop(s);
            c.reply("226 Transfer complete.");
            Then::Go
        }
        // A server that keeps reading after QUIT: whatever ftpgate sends
        // after it shows in the log.
        "QUIT" => {
            c.reply("221 Goodbye.");
            Then::Go
        }
        "DELE" => {
            c.reply("250 Deleted.");
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.send_raw(b"NOOP\r\nPASV\r\nSYST\r\nRETR file\r\nQUIT\r\nDELE precious\r\nNOOP\r\n");
    c.expect(200);
    let (_, port) = parse_227(&c.expect(227).text);
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.expect(215);
    c.expect(150);
    assert!(read_data(d) == user_file("u"), "the file differs");
    c.expect(226);
    c.expect(221);
    // No reply comes for what followed QUIT; the client leaves.
    drop(c);
    assert!(
        be.wait_all_closed(Duration::from_secs(5)),
        "ftpgate kept the backend connection after the client left"
    );
    assert_eq!(
        be.commands(),
        [
            "USER u",
            "PASS secret",
            "NOOP",
            "PASV",
            "SYST",
            "RETR file",
            "QUIT"
        ],
        "what the backend received"
    );
    assert!(
        data_was_ready.load(Ordering::SeqCst),
        "RETR reached the backend before ftpgate's data connection"
    );
    assert_eq!(
        metric(
            &gw,
            "ftpgate_client_input_discarded_total{reason=\"after_quit\"} "
        ),
        1
    );
}

// === 3. a backend as an SSRF lever ===

/// A fake whose 227 names `data_ip` (where it also listens for the data
/// connection).
fn fake_naming(data_ip: Ipv4Addr) -> crate::hostile::Fake {
    fake(move |c, l| match verb(l).as_str() {
        "PASV" => {
            let l = TcpListener::bind((data_ip, 0)).expect("bind the named address");
            let p = l.local_addr().unwrap().port();
            c.data = Some(l);
            let o = data_ip.octets();
            c.reply(&format!(
                "227 Entering Passive Mode ({},{},{},{},{},{}).",
                o[0],
                o[1],
                o[2],
                o[3],
                p >> 8,
                p & 0xff
            ));
            Then::Go
        }
        _ => c.standard(l),
    })
}

/// With `trust_backend_pasv_address = true`, a 227 naming 127.0.0.3 (not
/// the backend, 127.0.0.1) gets the client 425 and ftpgate connects
/// nowhere (the named listener accepts nothing); the refusal is counted.
/// With `backend_data_networks` naming it, the same transfer works.
/// Failed before: ftpgate connected to whatever the 227 named.
#[test]
fn hostile_trusted_227_naming_another_host_is_refused() {
    let named = Ipv4Addr::new(127, 0, 0, 3);
    let be = fake_naming(named);
    let gw = gateway::start(&[be.addr], "trust_backend_pasv_address = true\n");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let r = c.cmd("PASV", 425);
    assert_eq!(
        r.text,
        "425 Can't open data connection: server named an address not allowed."
    );
    c.cmd("NOOP", 200);
    assert_eq!(
        metric(
            &gw,
            "ftpgate_data_connections_refused_total{reason=\"backend_data_address\"} "
        ),
        1
    );
    drop(c);
    drop(gw);
    // Allowed by the operator: used as named.
    let gw = gateway::start(
        &[be.addr],
        "trust_backend_pasv_address = true\nbackend_data_networks = [\"127.0.0.3\"]\n",
    );
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let port = c.pasv(&gw);
    let d = data_from(Ipv4Addr::LOCALHOST, &gw, port);
    c.cmd("RETR file", 150);
    assert_eq!(read_data(d).len(), 100_000);
    c.expect(226);
}

/// The refused 227 leaves nothing behind: a listener on the named address
/// sees no connection (the probe the fake's own data listener cannot
/// give, since the fake never accepts on a refused PASV).
#[test]
fn hostile_trusted_227_makes_no_connection_to_the_named_address() {
    let victim = TcpListener::bind("127.0.0.4:0").unwrap();
    let vport = victim.local_addr().unwrap().port();
    victim.set_nonblocking(true).unwrap();
    let be = fake(move |c, l| match verb(l).as_str() {
        "PASV" => {
            c.reply(&format!(
                "227 Entering Passive Mode (127,0,0,4,{},{}).",
                vport >> 8,
                vport & 0xff
            ));
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "trust_backend_pasv_address = true\n");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    for _ in 0..3 {
        c.cmd("PASV", 425);
    }
    c.cmd("NOOP", 200);
    match victim.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("ftpgate connected to the address a 227 named: {other:?}"),
    }
}

// === 5. RFC 2640 framing ===

/// RFC 2640 section 3.1: a CR inside a path name is sent as CR NUL; the
/// server strips the NUL. ftpgate passes such lines through byte for byte
/// (the fake's raw log), a NUL never ends or splits a command, and a reply
/// naming such a path reaches the client intact. Already held (framing
/// ends lines at LF only, and `parse_command` keeps the argument's bytes).
#[test]
fn hostile_rfc2640_cr_nul_in_path_names_passes_intact() {
    let be = fake(|c, l| match verb(l).as_str() {
        "MKD" => {
            c.reply("257 \"/a\r\0b\" created.");
            Then::Go
        }
        "CWD" | "DELE" | "SIZE" | "RNFR" => {
            c.reply("250 ok.");
            Then::Go
        }
        _ => c.standard(l),
    });
    let gw = gateway::start(&[be.addr], "");
    let mut c = Client::connect(gw.addr);
    c.login("u");
    let lines: &[&[u8]] = &[
        b"MKD a\r\0b\r\n",
        b"CWD dir\r\0\r\n",
        b"DELE x\0y\r\n",
        b"SIZE \0lead\r\n",
        b"RNFR tail\0\r\n",
        b"NOOP\r\n",
    ];
    c.send_raw(&lines.concat());
    let r = c.expect(257);
    assert_eq!(r.text.as_bytes(), b"257 \"/a\r\0b\" created.");
    for _ in 0..4 {
        c.expect(250);
    }
    c.expect(200);
    // One line at a time, split at the CR and the NUL.
    for piece in [&b"DELE p\r"[..], b"\0", b"q\r", b"\n"] {
        c.send_raw(piece);
        thread::sleep(Duration::from_millis(30));
    }
    c.expect(250);
    let raw = be.raw_commands();
    let got: Vec<&[u8]> = raw.iter().skip(2).map(|l| &l[..]).collect();
    let mut want = lines.to_vec();
    want.push(b"DELE p\r\0q\r\n");
    assert_eq!(
        got,
        want,
        "the backend received {:?}",
        got.iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
}

// === 6. oversized backend replies ===

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `first`, then `chunk` over and over (at most `cap` bytes in
/// all) until the peer stops reading; returns how many bytes went out.
fn flood(c: &mut Ctl, first: &[u8], chunk: &[u8], cap: usize) -> usize {
    let _ = c.stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut sent = 0;
    if c.stream.write_all(first).is_err() {
        return 0;
    }
    while sent < cap {
        match c.stream.write(chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    sent
}

/// A reply line that never ends (SYST), a multi-line reply that never ends
/// (STAT), and one of 2 MiB that does (HELP): each gets the client `421
/// Service not available: server reply too long.` and a closed session;
/// the backend is cut off within a few hundred KiB of up to 256 MiB
/// offered, and this process's memory does not grow with what is offered.
/// Failed before: the cut SYST line passed as a reply, the endless STAT
/// never answered (the client timed out), the 2 MiB HELP passed cut.
#[test]
fn hostile_oversized_backend_replies_get_421_and_bounded_memory() {
    const CAP: usize = 256 << 20;
    let sent = Arc::new(AtomicUsize::new(0));
    let sent2 = Arc::clone(&sent);
    let be = fake(move |c, l| {
        let n = match verb(l).as_str() {
            "SYST" => flood(c, b"215 ", &[b'x'; 65536], CAP),
            "STAT" => {
                let line = format!(" {}\r\n", "f".repeat(1022)).repeat(64);
                flood(c, b"213-status\r\n", line.as_bytes(), CAP)
            }
            "HELP" => {
                let line = format!(" {}\r\n", "h".repeat(1022)).repeat(64);
                let n = flood(c, b"214-help\r\n", line.as_bytes(), 2 << 20);
                c.reply("214 End");
                n
            }
            _ => return c.standard(l),
        };
        sent2.fetch_max(n, Ordering::SeqCst);
        Then::Hang
    });
    let gw = gateway::start(&[be.addr], "");
    // Warm up (threads, buffers), then measure.
    let mut c = Client::connect(gw.addr);
    c.login("u");
    c.cmd("NOOP", 200);
    drop(c);
    let before = rss_kib();
    for cmd in ["SYST", "STAT", "HELP"] {
        let t0 = Instant::now();
        let mut c = Client::connect(gw.addr);
        c.login("u");
        let r = c.cmd(cmd, 421);
        assert_eq!(
            r.text, "421 Service not available: server reply too long.",
            "{cmd}"
        );
        c.expect_closed();
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "{cmd}: 421 after {:?}",
            t0.elapsed()
        );
    }
    assert!(
        be.wait_all_closed(Duration::from_secs(10)),
        "the backend connections were not closed"
    );
    let offered = sent.load(Ordering::SeqCst);
    let after = rss_kib();
    println!(
        "RSS {before} KiB -> {after} KiB; most sent on one connection before ftpgate closed it: {offered} bytes"
    );
    assert!(
        offered < 64 << 20,
        "ftpgate kept reading an endless reply: {offered} bytes"
    );
    assert!(
        after < before + 64 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
    assert_eq!(
        metric(
            &gw,
            "ftpgate_backend_replies_dropped_total{reason=\"too_long\"} "
        ),
        3
    );
}

// === 7. an error instead of data under PROT P ===

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// vsftpd with TLS required, ftpgate with TLS on both sides in front of it.
fn tls_both_sides(test: &str) -> Option<(FtpServer, Gateway, TestPki)> {
    let pki = TestPki::new();
    if !peers::available_tls_or_skip(ServerKind::Vsftpd, test) {
        return None;
    }
    let srv = FtpServer::start_tls(
        ServerKind::Vsftpd,
        TlsSetup::explicit(&pki).required(),
        |root| {
            put_file(root, "here.bin", b"present");
        },
    );
    let gw = gateway::start(
        &[srv.addr],
        &format!(
            "tls_cert = {}\ntls_key = {}\nbackend_tls = \"explicit\"\nbackend_tls_ca = {}\n",
            toml_path(&pki.server_cert),
            toml_path(&pki.server_key),
            toml_path(&pki.ca_pem)
        ),
    );
    Some((srv, gw, pki))
}

/// `PROT P`, PASV, the client connects and starts its TLS handshake on the
/// data connection (as lftp and FileZilla do, before the transfer's
/// reply), then `RETR` of a missing file: the backend's 550 reaches the
/// client at once and its data connection is closed at once (no wait for
/// a handshake timeout). ftplib with the handshake in a thread, and curl.
/// Already held: a refused transfer cancels its data task (both legs
/// dropped) as the 550 passes.
#[test]
fn hostile_550_under_prot_p_during_the_data_handshake_is_prompt() {
    let Some((srv, gw, pki)) =
        tls_both_sides("hostile_550_under_prot_p_during_the_data_handshake_is_prompt")
    else {
        return;
    };
    let target = Target::for_server(&srv).via(gw.addr);
    let body = r#"
import threading, time
host, port = _pasv()
conn = socket.create_connection((host, port), timeout=20)
result = {}
def handshake():
    t = time.monotonic()
    try:
        s = ftp.context.wrap_socket(conn, server_hostname=ftp.host, session=ftp.sock.session)
        got = s.recv(1)
        result['data'] = 'eof' if got == b'' else 'bytes'
    except Exception as e:
        result['data'] = 'error ' + type(e).__name__
    result['t'] = time.monotonic() - t
th = threading.Thread(target=handshake)
th.start()
time.sleep(0.3)
t0 = time.monotonic()
try:
    ftp.sendcmd('RETR missing.bin')
    print('RETR unexpected success')
except ftplib.error_perm as e:
    print('RETR', str(e)[:3], 'after %.3f' % (time.monotonic() - t0))
th.join(25)
print('DATA', result.get('data'), 'after %.3f' % result.get('t', -1.0), 'alive' if th.is_alive() else 'ended')
print('NOOP', ftp.voidcmd('NOOP')[:3])
ftp.quit()
"#;
    let out = clients::ftplib_tls(&target, body, Mode::Pasv, &ClientTls::verify(&pki.ca_pem));
    let s = out.stdout_str();
    let secs = |prefix: &str| -> f64 {
        s.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split("after ").nth(1))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} line: {out:?}\n{}", srv.log()))
    };
    assert!(out.ok && s.contains("RETR 550"), "{out:?}\n{}", srv.log());
    let retr = secs("RETR 550");
    let data = secs("DATA ");
    println!("ftplib: 550 after {retr:.3} s, data connection ended after {data:.3} s");
    assert!(retr < 2.0, "the 550 took {retr} s");
    assert!(
        data < 3.0 && s.contains(" ended"),
        "the data connection stayed open {data} s: {s}"
    );
    assert!(s.contains("NOOP 200"), "the session goes on: {s}");

    // curl (it shakes hands on the data connection after the 150 only).
    let out = clients::curl_tls(
        &target,
        "missing.bin",
        Mode::Pasv,
        &ClientTls::verify(&pki.ca_pem),
        &[],
    );
    println!("curl: exit {:?} after {:?}", out.status, out.elapsed);
    assert!(
        !out.ok && out.stderr.contains("< 550") && out.elapsed < Duration::from_secs(5),
        "{out:?}"
    );
}

// === 8. two sessions behind one address (CGNAT) ===

/// Two clients from 127.0.0.1 with pending PASVs at the same time: each
/// gets its own port, and each gets its own user's file, whichever
/// connects or asks first. With a one-port range the second gets 425
/// until the first is done, never the first's data. Already held (the
/// port pool never gives one address two pending routes on one port).
#[test]
fn hostile_two_sessions_behind_one_address_get_their_own_data() {
    let be = per_user_fake();
    let gw = gateway::start(&[be.addr], "");
    let (alice, bob) = (user_file("alice"), user_file("bob"));
    let mut a = Client::connect(gw.addr);
    a.login("alice");
    let mut b = Client::connect(gw.addr);
    b.login("bob");
    for round in 0..3 {
        let pa = a.pasv(&gw);
        let pb = b.pasv(&gw);
        assert_ne!(pa, pb, "round {round}: one port for two pending sessions");
        // Connect in the other order, ask in either order.
        let db = data_from(Ipv4Addr::LOCALHOST, &gw, pb);
        if round == 1 {
            b.cmd("RETR file", 150);
            a.cmd("RETR file", 150);
        } else {
            a.cmd("RETR file", 150);
            b.cmd("RETR file", 150);
        }
        let da = data_from(Ipv4Addr::LOCALHOST, &gw, pa);
        assert!(read_data(db) == bob, "round {round}: bob got other data");
        assert!(
            read_data(da) == alice,
            "round {round}: alice got other data"
        );
        a.expect(226);
        b.expect(226);
    }
    drop((a, b, gw));

    let p = peers::free_port();
    let gw = gateway::start(&[be.addr], &format!("passive_ports = \"{p}-{p}\""));
    let mut a = Client::connect(gw.addr);
    a.login("alice");
    let mut b = Client::connect(gw.addr);
    b.login("bob");
    assert_eq!(a.pasv(&gw), p);
    b.cmd("PASV", 425);
    a.cmd("RETR file", 150);
    assert!(read_data(data_from(Ipv4Addr::LOCALHOST, &gw, p)) == alice);
    a.expect(226);
    assert_eq!(b.pasv(&gw), p);
    b.cmd("RETR file", 150);
    assert!(read_data(data_from(Ipv4Addr::LOCALHOST, &gw, p)) == bob);
    b.expect(226);
}
