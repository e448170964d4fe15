//! Per-user routing by the operator's own HTTP service
//! (`user_lookup_url`): on `USER`, a GET names the user's pool or backend.
//!
//! [`UserLookup`] is shared by every session of one configuration (it
//! lives in [`crate::live::Live`]). It keeps answers in a [`cache::Cache`]
//! and lets concurrent logins that need the same request share it (single
//! flight): the first starts the request as a task of its own, the others
//! wait for its answer, and a waiter that goes away never cancels it.
//! What an answer means for a session (pools, backends, the fallback) is
//! `session/routing.rs`'s business.
//!
//! The pure parts, unit-tested without sockets: `url` (the template, its
//! placeholders and their encoding), `answer` (status and body to an
//! [`Outcome`]) and `cache` (what is kept, how long, the size bound).
//! `http` makes the request.

pub mod answer;
pub mod cache;
pub mod http;
pub mod url;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

pub use answer::{BackendRef, Failure, Found, Outcome, Target};
pub use url::{Login, UrlTemplate};

use crate::config::LookupSettings;
use crate::metrics::Metrics;

/// The cache and the requests in flight, under one lock so that an answer
/// moves from one to the other at once.
#[derive(Debug)]
struct State {
    cache: cache::Cache,
    /// Requests in flight by target; `None` until the answer is in.
    flights: HashMap<String, watch::Receiver<Option<Outcome>>>,
}

/// The lookup service of one configuration.
#[derive(Debug)]
pub struct UserLookup {
    settings: LookupSettings,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl UserLookup {
    /// The lookup `settings` describe, counted in `metrics`.
    pub fn new(settings: LookupSettings, metrics: Arc<Metrics>) -> Arc<UserLookup> {
        let cache = cache::Cache::new(
            settings.cache_size,
            settings.cache_ttl,
            settings.unknown_ttl,
        );
        Arc::new(UserLookup {
            settings,
            state: Mutex::new(State {
                cache,
                flights: HashMap::new(),
            }),
            metrics,
        })
    }

    /// Its settings.
    pub fn settings(&self) -> &LookupSettings {
        &self.settings
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer for `login`: kept, shared with a request in flight, or
    /// asked for. Returns within `user_lookup_timeout` (plus scheduling).
    pub async fn resolve(self: &Arc<Self>, login: &Login<'_>) -> Outcome {
        let target = self.settings.url.target(login);
        let mut rx = {
            let mut st = self.state();
            if let Some(kept) = st.cache.get(&target, Instant::now()) {
                self.metrics.user_lookup_cache_hits_total.inc();
                debug!(user = %login.user, outcome = kept.label(), "user lookup: cached answer");
                return kept;
            }
            match st.flights.get(&target) {
                // A request whose task is gone (it cannot send) is not joined.
                Some(rx) if rx.has_changed().is_ok() => {
                    self.metrics.user_lookup_shared_total.inc();
                    rx.clone()
                }
                _ => {
                    let (tx, rx) = watch::channel(None);
                    st.flights.insert(target.clone(), rx.clone());
                    tokio::spawn(Arc::clone(self).ask(target, tx));
                    rx
                }
            }
        };
        let answer = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        answer.unwrap_or_else(|| {
            Outcome::Failed(Failure::Io("the lookup ended without an answer".into()))
        })
    }

    /// One request: its answer is kept (if its kind is), counted, and
    /// handed to everyone waiting for it.
    async fn ask(self: Arc<Self>, target: String, tx: watch::Sender<Option<Outcome>>) {
        let s = &self.settings;
        let started = Instant::now();
        let outcome =
            match tokio::time::timeout(s.timeout, http::get(&s.url, &target, s.tls.as_ref())).await
            {
                Ok(Ok((status, body))) => answer::parse_answer(status, &body),
                Ok(Err(f)) => Outcome::Failed(f),
                Err(_) => Outcome::Failed(Failure::Timeout(s.timeout)),
            };
        let took = started.elapsed();
        self.metrics
            .user_lookup_duration_seconds
            .observe(took.as_secs_f64());
        self.metrics
            .user_lookups_total
            .with_label_values(&[outcome.label()])
            .inc();
        debug!(target = %target, outcome = outcome.label(), took = ?took, "user lookup answered");
        {
            let mut st = self.state();
            st.cache.insert(&target, outcome.clone(), Instant::now());
            st.flights.remove(&target);
        }
        tx.send_replace(Some(outcome));
    }
}
