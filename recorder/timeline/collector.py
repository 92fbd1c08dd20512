"""Gathers what happens during one recording, stamped on the wall clock (the first frame's time, and the
pauses, are known only later); `recorder.timeline.build` puts it on the media clock.

Everything here is bounded while it is collected, so a recording of many hours with a noisy, or hostile,
page holds a few megabytes at most: every string is clipped (MAX_TEXT, track ids MAX_ID) and URLs in it
shown without query or credentials, an event's `data` keeps at most MAX_DATA_VALUES plain JSON values,
events stop at their caps (and are counted), series are averaged into a grid whose step doubles when it
fills. Each source has its own share of MAX_EVENTS (SOURCE_BUDGETS), so a page's events never crowd out
the recorder's own (control, capture) or the WebRTC watcher's. Methods only append: they are called from
Playwright's event handlers and the capture's progress reader and must never wait.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contract.redact import clip, redact_urls
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

# Each source's share of MAX_EVENTS: the page, however busy, leaves room for the rest. Control events are
# few (a handful of kinds, each capped at CONTROL_PER_KIND), so `stop` always has room.
SOURCE_BUDGETS: dict[str, int] = {"page": 2000, "webrtc": 500, "capture": 250, "control": 200, "analyzer": 50}
CONTROL_PER_KIND = 40
MAX_ID = 128  # characters of a track id
MAX_KEY = 40  # characters of a `data` key
MAX_DATA_VALUES = 16  # plain values (and keys) kept in one event's `data`, nested ones included
MAX_DATA_DEPTH = 3
assert sum(SOURCE_BUDGETS.values()) <= MAX_EVENTS


def plain(data: dict[str, Any]) -> dict[str, Any]:
    """`data` as JSON-safe plain values, bounded: strings clipped (URLs in them redacted), numbers finite,
    at most MAX_DATA_VALUES values and MAX_DATA_DEPTH levels; anything else is left out."""
    room = [MAX_DATA_VALUES]

    def value(item: Any, depth: int) -> tuple[bool, Any]:
        if room[0] <= 0:
            return False, None
        room[0] -= 1
        if item is None or isinstance(item, bool):
            return True, item
        if isinstance(item, int):
            return (True, item) if abs(item) < 2**53 else (False, None)
        if isinstance(item, float):
            return (True, item) if math.isfinite(item) else (False, None)
        if isinstance(item, str):
            return True, clip(redact_urls(item))
        if depth >= MAX_DATA_DEPTH:
            return False, None
        if isinstance(item, dict):
            return True, mapping(item, depth + 1)
        if isinstance(item, list | tuple):
            kept = (value(x, depth + 1) for x in item[:MAX_DATA_VALUES])
            return True, [x for ok, x in kept if ok]
        return False, None

    def mapping(items: dict[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in list(items.items())[:MAX_DATA_VALUES]:
            if not isinstance(key, str):
                continue
            ok, kept = value(item, depth)
            if ok:
                out[clip(key, MAX_KEY)] = kept
        return out

    return mapping(data, 0)


def text(value: str, limit: int = MAX_TEXT) -> str:
    """A message as the timeline keeps it: URLs redacted, clipped."""
    return clip(redact_urls(str(value)), limit)


def track_id(track: str | None) -> str | None:
    return None if track is None else clip(str(track), MAX_ID)


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
        self._per_source: Counter[str] = Counter()

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
        """Note a moment; past its source's budget (SOURCE_BUDGETS), or MAX_EVENTS_PER_KIND of its
        `source.kind` (CONTROL_PER_KIND for control), it is only counted in `dropped`."""
        key = f"{source}.{kind}"
        per_kind = CONTROL_PER_KIND if source == "control" else MAX_EVENTS_PER_KIND
        full = len(self.events) >= MAX_EVENTS or self._per_source[source] >= SOURCE_BUDGETS.get(source, 0)
        if full or self._per_kind[key] >= per_kind:
            self.dropped[key] += 1
            return
        self._per_kind[key] += 1
        self._per_source[source] += 1
        stamped = self.clock() if at is None else at
        self.events.append(WallEvent(stamped, source, kind, level, text(message), track_id(track), plain(data)))

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
        self.spans.append(WallSpan(start, max(start, end), kind, source, text(message), track_id(track)))

    def sample(self, name: str, value: float, *, unit: str, track: str | None = None, at: float | None = None) -> None:
        """One sample of a series (e.g. capture.fps); samples are averaged into a bounded grid."""
        track = track_id(track)
        key = (name, track)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = WallSeries(name, unit, track, origin=self.started_at)
        series.add(self.clock() if at is None else at, float(value))
