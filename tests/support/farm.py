"""Test fixtures: a whole farm (`orchestrator serve` with its local pool of real `recorder worker` processes),
a client of its API, and a receiver of its webhooks that also serves pages for the browser."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.orchestrator import API_TOKEN, WEBHOOK_SECRET, Api, OrchestratorProcess

TERMINAL = ("completed", "failed", "cancelled")


# -- a page server and webhook receiver, in the test's own event loop --------------------------------

STATE_SET = """<!doctype html><html><body><p>state set</p><script>
document.cookie = 'rf_script=1; path=/; max-age=3600';
localStorage.setItem('rf_state', 'set');
sessionStorage.setItem('rf_session', 'set');
fetch('/seen?page=set', {method: 'POST', body: JSON.stringify({cookies: document.cookie,
  storage: JSON.stringify(Object.assign({}, localStorage))})});
</script></body></html>"""

STATE_REPORT = """<!doctype html><html><body><p>state report</p><script>
fetch('/seen?page=report', {method: 'POST', body: JSON.stringify({cookies: document.cookie,
  storage: JSON.stringify(Object.assign({}, localStorage)),
  session: JSON.stringify(Object.assign({}, sessionStorage))})});
</script></body></html>"""


@dataclass
class Receiver:
    """Pages for the browser to load, and the webhook endpoint; remembers what it was sent."""

    server: TestServer | None = None
    hooks: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            self.hooks.append((dict(request.headers), await request.read()))
            return web.Response(status=204)

        async def state_set(request: web.Request) -> web.Response:
            response = web.Response(text=STATE_SET, content_type="text/html")
            response.set_cookie("rf_server", "1", path="/", max_age=3600)
            return response

        async def state_report(request: web.Request) -> web.Response:
            return web.Response(text=STATE_REPORT, content_type="text/html")

        async def seen(request: web.Request) -> web.Response:
            body = json.loads(await request.read())
            body["page"] = request.query.get("page")
            body["server_cookies"] = dict(request.cookies)
            self.seen.append(body)
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/state/set", state_set)
        app.router.add_get("/state/report", state_report)
        app.router.add_post("/seen", seen)
        return app

    def events(self, recording_id: str) -> list[tuple[dict[str, str], bytes, dict[str, Any]]]:
        out = []
        for headers, body in self.hooks:
            event = json.loads(body)
            if event["recording_id"] == recording_id:
                out.append((headers, body, event))
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    r.server = TestServer(r.app(), host="127.0.0.1")
    await r.server.start_server()
    yield r
    await r.server.close()


# -- the farm --------------------------------------------------------------------------------------


def pool_state(records: Path) -> dict[str, int]:
    """Worker name -> pid, from the local pool's state files."""
    out = {}
    for path in (records / ".pool").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            out[record["name"]] = int(record["pid"])
    return out


def processes_of(worker_id: str) -> list[int]:
    """Live processes started by a worker (they inherit its WORKER_ID)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if f"WORKER_ID={worker_id}".encode() in environ.split(b"\0") and stat[stat.rfind(")") + 2] != "Z":
            found.append(int(entry))
    return found


@pytest.fixture
def farm(
    orchestrator_process: Callable[..., OrchestratorProcess], tmp_path: Path
) -> Iterator[Callable[..., OrchestratorProcess]]:
    """`orchestrator serve` with a local pool; stopped with SIGTERM so it stops its workers, and any
    worker still alive afterwards is killed with its process group (they run in sessions of their own)."""
    started: list[OrchestratorProcess] = []
    records = tmp_path / "records"

    def make(**env: str) -> OrchestratorProcess:
        settings = {
            "POOL_BACKEND": "local",
            "POOL_MIN": "0",
            "URL_ALLOWLIST": "127.0.0.1,localhost",
            "ORCHESTRATOR_HEARTBEAT_INTERVAL": "1",
            "ORCHESTRATOR_LEASE_CHECK_INTERVAL": "0.5",
            "ORCHESTRATOR_SHUTDOWN_GRACE": "2",
            "ORCHESTRATOR_SHUTDOWN_STOP_WAIT": "10",
            "ORCHESTRATOR_WEBHOOK_BACKOFF": "0.2",
            "RECORDER_SHUTDOWN_GRACE": "2",
            "WORKER_GIVE_UP_AFTER": "30",  # a worker of a dead test farm does not linger
            **env,
        }
        proc = orchestrator_process(**settings)
        proc.start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        if proc.process is not None and proc.process.poll() is None:
            proc.signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                proc.wait(timeout=60)
        proc.kill()
    for _, pid in pool_state(records).items():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
async def api(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[OrchestratorProcess], Api]]:
    made: list[Api] = []

    def make(proc: OrchestratorProcess) -> Api:
        made.append(Api(proc.base_url, API_TOKEN))
        return made[-1]

    yield make
    for a in made:
        await a.close()


async def wait_terminal(api: Api, rid: str, timeout: float) -> dict[str, Any]:
    return await api.wait_status(rid, *TERMINAL, timeout=timeout)


async def pool(api: Api) -> dict[str, Any]:
    r = await api.request("GET", "/v1/pool")
    assert r.status == 200, r.body
    return r.body


def ts(rec: dict[str, Any], name: str) -> float:
    value = rec["timestamps"][name]
    assert value is not None, f"{rec['id']} has no {name} timestamp: {rec['timestamps']}"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def verify_signature(headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks, as an independent receiver checks it (the secret is used as its UTF-8 bytes)."""
    try:
        Webhook(WEBHOOK_SECRET.encode()).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True
