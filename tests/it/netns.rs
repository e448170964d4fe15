//! Real network topologies for the NAT tests (`nat.rs`): each host is a
//! network namespace, hosts are joined by veth pairs, routers get
//! addresses, routes, `ip_forward` and iptables rules, and the programs
//! under test (vsftpd, ftpgate, curl, lftp, Python's ftplib) run inside a
//! namespace through `ip netns exec NAME ...`.
//!
//! What it must never do: touch the machine's own network. Veth pairs are
//! created directly inside their two namespaces (`ip link add NAME netns A
//! type veth peer name PEER netns B`), so they never exist in the root
//! namespace and die with their namespace; every address is one of the
//! documentation or private ranges, configured only inside namespaces made
//! here. A [`Netns`] kills every process left inside it and deletes itself
//! on drop, also when the test panics; namespaces left by a test binary that
//! was killed outright are swept by the next run ([`Netns::new`]).
//!
//! Needs root, `ip` (iproute2, which also brings `ss`) and `iptables`
//! ([`available_or_skip`]; with `FTPGATE_REQUIRE_PEERS=1` a missing piece
//! fails the test). Every wait is bounded: setup commands by
//! [`SETUP_TIMEOUT`], client runs by [`CLIENT_TIMEOUT`], start-up of
//! servers by [`START_TIMEOUT`].
//!
//! The kernel's FTP helper (`nf_conntrack_ftp` + `nf_nat_ftp`) rewrites
//! `227`/`PORT` in plaintext FTP crossing a NAT and would hide the very
//! failures these tests prove. Linux stopped attaching it by default in 4.7
//! (the `nf_conntrack_helper` sysctl, removed in 6.0); since then only an
//! explicit rule (`-j CT --helper ftp`, nft `ct helper`) attaches it.
//! [`Netns::new`] writes the sysctl to 0 where it still exists, and
//! [`Netns::assert_no_ftp_helper`] checks that no rule attaches a helper
//! (`/proc/net/nf_conntrack` does not show helpers, so the rules are
//! what can be checked).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::clients::{self, Output, Target};
use crate::peers::{self, ServerKind};

/// Longest any one setup command (`ip`, `iptables`, `sysctl`, `ss`) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest any one client run (curl, lftp, python3) may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a server (vsftpd, ftpgate) may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Prefix of every namespace name: `ftpgt<pid>-<n>-<role>`.
const PREFIX: &str = "ftpgt";

// === availability ===

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn missing_parts() -> Vec<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces)".to_string());
    }
    if !runs("ip", "-V") {
        missing.push("ip (iproute2)".to_string());
    }
    if !runs("ss", "-V") {
        missing.push("ss (iproute2)".to_string());
    }
    if !runs("iptables", "-V") {
        missing.push("iptables".to_string());
    }
    for (bin, arg) in [("curl", "--version"), ("lftp", "--version")] {
        if !runs(bin, arg) {
            missing.push(bin.to_string());
        }
    }
    if !runs(&clients::python3().display().to_string(), "--version") {
        missing.push("python3".to_string());
    }
    missing
}

/// Whether namespace topologies can be built here (root, `ip`, `ss`,
/// `iptables`, vsftpd, curl, lftp, python3). With `FTPGATE_REQUIRE_PEERS=1`
/// anything missing panics; otherwise a `SKIP` line for `test` is printed
/// and the caller returns.
pub fn available_or_skip(test: &str) -> bool {
    let missing = missing_parts();
    if !missing.is_empty() {
        assert!(
            !peers::peers_required(),
            "FTPGATE_REQUIRE_PEERS=1 but the NAT topologies cannot be built: missing {}. \
             Run scripts/install-test-deps.sh as root.",
            missing.join(", ")
        );
        println!(
            "SKIP {test}: missing {}; run as root after scripts/install-test-deps.sh",
            missing.join(", ")
        );
        return false;
    }
    peers::available_or_skip(ServerKind::Vsftpd, test)
}

// === running setup commands ===

