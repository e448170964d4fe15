//! ftpgate on real NAT topologies (issue 5): network namespaces joined by
//! veth pairs with iptables NAT between them (`netns.rs`), real vsftpd at
//! its passive defaults, real curl, lftp and Python ftplib, and the
//! ftpgate binary, each inside its own namespace.
//!
//! Every case has a control run without ftpgate that fails the way
//! operators see it, which proves the NAT in the path is real; content is
//! compared by SHA-256. No namespace attaches the kernel's FTP helper
//! (`Netns::assert_no_ftp_helper`); `nat_cloud_direct_to_vsftpd_through_dnat_fails`
//! shows what the helper would hide.
//!
//! - Cloud elastic IP, reverse mode ([`cloud`]): field problems 1 and 3 of
//!   the brief, and a foreign host on a passive port.
//! - Client network behind NAT ([`lan`]): ftpgate as the transparent
//!   gateway (iptables REDIRECT, original destination) for active and
//!   passive clients, and as an explicit `USER name@host` proxy.

use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::clients::{Output, Target};
use crate::netns::{self, link, sa, sha_hex, Netns, NsFtpgate, NsVsftpd};
use crate::peers::{self, put_file, VSFTPD_PASS, VSFTPD_USER};

/// Size of the file every test downloads (odd on purpose).
const FILE_LEN: usize = 1024 * 1024 + 13;
/// Size of the file every test uploads.
const UPLOAD_LEN: usize = 300_000 + 7;

fn big_file() -> Vec<u8> {
    peers::random_bytes(FILE_LEN, 0x4e41_5401)
}

fn fill(body: Vec<u8>) -> impl FnOnce(&std::path::Path) {
    move |root| {
        put_file(root, "big.bin", &body);
        put_file(root, "dir/alpha.txt", b"alpha\n");
        put_file(root, "dir/beta.txt", b"beta\n");
    }
}

/// A local file to upload, with its bytes; keep the dir while in use.
fn upload_source(seed: u64) -> (tempfile::TempDir, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = peers::random_bytes(UPLOAD_LEN, seed);
    let path = dir.path().join("up.bin");
    fs::write(&path, &body).expect("write upload source");
    let path = path.display().to_string();
    (dir, path, body)
}

#[track_caller]
fn assert_uploaded(srv: &NsVsftpd, name: &str, want: &[u8], what: &str) {
    let got = fs::read(srv.upload_path().join(name))
        .unwrap_or_else(|e| panic!("{what}: upload/{name} not on the server: {e}"));
    assert_eq!(
        sha_hex(&got),
        sha_hex(want),
        "{what}: uploaded bytes differ ({} of {})",
        got.len(),
        want.len()
    );
}

#[track_caller]
fn assert_downloaded(out: &Output, want: &[u8], what: &str) {
    assert!(out.ok, "{what}: {out:?}");
    assert!(
        sha_hex(&out.stdout) == sha_hex(want),
        "{what}: SHA-256 differs ({} bytes of {}): {out:?}",
        out.stdout.len(),
        want.len()
    );
}

fn anonymous(host: &str, port: u16) -> Target {
    Target::new(host, port, VSFTPD_USER, VSFTPD_PASS)
}

fn url(host: &str, port: u16, path: &str) -> String {
    format!("ftp://{host}:{port}/{path}")
}

/// curl inside `ns` with vsftpd's anonymous login (`-u`: the password has
/// an `@`, so it cannot go into the URL).
fn curl(ns: &Netns, args: &[&str]) -> Output {
    let login = format!("{VSFTPD_USER}:{VSFTPD_PASS}");
    let mut all = vec!["-u", login.as_str()];
    all.extend_from_slice(args);
    ns.curl(&all)
}

// ====================================================================
// Cloud elastic IP, reverse mode
// ====================================================================

/// The cloud: an edge router with 1:1 NAT between the internet and a
/// private network, as an AWS/Azure elastic or public IP.
///
/// ```text
///  inet  198.51.100.10/25  ─ wan0 ┐
///  inet2 198.51.100.130/25 ─ wan1 ┤ edge ├ priv0 ─ host 10.0.0.10 (ftpgate;  public 203.0.113.10)
///  vpn   10.8.0.2/24       ─ vpn0 ┘      └ priv1 ─ srv  10.0.1.20 (vsftpd;   public 203.0.113.20)
/// ```
///
/// The internet does not route private addresses: what arrives on `wan+`
/// is forwarded only if it was DNATed (or belongs to a connection opened
/// from inside), everything else is dropped, so a client sent to a private
/// address hangs, as in the field. The VPN is routed to the private
/// network without NAT. vsftpd's own public address exists only for the
/// control case.
struct Cloud {
    inet: Netns,
    inet2: Netns,
    vpn: Netns,
    edge: Netns,
    host: Netns,
    srv: Netns,
}

/// The edge's rules (these go into the README).
const CLOUD_EDGE_RULES: [&str; 6] = [
    "-t nat -A PREROUTING -i wan+ -d 203.0.113.10 -j DNAT --to-destination 10.0.0.10",
    "-t nat -A POSTROUTING -o wan+ -s 10.0.0.10 -j SNAT --to-source 203.0.113.10",
    "-t nat -A PREROUTING -i wan+ -d 203.0.113.20 -j DNAT --to-destination 10.0.1.20",
    "-t nat -A POSTROUTING -o wan+ -s 10.0.1.20 -j SNAT --to-source 203.0.113.20",
    "-A FORWARD -i wan+ -m conntrack --ctstate ESTABLISHED,RELATED,DNAT -j ACCEPT",
    "-A FORWARD -i wan+ -j DROP",
];

