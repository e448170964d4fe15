//! ftpgate between real clients and real servers (vsftpd, proftpd, pure-ftpd),
//! each server with its default passive settings (no passive address set).
//!
//! The gateway advertises 127.0.0.5 while the servers only listen on
//! 127.0.0.1 and name 127.0.0.1 in their 227 replies: a client that reaches
//! its data through 127.0.0.5 proves the rewrite. curl runs with
//! --no-ftp-skip-pasv-ip, lftp with ftp:fix-pasv-address off, and ftplib
//! trusts the 227 address, so each uses the address ftpgate wrote.

use std::io::{Cursor, Read};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clients::{self, Mode, Target};
use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

/// The address ftpgate advertises in these tests; nothing else listens on it.
const PUBLIC: &str = "127.0.0.5";
const BIG: usize = 3 * 1024 * 1024 + 17;

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    peers::random_bytes(len, seed)
}

/// A server with `big.bin`, `small.txt` and a directory `dir/` of 5 files.
fn server(kind: ServerKind) -> FtpServer {
    FtpServer::start_with(kind, |root| {
        peers::put_file(root, "big.bin", &bytes(BIG, 7));
        peers::put_file(root, "small.txt", b"hello through ftpgate\n");
        for i in 0..5 {
            peers::put_file(
                root,
                &format!("dir/f{i}.txt"),
                format!("file {i}\n").as_bytes(),
            );
        }
    })
}

fn gateway_for(srv: &FtpServer, extra: &str) -> Gateway {
    gateway::start(
        &[srv.addr],
        &format!("public_address = \"{PUBLIC}\"\npassive_bind_address = \"0.0.0.0\"\n{extra}"),
    )
}

fn target(srv: &FtpServer, gw: &Gateway) -> Target {
    Target::for_server(srv).via(gw.addr)
}

/// The port in a 227 or 229 line of a client's protocol log, checked to be
/// in the gateway's range and (for 227) to name the public address.
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
                "{what}: 227 must name the public address: {line}"
            );
            assert!(
                gw.owns_passive_port(nums[4] * 256 + nums[5]),
                "{what}: port outside range: {line}"
            );
            seen += 1;
        }
        if let Some(i) = line.find("(|||") {
            let port: u16 = line[i + 4..].split('|').next().unwrap().parse().unwrap();
            assert!(
                gw.owns_passive_port(port),
                "{what}: 229 port outside range: {line}"
            );
            seen += 1;
        }
    }
    assert!(
        seen > 0,
        "{what}: no 227/229 seen in the client's log:\n{log}"
    );
}

/// One test per server kind for a suite function, named as given.
macro_rules! on_every_server {
    ($suite:ident: $vsftpd:ident, $proftpd:ident, $pureftpd:ident) => {
        #[test]
        fn $vsftpd() {
            $suite(ServerKind::Vsftpd);
        }

        #[test]
        fn $proftpd() {
            $suite(ServerKind::Proftpd);
        }

        #[test]
        fn $pureftpd() {
            $suite(ServerKind::PureFtpd);
        }
    };
}

// === curl: every server, every mode ===

