"""The operator console (/console) in headless Chromium driven by Playwright, against the local
main job on each backend, and the two read routes it brings (one room's events with their
deliveries, the overview).

A call is placed with the API (ring, answer, hang up); the console, given a service token,
finds it by room, by uid, by channel and by its own link, and shows both participants, a
timeline with one lane per participant, the events in seq order and each one's deliveries,
exactly as the API has them. A live call is ended from the console (a participant removed and
an event redelivered on the way, each after a confirmation), and the API then shows it ended
with `ended_by_api`. Bad tokens get a clear message in the page's language. In every scenario
no script fails and no request leaves 127.0.0.1 (every other host is unresolvable), and
axe-core (vendored from npm, its sha256 checked) finds no serious or critical violation.
Screenshots (desktop 1280x800 and a 390-px phone) are written to target/e2e-artifacts.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from conftest import ROOT

HERE = Path(__file__).resolve().parent
AXE = HERE / "vendor" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS") or ROOT / "target" / "e2e-artifacts")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Playwright waits this long for the page (ms): the first request to a function starts its
# process under `cargo lambda watch`.
WAIT_MS = 20_000


def axe_source() -> str:
    """The vendored axe-core, after checking it is the npm package's file byte for byte."""
    pinned = re.search(r"sha256: `([0-9a-f]{64})`", (HERE / "vendor" / "README.md").read_text())
    assert pinned, "vendor/README.md records axe.min.js's sha256"
    data = AXE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == pinned.group(1), "axe.min.js is not the pinned file"
    return data.decode("utf-8")


