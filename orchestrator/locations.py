"""Where a recording's files may be: computed by the orchestrator, never taken from a worker.

A worker's report names where it put rec.mp4 (rec.m4a for an audio-only recording), rec.json,
timeline.json and, when the recording failed, failure.png. A worker token can leak, so that text is only
accepted when it is one of the places the orchestrator itself would compute for the lease:

- local: `file://` + the orchestrator's resolved RECORDS_DIR + `/<recording_id>/attempt-<n>/<name>`;
- S3: `s3://<the leased bucket>/<key>`, where the key lies under the leased prefix, holds the segment
  `<recording_id>` and later the segment `attempt-<n>`, ends in `/<name>`, and has no empty, `.` or
  `..` segment.

`n` is the attempt of the lease. The media route serves only these derived places, whatever a row
says, so a forged location can neither make the API stream the store nor presign a foreign bucket.

A worker of the local pool writes into RECORDS_DIR itself, so the derived place may be a link: a
`rec.mp4` that is a symbolic or hard link to the store, or an attempt folder linked to another
recording's. `servable` refuses every link below RECORDS_DIR: a local file is served only when each
part of its path below RECORDS_DIR is a real folder or file and the file has no other name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from contract.protocol import MEDIA_NAME, METADATA_NAME, SCREENSHOT_NAME, TIMELINE_NAME, attempt_segment, media_name

MEDIA = MEDIA_NAME
METADATA = METADATA_NAME
SCREENSHOT = SCREENSHOT_NAME
TIMELINE = TIMELINE_NAME
# Every name a report may place: what a location's last key segment must be.
_REPORTED_NAMES = frozenset({MEDIA, media_name(False), METADATA, SCREENSHOT, TIMELINE})


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str


class Locations:
    """The places the orchestrator computes for a recording's files, and the check of reported ones."""

    def __init__(self, records_dir: Path) -> None:
        self.root = records_dir.resolve()

    def local_path(self, recording_id: str, attempt: int, name: str = MEDIA) -> Path:
        return self.root / recording_id / attempt_segment(attempt) / name

    def folder(self, recording_id: str) -> Path:
        """The recording's own folder, `RECORDS_DIR/<id>`: every attempt's files, and a legacy row's."""
        return self.root / recording_id

    def s3_prefixes(
        self, recording_id: str, attempts: int, upload: dict[str, Any], locations: Iterable[str | None], legacy: bool
    ) -> list[S3Object]:
        """The key prefixes of the recording's attempts in its leased bucket, from the S3 locations this
        orchestrator accepted: such a key names the attempt folder `…/<id>/…/attempt-<n>/`, and every other
        attempt's folder differs from it only in that segment. Each prefix ends in `/`, so no other
        recording's keys (not even one whose id starts with this one's) lie under it. A legacy row's files
        have no attempt folder: its prefix is `…/<id>/`. Locations that do not pass the checks a report
        passed give nothing."""
        found: dict[str, S3Object] = {}
        for location in locations:
            if not location or not location.startswith("s3://"):
                continue
            bucket, _, key = location.removeprefix("s3://").partition("/")
            name = key.rsplit("/", 1)[-1]
            if name not in _REPORTED_NAMES or self._s3_problem(location, recording_id, None, upload, name):
                continue
            segments = key.split("/")
            skip = len([s for s in str(upload.get("prefix") or "").split("/") if s])
            at = segments.index(recording_id, skip)
            current = attempt_segment(attempts)
            if current in segments[at + 1 : -1]:
                folder = segments.index(current, at + 1)
                for n in range(1, attempts + 1):
                    prefix = "/".join([*segments[:folder], attempt_segment(n)]) + "/"
                    found.setdefault(prefix, S3Object(bucket, prefix))
            elif legacy:
                prefix = "/".join(segments[: at + 1]) + "/"
                found.setdefault(prefix, S3Object(bucket, prefix))
        return list(found.values())

    def legacy_path(self, recording_id: str, name: str = MEDIA) -> Path:
        """Where recordings stored before attempt folders existed keep their files (served, never accepted)."""
        return self.root / recording_id / name

    def servable(self, path: Path) -> Path | None:
        """`path` when it may be streamed: below RECORDS_DIR, no symbolic link among its parts below
        RECORDS_DIR, a regular file, and no hard link to it elsewhere; else None.

        RECORDS_DIR itself may be a link (it was resolved when this object was made)."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return None
        if not parts:
            return None
        current = self.root
        try:
            for part in parts:
                current = current / part
                info = os.lstat(current)
                if stat.S_ISLNK(info.st_mode):
                    return None
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return None
        return path

    def problem(
        self, location: str, *, recording_id: str, attempt: int, upload: dict[str, Any], name: str = MEDIA
    ) -> str | None:
        """Why `location` is not a place this orchestrator computes for the lease, or None when it is."""
        if location.startswith("s3://"):
            return self._s3_problem(location, recording_id, attempt, upload, name)
        if location.startswith("file://"):
            expected = self.local_path(recording_id, attempt, name)
            if upload.get("bucket"):
                return f"the recording was leased to bucket {upload['bucket']!r}, so its {name} belongs in S3"
            if _file_path(location) != str(expected):
                return (
                    f"local files of this lease are only accepted at {expected.as_uri()} (this orchestrator's"
                    " RECORDS_DIR, the recording id and the attempt); workers that do not share RECORDS_DIR"
                    " with the orchestrator must upload to S3"
                )
            return None
        return "a location is s3://bucket/key or file:///path"

    def _s3_problem(
        self, location: str, recording_id: str, attempt: int | None, upload: dict[str, Any], name: str
    ) -> str | None:
        bucket, _, key = location.removeprefix("s3://").partition("/")
        leased = upload.get("bucket")
        if not leased:
            return "the recording was leased for local storage, not S3"
        if bucket != leased:
            return f"the recording was leased to bucket {leased!r}, not {bucket!r}"
        segments = key.split("/")
        if any(s in ("", ".", "..") for s in segments) or any(ord(c) < 0x20 or c == "\x7f" for c in key):
            return "the key has an empty, '.' or '..' segment or a control character"
        prefix = [s for s in str(upload.get("prefix") or "").split("/") if s]
        if segments[: len(prefix)] != prefix:
            return f"the key is not under the leased prefix {'/'.join(prefix)!r}"
        rest = segments[len(prefix) :]
        if len(rest) < 3 or rest[-1] != name:
            return f"the key does not end in /{name}"
        try:
            at = rest.index(recording_id)
        except ValueError:
            return f"the key has no segment {recording_id!r}"
        if attempt is not None and attempt_segment(attempt) not in rest[at + 1 : -1]:
            return f"the key has no segment {attempt_segment(attempt)!r} after the recording id (the lease's attempt)"
        return None

    def media(
        self,
        recording_id: str,
        attempt: int,
        upload: dict[str, Any],
        location: str,
        legacy: bool = False,
        name: str = MEDIA,
    ) -> Path | S3Object | None:
        """Where the file `name` of a stored row may be served from: a derived path or the leased object,
        else None.

        `legacy` rows were stored before attempt folders existed: their rec.mp4 is also looked for at
        `RECORDS_DIR/<id>/rec.mp4`, or under the leased bucket and prefix without the attempt segment."""
        ok = self.problem(location, recording_id=recording_id, attempt=attempt, upload=upload, name=name) is None
        if not ok and legacy and name == MEDIA:
            if location.startswith("s3://"):
                ok = self._s3_problem(location, recording_id, None, upload, MEDIA) is None
            elif not upload.get("bucket") and _file_path(location) == str(self.legacy_path(recording_id)):
                return self.legacy_path(recording_id)
        if not ok:
            return None
        if location.startswith("s3://"):
            bucket, _, key = location.removeprefix("s3://").partition("/")
            return S3Object(bucket, key)
        return self.local_path(recording_id, attempt, name)


def _file_path(location: str) -> str | None:
    """The path of a `file:///path` URI (no host, query or fragment), percent-decoded; else None."""
    rest = location.removeprefix("file://")
    if not rest.startswith("/") or "?" in rest or "#" in rest:
        return None
    path = unquote(rest)
    return None if "\x00" in path else path
