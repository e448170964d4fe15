//! The effective configuration as TOML, as `ftpgate check` prints it:
//! [`Config::to_toml`]. The settings with their values after defaults,
//! unset optional keys as comments, never a secret (the password file's
//! path, not the password). Read back, it prints the same again (the tests
//! in `validate/tests.rs` check this). No I/O here: the caller prints.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    BackendDataMode, BackendSpec, BackendTlsMode, Config, LogFormat, ProxyVersion, TlsPolicy,
};

/// The first member of each configured name (a host name with several
/// addresses is written once).
fn by_name(specs: &[BackendSpec]) -> Vec<&BackendSpec> {
    let mut seen = std::collections::BTreeSet::new();
    specs.iter().filter(|b| seen.insert(&b.name)).collect()
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

impl Config {
    /// The effective configuration as TOML, as printed by `ftpgate check`.
    pub fn to_toml(&self) -> String {
        let list = |v: Vec<String>| {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut s = String::new();
        // Both may be unset (only [tcp.*] listeners; only named pools).
        if self.listen.is_empty() && self.serves_ftp() {
            s.push_str("# listen is not set\n");
        } else if self.listen.is_empty() {
            s.push_str("# listen is not set (no FTP listener)\n");
        }
        if self.backends.is_empty() {
            s.push_str("# backends is not set (no pool `default`)\n");
        }
        let mut kv = |k: &str, v: String| s.push_str(&format!("{k} = {v}\n"));
        if !self.listen.is_empty() {
            kv(
                "listen",
                list(self.listen.iter().map(|a| a.to_string()).collect()),
            );
        }
        if !self.backends.is_empty() {
            kv(
                "backends",
                list(
                    by_name(&self.backends)
                        .into_iter()
                        .map(|b| b.name.clone())
                        .collect(),
                ),
            );
        }
        kv(
            "public_address",
            format!("{:?}", self.public_address.to_string()),
        );
        kv(
            "public_address_refresh",
            format!("{:?}", fmt_duration(self.public_address_refresh)),
        );
        kv(
            "passive_ports",
            format!("\"{}-{}\"", self.passive_ports.0, self.passive_ports.1),
        );
        kv(
            "passive_bind_address",
            format!("{:?}", self.passive_bind_address.to_string()),
        );
        kv(
            "trust_backend_pasv_address",
            self.trust_backend_pasv_address.to_string(),
        );
        kv(
            "backend_data_networks",
            list(
                self.backend_data_networks
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
            ),
        );
        kv(
            "allow_foreign_data_address",
            self.allow_foreign_data_address.to_string(),
        );
        kv("active_mode", self.active_mode.to_string());
        kv("active_nat_fix", self.active_nat_fix.to_string());
        kv(
            "backend_data_mode",
            if self.backend_data_mode == BackendDataMode::Passive {
                "\"passive\""
            } else {
                "\"active\""
            }
            .into(),
        );
        kv(
            "active_source_port_20",
            self.active_source_port_20.to_string(),
        );
        for (k, d) in [
            ("pending_data_timeout", self.pending_data_timeout),
            ("data_connect_timeout", self.data_connect_timeout),
            ("data_stall_timeout", self.data_stall_timeout),
            ("greeting_timeout", self.greeting_timeout),
            ("login_timeout", self.login_timeout),
            ("idle_timeout", self.idle_timeout),
            ("backend_connect_timeout", self.backend_connect_timeout),
            ("backend_reply_timeout", self.backend_reply_timeout),
            ("tcp_keepalive", self.tcp_keepalive),
            ("shutdown_drain_timeout", self.shutdown_drain_timeout),
            ("login_failure_delay", self.login_failure_delay),
            ("health_check_interval", self.health_check_interval),
            (
                "health_check_fast_interval",
                self.health_check_fast_interval,
            ),
            ("health_check_timeout", self.health_check_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
            ("proxy_protocol_timeout", self.proxy_protocol_timeout),
        ] {
            kv(k, format!("{:?}", fmt_duration(d)));
        }
        kv("max_line_length", self.max_line_length.to_string());
        kv("relay_buffer_max", self.relay_buffer_max.to_string());
        kv(
            "log_format",
            if self.log_format == LogFormat::Json {
                "\"json\""
            } else {
                "\"text\""
            }
            .into(),
        );
        kv("log_level", format!("{:?}", self.log_level));
        for (k, n) in [
            ("max_sessions", self.max_sessions as u64),
            (
                "max_sessions_per_client",
                self.max_sessions_per_client as u64,
            ),
            (
                "max_connection_rate_per_client",
                self.max_connection_rate_per_client.into(),
            ),
            (
                "login_failures_before_delay",
                self.login_failures_before_delay.into(),
            ),
            ("max_login_failures", self.max_login_failures.into()),
            ("health_check_rise", self.health_check_rise.into()),
            ("health_check_fall", self.health_check_fall.into()),
        ] {
            kv(k, n.to_string());
        }
        kv("health_check", self.health_check.to_string());
        kv("health_check_tls", self.health_check_tls.to_string());
        kv(
            "tls",
            match self.tls {
                TlsPolicy::Off => "\"off\"",
                TlsPolicy::Optional => "\"optional\"",
                TlsPolicy::Required => "\"required\"",
            }
            .into(),
        );
        kv(
            "implicit_tls_listen",
            list(
                self.implicit_tls_listen
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
            ),
        );
        kv(
            "tls_require_data_resumption",
            self.tls_require_data_resumption.to_string(),
        );
        kv(
            "tls_min_version",
            if self.tls_min_version_13 {
                "\"1.3\""
            } else {
                "\"1.2\""
            }
            .into(),
        );
        kv(
            "backend_tls",
            match self.backend_tls {
                BackendTlsMode::Off => "\"off\"",
                BackendTlsMode::Explicit => "\"explicit\"",
                BackendTlsMode::Implicit => "\"implicit\"",
            }
            .into(),
        );
        kv(
            "backend_tls_verify",
            self.backend_tls_verify_flag.to_string(),
        );
        kv(
            "backend_tls_protect_data",
            self.backend_tls_protect_data.to_string(),
        );
        kv(
            "tls_client_auth",
            format!("\"{}\"", self.tls_client_auth.as_str()),
        );
        kv(
            "tls_client_cert_user",
            self.tls_client_cert_user.to_string(),
        );
        kv("tls_server_names", list(self.tls_server_names.clone()));
        kv(
            "xferlog_user",
            format!("\"{}\"", self.xferlog_user.as_str()),
        );
        kv(
            "proxy_protocol_listen",
            list(
                self.proxy_protocol_listen
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
            ),
        );
        kv(
            "proxy_protocol_from",
            list(
                self.proxy_protocol_from
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
            ),
        );
        kv("backend_policy", format!("\"{}\"", self.backend_policy));
        kv(
            "backend_drain",
            list(
                by_name(&self.backends)
                    .into_iter()
                    .filter(|b| b.drain)
                    .map(|b| b.name.clone())
                    .collect(),
            ),
        );
        kv(
            "backend_proxy_protocol",
            match self.backend_proxy_protocol {
                ProxyVersion::Off => "\"off\"",
                ProxyVersion::V1 => "\"v1\"",
                ProxyVersion::V2 => "\"v2\"",
            }
            .into(),
        );
        // Optional settings: shown commented out when unset.
        let mut opt = |k: &str, v: Option<String>| match v {
            Some(v) => s.push_str(&format!("{k} = {v:?}\n")),
            None => s.push_str(&format!("# {k} is not set\n")),
        };
        opt("admin_listen", self.admin_listen.map(|a| a.to_string()));
        opt(
            "xferlog",
            self.xferlog.as_ref().map(|p| p.display().to_string()),
        );
        opt("health_check_user", self.health_check_user.clone());
        // The file, never the password.
        opt(
            "health_check_password_file",
            self.health_check_password_file
                .as_ref()
                .map(|p| p.display().to_string()),
        );
        opt("user", self.user.clone());
        opt("group", self.group.clone());
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        opt("tls_cert", path(&self.tls_cert));
        opt("tls_key", path(&self.tls_key));
        let (ca, pin) = match &self.backend_tls_verify {
            crate::tls::BackendVerify::Ca(p) => (Some(p.display().to_string()), None),
            crate::tls::BackendVerify::Pinned(p) => (None, Some(p.display().to_string())),
            crate::tls::BackendVerify::None => (None, None),
        };
        opt("backend_tls_ca", ca);
        opt("backend_tls_pin", pin);
        opt("tls_client_ca", path(&self.tls_client_ca));
        let id = self.backend_tls_identity.as_ref();
        opt(
            "backend_tls_client_cert",
            id.map(|i| i.cert.display().to_string()),
        );
        opt(
            "backend_tls_client_key",
            id.map(|i| i.key.display().to_string()),
        );
        opt(
            "backend_tls_server_name",
            self.backend_tls_server_name.clone(),
        );
        opt("user_pool_default", self.user_pool_default.clone());
        opt("sftp_known_hosts", path(&self.sftp_known_hosts_file));
        opt(
            "backend_active_ports",
            self.backend_active_ports.map(|(a, b)| format!("{a}-{b}")),
        );
        let rules = |v: &[crate::gateway::Rule]| list(v.iter().map(|r| r.to_string()).collect());
        s.push_str(&format!(
            "backend_resolve_interval = {:?}\n",
            fmt_duration(self.backend_resolve_interval)
        ));
        s.push_str(&format!(
            "gateway_listen = {}\ngateway_allow = {}\ngateway_deny = {}\ngateway_resolve_timeout = {:?}\n",
            list(self.gateway_listen.iter().map(|a| a.to_string()).collect()),
            rules(&self.gateway.allow),
            rules(&self.gateway.deny),
            fmt_duration(self.gateway_resolve_timeout)
        ));
        match &self.user_lookup {
            None => s.push_str("# user_lookup_url is not set\n"),
            Some(l) => {
                s.push_str(&format!("user_lookup_url = {:?}\n", l.url.as_str()));
                for (k, d) in [
                    ("user_lookup_timeout", l.timeout),
                    ("user_lookup_cache_ttl", l.cache_ttl),
                    ("user_lookup_unknown_ttl", l.unknown_ttl),
                ] {
                    s.push_str(&format!("{k} = {:?}\n", fmt_duration(d)));
                }
                s.push_str(&format!(
                    "user_lookup_cache_size = {}\nuser_lookup_any_backend = {}\n",
                    l.cache_size, l.any_backend
                ));
                match &l.fallback_pool {
                    Some(p) => s.push_str(&format!("user_lookup_fallback_pool = {p:?}\n")),
                    None => s.push_str("# user_lookup_fallback_pool is not set\n"),
                }
                match &l.ca {
                    Some(p) => {
                        s.push_str(&format!("user_lookup_ca = {:?}\n", p.display().to_string()))
                    }
                    None => s.push_str("# user_lookup_ca is not set\n"),
                }
            }
        }
        let resolved: Vec<String> = self
            .backends
            .iter()
            .filter(|b| b.name != b.addr.to_string())
            .map(|b| format!("{} = {}", b.name, b.addr))
            .collect();
        if !resolved.is_empty() {
            s.push_str(&format!(
                "# backends resolved at start: {}\n",
                resolved.join(", ")
            ));
        }
        if by_name(&self.backends).into_iter().any(|b| b.weight != 1) {
            s.push_str("\n[backend_weights]\n");
            for b in by_name(&self.backends) {
                s.push_str(&format!("{:?} = {}\n", b.name, b.weight));
            }
        }
        if !self.tls_for_listener.is_empty() {
            s.push_str("\n[tls_for_listener]\n");
            for (a, p) in &self.tls_for_listener {
                s.push_str(&format!("\"{a}\" = \"{}\"\n", p.as_str()));
            }
        }
        for p in &self.pools {
            s.push_str(&format!("\n[pool.{}]\n", p.name));
            s.push_str(&format!("policy = \"{}\"\n", p.policy));
            s.push_str(&format!(
                "backends = {}\n",
                list(
                    by_name(&p.backends)
                        .into_iter()
                        .map(|b| b.name.clone())
                        .collect()
                )
            ));
            let drain: Vec<String> = by_name(&p.backends)
                .into_iter()
                .filter(|b| b.drain)
                .map(|b| b.name.clone())
                .collect();
            if !drain.is_empty() {
                s.push_str(&format!("drain = {}\n", list(drain)));
            }
            if by_name(&p.backends).into_iter().any(|b| b.weight != 1) {
                let w: Vec<String> = by_name(&p.backends)
                    .into_iter()
                    .map(|b| format!("{:?} = {}", b.name, b.weight))
                    .collect();
                s.push_str(&format!("weights = {{ {} }}\n", w.join(", ")));
            }
        }
        for t in &self.tcp {
            s.push_str(&format!("\n[tcp.{}]\n", t.name));
            s.push_str(&format!(
                "listen = {}\n",
                list(t.listen.iter().map(|a| a.to_string()).collect())
            ));
            s.push_str(&format!("pool = {:?}\n", t.pool));
        }
        if !self.pool_for_listener.is_empty() {
            s.push_str("\n[pool_for_listener]\n");
            for (a, p) in &self.pool_for_listener {
                s.push_str(&format!("\"{a}\" = {p:?}\n"));
            }
        }
        if !self.user_pool.is_empty() {
            s.push_str("\n[user_pool]\n");
            for (u, p) in &self.user_pool {
                s.push_str(&format!("{u:?} = {p:?}\n"));
            }
        }
        if !self.sftp_user_key.is_empty() {
            // The files, never the keys.
            s.push_str("\n[sftp_user_key]\n");
            for (u, k) in &self.sftp_user_key {
                s.push_str(&format!("{u:?} = {:?}\n", k.path.display().to_string()));
            }
        }
        if !self.public_address_for.is_empty() {
            s.push_str("\n[public_address_for]\n");
            for (net, a) in &self.public_address_for {
                s.push_str(&format!("\"{net}\" = \"{a}\"\n"));
            }
        }
        s
    }
}
