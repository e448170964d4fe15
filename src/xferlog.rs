//! The transfer log, one line per finished or failed file transfer, in the
//! xferlog format of wu-ftpd and vsftpd (`xferlog_std_format`), which log
//! analysers read:
//!
//! ```text
//! current-time transfer-time remote-host file-size filename transfer-type
//! special-action-flag direction access-mode username service-name
//! authentication-method authenticated-user-id completion-status
//! ```
//!
//! Times are UTC. Whitespace inside a file name is written as `_` so that
//! the line splits into its fields (vsftpd does the same). Directory
//! listings are not file transfers and are not logged (as in vsftpd).
//!
//! The username field is the login name, or with `xferlog_user =
//! "certificate"` the subject of the client's verified certificate (`-` for
//! a session without one: a login name there could pass for a
//! certificate's subject). The access mode (`a` anonymous, `r` real)
//! follows the login name either way.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the username field shows (`xferlog_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserField {
    /// The login name (USER).
    #[default]
    Login,
    /// The subject of the client's verified certificate.
    Certificate,
}

impl UserField {
    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            UserField::Login => "login",
            UserField::Certificate => "certificate",
        }
    }
}

/// One transfer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When it ended.
    pub end: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// The client's address.
    pub client: String,
    /// Data bytes moved.
    pub bytes: u64,
    /// The file name as the client gave it.
    pub file: String,
    /// TYPE A in effect.
    pub ascii: bool,
    /// A download (RETR) rather than an upload (STOR, APPE, STOU).
    pub outgoing: bool,
    /// The login name, `None` before login.
    pub user: Option<String>,
    /// The subject of the client's verified certificate, if it showed one.
    pub cert_subject: Option<String>,
    /// Which of the two the username field shows.
    pub user_field: UserField,
    /// Completed (226/250 after all data) or not.
    pub complete: bool,
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ctime(3)`-style UTC time: `Sat Nov 21 08:34:33 2026`.
pub fn ctime_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

fn anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

/// One whitespace-free field: blanks and control characters become `_`,
/// an empty value `-`.
fn field(s: &str) -> String {
    let f: String = s
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// The xferlog line for `e`, without the newline.
pub fn format_entry(e: &Entry) -> String {
    let file = field(&e.file);
    let user = e.user.as_deref().unwrap_or("-");
    let user_field = match e.user_field {
        UserField::Login => field(user),
        UserField::Certificate => field(e.cert_subject.as_deref().unwrap_or("-")),
    };
    format!(
        "{} {} {} {} {} {} _ {} {} {} ftp 0 * {}",
        ctime_utc(e.end),
        // Whole seconds, at least 1, as wu-ftpd writes them.
        e.duration.as_secs().max(1),
        e.client,
        e.bytes,
        file,
        if e.ascii { 'a' } else { 'b' },
        if e.outgoing { 'o' } else { 'i' },
        if anonymous(user) { 'a' } else { 'r' },
        user_field,
        if e.complete { 'c' } else { 'i' },
    )
}

/// The open transfer log file.
#[derive(Debug)]
pub struct XferLog {
    path: PathBuf,
    file: Mutex<File>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl XferLog {
    /// Opens (creates, appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<XferLog> {
        Ok(XferLog {
            path: path.to_owned(),
            file: Mutex::new(open(path)?),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file again (after logrotate moved it); on error the old
    /// file stays in use.
    pub fn reopen(&self) -> std::io::Result<()> {
        let f = open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f;
        Ok(())
    }

    /// Appends one line (a single write, so lines never interleave).
    pub fn write(&self, e: &Entry) -> std::io::Result<()> {
        let mut line = format_entry(e);
        line.push('\n');
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_known_dates() {
        let at = |s: u64| ctime_utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu Jan  1 00:00:00 1970");
        // date -u -d @1795249473
        assert_eq!(at(1_795_249_473), "Sat Nov 21 08:24:33 2026");
        // A leap day.
        assert_eq!(at(951_782_400), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn line_has_the_fourteen_xferlog_fields() {
        let e = Entry {
            end: UNIX_EPOCH + Duration::from_secs(1_795_249_473),
            duration: Duration::from_millis(2500),
            client: "203.0.113.7".into(),
            bytes: 1048576,
            file: "dir/my file.bin".into(),
            ascii: false,
            outgoing: true,
            user: Some("alice".into()),
            cert_subject: Some("Alice Example".into()),
            user_field: UserField::Login,
            complete: true,
        };
        let line = format_entry(&e);
        assert_eq!(
            line,
            "Sat Nov 21 08:24:33 2026 2 203.0.113.7 1048576 dir/my_file.bin b _ o r alice ftp 0 * c"
        );
        // 5 time fields + 13 more.
        assert_eq!(line.split_whitespace().count(), 18);
        let anon = Entry {
            user: Some("anonymous".into()),
            outgoing: false,
            complete: false,
            ascii: true,
            ..e
        };
        assert!(format_entry(&anon).ends_with(" a _ i a anonymous ftp 0 * i"));
        // xferlog_user = "certificate": the subject, one field; the access
        // mode still follows the login name.
        let by_cert = Entry {
            user_field: UserField::Certificate,
            ..anon.clone()
        };
        assert!(format_entry(&by_cert).ends_with(" a _ i a Alice_Example ftp 0 * i"));
        let no_cert = Entry {
            cert_subject: None,
            ..by_cert
        };
        assert!(format_entry(&no_cert).ends_with(" a _ i a - ftp 0 * i"));
    }
}
