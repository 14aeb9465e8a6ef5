"""Metrics over HTTP, against the local main job with JSON logs (as in AWS): every function
prints its measurements as CloudWatch Embedded Metric Format lines with its logs, once per
invocation. A call, a missed call and a failed delivery each show up with the values the
database says they should have."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Callable

NAMESPACE = "CallService"


def log_size(service) -> int:
    return service.log_path.stat().st_size


def emf_since(service, offset: int) -> list[dict]:
    """The EMF documents the job printed after `offset` of its log."""
    with open(service.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", errors="replace")
    docs = []
    for line in text.splitlines():
        start = line.find('{"')
        if start < 0 or '"_aws"' not in line:
            continue
        try:
            doc = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(doc, dict) and "CloudWatchMetrics" in doc.get("_aws", {}):
            docs.append(doc)
    return docs


def wait_docs(service, offset: int, done: Callable[[list[dict]], bool],
              timeout_s: float = 15) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        docs = emf_since(service, offset)
        if done(docs) or time.monotonic() > deadline:
            return docs
        time.sleep(0.1)


def of(docs: list[dict], function: str) -> list[dict]:
    return [d for d in docs if d.get("Function") == function]


def requests_of(docs: list[dict], function: str) -> list[dict]:
    return [d for d in of(docs, function) if "Requests" in d]


def values(doc: dict, name: str) -> list[float]:
    value = doc.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def assert_follows_the_specification(doc: dict) -> None:
    aws = doc["_aws"]
    assert aws["Timestamp"] > 1_000_000_000_000, "epoch milliseconds"
    for directive in aws["CloudWatchMetrics"]:
        assert directive["Namespace"] == NAMESPACE
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(doc[key], str) and doc[key], (key, doc)
        assert 0 < len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            assert isinstance(value, (int, float)) or (
                isinstance(value, list) and 0 < len(value) <= 100), (metric, doc)


def ms(at) -> float:
    """A DATETIME read back (a datetime on MariaDB, text on SQLite) in epoch milliseconds."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at.replace(" ", "T"))
    return at.timestamp() * 1000


def test_a_call_counts_its_requests_its_start_and_its_end_with_the_talk_time(
        service, names, clean_after):
    room, a, b = names("m_call"), names("a"), names("b")
    mark = log_size(service)
    req = service.request
    req("POST", "/api/rooms", {"room_name": room, "creator": a, "uids": [b]}).data
    req("POST", "/api/participants/join", {"room_name": room, "uid": b}, as_uid=b).data
    time.sleep(1.1)  # a talk time of at least a second, measured from the database below
    req("POST", "/api/participants/leave", {"room_name": room, "uid": b}, as_uid=b).data
    refused = req("POST", "/api/participants/join", {"room_name": room, "uid": b}, as_uid=b)
    assert refused.status == 409, refused
    docs = wait_docs(service, mark, lambda ds: len(requests_of(ds, "join-room")) >= 2)
    for doc in docs:
        assert_follows_the_specification(doc)
    [created] = requests_of(docs, "create-room")
    assert (created["Requests"], created["StatusClass"], created["ErrorKey"]) == (1, "2xx", "none")
    assert created["CallsCreated"] == 1 and created["Latency"] > 0
    joins = requests_of(docs, "join-room")
    answered = next(d for d in joins if d["StatusClass"] == "2xx")
    assert answered["CallsStarted"] == 1
    refusal = next(d for d in joins if d["StatusClass"] == "4xx")
    assert refusal["ErrorKey"] != "none" and refusal["Requests"] == 1
    assert "CallsStarted" not in refusal
    [left] = requests_of(docs, "leave-room")
    (started_at, ended_at, reason), = service.db.rows(
        "SELECT started_at, ended_at, end_reason FROM call_room WHERE room_name = ?", room)
    assert (left["CallsEnded"], left["EndReason"]) == (1, reason) == (1, "completed")
    assert abs(left["TalkDuration"] - (ms(ended_at) - ms(started_at)) / 1000) < 0.002
    # No dimension value carries the room or a uid; not even the plain members do.
    for doc in docs:
        line = json.dumps(doc)
        for private in (room, a, b):
            assert private not in line, doc


