//! Model-based run: the property test's random sequences, applied to the real store and to the
//! model (`rules_properties::World`) side by side, the committed regressions first. After every
//! step the answer (ok, or the stable key) and every room and row of the sequence as the store
//! reads them (status and reason) must equal the model's; after a sweep, so must the database
//! itself, with no passed deadline left unwritten. Calls have the model's short limits, so
//! sweeps write down ring-outs, longest-duration and solo ends, each counted.
//! Here the one-live-row-per-uid rule comes from the store and the database's unique index,
//! not from a harness, and busy invitees take the store's own path.
//!
//! Each sequence gets its own room names and uids (`c<case>_…`) and its own stretch of the
//! clock in one database, so the database's global rules (one live row per uid) and the
//! sweeper's reach apply within a sequence only.

use std::collections::BTreeMap;

use call_shared::App;
use call_shared::model::{
    EndReason, Now, ParticipantStatus as P, Reason, RoomStatus as R, WebhookEvent, WebhookKind,
};
use call_shared::rules::{self, CallState};
use call_shared::store::{DbPool, NewRoom, Store};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use sqlx::ConnectOptions;

use crate::common;
use crate::rules_properties::{
    LIMITS, Op, Outcome, ROOMS, Settled, Snapshot, UIDS, World, committed_regressions, sequence,
    snapshot_of,
};

const CASES: usize = 40;
/// Each sequence's clock starts this much after the previous one's (longer than a sequence).
const CASE_CLOCK_MS: i64 = 100_000;

fn anyone(_: &CallState) -> Result<(), call_shared::ApiError> {
    Ok(())
}

struct Run<'a> {
    app: &'a App,
    case: usize,
    events: usize,
}

