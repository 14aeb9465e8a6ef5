//! Store tests: the same suite on MariaDB (default build) and SQLite (`--features embedded`),
//! each test on a fresh database from `#[sqlx::test]`.

use crate::common;

use call_shared::ApiError;
use call_shared::model::{Now, ParticipantStatus as P, RoomStatus as R};
use call_shared::rules::Action;
use call_shared::store::{DbPool, NewRoom, RoomFilter, Store};

fn now() -> Now {
    Now::current()
}

fn new_room(name: &str, creator: &str) -> NewRoom {
    NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: creator.to_owned(),
        room_name: name.to_owned(),
        call_type: 1,
        invite_on: 1,
        max_participants: 2,
        limits: call_shared::model::CallLimits::default(),
    }
}

fn uids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn anyone(_: &call_shared::rules::CallState) -> Result<(), ApiError> {
    Ok(())
}

/// One page with the seed's limit/offset: the rooms and the filtered total.
async fn list(
    store: &Store,
    filter: &RoomFilter,
    limit: i64,
    offset: i64,
) -> (Vec<call_shared::model::Room>, i64) {
    let page = call_shared::model::Page {
        limit,
        offset,
        before_id: None,
    };
    let listed = store.list_rooms(filter, page, now()).await.expect("list");
    (listed.rooms, listed.total)
}

