"""The capture's controls on real Xvfb, PulseAudio, Chromium and FFmpeg: audio only, pause and resume into
one file (also in live mode), and the live silence and frozen-screen detection.

`Capture` is driven directly, as the pipeline drives it; pages are opened through Playwright on the
recorder's browser."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.protocol import AUDIO_NAME, MEDIA_NAME, Progress, media_name
from contract.spec import RecordingSpec
from recorder.attempt import AttemptFolder
from recorder.capture import calibration
from recorder.capture.captured import Captured
from recorder.capture.command import CaptureSettings
from recorder.capture.detect import LogReader
from recorder.capture.ffmpeg import Capture
from recorder.capture.progress import ProgressTracker
from recorder.config import RecorderSettings
from recorder.finalize import Finished, finalize
from recorder.finalize.remux import top_level_boxes
from recorder.pipeline import Recorder
from recorder.quality import analyze_file, tone_level
from recorder.quality.audio import decode_audio
from recorder.quality.beeps import detect_beeps
from recorder.quality.flashes import detect_flashes
from recorder.quality.probe import probe
from recorder.quality.sync import pair_markers
from recorder.quality.video import decode_video
from recorder.timings import Timings

# Every test here but the log and progress ones runs the real programs; each process they start is stopped.
heavy = pytest.mark.usefixtures("no_leaks")

FPS = 30
FRAME = 1 / FPS
SYNC_BOUND_MS = 100  # the A/V bound of tests/recorder/test_recorder.py
# A part's first frame comes after its FFmpeg started (up to about half a second on a loaded 2-core
# machine) and is known only as an estimate that can be as early as the start: the wall clock from the
# start to the pause is an upper bound of what the part holds, and this much less its lower bound.
START_MARGIN = 0.8


@pytest.fixture
def settings(tmp_path: Path) -> RecorderSettings:
    return RecorderSettings(records_dir=tmp_path / "records")


@dataclass
class Rig:
    recorder: Recorder
    sink: Any
    context: Any  # a Playwright browser context on the recorder's browser
    settings: RecorderSettings

    async def open(self, url: str) -> Any:
        page = await self.context.new_page()
        await page.goto(url)
        return page

    def capture(self, folder: AttemptFolder, *, live: bool = False, **overrides: Any) -> Capture:
        rec = self.recorder
        assert rec.display is not None and rec.audio is not None
        capture_settings = CaptureSettings(
            display=rec.display.name or "",
            audio_source=self.sink.monitor,
            width=rec.width,
            height=rec.height,
            fps=FPS,
            preset=self.settings.preset,
            crf=self.settings.crf,
            threads=self.settings.encoder_threads,
            grabber=self.settings.grabber,
            av_offset_ms=calibration.av_offset_ms(self.settings),
            **overrides,
        )
        return Capture(
            capture_settings,
            folder.capture(live=live),
            live_dir=folder.live_dir if live else None,
            env=rec.audio.client_env(),
            stop_timeout=self.settings.stop_timeout,
            part_path=lambda number: folder.capture_part(number, live=live),
        )


@asynccontextmanager
async def rig(settings: RecorderSettings, name: str) -> AsyncIterator[Rig]:
    recorder = Recorder(settings)
    sink = context = None
    try:
        await recorder.prepare(1280, 720)
        assert recorder.audio is not None and recorder.browser is not None
        sink = await recorder.audio.take_sink(name)
        context = await recorder.browser._browser.new_context(no_viewport=True)
        yield Rig(recorder, sink, context, settings)
    finally:
        if context is not None:
            await context.close()
        if sink is not None and recorder.audio is not None:
            await recorder.audio.remove_sink(sink)
        await recorder.close()


def folder_for(settings: RecorderSettings, name: str, *, video: bool = True) -> AttemptFolder:
    return AttemptFolder.under(settings.records_dir, name, media_name=media_name(video)).create()


async def finalized(
    capture: Capture, folder: AttemptFolder, spec: RecordingSpec, *, audio_shift_ms: float = 0.0
) -> Finished:
    """What the pipeline does once the capture is stopped: Captured, then finalize. `audio_shift_ms` is the
    move the pipeline would ask for a page's presentation."""
    captured = Captured(
        folder=folder,
        spec=spec,
        capture_file=folder.capture(live=spec.live_upload),
        progress=capture.progress,
        timings=Timings(started=capture.started_at or time.time()),
        stop_reason="duration",
        error=None,
        blocked=None,
        versions={},
        av_offset_correction_ms=capture.settings.av_offset_ms,
        audio_shift_ms=audio_shift_ms,
        capture_files=capture.files,
        pauses=list(capture.pauses),
    )
    return await finalize(captured)


