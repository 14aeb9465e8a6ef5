//! The year phase: the event tables of a year of calls on top of the scale phase's rooms, and
//! the event reads and passes at that size beside the same on the small data set.
//!
//! The rooms come from the scale phase's loader (kept when an earlier run loaded the same
//! shape). On top of each room: two events (created, ended; numbered 1 and 2, at the room's
//! creation), one delivery stream per configured endpoint (delivered up to 2), one attempt per
//! event; all set-based, `INSERT … SELECT` from call_room in batches of 50,000 rooms. Every
//! event is published in the feed (100 a batch) and owed to nobody, so the oldest are what a
//! purge pass deletes. Then, through the real function binaries: the feed (first page, a page
//! after a cursor in the middle), one event's details, a redelivery, one deliver-events pass
//! with 100 rooms due (made due before each pass, not timed) and one purge pass (the 1,000
//! events it deleted written back after it, not timed), interleaved round by round at both
//! sizes; the scale phase's room and history reads on the same databases; the feed read by N
//! readers at once beside one; and EXPLAIN of the statements those send, on the large set.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection};
use tokio::io::BufReader;
use tokio::net::TcpListener;

use crate::events::HttpCall;
use crate::report::{ExplainRow, ScaleRow, thousands};
use crate::runtime_api::{FunctionEnv, FunctionProcess};
use crate::scale::exec;
use crate::scale::{self, Bind, Spec};
use crate::stats::{Summary, micros, summarize};
use crate::{Ctx, http, log};

/// Rooms a deliver-events pass takes (event_sweeper::ROOMS_PER_PASS).
const DUE_ROOMS: u64 = call_shared::event_sweeper::ROOMS_PER_PASS as u64;
/// Events a purge pass deletes (event_sweeper::PURGE_BATCH): the oldest, rooms 1 ..= 500.
const PURGED: u64 = call_shared::event_sweeper::PURGE_BATCH as u64;
/// Events per feed batch in the generated data.
const FEED_BATCH: u64 = 100;
/// Events per feed page of the measured reads.
const FEED_PAGE: u64 = 50;
/// Rooms per load statement.
const BATCH: u64 = 50_000;

const SECRET: &str = "whsec_YmVuY2gtd2ViaG9vay1zaWduaW5nLWtleS0zMmJ5dGU=";

/// The requests and passes measured, in report order: (key, title).
pub const ITEMS: &[(&str, &str)] = &[
    ("feed_first", "GET /api/events, first page"),
    (
        "feed_after",
        "GET /api/events, a page after a cursor (middle of the feed)",
    ),
    ("event", "GET /api/events/{id}"),
    ("redeliver", "POST /api/events/{id}/redeliver"),
    ("deliver_pass", "deliver-events pass, 100 rooms due"),
    ("purge_pass", "deliver-events purge pass, 1,000 events"),
];

#[derive(Debug, Clone)]
pub struct YearRow {
    pub title: String,
    pub big: Summary,
    pub small: Summary,
}

#[derive(Debug, Clone, Default)]
pub struct EventSet {
    pub rooms: i64,
    pub events: i64,
    pub streams: i64,
    pub attempts: i64,
    pub load_secs: f64,
    pub kept: bool,
}

#[derive(Debug, Clone)]
pub struct Readers {
    /// (readers at once, their requests' latencies, requests per second, InnoDB row lock
    /// waits on the server meanwhile), one reader first.
    pub steps: Vec<(usize, Summary, f64, i64)>,
}

#[derive(Debug, Clone)]
pub struct YearOutcome {
    pub big: EventSet,
    pub small: EventSet,
    pub rounds: usize,
    pub rows: Vec<YearRow>,
    pub room_reads: Vec<ScaleRow>,
    pub readers: Readers,
    pub explains: Vec<ExplainRow>,
    pub pool_mb: Option<u64>,
}

fn db(e: sqlx::Error) -> String {
    format!("year: {e}")
}

async fn count(conn: &mut MySqlConnection, sql: String) -> Result<i64, String> {
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .map_err(db)
}

/// Event id `id` (rooms' events are numbered 2·(room − 1) + seq).
fn event_id(id: u64) -> String {
    format!("evt_y{id}")
}

