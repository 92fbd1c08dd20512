"""Finishing uploads S3 could not take earlier: the worker calls it at start, when idle, and for its own job."""

from __future__ import annotations

import time

from contract.errors import RecorderError
from recorder.config import RecorderSettings, TransferOptions
from recorder.storage.pending import PendingStore
from recorder.storage.result import StoredResult
from recorder.storage.transfer import result_of, run_transfer
from recorder.storage.upload import Confirm


def resume_pending(
    settings: RecorderSettings,
    *,
    options: TransferOptions | None = None,
    only: tuple[str, int] | None = None,
    confirm: Confirm | None = None,
    keep_files: bool = False,
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
                results.append(result_of(state, started, pending=True, reason=busy))
                continue
            try:
                results.append(run_transfer(state, store, settings, options, confirm=confirm, keep_files=keep_files))
            except RecorderError as exc:
                results.append(result_of(state, started, pending=False, reason=exc.message, error=exc))
    return results
