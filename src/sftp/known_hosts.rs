//! SSH host keys the operator trusts: an OpenSSH `known_hosts` file
//! (`sftp_known_hosts`), read once when the configuration is validated, and
//! the check of a key an SFTP backend presents (sshd(8) "SSH_KNOWN_HOSTS
//! FILE FORMAT").
//!
//! Lines are parsed by `ssh-key`; host matching is here: comma-separated
//! patterns with `*` and `?` (case-insensitive), `!` negations, `[host]:port`
//! for ports other than 22, hashed names (`|1|salt|hash`, HMAC-SHA1), and
//! `@revoked` keys. `@cert-authority` lines are kept out: ftpgate asks for
//! plain host keys, never certificates. No I/O here but [`KnownHosts::read`].

use std::path::Path;

use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{HashAlg, PublicKey};

/// The trusted host keys.
#[derive(Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnownHosts({} keys)", self.entries.len())
    }
}

impl PartialEq for KnownHosts {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

/// What the file says of a key a host presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host names this key.
    Known,
    /// No line names this host.
    Unknown,
    /// Lines name this host, none with this key (the key changed, or the
    /// host now shows another type of key).
    Changed,
    /// The key is marked `@revoked`.
    Revoked,
}

/// A line that could not be used, for a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub why: String,
}

impl KnownHosts {
    /// Parses the text of a known_hosts file. Lines that do not parse (a
    /// key type this build does not know, a typo) are returned for a
    /// warning and left out, as OpenSSH does.
    pub fn parse(text: &str) -> (KnownHosts, Vec<Skipped>) {
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(l, _)| l).trim();
            if line.is_empty() {
                continue;
            }
            match line.parse::<Entry>() {
                Ok(e) if e.marker() == Some(&Marker::CertAuthority) => skipped.push(Skipped {
                    line: i + 1,
                    why:
                        "@cert-authority lines are not used (ftpgate accepts plain host keys only)"
                            .into(),
                }),
                Ok(e) => entries.push(e),
                Err(e) => skipped.push(Skipped {
                    line: i + 1,
                    why: format!("not a known_hosts line ({e})"),
                }),
            }
        }
        (KnownHosts { entries }, skipped)
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> std::io::Result<(KnownHosts, Vec<Skipped>)> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verdict on `key`, presented by `host` (as written in the
    /// backend's name, without brackets) on `port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = host_key_name(host, port);
        let mut seen = false;
        let mut known = false;
        for e in self
            .entries
            .iter()
            .filter(|e| matches_host(e.host_patterns(), &name))
        {
            let same = e.public_key().key_data() == key.key_data();
            if e.marker() == Some(&Marker::Revoked) {
                if same {
                    return Verdict::Revoked;
                }
                continue;
            }
            seen = true;
            known |= same;
        }
        // A revoked key is revoked for every host.
        if self.entries.iter().any(|e| {
            e.marker() == Some(&Marker::Revoked) && e.public_key().key_data() == key.key_data()
        }) {
            return Verdict::Revoked;
        }
        match (known, seen) {
            (true, _) => Verdict::Known,
            (false, true) => Verdict::Changed,
            (false, false) => Verdict::Unknown,
        }
    }
}

/// The key's SHA-256 fingerprint as `ssh-keygen -l` prints it (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The name a host's keys are filed under: `host`, or `[host]:port` when
/// the port is not 22 (sshd(8)).
pub fn host_key_name(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

fn matches_host(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
            ring::hmac::verify(&key, name.as_bytes(), hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut positive = false;
            for p in list {
                match p.strip_prefix('!') {
                    // A negated match rules the line out whatever else matches.
                    Some(neg) if glob(neg, name) => return false,
                    Some(_) => {}
                    None => positive |= glob(p, name),
                }
            }
            positive
        }
    }
}

/// `*` (any run) and `?` (one character) glob, ASCII case-insensitive, as
/// OpenSSH's `match_pattern`.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (
        pattern.to_ascii_lowercase().chars().collect(),
        name.to_ascii_lowercase().chars().collect(),
    );
    // Iterative matcher with one backtrack point for the last `*`:
    // linear in practice, never exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6LE9cMXnylSZOc07ujNOGR8hPhMrYOi8EHtQjfSh4Q";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6l4T14o3aqzgA8EFQQMg3UKNcBsielscJoW6nywKhm";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn plain_names_ports_and_patterns() {
        let text = format!(
            "# comment\n\nsftp.internal,10.0.0.5 {ED1}\n[sftp.internal]:2222 {ED2}\n*.example.net,!bad.example.net {ED1}\n"
        );
        let (kh, skipped) = KnownHosts::parse(&text);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(kh.len(), 3);
        assert_eq!(kh.check("sftp.internal", 22, &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("SFTP.Internal", 22, &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.5", 22, &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("sftp.internal", 22, &key(ED2)), Verdict::Changed);
        assert_eq!(kh.check("sftp.internal", 2222, &key(ED2)), Verdict::Known);
        assert_eq!(kh.check("sftp.internal", 2222, &key(ED1)), Verdict::Changed);
        assert_eq!(kh.check("other", 22, &key(ED1)), Verdict::Unknown);
        assert_eq!(kh.check("a.example.net", 22, &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("bad.example.net", 22, &key(ED1)), Verdict::Unknown);
        assert_eq!(kh.check("10.0.0.5", 2200, &key(ED1)), Verdict::Unknown);
    }

    #[test]
    fn hashed_names() {
        // ssh-keygen -H of "[127.0.0.1]:2222" with this salt.
        let salt = [7u8; 20];
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
        let tag = ring::hmac::sign(&k, b"[127.0.0.1]:2222");
        use russh::keys::ssh_encoding::base64::{Base64, Encoding};
        let line = format!(
            "|1|{}|{} {ED1}\n",
            Base64::encode_string(&salt),
            Base64::encode_string(tag.as_ref())
        );
        let (kh, skipped) = KnownHosts::parse(&line);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(kh.check("127.0.0.1", 2222, &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("127.0.0.1", 22, &key(ED1)), Verdict::Unknown);
        assert_eq!(kh.check("127.0.0.1", 2222, &key(ED2)), Verdict::Changed);
    }

    #[test]
    fn revoked_and_cert_authority_and_bad_lines() {
        let text = format!(
            "host {ED1}\n@revoked * {ED2}\n@cert-authority *.example {ED1}\nnot a line\nhost ssh-ed25519 AAAA\n"
        );
        let (kh, skipped) = KnownHosts::parse(&text);
        assert_eq!(kh.len(), 2);
        assert_eq!(
            skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(kh.check("host", 22, &key(ED2)), Verdict::Revoked);
        assert_eq!(kh.check("host", 22, &key(ED1)), Verdict::Known);
        assert_eq!(kh.check("x.example", 22, &key(ED1)), Verdict::Unknown);
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("a*b?c", "AxxbYc"));
        assert!(!glob("a*b?c", "axxbc"));
        assert!(glob("10.0.0.*", "10.0.0.5"));
        assert!(!glob("10.0.0.?", "10.0.0.55"));
        assert!(glob("*.*.*", "a.b.c"));
        // Long hostile input stays fast (no exponential backtracking).
        let long = "a".repeat(5000);
        assert!(!glob(&"*a".repeat(50).replace("*a*a", "*a*b"), &long));
        assert!(glob(&"*a".repeat(50), &long));
    }

    #[test]
    fn fingerprints_are_sha256() {
        let fp = fingerprint(&key(ED1));
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert_eq!(host_key_name("::1", 2222), "[::1]:2222");
        assert_eq!(host_key_name("[::1]", 22), "::1");
    }
}
