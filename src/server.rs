//! Listeners, the accept loops, and the cancellation tree.
//!
//! [`Listeners::bind`] binds every control listener and the whole passive
//! range at start, so a taken port is a startup error naming it rather than a
//! surprise under load. [`run`] takes bound listeners and a cancellation
//! token; sessions get child tokens and register with a task tracker, so
//! shutdown cancels top-down and waits bottom-up.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::advertise::PublicAddresses;
use crate::backend::Backends;
use crate::config::Config;
use crate::data::port_pool::PortPool;
use crate::data::PassivePool;
use crate::net::canonical_ip;
use crate::session::{run_session, Shared};

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
}

/// Every listener ftpgate needs, bound.
#[derive(Debug)]
pub struct Listeners {
    /// Control listeners, one per `listen` address.
    pub control: Vec<TcpListener>,
    /// One listener per passive port.
    pub passive: Vec<(u16, TcpListener)>,
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // [::] serves IPv4 clients too, whatever the sysctl default says.
        sock.set_only_v6(false)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

impl Listeners {
    /// Binds the control listeners and the whole passive range. Must run
    /// inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Listeners, BindError> {
        let control = config
            .listen
            .iter()
            .map(|&addr| bind_one(addr).map_err(|source| BindError::Control { addr, source }))
            .collect::<Result<Vec<_>, _>>()?;
        let ip = config.passive_bind_address;
        let (first, last) = config.passive_ports;
        let passive = (first..=last)
            .map(|port| {
                bind_one(SocketAddr::new(ip, port))
                    .map(|l| (port, l))
                    .map_err(|source| BindError::Passive { ip, port, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listeners { control, passive })
    }

    /// The bound control addresses (useful when binding port 0).
    pub fn control_addrs(&self) -> Vec<SocketAddr> {
        self.control
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Serves until `shutdown` is cancelled, then closes every session (421) and
/// waits for their tasks.
pub async fn run(config: Arc<Config>, listeners: Listeners, shutdown: CancellationToken) {
    let public = PublicAddresses::new(&config).await;
    let (first, last) = config.passive_ports;
    let pool: Arc<PassivePool> = PortPool::new(first, last, config.allow_foreign_data_address);
    let shared = Arc::new(Shared {
        config: Arc::clone(&config),
        pool: Arc::clone(&pool),
        backends: Arc::new(Backends::new(config.backends.clone())),
        public: Arc::clone(&public),
    });
    let tracker = TaskTracker::new();
    tracker
        .spawn(Arc::clone(&public).refresh_loop(config.public_address_refresh, shutdown.clone()));
    for (port, l) in listeners.passive {
        tracker.spawn(accept_data(port, l, Arc::clone(&pool), shutdown.clone()));
    }
    let ids = Arc::new(AtomicU64::new(1));
    info!(
        listen = ?listeners.control.iter().filter_map(|l| l.local_addr().ok()).collect::<Vec<_>>(),
        backends = ?config.backends.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        public_address = %config.public_address,
        passive_ports = %format!("{first}-{last}"),
        "ftpgate listening"
    );
    for l in listeners.control {
        tracker.spawn(accept_control(
            l,
            Arc::clone(&shared),
            tracker.clone(),
            shutdown.clone(),
            Arc::clone(&ids),
        ));
    }
    shutdown.cancelled().await;
    tracker.close();
    tracker.wait().await;
    info!("ftpgate stopped");
}

async fn accept_control(
    l: TcpListener,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    ids: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tracker.spawn(run_session(
                    Arc::clone(&shared),
                    stream,
                    id,
                    shutdown.child_token(),
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed on the control listener");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Hands each connection on a passive port to the session that leased the
/// port for that client address; anything else is refused.
async fn accept_data(
    port: u16,
    l: TcpListener,
    pool: Arc<PassivePool>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => match pool.claim(port, canonical_ip(peer.ip())) {
                Some(tx) => {
                    if tx.send(stream).is_err() {
                        debug!(port, peer = %peer, "data connection arrived as its session gave up");
                    }
                }
                None => {
                    warn!(port, peer = %peer, "refused data connection: no transfer pending on this port for this address")
                }
            },
            Err(e) => {
                warn!(port, error = %e, "accept failed on a passive port");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
