"""Worker leases over real HTTP: long-poll, heartbeats, lapses and retries, stale leases, capacity."""

from __future__ import annotations

import asyncio
import time

from tests.support.orchestrator import CONTINUE, FakeWorker

# Short leases so lapses happen within a test; heartbeats well inside them so a busy 2-core machine
# cannot make a healthy worker look dead.
FAST = {"lease_ttl": 3.0, "lease_check_interval": 0.2}


async def test_long_poll_returns_as_soon_as_a_recording_is_queued(start_orchestrator):
    o = await start_orchestrator()
    worker = o.worker("w1")

    started = time.monotonic()
    poll = asyncio.create_task(worker.lease(wait=20))
    await asyncio.sleep(0.5)
    assert not poll.done(), "nothing is queued yet: the poll waits"
    rid = (await o.api.create()).body["id"]
    queued_at = time.monotonic()
    r = await asyncio.wait_for(poll, timeout=10)
    assert r.status == 200
    assert r.body["recording_id"] == rid
    assert r.body["attempt"] == 1
    assert r.body["lease_ttl"] == 15.0
    # Woken by the new recording, not by the end of the 20 s wait.
    assert time.monotonic() - queued_at < 5
    assert time.monotonic() - started >= 0.5

    rec = await o.api.get(rid)
    assert (rec["status"], rec["worker"], rec["attempts"]) == ("starting", "w1", 1)


async def test_an_empty_poll_waits_then_answers_204(start_orchestrator):
    o = await start_orchestrator()
    started = time.monotonic()
    r = await o.worker("w1").lease(wait=1.0)
    elapsed = time.monotonic() - started
    assert r.status == 204
    assert 0.9 <= elapsed < 10


async def test_oldest_queued_recording_is_leased_first(start_orchestrator):
    o = await start_orchestrator()
    ids = [(await o.api.create(metadata={"n": i})).body["id"] for i in range(3)]
    got = [(await o.worker(f"w{i}").lease(wait=2)).body["recording_id"] for i in range(3)]
    assert got == ids


async def test_heartbeats_renew_the_lease_and_carry_progress(start_orchestrator):
    o = await start_orchestrator(**FAST)
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body

    # Two TTLs of heartbeats every 0.4 s: the lease never lapses.
    deadline = time.monotonic() + 2 * FAST["lease_ttl"]
    elapsed = 0.0
    while time.monotonic() < deadline:
        elapsed += 0.4
        r = await worker.heartbeat(lease["lease_id"], "recording", elapsed=elapsed, fps=30.0, frames=int(elapsed * 30))
        assert r.status == 200, r.body
        assert r.body == CONTINUE
        await asyncio.sleep(0.4)
    rec = await o.api.get(rid)
    assert (rec["status"], rec["attempts"], rec["worker"]) == ("recording", 1, "w1")
    assert rec["progress"]["fps"] == 30.0
    assert rec["progress"]["elapsed"] == elapsed

    # Forward only: a late "starting" heartbeat does not move it back.
    await worker.heartbeat(lease["lease_id"], "starting")
    assert (await o.api.get(rid))["status"] == "recording"
    await worker.heartbeat(lease["lease_id"], "uploading")
    assert (await o.api.get(rid))["status"] == "uploading"


async def test_a_lapsed_lease_is_retried_on_another_worker_then_fails_with_worker_lost(start_orchestrator):
    o = await start_orchestrator(max_attempts=2, **FAST)
    ttl = FAST["lease_ttl"]
    rid = (await o.api.create()).body["id"]
    first, second = o.worker("first"), o.worker("second")
    lease1 = (await first.lease(wait=5)).body
    await first.heartbeat(lease1["lease_id"], "recording", fps=30.0)
    silent_from = time.monotonic()

    # `first` goes silent, then comes back asking for work, while `second` waits idle too. When the
    # lease lapses the recording is queued again and goes to `second`, not back to `first`.
    to_second = asyncio.create_task(second.lease(wait=20))
    to_first = asyncio.create_task(first.lease(wait=ttl + 2))
    r = await asyncio.wait_for(to_second, timeout=25)
    retried_after = time.monotonic() - silent_from
    assert r.status == 200, r.body
    assert (r.body["recording_id"], r.body["attempt"]) == (rid, 2)
    assert ttl * 0.9 <= retried_after < ttl + 10, "lapsed after the TTL, detected within a few checks"
    rec = await o.api.get(rid)
    assert (rec["worker"], rec["attempts"]) == ("second", 2)

    # The old lease is dead: its worker is told so, and its poll got nothing.
    assert (await first.heartbeat(lease1["lease_id"], "recording")).status == 410
    assert (await first.report(lease1["lease_id"], "completed")).status == 410
    assert (await to_first).status == 204

    # The second worker dies too: attempts are used up, so the recording fails with the reason.
    rec = await o.api.wait_status(rid, "failed", timeout=ttl + 15)
    assert rec["attempts"] == 2
    assert rec["error"]["code"] == "worker_lost"
    message = rec["error"]["message"]
    assert "second" in message
    assert "last heard from" in message
    assert "2 attempt" in message


