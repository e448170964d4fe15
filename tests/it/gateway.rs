//! Runs a real ftpgate inside the test process, on its own runtime thread.
//!
//! Each test gets its own instance on 127.0.0.1:0 (or another listen
//! address) with a passive range found free at start, and cancels it on drop.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{mpsc, Arc, Once};
use std::thread::JoinHandle;

use ftpgate::config::{file::parse_str, validate, Config};
use ftpgate::{BindError, Listeners};
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// A running ftpgate.
pub struct Gateway {
    /// The control listener.
    pub addr: SocketAddr,
    /// The passive range it bound.
    pub passive_ports: (u16, u16),
    /// The validated configuration it runs with.
    pub config: Arc<Config>,
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // RUST_LOG=ftpgate=debug cargo test ... shows the gateway's logs.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Starts ftpgate on 127.0.0.1:0 in front of `backends`, advertising
/// 127.0.0.1, with `extra` TOML lines (any key of the config file).
pub fn start(backends: &[SocketAddr], extra: &str) -> Gateway {
    start_on("127.0.0.1:0", backends, extra)
}

/// As [`start`], listening on `listen`.
pub fn start_on(listen: &str, backends: &[SocketAddr], extra: &str) -> Gateway {
    init_logs();
    let fixed_range = extra
        .lines()
        .any(|l| l.trim_start().starts_with("passive_ports"));
    let has_public = extra.lines().any(|l| {
        l.trim_start().starts_with("public_address ")
            || l.trim_start().starts_with("public_address=")
    });
    for _attempt in 0..50 {
        let base: u16 = rand::thread_rng().gen_range(10_000..30_000);
        let mut text = format!(
            "listen = [\"{listen}\"]\nbackends = [{}]\n",
            backends
                .iter()
                .map(|b| format!("\"{b}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !has_public {
            text.push_str("public_address = \"127.0.0.1\"\n");
        }
        if !fixed_range {
            text.push_str(&format!("passive_ports = \"{}-{}\"\n", base, base + 19));
        }
        // Tables must come last in TOML: put bare keys before `extra`.
        text.push_str(extra);
        text.push('\n');
        let raw = parse_str(Path::new("test-config.toml"), &text)
            .unwrap_or_else(|e| panic!("bad test config: {e}\n{text}"));
        let config =
            Arc::new(validate(&raw).unwrap_or_else(|e| panic!("invalid test config: {e}\n{text}")));
        let (tx, rx) = mpsc::channel();
        let cancel = CancellationToken::new();
        let (c2, cancel2) = (Arc::clone(&config), cancel.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                match Listeners::bind(&c2) {
                    Ok(l) => {
                        let _ = tx.send(Ok(l.control_addrs()[0]));
                        ftpgate::run(c2, l, cancel2).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        match rx.recv().expect("gateway thread died") {
            Ok(addr) => {
                return Gateway {
                    addr,
                    passive_ports: config.passive_ports,
                    config,
                    cancel,
                    thread: Some(thread),
                };
            }
            Err(BindError::Passive { .. }) if !fixed_range => {
                let _ = thread.join();
                continue;
            }
            Err(e) => panic!("cannot start ftpgate: {e}"),
        }
    }
    panic!("no free passive range found in 50 attempts");
}

impl Gateway {
    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Whether `port` is in this gateway's passive range.
    pub fn owns_passive_port(&self, port: u16) -> bool {
        (self.passive_ports.0..=self.passive_ports.1).contains(&port)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
