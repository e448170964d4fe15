//! Directory listings of an SFTP backend as FTP clients read them: `LIST`
//! in the `ls -l` form that curl, lftp, FileZilla and WinSCP parse, `NLST`
//! names, and `MLSD`/`MLST` facts per RFC 3659 section 7.
//!
//! Pure: entries and the current time in, text out. A name FTP cannot carry
//! (one with CR, LF or NUL: it would end the line early and the client would
//! read the rest as another entry) is left out of listings, and the caller
//! logs it. SFTP version 3 (draft-ietf-secsh-filexfer-02) gives numeric
//! owners only, so `LIST` shows uid and gid as `ls -n` does, and one link.

/// The attributes SFTP gives of a file (draft-ietf-secsh-filexfer-02 5),
/// each as the server sent it, or `None` when it did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Owner's numeric id.
    pub uid: Option<u32>,
    /// Group's numeric id.
    pub gid: Option<u32>,
    /// `st_mode`: file type and permission bits.
    pub mode: Option<u32>,
    /// Modification time, seconds since 1970 (UTC).
    pub mtime: Option<u32>,
}

/// One directory entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Its name in the directory (no `/`).
    pub name: String,
    /// Its attributes (of the link itself, for a symbolic link).
    pub attrs: Attrs,
    /// A symbolic link's target, when read.
    pub link_target: Option<String>,
}

/// File type bits of `st_mode` (POSIX `S_IFMT`).
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
    /// A device, FIFO or socket.
    Other,
}

impl Attrs {
    /// The file's kind; a missing mode counts as a regular file.
    pub fn kind(&self) -> Kind {
        match self.mode.map(|m| m & S_IFMT) {
            None | Some(S_IFREG) => Kind::File,
            Some(S_IFDIR) => Kind::Dir,
            Some(S_IFLNK) => Kind::Link,
            Some(_) => Kind::Other,
        }
    }
}

/// Whether `s` can appear in a reply or listing line: no CR, LF or NUL.
pub fn is_line_safe(s: &str) -> bool {
    !s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// `ls -l`'s ten-character mode, e.g. `drwxr-xr-x` (set-id and sticky
/// bits as `s`/`S` and `t`/`T`).
pub fn format_mode(mode: Option<u32>) -> String {
    let Some(m) = mode else {
        return "?---------".into();
    };
    let kind = match m & S_IFMT {
        S_IFDIR => 'd',
        S_IFLNK => 'l',
        S_IFREG => '-',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '?',
    };
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |exec: u32, special: u32, set: char| match (m & exec != 0, m & special != 0) {
        (true, true) => set,
        (false, true) => set.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't'),
    ]
    .iter()
    .collect()
}

/// A civil date and time in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-59.
    pub second: u32,
}

/// Seconds since 1970 to a UTC date (Howard Hinnant's `civil_from_days`).
pub fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
    }
}

/// Days since 1970 of a UTC date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ls -l`'s date: `Mon dd HH:MM` within six months of `now`, else
/// `Mon dd  YYYY` (coreutils' rule), in UTC.
pub fn format_ls_time(mtime: Option<u32>, now: i64) -> String {
    let t = i64::from(mtime.unwrap_or(0));
    let c = civil(t);
    let month = MONTHS[(c.month as usize).saturating_sub(1) % 12];
    const HALF_YEAR: i64 = 365 * 86_400 / 2;
    if t <= now + 3600 && now - t < HALF_YEAR {
        format!("{month} {:2} {:02}:{:02}", c.day, c.hour, c.minute)
    } else {
        format!("{month} {:2}  {}", c.day, c.year)
    }
}

