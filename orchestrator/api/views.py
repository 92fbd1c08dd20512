"""What the API answers and the webhooks send: the response shapes, and the one mapping from the store's
row to the public `Recording`. Unknown fields are rejected here too, so the shapes stay exact."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.protocol import Progress, UploadTarget
from contract.spec import StopReason
from orchestrator.request import CreateRecording
from orchestrator.states import State
from orchestrator.store.base import RecordingRow
from orchestrator.store.outbox import Delivery, DeliveryAttempt


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timestamps(_Model):
    """When the recording last entered each state (a retry re-enters queued and starting)."""

    queued: datetime | None = None
    starting: datetime | None = None
    waiting: datetime | None = None
    recording: datetime | None = None
    finalizing: datetime | None = None
    uploading: datetime | None = None
    completed: datetime | None = None
    failed: datetime | None = None
    cancelled: datetime | None = None
    purged: datetime | None = Field(default=None, description="when its files were deleted (purge or retention)")
    first_frame: datetime | None = Field(default=None, description="first captured frame, as the worker saw it")


class RecordingError(_Model):
    """Why a recording failed (or how a cancel ended), and what the page showed then."""

    code: str = Field(description="stable, machine-readable (contract.errors.ErrorCode, or invalid_report)")
    message: str = Field(description="what happened and what to change")
    screenshot: str | None = Field(
        default=None, description="GET it for failure.png, the page when the recording failed; null: none taken"
    )


class Recording(_Model):
    id: str
    owner: str | None = Field(
        default=None, description="the caller (API_TOKENS name) that created it; null for recordings from before names"
    )
    status: State
    created_at: datetime
    updated_at: datetime
    timestamps: Timestamps
    attempts: int = Field(description="leases granted so far; a lapsed lease is retried up to max_attempts")
    max_attempts: int
    worker: str | None = Field(default=None, description="worker holding (or that last held) the lease")
    requested_action: Literal["stop", "cancel"] | None = Field(
        default=None, description="what the API asked the worker to do; it happens at the next heartbeat"
    )
    keep_file: bool = Field(default=True, description="false when a cancel asked for the file to be discarded")
    duration: float = Field(description="the effective max_duration in seconds")
    upload: UploadTarget
    paused: bool = Field(default=False, description="the worker reports the capture paused: nothing is recorded")
    pause_requested: bool = Field(
        default=False,
        description="the caller asked for a pause (POST …/pause); the worker follows at its next heartbeat",
    )
    stop_reason: StopReason | None = Field(
        default=None, description="what ended the capture, as the worker reported it ('api': a stop through the API)"
    )
    location: str | None = Field(
        default=None, description="s3://bucket/key or file:///path of rec.mp4 (rec.m4a when recorded without video)"
    )
    metadata_location: str | None = None
    media_url: str | None = Field(default=None, description="GET it for the media (redirect or stream)")
    timeline: str | None = Field(
        default=None,
        description="GET it for timeline.json, what happened during the recording on the media clock"
        " (contract/timeline.py); null: none reported",
    )
    quality: dict[str, Any] | None = None
    progress: Progress | None = None
    error: RecordingError | None = None
    request: CreateRecording


class ViewLink(_Model):
    """A signed link a browser opens without a token: the replay page of a recording, or the list page."""

    url: str = Field(description="path and query (exp, sig) to open on this server; every request of the page signs")
    expires_at: datetime = Field(description="the link and the page's requests are refused (403) after this")


class RecordingList(_Model):
    items: list[Recording]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page; null at the end")


class PoolWorker(_Model):
    id: str
    state: Literal["starting", "idle", "busy", "failed"]
    retiring: bool = False
    last_seen: datetime | None = None
    idle_since: datetime | None = None
    recordings: list[str] = Field(
        default_factory=list,
        description="the caller's own recordings this worker holds leases on (the admin token sees all)",
    )
    reason: str | None = Field(
        default=None,
        description="why the backend reports the worker failed; the worker's own words after it (its last log"
        " line, its termination message) only for the admin token",
    )
    browser_sandbox: bool | None = Field(
        default=None,
        description="whether the worker's Chromium runs sandboxed (false: it logged why); null: not reported yet",
    )


class PoolView(_Model):
    workers: list[PoolWorker]
    idle: int
    busy: int
    starting: int
    queued: int
    active: int = Field(description="recordings leased right now")
    capacity: int | None = Field(description="most recordings leased at once (POOL_CAPACITY); null: no limit")
    min: int
    max: int
    spare: int
    draining: bool = Field(description="true while shutting down: no new leases")


class ErrorDetail(_Model):
    field: str
    message: str


class Error(_Model):
    code: str = Field(description="stable, machine-readable")
    message: str = Field(description="what happened and what to change")
    details: list[ErrorDetail] | None = None


class ErrorBody(_Model):
    error: Error


class Health(_Model):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class WebhookEvent(_Model):
    """POSTed to a recording's webhook_url on every state change, with the Standard Webhooks headers
    `webhook-id` (= event_id, the same on every attempt), `webhook-timestamp` (unix seconds of the attempt)
    and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`).
    Delivery is at least once: receivers dedupe by `webhook-id`."""

    event_id: str = Field(description="the event's id, also sent as the webhook-id header; dedupe by it")
    type: Literal["recording.state_changed"] = "recording.state_changed"
    recording_id: str
    old_state: State | None = Field(description="null for the event that creates the recording")
    new_state: State
    occurred_at: datetime
    recording: Recording


class WebhookAttempt(_Model):
    """One POST of an event and what came back."""

    number: int = Field(description="1 for the first attempt")
    at: datetime = Field(description="when it was sent")
    latency: float = Field(description="seconds from sending to the answer (or the error)")
    status_code: int | None = Field(description="the receiver's HTTP status; null: no answer (see error)")
    error: str | None = Field(description="why it did not count as delivered; null when it did (2xx)")


class WebhookDelivery(_Model):
    """One webhook event of a recording and where its delivery stands."""

    event_id: str = Field(description="the webhook-id header and the payload's event_id")
    recording_id: str
    old_state: State | None
    new_state: State
    url: str = Field(description="the recording's webhook_url")
    status: Literal["pending", "delivered", "failed"] = Field(
        description="pending: to be (re)tried at next_attempt_at; delivered: a 2xx was received; failed: given up"
    )
    created_at: datetime = Field(description="when the state change happened")
    expires_at: datetime = Field(description="retried until then (ORCHESTRATOR_WEBHOOK_HORIZON), then failed")
    next_attempt_at: datetime | None = Field(description="the next retry while pending; null otherwise")
    delivered_at: datetime | None = None
    last_error: str | None = None
    attempts: list[WebhookAttempt] = Field(description="every attempt so far, oldest first")


class WebhookDeliveryList(_Model):
    items: list[WebhookDelivery] = Field(description="the recording's events, in the order they happened")


def to_webhook_delivery(delivery: Delivery, attempts: list[DeliveryAttempt]) -> WebhookDelivery:
    """A stored event and its attempts, as the delivery log shows them."""
    payload = json.loads(delivery.payload)
    return WebhookDelivery(
        event_id=delivery.id,
        recording_id=delivery.recording_id,
        old_state=payload.get("old_state"),
        new_state=payload["new_state"],
        url=delivery.url,
        status=delivery.status.value,
        created_at=utc(delivery.created_at),
        expires_at=utc(delivery.expires_at),
        next_attempt_at=utc(delivery.next_attempt_at),
        delivered_at=utc(delivery.delivered_at),
        last_error=delivery.last_error,
        attempts=[
            WebhookAttempt(number=a.number, at=utc(a.at), latency=a.latency, status_code=a.status_code, error=a.error)
            for a in attempts
        ],
    )


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def to_recording(row: RecordingRow, max_attempts: int) -> Recording:
    """How a stored recording is shown, to its caller and in webhook events alike."""
    error = (
        RecordingError(
            code=row.error_code,
            message=row.error_message or "",
            screenshot=f"/v1/recordings/{row.id}/screenshot" if row.screenshot_location else None,
        )
        if row.error_code
        else None
    )
    return Recording(
        id=row.id,
        owner=row.owner,
        status=row.status,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        timestamps=Timestamps(**{name: utc(ts) for name, ts in row.timestamps.items()}),
        attempts=row.attempts,
        max_attempts=max_attempts,
        worker=row.worker,
        requested_action=row.requested_action,
        keep_file=row.keep_file,
        paused=row.paused,
        pause_requested=row.pause_requested,
        stop_reason=row.stop_reason,
        duration=float(row.spec["duration"]),
        upload=UploadTarget.model_validate(row.upload, context={"stored": True}),
        location=row.location,
        metadata_location=row.metadata_location,
        media_url=f"/v1/recordings/{row.id}/media" if row.location else None,
        timeline=f"/v1/recordings/{row.id}/timeline" if row.timeline_location else None,
        quality=row.quality,
        progress=Progress.model_validate(row.progress) if row.progress else None,
        error=error,
        request=CreateRecording.model_validate(row.request, context={"stored": True}),
    )
