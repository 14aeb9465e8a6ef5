"""The topology suite: the local main job as deployed (one process per function, the sweeper
invoked on its own schedule), on MariaDB and on SQLite, driven over HTTP through every
lifecycle transition, every refusal decided inside a call transaction, the no-op requests,
races, signed LiveKit webhooks and path names, each checked from the database.

The bug this guards against: a sqlx transaction dropped without commit or rollback (a 409/404
decided inside the call transaction, or a request that changed nothing) left the function's
kept connection inside the transaction, holding its row locks until that function's next
request; the next write to the room from another function waited 50 s (MariaDB 1205). So
every scenario ends with `clean_after` (no transaction of the service open, every row writable
by another process at once), and each refusal and no-op is followed by a write to the same room
through another function that must answer at once.

Scenarios are tables where cases share a shape. Rooms and uids are symbolic ({R}, {A}, …) and
made unique per case by the `names` fixture; in paths they are percent-encoded once.
Every invite rings for RING_TIMEOUT_S (8 s) before the sweeper rings it out, so each scenario
other than the ring-out one finishes well within that.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import quote, unquote

import pytest
from conftest import INNODB_TRX_REFRESH_S, MARIADB_DATABASE, Reply, http_request, livekit_event
from livekit import api as lk

# A write the database can serve at once answers in milliseconds; behind a lock left by a
# dropped transaction it waited 50 s. The client gives up well before that.
QUICK_S = 2.0
CLIENT_TIMEOUT_S = 5.0
# How long the ring-out scenario waits for the sweeper beyond the ring timeout.
RING_OUT_SLACK_S = 12.0

# Which function serves a request (one process each), for failure messages.
ROUTES = (
    ("GET", r"/health", "health"),
    ("GET", r"/api/rooms(\?.*)?", "list-rooms"),
    ("POST", r"/api/rooms", "create-room"),
    ("GET", r"/api/rooms/[^/]+", "get-room"),
    ("PUT", r"/api/rooms/[^/]+/status", "update-room-status"),
    ("POST", r"/api/rooms/[^/]+/end", "end-room"),
    ("GET", r"/api/rooms/[^/]+/participants", "list-participants"),
    ("POST", r"/api/rooms/[^/]+/invite", "invite-participants"),
    ("PUT", r"/api/rooms/[^/]+/participants/[^/]+/status", "update-participant-status"),
    ("POST", r"/api/participants/join", "join-room"),
    ("POST", r"/api/participants/leave", "leave-room"),
    ("POST", r"/api/webhooks/livekit", "livekit-webhook"),
)


def function_of(method: str, path: str) -> str:
    for m, pattern, function in ROUTES:
        if m == method and re.fullmatch(pattern, path):
            return function
    return "?"


# --- symbolic requests -----------------------------------------------------------------------


class Names(dict):
    """Symbol -> unique real name for one case: {R}, {R2} rooms, {A} (the creator), {B}, {C},
    {D}, {X}, {Y} uids, {CH} a source channel."""

    @classmethod
    def make(cls, names) -> "Names":
        return cls(
            R=names("topo"),
            R2=names("topo2"),
            A=names("alice"),
            B=names("bob"),
            C=names("carol"),
            D=names("dave"),
            X=names("xena"),
            Y=names("yann"),
            CH=names("chan"),
        )

    def path(self, template: str) -> str:
        return template.format_map({k: quote(v, safe="") for k, v in self.items()})

    def value(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return obj.format_map(self)
        if isinstance(obj, list):
            return [self.value(v) for v in obj]
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        return obj


@dataclass(frozen=True)
class Step:
    """One request with symbolic names; `who` None sends the service token, "{A}" A's user
    token."""

    method: str
    path: str
    body: Any = None
    who: Optional[str] = None

    def function(self) -> str:
        return function_of(self.method, self.path.split("?")[0])

    def describe(self, n: Names) -> str:
        body = json.dumps(n.value(self.body), ensure_ascii=False) if self.body is not None else ""
        who = f" as {n.value(self.who)}" if self.who else ""
        return f"{self.method} {n.path(self.path)} {body}{who} [{self.function()}]"


def create(room="{R}", creator="{A}", uids=(), **fields) -> Step:
    body = {"room_name": room, "creator": creator, **fields}
    if uids:
        body["uids"] = list(uids)
    return Step("POST", "/api/rooms", body)


def join(uid, room="{R}", who=None) -> Step:
    return Step("POST", "/api/participants/join", {"room_name": room, "uid": uid}, who)


def leave(uid, room="{R}", who=None) -> Step:
    return Step("POST", "/api/participants/leave", {"room_name": room, "uid": uid}, who)


def invite(*uids, room="{R}", who=None) -> Step:
    return Step("POST", f"/api/rooms/{room}/invite", {"uids": list(uids)}, who)


def set_status(uid, status, room="{R}", who=None) -> Step:
    return Step("PUT", f"/api/rooms/{room}/participants/{uid}/status", {"status": status}, who)


def room_status(status, room="{R}", who=None) -> Step:
    return Step("PUT", f"/api/rooms/{room}/status", {"status": status}, who)


def end(room="{R}", who=None) -> Step:
    return Step("POST", f"/api/rooms/{room}/end", None, who)


def send(service, n: Names, step: Step, *, timeout: Optional[float] = None) -> Reply:
    """The request; with `timeout`, a client that gives up after that many seconds."""
    path = n.path(step.path)
    body = n.value(step.body)
    as_uid = n.value(step.who) if step.who else None
    if timeout is None:
        return service.request(step.method, path, body, as_uid=as_uid)
    token = service.token(as_uid) if as_uid else service.service_token
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    return http_request(service.host, service.port, step.method, path, data, headers, timeout)


def do(service, n: Names, steps, case: str) -> list[Reply]:
    """Setup steps, each of which must succeed."""
    replies = []
    for i, step in enumerate(steps):
        reply = send(service, n, step)
        assert reply.status == 200, f"{case}: step {i} {step.describe(n)} -> {reply}"
        replies.append(reply)
    return replies


def quick(service, n: Names, step: Step, case: str, *, expect: int = 200) -> Reply:
    """A write that nothing may hold up: answered within QUICK_S (the client gives up after
    CLIENT_TIMEOUT_S)."""
    started = time.monotonic()
    try:
        reply = send(service, n, step, timeout=CLIENT_TIMEOUT_S)
    except OSError as err:  # socket.timeout is an OSError
        raise AssertionError(
            f"{case}: {step.describe(n)} got no answer within {CLIENT_TIMEOUT_S:.0f}s ({err!r}): "
            f"a row of the room is still locked by an earlier transaction. Open transactions "
            f"now: {service.db.open_transactions()}"
        ) from None
    elapsed = time.monotonic() - started
    assert reply.status == expect, f"{case}: {step.describe(n)} -> {reply}"
    assert elapsed < QUICK_S, (
        f"{case}: {step.describe(n)} took {elapsed:.2f}s (a write waited for a lock); "
        f"open transactions now: {service.db.open_transactions()}"
    )
    return reply


# --- the database, from another process ----------------------------------------------------


# Each look is one query on a fresh connection (about 50 ms on a busy machine): few of them.

CALL_SQL = (
    "SELECT r.room_name, r.status, r.max_participants, r.created_at, r.updated_at, "
    "p.uid, p.status, p.join_time, p.leave_time, p.created_at, p.updated_at "
    "FROM call_room r LEFT JOIN call_participant p ON p.room_name = r.room_name "
    "WHERE r.room_name IN ({})"
)


def snapshot(db, *rooms: str) -> dict:
    """{room: (room row, {uid: participant row})} as stored, for the rooms that exist; equal
    before and after only if nothing was written (updated_at included)."""
    found: dict = {}
    for row in db.rows(CALL_SQL.format(", ".join("?" * len(rooms))), *rooms):
        room, room_row, uid, part = row[0], tuple(row[1:5]), row[5], tuple(row[6:])
        entry = found.setdefault(room, (room_row, {}))
        if uid is not None:
            entry[1][uid] = part
    return found


def state(db, room: str, snap: Optional[dict] = None):
    """(room status, {uid: status}) as stored; (None, {}) for no room."""
    snap = snapshot(db, room) if snap is None else snap
    if room not in snap:
        return None, {}
    room_row, rows = snap[room]
    return room_row[0], {uid: part[0] for uid, part in rows.items()}


def symbolic(n: Names, statuses: dict) -> dict:
    """{real uid: status} -> {symbol: status} where the uid is one of the case's names."""
    back = {v: k for k, v in n.items()}
    return {back.get(uid, uid): s for uid, s in statuses.items()}


