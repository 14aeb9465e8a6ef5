"""Business events over HTTP, against the local main job (one process per function) on each
backend: what a call sends the app backend, signed as Standard Webhooks says (verified by the
`standardwebhooks` package in the receivers), in order per room, never lost while a receiver
is down, and the pull feed that reads the same events exactly once."""

from __future__ import annotations

import time

from receivers import Arrival, Receiver

ENDED_OR_CANCELLED = ("room.ended",)


def story(arrivals: list[Arrival]) -> list[tuple[str, str]]:
    return [(a.type, a.body.get("data", {}).get("uid", "")) for a in arrivals]


def ended(arrivals: list[Arrival]) -> bool:
    return any(a.type == "room.ended" for a in arrivals)


def assert_well_formed(receiver: Receiver, arrivals: list[Arrival], room: str) -> None:
    """Every arrival for the room verified (accepted or not: failed attempts and retries
    too), and the accepted ones: one room, seq 1, 2, 3, … in arrival order, one id per seq."""
    assert arrivals, f"no events for {room}"
    receiver.assert_all_verified(room)
    assert [a.seq for a in arrivals] == list(range(1, len(arrivals) + 1)), [
        (a.seq, a.type) for a in arrivals]
    assert len({a.id for a in arrivals}) == len(arrivals), "an id used twice"
    for a in arrivals:
        assert a.room_name == room and a.body["room_name"] == room
        assert a.body["id"] == a.id and a.body["occurred_at"].endswith("Z")


def test_a_one_to_one_call_reaches_the_backend_in_order(service, receivers, names, clean_after):
    room, a, b = names("evt11"), names("a"), names("b")
    req = service.request
    req("POST", "/api/rooms", {"room_name": room, "creator": a, "uids": [b]}).data
    # The ring is at the receiver by the time create has answered.
    rung = receivers.main.accepted(room)
    assert ("participant.invited", b) in story(rung), story(rung)
    invited = next(x for x in rung if x.type == "participant.invited").body["data"]
    assert (invited["caller"], invited["invitee"], invited["call_type"]) == (a, b, 1)
    assert invited["ring_deadline"].endswith("Z")
    req("POST", "/api/participants/join", {"room_name": room, "uid": b}, as_uid=b).data
    req("POST", "/api/participants/leave", {"room_name": room, "uid": b}, as_uid=b).data
    got = receivers.main.wait_for(room, ended, 5)
    assert story(got) == [
        ("room.created", ""), ("participant.joined", a), ("participant.invited", b),
        ("participant.joined", b), ("room.started", ""), ("participant.left", b),
        ("participant.left", a), ("room.ended", ""),
    ]
    assert_well_formed(receivers.main, got, room)
    final = got[-1].body["data"]
    assert (final["status"], final["end_reason"]) == (2, "completed")
    assert final["started_at"] and final["ended_at"] and final["duration_seconds"] >= 0
    assert {(p["uid"], p["status"], p["reason"]) for p in final["participants"]} == {
        (a, 3, "call_ended"), (b, 3, "hung_up")}


def test_a_group_call_with_a_reject_a_ring_out_and_a_removal(service, receivers, names,
                                                            clean_after):
    room = names("evtgrp")
    a, b, c, d = (names(x) for x in "abcd")
    req = service.request
    req("POST", "/api/rooms", {"room_name": room, "creator": a, "uids": [b, c, d],
                                "max_participants": 5, "ring_timeout_seconds": 5}).data
    req("PUT", f"/api/rooms/{room}/participants/{b}/status", {"status": 2}, as_uid=b).data
    req("POST", "/api/participants/join", {"room_name": room, "uid": c}, as_uid=c).data
    # d rings out: the sweeper writes it down within about a second of its deadline.
    receivers.main.wait_for(room, lambda got: any(x.type == "participant.missed" for x in got), 12)
    req("POST", f"/api/rooms/{room}/participants/{c}/remove", as_uid=a).data
    got = receivers.main.wait_for(room, ended, 5)
    assert story(got) == [
        ("room.created", ""), ("participant.joined", a), ("participant.invited", b),
        ("participant.invited", c), ("participant.invited", d), ("participant.rejected", b),
        ("participant.joined", c), ("room.started", ""), ("participant.missed", d),
        ("participant.removed", c), ("participant.left", a), ("room.ended", ""),
    ]
    assert_well_formed(receivers.main, got, room)
    missed = next(x for x in got if x.type == "participant.missed").body["data"]
    assert missed["reason"] == "timeout"


