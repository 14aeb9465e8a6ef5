use lambda_http::{Body, Error, Request, Response};
use serde::{Deserialize, Serialize};

use crate::app::{App, Limited};
use crate::cache::CachedRoom;
use crate::error::ApiError;
use crate::handlers::routes;
use crate::http::{Success, msg, note, ok, parse_json, path_param, query_param, respond};
use crate::idempotency::keyed;
use crate::model::{CallLimits, Now, Room, RoomStatus};
use crate::rules::{self, CallState};
use crate::store::{ListedRooms, NewRoom, RoomFilter, RoomResult};
use crate::validate;

/// The seed's fields, then the call's limits (each optional, defaults from configuration).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "source_channel_id": "channel_123",
    "source_channel_type": 0,
    "creator": "user_001",
    "room_name": "meeting_001",
    "call_type": 1,
    "invite_on": 1
}))]
struct CreateRoom {
    /// The IM channel the call belongs to; one open room per channel.
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    source_channel_id: Option<String>,
    /// 0 one-to-one chat, 1 group chat, … (the IM's own numbering), 0–255.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 255)]
    source_channel_type: Option<i64>,
    /// The uid placing the call; a user token may only name itself.
    #[schema(
        min_length = 1,
        max_length = 40,
        pattern = r"^(?!\.\.?$)[^\s/\x00-\x1f\x7f-\x9f]+$"
    )]
    creator: String,
    /// Generated (`room_` and 16 hex digits) when absent.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 40,
        pattern = r"^(?!\.\.?$)[^\s/\x00-\x1f\x7f-\x9f]+$"
    )]
    room_name: Option<String>,
    /// 0 voice, 1 video (default).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    call_type: Option<i64>,
    /// 1: only invited uids may join; 0 (default): anyone with the name may.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    invite_on: Option<i64>,
    /// 0 or absent: 2; else 2 up to the configured limit (MAX_PARTICIPANTS_LIMIT, 50 by
    /// default; above it is 400).
    #[serde(default)]
    #[schema(minimum = 0)]
    max_participants: Option<i64>,
    /// Who to ring at once (the creator is left out if named).
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::openapi::Name>>, max_items = 100)]
    uids: Option<Vec<String>>,
    /// How long an invite rings.
    #[serde(default)]
    #[schema(minimum = 5, maximum = 180)]
    ring_timeout_seconds: Option<i64>,
    /// The longest the call may run.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 86400)]
    max_duration_seconds: Option<i64>,
    /// A running call with one joined participant for this long ends (solo_timeout).
    #[serde(default)]
    #[schema(minimum = 10, maximum = 3600)]
    solo_timeout_seconds: Option<i64>,
}

/// The new room, the creator's LiveKit token and every row (the creator joined, invitees
/// ringing or busy).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Created<'a> {
    id: i64,
    room_name: &'a str,
    token: String,
    livekit_url: &'a str,
    status: RoomStatus,
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: chrono::NaiveDateTime,
    max_participants: i32,
    ring_timeout_seconds: i32,
    max_duration_seconds: i32,
    solo_timeout_seconds: i32,
    #[schema(value_type = Vec<crate::model::Participant>)]
    participants: &'a [crate::model::Participant],
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"status": 1}))]
struct RoomStatusBody {
    /// 0 未开始, 1 进行中, 2 已结束, 3 已取消.
    #[schema(value_type = RoomStatus)]
    status: i64,
}

