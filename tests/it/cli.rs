//! The `ftpgate` binary as an operator runs it: `ftpgate check`, flags-only
//! serving, start-up errors, log formats, and the config fixtures under
//! `tests/data/config/{valid,invalid}`.
//!
//! Every run has a timeout; serving processes are stopped with SIGTERM by
//! PID (then SIGKILL by PID if they linger) and never outlive their test.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::clients::{self, Mode, Output, Target};
use crate::peers::{self, FtpServer, ServerKind};

/// How long a `check` or a failing start may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

fn ftpgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
    // RUST_LOG would override --log-level and change what the tests read.
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs ftpgate to completion with `args`.
fn run(args: &[&str]) -> Output {
    let mut cmd = ftpgate();
    cmd.args(args);
    clients::run(cmd, None, RUN_TIMEOUT)
}

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(kind)
}

/// The `.toml` files of a fixture directory, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// === ftpgate check ===

#[test]
fn cli_check_prints_effective_config_with_defaults() {
    let file = fixtures("valid").join("minimal.toml");
    let out = run(&["check", "--config", s(&file)]);
    out.assert_ok("ftpgate check minimal.toml");
    let text = out.stdout_str();
    for want in [
        "listen = [\"127.0.0.1:2121\"]",
        "backends = [\"127.0.0.1:21\"]",
        "public_address = \"auto\"",
        "passive_ports = \"50000-50099\"",
        "passive_bind_address = \"127.0.0.1\"",
        "pending_data_timeout = \"30s\"",
        "login_timeout = \"60s\"",
        "idle_timeout = \"300s\"",
        "backend_reply_timeout = \"30s\"",
        "max_line_length = 4096",
        "active_mode = true",
        "active_nat_fix = true",
        "allow_foreign_data_address = false",
        "trust_backend_pasv_address = false",
        "backend_data_mode = \"passive\"",
        "log_format = \"text\"",
        // Backend TLS is off, but verification is on by default.
        "backend_tls_verify = true",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in:\n{text}"
        );
    }
    // The subcommand may also come after the global --config.
    let out2 = run(&["--config", s(&file), "check"]);
    out2.assert_ok("ftpgate --config minimal.toml check");
    assert_eq!(out2.stdout_str(), text);
}

