"""Object keys: where a recording's files go in the bucket, from one configurable template.

The template (S3_KEY_TEMPLATE) may use `{prefix}`, `{yyyy}`, `{mm}`, `{dd}`, `{recording_id}`, `{attempt}` and
`{name}`; the default `{prefix}/{yyyy}/{mm}/{dd}/{recording_id}/attempt-{attempt}/{name}` keeps one "directory"
per attempt of a recording, so `rec.mp4`, `rec.json` and the live segments (`live/…`) of one attempt lie side
by side, and two attempts (a worker whose lease lapsed and its successor) never write, or abort, the same key.

The orchestrator accepts a reported location only in that shape (under the leased prefix, the recording id
segment, then an `attempt-<n>` segment), so the template check enforces it before anything is recorded.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime

from contract.errors import ErrorCode, RecorderError
from recorder.attempt import check_attempt

FIELDS = frozenset({"prefix", "yyyy", "mm", "dd", "recording_id", "attempt", "name"})


def check_template(template: str) -> None:
    """Reject a template that names unknown fields or cannot keep recordings and their attempts apart."""
    used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    unknown = used - FIELDS
    if unknown:
        raise RecorderError(
            ErrorCode.INVALID_ARGUMENT,
            f"S3_KEY_TEMPLATE {template!r} uses unknown field(s) {sorted(unknown)}; "
            f"allowed: {sorted(FIELDS)}",
        )
    for needed in ("recording_id", "attempt", "name"):
        if needed not in used:
            raise RecorderError(
                ErrorCode.INVALID_ARGUMENT,
                f"S3_KEY_TEMPLATE {template!r} must contain {{{needed}}}, "
                "or recordings (or two attempts of one recording) would overwrite each other",
            )
    segments = template.split("/")
    shape = (
        segments[0] == "{prefix}"
        and segments[-1] == "{name}"
        and "{recording_id}" in segments
        and "attempt-{attempt}" in segments[segments.index("{recording_id}") + 1 : -1]
    )
    if not shape:
        raise RecorderError(
            ErrorCode.INVALID_ARGUMENT,
            f"S3_KEY_TEMPLATE {template!r} must start with {{prefix}}/, hold {{recording_id}} as a whole segment "
            "and attempt-{attempt} as a later one, and end in /{name} "
            "(the orchestrator accepts only such locations)",
        )


def object_key(
    template: str, *, prefix: str, recording_id: str, attempt: int, name: str, started_at: datetime
) -> str:
    """The key of `name` (e.g. `rec.mp4`, `live/seg_00000.ts`) for one attempt of a recording that started at
    `started_at`.

    The date is taken in UTC so every worker files a recording under the same day whatever its time zone;
    an empty prefix leaves no leading or doubled slash.
    """
    check_template(template)
    check_attempt(attempt)  # a positive number, or nothing is written
    when = started_at.astimezone(UTC) if started_at.tzinfo else started_at.replace(tzinfo=UTC)
    key = template.format(
        prefix=prefix.strip("/"),
        yyyy=f"{when.year:04d}",
        mm=f"{when.month:02d}",
        dd=f"{when.day:02d}",
        recording_id=recording_id,
        attempt=attempt,
        name=name,
    )
    key = re.sub(r"/{2,}", "/", key).lstrip("/")
    return key


def live_prefix(template: str, *, prefix: str, recording_id: str, attempt: int, started_at: datetime) -> str:
    """The key prefix, ending in `/`, under which the segments uploaded while recording go (`…/live/`)."""
    return object_key(
        template, prefix=prefix, recording_id=recording_id, attempt=attempt, name="live/", started_at=started_at
    )


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".png": "image/png",
    ".json": "application/json",
    ".ts": "video/mp2t",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mkv": "video/x-matroska",
}


def content_type(name: str) -> str:
    """Content-Type stored with an object, so browsers and players treat it right when fetched."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return _CONTENT_TYPES.get(suffix, "application/octet-stream")
