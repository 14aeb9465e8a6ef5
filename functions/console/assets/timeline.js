// The console's plain functions: a call's timeline (one lane per participant) built from its
// room, its rows and its events, drawn as SVG, and the numbers and times the page shows.
// No DOM and no fetch here, so each function can be called on its own (the e2e suite does).

/** Participant statuses (README "Call lifecycle"). */
export const RINGING = 0;
export const JOINED = 1;
export const STATUS_NAMES = ["ringing", "joined", "rejected", "hung_up", "missed", "busy", "cancelled"];
export const ROOM_STATUS_NAMES = ["not_started", "in_progress", "ended", "cancelled"];

/** Milliseconds since the epoch of an RFC 3339 text, or null. */
export function ms(text) {
  if (text === null || text === undefined || text === "") return null;
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t;
}

/** Seconds as m:ss, or h:mm:ss from an hour on; negative counts as 0. */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** A time of day in the page's language, with seconds (local time zone). */
export function clock(at, lang) {
  if (at === null || at === undefined) return "";
  const date = new Date(at);
  return date.toLocaleTimeString(lang === "en" ? "en-GB" : "zh-CN", { hour12: false });
}

/** A date and time in the page's language (local time zone). */
export function dateTime(at, lang) {
  if (at === null || at === undefined) return "";
  const date = new Date(at);
  return date.toLocaleString(lang === "en" ? "en-GB" : "zh-CN", { hour12: false });
}

/** Every state change of each uid, in order: from its participant.* events, or (events
 * purged, or never written) from its row's times. The creator is joined from the start. */
export function stateChanges(room, participants, events) {
  const created = ms(room.created_at);
  const changes = new Map();
  const add = (uid, at, status) => {
    if (!changes.has(uid)) changes.set(uid, []);
    changes.get(uid).push({ at, status });
  };
  for (const item of events) {
    const event = item.event || item;
    if (!String(event.type || "").startsWith("participant.")) continue;
    const data = event.data || {};
    const at = ms(event.occurred_at);
    if (typeof data.uid !== "string" || at === null || typeof data.status !== "number") continue;
    add(data.uid, at, data.status);
  }
  const ordered = [];
  const seen = new Set();
  for (const uid of [room.creator, ...participants.map((p) => p.uid), ...changes.keys()]) {
    if (seen.has(uid)) continue;
    seen.add(uid);
    ordered.push(uid);
  }
  const rows = new Map(participants.map((p) => [p.uid, p]));
  return ordered
    .filter((uid) => rows.has(uid) || changes.has(uid))
    .map((uid) => {
      let list = changes.get(uid) || fromRow(rows.get(uid));
      list = list.slice().sort((a, b) => a.at - b.at);
      // The creator is joined from the start; no event says so.
      if (uid === room.creator && created !== null && list[0]?.status !== JOINED) {
        list.unshift({ at: created, status: JOINED });
      }
      return { uid, changes: list };
    });
}

function fromRow(row) {
  if (!row) return [];
  const list = [];
  const invited = ms(row.invited_at);
  if (invited !== null) list.push({ at: invited, status: RINGING });
  if (row.join_time > 0) list.push({ at: row.join_time, status: JOINED });
  if (row.status !== RINGING && row.status !== JOINED) {
    const at = row.leave_time > 0 ? row.leave_time : ms(row.updated_at);
    if (at !== null) list.push({ at, status: row.status });
  }
  return list;
}

/** The timeline of one call: its span, a lane per participant (ringing and joined
 * segments, and a mark where each left, declined, rang out...), and the room's own marks. */
export function buildTimeline({ room, participants, events, now }) {
  // The room's times are whole seconds; its own events carry the milliseconds.
  const at = (type, field) => {
    const found = events.map((item) => item.event || item).find((e) => e.type === type);
    return ms(found?.occurred_at) ?? ms(room[field]);
  };
  const start = at("room.created", "created_at") ?? now;
  const ended = room.ended_at ? at("room.ended", "ended_at") : null;
  const end = Math.max(ended ?? now, start + 1000);
  const lanes = stateChanges(room, participants, events).map(({ uid, changes }) => {
    const segments = [];
    const marks = [];
    changes.forEach((change, i) => {
      const next = changes[i + 1];
      if (change.status === RINGING || change.status === JOINED) {
        const to = next ? next.at : end;
        segments.push({
          kind: change.status === RINGING ? "ringing" : "joined",
          from: clamp(change.at, start, end),
          to: clamp(to, start, end),
        });
      } else {
        marks.push({ kind: STATUS_NAMES[change.status] || "ended", at: clamp(change.at, start, end) });
      }
    });
    return { uid, segments, marks };
  });
  const roomMarks = [{ kind: "created", at: start }];
  const started = room.started_at ? at("room.started", "started_at") : null;
  if (started !== null) roomMarks.push({ kind: "started", at: clamp(started, start, end) });
  if (ended !== null) roomMarks.push({ kind: "ended", at: clamp(ended, start, end) });
  return { start, end, lanes, roomMarks };
}

function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}

/** Escapes text for SVG/HTML markup. */
export function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

/** Tick positions for a span: a round step giving at most about six ticks. */
export function ticks(spanSeconds) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const step = steps.find((s) => spanSeconds / s <= 6) || 86400;
  const out = [];
  for (let t = 0; t <= spanSeconds; t += step) out.push(t);
  return out;
}

/** The timeline as an SVG document fragment. `text` names the kinds and the picture
 * ({title, ringing, joined, created, started, ended, [status names]}). */
