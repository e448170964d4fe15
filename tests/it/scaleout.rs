//! Issue 3's acceptance test: HAProxy (TCP mode, `send-proxy-v2`) in front
//! of two ftpgate processes (the real binary) in front of two vsftpd
//! servers, all on loopback.
//!
//! ```text
//!                         127.0.0.10:<ctl>  roundrobin, send-proxy-v2
//!   curl / ftplib ──────► HAProxy ──┬──► ftpgate A 127.0.0.2:<pa> ──┬──► vsftpd 1
//!   (127.0.0.1xx)                   └──► ftpgate B 127.0.0.3:<pb> ──┴──► vsftpd 2
//!                         127.0.0.10:<A range>  1:1 to 127.0.0.2 (same port)
//!                         127.0.0.10:<B range>  1:1 to 127.0.0.3 (same port)
//! ```
//!
//! Each ftpgate advertises HAProxy's address (127.0.0.10) and owns a
//! disjoint passive range that HAProxy forwards port for port to it alone,
//! so a data connection can only succeed on the instance that owns its
//! session (the other one has no route for it). Both instances trust
//! 127.0.0.0/8 to send PROXY headers, on their proxied control listener and
//! on their passive ports.
//!
//! HAProxy is a child process (`haproxy -f CFG -db`) killed by PID at the
//! end. Missing haproxy: a `SKIP` line, or a panic under
//! `FTPGATE_REQUIRE_PEERS=1`. The ftpgate spawner [`Ftpgate`] is shared
//! with `proxy_protocol.rs`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::clients::{self, Mode, Target};
use crate::peers::{self, FtpServer, ServerKind};

/// How long an ftpgate or HAProxy may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The whole scale-out run (20 sessions) must finish within this.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// HAProxy's address: what clients reach, what both ftpgates advertise.
const FRONT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
const IP_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const IP_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// Ports per instance's passive range.
const RANGE_LEN: u16 = 10;

// === shared helpers (also used by proxy_protocol.rs) ===

