"""Callers are tenants: each named token sees and acts on its own recordings only.

Caller B is the attacker: it knows (or guesses) the id of caller A's recording and tries every route.
Each answers exactly as for a recording that does not exist, and no list ever shows A's recordings.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from orchestrator.api.bearer import BearerAuth
from orchestrator.config import OrchestratorSettings, derived_name
from orchestrator.webhooks.signing import verify
from tests.support.orchestrator import CONTINUE, WEBHOOK_SECRET, WORKER_TOKEN, RunningOrchestrator

A, B, ADMIN = "token-of-a", "token-of-b", "token-of-admin"
TENANTS = {"api_tokens": [f"alice:{A}", f"bob:{B}"], "api_admin_token": ADMIN}


async def _tenants(start_orchestrator: Any, **overrides: Any) -> tuple[RunningOrchestrator, Any, Any, Any]:
    o = await start_orchestrator(**{**TENANTS, **overrides})
    return o, o.client(A), o.client(B), o.client(ADMIN)


def _as_missing(body: dict[str, Any], rid: str) -> dict[str, Any]:
    """The body with the id replaced, to compare with the answer for an id that does not exist."""
    return {"error": {k: v.replace(rid, "rec_missing") for k, v in body["error"].items()}}


async def test_another_callers_recording_is_answered_like_a_missing_one(start_orchestrator):
    _o, alice, bob, _ = await _tenants(start_orchestrator)
    rid = (await alice.create()).body["id"]
    missing = {
        (method, path): await bob.request(method, path.format(rid="rec_missing"))
        for method, path in (
            ("GET", "/v1/recordings/{rid}"),
            ("POST", "/v1/recordings/{rid}/stop"),
            ("DELETE", "/v1/recordings/{rid}"),
            ("GET", "/v1/recordings/{rid}/media"),
        )
    }
    for (method, path), expected in missing.items():
        r = await bob.request(method, path.format(rid=rid))
        assert (r.status, expected.status) == (404, 404), (method, path, r.body)
        assert _as_missing(r.body, rid) == expected.body, (method, path)
    rec = await alice.get(rid)
    assert (rec["status"], rec["requested_action"]) == ("queued", None), "bob's stop and cancel did nothing"


async def test_another_callers_running_recording_cannot_be_stopped_cancelled_or_downloaded(start_orchestrator):
    o, alice, bob, _ = await _tenants(start_orchestrator)
    rid = (await alice.create()).body["id"]
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    await worker.heartbeat(lease["lease_id"], "recording")
    assert (await bob.request("POST", f"/v1/recordings/{rid}/stop")).status == 404
    assert (await bob.request("DELETE", f"/v1/recordings/{rid}?keep=true")).status == 404
    assert (await worker.heartbeat(lease["lease_id"], "recording")).body == CONTINUE
    media = o.location(lease)
    path = o.orchestrator.settings.records_dir / rid / f"attempt-{lease['attempt']}" / "rec.mp4"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"alice's meeting")
    assert (await worker.report(lease["lease_id"], "completed", location=media)).status == 200
    assert (await bob.request("GET", f"/v1/recordings/{rid}/media")).status == 404
    assert (await alice.request("GET", f"/v1/recordings/{rid}/media")).body == b"alice's meeting"


async def _all_pages(client: Any, query: str = "", limit: int = 2) -> list[str]:
    ids, cursor = [], None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        page = await client.request("GET", f"/v1/recordings?limit={limit}{query}{suffix}")
        assert page.status == 200, page.body
        ids += [item["id"] for item in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            return ids


async def test_lists_show_only_the_callers_own_recordings_on_every_page_and_filter(start_orchestrator):
    _o, alice, bob, admin = await _tenants(start_orchestrator)
    mine: dict[str, list[str]] = {"alice": [], "bob": []}
    for i in range(7):
        who, client = (("alice", alice), ("bob", bob))[i % 3 == 0]
        mine[who].append((await client.create()).body["id"])
    # One of alice's is cancelled, so status filters have something to tell apart.
    cancelled = mine["alice"][0]
    assert (await alice.request("DELETE", f"/v1/recordings/{cancelled}")).status == 202

    assert sorted(await _all_pages(alice)) == sorted(mine["alice"])
    assert sorted(await _all_pages(bob)) == sorted(mine["bob"])
    assert await _all_pages(bob, "&status=cancelled") == []
    assert await _all_pages(alice, "&status=cancelled") == [cancelled]
    assert sorted(await _all_pages(bob, "&status=queued,cancelled", limit=1)) == sorted(mine["bob"])
    assert sorted(await _all_pages(admin, limit=3)) == sorted(mine["alice"] + mine["bob"])
    # A cursor from alice's pages does not open hers to bob.
    first = await alice.request("GET", "/v1/recordings?limit=1")
    theirs = await bob.request("GET", f"/v1/recordings?limit=50&cursor={first.body['next_cursor']}")
    assert set(i["id"] for i in theirs.body["items"]) <= set(mine["bob"])


async def test_the_admin_token_sees_and_acts_on_everything(start_orchestrator):
    _o, alice, bob, admin = await _tenants(start_orchestrator)
    a = (await alice.create()).body["id"]
    b = (await bob.create()).body["id"]
    assert (await admin.get(a))["owner"] == "alice" and (await admin.get(b))["owner"] == "bob"
    assert (await admin.request("DELETE", f"/v1/recordings/{a}")).status == 202
    assert (await alice.get(a))["status"] == "cancelled"
    own = (await admin.create()).body["id"]
    assert (await alice.request("GET", f"/v1/recordings/{own}")).status == 404


async def test_idempotency_keys_are_each_callers_own(start_orchestrator):
    _o, alice, bob, _ = await _tenants(start_orchestrator)
    key = {"Idempotency-Key": "same-key"}
    first = await alice.create(headers=key, metadata={"n": 1})
    other = await bob.create(headers=key, metadata={"n": 2})
    assert (first.status, other.status) == (202, 202), other.body
    assert first.body["id"] != other.body["id"]
    replay = await alice.create(headers=key, metadata={"n": 1})
    assert replay.body["id"] == first.body["id"] and replay.headers.get("Idempotent-Replayed") == "true"
    # Bob cannot learn alice's recording through her key either: he gets his own.
    assert (await bob.create(headers=key, metadata={"n": 2})).body["id"] == other.body["id"]


async def test_uploads_go_only_to_allowlisted_buckets(start_orchestrator):
    _o, alice, _, _ = await _tenants(start_orchestrator, s3_bucket="farm", s3_bucket_allowlist=["farm", "farm-eu"])
    r = await alice.create(upload={"bucket": "attacker-bucket", "prefix": "x"})
    assert (r.status, r.body["error"]["code"]) == (422, "validation_error")
    detail = r.body["error"]["details"][0]
    assert detail["field"] == "upload.bucket"
    assert "attacker-bucket" in detail["message"] and "farm, farm-eu" in detail["message"]
    ok = await alice.create(upload={"bucket": "farm-eu", "prefix": "x"})
    assert ok.status == 202 and ok.body["upload"] == {"bucket": "farm-eu", "prefix": "x"}


async def test_the_default_allowlist_is_the_configured_bucket_only(start_orchestrator):
    _o, alice, _, _ = await _tenants(start_orchestrator, s3_bucket="farm")
    assert (await alice.create(upload={"bucket": "farm", "prefix": "a"})).status == 202
    r = await alice.create(upload={"bucket": "farm2", "prefix": "a"})
    assert r.status == 422 and r.body["error"]["details"][0]["field"] == "upload.bucket"
    _no_s3, alice2, _, _ = await _tenants(start_orchestrator, s3_bucket=None)
    r = await alice2.create(upload={"bucket": "farm", "prefix": "a"})
    assert r.status == 422 and "no S3 bucket" in r.body["error"]["details"][0]["message"]


async def test_a_request_naming_only_a_prefix_goes_to_the_servers_bucket(start_orchestrator):
    """Not to the orchestrator's local disk, which workers on other machines do not share."""
    _o, alice, _, _ = await _tenants(start_orchestrator, s3_bucket="farm")
    r = await alice.create(upload={"prefix": "team-a"})
    assert r.status == 202 and r.body["upload"] == {"bucket": "farm", "prefix": "team-a"}, r.body


