"""Attacks on the orchestrator's trust boundaries, each by the party the design says may be hostile.

- A worker that shares RECORDS_DIR with the orchestrator (the local pool) reports the derived location,
  but what it put there is a symbolic or hard link to the store, or an attempt folder that is a link
  to another recording's folder; or it plants a link where an older version kept the store. The media
  route serves none of them and the store never becomes a link.
- Caller B asks the pool view which recordings the workers hold and why a worker died, or replays an
  idempotency key that matches a row it does not own; B learns nothing of recordings that are not B's.
  B's failing webhook receivers do not hold up A's events.
- A recorded page rebinds its own name to loopback and calls an orchestrator that has no tokens.
- A leaked worker token tries path tricks on the auth boundary, leases it does not hold, heartbeats
  with fields they do not carry, and encoded, re-cased or re-prefixed locations.
- URLs and webhooks aim at internal addresses in IPv6 forms Python calls global, or redirect there.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from contract.security import AddressPolicy
from orchestrator.locations import Locations
from orchestrator.pool.backend import WorkerInfo
from orchestrator.store.schema import MIGRATIONS
from tests.support.orchestrator import PUBLIC_URL, WORKER_TOKEN, RunningOrchestrator

A, B, ADMIN = "token-of-a", "token-of-b", "token-of-admin"
TENANTS = {"api_tokens": [f"alice:{A}", f"bob:{B}"], "api_admin_token": ADMIN}
SECRET = b"SQLite format 3\x00 every caller's requests and meeting passwords"


async def _leased(
    o: RunningOrchestrator, token: str | None = None, worker_id: str = "w-evil"
) -> tuple[Any, Any, dict[str, Any]]:
    caller = o.client(token) if token else o.api
    rid = (await caller.create()).body["id"]
    worker = o.worker(worker_id)
    lease = (await worker.lease(wait=5)).body
    assert lease["recording_id"] == rid
    return caller, worker, lease


def _attempt_dir(o: RunningOrchestrator, lease: dict[str, Any]) -> Path:
    return o.orchestrator.settings.records_dir / lease["recording_id"] / f"attempt-{lease['attempt']}"


def _store_like(tmp_path: Path) -> Path:
    """A file outside RECORDS_DIR that must never leave through the media route (the store, say)."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    secret = state / "orchestrator.db"
    secret.write_bytes(SECRET)
    return secret


async def _media(caller: Any, rid: str) -> Any:
    return await caller.request("GET", f"/v1/recordings/{rid}/media")


# A worker that shares the disk makes the derived place a link to something else


