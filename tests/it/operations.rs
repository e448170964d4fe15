//! Operations tests, in-process: metrics, admin endpoints, health checks, limits, transfer log, reload, drain.
//!
//! Real vsftpd (and ProFTPD for a password login) behind an in-process
//! ftpgate, driven by real clients (curl, ftplib, suppaftp) or, where the
//! exact reply and its timing matter, by a raw control connection. A
//! scripted backend appears only where no real server behaves that way (one
//! that accepts and never greets, one that waits after its 221). Metrics are
//! read from the admin listener over HTTP where the test is about the
//! endpoint, otherwise from [`Gateway::metrics`] (the same text).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::clients::{self, Mode, Target};
use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

/// How long any single read waits before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin listener on a free loopback port.
const ADMIN: &str = "admin_listen = \"127.0.0.1:0\"\n";

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

// === helpers: metrics, HTTP, waiting ===

/// Sum of every series of `name` whose labels include all of `labels`
/// (0 when there is none). Parses the Prometheus text format.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, inner) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let pairs: Vec<(&str, &str)> = inner
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|want| pairs.contains(want)) {
            sum += value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad metric line {line:?}"));
        }
    }
    sum
}

/// [`metric`] on the gateway's current metrics.
fn gw_metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&gw.metrics(), name, labels)
}

/// One HTTP/1.0 GET; returns the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to the admin listener {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status line in {text:?}"));
    (status, body.to_owned())
}

/// The admin listener of a gateway started with [`ADMIN`].
fn admin(gw: &Gateway) -> SocketAddr {
    gw.admin.expect("gateway started without admin_listen")
}

/// Polls `check` every 20 ms until it returns `Ok`, or panics with its last
/// `Err` after `timeout`.
#[track_caller]
fn wait_for(timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => {
                panic!("still not true after {timeout:?}: {why}")
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits until the gateway's metric equals `want`.
#[track_caller]
fn wait_metric(gw: &Gateway, name: &str, labels: &[(&str, &str)], want: f64) {
    wait_for(Duration::from_secs(5), || {
        let got = gw_metric(gw, name, labels);
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "{name}{labels:?} is {got}, want {want}\n{}",
                gw.metrics()
            ))
        }
    });
}

// === helpers: a raw control connection ===

/// A control connection spoken by hand, every read bounded by [`READ_TIMEOUT`].
struct Ctl {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Ctl {
    fn connect(addr: SocketAddr) -> Ctl {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Ctl { stream, reader }
    }

    /// One whole reply (multi-line replies joined), or why there is none.
    fn read_reply(&mut self) -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err(format!("connection closed (after {all:?})")),
                Ok(_) => {}
                Err(e) => return Err(format!("read failed: {e} (after {all:?})")),
            }
            all.push_str(&line);
            let b = line.as_bytes();
            let code_ok = b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit);
            if !code_ok {
                continue;
            }
            if b[3] == b' ' && all.as_bytes()[..3] == b[..3] {
                return Ok(all);
            }
        }
    }

    #[track_caller]
    fn reply(&mut self) -> String {
        self.read_reply()
            .unwrap_or_else(|e| panic!("no reply: {e}"))
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    }

    #[track_caller]
    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }

    /// Reads the 220 greeting and logs in with `user`/`pass` (expects 230).
    #[track_caller]
    fn login(&mut self, user: &str, pass: &str) {
        let g = self.reply();
        assert!(g.starts_with("220"), "greeting: {g:?}");
        let r = self.cmd(&format!("USER {user}"));
        let r = if r.starts_with("331") {
            self.cmd(&format!("PASS {pass}"))
        } else {
            r
        };
        assert!(r.starts_with("230"), "login: {r:?}");
    }

    /// The peer closes without another reply (EOF or reset) within the timeout.
    #[track_caller]
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 512];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("connection still open after {READ_TIMEOUT:?}")
            }
            Err(_) => {} // reset
        }
    }

    /// Sends PASV and returns the data address of the 227 reply.
    #[track_caller]
    fn pasv(&mut self) -> SocketAddr {
        let r = self.cmd("PASV");
        assert!(r.starts_with("227"), "PASV: {r:?}");
        let open = r.find('(').expect("227 has (h1,h2,h3,h4,p1,p2)");
        let n: Vec<u16> = r[open + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .take(6)
            .map(|s| s.parse().unwrap())
            .collect();
        SocketAddr::from((
            [n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8],
            n[4] * 256 + n[5],
        ))
    }
}

// === helpers: servers and clients ===

/// vsftpd with `fill` applied to its root; `None` (after a SKIP line) when
/// vsftpd is not installed and FTPGATE_REQUIRE_PEERS is not set.
fn vsftpd(test: &str, fill: impl FnOnce(&Path)) -> Option<FtpServer> {
    if !peers::available_or_skip(ServerKind::Vsftpd, test) {
        return None;
    }
    Some(FtpServer::start_with(ServerKind::Vsftpd, fill))
}

/// vsftpd serving `who.txt` = `name` (to tell backends apart by content).
fn named_vsftpd(test: &str, name: &str) -> Option<FtpServer> {
    let name = name.to_owned();
    vsftpd(test, move |root| {
        peers::put_file(root, "who.txt", name.as_bytes());
        peers::put_file(root, "blob.bin", &peers::random_bytes(700_000, 11));
    })
}

/// Which backend a new curl session through `gw` lands on (its who.txt).
fn who_via_curl(srv: &FtpServer, gw: &Gateway) -> String {
    let out = clients::curl_get(&Target::for_server(srv).via(gw.addr), "who.txt", Mode::Epsv);
    assert!(out.ok, "curl who.txt: {out:?}");
    out.stdout_str()
}

/// A logged-in suppaftp session through `gw`.
fn suppa(srv: &FtpServer, gw: &Gateway) -> suppaftp::FtpStream {
    let mut f = suppaftp::FtpStream::connect(gw.addr).expect("suppaftp connect");
    f.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    f.login(srv.user.as_str(), srv.pass.as_str())
        .expect("suppaftp login");
    f.transfer_type(suppaftp::types::FileType::Binary).unwrap();
    f
}

fn retr(f: &mut suppaftp::FtpStream, path: &str) -> Vec<u8> {
    f.retr_as_buffer(path)
        .unwrap_or_else(|e| panic!("RETR {path}: {e}"))
        .into_inner()
}

