//! TLS settings: the certificate and FTPS policy clients see (per listener
//! too, and implicit FTPS), client certificates (mutual TLS, the user they
//! may log in as, the transfer log's user field) and the SNI names clients
//! may ask for, TLS toward the backends, how their certificates are
//! verified and ftpgate's own certificate toward them, and what health
//! checks do after the greeting (AUTH TLS, login). Certificates and the
//! health-check password file are read here, so a missing file stops
//! startup with its key; no connection is made.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::listeners::Listeners;
use super::{duration, flag, invalid, relative_to_file, ConfigError};
use crate::config::file::{Located, Origin, RawConfig};
use crate::config::{BackendTlsMode, Password, TlsPolicy};
use crate::tls::{BackendIdentity, BackendVerify, ClientAuth};
use crate::xferlog::UserField;

/// The TLS part of [`crate::config::Config`]; its fields have the same names
/// and meaning there.
pub(super) struct Tls {
    pub tls_handshake_timeout: Duration,
    pub tls_min_version_13: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    pub tls: TlsPolicy,
    pub tls_for_listener: Vec<(std::net::SocketAddr, TlsPolicy)>,
    pub tls_require_data_resumption: bool,
    pub backend_tls: BackendTlsMode,
    pub backend_tls_verify: BackendVerify,
    pub backend_tls_verify_flag: bool,
    pub backend_tls_config: Option<Arc<rustls::ClientConfig>>,
    pub backend_tls_server_name: Option<String>,
    pub backend_tls_protect_data: bool,
    pub health_check_tls: bool,
    pub health_check_user: Option<String>,
    pub health_check_password_file: Option<PathBuf>,
    pub health_check_password: Option<Password>,
    pub tls_client_auth: ClientAuth,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_cert_user: bool,
    pub tls_server_names: Vec<String>,
    pub xferlog_user: UserField,
    pub backend_tls_identity: Option<BackendIdentity>,
}

/// The TLS settings of `raw`; `listeners` for the keys that name one.
pub(super) fn validate(raw: &RawConfig, listeners: &Listeners) -> Result<Tls, ConfigError> {
    let tls_handshake_timeout = duration(
        "tls_handshake_timeout",
        &raw.tls_handshake_timeout,
        Duration::from_secs(10),
    )?;
    let tls_min_version_13 = min_version_13(raw)?;
    let path_of = |v: &Option<Located<String>>| v.as_ref().map(relative_to_file);
    let (tls_cert, tls_key) = (path_of(&raw.tls_cert), path_of(&raw.tls_key));
    let has_cert = tls_cert.is_some() && tls_key.is_some();
    let (tls_client_auth, tls_client_ca) = client_auth(raw, has_cert)?;
    let tls_server_names = server_names(raw, has_cert)?;
    let rules = crate::tls::ClientRules {
        min_tls13: tls_min_version_13,
        client_auth: tls_client_auth,
        client_ca: tls_client_ca.as_deref(),
        server_names: &tls_server_names,
    };
    let client_tls = server_config(raw, &tls_cert, &tls_key, &rules)?;
    let (tls_client_cert_user, xferlog_user) = certificate_uses(raw, tls_client_auth)?;
    let tls = policy(raw, client_tls.is_some())?;
    let tls_for_listener = policy_for_listener(raw, listeners, client_tls.is_some())?;
    if let (false, true, Some(l)) = (
        listeners.implicit_tls_listen.is_empty(),
        client_tls.is_none(),
        &raw.implicit_tls_listen,
    ) {
        return invalid(
            "implicit_tls_listen",
            &l.origin,
            "implicit FTPS needs a certificate: set tls_cert and tls_key",
        );
    }
    let backend_tls = backend_mode(raw)?;
    let verify_flag = flag(&raw.backend_tls_verify, true);
    let backend_tls_verify = backend_verify(raw, backend_tls, verify_flag)?;
    let backend_tls_identity = backend_identity(raw, backend_tls)?;
    let backend_tls_config = backend_client_config(
        raw,
        backend_tls,
        &backend_tls_verify,
        backend_tls_identity.as_ref(),
    )?;
    let (health_check_tls, health_check_user, health_check_password_file, health_check_password) =
        health_login(raw, backend_tls)?;
    let backend_tls_server_name = raw
        .backend_tls_server_name
        .as_ref()
        .map(|l| l.value.trim().to_owned());
    Ok(Tls {
        tls_handshake_timeout,
        tls_min_version_13,
        tls_cert,
        tls_key,
        client_tls,
        tls,
        tls_for_listener,
        tls_require_data_resumption: flag(&raw.tls_require_data_resumption, false),
        backend_tls,
        backend_tls_verify,
        backend_tls_verify_flag: verify_flag,
        backend_tls_config,
        backend_tls_server_name,
        backend_tls_protect_data: flag(&raw.backend_tls_protect_data, true),
        health_check_tls,
        health_check_user,
        health_check_password_file,
        health_check_password,
        tls_client_auth,
        tls_client_ca,
        tls_client_cert_user,
        tls_server_names,
        xferlog_user,
        backend_tls_identity,
    })
}