/// RFC 3659 2.3 time-val: `YYYYMMDDHHMMSS` in UTC (MDTM, `modify`).
pub fn format_time_val(mtime: u32) -> String {
    let c = civil(i64::from(mtime));
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// One `LIST` line (CRLF included), or `None` for a name FTP cannot carry.
pub fn format_list_line(e: &Entry, now: i64) -> Option<String> {
    if !is_line_safe(&e.name) || e.name.is_empty() {
        return None;
    }
    let a = &e.attrs;
    let target = match (&e.link_target, a.kind()) {
        (Some(t), Kind::Link) if is_line_safe(t) => format!(" -> {t}"),
        _ => String::new(),
    };
    Some(format!(
        "{} {:>4} {:<8} {:<8} {:>12} {} {}{}\r\n",
        format_mode(a.mode),
        1,
        a.uid.map_or_else(|| "0".into(), |u| u.to_string()),
        a.gid.map_or_else(|| "0".into(), |g| g.to_string()),
        a.size.unwrap_or(0),
        format_ls_time(a.mtime, now),
        e.name,
        target
    ))
}

/// One `NLST` line, or `None` for a name FTP cannot carry.
pub fn format_nlst_line(e: &Entry) -> Option<String> {
    (is_line_safe(&e.name) && !e.name.is_empty()).then(|| format!("{}\r\n", e.name))
}

/// The RFC 3659 facts ftpgate offers, in FEAT order.
pub const FACTS: [&str; 5] = ["type", "size", "modify", "perm", "unix.mode"];

/// The facts a client asked for with `OPTS MLST` (RFC 3659 7.9), as a
/// bit per entry of [`FACTS`]; all of them by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactSet(u8);

impl Default for FactSet {
    fn default() -> Self {
        FactSet((1 << FACTS.len()) - 1)
    }
}

impl FactSet {
    /// From `OPTS MLST type;size;`: the known facts named (case-insensitive);
    /// unknown ones are ignored, as RFC 3659 7.9 says.
    pub fn parse(arg: &str) -> FactSet {
        let mut bits = 0u8;
        for f in arg.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            if let Some(i) = FACTS.iter().position(|k| k.eq_ignore_ascii_case(f)) {
                bits |= 1 << i;
            }
        }
        FactSet(bits)
    }

    fn has(self, fact: &str) -> bool {
        FACTS
            .iter()
            .position(|k| *k == fact)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// The names selected, each followed by `;` (the `OPTS MLST` reply).
    pub fn names(self) -> String {
        FACTS
            .iter()
            .filter(|f| self.has(f))
            .map(|f| format!("{f};"))
            .collect()
    }

    /// FEAT's `MLST` line: every fact, the selected ones marked `*`.
    pub fn feat_line(self) -> String {
        let facts: String = FACTS
            .iter()
            .map(|f| {
                if self.has(f) {
                    format!("{f}*;")
                } else {
                    format!("{f};")
                }
            })
            .collect();
        format!("MLST {facts}")
    }
}

/// RFC 3659 7.5.5 `perm` from the owner's permission bits (SFTP does not
/// say what the logged-in user may do; the owner's bits are what a user
/// in their own chroot has).
fn perm(a: &Attrs) -> String {
    let m = a.mode.unwrap_or(0);
    let (r, w, x) = (m & 0o400 != 0, m & 0o200 != 0, m & 0o100 != 0);
    let mut p = String::new();
    match a.kind() {
        Kind::Dir => {
            if w {
                p.push_str("cdfmp");
            }
            if x {
                p.push('e');
            }
            if r {
                p.push('l');
            }
        }
        _ => {
            if w {
                p.push_str("adfw");
            }
            if r {
                p.push('r');
            }
        }
    }
    p
}

/// The facts of one entry, `fact=value;...` without the name.
pub fn format_facts(a: &Attrs, set: FactSet) -> String {
    let mut s = String::new();
    if set.has("type") {
        s.push_str(match a.kind() {
            Kind::File => "type=file;",
            Kind::Dir => "type=dir;",
            Kind::Link => "type=OS.unix=symlink;",
            Kind::Other => "type=OS.unix=special;",
        });
    }
    if set.has("size") && a.kind() != Kind::Dir {
        if let Some(n) = a.size {
            s.push_str(&format!("size={n};"));
        }
    }
    if set.has("modify") {
        if let Some(t) = a.mtime {
            s.push_str(&format!("modify={};", format_time_val(t)));
        }
    }
    if set.has("perm") && a.mode.is_some() {
        s.push_str(&format!("perm={};", perm(a)));
    }
    if set.has("unix.mode") {
        if let Some(m) = a.mode {
            s.push_str(&format!("unix.mode=0{:o};", m & 0o7777));
        }
    }
    s
}

/// One `MLSD` line (RFC 3659 7.2: facts, one space, the name, CRLF), or
/// `None` for a name FTP cannot carry.
pub fn format_mlsd_line(e: &Entry, set: FactSet) -> Option<String> {
    (is_line_safe(&e.name) && !e.name.is_empty())
        .then(|| format!("{} {}\r\n", format_facts(&e.attrs, set), e.name))
}

/// `MLST`'s reply body line (RFC 3659 7.2: a leading space, facts, one
/// space, the path), without CRLF; `None` for a path FTP cannot carry.
pub fn format_mlst_fact_line(path: &str, a: &Attrs, set: FactSet) -> Option<String> {
    is_line_safe(path).then(|| format!(" {} {}", format_facts(a, set), path))
}

/// Splits `LIST`'s argument into `ls` options (a first word starting with
/// `-`, as curl's `LIST -la` or `LIST -a`) and the path (possibly empty).
pub fn split_list_arg(arg: &str) -> &str {
    let arg = arg.trim_start();
    match arg.strip_prefix('-') {
        Some(rest)
            if rest
                .split(' ')
                .next()
                .is_some_and(|w| w.bytes().all(|b| b.is_ascii_alphabetic())) =>
        {
            rest.split_once(' ').map_or("", |(_, p)| p.trim_start())
        }
        _ => arg,
    }
}

/// Parses RFC 3659 time-val (`YYYYMMDDHHMMSS[.sss]`) to seconds since 1970.
pub fn parse_time_val(s: &str) -> Option<u32> {
    let s = s.split('.').next()?;
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se);
    u32::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, mode: u32, size: u64, mtime: u32) -> Entry {
        Entry {
            name: name.into(),
            attrs: Attrs {
                size: Some(size),
                uid: Some(1000),
                gid: Some(100),
                mode: Some(mode),
                mtime: Some(mtime),
            },
            link_target: None,
        }
    }

    // 2024-03-05 14:07:09 UTC
    const T: u32 = 1_709_647_629;

    #[test]
    fn dates() {
        assert_eq!(format_time_val(0), "19700101000000");
        assert_eq!(format_time_val(T), "20240305140709");
        assert_eq!(format_time_val(951_782_400), "20000229000000");
        assert_eq!(parse_time_val("20240305140709"), Some(T));
        assert_eq!(parse_time_val("20240305140709.123"), Some(T));
        assert_eq!(parse_time_val("2024030514070"), None);
        assert_eq!(parse_time_val("20241305140709"), None);
        for t in [0u32, 1, 86_399, 86_400, T, 4_102_444_800, u32::MAX] {
            assert_eq!(parse_time_val(&format_time_val(t)), Some(t), "{t}");
        }
        let now = i64::from(T) + 86_400;
        assert_eq!(format_ls_time(Some(T), now), "Mar  5 14:07");
        assert_eq!(format_ls_time(Some(T), now + 400 * 86_400), "Mar  5  2024");
        // The future beyond an hour shows the year too (coreutils).
        assert_eq!(format_ls_time(Some(T), i64::from(T) - 7200), "Mar  5  2024");
    }

    #[test]
    fn list_lines_look_like_ls() {
        let now = i64::from(T) + 60;
        assert_eq!(
            format_list_line(&entry("report.pdf", 0o100644, 1234, T), now).unwrap(),
            "-rw-r--r--    1 1000     100              1234 Mar  5 14:07 report.pdf\r\n"
        );
        assert_eq!(
            format_list_line(&entry("dir with space", 0o040755, 4096, T), now).unwrap(),
            "drwxr-xr-x    1 1000     100              4096 Mar  5 14:07 dir with space\r\n"
        );
        let mut link = entry("l", 0o120777, 3, T);
        link.link_target = Some("tgt".into());
        assert!(format_list_line(&link, now)
            .unwrap()
            .starts_with("lrwxrwxrwx "));
        assert!(format_list_line(&link, now)
            .unwrap()
            .ends_with(" l -> tgt\r\n"));
        for bad in ["a\r\nb", "a\nb", "a\rb", "a\0b", ""] {
            assert_eq!(format_list_line(&entry(bad, 0o100644, 1, T), now), None);
            assert_eq!(format_nlst_line(&entry(bad, 0o100644, 1, T)), None);
            assert_eq!(
                format_mlsd_line(&entry(bad, 0o100644, 1, T), FactSet::default()),
                None
            );
        }
    }

    #[test]
    fn modes() {
        assert_eq!(format_mode(Some(0o104755)), "-rwsr-xr-x");
        assert_eq!(format_mode(Some(0o102644)), "-rw-r-Sr--");
        assert_eq!(format_mode(Some(0o041777)), "drwxrwxrwt");
        assert_eq!(format_mode(Some(0o041776)), "drwxrwxrwT");
        assert_eq!(format_mode(Some(0o010600)), "prw-------");
        assert_eq!(format_mode(None), "?---------");
    }

    #[test]
    fn mlsd_facts_per_rfc_3659() {
        let f = entry("a.txt", 0o100640, 10, T);
        assert_eq!(
            format_mlsd_line(&f, FactSet::default()).unwrap(),
            "type=file;size=10;modify=20240305140709;perm=adfwr;unix.mode=0640; a.txt\r\n"
        );
        let d = entry("sub", 0o040755, 4096, T);
        assert_eq!(
            format_mlsd_line(&d, FactSet::default()).unwrap(),
            "type=dir;modify=20240305140709;perm=cdfmpel;unix.mode=0755; sub\r\n"
        );
        let ro = entry("ro", 0o100444, 1, T);
        assert!(format_facts(&ro.attrs, FactSet::default()).contains("perm=r;"));
        let set = FactSet::parse("SIZE;type;bogus;");
        assert_eq!(set.names(), "type;size;");
        assert_eq!(format_facts(&f.attrs, set), "type=file;size=10;");
        assert_eq!(FactSet::parse("").names(), "");
        assert_eq!(
            FactSet::default().feat_line(),
            "MLST type*;size*;modify*;perm*;unix.mode*;"
        );
        assert_eq!(set.feat_line(), "MLST type*;size*;modify;perm;unix.mode;");
        assert_eq!(
            format_mlst_fact_line("/a b", &f.attrs, set).unwrap(),
            " type=file;size=10; /a b"
        );
        assert_eq!(format_mlst_fact_line("/a\nb", &f.attrs, set), None);
    }

    #[test]
    fn list_arguments() {
        assert_eq!(split_list_arg("-la"), "");
        assert_eq!(split_list_arg("-a sub dir"), "sub dir");
        assert_eq!(split_list_arg("sub"), "sub");
        assert_eq!(split_list_arg(""), "");
        assert_eq!(split_list_arg("-1.txt"), "-1.txt");
    }
}
