//! Helpers shared by the fuzz targets: a byte cursor that turns the head of
//! a fuzz input into parameters, and a deterministic chunker that splits the
//! rest into the pieces a network read might deliver.
//!
//! Input layouts are documented in each target and in `fuzz/README.md`;
//! `fuzz/make-seeds.py` writes seeds in the same layouts. No I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Reads parameters from the front of a fuzz input; yields zeros once the
/// input is used up, so every input is valid.
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Addresses chosen by tag 3 of [`Cursor::ip`]: the ones the rewrite rules
/// treat specially (loopback, unspecified, private, shared, link-local,
/// unique-local, mapped, documentation/public).
pub const INTERESTING_IPS: &[&str] = &[
    "127.0.0.1",
    "0.0.0.0",
    "10.0.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "100.64.0.1",
    "169.254.1.1",
    "203.0.113.10",
    "198.51.100.7",
    "::1",
    "::",
    "fd00::1",
    "fe80::1",
    "2001:db8::1",
    "::ffff:192.168.1.1",
    "::ffff:198.51.100.7",
];

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    /// The next byte, or 0 past the end.
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// Two bytes, big-endian (as a port is written in a PORT argument).
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }

    /// An address: tag byte `t % 4` = 0: IPv4 from 4 bytes; 1: IPv6 from 16
    /// bytes; 2: IPv4-mapped IPv6 from 4 bytes; 3: `INTERESTING_IPS[next % len]`.
    pub fn ip(&mut self) -> IpAddr {
        match self.u8() % 4 {
            0 => IpAddr::V4(Ipv4Addr::from(self.array::<4>())),
            1 => IpAddr::V6(Ipv6Addr::from(self.array::<16>())),
            2 => IpAddr::V6(Ipv4Addr::from(self.array::<4>()).to_ipv6_mapped()),
            _ => {
                let i = usize::from(self.u8()) % INTERESTING_IPS.len();
                INTERESTING_IPS[i].parse().expect("table entry parses")
            }
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.u8())
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }
}

/// Splits `data` into chunks whose sizes come from a small PRNG seeded with
/// `seed`: seed 0 means one chunk; otherwise sizes are 1..=`seed % 64 + 1`,
/// so small seeds give byte-at-a-time reads.
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 || data.is_empty() {
        return vec![data];
    }
    let max = usize::from(seed % 64) + 1;
    let mut state = u32::from(seed) | 0x9e37_7900;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift32: deterministic, so a crash replays from its input alone.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % max + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_input_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for seed in 0..=255u8 {
            let c = chunks(&data, seed);
            assert_eq!(c.concat(), data);
            assert!(c.iter().all(|c| !c.is_empty()));
        }
    }

    #[test]
    fn cursor_runs_dry_as_zeros() {
        let mut c = Cursor::new(&[3, 0]);
        assert_eq!(c.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.u16(), 0);
        assert!(c.rest().is_empty());
    }
}
