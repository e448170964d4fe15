//! Unit tests of [`super::validate`]: defaults, error texts naming key and
//! line, listener and plain TCP rules, and configurations printed by
//! `ftpgate check` that read back the same. No sockets are bound here.

use super::listeners::listen_overlap;
use super::*;
use crate::config::file::parse_str;
use std::net::SocketAddr;
use std::path::Path;

fn check(text: &str) -> Result<Config, ConfigError> {
    validate(&parse_str(Path::new("t.toml"), text)?)
}

#[test]
fn minimal_file_gets_defaults() {
    let c = check("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n").unwrap();
    assert_eq!(c.passive_ports, (50000, 50099));
    assert_eq!(c.public_address, PublicAddressSpec::Auto);
    assert_eq!(c.pending_data_timeout, Duration::from_secs(30));
    assert_eq!(c.max_line_length, 4096);
    assert!(c.active_mode && c.active_nat_fix && !c.allow_foreign_data_address);
    assert_eq!(
        c.passive_bind_address,
        "127.0.0.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn backend_data_networks_take_networks_and_addresses() {
    let base = "listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n";
    assert!(check(base).unwrap().backend_data_networks.is_empty());
    let c = check(&format!(
        "{base}backend_data_networks = [\"10.0.2.7/24\", \"192.0.2.9\", \"::ffff:192.0.2.10\"]\n"
    ))
    .unwrap();
    let shown: Vec<String> = c
        .backend_data_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(shown, ["10.0.2.0/24", "192.0.2.9/32", "192.0.2.10/32"]);
    let e = check(&format!(
        "{base}backend_data_networks = [\"10.0.0.0/8\", \"nope\"]\n"
    ))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t.toml:3: backend_data_networks") && e.contains("`nope`"),
        "{e}"
    );
}