fn curl_matrix(kind: ServerKind) {
    if !peers::available_or_skip(kind, "curl_matrix") {
        return;
    }
    let srv = server(kind);
    let gw = gateway_for(&srv, "");
    let t = target(&srv, &gw);
    let want = sha(&bytes(BIG, 7));
    let upload = tempfile::NamedTempFile::new().unwrap();
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        let what = format!("{} curl {:?}", kind.name(), mode);
        let out = clients::curl_get(&t, "big.bin", mode);
        assert!(out.ok, "{what} RETR: {out:?}");
        assert_eq!(sha(&out.stdout), want, "{what}: downloaded bytes differ");
        if mode.is_passive() {
            assert_rewritten(&out.stderr, &gw, &what);
        }

        let list = clients::curl_list(&t, "dir", mode);
        assert!(list.ok, "{what} LIST: {list:?}");
        assert_eq!(
            list.stdout_str()
                .lines()
                .filter(|l| l.contains("f") && l.contains(".txt"))
                .count(),
            5,
            "{what} LIST: {list:?}"
        );
        let nlst = clients::curl_nlst(&t, "dir", mode);
        assert!(nlst.ok, "{what} NLST: {nlst:?}");

        let data = bytes(2 * 1024 * 1024 + i, 100 + i as u64);
        std::fs::write(upload.path(), &data).unwrap();
        let name = format!("{}/up-{}.bin", srv.upload_dir, mode.command());
        let put = clients::curl_put(&t, upload.path(), &name, mode);
        assert!(put.ok, "{what} STOR: {put:?}");
        let stored = std::fs::read(srv.root.join(&name)).unwrap();
        assert_eq!(
            sha(&stored),
            sha(&data),
            "{what}: uploaded bytes differ (EOF must reach the server)"
        );

        // APPE adds to what is there.
        let app = clients::curl_append(&t, upload.path(), &name, mode);
        assert!(app.ok, "{what} APPE: {app:?}");
        assert_eq!(
            std::fs::read(srv.root.join(&name)).unwrap().len(),
            data.len() * 2,
            "{what}: APPE"
        );
    }
    if kind.supports_mlsd() {
        let m = clients::curl_mlsd(&t, "dir", Mode::Epsv);
        assert!(m.ok && m.stdout_str().contains("f3.txt"), "MLSD: {m:?}");
    }
}

on_every_server!(curl_matrix: real_vsftpd_curl_all_modes, real_proftpd_curl_all_modes, real_pureftpd_curl_all_modes);

// === lftp ===

fn lftp_suite(kind: ServerKind) {
    if !peers::available_or_skip(kind, "lftp_suite") {
        return;
    }
    let srv = server(kind);
    let gw = gateway_for(&srv, "");
    let t = target(&srv, &gw);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    std::fs::write(&src, bytes(1_500_000, 3)).unwrap();
    for mode in [Mode::Pasv, Mode::Epsv, Mode::Port] {
        let what = format!("{} lftp {:?}", kind.name(), mode);
        let got = dir.path().join(format!("got-{:?}.bin", mode));
        let cmds = format!(
            "cls -1 dir\nget big.bin -o {}\nput {} -o {}/lftp-{:?}.bin\n",
            got.display(),
            src.display(),
            srv.upload_dir,
            mode
        );
        let out = clients::lftp(&t, &cmds, mode);
        assert!(out.ok, "{what}: {out:?}");
        assert!(
            out.stdout_str().contains("f4.txt"),
            "{what}: listing: {out:?}"
        );
        assert_eq!(
            sha(&std::fs::read(&got).unwrap()),
            sha(&bytes(BIG, 7)),
            "{what}: RETR"
        );
        let up = std::fs::read(
            srv.root
                .join(format!("{}/lftp-{:?}.bin", srv.upload_dir, mode)),
        )
        .unwrap();
        assert_eq!(sha(&up), sha(&bytes(1_500_000, 3)), "{what}: STOR");
        if mode.is_passive() {
            assert_rewritten(&out.stderr, &gw, &what);
        }
    }
}

on_every_server!(lftp_suite: real_vsftpd_lftp, real_proftpd_lftp, real_pureftpd_lftp);

// === Python ftplib: strict about the 227 address; REST, ABOR, STOU, FEAT ===

