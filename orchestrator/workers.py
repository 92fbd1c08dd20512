"""The scheduler's view of workers: who is polling for work, who holds which leases, who is retiring.

`Workers` is what the scheduler, the autoscaler and the pool route use; two implementations:

- `WorkerRegistry`, one orchestrator on its own store: in memory only, no write per poll. After a
  restart, workers reappear with their next poll or heartbeat.
- `SharedWorkerRegistry`, replicas on one PostgreSQL database: a worker polls whichever replica its
  connection reaches, yet the leader's autoscaler must see it and a retiring mark must stop every
  replica's claims. Polls are written to the store (`orchestrator.store.presence`, at most once every
  `SEEN_EVERY` s per worker and replica), and who holds what is read from the recordings themselves.

A worker not heard from for a while (a poll gap longer than the longest long-poll plus a lease TTL) is
dropped. The autoscaler reads `workers()` and calls `retire()` before its backend removes a worker, so
no lease is granted to a worker that is about to go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from orchestrator.states import ACTIVE
from orchestrator.store.base import RecordingStore

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
# With a shared registry, a worker's polls are written to the store at most this often per replica.
SEEN_EVERY = 5.0


class Workers(Protocol):
    """The workers as the scheduler, the autoscaler and the pool route see them."""

    async def polled(self, worker_id: str, now: float, browser_sandbox: bool | None = None) -> None:
        """The worker asked for a lease; it says whether its browser is sandboxed once it knows."""

    async def may_lease(self, worker_id: str) -> bool:
        """False when the worker is retiring (the store's claim refuses it too)."""

    def holds(self, worker_id: str, recording_id: str, now: float) -> None:
        """The worker holds a lease on the recording (granted, or proven by a heartbeat after a restart)."""

    def released(self, worker_id: str | None, recording_id: str, now: float) -> None: ...

    async def lost(self, worker_id: str | None) -> None:
        """The worker let a lease lapse: presume it dead until it polls again."""

    async def retire(self, worker_id: str) -> bool:
        """Lease nothing more to this worker; False when it is unknown (never polled, or gone)."""

    async def forget(self, worker_id: str) -> None:
        """The pool removed the worker."""

    async def prune(self, now: float, silent_for: float) -> list[str]:
        """Drop idle workers not heard from for `silent_for` seconds; busy ones lapse through their lease."""

    async def workers(self) -> list[WorkerSnapshot]: ...

    def note_failure(self, worker_id: str, reason: str) -> None:
        """What the pool backend says killed a worker (OOMKilled, Evicted, …), for its recording's error."""

    def failure_of(self, worker_id: str | None) -> str | None: ...


class FailureNotes:
    """The pool backend's reasons for dead workers: the leader's memory, read when their leases lapse."""

    def __init__(self) -> None:
        self._failures: dict[str, str] = {}

    def note_failure(self, worker_id: str, reason: str) -> None:
        self._failures[worker_id] = reason
        while len(self._failures) > FAILURES_KEPT:
            del self._failures[next(iter(self._failures))]

    def failure_of(self, worker_id: str | None) -> str | None:
        return self._failures.get(worker_id or "")


class WorkerRegistry(FailureNotes):
    """One orchestrator's workers, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self._workers: dict[str, WorkerEntry] = {}

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

    async def lost(self, worker_id: str | None) -> None:
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

    async def prune(self, now: float, silent_for: float) -> list[str]:
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

    # `Workers`, over the methods above

    async def polled(self, worker_id: str, now: float, browser_sandbox: bool | None = None) -> None:
        self.polling(worker_id, now, browser_sandbox)

    async def may_lease(self, worker_id: str) -> bool:
        return not self.is_retiring(worker_id)

    async def retire(self, worker_id: str) -> bool:
        return self.mark_retiring(worker_id)

    async def forget(self, worker_id: str) -> None:
        self.remove(worker_id)

    async def workers(self) -> list[WorkerSnapshot]:
        return self.snapshot()


class SharedWorkerRegistry(FailureNotes):
    """Workers as every replica on one store sees them (see the module docstring).

    Nothing here is written per heartbeat or per grant: the recordings' `worker` column says who holds
    what. What stays in this replica's memory is when it last wrote each worker's poll, and, on the
    leader, since when each worker has been idle (first looked at after this replica started: that
    start, or the worker's first poll if later; a worker seen busy, then idle: when that was noticed).
    So a new leader lets idle workers wait out one more cooldown before it retires them."""

    def __init__(self, store: RecordingStore, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self._started = clock()
        self._written: dict[str, tuple[float, bool | None]] = {}
        self._idle_since: dict[str, float] = {}

    async def polled(self, worker_id: str, now: float, browser_sandbox: bool | None = None) -> None:
        written = self._written.get(worker_id)
        if written is not None and now - written[0] < SEEN_EVERY and browser_sandbox in (None, written[1]):
            return
        await self.store.worker_seen(worker_id, now, browser_sandbox)
        self._written[worker_id] = (now, browser_sandbox if browser_sandbox is not None else (written or (0, None))[1])
        if len(self._written) > 4 * FAILURES_KEPT:
            self._written = {w: v for w, v in self._written.items() if now - v[0] < SEEN_EVERY}

    async def may_lease(self, worker_id: str) -> bool:
        return True  # the claim itself refuses a retiring worker, in its transaction

    def holds(self, worker_id: str, recording_id: str, now: float) -> None:
        self._idle_since.pop(worker_id, None)

    def released(self, worker_id: str | None, recording_id: str, now: float) -> None:
        pass  # the recording's row says it: `workers()` reads who is busy from the store

    async def lost(self, worker_id: str | None) -> None:
        if worker_id:
            await self.forget(worker_id)

    async def retire(self, worker_id: str) -> bool:
        return await self.store.retire_worker(worker_id)

    async def forget(self, worker_id: str) -> None:
        self._written.pop(worker_id, None)
        self._idle_since.pop(worker_id, None)
        await self.store.forget_worker(worker_id)

    async def prune(self, now: float, silent_for: float) -> list[str]:
        gone = [w.worker_id for w in await self.workers() if not w.recordings and now - w.last_seen > silent_for]
        for worker_id in gone:
            await self.forget(worker_id)
        return gone

    async def workers(self) -> list[WorkerSnapshot]:
        seen = await self.store.workers_seen()
        held = await self._held()
        now = self.clock()
        snapshots = []
        for w in seen:
            recordings = tuple(sorted(held.get(w.worker_id, ())))
            if recordings:
                self._idle_since.pop(w.worker_id, None)
                idle_since = None
            else:
                idle_since = self._idle_since.setdefault(w.worker_id, max(w.first_seen, min(self._started, now)))
            snapshots.append(
                WorkerSnapshot(
                    worker_id=w.worker_id,
                    state="busy" if recordings else "idle",
                    first_seen=w.first_seen,
                    last_seen=w.last_seen,
                    idle_since=idle_since,
                    recordings=recordings,
                    retiring=w.retiring,
                    browser_sandbox=w.browser_sandbox,
                )
            )
        known = {w.worker_id for w in seen}
        self._idle_since = {w: t for w, t in self._idle_since.items() if w in known}
        return snapshots

    async def _held(self, page: int = 500) -> dict[str, set[str]]:
        """Which active recordings each worker holds, from the recordings' `worker` column."""
        held: dict[str, set[str]] = {}
        before: int | None = None
        while True:
            rows = await self.store.list(ACTIVE, page, before)
            for row in rows:
                if row.worker:
                    held.setdefault(row.worker, set()).add(row.id)
            if len(rows) < page:
                return held
            before = rows[-1].seq


def worker_registry(store: RecordingStore, *, shared: bool) -> Workers:
    """In memory for one orchestrator on its own store; through the store for replicas sharing one."""
    return SharedWorkerRegistry(store) if shared else WorkerRegistry()
