//! The call lifecycle as plain functions over a loaded room and its rows.
//!
//! The store loads a [`CallState`] under lock, one of these functions changes it in
//! memory, and the store writes back exactly the rows marked changed in the same
//! transaction. No handler writes a status by hand. Every change also records why (a room's
//! `end_reason`, a row's `reason`), how long rows rang and talked, and the room's next
//! deadline, so timeouts are decided by the same rules wherever a call is loaded.

use std::collections::{BTreeSet, HashSet};

use chrono::NaiveDateTime;

use crate::error::ApiError;
use crate::model::{
    EndReason, Now, Participant, ParticipantStatus as P, Reason, Room, RoomStatus as R,
};

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
    /// The creator or a service takes someone out of the call.
    Remove,
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
            Action::Leave | Action::Remove => P::HungUp,
        }
    }

    /// Why a row is at the target of this action (None for the live statuses).
    pub fn reason(self) -> Option<Reason> {
        match self {
            Action::Join | Action::RingAgain => None,
            Action::Reject => Some(Reason::Declined),
            Action::RingOut => Some(Reason::Timeout),
            Action::Busy => Some(Reason::Busy),
            Action::Cancel => Some(Reason::Cancelled),
            Action::Leave => Some(Reason::HungUp),
            Action::Remove => Some(Reason::Removed),
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
            Action::Remove => matches!(current, Some(P::Ringing | P::Joined)),
        }
    }

    /// Only these actions may create a row; the rest need one (404 otherwise).
    pub fn may_create_row(self) -> bool {
        matches!(self, Action::Join | Action::RingAgain)
    }

    /// What ended the call, when this action leaves nobody to answer.
    fn cause(self) -> EndReason {
        match self {
            Action::Reject => EndReason::Declined,
            Action::RingOut => EndReason::Missed,
            Action::Busy => EndReason::Busy,
            Action::Cancel | Action::Leave | Action::Remove => EndReason::Cancelled,
            Action::Join | Action::RingAgain => EndReason::Missed,
        }
    }
}

/// A room and all its participant rows, as loaded inside one transaction.
#[derive(Debug, Clone)]
pub struct CallState {
    pub room: Room,
    pub rows: Vec<Participant>,
    room_changed: bool,
    changed_rows: BTreeSet<usize>,
    loaded_status: R,
    /// What changed, in the order it first changed: the order of the call's events.
    touched: Vec<Touched>,
}

/// One change of a call, as its events report it: a row (once, however often it moved) or
/// the room reaching a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    Row(usize),
    Started,
    Ended,
}

/// The result of a participant action: which row it concerned and whether anything changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub row: usize,
    pub changed: bool,
}

/// Whole seconds from `from` to `to` (0 when `to` is not later).
pub fn seconds_between(from: NaiveDateTime, to: NaiveDateTime) -> i64 {
    (to - from).num_seconds().max(0)
}

fn plus_seconds(at: NaiveDateTime, secs: i32) -> NaiveDateTime {
    at + chrono::Duration::seconds(i64::from(secs))
}

impl CallState {
    pub fn new(room: Room, rows: Vec<Participant>) -> Self {
        CallState {
            loaded_status: room.status,
            room,
            rows,
            room_changed: false,
            changed_rows: BTreeSet::new(),
            touched: Vec::new(),
        }
    }

    /// Every row and room status this state changed since it was loaded, in order.
    pub fn touched(&self) -> &[Touched] {
        &self.touched
    }

    /// Its events are written: what changes next starts a new list.
    pub fn forget_touched(&mut self) {
        self.touched.clear();
    }

    /// The room must be written back (its event counter moved).
    pub fn mark_room_changed(&mut self) {
        self.room_changed = true;
    }

    /// Whether the room was final as the database held it (before any change in memory,
    /// deadlines included).
    pub fn was_final_when_loaded(&self) -> bool {
        self.loaded_status.is_final()
    }

