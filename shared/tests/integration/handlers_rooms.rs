//! Handler tests for the room endpoints (health, create, get, list, status PUT, end), driven by
//! API Gateway HTTP API v2 events, asserting on status, envelope and the database afterwards.

use crate::common;
use crate::events;
use crate::livekit::LiveKitStub;

use std::time::Duration;

use call_shared::handlers;
use call_shared::store::DbPool;
use serde_json::{Value, json};

use events::{Api, Event, encode, event, participant, reply, room_count, room_status, status_of};

fn seed_create_body() -> Value {
    json!({
        "source_channel_id": "channel_123",
        "source_channel_type": 0,
        "creator": "user_001",
        "room_name": "meeting_001",
        "call_type": 1,
        "invite_on": 1
    })
}

fn room_names(list: &Value) -> Vec<String> {
    list["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("rooms is not a list: {list}"))
        .iter()
        .map(|r| r["room_name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---------------------------------------------------------------- health

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn health_is_ok_without_a_token_when_the_database_answers(pool: DbPool) {
    let app = common::app(pool);
    let r = reply(handlers::health(&app, event("GET", "/health", None, None, None)).await);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({ "status": "ok", "database": "ok" }));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn health_is_503_degraded_when_the_database_is_unreachable(pool: DbPool) {
    let app = common::app(pool);
    app.store.close().await;
    let r = Api::new(&app).health().await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        json!({ "status": "degraded", "database": "unreachable" })
    );
}

// ---------------------------------------------------------------- create

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_answers_the_seed_shape(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let r = api.create(&api.service(), &seed_create_body()).await;
    let data = r.ok("房间创建成功");
    assert!(data["id"].as_i64().is_some_and(|id| id > 0), "{data}");
    assert_eq!(data["room_name"], "meeting_001");
    assert!(data["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(data["livekit_url"], "wss://livekit.example.test");
    assert_eq!(data["status"], 0);
    events::assert_rfc3339_utc(&data["created_at"]);
    assert!(
        r.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.content_type
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_writes_the_room_not_started_with_its_fields(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.create(&api.service(), &seed_create_body())
        .await
        .ok("房间创建成功");
    let state = common::loaded_now(&app, "meeting_001").await;
    let room = &state.room;
    assert_eq!(room.source_channel_id, "channel_123");
    assert_eq!(room.source_channel_type, 0);
    assert_eq!(room.creator, "user_001");
    assert_eq!(room.call_type, 1);
    assert_eq!(room.invite_on, 1);
    assert_eq!(room.max_participants, 2, "absent max_participants means 2");
    assert_eq!(room_status(app.store.pool(), "meeting_001").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_treats_max_participants_zero_as_two(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let data = api
        .open_with(json!({ "room_name": "r1", "creator": "alice", "max_participants": 0 }))
        .await;
    assert_eq!(data["max_participants"], 2);
    let state = common::loaded_now(&app, "r1").await;
    assert_eq!(state.room.max_participants, 2);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_joins_the_creator_with_a_join_time(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let before = events::now_ms();
    api.open("r1", "alice", &["bob"]).await;
    let after = events::now_ms();
    let alice = participant(app.store.pool(), "r1", "alice")
        .await
        .expect("creator row");
    assert_eq!(alice.status, 1);
    assert!(
        alice.join_time >= before - 5 && alice.join_time <= after + 5,
        "join_time {} not within [{before}, {after}]",
        alice.join_time
    );
    assert_eq!(alice.leave_time, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_rings_every_invitee(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let data = api.open("r1", "alice", &["bob", "carol"]).await;
    for uid in ["bob", "carol"] {
        let row = participant(app.store.pool(), "r1", uid)
            .await
            .unwrap_or_else(|| panic!("{uid} has a row"));
        assert_eq!(row.status, 0, "{uid}");
        assert_eq!((row.join_time, row.leave_time), (0, 0), "{uid}");
    }
    let statuses: Vec<(String, i64)> = data["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| {
            (
                p["uid"].as_str().unwrap_or_default().to_owned(),
                p["status"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("alice".to_owned(), 1),
            ("bob".to_owned(), 0),
            ("carol".to_owned(), 0)
        ]
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_drops_the_creator_and_duplicates_from_uids(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "alice", "bob"]).await;
    assert_eq!(events::participant_count(app.store.pool()).await, 2);
    assert_eq!(status_of(app.store.pool(), "r1", "alice").await, Some(1));
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_generates_a_room_name_when_none_is_given(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let r = api
        .create(&api.service(), &json!({ "creator": "alice" }))
        .await;
    let name = r.ok("房间创建成功")["room_name"]
        .as_str()
        .expect("room_name")
        .to_owned();
    let suffix = name
        .strip_prefix("room_")
        .unwrap_or_else(|| panic!("{name}"));
    assert_eq!(suffix.len(), 16, "{name}");
    assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert_eq!(room_status(app.store.pool(), &name).await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_token_admits_the_creator_to_that_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let data = api.open("r1", "alice", &["bob"]).await;
    let claims = events::livekit_claims(&data["token"]);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.iss, common::LIVEKIT_KEY);
    assert_eq!(claims.video.room, "r1");
    assert!(claims.video.room_join);
    assert!(!claims.video.room_admin && !claims.video.room_create);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_token_for_a_voice_call_publishes_the_microphone_only(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let data = api
        .open_with(json!({ "room_name": "voice", "creator": "alice", "call_type": 0 }))
        .await;
    let claims = events::livekit_claims(&data["token"]);
    assert_eq!(claims.video.can_publish_sources, vec!["microphone"]);
    assert!(claims.video.can_subscribe());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_token_for_a_video_call_does_not_restrict_sources(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let data = api
        .open_with(json!({ "room_name": "video", "creator": "alice", "call_type": 1 }))
        .await;
    let claims = events::livekit_claims(&data["token"]);
    assert!(claims.video.can_publish());
    assert!(
        claims.video.can_publish_sources.is_empty(),
        "{:?}",
        claims.video.can_publish_sources
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_taken_room_name(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &[]).await;
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "r1", "creator": "bob" }),
        )
        .await;
    r.err(409, "room_already_exists");
    assert_eq!(room_count(app.store.pool()).await, 1);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_creator_live_in_another_call(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "r2", "creator": "alice", "uids": ["carol"] }),
        )
        .await;
    r.err(409, "creator_in_another_call");
    assert_eq!(room_status(app.store.pool(), "r2").await, None);
    assert_eq!(events::participant_count(app.store.pool()).await, 2);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_busy_invitee_and_writes_nothing(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "r2", "creator": "carol", "uids": ["dave", "bob"] }),
        )
        .await;
    let body = r.err(409, "participant_in_call");
    assert_eq!(body["data"]["busy_uids"], json!(["bob"]));
    assert_eq!(room_status(app.store.pool(), "r2").await, None);
    assert_eq!(status_of(app.store.pool(), "r2", "carol").await, None);
    assert_eq!(status_of(app.store.pool(), "r2", "dave").await, None);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_refuses_a_second_open_room_for_the_same_channel(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "alice", "source_channel_id": "g1" }))
        .await;
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "r2", "creator": "bob", "source_channel_id": "g1" }),
        )
        .await;
    let body = r.err(409, "channel_has_active_room");
    assert_eq!(body["data"]["room_name"], "r1");
    assert_eq!(room_status(app.store.pool(), "r2").await, None);
    assert_eq!(status_of(app.store.pool(), "r2", "bob").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_allows_rooms_without_a_channel_side_by_side(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "alice", "source_channel_id": "" }))
        .await;
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "r2", "creator": "bob", "source_channel_id": "" }),
        )
        .await;
    r.ok("房间创建成功");
    assert_eq!(room_count(app.store.pool()).await, 2);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_allows_the_same_channel_id_of_another_channel_type(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "alice", "source_channel_id": "g1", "source_channel_type": 1 }))
        .await;
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "r2", "creator": "bob", "source_channel_id": "g1", "source_channel_type": 2 }),
        )
        .await;
    r.ok("房间创建成功");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_allows_a_channel_room_again_once_the_first_one_ended(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "alice", "source_channel_id": "g1" }))
        .await;
    api.ended("r1").await;
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "r2", "creator": "bob", "source_channel_id": "g1" }),
        )
        .await;
    r.ok("房间创建成功");
    assert_eq!(room_status(app.store.pool(), "r2").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_keeps_room_names_differing_only_in_case_apart(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("alice", "u1", &[]).await;
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "ALICE", "creator": "u2" }),
        )
        .await;
    r.ok("房间创建成功");
    assert_eq!(room_count(app.store.pool()).await, 2);
    assert_eq!(status_of(app.store.pool(), "ALICE", "u2").await, Some(1));
    assert_eq!(status_of(app.store.pool(), "alice", "u2").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_treats_uids_differing_only_in_case_as_different_people(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    // "alice" and "bob" are live in r1; "ALICE" and "BOB" are other people.
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": "r2", "creator": "ALICE", "uids": ["BOB"] }),
        )
        .await;
    r.ok("房间创建成功");
    assert_eq!(status_of(app.store.pool(), "r2", "ALICE").await, Some(1));
    assert_eq!(status_of(app.store.pool(), "r2", "BOB").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_by_a_user_for_itself_succeeds(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let r = api
        .create(
            &api.user("alice"),
            &json!({ "room_name": "r1", "creator": "alice" }),
        )
        .await;
    r.ok("房间创建成功");
    assert_eq!(status_of(app.store.pool(), "r1", "alice").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_by_a_user_for_another_creator_is_forbidden(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let r = api
        .create(
            &api.user("mallory"),
            &json!({ "room_name": "r1", "creator": "alice" }),
        )
        .await;
    r.err(403, "forbidden");
    assert_eq!(room_count(app.store.pool()).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_answers_in_english_when_accept_language_prefers_it(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::in_language(&app, "en-US,en;q=0.9,zh;q=0.5");
    let r = api.create(&api.service(), &seed_create_body()).await;
    r.ok("Room created");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_accepts_a_base64_encoded_body(pool: DbPool) {
    let app = common::app(pool);
    let token = common::service_token(&app);
    let req = Event::new("POST", "/api/rooms")
        .json(&seed_create_body())
        .base64_body()
        .token(&token)
        .request();
    let r = reply(handlers::create_room(&app, req).await);
    assert_eq!(r.ok("房间创建成功")["room_name"], "meeting_001");
    assert_eq!(room_status(app.store.pool(), "meeting_001").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_reads_json_whatever_the_content_type_says(pool: DbPool) {
    let app = common::app(pool);
    let token = common::service_token(&app);
    let req = Event::new("POST", "/api/rooms")
        .json(&seed_create_body())
        .header("content-type", "text/plain")
        .token(&token)
        .request();
    reply(handlers::create_room(&app, req).await).ok("房间创建成功");
    assert_eq!(room_count(app.store.pool()).await, 1);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_ignores_unknown_fields(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let mut body = seed_create_body();
    body["colour"] = json!("blue");
    body["extra"] = json!({ "nested": [1, 2, 3] });
    api.create(&api.service(), &body).await.ok("房间创建成功");
    assert_eq!(room_count(app.store.pool()).await, 1);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_room_accepts_a_room_name_of_forty_unicode_characters(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let name = "会".repeat(40);
    let r = api
        .create(
            &api.service(),
            &json!({ "room_name": name, "creator": "张三" }),
        )
        .await;
    assert_eq!(r.ok("房间创建成功")["room_name"], name.as_str());
    assert_eq!(status_of(app.store.pool(), &name, "张三").await, Some(1));
}

// ---------------------------------------------------------------- get

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_answers_the_seed_shape(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.create(&api.service(), &seed_create_body())
        .await
        .ok("房间创建成功");
    let r = api.get_room(&api.service(), "meeting_001").await;
    let data = r.ok("获取房间信息成功");
    assert!(data["id"].as_i64().is_some_and(|id| id > 0));
    assert_eq!(data["source_channel_id"], "channel_123");
    assert_eq!(data["source_channel_type"], 0);
    assert_eq!(data["creator"], "user_001");
    assert_eq!(data["room_name"], "meeting_001");
    assert_eq!(data["call_type"], 1);
    assert_eq!(data["invite_on"], 1);
    assert_eq!(data["status"], 0);
    events::assert_rfc3339_utc(&data["created_at"]);
    events::assert_rfc3339_utc(&data["updated_at"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_answers_404_for_an_unknown_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.get_room(&api.service(), "nope")
        .await
        .err(404, "room_not_found");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_is_forbidden_to_a_user_without_a_row(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.get_room(&api.user("mallory"), "r1")
        .await
        .err(403, "forbidden");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_is_allowed_to_an_invited_user(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api.get_room(&api.user("bob"), "r1").await;
    assert_eq!(r.ok("获取房间信息成功")["room_name"], "r1");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_is_forbidden_to_a_user_whose_uid_differs_only_in_case(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.get_room(&api.user("ALICE"), "r1")
        .await
        .err(403, "forbidden");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_reads_the_room_name_from_the_raw_path_without_path_parameters(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &[]).await;
    let token = api.service();
    let req = event("GET", "/api/rooms/r1", None, None, Some(&token));
    let r = reply(handlers::get_room(&app, req).await);
    assert_eq!(r.ok("获取房间信息成功")["room_name"], "r1");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_percent_decodes_the_room_name_in_the_raw_path(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("会议_1", "alice", &[]).await;
    let token = api.service();
    let path = format!("/api/rooms/{}", encode("会议_1"));
    assert!(path.contains('%'), "{path}");
    let req = event("GET", &path, None, None, Some(&token));
    let r = reply(handlers::get_room(&app, req).await);
    assert_eq!(r.ok("获取房间信息成功")["room_name"], "会议_1");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_finds_the_room_name_behind_a_stage_prefix(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &[]).await;
    let req = Event::new("GET", "/prod/api/rooms/r1")
        .stage("prod")
        .token(&api.service())
        .request();
    let r = reply(handlers::get_room(&app, req).await);
    assert_eq!(r.ok("获取房间信息成功")["room_name"], "r1");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_refuses_a_raw_path_room_name_with_whitespace(pool: DbPool) {
    let app = common::app(pool);
    let token = common::service_token(&app);
    let req = event("GET", "/api/rooms/a%20b", None, None, Some(&token));
    reply(handlers::get_room(&app, req).await).err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_refuses_a_path_room_name_of_41_characters(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.get_room(&api.service(), &"r".repeat(41))
        .await
        .err(400, "invalid_parameters");
}

/// An app with the Redis cache on; fails (never skips) when Redis does not answer.
async fn cached_app(pool: DbPool) -> call_shared::App {
    let url = common::redis_url();
    let app = common::app_with(pool, &[("REDIS_URL", &url)]);
    assert!(app.cache.is_enabled());
    assert!(
        tokio::net::TcpStream::connect(
            url.trim_start_matches("redis://")
                .split('/')
                .next()
                .unwrap_or_default()
        )
        .await
        .is_ok(),
        "Redis must answer at {url}"
    );
    app
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_from_the_cache_reflects_a_change_made_since(pool: DbPool) {
    let app = cached_app(pool).await;
    let api = Api::new(&app);
    let room = events::unique("cache");
    api.open(&room, "alice", &["bob"]).await;
    let first = api.get_room(&api.service(), &room).await;
    assert_eq!(first.ok("获取房间信息成功")["status"], 0);
    assert!(
        app.cache.get_room(&room).await.room.is_some(),
        "the first read puts the room in the cache"
    );
    api.set_participant_status(&api.user("bob"), &room, "bob", 2)
        .await
        .ok("更新参与者状态成功");
    let second = api.get_room(&api.service(), &room).await;
    assert_eq!(second.ok("获取房间信息成功")["status"], 3);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_from_the_cache_admits_a_user_invited_since(pool: DbPool) {
    let app = cached_app(pool).await;
    let api = Api::new(&app);
    let room = events::unique("cache");
    api.open(&room, "alice", &["bob"]).await;
    api.get_room(&api.service(), &room)
        .await
        .ok("获取房间信息成功");
    api.invite(&api.service(), &room, &["carol"])
        .await
        .ok("邀请参与者成功");
    let r = api.get_room(&api.user("carol"), &room).await;
    assert_eq!(r.ok("获取房间信息成功")["room_name"], room.as_str());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_from_the_cache_refuses_a_user_without_a_row(pool: DbPool) {
    let app = cached_app(pool).await;
    let api = Api::new(&app);
    let room = events::unique("cache");
    api.open(&room, "alice", &["bob"]).await;
    api.get_room(&api.service(), &room)
        .await
        .ok("获取房间信息成功");
    assert!(app.cache.get_room(&room).await.room.is_some());
    api.get_room(&api.user("mallory"), &room)
        .await
        .err(403, "forbidden");
}

// ---------------------------------------------------------------- list

/// Five rooms r1..r5, each by its own creator c1..c5, created in that order.
async fn five_rooms(api: &Api<'_>) {
    for i in 1..=5 {
        api.open(&format!("r{i}"), &format!("c{i}"), &[]).await;
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_answers_the_seed_shape_newest_first(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    five_rooms(&api).await;
    let r = api.list_rooms(&api.service(), "limit=10&offset=0").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 5);
    assert_eq!(room_names(data), ["r5", "r4", "r3", "r2", "r1"]);
    let first = &data["rooms"][0];
    for field in [
        "id",
        "source_channel_id",
        "source_channel_type",
        "creator",
        "room_name",
        "call_type",
        "invite_on",
        "status",
        "created_at",
        "updated_at",
    ] {
        assert!(first.get(field).is_some(), "{field} missing in {first}");
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_defaults_to_ten_rooms(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    for i in 1..=12 {
        api.open(&format!("r{i}"), &format!("c{i}"), &[]).await;
    }
    let r = api.list_rooms(&api.service(), "").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 12);
    assert_eq!(room_names(data).len(), 10);
    assert_eq!(room_names(data)[0], "r12");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_pages_with_limit_and_offset(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    five_rooms(&api).await;
    let r = api.list_rooms(&api.service(), "limit=2&offset=2").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 5);
    assert_eq!(room_names(data), ["r3", "r2"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_last_page_holds_the_remainder(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    five_rooms(&api).await;
    let r = api.list_rooms(&api.service(), "limit=2&offset=4").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 5);
    assert_eq!(room_names(data), ["r1"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_past_the_end_is_empty_with_the_full_total(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    five_rooms(&api).await;
    let r = api.list_rooms(&api.service(), "limit=10&offset=10").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 5);
    assert_eq!(data["rooms"], json!([]));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_filters_by_status(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    five_rooms(&api).await;
    api.ended("r2").await;
    api.ended("r4").await;
    let r = api.list_rooms(&api.service(), "status=3").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 2);
    assert_eq!(room_names(data), ["r4", "r2"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_filters_by_creator(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    five_rooms(&api).await;
    api.ended("r1").await;
    api.open("r6", "c1", &[]).await;
    let r = api.list_rooms(&api.service(), "creator=c1").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 2);
    assert_eq!(room_names(data), ["r6", "r1"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_filters_by_uid_to_rooms_where_it_has_any_row(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.ended("r1").await; // bob's row is history now (6), not live
    api.open("r2", "carol", &[]).await;
    api.open("r3", "bob", &[]).await;
    api.open("r4", "dave", &["erin"]).await;
    let r = api.list_rooms(&api.service(), "uid=bob").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 2);
    assert_eq!(room_names(data), ["r3", "r1"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_filters_by_source_channel_id(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "a1", "source_channel_id": "g1" }))
        .await;
    api.open_with(json!({ "room_name": "r2", "creator": "a2", "source_channel_id": "g2" }))
        .await;
    api.ended("r1").await;
    api.open_with(json!({ "room_name": "r3", "creator": "a3", "source_channel_id": "g1" }))
        .await;
    let r = api.list_rooms(&api.service(), "source_channel_id=g1").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 2);
    assert_eq!(room_names(data), ["r3", "r1"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_filters_by_a_percent_encoded_creator(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "张三", &[]).await;
    api.open("r2", "bob", &[]).await;
    let query = format!("creator={}", encode("张三"));
    let r = api.list_rooms(&api.service(), &query).await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 1);
    assert_eq!(room_names(data), ["r1"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_combines_filters_and_counts_the_filtered_set(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &[]).await;
    api.ended("r1").await;
    api.open("r2", "alice", &[]).await;
    api.ended("r2").await;
    api.open("r3", "alice", &[]).await;
    api.open("r4", "bob", &[]).await;
    api.ended("r4").await;
    let r = api
        .list_rooms(&api.service(), "creator=alice&status=3&limit=1")
        .await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 2);
    assert_eq!(room_names(data), ["r2"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_for_a_user_lists_only_rooms_it_has_a_row_in(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.open("r2", "carol", &["dave"]).await;
    api.open("r3", "erin", &[]).await;
    let r = api.list_rooms(&api.user("bob"), "").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 1);
    assert_eq!(room_names(data), ["r1"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_for_a_user_overrides_a_uid_filter_naming_someone_else(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.open("r2", "carol", &["dave"]).await;
    let r = api.list_rooms(&api.user("bob"), "uid=carol").await;
    let data = r.ok("获取房间列表成功");
    assert_eq!(data["total"], 1);
    assert_eq!(room_names(data), ["r1"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_answers_in_english_when_accept_language_prefers_it(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::in_language(&app, "en");
    api.list_rooms(&api.service(), "").await.ok("Rooms listed");
}

// ---------------------------------------------------------------- status PUT

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_starts_a_room_for_its_creator(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api.set_room_status(&api.user("alice"), "r1", 1).await;
    let data = r.ok("更新房间状态成功");
    assert_eq!(data["room_name"], "r1");
    assert_eq!(data["status"], 1);
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_cancelled_ends_a_room_that_never_started(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api.set_room_status(&api.service(), "r1", 3).await;
    assert_eq!(r.ok("更新房间状态成功")["status"], 3);
    let pool = app.store.pool();
    assert_eq!(room_status(pool, "r1").await, Some(3));
    assert_eq!(status_of(pool, "r1", "bob").await, Some(6));
    assert_eq!(status_of(pool, "r1", "alice").await, Some(3));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_ended_closes_a_running_call(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    let r = api.set_room_status(&api.service(), "r1", 2).await;
    assert_eq!(r.ok("更新房间状态成功")["status"], 2);
    let pool = app.store.pool();
    assert_eq!(room_status(pool, "r1").await, Some(2));
    assert_eq!(status_of(pool, "r1", "alice").await, Some(3));
    assert_eq!(status_of(pool, "r1", "bob").await, Some(3));
    assert_eq!(status_of(pool, "r1", "carol").await, Some(4));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_to_the_same_value_changes_nothing(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let before = common::loaded_now(&app, "r1").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = api.set_room_status(&api.service(), "r1", 0).await;
    assert_eq!(r.ok("更新房间状态成功")["status"], 0);
    let after = common::loaded_now(&app, "r1").await;
    assert_eq!(after.room, before.room);
    assert_eq!(after.rows, before.rows);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_refuses_ending_a_room_that_never_started(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_room_status(&api.service(), "r1", 2)
        .await
        .err(409, "invalid_transition");
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_refuses_reopening_a_final_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.ended("r1").await;
    api.set_room_status(&api.service(), "r1", 1)
        .await
        .err(409, "invalid_transition");
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(3));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_refuses_an_unknown_status_code(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_room_status(&api.service(), "r1", 4)
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_is_forbidden_to_a_user_who_did_not_create_the_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_room_status(&api.user("bob"), "r1", 3)
        .await
        .err(403, "forbidden");
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_answers_404_for_an_unknown_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.set_room_status(&api.service(), "nope", 1)
        .await
        .err(404, "room_not_found");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn update_room_status_reads_the_room_name_from_the_raw_path(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let token = api.service();
    let req = event(
        "PUT",
        "/api/rooms/r1/status",
        None,
        Some(r#"{"status":1}"#),
        Some(&token),
    );
    let r = reply(handlers::update_room_status(&app, req).await);
    assert_eq!(r.ok("更新房间状态成功")["status"], 1);
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(1));
}

// ---------------------------------------------------------------- end

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn end_room_cancels_a_room_that_never_started(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    let r = api.end(&api.user("alice"), "r1").await;
    let data = r.ok("结束房间成功");
    assert_eq!(data["room_name"], "r1");
    assert_eq!(data["status"], 3);
    let pool = app.store.pool();
    assert_eq!(room_status(pool, "r1").await, Some(3));
    assert_eq!(status_of(pool, "r1", "bob").await, Some(6));
    assert_eq!(status_of(pool, "r1", "carol").await, Some(6));
    let alice = participant(pool, "r1", "alice").await.expect("creator row");
    assert_eq!(alice.status, 3);
    assert!(alice.leave_time > 0, "{alice:?}");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn end_room_ends_a_running_call(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    let r = api.end(&api.service(), "r1").await;
    assert_eq!(r.ok("结束房间成功")["status"], 2);
    let pool = app.store.pool();
    assert_eq!(room_status(pool, "r1").await, Some(2));
    let bob = participant(pool, "r1", "bob").await.expect("row");
    assert_eq!(bob.status, 3);
    assert!(bob.leave_time >= bob.join_time && bob.leave_time > 0);
    assert_eq!(status_of(pool, "r1", "alice").await, Some(3));
    assert_eq!(status_of(pool, "r1", "carol").await, Some(4));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn end_room_again_answers_200_and_changes_nothing(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.ended("r1").await;
    let before = common::loaded_now(&app, "r1").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = api.end(&api.service(), "r1").await;
    assert_eq!(r.ok("结束房间成功")["status"], 3);
    let after = common::loaded_now(&app, "r1").await;
    assert_eq!(after.room, before.room);
    assert_eq!(after.rows, before.rows);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn end_room_is_forbidden_to_a_user_who_did_not_create_the_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.end(&api.user("bob"), "r1").await.err(403, "forbidden");
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn end_room_answers_404_for_an_unknown_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.end(&api.service(), "nope")
        .await
        .err(404, "room_not_found");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn end_room_reads_the_room_name_from_the_raw_path(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let token = api.service();
    let req = event("POST", "/api/rooms/r1/end", None, None, Some(&token));
    let r = reply(handlers::end_room(&app, req).await);
    assert_eq!(r.ok("结束房间成功")["status"], 3);
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(3));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn end_room_asks_livekit_to_delete_the_room(pool: DbPool) {
    let stub = LiveKitStub::start().await;
    let app = common::app_with(pool, &[("LIVEKIT_URL", &stub.url)]);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.end(&api.service(), "r1").await.ok("结束房间成功");
    // The stub counts a DeleteRoom only when its token would pass LiveKit's checks.
    assert_eq!(stub.deleted(), vec!["r1".to_string()], "{:?}", stub.calls());
    stub.assert_accepted("DeleteRoom");
}
