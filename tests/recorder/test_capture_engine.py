"""The capture engine's levers on real Xvfb, Chromium and FFmpeg: the screen's mode at the capture rate, and a
capture that cannot keep up still giving a file as long as asked."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from contract.errors import ErrorCode, RecorderError
from contract.spec import RecordingSpec
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder
from recorder.quality import analyze_file
from recorder.source.display import ScreenMode

COUNT_ANIMATION_FRAMES = """
() => new Promise((resolve) => {
  let frames = 0;
  const start = performance.now();
  const tick = (now) => {
    frames += 1;
    if (now - start < 2000) requestAnimationFrame(tick);
    else resolve(frames / ((now - start) / 1000));
  };
  requestAnimationFrame(tick);
})
"""


@pytest.mark.parametrize(
    ("width", "height", "rate"), [(1280, 720, 30), (1920, 1080, 30), (640, 360, 25), (1280, 720, 60)]
)
def test_the_screen_mode_runs_at_exactly_the_capture_rate(width, height, rate):
    mode = ScreenMode(width, height, rate)
    name, clock, *timings = mode.newmode_args()
    hdisp, hstart, hend, htotal, vdisp, vstart, vend, vtotal = map(int, timings)
    assert (hdisp, vdisp) == (width, height) and name == mode.name
    assert hdisp < hstart < hend < htotal and vdisp < vstart < vend < vtotal
    dot_clock_hz = round(float(clock) * 1e6)
    assert dot_clock_hz == htotal * vtotal * rate  # whole hertz: no drift against the grab's clock


async def _animation_frame_rate(settings: RecorderSettings, url: str) -> float:
    async with Recorder(settings) as recorder:
        assert recorder.browser is not None
        session = await recorder.browser.open_ready(RecordingSpec(url=url))
        try:
            assert session.page is not None
            await session.page.wait_for_timeout(500)
            return float(await session.page.evaluate(COUNT_ANIMATION_FRAMES))
        finally:
            await session.close()


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
async def test_chromium_draws_at_the_capture_rate_only_with_the_screen_mode(tmp_path: Path, test_page):
    url = test_page.url("/status/200")  # a still page: Chromium's frame clock alone paces its animation frames
    with_mode = RecorderSettings(records_dir=tmp_path / "a", screen_mode=True)
    without = RecorderSettings(records_dir=tmp_path / "b", screen_mode=False)

    assert 24 <= await _animation_frame_rate(with_mode, url) <= 36
    assert await _animation_frame_rate(without, url) >= 45  # Chromium's 60 Hz fallback: what the mode removes


OVERLOADING_PRESETS = ("slower", "veryslow")


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("grabber", ["x11grab", "damage"])
async def test_an_encoder_that_cannot_keep_up_still_gives_a_file_as_long_as_asked(
    tmp_path: Path, test_page, grabber: str
):
    # x264's slow presets encode 720p below 30 frames a second: an overloaded capture. Either grab can take a
    # picture only as often as the encoder takes one in, so a flash (100 ms on screen) reaches the file with
    # the first picture after it: late by up to the gap between pictures, which the longest run of repeated
    # frames shows. Off by more than that, the timing itself would be wrong. The overload must be moderate
    # for the flashes to be seen at all: at veryslow a slower machine took 6.6 pictures a second and caught
    # 3 of 8 flashes. So "slower" first, which overloads most machines, and veryslow where it kept up.
    for preset in OVERLOADING_PRESETS:
        settings = RecorderSettings(records_dir=tmp_path / preset, preset=preset, grabber=grabber)
        spec = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=8)
        async with Recorder(settings) as recorder:
            result = await recorder.record(spec, folder=AttemptFolder.under(settings.records_dir, "slow"))
        report = analyze_file(result.mp4, expected_fps=30) if result.mp4 is not None else None
        if result.error is not None or report is None or report.video is None or report.video.repeated_frames > 30:
            break  # a failure is asserted on below, not passed over for the next preset
    else:
        pytest.fail(f"the encoder kept up even at {preset}: this machine did not overload the capture")

    assert result.error is None, result.error
    assert result.mp4 is not None and report is not None
    sidecar = result.sidecar.read_text() if result.sidecar else ""
    assert report.video is not None and report.duration is not None
    assert abs(report.duration - 8) <= 0.5, (report.duration, sidecar[:400])
    assert report.sync is not None and report.sync.markers >= 4, report.sync
    gap_ms = 1000 * (report.video.longest_repeat + 1) / 30
    assert abs(report.sync.mean_ms) <= gap_ms + 20, (report.sync, report.video.longest_repeat)


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
async def test_recorders_sharing_a_machine_calibrate_it_once_and_again_after_an_upgrade(tmp_path: Path, monkeypatch):
    from recorder import calibrate
    from recorder.capture import calibration

    monkeypatch.setattr(calibrate, "SELF_RUNS", 2)
    monkeypatch.setattr(calibrate, "SELF_DURATION", 6.0)
    settings = RecorderSettings(records_dir=tmp_path / "records", self_calibrate=True)
    assert calibration.current(settings) is None

    # Two recorders warming up at once on one RECORDS_DIR: one measures, the other waits and takes its result.
    first, second = await asyncio.gather(calibrate.ensure_calibrated(settings), calibrate.ensure_calibrated(settings))
    assert first is not None and second is not None
    assert first == second and first.samples >= 8, first
    assert first.key == calibration.calibration_key(settings)
    assert abs(first.av_offset_ms) < 200
    assert calibration.av_offset_ms(settings) == first.av_offset_ms

    # Stored and current: the next warm-up records nothing.
    started = time.monotonic()
    assert await calibrate.ensure_calibrated(settings) == first
    assert time.monotonic() - started < 5

    # What the offset depends on changed (here the screen's mode; likewise Chromium or FFmpeg): not current.
    other = settings.model_copy(update={"screen_mode": not settings.screen_mode})
    assert calibration.current(other) is None
    assert calibration.av_offset_ms(other) == calibration.DEFAULT_AV_OFFSET_MS
    # An offset set by hand wins, and nothing is measured.
    pinned = other.model_copy(update={"av_offset_ms": 42.0})
    assert await calibrate.ensure_calibrated(pinned) is None
    assert calibration.av_offset_ms(pinned) == 42.0


@pytest.mark.media
def test_the_remux_cuts_what_a_capture_wrote_past_the_length_asked(tmp_path: Path):
    import subprocess

    from recorder.finalize.remux import remux_to_mp4
    from recorder.quality.probe import probe

    capture = tmp_path / "capture.mkv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:d=3",
         "-f", "lavfi", "-i", "sine=frequency=1000:duration=3", "-c:v", "libx264", "-preset", "ultrafast",
         "-c:a", "aac", str(capture)],
        check=True,
    )  # fmt: skip
    whole = probe(remux_to_mp4(capture, tmp_path / "whole.mp4"))
    cut = probe(remux_to_mp4(capture, tmp_path / "cut.mp4", length=2.0))
    assert whole.video is not None and abs((whole.video.duration or 0) - 3.0) < 0.05
    assert cut.video is not None and abs((cut.video.duration or 0) - 2.0) < 0.05
    assert cut.audio is not None and abs((cut.audio.duration or 0) - 2.0) < 0.05


@pytest.mark.ffmpeg
@pytest.mark.parametrize("shift_ms", [37.0, -23.0])
def test_finalize_moves_the_sound_against_the_picture_without_cutting_the_picture(tmp_path, shift_ms: float):
    from recorder.finalize.remux import remux_to_mp4
    from recorder.quality import analyze_file
    from recorder.quality.probe import probe
    from recorder.reference.media import make_sync_file

    clip = make_sync_file(tmp_path / "clip.mp4", 5.0)  # beeps on their flashes
    capture = tmp_path / "capture.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-c", "copy", str(capture)], check=True)
    unmoved_file = remux_to_mp4(capture, tmp_path / "unmoved.mp4")
    unmoved, unmoved_picture = analyze_file(unmoved_file).sync, probe(unmoved_file).video
    assert unmoved is not None and unmoved.markers >= 4, unmoved
    moved_file = remux_to_mp4(capture, tmp_path / "moved.mp4", audio_shift_ms=shift_ms)
    report = analyze_file(moved_file)
    assert report.sync is not None and report.sync.markers >= 4, report.sync
    assert report.sync.mean_ms - unmoved.mean_ms == pytest.approx(-shift_ms, abs=1.0), "moved earlier by the shift"
    picture = probe(moved_file).video
    assert picture is not None and unmoved_picture is not None
    assert (picture.start_time, picture.duration) == (unmoved_picture.start_time, unmoved_picture.duration)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["capture.mkv", "clip.mp4", "moved.mp4", "unmoved.mp4"]


def _captured(folder, parts: list[Path], *, duration: float, shift_ms: float):
    """What a capture of `parts` (more than one: paused between them) hands finalize, 12 ms corrected by the
    capture and `shift_ms` asked for the page's presentation."""
    from contract.protocol import Progress
    from contract.spec import RecordingSpec
    from recorder.capture.captured import Captured
    from recorder.timings import Timings

    return Captured(
        folder=folder,
        spec=RecordingSpec(url="https://example.com/", duration=duration),
        capture_file=parts[0],
        progress=Progress(),
        timings=Timings(started=time.time()),
        stop_reason="duration",
        error=None,
        blocked=None,
        versions={},
        av_offset_correction_ms=12.0,
        audio_shift_ms=shift_ms,
        capture_files=parts if len(parts) > 1 else [],
    )