const FTPLIB_BODY: &str = r#"
import time
want = sha256(open(sys.argv[6], 'rb').read()) if len(sys.argv) > 6 else None
ftp.voidcmd('TYPE I')
data = get_bytes('big.bin')
print('sha', sha256(data))
# REST resume: the tail from an offset.
tail = io.BytesIO()
ftp.retrbinary('RETR big.bin', tail.write, rest=3 * 1024 * 1024)
print('tail', len(tail.getvalue()), tail.getvalue() == data[3 * 1024 * 1024:])
# Upload, then upload again with STOU in the upload directory.
ftp.storbinary('STOR upload/ftplib.bin', io.BytesIO(data[:1000000]))
ftp.cwd('upload')
resp = ftp.storbinary('STOU', io.BytesIO(b'unique'))
print('stou', resp[:3])
ftp.cwd('/')
# ABOR in the middle of a download: the client stops reading, sends ABOR
# (urgent data), and must get the 426/226 (or 225/226) pair, then carry on.
conn = ftp.transfercmd('RETR big.bin')
conn.recv(8192)
resp = ftp.abort()
print('abort', resp[:3])
conn.close()
# Some servers send a second reply for the aborted transfer: send NOOP and
# read replies until its 200, so every reply is accounted for.
ftp.putcmd('NOOP')
for _ in range(4):
    r = ftp.getmultiline()
    if r.startswith('200'):
        print('noop', r[:3])
        break
    print('after-abort', r[:3])
feat = ftp.sendcmd('FEAT')
print('feat-epsv', 'EPSV' in feat, 'EPRT' in feat)
print('size-ok', len(get_bytes('small.txt')))
ftp.quit()
"#;

fn ftplib_suite(kind: ServerKind) {
    if !peers::available_or_skip(kind, "ftplib_suite") {
        return;
    }
    let srv = server(kind);
    let gw = gateway_for(&srv, "");
    let t = target(&srv, &gw);
    for mode in Mode::ALL {
        let what = format!("{} ftplib {:?}", kind.name(), mode);
        let out = clients::ftplib_mode(&t, FTPLIB_BODY, mode);
        let s = out.stdout_str();
        assert!(out.ok, "{what}: {out:?}");
        assert!(
            s.contains(&format!("sha {}", sha(&bytes(BIG, 7)))),
            "{what}: RETR bytes: {s}"
        );
        assert!(
            s.contains(&format!("tail {} True", BIG - 3 * 1024 * 1024)),
            "{what}: REST: {s}"
        );
        assert!(
            s.contains("stou 226") || s.contains("stou 250"),
            "{what}: STOU: {s}"
        );
        let abort_code = s
            .lines()
            .find_map(|l| l.strip_prefix("abort "))
            .unwrap_or("none");
        assert!(
            ["426", "225", "226"].contains(&abort_code),
            "{what}: ABOR reply {abort_code}: {s}"
        );
        assert!(
            s.contains("noop 200"),
            "{what}: session usable after ABOR: {s}"
        );
        assert!(
            s.contains("feat-epsv True True"),
            "{what}: FEAT advertises EPSV and EPRT: {s}"
        );
        assert!(s.contains("size-ok 22"), "{what}: {s}");
        let up = std::fs::read(srv.root.join("upload/ftplib.bin")).unwrap();
        assert_eq!(up, bytes(BIG, 7)[..1_000_000].to_vec(), "{what}: STOR");
    }
}

on_every_server!(ftplib_suite: real_vsftpd_ftplib, real_proftpd_ftplib, real_pureftpd_ftplib);

// === the classic command-line client (tnftp) ===

fn classic_suite(kind: ServerKind) {
    if !peers::available_or_skip(kind, "classic_suite") {
        return;
    }
    let srv = server(kind);
    // tnftp refuses a 227 naming another address than the one it connected
    // to ("Passive mode address mismatch"), as it should: advertise the
    // address the client connected to, as a real deployment does.
    let gw = gateway::start(&[srv.addr], "public_address = \"auto\"");
    let t = target(&srv, &gw);
    let dir = tempfile::tempdir().unwrap();
    for mode in Mode::ALL {
        let what = format!("{} tnftp {:?}", kind.name(), mode);
        let got = dir.path().join(format!("got-{mode:?}.bin"));
        let out = clients::classic_ftp_mode(
            &t,
            &format!("get big.bin {}\nls dir\n", got.display()),
            mode,
        );
        let s = out.stdout_str();
        assert!(s.matches("226").count() >= 2, "{what}: {out:?}");
        assert_eq!(
            sha(&std::fs::read(&got).unwrap_or_default()),
            sha(&bytes(BIG, 7)),
            "{what}: {out:?}"
        );
        assert!(s.contains("f2.txt"), "{what}: {out:?}");
    }
}

