//! Races on the real MariaDB: concurrent requests never leave two rooms for one name, more
//! joined rows than max_participants, two rows for one (room, uid), a call ended twice, or a
//! uid live in two calls. Each test prints its figures (attempts, successes, rows found).
#![cfg(not(feature = "embedded"))]
// The tests hold locks from connections of their own, outside the store, to make races.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use call_shared::ApiError;
use call_shared::model::Now;
use call_shared::rules::{Action, CallState};
use call_shared::store::{DbPool, NewRoom, Store};
use sqlx::mysql::MySqlPoolOptions;

fn room(name: &str, creator: &str, max: i32, invite_on: i16) -> NewRoom {
    NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: creator.into(),
        room_name: name.into(),
        call_type: 1,
        invite_on,
        max_participants: max,
    }
}

fn anyone(_: &CallState) -> Result<(), ApiError> {
    Ok(())
}

/// A store whose pool allows real parallelism (the default test pool is small).
async fn wide_store(pool: &DbPool) -> Store {
    let options = pool.connect_options().as_ref().clone();
    let wide = MySqlPoolOptions::new()
        .max_connections(24)
        .connect_with(options)
        .await
        .expect("pool");
    Store::from_pool(wide)
}

async fn count(pool: &DbPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn twenty_creates_of_one_name_make_one_room(pool: DbPool) {
    let store = Arc::new(wide_store(&pool).await);
    let attempts = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_room(
                    &room("race", &format!("creator{i}"), 2, 0),
                    &[],
                    Now::current(),
                )
                .await
        })
    });
    let results: Vec<_> = futures_join(attempts).await;
    let successes = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(ApiError::RoomAlreadyExists)))
        .count();
    let rooms = count(&pool, "SELECT COUNT(*) FROM call_room").await;
    let rows = count(&pool, "SELECT COUNT(*) FROM call_participant").await;
    println!(
        "creates: attempts 20, successes {successes}, room_already_exists {refused}, rooms {rooms}, rows {rows}"
    );
    assert_eq!((successes, refused, rooms, rows), (1, 19, 1, 1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn twenty_joins_never_overfill_a_room(pool: DbPool) {
    let store = Arc::new(wide_store(&pool).await);
    store
        .create_room(&room("big", "host", 5, 0), &[], Now::current())
        .await
        .expect("create");
    let attempts = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .participant_action(
                    "big",
                    &format!("guest{i}"),
                    Action::Join,
                    Now::current(),
                    anyone,
                )
                .await
        })
    });
    let results = futures_join(attempts).await;
    let successes = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(ApiError::RoomFull)))
        .count();
    let joined = count(
        &pool,
        "SELECT COUNT(*) FROM call_participant WHERE status = 1",
    )
    .await;
    println!(
        "joins: attempts 20 into max 5, successes {successes}, room_full {full}, joined rows {joined}"
    );
    assert_eq!(
        (successes, full, joined),
        (4, 16, 5),
        "the host plus four guests"
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn ten_joins_of_one_uid_make_one_row(pool: DbPool) {
    let store = Arc::new(wide_store(&pool).await);
    store
        .create_room(&room("r1", "host", 5, 0), &[], Now::current())
        .await
        .expect("create");
    let attempts = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .participant_action("r1", "bob", Action::Join, Now::current(), anyone)
                .await
        })
    });
    let results = futures_join(attempts).await;
    let successes = results.iter().filter(|r| r.is_ok()).count();
    let ids: std::collections::HashSet<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.participant.id)
        .collect();
    let rows = count(
        &pool,
        "SELECT COUNT(*) FROM call_participant WHERE uid = 'bob'",
    )
    .await;
    println!(
        "same-uid joins: attempts 10, successes {successes}, distinct row ids {}, rows {rows}",
        ids.len()
    );
    assert_eq!((successes, ids.len(), rows), (10, 1, 1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn both_parties_leaving_at_once_end_the_call_once(pool: DbPool) {
    let store = Arc::new(wide_store(&pool).await);
    for round in 0..10 {
        let name = format!("call{round}");
        store
            .create_room(
                &room(&name, &format!("a{round}"), 2, 0),
                &[],
                Now::current(),
            )
            .await
            .expect("create");
        store
            .participant_action(
                &name,
                &format!("b{round}"),
                Action::Join,
                Now::current(),
                anyone,
            )
            .await
            .expect("join");
        let leaves = ["a", "b"].map(|side| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move {
                let uid = format!("{side}{round}");
                store
                    .participant_action(&name, &uid, Action::Leave, Now::current(), anyone)
                    .await
            })
        });
        let results = futures_join(leaves).await;
        let finalised = results
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|r| r.finalised))
            .count();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!((ok, finalised), (2, 1), "round {round}: {results:?}");
    }
    let ended = count(&pool, "SELECT COUNT(*) FROM call_room WHERE status = 2").await;
    let live = count(
        &pool,
        "SELECT COUNT(*) FROM call_participant WHERE status IN (0, 1)",
    )
    .await;
    println!(
        "simultaneous leaves: 10 calls, each finalised once, ended rooms {ended}, live rows {live}"
    );
    assert_eq!((ended, live), (10, 0));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn one_uid_invited_into_two_new_rooms_is_live_in_at_most_one(pool: DbPool) {
    let store = Arc::new(wide_store(&pool).await);
    let mut live_in_both = 0;
    for round in 0..10 {
        let creates = [0, 1].map(|side| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("r{round}_{side}");
                let invitee = vec![format!("callee{round}")];
                store
                    .create_room(
                        &room(&name, &format!("c{round}_{side}"), 2, 1),
                        &invitee,
                        Now::current(),
                    )
                    .await
            })
        });
        let results = futures_join(creates).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(ApiError::ParticipantInCall { .. })))
            .count();
        assert_eq!((ok, busy), (1, 1), "round {round}: {results:?}");
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM call_participant WHERE uid = ? AND status IN (0, 1)",
        )
        .bind(format!("callee{round}"))
        .fetch_one(&pool)
        .await
        .expect("count");
        live_in_both += usize::from(live > 1);
        assert_eq!(live, 1);
    }
    println!(
        "simultaneous invites of one uid: 10 rounds x 2 creates, live in two rooms {live_in_both} times"
    );
}

