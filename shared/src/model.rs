//! The domain types: rooms, participants and their status codes as the seed numbers them.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use serde::{Serialize, Serializer};

/// Room status (房间状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum RoomStatus {
    /// 未开始
    NotStarted = 0,
    /// 进行中
    InProgress = 1,
    /// 已结束
    Ended = 2,
    /// 已取消
    Cancelled = 3,
}

/// Participant status (参与者状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum ParticipantStatus {
    /// 邀请中
    Ringing = 0,
    /// 已加入
    Joined = 1,
    /// 已拒绝
    Rejected = 2,
    /// 已挂断
    HungUp = 3,
    /// 超时未加入
    Missed = 4,
    /// 通话中未接听
    Busy = 5,
    /// 已取消
    Cancelled = 6,
}

impl RoomStatus {
    pub const ALL: [RoomStatus; 4] = [
        RoomStatus::NotStarted,
        RoomStatus::InProgress,
        RoomStatus::Ended,
        RoomStatus::Cancelled,
    ];

    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as i64 == code)
    }

    pub fn code(self) -> i16 {
        self as i16
    }

    /// Ended and cancelled rooms never change again.
    pub fn is_final(self) -> bool {
        matches!(self, RoomStatus::Ended | RoomStatus::Cancelled)
    }

    pub fn is_open(self) -> bool {
        !self.is_final()
    }
}

impl ParticipantStatus {
    pub const ALL: [ParticipantStatus; 7] = [
        ParticipantStatus::Ringing,
        ParticipantStatus::Joined,
        ParticipantStatus::Rejected,
        ParticipantStatus::HungUp,
        ParticipantStatus::Missed,
        ParticipantStatus::Busy,
        ParticipantStatus::Cancelled,
    ];

    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as i64 == code)
    }

    pub fn code(self) -> i16 {
        self as i16
    }

    /// A uid is live while it rings or is in a call; the database allows one live row per uid.
    pub fn is_live(self) -> bool {
        matches!(self, ParticipantStatus::Ringing | ParticipantStatus::Joined)
    }
}

impl Serialize for RoomStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i16(self.code())
    }
}

impl Serialize for ParticipantStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i16(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for RoomStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(d)?;
        Self::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown room status {code}")))
    }
}

impl<'de> serde::Deserialize<'de> for ParticipantStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(d)?;
        Self::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown participant status {code}")))
    }
}

/// Call type: voice rooms only let people publish their microphone.
pub const CALL_TYPE_VOICE: i16 = 0;

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Room {
    pub id: i64,
    pub source_channel_id: String,
    pub source_channel_type: i16,
    pub creator: String,
    pub room_name: String,
    pub call_type: i16,
    pub invite_on: i16,
    pub max_participants: i32,
    pub status: RoomStatus,
    #[serde(with = "rfc3339")]
    pub created_at: NaiveDateTime,
    #[serde(with = "rfc3339")]
    pub updated_at: NaiveDateTime,
}

impl Room {
    pub fn is_voice(&self) -> bool {
        self.call_type == CALL_TYPE_VOICE
    }

    pub fn invite_only(&self) -> bool {
        self.invite_on == 1
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Participant {
    pub id: i64,
    pub room_name: String,
    pub uid: String,
    pub status: ParticipantStatus,
    /// Unix milliseconds, 0 when unset.
    pub join_time: i64,
    /// Unix milliseconds, 0 when unset.
    pub leave_time: i64,
    #[serde(with = "rfc3339")]
    pub created_at: NaiveDateTime,
    #[serde(with = "rfc3339")]
    pub updated_at: NaiveDateTime,
}

/// A verified LiveKit webhook event, reduced to what the lifecycle needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: String,
    pub room_name: String,
    /// LiveKit's createdAt, Unix seconds.
    pub created_at: i64,
    pub kind: WebhookKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookKind {
    ParticipantJoined { uid: String },
    ParticipantLeft { uid: String },
    RoomFinished,
}

/// One instant, as the database stores it (UTC, millisecond precision) and as Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: NaiveDateTime,
    pub ms: i64,
}

impl Now {
    pub fn current() -> Self {
        Self::from_datetime(Utc::now().naive_utc())
    }

    pub fn from_datetime(at: NaiveDateTime) -> Self {
        let at = at.trunc_subsecs(3);
        Now {
            at,
            ms: at.and_utc().timestamp_millis(),
        }
    }

    pub fn from_millis(ms: i64) -> Option<Self> {
        chrono::DateTime::from_timestamp_millis(ms).map(|t| Self::from_datetime(t.naive_utc()))
    }
}

/// `2024-01-15T10:30:00Z`, as the seed shows timestamps.
pub mod rfc3339 {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    const FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

    pub fn serialize<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&at.format(FORMAT))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.naive_utc())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_serialize_as_the_seed_shows_them() {
        let now = Now::from_millis(1_705_314_600_123).expect("valid instant");
        let room = Room {
            id: 1,
            source_channel_id: "channel_123".into(),
            source_channel_type: 0,
            creator: "user_001".into(),
            room_name: "meeting_001".into(),
            call_type: 1,
            invite_on: 1,
            max_participants: 2,
            status: RoomStatus::NotStarted,
            created_at: now.at,
            updated_at: now.at,
        };
        let json = serde_json::to_value(&room).expect("serializes");
        assert_eq!(json["created_at"], "2024-01-15T10:30:00Z");
        assert_eq!(json["status"], 0);
        let back: Room = serde_json::from_value(json).expect("round trips");
        assert_eq!(back.room_name, "meeting_001");
    }

    #[test]
    fn status_codes_match_the_seed() {
        assert_eq!(RoomStatus::from_code(3), Some(RoomStatus::Cancelled));
        assert_eq!(RoomStatus::from_code(4), None);
        assert_eq!(
            ParticipantStatus::from_code(5),
            Some(ParticipantStatus::Busy)
        );
        assert_eq!(ParticipantStatus::from_code(-1), None);
        assert!(ParticipantStatus::Ringing.is_live());
        assert!(!ParticipantStatus::HungUp.is_live());
    }
}
