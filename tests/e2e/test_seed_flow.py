"""The seed's eleven endpoints, driven over HTTP with the seed's own request examples.

One call from create to end, ordered so every step is legal under DESIGN.md's lifecycle:
create (room 0, creator joined) → get → list → invite user_002/user_003 (ringing) →
PUT room status 1 (start, while the room is at 0) → join user_002 → list participants →
PUT user_003 status 2 (reject; status 1 would exceed the seed room's max_participants of 2)
→ leave user_002 (a two-person call ends when either side leaves: room 2, creator 3) →
end (a final room: 200, unchanged). LiveKit tokens are checked with the Python SDK.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time

import pytest
from livekit import api as lk

ROOM = "meeting_001"
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

# The seed's request examples, verbatim.
SEED_CREATE = {
    "source_channel_id": "channel_123",
    "source_channel_type": 0,
    "creator": "user_001",
    "room_name": "meeting_001",
    "call_type": 1,
    "invite_on": 1,
}
SEED_ROOM_STATUS = {"status": 1}
SEED_INVITE = {"uids": ["user_002", "user_003"]}
SEED_JOIN = {"room_name": "meeting_001", "uid": "user_002"}
SEED_LEAVE = {"room_name": "meeting_001", "uid": "user_002"}

ROOM_FIELDS = {
    "id": int,
    "source_channel_id": str,
    "source_channel_type": int,
    "creator": str,
    "room_name": str,
    "call_type": int,
    "invite_on": int,
    "status": int,
    "created_at": str,
    "updated_at": str,
}
PARTICIPANT_FIELDS = {
    "id": int,
    "room_name": str,
    "uid": str,
    "status": int,
    "join_time": int,
    "leave_time": int,
    "created_at": str,
    "updated_at": str,
}


# --- helpers -----------------------------------------------------------------------------


def ok(reply, msg=None):
    """A success envelope: HTTP 200, code 0, the seed's msg when it gives one; returns data."""
    assert reply.status == 200, reply
    body = reply.json
    assert isinstance(body, dict), f"not a JSON object: {reply}"
    assert body.get("code") == 0, reply
    assert isinstance(body.get("msg"), str) and body["msg"], reply
    if msg is not None:
        assert body["msg"] == msg, reply
    assert "data" in body, reply
    return body["data"]


def has_fields(obj, fields, what):
    assert isinstance(obj, dict), f"{what}: {obj!r}"
    for name, typ in fields.items():
        assert name in obj, f"{what} lacks {name!r}: {obj!r}"
        value = obj[name]
        assert isinstance(value, typ) and not isinstance(value, bool), (
            f"{what}.{name} should be {typ.__name__}, got {value!r}"
        )


def timestamp(text, since, what):
    """RFC 3339 UTC with Z, like 2024-01-15T10:30:00Z, and a plausible instant."""
    assert RFC3339_Z.match(text), f"{what} {text!r} is not like 2024-01-15T10:30:00Z"
    at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    now = dt.datetime.now(dt.timezone.utc)
    assert since - dt.timedelta(seconds=5) <= at <= now + dt.timedelta(seconds=5), (
        f"{what} {text} is not between the test start {since} and now {now}"
    )
    return at


def millis(value, since_ms, what):
    """Unix milliseconds (not seconds) between the test start and now."""
    now_ms = int(time.time() * 1000)
    assert isinstance(value, int) and not isinstance(value, bool), f"{what}: {value!r}"
    assert since_ms - 5000 <= value <= now_ms + 5000, (
        f"{what}={value} is not Unix ms between {since_ms} and {now_ms}"
    )


def participant_rows(data, since):
    assert isinstance(data, list), f"participants should be a list: {data!r}"
    rows = {}
    for row in data:
        has_fields(row, PARTICIPANT_FIELDS, "participant")
        assert row["room_name"] == ROOM, row
        timestamp(row["created_at"], since, "participant.created_at")
        timestamp(row["updated_at"], since, "participant.updated_at")
        assert row["uid"] not in rows, f"two rows for {row['uid']}: {data!r}"
        rows[row["uid"]] = row
    return rows


