//! The scale phase: the read endpoints on a large data set beside the same on a small one.
//!
//! Two databases of their own, loaded with set-based SQL from MariaDB's SEQUENCE engine
//! (`seq_<lo>_to_<hi>`) in batches, each batch one autocommit INSERT … SELECT; the bulk load
//! bypasses the store, which keeps room_count in each writing transaction, so the totals are
//! derived once afterwards (as migration 0006 does) and checked against the rows. Then, through the real
//! function binaries (list-rooms, user-calls, user-ringing; one warm process per function and
//! database, the warm phase's environment), p50/p99 of each read at both sizes, interleaved
//! round by round; EXPLAIN FORMAT=JSON of the SQL those requests send, on the large data set;
//! and the list SQL the service sent before migration 0003 (COUNT(*) totals, an OFFSET page)
//! timed on the same data, beside what replaced it.
//!
//! The SQL is copied from the store, as raw.rs copies it; a test below fails when the store's
//! text changes.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::events::{self, HttpCall};
use crate::raw::{LOAD_CALL, PARTICIPANT_COLUMNS, ROOM_COLUMNS};
use crate::report::{Access, DataSet, ExplainRow, OldRow, ScaleOutcome, ScaleRow};
use crate::runtime_api::FunctionProcess;
use crate::stats::{Summary, micros, summarize};
use crate::{Ctx, MIGRATOR, log};

// The store's SQL (shared/src/store/reads.rs, shared/src/store/mod.rs `push_filter`), piece by
// piece as the store's QueryBuilder pushes it; `?` where it pushes a bind.
pub const ROOMS_FROM: &str = " FROM call_room r";
pub const WHERE_ALL: &str = " WHERE 1 = 1";
pub const AND_STATUS: &str = " AND r.status = ?";
pub const AND_BEFORE_ROOM: &str = " AND r.id < ?";
pub const NEWEST_ROOMS: &str = " ORDER BY r.id DESC LIMIT ?";
pub const AND_OFFSET: &str = " OFFSET ?";
/// The unfiltered and status-only totals since migration 0003 (reads.rs `COUNT_ALL`,
/// `COUNT_STATUS`).
pub const COUNT_ALL: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM room_count";
pub const COUNT_STATUS: &str =
    "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM room_count WHERE status = ?";
/// What every total was before migration 0003, and still is for the uid, creator and channel
/// filters (reads.rs `room_total`).
pub const COUNT_ROOMS: &str = "SELECT COUNT(*) FROM call_room r";
pub const HISTORY_FROM: &str =
    " FROM call_participant p JOIN call_room r ON r.room_name = p.room_name WHERE p.uid = ?";
pub const AND_BEFORE_ROW: &str = " AND p.id < ?";
pub const NEWEST_ROWS: &str = " ORDER BY p.id DESC LIMIT ?";
pub const OTHERS_OPEN: &str = "SELECT room_name, uid FROM call_participant WHERE room_name IN (";
pub const OTHERS_CLOSE: &str = ") AND uid <> ? ORDER BY id";
/// reads.rs `ringing`, with backend.rs `live_row_of!()` for MySQL.
pub const RINGING: &str = "SELECT r.room_name FROM call_participant p JOIN call_room r \
     ON r.room_name = p.room_name WHERE p.live_uid = ? AND p.status = 0";

/// Page size of every measured request (the API's default).
pub const PAGE: i64 = 10;
/// The status the by-status list asks for: ended, three rooms in four at both sizes.
pub const LIST_STATUS: i16 = 2;
/// Every hundredth room's invitee (at most) is one of the heavy uids: thousands of rows each
/// at 1,000,000 rooms; a small data set gives them a larger share, so that they still have
/// about fifty rows and a history page is as full as on the large one.
const HEAVY_EVERY: u64 = 100;
const HEAVY_UIDS: u64 = 2;
/// The data generator's version: a reused database must have been loaded by this one.
const GENERATOR: &str = "bench-scale v1";
/// Tables whose size the schema fixes, so reading them whole is not a scan that grows with
/// the data: room_count has one row per status and shard (4 × 16).
pub const BOUNDED_TABLES: &[(&str, i64)] = &[("room_count", 64)];

/// The reads measured, in report order: (key, title).
pub const QUERIES: &[(&str, &str)] = &[
    ("list_first", "list-rooms, first page, no filter"),
    ("list_status", "list-rooms, first page of status=2"),
    ("list_deep", "list-rooms, a deep page by cursor"),
    ("history_typical", "user-calls, typical uid"),
    ("history_heavy", "user-calls, heavy uid"),
    ("ringing_yes", "user-ringing, a uid that rings"),
    ("ringing_no", "user-ringing, a uid that does not"),
];

pub fn title(key: &str) -> &'static str {
    QUERIES
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, t)| *t)
        .unwrap_or("?")
}

fn list_page_sql(status: bool, before: bool, offset: bool) -> String {
    let mut sql = format!("SELECT {ROOM_COLUMNS}{ROOMS_FROM}{WHERE_ALL}");
    if status {
        sql.push_str(AND_STATUS);
    }
    if before {
        sql.push_str(AND_BEFORE_ROOM);
    }
    sql.push_str(NEWEST_ROOMS);
    if offset {
        sql.push_str(AND_OFFSET);
    }
    sql
}

fn history_sql(before: bool) -> String {
    let mut sql = format!("SELECT {ROOM_COLUMNS}, {PARTICIPANT_COLUMNS}{HISTORY_FROM}");
    if before {
        sql.push_str(AND_BEFORE_ROW);
    }
    sql.push_str(NEWEST_ROWS);
    sql
}

fn others_sql(rooms: usize) -> String {
    let marks = vec!["?"; rooms.max(1)].join(", ");
    format!("{OTHERS_OPEN}{marks}{OTHERS_CLOSE}")
}

/// The shape of one generated data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    pub rooms: u64,
}

impl Spec {
    /// Ordinary uids: with two rows a room, about ten rows (calls) each.
    pub fn uids(&self) -> u64 {
        (self.rooms / 5).max(20)
    }