/// Runs `program args` (on the host), bounded by [`SETUP_TIMEOUT`];
/// panics with its output unless it exits 0.
#[track_caller]
fn host_cmd(program: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = clients::run(cmd, None, SETUP_TIMEOUT);
    assert!(out.ok, "`{program} {}` failed: {out:?}", args.join(" "));
    out.stdout_str()
}

/// The same, never panicking (for teardown).
fn host_cmd_quiet(program: &str, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = clients::run(cmd, None, SETUP_TIMEOUT);
    out.ok.then(|| out.stdout_str())
}

// === Netns ===

/// One host: a network namespace with `lo` up. Dropped = every process
/// inside killed (by PID) and the namespace (with its veth ends) deleted.
pub struct Netns {
    name: String,
    role: String,
    /// iptables rules added through [`Netns::iptables`], in order, for
    /// failure messages and the README.
    rules: Mutex<Vec<String>>,
}

impl Netns {
    /// A new namespace named `ftpgt<pid>-<n>-<role>` (unique per test
    /// process and call), with `lo` up and the kernel's automatic
    /// conntrack helper assignment off where the sysctl still exists.
    pub fn new(role: &str) -> Netns {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        host_cmd("ip", &["netns", "add", &name]);
        // From here on, Drop deletes it whatever happens next.
        let ns = Netns {
            name,
            role: role.to_string(),
            rules: Mutex::new(Vec::new()),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        // Linux < 6.0: nf_conntrack_helper=1 would attach the FTP helper to
        // every connection to port 21. The file is per namespace.
        ns.run(&[
            "sh",
            "-c",
            "f=/proc/sys/net/netfilter/nf_conntrack_helper; if [ -e $f ]; then echo 0 > $f; fi",
        ]);
        ns
    }

    /// A namespace that forwards IPv4 (`net.ipv4.ip_forward=1`).
    pub fn router(role: &str) -> Netns {
        let ns = Netns::new(role);
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role it was created with ("edge", "client", ...).
    pub fn role(&self) -> &str {
        &self.role
    }

    /// `ip netns exec NAME program`: add arguments and run or spawn it.
    /// `ip netns exec` execs the program in place, so the child's PID is
    /// the program's.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `args` inside the namespace, bounded by [`SETUP_TIMEOUT`];
    /// panics with its output unless it exits 0. Returns stdout.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args, SETUP_TIMEOUT);
        assert!(
            out.ok,
            "[{}] `{}` failed: {out:?}",
            self.name,
            args.join(" ")
        );
        out.stdout_str()
    }

    /// Runs `args` inside the namespace, bounded by `timeout`, whatever it returns.
    pub fn try_run(&self, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = self.exec(args[0]);
        cmd.args(&args[1..]);
        clients::run(cmd, None, timeout)
    }

    /// `ip -n NAME args...`.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        host_cmd("ip", &all)
    }

    /// `sysctl -w key=value` inside the namespace.
    #[track_caller]
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Adds `cidr` (e.g. "10.0.0.1/24") to interface `dev`.
    #[track_caller]
    pub fn addr(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
    }

    /// Adds a route to `dest` ("default" or a CIDR) via `gateway`.
    #[track_caller]
    pub fn route(&self, dest: &str, gateway: &str) {
        self.ip(&["route", "add", dest, "via", gateway]);
    }

