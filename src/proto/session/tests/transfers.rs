//! Table tests of the core for how a data setup and a transfer end when a
//! backend behaves oddly: its data port unreachable after the client has
//! its 227, and pure-ftpd's 150-coded final reply.

use super::*;

/// The backend's data port cannot be reached after the client has its
/// 227: nothing unasked is said; the transfer command that follows gets
/// 425 (never reaching the backend), and the session goes on.
#[test]
fn a_backend_data_connect_failing_after_the_227_is_425_for_the_transfer() {
    let mut c = ready();
    client(&mut c, "PASV");
    backend_says(&mut c, "227 Entering Passive Mode (10,0,0,5,4,1).");
    leased(&mut c);
    client(&mut c, "RETR f");
    steps(&mut c);
    assert!(!c.wants_client(), "RETR waits for the backend leg");
    let error = Error::backend(ErrorKind::DataConnectFailed("refused".into()));
    c.on_event(Event::BackendDataFailed { gen: 1, error }, T0);
    assert_eq!(
        steps(&mut c),
        vec!["cancel 1", "reply 425 Can't open data connection."]
    );
    client(&mut c, "NOOP");
    backend_says(&mut c, "200 ok");
    assert_eq!(steps(&mut c), vec!["send NOOP", "reply 200 ok"]);
}

/// pure-ftpd answers a transfer whose data write failed with a final
/// reply coded 150 (`150 0.001 seconds (measured here), ...`). A second
/// 1yz on a transfer is its final reply: the client reads 426, and every
/// later reply still answers its own command. A restart marker (110) stays
/// preliminary.
#[test]
fn a_second_preliminary_ends_its_transfer() {
    let stats = "150 0.001 seconds (measured here), 341.00 Mbytes per second";
    // The client reset its data connection.
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    backend_says(&mut c, "150 here");
    data(&mut c, 1, DataNews::Relaying);
    data(&mut c, 1, DataNews::DownDone { clean: false });
    steps(&mut c);
    backend_says(&mut c, stats);
    client(&mut c, "NOOP");
    backend_says(&mut c, "200 noop");
    assert_eq!(
        steps(&mut c),
        vec![
            "reply 426 Connection closed; transfer aborted.",
            "send NOOP",
            "reply 200 noop"
        ]
    );
    // ABOR: the transfer's 426, then ABOR's own reply.
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    backend_says(&mut c, "150 here");
    steps(&mut c);
    client(&mut c, "ABOR");
    backend_says(&mut c, stats);
    backend_says(&mut c, "226 Since you see this ABOR must've succeeded");
    assert_eq!(
        steps(&mut c),
        vec![
            "cancel 1",
            "send ABOR",
            "reply 426 Connection closed; transfer aborted.",
            "reply 226 Since you see this ABOR must've succeeded"
        ]
    );
    // Restart markers are preliminary, however many.
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    backend_says(&mut c, "150 here");
    backend_says(&mut c, "110 MARK 0 = 100");
    backend_says(&mut c, "110 MARK 100 = 200");
    assert_eq!(
        steps(&mut c),
        vec![
            "send RETR f",
            "reply 150 here",
            "reply 110 MARK 0 = 100",
            "reply 110 MARK 100 = 200"
        ]
    );
}

/// Replies due one after another are taken together (the driver writes
/// them at once); anything else between them ends the run.
#[test]
fn consecutive_replies_are_taken_together() {
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    assert_eq!(steps(&mut c), vec!["send RETR f"]);
    data(&mut c, 1, DataNews::Relaying);
    data(&mut c, 1, DataNews::DownDone { clean: true });
    c.backend_buffer()
        .extend_from_slice(b"150 here\r\n226 done\r\n");
    c.on_backend_data(T0);
    let mut replies = Vec::new();
    while let Some(step) = c.next_step() {
        if let Step::Reply(first) = step {
            let mut run = vec![first];
            run.extend(std::iter::from_fn(|| c.next_reply()));
            replies.push(run);
        }
    }
    assert_eq!(
        replies,
        vec![vec![
            Bytes::from_static(b"150 here\r\n"),
            Bytes::from_static(b"226 done\r\n")
        ]]
    );
    client(&mut c, "NOOP");
    assert_eq!(c.next_reply(), None, "a Send is not a reply");
}

/// A passive backend writes a small file into the socket buffers and
/// closes its control connection before the data task has reported that
/// the client's leg is up: no cut, since the bytes are on their way; the
/// session waits for the data, then ends with 421 (no final reply came).
#[test]
fn backend_gone_before_the_relay_is_reported_waits_for_the_data() {
    let mut c = ready();
    prepare_passive(&mut c);
    client(&mut c, "RETR f");
    backend_says(&mut c, "150 here");
    steps(&mut c);
    c.on_backend_closed(T0);
    assert!(steps(&mut c).is_empty(), "not cut: the data may be whole");
    data(&mut c, 1, DataNews::Relaying);
    data(&mut c, 1, DataNews::DownDone { clean: true });
    let s = steps(&mut c);
    assert_eq!(s[0], "cancel 1", "{s:?}");
    assert!(s[1].starts_with("close backend closed"), "{s:?}");
    assert!(s[1].contains("421"), "{s:?}");
}
