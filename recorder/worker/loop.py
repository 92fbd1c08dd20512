"""The worker: a warm recorder in a loop of lease, record, store, report.

- The recorder's display, audio server and browser are started once and kept warm; every recording
  still gets a fresh browser context and profile from the recorder.
- Between recordings it long-polls for a lease and, every `resume_interval`, finishes uploads that S3
  could not take earlier (`resume_pending`, in a thread, while the poll goes on).
- `request_shutdown()` (SIGTERM): no more leases; a recording in progress may go on for `grace`
  seconds, then it is stopped gracefully and still stored and reported. A second request stops it now.
- `single_use`: exit after one recording, for pods that must not be reused.
- An orchestrator that cannot be reached is waited for (its restart loses nothing), but an idle
  worker gives up after `give_up_after` seconds, so workers of an orchestrator that is gone for good
  do not linger.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from contract.errors import RecorderError
from contract.protocol import Lease, LeaseRequest
from recorder.config import RecorderSettings
from recorder.storage import resume_pending
from recorder.storage.pending import PendingStore
from recorder.worker.client import OrchestratorClient, Unauthorized, Unavailable
from recorder.worker.job import Job, JobResult, JobTimings

if TYPE_CHECKING:
    from recorder.pipeline import Recorder

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_UNAUTHORIZED = 2
EXIT_ORCHESTRATOR_GONE = 3


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str
    single_use: bool = False
    grace: float = 30.0
    lease_wait: float = 20.0
    resume_interval: float = 60.0
    give_up_after: float | None = 600.0
    timings: JobTimings = field(default_factory=JobTimings)


class Worker:
    def __init__(
        self,
        settings: RecorderSettings,
        recorder: Recorder,
        client: OrchestratorClient,
        options: WorkerOptions,
    ) -> None:
        self.settings = settings
        self.recorder = recorder
        self.client = client
        self.options = options
        self.worker_id = options.worker_id
        self.results: list[JobResult] = []
        self.current: Job | None = None
        self._shutdown = asyncio.Event()
        self._shutdown_count = 0
        self._grace_timer: asyncio.Task[None] | None = None
        self._resume: asyncio.Task[None] | None = None
        self.log = log.bind(worker_id=options.worker_id)

    # -- control -----------------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Take no more leases; let the current recording go on for the grace period, then stop it."""
        self._shutdown_count += 1
        self._shutdown.set()
        job = self.current
        if self._shutdown_count > 1:
            self.log.info("worker.shutdown_now")
            if job is not None:
                job.request_stop("second shutdown request", "shutdown")
                job.give_up_pending_upload()
            return
        self.log.info("worker.shutdown_requested", grace=self.options.grace, recording=job is not None)
        if job is not None:
            self._arm_grace(job)

    def _arm_grace(self, job: Job) -> None:
        if self._grace_timer is None:
            self._grace_timer = asyncio.create_task(self._stop_after_grace(job))

    async def _stop_after_grace(self, job: Job) -> None:
        await asyncio.sleep(self.options.grace)
        job.request_stop(f"worker shutting down; grace of {self.options.grace:g} s is over", "shutdown")
        # If the upload is stuck waiting for S3, give it the same grace again, then report where the files are.
        await asyncio.sleep(self.options.grace)
        job.give_up_pending_upload()

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> int:
        self.log.info("worker.starting", orchestrator=self.client.base_url, single_use=self.options.single_use)
        from recorder.calibrate import ensure_calibrated  # it records with a recorder of its own

        try:
            await ensure_calibrated(self.settings)  # before the first lease; never raises
            await self.recorder.start()
        except RecorderError as exc:
            self.log.error("worker.start_failed", code=str(exc.code), error=exc.message)
            await self.client.close()
            return EXIT_START_FAILED
        try:
            return await self._loop()
        finally:
            if self._resume is not None:
                self._resume.cancel()  # the thread finishes its current step; the state on disk stays valid
                with contextlib.suppress(asyncio.CancelledError):
                    await self._resume
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            await self.recorder.close()
            await self.client.close()
            self.log.info("worker.stopped", recordings=len(self.results))

    async def _loop(self) -> int:
        loop = asyncio.get_running_loop()
        self._start_resume()
        last_contact = loop.time()
        last_resume = loop.time()
        while not self._shutdown.is_set():
            try:
                lease = await self._poll(last_contact)
            except Unauthorized as exc:
                self.log.error("worker.unauthorized", error=str(exc))
                return EXIT_UNAUTHORIZED
            except Unavailable as exc:
                self.log.error("worker.orchestrator_gone", error=str(exc), gave_up_after=self.options.give_up_after)
                return EXIT_ORCHESTRATOR_GONE
            last_contact = loop.time()
            if lease is None:
                if loop.time() - last_resume >= self.options.resume_interval:
                    last_resume = loop.time()
                    self._start_resume()
                continue
            result = await self._run_job(lease)
            self.results.append(result)
            if self.options.single_use:
                self.log.info("worker.single_use_done")
                break
        return EXIT_OK

    async def _poll(self, last_contact: float) -> Lease | None:
        """Long-poll for a lease, giving up the poll (not a granted lease) when shutdown is requested."""
        deadline = last_contact + self.options.give_up_after if self.options.give_up_after else None
        request = LeaseRequest(
            worker_id=self.worker_id,
            wait=self.options.lease_wait,
            capacity=1,
            browser_sandbox=self.recorder.browser_sandboxed,  # shown in /v1/pool
            host=self.settings.host,  # held back while a recording on this machine is behind real time
        )
        poll = asyncio.create_task(self.client.lease(request, deadline=deadline))
        stop = asyncio.create_task(self._shutdown.wait())
        try:
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if poll.done():
            return poll.result()  # a lease granted as shutdown came is still ours: run it
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError, Unavailable):
            await poll
        return None

    async def _run_job(self, lease: Lease) -> JobResult:
        job = Job(
            lease,
            worker_id=self.worker_id,
            recorder=self.recorder,
            client=self.client,
            settings=self.settings,
            timings=self.options.timings,
        )
        self.current = job
        if self._shutdown.is_set():
            self._arm_grace(job)  # a lease granted just as shutdown came: it gets the grace period too
        try:
            return await job.run()
        finally:
            self.current = None
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None

    def _start_resume(self) -> None:
        if self._resume is not None and not self._resume.done():
            return
        if not PendingStore(self.settings.records_dir).pending():
            return
        self._resume = asyncio.create_task(self._resume_pending())

    async def _resume_pending(self) -> None:
        try:
            results = await asyncio.to_thread(resume_pending, self.settings)
        except Exception:
            self.log.exception("worker.resume_failed")
            return
        for r in results:
            self.log.info("worker.upload_resumed", recording_id=r.recording_id, pending=r.pending, location=r.location)
