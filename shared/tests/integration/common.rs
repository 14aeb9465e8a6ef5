//! Test fixtures shared by the integration tests: a configuration, an App over the pool
//! `#[sqlx::test]` hands out, and tokens signed with the test secret.
#![allow(dead_code)]

use std::collections::HashMap;

use call_shared::App;
use call_shared::config::{Config, Secrets};
use call_shared::store::{DbPool, Store, TEST_URL_EXAMPLE};

pub const AUTH_SECRET: &str = "test-auth-secret";
pub const LIVEKIT_KEY: &str = "test-key";
pub const LIVEKIT_SECRET: &str = "test-livekit-secret-of-enough-length";

/// A production-shaped configuration (no local defaults) with rate limits off.
pub fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", TEST_URL_EXAMPLE),
        ("LIVEKIT_CLIENT_URL", "wss://livekit.example.test"),
        ("LIVEKIT_API_KEY", LIVEKIT_KEY),
        ("LIVEKIT_API_SECRET", LIVEKIT_SECRET),
        ("AUTH_JWT_SECRET", AUTH_SECRET),
        ("RATE_LIMIT_CREATE_PER_MIN", "0"),
        ("RATE_LIMIT_JOIN_PER_MIN", "0"),
        ("RATE_LIMIT_INVITE_PER_MIN", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_lookup(|k| vars.get(k).cloned(), Secrets::default()).expect("test config")
}

pub fn app(pool: DbPool) -> App {
    app_with(pool, &[])
}

pub fn app_with(pool: DbPool, extra: &[(&str, &str)]) -> App {
    App::with_store(config(extra), Store::from_pool(pool)).expect("test app")
}

/// The room as a request would see it now (deadlines applied), read through the store; the
/// room must exist.
pub async fn loaded_now(app: &App, room: &str) -> call_shared::rules::CallState {
    app.store
        .load(room, call_shared::model::Now::current())
        .await
        .expect("load")
        .unwrap_or_else(|| panic!("room {room} exists"))
}

pub fn service_token(app: &App) -> String {
    app.auth.mint("test-backend", true, 600).expect("mint")
}

pub fn user_token(app: &App, uid: &str) -> String {
    app.auth.mint(uid, false, 600).expect("mint")
}

/// Redis for the cache tests; REDIS_URL overrides the machine's default.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// The tables a change of the service writes (migrations/): a call's rows and counters,
/// LiveKit's webhook ids and teardown queues, and the business-event outbox, feed head,
/// delivery streams, endpoint health and attempts, and the room cache's owed forgets. The lock check takes every table of the
/// schema, so a table a later migration adds is covered too; this list is the floor that the
/// check's own test holds it to.
pub const SERVICE_TABLES: &[&str] = &[
    "call_room",
    "call_participant",
    "room_count",
    "webhook_event",
    "livekit_teardown",
    "livekit_removal",
    "call_event",
    "event_feed_head",
    "event_stream",
    "event_endpoint",
    "event_attempt",
    "cache_invalidation",
    "idempotency_key",
];

#[cfg(not(feature = "embedded"))]
type Connection = sqlx::MySqlConnection;
#[cfg(feature = "embedded")]
type Connection = sqlx::SqliteConnection;

/// Every table of the test database but sqlx's own, by name (on a connection of its own, so
/// it answers for a pool a test closed too).
pub async fn schema_tables(pool: &DbPool) -> Vec<String> {
    use sqlx::ConnectOptions;
    let mut conn = pool
        .connect_options()
        .connect()
        .await
        .expect("a connection");
    let tables = tables_on(&mut conn).await;
    sqlx::Connection::close(conn).await.ok();
    tables
}

