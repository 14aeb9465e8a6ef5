//! API Gateway HTTP API (payload v2) events for the handler tests, what the handlers answer,
//! and the few database reads the tests check state with.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use call_shared::App;
use call_shared::handlers;
use call_shared::store::DbPool;
use lambda_http::{Body, Request, Response};
use livekit_api::access_token::{Claims, TokenVerifier};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::common;

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// One HTTP API request as API Gateway hands it to a Lambda function.
#[derive(Debug, Clone)]
pub struct Event {
    method: String,
    raw_path: String,
    path_params: Option<Vec<(String, String)>>,
    query: String,
    body: Option<String>,
    base64: bool,
    headers: Vec<(String, String)>,
    stage: String,
}

/// The event builder in one call: `path_params` None leaves `pathParameters` out, as a
/// catch-all route (or the local router) does, so the handler must read the raw path.
pub fn event(
    method: &str,
    raw_path: &str,
    path_params: Option<&[(&str, &str)]>,
    body: Option<&str>,
    token: Option<&str>,
) -> Request {
    let mut ev = Event::new(method, raw_path);
    if let Some(params) = path_params {
        ev = ev.path_params(params);
    }
    if let Some(body) = body {
        ev = ev.body(body);
    }
    if let Some(token) = token {
        ev = ev.token(token);
    }
    ev.request()
}

impl Event {
    pub fn new(method: &str, raw_path: &str) -> Self {
        Event {
            method: method.to_owned(),
            raw_path: raw_path.to_owned(),
            path_params: None,
            query: String::new(),
            body: None,
            base64: false,
            headers: Vec::new(),
            stage: "$default".to_owned(),
        }
    }

    pub fn path_params(mut self, params: &[(&str, &str)]) -> Self {
        self.path_params = Some(
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }

    /// The raw query string, e.g. `limit=2&offset=0`.
    pub fn query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = Some(body.to_owned());
        self
    }

    pub fn json(self, body: &Value) -> Self {
        self.body(&body.to_string())
    }

    /// API Gateway's encoding of binary bodies: the body travels base64-encoded.
    pub fn base64_body(mut self) -> Self {
        self.base64 = true;
        self
    }

    pub fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// A named stage: API Gateway then puts `/{stage}` in front of the raw path.
    pub fn stage(mut self, stage: &str) -> Self {
        self.stage = stage.to_owned();
        self
    }

    /// The event as the JSON document Lambda receives.
    pub fn to_json(&self) -> Value {
        let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now();
        let host = "abc123.execute-api.eu-west-1.amazonaws.com";
        let body = self.body.as_ref().map(|b| {
            if self.base64 {
                base64::engine::general_purpose::STANDARD.encode(b.as_bytes())
            } else {
                b.clone()
            }
        });

        let mut headers = Map::new();
        for (k, v) in [
            ("accept", "*/*"),
            ("host", host),
            ("user-agent", "handler-tests/1.0"),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-proto", "https"),
        ] {
            headers.insert(k.to_owned(), json!(v));
        }
        if let Some(b) = &self.body {
            headers.insert("content-type".to_owned(), json!("application/json"));
            headers.insert("content-length".to_owned(), json!(b.len().to_string()));
        }
        for (k, v) in &self.headers {
            headers.insert(k.clone(), json!(v));
        }

        let route_key = match &self.path_params {
            Some(params) => format!("{} {}", self.method, self.route(params)),
            None => "$default".to_owned(),
        };

        let mut event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": self.raw_path,
            "rawQueryString": self.query,
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123",
                "domainName": host,
                "domainPrefix": "abc123",
                "http": {
                    "method": self.method,
                    "path": self.raw_path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "198.51.100.7",
                    "userAgent": "handler-tests/1.0"
                },
                "requestId": format!("req-{request_id}"),
                "routeKey": route_key,
                "stage": self.stage,
                "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
                "timeEpoch": now.timestamp_millis()
            },
            "isBase64Encoded": self.base64
        });
        if !self.query.is_empty() {
            event["queryStringParameters"] = query_map(&self.query);
        }
        if let Some(params) = &self.path_params {
            let map: Map<String, Value> =
                params.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            event["pathParameters"] = Value::Object(map);
        }
        if let Some(body) = body {
            event["body"] = json!(body);
        }
        event
    }

    pub fn request(&self) -> Request {
        let text = self.to_json().to_string();
        lambda_http::request::from_str(&text)
            .unwrap_or_else(|e| panic!("not an API Gateway v2 event ({e}): {text}"))
    }

    /// The route template: each raw-path segment holding a parameter's value becomes `{name}`.
    fn route(&self, params: &[(String, String)]) -> String {
        self.raw_path
            .split('/')
            .map(|segment| {
                let decoded = percent_decode_str(segment).decode_utf8_lossy();
                match params.iter().find(|(_, v)| *v == decoded) {
                    Some((name, _)) => format!("{{{name}}}"),
                    None => segment.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// API Gateway v2's decoded query map; repeated keys are joined with commas.
fn query_map(query: &str) -> Value {
    let mut map = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(k).decode_utf8_lossy().into_owned();
        let v = percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match map.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                map.insert(k, json!(v));
            }
        }
    }
    Value::Object(map)
}

/// A path segment as a client puts it on the wire.
pub fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, NON_ALPHANUMERIC).to_string()
}