async def test_a_lapsed_recording_says_what_the_pool_saw_kill_its_worker(start_orchestrator):
    o = await start_orchestrator(max_attempts=1, **FAST)
    rid = (await o.api.create()).body["id"]
    worker = o.worker("pod-7")
    lease = (await worker.lease(wait=5)).body
    await worker.heartbeat(lease["lease_id"], "recording", fps=30.0)
    # The pool backend saw the pod die (the autoscaler notes what it lists as failed).
    o.orchestrator.registry.note_failure("pod-7", "OOMKilled")
    rec = await o.api.wait_status(rid, "failed", timeout=FAST["lease_ttl"] + 15)
    assert rec["error"]["code"] == "worker_lost"
    assert "pod-7" in rec["error"]["message"] and "OOMKilled" in rec["error"]["message"], rec["error"]


async def test_a_report_after_the_lease_lapsed_is_refused(start_orchestrator):
    o = await start_orchestrator(max_attempts=1, **FAST)
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    await o.api.wait_status(rid, "failed", timeout=15)
    r = await worker.report(lease["lease_id"], "completed", location="s3://b/k")
    assert r.status == 410
    assert r.body["error"]["code"] == "lease_gone"
    rec = await o.api.get(rid)
    assert rec["status"] == "failed"
    assert rec["location"] is None


async def test_another_workers_lease_is_not_yours(start_orchestrator):
    o = await start_orchestrator()
    await o.api.create()
    owner, thief = o.worker("owner"), o.worker("thief")
    lease = (await owner.lease(wait=5)).body
    r = await thief.heartbeat(lease["lease_id"], "recording")
    assert r.status == 410
    assert (await owner.heartbeat(lease["lease_id"], "recording")).status == 200


async def test_a_lapse_after_a_cancel_ends_cancelled_not_retried(start_orchestrator):
    o = await start_orchestrator(**FAST)
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w1")
    await worker.lease(wait=5)
    assert (await o.api.request("DELETE", f"/v1/recordings/{rid}")).status == 202
    rec = await o.api.wait_status(rid, "cancelled", "queued", timeout=15)
    assert rec["status"] == "cancelled"
    assert rec["attempts"] == 1


async def test_capacity_limits_concurrent_leases_and_the_extra_recording_queues(start_orchestrator):
    o = await start_orchestrator(pool_capacity=2)
    ids = [(await o.api.create(metadata={"n": i})).body["id"] for i in range(3)]
    workers = [o.worker(f"w{i}") for i in range(3)]
    leases = [(await w.lease(wait=2)) for w in workers[:2]]
    assert [lease.status for lease in leases] == [200, 200]

    # A third worker is idle, but the machine's capacity is taken: the third recording queues.
    started = time.monotonic()
    waiting = asyncio.create_task(workers[2].lease(wait=15))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    assert (await o.api.get(ids[2]))["status"] == "queued"
    pool = (await o.api.request("GET", "/v1/pool")).body
    assert (pool["active"], pool["queued"], pool["capacity"]) == (2, 1, 2)

    # A recording ends: its slot goes to the waiting worker at once.
    first = leases[0].body
    assert (await workers[0].report(first["lease_id"], "completed", location=o.location(first))).status == 200
    r = await asyncio.wait_for(waiting, timeout=10)
    assert r.status == 200
    assert r.body["recording_id"] == ids[2]
    assert time.monotonic() - started < 10


