//! A transfer's lifecycle and the rule that decides what its final reply
//! may say.
//!
//! A transfer starts when its command (RETR, STOR, LIST, ...) goes to the
//! backend with a prepared data connection, and moves through one
//! [`Phase`] at a time as its data task reports. [`Transfer::verdict`] is
//! the only place that decides whether the backend's final reply reaches
//! the client as it is: a 2xx only for data that arrived whole. No I/O here.

use super::super::command::Verb;
use super::super::reply::Reply;
use crate::error::{reply_for, Error, ErrorKind};

/// What a transfer command moves, for the completeness rule, metrics and
/// the transfer log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// RETR.
    Download,
    /// STOR, STOU, APPE.
    Upload,
    /// LIST, NLST, MLSD.
    Listing,
}

impl TransferKind {
    /// The kind of a transfer command.
    pub fn of(verb: Verb) -> TransferKind {
        match verb {
            Verb::Retr => TransferKind::Download,
            Verb::Stor | Verb::Appe | Verb::Stou => TransferKind::Upload,
            _ => TransferKind::Listing,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TransferKind::Download => "download",
            TransferKind::Upload => "upload",
            TransferKind::Listing => "listing",
        }
    }
}

/// Where a transfer's data stands, as its data task reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The data task waits for its connections (and handshakes).
    Waiting,
    /// The relay runs.
    Running,
    /// The backend-to-client direction ended (`clean`: every byte the
    /// backend sent was written to the client); the other may linger.
    DownDone {
        /// Ended without an error.
        clean: bool,
    },
    /// Both directions ended.
    Finished {
        /// The backend-to-client direction ended cleanly.
        down_clean: bool,
        /// The relay was cut by an I/O error or a stall.
        relay_error: bool,
    },
    /// The data task ended without relaying (no client connection, a
    /// failed handshake).
    Failed,
    /// ABOR: both legs reset.
    Aborted,
    /// Cut by the session (it ended, or the data stalled after the
    /// backend left): both legs reset.
    Cut,
}

/// How a transfer ended, for metrics and the transfer log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Whole data and a 2xx.
    Complete,
    /// Anything else but ABOR.
    Failed,
    /// ABOR.
    Aborted,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
        }
    }
}

/// A transfer whose command went to the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Its data task's generation.
    pub gen: u64,
    /// What it moves.
    pub kind: TransferKind,
    /// The client chose PORT/EPRT.
    pub active: bool,
    /// TYPE A was in effect.
    pub ascii: bool,
    /// The command's argument (the file name), for the transfer log.
    pub arg: String,
    /// Where its data stands.
    pub phase: Phase,
    /// The backend's final reply code, once seen.
    pub reply_code: Option<u16>,
    /// Counted in metrics and the transfer log.
    pub recorded: bool,
}

impl Transfer {
    /// A transfer whose command is being sent (`relaying`: its relay
    /// already runs).
    pub fn new(
        gen: u64,
        kind: TransferKind,
        active: bool,
        ascii: bool,
        arg: String,
        relaying: bool,
    ) -> Self {
        Transfer {
            gen,
            kind,
            active,
            ascii,
            arg,
            phase: if relaying {
                Phase::Running
            } else {
                Phase::Waiting
            },
            reply_code: None,
            recorded: false,
        }
    }

    /// The data side has ended one way or another, so the final reply may
    /// go out: a download's data has all been written to the client (or the
    /// relay was cut); an upload's relay has ended in both directions.
    pub fn settled(&self) -> bool {
        match self.phase {
            Phase::Waiting | Phase::Running => false,
            Phase::DownDone { .. } => self.kind != TransferKind::Upload,
            Phase::Finished { .. } | Phase::Failed | Phase::Aborted | Phase::Cut => true,
        }
    }

