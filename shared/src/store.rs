//! The store: every read and every transaction, over sqlx.
//!
//! One backend per build: MySQL/MariaDB (production, tests) or, with the `embedded`
//! feature, SQLite for the local main job. The SQL is shared; the few dialect
//! differences live in [`backend`].

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::{QueryBuilder, Row};

use crate::config::ConfigError;
use crate::error::ApiError;
use crate::model::{Now, Participant, ParticipantStatus, Room, RoomStatus};
use crate::rules::{self, Action, CallState};

pub use backend::{Db, MIGRATOR, TEST_URL_EXAMPLE, URL_SCHEMES};

pub type DbPool = sqlx::Pool<Db>;
type Tx = sqlx::Transaction<'static, Db>;

#[cfg(not(feature = "embedded"))]
mod backend {
    use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};

    pub type Db = sqlx::MySql;
    pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/mysql");
    pub const URL_SCHEMES: &[&str] = &["mysql://", "mariadb://"];
    pub const TEST_URL_EXAMPLE: &str = "mysql://root@127.0.0.1:3306/test";
    /// Row locks for the read that starts a call transaction.
    macro_rules! for_update {
        () => {
            " FOR UPDATE"
        };
    }
    pub(crate) use for_update;

    pub fn pool(url: &str) -> Result<super::DbPool, sqlx::Error> {
        let options: MySqlConnectOptions = url.parse()?;
        // One Lambda serves one request at a time: a small pool, connected on first use.
        Ok(MySqlPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_lazy_with(options))
    }

    pub const INSERT_TEARDOWN: &str =
        "INSERT IGNORE INTO livekit_teardown (room_name, attempts, created_at) VALUES (?, 0, ?)";

    pub fn last_insert_id(result: &sqlx::mysql::MySqlQueryResult) -> i64 {
        result.last_insert_id() as i64
    }

    /// Deadlock (1213) and lock-wait timeout (1205) are worth another attempt.
    pub fn is_retryable(db: &dyn sqlx::error::DatabaseError) -> bool {
        db.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1205 | 1213))
    }

    /// Which unique key a duplicate-entry error names.
    pub fn unique_key(message: &str) -> Option<super::UniqueKey> {
        use super::UniqueKey::*;
        [
            ("uq_live_uid", LiveUid),
            ("uq_live_channel", LiveChannel),
            ("uq_room_uid", RoomUid),
            ("uq_room_name", RoomName),
        ]
        .into_iter()
        .find_map(|(name, key)| message.contains(name).then_some(key))
    }
}

#[cfg(feature = "embedded")]
mod backend {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    pub type Db = sqlx::Sqlite;
    pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
    pub const URL_SCHEMES: &[&str] = &["sqlite:"];
    pub const TEST_URL_EXAMPLE: &str = "sqlite://.local/test.db";
    /// SQLite has no row locks: one connection serialises every transaction instead.
    macro_rules! for_update {
        () => {
            ""
        };
    }
    pub(crate) use for_update;

    pub fn pool(url: &str) -> Result<super::DbPool, sqlx::Error> {
        let options: SqliteConnectOptions = url.parse()?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        Ok(SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(super::ACQUIRE_TIMEOUT)
            .connect_lazy_with(options))
    }

    pub const INSERT_TEARDOWN: &str =
        "INSERT OR IGNORE INTO livekit_teardown (room_name, attempts, created_at) VALUES (?, 0, ?)";

    pub fn last_insert_id(result: &sqlx::sqlite::SqliteQueryResult) -> i64 {
        result.last_insert_rowid()
    }

    pub fn is_retryable(db: &dyn sqlx::error::DatabaseError) -> bool {
        // SQLITE_BUSY / SQLITE_LOCKED
        matches!(db.code().as_deref(), Some("5" | "6" | "517"))
    }

    pub fn unique_key(message: &str) -> Option<super::UniqueKey> {
        use super::UniqueKey::*;
        [
            ("call_participant.room_name, call_participant.uid", RoomUid),
            ("call_participant.uid", LiveUid),
            ("call_room.source_channel", LiveChannel),
            ("call_room.room_name", RoomName),
        ]
        .into_iter()
        .find_map(|(name, key)| message.contains(name).then_some(key))
    }
}

