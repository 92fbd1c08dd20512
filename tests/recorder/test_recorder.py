"""The recorder engine on real Xvfb, PulseAudio, Chromium and FFmpeg, recording the local test page."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.errors import ErrorCode
from contract.spec import RecordingSpec, WaitFor
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.finalize import Finished
from recorder.finalize.remux import top_level_boxes
from recorder.pipeline import Recorder
from recorder.quality import analyze_file, tone_level
from tests.support.leaks import leftovers, watched_processes
from tests.support.net import free_port

pytestmark = [pytest.mark.media, pytest.mark.usefixtures("no_leaks")]


@pytest.fixture
def settings(tmp_path: Path) -> RecorderSettings:
    return RecorderSettings(records_dir=tmp_path / "records")


def folder(settings: RecorderSettings, name: str) -> AttemptFolder:
    return AttemptFolder.under(settings.records_dir, name)


async def record(settings: RecorderSettings, spec: RecordingSpec, name: str = "rec") -> Finished:
    async with Recorder(settings, width=spec.width, height=spec.height) as recorder:
        return await recorder.record(spec, folder=folder(settings, name))


async def test_ten_second_recording_is_a_faithful_mp4(settings, test_page):
    spec = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=10)
    result = await record(settings, spec)

    assert result.error is None, result.error
    assert result.mp4 is not None and result.mp4.name == "rec.mp4"
    assert not result.folder.capture(live=False).exists(), "the capture file is removed once the MP4 is made"
    boxes = top_level_boxes(result.mp4)
    assert boxes.index("moov") < boxes.index("mdat"), boxes

    report = analyze_file(result.mp4, expected_fps=30)
    assert report.video is not None and report.audio is not None
    assert report.video.codec == "h264" and report.audio.codec == "aac"
    assert (report.video.width, report.video.height) == (1280, 720)
    assert report.audio.sample_rate == 48000 and report.audio.channels == 2
    assert report.duration is not None and abs(report.duration - 10) <= 0.5
    assert report.video.delivered_fps >= 27
    assert tone_level(result.mp4, 1000) > 10 * tone_level(result.mp4, 440)
    assert report.sync is not None and report.sync.markers >= 6, report.sync
    assert abs(report.sync.mean_ms) <= 100, report.sync

    sidecar = result.sidecar.read_text() if result.sidecar else ""
    for key in ('"url"', '"timings"', '"quality"', '"capture"', '"versions"', '"codec": "h264"'):
        assert key in sidecar


async def test_two_recordings_at_once_each_hear_only_their_own_page(settings, test_page):
    one = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=6)
    two = RecordingSpec(url=test_page.url("/grid?tone=440"), duration=6)
    first, second = await asyncio.gather(record(settings, one, "one"), record(settings, two, "two"))

    assert first.ok and second.ok, (first.error, second.error)
    assert first.mp4 is not None and second.mp4 is not None
    high_in_first, low_in_first = tone_level(first.mp4, 1000), tone_level(first.mp4, 440)
    high_in_second, low_in_second = tone_level(second.mp4, 1000), tone_level(second.mp4, 440)
    assert high_in_first > 10 * low_in_first, (high_in_first, low_in_first)
    assert low_in_second > 10 * high_in_second, (low_in_second, high_in_second)


async def test_readiness_by_selector_and_stop_by_page_signal(settings, test_page):
    spec = RecordingSpec(
        url=test_page.url("/grid?ready=selector&delay=1.5&end=4"),
        duration=30,
        wait_for=WaitFor(kind="selector", selector="#ready", timeout=15),
    )
    started = time.monotonic()
    result = await record(settings, spec)
    assert result.ok, result.error
    assert result.stop_reason == "signal"
    assert time.monotonic() - started < 25, "END_RECORDING stopped the recording long before its duration"
    assert result.timings and result.timings.ready
    assert result.timings.ready - result.timings.started >= 1.4, "recording began only once #ready was visible"


async def test_readiness_by_start_signal(settings, test_page):
    spec = RecordingSpec(
        url=test_page.url("/grid?signal=start&delay=1.5"),
        duration=3,
        wait_for=WaitFor(kind="signal", timeout=15),
    )
    result = await record(settings, spec)
    assert result.ok, result.error
    assert result.timings and result.timings.ready
    assert result.timings.ready - result.timings.started >= 1.4


async def test_readiness_timeout_is_a_clear_error(settings, test_page):
    # /slow reaches DOMContentLoaded at once, but its `load` waits on an image held for a minute.
    spec = RecordingSpec(url=test_page.url("/slow"), duration=5, wait_for=WaitFor(kind="load", timeout=2))
    result = await record(settings, spec)
    assert result.error is not None and result.error.code == ErrorCode.READINESS_TIMEOUT
    assert "did not finish loading within 2 s" in result.error.message
    assert result.mp4 is None


async def test_the_default_readiness_does_not_wait_for_every_subresource(settings, test_page):
    spec = RecordingSpec(url=test_page.url("/slow"), duration=2)
    started = time.monotonic()
    result = await record(settings, spec)
    assert result.ok, result.error
    assert result.timings.ready is not None and result.timings.ready - result.timings.started < 20
    assert time.monotonic() - started < 40


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_cli_record_with_s3_settings_leaves_rec_mp4_and_rec_json_in_the_bucket(tmp_path, test_page, s3):
    """`recorder record` stores through the same destination as a worker: S3_BUCKET set means the bucket."""
    env = {"S3_BUCKET": s3.bucket, "S3_ENDPOINT_URL": s3.endpoint, "S3_PREFIX": "cli"}
    done = run_cli("record", test_page.url("/grid"), "--duration", "3", "--records-dir", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    location = done.stdout.strip().splitlines()[-1]
    assert location.startswith(f"s3://{s3.bucket}/cli/") and location.endswith("/attempt-1/rec.mp4"), location
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="cli/").get("Contents", [])
    keys = {obj["Key"].rsplit("/", 1)[-1]: obj for obj in listed}
    assert set(keys) == {"rec.mp4", "rec.json", "timeline.json"}, sorted(keys)
    media = s3.client.get_object(Bucket=s3.bucket, Key=location.removeprefix(f"s3://{s3.bucket}/"))["Body"].read()
    assert media[4:8] == b"ftyp" and len(media) > 10_000
    metadata = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=keys["rec.json"]["Key"])["Body"].read())
    assert metadata["file"] == "rec.mp4" and metadata["quality"] is not None
    assert not list(tmp_path.rglob("rec.mp4")), "without KEEP_LOCAL the confirmed upload leaves no local copy"


@pytest.mark.parametrize(
    ("path", "extra", "expected"),
    [
        (None, [], "could not open"),
        ("/status/404", [], "HTTP 404"),
        ("/slow", ["--wait-for", "load", "--wait-timeout", "2"], "did not finish loading within 2 s"),
    ],
    ids=["unreachable", "http-404", "readiness-timeout"],
)
def test_cli_failure_prints_one_line_why(tmp_path, test_page, path, extra, expected):
    url = test_page.url(path) if path else f"http://127.0.0.1:{free_port()}/"
    done = run_cli("record", url, "--duration", "5", "--records-dir", str(tmp_path), *extra)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("recording failed:")]
    assert len(lines) == 1 and expected in lines[0], done.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["ftp://example.com/"], "ftp://example.com/"),
        (["http://example.com/", "--duration", "0"], "--duration"),
        (["http://example.com/", "--duration", "-5"], "--duration"),
        (["http://example.com/", "--width", "100000"], "--width"),
        (["http://example.com/", "--fps", "0"], "--fps"),
        (["http://example.com/", "--fps", "61"], "--fps"),
        (["http://example.com/", "--wait-for", "sometime"], "sometime"),
    ],
)
def test_cli_usage_errors_name_the_bad_value(tmp_path, args, named):
    done = run_cli("record", *args, "--records-dir", str(tmp_path), timeout=30)
    assert done.returncode == 2
    assert named in done.stderr, done.stderr
    assert not any(tmp_path.iterdir()), "a usage error records nothing"


@pytest.mark.parametrize(
    ("script", "extra", "named"),
    [
        ('[{"do": "clik", "selector": "#join"}]', [], "actions[0]"),
        ('[{"do": "click", "selector": "  "}]', [], "actions[0].selector"),
        ('[{"do": "click", "selector": "#join", "timeout": 999}]', [], "actions[0].timeout"),
        (json.dumps([{"do": "wait", "seconds": 1}] * 51), [], "--actions: actions"),
        ("{not json", [], "not JSON"),
        ("[]", ["--stop-when-silence", "0"], "--stop-when-silence"),
        ("[]", ["--from", "commit", "--wait-for", "signal"], "--from 'commit': 'commit' captures while the page loads"),
        ("[]", ["--from", "commit", "--stop-when-silence", "3"], "--stop-when"),
        ("[]", ["--audio-only", "--stop-when-frozen", "3"], "--audio-only"),
        ("[]", ["--wait-for", "load", "--wait-timeout", "9999"], "--wait-timeout 9999"),
        ('[{"do": "evaluate", "script": "1"}]', [], "actions[0]: an 'evaluate' step"),
        ('[{"do": "press", "key": "Enter", "frame": ["iframe"]}]', [], "actions[0].frame"),
    ],
    ids=[
        "unknown-verb",
        "empty-selector",
        "timeout-out-of-range",
        "too-many-steps",
        "not-json",
        "silence",
        "from-and-waiting-room",
        "from-and-silence",
        "audio-only-and-frozen",
        "loading-too-long",
        "evaluate-not-allowed",
        "press-in-frame",
    ],
)
def test_cli_bad_join_scripts_and_stop_conditions_exit_2_naming_the_field(tmp_path, script, extra, named):
    path = tmp_path / "join.json"
    path.write_text(script)
    records = tmp_path / "records"
    done = run_cli("record", "http://example.com/", "--actions", str(path), *extra, "--records-dir", str(records))
    assert done.returncode == 2, done.stderr
    assert named in done.stderr, done.stderr
    assert not records.exists(), "a usage error records nothing"


def test_kill_9_mid_recording_leaves_a_playable_file(tmp_path, test_page):
    before = watched_processes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recorder.cli", "record", test_page.url("/grid"), "--duration", "60",
         "--records-dir", str(tmp_path), "--id", "killed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    capture = AttemptFolder.under(tmp_path, "killed").capture(live=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not capture.exists() or capture.stat().st_size < 200_000):
        time.sleep(0.2)
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)

    assert not leftovers(before), "children die with the recorder"
    assert capture.exists(), "the crash-safe capture file is on disk"
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(capture), "-f", "null", "-"], capture_output=True, text=True
    )
    assert decoded.returncode == 0, decoded.stderr[-500:]
    report = analyze_file(capture)
    assert report.video is not None and report.video.frames >= 60
    assert report.video.duration is not None and report.video.duration >= 3


async def test_a_recorder_loads_no_gl_into_its_screen_and_keeps_no_browser_pages_of_its_own(settings, test_page):
    """What docs/benchmarks.md measured as 100 MB a recording: Mesa in Xvfb, and the omnibox's dropdowns
    preloaded in a renderer of their own. A Chromium that renames the feature brings the renderer back."""
    spec = RecordingSpec(url=test_page.url("/grid"), duration=6)
    async with Recorder(settings) as recorder:
        task = asyncio.ensure_future(recorder.record(spec, folder=folder(settings, "lean")))
        await asyncio.sleep(4)
        assert recorder.display is not None and recorder.display.pid is not None
        assert recorder.browser is not None
        mapped = await asyncio.to_thread(Path(f"/proc/{recorder.display.pid}/maps").read_text)
        kinds = await asyncio.to_thread(recorder.browser.processes)
        renderers = [pid for pid, kind in kinds.items() if kind == "renderer"]
        result = await task
    assert result.ok, result.error
    # GLX's software driver and its LLVM (Xvfb links libGL itself whether or not GLX runs).
    mesa = sorted({line.split()[-1] for line in mapped.splitlines() if "/dri/" in line or "libLLVM" in line})
    assert not mesa, f"Xvfb loaded Mesa: {mesa}"
    # The recorded page's renderer and Chromium's one spare for the next navigation; with the omnibox's
    # pages preloaded there is a third.
    assert 1 <= len(renderers) <= 2, renderers


async def _crash_renderers(recorder: Recorder) -> None:
    assert recorder.browser is not None
    renderers = [pid for pid, kind in recorder.browser.processes().items() if kind == "renderer"]
    assert renderers, "the browser has renderer processes"
    for pid in renderers:
        os.kill(pid, signal.SIGKILL)


async def test_renderer_crash_is_survived_once(settings, test_page):
    spec = RecordingSpec(url=test_page.url("/grid"), duration=8)
    async with Recorder(settings) as recorder:
        task = asyncio.ensure_future(recorder.record(spec, folder=folder(settings, "crash")))
        await asyncio.sleep(4)
        await _crash_renderers(recorder)
        result = await task
    assert result.ok, result.error
    assert result.stop_reason == "duration"
    report = analyze_file(result.mp4)
    assert report.duration is not None and abs(report.duration - 8) <= 1.0


async def test_second_renderer_crash_fails_with_reason_and_keeps_the_file(settings, test_page):
    spec = RecordingSpec(url=test_page.url("/grid"), duration=30)
    async with Recorder(settings) as recorder:
        task = asyncio.ensure_future(recorder.record(spec, folder=folder(settings, "crash2")))
        await asyncio.sleep(3)
        await _crash_renderers(recorder)
        await asyncio.sleep(4)
        await _crash_renderers(recorder)
        result = await asyncio.wait_for(task, 30)
    assert result.error is not None and result.error.code == ErrorCode.BROWSER_CRASHED
    assert "twice" in result.error.message
    assert result.mp4 is not None and analyze_file(result.mp4).duration >= 5


async def test_warm_recorder_gives_each_recording_its_own_sink(settings, test_page):
    async with Recorder(settings) as recorder:
        assert recorder.audio is not None
        spec = RecordingSpec(url=test_page.url("/grid"), duration=2)
        first = await recorder.record(spec, folder=folder(settings, "s1"))
        between = await recorder.audio.sink_names()
        second = await recorder.record(spec, folder=folder(settings, "s2"))
        after = await recorder.audio.sink_names()
    assert first.ok and second.ok, (first.error, second.error)
    assert between == ["rec_2"], f"rec_1 is removed, only the next recording's warm sink exists: {between}"
    assert after == ["rec_3"], after


async def test_no_cookie_or_storage_crosses_between_pages_of_a_warm_browser(settings, test_page):
    async with Recorder(settings) as recorder:
        assert recorder.browser is not None
        setter = await recorder.browser.open_ready(RecordingSpec(url=test_page.url("/state/set")))
        await setter.page.wait_for_function("localStorage.getItem('rf_state') === 'set'")
        await setter.close()
        reporter = await recorder.browser.open_ready(RecordingSpec(url=test_page.url("/state/report")))
        await reporter.page.wait_for_function("document.title.startsWith('STATE cookies')")
        title = await reporter.page.title()
        await reporter.close()
    assert title.startswith("STATE cookies="), title
    assert "rf_" not in title and "set" not in title, f"state crossed into the next page: {title}"


async def test_live_mode_writes_playable_segments_beside_the_crash_safe_capture(settings, test_page):
    _calibrated(settings, mean_ms=0.0, on_time_ms=250.0)  # a correction by the presentation, were it not live
    spec = RecordingSpec(url=test_page.url("/grid"), duration=7, live_upload=True)
    result = await record(settings, spec)
    assert result.ok, result.error
    assert result.sidecar is not None
    sidecar = json.loads(result.sidecar.read_text())
    assert (sidecar["presentation_shift_ms"], sidecar["av_offset_correction_ms"]) == (0.0, 0.0), "final as written"
    live = result.folder.live_dir
    playlist = (live / "index.m3u8").read_text()
    segments = sorted(live.glob("seg_*.ts"))
    assert len(segments) >= 3 and all(s.name in playlist for s in segments)
    assert "#EXT-X-ENDLIST" in playlist, "a graceful stop closes the playlist"
    first = analyze_file(segments[0])
    assert first.video is not None and first.audio is not None
    assert first.video.duration is not None and abs(first.video.duration - 2.0) < 0.2
    # rec.mp4 is the fragmented capture itself: `moov` first, appended to, never rewritten.
    boxes = top_level_boxes(result.mp4)
    assert boxes[:2] == ["ftyp", "moov"] and "moof" in boxes, boxes[:6]
    report = analyze_file(result.mp4)
    assert report.duration is not None and report.duration >= 6.5
    assert report.sync is not None and report.sync.markers >= 4 and abs(report.sync.mean_ms) <= 100, report.sync


async def test_calibrate_measures_and_stores_the_offset(tmp_path):
    from recorder.calibrate import run_calibration
    from recorder.capture import calibration

    settings = RecorderSettings(records_dir=tmp_path)
    assert calibration.current(settings) is None
    assert await run_calibration(settings, duration=6, runs=1) == 0
    saved = calibration.current(settings)
    assert saved is not None and saved.samples >= 4
    assert abs(saved.av_offset_ms) < 200, saved
    assert calibration.av_offset_ms(settings) == saved.av_offset_ms


def _calibrated(settings: RecorderSettings, *, mean_ms: float, on_time_ms: float) -> None:
    """A stored calibration for this machine's key, as a warm-up would leave it."""
    from recorder.capture import calibration

    calibration.save(
        calibration.calibration_path(settings),
        mean_ms,
        samples=30,
        fps=30,
        key=calibration.calibration_key(settings),
        on_time_offset_ms=on_time_ms,
    )


