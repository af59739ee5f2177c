//! Logging: JSON lines for machines, readable text in a terminal. Every line emitted while a
//! request is handled carries that request's `request_id` (the span's field).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(settings: &LogSettings, to_stderr: bool) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|value| EnvFilter::try_new(value).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.level));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_span_events(FmtSpan::NONE).with_writer(
        move || -> Box<dyn std::io::Write> {
            if to_stderr { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) }
        },
    );
    let _ = if json {
        builder.json().with_current_span(true).with_span_list(false).flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
