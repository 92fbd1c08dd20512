"""A state change as outbox events: what the store writes in the change's own transaction.

The payload is the `WebhookEvent` rendered when the change is committed, so a retry hours later sends
the recording as it was then, not as it is now. A recording without a webhook_url has no events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from contract.security.urls import UrlRejected, canonical_url
from orchestrator.api.views import Recording, WebhookEvent, utc
from orchestrator.events import StateChange
from orchestrator.store.base import RecordingRow
from orchestrator.store.outbox import OutboxEvent

_DEFAULT_PORTS = {"http": 80, "https": 443}


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def destination_of(url: str) -> str:
    """host[:port] of `url` (the port only when it is not the scheme's default): attempts to one
    destination share its concurrency, and the backlog is reported by it."""
    try:
        parsed = canonical_url(url, "webhook_url")
    except UrlRejected:
        return (urlsplit(url).netloc.rpartition("@")[2] or "invalid").lower()
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return host if _DEFAULT_PORTS.get(parsed.scheme) == parsed.port else f"{host}:{parsed.port}"


class WebhookComposer:
    """The bus's durable composer for webhooks (`EventBus.compose`): it only renders, never waits."""

    def __init__(self, render: Callable[[RecordingRow], Recording], horizon: float) -> None:
        self.render = render
        self.horizon = horizon

    def __call__(self, change: StateChange) -> list[OutboxEvent]:
        url = change.recording.request.get("webhook_url")
        if not url:
            return []
        event_id = new_event_id()
        payload = WebhookEvent(
            event_id=event_id,
            recording_id=change.recording.id,
            old_state=change.old,
            new_state=change.new,
            occurred_at=utc(change.at),
            recording=self.render(change.recording),
        )
        return [
            OutboxEvent(
                id=event_id,
                recording_id=change.recording.id,
                owner=change.recording.owner,
                url=url,
                destination=destination_of(url),
                payload=payload.model_dump_json(),
                created_at=change.at,
                expires_at=change.at + self.horizon,
            )
        ]
