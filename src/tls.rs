//! TLS material for FTPS: the client-facing server configuration (certificate
//! chain and key from PEM files, session cache and tickets so clients can
//! resume on data connections, client certificates when asked for, ALPN
//! `ftp` and the SNI names clients may ask for) and the backend-facing
//! client configuration (verified against a CA file, a pinned certificate,
//! or, when asked explicitly, not at all; a client certificate of
//! ftpgate's own for servers that want one).
//!
//! Cross-protocol attacks (ALPACA, 2021): a browser can be made to send an
//! HTTPS request to an FTPS port that has a certificate for the same name.
//! Toward clients ftpgate speaks ALPN `ftp` only, so a ClientHello that
//! offers ALPN without `ftp` (every browser offers `http/1.1` or `h2`) is
//! refused with the `no_application_protocol` alert; FTP clients that send
//! no ALPN at all (curl, lftp, Python's ftplib) are unaffected. With
//! `tls_server_names`, a ClientHello naming (SNI) any other host is refused
//! too; one without SNI (a client that connected to an IP address, which
//! RFC 6066 3 keeps out of SNI) is accepted.
//!
//! Everything here is built while the configuration is validated, so a
//! missing or unreadable file is a startup (or reload) error naming the file
//! and the key. rustls with the `ring` provider; TLS 1.2 and 1.3.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The one ALPN protocol ftpgate speaks toward clients (RFC 7301; the IANA
/// registry's `ftp`).
pub const ALPN_FTP: &[u8] = b"ftp";

/// A TLS setting that cannot be used; names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no usable PEM object.
    #[error("{key}: {path}: {message}")]
    File {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material (e.g. a key that does not match).
    #[error("{key}: {message}")]
    Rustls {
        /// The config key.
        key: &'static str,
        /// rustls's explanation.
        message: String,
    },
}

/// The crypto provider of every rustls config ftpgate builds (FTPS on
/// both legs, the HTTP user lookup): *ring*, the one the whole build uses
/// (rustls, tokio-rustls and russh are built with their `ring` feature).
/// rustls 0.23.48 marks *ring*'s `default_provider` deprecated because
/// *ring* has no post-quantum key exchange (README, "FTPS"); the warning
/// is allowed here, in one place, so that `clippy -D warnings` does not
/// break the day the lock file moves past 0.23.47.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12_AND_13: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(min_tls13: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if min_tls13 {
        &TLS13_ONLY
    } else {
        &TLS12_AND_13
    }
}

/// Reads every certificate of a PEM file.
pub fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        key,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate (BEGIN CERTIFICATE) in the file".into()));
    }
    Ok(certs)
}

fn read_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        key,
        path: path.to_owned(),
        message: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

/// Client certificates toward clients (`tls_client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// None asked for.
    Off,
    /// Asked for; a client without one goes on, one with a certificate
    /// `tls_client_ca` does not vouch for is refused.
    Optional,
    /// A client without a certificate `tls_client_ca` vouches for is
    /// refused at the handshake.
    Required,
}

impl ClientAuth {
    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Off => "off",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// What the client-facing configuration asks of clients besides TLS itself.
#[derive(Debug, Clone, Copy)]
pub struct ClientRules<'a> {
    /// Refuse TLS 1.2 (`tls_min_version = "1.3"`).
    pub min_tls13: bool,
    /// `tls_client_auth`.
    pub client_auth: ClientAuth,
    /// `tls_client_ca`: the CAs that vouch for client certificates (set
    /// whenever `client_auth` is not off).
    pub client_ca: Option<&'a Path>,
    /// `tls_server_names`: the SNI names clients may ask for (empty: any).
    pub server_names: &'a [String],
}

