//! Logs as JSON lines (one event per line) with the span fields: function, request id,
//! room_name, uid, status, error key and duration.

pub fn init() {
    lambda_http::tracing::init_default_subscriber();
}
