//! API Gateway HTTP API (payload format 2.0) events, as API Gateway hands them to a function,
//! and the function's reply read back as an HTTP status and body.

use serde_json::{Map, Value, json};

/// One HTTP request as the gateway saw it, with the route it matched.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCall {
    pub method: String,
    /// The route as API Gateway knows it, e.g. `/api/rooms/{room_name}`.
    pub route: String,
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl HttpCall {
    pub fn new(method: &str, route: &str, path: &str) -> Self {
        HttpCall {
            method: method.to_owned(),
            route: route.to_owned(),
            path: path.to_owned(),
            query: String::new(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }

    pub fn bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("authorization".to_owned(), format!("Bearer {token}")));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn json(mut self, body: &Value) -> Self {
        self.headers
            .push(("content-type".to_owned(), "application/json".to_owned()));
        self.body = Some(body.to_string());
        self
    }
}

/// Values of the `{name}` segments of `route` in `path`; None when the path does not match.
pub fn path_parameters(route: &str, path: &str) -> Option<Vec<(String, String)>> {
    let want: Vec<&str> = route.trim_matches('/').split('/').collect();
    let have: Vec<&str> = path.trim_matches('/').split('/').collect();
    if want.len() != have.len() {
        return None;
    }
    let mut params = Vec::new();
    for (w, h) in want.iter().zip(&have) {
        match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(name) if !h.is_empty() => params.push((name.to_owned(), percent_decode(h))),
            Some(_) => return None,
            None if w == h => {}
            None => return None,
        }
    }
    Some(params)
}

/// API Gateway decodes path parameters; the harness only ever sends ASCII names.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_parameters(query: &str) -> Map<String, Value> {
    let mut map = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // API Gateway joins repeated keys with commas.
        let v = percent_decode(&v.replace('+', " "));
        let k = percent_decode(k);
        match map.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                map.insert(k, Value::String(v));
            }
        }
    }
    map
}

/// The payload-2.0 event for `call`; `request_id` is also the Lambda request id.
pub fn api_gateway_v2(call: &HttpCall, request_id: &str, epoch_ms: i64) -> Value {
    let route_key = format!("{} {}", call.method, call.route);
    let mut headers = Map::new();
    headers.insert("host".into(), "bench.execute-api.localhost".into());
    headers.insert("user-agent".into(), "call-bench".into());
    for (k, v) in &call.headers {
        headers.insert(k.to_ascii_lowercase(), Value::String(v.clone()));
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": call.path,
        "rawQueryString": call.query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.localhost",
            "domainPrefix": "bench",
            "http": {
                "method": call.method,
                "path": call.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "call-bench"
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Jan/2025:00:00:00 +0000",
            "timeEpoch": epoch_ms
        },
        "isBase64Encoded": false
    });
    if !call.query.is_empty() {
        event["queryStringParameters"] = Value::Object(query_parameters(&call.query));
    }
    if let Some(params) = path_parameters(&call.route, &call.path).filter(|p| !p.is_empty()) {
        let map: Map<String, Value> = params
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        event["pathParameters"] = Value::Object(map);
    }
    if let Some(body) = &call.body {
        event["body"] = Value::String(body.clone());
    }
    event
}

/// What a function answered to an HTTP API event.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// What a reply must be: 200 with `code` 0, or a refusal's status with, when named, the
/// `error` key of its body (409 alone could be any of several refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub status: u16,
    pub error: Option<&'static str>,
}

impl Expect {
    pub const OK: Expect = Expect {
        status: 200,
        error: None,
    };

    /// A refusal with this status and error key.
    pub const fn refused(status: u16, error: &'static str) -> Expect {
        Expect {
            status,
            error: Some(error),
        }
    }

    pub fn is_refusal(&self) -> bool {
        self.status != 200
    }

