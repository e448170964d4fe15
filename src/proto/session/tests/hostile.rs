//! Table tests of the core for issue 15 ("Hostile input, round two"):
//! plaintext pipelined behind AUTH before per-user routing, pipelined data
//! setup and transfer with QUIT in the middle, a trusted 227 naming other
//! addresses, oversized backend replies. The simulation covers the same
//! classes at random (invariants 7 and 8 in `script`).

use super::*;

/// Per-user routing answers AUTH itself: a USER pipelined behind it in
/// plaintext is discarded, never routed (no backend is contacted for it).
#[test]
fn auth_tls_before_routing_with_user_buffered() {
    let mut c = Control::new(policy(), Start::Unrouted);
    steps(&mut c);
    c.client_buffer()
        .extend_from_slice(b"AUTH TLS\r\nUSER x\r\n");
    c.on_client_data(T0);
    let all: Vec<Step> = std::iter::from_fn(|| c.next_step()).collect();
    assert!(all
        .iter()
        .any(|s| matches!(s, Step::Note(Note::PlaintextDiscarded { bytes: 8 }))));
    let shown: Vec<String> = all
        .iter()
        .filter(|s| !matches!(s, Step::Note(_)))
        .map(short)
        .collect();
    assert_eq!(shown, vec!["reply 234 AUTH TLS successful.", "client tls"]);
    c.on_event(Event::ClientTlsDone(Ok(None)), T0);
    assert!(steps(&mut c).is_empty(), "USER x is gone: nothing routed");
    client(&mut c, "USER alice");
    assert_eq!(steps(&mut c), vec!["route alice"]);
}

/// Commands pipelined in one piece: a data setup runs before the transfer
/// command behind it reaches the backend, replies keep command order, and
/// nothing after QUIT is ever sent (a pipelined `DELE` must not delete).
#[test]
fn pipelined_pasv_retr_and_quit() {
    let mut c = ready();
    c.client_buffer()
        .extend_from_slice(b"NOOP\r\nPASV\r\nRETR f\r\nQUIT\r\nDELE x\r\nNOOP\r\n");
    c.on_client_data(T0);
    assert_eq!(
        steps(&mut c),
        vec!["send NOOP"],
        "PASV waits for NOOP's reply"
    );
    assert!(!c.wants_client());
    backend_says(&mut c, "200 ok");
    assert_eq!(steps(&mut c), vec!["send PASV", "reply 200 ok"]);
    backend_says(&mut c, "227 Entering Passive Mode (10,0,0,5,4,1).");
    assert_eq!(steps(&mut c), vec!["lease 1 pasv=true"]);
    leased(&mut c);
    assert_eq!(
        steps(&mut c),
        vec![
            "reply 227 Entering Passive Mode (198,51,100,1,195,80).",
            "connect data 1 10.0.0.5:1025"
        ],
        "the client's 227 before ftpgate's own connect"
    );
    assert!(!c.wants_client(), "RETR waits for the backend leg");
    c.on_event(Event::BackendDataConnected { gen: 1 }, T0);
    assert_eq!(
        steps(&mut c),
        vec!["send RETR f", "send QUIT"],
        "RETR once the data connection is prepared; then QUIT, and nothing after it"
    );
    assert!(!c.wants_client(), "QUIT's answer is awaited");
    backend_says(&mut c, "150 here");
    backend_says(&mut c, "226 done");
    data(&mut c, 1, DataNews::Relaying);
    data(&mut c, 1, DataNews::DownDone { clean: true });
    assert_eq!(steps(&mut c), vec!["reply 150 here", "reply 226 done"]);
    c.backend_buffer().extend_from_slice(b"221 bye\r\n");
    c.on_backend_data(T0);
    let all: Vec<Step> = std::iter::from_fn(|| c.next_step()).collect();
    assert!(
        all.iter()
            .any(|s| matches!(s, Step::Note(Note::AfterQuitDiscarded { bytes: 14 }))),
        "{all:?}"
    );
    let shown: Vec<String> = all
        .iter()
        .filter(|s| !matches!(s, Step::Note(_)))
        .map(short)
        .collect();
    assert_eq!(
        shown,
        vec!["reply 221 bye"],
        "DELE never reaches the backend"
    );
    // What comes after QUIT's answer is discarded as it arrives.
    assert!(c.wants_client());
    client(&mut c, "DELE y");
    assert!(steps(&mut c).is_empty());
    assert_eq!(c.client_buffered(), 0);
    c.on_backend_closed(T0);
    assert_eq!(steps(&mut c), vec!["cancel 1", "close quit []"]);

    // A server that refuses QUIT (RFC 959 allows 500): the session goes on.
    let mut c = ready();
    c.client_buffer().extend_from_slice(b"QUIT\r\nNOOP\r\n");
    c.on_client_data(T0);
    assert_eq!(steps(&mut c), vec!["send QUIT"]);
    backend_says(&mut c, "500 not now");
    assert_eq!(steps(&mut c), vec!["send NOOP", "reply 500 not now"]);
}