fn cloud() -> Cloud {
    let edge = Netns::router("edge");
    let inet = Netns::new("inet");
    let inet2 = Netns::new("inet2");
    let vpn = Netns::new("vpn");
    let host = Netns::new("host");
    let srv = Netns::new("srv");
    link(
        &edge,
        "wan0",
        "198.51.100.1/25",
        &inet,
        "eth0",
        "198.51.100.10/25",
    );
    link(
        &edge,
        "wan1",
        "198.51.100.129/25",
        &inet2,
        "eth0",
        "198.51.100.130/25",
    );
    link(&edge, "vpn0", "10.8.0.1/24", &vpn, "eth0", "10.8.0.2/24");
    link(&edge, "priv0", "10.0.0.1/24", &host, "eth0", "10.0.0.10/24");
    link(&edge, "priv1", "10.0.1.1/24", &srv, "eth0", "10.0.1.20/24");
    inet.route("default", "198.51.100.1");
    inet2.route("default", "198.51.100.129");
    vpn.route("default", "10.8.0.1");
    host.route("default", "10.0.0.1");
    srv.route("default", "10.0.1.1");
    for rule in CLOUD_EDGE_RULES {
        edge.iptables(rule);
    }
    Cloud {
        inet,
        inet2,
        vpn,
        edge,
        host,
        srv,
    }
}

/// ftpgate on the private host: internet clients get the elastic IP, VPN
/// clients the address they connected to (its private address).
const CLOUD_FTPGATE: &str = r#"
listen = ["10.0.0.10:21"]
backends = ["10.0.1.20:21"]
public_address = "203.0.113.10"
passive_ports = "50000-50019"
admin_listen = "127.0.0.1:9121"

[public_address_for]
"10.8.0.0/24" = "auto"
"#;

fn start_cloud_servers(net: &Cloud, body: &[u8]) -> (NsVsftpd, NsFtpgate) {
    let vsftpd = NsVsftpd::start(&net.srv, sa("10.0.1.20", 21), fill(body.to_vec()));
    let gate = NsFtpgate::start(&net.host, CLOUD_FTPGATE, &[sa("10.0.0.10", 21)]);
    (vsftpd, gate)
}

/// LIST with ftplib's timeout cut to 4 s, reporting instead of raising.
const STRICT_LIST: &str = r#"
ftp.timeout = 4
ftp.set_debuglevel(1)
login()
t0 = time.time()
try:
    print('LIST-OK', listing())
except Exception as e:
    print('LIST-FAILED', type(e).__name__, e, 'after %.1fs' % (time.time() - t0))
"#;

/// Control case: vsftpd at its defaults behind the 1:1 NAT, no ftpgate.
/// Login works, but a client that uses the 227 address is sent to the
/// private address and LIST hangs (here: fails at its 4 s timeout). curl's
/// default (it ignores the 227 address) and lftp's (it replaces a private
/// 227 address) happen to work because this NAT forwards every port. And
/// the kernel's FTP helper, attached explicitly, would fix it: this is what
/// the tests make sure is not happening.
#[test]
fn nat_cloud_direct_to_vsftpd_through_dnat_fails() {
    if !netns::available_or_skip("nat_cloud_direct_to_vsftpd_through_dnat_fails") {
        return;
    }
    let net = cloud();
    let body = big_file();
    let vsftpd = NsVsftpd::start(&net.srv, sa("10.0.1.20", 21), fill(body.clone()));
    let t = anonymous("203.0.113.20", 21);

    let t0 = Instant::now();
    let out = net.inet.ftplib(&t, STRICT_LIST, &[]);
    let s = out.stdout_str();
    assert!(out.ok, "{out:?}");
    assert!(
        s.contains("227 Entering Passive Mode (10,0,1,20,"),
        "vsftpd should name its private address: {out:?}"
    );
    assert!(
        s.contains("LIST-FAILED TimeoutError"),
        "LIST should hang on the private address: {out:?}\n{}",
        vsftpd.log()
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "{out:?}");

    // curl honouring the 227 address: the same hang, cut by its timeout.
    let out = curl(
        &net.inet,
        &[
            "--ftp-pasv",
            "--disable-epsv",
            "--no-ftp-skip-pasv-ip",
            "--connect-timeout",
            "4",
            &url("203.0.113.20", 21, "dir/"),
        ],
    );
    assert!(!out.ok && out.status == Some(28), "{out:?}");
    assert!(out.stderr.contains("Trying 10.0.1.20:"), "{out:?}");

    // curl's default (--ftp-skip-pasv-ip since 7.74) connects to the
    // control address instead, which this all-ports 1:1 NAT forwards.
    let out = curl(
        &net.inet,
        &[
            "--ftp-pasv",
            "--disable-epsv",
            &url("203.0.113.20", 21, "big.bin"),
        ],
    );
    assert_downloaded(&out, &body, "curl --ftp-skip-pasv-ip direct");
    assert!(out.stderr.contains("Skip 10.0.1.20"), "{out:?}");

    // lftp at its defaults repairs it too (ftp:fix-pasv-address: a
    // private 227 address from a public control peer is replaced with it).
    let out = net.inet.lftp(&t, "", "cls -1 dir");
    assert!(out.ok && out.stdout_str().contains("alpha.txt"), "{out:?}");
    assert!(
        out.stderr
            .contains("Connecting data socket to (203.0.113.20)"),
        "{out:?}"
    );

    // No helper so far; attach one and the kernel rewrites the 227.
    net.edge.assert_no_ftp_helper();
    net.edge
        .iptables("-t raw -A PREROUTING -i wan+ -p tcp --dport 21 -j CT --helper ftp");
    let out = net.inet.ftplib(&t, STRICT_LIST, &[]);
    let s = out.stdout_str();
    assert!(
        s.contains("227 Entering Passive Mode (203,0,113,20,") && s.contains("LIST-OK"),
        "with nf_conntrack_ftp attached the 227 is rewritten: {out:?}"
    );
}