async def test_a_page_playing_video_is_corrected_by_its_own_presentation_in_the_file(settings, test_page):
    # On time, the page would need 250 ms more than the mean: the file's sound must come out that much
    # earlier, less the load's lateness, which no capture's noise (tens of ms) can pass for.
    _calibrated(settings, mean_ms=0.0, on_time_ms=250.0)
    result = await record(settings, RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=6))

    assert result.error is None, result.error
    assert result.sidecar is not None and result.mp4 is not None
    sidecar = json.loads(result.sidecar.read_text())
    lateness = sidecar["presentation_lateness_ms"]
    assert isinstance(lateness, float) and abs(lateness) <= 50, sidecar
    assert sidecar["av_offset_correction_ms"] == pytest.approx(250.0 - lateness, abs=0.02)
    report = analyze_file(result.mp4)
    assert report.sync is not None and report.sync.markers >= 4, report.sync
    # Moved back by what was applied, the markers sit where an uncorrected file has them: a few tens of ms
    # after the flashes (more for a file that lost pictures), never the 250 ms either way a missing or
    # reversed move would leave.
    uncorrected = report.sync.mean_ms + sidecar["av_offset_correction_ms"]
    assert -60 < uncorrected < 110, (uncorrected, report.sync)
    assert report.duration is not None and abs(report.duration - 6) <= 0.5


