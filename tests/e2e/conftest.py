"""End-to-end fixtures: the real local main job (scripts/dev.sh) on a fresh database.

The session fixture `service` starts `scripts/dev.sh --reset` on a free port with its
database in a temporary directory, waits for GET /health, mints bearer tokens with the
`dev_tokens` example that dev.sh builds, and kills the whole process tree at the end.
If the job does not come up, every test fails (never skips) with the tail of its log.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV_SH = ROOT / "scripts" / "dev.sh"
DEV_TOKENS = ROOT / "target" / "debug" / "examples" / "dev_tokens"
CONFIG_RS = ROOT / "shared" / "src" / "config.rs"

# The first run compiles the workspace (and may wait for another build's lock on target/).
STARTUP_TIMEOUT_S = float(os.environ.get("E2E_STARTUP_TIMEOUT", 15 * 60))
# A function's first invocation under `cargo lambda watch` starts its binary.
REQUEST_TIMEOUT_S = 600.0

# Configuration that would change what the job does; the suite runs it on local defaults.
SCRUBBED_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "LIVEKIT_URL",
    "LIVEKIT_CLIENT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "AUTH_JWT_SECRET",
    "RING_TIMEOUT_SECONDS",
    "LIVEKIT_TOKEN_TTL_SECONDS",
    "MAX_PARTICIPANTS_LIMIT",
    "MAX_CALL_SECONDS",
    "RATE_LIMIT_CREATE_PER_MIN",
    "RATE_LIMIT_JOIN_PER_MIN",
    "RATE_LIMIT_INVITE_PER_MIN",
    "SECRETS_ARN",
    "AWS_ENDPOINT_URL",
)

DEFAULT_TOKEN_TTL_S = 3600


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str
    json: Any = None

    def __repr__(self) -> str:  # shows up in assertion messages
        return f"<HTTP {self.status} {self.text[:500]!r}>"


@dataclass
class Service:
    host: str
    port: int
    log_path: Path
    db_file: Path
    service_token: str
    user_token: str
    user_uid: str
    livekit_api_key: str
    livekit_api_secret: str
    token_ttl_s: int = DEFAULT_TOKEN_TTL_S
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: Optional[str] = "service",
        headers: Optional[dict[str, str]] = None,
        raw: Optional[bytes] = None,
    ) -> Reply:
        """One HTTP request. `token`: "service" (default), "user", None (no header) or a JWT.
        `body` is sent as JSON; `raw` sends bytes as they are."""
        hdrs = {"Accept": "application/json"}
        if token == "service":
            hdrs["Authorization"] = f"Bearer {self.service_token}"
        elif token == "user":
            hdrs["Authorization"] = f"Bearer {self.user_token}"
        elif token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw
        if data is None and body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        return http_request(self.host, self.port, method, path, data, hdrs)


def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    data: Optional[bytes] = None,
    headers: Optional[dict[str, str]] = None,
    timeout: float = REQUEST_TIMEOUT_S,
) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        payload = resp.read()
        text = payload.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Reply(
            status=resp.status,
            headers={k.lower(): v for k, v in resp.getheaders()},
            text=text,
            json=parsed,
        )
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if port == 8080:  # never collide with a developer's running instance
        return free_port()
    return port


def log_tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(no log: {err})"
    return "\n".join(text.splitlines()[-lines:])


def local_livekit_pair() -> tuple[str, str]:
    """The dev key/secret local mode signs LiveKit tokens with (shared/src/config.rs)."""
    source = CONFIG_RS.read_text()
    key = re.search(r'LOCAL_LIVEKIT_API_KEY:\s*&str\s*=\s*"([^"]+)"', source)
    secret = re.search(r'LOCAL_LIVEKIT_API_SECRET:\s*&str\s*=\s*"([^"]+)"', source)
    assert key and secret, f"LOCAL_LIVEKIT_API_KEY/SECRET not found in {CONFIG_RS}"
    return key.group(1), secret.group(1)


def session_pids(sid: int) -> list[int]:
    """Processes in session `sid` (the job runs in its own session, so these are its tree,
    including children that moved to a process group of their own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may contain spaces or parens.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def stop_tree(proc: subprocess.Popen) -> None:
    sid = proc.pid
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        targets = set(session_pids(sid))
        if proc.poll() is None:
            targets.add(proc.pid)
        if not targets:
            break
        try:
            os.killpg(sid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in targets:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not session_pids(sid):
                return
            time.sleep(0.2)
    proc.poll()


def parse_tokens(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:export\s+)?([A-Z_]+)=(\S+)\s*$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


@pytest.fixture(scope="session")
def service(request):
    tmp = Path(tempfile.mkdtemp(prefix="call-e2e-"))
    log_path = tmp / "dev.log"
    db_file = tmp / "call.db"
    port = free_port()

    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(PORT=str(port), LOCAL_DB_FILE=str(db_file), RUST_LOG="info")

    log = open(log_path, "wb", buffering=0)
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", str(DEV_SH), "--reset"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own session and process group: teardown kills the tree
    )
    print(f"\n[e2e] scripts/dev.sh --reset on port {port}, pid {proc.pid}, log {log_path}")

    try:
        health = None
        last_error = "no attempt yet"
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"scripts/dev.sh exited with {proc.returncode} before /health answered.\n"
                    f"--- tail of {log_path} ---\n{log_tail(log_path)}",
                    pytrace=False,
                )
            elapsed = time.monotonic() - started
            if elapsed > STARTUP_TIMEOUT_S:
                pytest.fail(
                    f"GET /health did not answer 200 within {STARTUP_TIMEOUT_S:.0f}s "
                    f"(last: {last_error}).\n--- tail of {log_path} ---\n{log_tail(log_path)}",
                    pytrace=False,
                )
            try:
                health = http_request("127.0.0.1", port, "GET", "/health", timeout=60)
                if health.status == 200:
                    break
                last_error = repr(health)
            except (OSError, http.client.HTTPException) as err:
                last_error = f"{type(err).__name__}: {err}"
            time.sleep(1.0)
        print(f"[e2e] /health answered 200 after {time.monotonic() - started:.1f}s")

        # Bearer tokens: the example dev.sh built, with the job's environment.
        token_env = dict(env, APP_ENV="local", DATABASE_URL=f"sqlite://{db_file}?mode=rwc")
        tokens: dict[str, str] = {}
        if DEV_TOKENS.exists():
            out = subprocess.run(
                [str(DEV_TOKENS), "user_002"],
                cwd=ROOT,
                env=token_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, f"dev_tokens failed: {out.stderr}"
            tokens = parse_tokens(out.stdout)
        if "SERVICE_TOKEN" not in tokens:  # fall back to what dev.sh printed
            printed = parse_tokens(log_path.read_text(errors="replace"))
            tokens = {
                "SERVICE_TOKEN": printed.get("TOKEN", ""),
                "USER_TOKEN": printed.get("USER_TOKEN", ""),
                "USER_UID": "user_002",
            }
        assert tokens.get("SERVICE_TOKEN"), "no service token from dev_tokens or dev.sh output"
        assert tokens.get("USER_TOKEN"), "no user token from dev_tokens or dev.sh output"

        api_key, api_secret = local_livekit_pair()
        svc = Service(
            host="127.0.0.1",
            port=port,
            log_path=log_path,
            db_file=db_file,
            service_token=tokens["SERVICE_TOKEN"],
            user_token=tokens["USER_TOKEN"],
            user_uid=tokens.get("USER_UID", "user_002"),
            livekit_api_key=api_key,
            livekit_api_secret=api_secret,
        )
        svc.extra["first_health"] = health
        yield svc
    finally:
        stop_tree(proc)
        log.close()
        if request.session.testsfailed == 0 and proc.returncode is not None and not os.environ.get(
            "E2E_KEEP_TMP"
        ):
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"[e2e] job stopped (exit {proc.returncode}); removed {tmp}")
        else:
            print(f"[e2e] job stopped (exit {proc.returncode}); log kept at {log_path}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failing test, append the tail of the job's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "service" in getattr(item, "funcargs", {}):
        svc = item.funcargs["service"]
        report.sections.append(("dev.sh log (tail)", log_tail(svc.log_path, 60)))
