//! The raw I/O each endpoint needs, and nothing else: the same SQL text with the same bind
//! types the store sends (shared/src/store), the same Redis commands the cache sends
//! (shared/src/cache.rs), over one connection each, with no HTTP, auth, JSON envelope or
//! runtime. An endpoint's latency divided by this is the overhead the service adds.
//!
//! The SQL is copied, not imported (the store keeps it private); a test below fails when the
//! store's text changes, and the round-trip phase compares statement counts at run time.
//! The comments name the store function each step mirrors.

// The raw baseline runs its own transactions on a connection it owns and ends each one itself;
// the rule in clippy.toml guards the service's kept connections, which this is not.
#![allow(clippy::disallowed_methods)]

use call_shared::cache::CachedRoom;
use call_shared::events;
use call_shared::model::{EventType, Now, ParticipantStatus, Room, RoomStatus};
use redis::aio::ConnectionManager;
use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::{Connection, Row};

pub const KEY_PREFIX: &str = "callsvc:room:";
pub const GENERATION_PREFIX: &str = "callsvc:room-gen:";
const RATE_PREFIX: &str = "callsvc:rl:";

macro_rules! room_columns {
    () => {
        concat!(
            "r.id, r.source_channel_id, r.source_channel_type, r.creator, r.room_name, ",
            "r.call_type, r.invite_on, r.max_participants, r.status, r.created_at, r.updated_at, ",
            "r.ring_timeout_seconds, r.max_duration_seconds, r.solo_timeout_seconds, ",
            "r.end_reason, r.started_at, r.ended_at, r.solo_since, r.deadline, r.event_seq"
        )
    };
}

macro_rules! participant_columns {
    () => {
        concat!(
            "p.id AS p_id, p.uid AS p_uid, p.status AS p_status, p.join_time AS p_join_time, ",
            "p.leave_time AS p_leave_time, p.created_at AS p_created_at, ",
            "p.updated_at AS p_updated_at, p.reason AS p_reason, p.invited_at AS p_invited_at, ",
            "p.ring_deadline AS p_ring_deadline, p.ring_seconds AS p_ring_seconds, ",
            "p.talk_seconds AS p_talk_seconds"
        )
    };
}

macro_rules! call_query {
    ($suffix:expr) => {
        concat!(
            "SELECT ",
            room_columns!(),
            ", ",
            participant_columns!(),
            " FROM call_room r LEFT JOIN call_participant p ON p.room_name = r.room_name ",
            "WHERE r.room_name = ? ORDER BY p.id",
            $suffix
        )
    };
}

/// What every call transaction begins with (store/backend.rs `BEGIN_CALL`: READ COMMITTED,
/// so the locking read takes no gap lock); sqlx ends it with `COMMIT` or `ROLLBACK`
/// (`tx.commit()` / `tx.rollback()` in `store::in_transaction`).
pub const BEGIN: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN";
pub const LOAD_CALL: &str = call_query!("");
pub const LOCK_CALL: &str = call_query!(" FOR UPDATE");
pub const LIVE_UIDS_ONE: &str =
    "SELECT uid FROM call_participant WHERE status IN (0, 1) AND uid IN (?)";
