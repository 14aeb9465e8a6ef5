//! Applying the schema migrations so that MySQL 8 / Aurora MySQL 3 can always finish them.
//!
//! sqlx's runner applies a MySQL migration as one multi-statement script inside a transaction
//! that DDL commits implicitly: when a statement fails halfway, what ran before it stays, the
//! version is left marked failed (`success = FALSE`, "dirty") and every later run refuses to
//! start. MySQL 8 has no `ADD COLUMN IF NOT EXISTS` to make the script safe to run again.
//! So on MySQL the store applies each migration itself, one statement at a time, and records
//! in `_migration_progress` how many statements of the version have taken effect:
//!
//! - a statement the server refused (it said why) did not happen: the run stops with a
//!   message naming the version, the statement and the reason, and the next run starts again
//!   at that statement once the cause is removed;
//! - a statement whose outcome is unknown (the connection died before its result or its
//!   record arrived, or sqlx's own runner left the version dirty with no record at all) may
//!   have taken effect (MySQL 8 and MariaDB apply each DDL statement atomically): on the next
//!   run it is executed again, and an answer that says its object already exists or is
//!   already gone counts as done.
//!
//! Rows in sqlx's `_sqlx_migrations` keep sqlx's meaning (the same checksums, `success` set
//! once a version is complete), so `sqlx migrate info` and sqlx's runner (the tests' fresh
//! databases, SQLite) agree with this one.
//!
//! Both backends also accept a migration file that was rewritten on purpose: 0003 no longer
//! creates triggers (MySQL 8 with binary logging refuses them without SUPER), so a database
//! that applied the old text has its recorded checksum moved to the new one here; migration
//! 0006 drops the old triggers.

#[cfg(not(feature = "embedded"))]
use std::time::Instant;

#[cfg(not(feature = "embedded"))]
use sqlx::AssertSqlSafe;
#[cfg(not(feature = "embedded"))]
use sqlx::migrate::Migration;
use sqlx::migrate::Migrator;

use super::{DbConnection, DbPool};

/// What stopped the migrations.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(
        "migration {version} ({description}) failed at statement {statement} of {total}: \
         {reason}; statements before it are applied and recorded: remove the cause and run the \
         migrations again, they continue at statement {statement} ({head})"
    )]
    Statement {
        version: i64,
        description: String,
        statement: usize,
        total: usize,
        reason: String,
        /// The statement's first line, to find it in the file.
        head: String,
    },
    #[error(
        "migration {version} ({description}) was applied from a different text than the one \
         this build carries; restore the migration file that was applied"
    )]
    Changed { version: i64, description: String },
}

/// Migration files rewritten after release, by the checksum (SHA-384) of the text that was
/// applied: a database that recorded it is moved to the current text's checksum, since a later
/// migration brings it to the same schema.
#[cfg(not(feature = "embedded"))]
const REWRITTEN: &[(i64, &str)] = &[(
    3,
    // 0003 as released, with the room_count triggers (0006 drops them).
    "ad95b118812cfbae7388002cc37238508df08595c7ce111ae36d3ba05d2cfac01ec4e29d9f7cfac3681ab60a1ec10a5f",
)];
#[cfg(feature = "embedded")]
const REWRITTEN: &[(i64, &str)] = &[(
    3,
    "1fac5f546792d9b32d1d8a15fc85324cb20bf4cb05fc5d82e90e361c0699a15929037eca9d94788a19738847bc5a5f95",
)];

/// sqlx's bookkeeping table, created the way sqlx creates it.
const SQLX_TABLE: &str = "_sqlx_migrations";

/// Brings the database's schema up to date with `migrator`.
pub async fn run(pool: &DbPool, migrator: &Migrator) -> Result<(), MigrationError> {
    let mut conn = pool.acquire().await?;
    let result = run_on(&mut conn, migrator).await;
    if result.is_err() {
        // A failed run may leave session state behind (the lock, a statement's transaction).
        let _ = conn.close().await;
    }
    result
}

#[cfg(feature = "embedded")]
async fn run_on(conn: &mut DbConnection, migrator: &Migrator) -> Result<(), MigrationError> {
    // SQLite applies each migration in a transaction: a failure leaves nothing behind, so
    // sqlx's runner is already rerunnable. Only the rewritten files need a word first.
    ensure_sqlx_table(conn).await?;
    accept_rewritten(conn, migrator).await?;
    migrator.run_direct(None, conn, false).await?;
    Ok(())
}

#[cfg(not(feature = "embedded"))]
async fn run_on(conn: &mut DbConnection, migrator: &Migrator) -> Result<(), MigrationError> {
    // One migrator at a time per database (two deploys, or a deploy and the local job).
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 600)")
        .bind(lock_name(conn).await?)
        .fetch_one(&mut *conn)
        .await?;
    if locked != Some(1) {
        return Err(sqlx::Error::Protocol(
            "another migration run held the migration lock for 10 minutes".into(),
        )
        .into());
    }
    let result = apply_all(conn, migrator).await;
    let name = lock_name(conn).await;
    if let Ok(name) = name {
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(name)
            .execute(&mut *conn)
            .await;
    }
    result
}

