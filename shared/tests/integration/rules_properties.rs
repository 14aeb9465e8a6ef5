//! Property test of the lifecycle rules: random sequences of API actions, webhook events and
//! sweeps over a few rooms and uids. The world is the model of the store: it applies the rules
//! in memory with the checks the store and the database make around them (a taken name, a
//! uid live elsewhere, busy invitees recorded as 5). After every step: refusals changed
//! nothing, accepted actions moved rows and rooms only as the lifecycle table says, and no
//! invariant broke. `store_model.rs` runs the same sequences through the real store.

use std::collections::{BTreeMap, HashSet};

use call_shared::ApiError;
use call_shared::model::{EndReason, Now, ParticipantStatus as P, Room, RoomStatus as R};
use call_shared::rules::{self, Action, CallState};
use proptest::prelude::*;

pub const ROOMS: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];
pub const UIDS: [&str; 9] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"];
/// Rooms created at the start of every sequence, each by its own group of three uids.
const OPENING_ROOMS: usize = 3;
/// The ring timeout in the model and in the store run: longer than any sequence (a step is a
/// second), so no deadline passes here. Deadlines are applied where a call is loaded, and a
/// refused step rolls back whatever they did; their own tests are in rules.rs and
/// lifecycle/livekit_lifecycle (a clock the test controls) and in the HTTP suites.
pub const RING_TIMEOUT_MS: i64 = 180_000;

#[derive(Debug, Clone)]
pub enum Op {
    Create {
        room: usize,
        creator: usize,
        invitees: Vec<usize>,
        max: i32,
        invite_only: bool,
    },
    /// `member`: the uid is the room's `uid`-th row (modulo their number) rather than
    /// `UIDS[uid]`, so most actions meet someone the room knows.
    Act {
        room: usize,
        uid: usize,
        member: bool,
        action: Action,
    },
    Invite {
        room: usize,
        uids: Vec<usize>,
    },
    End {
        room: usize,
    },
    PutRoom {
        room: usize,
        status: R,
    },
    PresenceJoined {
        room: usize,
        uid: usize,
    },
    PresenceLeft {
        room: usize,
        uid: usize,
    },
    RoomFinished {
        room: usize,
    },
    Sweep,
}

pub fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Join),
        Just(Action::RingAgain),
        Just(Action::Reject),
        Just(Action::RingOut),
        Just(Action::Busy),
        Just(Action::Cancel),
        Just(Action::Leave),
        Just(Action::Remove),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    let room = 0..ROOMS.len();
    let uid = 0..UIDS.len();
    let uids = proptest::collection::vec(0..UIDS.len(), 0..4);
    prop_oneof![
        2 => (room.clone(), uid.clone(), uids.clone(), 2..5i32, any::<bool>()).prop_map(
            |(room, creator, invitees, max, invite_only)| Op::Create { room, creator, invitees, max, invite_only }
        ),
        8 => (room.clone(), uid.clone(), proptest::bool::weighted(0.8), action())
            .prop_map(|(room, uid, member, action)| Op::Act { room, uid, member, action }),
        1 => (room.clone(), proptest::collection::vec(0..UIDS.len(), 1..4))
            .prop_map(|(room, uids)| Op::Invite { room, uids }),
        1 => room.clone().prop_map(|room| Op::End { room }),
        1 => (room.clone(), 0..4i64).prop_map(|(room, s)| Op::PutRoom {
            room,
            status: R::from_code(s).unwrap_or(R::NotStarted),
        }),
        2 => (room.clone(), uid.clone()).prop_map(|(room, uid)| Op::PresenceJoined { room, uid }),
        2 => (room.clone(), uid).prop_map(|(room, uid)| Op::PresenceLeft { room, uid }),
        1 => room.prop_map(|room| Op::RoomFinished { room }),
        1 => Just(Op::Sweep),
    ]
}

/// What a step answered: Ok, or the refusal's stable key.
pub type Outcome = Result<(), &'static str>;

#[derive(Default)]
pub struct World {
    pub calls: BTreeMap<&'static str, CallState>,
    /// Rooms a webhook joined someone into: capacity is enforced only when the API issues tokens.
    pub presence_joined: HashSet<&'static str>,
    clock_ms: i64,
}

