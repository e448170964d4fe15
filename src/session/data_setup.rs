//! The I/O of data connections the core sets up: the backend leg (a
//! connect to the backend's passive port, or ftpgate's listener for an
//! active backend), the client leg (a passive port leased for the client's
//! address, or ftpgate's connect to its PORT address), and the data task
//! that joins them. Each step reports back to the core.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::{connect_from, Legs, Session};
use crate::data::relay::RelayLimits;
use crate::data::{spawn_data_task, BackendLeg, ClientDataTls, DataTask};
use crate::error::{Error, ErrorKind};
use crate::net::{BackendAddr, PublicAddr};
use crate::proto::session::Event;

/// A listener for a backend's active-mode data connection on `ip`: any
/// free port, or one of `range` (`backend_active_ports`), tried from a
/// random starting point.
async fn bind_active(ip: IpAddr, range: Option<(u16, u16)>) -> Result<TcpListener, Error> {
    let failed = |e: String| Error::internal(ErrorKind::DataConnectFailed(e));
    let Some((first, last)) = range else {
        return TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| failed(e.to_string()));
    };
    let len = u32::from(last - first) + 1;
    let start = rand::random::<u32>() % len;
    for i in 0..len {
        let port = first + ((start + i) % len) as u16;
        if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)).await {
            return Ok(l);
        }
    }
    warn!(range = %format!("{first}-{last}"), "no free port in backend_active_ports");
    Err(failed("no free port in backend_active_ports".into()))
}

impl Session {
    /// Connects to the backend's data port (before the transfer command,
    /// which it then cannot race), from the backend control connection's
    /// address: vsftpd and proftpd refuse data connections from others.
    pub(super) async fn connect_backend_data(&mut self, gen: u64, addr: BackendAddr) -> Event {
        let from = SocketAddr::new(self.backend_local.ip(), 0);
        match connect_from(from, addr.0, self.cfg.data_connect_timeout).await {
            Ok(s) => {
                let legs = self.legs.entry(gen);
                legs.backend = Some(BackendLeg::Connected(s));
                // The client already has its 227/229: the task starts now.
                if let Some((lease, rx)) = legs.lease.take() {
                    if self.spawn_task(gen, rx, Some(lease)).is_none() {
                        let error = Error::internal(ErrorKind::Bug("data leg missing".into()));
                        return Event::BackendDataFailed { gen, error };
                    }
                }
                Event::BackendDataConnected { gen }
            }
            Err(e) => {
                error!(session = self.id, backend_data = %addr, error = %e, "cannot connect to the backend's data port");
                Event::BackendDataFailed {
                    gen,
                    error: Error::backend(ErrorKind::DataConnectFailed(e.to_string())),
                }
            }
        }
    }