    /// Rooms still open (the newest ones): half ringing, half running.
    pub fn open(&self) -> u64 {
        (self.rooms / 1000).max(2)
    }

    /// Rooms created over a year, this far apart (whole milliseconds, in µs).
    fn step_us(&self) -> u64 {
        (365 * 86_400 * 1000 / self.rooms.max(1)) * 1000
    }

    /// The first ordinary uid number never live (the open rooms' uids are 2 ..= 2·open+1).
    fn quiet_from(&self) -> u64 {
        2 * self.open() + 2
    }

    /// A uid with an ordinary history (about ten calls) and no live row; `i` picks one.
    pub fn typical_uid(&self, i: u64) -> String {
        let span = self.uids() - self.quiet_from();
        format!("u{}", self.quiet_from() + (i.wrapping_mul(7919) % span))
    }

    /// The invitee of an open room that rings (open room j rings when j is odd).
    pub fn ringing_uid(&self, i: u64) -> String {
        let ringing = self.open().div_ceil(2);
        let j = 1 + 2 * (i % ringing);
        format!("u{}", (2 * j + 1) % self.uids())
    }

    pub fn heavy_uid(&self, i: u64) -> String {
        format!("heavy{}", i % HEAVY_UIDS)
    }

    /// Every this many rooms (not open), the invitee is a heavy uid.
    fn heavy_every(&self) -> u64 {
        ((self.rooms - self.open()) / (HEAVY_UIDS * 50)).clamp(2, HEAVY_EVERY)
    }

    /// Rows of heavy0 (the heavy uids take turns).
    pub fn heavy_rows(&self) -> u64 {
        (self.rooms - self.open()) / self.heavy_every() / HEAVY_UIDS
    }

    fn marker(&self) -> String {
        format!(
            "{GENERATOR} rooms={} migrations={}",
            self.rooms,
            MIGRATOR.iter().count()
        )
    }

    /// Rooms `lo ..= hi`: id = seq, the newest `open` ones open (odd ones ringing, with a
    /// deadline a day ahead so no read during the run finds one passed), every fourth of the
    /// rest cancelled (missed, declined, cancelled or busy), the others ended normally.
    pub fn rooms_sql(&self, lo: u64, hi: u64, base: &str) -> String {
        let (n, u, open, step) = (self.rooms, self.uids(), self.open(), self.step_us());
        let first_open = n - open;
        format!(
            "INSERT INTO call_room (id, source_channel_id, source_channel_type, creator, \
             room_name, call_type, invite_on, max_participants, status, created_at, updated_at, \
             ring_timeout_seconds, max_duration_seconds, solo_timeout_seconds, end_reason, \
             started_at, ended_at, solo_since, deadline) \
             SELECT seq, CONCAT('ch', seq), seq % 3, creator, CONCAT('r', seq), seq % 2, 1, 2, \
             status, created, \
             CASE status WHEN 2 THEN created + INTERVAL (35 + seq % 600) SECOND \
             WHEN 3 THEN created + INTERVAL 20 SECOND ELSE created END, \
             60, 0, 0, \
             CASE status WHEN 2 THEN 'completed' \
             WHEN 3 THEN ELT(1 + (seq DIV 4) % 4, 'missed', 'declined', 'cancelled', 'busy') END, \
             IF(status IN (1, 2), created + INTERVAL 5 SECOND, NULL), \
             CASE status WHEN 2 THEN created + INTERVAL (35 + seq % 600) SECOND \
             WHEN 3 THEN created + INTERVAL 20 SECOND END, \
             NULL, \
             IF(status = 0, CAST('{base}' AS DATETIME(3)) + INTERVAL 1 DAY, NULL) \
             FROM (SELECT seq, \
             IF(seq > {first_open}, CONCAT('u', (2 * (seq - {first_open})) % {u}), \
             CONCAT('u', seq % {u})) AS creator, \
             CASE WHEN seq > {first_open} THEN IF((seq - {first_open}) % 2 = 1, 0, 1) \
             WHEN seq % 4 = 0 THEN 3 ELSE 2 END AS status, \
             TIMESTAMPADD(MICROSECOND, IF(seq > {first_open}, -({n} - seq + 10) * 1000000, \
             -({n} - seq) * {step}), CAST('{base}' AS DATETIME(3))) AS created \
             FROM seq_{lo}_to_{hi}) s"
        )
    }

    /// Two rows per room `lo ..= hi` (ids 2·id − 1 and 2·id): the creator and one invitee,
    /// with statuses, reasons and times that agree with the room's end; every heavy_every-th
    /// room's invitee is a heavy uid.
    pub fn participants_sql(&self, lo: u64, hi: u64) -> String {
        let (u, first_open, every) = (self.uids(), self.rooms - self.open(), self.heavy_every());
        let other = format!(
            "CASE WHEN r.id > {first_open} THEN CONCAT('u', (2 * (r.id - {first_open}) + 1) % {u}) \
             WHEN r.id % {every} = 0 THEN CONCAT('heavy', (r.id DIV {every}) % {HEAVY_UIDS}) \
             ELSE CONCAT('u', (r.id % {u} + 1 + (r.id * 7) % {}) % {u}) END",
            u - 1
        );
        let by_reason = |a: &str, b: &str, c: &str, d: &str| {
            format!(
                "ELT(FIELD(r.end_reason, 'missed', 'declined', 'cancelled', 'busy'), {a}, {b}, {c}, {d})"
            )
        };
        format!(
            "INSERT INTO call_participant (id, room_name, uid, status, join_time, leave_time, \
             created_at, updated_at, reason, invited_at, ring_deadline, ring_seconds, talk_seconds) \
             SELECT 2 * r.id - 1 + k.k, r.room_name, IF(k.k = 0, r.creator, {other}), \
             CASE WHEN r.status IN (0, 1) THEN IF(k.k = 0 OR r.status = 1, 1, 0) \
             WHEN r.status = 2 OR k.k = 0 THEN 3 ELSE {status} END, \
             CASE WHEN k.k = 0 THEN UNIX_TIMESTAMP(r.created_at) * 1000 \
             WHEN r.started_at IS NOT NULL THEN UNIX_TIMESTAMP(r.started_at) * 1000 ELSE 0 END, \
             IF(r.ended_at IS NOT NULL AND (k.k = 0 OR r.status = 2), \
             UNIX_TIMESTAMP(r.ended_at) * 1000, 0), \
             r.created_at, r.updated_at, \
             CASE WHEN r.status = 2 THEN IF((r.id + k.k) % 2 = 0, 'hung_up', 'call_ended') \
             WHEN r.status = 3 AND k.k = 0 THEN 'no_answer' \
             WHEN r.status = 3 THEN {reason} END, \
             IF(k.k = 1, r.created_at, NULL), \
             IF(k.k = 1 AND r.status = 0, r.deadline, NULL), \
             IF(k.k = 0, 0, CASE WHEN r.status IN (1, 2) THEN 5 \
             WHEN r.status = 3 THEN {ring} ELSE 0 END), \
             IF(r.status = 2, TIMESTAMPDIFF(SECOND, r.started_at, r.ended_at), 0) \
             FROM call_room r CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1) k \
             WHERE r.id BETWEEN {lo} AND {hi} ORDER BY r.id, k.k",
            status = by_reason("4", "2", "6", "5"),
            reason = by_reason("'timeout'", "'declined'", "'cancelled'", "'busy'"),
            ring = by_reason("60", "7", "4", "0"),
        )
    }
}