    /// The room's status as the database held it when this state was loaded.
    pub fn loaded_status(&self) -> R {
        self.loaded_status
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

    fn set_room(&mut self, status: R, reason: Option<EndReason>, now: Now) {
        if self.room.status == status {
            return;
        }
        let room = &mut self.room;
        room.status = status;
        room.updated_at = now.at;
        if status == R::InProgress && room.started_at.is_none() {
            room.started_at = Some(now.at);
        }
        if status.is_final() {
            room.end_reason = reason;
            room.ended_at = Some(now.at);
            room.duration_seconds = room
                .started_at
                .map_or(0, |started| seconds_between(started, now.at));
        }
        self.room_changed = true;
        self.touched.push(if status.is_final() {
            Touched::Ended
        } else {
            Touched::Started
        });
    }

    /// Moves row `i` to `status` for `reason`, keeping its ring and talk time: ringing starts
    /// the ring timer (the room's ring timeout from now), leaving ringing adds the time it
    /// rang, leaving joined adds the time it talked.
    fn set_row(&mut self, i: usize, status: P, reason: Option<Reason>, now: Now) {
        let ring_timeout = self.room.ring_timeout_seconds;
        let row = &mut self.rows[i];
        if row.status == P::Ringing && status != P::Ringing {
            if let Some(invited) = row.invited_at {
                row.ring_seconds += seconds_between(invited, now.at);
            }
            row.ring_deadline = None;
        }
        if row.status == P::Joined && status != P::Joined && row.join_time > 0 {
            row.talk_seconds += ((now.ms - row.join_time) / 1000).max(0);
        }
        match status {
            P::Joined => {
                row.join_time = now.ms;
                row.leave_time = 0;
            }
            P::Ringing => {
                row.join_time = 0;
                row.leave_time = 0;
                row.invited_at = Some(now.at);
                row.ring_deadline = Some(plus_seconds(now.at, ring_timeout));
            }
            P::HungUp if row.status == P::Joined => row.leave_time = now.ms,
            _ => {}
        }
        row.status = status;
        row.reason = reason;
        // updated_at is also what a LiveKit event is judged stale against.
        row.updated_at = now.at;
        self.changed_rows.insert(i);
        if !self.touched.contains(&Touched::Row(i)) {
            self.touched.push(Touched::Row(i));
        }
    }

    fn ensure_row(&mut self, uid: &str, now: Now) -> usize {
        if let Some(i) = self.row_index(uid) {
            return i;
        }
        self.rows.push(Participant {
            room_name: self.room.room_name.clone(),
            uid: uid.to_owned(),
            // Not ringing yet: the caller moves it to its first status.
            status: P::Cancelled,
            created_at: now.at,
            updated_at: now.at,
            ..Participant::default()
        });
        let i = self.rows.len() - 1;
        self.changed_rows.insert(i);
        i
    }

    fn move_all(&mut self, from: P, to: P, reason: Reason, now: Now) {
        for i in 0..self.rows.len() {
            if self.rows[i].status == from {
                self.set_row(i, to, Some(reason), now);
            }
        }
    }

    /// The next instant a timeout rule applies (see [`apply_deadlines`]), and since when one
    /// participant is alone in a running call. Kept current after every change.
    fn refresh_deadline(&mut self, now: Now) {
        let room = &self.room;
        let joined = self.count(P::Joined);
        let solo_since = match room.status {
            R::InProgress if joined == 1 => room.solo_since.or(Some(now.at)),
            _ => None,
        };
        let deadline = match room.status {
            R::NotStarted if self.count(P::Ringing) == 0 => {
                // The creator alone in a room nobody rings: it waits as long as a ring would.
                Some(plus_seconds(room.updated_at, room.ring_timeout_seconds))
            }
            R::NotStarted | R::InProgress => {
                let rings = self.rows.iter().filter_map(|p| match p.status {
                    P::Ringing => p.ring_deadline,
                    _ => None,
                });
                let solo = solo_since
                    .filter(|_| room.solo_timeout_seconds > 0)
                    .map(|since| plus_seconds(since, room.solo_timeout_seconds));
                let longest = room
                    .started_at
                    .filter(|_| room.max_duration_seconds > 0 && room.status == R::InProgress)
                    .map(|started| plus_seconds(started, room.max_duration_seconds));
                rings.chain(solo).chain(longest).min()
            }
            R::Ended | R::Cancelled => None,
        };
        if (solo_since, deadline) != (self.room.solo_since, self.room.deadline) {
            self.room.solo_since = solo_since;
            self.room.deadline = deadline;
            self.room_changed = true;
        }
    }
}

/// Create: the creator joined, each invitee ringing. The room row is written first by the store.
pub fn new_call(room: Room, invitees: &[String], now: Now) -> CallState {
    let mut state = CallState::new(room, Vec::new());
    let creator = state.room.creator.clone();
    let i = state.ensure_row(&creator, now);
    state.set_row(i, P::Joined, None, now);
    for uid in invitees {
        let i = state.ensure_row(uid, now);
        state.set_row(i, P::Ringing, None, now);
    }
    state.refresh_deadline(now);
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
    let row = existing.map(|i| &state.rows[i]);
    let current = row.map(|p| p.status);
    let target = action.target();
    let same_again = match action {
        Action::Remove => row.is_some_and(|p| p.reason == Some(Reason::Removed)),
        _ => current == Some(target),
    };
    if same_again {
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
        if row.is_some_and(|p| p.reason == Some(Reason::Removed)) {
            return Err(ApiError::ParticipantRemoved);
        }
        if state.room.invite_only() && existing.is_none() && uid != state.room.creator {
            return Err(ApiError::ParticipantNotInvited);
        }
        let capacity = usize::try_from(state.room.max_participants).unwrap_or(0);
        if state.count(P::Joined) >= capacity {
            return Err(ApiError::RoomFull);
        }
    }
    let i = state.ensure_row(uid, now);
    state.set_row(i, target, action.reason(), now);
    if action == Action::Join && uid != state.room.creator && state.room.status == R::NotStarted {
        state.set_room(R::InProgress, None, now);
    }
    settle(state, action.cause(), now);
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
        record_busy(state, applied.row, now);
        settle(state, EndReason::Busy, now);
    }
    Ok(applied)
}

