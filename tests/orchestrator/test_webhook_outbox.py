"""The webhook outbox as a receiver and an operator see it: nothing lost across a SIGKILL, failing
receivers that delay nobody else, signatures an independent library verifies, the delivery log and
redelivery under caller scoping, the retry horizon, and unsigned webhooks refused on Kubernetes."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from orchestrator.config import OrchestratorSettings
from tests.support.orchestrator import API_TOKEN, WORKER_TOKEN, Api, FakeWorker, RunningOrchestrator

ALICE, BOB = "alice-token", "bob-token"
TENANTS = {"api_tokens": [f"alice:{ALICE}", f"bob:{BOB}"]}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[TestServer]]]:
    """Receivers on 127.0.0.1, each on a port (so a destination) of its own; closed at the end."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> TestServer:
        app = web.Application()
        app.router.add_post("/hook", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def _log(api: Api, rid: str) -> list[dict[str, Any]]:
    r = await api.request("GET", f"/v1/recordings/{rid}/webhooks")
    assert r.status == 200, r.body
    return r.body["items"]


# durability: a receiver down and the orchestrator SIGKILLed mid-backoff


async def test_events_survive_a_sigkill_mid_backoff_and_every_attempt_is_logged(orchestrator_process, serve):
    down = True
    seen: dict[str, list[int]] = defaultdict(list)  # webhook-id: statuses answered

    async def receiver(request: web.Request) -> web.Response:
        await request.read()
        status = 503 if down else 204
        seen[request.headers["webhook-id"]].append(status)
        return web.Response(status=status)

    hook = str((await serve(receiver)).make_url("/hook"))
    env = {"URL_ALLOWLIST": "127.0.0.1", "ORCHESTRATOR_WEBHOOK_BACKOFF": "3", "ORCHESTRATOR_WEBHOOK_MAX_BACKOFF": "3"}
    first = orchestrator_process(**env)
    first.start()
    api, worker = Api(first.base_url, API_TOKEN), FakeWorker(first.base_url, "w1", WORKER_TOKEN)
    try:
        rids = [(await api.create(webhook_url=hook)).body["id"] for _ in range(3)]
        lease = (await worker.lease(wait=5)).body  # a second event (starting), queued behind the first
        assert lease["recording_id"] in rids

        async def failed_twice_and_waiting() -> bool:
            logs = [await _log(api, rid) for rid in rids]
            firsts = [log[0] for log in logs]
            return all(len(e["attempts"]) >= 2 and e["status"] == "pending" for e in firsts) and all(
                len(e["attempts"]) == len(seen[e["event_id"]]) for log in logs for e in log
            )

        await _eventually(failed_twice_and_waiting, 30, "two failed attempts of each first event")
        first.kill()  # mid-backoff: every attempt so far logged, the next one at least 1.5 s away
    finally:
        await api.close()
        await worker.close()
    down = False

    second = orchestrator_process(**env)
    second.start()
    api = Api(second.base_url, API_TOKEN)
    try:

        async def all_delivered() -> bool:
            logs = [await _log(api, rid) for rid in rids]
            return all(e["status"] == "delivered" for log in logs for e in log)

        await _eventually(all_delivered, 30, "every event delivered after the restart")
        logs = {rid: await _log(api, rid) for rid in rids}
    finally:
        await api.close()
    events = [e for log in logs.values() for e in log]
    assert len(events) == 4, "three queued events and one starting event"
    assert [e["new_state"] for e in logs[lease["recording_id"]]] == ["queued", "starting"]
    assert set(seen) == {e["event_id"] for e in events}, "every event id arrived, none is lost"
    for event in events:
        statuses = [a["status_code"] for a in event["attempts"]]
        assert statuses == seen[event["event_id"]], "the log shows every attempt the receiver saw"
        assert statuses[-1] == 204 and seen[event["event_id"]].count(204) == 1
    assert all(len(log[0]["attempts"]) >= 3 for log in logs.values()), "failed before the kill, delivered after"


# isolation: failing receivers delay nobody else


async def test_a_healthy_receiver_gets_its_event_within_a_second_while_sixteen_fail(start_orchestrator, serve):
    hung: list[str] = []

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async def hanging(request: web.Request) -> web.Response:
        hung.append(request.headers["webhook-id"])
        await asyncio.sleep(30)  # past the attempt timeout
        return web.Response(status=204)

    arrived = asyncio.Event()

    async def healthy(request: web.Request) -> web.Response:
        arrived.set()
        return web.Response(status=204)

    failing = [await serve(unavailable) for _ in range(8)] + [await serve(hanging) for _ in range(8)]
    good = await serve(healthy)
    o: RunningOrchestrator = await start_orchestrator(
        url_allowlist=["127.0.0.1"],
        webhook_backoff=0.2,
        webhook_max_backoff=0.5,
        webhook_timeout=5.0,
        webhook_concurrency=64,
    )
    # Many recordings per hanging receiver: far more due events than one read of the outbox takes in.
    for n, server in enumerate(failing):
        for _ in range(4 if n < 8 else 24):
            assert (await o.api.create(webhook_url=str(server.make_url("/hook")))).status == 202
    await _eventually(lambda: _true(len(set(hung)) >= 16), 10, "every hanging receiver holding two attempts")
    await asyncio.sleep(0.5)  # the 503 receivers are in their fast retry cycle
    started = time.monotonic()
    assert (await o.api.create(webhook_url=str(good.make_url("/hook")))).status == 202
    await asyncio.wait_for(arrived.wait(), timeout=5)
    assert time.monotonic() - started < 1.0, "the healthy receiver waited for the failing ones"


async def _true(value: bool) -> bool:
    return value


# signatures, as an independent receiver verifies them


async def test_signatures_verify_with_the_standardwebhooks_package(start_orchestrator, serve):
    key = os.urandom(32)
    alice_secret = "whsec_" + base64.b64encode(key).decode()
    bob_secret = "bob's plain secret"  # not whsec_: its UTF-8 bytes are the key
    verified: dict[str, Any] = {}
    refused: list[str] = []
    crossed: list[str] = []

    def receiver(who: str, library: Webhook, other: Webhook) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                verified[who] = library.verify(body, dict(request.headers))
            except WebhookVerificationError:
                refused.append(who)
                return web.Response(status=400)
            try:
                other.verify(body, dict(request.headers))
                crossed.append(who)  # the other caller's key verified this caller's event
            except WebhookVerificationError:
                pass
            return web.Response(status=204)

        return handle

    alice_hook = await serve(receiver("alice", Webhook(alice_secret), Webhook(bob_secret.encode())))
    bob_hook = await serve(receiver("bob", Webhook(bob_secret.encode()), Webhook(alice_secret)))
    o = await start_orchestrator(
        url_allowlist=["127.0.0.1"], webhook_secrets=[f"alice:{alice_secret}", f"bob:{bob_secret}"], **TENANTS
    )
    alice_rid = (await o.client(ALICE).create(webhook_url=str(alice_hook.make_url("/hook")))).body["id"]
    bob_rid = (await o.client(BOB).create(webhook_url=str(bob_hook.make_url("/hook")))).body["id"]
    await _eventually(lambda: _true(len(verified) == 2), 10, "both receivers verifying an event")
    assert refused == [] and crossed == []
    assert verified["alice"]["recording_id"] == alice_rid and verified["bob"]["recording_id"] == bob_rid


# the delivery log, redelivery and caller scoping


async def test_the_delivery_log_and_redelivery_are_scoped_to_the_caller(start_orchestrator, serve):
    received: list[str] = []

    async def receiver(request: web.Request) -> web.Response:
        received.append(request.headers["webhook-id"])
        return web.Response(status=204)

    hook = await serve(receiver)
    o = await start_orchestrator(url_allowlist=["127.0.0.1"], **TENANTS)
    alice, bob = o.client(ALICE), o.client(BOB)
    rid = (await alice.create(webhook_url=str(hook.make_url("/hook")))).body["id"]
    await _eventually(lambda: _true(len(received) == 1), 10, "the first delivery")

    async def delivered() -> bool:
        return (await _log(alice, rid))[0]["status"] == "delivered"

    await _eventually(delivered, 5, "the log to show the delivery")
    (event,) = await _log(alice, rid)
    assert event["event_id"] == received[0]
    assert (event["new_state"], event["old_state"], event["next_attempt_at"]) == ("queued", None, None)
    (attempt,) = event["attempts"]
    assert attempt["number"] == 1 and attempt["status_code"] == 204 and 0 <= attempt["latency"] < 5

    # Another caller's recording and event answer exactly like missing ones.
    missing_rec = await bob.request("GET", "/v1/recordings/rec_missing/webhooks")
    foreign_rec = await bob.request("GET", f"/v1/recordings/{rid}/webhooks")
    assert (foreign_rec.status, missing_rec.status) == (404, 404)
    assert foreign_rec.body["error"]["message"].replace(rid, "X") == missing_rec.body["error"]["message"].replace(
        "rec_missing", "X"
    )
    missing_evt = await bob.request("POST", "/v1/webhooks/evt_missing/redeliver")
    foreign_evt = await bob.request("POST", f"/v1/webhooks/{event['event_id']}/redeliver")
    assert (foreign_evt.status, missing_evt.status) == (404, 404)
    assert "GET /v1/recordings/{id}/webhooks" in missing_evt.body["error"]["message"]
    assert foreign_evt.body["error"]["message"].replace(event["event_id"], "X") == missing_evt.body["error"][
        "message"
    ].replace("evt_missing", "X")
    await asyncio.sleep(0.3)
    assert received == [event["event_id"]], "bob's redelivery sent nothing"

    again = await alice.request("POST", f"/v1/webhooks/{event['event_id']}/redeliver")
    assert again.status == 202, again.body
    assert again.body["status"] == "pending" and len(again.body["attempts"]) == 1
    await _eventually(lambda: _true(len(received) == 2), 5, "the redelivery")
    assert received == [event["event_id"]] * 2, "the same webhook-id: receivers dedupe by it"
    await _eventually(delivered, 5, "the log to show the redelivery")
    assert [a["number"] for a in (await _log(alice, rid))[0]["attempts"]] == [1, 2]


# the horizon


async def test_an_event_is_given_up_after_its_horizon(start_orchestrator, serve):
    attempts: list[float] = []

    async def down(request: web.Request) -> web.Response:
        attempts.append(time.monotonic())
        return web.Response(status=503)

    hook = await serve(down)
    o = await start_orchestrator(
        url_allowlist=["127.0.0.1"], webhook_backoff=0.2, webhook_max_backoff=0.4, webhook_horizon=2.0
    )
    rid = (await o.api.create(webhook_url=str(hook.make_url("/hook")))).body["id"]

    async def failed() -> bool:
        return (await _log(o.api, rid))[0]["status"] == "failed"

    await _eventually(failed, 10, "the event given up")
    (event,) = await _log(o.api, rid)
    assert len(event["attempts"]) == len(attempts) >= 3, "retried until the horizon"
    assert event["next_attempt_at"] is None and event["last_error"] == "HTTP 503"
    assert attempts[-1] - attempts[0] < 2.0 + 0.5, "no attempt long after the horizon"
    await asyncio.sleep(1.0)
    assert len(attempts) == len(event["attempts"]), "nothing after giving up"


# unsigned webhooks


def test_unsigned_webhooks_are_refused_on_kubernetes(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    base: dict[str, Any] = {"api_tokens": ["alice:a", "bob:b"], "worker_token": "w"}
    with pytest.raises(ValueError, match=r"webhooks of alice, bob would go out unsigned.*ORCHESTRATOR_WEBHOOK_SECRET"):
        OrchestratorSettings(**base)
    with pytest.raises(ValueError, match=r"webhooks of bob would go out unsigned"):
        OrchestratorSettings(**base, webhook_secrets=["alice:s"])
    assert OrchestratorSettings(**base, webhook_secrets=["alice:s", "bob:t"]).unsigned_webhook_callers == []
    assert OrchestratorSettings(**base, webhook_secret="shared").unsigned_webhook_callers == []
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert OrchestratorSettings(**base).unsigned_webhook_callers == ["alice", "bob"], "locally: a warning"
    with pytest.raises(ValueError, match=r"whsec_ must be base64"):
        OrchestratorSettings(**base, webhook_secret="whsec_not base64!")


def test_orchestrator_serve_refuses_to_start_with_unsigned_webhooks_on_kubernetes(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "POOL_", "API_"))}
    env |= {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "API_TOKENS": "alice:a", "WORKER_TOKEN": "w", "POOL_BACKEND": "none"}
    env["ORCHESTRATOR_STATE_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "webhooks of alice would go out unsigned" in done.stderr
    assert "ORCHESTRATOR_WEBHOOK_SECRETS" in done.stderr


# the loop sleeps: nothing in flight or held behind an earlier event makes it look again at once


def _count_looks(o: RunningOrchestrator) -> list[int]:
    """How many times the delivery loop asked the store what is due (one counter, updated in place)."""
    store = o.orchestrator.store
    looks = [0]
    due, next_at = store.due_deliveries, store.next_delivery_at

    async def counted_due(*args: Any, **kwargs: Any) -> Any:
        looks[0] += 1
        return await due(*args, **kwargs)

    async def counted_next(*args: Any, **kwargs: Any) -> Any:
        looks[0] += 1
        return await next_at(*args, **kwargs)

    store.due_deliveries = counted_due  # type: ignore[method-assign]
    store.next_delivery_at = counted_next  # type: ignore[method-assign]
    return looks


async def test_the_loop_sleeps_while_an_attempt_is_out_and_while_events_wait_behind_a_backoff(
    start_orchestrator, serve
):
    hanging = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        hanging.set()
        await asyncio.sleep(3)
        return web.Response(status=204)

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503)

    slow_hook, down_hook = await serve(slow), await serve(down)
    o = await start_orchestrator(url_allowlist=["127.0.0.1"], webhook_backoff=20.0, webhook_timeout=10.0)
    await o.api.create(webhook_url=str(slow_hook.make_url("/hook")))
    await asyncio.wait_for(hanging.wait(), 10)
    looks = _count_looks(o)
    await asyncio.sleep(1.5)
    assert looks[0] <= 10, f"{looks[0]} looks at the store in 1.5 s while one attempt was out"

    # A recording's second event waits behind its first, which is backing off for 10-20 s.
    rid = (await o.api.create(webhook_url=str(down_hook.make_url("/hook")))).body["id"]

    async def backing_off() -> bool:
        return bool((await _log(o.api, rid))[0]["attempts"])

    await _eventually(backing_off, 10, "the first attempt to fail")
    assert (await o.api.request("DELETE", f"/v1/recordings/{rid}")).status == 202
    assert [e["status"] for e in await _log(o.api, rid)] == ["pending", "pending"]
    looks[0] = 0
    await asyncio.sleep(1.5)
    assert looks[0] <= 10, f"{looks[0]} looks at the store in 1.5 s with nothing startable"


