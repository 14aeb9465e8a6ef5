//! What the store does when MariaDB says "try again": deadlocks inside a call transaction are
//! retried with a growing pause, and given up as 503 after the last attempt with nothing
//! written; a kept connection that the server closed is replaced once and the request answers.
//!
//! The deadlocks are forced where they happen in production, on a write inside
//! `change_call`: a trigger raises InnoDB's own error (1213, SQLSTATE 40001) on the first N
//! participant updates, counting down in a MEMORY table, which a rolled-back statement does
//! not restore.
#![cfg(not(feature = "embedded"))]

use std::time::{Duration, Instant};

use call_shared::ApiError;
use call_shared::model::{Now, ParticipantStatus as P};
use call_shared::rules::{Action, CallState};
use call_shared::store::{self, DbPool, NewRoom, Store};
use sqlx::{ConnectOptions, Executor};

use crate::common;

fn anyone(_: &CallState) -> Result<(), ApiError> {
    Ok(())
}

/// A production-shaped store (one kept connection) on the test database.
fn instance(pool: &DbPool) -> Store {
    Store::connect_lazy(pool.connect_options().to_url_lossy().as_ref()).expect("store")
}

/// A two-person call a–b, running: every leave writes participant rows.
async fn running_call(store: &Store) {
    let room = NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: "a".into(),
        room_name: "r1".into(),
        call_type: 1,
        invite_on: 1,
        max_participants: 2,
        limits: call_shared::model::CallLimits::default(),
    };
    store
        .create_room(&room, &["b".to_owned()], Now::current())
        .await
        .expect("create");
    store
        .participant_action("r1", "b", Action::Join, Now::current(), anyone)
        .await
        .expect("join");
}

/// The next `n` participant updates fail with a deadlock.
async fn deadlock_the_next(pool: &DbPool, n: i32) {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS fault_plan (remaining INT NOT NULL) ENGINE = MEMORY; \
         DELETE FROM fault_plan; \
         DROP TRIGGER IF EXISTS call_participant_deadlock; \
         CREATE TRIGGER call_participant_deadlock BEFORE UPDATE ON call_participant \
         FOR EACH ROW BEGIN \
           IF (SELECT remaining FROM fault_plan) > 0 THEN \
             UPDATE fault_plan SET remaining = remaining - 1; \
             SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, \
               MESSAGE_TEXT = 'Deadlock found when trying to get lock; try restarting transaction'; \
           END IF; \
         END;",
    )
    .execute(pool)
    .await
    .expect("fault plan");
    sqlx::query("INSERT INTO fault_plan VALUES (?)")
        .bind(n)
        .execute(pool)
        .await
        .expect("arm");
}

async fn deadlocks_left(pool: &DbPool) -> i32 {
    sqlx::query_scalar("SELECT remaining FROM fault_plan")
        .fetch_one(pool)
        .await
        .expect("fault plan")
}

async fn statuses(pool: &DbPool) -> Vec<(String, i16)> {
    sqlx::query_as("SELECT uid, status FROM call_participant WHERE room_name = 'r1' ORDER BY uid")
        .fetch_all(pool)
        .await
        .expect("rows")
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn deadlocks_inside_a_call_transaction_are_retried_until_it_commits(pool: DbPool) {
    let store = instance(&pool);
    running_call(&store).await;
    let deadlocks = i32::try_from(store::MAX_ATTEMPTS - 1).expect("attempts");
    deadlock_the_next(&pool, deadlocks).await;

    let started = Instant::now();
    let left = store
        .participant_action("r1", "b", Action::Leave, Now::current(), anyone)
        .await
        .expect("the last attempt commits");
    let took = started.elapsed();

    assert_eq!(left.participant.status, P::HungUp);
    assert_eq!(
        deadlocks_left(&pool).await,
        0,
        "every planned deadlock was met"
    );
    let pauses: Duration = (1..store::MAX_ATTEMPTS).map(store::backoff).sum();
    println!("{deadlocks} deadlocks, then a commit: {took:?} (pauses {pauses:?})");
    assert!(
        took >= pauses,
        "it paused between attempts: {took:?} < {pauses:?}"
    );
    assert_eq!(
        statuses(&pool).await,
        vec![("a".into(), 3), ("b".into(), 3)]
    );
    common::assert_nothing_held(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_call_transaction_that_keeps_deadlocking_gives_up_with_503_and_writes_nothing(
    pool: DbPool,
) {
    let store = instance(&pool);
    running_call(&store).await;
    let before = statuses(&pool).await;
    // One more deadlock than there are attempts: the last one is never tried.
    let planned = i32::try_from(store::MAX_ATTEMPTS + 1).expect("attempts");
    deadlock_the_next(&pool, planned).await;

    let err = store
        .participant_action("r1", "b", Action::Leave, Now::current(), anyone)
        .await
        .expect_err("gives up");

    assert!(matches!(err, ApiError::ServiceUnavailable(_)), "{err:?}");
    assert_eq!(err.key(), "service_unavailable");
    let attempts = planned - deadlocks_left(&pool).await;
    println!("gave up after {attempts} attempts");
    assert_eq!(
        attempts,
        i32::try_from(store::MAX_ATTEMPTS).expect("attempts")
    );
    assert_eq!(statuses(&pool).await, before, "nothing written");
    common::assert_nothing_held(&pool).await;
}

/// The database closed the function's kept connection (a failover, wait_timeout while the
/// function was frozen): the next request fails on it, is retried once on a new connection,
/// and answers as if nothing happened.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_kept_connection_killed_while_the_database_is_up_is_replaced_once(pool: DbPool) {
    let mut admin = pool.connect_options().connect().await.expect("admin");
    let others = async |admin: &mut sqlx::MySqlConnection| -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist \
             WHERE db = DATABASE() AND id <> CONNECTION_ID() ORDER BY id",
        )
        .fetch_all(admin)
        .await
        .expect("processlist")
    };
    let before = others(&mut admin).await;
    let store = instance(&pool);
    running_call(&store).await;
    let kept: Vec<i64> = others(&mut admin)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(kept.len(), 1, "one kept connection: {kept:?}");
    admin
        .execute(sqlx::AssertSqlSafe(format!("KILL {}", kept[0])))
        .await
        .expect("kill");

    let left = store
        .participant_action("r1", "b", Action::Leave, Now::current(), anyone)
        .await
        .expect("answered on a new connection");
    assert_eq!(left.participant.status, P::HungUp);
    let state = store
        .load("r1", Now::current())
        .await
        .expect("load")
        .expect("room");
    assert!(state.room.status.is_final());
    let now_kept: Vec<i64> = others(&mut admin)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(now_kept.len(), 1, "one connection again: {now_kept:?}");
    assert_ne!(now_kept, kept, "a new one");
    common::assert_nothing_held(&pool).await;
}
