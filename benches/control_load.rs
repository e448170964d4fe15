//! Question (issue 13): what does a proxy add to an FTP control session?
//! Round-trip latency of a NOOP and of a PASV + LIST, CPU and sessions per
//! second for whole short sessions, memory per idle logged-in session, and
//! how many idle sessions fit.
//!
//! A load generator and a light scripted FTP backend in one binary, driven
//! by `scripts/bench-control.sh` (which starts vsftpd, ftpgate and HAProxy,
//! runs the subcommands below against each and prints the comparison). Each
//! subcommand prints one line of `key=value` fields per result on stdout;
//! errors go to stderr and are counted, never hidden.
//!
//! - `noop`: one logged-in session per `--target` (a comma-separated list),
//!   `--count` NOOP round trips each after `--warmup`, in blocks of
//!   `--block` back-to-back rounds per target, the targets taking turns;
//!   median and percentiles per target (blocking socket, TCP_NODELAY).
//! - `list`: the same with rounds of PASV, data connect, LIST, 150, the
//!   listing to EOF, 226, timed from PASV sent to 226 read.
//! - `sessions`: `--clients` tasks each looping whole sessions (connect,
//!   220, USER, PASS, PASV, data connect, LIST, 226, QUIT, 221, EOF) for
//!   `--warmup` then `--seconds`; the sessions completed inside that window,
//!   per second, the CPU time of `--pid` over the window (utime + stime from
//!   `/proc/PID/stat`), per session, and every failed session as an error.
//! - `idle`: opens logged-in sessions (220, USER, PASS, 230) up to each of
//!   `--levels` and holds them; RSS of `--pid` (`VmRSS`) before and at each
//!   level, per session. `--list-first yes`: each session runs a PASV +
//!   LIST before it is held (idle after a transfer).
//! - `backend`: the light backend for `idle` (thousands of vsftpd processes
//!   would measure vsftpd): greets, answers USER, PASS, NOOP, TYPE, PASV,
//!   LIST (5 entries) and QUIT, 502 to the rest; exits after
//!   `--max-seconds`.
//!
//! Client options: `--user`, `--pass` (default anonymous login),
//! `--data-host reply|control` (connect data to the 227's address, or to
//! the control connection's with the 227's port), `--quickack yes`
//! (TCP_QUICKACK before each read: acknowledge at once).
//!
//! Without a subcommand (as `cargo test --benches` and `cargo bench` run
//! it) it runs each subcommand briefly against its own light backend, about
//! a second, and exits 0 when nothing failed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Any single reply or connect that takes longer is an error.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Entries the light backend lists (the bench script's vsftpd root has as many).
const LIST_ENTRIES: usize = 5;

/// How many error messages are printed (all are counted).
const ERRORS_SHOWN: u64 = 5;

/// `--quickack yes`: TCP_QUICKACK before every read of the client.
static QUICKACK: AtomicBool = AtomicBool::new(false);

/// Asks the kernel to acknowledge what arrives next at once, when
/// `--quickack yes` (the kernel clears it again on its own).
fn quickack<S: std::os::fd::AsFd>(s: &S) {
    if QUICKACK.load(Ordering::Relaxed) {
        let _ = socket2::SockRef::from(s).set_quickack(true);
    }
}

type Res<T> = Result<T, String>;

fn main() {
    let mut argv = std::env::args().skip(1);
    let cmd = argv.next();
    let rest: Vec<String> = argv.collect();
    let outcome = match cmd.as_deref() {
        Some("noop") => Args::parse(&rest).and_then(|a| cmd_noop(&a)),
        Some("list") => Args::parse(&rest).and_then(|a| cmd_list(&a)),
        Some("sessions") => Args::parse(&rest).and_then(|a| cmd_sessions(&a)),
        Some("idle") => Args::parse(&rest).and_then(|a| cmd_idle(&a)),
        Some("backend") => Args::parse(&rest).and_then(|a| cmd_backend(&a)),
        // `cargo test --benches` passes nothing (or test-harness flags),
        // `cargo bench` passes `--bench`: a quick self-check either way.
        _ => self_check(),
    };
    match outcome {
        Ok(0) => {}
        Ok(errors) => {
            eprintln!("control_load: {errors} errors");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("control_load: {e}");
            std::process::exit(1);
        }
    }
}

// === arguments ===

