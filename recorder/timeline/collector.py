"""Gathers what happens during one recording, stamped on the wall clock (the first frame's time, and the
pauses, are known only later); `recorder.timeline.build` puts it on the media clock.

Everything here is bounded while it is collected, so a recording of many hours with a noisy page holds a
few megabytes at most: events stop at their caps (and are counted), series are averaged into a grid whose
step doubles when it fills. Methods only append: they are called from Playwright's event handlers and
the capture's progress reader and must never wait.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contract.timeline import (
    MAX_EVENTS,
    MAX_EVENTS_PER_KIND,
    MAX_SERIES_POINTS,
    MAX_SPANS,
    MAX_TEXT,
    Level,
    Source,
    SpanKind,
)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class WallEvent:
    at: float
    source: Source
    kind: str
    level: Level
    message: str
    track: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class WallSpan:
    start: float
    end: float
    kind: SpanKind
    source: Source
    message: str
    track: str | None


@dataclass
class WallSeries:
    """Samples averaged into cells of `step` wall seconds from `origin`; when the grid would pass twice
    MAX_SERIES_POINTS cells, adjacent cells merge and the step doubles."""

    name: str
    unit: str
    track: str | None
    origin: float
    step: float = 1.0
    sums: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def add(self, at: float, value: float) -> None:
        if at < self.origin:
            return
        index = int((at - self.origin) // self.step)
        while index >= 2 * MAX_SERIES_POINTS:
            self._halve()
            index = int((at - self.origin) // self.step)
        if index >= len(self.sums):
            grow = index + 1 - len(self.sums)
            self.sums.extend([0.0] * grow)
            self.counts.extend([0] * grow)
        self.sums[index] += value
        self.counts[index] += 1

    def _halve(self) -> None:
        sums = [sum(self.sums[i : i + 2]) for i in range(0, len(self.sums), 2)]
        counts = [sum(self.counts[i : i + 2]) for i in range(0, len(self.counts), 2)]
        self.sums, self.counts, self.step = sums, counts, self.step * 2

    def points(self) -> list[tuple[float, float]]:
        """(wall time of the cell's middle, mean) of every cell that has samples."""
        cells = enumerate(zip(self.sums, self.counts, strict=True))
        return [(self.origin + (i + 0.5) * self.step, total / n) for i, (total, n) in cells if n]


class TimelineCollector:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started_at = clock()
        self.events: list[WallEvent] = []
        self.spans: list[WallSpan] = []
        self.series: dict[tuple[str, str | None], WallSeries] = {}
        self.dropped: Counter[str] = Counter()
        # Filled in by the WebRTC watcher when the recording ends (recorder.timeline.webrtc).
        self.tracks: list[dict[str, Any]] = []
        self._per_kind: Counter[str] = Counter()

    def event(
        self,
        source: Source,
        kind: str,
        message: str,
        *,
        level: Level = "info",
        track: str | None = None,
        at: float | None = None,
        **data: Any,
    ) -> None:
        """Note a moment; past MAX_EVENTS, or MAX_EVENTS_PER_KIND of its `source.kind`, it is only counted."""
        key = f"{source}.{kind}"
        if len(self.events) >= MAX_EVENTS or self._per_kind[key] >= MAX_EVENTS_PER_KIND:
            self.dropped[key] += 1
            return
        self._per_kind[key] += 1
        self.events.append(
            WallEvent(self.clock() if at is None else at, source, kind, level, clip(message), track, data)
        )

    def span(
        self,
        kind: SpanKind,
        source: Source,
        start: float,
        end: float,
        *,
        message: str = "",
        track: str | None = None,
    ) -> None:
        """Note a stretch of wall-clock time [start, end]."""
        if len(self.spans) >= MAX_SPANS:
            self.dropped[f"{source}.span.{kind}"] += 1
            return
        self.spans.append(WallSpan(start, max(start, end), kind, source, clip(message), track))

    def sample(self, name: str, value: float, *, unit: str, track: str | None = None, at: float | None = None) -> None:
        """One sample of a series (e.g. capture.fps); samples are averaged into a bounded grid."""
        key = (name, track)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = WallSeries(name, unit, track, origin=self.started_at)
        series.add(self.clock() if at is None else at, float(value))
