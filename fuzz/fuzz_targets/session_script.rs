//! The whole control session: arbitrary interleavings of client lines,
//! backend replies, data-task reports, driver results and time, fed to
//! `proto::session::Control` by the simulation in `proto::session::script`,
//! with the fuzzer's bytes as every choice.
//!
//! Checks (after every step; see the `script` module): no panic; a
//! transfer's final reply never reaches the client before its data task
//! reported its end, and is a 2xx only for data that arrived whole; PORT/EPRT
//! toward the backend names only ftpgate's own listener; nothing sent after
//! AUTH TLS and before its handshake is acted on; every leased passive port
//! is released by the end of the session; replies reach the client in the
//! order of the commands they answer, and none nobody asked for (but a 421).

#![no_main]

use ftpgate::proto::session::script::{run, FromBytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = run(&mut FromBytes::new(data), 2_000) {
        panic!("{v}");
    }
});
