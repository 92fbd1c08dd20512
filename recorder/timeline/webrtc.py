"""Inbound WebRTC quality for the timeline: the page's `getStats()`, once a second, made into series, events
and `network` spans per track.

`install_webrtc_wrapper(context)` adds `webrtc.js` (an init script that follows the page's
RTCPeerConnections without changing them) and the binding it reports through; `watch_webrtc(page,
collector)` turns what arrives into the collector's series and events until `await watch.stop()`.

Everything that arrives comes from the page and is hostile. The binding's name is random, but it is not a
secret: Playwright's binding controller lives in the page's world, so a page can find the binding, forge
reports through it or remove it and stop them. A forged report only describes that page; a report is
parsed into plain numbers or refused, counts are capped (connections and tracks per report, MAX_TRACKS
tracks in all, reports per second), times are the recorder's clock at arrival (never the page's), and
nothing in here raises into the recorder. This is why the timeline's WebRTC figures are advisory.

A freeze is a video track whose picture stops moving: `freeze_started`/`freeze_ended` events, with
`data.cause` saying which of two kinds it is.
- `network`: decoding stopped while packets (or frames) still arrive: a video track whose framesDecoded
  advanced stops advancing for a whole poll while packetsReceived or framesReceived still grow. Only this
  kind is trouble on the way (the network or the decoder): it gets a `network` span and counts in the
  track's freeze count and seconds, which feed the summary, the metrics and the regional alert.
- `sender`: the track stops receiving altogether: the sender stopped sending (a camera turned off, a
  static screen share, replaceTrack(null)). The picture froze for whoever watches, so it is a freeze on
  the timeline, but not network trouble: no span, no freeze seconds.
Both are seen while they last. Chromium's freezeCount only
  counts a freeze once the next frame is rendered, i.e. after it ended, and not at all when no frame
  comes again. The start and end are placed within the poll interval from the frames decoded in it at
  the rate before the stall, so they sit within a frame or two of the real moment.
- Chromium's freezeCount/totalFreezesDuration grew without a stall being seen: a shorter hitch (Chromium
  calls a frame interval a freeze when it exceeds max(3 x the mean, the mean + 150 ms)), placed at the
  end of the poll interval that reported it (not within two polls of a stall or idle stretch, which
  Chromium counts too once frames come again).
Counters that go backwards (a connection restarted, a new SSRC) start a new baseline: that poll gives no
figures, freeze or loss. packetsLost may legitimately go down (RFC 3550 counts duplicates against it), so
loss counts from the highest value seen and is never counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from playwright.async_api import BrowserContext, Page

from contract.timeline import LOSS_THRESHOLD, MAX_TRACKS
from recorder.timeline.collector import TimelineCollector

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0  # how often the page asks its connections for stats
REMOVED_AFTER_POLLS = 3  # a track not reported for this many polls is gone
MIN_LOSS_PACKETS = 10  # fewer packets in an interval say nothing about loss_high
MAX_CONNECTIONS_PER_REPORT = 64
MAX_INBOUND_PER_REPORT = 256
MAX_REPORTS_PER_SECOND = 16  # a page has a report a second per frame with connections; more is a flood
MAX_ID = 128
MAX_REFUSED_REMEMBERED = 1024  # distinct tracks past MAX_TRACKS counted in collector.dropped, at least this many
MAX_COUNTER = 1e15

_SCRIPT = (Path(__file__).with_name("webrtc.js")).read_text()

Kind = Literal["audio", "video"]
_NUMBERS = {
    "framesDecoded": "frames_decoded",
    "framesReceived": "frames_received",
    "framesDropped": "frames_dropped",
    "framesPerSecond": "frames_per_second",
    "freezeCount": "freeze_count",
    "totalFreezesDuration": "freezes_seconds",
    "packetsLost": "packets_lost",
    "packetsReceived": "packets_received",
    "jitter": "jitter",
    "concealedSamples": "concealed_samples",
    "totalSamplesReceived": "samples_received",
}


# -- what the page may send, parsed -------------------------------------------------------------------


@dataclass(frozen=True)
class InboundSample:
    """One `inbound-rtp` stat as the page reported it; None where it had no usable number."""

    track: str
    kind: Kind
    frames_decoded: float | None = None
    frames_received: float | None = None
    frames_dropped: float | None = None
    frames_per_second: float | None = None
    freeze_count: float | None = None
    freezes_seconds: float | None = None
    packets_lost: float | None = None
    packets_received: float | None = None
    jitter: float | None = None
    concealed_samples: float | None = None
    samples_received: float | None = None


@dataclass(frozen=True)
class StatsReport:
    """One poll of the page: inbound samples of live connections, and the tracks of connections closed."""

    inbound: tuple[InboundSample, ...] = ()
    closed_tracks: tuple[str, ...] = ()


def _identifier(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value[:MAX_ID] if c.isprintable())
    return text or None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0 or number > MAX_COUNTER:
        return None
    return number


def _inbound(item: Any) -> InboundSample | None:
    if not isinstance(item, dict):
        return None
    track, kind = _identifier(item.get("track")), item.get("kind")
    if track is None or kind not in ("audio", "video"):
        return None
    return InboundSample(track, kind, **{name: _number(item.get(key)) for key, name in _NUMBERS.items()})


def parse_report(payload: Any) -> StatsReport | None:
    """The page's report as plain values, capped; None when it is not a report at all."""
    if not isinstance(payload, dict) or not isinstance(payload.get("connections"), list):
        return None
    inbound: list[InboundSample] = []
    closed: list[str] = []
    for connection in payload["connections"][:MAX_CONNECTIONS_PER_REPORT]:
        if not isinstance(connection, dict):
            continue
        if connection.get("closed") is True:
            tracks = connection.get("tracks")
            if isinstance(tracks, list):
                closed += [t for t in map(_identifier, tracks[:MAX_INBOUND_PER_REPORT]) if t is not None]
            continue
        items = connection.get("inbound")
        if not isinstance(items, list):
            continue
        for item in items[: MAX_INBOUND_PER_REPORT - len(inbound)]:
            sample = _inbound(item)
            if sample is not None:
                inbound.append(sample)
    return StatsReport(tuple(inbound), tuple(closed[:MAX_INBOUND_PER_REPORT]))


