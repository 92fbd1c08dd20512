"""End to end: `orchestrator serve` with its local warm pool of real `recorder worker` processes (Xvfb,
PulseAudio, Chromium, FFmpeg), a real S3-compatible server over HTTP, signed webhooks to a receiver.

Recordings are short (4 s) so the suite stays quick on a 2-core machine; the assertions are about
behaviour (queueing, states, objects, signatures, retries, isolation), not about speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.farm import (
    Receiver,
    pool,
    pool_state,
    processes_of,
    ts,
    verify_signature,
    wait_terminal,
)
from tests.support.orchestrator import Api, OrchestratorProcess
from tests.support.s3 import S3Env

pytestmark = pytest.mark.media

SECONDS = 4.0

# -- the tests -------------------------------------------------------------------------------------


async def test_three_recordings_on_two_workers_queue_complete_upload_and_notify(
    farm: Callable[..., OrchestratorProcess], api: Callable[[OrchestratorProcess], Api], s3: S3Env, receiver: Receiver
) -> None:
    proc = farm(POOL_MAX="2", POOL_SPARE="2", POOL_CAPACITY="2", S3_BUCKET=s3.bucket, S3_ENDPOINT_URL=s3.endpoint)
    a = api(proc)
    demo = f"{proc.base_url}/demo/"
    # The warm pool comes up before any request: two workers polling for work.
    deadline = time.monotonic() + 90
    while (p := await pool(a))["idle"] < 2:
        assert time.monotonic() < deadline, f"the warm pool did not come up: {p}"
        await asyncio.sleep(0.25)

    hook = f"{receiver.base}/hook"
    ids = []
    for n in range(3):
        r = await a.create(url=demo, max_duration=SECONDS, webhook_url=hook, metadata={"n": n})
        assert r.status == 202, r.body
        ids.append(r.body["id"])

    # Both workers busy: the third waits in the queue.
    first_two = [await a.wait_status(rid, "recording", timeout=60) for rid in ids[:2]]
    assert {rec["worker"] for rec in first_two} == {w["id"] for w in (await pool(a))["workers"] if w["state"] == "busy"}
    third = await a.get(ids[2])
    assert third["status"] == "queued", third

    recs = [await wait_terminal(a, rid, timeout=120) for rid in ids]
    for rec in recs:
        assert rec["status"] == "completed", rec
        assert rec["attempts"] == 1
        # States in order, each with its timestamp.
        order = [ts(rec, s) for s in ("queued", "starting", "recording", "completed")]
        assert order == sorted(order), rec["timestamps"]
        for middle in ("finalizing", "uploading"):
            if rec["timestamps"][middle] is not None:
                assert ts(rec, "recording") <= ts(rec, middle) <= ts(rec, "completed")
        assert ts(rec, "queued") <= ts(rec, "first_frame") <= ts(rec, "completed")
        # rec.mp4 and rec.json are objects in the bucket.
        for field_name, name in (("location", "rec.mp4"), ("metadata_location", "rec.json")):
            location = rec[field_name]
            assert location.startswith(f"s3://{s3.bucket}/"), rec
            assert location.endswith(f"/{rec['id']}/attempt-{rec['attempts']}/{name}"), rec
            head = s3.client.head_object(Bucket=s3.bucket, Key=location.removeprefix(f"s3://{s3.bucket}/"))
            assert head["ContentLength"] > 0
        # A real recording, not an empty shell (its fidelity is the recorder tests' business).
        assert 1.0 <= rec["quality"]["duration"] <= SECONDS + 2.0, rec["quality"]
    # Never more than two at once: the third started only after one of the first two was done.
    third = recs[2]
    assert ts(third, "starting") >= min(ts(r, "completed") for r in recs[:2]) - 0.5

    # Webhooks: every state change, signed, each with its own idempotency key.
    await asyncio.sleep(1.0)
    for rec in recs:
        events = receiver.events(rec["id"])
        assert events, f"no webhook for {rec['id']}"
        for headers, body, event in events:
            assert verify_signature(headers, body), headers
            assert headers["webhook-id"] == event["event_id"]
        states = [event["new_state"] for _, _, event in events]
        assert states[0] == "queued" and states[-1] == "completed", states
        assert {"starting", "recording"} <= set(states)
        assert len({event["event_id"] for _, _, event in events}) == len(events)
        assert events[-1][2]["recording"]["location"] == rec["location"]

    # The warm pool is still there, ready for more.
    assert (await pool(a))["idle"] >= 1


async def test_a_worker_killed_mid_recording_loses_its_lease_and_the_recording_is_retried(
    farm: Callable[..., OrchestratorProcess], api: Callable[[OrchestratorProcess], Api], tmp_path: Path
) -> None:
    proc = farm(POOL_MAX="2", POOL_SPARE="1", ORCHESTRATOR_LEASE_TTL="4", ORCHESTRATOR_MAX_ATTEMPTS="2")
    a = api(proc)
    rid = (await a.create(url=f"{proc.base_url}/demo/", max_duration=SECONDS)).body["id"]
    rec = await a.wait_status(rid, "recording", timeout=90)
    victim = rec["worker"]
    pid = pool_state(tmp_path / "records")[victim]
    assert processes_of(victim), "the worker's browser and helpers should carry its WORKER_ID"
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    # The pool sees the crash, with its reason, and the lease lapses: the recording goes to another worker.
    rec = await a.wait_for(rid, lambda r: r["attempts"] == 2 and r["worker"] != victim, timeout=60)
    assert time.monotonic() - killed_at < 4 + 15, "a lapsed lease is noticed within the TTL plus a check"
    rec = await wait_terminal(a, rid, timeout=90)
    assert rec["status"] == "completed", rec
    assert rec["attempts"] == 2
    assert rec["worker"] != victim
    assert rec["location"].endswith(f"/{rid}/attempt-2/rec.mp4"), "the successor writes its own attempt's key"

    failed = [w for w in (await pool(a))["workers"] if w["id"] == victim]
    if failed:  # listed for a while after the crash, with the reason
        assert failed[0]["state"] == "failed" and "SIGKILL" in (failed[0]["reason"] or ""), failed
    # Nothing the killed worker started is left running.
    deadline = time.monotonic() + 20
    while processes_of(victim):
        assert time.monotonic() < deadline, f"left behind by {victim}: {processes_of(victim)}"
        await asyncio.sleep(0.5)


async def test_no_state_crosses_between_consecutive_recordings_on_one_worker(
    farm: Callable[..., OrchestratorProcess], api: Callable[[OrchestratorProcess], Api], receiver: Receiver
) -> None:
    proc = farm(POOL_MAX="1", POOL_SPARE="1")
    a = api(proc)
    first = (await a.create(url=f"{receiver.base}/state/set", max_duration=2.0)).body["id"]
    assert (await wait_terminal(a, first, timeout=90))["status"] == "completed"
    second = (await a.create(url=f"{receiver.base}/state/report", max_duration=2.0)).body["id"]
    assert (await wait_terminal(a, second, timeout=90))["status"] == "completed"
    recs = [await a.get(first), await a.get(second)]
    assert recs[0]["worker"] == recs[1]["worker"], "both recordings must run on the same warm worker"

    by_page = {s["page"]: s for s in receiver.seen}
    # The first page really left state behind in its browser...
    assert "rf_script=1" in by_page["set"]["cookies"]
    assert "rf_state" in by_page["set"]["storage"]
    # ...and the next recording on the same worker sees none of it.
    report = by_page["report"]
    assert report["cookies"] == "", report
    assert report["server_cookies"] == {}, report
    assert report["storage"] == "{}", report
    assert report["session"] == "{}", report


def capturing(recording_id: str) -> list[int]:
    """FFmpeg processes still writing this recording's files."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ffmpeg") and f"/{recording_id}/".encode() in cmdline:
            found.append(int(pid))
    return found


