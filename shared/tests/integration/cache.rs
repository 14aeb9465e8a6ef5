//! The Redis room cache and rate limits on the real Redis, and the fallback when Redis is
//! unreachable. Redis must be running: these tests fail, never skip, without it.

use crate::common;

use std::time::{Duration, Instant};

use call_shared::cache::{Cache, CachedRoom};
use call_shared::handlers::{end_room, get_room, join_room};
use call_shared::model::{Now, Room, RoomStatus};
use call_shared::store::{DbPool, NewRoom};
use lambda_http::{Body, Request, Response};
use serde_json::Value;

/// Unique per test run, so parallel runs and both backends never share keys.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

fn room(name: &str) -> Room {
    let now = Now::current();
    Room {
        id: 7,
        source_channel_id: "c".into(),
        source_channel_type: 0,
        creator: "alice".into(),
        room_name: name.into(),
        call_type: 1,
        invite_on: 0,
        max_participants: 2,
        status: RoomStatus::NotStarted,
        created_at: now.at,
        updated_at: now.at,
        ..Room::default()
    }
}

fn request(method: &str, path: &str, token: &str, body: &str) -> Request {
    lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_owned()))
        .expect("request")
}

/// GET /api/rooms/{name} through `app`, as a client of that instance.
async fn read_room(app: &call_shared::App, path: &str, token: &str) -> Response<Body> {
    get_room(app, request("GET", path, token, ""))
        .await
        .expect("response")
}

fn json(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("json body")
}

async fn seed_room(app: &call_shared::App, name: &str) {
    let new = NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: unique("creator"),
        room_name: name.to_owned(),
        call_type: 1,
        invite_on: 0,
        max_participants: 5,
        limits: call_shared::model::CallLimits::default(),
    };
    app.store
        .create_room(&new, &[], Now::current())
        .await
        .expect("create");
}

#[tokio::test]
async fn a_cached_room_round_trips_until_forgotten() {
    let cache = Cache::new(Some(&common::redis_url())).expect("redis url");
    let name = unique("cache");
    let cached = CachedRoom {
        room: room(&name),
        members: vec!["alice".into(), "bob".into()],
        deadline: None,
    };
    let miss = cache.get_room(&name).await;
    assert_eq!(miss.room, None);
    cache
        .put_room(&cached, miss.generation.expect("redis answered"))
        .await;
    let got = cache
        .get_room(&name)
        .await
        .room
        .expect("redis must be reachable for this test");
    assert_eq!(got.members, cached.members);
    assert_eq!(got.room.room_name, name);
    cache.forget_room(&name).await;
    assert_eq!(cache.get_room(&name).await.room, None);
}

/// Another instance's commit between a reader's lookup and its write-back wins: the copy the
/// reader loaded before that commit is not cached.
#[tokio::test]
async fn a_copy_read_before_another_instances_commit_is_not_cached() {
    let reader = Cache::new(Some(&common::redis_url())).expect("redis url");
    let writer = Cache::new(Some(&common::redis_url())).expect("redis url");
    let name = unique("race");
    let stale = CachedRoom {
        room: room(&name),
        members: vec!["alice".into()],
        deadline: None,
    };
    let miss = reader.get_room(&name).await;
    assert_eq!(miss.room, None);
    // The reader has loaded `stale` from the database; now another instance commits.
    assert!(writer.forget_room(&name).await, "redis answered the forget");
    reader
        .put_room(&stale, miss.generation.expect("redis answered"))
        .await;
    assert_eq!(
        reader.get_room(&name).await.room,
        None,
        "the old copy stays out"
    );
    // A lookup after the commit may cache what it reads.
    let fresh = reader.get_room(&name).await;
    reader
        .put_room(&stale, fresh.generation.expect("redis answered"))
        .await;
    assert!(reader.get_room(&name).await.room.is_some());
}

