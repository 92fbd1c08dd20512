"""Measure this machine's capture A/V offset with the sync clip and store it: by hand (`recorder calibrate`),
or by every recorder itself at warm-up when no current calibration exists (`ensure_calibrated`).

Records the reference page (the sync clip in a 2x2 grid of moving tiles) with the offset currently in
force, measures what is left between flashes and beeps, and stores the sum, so the next recordings land
flash and beep together. Each recording is a new FFmpeg and a new page, so the phases that differ between
recordings (docs/recorder.md) average out over the runs instead of entering the stored offset, and the
highest and the lowest run are left out, so that one far off does not move it. A run whose markers did not
hold one offset (the file stepped by a frame between them) measured neither of its two: it is recorded and
stored, but counted only when too few runs held (`calibration.STEADY_STD_MS`), and another run is made in its place, up
to twice the runs asked for.

Each run also reads how late its page load presented the clip (recorder.source.presentation). What a file
needed plus that lateness is nearly the same for every load, so its median is stored too
(`on_time_offset_ms`): a recording whose page plays a video is then corrected for its own load, not by the
mean of many.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from contract.spec import RecordingSpec
from recorder.attempt import AttemptFolder
from recorder.capture import calibration
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder
from recorder.reference.media import make_reference_media
from recorder.reference.page import ReferencePage

log = structlog.get_logger(__name__)

MIN_MARKERS = 4
# At warm-up, the measurement recorder/capture/calibration.py describes: some 60 s once per machine and
# version, up to twice that when runs step.
SELF_RUNS = calibration.RUNS
SELF_DURATION = calibration.RUN_SECONDS
# Each run also loads the page, finalizes and analyses its file (about 3 s on a quiet 2-core machine; far
# more is allowed for a busy one); another recorder's calibration is waited for as long, and a bit.
SELF_TIMEOUT = 2 * SELF_RUNS * (SELF_DURATION + 20.0)
LOCK_WAIT = SELF_TIMEOUT + 30.0  # another recorder's calibration, then on with the default
RETRY_AFTER = 3600.0  # a failed calibration is not tried again for this long


@dataclass(frozen=True)
class Run:
    """One calibration recording: the correction its file needed (the one applied plus the residual over
    its sync markers; ms, audio minus video), its markers, how late its page presented the clip, and how
    far its markers spread (their standard deviation, ms)."""

    needed_ms: float
    markers: int
    lateness_ms: float | None = None
    spread_ms: float | None = None

    @property
    def steady(self) -> bool:
        """The file held one offset: its markers measured the same thing. A spread not measured counts as
        held (bench sync's figures; a calibration run always has one)."""
        return self.spread_ms is None or self.spread_ms <= calibration.STEADY_STD_MS

    @property
    def on_time_ms(self) -> float | None:
        """What the file would have needed had its page presented the clip when due."""
        return None if self.lateness_ms is None else self.needed_ms + self.lateness_ms


def trimmed_offset(runs: list[Run]) -> tuple[float, int]:
    """The marker-weighted mean of what the runs needed, and their markers, leaving out the highest and the
    lowest run from calibration.TRIM_FROM runs on: one run far off (a fresh recorder's first page read +51 and
    +39 ms where the next ones read +10 to +22) moves it little, and a sound one is not wasted."""
    return _trimmed([(run.needed_ms, run.markers) for run in runs])


def median_on_time(runs: list[Run]) -> float | None:
    """The median of what the runs would have needed on time; None unless at least calibration.TRIM_FROM
    runs saw their page's presentation. Most loads' sums sit within a few ms of each other, and a few are
    a frame or more above (a file that lost pictures, or stepped): the median keeps two such runs of six
    out where a mean without the highest and the lowest would keep one (docs/benchmarks.md)."""
    seen = [run.on_time_ms for run in runs if run.on_time_ms is not None]
    return statistics.median(seen) if len(seen) >= calibration.TRIM_FROM else None


def counted(runs: list[Run], wanted: int) -> list[Run]:
    """The steady runs when enough held: calibration.TRIM_FROM, or all `wanted` when fewer were asked for.
    Else every run: a machine that steps in most files still gets an offset from all it measured, trimmed,
    and the median by presentation, which the stepped runs, a frame off both ways, move least."""
    steady = [run for run in runs if run.steady]
    return steady if len(steady) >= min(wanted, calibration.TRIM_FROM) else runs


def _trimmed(values: list[tuple[float, int]]) -> tuple[float, int]:
    kept = sorted(values)
    if len(kept) >= calibration.TRIM_FROM:
        kept = kept[1:-1]
    markers = sum(count for _, count in kept)
    if not markers:
        raise ValueError("no calibration run with sync markers")
    return sum(value * count for value, count in kept) / markers, markers


async def measure_runs(settings: RecorderSettings, *, duration: float, runs: int) -> list[Run]:
    """Recordings of the reference page, each with the residual offset it read, until `runs` of them were
    steady or twice `runs` were made."""
    measured: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="recorder-calibrate-") as tmp:
        media = await asyncio.to_thread(make_reference_media, Path(tmp) / "media")
        page = ReferencePage(media)
        page.start()
        try:
            # The reference page is the recorder's own, on loopback: its egress guard may reach that, and only for this.
            allow = [*settings.url_allowlist, f"127.0.0.1:{page.port}"]
            own_page = settings.model_copy(update={"url_allowlist": allow, "self_calibrate": False})
            async with Recorder(own_page) as recorder:
                for index in range(2 * runs):
                    if sum(run.steady for run in measured) >= runs:
                        break
                    spec = RecordingSpec(url=page.url("/grid?tone=1000"), duration=duration)
                    folder = AttemptFolder.under(Path(tmp), f"calibration-{index}")
                    result = await recorder.record(spec, folder=folder)
                    sync = (result.quality or {}).get("sync") or {}
                    if result.error is not None or not sync.get("markers"):
                        raise RuntimeError(f"calibration recording {index + 1} gave no sync markers: {result.error}")
                    sidecar = json.loads(result.sidecar.read_text()) if result.sidecar else {}
                    applied = sidecar.get("av_offset_correction_ms", calibration.av_offset_ms(settings))
                    lateness = sidecar.get("presentation_lateness_ms")
                    run = Run(applied + sync["mean_ms"], sync["markers"], lateness, sync.get("std_ms"))
                    measured.append(run)
                    log.info(
                        "calibration run", run=index + 1, residual_ms=sync["mean_ms"], steady=run.steady, **asdict(run)
                    )
        finally:
            page.stop()
    return measured


