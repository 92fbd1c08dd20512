"""What a caller asks for: the body of POST /v1/recordings, parsed by the API and carried out by the service
(the worker's messages are in `contract.protocol`).

`CreateRecording` is a `contract.spec.RecordingSpec` (its fields, bounds, defaults and validators, so the
API can never accept what a recorder would refuse) plus what only the orchestrator needs: where the file
goes, whom to tell, and the caller's metadata. Unknown fields are rejected.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from contract.protocol import UploadTarget
from contract.security import MAX_URL_LENGTH, UrlRejected, canonical_url
from contract.spec import RecordingSpec

MAX_METADATA_BYTES = 16 * 1024
# The spec's own bounds on a recording's length; the server's ORCHESTRATOR_MAX_DURATION narrows them.
_DURATION_BOUNDS = RecordingSpec.model_fields["duration"].metadata


def http_url(value: str, field: str = "url") -> str:
    """The URL in its canonical WHATWG form (what Chromium loads), else the error code `invalid_url`.

    The canonical form is what is checked, stored, fingerprinted and leased, so no later parser can read
    another host into it."""
    try:
        return canonical_url(value, field).href
    except UrlRejected as exc:
        raise PydanticCustomError("invalid_url", "{message}", {"message": str(exc)}) from None


class CreateRecording(RecordingSpec):
    """POST /v1/recordings: what to record and how (a RecordingSpec, width and height even), where to put
    it and whom to tell."""

    # The spec's `duration` is the caller's `max_duration`: optional here, the server fills in its default.
    # Fields by their API names only (`max_duration`, `from`): the spec's own names are not a second spelling.
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_name=False, validate_by_alias=True)

    url: str = Field(
        description=f"http(s) page to record, up to {MAX_URL_LENGTH} characters; stored in its canonical (WHATWG) form",
        examples=["https://meet.example.com/room-42"],
    )
    duration: Annotated[float, *_DURATION_BOUNDS] | None = Field(
        default=None,
        alias="max_duration",
        description="seconds; at most the server's ORCHESTRATOR_MAX_DURATION; default ORCHESTRATOR_DEFAULT_DURATION",
    )
    upload: UploadTarget | None = Field(
        default=None, description="bucket and prefix; omitted means the server's S3_BUCKET/S3_PREFIX or local"
    )
    webhook_url: str | None = Field(default=None, description="http(s) URL that receives signed state events")
    metadata: dict[str, Any] = Field(default_factory=dict, description=f"free-form, up to {MAX_METADATA_BYTES} bytes")

    @field_validator("url", "webhook_url", mode="before")
    @classmethod
    def _canonical(cls, value: Any, info: ValidationInfo) -> Any:
        """Before the spec's own URL check, so that check (and everything after) sees the canonical form."""
        if not isinstance(value, str) or (info.context or {}).get("stored"):
            return value  # not text: the type check says so; stored: checked when it arrived (older rows too)
        return http_url(value, info.field_name or "url")

    @field_validator("duration", mode="before")
    @classmethod
    def _within_server_limit(cls, value: Any, info: ValidationInfo) -> Any:
        """The server's limit, named as such, before the spec's wider bound could answer instead."""
        limit = (info.context or {}).get("max_duration")
        if limit is not None and isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
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
        """The recorder's view: the spec's own fields, with the server's default length filled in."""
        fields = {name: getattr(self, name) for name in RecordingSpec.model_fields}
        fields["duration"] = self.duration if self.duration is not None else default_duration
        return RecordingSpec.model_validate(fields)
