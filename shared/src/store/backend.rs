//! The few places the two backends' SQL and pools differ. A build speaks exactly one of them
//! (see [`crate::database`]).

#[cfg(not(feature = "embedded"))]
mod mysql {
    use std::time::Duration;

    use sqlx::AssertSqlSafe;
    use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPoolOptions};

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

    /// InnoDB takes row locks as the transaction reads them (FOR UPDATE). Under the default
    /// REPEATABLE READ, which only the room totals' recount keeps (its shared read must hold
    /// every room off, gaps included).
    pub const BEGIN: &str = "BEGIN";
    /// Every call transaction: READ COMMITTED, so the locking read of a room's rows takes
    /// record locks only. Under REPEATABLE READ it also locked the gap after the room's last
    /// row in `(room_name, uid)`, where the next room's rows go: with sequential names,
    /// creating room N+1 waited for any transaction holding room N. The room row lock still
    /// serialises every change of one room, and the unique indexes keep the live invariants.
    pub const BEGIN_CALL: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN";
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

    pub fn pool(url: &str, idle: Duration) -> Result<crate::store::DbPool, sqlx::Error> {
        // Certificates are verified for any server but this machine unless the URL says.
        let options = crate::store::tls::secure_by_default(url, url.parse()?);
        // One Lambda serves one request at a time: a small pool, connected on first use.
        // No COM_PING before every acquire (a round trip per query); a connection that died
        // while the function was frozen fails its first query, which is retried once.
        Ok(MySqlPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(crate::store::ACQUIRE_TIMEOUT)
            .idle_timeout(idle)
            .test_before_acquire(false)
            .after_connect(move |conn, _| Box::pin(session_limits(conn, idle)))
            .connect_lazy_with(options))
    }

    /// Bounds every wait of this session (see [`crate::store::LOCK_WAIT`]) and has the server
    /// close it after `idle` unused: the one way a frozen function's connection goes back.
    async fn session_limits(conn: &mut MySqlConnection, idle: Duration) -> Result<(), sqlx::Error> {
        use crate::store::{LOCK_WAIT, STATEMENT_TIMEOUT};
        let lock_wait = LOCK_WAIT.as_secs().max(1);
        let common = format!(
            "SET SESSION innodb_lock_wait_timeout = {lock_wait}, lock_wait_timeout = {lock_wait}, \
             wait_timeout = {}",
            idle.as_secs().max(1)
        );
        // The statement limit is named differently by the two servers: MySQL 8's
        // max_execution_time (milliseconds, SELECT only; InnoDB's lock wait bounds its writes),
        // MariaDB's max_statement_time (seconds, every statement). MySQL (Aurora, production)
        // is tried first, so it connects in one round trip; a SET naming an unknown variable
        // sets nothing, and MariaDB then takes its own.
        let mysql = format!(
            "{common}, max_execution_time = {}",
            STATEMENT_TIMEOUT.as_millis()
        );
        match sqlx::raw_sql(AssertSqlSafe(mysql))
            .execute(&mut *conn)
            .await
        {
            Err(err) if unknown_variable(&err) => {
                let mariadb = format!(
                    "{common}, max_statement_time = {}", // portable-sql: allow max-statement-time (MariaDB only, after MySQL refused)
                    STATEMENT_TIMEOUT.as_secs_f64()
                );
                sqlx::raw_sql(AssertSqlSafe(mariadb))
                    .execute(&mut *conn)
                    .await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    /// ER_UNKNOWN_SYSTEM_VARIABLE (1193).
    fn unknown_variable(err: &sqlx::Error) -> bool {
        err.as_database_error()
            .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
            .is_some_and(|db| db.number() == 1193)
    }

    pub const INSERT_TEARDOWN: &str =
        "INSERT IGNORE INTO livekit_teardown (room_name, attempts, created_at) VALUES (?, 0, ?)";
    pub const OWE_CACHE_FORGET: &str = "INSERT INTO cache_invalidation (room_name, misses, \
         owed_since) VALUES (?, 1, ?) ON DUPLICATE KEY UPDATE misses = misses + 1";
    pub const INSERT_REMOVAL: &str = "INSERT IGNORE INTO livekit_removal \
         (room_name, uid, attempts, created_at) VALUES (?, ?, 0, ?)";
    /// A key row in flight, unless the key already has one.
    pub const CLAIM_KEY: &str = "INSERT IGNORE INTO idempotency_key (scope, fingerprint, \
         lease_token, lease_until, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)";
    /// One batch of expired key rows, oldest first (through ix_idempotency_key_expires).
    pub const PURGE_KEYS: &str =
        "DELETE FROM idempotency_key WHERE expires_at < ? ORDER BY expires_at LIMIT ?";

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
    /// One writer at a time: no gaps to lock.
    pub const BEGIN_CALL: &str = "BEGIN IMMEDIATE";
    /// One writer at a time: the publisher sees committed rows only, like every reader.
    pub const BEGIN_READ_COMMITTED: &str = "BEGIN IMMEDIATE";

    pub const INSERT_STREAM: &str = "INSERT OR IGNORE INTO event_stream (endpoint, room_name, \
         delivered_seq, attempts, next_attempt_at, lease_token, lease_until) \
         SELECT ?, ?, 0, 0, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM event_endpoint h \
         WHERE h.endpoint = ? AND h.failures >= ?)";
    pub const ENDPOINT_FAILED: &str = "INSERT INTO event_endpoint (endpoint, failures, updated_at) \
         VALUES (?, 1, ?) ON CONFLICT (endpoint) DO UPDATE SET failures = failures + 1, \
         updated_at = ?";

    pub fn pool(url: &str, idle: Duration) -> Result<crate::store::DbPool, sqlx::Error> {
        let options: SqliteConnectOptions = url.parse()?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // One writer at a time is SQLite's nature: a transaction waits as long for the
            // write lock (held for milliseconds by each call transaction) as InnoDB would for
            // a row lock, then gives up (503).
            .busy_timeout(crate::store::LOCK_WAIT)
            .foreign_keys(true);
        // Two connections, as on MySQL: the one the store keeps between requests and one for a
        // concurrent caller in the same process, so neither waits for the other's slot.
        Ok(SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(crate::store::ACQUIRE_TIMEOUT)
            .idle_timeout(idle)
            .test_before_acquire(false)
            .connect_lazy_with(options))
    }

    pub const INSERT_TEARDOWN: &str =
        "INSERT OR IGNORE INTO livekit_teardown (room_name, attempts, created_at) VALUES (?, 0, ?)";
    pub const OWE_CACHE_FORGET: &str = "INSERT INTO cache_invalidation (room_name, misses, \
         owed_since) VALUES (?, 1, ?) ON CONFLICT (room_name) DO UPDATE SET misses = misses + 1";
    pub const INSERT_REMOVAL: &str = "INSERT OR IGNORE INTO livekit_removal \
         (room_name, uid, attempts, created_at) VALUES (?, ?, 0, ?)";
    pub const CLAIM_KEY: &str = "INSERT OR IGNORE INTO idempotency_key (scope, fingerprint, \
         lease_token, lease_until, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)";
    /// SQLite's DELETE takes no LIMIT (unless built for it): the batch is chosen by a subquery.
    pub const PURGE_KEYS: &str = "DELETE FROM idempotency_key WHERE scope IN (SELECT scope \
         FROM idempotency_key WHERE expires_at < ? ORDER BY expires_at LIMIT ?)";

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
