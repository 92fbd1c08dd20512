"""A bucket as the destination of one attempt: verified, resumable uploads under the attempt's own keys.

Bucket layout (default S3_KEY_TEMPLATE), per attempt of a recording:

    <prefix>/<yyyy>/<mm>/<dd>/<recording_id>/attempt-<n>/rec.mp4           video/mp4, moov first
    <prefix>/<yyyy>/<mm>/<dd>/<recording_id>/attempt-<n>/rec.json          metadata + quality report
    <prefix>/<yyyy>/<mm>/<dd>/<recording_id>/attempt-<n>/live/index.m3u8   only with live_upload: HLS playlist
    <prefix>/<yyyy>/<mm>/<dd>/<recording_id>/attempt-<n>/live/seg_NNNNN.ts only with live_upload

rec.json is uploaded after rec.mp4, so its presence means the recording is complete.

Every call is synchronous and thread-safe (callers run them in a thread): each has its own boto3 client, and
the attempt's upload lock keeps two threads or processes off the same upload. A worker whose lease lapsed
writes, resumes and aborts only its own attempt's keys, never those of the worker that took over. `confirm`,
when given, is asked right before an object becomes visible (PUT, CompleteMultipartUpload); if it says no,
the attempt's own multipart upload is aborted and RecorderError LEASE_LOST is raised, files left on disk.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

from contract.errors import ErrorCode, RecorderError
from contract.protocol import MEDIA_NAMES, METADATA_NAME, media_of
from recorder.attempt import AttemptFolder
from recorder.config import MAX_PARTS, RecorderSettings, TransferOptions
from recorder.storage.destination import Destination, StoreCall
from recorder.storage.growing import GrowingUpload
from recorder.storage.keys import content_type, live_prefix, object_key, s3_url
from recorder.storage.live import LiveUploader
from recorder.storage.pending import ObjectUpload, PendingStore, PendingUpload
from recorder.storage.result import StoredResult
from recorder.storage.s3 import Verdict, classify, denied_error, failed_error, make_client
from recorder.storage.transfer import abort_all, abort_attempt, lease_lost, run_transfer, same_plan
from recorder.storage.upload import Confirm, ObjectUploader, Unconfirmed


class BucketDestination(Destination):
    def __init__(
        self,
        folder: AttemptFolder,
        *,
        bucket: str,
        prefix: str,
        settings: RecorderSettings,
        started_at: datetime,
        options: TransferOptions,
    ) -> None:
        super().__init__(folder)
        self.bucket = bucket
        self.prefix = prefix
        self.settings = settings
        self.started_at = started_at
        self.options = options

    @property
    def name(self) -> str:
        return s3_url(self.bucket, self.prefix)

    def key(self, name: str) -> str:
        return object_key(
            self.settings.s3_key_template,
            prefix=self.prefix,
            recording_id=self.folder.recording_id,
            attempt=self.folder.attempt,
            name=name,
            started_at=self.started_at,
        )

    # -- the final upload --------------------------------------------------------------------------

    def _store(self, files: dict[str, Path], call: StoreCall) -> StoredResult:
        """Returns a confirmed result, or a pending one (files kept, `resume` finishes it) when S3 is unreachable
        or failing beyond botocore's retries. Raises RecorderError UPLOAD_DENIED at once for wrong credentials,
        a missing bucket or a denial; UPLOAD_FAILED when S3 refuses the data or the object does not match the
        file; CANCELLED when `cancel` is set; LEASE_LOST when `confirm` says no (the upload aborted either way)."""
        growing, persisted = call.growing, False
        try:
            if media_of(files) is None:
                raise RecorderError(
                    ErrorCode.INVALID_ARGUMENT, f"nothing to store: no {' or '.join(MEDIA_NAMES)} among {sorted(files)}"
                )
            for name, path in files.items():
                if not path.is_file():
                    raise RecorderError(ErrorCode.UPLOAD_FAILED, f"{name}: {path} does not exist")
            objects = [self._plan(name, files[name]) for name in _ordered(files)]
            if growing is not None:
                objects[0] = self._adopt(growing, objects[0])
            state = PendingUpload(
                recording_id=self.folder.recording_id,
                attempt=self.folder.attempt,
                bucket=self.bucket,
                keep_local=self.settings.keep_local,
                objects=objects,
            )
            store = PendingStore(self.settings.records_dir)
            with store.lock(self.folder.recording_id, self.folder.attempt):
                earlier = store.load(self.folder.recording_id, self.folder.attempt)
                if earlier is not None and same_plan(earlier, state):
                    state = earlier  # stored again after a crash: continue that upload instead of starting over
                elif earlier is not None:
                    abort_all(earlier, self.settings, self.options)  # the same attempt's earlier plan: its own keys
                store.save(state)
                # From here the state owns the adopted upload: it is finished, resumed or aborted with it.
                persisted = state.objects[0] is objects[0]
                if growing is not None and not persisted:
                    growing.cancel()  # an earlier plan of this attempt continues instead
                return run_transfer(
                    state,
                    store,
                    self.settings,
                    self.options,
                    cancel=call.cancel,
                    confirm=call.confirm,
                    keep_files=call.keep_files,
                )
        except BaseException:
            if growing is not None and not persisted:
                growing.cancel()  # in no state file: nobody else would ever abort its parts
            raise

    def store_small(self, path: Path, *, confirm: Confirm | None = None, keep_files: bool = False) -> str:
        """rec.json and failure.png are small and come last, so they need no pending state: botocore's retries
        cover them, and what still fails raises (the media is safe already; the caller keeps the file on disk
        and says so)."""
        obj = self._plan(path.name, path)
        client = make_client(self.settings, self.options)
        uploader = ObjectUploader(client, self.bucket, self.options, save=lambda: None, confirm=confirm)
        try:
            uploader.upload(obj)
        except RecorderError:
            raise
        except Unconfirmed:
            raise lease_lost(s3_url(self.bucket, obj.key), [path]) from None
        except Exception as exc:
            if classify(exc) is Verdict.DENIED:
                raise denied_error(exc, self.bucket, self.settings.s3_endpoint_url) from exc
            raise failed_error(exc, self.bucket, obj.key) from exc
        if not (keep_files or self.settings.keep_local):
            path.unlink(missing_ok=True)
        return s3_url(self.bucket, obj.key)

    def resume(self, confirm: Confirm | None = None, *, keep_files: bool = False) -> StoredResult | None:
        from recorder.storage.resume import resume_pending

        only = (self.folder.recording_id, self.folder.attempt)
        results = resume_pending(
            self.settings, options=self.options, only=only, confirm=confirm, keep_files=keep_files
        )
        return next((r for r in results if r.recording_id == self.folder.recording_id), None)

    def abort(self) -> None:
        abort_attempt(self.folder, self.settings, self.options)

    # -- while recording ---------------------------------------------------------------------------

    def live_uploader(self) -> LiveUploader:
        client = make_client(self.settings, self.options)
        prefix = live_prefix(
            self.settings.s3_key_template,
            prefix=self.prefix,
            recording_id=self.folder.recording_id,
            attempt=self.folder.attempt,
            started_at=self.started_at,
        )
        return LiveUploader(self.folder.live_dir, self.bucket, prefix, client=client)

    def growing_upload(self) -> GrowingUpload:
        client = make_client(self.settings, self.options)
        halt = threading.Event()  # stops the parts in flight when the upload is handed over or dropped
        uploader = ObjectUploader(client, self.bucket, self.options, save=lambda: None, cancel=halt)
        name = self.folder.media.name
        obj = ObjectUpload(
            name=name,
            path=self.folder.media.resolve(),
            key=self.key(name),
            content_type=content_type(name),
            size=0,
            part_size=self.options.part_size,
        )
        return GrowingUpload(uploader, obj, halt)

    # -- internals ---------------------------------------------------------------------------------

    def _plan(self, name: str, path: Path) -> ObjectUpload:
        size = path.stat().st_size
        return ObjectUpload(
            name=name,
            path=path.resolve(),
            key=self.key(name),
            content_type=content_type(name),
            size=size,
            part_size=self.options.part_size_for(size) if size > self.options.multipart_threshold else None,
        )

    def _adopt(self, growing: GrowingUpload, planned: ObjectUpload) -> ObjectUpload:
        """The multipart upload that followed rec.mp4 becomes the plan's, when it can carry the whole file;
        otherwise it is aborted and the file goes up as planned."""
        sent = growing.stop()
        if sent is None:
            return planned
        sent.size = planned.size
        if sent.path != planned.path or sent.key != planned.key or sent.part_count > MAX_PARTS:
            growing.cancel()
            return planned
        return sent


def _ordered(files: dict[str, Path]) -> list[str]:
    """The media first and rec.json last: a metadata object in the bucket means the media is there too."""
    media = media_of(files) or ""
    rest = sorted(n for n in files if n not in (media, METADATA_NAME))
    return [media, *rest, *([METADATA_NAME] if METADATA_NAME in files else [])]
