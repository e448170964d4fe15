//! Backends: the configured servers, their health, and round-robin
//! selection among the usable ones.
//!
//! Weights, policies and pools come with load balancing (issue 3); this is
//! the plain rotation the core needs, skipping backends that fail their
//! health checks ([`health`]).

pub mod health;
pub mod policy;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::BackendSpec;
use crate::net::BackendAddr;

pub use health::Health;

/// One backend and its health.
#[derive(Debug, Clone)]
pub struct Member {
    /// As configured.
    pub spec: BackendSpec,
    /// Shared with its health-check task; kept across reloads.
    pub health: Arc<Health>,
}

/// The backend set, tried in rotation.
#[derive(Debug)]
pub struct Backends {
    members: Vec<Member>,
    next: AtomicUsize,
}

impl Backends {
    /// A set over `members` (not empty: config validation guarantees it).
    pub fn new(members: Vec<Member>) -> Self {
        Backends {
            members,
            next: AtomicUsize::new(0),
        }
    }

    /// Every member.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every usable backend once (not known to be down), starting with the
    /// next in rotation: try them in this order until one accepts.
    pub fn rotation(&self) -> Vec<(BackendAddr, &BackendSpec)> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .filter(|m| m.health.usable())
            .map(|m| (BackendAddr(m.spec.addr), &m.spec))
            .collect()
    }

    /// Whether at least one backend passes its checks (or checks are off).
    pub fn any_up(&self) -> bool {
        self.members.iter().any(|m| m.health.ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(p: u16) -> Member {
        Member {
            spec: BackendSpec {
                name: format!("127.0.0.1:{p}"),
                addr: format!("127.0.0.1:{p}").parse().unwrap(),
            },
            health: Arc::new(Health::new(2, 3)),
        }
    }

    #[test]
    fn rotation_starts_at_the_next_backend() {
        let b = Backends::new(vec![member(1), member(2), member(3)]);
        let firsts: Vec<u16> = (0..6).map(|_| b.rotation()[0].0 .0.port()).collect();
        assert_eq!(firsts, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(b.rotation().len(), 3);
    }

    #[test]
    fn rotation_skips_down_backends() {
        let b = Backends::new(vec![member(1), member(2)]);
        b.members()[0].health.record(false);
        let ports: Vec<u16> = (0..4).map(|_| b.rotation()[0].0 .0.port()).collect();
        assert_eq!(ports, vec![2, 2, 2, 2]);
        b.members()[1].health.record(false);
        assert!(b.rotation().is_empty());
        assert!(!b.any_up());
    }
}
