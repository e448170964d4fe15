//! Three more real clients through ftpgate (issue 16): Node's basic-ftp,
//! Python's aioftp and Java's Apache Commons Net, the FTP libraries that
//! operators' own applications embed. Unlike curl and lftp, an application
//! has no knob to repair a wrong passive address: the 227 ftpgate writes is
//! what it gets.
//!
//! Each library is driven by a small program committed in `tests/clients/`
//! (`basic_ftp.mjs`, `aioftp_client.py`, `CommonsNetClient.java`, the last
//! compiled with javac once per test process) that takes the same
//! arguments: host, port, user, password, data mode, TLS variant, CA file,
//! then a directory to list, a file to download (and where to), a file to
//! upload (and where to). It prints `ENTRY <name>` per listing entry and
//! `DONE` on stdout and the protocol conversation on stderr. The tests check
//! the listing, the SHA-256 of the downloaded file and of the uploaded file
//! on the server's disk, the data command used, and that every 227/229 names
//! ftpgate's advertised address and a port of its range.
//!
//! As in real_peers.rs and ftps.rs, ftpgate advertises 127.0.0.5, where only
//! its passive ports listen (bound on 0.0.0.0), while the servers name
//! 127.0.0.1: a client that finds its data through 127.0.0.5 proves the
//! rewrite. Each driver's `pasv` mode uses the 227 address exactly as given
//! (basic-ftp `allowSeparateTransferHost`, aioftp
//! `trust_server_pasv_ipv4_address`, Commons Net without its NAT workaround
//! and remote verification); `default` runs each library as shipped.
//!
//! `scripts/install-test-deps.sh` installs the libraries under
//! `/opt/ftpgate-clients` (override with `FTPGATE_CLIENTS_DIR`): basic-ftp
//! with npm in `node/`, aioftp with pip in a venv of Debian's python3 in
//! `python/`; Commons Net is Debian's libcommons-net-java. With
//! `FTPGATE_REQUIRE_PEERS=1` a missing library fails the test.
//!
//! Names start with `more_clients_`; `more_clients_direct_` ones run the
//! clients against the servers without ftpgate (rig checks, and the
//! baseline that tells an ftpgate bug from a client limit);
//! a bug found with these clients gets a `more_clients_bug_` test,
//! `#[ignore]`d with the reason until it is fixed (none is open now).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::certs::TestPki;
use crate::clients::{self, Output, Target};
use crate::gateway::{self, Gateway};
use crate::peers::{self, put_file, random_bytes, FtpServer, ServerKind, TlsSetup};

/// The address ftpgate advertises; only its passive ports listen there.
const PUBLIC: &str = "127.0.0.5";
/// Size of `big.bin` on every server.
const BIG_LEN: usize = 1024 * 1024 + 4321;
/// Size of the file each run uploads.
const UP_LEN: usize = 700_000;
/// The listing of `dir/` every run checks.
const DIR_ENTRIES: [&str; 3] = ["a.txt", "b.txt", "c.bin"];
/// Debian's Commons Net (libcommons-net-java).
const COMMONS_NET_JAR: &str = "/usr/share/java/commons-net.jar";

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// Where `scripts/install-test-deps.sh` installs the client libraries.
fn clients_dir() -> PathBuf {
    std::env::var_os("FTPGATE_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ftpgate-clients"))
}

/// A driver program in `tests/clients/`.
fn driver(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// `name` found on PATH, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

// === the three libraries ===

/// A client library and how its driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lib {
    /// Node's basic-ftp (passive only: PASV, EPSV).
    BasicFtp,
    /// Python's aioftp (passive only: PASV, EPSV).
    Aioftp,
    /// Java's Apache Commons Net (PASV, EPSV, PORT, EPRT).
    CommonsNet,
}

