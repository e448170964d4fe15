//! Per-user routing by an HTTP lookup service (`user_lookup_url`, issue
//! 17): a small HTTP/1.1 service inside the test (a std `TcpListener`
//! thread, optionally behind rustls with the test CA) answers for each
//! user, and ftpgate routes to real vsftpd servers whose `who.txt` names
//! them, so where a session went is proved by what it downloads. The
//! service counts the requests it gets, which shows the cache and the
//! single flight at work.
//!
//! vsftpd knows two anonymous login names, `anonymous` and `ftp`: other
//! client names reach it through the lookup's `"user"` rewrite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::certs::TestPki;
use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

// === the lookup service ===

/// What the service answers.
struct Answer {
    status: u16,
    body: String,
    /// Time before the answer is written.
    delay: Duration,
}

fn json(status: u16, body: &str) -> Answer {
    Answer {
        status,
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

type Handler = Arc<dyn Fn(&str, usize) -> Answer + Send + Sync>;

/// An HTTP/1.1 service on 127.0.0.1:0: one thread accepting, one per
/// connection; stopped on drop.
struct Service {
    addr: SocketAddr,
    /// Request targets (path and query), in arrival order.
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The value of `key` in a request target's query, percent-decoded.
fn query(target: &str, key: &str) -> String {
    let q = target.split_once('?').map_or("", |(_, q)| q);
    let raw = q
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or("");
    let b = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Reads one request head; `None` if the peer went away first.
fn read_target(s: &mut dyn ReadWrite) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next()?;
    let mut words = line.split(' ');
    (words.next()? == "GET").then_some(())?;
    Some(words.next()?.to_owned())
}

fn respond(s: &mut dyn ReadWrite, a: &Answer) {
    let reason = match a.status {
        200 => "OK",
        404 => "Not Found",
        _ => "Whatever",
    };
    let _ = write!(
        s,
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        a.status,
        a.body.len(),
        a.body
    );
    let _ = s.flush();
}

impl Service {
    /// Serves `handler(target, n)` (`n`: how many requests came before);
    /// with `tls`, behind rustls.
    fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            // Bounded: the test ends (drop) long before this.
            let until = Instant::now() + Duration::from_secs(300);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < until {
                let (s, _) = match listener.accept() {
                    Ok(a) => a,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let (reqs, handler, tls) = (Arc::clone(&reqs), Arc::clone(&handler), tls.clone());
                std::thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let serve = |io: &mut dyn ReadWrite| {
                        let Some(target) = read_target(io) else {
                            return;
                        };
                        let n = {
                            let mut r = reqs.lock().unwrap();
                            r.push(target.clone());
                            r.len() - 1
                        };
                        let a = handler(&target, n);
                        std::thread::sleep(a.delay);
                        respond(io, &a);
                    };
                    match tls {
                        Some(cfg) => {
                            let conn = rustls::ServerConnection::new(cfg).unwrap();
                            let mut io = rustls::StreamOwned::new(conn, s);
                            serve(&mut io);
                            io.conn.send_close_notify();
                            let _ = io.flush();
                        }
                        None => {
                            let mut io = s;
                            serve(&mut io);
                        }
                    }
                });
            }
        });
        Service {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn plain(handler: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> Service {
        Service::start(None, Arc::new(handler))
    }

    /// The `user_lookup_url` line asking this service for `{user}`.
    fn url_line(&self) -> String {
        format!(
            "user_lookup_url = \"http://{}/ftp-route?user={{user}}&ip={{client_ip}}&on={{listener}}\"\n",
            self.addr
        )
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests that asked for `user`.
    fn asked_for(&self, user: &str) -> usize {
        self.requests()
            .iter()
            .filter(|t| query(t, "user") == user)
            .count()
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// === FTP helpers ===

fn vsftpd(name: &str) -> FtpServer {
    FtpServer::start_with(ServerKind::Vsftpd, |root| {
        peers::put_file(root, "who.txt", name.as_bytes());
    })
}

fn three(test: &str) -> Option<(FtpServer, FtpServer, FtpServer)> {
    peers::available_or_skip(ServerKind::Vsftpd, test)
        .then(|| (vsftpd("A"), vsftpd("B"), vsftpd("C")))
}

/// One session as `user`: what `who.txt` says, i.e. which server it reached.
fn who(gw: &Gateway, user: &str) -> String {
    let mut f = suppaftp::FtpStream::connect(gw.addr).unwrap();
    f.login(user, "x@example.com")
        .unwrap_or_else(|e| panic!("login {user}: {e}"));
    let w = String::from_utf8(f.retr_as_buffer("who.txt").unwrap().into_inner()).unwrap();
    f.quit().unwrap();
    w
}

/// A raw control connection: the greeting, then one reply per command.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> (Raw, String) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut raw = Raw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = raw.reply();
        (raw, greeting)
    }

    /// The next complete reply (last line of a multi-line one), or
    /// `<closed>` at the end of the connection.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return format!("{all}<closed>");
            }
            all.push_str(&line);
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.reply()
    }
}

const LOOKUP_FAILED: &str = "421 Service not available: user lookup failed, try again later.";

/// `USER user` gets the lookup failure's 421 and the session ends.
fn assert_lookup_failed(gw: &Gateway, user: &str) {
    let (mut raw, greeting) = Raw::connect(gw.addr);
    assert!(greeting.starts_with("220 "), "{greeting}");
    let r = raw.cmd(&format!("USER {user}"));
    assert!(r.starts_with(LOOKUP_FAILED), "USER {user}: {r}");
    assert_eq!(raw.reply(), "<closed>", "USER {user}: the session ends");
}

/// Sum of every series of `name` whose labels include all of `labels`.
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
        let pairs: Vec<(&str, &str)> = inner
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|l| pairs.contains(l)) {
            sum += value.parse::<f64>().unwrap();
        }
    }
    sum
}

