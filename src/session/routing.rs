//! Routing on USER: per-user routing picks the user's pool and a backend
//! of it (`[user_pool]` first, then the user lookup service, else
//! `user_pool_default` or the listener's pool); the explicit gateway
//! resolves and checks `USER name@host`. The core asks with
//! [`crate::proto::session::Step::Route`] and hears back an [`Event`].

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{debug, error, info, warn};

use super::upstream::{connect_backend, Toward};
use super::{GatewayRoute, Session};
use crate::backend::{Choice, Key};
use crate::config::LookupSettings;
use crate::error::{Error, ErrorKind};
use crate::lookup::{BackendRef, Login, Outcome, Target, UserLookup};
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
            self.by_user(&user).await
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

    /// Per-user routing: `[user_pool]` names the user's pool, else the
    /// user lookup service answers, else `user_pool_default` (or, for a
    /// `user_hash` pool, the listener's pool). `Ok(Err)`: refused
    /// (answered with that kind's 530).
    async fn by_user(&self, user: &str) -> Result<Result<Routed, ErrorKind>, Error> {
        match &self.live.lookup {
            Some(lookup) if !self.cfg.user_pool.contains_key(user) => {
                self.looked_up(lookup, user).await
            }
            _ => self.pool_for(user),
        }
    }

    /// The backends of `user`'s pool by the configuration alone.
    fn pool_for(&self, user: &str) -> Result<Result<Routed, ErrorKind>, Error> {
        let Some(pool_name) = self.cfg.pool_for_user(self.listener.addr(), user) else {
            warn!(session = self.id, client = %self.client_addr, user = %user, "no pool for this user ([user_pool] has no entry and there is no user_pool_default); refused");
            return Ok(Err(ErrorKind::UnknownUser));
        };
        self.pool_members(pool_name, user, user.to_owned())
    }

    /// The backends of pool `pool_name` for `user`, best first; `send` is
    /// the name to log in with.
    fn pool_members(
        &self,
        pool_name: &str,
        user: &str,
        send: String,
    ) -> Result<Result<Routed, ErrorKind>, Error> {
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
        Ok(Ok((choices, Toward::pool(&self.cfg), send)))
    }

    /// Asks the user lookup service (or its cache) where `user` goes.
    /// Fails closed: an answer ftpgate cannot act on refuses the login
    /// with 421, and only a failure to get an answer at all takes
    /// `user_lookup_fallback_pool`.
    async fn looked_up(
        &self,
        lookup: &Arc<UserLookup>,
        user: &str,
    ) -> Result<Result<Routed, ErrorKind>, Error> {
        let login = Login {
            user,
            client_ip: self.client_addr.ip(),
            listener: self.listener.addr(),
        };
        let settings = lookup.settings();
        let service = settings.url.as_str();
        let refused = || Err(Error::backend(ErrorKind::UserLookupFailed));
        let found = match lookup.resolve(&login).await {
            Outcome::Found(f) => f,
            Outcome::Unknown => {
                warn!(session = self.id, client = %self.client_addr, user = %user, "the user lookup does not know this user (404); refused");
                return Ok(Err(ErrorKind::UnknownUser));
            }
            Outcome::Failed(cause) => {
                if let Some(pool) = &settings.fallback_pool {
                    warn!(session = self.id, client = %self.client_addr, user = %user, service = %service, cause = %cause, pool = %pool, "user lookup failed; routing to user_lookup_fallback_pool");
                    return self.pool_members(pool, user, user.to_owned());
                }
                error!(session = self.id, client = %self.client_addr, user = %user, service = %service, cause = %cause, "user lookup failed; login refused with 421 (no user_lookup_fallback_pool)");
                return refused();
            }
        };
        let send = found.user.unwrap_or_else(|| user.to_owned());
        if send != user {
            info!(session = self.id, client = %self.client_addr, user = %user, send = %send, "the user lookup renames the user toward the backend");
        }
        match found.target {
            Target::Pool(name) => {
                if self.live.pool(&name).is_none() || self.cfg.is_tcp_pool(&name) {
                    error!(session = self.id, client = %self.client_addr, user = %user, service = %service, pool = %name, "the user lookup names a pool ftpgate has no FTP pool of that name for; login refused with 421");
                    return refused();
                }
                debug!(session = self.id, user = %user, pool = %name, "user lookup: pool");
                self.pool_members(&name, user, send)
            }
            Target::Backend(b) => {
                let Some(choices) = self.lookup_backend(&b, settings, user).await? else {
                    return refused();
                };
                debug!(session = self.id, user = %user, backend = %b, "user lookup: backend");
                Ok(Ok((choices, Toward::pool(&self.cfg), send)))
            }
        }
    }

    /// The backend a lookup names: the members of the FTP pools with that
    /// address (or written with that name), if one of them may take the
    /// session; else, only with `user_lookup_any_backend`, the address
    /// itself. `Ok(None)`: refused (logged here).
    async fn lookup_backend(
        &self,
        b: &BackendRef,
        settings: &LookupSettings,
        user: &str,
    ) -> Result<Option<Vec<Choice>>, Error> {
        let written = b.to_string();
        let mut members: Vec<&crate::backend::Member> = Vec::new();
        for (name, pool) in &self.live.pools {
            if self.cfg.is_tcp_pool(name) {
                continue;
            }
            for m in pool.members() {
                let same = match b {
                    BackendRef::Addr(a) => m.spec.addr == *a,
                    BackendRef::Name { .. } => m.spec.name.eq_ignore_ascii_case(&written),
                };
                if same && !members.iter().any(|o| o.spec.addr == m.spec.addr) {
                    members.push(m);
                }
            }
        }
        if !members.is_empty() {
            let choices: Vec<Choice> = members
                .into_iter()
                .filter(|m| m.health.usable() && !m.spec.drain)
                .map(|m| Choice {
                    addr: BackendAddr(m.spec.addr),
                    name: m.spec.name.clone(),
                    protocol: m.spec.protocol,
                    active: Arc::clone(&m.active),
                })
                .collect();
            if choices.is_empty() {
                error!(session = self.id, client = %self.client_addr, user = %user, backend = %written, "the backend the user lookup names is down or draining; refusing client");
                return Err(Error::backend(ErrorKind::NoBackendUp));
            }
            return Ok(Some(choices));
        }
        if !settings.any_backend {
            error!(session = self.id, client = %self.client_addr, user = %user, service = %settings.url.as_str(), backend = %written, "the user lookup names a backend outside every pool; login refused with 421 (user_lookup_any_backend = true allows it)");
            return Ok(None);
        }
        let addrs: Vec<SocketAddr> = match b {
            BackendRef::Addr(a) => vec![*a],
            BackendRef::Name { host, port } => {
                let lookup = tokio::net::lookup_host((host.as_str(), *port));
                match tokio::time::timeout(settings.timeout, lookup).await {
                    Ok(Ok(a)) => a.map(crate::net::canonical).collect(),
                    Ok(Err(e)) => {
                        error!(session = self.id, client = %self.client_addr, user = %user, backend = %written, error = %e, "cannot resolve the backend the user lookup names; login refused with 421");
                        return Ok(None);
                    }
                    Err(_) => {
                        error!(session = self.id, client = %self.client_addr, user = %user, backend = %written, "resolving the backend the user lookup names timed out; login refused with 421");
                        return Ok(None);
                    }
                }
            }
        };
        if addrs.is_empty() {
            error!(session = self.id, client = %self.client_addr, user = %user, backend = %written, "the backend the user lookup names has no address; login refused with 421");
            return Ok(None);
        }
        Ok(Some(
            addrs
                .into_iter()
                .flat_map(|a| destination(a, written.clone()))
                .collect(),
        ))
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
