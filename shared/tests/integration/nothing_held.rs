//! The "nothing held" check that the other tests end with: a transaction left open on any
//! table the service writes is seen by it, not only one on rooms and participants.

use std::time::Duration;

use call_shared::model::Now;
use call_shared::store::DbPool;
use sqlx::{ConnectOptions, Executor};

use crate::common::{self, SERVICE_TABLES};
use crate::events::Api;
use crate::receiver::Receiver;

/// Gives every table the service writes at least one row: a call delivered to a receiver
/// writes most of them; the LiveKit tables, endpoint health, the cache's owed forgets and the
/// idempotency keys get one by hand.
async fn fill_every_table(pool: &DbPool) {
    let receiver = Receiver::start().await;
    let endpoints = receiver.endpoints(None);
    let app = common::app_with(pool.clone(), &[("EVENT_ENDPOINTS", endpoints.as_str())]);
    Api::new(&app).open("r1", "a", &["b"]).await;
    app.store.publish_feed().await.expect("publish");
    let at = Now::current().at;
    for sql in [
        "INSERT INTO webhook_event (id, received_at) VALUES ('wh1', ?)",
        "INSERT INTO livekit_teardown (room_name, attempts, created_at) VALUES ('r1', 0, ?)",
        "INSERT INTO livekit_removal (room_name, uid, attempts, created_at) VALUES ('r1', 'b', 0, ?)",
        "INSERT INTO event_endpoint (endpoint, failures, updated_at) VALUES ('other', 0, ?)",
        "INSERT INTO cache_invalidation (room_name, misses, owed_since) VALUES ('r1', 1, ?)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(at)
            .execute(pool)
            .await
            .expect(sql);
    }
    sqlx::query(
        "INSERT INTO idempotency_key (scope, fingerprint, lease_token, created_at, expires_at) \
         VALUES ('s1', 'f1', 'l1', ?, ?)",
    )
    .bind(at)
    .bind(at)
    .execute(pool)
    .await
    .expect("an idempotency key");
}

/// A column of each table that an UPDATE can set to itself.
fn written_column(table: &str) -> &'static str {
    match table {
        "call_room" | "call_participant" => "updated_at",
        "room_count" => "n",
        "webhook_event" => "received_at",
        "livekit_teardown" | "livekit_removal" | "event_stream" => "attempts",
        "call_event" => "owed",
        "event_feed_head" => "batch",
        "event_endpoint" => "failures",
        "event_attempt" => "attempt",
        "cache_invalidation" => "misses",
        "idempotency_key" => "expires_at",
        other => panic!("a table a migration added: {other}; give it a row and a column here"),
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_transaction_left_open_on_any_table_the_service_writes_is_seen(pool: DbPool) {
    fill_every_table(&pool).await;
    assert_eq!(
        common::held_tables(&pool, Duration::ZERO).await,
        Vec::<String>::new(),
        "nothing is held before"
    );
    let tables = common::schema_tables(&pool).await;
    for table in SERVICE_TABLES {
        assert!(
            tables.iter().any(|t| t == table),
            "the check takes {table}: {tables:?}"
        );
    }
    for table in &tables {
        let rows: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
        assert!(rows > 0, "{table} has rows to lock");
        // Another instance's transaction that wrote every row of the table and was never
        // ended (a write that changes nothing still locks the rows, and takes SQLite's lock).
        let column = written_column(table);
        let mut holder = pool.connect_options().connect().await.expect("holder");
        holder.execute("BEGIN").await.expect("begin");
        holder
            .execute(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = {column}"
            )))
            .await
            .expect("write");
        let held = common::held_tables(&pool, Duration::ZERO).await;
        holder.execute("ROLLBACK").await.expect("rollback");
        sqlx::Connection::close(holder).await.ok();
        // SQLite: one write lock for the whole file.
        let expected = if cfg!(feature = "embedded") {
            "write lock"
        } else {
            table.as_str()
        };
        assert!(
            held.iter().any(|h| h.starts_with(&format!("{expected}:"))),
            "a transaction left open on {table} is not seen: {held:?}"
        );
    }
    common::assert_nothing_held(&pool).await;
}