#[test]
fn cli_check_full_file_shows_every_value() {
    let file = fixtures("valid").join("full.toml");
    let out = run(&["check", "--config", s(&file)]);
    out.assert_ok("ftpgate check full.toml");
    let text = out.stdout_str();
    for want in [
        "listen = [\"127.0.0.1:2121\", \"[::1]:2121\"]",
        "public_address = \"203.0.113.10\"",
        "public_address_refresh = \"300s\"",
        "passive_ports = \"40000-40099\"",
        "passive_bind_address = \"0.0.0.0\"",
        "trust_backend_pasv_address = true",
        "backend_data_networks = [\"10.0.2.0/24\", \"192.0.2.9/32\"]",
        "allow_foreign_data_address = true",
        "active_mode = false",
        "active_nat_fix = false",
        "backend_data_mode = \"active\"",
        "active_source_port_20 = true",
        "pending_data_timeout = \"10s\"",
        "data_connect_timeout = \"2500ms\"",
        "login_timeout = \"120s\"",
        "idle_timeout = \"3600s\"",
        "backend_connect_timeout = \"3s\"",
        "backend_reply_timeout = \"15s\"",
        "max_line_length = 2048",
        "relay_buffer_max = 1048576",
        "tcp_keepalive = \"30s\"",
        "log_format = \"json\"",
        "log_level = \"info,ftpgate=debug\"",
        "admin_listen = \"127.0.0.1:9121\"",
        "xferlog = \"/var/log/ftpgate/xferlog\"",
        "shutdown_drain_timeout = \"120s\"",
        "greeting_timeout = \"20s\"",
        "max_sessions = 500",
        "max_sessions_per_client = 8",
        "max_connection_rate_per_client = 5",
        "login_failures_before_delay = 2",
        "login_failure_delay = \"3s\"",
        "max_login_failures = 4",
        "health_check = false",
        "health_check_interval = \"10s\"",
        "health_check_fast_interval = \"100ms\"",
        "health_check_timeout = \"1s\"",
        "health_check_rise = 3",
        "health_check_fall = 2",
        "health_check_tls = true",
        "health_check_user = \"monitor\"",
        "user = \"root\"",
        "group = \"root\"",
        "tls = \"required\"",
        "implicit_tls_listen = [\"127.0.0.1:990\"]",
        "tls_require_data_resumption = true",
        "tls_handshake_timeout = \"5s\"",
        "tls_min_version = \"1.3\"",
        "backend_tls = \"explicit\"",
        "backend_tls_verify = true",
        "backend_tls_server_name = \"ftp.internal.example\"",
        "backend_tls_protect_data = false",
        "tls_client_auth = \"required\"",
        "tls_client_cert_user = true",
        "tls_server_names = [\"ftp.example.com\"]",
        "xferlog_user = \"certificate\"",
        "proxy_protocol_listen = [\"127.0.0.1:2122\"]",
        "proxy_protocol_from = [\"10.0.0.0/16\", \"192.0.2.7/32\"]",
        "proxy_protocol_timeout = \"2s\"",
        "backend_proxy_protocol = \"v2\"",
        "backend_policy = \"least_connections\"",
        "backend_drain = [\"127.0.0.1:2021\"]",
        "[tls_for_listener]",
        "\"[::1]:2121\" = \"optional\"",
        "[backend_weights]",
        "\"127.0.0.1:21\" = 3",
        "\"127.0.0.1:2021\" = 0",
        "[public_address_for]",
        "\"10.0.0.0/8\" = \"10.0.0.20\"",
        "\"192.168.0.0/16\" = \"auto\"",
        "\"198.51.100.7/32\" = \"localhost\"",
        "user_pool_default = \"default\"",
        "gateway_listen = [\"127.0.0.1:2199\"]",
        "gateway_allow = [\"0.0.0.0/0\", \"ftp.example.com\", \".partners.example\"]",
        "gateway_deny = [\"10.0.0.0/8\"]",
        "gateway_resolve_timeout = \"3s\"",
        "backend_active_ports = \"40000-40009\"",
        "backend_resolve_interval = \"10s\"",
        "[pool.tenant_a]",
        "policy = \"user_hash\"",
        "backends = [\"127.0.0.1:2031\", \"127.0.0.1:2032\"]",
        "drain = [\"127.0.0.1:2032\"]",
        "weights = { \"127.0.0.1:2031\" = 2, \"127.0.0.1:2032\" = 1 }",
        "[pool_for_listener]",
        "\"127.0.0.1:2122\" = \"tenant_a\"",
        "[user_pool]",
        "\"alice\" = \"tenant_a\"",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in:\n{text}"
        );
    }
    // The password file by its path (made absolute), never the password.
    assert!(
        text.lines()
            .any(|l| l.starts_with("health_check_password_file = \"/")
                && l.ends_with("/health-password.txt\"")),
        "health_check_password_file not shown as a path:\n{text}"
    );
    assert!(
        !text.contains("monitor-secret"),
        "password printed:\n{text}"
    );
    // Every top-level key written in the file is shown (keys inside tables,
    // such as `[user_pool]`'s user names, are printed quoted and listed above).
    let src = fs::read_to_string(&file).unwrap();
    for key in src
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.starts_with(['#', '"']) && l.contains(" = "))
        .map(|l| l.split(" = ").next().unwrap())
    {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "{key} not shown:\n{text}"
        );
    }
}

#[test]
fn cli_check_flags_override_file() {
    let file = fixtures("valid").join("minimal.toml");
    let out = run(&[
        "check",
        "--config",
        s(&file),
        "--passive-ports",
        "6000-6009",
        "--idle-timeout",
        "7m",
        "--active-mode=false",
        "--public-address-for",
        "10.0.0.0/8=10.0.0.20",
    ]);
    out.assert_ok("ftpgate check with flags");
    let text = out.stdout_str();
    for want in [
        "passive_ports = \"6000-6009\"",
        "idle_timeout = \"420s\"",
        "active_mode = false",
        "\"10.0.0.0/8\" = \"10.0.0.20\"",
        "listen = [\"127.0.0.1:2121\"]",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in:\n{text}"
        );
    }
}

