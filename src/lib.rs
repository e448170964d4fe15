//! ftpgate: an FTP-aware TCP proxy (application-layer gateway).
//!
//! Crate map:
//! - [`proto`]: the sans-IO FTP core: line framing, commands, replies,
//!   host-port forms and the PASV/EPSV/PORT/EPRT rewrites. No sockets, no clocks.
//! - [`session`]: one task per client; drives `proto` over the two control connections.
//! - [`data`]: the passive routing table (port leases keyed by port and client
//!   address), the data task joining client and backend legs, and the relay.
//! - [`backend`]: backend pools, selection policies, health checks.
//!   [`advertise`]: the address shown in 227 replies.
//! - [`gateway`]: gateway mode's pure parts: `USER name@host`, allow and deny lists.
//! - [`lookup`]: per-user routing by the operator's HTTP service (`user_lookup_url`):
//!   the URL template, the answer, the cache and its single flight.
//! - [`config`]: file and flags -> validated [`config::Config`]. [`cli`]: the flags.
//! - [`server`]: listeners and accept loops; [`Server`] serves, reloads and drains.
//! - [`sftp`]: SFTP backends: an in-process FTP server (the adapter) that
//!   serves a session from an SFTP server over SSH.
//! - [`tcp`]: plain TCP listeners (`[tcp.NAME]`, e.g. SFTP): the same pools,
//!   policies, limits and health checks (by TCP connect), bytes relayed as they are.
//! - [`error`]: session errors and the single error-to-reply mapping.
//! - [`net`]: role-typed addresses. [`rlimit`]: the open-files limit, raised at start.
//! - [`tls`]: rustls configurations toward clients and backends;
//!   [`client_cert`]: the names of a verified client certificate.

#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod advertise;
pub mod backend;
pub mod cli;
pub mod client_cert;
pub mod config;
pub mod data;
pub mod decimal;
pub mod error;
pub mod gateway;
pub mod limits;
pub mod live;
pub mod logline;
pub mod logtime;
pub mod lookup;
pub mod metrics;
pub mod net;
pub mod privileges;
pub mod proto;
pub mod rlimit;
pub mod server;
pub mod session;
pub mod sftp;
pub mod tcp;
pub mod tls;
pub mod xferlog;

pub use server::{BindError, Listeners, Server};