/// Two events for each room `lo ..= hi`, at the room's creation (+1 s for the second),
/// published in batches of FEED_BATCH, each owed to one endpoint (they take turns, as the
/// attempts do) and delivered: owed to nobody now.
fn events_sql(lo: u64, hi: u64, keys: &[String], ignore: bool) -> String {
    let id = "2 * (r.id - 1) + k.k";
    let at = "r.created_at + INTERVAL (k.k - 1) SECOND";
    format!(
        "INSERT {ig} INTO call_event (id, event_id, room_name, seq, type, occurred_at, payload, \
         endpoints, owed, due_at, feed_batch, created_at) \
         SELECT {id}, CONCAT('evt_y', {id}), r.room_name, k.k, \
         IF(k.k = 1, 'room.created', 'room.ended'), {at}, \
         CONCAT('{{\"id\":\"evt_y', {id}, '\",\"type\":\"', IF(k.k = 1, 'room.created', \
         'room.ended'), '\",\"room_name\":\"', r.room_name, '\",\"seq\":', k.k, \
         ',\"occurred_at\":\"', DATE_FORMAT({at}, '%Y-%m-%dT%H:%i:%s.%fZ'), \
         '\",\"data\":{{\"creator\":\"', r.creator, '\",\"call_type\":', r.call_type, '}}}}'), \
         IF(({id}) % 2 = 0, '{a}', '{b}'), 0, NULL, 1 + ({id} - 1) DIV {FEED_BATCH}, {at} \
         FROM call_room r CROSS JOIN (SELECT 1 AS k UNION ALL SELECT 2) k \
         WHERE r.id BETWEEN {lo} AND {hi} ORDER BY r.id, k.k",
        ig = if ignore { "IGNORE" } else { "" },
        a = keys[0],
        b = keys[1],
    )
}

/// One stream per endpoint for each room `lo ..= hi`, delivered up to seq 2.
fn streams_sql(lo: u64, hi: u64, key: &str, ignore: bool) -> String {
    format!(
        "INSERT {ig} INTO event_stream (endpoint, room_name, delivered_seq, attempts, \
         next_attempt_at) SELECT '{key}', room_name, 2, 0, created_at + INTERVAL 2 SECOND \
         FROM call_room WHERE id BETWEEN {lo} AND {hi}",
        ig = if ignore { "IGNORE" } else { "" },
    )
}

/// One delivered attempt per event of rooms `lo ..= hi`, the endpoints taking turns.
fn attempts_sql(lo: u64, hi: u64, keys: &[String], ignore: bool) -> String {
    format!(
        "INSERT {ig} INTO event_attempt (id, event_id, endpoint, url, attempt, outcome, \
         http_status, latency_ms, error, inline_attempt, attempted_at) \
         SELECT e.id, e.event_id, IF(e.id % 2 = 0, '{a}', '{b}'), \
         IF(e.id % 2 = 0, 'http://127.0.0.1/a', 'http://127.0.0.1/b'), 1, 'delivered', 200, \
         5 + e.id % 40, NULL, 1, e.created_at + INTERVAL 50000 MICROSECOND \
         FROM call_event e WHERE e.id BETWEEN {first} AND {last}",
        ig = if ignore { "IGNORE" } else { "" },
        a = keys[0],
        b = keys[1],
        first = 2 * (lo - 1) + 1,
        last = 2 * hi,
    )
}

async fn fill(
    conn: &mut MySqlConnection,
    lo: u64,
    hi: u64,
    keys: &[String],
    ignore: bool,
) -> Result<(), String> {
    exec(conn, events_sql(lo, hi, keys, ignore)).await?;
    for key in keys {
        exec(conn, streams_sql(lo, hi, key, ignore)).await?;
    }
    exec(conn, attempts_sql(lo, hi, keys, ignore)).await?;
    Ok(())
}

async fn describe(conn: &mut MySqlConnection) -> Result<EventSet, String> {
    let n = async |conn: &mut MySqlConnection, table: &str| {
        count(
            conn,
            format!("SELECT CAST(COUNT(*) AS SIGNED) FROM {table}"),
        )
        .await
    };
    Ok(EventSet {
        rooms: n(conn, "call_room").await?,
        events: n(conn, "call_event").await?,
        streams: n(conn, "event_stream").await?,
        attempts: n(conn, "event_attempt").await?,
        ..EventSet::default()
    })
}

/// The rooms (scale phase's loader, kept when already there) and the event tables.
async fn load(ctx: &Ctx, database: &str, spec: Spec, keys: &[String]) -> Result<EventSet, String> {
    scale::load(ctx, database, spec, true).await?;
    let mut conn = MySqlConnection::connect(&ctx.server_url(database))
        .await
        .map_err(db)?;
    exec(&mut conn, "SET time_zone = '+00:00'".to_owned()).await?;
    let started = Instant::now();
    let r = spec.rooms as i64;
    let have = describe(&mut conn).await?;
    let stream_keys = count(
        &mut conn,
        format!(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM event_stream WHERE endpoint = '{}' \
             AND room_name = 'r1'",
            keys[0]
        ),
    )
    .await?;
    let kept =
        have.events == 2 * r && have.streams == 2 * r && have.attempts >= 2 * r && stream_keys == 1;
    if !kept {
        for table in ["event_attempt", "event_stream", "call_event"] {
            exec(&mut conn, format!("TRUNCATE TABLE {table}")).await?;
        }
        let mut lo = 1;
        let mut said = Instant::now();
        while lo <= spec.rooms {
            let hi = (lo + BATCH - 1).min(spec.rooms);
            fill(&mut conn, lo, hi, keys, false).await?;
            if said.elapsed() > Duration::from_secs(15) {
                log(format!(
                    "year: {database}: events of {hi} of {} rooms in {:.0} s",
                    spec.rooms,
                    started.elapsed().as_secs_f64()
                ));
                said = Instant::now();
            }
            lo = hi + 1;
        }
        exec(&mut conn, "UPDATE call_room SET event_seq = 2".to_owned()).await?;
        exec(
            &mut conn,
            "ANALYZE TABLE call_event, event_stream, event_attempt".to_owned(),
        )
        .await?;
    }
    // The feed head at the newest batch, as the sweep leaves it.
    exec(
        &mut conn,
        "UPDATE event_feed_head SET batch = (SELECT COALESCE(MAX(feed_batch), 0) FROM call_event) \
         WHERE id = 1"
            .to_owned(),
    )
    .await?;
    exec(&mut conn, "DELETE FROM event_endpoint".to_owned()).await?;
    let mut set = describe(&mut conn).await?;
    if set.events != 2 * r || set.streams != 2 * r || set.attempts < 2 * r {
        return Err(format!(
            "year: {database} holds {set:?}, expected {r} rooms' worth"
        ));
    }
    set.load_secs = started.elapsed().as_secs_f64();
    set.kept = kept;
    let _ = conn.close().await;
    Ok(set)
}