async def test_a_derived_rec_mp4_that_is_a_symlink_to_the_store_is_not_served(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    secret = _store_like(tmp_path)
    caller, worker, lease = await _leased(o)
    folder = _attempt_dir(o, lease)
    folder.mkdir(parents=True)
    # records/<id>/attempt-<n>/rec.mp4 -> ../../../state/orchestrator.db
    (folder / "rec.mp4").symlink_to(Path("..", "..", "..", "state", secret.name))
    assert (folder / "rec.mp4").read_bytes() == SECRET
    assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
    r = await _media(caller, lease["recording_id"])
    assert r.status == 404, r.body
    assert SECRET not in json.dumps(r.body, default=str).encode()


async def test_a_derived_rec_mp4_that_is_a_hard_link_to_the_store_is_not_served(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    secret = _store_like(tmp_path)
    caller, worker, lease = await _leased(o)
    folder = _attempt_dir(o, lease)
    folder.mkdir(parents=True)
    os.link(secret, folder / "rec.mp4")
    assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
    r = await _media(caller, lease["recording_id"])
    assert r.status == 404, r.body


async def test_an_attempt_folder_linked_to_another_callers_recording_is_not_served(start_orchestrator):
    """Bob's worker links bob's attempt folder to alice's: bob would download alice's meeting."""
    o = await start_orchestrator(**TENANTS)
    alice_caller, alice_worker, alice_lease = await _leased(o, A, "w-a")
    alice_folder = _attempt_dir(o, alice_lease)
    alice_folder.mkdir(parents=True)
    (alice_folder / "rec.mp4").write_bytes(b"alice's meeting")
    report = await alice_worker.report(alice_lease["lease_id"], "completed", location=o.location(alice_lease))
    assert report.status == 200
    assert (await _media(alice_caller, alice_lease["recording_id"])).body == b"alice's meeting"

    bob, bob_worker, bob_lease = await _leased(o, B, "w-b")
    bob_folder = _attempt_dir(o, bob_lease)
    bob_folder.parent.mkdir(parents=True)
    bob_folder.symlink_to(alice_folder, target_is_directory=True)
    assert (await bob_worker.report(bob_lease["lease_id"], "completed", location=o.location(bob_lease))).status == 200
    r = await _media(bob, bob_lease["recording_id"])
    assert r.status == 404, r.body


async def test_a_recording_folder_that_is_a_symlink_is_not_followed(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    outside = tmp_path / "elsewhere"
    caller, worker, lease = await _leased(o)
    (outside / f"attempt-{lease['attempt']}").mkdir(parents=True)
    (outside / f"attempt-{lease['attempt']}" / "rec.mp4").write_bytes(SECRET)
    records = o.orchestrator.settings.records_dir
    records.mkdir(parents=True, exist_ok=True)
    (records / lease["recording_id"]).symlink_to(outside, target_is_directory=True)
    assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
    assert (await _media(caller, lease["recording_id"])).status == 404


async def test_a_plain_derived_file_is_still_served(start_orchestrator):
    o = await start_orchestrator()
    caller, worker, lease = await _leased(o)
    folder = _attempt_dir(o, lease)
    folder.mkdir(parents=True)
    (folder / "rec.mp4").write_bytes(b"the meeting")
    assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
    r = await _media(caller, lease["recording_id"])
    assert (r.status, r.body) == (200, b"the meeting")


async def test_a_legacy_file_that_is_a_symlink_is_not_served(start_orchestrator, tmp_path):
    """Rows from before attempt folders are served from RECORDS_DIR/<id>/rec.mp4: not through a link."""
    records = tmp_path / "records"
    secret = _store_like(tmp_path)
    (records / "rec_old").mkdir(parents=True)
    (records / "rec_old" / "rec.mp4").symlink_to(secret)
    _legacy_db(tmp_path / "old.db", [("rec_old", None, {"url": PUBLIC_URL})], location=records / "rec_old" / "rec.mp4")
    o = await start_orchestrator(db=tmp_path / "old.db", records_dir=records, **TENANTS)
    admin = o.client(ADMIN)
    assert (await admin.get("rec_old"))["status"] == "completed"
    assert (await _media(admin, "rec_old")).status == 404


async def test_a_records_dir_that_is_itself_a_symlink_still_serves(start_orchestrator, tmp_path):
    """The operator may point RECORDS_DIR at a link (a mount, say): links below it are what is refused."""
    real = tmp_path / "disk" / "records"
    real.mkdir(parents=True)
    link = tmp_path / "records-link"
    link.symlink_to(real, target_is_directory=True)
    o = await start_orchestrator(records_dir=link)
    caller, worker, lease = await _leased(o)
    folder = real / lease["recording_id"] / f"attempt-{lease['attempt']}"
    folder.mkdir(parents=True)
    (folder / "rec.mp4").write_bytes(b"the meeting")
    assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
    r = await _media(caller, lease["recording_id"])
    assert (r.status, r.body) == (200, b"the meeting")


def test_links_below_records_dir_are_not_servable_as_a_table(tmp_path):
    records = tmp_path / "records"
    places = Locations(records)
    plain = records / "rec_a" / "attempt-1" / "rec.mp4"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(b"a")
    assert places.servable(plain) == plain
    secret = _store_like(tmp_path)
    (records / "rec_b" / "attempt-1").mkdir(parents=True)
    (records / "rec_b" / "attempt-1" / "rec.mp4").symlink_to(secret)
    (records / "rec_c" / "attempt-1").mkdir(parents=True)
    os.link(secret, records / "rec_c" / "attempt-1" / "rec.mp4")
    (records / "rec_d").mkdir()
    (records / "rec_d" / "attempt-1").symlink_to(plain.parent, target_is_directory=True)
    (records / "rec_e" / "attempt-1" / "rec.mp4").mkdir(parents=True)
    for name in ("rec_b", "rec_c", "rec_d", "rec_e", "rec_missing"):
        assert places.servable(records / name / "attempt-1" / "rec.mp4") is None, name
    assert places.servable(secret) is None
    assert places.servable(records) is None


# Caller B learns nothing of caller A's recordings


async def test_the_pool_view_shows_a_caller_only_its_own_recordings(start_orchestrator):
    o = await start_orchestrator(**TENANTS)
    await _leased(o, A, "w-a")
    _, _, bob_lease = await _leased(o, B, "w-b")
    alice_id = (await o.client(A).request("GET", "/v1/recordings")).body["items"][0]["id"]
    bob_view = await o.client(B).request("GET", "/v1/pool")
    assert bob_view.status == 200
    held = {w["id"]: w["recordings"] for w in bob_view.body["workers"]}
    assert alice_id not in json.dumps(bob_view.body)
    assert held == {"w-a": [], "w-b": [bob_lease["recording_id"]]}
    admin_view = await o.client(ADMIN).request("GET", "/v1/pool")
    assert {w["id"]: w["recordings"] for w in admin_view.body["workers"]} == {
        "w-a": [alice_id],
        "w-b": [bob_lease["recording_id"]],
    }


async def test_an_idempotency_key_of_a_row_from_before_owners_is_not_replayed_to_a_caller(start_orchestrator, tmp_path):
    """Keys are stored as `<caller>:<key>`; an older row's key may already read like that. Alice's key
    must not hand her that row (owned by nobody, so the admin's), nor name its id in a conflict."""
    db = tmp_path / "old.db"
    _legacy_db(
        db,
        [
            ("rec_old_same", "alice:k1", {"url": PUBLIC_URL}),
            ("rec_old_other", "alice:k2", {"url": "http://93.184.215.14/other"}),
        ],
    )
    o = await start_orchestrator(db=db, **TENANTS)
    alice = o.client(A)
    same = await alice.create(headers={"Idempotency-Key": "k1"})
    assert "rec_old_same" not in json.dumps(same.body), same.body
    assert same.status in (202, 409) and same.headers.get("Idempotent-Replayed") is None
    other = await alice.create(headers={"Idempotency-Key": "k2"})
    assert "rec_old_other" not in json.dumps(other.body), other.body


def _legacy_db(db: Path, rows: list[tuple[str, str | None, dict[str, Any]]], location: Path | None = None) -> None:
    """A store as an older version left it: rows without owners (only the admin sees them)."""
    con = sqlite3.connect(db)
    con.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version=1;\nCOMMIT;")
    for rid, key, body in rows:
        con.execute(
            """INSERT INTO recordings (id, status, request, spec, upload, created_at, updated_at, queued_at,
                                       attempts, idempotency_key, fingerprint, location)
               VALUES (?, 'completed', ?, ?, '{"bucket": null, "prefix": ""}', 1, 1, 1, 1, ?, ?, ?)""",
            (
                rid,
                json.dumps(body),
                json.dumps({**body, "duration": 10}),
                key,
                _fingerprint_like_create(body),
                location.resolve().as_uri() if location else None,
            ),
        )
    con.commit()
    con.close()


def _fingerprint_like_create(body: dict[str, Any]) -> str:
    from orchestrator.request import CreateRecording

    normalized = CreateRecording.model_validate(body).model_dump(mode="json")
    return hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()


# The auth boundary: a path is either a worker route (worker token) or a caller route (API token)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/worker/../recordings",
        "/v1/worker/%2e%2e/recordings",
        "/v1/worker%2f..%2frecordings",
        "/v1/worker/..%2frecordings",
        "//v1/recordings",
        "/v1//recordings",
        "/./v1/recordings",
        "/v1/./recordings",
        "/V1/recordings",
        "/v1/recordings/",
        "/v1/pool/",
        "/%761/recordings",
        "/v1%2frecordings",
    ],
)
async def test_the_worker_token_reaches_no_caller_route_by_path_tricks(start_orchestrator, path):
    o = await start_orchestrator(**TENANTS)
    await o.client(A).create()
    r = await o.client(WORKER_TOKEN).request("GET", path)
    assert r.status in (401, 404), (path, r.status, r.body)
    assert "items" not in json.dumps(r.body, default=str) and "workers" not in json.dumps(r.body, default=str)
    nobody = await o.client(None).request("GET", path)
    assert nobody.status in (401, 404), (path, nobody.status)


# The store is not readable by other users (Chromium runs as one, unprivileged, in the local pool)


async def test_a_new_store_and_its_folder_are_the_orchestrators_alone(start_orchestrator, tmp_path):
    state = tmp_path / "fresh-state"
    o = await start_orchestrator(db=None, state_dir=state)
    assert (await o.api.create()).status == 202
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("orchestrator.db", "orchestrator.db-wal", "orchestrator.db-shm"):
        path = state / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (name, oct(path.stat().st_mode))
    assert (state / "orchestrator.db-wal").exists()


class _BackendWithACrashedWorker:
    """A pool backend whose failed worker's reason carries its last log line: alice's URL."""

    name = "fake"
    LAST_WORDS = "recording url=https://meet.example.com/room-42?pwd=alices-secret"

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, count: int) -> list[str]:
        return []

    async def retire(self, name: str) -> bool:
        return False

    async def list(self) -> list[WorkerInfo]:
        return [WorkerInfo(name="local-dead", phase="failed", reason=f"worker killed by SIGKILL: {self.LAST_WORDS}")]