    /// `iptables RULE` inside the namespace; `rule` is split on whitespace
    /// (no quoting), e.g. `-t nat -A POSTROUTING -o wan0 -j MASQUERADE`.
    #[track_caller]
    pub fn iptables(&self, rule: &str) {
        let mut args = vec!["iptables", "-w", "5"];
        args.extend(rule.split_whitespace());
        self.run(&args);
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule.to_string());
    }

    /// The rules added through [`Netns::iptables`], one `iptables ...` per line.
    pub fn rules(&self) -> String {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| format!("iptables {r}\n"))
            .collect()
    }

    /// `iptables-save` of every table: the rules as the kernel has them.
    pub fn iptables_save(&self) -> String {
        self.run(&["iptables-save"])
    }

    /// Packets counted by the first rule of `table`/`chain` whose
    /// `iptables -S`-style text contains `needle` (a rule without `-j` is a
    /// plain counter).
    #[track_caller]
    pub fn packets(&self, table: &str, chain: &str, needle: &str) -> u64 {
        let out = self.run(&["iptables", "-w", "5", "-t", table, "-S", chain, "-v"]);
        for line in out.lines() {
            if line.contains(needle) {
                // "-A INPUT -d 198.51.100.3/32 -p tcp -m tcp --dport 21 -c 0 0"
                let f: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = f.iter().position(|x| *x == "-c") {
                    return f[i + 1].parse().expect("packet count");
                }
            }
        }
        panic!(
            "[{}] no rule with {needle:?} in {table}/{chain}:\n{out}",
            self.name
        );
    }

    /// Panics if anything in this namespace attaches a conntrack helper
    /// (an iptables `CT --helper` rule, an nft `ct helper`), or if the old
    /// automatic assignment is on.
    #[track_caller]
    pub fn assert_no_ftp_helper(&self) {
        let save = self.iptables_save();
        assert!(
            !save.contains("--helper"),
            "[{}] a rule attaches a conntrack helper:\n{save}",
            self.name
        );
        let nft = self.try_run(&["nft", "list", "ruleset"], SETUP_TIMEOUT);
        assert!(
            !nft.stdout_str().contains("helper"),
            "[{}] an nft rule attaches a conntrack helper:\n{}",
            self.name,
            nft.stdout_str()
        );
        let auto = self.run(&[
            "sh",
            "-c",
            "cat /proc/sys/net/netfilter/nf_conntrack_helper 2>/dev/null || echo absent",
        ]);
        assert!(
            matches!(auto.trim(), "0" | "absent"),
            "[{}] nf_conntrack_helper = {auto}",
            self.name
        );
    }

    /// Local TCP addresses listening inside the namespace (`ss -Hltn`).
    pub fn listening(&self) -> Vec<String> {
        let out = self.try_run(&["ss", "-Hltn"], SETUP_TIMEOUT);
        out.stdout_str()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
            .collect()
    }

    /// Whether something listens on `addr` (or on the wildcard address
    /// with its port) inside the namespace.
    pub fn is_listening(&self, addr: SocketAddr) -> bool {
        let port = format!(":{}", addr.port());
        self.listening().iter().any(|l| {
            *l == addr.to_string()
                || (l.ends_with(&port)
                    && matches!(
                        l.trim_end_matches(&port),
                        "0.0.0.0" | "*" | "[::]" | "[::ffff:0.0.0.0]"
                    ))
        })
    }

    /// Waits (at most [`START_TIMEOUT`]) until every address in `addrs`
    /// listens inside the namespace, panicking with `proc`'s log if it
    /// exits first or the time runs out.
    #[track_caller]
    pub fn wait_listening(&self, proc: &mut NsProcess, addrs: &[SocketAddr]) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = proc.try_wait() {
                panic!(
                    "[{}] {} exited with {st} before listening on {addrs:?}:\n{}",
                    self.name,
                    proc.what,
                    proc.log()
                );
            }
            if addrs.iter().all(|a| self.is_listening(*a)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] {} not listening on {addrs:?} after {START_TIMEOUT:?} (listening: {:?}):\n{}",
                self.name,
                proc.what,
                self.listening(),
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns `cmd` (made with [`Netns::exec`]) as a long-lived child with
    /// stdout and stderr in files of its own.
    pub fn spawn(&self, what: &str, cmd: Command) -> NsProcess {
        NsProcess::spawn(&format!("{what} in {}", self.name), cmd)
    }

    // --- clients inside the namespace

    /// `curl -q -sS -v --connect-timeout 10 ARGS` inside the namespace
    /// (stdout: the file or listing; stderr: the conversation).
    pub fn curl(&self, args: &[&str]) -> Output {
        let mut cmd = self.exec("curl");
        cmd.args(["-q", "-sS", "-v", "--connect-timeout", "10"])
            .args(["--max-time", "18"])
            .args(args);
        clients::run(cmd, None, CLIENT_TIMEOUT)
    }

    /// lftp inside the namespace: logs in to `t` and runs `commands` (one
    /// per line). Settings as in `clients::lftp` (fail on the first error,
    /// one try, `net:timeout 10`, no TLS), then `settings` (`set ...` lines
    /// choosing the data mode, e.g. `set ftp:passive-mode off`). Runs with
    /// `-d`: stderr has the conversation.
    pub fn lftp(&self, t: &Target, settings: &str, commands: &str) -> Output {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let script = format!(
            "set cmd:fail-exit yes\n\
             set cmd:interactive no\n\
             set net:max-retries 1\n\
             set net:persist-retries 0\n\
             set net:timeout 10\n\
             set net:reconnect-interval-base 1\n\
             set net:reconnect-interval-max 1\n\
             set ftp:ssl-allow no\n\
             set xfer:clobber on\n\
             set cmd:verbose yes\n\
             {settings}\n\
             open -u {user},{pass} -p {port} {host}\n\
             {commands}\n",
            user = q(&t.user),
            pass = q(&t.pass),
            port = t.port,
            host = t.url_host(),
        );
        let work = tempfile::Builder::new()
            .prefix("ftpgate-nslftp-")
            .tempdir()
            .expect("tempdir");
        let file = work.path().join("script.lftp");
        fs::write(&file, script).expect("write lftp script");
        let mut cmd = self.exec("lftp");
        cmd.arg("-d").arg("-f").arg(&file);
        clients::run(cmd, None, CLIENT_TIMEOUT)
    }

    /// Runs a Python 3 script inside the namespace with `args` as
    /// `sys.argv[1:]`.
    pub fn python(&self, script: &str, args: &[&str]) -> Output {
        let (_work, cmd) = self.python_command(script, args);
        clients::run(cmd, None, CLIENT_TIMEOUT)
    }

    /// Runs [`FTPLIB_PRELUDE`] then `body` inside the namespace against
    /// `t`, with `args` as `ARGS`. Print results; an exception fails the run.
    pub fn ftplib(&self, t: &Target, body: &str, args: &[&str]) -> Output {
        let (_work, cmd) = self.ftplib_command(t, body, args);
        clients::run(cmd, None, CLIENT_TIMEOUT)
    }

    /// The command [`Netns::ftplib`] runs, for spawning it as a
    /// long-lived child instead; keep the returned dir while it runs.
    pub fn ftplib_command(&self, t: &Target, body: &str, args: &[&str]) -> (TempDir, Command) {
        let port = t.port.to_string();
        let mut all = vec![t.host.as_str(), &port, &t.user, &t.pass];
        all.extend_from_slice(args);
        self.python_command(&format!("{FTPLIB_PRELUDE}\n{body}\n"), &all)
    }

    fn python_command(&self, script: &str, args: &[&str]) -> (TempDir, Command) {
        let work = tempfile::Builder::new()
            .prefix("ftpgate-nspy-")
            .tempdir()
            .expect("tempdir");
        let file = work.path().join("script.py");
        fs::write(&file, script).expect("write python script");
        let mut cmd = self.exec(clients::python3());
        cmd.args(["-u", "-W", "ignore"]).arg(&file).args(args);
        (work, cmd)
    }

    fn pids(&self) -> Vec<u32> {
        let me = std::process::id();
        host_cmd_quiet("ip", &["netns", "pids", &self.name])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| *p != me)
            .collect()
    }
}

