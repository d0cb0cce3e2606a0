//! The command line: `run` (the default), `generate-registration`, `check-config`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{config::Config, registration, startup::App, telemetry};

/// StackStorm ChatOps for Matrix: an application service that runs StackStorm action-alias
/// commands typed in Matrix rooms.
#[derive(Debug, Parser)]
#[command(name = "st2-matrix", version, propagate_version = true)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "config.toml",
        env = "ST2_MATRIX_CONFIG"
    )]
    pub config: PathBuf,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge.
    Run,
    /// Write a registration file for the homeserver, with fresh random tokens.
    GenerateRegistration {
        /// Where to write it (default: `appservice.registration` from the config).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Overwrite an existing file (the homeserver must then be given the new one).
        #[arg(long)]
        force: bool,
    },
    /// Check the config and the registration file, and say what is wrong.
    CheckConfig,
    /// Show how StackStorm would parse a command with an alias format, like
    /// `st2 action-alias test`: prints the parameters as JSON (exit 0), or why the command does
    /// not match (exit 1), or why the format is invalid (exit 2).
    ParseAlias {
        /// The alias format, e.g. 'run {{cmd}} on {{hosts=localhost}}'.
        #[arg(long)]
        format: String,
        /// Treat the format as `match_multiple`: print a JSON list, one object per match.
        #[arg(long)]
        multiple: bool,
        /// The command as typed, without the bot prefix.
        command: String,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::GenerateRegistration { output, force } => {
            generate_registration(&cli.config, output, force)
        }
        Command::CheckConfig => check_config(&cli.config),
        Command::ParseAlias {
            format,
            multiple,
            command,
        } => {
            return crate::parse_alias::parse_alias_cli(&format, &command, multiple);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("st2-matrix: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate_registration(
    config_path: &std::path::Path,
    output: Option<PathBuf>,
    force: bool,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let output = output.unwrap_or_else(|| config.resolve(&config.appservice.registration));
    let registration = registration::generate(&config);
    registration::write(&registration, &output, force, config.encryption.enabled)?;
    println!(
        "Wrote {}. Add it to the homeserver (Synapse: app_service_config_files in homeserver.yaml) and restart it.",
        output.display()
    );
    Ok(())
}

fn check_config(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let path = config.resolve(&config.appservice.registration);
    let registration = registration::load(&path)?;
    registration::validate(&registration, &config, &path)?;
    if config.encryption.enabled {
        let missing = registration::missing_for_encryption(&path)?;
        if !missing.is_empty() {
            anyhow::bail!(
                "{} lacks what encryption needs ([encryption] enabled): add {} to it (or run \
                 generate-registration --force), restart the homeserver, and make sure its \
                 homeserver.yaml has experimental_features: {{msc2409_to_device_messages_enabled: \
                 true, msc3202_transaction_extensions: true}}. Or set [encryption] enabled = false.",
                path.display(),
                missing.join(" and ")
            );
        }
    }
    println!(
        "{} and {} are valid.",
        config_path.display(),
        path.display()
    );
    Ok(())
}

fn run(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let path = config.resolve(&config.appservice.registration);
    let registration = registration::load(&path)?;
    registration::validate(&registration, &config, &path)?;
    telemetry::init_logging(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Two workers: the bridge is I/O-bound, and fewer threads keep idle memory small.
        .worker_threads(2)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let bind = config.appservice.bind;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind} (appservice.bind)"))?;
        let app = App::build(config, registration, listener).await?;
        app.run_until_stopped(shutdown_signal()).await
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error.message = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error.message = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_is_the_default_and_flags_parse() {
        let cli = Cli::try_parse_from(["st2-matrix"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.config, PathBuf::from("config.toml"));
        let cli = Cli::try_parse_from([
            "st2-matrix",
            "generate-registration",
            "--config",
            "c.toml",
            "-o",
            "r.yaml",
            "--force",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::GenerateRegistration { force: true, .. })
        ));
    }
}
