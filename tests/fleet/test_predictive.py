"""The predictive spare: sized from recent arrivals and the hourly pattern, never below its floor."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.pool.autoscaler import Autoscaler
from orchestrator.pool.policy import PoolConfig
from orchestrator.pool.predictive import HOUR, PredictiveSpare
from orchestrator.workers import WorkerRegistry
from tests.fleet.test_autoscaler import Clock, MemoryBackend

T0 = 100 * HOUR  # on the hour


def test_no_demand_keeps_the_floor() -> None:
    assert PredictiveSpare(min_spare=2).spare(T0) == 2


def test_a_busy_last_five_minutes_raises_the_spare() -> None:
    spare = PredictiveSpare(horizon=60.0)
    for i in range(300):  # one arrival a second for five minutes
        spare.arrived(T0 + 30 * 60 + i)
    now = T0 + 35 * 60
    expected = spare.expected_arrivals(now)
    assert 50 <= expected <= 70  # about a minute's worth
    assert spare.spare(now) > expected  # plus its safety margin


def test_the_learned_top_of_the_hour_peak_is_prepared_for_before_it_comes() -> None:
    spare = PredictiveSpare(horizon=70.0)
    for hour in range(3):
        start = T0 + hour * HOUR
        for i in range(120):  # meetings start on the hour: 120 arrivals in its first two minutes
            spare.arrived(start + i)
        for minute in range(2, 60, 5):  # and a trickle the rest of the hour
            spare.arrived(start + minute * 60)
    before_peak = spare.spare(T0 + 3 * HOUR - 30)
    mid_hour = spare.spare(T0 + 2 * HOUR + 30 * 60)
    assert before_peak > 3 * mid_hour, (before_peak, mid_hour)


async def test_autoscaler_sizes_the_pool_from_arrivals() -> None:
    clock = Clock()
    backend = MemoryBackend()

    async def queued() -> int:
        return 0

    scaler = Autoscaler(
        backend,
        WorkerRegistry(),
        queued,
        PoolConfig(min=0, max=50, spare=1),
        clock=clock,
        predictive=PredictiveSpare(horizon=60.0),
    )
    await scaler.tick()
    assert len(backend.workers) == 1  # the floor
    for i in range(120):  # two new recordings a second for a minute
        scaler.wake(SimpleNamespace(old=None, at=clock.now - 60 + i / 2))
    await scaler.tick()
    assert scaler.predictive is not None
    expected_spare = scaler.predictive.spare(clock.now)
    # 120 arrivals read over the 5-minute window: 0.4/s, 24 in the next minute, plus the margin.
    assert expected_spare >= 30
    assert len(backend.workers) == expected_spare
