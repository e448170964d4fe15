//! Real FTP clients (curl, lftp, Python's ftplib, tnftp) run as processes
//! against a host/port: a real server directly, or ftpgate in front of one.
//!
//! Every run has a hard timeout (60 s, or `FTPGATE_CLIENT_TIMEOUT_SECS`):
//! the client is killed by PID and the run reported as failed, so a hung
//! proxy never hangs the test suite. Each run gets a fresh empty working
//! directory, also used as `HOME` (no user rc files): give clients absolute
//! local paths for files you want to keep.
//!
//! FTPS: [`curl_tls`], [`lftp_tls`] and [`ftplib_tls`] (with their
//! shorthands) run the same clients with TLS as a [`ClientTls`] says:
//! explicit `AUTH TLS` or implicit TLS, `PROT P` or clear data, a CA to
//! verify against or no verification, a pinned TLS version, and whether data
//! connections resume the control connection's TLS session.

#![allow(dead_code)]

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where a client connects, and how it logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// "127.0.0.1" or "::1" (no brackets).
    pub host: String,
    /// Control port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// Password.
    pub pass: String,
}

impl Target {
    /// A target from its parts.
    pub fn new(host: &str, port: u16, user: &str, pass: &str) -> Target {
        Target {
            host: host.to_string(),
            port,
            user: user.to_string(),
            pass: pass.to_string(),
        }
    }

    /// The server itself, with its login (no proxy in between).
    pub fn for_server(s: &crate::peers::FtpServer) -> Target {
        Target::new(&s.addr.ip().to_string(), s.addr.port(), &s.user, &s.pass)
    }

    /// The same login through another address (e.g. ftpgate's listener).
    pub fn via(&self, addr: std::net::SocketAddr) -> Target {
        Target {
            host: addr.ip().to_string(),
            port: addr.port(),
            ..self.clone()
        }
    }

    /// Whether the host is an IPv6 literal.
    pub fn is_v6(&self) -> bool {
        self.host.contains(':')
    }

    /// Host as it goes into a URL: brackets around IPv6 literals.
    pub fn url_host(&self) -> String {
        if self.is_v6() {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// What a client run produced.
#[derive(Clone)]
pub struct Output {
    /// Exited with status 0 before the timeout (for tnftp, which exits 0
    /// even when a transfer failed, check the replies in stdout too).
    pub ok: bool,
    /// Exit status, None if killed by a signal (e.g. our timeout).
    pub status: Option<i32>,
    /// Standard output (curl: the file or listing bytes).
    pub stdout: Vec<u8>,
    /// Standard error (curl -v / lftp -d: the protocol conversation).
    pub stderr: String,
    /// Killed because it ran past the timeout.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Output {
    /// stdout as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics with everything the client said unless it succeeded.
    #[track_caller]
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert!(self.ok, "{what} failed: {self:?}");
        self
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let out = self.stdout_str();
        let out_shown: String = if out.len() > 4000 {
            let head: String = out.chars().take(4000).collect();
            format!("{head}... ({} bytes)", self.stdout.len())
        } else {
            out
        };
        let n = self.stderr.chars().count();
        let err_shown: String = if n > 8000 {
            format!(
                "...{}",
                self.stderr.chars().skip(n - 8000).collect::<String>()
            )
        } else {
            self.stderr.clone()
        };
        write!(
            f,
            "Output {{ ok: {}, status: {:?}, timed_out: {}, elapsed: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n}}",
            self.ok, self.status, self.timed_out, self.elapsed, out_shown, err_shown
        )
    }
}

/// Which data connection a client must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Passive, PASV (227 address used as given where the client allows).
    Pasv,
    /// Passive, EPSV.
    Epsv,
    /// Active, PORT.
    Port,
    /// Active, EPRT.
    Eprt,
}

impl Mode {
    /// All four modes.
    pub const ALL: [Mode; 4] = [Mode::Pasv, Mode::Epsv, Mode::Port, Mode::Eprt];

    /// The FTP command the mode is about.
    pub fn command(self) -> &'static str {
        match self {
            Mode::Pasv => "PASV",
            Mode::Epsv => "EPSV",
            Mode::Port => "PORT",
            Mode::Eprt => "EPRT",
        }
    }

    /// Passive (PASV/EPSV) or active (PORT/EPRT).
    pub fn is_passive(self) -> bool {
        matches!(self, Mode::Pasv | Mode::Epsv)
    }
}

/// A TLS protocol version to pin a client to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 only.
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

impl TlsVersion {
    /// Both versions.
    pub const ALL: [TlsVersion; 2] = [TlsVersion::V1_2, TlsVersion::V1_3];

    /// How curl -v / OpenSSL name it: "TLSv1.2", "TLSv1.3".
    pub fn openssl_name(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "TLSv1.2",
            TlsVersion::V1_3 => "TLSv1.3",
        }
    }
}