fn db(e: sqlx::Error) -> String {
    format!("scale: {e}")
}

/// One set-based statement (the year phase's loads too); the rows it changed.
pub async fn exec(conn: &mut MySqlConnection, sql: String) -> Result<u64, String> {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(db)
}

async fn schema_comment(server: &mut MySqlConnection, database: &str) -> Option<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT CAST(SCHEMA_COMMENT AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(database)
    .fetch_optional(server)
    .await
    .ok()
    .flatten()
}

/// Creates and fills `database` (or, with `reuse`, keeps one this generator filled with the
/// same shape), then checks the totals and describes what is there.
pub async fn load(ctx: &Ctx, database: &str, spec: Spec, reuse: bool) -> Result<DataSet, String> {
    let mut server = MySqlConnection::connect(&ctx.server_url(""))
        .await
        .map_err(db)?;
    let kept = reuse && schema_comment(&mut server, database).await == Some(spec.marker());
    let started = Instant::now();
    if !kept {
        exec(&mut server, format!("DROP DATABASE IF EXISTS `{database}`")).await?;
        exec(&mut server, format!("CREATE DATABASE `{database}`")).await?;
    }
    let mut conn = MySqlConnection::connect(&ctx.server_url(database))
        .await
        .map_err(db)?;
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| format!("migrate {database}: {e}"))?;
    // UNIX_TIMESTAMP and the literals below are UTC, as the service writes its times.
    exec(&mut conn, "SET time_zone = '+00:00'".to_owned()).await?;
    let base = chrono::Utc::now()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    if kept {
        // Only the open rooms' deadlines move: a day ahead of now, as a fresh load sets them.
        exec(
            &mut conn,
            format!(
                "UPDATE call_room SET deadline = CAST('{base}' AS DATETIME(3)) + INTERVAL 1 DAY \
                 WHERE status = 0"
            ),
        )
        .await?;
        exec(
            &mut conn,
            format!(
                "UPDATE call_participant SET ring_deadline = CAST('{base}' AS DATETIME(3)) + \
                 INTERVAL 1 DAY WHERE status = 0"
            ),
        )
        .await?;
        log(format!(
            "scale: {database} kept from an earlier run (--scale-reuse)"
        ));
    } else {
        sqlx::query_scalar::<_, i64>("SELECT CAST(COUNT(*) AS SIGNED) FROM seq_1_to_3")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("scale: MariaDB's SEQUENCE engine is needed ({e})"))?;
        let batch: u64 = 50_000;
        let mut lo = 1;
        let mut said = Instant::now();
        while lo <= spec.rooms {
            let hi = (lo + batch - 1).min(spec.rooms);
            exec(&mut conn, spec.rooms_sql(lo, hi, &base)).await?;
            exec(&mut conn, spec.participants_sql(lo, hi)).await?;
            if said.elapsed() > Duration::from_secs(15) {
                log(format!(
                    "scale: {database}: {hi} of {} rooms in {:.0} s",
                    spec.rooms,
                    started.elapsed().as_secs_f64()
                ));
                said = Instant::now();
            }
            lo = hi + 1;
        }
        // The bulk load bypasses the store, which keeps room_count in each writing
        // transaction; derive the totals once, as migration 0006 does.
        sqlx::raw_sql(
            "UPDATE room_count c LEFT JOIN (SELECT status, id % 16 AS shard, COUNT(*) AS n \
             FROM call_room GROUP BY status, id % 16) r \
             ON r.status = c.status AND r.shard = c.shard SET c.n = COALESCE(r.n, 0)",
        )
        .execute(&mut conn)
        .await
        .map_err(db)?;
        sqlx::raw_sql("ANALYZE TABLE call_room, call_participant, room_count")
            .execute(&mut conn)
            .await
            .map_err(db)?;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let set = describe(&mut conn, database, spec, load_secs, kept).await?;
    if !set.counts_match {
        return Err(format!(
            "scale: room_count in {database} does not equal the rooms per status and shard"
        ));
    }
    if set.rooms != spec.rooms as i64
        || set.participants != 2 * spec.rooms as i64
        || set.heavy_rows != spec.heavy_rows() as i64
    {
        return Err(format!(
            "scale: {database} holds {} rooms, {} rows and {} of a heavy uid, expected {}, {} \
             and {}",
            set.rooms,
            set.participants,
            set.heavy_rows,
            spec.rooms,
            2 * spec.rooms,
            spec.heavy_rows()
        ));
    }
    if !kept {
        exec(
            &mut server,
            format!(
                "ALTER DATABASE `{database}` COMMENT '{}'",
                spec.marker().replace('\'', "")
            ),
        )
        .await?;
    }
    let _ = conn.close().await;
    let _ = server.close().await;
    Ok(set)
}

