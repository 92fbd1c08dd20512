"""Webhooks from the outbox over real HTTP to a local receiver that checks the Standard Webhooks signature
like a caller would: order, retries with one id, the attempt cap, the backlog metrics, and the event
written with its state change."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook

from orchestrator.store.outbox import DeliveryStatus
from orchestrator.webhooks.compose import destination_of
from orchestrator.webhooks.delivery import backoff_delay
from orchestrator.webhooks.signing import secret_key, signature, signed_headers, verify
from tests.support.orchestrator import WEBHOOK_SECRET, RunningOrchestrator

FAST_RETRY = {"url_allowlist": ["127.0.0.1"], "webhook_backoff": 0.05, "webhook_attempts": 5}


@dataclass
class Receiver:
    """Counts every delivery attempt; the first `fail_first` attempts of each event answer 503."""

    fail_first: int = 0
    delay: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = json.loads(body)
        valid = verify(WEBHOOK_SECRET, request.headers, body)
        header_id = request.headers.get("webhook-id")
        self.attempts.append({"event_id": event["event_id"], "valid": valid, "header_id": header_id})
        if not valid:
            return web.Response(status=400)
        if self.delay:
            await asyncio.sleep(self.delay)
        tries = sum(1 for a in self.attempts if a["event_id"] == event["event_id"])
        if tries <= self.fail_first:
            return web.Response(status=503)
        self.events.setdefault(event["event_id"], event)
        return web.Response(status=204)

    def transitions(self) -> list[tuple[str | None, str]]:
        return [(e["old_state"], e["new_state"]) for e in self.events.values()]

    async def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver saw {self.transitions()} and {len(self.attempts)} attempts")
            await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[..., Any]]:
    made: list[Receiver] = []

    async def make(**kwargs: Any) -> Receiver:
        r = Receiver(**kwargs)
        app = web.Application()
        app.router.add_post("/hook", r.handle)
        r.server = TestServer(app, host="127.0.0.1")
        await r.server.start_server()
        made.append(r)
        return r

    yield make
    for r in made:
        assert r.server is not None
        await r.server.close()


async def _run_through_all_states(o: RunningOrchestrator, webhook_url: str) -> str:
    rid = (await o.api.create(webhook_url=webhook_url, metadata={"who": "test"})).body["id"]
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    for state in ("recording", "finalizing", "uploading"):
        assert (await worker.heartbeat(lease["lease_id"], state)).status == 200
    await worker.report(lease["lease_id"], "completed", location=o.location(lease))
    return rid


async def _metrics(o: RunningOrchestrator) -> str:
    return (await o.api.request("GET", "/metrics")).body.decode()


async def test_each_transition_is_delivered_once_signed_and_in_order(start_orchestrator, receiver):
    hook = await receiver()
    o = await start_orchestrator(**FAST_RETRY)
    rid = await _run_through_all_states(o, hook.url)
    await hook.wait_for(lambda r: ("uploading", "completed") in r.transitions())

    assert hook.transitions() == [
        (None, "queued"),
        ("queued", "starting"),
        ("starting", "recording"),
        ("recording", "finalizing"),
        ("finalizing", "uploading"),
        ("uploading", "completed"),
    ]
    assert all(a["valid"] for a in hook.attempts), "every delivery carries a valid signature"
    assert len(hook.attempts) == 6, "no failures, so no retries"
    assert all(a["header_id"] == a["event_id"] for a in hook.attempts)
    for event in hook.events.values():
        assert event["event_id"].startswith("evt_")
        assert event["recording_id"] == rid
        assert event["type"] == "recording.state_changed"
        assert event["recording"]["status"] == event["new_state"], "rendered when the change happened"
        assert event["recording"]["request"]["metadata"] == {"who": "test"}
    final = list(hook.events.values())[-1]
    assert final["recording"]["location"] == o.location({"recording_id": rid, "attempt": 1})


async def test_the_event_is_written_with_its_state_change(start_orchestrator, receiver):
    """Committed with the recording, before (and whether or not) anything is sent."""
    hook = await receiver()
    o = await start_orchestrator(**FAST_RETRY)
    await o.orchestrator.webhooks.stop()  # nothing is delivered from here on
    rid = (await o.api.create(webhook_url=hook.url)).body["id"]
    log = await o.orchestrator.store.deliveries(rid)
    assert [(d.status, d.attempts, json.loads(d.payload)["new_state"]) for d, _ in log] == [
        (DeliveryStatus.PENDING, 0, "queued")
    ]
    assert log[0][0].destination == destination_of(hook.url)
    no_hook = (await o.api.create()).body["id"]
    assert await o.orchestrator.store.deliveries(no_hook) == [], "no webhook_url, no event"
    await asyncio.sleep(0.3)
    assert hook.attempts == []


async def test_a_failing_receiver_gets_the_event_again_with_the_same_id(start_orchestrator, receiver):
    hook = await receiver(fail_first=2)
    o = await start_orchestrator(**FAST_RETRY)
    rid = (await o.api.create(webhook_url=hook.url)).body["id"]
    await hook.wait_for(lambda r: len(r.events) == 1)

    assert [a["event_id"] for a in hook.attempts] == [next(iter(hook.events))] * 3
    assert hook.transitions() == [(None, "queued")]
    assert next(iter(hook.events.values()))["recording_id"] == rid
    deadline = time.monotonic() + 5
    while 'orchestrator_webhook_deliveries_total{result="delivered"} 1.0' not in (text := await _metrics(o)):
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.05)
    assert 'orchestrator_webhook_deliveries_total{result="retried"} 2.0' in text
    log = (await o.api.request("GET", f"/v1/recordings/{rid}/webhooks")).body["items"]
    assert [a["status_code"] for a in log[0]["attempts"]] == [503, 503, 204]
    assert log[0]["status"] == "delivered" and log[0]["next_attempt_at"] is None


async def test_a_receiver_that_never_succeeds_is_given_up_on_after_the_attempt_cap(start_orchestrator, receiver):
    hook = await receiver(fail_first=1000)
    o = await start_orchestrator(**{**FAST_RETRY, "webhook_attempts": 3})
    rid = (await o.api.create(webhook_url=hook.url)).body["id"]
    await hook.wait_for(lambda r: len(r.attempts) >= 3)
    await asyncio.sleep(0.5)
    assert len(hook.attempts) == 3
    assert 'orchestrator_webhook_deliveries_total{result="failed"} 1.0' in await _metrics(o)
    (event,) = (await o.api.request("GET", f"/v1/recordings/{rid}/webhooks")).body["items"]
    assert (event["status"], len(event["attempts"]), event["last_error"]) == ("failed", 3, "HTTP 503")


async def test_the_backlog_is_measured_by_destination_and_age(start_orchestrator, receiver):
    hook = await receiver(fail_first=1000)
    o = await start_orchestrator(url_allowlist=["127.0.0.1"], webhook_backoff=30.0)
    await o.api.create(webhook_url=hook.url)
    await hook.wait_for(lambda r: len(r.attempts) >= 1)
    destination = destination_of(hook.url)
    deadline = time.monotonic() + 5
    while f'orchestrator_webhook_backlog{{destination="{destination}"}} 1.0' not in (text := await _metrics(o)):
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.1)
    oldest = next(line for line in text.splitlines() if line.startswith("orchestrator_webhook_oldest_pending_seconds"))
    assert 0 < float(oldest.split()[-1]) < 60
    await o.orchestrator.webhooks.stop()
    text = await _metrics(o)
    assert "orchestrator_webhook_backlog{" not in text, "a loop that stopped leaves the backlog to the leader"


async def test_a_slow_receiver_never_slows_the_state_machine(start_orchestrator, receiver):
    hook = await receiver(delay=3.0)
    o = await start_orchestrator(**FAST_RETRY)
    started = time.monotonic()
    rid = await _run_through_all_states(o, hook.url)
    assert time.monotonic() - started < 2.5, "transitions do not wait for deliveries"
    assert (await o.api.get(rid))["status"] == "completed"


async def test_webhooks_do_not_reach_private_addresses_without_the_allow_list(start_orchestrator, receiver):
    hook = await receiver()
    o = await start_orchestrator(webhook_backoff=0.05)
    r = await o.api.create(webhook_url=hook.url)
    assert r.status == 422
    assert r.body["error"]["code"] == "url_not_allowed"
    assert hook.attempts == []


def test_signatures_follow_standard_webhooks():
    body = b'{"event_id":"evt_1"}'
    digest = hmac.new(b"s3cret", b"evt_1.1700000000." + body, hashlib.sha256).digest()
    assert signature("s3cret", "evt_1", 1_700_000_000, body) == "v1," + base64.b64encode(digest).decode()
    headers = signed_headers("s3cret", "evt_1", 1_700_000_000, body)
    assert headers["webhook-id"] == "evt_1" and headers["webhook-timestamp"] == "1700000000"
    assert verify("s3cret", headers, body, now=1_700_000_010)
    assert not verify("s3cret", headers, body + b" ", now=1_700_000_010), "tampered body"
    assert not verify("other", headers, body, now=1_700_000_010), "wrong secret"
    assert not verify("s3cret", {**headers, "webhook-id": "evt_2"}, body, now=1_700_000_010), "another event's id"
    assert not verify("s3cret", headers, body, now=1_700_000_000 + 301), "stale"
    assert "webhook-signature" not in signed_headers(None, "evt_1", 1, body)
    key = b"0123456789abcdef0123456789abcdef"
    assert secret_key("whsec_" + base64.b64encode(key).decode()) == key, "whsec_ secrets are base64"
    assert secret_key("plain") == b"plain"
    unpadded = "whsec_" + base64.b64encode(key[:17]).decode().rstrip("=")
    assert secret_key(unpadded) == key[:17], "padding may be left out, as the standard's libraries allow"
    assert Webhook(unpadded).verify(body, signed_headers(unpadded, "evt_1", int(time.time()), body)) is not None


def test_backoff_doubles_with_jitter_up_to_the_cap():
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0), (500, 60.0)):
        delays = [backoff_delay(attempt, 1.0, 60.0) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1, "jittered"
