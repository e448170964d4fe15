//! Reply ordering for one control session.
//!
//! The client must see replies in the order it sent commands, although some
//! come from the backend, some are written by ftpgate itself, and a
//! transfer's final reply must wait until its data has been relayed.
//! [`ReplyOrder`] keeps that order: it records what each forwarded command
//! still awaits, queues ftpgate's own replies behind outstanding backend
//! replies, and holds a transfer's final reply (and everything after it)
//! until the session releases it. The session writes whatever
//! [`ReplyOrder::take_ready`] returns. No I/O and no clock here.

use std::collections::VecDeque;

use bytes::Bytes;

use super::super::command::Verb;
use super::super::reply::Reply;

/// What a command forwarded to the backend awaits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// An ordinary command (the greeting counts as one).
    Command(Verb),
    /// A transfer command; `gen` names its data task, if one was prepared.
    Transfer {
        /// The data task's generation.
        gen: Option<u64>,
    },
}

/// What a backend reply completed, as reported by [`ReplyOrder::on_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// A 1yz reply: more replies follow for the same command.
    Preliminary,
    /// The final reply of an ordinary command.
    Command(Verb),
    /// The final reply of a transfer command.
    Transfer {
        /// The data task's generation.
        gen: Option<u64>,
        /// Whether a 1yz reply (150) came first, i.e. data was meant to flow.
        after_preliminary: bool,
    },
    /// A reply no command awaited (e.g. a server's 421 before it closes).
    Unsolicited,
}

#[derive(Debug)]
enum Entry {
    Backend {
        awaiting: Awaiting,
        preliminary: bool,
    },
    Local(Bytes),
}

/// The reply order of one session. Invariant: the front of `queue` is never
/// a `Local` entry after any public method returns (it is moved to the output).
#[derive(Debug, Default)]
pub struct ReplyOrder {
    queue: VecDeque<Entry>,
    /// A transfer's final reply waiting for its relay: (generation, reply).
    held: Option<(u64, Reply)>,
    /// Replies due after the held one.
    behind_hold: VecDeque<Bytes>,
    /// Bytes to write to the client now, in order.
    ready: VecDeque<Bytes>,
}

impl ReplyOrder {
    /// An empty order.
    pub fn new() -> Self {
        ReplyOrder::default()
    }

    /// Records a command forwarded to the backend.
    pub fn expect(&mut self, awaiting: Awaiting) {
        self.queue.push_back(Entry::Backend {
            awaiting,
            preliminary: false,
        });
    }

    /// A reply written by ftpgate: sent after every reply still awaited.
    pub fn local(&mut self, reply: &Reply) {
        self.queue.push_back(Entry::Local(reply.to_bytes()));
        self.settle();
    }

    /// Gives the queues' memory back when they are empty (an idle session
    /// then holds none; the next reply allocates again).
    pub fn release_if_empty(&mut self) {
        fn release<T>(q: &mut VecDeque<T>) {
            if q.is_empty() && q.capacity() > 0 {
                *q = VecDeque::new();
            }
        }
        release(&mut self.queue);
        release(&mut self.behind_hold);
        release(&mut self.ready);
    }

    /// Whether no queue holds memory (tests).
    #[cfg(test)]
    pub fn is_released(&self) -> bool {
        self.queue.capacity() == 0 && self.behind_hold.capacity() == 0 && self.ready.capacity() == 0
    }

    /// Backend replies still awaited.
    pub fn awaited(&self) -> usize {
        self.queue.len()
    }

    /// Nothing awaited and nothing held: ftpgate may talk to the backend itself.
    pub fn is_quiet(&self) -> bool {
        self.queue.is_empty() && self.held.is_none()
    }

