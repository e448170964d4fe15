//! Control-channel line framing with a hard length cap.
//!
//! Lines end in CRLF or a bare LF (RFC 959 asks for CRLF; real clients send
//! bare LF too). A line longer than the cap is reported once as
//! [`Frame::TooLong`] and the rest of it is discarded as it arrives, so one
//! client can never grow the buffer beyond the cap. No I/O here: callers push
//! bytes in and pull frames out.

use bytes::{Buf, Bytes, BytesMut};

/// One framed control line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its terminator (CR, LF).
    Line(Bytes),
    /// A line that exceeded the cap; its bytes were dropped.
    TooLong,
}

/// Splits a byte stream into lines.
#[derive(Debug)]
pub struct LineFramer {
    /// Bytes received but not yet returned as a line. Never longer than `max`.
    buf: BytesMut,
    /// Longest accepted line, terminator excluded.
    max: usize,
    /// True while dropping the tail of an overlong line, up to its LF.
    discarding: bool,
    /// Overlong lines are cut to `max` bytes instead of reported as too long.
    truncate: bool,
}

impl LineFramer {
    /// A framer accepting lines of at most `max` bytes (terminator excluded).
    /// Its buffer is allocated by the first read, not up front: an idle
    /// session holds none (see [`LineFramer::release_if_empty`]).
    pub fn new(max: usize) -> Self {
        LineFramer {
            buf: BytesMut::new(),
            max: max.max(1),
            discarding: false,
            truncate: false,
        }
    }

    /// A framer that cuts overlong lines to their first `max` bytes (the
    /// rest is dropped) instead of reporting them: for server replies, whose
    /// code is at the start and must not be lost.
    pub fn truncating(max: usize) -> Self {
        LineFramer {
            truncate: true,
            ..LineFramer::new(max)
        }
    }

