//! The database going away and coming back: 503 service_unavailable meanwhile, recovery
//! without a restart (MariaDB: a TCP relay in front of it plays the outage; SQLite: a
//! database file that cannot be opened). And the production store serving every kind of
//! request on the one connection it keeps, as a Lambda instance does.

use crate::common;

use call_shared::App;
use call_shared::handlers::{get_room, health};
use call_shared::model::Now;
use call_shared::store::{DbPool, NewRoom, Store};
use lambda_http::{Body, Request};
use serde_json::Value;
use sqlx::ConnectOptions;

/// Relays connections from `addr` to MariaDB until dropped (which cuts every connection).
#[cfg(not(feature = "embedded"))]
struct Relay {
    accept: tokio::task::JoinHandle<()>,
}

#[cfg(not(feature = "embedded"))]
impl Relay {
    async fn start(addr: std::net::SocketAddr) -> Relay {
        use tokio::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind(addr).await.expect("bind relay");
        let accept = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect("127.0.0.1:3306").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { accept }
    }
}

#[cfg(not(feature = "embedded"))]
impl Drop for Relay {
    fn drop(&mut self) {
        // Aborting the accept task drops the JoinSet, which aborts every relayed connection.
        self.accept.abort();
    }
}

fn request(path: &str, token: Option<&str>) -> Request {
    let mut builder = lambda_http::http::Request::builder().uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Body::Empty).expect("request")
}

fn json(body: &Body) -> Value {
    serde_json::from_slice(body.as_ref()).expect("json")
}

#[cfg(not(feature = "embedded"))]
async fn free_addr() -> std::net::SocketAddr {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    probe.local_addr().expect("addr")
}

#[cfg(not(feature = "embedded"))]
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn requests_get_503_while_the_database_is_down_and_recover_after(pool: DbPool) {
    let database = pool
        .connect_options()
        .get_database()
        .expect("test database")
        .to_owned();
    let addr = free_addr().await;
    let url = format!("mysql://root@{addr}/{database}");
    let app =
        App::with_store(common::config(&[]), Store::connect_lazy(&url).expect("url")).expect("app");
    let token = common::service_token(&app);

    let relay = Relay::start(addr).await;
    let up = health(&app, request("/health", None))
        .await
        .expect("response");
    assert_eq!(up.status(), 200);
    assert_eq!(json(up.body())["database"], "ok");

    drop(relay);
    let down = health(&app, request("/health", None))
        .await
        .expect("response");
    assert_eq!(down.status(), 503);
    assert_eq!(json(down.body())["status"], "degraded");
    let refused = get_room(&app, request("/api/rooms/r1", Some(&token)))
        .await
        .expect("response");
    assert_eq!(refused.status(), 503);
    assert_eq!(json(refused.body())["error"], "service_unavailable");
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "a 503 says when to come back"
    );

    let _relay = Relay::start(addr).await;
    let back = health(&app, request("/health", None))
        .await
        .expect("response");
    assert_eq!(back.status(), 200);
    let missing = get_room(&app, request("/api/rooms/r1", Some(&token)))
        .await
        .expect("response");
    assert_eq!(
        missing.status(),
        404,
        "the same App answers again once MariaDB is back"
    );
}

/// SQLite's outage: the database file cannot be opened (its directory is missing), then can.
#[cfg(feature = "embedded")]
#[tokio::test]
async fn requests_get_503_while_the_database_cannot_be_opened_and_recover_after() {
    let dir = std::env::temp_dir().join(format!("call-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/call.db?mode=rwc", dir.display());
    let app =
        App::with_store(common::config(&[]), Store::connect_lazy(&url).expect("url")).expect("app");
    let token = common::service_token(&app);

    let down = health(&app, request("/health", None))
        .await
        .expect("response");
    assert_eq!(down.status(), 503);
    let refused = get_room(&app, request("/api/rooms/r1", Some(&token)))
        .await
        .expect("response");
    assert_eq!(refused.status(), 503, "{}", json(refused.body()));
    assert_eq!(json(refused.body())["error"], "service_unavailable");
    assert!(refused.headers().contains_key("retry-after"));

    std::fs::create_dir_all(&dir).expect("the directory comes back");
    Store::prepare_local(&url, false).await.expect("migrate");
    let back = health(&app, request("/health", None))
        .await
        .expect("response");
    assert_eq!(back.status(), 200);
    let missing = get_room(&app, request("/api/rooms/r1", Some(&token)))
        .await
        .expect("response");
    assert_eq!(missing.status(), 404, "the same App answers again");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Lambda instance's store, with the production pool settings: the sweeper's reads, a
/// refused create that names the channel's open room, and a plain read all go through the
/// one kept connection. (With SQLite's old pool of one, the channel lookup and the sweeper's
/// reads went to the pool while the kept connection held its only slot: 503 after 2 s.)
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn the_production_store_serves_every_kind_of_request_on_its_kept_connection(pool: DbPool) {
    let store = Store::connect_lazy(pool.connect_options().to_url_lossy().as_ref()).expect("store");
    let app =
        App::with_store(common::config(&[("RING_TIMEOUT_SECONDS", "1")]), store).expect("app");
    let room = |name: &str, creator: &str| NewRoom {
        source_channel_id: "channel_1".into(),
        source_channel_type: 0,
        creator: creator.into(),
        room_name: name.into(),
        call_type: 1,
        invite_on: 1,
        max_participants: 2,
        limits: call_shared::model::CallLimits {
            ring_timeout_seconds: 1,
            ..Default::default()
        },
    };
    let then = Now::from_millis(Now::current().ms - 5_000).expect("instant");
    app.store
        .create_room(&room("r1", "alice"), &["bob".to_owned()], then)
        .await
        .expect("create");
    let started = std::time::Instant::now();
    let refused = app
        .store
        .create_room(&room("r2", "carol"), &[], Now::current())
        .await;
    assert_eq!(
        refused.err(),
        Some(call_shared::ApiError::ChannelHasActiveRoom {
            room_name: "r1".into()
        })
    );
    let report = call_shared::sweeper::sweep(&app, Now::current())
        .await
        .expect("sweep");
    assert_eq!(
        (report.deadlines_applied, report.rooms_closed),
        (1, 1),
        "{report:?}"
    );
    let state = common::loaded_now(&app, "r1").await;
    assert!(state.room.status.is_final(), "{:?}", state.room);
    let took = started.elapsed();
    println!("refusal, sweep and read on one kept connection: {took:?}");
    assert!(
        took < std::time::Duration::from_secs(2),
        "nothing waited for a pool slot: {took:?}"
    );
    common::assert_nothing_held(&pool).await;
}

/// A statement stopped by the server's statement timeout (MariaDB's max_statement_time here,
/// 1969; MySQL's max_execution_time, 3024, in AWS) is a 503 to try again, never a 500.
#[cfg(not(feature = "embedded"))]
#[sqlx::test(migrations = false)]
async fn a_statement_timeout_is_service_unavailable(pool: DbPool) {
    let err = sqlx::query("SET STATEMENT max_statement_time = 0.01 FOR SELECT SLEEP(2)")
        .execute(&pool)
        .await
        .expect_err("the server stops the statement");
    let number = err
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(|db| db.number());
    assert_eq!(number, Some(1969), "{err}");
    assert!(call_shared::database::is_unavailable(&err));
    let api = call_shared::ApiError::from(err);
    assert_eq!((api.status(), api.key()), (503, "service_unavailable"));
}