on_every_server!(classic_suite: real_vsftpd_classic_ftp, real_proftpd_classic_ftp, real_pureftpd_classic_ftp);

// === suppaftp, the Rust client ===

fn suppaftp_suite(kind: ServerKind) {
    if !peers::available_or_skip(kind, "suppaftp_suite") {
        return;
    }
    let srv = server(kind);
    let gw = gateway_for(&srv, "");
    for mode in [
        suppaftp::Mode::Passive,
        suppaftp::Mode::ExtendedPassive,
        suppaftp::Mode::Active,
    ] {
        let what = format!("{} suppaftp {:?}", kind.name(), mode);
        let mut ftp = suppaftp::FtpStream::connect(gw.addr)
            .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        if mode == suppaftp::Mode::Active {
            ftp = ftp.active_mode(Duration::from_secs(10));
        } else {
            ftp.set_mode(mode);
        }
        ftp.login(srv.user.as_str(), srv.pass.as_str())
            .unwrap_or_else(|e| panic!("{what}: login: {e}"));
        ftp.transfer_type(suppaftp::types::FileType::Binary)
            .unwrap();
        let got = ftp
            .retr_as_buffer("big.bin")
            .unwrap_or_else(|e| panic!("{what}: RETR: {e}"))
            .into_inner();
        assert_eq!(sha(&got), sha(&bytes(BIG, 7)), "{what}");
        let data = bytes(1_234_567, 9);
        ftp.put_file(
            format!("{}/suppa.bin", srv.upload_dir),
            &mut Cursor::new(data.clone()),
        )
        .unwrap_or_else(|e| panic!("{what}: STOR: {e}"));
        assert_eq!(
            std::fs::read(srv.root.join("upload/suppa.bin")).unwrap(),
            data,
            "{what}: STOR bytes"
        );
        let names = ftp
            .nlst(Some("dir"))
            .unwrap_or_else(|e| panic!("{what}: NLST: {e}"));
        // pure-ftpd lists "." and ".." too.
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".txt")).count(),
            5,
            "{what}: {names:?}"
        );
        ftp.quit().unwrap();
    }
}

on_every_server!(suppaftp_suite: real_vsftpd_suppaftp, real_proftpd_suppaftp, real_pureftpd_suppaftp);

// === a 1000-file directory ===

#[test]
fn real_vsftpd_list_1000_files() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "list_1000") {
        return;
    }
    let srv = FtpServer::start_with(ServerKind::Vsftpd, |root| {
        for i in 0..1000 {
            peers::put_file(root, &format!("many/file-{i:04}.dat"), b"x");
        }
    });
    let gw = gateway_for(&srv, "");
    let t = target(&srv, &gw);
    for mode in [Mode::Pasv, Mode::Epsv, Mode::Port] {
        let out = clients::curl_list(&t, "many", mode);
        assert!(out.ok, "{mode:?}: {out:?}");
        assert_eq!(
            out.stdout_str()
                .lines()
                .filter(|l| l.contains("file-"))
                .count(),
            1000,
            "{mode:?} LIST"
        );
        let out = clients::curl_nlst(&t, "many", mode);
        let mut names: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
        names.sort();
        assert_eq!(names.len(), 1000, "{mode:?} NLST");
        assert_eq!(names[999], "file-0999.dat");
    }
}

// === backend data connections in active mode ===

fn backend_active(kind: ServerKind) {
    if !peers::available_or_skip(kind, "backend_active") {
        return;
    }
    let srv = server(kind);
    let gw = gateway_for(&srv, "backend_data_mode = \"active\"");
    let t = target(&srv, &gw);
    let upload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(upload.path(), bytes(700_000, 5)).unwrap();
    for mode in Mode::ALL {
        let what = format!("{} backend-active, client {:?}", kind.name(), mode);
        let out = clients::curl_get(&t, "big.bin", mode);
        assert!(out.ok, "{what}: {out:?}");
        assert_eq!(sha(&out.stdout), sha(&bytes(BIG, 7)), "{what}");
        let put = clients::curl_put(&t, upload.path(), "upload/active.bin", mode);
        assert!(put.ok, "{what}: {put:?}");
        assert_eq!(
            std::fs::read(srv.root.join("upload/active.bin")).unwrap(),
            bytes(700_000, 5),
            "{what}"
        );
    }
}