async def test_a_crashed_workers_last_words_are_shown_to_the_admin_only(start_orchestrator):
    o = await start_orchestrator(backend=_BackendWithACrashedWorker(), **TENANTS)
    bob_view = await o.client(B).request("GET", "/v1/pool")
    assert bob_view.status == 200
    assert "alices-secret" not in json.dumps(bob_view.body)
    assert [w["reason"] for w in bob_view.body["workers"]] == ["worker killed by SIGKILL"]
    admin_view = await o.client(ADMIN).request("GET", "/v1/pool")
    assert "alices-secret" in admin_view.body["workers"][0]["reason"]


# Webhook deliveries go only where the policy allows, whatever the receiver answers


async def _site(host: str, handler: Any) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host=host)
    await server.start_server()
    return server


async def test_a_webhook_receiver_that_redirects_to_loopback_is_not_followed(start_orchestrator):
    canary_hits: list[str] = []
    receiver_hits: list[str] = []
    both_attempts = asyncio.Event()

    async def canary(request: web.Request) -> web.Response:
        canary_hits.append(request.path)
        return web.Response(status=204)

    canary_server = await _site("127.0.0.1", canary)

    async def receiver(request: web.Request) -> web.Response:
        receiver_hits.append(request.path)
        if len(receiver_hits) == 2:
            both_attempts.set()
        raise web.HTTPTemporaryRedirect(str(canary_server.make_url("/internal")))

    receiver_server = await _site("127.0.0.2", receiver)
    try:
        o = await start_orchestrator(url_allowlist=["127.0.0.2"], webhook_attempts=2, webhook_backoff=0.05)
        r = await o.api.create(webhook_url=str(receiver_server.make_url("/hook")))
        assert r.status == 202, r.body
        # Each attempt reaches the receiver and takes its redirect as a failure; none goes on to the canary.
        await asyncio.wait_for(both_attempts.wait(), timeout=10)
        assert canary_hits == []
    finally:
        await receiver_server.close()
        await canary_server.close()


