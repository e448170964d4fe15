//! One integration-test binary for ftpgate (see docs/testing.md).
//!
//! `peers` starts real FTP servers; `clients` drives real FTP clients;
//! `gateway` runs a real ftpgate in-process. The other modules are the tests.

mod balancing;
mod certs;
mod cli;
mod clients;
mod cut_transfers;
mod dns_pool;
mod ftps;
mod ftps_hostile;
mod gateway;
mod gateway_mode;
mod health_checks;
mod hostile;
mod hostile2;
mod kubernetes;
mod more_clients;
mod mtls;
mod nat;
mod netns;
mod operations;
mod ops_cli;
mod packaging;
mod peers;
mod proxy_protocol;
mod real_peers;
mod scaleout;
mod scripts;
mod sftp;
mod sftp_backend;
mod tls_rig;
mod unprivileged;
mod user_lookup;
mod user_routing;
