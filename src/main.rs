//! `myriad`: parse the command line, load the configuration, install logging,
//! run the server, map errors to exit codes (0 ok, 1 runtime failure, 2 bad
//! configuration or usage).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use myriad::config::{Config, LogFormat, ServeFlags};
use myriad::server::{self, AppState, Listeners};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "myriad",
    version,
    about = "A WebSocket connection server speaking Phoenix Channels V2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (public listener + admin listener).
    Serve(Box<ServeFlags>),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a configuration: defaults < FILE < MYRIAD_* environment, as
    /// `serve` would load it. Reports every problem (each naming its key),
    /// warns about MYRIAD_* variables that are no setting, and tries to reach
    /// the broker.
    Check {
        /// The TOML file to check (none: defaults and environment only).
        file: Option<PathBuf>,
    },
    /// Print the configuration `serve` would run with (same flags), each key
    /// annotated with where its value came from; secrets redacted.
    Print(Box<ServeFlags>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(file.as_deref()),
        Command::Config {
            command: ConfigCommand::Print(flags),
        } => match Config::explain(flags.config.as_deref(), &flags) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                for line in err.each() {
                    eprintln!("myriad: configuration error: {line}");
                }
                ExitCode::from(2)
            }
        },
        Command::Serve(flags) => {
            let loaded =
                Config::load(flags.config.as_deref(), &flags).map_err(|e| e.each().join("\n"));
            let config = match loaded.and_then(check_keys) {
                Ok(config) => config,
                Err(err) => {
                    for line in err.lines() {
                        eprintln!("myriad: configuration error: {line}");
                    }
                    return ExitCode::from(2);
                }
            };
            init_logging(config.log_format);
            for warning in config.warnings() {
                tracing::warn!("configuration: {warning}");
            }
            let vars = std::env::vars_os().filter_map(|(k, v)| {
                Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))
            });
            for warning in myriad::config::keys::unknown_env(vars) {
                tracing::warn!("configuration: {warning}");
            }
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("myriad: {err:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // Panics are contained by the supervisor; route their message through
    // tracing so they land in the same log stream with a timestamp.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(location = %location, "panic: {message}");
    }));
}

/// `myriad config check [FILE]`: every problem on its own line (exit 2 when
/// there is one), warnings for settings that are valid but suspicious, for
/// unknown MYRIAD_* variables and for a broker that does not answer.
fn config_check(file: Option<&std::path::Path>) -> ExitCode {
    let name = file.map_or_else(
        || String::from("configuration"),
        |f| f.display().to_string(),
    );
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())));
    for warning in myriad::config::keys::unknown_env(vars) {
        eprintln!("{name}: warning: {warning}");
    }
    // Load without validating, so every check runs and reports.
    let config = match Config::load_unchecked(file) {
        Ok(config) => config,
        Err(err) => {
            for line in err.each() {
                eprintln!("{name}: error: {line}");
            }
            return ExitCode::from(2);
        }
    };
    let mut errors: Vec<String> = config.problems().iter().map(|e| e.to_string()).collect();
    if errors.is_empty() {
        if let Err(why) = check_keys(config.clone()) {
            errors.push(why);
        }
    }
    for warning in config.warnings() {
        eprintln!("{name}: warning: {warning}");
    }
    if let Ok(Some(url)) = config.resolved_broker_url() {
        if let Err(why) =
            myriad::pubsub::broker::reach::probe(&url, std::time::Duration::from_secs(2))
        {
            eprintln!("{name}: warning: broker {why}");
        }
    }
    if errors.is_empty() {
        println!("{name}: ok");
        return ExitCode::SUCCESS;
    }
    for line in &errors {
        eprintln!("{name}: error: {line}");
    }
    eprintln!("{name}: {} problem(s)", errors.len());
    ExitCode::from(2)
}

/// The connect-token keys and the broker's TLS and login files must load
/// (they exist and parse): checked here, with the configuration, so a bad
/// file is a configuration error (exit 2) and `config check` reports it too.
fn check_keys(config: Config) -> Result<Config, String> {
    if let Err(why) = myriad::auth::Authenticator::new(&config, Default::default()) {
        return Err(format!(
            "invalid value for `jwt_secret/jwt_public_key_file`: {why}"
        ));
    }
    if let Err(why) = myriad::pubsub::broker::security::LinkSecurity::load(&config) {
        return Err(format!("invalid broker TLS or login file: {why}"));
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        if let Err(why) = myriad::server::tls::acceptor(cert, key) {
            return Err(format!(
                "invalid value for `tls_cert_file/tls_key_file`: {why}"
            ));
        }
    }
    Ok(config)
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    myriad::server::fd_limit::raise_and_check(&config);
    let listeners = Listeners::bind(&config).await?;
    tracing::info!(
        public = %listeners.public_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %listeners.admin_addr().map(|a| a.to_string()).unwrap_or_default(),
        "myriad listening"
    );
    let state = AppState::new(Arc::new(config))?;
    server::run(listeners, state, shutdown)
        .await
        .context("server stopped with an error")
}

/// SIGTERM or SIGINT (Ctrl-C). The handlers are installed before this returns,
/// so a signal that arrives right after startup drains instead of killing the
/// process.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
