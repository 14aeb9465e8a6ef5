//! Migrations that MySQL 8 / Aurora MySQL 3 can always finish: a run that stopped halfway
//! (a conflicting object, or sqlx's own runner leaving the version dirty) continues after the
//! cause is removed and ends at the schema of a clean run; a database that applied 0003 when
//! it still created triggers migrates to the end, loses the triggers and keeps exact totals.

use std::path::{Path, PathBuf};

use call_shared::model::{CallLimits, Now};
use call_shared::rules::Action;
use call_shared::store::{DbPool, MIGRATOR, NewRoom, Store};
use sqlx::migrate::Migrator;

#[cfg(not(feature = "embedded"))]
const BACKEND: &str = "mysql";
#[cfg(feature = "embedded")]
const BACKEND: &str = "sqlite";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// The schema as the catalogue describes it: tables, columns, indexes, triggers.
#[cfg(not(feature = "embedded"))]
async fn schema(pool: &DbPool) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for sql in [
        "SELECT CONCAT_WS('|', 'table', TABLE_NAME, ENGINE, TABLE_COLLATION) FROM \
         information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
        "SELECT CONCAT_WS('|', 'column', TABLE_NAME, ORDINAL_POSITION, COLUMN_NAME, COLUMN_TYPE, \
         IS_NULLABLE, COALESCE(COLUMN_DEFAULT, 'none'), EXTRA, COALESCE(COLLATION_NAME, ''), \
         COALESCE(GENERATION_EXPRESSION, '')) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE()",
        "SELECT CONCAT_WS('|', 'index', TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, \
         NON_UNIQUE) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()",
        "SELECT CONCAT_WS('|', 'trigger', TRIGGER_NAME) FROM information_schema.TRIGGERS \
         WHERE TRIGGER_SCHEMA = DATABASE()",
        "SELECT CONCAT_WS('|', 'migration', version, success, HEX(checksum)) \
         FROM _sqlx_migrations",
        "SELECT CONCAT_WS('|', 'progress', version, statements_done) FROM _migration_progress",
        "SELECT CONCAT_WS('|', 'room_count', status, shard, n) FROM room_count",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        lines.extend(rows);
    }
    lines.sort();
    lines
}

#[cfg(feature = "embedded")]
async fn schema(pool: &DbPool) -> Vec<String> {
    let mut lines: Vec<String> = sqlx::query_scalar(
        "SELECT type || '|' || name || '|' || COALESCE(sql, '') FROM sqlite_master \
         UNION ALL SELECT 'migration|' || version || '|' || success || '|' || hex(checksum) \
         FROM _sqlx_migrations \
         UNION ALL SELECT 'room_count|' || status || '|' || shard || '|' || n FROM room_count",
    )
    .fetch_all(pool)
    .await
    .expect("schema");
    lines.sort();
    lines
}