#[test]
fn cli_check_flags_only() {
    let out = run(&[
        "check",
        "--listen",
        "127.0.0.1:2121",
        "--backend",
        "127.0.0.1:21",
    ]);
    out.assert_ok("ftpgate check with flags only");
    assert!(out.stdout_str().contains("passive_ports = \"50000-50099\""));
    // Nothing at all: the first missing key and its flag are named.
    let out = run(&["check"]);
    assert!(!out.ok && !out.timed_out, "check without settings: {out:?}");
    assert!(
        out.stderr.contains("listen") && out.stderr.contains("--listen"),
        "{out:?}"
    );
}

#[test]
fn cli_check_bad_flag_value_names_the_flag() {
    let file = fixtures("valid").join("minimal.toml");
    let out = run(&["check", "--config", s(&file), "--passive-ports", "9-1"]);
    assert!(!out.ok && !out.timed_out, "{out:?}");
    assert!(
        out.stderr.contains("--passive-ports") && out.stderr.contains("passive_ports"),
        "{out:?}"
    );
}

#[test]
fn cli_check_bad_files_name_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = "listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n";
    let cases = [
        (
            "bad_value.toml",
            format!("{base}\npending_data_timeout = \"soon\"\n"),
            ":4: pending_data_timeout",
        ),
        (
            "unknown_key.toml",
            format!("{base}pasive_ports = \"1-2\"\n"),
            ":3",
        ),
        (
            "syntax.toml",
            format!("{base}max_line_length = = 3\n"),
            ":3",
        ),
    ];
    for (name, text, want) in cases {
        let path = write_config(dir.path(), name, &text);
        let out = run(&["check", "--config", s(&path)]);
        assert!(!out.ok && !out.timed_out, "{name} should fail: {out:?}");
        assert_ne!(out.status, Some(0));
        let want = format!("{name}{want}");
        assert!(
            out.stderr.contains(&want),
            "{name}: stderr should contain {want:?}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout: {out:?}");
    }
    // The unknown key is named.
    let out = run(&["check", "--config", s(&dir.path().join("unknown_key.toml"))]);
    assert!(out.stderr.contains("pasive_ports"), "{out:?}");
    // A file that is not there.
    let out = run(&["check", "--config", s(&dir.path().join("nope.toml"))]);
    assert!(!out.ok && out.stderr.contains("nope.toml"), "{out:?}");
}

#[test]
fn cli_config_fixtures_valid() {
    let files = toml_files(&fixtures("valid"));
    assert!(!files.is_empty(), "no fixture in tests/data/config/valid");
    let mut read = 0;
    for f in &files {
        let out = run(&["check", "--config", s(f)]);
        assert!(out.ok, "{} should validate: {out:?}", f.display());
        assert!(
            out.stdout_str().contains("listen = ["),
            "{}: {out:?}",
            f.display()
        );
        read += 1;
    }
    assert!(read >= 4, "only {read} valid fixtures read");
}

/// Every example configuration shown in the docs (README deployments) validates.
#[test]
fn cli_docs_examples_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples");
    let files = toml_files(&dir);
    assert!(
        files.len() >= 5,
        "expected the README's examples in docs/examples, found {files:?}"
    );
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for f in &files {
        let out = run(&["check", "--config", s(f)]);
        assert!(out.ok, "{} should validate: {out:?}", f.display());
        let name = format!("docs/examples/{}", f.file_name().unwrap().to_str().unwrap());
        assert!(readme.contains(&name), "README does not show {name}");
    }
}

#[test]
fn cli_config_fixtures_invalid() {
    let files = toml_files(&fixtures("invalid"));
    assert!(!files.is_empty(), "no fixture in tests/data/config/invalid");
    let mut read = 0;
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .collect();
        assert!(!expects.is_empty(), "{}: no `# expect:` line", f.display());
        let out = run(&["check", "--config", s(f)]);
        assert!(
            !out.ok && !out.timed_out,
            "{} should fail: {out:?}",
            f.display()
        );
        assert_eq!(out.status, Some(2), "{}: exit status: {out:?}", f.display());
        for e in expects {
            assert!(
                out.stderr.contains(e),
                "{}: stderr should contain {e:?}:\n{}",
                f.display(),
                out.stderr
            );
        }
        read += 1;
    }
    assert!(read >= 10, "only {read} invalid fixtures read");
}

