"""The warm-pool simulation: deterministic, faithful to the orchestrator's policy, and sensible at the edges."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench.sim.decide import decide_folded, foldable_idle, retirement_candidates
from bench.sim.engine import PodModel, Simulation
from bench.sim.policies import PredictivePool, ReactivePool, StaticPool
from bench.sim.sizing import size_from_history
from bench.sim.workload import DAY, HOUR, Workload
from orchestrator.pool.policy import PoolConfig, PoolSnapshot, WorkerView, decide

PODS = PodModel(cold_start_min=20.0, cold_start_max=60.0, finalize=5.0)
UNLIMITED = 1_000_000


def _random_pool(rng: random.Random) -> tuple[PoolSnapshot, PoolConfig, list[WorkerView]]:
    now = 10_000.0
    fixed = rng.random() < 0.3
    size = rng.randint(0, 30)
    config = PoolConfig(
        min=size if fixed else rng.randint(0, 5),
        max=size if fixed else rng.randint(5, 60),
        spare=rng.randint(0, 8),
        idle_cooldown=rng.choice([0.0, 30.0, 60.0, 300.0]),
    )
    workers: list[WorkerView] = []
    for n in range(rng.randint(0, config.max)):
        status = rng.choice(["busy", "idle", "starting"])
        idle_since = now - rng.choice([0.0, 10.0, 45.0, 59.0, 61.0, 200.0, 1000.0]) - n * 1e-3
        workers.append(
            WorkerView(
                f"w{n:03d}",
                status,  # type: ignore[arg-type]
                created_at=now - 5.0,
                idle_since=idle_since if status == "idle" else None,
            )
        )
    return PoolSnapshot(now=now, queued=rng.randint(0, 10), workers=tuple(workers)), config, workers


def test_folded_decision_equals_the_full_one_on_random_pools() -> None:
    rng = random.Random(7)
    folded_some = 0
    for _ in range(3000):
        full, config, workers = _random_pool(rng)
        busy = [w for w in workers if w.status == "busy"]
        idle = sorted((w for w in workers if w.status == "idle"), key=lambda w: (w.idle_since, w.name))
        starting = [w for w in workers if w.status == "starting"]
        keep = retirement_candidates(len(busy), full.queued, len(workers), config)
        fold = foldable_idle(full.queued, config, max(0, len(idle) - keep))
        listed = (*starting, *idle[: len(idle) - fold])
        reduced = PoolSnapshot(now=full.now, queued=full.queued, workers=listed)
        got = decide_folded(reduced, config, busy=len(busy), idle=fold)
        assert got == decide(full, config)
        folded_some += fold > 0
    assert folded_some > 300


def test_a_day_with_every_worker_listed_matches_the_folded_run() -> None:
    workload = Workload(2_000)
    for policy in (lambda: ReactivePool(spare=3, max_pods=UNLIMITED), lambda: StaticPool(size=150)):
        exact = Simulation(workload, policy(), pods=PODS, seed=3, tick=5.0, exact=True).run()
        folded = Simulation(workload, policy(), pods=PODS, seed=3, tick=5.0).run()
        assert np.array_equal(exact.waits, folded.waits)
        assert exact.pod_seconds == folded.pod_seconds


def test_same_seed_same_day() -> None:
    workload = Workload(1_000)
    first = Simulation(workload, ReactivePool(spare=2, max_pods=UNLIMITED), pods=PODS, seed=11).run()
    again = Simulation(workload, ReactivePool(spare=2, max_pods=UNLIMITED), pods=PODS, seed=11).run()
    other = Simulation(workload, ReactivePool(spare=2, max_pods=UNLIMITED), pods=PODS, seed=12).run()
    assert np.array_equal(first.waits, again.waits)
    assert first.pod_seconds == again.pod_seconds
    assert first.recordings != other.recordings or not np.array_equal(first.waits, other.waits)


def test_arrivals_follow_the_daily_volume_and_peak_on_the_hour() -> None:
    workload = Workload(50_000)
    times = workload.arrivals(0.0, DAY, np.random.default_rng(5))
    assert abs(times.size - 50_000) < 5 * np.sqrt(50_000)
    minute = (np.mod(times, HOUR) // 60).astype(int)
    per_minute = np.bincount(minute, minlength=60)
    assert per_minute[0] > 5 * np.median(per_minute)  # the burst on the hour
    durations = workload.durations(100_000, np.random.default_rng(5))
    assert 1_500 < np.median(durations) < 2_100
    assert durations.max() <= workload.max_duration


def test_a_static_pool_large_enough_never_makes_anyone_wait() -> None:
    workload = Workload(1_000)
    sizing = size_from_history(workload, horizon=70.0, finalize=PODS.finalize, seed=99)
    result = Simulation(workload, StaticPool(size=sizing.static_size + 20), pods=PODS, seed=4).run()
    assert result.recordings > 900
    assert result.p99_wait == 0.0
    assert result.waits.max() == 0.0
    assert result.idle_share > 0.3  # what a static pool costs


def test_no_spare_means_every_recording_waits_a_cold_start() -> None:
    workload = Workload(1_000)
    tick = 2.0
    result = Simulation(workload, ReactivePool(spare=0, max_pods=UNLIMITED), pods=PODS, seed=5, tick=tick).run()
    assert result.recordings > 900
    assert result.waits.min() >= PODS.cold_start_min
    assert result.waits.max() <= PODS.cold_start_max + tick
    mean_cold = (PODS.cold_start_min + PODS.cold_start_max) / 2
    assert result.waits.mean() == pytest.approx(mean_cold, abs=6.0)
    assert result.idle_share == 0.0


def test_predictive_beats_reactive_at_the_hourly_burst() -> None:
    """Sized for the burst, a constant spare idles all day; sized by forecast, the spare follows demand."""
    workload = Workload(20_000)
    sizing = size_from_history(workload, horizon=70.0, finalize=PODS.finalize, seed=1001)
    reactive = Simulation(workload, ReactivePool(spare=sizing.spare, max_pods=UNLIMITED), pods=PODS, seed=6).run()
    predictive = Simulation(workload, PredictivePool(max_pods=UNLIMITED, horizon=70.0), pods=PODS, seed=6).run()
    assert predictive.idle_share < reactive.idle_share / 2
    assert predictive.p99_wait <= max(reactive.p99_wait, 2.0)
    # With only the shipped spare of 1, the burst queues for a cold start.
    shipped = Simulation(workload, ReactivePool(spare=1, max_pods=UNLIMITED), pods=PODS, seed=6).run()
    assert shipped.p99_wait > 20.0
    assert predictive.p99_wait < shipped.p99_wait
