//! Table tests of the core inside TLS: no downgrade (PROT C where TLS is
//! required, CCC, a second AUTH, REIN), and USER against the names of the
//! client's certificate.

use super::*;

/// A greeted session inside TLS (AUTH TLS done; the client showed `cert`),
/// not logged in; steps so far taken.
fn in_tls(p: Policy, cert: Option<ClientCert>) -> Control {
    let mut c = Control::new(
        p,
        Start::Connected {
            backend: backend(),
            tls: BackendTls::Off,
        },
    );
    backend_says(&mut c, "220 hi");
    client(&mut c, "AUTH TLS");
    assert_eq!(
        steps(&mut c),
        vec![
            "reply 220 hi",
            "reply 234 AUTH TLS successful.",
            "client tls"
        ]
    );
    c.on_event(Event::ClientTlsDone(Ok(cert)), T0);
    assert!(steps(&mut c).is_empty());
    c
}

/// Each line in turn and what it gives, in one session.
fn script(c: &mut Control, table: &[(&str, &[&str])]) {
    for (line, want) in table {
        client(c, line);
        assert_eq!(steps(c), *want, "{line}");
    }
}

const PROT_C_REFUSED: &str = "reply 534 PROT C refused: data protection is required here.";
const REIN_REFUSED: &str = "reply 502 REIN not available inside TLS; open a new session.";

/// Inside TLS nothing weakens protection: CCC 533, a second AUTH 503, REIN
/// 502 (never forwarded: it would clear the TLS session, RFC 4217 13),
/// and where TLS is required, PROT C after PROT P 534. Outside TLS, REIN
/// reaches the backend as before (`rein_logs_out`).
#[test]
fn no_downgrade_inside_tls() {
    let required = Policy {
        tls_required: true,
        ..policy()
    };
    let mut c = in_tls(required.clone(), None);
    script(
        &mut c,
        &[
            // Not a downgrade yet: clear data is refused at the transfer (521).
            ("PROT C", &["reply 200 PROT now Clear."]),
            ("PROT P", &["reply 200 PROT now Private."]),
            ("PROT C", &[PROT_C_REFUSED]),
            ("PROT c", &[PROT_C_REFUSED]),
            ("PROT P", &["reply 200 PROT now Private."]),
            (
                "CCC",
                &["reply 533 CCC refused: the control connection stays protected."],
            ),
            ("AUTH TLS", &["reply 503 Already using TLS."]),
            ("AUTH SSL", &["reply 503 Already using TLS."]),
            ("REIN", &[REIN_REFUSED]),
            ("USER u", &["send USER u"]),
        ],
    );
    backend_says(&mut c, "230 in");
    assert_eq!(steps(&mut c), vec!["reply 230 in"]);
    script(
        &mut c,
        &[("REIN", &[REIN_REFUSED]), ("PROT C", &[PROT_C_REFUSED])],
    );
    assert!(c.logged_in && c.protects_data());

    // Optional TLS: PROT C is the client's choice; REIN is still refused.
    let mut c = in_tls(policy(), None);
    script(
        &mut c,
        &[
            ("PROT P", &["reply 200 PROT now Private."]),
            ("PROT C", &["reply 200 PROT now Clear."]),
            ("REIN", &[REIN_REFUSED]),
            ("AUTH TLS", &["reply 503 Already using TLS."]),
        ],
    );

    // Implicit TLS starts with PROT P: PROT C is a downgrade at once.
    let implicit = Policy {
        implicit_tls: true,
        ..required
    };
    let mut c = Control::new(
        implicit,
        Start::Connected {
            backend: backend(),
            tls: BackendTls::Off,
        },
    );
    backend_says(&mut c, "220 hi");
    steps(&mut c);
    script(
        &mut c,
        &[
            ("PROT C", &[PROT_C_REFUSED]),
            ("AUTH TLS", &["reply 503 Already using TLS."]),
            ("REIN", &[REIN_REFUSED]),
            ("PBSZ 0", &["reply 200 PBSZ=0"]),
        ],
    );
}

fn alice() -> ClientCert {
    ClientCert {
        subject: "alice".into(),
        user_names: vec!["alice".into(), "alice@example.com".into()],
    }
}