async fn count(conn: &mut MySqlConnection, sql: &'static str) -> Result<i64, String> {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(conn)
        .await
        .map_err(db)
}

/// What a loaded database holds, and whether room_count agrees with the rooms.
async fn describe(
    conn: &mut MySqlConnection,
    database: &str,
    spec: Spec,
    load_secs: f64,
    reused: bool,
) -> Result<DataSet, String> {
    let rooms = count(conn, "SELECT CAST(COUNT(*) AS SIGNED) FROM call_room").await?;
    let participants = count(
        conn,
        "SELECT CAST(COUNT(*) AS SIGNED) FROM call_participant",
    )
    .await?;
    let shards = count(conn, "SELECT CAST(COUNT(*) AS SIGNED) FROM room_count").await?;
    let wrong = count(
        conn,
        "SELECT CAST(COUNT(*) AS SIGNED) FROM room_count c LEFT JOIN \
         (SELECT status, id % 16 AS shard, COUNT(*) AS n FROM call_room GROUP BY status, id % 16) r \
         ON r.status = c.status AND r.shard = c.shard WHERE c.n <> COALESCE(r.n, 0)",
    )
    .await?;
    let statuses: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT status, CAST(COUNT(*) AS SIGNED) FROM call_room GROUP BY status ORDER BY status",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let rows_of = async |conn: &mut MySqlConnection, uid: String| {
        sqlx::query_scalar::<_, i64>(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM call_participant WHERE uid = ?",
        )
        .bind(uid)
        .fetch_one(conn)
        .await
        .map_err(db)
    };
    let typical_rows = rows_of(conn, spec.typical_uid(0)).await?;
    let heavy_rows = rows_of(conn, spec.heavy_uid(0)).await?;
    let sizes: (f64, f64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(data_length), 0) AS DOUBLE), \
         CAST(COALESCE(SUM(index_length), 0) AS DOUBLE) \
         FROM information_schema.TABLES WHERE table_schema = ?",
    )
    .bind(database)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    Ok(DataSet {
        database: database.to_owned(),
        rooms,
        participants,
        uids: spec.uids() as i64,
        heavy_uids: HEAVY_UIDS as i64,
        typical_rows,
        heavy_rows,
        statuses,
        counts_match: wrong == 0 && shards == 64,
        load_secs,
        reused,
        data_mb: sizes.0 / 1e6,
        index_mb: sizes.1 / 1e6,
    })
}

/// One warm process per function for one database.
struct Readers {
    list: FunctionProcess,
    calls: FunctionProcess,
    ringing: FunctionProcess,
    spec: Spec,
    /// A cursor the service gave out around the middle of the unfiltered list.
    middle: String,
    /// The cursor the next deep-page request uses (follows next_cursor from `middle`).
    deep: String,
}

/// One request through the Runtime API; 200 with code 0 required; the envelope's data back.
pub async fn request(
    p: &FunctionProcess,
    label: &str,
    call: &HttpCall,
) -> Result<(Duration, Value), String> {
    let payload = events::api_gateway_v2(call, label, chrono::Utc::now().timestamp_millis())
        .to_string()
        .into_bytes();
    let started = Instant::now();
    let (_, body) = p.invoke(label, payload).await?;
    let elapsed = started.elapsed();
    let reply = events::parse_reply(&body)?;
    let value: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    if reply.status != 200 || value["code"].as_i64() != Some(0) {
        return Err(format!(
            "{} {label}: {} {}",
            p.name, reply.status, reply.body
        ));
    }
    Ok((elapsed, value["data"].clone()))
}

fn list_call(token: &str, query: &str) -> HttpCall {
    HttpCall::new("GET", "/api/rooms", "/api/rooms")
        .query(query)
        .bearer(token)
}

fn user_call(token: &str, what: &str, uid: &str) -> HttpCall {
    let route = format!("/api/users/{{uid}}/{what}");
    let call = HttpCall::new("GET", &route, &format!("/api/users/{uid}/{what}")).bearer(token);
    if what == "calls" {
        call.query(&format!("limit={PAGE}"))
    } else {
        call
    }
}

fn array_len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// The request of `query` for round `round`, its time, and a check of what came back.
async fn measure(
    ctx: &Ctx,
    r: &mut Readers,
    query: &str,
    round: u64,
    label: &str,
) -> Result<Duration, String> {
    let token = &ctx.service_token;
    let spec = r.spec;
    let fail = |what: String| Err(format!("scale {query} on {} rooms: {what}", spec.rooms));
    match query {
        "list_first" | "list_status" => {
            let q = if query == "list_first" {
                format!("limit={PAGE}")
            } else {
                format!("limit={PAGE}&status={LIST_STATUS}")
            };
            let (t, data) = request(&r.list, label, &list_call(token, &q)).await?;
            let rooms = data["rooms"].as_array().cloned().unwrap_or_default();
            if rooms.len() != PAGE as usize
                || (query == "list_status"
                    && rooms
                        .iter()
                        .any(|room| room["status"].as_i64() != Some(LIST_STATUS.into())))
            {
                return fail(format!("unexpected page {data}"));
            }
            Ok(t)
        }
        "list_deep" => {
            let q = format!("limit={PAGE}&cursor={}", r.deep);
            let (t, data) = request(&r.list, label, &list_call(token, &q)).await?;
            if array_len(&data["rooms"]) == 0 {
                return fail(format!("an empty page at cursor {}", r.deep));
            }
            r.deep = data["next_cursor"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| r.middle.clone());
            Ok(t)
        }
        "history_typical" | "history_heavy" => {
            let uid = if query == "history_typical" {
                spec.typical_uid(round)
            } else {
                spec.heavy_uid(round)
            };
            let (t, data) = request(&r.calls, label, &user_call(token, "calls", &uid)).await?;
            let calls = array_len(&data["calls"]);
            let heavy_ok = query == "history_typical" || calls == PAGE as usize;
            if calls == 0 || !heavy_ok {
                return fail(format!("{calls} calls for {uid}"));
            }
            Ok(t)
        }
        "ringing_yes" | "ringing_no" => {
            let (uid, want) = if query == "ringing_yes" {
                (spec.ringing_uid(round), 1)
            } else {
                (spec.typical_uid(round + 1_000_003), 0)
            };
            let (t, data) = request(&r.ringing, label, &user_call(token, "ringing", &uid)).await?;
            if array_len(&data) != want {
                return fail(format!("{uid} rings in {data}"));
            }
            Ok(t)
        }
        other => Err(format!("no scale query {other}")),
    }
}

