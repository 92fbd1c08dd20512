// The replay page: the recording's media, its timeline drawn under it, the quality summary and the events.
// Every request carries the signed link's exp and sig, read from this page's own URL; nothing else
// authorizes it, and no token is ever in the page. Times are media seconds (the player's currentTime).
// timeline.json comes from a worker and is read as hostile: `cleanTimeline` keeps only events and spans of
// known kinds with finite times, turns every text into a short string, and bounds the duration, so a
// strange file draws less rather than throwing or freezing the tab.
"use strict";

(function () {
  const PROBLEM_SPANS = new Set(["frozen", "black", "silent", "gap", "network"]);
  const SPAN_TEXT = {
    frozen: "Frozen picture",
    black: "Black picture",
    silent: "Silence",
    gap: "Gap (no frames)",
    network: "Network trouble",
    paused: "Paused (cut out of the file)",
    waiting: "Waiting before the recording",
  };
  const MARKERS = new Set(["navigation", "reload", "signal"]);
  // An event kind is shown by its name (contract/timeline.py lists them): one that is not a short
  // lower-case name is left out.
  const EVENT_KIND = /^[a-z][a-z_]{0,39}$/;
  const LEVELS = new Set(["info", "warning", "error"]);
  const MAX_DURATION = 7 * 24 * 3600; // longer than any recording: a bigger figure is not believed
  const MAX_TICKS = 20;
  const MAX_TEXT = 300;
  const LEGEND = [
    ["frozen", "frozen"], ["black", "black"], ["silent", "silent"], ["gap", "gap"],
    ["network", "network trouble"], ["paused", "paused"], ["waiting", "waiting"],
    ["error", "error"], ["warning", "warning"], ["navigation", "navigation"], ["reload", "reload"],
    ["signal", "signal"],
  ];

  const params = new URLSearchParams(location.search);
  const signed = "?" + new URLSearchParams({ exp: params.get("exp") || "", sig: params.get("sig") || "" });
  const id = decodeURIComponent(location.pathname.split("/")[2] || "");
  const base = "/view/" + encodeURIComponent(id);
  const $ = (sel) => document.querySelector(sel);

  const state = { media: null, duration: 0, fps: 30, timeline: null, recording: null, problems: [], items: [] };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function clock(t) {
    if (!Number.isFinite(t)) return "–";
    const sign = t < 0 ? "-" : "";
    t = Math.abs(t);
    const m = Math.floor(t / 60);
    const s = (t - m * 60).toFixed(1).padStart(4, "0");
    return `${sign}${m}:${s}`;
  }

  function seconds(s) {
    if (!Number.isFinite(s)) return "–";
    return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }

  function say(text, isError) {
    const m = $("#message");
    m.textContent = text;
    m.classList.toggle("error", Boolean(isError));
  }

  async function getJSON(path) {
    const answer = await fetch(base + path + signed, { credentials: "omit", cache: "no-store" });
    if (!answer.ok) {
      let why = answer.statusText;
      try { why = (await answer.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error(why);
    }
    return answer.json();
  }

  // ---- reading what a worker wrote ----------------------------------------------------------------

  function finite(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  function text(v) {
    if (v === null || v === undefined) return "";
    return String(typeof v === "object" ? JSON.stringify(v) : v).slice(0, MAX_TEXT);
  }

  function duration(v) {
    return finite(v) && v > 0 ? Math.min(v, MAX_DURATION) : 0;
  }

  function cleanTimeline(raw) {
    const tl = raw && typeof raw === "object" ? raw : {};
    const list = (v) => (Array.isArray(v) ? v.filter((x) => x && typeof x === "object") : []);
    const events = [];
    for (const e of list(tl.events)) {
      if (!finite(e.t) || typeof e.kind !== "string" || !EVENT_KIND.test(e.kind)) continue;
      const name = e.data && typeof e.data === "object" && e.data.name != null ? text(e.data.name).slice(0, 60) : "";
      events.push({
        t: e.t, kind: e.kind, level: LEVELS.has(e.level) ? e.level : "info",
        message: text(e.message), track: e.track == null ? null : text(e.track).slice(0, 80), name,
      });
    }
    const spans = [];
    for (const s of list(tl.spans)) {
      if (!finite(s.start) || !finite(s.end) || !Object.hasOwn(SPAN_TEXT, s.kind)) continue;
      spans.push({
        start: s.start, end: s.end, kind: s.kind, message: text(s.message),
        track: s.track == null ? null : text(s.track).slice(0, 80),
        wall_seconds: finite(s.wall_seconds) && s.wall_seconds >= 0 ? s.wall_seconds : null,
      });
    }
    const tracks = [];
    for (const t of list(tl.tracks)) {
      tracks.push({
        id: text(t.id).slice(0, 80), kind: t.kind === "audio" || t.kind === "video" ? t.kind : "track",
        freeze_count: finite(t.freeze_count) ? t.freeze_count : 0, worst_loss: finite(t.worst_loss) ? t.worst_loss : 0,
      });
    }
    // Only events over their cap ("source.kind"): refused reports, tracks and spans beyond theirs are not events.
    let dropped = 0;
    for (const [key, n] of Object.entries(tl.dropped && typeof tl.dropped === "object" ? tl.dropped : {})) {
      const [source, kind, more] = key.split(".");
      const event = more === undefined && EVENT_KIND.test(kind || "") && kind !== "report" && kind !== "track";
      if (event && source && kind && finite(n) && n > 0) dropped += Math.min(n, 1e9);
    }
    const summary = tl.summary && typeof tl.summary === "object" ? tl.summary : null;
    return { duration: duration(tl.duration), events, spans, tracks, dropped, summary };
  }

  // ---- the strip -------------------------------------------------------------------------------

  function xOf(t) {
    const d = state.duration || 1;
    return Math.min(100, Math.max(0, (t / d) * 100));
  }

  function seek(t) {
    if (!state.media) return;
    state.media.currentTime = Math.max(0, Math.min(t, state.duration || t));
    update();
  }

  const tooltip = el("div", { class: "tooltip", role: "tooltip", hidden: "" });

  function explain(node, text) {
    node.setAttribute("aria-label", text);
    const show = () => {
      tooltip.textContent = text;
      tooltip.hidden = false;
      const r = node.getBoundingClientRect();
      tooltip.style.left = Math.min(window.innerWidth - 370, Math.max(4, r.left)) + "px";
      tooltip.style.top = (r.bottom + 6) + "px";
    };
    const hide = () => { tooltip.hidden = true; };
    node.addEventListener("mouseenter", show);
    node.addEventListener("focus", show);
    node.addEventListener("mouseleave", hide);
    node.addEventListener("blur", hide);
  }

  function lane(label) {
    const track = el("div", { class: "lane-track" });
    track.addEventListener("click", (e) => {
      if (e.target !== track) return;
      const r = track.getBoundingClientRect();
      seek(((e.clientX - r.left) / r.width) * state.duration);
    });
    const row = el("div", { class: "lane" }, el("span", { class: "lane-label", title: label, text: label }), track);
    return { row, track };
  }

  function spanText(s) {
    const what = SPAN_TEXT[s.kind] || s.kind;
    const track = s.track ? ` (track ${s.track})` : "";
    if (s.kind === "paused") {
      return `${what} at ${clock(s.start)}: ${seconds(s.wall_seconds || 0)} on the wall clock` + (s.message ? `\n${s.message}` : "");
    }
    if (s.kind === "waiting") {
      const wall = s.wall_seconds || Math.max(0, s.end - s.start);
      return `${what}: ${seconds(wall)} before the first frame` + (s.message ? `\n${s.message}` : "");
    }
    return `${what}${track}: ${clock(s.start)} – ${clock(s.end)} (${seconds(s.end - s.start)})` + (s.message ? `\n${s.message}` : "");
  }

  function eventClass(e) {
    if (e.level === "error" || e.kind === "crash") return "error";
    if (MARKERS.has(e.kind)) return e.kind;
    if (e.level === "warning") return "warning";
    return "info";
  }

  function eventText(e) {
    const name = e.kind === "signal" && e.name ? `signal ${e.name}` : e.kind.replace(/_/g, " ");
    const track = e.track ? ` (track ${e.track})` : "";
    return `${clock(e.t)} ${e.level !== "info" ? e.level + ": " : ""}${name}${track}\n${e.message}`;
  }

  function drawSpan(track, s) {
    const cut = s.kind === "paused" || s.end <= s.start || s.end <= 0;
    const start = Math.max(0, s.start);
    const node = el("button", {
      type: "button",
      class: cut ? `marker cut span-${s.kind} ${s.kind}` : `span ${s.kind}`,
      "data-kind": s.kind,
      "data-start": String(s.start),
      "data-end": String(s.end),
      onclick: () => seek(start),
    });
    if (cut) node.style.background = `var(--${s.kind})`;
    node.style.left = xOf(start) + "%";
    if (!cut) node.style.width = Math.max(0, xOf(Math.min(s.end, state.duration)) - xOf(start)) + "%";
    explain(node, spanText(s));
    track.append(node);
  }

  function drawStrip() {
    const strip = $("#strip");
    strip.replaceChildren();
    const tl = state.timeline || { spans: [], events: [] };
    const media = lane("Picture & sound");
    const control = lane("Paused, waiting");
    const events = lane("Events");
    const byTrack = new Map();
    for (const s of tl.spans || []) {
      if (s.kind === "network") {
        const key = s.track || "?";
        if (!byTrack.has(key)) byTrack.set(key, lane(trackLabel(key)));
        drawSpan(byTrack.get(key).track, s);
      } else if (s.kind === "paused" || s.kind === "waiting") {
        drawSpan(control.track, s);
      } else {
        drawSpan(media.track, s);
      }
    }
    for (const t of tl.tracks || []) {
      if (!byTrack.has(t.id) && (t.freeze_count || t.worst_loss > 0.05)) byTrack.set(t.id, lane(trackLabel(t.id)));
    }
    for (const e of tl.events || []) {
      const kind = eventClass(e);
      if (kind === "info") continue;
      const node = el("button", {
        type: "button", class: `marker ${kind}`, "data-kind": e.kind, "data-start": String(e.t),
        onclick: () => seek(Math.max(0, e.t)),
      });
      node.style.left = xOf(Math.max(0, e.t)) + "%";
      explain(node, eventText(e));
      events.track.append(node);
    }
    const axis = el("div", { class: "axis", "aria-hidden": "true" });
    const step = niceStep(state.duration);
    for (let i = 0, t = 0; i <= MAX_TICKS && t <= state.duration + 1e-6; i += 1, t = i * step) {
      const tick = el("span", { class: "tick", text: clock(t).replace(/\.0$/, "") });
      tick.style.left = xOf(t) + "%";
      axis.append(tick);
    }
    strip.append(media.row, control.row, ...[...byTrack.values()].map((l) => l.row), events.row, axis);
    for (const l of [media, control, events, ...byTrack.values()]) {
      l.track.append(el("div", { class: "playhead" }));
    }
  }

  function trackLabel(trackId) {
    const t = ((state.timeline && state.timeline.tracks) || []).find((x) => x.id === trackId);
    return `${t ? t.kind : "track"} ${trackId}`.slice(0, 40);
  }

  // About ten ticks, never more than MAX_TICKS, whatever the duration.
  function niceStep(d) {
    for (const s of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) if (d / s <= 10) return s;
    return Math.max(7200, Math.ceil(d / MAX_TICKS / 3600) * 3600);
  }

  // ---- the side panel --------------------------------------------------------------------------

  function drawSummary() {
    const dl = $("#summary");
    dl.replaceChildren();
    const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : {});
    const num = (v) => (finite(v) ? v : null);
    const fixed = (v, digits, unit) => (num(v) === null ? "–" : `${v.toFixed(digits)}${unit || ""}`);
    const share = (v) => (num(v) === null ? null : `${(v * 100).toFixed(1)} %`);
    const rec = obj(state.recording);
    const q = obj(rec.quality);
    const v = obj(q.video);
    const a = obj(q.audio);
    const sync = obj(q.sync);
    const sum = obj((state.timeline && state.timeline.summary) || q.timeline);
    const count = (x) => (num(x) === null ? "–" : String(x));
    const rows = [
      ["Status", text(rec.status)],
      ["Stop reason", text(rec.stop_reason) || "–"],
      ["Duration", seconds(num(q.duration) ?? state.duration)],
      ["Distinct fps", fixed(v.delivered_fps, 2), num(v.nominal_fps) && v.delivered_fps < v.nominal_fps * 0.9],
      ["Nominal fps", fixed(v.nominal_fps, 2)],
      ["A/V offset", num(sync.mean_ms) === null ? "no markers" : fixed(sync.mean_ms, 0, " ms"), Math.abs(sync.mean_ms) > 80],
      ["Frozen", seconds(num(v.frozen_total)), v.frozen_total > 0],
      ["Black", seconds(num(v.black_total)), v.black_total > 0],
      ["Silent", seconds(num(a.silent_total))],
      ["Problems", count(sum.problems), sum.problems > 0],
      ["Page errors", count(sum.errors), sum.errors > 0],
      ["Warnings", count(sum.warnings)],
      ["Inbound loss", share(sum.inbound_loss) ?? "–", sum.inbound_loss > 0.05],
      ["Worst inbound loss (1 s)", share(sum.worst_inbound_loss) ?? "no WebRTC", sum.worst_inbound_loss > 0.05],
    ];
    if (num(sum.inbound_loss) === null) rows.splice(rows.length - 2, 1); // reported by newer workers only
    for (const [track, secs] of Object.entries(obj(sum.freeze_seconds)).slice(0, 32)) {
      rows.push([`Frozen, track ${text(track).slice(0, 40)}`, seconds(num(secs)), secs > 0]);
    }
    if (rec.error) rows.push(["Error", `${text(obj(rec.error).code)}: ${text(obj(rec.error).message)}`, true]);
    for (const [name, value, bad] of rows) {
      dl.append(el("dt", { text: name }), el("dd", { class: bad ? "bad" : "", text: String(value ?? "–") }));
    }
  }

  function drawEvents() {
    const list = $("#events");
    list.replaceChildren();
    const tl = state.timeline || { spans: [], events: [] };
    const items = [];
    for (const e of tl.events || []) items.push({ t: e.t, cls: eventClass(e), text: eventText(e).replace("\n", " — ") });
    for (const s of tl.spans || []) items.push({ t: s.start, cls: s.kind, text: `${clock(s.start)} ${spanText(s).replace("\n", " — ")}` });
    items.sort((a, b) => a.t - b.t);
    state.items = [];
    for (const item of items) {
      const dot = el("i", { class: "dot" });
      dot.style.background = `var(--${item.cls})`;
      const text = item.text.replace(/^\S+ /, "");
      const li = el("li", {}, el("button", { type: "button", onclick: () => seek(Math.max(0, item.t)) },
        el("span", { class: "at", text: clock(item.t) }), dot, el("span", { class: "what", text })));
      list.append(li);
      state.items.push({ t: item.t, li });
    }
    const dropped = tl.dropped || 0;
    $("#event-count").textContent = `(${items.length}${dropped ? `, ${dropped} more not kept` : ""})`;
  }

  // ---- problems, playhead, keys ----------------------------------------------------------------

  function collectProblems() {
    const tl = state.timeline || { spans: [], events: [] };
    const starts = [];
    for (const s of tl.spans || []) if (PROBLEM_SPANS.has(s.kind)) starts.push(Math.max(0, s.start));
    for (const e of tl.events || []) if (e.level === "error") starts.push(Math.max(0, e.t));
    state.problems = [...new Set(starts.map((t) => Math.round(t * 1000) / 1000))].sort((a, b) => a - b);
  }

  function jump(direction) {
    const now = state.media ? state.media.currentTime : 0;
    const list = state.problems;
    const target = direction > 0 ? list.find((t) => t > now + 0.05) : [...list].reverse().find((t) => t < now - 0.25);
    if (target === undefined) say(direction > 0 ? "No problem after this point." : "No problem before this point.");
    else { say(""); seek(target); }
  }

  function update() {
    const m = state.media;
    if (!m) return;
    const t = m.currentTime;
    for (const head of document.querySelectorAll(".playhead")) head.style.left = xOf(t) + "%";
    $("#clock").textContent = `${clock(t)} / ${clock(state.duration)}`;
    $("#play").textContent = m.paused ? "Play" : "Pause";
    let current = null;
    for (const item of state.items) if (item.t <= t + 0.05) current = item;
    for (const item of state.items) item.li.classList.toggle("current", item === current);
  }

  function toggle() {
    const m = state.media;
    if (!m) return;
    if (m.paused) m.play().catch((e) => say(`Cannot play: ${e.message}`, true));
    else m.pause();
  }

  function onKey(e) {
    if (e.target.closest && e.target.closest("input, select, textarea")) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const m = state.media;
    if (e.key === " " || e.code === "Space") { e.preventDefault(); toggle(); }
    else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault();
      const sign = e.key === "ArrowRight" ? 1 : -1;
      const step = e.shiftKey ? (state.recording && state.recording.audio_only ? 1 : 1 / state.fps) : 5;
      if (m) { if (e.shiftKey && !m.paused) m.pause(); seek(m.currentTime + sign * step); }
    } else if (e.key === "n" || e.key === "N") { e.preventDefault(); jump(1); }
    else if (e.key === "p" || e.key === "P") { e.preventDefault(); jump(-1); }
  }

  function legend() {
    const ul = $("#legend");
    for (const [cls, text] of LEGEND) {
      const sw = el("i", {});
      sw.style.background = `var(--${cls})`;
      ul.append(el("li", {}, sw, text));
    }
  }

  function redraw() {
    drawStrip();
    drawEvents();
    drawSummary();
    update();
  }

  async function main() {
    document.body.append(tooltip);
    legend();
    document.addEventListener("keydown", onKey);
    $("#play").addEventListener("click", toggle);
    $("#next").addEventListener("click", () => jump(1));
    $("#prev").addEventListener("click", () => jump(-1));
    let rec;
    try {
      rec = await getJSON("/recording");
    } catch (e) {
      say(`Cannot open this recording: ${e.message}`, true);
      return;
    }
    state.recording = rec;
    document.title = `Replay ${rec.id}`;
    $("#title").textContent = `Recording ${rec.id}`;
    const badge = $("#status");
    badge.textContent = rec.status;
    badge.classList.add(rec.status);
    const q = rec.quality || {};
    if (q.video && finite(q.video.nominal_fps) && q.video.nominal_fps > 0) state.fps = q.video.nominal_fps;
    state.duration = duration(q.duration) || duration(rec.duration);
    if (rec.has_timeline) {
      try {
        state.timeline = cleanTimeline(await getJSON("/timeline"));
        if (state.timeline.duration) state.duration = state.timeline.duration;
      } catch (e) {
        say(`The timeline could not be read: ${e.message}`, true);
      }
    } else {
      say("This recording has no timeline: only the quality report is shown.");
    }
    collectProblems();
    if (rec.has_media) {
      const media = el(rec.audio_only ? "audio" : "video", { controls: "", preload: "metadata", src: base + "/media" + signed });
      media.addEventListener("loadedmetadata", () => {
        if (!state.timeline || !state.timeline.duration) {
          if (duration(media.duration) && Math.abs(media.duration - state.duration) > 0.01) {
            state.duration = duration(media.duration);
            redraw();
          }
        }
      });
      media.addEventListener("error", () => say("The media could not be loaded (expired link? ask for a new one).", true));
      for (const ev of ["timeupdate", "play", "pause", "seeked"]) media.addEventListener(ev, update);
      const tick = () => { if (!media.paused) update(); requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
      $("#media-box").append(media);
      state.media = media;
    } else {
      say(`Recording ${rec.id} is ${rec.status} and has no media.`);
    }
    redraw();
    document.body.dataset.ready = "true";
  }

  main();
})();
