"""State changes, announced in-process to whoever cares (webhooks, metrics, the scheduler's waiters).

`orchestrator.lifecycle.Lifecycle` publishes each change right after it is committed. Listeners are
plain callables run synchronously; they must only record or enqueue, never wait, so announcing a
change can never block or undo the state machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from orchestrator.states import State
from orchestrator.store.base import RecordingRow

log = structlog.get_logger("orchestrator.events")


@dataclass(frozen=True)
class StateChange:
    recording: RecordingRow
    old: State | None
    new: State
    at: float


Listener = Callable[[StateChange], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

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
