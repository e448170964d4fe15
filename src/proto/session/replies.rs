//! What the session does with each backend reply, with its own backend
//! conversation (greeting, TLS), with routing results and with time.
//!
//! Replies reach the client in command order ([`super::ReplyOrder`]); only a
//! 421 may arrive unasked; a transfer's final reply waits for its data and
//! says 2xx only for data that arrived whole ([`super::Transfer::verdict`]).
//! No I/O here.

use std::time::Duration;

use super::super::command::Verb;
use super::super::reply::Reply;
use super::super::rewrite::rewrite_feat;
use super::super::upstream::{ChatError, Next};
use super::{BackendTls, Completion, Control, DataWait, Note, Own, Phase, Step};
use crate::error::{reply_for, End, Error, ErrorKind};
use crate::net::BackendAddr;

impl Control {
    /// One complete backend reply.
    pub(super) fn on_reply(&mut self, reply: Reply, now: Duration) {
        // The server is closing and said so; no second 421 from ftpgate.
        self.backend_said_421 |= reply.code == 421;
        match self.own.as_deref() {
            Some(Own::ExpectGreeting { .. }) => return self.on_chat_reply(reply, now),
            Some(Own::ExpectData {
                wait: DataWait::ExpectPassiveReply { .. } | DataWait::ExpectPortReply,
                ..
            }) => {
                // ftpgate's own command: only its own, since nothing else
                // is awaited. A preliminary reply is not the answer.
                if !reply.is_preliminary() {
                    self.on_data_setup_reply(reply, now);
                }
                return;
            }
            _ => {}
        }
        self.greeted = true;
        let completion = self.order.on_reply(&reply);
        // A second 1yz that ends a transfer (see ReplyOrder::on_reply): its
        // code says nothing the client can act on, so it gets the 426 a
        // failed transfer gets.
        let reply = match completion {
            Completion::Transfer { .. } if reply.is_preliminary() => {
                self.drop_reply("preliminary_as_final", &reply);
                reply_for(&Error::backend(ErrorKind::TransferCut)).0
            }
            _ => reply,
        };
        match completion {
            Completion::Preliminary => self.order.send(reply.to_bytes()),
            // A server closing says 421 unasked (RFC 959 5.4): the client
            // must hear it. Anything else nobody asked for would answer the
            // client's next command in its place.
            Completion::Unsolicited if reply.code == 421 => self.order.send(reply.to_bytes()),
            Completion::Unsolicited => self.drop_reply("unsolicited", &reply),
            // Only ftpgate's own PASV/EPSV (never forwarded) is answered by a
            // 227/229: one arriving for another command names an address
            // the client must not be sent to.
            Completion::Command(_) if matches!(reply.code, 227 | 229) => {
                self.drop_reply("passive_reply", &reply);
                let e = Error::backend(ErrorKind::UnexpectedBackendReply);
                self.order.send(reply_for(&e).0.to_bytes());
            }
            Completion::Command(verb) => self.on_command_reply(verb, reply, now),
            Completion::Transfer {
                gen: Some(gen),
                after_preliminary,
            } => self.on_transfer_reply(gen, after_preliminary, reply),
            // No data connection went through ftpgate for this transfer, so
            // no data reached the client: no success for it.
            Completion::Transfer { gen: None, .. } if reply.is_success() => {
                self.drop_reply("transfer_without_data", &reply);
                let e = Error::client(ErrorKind::DataConnectFailed("no data connection".into()));
                self.order.send(reply_for(&e).0.to_bytes());
            }
            Completion::Transfer { gen: None, .. } => self.order.send(reply.to_bytes()),
        }
    }

    fn drop_reply(&mut self, reason: &'static str, reply: &Reply) {
        self.note(Note::ReplyDropped {
            reason,
            text: reply.text_lossy(),
        });
    }

    /// The final reply of an ordinary command.
    fn on_command_reply(&mut self, verb: Verb, reply: Reply, now: Duration) {
        let reply = match verb {
            // What ftpgate offers the client, not what the backend offers
            // ftpgate: TLS is ftpgate's own on each side.
            Verb::Feat => rewrite_feat(&reply, &self.features(), &["AUTH", "PBSZ", "PROT", "CCC"]),
            _ => reply,
        };
        self.note(Note::Relayed);
        match (verb, reply.code) {
            (Verb::User | Verb::Pass, 230) => {
                self.logged_in = true;
                let user = self.user.clone().unwrap_or_else(|| "-".into());
                self.note(Note::LoggedIn { user });
            }
            (Verb::User | Verb::Pass, 530) => {
                self.order.send(reply.to_bytes());
                return self.login_failed(now);
            }
            (Verb::Rein, 200..=299) => self.logged_in = false,
            (Verb::Quit, 200..=299) => self.quitting = true,
            // A server may refuse QUIT (RFC 959 5.4 allows 500): the
            // session goes on, and the commands sent after it are read.
            (Verb::Quit, _) => self.quit_sent = false,
            _ => {}
        }
        self.order.send(reply.to_bytes());
    }

