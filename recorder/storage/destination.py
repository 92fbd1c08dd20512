"""Where one attempt's files go, decided once: a bucket, or RECORDS_DIR.

The decision is made here and nowhere else, from the lease's upload target (the orchestrator's choice,
which is also where it accepts the reported location) or, without a lease (`recorder record`), from the
recorder's own S3_BUCKET and S3_PREFIX. Everything downstream (the final upload, rec.json, the upload
while recording, aborting a cancelled attempt, resuming one S3 could not take) asks the destination, so
the CLI and the worker store a recording the same way.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from contract.protocol import UploadTarget
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings, TransferOptions
from recorder.storage.result import StoredResult
from recorder.storage.upload import Confirm

if TYPE_CHECKING:
    from recorder.storage.growing import GrowingUpload
    from recorder.storage.live import LiveUploader


@dataclass(frozen=True)
class StoreCall:
    """How one `store` call treats its upload."""

    cancel: threading.Event | None = None
    confirm: Confirm | None = None
    growing: GrowingUpload | None = None
    keep_files: bool = False


class Destination(ABC):
    """The storage of one attempt of one recording."""

    def __init__(self, folder: AttemptFolder) -> None:
        self.folder = folder

    @property
    @abstractmethod
    def name(self) -> str:
        """Where recordings go, for logs and messages: `s3://bucket/prefix` or the records folder."""

    def store(
        self,
        files: dict[str, Path],
        *,
        cancel: threading.Event | None = None,
        confirm: Confirm | None = None,
        growing: GrowingUpload | None = None,
        keep_files: bool = False,
    ) -> StoredResult:
        """Store the media (rec.mp4 or rec.m4a) and whatever else `files` names; confirmed, or pending when S3
        cannot be reached.

        `keep_files`: leave the local files for the caller to tidy (it still reads them), whatever KEEP_LOCAL
        says. `growing`: the upload that followed rec.mp4 while it was written, to be completed."""
        return self._store(files, StoreCall(cancel, confirm, growing, keep_files))

    @abstractmethod
    def _store(self, files: dict[str, Path], call: StoreCall) -> StoredResult: ...

    @abstractmethod
    def store_small(self, path: Path, *, confirm: Confirm | None = None, keep_files: bool = False) -> str:
        """Store a small file of the attempt under its own name (rec.json after the media, failure.png);
        returns its location. Raises RecorderError when it cannot."""

    def resume(self, confirm: Confirm | None = None, *, keep_files: bool = False) -> StoredResult | None:
        """Try once more an upload that was left pending; None when nothing of this attempt is pending."""
        return None

    def abort(self) -> None:  # noqa: B027 -- only a bucket has uploads to abort
        """A cancelled attempt (or a lost lease) leaves no unfinished upload behind; its files are not touched."""

    def live_uploader(self) -> LiveUploader | None:
        """The uploader of HLS segments while recording; None where there is nowhere to send them."""
        return None

    def growing_upload(self) -> GrowingUpload | None:
        """The uploader that follows rec.mp4 as FFmpeg appends to it; None where that gains nothing."""
        return None


def destination_for(
    settings: RecorderSettings,
    folder: AttemptFolder,
    target: UploadTarget | None = None,
    *,
    started_at: datetime,
    options: TransferOptions | None = None,
) -> Destination:
    """The one place that chooses between a bucket and local disk. A leased attempt goes where its lease's
    `target` says (the orchestrator decided, and accepts a location only there); without a lease
    (`recorder record`), S3_BUCKET and S3_PREFIX decide. `started_at` dates every key of the attempt."""
    if target is None:
        target = UploadTarget(bucket=settings.s3_bucket, prefix=settings.s3_prefix)
    if not target.bucket:
        from recorder.storage.local import LocalDestination

        return LocalDestination(folder)
    from recorder.storage.bucket import BucketDestination

    return BucketDestination(
        folder,
        bucket=target.bucket,
        prefix=target.prefix,
        settings=settings,
        started_at=started_at,
        options=options or TransferOptions(),
    )
