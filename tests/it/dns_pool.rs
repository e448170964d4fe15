//! Backends named by host name: one member per address, re-resolved every
//! `backend_resolve_interval`. The name lives in `/etc/hosts` (root, as in
//! CI): a line added or removed during the test changes what it resolves
//! to, and sessions follow. Two real vsftpd share one port on 127.0.0.1
//! and 127.0.0.2; a file names each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::gateway::{self, Gateway};
use crate::peers::{self, FtpServer, ServerKind};

const HOSTS: &str = "/etc/hosts";

/// Lines this test added to /etc/hosts; removed again on drop.
struct HostsLines(Vec<String>);

impl HostsLines {
    fn add(&mut self, line: &str) {
        let mut text = std::fs::read_to_string(HOSTS).unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        std::fs::write(HOSTS, text).unwrap();
        self.0.push(line.to_owned());
    }

    fn remove(&mut self, line: &str) {
        let text = std::fs::read_to_string(HOSTS).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| *l != line)
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(HOSTS, kept).unwrap();
        self.0.retain(|l| l != line);
    }
}

impl Drop for HostsLines {
    fn drop(&mut self) {
        for l in self.0.clone() {
            self.remove(&l);
        }
    }
}

fn can_edit_hosts(test: &str) -> bool {
    let ok = std::fs::OpenOptions::new().append(true).open(HOSTS).is_ok();
    if !ok {
        assert!(
            !peers::peers_required(),
            "{test}: needs to write {HOSTS} (run as root)"
        );
        eprintln!("SKIP {test}: cannot write {HOSTS}");
    }
    ok
}

fn who(gw: &Gateway) -> String {
    let mut f = suppaftp::FtpStream::connect(gw.addr).unwrap();
    f.login("anonymous", "x@y").unwrap();
    let w = String::from_utf8(f.retr_as_buffer("who.txt").unwrap().into_inner()).unwrap();
    f.quit().unwrap();
    w
}

/// Opens sessions until `done` holds for the last `n` answers, within 10 s.
fn until(gw: &Gateway, n: usize, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<String> = Vec::new();
    loop {
        seen.push(who(gw));
        if seen.len() >= n && done(&seen[seen.len() - n..]) {
            return seen[seen.len() - n..].to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: sessions reached {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dns_pool_members_follow_the_name() {
    let test = "dns_pool_members_follow_the_name";
    if !peers::available_or_skip(ServerKind::Vsftpd, test) || !can_edit_hosts(test) {
        return;
    }
    let port = peers::free_port();
    let fill = |name: &'static str| {
        move |root: &std::path::Path| {
            peers::put_file(root, "who.txt", name.as_bytes());
        }
    };
    let _a = FtpServer::start_vsftpd_at(SocketAddr::from(([127, 0, 0, 1], port)), fill("A"));
    let _b = FtpServer::start_vsftpd_at(SocketAddr::from(([127, 0, 0, 2], port)), fill("B"));
    let name = format!("ftpgate-dns-{}.test", std::process::id());
    let (line_a, line_b) = (format!("127.0.0.1 {name}"), format!("127.0.0.2 {name}"));
    let mut hosts = HostsLines(Vec::new());
    hosts.add(&line_a);
    let gw = gateway::start(
        &[],
        &format!(
            "backends = [\"{name}:{port}\"]\nbackend_resolve_interval = \"100ms\"\n\
             allow_foreign_data_address = true\n"
        ),
    );
    // One address: every session on A.
    for _ in 0..3 {
        assert_eq!(who(&gw), "A");
    }
    // A second address: a second member, sessions alternate.
    hosts.add(&line_b);
    let last = until(&gw, 4, "after adding 127.0.0.2", |w| {
        w.iter().filter(|x| *x == "A").count() == 2 && w.iter().filter(|x| *x == "B").count() == 2
    });
    assert_ne!(last[0], last[1], "round robin over both members: {last:?}");
    // The first address gone: only B.
    hosts.remove(&line_a);
    until(&gw, 4, "after removing 127.0.0.1", |w| {
        w.iter().all(|x| x == "B")
    });
    // Check output shows the name once, whatever it resolves to.
    let text = gw.config.to_toml();
    assert!(
        text.contains(&format!("backends = [\"{name}:{port}\"]")),
        "{text}"
    );
}