/// A whole config file for [`Gateway::reload`]: the gateway's own `listen`
/// value (as configured, `127.0.0.1:0`: a restart-only key, so naming the
/// bound port would count as a change), its range and advertised address,
/// `backends`, then `extra`, which starts on line 6.
fn config_text(gw: &Gateway, backends: &[SocketAddr], extra: &str) -> String {
    format!(
        "listen = [{}]\nbackends = [{}]\npublic_address = \"127.0.0.1\"\npassive_ports = \"{}-{}\"\nhealth_check = false\n{extra}\n",
        gw.config
            .listen
            .iter()
            .map(|l| format!("\"{l}\""))
            .collect::<Vec<_>>()
            .join(", "),
        backends
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect::<Vec<_>>()
            .join(", "),
        gw.passive_ports.0,
        gw.passive_ports.1,
    )
}

// === 1. metrics while bytes flow ===

/// Scrapes /metrics over HTTP while `running` is true, every 50 ms; returns
/// every value of `ftpgate_transfer_bytes_total{direction}` seen with the
/// `ftpgate_sessions_active` of the same scrape.
fn scrape_while(addr: SocketAddr, direction: &str, running: &AtomicBool) -> Vec<(f64, f64)> {
    let mut seen = Vec::new();
    while running.load(Ordering::SeqCst) {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        let bytes = metric(
            &body,
            "ftpgate_transfer_bytes_total",
            &[("direction", direction)],
        );
        let active = metric(&body, "ftpgate_sessions_active", &[]);
        if bytes > 0.0 {
            seen.push((bytes, active));
        }
        thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// Checks the mid-transfer samples of a `size`-byte transfer: some bytes
/// counted before the end, growing, and exactly one session open.
fn assert_live_samples(what: &str, samples: &[(f64, f64)], size: usize) {
    println!("{what}: (bytes, sessions_active) while curl ran: {samples:?}");
    let mid: Vec<&(f64, f64)> = samples.iter().filter(|(b, _)| *b < size as f64).collect();
    assert!(
        mid.len() >= 2,
        "{what}: want at least two scrapes with 0 < bytes < {size} while curl ran, got {samples:?}"
    );
    assert!(
        mid.last().unwrap().0 > mid[0].0,
        "{what}: the byte counter must grow while bytes flow: {samples:?}"
    );
    assert!(
        mid.iter().all(|(_, active)| *active == 1.0),
        "{what}: sessions_active must be 1 during the transfer: {samples:?}"
    );
}

#[test]
fn ops_metrics_scraped_during_curl_download_and_upload() {
    const SIZE: usize = 32 * 1024 * 1024;
    let data = peers::random_bytes(SIZE, 0xd0d0);
    let d2 = data.clone();
    let Some(srv) = vsftpd("ops_metrics_scraped_during_curl", move |root| {
        peers::put_file(root, "big.bin", &d2);
    }) else {
        return;
    };
    let gw = gateway::start(&[srv.addr], ADMIN);
    let admin = admin(&gw);
    let t = Target::for_server(&srv).via(gw.addr);

    // Download at 16 MB/s (about two seconds), scraping meanwhile.
    let running = Arc::new(AtomicBool::new(true));
    let (t2, r2) = (t.clone(), Arc::clone(&running));
    let curl = thread::spawn(move || {
        let out = clients::curl(&t2, "big.bin", Mode::Epsv, &["--limit-rate", "16M"]);
        r2.store(false, Ordering::SeqCst);
        out
    });
    let samples = scrape_while(admin, "download", &running);
    let out = curl.join().unwrap();
    assert!(out.ok, "curl download: {out:?}");
    assert!(out.stdout == data, "downloaded bytes differ");
    assert_live_samples("download", &samples, SIZE);

    // Upload the same way.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    std::fs::write(&local, &data).unwrap();
    running.store(true, Ordering::SeqCst);
    let (t2, r2, l2) = (t.clone(), Arc::clone(&running), local.clone());
    let curl = thread::spawn(move || {
        let l = l2.to_string_lossy().into_owned();
        let out = clients::curl(
            &t2,
            "upload/up.bin",
            Mode::Epsv,
            &["-T", &l, "--limit-rate", "16M"],
        );
        r2.store(false, Ordering::SeqCst);
        out
    });
    let samples = scrape_while(admin, "upload", &running);
    let out = curl.join().unwrap();
    assert!(out.ok, "curl upload: {out:?}");
    assert!(
        std::fs::read(srv.upload_path().join("up.bin")).unwrap() == data,
        "uploaded bytes differ"
    );
    assert_live_samples("upload", &samples, SIZE);

    // After both: totals, over HTTP again.
    wait_for(Duration::from_secs(5), || {
        let (_, body) = http_get(admin, "/metrics");
        let active = metric(&body, "ftpgate_sessions_active", &[]);
        if active == 0.0 {
            Ok(())
        } else {
            Err(format!("sessions_active {active}"))
        }
    });
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    let m = |name: &str, labels: &[(&str, &str)]| metric(&body, name, labels);
    assert_eq!(
        m("ftpgate_transfer_bytes_total", &[("direction", "download")]),
        SIZE as f64,
        "{body}"
    );
    assert_eq!(
        m("ftpgate_transfer_bytes_total", &[("direction", "upload")]),
        SIZE as f64,
        "{body}"
    );
    for direction in ["download", "upload"] {
        assert_eq!(
            m(
                "ftpgate_transfers_total",
                &[
                    ("direction", direction),
                    ("mode", "passive"),
                    ("outcome", "complete")
                ]
            ),
            1.0,
            "{direction}: {body}"
        );
    }
    assert_eq!(
        m("ftpgate_transfers_total", &[]),
        2.0,
        "nothing else counted: {body}"
    );
    assert_eq!(
        m("ftpgate_logins_total", &[("result", "success")]),
        2.0,
        "{body}"
    );
    assert_eq!(
        m("ftpgate_logins_total", &[("result", "failure")]),
        0.0,
        "{body}"
    );
    // Both sessions ended normally. (Whether a QUIT session counts as
    // "quit" or "client_closed" races today: see
    // ops_session_outcome_is_quit_when_the_client_closes_after_221.)
    let backend = srv.addr.to_string();
    let ended = |outcome: &str| {
        m(
            "ftpgate_sessions_total",
            &[("backend", &backend), ("outcome", outcome)],
        )
    };
    assert_eq!(m("ftpgate_sessions_total", &[]), 2.0, "{body}");
    assert_eq!(ended("quit") + ended("client_closed"), 2.0, "{body}");
    assert!(
        m("ftpgate_reply_latency_seconds_count", &[]) > 0.0,
        "reply latency histogram is empty: {body}"
    );
    assert!(
        body.contains("# TYPE ftpgate_reply_latency_seconds histogram"),
        "{body}"
    );
}

// === 2. admin endpoints and health checks ===

const FAST_CHECKS: &str = "health_check = true\nhealth_check_interval = \"200ms\"\nhealth_check_timeout = \"1s\"\nhealth_check_rise = 1\nhealth_check_fall = 1\n";

#[test]
fn ops_readyz_follows_the_only_backend_and_clients_get_421_when_it_is_down() {
    let Some(srv) = named_vsftpd("ops_readyz_follows_the_only_backend", "A") else {
        return;
    };
    let gw = gateway::start(&[srv.addr], &format!("{ADMIN}{FAST_CHECKS}"));
    let admin = admin(&gw);
    let backend = srv.addr.to_string();
    let b = backend.as_str();

    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(http_get(admin, "/nope").0, 404);
    wait_metric(&gw, "ftpgate_backend_up", &[("backend", b)], 1.0);
    assert_eq!(http_get(admin, "/readyz"), (200, "ready\n".to_owned()));
    assert!(
        gw_metric(
            &gw,
            "ftpgate_health_checks_total",
            &[("backend", b), ("result", "success")]
        ) >= 1.0
    );
    assert!(
        gw_metric(
            &gw,
            "ftpgate_health_check_duration_seconds_count",
            &[("backend", b)]
        ) >= 1.0
    );
    assert_eq!(who_via_curl(&srv, &gw), "A");

    // The only backend stops: one failed check (fall = 1) takes it down.
    let (user, pass) = (srv.user.clone(), srv.pass.clone());
    drop(srv);
    wait_metric(&gw, "ftpgate_backend_up", &[("backend", b)], 0.0);
    assert!(
        gw_metric(
            &gw,
            "ftpgate_health_checks_total",
            &[("backend", b), ("result", "failure")]
        ) >= 1.0
    );
    assert_eq!(
        http_get(admin, "/readyz"),
        (503, "no backend is up\n".to_owned())
    );
    assert_eq!(
        http_get(admin, "/healthz").0,
        200,
        "the process still serves"
    );

    // A new client is told at once, without a backend connection attempt.
    let started = Instant::now();
    let mut c = Ctl::connect(gw.addr);
    assert_eq!(
        c.reply(),
        "421 Service not available: no server is up, try again later.\r\n"
    );
    c.expect_closed();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the 421 took {:?}",
        started.elapsed()
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_sessions_total",
            &[("backend", "-"), ("outcome", "no_backend")]
        ),
        1.0
    );
    // A real client sees the same.
    let out = clients::curl_get(
        &Target::new("127.0.0.1", gw.port(), &user, &pass),
        "who.txt",
        Mode::Epsv,
    );
    assert!(
        !out.ok && out.stderr.contains("421"),
        "curl must fail with the 421: {out:?}"
    );
}