impl World {
    /// The next instant: whole seconds apart, so webhook events are never stale against the
    /// last change and a sweep rings out every invite older than the step before.
    pub fn tick(&mut self) -> Now {
        self.clock_ms += 1000;
        self.now()
    }

    pub fn now(&self) -> Now {
        Now::from_millis(1_700_000_000_000 + self.clock_ms).expect("instant")
    }

    pub fn live_rooms_of(&self, uid: &str) -> Vec<&'static str> {
        self.calls
            .iter()
            .filter(|(_, c)| c.row(uid).is_some_and(|p| p.status.is_live()))
            .map(|(name, _)| *name)
            .collect()
    }

    fn busy_elsewhere(&self, room: &str, uids: &[String]) -> HashSet<String> {
        uids.iter()
            .filter(|u| self.live_rooms_of(u).iter().any(|r| *r != room))
            .cloned()
            .collect()
    }

    /// The uid an `Op::Act` names: see `Op::Act`.
    pub fn uid_of(&self, room: usize, uid: usize, member: bool) -> &'static str {
        let rows = self.calls.get(ROOMS[room]).map(|c| &c.rows);
        match rows {
            Some(rows) if member && !rows.is_empty() => {
                let name = &rows[uid % rows.len()].uid;
                UIDS.into_iter().find(|u| u == name).unwrap_or(UIDS[uid])
            }
            _ => UIDS[uid],
        }
    }

    fn call(&mut self, room: usize) -> Result<&mut CallState, &'static str> {
        self.calls
            .get_mut(ROOMS[room])
            .ok_or(ApiError::RoomNotFound.key())
    }

    /// Applies one step at the next instant, as the store would answer it.
    pub fn apply(&mut self, op: &Op) -> Outcome {
        let now = self.tick();
        let key = |e: ApiError| e.key();
        match op {
            Op::Create {
                room,
                creator,
                invitees,
                max,
                invite_only,
            } => {
                let name = ROOMS[*room];
                let creator = UIDS[*creator];
                let uids: Vec<String> = invitees.iter().map(|i| UIDS[*i].to_owned()).collect();
                let invitees = rules::invitees(creator, &uids);
                if !self.live_rooms_of(creator).is_empty() {
                    return Err(ApiError::CreatorInAnotherCall.key());
                }
                if invitees.iter().any(|u| !self.live_rooms_of(u).is_empty()) {
                    return Err("participant_in_call");
                }
                if self.calls.contains_key(name) {
                    return Err(ApiError::RoomAlreadyExists.key());
                }
                let room = Room {
                    id: *room as i64 + 1,
                    source_channel_id: String::new(),
                    source_channel_type: 0,
                    creator: creator.to_owned(),
                    room_name: name.to_owned(),
                    call_type: 1,
                    invite_on: i16::from(*invite_only),
                    max_participants: *max,
                    status: R::NotStarted,
                    created_at: now.at,
                    updated_at: now.at,
                    ring_timeout_seconds: (RING_TIMEOUT_MS / 1000) as i32,
                    ..Room::default()
                };
                self.calls
                    .insert(name, rules::new_call(room, &invitees, now));
                Ok(())
            }
            Op::Act {
                room,
                uid,
                member,
                action,
            } => {
                let name = ROOMS[*room];
                let uid = self.uid_of(*room, *uid, *member);
                let busy = self.live_rooms_of(uid).iter().any(|r| *r != name);
                let call = self.call(*room)?;
                let mut trial = call.clone();
                let applied = match action {
                    // Ringing a uid live elsewhere records it as busy, as production does.
                    Action::RingAgain => rules::ring_again(&mut trial, uid, busy, now),
                    _ => rules::apply_action(&mut trial, uid, *action, now),
                }
                .map_err(key)?;
                // The database's live-uid index refuses a join while live elsewhere.
                if busy && applied.changed && trial.rows[applied.row].status == P::Joined {
                    return Err("participant_in_call");
                }
                *call = trial;
                Ok(())
            }
            Op::Invite { room, uids } => {
                let name = ROOMS[*room];
                let uids: Vec<String> = uids.iter().map(|i| UIDS[*i].to_owned()).collect();
                let busy = self.busy_elsewhere(name, &uids);
                let call = self.call(*room)?;
                if uids.is_empty() {
                    return Ok(());
                }
                rules::invite(call, &uids, &busy, now)
                    .map(|_| ())
                    .map_err(key)
            }
            Op::End { room } => {
                rules::end(self.call(*room)?, EndReason::EndedByApi, now);
                Ok(())
            }
            Op::RoomFinished { room } => {
                if let Ok(call) = self.call(*room) {
                    rules::end(call, EndReason::GoneFromLivekit, now);
                }
                Ok(())
            }
            Op::PutRoom { room, status } => rules::set_room_status(self.call(*room)?, *status, now)
                .map(|_| ())
                .map_err(key),
            Op::PresenceJoined { room, uid } => {
                let (name, uid) = (ROOMS[*room], UIDS[*uid]);
                let known = self
                    .calls
                    .get(name)
                    .is_some_and(|c| c.row(uid).is_some() && c.room.status.is_open());
                if !known {
                    return Ok(());
                }
                for other in self.live_rooms_of(uid) {
                    if other != name
                        && let Some(call) = self.calls.get_mut(other)
                    {
                        rules::close_elsewhere(call, uid, now);
                    }
                }
                if let Some(call) = self.calls.get_mut(name)
                    && rules::presence_joined(call, uid, now.ms / 1000, now)
                {
                    self.presence_joined.insert(name);
                }
                Ok(())
            }
            Op::PresenceLeft { room, uid } => {
                if let Some(call) = self.calls.get_mut(ROOMS[*room]) {
                    rules::presence_left(call, UIDS[*uid], now.ms / 1000, now);
                }
                Ok(())
            }
            Op::Sweep => {
                // The sweeper writes down what the store already shows at `now`.
                for call in self.calls.values_mut() {
                    rules::apply_deadlines(call, now);
                }
                Ok(())
            }
        }
    }

    /// Every room's status and every row's status, for comparing before/after and with the
    /// database.
    pub fn snapshot(&self) -> BTreeMap<String, (R, BTreeMap<String, P>)> {
        self.calls
            .iter()
            .map(|(name, c)| {
                let rows = c.rows.iter().map(|p| (p.uid.clone(), p.status)).collect();
                ((*name).to_owned(), (c.room.status, rows))
            })
            .collect()
    }
}