class Tab:
    """A console tab, recording every script error, console error and request it makes."""

    def __init__(self, browser, service, *, locale="en-US", viewport=DESKTOP, axe=False, **kw):
        self.service = service
        self.context = browser.new_context(locale=locale, viewport=viewport, **kw)
        if axe:
            # An init script runs in the page's own world without being an inline script, so
            # the page keeps its Content-Security-Policy.
            self.context.add_init_script(script=axe_source())
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.refused: list[str] = []
        self.foreign: list[str] = []
        self.page.on("pageerror", lambda err: self.errors.append(f"pageerror: {err}"))
        self.page.on("console", self._console)
        self.page.on("request", self._request)
        self.page.on("requestfailed", lambda r: self._request(r, failed=True))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        # Chromium logs every 4xx answer to fetch as "Failed to load resource": a refusal the
        # page handled, not a script error.
        if message.text.startswith("Failed to load resource"):
            self.refused.append(message.text)
        else:
            self.errors.append(message.text)

    def _request(self, request, failed: bool = False) -> None:
        url = urlsplit(request.url)
        if url.scheme in ("data", "blob", "about"):
            return
        if (url.hostname, url.port) != (self.service.host, self.service.port):
            self.foreign.append(request.url)
        elif failed:
            self.errors.append(f"request failed: {request.url} {request.failure}")

    def open(self, path: str = "/console") -> None:
        self.page.goto(f"{self.service.base_url}{path}")

    def sign_in(self, token: str) -> None:
        self.page.fill("#token", token)
        self.page.press("#token", "Enter")

    def find(self, kind: str, value: str) -> None:
        self.page.select_option("#find-kind", kind)
        self.page.fill("#find-value", value)
        self.page.press("#find-value", "Enter")

    def title(self) -> str:
        return self.page.inner_text("#view-title")

    def wait_for_title(self, title: str) -> None:
        """Until the view with this heading is drawn (the one before may still be showing)."""
        self.page.wait_for_function(
            "t => document.getElementById('view-title')?.textContent === t", arg=title)

    def axe(self, label: str) -> None:
        """No serious or critical accessibility violation on the page as it is now."""
        found = self.page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))""")
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        assert not bad, f"axe-core on {label}: {bad}"

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}-{self.service.backend}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self, *, refusals_expected: bool = False) -> None:
        try:
            assert not self.errors, f"script errors: {self.errors}"
            assert not self.foreign, f"requests to other hosts: {self.foreign}"
            if not refusals_expected:
                assert not self.refused, f"refused requests: {self.refused}"
        finally:
            self.context.close()


def place_call(service, room: str, creator: str, callee: str, channel: str) -> None:
    """A one-to-one call through the API: it rings, is answered, and the callee hangs up."""
    service.request("POST", "/api/rooms", {
        "room_name": room, "creator": creator, "uids": [callee], "invite_on": 1,
        "source_channel_id": channel, "source_channel_type": 1}).data
    time.sleep(1.0)  # it rings a moment, and they talk a moment: the timeline has a shape
    service.request("POST", "/api/participants/join", {"room_name": room, "uid": callee},
                    as_uid=callee).data
    time.sleep(2.0)
    service.request("POST", "/api/participants/leave", {"room_name": room, "uid": callee},
                    as_uid=callee).data


def settled_events(service, room: str, timeout_s: float = 20.0) -> list[dict]:
    """The room's events once every delivery has finished (none pending)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = service.request("GET", f"/api/rooms/{quote(room, safe='')}/events").data["events"]
        pending = [d for e in events for d in e["deliveries"] if d["state"] == "pending"]
        if events and not pending or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def shows_the_story(tab: Tab, room: str, uids: set[str], events: list[dict]) -> None:
    """The call's page as the API has it: both participants, one timeline lane each, the events
    in seq order with their types, and each event's deliveries per endpoint with their state.
    Every difference is named in one failure."""
    page = tab.page
    page.wait_for_function(
        """room => document.getElementById('view-title')?.textContent === room
                  && document.querySelector('#view svg.timeline')""", arg=room)
    problems = []
    if tab.title() != room:
        problems.append(f"heading {tab.title()!r}")
    rows = page.eval_on_selector_all("table.people tbody tr", "rs => rs.map(r => r.dataset.uid)")
    if sorted(rows) != sorted(uids):
        problems.append(f"participants {rows}")
    lanes = page.eval_on_selector_all("svg.timeline g.lane", "gs => gs.map(g => g.dataset.uid)")
    if sorted(lanes) != sorted(uids):
        problems.append(f"timeline lanes {lanes}, not one per participant")
    for uid in set(lanes) & uids:
        if page.locator(f'svg.timeline g.lane[data-uid="{uid}"] rect.seg.joined').count() < 1:
            problems.append(f"{uid}'s lane shows no time joined")
    for mark in ("started", "ended"):
        if page.locator(f"svg.timeline .room-mark.{mark}").count() != 1:
            problems.append(f"the room's {mark} mark")
    shown = page.eval_on_selector_all(
        "ol.events > li.event",
        """items => items.map(li => ({
            seq: Number(li.dataset.seq), type: li.dataset.type,
            deliveries: [...li.querySelectorAll('table.deliveries tbody tr')].map(tr => ({
                endpoint: tr.dataset.endpoint,
                state: tr.querySelector('.badge').textContent,
                attempts: Number(tr.children[1].textContent)}))}))""")
    expected = [{
        "seq": e["event"]["seq"], "type": e["event"]["type"],
        "deliveries": [{"endpoint": d["endpoint"], "state": d["state"], "attempts": d["attempts"]}
                       for d in e["deliveries"]],
    } for e in events]
    assert [e["seq"] for e in expected] == list(range(1, len(expected) + 1))
    assert all(e["deliveries"] for e in expected), "every event was owed to both receivers"
    if [(e["seq"], e["type"]) for e in shown] != [(e["seq"], e["type"]) for e in expected]:
        problems.append(f"events {[(e['seq'], e['type']) for e in shown]}")
    for got, want in zip(shown, expected):
        if got["deliveries"] != want["deliveries"]:
            problems.append(f"deliveries of #{want['seq']}: {got['deliveries']}")
    assert not problems, f"the page of {room} differs from the API: {problems}"


