//! Server replies: assemble backend replies, build ftpgate's own.
//!
//! A reply is one line `ddd text` or several lines `ddd-` ... `ddd text`
//! (RFC 959 4.2). Continuation lines may say anything, including other codes;
//! only the code of the first line followed by a space (or nothing) ends the
//! reply. [`ReplyAssembler::bounded`] refuses a line or a reply over its caps
//! (the session ends then); [`ReplyAssembler::new`] cuts them. No I/O here.

use bytes::{BufMut, Bytes, BytesMut};

use super::line::{Frame, LineFramer};

/// Reply codes that ftpgate writes itself, named by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    /// 200
    CommandOk,
    /// 234
    AuthOk,
    /// 530
    NotLoggedIn,
    /// 521 (RFC 4217: data connection refused at this PROT level)
    ProtectionRequired,
    /// 533 (RFC 2228: denied for policy reasons)
    PolicyDenied,
    /// 534 (RFC 2228: request denied for policy reasons)
    RequestDenied,
    /// 536 (RFC 2228: PROT level not supported)
    ProtLevelNotSupported,
    /// 227
    EnteringPassiveMode,
    /// 229
    EnteringExtendedPassiveMode,
    /// 421
    ServiceNotAvailable,
    /// 425
    CantOpenDataConnection,
    /// 426
    TransferAborted,
    /// 451
    LocalError,
    /// 500
    SyntaxError,
    /// 501
    SyntaxErrorInArguments,
    /// 502
    NotImplemented,
    /// 503
    BadSequence,
    /// 504
    NotImplementedForParameter,
    /// 522
    UnsupportedNetworkProtocol,
}

impl ReplyCode {
    /// The three-digit number.
    pub fn number(self) -> u16 {
        match self {
            ReplyCode::CommandOk => 200,
            ReplyCode::AuthOk => 234,
            ReplyCode::NotLoggedIn => 530,
            ReplyCode::ProtectionRequired => 521,
            ReplyCode::PolicyDenied => 533,
            ReplyCode::RequestDenied => 534,
            ReplyCode::ProtLevelNotSupported => 536,
            ReplyCode::EnteringPassiveMode => 227,
            ReplyCode::EnteringExtendedPassiveMode => 229,
            ReplyCode::ServiceNotAvailable => 421,
            ReplyCode::CantOpenDataConnection => 425,
            ReplyCode::TransferAborted => 426,
            ReplyCode::LocalError => 451,
            ReplyCode::SyntaxError => 500,
            ReplyCode::SyntaxErrorInArguments => 501,
            ReplyCode::NotImplemented => 502,
            ReplyCode::BadSequence => 503,
            ReplyCode::NotImplementedForParameter => 504,
            ReplyCode::UnsupportedNetworkProtocol => 522,
        }
    }
}

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code of the first line.
    pub code: u16,
    /// The lines as received or built, without CRLF. Never empty.
    pub lines: Vec<Bytes>,
}

impl Reply {
    /// A one-line reply written by ftpgate.
    pub fn new(code: ReplyCode, text: &str) -> Reply {
        Reply::from_line(format!("{} {}", code.number(), text))
    }

    /// A reply from one already formatted line such as `227 Entering ...`.
    pub fn from_line(line: String) -> Reply {
        let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        Reply {
            code,
            lines: vec![Bytes::from(line)],
        }
    }

    /// 1yz: preliminary; another reply follows for the same command.
    pub fn is_preliminary(&self) -> bool {
        (100..200).contains(&self.code)
    }

    /// 2yz.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The text after the code on the first line (multi-line replies: the first line).
    pub fn first_text(&self) -> &[u8] {
        self.lines[0].get(4..).unwrap_or(&[])
    }

    /// All text of the reply, lines joined by spaces, for scanning and logs.
    pub fn text_lossy(&self) -> String {
        let joined: Vec<String> = self
            .lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        joined.join(" | ")
    }

    /// The wire form, each line ended by CRLF.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.lines.iter().map(|l| l.len() + 2).sum());
        for l in &self.lines {
            out.put_slice(l);
            out.put_slice(b"\r\n");
        }
        out.freeze()
    }
}

