use lambda_http::{Body, Error, Request, Response};
use serde_json::json;

use crate::app::App;
use crate::http::{bare, respond};

/// Health
///
/// No token; says whether the database answers. The seed's bare body, no envelope.
#[utoipa::path(
    get, path = "/health", tag = "service", operation_id = "health",
    responses(
        (status = 200, description = "The service and its database answer.",
            body = crate::openapi::Health, example = json!({"status": "ok", "database": "ok"})),
        (status = 503, description = "The database does not answer.",
            body = crate::openapi::Health,
            example = json!({"status": "degraded", "database": "unreachable"})),
    )
)]
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
