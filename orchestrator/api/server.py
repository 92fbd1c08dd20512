"""`orchestrator serve`: the API on its port until SIGTERM or SIGINT, then a graceful shutdown.

The first signal drains (`Orchestrator.drain`): no new leases, running recordings go on for
ORCHESTRATOR_SHUTDOWN_GRACE, are then told to stop (files kept and uploaded) and given
ORCHESTRATOR_SHUTDOWN_STOP_WAIT to report. A second signal skips the waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from aiohttp import web

from orchestrator.app import Orchestrator, PoolFactory
from orchestrator.config import OrchestratorSettings
from orchestrator.pool.backend import PoolBackend

log = structlog.get_logger("orchestrator")


async def serve(
    settings: OrchestratorSettings, *, backend: PoolBackend | None = None, autoscaler: PoolFactory | None = None
) -> None:
    """Run until SIGTERM/SIGINT, then drain (see the module docstring)."""
    orchestrator = Orchestrator(settings, backend=backend, autoscaler=autoscaler)
    runner = web.AppRunner(orchestrator.web_app(), access_log=None, handle_signals=False, shutdown_timeout=10)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info("listening", url=f"http://{settings.host}:{settings.port}", open_api=not settings.api_tokens)
        loop = asyncio.get_running_loop()
        first, second = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:
            (second if first.is_set() else first).set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await first.wait()
        log.info("shutdown_requested")
        await orchestrator.drain(settings.shutdown_grace, settings.shutdown_stop_wait, skip=second)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().remove_signal_handler(sig)
        await runner.cleanup()
