"""Where a recording's media can be fetched: a presigned S3 URL, or a file under RECORDS_DIR.

Local files are only served from inside RECORDS_DIR, whatever location a worker reported.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from orchestrator.errors import Conflict, NotFound, OrchestratorError
from orchestrator.states import State
from orchestrator.store.base import RecordingRow


@dataclass(frozen=True)
class Redirect:
    url: str


@dataclass(frozen=True)
class LocalFile:
    path: Path


class MediaLocator:
    def __init__(self, records_dir: Path, s3_endpoint_url: str | None, url_ttl: int) -> None:
        self.records_dir = records_dir
        self.s3_endpoint_url = s3_endpoint_url
        self.url_ttl = url_ttl
        self._s3 = None

    async def locate(self, row: RecordingRow) -> Redirect | LocalFile:
        if not row.location:
            if row.status in (State.COMPLETED, State.CANCELLED, State.FAILED):
                raise NotFound(f"recording {row.id} is {row.status} and has no media")
            raise Conflict(
                "media_not_ready", f"recording {row.id} is {row.status}; its media is available once completed"
            )
        parts = urlsplit(row.location)
        if parts.scheme == "s3":
            return Redirect(await self._presign(parts.netloc, parts.path.lstrip("/")))
        if parts.scheme == "file":
            return LocalFile(self._local(row, Path(unquote(parts.path))))
        raise OrchestratorError("internal", f"recording {row.id} has an unsupported location {row.location!r}")

    def _local(self, row: RecordingRow, path: Path) -> Path:
        root = self.records_dir.resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise NotFound(f"recording {row.id}'s file {path} is outside RECORDS_DIR ({root}) and is not served")
        if not resolved.is_file():
            raise NotFound(f"recording {row.id}'s file {path} no longer exists")
        return resolved

    async def _presign(self, bucket: str, key: str) -> str:
        return await asyncio.to_thread(self._presign_sync, bucket, key)

    def _presign_sync(self, bucket: str, key: str) -> str:
        if self._s3 is None:
            import boto3  # only needed when recordings go to S3

            self._s3 = boto3.client("s3", endpoint_url=self.s3_endpoint_url)
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.url_ttl
        )