/// What a handler answered, with its JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
}

/// A handler must answer every request with a response; an `Err` would be a 502 at the gateway.
#[track_caller]
pub fn reply(result: Result<Response<Body>, lambda_http::Error>) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(err) => panic!("handler returned an invocation error: {err}"),
    };
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let retry_after = header("retry-after");
    let bytes: &[u8] = response.body().as_ref();
    let body = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "response body is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    });
    Reply {
        status,
        body,
        content_type,
        retry_after,
    }
}

impl Reply {
    /// A success envelope with this message; returns `data`.
    #[track_caller]
    pub fn ok(&self, msg: &str) -> &Value {
        assert_eq!(self.status, 200, "expected 200, got {}", self.body);
        assert_eq!(self.body["code"], 0, "{}", self.body);
        assert_eq!(self.body["msg"], msg, "{}", self.body);
        assert!(self.body.get("data").is_some(), "no data: {}", self.body);
        &self.body["data"]
    }

    /// An error envelope: this status, `code` equal to it, this stable key and a message.
    #[track_caller]
    pub fn err(&self, status: u16, key: &str) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status} {key}, got {}",
            self.body
        );
        assert_eq!(self.body["code"], status, "{}", self.body);
        assert_eq!(self.body["error"], key, "{}", self.body);
        let msg = self.body["msg"].as_str().unwrap_or_default();
        assert!(!msg.is_empty(), "no readable msg: {}", self.body);
        &self.body
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

/// The endpoints as a client calls them through API Gateway, with `pathParameters` filled in.
pub struct Api<'a> {
    pub app: &'a App,
    pub lang: Option<&'a str>,
    /// Whether each answer is followed by the "nothing held" check.
    check_held: bool,
}

impl<'a> Api<'a> {
    pub fn new(app: &'a App) -> Self {
        Api {
            app,
            lang: None,
            check_held: true,
        }
    }

    /// No "nothing held" check after each answer: for a test that holds a lock of its own
    /// across requests on purpose.
    pub fn without_held_check(app: &'a App) -> Self {
        Api {
            check_held: false,
            ..Api::new(app)
        }
    }

    /// Every request carries `Accept-Language: <lang>`.
    pub fn in_language(app: &'a App, lang: &'a str) -> Self {
        Api {
            lang: Some(lang),
            ..Api::new(app)
        }
    }

    pub fn service(&self) -> String {
        common::service_token(self.app)
    }

    pub fn user(&self, uid: &str) -> String {
        common::user_token(self.app, uid)
    }

    fn ev(&self, method: &str, raw_path: &str, token: Option<&str>) -> Event {
        let mut ev = Event::new(method, raw_path);
        if let Some(token) = token {
            ev = ev.token(token);
        }
        if let Some(lang) = self.lang {
            ev = ev.header("accept-language", lang);
        }
        ev
    }

    /// The handler's answer; then, as another instance would, checks that the request left
    /// no transaction open and no row locked.
    async fn answered(
        &self,
        handler: impl std::future::Future<Output = Result<Response<Body>, lambda_http::Error>>,
    ) -> Reply {
        let answer = reply(handler.await);
        if self.check_held {
            common::assert_nothing_held(self.app.store.pool()).await;
        }
        answer
    }

