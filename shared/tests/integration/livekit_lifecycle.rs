//! LiveKit's side of the lifecycle: signed webhooks (good, tampered, replayed, stale,
//! unknown), room teardown through RoomService after a room becomes final, and the sweeper.
//! A local stub stands in for the LiveKit server's Twirp API and records each call.

use crate::common;
use crate::events;
use crate::livekit;

use call_shared::App;
use call_shared::handlers::livekit_webhook;
use call_shared::model::Now;
use call_shared::store::DbPool;
use call_shared::sweeper::sweep;
use events::{Api, Event, participant, reply, room_status, status_of};
use livekit::{LiveKitStub, sign, signed_webhook};
use serde_json::Value;

const KEY: &str = common::LIVEKIT_KEY;
const SECRET: &str = common::LIVEKIT_SECRET;

async fn app_with_livekit(pool: DbPool, extra: &[(&str, &str)]) -> (App, LiveKitStub) {
    let stub = LiveKitStub::start().await;
    let mut vars = vec![("LIVEKIT_URL", stub.url.as_str())];
    vars.extend_from_slice(extra);
    (common::app_with(pool, &vars), stub)
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POSTs a webhook body with its Authorization header as LiveKit sends it (the bare JWT).
async fn deliver(app: &App, body: &str, authorization: Option<&str>) -> events::Reply {
    let mut ev = Event::new("POST", "/api/webhooks/livekit")
        .header("content-type", "application/webhook+json")
        .body(body);
    if let Some(auth) = authorization {
        ev = ev.header("authorization", auth);
    }
    let answer = reply(livekit_webhook(app, ev.request()).await);
    common::assert_nothing_held(app.store.pool()).await;
    answer
}

async fn send(app: &App, event: &str, room: &str, uid: Option<&str>, id: &str, at: i64) -> Value {
    let (body, token) = signed_webhook(KEY, SECRET, event, room, uid, id, at);
    let r = deliver(app, &body, Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"]["outcome"].clone()
}

fn later(secs: i64) -> Now {
    Now::from_millis(Now::current().ms + secs * 1000).expect("instant")
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_webhook_without_a_valid_signature_is_401(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    Api::new(&app).open("r1", "alice", &["bob"]).await;
    let (body, token) = signed_webhook(
        KEY,
        SECRET,
        "participant_joined",
        "r1",
        Some("bob"),
        "EV_1",
        now_secs(),
    );

    let tampered = body.replace("bob", "eve");
    deliver(&app, &tampered, Some(&token))
        .await
        .err(401, "unauthorized");
    let foreign = sign(KEY, "another-secret-of-enough-length!!", &body);
    deliver(&app, &body, Some(&foreign))
        .await
        .err(401, "unauthorized");
    deliver(&app, &body, None).await.err(401, "unauthorized");
    deliver(&app, &body, Some("Bearer not-a-jwt"))
        .await
        .err(401, "unauthorized");
    assert_eq!(
        status_of(&pool, "r1", "bob").await,
        Some(0),
        "nothing applied"
    );

    // The same body with a Bearer prefix is accepted.
    let r = deliver(&app, &body, Some(&format!("Bearer {token}"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_base64_encoded_webhook_body_is_verified_as_decoded(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    Api::new(&app).open("r1", "alice", &["bob"]).await;
    let (body, token) = signed_webhook(
        KEY,
        SECRET,
        "participant_joined",
        "r1",
        Some("bob"),
        "EV_1",
        now_secs(),
    );
    let ev = Event::new("POST", "/api/webhooks/livekit")
        .header("authorization", &token)
        .body(&body)
        .base64_body();
    let r = reply(livekit_webhook(&app, ev.request()).await);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_joined_records_presence_and_starts_the_call(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    Api::new(&app).open("r1", "alice", &["bob"]).await;
    let at = now_secs();
    assert_eq!(
        send(&app, "participant_joined", "r1", Some("bob"), "EV_1", at).await,
        "applied"
    );
    let bob = participant(&pool, "r1", "bob").await.expect("row");
    assert_eq!((bob.status, bob.join_time), (1, at * 1000));
    assert_eq!(room_status(&pool, "r1").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_replayed_event_changes_nothing(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    let at = now_secs();
    assert_eq!(
        send(&app, "participant_joined", "r1", Some("bob"), "EV_1", at).await,
        "applied"
    );
    assert_eq!(api.leave(&api.service(), "r1", "bob").await.status, 200);
    assert_eq!(
        send(&app, "participant_joined", "r1", Some("bob"), "EV_1", at).await,
        "duplicate"
    );
    assert_eq!(
        status_of(&pool, "r1", "bob").await,
        Some(3),
        "the replay did not revive bob"
    );
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_event WHERE id = 'EV_1'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, 1);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_stale_event_never_undoes_newer_state(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    // A participant_left from before bob's join arrives late.
    let an_hour_ago = now_secs() - 3600;
    assert_eq!(
        send(
            &app,
            "participant_left",
            "r1",
            Some("bob"),
            "EV_OLD",
            an_hour_ago
        )
        .await,
        "ignored"
    );
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(1));
    // A fresh one applies.
    assert_eq!(
        send(
            &app,
            "participant_left",
            "r1",
            Some("bob"),
            "EV_NEW",
            now_secs() + 1
        )
        .await,
        "applied"
    );
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(3));
}

/// A late participant_joined from a call the uid has since left neither closes the call it
/// rings in now nor reopens anything (found by the call simulation).
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_stale_join_never_closes_the_call_the_uid_is_in_now(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("a", "ca", &["u", "v"]).await;
    api.joined("a", "u").await;
    api.joined("a", "v").await;
    let r = api.leave(&api.service(), "a", "u").await;
    assert_eq!(r.status, 200, "{}", r.body);
    api.open("b", "cb", &["u"]).await;
    assert_eq!(status_of(&pool, "b", "u").await, Some(0));
    let an_hour_ago = now_secs() - 3600;
    let outcome = send(
        &app,
        "participant_joined",
        "a",
        Some("u"),
        "EV_LATE",
        an_hour_ago,
    )
    .await;
    assert_eq!(outcome, "ignored");
    assert_eq!(
        status_of(&pool, "b", "u").await,
        Some(0),
        "u still rings in b"
    );
    assert_eq!(room_status(&pool, "b").await, Some(0));
    assert_eq!(
        status_of(&pool, "a", "u").await,
        Some(3),
        "and stays out of a"
    );
    assert!(stub.deleted().is_empty(), "{:?}", stub.deleted());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn unknown_rooms_and_uids_are_acknowledged_and_ignored(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    Api::new(&app).open("r1", "alice", &["bob"]).await;
    assert_eq!(
        send(
            &app,
            "participant_joined",
            "nope",
            Some("bob"),
            "EV_1",
            now_secs()
        )
        .await,
        "ignored"
    );
    assert_eq!(
        send(
            &app,
            "participant_joined",
            "r1",
            Some("mallory"),
            "EV_2",
            now_secs()
        )
        .await,
        "ignored"
    );
    assert_eq!(
        send(
            &app,
            "track_published",
            "r1",
            Some("bob"),
            "EV_3",
            now_secs()
        )
        .await,
        "ignored"
    );
    assert_eq!(status_of(&pool, "r1", "mallory").await, None);
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(0));
    assert!(stub.calls().is_empty());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn participant_left_ends_a_two_person_call_and_tears_it_down(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.joined("r1", "bob").await;
    assert_eq!(
        send(
            &app,
            "participant_left",
            "r1",
            Some("bob"),
            "EV_1",
            now_secs() + 1
        )
        .await,
        "applied"
    );
    assert_eq!(room_status(&pool, "r1").await, Some(2));
    assert_eq!(status_of(&pool, "r1", "alice").await, Some(3));
    assert_eq!(stub.deleted(), vec!["r1".to_string()]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn room_finished_ends_the_room_without_a_delete(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    assert_eq!(
        send(&app, "room_finished", "r1", None, "EV_1", now_secs()).await,
        "applied"
    );
    assert_eq!(room_status(&pool, "r1").await, Some(2));
    assert_eq!(status_of(&pool, "r1", "carol").await, Some(4));
    assert!(stub.deleted().is_empty(), "LiveKit closed it already");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn joining_a_final_room_deletes_it_again_and_never_revives_it(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.ended("r1").await;
    assert_eq!(stub.deleted(), vec!["r1".to_string()]);
    let at = now_secs() + 1;
    assert_eq!(
        send(&app, "participant_joined", "r1", Some("bob"), "EV_1", at).await,
        "deleted_again"
    );
    assert_eq!(room_status(&pool, "r1").await, Some(3));
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(6));
    assert_eq!(stub.deleted(), vec!["r1".to_string(), "r1".to_string()]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn presence_in_one_room_closes_the_live_row_in_another(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.open("r2", "carol", &["dave"]).await;
    // bob, ringing in r1, is invited to r2 too: recorded busy there.
    let r = api.invite(&api.service(), "r2", &["bob"]).await;
    assert_eq!(r.data()[0]["status"], 5);
    // LiveKit then sees bob in r2 (he answered there): r1's ring closes and r1 settles.
    assert_eq!(
        send(
            &app,
            "participant_joined",
            "r2",
            Some("bob"),
            "EV_1",
            now_secs() + 1
        )
        .await,
        "applied"
    );
    assert_eq!(status_of(&pool, "r2", "bob").await, Some(1));
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(5));
    assert_eq!(
        room_status(&pool, "r1").await,
        Some(3),
        "nobody left to answer alice"
    );
    assert_eq!(stub.deleted(), vec!["r1".to_string()]);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn ending_a_room_asks_livekit_to_delete_it(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.joined("r1", "bob").await;
    assert_eq!(api.leave(&api.service(), "r1", "alice").await.status, 200);
    let calls = stub.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].method.as_str(), calls[0].authorized),
        ("DeleteRoom", true)
    );
    assert_eq!(calls[0].rooms, vec!["r1".to_string()]);
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM livekit_teardown")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(pending, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_livekit_failure_never_blocks_the_change_and_the_sweeper_retries(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    stub.set_failing(true);
    assert_eq!(api.end(&api.service(), "r1").await.status, 200);
    assert_eq!(room_status(&pool, "r1").await, Some(3));
    let pending: Vec<String> = sqlx::query_scalar("SELECT room_name FROM livekit_teardown")
        .fetch_all(&pool)
        .await
        .expect("pending");
    assert_eq!(pending, vec!["r1".to_string()]);

    stub.set_failing(false);
    let report = sweep(&app, Now::current()).await.expect("sweep");
    assert_eq!(report.teardowns_done, 1);
    assert_eq!(stub.deleted(), vec!["r1".to_string(), "r1".to_string()]);
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM livekit_teardown")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(pending, 0);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_sweeper_rings_out_unanswered_invites(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    let early = sweep(&app, later(30)).await.expect("sweep");
    assert_eq!(early.deadlines_applied, 0);
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(0));

    let report = sweep(&app, later(61)).await.expect("sweep");
    assert_eq!((report.deadlines_applied, report.rooms_closed), (1, 1));
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(4));
    assert_eq!(status_of(&pool, "r1", "carol").await, Some(4));
    assert_eq!(status_of(&pool, "r1", "alice").await, Some(3));
    assert_eq!(
        room_status(&pool, "r1").await,
        Some(3),
        "nobody answered: cancelled"
    );
    assert_eq!(stub.deleted(), vec!["r1".to_string()]);
}

/// In AWS the scheduler invokes the sweeper once a minute and it keeps sweeping once a second
/// for SWEEP_LOOP_SECONDS: an invite that rings out during the loop is written down within a
/// second of its deadline, by the same invocation.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn one_sweeper_invocation_sweeps_every_second_for_its_loop(pool: DbPool) {
    let (app, _stub) = app_with_livekit(
        pool.clone(),
        &[("SWEEP_LOOP_SECONDS", "3"), ("RING_TIMEOUT_SECONDS", "1")],
    )
    .await;
    Api::new(&app).open("r1", "alice", &["bob"]).await;
    let started = std::time::Instant::now();
    let report = call_shared::sweeper::run(&app).await;
    let took = started.elapsed();
    println!("sweeper loop of 3 s: {} sweeps in {took:?}", report.sweeps);
    assert_eq!((report.sweeps, report.failed_sweeps), (3, 0));
    assert!(took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(4));
    assert_eq!((report.deadlines_applied, report.rooms_closed), (1, 1));
    assert_eq!(status_of(&pool, "r1", "bob").await, Some(4));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_group_call_keeps_running_when_one_invite_rings_out(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    sweep(&app, later(61)).await.expect("sweep");
    assert_eq!(status_of(&pool, "r1", "carol").await, Some(4));
    assert_eq!(room_status(&pool, "r1").await, Some(1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_sweeper_closes_a_room_nobody_can_answer(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    Api::new(&app).open("r1", "alice", &[]).await;
    sweep(&app, later(30)).await.expect("sweep");
    assert_eq!(
        room_status(&pool, "r1").await,
        Some(0),
        "still within the ring timeout"
    );
    let report = sweep(&app, later(61)).await.expect("sweep");
    assert_eq!(report.rooms_closed, 1);
    assert_eq!(room_status(&pool, "r1").await, Some(3));
    assert_eq!(status_of(&pool, "r1", "alice").await, Some(3));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_sweeper_ends_calls_past_max_call_seconds(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[("MAX_CALL_SECONDS", "600")]).await;
    stub.set_alive(&["r1"]);
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob"]).await;
    api.joined("r1", "bob").await;
    sweep(&app, later(300)).await.expect("sweep");
    assert_eq!(room_status(&pool, "r1").await, Some(1));
    let report = sweep(&app, later(601)).await.expect("sweep");
    assert_eq!(report.rooms_closed, 1);
    assert_eq!(room_status(&pool, "r1").await, Some(2));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_sweeper_ends_calls_livekit_no_longer_has(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    for room in ["r1", "r2"] {
        api.open(room, &format!("{room}_a"), &[&format!("{room}_b")])
            .await;
        api.joined(room, &format!("{room}_b")).await;
    }
    stub.set_alive(&["r1"]);
    sweep(&app, later(60)).await.expect("sweep");
    assert_eq!(
        room_status(&pool, "r2").await,
        Some(1),
        "within the grace period"
    );
    let report = sweep(&app, later(121)).await.expect("sweep");
    assert_eq!(report.ended_vanished, 1);
    assert_eq!(room_status(&pool, "r1").await, Some(1));
    assert_eq!(room_status(&pool, "r2").await, Some(2));
    assert!(
        !stub.deleted().contains(&"r2".to_string()),
        "LiveKit has no such room to delete"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_sweeper_purges_webhook_ids_after_a_day(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    Api::new(&app).open("r1", "alice", &["bob"]).await;
    send(
        &app,
        "participant_joined",
        "r1",
        Some("bob"),
        "EV_1",
        now_secs(),
    )
    .await;
    assert_eq!(
        sweep(&app, later(3600))
            .await
            .expect("sweep")
            .webhook_ids_purged,
        0
    );
    assert_eq!(
        sweep(&app, later(24 * 3600 + 1))
            .await
            .expect("sweep")
            .webhook_ids_purged,
        1
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn two_overlapping_sweeps_agree(pool: DbPool) {
    let (app, _stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    for i in 0..6 {
        api.open(&format!("r{i}"), &format!("a{i}"), &[&format!("b{i}")])
            .await;
    }
    let at = later(61);
    let (first, second) = tokio::join!(sweep(&app, at), sweep(&app, at));
    let total = first.expect("sweep").rooms_closed + second.expect("sweep").rooms_closed;
    assert_eq!(total, 6, "each room rang out exactly once");
    for i in 0..6 {
        assert_eq!(room_status(&pool, &format!("r{i}")).await, Some(3));
    }
}
