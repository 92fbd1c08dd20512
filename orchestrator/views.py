"""How a stored recording is shown: the one mapping from the store's row to the API's `Recording`."""

from __future__ import annotations

from datetime import UTC, datetime

from contract.protocol import ErrorInfo, Progress, UploadTarget
from orchestrator.models import CreateRecording, Recording, Timestamps
from orchestrator.store.base import RecordingRow


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def to_recording(row: RecordingRow, max_attempts: int) -> Recording:
    error = ErrorInfo(code=row.error_code, message=row.error_message or "") if row.error_code else None
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
        duration=float(row.spec["duration"]),
        upload=UploadTarget.model_validate(row.upload, context={"stored": True}),
        location=row.location,
        metadata_location=row.metadata_location,
        media_url=f"/v1/recordings/{row.id}/media" if row.location else None,
        quality=row.quality,
        progress=Progress.model_validate(row.progress) if row.progress else None,
        error=error,
        request=CreateRecording.model_validate(row.request, context={"stored": True}),
    )
