"""A stand-in for the LiveKit server's RoomService (Twirp over HTTP) for the HTTP suites: the
three methods the service calls (DeleteRoom, ListRooms, RemoveParticipant), each checked for
credentials as LiveKit checks them, each recorded.

LiveKit acts on a call only when its bearer token is an HS256 JWT signed with the API secret,
`iss` is the API key, `exp` is ahead and `nbf` (when present) is not, and the token grants the
method: `roomCreate` for DeleteRoom, `roomList` for ListRooms, `roomAdmin` on the room named in
the request for RemoveParticipant. Anything else is answered as LiveKit answers it: 401 with a
Twirp error `unauthenticated`, or 403 `permission_denied` for a missing grant.

The stub keeps the rooms LiveKit has (tests seed them, with their participants) so that the
sweeper's reconcile (ListRooms) gets a meaningful answer.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

import jwt
from google.protobuf import json_format
from livekit.protocol import models as lk_models
from livekit.protocol import room as lk_room

PREFIX = "/twirp/livekit.RoomService/"

# What each method's request is, and the grant it needs.
REQUESTS = {
    "DeleteRoom": lk_room.DeleteRoomRequest,
    "ListRooms": lk_room.ListRoomsRequest,
    "RemoveParticipant": lk_room.RoomParticipantIdentity,
}


@dataclass
class TwirpCall:
    """One request as the stub saw it."""

    method: str
    # The room a DeleteRoom or RemoveParticipant names; the names a ListRooms asks about.
    rooms: list[str]
    identity: str
    status: int
    # Why LiveKit would refuse it (None: the credentials pass).
    refused: Optional[str]
    # The token's video grant, as decoded (empty when the token did not decode).
    grants: dict = field(default_factory=dict)
    # The stub was told to expect refusals when this call came (see `use_secret`).
    deliberate: bool = False
    at: float = field(default_factory=time.monotonic)

    @property
    def accepted(self) -> bool:
        return self.refused is None

    def touches(self, rooms) -> bool:
        return any(r in rooms for r in self.rooms)


class Refusal(Exception):
    def __init__(self, status: int, code: str, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class LiveKitStub:
    def __init__(self, api_key: str, api_secret: str):
        self.api_key = api_key
        self.api_secret = api_secret
        # The secret the stub verifies with; another one makes it refuse the service's calls.
        self._verify_with = api_secret
        self._cond = threading.Condition()
        self._calls: list[TwirpCall] = []
        # room -> identities LiveKit has in it (seeded by tests).
        self._rooms: dict[str, set[str]] = {}
        # Rooms LiveKit does not have: deleted through the API, or said to have vanished.
        self._gone: set[str] = set()
        self._server: Optional[ThreadingHTTPServer] = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> "LiveKitStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the service's client expects

            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, content_type, payload = stub._answer(
                    self.path, self.headers.get("Authorization"),
                    self.headers.get("Content-Type") or "", body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # quiet: the calls are recorded instead
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="livekit-stub").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what tests set ------------------------------------------------------------------

    def seed_room(self, name: str, identities=()) -> None:
        """LiveKit has this room, with these participants connected."""
        with self._cond:
            self._rooms.setdefault(name, set()).update(identities)
            self._gone.discard(name)

    def vanish(self, name: str) -> None:
        """LiveKit no longer has this room (it closed without a webhook reaching us)."""
        with self._cond:
            self._rooms.pop(name, None)
            self._gone.add(name)

    def participants(self, name: str) -> set[str]:
        with self._cond:
            return set(self._rooms.get(name, set()))

    def use_secret(self, secret: Optional[str]) -> None:
        """Verify tokens with `secret` (None: the service's own again). While another secret
        is in use, refusals are deliberate and the session's final check leaves them be."""
        with self._cond:
            self._verify_with = secret if secret is not None else self.api_secret

    # -- what tests read -----------------------------------------------------------------

    def calls(self, method: Optional[str] = None, rooms=None) -> list[TwirpCall]:
        """The calls so far, of `method` and touching one of `rooms` when given."""
        with self._cond:
            return [c for c in self._calls
                    if (method is None or c.method == method)
                    and (rooms is None or c.touches(rooms))]

    def refused(self, rooms=None) -> list[TwirpCall]:
        return [c for c in self.calls(rooms=rooms) if not c.accepted]

    def wait_for(self, what: Callable[[list[TwirpCall]], bool], timeout: float = 30.0,
                 message: str = "") -> list[TwirpCall]:
        """Waits until `what(calls)` holds (woken by each new call); the calls then."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not what(list(self._calls)):
                left = deadline - time.monotonic()
                assert left > 0, f"LiveKit never saw {message or what}: {self._calls}"
                self._cond.wait(left)
            return list(self._calls)

    def assert_no_unexpected_refusal(self) -> None:
        unexpected = [c for c in self.calls() if not c.accepted and not c.deliberate]
        assert not unexpected, (f"LiveKit refused {len(unexpected)} of the service's calls, "
                                f"the first: {unexpected[:3]}")

    # -- the server ----------------------------------------------------------------------

    def _check(self, authorization: Optional[str], method: str, rooms: list[str]) -> dict:
        """The token's video grant when LiveKit would act on the call; Refusal otherwise."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Refusal(401, "unauthenticated", f"no bearer token: {authorization!r}")
        token = authorization[len("Bearer "):]
        try:
            claims = jwt.decode(
                token, self._verify_with, algorithms=["HS256"], issuer=self.api_key,
                options={"require": ["exp", "iss"], "verify_exp": True, "verify_nbf": True},
                leeway=0)
        except jwt.PyJWTError as err:
            raise Refusal(401, "unauthenticated", f"invalid token: {type(err).__name__}: {err}")
        video = claims.get("video") or {}
        if method == "DeleteRoom":
            granted = video.get("roomCreate") is True
        elif method == "ListRooms":
            granted = video.get("roomList") is True
        else:
            granted = video.get("roomAdmin") is True and video.get("room") == "".join(rooms)
        if not granted:
            raise Refusal(403, "permission_denied", f"{method} on {rooms} needs another grant "
                                                    f"than {video}")
        return video

    def _answer(self, path: str, authorization: Optional[str], content_type: str,
                body: bytes) -> tuple[int, str, bytes]:
        method = path[len(PREFIX):] if path.startswith(PREFIX) else ""
        request_type = REQUESTS.get(method)
        if request_type is None:
            return 404, "application/json", _twirp_error("bad_route", f"no handler for {path}")
        as_json = content_type.startswith("application/json")
        request = request_type()
        try:
            if as_json:
                json_format.Parse(body.decode("utf-8"), request)
            else:
                request.ParseFromString(body)
        except Exception as err:  # noqa: BLE001 (any malformed body is a Twirp malformed)
            return 400, "application/json", _twirp_error("malformed", str(err))
        if method == "ListRooms":
            rooms, identity = list(request.names), ""
        elif method == "DeleteRoom":
            rooms, identity = [request.room], ""
        else:
            rooms, identity = [request.room], request.identity

        with self._cond:
            deliberate = self._verify_with != self.api_secret
            try:
                grants, refused, status = self._check(authorization, method, rooms), None, 200
            except Refusal as refusal:
                grants, refused, status = {}, f"{refusal.code}: {refusal.msg}", refusal.status
            self._calls.append(TwirpCall(method, rooms, identity, status, refused, grants,
                                         deliberate))
            if refused is None:
                reply = self._apply(method, rooms, identity)
            self._cond.notify_all()
        if refused is not None:
            code, msg = refused.split(": ", 1)
            return status, "application/json", _twirp_error(code, msg)
        if as_json:
            return 200, "application/json", json_format.MessageToJson(reply).encode("utf-8")
        return 200, "application/protobuf", reply.SerializeToString()

    def _apply(self, method: str, rooms: list[str], identity: str):
        # Called under the lock.
        if method == "DeleteRoom":
            self._rooms.pop(rooms[0], None)
            self._gone.add(rooms[0])
            return lk_room.DeleteRoomResponse()
        if method == "RemoveParticipant":
            self._rooms.get(rooms[0], set()).discard(identity)
            return lk_room.RemoveParticipantResponse()
        # The suites simulate presence with webhooks the stub never sees: a room it was not
        # told about is taken to exist unless it was deleted or said to have vanished, so the
        # reconcile ends only what a test means it to.
        listed = [
            lk_models.Room(name=name, num_participants=len(self._rooms.get(name, ())))
            for name in rooms
            if name in self._rooms or name not in self._gone
        ]
        return lk_room.ListRoomsResponse(rooms=listed)


def _twirp_error(code: str, msg: str) -> bytes:
    return json.dumps({"code": code, "msg": msg}).encode("utf-8")
