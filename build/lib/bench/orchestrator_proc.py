"""`orchestrator serve` as a subprocess on a free loopback port, for the latency and API benchmarks.

Started with the settings a benchmark needs (pool bounds, store location), waited for on /readyz, and
stopped with SIGTERM (it drains and stops its own workers), then SIGKILL of its process group if it hangs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningOrchestrator:
    base: str
    token: str
    process: subprocess.Popen[bytes]
    records_dir: Path
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"orchestrator exited with {process.returncode} before it was ready")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(base + "/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"orchestrator not ready within {timeout:g} s")


@contextlib.contextmanager
def orchestrator(
    records_dir: Path, *, settings: dict[str, str], ready_timeout: float = 60.0
) -> Iterator[RunningOrchestrator]:
    """Run `orchestrator serve` with `settings` (environment names, e.g. POOL_SPARE) on 127.0.0.1."""
    port = free_port()
    token = secrets.token_urlsafe(16)
    records_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PORT": str(port),
        "API_TOKENS": token,
        "WORKER_TOKEN": secrets.token_urlsafe(16),
        "RECORDS_DIR": str(records_dir),
        # Each run its own store, beside (not inside) its RECORDS_DIR.
        "ORCHESTRATOR_STATE_DIR": str(records_dir.with_name(records_dir.name + "-state")),
        "URL_ALLOWLIST": "127.0.0.1,localhost",
        "ORCHESTRATOR_LOG_LEVEL": "warning",
        "ORCHESTRATOR_SHUTDOWN_GRACE": "5",
        "ORCHESTRATOR_SHUTDOWN_STOP_WAIT": "20",
        **settings,
    }
    log = records_dir / "orchestrator.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, ready_timeout)
        yield RunningOrchestrator(base=base, token=token, process=process, records_dir=records_dir, log=log)
    finally:
        stop(process, records_dir)


def stop(process: subprocess.Popen[bytes], records_dir: Path, timeout: float = 60.0) -> None:
    """SIGTERM (the orchestrator stops its workers), SIGKILL after `timeout`, then any worker left over."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Local workers run in process groups of their own and outlive a killed orchestrator by design.
    for state in (records_dir / ".pool").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(state.read_text())["pid"])
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
                    time.sleep(2)
