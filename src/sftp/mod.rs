//! SFTP backends: an in-process FTP server in front of an SFTP server.
//!
//! For a session routed to an `sftp://` member, `session::upstream`
//! connects to it over SSH (key exchange, host key checked against
//! `sftp_known_hosts`) and starts an adapter ([`adapter`]) on a loopback
//! port: to the rest of ftpgate it is an FTP backend like any other, so the
//! session core, the data path (passive and active modes, PROT P toward
//! clients, limits, metrics, the transfer log) work unchanged. The adapter
//! answers FTP commands from SFTP operations, logs in over SSH on `PASS`
//! and streams file data between its data connections and SFTP reads and
//! writes ([`transfer`]).
//!
//! The pure parts, no I/O: [`known_hosts`] (which host keys are trusted),
//! [`path`] (FTP arguments to SFTP paths), [`listing`] (`LIST`, `NLST`,
//! `MLSD`/`MLST`) and [`ascii`] (`TYPE A` line endings). [`ssh`] connects
//! and authenticates (sessions and health checks).

pub mod adapter;
pub mod ascii;
pub mod known_hosts;
pub mod listing;
pub mod path;
pub mod ssh;
mod transfer;

pub use known_hosts::KnownHosts;
