"""Every change of a recording's state, written and announced in one call.

Webhooks, metrics and waiting workers learn of a change only from the event bus, so a state written
without its event would go unseen. Each method here is a compare-and-set in the store followed by its
`StateChange`: published once, only when the write applied, and only after it was committed, so a
listener that reads the store sees the new row. The change's outbox events (webhooks) are written by
the same transaction as the change itself.
"""

from __future__ import annotations

from collections.abc import Collection

from orchestrator.events import EventBus, StateChange
from orchestrator.states import State, sources
from orchestrator.store.base import NewRecording, RecordingStore
from orchestrator.store.row import Changes, RecordingRow


class Lifecycle:
    def __init__(self, store: RecordingStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    async def create(self, new: NewRecording) -> tuple[RecordingRow, bool]:
        """Queue `new`; an idempotent repeat (created=False) changed nothing and announces nothing."""
        emit = self.bus.emitter(lambda row: StateChange(row, None, State.QUEUED, new.created_at))
        row, created = await self.store.create(new, emit=emit)
        if created:
            self.bus.publish(StateChange(row, None, State.QUEUED, new.created_at))
        return row, created

    async def claim(
        self,
        *,
        worker_id: str,
        lease_id: str,
        at: float,
        expires_at: float,
        max_active: int | None = None,
        shun_after: float | None = None,
    ) -> RecordingRow | None:
        """Lease the oldest queued recording to `worker_id` (see `RecordingStore.claim_next`)."""
        row = await self.store.claim_next(
            worker_id=worker_id,
            lease_id=lease_id,
            at=at,
            expires_at=expires_at,
            max_active=max_active,
            shun_after=shun_after,
            emit=self.bus.emitter(lambda row: StateChange(row, State.QUEUED, State.STARTING, at)),
        )
        if row is not None:
            self.bus.publish(StateChange(row, State.QUEUED, State.STARTING, at))
        return row

    async def move(
        self,
        row: RecordingRow,
        to: State,
        *,
        at: float,
        changes: Changes | None = None,
        from_states: Collection[State] | None = None,
        lease_expired_before: float | None = None,
    ) -> RecordingRow | None:
        """Move `row` to `to` if it is still as the caller read it: in `row.status` (or, when given, in any
        of `from_states`) and under `row.lease_id`. Only legal edges are ever tried. None when the row had
        moved on meanwhile: nothing was written and nothing is announced."""
        guard = frozenset({row.status} if from_states is None else from_states) & sources(to)
        moved = await self.store.transition(
            row.id,
            from_states=guard,
            to=to,
            at=at,
            changes=changes,
            lease_id=row.lease_id,
            lease_expired_before=lease_expired_before,
            emit=self.bus.emitter(lambda moved: StateChange(moved, row.status, to, at)),
        )
        if moved is not None:
            self.bus.publish(StateChange(moved, row.status, to, at))
        return moved
