//! What the sweeper reads and changes: expired rings, idle rooms, long calls, pending
//! LiveKit teardowns and old webhook ids.

use super::calls::Change;
use super::*;

impl Store {
    /// Rooms whose LiveKit room still has to be deleted, oldest first.
    pub async fn pending_teardowns(&self, limit: i64) -> Result<Vec<(String, i32)>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT room_name, attempts FROM livekit_teardown ORDER BY created_at LIMIT ?",
                )
                .bind(limit)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows)
    }

    /// DeleteRoom succeeded (or was given up on): forget the room's teardown.
    pub async fn teardown_done(&self, room_name: &str) -> Result<(), ApiError> {
        self.execute_on_room(
            "DELETE FROM livekit_teardown WHERE room_name = ?",
            room_name,
        )
        .await
    }

    pub async fn teardown_failed(&self, room_name: &str) -> Result<(), ApiError> {
        self.execute_on_room(
            "UPDATE livekit_teardown SET attempts = attempts + 1 WHERE room_name = ?",
            room_name,
        )
        .await
    }

    /// Rooms with a row ringing since before `cutoff`, oldest first.
    pub async fn rooms_ringing_since(
        &self,
        cutoff: Now,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        self.room_names(
            sqlx::query_scalar(
                "SELECT room_name FROM call_participant WHERE status = 0 AND updated_at < ? \
                 GROUP BY room_name ORDER BY MIN(updated_at) LIMIT ?",
            )
            .bind(cutoff.at)
            .bind(limit),
        )
        .await
    }

    /// Rooms at `status` last changed before `cutoff` (rooms at 0: with nobody ringing).
    pub async fn idle_rooms(
        &self,
        status: RoomStatus,
        cutoff: Now,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        self.room_names(
            sqlx::query_scalar(
                "SELECT r.room_name FROM call_room r WHERE r.status = ? AND r.updated_at < ? \
                 AND (r.status <> 0 OR NOT EXISTS (SELECT 1 FROM call_participant p \
                      WHERE p.room_name = r.room_name AND p.status = 0)) \
                 ORDER BY r.updated_at LIMIT ?",
            )
            .bind(status.code())
            .bind(cutoff.at)
            .bind(limit),
        )
        .await
    }

    /// Rooms in progress since before `cutoff` (by start of the room), oldest first.
    pub async fn calls_started_before(
        &self,
        cutoff: Now,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        self.room_names(
            sqlx::query_scalar(
                "SELECT room_name FROM call_room WHERE status = 1 AND created_at < ? \
                 ORDER BY created_at LIMIT ?",
            )
            .bind(cutoff.at)
            .bind(limit),
        )
        .await
    }

    /// The sweeper's change to one room, under the same lock and rules as every request.
    pub async fn sweep_room(
        &self,
        room_name: &str,
        rule: impl Fn(&mut CallState) -> bool,
    ) -> Result<RoomResult, ApiError> {
        self.room_change(room_name, |state| Ok(rule(state))).await
    }

    /// Ends a call LiveKit no longer has (its webhooks were lost): no DeleteRoom needed.
    pub async fn end_vanished(&self, room_name: &str, now: Now) -> Result<RoomResult, ApiError> {
        let spec = Change {
            room_name,
            check_busy: &[],
            live_conflict: None,
            teardown: false,
        };
        let (state, changed, finalised) = self
            .change_call(spec, |state, _| Ok(rules::end(state, now)))
            .await?;
        Ok(RoomResult {
            room: state.room,
            changed,
            finalised,
        })
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

    async fn execute_on_room(&self, sql: &'static str, room_name: &str) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| {
            sqlx::query(sql).bind(room_name).execute(conn).await
        })
        .await?;
        Ok(())
    }
}
