//! Client commands: Telnet clean-up and verb recognition.
//!
//! `parse_command` takes one framed line (see `line.rs`) and returns the verb
//! and its raw argument. Unknown verbs are kept verbatim so they can be
//! forwarded untouched. Arguments are not interpreted here; PORT and EPRT
//! arguments are parsed by `hostport.rs`. No I/O here.

use bytes::Bytes;
use nom::bytes::complete::{take_while, take_while1};
use nom::combinator::rest;
use nom::sequence::tuple;
use nom::IResult;

/// Telnet "interpret as command" (RFC 854).
pub const IAC: u8 = 255;
/// Telnet "interrupt process", sent before ABOR (RFC 959 4.1.3).
pub const IP: u8 = 244;
/// Telnet "data mark", the synch byte sent as TCP urgent data.
pub const DM: u8 = 242;

/// The verbs ftpgate treats specially; everything else is [`Verb::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// USER name
    User,
    /// PASS secret
    Pass,
    /// PASV (RFC 959)
    Pasv,
    /// EPSV [proto|ALL] (RFC 2428)
    Epsv,
    /// PORT h1,h2,h3,h4,p1,p2 (RFC 959)
    Port,
    /// EPRT |proto|addr|port| (RFC 2428)
    Eprt,
    /// LPSV (RFC 1639), refused
    Lpsv,
    /// LPRT (RFC 1639), refused
    Lprt,
    /// RETR path
    Retr,
    /// STOR path
    Stor,
    /// STOU
    Stou,
    /// APPE path
    Appe,
    /// LIST \[path\]
    List,
    /// NLST \[path\]
    Nlst,
    /// MLSD \[path\] (RFC 3659)
    Mlsd,
    /// ABOR
    Abor,
    /// QUIT
    Quit,
    /// REIN
    Rein,
    /// FEAT (RFC 2389)
    Feat,
    /// AUTH (RFC 2228; `AUTH TLS`, RFC 4217), answered by ftpgate
    Auth,
    /// TYPE A|I|... (tracked for the transfer log)
    Type,
    /// PBSZ (RFC 2228/4217), answered by ftpgate
    Pbsz,
    /// PROT (RFC 2228/4217), answered by ftpgate
    Prot,
    /// CCC (RFC 2228), refused
    Ccc,
    /// Anything else, forwarded verbatim.
    Other,
}

impl Verb {
    /// Whether the command opens a data connection.
    pub fn is_transfer(self) -> bool {
        matches!(
            self,
            Verb::Retr
                | Verb::Stor
                | Verb::Stou
                | Verb::Appe
                | Verb::List
                | Verb::Nlst
                | Verb::Mlsd
        )
    }

    /// Whether the command sets up a data connection.
    pub fn is_data_setup(self) -> bool {
        matches!(
            self,
            Verb::Pasv | Verb::Epsv | Verb::Port | Verb::Eprt | Verb::Lpsv | Verb::Lprt
        )
    }
}

/// One parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The recognised verb.
    pub verb: Verb,
    /// The verb as sent (without Telnet bytes), for logs and forwarding.
    pub verb_text: Bytes,
    /// The argument after the first run of spaces, if any; may be empty.
    pub arg: Option<Bytes>,
    /// The line with Telnet sequences removed: what is forwarded.
    pub line: Bytes,
    /// True if the line carried Telnet IP or DM (the ABOR "synch").
    pub telnet_interrupt: bool,
}

impl Command {
    /// The argument as text (lossy for non-UTF-8), empty if none.
    pub fn arg_str(&self) -> String {
        self.arg
            .as_ref()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default()
    }
}

/// Removes Telnet command sequences (RFC 854) from a control line.
///
/// Returns the cleaned bytes and whether an interrupt (IP or DM) was seen.
/// `IAC IAC` stands for a literal 255 byte.
pub fn strip_telnet(line: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(line.len());
    let mut interrupt = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b != IAC {
            out.push(b);
            i += 1;
            continue;
        }
        match line.get(i + 1) {
            Some(&IAC) => {
                out.push(IAC);
                i += 2;
            }
            // WILL, WONT, DO, DONT carry one option byte.
            Some(&(251..=254)) => i += 3,
            Some(&c) => {
                interrupt |= c == IP || c == DM;
                i += 2;
            }
            None => i += 1,
        }
    }
    // With SO_OOBINLINE a lone DM (the urgent byte) can arrive without IAC.
    if out.first() == Some(&DM) {
        out.remove(0);
        interrupt = true;
    }
    (out, interrupt)
}