async def test_live_upload_keeps_all_but_the_last_segment_when_the_worker_is_killed(
    farm: Callable[..., OrchestratorProcess], api: Callable[[OrchestratorProcess], Api], s3: S3Env, tmp_path: Path
) -> None:
    proc = farm(
        POOL_MAX="1", POOL_SPARE="1", ORCHESTRATOR_MAX_ATTEMPTS="1", S3_BUCKET=s3.bucket, S3_ENDPOINT_URL=s3.endpoint
    )
    a = api(proc)
    rid = (await a.create(url=f"{proc.base_url}/demo/", max_duration=120, live_upload=True)).body["id"]
    rec = await a.wait_status(rid, "recording", timeout=90)

    def uploaded() -> dict[str, str]:
        listing = s3.client.list_objects_v2(Bucket=s3.bucket)
        return {
            obj["Key"].rsplit("/", 1)[1]: obj["Key"]
            for obj in listing.get("Contents", [])
            if f"/{rid}/attempt-1/live/seg_" in obj["Key"]
        }

    deadline = time.monotonic() + 60
    while len(uploaded()) < 3:
        assert time.monotonic() < deadline, f"segments did not reach the bucket while recording: {uploaded()}"
        await asyncio.sleep(0.5)
    # Kill well inside a 2 s segment, not on its boundary: just after a segment reached the bucket (so the next one
    # began well under a second ago), plus a moment. Killed right at a boundary, the segment that closed an instant
    # earlier has not been seen by the uploader's next poll yet and dies with the worker, beside the one in progress.
    seen = len(uploaded())
    deadline = time.monotonic() + 30
    while len(uploaded()) == seen:
        assert time.monotonic() < deadline, f"no further segment reached the bucket: {uploaded()}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    os.kill(pool_state(tmp_path / "records")[rec["worker"]], signal.SIGKILL)
    await asyncio.sleep(3)  # FFmpeg dies with its parent; the segments it finished are on disk
    assert not capturing(rid), "the killed worker's FFmpeg died with it"

    local = sorted((tmp_path / "records" / rid).glob("attempt-*/live/seg_*.ts"))
    assert len(local) >= 4, local
    in_bucket = uploaded()
    missing = [p.name for p in local if p.name not in in_bucket]
    assert missing in ([], [local[-1].name]), f"lost more than the last segment: {missing} of {len(local)}"
    for path in local[:-1]:
        body = s3.client.get_object(Bucket=s3.bucket, Key=in_bucket[path.name])["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(path.read_bytes()).digest(), path.name


async def test_live_recording_completes_with_rec_mp4_uploaded_while_recording(
    farm: Callable[..., OrchestratorProcess], api: Callable[[OrchestratorProcess], Api], s3: S3Env
) -> None:
    proc = farm(POOL_MAX="1", POOL_SPARE="1", S3_BUCKET=s3.bucket, S3_ENDPOINT_URL=s3.endpoint)
    a = api(proc)
    rid = (await a.create(url=f"{proc.base_url}/demo/", max_duration=6, live_upload=True)).body["id"]
    rec = await wait_terminal(a, rid, timeout=120)
    assert rec["status"] == "completed", rec
    key = rec["location"].removeprefix(f"s3://{s3.bucket}/")
    body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert body[4:8] == b"ftyp" and b"moov" in body[:4096], "a playable MP4 with its index first"
    assert rec["metadata_location"].endswith(f"/{rid}/attempt-1/rec.json")
    assert rec["quality"]["duration"] >= 5.0, rec["quality"]
    live = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=key.rsplit("/", 1)[0] + "/live/")
    assert any(o["Key"].endswith("index.m3u8") for o in live.get("Contents", []))
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