/// Temp dir type re-exported for [`Netns::ftplib_command`] callers.
pub type TempDir = tempfile::TempDir;

/// Python prelude of [`Netns::ftplib`]: `HOST, PORT, USER, PASS` from
/// argv, the rest in `ARGS`; `ftp` an unconnected `ftplib.FTP` with a 10 s
/// timeout that uses the 227 address as given (ftplib ignores it unless
/// told); `login()` connects and logs in; `sha256(bytes)`,
/// `get(path)` (RETR into bytes), `put(path, bytes)` (STOR),
/// `listing(path)` (LIST lines).
pub const FTPLIB_PRELUDE: &str = r#"
import ftplib, hashlib, io, os, socket, sys, time
HOST, PORT, USER, PASS = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ARGS = sys.argv[5:]
ftp = ftplib.FTP(timeout=10)
ftp.trust_server_pasv_ipv4_address = True

def login():
    print('WELCOME', ftp.connect(HOST, PORT).replace('\r', ' ').replace('\n', ' '), flush=True)
    print('LOGIN', ftp.login(USER, PASS), flush=True)

def sha256(b):
    return hashlib.sha256(b).hexdigest()

def get(path):
    b = io.BytesIO()
    ftp.retrbinary('RETR ' + path, b.write)
    return b.getvalue()

