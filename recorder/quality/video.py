"""Video facts from decoded frames: timing (delivered fps, gaps), frozen and black stretches.

Frames are decoded downscaled to 64x36 gray, which keeps a two-hour 720p recording cheap to hold,
while a change anywhere on screen still moves at least one pixel of the small picture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from recorder.quality.ffmpeg import FFMPEG, RawPipe
from recorder.quality.probe import StreamFacts
from recorder.quality.spans import MAX_LISTED, Span, runs, spans_over

WIDTH, HEIGHT = 64, 36
CELL = 4
"""Cells of 4x4 small pixels (16x9 cells per frame) are where flashes are looked for."""
FRAME_BYTES = WIDTH * HEIGHT
CHUNK_FRAMES = 256

GAP_FACTOR = 1.5
"""A pts step longer than 1.5 frame intervals means at least one frame is missing."""
BLACK_PIXEL = 25
"""Full-range luma at or below 10 %, as FFmpeg's blackdetect counts a pixel black."""
BLACK_RATIO = 0.98
SAME_TOLERANCE = 2
"""Largest per-pixel difference still counted as the same picture: re-encoding a static screen
(a keyframe after P-frames) moves downscaled pixels by a level or so, a real change moves them far more."""
MIN_SPAN = 0.5


@dataclass
class VideoSignals:
    """Per-frame measurements, index-aligned with `pts`."""

    pts: np.ndarray  # float64 seconds
    black: np.ndarray  # bool
    change: np.ndarray  # int16 largest pixel difference to the previous frame (first frame: 255)
    cells: np.ndarray  # uint8 (frames, 144) mean luma per cell

    @property
    def count(self) -> int:
        return len(self.pts)


class _ShowinfoClock:
    """Collects exact frame timestamps from showinfo: integer pts times the filter's time base,
    because showinfo's printed pts_time keeps only six significant digits (10 ms after an hour)."""

    _BASE = re.compile(r"config in time_base: (\d+)/(\d+)")
    _FRAME = re.compile(r"\] n:\s*\d+ pts:\s*(\S+)")

    def __init__(self) -> None:
        self.base = Fraction(1, 1000)
        self.pts: list[float] = []

    def line(self, text: str) -> None:
        if "Parsed_showinfo" not in text:
            return
        frame = self._FRAME.search(text)
        if frame:
            try:
                value = float(int(frame.group(1)) * self.base)
            except ValueError:
                value = float("nan")
            self.pts.append(value)
            return
        base = self._BASE.search(text)
        if base and int(base.group(1)) > 0 and int(base.group(2)) > 0:
            self.base = Fraction(int(base.group(1)), int(base.group(2)))