/// A receiver that answers every delivery 200 at once.
async fn receiver(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            while let Ok(Some(_)) = http::read_request(&mut read).await {
                if http::write_response(&mut write, 200, &[], b"")
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}

/// The function processes of one data set.
struct Side {
    database: String,
    spec: Spec,
    list: FunctionProcess,
    get: FunctionProcess,
    redeliver: FunctionProcess,
    /// deliver-events with a retention no event reaches: a pass delivers and purges nothing.
    deliver: FunctionProcess,
    /// deliver-events with the default retention and nothing due: a pass purges.
    purge: FunctionProcess,
    conn: MySqlConnection,
    keys: Vec<String>,
    middle: String,
}

fn with(env: &FunctionEnv, extra: &[(&str, &str)]) -> FunctionEnv {
    let mut vars = env.vars.clone();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    FunctionEnv { vars }
}

/// The feed cursor just after event `id` (its batch and id), as the service encodes it.
fn cursor_after(id: u64) -> String {
    call_shared::store::FeedCursor {
        batch: (1 + (id - 1) / FEED_BATCH) as i64,
        id: id as i64,
    }
    .encode()
}

async fn side(
    ctx: &Ctx,
    database: &str,
    spec: Spec,
    endpoints: &str,
    keys: &[String],
    tag: usize,
) -> Result<Side, String> {
    let base = with(
        &ctx.env(&ctx.server_url(database), true),
        &[("EVENT_ENDPOINTS", endpoints)],
    );
    let spawn = async |name: &str, env: &FunctionEnv, i: usize| {
        FunctionProcess::spawn(&ctx.opts.bin_dir, name, env, &ctx.log_dir, tag * 10 + i).await
    };
    let conn = MySqlConnection::connect(&ctx.server_url(database))
        .await
        .map_err(db)?;
    Ok(Side {
        database: database.to_owned(),
        spec,
        list: spawn("list-events", &base, 0).await?,
        get: spawn("get-event", &base, 0).await?,
        redeliver: spawn("redeliver-event", &base, 0).await?,
        deliver: spawn(
            "deliver-events",
            &with(&base, &[("EVENT_RETENTION_DAYS", "3650")]),
            0,
        )
        .await?,
        purge: spawn(
            "deliver-events",
            &with(&base, &[("EVENT_RETENTION_DAYS", "7")]),
            1,
        )
        .await?,
        conn,
        keys: keys.to_vec(),
        middle: cursor_after(spec.rooms),
    })
}

fn feed_call(token: &str, after: Option<&str>) -> HttpCall {
    let query = match after {
        Some(c) => format!("limit={FEED_PAGE}&after={c}"),
        None => format!("limit={FEED_PAGE}"),
    };
    HttpCall::new("GET", "/api/events", "/api/events")
        .query(&query)
        .bearer(token)
}

/// A sweep invocation; its report back.
async fn sweep(p: &FunctionProcess, label: &str) -> Result<(Duration, Value), String> {
    let started = Instant::now();
    let (_, body) = p.invoke(label, b"{}".to_vec()).await?;
    let elapsed = started.elapsed();
    let report: Value =
        serde_json::from_slice(&body).map_err(|e| format!("{label}: {e}: {body:?}"))?;
    Ok((elapsed, report))
}

/// Rooms a round's deliver pass takes: windows of 100 from the newest down, clear of the
/// oldest rooms a purge pass deletes.
fn due_window(spec: Spec, round: u64) -> (u64, u64) {
    let windows = ((spec.rooms - PURGED / 2) / DUE_ROOMS).clamp(1, 50);
    let hi = spec.rooms - DUE_ROOMS * (round % windows);
    (hi - DUE_ROOMS + 1, hi)
}

/// An event of a room in the middle, clear of the purge and the due windows.
fn middle_event(spec: Spec, round: u64, seq: u64) -> String {
    let room = spec.rooms / 2 - (round * 7) % (spec.rooms / 4);
    event_id(2 * (room - 1) + seq)
}

async fn measure(
    ctx: &Ctx,
    s: &mut Side,
    item: &str,
    round: u64,
    label: &str,
) -> Result<Duration, String> {
    let token = &ctx.service_token;
    let spec = s.spec;
    let fail = |what: String| Err(format!("year {item} on {}: {what}", s.database));
    match item {
        "feed_first" | "feed_after" => {
            let after = (item == "feed_after").then_some(s.middle.as_str());
            let (t, data) = scale::request(&s.list, label, &feed_call(token, after)).await?;
            let n = data["events"].as_array().map_or(0, Vec::len);
            if n != FEED_PAGE as usize {
                return fail(format!("{n} events in a page"));
            }
            Ok(t)
        }
        "event" | "redeliver" => {
            let (id, p, method, route, path) = if item == "event" {
                let id = middle_event(spec, round, 1);
                let path = format!("/api/events/{id}");
                (id, &s.get, "GET", "/api/events/{id}", path)
            } else {
                let id = middle_event(spec, round, 2);
                let path = format!("/api/events/{id}/redeliver");
                (id, &s.redeliver, "POST", "/api/events/{id}/redeliver", path)
            };
            let call = HttpCall::new(method, route, &path).bearer(token);
            let (t, data) = scale::request(p, label, &call).await?;
            if data["event"]["id"].as_str() != Some(id.as_str()) {
                return fail(format!("{id}: {data}"));
            }
            Ok(t)
        }
        "deliver_pass" => {
            let (lo, hi) = due_window(spec, round);
            // Due now: both events owed to both endpoints, the streams back at seq 0.
            exec(
                &mut s.conn,
                format!(
                    "UPDATE call_event SET endpoints = '{}', owed = 2, \
                     due_at = UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE WHERE id BETWEEN {} AND {}",
                    s.keys.join(","),
                    2 * (lo - 1) + 1,
                    2 * hi
                ),
            )
            .await?;
            exec(
                &mut s.conn,
                format!(
                    "UPDATE event_stream s JOIN call_room r ON r.room_name = s.room_name \
                     SET s.delivered_seq = 0, s.attempts = 0, s.failing_since = NULL, \
                     s.next_attempt_at = UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE, \
                     s.lease_token = NULL, s.lease_until = NULL WHERE r.id BETWEEN {lo} AND {hi}"
                ),
            )
            .await?;
            let (t, report) = sweep(&s.deliver, label).await?;
            if report["rooms"].as_u64() != Some(DUE_ROOMS) || report["purged"].as_u64() != Some(0) {
                return fail(format!("a deliver pass reported {report}"));
            }
            Ok(t)
        }
        "purge_pass" => {
            let (t, report) = sweep(&s.purge, label).await?;
            if report["purged"].as_u64() != Some(PURGED) || report["rooms"].as_u64() != Some(0) {
                return fail(format!("a purge pass reported {report}"));
            }
            // The oldest rooms' events, streams and attempts back, for the next pass.
            fill(&mut s.conn, 1, PURGED / 2, &s.keys, true).await?;
            Ok(t)
        }
        other => Err(format!("no year item {other}")),
    }
}

/// The feed read by `n` readers at once (one warm list-events process each), `per` requests
/// each, beside the same by one reader: (median, requests per second).
async fn readers(
    ctx: &Ctx,
    database: &str,
    endpoints: &str,
    n: usize,
    per: usize,
) -> Result<Readers, String> {
    let env = with(
        &ctx.env(&ctx.server_url(database), true),
        &[("EVENT_ENDPOINTS", endpoints)],
    );
    let mut procs = Vec::new();
    for i in 0..n {
        let p =
            FunctionProcess::spawn(&ctx.opts.bin_dir, "list-events", &env, &ctx.log_dir, 60 + i)
                .await?;
        // Warm: connection open, statement prepared.
        scale::request(&p, "warm", &feed_call(&ctx.service_token, None)).await?;
        procs.push(Arc::new(p));
    }
    let mut server = MySqlConnection::connect(&ctx.server_url(database))
        .await
        .map_err(db)?;
    let run = async |k: usize| -> Result<(Vec<f64>, f64), String> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for p in &procs[..k] {
            let p = Arc::clone(p);
            let token = ctx.service_token.clone();
            tasks.spawn(async move {
                let mut times = Vec::with_capacity(per);
                for _ in 0..per {
                    let (t, _) = scale::request(&p, "reader", &feed_call(&token, None)).await?;
                    times.push(micros(t));
                }
                Ok::<_, String>(times)
            });
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done.map_err(|e| e.to_string())??);
        }
        let per_sec = all.len() as f64 / started.elapsed().as_secs_f64();
        Ok((all, per_sec))
    };
    let mut steps = Vec::new();
    let mut ks = vec![1, 2, n];
    ks.dedup();
    for k in ks {
        let before = lock_waits(&mut server).await?;
        let (times, per_sec) = run(k).await?;
        let waits = lock_waits(&mut server).await? - before;
        steps.push((k, summarize(&times), per_sec, waits));
    }
    let _ = server.close().await;
    Ok(Readers { steps })
}

