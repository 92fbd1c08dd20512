"""The public recording API over real HTTP: create, read, list, idempotency, stop, cancel, media, docs."""

from __future__ import annotations

import asyncio
import os
import urllib.request
from typing import Any

import aiohttp
import pytest

from tests.support.orchestrator import API_TOKEN, CONTINUE, PUBLIC_URL, RunningOrchestrator


async def _lease(o: RunningOrchestrator, worker_id: str = "w1") -> tuple[Any, dict[str, Any]]:
    worker = o.worker(worker_id)
    r = await worker.lease(wait=5)
    assert r.status == 200, r.body
    return worker, r.body


async def test_create_returns_202_location_and_the_recording(start_orchestrator):
    o = await start_orchestrator()
    r = await o.api.create(
        PUBLIC_URL,
        max_duration=120,
        width=1920,
        height=1080,
        fps=25,
        wait_for={"kind": "selector", "selector": "#stage", "timeout": 12},
        metadata={"room": "42", "tags": ["a", "b"]},
    )
    assert r.status == 202, r.body
    rec = r.body
    assert r.headers["Location"] == f"/v1/recordings/{rec['id']}"
    assert rec["status"] == "queued"
    assert rec["attempts"] == 0
    assert rec["duration"] == 120
    assert rec["request"]["wait_for"] == {"kind": "selector", "selector": "#stage", "timeout": 12}
    assert rec["request"]["metadata"] == {"room": "42", "tags": ["a", "b"]}
    assert rec["timestamps"]["queued"] == rec["created_at"]

    fetched = await o.api.request("GET", r.headers["Location"])
    assert fetched.status == 200
    assert fetched.body == rec

    # What the worker gets is the recorder's spec built from that request.
    _, lease = await _lease(o)
    assert lease["recording_id"] == rec["id"]
    assert lease["spec"]["duration"] == 120
    assert (lease["spec"]["width"], lease["spec"]["height"], lease["spec"]["fps"]) == (1920, 1080, 25)
    assert lease["upload"] == {"bucket": None, "prefix": "recordings"}


async def test_default_duration_and_upload_come_from_settings(start_orchestrator):
    o = await start_orchestrator(
        default_duration=900, max_duration=600, s3_bucket="farm", s3_prefix="rec", s3_bucket_allowlist=["farm", "other"]
    )
    rec = (await o.api.create()).body
    assert rec["duration"] == 600  # the default is capped by the server's maximum
    assert rec["upload"] == {"bucket": "farm", "prefix": "rec"}
    custom = (await o.api.create(upload={"bucket": "other", "prefix": "x"})).body
    assert custom["upload"] == {"bucket": "other", "prefix": "x"}


async def test_list_pages_are_stable_while_recordings_are_added(start_orchestrator):
    o = await start_orchestrator()
    first = [(await o.api.create(metadata={"n": i})).body["id"] for i in range(7)]

    seen: list[str] = []
    cursor = None
    added: list[str] = []
    while True:
        query = "/v1/recordings?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await o.api.request("GET", query)
        assert page.status == 200, page.body
        assert len(page.body["items"]) <= 3
        seen += [item["id"] for item in page.body["items"]]
        # New recordings arrive between pages; they must not shift what the next page holds.
        added.append((await o.api.create(metadata={"late": True})).body["id"])
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(first)), "newest first, each exactly once, none of the late ones"
    assert not set(added) & set(seen)

    everything = await o.api.request("GET", "/v1/recordings?limit=200")
    assert [i["id"] for i in everything.body["items"]] == list(reversed(first + added))
    assert everything.body["next_cursor"] is None


async def test_list_filters_by_status(start_orchestrator):
    o = await start_orchestrator()
    ids = [(await o.api.create()).body["id"] for _ in range(4)]
    for rid in ids[:2]:
        assert (await o.api.request("DELETE", f"/v1/recordings/{rid}")).status == 202
    _, lease = await _lease(o)  # takes the oldest queued one: ids[2]

    cancelled = await o.api.request("GET", "/v1/recordings?status=cancelled")
    assert sorted(i["id"] for i in cancelled.body["items"]) == sorted(ids[:2])
    both = await o.api.request("GET", "/v1/recordings?status=queued,starting")
    assert sorted(i["id"] for i in both.body["items"]) == sorted(ids[2:])
    starting = await o.api.request("GET", "/v1/recordings?status=starting")
    assert [i["id"] for i in starting.body["items"]] == [lease["recording_id"]] == [ids[2]]