def put(path, data):
    return ftp.storbinary('STOR ' + path, io.BytesIO(data))

def listing(path=''):
    lines = []
    ftp.retrlines('LIST ' + path if path else 'LIST', lines.append)
    return lines
"#;

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever is still inside (sessions of a killed server,
        // clients of a panicked test), then delete the namespace; its veth
        // ends go with it (and their peers with them).
        for _ in 0..20 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            let mut args = vec!["-KILL".to_string()];
            args.extend(pids.iter().map(|p| p.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = host_cmd_quiet("kill", &args);
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..10 {
            if host_cmd_quiet("ip", &["netns", "del", &self.name]).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("netns: could not delete namespace {}", self.name);
    }
}

/// Deletes namespaces named `ftpgt<pid>-...` whose test process no longer
/// exists (a test binary killed before its destructors ran), killing
/// what is left inside them first.
fn sweep_stale() {
    let Some(list) = host_cmd_quiet("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        drop(Netns {
            name: name.to_string(),
            role: String::new(),
            rules: Mutex::new(Vec::new()),
        });
    }
}

/// Joins `a` and `b` with a veth pair made inside them (`a_if` in `a`,
/// `b_if` in `b`; names only need to be unique per namespace, at most 15
/// characters), gives each end its address (`cidr`, or "" for none) and
/// brings both up.
#[track_caller]
pub fn link(a: &Netns, a_if: &str, a_cidr: &str, b: &Netns, b_if: &str, b_cidr: &str) {
    assert!(a_if.len() <= 15 && b_if.len() <= 15, "interface names ≤ 15");
    host_cmd(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    );
    for (ns, dev, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        if !cidr.is_empty() {
            ns.addr(dev, cidr);
        }
        ns.ip(&["link", "set", dev, "up"]);
    }
}

// === NsProcess ===

