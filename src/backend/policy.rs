//! Backend selection policies for a pool: smooth weighted round robin,
//! weighted least connections, and rendezvous hashing by client address or
//! by user name.
//!
//! Pure code: no sockets, no clocks, no locks held across I/O. The caller
//! passes the usable members ([`Candidate`]s: down and draining members
//! already filtered out) and a [`Key`]; the [`Selector`] answers with member
//! indices. The only state is the round-robin "current weight" per member.
//!
//! Weights: a member of weight 0 is a standby. It is never picked while a
//! candidate of positive weight exists, and comes after all of them in
//! [`Selector::preference`], so it is tried only when every weighted member
//! failed to connect. When every candidate has weight 0, all count as 1.
//!
//! Hashing must give the same answer on every ftpgate instance behind an L4
//! balancer, on every platform and in every version, so it is specified
//! here and pinned by a test table: SipHash-2-4 with the fixed key
//! `k0 = u64::from_le_bytes(*b"ftpgate ")`, `k1 = u64::from_le_bytes(*b"backends")`
//! over `tag || key || member name`, where `tag || key` is `b'A' 4 a b c d`
//! (IPv4; IPv4-mapped IPv6 counts as IPv4), `b'A' 6` and 16 bytes (IPv6), or
//! `b'U'`, the name's length as u32 little-endian, and its bytes (user). Of
//! the hash `h`, the top 53 bits `x` give `u = (2x + 1) / 2^54` in (0, 1);
//! the member's score is `weight / -log2(u)`, with `-log2(u)` in 32-bit
//! fixed point computed by integer arithmetic only (no floating point, whose
//! `ln` differs between libms). The highest score wins (weighted rendezvous
//! hashing: a member wins with probability weight / total weight, and
//! removing a member, marking it down or changing its weight moves keys only
//! from or to that member); ties go to the higher `h`, then the smaller name.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

/// How a pool chooses a member for a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Smooth weighted round robin (nginx): weights 5, 1, 1 give
    /// `a a b a c a a`. Config name `round_robin`.
    #[default]
    RoundRobin,
    /// Fewest active sessions per unit of weight; ties by smooth weighted
    /// round robin among the tied (as nginx `least_conn`). Config name
    /// `least_connections`.
    LeastConnections,
    /// Rendezvous hash of the client address: a client keeps its backend
    /// across sessions and across ftpgate instances. Config name `source_hash`.
    SourceHash,
    /// Rendezvous hash of the user name (per-user routing without a map);
    /// the backend is chosen after `USER`. Config name `user_hash`.
    UserHash,
}

