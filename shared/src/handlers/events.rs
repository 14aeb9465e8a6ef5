//! The business events for the app backend (service tokens only): the pull feed, one event
//! with its deliveries and attempts, and a redelivery on request.

use std::collections::HashMap;

use lambda_http::{Body, Error, Request, Response};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::app::App;
use crate::delivery::DeliveryReport;
use crate::error::ApiError;
use crate::handlers::routes;
use crate::http::{msg, note, ok, path_param, query_param, respond};
use crate::idempotency::keyed;
use crate::model::{AttemptOutcome, DeliveryState, Now};
use crate::store::{EventAttempt, FeedCursor, StoredEvent};
use crate::validate;

/// Events per feed page unless `limit` says otherwise.
const FEED_PAGE_DEFAULT: i64 = 50;
/// The most events one room's story shows (a call adds one per participant change and room
/// status: a 50-person call that rings everyone twice stays far below it).
const ROOM_EVENTS_MAX: i64 = 1000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Feed {
    #[schema(value_type = Vec<crate::openapi::Event>)]
    events: Vec<Box<RawValue>>,
    /// Where the next read starts: the last event of this page, or `after` when it was empty.
    next_cursor: String,
    /// Whether this page was full (more may be waiting already).
    has_more: bool,
}

/// Where the event stands with one endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Delivery {
    endpoint: String,
    url: String,
    state: DeliveryState,
    attempts: usize,
}

/// The event, where it stands with each endpoint, and every attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EventDetails {
    #[schema(value_type = crate::openapi::Event)]
    event: Box<RawValue>,
    deliveries: Vec<Delivery>,
    attempts: Vec<EventAttempt>,
    /// Only in the answer to a redelivery: what it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    redelivery: Option<DeliveryReport>,
}

/// One room's events in seq order, each with its deliveries and attempts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RoomEvents {
    room_name: String,
    events: Vec<EventDetails>,
    /// Whether the room has more events than this answer carries (the first 1,000).
    truncated: bool,
}

/// The events feed
///
/// Every event exactly once, in publication order: page with `after` = the previous page's
/// `next_cursor`. Service tokens only.
#[utoipa::path(
    get, path = "/api/events", tag = "events", operation_id = "listEvents",
    params(
        ("after" = Option<String>, Query,
            description = "A previous page's next_cursor; absent: from the oldest kept event."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100,
            description = "Events per page, 1-100 (default 50)."),
    ),
    responses(
        (status = 200, description = "获取事件列表成功 (Events listed)", body = Feed,
            links(("getEvent" = (operation_id = "getEvent",
                parameters(("id" = "$response.body#/data/events/0/id")))))),
    )
)]
pub async fn list_events(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("list-events", &req, async {
        app.caller(&req)?.must_be_service()?;
        let after = match query_param(&req, "after") {
            None => FeedCursor::default(),
            Some(text) => FeedCursor::parse(&text)
                .ok_or_else(|| ApiError::invalid("after is not a cursor this service gave out"))?,
        };
        let limit = match query_param(&req, "limit") {
            None => FEED_PAGE_DEFAULT,
            Some(text) => validate::in_range(
                "limit",
                validate::integer("limit", &text)?,
                1,
                validate::LIMIT_MAX,
            )?,
        };
        // A read only reads: writers publish their events after their commit, and the event
        // sweep publishes what a writer left (see `Store::publish_feed`).
        let page = app.store.feed_page(after, limit).await?;
        let next_cursor = page
            .last()
            .and_then(|e| e.feed_batch.map(|batch| FeedCursor { batch, id: e.id }))
            .unwrap_or(after)
            .encode();
        let has_more = page.len() as i64 == limit;
        let events = page
            .into_iter()
            .map(|e| raw(e.payload))
            .collect::<Result<Vec<_>, _>>()?;
        ok(
            msg::EVENTS_LISTED,
            Feed {
                events,
                next_cursor,
                has_more,
            },
        )
    })
    .await
}

/// One event
///
/// The event, where it stands with each endpoint, and every attempt. Service tokens only.
#[utoipa::path(
    get, path = "/api/events/{id}", tag = "events", operation_id = "getEvent",
    params(("id" = String, Path, max_length = 40, pattern = r"^[A-Za-z0-9_]+$",
        description = "The event's id (evt_…).")),
    responses(
        (status = 200, description = "获取事件详情成功 (Event fetched)", body = EventDetails,
            links(("redeliverEvent" = (operation_id = "redeliverEvent",
                parameters(("id" = "$request.path.id")))))),
        (status = 404, description = "event_not_found: no such event, or purged"),
    )
)]
pub async fn get_event(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("get-event", &req, async {
        app.caller(&req)?.must_be_service()?;
        let event = stored_event(app, &req).await?;
        ok(msg::EVENT_FETCHED, details(app, event, None).await?)
    })
    .await
}

