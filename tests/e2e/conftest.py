"""Fixtures of every HTTP suite: the real local main job (scripts/dev.sh), one process per
function as in AWS, on each backend the service supports.

The session fixture `service` is parametrised by backend. Each backend's job starts once for
the whole session (every suite shares it) on a fresh database:
- `sqlite`: the embedded default, its database file in a temporary directory, no Redis;
- `mariadb`: the same functions built for MySQL, on the machine's MariaDB (a database of its
  own, E2E_MARIADB_DATABASE, emptied first), with Redis, as deployed.
E2E_BACKENDS (default "sqlite,mariadb") picks the backends; E2E_ROOT runs the suites against
another checkout (to show what they catch in older code).

Bearer tokens are minted here with the local development secret; LiveKit webhooks are signed
with the local LiveKit pair, both read from shared/src/config.rs. `service.db` looks at the
database from a connection of its own (another process than the service's functions).

If a job does not come up, every test fails (never skips) with the tail of its log.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import jwt
import pymysql
import pytest
from livekit import api as lk

from livekit_stub import LiveKitStub
from receivers import Receiver, Receivers

ROOT = Path(os.environ.get("E2E_ROOT") or Path(__file__).resolve().parents[2])
DEV_SH = ROOT / "scripts" / "dev.sh"
CONFIG_RS = ROOT / "shared" / "src" / "config.rs"

# The first run compiles the workspace (and may wait for another build's lock on target/).
STARTUP_TIMEOUT_S = float(os.environ.get("E2E_STARTUP_TIMEOUT", 20 * 60))
# A function's first invocation under `cargo lambda watch` starts its binary.
REQUEST_TIMEOUT_S = 120.0

MARIADB_ADMIN = dict(host="127.0.0.1", port=3306, user="root", password="")
MARIADB_DATABASE = os.environ.get("E2E_MARIADB_DATABASE", "call_e2e")
REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/2")
BACKENDS = [b for b in os.environ.get("E2E_BACKENDS", "sqlite,mariadb").split(",") if b]

# How long an invite rings in the shared jobs: short enough that the sweeper's ring-outs show
# up within a suite, long enough for a scenario's steps to finish before it.
RING_TIMEOUT_S = 8
SWEEP_INTERVAL_S = 1

# Configuration that would change what the job does; the suites set their own.
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
    "SWEEP_INTERVAL_SECONDS",
    "HOST",
    "EVENT_ENDPOINTS",
)

# Business-event delivery in the shared jobs: both receivers of the `receivers` fixture, with
# retries compressed from seconds to a fraction of one so the suites see them.
EVENT_SETTINGS = {
    "EVENT_RETRY_BASE_MS": "200",
    "EVENT_RETRY_MAX_MS": "1000",
    "EVENT_TIMEOUT_MS": "1000",
    "EVENT_INLINE_BUDGET_MS": "300",
    "EVENT_FAILURES_BEFORE_PAUSE": "3",
}

DEFAULT_TOKEN_TTL_S = 3600

# Every table a change of the service writes (migrations/): the lock check covers them all.
SERVICE_TABLES = (
    "call_room",
    "call_participant",
    "room_count",
    "webhook_event",
    "livekit_teardown",
    "livekit_removal",
    "call_event",
    "event_feed_head",
    "event_stream",
    "event_endpoint",
    "event_attempt",
    "cache_invalidation",
    "idempotency_key",
)

# MariaDB refreshes information_schema.innodb_trx only after 0.1 s without a reader; a look
# sooner than that after the last one sees the old snapshot. Every check that looks at it
# again waits longer than that between looks.
INNODB_TRX_REFRESH_S = 0.11
INNODB_TRX_POLL_S = 0.2


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str
    json: Any = None

    def __repr__(self) -> str:  # shows up in assertion messages
        return f"<HTTP {self.status} {self.text[:500]!r}>"

    @property
    def data(self) -> Any:
        """The envelope's data of a 200, or an assertion error naming the reply."""
        assert self.status == 200 and isinstance(self.json, dict), self
        assert self.json.get("code") == 0, self
        return self.json.get("data")

    @property
    def key(self) -> Optional[str]:
        return self.json.get("error") if isinstance(self.json, dict) else None