impl Lib {
    fn name(self) -> &'static str {
        match self {
            Lib::BasicFtp => "basic-ftp",
            Lib::Aioftp => "aioftp",
            Lib::CommonsNet => "commons-net",
        }
    }

    /// What is missing to run this library's driver.
    fn missing(self) -> Vec<String> {
        let mut missing = Vec::new();
        let mut need_file = |p: PathBuf| {
            if !p.exists() {
                missing.push(p.display().to_string());
            }
        };
        match self {
            Lib::BasicFtp => {
                need_file(clients_dir().join("node/node_modules/basic-ftp/package.json"))
            }
            Lib::Aioftp => need_file(clients_dir().join("python/bin/python")),
            Lib::CommonsNet => need_file(PathBuf::from(COMMONS_NET_JAR)),
        }
        let programs: &[&str] = match self {
            Lib::BasicFtp => &["node"],
            Lib::Aioftp => &[],
            Lib::CommonsNet => &["java", "javac"],
        };
        for p in programs {
            if on_path(p).is_none() {
                missing.push(format!("{p} on PATH"));
            }
        }
        missing
    }

    /// Whether the library can run here. With `FTPGATE_REQUIRE_PEERS=1` a
    /// missing one panics (CI must fail, not skip); otherwise a SKIP line
    /// for `test` is printed and false returned.
    fn available_or_skip(self, test: &str) -> bool {
        let missing = self.missing();
        if missing.is_empty() {
            return true;
        }
        if peers::peers_required() {
            panic!(
                "FTPGATE_REQUIRE_PEERS=1 but {} is not usable: missing {}. Run scripts/install-test-deps.sh as root.",
                self.name(),
                missing.join(", ")
            );
        }
        println!(
            "SKIP {test}: {} not installed (missing {}); run scripts/install-test-deps.sh",
            self.name(),
            missing.join(", ")
        );
        false
    }

    /// The command that runs the driver, before its arguments.
    fn command(self) -> Command {
        match self {
            Lib::BasicFtp => {
                let mut c = Command::new("node");
                c.arg(driver("basic_ftp.mjs"))
                    .env("FTPGATE_BASIC_FTP_DIR", clients_dir().join("node"));
                c
            }
            Lib::Aioftp => {
                let mut c = Command::new(clients_dir().join("python/bin/python"));
                c.arg("-u").arg(driver("aioftp_client.py"));
                c
            }
            Lib::CommonsNet => {
                let mut c = Command::new("java");
                c.arg("-cp")
                    .arg(format!(
                        "{}:{COMMONS_NET_JAR}",
                        commons_net_classes().display()
                    ))
                    .arg("CommonsNetClient");
                c
            }
        }
    }
}

/// The compiled CommonsNetClient, once per test process, in a folder of
/// `CARGO_TARGET_TMPDIR` named after the source's and the jar's hash (so a
/// changed driver or Commons Net recompiles, and concurrent processes never
/// see a half-written folder: javac writes elsewhere, then a rename).
fn commons_net_classes() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = driver("CommonsNetClient.java");
        let mut h = Sha256::new();
        h.update(fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?);
        h.update(fs::read(COMMONS_NET_JAR).map_err(|e| format!("{COMMONS_NET_JAR}: {e}"))?);
        let key: String = format!("{:x}", h.finalize()).chars().take(16).collect();
        let tmp_root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp_root.join(format!("commons-net-client-{key}"));
        if dir.join("CommonsNetClient.class").exists() {
            return Ok(dir);
        }
        fs::create_dir_all(tmp_root).map_err(|e| e.to_string())?;
        let work = tempfile::tempdir_in(tmp_root).map_err(|e| e.to_string())?;
        let mut javac = Command::new("javac");
        javac
            .arg("-nowarn")
            .arg("-cp")
            .arg(COMMONS_NET_JAR)
            .arg("-d")
            .arg(work.path())
            .arg(&src);
        let out = clients::run(javac, None, clients::default_timeout());
        if !out.ok {
            return Err(format!("javac CommonsNetClient.java failed: {out:?}"));
        }
        // Another process may have won the race: its folder is as good,
        // and ours is removed when `work` drops.
        if fs::rename(work.path(), &dir).is_ok() {
            let _moved = work.keep();
        }
        Ok(dir)
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

// === one client run ===

/// A data mode as the drivers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataMode {
    /// PASV, the 227 address used as given.
    Pasv,
    /// EPSV.
    Epsv,
    /// PORT (Commons Net only).
    Port,
    /// EPRT (Commons Net only, on an IPv6 control connection).
    Eprt,
    /// The library's own passive choice and address handling.
    Default,
}

impl DataMode {
    fn arg(self) -> &'static str {
        match self {
            DataMode::Pasv => "pasv",
            DataMode::Epsv => "epsv",
            DataMode::Port => "port",
            DataMode::Eprt => "eprt",
            DataMode::Default => "default",
        }
    }

    /// The command the client must have sent for its data connections.
    fn command(self, lib: Lib) -> &'static str {
        match (self, lib) {
            (DataMode::Pasv, _) => "PASV",
            (DataMode::Epsv, _) => "EPSV",
            (DataMode::Port, _) => "PORT",
            (DataMode::Eprt, _) => "EPRT",
            // Commons Net's default is PASV; basic-ftp and aioftp try EPSV first.
            (DataMode::Default, Lib::CommonsNet) => "PASV",
            (DataMode::Default, _) => "EPSV",
        }
    }

    fn is_passive(self) -> bool {
        !matches!(self, DataMode::Port | DataMode::Eprt)
    }
}

/// A TLS variant as the drivers name it: "none", "explicit", "implicit",
/// "implicit-prot" (aioftp), optionally with ":1.2"/":1.3".
type TlsArg = &'static str;