/// The verifier of client certificates `rules` asks for.
fn client_verifier(
    rules: &ClientRules<'_>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    let Some(path) = rules
        .client_ca
        .filter(|_| rules.client_auth != ClientAuth::Off)
    else {
        return Ok(None);
    };
    let err = |message: String| TlsError::File {
        key: "tls_client_ca",
        path: path.to_owned(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for c in read_certs("tls_client_ca", path)? {
        roots
            .add(c)
            .map_err(|e| err(format!("unusable CA certificate: {e}")))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if rules.client_auth == ClientAuth::Optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map(Some)
        .map_err(|e| err(format!("cannot verify client certificates with it: {e:?}")))
}

/// The certificate only for ClientHellos that name (SNI) one of `names`,
/// or none at all.
#[derive(Debug)]
struct NamedOnly {
    names: Vec<String>,
    inner: Arc<dyn ResolvesServerCert>,
}

impl ResolvesServerCert for NamedOnly {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let allowed = match hello.server_name() {
            None => true,
            Some(sni) => self.names.iter().any(|n| n.eq_ignore_ascii_case(sni)),
        };
        if allowed {
            self.inner.resolve(hello)
        } else {
            None
        }
    }
}

/// The client-facing TLS server configuration: the chain and key, a session
/// cache (TLS 1.2 session IDs) and a ticketer (TLS 1.2/1.3 tickets), so a
/// client can resume its control session on each data connection; client
/// certificates, ALPN `ftp` and SNI names as `rules` say.
pub fn server_config(
    cert: &Path,
    key: &Path,
    rules: &ClientRules<'_>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs("tls_cert", cert)?;
    let key = read_key("tls_key", key)?;
    let rustls = |message: String| TlsError::Rustls {
        key: "tls_key",
        message,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(rules.min_tls13))
        .map_err(|e| rustls(e.to_string()))?;
    let builder = match client_verifier(rules)? {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| rustls(format!("certificate and key do not fit together: {e}")))?;
    cfg.alpn_protocols = vec![ALPN_FTP.to_vec()];
    if !rules.server_names.is_empty() {
        cfg.cert_resolver = Arc::new(NamedOnly {
            names: rules.server_names.to_vec(),
            inner: Arc::clone(&cfg.cert_resolver),
        });
    }
    // Each session gets its own cache and ticketer (`per_client_session`);
    // these are the defaults that copy replaces.
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(32);
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| rustls(e.to_string()))?;
    // FTP data connections resume one after another: more tickets than the
    // default two.
    cfg.send_tls13_tickets = 4;
    Ok(Arc::new(cfg))
}

/// A copy of the client-facing configuration with its own session cache and
/// ticket keys: one per FTP session, so a data connection can resume only
/// a TLS session that this control connection's handshake started (what
/// `tls_require_data_resumption` then proves).
pub fn per_client_session(base: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut cfg = (**base).clone();
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(32);
    if let Ok(t) = rustls::crypto::ring::Ticketer::new() {
        cfg.ticketer = t;
    }
    Arc::new(cfg)
}

/// The data-connection variant of a session's configuration: the same
/// session cache and ticket keys (so data connections resume the control
/// session) but no new tickets. Clients do not read an upload's data
/// connection, so unread tickets there turn their close into a TCP reset.
pub fn for_data(session: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut cfg = (**session).clone();
    cfg.send_tls13_tickets = 0;
    Arc::new(cfg)
}

/// How ftpgate verifies a backend's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendVerify {
    /// Against the CAs in a PEM file.
    Ca(PathBuf),
    /// The end-entity certificate must be exactly this one (signatures are
    /// still checked); its name and dates are not.
    Pinned(PathBuf),
    /// Not at all (self-signed test servers; the operator asked for it).
    None,
}

