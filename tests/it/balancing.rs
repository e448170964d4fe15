//! Balancing over real vsftpd backends through an in-process ftpgate:
//! weights, least-connections, source-address hash, and draining by reload
//! (running sessions on a drained backend go on). Which backend a session
//! reached is read from a file whose content names it.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

fn backend(name: &str) -> FtpServer {
    FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "who.txt", name.as_bytes());
    })
}

/// A logged-in session from `from`.
fn session_from(gw: &Gateway, from: Ipv4Addr) -> suppaftp::FtpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    s.connect(&gw.addr.into()).unwrap();
    let mut f = suppaftp::FtpStream::connect_with_stream(TcpStream::from(s)).unwrap();
    f.login("anonymous", "x@y").unwrap();
    f
}

fn who(f: &mut suppaftp::FtpStream) -> String {
    String::from_utf8(f.retr_as_buffer("who.txt").unwrap().into_inner()).unwrap()
}

/// Opens a session, reads who.txt, quits.
fn one(gw: &Gateway, from: Ipv4Addr) -> String {
    let mut f = session_from(gw, from);
    let w = who(&mut f);
    f.quit().unwrap();
    w
}

fn two_backends(test: &str) -> Option<(FtpServer, FtpServer)> {
    peers::available_or_skip(ServerKind::Vsftpd, test).then(|| (backend("A"), backend("B")))
}

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[test]
fn balancing_weights_share_sessions_in_proportion() {
    let Some((a, b)) = two_backends("balancing_weights_share_sessions_in_proportion") else {
        return;
    };
    let gw = gateway::start(
        &[a.addr, b.addr],
        &format!("[backend_weights]\n\"{}\" = 3\n", a.addr),
    );
    let seen: Vec<String> = (0..8).map(|_| one(&gw, LOCAL)).collect();
    assert_eq!(seen.iter().filter(|w| *w == "A").count(), 6, "{seen:?}");
    assert_eq!(seen.iter().filter(|w| *w == "B").count(), 2, "{seen:?}");
}

#[test]
fn balancing_least_connections_fills_the_idle_backend() {
    let Some((a, b)) = two_backends("balancing_least_connections_fills_the_idle_backend") else {
        return;
    };
    let gw = gateway::start(
        &[a.addr, b.addr],
        "backend_policy = \"least_connections\"\n",
    );
    // A session held open on one backend: every new one goes to the other,
    // once the previous short session has ended inside ftpgate too.
    let mut held = session_from(&gw, LOCAL);
    let busy = who(&mut held);
    let idle = if busy == "A" { "B" } else { "A" };
    for _ in 0..4 {
        wait_active(&gw, 1);
        assert_eq!(
            one(&gw, LOCAL),
            idle,
            "least-connections chose the busy backend"
        );
    }
    held.quit().unwrap();
}

/// Waits until ftpgate counts `n` open sessions.
fn wait_active(gw: &Gateway, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let open: u64 = gw
            .metrics()
            .lines()
            .filter(|l| l.starts_with("ftpgate_sessions_active{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        if open == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} sessions open, want {n}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn balancing_source_hash_keeps_each_client_on_its_backend() {
    let Some((a, b)) = two_backends("balancing_source_hash_keeps_each_client_on_its_backend")
    else {
        return;
    };
    // The test's data connections come from 127.0.0.1 whatever the control
    // address: allow that here (source addresses are what is hashed).
    let gw = gateway::start(
        &[a.addr, b.addr],
        "backend_policy = \"source_hash\"\nallow_foreign_data_address = true\n",
    );
    let mut both = std::collections::BTreeSet::new();
    for last in 1..=12u8 {
        let from = Ipv4Addr::new(127, 0, 0, last);
        let first = one(&gw, from);
        for _ in 0..3 {
            assert_eq!(one(&gw, from), first, "client {from} moved");
        }
        both.insert(first);
    }
    assert_eq!(
        both.len(),
        2,
        "12 client addresses all hashed to one backend"
    );
}

#[test]
fn balancing_drain_by_reload_keeps_running_sessions() {
    let Some((a, b)) = two_backends("balancing_drain_by_reload_keeps_running_sessions") else {
        return;
    };
    let gw = gateway::start(&[a.addr, b.addr], "");
    // A session on A (round-robin starts with the first backend).
    let mut on_a = session_from(&gw, LOCAL);
    assert_eq!(who(&mut on_a), "A");
    let text = format!(
        "listen = [\"{}\"]\nbackends = [\"{}\", \"{}\"]\npublic_address = \"127.0.0.1\"\n\
         passive_ports = \"{}-{}\"\nhealth_check = false\nbackend_drain = [\"{}\"]\n",
        gw.config.listen[0], a.addr, b.addr, gw.passive_ports.0, gw.passive_ports.1, a.addr
    );
    gw.reload(&text).expect("reload draining A");
    for _ in 0..5 {
        assert_eq!(one(&gw, LOCAL), "B", "a draining backend got a new session");
    }
    // The running session on A goes on, transfers included.
    assert_eq!(who(&mut on_a), "A");
    on_a.quit().unwrap();
    // Undrain: A gets sessions again.
    gw.reload(&text.replace(&format!("backend_drain = [\"{}\"]\n", a.addr), ""))
        .expect("reload undraining A");
    let seen: Vec<String> = (0..4).map(|_| one(&gw, LOCAL)).collect();
    assert!(seen.iter().any(|w| w == "A"), "{seen:?}");
}

/// Issue 3's pinning test: three vsftpd serving different content, 100
/// sessions open at once (10 threads x 10), their transfers interleaved in
/// both passive modes; every data connection of a session reaches the
/// backend its first one did, and all three backends serve.
#[test]
fn balancing_three_backends_100_interleaved_sessions_pinned() {
    if !peers::available_or_skip(
        ServerKind::Vsftpd,
        "balancing_three_backends_100_interleaved_sessions_pinned",
    ) {
        return;
    }
    let (a, b, c) = (backend("A"), backend("B"), backend("C"));
    let gw = gateway::start(&[a.addr, b.addr, c.addr], "");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|th| {
            let (barrier, addr) = (barrier.clone(), gw.addr);
            std::thread::spawn(move || {
                let mut sessions: Vec<(suppaftp::FtpStream, String)> = (0..10)
                    .map(|i| {
                        let mut f = suppaftp::FtpStream::connect(addr).unwrap();
                        f.login("anonymous", "x@y").unwrap();
                        if (th + i) % 2 == 1 {
                            f.set_mode(suppaftp::Mode::ExtendedPassive);
                        }
                        (f, String::new())
                    })
                    .collect();
                barrier.wait();
                for round in 0..3 {
                    for (f, first) in sessions.iter_mut() {
                        let w = who(f);
                        if round == 0 {
                            *first = w;
                        } else {
                            assert_eq!(*first, w, "a data connection reached another backend");
                        }
                    }
                }
                sessions
                    .into_iter()
                    .map(|(mut f, w)| {
                        f.quit().unwrap();
                        w
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().expect("session thread failed"));
    }
    assert_eq!(all.len(), 100);
    for name in ["A", "B", "C"] {
        let n = all.iter().filter(|w| *w == name).count();
        assert!(
            (20..=47).contains(&n),
            "{name} served {n} of 100 sessions: {all:?}"
        );
    }
}
