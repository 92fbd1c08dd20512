"""The pool policies compared by the simulation. Each one only chooses the `PoolConfig` for the next tick;
the decision is always the orchestrator's `decide`.

- static: a fixed number of pods (min = max = size, no spare). Single-use pods are replaced as they exit.
- reactive: the orchestrator as shipped, a constant spare on top of busy + queued.
- predictive: the spare is re-sized every tick to the arrivals expected before a pod started now could be
  ready, from the recent arrival rate and the hourly pattern learned from past arrivals (meetings start on
  the hour), with a safety margin of z standard deviations of a Poisson count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from orchestrator.pool.policy import PoolConfig
from orchestrator.pool.predictive import PredictiveSpare

HOUR = 3_600.0
DAYS = 30 * 24 * HOUR


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
    """The orchestrator's own predictive spare (`orchestrator.pool.predictive`, POOL_PREDICTIVE=true),
    fed the simulated arrivals as the autoscaler is fed new recordings."""

    max_pods: int
    horizon: float = 70.0
    z: float = 2.33
    min_spare: int = 1
    idle_cooldown: float = 60.0
    name: str = "predictive"
    _spare: PredictiveSpare | None = field(default=None, repr=False)
    _seen: int = field(default=0, repr=False)

    def _predictor(self) -> PredictiveSpare:
        if self._spare is None:
            self._spare = PredictiveSpare(horizon=self.horizon, z=self.z, min_spare=self.min_spare)
        return self._spare

    def expected_arrivals(self, now: float, past: np.ndarray) -> float:
        predictor = self._predictor()
        for at in past[self._seen :]:
            predictor.arrived(float(at))
        self._seen = past.size
        return predictor.expected_arrivals(now)

    def spare(self, now: float, past: np.ndarray) -> int:
        self.expected_arrivals(now, past)
        return self._predictor().spare(now)

    def config(self, now: float, past: np.ndarray) -> PoolConfig:
        return PoolConfig(
            min=0,
            max=self.max_pods,
            spare=min(self.spare(now, past), self.max_pods),
            idle_cooldown=self.idle_cooldown,
            start_timeout=HOUR,
        )