/// Runs `check` on `f`, then `check` on what it printed; returns both outputs.
fn check_twice(f: &Path) -> (Output, Output) {
    let dir = tempfile::tempdir().unwrap();
    let first = run(&["check", "--config", s(f)]);
    first.assert_ok("check");
    let again = write_config(dir.path(), "again.toml", &first.stdout_str());
    (first, run(&["check", "--config", s(&again)]))
}

#[test]
fn cli_check_output_is_a_valid_config_with_the_same_meaning() {
    let files = toml_files(&fixtures("valid"));
    let mut read = 0;
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        if text
            .lines()
            .any(|l| l.starts_with("backends") && l.contains("localhost"))
        {
            // Hostname backends: see cli_check_output_round_trips_with_hostname_backend.
            continue;
        }
        let (first, second) = check_twice(f);
        assert!(
            second.ok,
            "{}: the printed config does not validate: {second:?}",
            f.display()
        );
        assert_eq!(second.stdout_str(), first.stdout_str(), "{}", f.display());
        read += 1;
    }
    assert!(read >= 3, "only {read} fixtures read");
}

#[test]
fn cli_check_output_round_trips_with_hostname_backend() {
    let (first, second) = check_twice(&fixtures("valid").join("hostname_public_address.toml"));
    assert!(
        second.ok,
        "the printed config does not validate: {second:?}"
    );
    assert_eq!(second.stdout_str(), first.stdout_str());
}

#[test]
fn cli_check_wrong_type_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "wrong_type.toml",
        "listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n\nactive_mode = \"yes\"\n",
    );
    let out = run(&["check", "--config", s(&path)]);
    assert!(!out.ok, "{out:?}");
    assert!(
        out.stderr.contains("wrong_type.toml:4") && out.stderr.contains("active_mode"),
        "{out:?}"
    );
    let path = write_config(
        dir.path(),
        "wrong_type2.toml",
        "listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\nmax_line_length = \"4k\"\n",
    );
    let out = run(&["check", "--config", s(&path)]);
    assert!(
        out.stderr.contains("wrong_type2.toml:3") && out.stderr.contains("max_line_length"),
        "{out:?}"
    );
}

// === serving ===

/// An ftpgate process serving; stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct Served {
    child: Child,
    stderr: PathBuf,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Why a start failed: its exit status and stderr.
#[derive(Debug)]
struct StartFailure {
    status: Option<i32>,
    stderr: String,
}

/// Starts ftpgate with `args` plus `--listen 127.0.0.1:<free>`, and waits
/// for its "ftpgate listening" log line.
fn serve(args: &[String]) -> Result<Served, StartFailure> {
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr.log");
    let addr = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let child = ftpgate()
        .arg("--listen")
        .arg(addr.to_string())
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn ftpgate");
    let mut served = Served {
        child,
        stderr,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        if served.log().contains("ftpgate listening") {
            return Ok(served);
        }
        if let Ok(Some(st)) = served.child.try_wait() {
            return Err(StartFailure {
                status: st.code(),
                stderr: served.log(),
            });
        }
        assert!(
            Instant::now() < deadline,
            "ftpgate did not start: {}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `count` consecutive ports on 127.0.0.1 that were free a moment ago.
fn free_range(count: u16) -> (u16, u16) {
    loop {
        let base: u16 = rand::thread_rng().gen_range(30_000..40_000);
        let all_free = (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return (base, base + count - 1);
        }
    }
}

/// Serves with a free passive range (retrying if someone takes a port first).
fn serve_with_range(args: &[String]) -> Served {
    let mut last = None;
    for _ in 0..5 {
        let (a, b) = free_range(10);
        let mut all = args.to_vec();
        all.extend(["--passive-ports".to_string(), format!("{a}-{b}")]);
        match serve(&all) {
            Ok(s) => return s,
            Err(f) if f.stderr.contains("passive port") => last = Some(f),
            Err(f) => panic!("ftpgate failed to start: {f:?}"),
        }
    }
    panic!("no free passive range: {last:?}");
}

impl Served {
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM by PID, wait; returns the exit status and everything logged.
    fn stop(mut self) -> (Option<i32>, String) {
        let status = self.terminate();
        (status, self.log())
    }

    fn terminate(&mut self) -> Option<i32> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return st.code();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn vsftpd_with(name: &str, body: &[u8]) -> FtpServer {
    FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, name, body);
    })
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn cli_flags_only_serves_a_download() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "cli_flags_only_serves_a_download") {
        return;
    }
    let data = body(200_000);
    let srv = vsftpd_with("f.bin", &data);
    let gw = serve_with_range(&[
        "--backend".into(),
        srv.addr.to_string(),
        "--public-address".into(),
        "127.0.0.1".into(),
    ]);
    let t = Target::for_server(&srv).via(gw.addr);
    for mode in [Mode::Pasv, Mode::Epsv, Mode::Port] {
        let out = clients::curl_get(&t, "f.bin", mode);
        assert!(
            out.ok,
            "curl {mode:?}: {out:?}\n--- ftpgate ---\n{}",
            gw.log()
        );
        assert!(
            out.stdout == data,
            "curl {mode:?}: {} of {} bytes",
            out.stdout.len(),
            data.len()
        );
    }
    let (status, log) = gw.stop();
    assert_eq!(status, Some(0), "exit after SIGTERM; log:\n{log}");
    assert_eq!(log.matches("session closed").count(), 3, "log:\n{log}");
}