/// Verb, the spaces after it, and the rest of the line.
type VerbParts<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn verb_and_arg(input: &[u8]) -> IResult<&[u8], VerbParts<'_>> {
    tuple((
        take_while1(|c: u8| c.is_ascii_alphabetic()),
        take_while(|c| c == b' '),
        rest,
    ))(input)
}

/// Parses one framed control line (without its CRLF).
///
/// Never fails: a line that does not start with a verb is returned as
/// [`Verb::Other`] with the whole line as its verb text.
pub fn parse_command(raw: &[u8]) -> Command {
    let (clean, telnet_interrupt) = strip_telnet(raw);
    parse_clean(Bytes::from(clean), telnet_interrupt)
}

/// [`parse_command`] of a framed line held as [`Bytes`]: a line without
/// Telnet bytes (nearly every line) is used as it is, its verb and
/// argument slices of it, instead of being copied first.
pub fn parse_command_bytes(raw: &Bytes) -> Command {
    if raw.contains(&IAC) || raw.first() == Some(&DM) {
        parse_command(raw)
    } else {
        parse_clean(raw.clone(), false)
    }
}

/// Parses a line whose Telnet bytes are gone.
fn parse_clean(line: Bytes, telnet_interrupt: bool) -> Command {
    // Leading spaces are tolerated (some clients send them after IAC bytes).
    let start = line.iter().position(|&c| c != b' ').unwrap_or(line.len());
    let body = line.slice(start..);
    let (verb_text, sep, arg) = match verb_and_arg(&body) {
        Ok((_, (v, sep, a))) => (v, sep, a),
        Err(_) => (&body[..], &b""[..], &b""[..]),
    };
    // A verb is only a verb if followed by a space or the end of the line.
    let verb_ok =
        !verb_text.is_empty() && (!sep.is_empty() || arg.is_empty()) && verb_text.len() <= 8;
    let verb = if verb_ok {
        verb_from(verb_text)
    } else {
        Verb::Other
    };
    let arg = if verb_ok && (!sep.is_empty() || !arg.is_empty()) {
        Some(body.slice_ref(arg))
    } else {
        None
    };
    Command {
        verb,
        verb_text: body.slice_ref(verb_text),
        arg,
        line,
        telnet_interrupt,
    }
}

fn verb_from(v: &[u8]) -> Verb {
    let mut up = [0u8; 8];
    let n = v.len().min(8);
    up[..n].copy_from_slice(&v[..n]);
    up[..n].make_ascii_uppercase();
    match &up[..n] {
        b"USER" => Verb::User,
        b"PASS" => Verb::Pass,
        b"PASV" => Verb::Pasv,
        b"EPSV" => Verb::Epsv,
        b"PORT" => Verb::Port,
        b"EPRT" => Verb::Eprt,
        b"LPSV" => Verb::Lpsv,
        b"LPRT" => Verb::Lprt,
        b"RETR" => Verb::Retr,
        b"STOR" => Verb::Stor,
        b"STOU" => Verb::Stou,
        b"APPE" => Verb::Appe,
        b"LIST" => Verb::List,
        b"NLST" => Verb::Nlst,
        b"MLSD" => Verb::Mlsd,
        b"ABOR" => Verb::Abor,
        b"QUIT" => Verb::Quit,
        b"REIN" => Verb::Rein,
        b"FEAT" => Verb::Feat,
        b"AUTH" => Verb::Auth,
        b"TYPE" => Verb::Type,
        b"PBSZ" => Verb::Pbsz,
        b"PROT" => Verb::Prot,
        b"CCC" => Verb::Ccc,
        _ => Verb::Other,
    }
}

/// What an EPSV argument asks for (RFC 2428 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    /// No argument: any protocol.
    Any,
    /// "1" (IPv4) or "2" (IPv6).
    Protocol(u8),
    /// "ALL": from now on only EPSV may set up data connections.
    All,
    /// Anything else.
    Invalid,
}