/// What one run should find, and where it puts things.
struct Run<'a> {
    lib: Lib,
    target: &'a Target,
    mode: DataMode,
    tls: TlsArg,
    /// CA file to verify against (TLS runs).
    ca: Option<&'a Path>,
}

/// What a run produced: the client's output and the files it moved.
struct Ran {
    out: Output,
    got: PathBuf,
    put_remote: String,
    put_data: Vec<u8>,
    _local: tempfile::TempDir,
}

impl Run<'_> {
    fn what(&self) -> String {
        format!("{} {:?} tls={}", self.lib.name(), self.mode, self.tls)
    }

    /// Runs the driver: list `dir`, get `big.bin`, put a fresh file to
    /// `upload/<lib>-<mode>-<tls>.bin`.
    fn exec(&self) -> Ran {
        self.exec_with_env(&[])
    }

    /// [`Run::exec`] with extra environment variables for the driver.
    fn exec_with_env(&self, env: &[(&str, &str)]) -> Ran {
        let local = tempfile::Builder::new()
            .prefix("ftpgate-more-clients-")
            .tempdir()
            .expect("tempdir");
        let got = local.path().join("got.bin");
        let put_local = local.path().join("put.bin");
        let seed = self.mode as u64 * 31 + self.lib as u64 * 7 + self.tls.len() as u64;
        let put_data = random_bytes(UP_LEN + seed as usize, seed);
        fs::write(&put_local, &put_data).unwrap();
        let put_remote = format!(
            "upload/{}-{}-{}.bin",
            self.lib.name(),
            self.mode.arg(),
            self.tls.replace(':', "-")
        );
        let mut cmd = self.lib.command();
        cmd.arg(&self.target.host)
            .arg(self.target.port.to_string())
            .arg(&self.target.user)
            .arg(&self.target.pass)
            .arg(self.mode.arg())
            .arg(self.tls)
            .arg(self.ca.map(|p| p.display().to_string()).unwrap_or_default())
            .arg("dir")
            .arg("big.bin")
            .arg(&got)
            .arg(&put_local)
            .arg(&put_remote)
            .envs(env.iter().copied());
        let out = clients::run(cmd, None, clients::default_timeout());
        Ran {
            out,
            got,
            put_remote,
            put_data,
            _local: local,
        }
    }
}

/// A server with `big.bin` and `dir/` holding [`DIR_ENTRIES`].
fn fill(big: &[u8]) -> impl FnOnce(&Path) + '_ {
    move |root: &Path| {
        put_file(root, "big.bin", big);
        put_file(root, "dir/a.txt", b"a\n");
        put_file(root, "dir/b.txt", b"b\n");
        put_file(root, "dir/c.bin", &[0u8; 3000]);
    }
}

/// Checks a run: success, the listing, the download and the upload by
/// SHA-256, the data command in the conversation, and (passive, through
/// `gw`) the rewritten 227/229.
#[track_caller]
fn check(run: &Run, ran: &Ran, srv: &FtpServer, big: &[u8], gw: Option<&Gateway>) {
    let what = run.what();
    let ctx = |why: &str| {
        format!(
            "{what}: {why}\n{:?}\n--- server log ({}) ---\n{}",
            ran.out,
            srv.kind.name(),
            srv.log()
        )
    };
    assert!(ran.out.ok, "{}", ctx("the client failed"));
    let stdout = ran.out.stdout_str();
    let mut entries: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ENTRY "))
        .collect();
    entries.sort_unstable();
    assert_eq!(entries, DIR_ENTRIES, "{}", ctx("listing of dir/"));
    assert!(stdout.lines().any(|l| l == "DONE"), "{}", ctx("no DONE"));
    let got = fs::read(&ran.got).unwrap_or_default();
    assert!(
        sha(&got) == sha(big),
        "{}",
        ctx(&format!(
            "downloaded big.bin differs ({} of {} bytes)",
            got.len(),
            big.len()
        ))
    );
    let stored = fs::read(srv.root.join(&ran.put_remote)).unwrap_or_default();
    assert!(
        sha(&stored) == sha(&ran.put_data),
        "{}",
        ctx(&format!(
            "uploaded {} differs on the server ({} of {} bytes)",
            ran.put_remote,
            stored.len(),
            ran.put_data.len()
        ))
    );
    let cmd = run.mode.command(run.lib);
    assert!(
        sent_commands(&ran.out.stderr).any(|c| c.starts_with(cmd)),
        "{}",
        ctx(&format!("{cmd} not sent"))
    );
    for other in ["PASV", "EPSV", "PORT", "EPRT"] {
        // aioftp's and basic-ftp's default may try EPSV and fall back; the
        // forced modes must use their own command only.
        if other != cmd && run.mode != DataMode::Default {
            assert!(
                !sent_commands(&ran.out.stderr).any(|c| c.starts_with(other)),
                "{}",
                ctx(&format!("{other} sent in mode {:?}", run.mode))
            );
        }
    }
    if let Some(gw) = gw {
        if run.mode.is_passive() {
            assert_rewritten(&ran.out.stderr, gw, &ctx("passive reply"));
        }
    }
}