/// The server's count of row lock waits so far (every session's).
async fn lock_waits(conn: &mut MySqlConnection) -> Result<i64, String> {
    let (_, v): (String, String) =
        sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_waits'")
            .fetch_one(conn)
            .await
            .map_err(db)?;
    v.parse()
        .map_err(|e| format!("Innodb_row_lock_waits {v:?}: {e}"))
}

// The store's SQL (shared/src/store/outbox.rs), as sent; `?` where it binds.
#[cfg(test)]
const EVENT_COLUMNS: &str =
    "id, event_id, room_name, seq, type, payload, endpoints, owed, feed_batch";
pub const FEED_PAGE_SQL: &str = "SELECT id, event_id, room_name, seq, type, payload, endpoints, \
    owed, feed_batch FROM call_event WHERE (feed_batch = ? AND id > ?) OR feed_batch > ? \
    ORDER BY feed_batch, id LIMIT ?";
pub const EVENT_SQL: &str = "SELECT id, event_id, room_name, seq, type, payload, endpoints, owed, \
    feed_batch FROM call_event WHERE event_id = ?";
pub const ATTEMPTS_OF: &str = "SELECT endpoint, url, attempt, outcome, http_status, latency_ms, \
    error, inline_attempt, attempted_at FROM event_attempt WHERE event_id = ? ORDER BY id";
