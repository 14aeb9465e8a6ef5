//! The call transactions: create, participant actions, invite, end and the room status PUT.

use std::collections::HashSet;

use super::idempotency::{seal, store_in};
use super::*;

impl Store {
    /// Create: the room, the creator joined and the invitees ringing, in one transaction.
    pub async fn create_room(
        &self,
        new: &NewRoom,
        invitees: &[String],
        now: Now,
    ) -> Result<CallState, ApiError> {
        Ok(self.create_room_sealed(new, invitees, now, None).await?.0)
    }

    /// [`Store::create_room`], storing a keyed request's answer in the same transaction.
    pub async fn create_room_sealed(
        &self,
        new: &NewRoom,
        invitees: &[String],
        now: Now,
        sealing: Option<Seal<'_, CallState>>,
    ) -> Result<(CallState, Option<StoredReply>), ApiError> {
        retrying(|| {
            self.with_conn(async |conn: &mut DbConnection| {
                let created = in_transaction(conn, async |tx| {
                    let state =
                        insert_call(tx, new, invitees, now, self.teardown, &self.outbox).await?;
                    let reply = seal(tx, sealing, &state).await?;
                    Ok((state, reply))
                })
                .await;
                match created {
                    // Name the open room, now that the refused transaction is over.
                    Err(TxError::Api(ApiError::ChannelHasActiveRoom { .. })) => {
                        let room_name = active_room_of_channel(conn, new).await?;
                        Err(ApiError::ChannelHasActiveRoom {
                            room_name: room_name.unwrap_or_default(),
                        }
                        .into())
                    }
                    other => other,
                }
            })
        })
        .await
    }

    /// One participant action in one transaction, then the settle rule.
    /// `guard` sees the locked call first and may refuse the caller.
    pub async fn participant_action(
        &self,
        room_name: &str,
        uid: &str,
        action: Action,
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
    ) -> Result<ActionResult, ApiError> {
        let done = self
            .participant_action_sealed(room_name, uid, action, now, guard, None)
            .await?;
        Ok(done.0)
    }

    /// [`Store::participant_action`], storing a keyed request's answer in the same
    /// transaction.
    pub async fn participant_action_sealed(
        &self,
        room_name: &str,
        uid: &str,
        action: Action,
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
        sealing: Option<Seal<'_, ActionResult>>,
    ) -> Result<(ActionResult, Option<StoredReply>), ApiError> {
        // Ringing again records a uid live elsewhere as busy, so it needs to know.
        let ring_target = [uid.to_owned()];
        let change = Change {
            room_name,
            check_busy: if action == Action::RingAgain {
                &ring_target
            } else {
                &[]
            },
            // A join that meets the uid's live row elsewhere is refused; a ring again that
            // does is retried, and the next attempt records the uid as busy.
            live_conflict: (action == Action::Join).then_some(uid),
            teardown: true,
            now,
        };
        let result = |state: &CallState, applied: &rules::Applied, finalised: bool| ActionResult {
            participant: state.rows[applied.row].clone(),
            changed: applied.changed || state.is_changed(),
            room: state.room.clone(),
            finalised,
        };
        let (state, applied, finalised, reply) = self
            .change_call(
                change,
                |state, busy| {
                    guard(state)?;
                    match action {
                        Action::RingAgain => rules::ring_again(state, uid, busy.contains(uid), now),
                        _ => rules::apply_action(state, uid, action, now),
                    }
                },
                sealing.map(|s| {
                    (
                        s.claim,
                        move |state: &CallState, applied: &rules::Applied, finalised: bool| {
                            (s.reply)(&result(state, applied, finalised))
                        },
                    )
                }),
            )
            .await?;
        Ok((result(&state, &applied, finalised), reply))
    }

    /// Ring each uid again; uids live in another call are recorded as busy.
    pub async fn invite(
        &self,
        room_name: &str,
        uids: &[String],
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
    ) -> Result<Invited, ApiError> {
        Ok(self
            .invite_sealed(room_name, uids, now, guard, None)
            .await?
            .0)
    }

