"""A spare sized from demand: enough warm workers for the recordings expected before a new one is ready.

A constant spare is either too small for a burst (meetings start on the hour, and a pod takes 20 to 60 s
to start) or idle most of the day. This sizes the spare every tick: the arrivals expected within
`horizon` seconds, from the recent arrival rate corrected by the hourly pattern learned from past
arrivals, plus a margin of `z` standard deviations of a Poisson count. The warm-pool simulation
(`python -m bench simulate`) compares it with static and constant-spare pools on this same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

HOUR = 3_600.0
MINUTES = 60


@dataclass
class PredictiveSpare:
    # How far ahead the spare must reach: the slowest worker start plus a tick or two.
    horizon: float = 70.0
    # Safety margin in standard deviations; 2.33 covers 99 % of Poisson windows.
    z: float = 2.33
    min_spare: int = 1
    # The recent rate is read over these windows, each corrected for where it lies in the hour; the
    # highest wins (the short one follows a rise, the long one keeps a sparse stream from reading as zero).
    windows: tuple[float, ...] = (300.0, HOUR)
    _by_minute: np.ndarray = field(default_factory=lambda: np.zeros(MINUTES), repr=False)
    # Arrival times in order, in a buffer read without copying: [_start, _end) are still in a window.
    _times: np.ndarray = field(default_factory=lambda: np.empty(1024), repr=False)
    _start: int = field(default=0, repr=False)
    _end: int = field(default=0, repr=False)
    _first: float | None = field(default=None, repr=False)

    def arrived(self, at: float) -> None:
        """A recording was requested at `at` (unix time); arrivals come in time order."""
        self._by_minute[int((at % HOUR) // 60)] += 1
        if self._end == self._times.size:
            kept = self._times[self._start : self._end]
            grown = np.empty(max(1024, 2 * kept.size))
            grown[: kept.size] = kept
            self._times, self._start, self._end = grown, 0, kept.size
        self._times[self._end] = at
        self._end += 1
        if self._first is None:
            self._first = at

    def _forget_before(self, cutoff: float) -> None:
        live = self._times[self._start : self._end]
        self._start += int(np.searchsorted(live, cutoff))

    def profile(self, now: float) -> np.ndarray:
        """Rate multiplier per minute of the hour (mean 1), flat until an hour has been seen."""
        total = self._by_minute.sum()
        if total == 0 or self._first is None or now - self._first < HOUR:
            return np.ones(MINUTES)
        return self._by_minute * MINUTES / total

    @staticmethod
    def _weight(profile: np.ndarray, start: float, end: float) -> float:
        """Integral of the profile over [start, end), in seconds (10 s steps)."""
        steps = np.arange(start, end, 10.0)
        return float(profile[(np.mod(steps, HOUR) // 60).astype(int)].sum() * 10.0)

    def expected_arrivals(self, now: float) -> float:
        """Arrivals expected in the next `horizon` seconds."""
        self._forget_before(now - max(self.windows))
        if self._start == self._end:
            return 0.0
        profile = self.profile(now)
        times = self._times[self._start : self._end]
        base = max(
            (times.size - int(np.searchsorted(times, now - window)))
            / max(self._weight(profile, now - window, now), 1e-9)
            for window in self.windows
        )
        return base * self._weight(profile, now, now + self.horizon)

    def spare(self, now: float) -> int:
        expected = self.expected_arrivals(now)
        return max(self.min_spare, math.ceil(expected + self.z * math.sqrt(expected)))
