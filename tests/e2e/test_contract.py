"""The published API contract, checked against the running service on each backend.

- GET /api/openapi.json and GET /api/docs answer without a token; the document validates with
  an independent OpenAPI 3.1 validator (openapi-spec-validator) and names every route the
  local router serves;
- the docs page, opened in headless Chromium, renders every operation of the document, from
  assets the service itself serves (the bundle is the npm package's, byte for byte);
- the document's name rule (the room_name/uid pattern) decides as the service does;
- schemathesis fuzzes every operation of a job of its own (valid and invalid inputs, stateful
  sequences along the document's links, a service token, a fixed seed) with exactly the
  checks not_a_server_error, response_schema_conformance, status_code_conformance and
  content_type_conformance, and finds nothing.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path
from urllib.parse import quote

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from conftest import (
    ROOT,
    Database,
    Service,
    http_request,
    local_constant,
    local_livekit_pair,
    log_tail,
    start_job,
    stop_tree,
    wait_healthy,
)

HERE = Path(__file__).resolve().parent
ASSETS = ROOT / "functions" / "api-docs" / "assets"
ST_CONFIG = HERE / "schemathesis.toml"
CHROMIUM = shutil.which("chromium") or shutil.which("google-chrome")
# The fuzzing budget per backend (the seed and max-examples in schemathesis.toml decide what
# is sent; this only stops a run that hangs).
FUZZ_TIMEOUT_S = float(os.environ.get("CONTRACT_FUZZ_TIMEOUT", 240))


def get(service: Service, path: str, token=None):
    return service.request("GET", path, token=token)


@pytest.fixture(scope="module")
def document(service):
    reply = get(service, "/api/openapi.json")
    assert reply.status == 200, reply
    return reply.json


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


def test_the_document_is_served_without_a_token_and_validates(service, document):
    reply = get(service, "/api/openapi.json")
    assert reply.headers["content-type"].startswith("application/json")
    assert document["openapi"] == "3.1.0"
    validate(document, cls=OpenAPIV31SpecValidator)
    router = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["metadata"]["lambda"][
        "watch"
    ]["router"]
    routed = {(path, r["method"].lower()) for path, routes in router.items() for r in routes}
    documented = {(path, method) for path, method, _ in operations(document)}
    assert documented == routed
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)), "operationIds are unique"


def test_refusals_are_the_documented_error_body_and_status(service, document):
    keys = document["components"]["schemas"]["ErrorKey"]["enum"]
    required = document["components"]["schemas"]["ErrorBody"]["required"]
    for method, path, route, body, token in [
        ("GET", "/api/rooms/nope_contract", "/api/rooms/{room_name}", None, "service"),
        ("POST", "/api/rooms", "/api/rooms", {"creator": ""}, "service"),
        ("GET", "/api/events/evt_000000000000000000000000", "/api/events/{id}", None, "service"),
        ("GET", "/api/rooms", "/api/rooms", None, None),
        ("GET", "/api/events", "/api/events", None, "user"),
    ]:
        reply = service.request(method, path, body, token=token)
        documented = document["paths"][route][method.lower()]["responses"]
        assert str(reply.status) in documented, (path, reply)
        assert set(required) <= set(reply.json), reply
        assert reply.json["error"] in keys and reply.json["code"] == reply.status, reply
        assert reply.json["error"] in documented[str(reply.status)]["description"], reply


def test_the_docs_page_and_its_renderer_are_served_by_the_service(service):
    page = get(service, "/api/docs")
    assert page.status == 200, page
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "https://" not in page.text and "http://" not in page.text, "no CDN"
    bundle = http_request(service.host, service.port, "GET", "/api/docs/redoc.standalone.js")
    assert bundle.status == 200
    assert bundle.headers["content-type"].startswith("text/javascript")
    served = hashlib.sha256(bundle.text.encode("utf-8")).hexdigest()
    pinned = re.search(r"sha256:? `?([0-9a-f]{64})", (ASSETS / "README.md").read_text())
    assert pinned, "assets/README.md records the bundle's sha256"
    assert served == pinned.group(1) == hashlib.sha256(
        (ASSETS / "redoc.standalone.js").read_bytes()
    ).hexdigest()


def test_the_docs_page_renders_every_operation_in_chromium(service, document, tmp_path):
    assert CHROMIUM, "chromium is not installed (scripts/test.sh installs Debian's package)"
    started = time.monotonic()
    run = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            # Nothing but the service answers: a page that needed a CDN would not render.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"{service.base_url}/api/docs",
        ],
        capture_output=True,
        timeout=120,
    )
    dom = run.stdout.decode("utf-8", "replace")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    rendered = set(re.findall(r'id="tag/[^"/]*/operation/([^"]+)"', dom))
    expected = {op["operationId"] for _, _, op in operations(document)}
    assert expected - rendered == set(), f"not rendered: {expected - rendered}"
    for _, _, op in operations(document):
        assert op["summary"] in dom, op["summary"]
    print(f"[contract:{service.backend}] Chromium rendered {len(rendered)} operations "
          f"in {time.monotonic() - started:.1f}s")


# Each case: a room_name, and whether the input rules take it. The document's pattern and
# length limits must agree with the service's answer on every one.
NAME_CASES = [
    "user_001", "张三", "会议室🎉", "...", ".", "..", "a b", "a/b", "a\u0001b", "a\u0085b",
    "a\u3000b", "a\tb", "x" * 34, "x" * 41, "", "x'OR'1'='1'--", "%2F",
]


def test_the_documented_name_rule_decides_as_the_service_does(service, document, names, clean_after):
    schema = document["components"]["schemas"]["CreateRoom"]["properties"]["room_name"]
    pattern = re.compile(schema["pattern"])
    for i, case in enumerate(NAME_CASES):
        # Names the rule takes get a unique tail that keeps them valid, so reruns never collide.
        name = case
        if pattern.search(case) and len(case) <= 34:
            name = f"{case}{names('')[-6:]}"
        by_document = (
            schema["minLength"] <= len(name) <= schema["maxLength"]
            and pattern.search(name) is not None
        )
        reply = service.request("POST", "/api/rooms", {
            "creator": names(f"nm{i}"), "room_name": name,
        })
        assert reply.status in (200, 400), reply
        assert (reply.status == 200) == by_document, f"{name!r}: {reply}"
        if reply.status == 200:
            service.request("POST", f"/api/rooms/{quote(name, safe='')}/end")


def count_requests(ndjson: Path) -> collections.Counter:
    """Requests schemathesis sent, per method and path template, from its NDJSON report
    (undocumented methods included: it checks that those are refused without a 5xx)."""
    sent: collections.Counter = collections.Counter()
    for line in ndjson.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if not event:
            continue
        recorder = event["recorder"]
        for case_id, case in recorder.get("cases", {}).items():
            if case_id in recorder.get("interactions", {}):
                sent[f'{case["value"]["method"]} {case["value"]["path"]}'] += 1
    return sent


@pytest.fixture(scope="module")
def fuzz_job(service, receivers):
    """A job of the fuzzer's own on the same backend (its random rooms never meet the other
    suites' names), with a database of its own."""
    tmp = Path(tempfile.mkdtemp(prefix=f"call-contract-{service.backend}-"))
    started = time.monotonic()
    proc, port, log_path, db = start_job(
        service.backend, tmp, "[]", database="call_contract", redis_url="redis://127.0.0.1:6379/3"
    )
    try:
        wait_healthy(proc, port, log_path, started)
        api_key, api_secret = local_livekit_pair()
        yield Service(
            backend=service.backend, host="127.0.0.1", port=port, log_path=log_path, db=db,
            auth_secret=local_constant("LOCAL_AUTH_JWT_SECRET"),
            livekit_api_key=api_key, livekit_api_secret=api_secret,
        )
    finally:
        stop_tree(proc)
        proc.log_file.close()  # type: ignore[attr-defined]
        shutil.rmtree(tmp, ignore_errors=True)


