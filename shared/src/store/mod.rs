//! The store: every read and every transaction, over sqlx.
//!
//! One backend per build: MySQL/MariaDB (production, tests) or, with the `embedded`
//! feature, SQLite for the local main job. The SQL is shared; the few dialect
//! differences live in [`backend`].

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, QueryBuilder, Row};

use crate::config::{ConfigError, EventEndpoint};
use crate::error::ApiError;
use crate::model::{
    CallLimits, EndReason, Now, Participant, ParticipantStatus, Reason, Room, RoomStatus,
};
use crate::rules::{self, Action, CallState};

pub use crate::database::{
    Db, TEST_URL_EXAMPLE, URL_SCHEMES, UniqueKey, is_out_of_connections, is_retryable,
    is_unavailable, unique_violation,
};
pub use backend::MIGRATOR;
pub use migrations::MigrationError;

pub type DbPool = sqlx::Pool<Db>;
type DbConnection = <Db as sqlx::Database>::Connection;

mod backend;
mod calls;
mod idempotency;
pub mod migrations;
mod outbox;
mod reads;
mod room_counts;
mod sweeps;
#[cfg(not(feature = "embedded"))]
mod tls;
mod webhooks;

pub use calls::Invited;
pub use idempotency::{Claimed, KeyClaim, KeyTimes, PURGE_BATCH, PURGE_BATCHES, Seal, StoredReply};
pub use reads::{HistoryEntry, ListedRooms, Ringing};

pub use webhooks::WebhookOutcome;

use outbox::write_events;
pub use outbox::{
    AttemptRecord, Claim, EventAttempt, FeedCursor, Outbox, OwedEvent, PendingEvent, StoredEvent,
    Stream, StreamState, StreamUpdate,
};

use backend::{for_update, live_row_of};
use room_counts::RoomCounts;

// Every wait on the database is bounded, and together they end well before the function
// does (`crate::http::REQUEST_DEADLINE`, checked against template.yaml by a test): a
// request answers 503 with Retry-After instead of dying as a Lambda timeout.

/// Waiting for a connection, connecting included.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// A statement's wait for a row lock (InnoDB's innodb_lock_wait_timeout, 50 s by default;
/// SQLite's busy timeout). Whole seconds: that is what InnoDB takes.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);
/// The longest one statement may run (MariaDB max_statement_time, MySQL
/// max_execution_time), lock waits included.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A transaction is tried again only while its first attempt began less than this long ago:
/// a deadlock costs milliseconds and is worth it; a lock-wait timeout means a row is held for
/// seconds, and the caller is better told to come back (503, Retry-After).
pub const RETRY_WINDOW: Duration = Duration::from_secs(1);
/// Attempts of one transaction on deadlocks, lock-wait timeouts and live-row races.
pub const MAX_ATTEMPTS: u32 = 4;
/// How long a connection may sit unused before the server closes it (`wait_timeout`), unless
/// DB_IDLE_SECONDS says otherwise. A frozen Lambda instance runs no code, so only the server
/// can give its connection back; see README "Database connections".
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);
/// The client reopens a connection this long before the server would close it, so a
/// request never meets one the server has already closed.
const IDLE_MARGIN: Duration = Duration::from_secs(2);
/// A kept connection is closed and opened again after this long in use, unless
/// DB_CONNECTION_LIFETIME_SECONDS says otherwise: when more instances want a connection than
/// the database allows, the ones that hold one give it up in turn, so none starves.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(120);
/// Between two tries for a connection the server refused for lack of room (1040, 1226),
/// within ACQUIRE_TIMEOUT: a moment later another instance may have given one back.
const FULL_PAUSE_MS: std::ops::Range<u64> = 50..150;
/// How long closing a connection that cannot be reused may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A failure inside a transaction: a domain refusal, or a database error that may be retried.
#[derive(Debug)]
enum TxError {
    Api(ApiError),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for TxError {
    fn from(err: sqlx::Error) -> Self {
        TxError::Db(err)
    }
}

impl From<ApiError> for TxError {
    fn from(err: ApiError) -> Self {
        TxError::Api(err)
    }
}

impl TxError {
    fn is_retryable(&self) -> bool {
        match self {
            // A race on a live row: the next attempt sees the winner and answers properly.
            TxError::Db(err) => {
                is_retryable(err)
                    || matches!(
                        unique_violation(err),
                        Some(UniqueKey::LiveUid | UniqueKey::RoomUid)
                    )
            }
            TxError::Api(_) => false,
        }
    }