# -- one inbound track ------------------------------------------------------------------------------


def growth(before: float | None, now: float | None) -> float | None:
    """How much a counter grew; None when either is unknown or it went backwards (it restarted: unknown)."""
    if before is None or now is None or now < before:
        return None
    return now - before


def restarted(before: InboundSample, now: InboundSample) -> bool:
    """A counter that only grows went backwards: the track's stats start again (a new SSRC, a restart)."""
    pairs = [
        (before.packets_received, now.packets_received),
        (before.frames_decoded, now.frames_decoded),
        (before.frames_received, now.frames_received),
        (before.freeze_count, now.freeze_count),
        (before.samples_received, now.samples_received),
    ]
    return any(old is not None and new is not None and new < old for old, new in pairs)


@dataclass
class _Interval:
    start: float
    end: float
    frames: float

    @property
    def rate(self) -> float:
        return self.frames / (self.end - self.start) if self.end > self.start else 0.0


@dataclass
class TrackState:
    """What is known of one inbound track, on the wall clock."""

    id: str
    kind: Kind
    first_seen: float
    last_seen: float
    last: InboundSample
    freeze_count: int = 0
    freeze_seconds: float = 0.0
    packets_lost: int = 0
    packets_received: int = 0
    worst_loss: float = 0.0
    concealed_seconds: float = 0.0
    removed: bool = False
    # decoding: the last two intervals, the stall in progress (its start and the rate before it)
    intervals: list[_Interval] = field(default_factory=list)
    stalled_since: float | None = None
    stalled_rate: float = 0.0
    polls_since_stall: int = 99
    idle_since: float | None = None
    loss_high_since: float | None = None
    lost_seen: float | None = None  # the highest packetsLost reported since the last restart

    def facts(self) -> dict[str, Any]:
        """`contract.timeline.Track`'s fields, with first_seen/last_seen on the wall clock."""
        return {
            "id": self.id,
            "kind": self.kind,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "freeze_count": self.freeze_count,
            "freeze_seconds": round(self.freeze_seconds, 3),
            "packets_lost": self.packets_lost,
            "packets_received": self.packets_received,
            "worst_loss": round(self.worst_loss, 4),
            "concealed_seconds": round(self.concealed_seconds, 3),
        }