on_every_server!(backend_active: real_vsftpd_backend_active_mode, real_proftpd_backend_active_mode, real_pureftpd_backend_active_mode);

// === two backends, 50 interleaved sessions, every data connection pinned ===

#[test]
fn real_two_backends_50_interleaved_sessions_pinned() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "pinning") {
        return;
    }
    let a = FtpServer::start_with(ServerKind::Vsftpd, |r| {
        peers::put_file(r, "who.txt", b"backend-A");
        peers::put_file(r, "blob.bin", &bytes(300_000, 1));
    });
    let b = FtpServer::start_with(ServerKind::Vsftpd, |r| {
        peers::put_file(r, "who.txt", b"backend-B");
        peers::put_file(r, "blob.bin", &bytes(300_000, 2));
    });
    // A 20-port range for 50 sessions: ports are shared across sessions.
    let gw = gateway::start(&[a.addr, b.addr], "");
    let (user, pass) = (a.user.clone(), a.pass.clone());
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|th| {
            let (user, pass, barrier, addr) =
                (user.clone(), pass.clone(), barrier.clone(), gw.addr);
            std::thread::spawn(move || {
                // Five sessions per thread, all open at once, their transfers interleaved.
                let mut sessions: Vec<(suppaftp::FtpStream, Option<String>)> = (0..5)
                    .map(|i| {
                        let mut f = suppaftp::FtpStream::connect(addr).unwrap();
                        f.login(user.as_str(), pass.as_str()).unwrap();
                        f.transfer_type(suppaftp::types::FileType::Binary).unwrap();
                        if (th + i) % 2 == 1 {
                            f.set_mode(suppaftp::Mode::ExtendedPassive);
                        }
                        (f, None)
                    })
                    .collect();
                barrier.wait();
                let mut seen = Vec::new();
                for round in 0..3 {
                    for (f, who) in sessions.iter_mut() {
                        let w =
                            String::from_utf8(f.retr_as_buffer("who.txt").unwrap().into_inner())
                                .unwrap();
                        let blob = f.retr_as_buffer("blob.bin").unwrap().into_inner();
                        let expect_blob = if w == "backend-A" {
                            bytes(300_000, 1)
                        } else {
                            bytes(300_000, 2)
                        };
                        assert!(
                            blob == expect_blob,
                            "round {round}: blob from the other backend"
                        );
                        match who {
                            None => *who = Some(w.clone()),
                            Some(first) => {
                                assert_eq!(*first, w, "a data connection reached another backend")
                            }
                        }
                        seen.push(w);
                    }
                }
                for (mut f, _) in sessions {
                    f.quit().unwrap();
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().expect("session thread failed"));
    }
    assert_eq!(all.len(), 150);
    let a_count = all.iter().filter(|w| *w == "backend-A").count();
    assert!(
        a_count > 0 && a_count < 150,
        "round-robin must use both backends: {a_count} of 150 on A"
    );
}

// === IPv6 client in front of an IPv4 backend ===

#[test]
fn real_ipv6_client_ipv4_backend() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "ipv6") {
        return;
    }
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is not available on this machine");
    }
    let srv = server(ServerKind::Vsftpd);
    // auto: the address the client connected to (::1); PASV then has no IPv4 to offer.
    let gw = gateway::start_on("[::1]:0", &[srv.addr], "public_address = \"auto\"");
    let t = Target::for_server(&srv).via(gw.addr);
    assert!(t.is_v6());
    for mode in [Mode::Epsv, Mode::Eprt] {
        let out = clients::curl_get(&t, "big.bin", mode);
        assert!(out.ok, "{mode:?}: {out:?}");
        assert_eq!(sha(&out.stdout), sha(&bytes(BIG, 7)), "{mode:?}");
    }
    let out = clients::ftplib(&t, "print(ftp.sendcmd('EPSV')); print(len(get_bytes('big.bin')))\ntry:\n    ftp.sendcmd('PASV')\nexcept Exception as e:\n    print('pasv', e)\n");
    let s = out.stdout_str();
    assert!(out.ok, "{out:?}");
    assert!(s.contains(&BIG.to_string()), "{s}");
    assert!(
        s.contains("pasv 425"),
        "PASV over IPv6 with auto has no IPv4 to name: {s}"
    );
}

