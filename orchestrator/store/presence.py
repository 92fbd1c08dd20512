"""Workers as every orchestrator on one store sees them: who polled lately, and who is retiring.

One orchestrator keeps this in memory (`orchestrator.workers`). Replicas on one PostgreSQL server share
it through the store instead: a worker polls whichever replica its connection reaches, the leader's
autoscaler must still see it, and a retiring mark set by the leader must stop every replica from
leasing to that worker (the claim itself checks it, in the claim's transaction).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerPresence:
    worker_id: str
    first_seen: float
    last_seen: float
    retiring: bool
    browser_sandbox: bool | None
