//! What the sweeper reads and changes: rooms whose deadline has passed (ring-outs, idle rooms,
//! solo and longest-call timeouts), calls LiveKit no longer has, pending LiveKit teardowns and
//! removals, and old webhook ids.

use super::calls::Change;
use super::*;

impl Store {
    /// Rooms whose LiveKit room still has to be deleted, queued at or before `queued_by`,
    /// oldest first.
    pub async fn pending_teardowns(
        &self,
        queued_by: Now,
        limit: i64,
    ) -> Result<Vec<(String, i32)>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT room_name, attempts FROM livekit_teardown WHERE created_at <= ? \
                     ORDER BY created_at LIMIT ?",
                )
                .bind(queued_by.at)
                .bind(limit)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows)
    }

    /// DeleteRoom succeeded (or was given up on): forget the room's teardown.
    pub async fn teardown_done(&self, room_name: &str) -> Result<(), ApiError> {
        self.execute_on(
            "DELETE FROM livekit_teardown WHERE room_name = ?",
            &[room_name],
        )
        .await
    }

    pub async fn teardown_failed(&self, room_name: &str) -> Result<(), ApiError> {
        self.execute_on(
            "UPDATE livekit_teardown SET attempts = attempts + 1 WHERE room_name = ?",
            &[room_name],
        )
        .await
    }

    /// Participants LiveKit still has to remove, queued at or before `queued_by`, oldest
    /// first: (room, uid, attempts).
    pub async fn pending_removals(
        &self,
        queued_by: Now,
        limit: i64,
    ) -> Result<Vec<(String, String, i32)>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT room_name, uid, attempts FROM livekit_removal WHERE created_at <= ? \
                     ORDER BY created_at LIMIT ?",
                )
                .bind(queued_by.at)
                .bind(limit)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows)
    }

    /// RemoveParticipant succeeded (or was given up on).
    pub async fn removal_done(&self, room_name: &str, uid: &str) -> Result<(), ApiError> {
        self.execute_on(
            "DELETE FROM livekit_removal WHERE room_name = ? AND uid = ?",
            &[room_name, uid],
        )
        .await
    }

    pub async fn removal_failed(&self, room_name: &str, uid: &str) -> Result<(), ApiError> {
        self.execute_on(
            "UPDATE livekit_removal SET attempts = attempts + 1 WHERE room_name = ? AND uid = ?",
            &[room_name, uid],
        )
        .await
    }

    /// Open rooms with a deadline at or before `now`, the longest overdue first.
    pub async fn rooms_due(&self, now: Now, limit: i64) -> Result<Vec<String>, ApiError> {
        self.room_names(
            sqlx::query_scalar(
                "SELECT room_name FROM call_room WHERE deadline <= ? ORDER BY deadline LIMIT ?",
            )
            .bind(now.at)
            .bind(limit),
        )
        .await
    }

    /// Running rooms last changed before `cutoff`, oldest change first (the rooms whose
    /// presence in LiveKit the sweeper checks).
    pub async fn quiet_running_rooms(
        &self,
        cutoff: Now,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        self.room_names(
            sqlx::query_scalar(
                "SELECT room_name FROM call_room WHERE status = 1 AND updated_at < ? \
                 ORDER BY updated_at LIMIT ?",
            )
            .bind(cutoff.at)
            .bind(limit),
        )
        .await
    }

    /// Writes down what the deadlines due at `now` did to one room, under the same lock and
    /// rules as every request.
    pub async fn apply_due(&self, room_name: &str, now: Now) -> Result<RoomResult, ApiError> {
        // Locking the call applies its deadlines; the rule itself has nothing to add.
        self.room_change(room_name, now, |_| Ok(false)).await
    }

    /// Ends a call LiveKit no longer has (its webhooks were lost): no DeleteRoom needed.
    pub async fn end_vanished(&self, room_name: &str, now: Now) -> Result<RoomResult, ApiError> {
        let spec = Change {
            room_name,
            check_busy: &[],
            live_conflict: None,
            teardown: false,
            now,
        };
        let (state, changed, finalised, _) = self
            .change_call(
                spec,
                |state, _| Ok(rules::end(state, EndReason::GoneFromLivekit, now)),
                calls::unsealed(),
            )
            .await?;
        Ok(RoomResult {
            changed: changed || state.is_changed(),
            room: state.room,
            finalised,
        })
    }

    /// A commit changed `room_name` but its cached copy could not be dropped (Redis away):
    /// the sweeper drops it once Redis answers again.
    pub async fn owe_cache_forget(&self, room_name: &str, now: Now) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| {
            sqlx::query(backend::OWE_CACHE_FORGET)
                .bind(room_name)
                .bind(now.at)
                .execute(conn)
                .await
        })
        .await?;
        Ok(())
    }

    /// Rooms whose cached copy is still owed a forget, longest owed first, with how many
    /// commits missed each so far.
    pub async fn owed_cache_forgets(&self, limit: i64) -> Result<Vec<(String, i32)>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT room_name, misses FROM cache_invalidation \
                     ORDER BY owed_since LIMIT ?",
                )
                .bind(limit)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows)
    }

    /// Redis dropped these copies: delete each row unless another commit missed its room
    /// since it was read (then the row stays for the next sweep).
    pub async fn cache_forgets_paid(&self, paid: &[(String, i32)]) -> Result<(), ApiError> {
        // One kept connection for the batch, not one acquisition per row.
        self.with_conn(async |conn: &mut DbConnection| {
            for (room_name, misses) in paid {
                sqlx::query("DELETE FROM cache_invalidation WHERE room_name = ? AND misses = ?")
                    .bind(room_name)
                    .bind(misses)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        })
        .await?;
        Ok(())
    }

    pub async fn purge_webhook_events(&self, before: Now) -> Result<u64, ApiError> {
        let done = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query("DELETE FROM webhook_event WHERE received_at < ?")
                    .bind(before.at)
                    .execute(conn)
                    .await
            })
            .await?;
        Ok(done.rows_affected())
    }

    /// A list of room names, on the store's connection like every other statement.
    async fn room_names<'q>(
        &self,
        query: sqlx::query::QueryScalar<'q, Db, String, <Db as sqlx::Database>::Arguments>,
    ) -> Result<Vec<String>, ApiError> {
        Ok(self
            .with_conn(async |conn: &mut DbConnection| query.fetch_all(conn).await)
            .await?)
    }

    async fn execute_on(&self, sql: &'static str, binds: &[&str]) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| {
            let mut query = sqlx::query(sql);
            for value in binds {
                query = query.bind(*value);
            }
            query.execute(conn).await
        })
        .await?;
        Ok(())
    }
}
