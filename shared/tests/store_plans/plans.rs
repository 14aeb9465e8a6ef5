//! Every statement the store sends that reads a table which grows with traffic is planned
//! through an index: a story of calls, events, deliveries, reads and sweeps runs over a seeded
//! set (a few thousand rows in each growing table, statistics analysed), every statement sqlx
//! sent is captured from its log, and each one is EXPLAINed with its placeholders filled in.
//! A full scan of a growing table (`type = ALL`, or a walk of a whole index) fails the test, naming the statement. MySQL
//! only: SQLite's planner answers differently and is not what a year of traffic runs on.
#![cfg(not(feature = "embedded"))]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use call_shared::model::Now;
use call_shared::store::DbPool;
use call_shared::{event_sweeper, sweeper};
use sqlx::Row;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::common;
use crate::events::Api;
use crate::receiver::Receiver;

/// Tables whose rows grow with calls (the rest are fixed: counters, the feed head, endpoints).
const GROWING: &[&str] = &[
    "call_room",
    "call_participant",
    "call_event",
    "event_stream",
    "event_attempt",
    "webhook_event",
    "idempotency_key",
    "livekit_teardown",
    "livekit_removal",
    "cache_invalidation",
];

/// Rows each growing table is seeded with (twice that for two per room).
const SEED: i64 = 3000;
/// An index walk estimated above this many rows reads the table whole.
const SCAN_ROWS: u64 = 1000;

/// The SQL text of every statement sqlx logged.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

#[derive(Default)]
struct Fields {
    summary: String,
    statement: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // A short statement is logged whole as its summary.
        let sql = if fields.statement.trim().is_empty() {
            fields.summary
        } else {
            fields.statement.trim().to_owned()
        };
        if let Ok(mut all) = self.0.lock() {
            all.push(sql);
        }
    }
}

/// A few thousand rows in each growing table, by set-based inserts, then fresh statistics.
async fn seed(pool: &DbPool, n: i64) {
    // 1..=n (n at most 10,000) from four digits, without recursion limits.
    let seq = format!(
        "WITH d (x) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
         UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
         UNION ALL SELECT 8 UNION ALL SELECT 9), \
         s (i) AS (SELECT 1 + a.x + 10 * b.x + 100 * c.x + 1000 * e.x FROM d a CROSS JOIN d b \
         CROSS JOIN d c CROSS JOIN d e WHERE a.x + 10 * b.x + 100 * c.x + 1000 * e.x < {n}) "
    );
    let statements = [
        "INSERT INTO call_room (creator, room_name, status, created_at, updated_at, ended_at, \
         end_reason, event_seq) SELECT CONCAT('seedu', i % 500), CONCAT('seed', i), 2, \
         NOW(3) - INTERVAL i MINUTE, NOW(3) - INTERVAL i MINUTE, NOW(3) - INTERVAL i MINUTE, \
         'completed', 2 FROM s"
            .to_owned(),
        "INSERT INTO call_participant (room_name, uid, status, created_at, updated_at, reason) \
         SELECT CONCAT('seed', i), CONCAT('seedu', (i + k) % 500), 3, NOW(3), NOW(3), 'hung_up' \
         FROM s CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1) two"
            .to_owned(),
        "INSERT INTO call_event (event_id, room_name, seq, type, occurred_at, payload, endpoints, \
         owed, feed_batch, created_at) SELECT CONCAT('evt_seed_', i, '_', k), CONCAT('seed', i), \
         k, 'room.created', NOW(3), '{}', 'e0', 0, 1, NOW(3) - INTERVAL i MINUTE \
         FROM s CROSS JOIN (SELECT 1 AS k UNION ALL SELECT 2) two"
            .to_owned(),
        "INSERT INTO event_stream (endpoint, room_name, delivered_seq, next_attempt_at) \
         SELECT CONCAT('e', k), CONCAT('seed', i), 2, NOW(3) \
         FROM s CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1) two"
            .to_owned(),
        "INSERT INTO event_attempt (event_id, endpoint, url, attempt, outcome, latency_ms, \
         attempted_at) SELECT CONCAT('evt_seed_', i, '_', k), 'e0', 'http://seed', 1, \
         'delivered', 1, NOW(3) FROM s CROSS JOIN (SELECT 1 AS k UNION ALL SELECT 2) two"
            .to_owned(),
        "INSERT INTO webhook_event (id, received_at) SELECT CONCAT('seedwh', i), NOW(3) FROM s"
            .to_owned(),
        "INSERT INTO idempotency_key (scope, fingerprint, lease_token, status, created_at, \
         expires_at) SELECT SHA2(CONCAT('seed', i), 256), SHA2(i, 256), LPAD(i, 32, '0'), 200, \
         NOW(3), NOW(3) + INTERVAL 1 DAY FROM s"
            .to_owned(),
        "INSERT INTO livekit_teardown (room_name, created_at) \
         SELECT CONCAT('seed', i), NOW(3) + INTERVAL 1 DAY FROM s"
            .to_owned(),
        "INSERT INTO livekit_removal (room_name, uid, created_at) \
         SELECT CONCAT('seed', i), 'x', NOW(3) + INTERVAL 1 DAY FROM s"
            .to_owned(),
        "INSERT INTO cache_invalidation (room_name, owed_since) \
         SELECT CONCAT('seed', i), NOW(3) FROM s"
            .to_owned(),
    ];
    for statement in statements {
        // MariaDB takes the row source's WITH after INSERT's column list.
        let statement = statement.replacen(" SELECT ", &format!(" {seq}SELECT "), 1);
        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("seed: {e}: {statement}"));
    }
    for table in GROWING {
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE TABLE {table}")))
            .execute(pool)
            .await
            .expect("analyze");
    }
}

