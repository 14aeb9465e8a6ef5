//! A uid's own view: the call ringing for it now, and its call history.

use lambda_http::{Body, Error, Request, Response};
use serde::Serialize;

use crate::app::App;
use crate::handlers::routes;
use crate::http::{msg, note, ok, path_param, query_param, respond};
use crate::model::Now;
use crate::store::{HistoryEntry, Ringing};
use crate::validate;

/// One page of a uid's calls; `next_cursor` continues it (null: the last page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct History {
    calls: Vec<HistoryEntry>,
    next_cursor: Option<String>,
}

/// A uid's ringing calls
///
/// The live invites of a uid, newest first: what an app asks on start when a push was lost.
/// A user token reads only its own uid.
#[utoipa::path(
    get, path = "/api/users/{uid}/ringing", tag = "users", operation_id = "userRinging",
    params(("uid" = String, Path, description = "The uid, percent-encoded.")),
    responses(
        (status = 200, description = "获取来电成功 (Ringing calls listed)", body = Vec<Ringing>),
    )
)]
pub async fn user_ringing(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("user-ringing", &req, async {
        let caller = app.caller(&req)?;
        let uid = path_param(&req, routes::USER_RINGING, "uid")?;
        note("", Some(&uid));
        caller.may_act_as(&uid)?;
        let ringing = app.store.ringing(&uid, Now::current()).await?;
        ok(msg::RINGING_LISTED, ringing)
    })
    .await
}

/// A uid's call history
///
/// Newest first, by keyset: pages stay stable while calls are added. A user token reads only
/// its own uid.
#[utoipa::path(
    get, path = "/api/users/{uid}/calls", tag = "users", operation_id = "userCalls",
    params(
        ("uid" = String, Path, description = "The uid, percent-encoded."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100,
            description = "Calls per page, 1-100 (default 10)."),
        ("cursor" = Option<String>, Query, description = "A previous page's next_cursor."),
    ),
    responses(
        (status = 200, description = "获取通话记录成功 (Call history listed)", body = History),
    )
)]
pub async fn user_calls(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("user-calls", &req, async {
        let caller = app.caller(&req)?;
        let uid = path_param(&req, routes::USER_CALLS, "uid")?;
        note("", Some(&uid));
        caller.may_act_as(&uid)?;
        let page = validate::page(
            query_param(&req, "limit").as_deref(),
            None,
            query_param(&req, "cursor").as_deref(),
        )?;
        let (calls, next_cursor) = app
            .store
            .history(&uid, page.limit, page.before_id, Now::current())
            .await?;
        ok(msg::CALLS_LISTED, History { calls, next_cursor })
    })
    .await
}
