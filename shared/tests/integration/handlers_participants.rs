//! Handler tests for the participant endpoints (join, leave, list, invite, status PUT), driven
//! by API Gateway HTTP API v2 events, asserting on status, envelope and the database afterwards.

use crate::common;
use crate::events;

use std::time::Duration;

use call_shared::handlers;
use call_shared::store::DbPool;
use serde_json::json;

use events::{Api, event, participant, reply, room_status, status_of};

// ---------------------------------------------------------------- join

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_answers_the_seed_shape(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("meeting_001", "user_001", &["user_002"]).await;
    let r = api
        .join(&api.user("user_002"), "meeting_001", "user_002")
        .await;
    let data = r.ok("加入房间成功");
    assert!(data["id"].as_i64().is_some_and(|id| id > 0), "{data}");
    assert_eq!(data["room_name"], "meeting_001");
    assert_eq!(data["uid"], "user_002");
    assert!(data["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(data["status"], 1);
    assert_eq!(data["livekit_url"], "wss://livekit.example.test");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_marks_the_row_joined_with_a_join_time(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let before = events::now_ms();
    let r = api.join(&api.user("bob"), "r1", "bob").await;
    let after = events::now_ms();
    let data = r.ok("加入房间成功");
    let bob = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    assert_eq!(bob.status, 1);
    assert!(
        bob.join_time >= before - 5 && bob.join_time <= after + 5,
        "join_time {} not within [{before}, {after}]",
        bob.join_time
    );
    assert_eq!(bob.leave_time, 0);
    assert_eq!(data["id"], bob.id);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_token_admits_the_uid_to_that_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api.join(&api.user("bob"), "r1", "bob").await;
    let claims = events::livekit_claims(&r.ok("加入房间成功")["token"]);
    assert_eq!(claims.sub, "bob");
    assert_eq!(claims.video.room, "r1");
    assert!(claims.video.room_join);
    assert!(claims.video.can_publish() && claims.video.can_subscribe());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_token_for_a_voice_call_publishes_the_microphone_only(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({
        "room_name": "voice", "creator": "alice", "call_type": 0, "invite_on": 1, "uids": ["bob"]
    }))
    .await;
    let r = api.join(&api.user("bob"), "voice", "bob").await;
    let claims = events::livekit_claims(&r.ok("加入房间成功")["token"]);
    assert_eq!(claims.video.room, "voice");
    assert_eq!(claims.video.can_publish_sources, vec!["microphone"]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_by_someone_other_than_the_creator_starts_the_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
    api.join(&api.user("bob"), "r1", "bob")
        .await
        .ok("加入房间成功");
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_by_the_creator_again_leaves_the_room_not_started(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.join(&api.user("alice"), "r1", "alice")
        .await
        .ok("加入房间成功");
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_repeated_answers_the_same_row_with_a_fresh_token(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let token = api.user("bob");
    let first = api.join(&token, "r1", "bob").await;
    let first = first.ok("加入房间成功").clone();
    let row = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = api.join(&token, "r1", "bob").await;
    let again = again.ok("加入房间成功");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["status"], 1);
    let claims = events::livekit_claims(&again["token"]);
    assert_eq!(
        (claims.sub.as_str(), claims.video.room.as_str()),
        ("bob", "r1")
    );
    assert_eq!(
        participant(app.store.pool(), "r1", "bob").await,
        Some(row),
        "a repeated join changes nothing"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_an_unknown_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.join(&api.user("bob"), "nope", "bob")
        .await
        .err(404, "room_not_found");
    assert_eq!(events::participant_count(app.store.pool()).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_a_final_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.ended("r1").await;
    api.join(&api.user("bob"), "r1", "bob")
        .await
        .err(409, "room_not_active");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(6));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_an_uninvited_uid_in_an_invite_only_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.join(&api.user("mallory"), "r1", "mallory")
        .await
        .err(403, "participant_not_invited");
    assert_eq!(status_of(app.store.pool(), "r1", "mallory").await, None);
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_a_uid_differing_only_in_case_from_the_invitee(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.join(&api.user("BOB"), "r1", "BOB")
        .await
        .err(403, "participant_not_invited");
    assert_eq!(status_of(app.store.pool(), "r1", "BOB").await, None);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_admits_an_uninvited_uid_when_invites_are_off(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "alice", "invite_on": 0 }))
        .await;
    api.join(&api.user("bob"), "r1", "bob")
        .await
        .ok("加入房间成功");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(1));
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_a_full_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({
        "room_name": "r1", "creator": "alice", "invite_on": 0, "max_participants": 2
    }))
    .await;
    api.joined("r1", "bob").await;
    api.join(&api.user("carol"), "r1", "carol")
        .await
        .err(409, "room_full");
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_an_invitee_beyond_capacity(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    // Inviting more people than max_participants is allowed; capacity is checked on join.
    api.open_with(json!({
        "room_name": "r1", "creator": "alice", "invite_on": 1, "max_participants": 2,
        "uids": ["bob", "carol"]
    }))
    .await;
    api.joined("r1", "bob").await;
    api.join(&api.user("carol"), "r1", "carol")
        .await
        .err(409, "room_full");
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_refuses_a_uid_live_in_another_call(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.open_with(json!({ "room_name": "r2", "creator": "carol", "invite_on": 0 }))
        .await;
    api.join(&api.user("bob"), "r2", "bob")
        .await
        .err(409, "participant_in_call");
    assert_eq!(status_of(app.store.pool(), "r2", "bob").await, None);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_lets_a_uid_that_rejected_join_after_all(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.set_participant_status(&api.user("bob"), "r1", "bob", 2)
        .await
        .ok("更新参与者状态成功");
    api.join(&api.user("bob"), "r1", "bob")
        .await
        .ok("加入房间成功");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_after_leaving_a_group_call_clears_the_leave_time(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    let token = api.user("bob");
    api.leave(&token, "r1", "bob").await.ok("离开房间成功");
    let left = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    assert!(left.leave_time > 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    api.join(&token, "r1", "bob").await.ok("加入房间成功");
    let back = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    assert_eq!(back.status, 1);
    assert_eq!(back.leave_time, 0);
    assert!(back.join_time > left.join_time, "{left:?} -> {back:?}");
    assert_eq!(back.id, left.id);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_is_forbidden_to_a_user_acting_for_another_uid(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.join(&api.user("mallory"), "r1", "bob")
        .await
        .err(403, "forbidden");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_answers_in_english_when_accept_language_prefers_it(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::in_language(&app, "en-GB");
    api.open("r1", "alice", &["bob"]).await;
    api.join(&api.user("bob"), "r1", "bob")
        .await
        .ok("Joined room");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_room_beyond_the_rate_limit_is_429_with_retry_after(pool: DbPool) {
    let app = common::app_with(
        pool,
        &[
            ("REDIS_URL", &common::redis_url()),
            ("RATE_LIMIT_JOIN_PER_MIN", "1"),
        ],
    );
    let api = Api::new(&app);
    let room = events::unique("rl");
    let bob = events::unique("bob");
    api.open(&room, "alice", &[&bob]).await;
    let token = api.user(&bob);
    api.join(&token, &room, &bob).await.ok("加入房间成功");
    // Two more tries: should the one-minute window roll over in between, the last one counts.
    let second = api.join(&token, &room, &bob).await;
    let limited = if second.status == 429 {
        second
    } else {
        api.join(&token, &room, &bob).await
    };
    limited.err(429, "rate_limited");
    let retry: u64 = limited
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After: {:?}", limited.retry_after));
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

// ---------------------------------------------------------------- concurrency

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn concurrent_joins_never_exceed_max_participants(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({
        "room_name": "r1", "creator": "alice", "invite_on": 0, "max_participants": 3
    }))
    .await;
    let s = api.service();
    let (a, b, c, d, e) = tokio::join!(
        api.join(&s, "r1", "u1"),
        api.join(&s, "r1", "u2"),
        api.join(&s, "r1", "u3"),
        api.join(&s, "r1", "u4"),
        api.join(&s, "r1", "u5"),
    );
    let replies = [a, b, c, d, e];
    let admitted = replies.iter().filter(|r| r.status == 200).count();
    for r in replies.iter().filter(|r| r.status != 200) {
        r.err(409, "room_full");
    }
    assert_eq!(admitted, 2, "alice plus two more make three");
    let state = common::loaded_now(&app, "r1").await;
    let joined = state.rows.iter().filter(|p| p.status.code() == 1).count();
    assert_eq!(joined, 3);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_uid_joining_two_rooms_at_once_is_live_in_only_one(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "alice", "invite_on": 0 }))
        .await;
    api.open_with(json!({ "room_name": "r2", "creator": "carol", "invite_on": 0 }))
        .await;
    let s = api.service();
    let (one, two) = tokio::join!(api.join(&s, "r1", "bob"), api.join(&s, "r2", "bob"));
    let (won, lost) = if one.status == 200 {
        (one, two)
    } else {
        (two, one)
    };
    won.ok("加入房间成功");
    lost.err(409, "participant_in_call");
    let live = [
        status_of(app.store.pool(), "r1", "bob").await,
        status_of(app.store.pool(), "r2", "bob").await,
    ];
    assert_eq!(
        live.iter().filter(|s| **s == Some(1)).count(),
        1,
        "{live:?}"
    );
    assert!(
        live.contains(&None),
        "the refused join wrote no row: {live:?}"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn concurrent_creates_of_one_room_name_leave_one_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let s = api.service();
    let bodies = ["alice", "bob", "carol"].map(|c| json!({ "room_name": "r1", "creator": c }));
    let (a, b, c) = tokio::join!(
        api.create(&s, &bodies[0]),
        api.create(&s, &bodies[1]),
        api.create(&s, &bodies[2]),
    );
    let replies = [a, b, c];
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 1);
    for r in replies.iter().filter(|r| r.status != 200) {
        r.err(409, "room_already_exists");
    }
    assert_eq!(events::room_count(app.store.pool()).await, 1);
    assert_eq!(events::participant_count(app.store.pool()).await, 1);
}

// ---------------------------------------------------------------- leave

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_answers_the_updated_row(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    let r = api.leave(&api.user("bob"), "r1", "bob").await;
    let data = r.ok("离开房间成功");
    assert_eq!(data["room_name"], "r1");
    assert_eq!(data["uid"], "bob");
    assert_eq!(data["status"], 3);
    assert!(data["leave_time"].as_i64().is_some_and(|t| t > 0), "{data}");
    let bob = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    assert_eq!(bob.status, 3);
    assert_eq!(data["leave_time"], bob.leave_time);
    assert!(bob.leave_time >= bob.join_time);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_ends_a_two_person_call(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.joined("r1", "bob").await;
    api.leave(&api.user("bob"), "r1", "bob")
        .await
        .ok("离开房间成功");
    let pool = app.store.pool();
    assert_eq!(room_status(pool, "r1").await, Some(2));
    let alice = participant(pool, "r1", "alice").await.expect("row");
    assert_eq!(alice.status, 3);
    assert!(alice.leave_time > 0, "{alice:?}");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_keeps_a_group_call_running_while_two_are_in(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    api.leave(&api.user("bob"), "r1", "bob")
        .await
        .ok("离开房间成功");
    let pool = app.store.pool();
    assert_eq!(room_status(pool, "r1").await, Some(1));
    assert_eq!(status_of(pool, "r1", "alice").await, Some(1));
    assert_eq!(status_of(pool, "r1", "carol").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_by_the_creator_before_an_answer_cancels_the_call(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.leave(&api.user("alice"), "r1", "alice")
        .await
        .ok("离开房间成功");
    let pool = app.store.pool();
    assert_eq!(room_status(pool, "r1").await, Some(3));
    assert_eq!(status_of(pool, "r1", "bob").await, Some(6));
    assert_eq!(status_of(pool, "r1", "carol").await, Some(6));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_again_answers_200_and_changes_nothing(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.joined("r1", "bob").await;
    let token = api.user("bob");
    api.leave(&token, "r1", "bob").await.ok("离开房间成功");
    let row = participant(app.store.pool(), "r1", "bob").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = api.leave(&token, "r1", "bob").await;
    assert_eq!(again.ok("离开房间成功")["status"], 3);
    assert_eq!(participant(app.store.pool(), "r1", "bob").await, row);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_refuses_a_uid_without_a_row(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.leave(&api.user("zed"), "r1", "zed")
        .await
        .err(404, "participant_not_found");
    assert_eq!(status_of(app.store.pool(), "r1", "zed").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_refuses_a_ringing_uid(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.leave(&api.user("bob"), "r1", "bob")
        .await
        .err(409, "invalid_transition");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_refuses_an_unknown_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.leave(&api.user("bob"), "nope", "bob")
        .await
        .err(404, "room_not_found");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn leave_room_is_forbidden_to_a_user_acting_for_another_uid(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.joined("r1", "bob").await;
    api.leave(&api.user("mallory"), "r1", "bob")
        .await
        .err(403, "forbidden");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(1));
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(1));
}

// ---------------------------------------------------------------- list participants

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_participants_answers_the_seed_shape(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("meeting_001", "user_001", &["user_002", "user_003"])
        .await;
    api.joined("meeting_001", "user_002").await;
    let r = api.participants(&api.service(), "meeting_001").await;
    let data = r.ok("获取参与者列表成功");
    let rows = data
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {data}"));
    let uids: Vec<&str> = rows.iter().filter_map(|p| p["uid"].as_str()).collect();
    assert_eq!(uids, ["user_001", "user_002", "user_003"]);
    let joined = &rows[1];
    assert!(joined["id"].as_i64().is_some_and(|id| id > 0));
    assert_eq!(joined["room_name"], "meeting_001");
    assert_eq!(joined["status"], 1);
    let join_time = joined["join_time"].as_i64().expect("join_time");
    assert!(
        join_time > 1_600_000_000_000,
        "join_time is Unix ms: {join_time}"
    );
    assert_eq!(joined["leave_time"], 0);
    events::assert_rfc3339_utc(&joined["created_at"]);
    events::assert_rfc3339_utc(&joined["updated_at"]);
    assert_eq!(rows[2]["status"], 0);
    assert_eq!(rows[2]["join_time"], 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_participants_is_allowed_to_a_participant(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api.participants(&api.user("bob"), "r1").await;
    let data = r.ok("获取参与者列表成功");
    assert_eq!(data.as_array().map(Vec::len), Some(2));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_participants_is_forbidden_to_a_user_without_a_row(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.participants(&api.user("mallory"), "r1")
        .await
        .err(403, "forbidden");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_participants_answers_404_for_an_unknown_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.participants(&api.service(), "nope")
        .await
        .err(404, "room_not_found");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_participants_reads_the_room_name_from_the_raw_path(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let token = api.service();
    let req = event(
        "GET",
        "/api/rooms/r1/participants",
        None,
        None,
        Some(&token),
    );
    let r = reply(handlers::list_participants(&app, req).await);
    assert_eq!(r.ok("获取参与者列表成功").as_array().map(Vec::len), Some(2));
}

// ---------------------------------------------------------------- invite

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_rings_the_invitees_for_the_creator(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api
        .invite(&api.user("alice"), "r1", &["carol", "dave"])
        .await;
    let data = r.ok("邀请参与者成功");
    let rows: Vec<(&str, i64)> = data
        .as_array()
        .expect("rows")
        .iter()
        .map(|p| {
            (
                p["uid"].as_str().unwrap_or_default(),
                p["status"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(rows, [("carol", 0), ("dave", 0)]);
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, Some(0));
    assert_eq!(status_of(app.store.pool(), "r1", "dave").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_records_a_uid_live_in_another_call_as_busy(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.open("r2", "carol", &["dave"]).await;
    let r = api.invite(&api.service(), "r1", &["dave"]).await;
    let data = r.ok("邀请参与者成功");
    assert_eq!(data[0]["uid"], "dave");
    assert_eq!(data[0]["status"], 5);
    let dave = participant(app.store.pool(), "r1", "dave")
        .await
        .expect("row");
    assert_eq!((dave.status, dave.join_time, dave.leave_time), (5, 0, 0));
    assert_eq!(status_of(app.store.pool(), "r2", "dave").await, Some(0));
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_leaves_joined_rows_as_they_are(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    let before = participant(app.store.pool(), "r1", "bob").await;
    let r = api.invite(&api.service(), "r1", &["bob"]).await;
    assert_eq!(r.ok("邀请参与者成功")[0]["status"], 1);
    assert_eq!(participant(app.store.pool(), "r1", "bob").await, before);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_rings_a_uid_that_rejected_again(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.set_participant_status(&api.user("bob"), "r1", "bob", 2)
        .await
        .ok("更新参与者状态成功");
    let r = api.invite(&api.user("alice"), "r1", &["bob"]).await;
    assert_eq!(r.ok("邀请参与者成功")[0]["status"], 0);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_resets_the_times_of_a_uid_that_left(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.leave(&api.user("bob"), "r1", "bob")
        .await
        .ok("离开房间成功");
    assert_eq!(
        room_status(app.store.pool(), "r1").await,
        Some(1),
        "carol still rings"
    );
    let r = api.invite(&api.user("alice"), "r1", &["bob"]).await;
    let data = r.ok("邀请参与者成功");
    assert_eq!(data[0]["status"], 0);
    assert_eq!(
        (data[0]["join_time"].clone(), data[0]["leave_time"].clone()),
        (json!(0), json!(0))
    );
    let bob = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    assert_eq!((bob.status, bob.join_time, bob.leave_time), (0, 0, 0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_is_forbidden_to_a_user_who_did_not_create_the_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.invite(&api.user("bob"), "r1", &["carol"])
        .await
        .err(403, "forbidden");
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_refuses_a_final_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.ended("r1").await;
    api.invite(&api.service(), "r1", &["carol"])
        .await
        .err(409, "room_not_active");
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_refuses_an_empty_uid_list(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.invite(&api.service(), "r1", &[])
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_refuses_a_uid_with_a_slash(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.invite(&api.service(), "r1", &["carol", "a/b"])
        .await
        .err(400, "invalid_parameters");
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_answers_404_for_an_unknown_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.invite(&api.service(), "nope", &["carol"])
        .await
        .err(404, "room_not_found");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_reads_the_room_name_from_the_raw_path(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let token = api.service();
    let req = event(
        "POST",
        "/api/rooms/r1/invite",
        None,
        Some(r#"{"uids":["carol"]}"#),
        Some(&token),
    );
    let r = reply(handlers::invite_participants(&app, req).await);
    assert_eq!(r.ok("邀请参与者成功")[0]["uid"], "carol");
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, Some(0));
}

// ---------------------------------------------------------------- participant status PUT

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_reject_by_the_invitee(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    let r = api
        .set_participant_status(&api.user("bob"), "r1", "bob", 2)
        .await;
    let data = r.ok("更新参与者状态成功");
    assert_eq!(data["uid"], "bob");
    assert_eq!(data["status"], 2);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(2));
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_reject_by_the_only_invitee_cancels_the_call(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_participant_status(&api.user("bob"), "r1", "bob", 2)
        .await
        .ok("更新参与者状态成功");
    let pool = app.store.pool();
    assert_eq!(room_status(pool, "r1").await, Some(3));
    assert_eq!(status_of(pool, "r1", "alice").await, Some(3));
    assert_eq!(status_of(pool, "r1", "bob").await, Some(2));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_leave_by_the_participant(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    let r = api
        .set_participant_status(&api.user("bob"), "r1", "bob", 3)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["status"], 3);
    let bob = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    assert_eq!(bob.status, 3);
    assert!(bob.leave_time > 0, "{bob:?}");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_join_by_the_uid_answers_the_row_without_a_token(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api
        .set_participant_status(&api.user("bob"), "r1", "bob", 1)
        .await;
    let data = r.ok("更新参与者状态成功");
    assert_eq!(data["status"], 1);
    assert!(data.get("token").is_none(), "{data}");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(1));
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_join_creates_a_row_when_invites_are_off(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({ "room_name": "r1", "creator": "alice", "invite_on": 0 }))
        .await;
    let r = api
        .set_participant_status(&api.user("bob"), "r1", "bob", 1)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["status"], 1);
    let bob = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    assert_eq!(bob.status, 1);
    assert!(bob.join_time > 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_ring_again_by_the_creator(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.set_participant_status(&api.user("bob"), "r1", "bob", 2)
        .await
        .ok("更新参与者状态成功");
    let r = api
        .set_participant_status(&api.user("alice"), "r1", "bob", 0)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["status"], 0);
    let bob = participant(app.store.pool(), "r1", "bob")
        .await
        .expect("row");
    assert_eq!((bob.status, bob.join_time, bob.leave_time), (0, 0, 0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_ring_again_creates_a_row_for_a_new_uid(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let r = api
        .set_participant_status(&api.user("alice"), "r1", "dave", 0)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["uid"], "dave");
    assert_eq!(status_of(app.store.pool(), "r1", "dave").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_ring_again_records_a_uid_live_elsewhere_as_busy(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.set_participant_status(&api.user("bob"), "r1", "bob", 2)
        .await
        .ok("更新参与者状态成功");
    api.open("r2", "erin", &["bob"]).await;
    // Ring again is the invite action: an invitee live elsewhere is recorded as 5 instead.
    let r = api
        .set_participant_status(&api.user("alice"), "r1", "bob", 0)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["status"], 5);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(5));
    assert_eq!(status_of(app.store.pool(), "r2", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_ring_again_by_a_non_creator_is_forbidden(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.set_participant_status(&api.user("carol"), "r1", "carol", 2)
        .await
        .ok("更新参与者状态成功");
    api.set_participant_status(&api.user("bob"), "r1", "carol", 0)
        .await
        .err(403, "forbidden");
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, Some(2));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_cancel_by_the_creator(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    let r = api
        .set_participant_status(&api.user("alice"), "r1", "carol", 6)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["status"], 6);
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, Some(6));
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
    assert_eq!(room_status(app.store.pool(), "r1").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_cancel_by_a_non_creator_is_forbidden(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.set_participant_status(&api.user("bob"), "r1", "carol", 6)
        .await
        .err(403, "forbidden");
    assert_eq!(status_of(app.store.pool(), "r1", "carol").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_reject_for_someone_else_is_forbidden(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_participant_status(&api.user("alice"), "r1", "bob", 2)
        .await
        .err(403, "forbidden");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_missed_is_forbidden_to_a_user(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_participant_status(&api.user("alice"), "r1", "bob", 4)
        .await
        .err(403, "forbidden");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_busy_is_forbidden_to_a_user(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_participant_status(&api.user("bob"), "r1", "bob", 5)
        .await
        .err(403, "forbidden");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_missed_by_the_service(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    let r = api
        .set_participant_status(&api.service(), "r1", "bob", 4)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["status"], 4);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(4));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_busy_by_the_service(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    let r = api
        .set_participant_status(&api.service(), "r1", "bob", 5)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["status"], 5);
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(5));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_refuses_an_invalid_transition(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    // Hanging up needs a joined row; bob is still ringing.
    let r = api
        .set_participant_status(&api.user("bob"), "r1", "bob", 3)
        .await;
    r.err(409, "invalid_transition");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_refuses_rejecting_a_joined_row(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.set_participant_status(&api.user("bob"), "r1", "bob", 2)
        .await
        .err(409, "invalid_transition");
    assert_eq!(status_of(app.store.pool(), "r1", "bob").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_answers_404_for_a_uid_without_a_row(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_participant_status(&api.service(), "r1", "zed", 2)
        .await
        .err(404, "participant_not_found");
    assert_eq!(status_of(app.store.pool(), "r1", "zed").await, None);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_answers_404_for_an_unknown_room(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.set_participant_status(&api.service(), "nope", "bob", 2)
        .await
        .err(404, "room_not_found");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_to_the_same_value_answers_200_unchanged(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let before = participant(app.store.pool(), "r1", "bob").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = api
        .set_participant_status(&api.user("alice"), "r1", "bob", 0)
        .await;
    assert_eq!(r.ok("更新参与者状态成功")["status"], 0);
    assert_eq!(participant(app.store.pool(), "r1", "bob").await, before);
    let state = common::loaded_now(&app, "r1").await;
    let bob = state.rows.iter().find(|p| p.uid == "bob").expect("bob");
    assert_eq!(
        bob.updated_at, bob.created_at,
        "the ring timer did not restart"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_refuses_an_unknown_status_code(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.set_participant_status(&api.service(), "r1", "bob", 7)
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_status_reads_room_and_uid_from_the_raw_path(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["张三", "bob"]).await;
    let token = api.user("张三");
    let path = format!(
        "/api/rooms/r1/participants/{}/status",
        events::encode("张三")
    );
    let req = event("PUT", &path, None, Some(r#"{"status":2}"#), Some(&token));
    let r = reply(handlers::update_participant_status(&app, req).await);
    let data = r.ok("更新参与者状态成功");
    assert_eq!(data["uid"], "张三");
    assert_eq!(data["status"], 2);
    assert_eq!(status_of(app.store.pool(), "r1", "张三").await, Some(2));
}
