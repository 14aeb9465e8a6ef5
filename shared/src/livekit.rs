//! LiveKit: access tokens for a room, one identity each.

use std::time::Duration;

use livekit_api::access_token::{AccessToken, Claims, VideoGrants};

use crate::config::Config;
use crate::error::ApiError;
use crate::model::Room;

#[derive(Clone)]
pub struct LiveKit {
    api_key: String,
    api_secret: String,
    token_ttl: Duration,
    /// What clients connect to; never the internal API URL.
    pub client_url: String,
}

impl LiveKit {
    pub fn new(config: &Config) -> Self {
        install_jwt_backend();
        LiveKit {
            api_key: config.livekit_api_key.clone(),
            api_secret: config.livekit_api_secret.clone(),
            token_ttl: config.token_ttl,
            client_url: config.livekit_client_url.clone(),
        }
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
}

/// jsonwebtoken 10 fixes its crypto backend on first use, process-wide. livekit-api registers
/// its HMAC backend lazily, so make it do so now, before our own bearer checks decode anything.
pub fn install_jwt_backend() {
    let _ = Claims::from_unverified("");
}