#[test]
fn ops_two_backends_one_down_new_sessions_land_on_the_live_one() {
    let Some(a) = named_vsftpd("ops_two_backends_one_down", "backend-A") else {
        return;
    };
    let b = named_vsftpd("ops_two_backends_one_down", "backend-B").unwrap();
    let gw = gateway::start(&[a.addr, b.addr], &format!("{ADMIN}{FAST_CHECKS}"));
    let (an, bn) = (a.addr.to_string(), b.addr.to_string());
    wait_metric(&gw, "ftpgate_backend_up", &[("backend", &an)], 1.0);
    wait_metric(&gw, "ftpgate_backend_up", &[("backend", &bn)], 1.0);
    // Both up: the rotation uses both.
    let before: Vec<String> = (0..4).map(|_| who_via_curl(&b, &gw)).collect();
    assert!(
        before.iter().any(|w| w == "backend-A") && before.iter().any(|w| w == "backend-B"),
        "both backends up, both must be used: {before:?}"
    );

    // A stops: once its check fails, every new session goes to B.
    let b_sessions_before = gw_metric(&gw, "ftpgate_sessions_total", &[("backend", &bn)]);
    drop(a);
    wait_metric(&gw, "ftpgate_backend_up", &[("backend", &an)], 0.0);
    let after: Vec<String> = (0..6).map(|_| who_via_curl(&b, &gw)).collect();
    assert!(
        after.iter().all(|w| w == "backend-B"),
        "A is down: every new session must land on B: {after:?}"
    );
    assert_eq!(http_get(admin(&gw), "/readyz").0, 200, "B is still up");
    wait_metric(
        &gw,
        "ftpgate_sessions_total",
        &[("backend", &bn)],
        b_sessions_before + 6.0,
    );
    // No client was refused or sent to the dead backend.
    assert_eq!(
        gw_metric(&gw, "ftpgate_sessions_total", &[("outcome", "no_backend")]),
        0.0
    );
}

/// Before a backend's first health check has an answer nobody knows it is
/// up: `/readyz` must not send traffic its way yet. Here the first check
/// hangs on a backend that never greets, then fails.
#[test]
fn ops_readyz_is_not_ready_before_the_first_health_check_passes() {
    let silent = SilentBackend::start();
    let gw = gateway::start(
        &[silent.addr],
        &format!(
            "{ADMIN}health_check = true\nhealth_check_interval = \"5s\"\nhealth_check_timeout = \"1500ms\"\n"
        ),
    );
    let admin = admin(&gw);
    let name = silent.addr.to_string();
    let checks = |result: &str| {
        gw_metric(
            &gw,
            "ftpgate_health_checks_total",
            &[("backend", &name), ("result", result)],
        )
    };
    // Well inside the first check's timeout: no result yet.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(checks("success") + checks("failure"), 0.0);
    let early = http_get(admin, "/readyz");
    // The first check times out: down.
    wait_for(Duration::from_secs(5), || {
        if checks("failure") >= 1.0 {
            Ok(())
        } else {
            Err("the first check has not failed yet".into())
        }
    });
    assert_eq!(
        gw_metric(&gw, "ftpgate_backend_up", &[("backend", &name)]),
        0.0
    );
    assert_eq!(
        http_get(admin, "/readyz"),
        (503, "no backend is up\n".to_owned())
    );
    assert_eq!(
        early.0, 503,
        "/readyz before any health check answered: {early:?}"
    );
}

// === 3. limits ===

/// A connection refused by a limit: exactly `reply`, then closed.
#[track_caller]
fn assert_refused(gw: &Gateway, reply: &str) {
    let mut c = Ctl::connect(gw.addr);
    assert_eq!(c.reply(), format!("{reply}\r\n"));
    c.expect_closed();
}

