"""One leased recording, from lease to report: record, store, report, with heartbeats all along.

Heartbeats go every `lease.heartbeat_interval` seconds (and at once when the state changes), carrying
the state and the capture's progress. The orchestrator's reply steers the job:

- `stop`: stop gracefully; the file is kept, stored and reported.
- `cancel`: stop, discard the files, abort an upload in progress; reported as cancelled.
- 410 (the lease is no longer ours: it lapsed and went to another worker, or the recording ended):
  stop at once and drop the recording (local files, and this attempt's own uploads); nothing is
  reported, since another attempt may own it now.

A heartbeat that does not get through is simply tried again at the next beat: the recording goes on,
so an orchestrator restart shorter than the lease TTL loses nothing. The report is retried until it is
acknowledged.

Fencing: the orchestrator hands the recording to another worker once a lease has gone `lease_ttl`
seconds without a heartbeat. So a worker whose heartbeats have not got through for that long (counted
from the sending of the last one that did) stops capturing (gracefully: the file is finalized) and uploads nothing
while it cannot tell whether the lease is still its own. It keeps asking; if the orchestrator answers
that the lease is still held (it restarted and extended leases), the recording is stored and reported as
usual; a 410 means another attempt owns it, and this one drops its files. Right before any upload is
completed (CompleteMultipartUpload, a single PUT, the growing and live uploads' last step) a fresh
heartbeat must confirm the lease; if it is gone, the attempt's own multipart upload is aborted.

Files live in `RECORDS_DIR/<recording_id>/attempt-<n>/` (and keys carry `attempt-<n>`), so two attempts of
the same recording (a lapsed worker and its successor) never touch each other's files or objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import ErrorInfo, Heartbeat, Lease, Outcome, Progress, Report, WorkerState
from contract.spec import RecordingSpec
from recorder.capture.command import LIVE_CAPTURE_NAME
from recorder.config import RecorderSettings
from recorder.storage import (
    GrowingUpload,
    LiveUploader,
    StoredResult,
    abort_pending,
    resume_pending,
    store_metadata,
    store_recording,
)
from recorder.storage.keys import attempt_folder
from recorder.storage.pending import PendingStore
from recorder.worker.client import LeaseLost, OrchestratorClient, Unauthorized, Unavailable

log = structlog.get_logger(__name__)

ProgressCallback = Callable[[WorkerState, Progress], None]


class RecordingOutput(Protocol):
    """What the worker needs of the pipeline's `RecordingResult`."""

    mp4: Path | None
    sidecar: Path | None
    quality: dict[str, Any] | None
    progress: Progress
    error: RecorderError | None
    stopped_by: str
    files: dict[str, Path]


