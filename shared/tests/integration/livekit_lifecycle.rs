//! LiveKit's side of the lifecycle: signed webhooks (good, tampered, replayed, stale,
//! unknown), room teardown through RoomService after a room becomes final, and the sweeper.
//! A local stub stands in for the LiveKit server's Twirp API and records each call.

use crate::common;
use crate::events;
use crate::livekit;

use call_shared::App;
use call_shared::handlers::{livekit_webhook, remove_participant};
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

/// A sweep's clock once the request that queued a LiveKit call is over.
fn after_the_inline_attempt() -> Now {
    let grace = call_shared::sweeper::INLINE_ATTEMPT_GRACE.as_secs();
    later(i64::try_from(grace).expect("seconds"))
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
        (calls[0].method.as_str(), &calls[0].refused),
        ("DeleteRoom", &None),
        "a token of our key, signed with our secret, granting roomCreate"
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
    // Inside the grace the row still belongs to the request that queued it.
    let early = sweep(&app, Now::current()).await.expect("sweep");
    assert_eq!((early.teardowns_done, early.teardowns_failed), (0, 0));
    assert_eq!(stub.deleted(), vec!["r1".to_string()], "tried once, inline");
    let report = sweep(&app, after_the_inline_attempt())
        .await
        .expect("sweep");
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
    assert!(
        stub.listed()
            .iter()
            .any(|names| names.contains(&"r2".to_string())),
        "the reconcile asked LiveKit about r2: {:?}",
        stub.calls()
    );
    stub.assert_accepted("ListRooms");
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

/// Takes `uid` out of `room` as the creator's backend does (POST …/participants/{uid}/remove).
async fn remove(app: &App, room: &str, uid: &str) -> events::Reply {
    let path = format!("/api/rooms/{room}/participants/{uid}/remove");
    let req = Event::new("POST", &path)
        .token(&common::service_token(app))
        .request();
    reply(remove_participant(app, req).await)
}

async fn pending(pool: &DbPool, table: &str) -> Vec<(String, i32)> {
    let sql = match table {
        "livekit_teardown" => "SELECT room_name, attempts FROM livekit_teardown",
        _ => "SELECT uid, attempts FROM livekit_removal",
    };
    sqlx::query_as(sql).fetch_all(pool).await.expect("pending")
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn removing_a_participant_asks_livekit_with_admin_rights_on_that_room(pool: DbPool) {
    let (app, stub) = app_with_livekit(pool.clone(), &[]).await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    let r = remove(&app, "r1", "carol").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The stub accepts only roomAdmin with `room` the room the request names.
    stub.assert_accepted("RemoveParticipant");
    assert_eq!(
        stub.removed(),
        vec![("r1".to_string(), "carol".to_string())]
    );
    assert!(pending(&pool, "livekit_removal").await.is_empty());
}

/// A LiveKit that does not know our key (here: key and secret swapped in the configuration)
/// refuses every RoomService call. The room's state still changes; the teardown and the
/// removal stay queued and every sweep tries them again, until MAX_TEARDOWN_ATTEMPTS refused
/// retries, after which the sweeper gives them up; the reconcile ends nothing.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_livekit_that_refuses_our_credentials_leaves_the_work_queued(pool: DbPool) {
    let (app, stub) = app_with_livekit(
        pool.clone(),
        &[("LIVEKIT_API_KEY", SECRET), ("LIVEKIT_API_SECRET", KEY)],
    )
    .await;
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    api.open("r2", "dave", &["erin"]).await;

    assert_eq!(remove(&app, "r1", "carol").await.status, 200);
    assert_eq!(api.end(&api.service(), "r2").await.status, 200);
    assert_eq!(
        room_status(&pool, "r2").await,
        Some(3),
        "ended all the same"
    );
    let refused = stub.refusals();
    assert_eq!(refused.len(), 2, "{:?}", stub.calls());
    for call in &refused {
        let refusal = call.refused.as_ref().expect("refused");
        assert_eq!(
            (refusal.status, refusal.code),
            (401, "unauthenticated"),
            "{call:?}"
        );
    }
    assert!(stub.deleted().is_empty() && stub.removed().is_empty());
    assert_eq!(
        pending(&pool, "livekit_teardown").await,
        vec![("r2".to_string(), 0)]
    );
    assert_eq!(
        pending(&pool, "livekit_removal").await,
        vec![("carol".to_string(), 0)]
    );

    // A running room quiet for longer than the reconcile's grace: ListRooms is refused too,
    // and the room is not taken for gone.
    let report = sweep(&app, later(121)).await.expect("sweep");
    assert_eq!(report.ended_vanished, 0);
    assert_eq!(room_status(&pool, "r1").await, Some(1));
    assert!(
        stub.refusals().iter().any(|c| c.method == "ListRooms"),
        "{:?}",
        stub.calls()
    );
    assert_eq!((report.teardowns_failed, report.removals_failed), (1, 1));
    assert_eq!(
        pending(&pool, "livekit_teardown").await,
        vec![("r2".to_string(), 1)]
    );
    assert_eq!(
        pending(&pool, "livekit_removal").await,
        vec![("carol".to_string(), 1)]
    );

    let max = call_shared::sweeper::MAX_TEARDOWN_ATTEMPTS;
    for _ in 1..max {
        sweep(&app, after_the_inline_attempt())
            .await
            .expect("sweep");
    }
    assert_eq!(
        pending(&pool, "livekit_teardown").await,
        vec![("r2".to_string(), max)]
    );
    let last = sweep(&app, after_the_inline_attempt())
        .await
        .expect("sweep");
    assert_eq!((last.teardowns_failed, last.removals_failed), (1, 1));
    assert!(
        pending(&pool, "livekit_teardown").await.is_empty(),
        "given up"
    );
    assert!(
        pending(&pool, "livekit_removal").await.is_empty(),
        "given up"
    );
    let tries = |method: &str| stub.calls().iter().filter(|c| c.method == method).count();
    let expected = usize::try_from(max).expect("attempts") + 1;
    assert_eq!(
        tries("DeleteRoom"),
        expected,
        "one inline, then one a sweep"
    );
    assert_eq!(tries("RemoveParticipant"), expected);
    assert_eq!(stub.accepted(), Vec::new(), "not one call was accepted");
}

/// The stub itself refuses what LiveKit refuses, with LiveKit's status and Twirp code: without
/// this, a test could pass on a stub that waves everything through.
#[tokio::test]
async fn the_stub_refuses_what_livekit_refuses() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use livekit_protocol as proto;
    use prost::Message;
    use serde_json::json;

    let stub = LiveKitStub::start().await;
    let now = now_secs();
    let sign = |secret: &str, claims: Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let claims = |video: Value| json!({ "iss": KEY, "exp": now + 600, "nbf": now, "video": video });
    let create = claims(json!({ "roomCreate": true }));
    let admin_r1 = claims(json!({ "roomAdmin": true, "room": "r1" }));
    let delete = proto::DeleteRoomRequest { room: "r1".into() }.encode_to_vec();
    let list = proto::ListRoomsRequest {
        names: vec!["r1".into()],
    }
    .encode_to_vec();
    let kick = proto::RoomParticipantIdentity {
        room: "r1".into(),
        identity: "bob".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut without_exp = create.clone();
    without_exp.as_object_mut().expect("claims").remove("exp");
    let mut expired = create.clone();
    expired["exp"] = json!(now - 5);
    let mut early = create.clone();
    early["nbf"] = json!(now + 60);
    let mut foreign = create.clone();
    foreign["iss"] = json!("another-key");
    let mut swapped = create.clone();
    swapped["iss"] = json!(SECRET);
    let mut admin_r2 = admin_r1.clone();
    admin_r2["video"]["room"] = json!("r2");
    let list_grant = claims(json!({ "roomList": true }));
    let create_r1 = claims(json!({ "roomCreate": true, "room": "r1" }));
    let bearer = |claims: &Value| Some(format!("Bearer {}", sign(SECRET, claims.clone())));
    let other_secret = Some(format!("Bearer {}", sign("another-secret", create.clone())));
    let swapped = Some(format!("Bearer {}", sign(KEY, swapped)));

    // name, method, Authorization, status
    let cases: Vec<(&str, &str, Option<String>, u16)> = vec![
        ("no Authorization", "DeleteRoom", None, 401),
        ("not a bearer", "DeleteRoom", Some("Basic a2V5".into()), 401),
        (
            "not a JWT",
            "DeleteRoom",
            Some("Bearer not-a-jwt".into()),
            401,
        ),
        ("another secret", "DeleteRoom", other_secret, 401),
        ("key and secret swapped", "DeleteRoom", swapped, 401),
        ("another issuer", "DeleteRoom", bearer(&foreign), 401),
        ("no exp", "DeleteRoom", bearer(&without_exp), 401),
        ("expired", "DeleteRoom", bearer(&expired), 401),
        ("not valid yet", "DeleteRoom", bearer(&early), 401),
        (
            "DeleteRoom, roomList",
            "DeleteRoom",
            bearer(&list_grant),
            403,
        ),
        ("ListRooms, roomCreate", "ListRooms", bearer(&create), 403),
        (
            "RemoveParticipant, roomCreate",
            "RemoveParticipant",
            bearer(&create_r1),
            403,
        ),
        (
            "RemoveParticipant, admin of r2",
            "RemoveParticipant",
            bearer(&admin_r2),
            403,
        ),
        ("DeleteRoom, roomCreate", "DeleteRoom", bearer(&create), 200),
        ("ListRooms, roomList", "ListRooms", bearer(&list_grant), 200),
        (
            "RemoveParticipant, admin of r1",
            "RemoveParticipant",
            bearer(&admin_r1),
            200,
        ),
    ];
    for (i, (name, method, authorization, status)) in cases.iter().enumerate() {
        let body = match *method {
            "DeleteRoom" => &delete,
            "ListRooms" => &list,
            _ => &kick,
        };
        let (got, answer) = post_twirp(&stub.url, method, body, authorization.as_deref()).await;
        assert_eq!(got, *status, "{name}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(stub.calls().len(), i + 1, "{name}: one call recorded");
        let call = stub.calls().pop().expect("recorded");
        if *status == 200 {
            assert_eq!(call.refused, None, "{name}");
            continue;
        }
        let code = if *status == 401 {
            "unauthenticated"
        } else {
            "permission_denied"
        };
        let error: Value = serde_json::from_slice(&answer).expect("a Twirp error");
        assert_eq!(error["code"], code, "{name}: {error}");
        let refusal = call
            .refused
            .unwrap_or_else(|| panic!("{name}: recorded as accepted"));
        assert_eq!((refusal.status, refusal.code), (*status, code), "{name}");
    }
}

/// One Twirp call over a connection of its own: (HTTP status, body).
async fn post_twirp(
    url: &str,
    method: &str,
    body: &[u8],
    authorization: Option<&str>,
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "POST /twirp/livekit.RoomService/{method} HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: application/protobuf\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(auth) = authorization {
        head.push_str(&format!("authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await.expect("header");
        let header = header.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse().expect("length");
        }
    }
    let mut answer = vec![0; length];
    reader.read_exact(&mut answer).await.expect("body");
    (status, answer)
}
