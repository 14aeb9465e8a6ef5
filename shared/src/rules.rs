//! The call lifecycle as plain functions over a loaded room and its rows.
//!
//! The store loads a [`CallState`] under lock, one of these functions changes it in
//! memory, and the store writes back exactly the rows marked changed in the same
//! transaction. No handler writes a status by hand.

use std::collections::{BTreeSet, HashSet};

use crate::error::ApiError;
use crate::model::{Now, Participant, ParticipantStatus as P, Room, RoomStatus as R};

/// What a participant row can be asked to do; each action has one target status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Join,
    RingAgain,
    Reject,
    RingOut,
    Busy,
    Cancel,
    Leave,
}

impl Action {
    pub fn target(self) -> P {
        match self {
            Action::Join => P::Joined,
            Action::RingAgain => P::Ringing,
            Action::Reject => P::Rejected,
            Action::RingOut => P::Missed,
            Action::Busy => P::Busy,
            Action::Cancel => P::Cancelled,
            Action::Leave => P::HungUp,
        }
    }

    /// PUT participant status s performs the action whose target is s.
    pub fn for_target(status: P) -> Action {
        match status {
            P::Joined => Action::Join,
            P::Ringing => Action::RingAgain,
            P::Rejected => Action::Reject,
            P::Missed => Action::RingOut,
            P::Busy => Action::Busy,
            P::Cancelled => Action::Cancel,
            P::HungUp => Action::Leave,
        }
    }

    /// The participant action table: the statuses (None = no row yet) each action starts from.
    pub fn allowed_from(self, current: Option<P>) -> bool {
        match self {
            Action::Join => !matches!(current, Some(P::Joined)),
            Action::RingAgain => !matches!(current, Some(P::Ringing | P::Joined)),
            Action::Reject | Action::RingOut | Action::Busy | Action::Cancel => {
                current == Some(P::Ringing)
            }
            Action::Leave => current == Some(P::Joined),
        }
    }

    /// Only these actions may create a row; the rest need one (404 otherwise).
    pub fn may_create_row(self) -> bool {
        matches!(self, Action::Join | Action::RingAgain)
    }
}

/// A room and all its participant rows, as loaded inside one transaction.
#[derive(Debug, Clone)]
pub struct CallState {
    pub room: Room,
    pub rows: Vec<Participant>,
    room_changed: bool,
    changed_rows: BTreeSet<usize>,
}

/// The result of a participant action: which row it concerned and whether anything changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub row: usize,
    pub changed: bool,
}

impl CallState {
    pub fn new(room: Room, rows: Vec<Participant>) -> Self {
        CallState {
            room,
            rows,
            room_changed: false,
            changed_rows: BTreeSet::new(),
        }
    }

    pub fn room_changed(&self) -> bool {
        self.room_changed
    }

    /// Rows to write back, in load order; new rows have id 0.
    pub fn changed_rows(&self) -> impl Iterator<Item = &Participant> {
        self.changed_rows.iter().map(|i| &self.rows[*i])
    }

    /// Changed rows with their index in `rows`.
    pub fn changed_rows_indexed(&self) -> impl Iterator<Item = (usize, &Participant)> {
        self.changed_rows.iter().map(|i| (*i, &self.rows[*i]))
    }

    pub fn is_changed(&self) -> bool {
        self.room_changed || !self.changed_rows.is_empty()
    }

    pub fn row_index(&self, uid: &str) -> Option<usize> {
        self.rows.iter().position(|p| p.uid == uid)
    }

    pub fn row(&self, uid: &str) -> Option<&Participant> {
        self.rows.iter().find(|p| p.uid == uid)
    }

    pub fn count(&self, status: P) -> usize {
        self.rows.iter().filter(|p| p.status == status).count()
    }

    fn set_room(&mut self, status: R, now: Now) {
        if self.room.status != status {
            self.room.status = status;
            self.room.updated_at = now.at;
            self.room_changed = true;
        }
    }

    fn set_row(&mut self, i: usize, status: P, now: Now) {
        let row = &mut self.rows[i];
        match status {
            P::Joined => {
                row.join_time = now.ms;
                row.leave_time = 0;
            }
            P::Ringing => {
                row.join_time = 0;
                row.leave_time = 0;
            }
            P::HungUp if row.status == P::Joined => row.leave_time = now.ms,
            _ => {}
        }
        row.status = status;
        // updated_at is also the ring timer's start, so ringing again restarts it.
        row.updated_at = now.at;
        self.changed_rows.insert(i);
    }

