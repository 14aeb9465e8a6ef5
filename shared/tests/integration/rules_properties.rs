//! Property test of the lifecycle rules: random sequences of API actions, webhook events and
//! sweeps over a few rooms and uids. The world is the model of the store: it applies the rules
//! in memory with the checks the store and the database make around them (a taken name, a
//! uid live elsewhere, busy invitees recorded as 5). After every step: refusals changed
//! nothing, accepted actions moved rows and rooms only as the lifecycle table says, and no
//! invariant broke. Calls have short limits, so invites ring out, lonely participants and long
//! calls reach their ends inside a sequence, and every deadline is checked against DESIGN's
//! timeouts: applied from the second it passes, as of the instant it fell due, never before.
//! Committed regressions (`tests/proptest-regressions/rules_properties.txt`) run first.
//! `store_model.rs` runs the same sequences through the real store.

use std::collections::{BTreeMap, HashSet};

use call_shared::ApiError;
use call_shared::model::{
    CallLimits, EndReason, Now, ParticipantStatus as P, Reason, Room, RoomStatus as R,
};
use call_shared::rules::{self, Action, CallState};
use chrono::{Duration, NaiveDateTime};
use proptest::prelude::*;
use proptest::test_runner::{
    FailurePersistence, FileFailurePersistence, RngAlgorithm, TestRng, TestRunner,
};

pub const ROOMS: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];
pub const UIDS: [&str; 9] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"];
/// Rooms created at the start of every sequence, each by its own group of three uids.
const OPENING_ROOMS: usize = 3;
/// The time between two steps: an invite rings for 20 steps, long enough for actions to meet
/// the call while it rings, short beside a long sequence (up to 62 steps).
pub const STEP_MS: i64 = 250;

/// Every call's limits in the model and in the store run: invites ring out, one participant
/// left alone with someone still ringing ends the call, and a call that runs long enough ends
/// at its longest duration, all inside a sequence.
pub const LIMITS: CallLimits = CallLimits {
    ring_timeout_seconds: 5,
    max_duration_seconds: 6,
    solo_timeout_seconds: 1,
};

/// Seeds of sequences that once failed; proptest replays them before new ones and appends a
/// new failure here (commit it). The store run replays them too.
pub const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/proptest-regressions/rules_properties.txt"
);

/// The committed regressions' generators, each making its sequence as proptest's replay does.
pub fn committed_regressions() -> Vec<TestRunner> {
    FileFailurePersistence::Direct(REGRESSIONS)
        .load_persisted_failures2(None)
        .iter()
        .map(|seed| {
            // A seed line is `cc <32 bytes in hex>`: ChaCha, proptest's default algorithm.
            let line = seed.to_string();
            let hex = line.strip_prefix("cc ").expect("a ChaCha seed");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            TestRunner::new_with_rng(
                ProptestConfig::default(),
                TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
            )
        })
        .collect()
}

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
    // Answers weigh more: calls that run meet the solo and longest-duration deadlines.
    prop_oneof![
        3 => Just(Action::Join),
        1 => Just(Action::RingAgain),
        1 => Just(Action::Reject),
        1 => Just(Action::RingOut),
        1 => Just(Action::Busy),
        1 => Just(Action::Cancel),
        1 => Just(Action::Leave),
        1 => Just(Action::Remove),
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
        2 => Just(Op::Sweep),
    ]
}

/// What a step answered: Ok, or the refusal's stable key.
pub type Outcome = Result<(), &'static str>;

/// One call's status and end reason, and each row's status and reason by uid.
pub type CallSnapshot = (R, Option<EndReason>, BTreeMap<String, (P, Option<Reason>)>);

/// Every call of a world (or of a sequence in the database) by room name.
pub type Snapshot = BTreeMap<String, CallSnapshot>;

/// Settlements by a deadline, counted across a run: a run whose deadlines never pass would
/// pass every other check.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub ring_outs: usize,
    pub max_duration: usize,
    pub solo: usize,
}

impl Settled {
    pub fn add(&mut self, other: Settled) {
        self.ring_outs += other.ring_outs;
        self.max_duration += other.max_duration;
        self.solo += other.solo;
    }