class Database:
    """The service's database seen from another process: reads, and the checks that nothing
    the service did is still holding a transaction or a lock."""

    def __init__(self, backend: str, sqlite_file: Optional[Path], database: str = MARIADB_DATABASE):
        self.backend = backend
        self.sqlite_file = sqlite_file
        self.database = database

    # -- connections ---------------------------------------------------------------------

    def _mariadb(self, **kw):
        # `kw` overrides the defaults (assert_unlocked passes autocommit=False).
        options = dict(database=self.database, autocommit=True, charset="utf8mb4", **MARIADB_ADMIN)
        options.update(kw)
        return pymysql.connect(**options)

    def _sqlite(self, timeout: float = 5.0):
        conn = sqlite3.connect(str(self.sqlite_file), timeout=timeout, isolation_level=None)
        return conn

    def rows(self, sql: str, *args) -> list[tuple]:
        """A read with `?` placeholders, on a fresh connection."""
        if self.backend == "mariadb":
            conn = self._mariadb()
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.replace("?", "%s"), args)
                    return list(cur.fetchall())
            finally:
                conn.close()
        conn = self._sqlite()
        try:
            return list(conn.execute(sql, args).fetchall())
        finally:
            conn.close()

    def room_status(self, room_name: str) -> Optional[int]:
        found = self.rows("SELECT status FROM call_room WHERE room_name = ?", room_name)
        return found[0][0] if found else None

    def statuses(self, room_name: str) -> dict[str, int]:
        return dict(
            self.rows("SELECT uid, status FROM call_participant WHERE room_name = ?", room_name)
        )

    # -- nothing left behind -------------------------------------------------------------

    def open_transactions(self) -> list[tuple]:
        """MariaDB: the service's transactions (on its database) open right now, with how long
        their connection has been idle. SQLite has no such view (`[]`): `assert_unlocked`'s
        write lock covers every transaction left open after a write, but not one that only
        read."""
        if self.backend != "mariadb":
            return []
        return self.rows(
            "SELECT t.trx_id, t.trx_state, t.trx_started, p.id, p.command, p.time "
            "FROM information_schema.innodb_trx t "
            "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
            "WHERE p.db = ? AND p.id <> CONNECTION_ID()",
            self.database,
        )

    def assert_no_open_transaction(self, within_s: float = 5.0) -> None:
        """No transaction of the service stays open: the sweeper's own (a few ms, every
        second) may be caught in flight, and on a loaded machine a process may sit between two
        statements of a transaction for a while, so one clean sample within `within_s` is
        required, which a transaction left open never gives (it stays open until the function's
        next request, or for good)."""
        # information_schema.innodb_trx is a snapshot that MariaDB refreshes only when nobody
        # has read it for 0.1 s: polled faster than that, it keeps answering the first sample,
        # and a sweeper transaction caught in flight would look open for the whole wait. So
        # every look comes more than 0.1 s after the one before (ours or anyone's before us).
        time.sleep(INNODB_TRX_REFRESH_S)
        deadline = time.monotonic() + within_s
        seen: list[tuple] = []
        while True:
            seen = self.open_transactions()
            if not seen or time.monotonic() > deadline:
                break
            time.sleep(INNODB_TRX_POLL_S)
        assert not seen, (
            f"transactions of the service still open: {seen}; "
            f"their connections: {self.connection_owners([row[3] for row in seen])}"
        )

    def connection_owners(self, thread_ids: list[int]) -> list[str]:
        """Which local process holds each of these MariaDB connections (by its client port),
        with the connection's last statement: what a failure report needs to name the culprit."""
        owners = []
        for thread in thread_ids:
            found = self.rows(
                "SELECT p.host, p.info, t.trx_rows_locked, t.trx_lock_structs "
                "FROM information_schema.processlist p LEFT JOIN information_schema.innodb_trx t "
                "ON t.trx_mysql_thread_id = p.id WHERE p.id = ?", thread)
            if not found:
                owners.append(f"{thread}: gone")
                continue
            host, info, rows_locked, locks = found[0]
            port = host.rsplit(":", 1)[-1] if host and ":" in host else ""
            pid = port_owners({port}).get(port)
            process = f"{process_name(pid)} (pid {pid})" if pid else "?"
            owners.append(f"{thread}: {process} rows locked {rows_locked}, lock structs {locks}, "
                          f"statement {info!r}")
        return owners

    def assert_unlocked(self, wait_s: float = 1.0) -> None:
        """Another process can lock every row of every table the service writes at once
        (within `wait_s`, which covers a transaction of the sweeper in flight). On SQLite one
        write lock covers the whole file, so taking it (BEGIN IMMEDIATE) covers every table."""
        if self.backend == "mariadb":
            conn = self._mariadb(autocommit=False)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SET SESSION innodb_lock_wait_timeout = {max(1, int(wait_s))}")
                    for table in SERVICE_TABLES:
                        # One table a transaction. A deadlock (1213) means a request still in
                        # flight locked rows in another order: try again. A transaction left
                        # open waits for nothing, so it never deadlocks; it shows as a lock
                        # wait timeout (1205), which fails.
                        for attempt in range(50):
                            try:
                                cur.execute(f"SELECT 1 FROM {table} FOR UPDATE")
                                break
                            except pymysql.err.OperationalError as err:
                                if err.args[0] != 1213 or attempt == 49:
                                    raise AssertionError(
                                        f"a row of {table} is still locked by the service: {err}"
                                    ) from err
                                conn.rollback()
                                time.sleep(0.02)
                        conn.rollback()
            finally:
                conn.close()
            return
        conn = self._sqlite(timeout=wait_s)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE call_room SET updated_at = updated_at")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as err:
            raise AssertionError(f"the database is still locked by the service: {err}") from err
        finally:
            conn.close()

    def assert_nothing_left_behind(self) -> None:
        self.assert_no_open_transaction()
        self.assert_unlocked()


