"""Persisted upload state, so an upload S3 could not finish is resumed later instead of started over.

Each attempt of a recording being uploaded has `RECORDS_DIR/<recording_id>/attempt-<n>/upload.pending.json`
(written atomically, before and after every step that changes S3's state) holding the bucket, every object's
key, its multipart upload id and the parts S3 confirmed with their ETags and SHA-256 checksums. An upload that
failed for good (denied, refused) is renamed `upload.failed.json`: kept for a person, never retried.

The state is per attempt, not per recording: a worker whose lease lapsed and its successor may share
RECORDS_DIR, and neither may resume, abort or overwrite the other's upload. State written before attempts
had folders (`RECORDS_DIR/<recording_id>/upload.pending.json`, `attempt` unset) is still found and resumed.

`upload.lock` (flock) makes sure one thread or process at a time works on an attempt's upload,
which matters when several workers share RECORDS_DIR. `attempt.owner` (flock) is held by the job that owns
the attempt for as long as it runs: an idle worker's background resume leaves such an attempt to its job
(which confirms its lease before completing), and takes over only what a dead worker left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from contract.errors import RecorderError
from contract.protocol import attempt_segment
from recorder.attempt import FAILED_NAME, LOCK_NAME, OWNER_NAME, PENDING_NAME, AttemptFolder, check_recording_id


class PartRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int
    size: int
    etag: str
    checksum_sha256: str = Field(description="base64 SHA-256 of the part's bytes, as sent to S3")


class ObjectUpload(BaseModel):
    """One file on its way to one key."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: Path
    key: str
    content_type: str
    size: int
    part_size: int | None = Field(default=None, description="None: a single PUT")
    upload_id: str | None = None
    parts: dict[int, PartRecord] = Field(default_factory=dict)
    sha256: str | None = Field(default=None, description="hex SHA-256 of the whole file, once computed")
    done: bool = False

    @property
    def part_count(self) -> int:
        if self.part_size is None:
            return 1
        return max(1, -(-self.size // self.part_size))

    def part_range(self, number: int) -> tuple[int, int]:
        assert self.part_size is not None
        offset = (number - 1) * self.part_size
        return offset, min(self.part_size, self.size - offset)


class PendingUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    recording_id: str
    attempt: int | None = Field(default=None, description="the lease attempt; None for state from before attempts")
    bucket: str
    keep_local: bool = False
    objects: list[ObjectUpload]
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    attempts: int = 0
    reason: str | None = None
    error_code: str | None = None

    def find(self, name: str) -> ObjectUpload | None:
        return next((o for o in self.objects if o.name == name), None)


Slot = tuple[str, int | None]  # (recording_id, attempt): whose upload a state file is


class PendingStore:
    """The pending-upload files under RECORDS_DIR, one directory per attempt of a recording."""

    def __init__(self, records_dir: Path) -> None:
        self.records_dir = records_dir

    def dir(self, recording_id: str, attempt: int | None) -> Path:
        if attempt is None:
            return self.records_dir / recording_id
        return AttemptFolder.under(self.records_dir, recording_id, attempt).root

    def path(self, recording_id: str, attempt: int | None) -> Path:
        return self.dir(recording_id, attempt) / PENDING_NAME

    def load(self, recording_id: str, attempt: int | None) -> PendingUpload | None:
        path = self.path(recording_id, attempt)
        try:
            return PendingUpload.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None

    def save(self, state: PendingUpload) -> None:
        state.updated_at = datetime.now(UTC)
        _atomic_write(self.path(state.recording_id, state.attempt), state.model_dump_json(indent=2).encode())

    def remove(self, recording_id: str, attempt: int | None) -> None:
        self.path(recording_id, attempt).unlink(missing_ok=True)

    def mark_failed(self, state: PendingUpload, code: str, reason: str) -> None:
        """Keep the state for a person to read, out of the way of `resume_pending`."""
        state.error_code = code
        state.reason = reason
        state.updated_at = datetime.now(UTC)
        directory = self.dir(state.recording_id, state.attempt)
        _atomic_write(directory / FAILED_NAME, state.model_dump_json(indent=2).encode())
        self.remove(state.recording_id, state.attempt)

    def pending(self) -> list[Slot]:
        """Every (recording_id, attempt) with a pending upload; attempt None for state of the older layout."""
        if not self.records_dir.is_dir():
            return []
        slots: list[Slot] = [(p.parent.name, None) for p in self.records_dir.glob(f"*/{PENDING_NAME}")]
        for p in self.records_dir.glob(f"*/attempt-*/{PENDING_NAME}"):
            number = p.parent.name.removeprefix("attempt-")
            well_formed = number.isdigit() and int(number) >= 1 and p.parent.name == attempt_segment(int(number))
            if well_formed and _valid_id(p.parent.parent.name):  # a stray folder must not stop the whole scan
                slots.append((p.parent.parent.name, int(number)))
        return sorted(slots, key=lambda slot: (slot[0], slot[1] or 0))

    def tidy(self, recording_id: str, attempt: int | None) -> None:
        """After a confirmed upload: the lock file goes, and the folders that hold nothing more."""
        if attempt is None:
            (self.dir(recording_id, None) / LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.dir(recording_id, None).rmdir()
            return
        AttemptFolder.under(self.records_dir, recording_id, attempt).remove_if_empty()

    def lock(
        self, recording_id: str, attempt: int | None, *, wait: bool = True
    ) -> contextlib.AbstractContextManager[bool]:
        """Hold the attempt's upload lock; yields False (without holding it) if `wait` is off and it is busy."""
        return _flock(self.dir(recording_id, attempt) / LOCK_NAME, wait)

    @contextlib.contextmanager
    def owner(self, recording_id: str, attempt: int) -> Iterator[None]:
        """Mark the attempt as owned by a live job for as long as the block runs (released if the process dies)."""
        with _flock(self.dir(recording_id, attempt) / OWNER_NAME, True):
            yield

    def owned(self, recording_id: str, attempt: int | None) -> bool:
        """Whether a live job owns the attempt (state of the older layout has no owner)."""
        if attempt is None or not (self.dir(recording_id, attempt) / OWNER_NAME).exists():
            return False
        with _flock(self.dir(recording_id, attempt) / OWNER_NAME, False) as free:
            return not free


def _valid_id(name: str) -> bool:
    try:
        check_recording_id(name)
    except RecorderError:
        return False
    return True


@contextlib.contextmanager
def _flock(path: Path, wait: bool) -> Iterator[bool]:
    """Hold an exclusive flock on `path`; yields False (without holding it) if `wait` is off and it is busy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _atomic_write(path: Path, data: bytes) -> None:
    """Write-then-rename with fsync, so a crash leaves the old state or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
