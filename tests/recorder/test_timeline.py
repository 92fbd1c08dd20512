"""The recorder's timeline: building timeline.json on the media clock (no browser), and a real recording of a
page that misbehaves on a schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest

from contract.protocol import Progress
from contract.redact import redact_urls
from contract.timeline import MAX_EVENTS, MAX_SERIES_POINTS, Timeline
from recorder.capture.pause import PauseSpan
from recorder.capture.progress import ProgressTimeline
from recorder.quality.audio import AudioReport
from recorder.quality.report import QualityReport
from recorder.quality.spans import Span
from recorder.timeline.build import build_timeline, write_timeline
from recorder.timeline.clock import MediaClock
from recorder.timeline.collector import SOURCE_BUDGETS, TimelineCollector
from recorder.timeline.page_events import PageEventFeed, control_event, shown_url
from tests.support.timeline_page import BLOCKED_URL, SCHEDULE, TimelinePage
from tests.support.timeline_page import timeline_page as timeline_page  # the fixture


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- building, without a browser ---------------------------------------------------------------------


def test_events_land_on_the_media_clock_with_pauses_cut_out():
    clock = FakeClock(1000.0)
    collector = TimelineCollector(clock=clock)
    pause = PauseSpan(started_at=1020.0, ended_at=1030.0, media_at=10.0)
    for at, kind in [(1005.0, "before"), (1015.0, "first"), (1025.0, "paused"), (1040.0, "after")]:
        collector.event("page", "console", kind, level="error", at=at)
    timeline = build_timeline(
        collector, first_frame_at=1010.0, pauses=[pause], waiting=(1002.0, 1008.0), console_levels={"error": 4}
    )
    times = {e.message: e.t for e in timeline.events}
    assert times == {"before": -5.0, "first": 5.0, "paused": 10.0, "after": 20.0}
    paused = next(s for s in timeline.spans if s.kind == "paused")
    assert (paused.start, paused.end, paused.wall_seconds) == (10.0, 10.0, 10.0)
    waiting = next(s for s in timeline.spans if s.kind == "waiting")
    assert (waiting.start, waiting.end) == (-8.0, -2.0)
    assert timeline.summary.errors == 4 and timeline.summary.worst_inbound_loss is None


def test_after_a_pause_times_count_from_the_cut_the_file_has():
    """The capture wrote 0.4 s more than the wall clock says before the first cut (frames captured while FFmpeg
    stopped) and 0.2 s less before the second: times after each resume count from where the file has the cut."""
    first = PauseSpan(started_at=160.0, ended_at=170.0, media_at=60.4)
    second = PauseSpan(started_at=180.0, ended_at=190.0, media_at=70.2)
    clock = MediaClock(100.0, [second, first])
    assert clock.at(150.0) == pytest.approx(50.0)
    assert clock.at(165.0) == pytest.approx(60.4)  # inside the pause: on the cut
    assert clock.at(170.1) == pytest.approx(60.5)  # wall arithmetic would say 60.1, before the cut
    assert clock.at(179.9) == pytest.approx(70.2)  # 70.3 by the first cut, but the file cuts at 70.2
    assert clock.at(185.0) == pytest.approx(70.2)
    assert clock.at(195.0) == pytest.approx(75.2)  # chained over both cuts
    walls = [100.0 + n * 0.05 for n in range(2000)]
    times = [clock.at(w) for w in walls]
    assert times == sorted(times), "a later moment is never placed earlier in the file"
    still = MediaClock(100.0, [PauseSpan(started_at=160.0, ended_at=None, media_at=60.4)])
    assert still.at(500.0) == pytest.approx(60.4)  # paused until the end


def test_a_hostile_page_s_huge_urls_and_names_keep_the_timeline_small(tmp_path):
    """What a page can hand the feed: multi-megabyte paths in navigations, pushState and fetches, and errors
    with a huge name. The timeline stays small, and so does what the collector holds."""
    collector = TimelineCollector(clock=FakeClock(100.0))
    feed = PageEventFeed(collector)
    tracemalloc.start()
    try:
        held_before = tracemalloc.get_traced_memory()[0]
        for n in range(30):
            _attack(feed, n, 2_000_000)
        collector.event("page", "action", "x", blob={"deep": [[[["too deep"]]]], "n": float("nan"), "o": object()})
        held = tracemalloc.get_traced_memory()[0] - held_before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, f"the collector and the feed hold {held} bytes after 120 events"
    assert len(collector.events) == 121
    timeline = build_timeline(collector, first_frame_at=100.0)
    path = write_timeline(tmp_path / "timeline.json", timeline)
    text = path.read_text()
    assert len(text) < 100_000, f"{len(text)} bytes"
    assert "SECRET" not in text
    for event in timeline.events:
        assert len(json.dumps(event.model_dump(mode="json"))) < 2_000, event
    [action] = [e for e in timeline.events if e.kind == "action"]
    assert action.data == {"blob": {"deep": [[]]}}  # too deep, NaN and objects are left out
    Timeline.model_validate_json(text)


def _attack(feed: PageEventFeed, n: int, huge: int) -> None:
    """One round of what a hostile page can do: its strings are gone once this returns, unless kept."""
    path = f"/{n}" + "a" * huge + "?pwd=SECRET#SECRET"
    feed._on_navigated(SimpleNamespace(parent_frame=None, url="https://page.example" + path))
    request = SimpleNamespace(url="https://x.invalid" + path, resource_type="fetch", failure="net::ERR_FAILED")
    feed._on_request_failed(request)
    feed._on_page_error(SimpleNamespace(name="E" * huge, message="m" * huge))
    where = {"url": "https://page.example" + path, "lineNumber": 1}
    feed._on_console(SimpleNamespace(text="c" * huge, type="error", location=where))


def test_the_page_cannot_crowd_out_the_recorder_s_own_events():
    clock = FakeClock(100.0)
    collector = TimelineCollector(clock=clock)
    kinds = ["console", "exception", "request_failed", "request_blocked", "navigation", "reload", "signal", "dialog"]
    for n in range(10_000):  # before the first frame
        collector.event("page", kinds[n % len(kinds)], f"page event {n}", at=100.0 + n * 0.001)
    for n in range(100):
        collector.event("capture", "behind", "behind", at=111.0 + n)
    for kind, at in [("recording", 111.0), ("pause", 120.0), ("resume", 130.0), ("stop", 140.0)]:
        control_event(collector, kind, kind, at=at)
    timeline = build_timeline(
        collector, first_frame_at=111.0, pauses=[PauseSpan(started_at=120.0, ended_at=130.0, media_at=9.0)]
    )
    control = [e.kind for e in timeline.events if e.source == "control"]
    assert control == ["recording", "pause", "resume", "stop"]
    assert sum(e.source == "capture" for e in timeline.events) == 100
    assert sum(e.source == "page" for e in timeline.events) == SOURCE_BUDGETS["page"]
    assert sum(timeline.dropped.values()) == 10_000 - SOURCE_BUDGETS["page"]
    assert len(timeline.events) <= MAX_EVENTS


def test_the_meeting_url_s_token_never_reaches_the_timeline(tmp_path):
    """A stop message quoting the meeting's URL (as recorder errors do) shows it without its query."""
    collector = TimelineCollector(clock=FakeClock(100.0))
    url = "https://user:pw@meet.example/j/123?pwd=SECRET#SECRET"
    control_event(collector, "stop", f"stopped: {url} answered HTTP 404 Not Found", level="error", reason="error")
    collector.event("page", "action", "x", failed=f"could not open '{url}'", nested={"why": [url]})
    text = write_timeline(tmp_path / "timeline.json", build_timeline(collector, first_frame_at=None)).read_text()
    assert "SECRET" not in text and "pw@" not in text
    assert "https://meet.example/j/123?" in text
    assert redact_urls(f"see {url}, then wss://h/x?t=1") == "see https://meet.example/j/123?…, then wss://h/x?…"


