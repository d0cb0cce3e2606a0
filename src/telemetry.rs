//! Logging and metrics set-up.
//!
//! Logs go to stderr, as text or JSON; `RUST_LOG` overrides the configured filter. Secrets are
//! kept out by type ([`crate::secret::Secret`] never formats its value), not by filtering.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    fmt,
    layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

use serde::Deserialize;

/// `[log]` of the config: kept here, with the filter parser, so the config depends on
/// logging and not the other way round.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    #[serde(default)]
    pub format: LogFormat,
    /// A log filter: a default level and `target=level` directives, e.g. `info,st2_matrix=debug`.
    /// `RUST_LOG` wins when set.
    #[serde(default = "default_filter")]
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            filter: default_filter(),
        }
    }
}

/// The filter when none is configured.
fn default_filter() -> String {
    "info".into()
}

/// Installs the global tracing subscriber. Later calls are ignored (tests build many apps).
///
/// The filter is a list of `target=level` directives ([`Targets`]: `info,st2_matrix=debug`);
/// `EnvFilter`'s span and field filters are not offered, as its regex engine alone was a tenth
/// of the binary and so of the idle memory.
pub fn init_logging(config: &LogConfig) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, env_error) = match from_env.as_deref().map(parse_filter) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (configured_filter(config), Some(e)),
        None => (configured_filter(config), None),
    };
    let _ = subscriber(config.format, filter).try_init();
    if let Some(e) = env_error {
        tracing::warn!(error.message = %e, "RUST_LOG is not a valid filter; using log.filter");
    }
}

/// The subscriber: lines in `format` on stderr, as `filter` says.
fn subscriber(format: LogFormat, filter: Targets) -> Box<dyn tracing::Subscriber + Send + Sync> {
    // Colours only on a terminal: escape codes in a log file make it hard to search.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // `fmt()` has a level filter of its own, `info` unless told otherwise, under the filter's:
    // without lifting it, `st2_matrix=debug` would let nothing below `info` through.
    let builder = fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_max_level(LevelFilter::TRACE);
    match format {
        LogFormat::Text => Box::new(builder.finish().with(filter)),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish().with(filter)),
    }
}

/// The crates of matrix-rust-sdk the bridge links for encryption. They log every key upload,
/// session and room key at info and debug (identifiers, never secrets, but one line per
/// message at debug): capped at `warn` unless the filter names them.
const QUIET_TARGETS: &[&str] = &[
    "matrix_sdk_crypto",
    "matrix_sdk_sqlite",
    "matrix_sdk_common",
    "matrix_sdk_base",
];

/// Parses a log filter: comma-separated `target=level` directives and a bare default level.
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    let mut targets = text.parse::<Targets>().map_err(|e| {
        format!("{e} in {text:?}: use comma-separated `level` or `target=level`, e.g. `info,st2_matrix=debug`")
    })?;
    let quiet = targets
        .default_level()
        .map_or(LevelFilter::WARN, |level| level.min(LevelFilter::WARN));
    for target in QUIET_TARGETS {
        if !text.contains(target) {
            targets = targets.with_target(*target, quiet);
        }
    }
    Ok(targets)
}

/// The configured filter; `Config::validate` has already checked it parses.
fn configured_filter(config: &LogConfig) -> Targets {
    parse_filter(&config.filter)
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; ours still renders then.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_encryption_crates_log_warnings_only_unless_named() {
        let info = parse_filter("info").unwrap();
        assert!(info.would_enable("st2_matrix", &Level::INFO));
        assert!(!info.would_enable("matrix_sdk_crypto::machine", &Level::INFO));
        assert!(info.would_enable("matrix_sdk_crypto", &Level::WARN));
        let error = parse_filter("error").unwrap();
        assert!(!error.would_enable("matrix_sdk_crypto", &Level::WARN));
        let named = parse_filter("info,matrix_sdk_crypto=debug").unwrap();
        assert!(named.would_enable("matrix_sdk_crypto", &Level::DEBUG));
    }

    #[test]
    fn a_debug_directive_lets_debug_lines_through() {
        let filter = parse_filter("warn,st2_matrix=debug").unwrap();
        tracing::subscriber::with_default(subscriber(LogFormat::Json, filter), || {
            assert!(tracing::enabled!(target: "st2_matrix::dispatch", Level::DEBUG));
            assert!(!tracing::enabled!(target: "st2_matrix::dispatch", Level::TRACE));
            assert!(!tracing::enabled!(target: "sqlx::query", Level::INFO));
        });
    }
}