    fn ensure_row(&mut self, uid: &str, now: Now) -> usize {
        if let Some(i) = self.row_index(uid) {
            return i;
        }
        self.rows.push(Participant {
            id: 0,
            room_name: self.room.room_name.clone(),
            uid: uid.to_owned(),
            status: P::Ringing,
            join_time: 0,
            leave_time: 0,
            created_at: now.at,
            updated_at: now.at,
        });
        let i = self.rows.len() - 1;
        self.changed_rows.insert(i);
        i
    }

    fn move_all(&mut self, from: P, to: P, now: Now) {
        for i in 0..self.rows.len() {
            if self.rows[i].status == from {
                self.set_row(i, to, now);
            }
        }
    }
}

/// Create: the creator joined, each invitee ringing. The room row is written first by the store.
pub fn new_call(room: Room, invitees: &[String], now: Now) -> CallState {
    let mut state = CallState::new(room, Vec::new());
    let creator = state.room.creator.clone();
    let i = state.ensure_row(&creator, now);
    state.set_row(i, P::Joined, now);
    for uid in invitees {
        let i = state.ensure_row(uid, now);
        state.set_row(i, P::Ringing, now);
    }
    state
}

/// Invitees of a create: deduplicated in request order, the creator removed.
pub fn invitees(creator: &str, uids: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    uids.iter()
        .filter(|uid| uid.as_str() != creator && seen.insert(uid.as_str()))
        .cloned()
        .collect()
}

/// One participant action on one uid, followed by the settle rule.
pub fn apply_action(
    state: &mut CallState,
    uid: &str,
    action: Action,
    now: Now,
) -> Result<Applied, ApiError> {
    let existing = state.row_index(uid);
    let current = existing.map(|i| state.rows[i].status);
    let target = action.target();
    if current == Some(target) {
        return Ok(Applied {
            row: existing.unwrap_or_default(),
            changed: false,
        });
    }
    if matches!(action, Action::Join | Action::RingAgain) && state.room.status.is_final() {
        return Err(ApiError::RoomNotActive);
    }
    if existing.is_none() && !action.may_create_row() {
        return Err(ApiError::ParticipantNotFound);
    }
    if !action.allowed_from(current) {
        return Err(ApiError::InvalidTransition {
            from: current.map(P::code).unwrap_or(-1),
            to: target.code(),
        });
    }
    if action == Action::Join {
        if state.room.invite_only() && existing.is_none() && uid != state.room.creator {
            return Err(ApiError::ParticipantNotInvited);
        }
        let capacity = usize::try_from(state.room.max_participants).unwrap_or(0);
        if state.count(P::Joined) >= capacity {
            return Err(ApiError::RoomFull);
        }
    }
    let i = state.ensure_row(uid, now);
    state.set_row(i, target, now);
    if action == Action::Join && uid != state.room.creator && state.room.status == R::NotStarted {
        state.set_room(R::InProgress, now);
    }
    settle(state, now);
    Ok(Applied {
        row: i,
        changed: true,
    })
}

/// Ring one uid again (PUT 0): as the table says, but a uid live in another call is
/// recorded as busy (5) instead, as an invite does.
pub fn ring_again(
    state: &mut CallState,
    uid: &str,
    busy_elsewhere: bool,
    now: Now,
) -> Result<Applied, ApiError> {
    let applied = apply_action(state, uid, Action::RingAgain, now)?;
    if busy_elsewhere && applied.changed {
        state.set_row(applied.row, P::Busy, now);
        state.rows[applied.row].join_time = 0;
        state.rows[applied.row].leave_time = 0;
        settle(state, now);
    }
    Ok(applied)
}

/// Invite (ring again) each uid: joined and ringing rows stay, busy uids are recorded as 5.
/// Returns the indices of the rows the invite concerned, in request order.
pub fn invite(
    state: &mut CallState,
    uids: &[String],
    busy_elsewhere: &HashSet<String>,
    now: Now,
) -> Result<Vec<usize>, ApiError> {
    if state.room.status.is_final() {
        return Err(ApiError::RoomNotActive);
    }
    let mut seen = HashSet::new();
    let mut concerned = Vec::new();
    for uid in uids {
        if !seen.insert(uid.as_str()) {
            continue;
        }
        let current = state.row(uid).map(|p| p.status);
        if matches!(current, Some(P::Joined | P::Ringing)) {
            concerned.extend(state.row_index(uid));
            continue;
        }
        let target = if busy_elsewhere.contains(uid) {
            P::Busy
        } else {
            P::Ringing
        };
        let i = state.ensure_row(uid, now);
        state.set_row(i, target, now);
        if target == P::Busy {
            // A busy attempt has no ring time.
            state.rows[i].join_time = 0;
            state.rows[i].leave_time = 0;
        }
        concerned.push(i);
    }
    settle(state, now);
    Ok(concerned)
}

