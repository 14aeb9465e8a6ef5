"""The fleet: more Lambda instances than database connections, and waits that end in time.

In AWS every instance of every function keeps its own database connection, and a burst adds
instances faster than the database adds connections. Here the local main job runs on MariaDB
with four instances per function (about 60 processes once warm) as a database user allowed
only FLEET_BUDGET connections (14 by default: fewer than the instances), and 32 seeded clients
place calls for BURST_S seconds: create, join (both sides), LiveKit's participant webhooks,
get, leave, end. Each client honours Retry-After, as the README asks of a client.

What must hold:
- no answer is a 500, and none comes later than the function timeout;
- every 503 says when to come back (Retry-After);
- every call a client finished is final in the database, no final room has a live
  participant, and the per-status counters agree with the rooms;
- an instance holds at most one connection (the sweepers two), sampled during the burst;
- once the burst ends, the connections go back to the database within its idle time, and a
  new call goes through without a refusal: no restart needed;
- nothing of the service holds a transaction or a lock.

And, on both backends: a write that meets a row another connection holds (for 30 s, far longer
than any wait of the service) answers 503 with Retry-After well inside the function timeout.

FLEET_BUDGETS=14,30,60 FLEET_REPORT=out.json runs the burst at each budget and writes the
figures BENCHMARKS.md "The fleet" reports.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pymysql
import pytest
from conftest import (
    MARIADB_ADMIN,
    REQUEST_TIMEOUT_S,
    Database,
    Reply,
    Service,
    livekit_event,
    local_constant,
    local_livekit_pair,
    log_tail,
    port_owners,
    process_name,
    start_job,
    stop_tree,
    wait_healthy,
    warm_every_function,
)

SEED = int(os.environ.get("FLEET_SEED", "4242"))
BUDGETS = [int(b) for b in os.environ.get("FLEET_BUDGETS", "14").split(",") if b]
REPORT = os.environ.get("FLEET_REPORT")
DATABASE = os.environ.get("E2E_FLEET_DATABASE", "call_fleet")
REDIS_DB = int(os.environ.get("E2E_FLEET_REDIS_DB", "7"))
USER, PASSWORD = "call_fleet", "fleet-local-only"
CLIENTS = 32
INSTANCES = 4
BURST_S = float(os.environ.get("FLEET_BURST_S", "20"))
# Short, so the run sees connections go back; production's default is 30 s.
IDLE_S = 3
LIFETIME_S = 5
# The function timeout in template.yaml is 10 s: no answer may come later.
FUNCTION_TIMEOUT_S = 10.0
# A client gives a step up after this long of 503s (none may).
GIVE_UP_S = 90.0
SWEEPERS = {"ring-timeout", "deliver-events"}


@dataclass
class Answer:
    step: str
    room: str
    status: int
    started: float
    took: float
    retry_after: Optional[str]
    key: Optional[str]
    retry: bool  # an earlier try of the same step was refused with 503


@dataclass
class Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[Answer] = field(default_factory=list)
    # how long each step took for the client, retries included
    steps: list[float] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)


class Client:
    """One backend placing calls one after another; every request is tried again after a
    503, after the Retry-After it names (plus a little jitter, as a fleet of clients would)."""

    def __init__(self, index: int, svc: Service, log: Log, rng: random.Random):
        self.index = index
        self.svc = svc
        self.log = log
        self.rng = rng
        self.tag = uuid.uuid4().hex[:6]

    def send(self, step: str, room: str, call,
             accept_after_retry: tuple[str, ...] = ()) -> Optional[Reply]:
        began = time.monotonic()
        retried = False
        while True:
            started = time.monotonic()
            reply: Reply = call()
            took = time.monotonic() - started
            key = reply.key if reply.status >= 400 else None
            self.log.add(Answer(step, room, reply.status, started, took,
                                reply.headers.get("retry-after"), key, retried))
            if reply.status == 503:
                if time.monotonic() - began > GIVE_UP_S:
                    with self.log.lock:
                        self.log.gave_up.append(step)
                    return None
                retried = True
                wait = float(reply.headers.get("retry-after") or 1)
                time.sleep(wait + self.rng.uniform(0, 0.5))
                continue
            with self.log.lock:
                self.log.steps.append(time.monotonic() - began)
            # A step whose earlier try committed before its answer was lost finds its own
            # work done: the refusal that says so is its success.
            if retried and reply.status == 409 and key in accept_after_retry:
                return reply
            return reply

    def call(self, n: int) -> None:
        svc = self.svc
        room = f"fl{self.index}_{n}_{self.tag}"
        caller, callee = f"fa{self.index}_{self.tag}", f"fb{self.index}_{self.tag}"
        created = self.send("create", room, lambda: svc.request("POST", "/api/rooms", {
            "source_channel_id": f"ch_{room}", "source_channel_type": 0, "creator": caller,
            "room_name": room, "call_type": 1, "invite_on": 1, "uids": [callee],
            # Longer than any wait a refused step may make, so no invite rings out mid-call.
            "ring_timeout_seconds": 180,
        }), ("room_already_exists",))
        if created is None or created.status not in (200, 409):
            return
        for uid in (caller, callee):
            self.send("join", room, lambda uid=uid: svc.request(
                "POST", "/api/participants/join", {"room_name": room, "uid": uid}))
            self.send("webhook", room, lambda uid=uid: svc.webhook(
                livekit_event("participant_joined", room, uid)))
        self.send("get", room, lambda: svc.request("GET", f"/api/rooms/{room}"))
        self.send("leave", room, lambda: svc.request(
            "POST", "/api/participants/leave", {"room_name": room, "uid": callee}),
            ("room_not_active", "participant_not_found"))
        self.send("webhook", room, lambda: svc.webhook(livekit_event("participant_left", room, callee)))
        ended = self.send("end", room, lambda: svc.request("POST", f"/api/rooms/{room}/end"),
                          ("room_not_active",))
        if ended is not None and (ended.status == 200 or ended.key == "room_not_active"):
            with self.log.lock:
                self.log.finished.append(room)

    def run(self, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            n += 1
            self.call(n)


def admin(**kw):
    return pymysql.connect(autocommit=True, charset="utf8mb4", **MARIADB_ADMIN, **kw)


def limited_user(budget: int) -> None:
    """A database user allowed `budget` connections, owning the fleet database."""
    conn = admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
            for host in ("%", "localhost", "127.0.0.1"):
                cur.execute("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                            (USER, host, PASSWORD))
                cur.execute(f"ALTER USER %s@%s WITH MAX_USER_CONNECTIONS {int(budget)}",
                            (USER, host))
                cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO %s@%s", (USER, host))
    finally:
        conn.close()


def service_connections() -> list[tuple[int, str]]:
    """The fleet user's connections: (id, client host:port)."""
    conn = admin()
    try:
        with conn.cursor() as cur:
            # A connection the server is still refusing (past authentication, over the limit)
            # shows for a moment as 'Connect'; it never holds anything.
            cur.execute("SELECT id, host FROM information_schema.processlist WHERE user = %s "
                        "AND command <> 'Connect'", (USER,))
            return list(cur.fetchall())
    finally:
        conn.close()


