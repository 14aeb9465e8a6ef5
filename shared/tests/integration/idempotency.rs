//! Idempotency-Key: the store's claim, seal, release and purge, and the keyed POSTs through
//! their handlers (a retry answers the first response and changes nothing).

use crate::common;
use crate::events::{Event, Reply, reply, room_count};

use std::time::Duration;

use call_shared::App;
use call_shared::handlers;
use call_shared::model::Now;
use call_shared::store::{
    Claimed, DbPool, KeyClaim, KeyTimes, NewRoom, PURGE_BATCH, Seal, StoredReply,
};
use serde_json::{Value, json};

const TIMES: KeyTimes = KeyTimes {
    ttl: Duration::from_secs(86_400),
    lease: Duration::from_secs(30),
};

/// An answer with whether it was a replay.
struct Sent {
    reply: Reply,
    replayed: bool,
}

/// A POST through its handler as API Gateway hands it over (no pathParameters: the handler
/// reads the raw path), with an Idempotency-Key when `key` is given.
async fn post(app: &App, token: &str, path: &str, body: Option<&Value>, key: Option<&str>) -> Sent {
    let mut ev = Event::new("POST", path).token(token);
    if let Some(body) = body {
        ev = ev.json(body);
    }
    if let Some(key) = key {
        ev = ev.header("idempotency-key", key);
    }
    let req = ev.request();
    let answer = if path == "/api/rooms" {
        handlers::create_room(app, req).await
    } else if path == "/api/participants/join" {
        handlers::join_room(app, req).await
    } else if path == "/api/participants/leave" {
        handlers::leave_room(app, req).await
    } else if path.ends_with("/end") {
        handlers::end_room(app, req).await
    } else if path.ends_with("/remove") {
        handlers::remove_participant(app, req).await
    } else if path.ends_with("/invite") {
        handlers::invite_participants(app, req).await
    } else {
        panic!("no POST route for {path}")
    };
    let replayed = answer
        .as_ref()
        .ok()
        .and_then(|r| r.headers().get("idempotent-replayed"))
        .is_some_and(|v| v == "true");
    let reply = reply(answer);
    common::assert_nothing_held(app.store.pool()).await;
    Sent { reply, replayed }
}

/// Everything a change writes, as text: rooms, rows and events.
async fn snapshot(pool: &DbPool) -> Vec<String> {
    let rooms: Vec<(String, i16, i32)> =
        sqlx::query_as("SELECT room_name, status, event_seq FROM call_room ORDER BY room_name")
            .fetch_all(pool)
            .await
            .expect("rooms");
    let rows: Vec<(String, String, i16, i64)> = sqlx::query_as(
        "SELECT room_name, uid, status, join_time FROM call_participant ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("rows");
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_event")
        .fetch_one(pool)
        .await
        .expect("events");
    let mut all: Vec<String> = rooms.iter().map(|r| format!("{r:?}")).collect();
    all.extend(rows.iter().map(|r| format!("{r:?}")));
    all.push(format!("events {events}"));
    all
}

async fn key_rows(pool: &DbPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_key")
        .fetch_one(pool)
        .await
        .expect("count idempotency_key")
}

fn create_body(room: Option<&str>, creator: &str, uids: &[&str]) -> Value {
    let mut body = json!({ "creator": creator, "uids": uids, "max_participants": 5 });
    if let Some(room) = room {
        body["room_name"] = json!(room);
    }
    body
}

// ---------------------------------------------------------------- the handlers

/// The first report: a create without room_name, sent again after a lost answer,
/// was 409 creator_in_another_call although the call existed.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_retried_create_without_room_name_replays_the_first_answer(pool: DbPool) {
    let app = common::app(pool.clone());
    let token = common::user_token(&app, "alice");
    let body = create_body(None, "alice", &["bob"]);
    let first = post(&app, &token, "/api/rooms", Some(&body), Some("\"c-1\"")).await;
    first.reply.ok("房间创建成功");
    assert!(!first.replayed);
    let after_first = snapshot(&pool).await;
    let again = post(&app, &token, "/api/rooms", Some(&body), Some("\"c-1\"")).await;
    assert!(again.replayed, "{}", again.reply.body);
    assert_eq!(again.reply.status, 200);
    assert_eq!(
        again.reply.body, first.reply.body,
        "the token first minted, too"
    );
    assert_eq!(snapshot(&pool).await, after_first);
    assert_eq!(room_count(&pool).await, 1);
    // Without a key it is a new request, refused as before.
    post(&app, &token, "/api/rooms", Some(&body), None)
        .await
        .reply
        .err(409, "creator_in_another_call");
}