/// End: a room that never started is cancelled, a running one ended; final rooms stay as they are.
pub fn end(state: &mut CallState, now: Now) -> bool {
    match state.room.status {
        R::NotStarted => finish(state, R::Cancelled, P::Cancelled, now),
        R::InProgress => finish(state, R::Ended, P::Missed, now),
        R::Ended | R::Cancelled => {}
    }
    state.is_changed()
}

/// PUT room status: start (0→1), end (0→3, 1→2), the same value again, or 409.
pub fn set_room_status(state: &mut CallState, target: R, now: Now) -> Result<bool, ApiError> {
    let from = state.room.status;
    match (from, target) {
        _ if from == target => Ok(false),
        (R::NotStarted, R::InProgress) => {
            state.set_room(R::InProgress, now);
            Ok(true)
        }
        (R::NotStarted, R::Cancelled) | (R::InProgress, R::Ended) => Ok(end(state, now)),
        _ => Err(ApiError::InvalidTransition {
            from: from.code(),
            to: target.code(),
        }),
    }
}

/// The one settle rule, run after every participant change.
pub fn settle(state: &mut CallState, now: Now) {
    let joined = state.count(P::Joined);
    let ringing = state.count(P::Ringing);
    match state.room.status {
        R::NotStarted => {
            let creator_joined = state
                .row(&state.room.creator)
                .is_some_and(|p| p.status == P::Joined);
            if !creator_joined || (ringing == 0 && joined <= 1) {
                finish(state, R::Cancelled, P::Cancelled, now);
            }
        }
        R::InProgress => {
            if joined == 0 || (ringing == 0 && joined == 1) {
                finish(state, R::Ended, P::Missed, now);
            }
        }
        R::Ended | R::Cancelled => {}
    }
}

/// An event from LiveKit is stale when it happened before the second of the last change.
pub fn is_stale(last_change: chrono::NaiveDateTime, event_secs: i64) -> bool {
    event_secs < last_change.and_utc().timestamp()
}

/// participant_joined: presence is a fact, not a request. No invite or capacity checks
/// (the API enforced those when it issued the token); the room must not be final (the store
/// asks LiveKit to delete a final room instead), and stale events change nothing.
pub fn presence_joined(state: &mut CallState, uid: &str, event_secs: i64, now: Now) -> bool {
    let Some(i) = state.row_index(uid) else {
        return false;
    };
    let row = &state.rows[i];
    if state.room.status.is_final()
        || row.status == P::Joined
        || is_stale(row.updated_at, event_secs)
    {
        return false;
    }
    state.set_row(i, P::Joined, now);
    state.rows[i].join_time = event_secs.saturating_mul(1000);
    if uid != state.room.creator && state.room.status == R::NotStarted {
        state.set_room(R::InProgress, now);
    }
    settle(state, now);
    true
}

/// participant_left: as leave, for a joined row and a fresh event; anything else is ignored.
pub fn presence_left(state: &mut CallState, uid: &str, event_secs: i64, now: Now) -> bool {
    let Some(i) = state.row_index(uid) else {
        return false;
    };
    let row = &state.rows[i];
    if row.status != P::Joined || is_stale(row.updated_at, event_secs) {
        return false;
    }
    state.set_row(i, P::HungUp, now);
    settle(state, now);
    true
}

/// LiveKit saw `uid` join another room: its live row here closes (ringing → busy,
/// joined → hung up) and this room settles.
pub fn close_elsewhere(state: &mut CallState, uid: &str, now: Now) -> bool {
    let Some(i) = state.row_index(uid) else {
        return false;
    };
    let to = match state.rows[i].status {
        P::Ringing => P::Busy,
        P::Joined => P::HungUp,
        _ => return false,
    };
    state.set_row(i, to, now);
    settle(state, now);
    true
}

