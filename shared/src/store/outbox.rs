//! The business-event outbox: events written with the change that caused them, their
//! delivery state per endpoint and room (a stream with a cursor, a lease and a backoff), every
//! attempt, and the pull feed's positions.

use chrono::NaiveDateTime;
use serde::Serialize;

use super::*;
use crate::events::{self, NewEvent};
use crate::model::{AttemptOutcome, EventType};

/// Which endpoints new events are owed to: each endpoint's key and type filter, fixed for an
/// event when it is written.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    endpoints: Vec<(String, Option<Vec<EventType>>)>,
    /// How long after its commit an event waits for its first delivery before the sweep
    /// takes it over.
    grace: Duration,
}

impl Outbox {
    pub fn new(endpoints: &[EventEndpoint], grace: Duration) -> Self {
        Outbox {
            endpoints: endpoints
                .iter()
                .map(|e| (e.key.clone(), e.types.clone()))
                .collect(),
            grace,
        }
    }

    /// The keys of the endpoints that want `event_type`, comma-separated, and how many.
    fn owed_to(&self, event_type: EventType) -> (String, i16) {
        let keys: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|(_, types)| types.as_ref().is_none_or(|t| t.contains(&event_type)))
            .map(|(key, _)| key.as_str())
            .collect();
        (
            keys.join(","),
            i16::try_from(keys.len()).unwrap_or(i16::MAX),
        )
    }
}

/// Writes a change's events in one statement (nothing when there are none), numbered from
/// `first_seq` in the order given.
pub(super) async fn write_events(
    tx: &mut Tx<'_>,
    room: &Room,
    first_seq: i64,
    events: &[NewEvent],
    outbox: &Outbox,
    now: Now,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    tx.tally.note(events, room, now);
    let due = now.at + chrono::Duration::milliseconds(outbox.grace.as_millis() as i64);
    let mut query = QueryBuilder::<Db>::new(
        "INSERT INTO call_event (event_id, room_name, seq, type, occurred_at, payload, \
         endpoints, owed, due_at, created_at) ",
    );
    query.push_values(events.iter().enumerate(), |mut row, (i, event)| {
        let seq = first_seq + i as i64;
        let id = events::new_event_id(room, seq);
        let (endpoints, owed) = outbox.owed_to(event.event_type);
        let payload = events::envelope(&id, event, &room.room_name, seq);
        row.push_bind(id)
            .push_bind(room.room_name.clone())
            .push_bind(seq)
            .push_bind(event.event_type.as_str())
            .push_bind(event.occurred_at)
            .push_bind(payload)
            .push_bind(endpoints)
            .push_bind(owed)
            .push_bind((owed > 0).then_some(due))
            .push_bind(now.at);
    });
    query.build().execute(&mut **tx).await?;
    Ok(())
}

/// An event still owed to someone, as a deliverer reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PendingEvent {
    pub id: i64,
    pub event_id: String,
    pub seq: i64,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub endpoints: String,
    pub payload: String,
    /// When it was committed (the delivery lag runs from here); None for a redelivery.
    pub created_at: Option<NaiveDateTime>,
}

impl PendingEvent {
    pub fn is_owed_to(&self, endpoint: &str) -> bool {
        self.endpoints.split(',').any(|key| key == endpoint)
    }
}

/// Whether a deliverer got a stream's lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Claimed(Stream),
    /// Leased by another deliverer or waiting for a retry (`until` that instant), or the
    /// endpoint is paused for inline attempts (`until` None).
    Refused {
        until: Option<NaiveDateTime>,
    },
}

/// A stream's state when its lease was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub delivered_seq: i64,
    /// Failed attempts of the head event (the first one not finished).
    pub attempts: i32,
    pub failing_since: Option<NaiveDateTime>,
}

/// What a deliverer leaves a stream with when it gives its lease back.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamUpdate {
    pub delivered_seq: i64,
    pub attempts: i32,
    pub failing_since: Option<NaiveDateTime>,
    pub next_attempt_at: NaiveDateTime,
}