/// Redeliver an event
///
/// Sends the event again now (in order where it is still pending), and answers with its
/// details after the attempt. Service tokens only.
#[utoipa::path(
    post, path = "/api/events/{id}/redeliver", tag = "events", operation_id = "redeliverEvent",
    params(("id" = String, Path, max_length = 40, pattern = r"^[A-Za-z0-9_]+$",
        description = "The event's id (evt_…).")),
    responses(
        (status = 200, description = "事件已重新投递 (Event redelivered)", body = EventDetails),
        (status = 404, description = "event_not_found: no such event, or purged"),
    )
)]
pub async fn redeliver_event(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("redeliver-event", &req, async {
        let caller = app.caller(&req)?;
        caller.must_be_service()?;
        // A redelivery is an HTTP call, not a transaction: with a key, its report is stored
        // once it is known, and a retry hears it instead of sending the event once more.
        keyed(app, &req, routes::EVENT_REDELIVER, &caller, async |_| {
            let event = stored_event(app, &req).await?;
            let report = app.delivery.redeliver(&app.store, &event).await?;
            let event = app.store.event(&event.event_id).await?.unwrap_or(event);
            ok(
                msg::EVENT_REDELIVERED,
                details(app, event, Some(report)).await?,
            )
        })
        .await
    })
    .await
}

/// A room's events
///
/// Every event of one room in seq order (the first 1,000), each with where it stands with
/// each endpoint and every attempt: one call's story for an operator. Service tokens only.
#[utoipa::path(
    get, path = "/api/rooms/{room_name}/events", tag = "events", operation_id = "listRoomEvents",
    params(("room_name" = String, Path, description = "The room.")),
    responses(
        (status = 200, description = "获取房间事件成功 (Room events listed)", body = RoomEvents),
        (status = 404, description = "room_not_found: no such room"),
    )
)]
pub async fn room_events(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("room-events", &req, async {
        let caller = app.caller(&req)?;
        caller.must_be_service()?;
        let room_name = path_param(&req, routes::ROOM_EVENTS, "room_name")?;
        note(&room_name, caller.uid());
        app.store
            .load(&room_name, Now::current())
            .await?
            .ok_or(ApiError::RoomNotFound)?;
        let events = app.store.room_events(&room_name, ROOM_EVENTS_MAX).await?;
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let mut attempts: HashMap<String, Vec<EventAttempt>> = HashMap::new();
        for (event_id, attempt) in app.store.attempts_of_events(&ids).await? {
            attempts.entry(event_id).or_default().push(attempt);
        }
        let cursors = app.store.stream_cursors(&room_name).await?;
        let truncated = events.len() as i64 == ROOM_EVENTS_MAX;
        let events = events
            .into_iter()
            .map(|event| {
                let mine = attempts.remove(&event.event_id).unwrap_or_default();
                describe(app, event, mine, &cursors, None)
            })
            .collect::<Result<Vec<_>, _>>()?;
        ok(
            msg::ROOM_EVENTS_LISTED,
            RoomEvents {
                room_name,
                events,
                truncated,
            },
        )
    })
    .await
}

async fn stored_event(app: &App, req: &Request) -> Result<StoredEvent, ApiError> {
    let id = path_param(req, route_of(req), "id")?;
    if id.is_empty() || id.len() > 40 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ApiError::invalid("id must be an event id (evt_…)"));
    }
    app.store.event(&id).await?.ok_or(ApiError::EventNotFound)
}

fn route_of(req: &Request) -> &'static str {
    if req.uri().path().ends_with("/redeliver") {
        routes::EVENT_REDELIVER
    } else {
        routes::EVENT
    }
}

async fn details(
    app: &App,
    event: StoredEvent,
    redelivery: Option<DeliveryReport>,
) -> Result<EventDetails, ApiError> {
    let attempts = app.store.attempts_of(&event.event_id).await?;
    let cursors = app.store.stream_cursors(&event.room_name).await?;
    describe(app, event, attempts, &cursors, redelivery)
}

/// The event with where it stands with each endpoint it is owed to, from its attempts and the
/// room's delivery cursors.
fn describe(
    app: &App,
    event: StoredEvent,
    attempts: Vec<EventAttempt>,
    cursors: &[(String, i64)],
    redelivery: Option<DeliveryReport>,
) -> Result<EventDetails, ApiError> {
    let owed_to: Vec<&str> = event
        .endpoints
        .split(',')
        .filter(|k| !k.is_empty())
        .collect();
    let deliveries = owed_to
        .iter()
        .map(|key| {
            let mine: Vec<&EventAttempt> = attempts.iter().filter(|a| a.endpoint == *key).collect();
            let cursor = cursors
                .iter()
                .find(|(k, _)| k == key)
                .map_or(0, |(_, seq)| *seq);
            let state = if cursor < event.seq && event.owed > 0 {
                DeliveryState::Pending
            } else if mine.iter().any(|a| a.outcome == AttemptOutcome::Delivered) {
                DeliveryState::Delivered
            } else {
                DeliveryState::GaveUp
            };
            let url = app
                .delivery
                .endpoints()
                .iter()
                .find(|e| e.key == *key)
                .map(|e| e.url.clone())
                .or_else(|| mine.last().map(|a| a.url.clone()))
                .unwrap_or_default();
            Delivery {
                endpoint: (*key).to_owned(),
                url,
                state,
                attempts: mine.len(),
            }
        })
        .collect();
    Ok(EventDetails {
        event: raw(event.payload)?,
        deliveries,
        attempts,
        redelivery,
    })
}

fn raw(payload: String) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(payload).map_err(|e| ApiError::Internal(format!("stored event: {e}")))
}
