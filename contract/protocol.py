"""The worker protocol: the only place where a recorder worker and the orchestrator meet.

Three calls over HTTP, authenticated with the worker token (`Authorization: Bearer <WORKER_TOKEN>`):

- `POST /v1/worker/lease`      body `LeaseRequest`  -> 200 `Lease`, or 204 when nothing came within `wait` seconds.
- `POST /v1/worker/heartbeat`  body `Heartbeat`     -> 200 `HeartbeatReply`, or 410 when the lease is no longer held.
- `POST /v1/worker/report`     body `Report`        -> 200 `HeartbeatReply`, or 410 when the lease is no longer held.

The orchestrator never reaches into a worker; a worker that cannot reach the orchestrator keeps recording
and retries, so an orchestrator restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from contract.spec import RecordingSpec, StopReason

WorkerState = Literal["idle", "starting", "waiting", "recording", "finalizing", "uploading"]
Action = Literal["continue", "stop", "cancel"]
Outcome = Literal["completed", "failed", "cancelled"]


# The objects of one attempt, by name: the orchestrator accepts a reported location only ending in one of them.
MEDIA_NAME = "rec.mp4"
AUDIO_NAME = "rec.m4a"  # an audio-only recording (spec.video false)
METADATA_NAME = "rec.json"
SCREENSHOT_NAME = "failure.png"  # the page when a recording failed
TIMELINE_NAME = "timeline.json"  # what happened during the recording, on the media clock (contract.timeline)


MEDIA_NAMES = (MEDIA_NAME, AUDIO_NAME)


def media_name(video: bool) -> str:
    return MEDIA_NAME if video else AUDIO_NAME


def media_of(names: Iterable[str]) -> str | None:
    """Which of an attempt's object names is its media (rec.mp4 or rec.m4a); None when there is none."""
    return next((name for name in names if name in MEDIA_NAMES), None)


def attempt_segment(attempt: int) -> str:
    """The folder and key segment that owns the files of one lease attempt: part of the contract, since the
    orchestrator accepts a reported location only with the reporting lease's own segment in it."""
    return f"attempt-{attempt}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UploadTarget(_Model):
    """Where the finished recording goes; no bucket means local storage under RECORDS_DIR.

    The prefix is normalised (no leading or trailing `/`, no `//`) and may not climb out of itself
    (`.` or `..` segments) or hide control characters: it is the start of every key of the recording."""

    bucket: str | None = Field(default=None, max_length=255)
    prefix: str = Field(default="", max_length=512)

    @field_validator("prefix")
    @classmethod
    def _normal_prefix(cls, value: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("stored"):
            return value  # shown as stored (rows from older versions); never leased unchecked
        bad = next((c for c in value if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0), None)
        if bad is not None:
            raise ValueError(f"contains the control character U+{ord(bad):04X}; use printable characters")
        segments = [s for s in value.split("/") if s]
        if any(s in (".", "..") for s in segments):
            raise ValueError(f"{value!r} has a '.' or '..' segment; give a plain path such as 'recordings/team-a'")
        return "/".join(segments)


class Progress(_Model):
    """What FFmpeg reports while capturing, as carried in heartbeats and the API."""

    elapsed: float = 0.0
    frames: int = 0
    fps: float = 0.0
    speed: float = 0.0
    dropped: int = 0
    duplicated: int = 0
    bytes: int = 0
    behind: bool = Field(default=False, description="capture has fallen behind real time for 10 s or more")
    first_frame_at: float | None = Field(default=None, description="unix time of the first captured frame")


class ErrorInfo(_Model):
    code: str
    message: str


class LeaseRequest(_Model):
    worker_id: str
    wait: float = Field(default=20.0, ge=0, le=60)
    capacity: int = Field(default=1, ge=0, description="how many more recordings this worker can take now")
    browser_sandbox: bool | None = Field(
        default=None,
        description="whether this worker's Chromium runs with its sandbox on; null: not known yet",
    )
    host: str | None = Field(
        default=None,
        max_length=253,
        description="the machine (on Kubernetes, the node) this worker shares with others: while a recording"
        " there is behind real time, none of its workers gets a lease; null: never held back",
    )


class Lease(_Model):
    lease_id: str
    recording_id: str
    attempt: int
    spec: RecordingSpec
    upload: UploadTarget = Field(default_factory=UploadTarget)
    heartbeat_interval: float = 3.0
    lease_ttl: float = 12.0


class Heartbeat(_Model):
    lease_id: str
    worker_id: str
    state: WorkerState
    progress: Progress = Field(default_factory=Progress)
    paused: bool = Field(default=False, description="capture is paused: nothing is being recorded")


class HeartbeatReply(_Model):
    """What the orchestrator wants of a running recording. A worker ignores fields it does not know, so an
    orchestrator that adds one does not cut the recordings of workers from before it."""

    model_config = ConfigDict(extra="ignore")

    action: Action = "continue"
    pause: bool = Field(default=False, description="the caller wants the capture paused (true) or running")
    stop_reason: StopReason = Field(
        default="api", description="with action stop: api (the caller asked) or shutdown (the orchestrator drains)"
    )


class Report(_Model):
    lease_id: str
    worker_id: str
    outcome: Outcome
    location: str | None = Field(default=None, description="s3://bucket/key or file:///path of rec.mp4 (rec.m4a)")
    metadata_location: str | None = None
    screenshot_location: str | None = Field(default=None, description="failure.png: the page when it failed")
    timeline_location: str | None = Field(
        default=None, description="timeline.json: what happened during the recording, on the media clock"
    )
    stop_reason: StopReason | None = Field(default=None, description="what ended the capture")
    quality: dict[str, Any] | None = None
    progress: Progress = Field(default_factory=Progress)
    error: ErrorInfo | None = None
    upload_pending: bool = False
    blocked: dict[str, int] = Field(
        default_factory=dict,
        description="requests the egress guard denied, by reason (an address class such as 'loopback')",
    )
