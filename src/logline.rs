//! The text log line (`log_format = "text"`): the same text as
//! tracing-subscriber's default (`Full`) format,
//! `2026-12-07T01:44:59.864521Z  INFO target: message name=value ...`,
//! written straight into the line, and with every control character in
//! a field escaped.
//!
//! Why not the default: it styles the target, each field name and `=`
//! through nu-ansi-term even when colours are off and formats each part
//! through nested format calls; the two `info` lines of a session cost
//! about a tenth of its user-space instructions
//! (`scripts/bench-instructions.sh`, docs/PERFORMANCE.md). And it escapes
//! terminal sequences in the message only: a field's value is written as
//! it is, so a client's `USER` with ESC, CR or LF in it reached the log
//! raw (a forged line, a terminal escape for whoever `tail`s the log).
//! Here every field value has its control characters (C0, DEL, C1)
//! written as `\xNN` / `\u{NN}`; the message keeps its line breaks and
//! tabs (startup errors span lines) and escapes the rest. The JSON format
//! (serde_json) escaped them already.
//!
//! [`LogLine`] writes the line around the fields (timestamp, level, spans,
//! target), [`LogFields`] the fields.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::decimal::Decimal;
use crate::logtime::UtcMicros;

/// The event formatter of text log lines: tracing-subscriber's `Full`
/// format (timestamp, level, spans, target, fields; colours on a
/// terminal), character for character, without its per-part styling
/// and format calls. `T`: the clock ([`UtcMicros`]; tests fix it).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogLine<T = UtcMicros>(pub T);

// ANSI styles, as nu-ansi-term writes them.
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl<S, N, T> FormatEvent<S, N> for LogLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A record of the `log` crate (rustls) carries its real target in
        // fields; the library's formatter shows that one too.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let ansi = w.has_ansi_escapes();
        let style = |w: &mut Writer<'_>, code: &str, text: &str| {
            if ansi {
                w.write_str(code)?;
                w.write_str(text)?;
                w.write_str(RESET)
            } else {
                w.write_str(text)
            }
        };
        if ansi {
            w.write_str(DIM)?;
        }
        if self.0.format_time(&mut w).is_err() {
            w.write_str("<unknown time>")?;
        }
        if ansi {
            w.write_str(RESET)?;
        }
        w.write_char(' ')?;
        let (level, colour) = match *meta.level() {
            Level::TRACE => ("TRACE", "\x1b[35m"),
            Level::DEBUG => ("DEBUG", "\x1b[34m"),
            Level::INFO => (" INFO", "\x1b[32m"),
            Level::WARN => (" WARN", "\x1b[33m"),
            Level::ERROR => ("ERROR", "\x1b[31m"),
        };
        style(&mut w, colour, level)?;
        w.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                style(&mut w, BOLD, span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        style(&mut w, BOLD, "{")?;
                        w.write_str(fields)?;
                        style(&mut w, BOLD, "}")?;
                    }
                }
                style(&mut w, DIM, ":")?;
            }
            if seen {
                w.write_char(' ')?;
            }
        }
        style(&mut w, DIM, meta.target())?;
        style(&mut w, DIM, ":")?;
        w.write_char(' ')?;
        ctx.format_fields(w.by_ref(), event)?;
        w.write_char('\n')
    }
}

/// The field formatter of text log lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields;

impl<'w> FormatFields<'w> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = FieldWriter {
            w: writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct FieldWriter<'w> {
    w: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

/// How a value is escaped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// The message: line breaks and tabs kept.
    Message,
    /// A field's value: every control character.
    Value,
}

impl FieldWriter<'_> {
    /// Writes the separator and `name=` for a field (nothing for the
    /// message); `None` for a field not to write at all (the `log.*`
    /// metadata of records from the `log` crate, already in the line).
    fn begin(&mut self, field: &Field) -> Option<Escape> {
        if self.result.is_err() {
            return None;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return None;
        }
        let pad = if self.first { "" } else { " " };
        self.first = false;
        let r = if name == "message" {
            self.w.write_str(pad)
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.w
                .write_str(pad)
                .and_then(|()| self.w.write_str(name))
                .and_then(|()| self.w.write_char('='))
        };
        match r {
            Ok(()) => Some(if name == "message" {
                Escape::Message
            } else {
                Escape::Value
            }),
            Err(e) => {
                self.result = Err(e);
                None
            }
        }
    }

    fn value(&mut self, field: &Field, write: impl FnOnce(&mut Escaping<'_, '_>) -> fmt::Result) {
        if let Some(how) = self.begin(field) {
            let mut w = Escaping {
                w: &mut self.w,
                how,
            };
            self.result = write(&mut w);
        }
    }

    fn digits(&mut self, field: &Field, negative: bool, v: u64) {
        if self.begin(field).is_some() {
            if negative {
                self.result = self.w.write_char('-');
            }
            if self.result.is_ok() {
                self.result = self.w.write_str(Decimal::new(v).as_str());
            }
        }
    }
}