#[test]
fn errors_name_key_and_line() {
    let cases = [
        ("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\npassive_ports = \"9-1\"\n", "t.toml:3: passive_ports"),
        ("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n\nidle_timeout = \"5 parsecs\"\n", "t.toml:4: idle_timeout"),
        ("listen = [\"nope\"]\nbackends = [\"127.0.0.1:21\"]\n", "t.toml:1: listen"),
        ("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\nbogus_key = 1\n", "t.toml:3"),
        ("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\nactive_mode = \"yes\"\n", "t.toml:3"),
        ("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\npublic_address = \"0.0.0.0\"\n", "t.toml:3: public_address"),
        ("listen = [\"127.0.0.1:2121\"]\n", "backends"),
    ];
    for (text, want) in cases {
        let e = check(text).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
}

#[test]
fn rules_are_sorted_most_specific_first() {
    let c = check("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n[public_address_for]\n\"10.0.0.0/8\" = \"10.0.0.20\"\n\"10.1.0.0/16\" = \"auto\"\n").unwrap();
    assert_eq!(
        c.public_address_for[0].0,
        "10.1.0.0/16".parse::<IpNet>().unwrap()
    );
    assert_eq!(c.public_address_for[0].1, PublicAddressSpec::Auto);
}

const SSH_POOL: &str = "[pool.ssh]\nbackends = [\"127.0.0.1:2201\", \"127.0.0.1:2202\"]\n";

#[test]
fn tcp_only_needs_no_ftp_keys_and_prints_back() {
    let text = format!(
        "{SSH_POOL}policy = \"least_connections\"\n[tcp.sftp]\nlisten = [\"0.0.0.0:2222\", \"[::1]:2223\"]\npool = \"ssh\"\n"
    );
    let c = check(&text).unwrap();
    assert!(!c.serves_ftp() && c.backends.is_empty());
    assert_eq!(c.tcp.len(), 1);
    assert_eq!(c.tcp[0].name, "sftp");
    assert_eq!(c.tcp[0].pool, "ssh");
    assert_eq!(c.tcp[0].listen[1], "[::1]:2223".parse().unwrap());
    assert!(c.is_tcp_pool("ssh") && !c.is_tcp_pool("default"));
    let printed = c.to_toml();
    let again = check(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again.tcp, c.tcp);
    assert_eq!(again.to_toml(), printed);
    // Next to FTP, with the passive range elsewhere.
    let both = format!("listen = [\"0.0.0.0:21\"]\nbackends = [\"127.0.0.1:2121\"]\n{text}");
    assert!(check(&both).unwrap().serves_ftp());
}

#[test]
fn tcp_errors_name_the_table() {
    let ftp = "listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n";
    let tcp = |listen: &str, pool: &str| {
        format!("{SSH_POOL}[tcp.sftp]\nlisten = [{listen}]\npool = \"{pool}\"\n")
    };
    let cases = [
        (tcp("\"0.0.0.0:2222\"", "nope"), "no pool is named `nope`"),
        (tcp("", "ssh"), "[tcp.sftp]: listen: at least one address"),
        (tcp("\"localhost:22\"", "ssh"), "listen: `localhost:22` is not IP:port"),
        (tcp("\"0.0.0.0:2222\"", ""), "[tcp.sftp]: pool: name the [pool.NAME]"),
        (
            format!("{ftp}{}", tcp("\"0.0.0.0:2121\"", "ssh")),
            "listen: 0.0.0.0:2121 collides with 127.0.0.1:2121 of listen",
        ),
        (
            format!("{ftp}admin_listen = \"127.0.0.1:9121\"\n{}", tcp("\"[::]:9121\"", "ssh")),
            "collides with 127.0.0.1:9121 of admin_listen",
        ),
        (
            format!("{ftp}{}", tcp("\"127.0.0.1:50010\"", "ssh")),
            "port 50010 of 127.0.0.1:50010 is in passive_ports (50000-50099)",
        ),
        (
            format!("{}[tcp.other]\nlisten = [\"127.0.0.1:2222\"]\npool = \"ssh\"\n", tcp("\"0.0.0.0:2222\"", "ssh")),
            "[tcp.other]: listen: 127.0.0.1:2222 collides with 0.0.0.0:2222 of [tcp.sftp]",
        ),
        (tcp("\"0.0.0.0:2222\", \"127.0.0.1:2222\"", "ssh"), "127.0.0.1:2222 collides with 0.0.0.0:2222 of [tcp.sftp]"),
        (
            format!("{SSH_POOL}policy = \"user_hash\"\n[tcp.sftp]\nlisten = [\"0.0.0.0:2222\"]\npool = \"ssh\"\n"),
            "policy user_hash, but plain TCP has no user",
        ),
        (format!("{ftp}{}", tcp("\"0.0.0.0:2222\"", "default")), "is used by FTP through `backends`"),
        (
            format!("{ftp}{}[pool_for_listener]\n\"127.0.0.1:2121\" = \"ssh\"\n", tcp("\"0.0.0.0:2222\"", "ssh")),
            "is used by FTP through [pool_for_listener] for 127.0.0.1:2121",
        ),
        (
            format!("{ftp}user_pool_default = \"ssh\"\n{}[user_pool]\nbob = \"default\"\n", tcp("\"0.0.0.0:2222\"", "ssh")),
            "is used by FTP through user_pool_default",
        ),
        (
            format!("{ftp}{}[user_pool]\nalice = \"ssh\"\n", tcp("\"0.0.0.0:2222\"", "ssh")),
            "is used by FTP through [user_pool] for `alice`",
        ),
        (
            format!("{}[pool.ftp]\nbackends = [\"127.0.0.1:2202\"]\n", tcp("\"0.0.0.0:2222\"", "ssh")),
            "`127.0.0.1:2202` of pool `ssh` is also in pool `ftp`",
        ),
        (
            format!("listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:2201\"]\n{}", tcp("\"0.0.0.0:2222\"", "ssh")),
            "`127.0.0.1:2201` of pool `ssh` is also in pool `default`",
        ),
        (
            format!("{SSH_POOL}[tcp.\"s p\"]\nlisten = [\"0.0.0.0:2222\"]\npool = \"ssh\"\n"),
            "`s p` is not a listener name",
        ),
        (
            format!("{SSH_POOL}[tcp.sftp]\nlisten = [\"0.0.0.0:2222\"]\npool = \"ssh\"\nport = 22\n"),
            "unknown key `port` (",
        ),
    ];
    for (text, want) in cases {
        let e = check(&text).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}\n{text}");
        assert!(e.starts_with("t.toml:"), "{e:?} should say where");
    }
}