class WebRtcWatch:
    """Turns the page's stats reports into the collector's series, events and spans, until `stop()`."""

    def __init__(self, collector: TimelineCollector, *, interval: float = POLL_SECONDS) -> None:
        self.collector = collector
        self.interval = interval
        self.tracks: dict[str, TrackState] = {}
        self._refused: set[str] = set()
        self._window = (0.0, 0)  # (second, reports taken in it)
        self._ticker: asyncio.Task[None] | None = None
        self._receiver: StatsReceiver | None = None
        self.stopped = False

    # -- intake ----------------------------------------------------------------------------------------

    def receive(self, payload: Any) -> None:
        """A report from the page, as the binding got it: parsed, rate-limited, taken; never raises."""
        if self.stopped:
            return
        try:
            at = self.collector.clock()
            second, count = self._window
            if int(at) != second:
                second, count = int(at), 0
            self._window = (second, count + 1)
            if count >= MAX_REPORTS_PER_SECOND:
                self.collector.dropped["webrtc.report"] += 1
                return
            report = parse_report(payload)
            if report is None:
                self.collector.dropped["webrtc.report"] += 1
                return
            self.take(report, at)
        except Exception:  # a bug here must not end the recording
            log.exception("webrtc stats report not taken")

    def take(self, report: StatsReport, at: float) -> None:
        for track in report.closed_tracks:
            state = self.tracks.get(track)
            if state is not None and not state.removed:
                self._remove(state, "its connection closed")
        for sample in report.inbound:
            state = self.tracks.get(sample.track)
            if state is None:
                self._add(sample, at)
            elif state.removed:
                state.removed, state.last, state.intervals, state.last_seen = False, sample, [], at
                state.lost_seen = sample.packets_lost
                self._added(state, at)
            else:
                self._update(state, sample, at)

    def expire(self, now: float) -> None:
        """Tracks not reported for REMOVED_AFTER_POLLS polls are gone (the page stopped, the connection died)."""
        for state in self.tracks.values():
            if not state.removed and now - state.last_seen > REMOVED_AFTER_POLLS * self.interval:
                self._remove(state, f"not reported for {REMOVED_AFTER_POLLS} polls")

    # -- per track -------------------------------------------------------------------------------------

    def _add(self, sample: InboundSample, at: float) -> None:
        if len(self.tracks) >= MAX_TRACKS:
            if sample.track not in self._refused and len(self._refused) < MAX_REFUSED_REMEMBERED:
                self._refused.add(sample.track)
                self.collector.dropped["webrtc.track"] += 1
            return
        state = self.tracks[sample.track] = TrackState(sample.track, sample.kind, at, at, sample)
        state.lost_seen = sample.packets_lost
        self._added(state, at)

    def _added(self, state: TrackState, at: float) -> None:
        self.collector.event(
            "webrtc", "track_added", f"inbound {state.kind} track", track=state.id, at=at, media=state.kind
        )

    def _update(self, state: TrackState, sample: InboundSample, at: float) -> None:
        before, since = state.last, state.last_seen
        elapsed = at - since
        if elapsed < self.interval / 2:
            return  # a second report within one poll: a duplicate or a flood
        state.last, state.last_seen = sample, at
        if restarted(before, sample):
            # A new baseline: nothing is known of this interval.
            state.intervals, state.lost_seen = [], sample.packets_lost
            return
        self._loss(state, before, sample, since, at)
        if sample.jitter is not None:
            self.collector.sample("webrtc.jitter", sample.jitter, unit="s", track=state.id, at=at)
        if state.kind == "video":
            self._frames(state, before, sample, since, at)
        else:
            self._concealment(state, before, sample, elapsed, at)

    def _loss(self, state: TrackState, before: InboundSample, now: InboundSample, since: float, at: float) -> None:
        received = growth(before.packets_received, now.packets_received)
        if now.packets_lost is None:
            return
        seen, state.lost_seen = state.lost_seen, max(state.lost_seen or 0.0, now.packets_lost)
        if seen is None or received is None:
            return
        lost = max(0.0, now.packets_lost - seen)  # a drop below the highest seen is not counted again later
        state.packets_lost += int(lost)
        state.packets_received += int(received)
        if lost + received == 0:
            return
        share = lost / (lost + received)
        self.collector.sample("webrtc.loss", share, unit="share", track=state.id, at=at)
        if lost + received < MIN_LOSS_PACKETS:
            return
        state.worst_loss = max(state.worst_loss, share)
        if share > LOSS_THRESHOLD and state.loss_high_since is None:
            state.loss_high_since = since
            self.collector.event(
                "webrtc", "loss_high", f"{share:.0%} of packets lost", level="warning", track=state.id, at=since,
                loss=round(share, 4),
            )  # fmt: skip
        elif share <= LOSS_THRESHOLD and state.loss_high_since is not None:
            self._loss_ended(state, since, recovered=True)

    def _loss_ended(self, state: TrackState, end: float, *, recovered: bool) -> None:
        start, state.loss_high_since = state.loss_high_since, None
        if start is None:
            return
        self.collector.span("network", "webrtc", start, end, message=f"{state.kind} losing packets", track=state.id)
        if recovered:
            self.collector.event("webrtc", "loss_recovered", "packet loss back under 5%", track=state.id, at=end)

    def _frames(self, state: TrackState, before: InboundSample, now: InboundSample, since: float, at: float) -> None:
        decoded = growth(before.frames_decoded, now.frames_decoded)
        arriving = bool(growth(before.packets_received, now.packets_received)) or bool(
            growth(before.frames_received, now.frames_received)
        )
        state.polls_since_stall += 1
        if decoded is not None:
            self.collector.sample("webrtc.fps", decoded / (at - since), unit="fps", track=state.id, at=at)
            interval = _Interval(since, at, decoded)
            quiet = state.stalled_since is None and state.idle_since is None
            if quiet and decoded == 0 and state.intervals and state.intervals[-1].frames > 0:
                began, state.stalled_rate = self._stop_of(state)
                if arriving:
                    self._stall_began(state, began)
                else:
                    self._idle_began(state, began)
            elif decoded > 0 and not quiet:
                # Decoding came back inside this interval: it ran for `decoded` frames at the rate before the stop.
                back = at - decoded / state.stalled_rate if state.stalled_rate > 0 else since
                back = min(at, max(since, back))
                self._freeze_ended(state, back, "decoding resumed")
                self._idle_ended(state, back)
            elif decoded == 0 and state.idle_since is not None and arriving:
                self._idle_ended(state, since)  # packets again, still nothing decoded: now it is frozen
                self._stall_began(state, since)
            elif decoded == 0 and state.stalled_since is not None and not arriving:
                self._freeze_ended(state, since, "the sender stopped sending")
                self._idle_began(state, since)
            state.intervals = [*state.intervals[-1:], interval]
        freezes = growth(before.freeze_count, now.freeze_count)
        if freezes and state.stalled_since is None and state.idle_since is None and state.polls_since_stall > 2:
            # Chromium saw a freeze the stall check did not: shorter than a poll, placed at its interval's end.
            seconds = min(growth(before.freezes_seconds, now.freezes_seconds) or 0.0, at - since)
            state.stalled_since = at - seconds
            self._started_event(state, "a frame came late")
            self._freeze_ended(state, at, "frames came again", count=int(freezes))

    @staticmethod
    def _stop_of(state: TrackState) -> tuple[float, float]:
        """When decoding stopped within the last interval (it ran on at the rate before it), and that rate."""
        last = state.intervals[-1]
        rate = state.intervals[0].rate if len(state.intervals) > 1 else last.rate
        began = last.start + last.frames / rate if rate > 0 else last.end
        return min(last.end, max(last.start, began)), rate

    def _stall_began(self, state: TrackState, began: float) -> None:
        state.stalled_since = began
        self._started_event(state, "no frame decoded while packets arrive")

    def _idle_began(self, state: TrackState, began: float) -> None:
        state.idle_since = began
        self.collector.event(
            "webrtc", "freeze_started", "video frozen: nothing arriving, the sender stopped sending",
            level="warning", track=state.id, at=began, cause="sender",
        )  # fmt: skip

    def _idle_ended(self, state: TrackState, end: float, *, event: bool = True) -> None:
        start, state.idle_since = state.idle_since, None
        if start is None:
            return
        state.polls_since_stall = 0
        if event:
            self.collector.event(
                "webrtc", "freeze_ended", f"video arriving again after {max(0.0, end - start):.1f} s",
                track=state.id, at=max(start, end), seconds=round(max(0.0, end - start), 3), cause="sender",
            )  # fmt: skip

    def _started_event(self, state: TrackState, why: str) -> None:
        self.collector.event(
            "webrtc", "freeze_started", f"video frozen: {why}", level="warning", track=state.id,
            at=state.stalled_since, cause="network",
        )  # fmt: skip

    def _freeze_ended(self, state: TrackState, end: float, why: str, *, count: int = 1, event: bool = True) -> None:
        start, state.stalled_since = state.stalled_since, None
        if start is None:
            return
        end = max(start, end)
        state.freeze_count += count
        state.freeze_seconds += end - start
        state.polls_since_stall = 0
        self.collector.span("network", "webrtc", start, end, message="video frozen", track=state.id)
        if event:
            self.collector.event(
                "webrtc", "freeze_ended", f"video moving again after {end - start:.1f} s: {why}", track=state.id,
                at=end, seconds=round(end - start, 3), cause="network",
            )  # fmt: skip

    def _concealment(
        self, state: TrackState, before: InboundSample, now: InboundSample, elapsed: float, at: float
    ) -> None:
        concealed = growth(before.concealed_samples, now.concealed_samples)
        received = growth(before.samples_received, now.samples_received)
        if concealed is None or not received:
            return
        share = min(1.0, concealed / received)
        state.concealed_seconds += share * elapsed
        self.collector.sample("webrtc.concealed", share, unit="share", track=state.id, at=at)

    def _remove(self, state: TrackState, why: str) -> None:
        self._close_open(state)
        state.removed = True
        self.collector.event("webrtc", "track_removed", f"inbound {state.kind} track gone: {why}", track=state.id,
                             at=state.last_seen)  # fmt: skip

    def _close_open(self, state: TrackState) -> None:
        """A freeze or a loss still going when the track ends or the watch stops ends at its last report."""
        if state.stalled_since is not None:
            self._freeze_ended(state, state.last_seen, "", event=False)
        self._idle_ended(state, state.last_seen, event=False)
        self._loss_ended(state, state.last_seen, recovered=False)

    # -- lifetime --------------------------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.expire(self.collector.clock())
            except Exception:
                log.exception("webrtc track expiry failed")

    def start(self, receiver: StatsReceiver | None) -> None:
        self._receiver = receiver
        if receiver is not None:
            receiver.watch = self
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="webrtc-watch")

    async def stop(self) -> None:
        """Stop listening; store every track's facts in `collector.tracks` (`Track` fields, wall-clock times)."""
        if self.stopped:
            return
        self.stopped = True
        if self._receiver is not None and self._receiver.watch is self:
            self._receiver.watch = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for state in self.tracks.values():
            if not state.removed:
                self._close_open(state)
        self.collector.tracks = [s.facts() for s in sorted(self.tracks.values(), key=lambda s: s.first_seen)]


