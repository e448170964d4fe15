//! FTP path arguments to SFTP paths: relative to the session's working
//! directory, `.` and `..` resolved, never above `/`, always absolute.
//!
//! Pure. A name with CR, LF or NUL is refused before anything is sent:
//! SFTP carries names length-prefixed, so such a byte could not start a
//! second request there, but sftp-server would cut a name at NUL and open
//! another file than the one named, and CR or LF would end an FTP reply
//! or listing line early. Names must be UTF-8 (the SFTP client library
//! carries names as Rust strings).

/// Longest path argument taken, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;

/// Why a path argument is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// CR, LF or NUL in the name.
    #[error("the name contains CR, LF or NUL")]
    ControlByte,
    /// Not UTF-8.
    #[error("the name is not UTF-8")]
    NotUtf8,
    /// Longer than [`MAX_PATH`].
    #[error("the name is too long")]
    TooLong,
}

/// Checks one path argument as the client sent it.
pub fn check_arg(arg: &[u8]) -> Result<&str, PathError> {
    if arg.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if arg.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(PathError::ControlByte);
    }
    std::str::from_utf8(arg).map_err(|_| PathError::NotUtf8)
}

/// Resolves `arg` (as sent) against `cwd` (absolute, normalised): the
/// absolute, normalised SFTP path. An empty argument is `cwd` itself.
pub fn resolve(cwd: &str, arg: &[u8]) -> Result<String, PathError> {
    let arg = check_arg(arg)?;
    let mut parts: Vec<&str> = Vec::new();
    let start = if arg.starts_with('/') { "" } else { cwd };
    for seg in start.split('/').chain(arg.split('/')) {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(arg.len() + cwd.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    if out.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    Ok(out)
}

/// The parent of an absolute, normalised path (`/` for `/`).
pub fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((p, _)) => p.into(),
    }
}

/// The last component of an absolute, normalised path (empty for `/`).
pub fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

/// RFC 959 appendix II: a quote inside the quoted path of a 257 reply is
/// doubled.
pub fn quote_257(path: &str) -> String {
    path.replace('"', "\"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution() {
        let cases: &[(&str, &str, &str)] = &[
            ("/", "", "/"),
            ("/home/u", "", "/home/u"),
            ("/home/u", "a.txt", "/home/u/a.txt"),
            ("/home/u", "./a//b/", "/home/u/a/b"),
            ("/home/u", "..", "/home"),
            ("/home/u", "../../../..", "/"),
            ("/home/u", "/etc/../x", "/x"),
            ("/", "a b", "/a b"),
            ("/", "...", "/..."),
            ("/", "~", "/~"),
        ];
        for (cwd, arg, want) in cases {
            assert_eq!(
                resolve(cwd, arg.as_bytes()).unwrap(),
                *want,
                "{cwd} + {arg}"
            );
        }
    }

    #[test]
    fn control_bytes_never_pass() {
        for bad in [&b"a\rb"[..], b"a\nDELE x", b"a\0b", b"\r", b"\n", b"\0"] {
            assert_eq!(resolve("/", bad), Err(PathError::ControlByte), "{bad:?}");
        }
        assert_eq!(resolve("/", b"caf\xe9"), Err(PathError::NotUtf8));
        assert_eq!(resolve("/", &[b'a'; MAX_PATH + 1]), Err(PathError::TooLong));
        assert!(resolve("/", "café".as_bytes()).is_ok());
    }

    #[test]
    fn helpers() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
        assert_eq!(file_name("/a/b"), "b");
        assert_eq!(file_name("/"), "");
        assert_eq!(quote_257("/a\"b"), "/a\"\"b");
    }

    proptest::proptest! {
        #[test]
        fn resolved_paths_are_absolute_normalised_and_line_safe(
            cwd in proptest::collection::vec("[a-z.]{0,3}", 0..4),
            arg in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let cwd = resolve("/", cwd.join("/").as_bytes()).unwrap();
            if let Ok(p) = resolve(&cwd, &arg) {
                proptest::prop_assert!(p.starts_with('/'));
                proptest::prop_assert!(p == "/" || !p.ends_with('/'));
                proptest::prop_assert!(!p.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)));
                proptest::prop_assert!(!p.split('/').skip(1).any(|s| s.is_empty() && p != "/" || s == "." || s == ".."));
                proptest::prop_assert_eq!(resolve("/", p.as_bytes()).unwrap(), p.clone());
            }
        }
    }
}
