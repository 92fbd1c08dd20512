"""The repository interface for recordings: narrow enough that PostgreSQL could replace SQLite.

Every write is one short transaction, committed before the call returns, so whatever the API or a
worker is told has already survived a crash. State changes are compare-and-set on the current state
(and, for worker calls, on the lease), which is what keeps concurrent stop, cancel, heartbeat, report
and lease-lapse decisions from overwriting each other.

The writes that change a state (`create`, `claim_next`, `transition`) announce nothing themselves:
the orchestrator makes them through `orchestrator.lifecycle.Lifecycle`, which publishes each one after
the commit. What must not be lost with a crash between the commit and the announcement (the webhook
events) is written by the same transaction instead: each of those writes takes an `emit` that renders
the events from the row as written (see `orchestrator.store.outbox`).

Two implementations: SQLite (embedded, one orchestrator) and PostgreSQL (several replicas). Both pass
the same tests (`tests/orchestrator/test_store.py`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.states import State
from orchestrator.store.outbox import Backlog, Delivery, DeliveryAttempt, DeliveryStatus, Emit
from orchestrator.store.presence import WorkerPresence
from orchestrator.store.row import Changes, RecordingRow


@dataclass(frozen=True)
class NewRecording:
    id: str
    request: dict[str, Any]
    spec: dict[str, Any]
    upload: dict[str, Any]
    created_at: float
    idempotency_key: str | None = None
    # Hash of the normalised request: the same key with another body is a conflict.
    fingerprint: str | None = None
    # The caller's name (API_TOKENS); None only for rows created before callers had names.
    owner: str | None = None


class IdempotencyConflict(Exception):
    """The idempotency key is taken by a recording created from a different request."""

    def __init__(self, existing: RecordingRow) -> None:
        super().__init__(f"idempotency key already used for {existing.id}")
        self.existing = existing


class RecordingStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise when the store cannot serve reads and writes."""

    async def create(self, new: NewRecording, *, emit: Emit | None = None) -> tuple[RecordingRow, bool]:
        """Insert a queued recording; with an idempotency key already seen, return that one (created=False,
        nothing emitted) or raise IdempotencyConflict when its fingerprint differs."""

    async def get(self, recording_id: str) -> RecordingRow | None: ...

    async def get_by_lease(self, lease_id: str) -> RecordingRow | None: ...

    async def list(
        self, statuses: Collection[State] | None, limit: int, before_seq: int | None, owner: str | None = None
    ) -> list[RecordingRow]:
        """Newest first, keyset-paginated on `seq` so pages stay stable while recordings are added; with
        `owner`, only that caller's recordings (None: everyone's)."""

    async def transition(
        self,
        recording_id: str,
        *,
        from_states: Collection[State],
        to: State,
        at: float,
        changes: Changes | None = None,
        lease_id: str | None = None,
        lease_expired_before: float | None = None,
        emit: Emit | None = None,
    ) -> RecordingRow | None:
        """Move to `to` (stamping `<to>_at`) only if the current state is in `from_states` and the guards
        hold; None when they do not (someone else moved it first, and nothing is emitted)."""

    async def update(
        self,
        recording_id: str,
        changes: Changes,
        *,
        statuses: Collection[State] | None = None,
        lease_id: str | None = None,
    ) -> RecordingRow | None:
        """Change fields without changing state, under the same guards as `transition`."""

    async def claim_next(
        self,
        *,
        worker_id: str,
        lease_id: str,
        at: float,
        expires_at: float,
        max_active: int | None = None,
        shun_after: float | None = None,
        emit: Emit | None = None,
    ) -> RecordingRow | None:
        """Atomically lease the oldest queued recording (queued -> starting, attempts + 1), unless
        `max_active` recordings are leased already. With `shun_after`, skip recordings this worker
        lost (its lease lapsed) that were queued again after that time. A worker marked retiring
        (`retire_worker`) gets nothing. Several orchestrators on one store never lease one recording
        twice, nor more than `max_active` in all, nor anything to a worker once its retiring mark is
        committed."""

    async def expired_leases(self, now: float) -> list[RecordingRow]:
        """Active recordings whose lease expired before `now`."""

    async def extend_leases(self, until: float) -> int:
        """Push every active lease's expiry to at least `until` (a restarted orchestrator's grace)."""

    async def count_by_status(self) -> dict[State, int]: ...

    async def ended_before(
        self,
        cutoff: float,
        statuses: Collection[State],
        *,
        local_only: bool,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[RecordingRow]:
        """Recordings in `statuses` that ended (completed, failed or cancelled) before `cutoff`, oldest
        `seq` first after `after_seq`; with `local_only`, only those stored without a bucket. What the
        retention loop works through, a page at a time."""

    async def delete(self, recording_id: str, statuses: Collection[State]) -> bool:
        """Remove the row, and its webhook events and their attempts, if it is still in one of `statuses`;
        False when it was not (gone, or moved on)."""

    # the webhook outbox

    async def due_deliveries(
        self, now: float, limit: int, *, skip: Collection[str] = (), full: Collection[str] = ()
    ) -> list[Delivery]:
        """Pending events due by `now` (oldest due first), leaving out the ids in `skip` (in flight), the
        destinations in `full` (no free slot: however many of their events are due, they must not crowd
        another destination's out of `limit`), and any event with an earlier event of the same recording
        still pending: a recording's events are delivered in the order they happened."""

    async def next_delivery_at(self, *, skip: Collection[str] = (), full: Collection[str] = ()) -> float | None:
        """When the soonest event `due_deliveries` could return (same `skip` and `full`) is due; None when
        there is none. The delivery loop sleeps until then: an event in flight, or held behind an earlier
        one, must not make it look again at once."""

    async def record_attempt(
        self, attempt: DeliveryAttempt, *, status: DeliveryStatus, next_attempt_at: float | None
    ) -> Delivery | None:
        """Log `attempt` and set where its event stands: delivered, failed (given up), or pending again at
        `next_attempt_at`. The store numbers the attempt (the event's count plus one, whatever
        `attempt.number` says), so attempts that overlap are both logged. The status applies only while
        the event is pending; None when it was not (a redelivery raced it) or the event is gone (nothing
        logged then)."""

    async def get_delivery(self, event_id: str) -> Delivery | None: ...

    async def deliveries(self, recording_id: str) -> list[tuple[Delivery, list[DeliveryAttempt]]]:
        """Every event of the recording, oldest first, each with its attempts in order."""

    async def redeliver(self, event_id: str, *, at: float, expires_at: float) -> Delivery | None:
        """Make the event pending again, due at `at` and given up after `expires_at`, whatever its status;
        its attempts so far stay in the log. None when there is no such event."""

    async def delivery_backlog(self) -> list[Backlog]:
        """Pending events per destination, with the creation time of the oldest."""

    # workers, as every orchestrator on this store sees them (see `orchestrator.store.presence`)

    async def worker_seen(self, worker_id: str, at: float, browser_sandbox: bool | None = None) -> None:
        """The worker polled at `at` (first_seen is set once; a None `browser_sandbox` keeps the known one)."""

    async def retire_worker(self, worker_id: str) -> bool:
        """Lease nothing more to the worker; False when the store never saw it."""

    async def forget_worker(self, worker_id: str) -> None:
        """The worker is gone (removed by the pool, or silent too long)."""

    async def workers_seen(self) -> list[WorkerPresence]:
        """Every worker the store knows, by id."""
