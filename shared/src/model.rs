//! The domain types: rooms, participants and their status codes as the seed numbers them.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use serde::{Serialize, Serializer};

/// Room status (房间状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(i16)]
pub enum RoomStatus {
    /// 未开始
    #[default]
    NotStarted = 0,
    /// 进行中
    InProgress = 1,
    /// 已结束
    Ended = 2,
    /// 已取消
    Cancelled = 3,
}

/// Participant status (参与者状态).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(i16)]
pub enum ParticipantStatus {
    /// 邀请中
    #[default]
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

/// Why a room ended; None while it is open. A closed list: clients may branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// It ran, and ended when the last but one participant left (or everyone did).
    Completed,
    /// The creator hung up or cancelled before anyone answered.
    Cancelled,
    /// Nobody answered: the (last) invitee rejected.
    Declined,
    /// Nobody answered: the invites rang out.
    Missed,
    /// Nobody answered: the invitees were in other calls.
    Busy,
    /// It reached its `max_duration_seconds`.
    MaxDuration,
    /// One participant was alone in it for `solo_timeout_seconds`.
    SoloTimeout,
    /// The end endpoint or the room status PUT ended it.
    EndedByApi,
    /// LiveKit closed the room (room_finished), or no longer had it.
    GoneFromLivekit,
}

/// Why a participant row is in its status; None while it rings or is joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Rejected the invite (2).
    Declined,
    /// Was in another call when rung (5).
    Busy,
    /// Rang out (4).
    Timeout,
    /// The creator cancelled the invite, or the call was cancelled while it rang (6).
    Cancelled,
    /// Left the call (3).
    HungUp,
    /// Taken out of the call by its creator or a service (3).
    Removed,
    /// Joined another call while ringing or talking here (5 or 3).
    AnsweredElsewhere,
    /// The call ended around it: joined rows hang up (3), ringing ones stop (4).
    CallEnded,
    /// The creator's row of a call nobody answered (3).
    NoAnswer,
}

macro_rules! text_codes {
    ($ty:ty { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &[$ty] = &[$(<$ty>::$variant),+];

            /// The text stored in the database and sent in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(<$ty>::$variant),)+ _ => None }
            }
        }
    };
}

text_codes!(EndReason {
    Completed = "completed",
    Cancelled = "cancelled",
    Declined = "declined",
    Missed = "missed",
    Busy = "busy",
    MaxDuration = "max_duration",
    SoloTimeout = "solo_timeout",
    EndedByApi = "ended_by_api",
    GoneFromLivekit = "gone_from_livekit",
});

text_codes!(Reason {
    Declined = "declined",
    Busy = "busy",
    Timeout = "timeout",
    Cancelled = "cancelled",
    HungUp = "hung_up",
    Removed = "removed",
    AnsweredElsewhere = "answered_elsewhere",
    CallEnded = "call_ended",
    NoAnswer = "no_answer",
});

/// Who placed a call, as one uid's history shows it: `outgoing` when the uid created the call,
/// else `incoming`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outgoing,
    Incoming,
}

/// What one delivery attempt came to: delivered; failed (tried again later); gave_up (a 4xx
/// other than 408/429, or out of the retry window). Stored as its text in
/// `event_attempt.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Failed,
    GaveUp,
}

/// Where an event stands with one endpoint: pending (not delivered yet, retried); delivered;
/// gave_up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    GaveUp,
}

text_codes!(Direction {
    Outgoing = "outgoing",
    Incoming = "incoming",
});

text_codes!(AttemptOutcome {
    Delivered = "delivered",
    Failed = "failed",
    GaveUp = "gave_up",
});

text_codes!(DeliveryState {
    Pending = "pending",
    Delivered = "delivered",
    GaveUp = "gave_up",
});

/// An outcome as the store reads it back; a text no build wrote is a corrupt row.
impl TryFrom<String> for AttemptOutcome {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        AttemptOutcome::parse(&text).ok_or_else(|| format!("unknown attempt outcome {text:?}"))
    }
}

/// The event types, a closed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    #[serde(rename = "room.created")]
    RoomCreated,
    #[serde(rename = "room.started")]
    RoomStarted,
    #[serde(rename = "room.ended")]
    RoomEnded,
    #[serde(rename = "participant.invited")]
    ParticipantInvited,
    #[serde(rename = "participant.joined")]
    ParticipantJoined,
    #[serde(rename = "participant.rejected")]
    ParticipantRejected,
    #[serde(rename = "participant.missed")]
    ParticipantMissed,
    #[serde(rename = "participant.busy")]
    ParticipantBusy,
    #[serde(rename = "participant.cancelled")]
    ParticipantCancelled,
    #[serde(rename = "participant.left")]
    ParticipantLeft,
    #[serde(rename = "participant.removed")]
    ParticipantRemoved,
}

