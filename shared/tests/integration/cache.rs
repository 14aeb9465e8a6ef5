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
    cache.put_room(&cached, miss.generation).await;
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
    writer.forget_room(&name).await;
    reader.put_room(&stale, miss.generation).await;
    assert_eq!(
        reader.get_room(&name).await.room,
        None,
        "the old copy stays out"
    );
    // A lookup after the commit may cache what it reads.
    let fresh = reader.get_room(&name).await;
    reader.put_room(&stale, fresh.generation).await;
    assert!(reader.get_room(&name).await.room.is_some());
}

#[tokio::test]
async fn an_unreachable_redis_is_skipped_quickly() {
    let cache = Cache::new(Some("redis://127.0.0.1:1/0")).expect("url parses");
    let started = Instant::now();
    cache
        .put_room(
            &CachedRoom {
                room: room("x"),
                members: vec![],
                deadline: None,
            },
            cache.get_room("x").await.generation,
        )
        .await;
    assert_eq!(cache.get_room("x").await.room, None);
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
    let first = get_room(&app, request("GET", &path, &token, ""))
        .await
        .expect("response");
    assert_eq!(first.status(), 200);
    app.store.close().await;
    let second = get_room(&app, request("GET", &path, &token, ""))
        .await
        .expect("response");
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
    let before = get_room(&reader, request("GET", &path, &token, ""))
        .await
        .expect("response");
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

    let after = get_room(&reader, request("GET", &path, &token, ""))
        .await
        .expect("response");
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