/// One attempt, as it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub event_id: String,
    pub endpoint: String,
    pub url: String,
    pub attempt: i32,
    pub outcome: AttemptOutcome,
    pub http_status: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub inline: bool,
    pub at: NaiveDateTime,
}

/// An event as stored, for the feed and the details endpoint.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: i64,
    pub event_id: String,
    pub room_name: String,
    pub seq: i64,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub payload: String,
    pub endpoints: String,
    pub owed: i64,
    pub feed_batch: Option<i64>,
}

/// An attempt as recorded, for `GET /api/events/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventAttempt {
    pub endpoint: String,
    pub url: String,
    pub attempt: i64,
    #[sqlx(try_from = "String")]
    pub outcome: AttemptOutcome,
    pub http_status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// 1 for a first attempt made inside the API request that caused the event.
    #[sqlx(rename = "inline_attempt")]
    #[serde(rename = "inline", serialize_with = "as_bool")]
    #[schema(value_type = bool)]
    pub inline: i16,
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: NaiveDateTime,
}

/// An attempt with the id of the event it was for.
#[derive(sqlx::FromRow)]
struct AttemptOfEvent {
    event_id: String,
    #[sqlx(flatten)]
    attempt: EventAttempt,
}

/// An event still owed to some endpoint: where it sits in its room's order, and to whom.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OwedEvent {
    pub room_name: String,
    pub seq: i32,
    pub endpoints: String,
    /// When it was committed (its age in the backlog metric).
    pub created_at: NaiveDateTime,
}

/// One endpoint's delivery of one room's events: how far it got and whether its head event
/// is failing.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StreamState {
    pub endpoint: String,
    pub room_name: String,
    pub delivered_seq: i32,
    pub attempts: i32,
    pub failing_since: Option<NaiveDateTime>,
}

fn as_bool<S: serde::Serializer>(flag: &i16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(*flag != 0)
}

/// A position in the pull feed: the batch that published an event, then its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedCursor {
    pub batch: i64,
    pub id: i64,
}

impl FeedCursor {
    pub fn encode(self) -> String {
        format!("{}.{}", self.batch, self.id)
    }

    pub fn parse(text: &str) -> Option<FeedCursor> {
        let (batch, id) = text.split_once('.')?;
        let cursor = FeedCursor {
            batch: batch.parse().ok()?,
            id: id.parse().ok()?,
        };
        (cursor.batch >= 0 && cursor.id >= 0).then_some(cursor)
    }
}

/// Events one publication makes visible at most (a writer publishes its own handful; the
/// sweep drains any backlog a batch per pass).
pub const PUBLISH_BATCH: i64 = 1000;

const EVENT_COLUMNS: &str =
    "id, event_id, room_name, seq, type, payload, endpoints, owed, feed_batch";

impl StoredEvent {
    /// The event as a deliverer sends it.
    pub fn pending(&self) -> PendingEvent {
        PendingEvent {
            id: self.id,
            event_id: self.event_id.clone(),
            seq: self.seq,
            event_type: self.event_type.clone(),
            endpoints: self.endpoints.clone(),
            payload: self.payload.clone(),
            created_at: None,
        }
    }
}