    /// The buffer that network reads should append to.
    ///
    /// Read into it, then call
    /// [`LineFramer::next_frame`] until it returns `None`.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Gives the buffer's memory back when nothing is buffered: a quiet
    /// connection then holds no buffer until its next read (HAProxy does
    /// the same). Lines already returned keep their own bytes.
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Bytes currently buffered (complete or partial lines).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete frame, or `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let lf = self.buf.iter().position(|&b| b == b'\n');
            if self.discarding {
                match lf {
                    Some(i) => {
                        self.buf.advance(i + 1);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.buf.clear();
                        return None;
                    }
                }
            }
            return match lf {
                Some(i) => {
                    let mut line = self.buf.split_to(i + 1);
                    line.truncate(i);
                    if line.last() == Some(&b'\r') {
                        line.truncate(i - 1);
                    }
                    if line.len() > self.max && self.truncate {
                        line.truncate(self.max);
                        Some(Frame::Line(line.freeze()))
                    } else if line.len() > self.max {
                        Some(Frame::TooLong)
                    } else {
                        Some(Frame::Line(line.freeze()))
                    }
                }
                // A CR may still be followed by LF, so allow one byte of slack.
                None if self.buf.len() > self.max + 1 => {
                    self.discarding = true;
                    if self.truncate {
                        let line = self.buf.split_to(self.max).freeze();
                        self.buf.clear();
                        Some(Frame::Line(line))
                    } else {
                        self.buf.clear();
                        Some(Frame::TooLong)
                    }
                }
                None => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(fr) = f.next_frame() {
                out.push(fr);
            }
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn crlf_and_bare_lf() {
        assert_eq!(
            frames(64, &[b"USER a\r\nPASS b\nNOOP\r\n"]),
            vec![line("USER a"), line("PASS b"), line("NOOP")]
        );
    }

    #[test]
    fn lone_cr_is_kept_inside_a_line() {
        assert_eq!(frames(64, &[b"A\rB\r\n"]), vec![line("A\rB")]);
    }

    /// RFC 2640 3.1: a CR inside a path name travels as CR NUL (the server
    /// strips the NUL). Such a CR never ends a line, and a NUL never ends
    /// or splits one: each shape frames to the bytes before its LF (a CR
    /// right before the LF excluded), whole, and parses with its argument
    /// intact.
    #[test]
    fn rfc2640_cr_nul_and_nul_line_shapes() {
        use crate::proto::command::{parse_command, Verb};
        let table: &[(&[u8], &[&[u8]])] = &[
            (b"RETR a\r\0b\r\n", &[b"RETR a\r\0b"]),
            // A name ending in CR: CR NUL, then the CRLF.
            (b"CWD d\r\0\r\n", &[b"CWD d\r\0"]),
            (b"DELE x\0y\r\n", &[b"DELE x\0y"]),
            (b"\0NOOP\r\n", &[b"\0NOOP"]),
            (b"\0\r\n", &[b"\0"]),
            (b"NOOP\0\r\nSYST\r\n", &[b"NOOP\0", b"SYST"]),
            // CR NUL right before a bare LF.
            (b"MKD a\r\0\nPWD\n", &[b"MKD a\r\0", b"PWD"]),
            (b"STOR \r\0\r\0\r\n", &[b"STOR \r\0\r\0"]),
        ];
        for (input, want) in table {
            let got: Vec<Frame> = frames(64, &[input]);
            let want: Vec<Frame> = want
                .iter()
                .map(|l| Frame::Line(Bytes::copy_from_slice(l)))
                .collect();
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            // Every prefix before the first LF waits; byte by byte gives
            // the same frames.
            let lf = input.iter().position(|&b| b == b'\n').unwrap();
            for cut in 0..=lf {
                let mut f = LineFramer::new(64);
                f.push(&input[..cut]);
                assert_eq!(f.next_frame(), None, "cut {cut} of {input:?}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(frames(64, &bytes), want, "byte by byte: {input:?}");
        }
        let cmd = parse_command(b"RETR a\r\0b");
        assert_eq!(cmd.verb, Verb::Retr);
        assert_eq!(cmd.arg.as_deref(), Some(&b"a\r\0b"[..]));
        assert_eq!(&cmd.line[..], b"RETR a\r\0b", "forwarded as received");
    }

    #[test]
    fn every_prefix_waits_for_the_terminator() {
        let transcript = b"RETR some file.txt\r\n";
        for cut in 0..transcript.len() {
            let mut f = LineFramer::new(64);
            f.push(&transcript[..cut]);
            assert_eq!(f.next_frame(), None, "cut at {cut}");
            f.push(&transcript[cut..]);
            assert_eq!(f.next_frame(), Some(line("RETR some file.txt")));
            assert_eq!(f.next_frame(), None);
        }
    }

    #[test]
    fn overlong_line_is_reported_once_and_dropped() {
        let long = vec![b'x'; 100];
        let got = frames(10, &[b"NOOP\r\n", &long, &long, b"\r\nPWD\r\n"]);
        assert_eq!(got, vec![line("NOOP"), Frame::TooLong, line("PWD")]);
    }

    #[test]
    fn overlong_line_in_one_read() {
        let mut data = vec![b'y'; 30];
        data.extend_from_slice(b"\r\nPWD\r\n");
        assert_eq!(frames(10, &[&data]), vec![Frame::TooLong, line("PWD")]);
    }

    #[test]
    fn exactly_max_is_accepted_even_split_before_crlf() {
        assert_eq!(frames(4, &[b"ABCD", b"\r", b"\n"]), vec![line("ABCD")]);
        assert_eq!(frames(4, &[b"ABCDE\r\n"]), vec![Frame::TooLong]);
    }

    #[test]
    fn truncating_framer_keeps_the_start_of_overlong_lines() {
        let mut f = LineFramer::truncating(5);
        f.push(b"226 a very long reply line\r\n200 ok\r\n");
        assert_eq!(f.next_frame(), Some(line("226 a")));
        assert_eq!(f.next_frame(), Some(line("200 o")));
        let mut f = LineFramer::truncating(5);
        f.push(&[b'2'; 100]);
        assert_eq!(f.next_frame(), Some(line("22222")));
        f.push(b"222\r\n221 x\r\n");
        assert_eq!(f.next_frame(), Some(line("221 x")));
    }

    #[test]
    fn buffer_never_exceeds_cap_plus_slack() {
        let mut f = LineFramer::new(8);
        for _ in 0..1000 {
            f.push(b"zzzzzzz");
            while f.next_frame().is_some() {}
            assert!(f.buffered() <= 9 + 7);
        }
    }
}