def streams(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)["streams"]


def decode_errors(path: Path) -> str:
    """What FFmpeg complains of when decoding the whole file: nothing for a sound file."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True)
    return done.stderr.strip() + ("" if done.returncode == 0 else f" (exit {done.returncode})")


# -- audio only ------------------------------------------------------------------------------------


@pytest.mark.media
@heavy
async def test_audio_only_is_one_aac_stream_of_the_page_sound_in_rec_m4a(settings, test_page):
    folder = folder_for(settings, "voice", video=False)
    assert folder.media.name == AUDIO_NAME and folder.capture(live=False).name == "capture.mka"
    spec = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=6, video=False)
    async with rig(settings, "voice") as r:
        await r.open(spec.url)
        capture = r.capture(folder, video=False)
        await capture.start()
        assert capture.first_frame_at is not None
        await asyncio.sleep(6 - (time.time() - capture.first_frame_at))
        recorded = time.time() - capture.first_frame_at
        await capture.stop()
        assert not capture.failed_unexpectedly
    finished = await finalized(capture, folder, spec)

    assert finished.error is None and finished.mp4 == folder.media and finished.mp4.name == "rec.m4a"
    assert not folder.capture(live=False).exists(), "the capture file goes once rec.m4a is made"
    found = streams(finished.mp4)
    assert [(s["codec_type"], s["codec_name"]) for s in found] == [("audio", "aac")], found
    assert int(found[0]["sample_rate"]) == 48000 and found[0]["channels"] == 2
    boxes = top_level_boxes(finished.mp4)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    report = analyze_file(finished.mp4)
    assert report.video is None and report.sync is None and report.audio is not None
    assert report.duration is not None and abs(report.duration - recorded) <= 0.5, (report.duration, recorded)
    assert report.audio.rms_dbfs is not None and report.audio.peak_dbfs is not None
    assert report.audio.peak_dbfs > report.audio.rms_dbfs > -50
    assert tone_level(finished.mp4, 1000) > 10 * tone_level(finished.mp4, 440)


@pytest.mark.media
@heavy
async def test_live_audio_only_pauses_into_one_rec_m4a_beside_hls_audio(settings, test_page):
    folder = folder_for(settings, "live-voice", video=False)
    spec = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=60, video=False, live_upload=True)
    async with rig(settings, folder.recording_id) as r:
        await r.open(spec.url)
        capture = r.capture(folder, live=True, video=False)
        await capture.start()
        assert capture.files == [folder.media] and capture.started_at is not None, "FFmpeg writes rec.m4a itself"
        await asyncio.sleep(3)
        recorded = time.time() - capture.started_at
        await capture.pause()
        await asyncio.sleep(2)
        resumed_at = time.time()
        await capture.resume()
        await asyncio.sleep(3)
        recorded += time.time() - resumed_at
        await capture.stop()
        assert not capture.failed_unexpectedly
    assert capture.files[1].name == "capture-002.m4a"
    finished = await finalized(capture, folder, spec)

    assert finished.error is None and finished.mp4 == folder.media
    assert decode_errors(finished.mp4) == ""
    assert [(s["codec_type"], s["codec_name"]) for s in streams(finished.mp4)] == [("audio", "aac")]
    duration = analyze_file(finished.mp4).duration
    assert duration is not None and recorded - 2 * START_MARGIN <= duration <= recorded + 0.1, (duration, recorded)
    assert tone_level(finished.mp4, 1000) > 10 * tone_level(finished.mp4, 440)
    segments = sorted(folder.live_dir.glob("seg_*.ts"))
    assert len(segments) >= 3 and all(s["codec_type"] == "audio" for s in streams(segments[-1]))
    assert "#EXT-X-DISCONTINUITY" in (folder.live_dir / "index.m3u8").read_text()


# -- pause and resume ------------------------------------------------------------------------------

MASK = "capture-controls-mask"
SHOW_MASK = f"""() => {{
  const mask = document.createElement('div'); mask.id = '{MASK}';
  mask.style.cssText = 'position:fixed;inset:0;background:#00ff00;z-index:2147483647';
  document.body.appendChild(mask);
}}"""
HIDE_MASK = f"() => document.getElementById('{MASK}').remove()"


def green_frames(path: Path) -> int:
    """Frames that are mostly pure green: the mask shown only while the capture was paused."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-vf", "scale=32:18", "-pix_fmt", "rgb24",
         "-f", "rawvideo", "pipe:1"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    frames = np.frombuffer(done.stdout, dtype=np.uint8).reshape(-1, 18, 32, 3).astype(int)
    green = (frames[..., 1] > 200) & (frames[..., 0] < 60) & (frames[..., 2] < 60)
    return int((green.mean(axis=(1, 2)) > 0.5).sum())


