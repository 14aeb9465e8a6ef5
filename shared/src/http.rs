//! Request parsing and the response envelope. `respond` is the one place that turns an
//! `ApiError` into status, envelope, error key and a log line.

use std::future::Future;
use std::time::{Duration, Instant};

use lambda_http::{Body, Error, Request, RequestExt, Response};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::error::ApiError;
use crate::i18n::Lang;
use crate::store::StoredReply;

pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A success: the envelope with a message in both languages, or a bare body (health). The
/// envelope's data is serialised once, straight to JSON text, not through a `Value` tree.
pub enum Success {
    Envelope {
        msg: msg::Pair,
        data: Box<RawValue>,
    },
    Bare {
        status: u16,
        body: Value,
    },
    /// An answer already rendered and stored with an Idempotency-Key; `replayed` when it is
    /// a retry's copy of the first answer.
    Stored {
        reply: StoredReply,
        replayed: bool,
    },
}

/// The seed's success envelope.
#[derive(Serialize)]
struct Envelope<'a> {
    code: u8,
    msg: &'a str,
    data: &'a RawValue,
}

/// Success messages; the seed's where it gives one.
pub mod msg {
    pub type Pair = (&'static str, &'static str);
    pub const ROOM_CREATED: Pair = ("房间创建成功", "Room created");
    pub const ROOM_FETCHED: Pair = ("获取房间信息成功", "Room fetched");
    pub const ROOMS_LISTED: Pair = ("获取房间列表成功", "Rooms listed");
    pub const ROOM_STATUS_UPDATED: Pair = ("更新房间状态成功", "Room status updated");
    pub const ROOM_ENDED: Pair = ("结束房间成功", "Room ended");
    pub const JOINED: Pair = ("加入房间成功", "Joined room");
    pub const LEFT: Pair = ("离开房间成功", "Left room");
    pub const PARTICIPANTS_LISTED: Pair = ("获取参与者列表成功", "Participants listed");
    pub const INVITED: Pair = ("邀请参与者成功", "Participants invited");
    pub const PARTICIPANT_STATUS_UPDATED: Pair =
        ("更新参与者状态成功", "Participant status updated");
    pub const WEBHOOK_HANDLED: Pair = ("事件已处理", "Event handled");
    pub const PARTICIPANT_REMOVED: Pair = ("移出参与者成功", "Participant removed");
    pub const RINGING_LISTED: Pair = ("获取来电成功", "Ringing calls listed");
    pub const CALLS_LISTED: Pair = ("获取通话记录成功", "Call history listed");
    pub const EVENTS_LISTED: Pair = ("获取事件列表成功", "Events listed");
    pub const EVENT_FETCHED: Pair = ("获取事件详情成功", "Event fetched");
    pub const EVENT_REDELIVERED: Pair = ("事件已重新投递", "Event redelivered");
    pub const ROOM_EVENTS_LISTED: Pair = ("获取房间事件成功", "Room events listed");
    pub const OVERVIEW_FETCHED: Pair = ("获取运行概况成功", "Overview fetched");
}

pub fn ok(msg: msg::Pair, data: impl Serialize) -> Result<Success, ApiError> {
    let data =
        serde_json::value::to_raw_value(&data).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Success::Envelope { msg, data })
}

/// A bare JSON body (health has no envelope in the seed).
pub fn bare(status: u16, body: Value) -> Success {
    Success::Bare { status, body }
}

/// How long a request may take before it answers 503 with Retry-After: at least 2 s inside the
/// API functions' Timeout in template.yaml (a test reads both), so a slow database shows as a
/// refusal to retry rather than as a Lambda timeout that API Gateway turns into a bare 503.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(8);

/// Runs a handler body inside a span with the function's name, then shapes and logs the reply
/// and records the request's metrics (printed once the invocation is over).
pub async fn respond<F>(
    function: &'static str,
    req: &Request,
    work: F,
) -> Result<Response<Body>, Error>
where
    F: Future<Output = Result<Success, ApiError>>,
{
    // Boxed: a future moved into another keeps its size twice (argument and state), and a
    // handler's is large, so wrapping it unboxed overflowed a 2 MB thread stack in debug builds.
    let answer = Box::pin(answer(function, req, work));
    crate::metrics::scope(function, answer).await
}

