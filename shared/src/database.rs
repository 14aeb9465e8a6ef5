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

    /// The server cannot serve this connection now; the connection is closed and the request
    /// answered 503 (see [`UNAVAILABLE`]).
    pub fn is_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
        db.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| UNAVAILABLE.contains(&e.number()))
    }

    /// Too many connections (1040), too many for this user (1203, 1226).
    pub fn is_out_of_connections(db: &dyn sqlx::error::DatabaseError) -> bool {
        db.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1040 | 1203 | 1226))
    }

    /// Server errors that mean "not now" on MySQL 8 / Aurora MySQL 3 and MariaDB 10.11.
    pub const UNAVAILABLE: &[u16] = &[
        1037, // out of memory
        1040, // too many connections
        1041, // out of memory (out of resources)
        1053, // server shutting down
        1158, // error reading from the network (the server's side of a broken connection)
        1159, // timeout reading from the network
        1160, // error writing to the network
        1161, // timeout writing to the network
        1203, // the account's max_user_connections reached (RDS sets it per user)
        1226, // the account exceeded a resource limit (max_connections_per_hour, …)
        // Read-only server: during an Aurora failover the old writer turns reader; a fresh
        // connection to the cluster endpoint reaches the new writer.
        1290, 1317, // query execution interrupted (KILL QUERY)
        1637, // too many active concurrent transactions
        1836, // running in read-only mode (innodb_read_only)
        1927, // connection killed (MariaDB)
        1969, // max_statement_time exceeded (MariaDB)
        3024, // max_execution_time exceeded (MySQL)
        4031, // disconnected by the server after its idle timeout (MySQL 8)
    ];

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
