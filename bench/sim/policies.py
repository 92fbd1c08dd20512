"""The pool policies compared by the simulation. Each one only chooses the `PoolConfig` for the next tick;
the decision is always the orchestrator's `decide`.

- static: a fixed number of pods (min = max = size, no spare). Single-use pods are replaced as they exit.
- reactive: the orchestrator as shipped, a constant spare on top of busy + queued.
- predictive: the spare is re-sized every tick to the arrivals expected before a pod started now could be
  ready, from the recent arrival rate and the hourly pattern learned from past arrivals (meetings start on
  the hour), with a safety margin of z standard deviations of a Poisson count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from orchestrator.pool.policy import PoolConfig

HOUR = 3_600.0
DAYS = 30 * 24 * HOUR
MINUTES = 60


class PoolPolicy(Protocol):
    name: str

    def config(self, now: float, past: np.ndarray) -> PoolConfig:
        """The pool's bounds for the tick at `now`; `past` holds the arrival times so far, sorted."""


@dataclass
class StaticPool:
    size: int
    name: str = "static"

    def config(self, now: float, past: np.ndarray) -> PoolConfig:
        # A fixed pool never has a surplus to retire; the long cooldown only says so.
        return PoolConfig(min=self.size, max=self.size, spare=0, idle_cooldown=DAYS, start_timeout=HOUR)


@dataclass
class ReactivePool:
    spare: int
    max_pods: int
    idle_cooldown: float = 60.0
    name: str = "reactive"

    def config(self, now: float, past: np.ndarray) -> PoolConfig:
        return PoolConfig(
            min=0, max=self.max_pods, spare=self.spare, idle_cooldown=self.idle_cooldown, start_timeout=HOUR
        )


@dataclass
class PredictivePool:
    max_pods: int
    # How far ahead the spare must reach: the slowest cold start plus a policy tick or two.
    horizon: float = 70.0
    # Safety margin in standard deviations of the expected count; 2.33 covers 99 % of Poisson windows.
    z: float = 2.33
    min_spare: int = 1
    # The recent rate is read over these windows, each corrected for where it lies in the hour; the
    # highest wins (the short one follows a rise, the long one keeps a sparse stream from reading as zero).
    windows: tuple[float, ...] = (300.0, 3_600.0)
    idle_cooldown: float = 60.0
    name: str = "predictive"
    _by_minute: np.ndarray = field(default_factory=lambda: np.zeros(MINUTES), repr=False)
    _seen: int = field(default=0, repr=False)

    def _learn(self, past: np.ndarray) -> None:
        """Count the arrivals since the last tick by minute of the hour."""
        new = past[self._seen :]
        if new.size:
            self._by_minute += np.bincount((np.mod(new, HOUR) // 60).astype(int), minlength=MINUTES)[:MINUTES]
            self._seen = past.size

    def profile(self, past: np.ndarray) -> np.ndarray:
        """Rate multiplier per minute of the hour (mean 1), flat until an hour has been seen."""
        total = self._by_minute.sum()
        if total == 0 or past[-1] - past[0] < HOUR:
            return np.ones(MINUTES)
        return self._by_minute * MINUTES / total

    def _weight(self, profile: np.ndarray, start: float, end: float) -> float:
        """Integral of the profile over [start, end), in seconds (10 s steps)."""
        steps = np.arange(start, end, 10.0)
        return float(profile[(np.mod(steps, HOUR) // 60).astype(int)].sum() * 10.0)

    def expected_arrivals(self, now: float, past: np.ndarray) -> float:
        """Arrivals expected in the next `horizon` seconds."""
        self._learn(past)
        if past.size == 0:
            return 0.0
        profile = self.profile(past)
        base = max(
            (past.size - int(np.searchsorted(past, now - window))) / max(self._weight(profile, now - window, now), 1e-9)
            for window in self.windows
        )
        return base * self._weight(profile, now, now + self.horizon)

    def spare(self, now: float, past: np.ndarray) -> int:
        expected = self.expected_arrivals(now, past)
        return max(self.min_spare, math.ceil(expected + self.z * math.sqrt(expected)))

    def config(self, now: float, past: np.ndarray) -> PoolConfig:
        return PoolConfig(
            min=0,
            max=self.max_pods,
            spare=min(self.spare(now, past), self.max_pods),
            idle_cooldown=self.idle_cooldown,
            start_timeout=HOUR,
        )