def assert_row_times(db, room: str, case: str, snap: Optional[dict] = None) -> None:
    """join_time/leave_time agree with the status: joined rows have a join time and no leave
    time, hung-up rows both, every other status (never joined since it last rang) neither."""
    snap = snapshot(db, room) if snap is None else snap
    for uid, (status, join_time, leave_time, *_) in snap.get(room, ((), {}))[1].items():
        what = f"{case}: {room}/{uid} status {status} join_time {join_time} leave_time {leave_time}"
        if status == 1:
            assert join_time > 0 and leave_time == 0, what
        elif status == 3:
            assert join_time > 0 and leave_time > 0, what
        else:
            assert join_time == 0 and leave_time == 0, what


def assert_invariants(db, rooms, case: str) -> None:
    """What no request sequence or race may break: no uid live in two rooms and no live row in
    a final room (anywhere), and for these rooms one room per name, one row per uid and (filled
    through the API) no more joined rows than max_participants."""
    broken = db.rows(
        "SELECT 'live in two rooms', uid, NULL FROM call_participant WHERE status IN (0, 1) "
        "GROUP BY uid HAVING COUNT(*) > 1 "
        "UNION ALL "
        "SELECT 'live in a final room', p.uid, p.room_name FROM call_participant p "
        "JOIN call_room r ON r.room_name = p.room_name "
        "WHERE r.status IN (2, 3) AND p.status IN (0, 1)"
    )
    assert broken == [], f"{case}: invariants broken: {broken}"
    counts = db.rows(
        "SELECT r.room_name, COUNT(DISTINCT r.id), MAX(r.max_participants), "
        "COUNT(DISTINCT CASE WHEN p.status = 1 THEN p.id END), COUNT(p.id), "
        "COUNT(DISTINCT p.uid) "
        "FROM call_room r LEFT JOIN call_participant p ON p.room_name = r.room_name "
        "WHERE r.room_name IN ({}) GROUP BY r.room_name".format(", ".join("?" * len(rooms))),
        *rooms,
    )
    for room, room_rows, max_participants, joined, rows, uids in counts:
        assert room_rows == 1, f"{case}: {room_rows} rooms named {room}"
        assert rows == uids, f"{case}: two rows for one uid in {room}"
        assert joined <= max_participants, (
            f"{case}: {joined} joined in {room} (max {max_participants})"
        )


# InnoDB serves information_schema.innodb_trx from a cache refreshed only after 100 ms without
# a reader, so a look within 100 ms of another shows the past: pause around each look of our
# own, so that it (and `clean_after`'s, which may follow at once) sees the present.
I_S_CACHE_S = INNODB_TRX_REFRESH_S


def no_open_transaction(service, case: str) -> None:
    """No transaction of the service open (one clean, fresh sample within 2 s: the sweeper's
    own short transactions may be caught in flight)."""
    if service.db.backend == "mariadb":
        time.sleep(I_S_CACHE_S)
    try:
        service.db.assert_no_open_transaction()
    except AssertionError as err:
        raise AssertionError(f"{case}: {err}") from None
    finally:
        if service.db.backend == "mariadb":
            time.sleep(I_S_CACHE_S)


def error(reply: Reply, status: int, key: str, case: str) -> dict:
    assert reply.status == status, f"{case}: expected {status} {key}, got {reply}"
    body = reply.json
    assert isinstance(body, dict), f"{case}: not a JSON object: {reply}"
    assert body.get("code") == status and body.get("error") == key, f"{case}: {reply}"
    assert isinstance(body.get("msg"), str) and body["msg"], f"{case}: {reply}"
    return body


def at_once(*calls):
    """Runs the calls in threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [f.result() for f in futures]


def write_through_every_function(service, timeout: float = 60.0) -> list:
    """A fresh room taken through one committed write of every function that writes; returns
    the requests that failed."""
    tag = uuid.uuid4().hex[:8]
    n = Names(R=f"flush_{tag}", A=f"fa_{tag}", B=f"fb_{tag}", C=f"fc_{tag}")
    problems = []
    for step in (create(max_participants=4), room_status(1), invite("{B}"),
                 set_status("{B}", 1), join("{C}"), leave("{C}"), end()):
        try:
            reply = send(service, n, step, timeout=timeout)
        except OSError as err:
            problems.append(f"{step.describe(n)}: no answer within {timeout:.0f}s ({err!r})")
            continue
        if reply.status != 200:
            problems.append(f"{step.describe(n)}: {reply}")
    reply = service.webhook(livekit_event("room_finished", n["R"]))
    if reply.status != 200:
        problems.append(f"room_finished webhook: {reply}")
    return problems


@pytest.fixture(scope="module", autouse=True)
def warm_functions(service):
    """Every function once, so that starting its process (cargo lambda watch starts each on
    its first invocation) never counts against a scenario's timing."""
    bad = "a%20b"  # a space: invalid_parameters before any transaction
    for method, path in (
        ("GET", "/health"),
        ("GET", "/api/rooms?limit=1"),
        ("GET", f"/api/rooms/{bad}"),
        ("GET", f"/api/rooms/{bad}/participants"),
    ):
        service.request(method, path)
    problems = write_through_every_function(service)
    assert not problems, f"warming up the functions: {problems}"


def end_leftover_transactions(db) -> list:
    """MariaDB: ends (KILL CONNECTION) the service's connections that sit idle inside a
    transaction opened more than a second ago, releasing their locks; returns their ids.
    Never the case on correct code; on code that leaves transactions open it keeps one
    scenario's leftover from stalling the next (the function reconnects on its next request)."""
    if db.backend != "mariadb":
        return []
    time.sleep(I_S_CACHE_S)
    stale = db.rows(
        "SELECT p.id FROM information_schema.innodb_trx t "
        "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
        "WHERE p.db = ? AND p.id <> CONNECTION_ID() AND p.command = 'Sleep' "
        "AND t.trx_started < NOW() - INTERVAL 1 SECOND",
        MARIADB_DATABASE,
    )
    for (connection_id,) in stale:
        try:
            db.rows(f"KILL CONNECTION {int(connection_id)}")
        except Exception:  # gone already
            pass
    return [c for (c,) in stale]