def test_analyzer_spans_and_the_summary():
    collector = TimelineCollector(clock=FakeClock(100.0))
    collector.event("page", "exception", "boom", level="error", at=103.0)
    collector.event("page", "request_blocked", "blocked", level="error", at=104.0)
    collector.tracks = [
        {
            "id": "v1",
            "kind": "video",
            "first_seen": 101.0 + 1e9,
            "last_seen": 1e9 + 110.0,
            "freeze_seconds": 2.5,
            "worst_loss": 0.08,
        },
        {"id": "a1", "kind": "audio", "first_seen": 1.0, "last_seen": 9.0, "worst_loss": 0.01},
    ]
    video = {
        "codec": "h264",
        "width": 640,
        "height": 360,
        "frames": 300,
        "fps": 30.0,
        "distinct_fps": 30.0,
        "gap_count": 1,
        "longest_gap": 0.3,
        "gaps": [Span(at=1.0, length=0.3)],
        "frozen_total": 2.0,
        "frozen": [Span(at=4.0, length=2.0)],
        "black_total": 0.0,
        "black": [],
    }
    quality = _quality(video=video, silent=[Span(at=6.0, length=1.5)])
    timeline = build_timeline(collector, first_frame_at=100.0, quality=quality)
    kinds = sorted((s.kind, s.start, s.end) for s in timeline.spans)
    assert kinds == [("frozen", 4.0, 6.0), ("gap", 1.0, 1.3), ("silent", 6.0, 7.5)]
    assert timeline.duration == 10.0
    summary = timeline.summary
    assert summary.errors == 2 and summary.problems == 5
    assert summary.worst_inbound_loss == 0.08 and summary.freeze_seconds == {"v1": 2.5}
    track = next(t for t in timeline.tracks if t.id == "v1")
    assert track.first_seen == pytest.approx(1e9 + 1.0)  # a wall time, placed on the media clock