@pytest.mark.ffmpeg
async def test_a_sound_that_cannot_be_moved_leaves_the_file_as_captured(tmp_path, monkeypatch):
    from recorder.attempt import AttemptFolder
    from recorder.finalize import stage

    folder = AttemptFolder.under(tmp_path, "rec").create()
    capture = folder.capture(live=False)
    await asyncio.to_thread(
        subprocess.run,
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=d=3:r=30", "-f", "lavfi", "-i", "sine=d=3",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(capture)],
        check=True,
    )  # fmt: skip
    remux = stage.remux_to_mp4

    def no_sound_to_move(capture, mp4, *, length=None, audio_shift_ms=0.0):
        if audio_shift_ms:
            raise RecorderError(ErrorCode.FINALIZE_FAILED, "moving the sound failed")
        return remux(capture, mp4, length=length)

    monkeypatch.setattr(stage, "remux_to_mp4", no_sound_to_move)
    finished = await stage.finalize(_captured(folder, [capture], duration=3, shift_ms=30.0))
    assert finished.error is None and finished.mp4 == folder.media and folder.media.is_file()
    assert (finished.metadata.presentation_shift_ms, finished.metadata.av_offset_correction_ms) == (0.0, 12.0)

    # Joined after a pause: the joined file stays as joined.
    from recorder.quality.probe import probe

    paused = AttemptFolder.under(tmp_path, "paused").create()
    parts = [paused.capture_part(1, live=False), paused.capture_part(2, live=False)]
    for part in parts:
        await asyncio.to_thread(shutil.copyfile, folder.media, part)
    finished = await stage.finalize(_captured(paused, parts, duration=6, shift_ms=30.0))
    assert finished.error is None and finished.mp4 == paused.media
    assert (finished.metadata.presentation_shift_ms, finished.metadata.av_offset_correction_ms) == (0.0, 12.0)
    assert sorted(path.name for path in paused.media.parent.iterdir()) == [paused.media.name], "no part left"
    joined = probe(paused.media)
    assert joined.video is not None and joined.audio is not None and abs((joined.duration or 0) - 6.0) < 0.2