pub const STREAM_CURSORS: &str =
    "SELECT endpoint, delivered_seq FROM event_stream WHERE room_name = ?";
pub const RETRY_STREAMS: &str = "UPDATE event_stream SET next_attempt_at = ? \
    WHERE room_name = ? AND next_attempt_at > ?";
pub const RETRY_EVENTS: &str =
    "UPDATE call_event SET due_at = ? WHERE room_name = ? AND due_at IS NOT NULL";
pub const ROOMS_DUE: &str = "SELECT room_name, MIN(due_at) AS due FROM call_event WHERE due_at <= ? \
    GROUP BY room_name ORDER BY due LIMIT ?";
pub const CLAIM: &str = "UPDATE event_stream SET lease_token = ?, lease_until = ? \
    WHERE endpoint = ? AND room_name = ? \
    AND (lease_until IS NULL OR lease_until < ?) AND next_attempt_at <= ? \
    AND NOT EXISTS (SELECT 1 FROM event_endpoint h WHERE h.endpoint = ? AND h.failures >= ?)";
pub const PENDING: &str = "SELECT id, event_id, seq, type, endpoints, payload, created_at FROM call_event \
    WHERE room_name = ? AND seq > ? AND due_at IS NOT NULL ORDER BY seq LIMIT ?";
pub const RELEASE: &str = "UPDATE event_stream SET delivered_seq = ?, attempts = ?, failing_since = ?, \
    next_attempt_at = ?, lease_token = NULL, lease_until = NULL \
    WHERE endpoint = ? AND room_name = ? AND lease_token = ?";
pub const FINISHED: &str = "UPDATE call_event SET due_at = CASE WHEN owed <= 1 THEN NULL ELSE due_at END, \
    owed = owed - 1 WHERE owed > 0 AND id IN (?, ?)";
pub const OWED: &str = "SELECT room_name, seq, endpoints, created_at FROM call_event WHERE due_at IS NOT NULL \
    ORDER BY due_at LIMIT ?";
pub const STREAMS_OF: &str = "SELECT endpoint, room_name, delivered_seq, attempts, failing_since \
    FROM event_stream WHERE endpoint IN (?, ?) AND room_name IN (?, ?)";
pub const UNPUBLISHED: &str =
    "SELECT id FROM call_event WHERE feed_batch IS NULL ORDER BY id LIMIT ?";
pub const PURGE_SELECT: &str = "SELECT id, event_id, room_name FROM call_event WHERE created_at < ? \
    AND owed = 0 ORDER BY created_at LIMIT ?";
pub const PURGE_ATTEMPTS: &str = "DELETE FROM event_attempt WHERE event_id IN (?, ?)";
pub const PURGE_EVENTS: &str = "DELETE FROM call_event WHERE id IN (?, ?)";
pub const PURGE_STREAMS: &str = "DELETE FROM event_stream WHERE room_name IN (?, ?) AND NOT EXISTS \
    (SELECT 1 FROM call_event e WHERE e.room_name = event_stream.room_name)";