pub const INSERT_ROOM: &str = "INSERT INTO call_room (source_channel_id, source_channel_type, creator, room_name, \
         call_type, invite_on, max_participants, status, created_at, updated_at, \
         ring_timeout_seconds, max_duration_seconds, solo_timeout_seconds, deadline, \
         event_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub const INSERT_PARTICIPANT: &str = "INSERT INTO call_participant (room_name, uid, status, join_time, leave_time, \
                 created_at, updated_at, reason, invited_at, ring_deadline, ring_seconds, \
                 talk_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub const UPDATE_ROOM: &str = "UPDATE call_room SET status = ?, updated_at = ?, end_reason = ?, started_at = ?, \
             ended_at = ?, solo_since = ?, deadline = ?, event_seq = ? WHERE id = ?";
/// The change's events, one multi-row statement (store/outbox.rs `write_events`).
pub const INSERT_EVENTS: &str = "INSERT INTO call_event (event_id, room_name, seq, type, occurred_at, payload, \
         endpoints, owed, due_at, created_at) ";
pub const UPDATE_PARTICIPANT: &str = "UPDATE call_participant SET status = ?, join_time = ?, leave_time = ?, \
                 updated_at = ?, reason = ?, invited_at = ?, ring_deadline = ?, \
                 ring_seconds = ?, talk_seconds = ? WHERE id = ?";
pub const ROOM_COLUMNS: &str = room_columns!();
pub const PARTICIPANT_COLUMNS: &str = participant_columns!();
/// A default ring timeout: a room at 0 that nobody rings closes after it.
const RING_TIMEOUT: chrono::Duration = chrono::Duration::seconds(60);
pub const UID_FILTER: &str = " WHERE 1 = 1 AND EXISTS (SELECT 1 FROM call_participant p WHERE p.room_name = r.room_name AND p.uid = ?)";

/// A participant row as the lock query returns it.
#[derive(Debug, Clone)]
pub struct Row3 {
    pub id: i64,
    pub uid: String,
    pub status: i16,
    pub join_time: i64,
}

pub struct Raw {
    db: MySqlConnection,
    redis: ConnectionManager,
    /// Whether the functions count create and join against Redis rate limits.
    rate_limits: bool,
}

fn decode(rows: &[MySqlRow]) -> Result<Option<(Room, Vec<Row3>)>, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let room = decode_room(first)?;
    let mut parts = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(id) = row.try_get::<Option<i64>, _>("p_id")? else {
            continue;
        };
        let _leave: i64 = row.try_get("p_leave_time")?;
        let _created: chrono::NaiveDateTime = row.try_get("p_created_at")?;
        let _updated: chrono::NaiveDateTime = row.try_get("p_updated_at")?;
        parts.push(Row3 {
            id,
            uid: row.try_get("p_uid")?,
            status: row.try_get("p_status")?,
            join_time: row.try_get("p_join_time")?,
        });
    }
    Ok(Some((room, parts)))
}