    /// A 530 to USER or PASS (already queued), or a user routing refused:
    /// count it, close past `max_login_failures`, and past
    /// `login_failures_before_delay` hold the reply (and the client) for
    /// `login_failure_delay`.
    pub(super) fn login_failed(&mut self, now: Duration) {
        self.login_failures += 1;
        let user = self.user.clone().unwrap_or_else(|| "-".into());
        self.note(Note::LoginFailed {
            user,
            failures: self.login_failures,
        });
        if self.login_failures >= self.policy.max_login_failures {
            self.note(Note::Limit {
                limit: "max_login_failures",
            });
            return self.close(End::Error(Error::client(ErrorKind::TooManyLoginFailures)));
        }
        if self.login_failures > self.policy.login_failures_before_delay
            && !self.policy.login_failure_delay.is_zero()
        {
            self.paused_until = Some(now + self.policy.login_failure_delay);
        }
    }

    /// A transfer's final reply: pass it now (as its data allows), or hold
    /// it until the data has settled.
    fn on_transfer_reply(&mut self, gen: u64, after_preliminary: bool, reply: Reply) {
        let Some(t) = self.transfer.as_mut().filter(|t| t.gen == gen) else {
            return self.order.send(reply.to_bytes());
        };
        t.reply_code = Some(reply.code);
        if !after_preliminary {
            // Refused before any data flowed (550, 425, ...): the prepared
            // connection will not be used. Not a transfer: not logged.
            self.steps.push_back(Step::Cancel { gen });
            self.transfer = None;
            return self.order.send(reply.to_bytes());
        }
        self.record_if_countable();
        let Some(t) = self.transfer.as_ref() else {
            return self.order.send(reply.to_bytes());
        };
        if t.settled() {
            let shown = t.verdict(reply);
            return self.order.send(shown.to_bytes());
        }
        if let Err(reply) = self.order.hold(gen, reply) {
            // Two held replies cannot happen: a data setup waits for quiet.
            debug_assert!(false, "two held replies");
            self.order.send(reply.to_bytes());
        }
    }

    /// Moves the held transfer reply to the output: as the backend sent
    /// it, or, when the data did not arrive whole, a success replaced by
    /// 425 (never connected) or 426 (cut): only a client that has every
    /// byte may read a 2xx.
    pub(super) fn release_held(&mut self) {
        let held = self.order.held_gen();
        let transfer = self.transfer.as_ref().filter(|t| Some(t.gen) == held);
        self.order.release(|r| {
            let shown = match transfer {
                Some(t) => t.verdict(r.clone()),
                // Nothing vouches for the data: no success.
                None if r.is_success() => reply_for(&Error::client(ErrorKind::TransferCut)).0,
                None => r.clone(),
            };
            (shown != *r).then_some(shown)
        });
    }

    /// Abandons a transfer whose data has not settled: its data task resets
    /// both data connections, and a held success becomes 426.
    pub(super) fn cut_transfer(&mut self, cause: &'static str) {
        let Some(t) = self.transfer.as_mut().filter(|t| !t.settled()) else {
            return;
        };
        t.phase = Phase::Cut;
        let gen = t.gen;
        self.note(Note::TransferCut { cause, error: None });
        self.steps.push_back(Step::Cancel { gen });
    }

    /// Counts the current transfer once its data and its final reply are
    /// both known (or it failed or was aborted).
    pub(super) fn record_if_countable(&mut self) {
        if self
            .transfer
            .as_ref()
            .is_some_and(|t| !t.recorded && t.countable())
        {
            self.record_transfer();
        }
    }

    /// Counts the current transfer in metrics and the transfer log, once.
    /// Also when it is replaced or the session ends before it is done.
    pub(super) fn record_transfer(&mut self) {
        let Some(t) = self.transfer.as_mut().filter(|t| !t.recorded) else {
            return;
        };
        t.recorded = true;
        let n = Note::TransferDone {
            gen: t.gen,
            kind: t.kind,
            active: t.active,
            ascii: t.ascii,
            arg: t.arg.clone(),
            outcome: t.outcome(),
        };
        self.note(n);
    }

    // === ftpgate's own backend conversation ===

