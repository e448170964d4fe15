//! An unsigned integer as decimal ASCII, without `core::fmt`: the log
//! lines' numbers, the addresses they show and the 227's host-port
//! argument are written on every session, and a `write!` of a number goes
//! through the formatting machinery (docs/PERFORMANCE.md).

/// The decimal digits of a number, held on the stack.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    /// The digits of `v` (no sign, no padding).
    pub fn new(v: u64) -> Decimal {
        // u64::MAX has 20 digits.
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        let mut n = v;
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { buf, start }
    }

    /// The digits as ASCII bytes (no UTF-8 check: for a buffer that is
    /// checked once when whole).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits were written: the fallback is never taken.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges() {
        for v in [0, 1, 9, 10, 99, 100, 255, 65_535, u64::MAX] {
            assert_eq!(Decimal::new(v).as_str(), v.to_string());
            assert_eq!(Decimal::new(v).as_bytes(), v.to_string().as_bytes());
        }
    }

    proptest::proptest! {
        #[test]
        fn as_std(v in proptest::prelude::any::<u64>()) {
            let d = Decimal::new(v);
            proptest::prop_assert_eq!(d.as_str(), v.to_string());
        }
    }
}
