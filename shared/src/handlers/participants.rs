use lambda_http::{Body, Error, Request, Response};
use serde::{Deserialize, Serialize};

use crate::app::{App, Limited};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::handlers::routes;
use crate::http::{Success, msg, note, ok, parse_json, path_param, respond};
use crate::idempotency::keyed;
use crate::model::{Now, Participant, ParticipantStatus};
use crate::rules::{Action, CallState};
use crate::store::{ActionResult, Invited};
use crate::validate;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"room_name": "meeting_001", "uid": "user_002"}))]
struct RoomAndUid {
    #[schema(
        min_length = 1,
        max_length = 40,
        pattern = r"^(?!\.\.?$)[^\s/\x00-\x1f\x7f-\x9f]+$"
    )]
    room_name: String,
    /// A user token may only name itself.
    #[schema(
        min_length = 1,
        max_length = 40,
        pattern = r"^(?!\.\.?$)[^\s/\x00-\x1f\x7f-\x9f]+$"
    )]
    uid: String,
}

impl RoomAndUid {
    fn validated(self) -> Result<Self, ApiError> {
        validate::name("room_name", &self.room_name)?;
        validate::name("uid", &self.uid)?;
        Ok(self)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"uids": ["user_003", "user_004"]}))]
struct InviteBody {
    /// 1–100 uids to ring (again).
    #[schema(value_type = Vec<crate::openapi::Name>, min_items = 1, max_items = 100)]
    uids: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"status": 1}))]
struct ParticipantStatusBody {
    /// 0 邀请中 (the creator rings again), 1 已加入, 2 已拒绝, 3 已挂断, 4 超时未加入, 5 通话中未接听,
    /// 6 已取消 (the creator cancels an invite). A user sets its own row to 1, 2 or 3.
    #[schema(value_type = ParticipantStatus)]
    status: i64,
}

/// The row, a fresh LiveKit token for it and where to connect.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Joined<'a> {
    id: i64,
    room_name: &'a str,
    uid: &'a str,
    token: String,
    status: ParticipantStatus,
    livekit_url: &'a str,
    join_time: i64,
}

/// Join a room
///
/// A fresh token every time, even for a repeated join. An invite-only room (`invite_on` 1)
/// takes only uids that were rung; a uid ringing or talking in another call is refused.
#[utoipa::path(
    post, path = "/api/participants/join", tag = "participants", operation_id = "joinRoom",
    request_body = RoomAndUid,
    responses(
        (status = 200, description = "加入房间成功 (Joined room)", body = Joined,
            links(("leaveRoom" = (operation_id = "leaveRoom",
                request_body = json!({"room_name": "$response.body#/data/room_name",
                    "uid": "$response.body#/data/uid"}))))),
        (status = 403, description = "participant_not_invited: an invite-only room and this \
            uid was not rung; participant_removed: taken out of this call before; forbidden"),
        (status = 404, description = "room_not_found"),
        (status = 409, description = "room_not_active: the room ended or was cancelled \
            (or nobody answered before the ring deadline); room_full; participant_in_call: \
            the uid rings or talks in another call (data.busy_uids)"),
        (status = 429, description = "rate_limited (Retry-After)"),
    )
)]
pub async fn join_room(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("join-room", &req, async {
        let caller = app.caller(&req)?;
        let body = parse_json::<RoomAndUid>(&req)?.validated()?;
        note(&body.room_name, Some(&body.uid));
        caller.may_act_as(&body.uid)?;
        keyed(app, &req, routes::JOIN, &caller, async |key| {
            app.rate_limit(Limited::Join, caller.acting_uid(&body.uid))
                .await?;
            let reply = |r: &ActionResult| key.render(joined(app, r, &body.uid));
            let result = app
                .store
                .participant_action_sealed(
                    &body.room_name,
                    &body.uid,
                    Action::Join,
                    Now::current(),
                    |_| Ok(()),
                    key.seal(&reply),
                )
                .await;
            let (result, sealed) = app.forget_on_failure(&body.room_name, result).await?;
            app.after_change(&body.room_name, result.changed, result.finalised)
                .await;
            key.answer(sealed, || joined(app, &result, &body.uid))
        })
        .await
    })
    .await
}

/// Join's answer, with a token minted here (so a keyed request stores the very token it hands
/// out).
fn joined(app: &App, result: &ActionResult, uid: &str) -> Result<Success, ApiError> {
    let token = app.livekit.token(&result.room, uid)?;
    let row = &result.participant;
    ok(
        msg::JOINED,
        Joined {
            id: row.id,
            room_name: &row.room_name,
            uid: &row.uid,
            token,
            status: row.status,
            livekit_url: &app.livekit.client_url,
            join_time: row.join_time,
        },
    )
}

