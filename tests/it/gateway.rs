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
use ftpgate::{BindError, Listeners, Server};
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
    /// The admin listener, when `admin_listen` was given.
    pub admin: Option<SocketAddr>,
    server: Arc<Server>,
    runtime: tokio::runtime::Handle,
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
        let mut text = format!("listen = [\"{listen}\"]\n");
        // No addresses: `extra` names the backends (host names, pools).
        if !backends.is_empty() {
            text.push_str(&format!(
                "backends = [{}]\n",
                backends
                    .iter()
                    .map(|b| format!("\"{b}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !has_public {
            text.push_str("public_address = \"127.0.0.1\"\n");
        }
        if !fixed_range {
            text.push_str(&format!("passive_ports = \"{}-{}\"\n", base, base + 19));
        }
        // Scripted fake backends would take a health check for a client.
        if !extra.contains("health_check") {
            text.push_str("health_check = false\n");
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
            let handle = rt.handle().clone();
            rt.block_on(async move {
                match Listeners::bind(&c2) {
                    Ok(l) => {
                        let addr = l.control_addrs()[0];
                        let admin = l.admin_addr();
                        let server = Server::start(c2, l).await;
                        let _ = tx.send(Ok((addr, admin, Arc::clone(&server), handle)));
                        cancel2.cancelled().await;
                        server.shutdown(std::time::Duration::ZERO).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        match rx.recv().expect("gateway thread died") {
            Ok((addr, admin, server, runtime)) => {
                return Gateway {
                    addr,
                    passive_ports: config.passive_ports,
                    config,
                    admin,
                    server,
                    runtime,
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
    /// The running server (metrics, reload, drain).
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Reloads with `text` as the whole new config file (as SIGHUP would);
    /// `Err` is the validation error, and the old configuration stays.
    pub fn reload(&self, text: &str) -> Result<ftpgate::server::ReloadReport, String> {
        let raw = parse_str(Path::new("test-config.toml"), text).map_err(|e| {
            self.server.reload_failed();
            e.to_string()
        })?;
        match validate(&raw) {
            Ok(c) => Ok(self.runtime.block_on(self.server.reload(c))),
            Err(e) => {
                self.server.reload_failed();
                Err(e.to_string())
            }
        }
    }

    /// Starts a graceful shutdown with `drain` and returns at once; the
    /// gateway stops when its sessions are done (or the drain ends).
    pub fn begin_shutdown(&self, drain: std::time::Duration) {
        let server = Arc::clone(&self.server);
        self.runtime
            .spawn(async move { server.shutdown(drain).await });
    }

    /// The metrics text, as /metrics serves it.
    pub fn metrics(&self) -> String {
        self.server.metrics().render()
    }

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
