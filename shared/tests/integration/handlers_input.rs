//! Handler tests for what callers get wrong: bad input is a 400/413 with a stable key (never a
//! 5xx), and bad or insufficient tokens are 401/403. Plus the language of messages.

use crate::common;
use crate::events;

use call_shared::handlers;
use call_shared::store::DbPool;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use events::{Api, Event, event, reply, room_count};

fn create_event(body: &str, token: &str) -> lambda_http::Request {
    event("POST", "/api/rooms", None, Some(body), Some(token))
}

async fn create_raw(app: &call_shared::App, body: &str) -> events::Reply {
    let token = common::service_token(app);
    reply(handlers::create_room(app, create_event(body, &token)).await)
}

async fn join_raw(app: &call_shared::App, body: Option<&str>) -> events::Reply {
    let token = common::service_token(app);
    let req = event("POST", "/api/participants/join", None, body, Some(&token));
    reply(handlers::join_room(app, req).await)
}

fn create_body(overrides: Value) -> String {
    let mut body = json!({ "room_name": "r1", "creator": "alice", "call_type": 1 });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), overrides.as_object()) {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    body.to_string()
}

// ---------------------------------------------------------------- create body

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_malformed_json(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, r#"{"room_name": "r1", "creator": "alice""#)
        .await
        .err(400, "invalid_parameters");
    assert_eq!(room_count(app.store.pool()).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_call_type_of_the_wrong_type(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "call_type": "x" })))
        .await
        .err(400, "invalid_parameters");
    assert_eq!(room_count(app.store.pool()).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_call_type_out_of_range(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "call_type": 2 })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_an_invite_on_out_of_range(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "invite_on": -1 })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_room_name_of_41_characters(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "room_name": "r".repeat(41) })))
        .await
        .err(400, "invalid_parameters");
    assert_eq!(room_count(app.store.pool()).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_room_name_of_41_unicode_characters(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "room_name": "会".repeat(41) })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_an_empty_room_name(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "room_name": "" })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_room_name_with_whitespace(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "room_name": "team meeting" })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_room_name_with_a_slash(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "room_name": "team/meeting" })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_room_name_with_a_control_character(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "room_name": "team\u{7}" })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_creator_of_41_characters(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "creator": "u".repeat(41) })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_missing_creator(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, r#"{"room_name":"r1"}"#)
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_an_invitee_uid_of_41_characters(pool: DbPool) {
    let app = common::app(pool);
    create_raw(
        &app,
        &create_body(json!({ "uids": ["bob", "u".repeat(41)] })),
    )
    .await
    .err(400, "invalid_parameters");
    assert_eq!(room_count(app.store.pool()).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_max_participants_above_the_limit(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "max_participants": 51 })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_max_participants_of_one(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "max_participants": 1 })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_max_participants_beyond_an_integer(pool: DbPool) {
    let app = common::app(pool);
    create_raw(
        &app,
        r#"{"room_name":"r1","creator":"alice","max_participants":1e30}"#,
    )
    .await
    .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_source_channel_id_over_100_characters(pool: DbPool) {
    let app = common::app(pool);
    create_raw(
        &app,
        &create_body(json!({ "source_channel_id": "c".repeat(101) })),
    )
    .await
    .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_source_channel_type_over_255(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, &create_body(json!({ "source_channel_type": 256 })))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_body_over_64_kib_with_413(pool: DbPool) {
    let app = common::app(pool);
    let body = create_body(json!({ "padding": "x".repeat(100 * 1024) }));
    assert!(body.len() > 100 * 1024);
    create_raw(&app, &body).await.err(413, "payload_too_large");
    assert_eq!(room_count(app.store.pool()).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_accepts_a_body_of_exactly_64_kib(pool: DbPool) {
    let app = common::app(pool);
    let frame = create_body(json!({ "padding": "" }));
    let body = create_body(json!({ "padding": "x".repeat(64 * 1024 - frame.len()) }));
    assert_eq!(body.len(), 64 * 1024);
    create_raw(&app, &body).await.ok("房间创建成功");
    assert_eq!(room_count(app.store.pool()).await, 1);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_missing_body(pool: DbPool) {
    let app = common::app(pool);
    let token = common::service_token(&app);
    let req = event("POST", "/api/rooms", None, None, Some(&token));
    reply(handlers::create_room(&app, req).await).err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_body_that_is_not_an_object(pool: DbPool) {
    let app = common::app(pool);
    create_raw(&app, r#"["alice"]"#)
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_base64_body_that_is_not_json(pool: DbPool) {
    let app = common::app(pool);
    let token = common::service_token(&app);
    let req = Event::new("POST", "/api/rooms")
        .body("creator=alice&room_name=r1")
        .base64_body()
        .token(&token)
        .request();
    reply(handlers::create_room(&app, req).await).err(400, "invalid_parameters");
}

// ---------------------------------------------------------------- join / leave bodies

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_a_uid_of_41_characters(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "alice" }))
        .await;
    let body = json!({ "room_name": "r1", "uid": "u".repeat(41) }).to_string();
    join_raw(&app, Some(&body))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_a_uid_with_whitespace(pool: DbPool) {
    let app = common::app(pool);
    join_raw(&app, Some(r#"{"room_name":"r1","uid":"bob smith"}"#))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_a_missing_body(pool: DbPool) {
    let app = common::app(pool);
    join_raw(&app, None).await.err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_malformed_json(pool: DbPool) {
    let app = common::app(pool);
    join_raw(&app, Some(r#"{"room_name":"r1","uid":"#))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_a_uid_of_the_wrong_type(pool: DbPool) {
    let app = common::app(pool);
    join_raw(&app, Some(r#"{"room_name":"r1","uid":42}"#))
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_refuses_a_body_over_64_kib_with_413(pool: DbPool) {
    let app = common::app(pool);
    let token = common::service_token(&app);
    let body =
        json!({ "room_name": "r1", "uid": "bob", "padding": "x".repeat(100 * 1024) }).to_string();
    let req = event(
        "POST",
        "/api/participants/leave",
        None,
        Some(&body),
        Some(&token),
    );
    reply(handlers::leave_room(&app, req).await).err(413, "payload_too_large");
}

// ---------------------------------------------------------------- other bodies

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_refuses_a_body_over_64_kib_with_413(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let body = json!({ "uids": ["carol"], "padding": "x".repeat(100 * 1024) }).to_string();
    let req = Event::new("POST", "/api/rooms/r1/invite")
        .path_params(&[("room_name", "r1")])
        .body(&body)
        .token(&api.service())
        .request();
    reply(handlers::invite_participants(&app, req).await).err(413, "payload_too_large");
    assert_eq!(
        events::status_of(app.store.pool(), "r1", "carol").await,
        None
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_refuses_uids_that_are_not_a_list(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let req = Event::new("POST", "/api/rooms/r1/invite")
        .path_params(&[("room_name", "r1")])
        .body(r#"{"uids":"carol"}"#)
        .token(&api.service())
        .request();
    reply(handlers::invite_participants(&app, req).await).err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_refuses_a_status_of_the_wrong_type(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let req = Event::new("PUT", "/api/rooms/r1/status")
        .path_params(&[("room_name", "r1")])
        .body(r#"{"status":"1"}"#)
        .token(&api.service())
        .request();
    reply(handlers::update_room_status(&app, req).await).err(400, "invalid_parameters");
    assert_eq!(events::room_status(app.store.pool(), "r1").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_refuses_a_missing_body(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let req = Event::new("PUT", "/api/rooms/r1/status")
        .path_params(&[("room_name", "r1")])
        .token(&api.service())
        .request();
    reply(handlers::update_room_status(&app, req).await).err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_refuses_a_missing_body(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let req = Event::new("PUT", "/api/rooms/r1/participants/bob/status")
        .path_params(&[("room_name", "r1"), ("uid", "bob")])
        .token(&api.user("bob"))
        .request();
    reply(handlers::update_participant_status(&app, req).await).err(400, "invalid_parameters");
    assert_eq!(
        events::status_of(app.store.pool(), "r1", "bob").await,
        Some(0)
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_refuses_a_path_uid_of_41_characters(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_participant_status(&api.service(), "r1", &"u".repeat(41), 2)
        .await
        .err(400, "invalid_parameters");
}

// ---------------------------------------------------------------- list query

async fn list_with(app: &call_shared::App, query: &str) -> events::Reply {
    let api = Api::new(app);
    api.list_rooms(&api.service(), query).await
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_refuses_a_negative_limit(pool: DbPool) {
    let app = common::app(pool);
    list_with(&app, "limit=-1")
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_refuses_a_limit_of_zero(pool: DbPool) {
    let app = common::app(pool);
    list_with(&app, "limit=0")
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_refuses_a_limit_of_101(pool: DbPool) {
    let app = common::app(pool);
    list_with(&app, "limit=101")
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_accepts_a_limit_of_100(pool: DbPool) {
    let app = common::app(pool);
    list_with(&app, "limit=100").await.ok("获取房间列表成功");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_refuses_a_negative_offset(pool: DbPool) {
    let app = common::app(pool);
    list_with(&app, "offset=-5")
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_refuses_a_limit_that_is_not_a_number(pool: DbPool) {
    let app = common::app(pool);
    list_with(&app, "limit=ten")
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_refuses_an_unknown_status(pool: DbPool) {
    let app = common::app(pool);
    list_with(&app, "status=9")
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_refuses_a_creator_filter_of_41_characters(pool: DbPool) {
    let app = common::app(pool);
    list_with(&app, &format!("creator={}", "c".repeat(41)))
        .await
        .err(400, "invalid_parameters");
}

// ---------------------------------------------------------------- auth

fn token_with_claims(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a test token")
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_without_a_token_is_unauthorized_and_writes_nothing(pool: DbPool) {
    let app = common::app(pool);
    let req = event(
        "POST",
        "/api/rooms",
        None,
        Some(&create_body(json!({}))),
        None,
    );
    reply(handlers::create_room(&app, req).await).err(401, "unauthorized");
    assert_eq!(room_count(app.store.pool()).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn every_endpoint_but_health_refuses_a_request_without_a_token(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let join = r#"{"room_name":"r1","uid":"bob"}"#;
    let status = r#"{"status":2}"#;
    let params: &[(&str, &str)] = &[("room_name", "r1")];
    let both: &[(&str, &str)] = &[("room_name", "r1"), ("uid", "bob")];
    let replies = [
        (
            "create-room",
            reply(
                handlers::create_room(
                    &app,
                    event(
                        "POST",
                        "/api/rooms",
                        None,
                        Some(&create_body(json!({}))),
                        None,
                    ),
                )
                .await,
            ),
        ),
        (
            "get-room",
            reply(
                handlers::get_room(
                    &app,
                    event("GET", "/api/rooms/r1", Some(params), None, None),
                )
                .await,
            ),
        ),
        (
            "list-rooms",
            reply(handlers::list_rooms(&app, event("GET", "/api/rooms", None, None, None)).await),
        ),
        (
            "update-room-status",
            reply(
                handlers::update_room_status(
                    &app,
                    event(
                        "PUT",
                        "/api/rooms/r1/status",
                        Some(params),
                        Some(status),
                        None,
                    ),
                )
                .await,
            ),
        ),
        (
            "end-room",
            reply(
                handlers::end_room(
                    &app,
                    event("POST", "/api/rooms/r1/end", Some(params), None, None),
                )
                .await,
            ),
        ),
        (
            "join-room",
            reply(
                handlers::join_room(
                    &app,
                    event("POST", "/api/participants/join", None, Some(join), None),
                )
                .await,
            ),
        ),
        (
            "leave-room",
            reply(
                handlers::leave_room(
                    &app,
                    event("POST", "/api/participants/leave", None, Some(join), None),
                )
                .await,
            ),
        ),
        (
            "list-participants",
            reply(
                handlers::list_participants(
                    &app,
                    event(
                        "GET",
                        "/api/rooms/r1/participants",
                        Some(params),
                        None,
                        None,
                    ),
                )
                .await,
            ),
        ),
        (
            "invite-participants",
            reply(
                handlers::invite_participants(
                    &app,
                    event(
                        "POST",
                        "/api/rooms/r1/invite",
                        Some(params),
                        Some(r#"{"uids":["carol"]}"#),
                        None,
                    ),
                )
                .await,
            ),
        ),
        (
            "update-participant-status",
            reply(
                handlers::update_participant_status(
                    &app,
                    event(
                        "PUT",
                        "/api/rooms/r1/participants/bob/status",
                        Some(both),
                        Some(status),
                        None,
                    ),
                )
                .await,
            ),
        ),
    ];
    for (name, r) in &replies {
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        assert_eq!(r.body["error"], "unauthorized", "{name}: {}", r.body);
    }
    assert_eq!(events::room_status(app.store.pool(), "r1").await, Some(0));
    assert_eq!(events::participant_count(app.store.pool()).await, 2);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_token_signed_with_another_secret_is_unauthorized(pool: DbPool) {
    let app = common::app(pool.clone());
    let other = common::app_with(pool, &[("AUTH_JWT_SECRET", "some-other-secret")]);
    let forged = common::service_token(&other);
    let api = Api::new(&app);
    api.list_rooms(&forged, "").await.err(401, "unauthorized");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn an_expired_token_is_unauthorized(pool: DbPool) {
    let app = common::app(pool);
    let exp = chrono::Utc::now().timestamp() - 3600;
    let expired = token_with_claims(
        common::AUTH_SECRET,
        &json!({ "sub": "backend", "role": "service", "exp": exp }),
    );
    let api = Api::new(&app);
    api.list_rooms(&expired, "").await.err(401, "unauthorized");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_token_without_exp_is_unauthorized(pool: DbPool) {
    let app = common::app(pool);
    let no_exp = token_with_claims(
        common::AUTH_SECRET,
        &json!({ "sub": "backend", "role": "service" }),
    );
    let api = Api::new(&app);
    api.list_rooms(&no_exp, "").await.err(401, "unauthorized");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_malformed_token_is_unauthorized(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.list_rooms("not.a.jwt", "")
        .await
        .err(401, "unauthorized");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn an_authorization_header_without_the_bearer_scheme_is_unauthorized(pool: DbPool) {
    let app = common::app(pool);
    let token = common::service_token(&app);
    let req = Event::new("GET", "/api/rooms")
        .header("authorization", &format!("Basic {token}"))
        .request();
    reply(handlers::list_rooms(&app, req).await).err(401, "unauthorized");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_valid_token_in_the_bearer_scheme_is_accepted(pool: DbPool) {
    let app = common::app(pool);
    let token = common::user_token(&app, "alice");
    let req = event("GET", "/api/rooms", None, None, Some(&token));
    reply(handlers::list_rooms(&app, req).await).ok("获取房间列表成功");
}

// ---------------------------------------------------------------- language

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn errors_are_in_chinese_by_default(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let r = api.get_room(&api.service(), "nope").await;
    r.err(404, "room_not_found");
    assert_eq!(r.body["msg"], "房间不存在");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn errors_are_in_english_when_accept_language_prefers_it(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::in_language(&app, "en-US,en;q=0.9");
    let r = api.get_room(&api.service(), "nope").await;
    r.err(404, "room_not_found");
    assert_eq!(r.body["msg"], "Room not found");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn messages_stay_chinese_when_chinese_is_preferred_over_english(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::in_language(&app, "zh-CN,zh;q=0.9,en;q=0.8");
    api.list_rooms(&api.service(), "")
        .await
        .ok("获取房间列表成功");
}
