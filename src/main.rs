//! The ftpgate binary: parse flags, load the configuration, start logging,
//! bind, and serve until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ftpgate::cli::{Cli, Cmd};
use ftpgate::config::{validate, Config, LogFormat};
use tokio_util::sync::CancellationToken;

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    // Colours only on a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let check = matches!(cli.command, Some(Cmd::Check));
    let config = match cli.settings.raw_config().and_then(|raw| validate(&raw)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ftpgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        print!("{}", config.to_toml());
        eprintln!("ftpgate: configuration OK");
        return ExitCode::SUCCESS;
    }
    init_tracing(&config);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = describe(&e);
            tracing::error!("{message}");
            eprintln!("ftpgate: {message}");
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, each once (our errors already name their cause).
fn describe(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}

fn serve(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    rt.block_on(async move {
        let listeners = ftpgate::Listeners::bind(&config)?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(ftpgate::run(Arc::new(config), listeners, shutdown.clone()));
        shutdown_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
        server.await.context("server task failed")?;
        Ok(())
    })
}