/// The commands in a driver's protocol log, each without the log's prefix:
/// basic-ftp `> CMD`, aioftp `aioftp.client CMD`, Commons Net `CMD`.
fn sent_commands(log: &str) -> impl Iterator<Item = &str> {
    log.lines().map(|l| {
        l.strip_prefix("> ")
            .or_else(|| l.strip_prefix("aioftp.client "))
            .unwrap_or(l)
    })
}

/// Checks every 227/229 in a client's log names ftpgate's advertised
/// address (227) and a port of its range; at least one must be there.
#[track_caller]
fn assert_rewritten(log: &str, gw: &Gateway, what: &str) {
    let mut seen = 0;
    for line in log.lines() {
        if let Some(i) = line.find("227 Entering Passive Mode (") {
            let nums: Vec<u16> = line[i + 27..]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .take(6)
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                &nums[..4],
                &[127, 0, 0, 5],
                "227 must name ftpgate's public address: {line}\n{what}"
            );
            assert!(
                gw.owns_passive_port(nums[4] * 256 + nums[5]),
                "227 port outside ftpgate's range: {line}\n{what}"
            );
            seen += 1;
        }
        if let Some(i) = line.find("(|||") {
            let port: u16 = line[i + 4..].split('|').next().unwrap().parse().unwrap();
            assert!(
                gw.owns_passive_port(port),
                "229 port outside ftpgate's range: {line}\n{what}"
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no 227/229 in the client's log\n{what}");
}

// === fixtures ===

/// ftpgate's client-side certificate (the PKI's valid one).
fn client_tls_toml(pki: &TestPki) -> String {
    format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string()
    )
}

/// ftpgate's backend side: explicit AUTH TLS, verified against the CA.
fn backend_tls_toml(pki: &TestPki) -> String {
    format!(
        "backend_tls = \"explicit\"\nbackend_tls_ca = {:?}\n",
        pki.ca_pem.display().to_string()
    )
}

/// A real server, ftpgate in front of it, the PKI, `big.bin`'s content.
/// Fields drop in order: ftpgate first, then the server.
struct Fx {
    gw: Gateway,
    srv: FtpServer,
    pki: TestPki,
    big: Vec<u8>,
    /// Where clients connect: ftpgate's control listener, or its implicit
    /// TLS listener.
    entry: SocketAddr,
}

/// How ftpgate and the server are set up for a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// Plain FTP on both sides.
    Plain,
    /// The server with explicit TLS required, ftpgate with its certificate
    /// toward clients (explicit `AUTH TLS`) and explicit TLS to the server.
    ExplicitTls,
    /// As `ExplicitTls`, clients entering through ftpgate's implicit TLS
    /// listener.
    ImplicitTls,
}

impl Fx {
    /// `kind` behind ftpgate as `setup` says, ftpgate listening on `listen`
    /// ("127.0.0.1:0" unless a test needs another address). None (after a
    /// SKIP line) when the server or `lib` is missing and peers are not
    /// required.
    fn start(kind: ServerKind, lib: Lib, setup: Setup, listen: &str, test: &str) -> Option<Fx> {
        Fx::start_with(kind, lib, setup, listen, "", test)
    }

    /// [`Fx::start`] with `gw_toml` added to ftpgate's configuration.
    fn start_with(
        kind: ServerKind,
        lib: Lib,
        setup: Setup,
        listen: &str,
        gw_toml: &str,
        test: &str,
    ) -> Option<Fx> {
        if !lib.available_or_skip(test) {
            return None;
        }
        let tls = setup != Setup::Plain;
        let ok = if tls {
            peers::available_tls_or_skip(kind, test)
        } else {
            peers::available_or_skip(kind, test)
        };
        if !ok {
            return None;
        }
        let pki = TestPki::new();
        let big = random_bytes(BIG_LEN, 0x16 ^ kind as u64);
        let srv = if tls {
            FtpServer::start_tls(kind, TlsSetup::explicit(&pki).required(), fill(&big))
        } else {
            FtpServer::start_with(kind, fill(&big))
        };
        let implicit = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
        let mut extra = if listen.starts_with('[') {
            // IPv6 clients: passive ports on the listen address (::1), and
            // EPSV/EPRT carry no address.
            "public_address = \"auto\"\n".to_string()
        } else {
            format!("public_address = \"{PUBLIC}\"\npassive_bind_address = \"0.0.0.0\"\n")
        };
        if tls {
            extra.push_str(&client_tls_toml(&pki));
            extra.push_str(&backend_tls_toml(&pki));
        }
        if setup == Setup::ImplicitTls {
            extra.push_str(&format!("implicit_tls_listen = [\"{implicit}\"]\n"));
        }
        extra.push_str(gw_toml);
        let gw = gateway::start_on(listen, &[srv.addr], &extra);
        let entry = if setup == Setup::ImplicitTls {
            implicit
        } else {
            gw.addr
        };
        Some(Fx {
            gw,
            srv,
            pki,
            big,
            entry,
        })
    }

