//! The sans-IO FTP core: framing, parsing and rewriting over bytes and
//! addresses. Nothing in this module touches a socket or a clock; the
//! `session` and `data` modules drive it.

pub mod command;
pub mod hostport;
pub mod line;
pub mod proxy;
pub mod reply;
pub mod rewrite;
pub mod session;
pub mod upstream;