#[tokio::test]
async fn an_unreachable_redis_is_skipped_quickly() {
    let cache = Cache::new(Some("redis://127.0.0.1:1/0")).expect("url parses");
    let started = Instant::now();
    let lookup = cache.get_room("x").await;
    assert_eq!(lookup.room, None);
    // Nothing read after an unanswered lookup may be cached: there is no generation for it.
    assert_eq!(lookup.generation, None);
    assert!(
        !cache.forget_room("x").await,
        "an unanswered forget says so"
    );
    assert!(!cache.forget_rooms(&["x"]).await);
    assert_eq!(cache.count_in_window("join", "alice").await, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn rate_limit_windows_count_per_uid() {
    let cache = Cache::new(Some(&common::redis_url())).expect("redis url");
    let uid = unique("rl");
    let (first, retry_after) = cache.count_in_window("join", &uid).await.expect("redis up");
    let (second, _) = cache.count_in_window("join", &uid).await.expect("redis up");
    // The window may roll over between the two calls; then the count starts again at 1.
    assert!(first == 1 && (second == 2 || second == 1));
    assert!((1..=60).contains(&retry_after));
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_is_served_from_the_cache_without_the_database(pool: DbPool) {
    let app = common::app_with(pool.clone(), &[("REDIS_URL", &common::redis_url())]);
    let token = common::service_token(&app);
    let name = unique("cached");
    seed_room(&app, &name).await;
    let path = format!("/api/rooms/{name}");
    let first = read_room(&app, &path, &token).await;
    assert_eq!(first.status(), 200);
    app.store.close().await;
    let second = read_room(&app, &path, &token).await;
    assert_eq!(second.status(), 200, "{}", json(&second));
    assert_eq!(json(&second)["data"], json(&first)["data"]);
}

/// Two instances share Redis: one caches the room, the other commits a change to it, and
/// the first one's next read shows the change.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_commit_forgets_the_cached_room(pool: DbPool) {
    let redis = common::redis_url();
    let reader = common::app_with(pool.clone(), &[("REDIS_URL", &redis)]);
    let writer = common::app_with(pool, &[("REDIS_URL", &redis)]);
    let token = common::service_token(&reader);
    let name = unique("stale");
    seed_room(&reader, &name).await;
    let path = format!("/api/rooms/{name}");
    let before = read_room(&reader, &path, &token).await;
    assert_eq!(json(&before)["data"]["status"], 0);
    let cached = reader
        .cache
        .get_room(&name)
        .await
        .room
        .expect("cached by the read");
    assert_eq!(cached.room.status, RoomStatus::NotStarted);

    let ended = end_room(&writer, request("POST", &format!("{path}/end"), &token, ""))
        .await
        .expect("response");
    assert_eq!(ended.status(), 200);
    assert_eq!(
        reader.cache.get_room(&name).await.room,
        None,
        "the commit forgot it"
    );

    let after = read_room(&reader, &path, &token).await;
    assert_eq!(json(&after)["data"]["status"], 3);
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn get_room_works_with_redis_down(pool: DbPool) {
    let app = common::app_with(pool, &[("REDIS_URL", "redis://127.0.0.1:1/0")]);
    let token = common::service_token(&app);
    let name = unique("noredis");
    seed_room(&app, &name).await;
    let response = get_room(
        &app,
        request("GET", &format!("/api/rooms/{name}"), &token, ""),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(json(&response)["data"]["room_name"], name.as_str());
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn joins_over_the_limit_are_rate_limited(pool: DbPool) {
    let app = common::app_with(
        pool,
        &[
            ("REDIS_URL", &common::redis_url()),
            ("RATE_LIMIT_JOIN_PER_MIN", "2"),
        ],
    );
    let name = unique("limited");
    seed_room(&app, &name).await;
    let uid = unique("joiner");
    let token = common::user_token(&app, &uid);
    let body = format!(r#"{{"room_name":"{name}","uid":"{uid}"}}"#);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = join_room(
            &app,
            request("POST", "/api/participants/join", &token, &body),
        )
        .await
        .expect("response");
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_eq!(json(&response)["error"], "rate_limited");
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    // Two joins fit in a window; the third is refused unless the minute rolled over meanwhile.
    assert_eq!(&statuses[..2], &[200, 200]);
    assert!(statuses[2] == 429 || statuses[2] == 200);
    if statuses[2] == 200 {
        let again = join_room(
            &app,
            request("POST", "/api/participants/join", &token, &body),
        )
        .await
        .expect("response");
        assert_eq!(again.status(), 429);
    }
}

/// A cached copy carries the room's next deadline; past it the copy says nothing about now.
/// The copy is still in Redis when the read comes, so only the deadline check keeps it out.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_cached_ringing_room_is_not_served_past_its_ring_deadline(pool: DbPool) {
    let app = common::app_with(pool, &[("REDIS_URL", &common::redis_url())]);
    let token = common::service_token(&app);
    let name = unique("ringing");
    let ring_s = 5;
    // Created so that the invite's deadline is 1.5 s from now.
    let created = Now::from_millis(Now::current().ms - (ring_s * 1000 - 1500)).expect("instant");
    let new = NewRoom {
        source_channel_id: String::new(),
        source_channel_type: 0,
        creator: unique("caller"),
        room_name: name.clone(),
        call_type: 1,
        invite_on: 1,
        max_participants: 2,
        limits: call_shared::model::CallLimits {
            ring_timeout_seconds: ring_s as i32,
            ..Default::default()
        },
    };
    app.store
        .create_room(&new, &[unique("callee")], created)
        .await
        .expect("create");
    let path = format!("/api/rooms/{name}");
    let ringing = read_room(&app, &path, &token).await;
    assert_eq!(json(&ringing)["data"]["status"], 0, "{}", json(&ringing));
    let cached = app.cache.get_room(&name).await.room.expect("cached");
    let deadline = cached.deadline.expect("the copy carries the ring deadline");
    assert!(cached.current_at(Now::current().at));

    let wait = (deadline - Now::current().at).num_milliseconds() + 300;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    assert!(
        app.cache.get_room(&name).await.room.is_some(),
        "the copy is still in Redis"
    );
    assert!(!cached.current_at(Now::current().at));
    let after = read_room(&app, &path, &token).await;
    let expected = common::loaded_now(&app, &name).await.room.status;
    assert!(
        expected.is_final(),
        "the only invite rang out: {expected:?}"
    );
    assert_eq!(
        json(&after)["data"]["status"],
        expected as i32,
        "the read past the deadline shows the rung-out call, not the cached copy"
    );
}

/// A commit whose instance cannot reach Redis (a partition, or Redis away) cannot drop the
/// cached copy, which other instances would go on serving for its whole TTL. The commit
/// records the forget it owes in the database; the next sweep, on any instance that reaches
/// Redis, drops the copy and the record.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_forget_redis_missed_is_made_by_the_next_sweep(pool: DbPool) {
    let redis = common::redis_url();
    let reader = common::app_with(pool.clone(), &[("REDIS_URL", &redis)]);
    let cut_off = common::app_with(pool.clone(), &[("REDIS_URL", "redis://127.0.0.1:1/0")]);
    let sweeper = common::app_with(pool.clone(), &[("REDIS_URL", &redis)]);
    let token = common::service_token(&reader);
    let name = unique("owed");
    seed_room(&reader, &name).await;
    let path = format!("/api/rooms/{name}");
    let before = read_room(&reader, &path, &token).await;
    assert_eq!(json(&before)["data"]["status"], 0);

    let ended = end_room(
        &cut_off,
        request("POST", &format!("{path}/end"), &token, ""),
    )
    .await
    .expect("response");
    assert_eq!(ended.status(), 200, "{}", json(&ended));
    let owed = owed_forgets(&pool).await;
    assert_eq!(
        owed,
        vec![(name.clone(), 1)],
        "the missed forget is on record"
    );
    // The hazard itself: the copy from before the commit is still what Redis has.
    let stale = reader
        .cache
        .get_room(&name)
        .await
        .room
        .expect("still cached");
    assert_eq!(stale.room.status, RoomStatus::NotStarted);

    let report = call_shared::sweeper::sweep(&sweeper, Now::current())
        .await
        .expect("sweep");
    assert!(report.cache_forgets_replayed >= 1, "{report:?}");
    assert_eq!(reader.cache.get_room(&name).await.room, None);
    assert!(
        owed_forgets(&pool)
            .await
            .iter()
            .all(|(room, _)| room != &name)
    );
    let after = read_room(&reader, &path, &token).await;
    assert_eq!(json(&after)["data"]["status"], 3, "{}", json(&after));
    common::assert_nothing_held(&pool).await;
}

/// A commit that misses the room again after the sweeper read the record keeps the record:
/// the sweeper deletes only what it replayed.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_forget_missed_again_during_the_replay_stays_owed(pool: DbPool) {
    let app = common::app_with(pool.clone(), &[("REDIS_URL", &common::redis_url())]);
    let name = unique("again");
    app.store
        .owe_cache_forget(&name, Now::current())
        .await
        .expect("owe");
    let read = app.store.owed_cache_forgets(10).await.expect("read");
    assert_eq!(read, vec![(name.clone(), 1)]);
    app.store
        .owe_cache_forget(&name, Now::current())
        .await
        .expect("owe again");
    app.store.cache_forgets_paid(&read).await.expect("paid");
    assert_eq!(owed_forgets(&pool).await, vec![(name.clone(), 2)]);
    let read = app.store.owed_cache_forgets(10).await.expect("read");
    app.store.cache_forgets_paid(&read).await.expect("paid");
    assert_eq!(owed_forgets(&pool).await, vec![]);
}

/// The owed forgets as another connection sees them.
async fn owed_forgets(pool: &DbPool) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT room_name, misses FROM cache_invalidation ORDER BY room_name")
        .fetch_all(pool)
        .await
        .expect("read cache_invalidation")
}

/// A change that fails on the database's side may have committed all the same (the answer to
/// COMMIT lost with the connection), and a client's retry then changes nothing and forgets
/// nothing: the failed attempt drops the cached copy itself.
#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn a_change_the_database_failed_still_drops_the_cached_room(pool: DbPool) {
    let redis = common::redis_url();
    let reader = common::app_with(pool.clone(), &[("REDIS_URL", &redis)]);
    #[cfg(not(feature = "embedded"))]
    let unreachable = "mysql://root@127.0.0.1:1/call";
    #[cfg(feature = "embedded")]
    let unreachable = "sqlite:///nonexistent-dir/call.db";
    let cut_off = call_shared::App::with_store(
        common::config(&[("REDIS_URL", &redis)]),
        call_shared::store::Store::connect_lazy(unreachable).expect("url"),
    )
    .expect("app");
    let token = common::service_token(&reader);
    let name = unique("unsure");
    seed_room(&reader, &name).await;
    let path = format!("/api/rooms/{name}");
    let before = read_room(&reader, &path, &token).await;
    assert_eq!(json(&before)["data"]["status"], 0);
    assert!(reader.cache.get_room(&name).await.room.is_some());

    let failed = end_room(
        &cut_off,
        request("POST", &format!("{path}/end"), &token, ""),
    )
    .await
    .expect("response");
    assert_eq!(failed.status(), 503, "{}", json(&failed));
    assert_eq!(
        reader.cache.get_room(&name).await.room,
        None,
        "the copy goes whether or not the change committed"
    );
}

