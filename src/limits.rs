//! Admission limits on new control connections: sessions in total, sessions
//! per client address, and new connections per second per client address.
//!
//! [`Admission::admit`] takes the limits and the clock as arguments, so the
//! rules are tested without sockets or sleeping. An admitted connection holds
//! an [`Admitted`] guard; dropping it releases its session slots.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

/// The limits in force (from the live configuration).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most sessions in total.
    pub max_sessions: usize,
    /// Most sessions from one client address.
    pub max_sessions_per_client: usize,
    /// Most new connections from one address within one second.
    pub max_rate_per_client: u32,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// `max_sessions`.
    Sessions,
    /// `max_sessions_per_client`.
    SessionsPerClient,
    /// `max_connection_rate_per_client`.
    Rate,
}

impl LimitHit {
    /// The metric label and config key.
    pub fn key(self) -> &'static str {
        match self {
            LimitHit::Sessions => "max_sessions",
            LimitHit::SessionsPerClient => "max_sessions_per_client",
            LimitHit::Rate => "max_connection_rate_per_client",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// Counters shared by every accept loop.
#[derive(Debug, Default)]
pub struct Admission {
    total: AtomicUsize,
    per_client: DashMap<IpAddr, usize>,
    rate: DashMap<IpAddr, Window>,
}

/// One admitted session's slots; released on drop.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::Relaxed);
        self.admission
            .per_client
            .remove_if_mut(&self.client, |_, n| {
                *n -= 1;
                *n == 0
            });
    }
}

/// Rate windows kept before old ones are swept.
const SWEEP_ABOVE: usize = 10_000;

impl Admission {
    /// Empty counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Admission::default())
    }

    /// Sessions currently admitted.
    pub fn sessions(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Admits a new connection from `client` at `now`, or names the limit it hits.
    pub fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        limits: Limits,
        now: Instant,
    ) -> Result<Admitted, LimitHit> {
        // The rate counts every attempt, refused ones included: a client
        // hammering the port stays refused until it slows down.
        {
            let mut w = self.rate.entry(client).or_insert(Window {
                start: now,
                count: 0,
            });
            if now.duration_since(w.start).as_secs_f64() >= 1.0 {
                *w = Window {
                    start: now,
                    count: 0,
                };
            }
            w.count = w.count.saturating_add(1);
            if w.count > limits.max_rate_per_client {
                return Err(LimitHit::Rate);
            }
        }
        if self.rate.len() > SWEEP_ABOVE {
            self.rate
                .retain(|_, w| now.duration_since(w.start).as_secs_f64() < 1.0);
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= limits.max_sessions {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(LimitHit::Sessions);
        }
        let mut n = self.per_client.entry(client).or_insert(0);
        if *n >= limits.max_sessions_per_client {
            drop(n);
            self.total.fetch_sub(1, Ordering::Relaxed);
            // Leave no zero entry behind.
            self.per_client.remove_if(&client, |_, n| *n == 0);
            return Err(LimitHit::SessionsPerClient);
        }
        *n += 1;
        Ok(Admitted {
            admission: Arc::clone(self),
            client,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const L: Limits = Limits {
        max_sessions: 3,
        max_sessions_per_client: 2,
        max_rate_per_client: 100,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn per_client_and_total_limits_and_release() {
        let a = Admission::new();
        let t = Instant::now();
        let a1 = a.admit(ip(1), L, t).unwrap();
        let _a2 = a.admit(ip(1), L, t).unwrap();
        assert_eq!(
            a.admit(ip(1), L, t).unwrap_err(),
            LimitHit::SessionsPerClient
        );
        let _b1 = a.admit(ip(2), L, t).unwrap();
        assert_eq!(a.admit(ip(3), L, t).unwrap_err(), LimitHit::Sessions);
        assert_eq!(a.sessions(), 3);
        drop(a1);
        assert_eq!(a.sessions(), 2);
        let _c1 = a.admit(ip(3), L, t).unwrap();
    }

    #[test]
    fn entries_vanish_when_sessions_end() {
        let a = Admission::new();
        let t = Instant::now();
        let g = a.admit(ip(1), L, t).unwrap();
        drop(g);
        assert!(a.per_client.is_empty());
        assert_eq!(a.sessions(), 0);
    }

    #[test]
    fn rate_limit_per_second_window() {
        let a = Admission::new();
        let limits = Limits {
            max_rate_per_client: 3,
            max_sessions_per_client: 100,
            ..L
        };
        let limits = Limits {
            max_sessions: 100,
            ..limits
        };
        let t = Instant::now();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(a.admit(ip(1), limits, t).unwrap());
        }
        assert_eq!(a.admit(ip(1), limits, t).unwrap_err(), LimitHit::Rate);
        // Another address is not affected.
        held.push(a.admit(ip(2), limits, t).unwrap());
        // A second later the window starts again.
        held.push(
            a.admit(ip(1), limits, t + Duration::from_millis(1001))
                .unwrap(),
        );
    }
}
