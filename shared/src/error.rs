//! One error type for every request, each variant knowing its HTTP status and stable key.

use serde_json::{Value, json};

use crate::i18n::Lang;

/// A 503 asks the client to come back after this long: a connection freed by another request,
/// a database failing over, or Redis-free reads are all a second or two away.
pub const SERVICE_UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApiError {
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("room already exists")]
    RoomAlreadyExists,
    #[error("channel has an active room {room_name}")]
    ChannelHasActiveRoom { room_name: String },
    #[error("creator is in another call")]
    CreatorInAnotherCall,
    #[error("participants in another call: {busy_uids:?}")]
    ParticipantInCall { busy_uids: Vec<String> },
    #[error("room not found")]
    RoomNotFound,
    #[error("room is not active")]
    RoomNotActive,
    #[error("room is full")]
    RoomFull,
    #[error("participant not invited")]
    ParticipantNotInvited,
    #[error("participant was removed from the call")]
    ParticipantRemoved,
    #[error("participant not found")]
    ParticipantNotFound,
    #[error("event not found")]
    EventNotFound,
    #[error("invalid transition from {from} to {to}")]
    InvalidTransition { from: i16, to: i16 },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("rate limited, retry after {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    #[error("idempotency key reused for another request")]
    IdempotencyKeyReused,
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyKeyInUse,
    #[error("service unavailable: {0}")]
    ServiceUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(detail: impl Into<String>) -> Self {
        ApiError::InvalidParameters(detail.into())
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidParameters(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden
            | ApiError::ParticipantNotInvited
            | ApiError::ParticipantRemoved => 403,
            ApiError::RoomNotFound | ApiError::ParticipantNotFound | ApiError::EventNotFound => 404,
            ApiError::RoomAlreadyExists
            | ApiError::ChannelHasActiveRoom { .. }
            | ApiError::CreatorInAnotherCall
            | ApiError::ParticipantInCall { .. }
            | ApiError::RoomNotActive
            | ApiError::RoomFull
            | ApiError::InvalidTransition { .. }
            | ApiError::IdempotencyKeyInUse => 409,
            ApiError::PayloadTooLarge => 413,
            ApiError::IdempotencyKeyReused => 422,
            ApiError::RateLimited { .. } => 429,
            ApiError::ServiceUnavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// When a client should try again (the Retry-After header): a rate limit's window, and
    /// a database that could not be reached; no other refusal changes by waiting.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::ServiceUnavailable(_) | ApiError::IdempotencyKeyInUse => {
                Some(SERVICE_UNAVAILABLE_RETRY_AFTER_SECS)
            }
            _ => None,
        }
    }

    /// A refusal decided by the call's state inside its transaction (or by a stored record):
    /// what a retry of the same keyed request must hear again. Every other failure (input,
    /// auth, rate limit, outage, a key conflict) leaves the key free for a retry.
    pub fn is_stored_for_retries(&self) -> bool {
        matches!(
            self,
            ApiError::Forbidden
                | ApiError::RoomAlreadyExists
                | ApiError::ChannelHasActiveRoom { .. }
                | ApiError::CreatorInAnotherCall
                | ApiError::ParticipantInCall { .. }
                | ApiError::RoomNotFound
                | ApiError::RoomNotActive
                | ApiError::RoomFull
                | ApiError::ParticipantNotInvited
                | ApiError::ParticipantRemoved
                | ApiError::ParticipantNotFound
                | ApiError::EventNotFound
                | ApiError::InvalidTransition { .. }
        )
    }

    /// One error of every kind (a new variant joins this list): the API document lists their
    /// keys.
    pub fn one_of_each() -> Vec<ApiError> {
        vec![
            ApiError::invalid("x"),
            ApiError::Unauthorized,
            ApiError::Forbidden,
            ApiError::RoomAlreadyExists,
            ApiError::ChannelHasActiveRoom {
                room_name: "r".into(),
            },
            ApiError::CreatorInAnotherCall,
            ApiError::ParticipantInCall { busy_uids: vec![] },
            ApiError::RoomNotFound,
            ApiError::RoomNotActive,
            ApiError::RoomFull,
            ApiError::ParticipantNotInvited,
            ApiError::ParticipantRemoved,
            ApiError::ParticipantNotFound,
            ApiError::EventNotFound,
            ApiError::InvalidTransition { from: 0, to: 0 },
            ApiError::PayloadTooLarge,
            ApiError::RateLimited {
                retry_after_secs: 1,
            },
            ApiError::IdempotencyKeyReused,
            ApiError::IdempotencyKeyInUse,
            ApiError::ServiceUnavailable(String::new()),
            ApiError::Internal(String::new()),
        ]
    }

    /// The stable key clients branch on; never changes once published.
    pub fn key(&self) -> &'static str {
        match self {
            ApiError::InvalidParameters(_) => "invalid_parameters",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::RoomAlreadyExists => "room_already_exists",
            ApiError::ChannelHasActiveRoom { .. } => "channel_has_active_room",
            ApiError::CreatorInAnotherCall => "creator_in_another_call",
            ApiError::ParticipantInCall { .. } => "participant_in_call",
            ApiError::RoomNotFound => "room_not_found",
            ApiError::RoomNotActive => "room_not_active",
            ApiError::RoomFull => "room_full",
            ApiError::ParticipantNotInvited => "participant_not_invited",
            ApiError::ParticipantRemoved => "participant_removed",
            ApiError::ParticipantNotFound => "participant_not_found",
            ApiError::EventNotFound => "event_not_found",
            ApiError::InvalidTransition { .. } => "invalid_transition",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyKeyInUse => "idempotency_key_in_use",
            ApiError::ServiceUnavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// A readable message in the caller's language. Internal details stay in the logs.
    pub fn message(&self, lang: Lang) -> String {
        let (zh, en): (&str, &str) = match self {
            ApiError::InvalidParameters(detail) => {
                return match lang {
                    Lang::Zh => format!("参数错误：{detail}"),
                    Lang::En => format!("Invalid parameters: {detail}"),
                };
            }
            ApiError::Unauthorized => (
                "未授权，请提供有效的访问令牌",
                "Unauthorized: a valid bearer token is required",
            ),
            ApiError::Forbidden => ("无权执行此操作", "Forbidden: not allowed for this caller"),
            ApiError::RoomAlreadyExists => ("房间已存在", "Room already exists"),
            ApiError::ChannelHasActiveRoom { .. } => (
                "该频道已有进行中的房间",
                "The channel already has an active room",
            ),
            ApiError::CreatorInAnotherCall => {
                ("创建者正在其他通话中", "The creator is in another call")
            }
            ApiError::ParticipantInCall { .. } => (
                "参与者正在其他通话中",
                "Some participants are in another call",
            ),
            ApiError::RoomNotFound => ("房间不存在", "Room not found"),
            ApiError::RoomNotActive => ("房间已结束或已取消", "Room has ended or was cancelled"),
            ApiError::RoomFull => ("房间人数已满", "Room is full"),
            ApiError::ParticipantNotInvited => (
                "未被邀请加入该房间",
                "Participant was not invited to this room",
            ),
            ApiError::ParticipantRemoved => (
                "已被移出该通话，不能再加入",
                "Participant was removed from this call and cannot join it again",
            ),
            ApiError::ParticipantNotFound => ("参与者不存在", "Participant not found"),
            ApiError::EventNotFound => ("事件不存在", "Event not found"),
            ApiError::InvalidTransition { .. } => (
                "当前状态不允许此操作",
                "This status change is not allowed now",
            ),
            ApiError::PayloadTooLarge => ("请求体过大", "Request body is too large"),
            ApiError::RateLimited { .. } => (
                "请求过于频繁，请稍后再试",
                "Too many requests, try again later",
            ),
            ApiError::IdempotencyKeyReused => (
                "该幂等键已用于另一个请求",
                "This Idempotency-Key was already used for a different request",
            ),
            ApiError::IdempotencyKeyInUse => (
                "使用该幂等键的请求仍在处理中，请稍后重试",
                "A request with this Idempotency-Key is still in progress, retry shortly",
            ),
            ApiError::ServiceUnavailable(_) => (
                "服务暂时不可用，请稍后重试",
                "Service temporarily unavailable, try again later",
            ),
            ApiError::Internal(_) => ("服务器内部错误", "Internal server error"),
        };
        match lang {
            Lang::Zh => zh.to_owned(),
            Lang::En => en.to_owned(),
        }
    }

    /// Extra data some errors carry for the client.
    pub fn data(&self) -> Option<Value> {
        match self {
            ApiError::ChannelHasActiveRoom { room_name } => Some(json!({ "room_name": room_name })),
            ApiError::ParticipantInCall { busy_uids } => Some(json!({ "busy_uids": busy_uids })),
            ApiError::InvalidTransition { from, to } => Some(json!({ "from": from, "to": to })),
            _ => None,
        }
    }

    pub fn body(&self, lang: Lang) -> Value {
        let mut body = json!({
            "code": self.status(),
            "msg": self.message(lang),
            "error": self.key(),
        });
        if let Some(data) = self.data() {
            body["data"] = data;
        }
        body
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if crate::database::is_unavailable(&err) {
            // Counted as a refusal for lack of a database connection if it becomes the answer.
            crate::metrics::note_db_unavailable();
            ApiError::ServiceUnavailable(err.to_string())
        } else if crate::database::is_retryable(&err) {
            ApiError::ServiceUnavailable(err.to_string())
        } else {
            ApiError::Internal(err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_key() {
        let mut keys: Vec<&str> = ApiError::one_of_each().iter().map(ApiError::key).collect();
        let listed = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(
            keys.len(),
            listed,
            "one of each kind, each with its own key"
        );
        assert_eq!(listed, 21);
    }

    #[test]
    fn busy_participants_are_named_in_data() {
        let err = ApiError::ParticipantInCall {
            busy_uids: vec!["bob".into()],
        };
        let body = err.body(Lang::En);
        assert_eq!(body["code"], 409);
        assert_eq!(body["error"], "participant_in_call");
        assert_eq!(body["data"]["busy_uids"][0], "bob");
    }

    #[test]
    fn messages_follow_the_language() {
        assert_eq!(ApiError::RoomNotFound.message(Lang::Zh), "房间不存在");
        assert_eq!(ApiError::RoomNotFound.message(Lang::En), "Room not found");
        assert!(
            ApiError::invalid("limit")
                .message(Lang::En)
                .contains("limit")
        );
    }

    #[test]
    fn internal_details_never_reach_the_message() {
        let err = ApiError::ServiceUnavailable("pool timed out at 10.0.0.1".into());
        assert!(!err.message(Lang::En).contains("10.0.0.1"));
        assert_eq!(err.status(), 503);
    }
}