/// Whether `ip:port` can be bound right now.
pub(crate) fn port_free_on(ip: Ipv4Addr, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

/// A port free on every address of `ips` a moment ago.
pub(crate) fn port_free_on_all(ips: &[Ipv4Addr]) -> u16 {
    loop {
        let p = peers::free_port();
        if ips.iter().all(|&ip| port_free_on(ip, p)) {
            return p;
        }
    }
}

/// `count` consecutive ports free on every address of `ips` a moment ago.
pub(crate) fn free_range_on(ips: &[Ipv4Addr], count: u16) -> (u16, u16) {
    loop {
        let base: u16 = rand::thread_rng().gen_range(40_000..55_000);
        if (base..base + count).all(|p| ips.iter().all(|&ip| port_free_on(ip, p))) {
            return (base, base + count - 1);
        }
    }
}

/// The real ftpgate binary serving a config file; killed by PID on drop.
pub(crate) struct Ftpgate {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ftpgate {
    /// Writes `config` to a temp file, runs `ftpgate --config FILE` and
    /// waits (at most 20 s) for its "ftpgate listening" line. `Err` has the
    /// exit status and log when it exited instead (e.g. a taken port).
    pub(crate) fn start(config: &str) -> Result<Ftpgate, String> {
        let dir = tempfile::Builder::new()
            .prefix("ftpgate-pp-")
            .tempdir()
            .expect("tempdir");
        let file = dir.path().join("ftpgate.toml");
        fs::write(&file, config).expect("write config");
        let stderr = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_ftpgate"))
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&file)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("create log"))
            .spawn()
            .expect("spawn ftpgate");
        let mut gate = Ftpgate {
            child,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if gate.log().contains("ftpgate listening") {
                return Ok(gate);
            }
            if let Ok(Some(st)) = gate.child.try_wait() {
                return Err(format!(
                    "ftpgate exited with {:?}; config:\n{config}\nlog:\n{}",
                    st.code(),
                    gate.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ftpgate did not start within {START_TIMEOUT:?}; log:\n{}",
                    gate.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it logged so far (text format, stderr).
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (at most `within`) until `pred(log)` holds; returns the log.
    pub(crate) fn wait_log(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if pred(&log) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ftpgate {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// SIGTERM by PID, then SIGKILL if it has not exited within 5 s.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// === HAProxy ===

/// The haproxy binary, if installed. With `FTPGATE_REQUIRE_PEERS=1` a
/// missing one panics; otherwise the caller prints a SKIP line.
fn haproxy_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() && peers::peers_required() {
        panic!(
            "FTPGATE_REQUIRE_PEERS=1 but haproxy is not installed; run scripts/install-test-deps.sh as root"
        );
    }
    found
}

/// Whether something listens on `addr` (IPv4), per /proc/net/tcp: a
/// readiness check that opens no connection (a probe would be a session).
fn listening(addr: SocketAddr) -> bool {
    let IpAddr::V4(ip) = addr.ip() else {
        return false;
    };
    // /proc/net/tcp prints the address as the u32 in host order (little-endian here).
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(ip.octets()),
        addr.port()
    );
    fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
}

/// A running `haproxy -db`; stopped by PID on drop.
struct Haproxy {
    child: Child,
    log: PathBuf,
}

impl Haproxy {
    /// Checks `config` with `haproxy -c`, starts it and waits until every
    /// address of `binds` listens.
    fn start(bin: &Path, dir: &Path, config: &str, binds: &[SocketAddr]) -> Haproxy {
        let cfg = dir.join("haproxy.cfg");
        fs::write(&cfg, config).expect("write haproxy.cfg");
        let check = clients::run(
            {
                let mut c = Command::new(bin);
                c.arg("-c").arg("-f").arg(&cfg);
                c
            },
            None,
            Duration::from_secs(20),
        );
        assert!(
            check.ok,
            "haproxy -c rejects the config:\n{config}\n{check:?}"
        );
        let log = dir.join("haproxy.log");
        let logf = fs::File::create(&log).expect("create haproxy log");
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup"))
            .stderr(logf)
            .spawn()
            .expect("spawn haproxy");
        let mut h = Haproxy { child, log };
        let deadline = Instant::now() + START_TIMEOUT;
        while !binds.iter().all(|&a| listening(a)) {
            if let Ok(Some(st)) = h.child.try_wait() {
                panic!("haproxy exited with {st}:\n{}", h.log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy does not listen on all of {binds:?}:\n{}",
                h.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        h
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// HAProxy in TCP mode: the control frontend balances round robin over
/// both ftpgates' proxied listeners; each passive range has a frontend
/// forwarding port for port (a `server` without a port keeps the
/// destination port) to its instance only. Every server line sends PROXY
/// protocol v2.
fn haproxy_config(ctl: u16, a: (u16, (u16, u16)), b: (u16, (u16, u16))) -> String {
    format!(
        "global\n\
         \x20   maxconn 2000\n\
         \x20   log stdout format raw local0 info\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option tcplog\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \n\
         frontend ftp_control\n\
         \x20   bind {FRONT}:{ctl}\n\
         \x20   default_backend ftpgates\n\
         \n\
         backend ftpgates\n\
         \x20   balance roundrobin\n\
         \x20   server a {IP_A}:{pa} send-proxy-v2\n\
         \x20   server b {IP_B}:{pb} send-proxy-v2\n\
         \n\
         frontend passive_a\n\
         \x20   bind {FRONT}:{a0}-{a1}\n\
         \x20   default_backend passive_a\n\
         \n\
         backend passive_a\n\
         \x20   server a {IP_A} send-proxy-v2\n\
         \n\
         frontend passive_b\n\
         \x20   bind {FRONT}:{b0}-{b1}\n\
         \x20   default_backend passive_b\n\
         \n\
         backend passive_b\n\
         \x20   server b {IP_B} send-proxy-v2\n",
        pa = a.0,
        a0 = a.1 .0,
        a1 = a.1 .1,
        pb = b.0,
        b0 = b.1 .0,
        b1 = b.1 .1,
    )
}

/// One ftpgate instance's config: a proxied control listener on `ip:proxied`
/// (plus the plain `listen` the config requires), its own passive range
/// bound on its own IP, HAProxy's address advertised.
fn ftpgate_config(
    ip: Ipv4Addr,
    plain: u16,
    proxied: u16,
    range: (u16, u16),
    admin: u16,
    backends: &[SocketAddr],
) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "listen = [\"{ip}:{plain}\"]\n\
         proxy_protocol_listen = [\"{ip}:{proxied}\"]\n\
         proxy_protocol_from = [\"127.0.0.0/8\"]\n\
         backends = [{}]\n\
         public_address = \"{FRONT}\"\n\
         passive_ports = \"{}-{}\"\n\
         passive_bind_address = \"{ip}\"\n\
         admin_listen = \"{ip}:{admin}\"\n\
         log_level = \"info\"\n",
        list.join(", "),
        range.0,
        range.1,
    )
}

fn sha_hex(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// A file whose first line names its backend, then 200 KB of noise.
fn backend_file(n: u64) -> Vec<u8> {
    let mut v = format!("served by backend-{n}\n").into_bytes();
    v.extend(peers::random_bytes(200_000, 0x5ca1e + n));
    v
}

/// Sum of the series of `name` with all of `labels` in a Prometheus text.
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

/// `GET /metrics` from an admin listener.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect admin {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// "session closed" lines of a text log.
fn session_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("session closed"))
        .collect()
}

/// One client run through HAProxy.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// curl, PASV with the 227 address used, from this source address.
    CurlPasv(Ipv4Addr),
    /// curl, EPSV, from this source address.
    CurlEpsv(Ipv4Addr),
    /// Python's ftplib, PASV with the 227 address used (from 127.0.0.1).
    Ftplib,
}

/// Runs `run` against `t` fetching who.txt; returns the SHA-256 of what it got.
fn fetch(t: &Target, run: Run) -> Result<String, String> {
    match run {
        Run::CurlPasv(src) | Run::CurlEpsv(src) => {
            let mode = if matches!(run, Run::CurlPasv(_)) {
                Mode::Pasv
            } else {
                Mode::Epsv
            };
            let src = src.to_string();
            let out = clients::curl(t, "who.txt", mode, &["--interface", &src]);
            if out.ok {
                Ok(sha_hex(&out.stdout))
            } else {
                Err(format!("{run:?}: {out:?}"))
            }
        }
        Run::Ftplib => {
            let out = clients::ftplib_mode(
                t,
                "ftp.voidcmd('TYPE I')\nprint('SHA', sha256(get_bytes('who.txt')))\nftp.quit()\n",
                Mode::Pasv,
            );
            let sha = out
                .stdout_str()
                .lines()
                .find_map(|l| l.strip_prefix("SHA ").map(str::to_owned));
            match sha {
                Some(s) if out.ok => Ok(s),
                _ => Err(format!("{run:?}: {out:?}")),
            }
        }
    }
}

/// The issue's acceptance test, see the module docs. Proves: every one of
/// 20 sessions (curl PASV with the 227 address, curl EPSV, ftplib PASV)
/// through HAProxy gets its file intact; both ftpgate instances served
/// sessions and both backends were used; every data connection reached the
/// instance owning its session (no instance logged a refused data
/// connection or a refused PROXY connection, and no refusal metric moved);
/// and the instances' logs name the clients HAProxy relayed (curl's source
/// addresses 127.0.0.1xx), not HAProxy's own address.
#[test]
fn scaleout_haproxy_two_ftpgates_two_vsftpd() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "scaleout_haproxy_two_ftpgates_two_vsftpd",
    ) {
        return;
    }
    let Some(haproxy) = haproxy_binary() else {
        println!(
            "SKIP scaleout_haproxy_two_ftpgates_two_vsftpd: haproxy not installed; run scripts/install-test-deps.sh"
        );
        return;
    };
    let started = Instant::now();
    let files = [backend_file(1), backend_file(2)];
    let v1 = FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "who.txt", &files[0]);
    });
    let v2 = FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "who.txt", &files[1]);
    });
    let backends = [v1.addr, v2.addr];
    let shas = [sha_hex(&files[0]), sha_hex(&files[1])];

    // Ports: retried as a whole when one was taken between check and bind.
    let mut setup = None;
    let mut last_err = String::new();
    for _ in 0..5 {
        let (r0, r1) = free_range_on(&[FRONT, IP_A, IP_B], 2 * RANGE_LEN);
        let range_a = (r0, r0 + RANGE_LEN - 1);
        let range_b = (r0 + RANGE_LEN, r1);
        let all = [FRONT, IP_A, IP_B];
        let ctl = port_free_on_all(&all);
        let (pa, plain_a, admin_a) = (
            port_free_on_all(&all),
            port_free_on_all(&all),
            port_free_on_all(&all),
        );
        let (pb, plain_b, admin_b) = (
            port_free_on_all(&all),
            port_free_on_all(&all),
            port_free_on_all(&all),
        );
        let a = Ftpgate::start(&ftpgate_config(
            IP_A, plain_a, pa, range_a, admin_a, &backends,
        ));
        let b = Ftpgate::start(&ftpgate_config(
            IP_B,
            plain_b,
            pb,
            range_b,
            admin_b,
            &[backends[1], backends[0]],
        ));
        match (a, b) {
            (Ok(a), Ok(b)) => {
                setup = Some((
                    a,
                    b,
                    ctl,
                    (pa, range_a),
                    (pb, range_b),
                    SocketAddr::from((IP_A, admin_a)),
                    SocketAddr::from((IP_B, admin_b)),
                ));
                break;
            }
            (a, b) => {
                last_err = format!("{:?} / {:?}", a.err(), b.err());
                if !(last_err.contains("not available") || last_err.contains("cannot listen")) {
                    panic!("ftpgate failed to start: {last_err}");
                }
            }
        }
    }
    let (gate_a, gate_b, ctl, a, b, admin_a, admin_b) =
        setup.unwrap_or_else(|| panic!("no free ports for two ftpgates: {last_err}"));

    let dir = tempfile::Builder::new()
        .prefix("ftpgate-haproxy-")
        .tempdir()
        .expect("tempdir");
    let config = haproxy_config(ctl, a, b);
    let mut binds = vec![SocketAddr::from((FRONT, ctl))];
    for p in (a.1 .0..=a.1 .1).chain(b.1 .0..=b.1 .1) {
        binds.push(SocketAddr::from((FRONT, p)));
    }
    let hap = Haproxy::start(&haproxy, dir.path(), &config, &binds);
    println!("HAProxy config:\n{config}");

    // 20 sessions, 4 at a time: 7 curl PASV, 7 curl EPSV, 6 ftplib.
    let target = Arc::new(Target::new(
        &FRONT.to_string(),
        ctl,
        peers::VSFTPD_USER,
        peers::VSFTPD_PASS,
    ));
    let runs: Vec<Run> = (0..20u8)
        .map(|i| match i % 3 {
            0 => Run::CurlPasv(Ipv4Addr::new(127, 0, 0, 100 + i)),
            1 => Run::CurlEpsv(Ipv4Addr::new(127, 0, 0, 100 + i)),
            _ => Run::Ftplib,
        })
        .collect();
    let results: Vec<(Run, Result<String, String>)> = runs
        .chunks(4)
        .flat_map(|batch| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&run| {
                    let t = Arc::clone(&target);
                    std::thread::spawn(move || (run, fetch(&t, run)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        started.elapsed() < RUN_TIMEOUT,
        "the scale-out run took {:?}",
        started.elapsed()
    );

    // Every session ends (and logs) shortly after its client quits.
    let ended = |l: &str| session_lines(l).len();
    let log_a = gate_a.wait_log(Duration::from_secs(10), |l| {
        ended(l) + ended(&gate_b.log()) >= 20
    });
    let log_b = gate_b.log();
    let diag = || {
        format!(
            "--- ftpgate A log ---\n{log_a}\n--- ftpgate B log ---\n{log_b}\n--- haproxy log ---\n{}",
            hap.log()
        )
    };

    let failures: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().cloned())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 20 sessions failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        diag()
    );
    let mut per_backend = [0usize; 2];
    for (run, r) in &results {
        let sha = r.as_ref().unwrap();
        let i = shas
            .iter()
            .position(|s| s == sha)
            .unwrap_or_else(|| panic!("{run:?} got content of neither backend (sha {sha})"));
        per_backend[i] += 1;
    }
    assert!(
        per_backend.iter().all(|&n| n > 0),
        "both backends must serve sessions: {per_backend:?}"
    );

    // Both instances served sessions, 20 in all, each with its one transfer.
    let (sa, sb) = (session_lines(&log_a), session_lines(&log_b));
    assert!(
        !sa.is_empty() && !sb.is_empty(),
        "both ftpgates must serve sessions (A {}, B {})\n{}",
        sa.len(),
        sb.len(),
        diag()
    );
    assert_eq!(sa.len() + sb.len(), 20, "session closed lines\n{}", diag());
    for l in sa.iter().chain(&sb) {
        assert!(
            l.contains("transfers=1"),
            "a session without its transfer: {l}"
        );
    }
    // The logs count sessions per backend as the contents do.
    for (i, backend) in backends.iter().enumerate() {
        let n = sa
            .iter()
            .chain(&sb)
            .filter(|l| l.contains(&format!("backend={backend}")))
            .count();
        assert_eq!(
            n,
            per_backend[i],
            "sessions logged for backend {backend} vs files received from it\n{}",
            diag()
        );
    }
    // The client each instance logs is the one HAProxy relayed: curl's
    // source addresses appear, HAProxy's own connections do not show up as
    // clients 127.0.0.2 / 127.0.0.3 or on the ftpgates' own addresses.
    for run in &runs {
        if let Run::CurlPasv(src) | Run::CurlEpsv(src) = run {
            let needle = format!("client={src}:");
            assert!(
                sa.iter().chain(&sb).filter(|l| l.contains(&needle)).count() == 1,
                "one session logged for curl from {src}\n{}",
                diag()
            );
        }
    }
    // No data connection reached the wrong instance, no PROXY refusal.
    for (name, log) in [("A", &log_a), ("B", &log_b)] {
        assert!(
            !log.contains("refused data connection"),
            "ftpgate {name} refused a data connection\n{}",
            diag()
        );
        assert!(
            !log.contains("PROXY protocol listener"),
            "ftpgate {name} closed a connection on its PROXY listener\n{}",
            diag()
        );
    }
    let (ma, mb) = (scrape(admin_a), scrape(admin_b));
    for (name, m) in [("A", &ma), ("B", &mb)] {
        assert_eq!(
            metric(m, "ftpgate_data_connections_refused_total", &[]),
            0.0,
            "ftpgate {name} metrics:\n{m}"
        );
        assert_eq!(
            metric(m, "ftpgate_sessions_total", &[("outcome", "proxy_refused")]),
            0.0,
            "ftpgate {name} metrics:\n{m}"
        );
    }
    let complete = |m: &str| {
        metric(
            m,
            "ftpgate_transfers_total",
            &[("direction", "download"), ("outcome", "complete")],
        )
    };
    assert_eq!(
        complete(&ma) + complete(&mb),
        20.0,
        "completed downloads A {} + B {}",
        complete(&ma),
        complete(&mb)
    );
    println!(
        "scaleout: sessions A {} B {}; files from backend 1: {}, backend 2: {}",
        sa.len(),
        sb.len(),
        per_backend[0],
        per_backend[1]
    );
    drop(hap);
}
