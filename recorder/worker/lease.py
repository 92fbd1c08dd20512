"""Keeping a lease: heartbeats, fencing, confirming the lease before an upload completes, the final report.

Heartbeats go every `lease.heartbeat_interval` seconds (and at once when the state changes), carrying the
state and the capture's progress. The orchestrator's reply steers the job through its `JobSignal`: `stop`,
`cancel`, or 410 (lost). A heartbeat that does not get through is simply tried again at the next beat: the
recording goes on, so an orchestrator restart shorter than the lease TTL loses nothing. The report is
retried until it is acknowledged.

Fencing: the orchestrator hands the recording to another worker once a lease has gone `lease_ttl` seconds
without a heartbeat. So a worker whose heartbeats have not got through for that long (counted from the
sending of the last one that did) is *fenced*: `on_fence` stops the capture gracefully and pauses uploads,
and nothing is uploaded while it cannot tell whether the lease is still its own. `confirm()` keeps asking;
if the orchestrator answers that the lease is still held (it restarted and extended leases), the recording
is stored and reported as usual; a 410 means another attempt owns it. A lease neither confirmed nor refused
(the worker is going away, or the orchestrator stayed silent past the report patience) is *undecided*.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from contract.protocol import Heartbeat, Lease, Report
from contract.spec import StopReason
from recorder.worker.client import LeaseLost, OrchestratorClient, Unauthorized, Unavailable
from recorder.worker.signal import JobSignal


class LeaseKeeper:
    def __init__(
        self,
        lease: Lease,
        *,
        client: OrchestratorClient,
        signal: JobSignal,
        beat: Callable[[], Heartbeat],
        on_fence: Callable[[], None],
        report_patience: float,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.lease = lease
        self.client = client
        self.signal = signal
        self.report_patience = report_patience
        self.fenced = False
        self.undecided = False
        self.giving_up = asyncio.Event()  # the worker is going away: stop waiting for the orchestrator
        self._beat = beat
        self._on_fence = on_fence
        self._log = log
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._done = False
        self._fence_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- heartbeats --------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm_fence()  # the lease was granted just now
        self._task = asyncio.create_task(self._heartbeats(), name=f"heartbeat-{self.lease.recording_id}")

    def changed(self) -> None:
        """The state changed: send a heartbeat now rather than at the next beat."""
        self._changed.set()

    async def stop(self) -> None:
        """End the heartbeats, letting one in flight finish (a request cut off mid-way helps nobody)."""
        task, self._task = self._task, None
        self._done = True
        self._disarm_fence()
        if task is None:
            return
        self._changed.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=self.client.request_timeout + 1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _heartbeats(self) -> None:
        quiet = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self.lease.heartbeat_interval)
            self._changed.clear()
            if self._done:
                return
            sent_at = asyncio.get_running_loop().time()
            try:
                reply = await self.client.heartbeat(self._beat())
            except LeaseLost as exc:
                self.signal.lose(str(exc))
                return
            except (Unavailable, Unauthorized) as exc:
                quiet += 1
                if quiet == 1 or quiet % 10 == 0:
                    self._log.warning("worker.heartbeat_failed", error=str(exc), missed=quiet)
                continue
            quiet = 0
            self._acked(sent_at)
            self.act(reply.action, pause=reply.pause, reason=reply.stop_reason)

    def act(self, action: str, *, pause: bool | None = None, reason: StopReason = "api") -> None:
        """Follow the orchestrator's answer; `pause` (the caller's wish) comes with heartbeat replies only."""
        if action == "cancel":
            self.signal.cancel()
        elif action == "stop":
            self.signal.stop("stop requested by the orchestrator", reason)
        elif pause is not None:
            self.signal.control.want_paused(pause)

    # -- fencing -----------------------------------------------------------------------------------

    def _arm_fence(self, since: float | None = None) -> None:
        """(Re)start the count of one lease TTL from `since` (loop time; default now): the last moment the
        lease was known to be ours."""
        self._disarm_fence()
        if not self._done:
            loop = asyncio.get_running_loop()
            start = loop.time() if since is None else since
            self._fence_timer = loop.call_at(start + self.lease.lease_ttl, self._fence)

    def _disarm_fence(self) -> None:
        if self._fence_timer is not None:
            self._fence_timer.cancel()
            self._fence_timer = None

    def _fence(self) -> None:
        self._fence_timer = None
        if self.signal.dropped or self._done or self.fenced:
            return
        self.fenced = True
        self._log.warning("worker.fenced", silent_for=self.lease.lease_ttl)
        self.signal.stop("lease unconfirmed", "shutdown")
        self._on_fence()

    def _acked(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` got through: the lease is ours; the count towards fencing starts
        again from when it was sent (the orchestrator extended the lease somewhere between send and reply,
        so counting from the reply would fence later than the lease can lapse)."""
        if self.fenced:
            self._log.info("worker.lease_confirmed_again")
            self.fenced = False
        self._arm_fence(sent_at)

    # -- confirming --------------------------------------------------------------------------------

    async def confirm(self) -> bool:
        """True once a heartbeat sent now is answered with the lease still ours; False on 410 or cancel.

        While the orchestrator cannot be reached the answer is waited for (the upload waits with it), until
        the worker is going away or the report patience is spent: then False, with `undecided` set."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.report_patience
        while not self.signal.dropped:
            sent_at = loop.time()
            try:
                reply = await self.client.heartbeat(self._beat())
            except LeaseLost as exc:
                self.signal.lose(str(exc))
                return False
            except (Unavailable, Unauthorized) as exc:
                if self.giving_up.is_set() or loop.time() >= deadline:
                    return self._unconfirmed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.giving_up.wait(), timeout=self.lease.heartbeat_interval)
                continue
            self._acked(sent_at)
            self.undecided = False
            self.act(reply.action)
            return not self.signal.dropped
        return False

    def confirm_from_thread(self) -> bool:
        """`confirm` for the synchronous storage code: a fresh heartbeat on the job's loop, waited for here.

        Never called on the loop's own thread (it would wait for itself). When the loop is closed, has
        stopped running, or the check itself failed, the lease is undecided: the storage code then aborts
        this attempt's own upload and leaves the files on disk."""
        loop = self._loop
        assert loop is not None
        check = self.confirm()
        try:
            future = asyncio.run_coroutine_threadsafe(check, loop)
        except RuntimeError as exc:  # the loop is closed: nobody can confirm the lease any more
            check.close()
            return self._unconfirmed(exc)
        # confirm gives up after the report patience; a loop that stopped running never answers.
        wait = self.report_patience + self.lease.heartbeat_interval + 2 * self.client.request_timeout
        try:
            return future.result(timeout=wait)
        except Exception as exc:  # timed out, cancelled as the loop shut down, or the heartbeat itself failed
            future.cancel()
            return self._unconfirmed(exc)

    def _unconfirmed(self, exc: BaseException) -> bool:
        self.undecided = True
        self._log.warning("worker.lease_unconfirmed", error=f"{type(exc).__name__}: {exc}")
        return False

    # -- reports -----------------------------------------------------------------------------------

    async def report(self, report: Report) -> bool:
        """The final report, retried for the report patience; True once the orchestrator took it."""
        await self.stop()  # the report ends the lease; a heartbeat racing it would only be refused
        deadline = asyncio.get_running_loop().time() + self.report_patience
        try:
            await self.client.report(report, deadline=deadline)
            return True
        except LeaseLost as exc:
            self._log.warning("worker.report_refused", why=str(exc))
        except (Unavailable, Unauthorized) as exc:
            self._log.error("worker.report_undelivered", error=str(exc), outcome=report.outcome)
        return False

    async def report_interim(self, report: Report) -> None:
        """A report that keeps the lease (an upload is pending): tried for one lease TTL, as heartbeats keep
        the lease meanwhile anyway."""
        try:
            reply = await self.client.report(report, deadline=asyncio.get_running_loop().time() + self.lease.lease_ttl)
            self.act(reply.action)
        except LeaseLost as exc:
            self.signal.lose(str(exc))
        except (Unavailable, Unauthorized) as exc:
            self._log.warning("worker.report_failed", error=str(exc))