@pytest.fixture(autouse=True)
def isolated(service):
    """After each scenario, once `clean_after` has checked it (and reported any transaction
    left open): end such leftovers, so that a failing scenario never stalls the next one."""
    yield
    ended = end_leftover_transactions(service.db)
    if ended:
        print(f"[topology] ended connections left inside a transaction: {ended}")


# --- 1. every lifecycle transition ----------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    name: str
    steps: list
    # room symbol -> (room status, {uid symbol: participant status}), read from the database
    expect: dict = field(default_factory=dict)


G3 = {"max_participants": 3}

TRANSITIONS = [
    # participant actions
    Transition(
        "join_by_an_invitee_starts_the_room",
        [create(uids=["{B}"]), join("{B}", who="{B}")],
        {"R": (1, {"A": 1, "B": 1})},
    ),
    Transition(
        "join_without_an_invite_into_an_open_room",
        [create(uids=["{B}"], **G3), join("{C}")],
        {"R": (1, {"A": 1, "B": 0, "C": 1})},
    ),
    Transition(
        "join_by_put_1_after_a_reject",
        [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 2, who="{B}"),
         set_status("{B}", 1, who="{B}")],
        {"R": (1, {"A": 1, "B": 1, "C": 0})},
    ),
    Transition(
        "ring_again_by_invite_after_a_reject",
        [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 2, who="{B}"),
         invite("{B}", who="{A}")],
        {"R": (0, {"A": 1, "B": 0, "C": 0})},
    ),
    Transition(
        "ring_again_by_put_0_after_a_reject",
        [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 2, who="{B}"),
         set_status("{B}", 0, who="{A}")],
        {"R": (0, {"A": 1, "B": 0, "C": 0})},
    ),
    Transition(
        "ring_again_after_a_leave_resets_the_times",
        [create(uids=["{B}", "{C}"], **G3), join("{B}"), leave("{B}"), invite("{B}")],
        {"R": (1, {"A": 1, "B": 0, "C": 0})},
    ),
    Transition(
        "busy_by_invite_of_a_uid_live_elsewhere",
        [create(room="{R2}", creator="{X}", uids=["{Y}"]), create(uids=["{B}"]), invite("{X}")],
        {"R": (0, {"A": 1, "B": 0, "X": 5}), "R2": (0, {"X": 1, "Y": 0})},
    ),
    Transition(
        "busy_by_put_0_of_a_uid_live_elsewhere",
        [create(room="{R2}", creator="{X}", uids=["{Y}"]), create(uids=["{B}"]),
         set_status("{X}", 0, who="{A}")],
        {"R": (0, {"A": 1, "B": 0, "X": 5}), "R2": (0, {"X": 1, "Y": 0})},
    ),
    Transition(
        "busy_by_put_5_of_the_service",
        [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 5)],
        {"R": (0, {"A": 1, "B": 5, "C": 0})},
    ),
    Transition(
        "missed_by_put_4_of_the_service",
        [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 4)],
        {"R": (0, {"A": 1, "B": 4, "C": 0})},
    ),
    Transition(
        "reject_by_put_2_of_the_invitee",
        [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 2, who="{B}")],
        {"R": (0, {"A": 1, "B": 2, "C": 0})},
    ),
    Transition(
        "cancel_by_put_6_of_the_creator",
        [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 6, who="{A}")],
        {"R": (0, {"A": 1, "B": 6, "C": 0})},
    ),
    Transition(
        "leave_by_post",
        [create(uids=["{B}", "{C}"], **G3), join("{B}"), join("{C}"), leave("{B}", who="{B}")],
        {"R": (1, {"A": 1, "B": 3, "C": 1})},
    ),
    Transition(
        "leave_by_put_3",
        [create(uids=["{B}", "{C}"], **G3), join("{B}"), join("{C}"),
         set_status("{B}", 3, who="{B}")],
        {"R": (1, {"A": 1, "B": 3, "C": 1})},
    ),
    # the settle rule
    Transition(
        "settle_creator_leaves_a_room_at_0_cancels_it",
        [create(uids=["{B}", "{C}"], **G3), leave("{A}", who="{A}")],
        {"R": (3, {"A": 3, "B": 6, "C": 6})},
    ),
    Transition(
        "settle_nobody_answered_cancels_it",
        [create(uids=["{B}"]), set_status("{B}", 2, who="{B}")],
        {"R": (3, {"A": 3, "B": 2})},
    ),
    Transition(
        "settle_nobody_joined_in_a_running_room_ends_it_and_rings_out_the_rest",
        [create(uids=["{B}", "{C}", "{D}"], max_participants=4), join("{B}"), leave("{A}"),
         leave("{B}")],
        {"R": (2, {"A": 3, "B": 3, "C": 4, "D": 4})},
    ),
    Transition(
        "settle_one_joined_nobody_ringing_ends_a_two_person_call",
        [create(uids=["{B}"]), join("{B}"), leave("{B}")],
        {"R": (2, {"A": 3, "B": 3})},
    ),
    Transition(
        "settle_one_joined_nobody_ringing_ends_a_group_call",
        [create(uids=["{B}", "{C}"], **G3), join("{B}"), join("{C}"), leave("{B}"),
         leave("{C}")],
        {"R": (2, {"A": 3, "B": 3, "C": 3})},
    ),
    Transition(
        "settle_group_call_runs_while_someone_rings",
        [create(uids=["{B}", "{C}"], **G3), join("{B}"), leave("{A}")],
        {"R": (1, {"A": 3, "B": 1, "C": 0})},
    ),
    # room actions
    Transition(
        "start_by_put_1",
        [create(uids=["{B}"]), room_status(1, who="{A}")],
        {"R": (1, {"A": 1, "B": 0})},
    ),
    Transition(
        "end_a_room_at_0_cancels_it",
        [create(uids=["{B}"]), end(who="{A}")],
        {"R": (3, {"A": 3, "B": 6})},
    ),
    Transition(
        "end_a_running_room_ends_it",
        [create(uids=["{B}", "{C}"], **G3), join("{B}"), end()],
        {"R": (2, {"A": 3, "B": 3, "C": 4})},
    ),
    Transition(
        "put_3_on_a_room_at_0_cancels_it",
        [create(uids=["{B}"]), room_status(3)],
        {"R": (3, {"A": 3, "B": 6})},
    ),
    Transition(
        "put_2_on_a_running_room_ends_it",
        [create(uids=["{B}", "{C}"], **G3), join("{B}"), room_status(2, who="{A}")],
        {"R": (2, {"A": 3, "B": 3, "C": 4})},
    ),
]


