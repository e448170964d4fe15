//! Real FTP servers (vsftpd, ProFTPD, pure-ftpd) started as child processes
//! on 127.0.0.1, each with a generated config in its own temp dir.
//!
//! The servers keep their default passive-mode settings (no forced passive
//! address, default passive port range): ftpgate, not the server, must make
//! the passive address right. Deviations from the defaults are only those a
//! test environment needs (see each `*_config` function).
//!
//! Logins:
//! - vsftpd: anonymous only (`anonymous` / any password). Its login root is
//!   read-only for the session user (vsftpd insists); uploads go to `upload/`.
//! - ProFTPD and pure-ftpd: virtual user `ftpgate` / `ftpgate-pass`, chrooted
//!   to the root, sessions running as `nobody:nogroup`.
//!
//! In every case the FTP path `/` is [`FtpServer::root`] and uploads are
//! allowed in [`FtpServer::upload_dir`] (`upload`). The servers need not be
//! installed system-wide: `scripts/install-test-deps.sh` unpacks ProFTPD and
//! pure-ftpd under `/opt/ftpgate-peers` (override with `FTPGATE_PEERS_DIR`).
//!
//! FTPS: [`FtpServer::start_tls`] starts the same servers with TLS (explicit
//! `AUTH TLS`, or implicit where the server has it), a certificate from
//! `certs::TestPki`, and [`TlsSetup::required`] choosing whether plain
//! sessions and plain data connections are refused. Every server keeps its
//! default of requiring data connections to resume the control connection's
//! TLS session where it has one (vsftpd `require_ssl_reuse=YES`, ProFTPD
//! without `NoSessionReuseRequired`); see each `*_tls_*` function.

#![allow(dead_code)]

use rand::Rng;
use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The kinds of real server the rig can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// vsftpd 3.0.3 (Debian's package, `/usr/sbin/vsftpd`).
    Vsftpd,
    /// ProFTPD 1.3.8 (unpacked from proftpd-core).
    Proftpd,
    /// pure-ftpd 1.0.50 (unpacked from pure-ftpd).
    PureFtpd,
}

/// Every server kind.
pub const ALL: [ServerKind; 3] = [
    ServerKind::Vsftpd,
    ServerKind::Proftpd,
    ServerKind::PureFtpd,
];

/// Virtual user of ProFTPD and pure-ftpd.
pub const VIRTUAL_USER: &str = "ftpgate";
/// Its password.
pub const VIRTUAL_PASS: &str = "ftpgate-pass";
/// SHA-512 crypt(3) hash of [`VIRTUAL_PASS`] (made once with Python's
/// `crypt.crypt(pw, crypt.mksalt(crypt.METHOD_SHA512))`). pure-pw's default
/// argon2id hash would cost ~3.5 s of CPU per login.
const VIRTUAL_PASS_SHA512: &str = "$6$xCwkfk6Xd278VhAH$WW0Kr2fNOYpf4RmRSLzSybmhs19xHucouzcXQI987YvXgv1C0ranqVEoqUU34XkT8uOkyTITitY4uuQKiDe63/";
/// Login of vsftpd (anonymous only).
pub const VSFTPD_USER: &str = "anonymous";
/// Any password works for vsftpd's anonymous login.
pub const VSFTPD_PASS: &str = "ftpgate@example.com";
/// The upload directory, relative to the login root, on every server.
pub const UPLOAD_DIR: &str = "upload";

/// uid/gid the ProFTPD and pure-ftpd sessions run as (`nobody`/`nogroup`).
const NOBODY: u32 = 65534;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 4;

impl ServerKind {
    /// Short lowercase name: "vsftpd", "proftpd", "pure-ftpd".
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Vsftpd => "vsftpd",
            ServerKind::Proftpd => "proftpd",
            ServerKind::PureFtpd => "pure-ftpd",
        }
    }

    /// The server binary this rig runs.
    pub fn binary(self) -> PathBuf {
        match self {
            ServerKind::Vsftpd => PathBuf::from("/usr/sbin/vsftpd"),
            ServerKind::Proftpd => peers_dir().join("usr/sbin/proftpd"),
            ServerKind::PureFtpd => peers_dir().join("usr/sbin/pure-ftpd"),
        }
    }

    /// Whether the server implements MLSD/MLST (vsftpd answers `500 Unknown command.`).
    pub fn supports_mlsd(self) -> bool {
        !matches!(self, ServerKind::Vsftpd)
    }

    /// Whether the rig can start this kind with implicit TLS (TLS from the
    /// first byte). Debian's pure-ftpd 1.0.50 is built without
    /// `--with-implicittls`: it has explicit `AUTH TLS` only.
    pub fn supports_implicit_tls(self) -> bool {
        !matches!(self, ServerKind::PureFtpd)
    }

    /// Whether the server refuses a TLS data connection that does not
    /// resume the control connection's TLS session (vsftpd
    /// `require_ssl_reuse=YES` and ProFTPD's mod_tls by default; pure-ftpd
    /// never resumes a session, so it cannot require it).
    pub fn requires_tls_session_reuse(self) -> bool {
        !matches!(self, ServerKind::PureFtpd)
    }

    /// A string every 220 greeting of this kind contains.
    pub fn banner_marker(self) -> &'static str {
        match self {
            ServerKind::Vsftpd => "vsFTPd",
            ServerKind::Proftpd => "ProFTPD",
            ServerKind::PureFtpd => "Pure-FTPd",
        }
    }
}

