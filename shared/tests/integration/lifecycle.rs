//! Settle-rule rows of the README's transition table that no single endpoint test covers.

use crate::common;
use crate::events;

use call_shared::store::DbPool;
use events::{Api, room_status, status_of};

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_last_joined_leaving_ends_the_call_and_rings_out_the_rest(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    let service = api.service();
    // bob leaves: alice is still in and carol still rings, so the call goes on.
    assert_eq!(api.leave(&service, "r1", "bob").await.status, 200);
    assert_eq!(room_status(&pool, "r1").await, Some(1));
    // alice leaves: nobody is left to answer into; carol's ring becomes missed.
    assert_eq!(api.leave(&service, "r1", "alice").await.status, 200);
    assert_eq!(room_status(&pool, "r1").await, Some(2));
    assert_eq!(status_of(&pool, "r1", "carol").await, Some(4));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_group_call_ends_when_one_person_is_left_and_nobody_rings(pool: DbPool) {
    let app = common::app(pool.clone());
    let api = Api::new(&app);
    api.open("r1", "alice", &["bob", "carol"]).await;
    api.joined("r1", "bob").await;
    api.joined("r1", "carol").await;
    let service = api.service();
    assert_eq!(api.leave(&service, "r1", "alice").await.status, 200);
    assert_eq!(
        room_status(&pool, "r1").await,
        Some(1),
        "bob and carol still talk"
    );
    assert_eq!(api.leave(&service, "r1", "carol").await.status, 200);
    assert_eq!(room_status(&pool, "r1").await, Some(2));
    assert_eq!(
        status_of(&pool, "r1", "bob").await,
        Some(3),
        "the last one is hung up"
    );
}
