"""Retention: the loop that purges recordings kept longer than RECORDS_RETENTION_DAYS.

A pass looks at recordings that ended (completed, failed or cancelled) more than that many days ago:

- stored in RECORDS_DIR (no bucket): their folder is deleted and the row marked `purged`, as a purge
  through the API does;
- with RECORDS_RETENTION_DELETE_ROWS, the rows themselves are deleted instead, of every such recording,
  also of those stored in S3 and those purged earlier (and their folder under RECORDS_DIR, if any).

S3 objects are never deleted here: a bucket's lifecycle rules expire them (docs/storage.md). A pass
survives errors (each recording on its own, logged), and the loop runs one pass at start, then one every
ORCHESTRATOR_HOUSEKEEPING_INTERVAL seconds, until the orchestrator stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from orchestrator.metrics import OrchestratorMetrics
from orchestrator.purge import Purger
from orchestrator.states import ENDED, TERMINAL
from orchestrator.store.base import RecordingStore
from orchestrator.store.row import RecordingRow

log = structlog.get_logger("orchestrator.housekeeping")

DAY = 86400.0
# Rows read per query: a pass over a large store never holds all of them at once.
_PAGE = 100


@dataclass
class RetentionPass:
    """What one pass did."""

    purged: int = 0
    deleted_rows: int = 0
    failed: int = 0


class Housekeeping:
    def __init__(
        self,
        store: RecordingStore,
        purger: Purger,
        metrics: OrchestratorMetrics,
        *,
        retention_days: float | None,
        delete_rows: bool,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.purger = purger
        self.metrics = metrics
        self.retention_days = retention_days
        self.delete_rows = delete_rows
        self.interval = interval
        self.clock = clock
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the loop, when a retention is set (unset: recordings are kept for ever)."""
        if self.retention_days is None:
            return
        self._closed.clear()
        self._task = asyncio.create_task(self._loop(), name="housekeeping")
        log.info("retention_started", days=self.retention_days, delete_rows=self.delete_rows, interval=self.interval)

    async def stop(self) -> None:
        self._closed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                done = await self.run_once()
                if done.purged or done.deleted_rows or done.failed:
                    log.info("retention_pass", purged=done.purged, deleted_rows=done.deleted_rows, failed=done.failed)
            except Exception:
                log.exception("retention_pass_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=self.interval)

    async def run_once(self, now: float | None = None) -> RetentionPass:
        """One pass at `now` (default: the clock): every recording that ended before now - retention."""
        done = RetentionPass()
        if self.retention_days is None:
            return done
        now = self.clock() if now is None else now
        cutoff = now - self.retention_days * DAY
        statuses = TERMINAL if self.delete_rows else ENDED
        after = 0
        while True:
            page = await self.store.ended_before(
                cutoff, statuses, local_only=not self.delete_rows, after_seq=after, limit=_PAGE
            )
            for row in page:
                await self._expire(row, now, done)
            if len(page) < _PAGE:
                return done
            after = page[-1].seq

    async def _expire(self, row: RecordingRow, now: float, done: RetentionPass) -> None:
        try:
            if self.delete_rows:
                await self.purger.remove_files(row, s3=False)
                if await self.store.delete(row.id, TERMINAL):
                    self.metrics.deleted_rows.inc()
                    done.deleted_rows += 1
                    log.info("recording_row_deleted", recording_id=row.id, by="retention")
            elif await self.purger.purge(row, "retention", at=now) is not None:
                done.purged += 1
        except Exception:
            done.failed += 1
            log.exception("retention_failed", recording_id=row.id)
