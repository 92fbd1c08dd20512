"""`transition` and `update`, the same on every store: each is one guarded UPDATE of the row, which is what
a store implements (`_guarded_update`), in its own SQL."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import Any

from orchestrator.states import State
from orchestrator.store.outbox import Emit
from orchestrator.store.row import Changes, RecordingRow
from orchestrator.store.schema import assignments


class GuardedWrites(ABC):
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
        if not from_states:
            return None
        sets = {"status": to, "updated_at": at, f"{State(to).value}_at": at, **assignments(changes)}
        return await self._guarded_update(recording_id, sets, from_states, lease_id, lease_expired_before, emit)

    async def update(
        self,
        recording_id: str,
        changes: Changes,
        *,
        statuses: Collection[State] | None = None,
        lease_id: str | None = None,
    ) -> RecordingRow | None:
        return await self._guarded_update(recording_id, assignments(changes), statuses, lease_id, None)

    @abstractmethod
    async def _guarded_update(
        self,
        recording_id: str,
        sets: Mapping[str, Any],
        statuses: Collection[State] | None,
        lease_id: str | None,
        lease_expired_before: float | None,
        emit: Emit | None = None,
    ) -> RecordingRow | None:
        """Set `sets` on the row if its status is in `statuses` (None: any), it is under `lease_id` (when
        given) and its lease expired before `lease_expired_before` (when given); the events `emit` renders
        from the row as written go in the same transaction. None when a guard did not hold."""