async def test_a_worker_with_no_capacity_or_retiring_gets_no_lease(start_orchestrator):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    full = o.worker("full")
    assert (await full.lease(wait=0.3, capacity=0)).status == 204
    retiring = o.worker("retiring")
    assert (await retiring.lease(wait=0.1, capacity=0)).status == 204
    assert o.orchestrator.registry.mark_retiring("retiring")
    assert (await retiring.lease(wait=0.5)).status == 204
    assert (await o.api.get(rid))["status"] == "queued"
    assert (await o.worker("fresh").lease(wait=2)).body["recording_id"] == rid


async def test_stop_all_tells_every_running_recording_to_stop(start_orchestrator):
    o = await start_orchestrator()
    await o.api.create()
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    assert (await worker.heartbeat(lease["lease_id"], "recording")).body == CONTINUE
    o.orchestrator.scheduler.drain()
    await o.api.create()
    assert (await o.worker("w2").lease(wait=0.3)).status == 204, "draining: no new leases"
    o.orchestrator.scheduler.stop_all()
    drained = (await worker.heartbeat(lease["lease_id"], "recording")).body
    assert drained == {"action": "stop", "pause": False, "stop_reason": "shutdown"}


async def test_drain_waits_for_running_recordings_within_the_grace(start_orchestrator):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker: FakeWorker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body

    async def finish_soon() -> None:
        await asyncio.sleep(0.5)
        await worker.report(lease["lease_id"], "completed", location=o.location(lease))

    finisher = asyncio.create_task(finish_soon())
    started = time.monotonic()
    await o.orchestrator.drain(grace=20, stop_wait=20)
    await finisher
    assert time.monotonic() - started < 15, "drain returns once nothing is active"
    assert not o.orchestrator.scheduler.stopping_all, "finished within the grace: nobody was told to stop"
    assert (await o.api.get(rid))["status"] == "completed"


async def test_the_worker_that_lost_a_recording_gets_it_back_when_no_one_else_is_there(start_orchestrator):
    o = await start_orchestrator(**FAST)
    rid = (await o.api.create()).body["id"]
    worker = o.worker("only")
    assert (await worker.lease(wait=5)).status == 200
    await o.api.wait_status(rid, "queued", timeout=15)
    r = await worker.lease(wait=10)
    assert r.status == 200
    assert (r.body["recording_id"], r.body["attempt"]) == (rid, 2)


def test_the_state_table():
    from orchestrator.states import ACTIVE, ENDED, State, can, is_forward, sources

    assert [s.value for s in ACTIVE] == ["starting", "waiting", "recording", "finalizing", "uploading"]
    assert can(State.QUEUED, State.STARTING) and can(State.QUEUED, State.CANCELLED)
    assert not can(State.QUEUED, State.RECORDING), "only a lease starts a recording"
    assert not can(State.QUEUED, State.COMPLETED)
    for final in ENDED:
        assert [s for s in State if can(final, s)] == [State.PURGED], f"{final} is final, but for its purge"
    assert not any(can(State.PURGED, s) for s in State), "purged is final"
    for active in ACTIVE:
        assert can(active, State.QUEUED), "a lapsed lease is retried"
        assert all(can(active, end) for end in ENDED)
        assert not can(active, State.PURGED), "only an ended recording is purged"
    assert sources(State.PURGED) == ENDED
    assert not can(State.UPLOADING, State.RECORDING), "never backwards"
    assert is_forward(State.STARTING, State.FINALIZING) and not is_forward(State.RECORDING, State.STARTING)
    assert sources(State.STARTING) == {State.QUEUED}
    assert sources(State.QUEUED) == set(ACTIVE)


async def test_an_upload_pending_report_keeps_the_lease_until_the_final_report(start_orchestrator):
    o = await start_orchestrator(s3_bucket="bucket")
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w1")
    granted = (await worker.lease(wait=5)).body
    lease = granted["lease_id"]
    await worker.heartbeat(lease, "recording")
    # The file waits on the worker's own disk: a place the orchestrator neither computes nor serves.
    local = f"file:///records/{rid}/attempt-{granted['attempt']}/rec.mp4"
    r = await worker.report(lease, "completed", location=local, upload_pending=True)
    assert (r.status, r.body) == (200, CONTINUE)
    rec = await o.api.get(rid)
    assert (rec["status"], rec["location"]) == ("uploading", None)
    assert (await worker.heartbeat(lease, "uploading")).status == 200, "the lease is still the worker's"
    await worker.report(lease, "completed", location=o.location(granted))
    rec = await o.api.get(rid)
    assert (rec["status"], rec["location"]) == ("completed", o.location(granted))