/// Create a room
///
/// The creator joins at once and gets a LiveKit token; `uids` are rung (a uid in another call
/// is recorded busy, status 5). The seed's example with its answer:
/// `{"code":0,"msg":"房间创建成功","data":{"id":1,"room_name":"meeting_001","token":"eyJhbGc...",
/// "livekit_url":"http://localhost:7880","status":0,"created_at":"2024-01-15T10:30:00Z"}}`.
#[utoipa::path(
    post, path = "/api/rooms", tag = "rooms", operation_id = "createRoom",
    request_body = CreateRoom,
    responses(
        (status = 200, description = "房间创建成功 (Room created)", body = Created,
            links(
                ("getRoom" = (operation_id = "getRoom",
                    parameters(("room_name" = "$response.body#/data/room_name")))),
                ("listParticipants" = (operation_id = "listParticipants",
                    parameters(("room_name" = "$response.body#/data/room_name")))),
                ("joinRoom" = (operation_id = "joinRoom",
                    request_body = json!({"room_name": "$response.body#/data/room_name",
                        "uid": "$response.body#/data/participants/0/uid"}))),
                ("leaveRoom" = (operation_id = "leaveRoom",
                    request_body = json!({"room_name": "$response.body#/data/room_name",
                        "uid": "$response.body#/data/participants/0/uid"}))),
                ("inviteParticipants" = (operation_id = "inviteParticipants",
                    parameters(("room_name" = "$response.body#/data/room_name")))),
                ("updateRoomStatus" = (operation_id = "updateRoomStatus",
                    parameters(("room_name" = "$response.body#/data/room_name")))),
                ("endRoom" = (operation_id = "endRoom",
                    parameters(("room_name" = "$response.body#/data/room_name")))),
                ("removeParticipant" = (operation_id = "removeParticipant",
                    parameters(("room_name" = "$response.body#/data/room_name"),
                        ("uid" = "$response.body#/data/participants/0/uid")))),
                ("updateParticipantStatus" = (operation_id = "updateParticipantStatus",
                    parameters(("room_name" = "$response.body#/data/room_name"),
                        ("uid" = "$response.body#/data/participants/0/uid")))),
            )),
        (status = 409, description = "room_already_exists: the name is taken; \
            channel_has_active_room: the channel has an open room (data.room_name); \
            creator_in_another_call: the creator rings or talks elsewhere"),
        (status = 429, description = "rate_limited: too many rooms created by this uid \
            (Retry-After)"),
    )
)]
pub async fn create_room(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("create-room", &req, async {
        let caller = app.caller(&req)?;
        let body: CreateRoom = parse_json(&req)?;
        let new = new_room(app, &body)?;
        note(&new.room_name, Some(&new.creator));
        caller.may_act_as(&new.creator)?;
        let uids = body.uids.unwrap_or_default();
        validate::names("uids", &uids)?;
        if uids.len() > validate::LIMIT_MAX as usize {
            return Err(ApiError::invalid("uids may name at most 100 people"));
        }
        let invitees = rules::invitees(&new.creator, &uids);
        keyed(app, &req, routes::ROOMS, &caller, async |key| {
            app.rate_limit(Limited::Create, caller.acting_uid(&new.creator))
                .await?;
            let reply = |state: &CallState| key.render(created(app, state, &new.creator));
            let (state, sealed) = app
                .store
                .create_room_sealed(&new, &invitees, Now::current(), key.seal(&reply))
                .await?;
            // room.created and the invites reach the app backend before the creator hears back.
            app.deliver_events(std::slice::from_ref(&state.room.room_name))
                .await;
            key.answer(sealed, || created(app, &state, &new.creator))
        })
        .await
    })
    .await
}

/// Create's answer: the room, the creator's token (minted here, so a keyed request stores the
/// very token it hands out) and every row.
fn created(app: &App, state: &CallState, creator: &str) -> Result<Success, ApiError> {
    let token = app.livekit.token(&state.room, creator)?;
    ok(
        msg::ROOM_CREATED,
        Created {
            id: state.room.id,
            room_name: &state.room.room_name,
            token,
            livekit_url: &app.livekit.client_url,
            status: state.room.status,
            created_at: state.room.created_at,
            max_participants: state.room.max_participants,
            ring_timeout_seconds: state.room.ring_timeout_seconds,
            max_duration_seconds: state.room.max_duration_seconds,
            solo_timeout_seconds: state.room.solo_timeout_seconds,
            participants: &state.rows,
        },
    )
}