def markers(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(flash times, A/V offsets in seconds) of the sync markers in the file."""
    facts = probe(path)
    assert facts.video is not None and facts.audio is not None
    video = decode_video(path, facts.video)
    audio = decode_audio(path, facts.audio, 1000.0)
    return pair_markers(detect_flashes(video.cells, video.pts), detect_beeps(audio))


async def record_with_a_pause(r: Rig, capture: Capture, page: Any, *, before: float, pause: float, after: float):
    """Capture `before` s, pause `pause` s (the page shows the green mask meanwhile), capture `after` s.
    Returns the seconds captured before the pause and in all, by the wall clock from each part's start."""
    await capture.start()
    assert capture.started_at is not None
    await asyncio.sleep(before)
    paused_at = time.time()
    await capture.pause()
    first = paused_at - capture.started_at
    assert capture.paused and len(capture.pauses) == 1
    await page.evaluate(SHOW_MASK)
    await asyncio.sleep(pause)
    await page.evaluate(HIDE_MASK)
    await page.wait_for_timeout(200)  # the page has painted without the mask
    resumed_at = time.time()
    await capture.resume()
    assert not capture.paused
    assert capture.pauses[0].ended_at is not None and capture.pauses[0].ended_at >= resumed_at
    await asyncio.sleep(after)
    stopped_at = time.time()
    await capture.stop()
    assert not capture.exited.is_set() or not capture.failed_unexpectedly
    return first, first + (stopped_at - resumed_at)


@pytest.mark.media
@heavy
@pytest.mark.parametrize("live", [False, True], ids=["ordinary", "live"])
@pytest.mark.parametrize("grabber", ["x11grab", "damage"])
async def test_a_paused_span_is_absent_from_the_one_file(settings, test_page, live, grabber):
    settings = settings.model_copy(update={"grabber": grabber})
    folder = folder_for(settings, f"paused-{'live' if live else 'ordinary'}")
    spec = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=60, live_upload=live)
    async with rig(settings, folder.recording_id) as r:
        page = await r.open(spec.url)
        await page.wait_for_timeout(1000)  # the clips are playing
        capture = r.capture(folder, live=live)
        first, recorded = await record_with_a_pause(r, capture, page, before=5, pause=5, after=5)
        assert not capture.failed_unexpectedly, capture.failure()
    assert len(capture.files) == 2 and capture.files[1] == folder.capture_part(2, live=live)
    # Asked to move the sound for the page's presentation: the joined file's sound is moved.
    finished = await finalized(capture, folder, spec, audio_shift_ms=40.0)

    assert finished.error is None, finished.error
    assert finished.mp4 == folder.media
    assert finished.metadata.presentation_shift_ms == 40.0
    assert finished.metadata.av_offset_correction_ms == pytest.approx(capture.settings.av_offset_ms + 40.0)
    assert decode_errors(finished.mp4) == ""
    boxes = top_level_boxes(finished.mp4)
    assert boxes.index("moov") < boxes.index("mdat"), "rebuilt with moov first, also in live mode"
    assert not folder.capture_part(2, live=live).exists(), "the parts go once joined"
    report = analyze_file(finished.mp4, expected_fps=FPS)
    assert report.duration is not None and report.video is not None
    assert recorded - 2 * START_MARGIN <= report.duration <= recorded + 2 * FRAME, (report.duration, recorded)
    # The cut misses no frame: the step across it is no longer than a frame interval (a part's first step
    # may be a little longer than one, the same at the file's start as at the cut).
    assert report.video.longest_gap <= 2 * FRAME, report.video.gaps
    assert green_frames(finished.mp4) == 0, "a frame of the paused span is in the file"

    cut = finished.metadata.pauses[0].media_at
    assert first - START_MARGIN <= cut <= first + FRAME, (cut, first)
    flashes, offsets = markers(finished.mp4)
    before, after = offsets[flashes < cut], offsets[flashes > cut]
    assert len(before) >= 3 and len(after) >= 3, (flashes, cut)
    # Each side of the cut in sync once the 40 ms asked for is taken back out: the sound moved as one track.
    unmoved = (offsets * 1000 + 40.0)[flashes < cut], (offsets * 1000 + 40.0)[flashes > cut]
    assert all(np.all(np.abs(side) <= SYNC_BOUND_MS) for side in unmoved), (flashes, offsets)

    finished.complete(analyze=False)
    sidecar = json.loads(folder.metadata.read_text())
    [shown] = sidecar["pauses"]
    assert shown["media_at"] == cut and shown["ended_at"] - shown["started_at"] >= 5
    if live:
        playlist = (folder.live_dir / "index.m3u8").read_text()
        listed = [line for line in playlist.splitlines() if line.endswith(".ts")]
        assert "#EXT-X-DISCONTINUITY" in playlist.split(listed[-1])[0].split(listed[0])[1], playlist
        assert listed == [f"seg_{n:05d}.ts" for n in range(len(listed))], "segment numbers go on after the pause"


