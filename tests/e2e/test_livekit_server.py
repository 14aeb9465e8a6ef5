"""LiveKit's server API as the service calls it, over HTTP on both backends: the jobs run with
LIVEKIT_URL at the RoomService stub (livekit_stub.py), which checks every call's token as
LiveKit does (signed with the API secret, issued by the API key, in date, the method's grant)
and records it. Ending a call deletes its LiveKit room, removing a participant removes exactly
that identity from exactly that room, the sweeper's reconcile asks ListRooms; with credentials
LiveKit refuses, the work stays queued and the sweeper retries it. Each scenario leaves no
transaction open and no row locked (`clean_after`)."""

from __future__ import annotations

import datetime as dt
import time
from urllib.parse import quote

# Longer than the sweeper's reconcile grace (120 s) and older than any room a session leaves
# running, so the backdated rooms come first in the sweeper's batch.
QUIET_FOR = dt.timedelta(days=1)


def create(service, room, creator, uids):
    # Rings long enough for the joins even when each is a function's first (slow) invocation.
    body = {"room_name": room, "creator": creator, "uids": uids, "invite_on": 1,
            "max_participants": 5, "ring_timeout_seconds": 180}
    return service.request("POST", "/api/rooms", body).data


def running_call(service, livekit, room, creator, uids):
    """A call everyone answered, as LiveKit sees it too (the room with its participants)."""
    create(service, room, creator, uids)
    for uid in uids:
        service.request("POST", "/api/participants/join", {"room_name": room, "uid": uid}).data
    assert service.db.room_status(room) == 1, service.db.statuses(room)
    livekit.seed_room(room, [creator, *uids])


def remove(service, room, uid):
    return service.request("POST", f"/api/rooms/{quote(room)}/participants/{quote(uid)}/remove")


def pending(service, table, room):
    return service.db.rows(f"SELECT attempts FROM {table} WHERE room_name = ?", room)


def backdate(service, room, by: dt.timedelta) -> None:
    """The room's last change `by` earlier, as if it had been quiet that long (written from
    another connection, in the format each backend keeps)."""
    (value,), = service.db.rows("SELECT updated_at FROM call_room WHERE room_name = ?", room)
    at = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    earlier = (at - by).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    sql = "UPDATE call_room SET updated_at = ? WHERE room_name = ?"
    if service.backend == "mariadb":
        conn = service.db._mariadb()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), (earlier, room))
        finally:
            conn.close()
    else:
        conn = service.db._sqlite()
        try:
            conn.execute(sql, (earlier, room))
        finally:
            conn.close()


