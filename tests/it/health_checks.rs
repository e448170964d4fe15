//! Health checks that complete `AUTH TLS` and a login, against real servers:
//! ProFTPD's virtual user with a right and a wrong password file, vsftpd
//! with TLS required (anonymous login inside TLS, and a certificate ftpgate
//! does not trust), vsftpd with an `openssl req -x509` certificate given as
//! a CA, a backend that starts after ftpgate (fast checks until it is up),
//! and the configuration errors of the new keys.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ftpgate::config::{file::parse_str, validate};

use crate::certs::TestPki;
use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind, TlsSetup};

/// One check every 200 ms; one result decides.
pub(crate) const FAST_CHECKS: &str = "health_check = true\nhealth_check_interval = \"200ms\"\nhealth_check_timeout = \"2s\"\nhealth_check_rise = 1\nhealth_check_fall = 1\n";

/// The sum of `name`'s samples whose labels include `labels`.
fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = gw.metrics();
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, inner) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            continue;
        }
        let inner = inner.trim_end_matches('}');
        let has = |(k, v): &(&str, &str)| {
            inner
                .split(',')
                .any(|p| p.split_once('=') == Some((k, &format!("\"{v}\""))))
        };
        if labels.iter().all(has) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// Waits (at most 10 s) until `ftpgate_backend_up` of `backend` is `want`.