def _quality(*, video: dict | None, silent: list[Span]) -> QualityReport:
    audio = AudioReport.model_construct(silent=silent, silent_total=sum(s.length for s in silent))
    return QualityReport.model_construct(
        path="rec.mp4",
        format="mp4",
        size=1,
        bit_rate=1,
        duration=10.0,
        video=type("V", (), video)() if video else None,
        audio=audio,
        sync=None,
    )


def test_series_are_rebinned_onto_the_media_grid_across_a_pause():
    clock = FakeClock(0.0)
    collector = TimelineCollector(clock=clock)
    for second in range(120):
        if not 40 <= second < 60:  # paused: nothing sampled
            collector.sample("capture.fps", 30.0 if second < 40 else 15.0, unit="fps", at=second + 0.25)
    pause = PauseSpan(started_at=40.0, ended_at=60.0, media_at=40.0)
    timeline = build_timeline(collector, first_frame_at=0.0, pauses=[pause])
    (fps,) = timeline.series
    assert fps.step == 1.0 and fps.t0 == 0.0
    assert len(fps.values) == 100  # 120 s on the wall, 100 in the file
    assert fps.values[:40] == [30.0] * 40 and fps.values[40:] == [15.0] * 60


def test_a_noisy_four_hour_recording_stays_under_its_bound(tmp_path):
    """32 tracks sampled every second, a page logging thousands of errors, three pauses: under 4 MB, and every
    series still covers the whole recording (downsampled, not cut off)."""
    hours = 4
    end = hours * 3600.0
    clock = FakeClock(0.0)
    collector = TimelineCollector(clock=clock)
    long_text = "x" * 1000
    logged = 0  # what the page feed counts, kept or over the cap
    for second in range(int(end)):
        at = float(second)
        collector.sample("capture.fps", 30.0, unit="fps", at=at)
        if second % 3 == 0:
            collector.event("page", "console", f"error {second} {long_text}", level="error", at=at)
            logged += 1
        for track in range(32):
            collector.sample("webrtc.loss", 0.01 * (track % 5), unit="ratio", track=f"t{track}", at=at)
    collector.tracks = [{"id": f"t{n}", "kind": "video", "first_seen": 0.0, "last_seen": end} for n in range(40)]
    pauses = [PauseSpan(started_at=s, ended_at=s + 60.0, media_at=s - 60.0 * n) for n, s in enumerate((1e3, 5e3, 9e3))]
    timeline = build_timeline(
        collector, first_frame_at=0.0, pauses=pauses, duration=end - 180.0, console_levels={"error": logged}
    )
    path = write_timeline(tmp_path / "timeline.json", timeline)
    size = path.stat().st_size
    assert size < hours * 1024 * 1024, f"{size} bytes for {hours} h"
    assert len(timeline.events) <= MAX_EVENTS and timeline.dropped["page.console"] > 4000
    assert timeline.summary.errors == int(end) // 3  # counted, kept or not
    assert len(timeline.tracks) == 32 and timeline.dropped["webrtc.track"] == 8
    assert len(timeline.series) == 33
    for series in timeline.series:
        assert len(series.values) <= MAX_SERIES_POINTS
        assert series.t0 <= 0.0 and series.t0 + series.step * len(series.values) >= end - 180.0 - series.step
        assert series.values[-1] is not None
    Timeline.model_validate_json(path.read_text())  # what the orchestrator reads back