fn lookups(gw: &Gateway, outcome: &str) -> f64 {
    metric(gw, "ftpgate_user_lookups_total", &[("outcome", outcome)])
}

// === tests ===

/// Three servers, reached by pool, by a backend address and by a pool
/// with the user renamed; `[user_pool]` is consulted first and the
/// service never hears of its users; the placeholders carry the client
/// and the listener.
#[test]
fn user_lookup_routes_users_to_three_servers() {
    let Some((a, b, c)) = three("user_lookup_routes_users_to_three_servers") else {
        return;
    };
    let b_addr = b.addr;
    let svc = Service::plain(move |t, _| match query(t, "user").as_str() {
        "anonymous" => json(200, r#"{"pool": "pa"}"#),
        "ftp" => json(200, &format!(r#"{{"backend": "{b_addr}"}}"#)),
        "carol@acme" => json(200, r#"{"pool": "default", "user": "anonymous"}"#),
        "dave" => json(200, &format!(r#"{{"backend": "{b_addr}", "user": "ftp"}}"#)),
        // [user_pool] answers for her: asking would fail the login.
        "static" => json(500, ""),
        _ => json(404, ""),
    });
    let gw = gateway::start(
        &[c.addr],
        &format!(
            "{}[pool.pa]\nbackends = [\"{}\"]\n[pool.pb]\nbackends = [\"{}\"]\n\
             [user_pool]\nstatic = \"pa\"\n",
            svc.url_line(),
            a.addr,
            b.addr
        ),
    );
    assert_eq!(who(&gw, "anonymous"), "A");
    assert_eq!(who(&gw, "ftp"), "B");
    assert_eq!(who(&gw, "carol@acme"), "C", "renamed to anonymous");
    assert_eq!(who(&gw, "dave"), "B", "renamed to ftp");
    // vsftpd only knows anonymous and ftp: `static` reaching pa's vsftpd
    // is refused there, after ftpgate routed it without asking.
    let (mut raw, _) = Raw::connect(gw.addr);
    let r = raw.cmd("USER static");
    assert!(r.starts_with("530 ") || r.starts_with("331 "), "{r}");
    assert_eq!(svc.asked_for("static"), 0, "[user_pool] comes first");
    drop(raw);
    // Each user asked once: the second session of one is cached.
    assert_eq!(who(&gw, "anonymous"), "A");
    assert_eq!(svc.asked_for("anonymous"), 1);
    assert_eq!(lookups(&gw, "found"), 4.0);
    assert_eq!(
        metric(&gw, "ftpgate_user_lookup_cache_hits_total", &[]),
        1.0
    );
    let t = svc
        .requests()
        .into_iter()
        .find(|t| query(t, "user") == "carol@acme")
        .unwrap();
    assert_eq!(
        t,
        format!(
            "/ftp-route?user=carol%40acme&ip=127.0.0.1&on=127.0.0.1%3A{}",
            gw.port()
        )
    );
    assert!(
        metric(&gw, "ftpgate_user_lookup_duration_seconds_count", &[]) >= 4.0,
        "{}",
        gw.metrics()
    );
}

/// 404: `530 User not known here.`, a failed login like an unmapped user
/// (here the second ends the session), and kept for a short while.
#[test]
fn user_lookup_unknown_user_is_a_failed_login() {
    let Some((a, _b, c)) = three("user_lookup_unknown_user_is_a_failed_login") else {
        return;
    };
    let svc = Service::plain(|t, _| match query(t, "user").as_str() {
        "anonymous" => json(200, r#"{"pool": "pa"}"#),
        _ => json(404, r#"{"error": "no such user"}"#),
    });
    let gw = gateway::start(
        &[c.addr],
        &format!(
            "{}user_lookup_unknown_ttl = \"30s\"\nmax_login_failures = 2\nlogin_failure_delay = \"100ms\"\n\
             [pool.pa]\nbackends = [\"{}\"]\n",
            svc.url_line(),
            a.addr
        ),
    );
    let (mut raw, _) = Raw::connect(gw.addr);
    assert_eq!(raw.cmd("USER mallory"), "530 User not known here.\r\n");
    // The session goes on: a known user logs in.
    let r = raw.cmd("USER anonymous");
    assert!(r.starts_with("331 "), "vsftpd's reply expected: {r}");
    assert!(raw.cmd("PASS x@y").starts_with("230 "));
    assert!(raw.cmd("QUIT").starts_with("221 "));
    // Two unknown users reach max_login_failures.
    let (mut raw, _) = Raw::connect(gw.addr);
    assert!(raw.cmd("USER mallory").starts_with("530 "));
    let r = raw.cmd("USER trudy");
    assert!(r.starts_with("530 User not known here."), "{r}");
    assert!(raw.reply().starts_with("421 Too many failed logins"));
    assert!(
        metric(&gw, "ftpgate_logins_total", &[("result", "failure")]) >= 3.0,
        "{}",
        gw.metrics()
    );
    // mallory's 404 was kept (user_lookup_unknown_ttl).
    assert_eq!(svc.asked_for("mallory"), 1);
    assert_eq!(lookups(&gw, "unknown"), 2.0);
}

/// Fail closed: a 500, a body that does not parse, a service too slow,
/// a pool ftpgate does not have, a backend outside every pool: each
/// `421 ... try again later`, no server contacted. Failures are not
/// cached.
#[test]
fn user_lookup_failures_fail_closed() {
    let Some((a, _b, c)) = three("user_lookup_failures_fail_closed") else {
        return;
    };
    let svc = Service::plain(|t, _| match query(t, "user").as_str() {
        "e500" => json(500, r#"{"pool": "pa"}"#),
        "garbled" => json(200, "pool=pa"),
        "half" => json(200, r#"{"user": "anonymous"}"#),
        "slow" => Answer {
            delay: Duration::from_secs(3),
            ..json(200, r#"{"pool": "pa"}"#)
        },
        "nopool" => json(200, r#"{"pool": "nope"}"#),
        "outside" => json(200, r#"{"backend": "127.0.0.1:9", "user": "anonymous"}"#),
        _ => json(404, ""),
    });
    let gw = gateway::start(
        &[c.addr],
        &format!(
            "{}user_lookup_timeout = \"500ms\"\n[pool.pa]\nbackends = [\"{}\"]\n",
            svc.url_line(),
            a.addr
        ),
    );
    for user in ["e500", "garbled", "half", "nopool", "outside", "e500"] {
        assert_lookup_failed(&gw, user);
    }
    let started = Instant::now();
    assert_lookup_failed(&gw, "slow");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "user_lookup_timeout is 500ms, took {took:?}"
    );
    assert_eq!(svc.asked_for("e500"), 2, "a failure is not kept");
    assert_eq!(lookups(&gw, "bad_status"), 2.0);
    assert_eq!(lookups(&gw, "malformed"), 2.0);
    assert_eq!(lookups(&gw, "timeout"), 1.0);
    // The service answered these; ftpgate refused what they name.
    assert_eq!(lookups(&gw, "found"), 2.0);
    for s in [&a, &c] {
        assert!(
            !s.log().contains("anonymous"),
            "a refused login reached a server"
        );
    }
}

/// `user_lookup_fallback_pool` takes users whose lookup failed, not users
/// the service does not know, nor answers ftpgate refuses.
#[test]
fn user_lookup_fallback_pool_takes_failed_lookups() {
    let Some((a, b, c)) = three("user_lookup_fallback_pool_takes_failed_lookups") else {
        return;
    };
    let svc = Service::plain(|t, _| match query(t, "user").as_str() {
        "anonymous" => json(503, ""),
        "ftp" => json(200, r#"{"backend": "127.0.0.1:9"}"#),
        _ => json(404, ""),
    });
    let gw = gateway::start(
        &[c.addr],
        &format!(
            "{}user_lookup_fallback_pool = \"pb\"\n[pool.pa]\nbackends = [\"{}\"]\n\
             [pool.pb]\nbackends = [\"{}\"]\n",
            svc.url_line(),
            a.addr,
            b.addr
        ),
    );
    assert_eq!(who(&gw, "anonymous"), "B", "the fallback pool");
    assert_lookup_failed(&gw, "ftp");
    let (mut raw, _) = Raw::connect(gw.addr);
    assert!(raw.cmd("USER nobody").starts_with("530 "));
}

/// With `user_lookup_any_backend = true` the service may name a server
/// outside every pool.
#[test]
fn user_lookup_any_backend_reaches_a_server_outside_the_pools() {
    let Some((a, b, c)) = three("user_lookup_any_backend_reaches_a_server_outside_the_pools")
    else {
        return;
    };
    let b_addr = b.addr;
    let svc = Service::plain(move |t, _| match query(t, "user").as_str() {
        "anonymous" => json(200, &format!(r#"{{"backend": "{b_addr}"}}"#)),
        _ => json(200, r#"{"pool": "pa"}"#),
    });
    let gw = gateway::start(
        &[c.addr],
        &format!(
            "{}user_lookup_any_backend = true\n[pool.pa]\nbackends = [\"{}\"]\n",
            svc.url_line(),
            a.addr
        ),
    );
    assert_eq!(who(&gw, "anonymous"), "B");
    assert_eq!(who(&gw, "ftp"), "A");
}

/// Answers expire after `user_lookup_cache_ttl`: the next login asks
/// again, and goes where the new answer says.
#[test]
fn user_lookup_cache_expires() {
    let Some((a, b, c)) = three("user_lookup_cache_expires") else {
        return;
    };
    let svc = Service::plain(|_, n| match n {
        0 => json(200, r#"{"pool": "pa"}"#),
        _ => json(200, r#"{"pool": "pb"}"#),
    });
    let gw = gateway::start(
        &[c.addr],
        &format!(
            "{}user_lookup_cache_ttl = \"1s\"\n[pool.pa]\nbackends = [\"{}\"]\n\
             [pool.pb]\nbackends = [\"{}\"]\n",
            svc.url_line(),
            a.addr,
            b.addr
        ),
    );
    let first = Instant::now();
    assert_eq!(who(&gw, "anonymous"), "A");
    if first.elapsed() < Duration::from_millis(800) {
        assert_eq!(who(&gw, "anonymous"), "A", "kept within the TTL");
        assert_eq!(svc.asked_for("anonymous"), 1);
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(who(&gw, "anonymous"), "B", "asked again after the TTL");
    assert_eq!(svc.asked_for("anonymous"), 2);
}

/// A burst of concurrent logins of one user shares one request (single
/// flight; the cache is off, so only sharing can explain it).
#[test]
fn user_lookup_burst_of_one_user_makes_one_request() {
    let Some((a, _b, c)) = three("user_lookup_burst_of_one_user_makes_one_request") else {
        return;
    };
    const N: usize = 8;
    let svc = Service::plain(|_, _| Answer {
        delay: Duration::from_millis(1500),
        ..json(200, r#"{"pool": "pa"}"#)
    });
    let gw = Arc::new(gateway::start(
        &[c.addr],
        &format!(
            "{}user_lookup_cache_ttl = \"0s\"\nuser_lookup_timeout = \"10s\"\n\
             [pool.pa]\nbackends = [\"{}\"]\n",
            svc.url_line(),
            a.addr
        ),
    ));
    let barrier = Arc::new(Barrier::new(N));
    let seen = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let (gw, barrier, seen) = (Arc::clone(&gw), Arc::clone(&barrier), Arc::clone(&seen));
            std::thread::spawn(move || {
                let (mut raw, _) = Raw::connect(gw.addr);
                barrier.wait();
                let r = raw.cmd("USER anonymous");
                assert!(r.starts_with("331 "), "{r}");
                assert!(raw.cmd("PASS x@y").starts_with("230 "));
                seen.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(seen.load(Ordering::Relaxed), N);
    assert_eq!(svc.requests().len(), 1, "{:?}", svc.requests());
    assert_eq!(
        metric(&gw, "ftpgate_user_lookup_shared_total", &[]),
        (N - 1) as f64
    );
    // With the cache off, a later login asks again.
    assert_eq!(who(&gw, "anonymous"), "A");
    assert_eq!(svc.requests().len(), 2);
}

/// An `https://` service verified with `user_lookup_ca`; a service whose
/// certificate that CA did not sign is a failed lookup.
#[test]
fn user_lookup_over_https_with_a_test_ca() {
    let Some((a, _b, c)) = three("user_lookup_over_https_with_a_test_ca") else {
        return;
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = TestPki::new();
    let cfg = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(pki.server_cert_der.clone())],
                PrivateKeyDer::try_from(pki.server_key_der.clone()).unwrap(),
            )
            .unwrap(),
    );
    let svc = Service::start(
        Some(cfg),
        Arc::new(|_: &str, _| json(200, r#"{"pool": "pa"}"#)),
    );
    let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let tables = |ca: &std::path::Path| {
        format!(
            "user_lookup_url = \"https://{}/route/{{user}}\"\nuser_lookup_ca = {}\n\
             [pool.pa]\nbackends = [\"{}\"]\n",
            svc.addr,
            path(ca),
            a.addr
        )
    };
    let gw = gateway::start(&[c.addr], &tables(&pki.ca_pem));
    assert_eq!(who(&gw, "anonymous"), "A");
    assert_eq!(svc.requests(), vec!["/route/anonymous".to_owned()]);
    drop(gw);
    // Another CA: the service is not trusted, nothing is asked.
    let other = TestPki::new();
    let gw = gateway::start(&[c.addr], &tables(&other.ca_pem));
    assert_lookup_failed(&gw, "anonymous");
    assert_eq!(lookups(&gw, "io"), 1.0);
    assert_eq!(
        svc.requests().len(),
        1,
        "no request past a failed handshake"
    );
}
