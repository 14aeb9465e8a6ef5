//! Business events end to end inside the handlers: the outbox a change writes, the first
//! delivery inside the request, retries from stored state by the event sweeper, order per
//! room and endpoint, the pull feed, event details and redelivery. Receivers are real HTTP
//! servers on loopback; every check of the database looks from another connection.

use std::time::Duration;

use call_shared::App;
use call_shared::delivery::sign;
use call_shared::event_sweeper;
use call_shared::model::Now;
use call_shared::store::DbPool;
use serde_json::{Value, json};

use crate::common;
use crate::events::Api;
use crate::receiver::{KEY, Receiver};

/// An App delivering to `receiver` with retries compressed to milliseconds.
fn app_for(pool: &DbPool, receiver: &Receiver, extra: &[(&str, &str)]) -> App {
    let endpoints = receiver.endpoints(None);
    let mut vars = vec![
        ("EVENT_ENDPOINTS", endpoints.as_str()),
        ("EVENT_RETRY_BASE_MS", "40"),
        ("EVENT_RETRY_MAX_MS", "200"),
        ("EVENT_TIMEOUT_MS", "1000"),
    ];
    vars.extend_from_slice(extra);
    common::app_with(pool.clone(), &vars)
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, u)| (t.to_string(), u.to_string()))
        .collect()
}

/// (type, uid, seq) of a room's events as stored, by seq.
async fn outbox(pool: &DbPool, room: &str) -> Vec<(String, String, i64)> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT type, seq, payload FROM call_event WHERE room_name = ? ORDER BY seq",
    )
    .bind(room)
    .fetch_all(pool)
    .await
    .expect("outbox");
    rows.into_iter()
        .map(|(t, seq, payload)| {
            let body: Value = serde_json::from_str(&payload).expect("payload");
            let uid = body["data"]["uid"].as_str().unwrap_or("").to_owned();
            (t, uid, seq)
        })
        .collect()
}