async fn readers(ctx: &Ctx, database: &str, spec: Spec, tag: usize) -> Result<Readers, String> {
    let env = ctx.env(&ctx.server_url(database), true);
    let spawn = async |name: &str| {
        FunctionProcess::spawn(&ctx.opts.bin_dir, name, &env, &ctx.log_dir, tag).await
    };
    let list = spawn("list-rooms").await?;
    let calls = spawn("user-calls").await?;
    let ringing = spawn("user-ringing").await?;
    // The middle of the list, as a client reaches it: one offset page (the slow way the API
    // still accepts), whose next_cursor the measured requests then follow page by page.
    let offset = spec.rooms / 2;
    let query = format!("limit={PAGE}&offset={offset}");
    let (_, data) = request(&list, "middle", &list_call(&ctx.service_token, &query)).await?;
    let middle = data["next_cursor"]
        .as_str()
        .ok_or_else(|| format!("scale: no next_cursor at offset {offset}: {data}"))?
        .to_owned();
    if data["total"].as_i64() != Some(spec.rooms as i64) {
        return Err(format!(
            "scale: list total {} on {} rooms",
            data["total"], spec.rooms
        ));
    }
    Ok(Readers {
        list,
        calls,
        ringing,
        spec,
        deep: middle.clone(),
        middle,
    })
}

/// The whole phase.
pub async fn run(ctx: &Ctx) -> Result<ScaleOutcome, String> {
    let (big_db, small_db) = if ctx.opts.smoke {
        ("call_bench_scale_smoke", "call_bench_small_smoke")
    } else {
        ("call_bench_scale", "call_bench_small")
    };
    let big_spec = Spec {
        rooms: ctx.opts.scale_rooms,
    };
    let small_spec = Spec {
        rooms: ctx.opts.small_rooms,
    };
    if big_spec.rooms < 200 || small_spec.rooms < 200 {
        return Err("scale: at least 200 rooms per data set".to_owned());
    }
    log(format!(
        "scale: loading {} rooms into {big_db} and {} into {small_db}",
        big_spec.rooms, small_spec.rooms
    ));
    let big = load(ctx, big_db, big_spec, ctx.opts.scale_reuse).await?;
    log(format!(
        "scale: {big_db}: {} rooms, {} rows in {:.1} s{}",
        big.rooms,
        big.participants,
        big.load_secs,
        if big.reused { " (kept)" } else { "" }
    ));
    let small = load(ctx, small_db, small_spec, ctx.opts.scale_reuse).await?;
    log(format!(
        "scale: {small_db}: {} rooms, {} rows in {:.1} s",
        small.rooms, small.participants, small.load_secs
    ));

    let pool = match ctx.opts.scale_pool_mb {
        Some(mb) => Some(set_pool(ctx, mb, &[big_db, small_db]).await?),
        None => None,
    };
    let measured = measure_rounds(ctx, [big_db, small_db], [big_spec, small_spec]).await;
    if let Some((_, was, _)) = pool {
        restore_pool(ctx, was).await;
    }
    let rows = measured?;

    let mut conn = MySqlConnection::connect(&ctx.server_url(big_db))
        .await
        .map_err(db)?;
    log("scale: EXPLAIN of the requests' SQL, and the list SQL sent before");
    let explains = explain_all(&mut conn, big_spec).await?;
    let old_runs = ctx.opts.old_runs.max(1);
    let old = old_style(&mut conn, big_spec, old_runs).await?;
    let _ = conn.close().await;
    Ok(ScaleOutcome {
        big,
        small,
        rounds: ctx.opts.scale_rounds,
        warmup: ctx.opts.scale_warmup,
        rows,
        explains,
        old,
        old_runs,
        pool,
    })
}

