"""The warm-pool policy: how many workers there should be, as a pure function of a snapshot.

No I/O and no clock reads (the time is part of the snapshot), so the autoscaler loop, the unit tests
with a fake clock and a discrete-event simulation of the farm all run the very same decisions.

    desired = clamp(busy + queued + spare, min, max)      (max is also bounded by the machine's capacity)

Surplus workers are retired only once they have been idle for the cooldown, those of an older release
first, then the longest idle. Idle workers of an older release are drained (retired and replaced) at once.
A busy or starting worker is never retired; a failed one is removed and, if still needed, replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

WorkerStatus = Literal["starting", "idle", "busy", "failed"]


@dataclass(frozen=True)
class PoolConfig:
    min: int = 0
    max: int = 4
    spare: int = 1
    idle_cooldown: float = 60.0
    # How many recordings the machine (or cluster) sustains at once; None = no limit beyond `max`.
    capacity: int | None = None
    # A worker that has not shown up at the orchestrator this long after it was created is replaced.
    start_timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.min < 0 or self.max < 0 or self.spare < 0:
            raise ValueError("pool min, max and spare must be >= 0")
        if self.min > self.max:
            raise ValueError(f"pool min ({self.min}) is above max ({self.max})")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError("pool capacity must be >= 1")
        if self.idle_cooldown < 0:
            raise ValueError("pool idle cooldown must be >= 0")

    @property
    def ceiling(self) -> int:
        """The most workers worth running: a worker beyond capacity could never start its recording."""
        return self.max if self.capacity is None else min(self.max, self.capacity)


@dataclass(frozen=True)
class WorkerView:
    """One worker as the policy sees it: the backend's and the scheduler's views already joined."""

    name: str
    status: WorkerStatus
    release: str = ""
    created_at: float = 0.0
    idle_since: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PoolSnapshot:
    now: float
    queued: int
    workers: tuple[WorkerView, ...] = ()
    # The release new workers get; workers of any other release are drained when idle.
    release: str = ""

    def count(self, status: WorkerStatus) -> int:
        return sum(1 for w in self.workers if w.status == status)


@dataclass(frozen=True)
class Decision:
    desired: int
    create: int = 0
    retire: tuple[str, ...] = ()
    # Failed (or never-started) workers to remove; replacements, when needed, are part of `create`.
    replace: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def is_noop(self) -> bool:
        return not (self.create or self.retire or self.replace)


def desired_workers(busy: int, queued: int, config: PoolConfig) -> int:
    """clamp(busy + queued + spare, min, ceiling)."""
    return max(config.min, min(busy + queued + config.spare, config.ceiling))


def decide(snapshot: PoolSnapshot, config: PoolConfig) -> Decision:
    """What to create, retire and replace now. Never retires a busy or starting worker."""
    now = snapshot.now
    reasons: dict[str, str] = {}

    replace: list[str] = []
    for w in snapshot.workers:
        if w.status == "failed":
            replace.append(w.name)
            reasons[w.name] = w.reason or "failed"
        elif w.status == "starting" and now - w.created_at > config.start_timeout:
            replace.append(w.name)
            reasons[w.name] = f"did not reach the orchestrator within {config.start_timeout:g} s"

    replaced = set(replace)
    alive = [w for w in snapshot.workers if w.name not in replaced]
    busy = sum(1 for w in alive if w.status == "busy")
    desired = desired_workers(busy, snapshot.queued, config)

    # Idle workers of an older release go now, cooldown or not: they are replaced below if still needed.
    drain = [w for w in alive if w.status == "idle" and w.release != snapshot.release]
    retire = [w.name for w in sorted(drain, key=_idle_order)]
    for name in retire:
        reasons[name] = "older release"
    draining = set(retire)
    remaining = [w for w in alive if w.name not in draining]

    surplus = len(remaining) - desired
    if surplus > 0:
        cooled = [
            w
            for w in remaining
            if w.status == "idle" and w.idle_since is not None and now - w.idle_since >= config.idle_cooldown
        ]
        cooled_out = sorted(cooled, key=_idle_order)[:surplus]
        for w in cooled_out:
            retire.append(w.name)
            reasons[w.name] = f"idle for {now - (w.idle_since or now):.0f} s, above the pool's need"
        going = {w.name for w in cooled_out}
        remaining = [w for w in remaining if w.name not in going]

    create = max(0, desired - len(remaining))
    return Decision(desired=desired, create=create, retire=tuple(retire), replace=tuple(replace), reasons=reasons)


def _idle_order(w: WorkerView) -> tuple[float, str]:
    """Longest idle first; the name breaks ties so a decision never depends on input order."""
    return (w.idle_since if w.idle_since is not None else float("inf"), w.name)
