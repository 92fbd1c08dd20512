"""Webhooks over real HTTP to a local receiver that checks the HMAC signature like a caller would."""

from __future__ import annotations

import asyncio
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

from orchestrator.webhooks import sign, verify
from tests.support.orchestrator import WEBHOOK_SECRET, RunningOrchestrator

FAST_RETRY = {"url_allowlist": ["127.0.0.1"], "webhook_backoff": 0.05, "webhook_attempts": 5}


@dataclass
class Receiver:
    """Counts every delivery attempt; `fail_first[n]` makes the first n attempts of each event fail."""

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
        header = request.headers.get("X-Recorder-Signature", "")
        parts = dict(p.split("=", 1) for p in header.split(","))
        expected = hmac.new(WEBHOOK_SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
        event = json.loads(body)
        valid = hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300
        self.attempts.append(
            {"event_id": event["event_id"], "valid": valid, "header_id": request.headers.get("X-Recorder-Event-Id")}
        )
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
        assert event["recording_id"] == rid
        assert event["type"] == "recording.state_changed"
        assert event["recording"]["status"] == event["new_state"]
        assert event["recording"]["request"]["metadata"] == {"who": "test"}
    final = list(hook.events.values())[-1]
    assert final["recording"]["location"] == o.location({"recording_id": rid, "attempt": 1})


async def test_a_failing_receiver_gets_the_event_again_with_the_same_id(start_orchestrator, receiver):
    hook = await receiver(fail_first=2)
    o = await start_orchestrator(**FAST_RETRY)
    rid = (await o.api.create(webhook_url=hook.url)).body["id"]
    await hook.wait_for(lambda r: len(r.events) == 1)

    assert [a["event_id"] for a in hook.attempts] == [next(iter(hook.events))] * 3
    assert hook.transitions() == [(None, "queued")]
    assert next(iter(hook.events.values()))["recording_id"] == rid
    text = (await o.api.request("GET", "/metrics")).body.decode()
    assert 'orchestrator_webhook_deliveries_total{result="retried"} 2.0' in text
    assert 'orchestrator_webhook_deliveries_total{result="delivered"} 1.0' in text


async def test_a_receiver_that_never_succeeds_is_given_up_on(start_orchestrator, receiver):
    hook = await receiver(fail_first=1000)
    o = await start_orchestrator(**{**FAST_RETRY, "webhook_attempts": 3})
    await o.api.create(webhook_url=hook.url)
    await hook.wait_for(lambda r: len(r.attempts) >= 3)
    await asyncio.sleep(0.5)
    assert len(hook.attempts) == 3
    text = (await o.api.request("GET", "/metrics")).body.decode()
    assert 'orchestrator_webhook_deliveries_total{result="failed"} 1.0' in text


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


def test_signature_helpers_match_the_documented_scheme():
    body = b'{"event_id":"evt_1"}'
    header = sign("s3cret", 1_700_000_000, body)
    digest = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={digest}"
    assert verify("s3cret", header, body, now=1_700_000_010)
    assert not verify("s3cret", header, body + b" ", now=1_700_000_010), "tampered body"
    assert not verify("other", header, body, now=1_700_000_010), "wrong secret"
    assert not verify("s3cret", header, body, now=1_700_000_000 + 301), "stale"