    fn on_chat_reply(&mut self, reply: Reply, now: Duration) {
        let buffered = self.replies.buffered();
        let Some(Own::ExpectGreeting { chat, .. }) = self.own.as_deref_mut() else {
            return;
        };
        match chat.on_reply(&reply, buffered) {
            Ok(None) => {}
            Ok(Some(next)) => self.chat_next(next, now),
            Err(ChatError::Greeting(greeting)) => {
                // Anything but 220 (421 too many users and the like) goes to
                // the client as is, and ends the session.
                self.own = None;
                self.greeted = true;
                self.backend_said_421 |= greeting.code == 421;
                self.local(greeting);
                self.close(End::BackendClosed);
            }
            Err(e) => self.upstream_failed(e.to_string()),
        }
    }

    /// The conversation goes on, or is complete.
    fn chat_next(&mut self, next: Next, now: Duration) {
        match next {
            Next::Send(line) => self.send_own(line),
            Next::StartTls => {
                if let Some(Own::ExpectGreeting { chat, show, since }) = self.own.take().map(|o| *o)
                {
                    self.own = Some(Box::new(Own::ExpectBackendTls { chat, show, since }));
                }
                self.steps.push_back(Step::BackendTls);
            }
            Next::Done(greeting) => {
                let show = matches!(
                    self.own.as_deref(),
                    Some(Own::ExpectGreeting { show: true, .. })
                );
                self.own = None;
                self.greeted = true;
                if show {
                    self.local(greeting);
                }
                // Per-user routing: the USER that picked this backend.
                if let Some(user) = self.replay_user.take() {
                    let line =
                        super::super::command::parse_command(format!("USER {user}").as_bytes());
                    self.forward(&line, super::Awaiting::Command(Verb::User));
                }
                let _ = now;
            }
        }
    }

    pub(super) fn on_backend_tls(&mut self, r: Result<(), String>, now: Duration) {
        let Some(Own::ExpectBackendTls {
            mut chat,
            show,
            since,
        }) = self.own.take().map(|o| *o)
        else {
            return;
        };
        match r {
            Ok(()) => {
                let next = chat.on_tls();
                self.own = Some(Box::new(Own::ExpectGreeting { chat, show, since }));
                self.chat_next(next, now);
            }
            Err(why) => {
                self.note(Note::TlsFailed {
                    side: "backend",
                    why: why.clone(),
                });
                self.close(End::Error(Error::backend(ErrorKind::BackendTls(why))));
            }
        }
    }

    fn upstream_failed(&mut self, why: String) {
        self.own = None;
        self.note(Note::UpstreamFailed { why: why.clone() });
        self.close(End::Error(Error::backend(ErrorKind::BackendTls(why))));
    }

    /// Routing picked and connected a backend for the USER being routed.
    pub(super) fn on_routed(
        &mut self,
        backend: BackendAddr,
        tls: BackendTls,
        user: String,
        now: Duration,
    ) {
        let Some(Own::ExpectRoute { user: asked }) = self.own.take().map(|o| *o) else {
            return;
        };
        self.note(Note::Routed {
            user: asked.clone(),
        });
        self.install(backend, tls, now, false);
        // The backend's greeting is for ftpgate: the client had its own.
        self.routed_user = Some(asked);
        self.routed_as = Some(user.clone());
        self.user = Some(user.clone());
        // Replayed once the conversation is done (see chat_next).
        self.replay_user = Some(user);
    }

    // === time ===

    /// A deadline passed: what it ends.
    pub(super) fn on_deadline(&mut self, now: Duration) {
        let Some(due) = self.deadline() else {
            return;
        };
        if now < due {
            return;
        }
        match self.own.as_deref() {
            Some(Own::ExpectGreeting { .. } | Own::ExpectBackendTls { .. }) => {
                self.note(Note::Limit {
                    limit: "greeting_timeout",
                });
                return self.close(End::Error(Error::backend(ErrorKind::GreetingTimeout)));
            }
            Some(Own::ExpectData { .. }) => {
                return self.close(End::Error(Error::backend(ErrorKind::BackendTimeout)));
            }
            _ => {}
        }
        if self.deferred.is_some() {
            // The backend did not answer earlier commands in time, and a
            // data setup waits behind them. Going ahead would take their
            // late replies for answers to later commands (or to ftpgate's
            // own): the client's replies would be off by one from here on.
            let awaited = self.order.awaited();
            self.note(Note::BackendSilent { awaited });
            return self.close(End::Error(Error::backend(ErrorKind::BackendTimeout)));
        }
        let kind = if !self.greeted {
            ErrorKind::GreetingTimeout
        } else if self.logged_in {
            ErrorKind::IdleTimeout
        } else {
            ErrorKind::LoginTimeout
        };
        let limit = match kind {
            ErrorKind::GreetingTimeout => "greeting_timeout",
            ErrorKind::IdleTimeout => "idle_timeout",
            _ => "login_timeout",
        };
        self.note(Note::Limit { limit });
        self.close(End::Error(Error::internal(kind)));
    }
}
