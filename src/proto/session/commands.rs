//! What the session does with each client command.
//!
//! Commands are taken one at a time, in order; one that makes ftpgate talk
//! to the connections itself (PASV, EPSV, PORT, EPRT, AUTH) waits until
//! every earlier reply is out. ftpgate answers what it terminates itself
//! (AUTH, PBSZ, PROT, CCC, REIN inside TLS, and everything before per-user
//! routing picks a backend); the rest goes to the backend. No I/O here.

use std::time::Duration;

use bytes::Bytes;

use super::super::command::{
    parse_command, parse_command_bytes, parse_epsv_arg, Command, EpsvArg, Verb,
};
use super::super::hostport::{parse_eprt_arg, parse_port_arg, HostPortError};
use super::super::line::Frame;
use super::super::reply::{Reply, ReplyCode};
use super::super::rewrite::{check_active_target, rewrite_feat, ClientPassive};
use super::{
    Awaiting, ClientLeg, Control, Deferred, Note, Own, Phase, Step, Transfer, TransferKind,
};
use crate::error::{End, Error, ErrorKind};

impl Control {
    /// One framed client line.
    pub(super) fn on_frame(&mut self, frame: Frame, now: Duration) {
        self.last_command = now;
        match frame {
            Frame::TooLong => {
                self.note(Note::LineTooLong);
                self.local_error(Error::client(ErrorKind::LineTooLong));
            }
            Frame::Line(line) => self.on_command(parse_command_bytes(&line), now),
        }
    }

    fn on_command(&mut self, cmd: Command, now: Duration) {
        self.quit_sent |= cmd.verb == Verb::Quit;
        let local_only = matches!(cmd.verb, Verb::Auth | Verb::Pbsz | Verb::Prot | Verb::Ccc);
        if self.backend.is_none() && !local_only && cmd.verb != Verb::User {
            return self.before_routing(&cmd);
        }
        match cmd.verb {
            v if v.is_data_setup() => match self.check_data_setup(&cmd) {
                Ok(Some(leg)) => self.deferred = Some(Box::new((Deferred::Data(leg), now))),
                Ok(None) => {}
                Err(e) => {
                    if matches!(e.kind, ErrorKind::ActiveRefused(_)) {
                        self.note(Note::BounceRefused {
                            line: String::from_utf8_lossy(&cmd.line).into_owned(),
                        });
                    }
                    self.local_error(e);
                }
            },
            v if v.is_transfer() && self.policy.tls_required && !self.prot_private => {
                // The prepared data connection will not be used.
                if let Some(p) = self.prepared.take() {
                    self.steps.push_back(Step::Cancel { gen: p.gen });
                }
                self.local_error(Error::client(ErrorKind::ProtectionRequired));
            }
            v if v.is_transfer() => self.start_transfer(&cmd),
            Verb::Abor => {
                if self.transfer.as_ref().is_some_and(|t| !t.over()) {
                    // The client no longer wants the data, and may have
                    // stopped reading it: reset both data legs now (as a direct
                    // server would close them) so the final reply is not held
                    // behind them; a held success becomes 426, since the data
                    // did not all arrive. This also unblocks a server stuck
                    // writing or reading data, so ABOR is forwarded as a plain
                    // line: pure-ftpd silently drops an `IAC IP IAC DM ABOR`
                    // line once its transfer has ended.
                    self.abort_transfer();
                    self.release_held();
                }
                self.forward(&cmd, Awaiting::Command(Verb::Abor));
            }
            // ftpgate terminates TLS itself: AUTH, PBSZ, PROT and CCC are
            // answered here and never reach the backend.
            Verb::Auth => match self.check_auth(&cmd) {
                Ok(()) => self.deferred = Some(Box::new((Deferred::Auth, now))),
                Err(e) => self.local_error(e),
            },
            Verb::Pbsz if self.client_tls => {
                self.local(Reply::new(ReplyCode::CommandOk, "PBSZ=0"));
            }
            Verb::Pbsz => self.local_error(Error::client(ErrorKind::PbszFirst)),
            Verb::Prot => self.on_prot(&cmd),
            Verb::Ccc => self.local_error(Error::client(ErrorKind::CccRefused)),
            Verb::Rein if self.client_tls => self.refuse_downgrade(&cmd, ErrorKind::ReinInsideTls),
            Verb::User | Verb::Pass if self.policy.tls_required && !self.client_tls => {
                self.note(Note::LoginBeforeTls);
                self.local_error(Error::client(ErrorKind::TlsRequired));
            }
            Verb::User if !self.cert_allows(&cmd.arg_str()) => {
                self.refuse_cert_user(cmd.arg_str(), now)
            }
            Verb::User if self.routed_user.is_some() || self.backend.is_none() => {
                self.route_user(&cmd)
            }
            Verb::User => {
                self.user = Some(cmd.arg_str());
                self.forward(&cmd, Awaiting::Command(Verb::User));
            }
            Verb::Type => {
                // The transfer log notes ASCII or binary; TYPE A N, A T, ... are ASCII.
                self.ascii = cmd
                    .arg_str()
                    .trim_start()
                    .to_ascii_uppercase()
                    .starts_with('A');
                self.forward(&cmd, Awaiting::Command(Verb::Type));
            }
            verb => self.forward(&cmd, Awaiting::Command(verb)),
        }
    }

