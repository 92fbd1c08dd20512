"""The warm-pool loop: look at the pool, ask the policy, act through the backend.

Every `interval` seconds, and at once when a recording is queued or ends, it joins the backend's view
(which workers exist) with the scheduler's registry (which of them poll for work, which hold leases)
into a `PoolSnapshot`, runs the pure policy, and applies the decision. With replicas, it runs on the
leader alone and the registry is the store's (`orchestrator.workers.SharedWorkerRegistry`): workers
that poll the other replicas count, and a retiring mark stops every replica's claims.

Retiring is two-phase so a worker is never taken away from a recording: the worker is first marked
retiring in the registry (no lease is granted to it from then on); only on a later tick, if it is still
idle, does the backend remove it. A lease granted in the moment between the snapshot and the mark
simply delays the removal until that recording is over.

Failed workers are not removed here: each backend keeps them listed for a while, with their reason, so
operators can see what happened. They no longer count, so the policy replaces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable

import structlog

from orchestrator.pool.backend import PoolBackend, WorkerInfo
from orchestrator.pool.policy import Decision, PoolConfig, PoolSnapshot, WorkerView, decide
from orchestrator.pool.predictive import PredictiveSpare
from orchestrator.workers import Workers, WorkerSnapshot

log = structlog.get_logger("orchestrator.pool")


class Autoscaler:
    def __init__(
        self,
        backend: PoolBackend,
        registry: Workers,
        queued: Callable[[], Awaitable[int]],
        config: PoolConfig,
        *,
        interval: float = 1.0,
        paused: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        predictive: PredictiveSpare | None = None,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.queued = queued
        self.config = config
        self.interval = interval
        # True while the orchestrator drains for shutdown: no workers are started for a queue it will not serve.
        self.paused = paused
        self.clock = clock
        # With a predictive spare, config.spare is its floor and each tick sizes it from demand.
        self.predictive = predictive
        self.last: Decision | None = None
        self._retiring: set[str] = set()  # marked in the registry, not yet removed by the backend
        self._reported_failures: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle (owned by the orchestrator) ------------------------------------------------------

    async def start(self) -> None:
        await self.backend.start()
        # A worker a previous leader marked retiring (phase one) but had not removed yet: finish it here,
        # or it would never lease again and never go.
        self._retiring |= {w.worker_id for w in await self.registry.workers() if w.retiring}
        self._task = asyncio.create_task(self._run(), name="autoscaler")
        log.info(
            "pool.started",
            backend=self.backend.name,
            min=self.config.min,
            max=self.config.max,
            spare=self.config.spare,
            capacity=self.config.capacity,
            idle_cooldown=self.config.idle_cooldown,
        )

    async def stop(self) -> None:
        """Stop scaling, then close the backend (a local backend stops its workers)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.backend.close()

    def wake(self, change: object = None) -> None:
        """Run a tick now (a recording was queued or ended); usable as an event-bus listener."""
        if self.predictive is not None and getattr(change, "old", True) is None:
            self.predictive.arrived(getattr(change, "at", self.clock()))  # a new recording: an arrival
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("pool.tick_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)

    # -- one round ---------------------------------------------------------------------------------

    async def tick(self) -> Decision | None:
        infos = await self.backend.list()
        await self._finish_retiring(infos)
        if self.paused():
            return None
        snapshot = self.snapshot(infos, await self.registry.workers(), await self.queued())
        decision = decide(snapshot, self._config(snapshot.now))
        await self._apply(decision, snapshot)
        self.last = decision
        return decision

    def _config(self, now: float) -> PoolConfig:
        if self.predictive is None:
            return self.config
        spare = max(self.config.spare, self.predictive.spare(now))
        return dataclasses.replace(self.config, spare=spare)

    def snapshot(self, infos: list[WorkerInfo], seen: list[WorkerSnapshot], queued: int) -> PoolSnapshot:
        """Join the backend's workers with the registry; workers that are going do not count."""
        by_id = {w.worker_id: w for w in seen}
        views: list[WorkerView] = []
        for info in infos:
            if info.phase == "gone" or info.name in self._retiring:
                continue
            entry = by_id.get(info.name)
            if entry is not None and entry.retiring:
                continue
            if info.phase == "failed":
                status = "failed"
                self.registry.note_failure(info.name, info.reason or "failed")
            elif entry is None:
                status = "starting"  # not polling yet: still warming up
            else:
                status = entry.state
            views.append(
                WorkerView(
                    name=info.name,
                    status=status,  # type: ignore[arg-type]
                    release=info.release,
                    created_at=info.created_at,
                    idle_since=entry.idle_since if entry is not None else None,
                    reason=info.reason,
                )
            )
        return PoolSnapshot(now=self.clock(), queued=queued, workers=tuple(views), release=self._release())

    def _release(self) -> str:
        try:
            return str(getattr(self.backend, "release", ""))
        except RuntimeError:  # a backend that has not started yet
            return ""

    async def _apply(self, decision: Decision, snapshot: PoolSnapshot) -> None:
        # Failed workers stay listed by their backend (their reason and logs are for operators); a worker
        # that never showed up may still be running (a pod stuck in Pending, a hung process) and goes.
        stuck = {w.name for w in snapshot.workers if w.status == "starting"}
        for name in decision.replace:
            if name not in self._reported_failures:
                self._reported_failures.add(name)
                log.warning("pool.worker_replaced", worker_id=name, reason=decision.reasons.get(name))
                if name in stuck:
                    await self._remove_stuck(name)
        live = {w.name for w in snapshot.workers}
        self._reported_failures &= live
        for name in decision.retire:
            # Phase one: no more leases for it. Phase two (`_finish_retiring`) removes it once idle.
            self._retiring.add(name)
            if not await self.registry.retire(name):
                log.info("pool.retire_unknown_worker", worker_id=name)
            log.info("pool.retiring", worker_id=name, reason=decision.reasons.get(name))
        if decision.create:
            names = await self.backend.create(decision.create)
            log.info("pool.created", workers=names, desired=decision.desired, queued=snapshot.queued)

    async def _remove_stuck(self, name: str) -> None:
        try:
            await self.backend.retire(name)
        except Exception:
            log.exception("pool.remove_stuck_failed", worker_id=name)

    async def _finish_retiring(self, infos: list[WorkerInfo]) -> None:
        listed = {i.name: i for i in infos}
        busy = {w.worker_id for w in await self.registry.workers() if w.state == "busy"}
        for name in sorted(self._retiring):
            info = listed.get(name)
            if info is None or info.phase in ("gone", "failed"):
                self._retiring.discard(name)
                await self.registry.forget(name)
                continue
            if name in busy:
                continue  # granted a lease just before it was marked: removed after that recording
            removed = await self.backend.retire(name)
            self._retiring.discard(name)
            if removed:
                # Its registry entry stays marked retiring (a last poll in flight gets no lease) until the
                # registry prunes it for silence.
                log.info("pool.retired", worker_id=name)
            else:
                # The backend saw it change under us. Forgetting the entry lifts the retiring mark: the
                # worker registers afresh with its next poll and is decided again with fresh facts.
                await self.registry.forget(name)
                log.info("pool.retire_skipped", worker_id=name)
