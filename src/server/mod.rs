//! A running ftpgate: start, reload, drain, and the cancellation tree.
//!
//! [`Listeners::bind`] (`listeners.rs`) binds every listener at start;
//! [`Server::start`] serves on them: control connections (`control.rs`),
//! the passive ports (`data::accept`), plain TCP listeners (`tcp`), the
//! admin endpoint, health checks (built by `backend::health::how`). What a reload may change (backends, limits, timeouts, public
//! addresses) lives in [`Live`], swapped whole; each session keeps the
//! snapshot it started with, so a reload never disturbs a running session.
//! Sessions get child tokens of one shutdown token and register with a task
//! tracker, so shutdown cancels top-down and waits bottom-up.

mod control;
mod listeners;
mod restart;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::advertise::PublicAddresses;
use crate::backend::policy::Policy;
use crate::backend::{health, Backends, Health, Member};
use crate::config::Config;
use crate::data::port_pool::PortPool;
use crate::data::PassivePool;
use crate::limits::Admission;
pub use crate::live::{Live, Shared};
use crate::metrics::Metrics;

use control::accept_control;
pub use control::ListenerKind;
use listeners::listening;
pub use listeners::{BindError, Listeners};
use restart::{keep_restart_only, restart_only_changes};

/// The user lookup service `config` asks for, counted in `metrics`.
fn user_lookup(config: &Config, metrics: &Arc<Metrics>) -> Option<Arc<crate::lookup::UserLookup>> {
    config
        .user_lookup
        .clone()
        .map(|l| crate::lookup::UserLookup::new(l, Arc::clone(metrics)))
}

/// Pools built from members.
fn build_pools(
    members: BTreeMap<String, (Vec<Member>, Policy)>,
) -> BTreeMap<String, Arc<Backends>> {
    members
        .into_iter()
        .map(|(name, (m, policy))| (name, Arc::new(Backends::new(m, policy))))
        .collect()
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Settings that changed but need a restart (their old values stay).
    pub restart_needed: Vec<&'static str>,
    /// Backends added and removed.
    pub added: Vec<String>,
    /// Backends removed (their running sessions continue).
    pub removed: Vec<String>,
}

type HealthKey = (SocketAddr, String);

/// What a backend keeps across reloads: its health (while the check
/// settings stay), its checker's token, and its open-session count.
#[derive(Debug)]
struct MemberState {
    health: Arc<Health>,
    /// How its checker checks it (a member that changes kind gets a new one).
    kind: health::CheckKind,
    token: CancellationToken,
    active: Arc<AtomicU64>,
}

/// A running ftpgate.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    sessions: TaskTracker,
    tasks: TaskTracker,
    /// Stops the control accept loops.
    stop_accepting: CancellationToken,
    /// Ends everything: sessions get a 421, background tasks stop.
    shutdown: CancellationToken,
    /// Health-check tasks by backend, each with its own token.
    checkers: Mutex<HashMap<HealthKey, MemberState>>,
    /// Stops the current public-address refresh loop.
    refresh: Mutex<CancellationToken>,
    admin_addr: Option<SocketAddr>,
    /// Held while the live configuration is replaced (reload, DNS).
    swap: tokio::sync::Mutex<()>,
}