/// Leave a room
///
/// The updated row; leaving again is 200 unchanged. The last but one to leave ends the call.
#[utoipa::path(
    post, path = "/api/participants/leave", tag = "participants", operation_id = "leaveRoom",
    request_body = RoomAndUid,
    responses(
        (status = 200, description = "离开房间成功 (Left room)", body = Participant),
        (status = 404, description = "room_not_found; participant_not_found: the uid has no \
            row in the room"),
        (status = 409, description = "room_not_active; invalid_transition: the row cannot \
            move to hung up from where it is (data.from, data.to)"),
    )
)]
pub async fn leave_room(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("leave-room", &req, async {
        let caller = app.caller(&req)?;
        let body = parse_json::<RoomAndUid>(&req)?.validated()?;
        note(&body.room_name, Some(&body.uid));
        caller.may_act_as(&body.uid)?;
        keyed(app, &req, routes::LEAVE, &caller, async |key| {
            let reply = |r: &ActionResult| key.render(ok(msg::LEFT, &r.participant));
            let result = app
                .store
                .participant_action_sealed(
                    &body.room_name,
                    &body.uid,
                    Action::Leave,
                    Now::current(),
                    |_| Ok(()),
                    key.seal(&reply),
                )
                .await;
            let (result, sealed) = app.forget_on_failure(&body.room_name, result).await?;
            app.after_change(&body.room_name, result.changed, result.finalised)
                .await;
            key.answer(sealed, || ok(msg::LEFT, &result.participant))
        })
        .await
    })
    .await
}

/// List a room's participants
///
/// Every row as of now (a ring deadline that has passed shows as 4).
#[utoipa::path(
    get, path = "/api/rooms/{room_name}/participants", tag = "participants",
    operation_id = "listParticipants",
    params(("room_name" = String, Path, description = "The room's name, percent-encoded.")),
    responses(
        (status = 200, description = "获取参与者列表成功 (Participants listed)",
            body = Vec<Participant>),
        (status = 404, description = "room_not_found"),
    )
)]
pub async fn list_participants(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("list-participants", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::ROOM_PARTICIPANTS, "room_name")?;
        note(&room_name, caller.uid());
        let state = app
            .store
            .load(&room_name, Now::current())
            .await?
            .ok_or(ApiError::RoomNotFound)?;
        let members: Vec<String> = state.rows.iter().map(|p| p.uid.clone()).collect();
        caller.may_read(&state.room.creator, &members)?;
        ok(msg::PARTICIPANTS_LISTED, state.rows)
    })
    .await
}

/// Invite participants
///
/// Rings the uids (again); the rows concerned come back, busy invitees as status 5. The
/// creator or a service only.
#[utoipa::path(
    post, path = "/api/rooms/{room_name}/invite", tag = "participants",
    operation_id = "inviteParticipants",
    params(("room_name" = String, Path, description = "The room's name, percent-encoded.")),
    request_body = InviteBody,
    responses(
        (status = 200, description = "邀请参与者成功 (Participants invited)",
            body = Vec<Participant>),
        (status = 404, description = "room_not_found"),
        (status = 409, description = "room_not_active; room_full: more live rows than \
            max_participants"),
        (status = 429, description = "rate_limited (Retry-After)"),
    )
)]
pub async fn invite_participants(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("invite-participants", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::ROOM_INVITE, "room_name")?;
        note(&room_name, caller.uid());
        let body: InviteBody = parse_json(&req)?;
        if body.uids.is_empty() || body.uids.len() > validate::LIMIT_MAX as usize {
            return Err(ApiError::invalid("uids must name 1-100 people"));
        }
        validate::names("uids", &body.uids)?;
        keyed(app, &req, routes::ROOM_INVITE, &caller, async |key| {
            // A user is counted as itself; a service, which acts for the creator, per room.
            app.rate_limit(Limited::Invite, caller.uid().unwrap_or(&room_name))
                .await?;
            let reply = |(_, rows, _): &Invited| key.render(ok(msg::INVITED, rows));
            let invited = app
                .store
                .invite_sealed(
                    &room_name,
                    &body.uids,
                    Now::current(),
                    |state| caller.may_manage(&state.room.creator),
                    key.seal(&reply),
                )
                .await;
            let ((_, rows, finalised), sealed) = app.forget_on_failure(&room_name, invited).await?;
            app.after_change(&room_name, true, finalised).await;
            key.answer(sealed, || ok(msg::INVITED, &rows))
        })
        .await
    })
    .await
}

