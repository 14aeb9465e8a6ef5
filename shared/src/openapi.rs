//! The API contract as an OpenAPI 3.1 document, generated from the handlers' own request and
//! response types and their `#[utoipa::path]` annotations, so the two cannot drift apart.
//!
//! What every operation shares is added here in one place rather than on each handler: the
//! success envelope around each `data`, the error body with its stable keys, the statuses
//! that any operation of a kind can answer (400, 401, 403, 413, 500, 503) and the bearer
//! scheme. Only the api-docs function calls [`document`], so no other binary carries it.

use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use crate::error::ApiError;
use crate::model::{EndReason, EventType, ParticipantStatus, Reason, RoomStatus};
use crate::validate;

/// The input rule of room_name and uid (validate::name) as a pattern: no whitespace, no
/// control character, no `/`, and not `.` or `..`.
pub const NAME_PATTERN: &str = r"^(?!\.\.?$)[^\s/\x00-\x1f\x7f-\x9f]+$";

const SECURITY_DESCRIPTION: &str = "A JWT signed with the service's HS256 secret, in \
`Authorization: Bearer <token>`. A **service token** (claim `role: \"service\"`) is the app \
backend's: it may act for any uid and read every room. A **user token** (`sub` is the uid) acts \
only as itself: it reads the rooms it is in, creates rooms as their creator, joins and leaves as \
itself, manages (status, end, invite, remove) the rooms it created, and reads only its own \
ringing calls and history; anything else is 403 `forbidden`. The events feed is for service \
tokens only.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Call rooms",
        description = "One-to-one and group voice/video calls on LiveKit: rooms, participants, \
their lifecycle, call records and the business events an app backend acts on.\n\n\
Every answer but `/health` and the documentation is the envelope `{code, msg, data}`: `code` \
is 0 on success; on failure it is the HTTP status, `error` is a stable key to branch on and \
`msg` a readable message (Chinese by default, English with `Accept-Language: en`).",
        version = env!("CARGO_PKG_VERSION"),
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::handlers::health::health,
        crate::handlers::rooms::create_room,
        crate::handlers::rooms::list_rooms,
        crate::handlers::rooms::get_room,
        crate::handlers::rooms::update_room_status,
        crate::handlers::rooms::end_room,
        crate::handlers::participants::join_room,
        crate::handlers::participants::leave_room,
        crate::handlers::participants::list_participants,
        crate::handlers::participants::invite_participants,
        crate::handlers::participants::update_participant_status,
        crate::handlers::participants::remove_participant,
        crate::handlers::users::user_ringing,
        crate::handlers::users::user_calls,
        crate::handlers::webhook::livekit_webhook,
        crate::handlers::events::list_events,
        crate::handlers::events::get_event,
        crate::handlers::events::redeliver_event,
        crate::handlers::events::room_events,
        crate::handlers::overview::call_overview,
        crate::handlers::docs::openapi_json,
        crate::handlers::docs::docs_page,
        crate::handlers::docs::docs_asset,
        crate::handlers::console::console_page,
        crate::handlers::console::console_app,
        crate::handlers::console::console_timeline,
        crate::handlers::console::console_css,
    ),
    components(schemas(ErrorBody, ErrorKey, Event)),
    tags(
        (name = "rooms", description = "Create a call, read it, start or end it."),
        (name = "participants", description = "Join, leave, invite, answer, remove."),
        (name = "users", description = "A uid's ringing calls and call history."),
        (name = "events", description = "The business events feed and its deliveries \
(service tokens only)."),
        (name = "livekit", description = "LiveKit's webhooks, signed by LiveKit."),
        (name = "service", description = "Health, this documentation and the operator \
console's page; no token."),
    ),
)]
struct ApiDoc;

/// The document as JSON, with what every operation shares filled in.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": SECURITY_DESCRIPTION,
        }
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                complete_operation(operation);
                if method == "post" {
                    accept_idempotency_key(operation);
                }
            }
        }
    }
    doc
}