/// `tls_client_auth` and `tls_client_ca`: client certificates need a
/// certificate of ftpgate's own (TLS toward clients) and a CA file; a CA
/// file without them is a mistake, not a silent no-op.
fn client_auth(
    raw: &RawConfig,
    has_cert: bool,
) -> Result<(ClientAuth, Option<PathBuf>), ConfigError> {
    let auth = match &raw.tls_client_auth {
        None => ClientAuth::Off,
        Some(l) => match l.value.trim().to_ascii_lowercase().as_str() {
            "off" => ClientAuth::Off,
            "optional" => ClientAuth::Optional,
            "required" => ClientAuth::Required,
            other => {
                return invalid(
                    "tls_client_auth",
                    &l.origin,
                    format!("`{other}` is not \"off\", \"optional\" or \"required\""),
                )
            }
        },
    };
    let ca = raw.tls_client_ca.as_ref();
    match (auth, ca, &raw.tls_client_auth) {
        (ClientAuth::Off, Some(l), _) => invalid(
            "tls_client_ca",
            &l.origin,
            "set tls_client_auth = \"optional\" or \"required\" as well (client certificates are off)",
        ),
        (ClientAuth::Off, None, _) => Ok((auth, None)),
        (_, _, Some(l)) if !has_cert => invalid(
            "tls_client_auth",
            &l.origin,
            "client certificates need TLS toward clients: set tls_cert and tls_key",
        ),
        (_, None, Some(l)) => invalid(
            "tls_client_auth",
            &l.origin,
            "set tls_client_ca: the CA certificates (PEM) that issue client certificates",
        ),
        (_, Some(l), _) => Ok((auth, Some(relative_to_file(l)))),
        (_, None, None) => Ok((ClientAuth::Off, None)),
    }
}

/// `tls_server_names`: DNS names (an IP address is never sent as SNI, RFC
/// 6066 3), only with a certificate.
fn server_names(raw: &RawConfig, has_cert: bool) -> Result<Vec<String>, ConfigError> {
    let Some(l) = &raw.tls_server_names else {
        return Ok(Vec::new());
    };
    if !has_cert && !l.value.is_empty() {
        return invalid(
            "tls_server_names",
            &l.origin,
            "SNI names need TLS toward clients: set tls_cert and tls_key",
        );
    }
    let mut names = Vec::new();
    for n in &l.value {
        let n = n.trim().trim_end_matches('.');
        if n.parse::<std::net::IpAddr>().is_ok() {
            return invalid(
                "tls_server_names",
                &l.origin,
                format!("`{n}` is an IP address, which clients never send as SNI (RFC 6066 3); a client connecting to an address sends no SNI and is accepted"),
            );
        }
        if rustls::pki_types::DnsName::try_from(n).is_err() {
            return invalid(
                "tls_server_names",
                &l.origin,
                format!("`{n}` is not a DNS name"),
            );
        }
        names.push(n.to_ascii_lowercase());
    }
    Ok(names)
}