/// A busy attempt: status 5 with no ring time.
fn record_busy(state: &mut CallState, i: usize, now: Now) {
    state.set_row(i, P::Busy, Some(Reason::Busy), now);
    let row = &mut state.rows[i];
    row.join_time = 0;
    row.leave_time = 0;
    row.ring_seconds = 0;
    row.invited_at = None;
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
        let i = state.ensure_row(uid, now);
        if busy_elsewhere.contains(uid) {
            record_busy(state, i, now);
        } else {
            state.set_row(i, P::Ringing, None, now);
        }
        concerned.push(i);
    }
    settle(state, EndReason::Busy, now);
    Ok(concerned)
}

/// End: a room that never started is cancelled, a running one ended; final rooms stay as
/// they are. `reason` says who ended it (the API, LiveKit, a limit).
pub fn end(state: &mut CallState, reason: EndReason, now: Now) -> bool {
    match state.room.status {
        R::NotStarted => finish(
            state,
            R::Cancelled,
            reason,
            P::Cancelled,
            Reason::Cancelled,
            now,
        ),
        R::InProgress => finish(state, R::Ended, reason, P::Missed, Reason::CallEnded, now),
        R::Ended | R::Cancelled => {}
    }
    state.refresh_deadline(now);
    state.is_changed()
}

/// PUT room status: start (0→1), end (0→3, 1→2), the same value again, or 409.
pub fn set_room_status(state: &mut CallState, target: R, now: Now) -> Result<bool, ApiError> {
    let from = state.room.status;
    match (from, target) {
        _ if from == target => Ok(false),
        (R::NotStarted, R::InProgress) => {
            state.set_room(R::InProgress, None, now);
            state.refresh_deadline(now);
            Ok(true)
        }
        (R::NotStarted, R::Cancelled) | (R::InProgress, R::Ended) => {
            Ok(end(state, EndReason::EndedByApi, now))
        }
        _ => Err(ApiError::InvalidTransition {
            from: from.code(),
            to: target.code(),
        }),
    }
}

/// The one settle rule, run after every participant change. `cause` names what ended a call
/// that nobody answered (the last reject, ring-out, busy attempt or cancel).
pub fn settle(state: &mut CallState, cause: EndReason, now: Now) {
    let joined = state.count(P::Joined);
    let ringing = state.count(P::Ringing);
    match state.room.status {
        R::NotStarted => {
            let creator_joined = state
                .row(&state.room.creator)
                .is_some_and(|p| p.status == P::Joined);
            if !creator_joined {
                finish(
                    state,
                    R::Cancelled,
                    EndReason::Cancelled,
                    P::Cancelled,
                    Reason::Cancelled,
                    now,
                );
            } else if ringing == 0 && joined <= 1 {
                // Nobody answered: the creator's row says so.
                state.move_all(P::Joined, P::HungUp, Reason::NoAnswer, now);
                state.set_room(R::Cancelled, Some(cause), now);
            }
        }
        R::InProgress => {
            if joined == 0 || (ringing == 0 && joined == 1) {
                finish(
                    state,
                    R::Ended,
                    EndReason::Completed,
                    P::Missed,
                    Reason::CallEnded,
                    now,
                );
            }
        }
        R::Ended | R::Cancelled => {}
    }
    state.refresh_deadline(now);
}

