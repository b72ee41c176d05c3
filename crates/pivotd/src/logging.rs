//! Logs: JSON lines (with the `call_id`, `account_id` and `node` of the call's span) when
//! stderr is not a terminal, human lines when it is — or as configured.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the process's subscriber; a second call (tests) keeps the first.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_env("PIVOT_LOG")
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if config.format.is_json(std::io::stderr().is_terminal()) {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already installed: keep the first subscriber.
    drop(result);
}