def test_a_receiver_down_for_a_while_gets_every_event_once_in_order(service, receivers, names,
                                                                   clean_after):
    room, a, b = names("evtdown"), names("a"), names("b")
    # Down until the test says so (not for a while of the clock: a loaded machine may take
    # longer than any while to make the call below).
    down = {"on": True}
    receivers.flaky.rule(room, lambda event: (503, 0.0) if down["on"] else None)
    req = service.request
    req("POST", "/api/rooms", {"room_name": room, "creator": a, "uids": [b]}).data
    req("POST", "/api/participants/join", {"room_name": room, "uid": b}, as_uid=b).data
    req("POST", f"/api/rooms/{room}/end").data
    assert receivers.flaky.accepted(room) == [], "nothing passes a receiver that is down"
    deadline = time.monotonic() + 10
    while len(receivers.flaky.arrivals(room)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(receivers.flaky.arrivals(room)) >= 2, "tried inline, then retried while down"
    assert receivers.flaky.accepted(room) == [], "nothing passes a receiver that is down"
    down["on"] = False
    got = receivers.flaky.wait_for(room, lambda got: len(got) == 8, 20)
    assert [x.type for x in got] == [x.type for x in receivers.main.accepted(room)]
    assert_well_formed(receivers.flaky, got, room)
    refused = [x for x in receivers.flaky.arrivals(room) if x.status == 503]
    assert refused, "it was tried while down"
    # Retries repeat the same id: every refused id is one of the delivered ones.
    assert {x.id for x in refused} <= {x.id for x in got}
    # The receiver notes an arrival before the service has read its answer and recorded it.
    deadline = time.monotonic() + 10
    while True:
        details = req("GET", f"/api/events/{refused[0].id}").data
        outcomes = [x["outcome"] for x in details["attempts"] if x["url"] == receivers.flaky.url]
        if (outcomes and outcomes[-1] == "delivered") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert outcomes[-1] == "delivered" and "failed" in outcomes, outcomes


def test_a_receiver_slower_than_the_timeout_is_retried(service, receivers, names, clean_after):
    room, a = names("evtslow"), names("a")
    slow = {"left": 2}

    def answer(event):
        if event["type"] == "room.created" and slow["left"] > 0:
            slow["left"] -= 1
            return 200, 1.6  # past EVENT_TIMEOUT_MS (1 s): the attempt counts as failed
        return None

    receivers.flaky.rule(room, answer)
    service.request("POST", "/api/rooms", {"room_name": room, "creator": a}).data
    got = receivers.flaky.wait_for(room, lambda got: len(got) >= 4, 20)
    # The slow answers arrived too late for the service; the retry was answered in time.
    delivered = [x for x in got if x.type == "room.created"]
    first = delivered[0].id
    # The receiver notes an arrival before the service has read its answer and recorded it.
    deadline = time.monotonic() + 10
    while True:
        details = service.request("GET", f"/api/events/{first}").data
        mine = [x for x in details["attempts"] if x["url"] == receivers.flaky.url]
        if (mine and mine[-1]["outcome"] == "delivered") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [x["outcome"] for x in mine][-1] == "delivered", mine
    assert any("no answer within" in (x["error"] or "") for x in mine), mine
    ordered = [x.seq for x in got if x.seq != 1]
    assert ordered == sorted(ordered) and ordered[0] == 2, [(x.seq, x.type) for x in got]
    receivers.flaky.assert_all_verified(room)


def test_a_410_ends_the_attempts_of_that_event_only(service, receivers, names, clean_after):
    room, a = names("evtgone"), names("a")
    receivers.flaky.rule(room, lambda e: (410, 0.0) if e["type"] == "room.created" else None)
    service.request("POST", "/api/rooms", {"room_name": room, "creator": a}).data
    service.request("POST", f"/api/rooms/{room}/end").data
    got = receivers.flaky.wait_for(room, ended, 10)
    assert [x.type for x in got] == ["participant.joined", "participant.left", "room.ended"]
    created = [x for x in receivers.flaky.arrivals(room) if x.type == "room.created"]
    assert len(created) == 1, "never retried after 410"
    # The later events' arrivals can come before the service has written the give-up down.
    deadline = time.monotonic() + 10
    while True:
        details = service.request("GET", f"/api/events/{created[0].id}").data
        flaky = [d for d in details["deliveries"] if d["url"] == receivers.flaky.url]
        if (flaky and flaky[0]["state"] == "gave_up") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert flaky[0]["state"] == "gave_up", flaky
    # A redelivery on request tries again (and is recorded).
    again = service.request("POST", f"/api/events/{created[0].id}/redeliver").data
    assert again["redelivery"]["gave_up"] == 1 and again["redelivery"]["delivered"] == 1
    receivers.flaky.assert_all_verified(room)
    receivers.main.assert_all_verified(room)


def feed_page(service, cursor: str, limit: int = 2) -> tuple[list[dict], str, bool]:
    query = f"after={cursor}&limit={limit}" if cursor else f"limit={limit}"
    page = service.request("GET", f"/api/events?{query}").data
    return page["events"], page["next_cursor"], page["has_more"]


def test_the_feed_gives_each_event_exactly_once_with_events_written_between_pages(
        service, receivers, names, clean_after):
    # Start from the end of the feed as it is now.
    events, cursor, more = feed_page(service, "", 100)
    while more:
        events, cursor, more = feed_page(service, cursor, 100)
    # Nobody rung: no ring-out can add events of these rooms behind the test's back.
    rooms = [names(f"evtfeed{i}") for i in range(3)]
    for i, room in enumerate(rooms):
        service.request("POST", "/api/rooms", {"room_name": room, "creator": names(f"c{i}")}).data

    def stored() -> list[str]:
        return [r[0] for r in service.db.rows(
            "SELECT event_id FROM call_event WHERE room_name IN (?, ?, ?) ORDER BY id", *rooms)]

    before = stored()
    assert len(before) == 6
    every: list[str] = []  # every id the feed handed out, other tests' rooms too
    ours: list[dict] = []
    # Page until some (never all) of ours have been read: pages of 2, and another process
    # (the sweeper) may publish events of earlier tests' rooms in between.
    for _ in range(50):
        events, cursor, more = feed_page(service, cursor)
        every.extend(e["id"] for e in events)
        ours.extend(e for e in events if e["room_name"] in rooms)
        if ours:
            break
    read_before = len(ours)
    assert 0 < read_before <= 2, read_before
    # Between two pages, on purpose: new events of our rooms commit after the cursor was
    # handed out.
    service.request("POST", f"/api/rooms/{rooms[0]}/end").data
    between = [e for e in stored() if e not in before]
    assert len(between) >= 2, between
    for _ in range(100):
        events, cursor, more = feed_page(service, cursor)
        every.extend(e["id"] for e in events)
        ours.extend(e for e in events if e["room_name"] in rooms)
        if not more and len(ours) >= len(before) + len(between):
            break
    seen = [e["id"] for e in ours]
    assert len(every) == len(set(every)), "an event twice in the feed"
    assert sorted(seen) == sorted(before + between), (len(seen), len(before), len(between))
    # In publication order: what was committed before the first page in id order, then what
    # was written between the pages, after it all; each room's events in seq order.
    assert seen == before + between, seen
    published = [r[0] for r in service.db.rows(
        "SELECT event_id FROM call_event WHERE room_name IN (?, ?, ?) ORDER BY feed_batch, id",
        *rooms)]
    assert seen == published
    for room in rooms:
        seqs = [e["seq"] for e in ours if e["room_name"] == room]
        assert seqs == list(range(1, len(seqs) + 1)), (room, seqs)
    # The same events the receiver got, with the same ids.
    assert {x.id for x in receivers.main.accepted(rooms[0])} == {
        r[0] for r in service.db.rows("SELECT event_id FROM call_event WHERE room_name = ?",
                                      rooms[0])}
    receivers.main.assert_all_verified(rooms[0])


def test_event_endpoints_are_for_services_only(service, names):
    reply = service.request("GET", "/api/events", as_uid=names("u"))
    assert (reply.status, reply.key) == (403, "forbidden")
    reply = service.request("GET", "/api/events/evt_000000000000000000000000")
    assert (reply.status, reply.key) == (404, "event_not_found")
    reply = service.request("POST", "/api/events/evt_000000000000000000000000/redeliver",
                            as_uid=names("u"))
    assert (reply.status, reply.key) == (403, "forbidden")
    reply = service.request("GET", "/api/events?after=x.y")
    assert (reply.status, reply.key) == (400, "invalid_parameters")
    reply = service.request("GET", "/api/events", token=None)
    assert (reply.status, reply.key) == (401, "unauthorized")