/// Applies every timeout that is due at `now`, as of the instant it fell due: invites past
/// their ring deadline ring out (4, `timeout`) and the room settles, a running call past its
/// `max_duration_seconds` or with one participant alone for `solo_timeout_seconds` ends, a
/// room at 0 that nobody rings closes once it waited as long as a ring would. The store runs
/// this wherever it loads a call, so every read and every action sees a deadline the second
/// it passes; the sweeper writes it down.
pub fn apply_deadlines(state: &mut CallState, now: Now) -> bool {
    let mut applied = false;
    while let Some(due) = state.room.deadline.filter(|d| *d <= now.at) {
        applied = true;
        let at = Now::from_datetime(due);
        let before = (
            state.room.status,
            state.count(P::Ringing),
            state.count(P::Joined),
        );
        let mut rang_out = false;
        for i in 0..state.rows.len() {
            let row = &state.rows[i];
            if row.status == P::Ringing && row.ring_deadline.is_some_and(|d| d <= due) {
                state.set_row(i, P::Missed, Some(Reason::Timeout), at);
                rang_out = true;
            }
        }
        let room = &state.room;
        let solo_due = room
            .solo_since
            .filter(|_| room.status == R::InProgress && room.solo_timeout_seconds > 0)
            .is_some_and(|since| plus_seconds(since, room.solo_timeout_seconds) <= due);
        let longest_due = room
            .started_at
            .filter(|_| room.status == R::InProgress && room.max_duration_seconds > 0)
            .is_some_and(|started| plus_seconds(started, room.max_duration_seconds) <= due);
        if solo_due {
            end(state, EndReason::SoloTimeout, at);
        } else if longest_due {
            end(state, EndReason::MaxDuration, at);
        } else if rang_out || state.room.status == R::NotStarted {
            settle(state, EndReason::Missed, at);
        }
        state.refresh_deadline(at);
        let after = (
            state.room.status,
            state.count(P::Ringing),
            state.count(P::Joined),
        );
        if before == after && state.room.deadline == Some(due) {
            // Nothing moved the deadline: never loop on it.
            break;
        }
    }
    applied
}

/// An event from LiveKit is stale when it happened before the second of the last change.
pub fn is_stale(last_change: chrono::NaiveDateTime, event_secs: i64) -> bool {
    event_secs < last_change.and_utc().timestamp()
}

/// participant_joined: presence is a fact, not a request. No invite or capacity checks
/// (the API enforced those when it issued the token); the room must not be final (the store
/// asks LiveKit to delete a final room instead), a removed uid is not let back in (the
/// store asks LiveKit to remove it again), and stale events change nothing.
pub fn presence_joined(state: &mut CallState, uid: &str, event_secs: i64, now: Now) -> bool {
    let Some(i) = state.row_index(uid) else {
        return false;
    };
    let row = &state.rows[i];
    if state.room.status.is_final()
        || row.status == P::Joined
        || row.reason == Some(Reason::Removed)
        || is_stale(row.updated_at, event_secs)
    {
        return false;
    }
    state.set_row(i, P::Joined, None, now);
    state.rows[i].join_time = event_secs.saturating_mul(1000);
    if uid != state.room.creator && state.room.status == R::NotStarted {
        state.set_room(R::InProgress, None, now);
    }
    settle(state, EndReason::Missed, now);
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
    state.set_row(i, P::HungUp, Some(Reason::HungUp), now);
    settle(state, EndReason::Cancelled, now);
    true
}

/// LiveKit saw `uid` join another room: its live row here closes (ringing → busy,
/// joined → hung up, both `answered_elsewhere`) and this room settles.
pub fn close_elsewhere(state: &mut CallState, uid: &str, now: Now) -> bool {
    let Some(i) = state.row_index(uid) else {
        return false;
    };
    let to = match state.rows[i].status {
        P::Ringing => P::Busy,
        P::Joined => P::HungUp,
        _ => return false,
    };
    state.set_row(i, to, Some(Reason::AnsweredElsewhere), now);
    settle(state, EndReason::Busy, now);
    true
}

