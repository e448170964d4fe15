//! Client control stream -> `LineFramer` -> `parse_command`.
//!
//! Input: byte 0 sets the line cap (`1 + 8 * b0`, so 1..=2041), byte 1 the
//! chunking seed (see `ftpgate_fuzz::chunks`), the rest is what a client sends.
//!
//! Checks: framing does not depend on how reads are split (chunked frames ==
//! one-shot frames); the buffer stays within the cap; lines are within the
//! cap and contain no LF (a forwarded line can never smuggle a second
//! command); `parse_command` never panics, only shrinks the line, keeps the
//! argument inside the forwarded line, and gives the same verb and argument
//! when its own cleaned line is parsed again.

#![no_main]

use ftpgate::proto::command::{parse_command, Verb, DM, IAC};
use ftpgate::proto::line::{Frame, LineFramer};
use ftpgate_fuzz::{chunks, Cursor};
use libfuzzer_sys::fuzz_target;

fn frames(max: usize, parts: &[&[u8]]) -> Vec<Frame> {
    let mut f = LineFramer::new(max);
    let mut out = Vec::new();
    for p in parts {
        f.push(p);
        while let Some(fr) = f.next_frame() {
            out.push(fr);
        }
        // After draining: at most the cap plus one byte of CR slack.
        assert!(
            f.buffered() <= max + 1,
            "buffer {} > cap {max} + 1",
            f.buffered()
        );
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let max = 1 + 8 * usize::from(c.u8());
    let seed = c.u8();
    let stream = c.rest();

    let chunked = frames(max, &chunks(stream, seed));
    let whole = frames(max, &[stream]);
    assert_eq!(chunked, whole, "framing depends on read boundaries");

    for fr in chunked {
        let Frame::Line(line) = fr else { continue };
        assert!(line.len() <= max);
        assert!(!line.contains(&b'\n'));
        let cmd = parse_command(&line);
        assert!(cmd.line.len() <= line.len());
        assert!(!cmd.line.contains(&b'\n'));
        assert!(cmd.verb_text.len() <= cmd.line.len());
        if let Some(arg) = &cmd.arg {
            assert!(
                cmd.line.ends_with(arg),
                "argument is not a suffix of the line"
            );
        }
        if cmd.verb != Verb::Other {
            assert!(
                matches!(cmd.verb_text.len(), 3 | 4),
                "known verbs have three (CCC) or four letters"
            );
            assert!(cmd.verb_text.iter().all(u8::is_ascii_alphabetic));
        }
        if cmd.telnet_interrupt {
            assert!(line.contains(&IAC) || line.first() == Some(&DM));
        }
        // Re-parsing the cleaned line is stable when no Telnet bytes are left.
        if !cmd.line.contains(&IAC) && cmd.line.first() != Some(&DM) {
            let again = parse_command(&cmd.line);
            assert_eq!(again.verb, cmd.verb);
            assert_eq!(again.arg, cmd.arg);
            assert_eq!(again.line, cmd.line);
            assert!(!again.telnet_interrupt);
        }
    }
});
