"""The quality analyzer finds what was put into media made here with FFmpeg lavfi.

Each file is a few seconds long and small, and its properties (offsets, spans, gaps, tones) are set
at generation time, so every expected value below comes from how the file was made.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from contract.errors import ErrorCode, RecorderError
from recorder.quality import analyze_file, tone_level
from recorder.quality.audio import RATE, _Accumulator
from recorder.quality.beeps import detect_beeps
from recorder.quality.flashes import detect_flashes
from recorder.quality.spans import runs
from recorder.quality.sync import measure_sync, pair_markers
from recorder.reference.media import ReferenceMedia, make_sync_file, make_tiles_file, run_ffmpeg
from recorder.reference.page import ReferencePage

FPS = 30
FRAME = 1 / FPS


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality")


# --- sync markers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_ms", [80.0, -40.0])
def test_sync_offset_is_measured_with_its_sign(media_dir: Path, offset_ms: float) -> None:
    clip = make_sync_file(media_dir / f"sync{offset_ms:+.0f}.mp4", 6.0, offset_ms=offset_ms)

    report = analyze_file(clip, expected_fps=FPS)

    sync = report.sync
    assert sync is not None
    assert sync.flashes == 6  # at 0.5, 1.5, ... 5.5 s
    assert sync.markers == 6
    assert sync.mean_ms == pytest.approx(offset_ms, abs=12)
    assert sync.p95_abs_ms == pytest.approx(abs(offset_ms), abs=12)
    assert sync.std_ms is not None and sync.std_ms < 5
    assert sync.drift_ms is not None and abs(sync.drift_ms) < 5
    assert report.video is not None and report.video.gap_count == 0


def test_flashes_are_found_in_one_tile_of_a_moving_grid(media_dir: Path) -> None:
    sync = make_sync_file(media_dir / "tile-sync.mp4", 6.0, offset_ms=80.0)
    moving = [
        make_tiles_file(media_dir / f"tile-{pattern}.mp4", 6.0, pattern=pattern) for pattern in ("testsrc", "testsrc2")
    ]
    grid = media_dir / "grid.mp4"
    run_ffmpeg(
        [
            "-i", str(sync), "-i", str(moving[0]), "-i", str(moving[1]),
            "-filter_complex", "[0:v][1:v][2:v][1:v]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0[v]",
            "-map", "[v]", "-map", "0:a", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(grid),
        ]
    )  # fmt: skip

    report = analyze_file(grid)

    assert report.video is not None and (report.video.width, report.video.height) == (640, 360)
    assert report.sync is not None
    assert report.sync.flashes == 6
    assert report.sync.markers == 6
    assert report.sync.mean_ms == pytest.approx(80.0, abs=12)


def test_a_file_without_markers_has_no_sync(media_dir: Path) -> None:
    clip = media_dir / "plain.mp4"
    run_ffmpeg(
        [
            "-f", "lavfi", "-i", "testsrc2=s=320x180:r=30:d=3",
            "-f", "lavfi", "-i", "sine=f=1000:sample_rate=48000:d=3",
            "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(clip),
        ]
    )  # fmt: skip

    report = analyze_file(clip)

    assert report.sync is None
    assert report.audio is not None and report.audio.tone_level > 0.8
    assert report.video is not None and report.video.frames == 90


# --- spans and timing -----------------------------------------------------------------------------


def test_black_and_silent_spans_are_found_where_they_were_made(media_dir: Path) -> None:
    clip = media_dir / "spans.mp4"
    run_ffmpeg(
        [
            # black on frames 30..59 (1.0 s to 2.0 s); silence from 2.5 s to 3.5 s
            "-f", "lavfi", "-i",
            "testsrc2=s=320x180:r=30:d=4,drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(n,30,59)'",
            "-f", "lavfi", "-i", "aevalsrc=exprs='0.3*sin(2*PI*440*t)*(1-between(t,2.5,3.5))':s=48000:d=4",
            "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-b:a", "128k", str(clip),
        ]
    )  # fmt: skip

    report = analyze_file(clip)

    assert report.video is not None and report.audio is not None
    assert len(report.video.black) == 1
    assert report.video.black[0].at == pytest.approx(1.0, abs=0.04)
    assert report.video.black[0].length == pytest.approx(1.0, abs=0.07)
    assert len(report.audio.silent) == 1
    assert report.audio.silent[0].at == pytest.approx(2.5, abs=0.03)
    assert report.audio.silent[0].length == pytest.approx(1.0, abs=0.05)
    assert report.video.frozen == report.video.black  # a black screen is also a held picture
    assert report.sync is None


def test_an_audio_only_file_is_reported_on_its_sound_alone(media_dir: Path) -> None:
    clip = media_dir / "voice.m4a"
    run_ffmpeg(
        [
            # a 1 kHz tone at half scale (-6 dBFS peak, -9 dBFS RMS), silent from 2.0 s to 3.0 s, 4 s in all
            "-f", "lavfi", "-i", "aevalsrc=exprs='0.5*sin(2*PI*1000*t)*(1-between(t,2,3))':s=48000:d=4",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "mp4", "-movflags", "+faststart", str(clip),
        ]
    )  # fmt: skip

    report = analyze_file(clip)

    assert report.video is None and report.sync is None
    assert report.audio is not None and report.audio.codec == "aac" and report.audio.channels == 2
    assert report.duration == pytest.approx(4.0, abs=0.1)
    assert len(report.audio.silent) == 1
    assert report.audio.silent[0].at == pytest.approx(2.0, abs=0.05)
    assert report.audio.silent[0].length == pytest.approx(1.0, abs=0.08)
    # Three seconds of the tone in four: RMS -9 dBFS + 10*log10(3/4) = -10.3 dBFS.
    assert report.audio.rms_dbfs == pytest.approx(-10.3, abs=0.7)
    assert report.audio.peak_dbfs == pytest.approx(-6.0, abs=0.7)
    assert report.audio.tone_level > 0.9


def test_missing_frames_are_reported_as_one_gap(media_dir: Path) -> None:
    clip = media_dir / "gap.mkv"
    run_ffmpeg(
        [
            # frames 45..59 dropped with their timestamps kept: 1.467 s -> 2.000 s is one 0.533 s step
            "-f", "lavfi", "-i", "testsrc2=s=320x180:r=30:d=4,select='not(between(n,45,59))'",
            "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast", str(clip),
        ]
    )  # fmt: skip

    report = analyze_file(clip, expected_fps=FPS)

    video = report.video
    assert video is not None
    assert video.frames == 120 - 15
    assert video.gap_count == 1
    assert video.gaps[0].at == pytest.approx(44 * FRAME, abs=0.005)
    assert video.gaps[0].length == pytest.approx(16 * FRAME, abs=0.005)
    assert video.longest_gap == video.gaps[0].length
    assert video.delivered_fps < 28.0
    assert report.audio is None and report.sync is None


def test_a_held_picture_is_a_frozen_span(media_dir: Path) -> None:
    clip = media_dir / "frozen.mp4"
    run_ffmpeg(
        [
            # 2 s of motion, then the last frame (at 59/30 s) held for 1.5 s
            "-f", "lavfi", "-i", "testsrc2=s=320x180:r=30:d=2,tpad=stop_mode=clone:stop_duration=1.5",
            "-c:v", "libx264", "-preset", "veryfast", str(clip),
        ]
    )  # fmt: skip

    report = analyze_file(clip)

    video = report.video
    assert video is not None
    assert len(video.frozen) == 1
    assert video.frozen[0].at == pytest.approx(59 * FRAME, abs=0.005)
    assert video.frozen[0].length == pytest.approx(1.5 + FRAME, abs=0.04)
    assert video.repeated_frames == pytest.approx(45, abs=1)
    assert video.gap_count == 0 and video.black == []


# --- tones ----------------------------------------------------------------------------------------


def test_tone_level_tells_440_hz_from_1_khz(media_dir: Path) -> None:
    files = {}
    for hz in (440, 1000):
        files[hz] = media_dir / f"tone{hz}.m4a"
        run_ffmpeg(["-f", "lavfi", "-i", f"sine=f={hz}:sample_rate=48000:d=2", "-c:a", "aac", str(files[hz])])

    own_440, other_440 = tone_level(files[440], 440), tone_level(files[440], 1000)
    own_1k, other_1k = tone_level(files[1000], 1000), tone_level(files[1000], 440)

    assert own_440 > 0.8 and own_1k > 0.8
    assert other_440 < 0.01 and other_1k < 0.01


# --- the report as a whole ------------------------------------------------------------------------


def test_report_is_json_and_describes_the_streams(media_dir: Path) -> None:
    clip = make_sync_file(media_dir / "facts.mkv", 3.0, width=160, height=90)

    report = analyze_file(clip)
    data = json.loads(json.dumps(report.model_dump()))

    assert data["duration"] == pytest.approx(3.0, abs=0.1)
    assert data["video"]["codec"] == "h264"
    assert (data["video"]["width"], data["video"]["height"]) == (160, 90)
    assert data["video"]["frames"] == 90
    assert data["video"]["delivered_fps"] == pytest.approx(30.0, abs=0.5)
    assert data["audio"]["codec"] == "aac"
    assert data["audio"]["sample_rate"] == 48000
    assert data["audio"]["channels"] == 1
    assert data["audio"]["silent"] == []  # the noise bed under the beeps is not silence
    assert data["sync"]["markers"] == 3


def test_analysis_is_faster_than_real_time(media_dir: Path) -> None:
    clip = make_sync_file(media_dir / "hd.mp4", 12.0, width=1280, height=720)

    started = time.monotonic()
    report = analyze_file(clip)
    took = time.monotonic() - started

    assert report.sync is not None and report.sync.markers == 12
    assert took < 12.0, f"12 s of 720p30 took {took:.1f} s to analyze"


def test_unreadable_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecorderError) as missing:
        analyze_file(tmp_path / "nothing.mp4")
    assert missing.value.code == ErrorCode.INVALID_ARGUMENT

    text = tmp_path / "notes.mp4"
    text.write_text("not media")
    with pytest.raises(RecorderError) as garbage:
        analyze_file(text)
    assert garbage.value.code == ErrorCode.INVALID_ARGUMENT
    assert "notes.mp4" in garbage.value.message


# --- detectors on synthetic signals ---------------------------------------------------------------


def _audio(samples: np.ndarray, tone_hz: float):
    accumulator = _Accumulator(tone_hz)
    for start in range(0, len(samples), 12_345):  # uneven chunks, as a pipe delivers them
        accumulator.feed(samples[start : start + 12_345])
    return accumulator.finish()


def test_beep_onsets_have_sub_millisecond_precision() -> None:
    rng = np.random.default_rng(7)
    onsets = np.array([0.5003, 1.5117, 2.4991, 3.50042])
    t = np.arange(int(4.2 * RATE)) / RATE
    gate = np.zeros_like(t)
    for onset in onsets:
        gate[(t >= onset) & (t < onset + 0.1)] = 1.0
    samples = (0.5 * np.sin(2 * np.pi * 1000 * t) * gate + rng.uniform(-0.017, 0.017, len(t))).astype(np.float32)

    found = detect_beeps(_audio(samples, 1000.0))

    assert len(found) == len(onsets)
    assert np.max(np.abs(found - onsets)) < 0.0005


def test_beeps_at_another_frequency_are_not_markers() -> None:
    t = np.arange(3 * RATE) / RATE
    gate = ((t % 1.0) >= 0.5) & ((t % 1.0) < 0.6)
    samples = (0.5 * np.sin(2 * np.pi * 440 * t) * gate).astype(np.float32)

    assert detect_beeps(_audio(samples, 1000.0)).size == 0
    assert detect_beeps(_audio(samples, 440.0)).size == 3


def test_flash_group_is_told_from_moving_and_steady_cells() -> None:
    rng = np.random.default_rng(3)
    frames, cells = 150, 144
    pts = np.arange(frames) * FRAME
    grid = rng.integers(0, 140, size=(frames, cells)).astype(np.uint8)  # moving, never near white
    flash_cells = np.arange(0, 40)
    grid[:, flash_cells] = 10
    flash_frames = [15, 45, 75, 105, 135]
    for frame in flash_frames:
        grid[frame : frame + 3, flash_cells] = 250
    grid[60:, 100] = 255  # a cell that turns white and stays: a scene change, not a flash
    grid[[20, 90], 120] = 250  # a lone cell flashing twice out of step

    found = detect_flashes(grid, pts)

    assert found == pytest.approx(pts[flash_frames])


def test_pairing_takes_the_nearest_beep_within_400_ms() -> None:
    flashes = np.array([1.0, 2.0, 3.0, 4.0])
    beeps = np.array([1.05, 2.5, 2.98, 3.9])

    at, offsets = pair_markers(flashes, beeps)

    assert at.tolist() == [1.0, 3.0, 4.0]  # 2.5 is 500 ms from the flash at 2.0
    assert offsets == pytest.approx([0.05, -0.02, -0.1])


def test_drift_compares_the_last_fifth_with_the_first() -> None:
    flashes = np.arange(10, dtype=np.float64)
    beeps = flashes + np.linspace(0.010, 0.019, 10)  # audio slips 1 ms later per marker

    sync = measure_sync(flashes, beeps, 1000.0)

    assert sync is not None and sync.markers == 10
    assert sync.mean_ms == pytest.approx(14.5, abs=0.05)
    assert sync.drift_ms == pytest.approx(8.0, abs=0.05)  # mean of last two minus mean of first two
    assert measure_sync(flashes[:1], beeps, 1000.0) is None


def test_runs_are_half_open_index_ranges() -> None:
    assert runs(np.array([0, 1, 1, 0, 1], dtype=bool)) == [(1, 3), (4, 5)]
    assert runs(np.zeros(0, dtype=bool)) == []


# --- the reference media and the test page --------------------------------------------------------


def test_reference_clips_carry_their_markers_in_sync(test_media: ReferenceMedia) -> None:
    for tone in (1000, 440):
        report = analyze_file(test_media.sync(tone), tone_hz=tone)
        assert report.sync is not None
        assert report.sync.markers == 10
        assert report.sync.mean_ms is not None and abs(report.sync.mean_ms) <= 1.5
        assert report.audio is not None and report.audio.silent == []
        assert tone_level(test_media.sync(tone), 1440 - tone) < 0.01  # 1000 <-> 440
    for tiles in test_media.tiles:
        report = analyze_file(tiles)
        assert report.sync is None
        assert report.video is not None and report.video.frozen == [] and report.audio is None


def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_test_page_serves_grid_state_and_errors(test_page: ReferencePage) -> None:
    status, grid = _fetch(test_page.url("/grid?tone=440&ready=selector&signal=start&delay=2&end=5"))
    assert status == 200
    assert grid.count("<video") == 4 and "sync-440.webm" in grid and "muted" not in grid
    assert "START_RECORDING" in grid and "END_RECORDING" in grid and "'ready'" in grid
    plain = _fetch(test_page.url("/grid"))[1]
    assert "sync-1000.webm" in plain and "START_RECORDING" not in plain and "END_RECORDING" not in plain
    assert _fetch(test_page.url("/status/404"))[0] == 404
    assert _fetch(test_page.url("/grid?tone=123"))[0] == 404
    assert _fetch(test_page.url("/media/sync-1000.webm"))[0] == 200
    assert _fetch(test_page.url("/state/set"))[0] == 200
    assert "STATE" in _fetch(test_page.url("/state/report"))[1]
    assert "/hold?seconds=60" in _fetch(test_page.url("/slow"))[1]


def test_the_longest_repeat_counts_the_frames_of_the_longest_held_picture_after_the_first():
    import numpy as np

    from recorder.quality.probe import StreamFacts
    from recorder.quality.video import VideoSignals, analyze_video

    # 0 = unchanged from the frame before: runs of 4, 1 and 3 repeats.
    change = np.array([255, 0, 0, 0, 0, 9, 0, 9, 0, 0, 0, 9, 9], dtype=np.int16)
    count = len(change)
    signals = VideoSignals(
        pts=np.arange(count) / 30.0,
        black=np.zeros(count, bool),
        change=change,
        cells=np.zeros((count, 144), np.uint8),
    )
    report = analyze_video(signals, StreamFacts(index=0, codec="h264", frame_rate=30.0), expected_fps=30)
    assert report.repeated_frames == 8
    assert report.longest_repeat == 4