@pytest.mark.parametrize("case", TRANSITIONS, ids=lambda c: c.name)
def test_lifecycle_transition(service, names, clean_after, case):
    n = Names.make(names)
    replies = do(service, n, case.steps, case.name)
    snap = snapshot(service.db, n["R"], n["R2"])
    for room_sym, (room_expected, rows_expected) in case.expect.items():
        room = n[room_sym]
        room_now, rows_now = state(service.db, room, snap)
        assert (room_now, symbolic(n, rows_now)) == (room_expected, rows_expected), (
            f"{case.name}: {room_sym} in the database"
        )
        assert_row_times(service.db, room, case.name, snap)
    # The reply agrees with the database.
    last = replies[-1].data
    room_now, rows_now = state(service.db, n["R"], snap)
    for item in last if isinstance(last, list) else [last]:
        if isinstance(item, dict) and "uid" in item and item.get("room_name") == n["R"]:
            assert item["status"] == rows_now[item["uid"]], f"{case.name}: reply {item}"
        elif isinstance(item, dict) and "creator" in item and item.get("room_name") == n["R"]:
            assert item["status"] == room_now, f"{case.name}: reply {item}"
    assert_invariants(service.db, [n["R"], n["R2"]], case.name)


def test_ring_out_by_the_sweeper(service, names, clean_after):
    """Unanswered invites ring out (0 → 4) after RING_TIMEOUT_SECONDS and their rooms settle;
    ringing again restarts the timer. All cases ring at once, so one wait covers them."""
    n = Names.make(names)
    ring = service.ring_timeout_s
    rooms = {k: names(f"ring{k}") for k in ("solo", "group", "last", "again")}
    n.update({f"R_{k}": v for k, v in rooms.items()})
    for k in rooms:
        n.update({f"{u}_{k}": names(f"{u.lower()}{k}") for u in ("A", "B", "C")})

    def s(k, u):
        return "{" + f"{u}_{k}" + "}"

    started = time.monotonic()
    # nobody answers: B rings out, the room (at 0, nobody ringing, the creator alone) → 3
    do(service, n, [create(room="{R_solo}", creator=s("solo", "A"), uids=[s("solo", "B")])], "solo")
    # a group call keeps running when one invite rings out
    do(service, n, [
        create(room="{R_group}", creator=s("group", "A"), uids=[s("group", "B"), s("group", "C")],
               **G3),
        join(s("group", "B"), room="{R_group}"),
    ], "group")
    # a running call whose last ringing row rings out with one joined left: ended, A → 3
    do(service, n, [
        create(room="{R_last}", creator=s("last", "A"), uids=[s("last", "B"), s("last", "C")],
               **G3),
        room_status(1, room="{R_last}"),
        set_status(s("last", "B"), 2, room="{R_last}"),
    ], "last")
    # ring again restarts the timer: C rings out first while B (invited again later) still rings
    do(service, n, [
        create(room="{R_again}", creator=s("again", "A"), uids=[s("again", "B"), s("again", "C")],
               **G3),
        set_status(s("again", "B"), 2, room="{R_again}"),
    ], "again")
    setup_s = time.monotonic() - started
    assert setup_s < ring / 2, f"setup took {setup_s:.1f}s, too close to the ring timeout"
    time.sleep(max(0.0, ring * 0.6 - setup_s))
    # Nothing rings out before the timeout.
    early = snapshot(service.db, *rooms.values())
    for k in rooms:
        _, rows = state(service.db, rooms[k], early)
        assert 4 not in rows.values(), f"{k}: rang out before {ring}s: {rows}"
    reinvited = time.monotonic()
    do(service, n, [invite(s("again", "B"), room="{R_again}")], "again: ring B again")

    expected = {
        "solo": (3, {"A": 3, "B": 4}),
        "group": (1, {"A": 1, "B": 1, "C": 4}),
        "last": (2, {"A": 3, "B": 2, "C": 4}),
        "again": (3, {"A": 3, "B": 4, "C": 4}),
    }

    def now_state(k, snap):
        room, rows = state(service.db, rooms[k], snap)
        return room, {
            u: rows.get(n[f"{u}_{k}"]) for u in ("A", "B", "C") if n[f"{u}_{k}"] in rows
        }

    deadline = started + ring + RING_OUT_SLACK_S
    seen: dict = {}
    missed_at: dict = {}  # (case, uid) -> when the row was first seen at 4
    b_when_c_rang_out = None
    while time.monotonic() < deadline:
        snap = snapshot(service.db, *rooms.values())
        seen = {k: now_state(k, snap) for k in rooms}
        for k, (_, rows) in seen.items():
            for u, status in rows.items():
                if status == 4:
                    missed_at.setdefault((k, u), time.monotonic())
        if b_when_c_rang_out is None and seen["again"][1].get("C") == 4:
            b_when_c_rang_out = seen["again"][1].get("B")
        if seen == expected:
            break
        time.sleep(0.25)
    assert seen == expected, f"after {time.monotonic() - started:.1f}s: {seen}"
    assert b_when_c_rang_out == 0, (
        f"ring again did not restart the timer: B was {b_when_c_rang_out} when C rang out"
    )
    for (k, u), at in missed_at.items():
        rang_from = reinvited if (k, u) == ("again", "B") else started
        assert at - rang_from >= ring - 0.5, (
            f"{k}: {u} rang out {at - rang_from:.1f}s after its invite (timeout {ring}s)"
        )
    for k, room in rooms.items():
        assert_row_times(service.db, room, k, snap)
    assert_invariants(service.db, list(rooms.values()), "ring-out")


# --- 2. every refusal decided inside a call transaction -------------------------------------


@dataclass(frozen=True)
class Refusal:
    name: str
    setup: list
    request: Step
    status: int
    key: str
    # writes to the same room(s) through other functions, right after: each must answer at once
    follow: list
    data: Any = None  # the error's data, symbolic


