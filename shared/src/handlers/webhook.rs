use lambda_http::{Body, Error, Request, Response};
use serde_json::json;

use crate::app::App;
use crate::error::ApiError;
use crate::http::{MAX_BODY_BYTES, header, msg, note, ok, respond};
use crate::model::Now;
use crate::store::WebhookOutcome;

/// LiveKit webhook
///
/// LiveKit's own account of who joined, left, or closed a room. Signed by LiveKit (a JWT in
/// `Authorization` carrying the body's sha256, with the LiveKit API key and secret), not by
/// our bearer tokens. Repeated deliveries of one event are applied once.
#[utoipa::path(
    post, path = "/api/webhooks/livekit", tag = "livekit", operation_id = "livekitWebhook",
    request_body(content = Object, content_type = "application/webhook+json",
        description = "LiveKit's WebhookEvent (room_finished, participant_joined, \
            participant_left, …) as LiveKit sends it."),
    params(("Authorization" = String, Header,
        description = "LiveKit's signature: a JWT whose sha256 claim is the body's.")),
    responses(
        (status = 200, description = "事件已处理 (Event handled)",
            body = crate::openapi::WebhookHandled),
    )
)]
pub async fn livekit_webhook(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("livekit-webhook", &req, async {
        let body: &[u8] = req.body().as_ref();
        if body.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        let event = app
            .livekit
            .verify_webhook(body, header(&req, "authorization"))?;
        let Some(event) = event else {
            return ok(msg::WEBHOOK_HANDLED, json!({ "outcome": "ignored" }));
        };
        note(&event.room_name, None);
        let outcome = if app.cache.webhook_seen(&event.id).await {
            WebhookOutcome::Duplicate
        } else {
            let applied = app.store.apply_webhook(&event, Now::current()).await;
            let outcome = app.forget_on_failure(&event.room_name, applied).await?;
            app.cache.remember_webhook(&event.id).await;
            outcome
        };
        let label = match &outcome {
            WebhookOutcome::Applied { rooms, finalised } => {
                app.after_commit(&event.room_name, true, false).await;
                for room in rooms {
                    app.after_commit(room, true, false).await;
                }
                for room in finalised {
                    app.tear_down(room).await;
                }
                let mut changed = vec![event.room_name.clone()];
                changed.extend(rooms.iter().cloned());
                app.deliver_events(&changed).await;
                "applied"
            }
            WebhookOutcome::DeleteAgain => {
                app.tear_down(&event.room_name).await;
                "deleted_again"
            }
            WebhookOutcome::RemoveAgain { uid } => {
                app.remove_from_livekit(&event.room_name, uid).await;
                "removed_again"
            }
            WebhookOutcome::Ignored => "ignored",
            WebhookOutcome::Duplicate => "duplicate",
        };
        tracing::info!(event_id = %event.id, outcome = label, "webhook");
        ok(msg::WEBHOOK_HANDLED, json!({ "outcome": label }))
    })
    .await
}