def wait_until(check, what: str, timeout: float = 30.0):
    """Polls a database condition the sweeper brings about (it runs every second)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def test_ending_a_call_deletes_its_livekit_room_with_a_room_create_grant(
        clean_after, names, livekit_server):
    service, livekit = clean_after, livekit_server
    room, caller, callee = names("end"), names("caller"), names("callee")
    running_call(service, livekit, room, caller, [callee])

    service.request("POST", f"/api/rooms/{quote(room)}/end").data
    livekit.wait_for(
        lambda calls: any(c.method == "DeleteRoom" and c.touches([room]) for c in calls),
        message=f"DeleteRoom {room}")
    deletes = livekit.calls("DeleteRoom", [room])
    assert [(c.rooms, c.status, c.refused) for c in deletes] == [([room], 200, None)], deletes
    assert deletes[0].grants.get("roomCreate") is True, deletes[0]
    assert livekit.participants(room) == set(), "LiveKit's room is gone"
    assert pending(service, "livekit_teardown", room) == [], "done, not queued"
    assert livekit.refused([room]) == []


def test_removing_a_participant_removes_that_identity_from_that_room_only(
        clean_after, names, livekit_server):
    service, livekit = clean_after, livekit_server
    room, other = names("kick"), names("beside")
    caller, stays, removed = names("caller"), names("stays"), names("removed")
    running_call(service, livekit, room, caller, [stays, removed])
    running_call(service, livekit, other, names("caller2"), [names("callee2")])

    assert remove(service, room, removed).data["reason"] == "removed"
    livekit.wait_for(
        lambda calls: any(c.method == "RemoveParticipant" and c.touches([room]) for c in calls),
        message=f"RemoveParticipant in {room}")
    removals = livekit.calls("RemoveParticipant", [room, other])
    assert [(c.rooms, c.identity, c.status) for c in removals] == [([room], removed, 200)], removals
    # The stub accepts roomAdmin only for the room the request names.
    assert removals[0].grants.get("roomAdmin") is True and removals[0].grants.get("room") == room
    assert livekit.participants(room) == {caller, stays}
    assert service.db.room_status(room) == 1, "two are still talking"
    assert pending(service, "livekit_removal", room) == []
    assert livekit.calls("DeleteRoom", [room, other]) == []
    assert livekit.refused([room, other]) == []


def test_the_sweeper_ends_a_call_livekit_no_longer_has_and_keeps_the_others(
        clean_after, names, livekit_server):
    service, livekit = clean_after, livekit_server
    kept, gone = names("kept"), names("gone")
    for room in (kept, gone):
        running_call(service, livekit, room, names(f"{room}_a"), [names(f"{room}_b")])
    livekit.vanish(gone)
    for room in (kept, gone):
        backdate(service, room, QUIET_FOR)

    livekit.wait_for(
        lambda calls: any(c.method == "ListRooms" and kept in c.rooms and gone in c.rooms
                          for c in calls),
        message=f"ListRooms asking about {kept} and {gone}")
    asked = livekit.calls("ListRooms", [kept, gone])
    assert all(c.status == 200 and c.grants.get("roomList") is True for c in asked), asked
    wait_until(lambda: service.db.room_status(gone) == 2, f"{gone} ended")
    (reason,), = service.db.rows("SELECT end_reason FROM call_room WHERE room_name = ?", gone)
    assert reason == "gone_from_livekit"
    assert service.db.room_status(kept) == 1, "LiveKit still has it"
    assert livekit.calls("DeleteRoom", [gone]) == [], "LiveKit has no such room to delete"
    assert livekit.refused([kept, gone]) == []
    # The kept call ends through the API, as any other.
    service.request("POST", f"/api/rooms/{quote(kept)}/end").data


def test_refused_credentials_leave_the_teardown_and_removal_queued_until_livekit_accepts(
        clean_after, names, livekit_server):
    """LiveKit checking tokens with another secret refuses the service's calls (401). The call
    changes all the same; its DeleteRoom and RemoveParticipant stay queued and the sweeper tries
    them again every second (up to 10 refused tries, then it gives them up: see the Rust test
    a_livekit_that_refuses_our_credentials_leaves_the_work_queued). Once LiveKit accepts the
    credentials again, the next try goes through and the queue empties."""
    service, livekit = clean_after, livekit_server
    room, caller = names("refused"), names("caller")
    stays, removed = names("stays"), names("removed")
    running_call(service, livekit, room, caller, [stays, removed])

    livekit.use_secret("another-secret-livekit-was-configured-with")
    try:
        assert remove(service, room, removed).data["reason"] == "removed"
        service.request("POST", f"/api/rooms/{quote(room)}/end").data
        assert service.db.room_status(room) == 2, "ended all the same"
        # The inline tries, then at least one retry of each by the sweeper: all refused.
        livekit.wait_for(
            lambda calls: all(
                sum(1 for c in calls if c.method == m and c.touches([room]) and c.status == 401) >= 2
                for m in ("DeleteRoom", "RemoveParticipant")),
            message=f"two refused DeleteRoom and RemoveParticipant for {room}")
        assert pending(service, "livekit_teardown", room), "the teardown is still queued"
        assert pending(service, "livekit_removal", room), "the removal is still queued"
        assert removed in livekit.participants(room), "LiveKit did nothing it was asked"
    finally:
        livekit.use_secret(None)
    refused = livekit.refused([room])
    assert refused and all(c.refused.startswith("unauthenticated") for c in refused), refused
    assert {c.method for c in refused} == {"DeleteRoom", "RemoveParticipant"}, refused

    wait_until(lambda: not pending(service, "livekit_teardown", room)
               and not pending(service, "livekit_removal", room), "the queue emptied")
    accepted = [c for c in livekit.calls(rooms=[room]) if c.accepted]
    assert {c.method for c in accepted} == {"DeleteRoom", "RemoveParticipant"}, accepted
    assert livekit.participants(room) == set(), "deleted in LiveKit in the end"
