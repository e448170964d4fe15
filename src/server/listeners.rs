//! Binding every listener at start: control listeners of each kind, the
//! whole passive range, plain TCP listeners, the admin listener and the
//! transfer log, so a taken port is a startup error naming its setting
//! rather than a surprise under load.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tracing::info;

use crate::config::Config;
use crate::xferlog::XferLog;

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A control listener.
    #[error("cannot listen on {addr} (setting `listen`): {source}")]
    Control {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A port of the passive range.
    #[error("passive port {port} on {ip} is not available (setting `passive_ports`): {source}")]
    Passive {
        /// The address bound.
        ip: IpAddr,
        /// The port that is taken.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// An implicit-TLS listener.
    #[error("cannot listen on {addr} (setting `implicit_tls_listen`): {source}")]
    Implicit {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PROXY protocol listener.
    #[error("cannot listen on {addr} (setting `proxy_protocol_listen`): {source}")]
    Proxied {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A gateway listener.
    #[error("cannot listen on {addr} (setting `gateway_listen`): {source}")]
    Gateway {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A plain TCP listener.
    #[error("cannot listen on {addr} (setting `listen` of [tcp.{name}]): {source}")]
    Tcp {
        /// Its `[tcp.NAME]`.
        name: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin listener.
    #[error("cannot listen on {addr} (setting `admin_listen`): {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The transfer log cannot be opened.
    #[error("cannot open the transfer log {path} (setting `xferlog`): {source}")]
    Xferlog {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Every listener ftpgate needs, bound.
#[derive(Debug)]
pub struct Listeners {
    /// Control listeners, one per `listen` address.
    pub control: Vec<TcpListener>,
    /// Implicit FTPS listeners, one per `implicit_tls_listen` address.
    pub implicit: Vec<TcpListener>,
    /// PROXY protocol listeners, one per `proxy_protocol_listen` address.
    pub proxied: Vec<TcpListener>,
    /// Gateway listeners, one per `gateway_listen` address.
    pub gateway: Vec<TcpListener>,
    /// One listener per passive port (none when no FTP is served).
    pub passive: Vec<(u16, TcpListener)>,
    /// Plain TCP listeners, one per address of each `[tcp.NAME]`, with its name.
    pub tcp: Vec<(String, TcpListener)>,
    /// The admin HTTP listener, if configured.
    pub admin: Option<TcpListener>,
    /// The transfer log, opened (before any privileges are dropped).
    pub xferlog: Option<XferLog>,
}

pub(crate) fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind_with(addr, false, None)
}

/// Binds a control listener with the control connections' options
/// (`keepalive`, and SO_OOBINLINE unless `oob_inline` is false) already
/// set when it starts listening: the kernel completes connections before
/// the accept task runs, and each takes the listener's options as they
/// were at that moment. Set later, the first clients of a fresh ftpgate
/// had none (no TCP_NODELAY, no keepalive, the ABOR synch out of band),
/// while their sessions took the listener as tuned.
fn bind_control(
    addr: SocketAddr,
    tproxy: bool,
    keepalive: Duration,
    oob_inline: bool,
) -> std::io::Result<TcpListener> {
    bind_with(addr, tproxy, Some((keepalive, oob_inline)))
}

/// Binds `addr`; `tproxy` also lets it take TPROXY-diverted connections
/// where ftpgate may (IPv4, CAP_NET_ADMIN); `control`: see [`bind_control`].
fn bind_with(
    addr: SocketAddr,
    tproxy: bool,
    control: Option<(Duration, bool)>,
) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if tproxy && addr.is_ipv4() {
        if let Err(e) = crate::session::net::allow_tproxy(&sock) {
            info!(listen = %addr, error = %e, "gateway listener: TPROXY unavailable (needs CAP_NET_ADMIN); REDIRECT works");
        }
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // [::] serves IPv4 clients too, whatever the sysctl default says.
        sock.set_only_v6(false)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    if let Some((keepalive, oob_inline)) = control {
        // A failure shows again when the accept task tunes the listener
        // (then each session sets its own options).
        let _ = crate::session::net::tune_listener(&sock, keepalive, oob_inline);
    }
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

impl Listeners {
    /// Binds the control listeners, the whole passive range (when FTP is
    /// served) and the plain TCP listeners. Must run inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Listeners, BindError> {
        let keepalive = config.tcp_keepalive;
        let control = config
            .listen
            .iter()
            .map(|&addr| {
                bind_control(addr, false, keepalive, true)
                    .map_err(|source| BindError::Control { addr, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ip = config.passive_bind_address;
        let (first, last) = config.passive_ports;
        let passive = (first..=last)
            // Only plain TCP listeners: nothing would use the range.
            .filter(|_| config.serves_ftp())
            .map(|port| {
                bind_one(SocketAddr::new(ip, port))
                    .map(|l| (port, l))
                    .map_err(|source| BindError::Passive { ip, port, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let implicit = config
            .implicit_tls_listen
            .iter()
            .map(|&addr| {
                bind_control(addr, false, keepalive, false)
                    .map_err(|source| BindError::Implicit { addr, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let proxied = config
            .proxy_protocol_listen
            .iter()
            .map(|&addr| {
                bind_control(addr, false, keepalive, true)
                    .map_err(|source| BindError::Proxied { addr, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let gateway = config
            .gateway_listen
            .iter()
            .map(|&addr| {
                bind_control(addr, true, keepalive, true)
                    .map_err(|source| BindError::Gateway { addr, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tcp = config
            .tcp
            .iter()
            .flat_map(|t| t.listen.iter().map(move |&addr| (t, addr)))
            .map(|(t, addr)| {
                bind_one(addr)
                    .map(|l| (t.name.clone(), l))
                    .map_err(|source| BindError::Tcp {
                        name: t.name.clone(),
                        addr,
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let admin = config
            .admin_listen
            .map(|addr| bind_one(addr).map_err(|source| BindError::Admin { addr, source }))
            .transpose()?;
        let xferlog = match &config.xferlog {
            Some(path) => Some(XferLog::open(path).map_err(|source| BindError::Xferlog {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Listeners {
            control,
            implicit,
            proxied,
            gateway,
            passive,
            tcp,
            admin,
            xferlog,
        })
    }

    /// The bound control addresses (useful when binding port 0).
    pub fn control_addrs(&self) -> Vec<SocketAddr> {
        self.control
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound gateway addresses.
    pub fn gateway_addrs(&self) -> Vec<SocketAddr> {
        self.gateway
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound plain TCP addresses with their `[tcp.NAME]`.
    pub fn tcp_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.tcp
            .iter()
            .filter_map(|(name, l)| Some((name.clone(), l.local_addr().ok()?)))
            .collect()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Every bound listener for the startup line, each but the plain FTP ones
/// with its kind: `127.0.0.1:990 (implicit TLS)`, `0.0.0.0:2222 (tcp.sftp)`.
pub(super) fn listening(
    control: &[TcpListener],
    implicit: &[TcpListener],
    proxied: &[TcpListener],
    gateway: &[TcpListener],
    tcp: &[(String, TcpListener)],
    admin: Option<SocketAddr>,
) -> Vec<String> {
    let kind = |ls: &[TcpListener], k: &str| -> Vec<String> {
        ls.iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| format!("{a}{k}"))
            .collect()
    };
    let mut all = kind(control, "");
    all.extend(kind(implicit, " (implicit TLS)"));
    all.extend(kind(proxied, " (PROXY protocol)"));
    all.extend(kind(gateway, " (gateway)"));
    all.extend(
        tcp.iter()
            .filter_map(|(name, l)| Some(format!("{} (tcp.{name})", l.local_addr().ok()?))),
    );
    all.extend(admin.map(|a| format!("{a} (admin)")));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;

    /// A client whose handshake completed before anything was accepted
    /// (the first clients of a fresh ftpgate) still gets the control
    /// options: the listener had them before it listened.
    #[tokio::test]
    async fn control_listeners_give_their_options_to_connections_made_before_any_accept() {
        for oob_inline in [true, false] {
            let keepalive = Duration::from_secs(45);
            let l =
                bind_control("127.0.0.1:0".parse().unwrap(), false, keepalive, oob_inline).unwrap();
            // connect() returns once the kernel has completed the handshake.
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (accepted, _) = l.accept().await.unwrap();
            let s = SockRef::from(&accepted);
            assert!(s.nodelay().unwrap());
            assert!(s.keepalive().unwrap());
            assert_eq!(s.keepalive_time().unwrap(), keepalive);
            assert_eq!(s.out_of_band_inline().unwrap(), oob_inline);
        }
    }

    /// Other listeners (passive ports, `[tcp.*]`, admin) are left as they were.
    #[tokio::test]
    async fn other_listeners_carry_no_control_options() {
        let l = bind_one("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        assert!(!SockRef::from(&accepted).keepalive().unwrap());
    }
}
