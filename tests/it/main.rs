//! One integration-test binary for ftpgate (see docs/testing.md).
//!
//! `peers` starts real FTP servers; `clients` drives real FTP clients;
//! `gateway` runs a real ftpgate in-process. The other modules are the tests.

mod clients;
mod gateway;
mod peers;
mod cli;
mod hostile;
mod real_peers;