def test_a_call_is_found_by_room_by_uid_by_channel_and_by_its_link(service, browser, names,
                                                                    clean_after):
    room, a, b, channel = names("con"), names("ca"), names("cb"), names("chan")
    place_call(service, room, a, b, channel)
    events = settled_events(service, room)
    assert [e["event"]["type"] for e in events][-1] == "room.ended"

    token = service.service_token
    tab = Tab(browser, service, axe=True)
    try:
        tab.open()
        tab.axe("the sign-in form")
        tab.sign_in(token)
        tab.page.wait_for_selector("table.live, #view p")
        assert tab.title() == "Live calls"
        assert tab.page.evaluate("sessionStorage.getItem('call-console-token')") == token
        assert token not in tab.page.url and not tab.context.cookies()

        tab.find("rooms", room)
        shows_the_story(tab, room, {a, b}, events)
        tab.axe("a call's page")
        tab.screenshot("console-call-desktop", full_page=False)  # what 1280x800 shows
        tab.screenshot("console-call-desktop-full")

        tab.find("users", b)
        tab.wait_for_title(f"Calls of {b}")
        tab.page.click(f'#view tbody a[href="#/rooms/{quote(room, safe="")}"]')
        shows_the_story(tab, room, {a, b}, events)

        tab.find("channels", channel)
        tab.wait_for_title(f"Calls of channel {channel}")
        assert tab.page.locator(f'#view tbody a[href="#/rooms/{quote(room, safe="")}"]').count() == 1

        # The call's own link, in this tab (the token is in its sessionStorage)...
        link = f"/console#/rooms/{quote(room, safe='')}"
        tab.page.goto("about:blank")  # a full load of the page, not a change of its fragment
        started = time.monotonic()
        tab.open(link)
        shows_the_story(tab, room, {a, b}, events)
        to_call_page = time.monotonic() - started

        tab.page.goto(f"{service.base_url}/console#/overview")
        tab.page.wait_for_selector("#view section")
        tab.axe("the overview")
        tab.page.set_viewport_size(PHONE)
        tab.open(link)
        tab.page.wait_for_selector("svg.timeline g.lane")
        tab.axe("a call's page on a phone")
        tab.screenshot("console-call-phone")
    finally:
        tab.close()

    # ...and in a new tab, as from a support ticket: the token first, then the call.
    fresh = Tab(browser, service)
    try:
        fresh.open(link)
        fresh.page.wait_for_selector("#token")
        first_load = fresh.page.evaluate(
            """() => [...performance.getEntriesByType('navigation'),
                      ...performance.getEntriesByType('resource')]
                .reduce((n, e) => n + e.transferSize, 0)""")
        fresh.sign_in(service.service_token)
        shows_the_story(fresh, room, {a, b}, events)
    finally:
        fresh.close()
    print(f"\n[console:{service.backend}] first load {first_load} bytes transferred; "
          f"a call's page from its link in {to_call_page:.2f}s")


def test_an_operator_ends_a_live_call_from_the_console(service, browser, names, clean_after):
    room, a, b, c = names("live"), names("la"), names("lb"), names("lc")
    service.request("POST", "/api/rooms", {
        "room_name": room, "creator": a, "uids": [b, c], "max_participants": 3}).data
    service.request("POST", "/api/participants/join", {"room_name": room, "uid": b}).data
    service.request("POST", "/api/participants/join", {"room_name": room, "uid": c}).data

    tab = Tab(browser, service)
    try:
        tab.open()
        tab.sign_in(service.service_token)
        row = tab.page.locator(f'table.live tr[data-room="{room}"]')
        row.wait_for()
        chips = row.locator(".chips li").all_inner_texts()
        assert sorted(x.split()[0] for x in chips) == sorted([a, b, c]), chips
        # The totals are the list endpoint's exact counts.
        running = service.request("GET", "/api/rooms?status=1&limit=1").data["total"]
        shown = int(tab.page.inner_text('[data-total="r1"] .n'))
        assert shown == running or shown == service.request(
            "GET", "/api/rooms?status=1&limit=1").data["total"]
        # The list refreshes by itself: a call placed now shows up without a reload.
        other, d = names("next"), names("ld")
        service.request("POST", "/api/rooms", {"room_name": other, "creator": d}).data
        tab.page.locator(f'table.live tr[data-room="{other}"]').wait_for(timeout=15_000)

        # By keyboard: focus the call's link and press Enter.
        tab.page.focus(f'table.live tr[data-room="{room}"] a')
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_selector("#end-call")
        assert tab.title() == room

        # Declining the confirmation does nothing.
        tab.page.once("dialog", lambda dialog: dialog.dismiss())
        tab.page.click("#end-call")
        time.sleep(0.5)
        assert service.request("GET", f"/api/rooms/{room}").data["status"] == 1

        tab.page.once("dialog", lambda dialog: dialog.accept())
        tab.page.click(f'button[aria-label="Remove {c}"]')
        tab.page.wait_for_function(
            "uid => document.querySelector(`table.people tr[data-uid='${uid}'] .badge.s3`)", arg=c)
        rows = {p["uid"]: p for p in service.request("GET", f"/api/rooms/{room}/participants").data}
        assert (rows[c]["status"], rows[c]["reason"]) == (3, "removed")

        first = service.request("GET", f"/api/rooms/{room}/events").data["events"][0]
        tab.page.once("dialog", lambda dialog: dialog.accept())
        tab.page.click('ol.events > li.event[data-seq="1"] button')
        tab.page.wait_for_function(
            "() => document.getElementById('announce').textContent.includes('Event redelivered')")
        again = service.request("GET", f"/api/events/{first['event']['id']}").data
        assert len(again["attempts"]) > len(first["attempts"])

        tab.page.once("dialog", lambda dialog: dialog.accept())
        tab.page.click("#end-call")
        # Drawn again once the end has answered: the timeline back, the button gone.
        tab.page.wait_for_function(
            """() => document.querySelector('#view svg.timeline')
                     && !document.getElementById('end-call')""")
        ended = service.request("GET", f"/api/rooms/{room}").data
        assert (ended["status"], ended["end_reason"]) == (2, "ended_by_api")
        assert tab.page.locator("svg.timeline g.lane").count() == 3
    finally:
        tab.close()
        service.request("POST", f"/api/rooms/{other}/end")


