"""Finalize: turn what a recording captured into rec.mp4 and the metadata rec.json will hold.

Ordinary mode remuxes capture.mkv to rec.mp4 (stream copy, `moov` first). Live mode wrote rec.mp4 itself
(fragmented, `moov` first, perhaps uploaded as it grew), which is adopted byte for byte. A paused
recording left several capture parts: they are joined into rec.mp4 (also in live mode, where the joined
file replaces the first part, so rec.mp4 is rebuilt and a growing upload of it is no longer valid). An
audio-only recording is rec.m4a, made the same ways. When no file can be made the capture files are kept,
for a person to recover, and the error says why.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from contract.errors import RecorderError
from contract.protocol import ErrorInfo
from recorder.capture.captured import Captured
from recorder.capture.pause import PauseSpan
from recorder.finalize.finished import Finished
from recorder.finalize.remux import join_parts, remux_to_mp4
from recorder.finalize.sidecar import Sidecar
from recorder.timings import Timings

log = structlog.get_logger(__name__)


def _length_asked(captured: Captured) -> float | None:
    """How long the file should be: from its first frame to the moment the recording was meant to end (the
    duration's end, or the stop), however far an overloaded capture ran past it. None when unknown."""
    first = captured.timings.first_frame
    if captured.ends_at is None or first is None or captured.pauses:
        return None
    return max(0.0, captured.ends_at - first) or None


async def finalize(captured: Captured) -> Finished:
    """Make rec.mp4 from the capture; rec.json is left to `Finished.complete`, once the analysis is in."""
    bound = log.bind(recording_id=captured.folder.recording_id)
    error = captured.error
    mp4: Path | None = None
    pauses = captured.pauses
    media = captured.folder.media
    parts = [part for part in captured.parts if part.is_file() and part.stat().st_size > 0]
    # The sound's move for the page's presentation: made by the remux of a single capture part, or of the
    # file its parts were joined into after a pause; a live upload's single file keeps the correction its
    # capture applied.
    shift_ms = 0.0
    if captured.has_media:
        try:
            if len(parts) > 1:
                lengths = await asyncio.to_thread(join_parts, parts, media)
                if len(parts) == len(captured.parts):
                    pauses = _placed(pauses, lengths)
                shift_ms = await _moved_after_the_join(captured, media, bound)
            elif captured.spec.live_upload:
                media = captured.capture_file
            else:
                shift_ms = await _remux(captured, media, bound)
            mp4 = media
            for part in captured.parts:
                if part != media:
                    part.unlink(missing_ok=True)
        except RecorderError as exc:
            bound.error("finalize failed; the capture files are kept", error=str(exc))
            error = error or exc
    timings = captured.timings.model_copy(update={"finalized": time.time()})
    files = {mp4.name: mp4} if mp4 is not None else {}
    if mp4 is None:
        files |= {part.name: part for part in captured.parts if part.is_file()}
    if captured.screenshot is not None and captured.screenshot.is_file():
        files[captured.screenshot.name] = captured.screenshot
    finished = Finished(
        folder=captured.folder,
        mp4=mp4,
        metadata=_metadata(captured, mp4, timings, error, pauses, shift_ms),
        error=error,
        stop_reason=captured.stop_reason,
        progress=captured.progress,
        blocked=captured.blocked,
        files=files,
        collected=captured.timeline,
        console_levels=captured.console_levels,
    )
    bound.info(
        "recording finished",
        ok=finished.ok,
        stop_reason=finished.stop_reason,
        error=str(error) if error else None,
        file=str(mp4) if mp4 else None,
    )
    return finished


async def _remux(captured: Captured, media: Path, bound: structlog.stdlib.BoundLogger) -> float:
    """rec.mp4 from the single capture part, with the sound moved for the page's presentation where the
    recorder asked for it; returns the move made. A move that fails is not worth the file: it is remuxed
    as captured, with the capture's own correction."""
    length = _length_asked(captured)
    shift = captured.audio_shift_ms
    if shift and await _sound_moved(captured.capture_file, media, shift, bound, length=length):
        return shift
    await asyncio.to_thread(remux_to_mp4, captured.capture_file, media, length=length)
    return 0.0


async def _moved_after_the_join(captured: Captured, media: Path, bound: structlog.stdlib.BoundLogger) -> float:
    """The joined file's sound moved for the page's presentation, all parts alike (one page load), as one
    track: moved before the join, each part's sound was put up to 15 ms off by the concat. A move that fails
    leaves the joined file as it is."""
    shift = captured.audio_shift_ms
    return shift if shift and await _sound_moved(media, media, shift, bound) else 0.0


async def _sound_moved(
    source: Path, media: Path, shift_ms: float, bound: structlog.stdlib.BoundLogger, *, length: float | None = None
) -> bool:
    """`source` remuxed to `media` with its sound moved `shift_ms` earlier; False, `media` untouched, where
    that failed."""
    try:
        await asyncio.to_thread(remux_to_mp4, source, media, length=length, audio_shift_ms=shift_ms)
    except RecorderError as exc:
        bound.warning("the sound could not be moved for the page's presentation", error=str(exc))
        return False
    return True


def _placed(pauses: list[PauseSpan], lengths: list[float]) -> list[PauseSpan]:
    """Each pause's cut where the join put it: after the parts before it (the capture only estimated it)."""
    placed = []
    for number, pause in enumerate(pauses, start=1):
        media_at = sum(lengths[:number])
        placed.append(pause.model_copy(update={"media_at": round(media_at, 3)}))
    return placed


def _metadata(
    captured: Captured, mp4: Path | None, timings: Timings, error: RecorderError | None, pauses: list[PauseSpan],
    shift_ms: float,
) -> Sidecar:
    spec = captured.spec
    return Sidecar(
        recording_id=captured.folder.recording_id,
        url=spec.url,
        spec=spec,
        timings=timings,
        start_latency=timings.start_latency,
        stop_reason=captured.stop_reason,
        file=mp4.name if mp4 else None,
        size=mp4.stat().st_size if mp4 else None,
        capture=captured.progress,
        pauses=pauses,
        behind_real_time=captured.behind_real_time,
        av_offset_correction_ms=round(captured.av_offset_correction_ms + shift_ms, 2),
        presentation_lateness_ms=captured.presentation_lateness_ms,
        presentation_shift_ms=shift_ms,
        versions=captured.versions,
        error=ErrorInfo(**error.as_dict()) if error else None,
        blocked=captured.blocked,
        screenshot=captured.screenshot.name if captured.screenshot is not None else None,
    )
