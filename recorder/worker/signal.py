"""The one value that steers a job: run, stop, cancel or lost; it only ever moves forward.

- `stop`: stop gracefully; the file is kept, stored and reported.
- `cancel`: stop, discard the files, abort an upload in progress; reported as cancelled.
- `lost`: the lease is no longer ours (410); stop at once, drop this attempt's files and uploads, report
  nothing, since another attempt may own the recording now.

A cancel or a loss is final: neither turns back into a stop. The recorder follows `control` (its stop, and
the caller's wish to pause), the storage threads wait on `dropping` (a threading event), so every layer
hears the same signal.
"""

from __future__ import annotations

import asyncio
import threading
from enum import IntEnum

import structlog

from contract.spec import StopReason
from recorder.control import CaptureControl

log = structlog.get_logger(__name__)


class Steer(IntEnum):
    RUN = 0
    STOP = 1
    CANCEL = 2
    LOST = 3


class JobSignal:
    def __init__(self, log: structlog.typing.FilteringBoundLogger = log) -> None:
        self.value = Steer.RUN
        self.why: str | None = None  # why the recording was asked to stop, the first time it was
        self.control = CaptureControl()
        self.dropping = threading.Event()
        self._log = log

    @property
    def stopping(self) -> asyncio.Event:
        return self.control.stopping

    def stop(self, why: str, reason: StopReason = "api") -> None:
        """Stop gracefully (the file is kept, stored and reported); `reason` is the recording's stop reason."""
        self._move(Steer.STOP, why, reason)

    def cancel(self) -> None:
        if self.value < Steer.CANCEL:
            self._log.info("worker.cancel_requested")
        self._move(Steer.CANCEL, "cancel", "api")

    def lose(self, why: str) -> None:
        if self.value < Steer.LOST:
            self._log.warning("worker.lease_lost", why=why)
        self._move(Steer.LOST, "lease lost", "error")

    @property
    def dropped(self) -> bool:
        """Cancelled or lost: nothing of this attempt is kept."""
        return self.value >= Steer.CANCEL

    @property
    def lost(self) -> bool:
        return self.value is Steer.LOST

    def _move(self, to: Steer, why: str, reason: StopReason) -> None:
        if to <= self.value:
            return
        if self.why is None:
            self._log.info("worker.stop_requested", why=why)
            self.why = why
        self.value = to
        self.control.stop(reason)
        if self.dropped:
            self.dropping.set()
