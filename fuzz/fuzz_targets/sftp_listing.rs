//! SFTP backends: directory entries as the adapter writes them for `LIST`,
//! `NLST`, `MLSD` and `MLST` (`sftp::listing`), from whatever a hostile
//! SFTP server could send.
//!
//! Input: bytes 0..4 mode, 4..8 mtime, 8..16 size, 16..20 uid, 20..24 gid
//! (missing bytes: attribute absent), byte 24 a fact selection bitmask,
//! then the name (lossy UTF-8, as russh-sftp reads it) and, after a NUL,
//! a symbolic link's target.
//!
//! Checks: no panic; every line produced is exactly one line (one CRLF,
//! at its end, no other CR, LF or NUL); a name with CR, LF or NUL is left
//! out; the LIST line ends with the name (and ` -> target` for a link);
//! MLSD is `facts; name` with `fact=value;` pairs; time-vals read back.

#![no_main]

use ftpgate::sftp::listing::{
    format_list_line, format_mlsd_line, format_mlst_fact_line, format_nlst_line,
    format_time_val, is_line_safe, parse_time_val, Attrs, Entry, FactSet, FACTS,
};
use libfuzzer_sys::fuzz_target;

fn word<const N: usize>(d: &[u8], at: usize) -> Option<[u8; N]> {
    d.get(at..at + N).map(|b| b.try_into().unwrap())
}

fn one_line(l: &str) {
    assert!(l.ends_with("\r\n"), "{l:?}");
    let body = &l[..l.len() - 2];
    assert!(is_line_safe(body), "{l:?}");
}

fuzz_target!(|data: &[u8]| {
    let attrs = Attrs {
        mode: word::<4>(data, 0).map(u32::from_le_bytes),
        mtime: word::<4>(data, 4).map(u32::from_le_bytes),
        size: word::<8>(data, 8).map(u64::from_le_bytes),
        uid: word::<4>(data, 16).map(u32::from_le_bytes),
        gid: word::<4>(data, 20).map(u32::from_le_bytes),
    };
    let facts_mask = data.get(24).copied().unwrap_or(0xff);
    let rest = data.get(25..).unwrap_or_default();
    let (name, target) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let name = String::from_utf8_lossy(name).into_owned();
    let entry = Entry {
        name: name.clone(),
        attrs: attrs.clone(),
        link_target: target.map(|t| String::from_utf8_lossy(t).into_owned()),
    };
    let safe = is_line_safe(&name) && !name.is_empty();
    let now = i64::from(attrs.mtime.unwrap_or(0)) + 86_400;
    let selected: String = FACTS
        .iter()
        .enumerate()
        .filter(|(i, _)| facts_mask & (1 << i) != 0)
        .map(|(_, f)| format!("{f};"))
        .collect();
    let set = FactSet::parse(&selected);
    match format_list_line(&entry, now) {
        Some(l) => {
            assert!(safe);
            one_line(&l);
            let body = l.trim_end_matches("\r\n");
            assert!(body.ends_with(&name) || body.contains(&format!(" {name} -> ")), "{l:?}");
        }
        None => assert!(!safe),
    }
    match format_nlst_line(&entry) {
        Some(l) => {
            assert!(safe);
            one_line(&l);
            assert_eq!(l, format!("{name}\r\n"));
        }
        None => assert!(!safe),
    }
    match format_mlsd_line(&entry, set) {
        Some(l) => {
            assert!(safe);
            one_line(&l);
            let (facts, n) = l.trim_end_matches("\r\n").split_once(' ').unwrap();
            assert_eq!(n, name);
            for f in facts.split_terminator(';') {
                let (k, v) = f.split_once('=').unwrap_or_else(|| panic!("{l:?}"));
                assert!(!k.is_empty() && !v.contains(' '), "{l:?}");
            }
        }
        None => assert!(!safe),
    }
    if let Some(l) = format_mlst_fact_line(&format!("/{name}"), &attrs, set) {
        assert!(l.starts_with(' ') && is_line_safe(&l), "{l:?}");
    }
    if let Some(t) = attrs.mtime {
        assert_eq!(parse_time_val(&format_time_val(t)), Some(t));
    }
});