/// ftplib: LIST, RETR (SHA-256), STOR of `ARGS[0]` as `ARGS[1]`, with the
/// conversation (`*resp* '227 ...'`) in stdout.
const FTPLIB_TRANSFERS: &str = r#"
ftp.set_debuglevel(1)
login()
print('LIST', listing('dir'))
print('SHA', sha256(get('big.bin')))
put('upload/' + ARGS[1], open(ARGS[0], 'rb').read())
ftp.quit()
"#;

/// Through ftpgate, with vsftpd still at its defaults: the internet client
/// reaching the elastic IP gets the elastic IP in its 227 and LIST, RETR
/// and STOR work (ftplib, curl in PASV, EPSV and active mode, lftp); a VPN
/// client of the same ftpgate process gets the private address.
#[test]
fn nat_cloud_elastic_ip_through_ftpgate_each_client_gets_a_reachable_address() {
    let test = "nat_cloud_elastic_ip_through_ftpgate_each_client_gets_a_reachable_address";
    if !netns::available_or_skip(test) {
        return;
    }
    let net = cloud();
    let body = big_file();
    let (vsftpd, gate) = start_cloud_servers(&net, &body);
    let (_up_dir, up_path, up) = upload_source(11);
    let diag = || format!("{}\n{}", gate.log(), vsftpd.log());

    // Internet client, through the elastic IP.
    let public = anonymous("203.0.113.10", 21);
    let out = net
        .inet
        .ftplib(&public, FTPLIB_TRANSFERS, &[&up_path, "inet-ftplib.bin"]);
    let s = out.stdout_str();
    assert!(out.ok, "internet ftplib: {out:?}\n{}", diag());
    assert!(
        s.contains("227 Entering Passive Mode (203,0,113,10,"),
        "internet client must get the elastic IP: {out:?}"
    );
    assert!(!s.contains("(10,0,"), "{out:?}");
    assert!(s.contains("alpha.txt") && s.contains("beta.txt"), "{out:?}");
    assert!(s.contains(&format!("SHA {}", sha_hex(&body))), "{out:?}");
    assert_uploaded(&vsftpd, "inet-ftplib.bin", &up, "internet ftplib STOR");

    // curl honouring the 227 address (PASV), then EPSV, then active (EPRT:
    // ftpgate connects out through the 1:1 SNAT).
    for (mode, args) in [
        (
            "PASV",
            &["--ftp-pasv", "--disable-epsv", "--no-ftp-skip-pasv-ip"][..],
        ),
        ("EPSV", &["--ftp-pasv"][..]),
        ("EPRT", &["-P", "-"][..]),
    ] {
        let mut a = args.to_vec();
        let u = url("203.0.113.10", 21, "big.bin");
        a.push(&u);
        let out = curl(&net.inet, &a);
        assert_downloaded(&out, &body, &format!("internet curl {mode}\n{}", diag()));
        assert!(out.stderr.contains(&format!("> {mode}")), "{out:?}");
        if mode == "PASV" {
            assert!(
                out.stderr
                    .contains("227 Entering Passive Mode (203,0,113,10,"),
                "{out:?}"
            );
        }
        let name = format!("inet-curl-{mode}.bin");
        let u = url("203.0.113.10", 21, &format!("upload/{name}"));
        let mut a = args.to_vec();
        a.extend(["-T", &up_path, &u]);
        let out = curl(&net.inet, &a);
        assert!(out.ok, "internet curl {mode} upload: {out:?}\n{}", diag());
        assert_uploaded(&vsftpd, &name, &up, &format!("internet curl {mode} STOR"));
    }

    // lftp using the 227 address as given (ftp:fix-pasv-address off).
    let got = _up_dir.path().join("lftp-got.bin");
    let out = net.inet.lftp(
        &public,
        "set ftp:passive-mode on\nset ftp:prefer-epsv no\nset ftp:fix-pasv-address off",
        &format!(
            "get big.bin -o {got}\nput {up_path} -o upload/inet-lftp.bin\ncls -1 dir",
            got = got.display()
        ),
    );
    assert!(out.ok, "internet lftp: {out:?}\n{}", diag());
    assert!(
        out.stderr
            .contains("227 Entering Passive Mode (203,0,113,10,"),
        "{out:?}"
    );
    assert_eq!(
        sha_hex(&fs::read(&got).unwrap()),
        sha_hex(&body),
        "lftp get"
    );
    assert_uploaded(&vsftpd, "inet-lftp.bin", &up, "internet lftp put");

    // VPN client of the same process, through the private address.
    let private = anonymous("10.0.0.10", 21);
    let out = net
        .vpn
        .ftplib(&private, FTPLIB_TRANSFERS, &[&up_path, "vpn-ftplib.bin"]);
    let s = out.stdout_str();
    assert!(out.ok, "VPN ftplib: {out:?}\n{}", diag());
    assert!(
        s.contains("227 Entering Passive Mode (10,0,0,10,"),
        "VPN client must get the private address: {out:?}"
    );
    assert!(s.contains(&format!("SHA {}", sha_hex(&body))), "{out:?}");
    assert_uploaded(&vsftpd, "vpn-ftplib.bin", &up, "VPN ftplib STOR");
    let out = curl(
        &net.vpn,
        &[
            "--ftp-pasv",
            "--disable-epsv",
            "--no-ftp-skip-pasv-ip",
            &url("10.0.0.10", 21, "big.bin"),
        ],
    );
    assert_downloaded(&out, &body, "VPN curl PASV");
    assert!(
        out.stderr.contains("227 Entering Passive Mode (10,0,0,10,"),
        "{out:?}"
    );

    net.edge.assert_no_ftp_helper();
}