REFUSALS = [
    Refusal("room_not_found_end", [], end(), 404, "room_not_found", [create()]),
    Refusal("room_not_found_invite", [], invite("{B}"), 404, "room_not_found", [create()]),
    Refusal("room_not_found_room_status", [], room_status(1), 404, "room_not_found", [create()]),
    Refusal("room_not_found_participant_status", [], set_status("{B}", 0), 404,
            "room_not_found", [create()]),
    Refusal("room_not_found_join", [], join("{B}"), 404, "room_not_found", [create()]),
    Refusal("room_not_found_leave", [], leave("{B}"), 404, "room_not_found", [create()]),
    Refusal("room_not_active_join_a_final_room", [create(uids=["{B}"]), end()], join("{B}"),
            409, "room_not_active", [end()]),
    Refusal("room_not_active_invite_into_a_final_room", [create(uids=["{B}"]), end()],
            invite("{C}"), 409, "room_not_active", [room_status(3)]),
    Refusal("room_not_active_put_1_in_a_final_room", [create(uids=["{B}"]), end()],
            set_status("{B}", 1), 409, "room_not_active", [end()]),
    Refusal("participant_not_invited", [create(uids=["{B}"], invite_on=1)], join("{C}"), 403,
            "participant_not_invited", [invite("{C}"), join("{C}")]),
    Refusal("room_full", [create(uids=["{B}", "{C}"]), join("{B}")], join("{C}"), 409,
            "room_full", [set_status("{C}", 2, who="{C}")]),
    Refusal("participant_in_call_join_while_live_elsewhere",
            [create(room="{R2}", creator="{X}", uids=["{Y}"]), create(uids=["{B}"], **G3)],
            join("{X}"), 409, "participant_in_call", [invite("{C}"), end(room="{R2}")],
            data={"busy_uids": ["{X}"]}),
    Refusal("participant_in_call_create_with_a_busy_invitee",
            [create(room="{R2}", creator="{X}", uids=["{Y}"])],
            create(uids=["{X}", "{B}"]), 409, "participant_in_call",
            [end(room="{R2}"), create(uids=["{X}", "{B}"])], data={"busy_uids": ["{X}"]}),
    Refusal("creator_in_another_call", [create(room="{R2}", creator="{A}", uids=["{Y}"])],
            create(uids=["{B}"]), 409, "creator_in_another_call",
            [end(room="{R2}"), create(uids=["{B}"])]),
    Refusal("room_already_exists", [create(uids=["{B}"])], create(creator="{C}"), 409,
            "room_already_exists", [end()]),
    Refusal("channel_has_active_room",
            [create(room="{R2}", creator="{X}", uids=["{Y}"], source_channel_id="{CH}")],
            create(uids=["{B}"], source_channel_id="{CH}"), 409, "channel_has_active_room",
            [end(room="{R2}"), create(uids=["{B}"], source_channel_id="{CH}")],
            data={"room_name": "{R2}"}),
    Refusal("participant_not_found_put_2_without_a_row", [create(uids=["{B}"])],
            set_status("{C}", 2), 404, "participant_not_found", [invite("{C}")]),
    Refusal("invalid_transition_put_room_2_at_0", [create(uids=["{B}"])], room_status(2), 409,
            "invalid_transition", [end()], data={"from": 0, "to": 2}),
    Refusal("invalid_transition_reopen_a_final_room", [create(uids=["{B}"]), end()],
            room_status(1), 409, "invalid_transition", [end()], data={"from": 3, "to": 1}),
    Refusal("invalid_transition_leave_while_ringing", [create(uids=["{B}"])], leave("{B}"), 409,
            "invalid_transition", [set_status("{B}", 2, who="{B}")], data={"from": 0, "to": 3}),
    Refusal("invalid_transition_reject_a_joined_row", [create(uids=["{B}"]), join("{B}")],
            set_status("{B}", 2), 409, "invalid_transition", [leave("{B}")],
            data={"from": 1, "to": 2}),
    Refusal("forbidden_invite_by_a_non_creator", [create(uids=["{B}"])],
            invite("{C}", who="{B}"), 403, "forbidden", [room_status(1, who="{A}")]),
    Refusal("forbidden_end_by_a_non_creator", [create(uids=["{B}"])], end(who="{B}"), 403,
            "forbidden", [invite("{C}", who="{A}")]),
    Refusal("forbidden_room_status_by_a_non_creator", [create(uids=["{B}"])],
            room_status(3, who="{B}"), 403, "forbidden", [end(who="{A}")]),
    Refusal("forbidden_status_of_another_row", [create(uids=["{B}", "{C}"], **G3)],
            set_status("{B}", 2, who="{C}"), 403, "forbidden", [join("{B}", who="{B}")]),
    Refusal("forbidden_busy_by_a_user", [create(uids=["{B}"])], set_status("{B}", 5, who="{A}"),
            403, "forbidden", [join("{B}")]),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.name)
def test_refusal_inside_a_transaction(service, names, clean_after, case):
    n = Names.make(names)
    do(service, n, case.setup, case.name)
    before = snapshot(service.db, n["R"], n["R2"])
    reply = send(service, n, case.request)
    body = error(reply, case.status, case.key, f"{case.name}: {case.request.describe(n)}")
    if case.data is not None:
        assert body.get("data") == n.value(case.data), f"{case.name}: data of {reply}"
    assert snapshot(service.db, n["R"], n["R2"]) == before, f"{case.name}: the refusal wrote"
    # The refused transaction is over: nothing open, and other functions write at once.
    no_open_transaction(service, f"{case.name}, after {case.request.describe(n)}")
    assert case.follow[0].function() != case.request.function(), case.name
    for step in case.follow:
        quick(service, n, step, f"{case.name}: after the refusal")
    assert_invariants(service.db, [n["R"], n["R2"]], case.name)


# --- 3. no-op requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class NoOp:
    name: str
    setup: list
    request: Step
    # a write through another function right after, which must answer at once
    follow: Step


NOOPS = [
    NoOp("end_a_cancelled_room", [create(uids=["{B}"]), end()], end(), room_status(3)),
    NoOp("end_an_ended_room", [create(uids=["{B}"]), join("{B}"), end()], end(),
         room_status(2)),
    NoOp("room_status_same_value_0", [create(uids=["{B}"])], room_status(0), end()),
    NoOp("room_status_same_value_1", [create(uids=["{B}"]), room_status(1)], room_status(1),
         end()),
    NoOp("room_status_same_value_final", [create(uids=["{B}"]), end()], room_status(3), end()),
    NoOp("participant_status_same_value_ringing", [create(uids=["{B}"])],
         set_status("{B}", 0, who="{A}"), join("{B}")),
    NoOp("participant_status_same_value_joined", [create(uids=["{B}"]), join("{B}")],
         set_status("{B}", 1, who="{B}"), end()),
    NoOp("participant_status_same_value_rejected",
         [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 2)], set_status("{B}", 2),
         invite("{B}")),
    NoOp("repeated_join", [create(uids=["{B}"]), join("{B}")], join("{B}"), end()),
    NoOp("creator_joins_again", [create(uids=["{B}"])], join("{A}"), end()),
    NoOp("leave_again",
         [create(uids=["{B}", "{C}"], **G3), join("{B}"), join("{C}"), leave("{B}")],
         leave("{B}"), end()),
    NoOp("invite_a_ringing_uid", [create(uids=["{B}"])], invite("{B}"), end()),
    NoOp("invite_a_joined_uid", [create(uids=["{B}", "{C}"], **G3), join("{B}")],
         invite("{B}"), end()),
]


@pytest.mark.parametrize("case", NOOPS, ids=lambda c: c.name)
def test_no_op_request(service, names, clean_after, case):
    n = Names.make(names)
    replies = do(service, n, case.setup, case.name)
    before = snapshot(service.db, n["R"])
    reply = send(service, n, case.request)
    data = reply.data
    assert snapshot(service.db, n["R"]) == before, (
        f"{case.name}: {case.request.describe(n)} wrote to the room"
    )
    if case.name == "repeated_join":
        first = replies[-1].data
        assert data["id"] == first["id"] and data["join_time"] == first["join_time"], data
        assert data["token"], data
    no_open_transaction(service, f"{case.name}, after {case.request.describe(n)}")
    assert case.follow.function() != case.request.function(), case.name
    quick(service, n, case.follow, f"{case.name}: after the no-op")
    assert_invariants(service.db, [n["R"]], case.name)