fn decode_room(row: &MySqlRow) -> Result<Room, sqlx::Error> {
    let status: i16 = row.try_get("status")?;
    Ok(Room {
        id: row.try_get("id")?,
        source_channel_id: row.try_get("source_channel_id")?,
        source_channel_type: row.try_get("source_channel_type")?,
        creator: row.try_get("creator")?,
        room_name: row.try_get("room_name")?,
        call_type: row.try_get("call_type")?,
        invite_on: row.try_get("invite_on")?,
        max_participants: row.try_get("max_participants")?,
        status: RoomStatus::from_code(status.into())
            .ok_or_else(|| sqlx::Error::Decode("room status".into()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        event_seq: row.try_get::<i32, _>("event_seq")?.into(),
        ..Room::default()
    })
}

type Res<T> = Result<T, String>;

fn db(e: sqlx::Error) -> String {
    format!("raw SQL: {e}")
}

fn rd(e: redis::RedisError) -> String {
    format!("raw Redis: {e}")
}

impl Raw {
    pub async fn connect(database_url: &str, redis_url: &str, rate_limits: bool) -> Res<Raw> {
        let db_conn = MySqlConnection::connect(database_url).await.map_err(db)?;
        let client = redis::Client::open(redis_url).map_err(rd)?;
        let redis = ConnectionManager::new(client).await.map_err(rd)?;
        Ok(Raw {
            db: db_conn,
            redis,
            rate_limits,
        })
    }

    /// The per-uid rate-limit counter (one pipelined MULTI/INCR/EXPIRE/EXEC), when limits are on.
    async fn count_request(&mut self, bucket: &str, uid: &str) -> Res<()> {
        if !self.rate_limits {
            return Ok(());
        }
        let window = chrono::Utc::now().timestamp().max(0) / 60;
        let key = format!("{RATE_PREFIX}{bucket}:{uid}:{window}");
        let (_count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1u64)
            .expire(&key, 61)
            .ignore()
            .query_async(&mut self.redis)
            .await
            .map_err(rd)?;
        Ok(())
    }

    /// create-room without invitees: the creator's liveness check, the room, the creator's row.
    pub async fn create(&mut self, room_name: &str, creator: &str, now: Now) -> Res<()> {
        self.count_request("create", creator).await?;
        let mut tx = self.db.begin_with(BEGIN).await.map_err(db)?;
        let busy: Vec<String> = sqlx::query_scalar(LIVE_UIDS_ONE)
            .bind(creator.to_owned())
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        if !busy.is_empty() {
            return Err(format!("raw create: {creator} is live elsewhere"));
        }
        sqlx::query(INSERT_ROOM)
            .bind("")
            .bind(0i16)
            .bind(creator)
            .bind(room_name)
            .bind(1i16)
            .bind(0i16)
            .bind(2i32)
            .bind(RoomStatus::NotStarted.code())
            .bind(now.at)
            .bind(now.at)
            .bind(60i32)
            .bind(0i32)
            .bind(0i32)
            .bind(Some(now.at + RING_TIMEOUT))
            .bind(2i64)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        insert_participant(&mut tx, room_name, creator, now).await?;
        let room = Room {
            room_name: room_name.to_owned(),
            creator: creator.to_owned(),
            created_at: now.at,
            updated_at: now.at,
            ..Room::default()
        };
        insert_events(
            &mut tx,
            &room,
            1,
            &["room.created", "participant.joined"],
            now,
        )
        .await?;
        tx.commit().await.map_err(db)
    }

    /// The cache lookup: MGET of the copy and its generation.
    async fn lookup(&mut self, room_name: &str) -> Res<(Option<String>, Option<i64>)> {
        redis::cmd("MGET")
            .arg(format!("{KEY_PREFIX}{room_name}"))
            .arg(format!("{GENERATION_PREFIX}{room_name}"))
            .query_async(&mut self.redis)
            .await
            .map_err(rd)
    }

    /// get-room, cache miss: MGET (nil), the room with its rows, the generation-checked SET EX
    /// of the cached copy.
    pub async fn get_miss(&mut self, room_name: &str) -> Res<()> {
        let (cached, generation) = self.lookup(room_name).await?;
        if cached.is_some() {
            return Err(format!("raw get: {room_name} was already cached"));
        }
        let rows = sqlx::query(LOAD_CALL)
            .bind(room_name)
            .fetch_all(&mut self.db)
            .await
            .map_err(db)?;
        let (room, parts) = decode(&rows)
            .map_err(db)?
            .ok_or_else(|| format!("raw get: no room {room_name}"))?;
        let cached = CachedRoom {
            members: parts.into_iter().map(|p| p.uid).collect(),
            deadline: room.deadline,
            room,
        };
        let text = serde_json::to_string(&cached).map_err(|e| e.to_string())?;
        redis::cmd("EVAL")
            .arg(call_shared::cache::PUT_IF_CURRENT)
            .arg(2)
            .arg(format!("{KEY_PREFIX}{room_name}"))
            .arg(format!("{GENERATION_PREFIX}{room_name}"))
            .arg(text)
            .arg(generation.unwrap_or(0))
            .arg(30)
            .query_async::<i64>(&mut self.redis)
            .await
            .map(|_| ())
            .map_err(rd)
    }

    /// get-room, cache hit: one MGET and the decode of the cached copy.
    pub async fn get_hit(&mut self, room_name: &str) -> Res<()> {
        let (cached, _) = self.lookup(room_name).await?;
        let text = cached.ok_or_else(|| format!("raw get: {room_name} not cached"))?;
        let _room: CachedRoom = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// join-room of a second uid into a room at 0: lock, room to 1, the new row, DEL.
    pub async fn join(&mut self, room_name: &str, uid: &str, now: Now) -> Res<()> {
        self.count_request("join", uid).await?;
        let mut tx = self.db.begin_with(BEGIN).await.map_err(db)?;
        let (room, _) = lock_call(&mut tx, room_name, "join").await?;
        // Rows first, then the room with its event counter, then the events.
        insert_participant(&mut tx, room_name, uid, now).await?;
        let events = ["participant.joined", "room.started"];
        update_room(&mut tx, &room, RoomStatus::InProgress, events.len(), now).await?;
        insert_events(&mut tx, &room, room.event_seq + 1, &events, now).await?;
        tx.commit().await.map_err(db)?;
        self.forget(room_name).await
    }

    /// join-room of a third uid into a room its two joined rows fill: the rate-limit counter,
    /// then lock, the rule refuses (room_full), ROLLBACK awaited, as `store::in_transaction`
    /// ends a refused transaction. Nothing is written, so nothing is forgotten in Redis.
    pub async fn refused_join(&mut self, room_name: &str, uid: &str) -> Res<()> {
        self.count_request("join", uid).await?;
        let mut tx = self.db.begin_with(BEGIN).await.map_err(db)?;
        let (room, parts) = lock_call(&mut tx, room_name, "refused join").await?;
        let joined = parts
            .iter()
            .filter(|p| p.status == ParticipantStatus::Joined.code())
            .count();
        tx.rollback().await.map_err(db)?;
        let capacity = usize::try_from(room.max_participants).unwrap_or(0);
        if joined < capacity {
            return Err(format!(
                "raw refused join: {room_name} has {joined} of {capacity} joined, not full"
            ));
        }
        Ok(())
    }

    /// list-rooms as a user: the count, then the page.
    pub async fn list(&mut self, uid: &str) -> Res<()> {
        let count_sql = format!("SELECT COUNT(*) FROM call_room r{UID_FILTER}");
        let select_sql = format!(
            "SELECT {ROOM_COLUMNS} FROM call_room r{UID_FILTER} ORDER BY r.id DESC LIMIT ?"
        );
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
            .bind(uid.to_owned())
            .fetch_one(&mut self.db)
            .await
            .map_err(db)?;
        if total == 0 {
            return Err(format!("raw list: no rooms for {uid}"));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(select_sql))
            .bind(uid.to_owned())
            .bind(11i64)
            .fetch_all(&mut self.db)
            .await
            .map_err(db)?;
        for row in &rows {
            decode_room(row).map_err(db)?;
        }
        Ok(())
    }

    /// leave-room of the second uid: lock, the room ends, both rows to hung up, DEL.
    pub async fn leave(&mut self, room_name: &str, uid: &str, now: Now) -> Res<()> {
        let mut tx = self.db.begin_with(BEGIN).await.map_err(db)?;
        let (room, parts) = lock_call(&mut tx, room_name, "leave").await?;
        // The leaver first, then the one left behind, as the settle rule changes them.
        let mut ordered = parts.clone();
        ordered.sort_by_key(|p| p.uid != uid);
        for p in ordered {
            let reason = if p.uid == uid {
                "hung_up"
            } else {
                "call_ended"
            };
            sqlx::query(UPDATE_PARTICIPANT)
                .bind(3i16)
                .bind(p.join_time)
                .bind(now.ms)
                .bind(now.at)
                .bind(Some(reason))
                .bind(None::<chrono::NaiveDateTime>)
                .bind(None::<chrono::NaiveDateTime>)
                .bind(0i64)
                .bind((now.ms - p.join_time) / 1000)
                .bind(p.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let events = ["participant.left", "participant.left", "room.ended"];
        update_room(&mut tx, &room, RoomStatus::Ended, events.len(), now).await?;
        insert_events(&mut tx, &room, room.event_seq + 1, &events, now).await?;
        tx.commit().await.map_err(db)?;
        self.forget(room_name).await
    }

    /// The cache forget after a commit: a new generation, then DEL, in one atomic pipeline.
    async fn forget(&mut self, room_name: &str) -> Res<()> {
        let generation = format!("{GENERATION_PREFIX}{room_name}");
        redis::pipe()
            .atomic()
            .incr(&generation, 1)
            .ignore()
            .expire(&generation, 120)
            .ignore()
            .del(format!("{KEY_PREFIX}{room_name}"))
            .ignore()
            .query_async::<()>(&mut self.redis)
            .await
            .map_err(rd)
    }
}

async fn insert_participant(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    room_name: &str,
    uid: &str,
    now: Now,
) -> Res<()> {
    sqlx::query(INSERT_PARTICIPANT)
        .bind(room_name)
        .bind(uid)
        .bind(1i16)
        .bind(now.ms)
        .bind(0i64)
        .bind(now.at)
        .bind(now.at)
        .bind(None::<&str>)
        .bind(None::<chrono::NaiveDateTime>)
        .bind(None::<chrono::NaiveDateTime>)
        .bind(0i64)
        .bind(0i64)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// The call's room and rows under the row lock, as every call transaction starts.
async fn lock_call(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    room_name: &str,
    step: &str,
) -> Res<(Room, Vec<Row3>)> {
    let rows = sqlx::query(LOCK_CALL)
        .bind(room_name)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
    decode(&rows)
        .map_err(db)?
        .ok_or_else(|| format!("raw {step}: no room {room_name}"))
}

/// A change's events as the store writes them: one multi-row INSERT, each with an envelope
/// of the room's size (`events::envelope`), owed to nobody (no endpoint configured).
async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    room: &Room,
    first_seq: i64,
    types: &[&str],
    now: Now,
) -> Res<()> {
    let data = serde_json::to_value(room).map_err(|e| e.to_string())?;
    let mut query = sqlx::QueryBuilder::<sqlx::MySql>::new(INSERT_EVENTS);
    query.push_values(types.iter().enumerate(), |mut row, (i, kind)| {
        let seq = first_seq + i as i64;
        let id = events::new_event_id(room, seq);
        let event = events::NewEvent {
            event_type: EventType::parse(kind).unwrap_or(EventType::RoomCreated),
            occurred_at: now.at,
            data: data.clone(),
        };
        let payload = events::envelope(&id, &event, &room.room_name, seq);
        row.push_bind(id)
            .push_bind(room.room_name.clone())
            .push_bind(seq)
            .push_bind(*kind)
            .push_bind(now.at)
            .push_bind(payload)
            .push_bind(String::new())
            .push_bind(0i16)
            .push_bind(None::<chrono::NaiveDateTime>)
            .push_bind(now.at);
    });
    query.build().execute(&mut **tx).await.map_err(db)?;
    Ok(())
}

async fn update_room(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    room: &Room,
    status: RoomStatus,
    new_events: usize,
    now: Now,
) -> Res<()> {
    let id = room.id;
    let (ended, reason) = if status.is_final() {
        (Some(now.at), Some("completed"))
    } else {
        (None, None)
    };
    sqlx::query(UPDATE_ROOM)
        .bind(status.code())
        .bind(now.at)
        .bind(reason)
        .bind(Some(now.at))
        .bind(ended)
        .bind(None::<chrono::NaiveDateTime>)
        .bind(None::<chrono::NaiveDateTime>)
        .bind(room.event_seq + new_events as i64)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The store's source, whatever its module layout (`store.rs` or `store/*.rs`).
    pub(crate) fn store_source() -> String {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/src");
        let mut files = vec![src.join("store.rs")];
        if let Ok(dir) = std::fs::read_dir(src.join("store")) {
            files.extend(dir.flatten().map(|e| e.path()));
        }
        let text: String = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect();
        assert!(!text.is_empty(), "shared/src/store not found");
        text
    }

    fn cache_source() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/src/cache.rs");
        std::fs::read_to_string(path).expect("shared/src/cache.rs")
    }

    /// Whitespace-insensitive containment, since the store splits long strings over lines.
    pub(crate) fn has(haystack: &str, needle: &str) -> bool {
        let squash = |s: &str| {
            s.replace("\\\n", " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        squash(haystack).contains(&squash(needle))
    }

    #[test]
    fn the_raw_sql_is_the_stores_sql() {
        let store = store_source();
        for piece in [
            "r.id, r.source_channel_id, r.source_channel_type, r.creator, r.room_name, ",
            "r.call_type, r.invite_on, r.max_participants, r.status, r.created_at, r.updated_at, ",
            "r.ring_timeout_seconds, r.max_duration_seconds, r.solo_timeout_seconds, ",
            "r.end_reason, r.started_at, r.ended_at, r.solo_since, r.deadline, r.event_seq",
            "p.id AS p_id, p.uid AS p_uid, p.status AS p_status, p.join_time AS p_join_time, ",
            "p.leave_time AS p_leave_time, p.created_at AS p_created_at, ",
            "p.updated_at AS p_updated_at, p.reason AS p_reason, p.invited_at AS p_invited_at, ",
            "p.ring_deadline AS p_ring_deadline, p.ring_seconds AS p_ring_seconds, ",
            "p.talk_seconds AS p_talk_seconds",
            " FROM call_room r LEFT JOIN call_participant p ON p.room_name = r.room_name ",
            "WHERE r.room_name = ? ORDER BY p.id",
            "\" FOR UPDATE\"",
            "SELECT uid FROM call_participant WHERE status IN (0, 1) AND uid IN (",
            INSERT_ROOM,
            INSERT_PARTICIPANT,
            UPDATE_ROOM,
            UPDATE_PARTICIPANT,
            INSERT_EVENTS,
            "query.push_values(events.iter().enumerate(), |mut row, (i, event)| {",
            "SELECT COUNT(*) FROM call_room r",
            " WHERE 1 = 1",
            " AND EXISTS (SELECT 1 FROM call_participant p WHERE p.room_name = r.room_name AND p.uid = ",
            " ORDER BY r.id DESC LIMIT ",
            " OFFSET ",
            // Every call transaction: BEGIN, then COMMIT on success or ROLLBACK on a refusal,
            // both awaited in `in_transaction` (the refused join's mirror ends with ROLLBACK).
            &format!("pub const BEGIN_CALL: &str = \"{BEGIN}\";"),
            "in_transaction_with(conn, backend::BEGIN_CALL, work)",
            "conn.begin_with(begin)",
            "tx.inner.commit().await?",
            "tx.inner.rollback().await",
        ] {
            assert!(has(&store, piece), "the store no longer sends {piece:?}");
        }
    }

    #[test]
    fn the_cache_key_is_the_caches_key() {
        let cache = cache_source();
        assert!(has(&cache, "const KEY_PREFIX: &str = \"callsvc:\";"));
        assert!(has(&cache, "format!(\"{KEY_PREFIX}room:{room_name}\")"));
        assert!(has(&cache, "format!(\"{KEY_PREFIX}room-gen:{room_name}\")"));
        assert!(has(&cache, "const ROOM_TTL_SECS: u64 = 30;"));
        assert!(has(&cache, "const GENERATION_TTL_SECS: i64 = 120;"));
        assert!(has(&cache, "redis::cmd(\"MGET\")"));
        assert!(has(
            &cache,
            "format!(\"{KEY_PREFIX}rl:{bucket}:{uid}:{window}\")"
        ));
        assert!(has(&cache, ".incr(key, 1u64) .expire(key, 61)"));
    }
}