export function timelineSvg(model, text, width = 880) {
  const labelWidth = Math.min(160, Math.max(72, Math.round(width * 0.2)));
  const laneHeight = 30;
  const top = 42;
  const right = 12;
  const height = top + model.lanes.length * laneHeight + 24;
  const span = Math.max(model.end - model.start, 1);
  const x = (at) => labelWidth + ((at - model.start) / span) * (width - labelWidth - right);
  const parts = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" ` +
    `viewBox="0 0 ${width} ${height}" width="100%" aria-labelledby="timeline-title timeline-desc">`);
  parts.push(`<title id="timeline-title">${escape(text.title)}</title>`);
  const summary = model.lanes.map((lane) => {
    const bits = lane.segments.map((s) => `${text[s.kind]} ${duration((s.to - s.from) / 1000)}`);
    lane.marks.forEach((m) => bits.push(text[m.kind] || m.kind));
    return `${lane.uid}: ${bits.join(", ")}`;
  }).join("; ");
  parts.push(`<desc id="timeline-desc">${escape(summary)}</desc>`);
  for (const t of ticks(span / 1000)) {
    const tx = x(model.start + t * 1000);
    parts.push(`<line class="tick" x1="${tx.toFixed(1)}" x2="${tx.toFixed(1)}" y1="${top - 6}" y2="${height - 20}"/>`);
    const anchor = tx > width - right - 20 ? "end" : "middle";
    parts.push(`<text class="tick-label" x="${tx.toFixed(1)}" y="${height - 6}" text-anchor="${anchor}">+${duration(t)}</text>`);
  }
  model.lanes.forEach((lane, i) => {
    const y = top + i * laneHeight;
    parts.push(`<g class="lane" data-uid="${escape(lane.uid)}">`);
    parts.push(`<text class="lane-label" x="4" y="${y + laneHeight / 2 + 4}">${escape(truncate(lane.uid, labelWidth))}</text>`);
    parts.push(`<line class="lane-line" x1="${labelWidth}" x2="${width - right}" y1="${y + laneHeight / 2}" y2="${y + laneHeight / 2}"/>`);
    for (const s of lane.segments) {
      const x1 = x(s.from);
      const w = Math.max(x(s.to) - x1, 2);
      parts.push(`<rect class="seg ${s.kind}" x="${x1.toFixed(1)}" y="${y + 7}" width="${w.toFixed(1)}" height="${laneHeight - 14}" rx="3">` +
        `<title>${escape(`${lane.uid} ${text[s.kind]} ${duration((s.to - s.from) / 1000)}`)}</title></rect>`);
    }
    for (const m of lane.marks) {
      const mx = x(m.at);
      parts.push(`<path class="mark ${escape(m.kind)}" d="M${mx.toFixed(1)} ${y + 5} l5 ${laneHeight / 2 - 5} l-5 ${laneHeight / 2 - 5} l-5 ${-(laneHeight / 2 - 5)} z">` +
        `<title>${escape(`${lane.uid} ${text[m.kind] || m.kind}`)}</title></path>`);
    }
    parts.push(`</g>`);
  });
  // Marks close together (a call answered at once) put their labels on rows of their own.
  const rowsEnd = [];
  for (const m of model.roomMarks) {
    const mx = x(m.at);
    const anchor = m.kind === "ended" && mx > width / 2 ? "end" : "start";
    const labelWidth = 8 * String(text[m.kind]).length + 8;
    const [left, right] = anchor === "end" ? [mx - labelWidth, mx] : [mx, mx + labelWidth];
    let row = rowsEnd.findIndex((end) => end < left);
    if (row < 0) row = Math.min(rowsEnd.length, 2);
    rowsEnd[row] = Math.max(rowsEnd[row] ?? 0, right);
    parts.push(`<g class="room-mark ${m.kind}"><line x1="${mx.toFixed(1)}" x2="${mx.toFixed(1)}" y1="${top - 8 - row * 13}" y2="${height - 20}"/>` +
      `<text x="${(anchor === "end" ? mx - 3 : mx + 3).toFixed(1)}" y="${top - 10 - row * 13}" text-anchor="${anchor}">${escape(text[m.kind])}</text></g>`);
  }
  parts.push(`</svg>`);
  return parts.join("");
}

function truncate(text, px) {
  const max = Math.max(6, Math.floor(px / 8));
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The latest attempt per endpoint, for one event's deliveries. */
export function lastAttempts(attempts) {
  const last = new Map();
  for (const a of attempts || []) last.set(a.endpoint, a);
  return last;
}

/** The live calls of the two status pages, newest first, each once. */
export function mergeLive(ringing, running) {
  const seen = new Set();
  return [...ringing, ...running]
    .filter((room) => (seen.has(room.room_name) ? false : seen.add(room.room_name)))
    .sort((a, b) => (ms(b.created_at) ?? 0) - (ms(a.created_at) ?? 0) || b.id - a.id);
}

/** The earliest ring deadline of a call's ringing rows, or null. */
export function nextRingDeadline(participants) {
  const deadlines = participants
    .filter((p) => p.status === RINGING)
    .map((p) => ms(p.ring_deadline))
    .filter((t) => t !== null);
  return deadlines.length ? Math.min(...deadlines) : null;
}

/** Bars for a small chart: [{label, value, width}] with widths relative to the largest. */
export function bars(items, maxWidth) {
  const top = Math.max(1, ...items.map((i) => i.value));
  return items.map((i) => ({ ...i, width: Math.round((i.value / top) * maxWidth) }));
}