    /// The connection broke under us (closed while the function was frozen, or a failover):
    /// worth one more attempt on a fresh connection.
    fn is_broken_connection(&self) -> bool {
        matches!(self, TxError::Db(sqlx::Error::Io(_)))
    }

    fn into_api(self) -> ApiError {
        match self {
            TxError::Api(err) => err,
            TxError::Db(err) => match unique_violation(&err) {
                Some(UniqueKey::RoomName) => ApiError::RoomAlreadyExists,
                _ => ApiError::from(err),
            },
        }
    }
}

/// Run one transaction attempt again on deadlocks, lock-wait timeouts and live-row races,
/// after a short growing pause, while the first attempt is under RETRY_WINDOW old; a broken
/// connection is worth exactly one more attempt.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let started = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err)
                if tries < MAX_ATTEMPTS
                    && started.elapsed() < RETRY_WINDOW
                    && (err.is_retryable() || (tries == 1 && err.is_broken_connection())) =>
            {
                tracing::warn!(attempt = tries, error = ?err, "retrying transaction");
                crate::metrics::count(&crate::metrics::DB_RETRIES, &[]);
                tokio::time::sleep(backoff(tries)).await;
            }
            Err(err) => {
                if err.is_retryable() {
                    tracing::error!(attempts = tries, error = ?err, "transaction gave up");
                }
                return Err(err.into_api());
            }
        }
    }
}

/// The pause before attempt `tries + 1`: 5, 10, 15 ms.
pub fn backoff(tries: u32) -> Duration {
    Duration::from_millis(5 * u64::from(tries))
}

