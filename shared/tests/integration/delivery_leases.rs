//! The delivery lease across instances: two deliver-events sweeps, each with a store (pool and
//! kept connection) of its own as two Lambda instances have, never send one room's events at
//! once and keep its order; and a lease whose holder stopped mid-way runs out and is taken
//! over by another deliverer, which delivers the rest, repeating only what the stopped one
//! had sent (at least once, same id and body).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use call_shared::App;
use call_shared::delivery::{Clock, Deliverer};
use call_shared::event_sweeper;
use call_shared::model::Now;
use call_shared::store::{DbPool, Store};
use chrono::NaiveDateTime;
use serde_json::json;
use sqlx::ConnectOptions;
use tokio::sync::Notify;

use crate::common;
use crate::events::Api;
use crate::receiver::{Received, Receiver};

/// Another instance of the service: its own store on the test database, delivering to
/// `receiver`, with no attempts inside requests (the events wait for the sweeps).
fn instance(pool: &DbPool, receiver: &Receiver) -> App {
    let endpoints = receiver.endpoints(None);
    let config = common::config(&[
        ("EVENT_ENDPOINTS", endpoints.as_str()),
        ("EVENT_INLINE_BUDGET_MS", "0"),
    ]);
    let url = pool.connect_options().to_url_lossy().to_string();
    let store = Store::connect_lazy(&url).expect("store");
    App::with_store(config, store).expect("app")
}

/// A room with `invited` people rung and then ended: 2 + 2 × (invited + 1) events.
async fn busy_room(api: &Api<'_>, room: &str, invited: usize) -> i64 {
    let uids: Vec<String> = (0..invited).map(|i| format!("{room}_u{i}")).collect();
    api.open_with(json!({
        "room_name": room, "creator": format!("{room}_a"), "call_type": 1, "invite_on": 1,
        "max_participants": invited + 1, "uids": uids,
    }))
    .await;
    api.ended(room).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM call_event WHERE room_name = ?")
        .bind(room)
        .fetch_one(api.app.store.pool())
        .await
        .expect("events")
}

async fn owed(pool: &DbPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM call_event WHERE owed > 0")
        .fetch_one(pool)
        .await
        .expect("owed")
}