/// `trust_backend_pasv_address`: a 227 may name the backend's own address
/// or one in `backend_data_networks`; anything else is 425, never a connect.
#[test]
fn a_trusted_227_reaches_only_allowed_addresses() {
    let trusting = |nets: &[&str]| Policy {
        trust_backend_pasv_address: true,
        backend_data_networks: Networks(nets.iter().map(|n| n.parse().unwrap()).collect()),
        ..policy()
    };
    let table: &[(&[&str], &str, &[&str])] = &[
        (
            &[],
            "10,0,0,5",
            &[
                "lease 1 pasv=true",
                "reply 227 Entering Passive Mode (198,51,100,1,195,80).",
                "connect data 1 10.0.0.5:1025",
            ],
        ),
        (
            &[],
            "169,254,169,254",
            &[
                "cancel 1",
                "reply 425 Can't open data connection: server named an address not allowed.",
            ],
        ),
        (
            &["10.0.9.0/24"],
            "10,0,9,7",
            &[
                "lease 1 pasv=true",
                "reply 227 Entering Passive Mode (198,51,100,1,195,80).",
                "connect data 1 10.0.9.7:1025",
            ],
        ),
        (
            &["10.0.9.0/24"],
            "10,0,8,7",
            &[
                "cancel 1",
                "reply 425 Can't open data connection: server named an address not allowed.",
            ],
        ),
    ];
    for (nets, named, want) in table {
        let mut c = ready_with(trusting(nets));
        client(&mut c, "PASV");
        assert_eq!(steps(&mut c), vec!["send PASV"]);
        backend_says(&mut c, &format!("227 Entering Passive Mode ({named},4,1)."));
        let mut all: Vec<Step> = std::iter::from_fn(|| c.next_step()).collect();
        let refused = all
            .iter()
            .any(|s| matches!(s, Step::Note(Note::BackendDataRefused { .. })));
        if !refused {
            // The client's port, then the connect to the address named.
            leased(&mut c);
            all.extend(std::iter::from_fn(|| c.next_step()));
        }
        let shown: Vec<String> = all
            .iter()
            .filter(|s| !matches!(s, Step::Note(_)))
            .map(short)
            .collect();
        assert_eq!(shown, *want, "{named} with {nets:?}");
        assert_eq!(refused, want[0] == "cancel 1", "{named} with {nets:?}");
        if refused {
            client(&mut c, "NOOP");
            assert_eq!(steps(&mut c), vec!["send NOOP"], "the session goes on");
        }
    }
}

/// A backend reply line that never ends, or a multi-line reply over 1 MiB:
/// 421 and the session ends (nothing of it reaches the client).
#[test]
fn oversized_backend_replies_end_the_session() {
    let mut c = ready();
    client(&mut c, "SYST");
    steps(&mut c);
    c.backend_buffer().extend_from_slice(b"215 ");
    for _ in 0..5 {
        c.backend_buffer().extend_from_slice(&[b'x'; 4096]);
        c.on_backend_data(T0);
    }
    assert_eq!(
        steps(&mut c),
        vec!["close reply too long [\"421 Service not available: server reply too long.\"]"]
    );
    let mut c = ready();
    client(&mut c, "STAT .");
    steps(&mut c);
    c.backend_buffer().extend_from_slice(b"213-status\r\n");
    let line = format!(" {}\r\n", "f".repeat(1000));
    for _ in 0..(MAX_REPLY_BYTES / 1000 + 1) {
        c.backend_buffer().extend_from_slice(line.as_bytes());
        c.on_backend_data(T0);
        if c.is_closed() {
            break;
        }
    }
    assert_eq!(
        steps(&mut c),
        vec!["close reply too long [\"421 Service not available: server reply too long.\"]"]
    );
}