#[test]
fn ops_limit_max_sessions_per_client() {
    let Some(srv) = named_vsftpd("ops_limit_max_sessions_per_client", "A") else {
        return;
    };
    let gw = gateway::start(&[srv.addr], "max_sessions_per_client = 2");
    let mut one = Ctl::connect(gw.addr);
    one.login(&srv.user, &srv.pass);
    let mut two = Ctl::connect(gw.addr);
    assert!(two.reply().starts_with("220"));
    assert_refused(
        &gw,
        "421 Too many connections from your address, try again later.",
    );
    assert_eq!(gw_metric(&gw, "ftpgate_sessions_active", &[]), 2.0);
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_limit_hits_total",
            &[("limit", "max_sessions_per_client")]
        ),
        1.0
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_sessions_total",
            &[("backend", "-"), ("outcome", "refused_limit")]
        ),
        1.0
    );
    // The two admitted sessions are untouched.
    assert!(one.cmd("NOOP").starts_with("200"));

    // Closing one frees its slot.
    assert!(one.cmd("QUIT").starts_with("221"));
    wait_metric(&gw, "ftpgate_sessions_active", &[], 1.0);
    let mut three = Ctl::connect(gw.addr);
    three.login(&srv.user, &srv.pass);
    assert!(two.cmd("USER anonymous").starts_with("331"));
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_limit_hits_total",
            &[("limit", "max_sessions_per_client")]
        ),
        1.0
    );
}

#[test]
fn ops_limit_max_sessions() {
    let Some(srv) = named_vsftpd("ops_limit_max_sessions", "A") else {
        return;
    };
    let gw = gateway::start(&[srv.addr], "max_sessions = 1");
    let mut one = Ctl::connect(gw.addr);
    one.login(&srv.user, &srv.pass);
    assert_refused(&gw, "421 Too many users connected, try again later.");
    // A real client gets the same refusal.
    let out = clients::curl_get(
        &Target::for_server(&srv).via(gw.addr),
        "who.txt",
        Mode::Epsv,
    );
    assert!(
        !out.ok && out.stderr.contains("421 Too many users"),
        "{out:?}"
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_limit_hits_total",
            &[("limit", "max_sessions")]
        ),
        2.0
    );
    assert_eq!(gw_metric(&gw, "ftpgate_sessions_active", &[]), 1.0);
    assert!(one.cmd("QUIT").starts_with("221"));
    wait_metric(&gw, "ftpgate_sessions_active", &[], 0.0);
    assert_eq!(who_via_curl(&srv, &gw), "A");
}

#[test]
fn ops_limit_connection_rate_per_client() {
    let Some(srv) = named_vsftpd("ops_limit_connection_rate_per_client", "A") else {
        return;
    };
    let gw = gateway::start(&[srv.addr], "max_connection_rate_per_client = 3");
    // Four connections at once: three admitted, the fourth refused.
    let mut conns: Vec<Ctl> = (0..4).map(|_| Ctl::connect(gw.addr)).collect();
    let replies: Vec<String> = conns.iter_mut().map(Ctl::reply).collect();
    assert_eq!(
        replies.iter().filter(|r| r.starts_with("220")).count(),
        3,
        "{replies:?}"
    );
    let refused: Vec<(usize, &String)> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.starts_with("220"))
        .collect();
    assert_eq!(refused.len(), 1, "{replies:?}");
    assert_eq!(
        refused[0].1,
        "421 Connecting too fast, try again later.\r\n"
    );
    conns[refused[0].0].expect_closed();
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_limit_hits_total",
            &[("limit", "max_connection_rate_per_client")]
        ),
        1.0
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_sessions_total",
            &[("outcome", "refused_limit")]
        ),
        1.0
    );
    // The window is one second: after it, the same client is admitted again.
    thread::sleep(Duration::from_millis(1100));
    let mut late = Ctl::connect(gw.addr);
    late.login(&srv.user, &srv.pass);
    assert_eq!(gw_metric(&gw, "ftpgate_sessions_active", &[]), 4.0);
}

/// Sends `line`, returns the reply and how long it took.
fn timed(c: &mut Ctl, line: &str) -> (String, Duration) {
    let t = Instant::now();
    let r = c.cmd(line);
    (r, t.elapsed())
}

#[test]
fn ops_login_failures_are_delayed_then_closed_vsftpd() {
    let Some(srv) = named_vsftpd("ops_login_failures_vsftpd", "A") else {
        return;
    };
    const DELAY: Duration = Duration::from_millis(800);
    let gw = gateway::start(
        &[srv.addr],
        "login_failures_before_delay = 1\nlogin_failure_delay = \"800ms\"\nmax_login_failures = 3",
    );
    let mut c = Ctl::connect(gw.addr);
    assert!(c.reply().starts_with("220"));
    // vsftpd is anonymous-only here: any other USER gets 530.
    let (r1, t1) = timed(&mut c, "USER nosuchuser1");
    assert!(r1.starts_with("530"), "{r1:?}");
    assert!(t1 < DELAY / 2, "the first failure is not delayed: {t1:?}");
    let (r2, t2) = timed(&mut c, "USER nosuchuser2");
    assert!(r2.starts_with("530"), "{r2:?}");
    assert!(
        t2 >= DELAY.mul_f64(0.9),
        "the second failure must wait login_failure_delay: {t2:?}"
    );
    // The third failure is passed on, then ftpgate closes the session.
    let (r3, _) = timed(&mut c, "USER nosuchuser3");
    assert!(r3.starts_with("530"), "{r3:?}");
    assert_eq!(
        c.reply(),
        "421 Too many failed logins; closing control connection.\r\n"
    );
    c.expect_closed();
    assert_eq!(
        gw_metric(&gw, "ftpgate_logins_total", &[("result", "failure")]),
        3.0
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_limit_hits_total",
            &[("limit", "max_login_failures")]
        ),
        1.0
    );
    wait_metric(
        &gw,
        "ftpgate_sessions_total",
        &[("outcome", "login_failures")],
        1.0,
    );
    assert_eq!(gw_metric(&gw, "ftpgate_sessions_active", &[]), 0.0);
}

#[test]
fn ops_login_failures_wrong_password_proftpd() {
    if !peers::available_or_skip(ServerKind::Proftpd, "ops_login_failures_proftpd") {
        return;
    }
    let srv = FtpServer::start(ServerKind::Proftpd);
    const DELAY: Duration = Duration::from_millis(500);
    let gw = gateway::start(
        &[srv.addr],
        "login_failures_before_delay = 0\nlogin_failure_delay = \"500ms\"\nmax_login_failures = 2",
    );
    // One wrong password, delayed, then the right one: the session goes on.
    let mut c = Ctl::connect(gw.addr);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd(&format!("USER {}", srv.user)).starts_with("331"));
    let (r, t) = timed(&mut c, "PASS wrong-password");
    assert!(r.starts_with("530"), "{r:?}");
    assert!(t >= DELAY.mul_f64(0.9), "failure not delayed: {t:?}");
    assert!(c.cmd(&format!("USER {}", srv.user)).starts_with("331"));
    let r = c.cmd(&format!("PASS {}", srv.pass));
    assert!(r.starts_with("230"), "{r:?}");
    assert!(c.cmd("QUIT").starts_with("221"));

    // Two wrong passwords: the second 530, then 421 and close.
    let mut c = Ctl::connect(gw.addr);
    assert!(c.reply().starts_with("220"));
    for round in 1..=2 {
        assert!(c.cmd(&format!("USER {}", srv.user)).starts_with("331"));
        let r = c.cmd("PASS wrong-password");
        assert!(r.starts_with("530"), "round {round}: {r:?}");
    }
    assert_eq!(
        c.reply(),
        "421 Too many failed logins; closing control connection.\r\n"
    );
    c.expect_closed();
    assert_eq!(
        gw_metric(&gw, "ftpgate_logins_total", &[("result", "failure")]),
        3.0
    );
    assert_eq!(
        gw_metric(&gw, "ftpgate_logins_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_limit_hits_total",
            &[("limit", "max_login_failures")]
        ),
        1.0
    );
}

