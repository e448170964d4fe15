//! Table tests of the control-session core, and the seeded simulation.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::script::{self, Seeded};
use super::*;

mod hostile;
mod memory;
mod tls;
mod transfers;

fn policy() -> Policy {
    Policy {
        client: ClientAddr::new(SocketAddr::from(([192, 0, 2, 7], 40000))),
        active_mode: true,
        active_nat_fix: true,
        tls_offered: true,
        tls_required: false,
        implicit_tls: false,
        max_login_failures: 3,
        login_failures_before_delay: 1,
        login_failure_delay: Duration::from_secs(2),
        trust_backend_pasv_address: false,
        backend_data_networks: Networks::default(),
        backend_data: BackendData::Passive,
        backend_protect_data: true,
        max_line_length: 512,
        greeting_timeout: Duration::from_secs(10),
        login_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(300),
        backend_reply_timeout: Duration::from_secs(10),
        cert_user: false,
        client_cert: None,
    }
}

const BACKEND: &str = "10.0.0.5:21";
const T0: Duration = Duration::ZERO;

fn backend() -> BackendAddr {
    BackendAddr(BACKEND.parse().unwrap())
}

/// A step, in a short form for tables.
fn short(s: &Step) -> String {
    let text = |b: &Bytes| String::from_utf8_lossy(b).trim_end().to_owned();
    match s {
        Step::Reply(b) => format!("reply {}", text(b)),
        Step::Send(b) => format!("send {}", text(b)),
        Step::Route { user } => format!("route {user}"),
        Step::Disconnect => "disconnect".into(),
        Step::BackendTls => "backend tls".into(),
        Step::ClientTls => "client tls".into(),
        Step::ConnectBackendData { gen, addr } => format!("connect data {gen} {}", addr.0),
        Step::ListenBackendData { gen } => format!("listen data {gen}"),
        Step::LeasePassive { gen, pasv } => format!("lease {gen} pasv={pasv}"),
        Step::PrepareActive { gen } => format!("prepare active {gen}"),
        Step::ConnectClient { gen, target } => format!("connect client {gen} {target}"),
        Step::Cancel { gen } => format!("cancel {gen}"),
        Step::Note(n) => format!("note {n:?}"),
        Step::Close { end, farewell } => {
            let f: Vec<String> = farewell.iter().map(text).collect();
            format!("close {end} {f:?}")
        }
    }
}

/// Every step so far, notes left out.
fn steps(c: &mut Control) -> Vec<String> {
    let mut v = Vec::new();
    while let Some(s) = c.next_step() {
        if !matches!(s, Step::Note(_)) {
            v.push(short(&s));
        }
    }
    v
}

fn client(c: &mut Control, line: &str) {
    c.client_buffer().extend_from_slice(line.as_bytes());
    c.client_buffer().extend_from_slice(b"\r\n");
    c.on_client_data(T0);
}

fn backend_says(c: &mut Control, line: &str) {
    c.backend_buffer().extend_from_slice(line.as_bytes());
    c.backend_buffer().extend_from_slice(b"\r\n");
    c.on_backend_data(T0);
}

/// Connected, greeted, logged in; steps so far taken.
fn ready_with(p: Policy) -> Control {
    let mut c = Control::new(
        p,
        Start::Connected {
            backend: backend(),
            tls: BackendTls::Off,
        },
    );
    backend_says(&mut c, "220 hi");
    client(&mut c, "USER u");
    backend_says(&mut c, "230 in");
    steps(&mut c);
    c
}

fn ready() -> Control {
    ready_with(policy())
}

/// PASV through to a prepared passive data connection (generation 1).
fn prepare_passive(c: &mut Control) {
    client(c, "PASV");
    assert_eq!(steps(c), vec!["send PASV"]);
    backend_says(c, "227 Entering Passive Mode (10,0,0,5,4,1).");
    // The port is leased and the client answered before ftpgate connects
    // to the backend's data port; commands wait for that connect.
    assert_eq!(steps(c), vec!["lease 1 pasv=true"]);
    leased(c);
    assert_eq!(
        steps(c),
        vec![
            "reply 227 Entering Passive Mode (198,51,100,1,195,80).",
            "connect data 1 10.0.0.5:1025"
        ]
    );
    c.on_event(Event::BackendDataConnected { gen: 1 }, T0);
    assert!(steps(c).is_empty());
}

