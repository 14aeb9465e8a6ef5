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
/// The generation of a room's cached copy outlives any copy written under it.
const GENERATION_TTL_SECS: i64 = 120;
const WEBHOOK_TTL_SECS: u64 = 24 * 3600;
const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, leave Redis alone for a while rather than pay a timeout per request.
const BACKOFF: Duration = Duration::from_secs(5);
const KEY_PREFIX: &str = "callsvc:";

/// A cache lookup: the room when it is cached, and the generation it was looked up under,
/// which a copy read from the database afterwards must be written back with. No generation
/// when Redis did not answer: then nothing read afterwards may be written back, since a
/// commit that could not forget the room meanwhile would go unnoticed.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub room: Option<CachedRoom>,
    pub generation: Option<Generation>,
}

/// How many times the room was forgotten (recently): a copy read from the database is
/// written back only if no commit forgot the room since its lookup, so a reader that loaded
/// the room just before another instance's commit cannot put the old state back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(i64);

/// SET the copy only while the generation is still the one its reader looked up.
pub const PUT_IF_CURRENT: &str = r"
if (tonumber(redis.call('GET', KEYS[2])) or 0) == tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  return 1
end
return 0";

/// A room with its member uids, so a user's read can be authorised from the cache alone,
/// and its next deadline: past it, the copy says nothing about now and is not used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedRoom {
    pub room: Room,
    pub members: Vec<String>,
    #[serde(default)]
    pub deadline: Option<chrono::NaiveDateTime>,
}

impl CachedRoom {
    /// Whether the copy still shows the room as it is at `now` (no deadline has passed).
    pub fn current_at(&self, now: chrono::NaiveDateTime) -> bool {
        self.deadline.is_none_or(|d| d > now)
    }
}

/// Whether a call skips Redis for a while after this instance saw it fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backoff {
    Honour,
    Ignore,
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

    fn generation_key(room_name: &str) -> String {
        format!("{KEY_PREFIX}room-gen:{room_name}")
    }

    /// The cached room and its generation, in one round trip.
    pub async fn get_room(&self, room_name: &str) -> Lookup {
        let found: Option<(Option<String>, Option<i64>)> = self
            .run("get room", Backoff::Honour, |mut c| async move {
                redis::cmd("MGET")
                    .arg(Self::key(room_name))
                    .arg(Self::generation_key(room_name))
                    .query_async(&mut c)
                    .await
            })
            .await;
        match found {
            Some((text, generation)) => Lookup {
                room: text.and_then(|t| serde_json::from_str(&t).ok()),
                generation: Some(Generation(generation.unwrap_or(0))),
            },
            None => Lookup {
                room: None,
                generation: None,
            },
        }
    }

    /// Caches a copy read from the database after a `get_room` miss, unless a commit forgot
    /// the room since that lookup.
    pub async fn put_room(&self, cached: &CachedRoom, looked_up: Generation) {
        let Ok(text) = serde_json::to_string(cached) else {
            return;
        };
        let name = &cached.room.room_name;
        // EVAL: Redis keeps the compiled script by its digest, so this is one round trip.
        let put = redis::cmd("EVAL")
            .arg(PUT_IF_CURRENT)
            .arg(2)
            .arg(Self::key(name))
            .arg(Self::generation_key(name))
            .arg(text)
            .arg(looked_up.0)
            .arg(ROOM_TTL_SECS)
            .to_owned();
        let put = &put;
        self.run("put room", Backoff::Honour, |mut c| async move {
            put.query_async::<i64>(&mut c).await
        })
        .await;
    }

    /// Called after every commit that touches the room: a new generation first, so a copy
    /// read before the commit is refused, then the copy itself goes. False when Redis could
    /// not be told (down, or skipped after a recent failure): the copy may still be there,
    /// and the caller must make sure it is forgotten later (see `App::after_commit`).
    pub async fn forget_room(&self, room_name: &str) -> bool {
        self.forget(std::slice::from_ref(&room_name), Backoff::Honour)
            .await
    }

    /// Forgets every room in one round trip, whether or not this instance saw Redis fail
    /// lately: for the sweeper's replay of forgets that commits could not make.
    pub async fn forget_rooms(&self, room_names: &[&str]) -> bool {
        self.forget(room_names, Backoff::Ignore).await
    }

    async fn forget(&self, room_names: &[&str], backoff: Backoff) -> bool {
        if self.inner.is_none() || room_names.is_empty() {
            return true;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for room_name in room_names {
            let generation = Self::generation_key(room_name);
            pipe.incr(&generation, 1)
                .ignore()
                .expire(&generation, GENERATION_TTL_SECS)
                .ignore()
                .del(Self::key(room_name))
                .ignore();
        }
        let pipe = &pipe;
        self.run("forget room", backoff, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
        .is_some()
    }

    /// Whether this webhook event id was processed (only what Redis remembers; the database
    /// has the final word inside the event's transaction).
    pub async fn webhook_seen(&self, event_id: &str) -> bool {
        let key = &format!("{KEY_PREFIX}webhook:{event_id}");
        self.run("webhook seen", Backoff::Honour, |mut c| async move {
            c.exists::<_, bool>(key).await
        })
        .await
        .unwrap_or(false)
    }

    /// Called only after the event's effect committed.
    pub async fn remember_webhook(&self, event_id: &str) {
        let key = &format!("{KEY_PREFIX}webhook:{event_id}");
        self.run("remember webhook", Backoff::Honour, |mut c| async move {
            c.set_ex::<_, _, ()>(key, 1, WEBHOOK_TTL_SECS).await
        })
        .await;
    }

    /// Counts a request in the current one-minute window of `bucket` for `uid`.
    /// Returns the count so far and the seconds left in the window.
    pub async fn count_in_window(&self, bucket: &str, uid: &str) -> Option<(u64, u64)> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let window = now / 60;
        let key = &format!("{KEY_PREFIX}rl:{bucket}:{uid}:{window}");
        let count: u64 = self
            .run("rate limit", Backoff::Honour, |mut c| async move {
                let (count,): (u64,) = redis::pipe()
                    .atomic()
                    .incr(key, 1u64)
                    .expire(key, 61)
                    .ignore()
                    .query_async(&mut c)
                    .await?;
                Ok(count)
            })
            .await?;
        Some((count, 60 - now % 60))
    }

    /// Runs one Redis call with a deadline; None (and a warning) when Redis is unset or down.
    /// A connection found dead (Redis restarted, or came back after an outage this instance
    /// slept through) is not an outage: the call is tried once more on a new connection.
    async fn run<T, F, Fut>(&self, what: &str, backoff: Backoff, call: F) -> Option<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let inner = self.inner.as_ref()?;
        let now_ms = inner.started.elapsed().as_millis() as i64;
        if backoff == Backoff::Honour && now_ms < inner.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let mut outcome = tokio::time::timeout(TIMEOUT * 2, call(inner.conn.clone())).await;
        if let Ok(Err(err)) = &outcome
            && (err.is_connection_dropped() || err.is_io_error())
            && !err.is_timeout()
        {
            outcome = tokio::time::timeout(TIMEOUT * 2, call(inner.conn.clone())).await;
        }
        match outcome {
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
