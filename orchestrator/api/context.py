"""What the HTTP handlers may use, handed to them by the composition root (`orchestrator.app`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from orchestrator.auth import BearerAuth, Caller
from orchestrator.config import OrchestratorSettings
from orchestrator.media import MediaLocator
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.models import Recording
from orchestrator.pool.backend import PoolBackend
from orchestrator.scheduler import Scheduler
from orchestrator.service import RecordingService
from orchestrator.store.base import RecordingRow, RecordingStore
from orchestrator.workers import WorkerRegistry


@dataclass(frozen=True)
class ApiContext:
    settings: OrchestratorSettings
    service: RecordingService
    scheduler: Scheduler
    registry: WorkerRegistry
    store: RecordingStore
    metrics: OrchestratorMetrics
    media: MediaLocator
    render: Callable[[RecordingRow], Recording]
    api_auth: BearerAuth
    worker_auth: BearerAuth
    backend: PoolBackend | None = None


CONTEXT = web.AppKey("orchestrator_context", ApiContext)
CLIENT = web.RequestKey("orchestrator_client", Caller)  # who called: owns recordings, scopes idempotency