impl Store {
    /// Takes the delivery lease of one room's events to one endpoint, creating the stream on
    /// first use. Refused while another deliverer holds it, while its head event waits for a
    /// retry, or (`pause_after`) while the endpoint has failed that many times in a row.
    pub async fn claim_stream(
        &self,
        endpoint: &str,
        room_name: &str,
        token: &str,
        lease_until: NaiveDateTime,
        now: Now,
        pause_after: Option<u32>,
    ) -> Result<Claim, ApiError> {
        let failures = pause_after.map_or(i64::MAX, i64::from);
        let stream = self
            .with_conn(async |conn: &mut DbConnection| {
                let claimed = sqlx::query(
                    "UPDATE event_stream SET lease_token = ?, lease_until = ? \
                     WHERE endpoint = ? AND room_name = ? \
                     AND (lease_until IS NULL OR lease_until < ?) AND next_attempt_at <= ? \
                     AND NOT EXISTS (SELECT 1 FROM event_endpoint h \
                     WHERE h.endpoint = ? AND h.failures >= ?)",
                )
                .bind(token)
                .bind(lease_until)
                .bind(endpoint)
                .bind(room_name)
                .bind(now.at)
                .bind(now.at)
                .bind(endpoint)
                .bind(failures)
                .execute(&mut *conn)
                .await?;
                if claimed.rows_affected() == 1 {
                    let row: (i32, i32, Option<NaiveDateTime>) = sqlx::query_as(
                        "SELECT delivered_seq, attempts, failing_since FROM event_stream \
                         WHERE endpoint = ? AND room_name = ?",
                    )
                    .bind(endpoint)
                    .bind(room_name)
                    .fetch_one(&mut *conn)
                    .await?;
                    return Ok(Claim::Claimed(Stream {
                        delivered_seq: row.0.into(),
                        attempts: row.1,
                        failing_since: row.2,
                    }));
                }
                let created = sqlx::query(backend::INSERT_STREAM)
                    .bind(endpoint)
                    .bind(room_name)
                    .bind(now.at)
                    .bind(token)
                    .bind(lease_until)
                    .bind(endpoint)
                    .bind(failures)
                    .execute(&mut *conn)
                    .await?;
                if created.rows_affected() == 1 {
                    return Ok(Claim::Claimed(Stream {
                        delivered_seq: 0,
                        attempts: 0,
                        failing_since: None,
                    }));
                }
                let busy: Option<(NaiveDateTime, Option<NaiveDateTime>)> = sqlx::query_as(
                    "SELECT next_attempt_at, lease_until FROM event_stream \
                     WHERE endpoint = ? AND room_name = ?",
                )
                .bind(endpoint)
                .bind(room_name)
                .fetch_optional(&mut *conn)
                .await?;
                let until = busy
                    .map(|(next, lease)| lease.map_or(next, |lease| lease.max(next)))
                    .filter(|until| *until > now.at);
                Ok::<_, sqlx::Error>(Claim::Refused { until })
            })
            .await?;
        Ok(stream)
    }