/// Parses the argument of EPSV.
pub fn parse_epsv_arg(arg: Option<&[u8]>) -> EpsvArg {
    match arg.map(|a| a.trim_ascii()) {
        None | Some(b"") => EpsvArg::Any,
        Some(a) if a.eq_ignore_ascii_case(b"ALL") => EpsvArg::All,
        // Any protocol number parses; the caller refuses those it lacks (522).
        Some(a) if (1..=3).contains(&a.len()) && a.iter().all(u8::is_ascii_digit) => {
            EpsvArg::Protocol(
                std::str::from_utf8(a)
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u8::MAX),
            )
        }
        Some(_) => EpsvArg::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The no-copy path parses every line as the copying one does,
        /// Telnet bytes or not.
        #[test]
        fn parse_command_bytes_is_parse_command(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            proptest::prop_assert_eq!(parse_command_bytes(&Bytes::copy_from_slice(&raw)), parse_command(&raw));
            let mut with_verb = b"RETR ".to_vec();
            with_verb.extend_from_slice(&raw);
            proptest::prop_assert_eq!(parse_command_bytes(&Bytes::from(with_verb.clone())), parse_command(&with_verb));
        }
    }

    fn p(s: &[u8]) -> Command {
        parse_command(s)
    }

    #[test]
    fn verbs_table() {
        type Case = (&'static [u8], Verb, Option<&'static [u8]>);
        let cases: &[Case] = &[
            (b"USER anonymous", Verb::User, Some(b"anonymous")),
            (b"user anonymous", Verb::User, Some(b"anonymous")),
            (b"pAsV", Verb::Pasv, None),
            (b"EPSV ALL", Verb::Epsv, Some(b"ALL")),
            (b"PORT 127,0,0,1,4,1", Verb::Port, Some(b"127,0,0,1,4,1")),
            (
                b"RETR  two  spaces.txt",
                Verb::Retr,
                Some(b"two  spaces.txt"),
            ),
            (b"RETR caf\xe9.txt", Verb::Retr, Some(b"caf\xe9.txt")),
            (b"LIST", Verb::List, None),
            (b"ccc", Verb::Ccc, None),
            (b"CCCX", Verb::Other, None),
            (b"PBSZ 0", Verb::Pbsz, Some(b"0")),
            (b"prot P", Verb::Prot, Some(b"P")),
            (b"TYPE A N", Verb::Type, Some(b"A N")),
            (b"LIST ", Verb::List, Some(b"")),
            (b"XMKD dir", Verb::Other, Some(b"dir")),
            (b"  NOOP", Verb::Other, None),
            (b"", Verb::Other, None),
            (b"123", Verb::Other, None),
            (b"RETR2 x", Verb::Other, None),
            (b"SITE CHMOD 644 f", Verb::Other, Some(b"CHMOD 644 f")),
        ];
        for (line, verb, arg) in cases {
            let c = p(line);
            assert_eq!(c.verb, *verb, "{:?}", String::from_utf8_lossy(line));
            assert_eq!(
                c.arg.as_deref(),
                *arg,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn iac_iac_is_a_literal_ff() {
        let c = p(b"RETR a\xff\xffb");
        assert_eq!(c.arg.as_deref(), Some(&b"a\xffb"[..]));
        assert!(!c.telnet_interrupt);
        // IAC DONT <option> is dropped whole.
        assert_eq!(&p(b"NO\xff\xfe\x01OP").line[..], b"NOOP");
    }

    #[test]
    fn abor_with_telnet_synch() {
        let c = p(b"\xff\xf4\xff\xf2ABOR");
        assert_eq!(c.verb, Verb::Abor);
        assert!(c.telnet_interrupt);
        assert_eq!(&c.line[..], b"ABOR");
        // The urgent byte without its IAC, as seen with SO_OOBINLINE.
        let c = p(b"\xff\xf4\xf2ABOR");
        assert_eq!(c.verb, Verb::Abor);
        assert!(c.telnet_interrupt);
    }

    #[test]
    fn epsv_args() {
        assert_eq!(parse_epsv_arg(None), EpsvArg::Any);
        assert_eq!(parse_epsv_arg(Some(b"all")), EpsvArg::All);
        assert_eq!(parse_epsv_arg(Some(b"2")), EpsvArg::Protocol(2));
        assert_eq!(parse_epsv_arg(Some(b"3")), EpsvArg::Protocol(3));
        assert_eq!(parse_epsv_arg(Some(b"x")), EpsvArg::Invalid);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_line_has_no_iac_commands(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let c = parse_command(&bytes);
            assert!(c.line.len() <= bytes.len());
        }
    }
}