def test_schemathesis_finds_no_contract_failure(fuzz_job, tmp_path):
    st = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "st"
    if not st.exists():
        st = Path(shutil.which("st") or "st")
    report_dir = tmp_path / "report"
    env = dict(os.environ, API_TOKEN=fuzz_job.service_token)
    started = time.monotonic()
    env.update(SCHEMATHESIS_HOOKS="contract_hooks",
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])))
    run = subprocess.run(
        [
            str(st), "--config-file", str(ST_CONFIG), "run",
            f"{fuzz_job.base_url}/api/openapi.json",
            "--report", "ndjson,junit", "--report-dir", str(report_dir), "--no-color",
        ],
        cwd=tmp_path, env=env, capture_output=True, timeout=FUZZ_TIMEOUT_S,
    )
    elapsed = time.monotonic() - started
    output = run.stdout.decode("utf-8", "replace") + run.stderr.decode("utf-8", "replace")
    ndjson = next(report_dir.glob("*.ndjson"), None)
    sent = count_requests(ndjson) if ndjson else collections.Counter()
    document = json.loads(http_request("127.0.0.1", fuzz_job.port, "GET", "/api/openapi.json").text)
    every = {f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item}
    summary = "\n".join(f"  {op:60} {n}" for op, n in sorted(sent.items()) if op in every)
    undocumented = sum(n for op, n in sent.items() if op not in every)
    print(f"\n[contract:{fuzz_job.backend}] schemathesis: {sum(sent.values())} requests in "
          f"{elapsed:.0f}s ({undocumented} with undocumented methods), per operation:\n{summary}")
    assert run.returncode == 0, (
        f"schemathesis found failures (exit {run.returncode}):\n{output[-12000:]}\n"
        f"--- job log ---\n{log_tail(fuzz_job.log_path, 40)}"
    )
    # Schemathesis leaves out the document it reads; the tests above request it.
    assert every - set(sent) == {"GET /api/openapi.json"}, f"never called: {every - set(sent)}"
    # The fuzzer's refusals and races left nothing open or locked (MariaDB: innodb_trx and a
    # write from another connection; SQLite: a write transaction from another connection).
    fuzz_job.db.assert_nothing_left_behind()
