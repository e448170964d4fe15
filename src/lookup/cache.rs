//! The answers the lookup service gave, kept for a while: how long each
//! kind is kept ([`Cache::ttl_for`]), and a size bound. Time is passed in;
//! no clock is read here.
//!
//! - A route is kept `user_lookup_cache_ttl` (default 30s).
//! - An unknown user (`404`) is kept `user_lookup_unknown_ttl` (default
//!   5s, never longer than the above): long enough that a burst of
//!   guessed names costs the service one request per name and a few
//!   seconds, short enough that a tenant added a moment ago can log in
//!   almost at once.
//! - A failure is never kept: the next login asks again.
//!
//! At its bound the cache first forgets what has expired, then the oldest
//! entries (first in, first out).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::answer::Outcome;

/// One kept answer.
#[derive(Debug)]
struct Entry {
    outcome: Outcome,
    expires: Instant,
    /// Which insertion this is (see `order`).
    serial: u64,
}

/// Answers by request target, bounded in size.
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<String, Entry>,
    /// Insertion order: a key and the serial it was inserted with; a
    /// record whose serial no longer matches its entry is stale. Kept at
    /// most twice the bound long.
    order: VecDeque<(String, u64)>,
    next_serial: u64,
    capacity: usize,
    ttl: Duration,
    unknown_ttl: Duration,
}

impl Cache {
    /// A cache of at most `capacity` answers (at least 1).
    pub fn new(capacity: usize, ttl: Duration, unknown_ttl: Duration) -> Cache {
        Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_serial: 0,
            capacity: capacity.max(1),
            ttl,
            unknown_ttl: unknown_ttl.min(ttl),
        }
    }

    /// How long `outcome` is kept; `None`: not at all.
    pub fn ttl_for(&self, outcome: &Outcome) -> Option<Duration> {
        let ttl = match outcome {
            Outcome::Found(_) => self.ttl,
            Outcome::Unknown => self.unknown_ttl,
            Outcome::Failed(_) => return None,
        };
        (!ttl.is_zero()).then_some(ttl)
    }

    /// The answer kept for `key`, if it has not expired at `now`.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Outcome> {
        match self.entries.get(key) {
            Some(e) if now < e.expires => Some(e.outcome.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `outcome` for `key` from `now`, if its kind is kept at all.
    pub fn insert(&mut self, key: &str, outcome: Outcome, now: Instant) {
        let Some(ttl) = self.ttl_for(&outcome) else {
            return;
        };
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.entries.insert(
            key.to_owned(),
            Entry {
                outcome,
                expires: now + ttl,
                serial,
            },
        );
        self.order.push_back((key.to_owned(), serial));
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|e| e.serial == *s));
        }
    }

    /// Frees at least one place: everything expired, else the oldest.
    fn make_room(&mut self, now: Instant) {
        let before = self.entries.len();
        self.entries.retain(|_, e| now < e.expires);
        if self.entries.len() < before {
            return;
        }
        while let Some((k, serial)) = self.order.pop_front() {
            if self.entries.get(&k).is_some_and(|e| e.serial == serial) {
                self.entries.remove(&k);
                return;
            }
        }
    }

    /// Answers kept (expired ones included until they are looked at).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::answer::{Failure, Found, Target};
    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const UNKNOWN: Duration = Duration::from_secs(5);

    fn route(pool: &str) -> Outcome {
        Outcome::Found(Found {
            target: Target::Pool(pool.into()),
            user: None,
        })
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn routes_are_kept_for_the_ttl_and_unknown_users_for_less() {
        let t0 = Instant::now();
        let mut c = Cache::new(100, TTL, UNKNOWN);
        c.insert("/?u=alice", route("a"), t0);
        c.insert("/?u=nobody", Outcome::Unknown, t0);
        assert_eq!(c.get("/?u=alice", t0 + secs(29)), Some(route("a")));
        assert_eq!(c.get("/?u=nobody", t0 + secs(4)), Some(Outcome::Unknown));
        assert_eq!(c.get("/?u=nobody", t0 + secs(5)), None, "unknown expired");
        assert_eq!(c.get("/?u=alice", t0 + secs(30)), None, "route expired");
        assert!(c.is_empty(), "expired entries are dropped when looked at");
        // Kept again from the new answer's time.
        c.insert("/?u=alice", route("b"), t0 + secs(31));
        assert_eq!(c.get("/?u=alice", t0 + secs(60)), Some(route("b")));
    }

    #[test]
    fn failures_are_never_kept_and_zero_keeps_nothing() {
        let t0 = Instant::now();
        let mut c = Cache::new(100, TTL, UNKNOWN);
        for f in [
            Failure::Status(500),
            Failure::Timeout(secs(2)),
            Failure::Malformed("x".into()),
            Failure::Io("refused".into()),
        ] {
            c.insert("/k", Outcome::Failed(f), t0);
            assert_eq!(c.get("/k", t0), None);
        }
        let mut off = Cache::new(100, Duration::ZERO, UNKNOWN);
        assert_eq!(off.ttl_for(&Outcome::Unknown), None, "capped by the ttl");
        off.insert("/k", route("a"), t0);
        off.insert("/u", Outcome::Unknown, t0);
        assert!(off.is_empty());
        let c = Cache::new(1, TTL, secs(60));
        assert_eq!(c.ttl_for(&Outcome::Unknown), Some(TTL));
    }

    #[test]
    fn the_bound_drops_the_expired_then_the_oldest() {
        let t0 = Instant::now();
        let mut c = Cache::new(3, TTL, UNKNOWN);
        c.insert("a", route("a"), t0);
        c.insert("b", Outcome::Unknown, t0);
        c.insert("c", route("c"), t0);
        // Full, "b" expired: it makes room.
        c.insert("d", route("d"), t0 + secs(6));
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("b", t0 + secs(6)), None);
        assert!(c.get("a", t0 + secs(6)).is_some());
        // Full, nothing expired: the oldest goes.
        c.insert("e", route("e"), t0 + secs(7));
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("a", t0 + secs(7)), None);
        for k in ["c", "d", "e"] {
            assert!(c.get(k, t0 + secs(7)).is_some(), "{k}");
        }
        // Replacing a kept key needs no room and renews its age.
        c.insert("c", route("c2"), t0 + secs(8));
        c.insert("f", route("f"), t0 + secs(9));
        assert_eq!(c.get("d", t0 + secs(9)), None, "d was oldest now");
        assert_eq!(c.get("c", t0 + secs(9)), Some(route("c2")));
    }

    /// Many refreshes of the same keys keep the order queue bounded.
    #[test]
    fn the_order_queue_stays_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::new(10, TTL, UNKNOWN);
        for i in 0..10_000u64 {
            let k = format!("k{}", i % 4);
            c.insert(&k, route("a"), t0 + Duration::from_millis(i));
            assert!(c.order.len() <= 20);
        }
        assert_eq!(c.len(), 4);
        // And a stream of new keys never grows past the bound.
        for i in 0..1000u64 {
            c.insert(&format!("n{i}"), route("a"), t0 + secs(11));
            assert!(c.len() <= 10);
        }
    }
}