#[track_caller]
pub(crate) fn wait_up(gw: &Gateway, backend: SocketAddr, want: f64) {
    let b = backend.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(gw, "ftpgate_backend_up", &[("backend", &b)]) != want
        // The gauge exists only after the first check.
        || !gw.metrics().contains(&format!("ftpgate_backend_up{{backend=\"{b}\"}}"))
    {
        assert!(
            Instant::now() < deadline,
            "ftpgate_backend_up{{backend={b}}} never became {want}:\n{}",
            gw.metrics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Failed checks of `backend` for `reason`.
fn failures(gw: &Gateway, backend: SocketAddr, reason: &str) -> f64 {
    metric(
        gw,
        "ftpgate_health_check_failures_total",
        &[("backend", &backend.to_string()), ("reason", reason)],
    )
}

/// The first reply line a new client gets from the gateway (bounded read).
fn first_line(gw: &Gateway) -> String {
    let s = TcpStream::connect_timeout(&gw.addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read reply");
    line
}

/// A whole config file for a reload of `gw` (same listener and ports).
fn config_text(gw: &Gateway, backend: SocketAddr, extra: &str) -> String {
    format!(
        "listen = [\"{}\"]\nbackends = [\"{backend}\"]\npublic_address = \"127.0.0.1\"\npassive_ports = \"{}-{}\"\n{extra}\n",
        gw.config.listen[0], gw.passive_ports.0, gw.passive_ports.1,
    )
}

fn login_keys(user: &str, password_file: Option<&Path>) -> String {
    let mut s = format!("health_check_user = {user:?}\n");
    if let Some(p) = password_file {
        s.push_str(&format!(
            "health_check_password_file = {:?}\n",
            p.display().to_string()
        ));
    }
    s
}

#[test]
fn health_login_proftpd_up_with_its_password_down_with_a_wrong_one() {
    if !peers::available_or_skip(ServerKind::Proftpd, "health_login_proftpd") {
        return;
    }
    let srv = FtpServer::start(ServerKind::Proftpd);
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("right.txt");
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&right, format!("{}\n", srv.pass)).unwrap();
    std::fs::write(&wrong, "not-the-password\n").unwrap();

    let extra = format!("{FAST_CHECKS}{}", login_keys(&srv.user, Some(&right)));
    let gw = gateway::start(&[srv.addr], &extra);
    wait_up(&gw, srv.addr, 1.0);
    assert_eq!(failures(&gw, srv.addr, "login"), 0.0, "{}", gw.metrics());
    assert!(
        first_line(&gw).starts_with("220"),
        "sessions go to the backend"
    );

    // A reload with another password file restarts the checker (the
    // password is part of the check settings): the backend's 530 takes it
    // down at the first check.
    gw.reload(&config_text(
        &gw,
        srv.addr,
        &format!("{FAST_CHECKS}{}", login_keys(&srv.user, Some(&wrong))),
    ))
    .expect("reload");
    wait_up(&gw, srv.addr, 0.0);
    assert!(
        failures(&gw, srv.addr, "login") >= 1.0,
        "the refused login is the reason:\n{}",
        gw.metrics()
    );
    // Every backend is down: a new client is told at once.
    let started = Instant::now();
    assert_eq!(
        first_line(&gw),
        "421 Service not available: no server is up, try again later.\r\n"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Back to the right password: up again.
    gw.reload(&config_text(
        &gw,
        srv.addr,
        &format!("{FAST_CHECKS}{}", login_keys(&srv.user, Some(&right))),
    ))
    .expect("reload");
    wait_up(&gw, srv.addr, 1.0);
    assert!(first_line(&gw).starts_with("220"));
}

/// `backend_tls = "explicit"` with `ca` as the trusted CA, plus `extra`.
fn explicit_tls(ca: &Path, extra: &str) -> String {
    format!(
        "{FAST_CHECKS}backend_tls = \"explicit\"\nbackend_tls_ca = {:?}\n{extra}",
        ca.display().to_string()
    )
}

#[test]
fn health_tls_vsftpd_anonymous_login_inside_auth_tls() {
    if !peers::available_tls_or_skip(ServerKind::Vsftpd, "health_tls_vsftpd") {
        return;
    }
    let pki = TestPki::new();
    let srv = FtpServer::start_tls(
        ServerKind::Vsftpd,
        TlsSetup::explicit(&pki).required(),
        |_| {},
    );
    let anonymous = login_keys(&srv.user, None);

    // AUTH TLS, a verified handshake, then USER/PASS inside TLS: up.
    let gw = gateway::start(
        &[srv.addr],
        &explicit_tls(
            &pki.ca_pem,
            &format!("health_check_tls = true\n{anonymous}"),
        ),
    );
    wait_up(&gw, srv.addr, 1.0);
    assert!(
        metric(&gw, "ftpgate_health_checks_total", &[("result", "failure")]) == 0.0,
        "{}",
        gw.metrics()
    );
    drop(gw);

    // The same login without AUTH TLS (turned off: it is on by default
    // toward explicit-TLS backends): vsftpd refuses anonymous logins in
    // clear text, so the check fails at the login.
    let gw = gateway::start(
        &[srv.addr],
        &explicit_tls(
            &pki.ca_pem,
            &format!("health_check_tls = false\n{anonymous}"),
        ),
    );
    wait_up(&gw, srv.addr, 0.0);
    assert!(failures(&gw, srv.addr, "login") >= 1.0, "{}", gw.metrics());
    drop(gw);

    // A server certificate ftpgate does not trust: the handshake fails.
    let other = TestPki::new();
    let gw = gateway::start(
        &[srv.addr],
        &explicit_tls(
            &other.ca_pem,
            &format!("health_check_tls = true\n{anonymous}"),
        ),
    );
    wait_up(&gw, srv.addr, 0.0);
    assert!(failures(&gw, srv.addr, "tls") >= 1.0, "{}", gw.metrics());
    assert_eq!(
        failures(&gw, srv.addr, "login"),
        0.0,
        "no login after a failed handshake"
    );
    assert_eq!(
        first_line(&gw),
        "421 Service not available: no server is up, try again later.\r\n"
    );
}

/// A backend that starts after ftpgate (a service started together with
/// its servers): down at ftpgate's first check, then checked every
/// `health_check_fast_interval` (250 ms by default), not every
/// `health_check_interval` (5 s), and up at its first success. Clients
/// are served within a second of the server listening.
#[test]
fn health_fast_interval_serves_a_backend_that_starts_late() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "health_fast_interval") {
        return;
    }
    let at = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    // Default intervals: the 5 s interval would leave clients refused for
    // up to 5 s after the server listens.
    let gw = gateway::start(&[at], "health_check = true\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures(&gw, at, "io") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no failed check:\n{}",
            gw.metrics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_up(&gw, at, 0.0);
    assert_eq!(
        first_line(&gw),
        "421 Service not available: no server is up, try again later.\r\n"
    );
    let srv = FtpServer::start_vsftpd_at(at, |root| {
        peers::put_file(root, "late.txt", b"served right after the server started");
    });
    let listening = Instant::now();
    wait_up(&gw, at, 1.0);
    let took = listening.elapsed();
    // Six fast intervals, far below the 5 s interval.
    assert!(
        took < Duration::from_millis(1500),
        "up {took:?} after vsftpd answered"
    );
    // One success was enough (health_check_rise = 2 applies once it has
    // been up).
    assert_eq!(
        metric(&gw, "ftpgate_health_checks_total", &[("result", "success")]),
        1.0,
        "{}",
        gw.metrics()
    );
    let mut ftp = suppaftp::FtpStream::connect(gw.addr).expect("connect");
    ftp.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ftp.login(&srv.user, &srv.pass).expect("login");
    let body = ftp.retr_as_buffer("late.txt").expect("RETR").into_inner();
    assert_eq!(body, b"served right after the server started");
    assert!(
        listening.elapsed() < Duration::from_secs(3),
        "served {:?} after vsftpd answered",
        listening.elapsed()
    );
    let _ = ftp.quit();
}

/// A certificate made as vsftpd's guides make one: `openssl req -x509`
/// (self-signed; OpenSSL 3 marks it as a CA, basicConstraints CA:TRUE).
/// Returns the certificate and key files.
fn openssl_self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("vsftpd.pem"), dir.join("vsftpd.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-days", "30", "-newkey", "rsa:2048",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (scripts/install-test-deps.sh installs it)");
    assert!(out.status.success(), "openssl req: {out:?}");
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "this openssl does not mark `req -x509` certificates as CAs; the test needs one that does"
    );
    for p in [&cert, &key] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    (cert, key)
}

/// Such a certificate given as `backend_tls_ca`: rustls refuses it as a
/// server certificate (CaUsedAsEndEntity). The health check completes
/// AUTH TLS and the handshake by default, so the backend is down for that
/// reason (not up while every session fails), the log says what to do,
/// and `backend_tls_pin` with the same file brings it up.
#[test]
fn health_tls_self_signed_ca_certificate_is_down_and_says_use_the_pin() {
    if !peers::available_tls_or_skip(ServerKind::Vsftpd, "health_tls_self_signed_ca") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (cert, key) = openssl_self_signed(dir.path());
    let srv = FtpServer::start_tls(
        ServerKind::Vsftpd,
        TlsSetup {
            cert: cert.clone(),
            key,
            implicit: false,
            required: false,
            client_ca: None,
        },
        |_| {},
    );
    let keys = |which: &str| {
        format!(
            "{FAST_CHECKS}backend_tls = \"explicit\"\n{which} = {:?}\n",
            cert.display().to_string()
        )
    };
    let gw = gateway::start(&[srv.addr], &keys("backend_tls_ca"));
    wait_up(&gw, srv.addr, 0.0);
    assert!(failures(&gw, srv.addr, "tls") >= 1.0, "{}", gw.metrics());
    assert_eq!(
        first_line(&gw),
        "421 Service not available: no server is up, try again later.\r\n"
    );
    gw.reload(&config_text(&gw, srv.addr, &keys("backend_tls_pin")))
        .expect("reload");
    wait_up(&gw, srv.addr, 1.0);
    assert!(first_line(&gw).starts_with("220"));
    drop(gw);

    // Through the binary: the log line says what is wrong and what to do.
    let backend = srv.addr;
    let ca = keys("backend_tls_ca");
    let served = crate::cli::serve_fresh(
        1,
        |p, (a, b)| {
            format!(
                "listen = [\"127.0.0.1:{}\"]\nbackends = [\"{backend}\"]\npassive_ports = \"{a}-{b}\"\n{ca}",
                p[0]
            )
        },
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = served.log();
        if let Some(l) = log.lines().find(|l| l.contains("backend is down")) {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no `backend is down` line:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    for want in [
        "TLS handshake failed: the backend's certificate is a CA certificate",
        "set backend_tls_pin to that certificate file instead of backend_tls_ca",
        "CaUsedAsEndEntity",
    ] {
        assert!(line.contains(want), "{want:?} missing in: {line}");
    }
}

/// Validates `text` as a config file; the error message, if any.
fn config_error(text: &str) -> Option<String> {
    let raw = parse_str(Path::new("health-test.toml"), text).expect("TOML");
    validate(&raw).err().map(|e| e.to_string())
}

#[test]
fn health_config_errors_name_their_keys() {
    let base = "listen = [\"127.0.0.1:0\"]\nbackends = [\"127.0.0.1:21\"]\n";
    for backend_tls in [
        "",
        "backend_tls = \"off\"\n",
        "backend_tls = \"implicit\"\nbackend_tls_verify = false\n",
    ] {
        let e = config_error(&format!("{base}{backend_tls}health_check_tls = true\n"))
            .unwrap_or_else(|| panic!("health_check_tls with {backend_tls:?} must fail"));
        assert!(
            e.contains("health_check_tls") && e.contains("backend_tls = \"explicit\""),
            "{e}"
        );
    }
    assert_eq!(
        config_error(&format!(
            "{base}backend_tls = \"explicit\"\nbackend_tls_verify = false\nhealth_check_tls = true\n"
        )),
        None
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let e = config_error(&format!("{base}{}", login_keys("monitor", Some(&missing))))
        .expect("a missing password file must fail");
    assert!(
        e.contains("health_check_password_file") && e.contains("missing.txt"),
        "{e}"
    );

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let e = config_error(&format!("{base}{}", login_keys("monitor", Some(&empty))))
        .expect("an empty password must fail");
    assert!(e.contains("health_check_password_file"), "{e}");

    let e = config_error(&format!(
        "{base}health_check_password_file = {:?}\n",
        empty.display().to_string()
    ))
    .expect("a password file without a user must fail");
    assert!(e.contains("health_check_user"), "{e}");

    // A good file: the password is read, and never printed.
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "s3cret-health\r\nsecond line ignored\n").unwrap();
    let raw = parse_str(
        Path::new("health-test.toml"),
        &format!("{base}{}", login_keys("monitor", Some(&good))),
    )
    .unwrap();
    let config = validate(&raw).expect("valid");
    assert_eq!(
        config.health_check_password.as_ref().map(|p| p.expose()),
        Some("s3cret-health")
    );
    let shown = config.to_toml();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(!format!("{config:?}").contains("s3cret"));
    assert!(shown.contains("health_check_user = \"monitor\""), "{shown}");
}
