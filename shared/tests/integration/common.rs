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

/// What another Lambda instance sees once a request has been answered: a connection of its
/// own can lock every room and participant row (MariaDB) or take the write lock (SQLite) at
/// once. It waits up to 5 s, which covers a concurrent request of the same test in flight on
/// a loaded machine; a lock that was left behind never goes, so it still fails. A transaction left open on the store's kept connection keeps the row locks of its
/// `SELECT … FOR UPDATE` and fails this; a read through the same connection (which sends the
/// queued ROLLBACK first) or a plain read through the pool would not see it.
///
/// (information_schema.innodb_trx is no help here: while other tests create and drop their
/// databases, MariaDB 10.11 lists lock-free internal transactions under idle test
/// connections for seconds. The HTTP suites, one database and no DDL, do check it.)
pub async fn assert_nothing_held(pool: &DbPool) {
    use sqlx::{ConnectOptions, Executor};
    let mut other = pool
        .connect_options()
        .connect()
        .await
        .expect("a connection of another instance");
    #[cfg(not(feature = "embedded"))]
    {
        other
            .execute("SET SESSION innodb_lock_wait_timeout = 5")
            .await
            .expect("set lock wait");
        for sql in [
            "SELECT id FROM call_room FOR UPDATE",
            "SELECT id FROM call_participant FOR UPDATE",
        ] {
            // A deadlock (1213) means a request still in flight locked rows in the other
            // order; a transaction left open waits for nothing and so can never deadlock, it
            // shows as a lock-wait timeout (1205). Try the scan again after a deadlock.
            let mut attempt = 0;
            loop {
                match other.execute(sql).await {
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
                    Err(err) => panic!("another instance cannot lock the rows ({sql}): {err}"),
                }
            }
        }
    }
    #[cfg(feature = "embedded")]
    {
        other
            .execute("PRAGMA busy_timeout = 5000")
            .await
            .expect("busy timeout");
        if let Err(err) = other.execute("BEGIN IMMEDIATE").await {
            panic!("another instance cannot take the write lock: {err}");
        }
        other.execute("ROLLBACK").await.expect("rollback");
    }
    sqlx::Connection::close(other).await.ok();
}
