"""The recorder's timeline: building timeline.json on the media clock (no browser), and a real recording of a
page that misbehaves on a schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract.protocol import Progress
from contract.timeline import MAX_EVENTS, MAX_SERIES_POINTS, Timeline
from recorder.capture.pause import PauseSpan
from recorder.capture.progress import ProgressTimeline
from recorder.quality.audio import AudioReport
from recorder.quality.report import QualityReport
from recorder.quality.spans import Span
from recorder.timeline.build import build_timeline, write_timeline
from recorder.timeline.collector import TimelineCollector
from recorder.timeline.page_events import shown_url
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
    assert _near(events, "console", start + SCHEDULE["console"])["level"] == "error"
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
