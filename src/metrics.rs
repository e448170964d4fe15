//! Prometheus metrics, one registry per running ftpgate (tests run several
//! in one process). Served by [`crate::admin`] at `/metrics`.
//!
//! Label values are bounded sets (listener and backend addresses from the
//! configuration, fixed outcome and reason names), never client addresses
//! or user names, so the number of series stays small.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric ftpgate exports.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Metrics {
    registry: Registry,
    /// Open sessions by listener and backend.
    pub sessions_active: IntGaugeVec,
    /// Ended sessions by listener, backend and outcome.
    pub sessions_total: IntCounterVec,
    /// Login replies by result (success, failure).
    pub logins_total: IntCounterVec,
    /// Finished transfers by direction (download, upload, listing), mode
    /// (passive, active) and outcome (complete, failed, aborted).
    pub transfers_total: IntCounterVec,
    /// Data bytes relayed, by direction (download, upload), counted as they flow.
    pub bytes_total: IntCounterVec,
    /// Plain TCP listener bytes relayed, by listener and direction
    /// (to_backend, to_client), counted as they flow.
    pub tcp_bytes_total: IntCounterVec,
    /// Refused data connections and PORT/EPRT targets by reason.
    pub data_refused_total: IntCounterVec,
    /// Passive routes pending or in use.
    pub passive_ports_in_use: IntGauge,
    /// PASV/EPSV answered 425 because no port was free for the client.
    pub passive_exhausted_total: IntCounter,
    /// 1 when a backend is up, 0 when down.
    pub backend_up: IntGaugeVec,
    /// Health-check duration by backend.
    pub health_check_seconds: HistogramVec,
    /// Health checks by backend and result.
    pub health_checks_total: IntCounterVec,
    /// Failed health checks by backend and reason (`timeout`, `io`,
    /// `closed`, `greeting`, `auth_tls`, `tls`, `login`).
    pub health_check_failures_total: IntCounterVec,
    /// Time a backend reply spends inside ftpgate before it is written to the client.
    pub reply_latency_seconds: Histogram,
    /// Limits hit, by limit.
    pub limit_hits_total: IntCounterVec,
    /// Configuration reloads by result.
    pub reloads_total: IntCounterVec,
    /// TLS handshakes by side (client, backend), channel (control, data) and result.
    pub tls_handshakes_total: IntCounterVec,
    /// Backend replies not passed to the client, by reason (`unsolicited`:
    /// no command awaited it; `passive_reply`: a 227/229 that did not answer
    /// ftpgate's own PASV/EPSV; `transfer_without_data`: a success for a
    /// transfer that had no data connection through ftpgate;
    /// `preliminary_as_final`: a second 1yz that ends a transfer, as
    /// pure-ftpd sends after a failed data write).
    pub backend_replies_dropped_total: IntCounterVec,
    /// Transfers whose data did not reach its peer whole, by cause
    /// (`backend_closed`, `relay_error`, `stalled`, `aborted`, `session_end`):
    /// both data connections reset, the client told 425/426, never 2xx.
    pub transfers_cut_total: IntCounterVec,
    /// Requests to the user lookup service by outcome (`found`, `unknown`,
    /// `bad_status`, `timeout`, `malformed`, `io`); cached and shared
    /// answers are not requests.
    pub user_lookups_total: IntCounterVec,
    /// Time a request to the user lookup service took, whatever its outcome.
    pub user_lookup_duration_seconds: Histogram,
    /// Logins answered from the user lookup cache.
    pub user_lookup_cache_hits_total: IntCounter,
    /// Logins that waited for a request another login had started.
    pub user_lookup_shared_total: IntCounter,
    /// Client input discarded unread, by reason (`plaintext_after_auth`:
    /// bytes sent after `AUTH TLS` before the handshake; `after_quit`:
    /// bytes sent after `QUIT`).
    pub client_input_discarded_total: IntCounterVec,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let sessions_active = IntGaugeVec::new(
            Opts::new("ftpgate_sessions_active", "Open client sessions."),
            &["listener", "backend"],
        )
        .expect("valid metric");
        r.register(Box::new(sessions_active.clone()))
            .expect("unique metric");
        let passive_ports_in_use = IntGauge::new(
            "ftpgate_passive_routes_in_use",
            "Passive data routes (port and client address) pending or in use.",
        )
        .expect("valid metric");
        r.register(Box::new(passive_ports_in_use.clone()))
            .expect("unique metric");
        let passive_exhausted_total = IntCounter::new(
            "ftpgate_passive_pool_exhausted_total",
            "PASV/EPSV requests refused because no passive port was free for the client address.",
        )
        .expect("valid metric");
        r.register(Box::new(passive_exhausted_total.clone()))
            .expect("unique metric");
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "ftpgate_backend_up",
                "1 when the backend passes its health checks.",
            ),
            &["backend"],
        )
        .expect("valid metric");
        r.register(Box::new(backend_up.clone()))
            .expect("unique metric");
        let health_check_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ftpgate_health_check_duration_seconds",
                "Time a successful health check took, from connect to its last expected reply (plain TCP pools: to the connect).",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["backend"],
        )
        .expect("valid metric");
        r.register(Box::new(health_check_seconds.clone()))
            .expect("unique metric");
        let reply_latency_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ftpgate_reply_latency_seconds",
                "Time a backend control reply spends inside ftpgate (read to written to the client).",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(reply_latency_seconds.clone()))
            .expect("unique metric");
        let user_lookup_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ftpgate_user_lookup_duration_seconds",
                "Time a request to the user lookup service took (timeouts included).",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(user_lookup_duration_seconds.clone()))
            .expect("unique metric");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let user_lookup_cache_hits_total = counter(
            "ftpgate_user_lookup_cache_hits_total",
            "Logins routed by a cached user lookup answer.",
        );
        let user_lookup_shared_total = counter(
            "ftpgate_user_lookup_shared_total",
            "Logins that shared a user lookup request already in flight.",
        );
        Metrics {
            sessions_total: counter_vec(
                &r,
                "ftpgate_sessions_total",
                "Ended client sessions.",
                &["listener", "backend", "outcome"],
            ),
            logins_total: counter_vec(
                &r,
                "ftpgate_logins_total",
                "Login attempts answered by the backend.",
                &["result"],
            ),
            transfers_total: counter_vec(
                &r,
                "ftpgate_transfers_total",
                "Finished data transfers.",
                &["direction", "mode", "outcome"],
            ),
            bytes_total: counter_vec(
                &r,
                "ftpgate_transfer_bytes_total",
                "Data-connection bytes relayed.",
                &["direction"],
            ),
            tcp_bytes_total: counter_vec(
                &r,
                "ftpgate_tcp_bytes_total",
                "Bytes relayed by plain TCP listeners.",
                &["listener", "direction"],
            ),
            data_refused_total: counter_vec(
                &r,
                "ftpgate_data_connections_refused_total",
                "Data connections and PORT/EPRT targets refused.",
                &["reason"],
            ),
            health_checks_total: counter_vec(
                &r,
                "ftpgate_health_checks_total",
                "Backend health checks.",
                &["backend", "result"],
            ),
            health_check_failures_total: counter_vec(
                &r,
                "ftpgate_health_check_failures_total",
                "Failed backend health checks, by reason.",
                &["backend", "reason"],
            ),
            limit_hits_total: counter_vec(
                &r,
                "ftpgate_limit_hits_total",
                "Connections or sessions stopped by a limit or a timeout.",
                &["limit"],
            ),
            reloads_total: counter_vec(
                &r,
                "ftpgate_config_reloads_total",
                "Configuration reloads (SIGHUP).",
                &["result"],
            ),
            tls_handshakes_total: counter_vec(
                &r,
                "ftpgate_tls_handshakes_total",
                "TLS handshakes ftpgate made or accepted.",
                &["side", "channel", "result"],
            ),
            backend_replies_dropped_total: counter_vec(
                &r,
                "ftpgate_backend_replies_dropped_total",
                "Backend replies not passed to the client, by reason.",
                &["reason"],
            ),
            transfers_cut_total: counter_vec(
                &r,
                "ftpgate_transfers_cut_total",
                "Transfers whose data did not reach its peer whole (data connections reset, no 2xx).",
                &["cause"],
            ),
            user_lookups_total: counter_vec(
                &r,
                "ftpgate_user_lookups_total",
                "Requests to the user lookup service, by outcome.",
                &["outcome"],
            ),
            client_input_discarded_total: counter_vec(
                &r,
                "ftpgate_client_input_discarded_total",
                "Client control input discarded without being acted on, by reason.",
                &["reason"],
            ),
            registry: r,
            user_lookup_duration_seconds,
            user_lookup_cache_hits_total,
            user_lookup_shared_total,
            sessions_active,
            passive_ports_in_use,
            passive_exhausted_total,
            backend_up,
            health_check_seconds,
            reply_latency_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Counts one hit of `limit`.
    pub fn limit_hit(&self, limit: &str) {
        self.limit_hits_total.with_label_values(&[limit]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.limit_hit("max_sessions");
        m.bytes_total.with_label_values(&["download"]).inc_by(42);
        let text = m.render();
        assert!(
            text.contains("ftpgate_limit_hits_total{limit=\"max_sessions\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ftpgate_transfer_bytes_total{direction=\"download\"} 42"),
            "{text}"
        );
    }
}
