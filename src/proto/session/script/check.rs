//! What the simulated client reads: every reply is checked against the
//! invariants (1, 4, 5) as it arrives, and the session's end against 4.

use super::super::super::reply::Reply;
use super::{Sim, Source, TransferKind, Violation, THIRD_PARTY};

impl<S: Source> Sim<'_, S> {
    /// Bytes reach the client: every reply in them is checked.
    pub(super) fn client_reads(&mut self, b: &[u8]) -> Result<(), Violation> {
        self.client_replies.push(b);
        while let Some(r) = self.client_replies.next_reply() {
            let Ok(reply) = r else {
                return Err(self.fail(format!(
                    "the client got a line that is not a reply: {:?}",
                    String::from_utf8_lossy(b)
                )));
            };
            self.check_reply(&reply)?;
        }
        Ok(())
    }

    fn check_reply(&mut self, reply: &Reply) -> Result<(), Violation> {
        self.stats.replies += 1;
        let text = reply.text_lossy();
        if text.contains("unasked") && reply.code != 421 {
            return Err(self.fail(format!(
                "invariant 5: an unasked reply reached the client: {text}"
            )));
        }
        if text.contains(THIRD_PARTY) {
            return Err(self.fail(format!(
                "invariant 5: a 227 nobody asked for reached the client: {text}"
            )));
        }
        if reply.code == 220 && !self.greeting_seen {
            self.greeting_seen = true;
            return Ok(());
        }
        let tag = text
            .rsplit_once('#')
            .and_then(|(_, t)| t.trim().parse::<usize>().ok());
        // The oldest command still owed a reply.
        while self.fifo.front().is_some_and(|c| c.discarded) {
            self.fifo.pop_front();
        }
        if reply.is_preliminary() {
            if let Some(k) = tag {
                let front = self.fifo.front().map(|c| c.idx);
                if front != Some(k) {
                    return Err(self.fail(format!(
                        "invariant 5: `{text}` answers command {k}, but command {front:?} is owed a reply first"
                    )));
                }
            }
            return Ok(());
        }
        let Some(cmd) = self.fifo.pop_front() else {
            // Only the greeting and a closing 421 come unasked.
            if reply.code == 220 || reply.code == 421 {
                return Ok(());
            }
            return Err(self.fail(format!(
                "invariant 5: `{text}` reached the client with no command awaiting a reply"
            )));
        };
        if let Some(k) = tag {
            if k != cmd.idx {
                return Err(self.fail(format!(
                    "invariant 5: `{text}` answers command {k}, but command {} is owed a reply first",
                    cmd.idx
                )));
            }
        }

        if let Some((gen, kind)) = cmd.transfer {
            self.check_transfer_reply(gen, kind, reply, &text)?;
        }
        Ok(())
    }

    fn check_transfer_reply(
        &mut self,
        gen: Option<u64>,
        kind: TransferKind,
        reply: &Reply,
        text: &str,
    ) -> Result<(), Violation> {
        let Some(gen) = gen else {
            if reply.is_success() {
                return Err(self.fail(format!(
                    "invariant 1: a success for a transfer with no data connection: {text}"
                )));
            }
            return Ok(());
        };
        let g = self.gens.get(&gen).cloned().unwrap_or_default();
        let settled = g.cancelled
            || g.failed
            || g.finished.is_some()
            || (kind != TransferKind::Upload && g.down_clean.is_some());
        if !settled {
            return Err(self.fail(format!(
                "invariant 1: the final reply `{text}` of transfer {gen} reached the client before its data task ended"
            )));
        }
        if reply.is_success() {
            let whole = !g.cut
                && !g.failed
                && match kind {
                    TransferKind::Upload => g.finished == Some(false),
                    _ => g.down_clean == Some(true),
                };
            if !whole {
                return Err(self.fail(format!(
                    "invariant 1: `{text}` for transfer {gen} whose data did not arrive whole ({g:?})"
                )));
            }
            self.stats.complete += 1;
        }
        Ok(())
    }

    pub(super) fn final_checks(&mut self) -> Result<(), Violation> {
        if !self.closed {
            return Err(self.fail("the client closed, and the session did not".into()));
        }
        for (gen, g) in &self.gens {
            if g.leased && !g.released {
                return Err(self.fail(format!(
                    "invariant 4: passive port of generation {gen} still leased at the end ({g:?})"
                )));
            }
        }
        Ok(())
    }
}
