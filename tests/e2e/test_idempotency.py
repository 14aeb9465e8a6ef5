"""Idempotency-Key over HTTP, on the local main job with three instances per function (each
in its own process, as Lambda scales out): a client's retry never makes a second call or a
false error.

- a retried create, join, remove and end each answer the first response and change nothing;
- N concurrent retries of one create make one room, and each answer is the first response or
  409 idempotency_key_in_use (Retry-After: 1);
- a retry after a lost response (the client hung up before reading) replays the answer;
- the same key with another body is 422 idempotency_key_reused; another caller's same key is
  a request of its own; once expired, a key is new again and the sweeper purges it.

Each scenario leaves no transaction open and no row locked (`clean_after`)."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import Reply, Service

POLL_S = 0.05


def keyed(service: Service, method: str, path: str, body=None, *, key: str, **kw) -> Reply:
    headers = {"Idempotency-Key": f'"{key}"'}
    return service.request(method, path, body, headers=headers, **kw)


def replayed(reply: Reply) -> bool:
    return reply.headers.get("idempotent-replayed") == "true"


def call_state(service: Service, room: str) -> list[tuple]:
    """Everything a change of the room writes: the room, its rows and its events."""
    rows = service.db.rows("SELECT status, event_seq FROM call_room WHERE room_name = ?", room)
    rows += service.db.rows(
        "SELECT uid, status, join_time, leave_time FROM call_participant "
        "WHERE room_name = ? ORDER BY uid", room)
    rows += service.db.rows("SELECT COUNT(*) FROM call_event WHERE room_name = ?", room)
    return [tuple(r) for r in rows]


def rooms_of(service: Service, creator: str) -> list[str]:
    return [r[0] for r in service.db.rows(
        "SELECT room_name FROM call_room WHERE creator = ?", creator)]


def until(what, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(POLL_S)


def test_retried_create_join_remove_and_end_answer_the_first_response(clean_after, names):
    service = clean_after
    room, alice, bob, carol = names("room"), names("alice"), names("bob"), names("carol")
    steps = [
        ("create", "/api/rooms",
         {"room_name": room, "creator": alice, "uids": [bob, carol], "max_participants": 5}),
        ("join", "/api/participants/join", {"room_name": room, "uid": bob}),
        ("join", "/api/participants/join", {"room_name": room, "uid": carol}),
        ("remove", f"/api/rooms/{room}/participants/{bob}/remove", None),
        ("end", f"/api/rooms/{room}/end", None),
    ]
    for i, (name, path, body) in enumerate(steps):
        key = names(f"{name}{i}")
        first = keyed(service, "POST", path, body, key=key)
        assert first.status == 200 and not replayed(first), (name, first)
        after_first = call_state(service, room)
        again = keyed(service, "POST", path, body, key=key)
        assert again.status == 200 and replayed(again), (name, again)
        assert again.json == first.json, name  # the token first minted, too
        assert call_state(service, room) == after_first, f"{name} changed something again"
    # Without a key, the same create is a new request and refused as before.
    again = service.request("POST", "/api/rooms", steps[0][2])
    assert again.status == 409 and again.key == "room_already_exists", again


def test_concurrent_retries_of_one_create_make_one_room(clean_after, names):
    service = clean_after
    creator, key = names("burst"), names("key")
    body = {"creator": creator, "uids": [names("callee")]}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: keyed(service, "POST", "/api/rooms", body, key=key),
                                range(8)))
    firsts = [a for a in answers if a.status == 200]
    assert firsts, answers
    for answer in answers:
        if answer.status == 200:
            assert answer.json == firsts[0].json, answers
        else:
            assert answer.status == 409 and answer.key == "idempotency_key_in_use", answer
            assert answer.headers.get("retry-after") == "1", answer
    assert rooms_of(service, creator) == [firsts[0].data["room_name"]]
    again = keyed(service, "POST", "/api/rooms", body, key=key)
    assert replayed(again) and again.json == firsts[0].json, again


def test_a_retry_after_a_lost_response_replays_it(clean_after, names):
    service = clean_after
    creator, key = names("lost"), names("key")
    body = json.dumps({"creator": creator}).encode()
    # The client sends its create and hangs up without reading the answer. It stays on the
    # line until the function has the request: in AWS, API Gateway invokes the function
    # whatever the client does, while the local router drops a request whose client left
    # before it was forwarded.
    with socket.create_connection((service.host, service.port), timeout=10) as sock:
        head = (f"POST /api/rooms HTTP/1.1\r\nHost: {service.host}\r\n"
                f"Authorization: Bearer {service.service_token}\r\n"
                f'Idempotency-Key: "{key}"\r\nContent-Type: application/json\r\n'
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        sock.sendall(head.encode() + body)
        made = until(lambda: rooms_of(service, creator))
    assert len(made) == 1, made
    # Its retry, as soon as it likes: in flight (409, Retry-After) until the first finishes.
    answer = until(lambda: (lambda r: r if r.status != 409 else None)(
        keyed(service, "POST", "/api/rooms", json.loads(body), key=key)))
    assert answer and answer.status == 200 and replayed(answer), answer
    assert answer.data["room_name"] == made[0]
    assert rooms_of(service, creator) == made


def test_the_same_key_with_another_body_is_422(clean_after, names):
    service = clean_after
    creator, key = names("alice"), names("key")
    first = keyed(service, "POST", "/api/rooms", {"creator": creator}, key=key)
    assert first.status == 200, first
    before = call_state(service, first.data["room_name"])
    other = keyed(service, "POST", "/api/rooms", {"creator": creator, "call_type": 0}, key=key)
    assert other.status == 422 and other.key == "idempotency_key_reused", other
    assert rooms_of(service, creator) == [first.data["room_name"]]
    assert call_state(service, first.data["room_name"]) == before


def test_another_caller_with_the_same_key_is_a_separate_request(clean_after, names):
    service = clean_after
    alice, bob, key = names("alice"), names("bob"), names("key")
    a = keyed(service, "POST", "/api/rooms", {"creator": alice}, key=key, as_uid=alice)
    b = keyed(service, "POST", "/api/rooms", {"creator": bob}, key=key, as_uid=bob)
    assert a.status == 200 and b.status == 200 and not replayed(b), (a, b)
    assert a.data["room_name"] != b.data["room_name"]


def test_after_expiry_the_key_is_new_again_and_the_sweeper_purges_it(clean_after, names):
    service = clean_after
    creator, key = names("alice"), names("key")
    body = {"creator": creator}
    first = keyed(service, "POST", "/api/rooms", body, key=key)
    assert first.status == 200, first
    # A day later, as far as the key is concerned.
    stored = service.db.rows("SELECT scope FROM idempotency_key WHERE body LIKE ?",
                             f"%{first.data['room_name']}%")
    assert len(stored) == 1, stored
    scope = stored[0][0]
    service.db.rows("UPDATE idempotency_key SET expires_at = ? WHERE scope = ?",
                    "2000-01-01 00:00:00.000", scope)
    fresh = keyed(service, "POST", "/api/rooms", body, key=key)
    assert not replayed(fresh), fresh
    assert fresh.status == 409 and fresh.key == "creator_in_another_call", fresh
    service.db.rows("UPDATE idempotency_key SET expires_at = ? WHERE scope = ?",
                    "2000-01-01 00:00:00.000", scope)
    gone = until(lambda: not service.db.rows(
        "SELECT 1 FROM idempotency_key WHERE scope = ?", scope))
    assert gone, "the sweeper did not purge the expired key"
