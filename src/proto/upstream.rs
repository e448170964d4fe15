//! ftpgate's own conversation with a backend as an FTP client: the greeting,
//! `AUTH TLS` and its handshake, `PBSZ 0` and `PROT`, a login, `QUIT`.
//!
//! One conversation serves sessions (before the client's commands flow)
//! and health checks alike, so both read the greeting, take a 234 and
//! refuse bytes that follow it the same way. [`Chat`] decides; its caller
//! sends the lines, reads the replies and runs the TLS handshake. No I/O
//! and no clock here.

use bytes::Bytes;

use super::reply::Reply;

/// What a conversation does after the greeting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `AUTH TLS`, then a TLS handshake (explicit TLS toward the backend).
    pub starttls: bool,
    /// `PBSZ 0` then `PROT P` (`true`) or `PROT C` (`false`), once the
    /// control connection is inside TLS (RFC 4217 9, 10).
    pub protect: Option<bool>,
    /// `USER`, then `PASS` when asked (331).
    pub login: Option<Login>,
}

/// A login the conversation completes.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// Sent with `USER`.
    pub user: String,
    /// Sent with `PASS` after a 331; never printed.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"****")
            .finish()
    }
}

/// What the conversation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The 220 greeting.
    Greeting,
    /// The reply to `AUTH TLS`.
    AuthTlsReply,
    /// The caller's TLS handshake ([`Chat::on_tls`]).
    Handshake,
    /// The reply to `PBSZ 0`.
    PbszReply,
    /// The reply to `PROT`.
    ProtReply,
    /// The reply to `USER`.
    UserReply,
    /// The reply to `PASS`.
    PassReply,
    /// Nothing: the plan is complete.
    Done,
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send this line (CRLF included) and feed the reply back.
    Send(Bytes),
    /// Run the TLS handshake on the control connection, then call [`Chat::on_tls`].
    StartTls,
    /// The plan is complete; the backend's greeting, for whoever shows it.
    Done(Reply),
}

/// Why a conversation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// A greeting other than 220 (such as `421 Too many users`).
    #[error("greeting was `{}`, expected 220", .0.text_lossy())]
    Greeting(Reply),
    /// `AUTH TLS` answered with something other than 234.
    #[error("AUTH TLS refused: {}", .0.text_lossy())]
    AuthTlsRefused(Reply),
    /// Bytes arrived after 234, before the handshake (RFC 4217 4: the
    /// handshake follows the reply at once; what comes between is plaintext
    /// that would be read as if protected, the backend side of CVE-2011-0411).
    #[error("bytes after the 234 reply, before the TLS handshake")]
    BytesAfter234,
    /// `PBSZ` or `PROT` refused.
    #[error("`{command}` refused: {}", .reply.text_lossy())]
    Refused {
        /// The command (never a password).
        command: &'static str,
        /// The backend's reply.
        reply: Reply,
    },
    /// `USER` or `PASS` answered with something other than 331 or 230.
    #[error("login as `{user}` refused: {}", .reply.text_lossy())]
    LoginRefused {
        /// The user name (never the password).
        user: String,
        /// The backend's reply.
        reply: Reply,
    },
}

/// One conversation, from the greeting to the end of its plan.
#[derive(Debug, Clone)]
pub struct Chat {
    plan: Plan,
    expect: Expect,
    greeting: Option<Reply>,
    /// The control connection is inside TLS (implicit from the start, or
    /// after the handshake).
    tls: bool,
}

impl Chat {
    /// A conversation on a fresh connection; `tls`: the connection is
    /// already inside TLS (an implicit-TLS backend).
    pub fn new(plan: Plan, tls: bool) -> Chat {
        Chat {
            plan,
            expect: Expect::Greeting,
            greeting: None,
            tls,
        }
    }

    /// What the conversation waits for.
    pub fn expect(&self) -> Expect {
        self.expect
    }

    /// Whether the control connection is inside TLS yet.
    pub fn in_tls(&self) -> bool {
        self.tls
    }

    /// Takes the backend's next reply. `buffered` is how many bytes the
    /// caller already holds after it (they must be none after a 234).
    /// Preliminary (1yz) replies are skipped (RFC 959 4.2: a 120 may come
    /// before the 220). `Ok(None)`: nothing to do yet.
    pub fn on_reply(&mut self, reply: &Reply, buffered: usize) -> Result<Option<Next>, ChatError> {
        if reply.is_preliminary() {
            return Ok(None);
        }
        let next = match self.expect {
            Expect::Greeting => {
                if reply.code != 220 {
                    return Err(ChatError::Greeting(reply.clone()));
                }
                self.greeting = Some(reply.clone());
                self.after_greeting()
            }
            Expect::AuthTlsReply => {
                if reply.code != 234 {
                    return Err(ChatError::AuthTlsRefused(reply.clone()));
                }
                if buffered > 0 {
                    return Err(ChatError::BytesAfter234);
                }
                self.expect = Expect::Handshake;
                Next::StartTls
            }
            Expect::PbszReply | Expect::ProtReply => {
                let command = if self.expect == Expect::PbszReply {
                    "PBSZ 0"
                } else {
                    "PROT"
                };
                if !reply.is_success() {
                    return Err(ChatError::Refused {
                        command,
                        reply: reply.clone(),
                    });
                }
                if self.expect == Expect::PbszReply {
                    self.expect = Expect::ProtReply;
                    let p = if self.plan.protect == Some(true) {
                        "PROT P\r\n"
                    } else {
                        "PROT C\r\n"
                    };
                    Next::Send(Bytes::from_static(p.as_bytes()))
                } else {
                    self.login_or_done()
                }
            }
            Expect::UserReply | Expect::PassReply => {
                let login = self.plan.login.as_ref();
                let refused = || ChatError::LoginRefused {
                    user: login.map(|l| l.user.clone()).unwrap_or_default(),
                    reply: reply.clone(),
                };
                match (self.expect, reply.code) {
                    (_, 230) => self.done(),
                    (Expect::UserReply, 331) => {
                        self.expect = Expect::PassReply;
                        let pass = login.map(|l| l.password.as_str()).unwrap_or_default();
                        Next::Send(Bytes::from(format!("PASS {pass}\r\n")))
                    }
                    _ => return Err(refused()),
                }
            }
            // A reply nobody asked for: not the conversation's business.
            Expect::Handshake | Expect::Done => return Ok(None),
        };
        Ok(Some(next))
    }

