"""The autoscaler loop against the real worker registry and an in-memory backend, on a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from orchestrator.pool.autoscaler import Autoscaler
from orchestrator.pool.backend import WorkerInfo
from orchestrator.pool.policy import PoolConfig
from orchestrator.workers import WorkerRegistry


@dataclass
class MemoryBackend:
    name: str = "memory"
    release: str = "r1"
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    closed: bool = False
    serial: int = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def create(self, count: int) -> list[str]:
        names = []
        for _ in range(count):
            self.serial += 1
            name = f"w{self.serial}"
            self.workers[name] = WorkerInfo(name=name, phase="running", release=self.release, created_at=0.0)
            names.append(name)
        return names

    async def retire(self, name: str) -> bool:
        self.retired.append(name)
        return self.workers.pop(name, None) is not None

    async def list(self) -> list[WorkerInfo]:
        return list(self.workers.values())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(config: PoolConfig, queued: int = 0) -> tuple[Autoscaler, MemoryBackend, WorkerRegistry, Clock, list[int]]:
    backend, registry, clock = MemoryBackend(), WorkerRegistry(), Clock()
    queue = [queued]

    async def count() -> int:
        return queue[0]

    return Autoscaler(backend, registry, count, config, clock=clock), backend, registry, clock, queue


async def test_keeps_a_warm_spare_and_scales_with_the_queue() -> None:
    scaler, backend, registry, clock, queue = make(PoolConfig(min=0, max=5, spare=1))
    await scaler.tick()
    assert list(backend.workers) == ["w1"]
    # It has not polled yet: it counts as starting, and is not started twice.
    await scaler.tick()
    assert list(backend.workers) == ["w1"]

    registry.polling("w1", clock.now)
    queue[0] = 3
    decision = await scaler.tick()
    assert decision is not None and decision.desired == 4
    assert len(backend.workers) == 4


async def test_idle_surplus_is_retired_in_two_phases_after_the_cooldown() -> None:
    scaler, backend, registry, clock, _ = make(PoolConfig(min=0, max=5, spare=0, idle_cooldown=30))
    await backend.create(2)
    for name in backend.workers:
        registry.polling(name, clock.now)
    clock.now += 29
    await scaler.tick()
    assert not any(w.retiring for w in registry.snapshot())

    clock.now += 1
    await scaler.tick()
    assert all(w.retiring for w in registry.snapshot())
    assert backend.retired == []  # phase one only marks them

    await scaler.tick()
    assert sorted(backend.retired) == ["w1", "w2"]
    assert backend.workers == {}


async def test_a_new_leader_finishes_retiring_what_the_previous_one_marked() -> None:
    # The registry is shared (replicas on one store): the mark outlives the leader that set it.
    old, backend, registry, clock, _ = make(PoolConfig(min=0, max=5, spare=0, idle_cooldown=0))
    [name] = await backend.create(1)
    registry.polling(name, clock.now)
    await old.tick()
    assert registry.is_retiring(name) and backend.retired == []  # phase one, then the leader is gone

    async def nothing_queued() -> int:
        return 0

    new = Autoscaler(backend, registry, nothing_queued, PoolConfig(min=0, max=5, spare=0, idle_cooldown=0), clock=clock)
    await new.start()
    try:
        await new.tick()
        assert backend.retired == [name], "the marked worker is removed, not left running for ever"
    finally:
        await new.stop()


async def test_a_worker_leased_between_snapshot_and_mark_is_not_removed() -> None:
    scaler, backend, registry, clock, _ = make(PoolConfig(min=0, max=5, spare=0, idle_cooldown=0))
    [name] = await backend.create(1)
    registry.polling(name, clock.now)
    await scaler.tick()
    assert registry.is_retiring(name)
    # A lease claimed before the mark lands now: the worker is busy.
    registry.holds(name, "rec_1", clock.now)
    await scaler.tick()
    assert backend.retired == []
    # Once its recording is over, it goes.
    registry.released(name, "rec_1", clock.now)
    await scaler.tick()
    assert backend.retired == [name]


async def test_failed_workers_are_replaced_not_removed() -> None:
    scaler, backend, *_ = make(PoolConfig(min=1, max=5, spare=0))
    backend.workers["dead"] = WorkerInfo(name="dead", phase="failed", release="r1", reason="exited with code 1")
    await scaler.tick()
    assert "dead" in backend.workers  # the backend keeps it listed, with its reason, for operators
    assert backend.retired == []
    assert scaler.registry.failure_of("dead") == "exited with code 1", "its recording's error will say why"
    assert len([w for w in backend.workers.values() if w.phase == "running"]) == 1


async def test_a_worker_that_never_showed_up_is_removed_and_replaced() -> None:
    scaler, backend, *_ = make(PoolConfig(min=1, max=5, spare=0, start_timeout=30))
    backend.workers["stuck"] = WorkerInfo(name="stuck", phase="starting", release="r1", created_at=0.0)
    await scaler.tick()
    assert backend.retired == ["stuck"]
    assert len([w for w in backend.workers.values() if w.name != "stuck"]) == 1


async def test_paused_while_draining_starts_nothing() -> None:
    scaler, backend, *_ = make(PoolConfig(min=2, max=5, spare=1), queued=3)
    draining = [True]
    scaler.paused = lambda: draining[0]
    assert await scaler.tick() is None
    assert backend.workers == {}
    draining[0] = False
    await scaler.tick()
    assert len(backend.workers) == 4  # queued 3 + spare 1


async def test_runs_on_its_own_wakes_on_events_and_closes_the_backend() -> None:
    scaler, backend, _, _, queue = make(PoolConfig(min=0, max=5, spare=0))
    scaler.interval = 60.0  # only a wake-up can make it tick again in this test
    await scaler.start()
    try:
        await asyncio.sleep(0.1)
        assert backend.workers == {}
        queue[0] = 2
        scaler.wake()
        for _ in range(100):
            if len(backend.workers) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(backend.workers) == 2
    finally:
        await scaler.stop()
    assert backend.closed
