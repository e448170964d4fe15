//! What the core's notes mean for the log, the metrics and the transfer
//! log, and the session's end: the farewell, the closing log line.

use tokio::io::AsyncWriteExt;
use tokio::time::Duration;
use tracing::field::display;
use tracing::{debug, error, info, warn};

use super::Session;
use crate::error::End;
use crate::proto::session::{Note, TransferKind};
use crate::xferlog;

impl Session {
    /// Logs and counts one note of the core.
    pub(super) fn account(&mut self, n: Note) {
        let (id, client) = (self.id, self.client_addr);
        let m = &self.shared.metrics;
        match n {
            Note::Relayed => self.relayed += 1,
            Note::LoggedIn { user } => {
                m.logins_total.with_label_values(&["success"]).inc();
                let cert = self.ctl.client_cert().map(|c| display(&c.subject));
                info!(session = id, client = %client, user = %user, client_cert = cert, "logged in");
            }
            Note::LoginFailed { user, failures } => {
                m.logins_total.with_label_values(&["failure"]).inc();
                warn!(session = id, client = %client, user = %user, failures, "login failed");
            }
            Note::Limit { limit } => {
                m.limit_hit(limit);
                if limit == "max_login_failures" {
                    warn!(session = id, client = %client, "too many failed logins; closing the session");
                } else {
                    warn!(session = id, client = %client, limit, "session timed out");
                }
            }
            Note::BounceRefused { line } => {
                m.data_refused_total.with_label_values(&["bounce"]).inc();
                warn!(session = id, client = %client, command = %line, "refused PORT/EPRT target");
            }
            Note::NatFixed { named, using } => {
                info!(session = id, named = %named, using = %using, "active mode behind NAT: using the control connection's address")
            }
            Note::ReplyDropped {
                reason: "malformed",
                text,
            } => {
                warn!(session = id, backend = %self.backend_addr, line = %text, "skipped a backend line that is not a reply")
            }
            Note::ReplyDropped { reason, text } => {
                m.backend_replies_dropped_total
                    .with_label_values(&[reason])
                    .inc();
                warn!(session = id, backend = %self.backend_addr, reason, reply = %text, "dropped a backend reply");
            }
            Note::DataSetupRefused { text } => {
                error!(session = id, backend = %self.backend_addr, reply = %text, "unusable backend reply to ftpgate's own data-connection command")
            }
            Note::DataExpired => {
                m.data_refused_total.with_label_values(&["expired"]).inc();
                m.limit_hit("pending_data_timeout");
                warn!(session = id, client = %client, "prepared data connection expired unused");
            }
            Note::DataFailed {
                client_timeout: true,
                ..
            } => {
                warn!(session = id, client = %client, "client did not open its data connection in time")
            }
            Note::DataFailed { why, .. } => {
                warn!(session = id, problem = %why, "data connection failed")
            }
            Note::TransferCut { cause, error } => {
                m.transfers_cut_total.with_label_values(&[cause]).inc();
                warn!(session = id, client = %client, cause, error = ?error, "transfer cut: both data connections reset");
            }
            Note::TransferDone {
                gen,
                kind,
                active,
                ascii,
                arg,
                outcome,
            } => self.transfer_done(gen, kind, active, ascii, arg, outcome),
            Note::PlaintextDiscarded { bytes } => {
                m.client_input_discarded_total
                    .with_label_values(&["plaintext_after_auth"])
                    .inc();
                warn!(session = id, client = %client, bytes, "discarded plaintext sent after AUTH TLS (command injection?); nothing of it is acted on")
            }
            Note::AfterQuitDiscarded { bytes } => {
                m.client_input_discarded_total
                    .with_label_values(&["after_quit"])
                    .inc();
                info!(session = id, client = %client, bytes, "discarded what the client sent after QUIT")
            }
            Note::BackendDataRefused { addr } => {
                m.data_refused_total
                    .with_label_values(&["backend_data_address"])
                    .inc();
                warn!(session = id, backend = %self.backend_addr, named = %addr, "the backend named a data address that is neither its own nor in backend_data_networks; refused")
            }
            Note::ReplyTooLong { what, limit } => {
                m.backend_replies_dropped_total
                    .with_label_values(&["too_long"])
                    .inc();
                error!(session = id, backend = %self.backend_addr, what, limit, "backend reply over the limit; closing the session")
            }
            Note::CertUserMismatch { user, subject } => {
                warn!(session = id, client = %client, user = %user, client_cert = subject.map(tracing::field::display), "USER is not a name of the client certificate (tls_client_cert_user); refused")
            }
            Note::DowngradeRefused { line } => {
                warn!(session = id, client = %client, command = %line, "refused a command that would weaken TLS protection")
            }
            Note::LoginBeforeTls => {
                warn!(session = id, client = %client, "login before AUTH TLS refused (tls = required)")
            }
            Note::LineTooLong => {
                warn!(session = id, client = %client, limit = self.cfg.max_line_length, "command line too long; discarded")
            }
            Note::BackendSilent { awaited } => {
                warn!(session = id, awaited, limit = ?self.cfg.backend_reply_timeout, "the backend did not answer earlier commands within backend_reply_timeout; closing the session")
            }
            Note::BackendGoneDuringTransfer => {
                info!(session = id, client = %client, backend = %self.backend_addr, "backend closed its control connection during a transfer; relaying the rest of the data first")
            }
            Note::TlsFailed { side, why } => {
                warn!(session = id, client = %client, side, error = %why, "TLS handshake failed")
            }
            Note::UpstreamFailed { why } => {
                error!(session = id, backend = %self.backend_addr, error = %why, "backend conversation failed")
            }
            Note::Routed { user } => debug!(session = id, user = %user, "routed"),
            Note::DrainClosed => {
                info!(session = id, client = %client, "shutting down: closing the idle session")
            }
        }
    }

