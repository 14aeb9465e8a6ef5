"""Outages under load: the local main job on MariaDB with Redis, one process per function,
with both servers behind TCP relays (relay.py). Seeded clients place, answer, decline and end
calls and keep reading each room (GET /api/rooms/{name} is the cached read) while Redis is
partitioned away for 10 s and then the database refuses connections for 5 s.

What must hold:
- no answer is a 500; a 503 comes only while the database is away (and just after), and every
  503 says when to come back (Retry-After);
- a read never shows a room older than a state the database already had when the read
  started, except from the Redis cut until CACHE_STALE_BOUND_S after the later of Redis
  answering again and the commit the read missed (the README's bound: a commit that could not
  drop the cached copy has it dropped by the next sweep, every second);
- afterwards every room reads as the database has it, no forget is still owed, and nothing of
  the service holds a transaction or a lock.

The run must have done something: floors on calls finished, writes made during each outage,
forgets owed while Redis was away, 503s while the database was, and reads after Redis came
back of rooms that changed while it was away.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
from conftest import (
    Database,
    REQUEST_TIMEOUT_S,
    Reply,
    http_request,
    local_constant,
    log_tail,
    start_job,
    stop_tree,
    wait_healthy,
    warm_every_function,
)
from relay import REFUSE, STALL, Relay

SEED = int(os.environ.get("FAULT_SEED", "1717"))
DATABASE = os.environ.get("E2E_FAULT_DATABASE", "call_faults")
REDIS_DB = int(os.environ.get("E2E_FAULT_REDIS_DB", "6"))
CLIENTS = 8

# The timeline, in seconds from the start of the load.
REDIS_CUT_AT, REDIS_CUT_FOR = 4.0, 10.0
DB_CUT_AT, DB_CUT_FOR = 18.0, 5.0
NEW_CALLS_UNTIL = 27.0
# The README's bound: after Redis answers again, a cached copy older than the last commit is
# gone within a sweep or two (every second) plus the replay itself; 3.3 s was seen on a loaded
# machine.
CACHE_STALE_BOUND_S = 5.0
# A 503 may still come this long after the database is back (a request that began meanwhile).
DB_RECOVERY_SLACK_S = 3.0
# The function timeout in template.yaml is 10 s; every answer comes well before it.
ANSWER_WITHIN_S = 10.0

RANK = {0: 0, 1: 1, 2: 2, 3: 2}  # how far a room has come; 2 and 3 are both final


def older(read: int, had: int) -> bool:
    """Whether a room read with status `read` shows less than a database that had `had`."""
    return RANK[read] < RANK[had] or (RANK[had] == 2 and read != had)


@dataclass
class Read:
    room: str
    started: float
    status: int


@dataclass
class Log:
    """Everything the clients saw, on the test's monotonic clock."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[tuple[str, int, float, float, Optional[str]]] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    # room -> [(when the database was seen to have it, status)]
    truths: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    calls_finished: int = 0
    answered: int = 0
    declined: int = 0
    # The bodies of answers that were neither a success nor a refusal to retry (500s).
    broken: list[str] = field(default_factory=list)

    def answer(self, what: str, reply: Reply, started: float) -> None:
        with self.lock:
            self.answers.append((what, reply.status, started, time.monotonic(),
                                 reply.headers.get("retry-after")))
            if reply.status == 500:
                self.broken.append(f"{what}: {reply.text[:300]}")


# What the job logs about a 500: the refusal line, a panic, an error-level line.
INTERNAL_LINE = re.compile(r"status\W{1,3}500|internal_error|panicked|\bERROR\b")


