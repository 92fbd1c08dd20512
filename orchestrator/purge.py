"""Purging an ended recording: its files deleted, its row kept as `purged`.

What is deleted is only what this orchestrator derives for the recording (`locations.py`): its own folder
`RECORDS_DIR/<id>/` (every attempt, and a legacy row's files), and in S3 the objects and unfinished
multipart uploads under each of its attempt prefixes (`…/<id>/attempt-<n>/`), found from the S3
locations the orchestrator accepted for it. Never a listing of a wider prefix, so no other recording's
objects can go with it. The S3 client is the orchestrator's own, made as media presigning makes it.

The row keeps its id, owner, request and timestamps (with `purged`); its locations and quality report
are cleared, since what they describe is gone. Files go first and the row after, so a purge that fails
halfway leaves the recording as it was, and trying again finishes it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import structlog

from orchestrator.errors import OrchestratorError
from orchestrator.events import EventBus
from orchestrator.lifecycle import Lifecycle
from orchestrator.locations import Locations, S3Object
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.states import State
from orchestrator.store.base import RecordingStore
from orchestrator.store.row import Changes, RecordingRow

log = structlog.get_logger("orchestrator.purge")

PURGE_FAILED = "purge_failed"
# What the row forgets when its files are gone: nothing it names can be fetched any more.
FORGOTTEN = Changes(
    location=None, metadata_location=None, screenshot_location=None, timeline_location=None, quality=None
)
# S3's DeleteObjects takes at most this many keys.
_DELETE_BATCH = 1000

PurgedBy = Literal["api", "retention"]


class Purger:
    def __init__(
        self,
        store: RecordingStore,
        bus: EventBus,
        locations: Locations,
        metrics: OrchestratorMetrics,
        s3_endpoint_url: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifecycle = Lifecycle(store, bus)
        self.locations = locations
        self.metrics = metrics
        self.s3_endpoint_url = s3_endpoint_url
        self.clock = clock
        self._s3: Any = None

    async def purge(self, row: RecordingRow, by: PurgedBy, *, at: float | None = None) -> RecordingRow | None:
        """Delete `row`'s files (local and S3) and mark it purged; None when the row moved on meanwhile (it
        was purged by someone else). Raises `purge_failed` with the row unchanged when a file stays."""
        await self.remove_files(row, s3=True)
        purged = await self.lifecycle.move(row, State.PURGED, at=self.clock() if at is None else at, changes=FORGOTTEN)
        if purged is not None:
            self.metrics.purged_recordings.labels(by).inc()
            log.info("recording_purged", recording_id=row.id, by=by)
        return purged

    async def remove_files(self, row: RecordingRow, *, s3: bool) -> None:
        """Delete the recording's folder under RECORDS_DIR and, with `s3`, its objects in the bucket."""
        try:
            local = await asyncio.to_thread(remove_folder, self.locations.folder(row.id))
        except OSError as exc:
            raise OrchestratorError(
                PURGE_FAILED,
                f"recording {row.id}: could not delete {self.locations.folder(row.id)}: {exc.strerror or exc};"
                " the recording is unchanged, fix the folder's permissions and purge it again",
            ) from None
        self.metrics.purged_bytes.labels("local").inc(local)
        if not s3:
            return
        prefixes = self.locations.s3_prefixes(
            row.id,
            row.attempts,
            row.upload,
            (row.location, row.metadata_location, row.screenshot_location, row.timeline_location),
            legacy=row.legacy_layout,
        )
        if not prefixes:
            return
        try:
            removed = await asyncio.to_thread(self._delete_objects, prefixes)
        except Exception as exc:  # botocore's errors: connection, credentials, denial
            where = ", ".join(f"s3://{p.bucket}/{p.key}" for p in prefixes)
            raise OrchestratorError(
                PURGE_FAILED,
                f"recording {row.id}: could not delete its objects under {where}: {exc}; the recording is"
                " unchanged, purge it again once S3 answers (the orchestrator needs s3:ListBucket,"
                " s3:ListBucketMultipartUploads, s3:DeleteObject and s3:AbortMultipartUpload there)",
            ) from None
        self.metrics.purged_bytes.labels("s3").inc(removed)

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3  # only needed when recordings go to S3

            self._s3 = boto3.client("s3", endpoint_url=self.s3_endpoint_url)
        return self._s3

    def _delete_objects(self, prefixes: list[S3Object]) -> int:
        """Abort the unfinished uploads and delete the objects under each prefix; the bytes deleted."""
        client = self._client()
        removed = 0
        for prefix in prefixes:
            uploads = client.get_paginator("list_multipart_uploads")
            for page in uploads.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
                for upload in page.get("Uploads", []):
                    if upload["Key"].startswith(prefix.key):
                        client.abort_multipart_upload(
                            Bucket=prefix.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
            listing = client.get_paginator("list_objects_v2")
            for page in listing.paginate(Bucket=prefix.bucket, Prefix=prefix.key):
                objects = [o for o in page.get("Contents", []) if o["Key"].startswith(prefix.key)]
                for start in range(0, len(objects), _DELETE_BATCH):
                    batch = objects[start : start + _DELETE_BATCH]
                    answer = client.delete_objects(
                        Bucket=prefix.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in batch], "Quiet": True}
                    )
                    errors = answer.get("Errors") or []
                    if errors:
                        first = errors[0]
                        raise RuntimeError(
                            f"S3 refused to delete {len(errors)} object(s), first {first.get('Key')!r}:"
                            f" {first.get('Code')} {first.get('Message')}"
                        )
                    removed += sum(int(o.get("Size", 0)) for o in batch)
        return removed


def remove_folder(folder: Path) -> int:
    """Delete `folder` and everything in it; the bytes freed (regular files with no other name). A link
    where the folder belongs is removed itself, never followed; a folder already gone is 0."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(folder)
        return info.st_size if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 else 0
    freed = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                entry = os.lstat(os.path.join(parent, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(entry.st_mode) and entry.st_nlink == 1:
                freed += entry.st_size

    def already_gone(function: Any, path: str, exc_info: Any) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(folder, onerror=already_gone)
    return freed