/// The driver leased passive port 50000 for generation 1, shown as
/// 198.51.100.1.
fn leased(c: &mut Control) {
    let public = PublicAddr::new("198.51.100.1".parse().unwrap());
    c.on_event(
        Event::Leased {
            gen: 1,
            public,
            port: 50000,
        },
        T0,
    );
}

fn data(c: &mut Control, gen: u64, news: DataNews) {
    c.on_event(Event::Data { gen, news }, T0);
}

#[test]
fn the_greeting_passes_then_commands_flow() {
    let mut c = Control::new(
        policy(),
        Start::Connected {
            backend: backend(),
            tls: BackendTls::Off,
        },
    );
    // A command before the greeting waits for it.
    client(&mut c, "NOOP");
    assert!(steps(&mut c).is_empty());
    backend_says(&mut c, "220 hi");
    assert_eq!(steps(&mut c), vec!["send NOOP", "reply 220 hi"]);
}

/// What each command does in a logged-in session with nothing in flight.
#[test]
fn each_command_in_a_ready_session() {
    let table: &[(&str, &[&str])] = &[
        ("NOOP", &["send NOOP"]),
        ("TYPE A", &["send TYPE A"]),
        (
            "PBSZ 0",
            &["reply 503 Send AUTH TLS first, then PBSZ 0 and PROT."],
        ),
        (
            "PROT P",
            &["reply 503 Send AUTH TLS first, then PBSZ 0 and PROT."],
        ),
        (
            "CCC",
            &["reply 533 CCC refused: the control connection stays protected."],
        ),
        // Outside TLS, REIN is the backend's (it logs out).
        ("REIN", &["send REIN"]),
        (
            "AUTH KERBEROS",
            &["reply 504 AUTH mechanism not supported; use AUTH TLS."],
        ),
        (
            "AUTH TLS",
            &["reply 234 AUTH TLS successful.", "client tls"],
        ),
        ("LPSV", &["reply 502 Command not implemented."]),
        (
            "EPSV 3",
            &["reply 522 Network protocol not supported, use (1,2)"],
        ),
        (
            "EPSV x",
            &["reply 501 Syntax error in parameters or arguments."],
        ),
        ("EPSV ALL", &["reply 200 EPSV ALL ok."]),
        (
            "PORT 203,0,113,9,4,1",
            &["reply 504 Refused: data address must be the client's own."],
        ),
        (
            "PORT 192,0,2,7,0,21",
            &["reply 504 Refused: data port below 1024."],
        ),
        (
            "PORT 1,2",
            &["reply 501 Syntax error in parameters or arguments."],
        ),
        ("PASV", &["send PASV"]),
        ("EPSV", &["send PASV"]),
        ("RETR f", &["send RETR f"]),
        ("ABOR", &["send ABOR"]),
        ("QUIT", &["send QUIT"]),
    ];
    for (line, want) in table {
        let mut c = ready();
        client(&mut c, line);
        assert_eq!(steps(&mut c), *want, "{line}");
    }
}

#[test]
fn active_mode_off_and_nat_fix() {
    let mut c = ready_with(Policy {
        active_mode: false,
        ..policy()
    });
    client(&mut c, "PORT 192,0,2,7,4,1");
    assert_eq!(
        steps(&mut c),
        vec!["reply 502 Active mode is disabled; use PASV or EPSV."]
    );
    // A private address other than the client's: the client's own is used.
    let mut c = ready();
    client(&mut c, "PORT 10,1,1,1,4,1");
    assert_eq!(steps(&mut c), vec!["send PASV"]);
}

/// ftpgate's PORT toward an active backend names its own listener only.
#[test]
fn active_backend_gets_ftpgates_own_address() {
    let mut c = ready_with(Policy {
        backend_data: BackendData::Active,
        ..policy()
    });
    client(&mut c, "PORT 192,0,2,7,4,1");
    assert_eq!(steps(&mut c), vec!["listen data 1"]);
    let addr: SocketAddr = "10.0.0.1:30001".parse().unwrap();
    c.on_event(Event::BackendDataListening { gen: 1, addr }, T0);
    assert_eq!(steps(&mut c), vec!["send PORT 10,0,0,1,117,49"]);
    backend_says(&mut c, "200 ok");
    assert_eq!(
        steps(&mut c),
        vec!["prepare active 1", "reply 200 PORT command successful."]
    );
    client(&mut c, "RETR f");
    assert_eq!(steps(&mut c), vec!["connect client 1 192.0.2.7:1025"]);
    c.on_event(Event::ClientDataConnected { gen: 1 }, T0);
    assert_eq!(steps(&mut c), vec!["send RETR f"]);
}