@pytest.mark.media
@heavy
async def test_stop_while_paused_ends_cleanly_with_the_pause_closed(settings, test_page):
    folder = folder_for(settings, "stopped-paused")
    spec = RecordingSpec(url=test_page.url("/grid"), duration=60)
    async with rig(settings, folder.recording_id) as r:
        await r.open(spec.url)
        capture = r.capture(folder)
        seen: list[Progress] = []
        capture.on_progress = seen.append
        await capture.start()
        await asyncio.sleep(2)
        await capture.pause()
        frames_at_pause = capture.progress.frames
        await asyncio.sleep(1)
        assert not capture.exited.is_set(), "a pause is not an exit"
        await capture.resume()
        await asyncio.sleep(2)
        assert capture.progress.frames > frames_at_pause + FPS, "frames keep counting across parts"
        await capture.pause()
        await capture.stop()
        assert capture.exited.is_set() and not capture.failed_unexpectedly
        assert [p.ended_at is not None for p in capture.pauses] == [True, True]
    finished = await finalized(capture, folder, spec)
    assert finished.error is None and len(finished.metadata.pauses) == 2
    assert finished.metadata.pauses[1].media_at == pytest.approx(analyze_file(finished.mp4).duration, abs=0.1)


# -- live detection --------------------------------------------------------------------------------