    /// The room's events after `after_seq` that someone is still owed, in order.
    pub async fn pending_events(
        &self,
        room_name: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<PendingEvent>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT id, event_id, seq, type, endpoints, payload, created_at FROM call_event \
                     WHERE room_name = ? AND seq > ? AND due_at IS NOT NULL ORDER BY seq LIMIT ?",
                )
                .bind(room_name)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows)
    }

    /// Gives a stream's lease back with its new state. False when the lease had been lost
    /// (expired and taken by another deliverer), in which case nothing is changed.
    pub async fn release_stream(
        &self,
        endpoint: &str,
        room_name: &str,
        token: &str,
        update: &StreamUpdate,
    ) -> Result<bool, ApiError> {
        let done = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query(
                    "UPDATE event_stream SET delivered_seq = ?, attempts = ?, failing_since = ?, \
                     next_attempt_at = ?, lease_token = NULL, lease_until = NULL \
                     WHERE endpoint = ? AND room_name = ? AND lease_token = ?",
                )
                .bind(update.delivered_seq)
                .bind(update.attempts)
                .bind(update.failing_since)
                .bind(update.next_attempt_at)
                .bind(endpoint)
                .bind(room_name)
                .bind(token)
                .execute(conn)
                .await
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One endpoint finished these events (delivered or given up): one fewer owed each, and
    /// those nobody is owed any more leave the sweep's schedule.
    pub async fn events_finished(&self, ids: &[i64]) -> Result<(), ApiError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.with_conn(async |conn: &mut DbConnection| {
            // due_at is assigned first: MySQL evaluates assignments left to right.
            let mut query = QueryBuilder::<Db>::new(
                "UPDATE call_event SET due_at = CASE WHEN owed <= 1 THEN NULL ELSE due_at END, \
                 owed = owed - 1 WHERE owed > 0 AND id IN (",
            );
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            query.push(")");
            query.build().execute(conn).await
        })
        .await?;
        Ok(())
    }

    /// When the sweep should next look at the room's events still owed.
    pub async fn reschedule_events(
        &self,
        room_name: &str,
        at: NaiveDateTime,
    ) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| {
            sqlx::query(
                "UPDATE call_event SET due_at = ? WHERE room_name = ? AND due_at IS NOT NULL",
            )
            .bind(at)
            .bind(room_name)
            .execute(conn)
            .await
        })
        .await?;
        Ok(())
    }

    pub async fn record_attempts(&self, attempts: &[AttemptRecord]) -> Result<(), ApiError> {
        if attempts.is_empty() {
            return Ok(());
        }
        self.with_conn(async |conn: &mut DbConnection| {
            let mut query = QueryBuilder::<Db>::new(
                "INSERT INTO event_attempt (event_id, endpoint, url, attempt, outcome, \
                 http_status, latency_ms, error, inline_attempt, attempted_at) ",
            );
            query.push_values(attempts, |mut row, a| {
                row.push_bind(a.event_id.clone())
                    .push_bind(a.endpoint.clone())
                    .push_bind(a.url.clone())
                    .push_bind(a.attempt)
                    .push_bind(a.outcome.as_str())
                    .push_bind(a.http_status)
                    .push_bind(a.latency_ms)
                    .push_bind(a.error.clone())
                    .push_bind(i16::from(a.inline))
                    .push_bind(a.at);
            });
            query.build().execute(conn).await
        })
        .await?;
        Ok(())
    }

    /// One more failure in a row for the endpoint (`failed`), or its run of failures is over.
    pub async fn endpoint_health(
        &self,
        endpoint: &str,
        failed: bool,
        now: Now,
    ) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| {
            if failed {
                sqlx::query(backend::ENDPOINT_FAILED)
                    .bind(endpoint)
                    .bind(now.at)
                    .bind(now.at)
                    .execute(conn)
                    .await
            } else {
                sqlx::query(
                    "UPDATE event_endpoint SET failures = 0, updated_at = ? \
                     WHERE endpoint = ? AND failures > 0",
                )
                .bind(now.at)
                .bind(endpoint)
                .execute(conn)
                .await
            }
        })
        .await?;
        Ok(())
    }

    /// Failures in a row of each endpoint that has any.
    pub async fn endpoint_failures(&self) -> Result<Vec<(String, i64)>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as("SELECT endpoint, failures FROM event_endpoint WHERE failures > 0")
                    .fetch_all(conn)
                    .await
            })
            .await?;
        Ok(rows)
    }

    /// Rooms with events due for the sweep, the longest waiting first.
    pub async fn rooms_with_due_events(
        &self,
        now: Now,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        let rows: Vec<(String, NaiveDateTime)> = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT room_name, MIN(due_at) AS due FROM call_event WHERE due_at <= ? \
                     GROUP BY room_name ORDER BY due LIMIT ?",
                )
                .bind(now.at)
                .bind(limit)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows.into_iter().map(|(room, _)| room).collect())
    }

    /// Makes committed events not yet in the feed visible there (the oldest `PUBLISH_BATCH`),
    /// as one new batch, and returns how many. Called on the write side, after the commit of
    /// every change that wrote events, and by each event sweep for whatever a writer left
    /// (one that died between its commit and this); never by a feed read, which only reads.
    ///
    /// The unpublished ids come from a plain read, which sees committed rows only and neither
    /// takes nor waits for a lock: an event still being written is not seen and goes into a
    /// later batch. The batch counter is then locked for a short transaction that updates
    /// those rows by primary key only (no index range, so it never waits for an in-flight
    /// insert), so batches are published in their number's order: a reader who has seen
    /// batch n will never later find an event in a batch at or below n.
    pub async fn publish_feed(&self) -> Result<u64, ApiError> {
        retrying(|| {
            self.with_conn(async |conn: &mut DbConnection| {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM call_event WHERE feed_batch IS NULL ORDER BY id LIMIT ?",
                )
                .bind(PUBLISH_BATCH)
                .fetch_all(&mut *conn)
                .await?;
                if ids.is_empty() {
                    return Ok(0);
                }
                in_transaction_with(conn, backend::BEGIN_READ_COMMITTED, async |tx| {
                    let batch: i64 = sqlx::query_scalar(concat!(
                        "SELECT batch FROM event_feed_head WHERE id = 1",
                        for_update!()
                    ))
                    .fetch_one(&mut **tx)
                    .await?;
                    let mut publish =
                        QueryBuilder::<Db>::new("UPDATE call_event SET feed_batch = ");
                    publish
                        .push_bind(batch + 1)
                        .push(" WHERE feed_batch IS NULL AND id IN (");
                    let mut list = publish.separated(", ");
                    for id in &ids {
                        list.push_bind(*id);
                    }
                    publish.push(")");
                    let published = publish.build().execute(&mut **tx).await?.rows_affected();
                    if published > 0 {
                        sqlx::query("UPDATE event_feed_head SET batch = ? WHERE id = 1")
                            .bind(batch + 1)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Ok(published)
                })
                .await
            })
        })
        .await
    }

    /// The feed after `after`, in publication order.
    pub async fn feed_page(
        &self,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                let mut query = QueryBuilder::<Db>::new("SELECT ");
                query
                    .push(EVENT_COLUMNS)
                    .push(" FROM call_event WHERE (feed_batch = ")
                    .push_bind(after.batch)
                    .push(" AND id > ")
                    .push_bind(after.id)
                    .push(") OR feed_batch > ")
                    .push_bind(after.batch)
                    .push(" ORDER BY feed_batch, id LIMIT ")
                    .push_bind(limit);
                query.build_query_as().fetch_all(conn).await
            })
            .await?;
        Ok(rows)
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>, ApiError> {
        let row = self
            .with_conn(async |conn: &mut DbConnection| {
                let mut query = QueryBuilder::<Db>::new("SELECT ");
                query
                    .push(EVENT_COLUMNS)
                    .push(" FROM call_event WHERE event_id = ")
                    .push_bind(event_id.to_owned());
                query.build_query_as().fetch_optional(conn).await
            })
            .await?;
        Ok(row)
    }

    pub async fn attempts_of(&self, event_id: &str) -> Result<Vec<EventAttempt>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT endpoint, url, attempt, outcome, http_status, latency_ms, error, \
                     inline_attempt, attempted_at FROM event_attempt WHERE event_id = ? \
                     ORDER BY id",
                )
                .bind(event_id)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows)
    }

    /// The delivered cursor of each endpoint's stream for a room.
    pub async fn stream_cursors(&self, room_name: &str) -> Result<Vec<(String, i64)>, ApiError> {
        let rows: Vec<(String, i32)> = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT endpoint, delivered_seq FROM event_stream WHERE room_name = ?",
                )
                .bind(room_name)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(endpoint, seq)| (endpoint, seq.into()))
            .collect())
    }

    /// A redelivery of a pending event: its streams' backoff is over now.
    pub async fn retry_now(&self, room_name: &str, now: Now) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| {
            sqlx::query(
                "UPDATE event_stream SET next_attempt_at = ? \
                 WHERE room_name = ? AND next_attempt_at > ?",
            )
            .bind(now.at)
            .bind(room_name)
            .bind(now.at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE call_event SET due_at = ? WHERE room_name = ? AND due_at IS NOT NULL",
            )
            .bind(now.at)
            .bind(room_name)
            .execute(&mut *conn)
            .await
        })
        .await?;
        Ok(())
    }

    /// One room's events in seq order (at most `limit`: the first ones), by the room's
    /// `(room_name, seq)` key.
    pub async fn room_events(
        &self,
        room_name: &str,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                let mut query = QueryBuilder::<Db>::new("SELECT ");
                query
                    .push(EVENT_COLUMNS)
                    .push(" FROM call_event WHERE room_name = ")
                    .push_bind(room_name.to_owned())
                    .push(" ORDER BY seq LIMIT ")
                    .push_bind(limit);
                query.build_query_as().fetch_all(conn).await
            })
            .await?;
        Ok(rows)
    }

    /// Every attempt of these events, each with its event's id, in the order they were made
    /// (by the attempts' `(event_id, id)` key).
    pub async fn attempts_of_events(
        &self,
        event_ids: &[String],
    ) -> Result<Vec<(String, EventAttempt)>, ApiError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<AttemptOfEvent> = self
            .with_conn(async |conn: &mut DbConnection| {
                let mut query = QueryBuilder::<Db>::new(
                    "SELECT event_id, endpoint, url, attempt, outcome, http_status, latency_ms, \
                     error, inline_attempt, attempted_at FROM event_attempt WHERE event_id IN (",
                );
                let mut list = query.separated(", ");
                for id in event_ids {
                    list.push_bind(id.clone());
                }
                query.push(") ORDER BY id");
                query.build_query_as().fetch_all(conn).await
            })
            .await?;
        Ok(rows.into_iter().map(|r| (r.event_id, r.attempt)).collect())
    }

    /// Events some endpoint is still owed (oldest due first, at most `limit`), by
    /// `ix_event_due`: the delivery backlog's raw material.
    pub async fn owed_events(&self, limit: i64) -> Result<Vec<OwedEvent>, ApiError> {
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT room_name, seq, endpoints, created_at FROM call_event WHERE due_at IS NOT NULL \
                     ORDER BY due_at LIMIT ?",
                )
                .bind(limit)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows)
    }

    /// The delivery streams of these endpoints for these rooms, by the streams' primary key
    /// `(endpoint, room_name)`.
    pub async fn streams_of(
        &self,
        endpoints: &[String],
        rooms: &[String],
    ) -> Result<Vec<StreamState>, ApiError> {
        if endpoints.is_empty() || rooms.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .with_conn(async |conn: &mut DbConnection| {
                let mut query = QueryBuilder::<Db>::new(
                    "SELECT endpoint, room_name, delivered_seq, attempts, failing_since \
                     FROM event_stream WHERE endpoint IN (",
                );
                let mut list = query.separated(", ");
                for key in endpoints {
                    list.push_bind(key.clone());
                }
                query.push(") AND room_name IN (");
                let mut list = query.separated(", ");
                for room in rooms {
                    list.push_bind(room.clone());
                }
                query.push(")");
                query.build_query_as().fetch_all(conn).await
            })
            .await?;
        Ok(rows)
    }

    /// Deletes up to `limit` events nobody is owed any more, written before `before`, with
    /// their attempts, and the delivery streams of the rooms whose last event went: a stream
    /// with no event left has nothing to deliver (every event it had was finished), so it goes
    /// with its events. Returns how many events went.
    pub async fn purge_events(&self, before: Now, limit: i64) -> Result<u64, ApiError> {
        let purged = self
            .with_conn(async |conn: &mut DbConnection| {
                let ids: Vec<(i64, String, String)> = sqlx::query_as(
                    "SELECT id, event_id, room_name FROM call_event WHERE created_at < ? \
                     AND owed = 0 ORDER BY created_at LIMIT ?",
                )
                .bind(before.at)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut attempts =
                    QueryBuilder::<Db>::new("DELETE FROM event_attempt WHERE event_id IN (");
                let mut list = attempts.separated(", ");
                for (_, event_id, _) in &ids {
                    list.push_bind(event_id.clone());
                }
                attempts.push(")");
                attempts.build().execute(&mut *conn).await?;
                let mut events = QueryBuilder::<Db>::new("DELETE FROM call_event WHERE id IN (");
                let mut list = events.separated(", ");
                for (id, _, _) in &ids {
                    list.push_bind(*id);
                }
                events.push(")");
                let purged = events.build().execute(&mut *conn).await?.rows_affected();
                let rooms: std::collections::BTreeSet<&str> =
                    ids.iter().map(|(_, _, room)| room.as_str()).collect();
                // By ix_stream_room, each room's remaining events by uq_event_room_seq.
                let mut streams =
                    QueryBuilder::<Db>::new("DELETE FROM event_stream WHERE room_name IN (");
                let mut list = streams.separated(", ");
                for room in rooms {
                    list.push_bind(room.to_owned());
                }
                streams.push(
                    ") AND NOT EXISTS (SELECT 1 FROM call_event e \
                     WHERE e.room_name = event_stream.room_name)",
                );
                streams.build().execute(&mut *conn).await?;
                Ok::<_, sqlx::Error>(purged)
            })
            .await?;
        Ok(purged)
    }
}
