//! One async function per endpoint. Each reads like the contract: who is calling, what they
//! sent, what the store did, what goes back.

pub mod console;
pub mod docs;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod overview;
pub(crate) mod participants;
pub(crate) mod rooms;
pub(crate) mod users;
pub(crate) mod webhook;

pub use events::{get_event, list_events, redeliver_event, room_events};
pub use health::health;
pub use overview::call_overview;
pub use participants::{
    invite_participants, join_room, leave_room, list_participants, remove_participant,
    update_participant_status,
};
pub use rooms::{create_room, end_room, get_room, list_rooms, update_room_status};
pub use users::{user_calls, user_ringing};
pub use webhook::livekit_webhook;

/// Route patterns, as API Gateway and the local router know them.
pub mod routes {
    pub const ROOMS: &str = "/api/rooms";
    pub const JOIN: &str = "/api/participants/join";
    pub const LEAVE: &str = "/api/participants/leave";
    pub const ROOM: &str = "/api/rooms/{room_name}";
    pub const ROOM_STATUS: &str = "/api/rooms/{room_name}/status";
    pub const ROOM_END: &str = "/api/rooms/{room_name}/end";
    pub const ROOM_PARTICIPANTS: &str = "/api/rooms/{room_name}/participants";
    pub const ROOM_INVITE: &str = "/api/rooms/{room_name}/invite";
    pub const PARTICIPANT_STATUS: &str = "/api/rooms/{room_name}/participants/{uid}/status";
    pub const PARTICIPANT_REMOVE: &str = "/api/rooms/{room_name}/participants/{uid}/remove";
    pub const USER_RINGING: &str = "/api/users/{uid}/ringing";
    pub const USER_CALLS: &str = "/api/users/{uid}/calls";
    pub const LIVEKIT_WEBHOOK: &str = "/api/webhooks/livekit";
    pub const EVENTS: &str = "/api/events";
    pub const EVENT: &str = "/api/events/{id}";
    pub const EVENT_REDELIVER: &str = "/api/events/{id}/redeliver";
    pub const ROOM_EVENTS: &str = "/api/rooms/{room_name}/events";
    pub const OVERVIEW: &str = "/api/overview";
}

/// A static page or asset of this service (the docs, the console): its type, how long a
/// browser may keep it, no sniffing, no referrer.
pub(crate) fn static_answer(
    content_type: &str,
    max_age: u32,
    body: lambda_http::Body,
) -> lambda_http::Response<lambda_http::Body> {
    let mut response = lambda_http::Response::new(body);
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("content-type", content_type.to_owned());
    put("cache-control", format!("public, max-age={max_age}"));
    put("x-content-type-options", "nosniff".to_owned());
    put("referrer-policy", "no-referrer".to_owned());
    response
}

/// `response` with this Content-Security-Policy.
pub(crate) fn with_policy(
    mut response: lambda_http::Response<lambda_http::Body>,
    policy: &'static str,
) -> lambda_http::Response<lambda_http::Body> {
    if let Ok(policy) = http::HeaderValue::from_str(policy) {
        response
            .headers_mut()
            .insert("content-security-policy", policy);
    }
    response
}