@pytest.mark.parametrize("locale, kind, message", [
    ("en-US", "garbage", "The token is not valid or has expired: paste a new service token."),
    ("en-US", "expired", "The token has expired: paste a new service token."),
    ("en-US", "user", "This is a user token; the console needs a service token (role: service)."),
    ("zh-CN", "user", "这是用户令牌；控制台需要服务令牌（role: service）。"),
    ("zh-CN", "expired", "令牌已过期，请粘贴新的服务令牌。"),
])
def test_a_bad_token_gets_a_clear_message(service, browser, locale, kind, message):
    token = {
        "garbage": "not-a-token",
        "expired": service.token(None, ttl_s=-60),
        "user": service.token("console_user"),
    }[kind]
    tab = Tab(browser, service, locale=locale)
    try:
        tab.open()
        heading = "Call console" if locale.startswith("en") else "通话控制台"
        assert tab.page.inner_text("h1") == heading
        tab.sign_in(token)
        problem = tab.page.locator("#token-error")
        problem.wait_for(state="visible")
        assert problem.inner_text() == message
        assert tab.page.locator("#app").is_hidden()
        assert tab.page.evaluate("sessionStorage.getItem('call-console-token')") is None
    finally:
        tab.close(refusals_expected=True)


def test_the_timeline_and_formats_are_plain_functions(service, browser):
    """timeline.js on its own (what the page draws with), called in the browser."""
    tab = Tab(browser, service)
    try:
        tab.open()
        got = tab.page.evaluate("""async () => {
            const m = await import('./console/timeline.js');
            const room = {creator: 'a', created_at: '2026-01-01T10:00:00Z',
                          started_at: '2026-01-01T10:00:05Z', ended_at: '2026-01-01T10:01:05Z'};
            const rows = [{uid: 'a', status: 3}, {uid: 'b', status: 3}];
            const ev = (seq, type, uid, status, at) => ({event: {seq, type,
                occurred_at: `2026-01-01T10:${at}Z`, data: {uid, status}}});
            const events = [ev(2, 'participant.joined', 'a', 1, '00:00.000'),
                            ev(3, 'participant.invited', 'b', 0, '00:00.000'),
                            ev(4, 'participant.joined', 'b', 1, '00:05.000'),
                            ev(6, 'participant.left', 'b', 3, '01:05.000'),
                            ev(7, 'participant.left', 'a', 3, '01:05.000')];
            const model = m.buildTimeline({room, participants: rows, events, now: 0});
            const svg = m.timelineSvg(model, {title: 't', ringing: 'r', joined: 'j',
                created: 'c', started: 's', ended: 'e', hung_up: 'h'}, 600);
            return {
                durations: [0, 5, 65, 3725].map(m.duration),
                lanes: model.lanes.map(l => [l.uid, l.segments.map(s => [s.kind, (s.to - s.from) / 1000]),
                                              l.marks.map(x => x.kind)]),
                marks: model.roomMarks.map(x => x.kind),
                svgLanes: (svg.match(/class="lane"/g) || []).length,
                escaped: m.escape('<b>&'),
                live: m.mergeLive([{room_name: 'x', created_at: '2026-01-01T10:00:00Z', id: 1}],
                                  [{room_name: 'y', created_at: '2026-01-01T10:00:09Z', id: 2}])
                        .map(r => r.room_name),
                deadline: m.nextRingDeadline([{status: 0, ring_deadline: '2026-01-01T10:00:30Z'},
                                              {status: 0, ring_deadline: '2026-01-01T10:00:20Z'},
                                              {status: 1, ring_deadline: null}]),
            };
        }""")
        assert got["durations"] == ["0:00", "0:05", "1:05", "1:02:05"]
        assert got["lanes"] == [
            ["a", [["joined", 65]], ["hung_up"]],
            ["b", [["ringing", 5], ["joined", 60]], ["hung_up"]],
        ]
        assert got["marks"] == ["created", "started", "ended"]
        assert got["svgLanes"] == 2
        assert got["escaped"] == "&lt;b&gt;&amp;"
        assert got["live"] == ["y", "x"]
        assert got["deadline"] == 1767261620000
    finally:
        tab.close()


