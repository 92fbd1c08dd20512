"""The interface every worker backend implements: local subprocesses (default) or Kubernetes pods.

A backend only starts, lists and retires workers. It never decides how many there should be (that is
the policy's job) and never hands out work (that is the scheduler's). Worker names are the `worker_id`
the worker uses in the worker protocol, so the orchestrator can join the two views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

WorkerPhase = Literal["starting", "running", "failed", "gone"]


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    phase: WorkerPhase
    release: str = ""
    created_at: float = 0.0
    # Why a worker failed, in words an operator can act on (e.g. "OOMKilled", "ImagePullBackOff: ...").
    reason: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


class PoolBackend(Protocol):
    name: str

    async def start(self) -> None:
        """Connect and take the first look at existing workers."""

    async def close(self) -> None:
        """Stop watching; a local backend also stops its worker processes."""

    async def create(self, count: int) -> list[str]:
        """Start `count` new workers and return their names at once (they report ready by leasing)."""

    async def retire(self, name: str) -> bool:
        """Remove one worker that the scheduler has already stopped leasing to.

        Returns False when the worker is gone already or changed under us (a precondition failed)."""

    async def list(self) -> list[WorkerInfo]:
        """The backend's current view, including failed workers with their reason."""