def log_lines(path, pattern: re.Pattern) -> list[str]:
    """The lines of the job's log that match `pattern` (for a failure's message)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return [f"(no log: {err})"]
    return [line[:1500] for line in text.splitlines() if pattern.search(line)]


class Client:
    def __init__(self, index: int, port: int, db: Database, log: Log, t0: float,
                 rng: random.Random, auth_secret: str):
        self.index = index
        self.port = port
        self.db = db
        self.log = log
        self.t0 = t0
        self.rng = rng
        self.auth = auth_secret
        self.tag = uuid.uuid4().hex[:6]
        self.timeout = ANSWER_WITHIN_S * 3

    def token(self) -> str:
        import jwt

        claims = {"sub": "fault-backend", "role": "service", "exp": int(time.time()) + 3600}
        return jwt.encode(claims, self.auth, algorithm="HS256")

    def send(self, what: str, method: str, path: str, body=None) -> Reply:
        """One request, tried again after a 503 as a client honouring Retry-After would (until
        an answer that is not a 503, or 30 s)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        give_up = time.monotonic() + 30
        while True:
            started = time.monotonic()
            try:
                reply = http_request("127.0.0.1", self.port, method, path, data, headers,
                                     timeout=self.timeout)
            except OSError as err:
                raise AssertionError(f"{what} {path}: no answer ({err})") from err
            self.log.answer(what, reply, started)
            if reply.status != 503 or time.monotonic() > give_up:
                return reply
            time.sleep(float(reply.headers.get("retry-after") or 1))

    def truth(self, room: str) -> None:
        """What the database has now, seen from a connection of the test's own."""
        status = self.db.room_status(room)
        if status is not None:
            with self.log.lock:
                self.log.truths.setdefault(room, []).append((time.monotonic(), status))

    def read(self, room: str) -> None:
        started = time.monotonic()
        reply = self.send("get-room", "GET", f"/api/rooms/{room}")
        if reply.status == 200:
            with self.log.lock:
                self.log.reads.append(Read(room, started, reply.json["data"]["status"]))

    def talk(self, room: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.read(room)
            time.sleep(self.rng.uniform(0.1, 0.4))

    def place_call(self, n: int) -> str:
        room = f"f{self.index}_{n}_{self.tag}"
        caller, callee = f"fa{self.index}_{self.tag}", f"fb{self.index}_{self.tag}"
        created = self.send("create", "POST", "/api/rooms", {
            "source_channel_id": f"ch_{room}", "source_channel_type": 0, "creator": caller,
            "room_name": room, "call_type": 1, "invite_on": 1, "uids": [callee],
            "ring_timeout_seconds": 60,
        })
        if created.status != 200:
            # A create retried after a 503 whose first try committed finds its room; any other
            # refusal leaves nothing to do with this name.
            if self.db.room_status(room) is None:
                return room
        self.truth(room)
        self.talk(room, self.rng.uniform(0.5, 2.0))  # ringing: the copy is cached meanwhile
        if self.rng.random() < 0.7:
            self.send("join", "POST", "/api/participants/join", {"room_name": room, "uid": callee})
            self.truth(room)
            with self.log.lock:
                self.log.answered += 1
            self.talk(room, self.rng.uniform(1.0, 6.0))
            if self.rng.random() < 0.5:
                self.send("end", "POST", f"/api/rooms/{room}/end")
            else:
                self.send("leave", "POST", "/api/participants/leave",
                          {"room_name": room, "uid": callee})
                self.truth(room)
                self.send("leave", "POST", "/api/participants/leave",
                          {"room_name": room, "uid": caller})
        else:
            self.send("decline", "PUT", f"/api/rooms/{room}/participants/{callee}/status",
                      {"status": 2})
            with self.log.lock:
                self.log.declined += 1
            self.truth(room)
            self.send("leave", "POST", "/api/participants/leave",
                      {"room_name": room, "uid": caller})
        self.truth(room)
        self.talk(room, self.rng.uniform(0.5, 2.0))  # reads after the change
        with self.log.lock:
            self.log.calls_finished += 1
        return room

    def run(self) -> None:
        n = 0
        finished: list[str] = []
        while time.monotonic() - self.t0 < NEW_CALLS_UNTIL:
            n += 1
            finished.append(self.place_call(n))
            # Calls looked up again later, as a history screen does: a copy cached before an
            # outage must not show a call that ended during it as still going.
            for room in self.rng.sample(finished, min(3, len(finished))):
                self.read(room)


@pytest.fixture(scope="module")
def fault_job():
    redis_relay = Relay(6379, "redis")
    db_relay = Relay(3306, "mariadb")
    tmp = Path(tempfile.mkdtemp(prefix="call-faults-"))
    started = time.monotonic()
    proc, port, log_path, db = start_job(
        "mariadb", tmp, "[]", database=DATABASE,
        redis_url=f"redis://127.0.0.1:{redis_relay.port}/{REDIS_DB}",
        extra_env={"DATABASE_URL": f"mysql://root@127.0.0.1:{db_relay.port}/{DATABASE}"},
    )
    try:
        wait_healthy(proc, port, log_path, started)
        warm_every_function(port)
        yield port, db, redis_relay, db_relay, log_path
    finally:
        stop_tree(proc)
        proc.log_file.close()  # type: ignore[attr-defined]
        redis_relay.stop()
        db_relay.stop()
        if proc.returncode is not None and not os.environ.get("E2E_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


def owed_forgets(db: Database) -> int:
    return db.rows("SELECT COUNT(*) FROM cache_invalidation")[0][0]


def test_reads_and_writes_hold_through_a_redis_and_a_database_outage(fault_job):
    port, db, redis_relay, db_relay, log_path = fault_job
    secret = local_constant("LOCAL_AUTH_JWT_SECRET")
    # One call through every function first: each one's process starts on its first request.
    warm = Client(99, port, db, Log(), time.monotonic(), random.Random(SEED), secret)
    warm.timeout = REQUEST_TIMEOUT_S
    for n in range(3):
        warm.place_call(n)
    log = Log()
    t0 = time.monotonic()
    rng = random.Random(SEED)
    clients = [Client(i, port, db, log, t0, random.Random(rng.random()), secret)
               for i in range(CLIENTS)]
    errors: list[BaseException] = []

    def run(client: Client) -> None:
        try:
            client.run()
        except BaseException as err:  # reported below, with the others
            errors.append(err)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()

    def at(seconds: float) -> None:
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))

    at(REDIS_CUT_AT)
    redis_cut = redis_relay.cut(STALL)
    owed_seen = 0
    while time.monotonic() < redis_cut + REDIS_CUT_FOR:
        owed_seen = max(owed_seen, owed_forgets(db))
        time.sleep(0.5)
    redis_back = redis_relay.restore()
    at(DB_CUT_AT)
    db_cut = db_relay.cut(REFUSE)
    at(DB_CUT_AT + DB_CUT_FOR)
    db_back = db_relay.restore()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client never finished"
    assert not errors, f"clients failed: {errors[:3]}"

    # -- answers ---------------------------------------------------------------------------
    by_status: dict[int, int] = {}
    for _, status, _, _, _ in log.answers:
        by_status[status] = by_status.get(status, 0) + 1
    print(f"\n[faults] seed {SEED}: {len(log.answers)} answers {sorted(by_status.items())}, "
          f"{log.calls_finished} calls ({log.answered} answered, {log.declined} declined), "
          f"{len(log.reads)} reads, up to {owed_seen} forgets owed during the Redis cut")
    five_hundreds = [a for a in log.answers if a[1] == 500]
    assert not five_hundreds, (
        f"500s: {five_hundreds[:5]}\nbodies: {log.broken[:5]}\n"
        f"the job's lines about them:\n{log_lines(log_path, INTERNAL_LINE)[:10]}")
    slow = [a for a in log.answers if a[3] - a[2] > ANSWER_WITHIN_S]
    assert not slow, f"answers after the function timeout: {slow[:5]}"
    unavailable = [a for a in log.answers if a[1] == 503]
    assert all(a[4] for a in unavailable), "a 503 without Retry-After"
    outside = [a for a in unavailable
               if not (db_cut <= a[3] and a[2] <= db_back + DB_RECOVERY_SLACK_S)]
    assert not outside, f"503s while the database was there: {outside[:5]}"
    unexpected = {s for s in by_status if s not in (200, 409, 503)}
    assert not unexpected, f"unexpected statuses {unexpected}: " + str(
        [a for a in log.answers if a[1] in unexpected][:5])

    # -- the run did something -------------------------------------------------------------
    # Loose floors: a loaded machine finishes fewer calls (27 seen), never none of each kind.
    assert log.calls_finished >= 10, f"only {log.calls_finished} calls finished"
    assert log.answered >= 3 and log.declined >= 1, (log.answered, log.declined)
    assert len(unavailable) >= 3, "the database cut was never felt"
    writes_in = lambda a, b: sum(1 for w in log.answers  # noqa: E731
                                 if w[0] != "get-room" and a <= w[2] <= b)
    assert writes_in(redis_cut, redis_back) >= 10, "few writes while Redis was away"

    # -- no read older than what the database had when it started --------------------------
    stale = []
    exempt = 0
    changed_while_away = set()
    for room, truths in log.truths.items():
        if any(redis_cut <= t <= redis_back for t, _ in truths):
            changed_while_away.add(room)
    reads_after = 0
    for read in log.reads:
        known = [s for t, s in log.truths.get(read.room, []) if t < read.started]
        if not known:
            continue
        floor = max(known, key=lambda s: RANK[s])
        if read.room in changed_while_away and read.started > redis_back:
            reads_after += 1
        if not older(read.status, floor):
            continue
        # The first state the database was seen with that this read is behind: the commit
        # it missed came before that look.
        missed = min(t for t, s in log.truths[read.room] if older(read.status, s))
        if redis_cut <= read.started <= max(missed, redis_back) + CACHE_STALE_BOUND_S:
            exempt += 1
            continue
        stale.append((read.room, round(read.started - t0, 2), read.status, floor,
                      round(missed - t0, 2)))
    print(f"[faults] {reads_after} reads after Redis came back of rooms changed while it was "
          f"away; {exempt} stale within {CACHE_STALE_BOUND_S}s of its return")
    assert reads_after >= 10, f"only {reads_after} reads tested the cache after the outage"
    assert not stale, (f"{len(stale)} reads older than the database (room, t, read, had, "
                       f"had since): {stale[:10]}")
    assert owed_seen >= 3, f"only {owed_seen} forgets owed while Redis was away"

    # -- afterwards --------------------------------------------------------------------------
    deadline = time.monotonic() + 10
    while owed_forgets(db) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert owed_forgets(db) == 0, "forgets still owed after Redis came back"
    client = clients[0]
    mismatched = []
    for room in sorted(log.truths):
        reply = client.send("get-room", "GET", f"/api/rooms/{room}")
        have = db.room_status(room)
        if reply.status != 200 or reply.json["data"]["status"] != have:
            mismatched.append((room, reply.status, reply.text[:80], have))
    assert not mismatched, f"rooms read otherwise than the database has them: {mismatched[:5]}"
    db.assert_nothing_left_behind()
