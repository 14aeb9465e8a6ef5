//! Redis: optional, never the source of truth. The GET-room cache lives here. When Redis is
//! unset or down every call falls back silently (a warning, then the database).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use crate::model::Room;

const ROOM_TTL_SECS: u64 = 30;
const WEBHOOK_TTL_SECS: u64 = 24 * 3600;
const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, leave Redis alone for a while rather than pay a timeout per request.
const BACKOFF: Duration = Duration::from_secs(5);
const KEY_PREFIX: &str = "callsvc:";

/// A room with its member uids, so a user's read can be authorised from the cache alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedRoom {
    pub room: Room,
    pub members: Vec<String>,
}

#[derive(Clone, Default)]
pub struct Cache {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    conn: ConnectionManager,
    started: Instant,
    /// Milliseconds since `started` before which Redis is skipped.
    skip_until_ms: AtomicI64,
}

impl Cache {
    /// Builds the client without connecting; an unparsable URL is a start-up error.
    pub fn new(url: Option<&str>) -> Result<Self, redis::RedisError> {
        let Some(url) = url else {
            return Ok(Cache::default());
        };
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let conn = client.get_connection_manager_lazy(config)?;
        Ok(Cache {
            inner: Some(Arc::new(Inner {
                conn,
                started: Instant::now(),
                skip_until_ms: AtomicI64::new(0),
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn key(room_name: &str) -> String {
        format!("{KEY_PREFIX}room:{room_name}")
    }

    pub async fn get_room(&self, room_name: &str) -> Option<CachedRoom> {
        let text: Option<String> = self
            .run("get room", |mut c| async move {
                c.get(Self::key(room_name)).await
            })
            .await
            .flatten();
        text.and_then(|t| serde_json::from_str(&t).ok())
    }

    pub async fn put_room(&self, cached: &CachedRoom) {
        let Ok(text) = serde_json::to_string(cached) else {
            return;
        };
        let key = Self::key(&cached.room.room_name);
        self.run("put room", |mut c| async move {
            c.set_ex::<_, _, ()>(key, text, ROOM_TTL_SECS).await
        })
        .await;
    }

    /// Called after every commit that touches the room.
    pub async fn forget_room(&self, room_name: &str) {
        self.run("forget room", |mut c| async move {
            c.del::<_, ()>(Self::key(room_name)).await
        })
        .await;
    }

    /// Whether this webhook event id was processed (only what Redis remembers; the database
    /// has the final word inside the event's transaction).
    pub async fn webhook_seen(&self, event_id: &str) -> bool {
        let key = format!("{KEY_PREFIX}webhook:{event_id}");
        self.run("webhook seen", |mut c| async move {
            c.exists::<_, bool>(key).await
        })
        .await
        .unwrap_or(false)
    }

    /// Called only after the event's effect committed.
    pub async fn remember_webhook(&self, event_id: &str) {
        let key = format!("{KEY_PREFIX}webhook:{event_id}");
        self.run("remember webhook", |mut c| async move {
            c.set_ex::<_, _, ()>(key, 1, WEBHOOK_TTL_SECS).await
        })
        .await;
    }

    /// Counts a request in the current one-minute window of `bucket` for `uid`.
    /// Returns the count so far and the seconds left in the window.
    pub async fn count_in_window(&self, bucket: &str, uid: &str) -> Option<(u64, u64)> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let window = now / 60;
        let key = format!("{KEY_PREFIX}rl:{bucket}:{uid}:{window}");
        let count: u64 = self
            .run("rate limit", |mut c| async move {
                let (count,): (u64,) = redis::pipe()
                    .atomic()
                    .incr(&key, 1u64)
                    .expire(&key, 61)
                    .ignore()
                    .query_async(&mut c)
                    .await?;
                Ok(count)
            })
            .await?;
        Some((count, 60 - now % 60))
    }

    /// Runs one Redis call with a deadline; None (and a warning) when Redis is unset or down.
    async fn run<T, F, Fut>(&self, what: &str, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let inner = self.inner.as_ref()?;
        let now_ms = inner.started.elapsed().as_millis() as i64;
        if now_ms < inner.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        match tokio::time::timeout(TIMEOUT * 2, call(inner.conn.clone())).await {
            Ok(Ok(value)) => Some(value),
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(what, error, "redis unavailable; continuing without it");
                inner
                    .skip_until_ms
                    .store(now_ms + BACKOFF.as_millis() as i64, Ordering::Relaxed);
                None
            }
        }
    }
}