/// A backend that accepts connections and never says anything (no real
/// server does that on purpose). Stops accepting when dropped.
struct SilentBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl SilentBackend {
    fn start() -> SilentBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: gives up after 30 s even if never dropped.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !s2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match l.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SilentBackend { addr, stop }
    }
}

impl Drop for SilentBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn ops_greeting_timeout_with_a_backend_that_never_greets() {
    let silent = SilentBackend::start();
    let gw = gateway::start(&[silent.addr], "greeting_timeout = \"300ms\"");
    let started = Instant::now();
    let mut c = Ctl::connect(gw.addr);
    assert_eq!(
        c.reply(),
        "421 Service not available: server did not greet.\r\n"
    );
    let took = started.elapsed();
    c.expect_closed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "421 after {took:?}, want about 300ms"
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_limit_hits_total",
            &[("limit", "greeting_timeout")]
        ),
        1.0
    );
    wait_metric(
        &gw,
        "ftpgate_sessions_total",
        &[
            ("backend", &silent.addr.to_string()),
            ("outcome", "timeout"),
        ],
        1.0,
    );
}

#[test]
fn ops_login_and_idle_timeouts() {
    let Some(srv) = named_vsftpd("ops_login_and_idle_timeouts", "A") else {
        return;
    };
    // Room for a loaded machine: the logged-in session below must get
    // through connect, USER and PASS (vsftpd forks for them) within
    // login_timeout, and each NOOP gap (250 ms plus a round trip) must
    // stay well inside idle_timeout. With 600 ms for both, that margin
    // was 350 ms, and the idle check's 100 ms. (Before login the idle
    // timeout applies too, so login_timeout above it would not count.)
    let gw = gateway::start(&[srv.addr], "login_timeout = \"1s\"\nidle_timeout = \"1s\"");
    // Connected, never logs in.
    let started = Instant::now();
    let mut lazy = Ctl::connect(gw.addr);
    assert!(lazy.reply().starts_with("220"));
    assert_eq!(
        lazy.reply(),
        "421 Login timeout; closing control connection.\r\n"
    );
    lazy.expect_closed();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );

    // Logged in: commands keep the session alive past the idle timeout...
    let mut c = Ctl::connect(gw.addr);
    c.login(&srv.user, &srv.pass);
    let busy = Instant::now();
    let mut last_sent = busy;
    while busy.elapsed() < Duration::from_millis(2000) {
        thread::sleep(Duration::from_millis(250));
        last_sent = Instant::now();
        let r = c.cmd("NOOP");
        assert!(r.starts_with("200"), "active session closed: {r:?}");
    }
    // ...and silence ends it: measured from before the last NOOP was sent
    // (ftpgate's idle clock restarts when it reads it), not from its reply,
    // which a loaded machine may hand the test thread late.
    assert_eq!(
        c.reply(),
        "421 Idle timeout; closing control connection.\r\n"
    );
    c.expect_closed();
    let took = last_sent.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "idle 421 after {took:?}"
    );
    let hits = |l: &str| gw_metric(&gw, "ftpgate_limit_hits_total", &[("limit", l)]);
    assert_eq!(hits("login_timeout"), 1.0);
    assert_eq!(hits("idle_timeout"), 1.0);
    wait_metric(
        &gw,
        "ftpgate_sessions_total",
        &[("outcome", "timeout")],
        2.0,
    );
}

#[test]
fn ops_data_connection_refusals_and_expiry_are_counted() {
    let Some(srv) = named_vsftpd("ops_data_refusals", "A") else {
        return;
    };
    let gw = gateway::start(
        &[srv.addr],
        &format!("{ADMIN}pending_data_timeout = \"700ms\""),
    );
    let admin = admin(&gw);
    let scrape = |name: &str, labels: &[(&str, &str)]| {
        let (status, body) = http_get(admin, "/metrics");
        assert_eq!(status, 200);
        metric(&body, name, labels)
    };
    let refused = |reason: &str| {
        gw_metric(
            &gw,
            "ftpgate_data_connections_refused_total",
            &[("reason", reason)],
        )
    };
    let mut c = Ctl::connect(gw.addr);
    c.login(&srv.user, &srv.pass);
    assert!(c.cmd("TYPE I").starts_with("200"));
    let port_addr = c.pasv();
    assert_eq!(scrape("ftpgate_passive_routes_in_use", &[]), 1.0);
    // Another address knocks on the port first: refused, the route stays.
    let foreign = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    foreign
        .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    let _ = foreign.connect_timeout(&port_addr.into(), Duration::from_secs(2));
    drop(foreign);
    wait_for(Duration::from_secs(3), || {
        if refused("foreign_address") == 1.0 {
            Ok(())
        } else {
            Err(format!("refusals: {}", gw.metrics()))
        }
    });
    // The prepared connection expires unused: its port is freed, counted,
    // and the transfer command that comes too late gets 425.
    wait_for(Duration::from_secs(3), || {
        if refused("expired") == 1.0 {
            Ok(())
        } else {
            Err("not expired yet".into())
        }
    });
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_limit_hits_total",
            &[("limit", "pending_data_timeout")]
        ),
        1.0
    );
    assert_eq!(scrape("ftpgate_passive_routes_in_use", &[]), 0.0);
    let r = c.cmd("RETR who.txt");
    assert!(r.starts_with("425"), "{r:?}");
    // Nobody waits on the port any more.
    let _ = TcpStream::connect_timeout(&port_addr, Duration::from_secs(2));
    wait_for(Duration::from_secs(3), || {
        if refused("no_pending_transfer") >= 1.0 {
            Ok(())
        } else {
            Err("late connection not counted".into())
        }
    });
    // The session still works.
    let mut d = TcpStream::connect(c.pasv()).unwrap();
    d.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    assert!(c.cmd("RETR who.txt").starts_with("150"));
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    drop(d);
    assert_eq!(got, b"A");
    assert!(c.reply().starts_with("226"));
}

// === 4. transfer log ===

/// The lines of the transfer log, waiting until there are `n`.
fn xferlog_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_for(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        lines = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            Ok(())
        } else {
            Err(format!("want {n} xferlog lines, have {text:?}"))
        }
    });
    lines
}

