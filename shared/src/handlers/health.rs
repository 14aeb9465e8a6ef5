use lambda_http::{Body, Error, Request, Response};
use serde_json::json;

use crate::app::App;
use crate::http::{bare, respond};

/// GET /health: no auth; says whether the database answers.
pub async fn health(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("health", &req, async {
        Ok(match app.store.ping().await {
            Ok(()) => bare(200, json!({ "status": "ok", "database": "ok" })),
            Err(err) => {
                tracing::warn!(error = %err, "database unreachable");
                bare(
                    503,
                    json!({ "status": "degraded", "database": "unreachable" }),
                )
            }
        })
    })
    .await
}
