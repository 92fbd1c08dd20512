"""The real `orchestrator serve` process: killed with SIGKILL mid-recording and restarted on the same
database, it takes the recording up again; SIGTERM drains gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.orchestrator import API_TOKEN, CONTINUE, Api, FakeWorker, leased_location


async def _heartbeat_until_stopped(worker: FakeWorker, lease_id: str, replies: list[int], stop: asyncio.Event) -> None:
    """What a worker does while the orchestrator is away: keep recording, keep trying."""
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            r = await worker.heartbeat(lease_id, "recording", fps=30.0)
            replies.append(r.status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.3)


async def test_sigkill_mid_recording_then_restart_completes_it(orchestrator_process):
    ttl = 3.0
    proc = orchestrator_process(ORCHESTRATOR_LEASE_TTL=str(ttl), ORCHESTRATOR_LEASE_CHECK_INTERVAL="0.2")
    proc.start()
    api = Api(proc.base_url, API_TOKEN)
    worker = FakeWorker(proc.base_url, "w1")
    stop = asyncio.Event()
    try:
        rid = (await api.create()).body["id"]
        lease = (await worker.lease(wait=5)).body
        assert lease["recording_id"] == rid
        waiting = (await api.create(metadata={"second": True})).body["id"]
        replies: list[int] = []
        beating = asyncio.create_task(_heartbeat_until_stopped(worker, lease["lease_id"], replies, stop))
        await api.wait_status(rid, "recording", timeout=10)

        proc.signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # Down for longer than a lease TTL: without the restart grace the lease would lapse at once.
        await asyncio.sleep(ttl + 1.5)
        before = len(replies)
        proc.start()

        # The restarted process accepts the heartbeats of the lease granted by the one that died.
        deadline = time.monotonic() + 15
        while len(replies) < before + 5:
            assert time.monotonic() < deadline, f"heartbeats after the restart: {replies[before:]}"
            await asyncio.sleep(0.1)
        assert replies[before:] and set(replies[before:]) == {200}, replies
        rec = await api.get(rid)
        assert (rec["status"], rec["attempts"], rec["worker"]) == ("recording", 1, "w1")
        assert (await api.get(waiting))["status"] == "queued", "queued work is still queued"

        stop.set()
        await beating
        location = leased_location(lease, Path(proc.env["RECORDS_DIR"]))
        done = await worker.report(lease["lease_id"], "completed", location=location)
        assert done.status == 200, done.body
        rec = await api.get(rid)
        assert rec["status"] == "completed"
        assert rec["attempts"] == 1
        assert rec["location"] == location
    finally:
        stop.set()
        await api.close()
        await worker.close()


async def test_sigterm_drains_then_tells_recordings_to_stop(orchestrator_process):
    proc = orchestrator_process(ORCHESTRATOR_SHUTDOWN_GRACE="1", ORCHESTRATOR_SHUTDOWN_STOP_WAIT="20")
    proc.start()
    api = Api(proc.base_url, API_TOKEN)
    worker = FakeWorker(proc.base_url, "w1")
    try:
        rid = (await api.create()).body["id"]
        lease = (await worker.lease(wait=5)).body
        assert (await worker.heartbeat(lease["lease_id"], "recording")).body == CONTINUE

        proc.signal(signal.SIGTERM)
        # Still serving the running recording; within the grace it may go on, after it it must stop.
        actions = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = await worker.heartbeat(lease["lease_id"], "recording")
            actions.append(r.body["action"])
            if actions[-1] == "stop":
                break
            await asyncio.sleep(0.2)
        assert actions[-1] == "stop", actions
        assert (await worker.lease(wait=0.2)).status == 204, "no new leases while draining"

        location = leased_location(lease, Path(proc.env["RECORDS_DIR"]))
        assert (await worker.report(lease["lease_id"], "completed", location=location)).status == 200
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        await api.close()
        await worker.close()

    # The stop was graceful and durable: a new process shows the recording completed.
    proc.start()
    api = Api(proc.base_url, API_TOKEN)
    try:
        assert (await api.get(rid))["status"] == "completed"
    finally:
        await api.close()


def test_every_setting_is_a_flag_and_bad_values_are_named(capsys):
    from orchestrator.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for flag, env in (
        ("--lease-ttl", "ORCHESTRATOR_LEASE_TTL"),
        ("--api-tokens", "API_TOKENS"),
        ("--db", "ORCHESTRATOR_DB"),
    ):
        assert flag in help_text and env in help_text
    assert main(["serve", "--lease-ttl", "-1", "--pool-backend", "none"]) == 2
    assert "ORCHESTRATOR_LEASE_TTL (--lease-ttl)" in capsys.readouterr().err