/// Join, leave, invite, remove and end, each sent twice with its key: the second answer is
/// the first, and the second request changes nothing.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn every_retried_call_post_answers_the_first_response_and_changes_nothing(pool: DbPool) {
    let app = common::app(pool.clone());
    let service = common::service_token(&app);
    let create = create_body(Some("r1"), "alice", &["bob", "carol"]);
    post(&app, &service, "/api/rooms", Some(&create), None)
        .await
        .reply
        .ok("房间创建成功");
    let steps: Vec<(&str, &str, Option<Value>)> = vec![
        (
            "join",
            "/api/participants/join",
            Some(json!({ "room_name": "r1", "uid": "bob" })),
        ),
        (
            "join carol",
            "/api/participants/join",
            Some(json!({ "room_name": "r1", "uid": "carol" })),
        ),
        (
            "invite",
            "/api/rooms/r1/invite",
            Some(json!({ "uids": ["dave"] })),
        ),
        (
            "leave",
            "/api/participants/leave",
            Some(json!({ "room_name": "r1", "uid": "carol" })),
        ),
        ("remove", "/api/rooms/r1/participants/bob/remove", None),
        ("end", "/api/rooms/r1/end", None),
    ];
    for (name, path, body) in steps {
        let key = format!("\"{name}\"");
        let first = post(&app, &service, path, body.as_ref(), Some(&key)).await;
        assert_eq!(first.reply.status, 200, "{name}: {}", first.reply.body);
        assert!(!first.replayed, "{name}");
        let after_first = snapshot(&pool).await;
        let again = post(&app, &service, path, body.as_ref(), Some(&key)).await;
        assert!(again.replayed, "{name}: {}", again.reply.body);
        assert_eq!(again.reply.status, 200, "{name}");
        assert_eq!(again.reply.body, first.reply.body, "{name}");
        assert_eq!(
            snapshot(&pool).await,
            after_first,
            "{name} changed something again"
        );
    }
    // A join without a key mints a new token; with its key, the first one comes back.
    let join = json!({ "room_name": "r2", "uid": "erin" });
    post(
        &app,
        &service,
        "/api/rooms",
        Some(&create_body(Some("r2"), "zed", &[])),
        None,
    )
    .await
    .reply
    .ok("房间创建成功");
    let first = post(
        &app,
        &service,
        "/api/participants/join",
        Some(&join),
        Some("\"j\""),
    )
    .await;
    let again = post(
        &app,
        &service,
        "/api/participants/join",
        Some(&join),
        Some("\"j\""),
    )
    .await;
    assert_eq!(
        again.reply.body["data"]["token"],
        first.reply.body["data"]["token"]
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_same_key_with_another_request_is_422_and_changes_nothing(pool: DbPool) {
    let app = common::app(pool.clone());
    let token = common::user_token(&app, "alice");
    post(
        &app,
        &token,
        "/api/rooms",
        Some(&create_body(Some("r1"), "alice", &[])),
        Some("\"k\""),
    )
    .await
    .reply
    .ok("房间创建成功");
    let before = snapshot(&pool).await;
    let other = post(
        &app,
        &token,
        "/api/rooms",
        Some(&create_body(Some("r2"), "alice", &[])),
        Some("\"k\""),
    )
    .await;
    other.reply.err(422, "idempotency_key_reused");
    assert!(!other.replayed);
    assert_eq!(snapshot(&pool).await, before);
    // Key order and spacing are not a different request.
    let reordered =
        json!({ "max_participants": 5, "uids": [], "room_name": "r1", "creator": "alice" });
    let same = post(&app, &token, "/api/rooms", Some(&reordered), Some("\"k\"")).await;
    assert!(same.replayed, "{}", same.reply.body);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn another_caller_or_route_with_the_same_key_is_a_separate_request(pool: DbPool) {
    let app = common::app(pool.clone());
    let alice = common::user_token(&app, "alice");
    let bob = common::user_token(&app, "bob");
    let a = post(
        &app,
        &alice,
        "/api/rooms",
        Some(&create_body(None, "alice", &[])),
        Some("\"k\""),
    )
    .await;
    let b = post(
        &app,
        &bob,
        "/api/rooms",
        Some(&create_body(None, "bob", &[])),
        Some("\"k\""),
    )
    .await;
    a.reply.ok("房间创建成功");
    b.reply.ok("房间创建成功");
    assert!(!b.replayed);
    assert_ne!(
        a.reply.body["data"]["room_name"],
        b.reply.body["data"]["room_name"]
    );
    let room = a.reply.body["data"]["room_name"]
        .as_str()
        .expect("name")
        .to_owned();
    let end = post(
        &app,
        &alice,
        &format!("/api/rooms/{room}/end"),
        None,
        Some("\"k\""),
    )
    .await;
    end.reply.ok("结束房间成功");
    assert!(!end.replayed);
    assert_eq!(room_count(&pool).await, 2);
}

/// A 409 decided by the call's state is stored: the retry hears it again even once the
/// state would let it through (the client learns one outcome per key).
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_refusal_from_the_transaction_is_stored_and_replayed(pool: DbPool) {
    let app = common::app(pool.clone());
    let service = common::service_token(&app);
    post(
        &app,
        &service,
        "/api/rooms",
        Some(&create_body(Some("r1"), "alice", &[])),
        None,
    )
    .await
    .reply
    .ok("房间创建成功");
    let body = create_body(Some("r2"), "alice", &[]);
    let first = post(&app, &service, "/api/rooms", Some(&body), Some("\"x\"")).await;
    first.reply.err(409, "creator_in_another_call");
    post(&app, &service, "/api/rooms/r1/end", None, None)
        .await
        .reply
        .ok("结束房间成功");
    let again = post(&app, &service, "/api/rooms", Some(&body), Some("\"x\"")).await;
    assert!(again.replayed);
    assert_eq!(again.reply.status, 409);
    assert_eq!(again.reply.body, first.reply.body);
    assert_eq!(room_count(&pool).await, 1);
}

/// Input errors store nothing and hold nothing: the corrected request with the same key runs.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn refusals_before_the_transaction_leave_the_key_free(pool: DbPool) {
    let app = common::app(pool.clone());
    let service = common::service_token(&app);
    let bad = json!({ "creator": "alice", "room_name": "r 1" });
    post(&app, &service, "/api/rooms", Some(&bad), Some("\"k\""))
        .await
        .reply
        .err(400, "invalid_parameters");
    let invite = post(
        &app,
        &service,
        "/api/rooms/nope/invite",
        Some(&json!({ "uids": [] })),
        Some("\"k\""),
    )
    .await;
    invite.reply.err(400, "invalid_parameters");
    assert_eq!(key_rows(&pool).await, 0);
    let good = post(
        &app,
        &service,
        "/api/rooms",
        Some(&create_body(Some("r1"), "alice", &[])),
        Some("\"k\""),
    )
    .await;
    good.reply.ok("房间创建成功");
    assert!(!good.replayed);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_key_that_breaks_the_syntax_is_400(pool: DbPool) {
    let app = common::app(pool.clone());
    let service = common::service_token(&app);
    let long = format!("\"{}\"", "k".repeat(256));
    for key in ["unquoted", "\"\"", long.as_str()] {
        post(
            &app,
            &service,
            "/api/rooms",
            Some(&create_body(Some("r1"), "alice", &[])),
            Some(key),
        )
        .await
        .reply
        .err(400, "invalid_parameters");
    }
    assert_eq!(room_count(&pool).await, 0);
    assert_eq!(key_rows(&pool).await, 0);
}

/// A request still holding its key (another instance, mid-way) makes a retry wait: 409 with
/// Retry-After. Once its lease has run out (it crashed), the retry takes the key over.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_retry_while_the_first_is_in_flight_is_409_in_use_until_its_lease_ends(pool: DbPool) {
    let app = common::app(pool.clone());
    let token = common::user_token(&app, "alice");
    let body = create_body(Some("r1"), "alice", &[]);
    let first = post(&app, &token, "/api/rooms", Some(&body), Some("\"k\"")).await;
    first.reply.ok("房间创建成功");
    // Put the row back in flight, as a request still running would hold it.
    sqlx::query("UPDATE idempotency_key SET status = NULL, body = NULL, lease_until = ?")
        .bind(Now::current().at + chrono::Duration::seconds(30))
        .execute(&pool)
        .await
        .expect("in flight");
    let busy = post(&app, &token, "/api/rooms", Some(&body), Some("\"k\"")).await;
    busy.reply.err(409, "idempotency_key_in_use");
    assert_eq!(busy.reply.retry_after.as_deref(), Some("1"));
    // The holder died: its lease ran out. The retry runs (and hears the state as it is).
    sqlx::query("UPDATE idempotency_key SET lease_until = ?")
        .bind(Now::current().at - chrono::Duration::seconds(1))
        .execute(&pool)
        .await
        .expect("lease over");
    let taken = post(&app, &token, "/api/rooms", Some(&body), Some("\"k\"")).await;
    assert!(!taken.replayed);
    taken.reply.err(409, "creator_in_another_call");
    assert_eq!(room_count(&pool).await, 1);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn concurrent_retries_of_one_create_make_one_room(pool: DbPool) {
    let app = common::app(pool.clone());
    let token = common::user_token(&app, "alice");
    let body = create_body(None, "alice", &["bob"]);
    let sends = (0..6).map(|_| post(&app, &token, "/api/rooms", Some(&body), Some("\"burst\"")));
    let answers = futures_util::future::join_all(sends).await;
    assert_eq!(room_count(&pool).await, 1);
    let firsts: Vec<&Sent> = answers.iter().filter(|a| a.reply.status == 200).collect();
    assert!(!firsts.is_empty());
    for answer in &answers {
        match answer.reply.status {
            200 => assert_eq!(answer.reply.body, firsts[0].reply.body),
            _ => {
                answer.reply.err(409, "idempotency_key_in_use");
            }
        }
    }
    let again = post(&app, &token, "/api/rooms", Some(&body), Some("\"burst\"")).await;
    assert!(again.replayed);
    assert_eq!(again.reply.body, firsts[0].reply.body);
}

/// Past its TTL a key is new again (before the sweep has purged it), and the sweep purges it.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn after_expiry_the_key_is_new_again_and_the_sweep_purges_it(pool: DbPool) {
    let app = common::app_with(pool.clone(), &[("IDEMPOTENCY_KEY_TTL_SECONDS", "60")]);
    let token = common::user_token(&app, "alice");
    let body = create_body(Some("r1"), "alice", &[]);
    post(&app, &token, "/api/rooms", Some(&body), Some("\"k\""))
        .await
        .reply
        .ok("房间创建成功");
    let expires: chrono::NaiveDateTime =
        sqlx::query_scalar("SELECT expires_at FROM idempotency_key")
            .fetch_one(&pool)
            .await
            .expect("expiry");
    let ttl = expires - Now::current().at;
    assert!(
        ttl <= chrono::Duration::seconds(60) && ttl > chrono::Duration::seconds(50),
        "{ttl}"
    );
    sqlx::query("UPDATE idempotency_key SET expires_at = ?")
        .bind(Now::current().at - chrono::Duration::seconds(1))
        .execute(&pool)
        .await
        .expect("expire");
    let fresh = post(&app, &token, "/api/rooms", Some(&body), Some("\"k\"")).await;
    assert!(!fresh.replayed);
    fresh.reply.err(409, "creator_in_another_call");
    sqlx::query("UPDATE idempotency_key SET expires_at = ?")
        .bind(Now::current().at - chrono::Duration::seconds(1))
        .execute(&pool)
        .await
        .expect("expire");
    let report = call_shared::sweeper::sweep(&app, Now::current())
        .await
        .expect("sweep");
    assert_eq!(report.idempotency_keys_purged, 1);
    assert_eq!(key_rows(&pool).await, 0);
}

// ---------------------------------------------------------------- the store

fn new_room(name: &str, creator: &str) -> NewRoom {
    NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: creator.into(),
        room_name: name.into(),
        call_type: 1,
        invite_on: 0,
        max_participants: 2,
        limits: Default::default(),
    }
}