# The page rewrites the frames' presentation times and tries to replace the probe's reader with one that
# reports 45 ms; it fails loudly (the recording fails) should it find no probe to forge.
FORGE_PRESENTATION = """
const names = Object.getOwnPropertyNames(window).filter((n) => n.startsWith('__presented_'));
if (names.length !== 1) throw new Error('no presentation probe in the page');
const real = HTMLVideoElement.prototype.requestVideoFrameCallback;
HTMLVideoElement.prototype.requestVideoFrameCallback = function (callback) {
  const video = this;
  return real.call(this, (now, frame) => {
    const due = performance.now() + ((frame.mediaTime - video.currentTime) * 1000) / video.playbackRate;
    callback(now, { ...frame, expectedDisplayTime: LATE === null ? frame.expectedDisplayTime + 1000 : due + LATE });
  });
};
try { window[names[0]] = () => [1000, 45000]; } catch (e) {}
try { Object.defineProperty(window, names[0], { value: () => [1000, 45000] }); } catch (e) {}
try { delete window[names[0]]; } catch (e) {}
"""


@pytest.mark.parametrize(("late", "reported"), [(None, None), (30.0, 30.0)], ids=["a second late", "30 ms late"])
async def test_a_page_that_forges_its_presentation_moves_its_correction_within_the_bound_at_most(
    tmp_path, test_page, late: float | None, reported: float | None
):
    settings = RecorderSettings(records_dir=tmp_path / "records", allow_evaluate=True)
    _calibrated(settings, mean_ms=12.0, on_time_ms=250.0)
    script = f"const LATE = {'null' if late is None else late};" + FORGE_PRESENTATION
    spec = RecordingSpec(
        url=test_page.url("/grid?tone=1000"), duration=5, actions=[{"do": "evaluate", "script": script}]
    )
    result = await record(settings, spec)

    assert result.error is None, result.error
    assert result.sidecar is not None and result.mp4 is not None
    sidecar = json.loads(result.sidecar.read_text())
    if reported is None:
        assert sidecar["presentation_lateness_ms"] is None, "frames a second late are no presentation"
        assert sidecar["av_offset_correction_ms"] == 12.0, "the machine's mean correction, untouched"
    else:
        # What the page says within the bound counts, for its own recording only: never the 45 ms it wrote.
        assert sidecar["presentation_lateness_ms"] == pytest.approx(reported, abs=1.0), sidecar
        assert sidecar["av_offset_correction_ms"] == pytest.approx(250.0 - sidecar["presentation_lateness_ms"])
    report = analyze_file(result.mp4)
    assert report.sync is not None and report.sync.markers >= 3, report.sync