    /// The caller's TLS handshake succeeded.
    pub fn on_tls(&mut self) -> Next {
        self.tls = true;
        self.protection()
    }

    fn after_greeting(&mut self) -> Next {
        if self.plan.starttls && !self.tls {
            self.expect = Expect::AuthTlsReply;
            return Next::Send(Bytes::from_static(b"AUTH TLS\r\n"));
        }
        self.protection()
    }

    fn protection(&mut self) -> Next {
        if self.tls && self.plan.protect.is_some() {
            self.expect = Expect::PbszReply;
            return Next::Send(Bytes::from_static(b"PBSZ 0\r\n"));
        }
        self.login_or_done()
    }

    fn login_or_done(&mut self) -> Next {
        match &self.plan.login {
            Some(l) => {
                self.expect = Expect::UserReply;
                Next::Send(Bytes::from(format!("USER {}\r\n", l.user)))
            }
            None => self.done(),
        }
    }

    fn done(&mut self) -> Next {
        self.expect = Expect::Done;
        Next::Done(
            self.greeting
                .clone()
                .unwrap_or_else(|| Reply::from_line("220".into())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(line: &str) -> Reply {
        Reply::from_line(line.into())
    }

    fn send(n: Option<Next>) -> String {
        match n {
            Some(Next::Send(b)) => String::from_utf8_lossy(&b).trim_end().to_owned(),
            other => panic!("expected a line to send, got {other:?}"),
        }
    }

    #[test]
    fn explicit_tls_protection_and_login() {
        let plan = Plan {
            starttls: true,
            protect: Some(true),
            login: Some(Login {
                user: "u".into(),
                password: "p".into(),
            }),
        };
        let mut c = Chat::new(plan, false);
        assert_eq!(c.on_reply(&r("120 soon"), 0), Ok(None));
        assert_eq!(send(c.on_reply(&r("220 hi"), 0).unwrap()), "AUTH TLS");
        assert_eq!(c.on_reply(&r("234 go"), 0).unwrap(), Some(Next::StartTls));
        assert_eq!(c.expect(), Expect::Handshake);
        let Next::Send(pbsz) = c.on_tls() else {
            panic!()
        };
        assert_eq!(&pbsz[..], b"PBSZ 0\r\n");
        assert_eq!(send(c.on_reply(&r("200 ok"), 0).unwrap()), "PROT P");
        assert_eq!(send(c.on_reply(&r("200 ok"), 0).unwrap()), "USER u");
        assert_eq!(send(c.on_reply(&r("331 pass"), 0).unwrap()), "PASS p");
        assert_eq!(
            c.on_reply(&r("230 in"), 0).unwrap(),
            Some(Next::Done(r("220 hi")))
        );
        assert_eq!(
            format!("{:?}", c.plan.login),
            "Some(Login { user: \"u\", password: \"****\" })"
        );
    }

    #[test]
    fn implicit_tls_goes_straight_to_protection() {
        let plan = Plan {
            starttls: false,
            protect: Some(false),
            login: None,
        };
        let mut c = Chat::new(plan, true);
        assert_eq!(send(c.on_reply(&r("220 hi"), 0).unwrap()), "PBSZ 0");
        assert_eq!(send(c.on_reply(&r("200 ok"), 0).unwrap()), "PROT C");
        assert!(matches!(
            c.on_reply(&r("200 ok"), 0),
            Ok(Some(Next::Done(_)))
        ));
    }

    #[test]
    fn refusals() {
        let tls = Plan {
            starttls: true,
            ..Plan::default()
        };
        let mut c = Chat::new(tls.clone(), false);
        assert!(matches!(
            c.on_reply(&r("421 busy"), 0),
            Err(ChatError::Greeting(_))
        ));
        let mut c = Chat::new(tls.clone(), false);
        c.on_reply(&r("220 hi"), 0).unwrap();
        assert!(matches!(
            c.on_reply(&r("500 no"), 0),
            Err(ChatError::AuthTlsRefused(_))
        ));
        let mut c = Chat::new(tls, false);
        c.on_reply(&r("220 hi"), 0).unwrap();
        assert_eq!(c.on_reply(&r("234 go"), 12), Err(ChatError::BytesAfter234));
        let mut c = Chat::new(
            Plan {
                login: Some(Login {
                    user: "u".into(),
                    password: "p".into(),
                }),
                ..Plan::default()
            },
            false,
        );
        c.on_reply(&r("220 hi"), 0).unwrap();
        assert!(matches!(
            c.on_reply(&r("530 no"), 0),
            Err(ChatError::LoginRefused { .. })
        ));
    }

    #[test]
    fn a_plain_plan_is_done_at_the_greeting() {
        let mut c = Chat::new(Plan::default(), false);
        assert_eq!(
            c.on_reply(&r("220 hi"), 0).unwrap(),
            Some(Next::Done(r("220 hi")))
        );
        assert_eq!(c.on_reply(&r("200 stray"), 0), Ok(None));
    }
}
