//! The few places the two backends' SQL and pools differ. A build speaks exactly one of them
//! (see [`crate::database`]).

#[cfg(not(feature = "embedded"))]
mod mysql {
    use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

    pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/mysql");
    /// Row locks for the read that starts a call transaction.
    macro_rules! for_update {
        () => {
            " FOR UPDATE"
        };
    }
    pub(crate) use for_update;

    /// A uid's live row (ringing or joined), through the unique index on `live_uid`.
    macro_rules! live_row_of {
        () => {
            "p.live_uid = ?"
        };
    }
    pub(crate) use live_row_of;

    /// InnoDB takes row locks as the transaction reads them (FOR UPDATE).
    pub const BEGIN: &str = "BEGIN";
    /// The feed's publisher: no gap locks (so call changes never wait for it), and rows that
    /// other transactions have not committed yet are skipped rather than waited for.
    pub const BEGIN_READ_COMMITTED: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN";

    /// A new delivery stream, leased by its creator, unless the endpoint is paused.
    pub const INSERT_STREAM: &str = "INSERT IGNORE INTO event_stream (endpoint, room_name, \
         delivered_seq, attempts, next_attempt_at, lease_token, lease_until) \
         SELECT ?, ?, 0, 0, ?, ?, ? FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM event_endpoint h \
         WHERE h.endpoint = ? AND h.failures >= ?)";
    pub const ENDPOINT_FAILED: &str = "INSERT INTO event_endpoint (endpoint, failures, updated_at) \
         VALUES (?, 1, ?) ON DUPLICATE KEY UPDATE failures = failures + 1, updated_at = ?";

    pub fn pool(url: &str) -> Result<crate::store::DbPool, sqlx::Error> {
        // Certificates are verified for any server but this machine unless the URL says.
        let options = crate::store::tls::secure_by_default(url, url.parse()?);
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
    pub const OWE_CACHE_FORGET: &str = "INSERT INTO cache_invalidation (room_name, misses, \
         owed_since) VALUES (?, 1, ?) ON DUPLICATE KEY UPDATE misses = misses + 1";
    pub const INSERT_REMOVAL: &str = "INSERT IGNORE INTO livekit_removal \
         (room_name, uid, attempts, created_at) VALUES (?, ?, 0, ?)";

    pub fn last_insert_id(result: &sqlx::mysql::MySqlQueryResult) -> i64 {
        result.last_insert_id() as i64
    }

    /// Whether the server is this machine: the only kind the local job may empty.
    pub fn is_local(url: &str) -> Result<bool, sqlx::Error> {
        let options: MySqlConnectOptions = url.parse()?;
        Ok(matches!(
            options.get_host(),
            "127.0.0.1" | "localhost" | "::1" | "[::1]"
        ))
    }

    pub async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
        use sqlx::migrate::MigrateDatabase;
        sqlx::MySql::drop_database(url).await
    }
}
#[cfg(not(feature = "embedded"))]
pub use mysql::*;

#[cfg(feature = "embedded")]
mod sqlite {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
    /// SQLite has no row locks: the write lock taken at BEGIN serialises transactions instead.
    macro_rules! for_update {
        () => {
            ""
        };
    }
    pub(crate) use for_update;

    /// A uid's live row (ringing or joined), through the partial unique index on uid.
    macro_rules! live_row_of {
        () => {
            "p.uid = ? AND p.status IN (0, 1)"
        };
    }
    pub(crate) use live_row_of;

    /// Take the write lock at BEGIN: a deferred transaction that reads first and writes later
    /// fails at once with SQLITE_BUSY(_SNAPSHOT) when another writer got in between, whereas
    /// an immediate one waits its turn under the busy timeout.
    pub const BEGIN: &str = "BEGIN IMMEDIATE";
    /// One writer at a time: the publisher sees committed rows only, like every reader.
    pub const BEGIN_READ_COMMITTED: &str = "BEGIN IMMEDIATE";

    pub const INSERT_STREAM: &str = "INSERT OR IGNORE INTO event_stream (endpoint, room_name, \
         delivered_seq, attempts, next_attempt_at, lease_token, lease_until) \
         SELECT ?, ?, 0, 0, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM event_endpoint h \
         WHERE h.endpoint = ? AND h.failures >= ?)";
    pub const ENDPOINT_FAILED: &str = "INSERT INTO event_endpoint (endpoint, failures, updated_at) \
         VALUES (?, 1, ?) ON CONFLICT (endpoint) DO UPDATE SET failures = failures + 1, \
         updated_at = ?";

    /// One writer at a time is SQLite's nature: a transaction waits this long for the write
    /// lock (held for milliseconds by each call transaction) before it gives up.
    const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn pool(url: &str) -> Result<crate::store::DbPool, sqlx::Error> {
        let options: SqliteConnectOptions = url.parse()?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // Two connections, as on MySQL: the one the store keeps between requests and one for a
        // concurrent caller in the same process, so neither waits for the other's slot.
        Ok(SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(crate::store::ACQUIRE_TIMEOUT)
            .idle_timeout(crate::store::IDLE_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with(options))
    }

    pub const INSERT_TEARDOWN: &str =
        "INSERT OR IGNORE INTO livekit_teardown (room_name, attempts, created_at) VALUES (?, 0, ?)";
    pub const OWE_CACHE_FORGET: &str = "INSERT INTO cache_invalidation (room_name, misses, \
         owed_since) VALUES (?, 1, ?) ON CONFLICT (room_name) DO UPDATE SET misses = misses + 1";
    pub const INSERT_REMOVAL: &str = "INSERT OR IGNORE INTO livekit_removal \
         (room_name, uid, attempts, created_at) VALUES (?, ?, 0, ?)";

    pub fn last_insert_id(result: &sqlx::sqlite::SqliteQueryResult) -> i64 {
        result.last_insert_rowid()
    }

    pub fn is_local(_url: &str) -> Result<bool, sqlx::Error> {
        Ok(true)
    }

    /// The database file and the WAL files beside it.
    pub async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
        let options: SqliteConnectOptions = url.parse()?;
        let file = options.get_filename().to_owned();
        for suffix in ["", "-wal", "-shm"] {
            let mut path = file.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
                _ => {}
            }
        }
        Ok(())
    }
}
#[cfg(feature = "embedded")]
pub use sqlite::*;