#[test]
fn cli_passive_port_taken_is_a_startup_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = taken.local_addr().unwrap().port();
    let f = match serve(&[
        "--backend".into(),
        "127.0.0.1:21".into(),
        "--passive-ports".into(),
        format!("{p}-{p}"),
    ]) {
        Ok(s) => panic!(
            "ftpgate started although passive port {p} is taken:\n{}",
            s.log()
        ),
        Err(f) => f,
    };
    assert!(f.status.is_some_and(|c| c != 0), "{f:?}");
    assert!(
        f.stderr.contains(&format!("passive port {p}")),
        "should name port {p}: {f:?}"
    );
    assert!(
        f.stderr.contains("passive_ports"),
        "should name the setting: {f:?}"
    );
    drop(taken);
}

#[test]
fn cli_control_port_taken_is_a_startup_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (a, b) = free_range(2);
    let out = run(&[
        "--listen",
        &addr.to_string(),
        "--backend",
        "127.0.0.1:21",
        "--passive-ports",
        &format!("{a}-{b}"),
    ]);
    assert!(!out.ok && !out.timed_out, "{out:?}");
    assert!(
        out.stderr.contains(&addr.to_string()) && out.stderr.contains("listen"),
        "{out:?}"
    );
    drop(taken);
}

#[test]
fn cli_json_logs_one_session_closed_line() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "cli_json_logs_one_session_closed_line") {
        return;
    }
    let data = body(12_345);
    let srv = vsftpd_with("f.bin", &data);
    let gw = serve_with_range(&[
        "--backend".into(),
        srv.addr.to_string(),
        "--public-address".into(),
        "127.0.0.1".into(),
        "--log-format".into(),
        "json".into(),
    ]);
    let t = Target::for_server(&srv).via(gw.addr);
    let out = clients::curl_get(&t, "f.bin", Mode::Pasv);
    assert!(out.ok && out.stdout == data, "curl: {out:?}\n{}", gw.log());
    let (status, log) = gw.stop();
    assert_eq!(status, Some(0), "log:\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.starts_with('{') && l.ends_with('}') && l.contains("\"message\":"),
            "not a JSON log line: {l:?}"
        );
    }
    let closed: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("\"message\":\"session closed\""))
        .collect();
    assert_eq!(closed.len(), 1, "log:\n{log}");
    let line = closed[0];
    for want in [
        "\"client\":\"127.0.0.1:".to_string(),
        format!("\"backend\":\"{}\"", srv.addr),
        format!("\"user\":\"{}\"", srv.user),
        "\"bytes_up\":0".to_string(),
        format!("\"bytes_down\":{}", data.len()),
        "\"end\":\"".to_string(),
    ] {
        assert!(line.contains(&want), "session line lacks {want}: {line}");
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// ftpgate (text log, the defaults) in front of `srv`.
fn serve_in_front_of(srv: &FtpServer) -> Served {
    serve_with_range(&[
        "--backend".into(),
        srv.addr.to_string(),
        "--public-address".into(),
        "127.0.0.1".into(),
    ])
}

/// The log's "session closed" lines.
fn session_closed_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("session closed"))
        .collect()
}