// === public address by client network ===

#[test]
fn real_public_address_by_client_network() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "public_address_for") {
        return;
    }
    let srv = server(ServerKind::Vsftpd);
    // Clients from 127.0.0.0/8 (the "VPN") get 127.0.0.9; everyone else the public address.
    let gw = gateway::start(
        &[srv.addr],
        "public_address = \"203.0.113.10\"\npassive_bind_address = \"0.0.0.0\"\n[public_address_for]\n\"127.0.0.0/8\" = \"127.0.0.9\"\n",
    );
    let t = Target::for_server(&srv).via(gw.addr);
    let out = clients::ftplib_mode(
        &t,
        "print(ftp.sendcmd('PASV'))\nprint(len(get_bytes('big.bin')))\n",
        Mode::Pasv,
    );
    let s = out.stdout_str();
    assert!(out.ok, "{out:?}");
    assert!(s.contains("(127,0,0,9,"), "{s}");
    assert!(s.contains(&BIG.to_string()), "{s}");
}

/// ftplib listens on 127.0.0.1, sends `PORT <named>,<its port>` by hand and
/// RETRs small.txt; prints the PORT reply, the data connection's source
/// port, the data and the final reply.
fn active_retr_by_hand(t: &Target, named: &str) -> String {
    let body = format!(
        r#"
ftp.voidcmd('TYPE I')
sock = socket.create_server(('127.0.0.1', 0))
port = sock.getsockname()[1]
print(ftp.sendcmd('PORT {named},%d,%d' % (port >> 8, port & 255)))
ftp.sendcmd('RETR small.txt')
conn, peer = sock.accept()
conn.settimeout(10)
print('peer-port', peer[1])
data = b''
while True:
    d = conn.recv(65536)
    if not d: break
    data += d
conn.close()
print('data', data)
print(ftp.voidresp())
"#
    );
    let out = clients::ftplib(t, &body);
    assert!(out.ok, "{out:?}");
    out.stdout_str()
}

// === active mode behind NAT: a private PORT address is replaced ===

#[test]
fn real_active_mode_nat_fix() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "nat_fix") {
        return;
    }
    let srv = server(ServerKind::Vsftpd);
    let gw = gateway_for(&srv, "");
    let t = target(&srv, &gw);
    // The client listens on 127.0.0.1 but names a private address (as a
    // client behind NAT would); ftpgate must connect to the control
    // connection's address instead. 10.1.2.3 is never contacted.
    let s = active_retr_by_hand(&t, "10,1,2,3");
    assert!(s.contains("200 PORT"), "{s}");
    assert!(s.contains("hello through ftpgate"), "{s}");
    assert!(s.contains("226"), "{s}");
}

// === a long transfer keeps the session alive past idle_timeout ===

#[test]
fn real_idle_timeout_does_not_cut_a_running_transfer() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "idle_transfer") {
        return;
    }
    let srv = server(ServerKind::Vsftpd);
    let gw = gateway_for(&srv, "idle_timeout = \"1s\"");
    let mut ftp = suppaftp::FtpStream::connect(gw.addr).unwrap();
    ftp.login(srv.user.as_str(), srv.pass.as_str()).unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .unwrap();
    let mut stream = ftp.retr_as_stream("big.bin").unwrap();
    // Read slowly for longer than the idle timeout.
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let n = stream.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(100));
    }
    stream.read_to_end(&mut got).unwrap();
    ftp.finalize_retr_stream(stream).unwrap();
    assert_eq!(sha(&got), sha(&bytes(BIG, 7)));
    // Now idle: the gateway closes the session with 421 after a second.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ftp.noop().is_err(), "idle session must be closed");
}

