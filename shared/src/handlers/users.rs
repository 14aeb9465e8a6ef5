//! A uid's own view: the call ringing for it now, and its call history.

use lambda_http::{Body, Error, Request, Response};
use serde::Serialize;

use crate::app::App;
use crate::handlers::routes;
use crate::http::{msg, note, ok, path_param, query_param, respond};
use crate::model::Now;
use crate::store::HistoryEntry;
use crate::validate;

#[derive(Debug, Serialize)]
struct History {
    calls: Vec<HistoryEntry>,
    next_cursor: Option<String>,
}

/// GET /api/users/{uid}/ringing: what an app asks on start when a push was lost.
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

/// GET /api/users/{uid}/calls?limit=&cursor=: newest first, by keyset.
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