async fn answer<F>(function: &'static str, req: &Request, work: F) -> Result<Response<Body>, Error>
where
    F: Future<Output = Result<Success, ApiError>>,
{
    let lang = Lang::from_accept_language(header(req, "accept-language"));
    let started = Instant::now();
    let request_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        function,
        request_id,
        room_name = tracing::field::Empty,
        uid = tracing::field::Empty,
    );
    let outcome = match tokio::time::timeout(REQUEST_DEADLINE, work.instrument(span.clone())).await
    {
        Ok(outcome) => outcome,
        // Every database wait is bounded well inside this (crate::store::LOCK_WAIT and the
        // rest); this is the guarantee that the caller hears back before the function dies.
        Err(_) => Err(ApiError::ServiceUnavailable(format!(
            "the request did not finish within {} s",
            REQUEST_DEADLINE.as_secs()
        ))),
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _entered = span.enter();
    let mut replayed = false;
    let rendered = outcome.and_then(|success| {
        if let Success::Stored { replayed: true, .. } = success {
            replayed = true;
        }
        render(success, lang)
    });
    let (status, body, retry_after) = match rendered {
        Ok(StoredReply { status, body }) => {
            tracing::info!(status, elapsed_ms, replayed, "ok");
            crate::metrics::request(status, None, elapsed_ms);
            // A bare 503 (health with the database away) says when to look again, too.
            let retry_after =
                (status == 503).then_some(crate::error::SERVICE_UNAVAILABLE_RETRY_AFTER_SECS);
            (status, body, retry_after)
        }
        Err(err) => {
            let status = err.status();
            if status >= 500 {
                tracing::error!(status, key = err.key(), error = %err, elapsed_ms, "failed");
            } else {
                tracing::warn!(status, key = err.key(), elapsed_ms, "refused");
            }
            crate::metrics::request(status, Some(err.key()), elapsed_ms);
            (status, err.body(lang).to_string(), err.retry_after_secs())
        }
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8");
    if let Some(secs) = retry_after {
        response = response.header("retry-after", secs.to_string());
    }
    if replayed {
        response = response.header(crate::idempotency::REPLAYED_HEADER, "true");
    }
    Ok(response.body(Body::Text(body))?)
}

/// A success as its status and JSON text.
pub fn render(success: Success, lang: Lang) -> Result<StoredReply, ApiError> {
    match success {
        Success::Bare { status, body } => Ok(StoredReply {
            status,
            body: body.to_string(),
        }),
        Success::Stored { reply, .. } => Ok(reply),
        Success::Envelope { msg, data } => {
            let envelope = Envelope {
                code: 0,
                msg: lang.pick(msg.0, msg.1),
                data: &data,
            };
            let body =
                serde_json::to_string(&envelope).map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(StoredReply { status: 200, body })
        }
    }
}

/// Notes the room and uid a request concerns on its log span.
pub fn note(room_name: &str, uid: Option<&str>) {
    let span = tracing::Span::current();
    span.record("room_name", room_name);
    if let Some(uid) = uid {
        span.record("uid", uid);
    }
}

pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The body as JSON, whatever Content-Type says. Too large: 413; malformed or mistyped: 400.
pub fn parse_json<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("a JSON body is required"));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("body: {e}")))
}

/// A name taken from the path (`pattern` is the route, e.g. `/api/rooms/{room_name}/status`),
/// percent-decoded exactly once and checked against the input rules.
///
/// It is read from the request's URI path, which lambda_http always hands over
/// percent-encoded (it re-encodes the path API Gateway's HTTP API delivers decoded, and
/// keeps the encoded one `cargo lambda watch` delivers), so one decoding gives back exactly
/// the name a client encoded. pathParameters are not: they arrive decoded from API Gateway
/// and still encoded from the local router. An encoded `/` decodes into a name the input
/// rules refuse; bytes that are not UTF-8 are refused too.
pub fn path_param(req: &Request, pattern: &str, name: &str) -> Result<String, ApiError> {
    let value = match path_segment(req.uri().path(), pattern, name) {
        Some(encoded) => percent_decode_str(encoded)
            .decode_utf8()
            .map_err(|_| ApiError::invalid(format!("{name} is not UTF-8 once percent-decoded")))?
            .into_owned(),
        // A path that does not have the route's shape (never, behind our routes).
        None => req
            .path_parameters_ref()
            .and_then(|p| p.first(name))
            .ok_or_else(|| ApiError::invalid(format!("{name} is missing from the path")))?
            .to_owned(),
    };
    crate::validate::name(name, &value)?;
    Ok(value)
}

/// The still-encoded segment of `path` that `pattern` names `{name}`, matching the last
/// segments of `path` (a stage prefix may come first).
fn path_segment<'p>(path: &'p str, pattern: &str, name: &str) -> Option<&'p str> {
    let want: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let have: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let tail = have.get(have.len().checked_sub(want.len())?..)?;
    let mut found = None;
    for (w, h) in want.iter().zip(tail) {
        match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(param) if param == name => found = Some(*h),
            Some(_) => {}
            None if w == h => {}
            None => return None,
        }
    }
    found
}

