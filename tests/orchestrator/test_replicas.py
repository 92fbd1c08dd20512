"""Several orchestrator replicas on one PostgreSQL database: every replica serves the API and the worker
protocol, exactly one runs the leader's loops, and another takes over when the leader dies.

Real `orchestrator serve` processes on a private PostgreSQL cluster the tests start
(tests/support/postgres.py); stand-in workers (`FakeWorker`) speak the worker protocol over HTTP.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.leadership import AdvisoryLockLeader
from orchestrator.store.base import NewRecording
from orchestrator.store.postgres import PostgresStore
from orchestrator.workers import SEEN_EVERY, SharedWorkerRegistry
from tests.support.orchestrator import API_TOKEN, Api, FakeWorker, OrchestratorProcess, leased_location
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures used below
from tests.support.replicas import leading, start_replicas, wait_for_leader

RECORDINGS = 200
# The bound on a handover after the leader dies.
FAILOVER_BOUND = 15.0


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Any]]:
    made: list[Api | FakeWorker] = []

    def make(kind: type[Api] | type[FakeWorker], *args: Any) -> Any:
        client = kind(*args)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def test_two_replicas_lease_every_recording_once_and_complete_them_all(
    orchestrator_process: Callable[..., OrchestratorProcess],
    postgres_dsn: str,  # noqa: F811
    clients: Callable[..., Any],
    tmp_path: Path,
) -> None:
    replicas = start_replicas(orchestrator_process, postgres_dsn, ORCHESTRATOR_LEASE_TTL="30")
    apis: list[Api] = [clients(Api, r.base_url, API_TOKEN) for r in replicas]
    leader = await wait_for_leader(apis)

    # 200 recordings, half through each replica, created concurrently.
    gate = asyncio.Semaphore(16)

    async def create(i: int) -> str:
        async with gate:
            r = await apis[i % 2].create(metadata={"n": str(i)})
            assert r.status == 202, r.body
            return r.body["id"]

    created = await asyncio.gather(*(create(i) for i in range(RECORDINGS)))
    assert len(set(created)) == RECORDINGS

    # Stand-in workers, four polling each replica, lease and report until nothing is left.
    leases: list[tuple[int, str, str, str]] = []  # (replica, worker, lease id, recording id)
    records_dir = tmp_path / "records"

    async def work(replica: int, worker: FakeWorker) -> None:
        idle = 0
        while idle < 2:
            r = await worker.lease(wait=1.0)
            if r.status == 204:
                idle += 1
                continue
            assert r.status == 200, r.body
            idle = 0
            lease = r.body
            leases.append((replica, worker.worker_id, lease["lease_id"], lease["recording_id"]))
            done = await worker.report(lease["lease_id"], location=leased_location(lease, records_dir))
            assert done.status == 200, done.body

    workers = [(i % 2, clients(FakeWorker, replicas[i % 2].base_url, f"stand-in-{i}")) for i in range(8)]
    await asyncio.wait_for(asyncio.gather(*(work(replica, w) for replica, w in workers)), timeout=240)

    recordings = [lease[3] for lease in leases]
    lease_ids = [lease[2] for lease in leases]
    assert sorted(recordings) == sorted(created), "every recording leased, none twice"
    assert len(set(lease_ids)) == RECORDINGS
    assert {lease[0] for lease in leases} == {0, 1}, "both replicas granted leases"
    for i, recording_id in enumerate(created):
        rec = await apis[(i + 1) % 2].get(recording_id)  # read through the replica it was not created on
        assert rec["status"] == "completed", rec
        assert rec["attempts"] == 1, rec

    # One leader throughout: the other replica never ran the loops.
    assert [await leading(api) for api in apis] == [i == leader for i in range(2)]
    assert '"leading"' in replicas[leader].log()
    assert '"leading"' not in replicas[1 - leader].log()


async def test_the_leader_killed_another_replica_leads_within_15_s_and_lapsed_leases_are_still_noticed(
    orchestrator_process: Callable[..., OrchestratorProcess],
    postgres_dsn: str,  # noqa: F811
    clients: Callable[..., Any],
) -> None:
    replicas = start_replicas(
        orchestrator_process,
        postgres_dsn,
        ORCHESTRATOR_LEASE_TTL="2",
        ORCHESTRATOR_LEASE_CHECK_INTERVAL="0.5",
        ORCHESTRATOR_MAX_ATTEMPTS="1",
    )
    apis: list[Api] = [clients(Api, r.base_url, API_TOKEN) for r in replicas]
    leader = await wait_for_leader(apis)
    follower = 1 - leader

    async def silent_lease(worker_id: str) -> tuple[str, str, FakeWorker]:
        """A recording leased through the follower by a worker that then goes silent."""
        created = await apis[follower].create()
        assert created.status == 202, created.body
        worker = clients(FakeWorker, replicas[follower].base_url, worker_id)
        r = await worker.lease(wait=5.0)
        assert r.status == 200, r.body
        assert r.body["recording_id"] == created.body["id"]
        assert (await worker.heartbeat(r.body["lease_id"])).status == 200
        return created.body["id"], r.body["lease_id"], worker

    # Both replicas up: a lapsed lease is handled, by the leader alone.
    first, _, _ = await silent_lease("silent-1")
    lapsed = await apis[follower].wait_status(first, "failed", timeout=30)
    assert lapsed["error"]["code"] == "worker_lost", lapsed
    assert _lapsed_count(await apis[leader].request("GET", "/metrics")) == 1
    assert _lapsed_count(await apis[follower].request("GET", "/metrics")) == 0, "a follower runs no lease monitor"

    # The leader is SIGKILLed while a worker holds a lease and goes silent.
    second, lease_id, worker = await silent_lease("silent-2")
    killed_at = time.monotonic()
    replicas[leader].signal(signal.SIGKILL)
    while await leading(apis[follower]) is not True:
        assert time.monotonic() - killed_at < FAILOVER_BOUND + 5, "the follower never took over"
        await asyncio.sleep(0.05)
    failover = time.monotonic() - killed_at
    assert failover < FAILOVER_BOUND, f"took over after {failover:.1f} s"
    assert await leading(apis[leader]) is None, "the killed leader answers nothing"

    # The new leader notices the silent worker's lease lapse (after one more TTL of grace).
    lost = await apis[follower].wait_status(second, "failed", timeout=30)
    assert lost["error"]["code"] == "worker_lost", lost
    assert "silent-2" in lost["error"]["message"]
    late = await worker.heartbeat(lease_id)
    assert late.status == 410, late.body


async def test_a_replica_that_is_stopped_hands_over_and_leaves_running_recordings_alone(
    orchestrator_process: Callable[..., OrchestratorProcess],
    postgres_dsn: str,  # noqa: F811
    clients: Callable[..., Any],
) -> None:
    # A grace this long would hold a single orchestrator's shutdown for a minute.
    replicas = start_replicas(
        orchestrator_process, postgres_dsn, ORCHESTRATOR_SHUTDOWN_GRACE="60", ORCHESTRATOR_LEASE_TTL="5"
    )
    apis: list[Api] = [clients(Api, r.base_url, API_TOKEN) for r in replicas]
    leader = await wait_for_leader(apis)
    other = 1 - leader
    created = await apis[leader].create()
    assert created.status == 202, created.body
    worker = clients(FakeWorker, replicas[leader].base_url, "busy-worker")
    lease = (await worker.lease(wait=5.0)).body
    assert lease["recording_id"] == created.body["id"]
    assert (await worker.heartbeat(lease["lease_id"])).body["action"] == "continue"

    stopped_at = time.monotonic()
    replicas[leader].signal(signal.SIGTERM)
    code = await asyncio.to_thread(replicas[leader].wait, 30)
    took = time.monotonic() - stopped_at
    assert code == 0, replicas[leader].log()
    assert took < 20, f"a replica's shutdown waited {took:.1f} s for recordings that go on elsewhere"
    assert await leading(apis[other]) is True or await wait_for_leader([apis[other]], timeout=10) == 0

    # The recording goes on through the other replica: not told to stop, not failed.
    moved = clients(FakeWorker, replicas[other].base_url, "busy-worker")
    for _ in range(3):
        reply = await moved.heartbeat(lease["lease_id"])
        assert reply.status == 200, reply.body
        assert reply.body["action"] == "continue", reply.body
        await asyncio.sleep(1.0)
    assert (await apis[other].get(created.body["id"]))["status"] == "recording"


def _lapsed_count(metrics: Any) -> float:
    text = metrics.body.decode() if isinstance(metrics.body, bytes) else str(metrics.body)
    for line in text.splitlines():
        if line.startswith("orchestrator_leases_lapsed_total "):
            return float(line.split()[1])
    raise AssertionError("orchestrator_leases_lapsed_total is not exported")


async def test_what_one_replica_learns_of_workers_every_replica_sees(postgres_dsn: str) -> None:  # noqa: F811
    stores = [PostgresStore(postgres_dsn, pool_size=2) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        now = 1000.0
        one, other = (SharedWorkerRegistry(store, clock=lambda: now) for store in stores)
        await one.polled("w1", now, browser_sandbox=True)
        await one.polled("w1", now + SEEN_EVERY / 2)  # within the throttle: not written
        await other.polled("w2", now)
        seen = {w.worker_id: w for w in await other.workers()}
        assert set(seen) == {"w1", "w2"}, "a poll through either replica counts for both"
        assert (seen["w1"].last_seen, seen["w1"].browser_sandbox, seen["w1"].state) == (now, True, "idle")

        # Who holds what comes from the recordings themselves.
        await stores[0].create(
            NewRecording(
                id="rec_1",
                request={"url": "http://93.184.215.14/"},
                spec={"url": "http://93.184.215.14/", "duration": 60.0},
                upload={"bucket": None, "prefix": ""},
                created_at=now,
            )
        )
        assert await stores[0].claim_next(worker_id="w2", lease_id="L1", at=now, expires_at=now + 30) is not None
        seen = {w.worker_id: w for w in await one.workers()}
        assert (seen["w2"].state, seen["w2"].recordings, seen["w2"].idle_since) == ("busy", ("rec_1",), None)

        # A retiring mark set through one replica stops the other's claims.
        await stores[1].create(
            NewRecording(
                id="rec_2",
                request={"url": "http://93.184.215.14/"},
                spec={"url": "http://93.184.215.14/", "duration": 60.0},
                upload={"bucket": None, "prefix": ""},
                created_at=now + 1,
            )
        )
        assert await one.retire("w1")
        assert not await one.retire("never-polled")
        assert await stores[1].claim_next(worker_id="w1", lease_id="L2", at=now, expires_at=now + 30) is None
        assert [w.retiring for w in await other.workers() if w.worker_id == "w1"] == [True]

        # Pruning drops silent idle workers only; a busy one lapses through its lease instead.
        assert await other.prune(now + 1000, silent_for=100) == ["w1"]
        assert [w.worker_id for w in await one.workers()] == ["w2"]
        await one.forget("w2")
        assert await other.workers() == []
    finally:
        for store in stores:
            await store.close()


async def test_the_lock_passes_to_the_other_candidate_when_the_leaders_session_ends(
    postgres_dsn: str,  # noqa: F811
) -> None:
    roles: list[tuple[str, str]] = []

    def hooks(name: str) -> tuple[Any, Any]:
        async def elected() -> None:
            roles.append((name, "elected"))

        async def deposed() -> None:
            roles.append((name, "deposed"))

        return elected, deposed

    first, second = (
        AdvisoryLockLeader(postgres_dsn, identity="first"),
        AdvisoryLockLeader(postgres_dsn, identity="second"),
    )
    try:
        await first.start(*hooks("first"))
        await _until(lambda: first.is_leader)
        await second.start(*hooks("second"))
        await asyncio.sleep(2 * second.retry)
        assert (first.is_leader, second.is_leader) == (True, False), "one leader at a time"

        first._conn.terminate()  # the session ends as a killed process's would
        await _until(lambda: second.is_leader)
        assert not first.is_leader
        assert roles[:3] == [("first", "elected"), ("first", "deposed"), ("second", "elected")]

        await second.stop()  # hands over at once
        await _until(lambda: first.is_leader)
        assert roles[3:] == [("second", "deposed"), ("first", "elected")]
    finally:
        await first.stop()
        await second.stop()
    assert roles[-1] == ("first", "deposed")


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