/// Runs the event sweeper until nothing is due or `within` has passed.
async fn sweep_until_quiet(app: &App, within: Duration) {
    let started = std::time::Instant::now();
    loop {
        let report = event_sweeper::sweep(app, Now::current())
            .await
            .expect("event sweep");
        let due: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM call_event WHERE due_at IS NOT NULL")
                .fetch_one(app.store.pool())
                .await
                .expect("due");
        if (due == 0 && report.rooms == 0) || started.elapsed() > within {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn assert_signed(received: &crate::receiver::Received) {
    let ts: i64 = received.timestamp.parse().expect("webhook-timestamp");
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    assert_eq!(
        received.signature,
        sign(KEY, &received.id, ts, &received.body),
        "signature over id.timestamp.body"
    );
    assert_eq!(received.json["id"], received.id.as_str());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_one_to_one_call_delivers_its_events_in_order_inside_the_requests(pool: DbPool) {
    let receiver = Receiver::start().await;
    let app = app_for(&pool, &receiver, &[]);
    let api = Api::new(&app);
    api.open("r1", "a", &["b"]).await;
    // The ring reached the receiver before create answered.
    assert_eq!(
        receiver.story(),
        pairs(&[
            ("room.created", ""),
            ("participant.joined", "a"),
            ("participant.invited", "b"),
        ])
    );
    api.joined("r1", "b").await;
    let left = api.leave(&api.service(), "r1", "b").await;
    assert_eq!(left.status, 200, "{}", left.body);
    let expected = pairs(&[
        ("room.created", ""),
        ("participant.joined", "a"),
        ("participant.invited", "b"),
        ("participant.joined", "b"),
        ("room.started", ""),
        ("participant.left", "b"),
        ("participant.left", "a"),
        ("room.ended", ""),
    ]);
    assert_eq!(receiver.story(), expected);
    let received = receiver.accepted();
    for (i, r) in received.iter().enumerate() {
        assert_signed(r);
        assert_eq!(r.json["seq"], i as i64 + 1, "gap-free seq from 1");
        assert_eq!(r.json["room_name"], "r1");
    }
    let invited = &received[2].json["data"];
    assert_eq!(
        (
            &invited["caller"],
            &invited["invitee"],
            &invited["call_type"]
        ),
        (&json!("a"), &json!("b"), &json!(1))
    );
    let ended = &received[7].json["data"];
    assert_eq!(
        (&ended["status"], &ended["end_reason"]),
        (&json!(2), &json!("completed"))
    );
    assert_eq!(ended["participants"].as_array().map(Vec::len), Some(2));
    // The outbox agrees, and nothing is owed any more.
    let stored: Vec<(String, String)> = outbox(&pool, "r1")
        .await
        .into_iter()
        .map(|(t, u, _)| (t, u))
        .collect();
    assert_eq!(stored, expected);
    let owed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM call_event WHERE owed > 0 OR due_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("owed");
    assert_eq!(owed, 0);
    let attempts: Vec<(String, i16)> =
        sqlx::query_as("SELECT outcome, inline_attempt FROM event_attempt ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("attempts");
    assert_eq!(attempts.len(), 8);
    assert!(
        attempts
            .iter()
            .all(|(o, inline)| o == "delivered" && *inline == 1)
    );
    receiver.assert_all_verified();
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn without_endpoints_events_are_written_for_the_feed_only(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    api.open("r1", "a", &["b"]).await;
    api.ended("r1").await;
    let stored = outbox(&pool, "r1").await;
    assert_eq!(
        stored
            .iter()
            .map(|(t, _, _)| t.as_str())
            .collect::<Vec<_>>(),
        [
            "room.created",
            "participant.joined",
            "participant.invited",
            "participant.cancelled",
            "participant.left",
            "room.ended"
        ]
    );
    let (owed, due): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(due_at) FROM call_event WHERE owed > 0")
            .fetch_one(&pool)
            .await
            .expect("owed");
    assert_eq!((owed, due), (0, 0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_receiver_that_fails_then_recovers_gets_every_event_once_in_order(pool: DbPool) {
    let receiver = Receiver::start().await;
    receiver.script(&[(500, Duration::ZERO), (503, Duration::ZERO)]);
    let app = app_for(&pool, &receiver, &[]);
    let api = Api::new(&app);
    api.open("r1", "a", &["b"]).await;
    // The first attempt failed inside create: nothing later was sent past it.
    assert_eq!(receiver.received().len(), 1);
    api.joined("r1", "b").await;
    sweep_until_quiet(&app, Duration::from_secs(10)).await;
    let story = receiver.story();
    assert_eq!(
        story,
        pairs(&[
            ("room.created", ""),
            ("participant.joined", "a"),
            ("participant.invited", "b"),
            ("participant.joined", "b"),
            ("room.started", ""),
        ])
    );
    // Failed attempts carried the same id and the same body as the delivered one, and the
    // sweeper's retries were signed over exactly that body, each with its own timestamp.
    let received = receiver.received();
    assert_eq!(received[0].id, received[1].id);
    assert_eq!(received[1].id, received[2].id);
    for retry in &received[1..3] {
        assert_eq!(
            retry.body, received[0].body,
            "a retry sends the stored body"
        );
        assert!(retry.verified, "a retry's signature: {retry:?}");
        assert_signed(retry);
    }
    let attempts: Vec<(String, i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT event_id, attempt, outcome, http_status FROM event_attempt ORDER BY id LIMIT 3",
    )
    .fetch_all(&pool)
    .await
    .expect("attempts");
    assert_eq!(
        attempts
            .iter()
            .map(|(_, n, o, s)| (*n, o.as_str(), *s))
            .collect::<Vec<_>>(),
        [
            (1, "failed", Some(500)),
            (2, "failed", Some(503)),
            (3, "delivered", Some(200))
        ]
    );
    receiver.assert_all_verified();
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_410_ends_the_attempts_for_that_event_and_the_next_ones_follow(pool: DbPool) {
    let receiver = Receiver::start().await;
    receiver.script(&[(410, Duration::ZERO)]);
    let app = app_for(&pool, &receiver, &[]);
    let api = Api::new(&app);
    api.open("r1", "a", &["b"]).await;
    let received = receiver.received();
    assert_eq!(
        received.len(),
        3,
        "room.created refused, the rest delivered"
    );
    assert_eq!(received[0].status, 410);
    let created: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT outcome, http_status FROM event_attempt WHERE event_id = ? ORDER BY id",
    )
    .bind(&received[0].id)
    .fetch_all(&pool)
    .await
    .expect("attempts");
    assert_eq!(created, [("gave_up".to_owned(), Some(410))]);
    sweep_until_quiet(&app, Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 3, "never retried");
    receiver.assert_all_verified();
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_receiver_slower_than_the_budget_is_retried_with_the_full_timeout(pool: DbPool) {
    let receiver = Receiver::start().await;
    receiver.answer_with(200, Duration::from_millis(400));
    let app = app_for(&pool, &receiver, &[("EVENT_INLINE_BUDGET_MS", "100")]);
    let api = Api::new(&app);
    let started = std::time::Instant::now();
    api.open("r1", "a", &[]).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(350),
        "create waited {took:?} for a slow receiver"
    );
    let first: (String, String) =
        sqlx::query_as("SELECT outcome, error FROM event_attempt ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .expect("attempt");
    assert_eq!(first.0, "failed");
    assert!(first.1.contains("no answer within"), "{}", first.1);
    sweep_until_quiet(&app, Duration::from_secs(10)).await;
    let delivered: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM event_attempt WHERE outcome = 'delivered'")
            .fetch_one(&pool)
            .await
            .expect("delivered");
    assert_eq!(
        delivered, 2,
        "room.created and the creator's join, by the sweep"
    );
    receiver.assert_all_verified();
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn an_endpoint_that_keeps_failing_gets_no_inline_attempts_until_it_recovers(pool: DbPool) {
    let receiver = Receiver::start().await;
    receiver.answer_with(500, Duration::ZERO);
    let app = app_for(&pool, &receiver, &[("EVENT_FAILURES_BEFORE_PAUSE", "2")]);
    let api = Api::new(&app);
    api.open("r1", "a", &[]).await;
    api.open("r2", "c", &[]).await;
    let tried = receiver.received().len();
    assert_eq!(tried, 2, "one failed first attempt per room");
    api.open("r3", "d", &[]).await;
    assert_eq!(
        receiver.received().len(),
        tried,
        "paused: no attempt inside the request"
    );
    // It recovers: the sweep's retry succeeds, and requests attempt inline again.
    receiver.answer_with(200, Duration::ZERO);
    sweep_until_quiet(&app, Duration::from_secs(10)).await;
    let before = receiver.received().len();
    api.open("r4", "e", &[]).await;
    assert_eq!(
        receiver.received().len(),
        before + 2,
        "inline again after recovery"
    );
    for room in ["r1", "r2", "r3", "r4"] {
        let got: Vec<String> = receiver
            .accepted()
            .iter()
            .filter(|r| r.json["room_name"] == room)
            .map(|r| r.event_type().to_owned())
            .collect();
        assert_eq!(got, ["room.created", "participant.joined"], "{room}");
    }
    receiver.assert_all_verified();
}

/// The pause holds for a room whose stream exists already (delivered up to date), not only
/// for a room's first event.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_paused_endpoint_gets_no_inline_attempt_for_a_room_it_has_served_before(pool: DbPool) {
    let receiver = Receiver::start().await;
    let app = app_for(&pool, &receiver, &[("EVENT_FAILURES_BEFORE_PAUSE", "2")]);
    let api = Api::new(&app);
    api.open("r1", "a", &[]).await;
    assert_eq!(
        receiver.accepted().len(),
        2,
        "r1 delivered inline while healthy"
    );
    receiver.answer_with(500, Duration::ZERO);
    api.open("r2", "c", &[]).await;
    api.open("r3", "d", &[]).await;
    let tried = receiver.received().len();
    let invited = api.invite(&api.service(), "r1", &["b"]).await;
    assert_eq!(invited.status, 200, "{invited:?}");
    assert_eq!(
        receiver.received().len(),
        tried,
        "paused: r1's new event waits for the sweep"
    );
    receiver.answer_with(200, Duration::ZERO);
    sweep_until_quiet(&app, Duration::from_secs(10)).await;
    let r1: Vec<String> = receiver
        .accepted()
        .iter()
        .filter(|r| r.json["room_name"] == "r1")
        .map(|r| r.event_type().to_owned())
        .collect();
    assert_eq!(
        r1,
        ["room.created", "participant.joined", "participant.invited"]
    );
    receiver.assert_all_verified();
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn an_event_is_given_up_after_the_retry_window(pool: DbPool) {
    let receiver = Receiver::start().await;
    receiver.answer_with(503, Duration::ZERO);
    let app = app_for(&pool, &receiver, &[("EVENT_RETRY_WINDOW_SECONDS", "1")]);
    let api = Api::new(&app);
    api.open("r1", "a", &[]).await;
    sweep_until_quiet(&app, Duration::from_secs(10)).await;
    let outcomes: Vec<(String, String)> = sqlx::query_as(
        "SELECT e.type, a.outcome FROM event_attempt a JOIN call_event e ON e.event_id = a.event_id \
         WHERE a.outcome = 'gave_up' ORDER BY a.id",
    )
    .fetch_all(&pool)
    .await
    .expect("given up");
    assert_eq!(
        outcomes.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["room.created", "participant.joined"]
    );
    let owed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_event WHERE owed > 0")
        .fetch_one(&pool)
        .await
        .expect("owed");
    assert_eq!(owed, 0);
    receiver.assert_all_verified();
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_type_filter_sends_only_those_events(pool: DbPool) {
    let receiver = Receiver::start().await;
    let endpoints = receiver.endpoints(Some(&["participant.invited", "room.ended"]));
    let app = common::app_with(pool.clone(), &[("EVENT_ENDPOINTS", endpoints.as_str())]);
    let api = Api::new(&app);
    api.open("r1", "a", &["b"]).await;
    api.ended("r1").await;
    assert_eq!(
        receiver.story(),
        pairs(&[("participant.invited", "b"), ("room.ended", "")])
    );
    assert_eq!(
        receiver.accepted()[1].json["seq"],
        6,
        "seq counts every event of the room"
    );
    receiver.assert_all_verified();
}

/// One page of the feed after `cursor` (from the start without one): the events' ids, the
/// next cursor and whether there is more.
async fn feed_page(api: &Api<'_>, cursor: Option<&str>, limit: u32) -> (Vec<String>, String, bool) {
    let query = match cursor {
        Some(cursor) => format!("limit={limit}&after={cursor}"),
        None => format!("limit={limit}"),
    };
    let page = api.list_events(&api.service(), &query).await;
    let data = page.ok("获取事件列表成功").clone();
    let ids = data["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let next = data["next_cursor"].as_str().expect("cursor").to_owned();
    (ids, next, data["has_more"].as_bool().expect("has_more"))
}

/// Event ids as stored, in the order `order_by` gives.
async fn event_ids(pool: &DbPool, order_by: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT event_id FROM call_event ORDER BY {order_by}"
    )))
    .fetch_all(pool)
    .await
    .expect("events")
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_feed_pages_every_event_exactly_once_with_events_written_between_pages(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    api.open("r1", "a", &["b"]).await;
    api.open("r2", "c", &[]).await;
    let before = event_ids(&pool, "id").await;
    assert_eq!(before.len(), 5);

    let (first, mut cursor, more) = feed_page(&api, None, 2).await;
    assert_eq!(first, before[..2], "page 1: the oldest two");
    assert!(more);
    // Between two pages, on purpose: new events commit after the reader's cursor was handed
    // out, in both rooms (r2 ends, r1 rings one more).
    api.ended("r2").await;
    let invited = api.invite(&api.service(), "r1", &["d"]).await;
    assert_eq!(invited.status, 200, "{}", invited.body);
    let between: Vec<String> = event_ids(&pool, "id")
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert!(between.len() >= 3, "written between the pages: {between:?}");

    let mut seen = first;
    for _ in 0..20 {
        let (ids, next, more) = feed_page(&api, Some(&cursor), 2).await;
        assert!(ids.len() <= 2);
        seen.extend(ids);
        cursor = next;
        if !more {
            break;
        }
    }
    // Every event once, none skipped or repeated, in publication order: what was there at
    // page 1 first, in id order, then what was written between the pages.
    let mut expected = before.clone();
    expected.extend(between.iter().cloned());
    assert_eq!(seen, expected, "the feed as read, page by page");
    let (tail, _, more) = feed_page(&api, Some(&cursor), 2).await;
    assert!(tail.is_empty() && !more, "the end: {tail:?}");
    assert_eq!(seen, event_ids(&pool, "feed_batch, id").await);
    let seqs: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, seq FROM call_event WHERE room_name = 'r1' ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("r1");
    let r1_seen: Vec<&String> = seen
        .iter()
        .filter(|id| seqs.iter().any(|(e, _)| e == *id))
        .collect();
    assert_eq!(
        r1_seen,
        seqs.iter().map(|(e, _)| e).collect::<Vec<_>>(),
        "one room's events in seq order"
    );
    common::assert_nothing_held(&pool).await;
}

/// Transactions commit out of id order: the feed never hands out an event past one that is
/// still to commit, so a reader paging by cursor cannot skip the late one.
#[cfg(not(feature = "embedded"))]
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_feed_publishes_a_late_commit_after_what_a_reader_has_seen(pool: DbPool) {
    late_commit_follows_the_cursor(pool, None).await;
}

/// The same behind a year of published events (1,000,000): the publisher finds unpublished
/// rows by a plain read and updates them by primary key, so on a large table as on a small
/// one it neither waits for the uncommitted insert nor lets a reader skip it.
#[cfg(not(feature = "embedded"))]
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_feed_publishes_a_late_commit_behind_a_million_published_events(pool: DbPool) {
    const EVENTS: i64 = 1_000_000;
    let digits = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
    // Set-based, 100,000 rows a statement: ten rooms' events per thousand, all in batch 1.
    for block in 0..EVENTS / 100_000 {
        let sql = format!(
            "INSERT INTO call_event (event_id, room_name, seq, type, occurred_at, payload, \
             feed_batch, created_at) \
             SELECT CONCAT('evt_year_', n), CONCAT('year_', n DIV 10), n MOD 10 + 1, \
             'room.created', NOW(3), '{{}}', 1, NOW(3) FROM \
             (SELECT {block} * 100000 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS n \
              FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f) seq"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("a year of events");
    }
    sqlx::query("UPDATE event_feed_head SET batch = 1 WHERE id = 1")
        .execute(&pool)
        .await
        .expect("head");
    let last: i64 = sqlx::query_scalar("SELECT MAX(id) FROM call_event")
        .fetch_one(&pool)
        .await
        .expect("last id");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_event WHERE feed_batch = 1")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, EVENTS);
    late_commit_follows_the_cursor(pool, Some(format!("1.{last}"))).await;
}

/// An event inserted and held uncommitted, a call committed after it (its events published by
/// its writer), a reader's page after `after`, then the late commit and its publication: the
/// reader's next page holds exactly the late event.
#[cfg(not(feature = "embedded"))]
#[allow(clippy::disallowed_methods)] // the test holds an uncommitted event of its own
async fn late_commit_follows_the_cursor(pool: DbPool, after: Option<String>) {
    use sqlx::Connection;
    let app = common::app(pool.clone());
    // The late transaction below is held open on purpose across these requests.
    let api = Api::without_held_check(&app);
    let mut conn = pool.acquire().await.expect("connection");
    let mut late = conn.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO call_event (event_id, room_name, seq, type, occurred_at, payload, created_at) \
         VALUES ('evt_late', 'elsewhere', 1, 'room.created', NOW(3), '{\"id\":\"evt_late\"}', NOW(3))",
    )
    .execute(&mut *late)
    .await
    .expect("uncommitted event");
    // A later transaction gets a higher id and commits first.
    api.open("r1", "a", &[]).await;
    let query = after.map(|c| format!("after={c}")).unwrap_or_default();
    let first = api.list_events(&api.service(), &query).await;
    let first = first.ok("获取事件列表成功").clone();
    let ids: Vec<&str> = first["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "r1's committed events, published without waiting: {ids:?}"
    );
    late.commit().await.expect("commit the late event");
    // What the late writer does after its commit (or the event sweep, if it died first).
    assert_eq!(app.store.publish_feed().await.expect("publish"), 1);
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let second = api
        .list_events(&api.service(), &format!("after={cursor}"))
        .await;
    let second = second.ok("获取事件列表成功").clone();
    let ids: Vec<&str> = second["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["evt_late"], "the late commit follows the cursor");
    common::assert_nothing_held(&pool).await;
}

/// A feed read only reads: it answers while another transaction holds the feed's batch
/// counter, and it publishes nothing (the writer published its events after its commit; an
/// event committed behind the service's back waits for a publisher).
#[allow(clippy::disallowed_methods)] // the test holds the feed head itself
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_feed_read_neither_writes_nor_waits_for_the_feed_head(pool: DbPool) {
    use sqlx::Connection;
    let app = common::app(pool.clone());
    let api = Api::without_held_check(&app);
    api.open("r1", "a", &[]).await;
    let published: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM call_event WHERE feed_batch IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("published");
    assert_eq!(
        published, 2,
        "the writer published its events after its commit"
    );
    sqlx::query(
        "INSERT INTO call_event (event_id, room_name, seq, type, occurred_at, payload, created_at) \
         VALUES ('evt_aside', 'elsewhere', 1, 'room.created', ?, '{\"id\":\"evt_aside\"}', ?)",
    )
    .bind(Now::current().at)
    .bind(Now::current().at)
    .execute(&pool)
    .await
    .expect("an event no writer published");

    // Another transaction holds the batch counter (a publisher's lock) for the whole read.
    let mut conn = pool.acquire().await.expect("connection");
    let mut holder = conn.begin().await.expect("begin");
    sqlx::query("UPDATE event_feed_head SET batch = batch WHERE id = 1")
        .execute(&mut *holder)
        .await
        .expect("hold the feed head");
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        api.list_events(&api.service(), ""),
    )
    .await
    .expect("the read answered while the feed head was held");
    let read = read.ok("获取事件列表成功").clone();
    assert_eq!(read["events"].as_array().map(Vec::len), Some(2));
    holder.rollback().await.expect("rollback");

    let (head, unpublished): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT batch FROM event_feed_head WHERE id = 1), \
         (SELECT COUNT(*) FROM call_event WHERE feed_batch IS NULL)",
    )
    .fetch_one(&pool)
    .await
    .expect("head");
    assert_eq!((head, unpublished), (1, 1), "the read published nothing");
    // The event sweep publishes it.
    event_sweeper::sweep(&app, Now::current())
        .await
        .expect("sweep");
    let cursor = read["next_cursor"].as_str().expect("cursor");
    let next = api
        .list_events(&api.service(), &format!("after={cursor}"))
        .await;
    let next = next.ok("获取事件列表成功").clone();
    assert_eq!(next["events"][0]["id"], "evt_aside");
    common::assert_nothing_held(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn event_details_and_redelivery_are_for_services_only(pool: DbPool) {
    let receiver = Receiver::start().await;
    let app = app_for(&pool, &receiver, &[]);
    let api = Api::new(&app);
    api.open("r1", "a", &[]).await;
    let id = receiver.accepted()[0].id.clone();
    let details = api.get_event(&api.service(), &id).await;
    let data = details.ok("获取事件详情成功").clone();
    assert_eq!(data["event"]["type"], "room.created");
    assert_eq!(data["deliveries"][0]["state"], "delivered");
    assert_eq!(data["attempts"][0]["outcome"], "delivered");
    assert_eq!(data["attempts"][0]["inline"], true);

    let again = api.redeliver(&api.service(), &id).await;
    let again = again.ok("事件已重新投递").clone();
    assert_eq!(again["redelivery"]["delivered"], 1);
    let copies: Vec<_> = receiver
        .accepted()
        .into_iter()
        .filter(|r| r.id == id)
        .collect();
    assert_eq!(copies.len(), 2, "the same id and body again");
    assert_eq!(copies[0].body, copies[1].body);
    assert_eq!(again["attempts"].as_array().map(Vec::len), Some(2));

    let user = api.user("a");
    api.get_event(&user, &id).await.err(403, "forbidden");
    api.redeliver(&user, &id).await.err(403, "forbidden");
    api.list_events(&user, "").await.err(403, "forbidden");
    api.get_event(&api.service(), "evt_0_0")
        .await
        .err(404, "event_not_found");
    api.get_event(&api.service(), "bad id!")
        .await
        .err(400, "invalid_parameters");
    api.list_events(&api.service(), "after=nonsense")
        .await
        .err(400, "invalid_parameters");
    api.list_events(&api.service(), "limit=0")
        .await
        .err(400, "invalid_parameters");
    receiver.assert_all_verified();
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_rooms_events_come_in_seq_order_with_their_deliveries_for_services_only(pool: DbPool) {
    let receiver = Receiver::start().await;
    let app = app_for(&pool, &receiver, &[]);
    let api = Api::new(&app);
    api.open("r1", "a", &["b"]).await;
    api.leave(&api.user("a"), "r1", "a").await;
    let answer = api.room_events(&api.service(), "r1").await;
    let data = answer.ok("获取房间事件成功").clone();
    let events = data["events"].as_array().expect("events");
    let seqs: Vec<i64> = events
        .iter()
        .filter_map(|e| e["event"]["seq"].as_i64())
        .collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        outbox(&pool, "r1").await.len(),
        events.len(),
        "every stored event"
    );
    for event in events {
        let id = event["event"]["id"].as_str().expect("id");
        let single = api.get_event(&api.service(), id).await;
        let single = single.ok("获取事件详情成功");
        assert_eq!(event["deliveries"], single["deliveries"], "{id}");
        assert_eq!(event["attempts"], single["attempts"], "{id}");
        assert_eq!(event["deliveries"][0]["state"], "delivered");
    }
    assert_eq!(data["truncated"], false);

    api.room_events(&api.user("a"), "r1")
        .await
        .err(403, "forbidden");
    api.room_events(&api.service(), "nope")
        .await
        .err(404, "room_not_found");
    api.room_events(&api.service(), "a b")
        .await
        .err(400, "invalid_parameters");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_overview_counts_ended_calls_and_what_each_endpoint_is_owed(pool: DbPool) {
    let receiver = Receiver::start().await;
    receiver.answer_with(503, Duration::ZERO);
    let app = app_for(&pool, &receiver, &[("EVENT_RETRY_BASE_MS", "600000")]);
    let api = Api::new(&app);
    api.open("r1", "a", &["b"]).await;
    api.end(&api.service(), "r1").await;
    let data = api.overview(&api.service(), "").await;
    let data = data.ok("获取运行概况成功").clone();
    assert_eq!(data["window_minutes"], 60);
    assert_eq!(
        data["ended"],
        json!([{ "end_reason": "ended_by_api", "count": 1 }])
    );
    let owed = outbox(&pool, "r1").await.len() as i64;
    let endpoint = &data["deliveries"][0];
    assert_eq!(endpoint["pending"], owed, "{data}");
    assert_eq!(endpoint["failing_rooms"], 1, "{data}");
    assert!(endpoint["failing_since"].is_string(), "{data}");
    assert!(endpoint["failures_in_a_row"].as_i64() >= Some(1), "{data}");

    let user = api.user("a");
    api.overview(&user, "").await.err(403, "forbidden");
    for query in [
        "window_minutes=0",
        "window_minutes=1441",
        "window_minutes=x",
    ] {
        api.overview(&api.service(), query)
            .await
            .err(400, "invalid_parameters");
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn redelivering_a_pending_event_keeps_the_room_in_order(pool: DbPool) {
    let receiver = Receiver::start().await;
    receiver.answer_with(500, Duration::ZERO);
    let app = app_for(&pool, &receiver, &[("EVENT_RETRY_BASE_MS", "600000")]);
    let api = Api::new(&app);
    api.open("r1", "a", &[]).await;
    // The head failed and waits ten minutes; asking for the second one delivers both, in order.
    receiver.answer_with(200, Duration::ZERO);
    let second: String =
        sqlx::query_scalar("SELECT event_id FROM call_event WHERE room_name = 'r1' AND seq = 2")
            .fetch_one(&pool)
            .await
            .expect("second");
    let again = api.redeliver(&api.service(), &second).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        receiver.story(),
        pairs(&[("room.created", ""), ("participant.joined", "a")])
    );
    receiver.assert_all_verified();
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn delivered_events_are_purged_after_the_retention(pool: DbPool) {
    let receiver = Receiver::start().await;
    let app = app_for(&pool, &receiver, &[("EVENT_RETENTION_DAYS", "1")]);
    let api = Api::new(&app);
    api.open("r1", "a", &[]).await;
    api.open("r2", "b", &[]).await;
    // All of r1's events are old; of r2's only the first.
    sqlx::query("UPDATE call_event SET created_at = ? WHERE room_name = 'r1' OR seq = 1")
        .bind(
            Now::from_millis(Now::current().ms - 2 * 86_400_000)
                .expect("instant")
                .at,
        )
        .execute(&pool)
        .await
        .expect("age");
    let streams = |room: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM event_stream WHERE room_name = ?")
                .bind(room)
                .fetch_one(&pool)
                .await
                .expect("streams")
        }
    };
    assert_eq!((streams("r1").await, streams("r2").await), (1, 1));
    let report = event_sweeper::sweep(&app, Now::current())
        .await
        .expect("sweep");
    assert_eq!(report.purged, 3);
    let (events, attempts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM call_event), (SELECT COUNT(*) FROM event_attempt)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!(
        (events, attempts),
        (1, 1),
        "r2's second event and its attempt"
    );
    // r1's stream finished everything and went with its last event; r2's still has one.
    assert_eq!(
        (streams("r1").await, streams("r2").await),
        (0, 1),
        "a stream goes with its room's last event"
    );
    receiver.assert_all_verified();
}