    /// Sends the client's line to the backend and expects its reply.
    pub(super) fn forward(&mut self, cmd: &Command, awaiting: Awaiting) {
        self.order.expect(awaiting);
        let mut line = Vec::with_capacity(cmd.line.len() + 2);
        line.extend_from_slice(&cmd.line);
        line.extend_from_slice(b"\r\n");
        self.steps.push_back(Step::Send(Bytes::from(line)));
    }

    /// PROT: RFC 4217 wants PBSZ first; clients (ftplib's prot_c) skip it
    /// and every server accepts that, so only TLS is required.
    fn on_prot(&mut self, cmd: &Command) {
        let level = cmd.arg_str().trim().to_ascii_uppercase();
        if !self.client_tls {
            return self.local_error(Error::client(ErrorKind::PbszFirst));
        }
        if level != "P" && level != "C" {
            return self.local_error(Error::client(ErrorKind::ProtLevel));
        }
        if level == "C" && self.refuses_clear_data() {
            return self.refuse_downgrade(cmd, ErrorKind::ClearDataRefused);
        }
        self.prot_private = level == "P";
        let text = if self.prot_private {
            "PROT now Private."
        } else {
            "PROT now Clear."
        };
        self.local(Reply::new(ReplyCode::CommandOk, text));
    }

    /// A command before per-user routing has picked a backend: only what
    /// ftpgate can answer itself (USER picks the backend, elsewhere).
    fn before_routing(&mut self, cmd: &Command) {
        let word = cmd.verb_text.to_ascii_uppercase();
        let reply = match (cmd.verb, word.as_slice()) {
            (Verb::Quit, _) => {
                self.local(Reply::from_line("221 Goodbye.".into()));
                self.flush();
                return self.close(End::Quit);
            }
            (Verb::Feat, _) => {
                rewrite_feat(&Reply::from_line("211 End".into()), &self.features(), &[])
            }
            (_, b"SYST") => Reply::from_line("215 UNIX Type: L8".into()),
            (_, b"NOOP") => Reply::new(ReplyCode::CommandOk, "NOOP ok."),
            (Verb::Pass, _) => Reply::new(ReplyCode::BadSequence, "Login with USER first."),
            _ => Reply::new(ReplyCode::NotLoggedIn, "Please login with USER and PASS."),
        };
        self.local(reply);
    }

