//! LiveKit: access tokens for a room, webhook verification, and the RoomService calls that
//! tear a finished room down (DeleteRoom) or check which rooms still exist (ListRooms).

use std::collections::HashSet;
use std::time::Duration;

use livekit_api::access_token::{AccessToken, Claims, TokenVerifier, VideoGrants};
use livekit_api::services::room::RoomClient;
use livekit_api::webhooks::WebhookReceiver;
use livekit_protocol::WebhookEvent as LiveKitEvent;

use crate::config::Config;
use crate::error::ApiError;
use crate::model::Room;
use crate::model::{WebhookEvent, WebhookKind};

/// DESIGN: a DeleteRoom never holds a request up for long.
const SERVER_TIMEOUT: Duration = Duration::from_secs(2);

pub struct LiveKit {
    api_key: String,
    api_secret: String,
    token_ttl: Duration,
    /// What clients connect to; never the internal API URL.
    pub client_url: String,
    rooms: Option<RoomClient>,
    webhooks: WebhookReceiver,
}

impl LiveKit {
    pub fn new(config: &Config) -> Self {
        install_jwt_backend();
        let rooms = config.livekit_url.as_deref().map(|url| {
            RoomClient::with_api_key(url, &config.livekit_api_key, &config.livekit_api_secret)
                .with_failover(false)
                .with_request_timeout(SERVER_TIMEOUT)
        });
        LiveKit {
            api_key: config.livekit_api_key.clone(),
            api_secret: config.livekit_api_secret.clone(),
            token_ttl: config.token_ttl,
            client_url: config.livekit_client_url.clone(),
            rooms,
            webhooks: WebhookReceiver::new(TokenVerifier::with_api_key(
                &config.livekit_api_key,
                &config.livekit_api_secret,
            )),
        }
    }

    /// Whether the service talks to a LiveKit server (LIVEKIT_URL is set).
    pub fn has_server(&self) -> bool {
        self.rooms.is_some()
    }

    /// A token admitting `uid` to this room only; voice calls may publish the microphone only.
    pub fn token(&self, room: &Room, uid: &str) -> Result<String, ApiError> {
        let grants = VideoGrants {
            room_join: true,
            room: room.room_name.clone(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            can_publish_sources: if room.is_voice() {
                vec!["microphone".to_owned()]
            } else {
                Vec::new()
            },
            ..VideoGrants::default()
        };
        AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_identity(uid)
            .with_name(uid)
            .with_ttl(self.token_ttl)
            .with_grants(grants)
            .to_jwt()
            .map_err(|e| ApiError::Internal(format!("livekit token: {e}")))
    }

    /// Disconnects everyone by deleting the LiveKit room. Ok(false) without a server.
    pub async fn delete_room(&self, room_name: &str) -> Result<bool, String> {
        let Some(rooms) = &self.rooms else {
            return Ok(false);
        };
        match tokio::time::timeout(SERVER_TIMEOUT, rooms.delete_room(room_name)).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("DeleteRoom timed out".to_owned()),
        }
    }

    /// Takes `uid` out of the LiveKit room (its connection closes). Ok(false) without a
    /// server; a participant LiveKit does not know is already out: Ok(true).
    pub async fn remove_participant(&self, room_name: &str, uid: &str) -> Result<bool, String> {
        let Some(rooms) = &self.rooms else {
            return Ok(false);
        };
        match tokio::time::timeout(SERVER_TIMEOUT, rooms.remove_participant(room_name, uid)).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) if e.to_string().contains("not_found") => Ok(true),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("RemoveParticipant timed out".to_owned()),
        }
    }

    /// Which of `names` LiveKit still has; None without a server.
    pub async fn existing_rooms(
        &self,
        names: Vec<String>,
    ) -> Result<Option<HashSet<String>>, String> {
        let Some(rooms) = &self.rooms else {
            return Ok(None);
        };
        match tokio::time::timeout(SERVER_TIMEOUT, rooms.list_rooms(names)).await {
            Ok(Ok(list)) => Ok(Some(list.into_iter().map(|r| r.name).collect())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("ListRooms timed out".to_owned()),
        }
    }

    /// Verifies a webhook: the Authorization JWT (bare or after `Bearer `) signed with our
    /// key, and the sha256 of these exact body bytes. Anything wrong is 401.
    pub fn verify_webhook(
        &self,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Result<LiveKitEvent, ApiError> {
        let token = authorization
            .map(|h| h.strip_prefix("Bearer ").unwrap_or(h).trim())
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let body = std::str::from_utf8(body).map_err(|_| ApiError::Unauthorized)?;
        self.webhooks.receive(body, token).map_err(|e| {
            tracing::warn!(error = %e, "webhook rejected");
            ApiError::Unauthorized
        })
    }
}

/// The part of a LiveKit event the lifecycle acts on; None for events it does not use.
pub fn lifecycle_event(event: &LiveKitEvent) -> Option<WebhookEvent> {
    let room_name = event
        .room
        .as_ref()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())?;
    let identity = || {
        event
            .participant
            .as_ref()
            .map(|p| p.identity.clone())
            .filter(|i| !i.is_empty())
    };
    let kind = match event.event.as_str() {
        "participant_joined" => WebhookKind::ParticipantJoined { uid: identity()? },
        "participant_left" => WebhookKind::ParticipantLeft { uid: identity()? },
        "room_finished" => WebhookKind::RoomFinished,
        _ => return None,
    };
    Some(WebhookEvent {
        id: event.id.clone(),
        room_name,
        created_at: event.created_at,
        kind,
    })
}

/// jsonwebtoken 10 fixes its crypto backend on first use, process-wide. livekit-api registers
/// its HMAC backend lazily, so make it do so now, before our own bearer checks decode anything.
pub fn install_jwt_backend() {
    let _ = Claims::from_unverified("");
}

/// One rustls crypto provider (ring) for every TLS client in the process.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
