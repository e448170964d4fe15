//! What a running ftpgate shares with its sessions: the live
//! configuration (swapped whole on reload; each session keeps the snapshot
//! it started with), the passive routing table, the metrics, the admission
//! counters, the transfer log and the drain signal. Kept apart from
//! `server` (which builds and swaps it) so that sessions, plain TCP
//! listeners and the admin endpoint depend on this module, not on the
//! server, and nothing imports in a circle.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::advertise::PublicAddresses;
use crate::backend::Backends;
use crate::config::Config;
use crate::data::PassivePool;
use crate::limits::Admission;
use crate::lookup::UserLookup;
use crate::metrics::Metrics;
use crate::xferlog::XferLog;

/// What a reload replaces: the configuration and what is built from it.
#[derive(Debug)]
pub struct Live {
    /// The configuration.
    pub config: Arc<Config>,
    /// Backend pools by name (`default` is `backends`), with their health.
    pub pools: BTreeMap<String, Arc<Backends>>,
    /// Advertised addresses.
    pub public: Arc<PublicAddresses>,
    /// The user lookup service, with its cache (`user_lookup_url`). A
    /// reload starts a new one (a fresh cache); a change of backend
    /// addresses keeps it.
    pub lookup: Option<Arc<UserLookup>>,
}

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force; replaced whole by [`Shared::set_live`].
    live: RwLock<Arc<Live>>,
    /// Pending passive data connections.
    pub pool: Arc<PassivePool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Session counters behind the connection limits.
    pub admission: Arc<Admission>,
    /// The transfer log, if configured.
    pub xferlog: Option<XferLog>,
    /// Cancelled when a graceful shutdown starts: idle sessions close.
    pub draining: CancellationToken,
}

impl Shared {
    /// The current configuration and what hangs off it.
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Ready for new clients: not draining, and a backend is up.
    pub fn ready(&self) -> bool {
        !self.draining.is_cancelled() && self.live().any_up()
    }
}

impl Live {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Arc<Backends>> {
        self.pools.get(name)
    }

    /// Whether some pool has a backend up.
    pub fn any_up(&self) -> bool {
        self.pools.values().any(|p| p.any_up())
    }
}

impl Shared {
    /// Shared state starting with `live`.
    pub fn new(
        live: Live,
        pool: Arc<PassivePool>,
        metrics: Arc<Metrics>,
        admission: Arc<Admission>,
        xferlog: Option<XferLog>,
    ) -> Shared {
        Shared {
            live: RwLock::new(Arc::new(live)),
            pool,
            metrics,
            admission,
            xferlog,
            draining: CancellationToken::new(),
        }
    }

    /// Replaces the configuration in force (new sessions get it).
    pub fn set_live(&self, live: Live) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }
}
