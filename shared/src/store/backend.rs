//! The one place the two backends differ: types, pool options, a few SQL words, and how
//! each names its errors. A build speaks exactly one of them.

#[cfg(not(feature = "embedded"))]
mod mysql {
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

    pub fn pool(url: &str) -> Result<crate::store::DbPool, sqlx::Error> {
        let options: MySqlConnectOptions = url.parse()?;
        // One Lambda serves one request at a time: a small pool, connected on first use.
        // No COM_PING before every acquire (a round trip per query); a connection that died
        // while the function was frozen fails its first query, which is retried once.
        Ok(MySqlPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(crate::store::ACQUIRE_TIMEOUT)
            .idle_timeout(crate::store::IDLE_TIMEOUT)
            .test_before_acquire(false)
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
    pub fn unique_key(message: &str) -> Option<crate::store::UniqueKey> {
        use crate::store::UniqueKey::*;
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
#[cfg(not(feature = "embedded"))]
pub use mysql::*;

#[cfg(feature = "embedded")]
mod sqlite {
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

    pub fn pool(url: &str) -> Result<crate::store::DbPool, sqlx::Error> {
        let options: SqliteConnectOptions = url.parse()?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        Ok(SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(crate::store::ACQUIRE_TIMEOUT)
            .idle_timeout(crate::store::IDLE_TIMEOUT)
            .test_before_acquire(false)
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

    pub fn unique_key(message: &str) -> Option<crate::store::UniqueKey> {
        use crate::store::UniqueKey::*;
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
#[cfg(feature = "embedded")]
pub use sqlite::*;