fn new_room(app: &App, body: &CreateRoom) -> Result<NewRoom, ApiError> {
    validate::name("creator", &body.creator)?;
    let room_name = match &body.room_name {
        Some(name) => {
            validate::name("room_name", name)?;
            name.clone()
        }
        None => generated_room_name()?,
    };
    let source_channel_id = body.source_channel_id.clone().unwrap_or_default();
    validate::source_channel_id(&source_channel_id)?;
    let source_channel_type = validate::in_range(
        "source_channel_type",
        body.source_channel_type.unwrap_or(0),
        0,
        255,
    )?;
    let call_type = validate::in_range("call_type", body.call_type.unwrap_or(1), 0, 1)?;
    let invite_on = validate::in_range("invite_on", body.invite_on.unwrap_or(0), 0, 1)?;
    let max_participants =
        validate::max_participants(body.max_participants, app.config.max_participants_limit)?;
    let defaults = app.config.default_limits();
    let limits = CallLimits {
        ring_timeout_seconds: validate::optional_seconds(
            "ring_timeout_seconds",
            body.ring_timeout_seconds,
            validate::RING_TIMEOUT_RANGE,
        )?
        .unwrap_or(defaults.ring_timeout_seconds),
        max_duration_seconds: validate::optional_seconds(
            "max_duration_seconds",
            body.max_duration_seconds,
            validate::MAX_DURATION_RANGE,
        )?
        .unwrap_or(defaults.max_duration_seconds),
        solo_timeout_seconds: validate::optional_seconds(
            "solo_timeout_seconds",
            body.solo_timeout_seconds,
            validate::SOLO_TIMEOUT_RANGE,
        )?
        .unwrap_or(defaults.solo_timeout_seconds),
    };
    Ok(NewRoom {
        source_channel_id,
        source_channel_type: source_channel_type as i16,
        creator: body.creator.clone(),
        room_name,
        call_type: call_type as i16,
        invite_on: invite_on as i16,
        max_participants,
        limits,
    })
}

/// `room_` and 16 random hex digits: unguessable, and within the 40-character rule.
fn generated_room_name() -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("random: {e}")))?;
    Ok(bytes.iter().fold(String::from("room_"), |mut name, b| {
        name.push_str(&format!("{b:02x}"));
        name
    }))
}

/// Get a room
///
/// The room as of now: from the cache when it has the room as it is now, else one query (a
/// passed deadline is applied by the rules either way). A user token reads only rooms it is
/// in.
#[utoipa::path(
    get, path = "/api/rooms/{room_name}", tag = "rooms", operation_id = "getRoom",
    params(("room_name" = String, Path, description = "The room's name, percent-encoded.")),
    responses(
        (status = 200, description = "获取房间信息成功 (Room fetched)", body = Room),
        (status = 404, description = "room_not_found"),
    )
)]
pub async fn get_room(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("get-room", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::ROOM, "room_name")?;
        note(&room_name, caller.uid());
        let now = Now::current();
        let lookup = app.cache.get_room(&room_name).await;
        let cached = match lookup.room.filter(|c| c.current_at(now.at)) {
            Some(cached) => cached,
            None => {
                let state = app
                    .store
                    .load(&room_name, now)
                    .await?
                    .ok_or(ApiError::RoomNotFound)?;
                let cached = CachedRoom {
                    members: state.rows.iter().map(|p| p.uid.clone()).collect(),
                    deadline: state.room.deadline,
                    room: state.room,
                };
                if let Some(generation) = lookup.generation {
                    app.cache.put_room(&cached, generation).await;
                }
                cached
            }
        };
        caller.may_read(&cached.room.creator, &cached.members)?;
        ok(msg::ROOM_FETCHED, cached.room)
    })
    .await
}