@dataclass
class Service:
    backend: str
    host: str
    port: int
    log_path: Path
    db: Database
    auth_secret: str
    livekit_api_key: str
    livekit_api_secret: str
    ring_timeout_s: int = RING_TIMEOUT_S
    token_ttl_s: int = DEFAULT_TOKEN_TTL_S
    user_uid: str = "user_002"
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def service_token(self) -> str:
        return self.token(None)

    @property
    def user_token(self) -> str:
        return self.token(self.user_uid)

    def token(self, uid: Optional[str], ttl_s: int = 3600) -> str:
        """A bearer token: the service role for uid None, else a user token for uid."""
        claims = {"sub": uid or "e2e-backend", "exp": int(time.time()) + ttl_s}
        if uid is None:
            claims["role"] = "service"
        return jwt.encode(claims, self.auth_secret, algorithm="HS256")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: Optional[str] = "service",
        as_uid: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
        raw: Optional[bytes] = None,
    ) -> Reply:
        """One HTTP request. `token`: "service" (default), "user", None (no header) or a JWT;
        `as_uid` sends a user token for that uid instead. `body` is sent as JSON; `raw` sends
        bytes as they are."""
        hdrs = {"Accept": "application/json"}
        if as_uid is not None:
            hdrs["Authorization"] = f"Bearer {self.token(as_uid)}"
        elif token == "service":
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

    def webhook(self, event: dict, *, sign: bool = True) -> Reply:
        """POST a LiveKit webhook event, signed as LiveKit signs it (a JWT carrying the
        body's sha256 in Authorization)."""
        body = json.dumps(event).encode("utf-8")
        headers = {"Content-Type": "application/webhook+json"}
        if sign:
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
            signed = (
                lk.AccessToken(self.livekit_api_key, self.livekit_api_secret)
                .with_sha256(digest)
                .to_jwt()
            )
            headers["Authorization"] = signed
        return http_request(
            self.host, self.port, "POST", "/api/webhooks/livekit", body, headers
        )


def livekit_event(kind: str, room_name: str, uid: Optional[str] = None, *, at: Optional[int] = None,
                  event_id: Optional[str] = None) -> dict:
    """A LiveKit webhook event as the server sends it (participant_joined, participant_left,
    room_finished); `at` is createdAt in Unix seconds."""
    event = {
        "event": kind,
        "id": event_id or f"EV_{uuid.uuid4().hex[:16]}",
        "createdAt": str(at if at is not None else int(time.time())),
        "room": {"sid": f"RM_{room_name}", "name": room_name},
    }
    if uid is not None:
        event["participant"] = {"sid": f"PA_{uid}", "identity": uid}
    return event


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


def port_owners(ports: set[str]) -> dict[str, int]:
    """Which local process holds the MariaDB connection from each of these client ports:
    port -> pid (one `ss` for them all)."""
    try:
        out = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, int] = {}
    for line in out.splitlines():
        cols = line.split()
        pid = re.search(r"pid=(\d+)", line)
        if len(cols) >= 4 and pid and cols[3].rsplit(":", 1)[-1] == "3306":
            local = cols[2].rsplit(":", 1)[-1]
            if local in ports:
                found[local] = int(pid.group(1))
    return found