def test_replayed_webhook_id_changes_nothing(service, names, clean_after):
    """The replay would change the row if it were applied again (its createdAt is in the
    future, so it is never stale): only its id makes it a no-op."""
    n = Names.make(names)
    do(service, n, [create(uids=["{B}", "{C}"], **G3)], "setup")
    event = livekit_event("participant_joined", n["R"], n["B"], at=int(time.time()) + 60)
    assert service.webhook(event).data == {"outcome": "applied"}
    assert state(service.db, n["R"]) == (1, {n["A"]: 1, n["B"]: 1, n["C"]: 0})
    do(service, n, [leave("{B}")], "B leaves through the API")
    before = snapshot(service.db, n["R"])
    replay = service.webhook(event)
    assert replay.data == {"outcome": "duplicate"}, replay
    assert snapshot(service.db, n["R"]) == before, "a replayed event id changed the room"
    no_open_transaction(service, "after the replay")
    quick(service, n, end(), "after the replay")


# --- 4. races -------------------------------------------------------------------------------
# cargo lambda watch runs one instance per function (LAMBDA_CONCURRENCY=1), so requests to
# one function queue; races that meet in the database mix functions where the API allows.

RACE_TIMEOUT_S = 30.0


def racing(service, n: Names, step: Step):
    """A request for `at_once`, whose client gives up after RACE_TIMEOUT_S."""
    def go() -> Reply:
        try:
            return send(service, n, step, timeout=RACE_TIMEOUT_S)
        except OSError as err:
            raise AssertionError(
                f"{step.describe(n)}: no answer within {RACE_TIMEOUT_S:.0f}s ({err!r})"
            ) from None
    return go


def racing_webhook(service, event: dict):
    body = json.dumps(event).encode()
    signed = livekit_signature(service.livekit_api_key, service.livekit_api_secret, body)

    def go() -> Reply:
        try:
            return post_webhook(service, body, signed, timeout=RACE_TIMEOUT_S)
        except OSError as err:
            raise AssertionError(
                f"webhook {event['event']}: no answer within {RACE_TIMEOUT_S:.0f}s ({err!r})"
            ) from None
    return go


def test_race_creates_of_one_name(service, names, clean_after):
    n = Names.make(names)
    creators = [names(f"c{i}") for i in range(10)]
    replies = at_once(*[racing(service, n, create(creator=c)) for c in creators])
    winners = [c for c, r in zip(creators, replies) if r.status == 200]
    assert len(winners) == 1, replies
    for reply in replies:
        if reply.status != 200:
            error(reply, 409, "room_already_exists", "a losing create")
    assert state(service.db, n["R"]) == (0, {winners[0]: 1})
    rows = service.db.rows(
        "SELECT uid FROM call_participant WHERE uid IN (" + ", ".join("?" * len(creators)) + ")",
        *creators,
    )
    assert rows == [(winners[0],)], f"losing creates wrote rows: {rows}"
    assert_invariants(service.db, [n["R"]], "creates")


def test_race_joins_into_a_room_for_three(service, names, clean_after):
    n = Names.make(names)
    do(service, n, [create(**G3)], "setup")
    joiners = [names(f"j{i}") for i in range(10)]
    # half through join-room, half through the status PUT (update-participant-status)
    replies = at_once(*[
        racing(service, n, join(uid) if i % 2 else set_status(uid, 1))
        for i, uid in enumerate(joiners)
    ])
    ok = [uid for uid, r in zip(joiners, replies) if r.status == 200]
    for reply in replies:
        if reply.status != 200:
            error(reply, 409, "room_full", "a losing join")
    assert len(ok) == 2, replies
    room, rows = state(service.db, n["R"])
    assert room == 1 and rows == {n["A"]: 1, **{uid: 1 for uid in ok}}, rows
    assert_invariants(service.db, [n["R"]], "joins")


def test_race_both_sides_of_a_call_leave(service, names, clean_after):
    n = Names.make(names)
    do(service, n, [create(uids=["{B}"]), join("{B}")], "setup")
    replies = at_once(
        racing(service, n, leave("{A}", who="{A}")),
        racing(service, n, set_status("{B}", 3, who="{B}")),
    )
    for reply in replies:
        assert reply.data["status"] == 3, reply
    snap = snapshot(service.db, n["R"])
    assert state(service.db, n["R"], snap) == (2, {n["A"]: 3, n["B"]: 3})
    assert_row_times(service.db, n["R"], "both leave", snap)
    assert_invariants(service.db, [n["R"]], "both leave")


def test_race_end_against_join(service, names, clean_after):
    for round_ in range(3):
        n = Names.make(lambda p, r=round_: names(f"{p}{r}"))
        do(service, n, [create(uids=["{B}"])], "setup")
        ended, joined = at_once(racing(service, n, end()), racing(service, n, join("{B}")))
        assert ended.status == 200, ended
        snap = snapshot(service.db, n["R"])
        room, rows = state(service.db, n["R"], snap)
        if joined.status == 200:  # join first: a running call, ended with both hung up
            assert (room, rows) == (2, {n["A"]: 3, n["B"]: 3}), (joined, room, rows)
            assert ended.data["status"] == 2, ended
        else:  # end first: cancelled, and a final room admits nobody
            error(joined, 409, "room_not_active", "join after end")
            assert (room, rows) == (3, {n["A"]: 3, n["B"]: 6}), (joined, room, rows)
        assert_row_times(service.db, n["R"], f"round {round_}", snap)
        assert_invariants(service.db, [n["R"]], f"end against join, round {round_}")


def test_race_same_webhook_event_twice(service, names, clean_after):
    n = Names.make(names)
    do(service, n, [create(uids=["{B}"])], "setup")
    event = livekit_event("participant_joined", n["R"], n["B"])
    replies = at_once(racing_webhook(service, event), racing_webhook(service, event))
    outcomes = sorted(r.data["outcome"] for r in replies)
    assert outcomes == ["applied", "duplicate"], replies
    assert state(service.db, n["R"]) == (1, {n["A"]: 1, n["B"]: 1})
    assert_invariants(service.db, [n["R"]], "same event twice")


def test_race_webhook_join_against_api_leave(service, names, clean_after):
    """LiveKit reports B joining while the creator hangs up through the API: either B got in
    first (a call, then ended: both hung up) or the room was cancelled first (B cancelled,
    and B's presence in a final room never revives it)."""
    n = Names.make(names)
    do(service, n, [create(uids=["{B}"])], "setup")
    event = livekit_event("participant_joined", n["R"], n["B"])
    hooked, left = at_once(
        racing_webhook(service, event), racing(service, n, leave("{A}", who="{A}"))
    )
    assert left.data["status"] == 3, left
    outcome = hooked.data["outcome"]
    room, rows = state(service.db, n["R"])
    if outcome == "applied":
        assert (room, rows) == (2, {n["A"]: 3, n["B"]: 3}), (hooked, room, rows)
    else:
        assert outcome == "deleted_again", hooked
        assert (room, rows) == (3, {n["A"]: 3, n["B"]: 6}), (hooked, room, rows)
    assert_invariants(service.db, [n["R"]], "webhook against leave")


# --- 5. signed LiveKit webhooks -------------------------------------------------------------


def test_webhook_participant_joined_records_presence(service, names, clean_after):
    n = Names.make(names)
    do(service, n, [create(uids=["{B}"])], "setup")
    at = int(time.time())
    reply = service.webhook(livekit_event("participant_joined", n["R"], n["B"], at=at))
    assert reply.data == {"outcome": "applied"}, reply
    assert state(service.db, n["R"]) == (1, {n["A"]: 1, n["B"]: 1})
    join_time = snapshot(service.db, n["R"])[n["R"]][1][n["B"]][1]
    assert join_time == at * 1000, join_time
    quick(service, n, end(), "after participant_joined")