def test_the_console_is_served_by_the_service_under_a_strict_policy(service):
    page = service.request("GET", "/console", token=None)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                      "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in policy, policy
    assert "unsafe" not in policy and "http" not in policy
    # Every Vary header (the local router adds its own CORS one beside the page's).
    conn = http.client.HTTPConnection(service.host, service.port, timeout=60)
    try:
        conn.request("GET", "/console")
        answer = conn.getresponse()
        answer.read()
        vary = ",".join(v for k, v in answer.getheaders() if k.lower() == "vary")
    finally:
        conn.close()
    assert "accept-language" in vary.lower(), vary
    assert '<html lang="zh-CN">' in page.text
    english = service.request("GET", "/console", token=None,
                              headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in english.text
    for path, kind in (("/console/app.js", "text/javascript"),
                       ("/console/timeline.js", "text/javascript"),
                       ("/console/console.css", "text/css")):
        asset = service.request("GET", path, token=None)
        assert asset.status == 200 and asset.headers["content-type"].startswith(kind), path
        served = (ROOT / "functions" / "console" / "assets" / path.rsplit("/", 1)[1]).read_text()
        assert asset.text == served
    for text in (page.text, *(service.request("GET", p, token=None).text
                              for p in ("/console/app.js", "/console/console.css"))):
        assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//", text), "nothing from elsewhere"


def test_a_rooms_events_come_in_seq_order_with_their_deliveries(service, receivers, names,
                                                                 clean_after):
    room, a, b = names("rev"), names("ra"), names("rb")
    place_call(service, room, a, b, "")
    events = settled_events(service, room)
    types = [e["event"]["type"] for e in events]
    assert types == ["room.created", "participant.joined", "participant.invited",
                     "participant.joined", "room.started", "participant.left",
                     "participant.left", "room.ended"]
    for e in events:
        assert [d["url"] for d in e["deliveries"]] == [receivers.main.url, receivers.flaky.url]
        assert all(d["state"] == "delivered" and d["attempts"] >= 1 for d in e["deliveries"])
        assert all(x["outcome"] in ("delivered", "failed", "gave_up") for x in e["attempts"])
        single = service.request("GET", f"/api/events/{e['event']['id']}").data
        assert single["deliveries"] == e["deliveries"] and single["attempts"] == e["attempts"]

    for path, token, status, key in [
        ("/api/rooms/nope_console_events/events", "service", 404, "room_not_found"),
        (f"/api/rooms/{room}/events", "user", 403, "forbidden"),
        (f"/api/rooms/{room}/events", None, 401, "unauthorized"),
        ("/api/rooms/a%20b/events", "service", 400, "invalid_parameters"),
    ]:
        reply = service.request("GET", path, token=token)
        assert (reply.status, reply.key) == (status, key), (path, reply)


def test_the_overview_counts_ended_calls_and_the_backlog_per_endpoint(service, receivers, names,
                                                                      clean_after):
    def overview():
        return service.request("GET", "/api/overview").data

    def ended(data, reason):
        return next((e["count"] for e in data["ended"] if e["end_reason"] == reason), 0)

    before = overview()
    assert before["window_minutes"] == 60
    assert [d["url"] for d in before["deliveries"]][:2] == [receivers.main.url, receivers.flaky.url]
    room, a, b = names("ovw"), names("oa"), names("ob")
    down = {"on": True}
    receivers.flaky.rule(room, lambda event: (503, 0.0) if down["on"] else None)
    try:
        place_call(service, room, a, b, "")
        deadline = time.monotonic() + 15
        while True:
            during = overview()
            flaky = next(d for d in during["deliveries"] if d["url"] == receivers.flaky.url)
            if flaky["failing_rooms"] >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert ended(during, "completed") >= ended(before, "completed") + 1, during
        assert flaky["pending"] >= 1 and flaky["failing_rooms"] >= 1, flaky
        assert flaky["failing_since"], flaky
    finally:
        down["on"] = False
    settled_events(service, room, timeout_s=30)

    for query, key in [("window_minutes=0", "invalid_parameters"),
                       ("window_minutes=1441", "invalid_parameters"),
                       ("window_minutes=x", "invalid_parameters")]:
        reply = service.request("GET", f"/api/overview?{query}")
        assert (reply.status, reply.key) == (400, key), (query, reply)
    assert service.request("GET", "/api/overview", token="user").status == 403
    assert service.request("GET", "/api/overview?window_minutes=5").data["window_minutes"] == 5
