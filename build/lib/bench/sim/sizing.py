"""Sizing the static pool and the reactive spare the way an operator would: from a previous day's demand.

Both are read off another sample of the same workload ("yesterday", a different seed), never off the day
being simulated, so neither policy is given knowledge of the future it is measured on.

- reactive spare: the most recordings that arrived within any window of `horizon` seconds (the slowest
  cold start plus a tick): a constant spare that large covers the worst burst while replacements start.
- static size: the most pods ever needed at once: recordings in progress plus those arriving within
  the next `horizon` seconds (single-use pods are replaced as they exit and take a cold start to return).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.sim.workload import DAY, HOUR, Workload


@dataclass(frozen=True)
class Sizing:
    spare: int
    static_size: int
    peak_concurrent: int


def size_from_history(workload: Workload, *, horizon: float, finalize: float, seed: int) -> Sizing:
    rng = np.random.default_rng(seed)
    arrivals = workload.arrivals(-workload.max_duration - HOUR, DAY, rng)
    ends = np.sort(arrivals + workload.durations(arrivals.size, rng) + finalize)
    grid = np.arange(0.0, DAY, 1.0)
    started = np.searchsorted(arrivals, grid, side="right")
    ended = np.searchsorted(ends, grid, side="right")
    in_window = np.searchsorted(arrivals, grid + horizon, side="right") - started
    concurrent = started - ended
    return Sizing(
        spare=int(in_window.max()),
        static_size=int((concurrent + in_window).max()),
        peak_concurrent=int(concurrent.max()),
    )
