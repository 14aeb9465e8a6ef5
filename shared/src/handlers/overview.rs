//! GET /api/overview: what an operator looks at first. The calls that ended in a recent
//! window, per end_reason, and each event endpoint's delivery backlog. Service tokens only.

use chrono::Duration;
use lambda_http::{Body, Error, Request, Response};
use serde::Serialize;

use crate::app::App;
use crate::http::{msg, ok, query_param, respond};
use crate::model::Now;
use crate::overview::{self, EndedCount, EndpointBacklog};
use crate::validate;

/// The window unless `window_minutes` says otherwise: the last hour.
const WINDOW_MINUTES_DEFAULT: i64 = 60;
/// A day at most: the count is a range on an index, but a console asks about recent calls.
const WINDOW_MINUTES_MAX: i64 = 1440;
/// The owed events read for the backlog, oldest due first; past this the counts say "at
/// least" (`backlog_truncated`).
const OWED_EVENTS_MAX: i64 = 10_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Overview {
    /// The window's start: calls that ended at or after it are counted.
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    since: chrono::NaiveDateTime,
    window_minutes: i64,
    /// Calls that ended (or were cancelled) in the window, per end_reason, most first.
    ended: Vec<EndedCount>,
    /// Every configured endpoint, then any other one still owed events.
    deliveries: Vec<EndpointBacklog>,
    /// Whether more events are owed than were counted (the oldest 10,000 were).
    backlog_truncated: bool,
}

/// The overview
///
/// The calls that ended in the last `window_minutes` (default 60) per end_reason, and where
/// business-event delivery stands with each endpoint (pending events, failing rooms, failures
/// in a row). Service tokens only.
#[utoipa::path(
    get, path = "/api/overview", tag = "events", operation_id = "getOverview",
    params(("window_minutes" = Option<i64>, Query, minimum = 1, maximum = 1440,
        description = "How far back ended calls are counted, in minutes (default 60).")),
    responses(
        (status = 200, description = "获取运行概况成功 (Overview fetched)", body = Overview),
    )
)]
pub async fn call_overview(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("call-overview", &req, async {
        app.caller(&req)?.must_be_service()?;
        let window_minutes = match query_param(&req, "window_minutes") {
            None => WINDOW_MINUTES_DEFAULT,
            Some(text) => validate::in_range(
                "window_minutes",
                validate::integer("window_minutes", &text)?,
                1,
                WINDOW_MINUTES_MAX,
            )?,
        };
        let since = Now::current().at - Duration::minutes(window_minutes);
        let ended = app
            .store
            .ended_since(since)
            .await?
            .into_iter()
            .map(|(end_reason, count)| EndedCount { end_reason, count })
            .collect();
        let owed = app.store.owed_events(OWED_EVENTS_MAX).await?;
        let configured: Vec<(String, String)> = app
            .delivery
            .endpoints()
            .iter()
            .map(|e| (e.key.clone(), e.url.clone()))
            .collect();
        let mut keys: Vec<String> = configured.iter().map(|(k, _)| k.clone()).collect();
        for event in &owed {
            for key in event.endpoints.split(',').filter(|k| !k.is_empty()) {
                if !keys.iter().any(|k| k == key) {
                    keys.push(key.to_owned());
                }
            }
        }
        let streams = app
            .store
            .streams_of(&keys, &overview::owed_rooms(&owed))
            .await?;
        let failures = app.store.endpoint_failures().await?;
        ok(
            msg::OVERVIEW_FETCHED,
            Overview {
                since,
                window_minutes,
                ended,
                deliveries: overview::backlog(&configured, &owed, &streams, &failures),
                backlog_truncated: owed.len() as i64 == OWED_EVENTS_MAX,
            },
        )
    })
    .await
}