impl Visit for FieldWriter<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.value(field, |w| write!(w, "{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default: the message as it is, another field quoted.
        if field.name() == "message" {
            self.value(field, |w| w.write_str(value));
        } else {
            self.value(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.digits(field, false, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.digits(field, value < 0, value.unsigned_abs());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // As the default: the error, then `name.sources=[a, b]` if it has
        // any.
        let name = field.name();
        self.value(field, |w| {
            write!(w, "{value}")?;
            let mut source = value.source();
            if source.is_some() {
                w.w.write_char(' ')?;
                w.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
                w.w.write_str(".sources=[")?;
                let mut first = true;
                while let Some(s) = source {
                    if !first {
                        w.w.write_str(", ")?;
                    }
                    first = false;
                    write!(w, "{s}")?;
                    source = s.source();
                }
                w.w.write_char(']')?;
            }
            Ok(())
        });
    }
}

/// Writes through to the line, escaping control characters.
struct Escaping<'a, 'w> {
    w: &'a mut Writer<'w>,
    how: Escape,
}

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let b = s.as_bytes();
        let mut plain = 0; // start of the run not yet written
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            // C0 and DEL are one byte; C1 (U+0080..U+009F) is 0xC2 0x80..0x9F.
            let (len, code) = if c < 0x20 || c == 0x7f {
                if self.how == Escape::Message && (c == b'\n' || c == b'\t') {
                    i += 1;
                    continue;
                }
                (1, c)
            } else if c == 0xc2 && b.get(i + 1).is_some_and(|&n| (0x80..=0x9f).contains(&n)) {
                (2, b[i + 1])
            } else {
                i += 1;
                continue;
            };
            self.w.write_str(&s[plain..i])?;
            let hex = |d: u8| char::from(b"0123456789abcdef"[usize::from(d & 0xf)]);
            if len == 1 {
                self.w.write_str("\\x")?;
            } else {
                self.w.write_str("\\u{")?;
            }
            self.w.write_char(hex(code >> 4))?;
            self.w.write_char(hex(code))?;
            if len == 2 {
                self.w.write_char('}')?;
            }
            i += len;
            plain = i;
        }
        self.w.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// The text of the lines `f` logs, fields formatted by `LogFields`
    /// (`ours`) or by tracing-subscriber's default; no time, no colours.
    fn logged(ours: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let b = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(buf.clone());
        if ours {
            tracing::subscriber::with_default(b.fmt_fields(LogFields).finish(), f);
        } else {
            tracing::subscriber::with_default(b.finish(), f);
        }
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner cause")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    /// Every kind of field the code base logs, with plain values: the
    /// same line as the library's default formatter.
    #[test]
    fn plain_values_give_the_default_text() {
        let lines = |ours| {
            logged(ours, || {
                let addr: std::net::SocketAddr = "127.0.0.1:2121".parse().unwrap();
                let names = vec!["a".to_owned(), "b c".to_owned()];
                let cert: Option<&str> = None;
                tracing::info!(
                    session = 7u64,
                    client = %addr,
                    user = %"alice",
                    client_cert = cert.map(tracing::field::display),
                    delta = -42i64,
                    big = u64::MAX,
                    small = i64::MIN,
                    ok = true,
                    ratio = 1.0f64,
                    names = ?names,
                    quoted = "as str",
                    r#type = "I",
                    "session closed"
                );
                tracing::warn!(
                    error = &Outer(Inner) as &dyn std::error::Error,
                    "failed: {}",
                    3
                );
                tracing::error!(error = &Inner as &dyn std::error::Error);
                tracing::info!("only a message");
                tracing::info!(a = 1u64);
                tracing::debug!(empty = "", "");
            })
        };
        let ours = lines(true);
        assert_eq!(ours, lines(false));
        assert!(ours.contains("session closed session=7 client=127.0.0.1:2121 user=alice"));
        assert!(ours.contains("error=outer failed error.sources=[inner cause]"));
    }

    /// A hostile user name: the default writes ESC, CR and LF raw; here
    /// each is escaped, and the line stays one line.
    #[test]
    fn control_characters_in_values_are_escaped() {
        let evil = "ev\u{1b}[31mil\r\nFAKE line\u{7f}\u{9b}\tx\u{0}é";
        let ours = logged(true, || tracing::info!(user = %evil, "logged in"));
        assert_eq!(
            ours,
            " INFO ftpgate::logline::tests: logged in \
             user=ev\\x1b[31mil\\x0d\\x0aFAKE line\\x7f\\u{9b}\\x09x\\x00é\n"
        );
        let default = logged(false, || tracing::info!(user = %evil, "logged in"));
        assert!(default.contains('\u{1b}'), "{default:?}");
        // Debug values too (an error's text may carry what a peer sent).
        let ours = logged(
            true,
            || tracing::info!(got = ?"a\u{1b}b", reply = %"1\u{85}2"),
        );
        assert_eq!(
            ours,
            " INFO ftpgate::logline::tests: got=\"a\\u{1b}b\" reply=1\\u{85}2\n"
        );
    }

    /// The message keeps line breaks and tabs and escapes the rest, as
    /// the default does for terminal sequences.
    #[test]
    fn message_keeps_line_breaks() {
        let ours = logged(true, || {
            tracing::error!("bad config:\n\tline 3 \u{1b}[2J\u{7}\r")
        });
        assert_eq!(
            ours,
            "ERROR ftpgate::logline::tests: bad config:\n\tline 3 \\x1b[2J\\x07\\x0d\n"
        );
    }

    struct Fixed;
    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-07T01:44:59.864521Z")
        }
    }

    /// The lines of `f`: `LogLine` around the fields (`ours`) or the
    /// library's `Full` format, with the same fixed clock and fields.
    fn lines(ours: bool, ansi: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let b = tracing_subscriber::fmt()
            .with_timer(Fixed)
            .with_ansi(ansi)
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(LogFields)
            .with_writer(buf.clone());
        if ours {
            tracing::subscriber::with_default(b.event_format(LogLine(Fixed)).finish(), f);
        } else {
            tracing::subscriber::with_default(b.finish(), f);
        }
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    /// Every level, a span, a record of the `log` crate (rustls logs
    /// that way), with and without colours: the library's line, byte for
    /// byte.
    #[test]
    fn the_line_is_the_default_full_format() {
        for ansi in [false, true] {
            let run = |ours| {
                lines(ours, ansi, || {
                    tracing::trace!(a = 1u64, "t");
                    tracing::debug!("d");
                    tracing::info!(session = 2u64, user = %"bob", "logged in");
                    tracing::warn!(target: "ftpgate::other", "w {}", 5);
                    tracing::error!(e = "x");
                    let span = tracing::info_span!("conn", id = 3u64);
                    let _in = span.enter();
                    let inner = tracing::debug_span!("tls");
                    let _in2 = inner.enter();
                    tracing::info!("in spans");
                    tracing_log::format_trace(
                        &tracing_log::log::Record::builder()
                            .target("rustls::conn")
                            .level(tracing_log::log::Level::Warn)
                            .args(format_args!("peer sent {}", "x"))
                            .module_path(Some("rustls::conn"))
                            .file(Some("conn.rs"))
                            .line(Some(7))
                            .build(),
                    )
                    .unwrap();
                })
            };
            let ours = run(true);
            assert_eq!(ours, run(false), "ansi={ansi}");
            assert_eq!(ours.lines().count(), 7, "{ours}");
            if !ansi {
                assert!(ours.contains(
                    "2026-12-07T01:44:59.864521Z  INFO ftpgate::logline::tests: logged in session=2 user=bob\n"
                ));
                assert!(
                    ours.contains(" WARN conn{id=3}:tls: rustls::conn: peer sent x\n"),
                    "{ours}"
                );
                assert!(
                    ours.contains(" INFO conn{id=3}:tls: ftpgate::logline::tests: in spans\n"),
                    "{ours}"
                );
            } else {
                assert!(ours.contains('\u{1b}'));
            }
        }
    }

    proptest::proptest! {
        /// For any text without a backslash (which would make the unescaping
        /// below ambiguous), the escaped value has no control character left
        /// and unescaping it gives the text back.
        #[test]
        fn escaping_round_trips(s in "[^\\\\]{0,60}|[\\x00-\\x5b\\x5d-\\x{a0}]{0,40}") {
            let mut line = String::new();
            let mut w = Writer::new(&mut line);
            Escaping { w: &mut w, how: Escape::Value }.write_str(&s).unwrap();
            proptest::prop_assert!(!line.chars().any(|c| c.is_control()), "{:?}", line);
            proptest::prop_assert_eq!(unescape(&line), s);
        }
    }

    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('\\') {
            out.push_str(&rest[..i]);
            let t = &rest[i..];
            if let Some(h) = t.strip_prefix("\\x") {
                let code = u32::from_str_radix(&h[..2], 16).unwrap();
                out.push(char::from_u32(code).unwrap());
                rest = &h[2..];
            } else if let Some(h) = t.strip_prefix("\\u{") {
                let code = u32::from_str_radix(&h[..2], 16).unwrap();
                out.push(char::from_u32(code).unwrap());
                rest = &h[3..];
            } else {
                out.push('\\');
                rest = &t[1..];
            }
        }
        out.push_str(rest);
        out
    }
}