impl Policy {
    /// Every policy, in documentation order.
    pub const ALL: [Policy; 4] = [
        Policy::RoundRobin,
        Policy::LeastConnections,
        Policy::SourceHash,
        Policy::UserHash,
    ];

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::LeastConnections => "least_connections",
            Policy::SourceHash => "source_hash",
            Policy::UserHash => "user_hash",
        }
    }

    /// Whether the backend can only be chosen once the user name is known.
    pub fn needs_user(self) -> bool {
        self == Policy::UserHash
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is none of [`Policy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy `{0}`: expected round_robin, least_connections, source_hash or user_hash")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}

/// One usable pool member, as the caller sees it at selection time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The member's position in the pool: what the selector returns, and the
    /// key of its round-robin state. Distinct within one call.
    pub index: usize,
    /// Stable identity for hashing (the configured name, e.g. `host:port`):
    /// the same on every instance and across reloads, distinct in a pool.
    /// Hashing by name, not index, means removing a member from the
    /// configuration moves only that member's clients.
    pub name: &'a str,
    /// Relative share of new sessions; 0 makes the member a standby.
    pub weight: u32,
    /// Sessions currently open on the member (for least connections).
    pub active: u64,
}

/// What a session is hashed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// Nothing: the hash policies fall back to smooth weighted round robin.
    None,
    /// The client's address (for [`Policy::SourceHash`]).
    Addr(IpAddr),
    /// The user name as sent in `USER`, compared byte for byte (for
    /// [`Policy::UserHash`]; either hash policy hashes the key it is given).
    User(&'a str),
}

// === impl Selector ===

/// Selection state for one pool: the smooth weighted round-robin current
/// weight of each member. Keep one per pool (behind a `Mutex`, or use
/// [`SharedSelector`]); start a new one when the pool's indices change.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// nginx's `current_weight` per member index. Every round adds each
    /// participant's weight and takes the round's total from the winner, so
    /// the values sum to 0; members missing from a round keep theirs.
    current: BTreeMap<usize, i64>,
}

impl Selector {
    /// A selector with no history.
    pub const fn new() -> Self {
        Selector {
            current: BTreeMap::new(),
        }
    }

    /// The index of the member a new session should go to, or `None` when
    /// there are no candidates. Advances round-robin state (round robin,
    /// least connections, and hash policies without a key).
    pub fn pick(
        &mut self,
        policy: Policy,
        candidates: &[Candidate<'_>],
        key: Key<'_>,
    ) -> Option<usize> {
        let (first, _) = tiers(candidates);
        match rule(policy, key) {
            Rule::Hash(hk) => best_by_hash(&hk, &first),
            Rule::Rotate(r) => step(r, &mut self.current, &first).map(|pos| first[pos].index),
        }
    }

    /// Every candidate's index once, first choice first: connect to them in
    /// this order until one accepts. The first is what [`Selector::pick`]
    /// would return, and only that choice advances round-robin state; the
    /// rest are the choices that would follow if each earlier one were gone.
    pub fn preference(
        &mut self,
        policy: Policy,
        candidates: &[Candidate<'_>],
        key: Key<'_>,
    ) -> Vec<usize> {
        let (first, standby) = tiers(candidates);
        let mut out = Vec::with_capacity(candidates.len());
        match rule(policy, key) {
            Rule::Hash(hk) => {
                hash_order(&hk, first, &mut out);
                hash_order(&hk, standby, &mut out);
            }
            Rule::Rotate(r) => {
                self.rotate_order(r, first, true, &mut out);
                self.rotate_order(r, standby, false, &mut out);
            }
        }
        out
    }

    /// Appends `slots` in round-robin or least-connections order; with
    /// `commit`, the first choice updates the state, the rest run on a copy.
    fn rotate_order(
        &mut self,
        rotation: Rotation,
        mut slots: Vec<Slot<'_>>,
        commit: bool,
        out: &mut Vec<usize>,
    ) {
        if commit {
            if let Some(pos) = step(rotation, &mut self.current, &slots) {
                out.push(slots.remove(pos).index);
            }
        }
        if slots.is_empty() {
            return;
        }
        let mut scratch = self.current.clone();
        while let Some(pos) = step(rotation, &mut scratch, &slots) {
            out.push(slots.remove(pos).index);
        }
    }
}

// === impl SharedSelector ===

/// A pool's policy and its [`Selector`] behind a mutex, for sharing between
/// session tasks. Hash policies with a key take no lock.
#[derive(Debug, Default)]
pub struct SharedSelector {
    policy: Policy,
    selector: Mutex<Selector>,
}

impl SharedSelector {
    /// A selector for a pool using `policy`.
    pub const fn new(policy: Policy) -> Self {
        SharedSelector {
            policy,
            selector: Mutex::new(Selector::new()),
        }
    }

    /// The pool's policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// [`Selector::pick`] with this pool's policy.
    pub fn pick(&self, candidates: &[Candidate<'_>], key: Key<'_>) -> Option<usize> {
        if let Rule::Hash(hk) = rule(self.policy, key) {
            return best_by_hash(&hk, &tiers(candidates).0);
        }
        self.lock().pick(self.policy, candidates, key)
    }

    /// [`Selector::preference`] with this pool's policy.
    pub fn preference(&self, candidates: &[Candidate<'_>], key: Key<'_>) -> Vec<usize> {
        if let Rule::Hash(hk) = rule(self.policy, key) {
            let (first, standby) = tiers(candidates);
            let mut out = Vec::with_capacity(candidates.len());
            hash_order(&hk, first, &mut out);
            hash_order(&hk, standby, &mut out);
            return out;
        }
        self.lock().preference(self.policy, candidates, key)
    }

    /// The state is a set of counters, valid whatever a panicking holder
    /// did, so a poisoned lock is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Selector> {
        self.selector.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === selection rules ===

/// A candidate with its effective weight (standbys count 1 among themselves).
#[derive(Debug, Clone, Copy)]
struct Slot<'a> {
    index: usize,
    name: &'a str,
    weight: u32,
    active: u64,
}

/// Splits candidates into the tier to choose from and the standbys that
/// follow it: weighted members then weight-0 ones, or, when none has a
/// weight, all of them at weight 1.
fn tiers<'a>(candidates: &[Candidate<'a>]) -> (Vec<Slot<'a>>, Vec<Slot<'a>>) {
    let slot = |c: &Candidate<'a>, weight| Slot {
        index: c.index,
        name: c.name,
        weight,
        active: c.active,
    };
    let (weighted, standby): (Vec<_>, Vec<_>) = candidates.iter().partition(|c| c.weight > 0);
    let weighted: Vec<Slot<'a>> = weighted.into_iter().map(|c| slot(c, c.weight)).collect();
    let standby: Vec<Slot<'a>> = standby.into_iter().map(|c| slot(c, 1)).collect();
    if weighted.is_empty() {
        (standby, Vec::new())
    } else {
        (weighted, standby)
    }
}

/// What one selection does, from the policy and the key available.
#[derive(Debug, Clone, Copy)]
enum Rule<'k> {
    Rotate(Rotation),
    Hash(HashKey<'k>),
}

/// The rules that keep round-robin state.
#[derive(Debug, Clone, Copy)]
enum Rotation {
    RoundRobin,
    LeastConnections,
}

fn rule<'k>(policy: Policy, key: Key<'k>) -> Rule<'k> {
    match (policy, key) {
        (Policy::RoundRobin, _) => Rule::Rotate(Rotation::RoundRobin),
        (Policy::LeastConnections, _) => Rule::Rotate(Rotation::LeastConnections),
        // A hash policy hashes whichever key it is given; with none (a
        // session that cannot supply one) it still spreads sessions.
        (Policy::SourceHash | Policy::UserHash, Key::None) => Rule::Rotate(Rotation::RoundRobin),
        (Policy::SourceHash | Policy::UserHash, Key::Addr(a)) => {
            Rule::Hash(HashKey::Addr(a.to_canonical()))
        }
        (Policy::SourceHash | Policy::UserHash, Key::User(u)) => Rule::Hash(HashKey::User(u)),
    }
}

/// One round over `slots`: the position of its choice (`None` if empty).
fn step(
    rotation: Rotation,
    current: &mut BTreeMap<usize, i64>,
    slots: &[Slot<'_>],
) -> Option<usize> {
    match rotation {
        Rotation::RoundRobin => smooth_round(current, slots.iter().enumerate()),
        Rotation::LeastConnections => {
            let least = slots.iter().min_by(|a, b| load_cmp(a, b))?;
            smooth_round(
                current,
                slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| load_cmp(s, least).is_eq()),
            )
        }
    }
}

/// Compares `active / weight` without division or overflow.
fn load_cmp(a: &Slot<'_>, b: &Slot<'_>) -> Ordering {
    let lhs = u128::from(a.active) * u128::from(b.weight);
    let rhs = u128::from(b.active) * u128::from(a.weight);
    lhs.cmp(&rhs)
}

/// One round of nginx's smooth weighted round robin
/// (`ngx_http_upstream_get_peer`): every participant's current weight grows
/// by its weight, the largest wins (the lower index on a tie) and gives back
/// the round's total. Returns the winner's position.
fn smooth_round<'s, 'a: 's>(
    current: &mut BTreeMap<usize, i64>,
    participants: impl Iterator<Item = (usize, &'s Slot<'a>)>,
) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<(usize, usize, i64)> = None;
    for (pos, s) in participants {
        let weight = i64::from(s.weight);
        let cw = current.entry(s.index).or_insert(0);
        *cw = cw.saturating_add(weight);
        total = total.saturating_add(weight);
        let wins = match best {
            None => true,
            Some((_, index, value)) => *cw > value || (*cw == value && s.index < index),
        };
        if wins {
            best = Some((pos, s.index, *cw));
        }
    }
    let (pos, index, _) = best?;
    if let Some(cw) = current.get_mut(&index) {
        *cw = cw.saturating_sub(total);
    }
    Some(pos)
}

// === rendezvous hashing ===

/// A hash key after normalisation (IPv4-mapped IPv6 as IPv4).
#[derive(Debug, Clone, Copy)]
enum HashKey<'k> {
    Addr(IpAddr),
    User(&'k str),
}

/// `k0` and `k1` of the SipHash key: fixed, so that every instance agrees.
const SIP_K0: u64 = u64::from_le_bytes(*b"ftpgate ");
const SIP_K1: u64 = u64::from_le_bytes(*b"backends");

/// Fraction bits of the fixed-point `-log2(u)`.
const FRAC_BITS: u32 = 32;

/// SipHash state with `tag || key` absorbed, ready for a member's name.
fn key_hasher(key: &HashKey<'_>) -> SipHasher24 {
    let mut h = SipHasher24::new(SIP_K0, SIP_K1);
    match key {
        HashKey::Addr(IpAddr::V4(a)) => {
            h.write(b"A\x04");
            h.write(&a.octets());
        }
        HashKey::Addr(IpAddr::V6(a)) => {
            h.write(b"A\x06");
            h.write(&a.octets());
        }
        HashKey::User(u) => {
            h.write(b"U");
            // A name longer than 4 GiB cannot come from a command line.
            h.write(&u32::try_from(u.len()).unwrap_or(u32::MAX).to_le_bytes());
            h.write(u.as_bytes());
        }
    }
    h
}

/// A member's rendezvous score for one key. Greater is better.
#[derive(Debug, Clone, Copy)]
struct Score<'a> {
    weight: u32,
    /// `-log2(u)` in fixed point, at least 1.
    neglog: u64,
    hash: u64,
    name: &'a str,
    index: usize,
}

fn score<'a>(prefix: &SipHasher24, slot: &Slot<'a>) -> Score<'a> {
    let mut h = prefix.clone();
    h.write(slot.name.as_bytes());
    let hash = h.finish();
    Score {
        weight: slot.weight,
        neglog: neg_log2_unit(hash),
        hash,
        name: slot.name,
        index: slot.index,
    }
}

/// Orders scores: `weight / neglog` (by cross-multiplying), then the hash,
/// then the smaller name, then the smaller index (names should be unique).
fn score_cmp(a: &Score<'_>, b: &Score<'_>) -> Ordering {
    let lhs = u128::from(a.weight) * u128::from(b.neglog);
    let rhs = u128::from(b.weight) * u128::from(a.neglog);
    lhs.cmp(&rhs)
        .then(a.hash.cmp(&b.hash))
        .then_with(|| b.name.cmp(a.name))
        .then(b.index.cmp(&a.index))
}

fn best_by_hash(key: &HashKey<'_>, slots: &[Slot<'_>]) -> Option<usize> {
    let prefix = key_hasher(key);
    slots
        .iter()
        .map(|s| score(&prefix, s))
        .max_by(score_cmp)
        .map(|s| s.index)
}

fn hash_order(key: &HashKey<'_>, slots: Vec<Slot<'_>>, out: &mut Vec<usize>) {
    if slots.is_empty() {
        return;
    }
    let prefix = key_hasher(key);
    let mut scores: Vec<Score<'_>> = slots.iter().map(|s| score(&prefix, s)).collect();
    scores.sort_by(|a, b| score_cmp(b, a));
    out.extend(scores.iter().map(|s| s.index));
}

/// `-log2(u) * 2^32` for `u = (2x + 1) / 2^54`, `x` the top 53 bits of
/// `hash`: an exponential variate, so `weight / -log2(u)` makes each member
/// win with probability proportional to its weight. Never 0.
fn neg_log2_unit(hash: u64) -> u64 {
    let odd = ((hash >> 11) << 1) | 1;
    ((54u64 << FRAC_BITS) - log2_fixed(odd)).max(1)
}

/// `log2(x)` for `x >= 1` in fixed point with [`FRAC_BITS`] fraction bits,
/// never above the exact value, by repeated squaring of the mantissa (one bit per square).
/// Integer-only, so identical on every platform.
fn log2_fixed(x: u64) -> u64 {
    debug_assert!(x >= 1);
    let int = 63 - u64::from(x.max(1).leading_zeros());
    // The mantissa x / 2^int in [1, 2), as a Q2.62 number in [2^62, 2^63).
    let mut m = if int <= 62 {
        u128::from(x) << (62 - int)
    } else {
        u128::from(x) >> (int - 62)
    };
    let mut frac = 0u64;
    for _ in 0..FRAC_BITS {
        m = (m * m) >> 62;
        frac <<= 1;
        if m >= 1 << 63 {
            m >>= 1;
            frac |= 1;
        }
    }
    (int << FRAC_BITS) | frac
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012), written out so that its
/// output is fixed whatever `std`'s hasher becomes.
#[derive(Debug, Clone)]
struct SipHasher24 {
    v: [u64; 4],
    /// Bytes not yet absorbed, little-endian in the low `ntail` bytes.
    tail: u64,
    ntail: usize,
    len: u64,
}

impl SipHasher24 {
    fn new(k0: u64, k1: u64) -> Self {
        SipHasher24 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.v;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    fn absorb(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.round();
        self.v[0] ^= m;
    }

    fn write(&mut self, bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u64);
        for &b in bytes {
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
            if self.ntail == 8 {
                self.absorb(self.tail);
                self.tail = 0;
                self.ntail = 0;
            }
        }
    }

    fn finish(&self) -> u64 {
        let mut s = self.clone();
        s.absorb(s.tail | (s.len << 56));
        s.v[2] ^= 0xff;
        for _ in 0..4 {
            s.round();
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Candidates named `m0`, `m1`, ... at indices 0, 1, ... with these weights.
    fn pool<'a>(names: &'a [String], weights: &[u32]) -> Vec<Candidate<'a>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Candidate {
                index: i,
                name: &names[i],
                weight,
                active: 0,
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    /// The 10,000 addresses 10.0.0.0 to 10.0.39.15.
    fn addresses() -> impl Iterator<Item = IpAddr> {
        (0u32..10_000).map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
    }

    fn users() -> Vec<String> {
        (0..10_000).map(|i| format!("user{i}")).collect()
    }

    fn picks(s: &mut Selector, policy: Policy, c: &[Candidate<'_>], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| s.pick(policy, c, Key::None).unwrap())
            .collect()
    }

    #[test]
    fn policy_names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(p.to_string().parse::<Policy>(), Ok(p));
        }
        assert_eq!("least_connections".parse(), Ok(Policy::LeastConnections));
        let err = "RoundRobin".parse::<Policy>().unwrap_err();
        assert_eq!(err, UnknownPolicy("RoundRobin".into()));
        assert!(err.to_string().contains("round_robin"));
        assert_eq!(Policy::default(), Policy::RoundRobin);
        assert!(Policy::UserHash.needs_user() && !Policy::SourceHash.needs_user());
    }

    #[test]
    fn round_robin_5_1_1_interleaves_as_nginx() {
        let n = names(3);
        let c = pool(&n, &[5, 1, 1]);
        let mut s = Selector::new();
        // nginx's ngx_http_upstream_round_robin.c comment: { a, a, b, a, c, a, a }.
        let cycle = [0, 0, 1, 0, 2, 0, 0];
        assert_eq!(
            picks(&mut s, Policy::RoundRobin, &c, 14),
            [cycle, cycle].concat()
        );
    }

    #[test]
    fn round_robin_gives_exact_shares_per_cycle() {
        let n = names(4);
        let c = pool(&n, &[4, 2, 1, 3]);
        let mut s = Selector::new();
        for _ in 0..3 {
            let mut counts = [0; 4];
            for i in picks(&mut s, Policy::RoundRobin, &c, 10) {
                counts[i] += 1;
            }
            assert_eq!(counts, [4, 2, 1, 3]);
        }
    }

    #[test]
    fn round_robin_skips_a_member_that_is_gone_and_takes_it_back() {
        let n = names(3);
        let all = pool(&n, &[1, 1, 1]);
        let mut s = Selector::new();
        assert_eq!(picks(&mut s, Policy::RoundRobin, &all, 3), [0, 1, 2]);
        let without_1 = [all[0], all[2]];
        assert_eq!(
            picks(&mut s, Policy::RoundRobin, &without_1, 4),
            [0, 2, 0, 2]
        );
        let mut counts = [0; 3];
        for i in picks(&mut s, Policy::RoundRobin, &all, 30) {
            counts[i] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn preference_commits_only_its_first_choice() {
        let n = names(3);
        let c = pool(&n, &[5, 1, 1]);
        for policy in [Policy::RoundRobin, Policy::LeastConnections] {
            let mut a = Selector::new();
            let mut b = Selector::new();
            for _ in 0..10 {
                let order = b.preference(policy, &c, Key::None);
                assert_eq!(Some(order[0]), a.pick(policy, &c, Key::None));
                assert_eq!(order.len(), 3);
                assert_eq!(a.current, b.current);
            }
        }
        // The rest: who would come next if the first were gone.
        let mut s = Selector::new();
        assert_eq!(s.preference(Policy::RoundRobin, &c, Key::None), [0, 1, 2]);
        assert_eq!(s.preference(Policy::RoundRobin, &c, Key::None), [0, 1, 2]);
        assert_eq!(s.preference(Policy::RoundRobin, &c, Key::None), [1, 0, 2]);
    }

    #[test]
    fn least_connections_divides_by_weight() {
        let n = names(3);
        let mut c = pool(&n, &[2, 1, 4]);
        c[0].active = 3; // 1.5 per unit of weight
        c[1].active = 1; // 1
        c[2].active = 8; // 2
        let mut s = Selector::new();
        assert_eq!(s.pick(Policy::LeastConnections, &c, Key::None), Some(1));
        assert_eq!(
            s.preference(Policy::LeastConnections, &c, Key::None),
            [1, 0, 2]
        );
        c[1].active = 2; // 2, tied with member 2
        assert_eq!(
            s.preference(Policy::LeastConnections, &c, Key::None),
            [0, 2, 1]
        );
    }

    #[test]
    fn least_connections_fills_members_in_proportion_to_weight() {
        let n = names(3);
        let mut c = pool(&n, &[3, 1, 2]);
        let mut s = Selector::new();
        for _ in 0..60 {
            let i = s.pick(Policy::LeastConnections, &c, Key::None).unwrap();
            c[i].active += 1;
        }
        let active: Vec<u64> = c.iter().map(|c| c.active).collect();
        assert_eq!(active, [30, 10, 20]);
    }

    #[test]
    fn least_connections_ties_rotate() {
        // A burst before the caller counts the new sessions: all tied at 0.
        let n = names(3);
        let c = pool(&n, &[1, 1, 1]);
        let mut s = Selector::new();
        assert_eq!(
            picks(&mut s, Policy::LeastConnections, &c, 6),
            [0, 1, 2, 0, 1, 2]
        );
        let c = pool(&n, &[5, 1, 1]);
        let mut s = Selector::new();
        assert_eq!(
            picks(&mut s, Policy::LeastConnections, &c, 7),
            [0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn least_connections_survives_extreme_counts() {
        let n = names(2);
        let mut c = pool(&n, &[u32::MAX, 1]);
        c[0].active = u64::MAX;
        c[1].active = u64::MAX - 1;
        let mut s = Selector::new();
        assert_eq!(s.pick(Policy::LeastConnections, &c, Key::None), Some(0));
    }

    #[test]
    fn weight_zero_is_a_standby() {
        let n = names(3);
        let c = pool(&n, &[0, 2, 0]);
        let addr = Key::Addr(Ipv4Addr::LOCALHOST.into());
        for policy in Policy::ALL {
            let mut s = Selector::new();
            for key in [Key::None, addr, Key::User("alice")] {
                for _ in 0..5 {
                    assert_eq!(s.pick(policy, &c, key), Some(1));
                    let order = s.preference(policy, &c, key);
                    assert_eq!(order[0], 1, "{policy}: standbys come last");
                }
            }
        }
        // All standbys: they count as weight 1.
        let c = pool(&n, &[0, 0, 0]);
        let mut s = Selector::new();
        assert_eq!(picks(&mut s, Policy::RoundRobin, &c, 6), [0, 1, 2, 0, 1, 2]);
        let ones = pool(&n, &[1, 1, 1]);
        for ip in addresses().take(100) {
            let key = Key::Addr(ip);
            assert_eq!(
                s.pick(Policy::SourceHash, &c, key),
                s.pick(Policy::SourceHash, &ones, key)
            );
        }
    }

    #[test]
    fn empty_pool_has_no_choice() {
        let mut s = Selector::new();
        for policy in Policy::ALL {
            assert_eq!(s.pick(policy, &[], Key::User("u")), None);
            assert!(s.preference(policy, &[], Key::None).is_empty());
        }
    }

    /// Where each key goes.
    fn assign(policy: Policy, c: &[Candidate<'_>], keys: &[Key<'_>]) -> Vec<usize> {
        let mut s = Selector::new();
        keys.iter()
            .map(|&k| s.pick(policy, c, k).unwrap())
            .collect()
    }

    /// Checks the rendezvous properties of `policy` over `keys`.
    fn check_rendezvous(policy: Policy, keys: &[Key<'_>]) {
        let n = names(5);
        let weights = [5, 3, 2, 0, 0];
        let c = pool(&n, &weights[..3]);
        let before = assign(policy, &c, keys);

        // The same key always goes to the same member, whatever the
        // selector's history, the candidates' order or their indices.
        let mut reordered: Vec<Candidate<'_>> = c.iter().rev().copied().collect();
        for (i, r) in reordered.iter_mut().enumerate() {
            r.index = 10 + i;
        }
        let mut s = Selector::new();
        for (k, &was) in keys.iter().zip(&before) {
            let now = s.pick(policy, &reordered, *k).unwrap();
            assert_eq!(reordered[now - 10].name, c[was].name);
            assert_eq!(s.pick(policy, &c, *k), Some(was));
        }

        // Shares follow the weights: 5000, 3000, 2000 of 10,000, within 3%.
        let mut counts = [0usize; 3];
        for &i in &before {
            counts[i] += 1;
        }
        for (count, w) in counts.iter().zip(weights) {
            let expected = keys.len() * w as usize / 10;
            assert!(
                count.abs_diff(expected) < keys.len() * 3 / 100,
                "{counts:?}"
            );
        }

        // Member 1 down: only its keys move, to its second choice.
        let without_1 = [c[0], c[2]];
        let mut s = Selector::new();
        let mut moved = [0usize; 3];
        for (k, &was) in keys.iter().zip(&before) {
            let now = s.pick(policy, &without_1, *k).unwrap();
            if was == 1 {
                assert_eq!(s.preference(policy, &c, *k)[1], now);
                moved[now] += 1;
            } else {
                assert_eq!(now, was, "{k:?} moved though its member stayed");
            }
        }
        assert!(moved[0] > moved[2] && moved[2] > 0, "{moved:?}");

        // A member added, or a weight raised: keys move only onto it.
        let added = assign(policy, &pool(&n, &[5, 3, 2, 1]), keys);
        let raised = assign(policy, &pool(&n, &[5, 3, 4]), keys);
        for (after, gainer) in [(added, 3), (raised, 2)] {
            let mut gained = 0;
            for (was, now) in before.iter().zip(&after) {
                if was != now {
                    assert_eq!(*now, gainer, "moved from {was} to {now}");
                    gained += 1;
                }
            }
            assert!(gained > keys.len() / 20, "{gained}");
        }
    }

    #[test]
    fn source_hash_keeps_addresses_on_their_member() {
        let keys: Vec<Key<'_>> = addresses().map(Key::Addr).collect();
        check_rendezvous(Policy::SourceHash, &keys);
        let v6: Vec<Key<'_>> = (0u128..10_000)
            .map(|i| Key::Addr(Ipv6Addr::from(0x2001_0db8_u128 << 96 | i).into()))
            .collect();
        check_rendezvous(Policy::SourceHash, &v6);
    }

    #[test]
    fn user_hash_keeps_users_on_their_member() {
        let users = users();
        let keys: Vec<Key<'_>> = users.iter().map(|u| Key::User(u)).collect();
        check_rendezvous(Policy::UserHash, &keys);
    }

    #[test]
    fn ipv4_mapped_addresses_hash_as_ipv4() {
        let n = names(4);
        let c = pool(&n, &[1, 1, 1, 1]);
        let mut s = Selector::new();
        for ip in addresses().take(200) {
            let IpAddr::V4(v4) = ip else { unreachable!() };
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            assert_eq!(
                s.pick(Policy::SourceHash, &c, Key::Addr(ip)),
                s.pick(Policy::SourceHash, &c, Key::Addr(mapped))
            );
        }
    }

    #[test]
    fn hash_policies_without_a_key_rotate() {
        let n = names(3);
        let c = pool(&n, &[5, 1, 1]);
        for policy in [Policy::SourceHash, Policy::UserHash] {
            let mut s = Selector::new();
            assert_eq!(picks(&mut s, policy, &c, 7), [0, 0, 1, 0, 2, 0, 0]);
        }
    }

    #[test]
    fn shared_selector_agrees_and_survives_a_poisoned_lock() {
        let n = names(3);
        let c = pool(&n, &[5, 1, 1]);
        let shared = SharedSelector::new(Policy::RoundRobin);
        assert_eq!(shared.policy(), Policy::RoundRobin);
        let seq: Vec<usize> = (0..7)
            .map(|_| shared.pick(&c, Key::None).unwrap())
            .collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        std::thread::scope(|t| {
            let _ = t
                .spawn(|| {
                    let _held = shared.selector.lock();
                    panic!("poison the lock (expected in this test)");
                })
                .join();
        });
        assert!(shared.selector.is_poisoned());
        assert_eq!(shared.preference(&c, Key::None), [0, 1, 2]);

        let hashed = SharedSelector::new(Policy::SourceHash);
        let mut s = Selector::new();
        for ip in addresses().take(100) {
            let k = Key::Addr(ip);
            assert_eq!(hashed.pick(&c, k), s.pick(Policy::SourceHash, &c, k));
            assert_eq!(
                hashed.preference(&c, k),
                s.preference(Policy::SourceHash, &c, k)
            );
        }
    }

    /// Instances of every version must agree: these answers never change.
    /// A failure here means the hash changed, which reshuffles every
    /// client of a mixed-version deployment.
    #[test]
    fn hash_results_are_pinned() {
        // SipHash-2-4 reference vectors (key 00..0f, message 00..n-1).
        let (k0, k1) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let msg: Vec<u8> = (0..16).collect();
        let sip = |m: &[u8]| {
            let mut h = SipHasher24::new(k0, k1);
            h.write(m);
            h.finish()
        };
        assert_eq!(sip(&[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(sip(&msg[..15]), 0xa129_ca61_49be_45e5);

        let hash = |key: HashKey<'_>, name: &str| {
            let mut h = key_hasher(&key);
            h.write(name.as_bytes());
            h.finish()
        };
        let v4 = HashKey::Addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let v6 = HashKey::Addr("2001:db8::1".parse().unwrap());
        let user = HashKey::User("alice");
        let got = [
            hash(v4, "ftp1:21"),
            hash(v6, "ftp1:21"),
            hash(user, "ftp1:21"),
        ];
        assert_eq!(got, PINNED_HASHES, "{got:#018x?}");

        let n: Vec<String> = [
            "10.0.0.11:21",
            "10.0.0.12:21",
            "10.0.0.13:21",
            "ftp-d.example:2121",
        ]
        .map(String::from)
        .to_vec();
        let c = pool(&n, &[1, 2, 3, 1]);
        let mut s = Selector::new();
        let mut got = Vec::new();
        for i in 0..12u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
            let user = format!("tenant{i}");
            let by_ip = s.preference(Policy::SourceHash, &c, Key::Addr(ip));
            let by_user = s.preference(Policy::UserHash, &c, Key::User(&user));
            got.push((by_ip[0], by_ip[1], by_user[0], by_user[1]));
        }
        assert_eq!(got, PINNED_CHOICES, "{got:?}");
    }

    const PINNED_HASHES: [u64; 3] = [
        0xa5b7_2cc6_709a_27bc,
        0xc727_a4f0_c7d8_6943,
        0xee7f_a2dd_9448_5d3e,
    ];
    /// Checked against an independent implementation of the module
    /// docs' description (Python, floating-point `log2`).
    const PINNED_CHOICES: [(usize, usize, usize, usize); 12] = [
        (3, 1, 3, 2),
        (3, 0, 1, 2),
        (2, 1, 2, 0),
        (2, 0, 2, 3),
        (1, 2, 0, 1),
        (3, 1, 2, 1),
        (2, 1, 2, 0),
        (2, 1, 2, 1),
        (1, 2, 0, 3),
        (3, 1, 1, 0),
        (1, 2, 2, 1),
        (1, 2, 1, 3),
    ];

    #[test]
    fn log2_fixed_is_close_to_floating_log2() {
        let one = (1u64 << FRAC_BITS) as f64;
        for x in [1u64, 2, 3, 5, 1000, 123_456_789, (1 << 54) - 1, u64::MAX] {
            let got = log2_fixed(x) as f64 / one;
            assert!((got - (x as f64).log2()).abs() < 1e-8, "log2({x}) = {got}");
        }
        assert_eq!(log2_fixed(1), 0);
        assert_eq!(log2_fixed(1 << 40), 40 << FRAC_BITS);
        assert_eq!(
            neg_log2_unit(u64::MAX),
            1,
            "u just below 1 still scores finitely"
        );
        assert_eq!(neg_log2_unit(0), 54 << FRAC_BITS);
    }

    // === properties ===

    #[derive(Debug, Clone)]
    enum OwnedKey {
        None,
        Addr(IpAddr),
        User(String),
    }

    impl OwnedKey {
        fn key(&self) -> Key<'_> {
            match self {
                OwnedKey::None => Key::None,
                OwnedKey::Addr(a) => Key::Addr(*a),
                OwnedKey::User(u) => Key::User(u),
            }
        }
    }

    fn any_key() -> impl Strategy<Value = OwnedKey> {
        prop_oneof![
            Just(OwnedKey::None),
            any::<[u8; 4]>().prop_map(|a| OwnedKey::Addr(IpAddr::from(a))),
            any::<[u8; 16]>().prop_map(|a| OwnedKey::Addr(IpAddr::from(a))),
            "[a-z0-9@.]{0,12}".prop_map(OwnedKey::User),
        ]
    }

    fn any_policy() -> impl Strategy<Value = Policy> {
        proptest::sample::select(Policy::ALL.to_vec())
    }

    /// (weight, active) per member; weight 0 often, large weights sometimes.
    fn any_members() -> impl Strategy<Value = Vec<(u32, u64)>> {
        let weight = prop_oneof![Just(0u32), 1u32..6, any::<u32>()];
        proptest::collection::vec((weight, 0u64..20), 0..8)
    }

    /// Candidates at scattered indices, so positions are not mistaken for
    /// indices.
    fn candidates<'a>(names: &'a [String], members: &[(u32, u64)]) -> Vec<Candidate<'a>> {
        members
            .iter()
            .enumerate()
            .map(|(i, &(weight, active))| Candidate {
                index: 100 - 7 * i,
                name: &names[i],
                weight,
                active,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn pick_and_preference_cover_the_candidates(
            policy in any_policy(),
            members in any_members(),
            keys in proptest::collection::vec(any_key(), 1..20),
        ) {
            let n = names(members.len());
            let c = candidates(&n, &members);
            let mut sorted: Vec<usize> = c.iter().map(|c| c.index).collect();
            sorted.sort_unstable();
            let any_weighted = c.iter().any(|c| c.weight > 0);
            let mut s = Selector::new();
            for key in &keys {
                let key = key.key();
                let mut twin = s.clone();
                let picked = s.pick(policy, &c, key);
                let order = twin.preference(policy, &c, key);
                prop_assert_eq!(picked, order.first().copied());
                prop_assert_eq!(&s.current, &twin.current);
                let mut perm = order.clone();
                perm.sort_unstable();
                prop_assert_eq!(&perm, &sorted);
                if let Some(i) = picked {
                    let chosen = c.iter().find(|c| c.index == i).unwrap();
                    prop_assert!(chosen.weight > 0 || !any_weighted);
                    // Weighted members all precede the standbys.
                    let weights: Vec<bool> = order
                        .iter()
                        .map(|&i| c.iter().find(|c| c.index == i).unwrap().weight > 0)
                        .collect();
                    prop_assert!(weights.windows(2).all(|w| w[0] || !w[1]));
                    if policy == Policy::LeastConnections && any_weighted {
                        let ratio = |c: &Candidate<'_>| c.active as f64 / c.weight as f64;
                        let least = c.iter().filter(|c| c.weight > 0).map(ratio).fold(f64::MAX, f64::min);
                        prop_assert!(ratio(chosen) <= least);
                    }
                } else {
                    prop_assert!(c.is_empty());
                }
            }
        }

        #[test]
        fn rendezvous_order_is_the_order_of_removals(
            members in any_members(),
            key in any_key(),
            user_hash in any::<bool>(),
        ) {
            prop_assume!(!matches!(key, OwnedKey::None));
            let policy = if user_hash { Policy::UserHash } else { Policy::SourceHash };
            let n = names(members.len());
            let mut c = candidates(&n, &members);
            let mut s = Selector::new();
            let order = s.preference(policy, &c, key.key());
            for &expected in &order {
                prop_assert_eq!(s.pick(policy, &c, key.key()), Some(expected));
                c.retain(|c| c.index != expected);
            }
            prop_assert!(c.is_empty());
        }

        #[test]
        fn siphash_matches_std(
            k0 in any::<u64>(),
            k1 in any::<u64>(),
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..6),
        ) {
            #[allow(deprecated)]
            let mut reference = std::hash::SipHasher::new_with_keys(k0, k1);
            let mut ours = SipHasher24::new(k0, k1);
            for chunk in &chunks {
                std::hash::Hasher::write(&mut reference, chunk);
                ours.write(chunk);
            }
            prop_assert_eq!(ours.finish(), std::hash::Hasher::finish(&reference));
        }
    }
}
