//! Passive-port leases and the routing table they live in.
//!
//! A lease reserves (public port, client IP) for one expected data
//! connection. Several sessions may hold the same port at once as long as
//! their client addresses differ, so a 100-port range serves thousands of
//! clients; two pending connections from one client address never share a
//! port. When foreign data addresses are allowed, leases are exclusive per
//! port instead (the client address is then unknown in advance).
//!
//! Ports are picked at random within the range (no predictable next port).
//! A lease is returned when it is dropped. No I/O here.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rand::Rng;

/// Key of one pending data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RouteKey {
    port: u16,
    /// `None` when leases are exclusive per port.
    client: Option<IpAddr>,
}

#[derive(Debug)]
struct Route<T> {
    /// Distinguishes this lease from a later one on the same key.
    id: u64,
    /// Handed to whoever claims the route; `None` once claimed.
    payload: Option<T>,
}

/// The table of pending passive data connections, shared by all sessions and
/// the accept loops of every passive port.
#[derive(Debug)]
pub struct PortPool<T> {
    first: u16,
    last: u16,
    exclusive: bool,
    routes: DashMap<RouteKey, Route<T>>,
    next_id: AtomicU64,
}

/// A reserved (port, client) pair; dropping it frees the pair.
#[derive(Debug)]
pub struct Lease<T> {
    pool: Arc<PortPool<T>>,
    key: RouteKey,
    id: u64,
}

impl<T> Lease<T> {
    /// The public port the client should connect to.
    pub fn port(&self) -> u16 {
        self.key.port
    }
}

impl<T> Drop for Lease<T> {
    fn drop(&mut self) {
        self.pool
            .routes
            .remove_if(&self.key, |_, r| r.id == self.id);
    }
}

impl<T> PortPool<T> {
    /// A pool over `first..=last`; `exclusive` makes each port serve one client at a time.
    pub fn new(first: u16, last: u16, exclusive: bool) -> Arc<Self> {
        debug_assert!(first <= last);
        Arc::new(PortPool {
            first,
            last,
            exclusive,
            routes: DashMap::new(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Number of ports in the range.
    pub fn size(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Pending routes right now.
    pub fn pending(&self) -> usize {
        self.routes.len()
    }

    /// Whether some client has an unclaimed route on `port` (so a refused
    /// connection there came from a foreign address).
    pub fn pending_on(&self, port: u16) -> bool {
        self.routes
            .iter()
            .any(|r| r.key().port == port && r.payload.is_some())
    }

    fn key(&self, port: u16, client: IpAddr) -> RouteKey {
        RouteKey {
            port,
            client: (!self.exclusive).then_some(client),
        }
    }

    /// Leases a random free port for `client`, storing `payload` for the
    /// connection that claims it. `None` if every port is taken for this client.
    pub fn lease(self: &Arc<Self>, client: IpAddr, payload: T) -> Option<Lease<T>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let n = self.size();
        let mut rng = rand::thread_rng();
        let mut payload = Some(payload);
        // A few random probes, then one full scan from a random offset so an
        // almost full range still finds its last free port.
        let start = rng.gen_range(0..n);
        let probes: [usize; 8] = std::array::from_fn(|_| rng.gen_range(0..n));
        let scan = (0..n).map(move |i| (start + i) % n);
        for off in probes.into_iter().chain(scan) {
            let port = self.first + off as u16;
            let key = self.key(port, client);
            if let Entry::Vacant(v) = self.routes.entry(key) {
                v.insert(Route {
                    id,
                    payload: payload.take(),
                });
                return Some(Lease {
                    pool: Arc::clone(self),
                    key,
                    id,
                });
            }
        }
        None
    }

    /// Claims the route for a connection that arrived on `port` from `peer`.
    /// The lease stays reserved until its holder drops it.
    pub fn claim(&self, port: u16, peer: IpAddr) -> Option<T> {
        let key = self.key(port, peer);
        self.routes.get_mut(&key).and_then(|mut r| r.payload.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_never_shares_a_port_and_exhaustion_is_none() {
        let pool = PortPool::new(50000, 50009, false);
        let leases: Vec<_> = (0..10)
            .map(|i| pool.lease(ip("10.0.0.1"), i).unwrap())
            .collect();
        let mut ports: Vec<u16> = leases.iter().map(Lease::port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 10);
        assert!(pool.lease(ip("10.0.0.1"), 99).is_none());
        // Another client still gets a port from the same full range.
        assert!(pool.lease(ip("10.0.0.2"), 100).is_some());
    }

    #[test]
    fn dropped_lease_frees_its_port() {
        let pool = PortPool::new(7000, 7000, false);
        let l = pool.lease(ip("10.0.0.1"), ()).unwrap();
        assert!(pool.lease(ip("10.0.0.1"), ()).is_none());
        drop(l);
        assert!(pool.lease(ip("10.0.0.1"), ()).is_some());
    }

    #[test]
    fn claim_only_by_the_leasing_client() {
        let pool = PortPool::new(7000, 7000, false);
        let _l = pool.lease(ip("10.0.0.1"), "route").unwrap();
        assert_eq!(pool.claim(7000, ip("10.0.0.2")), None);
        assert_eq!(pool.claim(7000, ip("10.0.0.1")), Some("route"));
        assert_eq!(pool.claim(7000, ip("10.0.0.1")), None, "claimed once");
    }

    #[test]
    fn exclusive_pool_serves_any_address_once() {
        let pool = PortPool::new(7000, 7000, true);
        let _l = pool.lease(ip("10.0.0.1"), 1).unwrap();
        assert!(pool.lease(ip("10.0.0.2"), 2).is_none());
        assert_eq!(pool.claim(7000, ip("192.0.2.9")), Some(1));
    }

    #[test]
    fn stale_lease_drop_does_not_remove_newer_route() {
        let pool = PortPool::new(7000, 7000, false);
        let old = pool.lease(ip("10.0.0.1"), 1).unwrap();
        // Simulate the route being replaced under the same key.
        pool.routes.remove(&old.key);
        let _new = pool.lease(ip("10.0.0.1"), 2).unwrap();
        drop(old);
        assert_eq!(pool.claim(7000, ip("10.0.0.1")), Some(2));
    }

    proptest! {
        #[test]
        fn never_leases_one_pair_twice(ops in proptest::collection::vec((0u8..4, any::<bool>()), 1..200)) {
            let pool = PortPool::new(100, 109, false);
            let mut held: Vec<Lease<()>> = Vec::new();
            for (client, release) in ops {
                if release && !held.is_empty() {
                    held.remove(0);
                    continue;
                }
                let c = IpAddr::from([10, 0, 0, client]);
                if let Some(l) = pool.lease(c, ()) {
                    prop_assert!(!held.iter().any(|h| h.key == l.key));
                    prop_assert!((100..=109).contains(&l.port()));
                    held.push(l);
                } else {
                    prop_assert_eq!(held.iter().filter(|h| h.key.client == Some(c)).count(), 10);
                }
            }
            prop_assert_eq!(pool.pending(), held.len());
        }
    }
}
