//! SFTP backends: `sftp_known_hosts` (required as soon as a pool has an
//! `sftp://` member; the file is read and parsed here, so a reload picks
//! up new keys) and `[sftp_user_key]` (each key read here; it must be
//! encrypted, since its passphrase is what the user's FTP password is
//! checked against).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{invalid, relative_to_file, ConfigError};
use crate::config::file::{Located, RawConfig};
use crate::config::UserKey;
use crate::sftp::KnownHosts;

/// The SFTP part of [`crate::config::Config`]; same names and meaning.
pub(super) struct Sftp {
    pub sftp_known_hosts_file: Option<PathBuf>,
    pub sftp_known_hosts: Option<Arc<KnownHosts>>,
    pub sftp_user_key: BTreeMap<String, UserKey>,
}

/// `has_sftp`: some pool has an `sftp://` member.
pub(super) fn validate(raw: &RawConfig, has_sftp: bool) -> Result<Sftp, ConfigError> {
    let (file, known) = match &raw.sftp_known_hosts {
        None if has_sftp => {
            return Err(ConfigError::Needed {
                key: "sftp_known_hosts",
                flag: "--sftp-known-hosts",
                why: "sftp:// backends are only reached after their host key is checked: name an OpenSSH known_hosts file with their keys (ssh-keyscan -p PORT HOST >> FILE, then check the fingerprints)".into(),
            })
        }
        None => (None, None),
        Some(l) => {
            let path = relative_to_file(l);
            let (known, skipped) = match KnownHosts::read(&path) {
                Ok(k) => k,
                Err(e) => {
                    return invalid(
                        "sftp_known_hosts",
                        &l.origin,
                        format!("cannot read `{}`: {e}", path.display()),
                    )
                }
            };
            for s in &skipped {
                tracing::warn!(file = %path.display(), line = s.line, reason = %s.why, "sftp_known_hosts: line left out");
            }
            if known.is_empty() && has_sftp {
                return invalid(
                    "sftp_known_hosts",
                    &l.origin,
                    format!("`{}` has no usable host key line", path.display()),
                );
            }
            (Some(path), Some(Arc::new(known)))
        }
    };
    Ok(Sftp {
        sftp_known_hosts_file: file,
        sftp_known_hosts: known,
        sftp_user_key: user_keys(&raw.sftp_user_key)?,
    })
}

fn user_keys(
    v: &Option<Located<BTreeMap<String, String>>>,
) -> Result<BTreeMap<String, UserKey>, ConfigError> {
    let Some(l) = v else {
        return Ok(BTreeMap::new());
    };
    let mut keys = BTreeMap::new();
    for (user, file) in &l.value {
        let path = relative_to_file(&Located {
            value: file.clone(),
            origin: l.origin.clone(),
        });
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                return invalid(
                    "sftp_user_key",
                    &l.origin,
                    format!("user `{user}`: cannot read `{}`: {e}", path.display()),
                )
            }
        };
        let key = match russh::keys::ssh_key::PrivateKey::from_openssh(text.trim()) {
            Ok(k) => k,
            Err(e) => {
                return invalid(
                    "sftp_user_key",
                    &l.origin,
                    format!(
                        "user `{user}`: `{}` is not an OpenSSH private key ({e})",
                        path.display()
                    ),
                )
            }
        };
        if !key.is_encrypted() {
            return invalid(
                "sftp_user_key",
                &l.origin,
                format!(
                    "user `{user}`: `{}` is not encrypted, so anyone who knows the user name could log in; \
                     encrypt it (ssh-keygen -p -f FILE): its passphrase is then the user's FTP password",
                    path.display()
                ),
            );
        }
        keys.insert(
            user.clone(),
            UserKey {
                path,
                text: Arc::new(text),
            },
        );
    }
    Ok(keys)
}
