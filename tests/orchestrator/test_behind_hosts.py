"""A machine whose recording falls behind real time takes no more leases: its workers' polls wait until the
capture catches up, ends, or stops heartbeating, while workers on other machines (or that do not say their
machine) are leased as before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from orchestrator.app import Orchestrator
from tests.support.orchestrator import API_TOKEN, Api, FakeWorker, Response, RunningOrchestrator, orchestrator_settings


class Clock:
    """Wall time that a test moves forward, so a mark's hold passes without waiting it out."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def farm(tmp_path: Path, clock: Clock) -> AsyncIterator[RunningOrchestrator]:
    orchestrator = Orchestrator(orchestrator_settings(tmp_path), clock=clock)
    server = TestServer(orchestrator.web_app(), host="127.0.0.1")
    await server.start_server()
    running = RunningOrchestrator(orchestrator, server, Api(str(server.make_url("/")).rstrip("/"), API_TOKEN))
    yield running
    await running.close()


async def poll(worker: FakeWorker, host: str | None, wait: float) -> Response:
    body: dict[str, Any] = {"worker_id": worker.worker_id, "wait": wait, "capacity": 1}
    if host is not None:
        body["host"] = host
    return await worker.request("POST", "/v1/worker/lease", json=body, timeout=wait + 30)


async def behind_on_h1(farm: RunningOrchestrator) -> tuple[FakeWorker, dict[str, Any], str]:
    """Worker A on h1 records, behind real time; another recording is then queued. A's lease and the id
    of the queued recording."""
    await farm.api.create()
    a = farm.worker("a")
    lease = (await poll(a, "h1", wait=1)).body
    assert (await a.heartbeat(lease["lease_id"], "recording", speed=0.8, behind=True)).status == 200
    queued = (await farm.api.create()).body["id"]
    return a, lease, queued


def sample(farm: RunningOrchestrator, name: str) -> float | None:
    return farm.orchestrator.metrics.registry.get_sample_value(name)


async def test_workers_on_a_behind_host_get_nothing_while_other_hosts_do(farm: RunningOrchestrator) -> None:
    _, _, queued = await behind_on_h1(farm)

    started = time.monotonic()
    held = await poll(farm.worker("b"), "h1", wait=0.6)
    assert held.status == 204, held.body
    assert time.monotonic() - started >= 0.5, "held back, the poll waited out its wait as on an empty queue"
    assert (await farm.api.get(queued))["status"] == "queued"

    other = await poll(farm.worker("c"), "h2", wait=0.6)
    assert other.status == 200, other.body
    assert other.body["recording_id"] == queued
    assert sample(farm, "orchestrator_hosts_behind") == 1
    assert sample(farm, "orchestrator_leases_held_back_total") == 1


ENDINGS: dict[str, Callable[[RunningOrchestrator, FakeWorker, dict[str, Any]], Awaitable[Response]]] = {
    "caught_up": lambda _farm, a, lease: a.heartbeat(lease["lease_id"], "recording", speed=1.0, behind=False),
    "reported": lambda farm, a, lease: a.report(lease["lease_id"], "completed", location=farm.location(lease)),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_a_waiting_worker_is_leased_as_soon_as_the_host_is_no_longer_behind(
    farm: RunningOrchestrator, ending: str
) -> None:
    a, lease, queued = await behind_on_h1(farm)
    waiting = asyncio.create_task(poll(farm.worker("b"), "h1", wait=10))
    await asyncio.sleep(0.3)
    assert not waiting.done(), "held back while A is behind"

    assert (await ENDINGS[ending](farm, a, lease)).status == 200
    cleared = time.monotonic()
    got = await asyncio.wait_for(waiting, timeout=10)
    assert got.status == 200, got.body
    assert got.body["recording_id"] == queued
    assert time.monotonic() - cleared < 1.0, "woken when the mark cleared, not at the next recheck"
    assert sample(farm, "orchestrator_hosts_behind") == 0


async def test_the_mark_lapses_when_the_behind_worker_stops_heartbeating(
    farm: RunningOrchestrator, clock: Clock
) -> None:
    a, lease, queued = await behind_on_h1(farm)
    hold = 3 * farm.orchestrator.settings.heartbeat_interval
    b = farm.worker("b")

    # A renews its mark just before the hold is over: still held back.
    clock.advance(hold - 1)
    assert (await a.heartbeat(lease["lease_id"], "recording", behind=True)).status == 200
    clock.advance(2)
    assert (await poll(b, "h1", wait=0.2)).status == 204

    # A goes silent: once the hold has passed without a heartbeat, h1 takes leases again.
    clock.advance(hold)
    got = await poll(b, "h1", wait=0.2)
    assert got.status == 200, got.body
    assert got.body["recording_id"] == queued
    assert sample(farm, "orchestrator_hosts_behind") == 0


async def test_a_worker_that_does_not_say_its_host_is_not_held_back(farm: RunningOrchestrator) -> None:
    _, _, queued = await behind_on_h1(farm)
    got = await poll(farm.worker("older"), None, wait=0.6)
    assert got.status == 200, got.body
    assert got.body["recording_id"] == queued
    assert sample(farm, "orchestrator_leases_held_back_total") == 0


async def test_a_capture_that_has_stopped_no_longer_holds_its_host(farm: RunningOrchestrator) -> None:
    a, lease, queued = await behind_on_h1(farm)
    # Finalizing still carries the capture's last progress, `behind` included: the capture is over.
    assert (await a.heartbeat(lease["lease_id"], "finalizing", speed=0.8, behind=True)).status == 200
    got = await poll(farm.worker("b"), "h1", wait=0.6)
    assert got.status == 200, got.body
    assert got.body["recording_id"] == queued