#[test]
fn without_any_listener_listen_and_backends_stay_required() {
    for text in [
        format!("backends = [\"127.0.0.1:21\"]\n{SSH_POOL}"),
        "backends = [\"127.0.0.1:21\"]\nimplicit_tls_listen = []\n".to_owned(),
    ] {
        let e = check(&text).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("missing required setting `listen`"), "{e}");
    }
    let e = check("listen = [\"127.0.0.1:2121\"]\n")
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("`backends`"), "{e}");
    // An FTP listener of another kind needs backends too.
    let e = check(
        "proxy_protocol_listen = [\"127.0.0.1:2122\"]\nproxy_protocol_from = [\"10.0.0.0/8\"]\n",
    )
    .map(|_| ())
    .unwrap_err();
    assert!(e.to_string().contains("`backends`"), "{e}");
}

const CERT: &str =
    "tls_cert = \"tests/data/config/tls/cert.pem\"\ntls_key = \"tests/data/config/tls/key.pem\"\n";
const BACKEND: &str = "backends = [\"127.0.0.1:21\"]\n";
const FROM: &str = "proxy_protocol_from = [\"10.0.0.0/8\"]\n";

#[test]
fn each_kind_of_ftp_listener_alone_is_valid() {
    for (text, bind) in [
        (
            format!("{BACKEND}{CERT}implicit_tls_listen = [\"127.0.0.2:990\"]\n"),
            "127.0.0.2",
        ),
        (
            format!("{BACKEND}{FROM}proxy_protocol_listen = [\"[::1]:2122\"]\n"),
            "::1",
        ),
    ] {
        let c = check(&text).unwrap();
        assert!(c.listen.is_empty() && c.serves_ftp(), "{text}");
        assert_eq!(c.passive_bind_address, bind.parse::<IpAddr>().unwrap());
        // Printed back, it validates again with the same meaning.
        let printed = c.to_toml();
        assert!(printed.starts_with("# listen is not set\n"), "{printed}");
        let again = check(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(again.to_toml(), printed);
    }
}

#[test]
fn passive_bind_address_defaults_to_what_every_ftp_listener_shares() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    /// Listeners, and the default (`Ok`) or the addresses named (`Err`).
    type Case<'a> = (&'a [&'a str], Result<&'a str, &'a [&'a str]>);
    let cases: [Case<'_>; 8] = [
        (&[], Ok("0.0.0.0")),
        (&["127.0.0.1:21", "127.0.0.1:990"], Ok("127.0.0.1")),
        (&["[::1]:21"], Ok("::1")),
        (&["0.0.0.0:21", "10.0.0.5:990"], Ok("0.0.0.0")),
        (&["10.0.0.5:21", "[::]:990"], Ok("::")),
        (&["0.0.0.0:21", "[::1]:990"], Ok("::")),
        (
            &["127.0.0.1:21", "127.0.0.2:990", "127.0.0.1:2122"],
            Err(&["127.0.0.1", "127.0.0.2"]),
        ),
        (&["127.0.0.1:21", "[::1]:21"], Err(&["127.0.0.1", "::1"])),
    ];
    for (listeners, want) in cases {
        let got = default_passive_bind(&listeners.iter().map(|s| a(s)).collect::<Vec<_>>());
        let want = want
            .map(ip)
            .map_err(|v| v.iter().map(|s| ip(s)).collect::<Vec<_>>());
        assert_eq!(got, want, "{listeners:?}");
    }
    // Through validation: every FTP listener counts, gateways too.
    let e = check(&format!(
        "{BACKEND}{CERT}listen = [\"127.0.0.1:2121\"]\nimplicit_tls_listen = [\"127.0.0.2:990\"]\n"
    ))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("set `passive_bind_address` (flag --passive-bind-address): ")
            && e.contains("(127.0.0.1, 127.0.0.2)"),
        "{e}"
    );
    let e = check(&format!(
        "{BACKEND}listen = [\"127.0.0.1:2121\"]\ngateway_listen = [\"192.168.50.1:2121\"]\n"
    ))
    .map(|_| ())
    .unwrap_err();
    assert!(e.to_string().contains("passive_bind_address"), "{e}");
    let c = check(&format!(
        "{BACKEND}{CERT}listen = [\"127.0.0.1:2121\"]\nimplicit_tls_listen = [\"127.0.0.2:990\"]\npassive_bind_address = \"0.0.0.0\"\n"
    ))
    .unwrap();
    assert_eq!(c.passive_bind_address, ip("0.0.0.0"));
}