/// Move a room to a final status: nobody stays live in it.
fn finish(
    state: &mut CallState,
    room_status: R,
    room_reason: EndReason,
    ringing_to: P,
    ringing_reason: Reason,
    now: Now,
) {
    state.move_all(P::Ringing, ringing_to, ringing_reason, now);
    state.move_all(P::Joined, P::HungUp, Reason::CallEnded, now);
    state.set_room(room_status, Some(room_reason), now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndReason as E, Reason as W, Room};

    fn now(ms: i64) -> Now {
        Now::from_millis(1_700_000_000_000 + ms).expect("valid instant")
    }

    fn secs(s: i64) -> Now {
        now(s * 1000)
    }

    fn room(max: i32, invite_on: i16) -> Room {
        let t = now(0);
        Room {
            id: 1,
            creator: "alice".into(),
            room_name: "r1".into(),
            call_type: 1,
            invite_on,
            max_participants: max,
            status: R::NotStarted,
            created_at: t.at,
            updated_at: t.at,
            ring_timeout_seconds: 30,
            ..Room::default()
        }
    }

    fn call(invitees: &[&str]) -> CallState {
        let uids: Vec<String> = invitees.iter().map(|s| s.to_string()).collect();
        let mut state = new_call(room(5, 1), &uids, now(0));
        state.changed_rows.clear();
        state.room_changed = false;
        state.touched.clear();
        state
    }

    fn status_of(state: &CallState, uid: &str) -> Option<P> {
        state.row(uid).map(|p| p.status)
    }

    fn reason_of(state: &CallState, uid: &str) -> Option<W> {
        state.row(uid).and_then(|p| p.reason)
    }

    fn act(state: &mut CallState, uid: &str, action: Action, at: Now) {
        apply_action(state, uid, action, at).unwrap_or_else(|e| panic!("{action:?} {uid}: {e}"));
    }

    #[test]
    fn create_joins_the_creator_and_rings_invitees_until_their_deadline() {
        let state = new_call(room(2, 1), &["bob".into()], now(0));
        assert_eq!(status_of(&state, "alice"), Some(P::Joined));
        assert_eq!(status_of(&state, "bob"), Some(P::Ringing));
        assert_eq!(state.changed_rows().count(), 2);
        assert_eq!(state.rows[0].join_time, now(0).ms);
        let bob = state.row("bob").expect("bob");
        assert_eq!(bob.invited_at, Some(now(0).at));
        assert_eq!(bob.ring_deadline, Some(secs(30).at));
        assert_eq!(state.room.deadline, Some(secs(30).at));
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
    fn answering_starts_the_call_and_records_the_ring_time() {
        let mut state = call(&["bob"]);
        let applied = apply_action(&mut state, "bob", Action::Join, secs(5)).expect("join");
        assert!(applied.changed);
        assert_eq!(state.room.status, R::InProgress);
        assert_eq!(state.room.started_at, Some(secs(5).at));
        assert_eq!(state.rows[applied.row].join_time, secs(5).ms);
        assert_eq!(state.rows[applied.row].ring_seconds, 5);
        assert_eq!(state.rows[applied.row].ring_deadline, None);
        assert!(state.room_changed());
    }

    #[test]
    fn joining_twice_is_idempotent() {
        let mut state = call(&["bob"]);
        act(&mut state, "bob", Action::Join, now(5));
        let again = apply_action(&mut state, "bob", Action::Join, now(9)).expect("join again");
        assert!(!again.changed);
        assert_eq!(state.rows[again.row].join_time, now(5).ms);
    }

    #[test]
    fn a_two_person_call_completes_when_either_side_leaves_with_its_durations() {
        let mut state = call(&["bob"]);
        act(&mut state, "bob", Action::Join, secs(5));
        act(&mut state, "bob", Action::Leave, secs(65));
        assert_eq!(state.room.status, R::Ended);
        assert_eq!(state.room.end_reason, Some(E::Completed));
        assert_eq!(state.room.ended_at, Some(secs(65).at));
        assert_eq!(state.room.duration_seconds, 60);
        assert_eq!(
            (status_of(&state, "bob"), reason_of(&state, "bob")),
            (Some(P::HungUp), Some(W::HungUp))
        );
        assert_eq!(
            (status_of(&state, "alice"), reason_of(&state, "alice")),
            (Some(P::HungUp), Some(W::CallEnded))
        );
        assert_eq!(state.row("bob").map(|p| p.talk_seconds), Some(60));
        assert_eq!(state.row("alice").map(|p| p.talk_seconds), Some(65));
        assert_eq!(state.row("alice").map(|p| p.leave_time), Some(secs(65).ms));
        assert_eq!(state.room.deadline, None, "a final room has no deadline");
    }

    #[test]
    fn talk_time_is_summed_over_rejoins() {
        let mut state = call(&["bob", "carol"]);
        act(&mut state, "bob", Action::Join, secs(1));
        act(&mut state, "carol", Action::Join, secs(2));
        act(&mut state, "bob", Action::Leave, secs(11));
        act(&mut state, "bob", Action::Join, secs(20));
        act(&mut state, "bob", Action::Leave, secs(25));
        assert_eq!(state.row("bob").map(|p| p.talk_seconds), Some(15));
    }

    #[test]
    fn a_group_call_runs_while_someone_still_rings() {
        let mut state = call(&["bob", "carol"]);
        act(&mut state, "bob", Action::Join, now(5));
        act(&mut state, "bob", Action::Leave, now(6));
        assert_eq!(state.room.status, R::InProgress);
        act(&mut state, "carol", Action::Reject, now(7));
        assert_eq!(state.room.status, R::Ended);
        assert_eq!(state.room.end_reason, Some(E::Completed));
        assert_eq!(status_of(&state, "alice"), Some(P::HungUp));
    }

    /// Every way a call at 0 closes, with the room's and the rows' reasons.
    #[test]
    fn a_call_nobody_answers_says_why_it_closed() {
        type Step = (&'static str, Action);
        type Case = (
            &'static str,
            &'static [&'static str],
            &'static [Step],
            E,
            &'static [(&'static str, P, W)],
        );
        let cases: [Case; 5] = [
            (
                "the only invitee rejects",
                &["bob"],
                &[("bob", Action::Reject)],
                E::Declined,
                &[
                    ("alice", P::HungUp, W::NoAnswer),
                    ("bob", P::Rejected, W::Declined),
                ],
            ),
            (
                "the invitee is busy (service PUT 5)",
                &["bob"],
                &[("bob", Action::Busy)],
                E::Busy,
                &[("alice", P::HungUp, W::NoAnswer), ("bob", P::Busy, W::Busy)],
            ),
            (
                "the service rings it out (PUT 4)",
                &["bob"],
                &[("bob", Action::RingOut)],
                E::Missed,
                &[
                    ("alice", P::HungUp, W::NoAnswer),
                    ("bob", P::Missed, W::Timeout),
                ],
            ),
            (
                "the creator cancels the last invite",
                &["bob", "carol"],
                &[("bob", Action::Reject), ("carol", Action::Cancel)],
                E::Cancelled,
                &[
                    ("alice", P::HungUp, W::NoAnswer),
                    ("bob", P::Rejected, W::Declined),
                    ("carol", P::Cancelled, W::Cancelled),
                ],
            ),
            (
                "the creator hangs up before an answer",
                &["bob", "carol"],
                &[("alice", Action::Leave)],
                E::Cancelled,
                &[
                    ("alice", P::HungUp, W::HungUp),
                    ("bob", P::Cancelled, W::Cancelled),
                    ("carol", P::Cancelled, W::Cancelled),
                ],
            ),
        ];
        for (name, invitees, steps, room_reason, rows) in cases {
            let mut state = call(invitees);
            for (i, (uid, action)) in steps.iter().enumerate() {
                act(&mut state, uid, *action, secs(i as i64 + 1));
            }
            assert_eq!(state.room.status, R::Cancelled, "{name}");
            assert_eq!(state.room.end_reason, Some(room_reason), "{name}");
            assert_eq!(state.room.duration_seconds, 0, "{name}: it never ran");
            for (uid, status, reason) in rows {
                assert_eq!(
                    (status_of(&state, uid), reason_of(&state, uid)),
                    (Some(*status), Some(*reason)),
                    "{name}: {uid}"
                );
            }
        }
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
        act(&mut state, "bob", Action::Join, now(1));
        let err = apply_action(&mut state, "carol", Action::Join, now(2));
        assert_eq!(err, Err(ApiError::RoomFull));
    }

    #[test]
    fn final_rooms_cannot_be_joined() {
        let mut state = call(&["bob"]);
        end(&mut state, E::EndedByApi, now(1));
        assert_eq!(state.room.status, R::Cancelled);
        assert_eq!(state.room.end_reason, Some(E::EndedByApi));
        assert_eq!(status_of(&state, "bob"), Some(P::Cancelled));
        let err = apply_action(&mut state, "bob", Action::Join, now(2));
        assert_eq!(err, Err(ApiError::RoomNotActive));
    }

    #[test]
    fn ending_a_running_call_marks_ringing_rows_missed() {
        let mut state = call(&["bob", "carol"]);
        act(&mut state, "bob", Action::Join, now(1));
        assert!(end(&mut state, E::EndedByApi, now(2)));
        assert_eq!(state.room.status, R::Ended);
        assert_eq!(
            (status_of(&state, "carol"), reason_of(&state, "carol")),
            (Some(P::Missed), Some(W::CallEnded))
        );
        assert_eq!(
            (status_of(&state, "bob"), reason_of(&state, "bob")),
            (Some(P::HungUp), Some(W::CallEnded))
        );
    }

    #[test]
    fn a_room_livekit_finished_or_lost_ends_as_gone_from_livekit() {
        // Running: joined rows hang up, ringing ones miss the call.
        let mut running = call(&["bob", "carol"]);
        act(&mut running, "bob", Action::Join, secs(1));
        assert!(end(&mut running, E::GoneFromLivekit, secs(61)));
        assert_eq!(
            (running.room.status, running.room.end_reason),
            (R::Ended, Some(E::GoneFromLivekit))
        );
        assert_eq!(
            (status_of(&running, "carol"), reason_of(&running, "carol")),
            (Some(P::Missed), Some(W::CallEnded))
        );
        assert_eq!(running.room.duration_seconds, 60);
        // Never started: cancelled, invites cancelled.
        let mut ringing = call(&["bob"]);
        assert!(end(&mut ringing, E::GoneFromLivekit, secs(1)));
        assert_eq!(
            (ringing.room.status, ringing.room.end_reason),
            (R::Cancelled, Some(E::GoneFromLivekit))
        );
        assert_eq!(
            (status_of(&ringing, "bob"), reason_of(&ringing, "bob")),
            (Some(P::Cancelled), Some(W::Cancelled))
        );
    }

    #[test]
    fn ending_a_final_room_changes_nothing() {
        let mut state = call(&["bob"]);
        end(&mut state, E::EndedByApi, now(1));
        let mut again = CallState::new(state.room.clone(), state.rows.clone());
        assert!(!end(&mut again, E::EndedByApi, now(2)));
        assert_eq!(again.room.end_reason, Some(E::EndedByApi));
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
        act(&mut state, "bob", Action::Join, now(1));
        let busy: HashSet<String> = ["dave".to_string()].into();
        let uids = ["bob", "carol", "dave"].map(String::from);
        let rows = invite(&mut state, &uids, &busy, now(2)).expect("invite");
        let statuses: Vec<P> = rows.iter().map(|i| state.rows[*i].status).collect();
        assert_eq!(statuses, vec![P::Joined, P::Ringing, P::Busy]);
        assert_eq!(reason_of(&state, "dave"), Some(W::Busy));
        assert_eq!(state.row("dave").map(|p| p.ring_seconds), Some(0));
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
        assert_eq!(state.room.end_reason, Some(E::EndedByApi));
    }

    #[test]
    fn a_ring_deadline_rings_out_at_its_second_and_closes_a_call_nobody_answered() {
        let mut state = call(&["bob"]);
        assert!(
            !apply_deadlines(&mut state, secs(29)),
            "one second early: nothing"
        );
        assert_eq!(status_of(&state, "bob"), Some(P::Ringing));
        assert!(apply_deadlines(&mut state, secs(30)));
        assert_eq!(
            (status_of(&state, "bob"), reason_of(&state, "bob")),
            (Some(P::Missed), Some(W::Timeout))
        );
        assert_eq!(state.row("bob").map(|p| p.ring_seconds), Some(30));
        assert_eq!(state.room.status, R::Cancelled);
        assert_eq!(state.room.end_reason, Some(E::Missed));
        assert_eq!(state.room.ended_at, Some(secs(30).at), "as of the deadline");
        assert_eq!(
            (status_of(&state, "alice"), reason_of(&state, "alice")),
            (Some(P::HungUp), Some(W::NoAnswer))
        );
        let err = apply_action(&mut state, "bob", Action::Join, secs(31));
        assert_eq!(err, Err(ApiError::RoomNotActive), "a late join is refused");
    }

    #[test]
    fn in_a_running_group_call_a_missed_invitee_may_still_join() {
        let mut state = call(&["bob", "carol"]);
        act(&mut state, "bob", Action::Join, secs(2));
        apply_deadlines(&mut state, secs(40));
        assert_eq!(state.room.status, R::InProgress);
        assert_eq!(status_of(&state, "carol"), Some(P::Missed));
        act(&mut state, "carol", Action::Join, secs(41));
        assert_eq!(status_of(&state, "carol"), Some(P::Joined));
    }

    #[test]
    fn ringing_again_restarts_the_ring_deadline() {
        let mut state = call(&["bob", "carol"]);
        act(&mut state, "bob", Action::Join, secs(1));
        act(&mut state, "carol", Action::Reject, secs(2));
        // bob and alice talk; carol is rung again at 20 s and rings until 50 s.
        invite(&mut state, &["carol".to_owned()], &HashSet::new(), secs(20)).expect("invite");
        assert_eq!(state.room.deadline, Some(secs(50).at));
        assert!(!apply_deadlines(&mut state, secs(49)));
        assert!(apply_deadlines(&mut state, secs(50)));
        assert_eq!(status_of(&state, "carol"), Some(P::Missed));
        assert_eq!(state.row("carol").map(|p| p.ring_seconds), Some(2 + 30));
    }

    #[test]
    fn a_call_ends_at_its_longest_duration() {
        let mut state = call(&["bob"]);
        state.room.max_duration_seconds = 60;
        act(&mut state, "bob", Action::Join, secs(10));
        assert_eq!(state.room.deadline, Some(secs(70).at));
        assert!(!apply_deadlines(&mut state, secs(69)));
        assert!(apply_deadlines(&mut state, secs(75)));
        assert_eq!(state.room.status, R::Ended);
        assert_eq!(state.room.end_reason, Some(E::MaxDuration));
        assert_eq!(state.room.ended_at, Some(secs(70).at));
        assert_eq!(state.room.duration_seconds, 60);
        assert_eq!(reason_of(&state, "bob"), Some(W::CallEnded));
    }

    #[test]
    fn a_participant_alone_too_long_ends_the_call() {
        let mut state = call(&["bob", "carol"]);
        state.room.solo_timeout_seconds = 20;
        act(&mut state, "bob", Action::Join, secs(1));
        act(&mut state, "carol", Action::Join, secs(2));
        act(&mut state, "alice", Action::Leave, secs(5));
        act(&mut state, "bob", Action::Leave, secs(6));
        // carol is alone from 6 s: the call would have ended (R = 0, J = 1) already...
        assert_eq!(state.room.status, R::Ended);
        // ...so make a group call where someone still rings while one is alone.
        let mut state = call(&["bob", "carol", "dave"]);
        state.room.solo_timeout_seconds = 20;
        act(&mut state, "bob", Action::Join, secs(1));
        act(&mut state, "alice", Action::Leave, secs(3));
        assert_eq!(
            state.room.status,
            R::InProgress,
            "carol and dave still ring"
        );
        assert_eq!(state.room.solo_since, Some(secs(3).at));
        assert_eq!(
            state.room.deadline,
            Some(secs(23).at),
            "before the rings end at 30 s"
        );
        assert!(apply_deadlines(&mut state, secs(23)));
        assert_eq!(state.room.status, R::Ended);
        assert_eq!(state.room.end_reason, Some(E::SoloTimeout));
        assert_eq!(
            (status_of(&state, "carol"), reason_of(&state, "carol")),
            (Some(P::Missed), Some(W::CallEnded))
        );
    }

    #[test]
    fn a_room_nobody_rings_closes_after_a_ring_timeout() {
        let mut state = new_call(room(5, 0), &[], now(0));
        assert_eq!(state.room.deadline, Some(secs(30).at));
        assert!(!apply_deadlines(&mut state, secs(29)));
        assert!(apply_deadlines(&mut state, secs(30)));
        assert_eq!(state.room.status, R::Cancelled);
        assert_eq!(state.room.end_reason, Some(E::Missed));
    }

    #[test]
    fn a_removed_participant_leaves_with_its_reason_and_cannot_join_again() {
        let mut state = call(&["bob", "carol"]);
        act(&mut state, "bob", Action::Join, secs(1));
        act(&mut state, "carol", Action::Join, secs(2));
        act(&mut state, "carol", Action::Remove, secs(12));
        assert_eq!(
            (status_of(&state, "carol"), reason_of(&state, "carol")),
            (Some(P::HungUp), Some(W::Removed))
        );
        assert_eq!(state.row("carol").map(|p| p.talk_seconds), Some(10));
        let again = apply_action(&mut state, "carol", Action::Remove, secs(13)).expect("again");
        assert!(!again.changed, "removing again changes nothing");
        let err = apply_action(&mut state, "carol", Action::Join, secs(14));
        assert_eq!(err, Err(ApiError::ParticipantRemoved));
        // Ringing them again is the creator's explicit wish: then they may join.
        invite(&mut state, &["carol".to_owned()], &HashSet::new(), secs(15)).expect("invite");
        act(&mut state, "carol", Action::Join, secs(16));
    }

    #[test]
    fn presence_elsewhere_closes_the_row_as_answered_elsewhere() {
        let mut state = call(&["bob"]);
        assert!(close_elsewhere(&mut state, "bob", secs(3)));
        assert_eq!(
            (status_of(&state, "bob"), reason_of(&state, "bob")),
            (Some(P::Busy), Some(W::AnsweredElsewhere))
        );
        assert_eq!(state.room.end_reason, Some(E::Busy));
    }
}
