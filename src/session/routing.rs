//! Routing on USER: per-user routing picks the user's pool and a backend
//! of it; the explicit gateway resolves and checks `USER name@host`. The
//! core asks with [`crate::proto::session::Step::Route`] and hears back an
//! [`Event`].

use std::net::SocketAddr;

use tracing::{debug, error, info, warn};

use super::upstream::{connect_backend, Toward};
use super::{GatewayRoute, Session};
use crate::backend::{Choice, Key};
use crate::error::{Error, ErrorKind};
use crate::net::BackendAddr;
use crate::proto::session::Event;

/// What routing picked: backends best first, how to talk to them, and the
/// user name to send.
type Routed = (Vec<Choice>, Toward, String);

/// A gateway destination as a one-member choice.
pub(super) fn destination(addr: SocketAddr, name: String) -> Vec<Choice> {
    vec![Choice {
        addr: BackendAddr(addr),
        name,
        protocol: crate::config::BackendProtocol::Ftp,
        active: Default::default(),
    }]
}

impl Session {
    /// Picks and connects a backend for `user`.
    pub(super) async fn route(&mut self, user: String) -> Event {
        let picked = if self.gateway == Some(GatewayRoute::Explicit) {
            self.named_destination(&user).await
        } else {
            self.pool_for(&user)
        };
        let (choices, toward, send) = match picked {
            Ok(Ok(r)) => r,
            Ok(Err(kind)) => return Event::RouteRefused(kind),
            Err(e) => return Event::RouteFailed(e),
        };
        let connected = connect_backend(
            &self.shared,
            &self.cfg,
            self.id,
            choices,
            self.client_addr.addr(),
            self.seen_local,
            toward,
        )
        .await;
        match connected {
            Ok(c) => {
                let (backend, tls) = (c.addr, c.tls_mode);
                self.install(c);
                info!(session = self.id, client = %self.client_addr, user = %user, backend = %self.backend_name, "routed by USER");
                Event::Routed {
                    backend,
                    tls,
                    user: send,
                }
            }
            Err((_, e)) => Event::RouteFailed(e),
        }
    }

    /// Per-user routing: the backends of `user`'s pool, best first.
    /// `Ok(Err)`: refused (answered with that kind's 530).
    fn pool_for(&self, user: &str) -> Result<Result<Routed, ErrorKind>, Error> {
        let Some(pool_name) = self.cfg.pool_for_user(self.listener.addr(), user) else {
            warn!(session = self.id, client = %self.client_addr, user = %user, "no pool for this user ([user_pool] has no entry and there is no user_pool_default); refused");
            return Ok(Err(ErrorKind::UnknownUser));
        };
        let Some(pool) = self.live.pool(pool_name) else {
            return Err(Error::internal(ErrorKind::Bug(format!(
                "pool `{pool_name}` is missing"
            ))));
        };
        let choices = if pool.policy().needs_user() {
            pool.preference_by(Key::User(user))
        } else {
            pool.preference(self.client_addr.ip())
        };
        if choices.is_empty() {
            error!(session = self.id, client = %self.client_addr, user = %user, pool = %pool_name, "every backend of the pool is down; refusing client");
            return Err(Error::backend(ErrorKind::NoBackendUp));
        }
        debug!(session = self.id, user = %user, pool = %pool_name, "pool picked");
        Ok(Ok((choices, Toward::pool(&self.cfg), user.to_owned())))
    }

    /// Explicit gateway: `USER name@host[:port]` names the server. The host
    /// is resolved within `gateway_resolve_timeout` and every address must
    /// pass `gateway_allow`/`gateway_deny`.
    async fn named_destination(&self, arg: &str) -> Result<Result<Routed, ErrorKind>, Error> {
        let named = match crate::gateway::parse_user_at_host(arg) {
            Ok(n) => n,
            Err(e) => {
                warn!(session = self.id, client = %self.client_addr, user = %arg, error = %e, "gateway: USER names no destination");
                return Ok(Err(ErrorKind::GatewayLogin));
            }
        };
        let lookup = tokio::net::lookup_host((named.host.as_str(), named.port));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(
            self.cfg.gateway_resolve_timeout,
            lookup,
        )
        .await
        {
            Ok(Ok(a)) => a.map(crate::net::canonical).collect(),
            Ok(Err(e)) => {
                warn!(session = self.id, client = %self.client_addr, host = %named.host, error = %e, "gateway: cannot resolve the destination");
                return Ok(Err(ErrorKind::DestinationUnresolvable));
            }
            Err(_) => {
                warn!(session = self.id, client = %self.client_addr, host = %named.host, timeout = ?self.cfg.gateway_resolve_timeout, "gateway: resolving the destination timed out");
                return Ok(Err(ErrorKind::DestinationUnresolvable));
            }
        };
        if addrs.is_empty() {
            warn!(session = self.id, client = %self.client_addr, host = %named.host, "gateway: the destination has no address");
            return Ok(Err(ErrorKind::DestinationUnresolvable));
        }
        // Every address must pass: a permitted name must not lead inside.
        for &a in &addrs {
            if let Err(why) = self.cfg.gateway.check(Some(&named.host), a) {
                warn!(session = self.id, client = %self.client_addr, destination = %named.host, reason = %why, "gateway destination refused");
                return Ok(Err(ErrorKind::DestinationRefused));
            }
        }
        let label = format!("{}:{}", named.host, named.port);
        let choices = addrs
            .into_iter()
            .flat_map(|a| destination(a, label.clone()))
            .collect();
        Ok(Ok((choices, Toward::GATEWAY, named.user)))
    }
}