    /// Accounts for one backend reply. The caller then passes it on with
    /// [`ReplyOrder::send`] (possibly rewritten) or [`ReplyOrder::hold`].
    pub fn on_reply(&mut self, reply: &Reply) -> Completion {
        let Some(Entry::Backend {
            awaiting,
            preliminary,
        }) = self.queue.front_mut()
        else {
            return Completion::Unsolicited;
        };
        // A transfer gets one preliminary reply (restart markers, 110,
        // aside). A second one cannot announce more data: pure-ftpd writes
        // its final reply for a transfer whose data write failed with the
        // code of its 150 (`150 0.001 seconds (measured here), ...`). It
        // is that command's final reply; passed on as a preliminary, it
        // would leave the client waiting and shift every later reply onto
        // the wrong command.
        let second_preliminary =
            *preliminary && matches!(awaiting, Awaiting::Transfer { .. }) && reply.code != 110;
        if reply.is_preliminary() && !second_preliminary {
            *preliminary = true;
            return Completion::Preliminary;
        }
        let done = match *awaiting {
            Awaiting::Command(verb) => Completion::Command(verb),
            Awaiting::Transfer { gen } => Completion::Transfer {
                gen,
                after_preliminary: *preliminary,
            },
        };
        self.queue.pop_front();
        done
    }

    /// Sends a reply in its turn: now, or after the held reply.
    pub fn send(&mut self, bytes: Bytes) {
        if self.held.is_some() {
            self.behind_hold.push_back(bytes);
        } else {
            self.ready.push_back(bytes);
        }
        self.settle();
    }

    /// Holds a transfer's final reply until [`ReplyOrder::release`].
    /// Returns the reply back if one is held already (a broken invariant).
    pub fn hold(&mut self, gen: u64, reply: Reply) -> Result<(), Reply> {
        if self.held.is_some() {
            return Err(reply);
        }
        self.held = Some((gen, reply));
        self.settle();
        Ok(())
    }

    /// The generation whose reply is held.
    pub fn held_gen(&self) -> Option<u64> {
        self.held.as_ref().map(|(g, _)| *g)
    }

    /// Releases the held reply, replaced by `replace` when given (a success
    /// for data that never reached the client must not be passed on).
    pub fn release(&mut self, replace: impl FnOnce(&Reply) -> Option<Reply>) {
        let Some((_, reply)) = self.held.take() else {
            return;
        };
        let reply = replace(&reply).unwrap_or(reply);
        self.ready.push_back(reply.to_bytes());
        self.ready.extend(self.behind_hold.drain(..));
        self.settle();
    }

    /// Forgets every awaited backend reply (the backend skipped some);
    /// local replies queued behind them go out now. Returns how many were dropped.
    pub fn drop_awaited(&mut self) -> usize {
        let before = self.queue.len();
        self.queue.retain(|e| matches!(e, Entry::Local(_)));
        let dropped = before - self.queue.len();
        self.settle();
        dropped
    }