#[test]
fn listen_overlap_by_port_and_wildcard() {
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    let cases = [
        ("127.0.0.1:22", "127.0.0.1:22", true),
        ("127.0.0.1:22", "127.0.0.2:22", false),
        ("127.0.0.1:22", "127.0.0.1:23", false),
        ("0.0.0.0:22", "10.0.0.1:22", true),
        ("[::]:22", "10.0.0.1:22", true),
        ("[::]:22", "[::1]:22", true),
        ("0.0.0.0:22", "[::1]:22", false),
        ("127.0.0.1:22", "[::1]:22", false),
        ("127.0.0.1:0", "127.0.0.1:0", false),
    ];
    for (x, y, want) in cases {
        assert_eq!(listen_overlap(a(x), a(y)), want, "{x} {y}");
        assert_eq!(listen_overlap(a(y), a(x)), want, "{y} {x}");
    }
}

#[test]
fn check_prints_backend_tls_verify_as_set() {
    let minimal = "listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n";
    let line = |text: &str| {
        check(text)
            .unwrap()
            .to_toml()
            .lines()
            .find(|l| l.starts_with("backend_tls_verify ="))
            .map(str::to_owned)
    };
    assert_eq!(line(minimal).as_deref(), Some("backend_tls_verify = true"));
    assert_eq!(
        line(&format!("{minimal}backend_tls_verify = false\n")).as_deref(),
        Some("backend_tls_verify = false")
    );
    assert_eq!(
        line(&format!(
            "{minimal}backend_tls = \"explicit\"\nbackend_tls_verify = false\n"
        ))
        .as_deref(),
        Some("backend_tls_verify = false")
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_duration("5 parsecs"), None);
}

#[test]
fn host_names_expand_and_follow_new_addresses() {
    use std::collections::BTreeMap;
    let c = check(
        "listen = [\"127.0.0.1:2121\"]\nbackends = [\"localhost:2100\", \"127.0.0.1:2200\"]\n\
         backend_drain = [\"localhost:2100\"]\n[backend_weights]\n\"localhost:2100\" = 3\n",
    )
    .unwrap();
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    let mut resolved = BTreeMap::new();
    resolved.insert(
        "localhost:2100".to_owned(),
        vec![a("127.0.0.1:2100"), a("127.0.0.2:2100")],
    );
    let new = c.with_resolved(&resolved).expect("a new member");
    let got: Vec<(String, SocketAddr, u32, bool)> = new
        .backends
        .iter()
        .map(|b| (b.label(), b.addr, b.weight, b.drain))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "localhost:2100@127.0.0.1".into(),
                a("127.0.0.1:2100"),
                3,
                true
            ),
            (
                "localhost:2100@127.0.0.2".into(),
                a("127.0.0.2:2100"),
                3,
                true
            ),
            ("127.0.0.1:2200".into(), a("127.0.0.1:2200"), 1, false),
        ]
    );
    assert!(
        new.with_resolved(&resolved).is_none(),
        "same answer: no change"
    );
    assert!(
        c.with_resolved(&BTreeMap::new()).is_none(),
        "no answer: members kept"
    );
    // The printed configuration names it once.
    assert!(new
        .to_toml()
        .contains("backends = [\"localhost:2100\", \"127.0.0.1:2200\"]"));
}

