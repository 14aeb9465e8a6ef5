// The operator console: live calls, one call's story, a uid's or a channel's calls and an
// overview, read from this service's API with a service token the operator pastes. The token
// lives in sessionStorage only (never a URL or a cookie). Routes are the URL's fragment:
// #/ (live calls), #/rooms/<room_name>, #/users/<uid>, #/channels/<id>, #/overview.
import {
  JOINED, RINGING, ROOM_STATUS_NAMES, STATUS_NAMES, bars, buildTimeline, clock, dateTime,
  duration, lastAttempts, mergeLive, ms, nextRingDeadline, timelineSvg,
} from "./timeline.js";

const LANG = document.documentElement.lang.startsWith("en") ? "en" : "zh";
const TOKEN_KEY = "call-console-token";
const REFRESH_MS = 5000;
const LIVE_PAGE = 25;
const API = new URL("api/", new URL(".", location.href));

const TEXT = {
  zh: {
    title: "通话控制台", skip: "跳到正文", live: "进行中的通话", overview: "概况", signOut: "退出",
    tokenLabel: "服务令牌", tokenHint: "粘贴服务令牌（role: service）。它只保存在本标签页的 sessionStorage 中。",
    signIn: "进入", checking: "正在验证…",
    badToken: "令牌无效或已过期，请粘贴新的服务令牌。", expired: "令牌已过期，请粘贴新的服务令牌。",
    userToken: "这是用户令牌；控制台需要服务令牌（role: service）。",
    findLabel: "查找", findKind: "按", byRoom: "房间名", byUid: "用户 uid", byChannel: "频道 ID", find: "查找",
    ringing: "响铃中", running: "通话中", ended: "已结束", cancelled: "已取消",
    totals: "各状态总数", updated: "更新于", autoRefresh: "每 5 秒自动刷新",
    room: "房间", status: "状态", caller: "主叫", participants: "参与者", age: "已响铃/已通话", ringLeft: "响铃剩余",
    noLive: "当前没有进行中的通话。", more: "另有 {n} 个未显示",
    endReason: "结束原因", limits: "限制", ringTimeout: "响铃超时", maxDuration: "最长时长", soloTimeout: "单人超时",
    created: "创建", started: "开始", endedAt: "结束", durationLabel: "时长", channel: "频道", callType: "类型",
    voice: "语音", video: "视频", none: "无",
    uid: "uid", reason: "原因", ringSeconds: "响铃秒数", talkSeconds: "通话秒数", actions: "操作",
    timeline: "时间线", timelineTitle: "每位参与者一条泳道：响铃、加入与离开", joined: "已加入",
    events: "事件", seq: "序号", type: "类型", time: "时间", data: "数据", deliveries: "投递",
    endpoint: "端点", last: "最近一次", attempts: "尝试次数", outcome: "结果", httpStatus: "HTTP 状态", latency: "延迟",
    state: "状态", noEvents: "没有事件（未配置投递，或已过保留期）。", noDeliveries: "无投递",
    endCall: "结束通话", confirmEnd: "确定结束通话 {room}？", remove: "移出", confirmRemove: "确定把 {uid} 移出 {room}？",
    redeliver: "重新投递", confirmRedeliver: "确定重新投递事件 {id}？", done: "已完成：{msg}",
    history: "{uid} 的通话", channelCalls: "频道 {id} 的通话", direction: "方向", outgoing: "呼出", incoming: "呼入",
    others: "其他人", noCalls: "没有通话。", notFound: "没有找到房间 {room}。", loading: "加载中…",
    endedLastHour: "最近一小时结束的通话（按结束原因）", pendingByEndpoint: "待投递与失败的事件（按端点）",
    pending: "待投递", failingRooms: "失败中的房间", failingSince: "失败开始于", failuresInARow: "连续失败",
    noEndpoints: "未配置事件端点。", noEnded: "最近一小时没有结束的通话。", count: "数量",
    error: "出错了：{msg}", refresh: "刷新", copyLink: "本通话的链接",
    not_started: "未开始", in_progress: "进行中",
    s0: "响铃中", s1: "已加入", s2: "已拒绝", s3: "已挂断", s4: "未接听", s5: "忙线", s6: "已取消",
    rejected: "已拒绝", hung_up: "已挂断", missed: "未接听", busy: "忙线",
  },
  en: {
    title: "Call console", skip: "Skip to content", live: "Live calls", overview: "Overview", signOut: "Sign out",
    tokenLabel: "Service token", tokenHint: "Paste a service token (role: service). It is kept in this tab's sessionStorage only.",
    signIn: "Open", checking: "Checking…",
    badToken: "The token is not valid or has expired: paste a new service token.", expired: "The token has expired: paste a new service token.",
    userToken: "This is a user token; the console needs a service token (role: service).",
    findLabel: "Find", findKind: "By", byRoom: "Room name", byUid: "User uid", byChannel: "Channel ID", find: "Find",
    ringing: "Ringing", running: "Running", ended: "Ended", cancelled: "Cancelled",
    totals: "Totals per status", updated: "Updated", autoRefresh: "refreshes every 5 s",
    room: "Room", status: "Status", caller: "Caller", participants: "Participants", age: "Rung / run for", ringLeft: "Ring time left",
    noLive: "No call is ringing or running.", more: "{n} more not shown",
    endReason: "End reason", limits: "Limits", ringTimeout: "Ring timeout", maxDuration: "Longest", soloTimeout: "Alone for",
    created: "Created", started: "Started", endedAt: "Ended", durationLabel: "Duration", channel: "Channel", callType: "Type",
    voice: "voice", video: "video", none: "none",
    uid: "uid", reason: "Reason", ringSeconds: "Ring s", talkSeconds: "Talk s", actions: "Actions",
    timeline: "Timeline", timelineTitle: "One lane per participant: ringing, joined and left", joined: "joined",
    events: "Events", seq: "Seq", type: "Type", time: "Time", data: "Data", deliveries: "Deliveries",
    endpoint: "Endpoint", last: "last", attempts: "Attempts", outcome: "Outcome", httpStatus: "HTTP status", latency: "Latency",
    state: "State", noEvents: "No events (no delivery configured, or past retention).", noDeliveries: "no deliveries",
    endCall: "End call", confirmEnd: "End the call {room}?", remove: "Remove", confirmRemove: "Remove {uid} from {room}?",
    redeliver: "Redeliver", confirmRedeliver: "Redeliver event {id}?", done: "Done: {msg}",
    history: "Calls of {uid}", channelCalls: "Calls of channel {id}", direction: "Direction", outgoing: "outgoing", incoming: "incoming",
    others: "Others", noCalls: "No calls.", notFound: "No room named {room}.", loading: "Loading…",
    endedLastHour: "Calls ended in the last hour, by end reason", pendingByEndpoint: "Events pending or failing, by endpoint",
    pending: "Pending", failingRooms: "Failing rooms", failingSince: "Failing since", failuresInARow: "Failures in a row",
    noEndpoints: "No event endpoint is configured.", noEnded: "No call ended in the last hour.", count: "Count",
    error: "Something went wrong: {msg}", refresh: "Refresh", copyLink: "Link to this call",
    not_started: "not started", in_progress: "in progress",
    s0: "ringing", s1: "joined", s2: "rejected", s3: "hung up", s4: "missed", s5: "busy", s6: "cancelled",
    rejected: "rejected", hung_up: "hung up", missed: "missed", busy: "busy",
  },
}[LANG];

