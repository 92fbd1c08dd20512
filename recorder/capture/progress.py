"""FFmpeg's `-progress` stream turned into `Progress`, plus the "falling behind real time" judgement."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from contract.protocol import Progress
from recorder.timeline.collector import TimelineCollector

BEHIND_SPEED = 0.98
BEHIND_FOR = 10.0  # seconds below speed or fps before a capture is flagged as behind
# FFmpeg repeating this share of the frames (grabs that came late) is a machine out of cores too: at four at
# once on two cores the encoder kept real time (speed 1.0) while 2.5-5.6 frames a second were repeats.
BEHIND_REPEATS = 0.05
REPEATS_WINDOW = 3.0  # seconds the repeat rate is judged over: FFmpeg reports 4 times a second


@dataclass
class ProgressTracker:
    """Accumulates FFmpeg's key=value blocks; each `progress=` line closes a block.

    A paused capture resumes in a new FFmpeg process, whose counters start again from zero: `next_part`
    carries the totals so far, so `progress` keeps counting across parts while `part` is the current
    process's own."""

    target_fps: float
    started_at: float = field(default_factory=time.time)
    progress: Progress = field(default_factory=Progress)
    part: Progress = field(default_factory=Progress)
    behind_seconds: float = 0.0
    ever_behind: bool = False
    _base: Progress = field(default_factory=Progress)
    _block: dict[str, str] = field(default_factory=dict)
    _last_update: float | None = None
    _repeats: deque[tuple[float, int]] = field(default_factory=deque)  # (when, FFmpeg's repeat count) lately

    def next_part(self) -> None:
        """A new FFmpeg process follows: its counters add to what the earlier ones reported."""
        self._base = self.progress.model_copy()
        self.part = Progress()
        self._block = {}
        self._last_update = None
        self._repeats.clear()
        self.behind_seconds = 0.0

    def feed(self, line: str, now: float | None = None) -> Progress | None:
        """Feed one line; returns the updated Progress when a block completes."""
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        self._block[key] = value.strip()
        if key != "progress":
            return None
        block, self._block = self._block, {}
        return self._update(block, time.time() if now is None else now)

    def _update(self, block: dict[str, str], now: float) -> Progress:
        p = self.part
        out_us = _num(block.get("out_time_us") or block.get("out_time_ms"))
        elapsed = out_us / 1e6 if out_us and out_us > 0 else p.elapsed
        frames = int(_num(block.get("frame")) or p.frames)
        fps = _num(block.get("fps"))
        speed_text = block.get("speed", "").rstrip("x")
        speed = _num(speed_text) if speed_text not in ("", "N/A") else p.speed
        duplicated = int(_num(block.get("dup_frames")) or 0)
        dt = 0.0 if self._last_update is None else now - self._last_update
        self._last_update = now
        repeating = self._repeat_rate(now, duplicated) > BEHIND_REPEATS * self.target_fps
        # Only judge after the first few seconds: FFmpeg's running averages start low.
        if elapsed > 3.0 and (speed < BEHIND_SPEED or (fps and fps < self.target_fps * 0.98) or repeating):
            self.behind_seconds += dt
        else:
            self.behind_seconds = 0.0
        behind = self.behind_seconds >= BEHIND_FOR
        self.ever_behind = self.ever_behind or behind
        self.part = Progress(
            elapsed=elapsed,
            frames=frames,
            fps=fps if fps else p.fps,
            speed=speed,
            dropped=int(_num(block.get("drop_frames")) or 0),
            duplicated=duplicated,
            bytes=int(_num(block.get("total_size")) or p.bytes),
            behind=behind,
        )
        base, part = self._base, self.part
        self.progress = Progress(
            elapsed=base.elapsed + part.elapsed,
            frames=base.frames + part.frames,
            fps=part.fps,
            speed=part.speed,
            dropped=base.dropped + part.dropped,
            duplicated=base.duplicated + part.duplicated,
            bytes=base.bytes + part.bytes,
            behind=behind,
            first_frame_at=self.progress.first_frame_at,
        )
        return self.progress


    def _repeat_rate(self, now: float, duplicated: int) -> float:
        """Repeats a second over the last REPEATS_WINDOW: one 0.25 s report without a repeat says nothing."""
        self._repeats.append((now, duplicated))
        while len(self._repeats) > 2 and now - self._repeats[1][0] >= REPEATS_WINDOW:
            self._repeats.popleft()
        first_at, first_count = self._repeats[0]
        return (duplicated - first_count) / (now - first_at) if now > first_at else 0.0


def _num(text: str | None) -> float:
    if not text or text == "N/A":
        return 0.0
    try:
        return float(text)
    except ValueError:
        return 0.0


COALESCE_SECONDS = 2.0  # dropped or repeated frames within this long become one event: a slow machine repeats often


@dataclass
class ProgressTimeline:
    """FFmpeg's progress as timeline material: `capture.fps` and `capture.speed` samples, a `behind` event
    when the capture falls behind real time, and `dropped_frames` / `repeated_frames` events when those
    counts grow (with the growth), coalesced over COALESCE_SECONDS so a steady trickle stays a few events."""

    collector: TimelineCollector
    _behind: bool = False
    _counts: dict[str, int] = field(default_factory=dict)
    _pending: dict[str, tuple[float, int]] = field(default_factory=dict)  # kind -> (first growth, growth so far)
    _last_event: dict[str, float] = field(default_factory=dict)

    def note(self, progress: Progress, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if progress.fps:
            self.collector.sample("capture.fps", progress.fps, unit="fps", at=now)
        if progress.speed:
            self.collector.sample("capture.speed", progress.speed, unit="x", at=now)
        if progress.behind and not self._behind:
            self.collector.event(
                "capture", "behind", "the capture fell behind real time", level="warning", at=now, speed=progress.speed
            )
        self._behind = progress.behind
        self._grew("dropped_frames", progress.dropped, now)
        self._grew("repeated_frames", progress.duplicated, now)

    def flush(self) -> None:
        """What is still coalescing becomes its event (the capture stopped)."""
        for kind in list(self._pending):
            self._emit(kind)

    def _grew(self, kind: str, total: int, now: float) -> None:
        before = self._counts.get(kind, 0)
        self._counts[kind] = total
        if total > before:
            first, growth = self._pending.get(kind, (now, 0))
            self._pending[kind] = (first, growth + total - before)
        if kind in self._pending and now - self._last_event.get(kind, float("-inf")) >= COALESCE_SECONDS:
            self._emit(kind)
            self._last_event[kind] = now

    def _emit(self, kind: str) -> None:
        at, growth = self._pending.pop(kind)
        what = "dropped" if kind == "dropped_frames" else "repeated"
        self.collector.event(
            "capture",
            kind,
            f"{growth} frame{'s' * (growth != 1)} {what}",
            level="warning",
            at=at,
            count=growth,
            total=self._counts.get(kind, 0),
        )
