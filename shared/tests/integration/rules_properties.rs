//! Property test of the lifecycle rules: random sequences of API actions, webhook events and
//! sweeps over a few rooms and uids never break an invariant. The world here applies the same
//! checks the store makes before a rule runs (busy uids, live elsewhere, unknown rows).

use std::collections::{BTreeMap, HashSet};

use call_shared::model::{Now, ParticipantStatus as P, Room, RoomStatus as R};
use call_shared::rules::{self, Action, CallState};
use proptest::prelude::*;

const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
const UIDS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        room: usize,
        creator: usize,
        invitees: Vec<usize>,
        max: i32,
        invite_only: bool,
    },
    Act {
        room: usize,
        uid: usize,
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

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Join),
        Just(Action::RingAgain),
        Just(Action::Reject),
        Just(Action::RingOut),
        Just(Action::Busy),
        Just(Action::Cancel),
        Just(Action::Leave),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let room = 0..ROOMS.len();
    let uid = 0..UIDS.len();
    let uids = proptest::collection::vec(0..UIDS.len(), 0..4);
    prop_oneof![
        2 => (room.clone(), uid.clone(), uids.clone(), 2..5i32, any::<bool>()).prop_map(
            |(room, creator, invitees, max, invite_only)| Op::Create { room, creator, invitees, max, invite_only }
        ),
        6 => (room.clone(), uid.clone(), action()).prop_map(|(room, uid, action)| Op::Act { room, uid, action }),
        1 => (room.clone(), uids).prop_map(|(room, uids)| Op::Invite { room, uids }),
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

#[derive(Default)]
struct World {
    calls: BTreeMap<&'static str, CallState>,
    /// Rooms a webhook joined someone into: capacity is enforced only when the API issues tokens.
    presence_joined: HashSet<&'static str>,
    clock_ms: i64,
}

impl World {
    fn tick(&mut self) -> Now {
        // Whole seconds apart, so webhook events are never stale against the last change.
        self.clock_ms += 1000;
        Now::from_millis(1_700_000_000_000 + self.clock_ms).expect("instant")
    }

    fn live_rooms_of(&self, uid: &str) -> Vec<&'static str> {
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

    fn apply(&mut self, op: &Op) {
        let now = self.tick();
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
                let mut everyone = invitees.clone();
                everyone.push(creator.to_owned());
                if self.calls.contains_key(name) || !self.busy_elsewhere(name, &everyone).is_empty()
                {
                    return; // room_already_exists / creator_in_another_call / participant_in_call
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
                };
                self.calls
                    .insert(name, rules::new_call(room, &invitees, now));
            }
            Op::Act { room, uid, action } => {
                let (name, uid) = (ROOMS[*room], UIDS[*uid]);
                // The database's live-uid index refuses a join or ring while live elsewhere.
                let elsewhere = self.live_rooms_of(uid).iter().any(|r| *r != name);
                if elsewhere && matches!(action, Action::Join | Action::RingAgain) {
                    return;
                }
                if let Some(call) = self.calls.get_mut(name) {
                    let _ = rules::apply_action(call, uid, *action, now);
                }
            }
            Op::Invite { room, uids } => {
                let name = ROOMS[*room];
                let uids: Vec<String> = uids.iter().map(|i| UIDS[*i].to_owned()).collect();
                let busy = self.busy_elsewhere(name, &uids);
                if let Some(call) = self.calls.get_mut(name) {
                    let _ = rules::invite(call, &uids, &busy, now);
                }
            }
            Op::End { room } | Op::RoomFinished { room } => {
                if let Some(call) = self.calls.get_mut(ROOMS[*room]) {
                    rules::end(call, now);
                }
            }
            Op::PutRoom { room, status } => {
                if let Some(call) = self.calls.get_mut(ROOMS[*room]) {
                    let _ = rules::set_room_status(call, *status, now);
                }
            }
            Op::PresenceJoined { room, uid } => {
                let (name, uid) = (ROOMS[*room], UIDS[*uid]);
                let known = self
                    .calls
                    .get(name)
                    .is_some_and(|c| c.row(uid).is_some() && c.room.status.is_open());
                if !known {
                    return;
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
            }
            Op::PresenceLeft { room, uid } => {
                if let Some(call) = self.calls.get_mut(ROOMS[*room]) {
                    rules::presence_left(call, UIDS[*uid], now.ms / 1000, now);
                }
            }
            Op::Sweep => {
                for call in self.calls.values_mut() {
                    rules::ring_out(call, now.at, now);
                }
            }
        }
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_breaks_an_invariant(ops in proptest::collection::vec(op(), 1..60)) {
        let mut world = World::default();
        for op in &ops {
            let before: BTreeMap<&str, R> =
                world.calls.iter().map(|(name, c)| (*name, c.room.status)).collect();
            world.apply(op);

            for uid in UIDS {
                let live = world.live_rooms_of(uid);
                prop_assert!(live.len() <= 1, "{uid} live in {live:?} after {op:?}");
            }
            for (name, call) in &world.calls {
                let joined = call.count(P::Joined);
                if !world.presence_joined.contains(name) {
                    prop_assert!(joined as i32 <= call.room.max_participants,
                        "{name}: {joined} joined > {} after {op:?}", call.room.max_participants);
                }
                if call.room.status.is_final() {
                    prop_assert!(call.rows.iter().all(|p| !p.status.is_live()),
                        "final {name} has live rows after {op:?}: {:?}", call.rows);
                }
                if let Some(from) = before.get(name) {
                    prop_assert!(allowed_room_move(*from, call.room.status),
                        "{name} moved {from:?} -> {:?} on {op:?}", call.room.status);
                }
                let mut seen = HashSet::new();
                prop_assert!(call.rows.iter().all(|p| seen.insert(p.uid.clone())),
                    "two rows for one uid in {name}");
            }
        }
    }
}