async fn explain_all(
    conn: &mut MySqlConnection,
    spec: Spec,
    keys: &[String],
) -> Result<Vec<ExplainRow>, String> {
    let now = chrono::Utc::now().naive_utc();
    let week_ago = now - chrono::Duration::days(7);
    let t = |s: &str| Bind::Text(s.to_owned());
    let at = Bind::Text(now.format("%Y-%m-%d %H:%M:%S%.3f").to_string());
    let old = Bind::Text(week_ago.format("%Y-%m-%d %H:%M:%S%.3f").to_string());
    let mid_room = spec.rooms / 2;
    let room = Bind::Text(format!("r{mid_room}"));
    let room2 = Bind::Text(format!("r{}", mid_room + 1));
    let ev = Bind::Text(middle_event(spec, 0, 1));
    let ev2 = Bind::Text(middle_event(spec, 0, 2));
    let mid_id = (2 * mid_room) as i64;
    let mid_batch = 1 + (mid_id - 1) / FEED_BATCH as i64;
    let id = Bind::Int(mid_id);
    let (k0, k1) = (t(&keys[0]), t(&keys[1]));
    let list: Vec<(&str, &str, &str, Vec<Bind>)> = vec![
        (
            "GET /api/events",
            "first page",
            FEED_PAGE_SQL,
            vec![
                Bind::Int(0),
                Bind::Int(0),
                Bind::Int(0),
                Bind::Int(FEED_PAGE as i64),
            ],
        ),
        (
            "GET /api/events",
            "after a cursor",
            FEED_PAGE_SQL,
            vec![
                Bind::Int(mid_batch),
                Bind::Int(mid_id),
                Bind::Int(mid_batch),
                Bind::Int(FEED_PAGE as i64),
            ],
        ),
        (
            "GET /api/events/{id}",
            "the event",
            EVENT_SQL,
            vec![ev.clone()],
        ),
        (
            "GET /api/events/{id}",
            "its attempts",
            ATTEMPTS_OF,
            vec![ev.clone()],
        ),
        (
            "GET /api/events/{id}",
            "its streams",
            STREAM_CURSORS,
            vec![room.clone()],
        ),
        (
            "POST /api/events/{id}/redeliver",
            "end the streams' backoff",
            RETRY_STREAMS,
            vec![at.clone(), room.clone(), at.clone()],
        ),
        (
            "POST /api/events/{id}/redeliver",
            "the room's events due now",
            RETRY_EVENTS,
            vec![at.clone(), room.clone()],
        ),
        (
            "deliver pass",
            "rooms with events due",
            ROOMS_DUE,
            vec![at.clone(), Bind::Int(DUE_ROOMS as i64)],
        ),
        (
            "deliver pass",
            "claim a stream",
            CLAIM,
            vec![
                t("tok"),
                at.clone(),
                k0.clone(),
                room.clone(),
                at.clone(),
                at.clone(),
                k0.clone(),
                Bind::Int(5),
            ],
        ),
        (
            "deliver pass",
            "the room's pending events",
            PENDING,
            vec![room.clone(), Bind::Int(0), Bind::Int(100)],
        ),
        (
            "deliver pass",
            "release the stream",
            RELEASE,
            vec![
                Bind::Int(2),
                Bind::Int(0),
                Bind::Text(String::new()),
                at.clone(),
                k0.clone(),
                room.clone(),
                t("tok"),
            ],
        ),
        (
            "deliver pass",
            "events finished",
            FINISHED,
            vec![id.clone(), Bind::Int(mid_id - 1)],
        ),
        (
            "deliver pass",
            "the backlog sample",
            OWED,
            vec![Bind::Int(1000)],
        ),
        (
            "deliver pass",
            "the backlog's streams",
            STREAMS_OF,
            vec![k0, k1, room.clone(), room2.clone()],
        ),
        (
            "deliver pass",
            "unpublished events",
            UNPUBLISHED,
            vec![Bind::Int(1000)],
        ),
        (
            "purge pass",
            "the oldest finished events",
            PURGE_SELECT,
            vec![old, Bind::Int(PURGED as i64)],
        ),
        (
            "purge pass",
            "their attempts",
            PURGE_ATTEMPTS,
            vec![ev, ev2],
        ),
        (
            "purge pass",
            "the events",
            PURGE_EVENTS,
            vec![id, Bind::Int(mid_id - 1)],
        ),
        (
            "purge pass",
            "streams with no event left",
            PURGE_STREAMS,
            vec![room, room2],
        ),
    ];
    let mut out = Vec::new();
    for (request, part, sql, binds) in list {
        let accesses = scale::explain(conn, sql, &binds).await?;
        out.push(ExplainRow {
            request: request.to_owned(),
            part: part.to_owned(),
            sql: sql.to_owned(),
            accesses,
        });
    }
    Ok(out)
}