/// Set a participant's status
///
/// Moves a row along the participant lifecycle (README: participant transitions).
#[utoipa::path(
    put, path = "/api/rooms/{room_name}/participants/{uid}/status", tag = "participants",
    operation_id = "updateParticipantStatus",
    params(
        ("room_name" = String, Path, description = "The room's name, percent-encoded."),
        ("uid" = String, Path, description = "The participant's uid, percent-encoded."),
    ),
    request_body = ParticipantStatusBody,
    responses(
        (status = 200, description = "更新参与者状态成功 (Participant status updated)",
            body = Participant),
        (status = 403, description = "forbidden: a user sets only its own row to 1, 2 or \
            3, and the creator rings (0) or cancels (6) others; participant_not_invited; \
            participant_removed"),
        (status = 404, description = "room_not_found; participant_not_found"),
        (status = 409, description = "invalid_transition (data.from, data.to); \
            room_not_active; room_full; participant_in_call (data.busy_uids)"),
    )
)]
pub async fn update_participant_status(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("update-participant-status", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::PARTICIPANT_STATUS, "room_name")?;
        let uid = path_param(&req, routes::PARTICIPANT_STATUS, "uid")?;
        note(&room_name, Some(&uid));
        let body: ParticipantStatusBody = parse_json(&req)?;
        let status = ParticipantStatus::from_code(body.status)
            .ok_or_else(|| ApiError::invalid("status must be between 0 and 6"))?;
        let action = Action::for_target(status);
        let result = app
            .store
            .participant_action(&room_name, &uid, action, Now::current(), |state| {
                may_set_status(&caller, state, &uid, status)
            })
            .await;
        let result = app.forget_on_failure(&room_name, result).await?;
        app.after_change(&room_name, result.changed, result.finalised)
            .await;
        ok(msg::PARTICIPANT_STATUS_UPDATED, result.participant)
    })
    .await
}

/// Remove a participant
///
/// The creator or a service takes someone out of the call (3, `removed`); LiveKit is asked to
/// disconnect them after the commit, and they cannot join this room again through the API.
#[utoipa::path(
    post, path = "/api/rooms/{room_name}/participants/{uid}/remove", tag = "participants",
    operation_id = "removeParticipant",
    params(
        ("room_name" = String, Path, description = "The room's name, percent-encoded."),
        ("uid" = String, Path, description = "The participant's uid, percent-encoded."),
    ),
    responses(
        (status = 200, description = "移出参与者成功 (Participant removed)", body = Participant),
        (status = 404, description = "room_not_found; participant_not_found"),
        (status = 409, description = "room_not_active; invalid_transition: the row is \
            not in the call (data.from, data.to)"),
    )
)]
pub async fn remove_participant(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("remove-participant", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::PARTICIPANT_REMOVE, "room_name")?;
        let uid = path_param(&req, routes::PARTICIPANT_REMOVE, "uid")?;
        note(&room_name, Some(&uid));
        keyed(
            app,
            &req,
            routes::PARTICIPANT_REMOVE,
            &caller,
            async |key| {
                let reply =
                    |r: &ActionResult| key.render(ok(msg::PARTICIPANT_REMOVED, &r.participant));
                let result = app
                    .store
                    .participant_action_sealed(
                        &room_name,
                        &uid,
                        Action::Remove,
                        Now::current(),
                        |state| caller.may_manage(&state.room.creator),
                        key.seal(&reply),
                    )
                    .await;
                let (result, sealed) = app.forget_on_failure(&room_name, result).await?;
                app.after_change(&room_name, result.changed, result.finalised)
                    .await;
                if result.changed {
                    app.remove_from_livekit(&room_name, &uid).await;
                }
                key.answer(sealed, || ok(msg::PARTICIPANT_REMOVED, &result.participant))
            },
        )
        .await
    })
    .await
}

/// Users set their own row to 1, 2 or 3; the creator may also ring (0) or cancel (6) others;
/// 4 and 5 are the service's.
fn may_set_status(
    caller: &Caller,
    state: &CallState,
    uid: &str,
    status: ParticipantStatus,
) -> Result<(), ApiError> {
    let Caller::User { uid: me } = caller else {
        return Ok(());
    };
    let own = me == uid;
    let creator = *me == state.room.creator;
    let allowed = match status {
        ParticipantStatus::Joined | ParticipantStatus::Rejected | ParticipantStatus::HungUp => own,
        ParticipantStatus::Ringing | ParticipantStatus::Cancelled => creator && !own,
        ParticipantStatus::Missed | ParticipantStatus::Busy => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}
