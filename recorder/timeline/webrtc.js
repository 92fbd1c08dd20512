// Inbound WebRTC stats for the recording's timeline (recorder/timeline/webrtc.py installs this).
//
// Runs in every frame before any of the page's scripts. RTCPeerConnection becomes a Proxy of itself
// whose only trap is `construct`: the page gets the very object the native constructor makes, with the
// same prototype chain, `instanceof`, statics (generateCertificate), name, length and errors (calling it
// without `new` throws natively: there is no `apply` trap). Nothing else of the page is touched; the
// connections are held weakly. Pages that never make a connection pay for this definition only: the
// poll timer starts with the first connection and stops when none is left.
//
// Once every POLL_MS the timer asks each live connection for getStats() and hands the inbound-rtp
// figures to the recorder through BINDING, a binding whose name is random per browser context. Nothing
// here may throw into the page: every step is guarded, and the builtins used here (timers, getStats,
// Promise's then, WeakRef's deref, the stats report's forEach, Reflect) are the ones taken when this
// ran, before the page's scripts. This is not a secret channel: the binding's name is random but
// Playwright's binding machinery lives in the page's world, and the binding itself serialises with the
// page's globals, so a page can find it, forge reports through it or stop them. Reports describe only
// the page that sent them and the recorder validates and caps them: the WebRTC figures are advisory.
(() => {
  "use strict";
  const Native = window.RTCPeerConnection;
  if (typeof Native !== "function") return;
  const bindingName = "BINDING";
  const pollMs = POLL_MS;
  const maxConnections = 64;
  const maxInbound = 64;
  const stuckPolls = 10; // a round that has not answered after this many polls is given up
  // The originals, kept before the page can replace them.
  const apply = Reflect.apply;
  const construct = Reflect.construct;
  const getStats = Native.prototype.getStats;
  const signalingState = Object.getOwnPropertyDescriptor(Native.prototype, "signalingState").get;
  const setIntervalOf = window.setInterval.bind(window);
  const clearIntervalOf = window.clearInterval.bind(window);
  const WeakRefOf = window.WeakRef;
  const deref = WeakRefOf.prototype.deref;
  const then = Promise.prototype.then;
  const finite = Number.isFinite;
  const StringOf = String;
  const slice = String.prototype.slice;
  const forEachStat = typeof window.RTCStatsReport === "function" ? window.RTCStatsReport.prototype.forEach : null;
  const noop = () => {};
  let binding = null;
  let nextId = 1;
  let timer = null;
  let polling = false;
  let pollsWaited = 0;
  let live = []; // {id, ref: WeakRef<RTCPeerConnection>, tracks: string[]}; no Set: its iteration is the page's
  try {
    // Kept here and taken off the window (which hides it from a casual look, nothing more: see above).
    if (typeof window[bindingName] === "function") {
      binding = window[bindingName];
      delete window[bindingName];
    }
  } catch (e) {}

  function send(payload) {
    try {
      if (binding === null) {
        binding = window[bindingName];
        if (typeof binding !== "function") {
          binding = null;
          return;
        }
      }
      // The promise settles when the recorder has read it; nothing waits on it.
      apply(then, binding(payload), [undefined, noop]);
    } catch (e) {
      // the binding is gone (the page is closing, or the page removed it): nothing to report to
    }
  }

  function number(value) {
    return typeof value === "number" && finite(value) ? value : null;
  }

  function inbound(stat) {
    return {
      track: apply(slice, StringOf(stat.trackIdentifier || stat.id || ""), [0, 128]),
      kind: stat.kind === "audio" ? "audio" : "video",
      framesDecoded: number(stat.framesDecoded),
      framesReceived: number(stat.framesReceived),
      framesDropped: number(stat.framesDropped),
      framesPerSecond: number(stat.framesPerSecond),
      freezeCount: number(stat.freezeCount),
      totalFreezesDuration: number(stat.totalFreezesDuration),
      packetsLost: number(stat.packetsLost),
      packetsReceived: number(stat.packetsReceived),
      jitter: number(stat.jitter),
      concealedSamples: number(stat.concealedSamples),
      totalSamplesReceived: number(stat.totalSamplesReceived),
    };
  }

  function figures(entry, report) {
    const found = [];
    const tracks = [];
    const take = (stat) => {
      if (stat && stat.type === "inbound-rtp" && found.length < maxInbound) {
        const sample = inbound(stat);
        tracks[tracks.length] = sample.track;
        found[found.length] = sample;
      }
    };
    if (forEachStat !== null) apply(forEachStat, report, [take]);
    else report.forEach(take);
    entry.tracks = tracks;
    return {id: entry.id, closed: false, inbound: found};
  }

  // One round: every live connection's stats, sent together once all have answered (or failed).
  function finish(round) {
    polling = false;
    pollsWaited = 0;
    if (round.connections.length) send({connections: round.connections});
  }

  function settle(round, answer) {
    try {
      round.out -= 1;
      if (answer !== null) round.connections[round.connections.length] = answer;
    } finally {
      if (round.dispatched && round.out === 0) finish(round);
    }
  }

  function ask(round, entry, pc) {
    round.out += 1;
    try {
      const answered = (report) => {
        let answer = null;
        try {
          answer = figures(entry, report);
        } catch (e) {}
        settle(round, answer);
      };
      apply(then, apply(getStats, pc, []), [answered, () => settle(round, null)]);
    } catch (e) {
      round.out -= 1;
    }
  }

  function poll() {
    if (polling && ++pollsWaited < stuckPolls) return; // the last round has not answered yet
    polling = true;
    pollsWaited = 0;
    const round = {connections: [], out: 0, dispatched: false};
    try {
      const kept = [];
      for (let i = 0; i < live.length; i++) {
        const entry = live[i];
        let pc;
        let state = "closed";
        try {
          pc = apply(deref, entry.ref, []);
          if (pc !== undefined) state = apply(signalingState, pc, []);
        } catch (e) {}
        if (state === "closed") {
          round.connections[round.connections.length] = {id: entry.id, closed: true, tracks: entry.tracks};
          continue;
        }
        kept[kept.length] = entry;
        ask(round, entry, pc);
      }
      live = kept;
      if (live.length === 0 && timer !== null) {
        clearIntervalOf(timer);
        timer = null;
      }
    } catch (e) {
      // whatever the page broke, it gets no exception from here
    } finally {
      round.dispatched = true;
      if (round.out === 0) {
        try {
          finish(round);
        } catch (e) {
          polling = false;
        }
      }
    }
  }

  function follow(pc) {
    try {
      if (live.length >= maxConnections) return;
      live[live.length] = {id: nextId++, ref: new WeakRefOf(pc), tracks: []};
      if (timer === null) timer = setIntervalOf(poll, pollMs);
    } catch (e) {}
  }

  const Wrapped = new Proxy(Native, {
    construct(target, args, newTarget) {
      const pc = construct(target, args, newTarget);
      follow(pc);
      return pc;
    },
  });
  try {
    Native.prototype.constructor = Wrapped;
    const own = Object.getOwnPropertyDescriptor(window, "RTCPeerConnection");
    Object.defineProperty(window, "RTCPeerConnection", {...own, value: Wrapped});
    if (window.webkitRTCPeerConnection === Native) {
      const alias = Object.getOwnPropertyDescriptor(window, "webkitRTCPeerConnection");
      Object.defineProperty(window, "webkitRTCPeerConnection", {...alias, value: Wrapped});
    }
  } catch (e) {
    Native.prototype.constructor = Native;
  }
})();