/// The real client: PASV, print the port, wait for the go file `ARGS[0]`
/// (15 s at most), then connect and RETR.
const PASV_THEN_WAIT: &str = r#"
login()
ftp.voidcmd('TYPE I')
host, port = ftplib.parse227(ftp.sendcmd('PASV'))
print('PASV', host, port, flush=True)
deadline = time.time() + 15
while not os.path.exists(ARGS[0]):
    if time.time() > deadline:
        raise SystemExit('no go signal')
    time.sleep(0.02)
data = socket.create_connection((host, port), timeout=10)
print('RETR', ftp.sendcmd('RETR big.bin'), flush=True)
chunks = []
while True:
    c = data.recv(65536)
    if not c:
        break
    chunks.append(c)
data.close()
print('END', ftp.voidresp())
print('SHA', sha256(b''.join(chunks)))
ftp.quit()
"#;

/// The foreign host: connect to `argv[1]:argv[2]` and say what happened.
const FOREIGN_CONNECT: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
except ConnectionRefusedError:
    print('REFUSED'); sys.exit(0)
except OSError as e:
    print('CONNECT-FAILED', type(e).__name__, e); sys.exit(0)
print('CONNECTED', flush=True)
try:
    d = s.recv(65536)
    print('EOF' if not d else 'DATA %d' % len(d))
except ConnectionResetError:
    print('RESET')
except socket.timeout:
    print('RECV-TIMEOUT')
"#;

/// A second internet host connects to the public passive port prepared
/// for the first client before that client does: it is closed (or
/// refused) without a byte, and the first client's transfer then works.
#[test]
fn nat_cloud_foreign_host_on_passive_port_is_refused() {
    if !netns::available_or_skip("nat_cloud_foreign_host_on_passive_port_is_refused") {
        return;
    }
    let net = cloud();
    let body = big_file();
    let (vsftpd, gate) = start_cloud_servers(&net, &body);
    let go_dir = tempfile::tempdir().unwrap();
    let go = go_dir.path().join("go");
    let go_s = go.display().to_string();

    let public = anonymous("203.0.113.10", 21);
    let (_script_dir, cmd) = net.inet.ftplib_command(&public, PASV_THEN_WAIT, &[&go_s]);
    let mut client = net.inet.spawn("ftplib (real client)", cmd);
    let printed = client.wait_stdout("PASV ", Duration::from_secs(15));
    let line = printed
        .lines()
        .find(|l| l.starts_with("PASV "))
        .expect("PASV line");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[1], "203.0.113.10", "{printed}");
    let port = f[2];

    let foreign = net.inet2.python(FOREIGN_CONNECT, &["203.0.113.10", port]);
    let said = foreign.stdout_str();
    println!(
        "foreign host on port {port}: {}",
        said.trim().replace('\n', " ")
    );
    assert!(foreign.ok, "{foreign:?}");
    assert!(
        said.trim() == "REFUSED"
            || said.contains("CONNECTED\nEOF")
            || said.contains("CONNECTED\nRESET"),
        "the foreign host must get nothing: {foreign:?}\n{}",
        gate.log()
    );

    fs::write(&go, b"").unwrap();
    let status = client.wait_timeout(Duration::from_secs(20));
    let out = client.stdout();
    assert!(
        status.is_some_and(|s| s.success()),
        "real client after the intrusion: {status:?}\n{}\n{}\n{}",
        client.log(),
        gate.log(),
        vsftpd.log()
    );
    assert!(out.contains("END 226"), "{out}");
    assert!(out.contains(&format!("SHA {}", sha_hex(&body))), "{out}");

    // The intrusion reached ftpgate's port and was counted as such.
    if said.contains("CONNECTED") {
        let m = net.host.curl(&["http://127.0.0.1:9121/metrics"]);
        assert!(m.ok, "{m:?}");
        assert!(
            m.stdout_str()
                .contains("ftpgate_data_connections_refused_total{reason=\"foreign_address\"} 1"),
            "{}",
            m.stdout_str()
        );
    }
}

// ====================================================================
// Client network behind NAT: the transparent / explicit gateway
// ====================================================================

/// A client LAN behind a masquerading gateway, and a server on the internet.
///
/// ```text
///  client 192.168.50.10/24 ─ lan0 192.168.50.1 ┤ gw ├ wan0 198.51.100.1/24 ─ server 198.51.100.2, .3 (vsftpd :21)
/// ```
///
/// The server has no route back to 192.168.50.0/24 (the internet does not
/// route private addresses); the gateway masquerades what leaves on wan0.
struct Lan {
    client: Netns,
    gw: Netns,
    server: Netns,
}

fn lan() -> Lan {
    let gw = Netns::router("gw");
    let client = Netns::new("lanc");
    let server = Netns::new("srv");
    link(
        &gw,
        "lan0",
        "192.168.50.1/24",
        &client,
        "eth0",
        "192.168.50.10/24",
    );
    link(
        &gw,
        "wan0",
        "198.51.100.1/24",
        &server,
        "eth0",
        "198.51.100.2/24",
    );
    server.addr("eth0", "198.51.100.3/24");
    client.route("default", "192.168.50.1");
    gw.iptables("-t nat -A POSTROUTING -o wan0 -j MASQUERADE");
    Lan { client, gw, server }
}

