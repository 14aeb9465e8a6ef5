//! Races as they happen in AWS: every concurrent request is served by a Lambda instance of
//! its own, each a `Store` with the production pool settings and its own kept connection, all
//! on one database. Concurrent requests never leave two rooms for one name or one channel,
//! more joined rows than max_participants, two rows for one (room, uid), a call ended twice, a
//! webhook applied twice, or a uid live in two calls; and after every race another connection
//! can lock every row at once. Each test prints its figures.
//!
//! The same suite runs on MariaDB and, with `--features embedded`, on SQLite (one writer at a
//! time there: the races meet at BEGIN IMMEDIATE and the busy timeout).

use std::collections::HashSet;
use std::future::Future;

use call_shared::ApiError;
use call_shared::App;
use call_shared::model::{Now, ParticipantStatus as P, RoomStatus as R, WebhookEvent, WebhookKind};
use call_shared::rules::{Action, CallState};
use call_shared::store::{DbPool, NewRoom, Store, WebhookOutcome};
use sqlx::ConnectOptions;

use crate::common;

fn room(name: &str, creator: &str, max: i32, invite_on: i16) -> NewRoom {
    NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: creator.into(),
        room_name: name.into(),
        call_type: 1,
        invite_on,
        max_participants: max,
        limits: call_shared::model::CallLimits::default(),
    }
}

fn anyone(_: &CallState) -> Result<(), ApiError> {
    Ok(())
}

/// `n` Lambda instances on the test database: production pool settings, one kept connection
/// each, nothing shared but the database.
fn instances(pool: &DbPool, n: usize) -> Vec<Store> {
    let url = pool.connect_options().to_url_lossy().to_string();
    (0..n)
        .map(|_| Store::connect_lazy(&url).expect("an instance's store"))
        .collect()
}

/// Runs one request per instance at the same moment and collects the answers in order.
async fn race<T, F, Fut>(stores: &[Store], request: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Store) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(stores.len()));
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let work = request(i, store.clone());
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