/// A query-string parameter, from API Gateway's map or the URI.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    if let Some(v) = req
        .query_string_parameters_ref()
        .and_then(|q| q.first(name))
    {
        return Some(v.to_owned());
    }
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(k).decode_utf8().ok()?;
        (k == name).then(|| {
            let v = v.replace('+', " ");
            percent_decode_str(&v).decode_utf8_lossy().into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATTERN: &str = "/api/rooms/{room_name}/participants/{uid}/status";

    /// The API functions' Timeout in template.yaml: the Globals one, which no function with
    /// an HttpApi route may override.
    fn api_function_timeout() -> Duration {
        let template = include_str!("../../template.yaml");
        let globals = template
            .split_once("\nGlobals:\n  Function:\n")
            .expect("template.yaml has Globals: Function:")
            .1;
        let seconds = globals
            .lines()
            .take_while(|line| line.is_empty() || line.starts_with("    "))
            .find_map(|line| line.strip_prefix("    Timeout: "))
            .expect("Globals: Function: Timeout")
            .trim()
            .parse::<u64>()
            .expect("a whole number of seconds");
        let resources = template.split_once("\nResources:\n").expect("Resources").1;
        for block in resources
            .split("\n  ")
            .filter(|b| b.contains("Type: HttpApi\n"))
        {
            let name = block.lines().next().unwrap_or_default();
            let own = block.lines().find(|l| l.starts_with("      Timeout: "));
            assert_eq!(own, None, "{name} overrides the API functions' Timeout");
        }
        Duration::from_secs(seconds)
    }

    #[test]
    fn a_request_answers_at_least_two_seconds_before_the_function_times_out() {
        let timeout = api_function_timeout();
        assert!(
            REQUEST_DEADLINE + Duration::from_secs(2) <= timeout,
            "REQUEST_DEADLINE {REQUEST_DEADLINE:?} is not 2 s inside the template's {timeout:?}"
        );
    }

    #[test]
    fn the_sweeper_leaves_a_queued_livekit_call_to_its_request_until_that_request_is_over() {
        let timeout = api_function_timeout();
        let grace = crate::sweeper::INLINE_ATTEMPT_GRACE;
        assert!(
            grace >= timeout,
            "INLINE_ATTEMPT_GRACE {grace:?} ends before the template's {timeout:?}"
        );
    }

    #[test]
    fn one_attempt_of_every_database_wait_fits_the_request_deadline() {
        use crate::store::{ACQUIRE_TIMEOUT, LOCK_WAIT, RETRY_WINDOW, STATEMENT_TIMEOUT};
        // A lock wait ends the statement before the statement limit would.
        assert!(LOCK_WAIT < STATEMENT_TIMEOUT);
        // Connecting, then a last attempt begun just inside the retry window that runs
        // into the statement limit: the answer still comes from the database's own refusal.
        assert!(ACQUIRE_TIMEOUT + STATEMENT_TIMEOUT <= REQUEST_DEADLINE);
        assert!(ACQUIRE_TIMEOUT + RETRY_WINDOW + LOCK_WAIT <= REQUEST_DEADLINE);
    }

    fn request(path: &str) -> Request {
        http::Request::builder()
            .uri(path)
            .body(Body::Empty)
            .expect("request")
    }

    #[test]
    fn path_names_are_decoded_exactly_once() {
        let req = request("/api/rooms/caf%C3%A9_x/participants/%E5%BC%A0%E4%B8%89/status");
        assert_eq!(path_param(&req, PATTERN, "uid"), Ok("张三".to_owned()));
        assert_eq!(
            path_param(&req, PATTERN, "room_name"),
            Ok("café_x".to_owned())
        );
        // `%2541` is the name `%41`, not `A`.
        let req = request("/api/rooms/r%2541/participants/x'OR'1'%3D'1'--/status");
        assert_eq!(
            path_param(&req, PATTERN, "room_name"),
            Ok("r%41".to_owned())
        );
        assert_eq!(
            path_param(&req, PATTERN, "uid"),
            Ok("x'OR'1'='1'--".to_owned())
        );
    }

    #[test]
    fn encoded_slashes_and_invalid_utf8_are_invalid_parameters() {
        for path in [
            "/api/rooms/a%2Fb/participants/u1/status",
            "/api/rooms/%FF%FE/participants/u1/status",
            "/api/rooms/a%20b/participants/u1/status",
        ] {
            let err = path_param(&request(path), PATTERN, "room_name").expect_err(path);
            assert_eq!(err.key(), "invalid_parameters", "{path}");
        }
    }

    /// API Gateway hands a body that is not UTF-8 over base64-encoded (a binary body); it is
    /// refused as invalid JSON, never a 500.
    #[test]
    fn a_body_that_is_not_utf8_is_invalid_parameters() {
        let req = http::Request::builder()
            .uri("/api/rooms/r1/status")
            .body(Body::Binary(vec![0x17, 0x11, 0xff, b'{']))
            .expect("request");
        let err = parse_json::<Value>(&req).expect_err("not JSON");
        assert_eq!(err.key(), "invalid_parameters");
    }

    #[test]
    fn a_stage_prefix_is_ignored_and_other_routes_do_not_match() {
        let path = "/prod/api/rooms/r1/participants/u1/status";
        assert_eq!(path_segment(path, PATTERN, "uid"), Some("u1"));
        assert_eq!(path_segment("/api/rooms/r1/invite", PATTERN, "uid"), None);
        assert_eq!(path_segment("/status", PATTERN, "uid"), None);
    }
}