#[test]
fn passive_fallback_and_refusals() {
    let mut c = ready();
    client(&mut c, "PASV");
    steps(&mut c);
    backend_says(&mut c, "500 no");
    assert_eq!(
        steps(&mut c),
        vec!["send EPSV"],
        "the other passive command"
    );
    backend_says(&mut c, "500 no");
    assert_eq!(
        steps(&mut c),
        vec![
            "cancel 1",
            "reply 425 Can't open data connection: server refused."
        ]
    );
    client(&mut c, "NOOP");
    assert_eq!(steps(&mut c), vec!["send NOOP"], "the session goes on");
}

/// The rule for final replies, through the core: held until the data
/// settles, then a 2xx only for whole data.
#[test]
fn a_transfer_reply_waits_for_its_data() {
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    assert_eq!(steps(&mut c), vec!["send RETR f"]);
    backend_says(&mut c, "150 here");
    backend_says(&mut c, "226 done");
    assert_eq!(steps(&mut c), vec!["reply 150 here"], "226 held");
    client(&mut c, "NOOP");
    backend_says(&mut c, "200 noop");
    assert_eq!(
        steps(&mut c),
        vec!["send NOOP"],
        "later replies queue behind"
    );
    data(&mut c, 1, DataNews::Relaying);
    data(&mut c, 1, DataNews::DownDone { clean: true });
    assert_eq!(steps(&mut c), vec!["reply 226 done", "reply 200 noop"]);
    // A cut download: 426.
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    backend_says(&mut c, "150 here");
    backend_says(&mut c, "226 done");
    steps(&mut c);
    data(&mut c, 1, DataNews::DownDone { clean: false });
    assert_eq!(
        steps(&mut c),
        vec!["reply 426 Connection closed; transfer aborted."]
    );
}

/// ABOR at every point of a download.
#[test]
fn abor_at_every_point() {
    // (what happened before ABOR, steps expected after it)
    type Setup = fn(&mut Control);
    let table: &[(&str, Setup, &[&str])] = &[
        ("before 150", |_| {}, &["cancel 1", "send ABOR"]),
        (
            "after 150",
            |c| backend_says(c, "150 here"),
            &["cancel 1", "send ABOR"],
        ),
        (
            "226 held",
            |c| {
                backend_says(c, "150 here");
                backend_says(c, "226 done");
            },
            &[
                "cancel 1",
                "send ABOR",
                "reply 426 Connection closed; transfer aborted.",
            ],
        ),
        (
            "data done, 226 not yet",
            |c| {
                backend_says(c, "150 here");
                data(c, 1, DataNews::Relaying);
                data(c, 1, DataNews::DownDone { clean: true });
            },
            &["cancel 1", "send ABOR"],
        ),
        (
            "all done",
            |c| {
                backend_says(c, "150 here");
                data(c, 1, DataNews::Relaying);
                data(c, 1, DataNews::DownDone { clean: true });
                data(
                    c,
                    1,
                    DataNews::Finished {
                        error: None,
                        stalled: false,
                    },
                );
                backend_says(c, "226 done");
            },
            &["send ABOR"],
        ),
    ];
    for (what, setup, want) in table {
        let mut c = ready();
        prepare_passive(&mut c);
        client(&mut c, "RETR f");
        setup(&mut c);
        steps(&mut c);
        client(&mut c, "ABOR");
        assert_eq!(steps(&mut c), *want, "ABOR {what}");
    }
}

#[test]
fn backend_replies_nobody_asked_for() {
    let mut c = ready();
    backend_says(&mut c, "200 stray");
    assert!(steps(&mut c).is_empty(), "dropped");
    backend_says(&mut c, "421 Timeout.");
    assert_eq!(steps(&mut c), vec!["reply 421 Timeout."], "a 421 passes");
    let mut c = ready();
    client(&mut c, "NOOP");
    backend_says(&mut c, "227 Entering Passive Mode (198,51,100,66,117,48).");
    assert_eq!(
        steps(&mut c),
        vec![
            "send NOOP",
            "reply 451 Requested action aborted: unexpected reply from the server."
        ]
    );
    // A transfer with no data connection through ftpgate: no success.
    let mut c = ready();
    client(&mut c, "RETR f");
    backend_says(&mut c, "150 here");
    backend_says(&mut c, "226 done");
    assert_eq!(
        steps(&mut c),
        vec![
            "send RETR f",
            "reply 150 here",
            "reply 425 Can't open data connection."
        ]
    );
}

