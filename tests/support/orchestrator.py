"""Test fixtures: a real orchestrator over real HTTP, and a fake worker that speaks `contract.protocol`.

- `start_orchestrator(**settings)`: an in-process orchestrator behind aiohttp's TestServer on a free
  127.0.0.1 port, with its own SQLite file under tmp_path; stopped (gracefully) at the end of the test.
- `orchestrator_process(...)`: the real `orchestrator serve` as a subprocess (for restarts and signals),
  killed with its process group at the end of the test.
- `FakeWorker`: lease / heartbeat / report over HTTP, exactly as a recorder worker would, so the
  scheduler is tested without browsers. Real workers are exercised by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from orchestrator.app import Orchestrator
from orchestrator.config import OrchestratorSettings
from tests.support.net import free_port

API_TOKEN = "test-api-token"
WORKER_TOKEN = "test-worker-token"
WEBHOOK_SECRET = "test-webhook-secret"
# A literal public address: passes the URL policy without DNS (nothing is fetched by the orchestrator).
PUBLIC_URL = "http://93.184.215.14/meeting"


def leased_location(lease: dict[str, Any], records_dir: Path | None = None, name: str = "rec.mp4") -> str:
    """Where a worker that keeps the storage contract puts `name` for this lease: the only place the
    orchestrator accepts (`orchestrator/locations.py`)."""
    attempt = f"attempt-{lease['attempt']}"
    upload = lease.get("upload") or {}
    if upload.get("bucket"):
        parts = [upload.get("prefix") or "", "2026", "01", "02", lease["recording_id"], attempt, name]
        return f"s3://{upload['bucket']}/" + "/".join(p for p in parts if p)
    assert records_dir is not None, "a local lease's location needs the orchestrator's RECORDS_DIR"
    return (records_dir.resolve() / lease["recording_id"] / attempt / name).as_uri()


def orchestrator_settings(tmp_path: Path, **overrides: Any) -> OrchestratorSettings:
    """Settings for tests: everything that matters is explicit, so the environment cannot leak in."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "api_tokens": [API_TOKEN],
        "worker_token": WORKER_TOKEN,
        "url_allowlist": [],
        "records_dir": tmp_path / "records",
        "db": tmp_path / "orchestrator.db",
        "s3_bucket": None,
        "s3_endpoint_url": None,
        "webhook_secret": WEBHOOK_SECRET,
        "pool_backend": "none",
        "pool_capacity": None,
        "lease_ttl": 15.0,
        "lease_check_interval": 2.0,
        "max_attempts": 3,
    }
    values.update(overrides)
    return OrchestratorSettings(**values)