# URL forms that reach an internal address although Python calls the address global


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::ffff:0:127.0.0.1]/", "loopback"),  # SIIT-translated 127.0.0.1 (::ffff:0:7f00:1)
        ("http://[::ffff:0:10.0.0.1]/", "private"),  # SIIT-translated 10.0.0.1
        ("http://[::ffff:0:169.254.169.254]/", "cloud-metadata"),
        ("http://[0:0:0:1::]/", "reserved"),  # the rest of ::/8
        ("http://[3fff::1]/", "documentation"),
    ],
)
async def test_ipv6_forms_python_calls_global_are_denied_with_their_class(start_orchestrator, url, reason):
    o = await start_orchestrator(url_allowlist=[])
    for field in ("url", "webhook_url"):
        body = {"url": url} if field == "url" else {"url": PUBLIC_URL, "webhook_url": url}
        r = await o.api.request("POST", "/v1/recordings", json=body)
        assert (r.status, r.body["error"]["code"]) == (422, "url_not_allowed"), (field, r.body)
        assert reason in r.body["error"]["message"], r.body
    assert AddressPolicy(["127.0.0.1"]).denial(ipaddress.ip_address("::ffff:0:7f00:1")) is None


# Request hardening: nothing a caller or worker sends turns into a 500


@pytest.mark.parametrize("path", ["/v1/recordings", "/v1/worker/heartbeat"])
async def test_a_number_too_long_to_read_is_400_not_500(start_orchestrator, path):
    o = await start_orchestrator()
    token = WORKER_TOKEN if "worker" in path else None
    client = o.client(token) if token else o.api
    body = '{"url": "http://93.184.215.14/", "max_duration": 1' + "0" * 5000 + "}"
    r = await client.request("POST", path, data=body, headers={"Content-Type": "application/json"})
    assert (r.status, r.body["error"]["code"]) == (400, "invalid_json"), r.body