/// AUTH TLS with commands already buffered behind it: discarded, never acted on.
#[test]
fn auth_tls_with_bytes_already_buffered() {
    let mut c = ready();
    c.client_buffer()
        .extend_from_slice(b"AUTH TLS\r\nDELE precious\r\n");
    c.on_client_data(T0);
    let all: Vec<Step> = std::iter::from_fn(|| c.next_step()).collect();
    assert!(all
        .iter()
        .any(|s| matches!(s, Step::Note(Note::PlaintextDiscarded { bytes: 15 }))));
    let shown: Vec<String> = all
        .iter()
        .filter(|s| !matches!(s, Step::Note(_)))
        .map(short)
        .collect();
    assert_eq!(shown, vec!["reply 234 AUTH TLS successful.", "client tls"]);
    c.on_event(Event::ClientTlsDone(Ok(None)), T0);
    assert!(steps(&mut c).is_empty(), "DELE is gone");
    client(&mut c, "PBSZ 0");
    assert_eq!(steps(&mut c), vec!["reply 200 PBSZ=0"]);
}

#[test]
fn explicit_backend_tls_and_bytes_after_234() {
    let start = Start::Connected {
        backend: backend(),
        tls: BackendTls::Explicit,
    };
    let mut c = Control::new(policy(), start);
    backend_says(&mut c, "220 hi");
    assert_eq!(steps(&mut c), vec!["send AUTH TLS"]);
    backend_says(&mut c, "234 go");
    assert_eq!(steps(&mut c), vec!["backend tls"]);
    c.on_event(Event::BackendTlsDone(Ok(())), T0);
    assert_eq!(steps(&mut c), vec!["send PBSZ 0"]);
    backend_says(&mut c, "200 ok");
    assert_eq!(steps(&mut c), vec!["send PROT P"]);
    backend_says(&mut c, "200 ok");
    assert_eq!(steps(&mut c), vec!["reply 220 hi"]);
    // Bytes after 234: refused, never read as protected.
    let mut c = Control::new(policy(), start);
    backend_says(&mut c, "220 hi");
    steps(&mut c);
    c.backend_buffer()
        .extend_from_slice(b"234 go\r\n230 injected\r\n");
    c.on_backend_data(T0);
    assert_eq!(
        steps(&mut c),
        vec!["close backend tls: bytes after the 234 reply, before the TLS handshake [\"421 Service not available: TLS to the server failed.\"]"]
    );
}

/// The backend ends the connection inside TLS before ftpgate's own
/// conversation is done (in TLS 1.3 a server refuses a client
/// certificate after the client's handshake has ended): TLS to the server
/// failed, not an ordinary close.
#[test]
fn backend_closing_during_the_tls_setup_is_a_tls_failure() {
    let start = Start::Connected {
        backend: backend(),
        tls: BackendTls::Explicit,
    };
    let mut c = Control::new(policy(), start);
    backend_says(&mut c, "220 hi");
    backend_says(&mut c, "234 go");
    c.on_event(Event::BackendTlsDone(Ok(())), T0);
    assert_eq!(
        steps(&mut c),
        vec!["send AUTH TLS", "backend tls", "send PBSZ 0"]
    );
    c.on_backend_closed(T0);
    assert_eq!(
        steps(&mut c),
        vec!["close backend tls: the server closed the connection during the TLS setup (a refused client certificate?) [\"421 Service not available: TLS to the server failed.\"]"]
    );
    // Before AUTH TLS it is the ordinary close.
    let mut c = Control::new(policy(), start);
    backend_says(&mut c, "220 hi");
    steps(&mut c);
    c.on_backend_closed(T0);
    assert_eq!(
        steps(&mut c),
        vec!["close backend closed [\"421 Service not available: server closed the connection.\"]"]
    );
}