/// Checks one xferlog line field by field (after the 5 time fields):
/// seconds, client, bytes, file, type, flag, direction, access mode, user,
/// service, auth method, auth user id, status.
#[track_caller]
fn assert_xferlog_line(line: &str, bytes: u64, file: &str, kind: &str, dir: &str, status: &str) {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 18, "18 fields: {line:?}");
    assert!(
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&f[0]),
        "{line:?}"
    );
    let year = ftpgate::xferlog::ctime_utc(std::time::SystemTime::now());
    assert_eq!(
        f[4],
        year.rsplit(' ').next().unwrap(),
        "year, UTC: {line:?}"
    );
    assert!(
        f[3].len() == 8 && f[3].matches(':').count() == 2,
        "{line:?}"
    );
    let secs: u64 = f[5].parse().unwrap_or_else(|_| panic!("seconds: {line:?}"));
    assert!((1..60).contains(&secs), "seconds: {line:?}");
    assert_eq!(
        &f[6..],
        &[
            "127.0.0.1",
            &bytes.to_string(),
            file,
            kind,
            "_",
            dir,
            "a",
            "anonymous",
            "ftp",
            "0",
            "*",
            status
        ],
        "{line:?}"
    );
}

#[test]
fn ops_xferlog_curl_download_and_upload() {
    let content = peers::random_bytes(300_000, 5);
    let c2 = content.clone();
    let Some(srv) = vsftpd("ops_xferlog_curl", move |root| {
        peers::put_file(root, "my file.bin", &c2);
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("xfer.log");
    let gw = gateway::start(&[srv.addr], &format!("xferlog = \"{}\"", log.display()));
    let t = Target::for_server(&srv).via(gw.addr);
    let out = clients::curl_get(&t, "my file.bin", Mode::Epsv);
    assert!(out.ok && out.stdout == content, "{out:?}");
    let up = peers::random_bytes(123_457, 6);
    let local = dir.path().join("local.bin");
    std::fs::write(&local, &up).unwrap();
    let out = clients::curl_put(&t, &local, "upload/up.bin", Mode::Pasv);
    assert!(out.ok, "{out:?}");
    // A listing is not a file transfer: not logged.
    assert!(clients::curl_list(&t, "", Mode::Epsv).ok);

    let lines = xferlog_lines(&log, 2);
    // curl sends TYPE I; RETR names the file as given (the space becomes _).
    assert_xferlog_line(&lines[0], 300_000, "my_file.bin", "b", "o", "c");
    assert_xferlog_line(&lines[1], 123_457, "up.bin", "b", "i", "c");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        2,
        "exactly two lines (no listing)"
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_transfers_total",
            &[("direction", "listing"), ("outcome", "complete")]
        ),
        1.0,
        "the listing is counted in metrics, just not logged"
    );
}

#[test]
fn ops_xferlog_ascii_type_and_aborted_transfer() {
    let big = peers::random_bytes(8 * 1024 * 1024, 9);
    let Some(srv) = vsftpd("ops_xferlog_ascii_abort", move |root| {
        peers::put_file(root, "text.txt", b"line one\nline two\n");
        peers::put_file(root, "big.bin", &big);
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("xfer.log");
    let gw = gateway::start(&[srv.addr], &format!("xferlog = \"{}\"", log.display()));
    let t = Target::for_server(&srv).via(gw.addr);
    // curl --use-ascii sends TYPE A.
    let out = clients::curl(&t, "text.txt", Mode::Epsv, &["--use-ascii"]);
    assert!(out.ok && out.stderr.contains("TYPE A"), "{out:?}");
    let lines = xferlog_lines(&log, 1);
    assert_xferlog_line(&lines[0], 18, "text.txt", "a", "o", "c");

    // ABOR in the middle of a binary download.
    let body = r#"
ftp.voidcmd('TYPE I')
conn = ftp.transfercmd('RETR big.bin')
got = len(conn.recv(8192))
resp = ftp.abort()
print('abort', resp[:3], got)
conn.close()
ftp.putcmd('NOOP')
for _ in range(4):
    r = ftp.getmultiline()
    if r.startswith('200'):
        print('noop', r[:3])
        break
    print('after-abort', r[:3])
ftp.quit()
"#;
    let out = clients::ftplib(&t, body);
    let s = out.stdout_str();
    assert!(out.ok && s.contains("noop 200"), "{out:?}");
    let lines = xferlog_lines(&log, 2);
    println!("xferlog: {lines:#?}\nftplib: {s}");
    let f: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(f.len(), 18, "{:?}", lines[1]);
    assert_eq!(
        (f[8], f[9], f[11], f[13], f[17]),
        ("big.bin", "b", "o", "anonymous", "i"),
        "aborted download, incomplete: {:?}",
        lines[1]
    );
    let logged: u64 = f[7].parse().unwrap();
    assert!(
        logged < 8 * 1024 * 1024,
        "an aborted transfer moved less than the file: {:?}",
        lines[1]
    );
    wait_metric(
        &gw,
        "ftpgate_transfers_total",
        &[
            ("direction", "download"),
            ("mode", "passive"),
            ("outcome", "aborted"),
        ],
        1.0,
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_transfers_total",
            &[("direction", "download"), ("outcome", "complete")]
        ),
        1.0,
        "only the ASCII download completed"
    );
    // The client read `got` bytes before ABOR, so at least that many were
    // relayed: the line must say so (wu-ftpd logs the bytes moved).
    let got: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("abort "))
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {s}"));
    assert!(
        logged >= got && got > 0,
        "the aborted transfer's line must count the {got} bytes the client received: {:?}",
        lines[1]
    );
}