# A recorded page whose name rebinds to loopback, against an orchestrator without tokens


@pytest.mark.parametrize(
    "host", ["rebind.evil.example", "rebind.evil.example.", "127.0.0.1.nip.io", "localhost.evil.example", "[::2]"]
)
async def test_an_open_api_answers_no_request_addressed_to_another_name(start_orchestrator, host):
    o = await start_orchestrator(api_tokens=[], worker_token=None)
    anonymous = o.client(None)
    assert (await anonymous.create()).status == 202
    port = o.server.port
    for path in ("/v1/recordings", "/v1/pool"):
        r = await anonymous.request("GET", path, headers={"Host": f"{host}:{port}"})
        assert r.status == 401, (path, r.body)
        assert "items" not in json.dumps(r.body) and PUBLIC_URL not in json.dumps(r.body)
    lease = await anonymous.request(
        "POST", "/v1/worker/lease", json={"worker_id": "page", "wait": 0}, headers={"Host": f"{host}:{port}"}
    )
    assert lease.status == 401, lease.body
    for good in ("127.0.0.1", "localhost", "[::1]", "LOCALHOST."):
        ok = await anonymous.request("GET", "/v1/recordings", headers={"Host": f"{good}:{port}"})
        assert ok.status == 200 and len(ok.body["items"]) == 1, (good, ok.body)
    assert (await anonymous.request("GET", "/demo/", headers={"Host": f"{host}:{port}"})).status == 200


# Encodings, case and prefix tricks in reported locations


@pytest.mark.parametrize(
    "tail",
    [
        "rec_x/attempt-1/..%2F..%2F..%2Fstate%2Forchestrator.db",
        "rec_x/attempt-1/%2e%2e/%2e%2e/rec_y/attempt-1/rec.mp4",
        "rec_x/attempt-1/rec.mp4%00",
        "rec_x/attempt-1/rec.mp4?x=1",
        "rec_x/attempt-1/rec.mp4#x",
        "rec_x/attempt-1/rec%2Emp4/../rec.mp4",
        "rec_x/attempt-1/\uff52\uff45\uff43.mp4",  # fullwidth "rec"
        "REC_X/attempt-1/rec.mp4",
        "rec_x/attempt-2/rec.mp4",
        "rec_x/rec.mp4",
    ],
)
def test_encoded_or_altered_local_locations_are_refused(tmp_path, tail):
    places = Locations(tmp_path / "records")
    local = {"bucket": None, "prefix": ""}
    root = places.root.as_uri()
    assert places.problem(f"{root}/{tail}", recording_id="rec_x", attempt=1, upload=local) is not None
    assert places.problem(f"{root}/rec_x/attempt-1/rec.mp4", recording_id="rec_x", attempt=1, upload=local) is None
    for host_form in ("file://localhost", "file:"):
        path = places.local_path("rec_x", 1).as_posix()
        assert places.problem(f"{host_form}{path}", recording_id="rec_x", attempt=1, upload=local) is not None


@pytest.mark.parametrize(
    "location",
    [
        "s3://FARM/team-a/rec_x/attempt-1/rec.mp4",  # bucket names are compared exactly
        "s3://farm./team-a/rec_x/attempt-1/rec.mp4",
        "s3://farm%2Fother/team-a/rec_x/attempt-1/rec.mp4",
        "s3://farm:443/team-a/rec_x/attempt-1/rec.mp4",
        "s3://other@farm/team-a/rec_x/attempt-1/rec.mp4",
        "s3://Team-A/rec_x/attempt-1/rec.mp4",
        "s3://farm/Team-A/rec_x/attempt-1/rec.mp4",  # so are prefixes
        "s3://farm/team-a-other/rec_x/attempt-1/rec.mp4",
        "s3://farm/team-a/../team-b/rec_x/attempt-1/rec.mp4",
        "s3://farm/team-a//rec_x/attempt-1/rec.mp4",
        "s3://farm//team-a/rec_x/attempt-1/rec.mp4",
        "s3://farm/team-a/rec_x/attempt-1/rec.mp4/",
        "s3://farm/team-a/rec_x/attempt-1/./rec.mp4",
        "s3://farm/team-a/rec_x/attempt-1/rec.mp4\x00",
        "s3://farm/team-a/rec_x/attempt-1\n/rec.mp4",
        "s3://farm/team-a/rec_y/attempt-1/rec.mp4",
        "s3://farm/team-a/attempt-1/rec_x/rec.mp4",  # the attempt comes after the id
        "s3://farm/team-a/rec_xy/attempt-1/rec.mp4",
        "S3://farm/team-a/rec_x/attempt-1/rec.mp4",
    ],
)
def test_altered_s3_locations_are_refused(tmp_path, location):
    places = Locations(tmp_path / "records")
    upload = {"bucket": "farm", "prefix": "team-a"}
    assert places.problem(location, recording_id="rec_x", attempt=1, upload=upload) is not None
    good = "s3://farm/team-a/2026/11/30/rec_x/attempt-1/rec.mp4"
    assert places.problem(good, recording_id="rec_x", attempt=1, upload=upload) is None


