//! Running unprivileged with CAP_NET_BIND_SERVICE (as the systemd unit does):
//! the real binary, started through `setpriv` as `nobody` with only that
//! capability, serves a port below 1024 in front of a real vsftpd. The same
//! start without the capability must fail on that port, which proves the
//! capability (not some leftover privilege) is what makes it work.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{curl_get, Mode, Target};
use crate::peers::{self, FtpServer, ServerKind};

/// A free port below 1024 on 127.0.0.1 (we run as root to find one).
fn free_low_port() -> u16 {
    (900..1000)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 900-999")
}

fn free_passive_range() -> (u16, u16) {
    for base in (41_000..49_000).step_by(37) {
        if (base..base + 5).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return (base, base + 4);
        }
    }
    panic!("no free passive range");
}

/// Runs ftpgate as nobody through setpriv, with or without the capability.
fn spawn_as_nobody(
    with_cap: bool,
    listen: SocketAddr,
    backend: SocketAddr,
    log: &std::path::Path,
) -> Child {
    let (a, b) = free_passive_range();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if with_cap {
        cmd.args([
            "--inh-caps=+net_bind_service",
            "--ambient-caps=+net_bind_service",
        ]);
    } else {
        cmd.args(["--inh-caps=-all"]);
    }
    cmd.arg("--")
        .arg(env!("CARGO_BIN_EXE_ftpgate"))
        .args(["--listen", &listen.to_string()])
        .args(["--backend", &backend.to_string()])
        .args(["--public-address", "127.0.0.1"])
        .args(["--passive-ports", &format!("{a}-{b}")])
        .args(["--health-check", "false"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap());
    cmd.spawn().expect("spawn setpriv")
}

fn status_field(pid: u32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn unprivileged_with_cap_net_bind_service_serves_a_low_port() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        assert!(
            !peers::peers_required(),
            "this test needs root and setpriv (util-linux) in CI"
        );
        eprintln!(
            "SKIP unprivileged_with_cap_net_bind_service_serves_a_low_port: needs root and setpriv"
        );
        return;
    }
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "unprivileged_with_cap_net_bind_service_serves_a_low_port",
    ) {
        return;
    }
    let body = peers::random_bytes(300_000, 77);
    let server = FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "f.bin", &body);
    });
    let dir = tempfile::tempdir().unwrap();

    // Without the capability, the low port is refused: a startup error naming it.
    let port = free_low_port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.path().join("nocap.log");
    let mut child = spawn_as_nobody(false, listen, server.addr, &log);
    let st = child.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("cannot listen on {listen} (setting `listen`)")),
        "{text}"
    );

    // With it, ftpgate serves the low port as nobody, with no other capability.
    let log = dir.path().join("cap.log");
    let mut child = spawn_as_nobody(true, listen, server.addr, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ftpgate listening")
    {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "ftpgate exited {st:?}: {}",
                fs::read_to_string(&log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "ftpgate did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    assert_eq!(status_field(pid, "Uid"), "65534 65534 65534 65534");
    assert_eq!(status_field(pid, "Gid"), "65534 65534 65534 65534");
    // Bit 10 is CAP_NET_BIND_SERVICE, and it is the only effective capability.
    assert_eq!(status_field(pid, "CapEff"), "0000000000000400");
    let got = curl_get(
        &Target::for_server(&server).via(listen),
        "/f.bin",
        Mode::Pasv,
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    got.assert_ok("download through the unprivileged ftpgate");
    assert!(got.stdout == body, "downloaded bytes differ");
}
