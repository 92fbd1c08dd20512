"""The scheduler's view of workers: who is polling for work, who holds which leases, who is retiring.

It lives in memory only: after a restart, workers reappear with their next poll or heartbeat. A worker
not heard from for a while (a poll gap longer than the longest long-poll plus a lease TTL) is dropped.
The autoscaler reads `snapshot()` and calls `mark_retiring()` before its backend removes a worker, so
no lease is granted to a worker that is about to go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

WorkerState = Literal["idle", "busy"]


@dataclass
class WorkerEntry:
    worker_id: str
    first_seen: float
    last_seen: float
    idle_since: float | None
    recordings: set[str] = field(default_factory=set)
    retiring: bool = False
    browser_sandbox: bool | None = None

    @property
    def state(self) -> WorkerState:
        return "busy" if self.recordings else "idle"


@dataclass(frozen=True)
class WorkerSnapshot:
    worker_id: str
    state: WorkerState
    first_seen: float
    last_seen: float
    idle_since: float | None
    recordings: tuple[str, ...]
    retiring: bool
    browser_sandbox: bool | None = None


# How many backend failure reasons are remembered for the recordings of workers that died.
FAILURES_KEPT = 1000


class WorkerRegistry:
    def __init__(self) -> None:
        self._workers: dict[str, WorkerEntry] = {}
        self._failures: dict[str, str] = {}

    def note_failure(self, worker_id: str, reason: str) -> None:
        """What the pool backend says killed a worker (OOMKilled, Evicted, …), for its recording's error."""
        self._failures[worker_id] = reason
        while len(self._failures) > FAILURES_KEPT:
            del self._failures[next(iter(self._failures))]

    def failure_of(self, worker_id: str | None) -> str | None:
        return self._failures.get(worker_id or "")

    def _entry(self, worker_id: str, now: float) -> WorkerEntry:
        entry = self._workers.get(worker_id)
        if entry is None:
            entry = self._workers[worker_id] = WorkerEntry(worker_id, now, now, idle_since=now)
        entry.last_seen = now
        return entry

    def polling(self, worker_id: str, now: float, browser_sandbox: bool | None = None) -> WorkerEntry:
        """The worker asked for a lease; it says whether its browser is sandboxed once it knows."""
        entry = self._entry(worker_id, now)
        if browser_sandbox is not None:
            entry.browser_sandbox = browser_sandbox
        return entry

    def holds(self, worker_id: str, recording_id: str, now: float) -> None:
        """The worker holds a lease on the recording (granted, or proven by a heartbeat after a restart)."""
        entry = self._entry(worker_id, now)
        entry.recordings.add(recording_id)
        entry.idle_since = None

    def released(self, worker_id: str | None, recording_id: str, now: float) -> None:
        entry = self._workers.get(worker_id or "")
        if entry is None:
            return
        entry.recordings.discard(recording_id)
        if not entry.recordings and entry.idle_since is None:
            entry.idle_since = now

    def lost(self, worker_id: str | None) -> None:
        """The worker let a lease lapse: presume it dead until it polls again."""
        self._workers.pop(worker_id or "", None)

    def mark_retiring(self, worker_id: str) -> bool:
        """Stop leasing to this worker; False when it is unknown (never polled, or gone)."""
        entry = self._workers.get(worker_id)
        if entry is None:
            return False
        entry.retiring = True
        return True

    def is_retiring(self, worker_id: str) -> bool:
        entry = self._workers.get(worker_id)
        return entry is not None and entry.retiring

    def remove(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def prune(self, now: float, silent_for: float) -> list[str]:
        """Drop idle workers not heard from for `silent_for` seconds; busy ones lapse through their lease."""
        gone = [w.worker_id for w in self._workers.values() if not w.recordings and now - w.last_seen > silent_for]
        for worker_id in gone:
            del self._workers[worker_id]
        return gone

    def snapshot(self) -> list[WorkerSnapshot]:
        return [
            WorkerSnapshot(
                worker_id=w.worker_id,
                state=w.state,
                first_seen=w.first_seen,
                last_seen=w.last_seen,
                idle_since=w.idle_since,
                recordings=tuple(sorted(w.recordings)),
                retiring=w.retiring,
                browser_sandbox=w.browser_sandbox,
            )
            for w in sorted(self._workers.values(), key=lambda w: w.worker_id)
        ]
