//! What the lookup service's answer means: the status and body of its
//! reply become an [`Outcome`]. No I/O here.
//!
//! - `200` with `{"pool": "NAME"}` or `{"backend": "HOST:PORT"}`, either
//!   optionally with `"user": "NAME"` (the name to send to the backend):
//!   [`Outcome::Found`]. Other members are ignored, so the service may add
//!   its own.
//! - `404`: [`Outcome::Unknown`], the user is refused like an unmapped one.
//! - Anything else, and a `200` whose body is not one of the above:
//!   [`Outcome::Failed`], the login is refused with `421` (fail closed).

use std::net::SocketAddr;

use serde::Deserialize;

/// Longest user name the service may ask ftpgate to send.
pub const MAX_USER_LEN: usize = 256;

/// A backend the service names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendRef {
    /// `IP:PORT`: matched against pool members by address.
    Addr(SocketAddr),
    /// `HOST:PORT`: matched against pool members by the name they were
    /// written with; resolved only with `user_lookup_any_backend`.
    Name {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl std::fmt::Display for BackendRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendRef::Addr(a) => a.fmt(f),
            BackendRef::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Where the service sends a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A configured pool, by name.
    Pool(String),
    /// One backend.
    Backend(BackendRef),
}

/// A usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where the user goes.
    pub target: Target,
    /// The name to send with `USER` instead of the client's.
    pub user: Option<String>,
}

/// Why a lookup gave no answer (the cause logged; never cached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A status other than 200 or 404.
    Status(u16),
    /// No complete answer within `user_lookup_timeout`.
    Timeout(std::time::Duration),
    /// A 200 whose body is not a usable answer.
    Malformed(String),
    /// Resolving, connecting, TLS or HTTP failed.
    Io(String),
}

impl Failure {
    /// The `outcome` label of `ftpgate_user_lookups_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Status(_) => "bad_status",
            Failure::Timeout(_) => "timeout",
            Failure::Malformed(_) => "malformed",
            Failure::Io(_) => "io",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "the service answered HTTP {s}"),
            Failure::Timeout(t) => write!(f, "no answer within {t:?} (user_lookup_timeout)"),
            Failure::Malformed(why) => write!(f, "unusable answer: {why}"),
            Failure::Io(why) => f.write_str(why),
        }
    }
}

/// What one lookup concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service routes the user.
    Found(Found),
    /// `404`: the service does not know the user.
    Unknown,
    /// No answer to act on.
    Failed(Failure),
}

impl Outcome {
    /// The `outcome` label of `ftpgate_user_lookups_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Found(_) => "found",
            Outcome::Unknown => "unknown",
            Outcome::Failed(f) => f.label(),
        }
    }
}

/// The body of a 200, as the service writes it.
#[derive(Debug, Deserialize)]
struct Body {
    pool: Option<String>,
    backend: Option<String>,
    user: Option<String>,
}

/// The outcome of a reply with `status` and `body`.
pub fn parse_answer(status: u16, body: &[u8]) -> Outcome {
    match status {
        200 => match parse_body(body) {
            Ok(found) => Outcome::Found(found),
            Err(why) => Outcome::Failed(Failure::Malformed(why)),
        },
        404 => Outcome::Unknown,
        s => Outcome::Failed(Failure::Status(s)),
    }
}

fn parse_body(body: &[u8]) -> Result<Found, String> {
    let b: Body = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not a JSON object with string members ({e}); it starts {:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        )
    })?;
    let target = match (b.pool, b.backend) {
        (Some(p), None) if !p.trim().is_empty() => Target::Pool(p.trim().to_owned()),
        (None, Some(a)) => Target::Backend(
            parse_backend(a.trim())
                .ok_or_else(|| format!("\"backend\": {a:?} is not HOST:PORT"))?,
        ),
        (Some(_), Some(_)) => return Err("both \"pool\" and \"backend\"; give one".into()),
        (None, None) => return Err("neither \"pool\" nor \"backend\"".into()),
        (Some(_), None) => return Err("\"pool\" is empty".into()),
    };
    let user = match b.user {
        None => None,
        // Sent on the control connection as `USER <name>\r\n`: no line
        // breaks or other control characters may ride along.
        Some(u) if u.is_empty() || u.len() > MAX_USER_LEN || u.chars().any(char::is_control) => {
            return Err(format!(
                "\"user\": {u:?} is not a user name (1 to {MAX_USER_LEN} bytes, no control characters)"
            ))
        }
        Some(u) => Some(u),
    };
    Ok(Found { target, user })
}