async fn futures_join<T: std::fmt::Debug>(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

/// Two transactions that each hold one row and then ask for the other's: InnoDB kills one
/// with a deadlock (1213), and a lock wait past `innodb_lock_wait_timeout` fails with 1205.
/// Both real errors must be the ones the store retries before answering 503.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn real_deadlocks_and_lock_wait_timeouts_are_retryable(pool: DbPool) {
    use sqlx::{Connection, Executor};
    sqlx::raw_sql(
        "CREATE TABLE lock_probe (id INT PRIMARY KEY) ENGINE=InnoDB; \
         INSERT INTO lock_probe VALUES (1), (2);",
    )
    .execute(&pool)
    .await
    .expect("probe table");
    const LOCK_1: &str = "SELECT id FROM lock_probe WHERE id = 1 FOR UPDATE";
    const LOCK_2: &str = "SELECT id FROM lock_probe WHERE id = 2 FOR UPDATE";

    let mut a = pool.acquire().await.expect("connection a");
    let mut b = pool.acquire().await.expect("connection b");
    let mut ta = a.begin().await.expect("begin a");
    let mut tb = b.begin().await.expect("begin b");
    ta.execute(LOCK_1).await.expect("a holds 1");
    tb.execute(LOCK_2).await.expect("b holds 2");
    let (ra, rb) = tokio::join!(ta.execute(LOCK_2), async {
        // Let a queue for row 2 first, so b's request closes the cycle.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        tb.execute(LOCK_1).await
    });
    let errors: Vec<sqlx::Error> = [ra.err(), rb.err()].into_iter().flatten().collect();
    println!(
        "deadlock: 2 transactions, {} chosen as victim",
        errors.len()
    );
    assert_eq!(errors.len(), 1, "exactly one victim");
    let number = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
            .map(|d| d.number())
    };
    assert_eq!(number(&errors[0]), Some(1213), "{:?}", errors[0]);
    assert!(call_shared::store::is_retryable(&errors[0]));
    // The survivor still holds both rows until it ends.
    ta.rollback().await.expect("rollback a");
    tb.rollback().await.expect("rollback b");

    let mut holder = pool.acquire().await.expect("holder");
    let mut waiter = pool.acquire().await.expect("waiter");
    let mut held = holder.begin().await.expect("begin holder");
    held.execute(LOCK_1).await.expect("holds 1");
    waiter
        .execute("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .expect("short lock wait");
    let mut waiting = waiter.begin().await.expect("begin waiter");
    let err = waiting
        .execute(LOCK_1)
        .await
        .expect_err("lock wait timeout");
    assert_eq!(number(&err), Some(1205), "{err:?}");
    assert!(call_shared::store::is_retryable(&err));
}