/// `--key value` pairs; every key must be used (a typo is an error).
struct Args {
    map: HashMap<String, String>,
    used: Mutex<Vec<String>>,
}

impl Args {
    fn parse(v: &[String]) -> Res<Args> {
        let mut map = HashMap::new();
        let mut it = v.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --key, got {k:?}"))?;
            let val = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), val.clone());
        }
        Ok(Args {
            map,
            used: Mutex::new(Vec::new()),
        })
    }

    fn opt(&self, key: &str) -> Option<&str> {
        self.used.lock().unwrap().push(key.to_string());
        self.map.get(key).map(String::as_str)
    }

    fn str_or(&self, key: &str, default: &str) -> String {
        self.opt(key).unwrap_or(default).to_string()
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Res<T> {
        match self.opt(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: bad number {v:?}")),
        }
    }

    fn addr(&self, key: &str) -> Res<SocketAddr> {
        let v = self
            .opt(key)
            .ok_or_else(|| format!("--{key} is required"))?;
        v.parse().map_err(|_| format!("--{key}: bad address {v:?}"))
    }

    /// A comma-separated list of addresses.
    fn addrs(&self, key: &str) -> Res<Vec<SocketAddr>> {
        let v = self
            .opt(key)
            .ok_or_else(|| format!("--{key} is required"))?;
        v.split(',')
            .map(|s| s.parse().map_err(|_| format!("--{key}: bad address {s:?}")))
            .collect()
    }

    /// Fails on keys nobody asked for.
    fn done(&self) -> Res<()> {
        let used = self.used.lock().unwrap();
        for k in self.map.keys() {
            if !used.contains(k) {
                return Err(format!("unknown option --{k}"));
            }
        }
        Ok(())
    }
}

/// Where a client connects for data after a 227.
#[derive(Clone, Copy)]
enum DataHost {
    /// The address in the 227 reply (a strict client: proves the rewrite).
    Reply,
    /// The control connection's address with the 227's port (curl's
    /// default); for a server whose `pasv_address` names a proxy.
    Control,
}

impl DataHost {
    fn parse(s: &str) -> Res<DataHost> {
        match s {
            "reply" => Ok(DataHost::Reply),
            "control" => Ok(DataHost::Control),
            _ => Err(format!("--data-host: reply or control, not {s:?}")),
        }
    }
}

/// Login of every session.
#[derive(Clone)]
struct Login {
    user: String,
    pass: String,
}

impl Login {
    fn from(a: &Args) -> Login {
        QUICKACK.store(a.str_or("quickack", "no") == "yes", Ordering::Relaxed);
        Login {
            user: a.str_or("user", "anonymous"),
            pass: a.str_or("pass", "bench@example.com"),
        }
    }
}

// === replies ===

/// A whole reply at the start of `buf`: its code and the bytes it spans.
/// RFC 959 4.2: a multi-line reply starts with "ddd-" and ends with a line
/// starting "ddd ". A first line that is not a reply gives code 0.
fn split_reply(buf: &[u8]) -> Option<(u16, usize)> {
    let mut start = 0;
    let mut first: Option<[u8; 3]> = None;
    loop {
        let end = start + buf[start..].iter().position(|&b| b == b'\n')? + 1;
        let line = &buf[start..end];
        let coded = line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit);
        match first {
            None if !coded => return Some((0, end)),
            None => {
                let c = [line[0], line[1], line[2]];
                if line[3] != b'-' {
                    return Some((code_of(c), end));
                }
                first = Some(c);
            }
            Some(c) => {
                if coded && line[..3] == c && line[3] == b' ' {
                    return Some((code_of(c), end));
                }
            }
        }
        start = end;
    }
}

fn code_of(c: [u8; 3]) -> u16 {
    c.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0'))
}