function t(key, vars = {}) {
  return (TEXT[key] ?? key).replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** An element with attributes (on* are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiFailure extends Error {
  constructor(status, key, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.key = key;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY);
let refreshTimer = null;

async function api(path, method = "GET") {
  const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
  const response = await fetch(new URL(path, API), { method, headers, cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok || !body || body.code !== 0) {
    const failure = new ApiFailure(response.status, body?.error, body?.msg);
    if (response.status === 401 || (response.status === 403 && !isServiceToken(token))) {
      signOut(tokenProblem(token, failure));
    }
    throw failure;
  }
  return { data: body.data, msg: body.msg };
}

const enc = encodeURIComponent;

/** The token's claims as the browser can read them (the server decides; this only picks the
 * clearer message). */
function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

function isServiceToken(jwt) {
  return claims(jwt)?.role === "service";
}

function tokenProblem(jwt, failure) {
  const c = claims(jwt);
  if (c && typeof c.exp === "number" && c.exp * 1000 <= Date.now()) return t("expired");
  if (failure?.status === 403 || (c && c.role !== "service" && failure?.status !== 401)) return t("userToken");
  return t("badToken");
}

// -- shell --------------------------------------------------------------------------------

const view = () => document.getElementById("view");

function setText() {
  document.title = t("title");
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  for (const el of document.querySelectorAll("[data-t-placeholder]")) {
    el.setAttribute("placeholder", t(el.dataset.tPlaceholder));
  }
}

function announce(message) {
  document.getElementById("announce").textContent = message;
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopRefresh();
  document.getElementById("login").hidden = false;
  document.getElementById("app").hidden = true;
  const problem = document.getElementById("token-error");
  problem.textContent = message || "";
  problem.hidden = !message;
  document.getElementById("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  const problem = document.getElementById("token-error");
  const candidate = input.value.trim();
  if (!candidate) return;
  problem.hidden = true;
  token = candidate;
  announce(t("checking"));
  try {
    // Service tokens only may read the overview: a user token is told so here.
    await api("overview");
  } catch (failure) {
    const message = failure instanceof ApiFailure ? tokenProblem(candidate, failure) : t("error", { msg: failure.message });
    signOut(message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  input.value = "";
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  announce("");
  route();
}

function stopRefresh() {
  if (refreshTimer) clearTimeout(refreshTimer);
  refreshTimer = null;
}

function find(event) {
  event.preventDefault();
  const kind = document.getElementById("find-kind").value;
  const value = document.getElementById("find-value").value.trim();
  if (!value) return;
  location.hash = `#/${kind}/${enc(value)}`;
}

/** Shows a view: its heading gets the focus, so keyboard and screen-reader users land there. */
function show(title, ...content) {
  const heading = h("h2", { id: "view-title", tabindex: "-1" }, title);
  view().replaceChildren(heading, ...content);
  return heading;
}

function focusView() {
  document.getElementById("view-title")?.focus({ preventScroll: false });
}

async function route() {
  stopRefresh();
  if (!token) {
    signOut();
    return;
  }
  const [, kind, arg] = (location.hash.replace(/^#\/?/, "").match(/^([^/]*)\/?(.*)$/) || []);
  const value = arg ? decodeURIComponent(arg) : "";
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.getAttribute("href") === `#/${kind || ""}`;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (kind === "rooms" && value) await roomView(value, true);
    else if (kind === "users" && value) await userView(value);
    else if (kind === "channels" && value) await channelView(value);
    else if (kind === "overview") await overviewView();
    else await liveView(true);
  } catch (failure) {
    if (!token) return;
    show(t("error", { msg: failure.message }));
  }
}

// -- pieces -------------------------------------------------------------------------------

function roomLink(name) {
  return h("a", { href: `#/rooms/${enc(name)}` }, name);
}

function statusBadge(status) {
  return h("span", { class: `badge s${status}` }, t(`s${status}`));
}

function roomStatus(status) {
  const name = ROOM_STATUS_NAMES[status] || String(status);
  const label = { not_started: t("ringing"), in_progress: t("running"), ended: t("ended"), cancelled: t("cancelled") }[name];
  return h("span", { class: `badge r${status}` }, label || name);
}

function table(caption, headers, rows, className = "") {
  // A table wider than a phone scrolls sideways: its region takes the focus, so the keyboard
  // can scroll it too.
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption },
    h("table", { class: className },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((head) => h("th", { scope: "col" }, head)))),
      h("tbody", {}, rows)));
}

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}

/** A live duration: kept current by tick() every second. */
function since(at) {
  return h("span", { "data-since": String(at) }, duration((Date.now() - at) / 1000));
}

function until(at) {
  return h("span", { "data-until": String(at) }, duration((at - Date.now()) / 1000));
}

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-since]")) el.textContent = duration((now - Number(el.dataset.since)) / 1000);
  for (const el of document.querySelectorAll("[data-until]")) el.textContent = duration((Number(el.dataset.until) - now) / 1000);
}

async function confirmAndDo(question, path, after) {
  if (!window.confirm(question)) return;
  try {
    const { msg } = await api(path, "POST");
    announce(t("done", { msg }));
  } catch (failure) {
    announce(t("error", { msg: failure.message }));
  }
  await after();
}

// -- live calls ---------------------------------------------------------------------------

async function liveView(first) {
  const [ringing, running, ended, cancelled] = await Promise.all([0, 1, 2, 3].map((status) =>
    api(`rooms?status=${status}&limit=${status < 2 ? LIVE_PAGE : 1}`)));
  const rooms = mergeLive(ringing.data.rooms, running.data.rooms).slice(0, LIVE_PAGE);
  const rows = await Promise.all(rooms.map(async (room) => {
    const participants = (await api(`rooms/${enc(room.room_name)}/participants`).catch(() => ({ data: [] }))).data;
    return { room, participants };
  }));
  const totals = h("ul", { class: "totals", "aria-label": t("totals") },
    [[t("ringing"), ringing.data.total, "r0"], [t("running"), running.data.total, "r1"],
      [t("ended"), ended.data.total, "r2"], [t("cancelled"), cancelled.data.total, "r3"]]
      .map(([label, n, cls]) => h("li", { class: cls, "data-total": cls }, h("span", { class: "n" }, String(n)), " ", label)));
  const body = rows.map(({ room, participants }) => {
    const startedAt = ms(room.started_at);
    const deadline = nextRingDeadline(participants);
    return h("tr", { "data-room": room.room_name },
      h("th", { scope: "row" }, roomLink(room.room_name)),
      h("td", {}, roomStatus(room.status)),
      h("td", {}, room.creator),
      h("td", {}, h("ul", { class: "chips" }, participants.map((p) => h("li", {}, `${p.uid} `, statusBadge(p.status))))),
      h("td", { class: "num" }, since(startedAt ?? ms(room.created_at))),
      h("td", { class: "num" }, deadline !== null ? until(deadline) : "–"));
  });
  const missing = ringing.data.total + running.data.total - rooms.length;
  const heading = show(t("live"),
    totals,
    h("p", { class: "meta" }, `${t("updated")} ${clock(Date.now(), LANG)} · ${t("autoRefresh")}`),
    rows.length
      ? table(t("live"), [t("room"), t("status"), t("caller"), t("participants"), t("age"), t("ringLeft")], body, "live")
      : h("p", {}, t("noLive")),
    missing > 0 ? h("p", { class: "meta" }, t("more", { n: missing })) : null);
  if (first) heading.focus();
  refreshTimer = later(() => location.hash.replace(/^#\/?/, "") === "", () => liveView(false));
}

/** The view's next refresh: skipped (and tried again later) while the keyboard focus is on
 * one of its controls, so a refresh never pulls a row out from under the operator. */
function later(stillHere, refresh, delay = REFRESH_MS) {
  return setTimeout(function again() {
    if (!stillHere()) return;
    const focused = document.activeElement;
    if (focused && focused.id !== "view-title" && view().contains(focused)) {
      refreshTimer = setTimeout(again, delay);
      return;
    }
    refresh().catch(() => {});
  }, delay);
}

// -- one call -----------------------------------------------------------------------------

async function roomView(name, first) {
  if (first) show(t("loading"));
  let room;
  try {
    room = (await api(`rooms/${enc(name)}`)).data;
  } catch (failure) {
    if (failure.status === 404) {
      show(t("notFound", { room: name }));
      focusView();
      return;
    }
    throw failure;
  }
  const [participants, events] = await Promise.all([
    api(`rooms/${enc(name)}/participants`).then((r) => r.data),
    api(`rooms/${enc(name)}/events`).then((r) => r.data.events),
  ]);
  // After an action the page is drawn again and the focus goes back to its heading.
  const reload = () => roomView(name, true);
  const open = room.status === 0 || room.status === 1;
  const facts = dl([
    [t("status"), roomStatus(room.status)],
    [t("endReason"), room.end_reason ?? "–"],
    [t("caller"), room.creator],
    [t("callType"), room.call_type === 0 ? t("voice") : t("video")],
    [t("channel"), room.source_channel_id ? `${room.source_channel_type}:${room.source_channel_id}` : "–"],
    [t("limits"), `${t("ringTimeout")} ${room.ring_timeout_seconds}s · ${t("maxDuration")} ${room.max_duration_seconds || t("none")}${room.max_duration_seconds ? "s" : ""} · ${t("soloTimeout")} ${room.solo_timeout_seconds || t("none")}${room.solo_timeout_seconds ? "s" : ""}`],
    [t("created"), dateTime(ms(room.created_at), LANG)],
    [t("started"), room.started_at ? dateTime(ms(room.started_at), LANG) : "–"],
    [t("endedAt"), room.ended_at ? dateTime(ms(room.ended_at), LANG) : "–"],
    [t("durationLabel"), room.ended_at ? duration(room.duration_seconds) : room.started_at ? since(ms(room.started_at)) : "–"],
  ]);
  const actions = h("p", { class: "actions" },
    h("a", { href: `#/rooms/${enc(name)}`, class: "permalink" }, t("copyLink")),
    open ? h("button", {
      type: "button", class: "danger", id: "end-call",
      onclick: () => confirmAndDo(t("confirmEnd", { room: name }), `rooms/${enc(name)}/end`, reload),
    }, t("endCall")) : null);
  const people = table(t("participants"),
    [t("uid"), t("status"), t("reason"), t("ringSeconds"), t("talkSeconds"), t("actions")],
    participants.map((p) => h("tr", { "data-uid": p.uid },
      h("th", { scope: "row" }, h("a", { href: `#/users/${enc(p.uid)}` }, p.uid)),
      h("td", {}, statusBadge(p.status)),
      h("td", {}, p.reason ?? "–"),
      h("td", { class: "num" }, String(p.ring_seconds)),
      h("td", { class: "num" }, String(p.talk_seconds)),
      h("td", {}, open && (p.status === RINGING || p.status === JOINED) && p.uid !== room.creator
        ? h("button", {
          type: "button", "aria-label": `${t("remove")} ${p.uid}`,
          onclick: () => confirmAndDo(t("confirmRemove", { uid: p.uid, room: name }),
            `rooms/${enc(name)}/participants/${enc(p.uid)}/remove`, reload),
        }, t("remove"))
        : "–"))), "people");
  const model = buildTimeline({ room, participants, events, now: Date.now() });
  const width = Math.max(320, Math.min(960, view().clientWidth || 880));
  const picture = h("figure", { class: "timeline-figure" });
  picture.innerHTML = timelineSvg(model, {
    title: t("timelineTitle"), ringing: t("ringing"), joined: t("joined"), created: t("created"),
    started: t("started"), ended: t("endedAt"), rejected: t("rejected"), hung_up: t("hung_up"),
    missed: t("missed"), busy: t("busy"), cancelled: t("cancelled"),
  }, width);
  const legend = h("ul", { class: "legend" },
    h("li", { class: "ringing" }, t("ringing")), h("li", { class: "joined" }, t("joined")),
    h("li", { class: "left" }, `${t("hung_up")} / ${t("missed")} / ${t("rejected")}`));
  const eventList = events.length
    ? h("ol", { class: "events" }, events.map(eventItem(reload)))
    : h("p", {}, t("noEvents"));
  show(name,
    facts, actions,
    h("h3", {}, t("participants")), people,
    h("h3", {}, t("timeline")), picture, legend,
    h("h3", {}, t("events")), eventList);
  if (first) focusView();
  if (open) refreshTimer = later(() => location.hash === `#/rooms/${enc(name)}`, () => roomView(name, false));
}

function eventItem(reload) {
  return ({ event, deliveries, attempts }) => {
    const last = lastAttempts(attempts);
    const deliveryRows = deliveries.map((d) => {
      const a = last.get(d.endpoint);
      return h("tr", { class: "delivery", "data-endpoint": d.endpoint },
        h("th", { scope: "row" }, h("span", { title: d.url }, d.endpoint)),
        h("td", { class: "num" }, String(d.attempts)),
        h("td", {}, h("span", { class: `badge d-${d.state}` }, d.state), a && a.outcome !== d.state ? ` (${t("last")}: ${a.outcome})` : ""),
        h("td", { class: "num" }, a?.http_status ? String(a.http_status) : "–"),
        h("td", { class: "num" }, a ? `${a.latency_ms} ms` : "–"));
    });
    return h("li", { class: "event", "data-seq": String(event.seq), "data-type": event.type },
      h("div", { class: "event-head" },
        h("span", { class: "seq" }, `#${event.seq}`), " ",
        h("strong", {}, event.type), " ",
        h("time", { datetime: event.occurred_at }, dateTime(ms(event.occurred_at), LANG)), " ",
        h("button", {
          type: "button", class: "small", "aria-label": `${t("redeliver")} #${event.seq} ${event.type}`,
          onclick: () => confirmAndDo(t("confirmRedeliver", { id: event.id }), `events/${enc(event.id)}/redeliver`, reload),
        }, t("redeliver"))),
      h("details", {}, h("summary", {}, t("data")), h("pre", {}, JSON.stringify(event.data, null, 2))),
      deliveryRows.length
        ? table(`${t("deliveries")} #${event.seq}`, [t("endpoint"), t("attempts"), t("outcome"), t("httpStatus"), t("latency")], deliveryRows, "deliveries")
        : h("p", { class: "meta" }, t("noDeliveries")));
  };
}

// -- a uid's calls, a channel's calls -------------------------------------------------------

async function userView(uid) {
  const { data } = await api(`users/${enc(uid)}/calls?limit=50`);
  const rows = data.calls.map((c) => h("tr", {},
    h("th", { scope: "row" }, roomLink(c.room_name)),
    h("td", {}, t(c.direction)),
    h("td", {}, roomStatus(c.status)),
    h("td", {}, c.end_reason ?? "–"),
    h("td", {}, c.others.join(", ")),
    h("td", {}, dateTime(ms(c.created_at), LANG)),
    h("td", { class: "num" }, duration(c.duration_seconds))));
  show(t("history", { uid }), rows.length
    ? table(t("history", { uid }), [t("room"), t("direction"), t("status"), t("endReason"), t("others"), t("created"), t("durationLabel")], rows)
    : h("p", {}, t("noCalls")));
  focusView();
}

async function channelView(id) {
  const { data } = await api(`rooms?source_channel_id=${enc(id)}&limit=50`);
  const rows = data.rooms.map((r) => h("tr", {},
    h("th", { scope: "row" }, roomLink(r.room_name)),
    h("td", {}, roomStatus(r.status)),
    h("td", {}, r.end_reason ?? "–"),
    h("td", {}, r.creator),
    h("td", {}, dateTime(ms(r.created_at), LANG)),
    h("td", { class: "num" }, duration(r.duration_seconds))));
  show(t("channelCalls", { id }), rows.length
    ? table(`${t("channelCalls", { id })} (${data.total})`, [t("room"), t("status"), t("endReason"), t("caller"), t("created"), t("durationLabel")], rows)
    : h("p", {}, t("noCalls")));
  focusView();
}

// -- overview -----------------------------------------------------------------------------

function barChart(items, label) {
  const width = 300;
  const rowHeight = 22;
  const scaled = bars(items, width - 150);
  const svg = [`<svg xmlns="http://www.w3.org/2000/svg" class="bars" role="img" aria-label="${label.replace(/"/g, "&quot;")}" viewBox="0 0 ${width} ${Math.max(1, scaled.length) * rowHeight}" width="100%">`];
  scaled.forEach((b, i) => {
    const y = i * rowHeight;
    svg.push(`<text x="0" y="${y + 15}">${b.label.replace(/[<&>]/g, "")}</text>`);
    svg.push(`<rect class="${b.className || "bar"}" x="110" y="${y + 4}" width="${Math.max(b.width, 1)}" height="14" rx="2"/>`);
    svg.push(`<text x="${116 + b.width}" y="${y + 15}">${b.value}</text>`);
  });
  svg.push("</svg>");
  const figure = h("figure", { class: "chart" });
  figure.innerHTML = svg.join("");
  return figure;
}

async function overviewView(first = true) {
  const { data } = await api("overview");
  const ended = data.ended.map((e) => ({ label: e.end_reason, value: e.count }));
  const endedTable = ended.length
    ? table(t("endedLastHour"), [t("endReason"), t("count")],
      data.ended.map((e) => h("tr", { "data-reason": e.end_reason }, h("th", { scope: "row" }, e.end_reason), h("td", { class: "num" }, String(e.count)))))
    : h("p", {}, t("noEnded"));
  const deliveries = data.deliveries.length
    ? table(t("pendingByEndpoint"), [t("endpoint"), t("pending"), t("failingRooms"), t("failingSince"), t("failuresInARow")],
      data.deliveries.map((d) => h("tr", { "data-endpoint": d.endpoint },
        h("th", { scope: "row" }, h("span", { title: d.url }, d.endpoint)),
        h("td", { class: "num" }, String(d.pending)),
        h("td", { class: "num" }, String(d.failing_rooms)),
        h("td", {}, d.failing_since ? dateTime(ms(d.failing_since), LANG) : "–"),
        h("td", { class: "num" }, String(d.failures_in_a_row)))))
    : h("p", {}, t("noEndpoints"));
  const pendingChart = data.deliveries.length
    ? barChart(data.deliveries.flatMap((d) => [
      { label: `${d.endpoint} ${t("pending")}`, value: d.pending, className: "bar pending" },
      { label: `${d.endpoint} ${t("failingRooms")}`, value: d.failing_rooms, className: "bar failing" },
    ]), t("pendingByEndpoint"))
    : null;
  show(t("overview"),
    h("section", { "aria-labelledby": "ended-title" }, h("h3", { id: "ended-title" }, t("endedLastHour")),
      ended.length ? barChart(ended, t("endedLastHour")) : null, endedTable),
    h("section", { "aria-labelledby": "pending-title" }, h("h3", { id: "pending-title" }, t("pendingByEndpoint")),
      pendingChart, deliveries));
  if (first) focusView();
  refreshTimer = later(() => location.hash === "#/overview", () => overviewView(false), REFRESH_MS * 2);
}

// -- start --------------------------------------------------------------------------------

setText();
document.getElementById("login-form").addEventListener("submit", signIn);
document.getElementById("find-form").addEventListener("submit", find);
document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
setInterval(tick, 1000);
if (token) {
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  route();
} else {
  signOut();
}