impl EventType {
    pub const ALL: [EventType; 11] = [
        EventType::RoomCreated,
        EventType::RoomStarted,
        EventType::RoomEnded,
        EventType::ParticipantInvited,
        EventType::ParticipantJoined,
        EventType::ParticipantRejected,
        EventType::ParticipantMissed,
        EventType::ParticipantBusy,
        EventType::ParticipantCancelled,
        EventType::ParticipantLeft,
        EventType::ParticipantRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RoomCreated => "room.created",
            EventType::RoomStarted => "room.started",
            EventType::RoomEnded => "room.ended",
            EventType::ParticipantInvited => "participant.invited",
            EventType::ParticipantJoined => "participant.joined",
            EventType::ParticipantRejected => "participant.rejected",
            EventType::ParticipantMissed => "participant.missed",
            EventType::ParticipantBusy => "participant.busy",
            EventType::ParticipantCancelled => "participant.cancelled",
            EventType::ParticipantLeft => "participant.left",
            EventType::ParticipantRemoved => "participant.removed",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The event a participant row in this status (for this reason) reports.
    pub fn of_participant(row: &Participant) -> EventType {
        use ParticipantStatus as P;
        match row.status {
            P::Ringing => EventType::ParticipantInvited,
            P::Joined => EventType::ParticipantJoined,
            P::Rejected => EventType::ParticipantRejected,
            P::Missed => EventType::ParticipantMissed,
            P::Busy => EventType::ParticipantBusy,
            P::Cancelled => EventType::ParticipantCancelled,
            P::HungUp if row.reason == Some(Reason::Removed) => EventType::ParticipantRemoved,
            P::HungUp => EventType::ParticipantLeft,
        }
    }
}

/// A call's timeouts, in seconds (0: none for the last two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    pub ring_timeout_seconds: i32,
    pub max_duration_seconds: i32,
    pub solo_timeout_seconds: i32,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            ring_timeout_seconds: 60,
            max_duration_seconds: 0,
            solo_timeout_seconds: 0,
        }
    }
}

/// How a list is paged: limit with an offset (the seed's), or with a keyset cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
    /// Rows with an id below this one (the previous page's last), newest first.
    pub before_id: Option<i64>,
}

/// A keyset cursor: the last id of a page, opaque to clients.
pub fn cursor_of(id: i64) -> String {
    format!("i{id}")
}

pub fn parse_cursor(text: &str) -> Option<i64> {
    text.strip_prefix('i')?
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
}

/// Call type: voice rooms only let people publish their microphone.
pub const CALL_TYPE_VOICE: i16 = 0;

#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
    /// How long an invite rings, in seconds.
    pub ring_timeout_seconds: i32,
    /// The longest the call may run; 0: no limit.
    pub max_duration_seconds: i32,
    /// How long one participant may stay alone in a running call; 0: no limit.
    pub solo_timeout_seconds: i32,
    pub end_reason: Option<EndReason>,
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<NaiveDateTime>,
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<NaiveDateTime>,
    /// From started_at to ended_at; 0 until the room ends (and for a call that never ran).
    pub duration_seconds: i64,
    /// Since when exactly one row is joined in the running call (the solo timeout's start).
    #[serde(skip)]
    pub solo_since: Option<NaiveDateTime>,
    /// The earliest instant a timeout rule applies to this room; None when none can.
    #[serde(skip)]
    pub deadline: Option<NaiveDateTime>,
    /// The number of the room's last business event (they count from 1, without gaps).
    #[serde(skip)]
    pub event_seq: i64,
}

impl Room {
    pub fn is_voice(&self) -> bool {
        self.call_type == CALL_TYPE_VOICE
    }

    pub fn invite_only(&self) -> bool {
        self.invite_on == 1
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
    pub reason: Option<Reason>,
    /// When it last started ringing.
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub invited_at: Option<NaiveDateTime>,
    /// While it rings: the instant it rings out.
    #[serde(with = "rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ring_deadline: Option<NaiveDateTime>,
    /// Seconds it rang, summed over every ring.
    pub ring_seconds: i64,
    /// Seconds it was joined, summed over every join.
    pub talk_seconds: i64,
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

/// An optional timestamp as `rfc3339` writes one, or null.
pub mod rfc3339_option {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::rfc3339::serialize(at, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.naive_utc())
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_their_snake_case_text_in_json_and_in_the_database() {
        for reason in EndReason::ALL {
            let json = serde_json::to_value(reason).expect("serializes");
            assert_eq!(json, reason.as_str());
            assert_eq!(EndReason::parse(reason.as_str()), Some(*reason));
        }
        for reason in Reason::ALL {
            let json = serde_json::to_value(reason).expect("serializes");
            assert_eq!(json, reason.as_str());
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
        }
        assert_eq!(Reason::parse("nonsense"), None);
    }

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
            ..Room::default()
        };
        let json = serde_json::to_value(&room).expect("serializes");
        assert_eq!(json["started_at"], serde_json::Value::Null);
        assert_eq!(json["duration_seconds"], 0);
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
