"""A seeded, fault-injected call simulation over HTTP (issue 9, item 5).

Sixteen client threads play users from a pool of 40 uids against the real local main job
(one process per function, the sweeper every second, RING_TIMEOUT_SECONDS=8), on every
backend: they place 1:1 and group calls, answer, reject, hang up, cancel, end, invite more
people (busy ones are recorded as 5), let calls ring out through the sweeper, repeat actions
(no-ops) and send deliberately illegal requests. Acting as LiveKit, they send the webhooks
LiveKit would send for those joins and leaves (and room_finished after some ends), with
faults: dropped, duplicated (again, concurrently, or late), delayed (so they arrive stale)
and reordered (held back until a newer event of the same participant went out).

Reproduce a run with `SIM_SEED=<seed> SIM_SECONDS=<s> pytest tests/e2e/test_simulation.py`:
the seed fixes every client's choices (each worker draws from random.Random(seed, worker)),
while the interleaving of the threads, the service and the sweeper is the real one.

Who drives what, so that expected answers can be derived:
- each room belongs to the worker that created it; that worker alone acts for the room's
  members (the creator's and invitees' actions), refreshing its view with GET participants
  before each step. Other workers touch the room only by joining a new uid into an open
  (invite_on 0) room, and through the uids they share (busy, participant_in_call,
  creator_in_another_call, channel_has_active_room) and the sweeper (ring-outs);
- a simulated user never changes its presence in one room twice within one clock second
  (LiveKit's createdAt has whole seconds; DESIGN calls an event stale only when it is
  *earlier* than the row's last change, so same-second reorderings are ambiguous by design);
- illegal requests whose outcome is determined (final rooms never change, a uid without a
  row, a ringing or joined row only this worker moves, a room with >= 2 joined, nobody
  ringing and no webhook of ours in flight) must get exactly one stable key; where a race
  with the sweeper or another worker can change the answer, the small set of keys that are
  legal outcomes of that race is accepted.

Checked: no 5xx ever; every answer is a success or an expected stable key with its status;
a webhook whose createdAt is older than a change we saw on that row is never "applied"; a
repeated event id is "duplicate" (exactly one delivery of an id is not); during the run,
every few seconds, the invariants that hold at every commit; after the run, once every ring
has timed out and the sweeper has run, the settled state (DESIGN "settle"), that each call
left to ring out was cancelled with its invitees missed, that GET room agrees with the
database, and that no transaction is left open; then that every state change yielded exactly
one business event: each room's events numbered without a gap, each event's type the one of
the state it reports, one room.created, room.started (when it ran) and room.ended (when final)
per room, no change reported twice, an event for every row state our requests committed, the
sweeper's exact story for each call left to ring out, replaying them rebuilds every room's and
row's final status, the healthy receiver got each exactly once, in order, with a verified
signature, and the pull feed gives each exactly once. And a floor: a run that placed, answered
or rang out nothing, or whose webhooks were all lost, fails (scaled by the requests it made).
"""

from __future__ import annotations

import calendar
import heapq
import itertools
import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional

from conftest import Reply, livekit_event

SEED = int(os.environ.get("SIM_SEED", "90509"))
SIM_SECONDS = float(os.environ.get("SIM_SECONDS", "50"))
WORKERS = int(os.environ.get("SIM_WORKERS", "16"))
POOL_SIZE = 40
CHANNELS = 4
MAX_ROOMS_PER_WORKER = 2
INVARIANT_EVERY_S = 2.5

# Participant and room statuses (DESIGN "Call lifecycle").
RINGING, JOINED, REJECTED, HUNG_UP, MISSED, BUSY, CANCELLED = range(7)
NOT_STARTED, IN_PROGRESS, ENDED, ROOM_CANCELLED = range(4)
LIVE = (RINGING, JOINED)

# Every stable key with its HTTP status (DESIGN "HTTP contract").
KEY_STATUS = {
    "invalid_parameters": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "participant_not_invited": 403,
    "room_not_found": 404,
    "participant_not_found": 404,
    "room_already_exists": 409,
    "channel_has_active_room": 409,
    "creator_in_another_call": 409,
    "participant_in_call": 409,
    "room_not_active": 409,
    "room_full": 409,
    "invalid_transition": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "service_unavailable": 503,
}

# Webhook faults, drawn per event by the worker that makes it.
P_DROP = 0.10
P_DELAY = 0.15
P_REORDER = 0.10
P_DUPLICATE = 0.15


def updated_second(text: str) -> int:
    """`2024-01-15T10:30:00Z` (the service's format) as Unix seconds."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


@dataclass
class SimRoom:
    name: str
    owner: int
    creator: str
    max_participants: int
    invite_on: int
    channel: str
    plan: str  # "normal" or "ringout" (left alone until the sweeper rings it out)
    invitees: list[str]
    members: set[str] = field(default_factory=set)  # uids that have (or may have) a row
    final: bool = False
    created: float = field(default_factory=time.monotonic)


class WebhookBus:
    """LiveKit's side: every event the clients cause goes through here, with faults."""

    def __init__(self, sim: "Simulation"):
        self.sim = sim
        self.cv = threading.Condition()
        self.later: list = []  # heap of (due, seq, event, meta)
        self.held: dict[tuple, list] = {}  # (room, uid) -> [(deadline, event, meta)]
        self.seq = itertools.count()
        self.stopping = False
        self.outcomes: dict[str, list[str]] = defaultdict(list)
        self.thread = threading.Thread(target=self._run, name="sim-webhook-delays", daemon=True)

    # -- making events -------------------------------------------------------------------

    def emit(self, rng: random.Random, kind: str, room: str, uid: Optional[str], at: int) -> None:
        sim = self.sim
        event = livekit_event(kind, room, uid, at=at)
        meta = (kind, room, uid, at)
        sim.count("webhooks", "made", kind)
        if rng.random() < P_DROP:
            sim.count("webhooks", "dropped")
            return
        fate = rng.random()
        dup = rng.random() < P_DUPLICATE
        if fate < P_DELAY:
            sim.count("webhooks", "delayed")
            self._schedule(time.monotonic() + rng.uniform(1.0, 4.0), event, meta)
            if dup:
                sim.count("webhooks", "duplicated", "late")
                self._schedule(time.monotonic() + rng.uniform(1.0, 5.0), event, meta)
            return
        if fate < P_DELAY + P_REORDER:
            # Held back until the next event of this participant has gone out (or ~2 s).
            sim.count("webhooks", "reordered")
            with self.cv:
                self.held.setdefault((room, uid), []).append(
                    (time.monotonic() + rng.uniform(1.5, 3.0), event, meta)
                )
                sim.add_pending(room, 1)
                self.cv.notify()
            return
        if dup and rng.random() < 0.4:
            sim.count("webhooks", "duplicated", "concurrent")
            barrier = threading.Barrier(2)
            twins = [
                threading.Thread(target=self._deliver, args=(event, meta, barrier))
                for _ in range(2)
            ]
            for t in twins:
                t.start()
            for t in twins:
                t.join()
        else:
            self._deliver(event, meta)
            if dup:
                if rng.random() < 0.5:
                    sim.count("webhooks", "duplicated", "again")
                    self._deliver(event, meta)
                else:
                    sim.count("webhooks", "duplicated", "late")
                    self._schedule(time.monotonic() + rng.uniform(0.5, 4.0), event, meta)
        self._release((room, uid))

    def _schedule(self, due: float, event: dict, meta: tuple) -> None:
        with self.cv:
            heapq.heappush(self.later, (due, next(self.seq), event, meta))
            self.sim.add_pending(meta[1], 1)
            self.cv.notify()

    def _release(self, key: tuple) -> None:
        """A newer event of this participant went out: the held older ones follow it."""
        with self.cv:
            held = self.held.pop(key, [])
        for _, event, meta in held:
            self._deliver(event, meta)
            self.sim.add_pending(meta[1], -1)

    # -- the delay queue -----------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def _due(self, now: float) -> list:
        due = []
        while self.later and (self.later[0][0] <= now or self.stopping):
            _, _, event, meta = heapq.heappop(self.later)
            due.append((event, meta))
        for key in list(self.held):
            keep = []
            for item in self.held[key]:
                if item[0] <= now or self.stopping:
                    due.append((item[1], item[2]))
                else:
                    keep.append(item)
            if keep:
                self.held[key] = keep
            else:
                del self.held[key]
        return due

    def _run(self) -> None:
        while True:
            with self.cv:
                now = time.monotonic()
                due = self._due(now)
                if not due:
                    if self.stopping:
                        return
                    deadlines = [d for d, *_ in self.later[:1]] + [
                        item[0] for items in self.held.values() for item in items
                    ]
                    wait = min(deadlines) - now if deadlines else 0.5
                    self.cv.wait(timeout=max(0.01, min(wait, 0.5)))
                    continue
            for event, meta in due:
                self._deliver(event, meta)
                self.sim.add_pending(meta[1], -1)

    def stop(self) -> None:
        """Deliver everything still delayed or held, then stop."""
        with self.cv:
            self.stopping = True
            self.cv.notify()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the webhook delay queue did not drain"

    # -- delivery ------------------------------------------------------------------------

    def _deliver(self, event: dict, meta: tuple, barrier: Optional[threading.Barrier] = None):
        sim = self.sim
        kind, room, uid, at = meta
        # What we knew of the row before sending: a change seen in a later second than the
        # event makes it stale (DESIGN: stale events never undo newer state).
        with sim.lock:
            known = sim.row_sec.get((room, uid))
        if barrier is not None:
            barrier.wait()
        reply = sim.webhook(event)
        sim.count("webhooks", "delivered")
        if reply.status != 200:
            sim.violation(f"webhook {kind} {room}/{uid} answered {reply!r}")
            return
        outcome = (reply.json.get("data") or {}).get("outcome")
        sim.count("webhook outcomes", kind, str(outcome))
        with sim.lock:
            self.outcomes[event["id"]].append(outcome)
        if outcome not in ("applied", "ignored", "duplicate", "deleted_again"):
            sim.violation(f"webhook {kind} {room}/{uid}: unknown outcome {reply!r}")
        if (
            outcome == "applied"
            and kind in ("participant_joined", "participant_left")
            and known is not None
            and known > at
        ):
            sim.count("webhooks", "stale", "applied")
            sim.violation(
                f"stale {kind} for {uid} in {room} (createdAt {at}, the row had changed at "
                f"{known}) was applied: {sim.snapshot_of_uid(uid)}"
            )
        elif known is not None and known > at:
            sim.count("webhooks", "stale", "refused")
        elif outcome == "applied" and kind == "participant_joined":
            # Our clients connect right after a successful join, so this is rare: note why.
            sim.note(f"{kind} {room}/{uid} at {at} applied (row last seen changed at {known}): "
                     f"{sim.snapshot_of_uid(uid)}")