    fn target(&self) -> Target {
        Target::for_server(&self.srv).via(self.entry)
    }

    /// Runs `lib` in each of `runs` through ftpgate and checks each;
    /// returns the clients' outputs.
    fn check_runs(&self, lib: Lib, runs: &[(DataMode, TlsArg)]) -> Vec<Output> {
        let t = self.target();
        let mut outs = Vec::new();
        for &(mode, tls) in runs {
            let run = Run {
                lib,
                target: &t,
                mode,
                tls,
                ca: (tls != "none").then_some(self.pki.ca_pem.as_path()),
            };
            let ran = run.exec();
            check(&run, &ran, &self.srv, &self.big, Some(&self.gw));
            if tls != "none" {
                assert_tls_used(&run, &ran);
            }
            outs.push(ran.out);
        }
        outs
    }
}

/// A TLS run really used TLS on control (no AUTH on implicit), and asked
/// for protected data.
#[track_caller]
fn assert_tls_used(run: &Run, ran: &Ran) {
    let log = &ran.out.stderr;
    let what = run.what();
    let auth = sent_commands(log).any(|c| c.starts_with("AUTH TLS"));
    if run.tls.starts_with("implicit") {
        assert!(!auth, "{what}: AUTH on implicit TLS: {:?}", ran.out);
    } else {
        assert!(auth, "{what}: no AUTH TLS: {:?}", ran.out);
    }
    // aioftp's plain implicit mode sends no PROT (it wraps data anyway).
    if run.tls != "implicit" || run.lib != Lib::Aioftp {
        assert!(
            sent_commands(log).any(|c| c.starts_with("PROT P")),
            "{what}: no PROT P: {:?}",
            ran.out
        );
    }
    let version = match run.tls.split_once(':') {
        Some((_, v)) => format!("CONTROL-TLS TLSv{v}"),
        None => "CONTROL-TLS TLSv1.".to_string(),
    };
    assert!(
        log.lines().any(|l| l.starts_with(&version)),
        "{what}: control connection not in {version}: {:?}",
        ran.out
    );
}

/// One test per (library, setup): `runs` through ftpgate in front of vsftpd.
fn vsftpd_suite(lib: Lib, setup: Setup, runs: &[(DataMode, TlsArg)], test: &str) {
    let Some(fx) = Fx::start(ServerKind::Vsftpd, lib, setup, "127.0.0.1:0", test) else {
        return;
    };
    fx.check_runs(lib, runs);
}

// === basic-ftp (Node) ===

/// basic-ftp, plain FTP: PASV with the 227 address as given, EPSV, and the
/// library's defaults (EPSV first).
#[test]
fn more_clients_basic_ftp_plain() {
    vsftpd_suite(
        Lib::BasicFtp,
        Setup::Plain,
        &[
            (DataMode::Pasv, "none"),
            (DataMode::Epsv, "none"),
            (DataMode::Default, "none"),
        ],
        "more_clients_basic_ftp_plain",
    );
}

/// basic-ftp with explicit FTPS (`secure: true`: AUTH TLS, PBSZ 0, PROT P),
/// TLS on both sides of ftpgate: PASV and EPSV over TLS 1.3, EPSV over
/// TLS 1.2.
#[test]
fn more_clients_basic_ftp_explicit_tls() {
    vsftpd_suite(
        Lib::BasicFtp,
        Setup::ExplicitTls,
        &[
            (DataMode::Pasv, "explicit:1.3"),
            (DataMode::Epsv, "explicit:1.3"),
            (DataMode::Epsv, "explicit:1.2"),
        ],
        "more_clients_basic_ftp_explicit_tls",
    );
}

/// basic-ftp with implicit FTPS (`secure: "implicit"`) on ftpgate's implicit
/// listener, in front of vsftpd with explicit TLS: PASV and EPSV.
#[test]
fn more_clients_basic_ftp_implicit_tls() {
    vsftpd_suite(
        Lib::BasicFtp,
        Setup::ImplicitTls,
        &[(DataMode::Pasv, "implicit"), (DataMode::Epsv, "implicit")],
        "more_clients_basic_ftp_implicit_tls",
    );
}