fn allowed_room_move(from: R, to: R) -> bool {
    from == to
        || matches!(
            (from, to),
            (R::NotStarted, R::InProgress)
                | (R::NotStarted, R::Cancelled)
                | (R::InProgress, R::Ended)
        )
}

/// DESIGN's participant action table, written out here as the oracle (not taken from the
/// rules module under test): the status each action leads to, and the statuses (None = no
/// row) it may start from.
fn table(action: Action) -> (P, fn(Option<P>) -> bool) {
    match action {
        Action::Join => (P::Joined, |from| from != Some(P::Joined)),
        Action::RingAgain => (P::Ringing, |from| {
            !matches!(from, Some(P::Ringing | P::Joined))
        }),
        Action::Reject => (P::Rejected, |from| from == Some(P::Ringing)),
        Action::RingOut => (P::Missed, |from| from == Some(P::Ringing)),
        Action::Busy => (P::Busy, |from| from == Some(P::Ringing)),
        Action::Cancel => (P::Cancelled, |from| from == Some(P::Ringing)),
        Action::Leave => (P::HungUp, |from| from == Some(P::Joined)),
        Action::Remove => (P::HungUp, |from| {
            matches!(from, Some(P::Ringing | P::Joined))
        }),
    }
}

/// One accepted participant action on `uid`, against the table: it started from a status the
/// table allows and ended at the action's target, unless the settle rule then finalised the
/// room (which moves the row on); the same status again changed nothing.
fn check_action(
    before: &BTreeMap<String, (R, BTreeMap<String, P>)>,
    after: &BTreeMap<String, (R, BTreeMap<String, P>)>,
    room: &str,
    uid: &str,
    action: Action,
) -> Result<(), String> {
    let (room_before, rows_before) = &before[room];
    let (room_after, rows_after) = &after[room];
    let from = rows_before.get(uid).copied();
    let to = rows_after.get(uid).copied();
    let (target, allowed_from) = table(action);
    if from == Some(target) {
        return if before == after {
            Ok(())
        } else {
            Err(format!("the same status again changed something: {from:?}"))
        };
    }
    if !allowed_from(from) {
        return Err(format!("{action:?} accepted from {from:?}"));
    }
    let settled_final = !room_before.is_final() && room_after.is_final();
    let busy = action == Action::RingAgain && to == Some(P::Busy);
    if to == Some(target) || busy || settled_final {
        Ok(())
    } else {
        Err(format!("{action:?} left {uid} at {to:?} (from {from:?})"))
    }
}

