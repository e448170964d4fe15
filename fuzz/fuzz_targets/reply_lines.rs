//! Backend control stream -> `ReplyAssembler`.
//!
//! Input: byte 0 sets the line cap (`4 + 4 * b0`, so 4..=1024; longer lines
//! are cut), byte 1 the most bytes kept of one reply (`8 * b1`), byte 2 the
//! chunking seed; the rest is what a backend sends.
//!
//! Checks: results do not depend on read boundaries; every reply is
//! well-formed (a code of 100..=599 that its first line starts with, a
//! multi-line reply ends with the same code and a space, no line longer than
//! the cap or containing LF, no more bytes than the limit besides the first
//! and last lines); a reply written out with `to_bytes` assembles back to
//! itself (what ftpgate forwards is what it parsed), also through
//! `parse_reply_lines`.

#![no_main]

use ftpgate::proto::reply::{parse_reply_lines, Reply, ReplyAssembler, ReplyError};
use ftpgate_fuzz::{chunks, Cursor};
use libfuzzer_sys::fuzz_target;

/// Upper bound on replies checked per input, to keep each run short.
const MAX_REPLIES: usize = 256;

fn assemble(
    max_line: usize,
    max_bytes: usize,
    parts: &[&[u8]],
) -> (Vec<Result<Reply, ReplyError>>, usize) {
    let mut a = ReplyAssembler::new(max_line, max_bytes);
    let mut out = Vec::new();
    let mut dropped = 0;
    for p in parts {
        a.push(p);
        while let Some(r) = a.next_reply() {
            dropped += a.take_dropped();
            out.push(r);
        }
    }
    (out, dropped)
}

fn check_well_formed(r: &Reply, max_line: usize, max_bytes: usize) {
    assert!((100..=599).contains(&r.code), "code {}", r.code);
    assert!(!r.lines.is_empty());
    // The opening line is always kept, and so is the closing one.
    let n = r.lines.len();
    let body: usize = r.lines[..n - 1].iter().map(|l| l.len()).sum();
    assert!(
        n == 1 || body <= max_bytes.max(r.lines[0].len()),
        "{body} bytes kept, cap {max_bytes}"
    );
    let code = r.code.to_string();
    assert!(r.lines[0].starts_with(code.as_bytes()));
    for l in &r.lines {
        assert!(l.len() <= max_line);
        assert!(!l.contains(&b'\n'));
    }
    let last = r.lines.last().expect("non-empty");
    if r.lines.len() > 1 {
        assert_eq!(r.lines[0].get(3), Some(&b'-'));
        assert!(last.starts_with(code.as_bytes()));
        assert!(
            matches!(last.get(3), None | Some(&b' ')),
            "multi-line reply ends with {last:?}"
        );
    } else {
        assert!(matches!(last.get(3), None | Some(&b' ')));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let max_line = 4 + 4 * usize::from(c.u8());
    let max_bytes = 8 * usize::from(c.u8());
    let seed = c.u8();
    let stream = c.rest();

    let chunked = assemble(max_line, max_bytes, &chunks(stream, seed));
    let whole = assemble(max_line, max_bytes, &[stream]);
    assert_eq!(chunked, whole, "assembly depends on read boundaries");

    for r in chunked.0.iter().take(MAX_REPLIES) {
        let Ok(r) = r else { continue };
        check_well_formed(r, max_line, max_bytes);

        let wire = r.to_bytes();
        let (again, dropped) = assemble(max_line, max_bytes, &[&wire]);
        assert_eq!(dropped, 0);
        assert_eq!(again.len(), 1, "{wire:?} re-assembles to {again:?}");
        assert_eq!(again[0].as_ref(), Ok(r));

        if max_line <= 8192 {
            let lines: Vec<&[u8]> = r.lines.iter().map(|l| &l[..]).collect();
            assert_eq!(parse_reply_lines(&lines).as_ref(), Some(r));
        }
    }
});