/// A text-format ftpgate serving one curl download; returns its log.
fn text_log_of_one_download() -> String {
    let srv = vsftpd_with("f.bin", b"hello\n");
    let gw = serve_in_front_of(&srv);
    let out = clients::curl_get(&Target::for_server(&srv).via(gw.addr), "f.bin", Mode::Epsv);
    assert!(out.ok && out.stdout == b"hello\n", "{out:?}");
    let (status, log) = gw.stop();
    assert_eq!(status, Some(0), "{log}");
    log
}

#[test]
fn cli_text_logs_by_default() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "cli_text_logs_by_default") {
        return;
    }
    let log = strip_ansi(&text_log_of_one_download());
    assert!(
        !log.lines().any(|l| l.starts_with('{')),
        "text format by default:\n{log}"
    );
    let closed = session_closed_lines(&log);
    assert_eq!(closed.len(), 1, "{log}");
    for want in [
        "client=127.0.0.1:",
        "user=anonymous",
        "bytes_up=0",
        "bytes_down=6",
        "end=",
    ] {
        assert!(closed[0].contains(want), "lacks {want}: {}", closed[0]);
    }
}

#[test]
fn cli_text_logs_have_no_ansi_escapes_when_not_a_terminal() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "cli_text_logs_have_no_ansi_escapes_when_not_a_terminal",
    ) {
        return;
    }
    let log = text_log_of_one_download();
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file:\n{log:?}"
    );
}

/// A client's user name with a terminal escape, BEL, DEL and a C1 control
/// (CSI) in it: the text log writes each escaped (`\x1b`, `\u{9b}`), so
/// `tail -f` of the log cannot be driven by a client.
#[test]
fn cli_text_log_escapes_control_characters_a_client_sent() {
    use std::io::{BufRead, BufReader, Write};
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "cli_text_log_escapes_control_characters_a_client_sent",
    ) {
        return;
    }
    let srv = vsftpd_with("f.bin", b"x");
    let gw = serve_in_front_of(&srv);
    let c = std::net::TcpStream::connect(gw.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    let mut reply = || {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    };
    assert!(reply().starts_with("220"));
    w.write_all("USER ev\u{1b}[2Jil\u{7}\u{7f}\u{9b}31m\r\n".as_bytes())
        .unwrap();
    let to_user = reply();
    assert!(
        to_user.starts_with('3') || to_user.starts_with('5'),
        "{to_user:?}"
    );
    w.write_all(b"QUIT\r\n").unwrap();
    assert!(reply().starts_with("221"));
    drop(w);
    let (status, log) = gw.stop();
    assert_eq!(status, Some(0), "{log}");
    let closed = session_closed_lines(&log);
    assert_eq!(closed.len(), 1, "{log}");
    assert!(
        closed[0].contains(r"user=ev\x1b[2Jil\x07\x7f\u{9b}31m "),
        "{:?}",
        closed[0]
    );
    assert!(
        !log.contains(['\u{1b}', '\u{7}', '\u{7f}', '\u{9b}']),
        "a raw control character in the log:\n{log:?}"
    );
}

#[test]
fn cli_global_flags_before_check_are_applied() {
    let file = fixtures("valid").join("minimal.toml");
    let out = run(&[
        "--passive-ports",
        "6000-6009",
        "--config",
        s(&file),
        "check",
    ]);
    out.assert_ok("flags before check");
    assert!(
        out.stdout_str().contains("passive_ports = \"6000-6009\""),
        "{out:?}"
    );
    let out = run(&[
        "--listen",
        "127.0.0.1:2121",
        "--backend",
        "127.0.0.1:21",
        "check",
    ]);
    out.assert_ok("flags only, before check");
}

#[test]
fn cli_sigterm_closes_sessions_with_421_and_exits_0() {
    use std::io::{BufRead, BufReader, Read, Write};
    // A backend that greets and then just listens.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in backend.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = s.write_all(b"220 hi\r\n");
                let mut sink = [0u8; 256];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    let gw = serve_with_range(&["--backend".into(), backend_addr.to_string()]);
    let c = std::net::TcpStream::connect(gw.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "220 hi\r\n");
    let (status, log) = gw.stop();
    line.clear();
    r.read_line(&mut line)
        .unwrap_or_else(|e| panic!("no 421 on shutdown ({e}); log:\n{log}"));
    assert!(
        line.starts_with("421 "),
        "on shutdown: {line:?}; log:\n{log}"
    );
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "after the 421: {rest:?}");
    assert_eq!(status, Some(0), "log:\n{log}");
    assert!(strip_ansi(&log).contains("ftpgate stopped"), "log:\n{log}");
}

