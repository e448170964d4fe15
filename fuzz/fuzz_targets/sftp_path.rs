//! SFTP backends: FTP path arguments to SFTP paths (`sftp::path::resolve`).
//!
//! Input: the working directory (lossy UTF-8, made absolute through
//! `resolve` itself) and, after the first NUL, the argument bytes as the
//! client sent them.
//!
//! Checks: no panic; a CR, LF or NUL in the argument is refused, so it can
//! never reach the server as part of a name (nor end a reply or listing
//! line and start a second one); a resolved path is absolute, normalised
//! (no empty, `.` or `..` component, no trailing `/` but for `/`), within
//! `MAX_PATH`, and resolving it again gives the same path.

#![no_main]

use ftpgate::sftp::path::{resolve, PathError, MAX_PATH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cwd, arg) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let cwd = String::from_utf8_lossy(cwd).replace(['\r', '\n'], "");
    let Ok(cwd) = resolve("/", cwd.as_bytes()) else {
        return;
    };
    let control = arg.iter().any(|b| matches!(b, b'\r' | b'\n' | 0));
    match resolve(&cwd, arg) {
        Ok(p) => {
            assert!(!control, "{arg:?} -> {p:?}");
            assert!(p.starts_with('/') && p.len() <= MAX_PATH, "{p:?}");
            assert!(!p.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            if p != "/" {
                assert!(!p.ends_with('/'), "{p:?}");
                assert!(
                    p[1..].split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
                    "{p:?}"
                );
            }
            assert_eq!(resolve("/", p.as_bytes()).as_deref(), Ok(p.as_str()));
            assert_eq!(resolve(&cwd, p.as_bytes()).as_deref(), Ok(p.as_str()));
        }
        Err(PathError::ControlByte) => assert!(control),
        Err(PathError::NotUtf8) => assert!(std::str::from_utf8(arg).is_err()),
        Err(PathError::TooLong) => {}
    }
});