/// The schema a clean run of every migration gives, in a database of its own.
#[cfg(not(feature = "embedded"))]
async fn clean_schema(pool: &DbPool) -> Vec<String> {
    let name: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(pool)
        .await
        .expect("database");
    // Database names end at 64 characters; the tail of sqlx's random name keeps it unique.
    let clean = format!("clean_{}", &name[name.len().saturating_sub(24)..]);
    for sql in [
        format!("DROP DATABASE IF EXISTS `{clean}`"),
        format!("CREATE DATABASE `{clean}`"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .expect("clean database");
    }
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| call_shared::store::TEST_URL_EXAMPLE.to_owned());
    let (server, _) = admin.rsplit_once('/').expect("a database in DATABASE_URL");
    let store = Store::connect_lazy(&format!("{server}/{clean}")).expect("store");
    store.migrate().await.expect("a clean run");
    let lines = schema(store.pool()).await;
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{clean}`")))
        .execute(pool)
        .await
        .expect("drop the clean database");
    lines
}

#[cfg(feature = "embedded")]
async fn clean_schema(_pool: &DbPool) -> Vec<String> {
    let path = std::env::temp_dir().join(format!(
        "call-clean-{}-{}.db",
        std::process::id(),
        Now::current().ms
    ));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = Store::connect_lazy(&url).expect("store");
    store.migrate().await.expect("a clean run");
    let lines = schema(store.pool()).await;
    store.close().await;
    let _ = std::fs::remove_file(&path);
    lines
}

/// A migrator over this backend's migrations as released, with 0003 as it was when it still
/// created the room_count triggers, in a directory of its own.
async fn migrator_with_old_0003() -> (Migrator, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "call-old-migrations-{BACKEND}-{}-{}",
        std::process::id(),
        Now::current().ms
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let source = workspace().join("migrations").join(BACKEND);
    for entry in std::fs::read_dir(&source).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let version: u32 = name[..4].parse().expect("a numbered migration");
        if version <= 5 {
            std::fs::copy(&path, dir.join(&name)).expect("copy");
        }
    }
    let old = workspace()
        .join("shared/tests/fixtures")
        .join(format!("{BACKEND}_0003_with_triggers.sql"));
    std::fs::copy(old, dir.join("0003_calls_on_record.sql")).expect("old 0003");
    let migrator = Migrator::new(dir.as_path()).await.expect("old migrator");
    (migrator, dir)
}

fn room(name: &str) -> NewRoom {
    NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: format!("{name}-a"),
        room_name: name.to_owned(),
        call_type: 1,
        invite_on: 0,
        max_participants: 2,
        limits: CallLimits::default(),
    }
}

async fn triggers(pool: &DbPool) -> i64 {
    #[cfg(not(feature = "embedded"))]
    const SQL: &str =
        "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()";
    #[cfg(feature = "embedded")]
    const SQL: &str = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'";
    sqlx::query_scalar(SQL)
        .fetch_one(pool)
        .await
        .expect("triggers")
}

/// room_count against the rooms, status by status and shard by shard.
async fn assert_counts_exact(pool: &DbPool, when: &str) {
    let kept: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT CAST(status AS SIGNED), CAST(shard AS SIGNED), CAST(n AS SIGNED) FROM room_count \
         WHERE n <> 0 ORDER BY status, shard",
    )
    .fetch_all(pool)
    .await
    .expect("room_count");
    let rooms: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT CAST(status AS SIGNED), CAST(id % 16 AS SIGNED), COUNT(*) FROM call_room \
         GROUP BY status, id % 16 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("rooms");
    assert_eq!(kept, rooms, "{when}");
}

#[sqlx::test(migrations = false)]
async fn a_database_that_applied_0003_with_triggers_migrates_to_the_end(pool: DbPool) {
    let (old, dir) = migrator_with_old_0003().await;
    old.run(&pool).await.expect("the migrations as released");
    assert_eq!(triggers(&pool).await, 2, "the old 0003 made its triggers");
    let store = Store::from_pool(pool.clone());
    let now = Now::current();
    for name in ["t1", "t2", "t3"] {
        store
            .create_room(&room(name), &[], now)
            .await
            .expect("create");
    }
    store.end_room("t2", now, |_| Ok(())).await.expect("end");

    store.migrate().await.expect("migrating from the old 0003");
    assert_eq!(triggers(&pool).await, 0, "0006 dropped them");
    assert_counts_exact(&pool, "re-derived by 0006").await;
    // sqlx's own runner agrees: every recorded checksum is the current file's.
    MIGRATOR
        .run(&pool)
        .await
        .expect("sqlx's runner accepts the records");
    // Counted once from now on (a trigger left behind would count twice).
    store
        .create_room(&room("t4"), &[], now)
        .await
        .expect("create");
    store.end_room("t4", now, |_| Ok(())).await.expect("end");
    store
        .create_room(&room("t5"), &[], now)
        .await
        .expect("create");
    store
        .participant_action("t5", "t5-b", Action::Join, now, |_| Ok(()))
        .await
        .expect("join");
    assert_counts_exact(&pool, "after new changes").await;
    // Indistinguishable from a fresh install, data aside.
    let mut upgraded: Vec<String> = schema(&pool)
        .await
        .into_iter()
        .filter(|l| !l.starts_with("room_count"))
        .collect();
    let mut clean: Vec<String> = clean_schema(&pool)
        .await
        .into_iter()
        .filter(|l| !l.starts_with("room_count"))
        .collect();
    upgraded.sort();
    clean.sort();
    assert_eq!(upgraded, clean);
    let _ = std::fs::remove_dir_all(dir);
}

/// Fails migration 0003 at its last statement: a table of that name is already there.
#[cfg(not(feature = "embedded"))]
async fn plant_conflict(pool: &DbPool) {
    sqlx::query("CREATE TABLE livekit_removal (x INT)")
        .execute(pool)
        .await
        .expect("conflicting table");
}

#[cfg(not(feature = "embedded"))]
async fn remove_conflict(pool: &DbPool) {
    sqlx::query("DROP TABLE livekit_removal")
        .execute(pool)
        .await
        .expect("drop the conflicting table");
}

#[cfg(not(feature = "embedded"))]
async fn recorded(pool: &DbPool, version: i64) -> Option<bool> {
    sqlx::query_scalar("SELECT success FROM _sqlx_migrations WHERE version = ?")
        .bind(version)
        .fetch_optional(pool)
        .await
        .expect("_sqlx_migrations")
}

#[cfg(not(feature = "embedded"))]
#[sqlx::test(migrations = false)]
async fn a_migration_that_failed_halfway_continues_once_the_cause_is_gone(pool: DbPool) {
    plant_conflict(&pool).await;
    let store = Store::from_pool(pool.clone());
    let err = store.migrate().await.expect_err("0003 meets the table");
    let message = err.to_string();
    for part in [
        "migration 3 (calls on record) failed at statement 6 of 6",
        "livekit_removal' already exists",
        "they continue at statement 6",
        "CREATE TABLE livekit_removal",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    // Half done: 0003's first statements took effect, and the version is marked failed.
    assert_eq!(recorded(&pool, 2).await, Some(true));
    assert_eq!(recorded(&pool, 3).await, Some(false));
    let room_count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM room_count")
        .fetch_one(&pool)
        .await
        .expect("0003 created room_count before it stopped");
    assert_eq!(room_count, 64);
    // Running again without removing the cause fails the same way, at the same statement.
    let again = store.migrate().await.expect_err("still there");
    assert!(again.to_string().contains("statement 6 of 6"), "{again}");

    remove_conflict(&pool).await;
    store.migrate().await.expect("the rerun finishes");
    assert_eq!(schema(&pool).await, clean_schema(&pool).await);
}

#[cfg(not(feature = "embedded"))]
#[sqlx::test(migrations = false)]
async fn a_version_sqlx_left_dirty_is_finished(pool: DbPool) {
    // sqlx's own runner (the one releases before this used) stops inside 0003 and leaves the
    // version marked failed, with no record of which statements ran.
    plant_conflict(&pool).await;
    let failed = MIGRATOR.run(&pool).await.expect_err("0003 meets the table");
    assert!(failed.to_string().contains("already exists"), "{failed}");
    assert_eq!(recorded(&pool, 3).await, Some(false));
    let dirty = MIGRATOR
        .run(&pool)
        .await
        .expect_err("sqlx refuses a dirty version");
    assert!(
        matches!(dirty, sqlx::migrate::MigrateError::Dirty(3)),
        "{dirty}"
    );

    remove_conflict(&pool).await;
    Store::from_pool(pool.clone())
        .migrate()
        .await
        .expect("statements that had taken effect count as done");
    assert_eq!(schema(&pool).await, clean_schema(&pool).await);
}

#[cfg(not(feature = "embedded"))]
#[sqlx::test(migrations = false)]
async fn a_statement_whose_outcome_was_never_recorded_is_not_applied_twice(pool: DbPool) {
    // The connection died after the server applied statement 6 of 0003 but before its record:
    // the progress says 5 statements done and no refusal.
    plant_conflict(&pool).await;
    let store = Store::from_pool(pool.clone());
    store
        .migrate()
        .await
        .expect_err("0003 stops at statement 6");
    remove_conflict(&pool).await;
    let statement = call_shared::store::migrations::split_statements(
        MIGRATOR
            .iter()
            .find(|m| m.version == 3)
            .expect("0003")
            .sql
            .as_str(),
    )[5];
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&pool)
        .await
        .expect("statement 6 took effect");
    sqlx::query(
        "UPDATE _migration_progress SET failed_statement = NULL, error = NULL WHERE version = 3",
    )
    .execute(&pool)
    .await
    .expect("no refusal recorded");

    store
        .migrate()
        .await
        .expect("the rerun accepts the table it made");
    assert_eq!(schema(&pool).await, clean_schema(&pool).await);
}