const LOOKUP_BASE: &str = "listen = [\"127.0.0.1:2121\"]\nbackends = [\"127.0.0.1:21\"]\n";

#[test]
fn user_lookup_defaults_and_prints_back() {
    let c = check(&format!(
        "{LOOKUP_BASE}user_lookup_url = \"http://127.0.0.1:8080/ftp-route?user={{user}}\"\n"
    ))
    .unwrap();
    let l = c.user_lookup.as_ref().unwrap();
    assert_eq!(l.timeout, Duration::from_secs(2));
    assert_eq!(l.cache_ttl, Duration::from_secs(30));
    assert_eq!(l.unknown_ttl, Duration::from_secs(5));
    assert_eq!(l.cache_size, 10_000);
    assert!(l.fallback_pool.is_none() && !l.any_backend && l.tls.is_none());
    let listener = "127.0.0.1:2121".parse().unwrap();
    assert!(
        c.routes_by_user(listener),
        "the lookup turns on per-user routing"
    );
    let printed = c.to_toml();
    assert!(
        printed.contains("user_lookup_unknown_ttl = \"5s\"\n"),
        "{printed}"
    );
    let again = check(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again.to_toml(), printed);
    // Every key set; a zero TTL keeps nothing, and caps the unknown TTL.
    let c = check(&format!(
        "{LOOKUP_BASE}user_lookup_url = \"http://idp.internal/u/{{user}}?ip={{client_ip}}&on={{listener}}\"\n\
         user_lookup_timeout = \"750ms\"\nuser_lookup_cache_ttl = \"0s\"\nuser_lookup_cache_size = 50\n\
         user_lookup_fallback_pool = \"p\"\nuser_lookup_any_backend = true\n\
         [pool.p]\nbackends = [\"127.0.0.1:2021\"]\n[user_pool]\nalice = \"p\"\n"
    ))
    .unwrap();
    let l = c.user_lookup.as_ref().unwrap();
    assert_eq!(l.timeout, Duration::from_millis(750));
    assert_eq!(
        (l.cache_ttl, l.unknown_ttl),
        (Duration::ZERO, Duration::ZERO)
    );
    assert_eq!(l.cache_size, 50);
    assert_eq!(l.fallback_pool.as_deref(), Some("p"));
    assert!(l.any_backend);
    let printed = c.to_toml();
    let again = check(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again.to_toml(), printed);
}

/// Named pools and no `backends`: with the lookup no listener needs a pool.
#[test]
fn user_lookup_needs_no_listener_pool() {
    let c = check(
        "listen = [\"127.0.0.1:2121\"]\nuser_lookup_url = \"http://idp/r?u={user}\"\n\
         [pool.a]\nbackends = [\"127.0.0.1:2021\"]\n",
    )
    .unwrap();
    assert!(c.user_lookup.is_some() && c.backends.is_empty());
}