def holders(held: Optional[list[tuple[int, str]]] = None) -> list[int]:
    """The pid of the process behind each of the fleet user's connections (`held`, or the
    ones open now)."""
    held = service_connections() if held is None else held
    ports = {host.rsplit(":", 1)[-1] for _, host in held if ":" in host}
    return list(port_owners(ports).values())


@pytest.fixture(scope="module", params=BUDGETS, ids=lambda b: f"budget{b}")
def fleet(request):
    budget = request.param
    limited_user(budget)
    tmp = Path(tempfile.mkdtemp(prefix="call-fleet-"))
    started = time.monotonic()
    proc, port, log_path, db = start_job(
        "mariadb", tmp, "[]", database=DATABASE,
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        extra_env={
            "DATABASE_URL": f"mysql://{USER}:{PASSWORD}@127.0.0.1:3306/{DATABASE}",
            "LAMBDA_CONCURRENCY": str(INSTANCES),
            "DB_IDLE_SECONDS": str(IDLE_S),
            "DB_CONNECTION_LIFETIME_SECONDS": str(LIFETIME_S),
        },
    )
    api_key, api_secret = local_livekit_pair()
    svc = Service(backend="mariadb", host="127.0.0.1", port=port, log_path=log_path, db=db,
                  auth_secret=local_constant("LOCAL_AUTH_JWT_SECRET"),
                  livekit_api_key=api_key, livekit_api_secret=api_secret)
    try:
        wait_healthy(proc, port, log_path, started)
        warm_every_function(port)
        yield budget, svc
    finally:
        stop_tree(proc)
        proc.log_file.close()  # type: ignore[attr-defined]
        if proc.returncode is not None and not os.environ.get("E2E_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def test_a_burst_beyond_the_connections_is_refused_politely_and_every_call_finishes(fleet):
    budget, svc = fleet
    db = svc.db
    log = Log()
    rng = random.Random(SEED)
    clients = [Client(i, svc, log, random.Random(rng.random())) for i in range(CLIENTS)]
    errors: list[BaseException] = []
    until = time.monotonic() + BURST_S

    def run(client: Client) -> None:
        try:
            client.run(until)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()

    # Connections per instance, sampled while the burst runs.
    per_pid_max: dict[int, int] = {}
    held_max = 0
    while any(t.is_alive() for t in threads) and time.monotonic() < until:
        held = service_connections()
        held_max = max(held_max, len(held))
        counts: dict[int, int] = {}
        for pid in holders(held):
            counts[pid] = counts.get(pid, 0) + 1
        for pid, n in counts.items():
            per_pid_max[pid] = max(per_pid_max.get(pid, 0), n)
        time.sleep(0.5)
    for thread in threads:
        thread.join(timeout=GIVE_UP_S + 60)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "a client never finished"
    assert not errors, f"clients failed: {errors[:3]}"

    by_status: dict[int, int] = {}
    for a in log.answers:
        by_status[a.status] = by_status.get(a.status, 0) + 1
    ok = sum(n for s, n in by_status.items() if s < 300)
    latencies = [a.took for a in log.answers]
    figures = {
        "budget": budget, "instances_per_function": INSTANCES, "clients": CLIENTS,
        "seconds": round(elapsed, 1), "answers": len(log.answers),
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "success_rate": round(ok / max(1, len(log.answers)), 3),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "step_p99_ms": round(percentile(log.steps, 0.99) * 1000, 1),
        "calls_finished": len(log.finished),
        "calls_per_s": round(len(log.finished) / elapsed, 2),
        "connections_held_max": held_max,
        "connections_per_instance_max": max(per_pid_max.values(), default=0),
    }
    print(f"\n[fleet] {json.dumps(figures)}")
    if REPORT:
        path = Path(REPORT)
        runs = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(runs + [figures], indent=1))

    failures = [a for a in log.answers if a.status >= 500 and a.status != 503]
    assert not failures, f"5xx other than 503: {failures[:5]}\n{log_tail(svc.log_path, 40)}"
    slow = [a for a in log.answers if a.took > FUNCTION_TIMEOUT_S]
    assert not slow, f"answers after the function timeout: {slow[:5]}"
    bare = [a for a in log.answers if a.status == 503 and not a.retry_after]
    assert not bare, f"503s without Retry-After: {bare[:5]}"
    assert not log.gave_up, f"steps still refused after {GIVE_UP_S}s: {log.gave_up[:5]}"
    unexpected = [a for a in log.answers if a.status not in (200, 409, 503)]
    assert not unexpected, f"unexpected answers: {unexpected[:5]}"
    # A first try refused with 409 means a call was left half-done (a retry may find its
    # own work done: its earlier try committed before the answer was lost).
    # An end after the callee left may find the 1:1 call already over.
    conflicts = [a for a in log.answers if a.status == 409 and not a.retry
                 and not (a.step == "end" and a.key == "room_not_active")]
    assert not conflicts, f"conflicts: {conflicts[:5]}"
    assert len(log.finished) >= CLIENTS, f"only {len(log.finished)} calls finished"

    # Instances hold one connection each; the sweepers up to two.
    over = {(pid, process_name(pid)): n for pid, n in per_pid_max.items()
            if n > (2 if process_name(pid) in SWEEPERS else 1)}
    assert not over, f"instances holding more connections than they may: {over}"
    assert held_max <= budget

    # Every finished call is final; the rooms and their counters agree.
    placeholders = ",".join("?" * len(log.finished))
    not_final = db.rows(f"SELECT room_name, status FROM call_room WHERE status NOT IN (2, 3) "
                        f"AND room_name IN ({placeholders})", *log.finished)
    assert not not_final, f"calls the clients finished that are not final: {not_final[:5]}"
    live_in_final = db.rows("SELECT p.room_name, p.uid FROM call_participant p JOIN call_room r "
                            "ON r.room_name = p.room_name WHERE r.status IN (2, 3) "
                            "AND p.status IN (0, 1)")
    assert not live_in_final, f"live participants in final rooms: {live_in_final[:5]}"
    rooms = dict(db.rows("SELECT status, COUNT(*) FROM call_room GROUP BY status"))
    counted = {s: int(n) for s, n in db.rows(
        "SELECT status, SUM(n) FROM room_count GROUP BY status") if int(n)}
    assert counted == rooms, f"room_count {counted} disagrees with call_room {rooms}"

    # Recovery: the API functions' connections go back within the idle time (the sweepers,
    # invoked every second, stay busy and keep theirs), and a new call goes through without a
    # single refusal.
    def api_holders() -> list[str]:
        return [n for n in map(process_name, holders()) if n not in SWEEPERS]

    burst_over = time.monotonic()
    while api_holders() and time.monotonic() < burst_over + IDLE_S + 3:
        time.sleep(0.25)
    still_held = api_holders()
    released_after = time.monotonic() - burst_over
    print(f"[fleet] API connections back after {released_after:.1f}s (idle time {IDLE_S}s)")
    assert not still_held, f"still held {IDLE_S + 3}s after the burst by: {sorted(still_held)}"
    after = Log()
    Client(99, svc, after, random.Random(SEED)).call(1)
    assert after.finished and all(a.status in (200,) for a in after.answers), after.answers
    db.assert_nothing_left_behind()