/// A long-lived child inside a namespace (a server, or a client a test
/// steers while it runs). Dropped = killed and reaped.
pub struct NsProcess {
    what: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl NsProcess {
    fn spawn(what: &str, mut cmd: Command) -> NsProcess {
        let dir = tempfile::Builder::new()
            .prefix("ftpgate-nsproc-")
            .tempdir()
            .expect("tempdir");
        let out = fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = fs::File::create(dir.path().join("stderr")).expect("stderr file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        NsProcess {
            what: what.to_string(),
            child,
            dir,
        }
    }

    /// Its PID (the program's own: `ip netns exec` execs in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Both, labelled, for failure messages.
    pub fn log(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.what,
            self.stdout(),
            self.what,
            self.stderr()
        )
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `timeout` for it to exit; kills it after that.
    /// Returns the status, None if it had to be killed.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// Waits at most `timeout` until its stdout contains `needle`.
    #[track_caller]
    pub fn wait_stdout(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if out.contains(needle) {
                return out;
            }
            if let Some(st) = self.try_wait() {
                // It may have printed and exited in between.
                let out = self.stdout();
                assert!(
                    out.contains(needle),
                    "{} exited with {st} before printing {needle:?}:\n{}",
                    self.what,
                    self.log()
                );
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {needle:?} within {timeout:?}:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === servers inside a namespace ===

/// vsftpd running inside a namespace. Its sessions are its children in
/// the same namespace: the namespace's drop kills them.
pub struct NsVsftpd {
    /// Where it listens (`0.0.0.0:PORT` when bound to every address).
    pub addr: SocketAddr,
    /// The directory the anonymous login sees as `/` (uploads go to `upload/`).
    pub root: PathBuf,
    proc: NsProcess,
    _dir: tempfile::TempDir,
}

impl NsVsftpd {
    /// Starts vsftpd in `ns` on `addr` (an unspecified IP = every address)
    /// with the rig's settings (`peers.rs`: anonymous login, uploads into
    /// `upload/`, no per-session namespaces or seccomp) and its passive
    /// defaults (no `pasv_address`, any port): `fill` may put files into
    /// the root first ([`peers::put_file`]). Waits until it listens.
    pub fn start(ns: &Netns, addr: SocketAddr, fill: impl FnOnce(&Path)) -> NsVsftpd {
        NsVsftpd::start_with(ns, addr, "", fill)
    }

    /// [`NsVsftpd::start`] with `extra` lines appended to vsftpd.conf
    /// (e.g. `port_promiscuous=YES\n`).
    pub fn start_with(
        ns: &Netns,
        addr: SocketAddr,
        extra: &str,
        fill: impl FnOnce(&Path),
    ) -> NsVsftpd {
        let dir = tempfile::Builder::new()
            .prefix("ftpgate-nsvsftpd-")
            .tempdir()
            .expect("tempdir");
        let mode = |p: &Path, m: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(m)).expect("chmod");
        };
        mode(dir.path(), 0o755);
        let root = dir.path().join("root");
        let empty = dir.path().join("empty");
        fs::create_dir_all(root.join(peers::UPLOAD_DIR)).expect("mkdir root/upload");
        fs::create_dir_all(&empty).expect("mkdir empty");
        mode(&root, 0o755); // vsftpd refuses a writable anonymous root
        mode(&empty, 0o755);
        mode(&root.join(peers::UPLOAD_DIR), 0o777);
        fill(&root);
        let listen_address = if addr.ip().is_unspecified() {
            String::new()
        } else {
            format!("listen_address={}\n", addr.ip())
        };
        let conf = dir.path().join("vsftpd.conf");
        fs::write(
            &conf,
            format!(
                "listen=YES\n\
                 listen_ipv6=NO\n\
                 {listen_address}\
                 listen_port={port}\n\
                 background=NO\n\
                 anonymous_enable=YES\n\
                 local_enable=NO\n\
                 anon_root={root}\n\
                 write_enable=YES\n\
                 anon_upload_enable=YES\n\
                 anon_mkdir_write_enable=YES\n\
                 anon_other_write_enable=YES\n\
                 anon_umask=022\n\
                 anon_world_readable_only=NO\n\
                 secure_chroot_dir={empty}\n\
                 isolate=NO\n\
                 isolate_network=NO\n\
                 seccomp_sandbox=NO\n\
                 xferlog_enable=YES\n\
                 vsftpd_log_file={log}\n\
                 {extra}",
                port = addr.port(),
                root = root.display(),
                empty = empty.display(),
                log = dir.path().join("xfer.log").display(),
            ),
        )
        .expect("write vsftpd.conf");
        mode(&conf, 0o600);
        let mut cmd = ns.exec(ServerKind::Vsftpd.binary());
        cmd.arg(&conf);
        let mut proc = ns.spawn("vsftpd", cmd);
        ns.wait_listening(&mut proc, &[addr]);
        NsVsftpd {
            addr,
            root,
            proc,
            _dir: dir,
        }
    }

    /// `root/upload` on disk.
    pub fn upload_path(&self) -> PathBuf {
        self.root.join(peers::UPLOAD_DIR)
    }

    /// What vsftpd wrote.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// The real ftpgate binary running inside a namespace with a config file.
pub struct NsFtpgate {
    /// The configuration it was started with.
    pub config: String,
    proc: NsProcess,
    _dir: tempfile::TempDir,
}

impl NsFtpgate {
    /// Writes `config` to a file, runs `ftpgate --config FILE` in `ns` and
    /// waits until it listens on every address of `listen`. A config the
    /// binary rejects panics with its error.
    #[track_caller]
    pub fn start(ns: &Netns, config: &str, listen: &[SocketAddr]) -> NsFtpgate {
        let dir = tempfile::Builder::new()
            .prefix("ftpgate-nsgate-")
            .tempdir()
            .expect("tempdir");
        let file = dir.path().join("ftpgate.toml");
        fs::write(&file, config).expect("write ftpgate.toml");
        let mut cmd = ns.exec(env!("CARGO_BIN_EXE_ftpgate"));
        cmd.arg("--config").arg(&file);
        let mut proc = ns.spawn("ftpgate", cmd);
        ns.wait_listening(&mut proc, listen);
        NsFtpgate {
            config: config.to_string(),
            proc,
            _dir: dir,
        }
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

// === small helpers ===

/// SHA-256 of `b` as lowercase hex (what [`FTPLIB_PRELUDE`]'s `sha256` prints).
pub fn sha_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `ip:port` as a SocketAddr.
pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().expect("IP literal"), port)
}

// === self-checks ===

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaces() -> String {
        host_cmd("ip", &["netns", "list"])
    }

    /// Two linked namespaces talk to each other, and a panic in the middle
    /// of a test still removes both namespaces and kills the process left
    /// running in one of them.
    #[test]
    fn netns_linked_and_torn_down_even_on_panic() {
        if !available_or_skip("netns_linked_and_torn_down_even_on_panic") {
            return;
        }
        let seen: Mutex<Option<(Vec<String>, u32)>> = Mutex::new(None);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let a = Netns::new("ta");
            let b = Netns::router("tb");
            link(&a, "eth0", "10.99.0.1/30", &b, "eth0", "10.99.0.2/30");
            // A listener in b, reached from a across the veth.
            let mut cmd = b.exec(clients::python3());
            cmd.args([
                "-c",
                "import socket; s = socket.create_server(('10.99.0.2', 4000)); \
                 c, _ = s.accept(); c.sendall(b'across'); c.close(); \
                 import time; time.sleep(60)",
            ]);
            b.iptables("-A INPUT -p tcp --dport 4000");
            let mut server = b.spawn("listener", cmd);
            b.wait_listening(&mut server, &[sa("10.99.0.2", 4000)]);
            let got = a.python(
                "import socket; print(socket.create_connection(('10.99.0.2', 4000), timeout=5).recv(100))",
                &[],
            );
            assert!(got.stdout_str().contains("b'across'"), "{got:?}");
            assert!(b.packets("filter", "INPUT", "--dport 4000") >= 3);
            assert_eq!(b.rules(), "iptables -A INPUT -p tcp --dport 4000\n");
            assert_eq!(b.run(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(), "1");
            // A process no guard knows about: the namespace must kill it.
            let pid: u32 = b
                .run(&["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
                .trim()
                .parse()
                .expect("pid");
            *seen.lock().unwrap() = Some((vec![a.name().into(), b.name().into()], pid));
            panic!("test panics with the topology up");
        }));
        assert!(result.is_err());
        let (names, pid) = seen.lock().unwrap().take().expect("topology was built");
        let list = namespaces();
        for n in &names {
            assert!(!list.contains(n.as_str()), "{n} left behind: {list}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            // Gone (an orphan: init reaps it), or about to be.
            if state.as_deref().is_none_or(|s| s.contains(") Z ")) {
                break;
            }
            assert!(Instant::now() < deadline, "pid {pid} still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