# a name that does not resolve for a while is retried, not given up


async def test_an_event_whose_host_does_not_resolve_for_a_while_is_retried(start_orchestrator, serve):
    received: list[str] = []

    async def receiver(request: web.Request) -> web.Response:
        received.append(request.headers["webhook-id"])
        return web.Response(status=204)

    hook = await serve(receiver)
    dns_down = asyncio.Event()

    async def resolve(host: str) -> list[str]:
        if dns_down.is_set():
            raise OSError("Temporary failure in name resolution")
        return ["127.0.0.1"] if host == "localhost" else []

    o = await start_orchestrator(
        url_allowlist=["127.0.0.1"], webhook_backoff=0.3, webhook_max_backoff=0.5, resolve=resolve
    )
    # The policy's resolver says whether the name resolves; the connection itself finds localhost as usual.
    rid = (await o.api.create(webhook_url=f"http://localhost:{hook.port}/hook")).body["id"]
    await _eventually(lambda: _true(len(received) == 1), 10, "the first delivery")
    (event,) = await _log(o.api, rid)

    dns_down.set()
    assert (await o.api.request("POST", f"/v1/webhooks/{event['event_id']}/redeliver")).status == 202

    async def failed_to_resolve() -> bool:
        return len((await _log(o.api, rid))[0]["attempts"]) >= 3

    await _eventually(failed_to_resolve, 10, "attempts while the name does not resolve")
    (event,) = await _log(o.api, rid)
    assert event["status"] == "pending", "a resolver failure is not a refusal: the event is retried"
    assert "does not resolve" in (event["last_error"] or "")
    dns_down.clear()

    async def delivered() -> bool:
        return (await _log(o.api, rid))[0]["status"] == "delivered"

    await _eventually(delivered, 10, "the delivery once the name resolves again")
    assert received == [event["event_id"]] * 2
