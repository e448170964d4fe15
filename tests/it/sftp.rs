//! Plain TCP listeners (`[tcp.NAME]`) in front of real OpenSSH `sshd`
//! processes, checked with the real `sftp` client.
//!
//! Each test starts its own sshd instances as children on 127.0.0.1 free
//! ports, each with a generated host key, a generated config (key login
//! only, for the user running the tests; `internal-sftp -d` starting in the
//! instance's own directory) and a banner addendum naming it, so a download
//! of `who.txt` or the SSH banner read through ftpgate shows which backend a
//! connection reached. ftpgate runs in-process ([`Gate`], or
//! `gateway::start` next to FTP). With `FTPGATE_REQUIRE_PEERS=1` a missing
//! sshd or sftp fails the test instead of skipping it. Every wait is bounded.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ftpgate::config::{file::parse_str, validate};
use ftpgate::{Listeners, Server};
use tokio_util::sync::CancellationToken;

use crate::clients::{self, Mode, Output, Target};
use crate::gateway;
use crate::peers::{self, FtpServer, ServerKind};

const SSHD: &str = "/usr/sbin/sshd";
/// How long an sshd may take to answer with its banner.
const STARTUP: Duration = Duration::from_secs(15);
/// Hard limit of one sftp run.
const SFTP_TIMEOUT: Duration = Duration::from_secs(60);

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// Whether sshd, sftp and ssh-keygen are installed; with
/// `FTPGATE_REQUIRE_PEERS=1` their absence panics, otherwise `test` is
/// reported as skipped.
fn openssh_or_skip(test: &str) -> bool {
    let mut missing = Vec::new();
    if !Path::new(SSHD).is_file() {
        missing.push(SSHD.to_owned());
    }
    for c in ["sftp", "ssh-keygen"] {
        if which(c).is_none() {
            missing.push(c.to_owned());
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !peers::peers_required(),
        "FTPGATE_REQUIRE_PEERS=1 but OpenSSH is not usable: missing {}. Run scripts/install-test-deps.sh as root.",
        missing.join(", ")
    );
    println!(
        "SKIP {test}: OpenSSH not installed (missing {}); run scripts/install-test-deps.sh",
        missing.join(", ")
    );
    false
}

/// The user the tests run as (sshd without root can only log in that one).
fn login_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let out = Command::new("id").arg("-un").output().expect("id -un");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
    .clone()
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ftpgate-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

/// A client key pair for one test.
struct ClientKey {
    dir: tempfile::TempDir,
}

impl ClientKey {
    fn new() -> ClientKey {
        let dir = tempfile::Builder::new()
            .prefix("ftpgate-sftp-client-")
            .tempdir()
            .unwrap();
        keygen(&dir.path().join("id_ed25519"));
        ClientKey { dir }
    }

    fn private(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("id_ed25519.pub")
    }
}

/// Whether this sshd knows `PerSourcePenalties` (OpenSSH 9.8 and later).
/// Through a proxy every connection comes from ftpgate's address, and its
/// TCP-connect health checks look like clients that never authenticate, so
/// the penalties would soon lock ftpgate out; it is turned off where it exists.
fn sshd_has_penalties(dir: &Path, base: &str) -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let probe = dir.join("probe_config");
        fs::write(&probe, format!("{base}PerSourcePenalties no\n")).unwrap();
        Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&probe)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A running sshd serving `root/who.txt` (its name); dropped = killed.
