"""Inbound WebRTC stats in the timeline (recorder/timeline/webrtc.py and webrtc.js).

On a real Chromium: the loopback call of recorder/reference/webrtc.py stops sending video for 2 s
(replaceTrack(null): no packets) and the timeline has the track idle at that time, not a network freeze;
the page plays at the same rate with the wrapper as without it; RTCPeerConnection used in unusual ways
behaves as the native one; builtins the page breaks throw nothing into it. Without a browser: whatever a
hostile page hands the binding is refused or capped, counters that go backwards start a new baseline
(no false freeze), packetsLost that goes down is not counted twice, a stall is a freeze only while
packets arrive, and a long stream of stats stays bounded.

The loopback call needs host candidates, which the egress guard's WebRTC policy (no UDP it cannot proxy)
takes away, so the browser tests run their recorder with the guard off.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, Page

from contract.spec import RecordingSpec
from contract.timeline import MAX_SERIES_POINTS, MAX_TRACKS, Timeline
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder
from recorder.timeline.collector import TimelineCollector
from recorder.timeline.webrtc import (
    MAX_INBOUND_PER_REPORT,
    InboundSample,
    StatsReport,
    WebRtcWatch,
    install_webrtc_wrapper,
    parse_report,
    watch_webrtc,
)

FREEZE_AT, FREEZE_FOR = 4.0, 2.0


# -- on a real Chromium -----------------------------------------------------------------------------


@pytest.fixture
async def recorder(no_leaks: None, tmp_path: Path) -> AsyncIterator[Recorder]:
    """A recorder's display, audio server and browser, the egress guard off (see the module's docstring)."""
    rec = Recorder(RecorderSettings(records_dir=tmp_path / "records", egress_guard=False))
    try:
        await rec.prepare(1280, 720)
        yield rec
    finally:
        await rec.close()


@asynccontextmanager
async def opened(recorder: Recorder, url: str, *, wrapped: bool) -> AsyncIterator[Page]:
    """A fresh context and page, with the wrapper installed or not, not navigated yet."""
    assert recorder.browser is not None
    session = await recorder.browser.open(RecordingSpec(url=url, duration=5))
    try:
        if wrapped:
            await install_webrtc_wrapper(session.context)
        assert session.page is not None
        yield session.page
    finally:
        await session.close()


def console_at(page: Page) -> dict[str, float]:
    """The wall-clock time each console line was first seen."""
    seen: dict[str, float] = {}

    def on_console(message: ConsoleMessage) -> None:
        seen.setdefault(message.text.split(" ")[0], time.time())

    page.on("console", on_console)
    return seen


async def wait_for_line(seen: dict[str, float], line: str, within: float) -> float:
    deadline = time.monotonic() + within
    while line not in seen:
        if "LOOPBACK_ERROR" in seen:
            raise AssertionError("the loopback call failed in the page")
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not log {line} within {within:g} s: {sorted(seen)}")
        await asyncio.sleep(0.05)
    return seen[line]


@pytest.mark.media
async def test_a_two_second_stop_of_sending_video_is_idle_at_its_time_not_a_network_freeze(recorder, test_page):
    """replaceTrack(null) sends nothing: the track is idle (as with a camera turned off), not frozen."""
    url = test_page.url(f"/webrtc?freeze_at={FREEZE_AT:g}&freeze_for={FREEZE_FOR:g}")
    async with opened(recorder, url, wrapped=True) as page:
        collector = TimelineCollector()
        watch = await watch_webrtc(page, collector)
        try:
            seen = console_at(page)
            await page.goto(url)
            started = await wait_for_line(seen, "START_RECORDING", 15)
            await wait_for_line(seen, "LOOPBACK_RESUMED", FREEZE_AT + FREEZE_FOR + 10)
            await asyncio.sleep(3)
        finally:
            await watch.stop()

    def at(kind: str) -> list[float]:
        return [e.at - started for e in collector.events if e.kind == kind]

    assert len(collector.tracks) == 1, collector.tracks
    video = collector.tracks[0]
    assert video["kind"] == "video" and video["packets_received"] > 100, video
    assert at("track_added") and at("track_added")[0] < FREEZE_AT, collector.events
    # The sender stopped sending (replaceTrack(null)): a freeze of the picture, not network trouble.
    [began], [ended] = at("freeze_started"), at("freeze_ended")
    assert abs(began - FREEZE_AT) <= 1.0, (began, collector.events)
    assert abs(ended - began - FREEZE_FOR) <= 1.0, (began, ended)
    assert {e.data.get("cause") for e in collector.events if e.kind.startswith("freeze")} == {"sender"}
    assert not [s for s in collector.spans if s.kind == "network"], collector.spans
    assert video["freeze_count"] == 0 and video["freeze_seconds"] == 0, video
    fps = dict(collector.series)[("webrtc.fps", video["id"])].points()
    assert max(value for _, value in fps) >= 20, fps
    assert video["worst_loss"] <= 0.05, video


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
def test_recorder_record_puts_the_freeze_on_that_track_in_timeline_json(tmp_path, test_page):
    out = tmp_path / "out" / "rec.mp4"
    url = test_page.url(f"/webrtc?freeze_at={FREEZE_AT:g}&freeze_for={FREEZE_FOR:g}")
    done = subprocess.run(
        [sys.executable, "-m", "recorder.cli", "record", url, "--duration", "10", "--width", "640", "--height",
         "360", "--wait-for", "signal", "--out", str(out), "--records-dir", str(tmp_path / "records")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "URL_ALLOWLIST": "127.0.0.1", "RECORDER_EGRESS_GUARD": "false"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    timeline = Timeline.model_validate_json(out.with_name("rec.timeline.json").read_text())
    [signal] = [e for e in timeline.events if e.kind == "signal" and e.data.get("name") == "START_RECORDING"]
    [track] = timeline.tracks
    assert track.kind == "video" and track.freeze_count == 0, track
    [began] = [e.t for e in timeline.events if e.kind == "freeze_started" and e.track == track.id]
    [ended] = [e.t for e in timeline.events if e.kind == "freeze_ended" and e.track == track.id]
    assert abs(began - (signal.t + FREEZE_AT)) <= 1.0, (signal.t, began)
    assert abs(ended - began - FREEZE_FOR) <= 1.0, (began, ended)
    assert not [s for s in timeline.spans if s.kind == "network"], timeline.spans
    assert timeline.summary.freeze_seconds[track.id] == 0, timeline.summary
    assert timeline.summary.worst_inbound_loss is not None and timeline.summary.worst_inbound_loss <= 0.05
    assert {s.name for s in timeline.series} >= {"webrtc.fps", "webrtc.loss", "webrtc.jitter"}
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["timeline"]["freeze_seconds"] == timeline.summary.freeze_seconds


async def presented_per_second(page: Page, url: str, seconds: float) -> float:
    seen = console_at(page)
    await page.goto(url)
    await wait_for_line(seen, "START_RECORDING", 15)
    await asyncio.sleep(1.5)  # the wrapper's first polls are in this window
    first, began = await page.evaluate("window.loopback.presented"), time.monotonic()
    await asyncio.sleep(seconds)
    last, ended = await page.evaluate("window.loopback.presented"), time.monotonic()
    return (last - first) / (ended - began)


@pytest.mark.media
async def test_the_page_plays_at_the_same_rate_with_the_wrapper(recorder, test_page):
    url = test_page.url("/webrtc")
    rates: dict[bool, float] = {}
    for wrapped in (False, True):
        async with opened(recorder, url, wrapped=wrapped) as page:
            watch = await watch_webrtc(page, TimelineCollector()) if wrapped else None
            try:
                rates[wrapped] = await presented_per_second(page, url, 6.0)
            finally:
                if watch is not None:
                    await watch.stop()
            if watch is not None:
                assert watch.tracks, "the wrapper followed the call while it was measured"
    assert rates[False] >= 20, rates
    assert abs(rates[True] - rates[False]) <= max(3.0, 0.1 * rates[False]), rates


# What a page can see of RTCPeerConnection, run with and without the wrapper: the answers must be equal.
PROBE = """async () => {
  const out = {};
  const RTC = window.RTCPeerConnection;
  const own = Object.getOwnPropertyDescriptor(window, 'RTCPeerConnection');
  out.descriptor = [typeof own.value, own.writable, own.enumerable, own.configurable];
  out.shape = [typeof RTC, RTC.name, RTC.length, RTC.prototype.constructor === RTC,
               Object.getPrototypeOf(RTC) === EventTarget, Object.keys(RTC).join()];
  out.alias = typeof window.webkitRTCPeerConnection === 'undefined' ? 'none' : window.webkitRTCPeerConnection === RTC;
  try { RTC(); out.asFunction = 'no error'; } catch (e) { out.asFunction = [e.constructor.name, e.message]; }
  try { new RTC({iceServers: 'bad'}); out.badConfig = 'no error'; }
  catch (e) { out.badConfig = [e.constructor.name, e.message]; }
  const plain = new RTC();
  out.plain = [plain instanceof RTC, plain.constructor === RTC, Object.getPrototypeOf(plain) === RTC.prototype,
               plain.signalingState, typeof plain.getStats, String(plain)];
  class Sub extends RTC { constructor(config) { super(config); this.mine = 42; } hello() { return 'hi'; } }
  const sub = new Sub();
  out.subclass = [sub instanceof Sub, sub instanceof RTC, sub.constructor === Sub, sub.mine, sub.hello(), Sub.name];
  const Reflected = Reflect.construct(RTC, [], Sub);
  out.reflected = Object.getPrototypeOf(Reflected) === Sub.prototype;
  const certificate = await RTC.generateCertificate({name: 'ECDSA', namedCurve: 'P-256'});
  out.certificate = [certificate.constructor.name, certificate.expires > Date.now()];
  const channel = sub.createDataChannel('x');
  out.channel = [channel.label, channel.readyState];
  const offer = await sub.createOffer();
  out.offer = [offer.type, offer.sdp.startsWith('v=0')];
  plain.close(); sub.close();
  out.closed = [plain.signalingState, sub.signalingState];
  // Playwright's own plumbing for any binding (__playwright__binding__...) is there whoever exposes one.
  out.globals = Object.getOwnPropertyNames(window).filter((k) => !k.startsWith('__playwright__binding__')).sort();
  return out;
}"""


@pytest.mark.media
async def test_rtcpeerconnection_used_in_unusual_ways_behaves_as_without_the_wrapper(recorder, test_page):
    url = test_page.url("/status/200")
    answers: dict[bool, dict[str, Any]] = {}
    for wrapped in (False, True):
        async with opened(recorder, url, wrapped=wrapped) as page:
            await page.goto(url)
            answers[wrapped] = await page.evaluate(PROBE)
    assert answers[True] == answers[False], (answers[True], answers[False])
    assert answers[True]["asFunction"][0] == "TypeError", answers[True]
    assert answers[True]["subclass"] == [True, True, True, 42, "hi", "Sub"], answers[True]


@pytest.mark.media
async def test_a_page_without_connections_gets_no_timer_and_closed_connections_stop_being_polled(recorder, test_page):
    url = test_page.url("/status/200")
    async with opened(recorder, url, wrapped=True) as page:
        collector = TimelineCollector()
        watch = await watch_webrtc(page, collector)
        receiver = watch._receiver
        assert receiver is not None
        try:
            await page.goto(url)
            await asyncio.sleep(2.5)
            assert receiver.reports == 0, "no connection, no poll"
            await page.evaluate("window.kept = new RTCPeerConnection()")
            await asyncio.sleep(2.5)
            assert receiver.reports >= 1, "a live connection is polled"
            await page.evaluate("window.kept.close()")
            await asyncio.sleep(1.5)
            after_close = receiver.reports
            await asyncio.sleep(2.5)
            assert receiver.reports == after_close, "a closed connection is not polled, and the timer stopped"
        finally:
            await watch.stop()
    assert collector.tracks == [], "a connection without inbound media has no track"


# What the wrapper itself uses: broken after it installed, none of it matters.
BREAK_BUILTINS = """
const broken = (what) => function () { throw new Error('page broke ' + what); };
RTCPeerConnection.prototype.getStats = broken('getStats');
window.setInterval = broken('timers');
Promise.all = broken('Promise.all');
Promise.resolve = broken('Promise.resolve');
Set.prototype[Symbol.iterator] = broken('Set iteration');
WeakRef.prototype.deref = broken('deref');
RTCStatsReport.prototype.forEach = broken('forEach');
window.isFinite = broken('isFinite');
Number.isFinite = broken('Number.isFinite');
Reflect.apply = broken('Reflect.apply');
"""
# What Playwright's binding uses in the page's world: broken for 2.5 s (from a timer, so that evaluate itself
# still works), reports stop; restored, they resume.
BREAK_THE_BINDING_FOR_A_WHILE = """
const saved = {stringify: JSON.stringify, then: Promise.prototype.then};
setTimeout(() => {
  JSON.stringify = () => { throw new Error('page broke stringify'); };
  Promise.prototype.then = () => { throw new Error('page broke then'); };
  setTimeout(() => { JSON.stringify = saved.stringify; Promise.prototype.then = saved.then; }, 2500);
}, 0);
"""


@pytest.mark.media
async def test_a_page_that_breaks_builtins_gets_nothing_thrown_back_and_polling_goes_on(recorder, test_page):
    """The builtins the wrapper uses are the ones it took before the page ran: a page that replaces them
    afterwards gets no exception from the wrapper, and its reports go on. The binding is not a secret (a
    page can find, forge or remove it: see recorder/timeline/webrtc.py); it is only not left on the window.
    A page that breaks what the binding itself uses (JSON.stringify, Promise's then) stops its
    own reports while it does,
    and they resume when it stops: the wrapper never stays stuck."""
    url = test_page.url("/status/200")
    async with opened(recorder, url, wrapped=True) as page:
        watch = await watch_webrtc(page, TimelineCollector())
        receiver = watch._receiver
        assert receiver is not None
        try:
            await page.goto(url)
            found = await page.evaluate("Object.getOwnPropertyNames(window).filter((k) => k.startsWith('__rtc'))")
            assert found == [], found
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.evaluate(BREAK_BUILTINS + "window.kept = new RTCPeerConnection();")
            await asyncio.sleep(2.5)
            assert errors == [], errors
            assert receiver.reports >= 1, "the wrapper kept the originals"
            await page.evaluate(BREAK_THE_BINDING_FOR_A_WHILE)
            await asyncio.sleep(0.5)
            broken_at = receiver.reports
            await asyncio.sleep(1.5)
            assert receiver.reports <= broken_at + 1, "a broken binding sends nothing (one may have been on its way)"
            await asyncio.sleep(3.0)
            assert errors == [], errors
            assert receiver.reports > broken_at, "polling resumed: a failed send never leaves it stuck"
        finally:
            await watch.stop()


# -- without a browser: the watch on its own ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def video(track: str = "v1", **figures: float) -> dict[str, Any]:
    return {"track": track, "kind": "video", **figures}


def report(*inbound: dict[str, Any], closed: list[str] | None = None) -> dict[str, Any]:
    connections: list[dict[str, Any]] = [{"id": 1, "closed": False, "inbound": list(inbound)}]
    if closed is not None:
        connections.append({"id": 2, "closed": True, "tracks": closed})
    return {"connections": connections}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def watch(clock: Clock) -> WebRtcWatch:
    return WebRtcWatch(TimelineCollector(clock=clock))


def feed(watch: WebRtcWatch, clock: Clock, payloads: list[dict[str, Any]], step: float = 1.0) -> None:
    for payload in payloads:
        clock.now += step
        watch.receive(payload)


HOSTILE: list[Any] = [
    None,
    "connections",
    42,
    [],
    {"connections": "all of them"},
    {"connections": [None, 1, "x", [], {"closed": "yes", "tracks": "x"}, {"inbound": {"a": 1}}]},
    {"connections": [{"inbound": [None, {"track": 7, "kind": "video"}, {"track": "t", "kind": "screen"}]}]},
    {"connections": [{"inbound": [{"track": "", "kind": "audio"}, {"track": {"a": 1}, "kind": "audio"}]}]},
    {"connections": [{"inbound": [video("n", framesDecoded="12", packetsLost=True, jitter=-1.0)]}]},
    {"connections": [{"inbound": [video("m", framesDecoded=math.nan, packetsReceived=math.inf)]}]},
    {"connections": [{"inbound": [video("\x00\x1b[2J" + "x" * 100_000, packetsLost=1e300)]}]},
]


def test_hostile_reports_are_refused_or_capped_and_never_raise(watch, clock):
    for payload in HOSTILE:
        clock.now += 1
        watch.receive(payload)
    ids = set(watch.tracks)
    assert ids == {"n", "m", "[2J" + "x" * 123}, ids
    for state in watch.tracks.values():
        assert state.last.frames_decoded is None and state.last.packets_lost is None
    assert watch.collector.dropped["webrtc.report"] >= 5, watch.collector.dropped


def test_thousands_of_fake_tracks_are_capped_and_counted(watch, clock):
    fake = [video(f"fake-{i}", framesDecoded=i) for i in range(5000)]
    payload = {"connections": [{"inbound": fake[j : j + 500]} for j in range(0, 5000, 500)]}
    assert len(parse_report(payload).inbound) == MAX_INBOUND_PER_REPORT  # type: ignore[union-attr]
    for _ in range(20):
        clock.now += 1
        watch.receive(payload)
    assert len(watch.tracks) == MAX_TRACKS
    assert watch.collector.dropped["webrtc.track"] == MAX_INBOUND_PER_REPORT - MAX_TRACKS
    assert sum(e.kind == "track_added" for e in watch.collector.events) == MAX_TRACKS


def test_a_flood_of_reports_is_cut_at_the_rate_a_page_can_have(watch, clock):
    for i in range(10_000):
        clock.now += 0.0001
        watch.receive(report(video(framesDecoded=i, packetsReceived=i, packetsLost=0)))
    assert watch.collector.dropped["webrtc.report"] >= 10_000 - 16 * 2
    assert len(watch.collector.events) == 1  # the track was added, nothing else: reports within a poll are ignored


def test_counters_that_go_backwards_start_a_new_baseline_with_no_freeze_or_loss(watch, clock):
    """A restart (new SSRC): the poll that shows it gives no figures, and in particular no false freeze."""
    figures = [(300, 1000, 10), (330, 1030, 11), (5, 20, 0), (35, 50, 0), (65, 80, 1)]
    feed(watch, clock, [report(video(framesDecoded=d, packetsReceived=r, packetsLost=lo)) for d, r, lo in figures])
    fps = watch.collector.series[("webrtc.fps", "v1")].points()
    loss = watch.collector.series[("webrtc.loss", "v1")].points()
    assert all(value >= 0 for _, value in fps + loss), (fps, loss)
    assert [value for _, value in fps] == [30.0, 30.0, 30.0], "no 0 fps for the poll that restarted"
    assert [e.kind for e in watch.collector.events] == ["track_added"], watch.collector.events
    assert watch.collector.spans == []
    state = watch.tracks["v1"]
    assert (state.packets_received, state.packets_lost, state.freeze_count) == (90, 2, 0)


def test_packets_lost_that_goes_down_is_not_counted_twice(watch, clock):
    """RFC 3550: duplicates make packetsLost go down; loss counts from the highest value seen."""
    lost = [0, 10, 8, 12]
    feed(watch, clock, [report(video(packetsReceived=100 * (n + 1), packetsLost=lo)) for n, lo in enumerate(lost)])
    assert watch.tracks["v1"].packets_lost == 12  # 10, then nothing, then 2: not 10 + 4
    assert watch.tracks["v1"].packets_received == 300


def _video_polls(decoded: list[int], received: list[int], **extra: list[float]) -> list[dict[str, Any]]:
    return [
        report(video(framesDecoded=d, packetsReceived=r, **{k: v[n] for k, v in extra.items()}))
        for n, (d, r) in enumerate(zip(decoded, received, strict=True))
    ]


def test_a_sender_that_stops_sending_freezes_the_picture_but_is_no_network_trouble(watch, clock):
    """A camera turned off, a static screen share: no packets, no frames. The picture froze (events, cause
    sender), but it is not a network problem: no span, no freeze seconds; when it comes back, Chromium counts
    the gap as a freeze, and that is not counted either."""
    decoded = [30 * n for n in range(4)] + [90] * 5 + [90 + 30 * n for n in range(1, 5)]
    received = [50 * n for n in range(4)] + [150] * 5 + [150 + 50 * n for n in range(1, 5)]
    freezes = [0] * 10 + [1] * 3
    seconds = [0.0] * 10 + [5.0] * 3
    start = clock.now
    feed(watch, clock, _video_polls(decoded, received, freezeCount=freezes, totalFreezesDuration=seconds))
    kinds = [(e.kind, round(e.at - start, 1)) for e in watch.collector.events]
    assert [k for k, _ in kinds] == ["track_added", "freeze_started", "freeze_ended"], kinds
    assert 3 <= kinds[1][1] <= 4 and 9 <= kinds[2][1] <= 10, kinds
    assert [e.data.get("cause") for e in watch.collector.events[1:]] == ["sender", "sender"]
    assert watch.collector.spans == []
    state = watch.tracks["v1"]
    assert (state.freeze_count, state.freeze_seconds) == (0, 0.0)


def test_a_stall_while_packets_still_arrive_is_a_freeze(watch, clock):
    decoded = [30 * n for n in range(4)] + [90] * 3 + [90 + 30 * n for n in range(1, 4)]
    received = [50 * n for n in range(10)]
    start = clock.now
    feed(watch, clock, _video_polls(decoded, received))
    kinds = [(e.kind, round(e.at - start, 1)) for e in watch.collector.events]
    assert [k for k, _ in kinds] == ["track_added", "freeze_started", "freeze_ended"], kinds
    [span] = watch.collector.spans
    assert span.kind == "network" and span.end - span.start == pytest.approx(3.0, abs=0.1), span
    assert watch.tracks["v1"].freeze_count == 1


def test_a_freeze_that_turns_into_silence_stops_counting(watch, clock):
    """Packets arrive undecoded for 2 polls, then stop altogether for 4: frozen for 2 s, then idle."""
    decoded = [30 * n for n in range(4)] + [90] * 6 + [90 + 30 * n for n in range(1, 3)]
    received = [50 * n for n in range(6)] + [250] * 4 + [250 + 50 * n for n in range(1, 3)]
    feed(watch, clock, _video_polls(decoded, received))
    kinds = [e.kind for e in watch.collector.events]
    assert kinds == ["track_added", "freeze_started", "freeze_ended", "freeze_started", "freeze_ended"], kinds
    causes = [e.data.get("cause") for e in watch.collector.events[1:]]
    assert causes == ["network", "network", "sender", "sender"], causes
    assert watch.tracks["v1"].freeze_seconds == pytest.approx(2.0, abs=0.1)


def test_loss_over_five_percent_is_an_event_and_a_network_span(watch, clock):
    received = lost = 0
    payloads = []
    for second in range(12):
        share = 0.2 if 4 <= second < 7 else 0.0
        received += 100
        lost += int(100 * share)
        payloads.append(report(video(framesDecoded=30 * second, packetsReceived=received, packetsLost=lost)))
    start = clock.now
    feed(watch, clock, payloads)
    kinds = [(e.kind, e.at - start) for e in watch.collector.events if e.kind.startswith("loss")]
    assert [k for k, _ in kinds] == ["loss_high", "loss_recovered"], kinds
    [span] = watch.collector.spans
    assert span.kind == "network" and 3 <= span.start - start <= 5 and 6 <= span.end - start <= 8, span
    assert 0.15 <= watch.tracks["v1"].worst_loss <= 0.2


def test_a_short_freeze_that_only_chromium_saw_is_counted(watch, clock):
    payloads = [report(video(framesDecoded=30 * s, freezeCount=0, totalFreezesDuration=0)) for s in range(5)]
    payloads += [report(video(framesDecoded=30 * s - 10, freezeCount=1, totalFreezesDuration=0.4)) for s in (5, 6)]
    feed(watch, clock, payloads)
    assert [e.kind for e in watch.collector.events] == ["track_added", "freeze_started", "freeze_ended"]
    assert watch.tracks["v1"].freeze_count == 1 and watch.tracks["v1"].freeze_seconds == pytest.approx(0.4)


async def test_an_unreported_track_is_removed_and_a_closed_connection_removes_its_tracks(watch, clock):
    feed(watch, clock, [report(video("a", framesDecoded=s), video("b", framesDecoded=s)) for s in range(3)])
    feed(watch, clock, [report(video("a", framesDecoded=3 + s)) for s in range(5)])
    watch.expire(clock.now)
    feed(watch, clock, [report(closed=["a"])])
    removed = [e.track for e in watch.collector.events if e.kind == "track_removed"]
    assert removed == ["b", "a"], watch.collector.events
    await watch.stop()
    assert [t["id"] for t in watch.collector.tracks] == ["a", "b"]
    assert set(watch.collector.tracks[0]) == {
        "id", "kind", "first_seen", "last_seen", "freeze_count", "freeze_seconds", "packets_lost",
        "packets_received", "worst_loss", "concealed_seconds",
    }  # fmt: skip


def test_audio_concealment_is_a_share_and_seconds(watch, clock):
    payloads = [
        {
            "connections": [
                {"inbound": [{"track": "a1", "kind": "audio", "concealedSamples": c, "totalSamplesReceived": t}]}
            ]
        }
        for c, t in [(0, 0), (0, 48000), (24000, 96000), (24000, 144000)]
    ]
    feed(watch, clock, payloads)
    shares = [value for _, value in watch.collector.series[("webrtc.concealed", "a1")].points()]
    assert shares == [0.0, 0.5, 0.0], shares
    assert watch.tracks["a1"].concealed_seconds == pytest.approx(0.5)


async def test_an_hour_of_stats_for_many_tracks_stays_bounded(watch, clock):
    """A synthetic long stream: 32 tracks polled every second for an hour, each frozen 3 s every minute."""
    tracks = [f"t{i}" for i in range(MAX_TRACKS)]
    frames = 0
    for second in range(3600):
        clock.now += 1
        frames += 0 if 10 <= second % 60 < 13 else 30
        inbound = [video(t, framesDecoded=frames, packetsReceived=50 * second, packetsLost=second // 10, jitter=0.01)
                   for t in tracks]  # fmt: skip
        watch.receive(report(*inbound))
    await watch.stop()
    collector = watch.collector
    assert len(collector.series) == 3 * MAX_TRACKS  # loss, jitter, fps
    for series in collector.series.values():
        assert len(series.sums) <= 2 * MAX_SERIES_POINTS, "downsampled into a bounded grid"
        assert series.points()[-1][0] > clock.now - 3600 / MAX_SERIES_POINTS * 2, "not cut off: the last hour is there"
    assert len(collector.events) <= 3000 and len(collector.spans) <= 1000
    assert collector.dropped["webrtc.freeze_started"] > 0, "60 freezes an hour on 32 tracks pass the caps: counted"
    assert all(t["freeze_count"] == 60 for t in collector.tracks), "the tracks' own figures are not capped"


def test_inbound_sample_figures_are_named_as_the_contract_wants():
    sample = parse_report(report(video(framesDecoded=1, framesReceived=3, freezeCount=2, totalFreezesDuration=0.5)))
    expected = InboundSample("v1", "video", frames_decoded=1, frames_received=3, freeze_count=2, freezes_seconds=0.5)
    assert sample == StatsReport((expected,))