    /// [`Store::invite`], storing a keyed request's answer in the same transaction.
    pub async fn invite_sealed(
        &self,
        room_name: &str,
        uids: &[String],
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
        sealing: Option<Seal<'_, Invited>>,
    ) -> Result<(Invited, Option<StoredReply>), ApiError> {
        let change = Change {
            room_name,
            check_busy: uids,
            live_conflict: None,
            teardown: true,
            now,
        };
        let result = |state: &CallState, concerned: &Vec<usize>, finalised: bool| {
            let rows = concerned.iter().map(|i| state.rows[*i].clone()).collect();
            (state.room.clone(), rows, finalised)
        };
        let (state, concerned, finalised, reply) = self
            .change_call(
                change,
                |state, busy| {
                    guard(state)?;
                    rules::invite(state, uids, busy, now)
                },
                sealing.map(|s| {
                    (
                        s.claim,
                        move |state: &CallState, concerned: &Vec<usize>, finalised| {
                            (s.reply)(&result(state, concerned, finalised))
                        },
                    )
                }),
            )
            .await?;
        Ok((result(&state, &concerned, finalised), reply))
    }

    pub async fn end_room(
        &self,
        room_name: &str,
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
    ) -> Result<RoomResult, ApiError> {
        Ok(self.end_room_sealed(room_name, now, guard, None).await?.0)
    }

    /// [`Store::end_room`], storing a keyed request's answer in the same transaction.
    pub async fn end_room_sealed(
        &self,
        room_name: &str,
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
        sealing: Option<Seal<'_, RoomResult>>,
    ) -> Result<(RoomResult, Option<StoredReply>), ApiError> {
        self.room_change_sealed(
            room_name,
            now,
            |state| {
                guard(state)?;
                Ok(rules::end(state, EndReason::EndedByApi, now))
            },
            sealing,
        )
        .await
    }

    pub async fn set_room_status(
        &self,
        room_name: &str,
        status: RoomStatus,
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
    ) -> Result<RoomResult, ApiError> {
        self.room_change(room_name, now, |state| {
            guard(state)?;
            rules::set_room_status(state, status, now)
        })
        .await
    }

    pub(super) async fn room_change(
        &self,
        room_name: &str,
        now: Now,
        change: impl Fn(&mut CallState) -> Result<bool, ApiError>,
    ) -> Result<RoomResult, ApiError> {
        Ok(self
            .room_change_sealed(room_name, now, change, None)
            .await?
            .0)
    }

    async fn room_change_sealed(
        &self,
        room_name: &str,
        now: Now,
        change: impl Fn(&mut CallState) -> Result<bool, ApiError>,
        sealing: Option<Seal<'_, RoomResult>>,
    ) -> Result<(RoomResult, Option<StoredReply>), ApiError> {
        let spec = Change {
            room_name,
            check_busy: &[],
            live_conflict: None,
            teardown: true,
            now,
        };
        let result = |state: &CallState, changed: &bool, finalised: bool| RoomResult {
            changed: *changed || state.is_changed(),
            room: state.room.clone(),
            finalised,
        };
        let (state, changed, finalised, reply) = self
            .change_call(
                spec,
                |state, _| change(state),
                sealing.map(|s| {
                    (
                        s.claim,
                        move |state: &CallState, changed: &bool, finalised| {
                            (s.reply)(&result(state, changed, finalised))
                        },
                    )
                }),
            )
            .await?;
        Ok((result(&state, &changed, finalised), reply))
    }

    /// The one shape of every call transaction: lock the room and its rows, let a rule change
    /// them in memory, write back what changed, commit; retried on deadlocks and races.
    /// Returns the state after the change, the rule's answer and whether the room became final.
    pub(super) async fn change_call<T, F>(
        &self,
        spec: Change<'_>,
        rule: impl Fn(&mut CallState, &HashSet<String>) -> Result<T, ApiError>,
        sealing: Option<(&KeyClaim, F)>,
    ) -> Result<(CallState, T, bool, Option<StoredReply>), ApiError>
    where
        F: Fn(&CallState, &T, bool) -> Result<StoredReply, ApiError>,
    {
        retrying(|| {
            self.with_conn(async |conn: &mut DbConnection| {
                in_transaction(conn, async |tx| {
                    let (state, answer, finalised) = self.apply_change(tx, &spec, &rule).await?;
                    let reply = match &sealing {
                        Some((claim, render)) => {
                            let reply = render(&state, &answer, finalised)?;
                            store_in(tx, claim, &reply).await?;
                            Some(reply)
                        }
                        None => None,
                    };
                    Ok((state, answer, finalised, reply))
                })
                .await
            })
        })
        .await
    }