/// `tls_client_cert_user` and `xferlog_user`: both need client certificates.
fn certificate_uses(raw: &RawConfig, auth: ClientAuth) -> Result<(bool, UserField), ConfigError> {
    let off = auth == ClientAuth::Off;
    if let Some(l) = raw.tls_client_cert_user.as_ref().filter(|l| l.value && off) {
        return invalid(
            "tls_client_cert_user",
            &l.origin,
            "needs client certificates: set tls_client_auth and tls_client_ca",
        );
    }
    let field = match &raw.xferlog_user {
        None => UserField::Login,
        Some(l) => match l.value.trim().to_ascii_lowercase().as_str() {
            "login" => UserField::Login,
            "certificate" if off => return invalid(
                "xferlog_user",
                &l.origin,
                "\"certificate\" needs client certificates: set tls_client_auth and tls_client_ca",
            ),
            "certificate" => UserField::Certificate,
            other => {
                return invalid(
                    "xferlog_user",
                    &l.origin,
                    format!("`{other}` is not \"login\" or \"certificate\""),
                )
            }
        },
    };
    Ok((flag(&raw.tls_client_cert_user, false), field))
}

/// `backend_tls_client_cert` and `backend_tls_client_key`: both or
/// neither, only with TLS toward backends (the files are read with the
/// backend TLS configuration).
fn backend_identity(
    raw: &RawConfig,
    backend_tls: BackendTlsMode,
) -> Result<Option<BackendIdentity>, ConfigError> {
    match (&raw.backend_tls_client_cert, &raw.backend_tls_client_key) {
        (None, None) => Ok(None),
        (Some(c), None) => invalid(
            "backend_tls_client_key",
            &c.origin,
            "backend_tls_client_cert is set but backend_tls_client_key is not: both are needed",
        ),
        (None, Some(k)) => invalid(
            "backend_tls_client_cert",
            &k.origin,
            "backend_tls_client_key is set but backend_tls_client_cert is not: both are needed",
        ),
        (Some(c), Some(_)) if backend_tls == BackendTlsMode::Off => invalid(
            "backend_tls_client_cert",
            &c.origin,
            "a client certificate toward backends needs backend_tls = \"explicit\" or \"implicit\"",
        ),
        (Some(c), Some(k)) => Ok(Some(BackendIdentity {
            cert: relative_to_file(c),
            key: relative_to_file(k),
        })),
    }
}

/// `tls_min_version`: whether TLS 1.2 is refused.
fn min_version_13(raw: &RawConfig) -> Result<bool, ConfigError> {
    Ok(match &raw.tls_min_version {
        None => false,
        Some(l) => match l.value.trim() {
            "1.2" => false,
            "1.3" => true,
            other => {
                return invalid(
                    "tls_min_version",
                    &l.origin,
                    format!("`{other}` is not \"1.2\" or \"1.3\""),
                )
            }
        },
    })
}

/// The certificate clients see, from `tls_cert` and `tls_key` (both or
/// neither).
fn server_config(
    raw: &RawConfig,
    tls_cert: &Option<PathBuf>,
    tls_key: &Option<PathBuf>,
    rules: &crate::tls::ClientRules<'_>,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    Ok(match (tls_cert, tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::server_config(c, k, rules).or_else(|e| {
            let key = tls_key_or_cert(&e);
            let l = match key {
                "tls_cert" => raw.tls_cert.as_ref(),
                "tls_client_ca" => raw.tls_client_ca.as_ref(),
                _ => raw.tls_key.as_ref(),
            }
            .expect("set when named");
            invalid(key, &l.origin, strip_key(&e.to_string()))
        })?),
        (Some(_), None) => {
            return invalid(
                "tls_key",
                &raw.tls_cert.as_ref().expect("set").origin,
                "tls_cert is set but tls_key is not: both are needed",
            )
        }
        (None, Some(_)) => {
            return invalid(
                "tls_cert",
                &raw.tls_key.as_ref().expect("set").origin,
                "tls_key is set but tls_cert is not: both are needed",
            )
        }
        (None, None) => None,
    })
}