def test_webhook_participant_joined_closes_the_live_row_elsewhere(service, names, clean_after):
    """B rings in R2, is recorded busy (5) in R, and LiveKit then sees B in R: B joins R, the
    R2 row closes (ringing → 5) and R2 settles (nobody left to answer: cancelled)."""
    n = Names.make(names)
    do(service, n, [create(room="{R2}", creator="{X}", uids=["{B}"]),
                    create(uids=["{C}"], **G3), invite("{B}")], "setup")
    assert state(service.db, n["R"]) == (0, {n["A"]: 1, n["B"]: 5, n["C"]: 0})
    reply = service.webhook(livekit_event("participant_joined", n["R"], n["B"]))
    assert reply.data == {"outcome": "applied"}, reply
    snap = snapshot(service.db, n["R"], n["R2"])
    assert state(service.db, n["R"], snap) == (1, {n["A"]: 1, n["B"]: 1, n["C"]: 0})
    assert state(service.db, n["R2"], snap) == (3, {n["X"]: 3, n["B"]: 5})
    assert_invariants(service.db, [n["R"], n["R2"]], "presence elsewhere")
    no_open_transaction(service, "presence elsewhere")
    quick(service, n, end(room="{R2}"), "after presence elsewhere")
    quick(service, n, end(), "after presence elsewhere")


def test_webhook_participant_left_ends_a_two_person_call(service, names, clean_after):
    n = Names.make(names)
    do(service, n, [create(uids=["{B}"]), join("{B}")], "setup")
    reply = service.webhook(livekit_event("participant_left", n["R"], n["B"]))
    assert reply.data == {"outcome": "applied"}, reply
    snap = snapshot(service.db, n["R"])
    assert state(service.db, n["R"], snap) == (2, {n["A"]: 3, n["B"]: 3})
    assert_row_times(service.db, n["R"], "participant_left", snap)
    quick(service, n, end(), "after participant_left")


@pytest.mark.parametrize("running", [True, False], ids=["running", "not_started"])
def test_webhook_room_finished_ends_the_room(service, names, clean_after, running):
    n = Names.make(names)
    steps = [create(uids=["{B}", "{C}"], **G3)] + ([join("{B}")] if running else [])
    do(service, n, steps, "setup")
    reply = service.webhook(livekit_event("room_finished", n["R"]))
    assert reply.data == {"outcome": "applied"}, reply
    expected = (2, {n["A"]: 3, n["B"]: 3, n["C"]: 4}) if running else (
        3, {n["A"]: 3, n["B"]: 6, n["C"]: 6})
    assert state(service.db, n["R"]) == expected
    quick(service, n, end(), "after room_finished")


STALE = [
    # (name, setup, event kind, uid symbol)
    ("participant_left_older_than_the_join", [create(uids=["{B}", "{C}"], **G3), join("{B}")],
     "participant_left", "{B}"),
    ("participant_joined_older_than_the_reject",
     [create(uids=["{B}", "{C}"], **G3), set_status("{B}", 2)], "participant_joined", "{B}"),
    ("room_finished_older_than_the_room", [create(uids=["{B}"])], "room_finished", None),
]


@pytest.mark.parametrize("case", STALE, ids=lambda c: c[0])
def test_webhook_stale_event_changes_nothing(service, names, clean_after, case):
    name, setup, kind, uid = case
    n = Names.make(names)
    do(service, n, setup, name)
    before = snapshot(service.db, n["R"])
    event = livekit_event(kind, n["R"], n.value(uid) if uid else None, at=int(time.time()) - 30)
    reply = service.webhook(event)
    assert reply.data == {"outcome": "ignored"}, f"{name}: {reply}"
    assert snapshot(service.db, n["R"]) == before, f"{name}: a stale event changed the room"
    no_open_transaction(service, name)
    quick(service, n, end(), f"{name}: after the stale event")


UNKNOWN = [
    ("participant_joined_unknown_room", "participant_joined", "{R2}", "{B}"),
    ("participant_left_unknown_room", "participant_left", "{R2}", "{B}"),
    ("room_finished_unknown_room", "room_finished", "{R2}", None),
    ("participant_joined_unknown_uid", "participant_joined", "{R}", "{D}"),
    ("participant_left_unknown_uid", "participant_left", "{R}", "{D}"),
]


@pytest.mark.parametrize("case", UNKNOWN, ids=lambda c: c[0])
def test_webhook_unknown_room_or_uid_is_acknowledged(service, names, clean_after, case):
    name, kind, room, uid = case
    n = Names.make(names)
    do(service, n, [create(uids=["{B}"])], name)
    before = snapshot(service.db, n["R"], n["R2"])
    event = livekit_event(kind, n.value(room), n.value(uid) if uid else None)
    reply = service.webhook(event)
    assert reply.data == {"outcome": "ignored"}, f"{name}: {reply}"
    assert snapshot(service.db, n["R"], n["R2"]) == before, f"{name}: a room changed"
    no_open_transaction(service, name)
    quick(service, n, create(room="{R2}", creator="{X}"), f"{name}: create the unknown room")
    quick(service, n, end(), f"{name}: end the known room")


def post_webhook(service, body: bytes, authorization: Optional[str], *,
                 timeout: float = CLIENT_TIMEOUT_S) -> Reply:
    headers = {"Content-Type": "application/webhook+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return http_request(service.host, service.port, "POST", "/api/webhooks/livekit", body,
                        headers, timeout)