/// How a client uses TLS (FTPS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// Verify the server's certificate (chain and name) against this CA
    /// file only; None = no verification at all.
    pub ca: Option<PathBuf>,
    /// Implicit TLS (TLS from the first byte: `ftps://` for curl and lftp);
    /// else explicit `AUTH TLS`, required (the client fails if the server
    /// does not take it).
    pub implicit: bool,
    /// `PROT P` (true, default) or clear data connections (`PROT C`; curl
    /// `--ftp-ssl-control`, lftp `ftp:ssl-protect-data false`).
    pub protect_data: bool,
    /// Resume the control connection's TLS session on data connections
    /// (true, default; what vsftpd and ProFTPD require). false: curl
    /// `--no-sessionid`, lftp `ftp:ssl-copy-sid no`, ftplib's stock
    /// `FTP_TLS` (which never resumes).
    pub reuse_session: bool,
    /// Pin one TLS version; None = the client's default range.
    pub version: Option<TlsVersion>,
    /// A client certificate and its key (PEM files) to show when the
    /// server asks for one: curl `--cert`/`--key`, lftp
    /// `ssl:cert-file`/`ssl:key-file`, ftplib `load_cert_chain`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// Explicit AUTH TLS with PROT P and session reuse, verifying the
    /// server against `ca` (the test PKI's `ca_pem`).
    pub fn verify(ca: &Path) -> ClientTls {
        ClientTls {
            ca: Some(ca.to_path_buf()),
            implicit: false,
            protect_data: true,
            reuse_session: true,
            version: None,
            client_cert: None,
        }
    }

    /// Like [`ClientTls::verify`] but accepting any certificate.
    pub fn no_verify() -> ClientTls {
        ClientTls {
            ca: None,
            ..ClientTls::verify(Path::new("/"))
        }
    }

    /// The same over implicit TLS.
    pub fn implicit(self) -> ClientTls {
        ClientTls {
            implicit: true,
            ..self
        }
    }

    /// The same with clear (PROT C) data connections.
    pub fn clear_data(self) -> ClientTls {
        ClientTls {
            protect_data: false,
            ..self
        }
    }

    /// The same without resuming the TLS session on data connections.
    pub fn no_session_reuse(self) -> ClientTls {
        ClientTls {
            reuse_session: false,
            ..self
        }
    }

    /// The same, showing the client certificate `cert` with its `key`.
    pub fn with_client_cert(self, cert: &Path, key: &Path) -> ClientTls {
        ClientTls {
            client_cert: Some((cert.to_path_buf(), key.to_path_buf())),
            ..self
        }
    }

    /// The same pinned to `v`.
    pub fn version(self, v: TlsVersion) -> ClientTls {
        ClientTls {
            version: Some(v),
            ..self
        }
    }
}

