//! Session errors and the single mapping from an error to what the client sees.
//!
//! Every failure a session meets is an [`Error`] with the side that caused it.
//! [`reply_for`] is the only place that turns one into a reply and a decision
//! to keep or close the session; reply texts are fixed wording, and causes go
//! to the log only. The table is docs/errors.md.

use crate::proto::reply::{Reply, ReplyCode};
use crate::proto::rewrite::ActiveRefusal;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (or the operator's policy applied to it).
    Client,
    /// The backend server.
    Backend,
    /// ftpgate itself.
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A command line longer than `max_line_length`.
    LineTooLong,
    /// A PORT, EPRT or EPSV argument that does not parse.
    MalformedArgument,
    /// PORT/EPRT naming another host or a privileged port.
    ActiveRefused(ActiveRefusal),
    /// EPRT with a network protocol other than 1 or 2.
    UnknownNetworkProtocol,
    /// PORT/EPRT while `active_mode = false`.
    ActiveDisabled,
    /// PASV, PORT or EPRT after EPSV ALL (RFC 2428 section 4).
    EpsvAllInEffect,
    /// AUTH while TLS is off on this listener (or no certificate is set).
    TlsUnsupported,
    /// AUTH with a mechanism other than TLS/SSL.
    AuthMechanism,
    /// AUTH on a connection already inside TLS.
    AlreadyTls,
    /// USER/PASS before AUTH TLS where TLS is required.
    TlsRequired,
    /// A transfer without PROT P where TLS is required.
    ProtectionRequired,
    /// PBSZ or PROT before AUTH TLS.
    PbszFirst,
    /// PROT S or E.
    ProtLevel,
    /// CCC: the control connection stays protected.
    CccRefused,
    /// PROT C after PROT P where TLS is required.
    ClearDataRefused,
    /// REIN inside TLS: it would clear the TLS session (RFC 4217 section 13).
    ReinInsideTls,
    /// USER is not a name of the client's certificate (`tls_client_cert_user`).
    CertUserMismatch,
    /// The client's control-connection TLS handshake failed.
    TlsHandshake(String),
    /// TLS to the backend failed (refused AUTH TLS, certificate, handshake).
    BackendTls(String),
    /// An SFTP backend's SSH host key is not one `sftp_known_hosts`
    /// trusts (unknown, changed or revoked).
    BackendHostKey(String),
    /// LPSV/LPRT and other data commands ftpgate does not implement.
    NotImplemented,
    /// PASV when the advertised address for this client is not IPv4.
    NoIpv4ForPasv,
    /// The passive range has no free port for this client.
    PortRangeExhausted,
    /// The backend's reply to ftpgate's PASV/EPSV/PORT/EPRT was refused or malformed.
    BackendDataSetup(String),
    /// The backend's 227 named a data address that is neither its own nor
    /// in `backend_data_networks` (with `trust_backend_pasv_address`).
    BackendDataAddress(String),
    /// A backend reply line over the line cap (or one that never ends), or
    /// a multi-line reply over the byte cap.
    ReplyTooLong,
    /// A data connection could not be made (to the client or the backend).
    DataConnectFailed(String),
    /// A transfer's data did not reach its peer whole (a reset, a stall,
    /// an abort, the backend or the session ending first).
    TransferCut,
    /// A backend reply that cannot be passed on (a 227/229 that did not
    /// answer ftpgate's own PASV/EPSV).
    UnexpectedBackendReply,
    /// No backend accepted the control connection.
    BackendUnreachable,
    /// The backend closed the control connection.
    BackendClosed,
    /// The backend did not answer ftpgate's own command in time.
    BackendTimeout,
    /// No login within `login_timeout`.
    LoginTimeout,
    /// No command within `idle_timeout`.
    IdleTimeout,
    /// ftpgate is shutting down.
    Shutdown,
    /// Every backend is down (health checks).
    NoBackendUp,
    /// The backend sent no greeting within `greeting_timeout`.
    GreetingTimeout,
    /// A connection limit was hit; the config key names it.
    LimitReached(&'static str),
    /// `max_login_failures` failed logins in this session.
    TooManyLoginFailures,
    /// A gateway destination `gateway_allow`/`gateway_deny` refuses.
    DestinationRefused,
    /// On a gateway listener, USER without `@host`, or a malformed one.
    GatewayLogin,
    /// A `USER name@host` destination that does not resolve in time.
    DestinationUnresolvable,
    /// Per-user routing: no pool takes this user.
    UnknownUser,
    /// Per-user routing: the user lookup service gave no usable answer
    /// (a status other than 200 or 404, a timeout, a body that does not
    /// parse, a pool or backend ftpgate does not serve).
    UserLookupFailed,
    /// A broken invariant.
    Bug(String),
}

/// A session error: what happened and who caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Who caused it.
    pub side: Side,
}