class Simulation:
    def __init__(self, service, prefix: str, seed: int, seconds: float):
        self.service = service
        self.prefix = prefix
        self.seed = seed
        self.seconds = seconds
        self.lock = threading.Lock()
        self.stats: Counter = Counter()
        self.violations: list[str] = []
        self.notes: list[str] = []
        self.rooms: dict[str, SimRoom] = {}
        self.pool = [f"{prefix}_u{i:02d}" for i in range(POOL_SIZE)]
        self.channels = [f"{prefix}_ch{i}" for i in range(CHANNELS)]
        self.row_sec: dict[tuple, int] = {}  # (room, uid) -> latest updated_at second seen
        # Row states our own requests committed (their answers), each owed its event:
        # ("row", room, uid, status, updated_at) and, for API joins, ("join", room, uid, join_time).
        self.caused: set[tuple] = set()
        self.guard: dict[tuple, int] = {}  # (room, uid) -> createdAt of our latest presence event
        self.pending: Counter = Counter()  # room -> our webhooks delayed or held back
        # What the clients believe about who is in a call (uid -> (room, when seen)): users
        # mostly call people they think are free; the rest of the time, anyone.
        self.live_hint: dict[str, tuple[str, float]] = {}
        self.strangers = itertools.count()
        self.bus = WebhookBus(self)
        self.deadline = 0.0

    # -- bookkeeping ---------------------------------------------------------------------

    def count(self, *key, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)
            shown = len(self.violations) <= 15
        if shown:
            print(f"[sim] VIOLATION: {text}", flush=True)

    def add_pending(self, room: str, n: int) -> None:
        with self.lock:
            self.pending[room] += n

    def note(self, text: str) -> None:
        with self.lock:
            self.notes.append(text)

    def stranger(self, w: int) -> str:
        """A uid nobody else ever uses: it has no row anywhere until this worker makes one."""
        return f"{self.prefix}_x{w:02d}_{next(self.strangers)}"

    def observe(self, rows, committed: bool = True) -> None:
        """Rows as an answer showed them; `committed`: the answer of a write, so each row's
        state is in the database (a read may show a passed deadline not yet written)."""
        with self.lock:
            for row in rows:
                key = (row["room_name"], row["uid"])
                sec = updated_second(row["updated_at"])
                if sec > self.row_sec.get(key, -1):
                    self.row_sec[key] = sec
                if committed:
                    self.caused.add(("row", *key, row["status"], row["updated_at"]))

    def observe_join(self, data: dict) -> None:
        key = (data["room_name"], data["uid"])
        sec = int(data["join_time"]) // 1000
        with self.lock:
            if sec > self.row_sec.get(key, -1):
                self.row_sec[key] = sec
            self.caused.add(("join", *key, int(data["join_time"])))

    def may_change_presence(self, room: str, uid: str) -> bool:
        with self.lock:
            return int(time.time()) > self.guard.get((room, uid), -1)

    def presence(self, rng: random.Random, kind: str, room: str, uid: str) -> None:
        """The client (dis)connected from LiveKit: LiveKit reports it."""
        at = int(time.time())
        with self.lock:
            self.guard[(room, uid)] = max(at, self.guard.get((room, uid), -1))
        self.bus.emit(rng, kind, room, uid, at)

    def story_of_room(self, room: str) -> dict:
        """What the database holds of a room (its row, its rows, its events in order), so a
        violation shows what changed it and when."""
        try:
            db = self.service.db
            return {
                "room": db.rows("SELECT status, end_reason, updated_at, deadline FROM call_room "
                                "WHERE room_name = ?", room),
                "rows": db.rows("SELECT uid, status, reason, updated_at FROM call_participant "
                                "WHERE room_name = ? ORDER BY id", room),
                "events": db.rows("SELECT seq, type, occurred_at FROM call_event "
                                  "WHERE room_name = ? ORDER BY seq", room),
            }
        except Exception as err:  # diagnostics only
            return {"error": repr(err)}

    def snapshot_of_uid(self, uid: str) -> list:
        try:
            return self.service.db.rows(
                "SELECT room_name, status, updated_at FROM call_participant WHERE uid = ?", uid
            )
        except Exception as err:  # diagnostics only
            return [repr(err)]

    # -- HTTP ----------------------------------------------------------------------------

    def call(self, label: str, method: str, path: str, body=None, *, as_uid=None,
             token="service") -> Reply:
        try:
            reply = self.service.request(method, path, body, token=token, as_uid=as_uid)
        except Exception as err:
            reply = Reply(status=599, headers={}, text=f"{type(err).__name__}: {err}")
        self.count("requests", label, reply.status)
        if time.monotonic() < self.deadline:
            self.count("run requests")
        if reply.status >= 500:
            self.violation(f"{reply.status} on {label}: {method} {path} {body!r} -> {reply!r}")
        return reply

    def webhook(self, event: dict) -> Reply:
        try:
            reply = self.service.webhook(event)
        except Exception as err:
            reply = Reply(status=599, headers={}, text=f"{type(err).__name__}: {err}")
        self.count("requests", "livekit-webhook", reply.status)
        if time.monotonic() < self.deadline:
            self.count("run requests")
        if reply.status >= 500:
            self.violation(f"{reply.status} on webhook {event!r} -> {reply!r}")
        return reply

    def outcome(self, label: str, reply: Reply) -> str:
        body = reply.json if isinstance(reply.json, dict) else {}
        if reply.status == 200 and body.get("code") == 0:
            return "ok"
        if reply.status >= 500:
            return f"http_{reply.status}"
        key = body.get("error")
        if KEY_STATUS.get(key) != reply.status or body.get("code") != reply.status:
            self.violation(f"{label}: not an error envelope with a stable key: {reply!r}")
            return f"http_{reply.status}"
        return key

    def expect(self, label: str, reply: Reply, allowed: set[str], ctx: str = "",
               room: Optional[str] = None) -> str:
        got = self.outcome(label, reply)
        self.count("outcomes", label, got)
        if got not in allowed and not got.startswith("http_5"):
            story = f"; the room as it is now: {self.story_of_room(room)}" if room else ""
            self.violation(f"{label} {ctx}: expected {sorted(allowed)}, got {reply!r}{story}")
        return got

    def illegal(self, label: str, reply: Reply, keys: set[str], ctx: str = "",
                room: Optional[str] = None) -> str:
        """A request that must be refused: a 4xx with one of `keys` (exactly one where the
        outcome is determined). `room`: whose rows and events a violation shows."""
        got = self.expect(f"illegal {label}", reply, keys, ctx, room)
        self.count("illegal", got)
        self.count("illegal by request", label, got)
        return got

    # -- the run -------------------------------------------------------------------------

    def run(self) -> None:
        self.bus.start()
        self.deadline = time.monotonic() + self.seconds
        threads = [
            threading.Thread(target=self._worker, args=(w,), name=f"sim-worker-{w}")
            for w in range(WORKERS)
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(INVARIANT_EVERY_S)
            self.check_invariants("during the run")
        for t in threads:
            t.join()
        self.bus.stop()

    def _worker(self, w: int) -> None:
        rng = random.Random(self.seed * 1000 + w)
        mine: list[SimRoom] = []
        made = itertools.count()
        try:
            while time.monotonic() < self.deadline:
                # A call left to ring out stops counting once the sweeper must have taken it.
                rung_out = time.monotonic() - self.service.ring_timeout_s - 3
                mine = [r for r in mine if not r.final
                        and (r.plan == "normal" or r.created > rung_out)]
                live = [r for r in mine if r.plan == "normal"]
                if len(mine) < MAX_ROOMS_PER_WORKER and (not live or rng.random() < 0.25):
                    room = self.place_call(w, rng, next(made))
                    if room is not None:
                        mine.append(room)
                    else:
                        time.sleep(rng.uniform(0.1, 0.4))  # busy: the user tries again later
                else:
                    roll = rng.random()
                    if roll < 0.06:
                        self.intrude(w, rng)
                    elif roll < 0.10:
                        self.stray_illegal(w, rng)
                    elif live:
                        self.step(w, rng, rng.choice(live))
                time.sleep(rng.uniform(0.0, 0.1))
        except Exception as err:  # a bug in the simulation itself must fail the test too
            import traceback

            self.violation(f"worker {w} crashed: {err!r}\n{traceback.format_exc()}")

    # -- placing calls -------------------------------------------------------------------

    def free_uids(self) -> list[str]:
        now = time.monotonic()
        with self.lock:
            return [u for u in self.pool
                    if u not in self.live_hint or now - self.live_hint[u][1] > 12]

    def hint(self, uid: str, room: str, live: bool) -> None:
        with self.lock:
            if live:
                self.live_hint[uid] = (room, time.monotonic())
            elif self.live_hint.get(uid, ("",))[0] == room:
                del self.live_hint[uid]

    def place_call(self, w: int, rng: random.Random, n: int) -> Optional[SimRoom]:
        group = rng.random() < 0.45
        size = rng.randint(2, 3) if group else 1
        free = self.free_uids()
        if len(free) > size and rng.random() < 0.75:
            people = rng.sample(free, size + 1)
        else:
            people = rng.sample(self.pool, size + 1)
        creator, invitees = people[0], people[1:]
        if group:
            # Sometimes fewer seats than people, so joins meet room_full.
            max_p = max(2, rng.randint(size, size + 2))
        else:
            max_p = 2
        invite_on = 1 if rng.random() < 0.5 else 0
        channel = rng.choice(self.channels) if rng.random() < 0.3 else ""
        plan = "ringout" if rng.random() < 0.12 else "normal"
        name = f"{self.prefix}_r{w:02d}_{n}"
        body = {
            "creator": creator,
            "room_name": name,
            "uids": invitees + ([rng.choice(invitees)] if rng.random() < 0.1 else []),
            "call_type": rng.randint(0, 1),
            "invite_on": invite_on,
            "max_participants": max_p,
        }
        if channel:
            body.update(source_channel_id=channel, source_channel_type=0)
        as_uid = creator if rng.random() < 0.5 else None
        reply = self.call("create-room", "POST", "/api/rooms", body, as_uid=as_uid)
        got = self.expect(
            "create-room",
            reply,
            {"ok", "creator_in_another_call", "participant_in_call", "channel_has_active_room"},
        )
        self.count("calls", "create " + got)
        if got == "participant_in_call":
            busy = (reply.json.get("data") or {}).get("busy_uids")
            if not busy or not set(busy) <= set(invitees):
                self.violation(f"create {name}: busy_uids {busy!r} not among {invitees}")
        elif got == "channel_has_active_room":
            other = (reply.json.get("data") or {}).get("room_name")
            if not isinstance(other, str) or other == name:
                self.violation(f"create {name}: channel_has_active_room names {other!r}")
        if got != "ok":
            return None
        data = reply.data
        room = SimRoom(name, w, creator, max_p, invite_on, channel, plan, invitees,
                       members={creator, *invitees})
        with self.lock:
            self.rooms[name] = room
        self.count("calls", "placed", "group" if group else "1:1")
        for uid in (creator, *invitees):
            self.hint(uid, name, True)
        if plan == "ringout":
            self.count("calls", "left to ring out")
        statuses = {p["uid"]: p["status"] for p in data.get("participants", [])}
        want = {creator: JOINED, **{u: RINGING for u in invitees}}
        if statuses != want:
            self.violation(f"create {name}: participants {statuses} != {want}")
        self.observe(data.get("participants", []))
        self.presence(rng, "participant_joined", name, creator)
        return room

    # -- one step in a room this worker owns ------------------------------------------

    def refresh(self, rng: random.Random, room: SimRoom) -> Optional[dict]:
        as_uid = room.creator if rng.random() < 0.3 else None
        reply = self.call("list-participants", "GET", f"/api/rooms/{room.name}/participants",
                          as_uid=as_uid)
        if self.expect("list-participants", reply, {"ok"}) != "ok":
            return None
        self.observe(reply.data, committed=False)
        rows = {p["uid"]: p for p in reply.data}
        for p in reply.data:
            self.hint(p["uid"], room.name, p["status"] in LIVE)
        with self.lock:
            room.members |= set(rows)
        return rows

    def stable(self, room: SimRoom, st: dict) -> bool:
        """Nothing but this worker can change the room's rows now: two or more joined, nobody
        ringing (the sweeper has nothing to do), no webhook of ours in flight."""
        joined = sum(1 for s in st.values() if s == JOINED)
        ringing = sum(1 for s in st.values() if s == RINGING)
        with self.lock:
            pending = self.pending[room.name]
        return joined >= 2 and ringing == 0 and pending == 0

    def step(self, w: int, rng: random.Random, room: SimRoom) -> None:
        rows = self.refresh(rng, room)
        if rows is None:
            return
        st = {u: p["status"] for u, p in rows.items()}
        if not any(s in LIVE for s in st.values()):
            self.final_room(w, rng, room, st)
            return
        c = room.creator
        ringing = [u for u, s in st.items() if s == RINGING]
        joined = [u for u, s in st.items() if s == JOINED]
        closed = [u for u, s in st.items() if s not in LIVE and u != c]
        stable = self.stable(room, st)
        cands: list[tuple[float, Callable[[], None]]] = []

        def add(weight: float, fn: Callable, *args) -> None:
            cands.append((weight, lambda: fn(rng, room, *args)))

        for u in ringing:
            if self.may_change_presence(room.name, u):
                add(3.0, self.answer, u)
                add(0.3, self.pair_answer_vs_cancel, u)
                if st.get(c) == JOINED:
                    add(0.3, self.pair_answer_vs_end, u)
            add(1.2, self.reject, u)
            add(0.6, self.cancel, u)
            add(0.3, self.pair_reject_vs_cancel, u)
            add(0.3, self.illegal_leave_ringing, u)
            add(0.15, self.service_busy, u)
        if len(ringing) >= 2:
            a, b = rng.sample(ringing, 2)
            if self.may_change_presence(room.name, a) and self.may_change_presence(room.name, b):
                add(0.6, self.pair_answer_race, a, b)
        for u in joined:
            if u != c and self.may_change_presence(room.name, u):
                add(2.0, self.hang_up, u)
                add(0.6, self.disconnect, u)
            add(0.3, self.illegal_reject_joined, u)
            if u != c:
                add(0.2, self.illegal_cancel_joined, u)
            with self.lock:
                quiet = self.pending[room.name] == 0
            if quiet:
                add(0.3, self.repeat_join, u)
        if len(joined) >= 2:
            a, b = rng.sample(joined, 2)
            if self.may_change_presence(room.name, a) and self.may_change_presence(room.name, b):
                add(0.4, self.pair_both_leave, a, b)
        if st.get(c) == JOINED:
            if self.may_change_presence(room.name, c):
                add(0.7, self.hang_up, c)  # before an answer: the creator cancels the call
            add(1.0, self.end, [u for u in joined])
            add(0.8, self.invite_more)
            if ringing and not [u for u in joined if u != c]:
                add(0.2, self.start)
            add(0.15, self.livekit_closes_room)
        for u in closed + ([c] if st.get(c) == HUNG_UP else []):
            if self.may_change_presence(room.name, u):
                add(0.25, self.join_again, u, st[u])
        for u in closed:
            add(0.4, self.ring_again, u, st[u])
            add(0.25, self.repeat_status, u, st[u])
            if st[u] != HUNG_UP:
                add(0.2, self.illegal_leave_closed, u, st[u])
        if stable:
            add(0.3, self.illegal_create_as_live_creator, rng.choice(joined))
            add(0.2, self.illegal_create_with_live_invitee, rng.choice(joined))
            if room.channel:
                add(0.3, self.illegal_channel_taken)
        if room.invite_on == 0:
            if len(joined) >= room.max_participants:
                add(0.5, self.join_full, stable)
            else:
                add(0.4, self.open_join, w)
        else:
            add(0.3, self.illegal_not_invited, w, stable)
        add(0.2, self.illegal_reject_without_row, w)
        add(0.1, self.illegal_leave_without_row, w)
        add(0.1, self.illegal_name_taken, w)
        add(0.1, self.illegal_bad_status, rng.choice(list(st)))
        add(0.3, self.illegal_forbidden, w, st)

        total = sum(weight for weight, _ in cands)
        pick = rng.uniform(0, total)
        for weight, fn in cands:
            pick -= weight
            if pick <= 0:
                fn()
                return
        cands[-1][1]()

    # -- legal actions -------------------------------------------------------------------

    def _join(self, rng: random.Random, room: SimRoom, uid: str, label: str = "join-room",
              allowed=frozenset({"ok", "room_full", "room_not_active", "participant_in_call"}),
              barrier: Optional[threading.Barrier] = None) -> str:
        as_uid = uid if rng.random() < 0.7 else None
        if barrier is not None:
            barrier.wait()
        reply = self.call(label, "POST", "/api/participants/join",
                          {"room_name": room.name, "uid": uid}, as_uid=as_uid)
        got = self.expect(label, reply, set(allowed), f"{room.name}/{uid}")
        if got == "ok":
            data = reply.data
            if data.get("status") != JOINED or not data.get("token"):
                self.violation(f"join {room.name}/{uid}: {data!r}")
            self.observe_join(data)
            self.presence(rng, "participant_joined", room.name, uid)
        return got

    def answer(self, rng, room, uid):
        if rng.random() < 0.2:
            # PUT 1: a join without a token in the reply (so no LiveKit connection follows).
            reply = self.call("participant-status", "PUT",
                              f"/api/rooms/{room.name}/participants/{uid}/status",
                              {"status": JOINED}, as_uid=uid if rng.random() < 0.7 else None)
            got = self.expect("answer (PUT 1)", reply,
                              {"ok", "room_full", "room_not_active", "participant_in_call"},
                              f"{room.name}/{uid}")
            if got == "ok":
                self.observe([reply.data])
                if reply.data.get("status") != JOINED or "token" in reply.data:
                    self.violation(f"PUT 1 {room.name}/{uid}: {reply.data!r}")
        else:
            got = self._join(rng, room, uid)
        self.count("calls", "answer " + got)

    def join_again(self, rng, room, uid, status):
        # Join from 2-6: answer after rejecting, a missed or cancelled ring, or a hang-up.
        got = self._join(rng, room, uid, "join-room (again)")
        self.count("calls", f"join again from {status} " + got)

    def reject(self, rng, room, uid):
        reply = self.call("participant-status", "PUT",
                          f"/api/rooms/{room.name}/participants/{uid}/status", {"status": REJECTED},
                          as_uid=uid if rng.random() < 0.7 else None)
        got = self.expect("reject", reply, {"ok", "invalid_transition"}, f"{room.name}/{uid}")
        self.count("calls", "reject " + got)
        if got == "ok":
            self.observe([reply.data])

    def cancel(self, rng, room, uid, barrier=None):
        as_uid = room.creator if rng.random() < 0.7 else None
        if barrier is not None:
            barrier.wait()
        reply = self.call("participant-status", "PUT",
                          f"/api/rooms/{room.name}/participants/{uid}/status",
                          {"status": CANCELLED}, as_uid=as_uid)
        got = self.expect("cancel", reply, {"ok", "invalid_transition"}, f"{room.name}/{uid}")
        self.count("calls", "cancel " + got)
        if got == "ok":
            self.observe([reply.data])
        return got

    def service_busy(self, rng, room, uid):
        # The IM backend learns the callee is busy elsewhere and says so (PUT 5, service only).
        reply = self.call("participant-status", "PUT",
                          f"/api/rooms/{room.name}/participants/{uid}/status", {"status": BUSY})
        got = self.expect("busy (PUT 5)", reply, {"ok", "invalid_transition"}, f"{room.name}/{uid}")
        self.count("calls", "marked busy " + got)
        if got == "ok":
            self.observe([reply.data])

    def _leave(self, rng, room, uid, label="leave-room", barrier=None) -> str:
        as_uid = uid if rng.random() < 0.7 else None
        by_status = rng.random() < 0.2
        if barrier is not None:
            barrier.wait()
        if by_status:
            label += " (PUT 3)"
            reply = self.call("participant-status", "PUT",
                              f"/api/rooms/{room.name}/participants/{uid}/status",
                              {"status": HUNG_UP}, as_uid=as_uid)
        else:
            reply = self.call(label, "POST", "/api/participants/leave",
                              {"room_name": room.name, "uid": uid}, as_uid=as_uid)
        got = self.expect(label, reply, {"ok"}, f"{room.name}/{uid}")
        if got == "ok":
            self.observe([reply.data])
            if reply.data.get("status") != HUNG_UP:
                self.violation(f"leave {room.name}/{uid}: {reply.data!r}")
            self.presence(rng, "participant_left", room.name, uid)
        return got

    def hang_up(self, rng, room, uid):
        got = self._leave(rng, room, uid)
        self.count("calls", ("creator hangs up " if uid == room.creator else "hang up ") + got)

    def disconnect(self, rng, room, uid):
        # The client drops out of LiveKit without calling leave: only the webhook tells us.
        self.count("calls", "disconnect (webhook only)")
        self.presence(rng, "participant_left", room.name, uid)

    def end(self, rng, room, joined):
        as_uid = room.creator if rng.random() < 0.6 else None
        if rng.random() < 0.25:
            # PUT 2 ends a running call, PUT 3 cancels one that never started; a call started
            # by PUT 1 with only its creator in it is at 1, so PUT 3 may meet invalid_transition.
            target = ENDED if [u for u in joined if u != room.creator] else ROOM_CANCELLED
            reply = self.call("room-status", "PUT", f"/api/rooms/{room.name}/status",
                              {"status": target}, as_uid=as_uid)
            got = self.expect(f"end (PUT {target})", reply, {"ok", "invalid_transition"},
                              room.name)
            self.count("calls", f"end by PUT {target} " + got)
            if got != "ok":
                return
        else:
            reply = self.call("end-room", "POST", f"/api/rooms/{room.name}/end", as_uid=as_uid)
            got = self.expect("end-room", reply, {"ok"}, room.name)
            self.count("calls", "end " + got)
        if got == "ok":
            if reply.data.get("status") not in (ENDED, ROOM_CANCELLED):
                self.violation(f"end {room.name}: {reply.data!r}")
            # LiveKit's DeleteRoom disconnects everyone, then the room is finished.
            for uid in joined:
                self.presence(rng, "participant_left", room.name, uid)
            if rng.random() < 0.4:
                self.bus.emit(rng, "room_finished", room.name, None, int(time.time()))

    def livekit_closes_room(self, rng, room):
        # LiveKit closed the room on its own (say, an empty-room timeout): only room_finished.
        self.count("calls", "room_finished from LiveKit")
        self.bus.emit(rng, "room_finished", room.name, None, int(time.time()))

    def invite_more(self, rng, room):
        with self.lock:
            fresh = [u for u in self.pool if u not in room.members]
            picked = rng.sample(fresh, min(len(fresh), rng.randint(1, 2)))
            room.members |= set(picked)
        if not picked:
            return
        as_uid = room.creator if rng.random() < 0.6 else None
        reply = self.call("invite", "POST", f"/api/rooms/{room.name}/invite", {"uids": picked},
                          as_uid=as_uid)
        got = self.expect("invite", reply, {"ok", "room_not_active"}, room.name)
        self.count("calls", "invite " + got)
        if got == "ok":
            self.observe(reply.data)
            for row in reply.data:
                self.count("calls", "invited as", {RINGING: "ringing", BUSY: "busy"}.get(
                    row["status"], str(row["status"])))
                if row["status"] not in (RINGING, BUSY):
                    self.violation(f"invite {room.name}: new row {row!r}")

    def ring_again(self, rng, room, uid, status):
        as_uid = room.creator if rng.random() < 0.5 else None
        if rng.random() < 0.3:
            reply = self.call("participant-status", "PUT",
                              f"/api/rooms/{room.name}/participants/{uid}/status",
                              {"status": RINGING}, as_uid=as_uid)
            label = "ring again (PUT 0)"
        else:
            reply = self.call("invite", "POST", f"/api/rooms/{room.name}/invite",
                              {"uids": [uid]}, as_uid=as_uid)
            label = "ring again"
        got = self.expect(label, reply, {"ok", "room_not_active"}, f"{room.name}/{uid}")
        self.count("calls", f"{label} " + got)
        if got == "ok":
            rows = reply.data if isinstance(reply.data, list) else [reply.data]
            self.observe(rows)
            if [r["status"] for r in rows] not in ([RINGING], [BUSY]):
                self.violation(f"{label} {room.name}/{uid} from {status}: {reply.data!r}")

    def start(self, rng, room):
        reply = self.call("room-status", "PUT", f"/api/rooms/{room.name}/status", {"status": 1},
                          as_uid=room.creator if rng.random() < 0.5 else None)
        got = self.expect("start (PUT 1)", reply, {"ok", "invalid_transition"}, room.name)
        self.count("calls", "start " + got)

    def open_join(self, rng, room, w):
        # Someone joins an open (invite_on 0) call without an invite.
        uid = self.stranger(w) if rng.random() < 0.5 else self._claim(rng, room)
        if uid is None:
            return
        with self.lock:
            room.members.add(uid)
        got = self._join(rng, room, uid, "join-room (open)")
        self.count("calls", "open join " + got)

    def _claim(self, rng, room) -> Optional[str]:
        with self.lock:
            fresh = [u for u in self.pool if u not in room.members]
            if not fresh:
                return None
            uid = rng.choice(fresh)
            room.members.add(uid)
            return uid

    def intrude(self, w: int, rng: random.Random) -> None:
        """Join a pool uid into another worker's open call."""
        with self.lock:
            targets = [r for r in self.rooms.values()
                       if r.owner != w and not r.final and r.invite_on == 0 and r.plan == "normal"]
        if not targets:
            return
        room = rng.choice(targets)
        uid = self._claim(rng, room)
        if uid is None:
            return
        got = self._join(rng, room, uid, "join-room (other worker)")
        self.count("calls", "join another worker's call " + got)

    def repeat_join(self, rng, room, uid):
        reply = self.call("join-room", "POST", "/api/participants/join",
                          {"room_name": room.name, "uid": uid},
                          as_uid=uid if rng.random() < 0.5 else None)
        got = self.expect("repeat join", reply, {"ok", "room_not_active"}, f"{room.name}/{uid}")
        self.count("repeats", "join " + got)
        if got == "ok":
            self.observe_join(reply.data)
            if reply.data.get("status") != JOINED:
                self.violation(f"repeat join {room.name}/{uid}: {reply.data!r}")

    def repeat_status(self, rng, room, uid, status):
        # The same status again: 200, unchanged. Who may say so: the uid for 2 and 3, the
        # creator for 6, the service for 4 and 5.
        as_uid = {REJECTED: uid, HUNG_UP: uid, CANCELLED: room.creator}.get(status)
        if rng.random() < 0.3:
            as_uid = None
        reply = self.call("participant-status", "PUT",
                          f"/api/rooms/{room.name}/participants/{uid}/status", {"status": status},
                          as_uid=as_uid)
        got = self.expect("repeat status", reply, {"ok"}, f"{room.name}/{uid} at {status}")
        self.count("repeats", f"PUT {status} " + got)
        if got == "ok" and reply.data.get("status") != status:
            self.violation(f"repeat PUT {status} {room.name}/{uid} changed it: {reply.data!r}")

    # -- concurrent pairs -----------------------------------------------------------------

    def _pair(self, *fns) -> list:
        barrier = threading.Barrier(len(fns))
        results: list = [None] * len(fns)

        def run(i, fn):
            try:
                results[i] = fn(barrier)
            except threading.BrokenBarrierError:
                pass

        threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def pair_answer_vs_end(self, rng, room, uid):
        r1, r2 = random.Random(rng.random()), random.Random(rng.random())

        def end(barrier):
            barrier.wait()
            reply = self.call("end-room", "POST", f"/api/rooms/{room.name}/end",
                              as_uid=room.creator if r2.random() < 0.5 else None)
            return self.expect("end-room (racing an answer)", reply, {"ok"}, room.name)

        got = self._pair(lambda b: self._join(r1, room, uid, barrier=b), end)
        self.count("races", f"answer vs end: {got[0]} / {got[1]}")

    def pair_answer_vs_cancel(self, rng, room, uid):
        r1, r2 = random.Random(rng.random()), random.Random(rng.random())
        got = self._pair(lambda b: self._join(r1, room, uid, barrier=b),
                         lambda b: self.cancel(r2, room, uid, barrier=b))
        self.count("races", f"answer vs cancel: {got[0]} / {got[1]}")

    def pair_reject_vs_cancel(self, rng, room, uid):
        r2 = random.Random(rng.random())

        def reject(barrier):
            barrier.wait()
            reply = self.call("participant-status", "PUT",
                              f"/api/rooms/{room.name}/participants/{uid}/status",
                              {"status": REJECTED}, as_uid=uid)
            return self.expect("reject (racing a cancel)", reply, {"ok", "invalid_transition"},
                               f"{room.name}/{uid}")

        got = self._pair(reject, lambda b: self.cancel(r2, room, uid, barrier=b))
        self.count("races", f"reject vs cancel: {got[0]} / {got[1]}")
        if got == ["ok", "ok"]:
            self.violation(f"{room.name}/{uid}: both the reject and the cancel of one ring won")

    def pair_answer_race(self, rng, room, a, b):
        r1, r2 = random.Random(rng.random()), random.Random(rng.random())
        got = self._pair(lambda bar: self._join(r1, room, a, barrier=bar),
                         lambda bar: self._join(r2, room, b, barrier=bar))
        self.count("races", f"two answers: {' / '.join(sorted(got))}")

    def pair_both_leave(self, rng, room, a, b):
        r1, r2 = random.Random(rng.random()), random.Random(rng.random())
        got = self._pair(lambda bar: self._leave(r1, room, a, barrier=bar),
                         lambda bar: self._leave(r2, room, b, barrier=bar))
        self.count("races", f"both leave: {' / '.join(sorted(got))}")

    # -- illegal requests ------------------------------------------------------------------

    def final_room(self, w, rng, room, st):
        """A final room never changes again: every answer about it is determined."""
        with self.lock:
            room.final = True
        uid = rng.choice(list(st))
        for _ in range(rng.randint(0, 2)):
            kind = rng.randrange(7)
            if kind == 0:
                reply = self.call("join-room", "POST", "/api/participants/join",
                                  {"room_name": room.name, "uid": uid}, as_uid=uid)
                self.illegal("join a final room", reply, {"room_not_active"}, room=room.name)
            elif kind == 1:
                reply = self.call("invite", "POST", f"/api/rooms/{room.name}/invite",
                                  {"uids": [rng.choice(self.pool)]}, as_uid=room.creator)
                self.illegal("invite into a final room", reply, {"room_not_active"}, room=room.name)
            elif kind == 2:
                reply = self.call("room-status", "PUT", f"/api/rooms/{room.name}/status",
                                  {"status": 1})
                self.illegal("start a final room", reply, {"invalid_transition"}, room=room.name)
            elif kind == 3:
                reply = self.call("end-room", "POST", f"/api/rooms/{room.name}/end",
                                  as_uid=room.creator)
                got = self.expect("end a final room", reply, {"ok"})
                self.count("repeats", "end a final room " + got)
                if got == "ok" and reply.data.get("status") not in (ENDED, ROOM_CANCELLED):
                    self.violation(f"end of final {room.name} answered {reply.data!r}")
            elif kind == 4:
                reply = self.call("leave-room", "POST", "/api/participants/leave",
                                  {"room_name": room.name, "uid": uid}, as_uid=uid)
                if st[uid] == HUNG_UP:
                    got = self.expect("leave again", reply, {"ok"})
                    self.count("repeats", "leave again " + got)
                else:
                    self.illegal(f"leave from {st[uid]}", reply, {"invalid_transition"},
                                 room=room.name)
            elif kind == 5:
                reply = self.call("participant-status", "PUT",
                                  f"/api/rooms/{room.name}/participants/{uid}/status",
                                  {"status": REJECTED}, as_uid=uid)
                if st[uid] == REJECTED:
                    self.expect("reject again", reply, {"ok"})
                    self.count("repeats", "reject again")
                else:
                    self.illegal(f"reject from {st[uid]}", reply, {"invalid_transition"},
                                 room=room.name)
            else:
                self.bus.emit(rng, "room_finished", room.name, None, int(time.time()))

    def illegal_leave_ringing(self, rng, room, uid):
        # Ringing, rung out, busied or cancelled meanwhile: never joined, so never leavable.
        reply = self.call("leave-room", "POST", "/api/participants/leave",
                          {"room_name": room.name, "uid": uid}, as_uid=uid)
        self.illegal("leave while ringing", reply, {"invalid_transition"}, room=room.name)

    def illegal_reject_joined(self, rng, room, uid):
        reply = self.call("participant-status", "PUT",
                          f"/api/rooms/{room.name}/participants/{uid}/status",
                          {"status": REJECTED}, as_uid=uid)
        self.illegal("reject when joined", reply, {"invalid_transition"}, room=room.name)

    def illegal_cancel_joined(self, rng, room, uid):
        reply = self.call("participant-status", "PUT",
                          f"/api/rooms/{room.name}/participants/{uid}/status",
                          {"status": CANCELLED}, as_uid=room.creator)
        self.illegal("cancel a joined row", reply, {"invalid_transition"}, room=room.name)

    def illegal_leave_closed(self, rng, room, uid, status):
        reply = self.call("leave-room", "POST", "/api/participants/leave",
                          {"room_name": room.name, "uid": uid}, as_uid=uid)
        self.illegal(f"leave from {status}", reply, {"invalid_transition"}, room=room.name)

    def illegal_reject_without_row(self, rng, room, w):
        uid = self.stranger(w)
        reply = self.call("participant-status", "PUT",
                          f"/api/rooms/{room.name}/participants/{uid}/status", {"status": REJECTED})
        self.illegal("PUT 2 without a row", reply, {"participant_not_found"})

    def illegal_leave_without_row(self, rng, room, w):
        uid = self.stranger(w)
        reply = self.call("leave-room", "POST", "/api/participants/leave",
                          {"room_name": room.name, "uid": uid}, as_uid=uid)
        self.illegal("leave without a row", reply, {"participant_not_found"}, room=room.name)

    def illegal_name_taken(self, rng, room, w):
        reply = self.call("create-room", "POST", "/api/rooms",
                          {"creator": self.stranger(w), "room_name": room.name})
        self.illegal("create with a taken name", reply, {"room_already_exists"})

    def illegal_bad_status(self, rng, room, uid):
        reply = self.call("participant-status", "PUT",
                          f"/api/rooms/{room.name}/participants/{uid}/status", {"status": 7})
        self.illegal("PUT status 7", reply, {"invalid_parameters"})

    def illegal_create_as_live_creator(self, rng, room, uid):
        reply = self.call("create-room", "POST", "/api/rooms",
                          {"creator": uid, "room_name": f"{room.name}_b",
                           "uids": [rng.choice(self.pool)]},
                          as_uid=uid if rng.random() < 0.5 else None)
        self.illegal("create as a uid in a call", reply, {"creator_in_another_call"},
                     f"{uid} is joined in {room.name}")

    def illegal_create_with_live_invitee(self, rng, room, uid):
        stranger = self.stranger(room.owner)
        reply = self.call("create-room", "POST", "/api/rooms",
                          {"creator": stranger, "room_name": f"{room.name}_c", "uids": [uid]})
        got = self.illegal("call a uid in a call", reply, {"participant_in_call"},
                           f"{uid} is joined in {room.name}")
        if got == "participant_in_call" and reply.json.get("data") != {"busy_uids": [uid]}:
            self.violation(f"participant_in_call for {uid}: {reply!r}")

    def illegal_channel_taken(self, rng, room):
        reply = self.call("create-room", "POST", "/api/rooms",
                          {"creator": self.stranger(room.owner), "room_name": f"{room.name}_d",
                           "source_channel_id": room.channel, "source_channel_type": 0})
        got = self.illegal("create in a channel with a live call", reply,
                           {"channel_has_active_room"}, room.name)
        if got == "channel_has_active_room" and reply.json.get("data") != {"room_name": room.name}:
            self.violation(f"channel_has_active_room should name {room.name}: {reply!r}")

    def join_full(self, rng, room, stable):
        uid = self.stranger(room.owner)
        if stable:
            reply = self.call("join-room", "POST", "/api/participants/join",
                              {"room_name": room.name, "uid": uid}, as_uid=uid)
            self.illegal("join a full room", reply, {"room_full"}, f"{room.name}/{uid}",
                         room=room.name)
        else:
            with self.lock:
                room.members.add(uid)
            got = self._join(rng, room, uid, "join-room (maybe full)")
            self.count("calls", "join a maybe-full room " + got)

    def illegal_not_invited(self, rng, room, w, stable):
        uid = self.stranger(w)
        reply = self.call("join-room", "POST", "/api/participants/join",
                          {"room_name": room.name, "uid": uid}, as_uid=uid)
        keys = {"participant_not_invited"} if stable else {"participant_not_invited",
                                                            "room_not_active"}
        self.illegal("join an invite-only room uninvited", reply, keys)

    def illegal_forbidden(self, rng, room, w, st):
        kind = rng.randrange(5)
        other = self.stranger(w)
        members = [u for u in st if u != room.creator]
        if kind == 0:
            reply = self.call("end-room", "POST", f"/api/rooms/{room.name}/end", as_uid=other)
            self.illegal("end someone else's room", reply, {"forbidden"})
        elif kind == 1:
            reply = self.call("join-room", "POST", "/api/participants/join",
                              {"room_name": room.name, "uid": rng.choice(list(st))},
                              as_uid=other)
            self.illegal("join as another uid", reply, {"forbidden"})
        elif kind == 2 and len(members) >= 2:
            a, b = rng.sample(members, 2)
            reply = self.call("participant-status", "PUT",
                              f"/api/rooms/{room.name}/participants/{b}/status",
                              {"status": CANCELLED}, as_uid=a)
            self.illegal("cancel another's ring as a member", reply, {"forbidden"})
        elif kind == 3:
            uid = rng.choice(list(st))
            reply = self.call("participant-status", "PUT",
                              f"/api/rooms/{room.name}/participants/{uid}/status",
                              {"status": MISSED}, as_uid=uid)
            self.illegal("PUT 4 as a user", reply, {"forbidden"})
        else:
            reply = self.call("get-room", "GET", f"/api/rooms/{room.name}", as_uid=other)
            self.illegal("read a room without a row", reply, {"forbidden"})

    def stray_illegal(self, w, rng):
        if rng.random() < 0.3:
            # Call history: a user's own rooms (the filter is forced to the user), or the
            # service's view of running calls.
            uid = rng.choice(self.pool)
            if rng.random() < 0.5:
                reply = self.call("list-rooms", "GET", "/api/rooms?limit=20", as_uid=uid)
            else:
                reply = self.call("list-rooms", "GET", f"/api/rooms?status=1&limit=5&uid={uid}")
            if self.expect("list-rooms", reply, {"ok"}) == "ok":
                rooms = reply.data["rooms"]
                if reply.data["total"] < len(rooms) or any(r["room_name"].find(self.prefix) != 0
                                                           for r in rooms):
                    self.violation(f"list-rooms for {uid}: {reply!r}")
            return
        kind = rng.randrange(4)
        if kind == 0:
            reply = self.call("join-room", "POST", "/api/participants/join",
                              {"room_name": f"{self.prefix}_nope{w}", "uid": rng.choice(self.pool)})
            self.illegal("join an unknown room", reply, {"room_not_found"})
        elif kind == 1:
            reply = self.call("create-room", "POST", "/api/rooms",
                              {"creator": self.stranger(w), "call_type": 5})
            self.illegal("create with call_type 5", reply, {"invalid_parameters"})
        elif kind == 2:
            reply = self.call("join-room", "POST", "/api/participants/join",
                              {"room_name": f"{self.prefix}_r00_0", "uid": "two words"})
            self.illegal("join with a bad uid", reply, {"invalid_parameters"})
        else:
            reply = self.call("list-rooms", "GET", "/api/rooms?limit=5", token=None)
            self.illegal("no bearer token", reply, {"unauthorized"})

    # -- invariants --------------------------------------------------------------------------

    def check_invariants(self, when: str) -> None:
        """The invariants that hold after every commit (each one SQL statement, so each reads
        one consistent state). Rooms are always created with someone ringing, so a room at 0
        has its creator joined and someone ringing, and settle leaves no room at 1 with fewer
        than two joined and nobody ringing."""
        like = self.prefix + "%"
        checks = {
            "a uid live in two rooms": (
                "SELECT uid, COUNT(*) FROM call_participant WHERE uid LIKE ? "
                "AND status IN (0, 1) GROUP BY uid HAVING COUNT(*) > 1"
            ),
            "a live row in a final room": (
                "SELECT p.room_name, p.uid, p.status, r.status FROM call_participant p "
                "JOIN call_room r ON r.room_name = p.room_name WHERE r.room_name LIKE ? "
                "AND r.status IN (2, 3) AND p.status IN (0, 1)"
            ),
            "more joined than max_participants": (
                "SELECT r.room_name, r.max_participants, COUNT(*) FROM call_room r "
                "JOIN call_participant p ON p.room_name = r.room_name AND p.status = 1 "
                "WHERE r.room_name LIKE ? GROUP BY r.room_name, r.max_participants "
                "HAVING COUNT(*) > r.max_participants"
            ),
            "a running room without a joined participant": (
                "SELECT r.room_name FROM call_room r WHERE r.room_name LIKE ? AND r.status = 1 "
                "AND NOT EXISTS (SELECT 1 FROM call_participant p "
                "WHERE p.room_name = r.room_name AND p.status = 1)"
            ),
            "a running room with one joined and nobody ringing": (
                "SELECT r.room_name FROM call_room r WHERE r.room_name LIKE ? AND r.status = 1 "
                "AND NOT EXISTS (SELECT 1 FROM call_participant p "
                "WHERE p.room_name = r.room_name AND p.status = 0) "
                "AND (SELECT COUNT(*) FROM call_participant p "
                "WHERE p.room_name = r.room_name AND p.status = 1) = 1"
            ),
            "a room at 0 without its creator joined, with another joined, or nobody ringing": (
                "SELECT r.room_name FROM call_room r WHERE r.room_name LIKE ? AND r.status = 0 "
                "AND (NOT EXISTS (SELECT 1 FROM call_participant p WHERE p.room_name = "
                "r.room_name AND p.uid = r.creator AND p.status = 1) "
                "OR EXISTS (SELECT 1 FROM call_participant p WHERE p.room_name = r.room_name "
                "AND p.uid <> r.creator AND p.status = 1) "
                "OR NOT EXISTS (SELECT 1 FROM call_participant p WHERE p.room_name = "
                "r.room_name AND p.status = 0))"
            ),
        }
        for name, sql in checks.items():
            found = self.service.db.rows(sql, like)
            self.count("invariant checks", when)
            if found:
                self.violation(f"{when}: {name}: {found[:5]}")

    def check_settled(self) -> None:
        """Every ring has timed out and the sweeper has run: nobody rings, no room waits at 0,
        and (with the invariants above) every running room has two or more joined."""
        like = self.prefix + "%"
        for name, sql in {
            "a row still ringing": "SELECT room_name, uid FROM call_participant "
            "WHERE room_name LIKE ? AND status = 0",
            "a room still at 0": "SELECT room_name FROM call_room WHERE room_name LIKE ? "
            "AND status = 0",
        }.items():
            found = self.service.db.rows(sql, like)
            self.count("invariant checks", "settled")
            if found:
                self.violation(f"after the ring-outs: {name}: {found[:5]}")


def wait_until_settled(sim: Simulation, limit_s: float) -> float:
    like = sim.prefix + "%"
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        left = sim.service.db.rows(
            "SELECT (SELECT COUNT(*) FROM call_participant WHERE room_name LIKE ? AND status = 0)"
            " + (SELECT COUNT(*) FROM call_room WHERE room_name LIKE ? AND status = 0)",
            like, like,
        )[0][0]
        if not left:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def report(sim: Simulation, backend: str, timings: dict) -> str:
    stats = sim.stats
    out = [f"[sim:{backend}] seed {sim.seed} (SIM_SEED={sim.seed} SIM_SECONDS={sim.seconds:g} "
           f"to reproduce), {WORKERS} clients, {POOL_SIZE} uids"]
    out.append("  times: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    during = stats[("run requests",)]
    out.append(f"  {during} requests during the run: {during / timings['run']:.0f}/s")

    def section(title: str, first: str, fmt=lambda k: " ".join(str(x) for x in k[1:])):
        items = sorted((k, v) for k, v in stats.items() if k[0] == first)
        total = sum(v for _, v in items)
        out.append(f"  {title} ({total}):")
        line = []
        for k, v in items:
            line.append(f"{fmt(k)}={v}")
        for i in range(0, len(line), 6):
            out.append("    " + ", ".join(line[i:i + 6]))

    section("requests by endpoint and status", "requests")
    section("calls", "calls")
    section("races (two requests at once)", "races")
    section("repeated actions", "repeats")
    section("webhooks", "webhooks")
    section("webhook outcomes", "webhook outcomes")
    section("illegal requests by key", "illegal")
    section("illegal requests by request and key", "illegal by request")
    section("invariant checks", "invariant checks")
    section("final rows by status", "final rows")
    section("final rooms by status", "final rooms")
    section("business events", "events")
    section("floors", "floors")
    for text in sim.notes[:5]:
        out.append(f"  note: {text}")
    out.append(f"  violations: {len(sim.violations)}")
    return "\n".join(out)


def replay(events: list[dict]) -> tuple[Optional[int], dict[str, int]]:
    """The room status and every row's status that a room's events, in seq order, describe."""
    room_status: Optional[int] = None
    rows: dict[str, int] = {}
    for event in events:
        data = event["data"]
        if event["type"].startswith("room."):
            room_status = data["status"]
        else:
            rows[data["uid"]] = data["status"]
    return room_status, rows


def check_event_stream(sim: Simulation, service, receivers, like: str) -> None:
    """Every state change of the run yields exactly one event: each room's events are numbered
    1, 2, 3, … without a gap, the healthy receiver got each exactly once (verified signatures),
    the pull feed gives the same ones, and replaying them rebuilds the final status of every
    room and row as the database holds it."""
    stored = service.db.rows(
        "SELECT room_name, seq, event_id, payload FROM call_event WHERE room_name LIKE ? "
        "ORDER BY room_name, seq", like)
    by_room: dict[str, list[dict]] = defaultdict(list)
    for room_name, seq, event_id, payload in stored:
        by_room[room_name].append(json.loads(payload))
    sim.count("events", "stored", n=len(stored))
    for room_name, events in by_room.items():
        sim.count("invariant checks", "events gap-free per room")
        if [e["seq"] for e in events] != list(range(1, len(events) + 1)):
            sim.violation(f"events of {room_name} not numbered 1..n: {[e['seq'] for e in events]}")
        status, rows = replay(events)
        want_status = service.db.room_status(room_name)
        want_rows = service.db.statuses(room_name)
        sim.count("invariant checks", "replayed events = stored state")
        if (status, rows) != (want_status, want_rows):
            sim.violation(f"replaying {room_name}'s events gives {(status, rows)}, "
                          f"the database has {(want_status, want_rows)}")
    if set(by_room) != set(sim.rooms):
        sim.violation(f"rooms without events: {sorted(set(sim.rooms) - set(by_room))[:5]}")
    check_one_event_per_change(sim, service, by_room, like)
    # Deliveries: the healthy receiver, once every due event has been sent.
    prefix = like.rstrip("%")
    ids = {e["id"] for events in by_room.values() for e in events}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = receivers.main.accepted(prefix)
        if {a.id for a in got} >= ids:
            break
        time.sleep(0.2)
    got = receivers.main.accepted(prefix)
    sim.count("events", "delivered to the healthy receiver", n=len(got))
    sim.count("invariant checks", "every event delivered once, verified, in order")
    counts = Counter(a.id for a in got)
    if {a.id for a in got} != ids or any(n > 1 for n in counts.values()):
        missing = ids - set(counts)
        twice = [i for i, n in counts.items() if n > 1]
        sim.violation(f"deliveries: {len(missing)} events missing, {len(twice)} twice")
    if not all(a.verified for a in got):
        sim.violation("a delivery whose signature the verifier refused")
    last_seq: dict[str, int] = {}
    for a in got:
        if a.seq <= last_seq.get(a.room_name, 0):
            sim.violation(f"{a.room_name}: seq {a.seq} delivered after {last_seq[a.room_name]}")
        last_seq[a.room_name] = a.seq
    # The pull feed, from the start: the same events, each once.
    cursor, fed = "0.0", []
    while True:
        page = service.request("GET", f"/api/events?after={cursor}&limit=100").data
        cursor = page["next_cursor"]
        fed.extend(e["id"] for e in page["events"] if e["room_name"].startswith(prefix))
        if not page["has_more"]:
            break
    sim.count("invariant checks", "the feed gives every event once")
    if sorted(fed) != sorted(ids):
        sim.violation(f"the feed gave {len(fed)} events ({len(set(fed))} distinct), "
                      f"{len(ids)} stored")


# The event type of a participant event, by the status it reports (3 by the remove endpoint
# is `participant.removed`).
PARTICIPANT_EVENT = {
    RINGING: "participant.invited", JOINED: "participant.joined", REJECTED: "participant.rejected",
    HUNG_UP: "participant.left", MISSED: "participant.missed", BUSY: "participant.busy",
    CANCELLED: "participant.cancelled",
}


def check_one_event_per_change(sim: Simulation, service, by_room: dict, like: str) -> None:
    """Exactly one event per state change, not only a replay that ends in the right place: each
    event's type is the one of the state it reports; each room has one room.created (its first
    event), one room.started when it ran and one room.ended when it is final; no change is
    reported twice (two events alike but for id and seq); every row state our requests
    committed has its event; a call left to ring out tells exactly the sweeper's story."""
    rooms = {name: (status, started) for name, status, started in service.db.rows(
        "SELECT room_name, status, started_at FROM call_room WHERE room_name LIKE ?", like)}
    rows_seen: Counter = Counter()
    joins_seen: Counter = Counter()
    for room_name, events in by_room.items():
        sim.count("invariant checks", "one event per change")
        for e in events:
            data = e["data"]
            if not e["type"].startswith("participant."):
                continue
            removed = data["status"] == HUNG_UP and data.get("reason") == "removed"
            want = "participant.removed" if removed else PARTICIPANT_EVENT.get(data["status"])
            if e["type"] != want:
                sim.violation(f"{room_name} #{e['seq']} is {e['type']} for status "
                              f"{data['status']} ({data.get('reason')})")
            rows_seen[(room_name, data["uid"], data["status"], data["updated_at"])] += 1
            if data["status"] == JOINED:
                joins_seen[(room_name, data["uid"], int(data["join_time"]))] += 1
        status, started = rooms.get(room_name, (None, None))
        kinds = Counter(e["type"] for e in events if e["type"].startswith("room."))
        want = {"room.created": 1, "room.started": int(started is not None),
                "room.ended": int(status in (ENDED, ROOM_CANCELLED))}
        got = {kind: kinds[kind] for kind in want}
        if got != want or events[0]["type"] != "room.created":
            sim.violation(f"{room_name} (status {status}, started {started}): room events {got}, "
                          f"want {want}, first {events[0]['type']}")
        alike = Counter((e["type"], e["occurred_at"], json.dumps(e["data"], sort_keys=True))
                        for e in events)
        for (kind, at, data), n in alike.items():
            if n > 1:
                sim.violation(f"{room_name}: one change reported {n} times: {kind} at {at} {data}")
    with sim.lock:
        caused = sorted(sim.caused)
    sim.count("events", "row states our requests committed", n=len(caused))
    for key in caused:
        seen = (rows_seen if key[0] == "row" else joins_seen)[key[1:]]
        if seen == 0:
            sim.violation(f"no event for a committed change: {key}")
    for room in [r for r in sim.rooms.values() if r.plan == "ringout"]:
        story = Counter((e["type"], e["data"].get("uid"), e["data"].get("reason"))
                        for e in by_room.get(room.name, []) if e["type"].startswith("participant."))
        want_story = Counter({("participant.joined", room.creator, None): 1,
                              ("participant.left", room.creator, "no_answer"): 1,
                              **{("participant.invited", u, None): 1 for u in room.invitees},
                              **{("participant.missed", u, "timeout"): 1 for u in room.invitees}})
        sim.count("invariant checks", "a call left to ring out tells the sweeper's story")
        if story != want_story:
            sim.violation(f"call {room.name} left to ring out told {dict(story)}, "
                          f"not {dict(want_story)}")


# The least a run must have done (a run that placed, answered or rang out nothing, or whose
# webhooks all went missing, would pass every other check), at least one of each whatever the
# load: calls placed per request the run made (a loaded machine makes fewer; the more steps a
# call gets, the fewer are placed), answers and ring-outs per call placed.
FLOORS = {
    "calls placed": ("run requests", 0.02),
    "invites answered": ("calls placed", 0.05),
    "invites rung out by the deadline": ("calls placed", 0.05),
}
# Webhooks that apply when they arrive on time (a webhook-only disconnect, LiveKit closing a
# live room); with this many made, at least one must have been applied (each is dropped,
# delayed past a newer change or held back less than half the time).
APPLICABLE_WEBHOOKS = 10
# Calls left to the sweeper (12% of those placed): with this many placed, at least one.
PLACED_FOR_A_RINGOUT = 100


def floor_counts(sim: Simulation) -> dict[str, int]:
    stats = sim.stats
    with sim.lock:
        placed = sum(v for k, v in stats.items() if k[:2] == ("calls", "placed"))
        applied = sum(v for k, v in stats.items()
                      if k[0] == "webhook outcomes" and k[2] == "applied")
        applicable = (stats[("calls", "disconnect (webhook only)")]
                      + stats[("calls", "room_finished from LiveKit")])
        counts = {
            "run requests": stats[("run requests",)],
            "calls placed": placed,
            "invites answered": stats[("calls", "answer ok")],
            # Each of these is checked to have ended rung out, with the sweeper's events.
            "calls left to the sweeper to ring out": sum(
                1 for r in sim.rooms.values() if r.plan == "ringout"),
            "applicable webhooks made": applicable,
            "LiveKit webhooks applied": applied,
        }
    counts["invites rung out by the deadline"] = sim.service.db.rows(
        "SELECT COUNT(*) FROM call_participant WHERE room_name LIKE ? AND status = 4 "
        "AND reason = 'timeout'", sim.prefix + "%")[0][0]
    return counts


def check_floors(sim: Simulation) -> None:
    counts = floor_counts(sim)
    sim.count("floors", ", ".join(f"{k} {v}" for k, v in counts.items()))
    least = {name: max(1, int(per * counts[base])) for name, (base, per) in FLOORS.items()}
    if counts["applicable webhooks made"] >= APPLICABLE_WEBHOOKS:
        least["LiveKit webhooks applied"] = 1
    if counts["calls placed"] >= PLACED_FOR_A_RINGOUT:
        least["calls left to the sweeper to ring out"] = 1
    for name, n in least.items():
        if counts[name] < n:
            sim.violation(f"the run did too little: {name} {counts[name]}, at least {n} "
                          f"({counts})")


def test_call_simulation(service, receivers, names):
    prefix = names("sim")
    sim = Simulation(service, prefix, SEED, SIM_SECONDS)
    print(f"\n[sim:{service.backend}] SIM_SEED={SEED} SIM_SECONDS={SIM_SECONDS:g} "
          f"prefix {prefix}", flush=True)
    timings = {}
    started = time.monotonic()
    sim.run()
    timings["run"] = time.monotonic() - started

    # Every ring times out (RING_TIMEOUT_SECONDS) and the sweeper (every second) settles.
    waited = wait_until_settled(sim, service.ring_timeout_s + 12)
    timings["ring-outs"] = waited
    time.sleep(1.5)  # one more sweep over whatever the last ring-out settled

    sim.check_invariants("after the run")
    sim.check_settled()
    like = prefix + "%"

    # Calls left to ring out: cancelled by the sweeper, invitees missed, creator hung up.
    for room in [r for r in sim.rooms.values() if r.plan == "ringout"]:
        got = {"room": service.db.room_status(room.name), **service.db.statuses(room.name)}
        want = {"room": ROOM_CANCELLED, room.creator: HUNG_UP,
                **{u: MISSED for u in room.invitees}}
        sim.count("invariant checks", "rung out as expected")
        if got != want:
            sim.violation(f"call {room.name} left to ring out ended as {got}, not {want}")

    # What was placed is exactly what the database holds (refused creates wrote nothing).
    in_db = {name for (name,) in service.db.rows(
        "SELECT room_name FROM call_room WHERE room_name LIKE ?", like)}
    sim.count("invariant checks", "rooms placed = rooms stored")
    if in_db != set(sim.rooms):
        sim.violation(f"rooms in the database but not placed: {sorted(in_db - set(sim.rooms))[:5]}"
                      f"; placed but missing: {sorted(set(sim.rooms) - in_db)[:5]}")

    # GET room (Redis-cached on MariaDB) agrees with the database once things are quiet.
    db_status = dict(service.db.rows(
        "SELECT room_name, status FROM call_room WHERE room_name LIKE ?", like))
    for name, status in sorted(db_status.items()):
        reply = sim.call("get-room", "GET", f"/api/rooms/{name}")
        sim.count("invariant checks", "GET room = database")
        if sim.expect("get-room", reply, {"ok"}) == "ok" and reply.data["status"] != status:
            sim.violation(f"GET /api/rooms/{name} says status {reply.data['status']}, "
                          f"the database {status}")

    # Duplicated event ids: exactly one delivery of each id is not a "duplicate".
    for event_id, outcomes in sim.bus.outcomes.items():
        sim.count("invariant checks", "one delivery per event id")
        if sum(1 for o in outcomes if o != "duplicate") != 1:
            sim.violation(f"event {event_id} delivered as {outcomes}")

    for status, n in service.db.rows(
        "SELECT status, COUNT(*) FROM call_participant WHERE room_name LIKE ? GROUP BY status",
        like,
    ):
        sim.count("final rows", {0: "ringing", 1: "joined", 2: "rejected", 3: "hung up",
                                 4: "missed", 5: "busy", 6: "cancelled"}[status], n=n)
    for status, n in service.db.rows(
        "SELECT status, COUNT(*) FROM call_room WHERE room_name LIKE ? GROUP BY status", like
    ):
        sim.count("final rooms", {0: "not started", 1: "running", 2: "ended",
                                  3: "cancelled"}[status], n=n)

    # Hang up the calls still running, then nothing of this run is live.
    for name, status in db_status.items():
        if status == IN_PROGRESS:
            reply = sim.call("end-room", "POST", f"/api/rooms/{name}/end")
            sim.expect("end-room (cleanup)", reply, {"ok"})
    live = service.db.rows(
        "SELECT room_name, uid, status FROM call_participant WHERE room_name LIKE ? "
        "AND status IN (0, 1)", like)
    if live:
        sim.violation(f"live rows after ending every call: {live[:5]}")

    try:
        service.db.assert_nothing_left_behind()  # no transaction open, every row writable
        sim.count("invariant checks", "nothing left behind")
    except AssertionError as err:
        sim.violation(str(err))
    check_event_stream(sim, service, receivers, like)
    check_floors(sim)
    timings["total"] = time.monotonic() - started
    print(report(sim, service.backend, timings), flush=True)

    five = [v for v in sim.violations if v.startswith(("5", "stale"))]
    assert not sim.violations, (
        f"{len(sim.violations)} violations (SIM_SEED={SEED}), {len(five)} of them 5xx or stale "
        "webhooks applied; the first:\n" + "\n".join(sim.violations[:20])
    )