async fn count(pool: &DbPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

/// The invariants every race must keep, read from the database.
async fn assert_invariants(pool: &DbPool) {
    let live_twice = count(
        pool,
        "SELECT COUNT(*) FROM (SELECT uid FROM call_participant WHERE status IN (0, 1) \
         GROUP BY uid HAVING COUNT(*) > 1) t",
    )
    .await;
    let live_in_final = count(
        pool,
        "SELECT COUNT(*) FROM call_participant p JOIN call_room r ON r.room_name = p.room_name \
         WHERE r.status IN (2, 3) AND p.status IN (0, 1)",
    )
    .await;
    let overfull = count(
        pool,
        "SELECT COUNT(*) FROM call_room r WHERE r.max_participants < (SELECT COUNT(*) \
         FROM call_participant p WHERE p.room_name = r.room_name AND p.status = 1)",
    )
    .await;
    assert_eq!(
        (live_twice, live_in_final, overfull),
        (0, 0, 0),
        "uids live twice, live rows in final rooms, overfull rooms"
    );
    common::assert_nothing_held(pool).await;
}

async fn status_of(store: &Store, room: &str, uid: &str) -> Option<P> {
    let state = store.load(room, Now::current()).await.expect("load")?;
    state.row(uid).map(|p| p.status)
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn twenty_creates_of_one_name_make_one_room(pool: DbPool) {
    let stores = instances(&pool, 20);
    let results = race(&stores, |i, store| async move {
        store
            .create_room(
                &room("race", &format!("creator{i}"), 2, 0),
                &[],
                Now::current(),
            )
            .await
    })
    .await;
    let successes = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(ApiError::RoomAlreadyExists)))
        .count();
    let rooms = count(&pool, "SELECT COUNT(*) FROM call_room").await;
    let rows = count(&pool, "SELECT COUNT(*) FROM call_participant").await;
    println!(
        "creates: 20 instances, successes {successes}, room_already_exists {refused}, rooms {rooms}, rows {rows}"
    );
    assert_eq!((successes, refused, rooms, rows), (1, 19, 1, 1));
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn two_creates_on_one_channel_make_one_open_room(pool: DbPool) {
    let stores = instances(&pool, 2);
    for round in 0..10 {
        let results = race(&stores, |i, store| async move {
            let mut new = room(&format!("r{round}_{i}"), &format!("c{round}_{i}"), 2, 0);
            new.source_channel_id = format!("channel{round}");
            store.create_room(&new, &[], Now::current()).await
        })
        .await;
        let winner: Vec<&str> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|s| s.room.room_name.as_str())
            .collect();
        let named: Vec<&str> = results
            .iter()
            .filter_map(|r| match r {
                Err(ApiError::ChannelHasActiveRoom { room_name }) => Some(room_name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(winner.len(), 1, "round {round}: {results:?}");
        assert_eq!(
            named, winner,
            "the refusal names the open room: {results:?}"
        );
    }
    let open = count(
        &pool,
        "SELECT COUNT(*) FROM call_room WHERE status IN (0, 1)",
    )
    .await;
    println!("creates on one channel: 10 rounds x 2 instances, open rooms {open}");
    assert_eq!(open, 10);
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn twenty_joins_never_overfill_a_room(pool: DbPool) {
    let stores = instances(&pool, 20);
    stores[0]
        .create_room(&room("big", "host", 5, 0), &[], Now::current())
        .await
        .expect("create");
    let results = race(&stores, |i, store| async move {
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
    .await;
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
        "joins: 20 instances into max 5, successes {successes}, room_full {full}, joined rows {joined}"
    );
    assert_eq!(
        (successes, full, joined),
        (4, 16, 5),
        "the host plus four guests"
    );
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn ten_joins_of_one_uid_make_one_row(pool: DbPool) {
    let stores = instances(&pool, 10);
    stores[0]
        .create_room(&room("r1", "host", 5, 0), &[], Now::current())
        .await
        .expect("create");
    let results = race(&stores, |_, store| async move {
        store
            .participant_action("r1", "bob", Action::Join, Now::current(), anyone)
            .await
    })
    .await;
    let successes = results.iter().filter(|r| r.is_ok()).count();
    let ids: HashSet<i64> = results
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
        "same-uid joins: 10 instances, successes {successes}, distinct row ids {}, rows {rows}",
        ids.len()
    );
    assert_eq!((successes, ids.len(), rows), (10, 1, 1));
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn both_parties_leaving_at_once_end_the_call_once(pool: DbPool) {
    let stores = instances(&pool, 2);
    for round in 0..10 {
        let name = format!("call{round}");
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        stores[0]
            .create_room(&room(&name, &a, 2, 0), &[], Now::current())
            .await
            .expect("create");
        stores[1]
            .participant_action(&name, &b, Action::Join, Now::current(), anyone)
            .await
            .expect("join");
        let sides = [a, b];
        let results = race(&stores, |i, store| {
            let (name, uid) = (name.clone(), sides[i].clone());
            async move {
                store
                    .participant_action(&name, &uid, Action::Leave, Now::current(), anyone)
                    .await
            }
        })
        .await;
        let finalised = results
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|r| r.finalised))
            .count();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!((ok, finalised), (2, 1), "round {round}: {results:?}");
    }
    let ended = count(&pool, "SELECT COUNT(*) FROM call_room WHERE status = 2").await;
    println!("simultaneous leaves: 10 calls, each finalised once, ended rooms {ended}");
    assert_eq!(ended, 10);
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn one_uid_invited_into_two_new_rooms_is_live_in_at_most_one(pool: DbPool) {
    let stores = instances(&pool, 2);
    for round in 0..10 {
        let results = race(&stores, |side, store| async move {
            let invitee = vec![format!("callee{round}")];
            store
                .create_room(
                    &room(
                        &format!("r{round}_{side}"),
                        &format!("c{round}_{side}"),
                        2,
                        1,
                    ),
                    &invitee,
                    Now::current(),
                )
                .await
        })
        .await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(ApiError::ParticipantInCall { .. })))
            .count();
        assert_eq!((ok, busy), (1, 1), "round {round}: {results:?}");
    }
    println!("simultaneous invites of one uid: 10 rounds x 2 instances");
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn one_webhook_delivered_twice_at_once_is_applied_once(pool: DbPool) {
    let stores = instances(&pool, 2);
    let mut applied = 0;
    for round in 0..10 {
        let name = format!("r{round}");
        let callee = format!("b{round}");
        stores[0]
            .create_room(
                &room(&name, &format!("a{round}"), 2, 1),
                std::slice::from_ref(&callee),
                Now::current(),
            )
            .await
            .expect("create");
        let event = WebhookEvent {
            id: format!("EV_{round}"),
            room_name: name.clone(),
            created_at: Now::current().ms / 1000,
            kind: WebhookKind::ParticipantJoined {
                uid: callee.clone(),
            },
        };
        let results = race(&stores, |_, store| {
            let event = event.clone();
            async move { store.apply_webhook(&event, Now::current()).await }
        })
        .await;
        let outcomes: Vec<_> = results.into_iter().map(|r| r.expect("webhook")).collect();
        let changed = outcomes
            .iter()
            .filter(|o| matches!(o, WebhookOutcome::Applied { .. }))
            .count();
        let duplicate = outcomes
            .iter()
            .filter(|o| matches!(o, WebhookOutcome::Duplicate))
            .count();
        assert_eq!((changed, duplicate), (1, 1), "round {round}: {outcomes:?}");
        applied += changed;
        assert_eq!(status_of(&stores[0], &name, &callee).await, Some(P::Joined));
    }
    let recorded = count(&pool, "SELECT COUNT(*) FROM webhook_event").await;
    println!("one event id twice at once: 10 rounds, applied {applied}, recorded ids {recorded}");
    assert_eq!(recorded, 10);
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn end_against_join_leaves_a_final_room_with_nobody_live(pool: DbPool) {
    let stores = instances(&pool, 2);
    let (mut joined_first, mut ended_first) = (0, 0);
    for round in 0..10 {
        let name = format!("r{round}");
        let callee = format!("b{round}");
        stores[0]
            .create_room(
                &room(&name, &format!("a{round}"), 3, 1),
                std::slice::from_ref(&callee),
                Now::current(),
            )
            .await
            .expect("create");
        let results = race(&stores, |i, store| {
            let (name, callee) = (name.clone(), callee.clone());
            async move {
                if i == 0 {
                    store
                        .end_room(&name, Now::current(), anyone)
                        .await
                        .map(|_| ())
                } else {
                    store
                        .participant_action(&name, &callee, Action::Join, Now::current(), anyone)
                        .await
                        .map(|_| ())
                }
            }
        })
        .await;
        assert!(results[0].is_ok(), "end always answers 200: {results:?}");
        match &results[1] {
            Ok(()) => joined_first += 1,
            Err(ApiError::RoomNotActive) => ended_first += 1,
            other => panic!("round {round}: join answered {other:?}"),
        }
        let state = stores[0]
            .load(&name, Now::current())
            .await
            .expect("load")
            .expect("room");
        assert!(
            state.room.status.is_final(),
            "round {round}: {:?}",
            state.room
        );
    }
    println!("end against join: 10 rounds, join first {joined_first}, end first {ended_first}");
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_livekit_join_against_an_api_leave_keeps_one_order(pool: DbPool) {
    let stores = instances(&pool, 2);
    let mut finals = Vec::new();
    for round in 0..10 {
        let name = format!("r{round}");
        let (a, b, c) = (
            format!("a{round}"),
            format!("b{round}"),
            format!("c{round}"),
        );
        stores[0]
            .create_room(
                &room(&name, &a, 5, 1),
                &[b.clone(), c.clone()],
                Now::current(),
            )
            .await
            .expect("create");
        for uid in [&b, &c] {
            stores[0]
                .participant_action(&name, uid, Action::Join, Now::current(), anyone)
                .await
                .expect("join");
        }
        let event = WebhookEvent {
            id: format!("EV_{round}"),
            room_name: name.clone(),
            created_at: Now::current().ms / 1000,
            kind: WebhookKind::ParticipantJoined { uid: b.clone() },
        };
        let results = race(&stores, |i, store| {
            let (name, b, event) = (name.clone(), b.clone(), event.clone());
            async move {
                if i == 0 {
                    store
                        .apply_webhook(&event, Now::current())
                        .await
                        .map(|_| ())
                } else {
                    store
                        .participant_action(&name, &b, Action::Leave, Now::current(), anyone)
                        .await
                        .map(|_| ())
                }
            }
        })
        .await;
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: {results:?}"
        );
        // Either order is a history: presence then leave (b hung up), or leave then a
        // presence of the same second (b back in).
        let b_final = status_of(&stores[0], &name, &b).await;
        assert!(
            matches!(b_final, Some(P::HungUp | P::Joined)),
            "round {round}: {b_final:?}"
        );
        let state = stores[0]
            .load(&name, Now::current())
            .await
            .expect("load")
            .expect("room");
        assert_eq!(state.room.status, R::InProgress, "a and c are still in");
        finals.push(b_final);
    }
    println!("livekit join against api leave: 10 rounds, b ends as {finals:?}");
    assert_invariants(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_sweep_against_an_answer_keeps_one_order(pool: DbPool) {
    let stores = instances(&pool, 2);
    let apps: Vec<std::sync::Arc<App>> = stores
        .iter()
        .map(|s| {
            let config = common::config(&[("RING_TIMEOUT_SECONDS", "1")]);
            std::sync::Arc::new(App::with_store(config, s.clone()).expect("app"))
        })
        .collect();
    let (mut answered, mut rang_out) = (0, 0);
    for round in 0..10 {
        let name = format!("r{round}");
        let callee = format!("b{round}");
        // Created 2 s ago: the invite is past its 1 s ring when the race starts.
        let then = Now::from_millis(Now::current().ms - 2_000).expect("instant");
        let mut new = room(&name, &format!("a{round}"), 2, 1);
        new.limits.ring_timeout_seconds = 1;
        apps[0]
            .store
            .create_room(&new, std::slice::from_ref(&callee), then)
            .await
            .expect("create");
        let results = race(&stores, |i, store| {
            let (name, callee) = (name.clone(), callee.clone());
            let app = apps[i].clone();
            async move {
                match i {
                    0 => call_shared::sweeper::sweep(&app, Now::current())
                        .await
                        .map(|_| ()),
                    _ => store
                        .participant_action(&name, &callee, Action::Join, Now::current(), anyone)
                        .await
                        .map(|_| ()),
                }
            }
        })
        .await;
        assert!(results[0].is_ok(), "the sweep never fails: {results:?}");
        let state = stores[0]
            .load(&name, Now::current())
            .await
            .expect("load")
            .expect("room");
        match &results[1] {
            Ok(()) => {
                answered += 1;
                assert_eq!(state.room.status, R::InProgress, "round {round}");
                assert_eq!(state.row(&callee).map(|p| p.status), Some(P::Joined));
            }
            Err(ApiError::RoomNotActive) => {
                rang_out += 1;
                assert_eq!(state.room.status, R::Cancelled, "round {round}");
                assert_eq!(state.row(&callee).map(|p| p.status), Some(P::Missed));
            }
            other => panic!("round {round}: join answered {other:?}"),
        }
    }
    println!(
        "sweep against answer: 10 rounds, answered first {answered}, rang out first {rang_out}"
    );
    assert_invariants(&pool).await;
}

/// A ring again (PUT 0) checks whether the uid is live elsewhere before it writes, so a uid
/// that starts ringing in another call in between meets the live-uid index only at the write.
/// That is the same busy uid, found late: it is recorded as busy (5), as when the check finds
/// it, never refused with participant_in_call (which only a join answers).
#[cfg(not(feature = "embedded"))]
#[allow(clippy::disallowed_methods)] // the test holds the other call's row from a connection of its own
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn ringing_again_a_uid_that_starts_ringing_elsewhere_meanwhile_records_it_busy(pool: DbPool) {
    use sqlx::Connection;
    let stores = instances(&pool, 2);
    for (name, creator) in [("x", "cx"), ("y", "cy")] {
        stores[0]
            .create_room(&room(name, creator, 2, 0), &[], Now::current())
            .await
            .expect("create");
    }
    // Another instance rings bob in x and has not committed yet: y's check cannot see it.
    let mut other = pool.acquire().await.expect("connection");
    let mut ringing_elsewhere = other.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO call_participant (room_name, uid, status, created_at, updated_at) \
         VALUES ('x', 'bob', 0, NOW(3), NOW(3))",
    )
    .execute(&mut *ringing_elsewhere)
    .await
    .expect("bob rings in x");
    let store = stores[1].clone();
    let ring_again = tokio::spawn(async move {
        store
            .participant_action("y", "bob", Action::RingAgain, Now::current(), anyone)
            .await
    });
    // y's write waits on the unique live-uid entry until x's transaction ends.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    ringing_elsewhere.commit().await.expect("commit x");
    let result = ring_again
        .await
        .expect("task")
        .expect("ring again answers 200");
    println!(
        "ring again against a ring elsewhere committed meanwhile: status {:?}",
        result.participant.status
    );
    assert_eq!(result.participant.status, P::Busy);
    assert_eq!(status_of(&stores[0], "x", "bob").await, Some(P::Ringing));
    assert_invariants(&pool).await;
}

/// Two transactions that each hold one row and then ask for the other's: InnoDB kills one
/// with a deadlock (1213), and a lock wait past `innodb_lock_wait_timeout` fails with 1205.
/// Both real errors must be the ones the store retries before answering 503.
#[cfg(not(feature = "embedded"))]
#[allow(clippy::disallowed_methods)] // the test holds locks from connections of its own
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