@pytest.mark.parametrize(
    ("prefix", "stored"),
    [("/team-a//2026/", "team-a/2026"), ("a/b", "a/b"), ("", ""), ("///", "")],
)
async def test_prefixes_are_normalised(start_orchestrator, prefix, stored):
    _o, alice, _, _ = await _tenants(start_orchestrator, s3_bucket="farm")
    r = await alice.create(upload={"bucket": "farm", "prefix": prefix})
    assert r.status == 202, r.body
    assert r.body["upload"]["prefix"] == stored


@pytest.mark.parametrize("prefix", ["../other-team", "a/../../b", "a/./b", "a\x00b", "a\nb"])
async def test_prefixes_that_climb_or_hide_characters_are_refused(start_orchestrator, prefix):
    _o, alice, _, _ = await _tenants(start_orchestrator, s3_bucket="farm")
    r = await alice.create(upload={"bucket": "farm", "prefix": prefix})
    assert r.status == 422, r.body
    assert r.body["error"]["details"][0]["field"] == "upload.prefix"


# token names


def test_bare_tokens_get_a_derived_name_and_named_ones_keep_theirs():
    s = OrchestratorSettings(api_tokens=["alice:one", "plain-token"], worker_token="w")
    assert s.callers == {"alice": "one", derived_name("plain-token"): "plain-token"}
    assert derived_name("plain-token").startswith("token-") and len(derived_name("plain-token")) == 14
    auth = BearerAuth(s.callers, realm="api", source="API_TOKENS", admin_token="boss")
    assert auth.identify("Bearer one").name == "alice"
    assert auth.identify("Bearer plain-token").name == derived_name("plain-token")
    assert auth.identify("Bearer boss").admin and not auth.identify("Bearer one").admin
    assert auth.identify("Bearer alice:one") is None, "the name is not part of the token"


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["alice:one", "alice:two"], "names 'alice' twice"),
        (["same", "same"], "twice"),
        (["bad name:x"], "must be 1-64 letters"),
        (["admin:x"], "reserved for API_ADMIN_TOKEN"),
        (["anonymous:x"], "reserved for the caller of an API with no tokens"),
        (["alice:"], "no token"),
    ],
)
def test_bad_token_names_stop_the_start_with_the_entry_to_fix(tokens, message):
    with pytest.raises(ValidationError) as info:
        OrchestratorSettings(api_tokens=tokens, worker_token="w")
    assert message in str(info.value)
    assert "API_TOKENS" in str(info.value)