# One caller's failing webhook receivers do not hold up another caller's events


async def test_failing_receivers_of_one_caller_do_not_delay_another_callers_webhooks(start_orchestrator):
    alice_got = asyncio.Event()

    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async def alice_receiver(request: web.Request) -> web.Response:
        alice_got.set()
        return web.Response(status=204)

    bob_server = await _site("127.0.0.2", failing)
    alice_server = await _site("127.0.0.2", alice_receiver)
    try:
        o = await start_orchestrator(
            url_allowlist=["127.0.0.2"], webhook_attempts=2, webhook_backoff=6.0, webhook_concurrency=8, **TENANTS
        )
        bob, alice = o.client(B), o.client(A)
        # Twice as many failing events as attempts may be in flight: a retry waits in the store, holding no slot.
        for _ in range(2 * o.orchestrator.settings.webhook_concurrency):
            assert (await bob.create(webhook_url=str(bob_server.make_url("/hook")))).status == 202
        await asyncio.sleep(0.5)  # bob's first attempts failed; his deliveries now wait to retry
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await alice.create(webhook_url=str(alice_server.make_url("/hook")))).status == 202
        await asyncio.wait_for(alice_got.wait(), timeout=10)
        assert loop.time() - started < 1.5, "alice's event waited for bob's retries"
    finally:
        await bob_server.close()
        await alice_server.close()


# A worker token holder and leases it does not hold


async def test_a_lease_is_only_the_holders_and_heartbeats_change_only_progress(start_orchestrator):
    o = await start_orchestrator(**TENANTS)
    alice, honest, lease = await _leased(o, A, "w-honest")
    evil = o.worker("w-evil")
    # Even knowing the lease id (a log line, say), another worker id is not the holder.
    assert (await evil.heartbeat(lease["lease_id"], "recording")).status == 410
    assert (await evil.report(lease["lease_id"], "completed", location=o.location(lease))).status == 410
    assert (await evil.report("lease_" + "0" * 32, "failed")).status == 410
    # A heartbeat carries state and progress only: no owner, location, upload or request.
    for field, value in (
        ("location", o.location(lease)),
        ("owner", "bob"),
        ("upload", {"bucket": "x"}),
        ("attempt", 9),
    ):
        body = {"lease_id": lease["lease_id"], "worker_id": "w-honest", "state": "recording", field: value}
        r = await honest.request("POST", "/v1/worker/heartbeat", json=body)
        assert (r.status, r.body["error"]["code"]) == (422, "validation_error"), (field, r.body)
    rec = await alice.get(lease["recording_id"])
    assert (rec["status"], rec["owner"], rec["location"], rec["worker"]) == ("starting", "alice", None, "w-honest")


async def test_a_link_planted_where_the_old_store_was_is_not_moved_into_the_state_dir(start_orchestrator, tmp_path):
    """A worker sharing RECORDS_DIR plants `orchestrator.db` as a link before an upgraded orchestrator
    first starts: the store must not become a link to a file of the worker's choosing."""
    records, state = tmp_path / "records", tmp_path / "state"
    records.mkdir()
    chosen = tmp_path / "elsewhere" / "chosen.db"
    chosen.parent.mkdir()
    (records / "orchestrator.db").symlink_to(chosen)
    chosen.write_bytes(b"")
    o = await start_orchestrator(db=None, state_dir=state, records_dir=records)
    assert (await o.api.create()).status == 202
    store = state / "orchestrator.db"
    assert store.is_file() and not store.is_symlink()
    assert chosen.read_bytes() == b""