def store(
    settings: RecorderSettings, applied: float, runs: list[Run], how: str, wanted: int = calibration.RUNS
) -> calibration.Calibration:
    """What the counted runs needed, trimmed, under this machine's key, with every run's figures."""
    kept = counted(runs, wanted)
    needed, markers = trimmed_offset(kept)
    if markers < MIN_MARKERS:
        raise TooFewMarkers(f"only {markers} sync markers")
    on_time = median_on_time(kept)
    return calibration.save(
        calibration.calibration_path(settings),
        needed,
        samples=markers,
        fps=30,
        note=f"{how}: {needed - applied:+.1f} ms with {applied:+.1f} ms applied",
        key=calibration.calibration_key(settings),
        runs=[round(run.needed_ms, 1) for run in runs],
        latenesses=[run.lateness_ms for run in runs],
        steady=[run.steady for run in runs],
        on_time_offset_ms=None if on_time is None else round(on_time, 2),
    )


class TooFewMarkers(RuntimeError):
    """The runs, trimmed, kept fewer than MIN_MARKERS sync markers."""


async def measure_and_store(
    settings: RecorderSettings, *, duration: float, runs: int, how: str
) -> calibration.Calibration:
    """Measure with the offset in force, trim the runs and store the result: by hand and at warm-up alike."""
    applied = calibration.av_offset_ms(settings)
    measured = await measure_runs(settings, duration=duration, runs=runs)
    return store(settings, applied, measured, how, wanted=runs)