#[test]
fn timeouts() {
    let mut c = ready();
    assert_eq!(c.deadline(), Some(Duration::from_secs(300)), "idle");
    c.on_time(Duration::from_secs(300));
    assert_eq!(
        steps(&mut c),
        vec!["close idle timeout [\"421 Idle timeout; closing control connection.\"]"]
    );
    // Not logged in: the login timeout.
    let mut c = Control::new(policy(), Start::Unrouted);
    steps(&mut c);
    assert_eq!(c.deadline(), Some(Duration::from_secs(60)));
    // No greeting: the greeting timeout.
    let mut c = Control::new(
        policy(),
        Start::Connected {
            backend: backend(),
            tls: BackendTls::Off,
        },
    );
    assert_eq!(c.deadline(), Some(Duration::from_secs(10)));
    c.on_time(Duration::from_secs(10));
    assert_eq!(
        steps(&mut c),
        vec!["close greeting timeout [\"421 Service not available: server did not greet.\"]"]
    );
    // A transfer keeps the session alive, and its end restarts the idle clock.
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    assert_eq!(c.deadline(), None);
    backend_says(&mut c, "150 here");
    backend_says(&mut c, "226 done");
    let end = Duration::from_secs(1000);
    c.on_event(
        Event::Data {
            gen: 1,
            news: DataNews::Relaying,
        },
        end,
    );
    c.on_event(
        Event::Data {
            gen: 1,
            news: DataNews::DownDone { clean: true },
        },
        end,
    );
    c.on_event(
        Event::Data {
            gen: 1,
            news: DataNews::Finished {
                error: None,
                stalled: false,
            },
        },
        end,
    );
    assert_eq!(c.deadline(), Some(end + Duration::from_secs(300)));
}

/// A backend that never answers a command, with a data-setup command
/// waiting behind it: after `backend_reply_timeout` the session ends with
/// 421 (going ahead would misattribute the late reply).
#[test]
fn a_silent_backend_ends_the_session() {
    let mut c = ready();
    client(&mut c, "NOOP");
    client(&mut c, "PASV");
    assert_eq!(steps(&mut c), vec!["send NOOP"]);
    assert_eq!(c.deadline(), Some(Duration::from_secs(10)));
    c.on_time(Duration::from_secs(10));
    assert_eq!(
        steps(&mut c),
        vec!["close backend timeout [\"421 Service not available: server did not answer.\"]"]
    );
}

#[test]
fn login_failures_delay_then_close() {
    let mut c = ready();
    client(&mut c, "USER x");
    backend_says(&mut c, "530 no");
    assert_eq!(steps(&mut c), vec!["send USER x", "reply 530 no"]);
    client(&mut c, "USER y");
    backend_says(&mut c, "530 no");
    // Past login_failures_before_delay: the reply waits.
    assert_eq!(steps(&mut c), vec!["send USER y"]);
    assert_eq!(c.deadline(), Some(Duration::from_secs(2)));
    assert!(!c.wants_client());
    c.on_time(Duration::from_secs(2));
    assert_eq!(steps(&mut c), vec!["reply 530 no"]);
    client(&mut c, "USER z");
    backend_says(&mut c, "530 no");
    assert_eq!(
        steps(&mut c),
        vec![
            "send USER z",
            "reply 530 no",
            "close too many login failures [\"421 Too many failed logins; closing control connection.\"]",
        ]
    );
}

#[test]
fn rein_logs_out() {
    let mut c = ready();
    client(&mut c, "REIN");
    backend_says(&mut c, "220 again");
    assert_eq!(steps(&mut c), vec!["send REIN", "reply 220 again"]);
    assert!(!c.logged_in);
}

#[test]
fn per_user_routing() {
    let mut c = Control::new(policy(), Start::Unrouted);
    assert_eq!(steps(&mut c), vec![format!("reply {GREETING}")]);
    client(&mut c, "SYST");
    client(&mut c, "PASS x");
    client(&mut c, "LIST");
    assert_eq!(
        steps(&mut c),
        vec![
            "reply 215 UNIX Type: L8",
            "reply 503 Login with USER first.",
            "reply 530 Please login with USER and PASS."
        ]
    );
    client(&mut c, "USER alice");
    assert_eq!(steps(&mut c), vec!["route alice"]);
    c.on_event(
        Event::Routed {
            backend: backend(),
            tls: BackendTls::Off,
            user: "alice".into(),
        },
        T0,
    );
    assert!(steps(&mut c).is_empty());
    backend_says(&mut c, "220 backend");
    assert_eq!(
        steps(&mut c),
        vec!["send USER alice"],
        "its greeting is not shown"
    );
    backend_says(&mut c, "530 no");
    assert_eq!(steps(&mut c), vec!["reply 530 no"]);
    // Another user after a failed login: routed again.
    client(&mut c, "USER bob");
    assert_eq!(steps(&mut c), vec!["disconnect", "route bob"]);
    c.on_event(Event::RouteRefused(ErrorKind::UnknownUser), T0);
    // The second failed login: its reply waits login_failure_delay.
    assert!(steps(&mut c).is_empty());
    c.on_time(Duration::from_secs(2));
    assert_eq!(steps(&mut c), vec!["reply 530 User not known here."]);
}