    /// Counts a transfer in metrics and the transfer log.
    fn transfer_done(
        &mut self,
        gen: u64,
        kind: TransferKind,
        active: bool,
        ascii: bool,
        arg: String,
        outcome: crate::proto::session::Outcome,
    ) {
        let legs = self.take_progress(gen);
        let (up, down) = legs.as_ref().map_or((0, 0), |l| l.progress.get());
        let duration = legs
            .and_then(|l| l.started)
            .map(|s| s.elapsed())
            .unwrap_or_default();
        self.bytes_up += up;
        self.bytes_down += down;
        self.transfers += 1;
        self.shared
            .metrics
            .transfers_total
            .with_label_values(&[
                kind.label(),
                if active { "active" } else { "passive" },
                outcome.label(),
            ])
            .inc();
        if kind == TransferKind::Listing {
            return;
        }
        if let Some(log) = &self.shared.xferlog {
            let entry = xferlog::Entry {
                end: std::time::SystemTime::now(),
                duration,
                client: self.client_addr.ip().to_string(),
                bytes: if kind == TransferKind::Upload {
                    up
                } else {
                    down
                },
                file: arg,
                ascii,
                outgoing: kind == TransferKind::Download,
                user: self.ctl.user().map(str::to_owned),
                cert_subject: self.ctl.client_cert().map(|c| c.subject.clone()),
                user_field: self.cfg.xferlog_user,
                complete: outcome == crate::proto::session::Outcome::Complete,
            };
            if let Err(e) = log.write(&entry) {
                error!(path = %log.path().display(), error = %e, "cannot write the transfer log");
            }
        }
    }

    /// The session is over: what is owed (within 5 s), both control
    /// connections closed, the log line and the metrics.
    pub(super) async fn close(&mut self, end: End, farewell: Vec<bytes::Bytes>) {
        // Notes given with the close (the last transfer's line) first.
        while let Some(step) = self.ctl.next_step() {
            if let crate::proto::session::Step::Note(n) = step {
                self.account(n);
            }
        }
        for gen in self.legs.gens() {
            self.cancel_data(gen);
        }
        let w = &mut self.client_wr;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            for b in farewell {
                w.write_all(&b).await?;
            }
            w.flush().await
        })
        .await;
        let _ = self.client_wr.shutdown().await;
        let _ = self.backend_wr.shutdown().await;
        let m = &self.shared.metrics;
        let l: &str = &self.listener_label;
        m.sessions_active
            .with_label_values(&[l, &self.backend_name])
            .dec();
        m.sessions_total
            .with_label_values(&[l, &self.backend_name, end.outcome()])
            .inc();
        info!(
            session = self.id,
            client = %self.client_addr,
            backend = %self.backend_addr,
            user = %self.ctl.user().unwrap_or("-"),
            client_cert = self.ctl.client_cert().map(|c| display(&c.subject)),
            duration_ms = self.started.elapsed().as_millis() as u64,
            bytes_up = self.bytes_up,
            bytes_down = self.bytes_down,
            transfers = self.transfers,
            end = %end,
            "session closed"
        );
    }
}