    /// Bytes to write to the client now, in order.
    pub fn take_ready(&mut self) -> impl Iterator<Item = Bytes> + '_ {
        self.ready.drain(..)
    }

    /// Everything the client is still owed when the session ends: ready
    /// bytes, the held reply and what waits behind it.
    pub fn take_owed(&mut self) -> Vec<Bytes> {
        self.release(|_| None);
        self.ready.drain(..).collect()
    }

    /// Moves local replies at the front of the queue to the output.
    fn settle(&mut self) {
        while let Some(Entry::Local(_)) = self.queue.front() {
            if let Some(Entry::Local(b)) = self.queue.pop_front() {
                self.send_now_or_behind(b);
            }
        }
    }

    fn send_now_or_behind(&mut self, b: Bytes) {
        if self.held.is_some() {
            self.behind_hold.push_back(b);
        } else {
            self.ready.push_back(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reply::parse_reply_lines;

    fn r(line: &str) -> Reply {
        parse_reply_lines(&[line.as_bytes()]).unwrap()
    }

    fn out(o: &mut ReplyOrder) -> Vec<String> {
        o.take_ready()
            .map(|b| String::from_utf8_lossy(&b).trim_end().to_owned())
            .collect()
    }

    /// Feeds a backend reply and passes it on unchanged.
    fn backend(o: &mut ReplyOrder, line: &str) -> Completion {
        let reply = r(line);
        let c = o.on_reply(&reply);
        o.send(reply.to_bytes());
        c
    }

    #[test]
    fn local_replies_wait_for_earlier_backend_replies() {
        let mut o = ReplyOrder::new();
        o.expect(Awaiting::Command(Verb::Other)); // NOOP
        o.local(&r("200 EPSV ALL ok."));
        assert!(
            out(&mut o).is_empty(),
            "the local reply must wait for NOOP's"
        );
        assert_eq!(
            backend(&mut o, "200 NOOP ok."),
            Completion::Command(Verb::Other)
        );
        assert_eq!(out(&mut o), vec!["200 NOOP ok.", "200 EPSV ALL ok."]);
        assert!(o.is_quiet());
    }

    /// An idle session holds no queue memory, and the order works as
    /// before once it allocates again.
    #[test]
    fn empty_queues_give_their_memory_back_and_work_again() {
        let mut o = ReplyOrder::new();
        o.expect(Awaiting::Command(Verb::Other));
        o.local(&r("200 Local."));
        o.release_if_empty(); // not empty: kept
        assert!(o.queue.capacity() > 0);
        backend(&mut o, "200 NOOP ok.");
        assert_eq!(out(&mut o), vec!["200 NOOP ok.", "200 Local."]);
        o.release_if_empty();
        assert_eq!(
            (
                o.queue.capacity(),
                o.behind_hold.capacity(),
                o.ready.capacity()
            ),
            (0, 0, 0)
        );
        o.expect(Awaiting::Command(Verb::Other));
        backend(&mut o, "200 Again.");
        assert_eq!(out(&mut o), vec!["200 Again."]);
    }

    #[test]
    fn local_reply_with_nothing_outstanding_goes_at_once() {
        let mut o = ReplyOrder::new();
        o.local(&r("504 Refused."));
        assert_eq!(out(&mut o), vec!["504 Refused."]);
    }

    #[test]
    fn transfer_reply_held_and_later_replies_queue_behind_it() {
        let mut o = ReplyOrder::new();
        o.expect(Awaiting::Transfer { gen: Some(7) });
        o.expect(Awaiting::Command(Verb::Abor));
        assert_eq!(backend(&mut o, "150 Opening"), Completion::Preliminary);
        let fin = r("226 Transfer complete.");
        assert_eq!(
            o.on_reply(&fin),
            Completion::Transfer {
                gen: Some(7),
                after_preliminary: true
            }
        );
        o.hold(7, fin).unwrap();
        assert_eq!(
            backend(&mut o, "225 No transfer to ABOR."),
            Completion::Command(Verb::Abor)
        );
        o.local(&r("200 local"));
        assert_eq!(out(&mut o), vec!["150 Opening"]);
        assert_eq!(o.held_gen(), Some(7));
        o.release(|_| None);
        assert_eq!(
            out(&mut o),
            vec![
                "226 Transfer complete.",
                "225 No transfer to ABOR.",
                "200 local"
            ]
        );
    }

    /// A second 1yz on a transfer (pure-ftpd's 150-coded final reply after
    /// a failed data write) completes it; on an ordinary command, or as a
    /// restart marker (110), a 1yz stays preliminary.
    #[test]
    fn a_second_preliminary_completes_a_transfer_only() {
        let mut o = ReplyOrder::new();
        o.expect(Awaiting::Transfer { gen: Some(4) });
        o.expect(Awaiting::Command(Verb::Other));
        assert_eq!(backend(&mut o, "150 Opening"), Completion::Preliminary);
        assert_eq!(backend(&mut o, "110 MARK 0 = 9"), Completion::Preliminary);
        assert_eq!(
            o.on_reply(&r("150 0.001 seconds (measured here)")),
            Completion::Transfer {
                gen: Some(4),
                after_preliminary: true
            }
        );
        assert_eq!(backend(&mut o, "150 more"), Completion::Preliminary);
        assert_eq!(backend(&mut o, "150 and more"), Completion::Preliminary);
        assert_eq!(
            backend(&mut o, "200 done"),
            Completion::Command(Verb::Other)
        );
        assert!(o.is_quiet());
    }

    #[test]
    fn release_can_replace_a_success_that_would_lie() {
        let mut o = ReplyOrder::new();
        o.expect(Awaiting::Transfer { gen: Some(1) });
        let fin = r("226 Transfer complete.");
        o.on_reply(&fin);
        o.hold(1, fin).unwrap();
        o.release(|held| {
            held.is_success()
                .then(|| r("425 Can't open data connection."))
        });
        assert_eq!(out(&mut o), vec!["425 Can't open data connection."]);
    }

    #[test]
    fn refused_transfer_reports_no_preliminary() {
        let mut o = ReplyOrder::new();
        o.expect(Awaiting::Transfer { gen: Some(3) });
        assert_eq!(
            backend(&mut o, "550 No such file."),
            Completion::Transfer {
                gen: Some(3),
                after_preliminary: false
            }
        );
    }

    #[test]
    fn unsolicited_and_stale() {
        let mut o = ReplyOrder::new();
        assert_eq!(backend(&mut o, "421 Timeout."), Completion::Unsolicited);
        o.expect(Awaiting::Command(Verb::Abor));
        o.local(&r("200 behind"));
        assert!(!o.is_quiet());
        assert_eq!(o.drop_awaited(), 1);
        assert_eq!(out(&mut o), vec!["421 Timeout.", "200 behind"]);
        assert!(o.is_quiet());
    }

    #[test]
    fn owed_at_the_end_includes_held_and_behind() {
        let mut o = ReplyOrder::new();
        o.expect(Awaiting::Transfer { gen: Some(2) });
        let fin = r("226 done");
        o.on_reply(&fin);
        o.hold(2, fin).unwrap();
        o.send(Bytes::from_static(b"221 bye\r\n"));
        let owed: Vec<Bytes> = o.take_owed();
        assert_eq!(
            owed,
            vec![
                Bytes::from_static(b"226 done\r\n"),
                Bytes::from_static(b"221 bye\r\n")
            ]
        );
    }

    #[test]
    fn a_second_hold_is_refused() {
        let mut o = ReplyOrder::new();
        o.hold(1, r("226 a")).unwrap();
        assert_eq!(o.hold(2, r("226 b")), Err(r("226 b")));
    }

    /// Seeded random sequences: every reply comes out exactly once, in the
    /// order it was produced, whatever holds and releases happen between.
    #[test]
    fn random_sequences_keep_order_and_lose_nothing() {
        for seed in 0..200u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut o = ReplyOrder::new();
            let mut produced = Vec::new();
            let mut written = Vec::new();
            let mut awaiting = 0usize;
            for i in 0..60 {
                match next(5) {
                    0 => {
                        o.expect(Awaiting::Command(Verb::Other));
                        awaiting += 1;
                    }
                    1 => {
                        let line = format!("200 local {i}");
                        // A local reply goes out after all awaited replies.
                        o.local(&r(&line));
                        produced.push((awaiting, line));
                    }
                    2 if awaiting > 0 => {
                        let line = format!("200 backend {i}");
                        let reply = r(&line);
                        o.on_reply(&reply);
                        if next(3) == 0 && o.held_gen().is_none() {
                            o.hold(i, reply).unwrap();
                        } else {
                            o.send(reply.to_bytes());
                        }
                        awaiting -= 1;
                        produced.push((0, line));
                    }
                    3 => o.release(|_| None),
                    _ => written.extend(out(&mut o)),
                }
            }
            o.drop_awaited();
            written.extend(
                o.take_owed()
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).trim_end().to_owned()),
            );
            let mut expected: Vec<String> = produced.into_iter().map(|(_, l)| l).collect();
            // Locals queued behind unanswered commands come out at the end, still in order.
            let mut sorted_written = written.clone();
            sorted_written.sort();
            expected.sort();
            assert_eq!(
                sorted_written, expected,
                "seed {seed}: a reply was lost or duplicated"
            );
            let backend_order: Vec<&String> =
                written.iter().filter(|l| l.contains("backend")).collect();
            let mut b_sorted = backend_order.clone();
            b_sorted.sort_by_key(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap());
            assert_eq!(
                backend_order, b_sorted,
                "seed {seed}: backend replies reordered"
            );
        }
    }
}
