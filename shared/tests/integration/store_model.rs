//! Model-based run: the property test's random sequences, applied to the real store and to the
//! model (`rules_properties::World`) side by side. After every step the answer (ok, or the
//! stable key) and the whole database state of the sequence's rooms must equal the model's.
//! Here the one-live-row-per-uid rule comes from the store and the database's unique index,
//! not from a harness, and busy invitees take the store's own path.
//!
//! Each sequence gets its own room names and uids (`c<case>_…`) in one database, so the
//! database's global rules (one live row per uid) apply within a sequence only.

use std::collections::BTreeMap;

use call_shared::App;
use call_shared::model::{Now, ParticipantStatus as P, RoomStatus as R, WebhookEvent, WebhookKind};
use call_shared::rules::{self, CallState};
use call_shared::store::{DbPool, NewRoom, Store};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use sqlx::ConnectOptions;

use crate::common;
use crate::rules_properties::{Op, Outcome, RING_TIMEOUT_MS, ROOMS, UIDS, World, sequence};

const CASES: usize = 30;

type Snapshot = BTreeMap<String, (R, BTreeMap<String, P>)>;

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
                    limits: call_shared::model::CallLimits::default(),
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

    /// The sequence's rooms and rows as the database holds them, under the model's names.
    async fn snapshot(&self, pool: &DbPool) -> Snapshot {
        let prefix = format!("c{}_", self.case);
        let like = format!("{prefix}%");
        let rooms: Vec<(String, i16)> =
            sqlx::query_as("SELECT room_name, status FROM call_room WHERE room_name LIKE ?")
                .bind(&like)
                .fetch_all(pool)
                .await
                .expect("rooms");
        let rows: Vec<(String, String, i16)> = sqlx::query_as(
            "SELECT room_name, uid, status FROM call_participant WHERE room_name LIKE ?",
        )
        .bind(&like)
        .fetch_all(pool)
        .await
        .expect("rows");
        let strip = |name: &str| name.strip_prefix(&prefix).unwrap_or(name).to_owned();
        let mut snapshot: Snapshot = rooms
            .into_iter()
            .map(|(name, status)| {
                let status = R::from_code(status.into()).expect("room status");
                (strip(&name), (status, BTreeMap::new()))
            })
            .collect();
        for (room, uid, status) in rows {
            let status = P::from_code(status.into()).expect("participant status");
            if let Some((_, members)) = snapshot.get_mut(&strip(&room)) {
                members.insert(strip(&uid), status);
            }
        }
        snapshot
    }
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_store_follows_the_model_step_by_step(pool: DbPool) {
    let store = Store::connect_lazy(pool.connect_options().to_url_lossy().as_ref()).expect("store");
    let ring_timeout = (RING_TIMEOUT_MS / 1000).to_string();
    let app = App::with_store(
        common::config(&[("RING_TIMEOUT_SECONDS", &ring_timeout)]),
        store,
    )
    .expect("app");
    let mut runner = TestRunner::deterministic();
    let (mut steps, mut refused, mut changed) = (0, 0, 0);
    for case in 0..CASES {
        let ops = sequence()
            .new_tree(&mut runner)
            .expect("a sequence")
            .current();
        let mut world = World::default();
        let mut run = Run {
            app: &app,
            case,
            events: 0,
        };
        let mut last = Snapshot::new();
        for (i, op) in ops.iter().enumerate() {
            let acting = match op {
                Op::Act {
                    room, uid, member, ..
                } => Some(world.uid_of(*room, *uid, *member)),
                _ => None,
            };
            let expected = world.apply(op);
            let answered = run.apply(op, world.now(), acting).await;
            let model = world.snapshot();
            let database = run.snapshot(&pool).await;
            assert_eq!(
                answered, expected,
                "case {case} step {i} {op:?}: the store answered {answered:?}, the model {expected:?}\nsequence: {ops:?}"
            );
            assert_eq!(
                database, model,
                "case {case} step {i} {op:?}: the database differs from the model\nsequence: {ops:?}"
            );
            steps += 1;
            refused += usize::from(expected.is_err());
            changed += usize::from(model != last);
            last = model;
        }
    }
    println!(
        "store against model: {CASES} sequences, {steps} steps, {refused} refused, {changed} changed the state, compared after each"
    );
    assert!(
        changed * 10 > steps,
        "the sequences hardly changed anything"
    );
    common::assert_nothing_held(&pool).await;
}