#[cfg(not(feature = "embedded"))]
async fn lock_name(conn: &mut DbConnection) -> Result<String, sqlx::Error> {
    // GET_LOCK names are limited to 64 characters; a database name may be as long.
    sqlx::query_scalar("SELECT CONCAT('call-migrate:', SHA1(DATABASE()))")
        .fetch_one(&mut *conn)
        .await
}

#[cfg(not(feature = "embedded"))]
async fn apply_all(conn: &mut DbConnection, migrator: &Migrator) -> Result<(), MigrationError> {
    ensure_sqlx_table(conn).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _migration_progress (
            version BIGINT PRIMARY KEY,
            statements_done INT NOT NULL,
            failed_statement INT NULL,
            error TEXT NULL,
            updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
        )",
    )
    .execute(&mut *conn)
    .await?;
    accept_rewritten(conn, migrator).await?;
    for migration in migrator.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        let recorded: Option<(bool, Vec<u8>)> =
            sqlx::query_as("SELECT success, checksum FROM _sqlx_migrations WHERE version = ?")
                .bind(migration.version)
                .fetch_optional(&mut *conn)
                .await?;
        match recorded {
            Some((true, checksum)) if checksum == *migration.checksum => {}
            Some((true, _)) => {
                return Err(MigrationError::Changed {
                    version: migration.version,
                    description: migration.description.to_string(),
                });
            }
            Some((false, _)) => apply_one(conn, migration, Resume::Dirty).await?,
            None => apply_one(conn, migration, Resume::Fresh).await?,
        }
    }
    Ok(())
}

/// How a version's earlier attempts left it.
#[cfg(not(feature = "embedded"))]
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resume {
    /// Never started.
    Fresh,
    /// Marked failed by an earlier run.
    Dirty,
}

/// Server errors that say a statement's object already exists or is already gone: the answer
/// a statement gives when it is run again after it took effect.
#[cfg(not(feature = "embedded"))]
const ALREADY_DONE: &[u16] = &[
    1050, // table already exists
    1060, // duplicate column name
    1061, // duplicate key name
    1062, // duplicate entry (a seeding INSERT)
    1091, // can't DROP: column or key does not exist
    1359, // trigger already exists
    1360, // trigger does not exist
    1826, // duplicate foreign key constraint name
];

#[cfg(not(feature = "embedded"))]
async fn apply_one(
    conn: &mut DbConnection,
    migration: &Migration,
    resume: Resume,
) -> Result<(), MigrationError> {
    let started = Instant::now();
    let statements = split_statements(migration.sql.as_str());
    let progress: Option<(i32, Option<i32>)> = sqlx::query_as(
        "SELECT statements_done, failed_statement FROM _migration_progress WHERE version = ?",
    )
    .bind(migration.version)
    .fetch_optional(&mut *conn)
    .await?;
    // The statements known to have taken effect, and from which one on an outcome is unknown.
    let (done, unknown_from) = match (resume, progress) {
        (Resume::Fresh, _) => (0, usize::MAX),
        // The last attempt saw statement `done + 1` refused: it did not happen.
        (Resume::Dirty, Some((done, Some(_)))) => (done as usize, usize::MAX),
        // The last attempt stopped without an answer for statement `done + 1`.
        (Resume::Dirty, Some((done, None))) => (done as usize, done as usize),
        // Left dirty by sqlx's own runner: nothing is known.
        (Resume::Dirty, None) => (0, 0),
    };
    if resume == Resume::Fresh {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (?, ?, FALSE, ?, -1)",
        )
        .bind(migration.version)
        .bind(&*migration.description)
        .bind(&*migration.checksum)
        .execute(&mut *conn)
        .await?;
    } else {
        tracing::warn!(
            version = migration.version,
            done,
            "resuming a migration an earlier run did not finish"
        );
    }
    record_progress(conn, migration.version, done, None).await?;
    for (index, statement) in statements.iter().enumerate().skip(done) {
        match sqlx::raw_sql(AssertSqlSafe(*statement))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {}
            Err(err) if index >= unknown_from && already_done(&err) => {
                tracing::warn!(
                    version = migration.version,
                    statement = index + 1,
                    error = %err,
                    "statement had already taken effect"
                );
            }
            Err(err) => {
                let reason = err.to_string();
                // Best effort: a connection that died cannot record it, and the next run then
                // treats this statement's outcome as unknown, which is also true.
                let _ = record_progress(conn, migration.version, index, Some(&reason)).await;
                return Err(MigrationError::Statement {
                    version: migration.version,
                    description: migration.description.to_string(),
                    statement: index + 1,
                    total: statements.len(),
                    reason,
                    head: first_line(statement),
                });
            }
        }
        record_progress(conn, migration.version, index + 1, None).await?;
    }
    sqlx::query(
        "UPDATE _sqlx_migrations SET success = TRUE, checksum = ?, execution_time = ? \
         WHERE version = ?",
    )
    .bind(&*migration.checksum)
    .bind(started.elapsed().as_nanos() as i64)
    .bind(migration.version)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM _migration_progress WHERE version = ?")
        .bind(migration.version)
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        version = migration.version,
        description = %migration.description,
        statements = statements.len(),
        "migration applied"
    );
    Ok(())
}