/// Why a backend's bytes did not form a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line outside a multi-line reply that does not start with a code.
    Malformed(Bytes),
    /// ([`ReplyAssembler::bounded`]) a line longer than the line cap, or
    /// one that never ends: nothing of it is kept, and the rest of it is
    /// dropped as it arrives.
    LineTooLong,
    /// ([`ReplyAssembler::bounded`]) a multi-line reply over the byte cap:
    /// what was kept of it is dropped.
    ReplyTooLong,
}

/// Parses `ddd` followed by ' ', '-' or end of line; returns code and separator.
fn parse_code(line: &[u8]) -> Option<(u16, Option<u8>)> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&digits[0]) {
        return None;
    }
    let code = u16::from(digits[0] - b'0') * 100
        + u16::from(digits[1] - b'0') * 10
        + u16::from(digits[2] - b'0');
    match line.get(3) {
        None => Some((code, None)),
        Some(&c @ (b' ' | b'-')) => Some((code, Some(c))),
        Some(_) => None,
    }
}

/// Parses one complete reply from a list of lines (used by tests and fuzzing).
pub fn parse_reply_lines(lines: &[&[u8]]) -> Option<Reply> {
    let mut asm = ReplyAssembler::new(8192, 1 << 20);
    for l in lines {
        asm.push(l);
        asm.push(b"\r\n");
    }
    match asm.next_reply() {
        Some(Ok(r)) => Some(r),
        _ => None,
    }
}

/// Assembles backend bytes into replies.
#[derive(Debug)]
pub struct ReplyAssembler {
    framer: LineFramer,
    /// Lines of a multi-line reply still open, and its code.
    open: Option<(u16, Vec<Bytes>)>,
    /// Bytes kept of the open reply; never above `max_bytes` (plus its last line).
    open_bytes: usize,
    /// Most bytes kept of one reply; further continuation lines are dropped.
    max_bytes: usize,
    /// Continuation lines dropped from the open reply.
    dropped: usize,
    /// Over a cap is an error ([`ReplyAssembler::bounded`]), not a cut.
    bounded: bool,
    /// The code of a refused multi-line reply whose remaining lines are
    /// dropped up to its closing line.
    skipping: Option<u16>,
}

impl ReplyAssembler {
    /// `max_line`: longer lines are cut to this length (the code is kept);
    /// `max_bytes`: most bytes kept of one multi-line reply.
    pub fn new(max_line: usize, max_bytes: usize) -> Self {
        ReplyAssembler {
            framer: LineFramer::truncating(max_line),
            open: None,
            open_bytes: 0,
            max_bytes,
            dropped: 0,
            bounded: false,
            skipping: None,
        }
    }

    /// An assembler for a peer that must not exceed the caps: a line over
    /// `max_line` (or one that never ends) is [`ReplyError::LineTooLong`]
    /// once its first `max_line` bytes are in, a multi-line reply over
    /// `max_bytes` is [`ReplyError::ReplyTooLong`]. Buffering stays within
    /// the caps whatever the peer sends.
    pub fn bounded(max_line: usize, max_bytes: usize) -> Self {
        ReplyAssembler {
            framer: LineFramer::new(max_line),
            bounded: true,
            ..ReplyAssembler::new(max_line, max_bytes)
        }
    }