def test_dropped_and_repeated_frames_are_events_when_the_counts_grow():
    collector = TimelineCollector(clock=FakeClock(0.0))
    feed = ProgressTimeline(collector)
    for n in range(20):  # a progress block every 0.5 s; 2 frames repeated per block from 2 s on
        feed.note(Progress(fps=30.0, speed=1.0, duplicated=max(0, 2 * (n - 4))), now=n * 0.5)
    feed.note(Progress(fps=30.0, speed=0.9, behind=True, duplicated=30), now=10.0)
    feed.flush()
    repeated = [e for e in collector.events if e.kind == "repeated_frames"]
    assert sum(e.data["count"] for e in repeated) == 30  # every repeated frame, in a few events
    assert 2 <= len(repeated) <= 5
    assert [e.kind for e in collector.events].count("behind") == 1
    assert not [e for e in collector.events if e.kind == "dropped_frames"]


def test_urls_are_shown_without_credentials_or_query():
    assert shown_url("https://user:secret@example.com:8443/a/b?token=1#x") == "https://example.com:8443/a/b?…"
    assert shown_url("data:text/html,<b>secret</b>") == "data:…"
    assert "do-not-show-me" not in shown_url(BLOCKED_URL)


# -- a real recording --------------------------------------------------------------------------------