def hold_write_lock(svc: Service, room: str, release: threading.Event, held: threading.Event):
    """Another connection takes the room's row (MariaDB) or the write lock (SQLite) and keeps
    it for 30 s, or until `release`."""
    if svc.backend == "mariadb":
        conn = svc.db._mariadb(autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT status FROM call_room WHERE room_name = %s FOR UPDATE", (room,))
                held.set()
                release.wait(30)
            conn.rollback()
        finally:
            conn.close()
    else:
        conn = sqlite3.connect(str(svc.db.sqlite_file), timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            release.wait(30)
            conn.execute("ROLLBACK")
        finally:
            conn.close()


def test_a_write_on_a_row_held_for_30_s_answers_503_in_time(service, clean_after, names):
    svc = service
    room, caller, callee = names("held"), names("ha"), names("hb")
    created = svc.request("POST", "/api/rooms", {
        "source_channel_id": f"ch_{room}", "source_channel_type": 0, "creator": caller,
        "room_name": room, "call_type": 1, "invite_on": 1, "uids": [callee]})
    assert created.status == 200, created
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(svc, room, release, held),
                              daemon=True)
    holder.start()
    try:
        assert held.wait(10), "the lock was never taken"
        started = time.monotonic()
        refused = svc.request("POST", f"/api/rooms/{room}/end")
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join(15)
    assert refused.status == 503 and refused.key == "service_unavailable", refused
    assert refused.headers.get("retry-after") == "1", refused.headers
    # The service's own bounds (README "Database connections"): a 3 s lock wait, then the
    # refusal; 8 s at the very most, and the function's timeout is 10 s.
    assert took < FUNCTION_TIMEOUT_S - 2, f"answered after {took:.1f}s"
    print(f"\n[fleet:{svc.backend}] a write on a held row answered 503 after {took:.2f}s")
    ended = svc.request("POST", f"/api/rooms/{room}/end")
    assert ended.status == 200, ended
    assert svc.db.room_status(room) in (2, 3)