/// Transparent interception on the gateway (these go into the README):
/// FTP control connections and ftpgate's passive range, from the LAN.
const GATEWAY_REDIRECT_RULES: [&str; 2] = [
    "-t nat -A PREROUTING -i lan0 -p tcp --dport 21 -j REDIRECT --to-ports 2121",
    "-t nat -A PREROUTING -i lan0 -p tcp --dport 50000:50019 -j REDIRECT",
];

/// The gateway configuration of issue 5.
const GATEWAY_FTPGATE: &str = r#"
gateway_listen = ["192.168.50.1:2121"]
gateway_allow = ["198.51.100.0/24"]
gateway_deny = []
gateway_resolve_timeout = "5s"
passive_ports = "50000-50019"
"#;

fn gateway_addr() -> SocketAddr {
    sa("192.168.50.1", 2121)
}

/// Control case: without ftpgate, passive mode works through the
/// MASQUERADE but active mode (EPRT, PORT) does not. The client names
/// 192.168.50.10: vsftpd at its defaults refuses it as not the control
/// connection's peer (`500 Illegal PORT command.`), and a vsftpd that
/// accepts any address (`port_promiscuous=YES`, on 198.51.100.3) cannot
/// connect to it (`425`): the server has no route to a private LAN.
#[test]
fn nat_lan_active_mode_through_masquerade_fails_without_ftpgate() {
    if !netns::available_or_skip("nat_lan_active_mode_through_masquerade_fails_without_ftpgate") {
        return;
    }
    let net = lan();
    let body = big_file();
    let vsftpd = NsVsftpd::start(&net.server, sa("198.51.100.2", 21), fill(body.clone()));
    let promiscuous = NsVsftpd::start_with(
        &net.server,
        sa("198.51.100.3", 21),
        "port_promiscuous=YES\n",
        fill(body.clone()),
    );
    let u = url("198.51.100.2", 21, "big.bin");

    let out = curl(&net.client, &["--ftp-pasv", &u]);
    assert_downloaded(
        &out,
        &body,
        &format!("passive through MASQUERADE\n{}", vsftpd.log()),
    );

    for (mode, args) in [
        ("EPRT", &["-P", "-"][..]),
        ("PORT", &["-P", "-", "--disable-eprt"][..]),
    ] {
        let mut a = args.to_vec();
        a.push(&u);
        let out = curl(&net.client, &a);
        assert!(!out.ok, "{mode} through MASQUERADE should fail: {out:?}");
        let named = match mode {
            "EPRT" => "> EPRT |1|192.168.50.10|",
            _ => "> PORT 192,168,50,10,",
        };
        assert!(out.stderr.contains(named), "{mode}: {out:?}");
        println!(
            "curl {mode} without ftpgate: {}",
            last_lines(&out.stderr, 6)
        );
    }

    let out = net.client.lftp(
        &anonymous("198.51.100.2", 21),
        "set ftp:passive-mode off\nset ftp:auto-passive-mode off",
        "get big.bin -o /dev/null",
    );
    assert!(!out.ok, "lftp PORT through MASQUERADE should fail: {out:?}");
    assert!(out.stderr.contains("---> PORT 192,168,50,10,"), "{out:?}");
    assert!(out.stderr.contains("500 Illegal PORT command."), "{out:?}");
    println!("lftp PORT without ftpgate: {}", last_lines(&out.stderr, 6));

    // A server that takes the private address still cannot reach it.
    for (mode, args) in [
        ("EPRT", &["-P", "-"][..]),
        ("PORT", &["-P", "-", "--disable-eprt"][..]),
    ] {
        let u = url("198.51.100.3", 21, "big.bin");
        let mut a = args.to_vec();
        a.push(&u);
        let out = curl(&net.client, &a);
        assert!(
            !out.ok,
            "{mode} to a promiscuous server should fail: {out:?}"
        );
        assert!(
            out.stderr.contains("< 425 Failed to establish connection."),
            "{mode}: {out:?}\n{}",
            promiscuous.log()
        );
    }
    net.gw.assert_no_ftp_helper();
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn start_gateway(net: &Lan, config: &str, redirect: bool) -> NsFtpgate {
    let gate = NsFtpgate::start(&net.gw, config, &[gateway_addr()]);
    if redirect {
        for rule in GATEWAY_REDIRECT_RULES {
            net.gw.iptables(rule);
        }
    }
    gate
}

/// Through ftpgate as the transparent gateway, curl in every mode:
/// passive (EPSV; PASV, whose address curl skips for the control address,
/// which the REDIRECT of the passive range brings to ftpgate) and active
/// (PORT, EPRT: ftpgate connects to the client's private address).
/// Download and upload, SHA-256.
#[test]
fn nat_lan_transparent_gateway_curl_all_modes() {
    if !netns::available_or_skip("nat_lan_transparent_gateway_curl_all_modes") {
        return;
    }
    let net = lan();
    let body = big_file();
    let vsftpd = NsVsftpd::start(&net.server, sa("0.0.0.0", 21), fill(body.clone()));
    let gate = start_gateway(&net, GATEWAY_FTPGATE, true);
    let (_dir, up_path, up) = upload_source(21);
    let diag = || format!("{}\n{}\n{}", net.gw.rules(), gate.log(), vsftpd.log());

    for (mode, args) in [
        ("EPSV", &["--ftp-pasv"][..]),
        ("PASV", &["--ftp-pasv", "--disable-epsv"][..]),
        ("PORT", &["-P", "-", "--disable-eprt"][..]),
        ("EPRT", &["-P", "-"][..]),
    ] {
        let u = url("198.51.100.2", 21, "big.bin");
        let mut a = args.to_vec();
        a.push(&u);
        let out = curl(&net.client, &a);
        assert_downloaded(&out, &body, &format!("curl {mode} via gateway\n{}", diag()));
        assert!(out.stderr.contains(&format!("> {mode}")), "{out:?}");

        let name = format!("curl-{mode}.bin");
        let u = url("198.51.100.2", 21, &format!("upload/{name}"));
        let mut a = args.to_vec();
        a.extend(["-T", &up_path, &u]);
        let out = curl(&net.client, &a);
        assert!(
            out.ok,
            "curl {mode} upload via gateway: {out:?}\n{}",
            diag()
        );
        assert_uploaded(
            &vsftpd,
            &name,
            &up,
            &format!("curl {mode} STOR via gateway"),
        );
    }
    let out = curl(
        &net.client,
        &["--ftp-pasv", &url("198.51.100.2", 21, "dir/")],
    );
    assert!(out.ok && out.stdout_str().contains("alpha.txt"), "{out:?}");
    net.gw.assert_no_ftp_helper();
}

/// Toward the server in active mode (`backend_data_mode = "active"`): the
/// server connects back to the gateway's external address, on a port from
/// `backend_active_ports` (counted by an INPUT rule on the gateway), while
/// the client keeps its own mode (passive, then active). vsftpd at its
/// defaults accepts PORT only for its control peer: ftpgate's WAN address.
#[test]
fn nat_lan_transparent_gateway_active_toward_the_server() {
    if !netns::available_or_skip("nat_lan_transparent_gateway_active_toward_the_server") {
        return;
    }
    let net = lan();
    let body = big_file();
    let vsftpd = NsVsftpd::start(&net.server, sa("0.0.0.0", 21), fill(body.clone()));
    let config = format!(
        "{GATEWAY_FTPGATE}backend_data_mode = \"active\"\nbackend_active_ports = \"40000-40009\"\n"
    );
    let gate = start_gateway(&net, &config, true);
    net.gw
        .iptables("-A INPUT -i wan0 -s 198.51.100.2 -p tcp --syn --dport 40000:40009");
    for (mode, args) in [
        ("EPSV", &["--ftp-pasv"][..]),
        ("PORT", &["-P", "-", "--disable-eprt"][..]),
    ] {
        let u = url("198.51.100.2", 21, "big.bin");
        let mut a = args.to_vec();
        a.push(&u);
        let out = curl(&net.client, &a);
        assert_downloaded(
            &out,
            &body,
            &format!(
                "curl {mode}, gateway active toward the server\n{}\n{}",
                gate.log(),
                vsftpd.log()
            ),
        );
    }
    let syns = net.gw.packets("filter", "INPUT", "--dport 40000:40009");
    assert_eq!(
        syns, 2,
        "the server's data connections did not use backend_active_ports"
    );
}

/// The README's nftables rules (`docs/examples/gateway.nft`) instead of
/// the iptables REDIRECTs: curl in passive and active mode through the
/// transparent gateway.
#[test]
fn nat_lan_transparent_gateway_with_the_readme_nftables_rules() {
    if !netns::available_or_skip("nat_lan_transparent_gateway_with_the_readme_nftables_rules") {
        return;
    }
    let net = lan();
    let body = big_file();
    let vsftpd = NsVsftpd::start(&net.server, sa("0.0.0.0", 21), fill(body.clone()));
    let gate = start_gateway(&net, GATEWAY_FTPGATE, false);
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/gateway.nft");
    net.gw.run(&["nft", "-f", rules]);
    for args in [&["--ftp-pasv", "--disable-epsv"][..], &["-P", "-"][..]] {
        let u = url("198.51.100.2", 21, "big.bin");
        let mut a = args.to_vec();
        a.push(&u);
        let out = curl(&net.client, &a);
        assert_downloaded(
            &out,
            &body,
            &format!(
                "curl {args:?} via nftables\n{}\n{}",
                gate.log(),
                vsftpd.log()
            ),
        );
    }
}

/// The same with lftp at its defaults for the PASV address
/// (`ftp:fix-pasv-address` on): EPSV, PASV and active PORT (lftp sends
/// EPRT only for IPv6).
#[test]
fn nat_lan_transparent_gateway_lftp() {
    if !netns::available_or_skip("nat_lan_transparent_gateway_lftp") {
        return;
    }
    let net = lan();
    let body = big_file();
    let vsftpd = NsVsftpd::start(&net.server, sa("0.0.0.0", 21), fill(body.clone()));
    let gate = start_gateway(&net, GATEWAY_FTPGATE, true);
    let (dir, up_path, up) = upload_source(31);
    let t = anonymous("198.51.100.2", 21);

    for (mode, settings) in [
        ("EPSV", "set ftp:passive-mode on\nset ftp:prefer-epsv yes"),
        ("PASV", "set ftp:passive-mode on\nset ftp:prefer-epsv no"),
        (
            "PORT",
            "set ftp:passive-mode off\nset ftp:auto-passive-mode off",
        ),
    ] {
        let got = dir.path().join(format!("got-{mode}.bin"));
        let out = net.client.lftp(
            &t,
            settings,
            &format!(
                "get big.bin -o {}\nput {up_path} -o upload/lftp-{mode}.bin\ncls -1 dir",
                got.display()
            ),
        );
        assert!(
            out.ok,
            "lftp {mode} via gateway: {out:?}\n{}\n{}",
            gate.log(),
            vsftpd.log()
        );
        assert!(out.stderr.contains(&format!("---> {mode}")), "{out:?}");
        assert_eq!(
            sha_hex(&fs::read(&got).unwrap()),
            sha_hex(&body),
            "lftp {mode} get"
        );
        assert_uploaded(&vsftpd, &format!("lftp-{mode}.bin"), &up, "lftp put");
        assert!(out.stdout_str().contains("alpha.txt"), "{out:?}");
    }
    net.gw.assert_no_ftp_helper();
}

/// Explicit proxy: ftplib logs in to the gateway's own address as
/// `anonymous@198.51.100.2` (allowed) and lists and downloads; a denied
/// destination (`gateway_deny`) and one outside `gateway_allow` get a 5xx
/// to USER, no server greeting, and no packet toward them leaves the
/// gateway.
#[test]
fn nat_explicit_user_at_host_allowed_and_denied() {
    if !netns::available_or_skip("nat_explicit_user_at_host_allowed_and_denied") {
        return;
    }
    let net = lan();
    let body = big_file();
    let vsftpd = NsVsftpd::start(&net.server, sa("0.0.0.0", 21), fill(body.clone()));
    // Counters: anything toward the denied destinations.
    net.server
        .iptables("-A INPUT -p tcp -d 198.51.100.3 --dport 21");
    net.gw.iptables("-A OUTPUT -p tcp -d 198.51.100.3");
    net.gw.iptables("-A OUTPUT -p tcp -d 203.0.113.99");
    let config =
        GATEWAY_FTPGATE.replace("gateway_deny = []", "gateway_deny = [\"198.51.100.3/32\"]");
    let gate = start_gateway(&net, &config, false);

    let t = Target::new(
        "192.168.50.1",
        2121,
        &format!("{VSFTPD_USER}@198.51.100.2"),
        VSFTPD_PASS,
    );
    let out = net.client.ftplib(
        &t,
        "ftp.set_debuglevel(1)\nlogin()\nprint('LIST', listing('dir'))\n\
         print('SHA', sha256(get('big.bin')))\nftp.quit()",
        &[],
    );
    let s = out.stdout_str();
    assert!(
        out.ok,
        "allowed user@host: {out:?}\n{}\n{}",
        gate.log(),
        vsftpd.log()
    );
    assert!(s.contains("alpha.txt"), "{out:?}");
    assert!(s.contains(&format!("SHA {}", sha_hex(&body))), "{out:?}");

    let denied = r#"
for dest in ARGS:
    f = ftplib.FTP(timeout=10)
    w = f.connect(HOST, PORT)
    print('GREETING', dest, w.replace('\r', ' ').replace('\n', ' '))
    try:
        print('USER-REPLY', dest, f.sendcmd('USER anonymous@' + dest).replace('\n', ' '))
    except ftplib.all_errors as e:
        print('USER-REPLY', dest, str(e).replace('\n', ' '))
    try:
        f.close()
    except Exception:
        pass
"#;
    let out = net
        .client
        .ftplib(&t, denied, &["198.51.100.3", "203.0.113.99"]);
    let s = out.stdout_str();
    assert!(out.ok, "{out:?}\n{}", gate.log());
    for dest in ["198.51.100.3", "203.0.113.99"] {
        let greeting = line_after(&s, &format!("GREETING {dest} "));
        let reply = line_after(&s, &format!("USER-REPLY {dest} "));
        assert!(greeting.starts_with("220"), "{dest}: {s}");
        assert!(
            !greeting.contains("vsFTPd") && !reply.contains("vsFTPd"),
            "{dest}: the server must not be reached: {s}"
        );
        assert!(
            reply.starts_with('5'),
            "{dest}: USER must get a 5xx: {s}\n{}",
            gate.log()
        );
    }
    assert_eq!(
        net.server.packets("filter", "INPUT", "-d 198.51.100.3/32"),
        0,
        "a packet reached the denied server"
    );
    for dest in ["198.51.100.3/32", "203.0.113.99/32"] {
        assert_eq!(
            net.gw.packets("filter", "OUTPUT", &format!("-d {dest}")),
            0,
            "the gateway sent something toward {dest}"
        );
    }
}

/// The rest of the line of `s` that starts with `prefix` ("" if none).
fn line_after(s: &str, prefix: &str) -> String {
    s.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or("")
        .to_string()
}

/// Client-side injection into the transparent gateway (the NAT-slipstreaming
/// class, issue 15): whatever the client sends, ftpgate opens connections
/// only to the client and to the server it is really talking to. A raw
/// client behind the gateway sends `USER name@otherhost` (a transparent
/// session is never re-routed), PORT/EPRT naming a host on another LAN the
/// gateway reaches, the gateway's own loopback, its own address with a
/// port below 1024 (`504`), a third internet host and the server's port 21
/// (`504`); private addresses are taken for the client's own (NAT fix), so
/// the listings it asks for arrive at the client. Counters on the
/// gateway's OUTPUT chain show every SYN it sent went to the client or the
/// server. Already held (`check_active_target` in the core, the transparent
/// session's fixed destination); this proves it on the real topology.
#[test]
fn nat_lan_transparent_gateway_opens_data_only_to_its_client_and_server() {
    if !netns::available_or_skip(
        "nat_lan_transparent_gateway_opens_data_only_to_its_client_and_server",
    ) {
        return;
    }
    let net = lan();
    // Another network the gateway routes to, with a host on it.
    let other = Netns::new("lan2");
    link(
        &net.gw,
        "lan1",
        "192.168.51.1/24",
        &other,
        "eth0",
        "192.168.51.20/24",
    );
    let vsftpd = NsVsftpd::start(&net.server, sa("0.0.0.0", 21), fill(big_file()));
    let gate = start_gateway(&net, GATEWAY_FTPGATE, true);
    net.gw.iptables("-A OUTPUT -p tcp --syn -d 192.168.50.10");
    net.gw.iptables("-A OUTPUT -p tcp --syn -d 198.51.100.2");
    net.gw
        .iptables("-A OUTPUT -p tcp --syn -m comment --comment ftpgate-every-syn");
    let script = r#"
import socket, sys
s = socket.create_connection(('198.51.100.2', 21), timeout=10)
f = s.makefile('rb')
def reply():
    line = f.readline().decode('latin-1').rstrip('\r\n')
    if len(line) > 3 and line[3] == '-':
        while True:
            l = f.readline().decode('latin-1').rstrip('\r\n')
            if l.startswith(line[:3] + ' ') or not l:
                break
    return line
def cmd(c):
    s.sendall((c + '\r\n').encode('latin-1'))
    r = reply()
    print('CMD', c, '->', r, flush=True)
    return r
print('GREETING', reply())
cmd('USER ftp@198.51.100.3')
cmd('PASS x')
cmd('USER ' + sys.argv[1])
cmd('PASS ' + sys.argv[2])
cmd('TYPE I')
lst = socket.create_server(('0.0.0.0', 8080))
lst.settimeout(10)
def listing(port_cmd):
    r = cmd(port_cmd)
    if not r.startswith('200'):
        return
    r = cmd('LIST dir')
    if not r.startswith('150'):
        return
    d, peer = lst.accept()
    data = b''
    while True:
        b = d.recv(65536)
        if not b:
            break
        data += b
    print('DATA', port_cmd, 'from', peer[0], 'has-alpha', b'alpha.txt' in data, flush=True)
    print('END', port_cmd, reply(), flush=True)
for c in ['PORT 192,168,51,20,31,144', 'EPRT |1|192.168.51.20|8080|',
          'PORT 127,0,0,1,31,144', 'EPRT |2|::1|8080|',
          'PORT 192,168,50,10,0,80', 'EPRT |1|192.168.50.10|23|',
          'PORT 198,51,100,3,31,144', 'EPRT |1|198.51.100.3|8080|',
          'PORT 198,51,100,2,0,21', 'EPRT |1|198.51.100.2|2121|',
          'PORT 192,168,50,1,31,144']:
    listing(c)
# A pipelined injection: PORT toward the other LAN and LIST in one segment.
s.sendall(b'PORT 192,168,51,20,31,144\r\nLIST dir\r\n')
print('PIPELINED', reply(), reply(), flush=True)
d, peer = lst.accept()
while d.recv(65536):
    pass
print('PIPELINED-DATA from', peer[0], 'then', reply(), flush=True)
cmd('QUIT')
"#;
    let out = net.client.python(script, &[VSFTPD_USER, VSFTPD_PASS]);
    let s = out.stdout_str();
    let diag = || {
        format!(
            "{out:?}\n{}\n{}\n{}",
            net.gw.rules(),
            gate.log(),
            vsftpd.log()
        )
    };
    assert!(out.ok, "{}", diag());
    let reply_to = |c: &str| line_after(&s, &format!("CMD {c} -> "));
    assert!(
        !reply_to("USER ftp@198.51.100.3").is_empty() && !reply_to("PASS x").starts_with("230"),
        "USER name@host on a transparent session: {}",
        diag()
    );
    assert!(
        reply_to(&format!("PASS {VSFTPD_PASS}")).starts_with("230"),
        "{}",
        diag()
    );
    // Private addresses are the client behind NAT: its own address is used.
    for c in [
        "PORT 192,168,51,20,31,144",
        "EPRT |1|192.168.51.20|8080|",
        "PORT 127,0,0,1,31,144",
        "EPRT |2|::1|8080|",
        "PORT 192,168,50,1,31,144",
    ] {
        assert!(reply_to(c).starts_with("200"), "{c}: {}", diag());
        assert_eq!(
            line_after(&s, &format!("DATA {c} from ")),
            "192.168.50.1 has-alpha True",
            "{c}: the listing must reach the client itself: {}",
            diag()
        );
        assert!(
            line_after(&s, &format!("END {c} ")).starts_with("226"),
            "{c}: {}",
            diag()
        );
    }
    // Privileged ports, other public hosts, the server itself: 504.
    for c in [
        "PORT 192,168,50,10,0,80",
        "EPRT |1|192.168.50.10|23|",
        "PORT 198,51,100,3,31,144",
        "EPRT |1|198.51.100.3|8080|",
        "PORT 198,51,100,2,0,21",
        "EPRT |1|198.51.100.2|2121|",
    ] {
        assert!(reply_to(c).starts_with("504"), "{c}: {}", diag());
    }
    assert!(
        line_after(&s, "PIPELINED ").starts_with("200")
            && line_after(&s, "PIPELINED-DATA from ").starts_with("192.168.50.1 then 226"),
        "{}",
        diag()
    );
    let to_client = net.gw.packets("filter", "OUTPUT", "-d 192.168.50.10/32");
    let to_server = net.gw.packets("filter", "OUTPUT", "-d 198.51.100.2/32");
    let every = net.gw.packets("filter", "OUTPUT", "ftpgate-every-syn");
    println!("{s}SYNs from the gateway: {to_client} to the client, {to_server} to the server, {every} in all");
    assert_eq!(
        to_client,
        6,
        "one active data connection per accepted PORT/EPRT: {}",
        diag()
    );
    assert!(to_server >= 7, "control and data to the server: {}", diag());
    assert_eq!(
        every,
        to_client + to_server,
        "the gateway opened a connection to neither the client nor the server: {}",
        diag()
    );
    net.gw.assert_no_ftp_helper();
}