    /// One attempt's work inside the transaction: lock, apply the rule, write back.
    async fn apply_change<T>(
        &self,
        tx: &mut Tx<'_>,
        spec: &Change<'_>,
        rule: &impl Fn(&mut CallState, &HashSet<String>) -> Result<T, ApiError>,
    ) -> Result<(CallState, T, bool), TxError> {
        let mut state = lock_call(tx, spec.room_name, spec.now)
            .await?
            .ok_or(ApiError::RoomNotFound)?;
        let mut busy = live_uids(tx, spec.check_busy, Some(spec.room_name)).await?;
        if !busy.is_empty() {
            let live: Vec<String> = busy.iter().cloned().collect();
            let room = Some(spec.room_name);
            if settle_due_elsewhere(tx, &live, room, spec.now, self.teardown, &self.outbox).await? {
                busy = live_uids(tx, spec.check_busy, room).await?;
            }
        }
        // Final as loaded, before the deadlines applied at load: a room they
        // closed is finalised by this transaction too.
        let was_final = state.was_final_when_loaded();
        let answer = rule(&mut state, &busy)?;
        let finalised = !was_final && state.room.status.is_final();
        if !state.is_changed() {
            return Ok((state, answer, finalised));
        }
        match write_back(tx, &mut state, &self.outbox, spec.now).await {
            // The uid rings or talks in another call, says the database: unless
            // that call's deadline has passed (then it is free once written down).
            Err(err) if unique_violation(&err) == Some(UniqueKey::LiveUid) => {
                let Some(uid) = spec.live_conflict else {
                    return Err(err.into());
                };
                let uids = [uid.to_owned()];
                let room = Some(spec.room_name);
                let busy = || ApiError::ParticipantInCall {
                    busy_uids: vec![uid.to_owned()],
                };
                if !settle_due_elsewhere(tx, &uids, room, spec.now, self.teardown, &self.outbox)
                    .await?
                {
                    return Err(busy().into());
                }
                match write_back(tx, &mut state, &self.outbox, spec.now).await {
                    Err(err) if unique_violation(&err) == Some(UniqueKey::LiveUid) => {
                        return Err(busy().into());
                    }
                    other => other?,
                }
            }
            other => other?,
        }
        if self.teardown {
            if finalised && spec.teardown {
                queue_teardown(tx, &state.room.room_name, state.room.updated_at).await?;
            }
            // Whoever this change took out of the call leaves LiveKit too.
            let removed: Vec<String> = state
                .changed_rows()
                .filter(|p| p.reason == Some(Reason::Removed))
                .map(|p| p.uid.clone())
                .collect();
            for uid in removed {
                queue_removal(tx, &state.room.room_name, &uid, spec.now).await?;
            }
        }
        Ok((state, answer, finalised))
    }
}

/// What an invite answers: the room, the rows it concerned and whether the room became final.
pub type Invited = (Room, Vec<Participant>, bool);

/// Renders a change's answer from the state after it, the rule's answer and whether the room
/// became final.
pub(super) type Render<T> = fn(&CallState, &T, bool) -> Result<StoredReply, ApiError>;

/// No answer to store beside the change (a request without a key, the sweeper, webhooks).
pub(super) fn unsealed<T>() -> Option<(&'static KeyClaim, Render<T>)> {
    None
}

/// How one call transaction behaves around its rule.
pub(super) struct Change<'a> {
    pub(super) room_name: &'a str,
    /// uids whose liveness elsewhere the rule needs (invite).
    pub(super) check_busy: &'a [String],
    /// A live-row conflict on write means this uid is in another call (join).
    pub(super) live_conflict: Option<&'a str>,
    /// Queue a LiveKit DeleteRoom when the room becomes final.
    pub(super) teardown: bool,
    /// The instant of the change: deadlines due by then are applied first.
    pub(super) now: Now,
}

