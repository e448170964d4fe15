//! `user_lookup_url`: the template as written, checked once when the
//! configuration is validated, and filled in for each login. No I/O here.
//!
//! Placeholders (`{user}`, `{client_ip}`, `{listener}`) may stand in the
//! path and the query only, never in the scheme or the host: a client must
//! not choose where ftpgate sends its request. Their values are
//! percent-encoded byte by byte (RFC 3986 2.1), keeping only the unreserved
//! characters (2.3), so a user name cannot add a path segment, a query
//! parameter or a fragment.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// One piece of the path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Written as is.
    Literal(String),
    /// The name the client sent with `USER`.
    User,
    /// The client's IP address (from the PROXY header where there is one).
    ClientIp,
    /// The listener's address, `IP:PORT`.
    Listener,
}

/// A parsed `user_lookup_url`. Invariant: filled in with any values, the
/// path and query form a valid HTTP request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// As written (logs, `ftpgate check`).
    text: String,
    /// `https://`.
    https: bool,
    /// Host name or IP address (an IPv6 address without its brackets).
    host: String,
    /// The port, 80 or 443 unless written.
    port: u16,
    /// Whether the port was written (the `Host` header then names it).
    port_written: bool,
    /// The path and query, `/` first.
    parts: Vec<Part>,
}

/// The values of one login.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// The name sent with `USER`.
    pub user: &'a str,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// The listener the client came in on.
    pub listener: SocketAddr,
}

/// Percent-encodes every byte but the unreserved characters (RFC 3986 2.3).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl UrlTemplate {
    /// Parses and checks a template; `Err` says what is wrong in the
    /// operator's words.
    pub fn parse(text: &str) -> Result<UrlTemplate, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("http://") {
            (false, &t["http://".len()..])
        } else if lower.starts_with("https://") {
            (true, &t["https://".len()..])
        } else {
            return Err(format!("`{t}` is not an http:// or https:// URL"));
        };
        if let Some(c) = t.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "`{t}` has {c:?} in it: write spaces and other characters percent-encoded"
            ));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains(['{', '}']) {
            return Err(format!(
                "`{t}`: placeholders may stand in the path and query only, not in the host"
            ));
        }
        if authority.contains('@') {
            return Err(format!(
                "`{t}`: user names and passwords in the URL are not supported"
            ));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| {
            format!("`{t}`: `{authority}` is not a host, host:port or [IPv6]:port")
        })?;
        if tail.contains('#') {
            return Err(format!(
                "`{t}`: a fragment (#...) is never sent to the server; leave it out"
            ));
        }
        let tail = match tail {
            "" => "/".to_owned(),
            q if q.starts_with('?') => format!("/{q}"),
            p => p.to_owned(),
        };
        let parts = parse_parts(&tail).map_err(|e| format!("`{t}`: {e}"))?;
        let url = UrlTemplate {
            text: t.to_owned(),
            https,
            host: host.to_owned(),
            port: port.unwrap_or(if https { 443 } else { 80 }),
            port_written: port.is_some(),
            parts,
        };
        // Literal characters an HTTP request target cannot carry (`"`, `<`,
        // `|`, ...): found now rather than at the first login.
        let sample = Login {
            user: "u",
            client_ip: IpAddr::from([192, 0, 2, 1]),
            listener: SocketAddr::from(([192, 0, 2, 1], 21)),
        };
        if url.target(&sample).parse::<hyper::Uri>().is_err() {
            return Err(format!(
                "`{t}`: the path or query has characters a URL cannot carry unencoded"
            ));
        }
        Ok(url)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the service is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host to connect to (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `Host` header (RFC 9110 7.2): the port only when written.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port_written {
            format!("{host}:{}", self.port)
        } else {
            host
        }
    }

    /// The request target (path and query) for one login, every value
    /// percent-encoded. Also the cache key: the answer may depend on any
    /// of the values.
    pub fn target(&self, login: &Login<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::User => out.push_str(&encode(login.user)),
                Part::ClientIp => out.push_str(&encode(&login.client_ip.to_string())),
                Part::Listener => out.push_str(&encode(&login.listener.to_string())),
            }
        }
        out
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `None` if malformed.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return None,
        },
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && (host.contains(':')
            || host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c)));
    name_ok.then_some((host, port))
}