/// Runs `work` inside one transaction on `conn` and ends that transaction here, awaited,
/// whatever `work` decided: committed when it succeeds, rolled back when it refuses or fails.
/// No caller can forget either, so a refusal never leaves row locks behind on a connection
/// that is kept for the next request. The only place in the service that begins one
/// (clippy.toml refuses `begin` anywhere else).
async fn in_transaction<T>(
    conn: &mut DbConnection,
    work: impl AsyncFnOnce(&mut Tx<'_>) -> Result<T, TxError>,
) -> Result<T, TxError> {
    in_transaction_with(conn, backend::BEGIN_CALL, work).await
}

/// [`in_transaction`], begun with `begin` (the feed's publisher reads committed rows only).
#[allow(clippy::disallowed_methods)]
async fn in_transaction_with<T>(
    conn: &mut DbConnection,
    begin: &'static str,
    work: impl AsyncFnOnce(&mut Tx<'_>) -> Result<T, TxError>,
) -> Result<T, TxError> {
    let mut tx = Tx::new(conn.begin_with(begin).await?);
    let outcome = match work(&mut tx).await {
        // The room totals last, in one statement, so their rows are locked only until COMMIT.
        Ok(value) => match tx.counts.apply(&mut tx.inner).await {
            Ok(()) => Ok(value),
            Err(err) => Err(TxError::Db(err)),
        },
        Err(err) => Err(err),
    };
    match outcome {
        Ok(value) => {
            let tally = std::mem::take(&mut tx.tally);
            tx.inner.commit().await?;
            tally.record();
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = tx.inner.rollback().await {
                // The connection is gone or confused; `with_conn` will not reuse it.
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(err)
        }
    }
}

/// One open transaction: its statements go to `inner` (`&mut **tx` is the connection), and
/// the rooms it inserts or moves are noted in `counts`, applied just before the commit.
struct Tx<'c> {
    inner: sqlx::Transaction<'c, Db>,
    counts: RoomCounts,
    /// What the events written tell the metrics, recorded once the commit succeeded.
    tally: crate::events::CallTally,
}

impl<'c> Tx<'c> {
    fn new(inner: sqlx::Transaction<'c, Db>) -> Self {
        Tx {
            inner,
            counts: RoomCounts::default(),
            tally: crate::events::CallTally::default(),
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = DbConnection;

    fn deref(&self) -> &DbConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.inner
    }
}

/// A new room as create asks for it.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub source_channel_id: String,
    pub source_channel_type: i16,
    pub creator: String,
    pub room_name: String,
    pub call_type: i16,
    pub invite_on: i16,
    pub max_participants: i32,
    pub limits: CallLimits,
}

/// Filters of the room list; `uid` finds rooms where that uid has any row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomFilter {
    pub status: Option<RoomStatus>,
    pub creator: Option<String>,
    pub uid: Option<String>,
    pub source_channel_id: Option<String>,
}

/// What a participant action left behind.
#[derive(Debug, Clone)]
pub struct ActionResult {
    pub room: Room,
    pub participant: Participant,
    pub changed: bool,
    /// Set when this change moved the room to a final status.
    pub finalised: bool,
}

/// A room change (end, status PUT): the room after it and whether it became final now.
#[derive(Debug, Clone)]
pub struct RoomResult {
    pub room: Room,
    pub changed: bool,
    pub finalised: bool,
}

/// What a failure says about the connection it happened on.
trait ConnectionFailure {
    fn breaks_connection(&self) -> bool;
}

impl ConnectionFailure for sqlx::Error {
    fn breaks_connection(&self) -> bool {
        is_unavailable(self)
    }
}

impl ConnectionFailure for TxError {
    fn breaks_connection(&self) -> bool {
        matches!(self, TxError::Db(err) if is_unavailable(err))
    }
}

fn result_breaks<T, E: ConnectionFailure>(result: &Result<T, E>) -> bool {
    matches!(result, Err(err) if err.breaks_connection())
}

/// The last step of every use of a connection: returns it when it can serve the next request,
/// closes it (awaited, so a frozen Lambda cannot keep it open) when it cannot.
///
/// A connection is reusable only outside any transaction with nothing queued on it. A
/// `sqlx::Transaction` dropped without commit or rollback only queues its ROLLBACK: kept as
/// it is, the connection would hold the transaction's row locks until the function's next
/// request, hours away for a frozen Lambda. [`in_transaction`] never leaves one behind; should
/// any path still do so, the queued ROLLBACK is sent and awaited here.
async fn hand_back(mut conn: PoolConnection<Db>, broken: bool) -> Option<PoolConnection<Db>> {
    if !(broken || conn.is_in_transaction() || conn.should_flush()) {
        return Some(conn);
    }
    if !broken {
        tracing::error!("a transaction was left open on a connection; ending it before reuse");
        // A ping first sends whatever is queued (the dropped transaction's ROLLBACK).
        if conn.ping().await.is_ok() && !conn.is_in_transaction() {
            return Some(conn);
        }
    }
    close(conn).await;
    None
}

/// Closes a connection and waits for it: the server ends any transaction it still had.
async fn close(conn: PoolConnection<Db>) {
    if tokio::time::timeout(CLOSE_TIMEOUT, conn.close())
        .await
        .is_err()
    {
        tracing::warn!("closing a database connection timed out");
    }
}

/// A connection lent to one piece of work. When that work is abandoned midway (the request
/// ran out of time: `crate::http::REQUEST_DEADLINE`), the connection may be inside a
/// transaction or halfway through reading a reply: it is dropped from the pool and its socket
/// closed, so the server rolls the transaction back and releases its locks, and nothing
/// reuses it.
struct CloseIfAbandoned(Option<PoolConnection<Db>>);

impl CloseIfAbandoned {
    async fn run<T, E>(
        &mut self,
        work: impl AsyncFnOnce(&mut DbConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error>,
    {
        match self.0.as_mut() {
            Some(conn) => work(conn).await,
            None => Err(sqlx::Error::PoolClosed.into()),
        }
    }
}

impl Drop for CloseIfAbandoned {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            tracing::warn!("a request was abandoned mid-statement; closing its connection");
            drop(conn.detach());
        }
    }
}

/// The connection kept from one request to the next.
struct Kept {
    conn: PoolConnection<Db>,
    /// When it last finished a piece of work.
    used: Instant,
    /// When this store first took it.
    opened: Instant,
}

type PinnedSlot = tokio::sync::Mutex<Option<Kept>>;

#[derive(Clone)]
pub struct Store {
    pool: DbPool,
    /// The kept connection is trusted only when it was last used less than this long ago;
    /// after that the server may have closed it (its wait_timeout).
    reuse_within: Duration,
    /// The kept connection is given back after this long in use (see DEFAULT_LIFETIME).
    lifetime: Duration,
    pinned: Arc<PinnedSlot>,
    /// Whether final rooms are queued for a LiveKit DeleteRoom (only when LiveKit is configured).
    teardown: bool,
    /// Which endpoints the events a change writes are owed to.
    outbox: Arc<Outbox>,
}

/// The room's columns, as every room query selects them (`r` is call_room).
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
pub(crate) use room_columns;

/// A participant's columns as `p_…` (`p` is call_participant).
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
pub(crate) use participant_columns;

/// A room with all its rows in one round trip; the lock variant starts every call transaction.
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

const LOAD_CALL: &str = call_query!("");
const LOCK_CALL: &str = call_query!(for_update!());

impl Store {
    /// Builds the pool without connecting: the first request connects.
    pub fn connect_lazy(url: &str) -> Result<Self, ConfigError> {
        Self::connect_lazy_with(url, DEFAULT_IDLE, DEFAULT_LIFETIME)
    }

    /// [`Store::connect_lazy`], with the server closing a connection unused for `idle`, and
    /// the kept connection reopened after `lifetime` in use.
    pub fn connect_lazy_with(
        url: &str,
        idle: Duration,
        lifetime: Duration,
    ) -> Result<Self, ConfigError> {
        let pool = backend::pool(url, idle).map_err(|e| ConfigError::Malformed {
            name: "DATABASE_URL",
            reason: e.to_string(),
        })?;
        Ok(Store {
            reuse_within: idle.saturating_sub(IDLE_MARGIN).max(Duration::from_secs(1)),
            lifetime,
            ..Store::from_pool(pool)
        })
    }

    pub fn from_pool(pool: DbPool) -> Self {
        Store {
            pool,
            reuse_within: DEFAULT_IDLE - IDLE_MARGIN,
            lifetime: DEFAULT_LIFETIME,
            pinned: Arc::default(),
            teardown: false,
            outbox: Arc::default(),
        }
    }

    pub fn with_teardown(mut self, enabled: bool) -> Self {
        self.teardown = enabled;
        self
    }

    /// Events are owed to these endpoints (each by its type filter); the sweep looks at an
    /// event once `grace` has passed without its first delivery finishing it.
    pub fn with_event_endpoints(mut self, endpoints: &[EventEndpoint], grace: Duration) -> Self {
        self.outbox = Arc::new(Outbox::new(endpoints, grace));
        self
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Closes the store: gives back the kept connection and closes the pool; every later
    /// call fails as unavailable.
    pub async fn close(&self) {
        self.pinned.lock().await.take();
        self.pool.close().await;
    }

    /// Brings the schema up to date; on MySQL a run that stopped halfway continues where it
    /// stopped (see [`migrations`]).
    pub async fn migrate(&self) -> Result<(), MigrationError> {
        migrations::run(&self.pool, &MIGRATOR).await
    }

    /// The local main job's database: created when it is missing and, with `reset`, emptied
    /// first, which is refused for a server that is not this machine. Then migrated.
    pub async fn prepare_local(url: &str, reset: bool) -> Result<(), String> {
        use sqlx::migrate::MigrateDatabase;
        if reset {
            if !backend::is_local(url).map_err(|e| format!("DATABASE_URL: {e}"))? {
                return Err("--reset empties only a database on this machine \
                            (127.0.0.1, localhost or ::1)"
                    .into());
            }
            backend::drop_database(url)
                .await
                .map_err(|e| format!("emptying the database: {e}"))?;
        }
        let exists = Db::database_exists(url)
            .await
            .map_err(|e| format!("reaching the database: {e}"))?;
        if !exists {
            Db::create_database(url)
                .await
                .map_err(|e| format!("creating the database: {e}"))?;
        }
        let store = Store::connect_lazy(url).map_err(|e| e.to_string())?;
        let migrated = store.migrate().await.map_err(|e| format!("migrating: {e}"));
        store.close().await;
        migrated
    }

    /// Runs `work` on the connection the store keeps between requests when it is free, else
    /// on one from the pool.
    ///
    /// A function serves one request at a time, so in Lambda every request finds the kept
    /// connection free and it never goes back to the pool: sqlx pings every connection it
    /// takes back (a round trip no statement needs), so a pooled-per-request connection costs
    /// one COM_PING per request. Concurrent callers in one process (tests, the local job)
    /// fall back to the pool, so races still meet in the database.
    ///
    /// Either way the connection is handed on only when it is clean (see [`hand_back`]); one
    /// that failed with an I/O or protocol error, sat idle past `reuse_within` (the function may
    /// have been frozen), or cannot be brought out of a transaction is closed instead.
    async fn with_conn<T, E>(
        &self,
        work: impl AsyncFnOnce(&mut DbConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error> + ConnectionFailure,
    {
        let Ok(mut slot) = self.pinned.try_lock() else {
            let mut conn = CloseIfAbandoned(Some(self.acquire().await?));
            let result = conn.run(work).await;
            if let Some(conn) = conn.0.take() {
                hand_back(conn, result_breaks(&result)).await;
            }
            return result;
        };
        let (conn, opened) = match slot.take() {
            Some(kept)
                if kept.used.elapsed() < self.reuse_within
                    && kept.opened.elapsed() < self.lifetime =>
            {
                (kept.conn, kept.opened)
            }
            stale => {
                if let Some(kept) = stale {
                    close(kept.conn).await;
                }
                (self.acquire().await?, Instant::now())
            }
        };
        let mut conn = CloseIfAbandoned(Some(conn));
        let result = conn.run(work).await;
        if let Some(conn) = conn.0.take()
            && let Some(conn) = hand_back(conn, result_breaks(&result)).await
        {
            *slot = Some(Kept {
                conn,
                used: Instant::now(),
                opened,
            });
        }
        result
    }

    /// A connection from the pool. When the server has no room for another one (1040, 1226),
    /// it is asked again after a short random pause until ACQUIRE_TIMEOUT has passed: under
    /// a burst, instances give connections back all the time (their lifetime, their idle
    /// time), and a request that waits a moment for one answers instead of refusing.
    async fn acquire(&self) -> Result<PoolConnection<Db>, sqlx::Error> {
        let give_up = Instant::now() + ACQUIRE_TIMEOUT;
        loop {
            match self.pool.acquire().await {
                Err(err) if is_out_of_connections(&err) => {
                    let spread = (FULL_PAUSE_MS.end - FULL_PAUSE_MS.start) as f64;
                    let pause = Duration::from_millis(
                        FULL_PAUSE_MS.start + (crate::delivery::random_jitter() * spread) as u64,
                    );
                    if Instant::now() + pause >= give_up {
                        return Err(err);
                    }
                    crate::metrics::count(&crate::metrics::DB_RETRIES, &[]);
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// Re-derives the room totals from the rooms (see [`room_counts::recount`]).
    pub async fn recount_rooms(&self) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| {
            in_transaction_with(conn, backend::BEGIN, async |tx| {
                Ok(room_counts::recount(tx).await?)
            })
            .await
        })
        .await
        .map_err(TxError::into_api)
    }

    pub async fn ping(&self) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| sqlx::query("SELECT 1").execute(conn).await)
            .await?;
        Ok(())
    }
}

/// The room and its rows under lock, with every deadline due at `now` applied (written back
/// with whatever the transaction then changes).
///
/// Lock order: a transaction that changes several rooms locks the room it was asked to change
/// first (its lock is what lets it find the others), then every other room by room_name, then
/// the `room_count` rows by primary key in one statement just before COMMIT (see
/// `room_counts`). Two such transactions can still cross only when each one's own room is
/// among the other's others; that deadlock is retried.
async fn lock_call(
    tx: &mut Tx<'_>,
    room_name: &str,
    now: Now,
) -> Result<Option<CallState>, sqlx::Error> {
    let rows = sqlx::query(LOCK_CALL)
        .bind(room_name)
        .fetch_all(&mut **tx)
        .await?;
    let mut state = decode_call(&rows)?;
    if let Some(state) = &mut state {
        rules::apply_deadlines(state, now);
    }
    Ok(state)
}

async fn queue_teardown(
    tx: &mut Tx<'_>,
    room_name: &str,
    at: NaiveDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(backend::INSERT_TEARDOWN)
        .bind(room_name)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A LiveKit RemoveParticipant to make after the commit (and retry until it succeeds).
async fn queue_removal(
    tx: &mut Tx<'_>,
    room_name: &str,
    uid: &str,
    now: Now,
) -> Result<(), sqlx::Error> {
    sqlx::query(backend::INSERT_REMOVAL)
        .bind(room_name)
        .bind(uid)
        .bind(now.at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Brings the other rooms where any of `uids` is live, and whose deadline has passed, up to
/// `now` inside this transaction (locked, deadlines applied, written), so that a uid whose
/// invite rang out a second ago is free to be rung or to join here although the sweeper has
/// not written that down yet. Returns whether any room changed. The rooms are locked in
/// room_name order, like every transaction that locks several (see [`lock_call`]).
async fn settle_due_elsewhere(
    tx: &mut Tx<'_>,
    uids: &[String],
    except: Option<&str>,
    now: Now,
    teardown: bool,
    outbox: &Outbox,
) -> Result<bool, sqlx::Error> {
    if uids.is_empty() {
        return Ok(false);
    }
    let mut query = QueryBuilder::<Db>::new(
        "SELECT DISTINCT p.room_name FROM call_participant p JOIN call_room r \
         ON r.room_name = p.room_name WHERE p.status IN (0, 1) AND r.deadline <= ",
    );
    query.push_bind(now.at).push(" AND p.uid IN (");
    push_uids_except(&mut query, uids, " AND p.room_name <> ", except);
    query.push(" ORDER BY p.room_name");
    let rooms: Vec<String> = query.build_query_scalar().fetch_all(&mut **tx).await?;
    let mut changed = false;
    for room in rooms {
        let Some(mut state) = lock_call(tx, &room, now).await? else {
            continue;
        };
        if state.is_changed() {
            write_back(tx, &mut state, outbox, now).await?;
            if teardown && !state.was_final_when_loaded() && state.room.status.is_final() {
                queue_teardown(tx, &room, state.room.updated_at).await?;
            }
            changed = true;
        }
    }
    Ok(changed)
}

/// The uids among `uids` that are live (ringing or joined) in a room other than `except`.
async fn live_uids(
    tx: &mut Tx<'_>,
    uids: &[String],
    except: Option<&str>,
) -> Result<HashSet<String>, sqlx::Error> {
    if uids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut query = QueryBuilder::<Db>::new(
        "SELECT uid FROM call_participant WHERE status IN (0, 1) AND uid IN (",
    );
    push_uids_except(&mut query, uids, " AND room_name <> ", except);
    let found: Vec<String> = query.build_query_scalar().fetch_all(&mut **tx).await?;
    Ok(found.into_iter().collect())
}

/// Closes an open `uid IN (` with the uids' binds, then leaves out the room `except` names
/// (`not_room` is its ` AND <column> <> ` text).
fn push_uids_except(
    query: &mut QueryBuilder<Db>,
    uids: &[String],
    not_room: &'static str,
    except: Option<&str>,
) {
    let mut list = query.separated(", ");
    for uid in uids {
        list.push_bind(uid.clone());
    }
    query.push(")");
    if let Some(room_name) = except {
        query.push(not_room).push_bind(room_name.to_owned());
    }
}

fn push_filter(query: &mut QueryBuilder<Db>, filter: &RoomFilter) {
    query.push(" WHERE 1 = 1");
    if let Some(status) = filter.status {
        query.push(" AND r.status = ").push_bind(status.code());
    }
    if let Some(creator) = &filter.creator {
        query.push(" AND r.creator = ").push_bind(creator.clone());
    }
    if let Some(channel) = &filter.source_channel_id {
        query
            .push(" AND r.source_channel_id = ")
            .push_bind(channel.clone());
    }
    if let Some(uid) = &filter.uid {
        query
            .push(" AND EXISTS (SELECT 1 FROM call_participant p WHERE p.room_name = r.room_name AND p.uid = ")
            .push_bind(uid.clone())
            .push(")");
    }
}

/// Writes what a rule changed: the rows, then the room with its event counter, then the
/// change's events (one statement), all in the caller's transaction.
async fn write_back(
    tx: &mut Tx<'_>,
    state: &mut CallState,
    outbox: &Outbox,
    now: Now,
) -> Result<(), sqlx::Error> {
    write_rows(tx, state).await?;
    // Derived once the rows have their ids; numbered after the room's last event.
    let events = crate::events::derive(state, false);
    let first_seq = state.room.event_seq + 1;
    if !events.is_empty() {
        state.room.event_seq += events.len() as i64;
        state.mark_room_changed();
    }
    if state.room_changed() {
        let room = &state.room;
        sqlx::query(
            "UPDATE call_room SET status = ?, updated_at = ?, end_reason = ?, started_at = ?, \
             ended_at = ?, solo_since = ?, deadline = ?, event_seq = ? WHERE id = ?",
        )
        .bind(room.status.code())
        .bind(room.updated_at)
        .bind(room.end_reason.map(EndReason::as_str))
        .bind(room.started_at)
        .bind(room.ended_at)
        .bind(room.solo_since)
        .bind(room.deadline)
        .bind(room.event_seq)
        .bind(room.id)
        .execute(&mut **tx)
        .await?;
        tx.counts
            .written(room.id, state.loaded_status(), room.status);
    }
    write_events(tx, &state.room, first_seq, &events, outbox, now).await?;
    // Written: the same state written again (a retried statement) must not repeat them.
    state.forget_touched();
    Ok(())
}

/// Writes the changed rows; a new row's id is kept as soon as it is inserted, so running this
/// again after a failed statement writes each row once.
async fn write_rows(tx: &mut Tx<'_>, state: &mut CallState) -> Result<(), sqlx::Error> {
    let changed: Vec<usize> = state.changed_rows_indexed().map(|(i, _)| i).collect();
    for i in changed {
        let row = &state.rows[i];
        if row.id == 0 {
            let result = sqlx::query(
                "INSERT INTO call_participant (room_name, uid, status, join_time, leave_time, \
                 created_at, updated_at, reason, invited_at, ring_deadline, ring_seconds, \
                 talk_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&row.room_name)
            .bind(&row.uid)
            .bind(row.status.code())
            .bind(row.join_time)
            .bind(row.leave_time)
            .bind(row.created_at)
            .bind(row.updated_at)
            .bind(row.reason.map(Reason::as_str))
            .bind(row.invited_at)
            .bind(row.ring_deadline)
            .bind(row.ring_seconds)
            .bind(row.talk_seconds)
            .execute(&mut **tx)
            .await?;
            state.rows[i].id = backend::last_insert_id(&result);
        } else {
            sqlx::query(
                "UPDATE call_participant SET status = ?, join_time = ?, leave_time = ?, \
                 updated_at = ?, reason = ?, invited_at = ?, ring_deadline = ?, \
                 ring_seconds = ?, talk_seconds = ? WHERE id = ?",
            )
            .bind(row.status.code())
            .bind(row.join_time)
            .bind(row.leave_time)
            .bind(row.updated_at)
            .bind(row.reason.map(Reason::as_str))
            .bind(row.invited_at)
            .bind(row.ring_deadline)
            .bind(row.ring_seconds)
            .bind(row.talk_seconds)
            .bind(row.id)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

type DbRow = <Db as sqlx::Database>::Row;

fn decode_room(row: &DbRow) -> Result<Room, sqlx::Error> {
    let status: i16 = row.try_get("status")?;
    let end_reason: Option<String> = row.try_get("end_reason")?;
    let started_at: Option<NaiveDateTime> = row.try_get("started_at")?;
    let ended_at: Option<NaiveDateTime> = row.try_get("ended_at")?;
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
            .ok_or_else(|| corrupt("room status", status))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        ring_timeout_seconds: row.try_get("ring_timeout_seconds")?,
        max_duration_seconds: row.try_get("max_duration_seconds")?,
        solo_timeout_seconds: row.try_get("solo_timeout_seconds")?,
        end_reason: end_reason
            .map(|text| EndReason::parse(&text).ok_or_else(|| corrupt_text("end reason", &text)))
            .transpose()?,
        started_at,
        ended_at,
        duration_seconds: match (started_at, ended_at) {
            (Some(started), Some(ended)) => rules::seconds_between(started, ended),
            _ => 0,
        },
        solo_since: row.try_get("solo_since")?,
        deadline: row.try_get("deadline")?,
        event_seq: row.try_get::<i32, _>("event_seq")?.into(),
    })
}

/// A participant row from `participant_columns!()`; None for a room without rows.
fn decode_participant(row: &DbRow, room_name: &str) -> Result<Option<Participant>, sqlx::Error> {
    let Some(id) = row.try_get::<Option<i64>, _>("p_id")? else {
        return Ok(None);
    };
    let status: i16 = row.try_get("p_status")?;
    let reason: Option<String> = row.try_get("p_reason")?;
    Ok(Some(Participant {
        id,
        room_name: room_name.to_owned(),
        uid: row.try_get("p_uid")?,
        status: ParticipantStatus::from_code(status.into())
            .ok_or_else(|| corrupt("participant status", status))?,
        join_time: row.try_get("p_join_time")?,
        leave_time: row.try_get("p_leave_time")?,
        created_at: row.try_get::<NaiveDateTime, _>("p_created_at")?,
        updated_at: row.try_get::<NaiveDateTime, _>("p_updated_at")?,
        reason: reason
            .map(|text| Reason::parse(&text).ok_or_else(|| corrupt_text("reason", &text)))
            .transpose()?,
        invited_at: row.try_get("p_invited_at")?,
        ring_deadline: row.try_get("p_ring_deadline")?,
        ring_seconds: row.try_get::<i32, _>("p_ring_seconds")?.into(),
        talk_seconds: row.try_get::<i32, _>("p_talk_seconds")?.into(),
    }))
}

fn decode_call(rows: &[DbRow]) -> Result<Option<CallState>, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let room = decode_room(first)?;
    let mut participants = Vec::with_capacity(rows.len());
    for row in rows {
        participants.extend(decode_participant(row, &room.room_name)?);
    }
    Ok(Some(CallState::new(room, participants)))
}

fn corrupt_text(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {what} {value:?} in the database").into())
}

fn corrupt(what: &str, value: i16) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {what} {value} in the database").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "embedded"))]
    fn new_room(room_name: &str, creator: &str) -> NewRoom {
        NewRoom {
            source_channel_id: String::new(),
            source_channel_type: 0,
            creator: creator.into(),
            room_name: room_name.into(),
            call_type: 1,
            invite_on: 0,
            max_participants: 2,
            limits: CallLimits::default(),
        }
    }

    /// Two connections, as two function instances hold them: one holds the newest room (its
    /// call transaction's locking read of the room and its rows, as every change begins),
    /// the other creates the next room by name, with participants whose rows go right after
    /// the held room's last one in `(room_name, uid)`. The create must not wait: no lock on
    /// the gap after the held room's rows. MySQL only: SQLite has one writer at a time.
    #[cfg(not(feature = "embedded"))]
    #[allow(clippy::disallowed_methods)] // the test holds a call transaction open itself
    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn creating_the_next_room_never_waits_for_a_transaction_holding_the_last(pool: DbPool) {
        let store = Store::from_pool(pool.clone());
        let now = Now::current();
        store
            .create_room(&new_room("room-0001", "alice"), &["bob".into()], now)
            .await
            .expect("room N");

        let mut holder = pool.acquire().await.expect("the holder's connection");
        let mut tx = Tx::new(holder.begin_with(backend::BEGIN_CALL).await.expect("begin"));
        let held = lock_call(&mut tx, "room-0001", now).await.expect("lock");
        assert_eq!(held.map(|s| s.rows.len()), Some(2));

        // The store's own connection (the pool's other one), as another instance creates.
        let next = Store::from_pool(pool.clone());
        let started = std::time::Instant::now();
        let created = tokio::time::timeout(
            Duration::from_secs(2),
            next.create_room(&new_room("room-0002", "carol"), &["dave".into()], now),
        )
        .await;
        let waited = started.elapsed();
        tx.inner.rollback().await.expect("rollback");
        created
            .expect("room N+1 was created while room N was held")
            .expect("create");
        assert!(
            waited < Duration::from_secs(1),
            "the create waited {waited:?}"
        );
    }

    /// The backstop behind `in_transaction`: a connection on which a transaction was dropped
    /// (its ROLLBACK only queued) is brought out of it before it can be kept for the next
    /// request, so another connection can lock the same rows at once.
    #[allow(clippy::disallowed_methods)]
    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_connection_left_inside_a_transaction_is_ended_before_reuse(pool: DbPool) {
        let store = Store::from_pool(pool.clone());
        let now = Now::current();
        let room = NewRoom {
            source_channel_id: String::new(),
            source_channel_type: 0,
            creator: "alice".into(),
            room_name: "r1".into(),
            call_type: 1,
            invite_on: 0,
            max_participants: 2,
            limits: CallLimits::default(),
        };
        store.create_room(&room, &[], now).await.expect("create");

        let mut conn = pool.acquire().await.expect("connection");
        {
            let mut tx = Tx::new(conn.begin_with(backend::BEGIN).await.expect("begin"));
            lock_call(&mut tx, "r1", now).await.expect("lock");
            // Dropped here without commit or rollback, as an early return would.
        }
        // MySQL queues the ROLLBACK on the connection (SQLite's worker thread runs it soon).
        #[cfg(not(feature = "embedded"))]
        assert!(conn.should_flush());
        let conn = hand_back(conn, false)
            .await
            .expect("a connection that can be reused");
        assert!(!conn.is_in_transaction() && !conn.should_flush());
        // Another instance can change the room at once.
        let mut other = pool.acquire().await.expect("another connection");
        #[cfg(not(feature = "embedded"))]
        sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
            .execute(&mut *other)
            .await
            .expect("lock wait");
        sqlx::query("UPDATE call_room SET status = 1 WHERE room_name = 'r1'")
            .execute(&mut *other)
            .await
            .expect("the room is not locked any more");
        drop(conn);
    }
}
