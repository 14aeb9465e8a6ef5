"""Webhook receivers on loopback for the business-event suites: each verifies every request
with the `standardwebhooks` package (a Standard Webhooks implementation we did not write),
records every arrival (failed attempts, retries and refused signatures too, each with whether
it verified) and answers as a test tells it to (400 to a signature that does not verify)."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Arrival:
    id: str
    type: str
    room_name: str
    seq: int
    body: dict
    status: int
    verified: bool
    received_at: float  # time.time()


# (event) -> (status, delay_s); None: the default 200 at once.
Rule = Callable[[dict], Optional[tuple[int, float]]]


class Receiver:
    def __init__(self, name: str):
        self.name = name
        self.secret_bytes = f"e2e-{name}-signing-key-0123456789"[:32].encode()
        self.secret = "whsec_" + base64.b64encode(self.secret_bytes).decode()
        self._verifier = Webhook(self.secret)
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._rules: dict[str, Rule] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                status, delay = receiver._answer(raw, dict(self.headers.items()))
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/{name}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()

    def endpoint(self, types: Optional[list[str]] = None) -> dict:
        entry = {"url": self.url, "secret": self.secret}
        if types is not None:
            entry["types"] = types
        return entry

    def _answer(self, raw: bytes, headers: dict) -> tuple[int, float]:
        try:
            event = self._verifier.verify(raw, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
            try:
                event = json.loads(raw or b"{}")
            except ValueError:
                event = {}
            if not isinstance(event, dict):
                event = {}
        rule = None
        with self._lock:
            for prefix, candidate in self._rules.items():
                if str(event.get("room_name", "")).startswith(prefix):
                    rule = candidate
                    break
        answer = (rule(event) if rule else None) or (200, 0.0)
        if not verified:
            answer = (400, 0.0)
        with self._lock:
            self._arrivals.append(Arrival(
                id=str(event.get("id", "")), type=str(event.get("type", "")),
                room_name=str(event.get("room_name", "")), seq=int(event.get("seq", 0)),
                body=event, status=answer[0], verified=verified, received_at=time.time()))
        return answer

    def rule(self, room_prefix: str, rule: Rule) -> None:
        """Answers for events of rooms whose name starts with `room_prefix`."""
        with self._lock:
            self._rules[room_prefix] = rule

    def arrivals(self, room_prefix: str = "") -> list[Arrival]:
        with self._lock:
            return [a for a in self._arrivals if a.room_name.startswith(room_prefix)]

    def assert_all_verified(self, room_prefix: str) -> None:
        """Every request for those rooms that arrived, whatever was answered (failed attempts
        and the sweeper's retries included), carried a valid signature over its exact body."""
        arrived = self.arrivals(room_prefix)
        assert arrived, f"nothing arrived for {room_prefix}"
        bad = [(a.id, a.seq, a.type, a.status) for a in arrived if not a.verified]
        assert not bad, f"{len(bad)} of {len(arrived)} arrivals failed verification: {bad}"

    def accepted(self, room_prefix: str = "") -> list[Arrival]:
        return [a for a in self.arrivals(room_prefix) if 200 <= a.status < 300]

    def wait_for(self, room_prefix: str, predicate: Callable[[list[Arrival]], bool],
                 timeout_s: float) -> list[Arrival]:
        """The accepted events of those rooms once `predicate` holds (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.accepted(room_prefix)
            if predicate(got) or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


@dataclass
class Receivers:
    """Two endpoints of the shared jobs: `main` always answers 200; `flaky` answers as each
    test tells it (its failures pause only its own inline attempts)."""
    main: Receiver
    flaky: Receiver
    settings: dict = field(default_factory=dict)

    def endpoints_json(self) -> str:
        return json.dumps([self.main.endpoint(), self.flaky.endpoint()])