class RecorderLike(Protocol):
    """The pipeline's `Recorder` (warm display, audio server and browser), as the worker uses it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def record(
        self,
        spec: RecordingSpec,
        *,
        recording_id: str,
        out_dir: Path,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
        analyze: bool = True,
    ) -> RecordingOutput: ...

    async def complete(self, output: RecordingOutput, media: Path | None = None) -> None:
        """Run the analysis `record(analyze=False)` left out, on `media` if given, and complete rec.json."""


@dataclass(frozen=True)
class JobTimings:
    # How long a final report is retried while the orchestrator cannot be reached.
    report_patience: float = 3600.0
    # First and longest wait between attempts to finish an upload S3 could not take.
    upload_retry_first: float = 5.0
    upload_retry_cap: float = 60.0


@dataclass(frozen=True)
class JobResult:
    recording_id: str
    outcome: Outcome | None  # None: the lease was lost, nothing was reported
    location: str | None = None
    reported: bool = False
    error: ErrorInfo | None = None


class Job:
    def __init__(
        self,
        lease: Lease,
        *,
        worker_id: str,
        recorder: RecorderLike,
        client: OrchestratorClient,
        settings: RecorderSettings,
        timings: JobTimings | None = None,
    ) -> None:
        self.lease = lease
        self.worker_id = worker_id
        self.recorder = recorder
        self.client = client
        self.settings = settings
        self.timings = timings or JobTimings()
        self.recording_id = lease.recording_id
        self.attempt = lease.attempt
        self.out_dir = settings.records_dir / lease.recording_id / attempt_folder(lease.attempt)
        # One start time for every key of this recording, so live segments sit beside rec.mp4.
        self.started_at = datetime.now(UTC)
        self._live: LiveUploader | None = None
        self._live_spent: LiveUploader | None = None  # finished or closed; its objects go if the job drops
        self._growing: GrowingUpload | None = None
        self.state: WorkerState = "starting"
        self.progress = Progress()
        self.stop = asyncio.Event()  # handed to the recorder: stop gracefully, keep the file
        self.cancelled = False
        self.lease_lost = False
        # No heartbeat got through for a lease TTL: capture stopped, nothing is uploaded until the
        # orchestrator answers. `undecided`: it never did (the worker gave up waiting; files are kept).
        self.fenced = False
        self._pausing: asyncio.Future[None] | None = None
        self.undecided = False
        self._fence_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopped_for: str | None = None
        self.blocked: dict[str, int] = {}  # the egress guard's denials by reason, for the report
        self._upload_cancel = threading.Event()
        self._changed = asyncio.Event()
        self._give_up_upload = asyncio.Event()
        self._beats: asyncio.Task[None] | None = None
        self._beats_done = False
        self.log = log.bind(recording_id=lease.recording_id, lease_id=lease.lease_id, attempt=lease.attempt)

    # -- steering, from heartbeats and from the worker ---------------------------------------------

    def request_stop(self, why: str) -> None:
        """Stop gracefully (the file is kept, stored and reported)."""
        if not self.stop.is_set():
            self.stopped_for = why
            self.log.info("worker.stop_requested", why=why)
            self.stop.set()

    def give_up_pending_upload(self) -> None:
        """The worker is going away: stop waiting for S3 and report where the files are."""
        self._give_up_upload.set()

    def _cancel(self) -> None:
        if not self.cancelled:
            self.log.info("worker.cancel_requested")
        self.cancelled = True
        self._upload_cancel.set()
        self.request_stop("cancel")

    def _lose_lease(self, why: str) -> None:
        if not self.lease_lost:
            self.log.warning("worker.lease_lost", why=why)
        self.lease_lost = True
        self._upload_cancel.set()
        self.request_stop("lease lost")

    def _arm_fence(self, since: float | None = None) -> None:
        """(Re)start the count of one lease TTL from `since` (loop time; default now): the last moment the
        lease was known to be ours."""
        if self._fence_timer is not None:
            self._fence_timer.cancel()
            self._fence_timer = None
        if not self._beats_done:
            loop = asyncio.get_running_loop()
            start = loop.time() if since is None else since
            self._fence_timer = loop.call_at(start + self.lease.lease_ttl, self._fence)

    def _fence(self) -> None:
        """A lease TTL without a heartbeat getting through: the orchestrator may have given the recording to
        another worker. Stop capturing (the file is kept) and upload nothing until it answers."""
        self._fence_timer = None
        if self.lease_lost or self.cancelled or self._beats_done or self.fenced:
            return
        self.fenced = True
        self.log.warning("worker.fenced", silent_for=self.lease.lease_ttl, state=self.state)
        self.request_stop("lease unconfirmed")
        # Not one more segment or part while FFmpeg winds down: the bucket waits for the orchestrator's answer.
        self._pausing = asyncio.ensure_future(self._pause_live_upload())

    def _acked(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` got through: the lease is ours; the count towards fencing starts
        again from when it was sent (the orchestrator extended the lease somewhere between send and reply, so
        counting from the reply would fence later than the lease can lapse)."""
        if self.fenced:
            self.log.info("worker.lease_confirmed_again")
            self.fenced = False
        self._arm_fence(sent_at)

    def _on_progress(self, state: WorkerState, progress: Progress) -> None:
        self.progress = progress
        self._set_state(state)

    def _set_state(self, state: WorkerState) -> None:
        if state != self.state:
            self.state = state
            self._changed.set()

    # -- the job -----------------------------------------------------------------------------------

    async def run(self) -> JobResult:
        self.log.info("worker.job_started", url=self.lease.spec.url, duration=self.lease.spec.duration)
        self._loop = asyncio.get_running_loop()
        self._arm_fence()  # the lease was granted just now
        self._beats = asyncio.create_task(self._heartbeats(), name=f"heartbeat-{self.recording_id}")
        # While this job runs, idle workers sharing RECORDS_DIR leave this attempt's pending upload to it.
        owner = PendingStore(self.settings.records_dir).owner(self.recording_id, self.attempt)
        try:
            with owner:
                return await self._run()
        finally:
            await self._paused()
            await self._abandon_growing_upload()
            await self._stop_heartbeats()

    async def _stop_heartbeats(self) -> None:
        """End the heartbeats, letting one in flight finish (a request cut off mid-way helps nobody)."""
        beats, self._beats = self._beats, None
        self._beats_done = True
        if self._fence_timer is not None:
            self._fence_timer.cancel()
            self._fence_timer = None
        if beats is None:
            return
        self._changed.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(beats), timeout=self.client.request_timeout + 1.0)
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats

    async def _run(self) -> JobResult:
        self._start_live_upload()
        output, error = await self._record()
        if self.fenced and not (self.lease_lost or self.cancelled):
            # Nothing goes to the bucket while the lease is in doubt; wait for the orchestrator's answer.
            await self._paused()
            if not await self._confirm_lease() and not (self.lease_lost or self.cancelled):
                return await self._keep_unreported("the orchestrator never confirmed the lease")
        await self._finish_live_upload(keep=not (self.lease_lost or self.cancelled))
        if self.lease_lost or self.cancelled:
            return await self._drop()
        if self.undecided:  # the live upload's last step found the lease in doubt: upload nothing more
            return await self._keep_unreported("the orchestrator never confirmed the lease")
        mp4 = output.mp4 if output is not None else None
        if output is not None:
            self.progress = output.progress
        if mp4 is None or not mp4.is_file():
            error = error or RecorderError(ErrorCode.INTERNAL, "the recorder produced no rec.mp4 and said not why")
            kept = [p for p in (output.files.values() if output is not None else ()) if p.is_file()]
            if kept:
                # Not playable, but maybe recoverable by a person: keep it and say where.
                error = RecorderError(error.code, f"{error.message}; what was captured is kept at {kept[0]}")
            else:
                self._discard_files()
            return await self._report("failed", error=_info(error))

        self._set_state("uploading")
        # rec.mp4 goes up while the quality analysis (minutes of CPU for a long recording) runs; rec.json,
        # which carries the analysis, follows once both are done.
        # Storage deletes rec.mp4 once it is confirmed; the analysis reads a hard link that stays meanwhile.
        link = mp4.with_name(".rec.analysis.mp4")
        link.unlink(missing_ok=True)
        os.link(mp4, link)
        analysis = asyncio.ensure_future(self.recorder.complete(output, link)) if output is not None else None
        try:
            stored = await self._store_media(mp4, output)
        finally:
            if analysis is not None:
                await analysis
            link.unlink(missing_ok=True)
        if isinstance(stored, JobResult):
            return stored
        if not stored.pending and output is not None and output.sidecar is not None and output.sidecar.is_file():
            stored.metadata_location = await self._store_metadata(output.sidecar)
        if self.lease_lost or self.cancelled:
            return await self._drop()
        if self.undecided:
            # rec.mp4 is in the bucket already (its lease was confirmed right before); rec.json is not.
            return await self._keep_unreported("the orchestrator never confirmed the lease", stored=stored.location)
        return await self._conclude(stored, output, error)

    async def _store_media(self, mp4: Path, output: RecordingOutput | None) -> StoredResult | JobResult:
        files = {"rec.mp4": mp4}
        try:
            stored_live = await self._finish_growing_upload()
            if stored_live is not None:
                return stored_live
            stored = await asyncio.to_thread(
                store_recording,
                self.recording_id,
                files,
                self.lease.upload,
                self.settings,
                self.started_at,
                attempt=self.attempt,
                cancel=self._upload_cancel,
                confirm=self._confirm_from_thread,
            )
            if stored.pending:
                stored = await self._finish_pending_upload(stored, output)
        except RecorderError as exc:
            if self.lease_lost or self.cancelled:
                return await self._drop()
            if exc.code == ErrorCode.LEASE_LOST:
                return await self._keep_unreported(exc.message)
            return await self._report("failed", error=_info(exc), quality=output.quality if output else None)
        if self.lease_lost or self.cancelled:
            return await self._drop()
        return stored

    async def _store_metadata(self, sidecar: Path) -> str | None:
        try:
            return await asyncio.to_thread(
                store_metadata,
                self.recording_id,
                sidecar,
                self.lease.upload,
                self.settings,
                self.started_at,
                attempt=self.attempt,
                confirm=self._confirm_from_thread,
            )
        except RecorderError as exc:
            self.log.warning("worker.metadata_not_stored", error=exc.message, kept=str(sidecar))
            return None

    async def _conclude(
        self, stored: StoredResult, output: RecordingOutput | None, error: RecorderError | None
    ) -> JobResult:
        if stored.pending:
            # Giving up on S3 for now (the worker is shutting down): say where the recording is.
            reason = stored.reason or "S3 could not be reached"
            message = f"{reason}; rec.mp4 is kept at {stored.location} and its upload resumes when a worker starts"
            return await self._report(
                "failed",
                location=stored.location,
                metadata_location=stored.metadata_location,
                quality=output.quality if output else None,
                error=ErrorInfo(code=ErrorCode.UPLOAD_PENDING.value, message=message),
            )
        if not self.settings.keep_local:
            # What storage did not keep (partial captures, logs); a rec.json it could not store stays.
            unstored = output.sidecar if output is not None and stored.metadata_location is None else None
            self._tidy_attempt(stored, unstored)
        return await self._report(
            "failed" if error is not None else "completed",
            location=stored.location,
            metadata_location=stored.metadata_location,
            quality=output.quality if output else None,
            error=_info(error) if error is not None else None,
        )

    def _start_live_upload(self) -> None:
        if not self.lease.spec.live_upload:
            return
        try:
            self._live = LiveUploader.for_recording(
                self.out_dir / "live",
                self.recording_id,
                self.lease.upload,
                self.settings,
                self.started_at,
                attempt=self.attempt,
            )
        except Exception as exc:
            self.log.warning("worker.live_upload_unavailable", error=str(exc))
            return
        if self._live is None:
            self.log.info("worker.live_upload_skipped", reason="no bucket: the recording is stored locally")
            return
        self._live.start()
        self._growing = GrowingUpload.for_recording(
            self.out_dir / LIVE_CAPTURE_NAME,
            self.recording_id,
            self.lease.upload,
            self.settings,
            self.started_at,
            attempt=self.attempt,
        )
        if self._growing is not None:
            self._growing.start()

    async def _abandon_growing_upload(self) -> None:
        """A live rec.mp4 upload not finished by now (failure, cancel) leaves no parts behind."""
        growing, self._growing = self._growing, None
        if growing is not None:
            await asyncio.to_thread(growing.cancel)

    async def _finish_growing_upload(self) -> StoredResult | None:
        """rec.mp4 of a live recording, mostly uploaded while it was written: send the tail and confirm."""
        growing, self._growing = self._growing, None
        if growing is None:
            return None
        # The local file stays for the analysis running meanwhile; the attempt's directory goes afterwards.
        return await asyncio.to_thread(growing.finish, self._confirm_from_thread)

    async def _paused(self) -> None:
        """The live upload is paused (if fencing began pausing it, that is finished too)."""
        pausing, self._pausing = self._pausing, None
        if pausing is not None:
            await pausing
        if self.fenced:
            await self._pause_live_upload()

    async def _pause_live_upload(self) -> None:
        """Fenced: stop sending segments and drop the growing upload (the whole file goes up later if the
        lease turns out to be ours); the segments stay on disk for `_finish_live_upload`."""
        await self._abandon_growing_upload()
        if self._live is not None:
            await asyncio.to_thread(self._live.close)

    async def _finish_live_upload(self, *, keep: bool) -> None:
        if not keep:
            await self._abandon_growing_upload()
        live, self._live = self._live, None
        if live is None:
            return
        self._live_spent = live
        if not keep:
            await asyncio.to_thread(live.close)
            return
        summary = await asyncio.to_thread(live.finish, self._confirm_from_thread)
        self.log.info(
            "worker.live_upload_done",
            segments=len(summary.uploaded),
            bytes=summary.bytes,
            missing=len(summary.missing),
            error=summary.error,
        )

    async def _record(self) -> tuple[RecordingOutput | None, RecorderError | None]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            output = await self.recorder.record(
                self.lease.spec,
                recording_id=self.recording_id,
                out_dir=self.out_dir,
                on_progress=self._on_progress,
                stop=self.stop,
                analyze=False,
            )
        except RecorderError as exc:
            self.log.warning("worker.recording_failed", code=str(exc.code), error=exc.message)
            return None, exc
        except Exception as exc:
            self.log.exception("worker.recording_crashed")
            return None, RecorderError(ErrorCode.INTERNAL, f"the recorder failed unexpectedly: {exc!r}")
        self.log.info(
            "worker.recorded",
            stopped_by=output.stopped_by,
            mp4=str(output.mp4) if output.mp4 else None,
            error=str(output.error) if output.error else None,
        )
        summary = getattr(output, "blocked", None)
        self.blocked = dict(summary.by_reason) if summary is not None else {}
        return output, output.error

    async def _finish_pending_upload(self, stored: StoredResult, output: RecordingOutput | None) -> StoredResult:
        """S3 was unreachable: tell the orchestrator (the lease stays ours), then retry until it goes through."""
        self.log.warning("worker.upload_pending", reason=stored.reason, location=stored.location)
        try:
            reply = await self.client.report(
                self._build_report(
                    "completed",
                    location=stored.location,
                    metadata_location=stored.metadata_location,
                    quality=output.quality if output else None,
                    upload_pending=True,
                ),
                deadline=asyncio.get_running_loop().time() + self.lease.lease_ttl,
            )
            self._act(reply.action)
        except LeaseLost as exc:
            self._lose_lease(str(exc))
        except (Unavailable, Unauthorized) as exc:
            self.log.warning("worker.report_failed", error=str(exc))  # heartbeats keep the lease meanwhile
        delay = self.timings.upload_retry_first
        while not (self.lease_lost or self.cancelled):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._give_up_upload.wait(), timeout=delay)
            if self._give_up_upload.is_set() or self.lease_lost or self.cancelled:
                return stored
            results = await asyncio.to_thread(
                resume_pending,
                self.settings,
                only=(self.recording_id, self.attempt),
                confirm=self._confirm_from_thread,
            )
            ours = next((r for r in results if r.recording_id == self.recording_id), None)
            if ours is None:
                # Nothing pending any more: another worker sharing RECORDS_DIR finished it, or it failed.
                raise RecorderError(ErrorCode.UPLOAD_FAILED, "the pending upload disappeared from RECORDS_DIR")
            if ours.error is not None:
                code = ours.error.code if ours.error.code in set(ErrorCode) else ErrorCode.UPLOAD_FAILED
                raise RecorderError(ErrorCode(code), ours.error.message)
            if not ours.pending:
                self.log.info("worker.upload_resumed", location=ours.location)
                return ours
            delay = min(delay * 2, self.timings.upload_retry_cap)
        return stored

    async def _drop(self) -> JobResult:
        """Cancelled or lease lost: nothing of this attempt is kept, here or in the bucket (its own keys only)."""
        if self.settings.s3_bucket or self.lease.upload.bucket:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(abort_pending, self.recording_id, self.settings, attempt=self.attempt)
        live, self._live_spent = self._live_spent, None
        if live is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(live.discard)
        self._discard_files()
        if self.lease_lost:
            self.log.info("worker.recording_dropped")
            return JobResult(self.recording_id, None)
        return await self._report(
            "cancelled", error=ErrorInfo(code=ErrorCode.CANCELLED.value, message="cancelled through the API")
        )

    async def _keep_unreported(self, why: str, *, stored: str | None = None) -> JobResult:
        """The lease could be neither confirmed nor refused (the worker is going away, or the orchestrator
        stayed silent past the report patience): keep every file where it is, upload and report nothing.

        `stored`: where rec.mp4 already is when it was stored before the lease fell in doubt."""
        await self._stop_heartbeats()
        location = stored or self.out_dir.resolve().as_uri()
        self.log.error("worker.recording_kept_unreported", why=why, location=location, kept=str(self.out_dir))
        return JobResult(self.recording_id, None, location=location)

    def _discard_files(self) -> None:
        shutil.rmtree(self.out_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.out_dir.parent.rmdir()  # only when nothing else (another attempt, a stored file) is there

    def _tidy_attempt(self, stored: StoredResult, unstored: Path | None = None) -> None:
        """After storing: remove what storage did not keep (partial captures, logs, live segments), but
        not `unstored`, a file storage could not take (rec.json), which the log said was kept."""
        kept = {unstored.resolve()} if unstored is not None and unstored.is_file() else set()
        for location in (stored.location, stored.metadata_location):
            if location and location.startswith("file://"):
                kept.add(Path(url2pathname(urlsplit(location).path)).resolve())
        if not kept:
            self._discard_files()
            return
        for entry in self.out_dir.iterdir() if self.out_dir.is_dir() else ():
            if entry.resolve() in kept:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    # -- the lease, asked from storage threads -----------------------------------------------------

    def _confirm_from_thread(self) -> bool:
        """`confirm` for the synchronous storage code: a fresh heartbeat on the job's loop, waited for here.

        Never called on the loop's own thread (it would wait for itself). When the loop is closed, has
        stopped running, or the check itself failed, the lease is unconfirmed (`undecided`): the storage
        code then aborts this attempt's own upload and leaves the files on disk."""
        loop = self._loop
        assert loop is not None
        check = self._confirm_lease()
        try:
            future = asyncio.run_coroutine_threadsafe(check, loop)
        except RuntimeError as exc:  # the loop is closed: nobody can confirm the lease any more
            check.close()
            return self._unconfirmed(exc)
        # _confirm_lease gives up after the report patience; a loop that stopped running never answers.
        wait = self.timings.report_patience + self.lease.heartbeat_interval + 2 * self.client.request_timeout
        try:
            return future.result(timeout=wait)
        except Exception as exc:  # timed out, cancelled as the loop shut down, or the heartbeat itself failed
            future.cancel()
            return self._unconfirmed(exc)

    def _unconfirmed(self, exc: BaseException) -> bool:
        self.undecided = True
        self.log.warning("worker.lease_unconfirmed", error=f"{type(exc).__name__}: {exc}")
        return False

    async def _confirm_lease(self) -> bool:
        """True once a heartbeat sent now is answered with the lease still ours; False on 410 or cancel.

        While the orchestrator cannot be reached the answer is waited for (the upload waits with it), until
        the worker is going away or the report patience is spent: then False, with `undecided` set."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timings.report_patience
        while not (self.lease_lost or self.cancelled):
            sent_at = loop.time()
            try:
                reply = await self.client.heartbeat(self._beat())
            except LeaseLost as exc:
                self._lose_lease(str(exc))
                return False
            except (Unavailable, Unauthorized) as exc:
                if self._give_up_upload.is_set() or loop.time() >= deadline:
                    self.undecided = True
                    self.log.warning("worker.lease_unconfirmed", error=str(exc))
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._give_up_upload.wait(), timeout=self.lease.heartbeat_interval)
                continue
            self._acked(sent_at)
            self.undecided = False
            self._act(reply.action)
            return not self.cancelled
        return False

    # -- talking to the orchestrator ---------------------------------------------------------------

    def _build_report(self, outcome: Outcome, **fields: Any) -> Report:
        return Report(
            lease_id=self.lease.lease_id,
            worker_id=self.worker_id,
            outcome=outcome,
            progress=self.progress,
            blocked=self.blocked,
            **fields,
        )

    async def _report(self, outcome: Outcome, **fields: Any) -> JobResult:
        # The report ends the lease; a heartbeat racing it would only be refused.
        await self._stop_heartbeats()
        report = self._build_report(outcome, **fields)
        deadline = asyncio.get_running_loop().time() + self.timings.report_patience
        reported = False
        try:
            await self.client.report(report, deadline=deadline)
            reported = True
        except LeaseLost as exc:
            self.log.warning("worker.report_refused", why=str(exc))
        except (Unavailable, Unauthorized) as exc:
            self.log.error("worker.report_undelivered", error=str(exc), outcome=outcome)
        self.log.info("worker.job_done", outcome=outcome, location=report.location, reported=reported)
        return JobResult(self.recording_id, outcome, report.location, reported, report.error)

    async def _heartbeats(self) -> None:
        interval = self.lease.heartbeat_interval
        quiet = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=interval)
            self._changed.clear()
            if self._beats_done:
                return
            sent_at = asyncio.get_running_loop().time()
            try:
                reply = await self.client.heartbeat(self._beat())
            except LeaseLost as exc:
                self._lose_lease(str(exc))
                return
            except (Unavailable, Unauthorized) as exc:
                quiet += 1
                if quiet == 1 or quiet % 10 == 0:
                    self.log.warning("worker.heartbeat_failed", error=str(exc), missed=quiet)
                continue
            quiet = 0
            self._acked(sent_at)
            self._act(reply.action)

    def _beat(self) -> Heartbeat:
        return Heartbeat(
            lease_id=self.lease.lease_id, worker_id=self.worker_id, state=self.state, progress=self.progress
        )

    def _act(self, action: str) -> None:
        if action == "cancel":
            self._cancel()
        elif action == "stop":
            self.request_stop("stop requested through the API")


def _info(error: RecorderError) -> ErrorInfo:
    return ErrorInfo(code=str(error.code), message=error.message)