/// The whole phase.
pub async fn run(ctx: &Ctx) -> Result<YearOutcome, String> {
    let (big_db, small_db) = if ctx.opts.smoke {
        ("call_bench_scale_smoke", "call_bench_small_smoke")
    } else {
        ("call_bench_scale", "call_bench_small")
    };
    // A purge pass takes the oldest 500 rooms' events and a deliver pass 100 others: the
    // smoke run's small set grows to that.
    let small_spec = Spec {
        rooms: ctx.opts.small_rooms.max(PURGED / 2 + DUE_ROOMS),
    };
    let big_spec = Spec {
        rooms: ctx.opts.scale_rooms.max(2 * small_spec.rooms),
    };
    // Two receivers that answer 200 at once: the two endpoints.
    let mut urls = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        urls.push(format!(
            "http://{}/hook",
            listener.local_addr().map_err(|e| e.to_string())?
        ));
        tokio::spawn(receiver(listener));
    }
    let endpoints = json!(
        urls.iter()
            .map(|url| json!({ "url": url, "secret": SECRET }))
            .collect::<Vec<_>>()
    )
    .to_string();
    let keys: Vec<String> = call_shared::config::parse_event_endpoints(&endpoints)
        .map_err(|e| format!("year: {e}"))?
        .into_iter()
        .map(|e| e.key)
        .collect();
    log(format!(
        "year: event tables on {} rooms ({big_db}) and {} ({small_db})",
        big_spec.rooms, small_spec.rooms
    ));
    let big = load(ctx, big_db, big_spec, &keys).await?;
    log(format!("year: {big_db}: {big:?}"));
    let small = load(ctx, small_db, small_spec, &keys).await?;
    log(format!("year: {small_db}: {small:?}"));

    let pool_mb = ctx.opts.scale_pool_mb.map(|mb| mb.max(2048));
    let was = match pool_mb {
        Some(mb) => Some(scale::set_pool(ctx, mb, &[big_db, small_db]).await?.1),
        None => None,
    };
    let measured = rounds(
        ctx,
        [big_db, small_db],
        [big_spec, small_spec],
        &endpoints,
        &keys,
    )
    .await;
    let room_reads = match &measured {
        Ok(_) => scale::measure_rounds(ctx, [big_db, small_db], [big_spec, small_spec]).await,
        Err(e) => Err(e.clone()),
    };
    let readers_n = if ctx.opts.smoke { 2 } else { 8 };
    let per = if ctx.opts.smoke { 3 } else { 50 };
    let concurrent = match &room_reads {
        Ok(_) => readers(ctx, big_db, &endpoints, readers_n, per).await,
        Err(e) => Err(e.clone()),
    };
    if let Some(was) = was {
        scale::restore_pool(ctx, was).await;
    }
    let rows = measured?;
    let room_reads = room_reads?;
    let readers = concurrent?;
    let mut conn = MySqlConnection::connect(&ctx.server_url(big_db))
        .await
        .map_err(db)?;
    log("year: EXPLAIN of the event statements");
    let explains = explain_all(&mut conn, big_spec, &keys).await?;
    let _ = conn.close().await;
    Ok(YearOutcome {
        big,
        small,
        rounds: ctx.opts.scale_rounds.min(year_rounds(ctx)),
        rows,
        room_reads,
        readers,
        explains,
        pool_mb,
    })
}

fn year_rounds(ctx: &Ctx) -> usize {
    if ctx.opts.smoke { 2 } else { 40 }
}

async fn rounds(
    ctx: &Ctx,
    [big_db, small_db]: [&str; 2],
    [big_spec, small_spec]: [Spec; 2],
    endpoints: &str,
    keys: &[String],
) -> Result<Vec<YearRow>, String> {
    let mut sides = [
        side(ctx, big_db, big_spec, endpoints, keys, 7).await?,
        side(ctx, small_db, small_spec, endpoints, keys, 8).await?,
    ];
    let (warmup, rounds) = (1, ctx.opts.scale_rounds.min(year_rounds(ctx)));
    log(format!(
        "year: {rounds} rounds after {warmup} warm-up round, both sizes interleaved"
    ));
    let names: Vec<&str> = ITEMS.iter().map(|(item, _)| *item).collect();
    let samples = scale::interleaved(
        &names,
        warmup,
        rounds,
        &mut sides,
        async |side, item, round, label| measure(ctx, side, item, round, label).await,
    )
    .await?;
    Ok(ITEMS
        .iter()
        .zip(samples)
        .map(|((_, title), [b, s])| YearRow {
            title: title.to_string(),
            big: summarize(&b),
            small: summarize(&s),
        })
        .collect())
}

