//! The whole retry schedule of a failing event under the default settings (5 s doubling to
//! 1 h, jittered down by up to half, given up 25 h after the first failure) and the pause of
//! an endpoint after failures in a row: first as the pure function the deliverer uses, then
//! through the real store and event sweeper on a clock the test moves, so 25 hours take a
//! second.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use call_shared::App;
use call_shared::config::DeliverySettings;
use call_shared::delivery::{Clock, Deliverer, next_attempt_at};
use call_shared::event_sweeper;
use call_shared::model::Now;
use call_shared::store::DbPool;
use chrono::NaiveDateTime;

use crate::common;
use crate::events::Api;
use crate::receiver::Receiver;

const WINDOW_MS: i64 = 25 * 3600 * 1000;

/// The pause after the `failures`th failure with `jitter`, written out from the README's
/// contract rather than taken from the product: 5 s doubled per failure, at most 1 h, times
/// (1 − jitter / 2).
fn contract_pause_ms(failures: i32, jitter: f64) -> i64 {
    let full = (5_000i64 << (failures - 1).min(20)).min(3_600_000);
    (full as f64 * (1.0 - jitter / 2.0)).round() as i64
}

/// Instants (ms after the first failure) of every attempt the contract makes of an event
/// that always fails: the last one is the first at or past the window, and is given up.
fn contract_schedule(jitter: impl Fn(i32) -> f64) -> Vec<i64> {
    let mut at = vec![0];
    let mut failures = 1;
    while *at.last().expect("first") < WINDOW_MS {
        at.push(at.last().expect("last") + contract_pause_ms(failures, jitter(failures)));
        failures += 1;
    }
    at
}

/// The product's schedule for the same event, from [`next_attempt_at`].
fn product_schedule(settings: &DeliverySettings, jitter: impl Fn(i32) -> f64) -> Vec<i64> {
    let t0 = Now::current().at;
    let mut at = vec![t0];
    let mut failures = 1;
    while let Some(next) = next_attempt_at(
        settings,
        t0,
        *at.last().expect("last"),
        failures,
        jitter(failures),
    ) {
        at.push(next);
        failures += 1;
        assert!(failures < 200, "never given up: {failures} attempts");
    }
    at.iter().map(|t| (*t - t0).num_milliseconds()).collect()
}

#[test]
fn the_default_schedule_doubles_from_5_s_to_1_h_within_its_jitter_and_gives_up_after_25_h() {
    let settings = DeliverySettings::default();
    // Whole pauses, half pauses, and in between: 35, 60 and 43 attempts in all.
    for (jitter, attempts) in [(0.0, 35), (1.0, 60), (0.5, 43)] {
        let schedule = product_schedule(&settings, |_| jitter);
        assert_eq!(
            schedule,
            contract_schedule(|_| jitter),
            "jitter {jitter}: the attempts' instants (ms after the first failure)"
        );
        assert_eq!(schedule.len(), attempts, "jitter {jitter}");
        let last = schedule[schedule.len() - 1];
        let before = schedule[schedule.len() - 2];
        assert!(
            before < WINDOW_MS && last >= WINDOW_MS,
            "given up at the first attempt past 25 h: {before} then {last}"
        );
    }
    // Any jitter stays within the bounds: never above the whole pause, never below half.
    for failures in 1..=40 {
        let full = contract_pause_ms(failures, 0.0);
        for jitter in [0.0, 0.25, 0.5, 0.75, 1.0, -3.0, 7.0] {
            let t0 = Now::current().at;
            let next =
                next_attempt_at(&settings, t0, t0, failures, jitter).expect("inside the window");
            let pause = (next - t0).num_milliseconds();
            assert!(
                pause <= full && pause * 2 >= full,
                "failure {failures}, jitter {jitter}: {pause} ms of {full}"
            );
        }
    }
}

/// A clock the test sets, and the jitter of each failure in turn from a list it chose.
#[derive(Clone)]
struct TestClock {
    now: Arc<Mutex<Now>>,
    jitters: Arc<Mutex<Vec<f64>>>,
}

impl TestClock {
    fn new(jitters: &[f64]) -> Self {
        TestClock {
            now: Arc::new(Mutex::new(Now::current())),
            jitters: Arc::new(Mutex::new(jitters.iter().rev().copied().collect())),
        }
    }

    fn now(&self) -> Now {
        *self.now.lock().expect("clock")
    }

    fn set(&self, at: NaiveDateTime) {
        *self.now.lock().expect("clock") = Now::from_datetime(at);
    }

    fn clock(&self) -> Clock {
        let now = self.now.clone();
        let jitters = self.jitters.clone();
        Clock::new(
            move || *now.lock().expect("clock"),
            move || jitters.lock().expect("jitters").pop().unwrap_or(0.0),
        )
    }
}

/// An App with the default delivery settings, delivering to `receiver` on `clock`.
fn app_on(pool: &DbPool, receiver: &Receiver, clock: &TestClock) -> App {
    let endpoints = receiver.endpoints(None);
    let mut app = common::app_with(pool.clone(), &[("EVENT_ENDPOINTS", endpoints.as_str())]);
    app.delivery = Deliverer::new(&app.config).with_clock(clock.clock());
    app
}

async fn next_attempt(pool: &DbPool, room: &str) -> NaiveDateTime {
    sqlx::query_scalar("SELECT next_attempt_at FROM event_stream WHERE room_name = ?")
        .bind(room)
        .fetch_one(pool)
        .await
        .expect("stream")
}