/// Operations tagged `service` answer bare bodies without a token; every other one answers
/// the envelope, needs a bearer token (the LiveKit webhook: LiveKit's signature instead).
fn complete_operation(operation: &mut Value) {
    if let Some(params) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for param in params {
            if param["in"] == "path" && (param["name"] == "room_name" || param["name"] == "uid") {
                param["schema"] = name_schema();
            }
        }
    }
    let tags = operation["tags"].as_array().cloned().unwrap_or_default();
    let tagged = |t: &str| tags.iter().any(|v| v == t);
    if tagged("service") {
        operation["security"] = json!([]);
        document_retry_after(operation);
        return;
    }
    let has_body = operation.get("requestBody").is_some();
    operation["security"] = if tagged("livekit") {
        json!([])
    } else {
        json!([{ "bearer": [] }])
    };
    let Some(responses) = operation["responses"].as_object_mut() else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        camel_case_links(response);
        if status.starts_with('2') {
            wrap_in_envelope(response);
        } else {
            attach_error_body(response);
        }
    }
    let mut common = vec![
        (
            "400",
            "invalid_parameters: a path, query or body value breaks an input rule.",
        ),
        ("500", "internal_error"),
        (
            "503",
            "service_unavailable: the database has no connection to spare or did not answer \
             in time; retry after Retry-After seconds.",
        ),
    ];
    if tagged("livekit") {
        common.push((
            "401",
            "unauthorized: the LiveKit signature (Authorization) is missing or does not match.",
        ));
        common.push(("413", "payload_too_large: the body is over 64 KiB."));
    } else {
        common.push((
            "401",
            "unauthorized: no bearer token, or one that is not valid.",
        ));
        common.push((
            "403",
            "forbidden: a user token acting for another uid or on a room it may not touch.",
        ));
        if has_body {
            common.push(("413", "payload_too_large: the body is over 64 KiB."));
        }
    }
    for (status, description) in common {
        responses.entry(status).or_insert_with(|| {
            let mut response = json!({ "description": description });
            attach_error_body(&mut response);
            response
        });
    }
    document_retry_after(operation);
}

/// Every 429 and 503 says when to come back.
fn document_retry_after(operation: &mut Value) {
    let Some(responses) = operation["responses"].as_object_mut() else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        if matches!(status.as_str(), "429" | "503") {
            response["headers"]["Retry-After"] = json!({
                "description": "Seconds to wait before trying again (always sent).",
                "required": true,
                "schema": { "type": "integer", "minimum": 1 },
            });
        }
    }
}

const IDEMPOTENCY_DESCRIPTION: &str = "Optional. A key the client chooses for this request \
(an RFC 8941 quoted string of 1-255 printable ASCII characters, e.g. \
`\"8e03978e-40d5-43e8-bc93-6894a57f9324\"`), scoped to the caller (token `sub` and role) and the \
route. The first request with a key stores its answer (status and body) in the same \
transaction as its change; a retry with the same key and the same request (method, path, \
body as canonical JSON) gets that answer again with `Idempotent-Replayed: true`, and changes \
nothing. Refusals decided by the call's state (403, 404, 409) are stored too; input errors \
(400), rate limits (429) and outages (503) are not, so a retry can succeed. Keys expire \
24 hours after their first request (IDEMPOTENCY_KEY_TTL_SECONDS).";

/// Every POST but LiveKit's webhook (which dedups by LiveKit's event id) takes an optional
/// Idempotency-Key (crate::idempotency) and may answer its two refusals.
fn accept_idempotency_key(operation: &mut Value) {
    let tags = operation["tags"].as_array().cloned().unwrap_or_default();
    if tags.iter().any(|t| t == "livekit" || t == "service") {
        return;
    }
    let header = json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": IDEMPOTENCY_DESCRIPTION,
        "schema": {
            "type": "string",
            "pattern": r#"^"([\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]){1,255}"$"#,
            "maxLength": 512,
        },
    });
    match operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        Some(params) => params.push(header),
        None => operation["parameters"] = json!([header]),
    }
    let Some(responses) = operation["responses"].as_object_mut() else {
        return;
    };
    if let Some(ok) = responses.get_mut("200") {
        ok["headers"] = json!({
            "Idempotent-Replayed": {
                "description": "`true` when this is the stored answer of an earlier request \
                    with the same Idempotency-Key.",
                "schema": { "type": "string", "enum": ["true"] },
            }
        });
    }
    let in_use = "idempotency_key_in_use: a request with this Idempotency-Key is still in \
        progress (Retry-After)";
    match responses.get_mut("409") {
        Some(conflict) => {
            let described = conflict["description"].as_str().unwrap_or_default();
            conflict["description"] = json!(format!("{described}; {in_use}"));
        }
        None => {
            let mut conflict = json!({ "description": in_use });
            attach_error_body(&mut conflict);
            responses.insert("409".into(), conflict);
        }
    }
    let mut reused = json!({
        "description": "idempotency_key_reused: this Idempotency-Key was used for a different \
            request (another body or path)."
    });
    attach_error_body(&mut reused);
    responses.insert("422".into(), reused);
}