    /// Both data legs are gone: nothing of this transfer keeps the session busy.
    pub fn over(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Waiting | Phase::Running | Phase::DownDone { .. }
        )
    }

    /// The data is known to have arrived whole: every byte the backend sent
    /// reached the client (downloads, listings), or the upload's relay ended
    /// without an error. Only then may a 2xx final reply reach the client.
    pub fn whole(&self) -> bool {
        match (self.kind, self.phase) {
            (TransferKind::Upload, Phase::Finished { relay_error, .. }) => !relay_error,
            (TransferKind::Upload, _) => false,
            (_, Phase::DownDone { clean }) => clean,
            (_, Phase::Finished { down_clean, .. }) => down_clean,
            _ => false,
        }
    }

    /// Data and final reply are both known (or the transfer failed or was
    /// aborted): it can be counted.
    pub fn countable(&self) -> bool {
        let data_done = match self.phase {
            Phase::Finished { .. } => true,
            Phase::DownDone { .. } => self.kind != TransferKind::Upload,
            _ => false,
        };
        matches!(self.phase, Phase::Failed | Phase::Aborted)
            || (data_done && self.reply_code.is_some())
    }

    /// The final reply the client may see for `reply`: a success for data
    /// that did not arrive whole becomes 425 (never connected) or 426 (cut).
    pub fn verdict(&self, reply: Reply) -> Reply {
        if !reply.is_success() || self.whole() {
            return reply;
        }
        let kind = if self.phase == Phase::Failed {
            ErrorKind::DataConnectFailed("data connection failed".into())
        } else {
            ErrorKind::TransferCut
        };
        reply_for(&Error::client(kind)).0
    }

    /// How it ended.
    pub fn outcome(&self) -> Outcome {
        if self.phase == Phase::Aborted {
            Outcome::Aborted
        } else if self.whole() && self.reply_code.is_some_and(|c| (200..300).contains(&c)) {
            Outcome::Complete
        } else {
            Outcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: TransferKind, phase: Phase) -> Transfer {
        Transfer {
            phase,
            ..Transfer::new(1, kind, false, false, "f".into(), true)
        }
    }

    /// The rule every final reply passes: a 2xx only for data that arrived
    /// whole; otherwise 425 (never connected) or 426 (cut). Failures pass.
    #[test]
    fn a_success_passes_only_for_whole_data() {
        use Phase::*;
        use TransferKind::*;
        let fin = |down_clean, relay_error| Finished {
            down_clean,
            relay_error,
        };
        let table = [
            (Download, Running, false, 426),
            (Download, DownDone { clean: true }, true, 226),
            (Download, DownDone { clean: false }, true, 426),
            (Download, fin(true, true), true, 226),
            (Download, fin(false, true), true, 426),
            (Download, Failed, true, 425),
            (Download, Aborted, true, 426),
            (Download, Cut, true, 426),
            (Listing, DownDone { clean: true }, true, 226),
            (Listing, fin(false, false), true, 426),
            (Upload, DownDone { clean: true }, false, 426),
            (Upload, fin(true, false), true, 226),
            (Upload, fin(true, true), true, 426),
            (Upload, Failed, true, 425),
            (Upload, Aborted, true, 426),
        ];
        for (kind, phase, settled, code) in table {
            let tr = t(kind, phase);
            assert_eq!(tr.settled(), settled, "{kind:?} {phase:?}");
            assert_eq!(
                tr.verdict(Reply::from_line("226 Transfer complete.".into()))
                    .code,
                code,
                "{kind:?} {phase:?}"
            );
            assert_eq!(
                tr.verdict(Reply::from_line("550 No such file.".into()))
                    .code,
                550,
                "failures pass as they are"
            );
        }
    }

    #[test]
    fn outcomes() {
        let mut tr = t(TransferKind::Download, Phase::DownDone { clean: true });
        assert!(!tr.countable(), "no reply yet");
        tr.reply_code = Some(226);
        assert!(tr.countable());
        assert_eq!(tr.outcome(), Outcome::Complete);
        tr.reply_code = Some(451);
        assert_eq!(tr.outcome(), Outcome::Failed);
        let ab = t(TransferKind::Upload, Phase::Aborted);
        assert!(ab.countable() && ab.over());
        assert_eq!(ab.outcome(), Outcome::Aborted);
        let up = t(TransferKind::Upload, Phase::DownDone { clean: true });
        assert!(!up.countable() && !up.over());
    }
}