def process_name(pid: int) -> str:
    """The executable's name of a local process (a function's binary), or "?"."""
    try:
        return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name
    except (OSError, UnicodeDecodeError):
        return "?"


def log_tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(no log: {err})"
    return "\n".join(text.splitlines()[-lines:])


def local_constant(name: str) -> str:
    """A development default from shared/src/config.rs (the job runs with APP_ENV=local)."""
    source = CONFIG_RS.read_text()
    found = re.search(rf'{name}:\s*&str\s*=\s*"([^"]+)"', source)
    assert found, f"{name} not found in {CONFIG_RS}"
    return found.group(1)


def local_livekit_pair() -> tuple[str, str]:
    return local_constant("LOCAL_LIVEKIT_API_KEY"), local_constant("LOCAL_LIVEKIT_API_SECRET")


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


def start_job(backend: str, tmp: Path, endpoints_json: str, database: str = MARIADB_DATABASE,
              redis_url: str = REDIS_URL, extra_env: Optional[dict[str, str]] = None,
              ) -> tuple[subprocess.Popen, int, Path, Database]:
    """The local main job on `backend` (MariaDB: in `database`, emptied first, with Redis at
    `redis_url`); `extra_env` is laid over the settings above last."""
    port = free_port()
    log_path = tmp / f"dev-{backend}.log"
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(
        PORT=str(port),
        RUST_LOG="info",
        DEV_NO_RELOAD="1",
        # More than one instance per function, as Lambda scales out: requests to the same
        # function race in the database too, not in cargo lambda's queue.
        LAMBDA_CONCURRENCY="3",
        RING_TIMEOUT_SECONDS=str(RING_TIMEOUT_S),
        SWEEP_INTERVAL_SECONDS=str(SWEEP_INTERVAL_S),
        # The suites send many requests per uid; the limits have tests of their own.
        RATE_LIMIT_CREATE_PER_MIN="0",
        RATE_LIMIT_JOIN_PER_MIN="0",
        RATE_LIMIT_INVITE_PER_MIN="0",
        EVENT_ENDPOINTS=endpoints_json,
        **EVENT_SETTINGS,
    )
    sqlite_file = None
    if backend == "mariadb":
        env.update(
            DATABASE_URL=f"mysql://root@127.0.0.1:3306/{database}",
            REDIS_URL=redis_url,
        )
    else:
        sqlite_file = tmp / "call.db"
        env.update(LOCAL_DB_FILE=str(sqlite_file))
    env.update(extra_env or {})
    log = open(log_path, "wb", buffering=0)
    proc = subprocess.Popen(
        ["bash", str(DEV_SH), "--reset"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own session and process group: teardown kills the tree
    )
    proc.log_file = log  # type: ignore[attr-defined]
    return proc, port, log_path, Database(backend, sqlite_file, database)


def wait_healthy(proc: subprocess.Popen, port: int, log_path: Path, started: float) -> Reply:
    last_error = "no attempt yet"
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"scripts/dev.sh exited with {proc.returncode} before /health answered.\n"
                f"--- tail of {log_path} ---\n{log_tail(log_path)}",
                pytrace=False,
            )
        if time.monotonic() - started > STARTUP_TIMEOUT_S:
            pytest.fail(
                f"GET /health did not answer 200 within {STARTUP_TIMEOUT_S:.0f}s "
                f"(last: {last_error}).\n--- tail of {log_path} ---\n{log_tail(log_path)}",
                pytrace=False,
            )
        try:
            health = http_request("127.0.0.1", port, "GET", "/health", timeout=60)
            if health.status == 200:
                return health
            last_error = repr(health)
        except (OSError, http.client.HTTPException) as err:
            last_error = f"{type(err).__name__}: {err}"
        time.sleep(1.0)


def warm_every_function(port: int) -> None:
    """One request to every route of the router (Cargo.toml), without a token: `cargo lambda
    watch` starts a function's process on its first invocation, which on a loaded machine can
    take seconds, and no scenario's timing (a ring deadline, a client timeout) should pay it."""
    import tomllib

    router = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["metadata"][
        "lambda"]["watch"]["router"]
    for route, targets in router.items():
        path = re.sub(r"\{[^}]+\}", "warm", route)
        for target in targets:
            http_request("127.0.0.1", port, target["method"], path, timeout=REQUEST_TIMEOUT_S)