@pytest.mark.media
@heavy
@pytest.mark.parametrize("kind", ["silence", "frozen"])
async def test_detection_fires_after_the_meeting_ends_and_not_before(settings, test_page, kind):
    window = 3.0
    folder = folder_for(settings, f"detect-{kind}")
    async with rig(settings, folder.recording_id) as r:
        page = await r.context.new_page()
        ended = asyncio.get_running_loop().create_future()
        page.on("console", lambda m: m.text == "MEETING_ENDED" and not ended.done() and ended.set_result(time.time()))
        await page.goto(test_page.url("/meeting?lobby=0&end=6"))
        await page.fill("#name", "recorder")
        await page.click("#join")
        await page.wait_for_timeout(1500)  # the tiles are playing
        detection = {"silence": window} if kind == "silence" else {"frozen": window}
        capture = r.capture(folder, **detection)
        await capture.start()
        try:
            end_at = await asyncio.wait_for(asyncio.shield(ended), 15)
            assert not capture.detected.is_set(), "detected while the meeting was still going on"
            await asyncio.wait_for(capture.detected.wait(), window + 5)
            detected_at = time.time()
        finally:
            await capture.stop()
    assert capture.detected_reason == kind
    assert window - 0.5 <= detected_at - end_at <= window + 2, detected_at - end_at
    finished = await finalized(capture, folder, RecordingSpec(url=test_page.url("/meeting")))
    assert finished.error is None and decode_errors(finished.mp4) == ""
    facts = probe(finished.mp4)
    assert facts.video is not None and facts.audio is not None and facts.video.duration and facts.audio.duration
    assert abs(facts.video.duration - facts.audio.duration) <= 0.1, "the sound padded to the last frame, as always"
    assert not any("silence_start" in line or "freeze_start" in line for line in capture.failure().message.split("|"))


# -- a live rec.mp4 rebuilt from its parts is uploaded whole -----------------------------------------


@heavy
def test_a_growing_upload_of_a_rebuilt_rec_mp4_gives_way_to_the_whole_file(tmp_path, s3):
    """Finalize replaces the live rec.mp4 of a paused recording by the joined parts: the parts the growing
    upload sent while recording belong to the old file, so the new one goes up whole, and no part is left."""
    from tests.recorder.test_storage import bucket_destination, download, settings_for, sha256, wait_for

    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    dest = bucket_destination(settings, "rebuilt")
    media = dest.folder.create().media
    media.write_bytes(os.urandom(12 * 1024 * 1024))  # the first part, as FFmpeg appended it
    growing = dest.growing_upload()
    growing.poll = 0.1
    growing.start()
    wait_for(lambda: len(growing.obj.parts) >= 2, 30, "parts of the first capture part sent")
    joined = media.with_name(media.name + ".part")
    joined.write_bytes(os.urandom(13 * 1024 * 1024))
    os.replace(joined, media)  # what join_parts does
    digest = sha256(media)

    stored = dest.store({MEDIA_NAME: media}, growing=growing)

    assert not stored.pending and growing.replaced
    assert sha256(download(s3, s3.bucket, growing.key)) == digest == stored.sha256
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads"), "the followed upload was aborted"


# -- the log and the progress, without processes ----------------------------------------------------


