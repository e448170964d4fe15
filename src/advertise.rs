//! The address ftpgate advertises to each client in 227 replies.
//!
//! A fixed address, a hostname (resolved at start and every
//! `public_address_refresh`, like vsftpd's `pasv_addr_resolve`), or `auto`
//! (the local address the client connected to), chosen by the client's
//! network: VPN clients can get a private address while everyone else gets
//! the public one, from one process.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PublicAddressSpec};
use crate::net::{canonical_ip, PublicAddr};

#[derive(Debug)]
enum Entry {
    Auto,
    Fixed(IpAddr),
    Host {
        name: String,
        resolved: RwLock<Vec<IpAddr>>,
    },
}

impl Entry {
    fn new(spec: &PublicAddressSpec) -> Entry {
        match spec {
            PublicAddressSpec::Auto => Entry::Auto,
            PublicAddressSpec::Ip(ip) => Entry::Fixed(canonical_ip(*ip)),
            PublicAddressSpec::Host(name) => Entry::Host {
                name: name.clone(),
                resolved: RwLock::new(Vec::new()),
            },
        }
    }

    fn pick(&self, local: IpAddr, want_v4: bool) -> Option<IpAddr> {
        let ok = |ip: &IpAddr| !want_v4 || ip.is_ipv4();
        match self {
            Entry::Auto => Some(canonical_ip(local)).filter(ok),
            Entry::Fixed(ip) => Some(*ip).filter(ok),
            Entry::Host { resolved, .. } => {
                let r = resolved.read().unwrap_or_else(|p| p.into_inner());
                r.iter()
                    .copied()
                    .find(|ip| ip.is_ipv4())
                    .or_else(|| r.first().copied())
                    .filter(ok)
            }
        }
    }
}

/// Advertised addresses by client network.
#[derive(Debug)]
pub struct PublicAddresses {
    default: Entry,
    rules: Vec<(IpNet, Entry)>,
}

impl PublicAddresses {
    /// Builds the table and resolves its hostnames once.
    pub async fn new(config: &Config) -> Arc<PublicAddresses> {
        let p = Arc::new(PublicAddresses {
            default: Entry::new(&config.public_address),
            rules: config
                .public_address_for
                .iter()
                .map(|(n, s)| (*n, Entry::new(s)))
                .collect(),
        });
        p.refresh().await;
        p
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        std::iter::once(&self.default).chain(self.rules.iter().map(|(_, e)| e))
    }

    /// Resolves every hostname again; on failure the previous addresses stay.
    pub async fn refresh(&self) {
        for e in self.entries() {
            if let Entry::Host { name, resolved } = e {
                match tokio::net::lookup_host((name.as_str(), 0)).await {
                    Ok(addrs) => {
                        let mut ips: Vec<IpAddr> = addrs.map(|a| canonical_ip(a.ip())).collect();
                        ips.dedup();
                        let mut slot = resolved.write().unwrap_or_else(|p| p.into_inner());
                        if *slot != ips {
                            tracing::info!(host = %name, addresses = ?ips, "public address resolved");
                            *slot = ips;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(host = %name, error = %e, "cannot resolve public address; keeping the previous one")
                    }
                }
            }
        }
    }

    /// Re-resolves hostnames every `every` until cancelled.
    pub async fn refresh_loop(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        if !self.entries().any(|e| matches!(e, Entry::Host { .. })) {
            return;
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => self.refresh().await,
            }
        }
    }

    /// The address to advertise to `client`, who connected to `local`.
    /// `want_v4`: the reply is a 227, which can only carry IPv4.
    pub fn for_client(&self, client: IpAddr, local: IpAddr, want_v4: bool) -> Option<PublicAddr> {
        let client = canonical_ip(client);
        let entry = self
            .rules
            .iter()
            .find(|(net, _)| net.contains(&client))
            .map_or(&self.default, |(_, e)| e);
        entry.pick(local, want_v4).map(PublicAddr::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::parse_str;
    use crate::config::validate;

    #[tokio::test]
    async fn rules_by_client_network() {
        let raw = parse_str(
            std::path::Path::new("t"),
            "listen=[\"127.0.0.1:1\"]\nbackends=[\"127.0.0.1:2\"]\npublic_address=\"203.0.113.10\"\n[public_address_for]\n\"10.0.0.0/8\"=\"10.0.0.20\"\n\"192.168.0.0/16\"=\"auto\"\n",
        )
        .unwrap();
        let p = PublicAddresses::new(&validate(&raw).unwrap()).await;
        let local: IpAddr = "172.16.0.1".parse().unwrap();
        let get = |c: &str, v4| {
            p.for_client(c.parse().unwrap(), local, v4)
                .map(|a| a.ip().to_string())
        };
        assert_eq!(get("10.1.2.3", true).as_deref(), Some("10.0.0.20"));
        assert_eq!(get("::ffff:10.1.2.3", true).as_deref(), Some("10.0.0.20"));
        assert_eq!(get("198.51.100.1", true).as_deref(), Some("203.0.113.10"));
        assert_eq!(get("192.168.4.4", true).as_deref(), Some("172.16.0.1"));
        let p6 = p.for_client("192.168.4.4".parse().unwrap(), "::1".parse().unwrap(), true);
        assert_eq!(
            p6, None,
            "auto on an IPv6 listener has no IPv4 address for PASV"
        );
    }

    #[tokio::test]
    async fn hostnames_resolve() {
        let raw = parse_str(
            std::path::Path::new("t"),
            "listen=[\"127.0.0.1:1\"]\nbackends=[\"127.0.0.1:2\"]\npublic_address=\"localhost\"\n",
        )
        .unwrap();
        let p = PublicAddresses::new(&validate(&raw).unwrap()).await;
        let a = p
            .for_client(
                "198.51.100.1".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
                true,
            )
            .unwrap();
        assert!(a.ip().is_loopback());
    }
}
