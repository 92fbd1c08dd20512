"""Local-disk storage, the embedded default when no bucket is configured.

A recording stays where the worker wrote it, in its attempt's folder:
`RECORDS_DIR/<recording_id>/attempt-<n>/rec.mp4` beside `rec.json`; files handed in from elsewhere are moved
there. Two attempts of one recording never share a folder, so a worker whose lease lapsed cannot overwrite
its successor's file. The result has `file://` locations and is the same object an S3 upload returns.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from contract.protocol import METADATA_NAME, media_of
from recorder.storage.checksum import file_sha256
from recorder.storage.destination import Destination, StoreCall
from recorder.storage.result import StoredObject, StoredResult
from recorder.storage.upload import Confirm


class LocalDestination(Destination):
    @property
    def name(self) -> str:
        return str(self.folder.root.parent.parent)

    def _store(self, files: dict[str, Path], call: StoreCall) -> StoredResult:
        started = time.monotonic()
        objects = [self._place(name, source) for name, source in files.items()]
        by_name = {o.name: o for o in objects}
        media, meta = by_name[media_of(by_name) or ""], by_name.get(METADATA_NAME)
        return StoredResult(
            recording_id=self.folder.recording_id,
            location=media.location,
            metadata_location=meta.location if meta else None,
            bytes=media.bytes,
            total_bytes=sum(o.bytes for o in objects),
            seconds=time.monotonic() - started,
            sha256=media.sha256,
            objects=objects,
        )

    def store_small(self, path: Path, *, confirm: Confirm | None = None, keep_files: bool = False) -> str:
        return self._place(path.name, path).location

    def _place(self, name: str, source: Path) -> StoredObject:
        home = self.folder.create().root.resolve()
        dest = home / name
        if source.resolve() != dest:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, dest)
        return StoredObject(
            name=name, location=dest.as_uri(), bytes=dest.stat().st_size, sha256=file_sha256(dest).hex()
        )
