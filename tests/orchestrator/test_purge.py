"""Purge and retention: `DELETE /v1/recordings/{id}?purge=true` deletes an ended recording's files (in
RECORDS_DIR, or its attempts' objects in S3) and keeps the row as `purged`; the retention loop does the same
to local recordings older than RECORDS_RETENTION_DAYS, or deletes their rows when asked to."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from orchestrator.housekeeping import DAY, Housekeeping
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.states import State
from tests.support.orchestrator import RunningOrchestrator

A, B = "token-of-a", "token-of-b"
TENANTS = {"api_tokens": [f"alice:{A}", f"bob:{B}"]}
MEDIA = b"\x00" * 3000
METADATA = b'{"quality": {}}'
SEGMENT = b"\x47" * 1880


def _sample(o: RunningOrchestrator, name: str, **labels: str) -> float:
    return o.orchestrator.metrics.registry.get_sample_value(name, labels) or 0.0


async def _lease(o: RunningOrchestrator, worker_id: str) -> tuple[Any, dict[str, Any]]:
    worker = o.worker(worker_id)
    r = await worker.lease(wait=5)
    assert r.status == 200, r.body
    return worker, r.body


async def _complete_locally(o: RunningOrchestrator, api: Any, worker_id: str) -> tuple[str, Path]:
    """A recording completed by a worker that left rec.mp4, rec.json and a live segment in its attempt
    folder; its id and that folder."""
    rid = (await api.create()).body["id"]
    worker, lease = await _lease(o, worker_id)
    assert lease["recording_id"] == rid
    folder = Path(o.location(lease).removeprefix("file://")).parent
    (folder / "live").mkdir(parents=True)
    (folder / "rec.mp4").write_bytes(MEDIA)
    (folder / "rec.json").write_bytes(METADATA)
    (folder / "live" / "seg_00000.ts").write_bytes(SEGMENT)
    r = await worker.report(
        lease["lease_id"], "completed", location=o.location(lease), metadata_location=o.location(lease, "rec.json")
    )
    assert r.status == 200, r.body
    return rid, folder


async def test_purge_deletes_the_local_files_and_keeps_the_row_as_purged(start_orchestrator):
    o = await start_orchestrator(**TENANTS)
    alice, bob = o.client(A), o.client(B)
    rid, folder = await _complete_locally(o, alice, "w1")
    kept_rid, kept_folder = await _complete_locally(o, alice, "w2")
    before = await alice.get(rid)

    foreign = await bob.request("DELETE", f"/v1/recordings/{rid}?purge=true")
    assert (foreign.status, foreign.body["error"]["code"]) == (404, "not_found")
    assert (folder / "rec.mp4").read_bytes() == MEDIA, "another caller's purge deleted nothing"

    r = await alice.request("DELETE", f"/v1/recordings/{rid}?purge=true")
    assert r.status == 202, r.body
    purged = r.body
    assert purged["status"] == "purged"
    assert (purged["id"], purged["owner"], purged["created_at"]) == (rid, "alice", before["created_at"])
    assert purged["timestamps"]["completed"] == before["timestamps"]["completed"]
    assert purged["timestamps"]["purged"] is not None
    assert purged["location"] is purged["metadata_location"] is purged["media_url"] is None
    assert not folder.parent.exists(), "the recording's folder, every attempt, is gone"
    assert (kept_folder / "rec.mp4").read_bytes() == MEDIA, "another recording's files stay"

    for route in ("media", "screenshot"):
        gone = await alice.request("GET", f"/v1/recordings/{rid}/{route}")
        assert (gone.status, gone.body["error"]["code"]) == (410, "recording_purged")
        assert "purged" in gone.body["error"]["message"]
    assert (await alice.request("GET", f"/v1/recordings/{kept_rid}/media")).body == MEDIA

    again = await alice.request("DELETE", f"/v1/recordings/{rid}?purge=true")
    assert (again.status, again.body) == (202, purged), "purging twice changes nothing"
    assert _sample(o, "orchestrator_purged_bytes_total", where="local") == len(MEDIA) + len(METADATA) + len(SEGMENT)
    assert _sample(o, "orchestrator_purged_recordings_total", by="api") == 1
    listed = await alice.request("GET", "/v1/recordings?status=purged")
    assert [item["id"] for item in listed.body["items"]] == [rid]


async def test_only_an_ended_recording_is_purged_and_delete_alone_still_cancels(start_orchestrator):
    o = await start_orchestrator()
    queued = (await o.api.create()).body["id"]
    r = await o.api.request("DELETE", f"/v1/recordings/{queued}?purge=true")
    assert (r.status, r.body["error"]["code"]) == (409, "illegal_transition")
    assert "queued" in r.body["error"]["message"] and "cancel it" in r.body["error"]["message"]

    _worker, lease = await _lease(o, "w1")
    assert lease["recording_id"] == queued
    running = await o.api.request("DELETE", f"/v1/recordings/{queued}?purge=true")
    assert (running.status, running.body["error"]["code"]) == (409, "illegal_transition")
    assert (await o.api.get(queued))["requested_action"] is None, "a refused purge asked the worker for nothing"

    bad = await o.api.request("DELETE", f"/v1/recordings/{queued}?purge=yes-please")
    assert (bad.status, bad.body["error"]["details"][0]["field"]) == (422, "purge")

    other = (await o.api.create()).body["id"]
    cancelled = await o.api.request("DELETE", f"/v1/recordings/{other}")
    assert (cancelled.status, cancelled.body["status"]) == (202, "cancelled")
    explicit = await o.api.request("DELETE", f"/v1/recordings/{other}?purge=false")
    assert (explicit.status, explicit.body["error"]["code"]) == (409, "illegal_transition"), "still a cancel"
    assert (await o.api.request("DELETE", f"/v1/recordings/{other}?purge=true")).body["status"] == "purged"
    stopped = await o.api.request("POST", f"/v1/recordings/{other}/stop")
    assert (stopped.status, stopped.body["error"]["code"]) == (409, "illegal_transition")


async def test_a_link_in_place_of_the_folder_is_removed_never_followed(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker, lease = await _lease(o, "w1")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "attempt-1").mkdir(parents=True)
    (elsewhere / "attempt-1" / "rec.mp4").write_bytes(MEDIA)
    records = o.orchestrator.settings.records_dir
    records.mkdir(parents=True, exist_ok=True)
    (records / rid).symlink_to(elsewhere, target_is_directory=True)
    await worker.report(lease["lease_id"], "completed", location=o.location(lease))

    assert (await o.api.request("DELETE", f"/v1/recordings/{rid}?purge=true")).status == 202
    assert not (records / rid).is_symlink()
    assert (elsewhere / "attempt-1" / "rec.mp4").read_bytes() == MEDIA


async def test_purge_deletes_every_attempts_objects_in_s3_and_nothing_else(start_orchestrator, s3):
    o = await start_orchestrator(
        s3_endpoint_url=s3.endpoint, s3_bucket=s3.bucket, s3_prefix="recordings", lease_ttl=0.5
    )
    rid = (await o.api.create()).body["id"]
    _lost, first = await _lease(o, "w1")
    await asyncio.sleep(0.8)
    assert await o.orchestrator.scheduler.check_leases() == 1
    worker, lease = await _lease(o, "w2")
    assert (lease["recording_id"], lease["attempt"]) == (rid, 2)

    def key(of: dict[str, Any], name: str) -> str:
        return o.location(of, name).removeprefix(f"s3://{s3.bucket}/")

    ours = [key(first, "live/seg_00000.ts"), key(lease, "rec.mp4"), key(lease, "rec.json"), key(lease, "live/x.ts")]
    attempt_folder = key(lease, "rec.mp4").rsplit("/", 2)[0]  # …/<rid>
    neighbours = [
        f"{attempt_folder}x/attempt-2/rec.mp4",  # a recording whose id starts with this one's
        f"{attempt_folder}/notes.txt",  # under the recording, outside every attempt folder
        "recordings/other/attempt-2/rec.mp4",
    ]
    for name in ours + neighbours:
        s3.client.put_object(Bucket=s3.bucket, Key=name, Body=MEDIA)
    unfinished = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=key(first, "rec.mp4"))["UploadId"]
    r = await worker.report(
        lease["lease_id"],
        "completed",
        location=o.location(lease),
        metadata_location=o.location(lease, "rec.json"),
    )
    assert r.status == 200, r.body

    purged = await o.api.request("DELETE", f"/v1/recordings/{rid}?purge=true")
    assert (purged.status, purged.body["status"]) == (202, "purged"), purged.body

    left = {item["Key"] for item in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", [])}
    assert left == set(neighbours)
    uploads = s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert unfinished not in {u["UploadId"] for u in uploads}
    assert _sample(o, "orchestrator_purged_bytes_total", where="s3") == len(MEDIA) * len(ours)
    gone = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert (gone.status, gone.body["error"]["code"]) == (410, "recording_purged")


async def test_a_retention_pass_purges_local_recordings_ended_before_the_cutoff(start_orchestrator):
    o = await start_orchestrator(
        records_retention_days=2, housekeeping_interval=3600, s3_bucket_allowlist=["bucket-never-called"]
    )
    old, old_folder = await _complete_locally(o, o.api, "w1")
    await asyncio.sleep(0.2)
    between = time.time()
    await asyncio.sleep(0.2)
    new, new_folder = await _complete_locally(o, o.api, "w2")
    in_bucket = (await o.api.create(upload={"bucket": "bucket-never-called"})).body["id"]
    assert (await o.api.request("DELETE", f"/v1/recordings/{in_bucket}")).body["status"] == "cancelled"

    assert (await o.orchestrator.housekeeping.run_once(now=between + 1.9 * DAY)).purged == 0
    done = await o.orchestrator.housekeeping.run_once(now=between + 2 * DAY)
    assert (done.purged, done.deleted_rows, done.failed) == (1, 0, 0)
    assert (await o.api.get(old))["status"] == "purged"
    assert not old_folder.exists()
    assert (await o.api.get(new))["status"] == "completed"
    assert (await o.api.get(in_bucket))["status"] == "cancelled", "S3 recordings are the lifecycle rules' to expire"
    assert (new_folder / "rec.mp4").read_bytes() == MEDIA
    assert _sample(o, "orchestrator_purged_bytes_total", where="local") == len(MEDIA) + len(METADATA) + len(SEGMENT)
    assert _sample(o, "orchestrator_purged_recordings_total", by="retention") == 1
    assert (await o.orchestrator.housekeeping.run_once(now=between + 2 * DAY)).purged == 0, "a pass is idempotent"


async def test_retention_deletes_the_rows_when_asked_to(start_orchestrator):
    o = await start_orchestrator(
        records_retention_days=1, records_retention_delete_rows=True, s3_bucket_allowlist=["bucket-never-called"]
    )
    local, folder = await _complete_locally(o, o.api, "w1")
    s3_row = (await o.api.create(upload={"bucket": "bucket-never-called"})).body["id"]
    await o.api.request("DELETE", f"/v1/recordings/{s3_row}")
    await asyncio.sleep(0.2)
    between = time.time()
    await asyncio.sleep(0.2)
    fresh = (await o.api.create()).body["id"]
    await o.api.request("DELETE", f"/v1/recordings/{fresh}")

    done = await o.orchestrator.housekeeping.run_once(now=between + DAY)
    assert (done.purged, done.deleted_rows, done.failed) == (0, 2, 0)
    for gone in (local, s3_row):
        assert (await o.api.request("GET", f"/v1/recordings/{gone}")).status == 404
    assert not folder.exists()
    assert (await o.api.get(fresh))["status"] == "cancelled"
    assert _sample(o, "orchestrator_retention_deleted_rows_total") == 2


class _FlakyStore:
    """Fails the first pass, answers the next ones with nothing: the loop must go on and stop on request."""

    def __init__(self) -> None:
        self.calls = 0
        self.third_pass = asyncio.Event()

    async def ended_before(self, *args: Any, **kwargs: Any) -> list[Any]:
        self.calls += 1
        if self.calls == 3:
            self.third_pass.set()
        if self.calls == 1:
            raise RuntimeError("the store is away")
        return []


async def test_the_loop_survives_a_failed_pass_and_stops_cleanly():
    store = _FlakyStore()
    metrics = OrchestratorMetrics()
    loop = Housekeeping(store, None, metrics, retention_days=1, delete_rows=False, interval=0.02)  # type: ignore[arg-type]
    await loop.start()
    await asyncio.wait_for(store.third_pass.wait(), timeout=10)  # passes go on after one failed
    await loop.stop()
    calls = store.calls
    await asyncio.sleep(0.1)
    assert store.calls == calls, "no pass runs after stop"
    assert loop._task is None


async def test_no_retention_no_loop(start_orchestrator):
    o = await start_orchestrator()
    assert o.orchestrator.settings.records_retention_days is None
    assert o.orchestrator.housekeeping._task is None
    rid, folder = await _complete_locally(o, o.api, "w1")
    assert (await o.orchestrator.housekeeping.run_once(now=time.time() + 1000 * DAY)).purged == 0
    assert (await o.api.get(rid))["status"] == State.COMPLETED
    assert (folder / "rec.mp4").read_bytes() == MEDIA
