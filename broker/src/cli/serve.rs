//! `strata serve`: the daemon.

use std::io::IsTerminal;
use std::path::PathBuf;

use strata::config::{Config, LogFormat};
use strata::node::Node;
use strata::server::GrpcListener;
use tokio::net::TcpListener;

use super::CliError;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (built-in defaults without one).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format (overrides logging.format).
    #[arg(long, value_parser = ["human", "json"])]
    log_format: Option<String>,
}

fn init_logging(config: &Config) -> Result<(), CliError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.logging.level)
        .map_err(|e| format!("logging.level = {:?}: {e}", config.logging.level))?;
    // Never fails, never blocks (see `strata::logging`); panics too.
    strata::logging::install_panic_hook();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(strata::logging::LossyStderr::get())
        .log_internal_errors(false);
    match config.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    }
    .map_err(|e| format!("cannot set up logging: {e}").into())
}

/// Resolves when SIGINT or SIGTERM arrives. The handlers are installed
/// here, at once, not when the future is first polled: a signal that comes
/// while the broker is still starting stops it cleanly too, rather than
/// killing it with the default action.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot listen for SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = dir;
    }
    if let Some(format) = args.log_format {
        config.logging.format = if format == "json" { LogFormat::Json } else { LogFormat::Human };
    }
    config.validate()?;
    init_logging(&config)?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.to_toml().replace('\n', " "), "starting strata");

    // Bound before the data directory is opened: a port in use changes nothing on disk.
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let stop = stop_signal()?;
    let node = Node::open(config).await?;
    node.run(vec![Box::new(GrpcListener::new(listener))], stop).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