struct Sshd {
    name: String,
    addr: SocketAddr,
    /// The directory an sftp session starts in.
    root: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts an sshd that lets `key` log in as [`login_user`].
    fn start(name: &str, key: &ClientKey) -> Sshd {
        // Privilege separation directory of Debian's sshd.
        if !Path::new("/run/sshd").is_dir() {
            let _ = fs::create_dir_all("/run/sshd");
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("ftpgate-sshd-{name}-"))
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("who.txt"), name).unwrap();
        let host_key = dir.path().join("host_ed25519");
        keygen(&host_key);
        let log = dir.path().join("sshd.log");
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = peers::free_port();
            let base = format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 AuthorizedKeysFile {auth}\n\
                 AllowUsers {user}\n\
                 MaxStartups 100\n\
                 LoginGraceTime 60\n\
                 VersionAddendum ftpgate-test-{name}\n\
                 Subsystem sftp internal-sftp -d {root}\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                pid = dir.path().join("sshd.pid").display(),
                auth = key.public().display(),
                user = login_user(),
                root = root.display(),
            );
            let mut config = base.clone();
            if sshd_has_penalties(dir.path(), &base) {
                config.push_str("PerSourcePenalties no\n");
            }
            let config_path = dir.path().join("sshd_config");
            fs::write(&config_path, config).unwrap();
            let logf = fs::File::create(&log).unwrap();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .expect("spawn sshd");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_banner(&mut child, addr, name) {
                Ok(()) => {
                    return Sshd {
                        name: name.to_owned(),
                        addr,
                        root,
                        child: Some(child),
                        log,
                        _dir: dir,
                    }
                }
                Err(why) => {
                    peers::kill_tree(&mut child);
                    last = format!(
                        "{why}\n--- sshd log ---\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                    // Only a port taken by someone else is worth another try.
                    if !why.contains("exited") && !why.contains("not ours") {
                        break;
                    }
                }
            }
        }
        panic!("sshd {name} did not start: {last}");
    }

    /// The name its banner carries.
    fn marker(&self) -> String {
        format!("ftpgate-test-{}", self.name)
    }

    /// Kills it (and its session processes).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            peers::kill_tree(&mut c);
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the SSH banner line from `s` (RFC 4253 4.2), within `timeout`.
fn read_banner(s: &TcpStream, timeout: Duration) -> std::io::Result<String> {
    s.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

/// Waits until `addr` answers with this sshd's banner.
fn wait_banner(child: &mut Child, addr: SocketAddr, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP;
    let marker = format!("ftpgate-test-{name}");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited during startup with {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!("no SSH banner on {addr} within {STARTUP:?}"));
        }
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            match read_banner(&s, Duration::from_secs(2)) {
                Ok(b) if b.contains(&marker) => return Ok(()),
                Ok(b) if b.starts_with("SSH-") => {
                    return Err(format!("banner not ours on {addr}: {b}"))
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An in-process ftpgate started from a whole config file's text, on its
/// own runtime thread; cancelled when dropped.
struct Gate {
    /// Bound plain TCP listeners with their `[tcp.NAME]`.
    tcp: Vec<(String, SocketAddr)>,
    server: Arc<Server>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Gate {
    fn start(text: &str) -> Gate {
        // RUST_LOG=ftpgate=debug cargo test ... shows the gateway's logs.
        static LOGS: std::sync::Once = std::sync::Once::new();
        LOGS.call_once(|| {
            if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_test_writer()
                    .try_init();
            }
        });
        let raw = parse_str(Path::new("sftp-test.toml"), text)
            .unwrap_or_else(|e| panic!("bad test config: {e}\n{text}"));
        let config =
            Arc::new(validate(&raw).unwrap_or_else(|e| panic!("invalid test config: {e}\n{text}")));
        let (tx, rx) = mpsc::channel();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let handle = rt.handle().clone();
            rt.block_on(async move {
                let listeners = match Listeners::bind(&config) {
                    Ok(l) => l,
                    Err(e) => return tx.send(Err(e.to_string())).unwrap(),
                };
                let tcp = listeners.tcp_addrs();
                let server = Server::start(config, listeners).await;
                tx.send(Ok((tcp, Arc::clone(&server), handle))).unwrap();
                stop.cancelled().await;
                server.shutdown(Duration::ZERO).await;
            });
        });
        let (tcp, server, runtime) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway started")
            .unwrap_or_else(|e| panic!("cannot start ftpgate: {e}"));
        Gate {
            tcp,
            server,
            runtime,
            cancel,
            thread: Some(thread),
        }
    }

    /// The first plain TCP listener.
    fn addr(&self) -> SocketAddr {
        self.tcp[0].1
    }

    fn metrics(&self) -> String {
        self.server.metrics().render()
    }

    /// Applies `text` as the new configuration (as SIGHUP does).
    fn reload(&self, text: &str) {
        let raw = parse_str(Path::new("sftp-test.toml"), text).unwrap();
        let config = validate(&raw).unwrap_or_else(|e| panic!("invalid reload: {e}"));
        self.runtime.block_on(self.server.reload(config));
    }

    /// Starts a graceful shutdown and returns at once.
    fn begin_shutdown(&self, drain: Duration) {
        let server = Arc::clone(&self.server);
        self.runtime
            .spawn(async move { server.shutdown(drain).await });
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A config with only a plain TCP listener in front of `backends` (policy
/// `policy`) and `extra` bare keys.
fn tcp_only(backends: &[SocketAddr], policy: &str, extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "{extra}\n[pool.ssh]\nbackends = [{}]\npolicy = \"{policy}\"\n\n[tcp.sftp]\nlisten = [\"127.0.0.1:0\"]\npool = \"ssh\"\n",
        list.join(", ")
    )
}

/// Fast health checks, so a killed sshd is marked down within a second.
const FAST_CHECKS: &str = "health_check_interval = \"200ms\"\nhealth_check_timeout = \"1s\"\nhealth_check_fall = 1\nhealth_check_rise = 1\n";

/// Runs `sftp -b` with `batch` through `addr`, in `cwd`.
fn sftp(key: &ClientKey, addr: SocketAddr, cwd: &Path, batch: &str) -> Output {
    let batch_file = cwd.join("batch.sftp");
    fs::write(&batch_file, batch).unwrap();
    let mut cmd = Command::new("sftp");
    cmd.current_dir(cwd)
        .arg("-b")
        .arg(&batch_file)
        .arg("-i")
        .arg(key.private())
        .arg("-P")
        .arg(addr.port().to_string())
        .args(["-F", "/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "IdentityAgent=none"])
        .args(["-o", "ConnectTimeout=10"])
        .args(["-o", "LogLevel=ERROR"])
        .arg(format!("{}@{}", login_user(), addr.ip()));
    clients::run(cmd, None, SFTP_TIMEOUT)
}

/// Downloads `who.txt` through `addr` with sftp: the name of the sshd reached.
fn who_via_sftp(key: &ClientKey, addr: SocketAddr, backends: &[&Sshd]) -> String {
    let work = tempfile::tempdir().unwrap();
    let out = sftp(key, addr, work.path(), "get who.txt got.txt\n");
    if !out.ok {
        let logs: Vec<String> = backends
            .iter()
            .map(|b| format!("--- sshd {} ---\n{}", b.name, b.log()))
            .collect();
        panic!("sftp through {addr} failed: {out:?}\n{}", logs.join("\n"));
    }
    fs::read_to_string(work.path().join("got.txt")).unwrap()
}

/// Connects through `addr` and reads the banner: the sshd it reached, or
/// the error if ftpgate closed the connection.
fn banner_via(addr: SocketAddr) -> std::io::Result<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    read_banner(&s, Duration::from_secs(10))
}

/// Polls `cond` every 50 ms until it holds, for at most `timeout`.
fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the metrics say `backend` is up (`Some(true)`) or down.
fn backend_up(metrics: &str, backend: SocketAddr) -> Option<bool> {
    let prefix = format!("ftpgate_backend_up{{backend=\"{backend}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim() == "1")
}

/// The value of the metric line starting with `prefix` (labels included).
fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn sftp_round_robin_spreads_connections_over_both_sshd() {
    if !openssh_or_skip("sftp_round_robin_spreads_connections_over_both_sshd") {
        return;
    }
    let key = ClientKey::new();
    let (a, b) = (Sshd::start("a", &key), Sshd::start("b", &key));
    let gate = Gate::start(&tcp_only(&[a.addr, b.addr], "round_robin", ""));
    let seen: Vec<String> = (0..4)
        .map(|_| who_via_sftp(&key, gate.addr(), &[&a, &b]))
        .collect();
    assert_eq!(seen.iter().filter(|w| *w == "a").count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|w| *w == "b").count(), 2, "{seen:?}");
    // Health checks by TCP connect keep both up (an FTP check would fail on sshd).
    wait_until(Duration::from_secs(10), "both sshd checked up", || {
        let m = gate.metrics();
        backend_up(&m, a.addr) == Some(true) && backend_up(&m, b.addr) == Some(true)
    });
    // One sessions_total count per connection, ended by one side or the other.
    let listener = format!("listener=\"{}\"", gate.addr());
    let ended = |m: &str| -> f64 {
        ["client_closed", "backend_closed"]
            .iter()
            .map(|o| {
                m.lines()
                    .filter(|l| l.starts_with("ftpgate_sessions_total{"))
                    .filter(|l| l.contains(&listener) && l.contains(&format!("outcome=\"{o}\"")))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .sum()
    };
    wait_until(Duration::from_secs(10), "four connections counted", || {
        ended(&gate.metrics()) == 4.0
    });
    let m = gate.metrics();
    for dir in ["to_backend", "to_client"] {
        let bytes = metric(
            &m,
            &format!("ftpgate_tcp_bytes_total{{direction=\"{dir}\",{listener}}}"),
        );
        assert!(bytes > 1000.0, "{dir}: {bytes}\n{m}");
    }
}

#[test]
fn sftp_killed_sshd_is_marked_down_and_avoided() {
    if !openssh_or_skip("sftp_killed_sshd_is_marked_down_and_avoided") {
        return;
    }
    let key = ClientKey::new();
    let (a, mut b) = (Sshd::start("a", &key), Sshd::start("b", &key));
    let gate = Gate::start(&tcp_only(&[a.addr, b.addr], "round_robin", FAST_CHECKS));
    wait_until(Duration::from_secs(10), "both sshd up", || {
        let m = gate.metrics();
        backend_up(&m, a.addr) == Some(true) && backend_up(&m, b.addr) == Some(true)
    });
    b.kill();
    wait_until(Duration::from_secs(10), "sshd b marked down", || {
        backend_up(&gate.metrics(), b.addr) == Some(false)
    });
    for _ in 0..4 {
        assert_eq!(who_via_sftp(&key, gate.addr(), &[&a]), "a");
    }
}

#[test]
fn sftp_unreachable_member_is_skipped_before_any_check() {
    if !openssh_or_skip("sftp_unreachable_member_is_skipped_before_any_check") {
        return;
    }
    let key = ClientKey::new();
    let a = Sshd::start("a", &key);
    // Nothing listens on the other member and health checks are off: each
    // connection that tries it first goes on to the next member.
    let dead = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let gate = Gate::start(&tcp_only(
        &[dead, a.addr],
        "round_robin",
        "health_check = false\n",
    ));
    for _ in 0..3 {
        assert!(banner_via(gate.addr()).unwrap().contains(&a.marker()));
    }
    assert_eq!(who_via_sftp(&key, gate.addr(), &[&a]), "a");
}

#[test]
fn sftp_every_sshd_down_closes_the_connection_at_once() {
    if !openssh_or_skip("sftp_every_sshd_down_closes_the_connection_at_once") {
        return;
    }
    let key = ClientKey::new();
    let (mut a, mut b) = (Sshd::start("a", &key), Sshd::start("b", &key));
    let gate = Gate::start(&tcp_only(
        &[a.addr, b.addr],
        "least_connections",
        FAST_CHECKS,
    ));
    a.kill();
    b.kill();
    wait_until(Duration::from_secs(10), "both sshd marked down", || {
        let m = gate.metrics();
        backend_up(&m, a.addr) == Some(false) && backend_up(&m, b.addr) == Some(false)
    });
    // Accepted, then closed without a byte.
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&gate.addr(), Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected a close, got {:?}", &buf[..n]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let work = tempfile::tempdir().unwrap();
    let out = sftp(&key, gate.addr(), work.path(), "get who.txt got.txt\n");
    assert!(!out.ok && !out.timed_out, "{out:?}");
    assert!(out.elapsed < Duration::from_secs(5), "{out:?}");
    let m = gate.metrics();
    assert!(
        metric(
            &m,
            &format!(
                "ftpgate_sessions_total{{backend=\"-\",listener=\"{}\",outcome=\"no_backend\"}}",
                gate.addr()
            )
        ) >= 2.0,
        "{m}"
    );
}

#[test]
fn sftp_upload_and_download_of_megabytes_are_byte_for_byte() {
    if !openssh_or_skip("sftp_upload_and_download_of_megabytes_are_byte_for_byte") {
        return;
    }
    let key = ClientKey::new();
    let (a, b) = (Sshd::start("a", &key), Sshd::start("b", &key));
    let gate = Gate::start(&tcp_only(&[a.addr, b.addr], "source_hash", ""));
    let data = peers::random_bytes(5 * 1024 * 1024 + 123, 7);
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("up.bin"), &data).unwrap();
    let out = sftp(
        &key,
        gate.addr(),
        work.path(),
        "put up.bin stored.bin\nget stored.bin back.bin\nget who.txt who.txt\n",
    );
    out.assert_ok("sftp put and get through ftpgate");
    let back = fs::read(work.path().join("back.bin")).unwrap();
    assert!(back == data, "download differs from the upload");
    // The upload landed, intact, on the sshd the session reached.
    let who = fs::read_to_string(work.path().join("who.txt")).unwrap();
    let server = if who == "a" { &a } else { &b };
    let stored = fs::read(server.root.join("stored.bin")).unwrap();
    assert!(stored == data, "the file on sshd {who} differs");
    let m = gate.metrics();
    let listener = gate.addr();
    for dir in ["to_backend", "to_client"] {
        let n = metric(
            &m,
            &format!("ftpgate_tcp_bytes_total{{direction=\"{dir}\",listener=\"{listener}\"}}"),
        );
        assert!(n > data.len() as f64, "{dir}: {n}\n{m}");
    }
}

#[test]
fn sftp_drain_by_reload_sends_new_connections_elsewhere() {
    if !openssh_or_skip("sftp_drain_by_reload_sends_new_connections_elsewhere") {
        return;
    }
    let key = ClientKey::new();
    let (a, b) = (Sshd::start("a", &key), Sshd::start("b", &key));
    let text = tcp_only(&[a.addr, b.addr], "round_robin", "");
    let gate = Gate::start(&text);
    // A connection held open on b, then b drained by reload.
    let held = (0..10)
        .map(|_| TcpStream::connect_timeout(&gate.addr(), Duration::from_secs(5)).unwrap())
        .find(|s| {
            read_banner(s, Duration::from_secs(10))
                .unwrap()
                .contains(&b.marker())
        })
        .expect("round robin reaches b");
    gate.reload(&text.replace("policy", &format!("drain = [\"{}\"]\npolicy", b.addr)));
    for _ in 0..4 {
        assert!(banner_via(gate.addr()).unwrap().contains(&a.marker()));
    }
    // The held connection still reaches b.
    (&held).write_all(b"SSH-2.0-ftpgate-test\r\n").unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut kexinit = [0u8; 16];
    (&held).read_exact(&mut kexinit).unwrap();
    // Undrained again: b takes new connections.
    gate.reload(&text);
    let seen: Vec<String> = (0..4).map(|_| banner_via(gate.addr()).unwrap()).collect();
    assert!(seen.iter().any(|s| s.contains(&b.marker())), "{seen:?}");
}

#[test]
fn sftp_shutdown_stops_accepting_and_lets_connections_run_until_the_drain_timeout() {
    if !openssh_or_skip(
        "sftp_shutdown_stops_accepting_and_lets_connections_run_until_the_drain_timeout",
    ) {
        return;
    }
    let key = ClientKey::new();
    let a = Sshd::start("a", &key);
    let gate = Gate::start(&tcp_only(&[a.addr], "round_robin", ""));
    let held = TcpStream::connect_timeout(&gate.addr(), Duration::from_secs(5)).unwrap();
    assert!(read_banner(&held, Duration::from_secs(10))
        .unwrap()
        .contains(&a.marker()));
    let drain = Duration::from_secs(2);
    let started = Instant::now();
    gate.begin_shutdown(drain);
    wait_until(Duration::from_secs(5), "the listener closed", || {
        TcpStream::connect_timeout(&gate.addr(), Duration::from_secs(1)).is_err()
    });
    // Still relayed during the drain: sshd answers our banner with KEXINIT.
    (&held).write_all(b"SSH-2.0-ftpgate-test\r\n").unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut kexinit = [0u8; 16];
    (&held).read_exact(&mut kexinit).unwrap();
    assert!(started.elapsed() < drain, "too slow to tell");
    // Closed when the drain timeout ends.
    let mut rest = Vec::new();
    let _ = (&held).read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(
        took >= drain && took < drain + Duration::from_secs(5),
        "closed after {took:?}"
    );
}

#[test]
fn sftp_and_ftp_served_by_one_ftpgate_at_the_same_time() {
    if !openssh_or_skip("sftp_and_ftp_served_by_one_ftpgate_at_the_same_time")
        || !peers::available_or_skip(
            ServerKind::Vsftpd,
            "sftp_and_ftp_served_by_one_ftpgate_at_the_same_time",
        )
    {
        return;
    }
    let key = ClientKey::new();
    let (a, b) = (Sshd::start("a", &key), Sshd::start("b", &key));
    let file = peers::random_bytes(2 * 1024 * 1024, 11);
    let ftp = FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "file.bin", &file);
    });
    let sftp_port = peers::free_port();
    let gw = gateway::start(
        &[ftp.addr],
        &format!(
            "{FAST_CHECKS}[pool.ssh]\nbackends = [\"{}\", \"{}\"]\n\n[tcp.sftp]\nlisten = [\"127.0.0.1:{sftp_port}\"]\npool = \"ssh\"\n",
            a.addr, b.addr
        ),
    );
    let sftp_addr = SocketAddr::from(([127, 0, 0, 1], sftp_port));
    // FTP health checks for vsftpd, TCP connects for the sshd: all up.
    wait_until(Duration::from_secs(10), "every backend up", || {
        let m = gw.metrics();
        [ftp.addr, a.addr, b.addr]
            .iter()
            .all(|x| backend_up(&m, *x) == Some(true))
    });
    let target = Target::for_server(&ftp).via(gw.addr);
    let ftp_thread = std::thread::spawn(move || {
        (0..3)
            .map(|_| clients::curl_get(&target, "/file.bin", Mode::Epsv))
            .collect::<Vec<_>>()
    });
    let seen: Vec<String> = (0..4)
        .map(|_| who_via_sftp(&key, sftp_addr, &[&a, &b]))
        .collect();
    for out in ftp_thread.join().unwrap() {
        out.assert_ok("curl through ftpgate");
        assert!(out.stdout == file, "FTP download differs");
    }
    assert!(
        seen.contains(&"a".to_owned()) && seen.contains(&"b".to_owned()),
        "{seen:?}"
    );
}

#[test]
fn sftp_tcp_flag_makes_a_listener() {
    let out = clients::run(
        {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
            cmd.env_remove("RUST_LOG").args([
                "check",
                "--pool",
                "ssh=127.0.0.1:2201,127.0.0.1:2202",
                "--tcp",
                "sftp=127.0.0.1:2222,[::1]:2222@ssh",
            ]);
            cmd
        },
        None,
        Duration::from_secs(20),
    );
    out.assert_ok("ftpgate check --tcp");
    let text = out.stdout_str();
    assert!(
        text.contains(
            "[tcp.sftp]\nlisten = [\"127.0.0.1:2222\", \"[::1]:2222\"]\npool = \"ssh\"\n"
        ),
        "{text}"
    );
    assert!(text.contains("# listen is not set"), "{text}");
}