    /// USER under per-user routing: the driver picks the pool and a backend
    /// for this user and connects it ([`Step::Route`]); the backend's
    /// greeting is then consumed (and its TLS set up) and USER replayed.
    fn route_user(&mut self, cmd: &Command) {
        let user = cmd.arg_str();
        if self.backend.is_some() {
            if self.routed_user.as_deref() == Some(user.as_str()) {
                // The same USER again: the name routing chose to send (the
                // gateway strips `@host`; a user lookup may rename).
                return match self.routed_as.clone().filter(|sent| *sent != user) {
                    Some(sent) => {
                        let line = parse_command(format!("USER {sent}").as_bytes());
                        self.forward(&line, Awaiting::Command(Verb::User))
                    }
                    None => self.forward(cmd, Awaiting::Command(Verb::User)),
                };
            }
            if self.logged_in || !self.is_idle() {
                return self.local(Reply::new(
                    ReplyCode::NotLoggedIn,
                    "To log in as another user, open a new session.",
                ));
            }
            // A failed login, then another user: that user's own pool.
            self.steps.push_back(Step::Disconnect);
            self.backend = None;
            self.routed_user = None;
            self.routed_as = None;
        }
        self.user = Some(user.clone());
        self.own = Some(Box::new(Own::ExpectRoute { user: user.clone() }));
        self.steps.push_back(Step::Route { user });
    }

    /// Validates AUTH; `Ok`: answer 234 and shake hands once every earlier
    /// reply is out.
    fn check_auth(&self, cmd: &Command) -> Result<(), Error> {
        if self.client_tls {
            return Err(Error::client(ErrorKind::AlreadyTls));
        }
        if !self.policy.tls_offered {
            return Err(Error::client(ErrorKind::TlsUnsupported));
        }
        match cmd.arg_str().trim().to_ascii_uppercase().as_str() {
            // TLS-C and TLS-P are old drafts' names; SSL is what old clients send.
            "TLS" | "TLS-C" | "SSL" | "TLS-P" => Ok(()),
            _ => Err(Error::client(ErrorKind::AuthMechanism)),
        }
    }

    /// AUTH's turn: 234, then the handshake. Anything the client sent after
    /// AUTH in plaintext is not trusted into the protected session (command
    /// injection, CVE-2011-0411 style): it is discarded, never acted on.
    pub(super) fn start_client_tls(&mut self) {
        self.local(Reply::new(ReplyCode::AuthOk, "AUTH TLS successful."));
        self.flush();
        let injected = self.commands.buffered();
        if injected > 0 {
            self.note(Note::PlaintextDiscarded { bytes: injected });
            self.commands.buffer_mut().clear();
        }
        self.own = Some(Box::new(Own::ExpectClientTls));
        self.steps.push_back(Step::ClientTls);
    }

    pub(super) fn on_client_tls(&mut self, r: Result<Option<super::ClientCert>, String>) {
        self.own = None;
        match r {
            Ok(cert) => {
                self.client_tls = true;
                self.prot_private = false;
                self.client_cert = cert.map(Box::new);
            }
            Err(why) => {
                self.note(Note::TlsFailed {
                    side: "client",
                    why: why.clone(),
                });
                self.close(End::Error(Error::client(ErrorKind::TlsHandshake(why))));
            }
        }
    }

