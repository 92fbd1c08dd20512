"""The attempt folder: every file of one attempt of one recording, named in one place.

`RECORDS_DIR/<recording_id>/attempt-<n>/` holds, over an attempt's life:

    capture.mkv            the crash-safe capture while recording (ordinary mode; capture.mka for audio only)
    capture-002.mkv, ...   the capture after each resume of a paused recording (live mode: capture-002.mp4)
    rec.mp4                the finished recording (rec.m4a for audio only); in live mode also the capture
                           itself (fragmented MP4, `moov` first, append-only, uploaded while it grows)
    live/                  live mode: HLS segments and playlist, uploaded as they complete
    rec.json               metadata and quality report, written once
    timeline.json          what happened during the recording, on the media clock (written with rec.json)
    failure.png            the page at the moment a recording failed (none otherwise)
    upload.pending.json    the state of an upload S3 could not finish (upload.failed.json once given up)
    upload.lock            held while a thread or process works on the upload
    attempt.owner          held by the job that owns the attempt for as long as it runs

Two attempts of one recording (a worker whose lease lapsed and its successor) never share a folder, so
neither can overwrite, resume or delete the other's files. Outside the farm (`recorder record`) a
recording is attempt 1, or a work folder of its own beside `--out`.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contract.errors import ErrorCode, RecorderError
from contract.protocol import MEDIA_NAME, METADATA_NAME, SCREENSHOT_NAME, TIMELINE_NAME, attempt_segment

CAPTURE_STEM = "capture"
LIVE_DIR_NAME = "live"
PENDING_NAME = "upload.pending.json"
FAILED_NAME = "upload.failed.json"
LOCK_NAME = "upload.lock"
OWNER_NAME = "attempt.owner"


_RECORDING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_recording_id(recording_id: str) -> str:
    """A recording id names a directory and a key segment: no slashes, no `..`, nothing hidden."""
    if not _RECORDING_ID.fullmatch(recording_id) or ".." in recording_id:
        raise RecorderError(
            ErrorCode.INVALID_ARGUMENT,
            f"recording id {recording_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return recording_id


def check_attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise RecorderError(ErrorCode.INVALID_ARGUMENT, f"attempt {attempt!r}: a lease attempt counts from 1")
    return attempt


@dataclass(frozen=True)
class AttemptFolder:
    """The paths of one attempt; creating, tidying and discarding it are its own business too."""

    root: Path
    recording_id: str
    attempt: int = 1
    media_name: str = MEDIA_NAME  # contract.protocol.media_name(spec.video): rec.mp4, or rec.m4a for audio only

    @classmethod
    def under(
        cls, records_dir: Path, recording_id: str, attempt: int = 1, *, media_name: str = MEDIA_NAME
    ) -> AttemptFolder:
        """The attempt's folder in RECORDS_DIR (the worker's and the storage's layout)."""
        check_recording_id(recording_id)
        check_attempt(attempt)
        return cls(records_dir / recording_id / attempt_segment(attempt), recording_id, attempt, media_name)

    # -- what lives here ---------------------------------------------------------------------------

    @property
    def media(self) -> Path:
        return self.root / self.media_name

    @property
    def audio_only(self) -> bool:
        return self.media_name != MEDIA_NAME

    @property
    def metadata(self) -> Path:
        return self.root / METADATA_NAME

    def capture(self, *, live: bool) -> Path:
        """Where FFmpeg writes: in live mode straight into rec.mp4, which is the final file byte for byte."""
        return self.capture_part(1, live=live)

    def capture_part(self, number: int, *, live: bool) -> Path:
        """The file of the `number`th capture process (1 until the first pause; each resume starts the next).

        Part 1 is `capture(live=...)`; later parts are Matroska (.mkv, .mka for audio only), or in live mode
        fragmented MP4 (.mp4, .m4a), which finalize joins into one file."""
        if number < 1:
            raise ValueError(f"capture part {number}: parts count from 1")
        if number == 1 and live:
            return self.media
        suffixes = {(True, False): ".mp4", (True, True): ".m4a", (False, False): ".mkv", (False, True): ".mka"}
        suffix = suffixes[(live, self.audio_only)]
        name = CAPTURE_STEM if number == 1 else f"{CAPTURE_STEM}-{number:03d}"
        return self.root / (name + suffix)

    @property
    def screenshot(self) -> Path:
        return self.root / SCREENSHOT_NAME

    @property
    def timeline(self) -> Path:
        return self.root / TIMELINE_NAME

    @property
    def live_dir(self) -> Path:
        return self.root / LIVE_DIR_NAME

    @property
    def upload_lock(self) -> Path:
        return self.root / LOCK_NAME

    # -- its life ----------------------------------------------------------------------------------

    def create(self) -> AttemptFolder:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def discard(self) -> None:
        """Nothing of this attempt is kept; the recording's folder goes too once no other attempt is in it."""
        shutil.rmtree(self.root, ignore_errors=True)
        self._drop_parent_if_empty()

    def keep_only(self, kept: Iterable[Path]) -> None:
        """Remove every file but `kept` (partial captures, logs, segments, locks)."""
        keep = {path.resolve() for path in kept}
        if not keep:
            self.discard()
            return
        for entry in self.root.iterdir() if self.root.is_dir() else ():
            if entry.resolve() in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def remove_if_empty(self) -> None:
        """After a confirmed upload: the lock file goes, then the folders that hold nothing more."""
        self.upload_lock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.root.rmdir()
            self._drop_parent_if_empty()

    def _drop_parent_if_empty(self) -> None:
        if self.root.name == attempt_segment(self.attempt):
            with contextlib.suppress(OSError):
                self.root.parent.rmdir()