use backend::for_update;

// Short enough that an outage answers 503 well inside the function timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_ATTEMPTS: u32 = 4;

/// The unique keys of the schema, as a constraint violation names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueKey {
    RoomName,
    LiveChannel,
    RoomUid,
    LiveUid,
}

pub fn unique_violation(err: &sqlx::Error) -> Option<UniqueKey> {
    let db = err.as_database_error()?;
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    backend::unique_key(db.message())
}

/// The database could not be reached or answered in time: 503, and worth trying later.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    )
}

pub fn is_retryable(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(backend::is_retryable)
}

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

/// Run one transaction attempt again on deadlocks, lock-wait timeouts and live-row races.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if tries < MAX_ATTEMPTS && err.is_retryable() => {
                tracing::warn!(attempt = tries, error = ?err, "retrying transaction");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries))).await;
            }
            Err(err) => return Err(err.into_api()),
        }
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

#[derive(Clone)]
pub struct Store {
    pool: DbPool,
    /// Whether final rooms are queued for a LiveKit DeleteRoom (only when LiveKit is configured).
    teardown: bool,
}

const ROOM_COLUMNS: &str = "r.id, r.source_channel_id, r.source_channel_type, r.creator, \
     r.room_name, r.call_type, r.invite_on, r.max_participants, r.status, r.created_at, r.updated_at";

