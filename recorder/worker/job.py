"""One leased recording, in a straight line: lease → record → finalize → store → report.

The lease is kept by a `LeaseKeeper` (heartbeats, fencing, confirming the lease before anything becomes
visible in the bucket); the job is steered by one `JobSignal` (run / stop / cancel / lost); where the files
go is one `Destination`, resolved from the lease; the files of the attempt are one `AttemptFolder`,
`RECORDS_DIR/<recording_id>/attempt-<n>/`, whose keys carry `attempt-<n>` too, so two attempts of the same
recording (a lapsed worker and its successor) never touch each other's files or objects.

What each ending keeps:
- completed (or failed with a playable file): stored and reported; the folder is tidied.
- cancelled or lost: nothing of the attempt is kept, here or in the bucket; only a cancel is reported.
- undecided (the lease could be neither confirmed nor refused): every file stays, nothing is reported.
- S3 unreachable: the orchestrator is told (the lease stays ours) and the upload is retried until it goes
  through; a worker going away reports where the files are, and its upload resumes when a worker starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import (
    METADATA_NAME,
    SCREENSHOT_NAME,
    TIMELINE_NAME,
    ErrorInfo,
    Heartbeat,
    Lease,
    Outcome,
    Progress,
    Report,
    WorkerState,
    media_name,
)
from contract.spec import StopReason
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.storage import StoredResult, destination_for
from recorder.storage.pending import PendingStore
from recorder.worker.client import OrchestratorClient
from recorder.worker.lease import LeaseKeeper
from recorder.worker.signal import JobSignal
from recorder.worker.streaming import StreamingUploads

if TYPE_CHECKING:
    from recorder.finalize.finished import Finished
    from recorder.pipeline import Recorder

log = structlog.get_logger(__name__)

NEVER_CONFIRMED = "the orchestrator never confirmed the lease"


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
    outcome: Outcome | None  # None: the lease was lost or undecided, nothing was reported
    location: str | None = None
    reported: bool = False
    error: ErrorInfo | None = None


class Job:
    def __init__(
        self,
        lease: Lease,
        *,
        worker_id: str,
        recorder: Recorder,
        client: OrchestratorClient,
        settings: RecorderSettings,
        timings: JobTimings | None = None,
    ) -> None:
        self.lease = lease
        self.worker_id = worker_id
        self.recorder = recorder
        self.settings = settings
        self.timings = timings or JobTimings()
        self.recording_id = lease.recording_id
        self.folder = AttemptFolder.under(
            settings.records_dir, lease.recording_id, lease.attempt, media_name=media_name(lease.spec.video)
        )
        # One start time for every key of this attempt, so live segments sit beside rec.mp4.
        self.destination = destination_for(settings, self.folder, lease.upload, started_at=datetime.now(UTC))
        self.state: WorkerState = "starting"
        self.progress = Progress()
        self.blocked: dict[str, int] = {}  # the egress guard's denials by reason, for the report
        self.stop_reason: StopReason = "error"  # what ended the capture, once it has ended
        self.log = log.bind(recording_id=lease.recording_id, lease_id=lease.lease_id, attempt=lease.attempt)
        self.signal = JobSignal(self.log)
        self.streaming = StreamingUploads(self.destination, self.log)
        self._pausing: asyncio.Future[None] | None = None
        self._beat_paused = False
        self._failure: RecorderError | None = None  # the recorder's own failure, when it produced nothing
        self.lease_keeper = LeaseKeeper(
            lease,
            client=client,
            signal=self.signal,
            beat=self._beat,
            on_fence=self._on_fence,
            report_patience=self.timings.report_patience,
            log=self.log,
        )

    # -- steering, from the worker -----------------------------------------------------------------

    def request_stop(self, why: str, reason: StopReason = "shutdown") -> None:
        """Stop gracefully (the file is kept, stored and reported)."""
        self.signal.stop(why, reason)

    def give_up_pending_upload(self) -> None:
        """The worker is going away: stop waiting for S3 and the orchestrator, and report where the files are."""
        self.lease_keeper.giving_up.set()

    @property
    def fenced(self) -> bool:
        return self.lease_keeper.fenced

    @property
    def undecided(self) -> bool:
        return self.lease_keeper.undecided

    @property
    def stopped_for(self) -> str | None:
        return self.signal.why

    # -- the job -----------------------------------------------------------------------------------

    async def run(self) -> JobResult:
        self.log.info("worker.job_started", url=self.lease.spec.url, duration=self.lease.spec.duration)
        self.lease_keeper.start()
        # While this job runs, idle workers sharing RECORDS_DIR leave this attempt's pending upload to it.
        owner = PendingStore(self.settings.records_dir).owner(self.recording_id, self.lease.attempt)
        try:
            with owner:
                return await self._run()
        finally:
            await self._paused()
            await self.streaming.abandon_growing()
            await self.lease_keeper.stop()

    async def _run(self) -> JobResult:
        if self.lease.spec.live_upload:
            await self.streaming.start()
        finished = await self._record_and_finalize()
        if not await self._lease_settled():
            return await self._keep_unreported(NEVER_CONFIRMED, finished)
        if self.signal.dropped:
            await self.streaming.stop()
            return await self._drop()
        await self.streaming.finish(self.lease_keeper.confirm_from_thread)
        if self.signal.dropped:
            return await self._drop()
        if self.undecided:  # the live upload's last step found the lease in doubt: upload nothing more
            return await self._keep_unreported(NEVER_CONFIRMED, finished)
        if finished is None or finished.mp4 is None or not finished.mp4.is_file():
            return await self._nothing_playable(finished)

        self._set_state("uploading")
        # rec.mp4 goes up while the quality analysis (minutes of CPU for a long recording) runs; rec.json,
        # which carries the analysis, follows once both are done. Storage leaves rec.mp4 for the analysis;
        # the folder is tidied at the end.
        analysis = asyncio.ensure_future(self.recorder.complete(finished))
        try:
            stored = await self._store_media(finished)
        except RecorderError as exc:
            await analysis
            return await self._storing_failed(exc, finished)
        except BaseException:  # the job itself is being cancelled: the analysis is not waited for
            analysis.cancel()
            raise
        await analysis
        unwanted = self.signal.dropped or self.undecided
        timeline: str | None = None
        if not (stored.pending or unwanted) and finished.sidecar is not None and finished.sidecar.is_file():
            # timeline.json before rec.json: rec.json's presence says the recording is complete.
            timeline = await self._store_timeline(finished)
            stored.metadata_location = await self._store_small(finished.sidecar)
        if self.signal.dropped:
            return await self._drop()
        if self.undecided:
            # rec.mp4 is in the bucket already (its lease was confirmed right before); rec.json is not.
            if not (self.settings.keep_local or stored.location.startswith("file:")):
                self.folder.media.unlink(missing_ok=True)  # verified in the bucket: not kept twice
            return await self._keep_unreported(NEVER_CONFIRMED, stored=stored.location)
        return await self._conclude(stored, finished, timeline)

    # -- record and finalize -----------------------------------------------------------------------

    async def _record_and_finalize(self) -> Finished | None:
        """The recording, finalized to rec.mp4; None when the recorder itself failed (the error is kept)."""
        self.folder.create()
        try:
            captured = await self.recorder.capture(
                self.lease.spec, folder=self.folder, on_progress=self._on_progress, control=self.signal.control
            )
            finished = await self.recorder.finalize(captured)
        except RecorderError as exc:
            self.log.warning("worker.recording_failed", code=str(exc.code), error=exc.message)
            self._failure = exc
            return None
        except Exception as exc:
            self.log.exception("worker.recording_crashed")
            self._failure = RecorderError(ErrorCode.INTERNAL, f"the recorder failed unexpectedly: {exc!r}")
            return None
        self.log.info(
            "worker.recorded",
            stop_reason=finished.stop_reason,
            mp4=str(finished.mp4) if finished.mp4 else None,
            error=str(finished.error) if finished.error else None,
        )
        self.progress = finished.progress
        self.stop_reason = finished.stop_reason
        self.blocked = dict(finished.blocked.by_reason) if finished.blocked is not None else {}
        return finished

    async def _lease_settled(self) -> bool:
        """Fenced during the recording: nothing goes to the bucket until the orchestrator answers. False when
        it never did."""
        if not self.fenced or self.signal.dropped:
            return True
        await self._paused()
        return await self.lease_keeper.confirm() or self.signal.dropped

    async def _nothing_playable(self, finished: Finished | None) -> JobResult:
        error = (finished.error if finished else None) or self._failure
        error = error or RecorderError(ErrorCode.INTERNAL, "the recorder produced no media and said not why")
        files = finished.files.values() if finished else ()
        kept = [p for p in files if p.is_file() and p.name not in (METADATA_NAME, SCREENSHOT_NAME, TIMELINE_NAME)]
        if finished is not None and kept:
            # Not playable, but maybe recoverable by a person: keep it, with rec.json saying what went wrong.
            await self.recorder.complete(finished)
            error = RecorderError(error.code, f"{error.message}; what was captured is kept at {kept[0]}")
        if finished is not None and finished.screenshot is not None:
            # The page when it failed, beside a rec.json that says what happened, where recordings go.
            if finished.sidecar is None:
                await self.recorder.complete(finished, analyze=False)
            screenshot = await self._store_small(finished.screenshot)
            timeline = await self._store_timeline(finished)
            metadata = await self._store_small(finished.sidecar) if finished.sidecar is not None else None
            if not kept:
                self.folder.remove_if_empty()  # stored in a bucket, nothing is left here
            return await self._report(
                "failed",
                error=_info(error),
                screenshot_location=screenshot,
                metadata_location=metadata,
                timeline_location=timeline,
            )
        if not kept:
            self.folder.discard()
        # Stopped before anything was captured (in the waiting room, say): ended as asked, not a failure.
        return await self._report("cancelled" if error.code == ErrorCode.CANCELLED else "failed", error=_info(error))

    # -- store -------------------------------------------------------------------------------------

    async def _store_media(self, finished: Finished) -> StoredResult:
        """rec.mp4 stored, or pending after the worker gave up waiting for S3; raises what storage raised."""
        growing = self.streaming.take_growing()
        try:
            stored = await asyncio.to_thread(
                self.destination.store,
                {self.folder.media.name: self.folder.media},
                cancel=self.signal.dropping,
                confirm=self.lease_keeper.confirm_from_thread,
                growing=growing,
                keep_files=True,
            )
        except (RecorderError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a full disk, a damaged state file: reported, and the files stay
            self.log.exception("worker.storing_crashed")
            raise RecorderError(
                ErrorCode.INTERNAL, f"storing failed unexpectedly ({exc!r}); the files stay at {self.folder.root}"
            ) from exc
        if stored.pending:
            stored = await self._wait_for_s3(stored, finished)
        return stored

    async def _wait_for_s3(self, stored: StoredResult, finished: Finished) -> StoredResult:
        """S3 was unreachable: tell the orchestrator (the lease stays ours), then retry until it goes through."""
        self.log.warning("worker.upload_pending", reason=stored.reason, location=stored.location)
        await self.lease_keeper.report_interim(
            self._build_report(
                "completed",
                location=stored.location,
                metadata_location=stored.metadata_location,
                quality=finished.quality,
                upload_pending=True,
            )
        )
        delay = self.timings.upload_retry_first
        giving_up = self.lease_keeper.giving_up
        while not self.signal.dropped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(giving_up.wait(), timeout=delay)
            if giving_up.is_set() or self.signal.dropped:
                return stored
            ours = await asyncio.to_thread(
                self.destination.resume, self.lease_keeper.confirm_from_thread, keep_files=True
            )
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

    async def _store_small(self, path: Path) -> str | None:
        """rec.json or failure.png; None (logged, the file stays on disk) when it could not be stored."""
        try:
            return await asyncio.to_thread(
                self.destination.store_small, path, confirm=self.lease_keeper.confirm_from_thread
            )
        except RecorderError as exc:
            self.log.warning("worker.file_not_stored", name=path.name, error=exc.message, kept=str(path))
            return None

    async def _store_timeline(self, finished: Finished) -> str | None:
        """timeline.json where rec.json goes; None when there is none or it could not be stored."""
        path = finished.timeline
        if path is None or not path.is_file():
            return None
        return await self._store_small(path)

    async def _storing_failed(self, exc: RecorderError, finished: Finished) -> JobResult:
        if self.signal.dropped:
            return await self._drop()
        if exc.code == ErrorCode.LEASE_LOST:
            return await self._keep_unreported(exc.message, finished)
        return await self._report("failed", error=_info(exc), quality=finished.quality)

    # -- report ------------------------------------------------------------------------------------

    async def _conclude(self, stored: StoredResult, finished: Finished, timeline: str | None = None) -> JobResult:
        if stored.pending:
            # Giving up on S3 for now (the worker is shutting down): say where the recording is.
            reason = stored.reason or "S3 could not be reached"
            message = f"{reason}; rec.mp4 is kept at {stored.location} and its upload resumes when a worker starts"
            return await self._report(
                "failed",
                location=stored.location,
                metadata_location=stored.metadata_location,
                quality=finished.quality,
                error=ErrorInfo(code=ErrorCode.UPLOAD_PENDING.value, message=message),
            )
        screenshot = await self._store_small(finished.screenshot) if finished.screenshot is not None else None
        if not self.settings.keep_local:
            # What storage did not keep (partial captures, logs, rec.mp4 once in the bucket); a rec.json or
            # failure.png it could not store stays, as the log said.
            stored_at = (stored.location, stored.metadata_location, screenshot, timeline)
            kept = [_local_path(loc) for loc in stored_at if loc]
            if stored.metadata_location is None and finished.sidecar is not None:
                kept.append(finished.sidecar)
            if timeline is None and finished.timeline is not None:
                kept.append(finished.timeline)
            if screenshot is None and finished.screenshot is not None:
                kept.append(finished.screenshot)
            self.folder.keep_only(p for p in kept if p is not None and p.is_file())
        error = finished.error
        return await self._report(
            "failed" if error is not None else "completed",
            location=stored.location,
            metadata_location=stored.metadata_location,
            screenshot_location=screenshot,
            timeline_location=timeline,
            quality=finished.quality,
            error=_info(error) if error is not None else None,
        )

    async def _drop(self) -> JobResult:
        """Cancelled or lease lost: nothing of this attempt is kept, here or in the bucket (its own keys only)."""
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.destination.abort)
        await self.streaming.discard()
        self.folder.discard()
        if self.signal.lost:
            self.log.info("worker.recording_dropped")
            return JobResult(self.recording_id, None)
        return await self._report(
            "cancelled", error=ErrorInfo(code=ErrorCode.CANCELLED.value, message="cancelled through the API")
        )

    async def _keep_unreported(
        self, why: str, finished: Finished | None = None, *, stored: str | None = None
    ) -> JobResult:
        """The lease could be neither confirmed nor refused: keep every file where it is, with rec.json saying
        what they are, upload and report nothing. `stored`: where rec.mp4 already is when it was stored before
        the lease fell in doubt."""
        await self.lease_keeper.stop()
        if finished is not None and finished.sidecar is None:
            await self.recorder.complete(finished, analyze=False)
        location = stored or self.folder.root.resolve().as_uri()
        self.log.error("worker.recording_kept_unreported", why=why, location=location, kept=str(self.folder.root))
        return JobResult(self.recording_id, None, location=location)

    def _build_report(self, outcome: Outcome, **fields: Any) -> Report:
        return Report(
            lease_id=self.lease.lease_id,
            worker_id=self.worker_id,
            outcome=outcome,
            progress=self.progress,
            blocked=self.blocked,
            stop_reason=self.stop_reason,
            **fields,
        )

    async def _report(self, outcome: Outcome, **fields: Any) -> JobResult:
        report = self._build_report(outcome, **fields)
        reported = await self.lease_keeper.report(report)
        self.log.info("worker.job_done", outcome=outcome, location=report.location, reported=reported)
        return JobResult(self.recording_id, outcome, report.location, reported, report.error)

    # -- what heartbeats carry ---------------------------------------------------------------------

    def _on_progress(self, state: WorkerState, progress: Progress) -> None:
        self.progress = progress
        paused = self.signal.control.paused
        if paused != self._beat_paused:  # a pause or resume is told at once, not at the next beat
            self._beat_paused = paused
            self.lease_keeper.changed()
        self._set_state(state)

    def _set_state(self, state: WorkerState) -> None:
        if state != self.state:
            self.state = state
            self.lease_keeper.changed()

    def _beat(self) -> Heartbeat:
        return Heartbeat(
            lease_id=self.lease.lease_id,
            worker_id=self.worker_id,
            state=self.state,
            progress=self.progress,
            paused=self.signal.control.paused,
        )

    # -- fencing's pause of the uploads while recording --------------------------------------------

    def _on_fence(self) -> None:
        # Not one more segment or part while FFmpeg winds down: the bucket waits for the orchestrator's answer.
        self._pausing = asyncio.ensure_future(self.streaming.pause())

    async def _paused(self) -> None:
        """The uploads while recording are paused (if fencing began pausing them, that is finished too)."""
        pausing, self._pausing = self._pausing, None
        if pausing is not None:
            await pausing
        if self.fenced:
            await self.streaming.pause()


def _info(error: RecorderError) -> ErrorInfo:
    return ErrorInfo(code=str(error.code), message=error.message)


def _local_path(location: str) -> Path | None:
    if not location.startswith("file://"):
        return None
    return Path(url2pathname(urlsplit(location).path))