/// A download whose client reads all the data and the 226, then QUITs
/// before closing its end of the data connection (the close may come last,
/// e.g. when a client tears everything down at exit): the transfer was
/// complete, and the log and metrics must say so.
#[test]
fn ops_xferlog_download_complete_even_if_the_data_socket_closes_after_quit() {
    let content = peers::random_bytes(100_000, 21);
    let c2 = content.clone();
    let Some(srv) = vsftpd("ops_xferlog_quit_before_data_close", move |root| {
        peers::put_file(root, "small.bin", &c2);
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("xfer.log");
    let gw = gateway::start(&[srv.addr], &format!("xferlog = \"{}\"", log.display()));
    let mut c = Ctl::connect(gw.addr);
    c.login(&srv.user, &srv.pass);
    assert!(c.cmd("TYPE I").starts_with("200"));
    let mut d = TcpStream::connect(c.pasv()).unwrap();
    d.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    assert!(c.cmd("RETR small.bin").starts_with("150"));
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert!(got == content, "downloaded bytes differ");
    assert!(c.reply().starts_with("226"));
    assert!(c.cmd("QUIT").starts_with("221"));
    drop(c);
    thread::sleep(Duration::from_millis(100));
    drop(d);
    let lines = xferlog_lines(&log, 1);
    assert_xferlog_line(&lines[0], 100_000, "small.bin", "b", "o", "c");
    wait_metric(
        &gw,
        "ftpgate_transfers_total",
        &[
            ("direction", "download"),
            ("mode", "passive"),
            ("outcome", "complete"),
        ],
        1.0,
    );
}

/// A backend that answers USER/PASS/QUIT like a server but keeps the
/// connection open for two seconds after its 221 (so the client's close is
/// what ends the session). Serves connections for 20 s at most.
fn slow_closing_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for conn in l.incoming().take(4) {
            let Ok(mut s) = conn else { continue };
            thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(20))).ok();
                let _ = s.write_all(b"220 slow-closing fake server\r\n");
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "USER" => b"331 Password please.\r\n",
                        "PASS" => b"230 Logged in.\r\n",
                        "QUIT" => b"221 Goodbye.\r\n",
                        _ => b"200 OK.\r\n",
                    };
                    let _ = s.write_all(reply);
                    if verb == "QUIT" {
                        thread::sleep(Duration::from_secs(2));
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

/// A client that QUITs, reads the 221 and closes ended its session with
/// QUIT, whoever closes first (real servers close right after 221, so with
/// them the two closes race; this backend waits, making the order fixed).
#[test]
fn ops_session_outcome_is_quit_when_the_client_closes_after_221() {
    let backend = slow_closing_backend();
    let gw = gateway::start(&[backend], "");
    let mut c = Ctl::connect(gw.addr);
    c.login("user", "pass");
    assert_eq!(c.cmd("QUIT"), "221 Goodbye.\r\n");
    drop(c);
    wait_metric(&gw, "ftpgate_sessions_active", &[], 0.0);
    let outcomes = gw
        .metrics()
        .lines()
        .filter(|l| l.starts_with("ftpgate_sessions_total"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(
        gw_metric(&gw, "ftpgate_sessions_total", &[("outcome", "quit")]),
        1.0,
        "{outcomes:?}"
    );
}

// === 5. reload ===

#[test]
fn ops_reload_adds_then_removes_a_backend_while_a_session_stays_put() {
    let Some(a) = named_vsftpd("ops_reload_backends", "backend-A") else {
        return;
    };
    let b = named_vsftpd("ops_reload_backends", "backend-B").unwrap();
    let gw = gateway::start(&[a.addr], "");
    let blob = peers::random_bytes(700_000, 11);
    let (an, bn) = (a.addr.to_string(), b.addr.to_string());

    // A session on A, held open across both reloads.
    let mut held = suppa(&a, &gw);
    assert_eq!(retr(&mut held, "who.txt"), b"backend-A");

    let report = gw
        .reload(&config_text(&gw, &[a.addr, b.addr], ""))
        .expect("reload adding B");
    assert_eq!(report.added, vec![bn.clone()]);
    assert!(report.removed.is_empty() && report.restart_needed.is_empty());
    assert_eq!(retr(&mut held, "who.txt"), b"backend-A");
    assert!(retr(&mut held, "blob.bin") == blob);
    let new: Vec<String> = (0..4).map(|_| who_via_curl(&a, &gw)).collect();
    assert!(
        new.iter().any(|w| w == "backend-B") && new.iter().any(|w| w == "backend-A"),
        "after adding B new sessions use both: {new:?}"
    );
    let on_a = 1 + new.iter().filter(|w| *w == "backend-A").count();

    let report = gw
        .reload(&config_text(&gw, &[b.addr], ""))
        .expect("reload removing A");
    assert_eq!(report.removed, vec![an.clone()]);
    assert!(report.added.is_empty());
    // The session on A carries on, transfers included.
    assert_eq!(retr(&mut held, "who.txt"), b"backend-A");
    assert!(retr(&mut held, "blob.bin") == blob);
    assert_eq!(
        gw_metric(&gw, "ftpgate_sessions_active", &[("backend", &an)]),
        1.0
    );
    let new: Vec<String> = (0..4).map(|_| who_via_curl(&b, &gw)).collect();
    assert!(
        new.iter().all(|w| w == "backend-B"),
        "A removed: new sessions go to B only: {new:?}"
    );
    held.quit().unwrap();
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_config_reloads_total",
            &[("result", "success")]
        ),
        2.0
    );
    // Every session on A (the held one and the new ones before its removal)
    // ended, none on A after its removal.
    wait_metric(
        &gw,
        "ftpgate_sessions_total",
        &[("backend", &an)],
        on_a as f64,
    );
    wait_metric(&gw, "ftpgate_sessions_active", &[], 0.0);
    assert_eq!(
        gw_metric(&gw, "ftpgate_sessions_total", &[("backend", &bn)]),
        (8 - (on_a - 1)) as f64
    );
}

#[test]
fn ops_reload_rejects_invalid_text_and_keeps_the_running_config() {
    let Some(a) = named_vsftpd("ops_reload_invalid", "backend-A") else {
        return;
    };
    let b = named_vsftpd("ops_reload_invalid", "backend-B").unwrap();
    let gw = gateway::start(&[a.addr], "max_sessions = 5");

    // A bad value: named with its key and line; nothing changes (B would be new).
    let bad = config_text(&gw, &[b.addr], "").replacen(
        &format!(
            "passive_ports = \"{}-{}\"",
            gw.passive_ports.0, gw.passive_ports.1
        ),
        "passive_ports = \"9-1\"",
        1,
    );
    let err = gw
        .reload(&bad)
        .expect_err("passive_ports = \"9-1\" must be refused");
    assert!(
        err.contains("passive_ports") && err.contains("test-config.toml:4"),
        "the error names the key and its line: {err}"
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_config_reloads_total",
            &[("result", "failure")]
        ),
        1.0
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_config_reloads_total",
            &[("result", "success")]
        ),
        0.0
    );

    // An unknown key on line 6.
    let err = gw
        .reload(&config_text(&gw, &[b.addr], "max_sesions = 1"))
        .expect_err("an unknown key must be refused");
    assert!(
        err.contains("max_sesions") && err.contains("test-config.toml:6"),
        "the error names the key and its line: {err}"
    );

    // The old configuration is in force: backend A, max_sessions 5.
    let who: Vec<String> = (0..3).map(|_| who_via_curl(&a, &gw)).collect();
    assert!(who.iter().all(|w| w == "backend-A"), "{who:?}");
    let conns: Vec<Ctl> = (0..5)
        .map(|_| {
            let mut c = Ctl::connect(gw.addr);
            assert!(c.reply().starts_with("220"));
            c
        })
        .collect();
    assert_refused(&gw, "421 Too many users connected, try again later.");
    drop(conns);

    // A valid reload that also changes a restart-only key: applied, the key reported and kept.
    wait_metric(&gw, "ftpgate_sessions_active", &[], 0.0);
    let moved = config_text(&gw, &[b.addr], "").replacen(
        &format!(
            "passive_ports = \"{}-{}\"",
            gw.passive_ports.0, gw.passive_ports.1
        ),
        &format!(
            "passive_ports = \"{}-{}\"",
            gw.passive_ports.0 + 100,
            gw.passive_ports.1 + 100
        ),
        1,
    );
    let report = gw.reload(&moved).expect("valid reload");
    assert_eq!(report.restart_needed, vec!["passive_ports"]);
    let out = clients::curl_get(&Target::for_server(&b).via(gw.addr), "who.txt", Mode::Epsv);
    assert!(out.ok && out.stdout_str() == "backend-B", "{out:?}");
    let port: u16 = out
        .stderr
        .lines()
        .find_map(|l| l.split("(|||").nth(1))
        .and_then(|r| r.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no 229 in {out:?}"));
    assert!(
        gw.owns_passive_port(port),
        "the running passive range stays: {port}"
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );
}

