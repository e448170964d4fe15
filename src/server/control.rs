//! Control connections: accepting them on each kind of control listener,
//! the PROXY protocol header where the listener wants one, the connection
//! limits by the real client address, then the session (or a 421).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::error::{Error, ErrorKind};
use crate::live::Shared;
use crate::net::ListenAddr;
use crate::proto::proxy::Header;
use crate::session::{refuse, run_session, Arrival, GatewayRoute};

/// What kind of control listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain FTP (AUTH TLS per `tls`).
    Plain,
    /// Implicit FTPS.
    ImplicitTls,
    /// Plain FTP behind a PROXY-protocol balancer: every connection must come
    /// from `proxy_protocol_from` and start with a header.
    Proxied,
    /// A client network's gateway: redirected connections go to their
    /// original destination, others name theirs in `USER name@host`.
    Gateway,
}

/// Accepts on one control listener until `stop`; each connection is
/// admitted at once, or, on a PROXY protocol listener, once its header is
/// read (in a task of its own: reading may take a while).
pub(super) async fn accept_control(
    l: TcpListener,
    kind: ListenerKind,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    stop: CancellationToken,
    shutdown: CancellationToken,
    ids: Arc<AtomicU64>,
) {
    let Ok(bound) = l.local_addr() else {
        warn!("a control listener has no local address; not serving it");
        return;
    };
    let listener = ListenAddr::new(bound);
    // The metrics label, made once per listener, not per session.
    let what: Arc<str> = listener.label().into();
    // Accepted connections inherit the control options from the listener
    // (set before it listened, `Listeners::bind`; set again here with the
    // live keepalive, so `tuned` says what the listener carries); a session
    // whose configuration (after a reload) wants other ones sets its own.
    let keepalive = shared.live().config.tcp_keepalive;
    let tuned =
        crate::session::net::tune_listener(&l, keepalive, kind != ListenerKind::ImplicitTls)
            .then_some(keepalive);
    crate::accept::accept_loop(l, &what, stop, |stream, peer| {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let arrived = Arrived {
            shared: Arc::clone(&shared),
            stream,
            peer,
            id,
            listener,
            label: Arc::clone(&what),
            kind,
            tuned,
            sessions: sessions.clone(),
            cancel: shutdown.child_token(),
        };
        if kind == ListenerKind::Proxied {
            sessions.spawn(arrived.read_header());
        } else {
            arrived.admit(None, None);
        }
    })
    .await;
}

/// A connection accepted on a control listener, not yet admitted.
struct Arrived {
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    listener: ListenAddr,
    /// The listener's metrics label.
    label: Arc<str>,
    kind: ListenerKind,
    /// The keepalive the listener's options carry (see `tune_listener`).
    tuned: Option<std::time::Duration>,
    sessions: TaskTracker,
    cancel: CancellationToken,
}

impl Arrived {
    /// PROXY protocol listener: only trusted senders, and a header first,
    /// naming the real client (whose address the limits then apply to).
    async fn read_header(mut self) {
        let live = self.shared.live();
        let refused = |s: &Self, why: &str| {
            s.shared
                .metrics
                .sessions_total
                .with_label_values(&[&s.label, "-", "proxy_refused"])
                .inc();
            warn!(session = s.id, peer = %s.peer, reason = why, "connection closed on the PROXY protocol listener");
        };
        if !crate::accept::trusted_proxy(&live.config, self.peer.ip()) {
            return refused(&self, "source not in proxy_protocol_from");
        }
        // A shutdown (or drain) must not wait for a silent connection's header.
        let read = tokio::select! {
            r = crate::accept::read_proxy_header(&mut self.stream, live.config.proxy_protocol_timeout) => r,
            _ = self.cancel.cancelled() => Err("shutting down".to_owned()),
            _ = self.shared.draining.cancelled() => Err("shutting down".to_owned()),
        };
        match read {
            Ok(Header::Proxy {
                source,
                destination,
            }) => self.admit(
                Some(crate::net::canonical(source)),
                Some(crate::net::canonical(destination)),
            ),
            Ok(Header::Local) => self.admit(None, None),
            Err(e) => refused(&self, &e),
        }
    }

    /// The connection limits by the real client address, then the session
    /// (or a 421).
    fn admit(self, client: Option<SocketAddr>, seen_local: Option<SocketAddr>) {
        let live = self.shared.live();
        let gateway = (self.kind == ListenerKind::Gateway).then(|| {
            match crate::session::net::original_destination(&self.stream, self.listener.addr()) {
                Some(dst) => GatewayRoute::Transparent(dst),
                None => GatewayRoute::Explicit,
            }
        });
        let real = client.unwrap_or(self.peer);
        match crate::accept::admit(&self.shared, &live, real, &self.label, self.id) {
            Ok(admitted) => {
                // Boxed: a task's future is moved whole when spawned and
                // when it ends; the session's is ~3.4 KiB, the box 8 bytes.
                self.sessions.spawn(Box::pin(run_session(
                    Arc::clone(&self.shared),
                    live,
                    Arrival {
                        client: self.stream,
                        peer: self.peer,
                        id: self.id,
                        listener: self.listener,
                        label: self.label,
                        implicit_tls: self.kind == ListenerKind::ImplicitTls,
                        tuned: self.tuned,
                        admitted,
                        real_client: client,
                        seen_local,
                        gateway,
                    },
                    self.cancel,
                )));
            }
            Err(hit) => {
                let stream = self.stream;
                self.sessions.spawn(async move {
                    refuse(stream, &Error::client(ErrorKind::LimitReached(hit.key()))).await
                });
            }
        }
    }
}
