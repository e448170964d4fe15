//! Operations tests through the real binary: SIGHUP reload, SIGTERM drain, switching user, startup errors.
//!
//! Each test starts `ftpgate --config FILE` (the file names its listener,
//! passive range and admin listener on free loopback ports), drives it with
//! real clients against real vsftpd servers, and signals it by PID. Every
//! wait is bounded; a process still running when its test ends is killed by
//! PID.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::clients::{self, Mode, Output, Target};
use crate::peers::{self, FtpServer, ServerKind};

/// How long a start, a `check` or a failing start may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

fn ftpgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
    // RUST_LOG would override the log level and change what the tests read.
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs ftpgate to completion with `args`.
fn run(args: &[&str]) -> Output {
    let mut cmd = ftpgate();
    cmd.args(args);
    clients::run(cmd, None, RUN_TIMEOUT)
}

/// `count` consecutive ports on 127.0.0.1 that were free a moment ago.
fn free_range(count: u16) -> (u16, u16) {
    loop {
        let base: u16 = rand::thread_rng().gen_range(30_000..40_000);
        if (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return (base, base + count - 1);
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// ftplib body: RETR big.bin read at 2 MB/s; prints the byte count and the
/// SHA-256. It closes without QUIT: a draining ftpgate ends the idle
/// session with 421 right after the transfer's 226.
const PACED_RETR: &str = r#"
import time
RATE = 2 * 1024 * 1024
h = hashlib.sha256()
n = [0]
t0 = time.monotonic()
def got(b):
    h.update(b)
    n[0] += len(b)
    late = t0 + n[0] / RATE - time.monotonic()
    if late > 0:
        time.sleep(late)
ftp.voidcmd('TYPE I')
ftp.retrbinary('RETR big.bin', got)
print(n[0], h.hexdigest())
ftp.close()
"#;

/// The ports one ftpgate uses, named in its config file.
#[derive(Debug, Clone, Copy)]
struct Ports {
    listen: SocketAddr,
    passive: (u16, u16),
    admin: SocketAddr,
}

impl Ports {
    fn fresh() -> Ports {
        Ports {
            listen: local(peers::free_port()),
            passive: free_range(10),
            admin: local(peers::free_port()),
        }
    }
}

/// A config file for `p` and `backends`, `extra` lines appended. Lines:
/// 1 listen, 2 backends, 3 passive_ports, 4 admin_listen, 5 health_check,
/// then `extra`.
fn config_text(p: &Ports, backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "listen = [\"{}\"]\n\
         backends = [{}]\n\
         passive_ports = \"{}-{}\"\n\
         admin_listen = \"{}\"\n\
         health_check = false\n\
         {extra}",
        p.listen,
        list.join(", "),
        p.passive.0,
        p.passive.1,
        p.admin,
    )
}

/// An ftpgate serving from a config file; killed by PID on drop if still running.
struct Gate {
    child: Child,
    ports: Ports,
    config: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gate {
    /// Writes `text` as the config file, starts `ftpgate --config FILE
    /// args...` and waits for its "ftpgate listening" line.
    fn try_start(ports: Ports, text: &str, args: &[&str]) -> Result<Gate, String> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ftpgate.toml");
        fs::write(&config, text).unwrap();
        let stderr = dir.path().join("stderr.log");
        let child = ftpgate()
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn ftpgate");
        let mut gate = Gate {
            child,
            ports,
            config,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            if gate.log().contains("ftpgate listening") {
                return Ok(gate);
            }
            if let Ok(Some(st)) = gate.child.try_wait() {
                return Err(format!("exit status {:?}, log:\n{}", st.code(), gate.log()));
            }
            assert!(
                Instant::now() < deadline,
                "ftpgate did not start: {}",
                gate.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts with fresh free ports and the file `make(ports)`, retrying
    /// when a port was taken between the check and the bind.
    fn start(make: impl Fn(&Ports) -> String, args: &[&str]) -> Gate {
        let mut last = None;
        for _ in 0..5 {
            let ports = Ports::fresh();
            match Gate::try_start(ports, &make(&ports), args) {
                Ok(g) => return g,
                Err(f) if f.contains("passive port") || f.contains("cannot listen") => {
                    last = Some(f)
                }
                Err(f) => panic!("ftpgate failed to start: {f}"),
            }
        }
        panic!("no free ports for ftpgate: {last:?}");
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the config file (the next SIGHUP reads it).
    fn rewrite(&self, text: &str) {
        fs::write(&self.config, text).unwrap();
    }

    /// Sends `sig` ("HUP", "TERM", "INT") to the process, by PID.
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits until `what` occurs at least `count` times in the log.
    fn wait_log(&self, what: &str, count: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.matches(what).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {count}x {what:?} in the log within {within:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit code once the process exits within `within`; `Err` with the
    /// log if it is still running then.
    fn wait_exit(&mut self, within: Duration) -> Result<Option<i32>, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Ok(st.code());
            }
            if Instant::now() >= deadline {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET `path` from the admin listener.
    fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.ports.admin, path)
    }

    /// The value of the metric line starting with `series ` (0 if absent).
    fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        metric_value(&body, series).unwrap_or(0.0)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`; the status and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the Prometheus line `series VALUE`.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

const RELOAD_OK: &str = "configuration reloaded; running sessions keep their settings";
const RELOADS_OK: &str = "ftpgate_config_reloads_total{result=\"success\"}";
const RELOADS_FAILED: &str = "ftpgate_config_reloads_total{result=\"failure\"}";
const BYTES_DOWN: &str = "ftpgate_transfer_bytes_total{direction=\"download\"}";
const CLOSING_421: &str = "421 Service closing control connection.";

/// vsftpd serving `files`.
fn vsftpd(files: &[(&str, &[u8])]) -> FtpServer {
    FtpServer::start_with(ServerKind::Vsftpd, |root| {
        for (name, body) in files {
            peers::put_file(root, name, body);
        }
    })
}

/// A suppaftp session through `addr`, logged in to `srv`, binary type.
fn suppa(addr: SocketAddr, srv: &FtpServer) -> suppaftp::FtpStream {
    let mut ftp = suppaftp::FtpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
    ftp.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ftp.login(srv.user.as_str(), srv.pass.as_str())
        .unwrap_or_else(|e| panic!("login: {e}"));
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .unwrap();
    ftp
}

fn get(ftp: &mut suppaftp::FtpStream, name: &str) -> Vec<u8> {
    ftp.retr_as_buffer(name)
        .unwrap_or_else(|e| panic!("RETR {name}: {e}"))
        .into_inner()
}

/// A hand-driven FTP control connection.
struct Ctl {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

impl Ctl {
    /// Connects and reads the 220 greeting.
    fn connect(addr: SocketAddr) -> Ctl {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Ctl {
            rd: BufReader::new(s.try_clone().unwrap()),
            wr: s,
        };
        let hello = c.reply().expect("greeting");
        assert!(hello.starts_with("220"), "greeting: {hello:?}");
        c
    }

    fn timeout(&self, t: Duration) {
        self.wr.set_read_timeout(Some(t)).unwrap();
    }

    /// One whole reply (multi-line aware); "" at end of stream.
    fn reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        let mut line = String::new();
        if self.rd.read_line(&mut line)? == 0 {
            return Ok(all);
        }
        all.push_str(&line);
        if line.len() >= 4 && line.as_bytes()[3] == b'-' {
            let end = format!("{} ", &line[..3]);
            loop {
                line.clear();
                if self.rd.read_line(&mut line)? == 0 || line.starts_with(&end) {
                    all.push_str(&line);
                    break;
                }
                all.push_str(&line);
            }
        }
        Ok(all)
    }

    fn send(&mut self, cmd: &str) {
        self.wr
            .write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {cmd}: {e}"));
    }

    /// Sends `cmd`, returns the reply, which must start with `code`.
    fn cmd(&mut self, cmd: &str, code: &str) -> String {
        self.send(cmd);
        let r = self
            .reply()
            .unwrap_or_else(|e| panic!("reply to {cmd}: {e}"));
        assert!(r.starts_with(code), "{cmd}: {r:?}");
        r
    }

    fn login(&mut self, srv: &FtpServer) {
        self.cmd(&format!("USER {}", srv.user), "331");
        self.cmd(&format!("PASS {}", srv.pass), "230");
    }

    /// PASV, the data address from the 227.
    fn pasv(&mut self) -> SocketAddr {
        let r = self.cmd("PASV", "227");
        let inner = r
            .split_once('(')
            .and_then(|(_, x)| x.split_once(')'))
            .map(|(x, _)| x)
            .unwrap_or_else(|| panic!("227 without (h,h,h,h,p,p): {r:?}"));
        let n: Vec<u16> = inner
            .split(',')
            .map(|x| x.trim().parse().unwrap())
            .collect();
        assert_eq!(n.len(), 6, "{r:?}");
        SocketAddr::from((
            [n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8],
            n[4] * 256 + n[5],
        ))
    }

    /// Starts `RETR name` in passive mode and reads its first 64 KiB, then
    /// stops reading: the transfer stays in flight (held back by TCP flow
    /// control) until the returned data connection is read or dropped.
    fn start_slow_retr(&mut self, name: &str) -> TcpStream {
        self.cmd("TYPE I", "200");
        let addr = self.pasv();
        let mut data = TcpStream::connect(addr).unwrap_or_else(|e| panic!("data {addr}: {e}"));
        data.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        self.cmd(&format!("RETR {name}"), "150");
        let mut first = vec![0u8; 64 * 1024];
        data.read_exact(&mut first).expect("first data bytes");
        data
    }
}

/// Larger than every buffer between vsftpd and a client that stops reading
/// (kernel socket buffers on both legs plus ftpgate's relay buffer).
const STALLED_FILE_LEN: usize = 48 * 1024 * 1024;

// === SIGHUP: reload ===

#[test]
fn ops_cli_sighup_swaps_backends_for_new_sessions_only() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "ops_cli_sighup_swaps_backends_for_new_sessions_only",
    ) {
        return;
    }
    let a = vsftpd(&[("who.txt", b"A")]);
    let b = vsftpd(&[("who.txt", b"B")]);
    // passive_ports comes from a flag as well: a reload must apply the flags
    // over the file again, so the file's other range below changes nothing.
    let passive = free_range(10);
    let passive_flag = format!("{}-{}", passive.0, passive.1);
    let gate = Gate::start(
        |p| config_text(p, &[a.addr], ""),
        &["--passive-ports", &passive_flag],
    );
    let mut old = suppa(gate.ports.listen, &a);
    assert_eq!(get(&mut old, "who.txt"), b"A", "before the reload");

    let other = Ports {
        passive: (passive.0 + 100, passive.1 + 100),
        ..gate.ports
    };
    gate.rewrite(&config_text(&other, &[b.addr], ""));
    gate.signal("HUP");
    let log = gate.wait_log(RELOAD_OK, 1, Duration::from_secs(10));

    // The running session keeps its backend, and can still open data connections.
    assert_eq!(
        get(&mut old, "who.txt"),
        b"A",
        "the session opened before the reload\n{}",
        gate.log()
    );
    // New sessions go to the new backend only.
    for i in 0..2 {
        let mut new = suppa(gate.ports.listen, &b);
        assert_eq!(
            get(&mut new, "who.txt"),
            b"B",
            "new session {i} after the reload\n{}",
            gate.log()
        );
        new.quit().unwrap();
    }
    old.quit().unwrap();

    let line = log
        .lines()
        .find(|l| l.contains(RELOAD_OK))
        .expect("reload line");
    assert!(
        line.contains(&format!("added=[\"{}\"]", b.addr))
            && line.contains(&format!("removed=[\"{}\"]", a.addr)),
        "the reload line should name the added and removed backends: {line}"
    );
    assert!(
        !log.contains("needs a restart"),
        "only backends changed (the flag overrides the file's passive_ports):\n{log}"
    );
    assert_eq!(gate.metric(RELOADS_OK), 1.0, "{}", gate.log());
    assert_eq!(gate.metric(RELOADS_FAILED), 0.0);
}

#[test]
fn ops_cli_sighup_rejects_an_invalid_file_and_keeps_restart_only_settings() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "ops_cli_sighup_rejects_an_invalid_file_and_keeps_restart_only_settings",
    ) {
        return;
    }
    let a = vsftpd(&[("who.txt", b"A")]);
    let b = vsftpd(&[("who.txt", b"B")]);
    let gate = Gate::start(|p| config_text(p, &[a.addr], ""), &[]);
    let t = Target::for_server(&a).via(gate.ports.listen);

    // Line 3 is passive_ports.
    let good = config_text(&gate.ports, &[a.addr], "");
    let bad = good.replace(
        &format!(
            "passive_ports = \"{}-{}\"",
            gate.ports.passive.0, gate.ports.passive.1
        ),
        "passive_ports = \"9-1\"",
    );
    assert_ne!(good, bad);
    assert!(bad.lines().nth(2).unwrap().starts_with("passive_ports"));
    gate.rewrite(&bad);
    gate.signal("HUP");
    let want = format!(
        "reload rejected, keeping the running configuration: {}:3: passive_ports",
        gate.config.display()
    );
    let log = gate.wait_log(&want, 1, Duration::from_secs(10));
    assert!(!log.contains(RELOAD_OK), "{log}");
    let out = clients::curl_get(&t, "who.txt", Mode::Epsv);
    assert!(
        out.ok && out.stdout == b"A",
        "a new session after the rejected reload: {out:?}\n{}",
        gate.log()
    );
    assert_eq!(gate.metric(RELOADS_FAILED), 1.0, "{}", gate.log());
    assert_eq!(gate.metric(RELOADS_OK), 0.0);

    // A valid file that moves the listener (restart only) and the backend
    // (reloadable): the backend changes, the listener stays.
    let moved = Ports {
        listen: local(peers::free_port()),
        ..gate.ports
    };
    gate.rewrite(&config_text(&moved, &[b.addr], ""));
    gate.signal("HUP");
    let log = gate.wait_log(RELOAD_OK, 1, Duration::from_secs(10));
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reload: this setting changed but needs a restart"))
        .collect();
    assert_eq!(warnings.len(), 1, "one restart-only change:\n{log}");
    assert!(
        warnings[0].contains("setting=\"listen\"") || warnings[0].contains("setting=listen"),
        "the warning should name `listen`: {}",
        warnings[0]
    );
    let out = clients::curl_get(&t, "who.txt", Mode::Epsv);
    assert!(
        out.ok && out.stdout == b"B",
        "the old listener serves, with the reloaded backend: {out:?}\n{}",
        gate.log()
    );
    let refused = TcpStream::connect_timeout(&moved.listen, Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "nothing should listen on the new address {} before a restart",
        moved.listen
    );
    assert_eq!(gate.metric(RELOADS_OK), 1.0, "{}", gate.log());
    assert_eq!(gate.metric(RELOADS_FAILED), 1.0);

    // The running value is still the old one: the same file warns again.
    gate.signal("HUP");
    let log = gate.wait_log(RELOAD_OK, 2, Duration::from_secs(10));
    assert_eq!(
        log.matches("reload: this setting changed but needs a restart")
            .count(),
        2,
        "a second reload of the moved listener should warn again:\n{log}"
    );
    assert_eq!(gate.metric(RELOADS_OK), 2.0);
}

// === SIGTERM: drain ===

#[test]
fn ops_cli_sigterm_lets_a_running_transfer_finish() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "ops_cli_sigterm_lets_a_running_transfer_finish",
    ) {
        return;
    }
    let data = peers::random_bytes(6 * 1024 * 1024, 0xd7a1);
    let srv = vsftpd(&[("big.bin", &data)]);
    let mut gate = Gate::start(|p| config_text(p, &[srv.addr], ""), &[]);
    let t = Target::for_server(&srv).via(gate.ports.listen);

    // An idle, logged-in session.
    let mut idle = Ctl::connect(gate.ports.listen);
    idle.login(&srv);

    // A download read at 2 MB/s: about 3 s. (curl 7.88's --limit-rate is
    // not kept on FTP downloads: 6 MB arrived in 0.03 s at 1M.)
    let started = Instant::now();
    let client = {
        let t = t.clone();
        std::thread::spawn(move || clients::ftplib(&t, PACED_RETR))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate.metric(BYTES_DOWN) == 0.0 {
        assert!(
            Instant::now() < deadline && !client.is_finished(),
            "the download did not start:\n{}",
            gate.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let signalled = Instant::now();
    gate.signal("TERM");
    // The idle session is told at once.
    idle.timeout(Duration::from_secs(10));
    let r = idle.reply().expect("a reply to the idle session");
    let idle_closed = signalled.elapsed();
    assert!(
        r.starts_with(CLOSING_421),
        "idle session on SIGTERM: {r:?}\n{}",
        gate.log()
    );
    assert!(
        idle_closed < Duration::from_millis(1500) && !client.is_finished(),
        "the idle session should get its 421 well before the transfer ends ({idle_closed:?})"
    );
    assert_eq!(idle.reply().unwrap(), "", "closed after the 421");

    // No new sessions, and not ready, while the transfer drains.
    gate.wait_log("shutting down: no new sessions", 1, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(gate.ports.listen) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => assert!(
                Instant::now() < deadline,
                "a new connection after SIGTERM: {other:?}\n{}",
                gate.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = gate.admin_get("/readyz");
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert!(
        !client.is_finished() && gate.running(),
        "the transfer and the process should still run:\n{}",
        gate.log()
    );

    let out = client.join().unwrap();
    let transfer_took = started.elapsed();
    assert!(out.ok, "ftplib across SIGTERM: {out:?}\n{}", gate.log());
    let want = format!("{} {}", data.len(), hex(&sha256(&data)));
    assert_eq!(
        out.stdout_str().trim(),
        want,
        "ftplib's byte count and SHA-256 of what it received"
    );
    assert!(
        transfer_took > Duration::from_millis(2500),
        "the pacing should make the download take about 3 s, not {transfer_took:?}"
    );
    let status = gate
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|log| panic!("ftpgate still runs after the transfer:\n{log}"));
    assert_eq!(status, Some(0), "{}", gate.log());
    let log = gate.log();
    assert!(log.contains("ftpgate stopped"), "{log}");
    assert!(!log.contains("drain timeout reached"), "{log}");
}

#[test]
fn ops_cli_sigint_drain_timeout_closes_a_long_transfer_with_421() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "ops_cli_sigint_drain_timeout_closes_a_long_transfer_with_421",
    ) {
        return;
    }
    let data = peers::random_bytes(STALLED_FILE_LEN, 0x1005);
    let srv = vsftpd(&[("big.bin", &data)]);
    let mut gate = Gate::start(
        |p| config_text(p, &[srv.addr], "shutdown_drain_timeout = \"1s\"\n"),
        &[],
    );
    let mut ctl = Ctl::connect(gate.ports.listen);
    ctl.login(&srv);
    let mut stalled = ctl.start_slow_retr("big.bin");

    let signalled = Instant::now();
    gate.signal("INT");
    ctl.timeout(Duration::from_secs(10));
    let mut r = ctl.reply().expect("a reply after the drain timeout");
    // Cutting the data legs can make the server's own failure reply for the
    // transfer (vsftpd: 426) reach the client just before ftpgate's 421.
    if r.starts_with("426") || r.starts_with("451") {
        r = ctl
            .reply()
            .expect("the 421 after the transfer's failure reply");
    }
    let waited = signalled.elapsed();
    assert!(
        r.starts_with(CLOSING_421),
        "the transfer's session after the drain timeout: {r:?}\n{}",
        gate.log()
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "the 421 should come after the 1 s drain timeout, not after {waited:?}\n{}",
        gate.log()
    );
    let status = gate
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|log| panic!("ftpgate still runs after the drain timeout:\n{log}"));
    assert_eq!(status, Some(0), "{}", gate.log());
    // The data connection was cut short.
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(
        64 * 1024 + rest.len() < data.len(),
        "the whole file arrived: the transfer was not in flight"
    );
    let log = gate.log();
    assert!(
        log.contains("drain timeout reached; closing the remaining sessions with 421"),
        "{log}"
    );
    assert!(log.contains("ftpgate stopped"), "{log}");
}

#[test]
fn ops_cli_second_sigterm_stops_at_once() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "ops_cli_second_sigterm_stops_at_once") {
        return;
    }
    let data = peers::random_bytes(STALLED_FILE_LEN, 0x2005);
    let srv = vsftpd(&[("big.bin", &data)]);
    // The default drain timeout (30 s) would outlast this test.
    let mut gate = Gate::start(|p| config_text(p, &[srv.addr], ""), &[]);
    let mut ctl = Ctl::connect(gate.ports.listen);
    ctl.login(&srv);
    let _stalled = ctl.start_slow_retr("big.bin");

    gate.signal("TERM");
    gate.wait_log("shutting down: no new sessions", 1, Duration::from_secs(5));
    // Draining: the session with a transfer in flight stays open.
    ctl.timeout(Duration::from_millis(700));
    let early = ctl.reply();
    assert!(
        early.is_err(),
        "the transfer's session got {early:?} during the drain\n{}",
        gate.log()
    );
    assert!(gate.running(), "exited during the drain:\n{}", gate.log());

    let second = Instant::now();
    gate.signal("TERM");
    ctl.timeout(Duration::from_secs(10));
    let mut r = ctl.reply().expect("a reply after the second signal");
    if r.starts_with("426") || r.starts_with("451") {
        r = ctl
            .reply()
            .expect("the 421 after the transfer's failure reply");
    }
    assert!(
        r.starts_with(CLOSING_421),
        "after the second SIGTERM: {r:?}\n{}",
        gate.log()
    );
    let status = gate
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|log| panic!("ftpgate still runs after a second SIGTERM:\n{log}"));
    let took = second.elapsed();
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    assert_eq!(status, Some(0), "{}", gate.log());
    let log = gate.log();
    assert!(log.contains("second signal"), "{log}");
    assert!(!log.contains("drain timeout reached"), "{log}");
}

// === user ===

/// The numbers of a `/proc/PID/status` line such as `Uid:`.
fn proc_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

#[test]
fn ops_cli_user_nobody_drops_privileges_and_serves() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "ops_cli_user_nobody_drops_privileges_and_serves",
    ) {
        return;
    }
    if !is_root() {
        println!("SKIP ops_cli_user_nobody_drops_privileges_and_serves: not root");
        return;
    }
    let data = peers::random_bytes(300_000, 0x0b0d);
    let srv = vsftpd(&[("f.bin", &data)]);
    let gate = Gate::start(|p| config_text(p, &[srv.addr], "user = \"nobody\"\n"), &[]);
    let log = gate.wait_log(
        "switched to an unprivileged user",
        1,
        Duration::from_secs(5),
    );
    let line = log
        .lines()
        .find(|l| l.contains("switched to an unprivileged user"))
        .unwrap();
    assert!(
        line.contains("uid=65534") && line.contains("gid=65534"),
        "{line}"
    );
    assert_eq!(
        proc_ids(gate.pid(), "Uid:"),
        [65534; 4],
        "real, effective, saved, fs uid"
    );
    assert_eq!(
        proc_ids(gate.pid(), "Gid:"),
        [65534; 4],
        "real, effective, saved, fs gid"
    );
    assert_eq!(
        proc_ids(gate.pid(), "Groups:"),
        [65534],
        "supplementary groups"
    );
    // Every thread, not only the main one.
    for task in fs::read_dir(format!("/proc/{}/task", gate.pid())).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        assert_eq!(proc_ids(tid, "Uid:"), [65534; 4], "thread {tid}");
    }
    let t = Target::for_server(&srv).via(gate.ports.listen);
    for mode in [Mode::Epsv, Mode::Port] {
        let out = clients::curl_get(&t, "f.bin", mode);
        assert!(
            out.ok && out.stdout == data,
            "download {mode:?} as nobody: {out:?}\n{}",
            gate.log()
        );
    }
    let (status, body) = gate.admin_get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

fn is_root() -> bool {
    proc_ids(std::process::id(), "Uid:")[1] == 0
}

#[test]
fn ops_cli_user_config_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = Ports::fresh();
    let base = config_text(&p, &[local(21)], "");
    let cases = [
        (
            "no_user.toml",
            format!("{base}user = \"no-such-user-xyz\"\n"),
            ":6: user: no such user `no-such-user-xyz`",
        ),
        (
            "port20.toml",
            format!("{base}active_source_port_20 = true\nuser = \"nobody\"\n"),
            ":7: user: active_source_port_20",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        fs::write(&path, &text).unwrap();
        let path = path.to_str().unwrap();
        let want = format!("{path}{want}");
        for args in [vec!["check", "--config", path], vec!["--config", path]] {
            let out = run(&args);
            assert_eq!(out.status, Some(2), "{args:?}: {out:?}");
            assert!(
                out.stderr.contains(&want),
                "{args:?}: stderr should contain {want:?}: {out:?}"
            );
            assert!(!out.stderr.contains("ftpgate listening"), "{out:?}");
        }
    }
    // The same through flags: the flag is named.
    let out = run(&[
        "check",
        "--listen",
        "127.0.0.1:2121",
        "--backend",
        "127.0.0.1:21",
        "--user",
        "no-such-user-xyz",
    ]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("flag --user: user: no such user"),
        "{out:?}"
    );
}

// === start-up errors and check ===

#[test]
fn ops_cli_admin_port_taken_is_a_startup_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap();
    let p = Ports {
        admin,
        ..Ports::fresh()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.toml");
    fs::write(&path, config_text(&p, &[local(21)], "")).unwrap();
    let out = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "cannot listen on {admin} (setting `admin_listen`)"
        )),
        "{out:?}"
    );
    assert!(!out.stderr.contains("ftpgate listening"), "{out:?}");
    drop(taken);
}

#[test]
fn ops_cli_xferlog_in_missing_directory_is_a_startup_error() {
    let p = Ports::fresh();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xferlog.toml");
    fs::write(
        &path,
        config_text(
            &p,
            &[local(21)],
            "xferlog = \"/nonexistent-dir-ftpgate/x.log\"\n",
        ),
    )
    .unwrap();
    let out = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "cannot open the transfer log /nonexistent-dir-ftpgate/x.log (setting `xferlog`)"
        ),
        "{out:?}"
    );
    assert!(!out.stderr.contains("ftpgate listening"), "{out:?}");
    assert!(!Path::new("/nonexistent-dir-ftpgate").exists());
}

#[test]
fn ops_cli_check_prints_every_operations_key() {
    let dir = tempfile::tempdir().unwrap();
    let xferlog = dir.path().join("xfer.log");
    // Every key added for operations, each away from its default, written
    // as `check` prints it.
    let keys = format!(
        "admin_listen = \"127.0.0.1:9121\"\n\
         xferlog = \"{}\"\n\
         shutdown_drain_timeout = \"45s\"\n\
         greeting_timeout = \"7s\"\n\
         max_sessions = 77\n\
         max_sessions_per_client = 6\n\
         max_connection_rate_per_client = 9\n\
         login_failures_before_delay = 4\n\
         login_failure_delay = \"1500ms\"\n\
         max_login_failures = 5\n\
         health_check = false\n\
         health_check_interval = \"11s\"\n\
         health_check_timeout = \"3s\"\n\
         health_check_rise = 4\n\
         health_check_fall = 5\n\
         user = \"nobody\"\n\
         group = \"nogroup\"\n",
        xferlog.display()
    );
    let text = format!("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n{keys}");
    let path = dir.path().join("ops.toml");
    fs::write(&path, &text).unwrap();
    let out = run(&["check", "--config", path.to_str().unwrap()]);
    out.assert_ok("check with every operations key");
    let printed = out.stdout_str();
    for want in keys.lines() {
        assert!(
            printed.lines().any(|l| l == want),
            "missing {want:?} in:\n{printed}"
        );
    }
    assert!(!xferlog.exists(), "check must not open the transfer log");
    // What check prints is itself a valid file with the same meaning.
    let again = dir.path().join("again.toml");
    fs::write(&again, &printed).unwrap();
    let out2 = run(&["check", "--config", again.to_str().unwrap()]);
    out2.assert_ok("check of the printed config");
    assert_eq!(out2.stdout_str(), printed);

    // Unset, the optional ones are shown as such, and the defaults are printed.
    let out = run(&[
        "check",
        "--listen",
        "127.0.0.1:2121",
        "--backend",
        "127.0.0.1:21",
    ]);
    out.assert_ok("check with defaults");
    let printed = out.stdout_str();
    for want in [
        "# admin_listen is not set",
        "# xferlog is not set",
        "# user is not set",
        "# group is not set",
        "shutdown_drain_timeout = \"30s\"",
        "health_check = true",
        "health_check_interval = \"5s\"",
    ] {
        assert!(
            printed.lines().any(|l| l == want),
            "missing {want:?} in:\n{printed}"
        );
    }
}

// === xferlog and logrotate ===

/// Waits until `path` contains `what`; returns its text.
fn wait_file(path: &Path, what: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} has no {what:?} within {within:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ops_cli_sighup_reopens_the_xferlog_after_logrotate() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "ops_cli_sighup_reopens_the_xferlog_after_logrotate",
    ) {
        return;
    }
    let srv = vsftpd(&[("first.txt", b"one\n"), ("second.txt", b"two\n")]);
    let logs = tempfile::tempdir().unwrap();
    let xferlog = logs.path().join("xferlog");
    let rotated = logs.path().join("xferlog.1");
    let extra = format!("xferlog = \"{}\"\n", xferlog.display());
    let gate = Gate::start(|p| config_text(p, &[srv.addr], &extra), &[]);
    let t = Target::for_server(&srv).via(gate.ports.listen);

    let out = clients::curl_get(&t, "first.txt", Mode::Epsv);
    assert!(out.ok && out.stdout == b"one\n", "{out:?}");
    let first = wait_file(&xferlog, "first.txt", Duration::from_secs(5));
    assert_eq!(first.lines().count(), 1, "{first}");
    assert!(
        first.contains(" 4 first.txt b _ o a anonymous ftp 0 * c"),
        "{first}"
    );

    // logrotate: move the file away, then SIGHUP.
    fs::rename(&xferlog, &rotated).unwrap();
    gate.signal("HUP");
    gate.wait_log(RELOAD_OK, 1, Duration::from_secs(10));
    let out = clients::curl_get(&t, "second.txt", Mode::Epsv);
    assert!(out.ok && out.stdout == b"two\n", "{out:?}");
    let second = wait_file(&xferlog, "second.txt", Duration::from_secs(5));
    assert_eq!(second.lines().count(), 1, "only the new line: {second}");
    assert!(!second.contains("first.txt"), "{second}");
    assert_eq!(
        fs::read_to_string(&rotated).unwrap(),
        first,
        "the rotated file keeps only the old line"
    );
}
