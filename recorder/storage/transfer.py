"""Running one attempt's upload to the end: the pending state in, a confirmed, pending or failed result out.

Shared by the first try (`BucketDestination.store`) and every later one (`resume_pending`), so an upload
S3 could not take continues the same multipart uploads with the same rules: a transient failure keeps the
state for later; a denial or a refusal marks it failed (kept for a person, never retried); a cancel or an
unconfirmed lease aborts this attempt's own multipart uploads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import METADATA_NAME, ErrorInfo, media_of
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings, TransferOptions
from recorder.storage.keys import s3_url
from recorder.storage.pending import ObjectUpload, PendingStore, PendingUpload
from recorder.storage.result import StoredObject, StoredResult
from recorder.storage.s3 import Verdict, classify, denied_error, describe, error_code, failed_error, make_client
from recorder.storage.upload import Cancelled, Confirm, ObjectUploader, Unconfirmed

log = structlog.get_logger(__name__)


def run_transfer(
    state: PendingUpload,
    store: PendingStore,
    settings: RecorderSettings,
    options: TransferOptions,
    *,
    cancel: threading.Event | None = None,
    confirm: Confirm | None = None,
    keep_files: bool = False,
) -> StoredResult:
    """Upload every object of `state` (its lock is held); confirmed, pending, or raise."""
    started = time.monotonic()
    bound = log.bind(recording_id=state.recording_id, attempt=state.attempt, bucket=state.bucket)
    uploader = ObjectUploader(
        make_client(settings, options),
        state.bucket,
        options,
        save=lambda: store.save(state),
        cancel=cancel,
        confirm=confirm,
        sweep_orphans=state.attempt is not None,
    )
    state.attempts += 1
    current: ObjectUpload | None = None
    try:
        for current in state.objects:
            uploader.upload(current)
    except Cancelled:
        _abort_quietly(uploader, state)
        store.remove(state.recording_id, state.attempt)
        bound.info("upload cancelled; multipart upload aborted")
        raise RecorderError(ErrorCode.CANCELLED, f"recording {state.recording_id} cancelled during upload") from None
    except Unconfirmed as exc:
        _abort_quietly(uploader, state)
        store.remove(state.recording_id, state.attempt)
        bound.warning("lease not confirmed; this attempt's multipart upload aborted")
        raise lease_lost(str(exc), [o.path for o in state.objects]) from None
    except RecorderError as exc:
        _abort_quietly(uploader, state)
        store.mark_failed(state, str(exc.code), exc.message)
        raise
    except Exception as exc:
        verdict = classify(exc)
        key = current.key if current else ""
        if verdict is Verdict.TRANSIENT:
            state.reason = (
                f"S3 {settings.s3_endpoint_url or 'endpoint'} unreachable or failing after retries "
                f"({describe(exc)}); the recording is kept on disk and the upload will resume"
            )
            store.save(state)
            bound.warning("upload pending", reason=state.reason, code=error_code(exc))
            return result_of(state, started, pending=True, reason=state.reason)
        error = (
            denied_error(exc, state.bucket, settings.s3_endpoint_url)
            if verdict is Verdict.DENIED
            else failed_error(exc, state.bucket, key)
        )
        _abort_quietly(uploader, state)
        store.mark_failed(state, str(error.code), error.message)
        bound.error("upload failed", code=str(error.code), error=error.message)
        raise error from exc

    result = result_of(state, started, pending=False, reason=None)
    if not (state.keep_local or keep_files):
        for obj in state.objects:
            obj.path.unlink(missing_ok=True)
    store.remove(state.recording_id, state.attempt)
    store.tidy(state.recording_id, state.attempt)
    bound.info("recording stored", location=result.location, bytes=result.total_bytes, seconds=result.seconds)
    return result


def result_of(
    state: PendingUpload, started: float, *, pending: bool, reason: str | None, error: RecorderError | None = None
) -> StoredResult:
    confirmed = not pending and error is None
    objects = [
        StoredObject(
            name=o.name,
            location=s3_url(state.bucket, o.key) if confirmed else o.path.as_uri(),
            bytes=o.size,
            sha256=o.sha256,
            parts=o.part_count,
        )
        for o in state.objects
    ]
    by_name = {o.name: o for o in objects}
    media_name = media_of(by_name) or ""
    media, meta = by_name[media_name], by_name.get(METADATA_NAME)
    dest = state.find(media_name)
    return StoredResult(
        recording_id=state.recording_id,
        location=media.location,
        metadata_location=meta.location if meta else None,
        destination=s3_url(state.bucket, dest.key) if dest else None,
        bytes=media.bytes,
        total_bytes=sum(o.bytes for o in objects),
        seconds=time.monotonic() - started,
        sha256=media.sha256,
        pending=pending,
        reason=reason,
        error=ErrorInfo(code=str(error.code), message=error.message) if error else None,
        objects=objects,
    )


def same_plan(a: PendingUpload, b: PendingUpload) -> bool:
    def shape(state: PendingUpload) -> list[tuple[str, str, int, int | None]]:
        return [(o.key, str(o.path), o.size, o.part_size) for o in state.objects]

    return a.bucket == b.bucket and shape(a) == shape(b)


def abort_attempt(folder: AttemptFolder, settings: RecorderSettings, options: TransferOptions) -> bool:
    """Abort one attempt's unfinished multipart uploads and forget its pending state (files stay on disk).

    Only that attempt's own upload ids and keys are touched: another attempt of the same recording (a
    successor after a lapsed lease) keeps its upload. Returns True when there was pending state. If S3
    cannot be reached the state is kept as failed, so the cancelled recording is never uploaded; the
    bucket's AbortIncompleteMultipartUpload lifecycle rule then removes the parts.
    """
    store = PendingStore(settings.records_dir)
    recording_id, attempt = folder.recording_id, folder.attempt
    if not store.path(recording_id, attempt).exists():
        return False
    with store.lock(recording_id, attempt):
        state = store.load(recording_id, attempt)
        if state is None:
            return False
        try:
            abort_all(state, settings, options, raise_errors=True)
        except Exception as exc:
            reason = f"cancelled; aborting the upload failed: {describe(exc)}"
            store.mark_failed(state, str(ErrorCode.CANCELLED), reason)
            log.warning("could not abort multipart uploads", recording_id=recording_id, error=describe(exc))
            return True
        store.remove(recording_id, attempt)
        log.info("pending upload aborted", recording_id=recording_id, attempt=attempt)
        return True


def abort_all(
    state: PendingUpload, settings: RecorderSettings, options: TransferOptions, *, raise_errors: bool = False
) -> None:
    """Abort the state's multipart uploads and any other unfinished upload of the same (attempt's own) keys."""
    client = make_client(settings, options)
    uploader = ObjectUploader(client, state.bucket, options, save=lambda: None)
    for obj in state.objects:
        if obj.done:
            continue
        try:
            uploader.abort(obj)
            if state.attempt is not None:  # the key is this attempt's alone: any upload of it is ours
                _abort_key(client, state.bucket, obj.key)
        except Exception:
            if raise_errors:
                raise
            log.warning("could not abort multipart upload", key=obj.key, exc_info=True)


def lease_lost(where: str, kept: list[Path]) -> RecorderError:
    files = ", ".join(str(p) for p in kept)
    return RecorderError(
        ErrorCode.LEASE_LOST,
        f"the lease could not be confirmed before completing {where}: this attempt's upload was aborted; "
        f"the files stay at {files}",
    )


def _abort_quietly(uploader: ObjectUploader, state: PendingUpload) -> None:
    for obj in state.objects:
        try:
            uploader.abort(obj)
        except Exception as exc:
            log.warning("could not abort multipart upload", key=obj.key, error=describe(exc))


def _abort_key(client: Any, bucket: str, key: str) -> None:
    page = client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    for upload in page.get("Uploads", []):
        if upload["Key"] == key:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
