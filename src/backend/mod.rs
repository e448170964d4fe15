//! Backends: the configured servers and round-robin selection among them.
//!
//! Health checks, weights and policies come with load balancing (issue 3);
//! this is the plain rotation the core needs.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::BackendSpec;
use crate::net::BackendAddr;

/// The backend set, tried in rotation.
#[derive(Debug)]
pub struct Backends {
    list: Vec<BackendSpec>,
    next: AtomicUsize,
}

impl Backends {
    /// A set over `list` (not empty: config validation guarantees it).
    pub fn new(list: Vec<BackendSpec>) -> Self {
        Backends {
            list,
            next: AtomicUsize::new(0),
        }
    }

    /// Every backend once, starting with the next in rotation: try them in
    /// this order until one accepts.
    pub fn rotation(&self) -> Vec<BackendAddr> {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n)
            .map(|i| BackendAddr(self.list[(start + i) % n].addr))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_starts_at_the_next_backend() {
        let spec = |p: u16| BackendSpec {
            name: format!("127.0.0.1:{p}"),
            addr: format!("127.0.0.1:{p}").parse().unwrap(),
        };
        let b = Backends::new(vec![spec(1), spec(2), spec(3)]);
        let firsts: Vec<u16> = (0..6).map(|_| b.rotation()[0].0.port()).collect();
        assert_eq!(firsts, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(b.rotation().len(), 3);
    }
}
