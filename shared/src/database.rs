//! The database this build speaks and how its errors read: the facts that configuration,
//! the error mapping and the store all need. It knows no store, so they can all depend on it.
//!
//! One backend per build: MySQL/MariaDB (production, tests) or, with the `embedded` feature,
//! SQLite for the local main job.

/// The unique keys of the schema, as a constraint violation names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueKey {
    RoomName,
    LiveChannel,
    RoomUid,
    LiveUid,
}

/// Which unique key a failed statement ran into, if that is why it failed.
pub fn unique_violation(err: &sqlx::Error) -> Option<UniqueKey> {
    let db = err.as_database_error()?;
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    driver::unique_key(db.message())
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
    ) || err.as_database_error().is_some_and(driver::is_unavailable)
}

/// The server refused a new connection for lack of room (too many connections, or too many
/// for this user): one may free up in a moment.
pub fn is_out_of_connections(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(driver::is_out_of_connections)
}

/// Deadlocks, lock-wait timeouts and busy databases: the same transaction may succeed again.
pub fn is_retryable(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(driver::is_retryable)
}

#[cfg(not(feature = "embedded"))]
mod driver {
    use sqlx::mysql::MySqlDatabaseError;

    use super::UniqueKey;

    pub type Db = sqlx::MySql;
    pub const URL_SCHEMES: &[&str] = &["mysql://", "mariadb://"];
    pub const TEST_URL_EXAMPLE: &str = "mysql://root@127.0.0.1:3306/test";

    /// Deadlock (1213) and lock-wait timeout (1205) are worth another attempt.
    pub fn is_retryable(db: &dyn sqlx::error::DatabaseError) -> bool {
        db.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1205 | 1213))
    }

    /// No connection to be had: too many connections (1040), too many for this user (1226),
    /// shutting down (1053), the connection killed (MariaDB 1927) or closed after its idle
    /// time (MySQL 8: 4031); or a statement stopped at its time limit (MariaDB 1969, MySQL
    /// 3024: `crate::store::STATEMENT_TIMEOUT`).
    pub fn is_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
        db.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1040 | 1053 | 1226 | 1927 | 1969 | 3024 | 4031))
    }

    /// Too many connections (1040), too many for this user (1226).
    pub fn is_out_of_connections(db: &dyn sqlx::error::DatabaseError) -> bool {
        db.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1040 | 1226))
    }

    /// Which unique key a duplicate-entry error names.
    pub fn unique_key(message: &str) -> Option<UniqueKey> {
        [
            ("uq_live_uid", UniqueKey::LiveUid),
            ("uq_live_channel", UniqueKey::LiveChannel),
            ("uq_room_uid", UniqueKey::RoomUid),
            ("uq_room_name", UniqueKey::RoomName),
        ]
        .into_iter()
        .find_map(|(name, key)| message.contains(name).then_some(key))
    }
}

#[cfg(feature = "embedded")]
mod driver {
    use super::UniqueKey;

    pub type Db = sqlx::Sqlite;
    pub const URL_SCHEMES: &[&str] = &["sqlite:"];
    pub const TEST_URL_EXAMPLE: &str = "sqlite://.local/test.db";

    /// SQLITE_BUSY, SQLITE_LOCKED and SQLITE_BUSY_SNAPSHOT.
    pub fn is_retryable(db: &dyn sqlx::error::DatabaseError) -> bool {
        matches!(db.code().as_deref(), Some("5" | "6" | "517"))
    }

    /// The file cannot be opened or read: SQLITE_CANTOPEN (14), SQLITE_IOERR (10, and its
    /// extended codes), SQLITE_FULL (13).
    pub fn is_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
        db.code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 10 | 13 | 14))
    }

    /// A file has no connection limit.
    pub fn is_out_of_connections(_db: &dyn sqlx::error::DatabaseError) -> bool {
        false
    }

    pub fn unique_key(message: &str) -> Option<UniqueKey> {
        [
            (
                "call_participant.room_name, call_participant.uid",
                UniqueKey::RoomUid,
            ),
            ("call_participant.uid", UniqueKey::LiveUid),
            ("call_room.source_channel", UniqueKey::LiveChannel),
            ("call_room.room_name", UniqueKey::RoomName),
        ]
        .into_iter()
        .find_map(|(name, key)| message.contains(name).then_some(key))
    }
}

pub use driver::{Db, TEST_URL_EXAMPLE, URL_SCHEMES};