/// The path and query with their placeholders.
fn parse_parts(tail: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = tail;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("a `}` without its `{`".into());
        }
        literal.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return Err("a `{` without its `}`".into());
        };
        let name = &rest[open + 1..open + close];
        let part = match name {
            "user" => Part::User,
            "client_ip" => Part::ClientIp,
            "listener" => Part::Listener,
            other => {
                return Err(format!(
                "unknown placeholder `{{{other}}}` (known: {{user}}, {{client_ip}}, {{listener}})"
            ))
            }
        };
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(part);
        rest = &rest[open + close + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: &str) -> Login<'_> {
        Login {
            user,
            client_ip: "2001:db8::7".parse().unwrap(),
            listener: "127.0.0.1:2121".parse().unwrap(),
        }
    }

    #[test]
    fn fills_in_every_placeholder_encoded() {
        let u = UrlTemplate::parse(
            "http://127.0.0.1:8080/ftp-route?user={user}&ip={client_ip}&on={listener}",
        )
        .unwrap();
        assert!(!u.is_https());
        assert_eq!((u.host(), u.port()), ("127.0.0.1", 8080));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        assert_eq!(
            u.target(&login("alice")),
            "/ftp-route?user=alice&ip=2001%3Adb8%3A%3A7&on=127.0.0.1%3A2121"
        );
    }

    /// A user name cannot reach outside its own value: no new parameter,
    /// path segment, fragment or line.
    #[test]
    fn hostile_user_names_stay_one_value() {
        let u = UrlTemplate::parse("https://idp.example/users/{user}/route").unwrap();
        let cases = [
            ("a&admin=1", "a%26admin%3D1"),
            ("../../etc", "..%2F..%2Fetc"),
            ("x#frag", "x%23frag"),
            ("x?y", "x%3Fy"),
            ("a b+c", "a%20b%2Bc"),
            ("bob\r\nHost: evil", "bob%0D%0AHost%3A%20evil"),
            ("j\u{fc}rgen", "j%C3%BCrgen"),
            ("%41", "%2541"),
            ("t~_.-9", "t~_.-9"),
        ];
        for (user, want) in cases {
            assert_eq!(
                u.target(&login(user)),
                format!("/users/{want}/route"),
                "{user:?}"
            );
            assert!(u.target(&login(user)).parse::<hyper::Uri>().is_ok());
        }
    }

    #[test]
    fn defaults_and_host_forms() {
        let cases = [
            ("http://svc", "svc", 80, "svc", "/"),
            ("https://svc", "svc", 443, "svc", "/"),
            (
                "HTTPS://svc:8443?u={user}",
                "svc",
                8443,
                "svc:8443",
                "/?u=x",
            ),
            (
                "http://[::1]:9000/r/{user}",
                "::1",
                9000,
                "[::1]:9000",
                "/r/x",
            ),
            ("http://[::1]/r", "::1", 80, "[::1]", "/r"),
            (
                "http://my-idp.internal_x/r",
                "my-idp.internal_x",
                80,
                "my-idp.internal_x",
                "/r",
            ),
        ];
        for (text, host, port, header, target) in cases {
            let u = UrlTemplate::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(u.host(), host, "{text}");
            assert_eq!(u.port(), port, "{text}");
            assert_eq!(u.host_header(), header, "{text}");
            assert_eq!(u.target(&login("x")), target, "{text}");
            assert_eq!(u.as_str(), text);
        }
        assert!(UrlTemplate::parse("https://svc").unwrap().is_https());
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("ftp://svc/{user}", "not an http:// or https:// URL"),
            ("svc/{user}", "not an http:// or https:// URL"),
            ("http://{user}.idp/r", "not in the host"),
            ("http://idp:{user}/r", "not in the host"),
            ("http://a:b@idp/r", "user names and passwords"),
            ("http://idp/r?u={usr}", "unknown placeholder `{usr}`"),
            ("http://idp/r?u={user", "a `{` without its `}`"),
            ("http://idp/r?u=user}", "a `}` without its `{`"),
            ("http://idp/r#x", "fragment"),
            ("http://idp/r?u={user} x", "has ' ' in it"),
            ("http://idp:0/r", "is not a host"),
            ("http://idp:99999/r", "is not a host"),
            ("http:///r", "is not a host"),
            ("http://[nope]/r", "is not a host"),
            ("http://idp/r?u=\"{user}\"", "cannot carry"),
        ];
        for (text, want) in cases {
            let e = UrlTemplate::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