impl Error {
    /// An error caused by the client.
    pub fn client(kind: ErrorKind) -> Self {
        Error {
            kind,
            side: Side::Client,
        }
    }
    /// An error caused by the backend.
    pub fn backend(kind: ErrorKind) -> Self {
        Error {
            kind,
            side: Side::Backend,
        }
    }
    /// An error inside ftpgate.
    pub fn internal(kind: ErrorKind) -> Self {
        Error {
            kind,
            side: Side::Internal,
        }
    }
}

/// How a session (or a plain TCP listener's connection) ended: the one type
/// for the session log line and the `outcome` label of
/// `ftpgate_sessions_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client said QUIT.
    Quit,
    /// The client closed its connection (plain TCP: the client's side
    /// ended first).
    ClientClosed,
    /// A read from or write to the client failed.
    ClientIo(String),
    /// The backend closed: after its own 421 (FTP), or its side ended
    /// first (plain TCP).
    BackendClosed,
    /// A read from or write to the backend failed (plain TCP).
    BackendIo(String),
    /// An error, answered with its reply (timeouts and shutdown included).
    Error(Error),
}

impl End {
    /// The `outcome` label of `ftpgate_sessions_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            End::Quit => "quit",
            End::ClientClosed | End::ClientIo(_) => "client_closed",
            End::BackendClosed => "backend_closed",
            End::BackendIo(_) => "backend_error",
            End::Error(e) => match e.kind {
                ErrorKind::Shutdown => "shutdown",
                ErrorKind::LoginTimeout | ErrorKind::IdleTimeout | ErrorKind::GreetingTimeout => {
                    "timeout"
                }
                ErrorKind::TooManyLoginFailures => "login_failures",
                ErrorKind::BackendClosed | ErrorKind::BackendTimeout | ErrorKind::ReplyTooLong => {
                    "backend_error"
                }
                _ => "error",
            },
        }
    }
}

impl std::fmt::Display for End {
    /// Lower-case words for the log line: `IdleTimeout` reads `idle
    /// timeout`, and a detail keeps its text (`backend tls: AUTH TLS refused`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Quit => f.write_str("quit"),
            End::ClientClosed => f.write_str("client closed"),
            End::ClientIo(e) => write!(f, "client i/o error: {e}"),
            End::BackendClosed => f.write_str("backend closed"),
            End::BackendIo(e) => write!(f, "backend i/o error: {e}"),
            End::Error(e) => f.write_str(&describe(&e.kind)),
        }
    }
}

/// `kind` in lower-case words.
fn describe(kind: &ErrorKind) -> String {
    let debug = format!("{kind:?}");
    let name_end = debug
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(debug.len());
    let (name, rest) = debug.split_at(name_end);
    let mut words = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    match rest.strip_prefix("(\"").and_then(|r| r.strip_suffix("\")")) {
        Some(detail) => format!("{words}: {detail}"),
        None if rest.is_empty() => words,
        None => format!("{words} {rest}"),
    }
}

/// What the session does after replying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving the client.
    Continue,
    /// Close the session.
    Close,
}

