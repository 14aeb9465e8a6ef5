//! LiveKit: access tokens for a room, webhook verification, and the RoomService calls that
//! tear a finished room down (DeleteRoom) or check which rooms still exist (ListRooms).

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use livekit_api::access_token::{AccessToken, Claims, TokenVerifier, VideoGrants};
use livekit_api::services::room::RoomClient;
use serde::Deserialize;
use sha2::Digest;

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
    webhooks: TokenVerifier,
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
            webhooks: TokenVerifier::with_api_key(
                &config.livekit_api_key,
                &config.livekit_api_secret,
            ),
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

    /// Verifies a webhook as livekit-api's `WebhookReceiver` does: the Authorization JWT (bare
    /// or after `Bearer `) signed with our key, carrying the sha256 of these exact body bytes.
    /// Anything wrong is 401. Then reads the few fields the lifecycle uses (None for events it
    /// does not act on): the receiver's decoding into the whole protobuf event type would link
    /// every LiveKit message's JSON code into the function, about 0.1 MB of its 5 MB budget.
    pub fn verify_webhook(
        &self,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Result<Option<WebhookEvent>, ApiError> {
        let token = authorization
            .map(|h| h.strip_prefix("Bearer ").unwrap_or(h).trim())
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let claims = self.webhooks.verify(token).map_err(|e| {
            tracing::warn!(error = %e, "webhook rejected");
            ApiError::Unauthorized
        })?;
        let signed = base64::engine::general_purpose::STANDARD
            .decode(claims.sha256.as_bytes())
            .map_err(|_| ApiError::Unauthorized)?;
        if signed[..] != sha2::Sha256::digest(body)[..] {
            tracing::warn!("webhook rejected: the body is not the one signed");
            return Err(ApiError::Unauthorized);
        }
        let event: LiveKitEvent = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid(format!("webhook body: {e}")))?;
        Ok(lifecycle_event(event))
    }
}

/// The fields of LiveKit's WebhookEvent (protobuf JSON, camelCase) the lifecycle reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct LiveKitEvent {
    event: String,
    id: String,
    /// int64 as protobuf JSON writes it: a string, or a number from other encoders.
    created_at: Int64,
    room: Option<Named>,
    participant: Option<Identity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Named {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Identity {
    identity: String,
}

#[derive(Debug, Default)]
struct Int64(i64);

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(Int64(n)),
            Either::Text(t) => t.parse().map(Int64).map_err(serde::de::Error::custom),
        }
    }
}

/// The part of a LiveKit event the lifecycle acts on; None for events it does not use.
fn lifecycle_event(event: LiveKitEvent) -> Option<WebhookEvent> {
    let room_name = event.room.map(|r| r.name).filter(|n| !n.is_empty())?;
    let identity = event
        .participant
        .map(|p| p.identity)
        .filter(|i| !i.is_empty());
    let kind = match event.event.as_str() {
        "participant_joined" => WebhookKind::ParticipantJoined { uid: identity? },
        "participant_left" => WebhookKind::ParticipantLeft { uid: identity? },
        "room_finished" => WebhookKind::RoomFinished,
        _ => return None,
    };
    Some(WebhookEvent {
        id: event.id,
        room_name,
        created_at: event.created_at.0,
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
