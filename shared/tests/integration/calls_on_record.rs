//! Calls on record: per-call limits on create, ring deadlines kept to the second on every read
//! and action (and written down by the sweep), why each call and each row ended, how long they
//! rang and talked, a uid's ringing invites and call history, taking someone out of a call, and
//! the room list's cursor and exact totals.
//!
//! Store calls take an explicit `now`, so the clock is the test's: a call made at t0 is read or
//! changed at t0 + n without waiting. Handlers use the current time, so a call the store made
//! an hour ago has passed every deadline it had when a handler reads it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use call_shared::handlers;
use call_shared::http::msg;
use call_shared::model::{
    CallLimits, EndReason, Now, ParticipantStatus as P, Reason, RoomStatus as R,
};
use call_shared::rules::{Action, CallState};
use call_shared::store::{ActionResult, DbPool, NewRoom};
use call_shared::sweeper::sweep;
use call_shared::{ApiError, App};
use lambda_http::{Body, Response};
use serde_json::{Value, json};

use crate::common;
use crate::events::{self, Api, Event, Reply, encode, reply, room_status, status_of};
use crate::livekit::{LiveKitStub, signed_webhook};

// ---------------------------------------------------------------------------------------------
// The clock, calls made through the store, and what the database holds.

/// A whole second in the past, for tests that only talk to the store.
fn t0() -> Now {
    Now::from_millis(1_700_000_000_000).expect("instant")
}

/// A whole second an hour ago: a call the store made then has passed its deadlines for the
/// handlers, which read at the current time.
fn an_hour_ago() -> Now {
    let ms = Now::current().ms - 3_600_000;
    Now::from_millis(ms - ms.rem_euclid(1000)).expect("instant")
}

fn plus_ms(at: Now, ms: i64) -> Now {
    Now::from_millis(at.ms + ms).expect("instant")
}

fn plus(at: Now, secs: i64) -> Now {
    plus_ms(at, secs * 1000)
}

/// An instant as the API writes it.
fn text(at: Now) -> String {
    at.at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn seconds_of(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"))
        .timestamp()
}

const fn limits(ring: i32, max: i32, solo: i32) -> CallLimits {
    CallLimits {
        ring_timeout_seconds: ring,
        max_duration_seconds: max,
        solo_timeout_seconds: solo,
    }
}

const RING_30: CallLimits = limits(30, 0, 0);

fn new_room(room: &str, creator: &str, limits: CallLimits) -> NewRoom {
    NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: creator.to_owned(),
        room_name: room.to_owned(),
        call_type: 1,
        invite_on: 1,
        max_participants: 10,
        limits,
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The store creates the call at `at`: `creator` joined, `uids` ringing.
async fn open_at(
    app: &App,
    room: &str,
    creator: &str,
    uids: &[&str],
    limits: CallLimits,
    at: Now,
) -> CallState {
    app.store
        .create_room(&new_room(room, creator, limits), &strings(uids), at)
        .await
        .unwrap_or_else(|e| panic!("create {room} at {}: {e}", text(at)))
}

/// One participant action through the store at `at`.
async fn act(app: &App, room: &str, uid: &str, action: Action, at: Now) -> ActionResult {
    app.store
        .participant_action(room, uid, action, at, |_| Ok(()))
        .await
        .unwrap_or_else(|e| panic!("{action:?} {uid} in {room} at {}: {e}", text(at)))
}

fn row_of<'a>(state: &'a CallState, uid: &str) -> &'a call_shared::model::Participant {
    state
        .row(uid)
        .unwrap_or_else(|| panic!("{uid} has no row in {}", state.room.room_name))
}

async fn reason_in_db(pool: &DbPool, room: &str, uid: &str) -> Option<String> {
    sqlx::query_scalar("SELECT reason FROM call_participant WHERE room_name = ? AND uid = ?")
        .bind(room)
        .bind(uid)
        .fetch_one(pool)
        .await
        .expect("read reason")
}

async fn end_reason_in_db(pool: &DbPool, room: &str) -> Option<String> {
    sqlx::query_scalar("SELECT end_reason FROM call_room WHERE room_name = ?")
        .bind(room)
        .fetch_one(pool)
        .await
        .expect("read end_reason")
}

async fn count(pool: &DbPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn names(pool: &DbPool, sql: &'static str) -> Vec<String> {
    sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `room_count` (the list's totals) agrees with the rooms, status by status.
async fn assert_room_count_exact(pool: &DbPool, when: &str) {
    for status in 0i16..=3 {
        let kept: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM room_count WHERE status = ?",
        )
        .bind(status)
        .fetch_one(pool)
        .await
        .expect("room_count");
        let rooms: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_room WHERE status = ?")
            .bind(status)
            .fetch_one(pool)
            .await
            .expect("count");
        assert_eq!(kept, rooms, "{when}: rooms at status {status}");
    }
}

// ---------------------------------------------------------------------------------------------
// The endpoints the shared `Api` has no method for, and a signed webhook.

/// The handler's answer, then (as another instance would) a check that nothing is held.
async fn answered(
    app: &App,
    handler: impl Future<Output = Result<Response<Body>, lambda_http::Error>>,
) -> Reply {
    let answer = reply(handler.await);
    common::assert_nothing_held(app.store.pool()).await;
    answer
}

fn with_token(ev: Event, token: Option<&str>) -> Event {
    match token {
        Some(token) => ev.token(token),
        None => ev,
    }
}

async fn remove(app: &App, token: Option<&str>, room: &str, uid: &str) -> Reply {
    let path = format!(
        "/api/rooms/{}/participants/{}/remove",
        encode(room),
        encode(uid)
    );
    let req = with_token(Event::new("POST", &path), token).request();
    answered(app, handlers::remove_participant(app, req)).await
}

async fn ringing(app: &App, token: Option<&str>, uid: &str) -> Reply {
    let path = format!("/api/users/{}/ringing", encode(uid));
    let req = with_token(Event::new("GET", &path), token).request();
    answered(app, handlers::user_ringing(app, req)).await
}

async fn calls(app: &App, token: Option<&str>, uid: &str, query: &str) -> Reply {
    let path = format!("/api/users/{}/calls", encode(uid));
    let req = with_token(Event::new("GET", &path), token)
        .query(query)
        .request();
    answered(app, handlers::user_calls(app, req)).await
}

/// A LiveKit webhook signed as LiveKit signs it, dated a second from now (never stale);
/// returns the `outcome` the service answered.
async fn webhook(app: &App, event: &str, room: &str, uid: Option<&str>) -> Value {
    let at = Now::current().ms / 1000 + 1;
    let id = events::unique("EV");
    let (body, token) = signed_webhook(
        common::LIVEKIT_KEY,
        common::LIVEKIT_SECRET,
        event,
        room,
        uid,
        &id,
        at,
    );
    let req = Event::new("POST", "/api/webhooks/livekit")
        .header("content-type", "application/webhook+json")
        .header("authorization", &token)
        .body(&body)
        .request();
    let r = answered(app, handlers::livekit_webhook(app, req)).await;
    r.ok(msg::WEBHOOK_HANDLED.0)["outcome"].clone()
}

/// The row of `uid` in a list-participants answer.
#[track_caller]
fn row<'a>(rows: &'a Value, uid: &str) -> &'a Value {
    rows.as_array()
        .unwrap_or_else(|| panic!("not a list of rows: {rows}"))
        .iter()
        .find(|r| r["uid"] == uid)
        .unwrap_or_else(|| panic!("no row for {uid} in {rows}"))
}

// ---------------------------------------------------------------------------------------------
// LiveKit's RoomService.

/// An App that talks to the RoomService stub (LIVEKIT_URL set).
async fn app_with_livekit(pool: DbPool) -> (App, LiveKitStub) {
    let stub = LiveKitStub::start().await;
    let app = common::app_with(pool, &[("LIVEKIT_URL", stub.url.as_str())]);
    (app, stub)
}

async fn pending_removals(pool: &DbPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT room_name, uid FROM livekit_removal ORDER BY room_name, uid")
        .fetch_all(pool)
        .await
        .expect("read livekit_removal")
}