@pytest.mark.ffmpeg
async def test_a_paused_recording_s_joined_sound_is_moved_as_one_track(tmp_path):
    from recorder.attempt import AttemptFolder
    from recorder.finalize import stage
    from recorder.quality import analyze_file
    from recorder.quality.probe import probe
    from recorder.reference.media import make_sync_file

    clip = await asyncio.to_thread(make_sync_file, tmp_path / "clip.mp4", 8.0)  # beeps on their flashes

    async def finalized(name: str, shift_ms: float):
        folder = AttemptFolder.under(tmp_path, name).create()
        parts = [folder.capture_part(1, live=False), folder.capture_part(2, live=False)]
        for part, cut in zip(parts, (["-t", "4"], ["-ss", "4"]), strict=True):  # before and after a pause
            await asyncio.to_thread(
                subprocess.run,
                ["ffmpeg", "-v", "error", "-i", str(clip), *cut, "-c:v", "libx264", "-preset", "ultrafast",
                 "-g", "15", "-c:a", "aac", str(part)],
                check=True,
            )  # fmt: skip
        return await stage.finalize(_captured(folder, parts, duration=8, shift_ms=shift_ms))

    unmoved, moved = await finalized("unmoved", 0.0), await finalized("moved", 37.0)
    assert unmoved.mp4 is not None and moved.mp4 is not None and moved.error is None
    assert (moved.metadata.presentation_shift_ms, moved.metadata.av_offset_correction_ms) == (37.0, 49.0)
    before, after = analyze_file(unmoved.mp4).sync, analyze_file(moved.mp4).sync
    assert before is not None and after is not None and after.markers >= 6, after
    assert after.mean_ms - before.mean_ms == pytest.approx(-37.0, abs=1.5), "moved earlier by the shift"
    assert after.std_ms == pytest.approx(before.std_ms, abs=2.0), "both parts moved alike"
    picture, unmoved_picture = probe(moved.mp4).video, probe(unmoved.mp4).video
    assert picture is not None and unmoved_picture is not None
    assert (picture.start_time, picture.duration) == (unmoved_picture.start_time, unmoved_picture.duration)
    assert sorted(path.name for path in moved.mp4.parent.iterdir()) == [moved.mp4.name], "no part or copy left"


