// The replay page: the recording's media, its timeline drawn under it, the quality summary and the events.
// Every request carries the signed link's exp and sig, read from this page's own URL; nothing else
// authorizes it, and no token is ever in the page. Times are media seconds (the player's currentTime).
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
    const name = e.kind === "signal" && e.data && e.data.name ? `signal ${e.data.name}` : e.kind.replace(/_/g, " ");
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
    for (let t = 0; t <= state.duration + 1e-6; t += step) {
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

  function niceStep(d) {
    for (const s of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) if (d / s <= 10) return s;
    return 7200;
  }

  // ---- the side panel --------------------------------------------------------------------------

  function drawSummary() {
    const dl = $("#summary");
    dl.replaceChildren();
    const rec = state.recording || {};
    const q = rec.quality || {};
    const v = q.video || {};
    const a = q.audio || {};
    const sum = (state.timeline && state.timeline.summary) || q.timeline || {};
    const rows = [
      ["Status", rec.status],
      ["Stop reason", rec.stop_reason || "–"],
      ["Duration", seconds(q.duration ?? state.duration)],
      ["Distinct fps", v.delivered_fps != null ? v.delivered_fps.toFixed(2) : "–", v.nominal_fps && v.delivered_fps < v.nominal_fps * 0.9],
      ["Nominal fps", v.nominal_fps != null ? v.nominal_fps.toFixed(2) : "–"],
      ["A/V offset", q.sync && q.sync.mean_ms != null ? `${q.sync.mean_ms.toFixed(0)} ms` : "no markers", q.sync && Math.abs(q.sync.mean_ms) > 80],
      ["Frozen", v.frozen_total != null ? seconds(v.frozen_total) : "–", v.frozen_total > 0],
      ["Black", v.black_total != null ? seconds(v.black_total) : "–", v.black_total > 0],
      ["Silent", a.silent_total != null ? seconds(a.silent_total) : "–"],
      ["Problems", sum.problems ?? "–", sum.problems > 0],
      ["Page errors", sum.errors ?? "–", sum.errors > 0],
      ["Warnings", sum.warnings ?? "–"],
      ["Worst inbound loss", sum.worst_inbound_loss != null ? `${(sum.worst_inbound_loss * 100).toFixed(1)} %` : "no WebRTC", sum.worst_inbound_loss > 0.05],
    ];
    for (const [track, secs] of Object.entries(sum.freeze_seconds || {})) {
      rows.push([`Frozen, track ${track}`, seconds(secs), secs > 0]);
    }
    if (rec.error) rows.push(["Error", `${rec.error.code}: ${rec.error.message}`, true]);
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
    const dropped = Object.values(tl.dropped || {}).reduce((a, b) => a + b, 0);
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
    if (q.video && q.video.nominal_fps) state.fps = q.video.nominal_fps;
    state.duration = q.duration || rec.duration || 0;
    if (rec.has_timeline) {
      try {
        state.timeline = await getJSON("/timeline");
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
          if (Number.isFinite(media.duration) && Math.abs(media.duration - state.duration) > 0.01) {
            state.duration = media.duration;
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