/// Routing may send another name than the client's (a user lookup's
/// `"user"`, the gateway's `name@host`): the replayed USER carries it, and
/// so does the same USER sent again in the session.
#[test]
fn per_user_routing_sends_the_routed_name() {
    let mut c = Control::new(policy(), Start::Unrouted);
    steps(&mut c);
    client(&mut c, "USER alice@acme");
    assert_eq!(steps(&mut c), vec!["route alice@acme"]);
    c.on_event(
        Event::Routed {
            backend: backend(),
            tls: BackendTls::Off,
            user: "alice".into(),
        },
        T0,
    );
    backend_says(&mut c, "220 backend");
    assert_eq!(steps(&mut c), vec!["send USER alice"]);
    backend_says(&mut c, "331 password");
    client(&mut c, "PASS wrong");
    backend_says(&mut c, "530 no");
    assert_eq!(
        steps(&mut c),
        vec!["reply 331 password", "send PASS wrong", "reply 530 no"]
    );
    client(&mut c, "USER alice@acme");
    assert_eq!(steps(&mut c), vec!["send USER alice"], "not routed again");
}

#[test]
fn the_feature_list_is_one() {
    let mut c = Control::new(policy(), Start::Unrouted);
    steps(&mut c);
    client(&mut c, "FEAT");
    let local = steps(&mut c).join("\n");
    let mut d = ready();
    client(&mut d, "FEAT");
    d.backend_buffer()
        .extend_from_slice(b"211-Features:\r\n MDTM\r\n AUTH SSL\r\n211 End\r\n");
    d.on_backend_data(T0);
    let relayed = steps(&mut d).join("\n");
    for f in c.features() {
        assert!(
            local.contains(f) && relayed.contains(f),
            "{f}: {local} / {relayed}"
        );
    }
    assert!(
        !relayed.contains("AUTH SSL"),
        "TLS is ftpgate's own: {relayed}"
    );
}

/// The backend leaves during a download whose data is still on its way:
/// the data first, then the held reply, then the close.
#[test]
fn backend_gone_mid_transfer_waits_for_the_data() {
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    backend_says(&mut c, "150 here");
    backend_says(&mut c, "226 done");
    data(&mut c, 1, DataNews::Relaying);
    steps(&mut c);
    c.on_backend_closed(T0);
    assert!(steps(&mut c).is_empty());
    assert!(!c.wants_client() && !c.wants_backend());
    data(&mut c, 1, DataNews::DownDone { clean: true });
    assert_eq!(
        steps(&mut c),
        vec![
            "reply 226 done",
            "cancel 1",
            "close backend closed [\"421 Service not available: server closed the connection.\"]",
        ]
    );
}

/// 10,000 seeded sessions through the simulation; a failure prints its seed
/// (replay: `SESSION_SEED=<seed> cargo test --lib simulation`).
#[test]
fn simulation_of_ten_thousand_sessions() {
    let only: Option<u64> = std::env::var("SESSION_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (0..10_000).collect(),
    };
    let (mut replies, mut transfers, mut complete) = (0, 0, 0);
    let mut ends: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for seed in seeds {
        let r = std::panic::catch_unwind(|| script::run(&mut Seeded::new(seed), 300));
        match r {
            Ok(Ok(st)) => {
                let e = ends.entry(st.end.chars().take(30).collect()).or_default();
                e.0 += 1;
                e.1 += st.actions;
                replies += st.replies;
                transfers += st.transfers;
                complete += st.complete;
            }
            Ok(Err(v)) => panic!("seed {seed}: {v}"),
            Err(_) => panic!("seed {seed}: the core panicked"),
        }
    }
    // The simulation must reach what it checks.
    eprintln!("simulation: {replies} replies, {transfers} transfers, {complete} complete; ends (count, actions): {ends:?}");
    if only.is_none() {
        assert!(replies > 100_000, "{replies} replies");
        assert!(transfers > 2_000, "{transfers} transfers");
        assert!(complete > 500, "{complete} complete transfers");
    }
}