/// Relays connections to the test Redis until dropped, which cuts every relayed connection:
/// Redis restarting, or a partition healing, as a Lambda instance's kept connection sees it.
struct RedisRelay {
    accept: tokio::task::JoinHandle<()>,
    addr: std::net::SocketAddr,
}

impl RedisRelay {
    async fn start(addr: Option<std::net::SocketAddr>) -> RedisRelay {
        use tokio::net::{TcpListener, TcpStream};
        let upstream = match redis::Client::open(common::redis_url())
            .expect("redis url")
            .get_connection_info()
            .addr()
            .clone()
        {
            redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            other => panic!("the test Redis must be on TCP, not {other:?}"),
        };
        let wanted = addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr"));
        // The port of a relay just dropped may take a moment to be free again.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(wanted).await {
                Ok(listener) => break listener,
                Err(err) if tries < 50 => {
                    tries += 1;
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("bind the relay: {err}"),
            }
        };
        let addr = listener.local_addr().expect("addr");
        let accept = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                links.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        RedisRelay { accept, addr }
    }
}

impl Drop for RedisRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// An instance whose Redis connection died while it was idle (Redis restarted, a partition
/// healed) finds out on its next call: that call goes through on a new connection instead of
/// failing, so a commit's forget is not lost and no backoff starts.
#[tokio::test]
async fn a_redis_connection_found_dead_is_replaced_within_the_call() {
    let relay = RedisRelay::start(None).await;
    let addr = relay.addr;
    let cache = Cache::new(Some(&format!("redis://{addr}/0"))).expect("url");
    let name = unique("dropped");
    assert!(
        cache.get_room(&name).await.generation.is_some(),
        "connected through the relay"
    );
    drop(relay);
    let _back = RedisRelay::start(Some(addr)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        cache.forget_room(&name).await,
        "the forget went through on a new connection"
    );
    assert!(cache.get_room(&name).await.generation.is_some());
}