/// `tls`: explicit FTPS on the plain listeners; optional by default when
/// there is a certificate.
fn policy(raw: &RawConfig, has_cert: bool) -> Result<TlsPolicy, ConfigError> {
    Ok(match &raw.tls {
        None if has_cert => TlsPolicy::Optional,
        None => TlsPolicy::Off,
        Some(l) => {
            let p = match l.value.trim().to_ascii_lowercase().as_str() {
                "off" => TlsPolicy::Off,
                "optional" => TlsPolicy::Optional,
                "required" => TlsPolicy::Required,
                other => {
                    return invalid(
                        "tls",
                        &l.origin,
                        format!("`{other}` is not \"off\", \"optional\" or \"required\""),
                    )
                }
            };
            if p != TlsPolicy::Off && !has_cert {
                return invalid(
                    "tls",
                    &l.origin,
                    "FTPS needs a certificate: set tls_cert and tls_key",
                );
            }
            p
        }
    })
}

/// `[tls_for_listener]`: a policy for one `listen` or
/// `proxy_protocol_listen` address.
fn policy_for_listener(
    raw: &RawConfig,
    listeners: &Listeners,
    has_cert: bool,
) -> Result<Vec<(std::net::SocketAddr, TlsPolicy)>, ConfigError> {
    let mut tls_for_listener = Vec::new();
    if let Some(l) = &raw.tls_for_listener {
        for (addr, policy) in &l.value {
            let Ok(a) = addr.trim().parse::<std::net::SocketAddr>() else {
                return invalid(
                    "tls_for_listener",
                    &l.origin,
                    format!("`{addr}` is not IP:port"),
                );
            };
            if !listeners.listen.contains(&a) && !listeners.proxy_protocol_listen.contains(&a) {
                return invalid(
                    "tls_for_listener",
                    &l.origin,
                    format!("`{a}` is not one of `listen` or `proxy_protocol_listen`"),
                );
            }
            let Some(p) = TlsPolicy::parse(policy) else {
                return invalid(
                    "tls_for_listener",
                    &l.origin,
                    format!("`{policy}` is not \"off\", \"optional\" or \"required\""),
                );
            };
            if p != TlsPolicy::Off && !has_cert {
                return invalid(
                    "tls_for_listener",
                    &l.origin,
                    "FTPS needs a certificate: set tls_cert and tls_key",
                );
            }
            tls_for_listener.push((a, p));
        }
    }
    Ok(tls_for_listener)
}

/// `backend_tls`.
fn backend_mode(raw: &RawConfig) -> Result<BackendTlsMode, ConfigError> {
    Ok(match &raw.backend_tls {
        None => BackendTlsMode::Off,
        Some(l) => match l.value.trim().to_ascii_lowercase().as_str() {
            "off" => BackendTlsMode::Off,
            "explicit" => BackendTlsMode::Explicit,
            "implicit" => BackendTlsMode::Implicit,
            other => {
                return invalid(
                    "backend_tls",
                    &l.origin,
                    format!("`{other}` is not \"off\", \"explicit\" or \"implicit\""),
                )
            }
        },
    })
}

/// How backend certificates are checked: `backend_tls_ca` or
/// `backend_tls_pin`, or not at all with `backend_tls_verify = false`.
/// TLS toward backends without any of them is refused.
fn backend_verify(
    raw: &RawConfig,
    backend_tls: BackendTlsMode,
    verify_flag: bool,
) -> Result<BackendVerify, ConfigError> {
    Ok(
        match (&raw.backend_tls_ca, &raw.backend_tls_pin, verify_flag) {
            (Some(ca), Some(_), _) => {
                return invalid(
                    "backend_tls_pin",
                    &ca.origin,
                    "set backend_tls_ca or backend_tls_pin, not both",
                )
            }
            (Some(ca), None, true) => BackendVerify::Ca(relative_to_file(ca)),
            (None, Some(pin), true) => BackendVerify::Pinned(relative_to_file(pin)),
            (_, _, false) => BackendVerify::None,
            (None, None, true) => {
                if backend_tls != BackendTlsMode::Off {
                    let origin = raw.backend_tls.as_ref().expect("set").origin.clone();
                    return invalid(
                        "backend_tls",
                        &origin,
                        "set backend_tls_ca (e.g. /etc/ssl/certs/ca-certificates.crt) or backend_tls_pin, \
                         or backend_tls_verify = false for self-signed servers",
                    );
                }
                BackendVerify::None
            }
        },
    )
}