// === aioftp (Python) ===

/// aioftp, plain FTP: PASV with the 227 address trusted, EPSV, and the
/// library's defaults (EPSV first; a 227 address would be ignored). Its
/// listing tries MLSD first (vsftpd: `500`, one unused passive port on
/// ftpgate) and then LIST.
#[test]
fn more_clients_aioftp_plain() {
    vsftpd_suite(
        Lib::Aioftp,
        Setup::Plain,
        &[
            (DataMode::Pasv, "none"),
            (DataMode::Epsv, "none"),
            (DataMode::Default, "none"),
        ],
        "more_clients_aioftp_plain",
    );
}

/// aioftp with explicit FTPS (`upgrade_to_tls`: AUTH TLS, PBSZ 0, PROT P):
/// PASV and EPSV over TLS 1.3, PASV over TLS 1.2.
#[test]
fn more_clients_aioftp_explicit_tls() {
    vsftpd_suite(
        Lib::Aioftp,
        Setup::ExplicitTls,
        &[
            (DataMode::Pasv, "explicit:1.3"),
            (DataMode::Epsv, "explicit:1.3"),
            (DataMode::Pasv, "explicit:1.2"),
        ],
        "more_clients_aioftp_explicit_tls",
    );
}

/// aioftp with implicit FTPS (`ssl=` on connect) on ftpgate's implicit
/// listener, with PBSZ 0 / PROT P sent after login: PASV and EPSV.
#[test]
fn more_clients_aioftp_implicit_tls_with_prot() {
    vsftpd_suite(
        Lib::Aioftp,
        Setup::ImplicitTls,
        &[
            (DataMode::Pasv, "implicit-prot"),
            (DataMode::Epsv, "implicit-prot"),
        ],
        "more_clients_aioftp_implicit_tls_with_prot",
    );
}

/// Was an ftpgate bug (fixed; the test stays): aioftp's implicit FTPS as
/// the library ships it (`Client(ssl=context)`, no `PBSZ`/`PROT` sent)
/// could not transfer through ftpgate's implicit TLS listener.
///
/// aioftp, like the old implicit-FTPS convention (port 990: control and
/// data both in TLS), wraps every data connection in TLS without sending
/// `PROT P`. ftpgate started every session, also on its implicit listener,
/// at the RFC 4217 default `PROT C`, so it took the client's data leg for
/// clear text and never answered its ClientHello; the data task failed
/// after the 10 s handshake limit. An implicit listener refuses clear data
/// anyway (`521 Data protection required`), so sessions there now start
/// at `PROT P` (a client may still send `PROT C`).
#[test]
fn more_clients_implicit_listener_starts_protected() {
    vsftpd_suite(
        Lib::Aioftp,
        Setup::ImplicitTls,
        &[(DataMode::Epsv, "implicit")],
        "more_clients_implicit_listener_starts_protected",
    );
}

// === Apache Commons Net (Java) ===

/// Commons Net FTPClient, plain FTP: PASV with the 227 address as given,
/// EPSV (`setUseEPSVwithIPv4`), active PORT (ftpgate connects to the
/// client).
#[test]
fn more_clients_commons_net_plain() {
    vsftpd_suite(
        Lib::CommonsNet,
        Setup::Plain,
        &[
            (DataMode::Pasv, "none"),
            (DataMode::Epsv, "none"),
            (DataMode::Port, "none"),
        ],
        "more_clients_commons_net_plain",
    );
}

/// Commons Net as shipped (PASV, its NAT workaround, and remote
/// verification: the data peer must be the control peer), in the usual
/// deployment where the advertised address is the one clients dial:
/// ftpgate listens on 127.0.0.5 and advertises it.
#[test]
fn more_clients_commons_net_defaults() {
    let test = "more_clients_commons_net_defaults";
    let listen = format!("{PUBLIC}:0");
    let Some(fx) = Fx::start(
        ServerKind::Vsftpd,
        Lib::CommonsNet,
        Setup::Plain,
        &listen,
        test,
    ) else {
        return;
    };
    assert_eq!(fx.entry.ip().to_string(), PUBLIC);
    fx.check_runs(Lib::CommonsNet, &[(DataMode::Default, "none")]);
}

/// Commons Net over IPv6 to ftpgate (IPv4 vsftpd behind it): EPRT (Commons
/// Net's active mode on IPv6) and EPSV.
#[test]
fn more_clients_commons_net_ipv6_eprt() {
    let test = "more_clients_commons_net_ipv6_eprt";
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is not available on this machine");
    }
    let Some(fx) = Fx::start(
        ServerKind::Vsftpd,
        Lib::CommonsNet,
        Setup::Plain,
        "[::1]:0",
        test,
    ) else {
        return;
    };
    assert!(fx.target().is_v6());
    fx.check_runs(
        Lib::CommonsNet,
        &[(DataMode::Eprt, "none"), (DataMode::Epsv, "none")],
    );
}

