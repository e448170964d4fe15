//! What a reload cannot change: settings bound or opened at start keep
//! their running values, and the reload says which changed.

use std::net::SocketAddr;

use crate::config::Config;

/// Settings a reload cannot change (they are bound or opened at start).
const RESTART_ONLY: &[&str] = &[
    "listen",
    "implicit_tls_listen",
    "proxy_protocol_listen",
    "gateway_listen",
    "passive_ports",
    "passive_bind_address",
    "allow_foreign_data_address",
    "admin_listen",
    "xferlog",
    "user",
    "group",
    "log_format",
    "log_level",
    "tcp",
];

/// The listen addresses of each `[tcp.NAME]` (its pool may change on reload).
fn tcp_listen(c: &Config) -> Vec<(&str, &[SocketAddr])> {
    c.tcp
        .iter()
        .map(|t| (t.name.as_str(), t.listen.as_slice()))
        .collect()
}

pub(super) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let changed = [
        old.listen != new.listen,
        old.implicit_tls_listen != new.implicit_tls_listen,
        old.proxy_protocol_listen != new.proxy_protocol_listen,
        old.gateway_listen != new.gateway_listen,
        old.passive_ports != new.passive_ports,
        old.passive_bind_address != new.passive_bind_address,
        old.allow_foreign_data_address != new.allow_foreign_data_address,
        old.admin_listen != new.admin_listen,
        old.xferlog != new.xferlog,
        old.user != new.user,
        old.group != new.group,
        old.log_format != new.log_format,
        old.log_level != new.log_level,
        tcp_listen(old) != tcp_listen(new),
    ];
    RESTART_ONLY
        .iter()
        .zip(changed)
        .filter_map(|(k, c)| c.then_some(*k))
        .collect()
}

/// Keeps the running values of the settings a reload cannot change.
pub(super) fn keep_restart_only(old: &Config, mut new: Config) -> Config {
    new.listen = old.listen.clone();
    new.implicit_tls_listen = old.implicit_tls_listen.clone();
    new.proxy_protocol_listen = old.proxy_protocol_listen.clone();
    new.gateway_listen = old.gateway_listen.clone();
    new.passive_ports = old.passive_ports;
    new.passive_bind_address = old.passive_bind_address;
    new.allow_foreign_data_address = old.allow_foreign_data_address;
    new.admin_listen = old.admin_listen;
    new.xferlog = old.xferlog.clone();
    new.user = old.user.clone();
    new.group = old.group.clone();
    new.log_format = old.log_format;
    new.log_level = old.log_level.clone();
    if tcp_listen(old) != tcp_listen(&new) {
        new.tcp = old.tcp.clone();
    }
    new
}