async def test_idempotency_key_same_body_same_recording_other_body_conflict(start_orchestrator):
    o = await start_orchestrator()
    key = {"Idempotency-Key": "order-1234"}
    first = await o.api.create(PUBLIC_URL, headers=key, fps=30)
    again = await o.api.create(PUBLIC_URL, headers=key, fps=30)
    assert first.status == again.status == 202
    assert again.body["id"] == first.body["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    # Spelling out a default is the same request.
    same = await o.api.create(PUBLIC_URL, headers=key)
    assert same.body["id"] == first.body["id"]

    other = await o.api.create(PUBLIC_URL, headers=key, fps=25)
    assert other.status == 409
    assert other.body["error"]["code"] == "idempotency_conflict"
    assert first.body["id"] in other.body["error"]["message"]

    # Concurrent retries with one new key still make exactly one recording.
    burst = await asyncio.gather(*(o.api.create(PUBLIC_URL, headers={"Idempotency-Key": "burst"}) for _ in range(6)))
    assert {r.status for r in burst} == {202}
    assert len({r.body["id"] for r in burst}) == 1

    listed = await o.api.request("GET", "/v1/recordings?limit=200")
    assert len(listed.body["items"]) == 2


async def test_idempotency_keys_are_scoped_to_the_caller(start_orchestrator):
    o = await start_orchestrator(api_tokens=[API_TOKEN, "second-caller"])
    other = o.client("second-caller")
    a = await o.api.create(headers={"Idempotency-Key": "k"})
    b = await other.create(headers={"Idempotency-Key": "k"}, fps=25)
    assert a.status == b.status == 202
    assert a.body["id"] != b.body["id"]


async def test_stop_is_graceful_and_the_recording_completes(start_orchestrator):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker, lease = await _lease(o)
    hb = await worker.heartbeat(lease["lease_id"], "recording", elapsed=3.0, fps=30.0)
    assert hb.body == CONTINUE

    stopped = await o.api.request("POST", f"/v1/recordings/{rid}/stop")
    assert stopped.status == 202
    assert stopped.body["requested_action"] == "stop"
    assert stopped.body["status"] == "recording"

    hb = await worker.heartbeat(lease["lease_id"], "finalizing", elapsed=4.0)
    assert hb.body == {"action": "stop", "pause": False, "stop_reason": "api"}
    location = o.location(lease)
    done = await worker.report(lease["lease_id"], "completed", location=location, quality={"fps": 29.97})
    assert done.status == 200
    rec = await o.api.get(rid)
    assert rec["status"] == "completed"
    assert rec["location"] == location
    assert rec["quality"] == {"fps": 29.97}
    assert rec["media_url"] == f"/v1/recordings/{rid}/media"
    for state in ("queued", "starting", "recording", "finalizing", "completed"):
        assert rec["timestamps"][state] is not None, state
    order = [rec["timestamps"][s] for s in ("queued", "starting", "recording", "finalizing", "completed")]
    assert order == sorted(order)


async def test_cancel_of_a_queued_recording_means_it_never_starts(start_orchestrator):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    r = await o.api.request("DELETE", f"/v1/recordings/{rid}")
    assert r.status == 202
    assert r.body["status"] == "cancelled"
    assert r.body["timestamps"]["cancelled"] is not None
    worker = o.worker("w1")
    assert (await worker.lease(wait=0.5)).status == 204
    assert (await o.api.get(rid))["attempts"] == 0


async def test_cancel_of_a_running_recording_discards_the_file(start_orchestrator):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker, lease = await _lease(o)
    await worker.heartbeat(lease["lease_id"], "recording")

    r = await o.api.request("DELETE", f"/v1/recordings/{rid}")
    assert r.status == 202
    assert (r.body["requested_action"], r.body["keep_file"]) == ("cancel", False)
    hb = await worker.heartbeat(lease["lease_id"], "recording")
    assert hb.body == {"action": "cancel", "pause": False, "stop_reason": "api"}
    await worker.report(lease["lease_id"], "cancelled")
    rec = await o.api.get(rid)
    assert rec["status"] == "cancelled"
    assert rec["location"] is None
    # The lease has ended: a late heartbeat is told so.
    late = await worker.heartbeat(lease["lease_id"], "recording")
    assert late.status == 410


async def test_cancel_with_keep_stops_gracefully_and_keeps_the_file(start_orchestrator):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker, lease = await _lease(o)
    await worker.heartbeat(lease["lease_id"], "recording")

    r = await o.api.request("DELETE", f"/v1/recordings/{rid}?keep=true")
    assert r.status == 202
    assert (r.body["requested_action"], r.body["keep_file"]) == ("cancel", True)
    hb = await worker.heartbeat(lease["lease_id"], "recording")
    assert hb.body == {"action": "stop", "pause": False, "stop_reason": "api"}
    await worker.report(lease["lease_id"], "completed", location=o.location(lease))
    rec = await o.api.get(rid)
    assert rec["status"] == "cancelled"
    assert rec["location"] == o.location(lease)


async def test_media_streams_a_local_file_with_range_support(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker, lease = await _lease(o)
    media = tmp_path / "records" / rid / f"attempt-{lease['attempt']}" / "rec.mp4"
    media.parent.mkdir(parents=True)
    content = os.urandom(256 * 1024)
    media.write_bytes(content)
    await worker.report(lease["lease_id"], "completed", location=media.as_uri())

    part = await o.api.request("GET", f"/v1/recordings/{rid}/media", headers={"Range": "bytes=1000-1999"})
    assert part.status == 206
    assert part.body == content[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(content)}"
    assert part.headers["Content-Type"] == "video/mp4"

    tail = await o.api.request("GET", f"/v1/recordings/{rid}/media", headers={"Range": "bytes=-100"})
    assert tail.status == 206
    assert tail.body == content[-100:]

    full = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert full.status == 200
    assert full.body == content
    assert full.headers["Accept-Ranges"] == "bytes"


async def test_media_is_refused_outside_records_dir_and_before_completion(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    early = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert (early.status, early.body["error"]["code"]) == (409, "media_not_ready")

    worker, lease = await _lease(o)
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not for you")
    refused = await worker.report(lease["lease_id"], "completed", location=outside.as_uri())
    assert (refused.status, refused.body["error"]["code"]) == (422, "invalid_report")
    r = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert r.status == 404
    assert r.body["error"]["code"] == "not_found"
    assert "has no media" in r.body["error"]["message"]


async def test_media_redirects_to_a_presigned_s3_url_that_works(start_orchestrator, s3):
    content = os.urandom(4096)
    o = await start_orchestrator(s3_endpoint_url=s3.endpoint, s3_bucket=s3.bucket, s3_prefix="recordings")
    rid = (await o.api.create()).body["id"]
    worker, lease = await _lease(o)
    key = o.location(lease).removeprefix(f"s3://{s3.bucket}/")
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=content)
    await worker.report(lease["lease_id"], "completed", location=f"s3://{s3.bucket}/{key}")

    r = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert r.status == 302
    url = r.headers["Location"]
    assert url.startswith(f"{s3.endpoint}/{s3.bucket}/{key}?")
    assert "Signature" in url
    fetched = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    assert fetched == content


async def test_pool_view_shows_idle_and_busy_workers(start_orchestrator):
    o = await start_orchestrator(pool_capacity=2)
    rid = (await o.api.create()).body["id"]
    await _lease(o, "busy-one")
    idle = o.worker("idle-one")
    assert (await idle.lease(wait=0.2)).status == 204

    pool = await o.api.request("GET", "/v1/pool")
    assert pool.status == 200
    workers = {w["id"]: w for w in pool.body["workers"]}
    assert workers["busy-one"]["state"] == "busy"
    assert workers["busy-one"]["recordings"] == [rid]
    assert workers["idle-one"]["state"] == "idle"
    assert (pool.body["busy"], pool.body["idle"], pool.body["queued"], pool.body["active"]) == (1, 1, 0, 1)
    assert pool.body["capacity"] == 2


async def test_health_readiness_and_metrics(start_orchestrator):
    o = await start_orchestrator()
    anonymous = o.client(None)
    assert (await anonymous.request("GET", "/healthz")).body == {"status": "ok", "detail": None}
    assert (await anonymous.request("GET", "/readyz")).status == 200

    rid = (await o.api.create()).body["id"]
    worker, lease = await _lease(o)
    await worker.heartbeat(lease["lease_id"], "recording", fps=29.5, dropped=3, speed=0.99)
    text = (await anonymous.request("GET", "/metrics")).body.decode()
    assert 'orchestrator_recordings{state="recording"} 1.0' in text
    assert f'orchestrator_recording_fps{{recording_id="{rid}"}} 29.5' in text
    assert f'orchestrator_recording_dropped_frames{{recording_id="{rid}"}} 3.0' in text
    assert 'orchestrator_pool_workers{state="busy"} 1.0' in text

    await worker.report(lease["lease_id"], "failed", error={"code": "capture_failed", "message": "ffmpeg died"})
    text = (await anonymous.request("GET", "/metrics")).body.decode()
    assert f'recording_id="{rid}"' not in text, "per-recording gauges go when the recording ends"
    assert 'orchestrator_failures_total{code="capture_failed",side="system"} 1.0' in text
    assert 'orchestrator_recordings{state="failed"} 1.0' in text


async def test_metrics_include_what_pool_backends_count(start_orchestrator):
    from orchestrator.pool.kubernetes import POD_FAILURES

    o = await start_orchestrator()
    POD_FAILURES.labels(reason="OOMKilled").inc()
    text = (await o.client(None).request("GET", "/metrics")).body.decode()
    counted = 'recorder_pod_failures_total{reason="OOMKilled"}'
    line = next(line for line in text.splitlines() if line.startswith(counted))
    assert float(line.split()[-1]) >= 1.0


async def test_start_latency_is_measured_from_request_to_first_frame(start_orchestrator):
    o = await start_orchestrator()
    rec = (await o.api.create()).body
    worker, lease = await _lease(o)
    row = await o.orchestrator.store.get(rec["id"])
    await worker.heartbeat(lease["lease_id"], "recording", first_frame_at=row.created_at + 0.8)
    text = (await o.api.request("GET", "/metrics")).body.decode()
    assert "orchestrator_start_latency_seconds_count 1.0" in text
    assert 'orchestrator_start_latency_seconds_bucket{le="0.75"} 0.0' in text
    assert 'orchestrator_start_latency_seconds_bucket{le="1.0"} 1.0' in text
    assert (await o.api.get(rec["id"]))["timestamps"]["first_frame"] is not None


async def test_openapi_is_generated_from_the_models(start_orchestrator):
    o = await start_orchestrator()
    r = await o.client(None).request("GET", "/openapi.json")
    assert r.status == 200
    doc = r.body
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    for name in ("CreateRecording", "Recording", "RecordingList", "PoolView", "ErrorBody", "WebhookEvent", "Lease"):
        assert name in schemas, name
    create = schemas["CreateRecording"]
    assert create["required"] == ["url"]
    assert create["additionalProperties"] is False
    assert create["properties"]["width"]["maximum"] == 3840
    assert set(schemas["Recording"]["properties"]) >= {"id", "status", "timestamps", "error", "location", "quality"}
    paths = doc["paths"]
    for path in (
        "/v1/recordings",
        "/v1/recordings/{id}",
        "/v1/recordings/{id}/stop",
        "/v1/recordings/{id}/media",
        "/v1/pool",
        "/v1/worker/lease",
        "/v1/worker/heartbeat",
        "/v1/worker/report",
    ):
        assert path in paths, path
    body_ref = paths["/v1/recordings"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/CreateRecording"
    # Every reference resolves.
    text = str(doc)
    for ref in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert ref in schemas, ref


@pytest.mark.parametrize("status", ["completed", "failed"])
async def test_worker_report_is_idempotent(start_orchestrator, status):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker, lease = await _lease(o)
    body = {"error": {"code": "capture_failed", "message": "x"}} if status == "failed" else {}
    first = await worker.report(lease["lease_id"], status, **body)
    again = await worker.report(lease["lease_id"], status, **body)
    assert first.status == again.status == 200
    assert (await o.api.get(rid))["status"] == status


async def test_long_poll_ends_when_the_client_goes_away(start_orchestrator):
    o = await start_orchestrator()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            await session.post(
                f"{o.base_url}/v1/worker/lease",
                json={"worker_id": "gone", "wait": 30},
                headers={"Authorization": "Bearer test-worker-token"},
                timeout=aiohttp.ClientTimeout(total=0.3),
            )
    # The abandoned poll must not take the recording: a live worker gets it.
    rid = (await o.api.create()).body["id"]
    _, lease = await _lease(o, "live")
    assert lease["recording_id"] == rid
    assert lease["attempt"] == 1