#[test]
fn user_lookup_mistakes_name_the_key() {
    let url = "user_lookup_url = \"http://idp/r?u={user}\"\n";
    let cases = [
        (
            "user_lookup_timeout = \"1s\"\n".to_owned(),
            "t.toml:3: user_lookup_timeout: it only applies with user_lookup_url",
        ),
        (
            "user_lookup_url = \"http://{user}.idp/r\"\n".to_owned(),
            "t.toml:3: user_lookup_url: `http://{user}.idp/r`: placeholders may stand in the path and query only",
        ),
        (
            "user_lookup_url = \"http://idp/r?u={name}\"\n".to_owned(),
            "unknown placeholder `{name}`",
        ),
        (
            format!("{url}user_lookup_timeout = \"0s\"\n"),
            "user_lookup_timeout: `0s` is not a duration above zero",
        ),
        (
            format!("{url}user_lookup_cache_ttl = \"soon\"\n"),
            "user_lookup_cache_ttl: `soon` is not a duration",
        ),
        (
            format!("{url}user_lookup_cache_ttl = \"10s\"\nuser_lookup_unknown_ttl = \"1m\"\n"),
            "user_lookup_unknown_ttl: 60s is longer than user_lookup_cache_ttl (10s)",
        ),
        (
            format!("{url}user_lookup_cache_size = 0\n"),
            "user_lookup_cache_size: 0 is out of range",
        ),
        (
            format!("{url}user_lookup_fallback_pool = \"nope\"\n"),
            "user_lookup_fallback_pool: no pool is named `nope`",
        ),
        (
            format!("{url}user_lookup_fallback_pool = \"ssh\"\n{SSH_POOL}[tcp.s]\nlisten = [\"127.0.0.1:2222\"]\npool = \"ssh\"\n"),
            "pool `ssh` serves the plain TCP listeners of [tcp.s], not FTP",
        ),
        (
            format!("{url}user_lookup_ca = \"/etc/ssl/ca.pem\"\n"),
            "user_lookup_ca: user_lookup_url is http://",
        ),
        (
            "user_lookup_url = \"https://idp/r?u={user}\"\nuser_lookup_ca = \"/nonexistent/ca.pem\"\n".to_owned(),
            "t.toml:4: user_lookup_ca: /nonexistent/ca.pem: cannot read",
        ),
        (
            format!("{url}user_pool_default = \"default\"\n[user_pool]\na = \"default\"\n"),
            "user_pool_default: with user_lookup_url the lookup answers",
        ),
    ];
    for (tail, want) in cases {
        let text = format!("{LOOKUP_BASE}{tail}");
        let e = check(&text).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}\n{text}");
    }
}

