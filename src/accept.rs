//! The one accept loop and the one admission check, for every listener
//! that serves clients: FTP control listeners (plain, implicit TLS, PROXY
//! protocol, gateway) and plain TCP listeners.
//!
//! [`accept_loop`] accepts until told to stop and backs off when accepting
//! fails (EMFILE and friends) instead of spinning; [`admit`] applies the
//! connection limits of the live configuration to the real client address
//! and counts and logs a refusal the same way for every kind of listener.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Config;
use crate::limits::{Admitted, LimitHit, Limits};
use crate::live::{Live, Shared};
use crate::net::canonical_ip;
use crate::proto::proxy::{self, Header, Parsed};

/// Accepts on `l` until `stop`, handing each connection to `handle`.
/// `what` names the listener in the log.
pub async fn accept_loop<F>(l: TcpListener, what: &str, stop: CancellationToken, mut handle: F)
where
    F: FnMut(TcpStream, SocketAddr),
{
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => handle(stream, peer),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connection limits of `live` for `client`; a refusal is counted
/// (`ftpgate_limit_hits_total`, `ftpgate_sessions_total{outcome="refused_limit"}`
/// on `listener`) and logged.
pub fn admit(
    shared: &Shared,
    live: &Live,
    client: SocketAddr,
    listener: &str,
    id: u64,
) -> Result<Admitted, LimitHit> {
    let limits = Limits {
        max_sessions: live.config.max_sessions,
        max_sessions_per_client: live.config.max_sessions_per_client,
        max_rate_per_client: live.config.max_connection_rate_per_client,
    };
    let ip: IpAddr = canonical_ip(client.ip());
    shared
        .admission
        .admit(ip, limits, std::time::Instant::now())
        .inspect_err(|hit| {
            shared.metrics.limit_hit(hit.key());
            shared
                .metrics
                .sessions_total
                .with_label_values(&[listener, "-", "refused_limit"])
                .inc();
            warn!(session = id, client = %client, listener, limit = hit.key(), "connection refused: limit reached");
        })
}

/// Whether `ip` may send PROXY protocol headers.
pub fn trusted_proxy(config: &Config, ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    config.proxy_protocol_from.iter().any(|n| n.contains(&ip))
}

/// Reads a PROXY protocol header from the start of `s`, consuming exactly
/// its bytes (what follows belongs to the connection). Peeks until the
/// header is complete, within `timeout`.
pub async fn read_proxy_header(s: &mut TcpStream, timeout: Duration) -> Result<Header, String> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; proxy::MAX_HEADER_LEN];
    loop {
        let n = tokio::time::timeout_at(deadline, s.peek(&mut buf))
            .await
            .map_err(|_| "no PROXY protocol header in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a PROXY protocol header".into());
        }
        match proxy::parse(&buf[..n]) {
            Ok(Parsed::Complete { header, consumed }) => {
                s.read_exact(&mut buf[..consumed])
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(header);
            }
            Ok(Parsed::Incomplete) => {
                // peek returns what is queued at once; wait for more.
                if tokio::time::Instant::now() >= deadline {
                    return Err("no complete PROXY protocol header in time".into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