const CERT_MISMATCH: &str = "reply 530 User does not match the client certificate.";

/// `tls_client_cert_user`: USER must be a name of the certificate (its CN
/// or a whole email SAN, byte for byte), else 530 from ftpgate, a failed
/// login the backend never sees.
#[test]
fn user_must_match_the_client_certificate() {
    let p = Policy {
        cert_user: true,
        login_failure_delay: Duration::ZERO,
        ..policy()
    };
    let mut c = in_tls(p.clone(), Some(alice()));
    assert_eq!(c.client_cert().map(|c| c.subject.as_str()), Some("alice"));
    script(
        &mut c,
        &[
            ("USER bob", &[CERT_MISMATCH]),
            ("USER ALICE", &[CERT_MISMATCH]),
            ("USER alice", &["send USER alice"]),
        ],
    );
    backend_says(&mut c, "331 pass");
    client(&mut c, "PASS x");
    backend_says(&mut c, "230 in");
    assert_eq!(
        steps(&mut c),
        vec!["reply 331 pass", "send PASS x", "reply 230 in"]
    );
    let mut c = in_tls(p.clone(), Some(alice()));
    script(
        &mut c,
        &[("USER alice@example.com", &["send USER alice@example.com"])],
    );
    // A refused USER between USER and PASS: the backend logs in the user
    // it was sent, and so does the session.
    backend_says(&mut c, "331 pass");
    script(&mut c, &[("USER bob", &["reply 331 pass", CERT_MISMATCH])]);
    client(&mut c, "PASS x");
    backend_says(&mut c, "230 in");
    let all: Vec<Step> = std::iter::from_fn(|| c.next_step()).collect();
    assert!(
        all.iter().any(|s| matches!(
            s,
            Step::Note(Note::LoggedIn { user }) if user == "alice@example.com"
        )),
        "{all:?}"
    );

    // Mismatches are failed logins: the third closes the session.
    let mut c = in_tls(p.clone(), Some(alice()));
    client(&mut c, "USER mallory");
    let all: Vec<Step> = std::iter::from_fn(|| c.next_step()).collect();
    assert!(
        all.iter().any(|s| matches!(
            s,
            Step::Note(Note::LoginFailed { user, failures: 1 }) if user == "mallory"
        )),
        "{all:?}"
    );
    // The session's user is what the backend knows: none yet.
    assert_eq!(c.user(), None);
    script(&mut c, &[("USER mallory", &[CERT_MISMATCH])]);
    client(&mut c, "USER mallory");
    assert_eq!(
        steps(&mut c),
        vec![
            CERT_MISMATCH,
            "close too many login failures [\"421 Too many failed logins; closing control connection.\"]",
        ]
    );

    // No certificate (optional client certificates, or no TLS): no name.
    let mut c = in_tls(p.clone(), None);
    script(&mut c, &[("USER alice", &[CERT_MISMATCH])]);
    let mut c = Control::new(
        Policy {
            cert_user: true,
            ..policy()
        },
        Start::Connected {
            backend: backend(),
            tls: BackendTls::Off,
        },
    );
    backend_says(&mut c, "220 hi");
    steps(&mut c);
    script(&mut c, &[("USER u", &[CERT_MISMATCH])]);

    // Implicit TLS: the certificate comes with the policy.
    let implicit = Policy {
        tls_required: true,
        implicit_tls: true,
        client_cert: Some(Box::new(alice())),
        ..p.clone()
    };
    let mut c = Control::new(
        implicit,
        Start::Connected {
            backend: backend(),
            tls: BackendTls::Off,
        },
    );
    backend_says(&mut c, "220 hi");
    steps(&mut c);
    assert_eq!(c.client_cert(), Some(&alice()));
    script(
        &mut c,
        &[
            ("USER bob", &[CERT_MISMATCH]),
            ("USER alice", &["send USER alice"]),
        ],
    );

    // Without tls_client_cert_user the certificate only names the session.
    let mut c = in_tls(policy(), Some(alice()));
    script(&mut c, &[("USER bob", &["send USER bob"])]);
    assert_eq!(c.client_cert(), Some(&alice()));
}