    pub fn matches(&self, status: u16, body: &[u8]) -> bool {
        if status != self.status {
            return false;
        }
        let body: Option<Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| body.as_ref().and_then(|v| v.get(name));
        if self.status == 200 {
            return field("code").and_then(Value::as_i64) == Some(0);
        }
        self.error
            .is_none_or(|key| field("error").and_then(Value::as_str) == Some(key))
    }
}

pub fn parse_reply(payload: &[u8]) -> Result<Reply, String> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("function reply is not JSON ({e}): {}", lossy(payload)))?;
    let status = value
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| format!("function reply has no statusCode: {}", lossy(payload)))?;
    if value.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        return Err("the harness does not expect base64 bodies".to_owned());
    }
    let body = value
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let headers = value
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Reply {
        status,
        body,
        headers,
    })
}

pub fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_follow_the_route() {
        let params = path_parameters("/api/rooms/{room_name}/status", "/api/rooms/r%201/status");
        assert_eq!(
            params,
            Some(vec![("room_name".to_owned(), "r 1".to_owned())])
        );
        assert_eq!(
            path_parameters("/api/rooms/{room_name}", "/api/rooms"),
            None
        );
        assert_eq!(path_parameters("/api/rooms", "/api/rooms"), Some(vec![]));
        assert_eq!(
            path_parameters("/api/rooms/{x}/end", "/api/rooms/a/invite"),
            None
        );
    }

    #[test]
    fn an_event_has_what_lambda_http_reads() {
        let call = HttpCall::new("GET", "/api/rooms/{room_name}", "/api/rooms/r1")
            .query("limit=5&uid=a+b")
            .bearer("tok");
        let event = api_gateway_v2(&call, "req-1", 1);
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "GET /api/rooms/{room_name}");
        assert_eq!(event["requestContext"]["http"]["method"], "GET");
        assert_eq!(event["requestContext"]["requestId"], "req-1");
        assert_eq!(event["pathParameters"]["room_name"], "r1");
        assert_eq!(event["queryStringParameters"]["uid"], "a b");
        assert_eq!(event["headers"]["authorization"], "Bearer tok");
        assert!(event.get("body").is_none());
    }

    #[test]
    fn a_body_is_sent_as_text() {
        let call = HttpCall::new("POST", "/api/rooms", "/api/rooms").json(&json!({"a": 1}));
        let event = api_gateway_v2(&call, "r", 1);
        assert_eq!(event["body"], "{\"a\":1}");
        assert_eq!(event["isBase64Encoded"], false);
        assert!(event.get("pathParameters").is_none());
    }

    #[test]
    fn replies_yield_status_and_body() {
        let reply = parse_reply(
            br#"{"statusCode":409,"headers":{"content-type":"application/json"},"body":"{\"code\":409}","isBase64Encoded":false}"#,
        )
        .expect("reply");
        assert_eq!(reply.status, 409);
        let body: Value = serde_json::from_str(&reply.body).expect("json");
        assert_eq!(body["code"], 409);
        assert!(parse_reply(b"{}").is_err());
        assert!(parse_reply(b"not json").is_err());
    }

    #[test]
    fn expectations_check_the_status_and_the_body() {
        let ok = br#"{"code":0,"msg":"Joined room","data":{}}"#;
        let full = br#"{"code":409,"msg":"Room is full","error":"room_full"}"#;
        assert!(Expect::OK.matches(200, ok));
        assert!(!Expect::OK.matches(200, full), "200 needs code 0");
        assert!(!Expect::OK.matches(409, full));
        let refused = Expect::refused(409, "room_full");
        assert!(refused.matches(409, full));
        assert!(refused.is_refusal() && !Expect::OK.is_refusal());
        let busy = br#"{"code":409,"error":"participant_in_call"}"#;
        assert!(
            !refused.matches(409, busy),
            "another refusal is not this one"
        );
        assert!(!refused.matches(200, ok));
        let any = Expect {
            status: 409,
            error: None,
        };
        assert!(any.matches(409, busy) && any.matches(409, full));
    }
}