/// List rooms
///
/// Newest first, with the seed's `limit`/`offset` paging or a keyset `cursor` (a previous
/// page's `next_cursor`) for deep pages. A user token lists only the rooms it is in.
#[utoipa::path(
    get, path = "/api/rooms", tag = "rooms", operation_id = "listRooms",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100,
            description = "Rooms per page, 1-100 (default 10)."),
        ("offset" = Option<i64>, Query, minimum = 0, maximum = 2147483647,
            description = "Rooms to skip (not with cursor)."),
        ("cursor" = Option<String>, Query,
            description = "A previous page's next_cursor (not with offset)."),
        ("status" = Option<RoomStatus>, Query, description = "Only rooms in this status."),
        ("creator" = Option<crate::openapi::Name>, Query, description = "Only rooms this uid created."),
        ("uid" = Option<crate::openapi::Name>, Query, description = "Only rooms this uid has a row in."),
        ("source_channel_id" = Option<String>, Query, max_length = 100,
            description = "Only rooms of this channel."),
    ),
    responses(
        (status = 200, description = "获取房间列表成功 (Rooms listed)", body = ListedRooms),
    )
)]
pub async fn list_rooms(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("list-rooms", &req, async {
        let caller = app.caller(&req)?;
        let page = validate::page(
            query_param(&req, "limit").as_deref(),
            query_param(&req, "offset").as_deref(),
            query_param(&req, "cursor").as_deref(),
        )?;
        let mut filter = RoomFilter {
            status: match query_param(&req, "status") {
                Some(text) => Some(
                    RoomStatus::from_code(validate::integer("status", &text)?)
                        .ok_or_else(|| ApiError::invalid("status must be 0, 1, 2 or 3"))?,
                ),
                None => None,
            },
            creator: checked_name(query_param(&req, "creator"), "creator")?,
            uid: checked_name(query_param(&req, "uid"), "uid")?,
            source_channel_id: query_param(&req, "source_channel_id"),
        };
        if let Some(channel) = &filter.source_channel_id {
            validate::source_channel_id(channel)?;
        }
        // A user sees only their own call history.
        if let Some(me) = caller.uid() {
            filter.uid = Some(me.to_owned());
        }
        let now = Now::current();
        // A status filter (and its total) selects rooms by their stored status: write down
        // what the deadlines did first (nothing when the sweeper keeps up: one indexed
        // query). Without one, the listed rooms are brought up to `now` as they are read.
        if filter.status.is_some() {
            crate::sweeper::write_down_deadlines(app, now).await?;
        }
        let listed = app.store.list_rooms(&filter, page, now).await?;
        ok(msg::ROOMS_LISTED, listed)
    })
    .await
}

fn checked_name(value: Option<String>, field: &str) -> Result<Option<String>, ApiError> {
    if let Some(v) = &value {
        validate::name(field, v)?;
    }
    Ok(value)
}

/// Set a room's status
///
/// 1 starts a room, 2 ends it, 3 cancels one that has not started (README: room
/// transitions). The creator or a service only.
#[utoipa::path(
    put, path = "/api/rooms/{room_name}/status", tag = "rooms", operation_id = "updateRoomStatus",
    params(("room_name" = String, Path, description = "The room's name, percent-encoded.")),
    request_body = RoomStatusBody,
    responses(
        (status = 200, description = "更新房间状态成功 (Room status updated)", body = Room),
        (status = 404, description = "room_not_found"),
        (status = 409, description = "invalid_transition: not allowed from the room's \
            status (data.from, data.to)"),
    )
)]
pub async fn update_room_status(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("update-room-status", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::ROOM_STATUS, "room_name")?;
        note(&room_name, caller.uid());
        let body: RoomStatusBody = parse_json(&req)?;
        let status = RoomStatus::from_code(body.status)
            .ok_or_else(|| ApiError::invalid("status must be 0, 1, 2 or 3"))?;
        let result = app
            .store
            .set_room_status(&room_name, status, Now::current(), |state| {
                caller.may_manage(&state.room.creator)
            })
            .await;
        let result = app.forget_on_failure(&room_name, result).await?;
        app.after_change(&room_name, result.changed, result.finalised)
            .await;
        ok(msg::ROOM_STATUS_UPDATED, result.room)
    })
    .await
}

/// End a room
///
/// Everyone joined hangs up, every invite still ringing stops; ending a final room again is
/// 200 unchanged. The creator or a service only.
#[utoipa::path(
    post, path = "/api/rooms/{room_name}/end", tag = "rooms", operation_id = "endRoom",
    params(("room_name" = String, Path, description = "The room's name, percent-encoded.")),
    responses(
        (status = 200, description = "结束房间成功 (Room ended)", body = Room),
        (status = 404, description = "room_not_found"),
    )
)]
pub async fn end_room(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("end-room", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::ROOM_END, "room_name")?;
        note(&room_name, caller.uid());
        keyed(app, &req, routes::ROOM_END, &caller, async |key| {
            let reply = |r: &RoomResult| key.render(ok(msg::ROOM_ENDED, &r.room));
            let result = app
                .store
                .end_room_sealed(
                    &room_name,
                    Now::current(),
                    |state| caller.may_manage(&state.room.creator),
                    key.seal(&reply),
                )
                .await;
            let (result, sealed) = app.forget_on_failure(&room_name, result).await?;
            app.after_change(&room_name, result.changed, result.finalised)
                .await;
            key.answer(sealed, || ok(msg::ROOM_ENDED, &result.room))
        })
        .await
    })
    .await
}
