"""A/V offset from sync markers: each flash paired with its beep, and what the offsets say.

Sign convention: offset = beep time - flash time, so positive means the audio is later than the video.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

MAX_PAIR = 0.4
"""A beep more than 400 ms from a flash is not that flash's beep."""


class SyncReport(BaseModel):
    tone_hz: float
    flashes: int = Field(description="flashes found in the video")
    beeps: int = Field(description="beep onsets found in the audio")
    markers: int = Field(description="flashes paired with a beep within ±400 ms")
    mean_ms: float | None = Field(description="mean offset; positive = audio later than video")
    p95_abs_ms: float | None = Field(description="95th percentile of the absolute offset")
    std_ms: float | None
    min_ms: float | None
    max_ms: float | None
    drift_ms: float | None = Field(description="mean offset of the last fifth of markers minus the first fifth")


def pair_markers(flashes: np.ndarray, beeps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flash times, offsets in seconds) for flashes whose nearest beep is within MAX_PAIR, one beep each."""
    if flashes.size == 0 or beeps.size == 0:
        return np.zeros(0), np.zeros(0)
    beeps = np.sort(beeps)
    right = np.clip(np.searchsorted(beeps, flashes), 0, len(beeps) - 1)
    left = np.clip(right - 1, 0, len(beeps) - 1)
    nearest = np.where(np.abs(beeps[left] - flashes) <= np.abs(beeps[right] - flashes), left, right)
    offsets = beeps[nearest] - flashes
    keep = np.abs(offsets) <= MAX_PAIR
    best: dict[int, int] = {}  # beep index -> flash index with the smallest offset
    for i in np.flatnonzero(keep).tolist():
        j = int(nearest[i])
        if j not in best or abs(offsets[i]) < abs(offsets[best[j]]):
            best[j] = i
    chosen = np.asarray(sorted(best.values()), dtype=np.int64)
    return flashes[chosen], offsets[chosen]


def _ms(value: float) -> float:
    return round(value * 1000, 1)


def measure_sync(flashes: np.ndarray, beeps: np.ndarray, tone_hz: float) -> SyncReport | None:
    """None when the video has no markers (fewer than two flashes); counts and stats otherwise."""
    if flashes.size < 2:
        return None
    _, offsets = pair_markers(flashes, beeps)
    count = len(offsets)
    if count == 0:
        stats: dict[str, float | None] = dict.fromkeys(
            ("mean_ms", "p95_abs_ms", "std_ms", "min_ms", "max_ms", "drift_ms")
        )
    else:
        fifth = max(1, count // 5)
        stats = {
            "mean_ms": _ms(float(offsets.mean())),
            "p95_abs_ms": _ms(float(np.percentile(np.abs(offsets), 95))),
            "std_ms": _ms(float(offsets.std())),
            "min_ms": _ms(float(offsets.min())),
            "max_ms": _ms(float(offsets.max())),
            "drift_ms": _ms(float(offsets[-fifth:].mean() - offsets[:fifth].mean())) if count >= 2 else None,
        }
    return SyncReport(tone_hz=tone_hz, flashes=int(flashes.size), beeps=int(beeps.size), markers=count, **stats)