// === 6. drain ===

#[test]
fn ops_drain_finishes_transfers_and_closes_idle_sessions() {
    const SIZE: usize = 12 * 1024 * 1024;
    let data = peers::random_bytes(SIZE, 0xd4a1);
    let d2 = data.clone();
    let Some(srv) = vsftpd("ops_drain", move |root| {
        peers::put_file(root, "big.bin", &d2);
        peers::put_file(root, "small.txt", b"prepared before the drain\n");
    }) else {
        return;
    };
    let gw = gateway::start(&[srv.addr], ADMIN);
    let admin = admin(&gw);
    let t = Target::for_server(&srv).via(gw.addr);

    // An idle logged-in session, and one with a PASV prepared.
    let mut idle = Ctl::connect(gw.addr);
    idle.login(&srv.user, &srv.pass);
    let mut prepared = Ctl::connect(gw.addr);
    prepared.login(&srv.user, &srv.pass);
    assert!(prepared.cmd("TYPE I").starts_with("200"));
    let data_addr = prepared.pasv();
    // A download at 6 MB/s: about two seconds.
    let t2 = t.clone();
    let curl =
        thread::spawn(move || clients::curl(&t2, "big.bin", Mode::Epsv, &["--limit-rate", "6M"]));
    wait_for(Duration::from_secs(5), || {
        match gw_metric(
            &gw,
            "ftpgate_transfer_bytes_total",
            &[("direction", "download")],
        ) {
            b if b > 0.0 => Ok(()),
            _ => Err("the download has not started".into()),
        }
    });
    assert_eq!(http_get(admin, "/readyz").0, 200);

    let drain_started = Instant::now();
    gw.begin_shutdown(Duration::from_secs(10));
    assert_eq!(idle.reply(), "421 Service closing control connection.\r\n");
    idle.expect_closed();
    assert!(
        drain_started.elapsed() < Duration::from_secs(1),
        "the idle session must be closed promptly: {:?}",
        drain_started.elapsed()
    );
    assert_eq!(http_get(admin, "/readyz"), (503, "draining\n".to_owned()));
    // New connections are refused (or closed without a greeting).
    wait_for(Duration::from_secs(3), || {
        match TcpStream::connect(gw.addr) {
            Err(_) => Ok(()),
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut buf = [0u8; 64];
                match (&s).read(&mut buf) {
                    Ok(0) => Ok(()),
                    Ok(n) => panic!(
                        "a new connection during the drain got {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        Err("a new connection is still accepted and held".into())
                    }
                    Err(_) => Ok(()),
                }
            }
        }
    });

    // The prepared data connection still works.
    let mut d = TcpStream::connect(data_addr).expect("connect to the prepared passive port");
    d.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    assert!(prepared.cmd("RETR small.txt").starts_with("150"));
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"prepared before the drain\n");
    drop(d); // as a real client does after EOF
    assert!(prepared.reply().starts_with("226"));
    // Now idle: closed.
    assert_eq!(
        prepared.reply(),
        "421 Service closing control connection.\r\n"
    );

    // The running download completes, intact.
    let out = curl.join().unwrap();
    assert_eq!(out.stdout.len(), SIZE, "{out:?}");
    assert_eq!(sha(&out.stdout), sha(&data), "downloaded bytes differ");
    assert!(out.ok, "curl: {out:?}");
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_transfers_total",
            &[("direction", "download"), ("outcome", "complete")]
        ),
        2.0
    );
    assert!(gw_metric(&gw, "ftpgate_sessions_total", &[("outcome", "shutdown")]) >= 2.0);
}

#[test]
fn ops_drain_timeout_closes_a_transfer_still_running() {
    const SIZE: usize = 40 * 1024 * 1024;
    let Some(srv) = vsftpd("ops_drain_timeout", |root| {
        peers::put_file(root, "big.bin", &vec![0x5a; SIZE]);
    }) else {
        return;
    };
    let gw = gateway::start(&[srv.addr], "");
    let mut c = Ctl::connect(gw.addr);
    c.login(&srv.user, &srv.pass);
    assert!(c.cmd("TYPE I").starts_with("200"));
    let data_addr = c.pasv();
    let mut d = TcpStream::connect(data_addr).unwrap();
    d.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    assert!(c.cmd("RETR big.bin").starts_with("150"));
    // Read a little, then stop reading: the transfer stays in flight.
    let mut buf = vec![0u8; 65536];
    let n = d.read(&mut buf).unwrap();
    assert!(n > 0);

    let drain_started = Instant::now();
    gw.begin_shutdown(Duration::from_millis(500));
    let mut r = c.reply();
    // Cutting the data legs can make vsftpd's own 426 for the transfer reach
    // the client just before ftpgate's 421.
    if r.starts_with("426") || r.starts_with("451") {
        r = c.reply();
    }
    assert_eq!(r, "421 Service closing control connection.\r\n");
    let took = drain_started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "the 421 must come when the drain ends (500ms), came after {took:?}"
    );
    c.expect_closed();
    // The data connection ends short of the file.
    let mut total = n;
    loop {
        match d.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => total += k,
        }
    }
    assert!(total < SIZE, "the transfer must have been cut: {total}");
    wait_metric(
        &gw,
        "ftpgate_sessions_total",
        &[("outcome", "shutdown")],
        1.0,
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_transfers_total",
            &[("direction", "download"), ("outcome", "complete")]
        ),
        0.0
    );
    assert_eq!(
        gw_metric(
            &gw,
            "ftpgate_transfers_total",
            &[("direction", "download"), ("outcome", "failed")]
        ),
        1.0
    );
}
