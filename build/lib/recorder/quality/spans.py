"""Spans of time (a gap, a black or silent stretch): one shape for every list in the quality report."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

MAX_LISTED = 100
"""Lists in a report are capped so a badly broken two-hour recording still gives a small report;
the counts and totals next to each list are never capped."""


class Span(BaseModel):
    at: float = Field(description="seconds from the start of the file")
    length: float = Field(description="seconds")


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges [start, end) where `mask` is true."""
    flags = np.asarray(mask, dtype=bool)
    if flags.size == 0:
        return []
    edges = np.diff(np.concatenate(([False], flags, [False])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def spans_over(mask: np.ndarray, times: np.ndarray, end_time: float, min_length: float) -> list[Span]:
    """Runs of `mask` as spans; item i covers [times[i], times[i+1]) and the last one ends at end_time."""
    spans = []
    for start, end in runs(mask):
        at = float(times[start])
        stop = float(times[end]) if end < len(times) else end_time
        if stop - at >= min_length:
            spans.append(Span(at=round(at, 3), length=round(stop - at, 3)))
    return spans
