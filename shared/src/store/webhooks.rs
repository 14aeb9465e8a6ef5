//! LiveKit webhook events, applied in one transaction with their event id.

use super::*;
use crate::model::{WebhookEvent, WebhookKind};

impl Store {
    /// Applies one verified LiveKit webhook event. The event id is recorded in the same
    /// transaction as its effect, so a failed attempt leaves nothing behind and LiveKit's
    /// retry is processed, while a repeated id changes nothing.
    pub async fn apply_webhook(
        &self,
        event: &WebhookEvent,
        now: Now,
    ) -> Result<WebhookOutcome, ApiError> {
        retrying(|| {
            self.with_conn(async |conn: &mut DbConnection| {
                in_transaction(conn, async |tx| self.apply_webhook_in(tx, event, now).await).await
            })
        })
        .await
    }

    async fn apply_webhook_in(
        &self,
        tx: &mut Tx<'_>,
        event: &WebhookEvent,
        now: Now,
    ) -> Result<WebhookOutcome, TxError> {
        let recorded = sqlx::query("INSERT INTO webhook_event (id, received_at) VALUES (?, ?)")
            .bind(&event.id)
            .bind(now.at)
            .execute(&mut **tx)
            .await;
        if let Err(err) = recorded {
            return match err.as_database_error().map(|e| e.kind()) {
                Some(sqlx::error::ErrorKind::UniqueViolation) => Ok(WebhookOutcome::Duplicate),
                _ => Err(err.into()),
            };
        }
        let Some(mut state) = lock_call(tx, &event.room_name, now).await? else {
            return Ok(WebhookOutcome::Ignored);
        };
        let outcome = match &event.kind {
            // Unknown uids are acknowledged and ignored.
            WebhookKind::ParticipantJoined { uid } | WebhookKind::ParticipantLeft { uid }
                if state.row(uid).is_none() =>
            {
                WebhookOutcome::Ignored
            }
            // Presence older than the row's last change says nothing about now: it neither
            // closes the uid's call elsewhere nor reopens a room that ended since.
            WebhookKind::ParticipantJoined { uid }
                if state
                    .row(uid)
                    .is_some_and(|row| rules::is_stale(row.updated_at, event.created_at)) =>
            {
                WebhookOutcome::Ignored
            }
            // Taken out of the call, yet LiveKit saw it join again (a token still valid).
            WebhookKind::ParticipantJoined { uid }
                if state
                    .row(uid)
                    .is_some_and(|row| row.reason == Some(Reason::Removed)) =>
            {
                if self.teardown {
                    queue_removal(tx, &state.room.room_name, uid, now).await?;
                }
                WebhookOutcome::RemoveAgain { uid: uid.clone() }
            }
            WebhookKind::ParticipantJoined { .. } if state.room.status.is_final() => {
                // A still-valid token reopened a finished room: close it again.
                if self.teardown {
                    queue_teardown(tx, &state.room.room_name, now.at).await?;
                }
                WebhookOutcome::DeleteAgain
            }
            WebhookKind::ParticipantJoined { uid } => {
                let (elsewhere, finalised) = self
                    .close_live_elsewhere(tx, uid, &state.room.room_name, now)
                    .await?;
                let changed = rules::presence_joined(&mut state, uid, event.created_at, now);
                if changed {
                    write_back(tx, &mut state, &self.outbox, now).await?;
                }
                if changed || !elsewhere.is_empty() {
                    WebhookOutcome::Applied {
                        rooms: elsewhere,
                        finalised,
                    }
                } else {
                    WebhookOutcome::Ignored
                }
            }
            WebhookKind::ParticipantLeft { uid } => {
                let was_final = state.was_final_when_loaded();
                if rules::presence_left(&mut state, uid, event.created_at, now) {
                    write_back(tx, &mut state, &self.outbox, now).await?;
                    let finalised = !was_final && state.room.status.is_final();
                    if finalised && self.teardown {
                        queue_teardown(tx, &state.room.room_name, now.at).await?;
                    }
                    WebhookOutcome::Applied {
                        rooms: Vec::new(),
                        finalised: if finalised {
                            vec![state.room.room_name.clone()]
                        } else {
                            Vec::new()
                        },
                    }
                } else {
                    WebhookOutcome::Ignored
                }
            }
            WebhookKind::RoomFinished => {
                // LiveKit already closed the room: no DeleteRoom for this one.
                if rules::is_stale(state.room.created_at, event.created_at)
                    || !rules::end(&mut state, EndReason::GoneFromLivekit, now)
                {
                    WebhookOutcome::Ignored
                } else {
                    write_back(tx, &mut state, &self.outbox, now).await?;
                    WebhookOutcome::Applied {
                        rooms: Vec::new(),
                        finalised: Vec::new(),
                    }
                }
            }
        };
        Ok(outcome)
    }

    /// LiveKit saw `uid` join `room_name`: its live row in any other room is closed and that
    /// room settles (the others locked in room_name order, see `lock_call`). Returns the rooms changed and those it made final (queued for teardown).
    async fn close_live_elsewhere(
        &self,
        tx: &mut Tx<'_>,
        uid: &str,
        room_name: &str,
        now: Now,
    ) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
        let others: Vec<String> = sqlx::query_scalar(
            "SELECT room_name FROM call_participant WHERE uid = ? AND status IN (0, 1) \
             AND room_name <> ? ORDER BY room_name",
        )
        .bind(uid)
        .bind(room_name)
        .fetch_all(&mut **tx)
        .await?;
        let (mut changed, mut finalised) = (Vec::new(), Vec::new());
        for other in others {
            let Some(mut state) = lock_call(tx, &other, now).await? else {
                continue;
            };
            let was_final = state.was_final_when_loaded();
            if rules::close_elsewhere(&mut state, uid, now) {
                write_back(tx, &mut state, &self.outbox, now).await?;
                if !was_final && state.room.status.is_final() {
                    if self.teardown {
                        queue_teardown(tx, &other, now.at).await?;
                    }
                    finalised.push(other.clone());
                }
                changed.push(other);
            }
        }
        Ok((changed, finalised))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookOutcome {
    /// State changed; `rooms` lists other rooms touched, `finalised` rooms to tear down.
    Applied {
        rooms: Vec<String>,
        finalised: Vec<String>,
    },
    /// Unknown room or uid, stale or already true: acknowledged, nothing changed.
    Ignored,
    /// This event id was processed before.
    Duplicate,
    /// The room is final but LiveKit says someone joined: delete the LiveKit room again.
    DeleteAgain,
    /// A uid removed from the call joined it again in LiveKit: remove it again.
    RemoveAgain { uid: String },
}
