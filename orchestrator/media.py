"""Where a recording's files can be fetched: a presigned S3 URL, or a file under RECORDS_DIR. The media
(rec.mp4, or rec.m4a for an audio-only recording) once it is complete, failure.png, the page when
the recording failed, and timeline.json, what happened during it. The timeline is read here (from the
bucket with the orchestrator's own credentials) and served by the API, so the replay page needs no CORS
on the bucket; it is refused above MAX_TIMELINE_BYTES.

Only places the orchestrator derives itself are served (see `locations.py`): the local path is computed
from RECORDS_DIR, the recording id and its attempt, never read from the row, and only the bucket the
recording was leased to is presigned. A row whose stored location is anything else has no media, and
so has a derived file that is a link (`Locations.servable`). The timeline, which the orchestrator reads
itself, is opened without following any link below RECORDS_DIR and checked on its descriptor (a regular
file, one link, within the cap), so a worker that swaps a link in after the check gains nothing.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from contract.protocol import media_name
from orchestrator.errors import Conflict, NotFound, OrchestratorError
from orchestrator.locations import SCREENSHOT, TIMELINE, Locations, S3Object
from orchestrator.states import State
from orchestrator.store.base import RecordingRow

log = structlog.get_logger("orchestrator.media")


RECORDING_PURGED = "recording_purged"
# A timeline is bounded near 1 MB per recorded hour (contract.timeline); more is not one a recorder wrote.
MAX_TIMELINE_BYTES = 8 * 1024 * 1024


def _not_purged(row: RecordingRow, what: str) -> None:
    if row.status is State.PURGED:
        raise OrchestratorError(
            RECORDING_PURGED,
            f"recording {row.id} was purged: its {what} and metadata were deleted and cannot be fetched any more",
        )


@dataclass(frozen=True)
class Redirect:
    url: str


@dataclass(frozen=True)
class LocalFile:
    path: Path
    content_type: str


class MediaLocator:
    def __init__(self, locations: Locations, s3_endpoint_url: str | None, url_ttl: int) -> None:
        self.locations = locations
        self.s3_endpoint_url = s3_endpoint_url
        self.url_ttl = url_ttl
        self._s3 = None

    async def locate(self, row: RecordingRow) -> Redirect | LocalFile:
        """The recording's media: rec.mp4, or rec.m4a when it was recorded without video."""
        _not_purged(row, "media")
        if not row.location:
            if row.status in (State.COMPLETED, State.CANCELLED, State.FAILED):
                raise NotFound(f"recording {row.id} is {row.status} and has no media")
            raise Conflict(
                "media_not_ready", f"recording {row.id} is {row.status}; its media is available once completed"
            )
        video = bool(row.spec.get("video", True))
        name = media_name(video)
        where = self.locations.media(
            row.id, row.attempts, row.upload, row.location, legacy=row.legacy_layout, name=name
        )
        return await self._served(row, where, row.location, "video/mp4" if video else "audio/mp4", "media")

    async def screenshot(self, row: RecordingRow) -> Redirect | LocalFile:
        """failure.png: what the page showed when the recording failed."""
        _not_purged(row, "screenshot")
        if not row.screenshot_location:
            raise NotFound(f"recording {row.id} has no screenshot: one is taken only when a recording fails")
        where = self.locations.media(row.id, row.attempts, row.upload, row.screenshot_location, name=SCREENSHOT)
        return await self._served(row, where, row.screenshot_location, "image/png", "screenshot")

    async def timeline(self, row: RecordingRow) -> bytes:
        """timeline.json itself (never a redirect: a page reads it with fetch, and the bucket has no CORS)."""
        _not_purged(row, "timeline")
        if not row.timeline_location:
            raise NotFound(f"recording {row.id} has no timeline: its worker reported none")
        where = self.locations.media(row.id, row.attempts, row.upload, row.timeline_location, name=TIMELINE)
        if where is None:
            log.warning("timeline_location_refused", recording_id=row.id, location=row.timeline_location)
            raise NotFound(f"recording {row.id} has no timeline this server can serve")
        if isinstance(where, S3Object):
            return await asyncio.to_thread(self._fetch_sync, row.id, where)
        path = self._local(row, where, "application/json", "timeline").path
        return await asyncio.to_thread(self._read_local, row.id, path)

    async def _served(
        self, row: RecordingRow, where: Path | S3Object | None, location: str, content_type: str, what: str
    ) -> Redirect | LocalFile:
        if where is None:
            log.warning(f"{what}_location_refused", recording_id=row.id, location=location)
            raise NotFound(f"recording {row.id} has no {what} this server can serve")
        if isinstance(where, S3Object):
            return Redirect(await self._presign(where.bucket, where.key))
        return self._local(row, where, content_type, what)

    def _local(self, row: RecordingRow, where: Path, content_type: str, what: str) -> LocalFile:
        if self.locations.servable(where) is None:
            if not (where.exists() or where.is_symlink()):
                raise NotFound(f"recording {row.id}'s {what} file no longer exists")
            # A link (to the store, another recording, anything) where a worker should have left a file.
            log.warning(f"{what}_link_refused", recording_id=row.id, path=str(where))
            raise NotFound(f"recording {row.id} has no {what} this server can serve")
        return LocalFile(where, content_type)

    async def _presign(self, bucket: str, key: str) -> str:
        return await asyncio.to_thread(self._presign_sync, bucket, key)

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3  # only needed when recordings go to S3

            self._s3 = boto3.client("s3", endpoint_url=self.s3_endpoint_url)
        return self._s3

    def _fetch_sync(self, recording_id: str, where: S3Object) -> bytes:
        from botocore.exceptions import ClientError

        try:
            answer = self._client().get_object(Bucket=where.bucket, Key=where.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"recording {recording_id}'s timeline is no longer in the bucket") from None
            raise
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength") or 0) > MAX_TIMELINE_BYTES:
                raise _too_large(recording_id)
            data = body.read(MAX_TIMELINE_BYTES + 1)
        finally:
            body.close()
        if len(data) > MAX_TIMELINE_BYTES:
            raise _too_large(recording_id)
        return data

    def _read_local(self, recording_id: str, path: Path) -> bytes:
        """timeline.json under RECORDS_DIR, read through the descriptor it was checked on."""
        try:
            fd = open_below(self.locations.root, path)
        except (OSError, ValueError) as exc:
            log.warning("timeline_link_refused", recording_id=recording_id, path=str(path), error=str(exc))
            raise NotFound(f"recording {recording_id} has no timeline this server can serve") from None
        try:
            return _read_capped(recording_id, fd)
        except OSError as exc:
            log.warning("timeline_link_refused", recording_id=recording_id, path=str(path), error=str(exc))
            raise NotFound(f"recording {recording_id} has no timeline this server can serve") from None
        finally:
            os.close(fd)

    def _presign_sync(self, bucket: str, key: str) -> str:
        return self._client().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.url_ttl
        )