async def test_a_calibration_that_fails_leaves_the_default_and_is_not_tried_again_for_an_hour(tmp_path, monkeypatch):
    from recorder import calibrate
    from recorder.capture import calibration

    attempts = []

    async def broken(settings, *, duration, runs):
        attempts.append(duration)
        raise RecorderError(ErrorCode.BROWSER_CRASHED, "Chromium did not start")

    monkeypatch.setattr(calibrate, "measure_runs", broken)
    # The key names Chromium's version, which asks the binary: not this test's business (nor the quick run's).
    monkeypatch.setattr(calibration, "calibration_key", lambda settings: "machine|chromium|ffmpeg")
    settings = RecorderSettings(records_dir=tmp_path / "records", self_calibrate=True)
    assert await calibrate.ensure_calibrated(settings) is None  # never raises into the worker
    assert await calibrate.ensure_calibrated(settings) is None
    assert len(attempts) == 1, "a failed calibration is remembered, not repeated by every recorder"
    assert calibration.av_offset_ms(settings) == calibration.DEFAULT_AV_OFFSET_MS


async def test_a_records_dir_that_cannot_hold_a_calibration_does_not_stop_the_recorder(tmp_path, monkeypatch):
    from recorder import calibrate
    from recorder.capture import calibration

    monkeypatch.setattr(calibration, "calibration_key", lambda settings: "machine|chromium|ffmpeg")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    settings = RecorderSettings(records_dir=blocked, self_calibrate=True)
    assert await calibrate.ensure_calibrated(settings) is None


@pytest.mark.parametrize(
    ("fps", "rate"), [(30, 30), (60, 60), (25, 25), (24, 24), (15, 30), (10, 30), (12, 24), (1, 24)]
)
def test_the_screen_runs_at_the_capture_rate_and_never_below_24(fps, rate):
    from recorder.source.display import screen_rate

    assert screen_rate(fps) == rate
    assert rate % fps == 0  # the capture keeps every n-th frame of the screen's


def test_a_calibration_leaves_out_its_highest_and_lowest_run_from_four_on():
    from recorder.calibrate import Run, trimmed_offset

    # A fresh recorder's first page read +51 ms where the next ones read +10 to +22.
    runs = [Run(50.8, 4), Run(21.7, 5), Run(10.0, 5), Run(12.0, 4), Run(-3.0, 5)]
    assert trimmed_offset(runs) == (pytest.approx((21.7 * 5 + 10.0 * 5 + 12.0 * 4) / 14), 14)
    # Fewer than four: none is known to be the far one, so all count, by their markers.
    assert trimmed_offset([Run(12.0, 8), Run(14.0, 4)]) == (pytest.approx(12 + 2 * 4 / 12), 12)
    assert trimmed_offset([Run(7.0, 8)]) == (7.0, 8)
    with pytest.raises(ValueError):
        trimmed_offset([])


def test_a_calibration_by_presentation_takes_the_median_of_four_or_more_runs_that_saw_it():
    from recorder.calibrate import Run, median_on_time

    # What the files needed moved with their page's lateness; needed + lateness is nearly one value, but
    # for two runs far above it (a file that lost pictures, one that stepped by a frame).
    runs = [Run(30.0, 5, -10.7), Run(31.5, 5, -6.4), Run(11.6, 5, 5.5), Run(60.0, 5, 5.8), Run(13.0, 5, 10.8)]
    runs.append(Run(40.0, 4, 9.0))
    # Sums 19.3, 25.1, 17.1, 65.8, 23.8, 49.0: the two far ones do not move it past the middle two.
    assert median_on_time(runs) == pytest.approx((23.8 + 25.1) / 2)
    unseen = [Run(30.0, 5, None), *runs[1:4]]
    assert median_on_time(unseen) is None, "three runs that saw it are too few"