/// Where `scripts/install-test-deps.sh` unpacked ProFTPD and pure-ftpd.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("FTPGATE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ftpgate-peers"))
}

/// Whether `FTPGATE_REQUIRE_PEERS=1`: then a missing peer is a failure, not a skip.
pub fn peers_required() -> bool {
    std::env::var("FTPGATE_REQUIRE_PEERS")
        .map(|v| v == "1")
        .unwrap_or(false)
}

fn missing_parts(kind: ServerKind) -> Vec<String> {
    let mut need = vec![kind.binary()];
    match kind {
        ServerKind::Vsftpd => {}
        ServerKind::Proftpd => need.push(peers_dir().join("usr/lib/proftpd")),
        ServerKind::PureFtpd => need.push(peers_dir().join("usr/bin/pure-pw")),
    }
    let mut missing: Vec<String> = need
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if kind == ServerKind::Vsftpd && user_uid("ftp").is_none() {
        // vsftpd's anonymous sessions run as the system user "ftp" (made by
        // the vsftpd package) and chdir to its home first.
        missing.push("system user \"ftp\"".to_string());
    }
    missing
}

/// Whether `kind` can be started here. With `FTPGATE_REQUIRE_PEERS=1` a
/// missing server panics (CI must fail, not skip); otherwise the caller
/// should print a SKIP line and return.
pub fn available(kind: ServerKind) -> bool {
    let missing = missing_parts(kind);
    if missing.is_empty() {
        return true;
    }
    if peers_required() {
        panic!(
            "FTPGATE_REQUIRE_PEERS=1 but {} is not usable: missing {}. Run scripts/install-test-deps.sh as root.",
            kind.name(),
            missing.join(", ")
        );
    }
    false
}

/// What else `kind` needs to serve TLS: ProFTPD needs mod_tls, which is in
/// proftpd-mod-crypto, not in proftpd-core.
fn missing_tls_parts(kind: ServerKind) -> Vec<String> {
    let mut missing = missing_parts(kind);
    if kind == ServerKind::Proftpd {
        let m = peers_dir().join("usr/lib/proftpd/mod_tls.so");
        if !m.exists() {
            missing.push(m.display().to_string());
        }
    }
    missing
}

/// Like [`available`], for starting `kind` with TLS ([`FtpServer::start_tls`]).
/// With `FTPGATE_REQUIRE_PEERS=1` a missing server or TLS module panics.
pub fn available_tls(kind: ServerKind) -> bool {
    let missing = missing_tls_parts(kind);
    if missing.is_empty() {
        return true;
    }
    if peers_required() {
        panic!(
            "FTPGATE_REQUIRE_PEERS=1 but {} with TLS is not usable: missing {}. Run scripts/install-test-deps.sh as root.",
            kind.name(),
            missing.join(", ")
        );
    }
    false
}

/// `available_tls(kind)`, printing a SKIP line for `test` when it is not.
pub fn available_tls_or_skip(kind: ServerKind, test: &str) -> bool {
    let ok = available_tls(kind);
    if !ok {
        println!(
            "SKIP {test}: {} with TLS not installed (missing {}); run scripts/install-test-deps.sh",
            kind.name(),
            missing_tls_parts(kind).join(", ")
        );
    }
    ok
}

/// `available(kind)`, printing a SKIP line for `test` when it is not.
pub fn available_or_skip(kind: ServerKind, test: &str) -> bool {
    let ok = available(kind);
    if !ok {
        println!(
            "SKIP {test}: {} not installed (missing {}); run scripts/install-test-deps.sh",
            kind.name(),
            missing_parts(kind).join(", ")
        );
    }
    ok
}

fn user_uid(name: &str) -> Option<u32> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? == name {
            f.nth(1)?.parse().ok()
        } else {
            None
        }
    })
}

/// How [`FtpServer::start_tls`] sets up TLS on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSetup {
    /// Server certificate (PEM, leaf only).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key: PathBuf,
    /// Implicit TLS: the control port speaks TLS from the first byte (no
    /// `AUTH TLS`). Not on pure-ftpd ([`ServerKind::supports_implicit_tls`]).
    pub implicit: bool,
    /// Refuse logins without TLS and plain (`PROT C`) data connections:
    /// vsftpd force_anon_logins_ssl/force_anon_data_ssl, ProFTPD
    /// `TLSRequired on`, pure-ftpd `-Y 3`. When false, TLS is offered and
    /// plain FTP still works (pure-ftpd `-Y 1`).
    pub required: bool,
    /// Require a client certificate issued by a CA in this file (vsftpd
    /// only: `require_cert=YES`, `validate_cert=YES`, `ca_certs_file`).
    pub client_ca: Option<PathBuf>,
}

impl TlsSetup {
    /// Explicit `AUTH TLS`, optional, with the PKI's valid server certificate.
    pub fn explicit(pki: &crate::certs::TestPki) -> TlsSetup {
        TlsSetup {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            implicit: false,
            required: false,
            client_ca: None,
        }
    }

    /// Implicit TLS with the PKI's valid server certificate (TLS is then
    /// always required on the control connection).
    pub fn implicit(pki: &crate::certs::TestPki) -> TlsSetup {
        TlsSetup {
            implicit: true,
            ..TlsSetup::explicit(pki)
        }
    }

