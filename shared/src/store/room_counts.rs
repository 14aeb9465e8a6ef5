//! The exact room totals per status (`room_count`, sixteen shards per status), kept by the
//! transaction that inserts a room or moves its status, without triggers.
//!
//! Triggers cannot be created on MySQL 8 / Aurora MySQL 3 with binary logging on unless the
//! account has SUPER or the cluster sets `log_bin_trust_function_creators`, so the store
//! counts itself. A transaction notes each room it writes here; just before COMMIT one
//! statement applies the net change. Deferring it keeps the counter rows locked only from
//! that statement to the commit, and applying every change in one statement that names the
//! rows in primary-key order, (status, shard), means that two transactions touching several
//! rooms lock counter rows in the same order and never deadlock on them.

use std::collections::BTreeMap;

use sqlx::QueryBuilder;

use super::Db;
use crate::model::RoomStatus;

/// Each room is counted in the shard of its id (as migration 0003 laid the rows out).
pub const SHARDS: i64 = 16;

/// The rooms one transaction inserted or moved, and where each one is counted.
#[derive(Debug, Default)]
pub(super) struct RoomCounts {
    /// room id → (its status in the database before this transaction, None for a room this
    /// transaction inserted; its status as last written).
    rooms: BTreeMap<i64, (Option<RoomStatus>, RoomStatus)>,
}

impl RoomCounts {
    /// A room this transaction inserted with `status`.
    pub(super) fn inserted(&mut self, id: i64, status: RoomStatus) {
        self.rooms.insert(id, (None, status));
    }

    /// A room this transaction wrote with `status`, which the database held at `loaded` when
    /// this transaction first read it. Only the first note of a room keeps its `loaded`:
    /// a room written twice, or loaded again after a write, is counted from where it began.
    pub(super) fn written(&mut self, id: i64, loaded: RoomStatus, status: RoomStatus) {
        self.rooms
            .entry(id)
            .and_modify(|(_, now)| *now = status)
            .or_insert((Some(loaded), status));
    }

    /// The net change per counter row, in primary-key order, without the zeros.
    pub(super) fn deltas(&self) -> Vec<((i16, i16), i64)> {
        let mut deltas: BTreeMap<(i16, i16), i64> = BTreeMap::new();
        for (&id, &(before, after)) in &self.rooms {
            if before == Some(after) {
                continue;
            }
            let shard = shard_of(id);
            if let Some(before) = before {
                *deltas.entry((before.code(), shard)).or_default() -= 1;
            }
            *deltas.entry((after.code(), shard)).or_default() += 1;
        }
        deltas.into_iter().filter(|(_, n)| *n != 0).collect()
    }

    /// Applies the net change in one statement, or none when nothing moved.
    pub(super) async fn apply(&self, conn: &mut super::DbConnection) -> Result<(), sqlx::Error> {
        let deltas = self.deltas();
        if deltas.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<Db>::new("UPDATE room_count SET n = n + CASE");
        for ((status, shard), n) in &deltas {
            query
                .push(" WHEN status = ")
                .push_bind(*status)
                .push(" AND shard = ")
                .push_bind(*shard)
                .push(" THEN ")
                .push_bind(*n);
        }
        query.push(" ELSE 0 END WHERE ");
        let mut rows = query.separated(" OR ");
        for ((status, shard), _) in &deltas {
            rows.push("(status = ")
                .push_bind_unseparated(*status)
                .push_unseparated(" AND shard = ")
                .push_bind_unseparated(*shard)
                .push_unseparated(")");
        }
        query.build().execute(conn).await?;
        Ok(())
    }
}

/// Sets every total to what the rooms say, in one transaction that reads every room's status
/// under a shared lock, so no room can move between the count and the write. For the deploy
/// that drops the old triggers (see migration 0006): a room that old code moved after the
/// migration ran and before the new code took over was counted by nobody. Room writes wait for
/// it while it reads the `(status, id)` index once.
pub(super) async fn recount(tx: &mut super::Tx<'_>) -> Result<(), sqlx::Error> {
    let rooms: Vec<(i16, i64, i64)> = sqlx::query_as(RECOUNT_READ).fetch_all(&mut **tx).await?;
    sqlx::query("UPDATE room_count SET n = 0")
        .execute(&mut **tx)
        .await?;
    for (status, shard, n) in rooms {
        sqlx::query("UPDATE room_count SET n = ? WHERE status = ? AND shard = ?")
            .bind(n)
            .bind(status)
            .bind(shard)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The rooms per (status, shard), read under a shared lock on MySQL (SQLite's BEGIN IMMEDIATE
/// already holds every writer off).
#[cfg(not(feature = "embedded"))]
const RECOUNT_READ: &str = "SELECT status, CAST(id % 16 AS SIGNED) AS shard, COUNT(*) AS n \
     FROM call_room GROUP BY status, id % 16 LOCK IN SHARE MODE";
#[cfg(feature = "embedded")]
const RECOUNT_READ: &str =
    "SELECT status, id % 16 AS shard, COUNT(*) AS n FROM call_room GROUP BY status, id % 16";

fn shard_of(id: i64) -> i16 {
    // rem_euclid: ids are positive, and a counter row exists for every result anyway.
    id.rem_euclid(SHARDS) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use RoomStatus::*;

    #[test]
    fn a_created_room_counts_once_in_its_status_and_shard() {
        let mut counts = RoomCounts::default();
        counts.inserted(17, NotStarted);
        assert_eq!(counts.deltas(), vec![((0, 1), 1)]);
    }

    #[test]
    fn a_move_takes_one_from_the_old_status_and_adds_one_to_the_new() {
        let mut counts = RoomCounts::default();
        counts.written(35, InProgress, Ended);
        assert_eq!(counts.deltas(), vec![((1, 3), -1), ((2, 3), 1)]);
    }

    #[test]
    fn a_room_written_twice_counts_from_where_it_began() {
        let mut counts = RoomCounts::default();
        counts.written(4, NotStarted, InProgress);
        // Loaded again after the first write, then ended.
        counts.written(4, InProgress, Ended);
        assert_eq!(counts.deltas(), vec![((0, 4), -1), ((2, 4), 1)]);
        // Created and finished in one transaction: counted once, where it ended.
        let mut counts = RoomCounts::default();
        counts.inserted(5, NotStarted);
        counts.written(5, NotStarted, Cancelled);
        assert_eq!(counts.deltas(), vec![((3, 5), 1)]);
    }

    #[test]
    fn unchanged_statuses_and_cancelling_moves_write_nothing() {
        let mut counts = RoomCounts::default();
        counts.written(1, InProgress, InProgress);
        counts.written(2, NotStarted, InProgress);
        counts.written(2, InProgress, NotStarted);
        assert!(counts.deltas().is_empty());
    }

    #[test]
    fn rows_come_out_in_primary_key_order_whatever_the_order_of_the_rooms() {
        let mut counts = RoomCounts::default();
        counts.written(31, InProgress, Ended); // shard 15
        counts.written(16, NotStarted, Cancelled); // shard 0
        counts.written(2, InProgress, Ended); // shard 2
        counts.inserted(33, NotStarted); // shard 1
        let keys: Vec<(i16, i16)> = counts.deltas().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![(0, 0), (0, 1), (1, 2), (1, 15), (2, 2), (2, 15), (3, 0)]
        );
    }
}