    pub async fn health(&self) -> Reply {
        let req = self.ev("GET", "/health", None).request();
        self.answered(handlers::health(self.app, req)).await
    }

    pub async fn create(&self, token: &str, body: &Value) -> Reply {
        let req = self
            .ev("POST", "/api/rooms", Some(token))
            .json(body)
            .request();
        self.answered(handlers::create_room(self.app, req)).await
    }

    pub async fn get_room(&self, token: &str, room: &str) -> Reply {
        let req = self
            .ev("GET", &format!("/api/rooms/{}", encode(room)), Some(token))
            .path_params(&[("room_name", room)])
            .request();
        self.answered(handlers::get_room(self.app, req)).await
    }

    /// `query` is the raw query string, e.g. `limit=2&status=1`.
    pub async fn list_rooms(&self, token: &str, query: &str) -> Reply {
        let req = self
            .ev("GET", "/api/rooms", Some(token))
            .query(query)
            .request();
        self.answered(handlers::list_rooms(self.app, req)).await
    }

    pub async fn set_room_status(&self, token: &str, room: &str, status: i64) -> Reply {
        let req = self
            .ev(
                "PUT",
                &format!("/api/rooms/{}/status", encode(room)),
                Some(token),
            )
            .path_params(&[("room_name", room)])
            .json(&json!({ "status": status }))
            .request();
        self.answered(handlers::update_room_status(self.app, req))
            .await
    }

    pub async fn end(&self, token: &str, room: &str) -> Reply {
        let req = self
            .ev(
                "POST",
                &format!("/api/rooms/{}/end", encode(room)),
                Some(token),
            )
            .path_params(&[("room_name", room)])
            .request();
        self.answered(handlers::end_room(self.app, req)).await
    }

    pub async fn join(&self, token: &str, room: &str, uid: &str) -> Reply {
        let req = self
            .ev("POST", "/api/participants/join", Some(token))
            .json(&json!({ "room_name": room, "uid": uid }))
            .request();
        self.answered(handlers::join_room(self.app, req)).await
    }

    pub async fn leave(&self, token: &str, room: &str, uid: &str) -> Reply {
        let req = self
            .ev("POST", "/api/participants/leave", Some(token))
            .json(&json!({ "room_name": room, "uid": uid }))
            .request();
        self.answered(handlers::leave_room(self.app, req)).await
    }

    pub async fn participants(&self, token: &str, room: &str) -> Reply {
        let req = self
            .ev(
                "GET",
                &format!("/api/rooms/{}/participants", encode(room)),
                Some(token),
            )
            .path_params(&[("room_name", room)])
            .request();
        self.answered(handlers::list_participants(self.app, req))
            .await
    }

    pub async fn invite(&self, token: &str, room: &str, uids: &[&str]) -> Reply {
        let req = self
            .ev(
                "POST",
                &format!("/api/rooms/{}/invite", encode(room)),
                Some(token),
            )
            .path_params(&[("room_name", room)])
            .json(&json!({ "uids": uids }))
            .request();
        self.answered(handlers::invite_participants(self.app, req))
            .await
    }

    pub async fn set_participant_status(
        &self,
        token: &str,
        room: &str,
        uid: &str,
        status: i64,
    ) -> Reply {
        let req = self
            .ev(
                "PUT",
                &format!(
                    "/api/rooms/{}/participants/{}/status",
                    encode(room),
                    encode(uid)
                ),
                Some(token),
            )
            .path_params(&[("room_name", room), ("uid", uid)])
            .json(&json!({ "status": status }))
            .request();
        self.answered(handlers::update_participant_status(self.app, req))
            .await
    }

    pub async fn list_events(&self, token: &str, query: &str) -> Reply {
        let req = self
            .ev("GET", "/api/events", Some(token))
            .query(query)
            .request();
        self.answered(handlers::list_events(self.app, req)).await
    }

    pub async fn get_event(&self, token: &str, id: &str) -> Reply {
        let req = self
            .ev("GET", &format!("/api/events/{}", encode(id)), Some(token))
            .path_params(&[("id", id)])
            .request();
        self.answered(handlers::get_event(self.app, req)).await
    }