CHROMIUM = shutil.which("chromium") or shutil.which("google-chrome")


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's package, which scripts/test.sh installs; never a browser
    download) driven by Playwright, with every host but 127.0.0.1 unresolvable: a page that
    needed anything from elsewhere would show it."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is not installed (scripts/test.sh installs Debian's package)"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def receivers():
    """The business-event receivers every job delivers to (both backends share them; each
    test's room names are its own)."""
    both = Receivers(main=Receiver("main"), flaky=Receiver("flaky"), settings=EVENT_SETTINGS)
    yield both
    both.main.stop()
    both.flaky.stop()


@pytest.fixture(scope="session")
def livekit_server():
    """LiveKit's RoomService for the jobs (livekit_stub.py): every DeleteRoom, ListRooms and
    RemoveParticipant the service makes is checked for the local pair's credentials and
    recorded; at the end, none may have been refused but those a test asked for."""
    stub = LiveKitStub(*local_livekit_pair()).start()
    yield stub
    stub.stop()
    counts = {m: len(stub.calls(m)) for m in ("DeleteRoom", "RemoveParticipant", "ListRooms")}
    print(f"\n[e2e] LiveKit RoomService calls: {counts}, refused: {len(stub.refused())}")
    stub.assert_no_unexpected_refusal()


@pytest.fixture(scope="session", params=BACKENDS)
def service(request, receivers, livekit_server):
    backend = request.param
    tmp = Path(tempfile.mkdtemp(prefix=f"call-e2e-{backend}-"))
    started = time.monotonic()
    # The jobs call LiveKit's server API (teardown, removal, the sweeper's reconcile); clients
    # are still told the local client URL.
    livekit_env = {"LIVEKIT_URL": livekit_server.url,
                   "LIVEKIT_CLIENT_URL": local_constant("LOCAL_LIVEKIT_URL"),
                   # JSON logs, as in AWS: the functions print their metrics (EMF) too, which
                   # test_metrics.py reads from the job's log.
                   "AWS_LAMBDA_LOG_FORMAT": "JSON"}
    proc, port, log_path, db = start_job(backend, tmp, receivers.endpoints_json(),
                                         extra_env=livekit_env)
    print(f"\n[e2e:{backend}] scripts/dev.sh --reset on port {port}, pid {proc.pid}, log {log_path}")
    failed_before = request.session.testsfailed
    try:
        health = wait_healthy(proc, port, log_path, started)
        print(f"[e2e:{backend}] /health answered 200 after {time.monotonic() - started:.1f}s")
        api_key, api_secret = local_livekit_pair()
        svc = Service(
            backend=backend,
            host="127.0.0.1",
            port=port,
            log_path=log_path,
            db=db,
            auth_secret=local_constant("LOCAL_AUTH_JWT_SECRET"),
            livekit_api_key=api_key,
            livekit_api_secret=api_secret,
        )
        svc.extra["first_health"] = health
        warm_every_function(port)
        yield svc
    finally:
        stop_tree(proc)
        proc.log_file.close()  # type: ignore[attr-defined]
        clean = request.session.testsfailed == failed_before
        if clean and proc.returncode is not None and not os.environ.get("E2E_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"[e2e:{backend}] job stopped (exit {proc.returncode}); removed {tmp}")
        else:
            print(f"[e2e:{backend}] job stopped (exit {proc.returncode}); log kept at {log_path}")


@pytest.fixture
def clean_after(service):
    """Use in a scenario: afterwards, no transaction of the service is open and another
    process can write every row at once."""
    yield service
    service.db.assert_nothing_left_behind()


@pytest.fixture
def names(request, service):
    """Unique room names and uids for one test, so suites sharing a job never collide:
    names("room") -> "room_<8 hex>"."""
    tag = uuid.uuid4().hex[:8]

    def make(prefix: str) -> str:
        return f"{prefix}_{tag}"

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failing test, append the tail of the job's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "service" in getattr(item, "funcargs", {}):
        svc = item.funcargs["service"]
        report.sections.append((f"dev.sh log ({svc.backend}, tail)", log_tail(svc.log_path, 60)))
