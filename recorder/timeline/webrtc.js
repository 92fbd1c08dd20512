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
// here may throw into the page: every step is guarded, and the page's later changes to globals (timers,
// getStats) are not used, the originals having been kept.
(() => {
  "use strict";
  const Native = window.RTCPeerConnection;
  if (typeof Native !== "function") return;
  const bindingName = "BINDING";
  const pollMs = POLL_MS;
  const maxConnections = 64;
  const maxInbound = 64;
  // The originals, kept before the page can replace them.
  const getStats = Native.prototype.getStats;
  const signalingState = Object.getOwnPropertyDescriptor(Native.prototype, "signalingState").get;
  const setIntervalOf = window.setInterval.bind(window);
  const clearIntervalOf = window.clearInterval.bind(window);
  const WeakRefOf = window.WeakRef;
  const then = Promise.prototype.then;
  const all = Promise.all.bind(Promise);
  let binding = null;
  let nextId = 1;
  let timer = null;
  let polling = false;
  const live = new Set(); // {id, ref: WeakRef<RTCPeerConnection>, tracks: string[]}
  try {
    // Kept here and taken off the window, so the page's scripts do not come across it.
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
      then.call(binding(payload), undefined, () => {});
    } catch (e) {
      // the binding is gone (the page is closing): nothing to report to
    }
  }

  function number(value) {
    return typeof value === "number" && isFinite(value) ? value : null;
  }

  function inbound(stat) {
    return {
      track: String(stat.trackIdentifier || stat.id || "").slice(0, 128),
      kind: stat.kind === "audio" ? "audio" : "video",
      framesDecoded: number(stat.framesDecoded),
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

  function collect(entry, pc) {
    return then.call(getStats.call(pc), (report) => {
      const found = [];
      report.forEach((stat) => {
        if (stat && stat.type === "inbound-rtp" && found.length < maxInbound) found.push(inbound(stat));
      });
      entry.tracks = found.map((s) => s.track);
      return {id: entry.id, closed: false, inbound: found};
    });
  }

  function poll() {
    if (polling) return; // the last round has not answered yet
    const rounds = [];
    const closed = [];
    for (const entry of live) {
      const pc = entry.ref.deref();
      let state = "closed";
      try {
        if (pc !== undefined) state = signalingState.call(pc);
      } catch (e) {}
      if (state === "closed") {
        live.delete(entry);
        closed.push({id: entry.id, closed: true, tracks: entry.tracks});
        continue;
      }
      try {
        rounds.push(then.call(collect(entry, pc), undefined, () => null));
      } catch (e) {}
    }
    if (live.size === 0 && timer !== null) {
      clearIntervalOf(timer);
      timer = null;
    }
    if (rounds.length === 0) {
      if (closed.length) send({connections: closed});
      return;
    }
    polling = true;
    then.call(all(rounds), (answers) => {
      polling = false;
      const connections = closed.concat(answers.filter((a) => a !== null));
      if (connections.length) send({connections});
    }, () => { polling = false; });
  }

  function follow(pc) {
    try {
      if (live.size >= maxConnections) return;
      live.add({id: nextId++, ref: new WeakRefOf(pc), tracks: []});
      if (timer === null) timer = setIntervalOf(poll, pollMs);
    } catch (e) {}
  }

  const Wrapped = new Proxy(Native, {
    construct(target, args, newTarget) {
      const pc = Reflect.construct(target, args, newTarget);
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
