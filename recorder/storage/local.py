"""Local-disk storage, the embedded default when no bucket is configured.

A recording stays where the worker wrote it, in its attempt's folder:
`RECORDS_DIR/<recording_id>/attempt-<n>/rec.mp4` beside `rec.json` (attempt 1 outside the farm); files handed
in from elsewhere are moved there. Two attempts of one recording never share a folder, so a worker whose
lease lapsed cannot overwrite its successor's file. The result has `file://` locations and is the same
object an S3 upload returns.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from recorder.config import RecorderSettings
from recorder.storage.checksum import file_sha256
from recorder.storage.keys import attempt_folder
from recorder.storage.result import StoredObject, StoredResult


def store_local(
    recording_id: str, files: dict[str, Path], settings: RecorderSettings, *, attempt: int = 1
) -> StoredResult:
    started = time.monotonic()
    home = (settings.records_dir / recording_id / attempt_folder(attempt)).resolve()
    home.mkdir(parents=True, exist_ok=True)
    objects: list[StoredObject] = []
    for name, source in files.items():
        dest = home / name
        if source.resolve() != dest:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, dest)
        objects.append(
            StoredObject(name=name, location=dest.as_uri(), bytes=dest.stat().st_size, sha256=file_sha256(dest).hex())
        )
    by_name = {o.name: o for o in objects}
    media = by_name["rec.mp4"]
    meta = by_name.get("rec.json")
    return StoredResult(
        recording_id=recording_id,
        location=media.location,
        metadata_location=meta.location if meta else None,
        bytes=media.bytes,
        total_bytes=sum(o.bytes for o in objects),
        seconds=time.monotonic() - started,
        sha256=media.sha256,
        objects=objects,
    )