async fn tables_on(conn: &mut Connection) -> Vec<String> {
    #[cfg(not(feature = "embedded"))]
    let sql = "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
               WHERE table_schema = DATABASE() AND table_name <> '_sqlx_migrations' \
               ORDER BY table_name";
    #[cfg(feature = "embedded")]
    let sql = "SELECT name FROM sqlite_master WHERE type = 'table' \
               AND name <> '_sqlx_migrations' AND name NOT LIKE 'sqlite_%' ORDER BY name";
    sqlx::query_scalar(sql)
        .fetch_all(conn)
        .await
        .expect("the schema's tables")
}

/// What another Lambda instance sees once a request has been answered: a connection of its
/// own can lock every row of every table of the schema ([`SERVICE_TABLES`] and any table a later
/// migration adds) on MariaDB,
/// or take the write lock on SQLite, within 5 s. The wait covers a concurrent request of the
/// same test in flight on a loaded machine; a lock that was left behind never goes, so it
/// still fails. A transaction left open on the store's kept connection keeps the row locks of
/// what it wrote or selected `FOR UPDATE` and fails this; a read through the same connection
/// (which sends the queued ROLLBACK first) or a plain read through the pool would not see it.
///
/// On SQLite one write lock covers the whole file, so taking it (`BEGIN IMMEDIATE`) checks
/// every table at once: any transaction left open after a write holds it. SQLite has no view
/// of open transactions (the HTTP suites' `open_transactions()` answers `[]` there), and this
/// check stands in for it, with one gap: a transaction left open that only read takes no
/// write lock (in WAL mode it only pins a snapshot), so neither check sees it.
///
/// (information_schema.innodb_trx is no help here: while other tests create and drop their
/// databases, MariaDB 10.11 lists lock-free internal transactions under idle test
/// connections for seconds. The HTTP suites, one database and no DDL, do check it.)
pub async fn assert_nothing_held(pool: &DbPool) {
    let held = held_tables(pool, std::time::Duration::from_secs(5)).await;
    assert!(
        held.is_empty(),
        "another instance cannot lock what the service writes: {held:?}"
    );
}

/// What another instance cannot lock within `wait` (whole seconds on MariaDB; zero: not wait
/// at all): each table of the schema with the error (MariaDB), or the write lock
/// (SQLite, named `write lock`).
pub async fn held_tables(pool: &DbPool, wait: std::time::Duration) -> Vec<String> {
    use sqlx::{ConnectOptions, Executor};
    let mut other = pool
        .connect_options()
        .connect()
        .await
        .expect("a connection of another instance");
    let mut held = Vec::new();
    #[cfg(not(feature = "embedded"))]
    {
        other
            .execute(sqlx::AssertSqlSafe(format!(
                "SET SESSION innodb_lock_wait_timeout = {}",
                wait.as_secs()
            )))
            .await
            .expect("set lock wait");
        for table in tables_on(&mut other).await {
            // Each scan is a statement of its own (autocommit), so it holds its locks only
            // while it runs. A deadlock (1213) means a request still in flight locked rows in
            // the other order; a transaction left open waits for nothing and so can never
            // deadlock, it shows as a lock-wait timeout (1205). Try again after a deadlock.
            let sql = format!("SELECT 1 FROM {table} FOR UPDATE");
            let mut attempt = 0;
            loop {
                match other.execute(sqlx::AssertSqlSafe(sql.clone())).await {
                    Ok(_) => break,
                    Err(sqlx::Error::Database(db))
                        if attempt < 50
                            && db
                                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                                .is_some_and(|e| e.number() == 1213) =>
                    {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(err) => {
                        held.push(format!("{table}: {err}"));
                        break;
                    }
                }
            }
        }
    }
    #[cfg(feature = "embedded")]
    {
        other
            .execute(sqlx::AssertSqlSafe(format!(
                "PRAGMA busy_timeout = {}",
                wait.as_millis()
            )))
            .await
            .expect("busy timeout");
        match other.execute("BEGIN IMMEDIATE").await {
            Ok(_) => {
                other.execute("ROLLBACK").await.expect("rollback");
            }
            Err(err) => held.push(format!("write lock: {err}")),
        }
    }
    sqlx::Connection::close(other).await.ok();
    held
}
