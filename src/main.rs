//! The ftpgate binary: parse flags, load the configuration, start logging,
//! bind, switch user if asked, and serve: SIGHUP reloads the configuration,
//! SIGTERM or SIGINT drains and stops (a second one stops at once).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ftpgate::cli::{Cli, Cmd, Settings};
use ftpgate::config::{validate, Config, LogFormat};
use tokio::signal::unix::{signal, SignalKind};

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // rustls warns about peers' harmless quirks (an IP address sent
        // as SNI by lftp): keep those out unless asked for.
        let quiet = if config.log_level.contains("rustls") {
            String::new()
        } else {
            ",rustls=error".to_owned()
        };
        tracing_subscriber::EnvFilter::new(format!("{}{quiet}", config.log_level))
    });
    // Colours only on a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_timer(ftpgate::logtime::UtcMicros)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder
            .event_format(ftpgate::logline::LogLine(ftpgate::logtime::UtcMicros))
            .fmt_fields(ftpgate::logline::LogFields)
            .init(),
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
    match serve(config, cli.settings) {
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

fn serve(config: Config, settings: Settings) -> anyhow::Result<()> {
    // Before binding: the passive range alone may need more than 1024 files.
    ftpgate::rlimit::raise_and_report(&config);
    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    rt.block_on(async move {
        let listeners = ftpgate::Listeners::bind(&config)?;
        // Everything privileged is open now: ports and the transfer log.
        if let Some(user) = &config.user {
            let (uid, gid) = ftpgate::privileges::drop_to(user, config.group.as_deref())?;
            tracing::info!(user = %user, uid, gid, "switched to an unprivileged user");
        }
        let server = ftpgate::Server::start(Arc::new(config), listeners).await;
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        loop {
            tokio::select! {
                _ = hup.recv() => reload(&server, &settings).await,
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        let drain = server.drain_timeout();
        tracing::info!(drain_timeout = ?drain, "shutting down: no new sessions; running transfers may finish (a second signal stops at once)");
        let stopper = Arc::clone(&server);
        let second = tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second signal: closing every session now");
            stopper.stop_now();
        });
        server.shutdown(drain).await;
        second.abort();
        Ok(())
    })
}

/// SIGHUP: read the file (and flags) again; apply it, or keep the running
/// configuration if it is invalid.
async fn reload(server: &ftpgate::Server, settings: &Settings) {
    tracing::info!("SIGHUP: reloading the configuration");
    match settings.raw_config().and_then(|raw| validate(&raw)) {
        Ok(config) => {
            server.reload(config).await;
        }
        Err(e) => {
            server.reload_failed();
            tracing::error!("reload rejected, keeping the running configuration: {e}");
        }
    }
}