def _too_large(recording_id: str) -> NotFound:
    log.warning("timeline_too_large", recording_id=recording_id, limit=MAX_TIMELINE_BYTES)
    return NotFound(f"recording {recording_id}'s timeline is larger than {MAX_TIMELINE_BYTES} bytes and is not served")


def _read_capped(recording_id: str, fd: int) -> bytes:
    """At most MAX_TIMELINE_BYTES of an open file, which must be a regular file with no other link."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise OSError(f"not a regular file of its own: mode {info.st_mode:o}, {info.st_nlink} links")
    if info.st_size > MAX_TIMELINE_BYTES:
        raise _too_large(recording_id)
    with os.fdopen(os.dup(fd), "rb") as f:
        data = f.read(MAX_TIMELINE_BYTES + 1)
    if len(data) > MAX_TIMELINE_BYTES:
        raise _too_large(recording_id)
    return data


def open_below(root: Path, path: Path) -> int:
    """A read-only descriptor of `path`, opened one component at a time below `root` without following a
    link anywhere (O_NOFOLLOW), so a link swapped in after `Locations.servable` looked is refused rather
    than followed. O_NONBLOCK: a FIFO swapped in does not hang the open (fstat then refuses it)."""
    parts = path.relative_to(root).parts
    if not parts:
        raise OSError(f"{path} is {root} itself")
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = below
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=directory)
    finally:
        os.close(directory)