#[cfg(not(feature = "embedded"))]
fn already_done(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|db| ALREADY_DONE.contains(&db.number()))
}

/// `done` statements of `version` have taken effect; `failed` is the server's refusal of the
/// next one, when it gave one.
#[cfg(not(feature = "embedded"))]
async fn record_progress(
    conn: &mut DbConnection,
    version: i64,
    done: usize,
    failed: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "REPLACE INTO _migration_progress (version, statements_done, failed_statement, error) \
         VALUES (?, ?, ?, ?)",
    )
    .bind(version)
    .bind(done as i32)
    .bind(failed.map(|_| done as i32 + 1))
    .bind(failed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg_attr(feature = "embedded", allow(dead_code))]
fn first_line(statement: &str) -> String {
    statement
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect()
}

async fn ensure_sqlx_table(conn: &mut DbConnection) -> Result<(), sqlx::migrate::MigrateError> {
    use sqlx::migrate::Migrate;
    conn.ensure_migrations_table(SQLX_TABLE).await
}

/// Moves the recorded checksum of each rewritten migration that was applied from its old text
/// to the current one (see [`REWRITTEN`]).
async fn accept_rewritten(conn: &mut DbConnection, migrator: &Migrator) -> Result<(), sqlx::Error> {
    for (version, old) in REWRITTEN {
        let Some(current) = migrator.iter().find(|m| m.version == *version) else {
            continue;
        };
        let Some(old) = decode_hex(old) else { continue };
        let moved = sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = ? WHERE version = ? AND checksum = ?",
        )
        .bind(&*current.checksum)
        .bind(version)
        .bind(old)
        .execute(&mut *conn)
        .await?;
        if moved.rows_affected() > 0 {
            tracing::info!(
                version,
                "migration file rewritten since it was applied; its record now names the current text"
            );
        }
    }
    Ok(())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Splits a migration into its statements at each `;` that ends one, outside quotes,
/// backticks and comments. Migrations hold no stored programs (no `DELIMITER`, no
/// `BEGIN … END` bodies: see the portability check), so a `;` always ends a statement.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    // A backslash escapes the next character inside quotes (not backticks).
                    if bytes[i] == b'\\' && quote != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                push_statement(&mut statements, &sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    push_statement(&mut statements, &sql[start.min(sql.len())..]);
    statements
}

/// Keeps a statement that has more than comments and blanks.
fn push_statement<'a>(statements: &mut Vec<&'a str>, text: &'a str) {
    let has_code = text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with("--") && !line.starts_with('#')
    });
    if has_code {
        statements.push(text.trim());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let sql = "-- a comment; not a statement\n\
                   CREATE TABLE t (a VARCHAR(3) DEFAULT ';', b INT); -- trailing; comment\n\
                   INSERT INTO t VALUES ('it''s; fine', 1);\n\
                   /* block; comment */ UPDATE `we;ird` SET a = \"x;\\\"y\";\n\
                   -- only a comment at the end;\n";
        assert_eq!(
            split_statements(sql),
            vec![
                "-- a comment; not a statement\nCREATE TABLE t (a VARCHAR(3) DEFAULT ';', b INT)",
                "-- trailing; comment\nINSERT INTO t VALUES ('it''s; fine', 1)",
                "/* block; comment */ UPDATE `we;ird` SET a = \"x;\\\"y\"",
            ]
        );
    }

    #[test]
    fn every_migration_splits_into_statements_that_end_where_the_file_says() {
        for migration in super::super::MIGRATOR.iter() {
            let statements = split_statements(migration.sql.as_str());
            assert!(!statements.is_empty(), "{}", migration.version);
            for statement in statements {
                assert!(!statement.ends_with(';'), "{statement}");
                assert!(!first_line(statement).is_empty(), "{statement}");
            }
        }
    }

    #[test]
    fn rewritten_checksums_are_sha384_hex() {
        for (_, hex) in REWRITTEN {
            assert_eq!(decode_hex(hex).map(|b| b.len()), Some(48));
        }
    }
}