/// (attempt, outcome, attempted_at) of one event's attempts, in order.
async fn attempts_of(pool: &DbPool, event_id: &str) -> Vec<(i64, String, NaiveDateTime)> {
    sqlx::query_as(
        "SELECT attempt, outcome, attempted_at FROM event_attempt WHERE event_id = ? ORDER BY id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await
    .expect("attempts")
}

async fn event_id(pool: &DbPool, room: &str, seq: i64) -> String {
    sqlx::query_scalar("SELECT event_id FROM call_event WHERE room_name = ? AND seq = ?")
        .bind(room)
        .bind(seq)
        .fetch_one(pool)
        .await
        .expect("event")
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_sweeper_retries_on_schedule_for_25_hours_then_gives_up_and_sends_the_next(
    pool: DbPool,
) {
    let receiver = Receiver::start().await;
    receiver.answer_with(503, Duration::ZERO);
    // Every jitter the pauses can have, in turn (each keeps them whole milliseconds).
    let jitters: Vec<f64> = (0..100).map(|i| [0.0, 1.0, 0.5][i % 3]).collect();
    let clock = TestClock::new(&jitters);
    let app = app_on(&pool, &receiver, &clock);
    Api::new(&app).open("r1", "a", &[]).await;
    let head = event_id(&pool, "r1", 1).await;
    assert_eq!(
        attempts_of(&pool, &head).await.len(),
        1,
        "the inline attempt"
    );

    // Each sweep runs at the instant the stream asks to be tried again, never earlier.
    for _ in 0..100 {
        if attempts_of(&pool, &head).await.last().map(|a| a.1.as_str()) == Some("gave_up") {
            break;
        }
        let next = next_attempt(&pool, "r1").await;
        clock.set(next - chrono::Duration::milliseconds(1));
        let early = event_sweeper::sweep(&app, clock.now())
            .await
            .expect("sweep");
        assert_eq!(
            early.delivery.failed + early.delivery.gave_up,
            0,
            "tried early"
        );
        clock.set(next);
        let report = event_sweeper::sweep(&app, clock.now())
            .await
            .expect("sweep");
        assert_eq!(report.rooms, 1);
    }

    let attempts = attempts_of(&pool, &head).await;
    let first = attempts[0].2;
    let at: Vec<i64> = attempts
        .iter()
        .map(|a| (a.2 - first).num_milliseconds())
        .collect();
    assert_eq!(
        at,
        contract_schedule(|failures| jitters[(failures - 1) as usize]),
        "attempts at the contract's instants (ms after the first failure)"
    );
    let numbers: Vec<i64> = attempts.iter().map(|a| a.0).collect();
    assert_eq!(numbers, (1..=attempts.len() as i64).collect::<Vec<_>>());
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(outcomes[outcomes.len() - 1], "gave_up");
    assert!(
        outcomes[..outcomes.len() - 1]
            .iter()
            .all(|o| *o == "failed")
    );
    println!(
        "{} attempts over {:.1} h",
        attempts.len(),
        at[at.len() - 1] as f64 / 3_600_000.0
    );

    // The room's next event went out at once, and now starts a schedule of its own.
    let second = attempts_of(&pool, &event_id(&pool, "r1", 2).await).await;
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].0, second[0].1.as_str()), (1, "failed"));
    assert_eq!(second[0].2, attempts[attempts.len() - 1].2);
    let owed: Vec<(i64, i64)> =
        sqlx::query_as("SELECT seq, owed FROM call_event WHERE room_name = 'r1' ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("owed");
    assert_eq!(owed, [(1, 0), (2, 1)]);
    // Every retry reached the receiver signed over its exact body.
    assert_eq!(receiver.received().len(), attempts.len() + 1);
    receiver.assert_all_verified();
    common::assert_nothing_held(&pool).await;
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn after_3_failures_in_a_row_requests_make_no_attempt_but_the_sweeper_still_does(
    pool: DbPool,
) {
    let receiver = Receiver::start().await;
    receiver.answer_with(503, Duration::ZERO);
    let clock = TestClock::new(&[]);
    let app = app_on(&pool, &receiver, &clock);
    let api = Api::new(&app);
    let failures = async || -> i64 {
        sqlx::query_scalar("SELECT COALESCE(MAX(failures), 0) FROM event_endpoint")
            .fetch_one(&pool)
            .await
            .expect("failures")
    };
    api.open("r1", "a", &[]).await;
    clock.set(next_attempt(&pool, "r1").await);
    event_sweeper::sweep(&app, clock.now())
        .await
        .expect("sweep");
    assert_eq!((receiver.received().len(), failures().await), (2, 2));
    api.open("r2", "b", &[]).await;
    assert_eq!(
        (receiver.received().len(), failures().await),
        (3, 3),
        "two failures in a row: still tried inline"
    );
    api.open("r3", "c", &[]).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "three failures in a row: paused inside requests"
    );
    clock.set(next_attempt(&pool, "r1").await);
    event_sweeper::sweep(&app, clock.now())
        .await
        .expect("sweep");
    let r1 = event_id(&pool, "r1", 1).await;
    assert_eq!(
        attempts_of(&pool, &r1).await.len(),
        3,
        "the sweeper retries"
    );
    receiver.assert_all_verified();
}