// ---------------------------------------------------------------------------------------------
// 1. Limits on create.

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_accepts_call_limits_and_echoes_them(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let cases: [(&str, i64, i64, i64); 2] = [
        ("the low end of each range", 5, 60, 10),
        ("the high end of each range", 180, 86_400, 3_600),
    ];
    for (i, (name, ring, longest, solo)) in cases.into_iter().enumerate() {
        let room = format!("r{i}");
        let body = json!({
            "room_name": room,
            "creator": format!("alice{i}"),
            "uids": [format!("bob{i}")],
            "ring_timeout_seconds": ring,
            "max_duration_seconds": longest,
            "solo_timeout_seconds": solo,
        });
        let created = api.create(&api.service(), &body).await;
        let fetched = api.get_room(&api.service(), &room).await;
        for (answer, data) in [
            ("create", created.ok(msg::ROOM_CREATED.0)),
            ("get room", fetched.ok(msg::ROOM_FETCHED.0)),
        ] {
            assert_eq!(data["ring_timeout_seconds"], ring, "{name}: {answer}");
            assert_eq!(data["max_duration_seconds"], longest, "{name}: {answer}");
            assert_eq!(data["solo_timeout_seconds"], solo, "{name}: {answer}");
        }
        let rows = api.participants(&api.service(), &room).await;
        let bob = row(rows.ok(msg::PARTICIPANTS_LISTED.0), &format!("bob{i}")).clone();
        assert_eq!(
            seconds_of(&bob["ring_deadline"]) - seconds_of(&bob["invited_at"]),
            ring,
            "{name}: the invite rings for ring_timeout_seconds"
        );
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_refuses_limits_out_of_range_or_of_the_wrong_type(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    let cases: [(&str, &str, Value); 12] = [
        ("ring below 5", "ring_timeout_seconds", json!(4)),
        ("ring above 180", "ring_timeout_seconds", json!(181)),
        ("ring negative", "ring_timeout_seconds", json!(-30)),
        ("ring as a string", "ring_timeout_seconds", json!("30")),
        ("longest below 60", "max_duration_seconds", json!(59)),
        ("longest above 86400", "max_duration_seconds", json!(86_401)),
        (
            "longest as a fraction",
            "max_duration_seconds",
            json!(600.5),
        ),
        ("longest as a list", "max_duration_seconds", json!([600])),
        ("solo below 10", "solo_timeout_seconds", json!(9)),
        ("solo above 3600", "solo_timeout_seconds", json!(3_601)),
        ("solo as a boolean", "solo_timeout_seconds", json!(true)),
        (
            "solo beyond any integer",
            "solo_timeout_seconds",
            json!(1e20),
        ),
    ];
    for (name, field, value) in cases {
        let mut body = json!({"room_name": "r1", "creator": "alice", "uids": ["bob"]});
        body[field] = value;
        let r = api.create(&api.service(), &body).await;
        assert_eq!(r.status, 400, "{name}: {}", r.body);
        r.err(400, "invalid_parameters");
    }
    assert_eq!(events::room_count(&pool).await, 0, "nothing was written");
    assert_eq!(events::participant_count(&pool).await, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn absent_limits_take_the_configured_defaults(pool: DbPool) {
    let configured: &[(&str, &str)] = &[
        ("RING_TIMEOUT_SECONDS", "45"),
        ("MAX_CALL_SECONDS", "7200"),
        ("SOLO_TIMEOUT_SECONDS", "120"),
    ];
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Value,
        [i64; 3],
    );
    let cases: [Case; 4] = [
        ("nothing configured", &[], json!({}), [60, 0, 0]),
        (
            "all three configured",
            configured,
            json!({}),
            [45, 7200, 120],
        ),
        (
            "one given, the others configured",
            configured,
            json!({"ring_timeout_seconds": 20}),
            [20, 7200, 120],
        ),
        (
            "null is absent",
            configured,
            json!({"max_duration_seconds": null}),
            [45, 7200, 120],
        ),
    ];
    for (i, (name, vars, extra, want)) in cases.into_iter().enumerate() {
        let app = common::app_with(pool.clone(), vars);
        let api = Api::new(&app);
        let room = format!("r{i}");
        let mut body = json!({"room_name": room, "creator": format!("alice{i}")});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let created = api.create(&api.service(), &body).await;
        let fetched = api.get_room(&api.service(), &room).await;
        for (answer, data) in [
            ("create", created.ok(msg::ROOM_CREATED.0)),
            ("get room", fetched.ok(msg::ROOM_FETCHED.0)),
        ] {
            let got = [
                &data["ring_timeout_seconds"],
                &data["max_duration_seconds"],
                &data["solo_timeout_seconds"],
            ];
            assert_eq!(got, want.map(|n| json!(n)).each_ref(), "{name}: {answer}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A ring deadline applies from its second, on every read and action.

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_ring_deadline_applies_from_its_second_when_the_call_is_loaded(pool: DbPool) {
    let app = common::app(pool);
    let t0 = t0();
    open_at(&app, "r1", "alice", &["bob"], RING_30, t0).await;

    for early in [plus(t0, 29), plus_ms(t0, 29_999)] {
        let state = app
            .store
            .load("r1", early)
            .await
            .expect("load")
            .expect("r1");
        let at = text(early);
        assert_eq!(state.room.status, R::NotStarted, "{at}");
        assert_eq!(row_of(&state, "bob").status, P::Ringing, "{at}");
        assert_eq!(row_of(&state, "bob").reason, None, "{at}");
        assert_eq!(state.room.end_reason, None, "{at}");
    }

    let due = plus(t0, 30);
    let state = app.store.load("r1", due).await.expect("load").expect("r1");
    let bob = row_of(&state, "bob");
    assert_eq!((bob.status, bob.reason), (P::Missed, Some(Reason::Timeout)));
    assert_eq!(bob.ring_seconds, 30);
    assert_eq!(bob.ring_deadline, None, "it rings no more");
    let alice = row_of(&state, "alice");
    assert_eq!(
        (alice.status, alice.reason),
        (P::HungUp, Some(Reason::NoAnswer))
    );
    assert_eq!(state.room.status, R::Cancelled);
    assert_eq!(state.room.end_reason, Some(EndReason::Missed));
    assert_eq!(state.room.ended_at, Some(due.at));
    assert_eq!(state.room.duration_seconds, 0, "it never ran");

    let later = app
        .store
        .load("r1", plus(t0, 600))
        .await
        .expect("load")
        .expect("r1");
    assert_eq!(
        later.room.ended_at,
        Some(due.at),
        "read later, it still ended at its deadline"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_and_list_participants_settle_a_passed_deadline_before_the_sweep(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    let t0 = an_hour_ago();
    open_at(&app, "r1", "alice", &["bob"], RING_30, t0).await;

    for token in [api.service(), api.user("bob")] {
        let got = api.get_room(&token, "r1").await;
        let room = got.ok(msg::ROOM_FETCHED.0);
        assert_eq!(room["status"], 3, "{room}");
        assert_eq!(room["end_reason"], "missed");
        assert_eq!(room["ended_at"], text(plus(t0, 30)));
        assert_eq!(room["started_at"], Value::Null);
        assert_eq!(room["duration_seconds"], 0);
        let listed = api.participants(&token, "r1").await;
        let rows = listed.ok(msg::PARTICIPANTS_LISTED.0);
        assert_eq!(row(rows, "bob")["status"], 4);
        assert_eq!(row(rows, "bob")["reason"], "timeout");
        assert_eq!(row(rows, "bob")["ring_seconds"], 30);
        assert_eq!(row(rows, "alice")["status"], 3);
        assert_eq!(row(rows, "alice")["reason"], "no_answer");
    }
    // Reads decide it; only the sweep writes it down. Another connection still sees the old rows.
    assert_eq!(room_status(&pool, "r1").await, Some(0));
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(0));
    assert_eq!(end_reason_in_db(&pool, "r1").await, None);

    let report = sweep(&app, Now::current()).await.expect("sweep");
    assert_eq!((report.deadlines_applied, report.rooms_closed), (1, 1));
    assert_eq!(room_status(&pool, "r1").await, Some(3));
    assert_eq!(
        end_reason_in_db(&pool, "r1").await.as_deref(),
        Some("missed")
    );
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(4));
    assert_eq!(
        reason_in_db(&pool, "r1", "bob").await.as_deref(),
        Some("timeout")
    );
    assert_eq!(status_of(&pool, "r1", "alice").await, Some(3));
    assert_eq!(
        reason_in_db(&pool, "r1", "alice").await.as_deref(),
        Some("no_answer")
    );
    let ended_at: Option<chrono::NaiveDateTime> =
        sqlx::query_scalar("SELECT ended_at FROM call_room WHERE room_name = 'r1'")
            .fetch_one(&pool)
            .await
            .expect("ended_at");
    assert_eq!(
        ended_at,
        Some(plus(t0, 30).at),
        "written as of the deadline"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_late_join_after_the_ring_deadline_is_room_not_active(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    open_at(&app, "r1", "alice", &["bob"], RING_30, an_hour_ago()).await;
    for (who, token) in [("the service", api.service()), ("bob", api.user("bob"))] {
        let r = api.join(&token, "r1", "bob").await;
        assert_eq!(r.status, 409, "{who}: {}", r.body);
        r.err(409, "room_not_active");
    }
    assert_ne!(status_of(&pool, "r1", "bob").await, Some(1));
}

/// Any action on a call whose invite rang out acts on the settled call: the rows are 4 and 3,
/// the room is closed, and an action that writes writes that down too.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn other_actions_after_the_ring_deadline_see_the_settled_call(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    let t0 = an_hour_ago();
    let cases: [(&str, u16, &str); 4] = [
        ("bob rejects late", 409, "invalid_transition"),
        ("alice rings bob again", 409, "room_not_active"),
        ("alice cancels bob's invite", 409, "invalid_transition"),
        ("alice ends the call", 200, ""),
    ];
    for (i, (name, status, key)) in cases.into_iter().enumerate() {
        let (room, alice, bob) = (format!("r{i}"), format!("alice{i}"), format!("bob{i}"));
        open_at(&app, &room, &alice, &[&bob], RING_30, t0).await;
        let (alice_token, bob_token) = (api.user(&alice), api.user(&bob));
        let r = match i {
            0 => api.set_participant_status(&bob_token, &room, &bob, 2).await,
            1 => api.invite(&alice_token, &room, &[&bob]).await,
            2 => {
                api.set_participant_status(&alice_token, &room, &bob, 6)
                    .await
            }
            _ => api.end(&alice_token, &room).await,
        };
        assert_eq!(r.status, status, "{name}: {}", r.body);
        if status != 200 {
            r.err(status, key);
            continue;
        }
        let data = r.ok(msg::ROOM_ENDED.0);
        assert_eq!(
            (&data["status"], &data["end_reason"], &data["ended_at"]),
            (&json!(3), &json!("missed"), &json!(text(plus(t0, 30)))),
            "{name}: it had closed at the deadline"
        );
        assert_eq!(room_status(&pool, &room).await, Some(3), "{name}: written");
        assert_eq!(
            end_reason_in_db(&pool, &room).await.as_deref(),
            Some("missed"),
            "{name}"
        );
        assert_eq!(status_of(&pool, &room, &bob).await, Some(4), "{name}");
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn in_a_running_group_call_a_missed_invitee_may_still_join(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    let t0 = an_hour_ago();
    open_at(&app, "r1", "alice", &["bob", "carol"], RING_30, t0).await;
    act(&app, "r1", "bob", Action::Join, plus(t0, 5)).await;

    let listed = api.participants(&api.service(), "r1").await;
    let rows = listed.ok(msg::PARTICIPANTS_LISTED.0);
    assert_eq!(row(rows, "carol")["status"], 4);
    assert_eq!(row(rows, "carol")["reason"], "timeout");
    let got = api.get_room(&api.service(), "r1").await;
    assert_eq!(
        got.ok(msg::ROOM_FETCHED.0)["status"],
        1,
        "alice and bob talk"
    );

    let r = api.join(&api.user("carol"), "r1", "carol").await;
    assert_eq!(r.ok(msg::JOINED.0)["status"], 1);
    assert_eq!(status_of(&pool, "r1", "carol").await, Some(1));
    assert_eq!(reason_in_db(&pool, "r1", "carol").await, None);
    assert_eq!(room_status(&pool, "r1").await, Some(1));
}

// ---------------------------------------------------------------------------------------------
// 3. The sweep writes down passed deadlines.

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_sweep_writes_a_passed_deadline_and_leaves_a_room_before_its_deadline(pool: DbPool) {
    let app = common::app(pool.clone());
    let t0 = t0();
    open_at(&app, "due", "alice", &["bob"], RING_30, t0).await;
    open_at(&app, "early", "carol", &["dave"], RING_30, plus(t0, 5)).await;
    let early_deadline = || async {
        sqlx::query_scalar::<_, Option<chrono::NaiveDateTime>>(
            "SELECT deadline FROM call_room WHERE room_name = 'early'",
        )
        .fetch_one(&pool)
        .await
        .expect("deadline")
    };
    assert_eq!(early_deadline().await, Some(plus(t0, 35).at));

    let now = plus(t0, 30);
    assert_eq!(
        app.store.rooms_due(now, 100).await.expect("rooms due"),
        vec!["due".to_string()]
    );
    let report = sweep(&app, now).await.expect("sweep");
    assert_eq!((report.deadlines_applied, report.rooms_closed), (1, 1));
    assert_eq!(room_status(&pool, "due").await, Some(3));
    assert_eq!(
        end_reason_in_db(&pool, "due").await.as_deref(),
        Some("missed")
    );
    assert_eq!(status_of(&pool, "due", "bob").await, Some(4));
    assert_eq!(
        reason_in_db(&pool, "due", "bob").await.as_deref(),
        Some("timeout")
    );

    assert_eq!(room_status(&pool, "early").await, Some(0), "untouched");
    assert_eq!(status_of(&pool, "early", "dave").await, Some(0));
    assert_eq!(reason_in_db(&pool, "early", "dave").await, None);
    assert_eq!(early_deadline().await, Some(plus(t0, 35).at));

    let again = sweep(&app, now).await.expect("sweep");
    assert_eq!(again.deadlines_applied, 0, "nothing left at this instant");
    let report = sweep(&app, plus(t0, 35)).await.expect("sweep");
    assert_eq!((report.deadlines_applied, report.rooms_closed), (1, 1));
    assert_eq!(room_status(&pool, "early").await, Some(3));
}

// ---------------------------------------------------------------------------------------------
// 4. A uid whose invite rang out is free elsewhere before the sweep writes it down.

#[derive(Debug, Clone, Copy)]
enum Elsewhere {
    /// The uid creates a call of its own.
    Creates,
    /// Another caller creates a call ringing the uid.
    IsRungOnCreate,
    /// Another caller's open call invites the uid.
    IsInvited,
    /// The uid joins an open room.
    Joins,
}

const ELSEWHERE: [Elsewhere; 4] = [
    Elsewhere::Creates,
    Elsewhere::IsRungOnCreate,
    Elsewhere::IsInvited,
    Elsewhere::Joins,
];

/// What `how` makes of `uid` in a new room `room` at `at`: its row's status there.
async fn elsewhere(
    app: &App,
    how: Elsewhere,
    uid: &str,
    room: &str,
    at: Now,
) -> Result<(P, Option<Reason>), ApiError> {
    let caller = format!("{room}_caller");
    let status_in = |state: &CallState| {
        let row = row_of(state, uid);
        (row.status, row.reason)
    };
    match how {
        Elsewhere::Creates => app
            .store
            .create_room(&new_room(room, uid, RING_30), &[], at)
            .await
            .map(|s| status_in(&s)),
        Elsewhere::IsRungOnCreate => app
            .store
            .create_room(&new_room(room, &caller, RING_30), &strings(&[uid]), at)
            .await
            .map(|s| status_in(&s)),
        Elsewhere::IsInvited => {
            open_at(app, room, &caller, &[], RING_30, plus(at, -1)).await;
            let (_, rows, _) = app
                .store
                .invite(room, &strings(&[uid]), at, |_| Ok(()))
                .await?;
            Ok((rows[0].status, rows[0].reason))
        }
        Elsewhere::Joins => {
            let open = NewRoom {
                invite_on: 0,
                ..new_room(room, &caller, RING_30)
            };
            app.store
                .create_room(&open, &[], plus(at, -1))
                .await
                .expect("open room");
            app.store
                .participant_action(room, uid, Action::Join, at, |_| Ok(()))
                .await
                .map(|r| (r.participant.status, r.participant.reason))
        }
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_uid_whose_invite_rang_out_is_free_elsewhere_before_the_sweep(pool: DbPool) {
    let app = common::app(pool.clone());
    let t0 = t0();
    for (i, how) in ELSEWHERE.into_iter().enumerate() {
        let (uid, a) = (format!("u{i}"), format!("a{i}"));
        open_at(&app, &a, &format!("c{i}"), &[&uid], RING_30, t0).await;
        assert_eq!(status_of(&pool, &a, &uid).await, Some(0), "{how:?}");

        let got = elsewhere(&app, how, &uid, &format!("b{i}"), plus(t0, 30)).await;
        let want = match how {
            Elsewhere::Creates | Elsewhere::Joins => P::Joined,
            Elsewhere::IsRungOnCreate | Elsewhere::IsInvited => P::Ringing,
        };
        assert_eq!(got, Ok((want, None)), "{how:?}: rings or joins, not busy");
        // The call that rang out was written down by the same transaction.
        assert_eq!(status_of(&pool, &a, &uid).await, Some(4), "{how:?}");
        assert_eq!(
            reason_in_db(&pool, &a, &uid).await.as_deref(),
            Some("timeout"),
            "{how:?}"
        );
        assert_eq!(room_status(&pool, &a).await, Some(3), "{how:?}");
        assert_eq!(
            end_reason_in_db(&pool, &a).await.as_deref(),
            Some("missed"),
            "{how:?}"
        );
        assert_room_count_exact(&pool, &format!("{how:?}")).await;
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_uid_ringing_before_its_deadline_is_busy_elsewhere(pool: DbPool) {
    let app = common::app(pool.clone());
    let t0 = t0();
    for (i, how) in ELSEWHERE.into_iter().enumerate() {
        let (uid, a) = (format!("u{i}"), format!("a{i}"));
        open_at(&app, &a, &format!("c{i}"), &[&uid], RING_30, t0).await;

        let got = elsewhere(&app, how, &uid, &format!("b{i}"), plus(t0, 29)).await;
        let busy = ApiError::ParticipantInCall {
            busy_uids: vec![uid.clone()],
        };
        let want = match how {
            Elsewhere::Creates => Err(ApiError::CreatorInAnotherCall),
            Elsewhere::IsRungOnCreate | Elsewhere::Joins => Err(busy),
            Elsewhere::IsInvited => Ok((P::Busy, Some(Reason::Busy))),
        };
        assert_eq!(got, want, "{how:?}");
        assert_eq!(
            status_of(&pool, &a, &uid).await,
            Some(0),
            "{how:?}: rings on"
        );
        assert_eq!(room_status(&pool, &a).await, Some(0), "{how:?}");
        assert_room_count_exact(&pool, &format!("{how:?}")).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Why each call and each row ended.

/// One step of a scenario. Names are the case's own (suffixed per case, so the cases share a
/// database without sharing uids); "r" is the room whose outcome the case checks.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The service creates `room` now: `creator` calls `uids` (ringing 60 s).
    Open(&'static str, &'static str, &'static [&'static str]),
    /// The store created `room` an hour ago with these limits.
    OpenAnHourAgo(
        &'static str,
        &'static str,
        &'static [&'static str],
        CallLimits,
    ),
    /// Through the store, this many seconds after that hour-ago create.
    After(i64, &'static str, &'static str, Action),
    Join(&'static str, &'static str),
    Leave(&'static str, &'static str),
    /// The service PUTs a participant status.
    Put(&'static str, &'static str, i64),
    Invite(&'static str, &'static [&'static str]),
    End(&'static str),
    /// The room's creator removes the uid.
    Remove(&'static str, &'static str),
    /// A LiveKit webhook: event, room, uid.
    Webhook(&'static str, &'static str, Option<&'static str>),
}

async fn run_steps(app: &App, case: &str, steps: &[Step], name: &dyn Fn(&str) -> String) {
    let api = Api::new(app);
    let service = api.service();
    let t0 = an_hour_ago();
    let all = |uids: &[&str]| uids.iter().map(|u| name(u)).collect::<Vec<_>>();
    for step in steps {
        let answer = match *step {
            Step::Open(room, creator, uids) => {
                let body = json!({
                    "room_name": name(room),
                    "creator": name(creator),
                    "invite_on": 1,
                    "max_participants": 10,
                    "uids": all(uids),
                });
                api.create(&service, &body).await
            }
            Step::OpenAnHourAgo(room, creator, uids, limits) => {
                let uids = all(uids);
                let uids: Vec<&str> = uids.iter().map(String::as_str).collect();
                open_at(app, &name(room), &name(creator), &uids, limits, t0).await;
                continue;
            }
            Step::After(secs, room, uid, action) => {
                act(app, &name(room), &name(uid), action, plus(t0, secs)).await;
                continue;
            }
            Step::Join(room, uid) => api.join(&service, &name(room), &name(uid)).await,
            Step::Leave(room, uid) => api.leave(&service, &name(room), &name(uid)).await,
            Step::Put(room, uid, status) => {
                api.set_participant_status(&service, &name(room), &name(uid), status)
                    .await
            }
            Step::Invite(room, uids) => {
                let uids = all(uids);
                let uids: Vec<&str> = uids.iter().map(String::as_str).collect();
                api.invite(&service, &name(room), &uids).await
            }
            Step::End(room) => api.end(&service, &name(room)).await,
            Step::Remove(room, uid) => {
                let creator: String =
                    sqlx::query_scalar("SELECT creator FROM call_room WHERE room_name = ?")
                        .bind(name(room))
                        .fetch_one(app.store.pool())
                        .await
                        .expect("creator");
                remove(app, Some(&api.user(&creator)), &name(room), &name(uid)).await
            }
            Step::Webhook(event, room, uid) => {
                let uid = uid.map(name);
                let outcome = webhook(app, event, &name(room), uid.as_deref()).await;
                assert_eq!(outcome, "applied", "{case}: {step:?}");
                continue;
            }
        };
        assert_eq!(answer.status, 200, "{case}: {step:?}: {}", answer.body);
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn every_way_a_call_ends_says_why_on_the_room_and_on_each_row(pool: DbPool) {
    use Step::*;
    const LONGEST_60: CallLimits = limits(30, 60, 0);
    const SOLO_10: CallLimits = limits(180, 0, 10);
    type Case = (
        &'static str,
        &'static [Step],
        i64,
        &'static str,
        &'static [(&'static str, i64, &'static str)],
    );
    let cases: &[Case] = &[
        (
            "the callee answers, then hangs up",
            &[
                Open("r", "alice", &["bob"]),
                Join("r", "bob"),
                Leave("r", "bob"),
            ],
            2,
            "completed",
            &[("alice", 3, "call_ended"), ("bob", 3, "hung_up")],
        ),
        (
            "the caller hangs up before an answer",
            &[Open("r", "alice", &["bob"]), Leave("r", "alice")],
            3,
            "cancelled",
            &[("alice", 3, "hung_up"), ("bob", 6, "cancelled")],
        ),
        (
            "the caller cancels the only invite",
            &[Open("r", "alice", &["bob"]), Put("r", "bob", 6)],
            3,
            "cancelled",
            &[("alice", 3, "no_answer"), ("bob", 6, "cancelled")],
        ),
        (
            "the callee declines",
            &[Open("r", "alice", &["bob"]), Put("r", "bob", 2)],
            3,
            "declined",
            &[("alice", 3, "no_answer"), ("bob", 2, "declined")],
        ),
        (
            "the invite rings out",
            &[OpenAnHourAgo("r", "alice", &["bob"], RING_30)],
            3,
            "missed",
            &[("alice", 3, "no_answer"), ("bob", 4, "timeout")],
        ),
        (
            "the service marks the callee busy",
            &[Open("r", "alice", &["bob"]), Put("r", "bob", 5)],
            3,
            "busy",
            &[("alice", 3, "no_answer"), ("bob", 5, "busy")],
        ),
        (
            "the only invitee rings in another call",
            &[
                Open("x", "carol", &["bob"]),
                Open("r", "alice", &[]),
                Invite("r", &["bob"]),
            ],
            3,
            "busy",
            &[("alice", 3, "no_answer"), ("bob", 5, "busy")],
        ),
        (
            "the API ends a running call",
            &[
                Open("r", "alice", &["bob", "carol"]),
                Join("r", "bob"),
                End("r"),
            ],
            2,
            "ended_by_api",
            &[
                ("alice", 3, "call_ended"),
                ("bob", 3, "call_ended"),
                ("carol", 4, "call_ended"),
            ],
        ),
        (
            "LiveKit finishes the room",
            &[
                Open("r", "alice", &["bob"]),
                Join("r", "bob"),
                Webhook("room_finished", "r", None),
            ],
            2,
            "gone_from_livekit",
            &[("alice", 3, "call_ended"), ("bob", 3, "call_ended")],
        ),
        (
            "the call reaches its longest duration",
            &[
                OpenAnHourAgo("r", "alice", &["bob"], LONGEST_60),
                After(5, "r", "bob", Action::Join),
            ],
            2,
            "max_duration",
            &[("alice", 3, "call_ended"), ("bob", 3, "call_ended")],
        ),
        (
            "one participant is left alone too long",
            &[
                OpenAnHourAgo("r", "alice", &["bob", "carol"], SOLO_10),
                After(1, "r", "bob", Action::Join),
                After(2, "r", "alice", Action::Leave),
            ],
            2,
            "solo_timeout",
            &[
                ("alice", 3, "hung_up"),
                ("bob", 3, "call_ended"),
                ("carol", 4, "call_ended"),
            ],
        ),
        (
            "the creator takes the callee out",
            &[
                Open("r", "alice", &["bob"]),
                Join("r", "bob"),
                Remove("r", "bob"),
            ],
            2,
            "completed",
            &[("alice", 3, "call_ended"), ("bob", 3, "removed")],
        ),
        (
            "the callee answers another call (LiveKit sees it there)",
            &[
                Open("r", "alice", &["bob"]),
                Open("x", "carol", &["dave"]),
                Invite("x", &["bob"]),
                Webhook("participant_joined", "x", Some("bob")),
            ],
            3,
            "busy",
            &[("alice", 3, "no_answer"), ("bob", 5, "answered_elsewhere")],
        ),
    ];
    // The table names every reason of both closed lists.
    let room_reasons: BTreeSet<&str> = cases.iter().map(|c| c.3).collect();
    let row_reasons: BTreeSet<&str> = cases.iter().flat_map(|c| c.4.iter().map(|r| r.2)).collect();
    let all_room: BTreeSet<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
    let all_rows: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(room_reasons, all_room);
    assert_eq!(row_reasons, all_rows);

    let app = common::app(pool);
    let api = Api::new(&app);
    for (i, (case, steps, status, end_reason, rows)) in cases.iter().enumerate() {
        let name = move |n: &str| format!("{n}_{i}");
        run_steps(&app, case, steps, &name).await;
        let room = name("r");
        let got = api.get_room(&api.service(), &room).await;
        let data = got.ok(msg::ROOM_FETCHED.0);
        assert_eq!(
            (&data["status"], &data["end_reason"]),
            (&json!(status), &json!(end_reason)),
            "{case}: the room"
        );
        let listed = api.participants(&api.service(), &room).await;
        let listed = listed.ok(msg::PARTICIPANTS_LISTED.0);
        assert_eq!(
            listed.as_array().map(Vec::len),
            Some(rows.len()),
            "{case}: {listed}"
        );
        for (uid, status, reason) in *rows {
            let got = row(listed, &name(uid));
            assert_eq!(
                (&got["status"], &got["reason"]),
                (&json!(status), &json!(reason)),
                "{case}: {uid}"
            );
        }
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn open_rooms_and_live_rows_have_no_reason(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    let got = api.get_room(&api.service(), "r1").await;
    let room = got.ok(msg::ROOM_FETCHED.0);
    assert_eq!(room["status"], 1);
    assert!(room.get("end_reason").is_some_and(Value::is_null), "{room}");
    assert!(room.get("ended_at").is_some_and(Value::is_null), "{room}");
    let listed = api.participants(&api.service(), "r1").await;
    let rows = listed.ok(msg::PARTICIPANTS_LISTED.0);
    for uid in ["alice", "bob", "carol"] {
        assert!(
            row(rows, uid).get("reason").is_some_and(Value::is_null),
            "{uid}: {rows}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Durations.

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_call_records_when_it_ran_and_how_long_each_row_rang_and_talked(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let t0 = an_hour_ago();
    open_at(&app, "r1", "alice", &["bob", "carol"], limits(60, 0, 0), t0).await;
    act(&app, "r1", "bob", Action::Join, plus(t0, 5)).await;
    act(&app, "r1", "carol", Action::Join, plus(t0, 8)).await;

    let running = app
        .store
        .load("r1", plus(t0, 10))
        .await
        .expect("load")
        .expect("r1");
    assert_eq!(running.room.started_at, Some(plus(t0, 5).at));
    assert_eq!(running.room.ended_at, None, "not until it ends");
    assert_eq!(running.room.duration_seconds, 0, "0 until it ends");

    act(&app, "r1", "carol", Action::Leave, plus(t0, 20)).await;
    act(&app, "r1", "carol", Action::Join, plus(t0, 30)).await;
    act(&app, "r1", "carol", Action::Leave, plus(t0, 45)).await;
    let last = act(&app, "r1", "bob", Action::Leave, plus(t0, 50)).await;
    assert!(last.finalised, "alice is alone with nobody ringing");

    let got = api.get_room(&api.service(), "r1").await;
    let room = got.ok(msg::ROOM_FETCHED.0);
    assert_eq!(room["status"], 2);
    assert_eq!(room["started_at"], text(plus(t0, 5)));
    assert_eq!(room["ended_at"], text(plus(t0, 50)));
    assert_eq!(room["duration_seconds"], 45);
    let listed = api.participants(&api.service(), "r1").await;
    let rows = listed.ok(msg::PARTICIPANTS_LISTED.0);
    for (uid, rang, talked) in [
        ("alice", 0, 50),
        ("bob", 5, 45),
        ("carol", 8, 12 + 15), // summed over the rejoin
    ] {
        let got = row(rows, uid);
        assert_eq!(
            (&got["ring_seconds"], &got["talk_seconds"]),
            (&json!(rang), &json!(talked)),
            "{uid}"
        );
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_call_that_never_ran_has_no_start_and_no_duration(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    let t0 = an_hour_ago();
    open_at(&app, "r1", "alice", &["bob"], limits(60, 0, 0), t0).await;
    act(&app, "r1", "bob", Action::Reject, plus(t0, 7)).await;
    let got = api.get_room(&api.service(), "r1").await;
    let room = got.ok(msg::ROOM_FETCHED.0);
    assert_eq!(room["status"], 3);
    assert_eq!(room["started_at"], Value::Null);
    assert_eq!(room["ended_at"], text(plus(t0, 7)));
    assert_eq!(room["duration_seconds"], 0);
    let listed = api.participants(&api.service(), "r1").await;
    let bob = row(listed.ok(msg::PARTICIPANTS_LISTED.0), "bob");
    assert_eq!(
        (&bob["ring_seconds"], &bob["talk_seconds"]),
        (&json!(7), &json!(0))
    );
}

// ---------------------------------------------------------------------------------------------
// 7. A uid's ringing invites.

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_ringing_uid_sees_its_invite_until_it_answers(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open_with(json!({
        "room_name": "r1", "creator": "alice", "call_type": 0, "invite_on": 1,
        "uids": ["bob"], "ring_timeout_seconds": 45,
    }))
    .await;

    for token in [api.service(), api.user("bob")] {
        let r = ringing(&app, Some(&token), "bob").await;
        let invites = r.ok(msg::RINGING_LISTED.0);
        assert_eq!(invites.as_array().map(Vec::len), Some(1), "{invites}");
        let invite = &invites[0];
        assert_eq!(invite["room_name"], "r1");
        assert_eq!(invite["caller"], "alice");
        assert_eq!(invite["call_type"], 0);
        events::assert_rfc3339_utc(&invite["invited_at"]);
        assert_eq!(
            seconds_of(&invite["ring_deadline"]) - seconds_of(&invite["invited_at"]),
            45
        );
    }
    let r = ringing(&app, Some(&api.service()), "alice").await;
    assert_eq!(
        r.ok(msg::RINGING_LISTED.0),
        &json!([]),
        "the caller rings nowhere"
    );

    api.joined("r1", "bob").await;
    let r = ringing(&app, Some(&api.user("bob")), "bob").await;
    assert_eq!(r.ok(msg::RINGING_LISTED.0), &json!([]), "answered");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_ringing_invite_is_listed_until_its_deadline_and_not_after(pool: DbPool) {
    let app = common::app(pool.clone());
    let service = common::service_token(&app);
    open_at(&app, "old", "alice", &["bob"], RING_30, an_hour_ago()).await;
    let recent = plus(Now::current(), -10);
    open_at(&app, "new", "carol", &["dave"], RING_30, recent).await;

    let r = ringing(&app, Some(&service), "bob").await;
    assert_eq!(
        r.ok(msg::RINGING_LISTED.0),
        &json!([]),
        "rang out an hour ago"
    );
    assert_eq!(
        status_of(&pool, "old", "bob").await,
        Some(0),
        "not yet written"
    );

    let r = ringing(&app, Some(&service), "dave").await;
    let invites = r.ok(msg::RINGING_LISTED.0);
    assert_eq!(invites[0]["room_name"], "new", "{invites}");
    assert_eq!(invites[0]["invited_at"], text(recent));
    assert_eq!(invites[0]["ring_deadline"], text(plus(recent, 30)));
}

/// Both per-uid reads follow one rule: a service reads any uid, a user only its own.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_uids_ringing_and_calls_are_read_by_that_uid_or_a_service_only(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let (service, bob, carol) = (api.service(), api.user("bob"), api.user("carol"));
    let (service, bob, carol) = (service.as_str(), bob.as_str(), carol.as_str());
    let long = "x".repeat(41);
    let cases: [(&str, Option<&str>, &str, u16, &str); 7] = [
        ("a service reads bob", Some(service), "bob", 200, ""),
        ("bob reads bob", Some(bob), "bob", 200, ""),
        ("carol reads bob", Some(carol), "bob", 403, "forbidden"),
        ("bob reads carol", Some(bob), "carol", 403, "forbidden"),
        ("no token", None, "bob", 401, "unauthorized"),
        (
            "a uid with a space",
            Some(service),
            "b b",
            400,
            "invalid_parameters",
        ),
        (
            "a uid of 41 characters",
            Some(service),
            long.as_str(),
            400,
            "invalid_parameters",
        ),
    ];
    for endpoint in ["ringing", "calls"] {
        for (name, token, uid, status, key) in cases {
            let r = match endpoint {
                "ringing" => ringing(&app, token, uid).await,
                _ => calls(&app, token, uid, "").await,
            };
            assert_eq!(r.status, status, "{endpoint}: {name}: {}", r.body);
            if status == 200 {
                assert_eq!(r.body["code"], 0, "{endpoint}: {name}");
            } else {
                r.err(status, key);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. A uid's call history.

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn call_history_lists_a_uids_calls_newest_first_with_their_outcome(pool: DbPool) {
    let app = common::app(pool);
    let t0 = an_hour_ago();
    // h1: alice calls bob, who declines after 4 s.
    open_at(&app, "h1", "alice", &["bob"], limits(60, 0, 0), t0).await;
    act(&app, "h1", "bob", Action::Reject, plus(t0, 4)).await;
    // h2: bob calls carol and dave; carol talks 30 s, dave declines.
    open_at(
        &app,
        "h2",
        "bob",
        &["carol", "dave"],
        limits(60, 0, 0),
        plus(t0, 10),
    )
    .await;
    act(&app, "h2", "carol", Action::Join, plus(t0, 12)).await;
    act(&app, "h2", "dave", Action::Reject, plus(t0, 13)).await;
    act(&app, "h2", "carol", Action::Leave, plus(t0, 42)).await;
    // h3: erin calls bob, whose invite rang out long ago (not yet swept).
    open_at(&app, "h3", "erin", &["bob"], RING_30, plus(t0, 100)).await;

    let r = calls(&app, Some(&common::user_token(&app, "bob")), "bob", "").await;
    let data = r.ok(msg::CALLS_LISTED.0);
    assert_eq!(data["next_cursor"], Value::Null, "one page: {data}");
    let entries = data["calls"].as_array().expect("calls");
    let want = [
        // room, direction, others, status, end_reason, own status, reason, duration, rang
        (
            "h3",
            "incoming",
            json!(["erin"]),
            3,
            "missed",
            4,
            "timeout",
            0,
            30,
        ),
        (
            "h2",
            "outgoing",
            json!(["carol", "dave"]),
            2,
            "completed",
            3,
            "call_ended",
            30,
            0,
        ),
        (
            "h1",
            "incoming",
            json!(["alice"]),
            3,
            "declined",
            2,
            "declined",
            0,
            4,
        ),
    ];
    assert_eq!(entries.len(), want.len(), "{data}");
    for (entry, (room, direction, others, status, end_reason, own, reason, duration, rang)) in
        entries.iter().zip(want)
    {
        let got = json!([
            entry["room_name"],
            entry["direction"],
            entry["others"],
            entry["status"],
            entry["end_reason"],
            entry["participant_status"],
            entry["reason"],
            entry["duration_seconds"],
            entry["ring_seconds"],
        ]);
        let expected = json!([
            room, direction, others, status, end_reason, own, reason, duration, rang
        ]);
        assert_eq!(got, expected, "{room}");
    }
    assert_eq!(
        entries[1]["talk_seconds"], 32,
        "bob, from the create to the end"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn call_history_pages_by_cursor_without_gaps_while_calls_are_added(pool: DbPool) {
    let app = Arc::new(common::app(pool.clone()));
    let t0 = an_hour_ago();
    for k in 0..7 {
        let (room, at) = (format!("old{k}"), plus(t0, 10 * k));
        open_at(&app, &room, &format!("caller{k}"), &["bob"], RING_30, at).await;
        act(&app, &room, "bob", Action::Reject, plus(at, 1)).await;
    }
    let before: HashSet<String> = names(
        &pool,
        "SELECT room_name FROM call_participant WHERE uid = 'bob'",
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(before.len(), 7);

    // Meanwhile, people keep calling bob, who keeps declining. The requests of both tasks skip
    // the per-request `assert_nothing_held` (its whole-table FOR UPDATE scans would deadlock
    // with the other task's inserts, a fault of the check, not of the service); it runs once
    // at the end.
    let added = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(tokio::sync::Notify::new());
    let caller = tokio::spawn({
        let (app, added, stop, progress) =
            (app.clone(), added.clone(), stop.clone(), progress.clone());
        async move {
            let service = common::service_token(&app);
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) && k < 100 {
                let room = format!("new{k}");
                let body =
                    json!({"room_name": room, "creator": format!("newcaller{k}"), "uids": ["bob"]});
                let req = Event::new("POST", "/api/rooms")
                    .token(&service)
                    .json(&body)
                    .request();
                let r = reply(handlers::create_room(&app, req).await);
                assert_eq!(r.status, 200, "create {room}: {}", r.body);
                let path = format!("/api/rooms/{room}/participants/bob/status");
                let req = Event::new("PUT", &path)
                    .token(&service)
                    .json(&json!({"status": 2}))
                    .request();
                let r = reply(handlers::update_participant_status(&app, req).await);
                assert_eq!(r.status, 200, "decline {room}: {}", r.body);
                k += 1;
                added.fetch_add(1, Ordering::SeqCst);
                progress.notify_one();
            }
        }
    });

    let token = common::user_token(&app, "bob");
    let (mut seen, mut repeated, mut pages) = (HashSet::new(), Vec::new(), 0);
    let mut cursor: Option<String> = None;
    loop {
        let mark = added.load(Ordering::SeqCst);
        let query = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".to_owned(),
        };
        let req = Event::new("GET", "/api/users/bob/calls")
            .token(&token)
            .query(&query)
            .request();
        let r = reply(handlers::user_calls(&app, req).await);
        let data = r.ok(msg::CALLS_LISTED.0).clone();
        pages += 1;
        for entry in data["calls"].as_array().expect("calls") {
            let room = entry["room_name"].as_str().expect("room_name").to_owned();
            if !seen.insert(room.clone()) {
                repeated.push(room);
            }
        }
        match data["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 50, "paging never ends: {data}");
        // Let at least one more call be added before the next page.
        while added.load(Ordering::SeqCst) <= mark {
            // A bound, not a pause: a caller task that died must fail the test, not hang it.
            tokio::time::timeout(std::time::Duration::from_secs(30), progress.notified())
                .await
                .expect("the caller task adds calls");
        }
    }
    stop.store(true, Ordering::SeqCst);
    caller.await.expect("the caller task");
    common::assert_nothing_held(&pool).await;

    assert!(repeated.is_empty(), "rows on two pages: {repeated:?}");
    let missing: Vec<&String> = before.difference(&seen).collect();
    assert!(missing.is_empty(), "skipped: {missing:?}");
    let strangers: Vec<&String> = seen
        .difference(&before)
        .filter(|r| !r.starts_with("new"))
        .collect();
    assert!(strangers.is_empty(), "{strangers:?}");
    assert!(
        added.load(Ordering::SeqCst) >= pages - 1,
        "calls were added between the pages"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn call_history_refuses_a_cursor_or_limit_it_cannot_use(pool: DbPool) {
    let app = common::app(pool);
    let service = common::service_token(&app);
    let cases = [
        ("a cursor it never gave out", "cursor=abc"),
        ("a bare id as cursor", "cursor=5"),
        ("a cursor of id 0", "cursor=i0"),
        ("a negative cursor", "cursor=i-5"),
        ("limit 0", "limit=0"),
        ("limit 101", "limit=101"),
        ("limit not a number", "limit=ten"),
    ];
    for (name, query) in cases {
        let r = calls(&app, Some(&service), "bob", query).await;
        assert_eq!(r.status, 400, "{name}: {}", r.body);
        r.err(400, "invalid_parameters");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Taking someone out of a call.

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn removing_a_participant_hangs_them_up_and_the_call_settles(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone()).await;
    let api = Api::new(&app);
    type Rows = &'static [(&'static str, i64, Option<&'static str>)];
    type Case = (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        i64,
        Option<&'static str>,
        Rows,
    );
    let cases: [Case; 3] = [
        (
            "from a three-person call, which runs on",
            &["bob", "carol"],
            &["bob", "carol"],
            "carol",
            1,
            None,
            &[
                ("alice", 1, None),
                ("bob", 1, None),
                ("carol", 3, Some("removed")),
            ],
        ),
        (
            "from a two-person call, which ends",
            &["bob"],
            &["bob"],
            "bob",
            2,
            Some("completed"),
            &[
                ("alice", 3, Some("call_ended")),
                ("bob", 3, Some("removed")),
            ],
        ),
        (
            "a ringing invitee of an unanswered call, which closes",
            &["bob"],
            &[],
            "bob",
            3,
            Some("cancelled"),
            &[("alice", 3, Some("no_answer")), ("bob", 3, Some("removed"))],
        ),
    ];
    for (i, (case, invitees, joiners, removed, status, end_reason, rows)) in
        cases.into_iter().enumerate()
    {
        let name = |n: &str| format!("{n}_{i}");
        let room = name("r");
        let invitees: Vec<String> = invitees.iter().map(|u| name(u)).collect();
        let invitees: Vec<&str> = invitees.iter().map(String::as_str).collect();
        api.open(&room, &name("alice"), &invitees).await;
        for uid in joiners {
            api.joined(&room, &name(uid)).await;
        }

        let r = remove(&app, Some(&api.user(&name("alice"))), &room, &name(removed)).await;
        let data = r.ok(msg::PARTICIPANT_REMOVED.0);
        assert_eq!(
            (&data["uid"], &data["status"], &data["reason"]),
            (&json!(name(removed)), &json!(3), &json!("removed")),
            "{case}"
        );
        let got = api.get_room(&api.service(), &room).await;
        let got = got.ok(msg::ROOM_FETCHED.0);
        assert_eq!(
            (&got["status"], &got["end_reason"]),
            (&json!(status), &json!(end_reason)),
            "{case}"
        );
        let listed = api.participants(&api.service(), &room).await;
        let listed = listed.ok(msg::PARTICIPANTS_LISTED.0);
        for (uid, status, reason) in rows {
            let got = row(listed, &name(uid));
            assert_eq!(
                (&got["status"], &got["reason"]),
                (&json!(status), &json!(reason)),
                "{case}: {uid}"
            );
        }
        let removals: Vec<(String, String)> = stub
            .removed()
            .into_iter()
            .filter(|(r, _)| *r == room)
            .collect();
        assert_eq!(removals, vec![(room.clone(), name(removed))], "{case}");
        assert!(
            pending_removals(&pool).await.is_empty(),
            "{case}: done, not pending"
        );
        assert_eq!(
            stub.deleted().contains(&room),
            status != 1,
            "{case}: a call that ended is deleted in LiveKit"
        );
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_failed_livekit_removal_is_retried_by_the_sweep(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone()).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;

    stub.set_failing(true);
    let r = remove(&app, Some(&api.service()), "r1", "carol").await;
    assert_eq!(r.ok(msg::PARTICIPANT_REMOVED.0)["reason"], "removed");
    assert_eq!(stub.removed().len(), 1, "tried once, after the commit");
    assert_eq!(
        pending_removals(&pool).await,
        vec![("r1".to_string(), "carol".to_string())]
    );
    assert_eq!(
        status_of(&pool, "r1", "carol").await,
        Some(3),
        "committed anyway"
    );

    stub.set_failing(false);
    // Inside the grace the row still belongs to the request that queued it.
    let early = sweep(&app, Now::current()).await.expect("sweep");
    assert_eq!((early.removals_done, early.removals_failed), (0, 0));
    assert_eq!(stub.removed().len(), 1, "not sent twice");
    let grace = call_shared::sweeper::INLINE_ATTEMPT_GRACE.as_millis();
    let after = Now::from_millis(Now::current().ms + i64::try_from(grace).expect("ms"));
    let report = sweep(&app, after.expect("instant")).await.expect("sweep");
    assert_eq!(report.removals_done, 1);
    assert_eq!(
        stub.removed(),
        vec![("r1".to_string(), "carol".to_string()); 2]
    );
    assert!(pending_removals(&pool).await.is_empty());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn remove_answers_each_refusal_with_its_key_and_changes_nothing(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone()).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol", "dave"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    let declined = api
        .set_participant_status(&api.service(), "r1", "dave", 2)
        .await;
    assert_eq!(declined.status, 200, "{}", declined.body);
    let (alice, bob, mallory) = (api.user("alice"), api.user("bob"), api.user("mallory"));
    let (alice, bob, mallory) = (alice.as_str(), bob.as_str(), mallory.as_str());
    // name, token, room, uid, status, key
    type Refusal<'a> = (&'a str, Option<&'a str>, &'a str, &'a str, u16, &'a str);
    let cases: [Refusal; 8] = [
        (
            "a participant who is not the creator",
            Some(bob),
            "r1",
            "carol",
            403,
            "forbidden",
        ),
        ("a stranger", Some(mallory), "r1", "carol", 403, "forbidden"),
        ("no token", None, "r1", "carol", 401, "unauthorized"),
        (
            "an unknown room",
            Some(alice),
            "nope",
            "carol",
            404,
            "room_not_found",
        ),
        (
            "a uid without a row",
            Some(alice),
            "r1",
            "erin",
            404,
            "participant_not_found",
        ),
        (
            "a row that is not live",
            Some(alice),
            "r1",
            "dave",
            409,
            "invalid_transition",
        ),
        (
            "a room name with a space",
            Some(alice),
            "r 1",
            "carol",
            400,
            "invalid_parameters",
        ),
        (
            "a uid with a space",
            Some(alice),
            "r1",
            "c arol",
            400,
            "invalid_parameters",
        ),
    ];
    for (name, token, room, uid, status, key) in cases {
        let r = remove(&app, token, room, uid).await;
        assert_eq!(r.status, status, "{name}: {}", r.body);
        r.err(status, key);
    }
    assert_eq!(status_of(&pool, "r1", "carol").await, Some(1));
    assert_eq!(status_of(&pool, "r1", "dave").await, Some(2));
    assert!(stub.removed().is_empty());
    assert!(pending_removals(&pool).await.is_empty());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn removing_twice_is_200_and_changes_nothing(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone()).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    let first = remove(&app, Some(&api.user("alice")), "r1", "carol").await;
    let first = first.ok(msg::PARTICIPANT_REMOVED.0).clone();
    let again = remove(&app, Some(&api.user("alice")), "r1", "carol").await;
    assert_eq!(again.ok(msg::PARTICIPANT_REMOVED.0), &first, "the same row");
    assert_eq!(room_status(&pool, "r1").await, Some(1));
    assert!(pending_removals(&pool).await.is_empty());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_removed_uid_cannot_join_that_room_again(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone()).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    let r = remove(&app, Some(&api.user("alice")), "r1", "carol").await;
    r.ok(msg::PARTICIPANT_REMOVED.0);
    for (who, token) in [("the service", api.service()), ("carol", api.user("carol"))] {
        let r = api.join(&token, "r1", "carol").await;
        assert_eq!(r.status, 403, "{who}: {}", r.body);
        r.err(403, "participant_removed");
    }
    let r = api
        .set_participant_status(&api.user("carol"), "r1", "carol", 1)
        .await;
    assert_eq!(r.status, 403, "PUT 1 is a join too: {}", r.body);
    assert_eq!(status_of(&pool, "r1", "carol").await, Some(3));
    assert_eq!(
        reason_in_db(&pool, "r1", "carol").await.as_deref(),
        Some("removed")
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_later_participant_joined_for_a_removed_uid_removes_it_again(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone()).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    remove(&app, Some(&api.user("alice")), "r1", "carol")
        .await
        .ok(msg::PARTICIPANT_REMOVED.0);
    let before = events::participant(&pool, "r1", "carol").await;
    let updated = || async {
        sqlx::query_scalar::<_, chrono::NaiveDateTime>(
            "SELECT updated_at FROM call_participant WHERE room_name = 'r1' AND uid = 'carol'",
        )
        .fetch_one(&pool)
        .await
        .expect("updated_at")
    };
    let updated_before = updated().await;

    let outcome = webhook(&app, "participant_joined", "r1", Some("carol")).await;
    assert_eq!(outcome, "removed_again");
    assert_eq!(events::participant(&pool, "r1", "carol").await, before);
    assert_eq!(updated().await, updated_before, "the row did not change");
    assert_eq!(
        reason_in_db(&pool, "r1", "carol").await.as_deref(),
        Some("removed")
    );
    assert_eq!(room_status(&pool, "r1").await, Some(1));
    assert_eq!(
        stub.removed(),
        vec![("r1".to_string(), "carol".to_string()); 2],
        "LiveKit is asked again"
    );
    assert!(pending_removals(&pool).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 10. The room list: cursor pages and exact totals.

/// Ten rooms in every status: r0–r7 between alice or carol and bob (each closed, so bob is free
/// for the next), r8 ringing, r9 running.
async fn ten_rooms(api: &Api<'_>) {
    let service = api.service();
    for i in 0..8 {
        let room = format!("r{i}");
        let creator = if i % 2 == 0 { "alice" } else { "carol" };
        api.open(&room, creator, &["bob"]).await;
        let r = match i % 3 {
            0 => api.end(&service, &room).await,
            1 => {
                api.joined(&room, "bob").await;
                api.leave(&service, &room, "bob").await
            }
            _ => api.set_participant_status(&service, &room, "bob", 2).await,
        };
        assert_eq!(r.status, 200, "{room}: {}", r.body);
    }
    api.open("r8", "dave", &["erin"]).await;
    api.open("r9", "frank", &["gina"]).await;
    api.joined("r9", "gina").await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_cursor_pages_through_every_room_newest_first(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    ten_rooms(&api).await;
    let cases: [(&str, &str, &'static str); 4] = [
        (
            "every room",
            "",
            "SELECT room_name FROM call_room ORDER BY id DESC",
        ),
        (
            "one status",
            "status=3",
            "SELECT room_name FROM call_room WHERE status = 3 ORDER BY id DESC",
        ),
        (
            "one creator",
            "creator=alice",
            "SELECT room_name FROM call_room WHERE creator = 'alice' ORDER BY id DESC",
        ),
        (
            "one uid's rooms",
            "uid=bob",
            "SELECT r.room_name FROM call_room r WHERE EXISTS (SELECT 1 FROM call_participant p \
             WHERE p.room_name = r.room_name AND p.uid = 'bob') ORDER BY r.id DESC",
        ),
    ];
    for (name, filter, sql) in cases {
        let want = names(&pool, sql).await;
        assert!(want.len() > 3, "{name}: more than one page");
        let (mut got, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let mut query = format!("limit=3&{filter}");
            if let Some(c) = &cursor {
                query.push_str(&format!("&cursor={c}"));
            }
            let r = api.list_rooms(&api.service(), &query).await;
            let data = r.ok(msg::ROOMS_LISTED.0);
            assert_eq!(data["total"], want.len(), "{name}: total on every page");
            for room in data["rooms"].as_array().expect("rooms") {
                got.push(room["room_name"].as_str().expect("name").to_owned());
            }
            pages += 1;
            match data["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(pages <= want.len(), "{name}: paging never ends");
        }
        assert_eq!(got, want, "{name}: every room once, newest first");
        assert_eq!(pages, want.len().div_ceil(3), "{name}: no empty last page");

        // The seed's offset paging still works beside it.
        let r = api
            .list_rooms(&api.service(), &format!("limit=3&offset=3&{filter}"))
            .await;
        let data = r.ok(msg::ROOMS_LISTED.0);
        let page: Vec<&str> = data["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .filter_map(|r| r["room_name"].as_str())
            .collect();
        let end = want.len().min(6);
        assert_eq!(page, want[3..end].to_vec(), "{name}: offset 3");
        assert_eq!(data["total"], want.len(), "{name}: offset total");
    }
}

async fn assert_totals_exact(api: &Api<'_>, pool: &DbPool, phase: &str) {
    let cases: [(&str, &'static str); 7] = [
        ("", "SELECT COUNT(*) FROM call_room"),
        (
            "status=0",
            "SELECT COUNT(*) FROM call_room WHERE status = 0",
        ),
        (
            "status=1",
            "SELECT COUNT(*) FROM call_room WHERE status = 1",
        ),
        (
            "status=2",
            "SELECT COUNT(*) FROM call_room WHERE status = 2",
        ),
        (
            "status=3",
            "SELECT COUNT(*) FROM call_room WHERE status = 3",
        ),
        (
            "status=3&creator=alice",
            "SELECT COUNT(*) FROM call_room WHERE status = 3 AND creator = 'alice'",
        ),
        (
            "uid=bob",
            "SELECT COUNT(*) FROM call_room r WHERE EXISTS (SELECT 1 FROM call_participant p \
             WHERE p.room_name = r.room_name AND p.uid = 'bob')",
        ),
    ];
    for (query, sql) in cases {
        // Counted after the request: a status filter first writes down the deadlines due.
        let r = api.list_rooms(&api.service(), query).await;
        let want = count(pool, sql).await;
        assert_eq!(
            r.ok(msg::ROOMS_LISTED.0)["total"],
            want,
            "{phase}: ?{query}"
        );
    }
    // As bob sees it: the list is forced to his rooms.
    let want = count(
        pool,
        "SELECT COUNT(*) FROM call_room r WHERE EXISTS (SELECT 1 FROM call_participant p \
         WHERE p.room_name = r.room_name AND p.uid = 'bob')",
    )
    .await;
    let r = api.list_rooms(&api.user("bob"), "").await;
    assert_eq!(
        r.ok(msg::ROOMS_LISTED.0)["total"],
        want,
        "{phase}: bob's list"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_totals_equal_count_per_status_after_creates_and_changes(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    assert_totals_exact(&api, &pool, "no rooms").await;
    ten_rooms(&api).await;
    assert_totals_exact(&api, &pool, "ten rooms").await;

    // More changes: a start by PUT, a join, an end, and a ring-out the sweep writes.
    let service = api.service();
    api.open("s1", "hana", &["ivan"]).await;
    api.open("s2", "jack", &["kate"]).await;
    open_at(&app, "s3", "liam", &["mona"], RING_30, an_hour_ago()).await;
    assert_totals_exact(&api, &pool, "three more").await;
    assert_eq!(api.set_room_status(&service, "s1", 1).await.status, 200);
    api.joined("r8", "erin").await;
    api.ended("r9").await;
    api.ended("s2").await;
    sweep(&app, Now::current()).await.expect("sweep");
    assert_eq!(room_status(&pool, "s3").await, Some(3));
    assert_totals_exact(&api, &pool, "after the changes").await;
    assert_room_count_exact(&pool, "after the changes").await;
}

/// The totals are kept by the store's own transactions (no triggers): through LiveKit's
/// webhooks too, including one that moves two rooms at once (a uid seen joining elsewhere
/// closes the call it was in), and the sweeper's ring-out.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_totals_stay_exact_through_webhooks_and_the_sweep(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    let exact = async |phase: &str| {
        assert_totals_exact(&api, &pool, phase).await;
        assert_room_count_exact(&pool, phase).await;
    };
    api.open("w2", "carol", &["dave", "bob"]).await;
    act(&app, "w2", "bob", Action::Reject, Now::current()).await;
    api.open("w1", "alice", &["bob"]).await;
    exact("created").await;
    // bob, ringing in w1, shows up in w2 (which he had declined): one transaction starts w2
    // and, his ringing row in w1 closed as busy, cancels w1 (nobody left to answer).
    webhook(&app, "participant_joined", "w2", Some("bob")).await;
    assert_eq!(room_status(&pool, "w1").await, Some(3));
    assert_eq!(room_status(&pool, "w2").await, Some(1));
    exact("two rooms moved by one webhook").await;
    webhook(&app, "participant_joined", "w2", Some("dave")).await;
    webhook(&app, "participant_left", "w2", Some("bob")).await;
    webhook(&app, "room_finished", "w2", None).await;
    assert_eq!(room_status(&pool, "w2").await, Some(2));
    exact("finished by webhook").await;
    open_at(&app, "w3", "erin", &["finn"], RING_30, an_hour_ago()).await;
    sweep(&app, Now::current()).await.expect("sweep");
    assert_eq!(room_status(&pool, "w3").await, Some(3));
    exact("rung out by the sweep").await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_refuses_offset_with_cursor_and_a_cursor_it_never_gave(pool: DbPool) {
    let app = common::app(pool);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    let cases = [
        ("an offset with a cursor", "offset=2&cursor=i5"),
        ("a cursor it never gave out", "cursor=abc"),
        ("a bare id as cursor", "cursor=5"),
        ("a cursor of id 0", "cursor=i0"),
    ];
    for (name, query) in cases {
        let r = api.list_rooms(&api.service(), query).await;
        assert_eq!(r.status, 400, "{name}: {}", r.body);
        r.err(400, "invalid_parameters");
    }
}

/// Every read sees a passed deadline settled: so does a list filtered by status, in its rooms
/// and in its total, before the sweeper has run (list-rooms writes the due rooms down first).
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_status_filter_sees_a_passed_deadline_before_the_sweep(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    open_at(&app, "r1", "alice", &["bob"], RING_30, an_hour_ago()).await;
    for (query, rooms, total) in [("status=0", json!([]), 0), ("status=3", json!(["r1"]), 1)] {
        let r = api.list_rooms(&api.service(), query).await;
        let data = r.ok(msg::ROOMS_LISTED.0);
        let listed: Vec<&Value> = data["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .map(|r| &r["room_name"])
            .collect();
        assert_eq!(json!(listed), rooms, "?{query}: {data}");
        assert_eq!(data["total"], total, "?{query}: {data}");
    }
}