def jwt_payload(token):
    """The claims of a JWT, decoded without a library (the signature is checked elsewhere)."""
    parts = token.split(".")
    assert len(parts) == 3, f"not a JWT: {token[:40]}…"
    padded = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def check_livekit_token(service, token, uid):
    verifier = lk.TokenVerifier(service.livekit_api_key, service.livekit_api_secret)
    claims = verifier.verify(token)
    assert claims.identity == uid
    assert claims.video is not None
    assert claims.video.room == ROOM
    assert claims.video.room_join is True
    # The seed room is a video call (call_type 1): camera and microphone, subscribe, data.
    assert claims.video.can_publish is True
    assert claims.video.can_subscribe is True
    assert claims.video.can_publish_data is True
    assert not claims.video.can_publish_sources, claims.video.can_publish_sources
    # No room-wide powers beyond joining this one room.
    assert not claims.video.room_admin and not claims.video.room_create
    assert not claims.video.room_list

    payload = jwt_payload(token)
    assert payload["iss"] == service.livekit_api_key
    now = time.time()
    assert payload["exp"] > now, "token already expired"
    remaining = payload["exp"] - now
    assert abs(remaining - service.token_ttl_s) <= 120, (
        f"token lives {remaining:.0f}s, expected about {service.token_ttl_s}s"
    )

    # The same token under a wrong secret, or a wrong key, is rejected.
    with pytest.raises(Exception) as wrong_secret:
        lk.TokenVerifier(service.livekit_api_key, "not-the-secret-of-this-service-0000000000").verify(token)
    assert type(wrong_secret.value).__name__ == "InvalidSignatureError", wrong_secret.value
    with pytest.raises(Exception) as wrong_key:
        lk.TokenVerifier("not-the-key", service.livekit_api_secret).verify(token)
    assert type(wrong_key.value).__name__ == "InvalidIssuerError", wrong_key.value
    return payload


# --- the flow ----------------------------------------------------------------------------