# What a heartbeat on a lease in good standing is answered with.
CONTINUE = {"action": "continue", "pause": False, "stop_reason": "api"}


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class HttpClient:
    """A caller of the orchestrator over HTTP with a bearer token."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.session = aiohttp.ClientSession()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = "default",
        timeout: float = 30.0,
    ) -> Response:
        merged = dict(headers or {})
        use = self.token if token == "default" else token
        if use is not None:
            merged["Authorization"] = f"Bearer {use}"
        async with self.session.request(
            method,
            self.base_url + path,
            json=json,
            data=data,
            headers=merged,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            body: Any = raw or None
            if raw and resp.content_type == "application/json":
                # Only what says it is JSON: one byte of media that happens to be a digit is not the number.
                body = await resp.json()
            return Response(resp.status, body, dict(resp.headers))

    async def close(self) -> None:
        await self.session.close()


class Api(HttpClient):
    async def create(self, url: str = PUBLIC_URL, headers: dict[str, str] | None = None, **fields: Any) -> Response:
        return await self.request("POST", "/v1/recordings", json={"url": url, **fields}, headers=headers)

    async def get(self, recording_id: str) -> dict[str, Any]:
        r = await self.request("GET", f"/v1/recordings/{recording_id}")
        assert r.status == 200, r.body
        return r.body

    async def wait_for(
        self, recording_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll until the recording satisfies `predicate`; fail with its last state otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            rec = await self.get(recording_id)
            if predicate(rec):
                return rec
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s; recording is {rec}")
            await asyncio.sleep(0.05)

    async def wait_status(self, recording_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        return await self.wait_for(recording_id, lambda r: r["status"] in statuses, timeout)


class FakeWorker(HttpClient):
    """Speaks the worker protocol over HTTP, without recording anything."""

    def __init__(self, base_url: str, worker_id: str, token: str | None = WORKER_TOKEN) -> None:
        super().__init__(base_url, token)
        self.worker_id = worker_id

    async def lease(self, wait: float = 5.0, capacity: int = 1) -> Response:
        return await self.request(
            "POST",
            "/v1/worker/lease",
            json={"worker_id": self.worker_id, "wait": wait, "capacity": capacity},
            timeout=wait + 30,
        )

    async def heartbeat(self, lease_id: str, state: str = "recording", **progress: Any) -> Response:
        body = {"lease_id": lease_id, "worker_id": self.worker_id, "state": state, "progress": progress}
        return await self.request("POST", "/v1/worker/heartbeat", json=body)

    async def report(self, lease_id: str, outcome: str = "completed", **fields: Any) -> Response:
        body = {"lease_id": lease_id, "worker_id": self.worker_id, "outcome": outcome, **fields}
        return await self.request("POST", "/v1/worker/report", json=body)


@dataclass
class RunningOrchestrator:
    orchestrator: Orchestrator
    server: TestServer
    api: Api
    _clients: list[HttpClient] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/")).rstrip("/")

    def worker(self, worker_id: str, token: str | None = WORKER_TOKEN) -> FakeWorker:
        w = FakeWorker(self.base_url, worker_id, token)
        self._clients.append(w)
        return w

    def location(self, lease: dict[str, Any], name: str = "rec.mp4") -> str:
        """The location a contract-keeping worker reports for `name` of this lease."""
        return leased_location(lease, self.orchestrator.settings.records_dir, name)

    def client(self, token: str | None) -> Api:
        c = Api(self.base_url, token)
        self._clients.append(c)
        return c

    async def close(self) -> None:
        for c in [*self._clients, self.api]:
            await c.close()
        await self.server.close()


@pytest.fixture
async def start_orchestrator(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningOrchestrator]]]:
    running: list[RunningOrchestrator] = []

    async def start(**overrides: Any) -> RunningOrchestrator:
        kwargs = {k: overrides.pop(k) for k in ("resolve", "backend", "autoscaler") if k in overrides}
        orchestrator = Orchestrator(orchestrator_settings(tmp_path, **overrides), **kwargs)
        server = TestServer(orchestrator.web_app(), host="127.0.0.1")
        await server.start_server()
        base = str(server.make_url("/")).rstrip("/")
        r = RunningOrchestrator(orchestrator, server, Api(base, API_TOKEN))
        running.append(r)
        return r

    yield start
    for r in reversed(running):
        await r.close()


@dataclass
class OrchestratorProcess:
    """`orchestrator serve` in its own session, so killing its group leaves nothing behind."""

    args: list[str]
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        assert self.log_path is not None
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"orchestrator exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise AssertionError(f"orchestrator did not listen within {timeout} s:\n{self.log()}")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


@pytest.fixture
def orchestrator_process(tmp_path: Path) -> Iterator[Callable[..., OrchestratorProcess]]:
    made: list[OrchestratorProcess] = []

    def make(*args: str, **env: str) -> OrchestratorProcess:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "POOL_", "S3_"))}
        base_env.update(
            {
                "API_TOKENS": API_TOKEN,
                "WORKER_TOKEN": WORKER_TOKEN,
                "RECORDS_DIR": str(tmp_path / "records"),
                "ORCHESTRATOR_DB": str(tmp_path / "orchestrator.db"),
                "ORCHESTRATOR_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "URL_ALLOWLIST": "",
                # The tests' fake workers are the only workers: no warm pool of real recorders.
                "POOL_BACKEND": "none",
                **env,
            }
        )
        p = OrchestratorProcess(list(args), base_env, free_port(), log_path=tmp_path / f"orchestrator-{len(made)}.log")
        made.append(p)
        return p

    yield make
    for p in made:
        p.kill()