/// utoipa 5.5 writes a link's fields in snake case; the specification's are camel case.
fn camel_case_links(response: &mut Value) {
    let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
        return;
    };
    for link in links.values_mut().filter_map(Value::as_object_mut) {
        for (from, to) in [
            ("operation_id", "operationId"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(from) {
                link.insert(to.into(), value);
            }
        }
    }
}

fn wrap_in_envelope(response: &mut Value) {
    let Some(media) = response
        .get_mut("content")
        .and_then(|c| c.get_mut("application/json"))
    else {
        return;
    };
    let data = media.get("schema").cloned().unwrap_or(json!({}));
    media["schema"] = json!({
        "type": "object",
        "required": ["code", "msg", "data"],
        "properties": {
            "code": { "type": "integer", "const": 0 },
            "msg": { "type": "string", "description": "The success message (the seed's, in the caller's language)." },
            "data": data,
        },
    });
}

fn attach_error_body(response: &mut Value) {
    let mut content = Map::new();
    content.insert(
        "application/json".into(),
        json!({ "schema": { "$ref": "#/components/schemas/ErrorBody" } }),
    );
    response["content"] = Value::Object(content);
}

/// A refusal or failure: `code` is the HTTP status, `error` the stable key.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// The HTTP status again.
    code: u16,
    /// A readable message in the caller's language.
    msg: String,
    error: ErrorKey,
    /// channel_has_active_room: `{room_name}`; participant_in_call: `{busy_uids}`;
    /// invalid_transition: `{from, to}`.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// Every stable error key (DESIGN's list); one answer carries one.
pub struct ErrorKey;

impl PartialSchema for ErrorKey {
    fn schema() -> RefOr<Schema> {
        let keys: Vec<&str> = ApiError::one_of_each().iter().map(ApiError::key).collect();
        string_enum(keys, "The stable error key.")
    }
}
impl ToSchema for ErrorKey {}

/// One business event, as delivered to an endpoint and returned by the feed.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Event {
    /// `evt_` and 24 hex digits; the same in every retry and redelivery.
    id: String,
    #[schema(rename = "type")]
    r#type: EventType,
    room_name: String,
    /// Per room, from 1, without gaps.
    seq: i64,
    #[schema(value_type = String, format = DateTime)]
    occurred_at: String,
    /// room.*: the room (room.ended adds `participants`, each with its final status, reason,
    /// ring and talk seconds); participant.*: the row with `caller`, `call_type`,
    /// `source_channel_id`, `source_channel_type`, `room_status` (and `invitee` when rung).
    #[schema(value_type = Object)]
    data: Value,
}

/// A room_name or uid.
pub struct Name;

impl PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        serde_json::from_value(name_schema()).unwrap_or_default()
    }
}
impl ToSchema for Name {}

/// A schema-only type for a closed list of strings a field carries as `&str` or `String`.
macro_rules! string_list {
    ($(#[$doc:meta])* $name:ident: [$($value:literal),+ $(,)?], $description:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string_enum([$($value),+], $description)
            }
        }
        impl ToSchema for $name {}
    };
}

string_list!(
    HealthStatus: ["ok", "degraded"],
    "ok, or degraded when the database does not answer."
);
string_list!(
    DatabaseStatus: ["ok", "unreachable"],
    "Whether the database answered a ping."
);
string_list!(
    /// What the service did with a LiveKit webhook.
    WebhookOutcome: ["applied", "deleted_again", "removed_again", "ignored", "duplicate"],
    "applied; deleted_again (a final room LiveKit still had); removed_again (a removed uid \
     that came back); ignored (an event type or room this service does not keep); duplicate \
     (already applied)."
);

/// /health's bare body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    #[schema(value_type = HealthStatus)]
    status: String,
    #[schema(value_type = DatabaseStatus)]
    database: String,
}

/// What the service did with a LiveKit webhook.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookHandled {
    #[schema(value_type = WebhookOutcome)]
    outcome: String,
}

fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(values))
        .description(Some(description))
        .into()
}

fn integer_enum(codes: impl IntoIterator<Item = i16>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .enum_values(Some(codes))
        .description(Some(description))
        .into()
}

impl PartialSchema for RoomStatus {
    fn schema() -> RefOr<Schema> {
        integer_enum(
            RoomStatus::ALL.map(RoomStatus::code),
            "Room status (房间状态): 0 未开始 not started, 1 进行中 in progress, 2 已结束 ended, \
             3 已取消 cancelled.",
        )
    }
}
impl ToSchema for RoomStatus {}

impl PartialSchema for ParticipantStatus {
    fn schema() -> RefOr<Schema> {
        integer_enum(
            ParticipantStatus::ALL.map(ParticipantStatus::code),
            "Participant status (参与者状态): 0 邀请中 ringing, 1 已加入 joined, 2 已拒绝 \
             rejected, 3 已挂断 hung up, 4 超时未加入 missed, 5 通话中未接听 busy, 6 已取消 \
             cancelled.",
        )
    }
}
impl ToSchema for ParticipantStatus {}

impl PartialSchema for EndReason {
    fn schema() -> RefOr<Schema> {
        string_enum(
            EndReason::ALL.iter().map(|r| r.as_str()),
            "Why the room ended (null while it is open).",
        )
    }
}
impl ToSchema for EndReason {}

impl PartialSchema for Reason {
    fn schema() -> RefOr<Schema> {
        string_enum(
            Reason::ALL.iter().map(|r| r.as_str()),
            "Why the row is in its status (null while it rings or is joined).",
        )
    }
}
impl ToSchema for Reason {}

impl PartialSchema for EventType {
    fn schema() -> RefOr<Schema> {
        string_enum(EventType::ALL.map(EventType::as_str), "The event's type.")
    }
}
impl ToSchema for EventType {}

