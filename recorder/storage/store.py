"""The storage entry point used by the recorder pipeline and the worker.

- `store_recording`: after finalize, put the recording where it belongs: S3 when a bucket is configured
  (verified, local copy deleted only once confirmed unless KEEP_LOCAL), else RECORDS_DIR.
- `resume_pending`: finish uploads S3 could not take earlier; the worker calls it at start and when idle.
- `abort_pending`: a cancelled recording (or a lost lease) leaves no multipart parts of its attempt behind.

All three are synchronous and thread-safe (callers run them in a thread): each call has its own boto3
session and client, and a per-attempt file lock keeps two threads or processes off the same upload.

Everything is per attempt (the lease's attempt number; 1 outside the farm): keys, the local folder and the
pending state. A worker whose lease lapsed writes, resumes and aborts only its own attempt's keys, never
those of the worker that took the recording over. `confirm`, when given, is asked right before an object
becomes visible (PUT, CompleteMultipartUpload); if it says no, the attempt's own multipart upload is
aborted and RecorderError LEASE_LOST is raised, with the files left on disk for the caller to judge.

Bucket layout (default S3_KEY_TEMPLATE), per attempt of a recording:

    <prefix>/<yyyy>/<mm>/<dd>/<recording_id>/attempt-<n>/rec.mp4           video/mp4, moov first
    <prefix>/<yyyy>/<mm>/<dd>/<recording_id>/attempt-<n>/rec.json          metadata + quality report
    <prefix>/<yyyy>/<mm>/<dd>/<recording_id>/attempt-<n>/live/index.m3u8   only with live_upload: HLS playlist
    <prefix>/<yyyy>/<mm>/<dd>/<recording_id>/attempt-<n>/live/seg_NNNNN.ts only with live_upload

Locally (no bucket): `RECORDS_DIR/<recording_id>/attempt-<n>/rec.mp4` and `rec.json`.
rec.json is uploaded after rec.mp4, so its presence means the recording is complete.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import ErrorInfo, UploadTarget
from recorder.config import RecorderSettings, TransferOptions
from recorder.storage.keys import attempt_folder, check_recording_id, content_type, object_key, s3_url
from recorder.storage.local import store_local
from recorder.storage.pending import LOCK_NAME, ObjectUpload, PendingStore, PendingUpload
from recorder.storage.result import StoredObject, StoredResult
from recorder.storage.s3 import (
    Verdict,
    classify,
    denied_error,
    describe,
    error_code,
    failed_error,
    make_client,
)
from recorder.storage.upload import Cancelled, Confirm, ObjectUploader, Unconfirmed

log = structlog.get_logger(__name__)

MEDIA = "rec.mp4"
METADATA = "rec.json"


def store_recording(
    recording_id: str,
    files: dict[str, Path],
    target: UploadTarget,
    settings: RecorderSettings,
    started_at: datetime,
    *,
    attempt: int = 1,
    options: TransferOptions | None = None,
    cancel: threading.Event | None = None,
    confirm: Confirm | None = None,
) -> StoredResult:
    """Store a finished recording; `files` maps object names (at least rec.mp4) to local paths.

    Returns a confirmed result, or a pending one (files kept on disk, `resume_pending` finishes it) when
    S3 is unreachable or failing beyond botocore's retries. Raises RecorderError UPLOAD_DENIED at once
    for wrong credentials, a missing bucket or a denial; UPLOAD_FAILED when S3 refuses the data or the
    object does not match the file; CANCELLED when `cancel` is set (the multipart upload is aborted);
    LEASE_LOST when `confirm` says no before an object would be completed (likewise aborted).
    """
    check_recording_id(recording_id)
    attempt_folder(attempt)
    if MEDIA not in files:
        raise RecorderError(ErrorCode.INVALID_ARGUMENT, f"nothing to store: no {MEDIA} among {sorted(files)}")
    for name, path in files.items():
        if not path.is_file():
            raise RecorderError(ErrorCode.UPLOAD_FAILED, f"{name}: {path} does not exist")
    bucket = target.bucket or settings.s3_bucket
    if not bucket:
        return store_local(recording_id, files, settings, attempt=attempt)

    options = options or TransferOptions()
    prefix = target.prefix or settings.s3_prefix
    objects = [
        _plan(
            name, files[name], settings, options,
            prefix=prefix, recording_id=recording_id, attempt=attempt, started_at=started_at,
        )
        for name in _ordered(files)
    ]  # fmt: skip
    state = PendingUpload(
        recording_id=recording_id, attempt=attempt, bucket=bucket, keep_local=settings.keep_local, objects=objects
    )
    store = PendingStore(settings.records_dir)
    with store.lock(recording_id, attempt):
        earlier = store.load(recording_id, attempt)
        if earlier is not None and _same_plan(earlier, state):
            state = earlier  # stored again after a crash: continue that upload instead of starting over
        elif earlier is not None:
            _abort_all(earlier, settings, options)  # the same attempt's earlier plan: its own keys only
        store.save(state)
        return _run(state, store, settings, options, cancel, time.monotonic(), confirm)


def store_metadata(
    recording_id: str,
    sidecar: Path,
    target: UploadTarget,
    settings: RecorderSettings,
    started_at: datetime,
    *,
    attempt: int = 1,
    options: TransferOptions | None = None,
    confirm: Confirm | None = None,
) -> str:
    """Store rec.json after rec.mp4 was confirmed, for a recording whose analysis ran during the upload.

    rec.json is small and comes last, so it needs no pending state: botocore's retries cover it, and what
    still fails raises (the media is safe already; the caller keeps rec.json on disk and says so).
    Returns the object's location."""
    check_recording_id(recording_id)
    folder = attempt_folder(attempt)
    bucket = target.bucket or settings.s3_bucket
    if not bucket:
        home = (settings.records_dir / recording_id / folder).resolve()
        home.mkdir(parents=True, exist_ok=True)
        dest = home / METADATA
        if sidecar.resolve() != dest:
            sidecar.replace(dest)
        return dest.as_uri()
    options = options or TransferOptions()
    prefix = target.prefix or settings.s3_prefix
    obj = _plan(
        METADATA, sidecar, settings, options,
        prefix=prefix, recording_id=recording_id, attempt=attempt, started_at=started_at,
    )  # fmt: skip
    uploader = ObjectUploader(make_client(settings, options), bucket, options, save=lambda: None, confirm=confirm)
    try:
        uploader.upload(obj)
    except RecorderError:
        raise
    except Unconfirmed:
        raise _lease_lost(s3_url(bucket, obj.key), [sidecar]) from None
    except Exception as exc:
        verdict = classify(exc)
        if verdict is Verdict.DENIED:
            raise denied_error(exc, bucket, settings.s3_endpoint_url) from exc
        raise failed_error(exc, bucket, obj.key) from exc
    if not settings.keep_local:
        sidecar.unlink(missing_ok=True)
    return s3_url(bucket, obj.key)