def test_detection_lines_trigger_and_info_never_reaches_the_error_tail():
    reader = LogReader()
    lines = [
        "[info] Input #0, x11grab, from ':0+0,0':",
        "[info]   Duration: N/A, start: 1796044160.857371, bitrate: N/A",
        "[silencedetect @ 0x55861f3590c0] [info] silence_end: 6 | silence_duration: 4",
        "[x11grab @ 0x5566] [warning] Thread message queue blocking; consider raising the thread_queue_size",
        "[freezedetect @ 0x55cc33a15740] [info] lavfi.freezedetect.freeze_start: 1.9",
        "[silencedetect @ 0x55861f3590c0] [info] silence_start: 2",
        "[error] Filtergraph 'x' was specified through the -vf/-af/-filter option for output stream 0:0.",
        "-vf/-af/-filter and -filter_complex cannot be used together for the same stream.",
    ]
    found = [reader.line(line) for line in lines]
    assert found == [None, None, None, None, "frozen", "silence", None, None]
    assert reader.tail == [
        "[x11grab @ 0x5566] Thread message queue blocking; consider raising the thread_queue_size",
        "Filtergraph 'x' was specified through the -vf/-af/-filter option for output stream 0:0.",
        "-vf/-af/-filter and -filter_complex cannot be used together for the same stream.",
    ]


def test_a_warning_that_mentions_silence_start_is_not_a_detection():
    reader = LogReader()
    assert reader.line("[silencedetect @ 0x1] [warning] silence_start: could not be measured") is None
    assert reader.tail == ["[silencedetect @ 0x1] silence_start: could not be measured"]


def block(**values: object) -> list[str]:
    return [f"{key}={value}" for key, value in values.items()] + ["progress=continue"]


def test_progress_keeps_counting_across_the_parts_of_a_paused_capture():
    tracker = ProgressTracker(target_fps=FPS)
    for line in block(frame=150, out_time_us=5_100_000, total_size=1000, drop_frames=1):
        tracker.feed(line, now=100.0)
    tracker.next_part()
    assert tracker.part.frames == 0 and tracker.progress.frames == 150
    for line in block(frame=30, out_time_us=1_050_000, total_size=200, drop_frames=2):
        progress = tracker.feed(line, now=110.0)
    assert progress is not None and tracker.part.frames == 30
    assert (progress.frames, progress.bytes, progress.dropped) == (180, 1200, 3)
    assert progress.elapsed == pytest.approx(6.15)


def test_capture_files_are_named_by_the_attempt_folder(tmp_path):
    video = AttemptFolder.under(tmp_path, "r")
    voice = AttemptFolder.under(tmp_path, "r", media_name=AUDIO_NAME)
    assert [video.capture_part(n, live=False).name for n in (1, 2, 3)] == [
        "capture.mkv",
        "capture-002.mkv",
        "capture-003.mkv",
    ]
    assert [video.capture_part(n, live=True).name for n in (1, 2)] == [MEDIA_NAME, "capture-002.mp4"]
    assert [voice.capture_part(n, live=False).name for n in (1, 2)] == ["capture.mka", "capture-002.mka"]
    assert [voice.capture_part(n, live=True).name for n in (1, 2)] == [AUDIO_NAME, "capture-002.m4a"]
    assert voice.media.name == AUDIO_NAME and video.media.name == MEDIA_NAME


@pytest.mark.parametrize(("repeats_per_second", "behind"), [(0.5, False), (1.0, False), (2.5, True), (4.0, True)])
def test_a_capture_repeating_frames_in_real_time_is_behind_after_ten_seconds(repeats_per_second, behind):
    """Speed 1.0 and 30 fps out, but FFmpeg filling late grabs with repeats: the machine is out of cores.
    Reported as FFmpeg does, four times a second, so most reports carry no new repeat."""
    tracker = ProgressTracker(target_fps=FPS)
    progress = None
    for tick in range(16 * 4):
        second = tick / 4
        lines = block(
            frame=int(FPS * second),
            out_time_us=int(second * 1_000_000),
            fps=FPS,
            speed="1.0x",
            dup_frames=int(repeats_per_second * second),
        )
        for line in lines:
            progress = tracker.feed(line, now=1000.0 + second)
    assert progress is not None and progress.behind is behind
    assert tracker.ever_behind is behind