# -- the page side --------------------------------------------------------------------------------


class StatsReceiver:
    """The binding's end in the recorder: hands reports to the watch of the moment, if any."""

    def __init__(self, binding: str) -> None:
        self.binding = binding
        self.watch: WebRtcWatch | None = None
        self.reports = 0  # reports that arrived, watched or not (for tests)

    def __call__(self, source: Any, payload: Any = None) -> None:
        self.reports += 1
        watch = self.watch
        if watch is not None:
            watch.receive(payload)


_receivers: weakref.WeakKeyDictionary[BrowserContext, StatsReceiver] = weakref.WeakKeyDictionary()


def wrapper_script(binding: str, poll_seconds: float = POLL_SECONDS) -> str:
    """webrtc.js with its binding name and poll interval filled in."""
    return _SCRIPT.replace('"BINDING"', json.dumps(binding)).replace("POLL_MS", str(round(poll_seconds * 1000)))


async def install_webrtc_wrapper(context: BrowserContext, *, poll_seconds: float = POLL_SECONDS) -> StatsReceiver:
    """Before any page of `context` opens: the RTCPeerConnection wrapper in every frame, and its binding."""
    binding = "__rtc_" + secrets.token_hex(12)
    receiver = StatsReceiver(binding)
    await context.expose_binding(binding, receiver)
    await context.add_init_script(script=wrapper_script(binding, poll_seconds))
    _receivers[context] = receiver
    return receiver


async def watch_webrtc(page: Page, collector: TimelineCollector, *, interval: float = POLL_SECONDS) -> WebRtcWatch:
    """Follow the inbound tracks of every page of `page`'s context into `collector` until `stop()`.

    `interval` is the wrapper's poll interval (`install_webrtc_wrapper`'s `poll_seconds`). Without the
    wrapper installed the watch sees nothing, and says so in the log."""
    watch = WebRtcWatch(collector, interval=interval)
    receiver = _receivers.get(page.context)
    if receiver is None:
        log.warning("no WebRTC wrapper in this browser context: inbound tracks are not followed")
    watch.start(receiver)
    return watch


__all__ = [
    "POLL_SECONDS",
    "InboundSample",
    "StatsReceiver",
    "StatsReport",
    "WebRtcWatch",
    "install_webrtc_wrapper",
    "parse_report",
    "watch_webrtc",
]