/// Commons Net FTPSClient with explicit FTPS (AUTH TLS, PBSZ 0, PROT P):
/// PASV, EPSV and active PORT (ftpgate connects and is the TLS server on the
/// data connection), over TLS 1.3, and PASV over TLS 1.2.
#[test]
fn more_clients_commons_net_explicit_tls() {
    vsftpd_suite(
        Lib::CommonsNet,
        Setup::ExplicitTls,
        &[
            (DataMode::Pasv, "explicit:1.3"),
            (DataMode::Epsv, "explicit:1.3"),
            (DataMode::Port, "explicit:1.3"),
            (DataMode::Pasv, "explicit:1.2"),
        ],
        "more_clients_commons_net_explicit_tls",
    );
}

/// Commons Net FTPSClient(true), implicit FTPS on ftpgate's implicit
/// listener: PASV and PORT.
#[test]
fn more_clients_commons_net_implicit_tls() {
    vsftpd_suite(
        Lib::CommonsNet,
        Setup::ImplicitTls,
        &[(DataMode::Pasv, "implicit"), (DataMode::Port, "implicit")],
        "more_clients_commons_net_implicit_tls",
    );
}

// === TLS session resumption required ===

/// With `tls_require_data_resumption = true` ftpgate refuses a client data
/// connection that does not resume the control connection's TLS session
/// (like vsftpd's `require_ssl_reuse`). basic-ftp (TLS 1.3 and 1.2) and
/// aioftp resume it and work; Commons Net does not resume, and its first
/// data connection is refused (`425`), as vsftpd's `522` refuses it
/// directly ([`more_clients_direct_vsftpd_explicit_tls`]).
#[test]
fn more_clients_data_resumption_required() {
    let test = "more_clients_data_resumption_required";
    let resume = "tls_require_data_resumption = true\n";
    let runs: [(Lib, &[(DataMode, TlsArg)]); 2] = [
        (
            Lib::BasicFtp,
            &[
                (DataMode::Epsv, "explicit:1.3"),
                (DataMode::Pasv, "explicit:1.2"),
            ],
        ),
        (Lib::Aioftp, &[(DataMode::Epsv, "explicit")]),
    ];
    for (lib, runs) in runs {
        let Some(fx) = Fx::start_with(
            ServerKind::Vsftpd,
            lib,
            Setup::ExplicitTls,
            "127.0.0.1:0",
            resume,
            test,
        ) else {
            return;
        };
        fx.check_runs(lib, runs);
    }
    let Some(fx) = Fx::start_with(
        ServerKind::Vsftpd,
        Lib::CommonsNet,
        Setup::ExplicitTls,
        "127.0.0.1:0",
        resume,
        test,
    ) else {
        return;
    };
    let t = fx.target();
    let run = Run {
        lib: Lib::CommonsNet,
        target: &t,
        mode: DataMode::Epsv,
        tls: "explicit",
        ca: Some(&fx.pki.ca_pem),
    };
    let ran = run.exec();
    // ftpgate refuses the data handshake; the transfer's final reply is
    // then its 425 (vsftpd had sent the listing and its 226 in time) or
    // vsftpd's own 426 (its write met the connection ftpgate reset first):
    // a race between two correct answers, never a 2xx.
    assert!(
        !ran.out.ok
            && ran
                .out
                .stderr
                .lines()
                .any(|l| l.starts_with("425 ") || l.starts_with("426 ")),
        "Commons Net does not resume the TLS session: ftpgate must refuse its data connection (425, or the server's 426): {:?}",
        ran.out
    );
}

// === other servers ===

/// Every library once in plain FTP (basic-ftp and aioftp PASV, Commons Net
/// PORT) and once with explicit FTPS (EPSV) through ftpgate in front of
/// `kind`, each with a server of its own.
fn other_server(kind: ServerKind, test: &str) {
    for lib in [Lib::BasicFtp, Lib::Aioftp, Lib::CommonsNet] {
        let mode = if lib == Lib::CommonsNet {
            DataMode::Port
        } else {
            DataMode::Pasv
        };
        let Some(fx) = Fx::start(kind, lib, Setup::Plain, "127.0.0.1:0", test) else {
            return;
        };
        let mut outs = fx.check_runs(lib, &[(mode, "none")]);
        drop(fx);
        let Some(fx) = Fx::start(kind, lib, Setup::ExplicitTls, "127.0.0.1:0", test) else {
            return;
        };
        outs.extend(fx.check_runs(lib, &[(DataMode::Epsv, "explicit")]));
        // basic-ftp and aioftp list with MLSD where the server has it
        // (Commons Net's listFiles is LIST).
        if kind.supports_mlsd() && lib != Lib::CommonsNet {
            for out in &outs {
                assert!(
                    sent_commands(&out.stderr).any(|c| c.starts_with("MLSD")),
                    "{} on {}: listed without MLSD: {out:?}",
                    lib.name(),
                    kind.name()
                );
            }
        }
    }
}