fn seqs_of(arrivals: &[Received], room: &str) -> Vec<i64> {
    arrivals
        .iter()
        .filter(|r| r.json["room_name"] == room)
        .map(|r| r.json["seq"].as_i64().expect("seq"))
        .collect()
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn two_deliverers_never_send_one_rooms_events_at_once_and_keep_its_order(pool: DbPool) {
    let receiver = Receiver::start().await;
    // Each answer takes a moment, so a second sender of the room would be caught in flight.
    receiver.answer_with(200, Duration::from_millis(3));
    let writer = instance(&pool, &receiver);
    let api = Api::new(&writer);
    // More events per room than one lease sends (50): each room needs several leases.
    let rooms = ["r1", "r2"];
    let mut total = 0;
    for room in rooms {
        total += busy_room(&api, room, 30).await;
    }
    assert_eq!(total, 2 * 64);
    assert!(receiver.received().is_empty(), "nothing sent inline");

    let (one, two) = (instance(&pool, &receiver), instance(&pool, &receiver));
    // Past the events' grace and any lease a refused claim rescheduled them to.
    let later = || Now::from_millis(Now::current().ms + 60_000).expect("instant");
    // First, the two meet for sure: whichever takes r1 is held on its second event until the
    // other has finished its pass, which therefore found r1 leased.
    let held = receiver.hold("r1", 2);
    let done = Notify::new();
    let finished = async |app: &App| {
        let report = event_sweeper::sweep(app, later()).await;
        done.notify_one();
        report.expect("sweep")
    };
    let (a, b, ()) = tokio::join!(finished(&one), finished(&two), async {
        held.reached().await;
        done.notified().await;
        held.release();
    });
    let met = a.delivery.deferred + b.delivery.deferred;
    let mut deferred = met;
    for _ in 0..20 {
        if owed(&pool).await == 0 {
            break;
        }
        let (a, b) = tokio::join!(
            event_sweeper::sweep(&one, later()),
            event_sweeper::sweep(&two, later())
        );
        let (a, b) = (a.expect("sweep one"), b.expect("sweep two"));
        deferred += a.delivery.deferred + b.delivery.deferred;
    }
    assert_eq!(owed(&pool).await, 0, "every event delivered");
    assert_eq!(
        receiver.overlaps(),
        Vec::<(String, i64)>::new(),
        "(room, seq) sent while another event of the room was in flight"
    );
    assert!(met > 0, "the two deliverers met on r1");
    println!("{deferred} passes found a room leased by the other deliverer");
    let arrivals = receiver.received();
    assert_eq!(arrivals.len() as i64, total, "each event once");
    for room in rooms {
        assert_eq!(
            seqs_of(&arrivals, room),
            (1..=64).collect::<Vec<_>>(),
            "{room}"
        );
    }
    receiver.assert_all_verified();
    common::assert_nothing_held(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_lease_whose_holder_stopped_runs_out_and_another_deliverer_sends_the_rest(pool: DbPool) {
    let receiver = Receiver::start().await;
    let writer = instance(&pool, &receiver);
    let events = busy_room(&Api::new(&writer), "r1", 4).await;
    assert_eq!(events, 12);

    // Deliverer one stops (its instance dies) while event 5 is in flight.
    let one = instance(&pool, &receiver);
    let held = receiver.hold("r1", 5);
    let at = Now::from_millis(Now::current().ms + 5_000).expect("instant");
    tokio::select! {
        report = event_sweeper::sweep(&one, at) => panic!("deliverer one finished: {report:?}"),
        () = held.reached() => {}
    }
    drop(one);
    held.release();
    for _ in 0..500 {
        if receiver.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(receiver.in_flight(), 0);
    assert_eq!(seqs_of(&receiver.received(), "r1"), [1, 2, 3, 4, 5]);
    let lease_until: NaiveDateTime =
        sqlx::query_scalar("SELECT lease_until FROM event_stream WHERE room_name = 'r1'")
            .fetch_one(&pool)
            .await
            .expect("the stopped deliverer's lease");

    // Deliverer two, on a clock it can move ahead: refused while the lease lasts.
    let offset = Arc::new(AtomicI64::new(5_000));
    let ahead = offset.clone();
    let clock = Clock::new(
        move || {
            Now::from_millis(Now::current().ms + ahead.load(Ordering::SeqCst)).expect("instant")
        },
        || 0.5,
    );
    let mut two = instance(&pool, &receiver);
    two.delivery = Deliverer::new(&two.config).with_clock(clock.clone());
    let report = event_sweeper::sweep(&two, clock.now())
        .await
        .expect("sweep");
    assert_eq!(report.delivery.deferred, 1, "{report:?}");
    assert_eq!(
        receiver.received().len(),
        5,
        "nothing sent under a live lease"
    );

    // The lease runs out: deliverer two takes it over and sends the room from its cursor.
    let until = Now::from_datetime(lease_until).ms;
    offset.store(until + 1 - Now::current().ms, Ordering::SeqCst);
    let report = event_sweeper::sweep(&two, clock.now())
        .await
        .expect("sweep");
    assert_eq!(report.delivery.delivered, 12, "{report:?}");
    let arrivals = receiver.received();
    let seqs = seqs_of(&arrivals, "r1");
    assert_eq!(
        seqs[5..],
        (1..=12).collect::<Vec<_>>(),
        "the rest, in order"
    );
    // Repeated: only what deliverer one had sent before it stopped, with the same id and body.
    let mut copies: HashMap<i64, Vec<&Received>> = HashMap::new();
    for r in &arrivals {
        copies
            .entry(r.json["seq"].as_i64().expect("seq"))
            .or_default()
            .push(r);
    }
    for (seq, got) in &copies {
        let expected = if *seq <= 5 { 2 } else { 1 };
        assert_eq!(got.len(), expected, "seq {seq}");
        assert!(
            got.iter()
                .all(|r| r.id == got[0].id && r.body == got[0].body)
        );
    }
    assert_eq!(receiver.overlaps(), Vec::<(String, i64)>::new());
    assert_eq!(owed(&pool).await, 0);
    let stream: (i64, Option<String>) = sqlx::query_as(
        "SELECT CAST(delivered_seq AS SIGNED), lease_token FROM event_stream WHERE room_name = 'r1'",
    )
    .fetch_one(&pool)
    .await
    .expect("stream");
    assert_eq!(stream, (12, None), "cursor at the end, lease given back");
    receiver.assert_all_verified();
    common::assert_nothing_held(&pool).await;
}