/// The sweeper: rows ringing since before `cutoff` ring out (4), then the room settles, which
/// also closes a room at 0 that nobody can answer any more.
pub fn ring_out(state: &mut CallState, cutoff: chrono::NaiveDateTime, now: Now) -> bool {
    for i in 0..state.rows.len() {
        if state.rows[i].status == P::Ringing && state.rows[i].updated_at < cutoff {
            state.set_row(i, P::Missed, now);
        }
    }
    settle(state, now);
    state.is_changed()
}

/// Move a room to a final status: nobody stays live in it.
fn finish(state: &mut CallState, room_status: R, ringing_to: P, now: Now) {
    state.move_all(P::Ringing, ringing_to, now);
    state.move_all(P::Joined, P::HungUp, now);
    state.set_room(room_status, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Room;

    fn now(ms: i64) -> Now {
        Now::from_millis(1_700_000_000_000 + ms).expect("valid instant")
    }

    fn room(max: i32, invite_on: i16) -> Room {
        let t = now(0);
        Room {
            id: 1,
            source_channel_id: String::new(),
            source_channel_type: 0,
            creator: "alice".into(),
            room_name: "r1".into(),
            call_type: 1,
            invite_on,
            max_participants: max,
            status: R::NotStarted,
            created_at: t.at,
            updated_at: t.at,
        }
    }

    fn call(invitees: &[&str]) -> CallState {
        let uids: Vec<String> = invitees.iter().map(|s| s.to_string()).collect();
        let mut state = new_call(room(5, 1), &uids, now(0));
        state.changed_rows.clear();
        state
    }

    fn status_of(state: &CallState, uid: &str) -> Option<P> {
        state.row(uid).map(|p| p.status)
    }

    #[test]
    fn create_joins_the_creator_and_rings_invitees() {
        let state = new_call(room(2, 1), &["bob".into()], now(0));
        assert_eq!(status_of(&state, "alice"), Some(P::Joined));
        assert_eq!(status_of(&state, "bob"), Some(P::Ringing));
        assert_eq!(state.changed_rows().count(), 2);
        assert_eq!(state.rows[0].join_time, now(0).ms);
    }

    #[test]
    fn invitees_are_deduplicated_without_the_creator() {
        let uids = ["bob", "alice", "bob", "carol"].map(String::from);
        assert_eq!(
            invitees("alice", &uids),
            vec!["bob".to_string(), "carol".to_string()]
        );
    }

    #[test]
    fn answering_starts_the_call() {
        let mut state = call(&["bob"]);
        let applied = apply_action(&mut state, "bob", Action::Join, now(5)).expect("join");
        assert!(applied.changed);
        assert_eq!(state.room.status, R::InProgress);
        assert_eq!(state.rows[applied.row].join_time, now(5).ms);
        assert!(state.room_changed());
    }

    #[test]
    fn joining_twice_is_idempotent() {
        let mut state = call(&["bob"]);
        apply_action(&mut state, "bob", Action::Join, now(5)).expect("join");
        let again = apply_action(&mut state, "bob", Action::Join, now(9)).expect("join again");
        assert!(!again.changed);
        assert_eq!(state.rows[again.row].join_time, now(5).ms);
    }

    #[test]
    fn a_two_person_call_ends_when_either_side_leaves() {
        let mut state = call(&["bob"]);
        apply_action(&mut state, "bob", Action::Join, now(5)).expect("join");
        apply_action(&mut state, "bob", Action::Leave, now(9)).expect("leave");
        assert_eq!(state.room.status, R::Ended);
        assert_eq!(status_of(&state, "alice"), Some(P::HungUp));
        assert_eq!(state.row("alice").map(|p| p.leave_time), Some(now(9).ms));
        assert_eq!(state.row("bob").map(|p| p.leave_time), Some(now(9).ms));
    }

    #[test]
    fn a_group_call_runs_while_someone_still_rings() {
        let mut state = call(&["bob", "carol"]);
        apply_action(&mut state, "bob", Action::Join, now(5)).expect("join");
        apply_action(&mut state, "bob", Action::Leave, now(6)).expect("leave");
        assert_eq!(state.room.status, R::InProgress);
        apply_action(&mut state, "carol", Action::Reject, now(7)).expect("reject");
        assert_eq!(state.room.status, R::Ended);
        assert_eq!(status_of(&state, "alice"), Some(P::HungUp));
    }

    #[test]
    fn a_call_nobody_answers_is_cancelled() {
        let mut state = call(&["bob"]);
        apply_action(&mut state, "bob", Action::Reject, now(5)).expect("reject");
        assert_eq!(state.room.status, R::Cancelled);
        assert_eq!(status_of(&state, "alice"), Some(P::HungUp));
        assert_eq!(status_of(&state, "bob"), Some(P::Rejected));
    }

    #[test]
    fn the_creator_hanging_up_before_an_answer_cancels_ringing_rows() {
        let mut state = call(&["bob", "carol"]);
        apply_action(&mut state, "alice", Action::Leave, now(5)).expect("leave");
        assert_eq!(state.room.status, R::Cancelled);
        assert_eq!(status_of(&state, "bob"), Some(P::Cancelled));
        assert_eq!(status_of(&state, "carol"), Some(P::Cancelled));
    }

    #[test]
    fn invite_only_rooms_refuse_strangers() {
        let mut state = call(&["bob"]);
        let err = apply_action(&mut state, "mallory", Action::Join, now(5));
        assert_eq!(err, Err(ApiError::ParticipantNotInvited));
        assert!(!state.is_changed());
    }

    #[test]
    fn a_full_room_refuses_another_join() {
        let mut state = new_call(room(2, 0), &[], now(0));
        apply_action(&mut state, "bob", Action::Join, now(1)).expect("join");
        let err = apply_action(&mut state, "carol", Action::Join, now(2));
        assert_eq!(err, Err(ApiError::RoomFull));
    }

    #[test]
    fn final_rooms_cannot_be_joined() {
        let mut state = call(&["bob"]);
        end(&mut state, now(1));
        assert_eq!(state.room.status, R::Cancelled);
        assert_eq!(status_of(&state, "bob"), Some(P::Cancelled));
        let err = apply_action(&mut state, "bob", Action::Join, now(2));
        assert_eq!(err, Err(ApiError::RoomNotActive));
    }

    #[test]
    fn ending_a_running_call_marks_ringing_rows_missed() {
        let mut state = call(&["bob", "carol"]);
        apply_action(&mut state, "bob", Action::Join, now(1)).expect("join");
        assert!(end(&mut state, now(2)));
        assert_eq!(state.room.status, R::Ended);
        assert_eq!(status_of(&state, "carol"), Some(P::Missed));
        assert_eq!(status_of(&state, "bob"), Some(P::HungUp));
    }

    #[test]
    fn ending_a_final_room_changes_nothing() {
        let mut state = call(&["bob"]);
        end(&mut state, now(1));
        let mut again = CallState::new(state.room.clone(), state.rows.clone());
        assert!(!end(&mut again, now(2)));
    }

    #[test]
    fn moves_outside_the_table_are_invalid_transitions() {
        let mut state = call(&["bob"]);
        let err = apply_action(&mut state, "bob", Action::Leave, now(1));
        assert_eq!(err, Err(ApiError::InvalidTransition { from: 0, to: 3 }));
        let err = apply_action(&mut state, "zed", Action::Reject, now(1));
        assert_eq!(err, Err(ApiError::ParticipantNotFound));
    }

    #[test]
    fn invite_keeps_joined_rows_and_records_busy_uids() {
        let mut state = call(&["bob"]);
        apply_action(&mut state, "bob", Action::Join, now(1)).expect("join");
        let busy: HashSet<String> = ["dave".to_string()].into();
        let uids = ["bob", "carol", "dave"].map(String::from);
        let rows = invite(&mut state, &uids, &busy, now(2)).expect("invite");
        let statuses: Vec<P> = rows.iter().map(|i| state.rows[*i].status).collect();
        assert_eq!(statuses, vec![P::Joined, P::Ringing, P::Busy]);
    }

    #[test]
    fn room_status_put_follows_its_table() {
        let mut state = call(&["bob"]);
        assert_eq!(
            set_room_status(&mut state, R::NotStarted, now(1)),
            Ok(false)
        );
        assert_eq!(
            set_room_status(&mut state, R::Ended, now(1)),
            Err(ApiError::InvalidTransition { from: 0, to: 2 })
        );
        assert_eq!(set_room_status(&mut state, R::InProgress, now(1)), Ok(true));
        assert_eq!(set_room_status(&mut state, R::Ended, now(2)), Ok(true));
        assert_eq!(status_of(&state, "bob"), Some(P::Missed));
    }
}