async fn fresh(app: &App, scope: &str, fingerprint: &str, now: Now) -> KeyClaim {
    match app
        .store
        .claim_key(scope, fingerprint, TIMES, now)
        .await
        .expect("claim")
    {
        Claimed::Fresh(claim) => claim,
        other => panic!("expected a fresh claim, got {other:?}"),
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_claim_is_fresh_then_in_use_reused_replayed_or_taken_over(pool: DbPool) {
    let app = common::app(pool.clone());
    let now = Now::current();
    let claim = fresh(&app, "s1", "f1", now).await;
    let claim_again = |fp: &'static str, at: Now| {
        let app = &app;
        async move {
            app.store
                .claim_key("s1", fp, TIMES, at)
                .await
                .expect("claim")
        }
    };
    assert_eq!(claim_again("f1", now).await, Claimed::InUse);
    assert_eq!(claim_again("f2", now).await, Claimed::Reused);
    // Past the lease, the holder is gone: taken over with a new lease, the old one is void.
    let later = Now::from_datetime(now.at + chrono::Duration::seconds(31));
    let Claimed::Fresh(taken) = claim_again("f1", later).await else {
        panic!("not taken over");
    };
    assert_ne!(taken.lease, claim.lease);
    let reply = StoredReply {
        status: 200,
        body: "{\"code\":0}".into(),
    };
    assert!(
        !app.store
            .store_key_reply(&claim, &reply)
            .await
            .expect("store")
    );
    assert!(
        app.store
            .store_key_reply(&taken, &reply)
            .await
            .expect("store")
    );
    assert_eq!(
        claim_again("f1", later).await,
        Claimed::Replay(reply.clone())
    );
    assert_eq!(claim_again("f2", later).await, Claimed::Reused);
    // Released keys are gone; stored ones are not released.
    app.store.release_key(&taken).await.expect("release");
    assert_eq!(claim_again("f1", later).await, Claimed::Replay(reply));
    let other = fresh(&app, "s2", "f1", now).await;
    app.store.release_key(&other).await.expect("release");
    fresh(&app, "s2", "f9", now).await;
}

/// The answer is written in the change's transaction: a request that lost its lease cannot
/// commit its change, and a change that is refused stores no answer.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_answer_commits_with_the_change_or_not_at_all(pool: DbPool) {
    let app = common::app(pool.clone());
    let now = Now::current();
    let render = |state: &call_shared::rules::CallState| {
        Ok(StoredReply {
            status: 200,
            body: state.room.room_name.clone(),
        })
    };
    // Lost lease: the change rolls back with it.
    let claim = fresh(&app, "s1", "f", now).await;
    let later = Now::from_datetime(now.at + chrono::Duration::seconds(31));
    let Claimed::Fresh(_) = app
        .store
        .claim_key("s1", "f", TIMES, later)
        .await
        .expect("claim")
    else {
        panic!("not taken over");
    };
    let lost = app
        .store
        .create_room_sealed(
            &new_room("r1", "alice"),
            &[],
            now,
            Some(Seal {
                claim: &claim,
                reply: &render,
            }),
        )
        .await;
    assert_eq!(
        lost.map(|_| ()),
        Err(call_shared::ApiError::IdempotencyKeyInUse)
    );
    assert_eq!(room_count(&pool).await, 0);
    // Held lease: the room and the answer, together.
    let claim = fresh(&app, "s2", "f", now).await;
    let (state, sealed) = app
        .store
        .create_room_sealed(
            &new_room("r1", "alice"),
            &[],
            now,
            Some(Seal {
                claim: &claim,
                reply: &render,
            }),
        )
        .await
        .expect("create");
    assert_eq!(
        sealed,
        Some(StoredReply {
            status: 200,
            body: "r1".into()
        })
    );
    assert_eq!(state.room.room_name, "r1");
    assert_eq!(
        app.store
            .claim_key("s2", "f", TIMES, now)
            .await
            .expect("claim"),
        Claimed::Replay(StoredReply {
            status: 200,
            body: "r1".into()
        })
    );
    // Refused in the transaction: nothing stored, the row still in flight for the caller.
    let claim = fresh(&app, "s3", "f", now).await;
    let refused = app
        .store
        .create_room_sealed(
            &new_room("r2", "alice"),
            &[],
            now,
            Some(Seal {
                claim: &claim,
                reply: &render,
            }),
        )
        .await;
    assert_eq!(
        refused.map(|_| ()),
        Err(call_shared::ApiError::CreatorInAnotherCall)
    );
    assert_eq!(
        app.store
            .claim_key("s3", "f", TIMES, now)
            .await
            .expect("claim"),
        Claimed::InUse
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_purge_deletes_expired_keys_in_batches_and_keeps_live_ones(pool: DbPool) {
    let app = common::app(pool.clone());
    let now = Now::current();
    let expired = (PURGE_BATCH + 20) as usize;
    let mut insert = sqlx::QueryBuilder::new(
        "INSERT INTO idempotency_key (scope, fingerprint, lease_token, lease_until, status, \
         body, created_at, expires_at) ",
    );
    insert.push_values(0..expired + 3, |mut row, i| {
        let expires = if i < expired {
            now.at - chrono::Duration::seconds(1 + i as i64)
        } else {
            now.at + chrono::Duration::hours(1)
        };
        row.push_bind(format!("scope-{i}"))
            .push_bind("f")
            .push_bind("l")
            .push_bind(None::<chrono::NaiveDateTime>)
            .push_bind(200i16)
            .push_bind("{}")
            .push_bind(now.at - chrono::Duration::days(1))
            .push_bind(expires);
    });
    insert.build().execute(&pool).await.expect("insert keys");
    let purged = app.store.purge_idempotency_keys(now).await.expect("purge");
    assert_eq!(purged, expired as u64);
    assert_eq!(key_rows(&pool).await, 3);
}
