"""The public API's request and response bodies, declared once; `/openapi.json` is generated from them.

Field bounds of the recording itself (size, fps, duration) come from `contract.spec.RecordingSpec`, so
the API can never accept what a recorder would refuse. Unknown fields are rejected everywhere.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from contract.protocol import ErrorInfo, Progress, UploadTarget
from contract.security import MAX_URL_LENGTH, UrlRejected, canonical_url
from contract.spec import RecordingSpec, WaitFor
from orchestrator.states import State

MAX_METADATA_BYTES = 16 * 1024


def _spec_bounds(name: str) -> list[Any]:
    return list(RecordingSpec.model_fields[name].metadata)


def _spec_default(name: str) -> Any:
    return RecordingSpec.model_fields[name].default


def http_url(value: str, field: str = "url") -> str:
    """The URL in its canonical WHATWG form (what Chromium loads), else the error code `invalid_url`.

    The canonical form is what is checked, stored, fingerprinted and leased, so no later parser can read
    another host into it."""
    try:
        return canonical_url(value, field).href
    except UrlRejected as exc:
        raise PydanticCustomError("invalid_url", "{message}", {"message": str(exc)}) from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateRecording(_Model):
    """POST /v1/recordings: what to record, how, where to put it and whom to tell."""

    url: str = Field(
        description=f"http(s) page to record, up to {MAX_URL_LENGTH} characters; stored in its canonical (WHATWG) form",
        examples=["https://meet.example.com/room-42"],
    )
    max_duration: float | None = Field(
        default=None,
        gt=0,
        description="seconds; at most the server's ORCHESTRATOR_MAX_DURATION; default ORCHESTRATOR_DEFAULT_DURATION",
    )
    width: Annotated[int, *_spec_bounds("width")] = Field(default=_spec_default("width"), description="even")
    height: Annotated[int, *_spec_bounds("height")] = Field(default=_spec_default("height"), description="even")
    fps: Annotated[int, *_spec_bounds("fps")] = _spec_default("fps")
    wait_for: WaitFor = Field(default_factory=WaitFor)
    stop_on_signal: bool = Field(default=True, description="stop when the page logs END_RECORDING")
    live_upload: bool = Field(default=False, description="upload segments while recording")
    upload: UploadTarget | None = Field(
        default=None, description="bucket and prefix; omitted means the server's S3_BUCKET/S3_PREFIX or local"
    )
    webhook_url: str | None = Field(default=None, description="http(s) URL that receives signed state events")
    metadata: dict[str, Any] = Field(default_factory=dict, description=f"free-form, up to {MAX_METADATA_BYTES} bytes")

    @field_validator("url", "webhook_url")
    @classmethod
    def _http(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or (info.context or {}).get("stored"):
            return value  # a stored request was checked when it arrived (rows from older versions too)
        return http_url(value, info.field_name or "url")

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int, info: ValidationInfo) -> int:
        if value % 2:
            raise ValueError(f"{info.field_name} {value} is odd: H.264 4:2:0 needs even width and height")
        return value

    @field_validator("max_duration")
    @classmethod
    def _within_server_limit(cls, value: float | None, info: ValidationInfo) -> float | None:
        limit = (info.context or {}).get("max_duration")
        if value is not None and limit is not None and value > limit:
            raise ValueError(f"max_duration {value:g} s is above this server's limit of {limit:g} s")
        return value

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":")))
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes of JSON; keep it under {MAX_METADATA_BYTES}")
        return value

    def to_spec(self, default_duration: float) -> RecordingSpec:
        return RecordingSpec(
            url=self.url,
            duration=self.max_duration if self.max_duration is not None else default_duration,
            width=self.width,
            height=self.height,
            fps=self.fps,
            wait_for=self.wait_for,
            stop_on_signal=self.stop_on_signal,
            live_upload=self.live_upload,
        )


class Timestamps(_Model):
    """When the recording last entered each state (a retry re-enters queued and starting)."""

    queued: datetime | None = None
    starting: datetime | None = None
    recording: datetime | None = None
    finalizing: datetime | None = None
    uploading: datetime | None = None
    completed: datetime | None = None
    failed: datetime | None = None
    cancelled: datetime | None = None
    first_frame: datetime | None = Field(default=None, description="first captured frame, as the worker saw it")


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
    location: str | None = Field(default=None, description="s3://bucket/key or file:///path of rec.mp4")
    metadata_location: str | None = None
    media_url: str | None = Field(default=None, description="GET it for the media (redirect or stream)")
    quality: dict[str, Any] | None = None
    progress: Progress | None = None
    error: ErrorInfo | None = None
    request: CreateRecording


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
    """POSTed to a recording's webhook_url on every state change; `event_id` is the idempotency key."""

    event_id: str
    type: Literal["recording.state_changed"] = "recording.state_changed"
    recording_id: str
    old_state: State | None = Field(description="null for the event that creates the recording")
    new_state: State
    occurred_at: datetime
    recording: Recording