/// The address of a 227 reply: the six numbers after the code.
fn parse_227(text: &[u8]) -> Option<SocketAddr> {
    let body = text.get(4..)?;
    let from = body.iter().position(u8::is_ascii_digit)?;
    let nums: Vec<u16> = body[from..]
        .split(|b| !b.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(6)
        .map(|s| std::str::from_utf8(s).ok()?.parse().ok())
        .collect::<Option<Vec<u16>>>()?;
    if nums.len() != 6 || nums.iter().any(|&n| n > 255) {
        return None;
    }
    let ip = Ipv4Addr::new(nums[0] as u8, nums[1] as u8, nums[2] as u8, nums[3] as u8);
    Some(SocketAddr::new(IpAddr::V4(ip), nums[4] * 256 + nums[5]))
}

fn data_addr(reply: &[u8], control: SocketAddr, host: DataHost) -> Res<SocketAddr> {
    let named = parse_227(reply).ok_or_else(|| format!("bad 227: {}", show(reply)))?;
    Ok(match host {
        DataHost::Reply => named,
        DataHost::Control => SocketAddr::new(control.ip(), named.port()),
    })
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

fn expect(what: &str, code: u16, text: &[u8], ok: &[u16]) -> Res<()> {
    if ok.contains(&code) {
        Ok(())
    } else {
        Err(format!("{what}: expected {ok:?}, got {}", show(text)))
    }
}

fn io_err(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

// === blocking client (latency) ===

/// A control connection with blocking reads: the fewest steps between a
/// reply's arrival and the clock, for the latency figures.
struct SyncCtl {
    s: StdStream,
    peer: SocketAddr,
    buf: Vec<u8>,
}

impl SyncCtl {
    fn connect(addr: SocketAddr) -> Res<SyncCtl> {
        let s = StdStream::connect_timeout(&addr, STEP_TIMEOUT).map_err(io_err("connect"))?;
        s.set_nodelay(true).map_err(io_err("nodelay"))?;
        s.set_read_timeout(Some(STEP_TIMEOUT))
            .map_err(io_err("timeout"))?;
        Ok(SyncCtl {
            s,
            peer: addr,
            buf: Vec::with_capacity(1024),
        })
    }

    fn reply(&mut self) -> Res<(u16, Vec<u8>)> {
        let mut chunk = [0u8; 2048];
        loop {
            if let Some((code, n)) = split_reply(&self.buf) {
                let text: Vec<u8> = self.buf.drain(..n).collect();
                return Ok((code, text));
            }
            quickack(&self.s);
            let n = self.s.read(&mut chunk).map_err(io_err("read reply"))?;
            if n == 0 {
                return Err("control connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn cmd(&mut self, line: &str) -> Res<(u16, Vec<u8>)> {
        self.s
            .write_all(line.as_bytes())
            .map_err(io_err("write command"))?;
        self.reply()
    }

    fn login(addr: SocketAddr, login: &Login) -> Res<SyncCtl> {
        let mut c = SyncCtl::connect(addr)?;
        let (code, t) = c.reply()?;
        expect("greeting", code, &t, &[220])?;
        let (code, t) = c.cmd(&format!("USER {}\r\n", login.user))?;
        if code == 331 {
            let (code, t) = c.cmd(&format!("PASS {}\r\n", login.pass))?;
            expect("PASS", code, &t, &[230])?;
        } else {
            expect("USER", code, &t, &[230])?;
        }
        Ok(c)
    }
}

/// Percentiles of nanosecond samples, in microseconds.
fn summary(mut ns: Vec<u64>) -> String {
    if ns.is_empty() {
        return "median_us=nan p10_us=nan p90_us=nan p99_us=nan".into();
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    format!(
        "median_us={:.1} p10_us={:.1} p90_us={:.1} p99_us={:.1}",
        at(0.5),
        at(0.1),
        at(0.9),
        at(0.99)
    )
}

fn cmd_noop(a: &Args) -> Res<u64> {
    let targets = a.addrs("target")?;
    let count: usize = a.num("count", 2000)?;
    let warmup: usize = a.num("warmup", 200)?;
    let block: usize = a.num("block", 100)?;
    let login = Login::from(a);
    a.done()?;
    let mut conns = targets
        .iter()
        .map(|&t| SyncCtl::login(t, &login))
        .collect::<Res<Vec<_>>>()?;
    let ns = in_blocks(&mut conns, count, warmup, block, |c, _| {
        let (code, text) = c.cmd("NOOP\r\n")?;
        expect("NOOP", code, &text, &[200])
    })?;
    for (c, samples) in conns.iter_mut().zip(ns) {
        let _ = c.cmd("QUIT\r\n");
        println!(
            "noop target={} count={count} {} errors=0",
            c.peer,
            summary(samples)
        );
    }
    Ok(0)
}

/// Times `op` on every connection: `warmup` untimed rounds each, then
/// blocks of `block` rounds on one connection after the other until each
/// has `count` samples. Within a block a connection is exercised back to
/// back, as a client does (its first round is not timed: that peer had
/// been idle during the other blocks); the blocks take turns so that load
/// from other work that comes and goes falls on every target alike.
fn in_blocks(
    conns: &mut [SyncCtl],
    count: usize,
    warmup: usize,
    block: usize,
    mut op: impl FnMut(&mut SyncCtl, usize) -> Res<()>,
) -> Res<Vec<Vec<u64>>> {
    let block = block.max(2);
    for (j, c) in conns.iter_mut().enumerate() {
        for _ in 0..warmup {
            op(c, j)?;
        }
    }
    let mut ns = vec![Vec::with_capacity(count); conns.len()];
    while ns.iter().any(|v| v.len() < count) {
        for (j, (c, samples)) in conns.iter_mut().zip(ns.iter_mut()).enumerate() {
            op(c, j)?;
            for _ in 1..block {
                if samples.len() >= count {
                    break;
                }
                let t = Instant::now();
                op(c, j)?;
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
    }
    Ok(ns)
}

/// One PASV + LIST round on a logged-in session; the listing's line count.
fn sync_list(c: &mut SyncCtl, host: DataHost) -> Res<usize> {
    let (code, text) = c.cmd("PASV\r\n")?;
    expect("PASV", code, &text, &[227])?;
    let addr = data_addr(&text, c.peer, host)?;
    let mut d = StdStream::connect_timeout(&addr, STEP_TIMEOUT).map_err(io_err("data connect"))?;
    d.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(io_err("timeout"))?;
    let (code, text) = c.cmd("LIST\r\n")?;
    expect("LIST", code, &text, &[125, 150])?;
    let mut listing = Vec::with_capacity(1024);
    quickack(&d);
    d.read_to_end(&mut listing)
        .map_err(io_err("read listing"))?;
    let (code, text) = c.reply()?;
    expect("after LIST", code, &text, &[226])?;
    Ok(listing.iter().filter(|&&b| b == b'\n').count())
}

fn cmd_list(a: &Args) -> Res<u64> {
    let targets = a.addrs("target")?;
    let count: usize = a.num("count", 300)?;
    let warmup: usize = a.num("warmup", 30)?;
    let block: usize = a.num("block", 20)?;
    let want: usize = a.num("expect-entries", LIST_ENTRIES)?;
    let hosts = a
        .str_or("data-host", "reply")
        .split(',')
        .map(DataHost::parse)
        .collect::<Res<Vec<_>>>()?;
    if hosts.len() != 1 && hosts.len() != targets.len() {
        return Err("--data-host: one value, or one per --target".into());
    }
    let login = Login::from(a);
    a.done()?;
    let mut conns = targets
        .iter()
        .map(|&t| SyncCtl::login(t, &login))
        .collect::<Res<Vec<_>>>()?;
    let ns = in_blocks(&mut conns, count, warmup, block, |c, j| {
        let lines = sync_list(c, hosts[j.min(hosts.len() - 1)])?;
        if lines == want {
            Ok(())
        } else {
            Err(format!("LIST gave {lines} entries, expected {want}"))
        }
    })?;
    for (c, samples) in conns.iter_mut().zip(ns) {
        let _ = c.cmd("QUIT\r\n");
        println!(
            "list target={} count={count} entries={want} {} errors=0",
            c.peer,
            summary(samples)
        );
    }
    Ok(0)
}

// === /proc readings ===

/// utime + stime of a process (and of its reaped children with
/// `children`), in clock ticks; fields 14-17 of /proc/PID/stat.
fn cpu_ticks(pid: u32, children: bool) -> Res<u64> {
    let path = if pid == 0 {
        "/proc/self/stat".to_string()
    } else {
        format!("/proc/{pid}/stat")
    };
    let s = std::fs::read_to_string(&path).map_err(io_err("read stat"))?;
    // Fields after the command name, which may contain spaces: the first
    // is field 3 (state), so utime (14) is at index 11.
    let rest = &s[s.rfind(')').ok_or("bad stat")? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let own = f[11] + f[12];
    Ok(if children { own + f[13] + f[14] } else { own })
}

/// Busy and total ticks of the whole machine (/proc/stat "cpu" line).
fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if v.len() < 8 {
        return (0, 1);
    }
    let idle = v[3] + v[4];
    let total: u64 = v.iter().take(8).sum();
    (total - idle, total)
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> Res<u64> {
    let path = if pid == 0 {
        "/proc/self/status".to_string()
    } else {
        format!("/proc/{pid}/status")
    };
    let s = std::fs::read_to_string(&path).map_err(io_err("read status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no VmRSS in {path}"))
}

// === async client (load) ===

struct AsyncCtl {
    s: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
}

async fn step<T>(what: &str, f: impl std::future::Future<Output = Res<T>>) -> Res<T> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what}: no answer within {STEP_TIMEOUT:?}"))?
}

impl AsyncCtl {
    async fn connect(addr: SocketAddr) -> Res<AsyncCtl> {
        let s = step("connect", async {
            TcpStream::connect(addr).await.map_err(io_err("connect"))
        })
        .await?;
        s.set_nodelay(true).map_err(io_err("nodelay"))?;
        Ok(AsyncCtl {
            s,
            peer: addr,
            buf: Vec::with_capacity(512),
        })
    }

    async fn reply(&mut self) -> Res<(u16, Vec<u8>)> {
        step("reply", async {
            let mut chunk = [0u8; 1024];
            loop {
                if let Some((code, n)) = split_reply(&self.buf) {
                    let text: Vec<u8> = self.buf.drain(..n).collect();
                    return Ok((code, text));
                }
                quickack(&self.s);
                let n = self
                    .s
                    .read(&mut chunk)
                    .await
                    .map_err(io_err("read reply"))?;
                if n == 0 {
                    return Err("control connection closed".into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
    }

    async fn cmd(&mut self, line: &str) -> Res<(u16, Vec<u8>)> {
        self.s
            .write_all(line.as_bytes())
            .await
            .map_err(io_err("write command"))?;
        self.reply().await
    }

    async fn login(addr: SocketAddr, login: &Login) -> Res<AsyncCtl> {
        let mut c = AsyncCtl::connect(addr).await?;
        let (code, t) = c.reply().await?;
        expect("greeting", code, &t, &[220])?;
        let (code, t) = c.cmd(&format!("USER {}\r\n", login.user)).await?;
        if code == 331 {
            let (code, t) = c.cmd(&format!("PASS {}\r\n", login.pass)).await?;
            expect("PASS", code, &t, &[230])?;
        } else {
            expect("USER", code, &t, &[230])?;
        }
        Ok(c)
    }

    /// QUIT, 221, then wait for the server to close first (so the
    /// TIME_WAIT state lands on the server's side, not on the client's
    /// ephemeral ports).
    async fn quit(mut self) -> Res<()> {
        let (code, t) = self.cmd("QUIT\r\n").await?;
        expect("QUIT", code, &t, &[221])?;
        step("close after 221", async {
            let mut b = [0u8; 64];
            loop {
                match self.s.read(&mut b).await {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => {}
                }
            }
        })
        .await
    }
}

/// One whole session: connect, login, PASV, data connect, LIST, 226, QUIT.
async fn whole_session(target: SocketAddr, login: &Login, host: DataHost, want: usize) -> Res<()> {
    let mut c = AsyncCtl::login(target, login).await?;
    pasv_list(&mut c, host, want).await?;
    c.quit().await
}

/// PASV, data connect, LIST (`want` entries), 226.
async fn pasv_list(c: &mut AsyncCtl, host: DataHost, want: usize) -> Res<()> {
    let (code, text) = c.cmd("PASV\r\n").await?;
    expect("PASV", code, &text, &[227])?;
    let addr = data_addr(&text, c.peer, host)?;
    let mut d = step("data connect", async {
        TcpStream::connect(addr)
            .await
            .map_err(io_err("data connect"))
    })
    .await?;
    let (code, text) = c.cmd("LIST\r\n").await?;
    expect("LIST", code, &text, &[125, 150])?;
    let mut listing = Vec::with_capacity(1024);
    quickack(&d);
    step("listing", async {
        d.read_to_end(&mut listing)
            .await
            .map_err(io_err("read listing"))
    })
    .await?;
    drop(d);
    let (code, text) = c.reply().await?;
    expect("after LIST", code, &text, &[226])?;
    let lines = listing.iter().filter(|&&b| b == b'\n').count();
    if lines != want {
        return Err(format!("LIST gave {lines} entries, expected {want}"));
    }
    Ok(())
}

fn runtime(threads: usize) -> Res<tokio::runtime::Runtime> {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().map_err(io_err("runtime"))
}

/// Counts errors and prints the first few.
#[derive(Default)]
struct Errors {
    n: AtomicU64,
}

impl Errors {
    fn add(&self, what: &str, e: &str) {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        if n < ERRORS_SHOWN {
            eprintln!("control_load: {what}: {e}");
        }
    }
    fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

fn cmd_sessions(a: &Args) -> Res<u64> {
    let target = a.addr("target")?;
    let clients: usize = a.num("clients", 1)?;
    let warmup: f64 = a.num("warmup", 0.5)?;
    let seconds: f64 = a.num("seconds", 3.0)?;
    let pid: u32 = a.num("pid", 0)?;
    let children = a.str_or("pid-children", "no") == "yes";
    let hz: f64 = a.num("clk-tck", 100.0)?;
    let threads: usize = a.num("threads", 1)?;
    let want: usize = a.num("expect-entries", LIST_ENTRIES)?;
    let host = DataHost::parse(&a.str_or("data-host", "reply"))?;
    let login = Login::from(a);
    a.done()?;
    if clients == 0 || seconds <= 0.0 {
        return Err("--clients and --seconds must be positive".into());
    }
    let rt = runtime(threads)?;
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Errors::default());
        // (finished at, duration) of every completed session.
        let times = Arc::new(Mutex::new(Vec::<(Instant, Duration)>::new()));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (stop, done, errors, times, login) = (
                stop.clone(),
                done.clone(),
                errors.clone(),
                times.clone(),
                login.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match whole_session(target, &login, host, want).await {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            mine.push((Instant::now(), t.elapsed()));
                        }
                        Err(e) => {
                            errors.add("session", &e);
                            // A refused connection must not spin.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                times.lock().unwrap().extend(mine);
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
        let (c0, p0, s0, m0) = (
            done.load(Ordering::Relaxed),
            cpu_ticks(pid, children)?,
            cpu_ticks(0, false)?,
            machine_ticks(),
        );
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let (c1, p1, s1, m1) = (
            done.load(Ordering::Relaxed),
            cpu_ticks(pid, children)?,
            cpu_ticks(0, false)?,
            machine_ticks(),
        );
        let t1 = Instant::now();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            // Each session is bounded by STEP_TIMEOUT per step.
            let _ = tokio::time::timeout(STEP_TIMEOUT * 12, t).await;
        }
        let n = c1 - c0;
        let secs = (t1 - t0).as_secs_f64();
        let cpu = (p1 - p0) as f64 / hz;
        let own = (s1 - s0) as f64 / hz;
        let busy = 100.0 * (m1.0 - m0.0) as f64 / ((m1.1 - m0.1).max(1)) as f64;
        let lat: Vec<u64> = times
            .lock()
            .unwrap()
            .iter()
            .filter(|(end, _)| *end >= t0 && *end <= t1)
            .map(|(_, d)| d.as_nanos() as u64)
            .collect();
        let per = if n > 0 {
            format!("{:.4}", cpu * 1000.0 / n as f64)
        } else {
            "nan".into()
        };
        println!(
            "sessions target={target} clients={clients} seconds={secs:.3} sessions={n} per_sec={:.1} \
             errors={} pid_cpu_s={cpu:.2} cpu_ms_per_session={per} self_cpu_s={own:.2} \
             machine_busy_pct={busy:.0} {}",
            n as f64 / secs,
            errors.get(),
            summary(lat)
        );
        Ok(errors.get())
    })
}

fn cmd_idle(a: &Args) -> Res<u64> {
    let target = a.addr("target")?;
    let pid: u32 = a.num("pid", 0)?;
    let levels: Vec<usize> = a
        .str_or("levels", "1000")
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("--levels: bad {s:?}")))
        .collect::<Res<_>>()?;
    let parallel: usize = a.num("open-concurrency", 64)?;
    let warmup: usize = a.num("warmup", 64)?;
    let settle: f64 = a.num("settle", 1.0)?;
    let list_first = a.str_or("list-first", "no") == "yes";
    let login = Login::from(a);
    a.done()?;
    let rt = runtime(1)?;
    rt.block_on(async move {
        let errors = Arc::new(Errors::default());
        // Warm-up: sessions opened and closed, so the proxy's threads,
        // pools and caches exist before the baseline is read.
        let warm = open_many(target, &login, warmup, parallel, &errors, list_first).await;
        for c in warm {
            let _ = c.quit().await;
        }
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
        let base = rss_kib(pid)?;
        let mut held: Vec<AsyncCtl> = Vec::new();
        for &level in &levels {
            let need = level.saturating_sub(held.len());
            let t = Instant::now();
            let opened = open_many(target, &login, need, parallel, &errors, list_first).await;
            let took = t.elapsed().as_secs_f64();
            held.extend(opened);
            tokio::time::sleep(Duration::from_secs_f64(settle)).await;
            // Every held session must still be open: one NOOP each would
            // wake them all, so check only that none was closed meanwhile.
            let rss = rss_kib(pid)?;
            let open = held.len();
            let per = if open > 0 {
                format!("{:.2}", (rss as f64 - base as f64) / open as f64)
            } else {
                "nan".into()
            };
            println!(
                "idle target={target} level={level} open={open} errors={} base_kib={base} \
                 rss_kib={rss} per_session_kib={per} open_seconds={took:.2}",
                errors.get()
            );
        }
        // Every held session still answers: none was dropped while idle.
        let held_n = held.len();
        let mut alive = 0usize;
        while !held.is_empty() {
            let batch: Vec<_> = held
                .drain(..held.len().min(parallel.max(1) * 8))
                .map(|mut c| async move {
                    let ok = matches!(c.cmd("NOOP\r\n").await, Ok((200, _)));
                    let _ = c.quit().await;
                    ok
                })
                .collect();
            alive += join_all(batch)
                .await
                .into_iter()
                .filter(|r| *r == Some(true))
                .count();
        }
        println!("idle-check target={target} held={held_n} alive={alive}");
        Ok(errors.get() + (held_n - alive) as u64)
    })
}

/// Runs futures as tasks, all at once; their results in order.
async fn join_all<F, T>(fs: Vec<F>) -> Vec<Option<T>>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let hs: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(hs.len());
    for h in hs {
        out.push(h.await.ok());
    }
    out
}

/// Opens and logs in `n` sessions, at most `parallel` at a time; the ones
/// that failed are counted in `errors`. `list_first`: each runs a PASV +
/// LIST before it is held (an idle session after a transfer).
async fn open_many(
    target: SocketAddr,
    login: &Login,
    n: usize,
    parallel: usize,
    errors: &Arc<Errors>,
    list_first: bool,
) -> Vec<AsyncCtl> {
    let mut out = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let batch = left.min(parallel.max(1));
        let fs: Vec<_> = (0..batch)
            .map(|_| {
                let login = login.clone();
                async move {
                    let mut c = AsyncCtl::login(target, &login).await?;
                    if list_first {
                        pasv_list(&mut c, DataHost::Reply, LIST_ENTRIES).await?;
                    }
                    Ok::<_, String>(c)
                }
            })
            .collect();
        for r in join_all(fs).await {
            match r {
                Some(Ok(c)) => out.push(c),
                Some(Err(e)) => errors.add("open", &e),
                None => errors.add("open", "task failed"),
            }
        }
        left -= batch;
    }
    out
}

// === light backend ===

fn cmd_backend(a: &Args) -> Res<u64> {
    let listen = a.addr("listen")?;
    let max: f64 = a.num("max-seconds", 1800.0)?;
    a.done()?;
    let rt = runtime(1)?;
    rt.block_on(async move {
        let l = TcpListener::bind(listen).await.map_err(io_err("bind"))?;
        eprintln!("control_load backend listening on {listen}");
        let _ = tokio::time::timeout(Duration::from_secs_f64(max), serve(l)).await;
        Ok(0)
    })
}

/// Accepts forever; one task per connection.
async fn serve(l: TcpListener) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                tokio::spawn(async move {
                    let _ = backend_session(s).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The scripted FTP server side of one connection.
async fn backend_session(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let ip = s.local_addr()?.ip();
    s.write_all(b"220 control_load light backend\r\n").await?;
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    let mut pasv: Option<TcpListener> = None;
    loop {
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        let line: Vec<u8> = buf.drain(..=end).collect();
        let verb = line
            .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
            .next()
            .unwrap_or(b"")
            .to_ascii_uppercase();
        match &verb[..] {
            b"USER" => s.write_all(b"331 Password please.\r\n").await?,
            b"PASS" => s.write_all(b"230 Logged in.\r\n").await?,
            b"NOOP" => s.write_all(b"200 NOOP ok.\r\n").await?,
            b"TYPE" => s.write_all(b"200 Type set.\r\n").await?,
            b"PASV" => {
                let l = TcpListener::bind((ip, 0)).await?;
                let p = l.local_addr()?.port();
                let IpAddr::V4(v4) = ip else {
                    s.write_all(b"425 IPv4 only.\r\n").await?;
                    continue;
                };
                let o = v4.octets();
                let r = format!(
                    "227 Entering Passive Mode ({},{},{},{},{},{}).\r\n",
                    o[0],
                    o[1],
                    o[2],
                    o[3],
                    p / 256,
                    p % 256
                );
                s.write_all(r.as_bytes()).await?;
                pasv = Some(l);
            }
            b"LIST" => match pasv.take() {
                None => s.write_all(b"425 Use PASV first.\r\n").await?,
                Some(l) => {
                    s.write_all(b"150 Here comes the directory listing.\r\n")
                        .await?;
                    match tokio::time::timeout(STEP_TIMEOUT, l.accept()).await {
                        Ok(Ok((mut d, _))) => {
                            let mut out = String::new();
                            for i in 0..LIST_ENTRIES {
                                out.push_str(&format!(
                                    "-rw-r--r--    1 0        0            1024 Jan 01 00:00 file{i}\r\n"
                                ));
                            }
                            d.write_all(out.as_bytes()).await?;
                            d.shutdown().await?;
                            drop(d);
                            s.write_all(b"226 Directory send OK.\r\n").await?;
                        }
                        _ => s.write_all(b"425 No data connection.\r\n").await?,
                    }
                }
            },
            b"QUIT" => {
                s.write_all(b"221 Goodbye.\r\n").await?;
                return Ok(());
            }
            _ => s.write_all(b"502 Not implemented.\r\n").await?,
        }
    }
}

// === self-check ===

/// Every subcommand, briefly, against a light backend in this process.
fn self_check() -> Res<u64> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = runtime(1).expect("runtime");
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(l.local_addr().expect("addr")).expect("send");
            serve(l).await;
        });
    });
    let backend = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("self-check backend: {e}"))?
        .to_string();
    let t = backend.as_str();
    let run = |f: fn(&Args) -> Res<u64>, args: &[&str]| -> Res<u64> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        f(&Args::parse(&v)?)
    };
    eprintln!("control_load: self-check against a light backend on {t} (scripts/bench-control.sh runs the benchmark)");
    check_parsers()?;
    let mut errors = 0;
    let two = format!("{t},{t}");
    errors += run(
        cmd_noop,
        &["--target", &two, "--count", "100", "--warmup", "10"],
    )?;
    errors += run(
        cmd_list,
        &[
            "--target",
            &two,
            "--count",
            "20",
            "--warmup",
            "2",
            "--data-host",
            "reply,control",
        ],
    )?;
    errors += run(
        cmd_sessions,
        &[
            "--target",
            t,
            "--clients",
            "4",
            "--warmup",
            "0.1",
            "--seconds",
            "0.3",
        ],
    )?;
    errors += run(
        cmd_idle,
        &[
            "--target", t, "--levels", "20,50", "--warmup", "4", "--settle", "0.05",
        ],
    )?;
    errors += run(
        cmd_idle,
        &[
            "--target",
            t,
            "--levels",
            "20",
            "--warmup",
            "4",
            "--settle",
            "0.05",
            "--list-first",
            "yes",
        ],
    )?;
    Ok(errors)
}

/// The reply splitter and the 227 parser on known inputs.
fn check_parsers() -> Res<()> {
    let m = b"211-Features:\r\n EPSV\r\n211 End\r\n230 x\r\n";
    let a: SocketAddr = "127.0.0.20:30000".parse().unwrap();
    let cases = [
        split_reply(b"220 hi\r\n") == Some((220, 8)),
        split_reply(b"220 hi\r").is_none(),
        split_reply(m) == Some((211, 31)),
        split_reply(b"garbage\r\n") == Some((0, 9)),
        parse_227(b"227 Entering Passive Mode (127,0,0,20,117,48).\r\n") == Some(a),
        parse_227(b"227 =127,0,0,20,117,48\r\n") == Some(a),
        parse_227(b"227 (1,2,3)\r\n").is_none(),
    ];
    match cases.iter().position(|ok| !ok) {
        None => Ok(()),
        Some(i) => Err(format!("parser self-check case {i} failed")),
    }
}
