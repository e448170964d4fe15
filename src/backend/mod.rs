//! Backends: one pool of configured servers, their health, and selection
//! among the usable ones by the pool's policy ([`policy`]), skipping
//! backends that fail their health checks ([`health`]) or drain.

pub mod health;
pub mod policy;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::BackendSpec;
use crate::net::BackendAddr;

pub use health::Health;
pub use policy::Key;
use policy::{Candidate, Policy, SharedSelector};

/// One backend, its health and its open sessions.
#[derive(Debug, Clone)]
pub struct Member {
    /// As configured (with weight and drain flag).
    pub spec: BackendSpec,
    /// Shared with its health-check task; kept across reloads.
    pub health: Arc<Health>,
    /// Sessions open on it now (least-connections); kept across reloads.
    pub active: Arc<AtomicU64>,
}

/// A session's claim on a member's `active` count; released on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<AtomicU64>);

impl ActiveGuard {
    /// Counts one more session on `active`.
    pub fn new(active: &Arc<AtomicU64>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(active))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A backend to try, in preference order.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Its address.
    pub addr: BackendAddr,
    /// Its name as configured.
    pub name: String,
    /// What it speaks (an SFTP member is served through the adapter).
    pub protocol: crate::config::BackendProtocol,
    /// Its open-session count.
    pub active: Arc<AtomicU64>,
}

/// Connects to the first of `choices` (in preference order) that accepts
/// within `timeout`, with a log line for each that does not, and counts the
/// connection on it (least-connections). Shared by FTP sessions and plain
/// TCP listeners.
pub async fn connect_first(
    choices: Vec<Choice>,
    timeout: std::time::Duration,
    session: u64,
) -> Option<(Choice, tokio::net::TcpStream, ActiveGuard)> {
    for choice in choices {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(choice.addr.0)).await {
            Ok(Ok(s)) => {
                let active = ActiveGuard::new(&choice.active);
                return Some((choice, s, active));
            }
            Ok(Err(e)) => {
                tracing::warn!(session, backend = %choice.addr, error = %e, "backend unreachable; trying the next")
            }
            Err(_) => {
                tracing::warn!(session, backend = %choice.addr, "backend connect timed out; trying the next")
            }
        }
    }
    None
}

/// The backend set and its selection policy.
#[derive(Debug)]
pub struct Backends {
    members: Vec<Member>,
    selector: SharedSelector,
}

impl Backends {
    /// A set over `members` (not empty: config validation guarantees it).
    pub fn new(members: Vec<Member>, policy: Policy) -> Self {
        Backends {
            members,
            selector: SharedSelector::new(policy),
        }
    }

    /// Every member.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The backends that may take a new session from `client` (not down by
    /// health check, not draining), best first per the policy: try them in
    /// this order until one accepts.
    pub fn preference(&self, client: IpAddr) -> Vec<Choice> {
        self.preference_by(Key::Addr(client))
    }

    /// The pool's policy.
    pub fn policy(&self) -> Policy {
        self.selector.policy()
    }

    /// Like [`Backends::preference`], hashing `key` for the hash policies
    /// (the user name for `user_hash`).
    pub fn preference_by(&self, key: Key<'_>) -> Vec<Choice> {
        let usable: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| m.health.usable() && !m.spec.drain)
            .collect();
        let candidates: Vec<Candidate<'_>> = usable
            .iter()
            .enumerate()
            .map(|(index, m)| Candidate {
                index,
                name: &m.spec.name,
                weight: m.spec.weight,
                active: m.active.load(Ordering::Relaxed),
            })
            .collect();
        self.selector
            .preference(&candidates, key)
            .into_iter()
            .map(|i| {
                let m = usable[i];
                Choice {
                    addr: BackendAddr(m.spec.addr),
                    name: m.spec.name.clone(),
                    protocol: m.spec.protocol,
                    active: Arc::clone(&m.active),
                }
            })
            .collect()
    }

    /// Whether at least one backend passes its checks (or checks are off)
    /// and is not draining.
    pub fn any_up(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.health.ready() && !m.spec.drain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(p: u16, weight: u32, drain: bool) -> Member {
        Member {
            spec: BackendSpec {
                name: format!("127.0.0.1:{p}"),
                protocol: crate::config::BackendProtocol::Ftp,
                addr: format!("127.0.0.1:{p}").parse().unwrap(),
                weight,
                drain,
            },
            health: Arc::new(Health::new(2, 3)),
            active: Arc::new(AtomicU64::new(0)),
        }
    }

    fn first(b: &Backends) -> u16 {
        b.preference(IpAddr::from([10, 0, 0, 1]))[0].addr.0.port()
    }

    #[test]
    fn round_robin_starts_at_the_next_backend() {
        let b = Backends::new(
            vec![
                member(1, 1, false),
                member(2, 1, false),
                member(3, 1, false),
            ],
            Policy::RoundRobin,
        );
        let firsts: Vec<u16> = (0..6).map(|_| first(&b)).collect();
        assert_eq!(firsts, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(b.preference(IpAddr::from([10, 0, 0, 1])).len(), 3);
    }

    #[test]
    fn down_and_draining_backends_get_no_new_sessions() {
        let b = Backends::new(
            vec![member(1, 1, false), member(2, 1, false), member(3, 1, true)],
            Policy::RoundRobin,
        );
        b.members()[0].health.record(false);
        let ports: Vec<u16> = (0..4).map(|_| first(&b)).collect();
        assert_eq!(ports, vec![2, 2, 2, 2]);
        b.members()[1].health.record(false);
        assert!(b.preference(IpAddr::from([10, 0, 0, 1])).is_empty());
        assert!(
            !b.any_up(),
            "a draining backend does not make ftpgate ready"
        );
    }

    #[test]
    fn least_connections_follows_the_active_counts() {
        let b = Backends::new(
            vec![member(1, 1, false), member(2, 1, false)],
            Policy::LeastConnections,
        );
        let _g1 = ActiveGuard::new(&b.members()[0].active);
        assert_eq!(first(&b), 2);
        let g2 = ActiveGuard::new(&b.members()[1].active);
        let _g3 = ActiveGuard::new(&b.members()[1].active);
        assert_eq!(first(&b), 1);
        drop(g2);
        assert_eq!(b.members()[1].active.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn source_hash_keeps_a_client_on_its_backend() {
        let b = Backends::new(
            vec![
                member(1, 1, false),
                member(2, 1, false),
                member(3, 1, false),
            ],
            Policy::SourceHash,
        );
        let client = IpAddr::from([192, 0, 2, 77]);
        let chosen = b.preference(client)[0].addr;
        for _ in 0..10 {
            assert_eq!(b.preference(client)[0].addr, chosen);
        }
    }
}
