"""What the HTTP handlers may use of the orchestrator (built by `app.api_context`), and who called."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from orchestrator.api.bearer import BearerAuth
from orchestrator.api.views import Recording
from orchestrator.auth import Caller
from orchestrator.config import OrchestratorSettings
from orchestrator.media import MediaLocator
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.pool.backend import PoolBackend
from orchestrator.replay.signing import ViewSigner
from orchestrator.scheduler import Scheduler
from orchestrator.service import RecordingService
from orchestrator.store.base import RecordingRow, RecordingStore
from orchestrator.workers import Workers


@dataclass(frozen=True)
class ApiContext:
    settings: OrchestratorSettings
    service: RecordingService
    scheduler: Scheduler
    registry: Workers
    store: RecordingStore
    metrics: OrchestratorMetrics
    media: MediaLocator
    render: Callable[[RecordingRow], Recording]
    api_auth: BearerAuth
    worker_auth: BearerAuth
    signer: ViewSigner
    backend: PoolBackend | None = None


CONTEXT = web.AppKey("orchestrator_context", ApiContext)
CLIENT = web.RequestKey("orchestrator_client", Caller)  # who called: owns recordings, scopes idempotency