/// Checks a backend certificate against a pinned one, or not at all
/// (`backend_tls_verify = false`). Handshake signatures are always checked.
#[derive(Debug)]
struct PinnedOrAny {
    /// `None`: any certificate.
    pinned: Option<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(p) if p.as_ref() != end_entity.as_ref() => Err(rustls::Error::General(
                "backend certificate is not the pinned one (backend_tls_pin)".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// ftpgate's own certificate toward backends that ask for one
/// (`backend_tls_client_cert`, `backend_tls_client_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendIdentity {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// The backend-facing TLS client configuration, with `identity` shown to
/// backends that ask for a client certificate. Each session gets its own
/// copy with its own session store ([`per_session`]), so its data
/// connections resume its own control session and no other.
pub fn client_config(
    verify: &BackendVerify,
    identity: Option<&BackendIdentity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let p = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&p))
        .with_protocol_versions(versions(false))
        .map_err(|e| TlsError::Rustls {
            key: "backend_tls",
            message: e.to_string(),
        })?;
    let builder = match verify {
        BackendVerify::Ca(path) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("backend_tls_ca", path)? {
                roots.add(c).map_err(|e| TlsError::File {
                    key: "backend_tls_ca",
                    path: path.clone(),
                    message: format!("unusable CA certificate: {e}"),
                })?;
            }
            builder.with_root_certificates(roots)
        }
        BackendVerify::Pinned(_) | BackendVerify::None => {
            let pinned = match verify {
                BackendVerify::Pinned(path) => Some(read_certs("backend_tls_pin", path)?.remove(0)),
                _ => None,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedOrAny {
                    pinned,
                    provider: p,
                }))
        }
    };
    let cfg = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = read_certs("backend_tls_client_cert", &id.cert)?;
            let key = read_key("backend_tls_client_key", &id.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Rustls {
                    key: "backend_tls_client_key",
                    message: format!("certificate and key do not fit together: {e}"),
                })?
        }
    };
    Ok(Arc::new(cfg))
}

/// A copy of `base` with a fresh session store: one per FTP session.
pub fn per_session(base: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut cfg = (**base).clone();
    cfg.resumption = Resumption::in_memory_sessions(8);
    Arc::new(cfg)
}

/// The name a backend's certificate is checked against: the configured
/// `backend_tls_server_name`, else the host part of the backend as written.
pub fn backend_server_name(configured: Option<&str>, backend: &str) -> Option<ServerName<'static>> {
    let host = match configured {
        Some(n) => n,
        None => match backend.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => backend,
        },
    };
    ServerName::try_from(host.to_owned()).ok()
}

/// TLS toward a backend: the session's connector (its session store
/// resumes the control connection's session on data connections), the
/// name the certificate is checked against, the handshake time limit.
#[derive(Clone)]
pub struct BackendDataTls {
    /// The session's own client configuration.
    pub connector: tokio_rustls::TlsConnector,
    /// The name the backend's certificate is checked against.
    pub name: ServerName<'static>,
    /// Handshake time limit.
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for BackendDataTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendDataTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Counts one handshake in `ftpgate_tls_handshakes_total`.
fn count(counter: &prometheus::IntCounterVec, side: &str, channel: &str, ok: bool) {
    counter
        .with_label_values(&[side, channel, if ok { "ok" } else { "failed" }])
        .inc();
}

/// The one TLS handshake as the server (toward a client), within
/// `timeout`, counted as `side="client"` on `channel` (`control`, `data`).
/// With `require_resumption`, a handshake that does not resume a session
/// is refused (and counted as failed).
pub async fn accept(
    cfg: Arc<ServerConfig>,
    tcp: tokio::net::TcpStream,
    timeout: std::time::Duration,
    counter: &prometheus::IntCounterVec,
    channel: &str,
    require_resumption: bool,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, String> {
    let done =
        tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(cfg).accept(tcp)).await;
    let r = match done {
        Ok(Ok(s))
            if require_resumption
                && s.get_ref().1.handshake_kind() != Some(rustls::HandshakeKind::Resumed) =>
        {
            Err("did not resume the control TLS session (tls_require_data_resumption)".to_owned())
        }
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(describe_client_handshake_error(&e)),
        Err(_) => Err("handshake timed out".to_owned()),
    };
    count(counter, "client", channel, r.is_ok());
    r
}

/// The end-entity certificate a client showed (mutual TLS), verified by
/// the handshake (or restored from the session it resumed).
pub fn client_certificate(conn: &rustls::ServerConnection) -> Option<CertificateDer<'static>> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

/// A failed TLS handshake toward a client, in words for the log when it is
/// one of ftpgate's own refusals (ALPN, SNI, client certificate), else as
/// tokio-rustls reports it.
pub fn describe_client_handshake_error(e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let Some(r) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return e.to_string();
    };
    let words = match r {
        rustls::Error::NoApplicationProtocol => {
            "the client offered ALPN protocols, none of them `ftp` (a browser or another              protocol's client: a cross-protocol attempt)"
        }
        rustls::Error::General(g) if g.contains("no server certificate chain resolved") => {
            "the client asked (SNI) for a host name not in tls_server_names"
        }
        rustls::Error::NoCertificatesPresented => {
            "the client showed no certificate (tls_client_auth = \"required\")"
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the client's certificate is not issued by a CA in tls_client_ca"
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the client's certificate has expired"
        }
        rustls::Error::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            "the client's certificate is not for TLS clients (extended key usage)"
        }
        _ => return r.to_string(),
    };
    format!("{words} (rustls: {r})")
}

