"""Upload rec.mp4 while it is being written, so little is left to send when the recording stops.

In live mode the capture is a fragmented MP4 (`moov` first, then fragments, appended and never rewritten),
which is both crash-safe and the final file. This uploader follows the file as it grows and sends each
full part of a multipart upload as soon as the bytes exist; at the end only the tail is sent and the
upload completed and verified. The file is opened once, so renaming it to rec.mp4 under way is harmless.

Before completing, `finish` asks `confirm` (the worker's lease check): if the lease is gone it aborts this
attempt's own multipart upload and raises RecorderError LEASE_LOST; nothing becomes visible.

If anything else goes wrong, `finish` aborts the multipart upload and returns None: the caller falls back to
the ordinary (resumable) upload of the finished file, so this is a fast path, never a way to lose a file.
A recorder that dies mid-way leaves an unfinished multipart upload (removed by the bucket's
AbortIncompleteMultipartUpload rule); the HLS segments of live mode are what survives that.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import UploadTarget
from recorder.config import MiB, RecorderSettings, TransferOptions
from recorder.storage.checksum import b64, composite, same_checksum
from recorder.storage.keys import check_recording_id, content_type, object_key, s3_url
from recorder.storage.result import StoredObject, StoredResult
from recorder.storage.s3 import make_client

log = structlog.get_logger(__name__)

MEDIA = "rec.mp4"
POLL = 0.5


@dataclass
class _Part:
    number: int
    etag: str
    digest: bytes


@dataclass
class GrowingUpload:
    recording_id: str
    path: Path
    bucket: str
    key: str
    client: Any
    part_size: int = 8 * MiB
    parts: list[_Part] = field(default_factory=list)
    sent: int = 0
    tail_bytes: int = 0
    error: str | None = None
    _fd: int | None = None
    _upload_id: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def for_recording(
        cls,
        path: Path,
        recording_id: str,
        target: UploadTarget,
        settings: RecorderSettings,
        started_at: datetime,
        options: TransferOptions | None = None,
        *,
        attempt: int = 1,
    ) -> Self | None:
        """The uploader for a recording's rec.mp4, at the key the ordinary upload would use; None without a
        bucket."""
        bucket = target.bucket or settings.s3_bucket
        if not bucket:
            return None
        check_recording_id(recording_id)
        options = options or TransferOptions()
        key = object_key(
            settings.s3_key_template,
            prefix=target.prefix or settings.s3_prefix,
            recording_id=recording_id,
            attempt=attempt,
            name=MEDIA,
            started_at=started_at,
        )
        client = make_client(settings, options)
        return cls(recording_id, path, bucket, key, client, part_size=max(options.part_size, 5 * MiB))

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._follow, name="growing-upload", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                self._send_full_parts()
                self._stop.wait(POLL)
        except Exception as exc:  # the fallback upload takes over; say why
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("growing upload stopped", key=self.key, error=self.error)

    def _open(self) -> bool:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return False
        return True

    def _size(self) -> int:
        assert self._fd is not None
        return os.fstat(self._fd).st_size

    def _send_full_parts(self) -> None:
        if not self._open():
            return
        while self._size() - self.sent >= self.part_size and not self._stop.is_set():
            self._send(self.part_size)

    def _send(self, length: int) -> None:
        assert self._fd is not None
        data = os.pread(self._fd, length, self.sent)
        if len(data) != length:
            raise OSError(f"{self.path}: expected {length} bytes at {self.sent}, read {len(data)}")
        if self._upload_id is None:
            self._upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=content_type(MEDIA), ChecksumAlgorithm="SHA256"
            )["UploadId"]
        digest = hashlib.sha256(data).digest()
        number = len(self.parts) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=b64(digest),
        )
        self.parts.append(_Part(number, answer["ETag"], digest))
        self.sent += length

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def cancel(self) -> None:
        """Stop following the file and abort the multipart upload: no parts are left behind."""
        self._halt()
        self.abort()
        self.close()

    def finish(self, confirm: Callable[[], bool] | None = None) -> StoredResult | None:
        """Send the tail, confirm the lease, complete and verify; None (upload aborted) when the fast path did
        not work out; RecorderError LEASE_LOST (upload aborted) when `confirm` says the lease is gone."""
        started = time.monotonic()
        self._halt()
        try:
            if self.error is not None or not self._open():
                raise RuntimeError(self.error or f"{self.path} never appeared")
            self._send_full_parts_final()
            if confirm is not None and not confirm():
                self.abort()
                raise RecorderError(
                    ErrorCode.LEASE_LOST,
                    f"the lease could not be confirmed before completing {s3_url(self.bucket, self.key)}: "
                    f"this attempt's upload was aborted; the file stays at {self.path}",
                )
            return self._complete(started)
        except RecorderError:
            raise
        except Exception as exc:
            log.warning("growing upload abandoned; the file is uploaded whole", key=self.key, error=str(exc))
            self.abort()
            return None
        finally:
            self.close()

    def _send_full_parts_final(self) -> None:
        size = self._size()
        while size - self.sent > self.part_size:
            self._send(self.part_size)
        self.tail_bytes = size - self.sent
        if self.tail_bytes or not self.parts:
            self._send(self.tail_bytes)

    def _complete(self, started: float) -> StoredResult:
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": p.number, "ETag": p.etag, "ChecksumSHA256": b64(p.digest)} for p in self.parts]
            },
        )
        self._upload_id = None
        head = self.client.head_object(Bucket=self.bucket, Key=self.key, ChecksumMode="ENABLED")
        expected = composite(p.digest for p in self.parts)
        if head["ContentLength"] != self.sent:
            raise RuntimeError(f"object has {head['ContentLength']} bytes, the file {self.sent}")
        reported = head.get("ChecksumSHA256")
        if reported is not None and not same_checksum(reported, expected, len(self.parts)):
            raise RuntimeError(f"checksum mismatch: S3 {reported}, expected {expected}")
        whole = _file_digest(self._fd)
        location = s3_url(self.bucket, self.key)
        log.info("rec.mp4 stored while recording", location=location, parts=len(self.parts), tail=self.tail_bytes)
        return StoredResult(
            recording_id=self.recording_id,
            location=location,
            destination=location,
            bytes=self.sent,
            total_bytes=self.sent,
            seconds=time.monotonic() - started,
            sha256=whole.hex(),
            objects=[
                StoredObject(name=MEDIA, location=location, bytes=self.sent, sha256=whole.hex(), parts=len(self.parts))
            ],
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
            except Exception as exc:
                log.warning("could not abort the growing upload", key=self.key, error=str(exc))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _file_digest(fd: int | None) -> bytes:
    assert fd is not None
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 4 * MiB, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.digest()