def test_seed_flow(service):
    since = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    since_ms = int(since.timestamp() * 1000)
    req = service.request

    # 1. GET /health: no auth, the seed's {"status":"ok"} (plus the database's word).
    health = req("GET", "/health", token=None)
    assert health.status == 200, health
    assert health.json["status"] == "ok", health
    assert health.json.get("database") == "ok", health

    # 2. POST /api/rooms with the seed body.
    created = ok(req("POST", "/api/rooms", SEED_CREATE), "房间创建成功")
    has_fields(
        created,
        {"id": int, "room_name": str, "token": str, "livekit_url": str, "status": int,
         "created_at": str},
        "create",
    )
    assert created["id"] >= 1
    assert created["room_name"] == ROOM
    assert created["status"] == 0
    assert re.match(r"^(https?|wss?)://", created["livekit_url"]), created["livekit_url"]
    created_at = timestamp(created["created_at"], since, "create.created_at")
    check_livekit_token(service, created["token"], "user_001")

    # 3. GET /api/rooms/meeting_001
    room = ok(req("GET", f"/api/rooms/{ROOM}"), "获取房间信息成功")
    has_fields(room, ROOM_FIELDS, "room")
    for key, value in SEED_CREATE.items():
        assert room[key] == value, f"room.{key}: {room[key]!r} != {value!r}"
    assert room["id"] == created["id"]
    assert room["status"] == 0
    assert room["created_at"] == created["created_at"]
    assert timestamp(room["updated_at"], since, "room.updated_at") >= created_at

    # 4. GET /api/rooms?limit=10&offset=0
    listed = ok(req("GET", "/api/rooms?limit=10&offset=0"), "获取房间列表成功")
    assert isinstance(listed, dict), listed
    assert isinstance(listed.get("rooms"), list), listed
    assert isinstance(listed.get("total"), int) and not isinstance(listed["total"], bool)
    assert listed["total"] >= len(listed["rooms"]) >= 1, listed
    for r in listed["rooms"]:
        has_fields(r, ROOM_FIELDS, "listed room")
    mine = [r for r in listed["rooms"] if r["room_name"] == ROOM]
    assert len(mine) == 1, listed
    assert mine[0] == room, "the list shows the room as GET does"

    # 5. POST /api/rooms/meeting_001/invite (invite_on 1: user_002 must be invited to join).
    invited = ok(req("POST", f"/api/rooms/{ROOM}/invite", SEED_INVITE))
    rows = participant_rows(invited, since)
    assert set(rows) == {"user_002", "user_003"}, invited
    for uid in ("user_002", "user_003"):
        assert rows[uid]["status"] == 0, rows[uid]  # ringing
        assert rows[uid]["join_time"] == 0 and rows[uid]["leave_time"] == 0, rows[uid]

    # 6. PUT /api/rooms/meeting_001/status {"status":1}: start, from 0.
    started = ok(req("PUT", f"/api/rooms/{ROOM}/status", SEED_ROOM_STATUS))
    has_fields(started, ROOM_FIELDS, "room after status PUT")
    assert started["room_name"] == ROOM and started["status"] == 1, started

    # 7. POST /api/participants/join
    joined = ok(req("POST", "/api/participants/join", SEED_JOIN), "加入房间成功")
    has_fields(
        joined, {"id": int, "room_name": str, "uid": str, "token": str, "status": int}, "join"
    )
    assert joined["room_name"] == ROOM and joined["uid"] == "user_002", joined
    assert joined["status"] == 1, joined
    assert isinstance(joined.get("livekit_url"), str) and joined["livekit_url"], joined
    assert joined["livekit_url"] == created["livekit_url"]
    check_livekit_token(service, joined["token"], "user_002")
    assert joined["token"] != created["token"]

    # 8. GET /api/rooms/meeting_001/participants
    people = ok(req("GET", f"/api/rooms/{ROOM}/participants"), "获取参与者列表成功")
    rows = participant_rows(people, since)
    assert set(rows) == {"user_001", "user_002", "user_003"}, people
    assert rows["user_001"]["status"] == 1, rows["user_001"]  # the creator joined on create
    millis(rows["user_001"]["join_time"], since_ms, "creator join_time")
    assert rows["user_002"]["status"] == 1, rows["user_002"]
    assert rows["user_002"]["id"] == joined["id"]
    millis(rows["user_002"]["join_time"], since_ms, "user_002 join_time")
    assert rows["user_002"]["leave_time"] == 0, rows["user_002"]
    assert rows["user_003"]["status"] == 0, rows["user_003"]
    assert rows["user_003"]["join_time"] == 0, rows["user_003"]

    # 9. PUT /api/rooms/meeting_001/participants/user_003/status {"status":2}: user_003 rejects.
    rejected = ok(req("PUT", f"/api/rooms/{ROOM}/participants/user_003/status", {"status": 2}))
    has_fields(rejected, PARTICIPANT_FIELDS, "participant after status PUT")
    assert rejected["uid"] == "user_003" and rejected["status"] == 2, rejected
    still = ok(req("GET", f"/api/rooms/{ROOM}"), "获取房间信息成功")
    assert still["status"] == 1, f"two people are still in the call: {still}"

    # 10. POST /api/participants/leave
    left = ok(req("POST", "/api/participants/leave", SEED_LEAVE))
    has_fields(left, PARTICIPANT_FIELDS, "participant after leave")
    assert left["uid"] == "user_002" and left["status"] == 3, left
    millis(left["leave_time"], since_ms, "leave_time")
    assert left["leave_time"] >= left["join_time"] > 0, left

    # A two-person call (nobody ringing) ends when one side leaves.
    after_leave = ok(req("GET", f"/api/rooms/{ROOM}"), "获取房间信息成功")
    assert after_leave["status"] == 2, after_leave

    # 11. POST /api/rooms/meeting_001/end: the room is final already, so 200 and unchanged.
    ended = ok(req("POST", f"/api/rooms/{ROOM}/end"))
    has_fields(ended, ROOM_FIELDS, "room after end")
    assert ended["room_name"] == ROOM and ended["status"] == 2, ended
    assert ended["updated_at"] == after_leave["updated_at"], "ending a final room changes nothing"

    final = participant_rows(
        ok(req("GET", f"/api/rooms/{ROOM}/participants"), "获取参与者列表成功"), since
    )
    assert {uid: r["status"] for uid, r in final.items()} == {
        "user_001": 3,  # hung up when the call ended
        "user_002": 3,
        "user_003": 2,
    }, final
    assert final["user_001"]["leave_time"] > 0, final["user_001"]

    # A final room admits nobody any more.
    again = req("POST", "/api/participants/join", SEED_JOIN)
    assert again.status == 409, again
    assert again.json["error"] == "room_not_active", again
