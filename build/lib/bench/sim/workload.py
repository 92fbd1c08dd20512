"""The simulated demand: a diurnal Poisson process with bursts at the top of the hour, heavy-tailed durations.

Meetings start on the hour, so a share of each hour's arrivals falls in a narrow peak around :00; the rest
is spread evenly. The daily rhythm is a cosine with its maximum in the afternoon. Arrival times are drawn
exactly from the non-homogeneous rate by inverting its cumulative on a one-second grid (vectorised, so a
million arrivals take well under a second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DAY = 86_400.0
HOUR = 3_600.0


@dataclass(frozen=True)
class Workload:
    per_day: float
    # Daily rhythm: rate x (1 + amplitude * cos(2 pi (t - peak_hour) / 24 h)); 0.8 gives a 9:1 peak-to-trough.
    diurnal_amplitude: float = 0.8
    peak_hour: float = 14.0
    # Share of arrivals that come in the burst around each top of the hour, and the burst's width (sigma, s).
    burst_share: float = 0.3
    burst_sigma: float = 60.0
    # Recording length: lognormal with this median and sigma, clipped (the API's max_duration bounds it).
    median_duration: float = 1_800.0
    duration_sigma: float = 1.0
    min_duration: float = 60.0
    max_duration: float = 4 * HOUR

    def __post_init__(self) -> None:
        if self.per_day <= 0:
            raise ValueError("per_day must be > 0")
        if not 0 <= self.diurnal_amplitude < 1:
            raise ValueError("diurnal_amplitude must be in [0, 1)")
        if not 0 <= self.burst_share <= 1:
            raise ValueError("burst_share must be in [0, 1]")

    def hourly_profile(self, seconds_into_hour: np.ndarray) -> np.ndarray:
        """Multiplier of the rate by position in the hour; its mean over an hour is 1."""
        s = np.mod(np.asarray(seconds_into_hour, dtype=float) + HOUR / 2, HOUR) - HOUR / 2  # -1800..1800, 0 = :00
        kernel = np.exp(-0.5 * (s / self.burst_sigma) ** 2) * HOUR / (self.burst_sigma * math.sqrt(2 * math.pi))
        return (1 - self.burst_share) + self.burst_share * kernel

    def rate(self, t: np.ndarray) -> np.ndarray:
        """Arrivals per second at time t (seconds since midnight; any real t, the pattern repeats daily)."""
        t = np.asarray(t, dtype=float)
        diurnal = 1 + self.diurnal_amplitude * np.cos(2 * math.pi * (t / DAY - self.peak_hour / 24))
        return self.per_day / DAY * diurnal * self.hourly_profile(np.mod(t, HOUR))

    def peak_rate(self) -> float:
        return float(self.rate(np.arange(0.0, DAY, 1.0)).max())

    def arrivals(self, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival times in [start, end)."""
        grid = np.arange(start, end + 1.0, 1.0)
        mid = self.rate(grid[:-1] + 0.5)
        cumulative = np.concatenate(([0.0], np.cumsum(mid)))
        total = cumulative[-1]
        n = rng.poisson(total)
        marks = np.sort(rng.uniform(0.0, total, n))
        times = np.interp(marks, cumulative, grid)
        return times[times < end]

    def durations(self, n: int, rng: np.random.Generator) -> np.ndarray:
        d = rng.lognormal(math.log(self.median_duration), self.duration_sigma, n)
        return np.clip(d, self.min_duration, self.max_duration)

    def mean_duration(self, rng: np.random.Generator, samples: int = 200_000) -> float:
        return float(self.durations(samples, rng).mean())