// === one kind of listener alone (issue 16) ===

/// Starts `ftpgate --config FILE` with `text` (ports in it must be free)
/// under `wrap` (e.g. `prlimit ...`; empty: none), and waits for its
/// "ftpgate listening" line.
fn serve_config(text: &str, wrap: &[&str]) -> Result<Served, StartFailure> {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "ftpgate.toml", text);
    let stderr = dir.path().join("stderr.log");
    let mut cmd = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_ftpgate"));
            c.env_remove("RUST_LOG");
            c
        }
        None => ftpgate(),
    };
    let child = cmd
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn ftpgate");
    let mut served = Served {
        child,
        stderr,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        _dir: dir,
    };
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        if served.log().contains("ftpgate listening") {
            return Ok(served);
        }
        if let Ok(Some(st)) = served.child.try_wait() {
            return Err(StartFailure {
                status: st.code(),
                stderr: served.log(),
            });
        }
        assert!(
            Instant::now() < deadline,
            "ftpgate did not start: {}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `serve_config` with fresh ports: `make(ports, passive range)` writes the
/// file, given `n` free ports; retried when a port was taken meanwhile.
pub(crate) fn serve_fresh(
    n: usize,
    make: impl Fn(&[u16], (u16, u16)) -> String,
    wrap: &[&str],
) -> Served {
    let mut last = None;
    for _ in 0..5 {
        let ports: Vec<u16> = (0..n).map(|_| peers::free_port()).collect();
        match serve_config(&make(&ports, free_range(10)), wrap) {
            Ok(s) => return s,
            Err(f) if f.stderr.contains("passive port") || f.stderr.contains("cannot listen") => {
                last = Some(f)
            }
            Err(f) => panic!("ftpgate failed to start: {f:?}"),
        }
    }
    panic!("no free ports: {last:?}");
}

/// The test TLS certificate and key of the fixtures, as config lines.
fn fixture_tls() -> String {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/tls");
    format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        tls.join("cert.pem").display().to_string(),
        tls.join("key.pem").display().to_string()
    )
}

/// The first reply line on `s` (bounded read).
fn first_reply(s: &mut impl std::io::Read) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\n") && got.len() < 512 {
        match s.read(&mut b) {
            Ok(1) => got.push(b[0]),
            other => panic!("reading a reply: {other:?} after {got:?}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Implicit FTPS alone and PROXY protocol listeners alone each make a
/// whole configuration (they used to fail with "missing required setting
/// `listen`"), serve clients, and bind the passive range on their address.
#[test]
fn cli_implicit_tls_or_proxy_protocol_listener_alone_serves() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "cli_listener_alone") {
        return;
    }
    let srv = vsftpd_with("f.bin", b"x");
    let backend = srv.addr;
    // Implicit TLS only: a TLS client gets the backend's greeting.
    let gw = serve_fresh(
        1,
        |p, (a, b)| {
            format!(
                "implicit_tls_listen = [\"127.0.0.1:{}\"]\nbackends = [\"{backend}\"]\n\
                 passive_ports = \"{a}-{b}\"\nhealth_check = false\n{}",
                p[0],
                fixture_tls()
            )
        },
        &[],
    );
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("ftpgate listening"))
        .unwrap();
    let at: SocketAddr = line
        .split("listen=[\"")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no implicit listener in {line}"));
    assert!(line.contains(&format!("{at} (implicit TLS)")), "{line}");
    let mut tcp = std::net::TcpStream::connect(at).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut conn = rustls::ClientConnection::new(
        crate::certs::accept_any_server_config(),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let greeting = first_reply(&mut rustls::Stream::new(&mut conn, &mut tcp));
    assert!(greeting.starts_with("220"), "{greeting:?}\n{}", gw.log());
    drop(gw);

    // PROXY protocol only: a balancer's header, then the greeting.
    let gw = serve_fresh(
        1,
        |p, (a, b)| {
            format!(
                "proxy_protocol_listen = [\"127.0.0.1:{}\"]\nproxy_protocol_from = [\"127.0.0.0/8\"]\n\
                 backends = [\"{backend}\"]\npassive_ports = \"{a}-{b}\"\nhealth_check = false\n",
                p[0]
            )
        },
        &[],
    );
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("ftpgate listening"))
        .unwrap();
    let at: SocketAddr = line
        .split("listen=[\"")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no PROXY listener in {line}"));
    assert!(line.contains(&format!("{at} (PROXY protocol)")), "{line}");
    let mut tcp = std::net::TcpStream::connect(at).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        format!("PROXY TCP4 192.0.2.7 127.0.0.1 40000 {}\r\n", at.port()).as_bytes(),
    )
    .unwrap();
    let greeting = first_reply(&mut tcp);
    assert!(greeting.starts_with("220"), "{greeting:?}\n{}", gw.log());
}