/// Mutual TLS toward clients and backends, SNI names, the transfer log's
/// user field: what is valid prints back the same; each mistake names its
/// key and, for files, the file.
#[test]
fn client_certificates_sni_and_backend_identity() {
    let ftp = format!("listen = [\"127.0.0.1:2121\"]\n{BACKEND}");
    let ca = "tls_client_ca = \"tests/data/config/tls/cert.pem\"\n";
    let valid = format!(
        "{ftp}{CERT}{ca}tls_client_auth = \"required\"\ntls_client_cert_user = true\n\
         xferlog_user = \"certificate\"\ntls_server_names = [\"FTP.example.com.\", \"files.example\"]\n\
         backend_tls = \"explicit\"\nbackend_tls_verify = false\n\
         backend_tls_client_cert = \"tests/data/config/tls/cert.pem\"\n\
         backend_tls_client_key = \"tests/data/config/tls/key.pem\"\n"
    );
    let c = check(&valid).unwrap();
    assert_eq!(c.tls_client_auth, crate::tls::ClientAuth::Required);
    assert!(c.tls_client_cert_user && c.backend_tls_identity.is_some());
    assert_eq!(c.xferlog_user, crate::xferlog::UserField::Certificate);
    assert_eq!(c.tls_server_names, ["ftp.example.com", "files.example"]);
    let printed = c.to_toml();
    for want in [
        "tls_client_auth = \"required\"",
        "tls_client_cert_user = true",
        "xferlog_user = \"certificate\"",
        "tls_server_names = [\"ftp.example.com\", \"files.example\"]",
    ] {
        assert!(printed.lines().any(|l| l == want), "{want}:\n{printed}");
    }
    let again = check(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again.to_toml(), printed);
    // The defaults print back too.
    let d = check(&ftp).unwrap().to_toml();
    for want in [
        "tls_client_auth = \"off\"",
        "tls_client_cert_user = false",
        "xferlog_user = \"login\"",
        "tls_server_names = []",
        "# tls_client_ca is not set",
        "# backend_tls_client_cert is not set",
    ] {
        assert!(d.lines().any(|l| l == want), "{want}:\n{d}");
    }

    let dir = tempfile::tempdir().unwrap();
    let other_key = dir.path().join("other.key");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let backend = "backend_tls = \"explicit\"\nbackend_tls_verify = false\n";
    let cases = [
        (
            format!("{ftp}{CERT}{ca}tls_client_auth = \"sometimes\"\n"),
            "t.toml:6: tls_client_auth: `sometimes` is not \"off\", \"optional\" or \"required\"",
        ),
        (
            format!("{ftp}{CERT}tls_client_auth = \"required\"\n"),
            "tls_client_auth: set tls_client_ca",
        ),
        (
            format!("{ftp}{ca}tls_client_auth = \"optional\"\n"),
            "tls_client_auth: client certificates need TLS toward clients",
        ),
        (
            format!("{ftp}{CERT}{ca}"),
            "t.toml:5: tls_client_ca: set tls_client_auth",
        ),
        (
            format!("{ftp}{CERT}tls_client_auth = \"required\"\ntls_client_ca = \"/nonexistent/ca.pem\"\n"),
            "tls_client_ca: /nonexistent/ca.pem: cannot read",
        ),
        (
            format!("{ftp}{CERT}tls_client_cert_user = true\n"),
            "tls_client_cert_user: needs client certificates",
        ),
        (
            format!("{ftp}{CERT}xferlog_user = \"certificate\"\n"),
            "xferlog_user: \"certificate\" needs client certificates",
        ),
        (
            format!("{ftp}xferlog_user = \"cn\"\n"),
            "xferlog_user: `cn` is not \"login\" or \"certificate\"",
        ),
        (
            format!("{ftp}{CERT}tls_server_names = [\"127.0.0.1\"]\n"),
            "tls_server_names: `127.0.0.1` is an IP address",
        ),
        (
            format!("{ftp}{CERT}tls_server_names = [\"not a name\"]\n"),
            "tls_server_names: `not a name` is not a DNS name",
        ),
        (
            format!("{ftp}tls_server_names = [\"ftp.example.com\"]\n"),
            "tls_server_names: SNI names need TLS toward clients",
        ),
        (
            format!("{ftp}{backend}backend_tls_client_cert = \"tests/data/config/tls/cert.pem\"\n"),
            "backend_tls_client_key: backend_tls_client_cert is set but backend_tls_client_key is not",
        ),
        (
            format!(
                "{ftp}backend_tls_client_cert = \"tests/data/config/tls/cert.pem\"\n\
                 backend_tls_client_key = \"tests/data/config/tls/key.pem\"\n"
            ),
            "backend_tls_client_cert: a client certificate toward backends needs backend_tls",
        ),
        (
            format!(
                "{ftp}{backend}backend_tls_client_cert = \"/nonexistent/client.pem\"\n\
                 backend_tls_client_key = \"tests/data/config/tls/key.pem\"\n"
            ),
            "backend_tls_client_cert: /nonexistent/client.pem: cannot read",
        ),
        (
            format!(
                "{ftp}{backend}backend_tls_client_cert = \"tests/data/config/tls/cert.pem\"\n\
                 backend_tls_client_key = {:?}\n",
                other_key.display().to_string()
            ),
            "backend_tls_client_key: certificate and key do not fit together",
        ),
    ];
    for (text, want) in cases {
        let e = check(&text).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}\n{text}");
    }
}