impl Run<'_> {
    fn room(&self, room: usize) -> String {
        format!("c{}_{}", self.case, ROOMS[room])
    }

    fn uid(&self, uid: &str) -> String {
        format!("c{}_{uid}", self.case)
    }

    fn uids(&self, list: &[usize]) -> Vec<String> {
        list.iter().map(|i| self.uid(UIDS[*i])).collect()
    }

    fn event(&mut self, room: usize, at: Now, kind: WebhookKind) -> WebhookEvent {
        self.events += 1;
        WebhookEvent {
            id: format!("EV_{}_{}", self.case, self.events),
            room_name: self.room(room),
            created_at: at.ms / 1000,
            kind,
        }
    }

    /// The same step through the store, at the instant the model used; `acting` is the uid
    /// the model resolved for an `Op::Act`.
    async fn apply(&mut self, op: &Op, now: Now, acting: Option<&str>) -> Outcome {
        let store = &self.app.store;
        let key = |e: call_shared::ApiError| e.key();
        match op {
            Op::Create {
                room,
                creator,
                invitees,
                max,
                invite_only,
            } => {
                let creator = self.uid(UIDS[*creator]);
                let new = NewRoom {
                    source_channel_id: String::new(),
                    source_channel_type: 0,
                    creator: creator.clone(),
                    room_name: self.room(*room),
                    call_type: 1,
                    invite_on: i16::from(*invite_only),
                    max_participants: *max,
                    limits: LIMITS,
                };
                let invitees = rules::invitees(&creator, &self.uids(invitees));
                store
                    .create_room(&new, &invitees, now)
                    .await
                    .map(|_| ())
                    .map_err(key)
            }
            Op::Act { room, action, .. } => {
                let uid = self.uid(acting.expect("the model names the uid"));
                store
                    .participant_action(&self.room(*room), &uid, *action, now, anyone)
                    .await
                    .map(|_| ())
                    .map_err(key)
            }
            Op::Invite { room, uids } => store
                .invite(&self.room(*room), &self.uids(uids), now, anyone)
                .await
                .map(|_| ())
                .map_err(key),
            Op::End { room } => store
                .end_room(&self.room(*room), now, anyone)
                .await
                .map(|_| ())
                .map_err(key),
            Op::PutRoom { room, status } => store
                .set_room_status(&self.room(*room), *status, now, anyone)
                .await
                .map(|_| ())
                .map_err(key),
            Op::PresenceJoined { room, uid } | Op::PresenceLeft { room, uid } => {
                let uid = self.uid(UIDS[*uid]);
                let kind = match op {
                    Op::PresenceJoined { .. } => WebhookKind::ParticipantJoined { uid },
                    _ => WebhookKind::ParticipantLeft { uid },
                };
                let event = self.event(*room, now, kind);
                store
                    .apply_webhook(&event, now)
                    .await
                    .map(|_| ())
                    .map_err(key)
            }
            Op::RoomFinished { room } => {
                let event = self.event(*room, now, WebhookKind::RoomFinished);
                store
                    .apply_webhook(&event, now)
                    .await
                    .map(|_| ())
                    .map_err(key)
            }
            Op::Sweep => call_shared::sweeper::sweep(self.app, now)
                .await
                .map(|_| ())
                .map_err(key),
        }
    }

    fn strip<'a>(&self, name: &'a str) -> &'a str {
        let prefix = format!("c{}_", self.case);
        name.strip_prefix(&prefix).unwrap_or(name)
    }

    /// The sequence's rooms and rows as the store reads them at `now` (passed deadlines
    /// applied, as every read applies them), under the model's names.
    async fn read(&self, pool: &DbPool, now: Now) -> Snapshot {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT room_name FROM call_room WHERE room_name LIKE ?")
                .bind(format!("c{}_%", self.case))
                .fetch_all(pool)
                .await
                .expect("rooms");
        let mut snapshot = Snapshot::new();
        for name in names {
            let call = self.app.store.load(&name, now).await.expect("load");
            let (status, reason, rows) = snapshot_of(&call.expect("the room"));
            let rows = rows
                .into_iter()
                .map(|(uid, row)| (self.strip(&uid).to_owned(), row))
                .collect();
            snapshot.insert(self.strip(&name).to_owned(), (status, reason, rows));
        }
        snapshot
    }

    /// The sequence's rooms and rows as the database holds them, under the model's names.
    async fn stored(&self, pool: &DbPool) -> Snapshot {
        let like = format!("c{}_%", self.case);
        let rooms: Vec<(String, i16, Option<String>)> = sqlx::query_as(
            "SELECT room_name, status, end_reason FROM call_room WHERE room_name LIKE ?",
        )
        .bind(&like)
        .fetch_all(pool)
        .await
        .expect("rooms");
        let rows: Vec<(String, String, i16, Option<String>)> = sqlx::query_as(
            "SELECT room_name, uid, status, reason FROM call_participant WHERE room_name LIKE ?",
        )
        .bind(&like)
        .fetch_all(pool)
        .await
        .expect("rows");
        let mut snapshot: Snapshot = rooms
            .into_iter()
            .map(|(name, status, reason)| {
                let status = R::from_code(status.into()).expect("room status");
                let reason = reason.map(|r| EndReason::parse(&r).expect("end reason"));
                (
                    self.strip(&name).to_owned(),
                    (status, reason, BTreeMap::new()),
                )
            })
            .collect();
        for (room, uid, status, reason) in rows {
            let status = P::from_code(status.into()).expect("participant status");
            let reason = reason.map(|r| Reason::parse(&r).expect("reason"));
            if let Some((_, _, members)) = snapshot.get_mut(self.strip(&room)) {
                members.insert(self.strip(&uid).to_owned(), (status, reason));
            }
        }
        snapshot
    }

    /// Open rooms of the sequence whose deadline has passed, as the database holds them.
    async fn unwritten_deadlines(&self, pool: &DbPool, now: Now) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT room_name FROM call_room WHERE room_name LIKE ? AND status IN (0, 1) \
             AND deadline <= ?",
        )
        .bind(format!("c{}_%", self.case))
        .bind(now.at)
        .fetch_all(pool)
        .await
        .expect("deadlines")
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_store_follows_the_model_step_by_step(pool: DbPool) {
    let store = Store::connect_lazy(pool.connect_options().to_url_lossy().as_ref()).expect("store");
    let ring_timeout = LIMITS.ring_timeout_seconds.to_string();
    let app = App::with_store(
        common::config(&[("RING_TIMEOUT_SECONDS", &ring_timeout)]),
        store,
    )
    .expect("app");
    // The committed regressions, then new sequences (the same ones every run).
    let mut replays = committed_regressions();
    let regressions = replays.len();
    assert!(regressions > 0, "no committed regression to replay");
    let mut fresh = TestRunner::deterministic();
    let (mut steps, mut refused, mut changed, mut sweeps) = (0, 0, 0, 0);
    let mut swept = Settled::default();
    for case in 0..regressions + CASES {
        // A regression has its own seed; new cases share one deterministic generator.
        let source = replays.get_mut(case).unwrap_or(&mut fresh);
        let ops = sequence().new_tree(source).expect("a sequence").current();
        let mut world = World::starting_at(case as i64 * CASE_CLOCK_MS);
        let mut run = Run {
            app: &app,
            case,
            events: 0,
        };
        let mut last = Snapshot::new();
        for (i, op) in ops.iter().enumerate() {
            let now = world.advance();
            let acting = match op {
                Op::Act {
                    room, uid, member, ..
                } => Some(world.uid_of(*room, *uid, *member)),
                _ => None,
            };
            let expected = world.apply(op);
            let stored_before = match op {
                Op::Sweep => Some(run.stored(&pool).await),
                _ => None,
            };
            let answered = run.apply(op, now, acting).await;
            let model = world.snapshot();
            let read = run.read(&pool, now).await;
            assert_eq!(
                answered, expected,
                "case {case} step {i} {op:?}: the store answered {answered:?}, the model {expected:?}\nsequence: {ops:?}"
            );
            assert_eq!(
                read, model,
                "case {case} step {i} {op:?}: the store reads otherwise than the model\nsequence: {ops:?}"
            );
            if let Some(before) = stored_before {
                // The sweep wrote every passed deadline down: the database is the model now.
                let stored = run.stored(&pool).await;
                assert_eq!(
                    stored, model,
                    "case {case} step {i}: the database after a sweep differs from the model\nsequence: {ops:?}"
                );
                let left = run.unwritten_deadlines(&pool, now).await;
                assert!(
                    left.is_empty(),
                    "case {case} step {i}: passed deadlines left after a sweep: {left:?}"
                );
                swept.add(Settled::between(&before, &stored));
                sweeps += 1;
            }
            steps += 1;
            refused += usize::from(expected.is_err());
            changed += usize::from(model != last);
            last = model;
        }
    }
    println!(
        "store against model: {regressions} regressions and {CASES} sequences, {steps} steps, {refused} refused, {changed} changed the state, compared after each; {sweeps} sweeps wrote down {swept:?}"
    );
    assert!(
        changed * 10 > steps,
        "the sequences hardly changed anything"
    );
    // Sweeps that never wrote a deadline down would pass every comparison above.
    assert!(
        swept.each_kind(),
        "a kind of deadline was never written down by a sweep: {swept:?}"
    );
    common::assert_nothing_held(&pool).await;
}