/// A sequence: three calls placed by disjoint groups of uids (so actions meet calls), then
/// random steps, which may place two more.
pub fn sequence() -> impl Strategy<Value = Vec<Op>> {
    let creates = proptest::collection::vec((1..3usize, 2..5i32, any::<bool>()), OPENING_ROOMS);
    (creates, proptest::collection::vec(op(), 1..60)).prop_map(|(creates, mut ops)| {
        let mut all: Vec<Op> = creates
            .into_iter()
            .enumerate()
            .map(|(room, (invited, max, invite_only))| Op::Create {
                room,
                creator: 3 * room,
                invitees: (1..=invited).map(|i| 3 * room + i).collect(),
                max,
                invite_only,
            })
            .collect();
        all.append(&mut ops);
        all
    })
}

/// Checks one step of the model: refusals change nothing, accepted actions follow the table,
/// and the invariants hold. Returns whether the step changed anything.
fn check_step(world: &mut World, op: &Op) -> Result<bool, TestCaseError> {
    let before_rooms: BTreeMap<&str, R> = world
        .calls
        .iter()
        .map(|(name, c)| (*name, c.room.status))
        .collect();
    let before = world.snapshot();
    let acting = match op {
        Op::Act {
            room, uid, member, ..
        } => Some(world.uid_of(*room, *uid, *member)),
        _ => None,
    };
    let outcome = world.apply(op);
    let after = world.snapshot();

    match (&outcome, op, acting) {
        (Err(key), _, _) => prop_assert_eq!(
            &before,
            &after,
            "{} refused {:?} but changed state",
            key,
            op
        ),
        (Ok(()), Op::Act { room, action, .. }, Some(uid)) => {
            if let Err(why) = check_action(&before, &after, ROOMS[*room], uid, *action) {
                prop_assert!(false, "{} on {:?}", why, op);
            }
        }
        _ => {}
    }

    for uid in UIDS {
        let live = world.live_rooms_of(uid);
        prop_assert!(live.len() <= 1, "{uid} live in {live:?} after {op:?}");
    }
    for (name, call) in &world.calls {
        let joined = call.count(P::Joined);
        if !world.presence_joined.contains(name) {
            prop_assert!(
                joined as i32 <= call.room.max_participants,
                "{name}: {joined} joined > {} after {op:?}",
                call.room.max_participants
            );
        }
        if call.room.status.is_final() {
            prop_assert!(
                call.rows.iter().all(|p| !p.status.is_live()),
                "final {name} has live rows after {op:?}: {:?}",
                call.rows
            );
        }
        if let Some(from) = before_rooms.get(name) {
            prop_assert!(
                allowed_room_move(*from, call.room.status),
                "{name} moved {from:?} -> {:?} on {op:?}",
                call.room.status
            );
        }
        let mut seen = HashSet::new();
        prop_assert!(
            call.rows.iter().all(|p| seen.insert(p.uid.clone())),
            "two rows for one uid in {name}"
        );
    }
    Ok(outcome.is_ok() && before != after)
}

#[test]
fn no_sequence_breaks_an_invariant() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (acts, act_changes) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 400,
        ..ProptestConfig::default()
    });
    let result = runner.run(&sequence(), |ops| {
        let mut world = World::default();
        for op in &ops {
            let changed = check_step(&mut world, op)?;
            if matches!(op, Op::Act { .. } | Op::Invite { .. }) {
                acts.fetch_add(1, Ordering::Relaxed);
                act_changes.fetch_add(usize::from(changed), Ordering::Relaxed);
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (acts, changes) = (acts.into_inner(), act_changes.into_inner());
    println!("rules: {acts} participant actions and invites, {changes} changed the state");
    // A rules module that refused everything would pass every check above.
    assert!(
        changes * 20 > acts,
        "only {changes} of {acts} actions changed anything"
    );
}