/// The statement with every `?` filled: a count after LIMIT/OFFSET, elsewhere a text that
/// reads as a datetime, a number (2000) and a string alike, so no comparison changes type. An
/// instant long past, as in steady state: a purge's or a deadline's cut-off selects the few
/// rows older than it, not the table.
fn filled(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    for (i, part) in sql.split('?').enumerate() {
        if i > 0 {
            let before = out.trim_end().to_ascii_uppercase();
            if before.ends_with("LIMIT") || before.ends_with("OFFSET") {
                out.push_str("10");
            } else {
                out.push_str("'2000-01-01 00:00:00'");
            }
        }
        out.push_str(part);
    }
    out
}

/// Statements worth a plan: those that read rows (not BEGIN, SET, COMMIT, or INSERT … VALUES).
fn reads_rows(sql: &str) -> bool {
    let head = sql.trim_start().to_ascii_uppercase();
    let dml = ["SELECT", "UPDATE", "DELETE", "INSERT", "WITH"]
        .iter()
        .any(|verb| head.starts_with(verb));
    dml && (!head.starts_with("INSERT") || head.contains("SELECT"))
}

/// The growing tables a statement's plan scans whole.
async fn full_scans(pool: &DbPool, sql: &str) -> Vec<String> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {}", filled(sql))))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN failed: {e}\n{sql}"));
    rows.iter()
        .filter_map(|row| {
            let table: Option<String> = row.try_get("table").ok().flatten();
            let kind: Option<String> = row.try_get("type").ok().flatten();
            let rows: Option<u64> = row
                .try_get::<Option<u64>, _>("rows")
                .ok()
                .flatten()
                .or_else(|| {
                    row.try_get::<Option<i64>, _>("rows")
                        .ok()
                        .flatten()
                        .and_then(|n| u64::try_from(n).ok())
                });
            let table = table?;
            // MariaDB shows a scan of the whole primary key as `index` (a LIMIT-bounded walk
            // of an index, e.g. the room list's newest first, estimates only its page).
            let whole = match kind.as_deref() {
                Some("ALL") => true,
                Some("index") => rows.unwrap_or(u64::MAX) > SCAN_ROWS,
                _ => false,
            };
            (whole && GROWING.contains(&table.as_str())).then_some(table)
        })
        .collect()
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn no_statement_of_the_store_scans_a_growing_table(pool: DbPool) {
    seed(&pool, SEED).await;
    let receiver = Receiver::start().await;
    let endpoints = receiver.endpoints(None);
    let app = common::app_with(
        pool.clone(),
        &[
            ("EVENT_ENDPOINTS", endpoints.as_str()),
            ("EVENT_RETRY_BASE_MS", "40"),
            ("EVENT_RETRY_MAX_MS", "200"),
            ("EVENT_TIMEOUT_MS", "1000"),
        ],
    );
    let api = Api::without_held_check(&app);
    let statements = Statements::default();
    let subscriber = tracing_subscriber::registry().with(
        statements.clone().with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE),
        ),
    );
    let guard = tracing::subscriber::set_default(subscriber);

    // Calls: create with an invite, answer, invite more, leave, end.
    api.open("p1", "a", &["b"]).await;
    api.joined("p1", "b").await;
    let invited = api.invite(&api.service(), "p1", &["c"]).await;
    assert_eq!(invited.status, 200, "{}", invited.body);
    api.leave(&api.service(), "p1", "c").await;
    api.ended("p1").await;
    // A failing receiver: events stay owed, streams back off.
    receiver.answer_with(503, Duration::ZERO);
    api.open("p2", "d", &["e"]).await;
    let event_id: String =
        sqlx::query_scalar("SELECT event_id FROM call_event WHERE room_name = 'p2' AND seq = 1")
            .fetch_one(&pool)
            .await
            .expect("event");
    // Reads: the feed (first page and after a cursor), one event, a room's story, rooms.
    let page = api.list_events(&api.service(), "limit=10").await;
    let cursor = page.ok("获取事件列表成功")["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    api.list_events(&api.service(), &format!("after={cursor}"))
        .await;
    api.get_event(&api.service(), &event_id).await;
    api.room_events(&api.service(), "p2").await;
    receiver.answer_with(200, Duration::ZERO);
    api.redeliver(&api.service(), &event_id).await;
    for query in [
        "limit=10",
        "status=2",
        "creator=seedu7",
        "uid=seedu7",
        "before=9000",
    ] {
        api.list_rooms(&api.service(), query).await;
    }
    api.get_room(&api.service(), "p2").await;
    api.participants(&api.service(), "p2").await;
    let now = Now::current();
    app.store
        .history("seedu7", 10, None, now)
        .await
        .expect("history");
    app.store
        .history("seedu7", 10, Some(5000), now)
        .await
        .expect("history page");
    app.store.ringing("e", now).await.expect("ringing");
    // Sweeps: deadlines, teardowns, purges; deliveries and the event purge a week on.
    sweeper::sweep(&app, now).await.expect("sweep");
    let later = Now::from_millis(now.ms + 8 * 86_400_000).expect("later");
    sweeper::sweep(&app, later).await.expect("sweep later");
    event_sweeper::sweep(&app, later)
        .await
        .expect("event sweep");
    drop(guard);

    let all: BTreeSet<String> = statements
        .0
        .lock()
        .expect("statements")
        .iter()
        .filter(|sql| reads_rows(sql))
        .cloned()
        .collect();
    assert!(
        all.len() >= 25,
        "too few statements captured: {}",
        all.len()
    );
    // The statements this test was written for, so a change to the story cannot drop them.
    for wanted in [
        "SELECT endpoint, delivered_seq FROM event_stream WHERE room_name",
        "UPDATE event_stream SET next_attempt_at",
        "DELETE FROM event_stream",
        "FROM call_event WHERE feed_batch IS NULL",
        "FROM call_event WHERE (feed_batch",
        "DELETE FROM event_attempt",
        "FROM call_participant p JOIN call_room r",
    ] {
        assert!(
            all.iter().any(|sql| sql.contains(wanted)),
            "no statement with {wanted:?} captured"
        );
    }
    let mut scans = Vec::new();
    for sql in &all {
        let tables = full_scans(&pool, sql).await;
        if !tables.is_empty() {
            scans.push(format!("{tables:?}: {sql}"));
        }
    }
    assert!(
        scans.is_empty(),
        "{} of {} statements scan a growing table whole:\n{}",
        scans.len(),
        all.len(),
        scans.join("\n\n")
    );
}
