"""Builds the warm pool the settings ask for: the backend, and the autoscaler that drives it.

`orchestrator serve` passes what `pool_components` returns to the orchestrator; the autoscaler is built
once the orchestrator exists, because it reads the scheduler's worker registry and queue.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from orchestrator import __version__
from orchestrator.config import OrchestratorSettings
from orchestrator.pool.autoscaler import Autoscaler
from orchestrator.pool.backend import PoolBackend
from orchestrator.pool.local import LocalBackend, default_capacity
from orchestrator.pool.policy import PoolConfig
from orchestrator.pool.predictive import PredictiveSpare

# What `recorder worker` imports beyond the contract (the `recorder` extra), by module name.
RECORDER_NEEDS = ("recorder", "playwright", "pulsectl", "ffmpeg", "boto3", "numpy", "dns")

if TYPE_CHECKING:
    from orchestrator.app import Orchestrator


def local_url(settings: OrchestratorSettings) -> str:
    """Where a worker on this machine reaches the orchestrator."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def with_pool_defaults(settings: OrchestratorSettings) -> OrchestratorSettings:
    """A local pool bounds concurrent recordings by what this machine sustains, unless told otherwise."""
    if settings.pool_backend == "local" and settings.pool_capacity is None:
        return settings.model_copy(update={"pool_capacity": default_capacity()})
    return settings


def make_backend(settings: OrchestratorSettings) -> PoolBackend:
    if settings.pool_backend == "kubernetes":
        if importlib.util.find_spec("kubernetes_asyncio") is None:
            raise ValueError(
                "POOL_BACKEND=kubernetes needs the Kubernetes client: pip install 'recorder-farm[kubernetes]'"
            )
        from orchestrator.pool.kubernetes import KubernetesBackend

        return KubernetesBackend()
    if settings.port == 0:
        raise ValueError("the local pool needs a fixed ORCHESTRATOR_PORT: its workers are told where to connect")
    missing = [name for name in RECORDER_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        # The orchestrator installs without the recorder's libraries (the `orchestrator` extra); a local pool
        # would start workers that cannot run, over and over.
        raise ValueError(
            f"the local pool runs `recorder worker` on this machine, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed here: pip install 'recorder-farm[recorder]', "
            "or set POOL_BACKEND=kubernetes"
        )
    return LocalBackend(
        orchestrator_url=local_url(settings),
        worker_token=settings.worker_token,
        records_dir=settings.records_dir,
        release=__version__,
        capacity=settings.pool_capacity,
        # Workers asked to stop finish, upload and report first: give them the orchestrator's own patience.
        stop_timeout=settings.shutdown_grace + settings.shutdown_stop_wait,
    )


def pool_config(settings: OrchestratorSettings, backend: PoolBackend) -> PoolConfig:
    capacity = settings.pool_capacity
    if capacity is None:
        capacity = getattr(backend, "capacity", None)
    return PoolConfig(
        min=settings.pool_min,
        max=settings.pool_max,
        spare=settings.pool_spare,
        idle_cooldown=settings.pool_idle_cooldown,
        capacity=capacity,
        start_timeout=settings.pool_start_timeout,
    )


def pool_components(settings: OrchestratorSettings) -> dict[str, Any]:
    """Keyword arguments for `Orchestrator(...)`/`serve(...)`: the backend and the autoscaler factory."""
    if settings.pool_backend == "none":
        return {}
    backend = make_backend(settings)

    def build(orchestrator: Orchestrator) -> Autoscaler:
        scheduler = orchestrator.scheduler
        autoscaler = Autoscaler(
            backend,
            orchestrator.registry,
            scheduler.queued,
            pool_config(settings, backend),
            paused=lambda: scheduler.draining,
            predictive=PredictiveSpare() if settings.pool_predictive else None,
        )
        orchestrator.bus.subscribe(autoscaler.wake)
        return autoscaler

    return {"backend": backend, "autoscaler": build}