// === IPv4 client in front of an IPv6 backend ===

#[test]
fn real_ipv4_client_ipv6_backend() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "ipv6 backend") {
        return;
    }
    let srv = FtpServer::start_vsftpd_v6(|root| {
        peers::put_file(root, "big.bin", &bytes(BIG, 7));
    });
    assert!(srv.addr.is_ipv6());
    // Toward an IPv6 backend ftpgate uses EPSV (PASV cannot name IPv6) and EPRT.
    for backend_mode in ["passive", "active"] {
        let gw = gateway_for(&srv, &format!("backend_data_mode = \"{backend_mode}\""));
        let t = target(&srv, &gw);
        assert!(!t.is_v6());
        let upload = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(upload.path(), bytes(400_000, 4)).unwrap();
        for mode in Mode::ALL {
            let what = format!("backend {backend_mode}, client {mode:?}");
            let out = clients::curl_get(&t, "big.bin", mode);
            assert!(out.ok, "{what}: {out:?}");
            assert_eq!(sha(&out.stdout), sha(&bytes(BIG, 7)), "{what}");
            let put = clients::curl_put(&t, upload.path(), "upload/v6.bin", mode);
            assert!(put.ok, "{what}: {put:?}");
            assert_eq!(
                std::fs::read(srv.root.join("upload/v6.bin")).unwrap(),
                bytes(400_000, 4),
                "{what}"
            );
        }
    }
}

// === active mode from source port 20 ===

#[test]
fn real_active_mode_from_source_port_20() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "port 20") {
        return;
    }
    let srv = server(ServerKind::Vsftpd);
    let gw = gateway_for(&srv, "active_source_port_20 = true");
    let t = target(&srv, &gw);
    let s = active_retr_by_hand(&t, "127,0,0,1");
    assert!(
        s.contains("peer-port 20\n"),
        "ftpgate must connect from port 20: {s}"
    );
    assert!(
        s.contains("hello through ftpgate") && s.contains("226"),
        "{s}"
    );
}

// === TCP keepalive on both control legs ===

/// Established sockets matching an `ss` filter, with their timers (`-o`).
/// `ss` shows one timer per socket: while bytes are unacknowledged it is the
/// retransmit timer, so poll briefly until the keepalive timer shows.
fn ss(filter: &str) -> String {
    let mut text = String::new();
    for _ in 0..20 {
        let out = std::process::Command::new("ss")
            .args(["-tnoH", "state", "established", filter])
            .output()
            .expect("run ss (iproute2)");
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("keepalive") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    text
}

#[test]
fn real_keepalive_on_both_control_legs() {
    if !peers::available_or_skip(ServerKind::Vsftpd, "keepalive") {
        return;
    }
    let srv = server(ServerKind::Vsftpd);
    let gw = gateway_for(&srv, "tcp_keepalive = \"45s\"");
    let mut ftp = suppaftp::FtpStream::connect(gw.addr).unwrap();
    ftp.login(srv.user.as_str(), srv.pass.as_str()).unwrap();
    // The gateway's end of the client leg: local port = the gateway's port.
    let client_leg = ss(&format!("( sport = :{} )", gw.port()));
    assert!(
        client_leg.contains("keepalive"),
        "client leg has no keepalive timer: {client_leg}"
    );
    // The gateway's end of the backend leg: the only connection to the server's port
    // from a port that is not the server's own.
    let backend_leg: String = ss(&format!("( dport = :{} )", srv.port()))
        .lines()
        .filter(|l| l.contains("keepalive"))
        .collect();
    assert!(
        !backend_leg.is_empty(),
        "backend leg has no keepalive timer: {}",
        ss(&format!("( dport = :{} )", srv.port()))
    );
    ftp.quit().unwrap();
}
