//! The client's side of TLS as the session sees it: the certificate it
//! showed (mutual TLS), whose names USER must match with
//! `tls_client_cert_user`, and the commands that would weaken protection
//! once it is on. No I/O here.
//!
//! RFC 4217 lets a client step down from protection: `PROT C` after
//! `PROT P` (section 9), `CCC` (section 5), and `REIN`, after which the TLS
//! session is cleared and both connections revert to clear text (section
//! 13). ftpgate keeps the control connection protected for the session's
//! whole life, so it answers `CCC` with 533 (`commands.rs`) and `REIN`
//! inside TLS with 502 (RFC 959 lets a server leave `REIN` unimplemented),
//! and where TLS is required (`tls = "required"`, implicit TLS) it answers
//! `PROT C` after `PROT P` with 534 (RFC 2228: denied for policy reasons).

use std::time::Duration;

use super::super::command::Command;
use super::{Control, Note};
use crate::error::{reply_for, Error, ErrorKind};

impl Control {
    /// Whether the certificate lets `user` log in: always without
    /// `tls_client_cert_user`; with it, only a name of the certificate the
    /// client showed (its CN, or an email SAN, compared byte for byte).
    pub(super) fn cert_allows(&self, user: &str) -> bool {
        !self.policy.cert_user
            || self
                .client_cert
                .as_ref()
                .is_some_and(|c| c.user_names.iter().any(|n| n == user))
    }

    /// USER that is not a name of the client's certificate: 530 from
    /// ftpgate (the backend never sees it), counted as a failed login. The
    /// session's user stays what the backend knows: after `USER a` (331)
    /// and a refused `USER b`, a `PASS` logs in as `a`, and the logs must
    /// say so.
    pub(super) fn refuse_cert_user(&mut self, user: String, now: Duration) {
        self.note(Note::CertUserMismatch {
            user: user.clone(),
            subject: self.client_cert.as_ref().map(|c| c.subject.clone()),
        });
        self.local(reply_for(&Error::client(ErrorKind::CertUserMismatch)).0);
        // The failed-login note names the refused user.
        let known = self.user.replace(user);
        self.login_failed(now);
        self.user = known;
    }

    /// Whether `PROT C` would downgrade the data connections: TLS is
    /// required here and `PROT P` is in effect (an implicit-TLS session
    /// starts with it).
    pub(super) fn refuses_clear_data(&self) -> bool {
        self.policy.tls_required && self.prot_private
    }

    /// Refuses a command that would weaken protection with `kind`'s reply.
    pub(super) fn refuse_downgrade(&mut self, cmd: &Command, kind: ErrorKind) {
        self.note(Note::DowngradeRefused {
            line: String::from_utf8_lossy(&cmd.line).into_owned(),
        });
        self.local_error(Error::client(kind));
    }
}