    /// The buffer network reads append to.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        self.framer.buffer_mut()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.framer.push(data)
    }

    /// Gives the buffer's memory back when no byte is waiting (see
    /// [`LineFramer::release_if_empty`]).
    pub fn release_if_empty(&mut self) {
        if self.open.is_none() {
            self.framer.release_if_empty();
        }
    }

    /// Bytes received and not yet returned as a reply (a partial line, or
    /// the lines of an open multi-line reply).
    pub fn buffered(&self) -> usize {
        self.framer.buffered() + self.open.as_ref().map_or(0, |_| self.open_bytes.max(1))
    }

    /// Continuation lines dropped from the last reply because it was too long.
    pub fn take_dropped(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }

    /// The next complete reply, an error for a line that cannot start one,
    /// or `None` when more bytes are needed.
    pub fn next_reply(&mut self) -> Option<Result<Reply, ReplyError>> {
        loop {
            let line = match self.framer.next_frame()? {
                Frame::Line(l) => l,
                // Only a bounded assembler's framer reports overlong lines.
                Frame::TooLong => {
                    if let Some((code, _)) = self.open.take() {
                        self.skipping = Some(code);
                    }
                    return Some(Err(ReplyError::LineTooLong));
                }
            };
            if let Some(code) = self.skipping {
                if matches!(parse_code(&line), Some((c, None | Some(b' '))) if c == code) {
                    self.skipping = None;
                }
                continue;
            }
            if let Some((code, lines)) = &mut self.open {
                let ends = matches!(parse_code(&line), Some((c, None | Some(b' '))) if c == *code);
                if ends || self.open_bytes + line.len() <= self.max_bytes {
                    self.open_bytes += line.len();
                    lines.push(line);
                } else if self.bounded {
                    self.skipping = Some(*code);
                    self.open = None;
                    return Some(Err(ReplyError::ReplyTooLong));
                } else {
                    self.dropped += 1;
                }
                if ends {
                    let (code, lines) = self.open.take().unwrap_or_default();
                    return Some(Ok(Reply { code, lines }));
                }
                continue;
            }
            return match parse_code(&line) {
                Some((code, Some(b'-'))) => {
                    self.open_bytes = line.len();
                    self.open = Some((code, vec![line]));
                    continue;
                }
                Some((code, _)) => Some(Ok(Reply {
                    code,
                    lines: vec![line],
                })),
                None => Some(Err(ReplyError::Malformed(line))),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(max_bytes: usize, chunks: &[&[u8]]) -> Vec<Result<Reply, ReplyError>> {
        let mut a = ReplyAssembler::new(100, max_bytes);
        let mut out = vec![];
        for c in chunks {
            a.push(c);
            while let Some(r) = a.next_reply() {
                out.push(r);
            }
        }
        out
    }

    #[test]
    fn single_and_multi_line() {
        let got = all(
            100,
            &[b"220 hi\r\n211-Features:\r\n EPSV\r\n MDTM\r\n211 End\r\n"],
        );
        assert_eq!(got.len(), 2);
        let feat = got[1].as_ref().unwrap();
        assert_eq!(feat.code, 211);
        assert_eq!(feat.lines.len(), 4);
        assert_eq!(
            &feat.to_bytes()[..],
            b"211-Features:\r\n EPSV\r\n MDTM\r\n211 End\r\n"
        );
    }

    #[test]
    fn continuation_lines_with_other_codes_and_same_code_dash() {
        let got = all(
            100,
            &[b"230-Welcome\r\n230-more\r\n200 not the end\r\n230\r\n"],
        );
        let r = got[0].as_ref().unwrap();
        assert_eq!((r.code, r.lines.len()), (230, 4));
    }

    #[test]
    fn every_prefix_of_a_transcript() {
        let t: &[u8] = b"220-vsftpd\r\n220 ready\r\n";
        for cut in 0..t.len() {
            let mut a = ReplyAssembler::new(100, 1000);
            a.push(&t[..cut]);
            assert!(a.next_reply().is_none(), "cut {cut}");
            a.push(&t[cut..]);
            assert_eq!(a.next_reply().unwrap().unwrap().lines.len(), 2);
        }
    }

    #[test]
    fn garbage_and_overlong_lines() {
        let got = all(
            1000,
            &[b"hello\r\n", b"215 ", &[b'x'; 300], b"\r\n200 ok\r\n"],
        );
        assert_eq!(
            got[0],
            Err(ReplyError::Malformed(Bytes::from_static(b"hello")))
        );
        // An overlong line is cut, not lost: its command still gets its reply.
        let cut = got[1].as_ref().unwrap();
        assert_eq!((cut.code, cut.lines[0].len()), (215, 100));
        assert_eq!(got[2].as_ref().unwrap().code, 200);
    }

    #[test]
    fn long_multi_line_reply_is_capped_but_ends() {
        let mut data = b"213-status\r\n".to_vec();
        for i in 0..50 {
            data.extend_from_slice(format!(" file{i}\r\n").as_bytes());
        }
        data.extend_from_slice(b"213 End\r\n");
        // "213-status" (10 bytes), ten " fileN" (6 bytes) and four " fileNN"
        // (7 bytes) fit in 100 bytes; the closing line is always kept.
        let mut a = ReplyAssembler::new(100, 100);
        a.push(&data);
        let r = a.next_reply().unwrap().unwrap();
        assert_eq!(r.lines.len(), 16);
        assert_eq!(&r.lines[15][..], b"213 End");
        assert_eq!(a.take_dropped(), 36);
    }

    /// A bounded assembler refuses what the cutting one cuts, and keeps
    /// its buffer within the caps however much arrives.
    #[test]
    fn bounded_refuses_overlong_lines_and_replies() {
        type Case<'a> = (&'a [u8], &'a [Result<u16, ReplyError>]);
        let table: &[Case] = &[
            (b"200 ok\r\n", &[Ok(200)]),
            (b"215 0123456789abcdef\r\n200 ok\r\n", &[Ok(215), Ok(200)]),
            (
                b"215 0123456789abcdefX\r\n200 ok\r\n",
                &[Err(ReplyError::LineTooLong), Ok(200)],
            ),
            // The closing line may take a reply past the cap ...
            (b"211-abcdefghijklmnop\r\n211 End\r\n", &[Ok(211)]),
            // ... a continuation line may not; the rest of that reply is
            // dropped as it arrives.
            (
                b"211-abcdefghijklmnop\r\n xy\r\n xy\r\n z\r\n211 End\r\n200 ok\r\n",
                &[Err(ReplyError::ReplyTooLong), Ok(200)],
            ),
        ];
        for (input, want) in table {
            let mut a = ReplyAssembler::bounded(20, 24);
            a.push(input);
            let got: Vec<Result<u16, ReplyError>> = std::iter::from_fn(|| a.next_reply())
                .map(|r| r.map(|r| r.code))
                .collect();
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(input));
        }
        // A line that never ends: refused once, then dropped as it comes.
        let mut a = ReplyAssembler::bounded(16 * 1024, 1 << 20);
        a.push(b"215 ");
        let mut refusals = 0;
        for _ in 0..1000 {
            a.buffer_mut().extend_from_slice(&[b'x'; 4096]);
            while let Some(r) = a.next_reply() {
                assert_eq!(r, Err(ReplyError::LineTooLong));
                refusals += 1;
            }
            assert!(a.buffered() <= 16 * 1024 + 1 + 4096, "{}", a.buffered());
        }
        assert_eq!(refusals, 1);
    }

    #[test]
    fn codes_must_be_1_to_5() {
        assert_eq!(parse_code(b"600 x"), None);
        assert_eq!(parse_code(b"099 x"), None);
        assert_eq!(parse_code(b"2000"), None);
        assert_eq!(parse_code(b"226"), Some((226, None)));
    }

    proptest::proptest! {
        #[test]
        fn single_line_round_trip(code in 100u16..600, text in "[ -~]{0,40}") {
            let line = format!("{code} {text}");
            let r = parse_reply_lines(&[line.as_bytes()]).unwrap();
            proptest::prop_assert_eq!(r.to_bytes(), Bytes::from(format!("{line}\r\n")));
        }

        /// A bounded assembler gives the same results however the bytes
        /// are cut, never a reply over its caps, and never holds more
        /// than a line's cap and one read besides the reply it keeps.
        #[test]
        fn bounded_is_chunking_independent_and_bounded(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    "[1-5][0-9][0-9][ -][a-z ]{0,30}",
                    " [a-z]{0,30}",
                    "[a-z]{0,40}",
                ],
                0..40,
            ),
            cut in 1usize..17,
        ) {
            let stream: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            let run = |pieces: Vec<&[u8]>| {
                let mut a = ReplyAssembler::bounded(24, 64);
                let mut out = Vec::new();
                for p in pieces {
                    a.push(p);
                    while let Some(r) = a.next_reply() {
                        out.push(r);
                    }
                    assert!(a.framer.buffered() <= 24 + 1 + p.len());
                }
                out
            };
            let whole = run(vec![&stream[..]]);
            let chunked = run(stream.chunks(cut).collect());
            proptest::prop_assert_eq!(&whole, &chunked);
            for r in whole.iter().flatten() {
                let n = r.lines.len();
                let body: usize = r.lines[..n - 1].iter().map(|l| l.len()).sum();
                proptest::prop_assert!(r.lines.iter().all(|l| l.len() <= 24));
                proptest::prop_assert!(n == 1 || body <= 64);
            }
        }
    }
}
