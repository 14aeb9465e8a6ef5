//! Logs as JSON lines (one event per line) when Lambda's log format is JSON
//! (`AWS_LAMBDA_LOG_FORMAT`, set by the template's LoggingConfig), plain text otherwise (the
//! local main job). A line carries the request span's fields (function, request id,
//! room_name, uid) with the event's (status, error key, duration), but not the list of
//! enclosing spans: that would repeat lambda_runtime's own span on every line and was the
//! largest part of the per-request logging cost.
//!
//! Metrics: `METRICS_ENABLED` (see [`crate::config::metrics_enabled`]).
//!
//! Level: `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO, as lambda_runtime's default
//! subscriber reads them.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|level| level.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    // Metrics (EMF) are JSON log lines: printed with JSON logs only (the template's setting),
    // unless METRICS_ENABLED switches them off. A typo stops the function here, as any
    // malformed setting does, rather than silently keeping or dropping the metrics.
    let metrics = crate::config::metrics_enabled(std::env::var("METRICS_ENABLED").ok().as_deref())
        .unwrap_or_else(|err| panic!("{err}"));
    crate::metrics::set_enabled(json && metrics);
    // A second call (several functions in one test process) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber(json, filter, std::io::stdout));
}

fn subscriber<W>(json: bool, filter: EnvFilter, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        Box::new(fmt.json().with_span_list(false).finish())
    } else {
        Box::new(fmt.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn a_json_line_carries_the_request_span_fields_without_the_span_list() {
        let buffer = Buffer::default();
        let subscriber = subscriber(true, EnvFilter::new("info"), buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _outer = outer.enter();
            let span = tracing::info_span!("request", function = "get-room", request_id = "req-1");
            let _span = span.enter();
            tracing::info!(status = 200, elapsed_ms = 1.5, "ok");
            tracing::debug!("below the level");
        });
        let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: Value = serde_json::from_str(lines[0]).expect("one JSON object per line");
        assert_eq!(line["fields"]["status"], 200);
        assert_eq!(line["fields"]["elapsed_ms"], 1.5);
        assert_eq!(line["span"]["request_id"], "req-1");
        assert_eq!(line["span"]["function"], "get-room");
        assert!(line.get("spans").is_none(), "{line}");
    }
}