impl Server {
    /// Starts serving on `listeners`. Must run inside a tokio runtime.
    pub async fn start(config: Arc<Config>, listeners: Listeners) -> Arc<Server> {
        let admin_addr = listeners.admin_addr();
        let Listeners {
            control,
            implicit,
            proxied,
            gateway,
            passive,
            tcp,
            admin,
            xferlog,
        } = listeners;
        let (first, last) = config.passive_ports;
        let pool: Arc<PassivePool> = PortPool::new(first, last, config.allow_foreign_data_address);
        let metrics = Arc::new(Metrics::new());
        let public = PublicAddresses::new(&config).await;
        let shutdown = CancellationToken::new();
        let server = Arc::new(Server {
            shared: Arc::new(Shared::new(
                // Replaced below once the health checkers exist.
                Live {
                    config: Arc::clone(&config),
                    pools: BTreeMap::new(),
                    public: Arc::clone(&public),
                    lookup: None,
                },
                Arc::clone(&pool),
                Arc::clone(&metrics),
                Admission::new(),
                xferlog,
            )),
            sessions: TaskTracker::new(),
            tasks: TaskTracker::new(),
            stop_accepting: shutdown.child_token(),
            refresh: Mutex::new(shutdown.child_token()),
            shutdown,
            checkers: Mutex::new(HashMap::new()),
            admin_addr,
            swap: tokio::sync::Mutex::new(()),
        });
        let members = server.sync_health(&config, None);
        server.shared.set_live(Live {
            config: Arc::clone(&config),
            pools: build_pools(members),
            public: Arc::clone(&public),
            lookup: user_lookup(&config, &metrics),
        });
        server.tasks.spawn(
            public.refresh_loop(
                config.public_address_refresh,
                server
                    .refresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        );
        for (port, l) in passive {
            server.tasks.spawn(crate::data::accept::accept_data(
                port,
                l,
                Arc::clone(&server.shared),
                server.shutdown.clone(),
            ));
        }
        if let Some(l) = admin {
            server.tasks.spawn(crate::admin::serve(
                l,
                Arc::clone(&server.shared),
                server.shutdown.clone(),
            ));
        }
        let ids = Arc::new(AtomicU64::new(1));
        info!(
            listen = ?listening(&control, &implicit, &proxied, &gateway, &tcp, admin_addr),
            pools = ?config.all_pools().iter().map(|p| format!("{}: {}", p.name, p.backends.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(" "))).collect::<Vec<_>>(),
            public_address = %config.public_address,
            passive_ports = %if config.serves_ftp() { format!("{first}-{last}") } else { "none".to_owned() },
            "ftpgate listening"
        );
        for (l, tls) in control
            .into_iter()
            .map(|l| (l, ListenerKind::Plain))
            .chain(implicit.into_iter().map(|l| (l, ListenerKind::ImplicitTls)))
            .chain(proxied.into_iter().map(|l| (l, ListenerKind::Proxied)))
            .chain(gateway.into_iter().map(|l| (l, ListenerKind::Gateway)))
        {
            server.tasks.spawn(accept_control(
                l,
                tls,
                Arc::clone(&server.shared),
                server.sessions.clone(),
                server.stop_accepting.clone(),
                server.shutdown.clone(),
                Arc::clone(&ids),
            ));
        }
        for (name, l) in tcp {
            info!(tcp = %name, listen = ?l.local_addr().ok(), "plain TCP listening");
            server.tasks.spawn(crate::tcp::accept_tcp(
                name,
                l,
                Arc::clone(&server.shared),
                server.sessions.clone(),
                server.stop_accepting.clone(),
                server.shutdown.clone(),
                Arc::clone(&ids),
            ));
        }
        server
            .tasks
            .spawn(Arc::clone(&server).resolve_loop(server.shutdown.clone()));
        server
    }

    /// The shared state (metrics, readiness).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Members for `config`'s backends, reusing the health (and checker) of
    /// a backend that stays, starting checkers for new ones and stopping
    /// those of removed ones.
    fn sync_health(
        &self,
        config: &Config,
        old: Option<&Config>,
    ) -> BTreeMap<String, (Vec<Member>, Policy)> {
        let same_checks = old.is_some_and(|o| {
            (
                o.health_check,
                o.health_check_interval,
                o.health_check_fast_interval,
                o.health_check_timeout,
                o.health_check_rise,
                o.health_check_fall,
                o.backend_proxy_protocol,
                o.health_check_tls,
                &o.health_check_user,
                &o.health_check_password,
            ) == (
                config.health_check,
                config.health_check_interval,
                config.health_check_fast_interval,
                config.health_check_timeout,
                config.health_check_rise,
                config.health_check_fall,
                config.backend_proxy_protocol,
                config.health_check_tls,
                &config.health_check_user,
                &config.health_check_password,
            )
                // SSH checks hold the host keys they started with.
                && o.sftp_known_hosts == config.sftp_known_hosts
                // Checkers hold the TLS settings they started with.
                && (
                    o.backend_tls,
                    &o.backend_tls_verify,
                    &o.backend_tls_server_name,
                    &o.backend_tls_identity,
                ) == (
                    config.backend_tls,
                    &config.backend_tls_verify,
                    &config.backend_tls_server_name,
                    &config.backend_tls_identity,
                )
        });
        let mut checkers = self.checkers.lock().unwrap_or_else(|p| p.into_inner());
        let mut old_checkers = std::mem::take(&mut *checkers);
        let mut pools = BTreeMap::new();
        for pool in config.all_pools() {
            let kind = if config.is_tcp_pool(&pool.name) {
                health::CheckKind::Connect
            } else if pool
                .backends
                .iter()
                .any(|b| b.protocol == crate::config::BackendProtocol::Sftp)
            {
                health::CheckKind::Ssh
            } else {
                health::CheckKind::FtpGreeting
            };
            let mut members = Vec::new();
            for spec in &pool.backends {
                let key = (spec.addr, spec.name.clone());
                if let Some(st) = checkers.get(&key) {
                    // Listed twice: same member twice (a crude weight).
                    members.push(Member {
                        spec: spec.clone(),
                        health: Arc::clone(&st.health),
                        active: Arc::clone(&st.active),
                    });
                    continue;
                }
                let old_state = old_checkers.remove(&key);
                let active = old_state
                    .as_ref()
                    .map(|st| Arc::clone(&st.active))
                    .unwrap_or_default();
                let kept = match old_state {
                    Some(st) if same_checks && st.kind == kind => Some((st.health, st.token)),
                    Some(st) => {
                        // New check settings: a new checker replaces the old one.
                        st.token.cancel();
                        None
                    }
                    None => None,
                };
                let (health, token) = match kept {
                    Some(entry) => entry,
                    None => {
                        let h = Arc::new(Health::new(
                            config.health_check_rise,
                            config.health_check_fall,
                        ));
                        let token = self.shutdown.child_token();
                        if config.health_check {
                            h.expect_checks();
                            self.tasks.spawn(health::check_loop(
                                spec.clone(),
                                Arc::clone(&h),
                                health::how(config, spec, kind),
                                Arc::clone(&self.shared.metrics),
                                token.clone(),
                            ));
                        }
                        (h, token)
                    }
                };
                members.push(Member {
                    spec: spec.clone(),
                    health: Arc::clone(&health),
                    active: Arc::clone(&active),
                });
                checkers.insert(
                    key,
                    MemberState {
                        health,
                        kind,
                        token,
                        active,
                    },
                );
            }
            pools.insert(pool.name, (members, pool.policy));
        }
        for ((addr, name), st) in old_checkers {
            st.token.cancel();
            if !checkers.contains_key(&(addr, name.clone())) {
                let label = crate::config::member_label(&name, addr);
                let _ = self
                    .shared
                    .metrics
                    .backend_up
                    .remove_label_values(&[&label]);
            }
        }
        pools
    }

    /// Applies a new configuration. Running sessions keep the one they
    /// started with; new sessions get this one. Settings that are bound at
    /// start keep their running values and are reported.
    pub async fn reload(&self, new: Config) -> ReloadReport {
        let _swap = self.swap.lock().await;
        let old = self.shared.live();
        let restart_needed = restart_only_changes(&old.config, &new);
        for key in &restart_needed {
            warn!(
                setting = key,
                "reload: this setting changed but needs a restart; keeping the running value"
            );
        }
        let new = Arc::new(keep_restart_only(&old.config, new));
        let members = self.sync_health(&new, Some(&old.config));
        let public = PublicAddresses::new(&new).await;
        {
            let mut refresh = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
            refresh.cancel();
            *refresh = self.shutdown.child_token();
            self.tasks.spawn(
                Arc::clone(&public).refresh_loop(new.public_address_refresh, refresh.clone()),
            );
        }
        let names = |c: &Config| -> Vec<String> {
            let mut v: Vec<String> = c
                .all_pools()
                .iter()
                .flat_map(|p| p.backends.iter().map(|b| b.name.clone()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let (old_names, new_names) = (names(&old.config), names(&new));
        let report = ReloadReport {
            restart_needed,
            added: new_names
                .iter()
                .filter(|n| !old_names.contains(n))
                .cloned()
                .collect(),
            removed: old_names
                .iter()
                .filter(|n| !new_names.contains(n))
                .cloned()
                .collect(),
        };
        self.shared.set_live(Live {
            pools: build_pools(members),
            lookup: user_lookup(&new, &self.shared.metrics),
            config: new,
            public,
        });
        if let Some(x) = &self.shared.xferlog {
            // Reopen for logrotate.
            if let Err(e) = x.reopen() {
                error!(path = %x.path().display(), error = %e, "cannot reopen the transfer log; writing to the old file");
            }
        }
        self.shared
            .metrics
            .reloads_total
            .with_label_values(&["success"])
            .inc();
        info!(
            added = ?report.added,
            removed = ?report.removed,
            "configuration reloaded; running sessions keep their settings"
        );
        report
    }

    /// Resolves backend host names every `backend_resolve_interval`; when
    /// a name's addresses change, its members change with them (health
    /// and open-session counts kept for addresses that stay). A failed
    /// lookup keeps the members it had, with a warning.
    async fn resolve_loop(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let live = self.shared.live();
            let interval = live.config.backend_resolve_interval;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let names: std::collections::BTreeSet<String> = self
                .shared
                .live()
                .config
                .all_pools()
                .iter()
                .flat_map(|p| {
                    p.backends
                        .iter()
                        .filter(|b| b.is_hostname())
                        .map(|b| b.name.clone())
                })
                .collect();
            if names.is_empty() {
                continue;
            }
            let timeout = live.config.backend_connect_timeout;
            let mut resolved = BTreeMap::new();
            for name in names {
                // `sftp://host` names resolve as `host:22`.
                let lookup = tokio::net::lookup_host(crate::config::split_backend_name(&name).1);
                match tokio::time::timeout(timeout, lookup).await {
                    Ok(Ok(addrs)) => {
                        let mut v: Vec<SocketAddr> = addrs.map(crate::net::canonical).collect();
                        v.sort();
                        v.dedup();
                        if v.is_empty() {
                            warn!(backend = %name, "backend name resolves to nothing; keeping its members");
                        } else {
                            resolved.insert(name, v);
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(backend = %name, error = %e, "cannot resolve backend name; keeping its members")
                    }
                    Err(_) => {
                        warn!(backend = %name, "resolving backend name timed out; keeping its members")
                    }
                }
            }
            let _swap = self.swap.lock().await;
            let old = self.shared.live();
            let Some(new) = old.config.with_resolved(&resolved) else {
                continue;
            };
            for (name, addrs) in &resolved {
                let before: Vec<SocketAddr> = old
                    .config
                    .all_pools()
                    .iter()
                    .flat_map(|p| {
                        p.backends
                            .iter()
                            .filter(|b| &b.name == name)
                            .map(|b| b.addr)
                    })
                    .collect();
                if before.iter().any(|a| !addrs.contains(a))
                    || addrs.iter().any(|a| !before.contains(a))
                {
                    info!(backend = %name, addresses = ?addrs, before = ?before, "backend name resolves differently: members updated");
                }
            }
            let members = self.sync_health(&new, Some(&old.config));
            self.shared.set_live(Live {
                pools: build_pools(members),
                config: Arc::new(new),
                public: Arc::clone(&old.public),
                lookup: old.lookup.clone(),
            });
        }
    }

    /// Counts a reload rejected before it reached [`Server::reload`].
    pub fn reload_failed(&self) {
        self.shared
            .metrics
            .reloads_total
            .with_label_values(&["failure"])
            .inc();
    }

    /// Ends every session now (421), e.g. on a second SIGTERM while draining.
    pub fn stop_now(&self) {
        self.stop_accepting.cancel();
        self.shared.draining.cancel();
        self.shutdown.cancel();
    }

    /// The drain timeout of the configuration in force.
    pub fn drain_timeout(&self) -> Duration {
        self.shared.live().config.shutdown_drain_timeout
    }

    /// Graceful shutdown: stops accepting, lets sessions finish their
    /// transfers for up to `drain`, closing each as soon as it is idle, then
    /// closes the rest with a 421 and stops.
    pub async fn shutdown(&self, drain: Duration) {
        self.stop_accepting.cancel();
        self.shared.draining.cancel();
        self.sessions.close();
        let open = self.shared.admission.sessions();
        if open > 0 {
            info!(sessions = open, drain_timeout = ?drain, "draining: open sessions may finish their transfers");
        }
        if tokio::time::timeout(drain, self.sessions.wait())
            .await
            .is_err()
        {
            warn!(
                sessions = self.shared.admission.sessions(),
                "drain timeout reached; closing the remaining sessions with 421"
            );
        }
        self.shutdown.cancel();
        self.sessions.wait().await;
        self.tasks.close();
        self.tasks.wait().await;
        info!("ftpgate stopped");
    }
}