/// The one TLS handshake as the client (toward a backend), within the
/// configured limit, counted as `side="backend"` on `channel`.
pub async fn connect(
    t: &BackendDataTls,
    tcp: tokio::net::TcpStream,
    counter: &prometheus::IntCounterVec,
    channel: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let done = tokio::time::timeout(t.timeout, t.connector.connect(t.name.clone(), tcp)).await;
    let r = match done {
        Ok(Ok(s)) => Ok(s),
        // What is wrong with the certificate, and what to do, in words.
        Ok(Err(e)) => Err(describe_backend_handshake_error(&e)),
        Err(_) => Err("TLS handshake timed out".to_owned()),
    };
    count(counter, "backend", channel, r.is_ok());
    r
}

// === operator sentences for backend certificate errors ===

/// What is wrong with a backend's certificate and what to do about it, in
/// an operator's words, for a rustls error from a handshake toward a
/// backend; `None` when the error is not about the certificate.
pub fn explain_backend_cert_error(e: &rustls::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    use rustls::CertificateError as C;
    // The backend's verdict on ftpgate's own certificate (mutual TLS).
    if let rustls::Error::AlertReceived(a) = e {
        return match a {
            A::CertificateRequired => Some(
                "the backend wants a client certificate and ftpgate showed none: set \
                 backend_tls_client_cert and backend_tls_client_key"
                    .into(),
            ),
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate => Some(
                "the backend refused ftpgate's client certificate (backend_tls_client_cert, \
                 or none where the server wants one): it must be issued by a CA the server \
                 trusts (vsftpd: ca_certs_file), be valid and be for TLS clients"
                    .into(),
            ),
            _ => None,
        };
    }
    let rustls::Error::InvalidCertificate(c) = e else {
        // Our pinned verifier's refusal (see `PinnedOrAny`).
        if let rustls::Error::General(g) = e {
            if g.contains("backend_tls_pin") {
                return Some(
                    "the backend's certificate is not the one in backend_tls_pin: the server's \
                     certificate changed, or the pin names another file"
                        .into(),
                );
            }
        }
        return None;
    };
    let text = match c {
        // rustls reports webpki's CaUsedAsEndEntity as an opaque `Other`
        // error: its name is all there is to match on.
        C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            "the backend's certificate is a CA certificate (basicConstraints CA:TRUE, which \
             `openssl req -x509` makes by default) used as its own server certificate, which \
             no CA file can vouch for: set backend_tls_pin to that certificate file instead \
             of backend_tls_ca, or give the server a certificate issued by a CA"
                .to_owned()
        }
        C::UnknownIssuer => "the backend's certificate is not issued by a CA in backend_tls_ca: \
             add its CA to that file, or, for a self-signed certificate, set backend_tls_pin to it"
            .to_owned(),
        C::NotValidForName => "the backend's certificate does not carry the name ftpgate checks \
             (the backend's host, or backend_tls_server_name): set backend_tls_server_name to a \
             name it carries, or use backend_tls_pin"
            .to_owned(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the backend's certificate does not carry the name ftpgate checks ({}; it carries {}): \
             set backend_tls_server_name to a name it carries, or use backend_tls_pin",
            expected.to_str(),
            if presented.is_empty() {
                "none".to_owned()
            } else {
                presented.join(", ")
            }
        ),
        C::Expired | C::ExpiredContext { .. } => "the backend's certificate has expired: renew \
             it on the server (backend_tls_pin accepts a pinned certificate whatever its dates)"
            .to_owned(),
        C::NotValidYet | C::NotValidYetContext { .. } => "the backend's certificate is not valid \
             yet: check the clocks of ftpgate's machine and the server's"
            .to_owned(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "the backend's certificate is not \
             for TLS servers (its extended key usage lacks serverAuth): issue one that is, or use \
             backend_tls_pin"
            .to_owned(),
        C::Revoked => "the backend's certificate is revoked: give the server a new one".to_owned(),
        C::BadSignature => "the backend's certificate has a bad signature: it was not issued by \
             the CA it names, or it is damaged"
            .to_owned(),
        C::BadEncoding => "the backend's certificate cannot be parsed".to_owned(),
        _ => return None,
    };
    Some(text)
}