/// Create's one transaction: the room, the creator joined and the invitees ringing. Refused
/// before anything is written when the creator or an invitee is live elsewhere.
async fn insert_call(
    tx: &mut Tx<'_>,
    new: &NewRoom,
    invitees: &[String],
    now: Now,
    teardown: bool,
    outbox: &Outbox,
) -> Result<CallState, TxError> {
    let mut everyone = vec![new.creator.clone()];
    everyone.extend(invitees.iter().cloned());
    let mut busy = live_uids(tx, &everyone, None).await?;
    if !busy.is_empty() {
        let live: Vec<String> = busy.iter().cloned().collect();
        if settle_due_elsewhere(tx, &live, None, now, teardown, outbox).await? {
            busy = live_uids(tx, &everyone, None).await?;
        }
    }
    if busy.contains(&new.creator) {
        return Err(ApiError::CreatorInAnotherCall.into());
    }
    if !busy.is_empty() {
        let busy_uids = invitees
            .iter()
            .filter(|u| busy.contains(*u))
            .cloned()
            .collect();
        return Err(ApiError::ParticipantInCall { busy_uids }.into());
    }
    let room = Room {
        source_channel_id: new.source_channel_id.clone(),
        source_channel_type: new.source_channel_type,
        creator: new.creator.clone(),
        room_name: new.room_name.clone(),
        call_type: new.call_type,
        invite_on: new.invite_on,
        max_participants: new.max_participants,
        status: RoomStatus::NotStarted,
        created_at: now.at,
        updated_at: now.at,
        ring_timeout_seconds: new.limits.ring_timeout_seconds,
        max_duration_seconds: new.limits.max_duration_seconds,
        solo_timeout_seconds: new.limits.solo_timeout_seconds,
        ..Room::default()
    };
    // The rows decide the room's first deadline, so the rules run before the insert; its
    // events (room.created, then each row) are counted in now and written after the rows.
    let mut state = rules::new_call(room, invitees, now);
    state.room.event_seq = crate::events::count(&state, true) as i64;
    let room = &state.room;
    let inserted = sqlx::query(
        "INSERT INTO call_room (source_channel_id, source_channel_type, creator, room_name, \
         call_type, invite_on, max_participants, status, created_at, updated_at, \
         ring_timeout_seconds, max_duration_seconds, solo_timeout_seconds, deadline, \
         event_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&room.source_channel_id)
    .bind(room.source_channel_type)
    .bind(&room.creator)
    .bind(&room.room_name)
    .bind(room.call_type)
    .bind(room.invite_on)
    .bind(room.max_participants)
    .bind(room.status.code())
    .bind(room.created_at)
    .bind(room.updated_at)
    .bind(room.ring_timeout_seconds)
    .bind(room.max_duration_seconds)
    .bind(room.solo_timeout_seconds)
    .bind(room.deadline)
    .bind(room.event_seq)
    .execute(&mut **tx)
    .await;
    state.room.id = match inserted {
        Ok(result) => {
            let id = backend::last_insert_id(&result);
            tx.counts.inserted(id, room.status);
            id
        }
        Err(err) if unique_violation(&err) == Some(UniqueKey::LiveChannel) => {
            // The caller names the open room once this transaction is rolled back.
            return Err(ApiError::ChannelHasActiveRoom {
                room_name: String::new(),
            }
            .into());
        }
        Err(err) => return Err(err.into()),
    };
    write_rows(tx, &mut state).await?;
    let events = crate::events::derive(&state, true);
    write_events(tx, &state.room, 1, &events, outbox, now).await?;
    state.forget_touched();
    Ok(state)
}

async fn active_room_of_channel(
    conn: &mut DbConnection,
    new: &NewRoom,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT room_name FROM call_room WHERE source_channel_type = ? \
         AND source_channel_id = ? AND status IN (0, 1) LIMIT 1",
    )
    .bind(new.source_channel_type)
    .bind(&new.source_channel_id)
    .fetch_optional(conn)
    .await
}