def decode_video(path: Path, stream: StreamFacts) -> VideoSignals:
    """Decode every frame (no rate conversion) into the small gray picture and measure it on the fly.

    Decoding dominates the cost, so the deblocking filter is skipped (about a sixth of H.264 decoding):
    it changes pixels by a few levels at block edges, invisible after averaging 20x20 pixels, and a
    repeated frame still decodes to exactly the same picture."""
    clock = _ShowinfoClock()
    args = [
        FFMPEG, "-hide_banner", "-nostats", "-loglevel", "info", "-skip_loop_filter", "all", "-i", str(path),
        "-map", f"0:{stream.index}",
        "-vf", f"scale={WIDTH}:{HEIGHT}:flags=area,format=gray,showinfo",
        "-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1",
    ]  # fmt: skip
    blacks, changes, cells = [], [], []
    previous: np.ndarray | None = None
    with RawPipe(args, path, clock.line) as pipe:
        for block in pipe.chunks(FRAME_BYTES * CHUNK_FRAMES):
            whole = len(block) // FRAME_BYTES * FRAME_BYTES
            if whole == 0:
                continue
            frames = np.frombuffer(block[:whole], dtype=np.uint8).reshape(-1, HEIGHT, WIDTH)
            blacks.append((frames <= BLACK_PIXEL).mean(axis=(1, 2)) >= BLACK_RATIO)
            wide = frames.astype(np.int16)
            before = np.concatenate(([previous] if previous is not None else [wide[0] + 255], wide[:-1]))
            changes.append(np.abs(wide - before).max(axis=(1, 2)).astype(np.int16))
            previous = wide[-1]
            grid = frames.reshape(-1, HEIGHT // CELL, CELL, WIDTH // CELL, CELL).mean(axis=(2, 4))
            cells.append(np.rint(grid).astype(np.uint8).reshape(len(frames), -1))
        pipe.finish()
    count = sum(len(b) for b in blacks)
    pts = np.asarray(clock.pts[:count], dtype=np.float64)
    if len(pts) < count:  # timestamps lost: assume the nominal rate for the rest
        step = 1.0 / (stream.frame_rate or 30.0)
        tail = (pts[-1] if len(pts) else 0.0) + step * np.arange(1, count - len(pts) + 1)
        pts = np.concatenate((pts, tail))
    if count and np.isnan(pts).any():
        known = ~np.isnan(pts)
        pts = np.interp(np.arange(count), np.flatnonzero(known), pts[known]) if known.any() else np.arange(count) / 30.0
    cells_per_frame = (HEIGHT // CELL) * (WIDTH // CELL)
    return VideoSignals(
        pts=pts,
        black=np.concatenate(blacks) if blacks else np.zeros(0, bool),
        change=np.concatenate(changes) if changes else np.zeros(0, np.int16),
        cells=np.concatenate(cells) if cells else np.zeros((0, cells_per_frame), np.uint8),
    )


class VideoReport(BaseModel):
    codec: str | None
    width: int | None
    height: int | None
    duration: float | None
    start: float | None
    frames: int
    delivered_fps: float
    nominal_fps: float | None
    gap_count: int
    longest_gap: float
    gaps: list[Span]
    repeated_frames: int
    longest_repeat: int = 0  # the most frames in a row that repeat the one before
    frozen_total: float
    frozen: list[Span]
    black_total: float
    black: list[Span]


def frame_interval(pts: np.ndarray, expected_fps: float | None, fallback_fps: float | None) -> float | None:
    """The expected time between frames: as asked, else the typical step (robust to a few gaps)."""
    if expected_fps:
        return 1.0 / expected_fps
    steps = np.diff(pts)
    steps = steps[steps > 0]
    if len(steps):
        return float(np.median(steps))
    return 1.0 / fallback_fps if fallback_fps else None


def frame_gaps(pts: np.ndarray, interval: float) -> list[Span]:
    """Steps longer than 1.5 intervals; `at` is the frame shown before the gap, `length` the whole step."""
    steps = np.diff(pts)
    where = np.flatnonzero(steps > GAP_FACTOR * interval)
    return [Span(at=round(float(pts[i]), 3), length=round(float(steps[i]), 3)) for i in where]


def frozen_spans(same: np.ndarray, pts: np.ndarray, end: float) -> list[Span]:
    """A picture held for 0.5 s or more: from the frame that first showed it to the next change."""
    spans = []
    for start, stop in runs(same):
        if start == 0:
            continue  # the first frame has nothing before it to repeat
        at = float(pts[start - 1])
        until = float(pts[stop]) if stop < len(pts) else end
        if until - at >= MIN_SPAN:
            spans.append(Span(at=round(at, 3), length=round(until - at, 3)))
    return spans


def analyze_video(signals: VideoSignals, stream: StreamFacts, expected_fps: float | None) -> VideoReport:
    pts = signals.pts
    interval = frame_interval(pts, expected_fps, stream.frame_rate)
    if signals.count:
        end = float(pts[-1]) + (interval or 0.0)
        measured = end - float(pts[0])
    else:
        end = measured = 0.0
    duration = stream.duration if stream.duration else measured
    gaps = frame_gaps(pts, interval) if interval else []
    same = signals.change <= SAME_TOLERANCE
    frozen = frozen_spans(same, pts, end)
    black = spans_over(signals.black, pts, end, MIN_SPAN)
    return VideoReport(
        codec=stream.codec,
        width=stream.width,
        height=stream.height,
        duration=round(duration, 3) if duration else None,
        start=round(float(pts[0]), 3) if signals.count else None,
        frames=signals.count,
        delivered_fps=round(signals.count / duration, 3) if duration else 0.0,
        nominal_fps=round(1.0 / interval, 3) if interval else None,
        gap_count=len(gaps),
        longest_gap=max((g.length for g in gaps), default=0.0),
        gaps=gaps[:MAX_LISTED],
        repeated_frames=int(same.sum()),
        longest_repeat=max((stop - start for start, stop in runs(same)), default=0),
        frozen_total=round(sum(s.length for s in frozen), 3),
        frozen=frozen[:MAX_LISTED],
        black_total=round(sum(s.length for s in black), 3),
        black=black[:MAX_LISTED],
    )