#[test]
fn sftp_backends_pools_and_keys() {
    use crate::config::{split_backend_name, BackendProtocol};
    assert_eq!(
        split_backend_name("sftp://h.example"),
        (BackendProtocol::Sftp, "h.example:22".into())
    );
    assert_eq!(
        split_backend_name("SFTP://10.0.0.5:2222"),
        (BackendProtocol::Sftp, "10.0.0.5:2222".into())
    );
    assert_eq!(
        split_backend_name("sftp://[::1]"),
        (BackendProtocol::Sftp, "[::1]:22".into())
    );
    assert_eq!(
        split_backend_name("10.0.0.5:21"),
        (BackendProtocol::Ftp, "10.0.0.5:21".into())
    );
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(
        &kh,
        "127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6LE9cMXnylSZOc07ujNOGR8hPhMrYOi8EHtQjfSh4Q\n",
    )
    .unwrap();
    let base = "listen = [\"127.0.0.1:2121\"]\n";
    let known = format!("sftp_known_hosts = {:?}\n", kh.display().to_string());
    // Without sftp_known_hosts: an error naming the key.
    let e = check(&format!("{base}backends = [\"sftp://127.0.0.1:2222\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sftp_known_hosts") && e.contains("--sftp-known-hosts"),
        "{e}"
    );
    // A mixed pool: an error naming the key.
    let e = check(&format!(
        "{base}{known}backends = [\"127.0.0.1:21\", \"sftp://127.0.0.1:2222\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("t.toml:3: backends:"), "{e}");
    assert!(e.contains("a pool is all FTP or all SFTP"), "{e}");
    let e = check(&format!(
        "{base}{known}backends = [\"127.0.0.1:21\"]\n[pool.s]\nbackends = [\"sftp://127.0.0.1:22\", \"127.0.0.1:2021\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pool: [pool.s]: `sftp://127.0.0.1:22` is an SFTP server"),
        "{e}"
    );
    // A plain TCP pool cannot hold sftp:// members.
    let e = check(&format!(
        "{known}[pool.ssh]\nbackends = [\"sftp://127.0.0.1:22\"]\n[tcp.x]\nlisten = [\"127.0.0.1:2222\"]\npool = \"ssh\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("sftp:// members are for FTP clients"), "{e}");
    // Valid: the pool, its keys, and `check` prints it back.
    let c = check(&format!(
        "{base}{known}backends = [\"sftp://127.0.0.1:2222\", \"sftp://127.0.0.1\"]\n"
    ))
    .unwrap();
    assert!(c.has_sftp());
    assert_eq!(c.backends[0].protocol, BackendProtocol::Sftp);
    assert_eq!(c.backends[1].addr.port(), 22);
    assert_eq!(c.backends[0].host(), "127.0.0.1");
    assert_eq!(c.backends[0].label(), "sftp://127.0.0.1:2222");
    assert!(!c.backends[0].is_hostname());
    assert_eq!(c.sftp_known_hosts.as_ref().unwrap().len(), 1);
    // A host name: one member per address, re-resolved under its name
    // (the lookup strips `sftp://`; see `split_backend_name`).
    let h = check(&format!(
        "{base}{known}backends = [\"sftp://localhost:2222\"]\nbackend_weights = {{ \"sftp://localhost:2222\" = 3 }}\n"
    ))
    .unwrap();
    assert!(h.backends[0].is_hostname());
    assert_eq!(h.backends[0].host(), "localhost");
    assert_eq!(h.backends[0].weight, 3);
    assert!(h.backends[0].label().starts_with("sftp://localhost:2222@"));
    let mut resolved = std::collections::BTreeMap::new();
    resolved.insert(
        "sftp://localhost:2222".to_owned(),
        vec!["127.0.0.7:2222".parse::<SocketAddr>().unwrap()],
    );
    let moved = h.with_resolved(&resolved).unwrap();
    assert_eq!(moved.backends[0].addr.to_string(), "127.0.0.7:2222");
    assert_eq!(moved.backends[0].protocol, BackendProtocol::Sftp);
    assert_eq!(moved.backends[0].weight, 3);
    let printed = c.to_toml();
    assert!(printed.contains("sftp_known_hosts = "), "{printed}");
    assert!(
        printed.contains("backends = [\"sftp://127.0.0.1:2222\", \"sftp://127.0.0.1\"]"),
        "{printed}"
    );
    // A per-user key must be encrypted.
    let key = dir.path().join("id");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output();
    if out.is_ok_and(|o| o.status.success()) {
        let e = check(&format!(
            "{base}{known}backends = [\"sftp://127.0.0.1:2222\"]\n[sftp_user_key]\nalice = {:?}\n",
            key.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not encrypted"), "{e}");
    }
}