    /// The same with TLS required (see [`TlsSetup::required`]).
    pub fn required(self) -> TlsSetup {
        TlsSetup {
            required: true,
            ..self
        }
    }

    /// The same, requiring a client certificate issued by a CA in `ca`
    /// (vsftpd only).
    pub fn require_client_cert(self, ca: &Path) -> TlsSetup {
        TlsSetup {
            client_ca: Some(ca.to_path_buf()),
            ..self
        }
    }

    /// The same with another certificate and key (e.g. the PKI's expired one).
    pub fn with_cert(self, cert: &Path, key: &Path) -> TlsSetup {
        TlsSetup {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ..self
        }
    }
}

/// A running real FTP server; dropped = killed.
pub struct FtpServer {
    /// Which server.
    pub kind: ServerKind,
    /// The control address, 127.0.0.1:<port>.
    pub addr: SocketAddr,
    /// The directory the login sees as `/`.
    pub root: PathBuf,
    /// FTP path (relative to the login root) where uploads are allowed.
    pub upload_dir: String,
    /// A login that works.
    pub user: String,
    /// Its password.
    pub pass: String,
    /// How TLS is set up, for servers from [`FtpServer::start_tls`].
    pub tls: Option<TlsSetup>,
    child: Child,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl FtpServer {
    /// Starts the server with its default passive settings and waits until
    /// it answers 220 on `addr`.
    pub fn start(kind: ServerKind) -> FtpServer {
        FtpServer::start_with(kind, |_| {})
    }

    /// Like [`FtpServer::start`], but `fill` may put files into the root
    /// first. Files must be readable by others (mode 0644, dirs 0755: the
    /// default under umask 022) for the server's unprivileged session to
    /// serve them; [`put_file`] does that.
    pub fn start_with(kind: ServerKind, fill: impl FnOnce(&Path)) -> FtpServer {
        FtpServer::start_inner(kind, fill, false, None, None)
    }

    /// vsftpd on exactly `at` (an IPv4 loopback address and port), e.g.
    /// two servers on one port at 127.0.0.1 and 127.0.0.2.
    pub fn start_vsftpd_at(at: SocketAddr, fill: impl FnOnce(&Path)) -> FtpServer {
        FtpServer::start_inner(ServerKind::Vsftpd, fill, false, None, Some(at))
    }

    /// Starts `kind` with TLS as `tls` says (see [`TlsSetup`]); `fill` as in
    /// [`FtpServer::start_with`]. Waits for the 220 greeting: in clear text
    /// for explicit TLS, after a TLS handshake for implicit TLS. Panics if
    /// the server or its TLS module is missing (check
    /// [`available_tls_or_skip`] first) or if `kind` has no implicit TLS.
    pub fn start_tls(kind: ServerKind, tls: TlsSetup, fill: impl FnOnce(&Path)) -> FtpServer {
        if !available_tls(kind) {
            panic!(
                "{} with TLS is not installed (missing {}); run scripts/install-test-deps.sh as root, \
                 or check peers::available_tls() first",
                kind.name(),
                missing_tls_parts(kind).join(", ")
            );
        }
        assert!(
            !tls.implicit || kind.supports_implicit_tls(),
            "{} has no implicit TLS here (Debian builds pure-ftpd without --with-implicittls)",
            kind.name()
        );
        FtpServer::start_inner(kind, fill, false, Some(tls), None)
    }

    /// vsftpd listening on [::1] only (for IPv6 backends).
    pub fn start_vsftpd_v6(fill: impl FnOnce(&Path)) -> FtpServer {
        FtpServer::start_inner(ServerKind::Vsftpd, fill, true, None, None)
    }

    fn start_inner(
        kind: ServerKind,
        fill: impl FnOnce(&Path),
        v6: bool,
        tls: Option<TlsSetup>,
        at: Option<SocketAddr>,
    ) -> FtpServer {
        if !available(kind) {
            panic!(
                "{} is not installed (missing {}); run scripts/install-test-deps.sh as root, \
                 or check peers::available() first",
                kind.name(),
                missing_parts(kind).join(", ")
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("ftpgate-{}-", kind.name()))
            .tempdir()
            .expect("tempdir");
        set_mode(dir.path(), 0o755);
        let root = dir.path().join("root");
        let upload = root.join(UPLOAD_DIR);
        fs::create_dir_all(&upload).expect("mkdir root/upload");
        set_mode(&root, 0o755); // vsftpd: the anonymous root must not be writable
        set_mode(&upload, 0o777); // writable by the session user (ftp / nobody)
        fill(&root);

        let (user, pass) = match kind {
            ServerKind::Vsftpd => (VSFTPD_USER, VSFTPD_PASS),
            _ => (VIRTUAL_USER, VIRTUAL_PASS),
        };
        let log = dir.path().join("server.log");
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = at.map_or_else(free_port, |a| a.port());
            let addr: SocketAddr = if let Some(a) = at {
                a
            } else if v6 {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
            } else {
                SocketAddr::from(([127, 0, 0, 1], port))
            };
            let mut cmd = match kind {
                ServerKind::Vsftpd => vsftpd_command(dir.path(), &root, addr, tls.as_ref()),
                ServerKind::Proftpd => proftpd_command(dir.path(), &root, port, tls.as_ref()),
                ServerKind::PureFtpd => pureftpd_command(dir.path(), &root, port, tls.as_ref()),
            };
            let logf = fs::File::create(&log).expect("create server log");
            cmd.stdin(Stdio::null())
                .stdout(logf.try_clone().expect("dup log"))
                .stderr(logf);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", kind.name()));
            let implicit = tls.as_ref().is_some_and(|t| t.implicit);
            match wait_ready(kind, &mut child, addr, implicit) {
                Ok(()) => {
                    return FtpServer {
                        kind,
                        addr,
                        root,
                        upload_dir: UPLOAD_DIR.to_string(),
                        user: user.to_string(),
                        pass: pass.to_string(),
                        tls,
                        child,
                        log,
                        dir,
                    };
                }
                Err(why) => {
                    kill_tree(&mut child);
                    last_failure = format!(
                        "attempt {attempt} on {addr}: {why}\n--- server log ---\n{}\n--- extra logs ---\n{}",
                        fs::read_to_string(&log).unwrap_or_default(),
                        extra_logs(dir.path())
                    );
                    // A port taken between free_port() and the server's bind
                    // is worth a retry on another port; anything else is not.
                    if !why.contains("exited") && !why.contains("not ours") {
                        break;
                    }
                }
            }
        }
        panic!("{} failed to start: {last_failure}", kind.name());
    }

    /// The server's process id (the master process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills every session process of the server (SIGKILL, by PID), as
    /// when a server dies or is restarted under its clients; the master
    /// process keeps listening.
    pub fn kill_sessions(&self) -> usize {
        let mut pids = children_of(self.child.id());
        let mut i = 0;
        while i < pids.len() {
            let p = pids[i];
            pids.extend(children_of(p));
            i += 1;
        }
        if !pids.is_empty() {
            let mut args = vec!["-KILL".to_string()];
            args.extend(pids.iter().map(|p| p.to_string()));
            let _ = Command::new("kill")
                .args(&args)
                .stderr(Stdio::null())
                .status();
        }
        pids.len()
    }

    /// The control port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything the server wrote to stdout/stderr (and its own log files).
    pub fn log(&self) -> String {
        format!(
            "{}{}",
            fs::read_to_string(&self.log).unwrap_or_default(),
            extra_logs(self.dir.path())
        )
    }

    /// `root/upload_dir` on disk.
    pub fn upload_path(&self) -> PathBuf {
        self.root.join(&self.upload_dir)
    }

    /// Writes `data` to `root/rel` (creating parent dirs), readable by the server.
    pub fn put_file(&self, rel: &str, data: &[u8]) -> PathBuf {
        put_file(&self.root, rel, data)
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

/// Writes `data` to `root/rel` with mode 0644, parents 0755.
pub fn put_file(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let path = root.join(rel.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
        let mut p = parent;
        while p.starts_with(root) && p != root {
            set_mode(p, 0o755);
            p = p.parent().unwrap();
        }
    }
    fs::write(&path, data).expect("write file");
    set_mode(&path, 0o644);
    path
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, p.display()));
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has
/// not handed out before (so concurrent tests don't pick the same one).
///
/// Picked above the kernel's ephemeral range when there is room: a port
/// the kernel hands out for `bind(0)` can go to another test's outgoing
/// connection before the caller binds it (seen once in a full run:
/// `implicit_tls_listen` "Address already in use").
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let above = ephemeral_top().saturating_add(1).max(1024);
    if above <= 64_000 {
        for _ in 0..1000 {
            let port = rand::thread_rng().gen_range(above..=65_535);
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// The top of the kernel's ephemeral port range (Linux's default 60999).
fn ephemeral_top() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(60_999)
}

fn write_file(p: &Path, text: &str, mode: u32) {
    fs::write(p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    set_mode(p, mode);
}

/// vsftpd: anonymous login rooted at `root`, uploads into `upload/`.
/// Deviations from its defaults, none about passive mode:
/// listen=YES/background=NO (standalone, foreground), listen_address,
/// anonymous uploads enabled (with anon_umask=022 so uploads are readable
/// and anon_other_write_enable so APPE/REST-STOR/overwrite work),
/// anon_world_readable_only=NO, secure_chroot_dir in the temp dir, and
/// isolate=NO / isolate_network=NO / seccomp_sandbox=NO (namespaces and
/// seccomp can fail in containers and cost CPU per session).
/// With `tls`, see [`vsftpd_tls_config`].
fn vsftpd_command(dir: &Path, root: &Path, at: SocketAddr, tls: Option<&TlsSetup>) -> Command {
    let port = at.port();
    let empty = dir.join("empty");
    fs::create_dir_all(&empty).expect("mkdir empty");
    set_mode(&empty, 0o755);
    let conf = dir.join("vsftpd.conf");
    let text = format!(
        "{listen}\
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
         {tls}",
        tls = tls.map(vsftpd_tls_config).unwrap_or_default(),
        listen = match at.ip() {
            std::net::IpAddr::V6(ip) =>
                format!("listen=NO\nlisten_ipv6=YES\nlisten_address6={ip}\n"),
            std::net::IpAddr::V4(ip) =>
                format!("listen=YES\nlisten_ipv6=NO\nlisten_address={ip}\n"),
        },
        root = root.display(),
        empty = empty.display(),
        log = dir.join("vsftpd-xfer.log").display(),
    );
    write_file(&conf, &text, 0o600);
    let mut cmd = Command::new(ServerKind::Vsftpd.binary());
    cmd.arg(&conf);
    cmd
}

/// vsftpd's TLS settings. Set: ssl_enable, the certificate and key
/// (rsa_cert_file/rsa_private_key_file take any key type OpenSSL loads; ours
/// is ECDSA), allow_anon_ssl=YES (the rig's login is anonymous, and vsftpd
/// refuses AUTH TLS to anonymous sessions otherwise), ssl_ciphers=HIGH (the
/// built-in default is 3DES only, which modern clients refuse),
/// force_anon_logins_ssl and force_anon_data_ssl per `required`,
/// implicit_ssl per `implicit`, debug_ssl=YES (TLS events in the log).
/// require_ssl_reuse=YES is the default, written out: a data connection
/// must resume the control connection's TLS session, else `522`.
/// strict_ssl_read_eof=YES is not the default (NO is): set so an upload
/// that ends without a TLS close_notify fails, as on a hardened server.
/// ssl_request_cert stays at its default YES (a CertificateRequest that
/// clients may ignore); with `client_ca`, require_cert=YES and
/// validate_cert=YES refuse a client without a certificate issued by a CA
/// in ca_certs_file (the handshake fails). vsftpd 3.0.3 has
/// no ssl_tlsv1_2/ssl_tlsv1_3 options (they are unrecognised and stop it):
/// with ssl_tlsv1=YES it runs OpenSSL's generic method, so TLS 1.2 and 1.3
/// are both offered (OpenSSL 3's security level refuses 1.0/1.1 anyway).
fn vsftpd_tls_config(tls: &TlsSetup) -> String {
    let yn = |b: bool| if b { "YES" } else { "NO" };
    format!(
        "ssl_enable=YES\n\
         rsa_cert_file={cert}\n\
         rsa_private_key_file={key}\n\
         allow_anon_ssl=YES\n\
         force_anon_logins_ssl={req}\n\
         force_anon_data_ssl={req}\n\
         implicit_ssl={implicit}\n\
         ssl_ciphers=HIGH\n\
         ssl_sslv2=NO\n\
         ssl_sslv3=NO\n\
         ssl_tlsv1=YES\n\
         require_ssl_reuse=YES\n\
         strict_ssl_read_eof=YES\n\
         debug_ssl=YES\n\
         {client}",
        cert = tls.cert.display(),
        key = tls.key.display(),
        req = yn(tls.required),
        implicit = yn(tls.implicit),
        client = tls
            .client_ca
            .as_ref()
            .map(|ca| format!(
                "require_cert=YES\nvalidate_cert=YES\nca_certs_file={}\n",
                ca.display()
            ))
            .unwrap_or_default(),
    )
}

/// ProFTPD: virtual user from an AuthUserFile, chrooted (`DefaultRoot ~`)
/// to `root`. Deviations, none about passive mode: DelayEngine off,
/// AuthPAM off, UseReverseDNS off, UseIPv6 off, SocketBindTight to
/// 127.0.0.1, writable PidFile/ScoreboardFile/DelayTable/SystemLog,
/// WtmpLog off, ControlsEngine off, RequireValidShell off,
/// AllowStoreRestart on (REST before STOR), AllowOverwrite on, Umask 022.
/// With `tls`, see [`proftpd_tls_config`].
fn proftpd_command(dir: &Path, root: &Path, port: u16, tls: Option<&TlsSetup>) -> Command {
    let run = dir.join("run");
    fs::create_dir_all(&run).expect("mkdir run");
    let passwd = dir.join("ftpd.passwd");
    let group = dir.join("ftpd.group");
    // mod_auth_file refuses world-readable AuthUserFiles.
    write_file(
        &passwd,
        &format!(
            "{VIRTUAL_USER}:{VIRTUAL_PASS_SHA512}:{NOBODY}:{NOBODY}::{}:/bin/false\n",
            root.display()
        ),
        0o600,
    );
    write_file(&group, &format!("nogroup:x:{NOBODY}:\n"), 0o600);
    let conf = dir.join("proftpd.conf");
    let text = format!(
        "ServerName \"ftpgate-test\"\n\
         ServerType standalone\n\
         Port {port}\n\
         DefaultAddress 127.0.0.1\n\
         SocketBindTight on\n\
         UseIPv6 off\n\
         User nobody\n\
         Group nogroup\n\
         ModulePath {modules}\n\
         PidFile {run}/proftpd.pid\n\
         ScoreboardFile {run}/proftpd.scoreboard\n\
         DelayTable {run}/proftpd.delay\n\
         SystemLog {run}/system.log\n\
         TransferLog none\n\
         WtmpLog off\n\
         ControlsEngine off\n\
         DelayEngine off\n\
         AuthPAM off\n\
         UseReverseDNS off\n\
         AuthUserFile {passwd}\n\
         AuthGroupFile {group}\n\
         AuthOrder mod_auth_file.c\n\
         RequireValidShell off\n\
         DefaultRoot ~\n\
         Umask 022\n\
         AllowOverwrite on\n\
         AllowStoreRestart on\n\
         MaxInstances 200\n\
         {tls}",
        tls = tls.map(|t| proftpd_tls_config(t, &run)).unwrap_or_default(),
        modules = peers_dir().join("usr/lib/proftpd").display(),
        run = run.display(),
        passwd = passwd.display(),
        group = group.display(),
    );
    write_file(&conf, &text, 0o644);
    let mut cmd = Command::new(ServerKind::Proftpd.binary());
    cmd.arg("--nodaemon").arg("-c").arg(&conf);
    cmd
}

/// ProFTPD's TLS settings: `LoadModule mod_tls.c` (from proftpd-mod-crypto,
/// found through the config's ModulePath), TLSEngine on, TLSLog in the run
/// dir, TLSProtocol TLSv1.2 TLSv1.3, the certificate and key as
/// TLSECCertificateFile/TLSECCertificateKeyFile (the PKI's keys are ECDSA;
/// the RSA directives want RSA keys), TLSRequired on|off per `required`
/// (`on` = control and data), TLSVerifyClient off, and TLSOptions
/// UseImplicitSSL for implicit TLS. Left at mod_tls's defaults: data
/// connections must resume the control connection's TLS session (no
/// `NoSessionReuseRequired`), session cache = OpenSSL's in-process cache,
/// TLSSessionTickets off, TLSRenegotiate none.
fn proftpd_tls_config(tls: &TlsSetup, run: &Path) -> String {
    assert!(tls.client_ca.is_none(), "client certificates: vsftpd only");
    format!(
        "LoadModule mod_tls.c\n\
         TLSEngine on\n\
         TLSLog {run}/tls.log\n\
         TLSProtocol TLSv1.2 TLSv1.3\n\
         TLSECCertificateFile {cert}\n\
         TLSECCertificateKeyFile {key}\n\
         TLSRequired {req}\n\
         TLSVerifyClient off\n\
         {implicit}",
        run = run.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        req = if tls.required { "on" } else { "off" },
        implicit = if tls.implicit {
            "TLSOptions UseImplicitSSL\n"
        } else {
            ""
        },
    )
}

/// pure-ftpd: virtual user in a puredb (SHA-512 crypt hash), chrooted to
/// `root`. Flags, none about passive mode: -S 127.0.0.1,PORT (listen),
/// -l puredb:FILE, -E (no anonymous), -A (chroot everyone), -H (no reverse
/// DNS), -c/-C 200 (max clients total/per IP), -g (pid file), -f none (no
/// syslog). No -p/-P: default passive range, no forced passive address.
/// With `tls`: `-Y 1` (TLS offered, plain allowed) or `-Y 3` (TLS required
/// on control and data connections; `-Y 2` would still allow plain data),
/// and `-2 CERT,KEY` (pure-ftpd 1.0.50 takes the key as a second file; one
/// combined file also works). No implicit TLS: Debian builds pure-ftpd
/// without `--with-implicittls`.
fn pureftpd_command(dir: &Path, root: &Path, port: u16, tls: Option<&TlsSetup>) -> Command {
    let passwd = dir.join("pureftpd.passwd");
    let pdb = dir.join("pureftpd.pdb");
    // account:hash:uid:gid:gecos:home(/./ = chroot):12 empty limit fields
    write_file(
        &passwd,
        &format!(
            "{VIRTUAL_USER}:{VIRTUAL_PASS_SHA512}:{NOBODY}:{NOBODY}::{}/./::::::::::::\n",
            root.display()
        ),
        0o600,
    );
    let out = Command::new(peers_dir().join("usr/bin/pure-pw"))
        .arg("mkdb")
        .arg(&pdb)
        .arg("-f")
        .arg(&passwd)
        .stdin(Stdio::null())
        .output()
        .expect("run pure-pw mkdb");
    assert!(
        out.status.success(),
        "pure-pw mkdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(ServerKind::PureFtpd.binary());
    cmd.arg("-S")
        .arg(format!("127.0.0.1,{port}"))
        .arg("-l")
        .arg(format!("puredb:{}", pdb.display()))
        .args(["-E", "-A", "-H", "-c", "200", "-C", "200", "-f", "none"])
        .arg("-g")
        .arg(dir.join("pure-ftpd.pid"));
    if let Some(tls) = tls {
        assert!(!tls.implicit, "pure-ftpd: no implicit TLS in this build");
        assert!(tls.client_ca.is_none(), "client certificates: vsftpd only");
        cmd.arg("-Y")
            .arg(if tls.required { "3" } else { "1" })
            .arg("-2")
            .arg(format!("{},{}", tls.cert.display(), tls.key.display()));
    }
    cmd
}

fn extra_logs(dir: &Path) -> String {
    let mut s = String::new();
    for name in ["run/system.log", "run/tls.log", "vsftpd-xfer.log"] {
        if let Ok(t) = fs::read_to_string(dir.join(name)) {
            if !t.is_empty() {
                s.push_str(&format!("--- {name} ---\n{t}"));
            }
        }
    }
    s
}

/// Waits until `addr` answers a complete 220 greeting from a `kind` server
/// while `child` is alive (after a TLS handshake if `implicit`).
fn wait_ready(
    kind: ServerKind,
    child: &mut Child,
    addr: SocketAddr,
    implicit: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut last = String::from("never connected");
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("server exited during startup with {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no 220 greeting within {STARTUP_TIMEOUT:?} ({last})"
            ));
        }
        let probe = if implicit {
            probe_220_tls(addr)
        } else {
            probe_220(addr)
        };
        match probe {
            Ok(greeting) => {
                // Make sure the greeting came from our server, not from some
                // other process that got the port first.
                std::thread::sleep(Duration::from_millis(5));
                if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                    return Err(format!("server exited during startup with {status}"));
                }
                if !greeting.contains(kind.banner_marker()) {
                    return Err(format!("greeting on {addr} is not ours: {greeting:?}"));
                }
                return Ok(());
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn probe_220(addr: SocketAddr) -> Result<String, String> {
    let s =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut greeting = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("connection closed after {greeting:?}"));
        }
        greeting.push_str(&line);
        if line.starts_with("220 ") {
            let _ = (&s).write_all(b"QUIT\r\n");
            return Ok(greeting);
        }
        if !line.starts_with("220") {
            return Err(format!("unexpected greeting {greeting:?}"));
        }
    }
}

/// [`probe_220`] over implicit TLS. The probe accepts any certificate: the
/// server may have been given the PKI's expired or wrong-name one on purpose.
fn probe_220_tls(addr: SocketAddr) -> Result<String, String> {
    use std::io::Read;
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.set_write_timeout(Some(Duration::from_secs(3))).ok();
    let mut conn = rustls::ClientConnection::new(
        crate::certs::accept_any_server_config(),
        rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
    )
    .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut s);
    let mut greeting = String::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tls.read(&mut buf).map_err(|e| format!("TLS: {e}"))?;
        if n == 0 {
            return Err(format!("TLS connection closed after {greeting:?}"));
        }
        greeting.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(last) = greeting.lines().last() {
            if greeting.ends_with('\n') && last.starts_with("220 ") {
                let _ = tls.write_all(b"QUIT\r\n");
                return Ok(greeting);
            }
            if !last.starts_with("220") {
                return Err(format!("unexpected greeting {greeting:?}"));
            }
        }
    }
}