/// The startup line names every listener, each kind marked: plain,
/// implicit TLS, PROXY protocol, gateway, plain TCP and admin.
#[test]
fn cli_startup_line_lists_every_listener() {
    let gw = serve_fresh(
        6,
        |p, (a, b)| {
            format!(
                "listen = [\"127.0.0.1:{}\"]\nimplicit_tls_listen = [\"127.0.0.1:{}\"]\n\
                 proxy_protocol_listen = [\"127.0.0.1:{}\"]\nproxy_protocol_from = [\"127.0.0.0/8\"]\n\
                 gateway_listen = [\"127.0.0.1:{}\"]\nadmin_listen = \"127.0.0.1:{}\"\n\
                 backends = [\"127.0.0.1:21\"]\npassive_ports = \"{a}-{b}\"\nhealth_check = false\n{}\
                 [pool.ssh]\nbackends = [\"127.0.0.1:22\"]\n[tcp.sftp]\nlisten = [\"127.0.0.1:{}\"]\npool = \"ssh\"\n",
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                fixture_tls(),
                p[5],
            )
        },
        &[],
    );
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("ftpgate listening"))
        .unwrap()
        .to_owned();
    let listed = line
        .split("listen=[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no listen=[...] in {line}"));
    let count = listed.matches("127.0.0.1:").count();
    assert_eq!(count, 6, "{line}");
    for kind in [
        "(implicit TLS)",
        "(PROXY protocol)",
        "(gateway)",
        "(tcp.sftp)",
        "(admin)",
    ] {
        assert!(listed.contains(kind), "{kind} missing: {line}");
    }
}

// === open-files limit (issue 16) ===

/// Started with a soft limit of 1024 (and a hard limit of 4096), ftpgate
/// raises it to 4096, says how many sessions fit, and warns that the
/// default max_sessions (10000) does not.
#[test]
fn cli_raises_the_open_files_limit_and_says_how_many_sessions_fit() {
    if !Path::new("/usr/bin/prlimit").exists() {
        assert!(
            !peers::peers_required(),
            "prlimit (util-linux) is missing under FTPGATE_REQUIRE_PEERS=1"
        );
        eprintln!("SKIP cli_raises_the_open_files_limit: no prlimit");
        return;
    }
    let gw = serve_fresh(
        1,
        |p, (a, b)| {
            format!(
                "listen = [\"127.0.0.1:{}\"]\nbackends = [\"127.0.0.1:21\"]\n\
                 passive_ports = \"{a}-{b}\"\nhealth_check = false\n",
                p[0]
            )
        },
        &["prlimit", "--nofile=1024:4096"],
    );
    let pid = gw.child.id();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4096", "4096"],
        "{open_files}"
    );
    let log = strip_ansi(&gw.log());
    // 4096 files, 11 for the listener and the 10-port range, 64 kept back:
    // (4096 - 11 - 64) / 5 sessions.
    let fit = (4096 - 11 - 64) / 5;
    assert!(
        log.contains(&format!("open-files limit: {fit} sessions fit"))
            && log.contains("open_files=4096")
            && log.contains("started_with=1024"),
        "{log}"
    );
    assert!(
        log.contains("max_sessions = 10000 needs about")
            && log.contains("lower max_sessions")
            && log.contains("WARN"),
        "{log}"
    );
}