/// A failed TLS handshake toward a backend (or a TLS alert read after it:
/// in TLS 1.3 a refused client certificate arrives then), as tokio-rustls
/// reports it, in words for the log: [`explain_backend_cert_error`]'s sentence and rustls's
/// own text, or the error as it is when it is not about the certificate.
pub fn describe_backend_handshake_error(e: &std::io::Error) -> String {
    let explained = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| explain_backend_cert_error(r).map(|s| (s, r)));
    match explained {
        Some((sentence, r)) => format!("{sentence} (rustls: {r})"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_backends() {
        let n =
            |c: Option<&str>, b: &str| backend_server_name(c, b).map(|n| n.to_str().into_owned());
        assert_eq!(n(None, "127.0.0.1:21").as_deref(), Some("127.0.0.1"));
        assert_eq!(n(None, "[::1]:21").as_deref(), Some("::1"));
        assert_eq!(
            n(None, "ftp.example.com:990").as_deref(),
            Some("ftp.example.com")
        );
        assert_eq!(
            n(Some("files.example"), "10.0.0.5:21").as_deref(),
            Some("files.example")
        );
    }

    #[test]
    fn missing_files_name_the_key_and_path() {
        let rules = ClientRules {
            min_tls13: false,
            client_auth: ClientAuth::Off,
            client_ca: None,
            server_names: &[],
        };
        let e = server_config(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
            &rules,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("tls_cert: /nonexistent/c.pem"), "{e}");
        let e = client_config(&BackendVerify::Ca("/nonexistent/ca.pem".into()), None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("backend_tls_ca: /nonexistent/ca.pem"), "{e}");
        let id = BackendIdentity {
            cert: "/nonexistent/client.pem".into(),
            key: "/nonexistent/client.key".into(),
        };
        let e = client_config(&BackendVerify::None, Some(&id))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("backend_tls_client_cert: /nonexistent/client.pem"),
            "{e}"
        );
    }

    /// A server certificate made the way vsftpd's guides make one (`openssl
    /// req -x509`: self-signed, basicConstraints CA:TRUE), given as the CA
    /// file: the verifier's error gets the sentence that names the cure.
    #[test]
    fn ca_used_as_server_certificate_says_use_the_pin() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let verify = |name: &str| {
            verifier
                .verify_server_cert(
                    cert.der(),
                    &[],
                    &ServerName::try_from(name.to_owned()).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_err()
        };
        let e = verify("localhost");
        assert!(format!("{e:?}").contains("CaUsedAsEndEntity"), "{e:?}");
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let text = describe_backend_handshake_error(&io);
        assert!(
            text.starts_with("the backend's certificate is a CA certificate")
                && text.contains("backend_tls_pin")
                && text.contains("(rustls: invalid peer certificate: "),
            "{text}"
        );
    }

    #[test]
    fn certificate_errors_in_words() {
        use rustls::CertificateError as C;
        let say = |c: C| explain_backend_cert_error(&rustls::Error::InvalidCertificate(c)).unwrap();
        assert!(say(C::UnknownIssuer).contains("not issued by a CA in backend_tls_ca"));
        assert!(say(C::NotValidForName).contains("backend_tls_server_name"));
        assert!(say(C::Expired).contains("has expired"));
        assert!(say(C::NotValidYet).contains("clocks"));
        let pin = explain_backend_cert_error(&rustls::Error::General(
            "backend certificate is not the pinned one (backend_tls_pin)".into(),
        ))
        .unwrap();
        assert!(pin.contains("not the one in backend_tls_pin"), "{pin}");
        // Not about the certificate: nothing to add, the error as it is.
        assert_eq!(
            explain_backend_cert_error(&rustls::Error::HandshakeNotComplete),
            None
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(describe_backend_handshake_error(&io), "reset by peer");
    }
}
