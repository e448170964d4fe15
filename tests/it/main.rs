//! One integration-test binary for ftpgate (see docs/testing.md).
//!
//! `peers` starts real FTP servers; `clients` drives real FTP clients; the
//! other modules run a real ftpgate between them.

mod clients;
mod peers;
