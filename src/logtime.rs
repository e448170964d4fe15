//! The timestamp of every log line, written as tracing-subscriber's default
//! does (`2026-12-07T01:44:59.864521Z`: UTC, microseconds), without its
//! nested format calls: a session logs two lines at `info`, and the
//! default timestamp was about a tenth of what a line costs
//! (`scripts/bench-instructions.sh`, docs/PERFORMANCE.md).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// UTC with microseconds, as tracing-subscriber's `SystemTime` timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct UtcMicros;

impl FormatTime for UtcMicros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now();
        match now.duration_since(UNIX_EPOCH).ok().and_then(|d| {
            let mut buf = [0u8; 27];
            rfc3339_micros(d.as_secs(), d.subsec_micros(), &mut buf).then_some(buf)
        }) {
            // Only ASCII digits and separators were written.
            Some(buf) => w.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?),
            // Before 1970 or after 9999: the library's own formatting.
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// The calendar date of a day counted from 1970-01-01 (proleptic
/// Gregorian): the usual era arithmetic (eras of 400 years, 146,097 days,
/// with years starting on March 1st so that the leap day comes last).
fn civil(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

/// Writes `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` for `secs` after the Unix epoch;
/// false (nothing meaningful written) past the year 9999.
fn rfc3339_micros(secs: u64, micros: u32, out: &mut [u8; 27]) -> bool {
    let (year, month, day) = civil(secs / 86_400);
    if year > 9_999 {
        return false;
    }
    let sod = secs % 86_400;
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3_600);
    put(14, 2, sod % 3_600 / 60);
    put(17, 2, sod % 60);
    put(20, 6, u64::from(micros));
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        out[at] = c;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(secs: u64, micros: u32) -> String {
        let mut buf = [0u8; 27];
        assert!(rfc3339_micros(secs, micros, &mut buf));
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn known_instants() {
        assert_eq!(text(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(text(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(text(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(text(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(text(4_102_444_799, 0), "2099-12-31T23:59:59.000000Z");
        assert_eq!(text(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(text(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        assert!(!rfc3339_micros(253_402_300_800, 0, &mut [0u8; 27]));
    }

    /// A day-by-day count gives the same dates.
    #[test]
    fn every_day_of_three_centuries() {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..(365 * 300 + 80) {
            assert_eq!(civil(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    proptest! {
        /// Seconds and microseconds land where they belong.
        #[test]
        fn time_of_day(days in 0u64..2_932_896, sod in 0u64..86_400, micros in 0u32..1_000_000) {
            let t = text(days * 86_400 + sod, micros);
            let want = format!("{:02}:{:02}:{:02}.{:06}Z", sod / 3600, sod % 3600 / 60, sod % 60, micros);
            prop_assert_eq!(&t[11..], want.as_str());
        }
    }

    /// Same text as tracing-subscriber's timer (to the second: the two
    /// read the clock one after the other).
    #[test]
    fn as_tracing_subscriber_writes_it() {
        for _ in 0..5 {
            let (mut ours, mut theirs) = (String::new(), String::new());
            UtcMicros.format_time(&mut Writer::new(&mut ours)).unwrap();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
            if ours[..19] == theirs[..19] {
                return;
            }
        }
        panic!("five tries, each across a second's boundary");
    }
}