def test_a_missed_call_is_rung_out_by_the_sweeper_with_its_lag(service, names, clean_after):
    room, a, b = names("m_miss"), names("a"), names("b")
    mark = log_size(service)
    service.request("POST", "/api/rooms", {"room_name": room, "creator": a, "uids": [b],
                                            "ring_timeout_seconds": 5}).data
    missed_sql = ("SELECT occurred_at, created_at FROM call_event WHERE room_name = ? "
                  "AND type = 'participant.missed'")
    deadline = time.monotonic() + 15
    while not service.db.rows(missed_sql, room) and time.monotonic() < deadline:
        time.sleep(0.1)
    (deadline_at, written_at), = service.db.rows(missed_sql, room)
    (reason,), = service.db.rows("SELECT end_reason FROM call_room WHERE room_name = ?", room)
    lag = ms(written_at) - ms(deadline_at)

    def has_lag(ds: list[dict]) -> bool:
        return any(abs(v - lag) <= 1 for d in of(ds, "ring-timeout") for v in values(d, "RingOutLag"))

    docs = wait_docs(service, mark, has_lag)
    assert has_lag(docs), (lag, [d for d in of(docs, "ring-timeout") if "RingOutLag" in d])
    # The sweep wrote it down within about a second of the deadline.
    assert 0 <= lag < 2500, lag
    sweeps = of(docs, "ring-timeout")
    for doc in sweeps:
        assert_follows_the_specification(doc)
    ended = [d for d in sweeps if d.get("EndReason") == reason and "CallsEnded" in d]
    assert ended and sum(d["CallsEnded"] for d in ended) >= 1, sweeps
    settled = sum(sum(values(d, "RoomsSettled")) for d in sweeps)
    assert settled >= 1
    assert all("SweepDuration" in d for d in sweeps if "RoomsSettled" in d)


def test_a_failed_delivery_counts_its_attempts_the_backlog_and_the_lag_once_delivered(
        service, receivers, names, clean_after):
    room, a = names("m_fail"), names("a")
    down = {"on": True}
    receivers.flaky.rule(room, lambda event: (503, 0.0) if down["on"] else None)
    mark = log_size(service)
    service.request("POST", "/api/rooms", {"room_name": room, "creator": a, "uids": []}).data
    (flaky,), = service.db.rows(
        "SELECT DISTINCT a.endpoint FROM event_attempt a JOIN call_event e "
        "ON e.event_id = a.event_id WHERE e.room_name = ? AND a.url = ?", room,
        receivers.flaky.url)

    def attempts(ds: list[dict], function: str, outcome: str) -> float:
        return sum(d["EventAttempts"] for d in of(ds, function)
                   if d.get("Endpoint") == flaky and d.get("Outcome") == outcome)

    # The sweep retries it (and fails again) and sees it owed.
    def owed(ds: list[dict]) -> bool:
        return any(d.get("Endpoint") == flaky and d.get("OldestOwedEventAge", 0) > 0
                   for d in of(ds, "deliver-events"))

    docs = wait_docs(service, mark,
                     lambda ds: attempts(ds, "deliver-events", "failed") >= 1 and owed(ds))
    (inline_failures,), = service.db.rows(
        "SELECT COUNT(*) FROM event_attempt a JOIN call_event e ON e.event_id = a.event_id "
        "WHERE e.room_name = ? AND a.endpoint = ? AND a.outcome = 'failed' "
        "AND a.inline_attempt = 1", room, flaky)
    assert inline_failures >= 1
    assert attempts(docs, "create-room", "failed") == inline_failures, of(docs, "create-room")
    assert attempts(docs, "deliver-events", "failed") >= 1
    assert owed(docs), [d for d in of(docs, "deliver-events") if "OldestOwedEventAge" in d]
    for doc in docs:
        assert_follows_the_specification(doc)

    # Back up: the sweep delivers it, with the lag from its commit.
    down["on"] = False
    mark = log_size(service)
    receivers.flaky.wait_for(room, lambda got: len(got) >= 2, 15)
    docs = wait_docs(service, mark,
                     lambda ds: attempts(ds, "deliver-events", "delivered") >= 1)
    assert attempts(docs, "deliver-events", "delivered") >= 1
    lags = [v for d in of(docs, "deliver-events") if d.get("Endpoint") == flaky
            for v in values(d, "DeliveryLag")]
    (first_commit,), = service.db.rows(
        "SELECT MIN(created_at) FROM call_event WHERE room_name = ?", room)
    assert lags and max(lags) >= 200, lags  # it waited at least one failed retry
    assert max(lags) <= time.time() * 1000 - ms(first_commit) + 1000, lags