/// Sets the buffer pool to `mb` and reads every table and index of `databases` into it;
/// answers (mb, the server's size in MB before, seconds the reading took).
pub async fn set_pool(ctx: &Ctx, mb: u64, databases: &[&str]) -> Result<(u64, u64, f64), String> {
    let mut conn = MySqlConnection::connect(&ctx.server_url(databases[0]))
        .await
        .map_err(db)?;
    let was: u64 = sqlx::query_scalar("SELECT @@GLOBAL.innodb_buffer_pool_size")
        .fetch_one(&mut conn)
        .await
        .map_err(db)?;
    let was_mb = was / (1024 * 1024);
    log(format!(
        "scale: buffer pool {was_mb} MB -> {mb} MB for the rounds, data sets read in"
    ));
    exec(
        &mut conn,
        format!("SET GLOBAL innodb_buffer_pool_size = {}", mb * 1024 * 1024),
    )
    .await?;
    // The resize runs in the background; wait until the server reports the new size.
    for _ in 0..300 {
        let now: u64 = sqlx::query_scalar("SELECT @@GLOBAL.innodb_buffer_pool_size")
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
        let status: Option<(String, String)> =
            sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'")
                .fetch_optional(&mut conn)
                .await
                .map_err(db)?;
        let busy = status.is_some_and(|(_, s)| !s.is_empty() && !s.contains("ompleted"));
        if now == mb * 1024 * 1024 && !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    for database in databases {
        for (table, index) in POOL_READS {
            exec(
                &mut conn,
                format!("SELECT COUNT(*) FROM {database}.{table} FORCE INDEX ({index})"),
            )
            .await?;
        }
        // The rows themselves: the clustered index (a plain SUM would read a covering one).
        exec(
            &mut conn,
            format!(
                "SELECT SUM(LENGTH(room_name)) FROM {database}.call_participant FORCE INDEX (PRIMARY)"
            ),
        )
        .await?;
        exec(
            &mut conn,
            format!(
                "SELECT SUM(LENGTH(room_name)) FROM {database}.call_room FORCE INDEX (PRIMARY)"
            ),
        )
        .await?;
    }
    let _ = conn.close().await;
    Ok((mb, was_mb, started.elapsed().as_secs_f64()))
}

/// Every index the measured reads use.
const POOL_READS: &[(&str, &str)] = &[
    ("call_participant", "ix_participant_uid_id"),
    ("call_participant", "uq_room_uid"),
    ("call_participant", "uq_live_uid"),
    ("call_room", "uq_room_name"),
    ("call_room", "ix_room_status_id"),
];

pub async fn restore_pool(ctx: &Ctx, mb: u64) {
    let restored = async {
        let mut conn = MySqlConnection::connect(&ctx.server_url("mysql"))
            .await
            .map_err(db)?;
        exec(
            &mut conn,
            format!("SET GLOBAL innodb_buffer_pool_size = {}", mb * 1024 * 1024),
        )
        .await?;
        let _ = conn.close().await;
        Ok::<(), String>(())
    };
    if let Err(e) = restored.await {
        log(format!(
            "scale: could not restore the buffer pool to {mb} MB: {e}"
        ));
    }
}

/// Each item's samples (µs) at both sizes, `[large, small]`: `warmup` rounds unrecorded (their
/// label is "warm"), then `rounds`; within a round every item at both sizes, the size that
/// goes first alternating so neither always follows the other's I/O.
pub async fn interleaved<S>(
    items: &[&str],
    warmup: usize,
    rounds: usize,
    sides: &mut [S; 2],
    mut measure: impl AsyncFnMut(&mut S, &str, u64, &str) -> Result<Duration, String>,
) -> Result<Vec<[Vec<f64>; 2]>, String> {
    let mut samples: Vec<[Vec<f64>; 2]> = items.iter().map(|_| [vec![], vec![]]).collect();
    for round in 0..warmup + rounds {
        let measured = round >= warmup;
        for (i, item) in items.iter().enumerate() {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let label = if measured { item } else { "warm" };
                let t = measure(&mut sides[side], item, round as u64, label).await?;
                if measured {
                    samples[i][side].push(micros(t));
                }
            }
        }
    }
    Ok(samples)
}

/// The interleaved rounds: p50/p99 of each read at both sizes.
pub async fn measure_rounds(
    ctx: &Ctx,
    [big_db, small_db]: [&str; 2],
    [big_spec, small_spec]: [Spec; 2],
) -> Result<Vec<ScaleRow>, String> {
    let mut sets = [
        readers(ctx, big_db, big_spec, 30).await?,
        readers(ctx, small_db, small_spec, 31).await?,
    ];
    let (warmup, rounds) = (ctx.opts.scale_warmup, ctx.opts.scale_rounds);
    log(format!(
        "scale: {rounds} rounds after {warmup} warm-up rounds, both sizes interleaved"
    ));
    let names: Vec<&str> = QUERIES.iter().map(|(query, _)| *query).collect();
    let samples = interleaved(
        &names,
        warmup,
        rounds,
        &mut sets,
        async |set, query, round, label| measure(ctx, set, query, round, label).await,
    )
    .await?;
    let rows = QUERIES
        .iter()
        .zip(samples)
        .map(|((query, _), [b, s])| ScaleRow {
            query: query.to_string(),
            big: summarize(&b),
            small: summarize(&s),
        })
        .collect();
    drop(sets);
    Ok(rows)
}

#[derive(Debug, Clone)]
pub enum Bind {
    Int(i64),
    Small(i16),
    Text(String),
}

type Query<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

fn bound(sql: String, binds: &[Bind]) -> Query<'static> {
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for b in binds {
        q = match b {
            Bind::Int(v) => q.bind(*v),
            Bind::Small(v) => q.bind(*v),
            Bind::Text(v) => q.bind(v.clone()),
        };
    }
    q
}