async def run_calibration(
    settings: RecorderSettings, *, duration: float = SELF_DURATION, runs: int = SELF_RUNS
) -> int:
    try:
        saved = await measure_and_store(settings, duration=duration, runs=runs, how="measured by hand")
    except TooFewMarkers as exc:
        print(f"calibration failed: {exc}; record longer (--duration)", file=sys.stderr)
        return 1
    except (RuntimeError, ValueError) as exc:
        print(f"calibration failed: {exc}", file=sys.stderr)
        return 1
    if settings.av_offset_ms is not None:
        print("note: RECORDER_AV_OFFSET_MS is set and overrides the stored calibration", file=sys.stderr)
    print(json.dumps({"file": str(calibration.calibration_path(settings)), **saved.model_dump()}, indent=2))
    return 0


async def ensure_calibrated(settings: RecorderSettings) -> calibration.Calibration | None:
    """Calibrate before the first recording unless the offset is set or a current calibration is stored.
    Recorders sharing RECORDS_DIR take turns (a file lock, waited for LOCK_WAIT at most): the first measures,
    the others find its result; one that waited in vain goes on with the default and remembers nothing. A
    failure is logged, remembered for RETRY_AFTER (so the next recorder does not spend its start on it
    again) and leaves the default in force; it never stops the recorder."""
    if not settings.self_calibrate or settings.av_offset_ms is not None:
        return None
    try:
        return await _calibrate_once(settings)
    except CalibrationBusy as exc:  # not a failure: the next recorder looks again
        log.warning("another recorder is still calibrating; the default offset stays in force", error=str(exc))
        return None
    except Exception as exc:  # a calibration is never worth a recorder
        log.warning("A/V calibration failed; the default offset stays in force", error=str(exc)[:300])
        with contextlib.suppress(OSError):
            _failed_marker(settings).write_text(f"{time.time()}\n{str(exc)[:300]}\n")
        return None


async def _calibrate_once(settings: RecorderSettings) -> calibration.Calibration | None:
    found = await asyncio.to_thread(calibration.current, settings)
    if found is not None or _failed_lately(settings):
        return found
    path = calibration.calibration_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with _turn(path.with_suffix(".lock")):
        found = await asyncio.to_thread(calibration.current, settings)
        if found is not None or _failed_lately(settings):
            return found
        started = time.monotonic()
        log.info("calibrating A/V sync on this machine (once per machine type and version)", runs=SELF_RUNS)
        measuring = measure_and_store(settings, duration=SELF_DURATION, runs=SELF_RUNS, how="measured at warm-up")
        saved = await asyncio.wait_for(measuring, SELF_TIMEOUT)
        took = round(time.monotonic() - started, 1)
        log.info("A/V calibration stored", av_offset_ms=saved.av_offset_ms, markers=saved.samples, took_s=took)
        return saved


def _failed_marker(settings: RecorderSettings) -> Path:
    return calibration.calibration_path(settings).with_suffix(".failed")


def _failed_lately(settings: RecorderSettings) -> bool:
    try:
        return time.time() - _failed_marker(settings).stat().st_mtime < RETRY_AFTER
    except OSError:
        return False


class CalibrationBusy(Exception):
    """Another recorder held the calibration's lock for LOCK_WAIT."""


@contextlib.asynccontextmanager
async def _turn(lock_path: Path) -> AsyncIterator[None]:
    """The calibration's lock, or CalibrationBusy after LOCK_WAIT (another recorder is still measuring)."""
    with lock_path.open("a") as handle:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CalibrationBusy(f"another recorder held {lock_path} for {LOCK_WAIT:g} s") from None
                await asyncio.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
