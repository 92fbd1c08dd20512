"""The warm-pool policy, driven by a fake clock: every decision is a function of the snapshot alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from orchestrator.pool.policy import Decision, PoolConfig, PoolSnapshot, WorkerView, decide, desired_workers


@dataclass
class FakePool:
    """A tiny pool that applies decisions, so tests can follow several ticks of a fake clock."""

    config: PoolConfig
    release: str = "r2"
    now: float = 1000.0
    queued: int = 0
    workers: dict[str, WorkerView] = field(default_factory=dict)
    serial: int = 0

    def add(self, status: str, *, idle_for: float = 0.0, release: str | None = None) -> str:
        self.serial += 1
        name = f"w{self.serial}"
        self.workers[name] = WorkerView(
            name=name,
            status=status,  # type: ignore[arg-type]
            release=self.release if release is None else release,
            created_at=self.now,
            idle_since=self.now - idle_for if status == "idle" else None,
        )
        return name

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(
            now=self.now, queued=self.queued, workers=tuple(self.workers.values()), release=self.release
        )

    def tick(self) -> Decision:
        decision = decide(self.snapshot(), self.config)
        for name in decision.retire + decision.replace:
            del self.workers[name]
        for _ in range(decision.create):
            self.add("starting")
        return decision


def test_scales_up_on_queue_and_keeps_a_spare() -> None:
    pool = FakePool(PoolConfig(min=0, max=10, spare=1))
    pool.queued = 3
    decision = pool.tick()
    assert decision.desired == 4
    assert decision.create == 4
    # The starting workers count: the next tick does not create them again.
    assert pool.tick().create == 0


def test_spare_kept_when_all_are_busy() -> None:
    pool = FakePool(PoolConfig(min=0, max=10, spare=2))
    for _ in range(3):
        pool.add("busy")
    decision = pool.tick()
    assert decision.desired == 5
    assert decision.create == 2
    assert decision.retire == ()


def test_clamped_to_min_and_max() -> None:
    empty = FakePool(PoolConfig(min=2, max=5, spare=0))
    assert empty.tick().create == 2

    flood = FakePool(PoolConfig(min=0, max=5, spare=1))
    flood.queued = 50
    assert flood.tick().create == 5
    assert desired_workers(busy=0, queued=50, config=PoolConfig(min=0, max=5, spare=1)) == 5


def test_capacity_bounds_the_pool_below_max() -> None:
    pool = FakePool(PoolConfig(min=0, max=10, spare=1, capacity=3))
    pool.queued = 8
    decision = pool.tick()
    assert decision.desired == 3
    assert decision.create == 3


def test_cooldown_respected() -> None:
    cooldown = 60.0
    pool = FakePool(PoolConfig(min=0, max=5, spare=0, idle_cooldown=cooldown))
    name = pool.add("idle", idle_for=cooldown - 1)
    assert pool.tick().retire == ()
    assert name in pool.workers

    pool.now += 1.0  # now idle for exactly the cooldown
    decision = pool.tick()
    assert decision.retire == (name,)
    assert decision.create == 0


def test_scale_down_retires_the_longest_idle_first_and_only_the_surplus() -> None:
    pool = FakePool(PoolConfig(min=1, max=5, spare=0, idle_cooldown=10))
    short = pool.add("idle", idle_for=20)
    longest = pool.add("idle", idle_for=300)
    middle = pool.add("idle", idle_for=100)
    decision = pool.tick()
    assert decision.desired == 1
    assert set(decision.retire) == {longest, middle}
    assert list(pool.workers) == [short]


def test_older_release_drained_when_idle_and_replaced() -> None:
    pool = FakePool(PoolConfig(min=2, max=5, spare=0, idle_cooldown=600))
    old_idle = pool.add("idle", idle_for=1, release="r1")
    old_busy = pool.add("busy", release="r1")
    decision = pool.tick()
    assert decision.retire == (old_idle,)
    assert old_busy in pool.workers
    assert decision.create == 1  # min 2 = the busy old worker + one new one
    assert {w.release for w in pool.workers.values() if w.name != old_busy} == {"r2"}

    # When the old busy worker finishes, it is drained at once, without waiting for the cooldown.
    pool.workers[old_busy] = WorkerView(old_busy, "idle", release="r1", idle_since=pool.now)
    decision = pool.tick()
    assert decision.retire == (old_busy,)
    assert decision.create == 1
    assert all(w.release == "r2" for w in pool.workers.values())


def test_failed_worker_replaced_with_its_reason() -> None:
    pool = FakePool(PoolConfig(min=2, max=5, spare=0))
    pool.add("idle")
    pool.workers["crashed"] = WorkerView("crashed", "failed", release="r2", reason="exit code 139")
    decision = pool.tick()
    assert decision.replace == ("crashed",)
    assert decision.reasons["crashed"] == "exit code 139"
    assert decision.create == 1


def test_worker_stuck_starting_is_replaced() -> None:
    pool = FakePool(PoolConfig(min=1, max=5, spare=0, start_timeout=30))
    stuck = pool.add("starting")
    pool.now += 29
    assert pool.tick().is_noop
    pool.now += 2
    decision = pool.tick()
    assert decision.replace == (stuck,)
    assert decision.create == 1


def test_never_retires_a_busy_worker_even_above_max() -> None:
    # max was lowered below what is running: the idle ones go, the busy ones stay.
    pool = FakePool(PoolConfig(min=0, max=1, spare=1, idle_cooldown=0))
    busy = [pool.add("busy") for _ in range(3)]
    idle = pool.add("idle", idle_for=5)
    decision = pool.tick()
    assert decision.retire == (idle,)
    assert decision.create == 0
    assert sorted(pool.workers) == sorted(busy)
    # And later ticks leave the busy ones alone however long they run.
    pool.now += 10_000
    assert pool.tick().is_noop


def test_starting_workers_are_never_retired() -> None:
    pool = FakePool(PoolConfig(min=0, max=5, spare=0, idle_cooldown=0))
    pool.add("starting")
    assert pool.tick().retire == ()


def test_a_burst_then_quiet_returns_to_min_plus_spare() -> None:
    cfg = PoolConfig(min=1, max=6, spare=1, idle_cooldown=30)
    pool = FakePool(cfg)
    pool.queued = 4
    pool.tick()
    assert len(pool.workers) == 5
    # All start, take the four jobs, finish; the queue is empty.
    pool.queued = 0
    for name in list(pool.workers):
        pool.workers[name] = WorkerView(name, "idle", release=pool.release, idle_since=pool.now)
    pool.now += 29
    assert pool.tick().retire == ()
    pool.now += 1
    pool.tick()
    assert len(pool.workers) == max(cfg.min, cfg.spare)


@pytest.mark.parametrize(
    "kwargs",
    [dict(min=3, max=2), dict(min=-1), dict(spare=-1), dict(capacity=0), dict(idle_cooldown=-1)],
)
def test_config_rejects_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        PoolConfig(**kwargs)