/// A room with all its rows in one round trip; the lock variant starts every call transaction.
macro_rules! call_query {
    ($suffix:expr) => {
        concat!(
            "SELECT r.id, r.source_channel_id, r.source_channel_type, r.creator, r.room_name, ",
            "r.call_type, r.invite_on, r.max_participants, r.status, r.created_at, r.updated_at, ",
            "p.id AS p_id, p.uid AS p_uid, p.status AS p_status, p.join_time AS p_join_time, ",
            "p.leave_time AS p_leave_time, p.created_at AS p_created_at, p.updated_at AS p_updated_at ",
            "FROM call_room r LEFT JOIN call_participant p ON p.room_name = r.room_name ",
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
        let pool = backend::pool(url).map_err(|e| ConfigError::Malformed {
            name: "DATABASE_URL",
            reason: e.to_string(),
        })?;
        Ok(Store::from_pool(pool))
    }

    pub fn from_pool(pool: DbPool) -> Self {
        Store {
            pool,
            teardown: false,
        }
    }

    pub fn with_teardown(mut self, enabled: bool) -> Self {
        self.teardown = enabled;
        self
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    pub async fn ping(&self) -> Result<(), ApiError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn create_room(
        &self,
        new: &NewRoom,
        invitees: &[String],
        now: Now,
    ) -> Result<CallState, ApiError> {
        retrying(|| self.create_room_once(new, invitees, now)).await
    }

    async fn create_room_once(
        &self,
        new: &NewRoom,
        invitees: &[String],
        now: Now,
    ) -> Result<CallState, TxError> {
        let mut tx = self.pool.begin().await?;
        let mut everyone = vec![new.creator.clone()];
        everyone.extend(invitees.iter().cloned());
        let busy = live_uids(&mut tx, &everyone, None).await?;
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
        let inserted = sqlx::query(
            "INSERT INTO call_room (source_channel_id, source_channel_type, creator, room_name, \
             call_type, invite_on, max_participants, status, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&new.source_channel_id)
        .bind(new.source_channel_type)
        .bind(&new.creator)
        .bind(&new.room_name)
        .bind(new.call_type)
        .bind(new.invite_on)
        .bind(new.max_participants)
        .bind(RoomStatus::NotStarted.code())
        .bind(now.at)
        .bind(now.at)
        .execute(&mut *tx)
        .await;
        let id = match inserted {
            Ok(result) => backend::last_insert_id(&result),
            Err(err) if unique_violation(&err) == Some(UniqueKey::LiveChannel) => {
                drop(tx);
                let room_name = self.active_room_of_channel(new).await?.unwrap_or_default();
                return Err(ApiError::ChannelHasActiveRoom { room_name }.into());
            }
            Err(err) => return Err(err.into()),
        };
        let room = Room {
            id,
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
        };
        let mut state = rules::new_call(room, invitees, now);
        write_rows(&mut tx, &mut state).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn active_room_of_channel(&self, new: &NewRoom) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT room_name FROM call_room WHERE source_channel_type = ? \
             AND source_channel_id = ? AND status IN (0, 1) LIMIT 1",
        )
        .bind(new.source_channel_type)
        .bind(&new.source_channel_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// A room with its rows, without locks; None when the room does not exist.
    pub async fn load(&self, room_name: &str) -> Result<Option<CallState>, ApiError> {
        let rows = sqlx::query(LOAD_CALL)
            .bind(room_name)
            .fetch_all(&self.pool)
            .await?;
        Ok(decode_call(&rows)?)
    }

    pub async fn list_rooms(
        &self,
        filter: &RoomFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Room>, i64), ApiError> {
        let mut count = QueryBuilder::<Db>::new("SELECT COUNT(*) FROM call_room r");
        push_filter(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        if total <= offset {
            return Ok((Vec::new(), total));
        }
        let mut select = QueryBuilder::<Db>::new(format!("SELECT {ROOM_COLUMNS} FROM call_room r"));
        push_filter(&mut select, filter);
        select.push(" ORDER BY r.id DESC LIMIT ").push_bind(limit);
        select.push(" OFFSET ").push_bind(offset);
        let rows = select.build().fetch_all(&self.pool).await?;
        let rooms = rows.iter().map(decode_room).collect::<Result<_, _>>()?;
        Ok((rooms, total))
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
        // Ringing again records a uid live elsewhere as busy, so it needs to know.
        let ring_target = [uid.to_owned()];
        let change = Change {
            room_name,
            check_busy: if action == Action::RingAgain {
                &ring_target
            } else {
                &[]
            },
            live_conflict: Some(uid),
            teardown: true,
        };
        let (state, applied, finalised) = self
            .change_call(change, |state, busy| {
                guard(state)?;
                match action {
                    Action::RingAgain => rules::ring_again(state, uid, busy.contains(uid), now),
                    _ => rules::apply_action(state, uid, action, now),
                }
            })
            .await?;
        Ok(ActionResult {
            participant: state.rows[applied.row].clone(),
            room: state.room,
            changed: applied.changed,
            finalised,
        })
    }

    /// Ring each uid again; uids live in another call are recorded as busy.
    pub async fn invite(
        &self,
        room_name: &str,
        uids: &[String],
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
    ) -> Result<(Room, Vec<Participant>, bool), ApiError> {
        let change = Change {
            room_name,
            check_busy: uids,
            live_conflict: None,
            teardown: true,
        };
        let (state, concerned, finalised) = self
            .change_call(change, |state, busy| {
                guard(state)?;
                rules::invite(state, uids, busy, now)
            })
            .await?;
        let rows = concerned.iter().map(|i| state.rows[*i].clone()).collect();
        Ok((state.room, rows, finalised))
    }

    pub async fn end_room(
        &self,
        room_name: &str,
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
    ) -> Result<RoomResult, ApiError> {
        self.room_change(room_name, |state| {
            guard(state)?;
            Ok(rules::end(state, now))
        })
        .await
    }

    pub async fn set_room_status(
        &self,
        room_name: &str,
        status: RoomStatus,
        now: Now,
        guard: impl Fn(&CallState) -> Result<(), ApiError>,
    ) -> Result<RoomResult, ApiError> {
        self.room_change(room_name, |state| {
            guard(state)?;
            rules::set_room_status(state, status, now)
        })
        .await
    }

    async fn room_change(
        &self,
        room_name: &str,
        change: impl Fn(&mut CallState) -> Result<bool, ApiError>,
    ) -> Result<RoomResult, ApiError> {
        let spec = Change {
            room_name,
            check_busy: &[],
            live_conflict: None,
            teardown: true,
        };
        let (state, changed, finalised) = self.change_call(spec, |state, _| change(state)).await?;
        Ok(RoomResult {
            room: state.room,
            changed,
            finalised,
        })
    }

    /// The one shape of every call transaction: lock the room and its rows, let a rule change
    /// them in memory, write back what changed, commit; retried on deadlocks and races.
    /// Returns the state after the change, the rule's answer and whether the room became final.
    async fn change_call<T>(
        &self,
        spec: Change<'_>,
        rule: impl Fn(&mut CallState, &HashSet<String>) -> Result<T, ApiError>,
    ) -> Result<(CallState, T, bool), ApiError> {
        retrying(|| async {
            let (mut tx, mut state) = self.lock(spec.room_name).await?;
            let busy = live_uids(&mut tx, spec.check_busy, Some(spec.room_name)).await?;
            let was_final = state.room.status.is_final();
            let answer = rule(&mut state, &busy)?;
            let finalised = !was_final && state.room.status.is_final();
            if state.is_changed() {
                match write_back(&mut tx, &mut state).await {
                    // The uid rings or talks in another call; the database said so.
                    Err(err) if unique_violation(&err) == Some(UniqueKey::LiveUid) => {
                        if let Some(uid) = spec.live_conflict {
                            let busy_uids = vec![uid.to_owned()];
                            return Err(ApiError::ParticipantInCall { busy_uids }.into());
                        }
                        return Err(err.into());
                    }
                    other => other?,
                }
                if finalised && spec.teardown && self.teardown {
                    queue_teardown(&mut tx, &state.room.room_name, state.room.updated_at).await?;
                }
                tx.commit().await?;
            }
            Ok((state, answer, finalised))
        })
        .await
    }

    /// Begin a transaction holding the room's row and its participant rows.
    async fn lock(&self, room_name: &str) -> Result<(Tx, CallState), TxError> {
        let mut tx = self.pool.begin().await?;
        match lock_call(&mut tx, room_name).await? {
            Some(state) => Ok((tx, state)),
            None => Err(ApiError::RoomNotFound.into()),
        }
    }

    /// Applies one verified LiveKit webhook event. The event id is recorded in the same
    /// transaction as its effect, so a failed attempt leaves nothing behind and LiveKit's
    /// retry is processed, while a repeated id changes nothing.
    pub async fn apply_webhook(
        &self,
        event: &WebhookEvent,
        now: Now,
    ) -> Result<WebhookOutcome, ApiError> {
        retrying(|| self.apply_webhook_once(event, now)).await
    }

    async fn apply_webhook_once(
        &self,
        event: &WebhookEvent,
        now: Now,
    ) -> Result<WebhookOutcome, TxError> {
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query("INSERT INTO webhook_event (id, received_at) VALUES (?, ?)")
            .bind(&event.id)
            .bind(now.at)
            .execute(&mut *tx)
            .await;
        if let Err(err) = recorded {
            return match err.as_database_error().map(|e| e.kind()) {
                Some(sqlx::error::ErrorKind::UniqueViolation) => Ok(WebhookOutcome::Duplicate),
                _ => Err(err.into()),
            };
        }
        let Some(mut state) = lock_call(&mut tx, &event.room_name).await? else {
            tx.commit().await?;
            return Ok(WebhookOutcome::Ignored);
        };
        let outcome = match &event.kind {
            // Unknown uids are acknowledged and ignored.
            WebhookKind::ParticipantJoined { uid } | WebhookKind::ParticipantLeft { uid }
                if state.row(uid).is_none() =>
            {
                WebhookOutcome::Ignored
            }
            WebhookKind::ParticipantJoined { .. } if state.room.status.is_final() => {
                // A still-valid token reopened a finished room: close it again.
                if self.teardown {
                    queue_teardown(&mut tx, &state.room.room_name, now.at).await?;
                }
                WebhookOutcome::DeleteAgain
            }
            WebhookKind::ParticipantJoined { uid } => {
                let (elsewhere, finalised) = self
                    .close_live_elsewhere(&mut tx, uid, &state.room.room_name, now)
                    .await?;
                let changed = rules::presence_joined(&mut state, uid, event.created_at, now);
                if changed {
                    write_back(&mut tx, &mut state).await?;
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
                let was_final = state.room.status.is_final();
                if rules::presence_left(&mut state, uid, event.created_at, now) {
                    write_back(&mut tx, &mut state).await?;
                    let finalised = !was_final && state.room.status.is_final();
                    if finalised && self.teardown {
                        queue_teardown(&mut tx, &state.room.room_name, now.at).await?;
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
                    || !rules::end(&mut state, now)
                {
                    WebhookOutcome::Ignored
                } else {
                    write_back(&mut tx, &mut state).await?;
                    WebhookOutcome::Applied {
                        rooms: Vec::new(),
                        finalised: Vec::new(),
                    }
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// LiveKit saw `uid` join `room_name`: its live row in any other room is closed and that
    /// room settles. Returns the rooms changed and those it made final (queued for teardown).
    async fn close_live_elsewhere(
        &self,
        tx: &mut Tx,
        uid: &str,
        room_name: &str,
        now: Now,
    ) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
        let others: Vec<String> = sqlx::query_scalar(
            "SELECT room_name FROM call_participant WHERE uid = ? AND status IN (0, 1) AND room_name <> ?",
        )
        .bind(uid)
        .bind(room_name)
        .fetch_all(&mut **tx)
        .await?;
        let (mut changed, mut finalised) = (Vec::new(), Vec::new());
        for other in others {
            let Some(mut state) = lock_call(tx, &other).await? else {
                continue;
            };
            let was_final = state.room.status.is_final();
            if rules::close_elsewhere(&mut state, uid, now) {
                write_back(tx, &mut state).await?;
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

    /// Rooms whose LiveKit room still has to be deleted, oldest first.
    pub async fn pending_teardowns(&self, limit: i64) -> Result<Vec<(String, i32)>, ApiError> {
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT room_name, attempts FROM livekit_teardown ORDER BY created_at LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// DeleteRoom succeeded (or was given up on): forget the room's teardown.
    pub async fn teardown_done(&self, room_name: &str) -> Result<(), ApiError> {
        sqlx::query("DELETE FROM livekit_teardown WHERE room_name = ?")
            .bind(room_name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn teardown_failed(&self, room_name: &str) -> Result<(), ApiError> {
        sqlx::query("UPDATE livekit_teardown SET attempts = attempts + 1 WHERE room_name = ?")
            .bind(room_name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Rooms with a row ringing since before `cutoff`, oldest first.
    pub async fn rooms_ringing_since(
        &self,
        cutoff: Now,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT room_name FROM call_participant WHERE status = 0 AND updated_at < ? \
             GROUP BY room_name ORDER BY MIN(updated_at) LIMIT ?",
        )
        .bind(cutoff.at)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(names)
    }

    /// Rooms at `status` last changed before `cutoff` (rooms at 0: with nobody ringing).
    pub async fn idle_rooms(
        &self,
        status: RoomStatus,
        cutoff: Now,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT r.room_name FROM call_room r WHERE r.status = ? AND r.updated_at < ? \
             AND (r.status <> 0 OR NOT EXISTS (SELECT 1 FROM call_participant p \
                  WHERE p.room_name = r.room_name AND p.status = 0)) \
             ORDER BY r.updated_at LIMIT ?",
        )
        .bind(status.code())
        .bind(cutoff.at)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(names)
    }

    /// Rooms in progress since before `cutoff` (by start of the room), oldest first.
    pub async fn calls_started_before(
        &self,
        cutoff: Now,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT room_name FROM call_room WHERE status = 1 AND created_at < ? ORDER BY created_at LIMIT ?",
        )
        .bind(cutoff.at)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(names)
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
        let done = sqlx::query("DELETE FROM webhook_event WHERE received_at < ?")
            .bind(before.at)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// How one call transaction behaves around its rule.
struct Change<'a> {
    room_name: &'a str,
    /// uids whose liveness elsewhere the rule needs (invite).
    check_busy: &'a [String],
    /// A live-row conflict on write means this uid is in another call (join).
    live_conflict: Option<&'a str>,
    /// Queue a LiveKit DeleteRoom when the room becomes final.
    teardown: bool,
}

/// A verified LiveKit webhook event, reduced to what the lifecycle needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: String,
    pub room_name: String,
    /// LiveKit's createdAt, Unix seconds.
    pub created_at: i64,
    pub kind: WebhookKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookKind {
    ParticipantJoined { uid: String },
    ParticipantLeft { uid: String },
    RoomFinished,
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
}

async fn lock_call(tx: &mut Tx, room_name: &str) -> Result<Option<CallState>, sqlx::Error> {
    let rows = sqlx::query(LOCK_CALL)
        .bind(room_name)
        .fetch_all(&mut **tx)
        .await?;
    decode_call(&rows)
}

async fn queue_teardown(
    tx: &mut Tx,
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

/// The uids among `uids` that are live (ringing or joined) in a room other than `except`.
async fn live_uids(
    tx: &mut Tx,
    uids: &[String],
    except: Option<&str>,
) -> Result<HashSet<String>, sqlx::Error> {
    if uids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut query = QueryBuilder::<Db>::new(
        "SELECT uid FROM call_participant WHERE status IN (0, 1) AND uid IN (",
    );
    let mut list = query.separated(", ");
    for uid in uids {
        list.push_bind(uid.clone());
    }
    query.push(")");
    if let Some(room_name) = except {
        query
            .push(" AND room_name <> ")
            .push_bind(room_name.to_owned());
    }
    let found: Vec<String> = query.build_query_scalar().fetch_all(&mut **tx).await?;
    Ok(found.into_iter().collect())
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

async fn write_back(tx: &mut Tx, state: &mut CallState) -> Result<(), sqlx::Error> {
    if state.room_changed() {
        sqlx::query("UPDATE call_room SET status = ?, updated_at = ? WHERE id = ?")
            .bind(state.room.status.code())
            .bind(state.room.updated_at)
            .bind(state.room.id)
            .execute(&mut **tx)
            .await?;
    }
    write_rows(tx, state).await
}

async fn write_rows(tx: &mut Tx, state: &mut CallState) -> Result<(), sqlx::Error> {
    let mut new_ids = Vec::new();
    for (i, row) in state.changed_rows_indexed() {
        if row.id == 0 {
            let result = sqlx::query(
                "INSERT INTO call_participant (room_name, uid, status, join_time, leave_time, \
                 created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&row.room_name)
            .bind(&row.uid)
            .bind(row.status.code())
            .bind(row.join_time)
            .bind(row.leave_time)
            .bind(row.created_at)
            .bind(row.updated_at)
            .execute(&mut **tx)
            .await?;
            new_ids.push((i, backend::last_insert_id(&result)));
        } else {
            sqlx::query(
                "UPDATE call_participant SET status = ?, join_time = ?, leave_time = ?, \
                 updated_at = ? WHERE id = ?",
            )
            .bind(row.status.code())
            .bind(row.join_time)
            .bind(row.leave_time)
            .bind(row.updated_at)
            .bind(row.id)
            .execute(&mut **tx)
            .await?;
        }
    }
    for (i, id) in new_ids {
        state.rows[i].id = id;
    }
    Ok(())
}

type DbRow = <Db as sqlx::Database>::Row;

fn decode_room(row: &DbRow) -> Result<Room, sqlx::Error> {
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
            .ok_or_else(|| corrupt("room status", status))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn decode_call(rows: &[DbRow]) -> Result<Option<CallState>, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let room = decode_room(first)?;
    let mut participants = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(id) = row.try_get::<Option<i64>, _>("p_id")? else {
            continue;
        };
        let status: i16 = row.try_get("p_status")?;
        participants.push(Participant {
            id,
            room_name: room.room_name.clone(),
            uid: row.try_get("p_uid")?,
            status: ParticipantStatus::from_code(status.into())
                .ok_or_else(|| corrupt("participant status", status))?,
            join_time: row.try_get("p_join_time")?,
            leave_time: row.try_get("p_leave_time")?,
            created_at: row.try_get::<NaiveDateTime, _>("p_created_at")?,
            updated_at: row.try_get::<NaiveDateTime, _>("p_updated_at")?,
        });
    }
    Ok(Some(CallState::new(room, participants)))
}

fn corrupt(what: &str, value: i16) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {what} {value} in the database").into())
}
