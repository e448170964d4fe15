//! The passive ports: each connection is handed to the session that leased
//! the port for that client address (read from a PROXY protocol header when
//! a trusted balancer sends one); anything else is refused and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::live::Shared;
use crate::net::canonical_ip;
use crate::proto::proxy::Header;

/// Hands each connection on a passive port to the session that leased the
/// port for that client address; anything else is refused.
pub async fn accept_data(
    port: u16,
    l: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((mut stream, peer)) => {
                let live = shared.live();
                if crate::accept::trusted_proxy(&live.config, peer.ip()) {
                    // A balancer in front of the passive ports: the header
                    // names the client whose route this connection claims.
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        match crate::accept::read_proxy_header(
                            &mut stream,
                            live.config.proxy_protocol_timeout,
                        )
                        .await
                        {
                            Ok(Header::Proxy { source, .. }) => {
                                route_data(&shared, port, stream, crate::net::canonical(source))
                            }
                            Ok(Header::Local) => route_data(&shared, port, stream, peer),
                            Err(e) => {
                                shared
                                    .metrics
                                    .data_refused_total
                                    .with_label_values(&["proxy_header"])
                                    .inc();
                                warn!(port, peer = %peer, error = %e, "refused data connection from a PROXY protocol sender")
                            }
                        }
                    });
                } else {
                    route_data(&shared, port, stream, peer);
                }
            }
            Err(e) => {
                warn!(port, error = %e, "accept failed on a passive port");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Hands a data connection from `client` to the session that leased `port`
/// for that address; refuses it otherwise.
fn route_data(shared: &Shared, port: u16, stream: TcpStream, client: SocketAddr) {
    let pool = &shared.pool;
    match pool.claim(port, canonical_ip(client.ip())) {
        Some(tx) => {
            if tx.send(stream).is_err() {
                debug!(port, peer = %client, "data connection arrived as its session gave up");
            }
        }
        None => {
            // Another client waits on this port: a foreign address.
            let reason = if pool.pending_on(port) {
                "foreign_address"
            } else {
                "no_pending_transfer"
            };
            shared
                .metrics
                .data_refused_total
                .with_label_values(&[reason])
                .inc();
            warn!(port, peer = %client, reason, "refused data connection: no transfer pending on this port for this address")
        }
    }
}