    /// Opens ftpgate's listener for an active-mode backend.
    pub(super) async fn listen_backend_data(&mut self, gen: u64) -> Event {
        let bound = bind_active(self.backend_local.ip(), self.cfg.backend_active_ports).await;
        let listener = match bound {
            Ok(l) => l,
            Err(error) => return Event::BackendDataFailed { gen, error },
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                let error = Error::internal(ErrorKind::DataConnectFailed(e.to_string()));
                return Event::BackendDataFailed { gen, error };
            }
        };
        self.legs.entry(gen).backend = Some(BackendLeg::Listening {
            listener,
            backend_ip: self.backend_addr.0.ip(),
        });
        Event::BackendDataListening { gen, addr }
    }

    /// TLS for the client side of the next data connection (PROT P).
    fn client_data_tls(&self, protected: bool) -> Option<ClientDataTls> {
        if !protected {
            return None;
        }
        let cfg = Arc::clone(&self.session_tls.as_ref()?.1);
        Some(ClientDataTls {
            config: cfg,
            require_resumption: self.cfg.tls_require_data_resumption,
            timeout: self.cfg.tls_handshake_timeout,
            control_cert: (self.cfg.tls_client_auth != crate::tls::ClientAuth::Off)
                .then(|| self.client_cert_der.clone()),
        })
    }

    /// Starts the data task of `gen` with its backend leg; `None` when the
    /// leg is gone (the setup was abandoned).
    fn spawn_task(
        &mut self,
        gen: u64,
        client_rx: oneshot::Receiver<TcpStream>,
        lease: Option<crate::data::port_pool::Lease<oneshot::Sender<TcpStream>>>,
    ) -> Option<()> {
        let protected = self.ctl.protects_data();
        let client_tls = self.client_data_tls(protected);
        let events = self.events_sender();
        let legs = self.legs.get_mut(gen)?;
        let backend = legs.backend.take()?;
        let cancel = self.cancel.child_token();
        legs.cancel = Some(cancel.clone());
        legs.started = Some(Instant::now());
        let client_deadline = lease
            .as_ref()
            .map(|_| Instant::now() + self.cfg.pending_data_timeout);
        spawn_data_task(DataTask {
            gen,
            client_rx,
            lease,
            client_deadline,
            backend,
            events,
            cancel,
            limits: RelayLimits::data(self.cfg.relay_buffer_max, self.cfg.data_stall_timeout),
            counters: self.counters.clone(),
            progress: Arc::clone(&legs.progress),
            client_tls,
            backend_tls: self
                .backend_tls
                .clone()
                .filter(|_| self.cfg.backend_tls_protect_data),
            handshakes: self.shared.metrics.tls_handshakes_total.clone(),
        });
        Some(())
    }

    /// Leases a passive port for the client's address and starts the data
    /// task; the public address shown is the one for this client.
    pub(super) fn lease_passive(&mut self, gen: u64, pasv: bool) -> Event {
        let public = if pasv {
            match self
                .live
                .public
                .for_client(self.client_addr.ip(), self.seen_local.ip(), true)
            {
                Some(p) => p,
                None => {
                    let error = Error::client(ErrorKind::NoIpv4ForPasv);
                    return Event::LeaseFailed { gen, error };
                }
            }
        } else {
            // A 229 names no address.
            PublicAddr::new(self.local.ip())
        };
        let (tx, rx) = oneshot::channel();
        let Some(lease) = self.shared.pool.lease(self.client_addr.ip(), tx) else {
            self.shared.metrics.passive_exhausted_total.inc();
            warn!(session = self.id, client = %self.client_addr, pending = self.shared.pool.pending(), "passive port range exhausted for this client");
            let error = Error::internal(ErrorKind::PortRangeExhausted);
            return Event::LeaseFailed { gen, error };
        };
        let port = lease.port();
        let legs = self.legs.entry(gen);
        if legs.backend.is_none() {
            // Its backend leg is connected next (after the client's reply).
            legs.lease = Some((lease, rx));
        } else if self.spawn_task(gen, rx, Some(lease)).is_none() {
            let error = Error::internal(ErrorKind::Bug("data leg missing".into()));
            return Event::LeaseFailed { gen, error };
        }
        debug!(session = self.id, gen, port, public = %public, "passive data connection prepared");
        Event::Leased { gen, public, port }
    }

    /// Starts the data task of an active-mode client; its client leg comes
    /// with [`Session::connect_client`].
    pub(super) fn prepare_active(&mut self, gen: u64) {
        let (tx, rx) = oneshot::channel();
        if self.spawn_task(gen, rx, None).is_some() {
            if let Some(l) = self.legs.get_mut(gen) {
                l.client_tx = Some(tx);
            }
            debug!(session = self.id, gen, "active data connection prepared");
        }
    }

    /// Connects to the client's PORT/EPRT address for the transfer.
    pub(super) async fn connect_client(&mut self, gen: u64, target: SocketAddr) -> Event {
        let port = if self.cfg.active_source_port_20 {
            20
        } else {
            0
        };
        let from = SocketAddr::new(self.local.ip(), port);
        match connect_from(from, target, self.cfg.data_connect_timeout).await {
            Ok(s) => {
                if let Some(tx) = self.legs.get_mut(gen).and_then(|l| l.client_tx.take()) {
                    let _ = tx.send(s);
                }
                Event::ClientDataConnected { gen }
            }
            Err(e) => {
                warn!(session = self.id, target = %target, error = %e, "cannot connect to the client's active-mode address");
                let error = Error::client(ErrorKind::DataConnectFailed(e.to_string()));
                Event::ClientDataFailed { gen, error }
            }
        }
    }

    /// Abandons `gen`: a running relay resets both legs; legs not yet
    /// handed to a task are dropped. The byte counts of a transfer whose
    /// transfer-log line is still due stay until it is written.
    pub(super) fn cancel_data(&mut self, gen: u64) {
        if let Some(l) = self.legs.get_mut(gen) {
            if let Some(c) = l.cancel.take() {
                c.cancel();
            }
            l.backend = None;
            l.client_tx = None;
            l.lease = None;
        }
        if self.ctl.transfer_gen() != Some(gen) {
            self.legs.remove(gen);
        }
    }

    /// The byte counts and start of `gen`, forgotten.
    pub(super) fn take_progress(&mut self, gen: u64) -> Option<Legs> {
        self.legs.remove(gen)
    }
}
