"""State changes, announced in-process to whoever cares (webhooks, metrics, the scheduler's waiters).

`orchestrator.lifecycle.Lifecycle` publishes each change right after it is committed. Listeners are
plain callables run synchronously; they must only record or enqueue, never wait, so announcing a
change can never block or undo the state machine.

What must survive a crash between the commit and the announcement is not a listener but a durable
composer: it renders outbox events from the change, and the store writes them in the change's own
transaction (see `orchestrator.store.outbox`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from orchestrator.states import State
from orchestrator.store.base import RecordingRow
from orchestrator.store.outbox import Emit, OutboxEvent

log = structlog.get_logger("orchestrator.events")


@dataclass(frozen=True)
class StateChange:
    recording: RecordingRow
    old: State | None
    new: State
    at: float


Listener = Callable[[StateChange], None]
# Renders the outbox events of a change; runs inside the store's transaction, so it must only render.
Composer = Callable[[StateChange], Sequence[OutboxEvent]]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._composers: list[Composer] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def compose(self, composer: Composer) -> None:
        """Have `composer`'s events written with every state change, in the same transaction."""
        self._composers.append(composer)

    def emitter(self, change_of: Callable[[RecordingRow], StateChange]) -> Emit | None:
        """The store's `emit` for one write: the events of the change that write makes (`change_of` builds
        it from the row as written); None when nobody composes events."""
        if not self._composers:
            return None
        composers = list(self._composers)

        def emit(row: RecordingRow) -> list[OutboxEvent]:
            change = change_of(row)
            return [event for composer in composers for event in composer(change)]

        return emit

    def publish(self, change: StateChange) -> None:
        log.info(
            "state_changed",
            recording_id=change.recording.id,
            old_state=change.old,
            new_state=change.new,
            worker=change.recording.worker,
            attempt=change.recording.attempts,
        )
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                # A broken listener must not turn a committed transition into an API error.
                log.exception("listener_failed", recording_id=change.recording.id, listener=repr(listener))
