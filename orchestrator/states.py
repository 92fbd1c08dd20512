"""The recording state machine: which state may follow which, and nothing else.

    queued -> starting -> waiting -> recording -> finalizing -> uploading -> completed
                                                              (any active) -> failed | cancelled
    (any active) -> queued        a lapsed lease, retried on another worker
    completed | failed | cancelled -> purged    its files deleted (DELETE ?purge=true, or retention)

`waiting` is the waiting room: the page is open and the join script has run, but the page has not
admitted the recorder yet (wait_for kind `selector` or `signal`), so nothing is captured. A page without
a waiting room goes from starting straight to recording.

A worker may skip forward (a short recording can go from starting straight to finalizing, and its
report from any active state to a final one); it never goes backwards. Final states are final, except
that an ended recording may be purged: its files are gone, its row stays as the record that it existed.
Pausing is not a state: a paused recording is `recording`, with `paused` set.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    WAITING = "waiting"
    RECORDING = "recording"
    FINALIZING = "finalizing"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PURGED = "purged"


# Held by a worker under a lease, in pipeline order.
ACTIVE: tuple[State, ...] = (State.STARTING, State.WAITING, State.RECORDING, State.FINALIZING, State.UPLOADING)
# How a recording ends (what a worker may report); each of them may later be purged.
ENDED: frozenset[State] = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})
# Nothing runs any more: stop, cancel and pause no longer apply.
TERMINAL: frozenset[State] = ENDED | {State.PURGED}

TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.STARTING, State.CANCELLED}),
    **{state: frozenset(ACTIVE[i + 1 :]) | ENDED | {State.QUEUED} for i, state in enumerate(ACTIVE)},
    **{state: frozenset({State.PURGED}) for state in ENDED},
    State.PURGED: frozenset(),
}


def can(old: State, new: State) -> bool:
    return new in TRANSITIONS[old]


def is_forward(old: State, new: State) -> bool:
    """True when `new` is a later pipeline stage than `old` (what a heartbeat may move a recording to)."""
    return old in ACTIVE and new in ACTIVE and ACTIVE.index(new) > ACTIVE.index(old)


def sources(new: State) -> frozenset[State]:
    """Every state `new` may legally follow: the compare-and-set guard of a transition."""
    return frozenset(old for old, targets in TRANSITIONS.items() if new in targets)