/// room_name and uid: 1–40 characters (code points) matching [`NAME_PATTERN`].
fn name_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": validate::NAME_MAX_CHARS,
        "pattern": NAME_PATTERN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document()
    }

    /// The router the local main job serves (and template.yaml deploys, checked elsewhere).
    fn routed() -> Vec<(String, String)> {
        let manifest = include_str!("../../Cargo.toml");
        let mut routes = Vec::new();
        let mut in_router = false;
        let mut path = None;
        for line in manifest.lines() {
            if line.starts_with('[') {
                in_router = line.trim() == "[workspace.metadata.lambda.watch.router]";
                continue;
            }
            if !in_router {
                continue;
            }
            if line.starts_with('"') {
                path = line.split('"').nth(1);
            }
            for part in line.split("method = \"").skip(1) {
                if let (Some(path), Some(method)) = (path, part.split('"').next()) {
                    routes.push((path.to_owned(), method.to_lowercase()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_routed_operation_is_documented_and_nothing_else() {
        let doc = doc();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .map(|method| (path.clone(), method.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut routed = routed();
        documented.sort();
        routed.sort();
        assert!(routed.len() >= 21, "the router was read: {routed:?}");
        assert_eq!(documented, routed);
    }

    #[test]
    fn every_refusal_that_says_when_to_come_back_documents_retry_after() {
        let doc = doc();
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                for (status, response) in op["responses"].as_object().expect("responses") {
                    if matches!(status.as_str(), "429" | "503") {
                        seen += 1;
                        assert_eq!(
                            response["headers"]["Retry-After"]["required"], true,
                            "{method} {path} {status} documents Retry-After"
                        );
                    }
                }
                if op["tags"][0] != "service" {
                    assert!(
                        op["responses"].get("503").is_some(),
                        "{method} {path} documents 503"
                    );
                }
            }
        }
        assert!(seen > 20);
    }

    #[test]
    fn every_operation_has_an_id_a_summary_and_documented_errors() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let id = op["operationId"].as_str().unwrap_or("");
                assert!(!id.is_empty(), "{method} {path} has an operationId");
                assert!(op["summary"].is_string(), "{id} has a summary");
                let responses = op["responses"].as_object().expect("responses");
                assert!(responses.contains_key("200"), "{id} documents its 200");
                if op["tags"][0] != "service" {
                    for status in ["400", "401", "500", "503"] {
                        assert!(responses.contains_key(status), "{id} documents {status}");
                    }
                    assert_eq!(
                        responses["200"]["content"]["application/json"]["schema"]["properties"]["code"]
                            ["const"],
                        0,
                        "{id}'s 200 is the envelope"
                    );
                }
            }
        }
    }

    #[test]
    fn error_keys_and_status_codes_come_from_the_code() {
        let doc = doc();
        let keys = &doc["components"]["schemas"]["ErrorKey"]["enum"];
        let all: Vec<Value> = ApiError::one_of_each()
            .iter()
            .map(|e| json!(e.key()))
            .collect();
        assert_eq!(keys, &json!(all));
        let statuses = &doc["components"]["schemas"]["RoomStatus"]["enum"];
        assert_eq!(statuses, &json!([0, 1, 2, 3]));
        let statuses = &doc["components"]["schemas"]["ParticipantStatus"]["enum"];
        assert_eq!(statuses, &json!([0, 1, 2, 3, 4, 5, 6]));
        let reasons = &doc["components"]["schemas"]["Reason"]["enum"];
        assert_eq!(
            reasons.as_array().map(Vec::len),
            Some(Reason::ALL.len()),
            "{reasons}"
        );
    }

    /// Each refusal a handler can return on purpose is documented on its operation, with the
    /// key named in the description.
    #[test]
    fn refusals_are_documented_where_they_happen() {
        let doc = doc();
        let op = |path: &str, method: &str| doc["paths"][path][method].clone();
        let described = |op: &Value, status: &str, key: &str| {
            op["responses"][status]["description"]
                .as_str()
                .is_some_and(|d| d.contains(key))
        };
        let create = op("/api/rooms", "post");
        for key in [
            "room_already_exists",
            "channel_has_active_room",
            "creator_in_another_call",
        ] {
            assert!(described(&create, "409", key), "create-room 409 {key}");
        }
        assert!(described(&create, "429", "rate_limited"));
        let join = op("/api/participants/join", "post");
        for (status, key) in [
            ("404", "room_not_found"),
            ("409", "room_not_active"),
            ("409", "room_full"),
            ("409", "participant_in_call"),
            ("403", "participant_not_invited"),
            ("403", "participant_removed"),
        ] {
            assert!(described(&join, status, key), "join {status} {key}");
        }
        let status = op("/api/rooms/{room_name}/participants/{uid}/status", "put");
        assert!(described(&status, "404", "participant_not_found"));
        assert!(described(&status, "409", "invalid_transition"));
        assert!(described(
            &op("/api/events/{id}", "get"),
            "404",
            "event_not_found"
        ));
        assert!(described(
            &op("/api/rooms/{room_name}/events", "get"),
            "404",
            "room_not_found"
        ));
    }

    #[test]
    fn input_rules_are_schema_constraints_with_the_codes_values() {
        let doc = doc();
        let create = &doc["components"]["schemas"]["CreateRoom"]["properties"];
        assert_eq!(create["creator"]["maxLength"], validate::NAME_MAX_CHARS);
        assert_eq!(create["creator"]["pattern"], NAME_PATTERN);
        assert_eq!(create["room_name"]["maxLength"], validate::NAME_MAX_CHARS);
        assert_eq!(
            create["source_channel_id"]["maxLength"],
            validate::SOURCE_CHANNEL_ID_MAX_CHARS
        );
        for (field, (min, max)) in [
            ("ring_timeout_seconds", validate::RING_TIMEOUT_RANGE),
            ("max_duration_seconds", validate::MAX_DURATION_RANGE),
            ("solo_timeout_seconds", validate::SOLO_TIMEOUT_RANGE),
        ] {
            assert_eq!(create[field]["minimum"], min, "{field}");
            assert_eq!(create[field]["maximum"], max, "{field}");
        }
        assert_eq!(create["uids"]["maxItems"], validate::LIMIT_MAX);
        let list = &doc["paths"]["/api/rooms"]["get"]["parameters"];
        let limit = list
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
            .expect("limit");
        assert_eq!(limit["schema"]["maximum"], validate::LIMIT_MAX);
        let room = &doc["paths"]["/api/rooms/{room_name}"]["get"]["parameters"][0];
        assert_eq!(room["schema"]["maxLength"], validate::NAME_MAX_CHARS);
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
        assert_eq!(
            doc["paths"]["/api/rooms"]["post"]["security"],
            json!([{ "bearer": [] }])
        );
    }
}