/// The reply for an error and whether the session goes on.
pub fn reply_for(e: &Error) -> (Reply, After) {
    use After::*;
    use ErrorKind::*;
    use ReplyCode::*;
    let (code, text, after) = match &e.kind {
        LineTooLong => (SyntaxError, "Command line too long.", Continue),
        MalformedArgument => (
            SyntaxErrorInArguments,
            "Syntax error in parameters or arguments.",
            Continue,
        ),
        ActiveRefused(ActiveRefusal::PrivilegedPort) => (
            NotImplementedForParameter,
            "Refused: data port below 1024.",
            Continue,
        ),
        ActiveRefused(ActiveRefusal::ForeignHost) => (
            NotImplementedForParameter,
            "Refused: data address must be the client's own.",
            Continue,
        ),
        UnknownNetworkProtocol => (
            UnsupportedNetworkProtocol,
            "Network protocol not supported, use (1,2)",
            Continue,
        ),
        ActiveDisabled => (
            ReplyCode::NotImplemented,
            "Active mode is disabled; use PASV or EPSV.",
            Continue,
        ),
        EpsvAllInEffect => (
            BadSequence,
            "EPSV ALL in effect; only EPSV is allowed.",
            Continue,
        ),
        TlsUnsupported => (
            NotImplementedForParameter,
            "AUTH TLS is not available here.",
            Continue,
        ),
        AuthMechanism => (
            NotImplementedForParameter,
            "AUTH mechanism not supported; use AUTH TLS.",
            Continue,
        ),
        AlreadyTls => (BadSequence, "Already using TLS.", Continue),
        TlsRequired => (
            NotLoggedIn,
            "TLS required on this server: send AUTH TLS before USER and PASS.",
            Continue,
        ),
        ErrorKind::ProtectionRequired => (
            ReplyCode::ProtectionRequired,
            "Data protection required: send PBSZ 0 and PROT P first.",
            Continue,
        ),
        PbszFirst => (
            BadSequence,
            "Send AUTH TLS first, then PBSZ 0 and PROT.",
            Continue,
        ),
        ProtLevel => (
            ProtLevelNotSupported,
            "PROT level not supported; use C or P.",
            Continue,
        ),
        CccRefused => (
            PolicyDenied,
            "CCC refused: the control connection stays protected.",
            Continue,
        ),
        ClearDataRefused => (
            RequestDenied,
            "PROT C refused: data protection is required here.",
            Continue,
        ),
        ReinInsideTls => (
            ReplyCode::NotImplemented,
            "REIN not available inside TLS; open a new session.",
            Continue,
        ),
        CertUserMismatch => (
            NotLoggedIn,
            "User does not match the client certificate.",
            Continue,
        ),
        TlsHandshake(_) => (
            ServiceNotAvailable,
            "TLS handshake failed; closing control connection.",
            Close,
        ),
        BackendTls(_) => (
            ServiceNotAvailable,
            "Service not available: TLS to the server failed.",
            Close,
        ),
        BackendHostKey(_) => (
            ServiceNotAvailable,
            "Service not available: the server's host key is not trusted.",
            Close,
        ),
        ErrorKind::NotImplemented => (
            ReplyCode::NotImplemented,
            "Command not implemented.",
            Continue,
        ),
        NoIpv4ForPasv => (
            CantOpenDataConnection,
            "Can't use PASV here: no IPv4 address to offer; use EPSV.",
            Continue,
        ),
        PortRangeExhausted => (
            CantOpenDataConnection,
            "Can't open data connection: no free passive port.",
            Continue,
        ),
        BackendDataSetup(_) => (
            CantOpenDataConnection,
            "Can't open data connection: server refused.",
            Continue,
        ),
        BackendDataAddress(_) => (
            CantOpenDataConnection,
            "Can't open data connection: server named an address not allowed.",
            Continue,
        ),
        DataConnectFailed(_) => (
            CantOpenDataConnection,
            "Can't open data connection.",
            Continue,
        ),
        ReplyTooLong => (
            ServiceNotAvailable,
            "Service not available: server reply too long.",
            Close,
        ),
        TransferCut => (
            TransferAborted,
            "Connection closed; transfer aborted.",
            Continue,
        ),
        UnexpectedBackendReply => (
            LocalError,
            "Requested action aborted: unexpected reply from the server.",
            Continue,
        ),
        BackendUnreachable => (
            ServiceNotAvailable,
            "Service not available: server unreachable.",
            Close,
        ),
        BackendClosed => (
            ServiceNotAvailable,
            "Service not available: server closed the connection.",
            Close,
        ),
        BackendTimeout => (
            ServiceNotAvailable,
            "Service not available: server did not answer.",
            Close,
        ),
        LoginTimeout => (
            ServiceNotAvailable,
            "Login timeout; closing control connection.",
            Close,
        ),
        IdleTimeout => (
            ServiceNotAvailable,
            "Idle timeout; closing control connection.",
            Close,
        ),
        Shutdown => (
            ServiceNotAvailable,
            "Service closing control connection.",
            Close,
        ),
        NoBackendUp => (
            ServiceNotAvailable,
            "Service not available: no server is up, try again later.",
            Close,
        ),
        GreetingTimeout => (
            ServiceNotAvailable,
            "Service not available: server did not greet.",
            Close,
        ),
        LimitReached("max_sessions") => (
            ServiceNotAvailable,
            "Too many users connected, try again later.",
            Close,
        ),
        LimitReached("max_sessions_per_client") => (
            ServiceNotAvailable,
            "Too many connections from your address, try again later.",
            Close,
        ),
        LimitReached(_) => (
            ServiceNotAvailable,
            "Connecting too fast, try again later.",
            Close,
        ),
        TooManyLoginFailures => (
            ServiceNotAvailable,
            "Too many failed logins; closing control connection.",
            Close,
        ),
        DestinationRefused => (
            NotLoggedIn,
            "Destination not allowed by this gateway.",
            Continue,
        ),
        GatewayLogin => (
            NotLoggedIn,
            "Log in as user@host or user@host:port.",
            Continue,
        ),
        DestinationUnresolvable => (
            NotLoggedIn,
            "Cannot resolve the destination host.",
            Continue,
        ),
        UnknownUser => (NotLoggedIn, "User not known here.", Continue),
        UserLookupFailed => (
            ServiceNotAvailable,
            "Service not available: user lookup failed, try again later.",
            Close,
        ),
        Bug(_) => (
            ServiceNotAvailable,
            "Internal error; closing control connection.",
            Close,
        ),
    };
    (Reply::new(code, text), after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_read_in_lower_case_words() {
        let e = |k| End::Error(Error::internal(k)).to_string();
        assert_eq!(e(ErrorKind::Shutdown), "shutdown");
        assert_eq!(e(ErrorKind::IdleTimeout), "idle timeout");
        assert_eq!(
            e(ErrorKind::BackendTls("AUTH TLS refused".into())),
            "backend tls: AUTH TLS refused"
        );
        assert_eq!(
            e(ErrorKind::LimitReached("max_sessions")),
            "limit reached: max_sessions"
        );
        assert_eq!(End::Quit.to_string(), "quit");
        assert_eq!(End::BackendClosed.outcome(), "backend_closed");
        assert_eq!(
            End::Error(Error::backend(ErrorKind::BackendClosed)).outcome(),
            "backend_error"
        );
    }

    #[test]
    fn reply_table() {
        let table: Vec<(Error, u16, After)> = vec![
            (Error::client(ErrorKind::LineTooLong), 500, After::Continue),
            (
                Error::client(ErrorKind::MalformedArgument),
                501,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::ActiveRefused(ActiveRefusal::ForeignHost)),
                504,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::ActiveRefused(ActiveRefusal::PrivilegedPort)),
                504,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::UnknownNetworkProtocol),
                522,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::ActiveDisabled),
                502,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::TlsUnsupported),
                504,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::EpsvAllInEffect),
                503,
                After::Continue,
            ),
            (
                Error::internal(ErrorKind::PortRangeExhausted),
                425,
                After::Continue,
            ),
            (
                Error::backend(ErrorKind::BackendDataSetup("x".into())),
                425,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::DataConnectFailed("x".into())),
                425,
                After::Continue,
            ),
            (
                Error::backend(ErrorKind::BackendDataAddress("x".into())),
                425,
                After::Continue,
            ),
            (Error::backend(ErrorKind::ReplyTooLong), 421, After::Close),
            (Error::client(ErrorKind::TransferCut), 426, After::Continue),
            (
                Error::backend(ErrorKind::UnexpectedBackendReply),
                451,
                After::Continue,
            ),
            (
                Error::backend(ErrorKind::BackendUnreachable),
                421,
                After::Close,
            ),
            (Error::backend(ErrorKind::BackendClosed), 421, After::Close),
            (
                Error::backend(ErrorKind::BackendHostKey("changed".into())),
                421,
                After::Close,
            ),
            (Error::internal(ErrorKind::IdleTimeout), 421, After::Close),
            (Error::internal(ErrorKind::LoginTimeout), 421, After::Close),
            (Error::internal(ErrorKind::Shutdown), 421, After::Close),
            (Error::backend(ErrorKind::NoBackendUp), 421, After::Close),
            (
                Error::backend(ErrorKind::GreetingTimeout),
                421,
                After::Close,
            ),
            (
                Error::client(ErrorKind::LimitReached("max_sessions")),
                421,
                After::Close,
            ),
            (
                Error::client(ErrorKind::LimitReached("max_connection_rate_per_client")),
                421,
                After::Close,
            ),
            (
                Error::client(ErrorKind::TooManyLoginFailures),
                421,
                After::Close,
            ),
            (
                Error::client(ErrorKind::DestinationRefused),
                530,
                After::Continue,
            ),
            (Error::client(ErrorKind::GatewayLogin), 530, After::Continue),
            (Error::client(ErrorKind::UnknownUser), 530, After::Continue),
            (Error::client(ErrorKind::CccRefused), 533, After::Continue),
            (
                Error::client(ErrorKind::ClearDataRefused),
                534,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::ReinInsideTls),
                502,
                After::Continue,
            ),
            (
                Error::client(ErrorKind::CertUserMismatch),
                530,
                After::Continue,
            ),
            (
                Error::backend(ErrorKind::UserLookupFailed),
                421,
                After::Close,
            ),
            (
                Error::client(ErrorKind::DestinationUnresolvable),
                530,
                After::Continue,
            ),
            (
                Error::internal(ErrorKind::Bug("x".into())),
                421,
                After::Close,
            ),
        ];
        for (e, code, after) in table {
            let (r, a) = reply_for(&e);
            assert_eq!((r.code, a), (code, after), "{e:?}");
            assert!(
                r.to_bytes().ends_with(b".\r\n") || r.to_bytes().ends_with(b")\r\n"),
                "fixed wording ends in a period: {e:?}"
            );
        }
    }
}
