"""HTTP-level errors through the real local gateway (`cargo lambda watch`): the error
envelope {"code": <status>, "msg": …, "error": <stable key>}, auth, body limits, languages.
Nothing here creates a room, so the seed flow still starts on an empty database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time

from conftest import CONFIG_RS

CJK = re.compile(r"[\u3400-\u9fff]")


def error(reply, status, key):
    assert reply.status == status, reply
    body = reply.json
    assert isinstance(body, dict), f"not a JSON object: {reply}"
    assert body.get("code") == status, reply
    assert body.get("error") == key, reply
    assert isinstance(body.get("msg"), str) and body["msg"], reply
    return body


def test_missing_or_bad_bearer_is_401(service):
    for method, path, body in (
        ("GET", "/api/rooms?limit=10&offset=0", None),
        ("GET", "/api/rooms/meeting_001", None),
        ("POST", "/api/participants/join", {"room_name": "meeting_001", "uid": "user_002"}),
    ):
        error(service.request(method, path, body, token=None), 401, "unauthorized")
    error(service.request("GET", "/api/rooms", token="not.a.jwt"), 401, "unauthorized")
    # A well-formed HS256 service token signed with the wrong secret (the LiveKit one).
    forged = hs256({"sub": "x", "role": "service", "exp": int(time.time()) + 600},
                   service.livekit_api_secret)
    error(service.request("GET", "/api/rooms", token=forged), 401, "unauthorized")
    # Signed with the right (local dev) secret: accepted while valid, 401 once expired.
    secret = local_auth_secret()
    fresh = hs256({"sub": "x", "role": "service", "exp": int(time.time()) + 600}, secret)
    reply = service.request("GET", "/api/rooms?limit=1", token=fresh)
    assert reply.status == 200, reply
    expired = hs256({"sub": "x", "role": "service", "exp": int(time.time()) - 3600}, secret)
    error(service.request("GET", "/api/rooms?limit=1", token=expired), 401, "unauthorized")
    # alg must be HS256: an unsigned token is refused.
    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    unsigned = head + "." + fresh.split(".")[1] + "."
    error(service.request("GET", "/api/rooms?limit=1", token=unsigned), 401, "unauthorized")


def local_auth_secret():
    source = CONFIG_RS.read_text()
    m = re.search(r'LOCAL_AUTH_JWT_SECRET:\s*&str\s*=\s*"([^"]+)"', source)
    assert m, f"LOCAL_AUTH_JWT_SECRET not found in {CONFIG_RS}"
    return m.group(1)


def hs256(claims, secret):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_health_needs_no_auth(service):
    reply = service.request("GET", "/health", token=None)
    assert reply.status == 200, reply
    assert reply.json == {"status": "ok", "database": "ok"}, reply


def test_malformed_json_is_400(service):
    reply = service.request("POST", "/api/rooms", raw=b'{"creator": "user_001", "room_name": ')
    error(reply, 400, "invalid_parameters")
    # A wrong type is a validation failure too, never a 500.
    reply = service.request(
        "POST", "/api/participants/join", {"room_name": "meeting_001", "uid": 2}
    )
    error(reply, 400, "invalid_parameters")
    # The body is JSON whatever Content-Type says.
    reply = service.request(
        "POST",
        "/api/rooms",
        raw=b"not json at all",
        headers={"Content-Type": "text/plain"},
    )
    error(reply, 400, "invalid_parameters")


def test_100_kib_body_is_refused_without_5xx(service):
    body = json.dumps(
        {
            "creator": "user_001",
            "room_name": "big_body_room",
            "source_channel_id": "x" * (100 * 1024),
        }
    ).encode()
    assert len(body) > 100 * 1024
    reply = service.request("POST", "/api/rooms", raw=body)
    assert reply.status < 500, reply
    assert reply.status in (413, 400), reply
    assert isinstance(reply.json, dict) and reply.json.get("error"), reply
    if reply.status == 413:
        error(reply, 413, "payload_too_large")
    # Nothing was created.
    error(service.request("GET", "/api/rooms/big_body_room"), 404, "room_not_found")


def test_unknown_room_is_404(service):
    error(service.request("GET", "/api/rooms/no_such_room"), 404, "room_not_found")
    error(
        service.request("GET", "/api/rooms/no_such_room/participants"), 404, "room_not_found"
    )
    error(
        service.request("POST", "/api/participants/join", {"room_name": "no_such_room", "uid": "u9"}),
        404,
        "room_not_found",
    )


def test_user_token_may_not_act_for_someone_else(service):
    # dev_tokens' user token is for user_002; creating a room as user_001 is forbidden.
    reply = service.request(
        "POST",
        "/api/rooms",
        {"creator": "user_001", "room_name": "not_yours"},
        token="user",
    )
    error(reply, 403, "forbidden")
    error(service.request("GET", "/api/rooms/not_yours"), 404, "room_not_found")


def test_accept_language_en_gives_english(service):
    zh = error(service.request("GET", "/api/rooms/no_such_room"), 404, "room_not_found")
    assert CJK.search(zh["msg"]), f"default msg should be Chinese: {zh}"

    en = error(
        service.request("GET", "/api/rooms/no_such_room", headers={"Accept-Language": "en"}),
        404,
        "room_not_found",
    )
    assert not CJK.search(en["msg"]) and en["msg"].isascii(), en
    assert "not found" in en["msg"].lower(), en

    # Success messages too; the first supported language wins.
    for header in ("en", "en-US,en;q=0.9", "fr-FR, en;q=0.8, zh;q=0.5"):
        ok = service.request(
            "GET", "/api/rooms?limit=10&offset=0", headers={"Accept-Language": header}
        )
        assert ok.status == 200 and ok.json["code"] == 0, ok
        assert ok.json["msg"] != "获取房间列表成功" and ok.json["msg"].isascii(), (header, ok)
    ok = service.request(
        "GET", "/api/rooms?limit=10&offset=0", headers={"Accept-Language": "zh-CN,en;q=0.9"}
    )
    assert ok.json["msg"] == "获取房间列表成功", ok


def test_out_of_range_query_is_400(service):
    error(service.request("GET", "/api/rooms?limit=0&offset=0"), 400, "invalid_parameters")
    error(service.request("GET", "/api/rooms?limit=10&offset=-1"), 400, "invalid_parameters")
    error(service.request("GET", "/api/rooms?limit=abc"), 400, "invalid_parameters")