def test_a_token_shared_between_callers_workers_or_the_admin_is_refused():
    with pytest.raises(ValidationError, match="share a token"):
        OrchestratorSettings(api_tokens=["alice:x"], worker_token="x")
    with pytest.raises(ValidationError, match="share a token"):
        OrchestratorSettings(api_tokens=["alice:x"], api_admin_token="x", worker_token="w")
    with pytest.raises(ValidationError, match="names carol"):
        OrchestratorSettings(api_tokens=["alice:x"], webhook_secrets=["carol:s"], worker_token="w")


# per-caller webhook secrets


async def test_webhooks_are_signed_with_the_owners_secret(start_orchestrator):
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.path, dict(request.headers), body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{who}", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        _o, alice, bob, _ = await _tenants(
            start_orchestrator, url_allowlist=["127.0.0.1"], webhook_secrets=["alice:alice-secret"]
        )
        await alice.create(webhook_url=str(server.make_url("/alice")))
        await bob.create(webhook_url=str(server.make_url("/bob")))
        deadline = time.monotonic() + 10
        while {p for p, _, _ in seen} != {"/alice", "/bob"}:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
    finally:
        await server.close()
    for path, headers, body in seen:
        own, other = ("alice-secret", WEBHOOK_SECRET) if path == "/alice" else (WEBHOOK_SECRET, "alice-secret")
        assert verify(own, headers, body), path
        assert not verify(other, headers, body), f"{path} must not verify with another caller's secret"


async def test_the_worker_token_is_not_an_api_token(start_orchestrator):
    o, alice, _, _ = await _tenants(start_orchestrator)
    rid = (await alice.create()).body["id"]
    worker_as_caller = o.client(WORKER_TOKEN)
    assert (await worker_as_caller.request("GET", f"/v1/recordings/{rid}")).status == 401


async def test_a_stored_prefix_that_climbs_is_shown_but_never_leased(start_orchestrator):
    """A row an older version accepted with `..` in its prefix: listed as it is, failed instead of leased."""
    o, alice, _, admin = await _tenants(start_orchestrator, s3_bucket="farm")
    rid = (await alice.create(upload={"bucket": "farm", "prefix": "team"})).body["id"]
    store = o.orchestrator.store
    db = store._w
    assert db is not None
    await db.execute(
        "UPDATE recordings SET upload = ? WHERE id = ?", ('{"bucket": "farm", "prefix": "../other-team"}', rid)
    )
    assert (await admin.get(rid))["upload"]["prefix"] == "../other-team"
    assert (await o.worker("w1").lease(wait=1)).status == 204
    rec = await alice.get(rid)
    assert (rec["status"], rec["error"]["code"]) == ("failed", "invalid_argument")
    assert "prefix" in rec["error"]["message"] and "'.' or '..'" in rec["error"]["message"]