    /// What deadlines changed from `before` to `after` (the same room names).
    pub fn between(before: &Snapshot, after: &Snapshot) -> Settled {
        let mut settled = Settled::default();
        for (name, (status, reason, rows)) in after {
            let Some((was, _, rows_before)) = before.get(name) else {
                continue;
            };
            if !was.is_final() && status.is_final() {
                match reason {
                    Some(EndReason::MaxDuration) => settled.max_duration += 1,
                    Some(EndReason::SoloTimeout) => settled.solo += 1,
                    _ => {}
                }
            }
            settled.ring_outs += rows
                .iter()
                .filter(|(uid, row)| {
                    **row == (P::Missed, Some(Reason::Timeout))
                        && rows_before.get(*uid).is_some_and(|r| r.0 == P::Ringing)
                })
                .count();
        }
        settled
    }

    /// Each kind at least once.
    pub fn each_kind(&self) -> bool {
        self.ring_outs > 0 && self.max_duration > 0 && self.solo > 0
    }
}

#[derive(Default)]
pub struct World {
    pub calls: BTreeMap<&'static str, CallState>,
    /// Rooms a webhook joined someone into: capacity is enforced only when the API issues tokens.
    pub presence_joined: HashSet<&'static str>,
    clock_ms: i64,
}

impl World {
    /// A world whose first step comes `offset_ms` later than the default's.
    pub fn starting_at(offset_ms: i64) -> World {
        World {
            clock_ms: offset_ms,
            ..World::default()
        }
    }

    /// The next instant, STEP_MS later. A webhook event carries the whole second of its
    /// step, never earlier than the second of the row's last change, so it is never stale.
    pub fn tick(&mut self) -> Now {
        self.clock_ms += STEP_MS;
        self.now()
    }

    /// The next instant, with every deadline due by then applied to every call: what every
    /// read and every transaction of the store shows from that second (the store applies them
    /// where it loads a call, and its sweeper writes them down).
    pub fn advance(&mut self) -> Now {
        let now = self.tick();
        for call in self.calls.values_mut() {
            rules::apply_deadlines(call, now);
        }
        now
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

    /// Applies one step at the current instant (after `advance`), as the store answers it.
    pub fn apply(&mut self, op: &Op) -> Outcome {
        let now = self.now();
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
                    ring_timeout_seconds: LIMITS.ring_timeout_seconds,
                    max_duration_seconds: LIMITS.max_duration_seconds,
                    solo_timeout_seconds: LIMITS.solo_timeout_seconds,
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
            // The sweeper writes down what `advance` already applied: in the store it changes
            // the database, not what a read shows.
            Op::Sweep => Ok(()),
        }
    }

    /// Every room's and row's status and reason, for comparing before/after and with the
    /// database.
    pub fn snapshot(&self) -> Snapshot {
        self.calls
            .iter()
            .map(|(name, c)| ((*name).to_owned(), snapshot_of(c)))
            .collect()
    }
}

/// One call as a snapshot holds it.
pub fn snapshot_of(c: &CallState) -> CallSnapshot {
    let rows = c
        .rows
        .iter()
        .map(|p| (p.uid.clone(), (p.status, p.reason)))
        .collect();
    (c.room.status, c.room.end_reason, rows)
}

fn plus(at: NaiveDateTime, seconds: i32) -> NaiveDateTime {
    at + Duration::seconds(i64::from(seconds))
}