async fn statuses(store: &Store, room: &str) -> (R, Vec<(String, P)>) {
    let state = store
        .load(room, Now::current())
        .await
        .expect("load")
        .expect("room exists");
    let rows = state
        .rows
        .iter()
        .map(|p| (p.uid.clone(), p.status))
        .collect();
    (state.room.status, rows)
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_writes_the_room_the_creator_and_the_invitees(pool: DbPool) {
    let store = Store::from_pool(pool);
    let state = store
        .create_room(&new_room("r1", "alice"), &uids(&["bob", "carol"]), now())
        .await
        .expect("create");
    assert!(state.room.id > 0);
    assert!(state.rows.iter().all(|p| p.id > 0));
    let (status, rows) = statuses(&store, "r1").await;
    assert_eq!(status, R::NotStarted);
    assert_eq!(
        rows,
        vec![
            ("alice".into(), P::Joined),
            ("bob".into(), P::Ringing),
            ("carol".into(), P::Ringing)
        ]
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_refuses_a_taken_room_name(pool: DbPool) {
    let store = Store::from_pool(pool);
    store
        .create_room(&new_room("r1", "alice"), &[], now())
        .await
        .expect("create");
    let err = store.create_room(&new_room("r1", "bob"), &[], now()).await;
    assert_eq!(err.err(), Some(ApiError::RoomAlreadyExists));
    common::assert_nothing_held(store.pool()).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_with_a_busy_invitee_writes_nothing(pool: DbPool) {
    let store = Store::from_pool(pool.clone());
    store
        .create_room(&new_room("r1", "alice"), &uids(&["bob"]), now())
        .await
        .expect("create");
    let err = store
        .create_room(&new_room("r2", "carol"), &uids(&["dave", "bob"]), now())
        .await;
    assert_eq!(
        err.err(),
        Some(ApiError::ParticipantInCall {
            busy_uids: uids(&["bob"])
        })
    );
    common::assert_nothing_held(&pool).await;
    assert!(
        store
            .load("r2", Now::current())
            .await
            .expect("load")
            .is_none()
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_participant")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 2);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn create_refuses_a_creator_live_elsewhere(pool: DbPool) {
    let store = Store::from_pool(pool);
    store
        .create_room(&new_room("r1", "alice"), &[], now())
        .await
        .expect("create");
    let err = store
        .create_room(&new_room("r2", "alice"), &[], now())
        .await;
    assert_eq!(err.err(), Some(ApiError::CreatorInAnotherCall));
    common::assert_nothing_held(store.pool()).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_channel_has_one_open_room_at_a_time(pool: DbPool) {
    let store = Store::from_pool(pool);
    let mut first = new_room("r1", "alice");
    first.source_channel_id = "chan".into();
    store.create_room(&first, &[], now()).await.expect("create");
    let mut second = new_room("r2", "bob");
    second.source_channel_id = "chan".into();
    let err = store.create_room(&second, &[], now()).await;
    assert_eq!(
        err.err(),
        Some(ApiError::ChannelHasActiveRoom {
            room_name: "r1".into()
        })
    );
    common::assert_nothing_held(store.pool()).await;

    // Another channel type is another channel; and once r1 ends, the channel is free again.
    second.source_channel_type = 1;
    store
        .create_room(&second, &[], now())
        .await
        .expect("other channel type");
    store.end_room("r1", now(), anyone).await.expect("end");
    let mut third = new_room("r3", "carol");
    third.source_channel_id = "chan".into();
    store
        .create_room(&third, &[], now())
        .await
        .expect("channel free again");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_database_refuses_a_second_live_row_for_a_uid(pool: DbPool) {
    let store = Store::from_pool(pool.clone());
    store
        .create_room(&new_room("r1", "alice"), &uids(&["bob"]), now())
        .await
        .expect("r1");
    store
        .create_room(&new_room("r2", "carol"), &[], now())
        .await
        .expect("r2");
    let at = now().at;
    let insert = sqlx::query(
        "INSERT INTO call_participant (room_name, uid, status, join_time, leave_time, created_at, \
         updated_at) VALUES ('r2', 'bob', 0, 0, 0, ?, ?)",
    )
    .bind(at)
    .bind(at)
    .execute(&pool)
    .await;
    let err = insert.expect_err("bob is already live in r1");
    assert_eq!(
        call_shared::store::unique_violation(&err),
        Some(call_shared::store::UniqueKey::LiveUid)
    );
    // A final row for the same uid is history, not a live call: allowed.
    sqlx::query(
        "INSERT INTO call_participant (room_name, uid, status, join_time, leave_time, created_at, \
         updated_at) VALUES ('r2', 'bob', 4, 0, 0, ?, ?)",
    )
    .bind(at)
    .bind(at)
    .execute(&pool)
    .await
    .expect("missed row");
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn names_compare_exactly(pool: DbPool) {
    let store = Store::from_pool(pool);
    store
        .create_room(&new_room("Room", "ALICE"), &[], now())
        .await
        .expect("Room");
    store
        .create_room(&new_room("room", "alice"), &[], now())
        .await
        .expect("room is another room");
    let upper = store
        .load("Room", Now::current())
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(upper.room.creator, "ALICE");
    assert!(
        store
            .load("ROOM", Now::current())
            .await
            .expect("load")
            .is_none()
    );
    let err = store
        .participant_action("Room", "alice", Action::Join, now(), anyone)
        .await
        .expect_err("alice is not ALICE, so she was not invited");
    assert_eq!(err, ApiError::ParticipantNotInvited);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_then_leave_runs_and_ends_a_two_person_call(pool: DbPool) {
    let store = Store::from_pool(pool);
    store
        .create_room(&new_room("r1", "alice"), &uids(&["bob"]), now())
        .await
        .expect("create");
    let joined = store
        .participant_action("r1", "bob", Action::Join, now(), anyone)
        .await
        .expect("join");
    assert!(joined.changed);
    assert_eq!(joined.room.status, R::InProgress);
    assert!(joined.participant.join_time > 0);

    let again = store
        .participant_action("r1", "bob", Action::Join, now(), anyone)
        .await
        .expect("join again");
    assert!(!again.changed);
    assert_eq!(again.participant.id, joined.participant.id);

    let left = store
        .participant_action("r1", "bob", Action::Leave, now(), anyone)
        .await
        .expect("leave");
    assert!(left.finalised);
    assert_eq!(left.participant.status, P::HungUp);
    assert!(left.participant.leave_time >= left.participant.join_time);
    let (status, rows) = statuses(&store, "r1").await;
    assert_eq!(status, R::Ended);
    assert_eq!(
        rows,
        vec![("alice".into(), P::HungUp), ("bob".into(), P::HungUp)]
    );
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn join_refuses_unknown_and_final_rooms(pool: DbPool) {
    let store = Store::from_pool(pool);
    let err = store
        .participant_action("nope", "bob", Action::Join, now(), anyone)
        .await;
    assert_eq!(err.err(), Some(ApiError::RoomNotFound));
    common::assert_nothing_held(store.pool()).await;
    store
        .create_room(&new_room("r1", "alice"), &uids(&["bob"]), now())
        .await
        .expect("create");
    store.end_room("r1", now(), anyone).await.expect("end");
    let err = store
        .participant_action("r1", "bob", Action::Join, now(), anyone)
        .await;
    assert_eq!(err.err(), Some(ApiError::RoomNotActive));
    common::assert_nothing_held(store.pool()).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_guard_refusal_changes_nothing(pool: DbPool) {
    let store = Store::from_pool(pool);
    store
        .create_room(&new_room("r1", "alice"), &uids(&["bob"]), now())
        .await
        .expect("create");
    let err = store
        .end_room("r1", now(), |_| Err(ApiError::Forbidden))
        .await;
    assert_eq!(err.err(), Some(ApiError::Forbidden));
    common::assert_nothing_held(store.pool()).await;
    assert_eq!(statuses(&store, "r1").await.0, R::NotStarted);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn ending_is_final_and_idempotent(pool: DbPool) {
    let store = Store::from_pool(pool);
    store
        .create_room(&new_room("r1", "alice"), &uids(&["bob"]), now())
        .await
        .expect("create");
    let ended = store.end_room("r1", now(), anyone).await.expect("end");
    assert!(ended.changed && ended.finalised);
    assert_eq!(ended.room.status, R::Cancelled);
    let (_, rows) = statuses(&store, "r1").await;
    assert_eq!(
        rows,
        vec![("alice".into(), P::HungUp), ("bob".into(), P::Cancelled)]
    );
    let again = store
        .end_room("r1", now(), anyone)
        .await
        .expect("end again");
    common::assert_nothing_held(store.pool()).await;
    assert!(!again.changed && !again.finalised);
    assert_eq!(again.room.updated_at, ended.room.updated_at);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn invite_rings_again_and_records_busy_uids(pool: DbPool) {
    let store = Store::from_pool(pool);
    store
        .create_room(&new_room("r1", "alice"), &uids(&["bob"]), now())
        .await
        .expect("r1");
    store
        .create_room(&new_room("r2", "dave"), &[], now())
        .await
        .expect("r2");
    store
        .participant_action("r1", "bob", Action::Reject, now(), anyone)
        .await
        .expect("reject");
    // r1 was cancelled when bob rejected; invite into r2 instead.
    let (room, rows, _) = store
        .invite("r2", &uids(&["bob", "alice", "erin"]), now(), anyone)
        .await
        .expect("invite");
    assert_eq!(room.status, R::NotStarted);
    let got: Vec<(String, P)> = rows.iter().map(|p| (p.uid.clone(), p.status)).collect();
    assert_eq!(
        got,
        vec![
            ("bob".into(), P::Ringing),
            ("alice".into(), P::Ringing),
            ("erin".into(), P::Ringing)
        ]
    );
    store
        .create_room(&new_room("r3", "frank"), &uids(&["gina"]), now())
        .await
        .expect("r3");
    let (_, rows, _) = store
        .invite("r3", &uids(&["erin"]), now(), anyone)
        .await
        .expect("invite");
    assert_eq!(rows[0].status, P::Busy);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn list_rooms_pages_newest_first_with_a_filtered_total(pool: DbPool) {
    let store = Store::from_pool(pool);
    for i in 0..7 {
        let mut room = new_room(&format!("r{i}"), &format!("u{i}"));
        room.source_channel_id = if i % 2 == 0 {
            "even".into()
        } else {
            "odd".into()
        };
        room.source_channel_type = i as i16; // one open room per channel
        store
            .create_room(&room, &uids(&[&format!("guest{i}")]), now())
            .await
            .expect("create");
    }
    store.end_room("r3", now(), anyone).await.expect("end");

    let (page, total) = list(&store, &RoomFilter::default(), 3, 0).await;
    assert_eq!(total, 7);
    assert_eq!(
        page.iter()
            .map(|r| r.room_name.as_str())
            .collect::<Vec<_>>(),
        ["r6", "r5", "r4"]
    );
    let (page, total) = list(&store, &RoomFilter::default(), 3, 6).await;
    assert_eq!((page.len(), total), (1, 7));
    let (page, total) = list(&store, &RoomFilter::default(), 3, 50).await;
    assert_eq!((page.len(), total), (0, 7));

    let by_channel = RoomFilter {
        source_channel_id: Some("even".into()),
        ..RoomFilter::default()
    };
    assert_eq!(list(&store, &by_channel, 10, 0).await.1, 4);
    let by_status = RoomFilter {
        status: Some(R::Cancelled),
        ..RoomFilter::default()
    };
    let (page, total) = list(&store, &by_status, 10, 0).await;
    assert_eq!((page[0].room_name.as_str(), total), ("r3", 1));
    let by_creator = RoomFilter {
        creator: Some("u2".into()),
        ..RoomFilter::default()
    };
    assert_eq!(list(&store, &by_creator, 10, 0).await.1, 1);
    let by_uid = RoomFilter {
        uid: Some("guest5".into()),
        ..RoomFilter::default()
    };
    let (page, total) = list(&store, &by_uid, 10, 0).await;
    assert_eq!((page[0].room_name.as_str(), total), ("r5", 1));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn timestamps_keep_milliseconds(pool: DbPool) {
    let store = Store::from_pool(pool);
    let at = Now::from_millis(1_705_314_600_123).expect("instant");
    store
        .create_room(&new_room("r1", "alice"), &[], at)
        .await
        .expect("create");
    let state = store
        .load("r1", Now::current())
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(state.room.created_at, at.at);
    assert_eq!(state.rows[0].join_time, 1_705_314_600_123);
}

/// One request at a time (a Lambda instance) keeps one connection and never hands it back
/// to the pool, which would ping it (a round trip per request); closing the store gives it
/// back and every later call is refused as unavailable.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn sequential_calls_keep_one_connection_out_of_the_pool(pool: DbPool) {
    let store = Store::from_pool(pool.clone());
    store.ping().await.expect("ping");
    store
        .create_room(&new_room("kept", "alice"), &[], now())
        .await
        .expect("create");
    store.load("kept", Now::current()).await.expect("load");
    list(&store, &RoomFilter::default(), 10, 0).await;
    // Let any connection handed back to the pool finish its release.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(pool.size(), 1, "one connection opened");
    assert_eq!(
        pool.num_idle(),
        0,
        "and kept by the store, not idle in the pool"
    );

    store.close().await;
    assert!(matches!(
        store.load("kept", Now::current()).await,
        Err(ApiError::ServiceUnavailable(_))
    ));
}
