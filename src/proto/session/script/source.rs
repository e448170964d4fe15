//! Where the simulation's choices come from: a seed, or a fuzzer's bytes.

/// Where the choices come from.
pub trait Source {
    /// A number below `n` (`n` > 0).
    fn pick(&mut self, n: u32) -> u32;
    /// No more input: the session winds down.
    fn exhausted(&self) -> bool {
        false
    }
}

/// Choices from a seed (xorshift64*): the same seed, the same session.
#[derive(Debug, Clone)]
pub struct Seeded(u64);

impl Seeded {
    /// A source for `seed`.
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
}

impl Source for Seeded {
    fn pick(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u32 % n.max(1)
    }
}

/// Choices from a fuzzer's bytes (two bytes a choice).
#[derive(Debug, Clone)]
pub struct FromBytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> FromBytes<'a> {
    /// A source reading `data`.
    pub fn new(data: &'a [u8]) -> Self {
        FromBytes { data, at: 0 }
    }
}

impl Source for FromBytes<'_> {
    fn pick(&mut self, n: u32) -> u32 {
        let b = |i: usize| u32::from(self.data.get(i).copied().unwrap_or(0));
        let v = b(self.at) << 8 | b(self.at + 1);
        self.at += 2;
        v % n.max(1)
    }
    fn exhausted(&self) -> bool {
        self.at >= self.data.len()
    }
}
