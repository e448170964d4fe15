use super::*;

fn named(user: &str, host: &str, port: u16) -> Named {
    Named {
        user: user.into(),
        host: host.into(),
        port,
    }
}

#[test]
fn user_at_host_forms() {
    let cases: &[(&str, Result<Named, NameError>)] = &[
        (
            "anonymous@ftp.example.com",
            Ok(named("anonymous", "ftp.example.com", 21)),
        ),
        ("bob@192.0.2.7:2121", Ok(named("bob", "192.0.2.7", 2121))),
        (
            "me@corp.example@FTP.Example.com",
            Ok(named("me@corp.example", "ftp.example.com", 21)),
        ),
        ("v6@[2001:db8::1]:990", Ok(named("v6", "2001:db8::1", 990))),
        ("v6@[2001:db8::1]", Ok(named("v6", "2001:db8::1", 21))),
        ("  spaced@host  ", Ok(named("spaced", "host", 21))),
        ("anonymous", Err(NameError::NoHost)),
        ("@host", Err(NameError::Malformed("@host".into()))),
        ("user@", Err(NameError::Malformed("user@".into()))),
        (
            "user@host:0",
            Err(NameError::Malformed("user@host:0".into())),
        ),
        (
            "user@host:99999",
            Err(NameError::Malformed("user@host:99999".into())),
        ),
        (
            "user@host:x",
            Err(NameError::Malformed("user@host:x".into())),
        ),
        (
            "user@[nope]:21",
            Err(NameError::Malformed("user@[nope]:21".into())),
        ),
        (
            "user@[2001:db8::1]21",
            Err(NameError::Malformed("user@[2001:db8::1]21".into())),
        ),
        ("user@ho st", Err(NameError::Malformed("user@ho st".into()))),
        (
            "user@host/evil",
            Err(NameError::Malformed("user@host/evil".into())),
        ),
    ];
    for (arg, want) in cases {
        assert_eq!(&parse_user_at_host(arg), want, "{arg}");
    }
}

#[test]
fn rules_parse() {
    assert_eq!(
        Rule::parse("10.0.0.0/8"),
        Some(Rule::Net("10.0.0.0/8".parse().unwrap()))
    );
    assert_eq!(
        Rule::parse("192.0.2.7"),
        Some(Rule::Net("192.0.2.7/32".parse().unwrap()))
    );
    assert_eq!(
        Rule::parse("FTP.example.com"),
        Some(Rule::Host("ftp.example.com".into()))
    );
    assert_eq!(
        Rule::parse(".example.com"),
        Some(Rule::Domain("example.com".into()))
    );
    for bad in ["", ".", "a..b", "no spaces", "x/24", "*.example.com"] {
        assert_eq!(Rule::parse(bad), None, "{bad:?}");
    }
}

fn policy(allow: &[&str], deny: &[&str]) -> Policy {
    Policy {
        allow: allow.iter().map(|r| Rule::parse(r).unwrap()).collect(),
        deny: deny.iter().map(|r| Rule::parse(r).unwrap()).collect(),
    }
}

fn at(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 21)
}

#[test]
fn empty_allow_list_allows_nothing() {
    let p = Policy::default();
    assert!(matches!(
        p.check(None, at("192.0.2.7")),
        Err(Refusal::NotAllowed(_))
    ));
    assert!(matches!(
        p.check(Some("ftp.example.com"), at("192.0.2.7")),
        Err(Refusal::NotAllowed(_))
    ));
}

#[test]
fn allow_by_network_or_name_deny_wins() {
    let p = policy(
        &["198.51.100.0/24", "ftp.example.com", ".partners.example"],
        &["198.51.100.66", "evil.partners.example", "10.0.0.0/8"],
    );
    assert_eq!(p.check(None, at("198.51.100.2")), Ok(()));
    assert_eq!(p.check(Some("198.51.100.2"), at("198.51.100.2")), Ok(()));
    assert_eq!(p.check(Some("ftp.example.com"), at("203.0.113.9")), Ok(()));
    assert_eq!(
        p.check(Some("a.partners.example"), at("203.0.113.9")),
        Ok(())
    );
    assert!(matches!(
        p.check(Some("partners.example"), at("203.0.113.9")),
        Err(Refusal::NotAllowed(_))
    ));
    assert!(matches!(
        p.check(Some("xpartners.example"), at("203.0.113.9")),
        Err(Refusal::NotAllowed(_))
    ));
    assert!(matches!(
        p.check(None, at("198.51.100.66")),
        Err(Refusal::Denied(_))
    ));
    assert!(matches!(
        p.check(Some("evil.partners.example"), at("203.0.113.9")),
        Err(Refusal::Denied(_))
    ));
    // An allowed name resolving into a denied network is denied (DNS
    // pointing a permitted name at an internal host).
    assert!(matches!(
        p.check(Some("ftp.example.com"), at("10.1.2.3")),
        Err(Refusal::Denied(_))
    ));
    // IPv4-mapped IPv6 matches the IPv4 rule.
    assert!(matches!(
        p.check(None, at("::ffff:198.51.100.66")),
        Err(Refusal::Denied(_))
    ));
}