fn ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// Section 13 of the report.
pub fn render(w: &mut String, y: &YearOutcome) {
    let (b, s) = (thousands(y.big.rooms), thousands(y.small.rooms));
    let _ = writeln!(w, "\n## 13. A year of events\n");
    let _ = writeln!(
        w,
        "The scale phase's rooms with the event tables on top, loaded set-based (`INSERT … SELECT` \
         from call_room, 50,000 rooms a statement): two events a room (created, ended, at the \
         room's creation, so they span the rooms' year; published in the feed, 100 a batch; \
         each owed to one of the 2 endpoints, in turn, and delivered: owed to nobody now), one \
         stream per room for each of the 2 endpoints the functions are configured with \
         (delivered to seq 2), one attempt per event (the delivery). Each deliver pass has 100 \
         rooms made due first (both events owed to both endpoints, streams back at seq 0; not \
         timed) and delivers them to two receivers in the harness that answer 200 at once; \
         each purge pass deletes the 1,000 oldest events with their attempts and streams, \
         written back afterwards (not timed). A pass is one warm deliver-events invocation \
         (rooms due, delivery, the backlog sample, publishing, the purge). {} rounds after one \
         warm-up, both sizes interleaved{}.\n",
        y.rounds,
        y.pool_mb
            .map(|mb| format!(
                ", InnoDB buffer pool at {mb} MB (the rooms' and rows' indexes read in first, \
                 the event tables as the rounds read them)"
            ))
            .unwrap_or_default()
    );
    let _ = writeln!(
        w,
        "| data set | rooms | events | streams | attempts | event tables loaded |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---|");
    for set in [&y.big, &y.small] {
        let _ = writeln!(
            w,
            "| {} rooms | {} | {} | {} | {} | {} |",
            thousands(set.rooms),
            thousands(set.rooms),
            thousands(set.events),
            thousands(set.streams),
            thousands(set.attempts),
            if set.kept {
                "kept from an earlier run".to_owned()
            } else {
                format!("{:.1} s", set.load_secs)
            }
        );
    }
    let _ = writeln!(
        w,
        "\n| request | {s} p50 | {s} p99 | {b} p50 | {b} p99 | ratio (p50) | ≤ 2× |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---|");
    let rows = y.rows.iter().map(|r| (r.title.clone(), r.small, r.big));
    let reads = y
        .room_reads
        .iter()
        .map(|r| (scale::title(&r.query).to_owned(), r.small, r.big));
    for (title, small, big) in rows.chain(reads) {
        let ratio = big.median / small.median;
        let _ = writeln!(
            w,
            "| {title} | {} | {} | {} | {} | {ratio:.2}× | {} |",
            ms(small.median),
            ms(small.p99),
            ms(big.median),
            ms(big.p99),
            if ratio <= crate::report::SCALE_RATIO_LIMIT {
                "met"
            } else {
                "**missed**"
            }
        );
    }
    let steps = &y.readers.steps;
    let _ = writeln!(
        w,
        "\n**Concurrent feed readers** on the {b} rooms: `GET /api/events` (first page), one \
         warm list-events process per reader, {} requests each; one reader alone, then 2, then \
         {} at once, on this machine's 2 cores shared with MariaDB and the harness. Row lock \
         waits: the server's `Innodb_row_lock_waits` over each step (any session's).\n",
        steps.first().map_or(0, |s| s.1.n),
        steps.last().map_or(0, |s| s.0),
    );
    let _ = writeln!(
        w,
        "| readers | p50 | p99 | requests/s | row lock waits |\n|---:|---:|---:|---:|---:|"
    );
    for (k, t, per_sec, waits) in steps {
        let _ = writeln!(
            w,
            "| {k} | {} | {} | {per_sec:.0} | {waits} |",
            ms(t.median),
            ms(t.p99)
        );
    }
    if let (Some(one), Some(many)) = (steps.first(), steps.last()) {
        let _ = writeln!(
            w,
            "\nRatio {}:1 readers: p50 {:.2}×, throughput {:.2}×.",
            many.0,
            many.1.median / one.1.median,
            many.2 / one.2
        );
    }
    let _ = writeln!(
        w,
        "\n**EXPLAIN** (`EXPLAIN FORMAT=JSON`) of the statements these send, on the {b} rooms:\n"
    );
    let _ = writeln!(
        w,
        "| request | statement | plan | full scan |\n|---|---|---|---|"
    );
    for e in &y.explains {
        let plan = crate::report::plan(&e.accesses);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            e.request,
            e.part,
            if plan.is_empty() {
                "no table read".to_owned()
            } else {
                plan
            },
            if e.full_scan() { "**yes**" } else { "no" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::tests::{has, store_source};

    #[test]
    fn the_year_sql_is_the_stores_sql() {
        let store = store_source();
        assert!(has(
            &store,
            &format!("const EVENT_COLUMNS: &str = \"{EVENT_COLUMNS}\";")
        ));
        for sql in [
            ATTEMPTS_OF,
            STREAM_CURSORS,
            RETRY_STREAMS,
            RETRY_EVENTS,
            ROOMS_DUE,
            CLAIM,
            PENDING,
            RELEASE,
            OWED,
            UNPUBLISHED,
            PURGE_SELECT,
        ] {
            let head: String = sql.chars().take(60).collect();
            assert!(has(&store, &head), "the store no longer sends {head:?}");
        }
    }

    #[test]
    fn windows_stay_clear_of_the_purge() {
        for rooms in [600, 1000, 2000, 1_000_000] {
            let spec = Spec { rooms };
            for round in 0..200 {
                let (lo, hi) = due_window(spec, round);
                assert!(lo > PURGED / 2 && hi <= rooms && hi - lo + 1 == DUE_ROOMS);
            }
        }
        // Event 100 closes batch 1; 101 opens batch 2.
        let parsed = |id| call_shared::store::FeedCursor::parse(&cursor_after(id));
        assert_eq!(parsed(100).map(|c| (c.batch, c.id)), Some((1, 100)));
        assert_eq!(parsed(101).map(|c| (c.batch, c.id)), Some((2, 101)));
    }
}