def _near(events: list[dict], kind: str, expected: float, margin: float = 1.0) -> dict:
    matching = [e for e in events if e["kind"] == kind]
    assert matching, f"no {kind} event in {[e['kind'] for e in events]}"
    best = min(matching, key=lambda e: abs(e["t"] - expected))
    assert abs(best["t"] - expected) <= margin, f"{kind} at {best['t']}, expected {expected:.2f} ± {margin}"
    return best


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
def test_a_recorded_page_s_errors_requests_and_freeze_are_on_the_timeline(tmp_path, timeline_page: TimelinePage):
    out = tmp_path / "out" / "rec.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "recorder.cli", "record", timeline_page.url, "--duration", "11", "--width", "640",
         "--height", "360", "--fps", "15", "--wait-for", "signal", "--out", str(out), "--records-dir",
         str(tmp_path / "records")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "URL_ALLOWLIST": "127.0.0.1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    path = out.with_name("rec.timeline.json")
    text = path.read_text()
    timeline = json.loads(text)
    Timeline.model_validate(timeline)
    events = timeline["events"]
    start = _near(events, "signal", 0.0, margin=10.0)["t"]  # START_RECORDING, before the first frame
    assert start < 0.5
    _near(events, "recording", 0.0, margin=0.01)
    # Two errors and a warning, logged at one instant: which of them lies nearest the schedule is chance.
    _near(events, "console", start + SCHEDULE["console"])
    logged = [e["level"] for e in events if e["kind"] == "console" and abs(e["t"] - start - SCHEDULE["console"]) <= 1]
    assert sorted(logged) == ["error", "error", "warning"], logged
    assert sum(e["kind"] == "console" and e["level"] == "warning" for e in events) == 1
    # Chromium's own "Failed to load resource" lines are the request events already: not counted twice.
    assert sum(e["kind"] == "console" and e["level"] == "error" for e in events) == 2
    assert "timeline-test: uncaught" in _near(events, "exception", start + SCHEDULE["exception"])["message"]
    failed = [e for e in events if e["kind"] == "request_failed"]
    assert {e["data"].get("status") for e in failed} >= {500, None}, failed
    for event in failed:
        _near([event], "request_failed", start + SCHEDULE["request_failed"])
    blocked = _near(events, "request_blocked", start + SCHEDULE["request_blocked"])
    assert blocked["data"]["address_class"] == "private", blocked
    assert "do-not-show-me" not in text, "a URL's query may hold a secret: it is never shown"
    navigation = _near(events, "navigation", start + SCHEDULE["navigation"])
    assert navigation["data"]["url"].endswith("/after")
    frozen = [s for s in timeline["spans"] if s["kind"] == "frozen" and s["end"] - s["start"] >= 1.5]
    assert frozen, timeline["spans"]
    assert abs(frozen[0]["start"] - (start + SCHEDULE["freeze"])) <= 1.0, (frozen, start)
    assert abs(frozen[0]["end"] - (start + SCHEDULE["thaw"])) <= 1.0, (frozen, start)
    assert [e["data"]["reason"] for e in events if e["kind"] == "stop"] == ["duration"]
    fps = next(s for s in timeline["series"] if s["name"] == "capture.fps")
    assert any(v for v in fps["values"])
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["timeline"] == timeline["summary"]
    assert metadata["timeline"]["errors"] == 2 + 1 + len(failed) + 1  # console errors, exception, requests
    assert metadata["timeline"]["problems"] >= metadata["timeline"]["errors"] + 1


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
def test_no_timeline_when_it_is_turned_off(tmp_path, timeline_page: TimelinePage):
    out = tmp_path / "rec.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "recorder.cli", "record", timeline_page.url, "--duration", "2", "--width", "320",
         "--height", "180", "--wait-for", "signal", "--out", str(out), "--records-dir", str(tmp_path / "records")],
        capture_output=True, text=True, timeout=90, env={**os.environ, "RECORDER_TIMELINE": "false"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.is_file() and not out.with_name("rec.timeline.json").exists()
    assert json.loads(out.with_suffix(".json").read_text())["timeline"] is None


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
def test_a_failed_recording_s_timeline_never_shows_the_meeting_token(tmp_path, test_page):
    """The page answers 404; the recorder's error quotes its URL; the timeline shows it without the query."""
    out = tmp_path / "out" / "rec.mp4"
    url = test_page.url("/status/404?pwd=SECRET&tk=SECRET#SECRET")
    done = subprocess.run(
        [sys.executable, "-m", "recorder.cli", "record", url, "--duration", "3", "--width", "320", "--height",
         "180", "--out", str(out), "--records-dir", str(tmp_path / "records")],
        capture_output=True, text=True, timeout=90, env={**os.environ, "URL_ALLOWLIST": "127.0.0.1"},
    )  # fmt: skip
    assert done.returncode != 0, "a 404 page is not recorded"
    paths = list(tmp_path.rglob("*timeline.json"))
    assert paths, done.stderr[-3000:]
    for path in paths:
        text = path.read_text()
        [stop] = [e for e in json.loads(text)["events"] if e["kind"] == "stop"]
        assert stop["level"] == "error" and "404" in stop["message"], stop
        assert "/status/404?" in stop["message"], stop  # the URL is there, in its shown form
        assert "SECRET" not in text, path


def test_finished_without_a_timeline_writes_rec_json_all_the_same(tmp_path: Path, monkeypatch):
    """A timeline that cannot be built is logged; rec.json is written without it."""
    from recorder.finalize import finished as finished_module
    from recorder.finalize.finished import Finished

    def broken(*args: object, **kwargs: object) -> Timeline:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(finished_module, "build_timeline", broken)
    finished = _finished(tmp_path)
    finished.complete(analyze=False)
    assert finished.sidecar is not None and finished.sidecar.is_file()
    assert finished.timeline is None and json.loads(finished.sidecar.read_text())["timeline"] is None
    monkeypatch.undo()
    ok = _finished(tmp_path / "ok")
    ok.complete(analyze=False)
    assert ok.timeline is not None and json.loads(ok.sidecar.read_text())["timeline"]["errors"] == 0
    assert isinstance(ok, Finished)


def _finished(root: Path):
    from contract.spec import RecordingSpec
    from recorder.attempt import AttemptFolder
    from recorder.finalize.finished import Finished
    from recorder.finalize.sidecar import Sidecar
    from recorder.timings import Timings

    folder = AttemptFolder.under(root, "rec").create()
    spec = RecordingSpec.model_validate({"url": "https://example.com/"})
    timings = Timings(started=100.0, first_frame=101.0, stopped=110.0)
    metadata = Sidecar(
        recording_id="rec", url=spec.url, spec=spec, timings=timings, stop_reason="duration",
        capture=Progress(), av_offset_correction_ms=0.0, versions={},
    )  # fmt: skip
    return Finished(
        folder=folder, mp4=None, metadata=metadata, error=None, stop_reason="duration", progress=Progress(),
        blocked=None, collected=TimelineCollector(clock=FakeClock(100.0)),
    )  # fmt: skip


def test_the_summary_judges_loss_over_the_whole_recording_not_its_worst_second():
    from contract.timeline import Track
    from recorder.timeline.build import whole_recording_loss

    one_bad_second = Track(id="v", kind="video", first_seen=0, last_seen=3600, packets_lost=60,
                           packets_received=180_000, worst_loss=0.3)  # fmt: skip
    lossy = Track(id="a", kind="audio", first_seen=0, last_seen=60, packets_lost=300, packets_received=2700)
    too_few = Track(id="x", kind="audio", first_seen=0, last_seen=1, packets_lost=40, packets_received=10)
    assert whole_recording_loss([]) is None
    assert whole_recording_loss([one_bad_second]) == pytest.approx(0.0003, abs=1e-4)
    assert whole_recording_loss([one_bad_second, lossy, too_few]) == pytest.approx(0.1)