def _calibration_rig(monkeypatch, tmp_path: Path, readings: list[tuple[float, float | None, float]]):
    """Calibration without recording: the n-th run reads (residual, its page's lateness, its markers' spread)
    off `readings`, its file corrected 3 ms more than the one before (by its own load's presentation)."""
    from types import SimpleNamespace

    from recorder import calibrate
    from recorder.capture import calibration

    class Page:  # the reference page's server: nothing to serve here
        port = 1

        def __init__(self, media):
            pass

        def start(self):
            pass

        def stop(self):
            pass

        def url(self, path):
            return f"http://127.0.0.1:1{path}"

    class FakeRecorder:
        recorded = 0

        def __init__(self, settings):
            pass

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return None

        async def record(self, spec, folder):
            mean, lateness, spread = readings[FakeRecorder.recorded]
            FakeRecorder.recorded += 1
            sidecar = tmp_path / f"rec-{FakeRecorder.recorded}.json"
            applied = calibration.DEFAULT_AV_OFFSET_MS + 3.0 * (FakeRecorder.recorded - 1)
            sidecar.write_text(json.dumps({"av_offset_correction_ms": applied, "presentation_lateness_ms": lateness}))
            sync = {"mean_ms": mean, "markers": 5, "std_ms": spread}
            return SimpleNamespace(error=None, quality={"sync": sync}, sidecar=sidecar)

    monkeypatch.setattr(calibrate, "make_reference_media", lambda root: None)
    monkeypatch.setattr(calibrate, "ReferencePage", Page)
    monkeypatch.setattr(calibrate, "Recorder", FakeRecorder)
    monkeypatch.setattr(calibration, "calibration_key", lambda settings: "machine|chromium|ffmpeg")
    return FakeRecorder


async def test_a_calibration_records_every_run_it_is_asked_for_and_stores_them_all(tmp_path, monkeypatch):
    from recorder import calibrate
    from recorder.capture import calibration

    readings = [60.0, 20.0, -20.0, 15.0, 18.0, 9.0]
    latenesses = [-40.0, 0.0, 40.0, 5.0, 2.0, None]  # the last page played no video the probe could follow
    steady_runs = [(reading, late, 0.1) for reading, late in zip(readings, latenesses, strict=True)]
    rig = _calibration_rig(monkeypatch, tmp_path, steady_runs)
    settings = RecorderSettings(records_dir=tmp_path / "records", self_calibrate=True)

    saved = await calibrate.ensure_calibrated(settings)
    assert saved is not None and rig.recorded == calibrate.SELF_RUNS == 6
    default = calibration.DEFAULT_AV_OFFSET_MS
    needed = [default + 3.0 * n + r for n, r in enumerate(readings)]  # 70, 33, -4, 34, 40, 34
    assert saved.runs == needed, "what every run needed is stored, the ones left out too"
    assert saved.latenesses == latenesses and saved.steady == [True] * 6
    # 70 and -4 left out: the mean of 33, 34, 40 and 34.
    assert saved.av_offset_ms == pytest.approx(35.25) and saved.samples == 20
    assert calibration.av_offset_ms(settings) == saved.av_offset_ms
    # By presentation, five runs saw it: needed + lateness 30, 33, 36, 39 and 42; their median.
    assert saved.on_time_offset_ms == pytest.approx(36.0)
    assert calibration.in_force(settings).on_time_offset_ms == saved.on_time_offset_ms
    pinned = settings.model_copy(update={"av_offset_ms": 4.0})
    assert calibration.in_force(pinned).on_time_offset_ms is None, "an offset set by hand is taken as it is"