def resume_pending(
    settings: RecorderSettings,
    *,
    options: TransferOptions | None = None,
    only: tuple[str, int] | None = None,
    confirm: Confirm | None = None,
) -> list[StoredResult]:
    """Finish pending uploads under RECORDS_DIR, continuing the same multipart uploads.

    Every pending attempt no running job owns (that job finishes its own), or with
    `only=(recording_id, attempt)` that one alone (a job resumes its own upload, asking `confirm` before
    completing it). Each result is confirmed, still pending (with the reason), or failed for good (`error`
    set; the files stay on disk, the state is kept as upload.failed.json and not retried). Uploads another
    thread or process is working on are left to it and reported as pending, with that reason.
    """
    options = options or TransferOptions()
    store = PendingStore(settings.records_dir)
    results: list[StoredResult] = []
    if only is None:
        # A live job's pending upload is its own to finish (it confirms its lease first); a dead one's is ours.
        slots = [slot for slot in store.pending() if not store.owned(*slot)]
    else:
        slots = [only] if store.path(*only).exists() else []
    for recording_id, attempt in slots:
        with store.lock(recording_id, attempt, wait=False) as held:
            state = store.load(recording_id, attempt)
            if state is None:
                continue
            started = time.monotonic()
            if not held:
                busy = "another thread or process is uploading it right now"
                results.append(_result(state, started, pending=True, reason=busy))
                continue
            try:
                results.append(_run(state, store, settings, options, None, started, confirm))
            except RecorderError as exc:
                results.append(_result(state, started, pending=False, reason=exc.message, error=exc))
    return results