/// ProFTPD (basic-ftp and aioftp list with MLSD).
#[test]
fn more_clients_proftpd() {
    other_server(ServerKind::Proftpd, "more_clients_proftpd");
}

/// pure-ftpd (basic-ftp and aioftp list with MLSD).
#[test]
fn more_clients_pureftpd() {
    other_server(ServerKind::PureFtpd, "more_clients_pureftpd");
}

// === without ftpgate: rig checks and baselines ===

/// Each library straight to vsftpd (no ftpgate), plain, in each mode the
/// tests use through ftpgate: the drivers work, and what fails through
/// ftpgate is ftpgate's.
#[test]
fn more_clients_direct_vsftpd_plain() {
    let test = "more_clients_direct_vsftpd_plain";
    if !peers::available_or_skip(ServerKind::Vsftpd, test) {
        return;
    }
    let big = random_bytes(BIG_LEN, 99);
    let srv = FtpServer::start_with(ServerKind::Vsftpd, fill(&big));
    let t = Target::for_server(&srv);
    let runs: &[(Lib, &[DataMode])] = &[
        (Lib::BasicFtp, &[DataMode::Pasv, DataMode::Epsv]),
        (Lib::Aioftp, &[DataMode::Pasv, DataMode::Epsv]),
        (
            Lib::CommonsNet,
            &[DataMode::Pasv, DataMode::Epsv, DataMode::Port],
        ),
    ];
    for &(lib, modes) in runs {
        if !lib.available_or_skip(test) {
            continue;
        }
        for &mode in modes {
            let run = Run {
                lib,
                target: &t,
                mode,
                tls: "none",
                ca: None,
            };
            let ran = run.exec();
            check(&run, &ran, &srv, &big, None);
        }
    }
}

/// Each library with explicit FTPS straight to vsftpd (TLS required,
/// `require_ssl_reuse=YES`, its default), PASV. Only basic-ftp works:
///
/// - aioftp completes the TLS handshake of a data connection before it
///   sends the transfer command, and vsftpd starts its side of that
///   handshake only after the command: both wait until aioftp's timeout
///   (3 s here). Through ftpgate it works
///   ([`more_clients_aioftp_explicit_tls`]): ftpgate answers the client's
///   data handshake at once and the backend's after the command.
/// - Commons Net does not resume the control connection's TLS session on
///   data connections, so vsftpd refuses them with `522 SSL connection
///   failed: session reuse required`. Through ftpgate, which resumes toward
///   vsftpd itself, it works ([`more_clients_commons_net_explicit_tls`]).
#[test]
fn more_clients_direct_vsftpd_explicit_tls() {
    let test = "more_clients_direct_vsftpd_explicit_tls";
    if !peers::available_tls_or_skip(ServerKind::Vsftpd, test) {
        return;
    }
    let pki = TestPki::new();
    let big = random_bytes(BIG_LEN, 98);
    let srv = FtpServer::start_tls(
        ServerKind::Vsftpd,
        TlsSetup::explicit(&pki).required(),
        fill(&big),
    );
    let t = Target::for_server(&srv);
    for lib in [Lib::BasicFtp, Lib::Aioftp, Lib::CommonsNet] {
        if !lib.available_or_skip(test) {
            continue;
        }
        let run = Run {
            lib,
            target: &t,
            mode: DataMode::Pasv,
            tls: "explicit",
            ca: Some(&pki.ca_pem),
        };
        let ran = run.exec_with_env(&[("FTPGATE_AIOFTP_TIMEOUT", "3")]);
        let err = &ran.out.stderr;
        match lib {
            Lib::BasicFtp => {
                check(&run, &ran, &srv, &big, None);
                assert_tls_used(&run, &ran);
            }
            Lib::Aioftp => assert!(
                !ran.out.ok
                    && err.contains("227 Entering Passive Mode")
                    && err.contains("in _open_connection")
                    && err.contains("TimeoutError"),
                "aioftp straight to vsftpd: expected a data TLS handshake timeout after the 227: {:?}",
                ran.out
            ),
            Lib::CommonsNet => assert!(
                !ran.out.ok && err.contains("522 SSL connection failed: session reuse required"),
                "Commons Net straight to vsftpd: expected vsftpd's 522 for a data connection that does not resume the TLS session: {:?}",
                ran.out
            ),
        }
    }
}
