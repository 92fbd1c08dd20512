"""`recorder worker`: the flags, and running the worker until it is told to stop.

Every flag has an environment variable (the local pool and the Kubernetes pod template set those):
ORCHESTRATOR_URL, WORKER_TOKEN, WORKER_ID, RECORDS_DIR, RECORDER_SHUTDOWN_GRACE, WORKER_SINGLE_USE,
WORKER_GIVE_UP_AFTER. `recorder.cli` dispatches `recorder worker` here.

Exit codes: 0 stopped as asked (or single use done), 1 the recorder could not start, 2 the orchestrator
refused the token or the settings are invalid (including an unknown WORKER_/RECORDER_ variable, named with
the nearest known one), 3 the orchestrator could not be reached for too long.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from contract.envcheck import UnknownVariable
from recorder.config import RecorderSettings, check_recorder_environment
from recorder.worker.client import OrchestratorClient
from recorder.worker.loop import EXIT_UNAUTHORIZED, Worker, WorkerOptions

if TYPE_CHECKING:
    from recorder.pipeline import Recorder


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--orchestrator", metavar="URL", help="where the orchestrator is (env ORCHESTRATOR_URL)")
    parser.add_argument("--token", metavar="T", help="worker token (env WORKER_TOKEN)")
    parser.add_argument("--worker-id", help="this worker's name in the pool (env WORKER_ID; default host-pid)")
    parser.add_argument(
        "--single-use",
        action="store_true",
        default=None,
        help="exit after one recording (env WORKER_SINGLE_USE)",
    )
    parser.add_argument("--records-dir", type=Path, help="local recordings (env RECORDS_DIR)")
    parser.add_argument(
        "--grace",
        type=float,
        help="on SIGTERM, seconds a recording in progress may go on before it is stopped and stored "
        "(env RECORDER_SHUTDOWN_GRACE, default 30)",
    )
    parser.add_argument(
        "--give-up-after",
        type=float,
        help="an idle worker exits when the orchestrator stays unreachable this long; 0 = never "
        "(env WORKER_GIVE_UP_AFTER, default 600)",
    )


def worker_settings(args: argparse.Namespace) -> RecorderSettings:
    """Environment (RecorderSettings) first, flags over it."""
    flags = {
        "orchestrator_url": args.orchestrator,
        "worker_token": args.token,
        "records_dir": args.records_dir,
        "worker_id": args.worker_id,
        "single_use": args.single_use,
        "shutdown_grace": args.grace,
        "give_up_after": args.give_up_after,
    }
    return RecorderSettings(**{k: v for k, v in flags.items() if v is not None})  # type: ignore[arg-type]


def run_worker(args: argparse.Namespace, recorder: Recorder | None = None) -> int:
    """Run `recorder worker` until SIGTERM/SIGINT (or one recording with --single-use)."""
    try:
        # An unknown WORKER_/RECORDER_ variable is a typo that would silently change nothing
        # (WORKER_MAX_RECORDINGS=1 once left pods reusable): refuse to start, naming the nearest name.
        check_recorder_environment()
        settings = worker_settings(args)
    except (ValidationError, UnknownVariable) as exc:
        print(f"recorder worker: {exc}", file=sys.stderr)
        return EXIT_UNAUTHORIZED
    options = WorkerOptions(
        worker_id=settings.worker_id,
        single_use=settings.single_use,
        grace=settings.shutdown_grace,
        give_up_after=settings.give_up_after or None,
    )
    structlog.contextvars.bind_contextvars(worker_id=options.worker_id)
    if recorder is None:
        from recorder.pipeline import Recorder

        recorder = Recorder(settings)
    return asyncio.run(_serve(settings, recorder, options))


async def _serve(settings: RecorderSettings, recorder: Recorder, options: WorkerOptions) -> int:
    client = OrchestratorClient(settings.orchestrator_url, settings.worker_token)
    worker = Worker(settings, recorder, client, options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_shutdown)
    try:
        return await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