def abort_pending(
    recording_id: str, settings: RecorderSettings, *, attempt: int = 1, options: TransferOptions | None = None
) -> bool:
    """Abort one attempt's unfinished multipart uploads and forget its pending state (files stay on disk).

    Only that attempt's own upload ids and keys are touched: another attempt of the same recording (a
    successor after a lapsed lease) keeps its upload. Returns True when there was pending state. If S3
    cannot be reached the state is kept as failed, so the cancelled recording is never uploaded; the
    bucket's AbortIncompleteMultipartUpload lifecycle rule then removes the parts.
    """
    check_recording_id(recording_id)
    attempt_folder(attempt)
    options = options or TransferOptions()
    store = PendingStore(settings.records_dir)
    if not store.path(recording_id, attempt).exists():
        return False
    with store.lock(recording_id, attempt):
        state = store.load(recording_id, attempt)
        if state is None:
            return False
        try:
            _abort_all(state, settings, options, raise_errors=True)
        except Exception as exc:
            reason = f"cancelled; aborting the upload failed: {describe(exc)}"
            store.mark_failed(state, str(ErrorCode.CANCELLED), reason)
            log.warning("could not abort multipart uploads", recording_id=recording_id, error=describe(exc))
            return True
        store.remove(recording_id, attempt)
        log.info("pending upload aborted", recording_id=recording_id, attempt=attempt)
        return True


# -- internals -----------------------------------------------------------------------------------


def _ordered(files: dict[str, Path]) -> list[str]:
    """rec.mp4 first and rec.json last: a metadata object in the bucket means the media is there too."""
    rest = sorted(n for n in files if n not in (MEDIA, METADATA))
    return [MEDIA, *rest, *([METADATA] if METADATA in files else [])]


def _plan(
    name: str,
    path: Path,
    settings: RecorderSettings,
    options: TransferOptions,
    *,
    prefix: str,
    recording_id: str,
    attempt: int,
    started_at: datetime,
) -> ObjectUpload:
    size = path.stat().st_size
    key = object_key(
        settings.s3_key_template,
        prefix=prefix,
        recording_id=recording_id,
        attempt=attempt,
        name=name,
        started_at=started_at,
    )
    return ObjectUpload(
        name=name,
        path=path.resolve(),
        key=key,
        content_type=content_type(name),
        size=size,
        part_size=options.part_size_for(size) if size > options.multipart_threshold else None,
    )


def _same_plan(a: PendingUpload, b: PendingUpload) -> bool:
    def shape(state: PendingUpload) -> list[tuple[str, str, int, int | None]]:
        return [(o.key, str(o.path), o.size, o.part_size) for o in state.objects]

    return a.bucket == b.bucket and shape(a) == shape(b)


def _run(
    state: PendingUpload,
    store: PendingStore,
    settings: RecorderSettings,
    options: TransferOptions,
    cancel: threading.Event | None,
    started: float,
    confirm: Confirm | None = None,
) -> StoredResult:
    """Upload every object of `state` (the lock is held); confirmed, pending, or raise."""
    bound = log.bind(recording_id=state.recording_id, attempt=state.attempt, bucket=state.bucket)
    client = make_client(settings, options)
    uploader = ObjectUploader(
        client,
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
        raise _lease_lost(str(exc), [o.path for o in state.objects]) from None
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
            return _result(state, started, pending=True, reason=state.reason)
        error = (
            denied_error(exc, state.bucket, settings.s3_endpoint_url)
            if verdict is Verdict.DENIED
            else failed_error(exc, state.bucket, key)
        )
        _abort_quietly(uploader, state)
        store.mark_failed(state, str(error.code), error.message)
        bound.error("upload failed", code=str(error.code), error=error.message)
        raise error from exc

    result = _result(state, started, pending=False, reason=None)
    if not state.keep_local:
        for obj in state.objects:
            obj.path.unlink(missing_ok=True)
    store.remove(state.recording_id, state.attempt)
    _tidy(store.dir(state.recording_id, state.attempt))
    bound.info("recording stored", location=result.location, bytes=result.total_bytes, seconds=result.seconds)
    return result


def _result(
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
    media, meta = by_name[MEDIA], by_name.get(METADATA)
    dest = state.find(MEDIA)
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


def _abort_quietly(uploader: ObjectUploader, state: PendingUpload) -> None:
    for obj in state.objects:
        try:
            uploader.abort(obj)
        except Exception as exc:
            log.warning("could not abort multipart upload", key=obj.key, error=describe(exc))


def _abort_all(
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


def _abort_key(client: Any, bucket: str, key: str) -> None:
    page = client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    for upload in page.get("Uploads", []):
        if upload["Key"] == key:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


def _lease_lost(where: str, kept: list[Path]) -> RecorderError:
    files = ", ".join(str(p) for p in kept)
    return RecorderError(
        ErrorCode.LEASE_LOST,
        f"the lease could not be confirmed before completing {where}: this attempt's upload was aborted; "
        f"the files stay at {files}",
    )


def _tidy(directory: Path) -> None:
    """After a confirmed upload: drop the lock file, and the attempt's and recording's directories if empty."""
    (directory / LOCK_NAME).unlink(missing_ok=True)
    folders = [directory, directory.parent] if directory.name.startswith("attempt-") else [directory]
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