/// Hard timeout for one client run.
pub fn default_timeout() -> Duration {
    std::env::var("FTPGATE_CLIENT_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60))
}

/// Runs `cmd` with `stdin` fed (or /dev/null), collecting stdout/stderr,
/// killing it (by PID) after `timeout`. The working directory and HOME are a
/// fresh temp dir unless `cmd` already set a working directory.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let work = tempfile::Builder::new()
        .prefix("ftpgate-client-")
        .tempdir()
        .expect("tempdir");
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(work.path());
    }
    cmd.env("HOME", work.path())
        .env("LC_ALL", "C")
        .env_remove("http_proxy")
        .env_remove("ftp_proxy")
        .env_remove("all_proxy")
        .env_remove("FTP_PROXY")
        .env_remove("ALL_PROXY")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Output {
                ok: false,
                status: None,
                stdout: Vec::new(),
                stderr: format!("cannot run {program}: {e}"),
                timed_out: false,
                elapsed: start.elapsed(),
            }
        }
    };
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let (tx_out, rx_out) = mpsc::channel();
    let mut so = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = so.read_to_end(&mut buf);
        let _ = tx_out.send(buf);
    });
    let (tx_err, rx_err) = mpsc::channel();
    let mut se = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = se.read_to_end(&mut buf);
        let _ = tx_err.send(buf);
    });

    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(_) => break None,
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A grandchild holding the pipes open must not hang us either.
    let stdout = rx_out
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let stderr_bytes = rx_err
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let mut stderr = String::from_utf8_lossy(&stderr_bytes).into_owned();
    if timed_out {
        stderr.push_str(&format!(
            "\n[ftpgate test rig: {program} killed after {timeout:?}]\n"
        ));
    }
    let code = status.and_then(|s| s.code());
    Output {
        ok: !timed_out && code == Some(0),
        status: code,
        stdout,
        stderr,
        timed_out,
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------- curl

/// Percent-encodes an FTP path for a URL (keeps `/`), without a leading `/`:
/// curl then CWDs into each directory relative to the login directory.
fn url_path(path: &str) -> String {
    let mut s = String::new();
    for b in path.trim_start_matches('/').bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn curl_url(t: &Target, path: &str) -> String {
    curl_url_scheme(t, path, "ftp")
}

fn curl_url_scheme(t: &Target, path: &str, scheme: &str) -> String {
    format!("{scheme}://{}:{}/{}", t.url_host(), t.port, url_path(path))
}

fn curl_mode_args(t: &Target, mode: Mode) -> Vec<String> {
    let v: Vec<&str> = match mode {
        // curl ignores the 227 address by default (--ftp-skip-pasv-ip):
        // make it use it, so the address ftpgate writes is tested.
        Mode::Pasv => vec!["--ftp-pasv", "--disable-epsv", "--no-ftp-skip-pasv-ip"],
        Mode::Epsv => vec!["--ftp-pasv"],
        Mode::Port => vec!["--ftp-port", &t.host, "--disable-eprt"],
        Mode::Eprt => vec!["--ftp-port", &t.host],
    };
    v.into_iter().map(String::from).collect()
}

/// curl against `t` in `mode`, with `extra` arguments, on `path` (relative
/// to the login directory). stderr has the `-v` conversation.
pub fn curl(t: &Target, path: &str, mode: Mode, extra: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.arg("-q") // no ~/.curlrc
        .args(["-sS", "-v", "--connect-timeout", "15"])
        .arg("-u")
        .arg(format!("{}:{}", t.user, t.pass))
        .args(curl_mode_args(t, mode))
        .args(extra)
        .arg(curl_url(t, path));
    run(cmd, None, default_timeout())
}

/// curl over TLS as `tls` says, otherwise as [`curl`]: explicit TLS is
/// `--ssl-reqd` on an `ftp://` URL (or `--ftp-ssl-control` for clear data),
/// implicit TLS an `ftps://` URL; `--cacert CA` (or `-k`), `--no-sessionid`
/// without session reuse, `--tlsv1.2 --tls-max 1.2` / `--tlsv1.3` for a
/// pinned version. stderr has the `-v` conversation, including curl's
/// `SSL connection using TLSv1.3 / ...` lines.
///
/// Passive modes only: Debian 12's curl 7.88.1 hangs on active-mode (PORT
/// or EPRT) TLS data connections (it lost its TLS filter on accepted data
/// connections in 7.87.0, curl issue #10666, fixed in 8.0), so an active
/// `mode` panics here; use [`lftp_tls`] or [`ftplib_tls`] for active FTPS.
/// curl sends `AUTH SSL` first and `AUTH TLS` only if that is refused.
pub fn curl_tls(t: &Target, path: &str, mode: Mode, tls: &ClientTls, extra: &[&str]) -> Output {
    assert!(
        mode.is_passive(),
        "curl 7.88 cannot do FTPS in active mode (curl issue #10666): use lftp_tls or ftplib_tls"
    );
    let mut cmd = Command::new("curl");
    cmd.arg("-q")
        .args(["-sS", "-v", "--connect-timeout", "15"])
        .arg("-u")
        .arg(format!("{}:{}", t.user, t.pass))
        .args(curl_mode_args(t, mode))
        .args(curl_tls_args(tls))
        .args(extra)
        .arg(curl_url_scheme(
            t,
            path,
            if tls.implicit { "ftps" } else { "ftp" },
        ));
    run(cmd, None, default_timeout())
}

fn curl_tls_args(tls: &ClientTls) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    if tls.implicit {
        assert!(
            tls.protect_data,
            "curl: ftps:// always protects data (PROT P)"
        );
    } else if tls.protect_data {
        v.push("--ssl-reqd".into());
    } else {
        v.push("--ftp-ssl-control".into());
    }
    match &tls.ca {
        Some(ca) => {
            v.push("--cacert".into());
            v.push(ca.display().to_string());
        }
        None => v.push("-k".into()),
    }
    if !tls.reuse_session {
        v.push("--no-sessionid".into());
    }
    if let Some((cert, key)) = &tls.client_cert {
        v.extend([
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]);
    }
    match tls.version {
        Some(TlsVersion::V1_2) => v.extend(["--tlsv1.2".into(), "--tls-max".into(), "1.2".into()]),
        Some(TlsVersion::V1_3) => v.push("--tlsv1.3".into()),
        None => {}
    }
    v
}

/// Downloads `path` over TLS; stdout is the file.
pub fn curl_tls_get(t: &Target, path: &str, mode: Mode, tls: &ClientTls) -> Output {
    curl_tls(t, path, mode, tls, &[])
}

/// Uploads `local` to `remote_path` (STOR) over TLS.
pub fn curl_tls_put(
    t: &Target,
    local: &Path,
    remote_path: &str,
    mode: Mode,
    tls: &ClientTls,
) -> Output {
    let local = local.to_string_lossy().into_owned();
    curl_tls(t, remote_path, mode, tls, &["-T", &local])
}

/// LIST of directory `path` over TLS.
pub fn curl_tls_list(t: &Target, path: &str, mode: Mode, tls: &ClientTls) -> Output {
    curl_tls(t, &dir_path(path), mode, tls, &[])
}

/// Downloads `path`; stdout is the file.
pub fn curl_get(t: &Target, path: &str, mode: Mode) -> Output {
    curl(t, path, mode, &[])
}

/// LIST of directory `path` ("" for the login directory; a trailing `/` is added).
pub fn curl_list(t: &Target, path: &str, mode: Mode) -> Output {
    curl(t, &dir_path(path), mode, &[])
}

/// NLST of directory `path` (`curl --list-only`).
pub fn curl_nlst(t: &Target, path: &str, mode: Mode) -> Output {
    curl(t, &dir_path(path), mode, &["--list-only"])
}

/// MLSD of directory `path` (`curl -X MLSD`; not on vsftpd).
pub fn curl_mlsd(t: &Target, path: &str, mode: Mode) -> Output {
    curl(t, &dir_path(path), mode, &["-X", "MLSD"])
}

/// Uploads `local` to `remote_path` (STOR).
pub fn curl_put(t: &Target, local: &Path, remote_path: &str, mode: Mode) -> Output {
    let local = local.to_string_lossy().into_owned();
    curl(t, remote_path, mode, &["-T", &local])
}

/// Appends `local` to `remote_path` (APPE).
pub fn curl_append(t: &Target, local: &Path, remote_path: &str, mode: Mode) -> Output {
    let local = local.to_string_lossy().into_owned();
    curl(t, remote_path, mode, &["-T", &local, "--append"])
}

fn dir_path(path: &str) -> String {
    let p = path.trim_start_matches('/');
    if p.is_empty() || p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

// ---------------------------------------------------------------- lftp

fn lftp_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Runs lftp commands (one per line, e.g. `get big.bin -o /abs/path`,
/// `put /abs/file -o upload/x`, `cls -1 dir`) after logging in to `t`.
///
/// Settings: ftp:fix-pasv-address off (use the 227 address as given),
/// ftp:passive-mode and ftp:prefer-epsv per mode, net:max-retries 1 (no
/// retry), net:timeout 10, cmd:fail-exit yes (non-zero exit on the first
/// failing command), ftp:ssl-allow no (no AUTH TLS attempt), xfer:clobber
/// on. Runs with `-d`: stderr has the protocol conversation.
///
/// lftp sends EPRT only for IPv6 data addresses: on an IPv4 target,
/// `Mode::Eprt` behaves like `Mode::Port` (PORT). Likewise on an IPv6
/// target `Mode::Pasv` ends up using EPSV (PASV cannot carry IPv6).
pub fn lftp(t: &Target, commands: &str, mode: Mode) -> Output {
    lftp_script(t, commands, mode, None)
}

/// [`lftp`] over TLS as `tls` says: `ftp:ssl-force true` (explicit AUTH TLS
/// required) or an `ftps://` URL (implicit), `ftp:ssl-allow-anonymous yes`
/// (lftp skips TLS for anonymous logins by default, and vsftpd's login is
/// anonymous), `ftp:ssl-protect-data` and `ftp:ssl-protect-list` per
/// `protect_data` (`ftps:initial-prot` stays empty, so lftp sends `PROT`
/// on implicit TLS too: vsftpd starts implicit sessions with clear data),
/// `ftp:ssl-copy-sid` per `reuse_session`, `ssl:ca-file`
/// (or `ssl:verify-certificate no`), and `ssl:priority` (lftp uses GnuTLS)
/// for a pinned version. The `-d` log in stderr shows the TLS handshake.
pub fn lftp_tls(t: &Target, commands: &str, mode: Mode, tls: &ClientTls) -> Output {
    lftp_script(t, commands, mode, Some(tls))
}

fn lftp_tls_settings(tls: &ClientTls) -> String {
    let yn = |b: bool| if b { "true" } else { "false" };
    let mut s = format!(
        "set ftp:ssl-allow true\n\
         set ftp:ssl-force {force}\n\
         set ftp:ssl-allow-anonymous true\n\
         set ftp:ssl-protect-data {prot}\n\
         set ftp:ssl-protect-list {prot}\n\
         set ftp:ssl-copy-sid {sid}\n",
        force = yn(!tls.implicit),
        prot = yn(tls.protect_data),
        sid = yn(tls.reuse_session),
    );
    match &tls.ca {
        Some(ca) => s.push_str(&format!(
            "set ssl:verify-certificate true\nset ssl:check-hostname true\nset ssl:ca-file {}\n",
            lftp_quote(&ca.display().to_string())
        )),
        None => s.push_str("set ssl:verify-certificate false\nset ssl:check-hostname false\n"),
    }
    if let Some((cert, key)) = &tls.client_cert {
        s.push_str(&format!(
            "set ssl:cert-file {}\nset ssl:key-file {}\n",
            lftp_quote(&cert.display().to_string()),
            lftp_quote(&key.display().to_string())
        ));
    }
    let prio = match tls.version {
        Some(TlsVersion::V1_2) => "NORMAL:-VERS-ALL:+VERS-TLS1.2",
        Some(TlsVersion::V1_3) => "NORMAL:-VERS-ALL:+VERS-TLS1.3",
        None => "",
    };
    if !prio.is_empty() {
        s.push_str(&format!("set ssl:priority {}\n", lftp_quote(prio)));
    }
    s
}

fn lftp_script(t: &Target, commands: &str, mode: Mode, tls: Option<&ClientTls>) -> Output {
    let (passive, epsv) = match mode {
        Mode::Pasv => ("on", "no"),
        Mode::Epsv => ("on", "yes"),
        Mode::Port | Mode::Eprt => ("off", "no"),
    };
    let script = format!(
        "set cmd:fail-exit yes\n\
         set cmd:interactive no\n\
         set net:max-retries 1\n\
         set net:persist-retries 0\n\
         set net:timeout 10\n\
         set net:reconnect-interval-base 1\n\
         set net:reconnect-interval-max 1\n\
         set ftp:fix-pasv-address off\n\
         set ftp:passive-mode {passive}\n\
         set ftp:prefer-epsv {epsv}\n\
         {tls}\
         set xfer:clobber on\n\
         set cmd:verbose yes\n\
         open -u {user},{pass} -p {port} {scheme}{host}\n\
         {commands}\n",
        tls = match tls {
            Some(tls) => lftp_tls_settings(tls),
            None => "set ftp:ssl-allow no\n".to_string(),
        },
        scheme = if tls.is_some_and(|t| t.implicit) {
            "ftps://"
        } else {
            ""
        },
        user = lftp_quote(&t.user),
        pass = lftp_quote(&t.pass),
        port = t.port,
        host = lftp_host(t),
    );
    let work = tempfile::Builder::new()
        .prefix("ftpgate-lftp-")
        .tempdir()
        .expect("tempdir");
    let file = work.path().join("script.lftp");
    std::fs::write(&file, script).expect("write lftp script");
    let mut cmd = Command::new("lftp");
    cmd.arg("-d").arg("-f").arg(&file);
    run(cmd, None, default_timeout())
}

fn lftp_host(t: &Target) -> String {
    // lftp takes bracketed IPv6 literals.
    t.url_host()
}

// ---------------------------------------------------------------- ftplib

/// The Python interpreter used for ftplib (Debian's own if present).
pub fn python3() -> PathBuf {
    let p = PathBuf::from("/usr/bin/python3");
    if p.exists() {
        p
    } else {
        PathBuf::from("python3")
    }
}

const FTPLIB_HEAD: &str = r#"
import ftplib, sys, os, io, hashlib, socket
HOST, PORT, USER, PASS, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
"#;

const FTPLIB_PLAIN: &str = r#"
ftp = ftplib.FTP()
"#;

/// FTP_TLS set up from argv[6..]: CA file ('' = no verification), implicit
/// ('1'/'0'), version ('', '1.2', '1.3'), reuse ('1'/'0'), prot ('P'/'C'),
/// and optionally a client certificate and key file (argv[11], argv[12]).
/// Stock ftplib wraps data sockets without the control session (it never
/// resumes: bpo-19500), so `ReusingFTP_TLS` passes `session=` when reuse is
/// on. Every data connection prints `DATA-TLS <version> reused|new`.
const FTPLIB_TLS: &str = r#"
import ssl
CA, IMPLICIT, VERSION, REUSE, PROT = sys.argv[6], sys.argv[7] == '1', sys.argv[8], sys.argv[9] == '1', sys.argv[10]
if CA:
    ctx = ssl.create_default_context(cafile=CA)
else:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
if len(sys.argv) > 12 and sys.argv[11]:
    ctx.load_cert_chain(sys.argv[11], sys.argv[12])
if VERSION == '1.2':
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
elif VERSION == '1.3':
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3

class ReusingFTP_TLS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            session = self.sock.session if REUSE else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
            print('DATA-TLS', conn.version(), 'reused' if conn.session_reused else 'new', flush=True)
        return conn, size

class ImplicitFTP_TLS(ReusingFTP_TLS):
    def connect(self, host='', port=0, timeout=-999, source_address=None):
        if host != '':
            self.host = host
        if port > 0:
            self.port = port
        if timeout != -999:
            self.timeout = timeout
        if source_address is not None:
            self.source_address = source_address
        sock = socket.create_connection((self.host, self.port), self.timeout, source_address=self.source_address)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=self.host)
        self.file = self.sock.makefile('r', encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

ftp = (ImplicitFTP_TLS if IMPLICIT else ReusingFTP_TLS)(context=ctx)
"#;

const FTPLIB_HELPERS: &str = r#"
# Since Python 3.6.x ftplib ignores the 227 address unless told to trust it.
ftp.trust_server_pasv_ipv4_address = True

def _epsv():
    return ftplib.parse229(ftp.sendcmd('EPSV'), ftp.sock.getpeername())

def _pasv():
    host, port = ftplib.parse227(ftp.sendcmd('PASV'))
    return host, port

def _listen(af_wanted):
    sock = socket.create_server((ftp.sock.getsockname()[0], 0), family=ftp.af, backlog=1)
    return sock

def _port():
    sock = _listen(ftp.af)
    host, port = sock.getsockname()[:2]
    ftp.sendport(host, port)
    if ftp.timeout is not None:
        sock.settimeout(ftp.timeout)
    return sock

def _eprt():
    sock = _listen(ftp.af)
    host, port = sock.getsockname()[:2]
    ftp.sendeprt(host, port)
    if ftp.timeout is not None:
        sock.settimeout(ftp.timeout)
    return sock

def use_mode(m):
    """'pasv', 'epsv', 'port', 'eprt', or 'default' (ftplib's own choice:
    PASV/PORT on IPv4, EPSV/EPRT on IPv6)."""
    if m == 'pasv':
        ftp.set_pasv(True); ftp.makepasv = _pasv
    elif m == 'epsv':
        ftp.set_pasv(True); ftp.makepasv = _epsv
    elif m == 'port':
        ftp.set_pasv(False); ftp.makeport = _port
    elif m == 'eprt':
        ftp.set_pasv(False); ftp.makeport = _eprt

def sha256(b):
    return hashlib.sha256(b).hexdigest()

def get_bytes(path):
    b = io.BytesIO()
    ftp.retrbinary('RETR ' + path, b.write)
    return b.getvalue()

ftp.connect(HOST, PORT, timeout=20)
ftp.login(USER, PASS)
"#;

const FTPLIB_TLS_PROT: &str = r#"
print('CONTROL-TLS', ftp.sock.version(), flush=True)
if PROT == 'P':
    ftp.prot_p()
else:
    ftp.prot_c()
"#;

const FTPLIB_BODY: &str = r#"
use_mode(MODE)
# ---- test body ----
"#;

/// Runs a Python script body with `ftp` (an `ftplib.FTP`) connected to `t`
/// and logged in, in ftplib's default data mode (PASV/PORT on IPv4,
/// EPSV/EPRT on IPv6), with the 227 address trusted as given. Helpers in
/// scope: `use_mode('pasv'|'epsv'|'port'|'eprt')`, `sha256(bytes)`,
/// `get_bytes(path)`. Print results to stdout; an exception fails the run.
pub fn ftplib(t: &Target, script_body: &str) -> Output {
    ftplib_run(t, script_body, "default")
}

/// [`ftplib`] with the data connection forced to `mode`.
pub fn ftplib_mode(t: &Target, script_body: &str, mode: Mode) -> Output {
    ftplib_run(t, script_body, mode_name(mode))
}

/// Python's ftplib `FTP_TLS` against `t` in `mode`, as `tls` says, with
/// the same helpers as [`ftplib`] (the object is still called `ftp`).
/// After login it prints `CONTROL-TLS <version>` and sends `PBSZ 0` and
/// `PROT P` (or `PROT C`); each data connection prints
/// `DATA-TLS <version> reused|new`. Implicit TLS uses a small `FTP_TLS`
/// subclass that wraps the socket before the greeting (ftplib has none).
pub fn ftplib_tls(t: &Target, script_body: &str, mode: Mode, tls: &ClientTls) -> Output {
    ftplib_exec(t, script_body, mode_name(mode), Some(tls))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Pasv => "pasv",
        Mode::Epsv => "epsv",
        Mode::Port => "port",
        Mode::Eprt => "eprt",
    }
}

fn ftplib_run(t: &Target, body: &str, mode: &str) -> Output {
    ftplib_exec(t, body, mode, None)
}

fn ftplib_exec(t: &Target, body: &str, mode: &str, tls: Option<&ClientTls>) -> Output {
    let work = tempfile::Builder::new()
        .prefix("ftpgate-ftplib-")
        .tempdir()
        .expect("tempdir");
    let file = work.path().join("script.py");
    let script = match tls {
        None => format!("{FTPLIB_HEAD}{FTPLIB_PLAIN}{FTPLIB_HELPERS}{FTPLIB_BODY}{body}\n"),
        Some(_) => format!(
            "{FTPLIB_HEAD}{FTPLIB_TLS}{FTPLIB_HELPERS}{FTPLIB_TLS_PROT}{FTPLIB_BODY}{body}\n"
        ),
    };
    std::fs::write(&file, script).expect("write python script");
    let mut cmd = Command::new(python3());
    cmd.arg("-u").arg("-W").arg("ignore").arg(&file).args([
        &t.host,
        &t.port.to_string(),
        &t.user,
        &t.pass,
        mode,
    ]);
    if let Some(tls) = tls {
        let flag = |b: bool| if b { "1" } else { "0" };
        cmd.arg(
            tls.ca
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .arg(flag(tls.implicit))
        .arg(match tls.version {
            None => "",
            Some(TlsVersion::V1_2) => "1.2",
            Some(TlsVersion::V1_3) => "1.3",
        })
        .arg(flag(tls.reuse_session))
        .arg(if tls.protect_data { "P" } else { "C" });
        if let Some((cert, key)) = &tls.client_cert {
            cmd.arg(cert).arg(key);
        }
    }
    run(cmd, None, default_timeout())
}

// ---------------------------------------------------------------- tnftp

/// The classic command-line client: tnftp (Debian 12's `ftp` is tnftp;
/// netkit-ftp no longer exists there).
pub fn classic_ftp_binary() -> PathBuf {
    let p = PathBuf::from("/usr/bin/tnftp");
    if p.exists() {
        p
    } else {
        PathBuf::from("ftp")
    }
}

/// tnftp `-n -v` driven through stdin: `open host port`, `user u p`,
/// `binary`, `passive on|off`, then `commands` (one per line; use absolute
/// local paths, e.g. `get big.bin /abs/path`), then `bye`. tnftp's own
/// defaults otherwise: it tries EPSV (passive) / EPRT (active) first and
/// falls back to PASV / PORT. stdout has the server replies (-v).
///
/// tnftp exits 0 even when a command failed: check the replies in stdout
/// (e.g. `226`) and the result files.
pub fn classic_ftp(t: &Target, commands: &str, passive: bool) -> Output {
    classic_ftp_script(
        t,
        commands,
        if passive {
            "passive on\n"
        } else {
            "passive off\n"
        },
    )
}

/// [`classic_ftp`] forced to one mode (`epsv4 off` for PASV/PORT on IPv4).
pub fn classic_ftp_mode(t: &Target, commands: &str, mode: Mode) -> Output {
    let setup = match mode {
        Mode::Pasv => "passive on\nepsv4 off\nepsv6 off\n",
        Mode::Epsv => "passive on\nepsv4 on\nepsv6 on\n",
        Mode::Port => "passive off\nepsv4 off\nepsv6 off\n",
        Mode::Eprt => "passive off\nepsv4 on\nepsv6 on\n",
    };
    classic_ftp_script(t, commands, setup)
}

fn classic_ftp_script(t: &Target, commands: &str, setup: &str) -> Output {
    let input = format!(
        "open {host} {port}\nuser {user} {pass}\nbinary\n{setup}{commands}\nbye\n",
        host = t.host,
        port = t.port,
        user = t.user,
        pass = t.pass,
    );
    let mut cmd = Command::new(classic_ftp_binary());
    cmd.args(["-n", "-v"]);
    run(cmd, Some(input.as_bytes()), default_timeout())
}

// ---------------------------------------------------------------- self-tests

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::{self, put_file, FtpServer, ServerKind};
    use std::fs;
    use std::net::TcpListener;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
            .collect()
    }

    fn vsftpd(test: &str) -> Option<(FtpServer, Vec<u8>)> {
        if !peers::available_or_skip(ServerKind::Vsftpd, test) {
            return None;
        }
        let big = data(1024 * 1024 + 17, 3);
        let b2 = big.clone();
        let srv = FtpServer::start_with(ServerKind::Vsftpd, move |root| {
            put_file(root, "big.bin", &b2);
            put_file(root, "dir/one.txt", b"one\n");
            put_file(root, "dir/two.txt", b"two\n");
        });
        Some((srv, big))
    }

    #[test]
    fn clients_curl_vsftpd() {
        let Some((srv, big)) = vsftpd("clients_curl_vsftpd") else {
            return;
        };
        let t = Target::for_server(&srv);
        let local = tempfile::tempdir().unwrap();
        for mode in Mode::ALL {
            let out = curl_get(&t, "/big.bin", mode);
            out.assert_ok("curl_get");
            assert!(out.stdout == big, "{mode:?}: content differs");
            assert!(
                out.stderr.contains(&format!("> {}", mode.command())),
                "{mode:?}: {out:?}"
            );
            if mode == Mode::Pasv {
                // The 227 address was used, not skipped.
                assert!(!out.stderr.contains("Skip "), "{out:?}");
            }
            let out = curl_list(&t, "dir", mode);
            out.assert_ok("curl_list");
            assert!(out.stdout_str().contains("one.txt") && out.stdout_str().contains("two.txt"));
            let out = curl_nlst(&t, "dir", mode);
            out.assert_ok("curl_nlst");
            let mut names: Vec<String> = out.stdout_str().lines().map(String::from).collect();
            names.sort();
            assert_eq!(names, ["one.txt", "two.txt"]);
            let lp = local.path().join("up.bin");
            fs::write(&lp, &big[..1000]).unwrap();
            let remote = format!("upload/curl-{mode:?}.bin");
            curl_put(&t, &lp, &remote, mode).assert_ok("curl_put");
            curl_append(&t, &lp, &remote, mode).assert_ok("curl_append");
            let got = fs::read(srv.root.join(&remote)).unwrap();
            assert_eq!(got.len(), 2000);
            assert!(got[..1000] == big[..1000] && got[1000..] == big[..1000]);
        }
        let out = curl_get(&t, "missing.bin", Mode::Epsv);
        assert!(!out.ok && out.stderr.contains("550"), "{out:?}");
    }

    #[test]
    fn clients_lftp_vsftpd() {
        let Some((srv, big)) = vsftpd("clients_lftp_vsftpd") else {
            return;
        };
        let t = Target::for_server(&srv);
        let local = tempfile::tempdir().unwrap();
        for mode in Mode::ALL {
            let dst = local.path().join(format!("got-{mode:?}.bin"));
            let cmds = format!(
                "get big.bin -o {dst}\nput {dst} -o upload/lftp-{mode:?}.bin\ncls -1 dir",
                dst = dst.display()
            );
            let out = lftp(&t, &cmds, mode);
            out.assert_ok("lftp");
            assert!(fs::read(&dst).unwrap() == big, "{mode:?}: get differs");
            assert!(
                fs::read(srv.upload_path().join(format!("lftp-{mode:?}.bin"))).unwrap() == big,
                "{mode:?}: put differs"
            );
            let s = out.stdout_str();
            assert!(s.contains("one.txt") && s.contains("two.txt"), "{out:?}");
            // The conversation shows the forced mode (lftp: EPRT only for IPv6).
            let want = match mode {
                Mode::Eprt => "---> PORT".to_string(),
                m => format!("---> {}", m.command()),
            };
            assert!(
                out.stderr.contains(&want),
                "{mode:?}: {want} not in {out:?}"
            );
        }
        // cmd:fail-exit: a failing command fails the run.
        let out = lftp(&t, "get nope.bin -o /dev/null", Mode::Epsv);
        assert!(!out.ok, "{out:?}");
    }

    #[test]
    fn clients_ftplib_vsftpd() {
        let Some((srv, big)) = vsftpd("clients_ftplib_vsftpd") else {
            return;
        };
        let t = Target::for_server(&srv);
        let want = {
            use sha2::{Digest, Sha256};
            Sha256::digest(&big)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        for mode in Mode::ALL {
            let body = format!(
                "ftp.set_debuglevel(1)\n\
                 print('SHA', sha256(get_bytes('big.bin')))\n\
                 ftp.storbinary('STOR upload/py-{mode:?}.bin', io.BytesIO(b'x' * 70000))\n\
                 print('NLST', sorted(ftp.nlst('dir')))\n\
                 ftp.quit()\n"
            );
            let out = ftplib_mode(&t, &body, mode);
            out.assert_ok("ftplib");
            let s = out.stdout_str();
            assert!(s.contains(&format!("SHA {want}")), "{mode:?}: {out:?}");
            assert!(
                s.contains(&format!("*cmd* '{}", mode.command())),
                "{mode:?}: {out:?}"
            );
            assert!(s.contains("one.txt") && s.contains("two.txt"), "{out:?}");
            let up = fs::read(srv.upload_path().join(format!("py-{mode:?}.bin"))).unwrap();
            assert_eq!(up, vec![b'x'; 70000]);
        }
        // Default mode on IPv4: PASV, with the 227 address used.
        let out = ftplib(
            &t,
            "ftp.set_debuglevel(1)\nprint(len(get_bytes('big.bin')))",
        );
        out.assert_ok("ftplib default");
        assert!(out.stdout_str().contains("*cmd* 'PASV'"), "{out:?}");
        assert!(out.stdout_str().contains(&big.len().to_string()), "{out:?}");
        // An exception fails the run.
        let out = ftplib(&t, "ftp.retrbinary('RETR nope', print)");
        assert!(!out.ok && out.stderr.contains("550"), "{out:?}");
    }

    #[test]
    fn clients_classic_ftp_vsftpd() {
        let Some((srv, big)) = vsftpd("clients_classic_ftp_vsftpd") else {
            return;
        };
        let t = Target::for_server(&srv);
        let local = tempfile::tempdir().unwrap();
        for passive in [true, false] {
            let dst = local.path().join(format!("tn-{passive}.bin"));
            let src = local.path().join("src.bin");
            fs::write(&src, &big[..5000]).unwrap();
            let cmds = format!(
                "get big.bin {}\nput {} upload/tn-{passive}.bin\nls dir",
                dst.display(),
                src.display()
            );
            let out = classic_ftp(&t, &cmds, passive);
            out.assert_ok("tnftp");
            assert!(fs::read(&dst).unwrap() == big, "passive={passive}: {out:?}");
            assert_eq!(
                fs::read(srv.upload_path().join(format!("tn-{passive}.bin"))).unwrap(),
                &big[..5000]
            );
            let s = out.stdout_str();
            assert!(s.contains("226") && s.contains("one.txt"), "{out:?}");
        }
        for mode in Mode::ALL {
            let dst = local.path().join(format!("tn-{mode:?}.bin"));
            let out = classic_ftp_mode(
                &t,
                &format!("debug on\nget big.bin {}", dst.display()),
                mode,
            );
            out.assert_ok("tnftp mode");
            assert!(fs::read(&dst).unwrap() == big, "{mode:?}: {out:?}");
            // `debug on` shows the commands sent.
            assert!(
                out.stdout_str()
                    .contains(&format!("---> {}", mode.command())),
                "{mode:?}: {out:?}"
            );
        }
    }

    /// A peer that accepts and never answers: every wrapper gives up at the
    /// timeout instead of hanging.
    #[test]
    fn clients_timeout_kills_hung_client() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _accepted = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for c in l.incoming().take(1).flatten() {
                conns.push(c);
                std::thread::sleep(Duration::from_secs(10));
            }
        });
        let t = Target::new("127.0.0.1", port, "u", "p");
        let mut cmd = Command::new("curl");
        cmd.args(["-q", "-sS"]).arg(curl_url(&t, "x"));
        let out = run(cmd, None, Duration::from_secs(2));
        assert!(out.timed_out && !out.ok, "{out:?}");
        assert!(out.elapsed < Duration::from_secs(5), "{out:?}");
    }
}
