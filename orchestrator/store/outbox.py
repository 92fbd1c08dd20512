"""The webhook outbox as stored: events written with the state change that caused them, and every
attempt to deliver them.

An event is inserted in the same transaction as its state change (the `emit` argument of the store's
state-changing writes), so a committed change always has its event and a change rolled back has none.
The delivery loop (`orchestrator.webhooks.delivery`) then works through what is due; a retry is a
time in `next_attempt_at`, never a task asleep, so nothing is held while a receiver is down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.store.row import RecordingRow


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at
    DELIVERED = "delivered"  # a 2xx answer was recorded
    FAILED = "failed"  # given up: the horizon (or the attempt cap) ran out, or the URL is refused


@dataclass(frozen=True)
class OutboxEvent:
    """One webhook event to write beside its state change."""

    id: str  # evt_<hex>: the Standard Webhooks `webhook-id`, the same on every attempt
    recording_id: str
    owner: str | None
    url: str
    # host[:port] of `url`: concurrency is shared per destination, and the backlog is reported by it.
    destination: str
    payload: str  # the JSON body, rendered when the change was committed
    created_at: float
    # Given up after this time (created_at + ORCHESTRATOR_WEBHOOK_HORIZON).
    expires_at: float


@dataclass(frozen=True)
class Delivery:
    """A stored event and where its delivery stands."""

    seq: int
    id: str
    recording_id: str
    owner: str | None
    url: str
    destination: str
    payload: str
    created_at: float
    expires_at: float
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None  # None unless pending
    delivered_at: float | None
    last_error: str | None


@dataclass(frozen=True)
class DeliveryAttempt:
    """One POST of an event: what came back and how long it took."""

    event_id: str
    number: int  # 1-based
    at: float
    latency: float  # seconds from sending to the answer (or the error)
    status_code: int | None  # None: no HTTP answer
    error: str | None  # None on a 2xx


@dataclass(frozen=True)
class Backlog:
    """Pending events of one destination, for the backlog metrics."""

    destination: str
    pending: int
    oldest_created_at: float


# Called by the store inside a state-changing write with the row as written; what it returns is
# inserted in the same transaction. It must not wait or do I/O: it only renders.
Emit = Callable[["RecordingRow"], Sequence[OutboxEvent]]