/// The rustls client config toward backends (its CA or pin file is read
/// here); `None` when `backend_tls` is off.
fn backend_client_config(
    raw: &RawConfig,
    backend_tls: BackendTlsMode,
    backend_tls_verify: &BackendVerify,
    identity: Option<&BackendIdentity>,
) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
    if backend_tls == BackendTlsMode::Off {
        return Ok(None);
    }
    Ok(Some(
        crate::tls::client_config(backend_tls_verify, identity).or_else(|e| {
            let named = match tls_key_or_cert(&e) {
                k @ "backend_tls_client_cert" => Some((k, &raw.backend_tls_client_cert)),
                k @ "backend_tls_client_key" => Some((k, &raw.backend_tls_client_key)),
                _ => None,
            };
            let (key, origin) = match (named, backend_tls_verify) {
                (Some((k, l)), _) => (k, l.as_ref().map(|l| l.origin.clone())),
                (None, BackendVerify::Ca(_)) => (
                    "backend_tls_ca",
                    raw.backend_tls_ca.as_ref().map(|l| l.origin.clone()),
                ),
                (None, BackendVerify::Pinned(_)) => (
                    "backend_tls_pin",
                    raw.backend_tls_pin.as_ref().map(|l| l.origin.clone()),
                ),
                (None, BackendVerify::None) => ("backend_tls", None),
            };
            invalid(
                key,
                &origin.unwrap_or(Origin::Flag("--backend-tls")),
                strip_key(&e.to_string()),
            )
        })?,
    ))
}

/// The config key a TLS error names.
fn tls_key_or_cert(e: &crate::tls::TlsError) -> &'static str {
    match e {
        crate::tls::TlsError::File { key, .. } | crate::tls::TlsError::Rustls { key, .. } => key,
    }
}

/// A TLS error's text without its leading `key: ` (the config error adds it).
fn strip_key(s: &str) -> String {
    s.split_once(": ").map_or(s, |(_, rest)| rest).to_owned()
}

/// `health_check_tls`, `health_check_user`, the password file and its password.
type HealthLogin = (bool, Option<String>, Option<PathBuf>, Option<Password>);

/// What a health check does after the greeting: `AUTH TLS` (only toward
/// explicit-TLS backends: implicit-TLS checks are inside TLS already; on by
/// default there, so a backend whose certificate sessions would refuse is
/// down, not up) and a login. The password file is read here, so a missing
/// file stops startup (or a reload) with its key instead of failing every
/// check later.
fn health_login(raw: &RawConfig, backend_tls: BackendTlsMode) -> Result<HealthLogin, ConfigError> {
    let tls = flag(
        &raw.health_check_tls,
        backend_tls == BackendTlsMode::Explicit,
    );
    if let Some(l) = raw.health_check_tls.as_ref().filter(|l| l.value) {
        if backend_tls != BackendTlsMode::Explicit {
            return invalid(
                "health_check_tls",
                &l.origin,
                "needs backend_tls = \"explicit\" (with \"implicit\" checks run inside TLS already; \
                 with \"off\" ftpgate has no TLS settings for backends)",
            );
        }
    }
    let user = match &raw.health_check_user {
        None => None,
        Some(l) => {
            let name = l.value.trim();
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_control()) {
                return invalid(
                    "health_check_user",
                    &l.origin,
                    "must be a user name without control characters",
                );
            }
            Some(name.to_owned())
        }
    };
    let (file, password) = match &raw.health_check_password_file {
        None => (None, None),
        Some(l) if user.is_none() => {
            return invalid(
                "health_check_password_file",
                &l.origin,
                "set health_check_user as well (the password is sent after USER)",
            )
        }
        Some(l) => {
            let path = relative_to_file(l);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    return invalid(
                        "health_check_password_file",
                        &l.origin,
                        format!("cannot read {}: {e}", path.display()),
                    )
                }
            };
            // The first line, without its line end; the text is never quoted.
            let first = text.lines().next().unwrap_or("");
            if first.is_empty() || first.bytes().any(|b| b.is_ascii_control()) {
                return invalid(
                    "health_check_password_file",
                    &l.origin,
                    format!(
                        "the first line of {} must hold the password (not empty, no control characters)",
                        path.display()
                    ),
                );
            }
            (Some(path), Some(Password::new(first.to_owned())))
        }
    };
    Ok((tls, user, file, password))
}
