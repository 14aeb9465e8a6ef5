use lambda_http::{Body, Error, Request, Response};
use serde::{Deserialize, Serialize};

use crate::app::{App, Limited};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::handlers::routes;
use crate::http::{msg, note, ok, parse_json, path_param, respond};
use crate::model::{Now, ParticipantStatus};
use crate::rules::{Action, CallState};
use crate::validate;

#[derive(Debug, Deserialize)]
struct RoomAndUid {
    room_name: String,
    uid: String,
}

impl RoomAndUid {
    fn validated(self) -> Result<Self, ApiError> {
        validate::name("room_name", &self.room_name)?;
        validate::name("uid", &self.uid)?;
        Ok(self)
    }
}

#[derive(Debug, Deserialize)]
struct InviteBody {
    uids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    status: i64,
}

#[derive(Debug, Serialize)]
struct Joined<'a> {
    id: i64,
    room_name: &'a str,
    uid: &'a str,
    token: String,
    status: ParticipantStatus,
    livekit_url: &'a str,
    join_time: i64,
}

/// POST /api/participants/join: a fresh token every time, even for a repeated join.
pub async fn join_room(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("join-room", &req, async {
        let caller = app.caller(&req)?;
        let body = parse_json::<RoomAndUid>(&req)?.validated()?;
        note(&body.room_name, Some(&body.uid));
        caller.may_act_as(&body.uid)?;
        app.rate_limit(Limited::Join, caller.acting_uid(&body.uid))
            .await?;
        let result = app
            .store
            .participant_action(
                &body.room_name,
                &body.uid,
                Action::Join,
                Now::current(),
                |_| Ok(()),
            )
            .await?;
        app.after_change(&body.room_name, result.changed, result.finalised)
            .await;
        let token = app.livekit.token(&result.room, &body.uid)?;
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
    })
    .await
}

/// POST /api/participants/leave: the updated row; leaving again is 200 unchanged.
pub async fn leave_room(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("leave-room", &req, async {
        let caller = app.caller(&req)?;
        let body = parse_json::<RoomAndUid>(&req)?.validated()?;
        note(&body.room_name, Some(&body.uid));
        caller.may_act_as(&body.uid)?;
        let result = app
            .store
            .participant_action(
                &body.room_name,
                &body.uid,
                Action::Leave,
                Now::current(),
                |_| Ok(()),
            )
            .await?;
        app.after_change(&body.room_name, result.changed, result.finalised)
            .await;
        ok(msg::LEFT, result.participant)
    })
    .await
}

/// GET /api/rooms/{room_name}/participants
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

/// POST /api/rooms/{room_name}/invite: the rows concerned, busy invitees as status 5.
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
        // A user is counted as itself; a service, which acts for the creator, per room.
        app.rate_limit(Limited::Invite, caller.uid().unwrap_or(&room_name))
            .await?;
        let (_, rows, finalised) = app
            .store
            .invite(&room_name, &body.uids, Now::current(), |state| {
                caller.may_manage(&state.room.creator)
            })
            .await?;
        app.after_change(&room_name, true, finalised).await;
        ok(msg::INVITED, rows)
    })
    .await
}

/// PUT /api/rooms/{room_name}/participants/{uid}/status
pub async fn update_participant_status(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("update-participant-status", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::PARTICIPANT_STATUS, "room_name")?;
        let uid = path_param(&req, routes::PARTICIPANT_STATUS, "uid")?;
        note(&room_name, Some(&uid));
        let body: StatusBody = parse_json(&req)?;
        let status = ParticipantStatus::from_code(body.status)
            .ok_or_else(|| ApiError::invalid("status must be between 0 and 6"))?;
        let action = Action::for_target(status);
        let result = app
            .store
            .participant_action(&room_name, &uid, action, Now::current(), |state| {
                may_set_status(&caller, state, &uid, status)
            })
            .await?;
        app.after_change(&room_name, result.changed, result.finalised)
            .await;
        ok(msg::PARTICIPANT_STATUS_UPDATED, result.participant)
    })
    .await
}

/// POST /api/rooms/{room_name}/participants/{uid}/remove: the creator or a service takes
/// someone out of the call (3, `removed`); LiveKit is asked to disconnect them after the
/// commit, and they cannot join this room again through the API.
pub async fn remove_participant(app: &App, req: Request) -> Result<Response<Body>, Error> {
    respond("remove-participant", &req, async {
        let caller = app.caller(&req)?;
        let room_name = path_param(&req, routes::PARTICIPANT_REMOVE, "room_name")?;
        let uid = path_param(&req, routes::PARTICIPANT_REMOVE, "uid")?;
        note(&room_name, Some(&uid));
        let result = app
            .store
            .participant_action(&room_name, &uid, Action::Remove, Now::current(), |state| {
                caller.may_manage(&state.room.creator)
            })
            .await?;
        app.after_change(&room_name, result.changed, result.finalised)
            .await;
        if result.changed {
            app.remove_from_livekit(&room_name, &uid).await;
        }
        ok(msg::PARTICIPANT_REMOVED, result.participant)
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