/// DESIGN's timeouts as the oracle, over one `advance` to `now` (`before`: the calls one
/// second earlier, every deadline due then applied). An invite rings out once
/// `ring_timeout_seconds` after it started ringing has passed, not a second before, stamped
/// with that instant; a running call ends at `max_duration_seconds` after it started; a call
/// in which one participant is alone ends `solo_timeout_seconds` after that began.
fn check_deadlines(
    before: &BTreeMap<&'static str, CallState>,
    after: &BTreeMap<&'static str, CallState>,
    now: Now,
) -> Result<(), String> {
    for (name, was) in before {
        let call = &after[name];
        for (old, row) in was.rows.iter().zip(&call.rows) {
            if old.status != P::Ringing {
                continue;
            }
            let invited = old
                .invited_at
                .ok_or(format!("{name}/{} rings uninvited", old.uid))?;
            let due = plus(invited, LIMITS.ring_timeout_seconds);
            if old.ring_deadline != Some(due) {
                return Err(format!(
                    "{name}/{}: ring deadline {:?}, not {due}",
                    old.uid, old.ring_deadline
                ));
            }
            if due <= now.at && row.status == P::Ringing {
                return Err(format!(
                    "{name}/{} still rings {}s past {due}",
                    old.uid,
                    (now.at - due).num_seconds()
                ));
            }
            if row.reason == Some(Reason::Timeout) && row.status == P::Missed {
                if due > now.at {
                    return Err(format!(
                        "{name}/{} rang out at {} before its deadline {due}",
                        old.uid, now.at
                    ));
                }
                if row.updated_at != due
                    || row.ring_seconds - old.ring_seconds != i64::from(LIMITS.ring_timeout_seconds)
                {
                    return Err(format!(
                        "{name}/{} rang out at {} after ringing {}s, not at {due}",
                        old.uid,
                        row.updated_at,
                        row.ring_seconds - old.ring_seconds
                    ));
                }
            }
        }
        if was.room.status != R::InProgress {
            continue;
        }
        let room = &call.room;
        let started = was
            .room
            .started_at
            .ok_or(format!("{name} runs unstarted"))?;
        let longest = plus(started, LIMITS.max_duration_seconds);
        let solo = was
            .room
            .solo_since
            .filter(|_| was.count(P::Joined) == 1)
            .map(|since| plus(since, LIMITS.solo_timeout_seconds));
        let first_due = solo
            .into_iter()
            .chain([longest])
            .min()
            .filter(|d| *d <= now.at);
        if let Some(due) = first_due
            && !room.status.is_final()
        {
            return Err(format!("{name} still runs past {due} ({:?})", was.room));
        }
        let ended_at = |reason| (room.end_reason == Some(reason)).then_some(room.ended_at);
        if let Some(at) = ended_at(EndReason::MaxDuration)
            && (longest > now.at || at != Some(longest))
        {
            return Err(format!(
                "{name} ended as max_duration at {at:?}, started {started}"
            ));
        }
        if let Some(at) = ended_at(EndReason::SoloTimeout)
            && (solo.is_none_or(|s| s > now.at) || at != solo)
        {
            return Err(format!(
                "{name} ended as solo_timeout at {at:?}, alone until {solo:?}"
            ));
        }
    }
    Ok(())
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
    before: &Snapshot,
    after: &Snapshot,
    room: &str,
    uid: &str,
    action: Action,
) -> Result<(), String> {
    let (room_before, _, rows_before) = &before[room];
    let (room_after, _, rows_after) = &after[room];
    let from = rows_before.get(uid).map(|r| r.0);
    let to = rows_after.get(uid).map(|r| r.0);
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

/// Checks one step of the model: the deadlines due by its second applied as DESIGN says,
/// refusals change nothing, accepted actions follow the table, and the invariants hold.
/// Returns whether the step changed anything and what deadlines settled.
fn check_step(world: &mut World, op: &Op) -> Result<(bool, Settled), TestCaseError> {
    let (calls_before, snapshot_before) = (world.calls.clone(), world.snapshot());
    let now = world.advance();
    if let Err(why) = check_deadlines(&calls_before, &world.calls, now) {
        prop_assert!(false, "deadlines at {} before {:?}: {}", now.at, op, why);
    }
    let settled = Settled::between(&snapshot_before, &world.snapshot());
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
    Ok((outcome.is_ok() && before != after, settled))
}

#[test]
fn no_sequence_breaks_an_invariant() {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };
    assert!(
        !committed_regressions().is_empty(),
        "no committed regression in {REGRESSIONS}"
    );
    let (acts, act_changes) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let settled = Mutex::new(Settled::default());
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 400,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    });
    let result = runner.run(&sequence(), |ops| {
        let mut world = World::default();
        let mut run = Settled::default();
        for op in &ops {
            let (changed, by_deadlines) = check_step(&mut world, op)?;
            run.add(by_deadlines);
            if matches!(op, Op::Act { .. } | Op::Invite { .. }) {
                acts.fetch_add(1, Ordering::Relaxed);
                act_changes.fetch_add(usize::from(changed), Ordering::Relaxed);
            }
        }
        settled.lock().expect("counts").add(run);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (acts, changes) = (acts.into_inner(), act_changes.into_inner());
    let settled = settled.into_inner().expect("counts");
    println!(
        "rules: {acts} participant actions and invites, {changes} changed the state; deadlines: {settled:?}"
    );
    // A rules module that refused everything would pass every check above.
    assert!(
        changes * 20 > acts,
        "only {changes} of {acts} actions changed anything"
    );
    // And one whose deadlines never pass would pass the deadline checks.
    assert!(
        settled.each_kind(),
        "a kind of deadline never settled a call: {settled:?}"
    );
}