def livekit_signature(key: str, secret: str, body: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return lk.AccessToken(key, secret).with_sha256(digest).to_jwt()


def test_webhook_bad_signature_is_401(service, names, clean_after):
    n = Names.make(names)
    do(service, n, [create(uids=["{B}"])], "setup")
    before = snapshot(service.db, n["R"])
    event = livekit_event("participant_joined", n["R"], n["B"])
    body = json.dumps(event).encode()
    other = json.dumps(livekit_event("room_finished", n["R"])).encode()
    key, secret = service.livekit_api_key, service.livekit_api_secret
    cases = {
        "unsigned": None,
        "wrong_secret": livekit_signature(key, secret + "x", body),
        "wrong_key": livekit_signature("not-" + key, secret, body),
        "signature_of_another_body": livekit_signature(key, secret, other),
        "not_a_jwt": "Bearer nonsense",
    }
    for name, authorization in cases.items():
        reply = post_webhook(service, body, authorization)
        error(reply, 401, "unauthorized", name)
        assert snapshot(service.db, n["R"]) == before, f"{name}: the event was applied"
    # The same body signed properly is applied ("Bearer " is accepted too).
    good = post_webhook(service, body, "Bearer " + livekit_signature(key, secret, body))
    assert good.data == {"outcome": "applied"}, good
    assert state(service.db, n["R"]) == (1, {n["A"]: 1, n["B"]: 1})


def test_webhook_join_into_a_final_room_never_revives_it(service, names, clean_after):
    n = Names.make(names)
    do(service, n, [create(uids=["{B}"]), end()], "setup")
    before = snapshot(service.db, n["R"])
    for uid in ("B", "A"):
        reply = service.webhook(livekit_event("participant_joined", n["R"], n[uid]))
        assert reply.data == {"outcome": "deleted_again"}, f"{uid}: {reply}"
    assert snapshot(service.db, n["R"]) == before, "a final room was revived"
    assert state(service.db, n["R"], before) == (3, {n["A"]: 3, n["B"]: 6})
    no_open_transaction(service, "presence in a final room")
    quick(service, n, end(), "after presence in a final room")


# --- 6. path names --------------------------------------------------------------------------

PATH_NAMES = {
    "accented": "café",
    "cjk_emoji": "会议室🎉",
    "quotes": "x'OR'1'='1'--",
    "literal_percent_41": "r%41",  # decoded twice it would become "rA"
    "literal_percent_2f": "a%2Fb",  # decoded twice it would become "a/b"
}


@pytest.mark.parametrize("kind", list(PATH_NAMES))
def test_path_names_round_trip(service, names, clean_after, kind):
    """A room and a uid that need percent-encoding go through every endpoint that takes them
    in the path, and come back exactly as created."""
    room = names(PATH_NAMES[kind])
    creator = names("创建者")
    uid = names(PATH_NAMES[kind] + "_josé")
    q = lambda s: quote(s, safe="")  # noqa: E731
    req = service.request
    where = f"{kind} ({room!r}, uid {uid!r})"

    created = req("POST", "/api/rooms", {"room_name": room, "creator": creator}).data
    assert created["room_name"] == room, where
    got = req("GET", f"/api/rooms/{q(room)}").data
    assert got["room_name"] == room and got["creator"] == creator, (where, got)
    started = req("PUT", f"/api/rooms/{q(room)}/status", {"status": 1}).data
    assert started["room_name"] == room and started["status"] == 1, (where, started)
    invited = req("POST", f"/api/rooms/{q(room)}/invite", {"uids": [uid]}).data
    assert [(r["room_name"], r["uid"], r["status"]) for r in invited] == [(room, uid, 0)], where
    ringing = req("GET", f"/api/users/{q(uid)}/ringing", as_uid=uid).data
    assert [(r["room_name"], r["caller"]) for r in ringing] == [(room, creator)], (where, ringing)
    # A second invitee with the same kind of name, taken out again through /remove.
    gone = names(PATH_NAMES[kind] + "_zoë")
    req("POST", f"/api/rooms/{q(room)}/invite", {"uids": [gone]})
    removed = req("POST", f"/api/rooms/{q(room)}/participants/{q(gone)}/remove",
                  as_uid=creator).data
    assert (removed["room_name"], removed["uid"], removed["status"], removed["reason"]) == (
        room, gone, 3, "removed"), (where, removed)
    joined = req("PUT", f"/api/rooms/{q(room)}/participants/{q(uid)}/status", {"status": 1},
                 as_uid=uid).data
    assert (joined["room_name"], joined["uid"], joined["status"]) == (room, uid, 1), where
    people = req("GET", f"/api/rooms/{q(room)}/participants", as_uid=uid).data
    assert {(p["room_name"], p["uid"], p["status"]) for p in people} == {
        (room, creator, 1), (room, uid, 1), (room, gone, 3)}, (where, people)
    assert state(service.db, room) == (1, {creator: 1, uid: 1, gone: 3}), where
    ended = req("POST", f"/api/rooms/{q(room)}/end", as_uid=creator).data
    assert ended["room_name"] == room and ended["status"] == 2, (where, ended)
    assert state(service.db, room) == (2, {creator: 3, uid: 3, gone: 3}), where
    calls = req("GET", f"/api/users/{q(uid)}/calls", as_uid=uid).data["calls"]
    assert [(c["room_name"], c["creator"], c["direction"]) for c in calls] == [
        (room, creator, "incoming")], (where, calls)
    # Nothing under the encoded or twice-decoded name.
    others = sorted({q(room), unquote(room), q(uid), unquote(uid)} - {room, uid})
    if others:
        marks = ", ".join("?" * len(others))
        stray = service.db.rows(
            f"SELECT room_name, NULL FROM call_room WHERE room_name IN ({marks}) UNION ALL "
            f"SELECT room_name, uid FROM call_participant WHERE uid IN ({marks})",
            *others, *others,
        )
        assert stray == [], f"{where}: rows under another form of the names: {stray}"


BAD_SEGMENTS = {"encoded_slash": "a%2Fb", "invalid_utf8": "%FF", "truncated_utf8": "caf%C3"}


@pytest.mark.parametrize("segment", list(BAD_SEGMENTS))
def test_bad_path_segment_is_400(service, names, clean_after, segment):
    """An encoded slash or bytes that are not UTF-8 in any path segment: 400 before anything
    else, in every endpoint, also in the uid segment of a room that exists."""
    bad = BAD_SEGMENTS[segment]
    room = names("room")
    service.request("POST", "/api/rooms", {"room_name": room, "creator": names("a")}).data
    q = quote(room, safe="")
    for method, path, body in (
        ("GET", f"/api/rooms/{bad}", None),
        ("PUT", f"/api/rooms/{bad}/status", {"status": 1}),
        ("POST", f"/api/rooms/{bad}/end", None),
        ("GET", f"/api/rooms/{bad}/participants", None),
        ("POST", f"/api/rooms/{bad}/invite", {"uids": ["u1"]}),
        ("PUT", f"/api/rooms/{bad}/participants/u1/status", {"status": 1}),
        ("PUT", f"/api/rooms/{q}/participants/{bad}/status", {"status": 1}),
        ("POST", f"/api/rooms/{bad}/participants/u1/remove", None),
        ("POST", f"/api/rooms/{q}/participants/{bad}/remove", None),
        ("GET", f"/api/users/{bad}/ringing", None),
        ("GET", f"/api/users/{bad}/calls", None),
    ):
        reply = service.request(method, path, body)
        error(reply, 400, "invalid_parameters", f"{segment}: {method} {path} "
              f"[{function_of(method, path)}]")
    assert state(service.db, room) == (0, {names("a"): 1}), "a bad segment reached the store"


# --- 7. the previous code's bug, head on ----------------------------------------------------

DETECTORS = {
    # PUT room status 2 on a room at 0: 409 decided inside the transaction (update-room-status),
    # then the room is ended through end-room.
    "refusal": ([create(uids=["{B}"])], room_status(2), 409, end()),
    # ending a final room changes nothing (end-room), then the status PUT (update-room-status)
    # locks the same room.
    "no_op": ([create(uids=["{B}"]), end()], end(), 200, room_status(3)),
}


@pytest.mark.parametrize("trigger", list(DETECTORS))
def test_no_lock_outlives_a_refused_or_no_op_request(service, names, clean_after, trigger):
    """On the previous code this fails: the refused (or unchanged) transaction stayed open on
    the function's kept connection, and the next write to the room from another function
    waited 50 s for its row lock. The write goes out the moment the reply is in; then no
    transaction of the service may be open."""
    setup, request, status, write = DETECTORS[trigger]
    n = Names.make(names)
    do(service, n, setup, trigger)
    reply = send(service, n, request)
    assert reply.status == status, reply
    quick(service, n, write, f"{trigger}: {write.describe(n)} right after {request.describe(n)}")
    no_open_transaction(service, f"{trigger}: after {request.describe(n)} and the write")
