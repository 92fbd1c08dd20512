"""The capture path's measured A/V offset, applied to every recording on this machine.

Between Chromium playing a frame and a sample and FFmpeg stamping them lies a systematic offset of the
machine (its audio path's latency against its screen's): +10 ms on the reference machine, +33 ms on
another of the same kind. Every recorder measures it itself: at warm-up, when the stored calibration is
missing or was made with other versions, it records the sync clip (`recorder.calibrate`) and stores the
result in RECORDS_DIR/.calibration/<key digest>.json, one file per key, so recorders of two settings on
one machine keep one each. Precedence: RECORDER_AV_OFFSET_MS, then the stored calibration for this
machine's key, then one made by hand with an older version (RECORDS_DIR/.calibration.json, no key), then
the default measured on the reference machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel

from recorder.config import RecorderSettings
from recorder.source import audio
from recorder.versions import chromium_version, ffmpeg_version

# Mean offset (audio minus video, ms) of the capture path on the reference 2-core machine (docs/benchmarks.md).
# Each recording also has its own constant error of up to about a frame, which no constant can remove; most
# of it is how late Chromium presents the page's video, which a page that plays one reports, so finalize
# corrects such a recording by its own load (`on_time_offset_ms`, recorder.source.presentation).
DEFAULT_AV_OFFSET_MS = 10.0
# How the offset is measured: another way of measuring means the stored ones are measured again. Six short
# runs without the highest and the lowest replaced the mean of three long ones, which one far-off run moved;
# the median of the runs by their page's presentation came with the correction by it; then runs that stepped
# within the file were made again and left out.
METHOD = "trimmed mean of steady runs, and the median by their presentation"
# The measurement: RUNS recordings of RUN_SECONDS each that held one offset (about 27 markers); from
# TRIM_FROM runs on, the highest and the lowest are left out. A file's offset holds to 0.1 ms within it and
# moves by about 10 ms (one standard deviation) from file to file, so many short runs measure it better
# than a few long ones.
RUNS = 6
RUN_SECONDS = 5.0
TRIM_FROM = 4
# A run whose markers spread more than this (their standard deviation) stepped within its file and is made
# again (recorder.calibrate). A file that held one offset spreads by 0.0-3.4 ms, one that stepped by a frame
# by 13-17 ms (`bench sync` on 2026-12-02; one file of 24 spread 6.8 ms, and such a run is made again too).
STEADY_STD_MS = 5.0


class Calibration(BaseModel):
    av_offset_ms: float
    samples: int
    measured_at: float
    fps: int
    note: str = ""
    key: str = ""  # what the offset was measured with (calibration_key); another key means measure again
    runs: list[float] = []  # the correction each calibration recording needed (ms), the ones left out too
    latenesses: list[float | None] = []  # how late each one's page presented the clip (ms; None: not seen)
    steady: list[bool] = []  # whether each one held one offset (only those count when enough did)
    # The offset for a page load that presents its video exactly when due; one whose video is L ms late
    # needs L ms less. None when the runs did not see the presentation.
    on_time_offset_ms: float | None = None


def calibration_key(settings: RecorderSettings) -> str:
    """The machine's type and what on it moves the offset: the browser, FFmpeg, the screen's mode, the
    grabber and the audio sink's latency; and how it was measured. Not the host's name: machines of one
    type share a calibration when they share RECORDS_DIR."""
    return _key(settings.chromium_path, settings.screen_mode, settings.grabber)


@cache
def _key(chromium_path: str, screen_mode: bool, grabber: str) -> str:
    screen = "screen-mode" if screen_mode else "screen-60hz"
    browser = f"chromium {chromium_version(chromium_path)}"
    sink = f"keeper {audio.KEEPER_LATENCY_MS} ms"
    parts = [_machine_type(), browser, f"ffmpeg {ffmpeg_version()}", screen, grabber, sink, METHOD]
    return "|".join(parts)


def _machine_type() -> str:
    model = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} x{os.cpu_count()}"


def calibration_path(settings: RecorderSettings) -> Path:
    digest = hashlib.sha256(calibration_key(settings).encode()).hexdigest()[:16]
    return settings.records_dir / ".calibration" / f"{digest}.json"


@dataclass(frozen=True)
class InForce:
    """The corrections a recording applies, read from one look at the stored calibration.

    `av_offset_ms`: the capture's A/V correction, set by hand or this machine's calibrated mean.
    `on_time_offset_ms`: the correction for a page load that presents its video exactly when due; one whose
    video is L ms late (recorder.source.presentation) needs L ms less. None where no correction by the
    presentation applies: an offset set by hand, or no calibration that measured it."""

    av_offset_ms: float
    on_time_offset_ms: float | None


def in_force(settings: RecorderSettings) -> InForce:
    if settings.av_offset_ms is not None:
        return InForce(settings.av_offset_ms, None)
    saved = current(settings)
    if saved is None:
        return InForce(DEFAULT_AV_OFFSET_MS, None)
    return InForce(saved.av_offset_ms, saved.on_time_offset_ms)


def av_offset_ms(settings: RecorderSettings) -> float:
    """InForce.av_offset_ms alone."""
    return in_force(settings).av_offset_ms


def current(settings: RecorderSettings) -> Calibration | None:
    """The calibration stored for this machine's key; else one made by hand by an older version (no key)."""
    saved = load(calibration_path(settings))
    if saved is not None and saved.key == calibration_key(settings):
        return saved
    legacy = load(settings.calibration_file)
    return legacy if legacy is not None and not legacy.key else None


def load(path: Path) -> Calibration | None:
    try:
        return Calibration.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def save(
    path: Path,
    offset_ms: float,
    *,
    samples: int,
    fps: int,
    note: str = "",
    key: str = "",
    runs: list[float] | None = None,
    latenesses: list[float | None] | None = None,
    steady: list[bool] | None = None,
    on_time_offset_ms: float | None = None,
) -> Calibration:
    cal = Calibration(
        av_offset_ms=round(offset_ms, 2),
        samples=samples,
        measured_at=time.time(),
        fps=fps,
        note=note,
        key=key,
        runs=runs or [],
        latenesses=latenesses or [],
        steady=steady or [],
        on_time_offset_ms=on_time_offset_ms,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(cal.model_dump(), indent=2) + "\n")
    partial.replace(path)  # a recorder reading it meanwhile sees the old file or the new one, never half
    return cal