/// `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`.
pub fn parse_backend(s: &str) -> Option<BackendRef> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return (a.port() > 0).then(|| BackendRef::Addr(crate::net::canonical(a)));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p > 0)?;
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c));
    ok.then(|| BackendRef::Name {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(target: Target, user: Option<&str>) -> Outcome {
        Outcome::Found(Found {
            target,
            user: user.map(str::to_owned),
        })
    }

    #[test]
    fn answers() {
        let pool = |p: &str| Target::Pool(p.into());
        let addr = |a: &str| Target::Backend(BackendRef::Addr(a.parse().unwrap()));
        let cases: Vec<(u16, &str, Outcome)> = vec![
            (200, r#"{"pool": "acme"}"#, found(pool("acme"), None)),
            (200, r#"{"pool": " acme "}"#, found(pool("acme"), None)),
            (
                200,
                r#"{"backend": "10.0.2.11:21", "user": "alice"}"#,
                found(addr("10.0.2.11:21"), Some("alice")),
            ),
            (
                200,
                r#"{"backend": "[2001:db8::1]:2121"}"#,
                found(addr("[2001:db8::1]:2121"), None),
            ),
            (
                200,
                r#"{"backend": "FTP-1.Tenant.example:21"}"#,
                found(
                    Target::Backend(BackendRef::Name {
                        host: "ftp-1.tenant.example".into(),
                        port: 21,
                    }),
                    None,
                ),
            ),
            // Members the service adds for itself are ignored; null is absent.
            (
                200,
                r#"{"pool": "acme", "tenant": 7, "user": null, "x": [1]}"#,
                found(pool("acme"), None),
            ),
            (404, "", Outcome::Unknown),
            (404, "<html>not found</html>", Outcome::Unknown),
            (
                500,
                r#"{"pool": "acme"}"#,
                Outcome::Failed(Failure::Status(500)),
            ),
            (204, "", Outcome::Failed(Failure::Status(204))),
            (301, "", Outcome::Failed(Failure::Status(301))),
            (403, "", Outcome::Failed(Failure::Status(403))),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                parse_answer(status, body.as_bytes()),
                want,
                "{status} {body}"
            );
        }
    }

    #[test]
    fn malformed_bodies_say_why() {
        let cases = [
            ("", "not a JSON object"),
            ("pool=acme", "it starts \"pool=acme\""),
            (r#"["acme"]"#, "not a JSON object"),
            (r#"{"pool": 3}"#, "not a JSON object with string members"),
            (r#"{"pool": "a", "backend": "10.0.0.1:21"}"#, "both"),
            (r#"{}"#, "neither"),
            (r#"{"user": "bob"}"#, "neither"),
            (r#"{"pool": "  "}"#, "\"pool\" is empty"),
            (r#"{"backend": "10.0.0.1"}"#, "is not HOST:PORT"),
            (r#"{"backend": "10.0.0.1:0"}"#, "is not HOST:PORT"),
            (r#"{"backend": "a b:21"}"#, "is not HOST:PORT"),
            (r#"{"pool": "a", "user": ""}"#, "is not a user name"),
            (
                r#"{"pool": "a", "user": "bob\r\nDELE x"}"#,
                "is not a user name",
            ),
            (
                r#"{"pool": "a", "user": "bob\u0000"}"#,
                "is not a user name",
            ),
            (r#"{"pool": "a"} trailing"#, "not a JSON object"),
        ];
        for (body, want) in cases {
            match parse_answer(200, body.as_bytes()) {
                Outcome::Failed(Failure::Malformed(why)) => {
                    assert!(why.contains(want), "{body}: {why}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let long = format!(
            r#"{{"pool": "a", "user": "{}"}}"#,
            "u".repeat(MAX_USER_LEN + 1)
        );
        assert!(matches!(
            parse_answer(200, long.as_bytes()),
            Outcome::Failed(Failure::Malformed(_))
        ));
    }

    #[test]
    fn labels_and_causes() {
        let t = Failure::Timeout(std::time::Duration::from_secs(2));
        assert_eq!(t.label(), "timeout");
        assert_eq!(t.to_string(), "no answer within 2s (user_lookup_timeout)");
        assert_eq!(
            Failure::Status(500).to_string(),
            "the service answered HTTP 500"
        );
        assert_eq!(Outcome::Unknown.label(), "unknown");
        assert_eq!(parse_answer(200, b"{}").label(), "malformed");
        assert_eq!(parse_answer(503, b"").label(), "bad_status");
    }
}