    pub async fn redeliver(&self, token: &str, id: &str) -> Reply {
        let req = self
            .ev(
                "POST",
                &format!("/api/events/{}/redeliver", encode(id)),
                Some(token),
            )
            .path_params(&[("id", id)])
            .request();
        self.answered(handlers::redeliver_event(self.app, req))
            .await
    }

    pub async fn room_events(&self, token: &str, room: &str) -> Reply {
        let req = self
            .ev(
                "GET",
                &format!("/api/rooms/{}/events", encode(room)),
                Some(token),
            )
            .path_params(&[("room_name", room)])
            .request();
        self.answered(handlers::room_events(self.app, req)).await
    }

    pub async fn overview(&self, token: &str, query: &str) -> Reply {
        let req = self
            .ev("GET", "/api/overview", Some(token))
            .query(query)
            .request();
        self.answered(handlers::call_overview(self.app, req)).await
    }

    /// Set-up: the service creates an invite-only video room for up to ten people.
    pub async fn open(&self, room: &str, creator: &str, uids: &[&str]) -> Value {
        self.open_with(json!({
            "room_name": room,
            "creator": creator,
            "call_type": 1,
            "invite_on": 1,
            "max_participants": 10,
            "uids": uids,
        }))
        .await
    }

    /// Set-up: the service creates a room from this body; returns `data`.
    pub async fn open_with(&self, body: Value) -> Value {
        let r = self.create(&self.service(), &body).await;
        assert_eq!(r.status, 200, "set-up create failed: {}", r.body);
        r.body["data"].clone()
    }

    /// Set-up: the service joins `uid`.
    pub async fn joined(&self, room: &str, uid: &str) {
        let r = self.join(&self.service(), room, uid).await;
        assert_eq!(r.status, 200, "set-up join failed: {}", r.body);
    }

    /// Set-up: the service ends the room.
    pub async fn ended(&self, room: &str) {
        let r = self.end(&self.service(), room).await;
        assert_eq!(r.status, 200, "set-up end failed: {}", r.body);
    }
}

/// A participant row as the database holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub status: i16,
    pub join_time: i64,
    pub leave_time: i64,
}

pub async fn participant(pool: &DbPool, room: &str, uid: &str) -> Option<Row> {
    let row: Option<(i64, i16, i64, i64)> = sqlx::query_as(
        "SELECT id, status, join_time, leave_time FROM call_participant \
         WHERE room_name = ? AND uid = ?",
    )
    .bind(room)
    .bind(uid)
    .fetch_optional(pool)
    .await
    .expect("read call_participant");
    row.map(|(id, status, join_time, leave_time)| Row {
        id,
        status,
        join_time,
        leave_time,
    })
}

/// The participant's status, None when it has no row.
pub async fn status_of(pool: &DbPool, room: &str, uid: &str) -> Option<i16> {
    participant(pool, room, uid).await.map(|r| r.status)
}

pub async fn room_status(pool: &DbPool, room: &str) -> Option<i16> {
    sqlx::query_scalar("SELECT status FROM call_room WHERE room_name = ?")
        .bind(room)
        .fetch_optional(pool)
        .await
        .expect("read call_room")
}

pub async fn room_count(pool: &DbPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM call_room")
        .fetch_one(pool)
        .await
        .expect("count call_room")
}

pub async fn participant_count(pool: &DbPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM call_participant")
        .fetch_one(pool)
        .await
        .expect("count call_participant")
}

/// The claims of a LiveKit token, verified with the test key pair.
#[track_caller]
pub fn livekit_claims(token: &Value) -> Claims {
    let token = token.as_str().expect("token is a string");
    TokenVerifier::with_api_key(common::LIVEKIT_KEY, common::LIVEKIT_SECRET)
        .verify(token)
        .unwrap_or_else(|e| panic!("LiveKit token does not verify: {e}"))
}

/// A name no other test (or earlier run) uses: for state outside the per-test database, such
/// as Redis keys.
pub fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes.iter().fold(format!("{prefix}_"), |mut name, b| {
        name.push_str(&format!("{b:02x}"));
        name
    })
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `2024-01-15T10:30:00Z`: RFC 3339, UTC, as the seed shows timestamps.
#[track_caller]
pub fn assert_rfc3339_utc(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    assert!(text.ends_with('Z'), "not UTC: {text}");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"));
}
