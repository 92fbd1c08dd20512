"""The composition root: builds the store, scheduler, webhooks, metrics, retention and pool from settings, and
starts, drains and stops them. HTTP is `orchestrator.api` (`api.app` builds the application,
`api.server` serves it).

Every orchestrator serves the API and the worker protocol. The loops there must be only one of (lease
expiry, the autoscaler, webhook delivery, retention) run on the leader alone (`orchestrator.leadership`):
they start when this orchestrator is elected and stop when it is deposed or shuts down.

Draining (see `api.server` for the signals): stop granting leases, let running recordings go on for a
grace period, then tell them to stop (files kept and uploaded) and wait for their reports. Whatever is
still running then is in the store: a restarted orchestrator takes it up where it was.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

import structlog
from aiohttp import web

from orchestrator.api.app import create_app
from orchestrator.api.views import to_recording
from orchestrator.config import OrchestratorSettings
from orchestrator.events import EventBus
from orchestrator.housekeeping import Housekeeping
from orchestrator.leadership import Leadership, leadership_for
from orchestrator.locations import Locations
from orchestrator.media import MediaLocator
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.pool.backend import PoolBackend
from orchestrator.purge import Purger
from orchestrator.replay.signing import ViewSigner
from orchestrator.scheduler import Scheduler
from orchestrator.service import RecordingService
from orchestrator.store.base import RecordingStore
from orchestrator.store.factory import open_store
from orchestrator.url_policy import Resolve, UrlPolicy, system_resolve
from orchestrator.webhooks.compose import WebhookComposer
from orchestrator.webhooks.delivery import WebhookDelivery, warn_if_unsigned
from orchestrator.workers import worker_registry

log = structlog.get_logger("orchestrator")


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# Builds the warm-pool autoscaler once the orchestrator exists (it reads the registry and the store).
PoolFactory = Callable[["Orchestrator"], Startable]


class Orchestrator:
    def __init__(
        self,
        settings: OrchestratorSettings,
        *,
        store: RecordingStore | None = None,
        backend: PoolBackend | None = None,
        autoscaler: PoolFactory | None = None,
        resolve: Resolve = system_resolve,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._default_store = store is None
        self.store = store or open_store(settings)
        self.bus = EventBus()
        self.metrics = OrchestratorMetrics(pool=settings.pool_name, region=settings.region)
        self.registry = worker_registry(self.store, shared=settings.replicated)
        self.policy = UrlPolicy(settings.url_allowlist, resolve)
        self.render = partial(to_recording, max_attempts=settings.max_attempts)
        self.locations = Locations(settings.records_dir)
        self.purger = Purger(self.store, self.bus, self.locations, self.metrics, settings.s3_endpoint_url, clock)
        self.service = RecordingService(self.store, self.bus, self.policy, settings, clock, purger=self.purger)
        self.housekeeping = Housekeeping(
            self.store,
            self.purger,
            self.metrics,
            retention_days=settings.records_retention_days,
            delete_rows=settings.records_retention_delete_rows,
            interval=settings.housekeeping_interval,
            clock=clock,
        )
        self.scheduler = Scheduler(
            self.store, self.bus, self.registry, self.metrics, settings, clock, locations=self.locations
        )
        # Webhook events are written with their state change (the outbox); the leader's loop sends them.
        self.bus.compose(WebhookComposer(self.render, settings.webhook_horizon))
        self.webhooks = WebhookDelivery.from_settings(settings, self.store, self.policy, self.metrics)
        self.media = MediaLocator(self.locations, settings.s3_endpoint_url, settings.media_url_ttl)
        self.signer = ViewSigner(settings.view_secret, settings.view_link_ttl, clock)
        self.bus.subscribe(self.metrics.on_state_change)
        self.bus.subscribe(self.webhooks.wake)
        self.backend = backend
        self.autoscaler = autoscaler(self) if autoscaler is not None else None
        self.leadership: Leadership = leadership_for(settings.db_url, self.metrics.leader)

    def singletons(self) -> list[Startable]:
        """The leader's loops, in the order they start (they stop in reverse)."""
        loops: list[Startable] = [self.scheduler, self.housekeeping, self.webhooks]
        if self.autoscaler is not None:
            loops.append(self.autoscaler)
        return loops

    async def _elected(self) -> None:
        for loop in self.singletons():
            await loop.start()
        log.info("leading", loops=[type(loop).__name__ for loop in self.singletons()])

    async def _deposed(self) -> None:
        # Every loop is stopped, whatever another's stop raised: a loop left running on a deposed leader
        # would run beside the new leader's.
        for loop in reversed(self.singletons()):
            try:
                await loop.stop()
            except Exception:
                log.exception("loop_stop_failed", loop=type(loop).__name__)
        log.info("not_leading")

    async def start(self) -> None:
        if self._default_store and self.settings.db is None:
            move_legacy_store(self.settings.legacy_db_path, self.settings.db_path)
        await self.store.open()
        warn_if_unsigned(self.settings)
        await self.leadership.start(self._elected, self._deposed)
        log.info("orchestrator_started", db=self.settings.db_label, capacity=self.settings.pool_capacity)

    async def drain(self, grace: float, stop_wait: float, skip: asyncio.Event | None = None) -> None:
        """Take no new work; let active recordings finish for `grace` s, then ask them to stop.

        A replica (PostgreSQL) neither waits for nor stops recordings: they are the fleet's, and go on
        through the other replicas. It grants nothing more, hands over the leader's loops and returns."""
        self.scheduler.drain()
        if self.settings.replicated:
            await self.leadership.stop()
            log.info("replica_draining", active_elsewhere=await self.scheduler.active())
            return
        active = await self.scheduler.active()
        log.info("draining", active=active, grace=grace)
        if active and not await self._until_idle(grace, skip):
            self.scheduler.stop_all()
            log.info("stopping_active_recordings", active=await self.scheduler.active(), wait=stop_wait)
            if not await self._until_idle(stop_wait, skip):
                log.warning("shutdown_with_active_recordings", active=await self.scheduler.active())

    async def _until_idle(self, timeout: float, skip: asyncio.Event | None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.scheduler.active():
            if loop.time() >= deadline or (skip is not None and skip.is_set()):
                return False
            await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
        return True

    async def shutdown(self) -> None:
        """Hand over the leader's loops and end long polls; handlers in flight still finish after this."""
        await self.leadership.stop()
        await self.scheduler.close()

    async def close(self) -> None:
        await self.leadership.stop()  # already, unless the app was closed without its shutdown
        await self.store.close()
        log.info("orchestrator_stopped")

    def web_app(self) -> web.Application:
        """The API with this orchestrator's lifecycle attached to the app's startup and cleanup."""
        return create_app(self)


def move_legacy_store(legacy: Path, target: Path) -> bool:
    """Move a store left in RECORDS_DIR by an older version to ORCHESTRATOR_STATE_DIR, once.

    RECORDS_DIR holds what workers write and what the media route serves; the store (every caller's
    requests) does not belong there. Nothing is moved when the new store exists already."""
    if target.exists() or not legacy.is_file() or legacy.resolve() == target.resolve():
        return False
    if any(legacy.with_name(legacy.name + suffix).is_symlink() for suffix in ("-wal", "-shm", "")):
        # Workers write into RECORDS_DIR: a link there is not a store this orchestrator left.
        log.warning("store_not_moved", source=str(legacy), reason="it is a symbolic link; move the store by hand")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    # The WAL and shared-memory files go with the database, the database last so a crash midway
    # leaves it where the next start looks for it.
    for suffix in ("-wal", "-shm", ""):
        source = legacy.with_name(legacy.name + suffix)
        if source.exists():
            dest = target.with_name(target.name + suffix)
            try:
                os.replace(source, dest)
            except OSError:
                shutil.move(source, dest)  # another filesystem
    log.info("store_moved", source=str(legacy), destination=str(target), reason="the store lives outside RECORDS_DIR")
    return True