    /// Validates PASV/EPSV/PORT/EPRT. `Ok(None)`: answered locally.
    fn check_data_setup(&mut self, cmd: &Command) -> Result<Option<ClientLeg>, Error> {
        let arg = cmd.arg.as_deref();
        match cmd.verb {
            Verb::Epsv => match parse_epsv_arg(arg) {
                EpsvArg::All => {
                    self.epsv_all = true;
                    self.local(Reply::new(ReplyCode::CommandOk, "EPSV ALL ok."));
                    Ok(None)
                }
                EpsvArg::Invalid => Err(Error::client(ErrorKind::MalformedArgument)),
                EpsvArg::Any | EpsvArg::Protocol(1 | 2) => {
                    Ok(Some(ClientLeg::Passive(ClientPassive::Epsv)))
                }
                // RFC 2428 section 3: an unsupported network protocol gets 522.
                EpsvArg::Protocol(_) => Err(Error::client(ErrorKind::UnknownNetworkProtocol)),
            },
            _ if self.epsv_all => Err(Error::client(ErrorKind::EpsvAllInEffect)),
            Verb::Pasv => Ok(Some(ClientLeg::Passive(ClientPassive::Pasv))),
            Verb::Port | Verb::Eprt => {
                if !self.policy.active_mode {
                    return Err(Error::client(ErrorKind::ActiveDisabled));
                }
                let named = if cmd.verb == Verb::Port {
                    parse_port_arg(arg.unwrap_or_default()).map(std::net::SocketAddr::V4)
                } else {
                    parse_eprt_arg(arg.unwrap_or_default())
                };
                let named = named.map_err(|e| match e {
                    HostPortError::Malformed => Error::client(ErrorKind::MalformedArgument),
                    HostPortError::UnknownProtocol => {
                        Error::client(ErrorKind::UnknownNetworkProtocol)
                    }
                })?;
                let (target, fixed) =
                    check_active_target(named, self.policy.client.ip(), self.policy.active_nat_fix)
                        .map_err(|r| Error::client(ErrorKind::ActiveRefused(r)))?;
                if fixed {
                    self.note(Note::NatFixed {
                        named,
                        using: target,
                    });
                }
                Ok(Some(ClientLeg::Active {
                    target,
                    eprt: cmd.verb == Verb::Eprt,
                }))
            }
            // LPSV, LPRT.
            _ => Err(Error::client(ErrorKind::NotImplemented)),
        }
    }

    /// A transfer command: with a prepared data connection, the transfer
    /// starts (ftpgate connects to an active client first); without one,
    /// the backend answers it (425/503).
    fn start_transfer(&mut self, cmd: &Command) {
        let Some(p) = self.prepared.take() else {
            if std::mem::take(&mut self.prepared_expired) {
                // The backend still expects a data connection that no longer
                // exists: answering for it avoids passing on a 226 for data
                // that went nowhere.
                return self.local_error(Error::client(ErrorKind::DataConnectFailed(
                    "data connection expired before the transfer command".into(),
                )));
            }
            return self.forward(cmd, Awaiting::Transfer { gen: None });
        };
        let kind = TransferKind::of(cmd.verb);
        match p.active {
            Some(target) => {
                self.own = Some(Box::new(Own::ExpectClientConnect {
                    gen: p.gen,
                    line: cmd.line.clone(),
                    arg: cmd.arg_str(),
                    kind,
                }));
                self.steps
                    .push_back(Step::ConnectClient { gen: p.gen, target });
            }
            None => self.begin_transfer(p.gen, false, kind, cmd.arg_str(), &cmd.line, p.relaying),
        }
    }

    /// The transfer's command goes to the backend now.
    pub(super) fn begin_transfer(
        &mut self,
        gen: u64,
        active: bool,
        kind: TransferKind,
        arg: String,
        line: &Bytes,
        relaying: bool,
    ) {
        self.record_transfer();
        self.transfer = Some(Transfer::new(gen, kind, active, self.ascii, arg, relaying));
        self.order.expect(Awaiting::Transfer { gen: Some(gen) });
        let mut l = Vec::with_capacity(line.len() + 2);
        l.extend_from_slice(line);
        l.extend_from_slice(b"\r\n");
        self.steps.push_back(Step::Send(Bytes::from(l)));
    }

    /// ABOR on a running transfer: both legs reset.
    fn abort_transfer(&mut self) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        let cut = !t.settled();
        t.phase = Phase::Aborted;
        let gen = t.gen;
        if cut {
            self.note(Note::TransferCut {
                cause: "aborted",
                error: None,
            });
        }
        self.steps.push_back(Step::Cancel { gen });
    }
}
