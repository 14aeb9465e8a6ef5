use lambda_http::{Body, Error, Request, Response};
use serde::{Deserialize, Serialize};

use crate::app::{App, Limited};
use crate::cache::CachedRoom;
use crate::error::ApiError;
use crate::handlers::routes;
use crate::http::{msg, note, ok, parse_json, path_param, query_param, respond};
use crate::model::{CallLimits, Now, RoomStatus};
use crate::rules;
use crate::store::{NewRoom, RoomFilter};
use crate::validate;

#[derive(Debug, Deserialize)]
struct CreateRoom {
    #[serde(default)]
    source_channel_id: Option<String>,
    #[serde(default)]
    source_channel_type: Option<i64>,
    creator: String,
    #[serde(default)]
    room_name: Option<String>,
    #[serde(default)]
    call_type: Option<i64>,
    #[serde(default)]
    invite_on: Option<i64>,
    #[serde(default)]
    max_participants: Option<i64>,
    #[serde(default)]
    uids: Option<Vec<String>>,
    #[serde(default)]
    ring_timeout_seconds: Option<i64>,
    #[serde(default)]
    max_duration_seconds: Option<i64>,
    #[serde(default)]
    solo_timeout_seconds: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Created<'a> {
    id: i64,
    room_name: &'a str,
    token: String,
    livekit_url: &'a str,
    status: RoomStatus,
    #[serde(with = "crate::model::rfc3339")]
    created_at: chrono::NaiveDateTime,
    max_participants: i32,
    ring_timeout_seconds: i32,
    max_duration_seconds: i32,
    solo_timeout_seconds: i32,
    participants: &'a [crate::model::Participant],
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    status: i64,
}

/// POST /api/rooms
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
        app.rate_limit(Limited::Create, caller.acting_uid(&new.creator))
            .await?;
        let invitees = rules::invitees(&new.creator, &uids);
        let state = app
            .store
            .create_room(&new, &invitees, Now::current())
            .await?;
        // room.created and the invites reach the app backend before the creator hears back.
        app.deliver_events(std::slice::from_ref(&state.room.room_name))
            .await;
        let token = app.livekit.token(&state.room, &new.creator)?;
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
    })
    .await
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

/// GET /api/rooms/{room_name}: from the cache when it has the room as it is now, else one
/// query (a passed deadline is applied by the rules either way).
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
                app.cache.put_room(&cached, lookup.generation).await;
                cached
            }
        };
        caller.may_read(&cached.room.creator, &cached.members)?;
        ok(msg::ROOM_FETCHED, cached.room)
    })
    .await
}

/// GET /api/rooms?limit=&offset=&cursor=&status=&creator=&uid=&source_channel_id=
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

/// PUT /api/rooms/{room_name}/status
pub async fn update_room_status(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("update-room-status", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::ROOM_STATUS, "room_name")?;
        note(&room_name, caller.uid());
        let body: StatusBody = parse_json(&req)?;
        let status = RoomStatus::from_code(body.status)
            .ok_or_else(|| ApiError::invalid("status must be 0, 1, 2 or 3"))?;
        let result = app
            .store
            .set_room_status(&room_name, status, Now::current(), |state| {
                caller.may_manage(&state.room.creator)
            })
            .await?;
        app.after_change(&room_name, result.changed, result.finalised)
            .await;
        ok(msg::ROOM_STATUS_UPDATED, result.room)
    })
    .await
}

/// POST /api/rooms/{room_name}/end
pub async fn end_room(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("end-room", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::ROOM_END, "room_name")?;
        note(&room_name, caller.uid());
        let result = app
            .store
            .end_room(&room_name, Now::current(), |state| {
                caller.may_manage(&state.room.creator)
            })
            .await?;
        app.after_change(&room_name, result.changed, result.finalised)
            .await;
        ok(msg::ROOM_ENDED, result.room)
    })
    .await
}
