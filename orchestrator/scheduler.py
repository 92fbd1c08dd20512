"""Worker leases: the server side of `contract.protocol`.

- A worker long-polls for a lease; it is granted the oldest queued recording, unless POOL_CAPACITY
  recordings are leased already (the machine would fall behind real time), the worker is retiring, or
  the orchestrator is draining. Waiters are woken when a recording is queued or a lease ends.
- Heartbeats renew the lease, store progress and whether capture is paused, move the recording forward
  (into `waiting` while a meeting's lobby holds the recorder), and carry back what the API asked for
  (stop, cancel, pause). Reports end the recording, with what stopped it and, for a failure, a
  screenshot. A call on a lease not held gets `LeaseGone` (410).
- A report's locations are accepted only when they are the places the orchestrator computes for the
  lease (`locations.py`); any other location is refused (422 `invalid_report`) and the recording fails
  with that code, naming the worker and the location. A leaked worker token cannot point the media
  route at the store or at a foreign bucket.
- A lease not renewed for the TTL has lapsed: the worker is presumed dead. The recording goes back to
  the queue (preferring another worker) until `max_attempts` leases were granted, then fails with
  `worker_lost`, naming the worker and its last heartbeat.
- After a restart every active lease gets one more TTL before it can lapse, so workers that kept
  recording through the restart re-attach with their next heartbeat.
- A machine whose recording falls behind real time has no cores to spare: while any capture on it reports
  `behind`, no worker on that machine (`LeaseRequest.host`) gets a lease; its polls wait as on an empty
  queue. See `orchestrator.behind`; a poll without a host (an older worker) is never held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from pydantic import ValidationError

from contract.errors import ErrorCode
from contract.protocol import (
    Heartbeat,
    HeartbeatReply,
    Lease,
    LeaseRequest,
    Report,
    UploadTarget,
    attempt_segment,
    media_name,
)
from contract.spec import RecordingSpec
from orchestrator.behind import BEHIND_HOLD_INTERVALS, BehindHosts, BehindMark
from orchestrator.config import OrchestratorSettings
from orchestrator.errors import Detail, LeaseGone, OrchestratorError
from orchestrator.events import EventBus, StateChange
from orchestrator.lifecycle import Lifecycle
from orchestrator.locations import METADATA, SCREENSHOT, TIMELINE, Locations
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.states import ACTIVE, TERMINAL, State, is_forward
from orchestrator.store.base import RecordingStore
from orchestrator.store.row import Changes, RecordingRow
from orchestrator.workers import Workers

log = structlog.get_logger("orchestrator.scheduler")

# A worker silent this long after its last poll is dropped from the registry (longest poll + slack).
_MAX_POLL = 60.0
# Waiters are woken by state changes; this bounds how long a hung-up poller goes unnoticed.
_RECHECK = 2.0
# How long a requeued recording is kept from the worker that lost it.
_SHUN = 2.0
# The error code of a recording failed because its worker reported a location the orchestrator refused.
INVALID_REPORT = "invalid_report"


class Scheduler:
    def __init__(
        self,
        store: RecordingStore,
        bus: EventBus,
        registry: Workers,
        metrics: OrchestratorMetrics,
        settings: OrchestratorSettings,
        clock: Callable[[], float] = time.time,
        locations: Locations | None = None,
    ) -> None:
        self.store = store
        self.lifecycle = Lifecycle(store, bus)
        self.locations = locations or Locations(settings.records_dir)
        self.registry = registry
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.draining = False
        self.stopping_all = False
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._extended = False
        self.behind = BehindHosts(
            hold=BEHIND_HOLD_INTERVALS * settings.heartbeat_interval, forget_after=_MAX_POLL + settings.lease_ttl
        )
        bus.subscribe(self._on_state_change)

    # lifecycle

    async def start(self) -> None:
        """Watch for lapsed leases: the leader's job (see `orchestrator.leadership`). At this process's first
        start, leases get one more TTL, so workers that kept recording while nobody watched re-attach with
        their next heartbeat. Only once: a leadership that flapped would otherwise keep a dead worker's
        lease from ever lapsing."""
        if not self._extended:
            self._extended = True
            extended = await self.store.extend_leases(self.clock() + self.settings.lease_ttl)
            if extended:
                log.info("leases_extended_after_start", count=extended, grace=self.settings.lease_ttl)
        self._monitor = asyncio.create_task(self._watch_leases(), name="lease-monitor")

    async def stop(self) -> None:
        """Stop watching leases (this orchestrator is no longer the leader); leases are still granted."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None

    async def close(self) -> None:
        """End every long poll and stop watching leases."""
        self._closed.set()
        self._wake()
        await self.stop()

    def drain(self) -> None:
        """Grant no more leases; running recordings go on."""
        self.draining = True
        self._wake()

    def stop_all(self) -> None:
        """Tell every running recording to stop (gracefully: files are kept) at its next heartbeat."""
        self.stopping_all = True

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_state_change(self, change: StateChange) -> None:
        # A queued recording or a freed lease slot may let a waiting worker have a lease.
        if change.new is State.QUEUED or change.new in TERMINAL:
            if change.old is not None:  # its lease ended (reported, refused, lapsed): it no longer loads its host
                self._behind_ended(self.behind.ended(change.recording.id), "ended")
            self._wake()

    # leases

    async def lease(self, request: LeaseRequest, gone: Callable[[], bool] = lambda: False) -> Lease | None:
        """Wait up to `request.wait` seconds for a recording to lease; None when there was none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait
        worker_id = request.worker_id
        held_back = False
        while True:
            now = self.clock()
            await self.registry.polled(worker_id, now, browser_sandbox=request.browser_sandbox)
            if request.host is not None:
                self.behind.polled(worker_id, request.host, now)
            changed = self._changed
            if self._closed.is_set() or gone():
                return None
            blocker = self._blocker(request, now)
            if blocker is not None and not held_back:
                held_back = True
                self.metrics.leases_held_back.inc()
            if blocker is None and await self._may_lease(worker_id, request.capacity):
                row = await self._claim(worker_id, now)
                if row is not None:
                    if gone():
                        await self._unclaim(row)
                        return None
                    try:
                        return self._grant(row, worker_id, now)
                    except ValidationError as exc:
                        await self._refuse_stored(row, exc, now)
                        continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            timeout = min(remaining, _RECHECK)
            if blocker is not None:
                timeout = min(timeout, blocker.until - now)  # look again when the mark would lapse
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=timeout)

    def _blocker(self, request: LeaseRequest, now: float) -> BehindMark | None:
        """Why this poll gets no lease now: another recording on its machine is behind real time."""
        self._behind_ended_all(self.behind.lapse(now), "lapsed")
        if request.host is None:
            return None  # an older worker that does not say its machine
        return self.behind.blocker(request.host, request.worker_id)

    def _note_behind(self, hb: Heartbeat, recording_id: str, now: float) -> None:
        """Mark or clear the worker from a heartbeat of a live lease. Only a running capture counts: once it
        stops (finalizing, uploading) or is paused, the last progress still carries its `behind`."""
        self.behind.heard(hb.worker_id, now)
        if hb.progress.behind and hb.state == "recording" and not hb.paused:
            host = self.behind.mark(hb.worker_id, recording_id, now)
            if host is not None:
                log.warning("host_behind_leases_held", host=host, worker=hb.worker_id, recording_id=recording_id)
                self.metrics.hosts_behind.set(self.behind.count())
        else:
            self._behind_ended(self.behind.clear(hb.worker_id), "caught_up")

    def _behind_ended_all(self, hosts: list[str], why: str) -> None:
        for host in hosts:
            self._behind_ended(host, why)

    def _behind_ended(self, host: str | None, why: str) -> None:
        """A host is no longer behind: its waiting workers may lease again."""
        if host is None:
            return
        log.info("host_caught_up_leases_resumed", host=host, why=why)
        self.metrics.hosts_behind.set(self.behind.count())
        self._wake()

    async def _may_lease(self, worker_id: str, capacity: int) -> bool:
        return not self.draining and capacity > 0 and await self.registry.may_lease(worker_id)

    async def _claim(self, worker_id: str, now: float) -> RecordingRow | None:
        # A recording whose lease lapsed on this worker is left to others for a moment: another idle
        # worker is woken by the requeue at once; only if none takes it does this one get it back.
        return await self.lifecycle.claim(
            worker_id=worker_id,
            lease_id=f"lease_{uuid.uuid4().hex}",
            at=now,
            expires_at=now + self.settings.lease_ttl,
            max_active=self.settings.pool_capacity,
            shun_after=now - _SHUN,
        )

    async def _unclaim(self, row: RecordingRow) -> None:
        """The worker hung up before it got its lease: put the recording back, attempt not counted."""
        await self.lifecycle.move(
            row,
            State.QUEUED,
            at=self.clock(),
            changes=Changes(attempts=row.attempts - 1, lease_id=None, lease_expires_at=None, worker=None),
        )

    async def _refuse_stored(self, row: RecordingRow, exc: ValidationError, now: float) -> None:
        """A row stored by an older version that today's checks refuse (e.g. an upload prefix with `..`)
        fails instead of being leased."""
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        await self.lifecycle.move(
            row,
            State.FAILED,
            at=now,
            changes=Changes(
                error_code=ErrorCode.INVALID_ARGUMENT.value,
                error_message=f"the stored request is no longer accepted: {problem}; create it again",
                lease_id=None,
                lease_expires_at=None,
                worker=None,
            ),
        )

    def _grant(self, row: RecordingRow, worker_id: str, now: float) -> Lease:
        assert row.lease_id is not None
        self.registry.holds(worker_id, row.id, now)
        log.info("lease_granted", recording_id=row.id, worker=worker_id, attempt=row.attempts, lease_id=row.lease_id)
        return Lease(
            lease_id=row.lease_id,
            recording_id=row.id,
            attempt=row.attempts,
            spec=RecordingSpec.model_validate(row.spec),
            upload=UploadTarget.model_validate(row.upload),
            heartbeat_interval=self.settings.heartbeat_interval,
            lease_ttl=self.settings.lease_ttl,
        )

    # heartbeats and reports

    async def _held(self, lease_id: str, worker_id: str) -> RecordingRow:
        row = await self.store.get_by_lease(lease_id)
        if row is None or row.worker != worker_id:
            raise LeaseGone(f"lease {lease_id} is not held by worker {worker_id}: stop this recording")
        return row

    async def heartbeat(self, hb: Heartbeat) -> HeartbeatReply:
        row = await self._held(hb.lease_id, hb.worker_id)
        if row.status not in ACTIVE:
            raise LeaseGone(f"recording {row.id} is already {row.status}; lease {hb.lease_id} has ended")
        now = self.clock()
        changes = Changes(
            lease_expires_at=now + self.settings.lease_ttl,
            last_heartbeat_at=now,
            progress=hb.progress.model_dump(mode="json"),
            paused=hb.paused,
        )
        first_frame = hb.progress.first_frame_at
        if first_frame is not None and "first_frame" not in row.timestamps:
            changes["first_frame_at"] = first_frame
        target = State(hb.state) if hb.state in {s.value for s in ACTIVE} else None
        if target is not None and is_forward(row.status, target):
            updated = await self.lifecycle.move(row, target, at=now, changes=changes)
        else:
            updated = None
        if updated is None:
            updated = await self.store.update(row.id, changes, statuses=ACTIVE, lease_id=hb.lease_id)
        if updated is None:
            raise LeaseGone(f"lease {hb.lease_id} ended while the heartbeat was handled: stop this recording")
        if "first_frame_at" in changes and first_frame is not None:
            self.metrics.start_latency.observe(max(0.0, first_frame - row.created_at))
        self.registry.holds(hb.worker_id, row.id, now)
        self.metrics.observe_progress(row.id, hb.progress)
        self._note_behind(hb, row.id, now)
        return self._reply(updated)

    def _reply(self, row: RecordingRow) -> HeartbeatReply:
        draining = self.stopping_all and row.requested_action is None
        return HeartbeatReply(
            action=self._action(row), pause=row.pause_requested, stop_reason="shutdown" if draining else "api"
        )

    def _action(self, row: RecordingRow) -> str:
        if row.requested_action == "cancel":
            # Keeping the file is a graceful stop; the report then ends the recording as cancelled.
            return "stop" if row.keep_file else "cancel"
        if row.requested_action == "stop" or self.stopping_all:
            return "stop"
        return "continue"

    async def report(self, report: Report) -> HeartbeatReply:
        row = await self._held(report.lease_id, report.worker_id)
        self._behind_ended(self.behind.clear(report.worker_id), "reported")  # its capture is over
        if row.status in TERMINAL:
            return HeartbeatReply()  # the worker retried a report that was already recorded
        now = self.clock()
        location, metadata_location, screenshot_location, timeline_location = await self._checked_locations(
            row, report, now
        )
        if not report.upload_pending:
            self.metrics.count_blocked(report.blocked)
        changes = Changes(
            location=location,
            metadata_location=metadata_location,
            screenshot_location=screenshot_location,
            timeline_location=timeline_location,
            quality=report.quality,
            last_heartbeat_at=now,
        )
        if report.stop_reason is not None:
            changes["stop_reason"] = report.stop_reason
        if "progress" in report.model_fields_set:
            changes["progress"] = report.progress.model_dump(mode="json")
        if report.upload_pending:
            # The file is safe on the worker and it keeps trying to upload: still its lease.
            changes["lease_expires_at"] = now + self.settings.lease_ttl
            return await self._still_uploading(row, report, changes, now)
        outcome = State(report.outcome)
        if outcome is State.COMPLETED and row.requested_action == "cancel":
            outcome = State.CANCELLED
        if outcome is State.FAILED:
            error = report.error
            changes["error_code"] = error.code if error else ErrorCode.INTERNAL.value
            changes["error_message"] = (
                error.message if error else f"worker {report.worker_id} reported a failure without a reason"
            )
        elif outcome is State.CANCELLED and report.error is not None:
            changes["error_code"], changes["error_message"] = report.error.code, report.error.message
        changes["lease_expires_at"] = None
        changes["paused"] = changes["pause_requested"] = False  # nothing is captured any more, nor can be paused
        updated = await self.lifecycle.move(row, outcome, at=now, changes=changes, from_states=ACTIVE)
        if updated is None:
            raise LeaseGone(f"lease {report.lease_id} ended while the report was handled")
        self.registry.released(report.worker_id, row.id, now)
        log.info("recording_reported", recording_id=row.id, worker=report.worker_id, outcome=outcome)
        return HeartbeatReply()

    def _pending_upload(self, row: RecordingRow, report: Report) -> bool:
        """The worker keeps the file on its own disk until S3 takes it (upload_pending): a file:// location
        then names the worker's disk, which this orchestrator neither computes nor serves."""
        pending_failure = report.error is not None and report.error.code == ErrorCode.UPLOAD_PENDING.value
        return bool(row.upload.get("bucket")) and (report.upload_pending or pending_failure)

    async def _checked_locations(
        self, row: RecordingRow, report: Report, now: float
    ) -> tuple[str | None, str | None, str | None, str | None]:
        """The report's locations (media, metadata, screenshot, timeline) if they are the ones this orchestrator
        computes for the lease; otherwise the report is refused and the recording fails, naming the worker
        and the location. The media is rec.mp4, or rec.m4a for a recording made without video."""
        pending = self._pending_upload(row, report)
        kept: list[str | None] = []
        for field, location, name in (
            ("location", report.location, media_name(bool(row.spec.get("video", True)))),
            ("metadata_location", report.metadata_location, METADATA),
            ("screenshot_location", report.screenshot_location, SCREENSHOT),
            ("timeline_location", report.timeline_location, TIMELINE),
        ):
            if location is None:
                kept.append(None)
                continue
            if pending and location.startswith("file://"):
                problem = self._worker_disk_problem(location, row, name)
                kept.append(None)  # not stored: nothing here may serve the worker's disk
            else:
                problem = self.locations.problem(
                    location, recording_id=row.id, attempt=row.attempts, upload=row.upload, name=name
                )
                kept.append(location)
            if problem is not None:
                await self._refuse(row, report, field, location, problem, now)
        return kept[0], kept[1], kept[2], kept[3]

    def _worker_disk_problem(self, location: str, row: RecordingRow, name: str) -> str | None:
        tail = f"/{row.id}/{attempt_segment(row.attempts)}/{name}"
        if not location.startswith("file:///") or not location.endswith(tail) or "/../" in location + "/":
            return f"a file kept by the worker for a pending upload is reported as file://…{tail}"
        return None

    async def _refuse(
        self, row: RecordingRow, report: Report, field: str, location: str, problem: str, now: float
    ) -> None:
        shown = location if len(location) <= 300 else location[:297] + "..."
        message = f"worker {report.worker_id} reported {field} {shown!r}, which is refused: {problem}"
        log.warning("report_refused", recording_id=row.id, worker=report.worker_id, field=field, location=shown)
        # The lease ends with the recording: the worker's retries of this report get 410.
        failed = await self.lifecycle.move(
            row,
            State.FAILED,
            at=now,
            changes=Changes(
                error_code=INVALID_REPORT,
                error_message=message,
                lease_expires_at=None,
                lease_id=None,
                last_heartbeat_at=now,
                paused=False,
            ),
            from_states=ACTIVE,
        )
        if failed is not None:
            self.registry.released(report.worker_id, row.id, now)
        raise OrchestratorError(INVALID_REPORT, message, [Detail(field, problem)])

    async def _still_uploading(self, row: RecordingRow, report: Report, changes: Changes, now: float) -> HeartbeatReply:
        if row.status is not State.UPLOADING:
            updated = await self.lifecycle.move(row, State.UPLOADING, at=now, changes=changes)
            if updated is not None:
                return self._reply(updated)
        updated = await self.store.update(row.id, changes, statuses=ACTIVE, lease_id=report.lease_id)
        if updated is None:
            raise LeaseGone(f"lease {report.lease_id} ended while the report was handled")
        return self._reply(updated)

    # lapsed leases

    async def _watch_leases(self) -> None:
        while not self._closed.is_set():
            try:
                await self.check_leases()
                await self.registry.prune(self.clock(), _MAX_POLL + self.settings.lease_ttl)
                self._behind_ended_all(self.behind.lapse(self.clock()), "lapsed")
            except Exception:
                log.exception("lease_check_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=self.settings.lease_check_interval)

    async def check_leases(self) -> int:
        """Handle every lapsed lease once; returns how many were handled."""
        now = self.clock()
        handled = 0
        for row in await self.store.expired_leases(now):
            if await self._lapse(row, now):
                handled += 1
        return handled

    async def _lapse(self, row: RecordingRow, now: float) -> bool:
        last = row.last_heartbeat_at
        silence = (
            f"last heard from at {datetime.fromtimestamp(last, UTC).isoformat(timespec='seconds')}"
            f" ({now - last:.0f} s ago)"
            if last is not None
            else "never heard from"
        )
        why = (
            f"worker {row.worker} stopped heartbeating while {row.status}: {silence},"
            f" lease TTL {self.settings.lease_ttl:g} s"
        )
        cause = self.registry.failure_of(row.worker)
        if cause:
            why += f"; the pool reports the worker failed: {cause}"
        # The lease ends here: a late heartbeat or report from that worker gets 410.
        changes = Changes(lease_expires_at=None, lease_id=None, paused=False)
        if row.requested_action == "cancel":
            target = State.CANCELLED
        elif row.requested_action is None and row.attempts < self.settings.max_attempts:
            target = State.QUEUED
            # The next attempt reports its own stop reason, screenshot and timeline.
            changes |= Changes(
                worker=None,
                avoid_worker=row.worker,
                progress=None,
                stop_reason=None,
                screenshot_location=None,
                timeline_location=None,
            )
        else:
            target = State.FAILED
            tried = f"; gave up after {row.attempts} attempt(s)" if row.requested_action is None else ""
            changes |= Changes(error_code=ErrorCode.WORKER_LOST.value, error_message=why + tried)
        updated = await self.lifecycle.move(row, target, at=now, changes=changes, lease_expired_before=now)
        if updated is None:
            return False  # a heartbeat or report got there first
        self.metrics.lapsed.inc()
        await self.registry.lost(row.worker)
        log.warning("lease_lapsed", recording_id=row.id, worker=row.worker, attempt=row.attempts, to=target, why=why)
        return True

    # numbers for the API and the autoscaler

    async def queued(self) -> int:
        return (await self.store.count_by_status())[State.QUEUED]

    async def active(self) -> int:
        counts = await self.store.count_by_status()
        return sum(counts[s] for s in ACTIVE)