async def test_a_calibration_run_that_stepped_within_its_file_is_made_again_and_left_out(tmp_path, monkeypatch):
    from recorder import calibrate

    # Runs 2 and 5 stepped by a frame between their markers (spread 14 ms) and read far off.
    readings = [(20.0, 0.0, 0.1), (-45.0, 0.0, 14.0), (14.0, 0.0, 2.0), (11.0, 0.0, 0.1), (-60.0, 0.0, 16.0)]
    readings += [(5.0, 0.0, 0.1), (2.0, 0.0, 3.0), (-1.0, 0.0, 0.1)]
    rig = _calibration_rig(monkeypatch, tmp_path, readings)
    settings = RecorderSettings(records_dir=tmp_path / "records", self_calibrate=True)

    saved = await calibrate.ensure_calibrated(settings)
    assert saved is not None and rig.recorded == 8, "two more runs, for the two that stepped"
    assert saved.steady == [True, False, True, True, False, True, True, True]
    assert len(saved.runs) == 8, "the stepped runs are stored too"
    # Needed: 30, (-32), 30, 30, (-38), 30, 30, 30: the six steady runs all needed 30 ms.
    assert saved.av_offset_ms == pytest.approx(30.0) and saved.on_time_offset_ms == pytest.approx(30.0)


async def test_a_calibration_by_hand_of_fewer_runs_than_are_trimmed_leaves_out_a_run_that_stepped(
    tmp_path, monkeypatch
):
    from recorder import calibrate
    from recorder.capture import calibration

    readings = [(-45.0, 0.0, 14.0), (17.0, 0.0, 0.1), (14.0, 0.0, 0.1)]  # needed -35 (stepped), 30, 30
    rig = _calibration_rig(monkeypatch, tmp_path, readings)
    settings = RecorderSettings(records_dir=tmp_path / "records")
    saved = await calibrate.measure_and_store(settings, duration=5.0, runs=2, how="measured by hand")
    assert rig.recorded == 3 and saved.steady == [False, True, True]
    assert saved.av_offset_ms == pytest.approx(30.0) and saved.samples == 10, "the stepped run does not count"
    assert calibration.current(settings) == saved


async def test_a_machine_that_steps_in_most_runs_is_calibrated_from_all_of_them(tmp_path, monkeypatch):
    from recorder import calibrate

    # One run in four holds one offset: three of twelve, too few to count alone.
    readings = [(20.0 - 3.0 * n, 0.0, 0.1 if n % 4 == 0 else 15.0) for n in range(12)]  # each needed 30 ms
    rig = _calibration_rig(monkeypatch, tmp_path, readings)
    settings = RecorderSettings(records_dir=tmp_path / "records", self_calibrate=True)

    saved = await calibrate.ensure_calibrated(settings)
    assert saved is not None and rig.recorded == 2 * calibrate.SELF_RUNS, "no more than twice the runs"
    assert saved.steady.count(True) == 3
    assert saved.av_offset_ms == pytest.approx(30.0) and saved.samples == 50, "all twelve count, trimmed"


async def test_a_calibration_another_recorder_holds_too_long_is_waited_out_not_remembered_as_failed(
    tmp_path, monkeypatch
):
    import fcntl

    from recorder import calibrate
    from recorder.capture import calibration

    monkeypatch.setattr(calibration, "calibration_key", lambda settings: "machine|chromium|ffmpeg")
    monkeypatch.setattr(calibrate, "LOCK_WAIT", 0.5)
    settings = RecorderSettings(records_dir=tmp_path / "records", self_calibrate=True)
    lock = calibration.calibration_path(settings).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another recorder, still measuring
        assert await calibrate.ensure_calibrated(settings) is None
    assert not calibrate._failed_lately(settings), "a busy lock is no failure: the next recorder looks again"
    assert calibration.av_offset_ms(settings) == calibration.DEFAULT_AV_OFFSET_MS


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--runs", "0"], "0 recordings measure nothing"),
        (["--runs", "six"], "'six' is not a number of recordings"),
        (["--duration", "0"], "0 s records nothing"),
        (["--duration", "-5"], "-5 s records nothing"),
    ],
)
def test_recorder_calibrate_refuses_what_would_measure_nothing_and_says_why(capsys, argv: list[str], says: str):
    from recorder.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["calibrate", *argv])
    assert says in capsys.readouterr().err


def test_recorder_calibrate_measures_as_the_warm_up_does_by_default():
    from recorder import calibrate
    from recorder.cli import build_parser

    args = build_parser().parse_args(["calibrate"])
    assert (args.runs, args.duration) == (calibrate.SELF_RUNS, calibrate.SELF_DURATION) == (6, 5.0)
