//! Log lines on stderr: env_logger's text, or one JSON object per line
//! (`--log-format json`), for a log shipper to read without parsing text.

use std::io::Write;

use crate::node_config::LogFormat;

/// Installs the logger: `RUST_LOG` if set, else `default_level`.
pub fn init(default_level: &str, format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            // serde_json escapes the message: quotes, newlines, control bytes.
            let line = serde_json::json!({
                "timestamp": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}