/// Kills `child` and every process it forked (sessions), by PID, and reaps it.
pub fn kill_tree(child: &mut Child) {
    let pid = child.id();
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // Stop the master so it forks no new session while we collect its tree.
    let _ = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        pids.extend(children_of(p));
        i += 1;
    }
    let mut args = vec!["-KILL".to_string()];
    args.extend(pids.iter().map(|p| p.to_string()));
    let _ = Command::new("kill")
        .args(&args)
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    // Linux with CONFIG_PROC_CHILDREN has /proc/PID/task/TID/children.
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    // Fallback: scan /proc/*/stat for the parent pid.
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) {
                // pid (comm) state ppid ...; comm may contain spaces/parens.
                if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                    let ppid = rest
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse::<u32>().ok());
                    if ppid == Some(pid) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), no extra crates.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::{self, Mode, Target};
    use sha2::{Digest, Sha256};

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    const DIR_FILES: [&str; 3] = ["alpha.txt", "beta.bin", "gamma with space.txt"];

    fn rig_check(kind: ServerKind) {
        let test = format!("peers_{}", kind.name());
        if !available_or_skip(kind, &test) {
            return;
        }
        let big = random_bytes(3 * 1024 * 1024, 0x5eed ^ kind as u64);
        let t0 = Instant::now();
        let srv = FtpServer::start_with(kind, |root| {
            put_file(root, "big.bin", &big);
            for (i, f) in DIR_FILES.iter().enumerate() {
                put_file(root, &format!("dir/{f}"), format!("file {i}\n").as_bytes());
            }
        });
        let startup = t0.elapsed();
        println!("{} started in {startup:?} on {}", kind.name(), srv.addr);
        assert!(
            startup < Duration::from_secs(2),
            "{} took {startup:?} to start",
            kind.name()
        );
        let t = Target::for_server(&srv);
        let local = tempfile::tempdir().unwrap();

        for mode in Mode::ALL {
            let out = clients::curl_get(&t, "big.bin", mode);
            assert!(
                out.ok,
                "{} curl get {mode:?}: {out:?}\n{}",
                kind.name(),
                srv.log()
            );
            assert_eq!(out.stdout.len(), big.len(), "{} {mode:?} size", kind.name());
            assert!(
                sha(&out.stdout) == sha(&big),
                "{} {mode:?}: SHA-256 differs",
                kind.name()
            );
            assert!(
                out.stderr.contains(mode.command()),
                "{mode:?} not used: {}",
                out.stderr
            );

            let out = clients::curl_list(&t, "dir/", mode);
            assert!(out.ok, "{} curl list {mode:?}: {out:?}", kind.name());
            let listing = out.stdout_str();
            for f in DIR_FILES {
                assert!(
                    listing.contains(f),
                    "{} LIST {mode:?} lacks {f}: {listing}",
                    kind.name()
                );
            }

            let up = random_bytes(200_000 + mode as usize, mode as u64 + 7);
            let lp = local.path().join("up.bin");
            fs::write(&lp, &up).unwrap();
            let remote = format!("{}/up-{mode:?}.bin", srv.upload_dir);
            let out = clients::curl_put(&t, &lp, &remote, mode);
            assert!(out.ok, "{} curl put {mode:?}: {out:?}", kind.name());
            let got = fs::read(srv.root.join(&remote)).expect("uploaded file on disk");
            assert!(got == up, "{} upload {mode:?} differs", kind.name());
        }

        let out = clients::curl_nlst(&t, "dir/", Mode::Epsv);
        assert!(out.ok, "{} NLST: {out:?}", kind.name());
        for f in DIR_FILES {
            assert!(
                out.stdout_str().contains(f),
                "{} NLST lacks {f}: {out:?}",
                kind.name()
            );
        }

        // REST, APPE, STOU, NLST, MLSD, SIZE through Python's ftplib.
        let body = format!(
            r#"
import io
b = io.BytesIO()
ftp.retrbinary('RETR big.bin', b.write, rest=3*1024*1024-10)
print('REST', b.getvalue().hex())
ftp.storbinary('STOR upload/ap.txt', io.BytesIO(b'head-'))
ftp.storbinary('APPE upload/ap.txt', io.BytesIO(b'tail'))
ftp.cwd('upload')
r = ftp.storbinary('STOU', io.BytesIO(b'unique'))
print('STOU', r.replace('\r', ' ').replace('\n', ' '))
ftp.cwd('/')
print('NLST', sorted(ftp.nlst('dir')))
ftp.voidcmd('TYPE I')  # proftpd: '550 SIZE not allowed in ASCII mode'
print('SIZE', ftp.size('big.bin'))
if {mlsd}:
    print('MLSD', sorted(n for n, f in ftp.mlsd('dir') if f['type'] == 'file'))
ftp.quit()
"#,
            mlsd = if kind.supports_mlsd() {
                "True"
            } else {
                "False"
            }
        );
        let out = clients::ftplib(&t, &body);
        assert!(out.ok, "{} ftplib: {out:?}", kind.name());
        let s = out.stdout_str();
        assert!(
            s.contains(&format!("REST {}", hex(&big[big.len() - 10..]))),
            "{s}"
        );
        assert!(s.contains(&format!("SIZE {}", big.len())), "{s}");
        assert!(s.contains("STOU 226"), "{s}");
        assert_eq!(
            fs::read(srv.upload_path().join("ap.txt")).unwrap(),
            b"head-tail"
        );
        let uniques: Vec<_> = fs::read_dir(srv.upload_path())
            .unwrap()
            .flatten()
            .filter(|e| fs::read(e.path()).map(|b| b == b"unique").unwrap_or(false))
            .collect();
        assert_eq!(uniques.len(), 1, "{} STOU file not found", kind.name());
        for f in DIR_FILES {
            assert!(s.contains(f), "{} NLST/MLSD lacks {f}: {s}", kind.name());
        }
        if kind.supports_mlsd() {
            assert!(
                s.contains("MLSD ['alpha.txt', 'beta.bin', 'gamma with space.txt']"),
                "{s}"
            );
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn peers_vsftpd_transfers() {
        rig_check(ServerKind::Vsftpd);
    }

    #[test]
    fn peers_proftpd_transfers() {
        rig_check(ServerKind::Proftpd);
    }

    #[test]
    fn peers_pureftpd_transfers() {
        rig_check(ServerKind::PureFtpd);
    }

    /// Two servers of each kind at once, each answering on its own port with
    /// its own root, and no process left behind after drop.
    #[test]
    fn peers_concurrent_servers() {
        let kinds: Vec<ServerKind> = ALL
            .iter()
            .copied()
            .filter(|k| available_or_skip(*k, "peers_concurrent_servers"))
            .collect();
        let handles: Vec<_> = kinds
            .iter()
            .flat_map(|&k| [k, k])
            .enumerate()
            .map(|(i, k)| {
                std::thread::spawn(move || {
                    let srv = FtpServer::start_with(k, |root| {
                        put_file(root, "who.txt", format!("server {i}").as_bytes());
                    });
                    let out = clients::curl_get(&Target::for_server(&srv), "who.txt", Mode::Pasv);
                    assert!(out.ok, "{k:?} #{i}: {out:?}");
                    assert_eq!(out.stdout_str(), format!("server {i}"));
                    srv
                })
            })
            .collect();
        let servers: Vec<FtpServer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ports: HashSet<u16> = servers.iter().map(|s| s.port()).collect();
        assert_eq!(ports.len(), servers.len());
        let pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
        drop(servers);
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "server pid {pid} still exists after drop"
            );
        }
    }

    /// Dropping a server also kills its session processes.
    #[test]
    fn peers_drop_kills_sessions() {
        for kind in ALL {
            if !available_or_skip(kind, "peers_drop_kills_sessions") {
                continue;
            }
            let srv = FtpServer::start(kind);
            let conn = TcpStream::connect(srv.addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).unwrap();
            assert!(line.starts_with("220"), "{kind:?}: {line:?}");
            let mut tree = vec![srv.pid()];
            let mut i = 0;
            while i < tree.len() {
                let p = tree[i];
                tree.extend(children_of(p));
                i += 1;
            }
            assert!(
                tree.len() > 1,
                "{kind:?}: no session process found under {}",
                srv.pid()
            );
            drop(srv);
            let deadline = Instant::now() + Duration::from_secs(5);
            for pid in tree {
                loop {
                    let state = fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| {
                            s.rfind(')').and_then(|i| {
                                s[i + 1..].split_whitespace().next().map(String::from)
                            })
                        });
                    match state.as_deref() {
                        None | Some("Z") | Some("X") => break,
                        Some(st) => {
                            assert!(
                                Instant::now() < deadline,
                                "{kind:?}: pid {pid} still alive ({st})"
                            );
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            }
        }
    }

    /// available() agrees with what is on disk.
    #[test]
    fn peers_available_is_consistent() {
        for k in ALL {
            if missing_parts(k).is_empty() {
                assert!(available(k));
            } else if !peers_required() {
                assert!(!available(k));
            }
        }
    }
}