/// `EXPLAIN FORMAT=JSON` of one statement with its binds: every table access in the plan.
pub async fn explain(
    conn: &mut MySqlConnection,
    sql: &str,
    binds: &[Bind],
) -> Result<Vec<Access>, String> {
    let row = bound(format!("EXPLAIN FORMAT=JSON {sql}"), binds)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("EXPLAIN {sql}: {e}"))?;
    let text: String = row
        .try_get::<String, _>(0)
        .or_else(|_| {
            row.try_get::<Vec<u8>, _>(0)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .map_err(db)?;
    let plan: Value =
        serde_json::from_str(&text).map_err(|e| format!("EXPLAIN output ({e}): {text}"))?;
    let mut out = Vec::new();
    accesses(&plan, &mut out);
    Ok(out)
}

/// Every object of the plan that reads a table (has `table_name` and `access_type`).
pub fn accesses(v: &Value, out: &mut Vec<Access>) {
    match v {
        Value::Object(map) => {
            if let (Some(table), Some(access)) = (
                map.get("table_name").and_then(Value::as_str),
                map.get("access_type").and_then(Value::as_str),
            ) {
                let bounded = BOUNDED_TABLES.iter().any(|(t, _)| *t == table);
                out.push(Access {
                    table: table.to_owned(),
                    access_type: access.to_owned(),
                    key: map.get("key").and_then(Value::as_str).map(str::to_owned),
                    rows: map.get("rows").and_then(Value::as_f64),
                    bounded,
                });
            }
            for value in map.values() {
                accesses(value, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                accesses(item, out);
            }
        }
        _ => {}
    }
}

/// The statements the measured requests send, with binds from the large data set.
async fn explain_all(conn: &mut MySqlConnection, spec: Spec) -> Result<Vec<ExplainRow>, String> {
    for (table, rows) in BOUNDED_TABLES {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM {table}"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        if n != *rows {
            return Err(format!(
                "scale: {table} has {n} rows, not the {rows} its schema fixes"
            ));
        }
    }
    let limit = Bind::Int(PAGE + 1);
    let middle = (spec.rooms - spec.rooms / 2) as i64;
    let typical = spec.typical_uid(0);
    let heavy = spec.heavy_uid(0);
    // The heavy uid's first page: its rooms (for the others query) and where page 2 starts.
    let page: Vec<(String, i64)> = bound(
        history_sql(false),
        &[Bind::Text(heavy.clone()), limit.clone()],
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .iter()
    .map(|row| Ok((row.try_get("room_name")?, row.try_get("p_id")?)))
    .collect::<Result<_, sqlx::Error>>()
    .map_err(db)?;
    let next_row = page.get(PAGE as usize - 1).map_or(i64::MAX, |(_, id)| *id);
    let rooms: Vec<Bind> = page
        .iter()
        .take(PAGE as usize)
        .map(|(r, _)| Bind::Text(r.clone()))
        .collect();
    let ringing = spec.ringing_uid(0);
    let ring_room: Option<String> = sqlx::query_scalar(RINGING)
        .bind(&ringing)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    let ring_room = ring_room.ok_or_else(|| format!("scale: {ringing} does not ring"))?;
    let mut others_binds = rooms.clone();
    others_binds.push(Bind::Text(heavy.clone()));

    let statements: Vec<(&str, &str, String, Vec<Bind>)> = vec![
        (
            "list_first",
            "the page",
            list_page_sql(false, false, false),
            vec![limit.clone()],
        ),
        ("list_first", "the total", COUNT_ALL.to_owned(), vec![]),
        (
            "list_status",
            "the page",
            list_page_sql(true, false, false),
            vec![Bind::Small(LIST_STATUS), limit.clone()],
        ),
        (
            "list_status",
            "the total",
            COUNT_STATUS.to_owned(),
            vec![Bind::Small(LIST_STATUS)],
        ),
        (
            "list_deep",
            "the page",
            list_page_sql(false, true, false),
            vec![Bind::Int(middle), limit.clone()],
        ),
        (
            "history_typical",
            "the page",
            history_sql(false),
            vec![Bind::Text(typical), limit.clone()],
        ),
        (
            "history_heavy",
            "the page",
            history_sql(false),
            vec![Bind::Text(heavy.clone()), limit.clone()],
        ),
        (
            "history_heavy",
            "the next page (cursor)",
            history_sql(true),
            vec![Bind::Text(heavy), Bind::Int(next_row), limit.clone()],
        ),
        (
            "history_heavy",
            "everyone else in the page's calls",
            others_sql(rooms.len()),
            others_binds,
        ),
        (
            "ringing_yes",
            "the uid's live invite",
            RINGING.to_owned(),
            vec![Bind::Text(ringing)],
        ),
        (
            "ringing_yes",
            "the call it rings in",
            LOAD_CALL.to_owned(),
            vec![Bind::Text(ring_room)],
        ),
    ];
    let mut out = Vec::new();
    for (query, part, sql, binds) in statements {
        let accesses = explain(conn, &sql, &binds).await?;
        out.push(ExplainRow {
            request: title(query).to_owned(),
            part: part.to_owned(),
            sql,
            accesses,
        });
    }
    Ok(out)
}

async fn time_runs(
    conn: &mut MySqlConnection,
    sql: &str,
    binds: &[Bind],
    runs: usize,
) -> Result<Summary, String> {
    let mut times = Vec::with_capacity(runs);
    // One unmeasured run: the statement prepared and its pages read, as a warm server has them.
    for i in 0..=runs {
        let started = Instant::now();
        bound(sql.to_owned(), binds)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        if i > 0 {
            times.push(micros(started.elapsed()));
        }
    }
    Ok(summarize(&times))
}

fn plan_text(accesses: &[Access]) -> String {
    accesses
        .iter()
        .map(|a| {
            format!(
                "{} {}{}",
                a.access_type,
                a.key.as_deref().unwrap_or("no index"),
                a.rows
                    .map(|r| format!(", ~{r:.0} rows"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The list SQL of the service before migration 0003 (still what `?offset=` sends), against
/// what replaced it, on the same data.
async fn old_style(
    conn: &mut MySqlConnection,
    spec: Spec,
    runs: usize,
) -> Result<Vec<OldRow>, String> {
    let offset = (spec.rooms / 2) as i64;
    let limit = Bind::Int(PAGE + 1);
    let first_after = spec.rooms as i64 - offset + 1;
    // (what, issue 10's figure, the SQL before and its binds, the SQL now and its binds)
    type Case = (
        String,
        &'static str,
        (String, Vec<Bind>),
        (String, Vec<Bind>),
    );
    let cases: Vec<Case> = vec![
        (
            "unfiltered total".to_owned(),
            "266–305 ms",
            (format!("{COUNT_ROOMS}{WHERE_ALL}"), vec![]),
            (COUNT_ALL.to_owned(), vec![]),
        ),
        (
            format!("a page at offset {offset}"),
            "277–337 ms",
            (
                list_page_sql(false, false, true),
                vec![limit.clone(), Bind::Int(offset)],
            ),
            (
                list_page_sql(false, true, false),
                vec![Bind::Int(first_after), limit],
            ),
        ),
        (
            format!("status-filtered total (status={LIST_STATUS})"),
            "164–170 ms",
            (
                format!("{COUNT_ROOMS}{WHERE_ALL}{AND_STATUS}"),
                vec![Bind::Small(LIST_STATUS)],
            ),
            (COUNT_STATUS.to_owned(), vec![Bind::Small(LIST_STATUS)]),
        ),
    ];
    let mut out = Vec::new();
    for (what, before, (old_sql, old_binds), (new_sql, new_binds)) in cases {
        let old = time_runs(conn, &old_sql, &old_binds, runs).await?;
        let new = time_runs(conn, &new_sql, &new_binds, runs).await?;
        let old_plan = plan_text(&explain(conn, &old_sql, &old_binds).await?);
        let new_plan = plan_text(&explain(conn, &new_sql, &new_binds).await?);
        out.push(OldRow {
            what,
            before,
            old_sql,
            old,
            old_plan,
            new_sql,
            new,
            new_plan,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::tests::{has, store_source};

    #[test]
    fn the_scale_sql_is_the_stores_sql() {
        let store = store_source();
        // Where the store pushes a bind, the piece ends before the `?`.
        let before_bind = |piece: &str| piece.trim_end_matches('?').to_owned();
        for piece in [
            format!("concat!(\"SELECT \", room_columns!(), \"{ROOMS_FROM}\")"),
            format!("query.push(\"{WHERE_ALL}\")"),
            format!(
                "query.push(\"{}\").push_bind(status.code())",
                before_bind(AND_STATUS)
            ),
            format!(
                "select.push(\"{}\").push_bind(before)",
                before_bind(AND_BEFORE_ROOM)
            ),
            format!(
                ".push(\"{}\") .push_bind(page.limit + 1)",
                before_bind(NEWEST_ROOMS)
            ),
            format!(
                "select.push(\"{}\").push_bind(page.offset)",
                before_bind(AND_OFFSET)
            ),
            format!("const COUNT_ALL: &str = \"{COUNT_ALL}\";"),
            format!("const COUNT_STATUS: &str = \"{COUNT_STATUS}\";"),
            format!("QueryBuilder::<Db>::new(\"{COUNT_ROOMS}\")"),
            format!(
                "\"SELECT \", room_columns!(), \", \", participant_columns!(), \"{}\" )); \
                 select.push_bind(uid.to_owned());",
                before_bind(HISTORY_FROM)
            ),
            format!(
                "select.push(\"{}\").push_bind(before)",
                before_bind(AND_BEFORE_ROW)
            ),
            format!(
                ".push(\"{}\") .push_bind(limit + 1)",
                before_bind(NEWEST_ROWS)
            ),
            format!("QueryBuilder::<Db>::new(\"{OTHERS_OPEN}\")"),
            "let mut list = query.separated(\", \");".to_owned(),
            "query.push(\") AND uid <> \").push_bind(uid.to_owned()); query.push(\" ORDER BY id\");"
                .to_owned(),
            "\"SELECT r.room_name FROM call_participant p JOIN call_room r \", \
             \"ON r.room_name = p.room_name WHERE \", live_row_of!(), \" AND p.status = 0\""
                .to_owned(),
            "\"p.live_uid = ?\"".to_owned(),
            "let rows = sqlx::query(LOAD_CALL)".to_owned(),
        ] {
            assert!(has(&store, &piece), "the store no longer sends {piece:?}");
        }
        // What the pieces add up to, as sent.
        assert_eq!(
            RINGING,
            "SELECT r.room_name FROM call_participant p JOIN call_room r ON r.room_name = \
             p.room_name WHERE p.live_uid = ? AND p.status = 0"
        );
        assert!(list_page_sql(true, false, false).ends_with(
            " FROM call_room r WHERE 1 = 1 AND r.status = ? ORDER BY r.id DESC LIMIT ?"
        ));
        assert!(
            history_sql(true).ends_with(" WHERE p.uid = ? AND p.id < ? ORDER BY p.id DESC LIMIT ?")
        );
        assert_eq!(
            others_sql(2),
            "SELECT room_name, uid FROM call_participant WHERE room_name IN (?, ?) AND uid <> ? \
             ORDER BY id"
        );
    }

    #[test]
    fn the_generated_uids_fit_the_data_set() {
        for rooms in [200, 1000, 2000, 1_000_000] {
            let spec = Spec { rooms };
            let live_max = 2 * spec.open() + 1;
            assert!(live_max < spec.uids(), "{rooms}: live uids wrap around");
            for i in 0..50 {
                let typical: u64 = spec.typical_uid(i)[1..].parse().expect("a number");
                assert!(
                    typical > live_max && typical < spec.uids(),
                    "{rooms}: u{typical}"
                );
                let ringing: u64 = spec.ringing_uid(i)[1..].parse().expect("a number");
                // Open room j's invitee is u(2j+1); j odd rings.
                assert!(ringing >= 3 && ringing <= live_max && (ringing - 1) / 2 % 2 == 1);
            }
        }
        assert_eq!(Spec { rooms: 1_000_000 }.heavy_rows(), 4995);
        for rooms in [200, 1000, 2000] {
            let rows = Spec { rooms }.heavy_rows();
            assert!(
                (45..=60).contains(&rows),
                "{rooms} rooms: {rows} heavy rows"
            );
        }
        assert_eq!(Spec { rooms: 1_000_000 }.open(), 1000);
    }

    #[test]
    fn plans_are_read_from_explain_json() {
        let plan: Value = serde_json::from_str(
            r#"{"query_block":{"select_id":1,"nested_loop":[
                {"table":{"table_name":"p","access_type":"ref","key":"ix_participant_uid_id","rows":10}},
                {"table":{"table_name":"r","access_type":"eq_ref","key":"uq_room_name","rows":1}}]},
              "x":{"table":{"table_name":"room_count","access_type":"ALL","rows":64}}}"#,
        )
        .expect("json");
        let mut found = Vec::new();
        accesses(&plan, &mut found);
        let types: Vec<(&str, &str, bool)> = found
            .iter()
            .map(|a| (a.table.as_str(), a.access_type.as_str(), a.bounded))
            .collect();
        assert_eq!(
            types,
            vec![
                ("p", "ref", false),
                ("r", "eq_ref", false),
                ("room_count", "ALL", true)
            ]
        );
        assert_eq!(
            plan_text(&found[..1]),
            "ref ix_participant_uid_id, ~10 rows"
        );
    }
}
