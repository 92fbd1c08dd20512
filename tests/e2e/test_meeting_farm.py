"""A meeting recorded through the whole farm: `orchestrator serve`, its local pool of real workers, the
reference meeting page (pre-join, lobby, tiles, end banner), S3 over HTTP and signed webhooks.

What the API and the webhooks show of a join script, the waiting room, a stop condition, a pause, an
audio-only recording and a failed join with its screenshot."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.farm import Receiver, wait_terminal
from tests.support.orchestrator import Api, OrchestratorProcess
from tests.support.s3 import S3Env

pytestmark = pytest.mark.media

JOIN = [{"do": "fill", "selector": "#name", "value": "Recorder"}, {"do": "click", "selector": "#join"}]
IN_MEETING = {"kind": "selector", "selector": "#meeting video", "timeout": 30}


def object_json(s3: S3Env, location: str) -> dict[str, Any]:
    key = location.removeprefix(f"s3://{s3.bucket}/")
    return json.loads(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())


async def test_a_meeting_is_joined_waited_for_recorded_and_left_when_it_ends(
    farm: Callable[..., OrchestratorProcess],
    api: Callable[[OrchestratorProcess], Api],
    receiver: Receiver,
    test_page,
) -> None:
    proc = farm(POOL_MAX="1", POOL_SPARE="1")
    a = api(proc)
    r = await a.create(
        url=test_page.url("/meeting?lobby=3&end=4"),
        actions=JOIN,
        wait_for=IN_MEETING,
        stop_when={"selector": "#ended"},
        max_duration=120,
        webhook_url=f"{receiver.base}/hook",
    )
    assert r.status == 202, r.body
    rid = r.body["id"]
    waiting = await a.wait_status(rid, "waiting", timeout=90)
    assert waiting["timestamps"]["waiting"] is not None
    rec = await wait_terminal(a, rid, timeout=120)

    assert rec["status"] == "completed", rec
    assert rec["stop_reason"] == "selector", rec
    assert 3.0 <= rec["quality"]["duration"] <= 7.0, rec["quality"]
    deadline = time.monotonic() + 20
    while not any(e["new_state"] == "completed" for _, _, e in receiver.events(rid)):
        assert time.monotonic() < deadline, receiver.events(rid)
        await asyncio.sleep(0.2)
    states = [event["new_state"] for _, _, event in receiver.events(rid)]
    assert states.index("waiting") < states.index("recording"), states
    final = next(event for _, _, event in receiver.events(rid) if event["new_state"] == "completed")
    assert final["recording"]["stop_reason"] == "selector", final


async def test_pause_and_resume_through_the_api_with_live_upload(
    farm: Callable[..., OrchestratorProcess], api: Callable[[OrchestratorProcess], Api], s3: S3Env, test_page
) -> None:
    proc = farm(POOL_MAX="1", POOL_SPARE="1", S3_BUCKET=s3.bucket, S3_ENDPOINT_URL=s3.endpoint)
    a = api(proc)
    rid = (await a.create(url=test_page.url("/grid?tone=1000"), max_duration=16, live_upload=True)).body["id"]
    await a.wait_status(rid, "recording", timeout=90)
    await asyncio.sleep(3)
    assert (await a.request("POST", f"/v1/recordings/{rid}/pause")).status == 202
    again = await a.request("POST", f"/v1/recordings/{rid}/pause")
    assert again.status == 409 and "already paused" in again.body["error"]["message"], again.body
    await a.wait_for(rid, lambda rec: rec["paused"], timeout=10)
    await asyncio.sleep(5)
    assert (await a.request("POST", f"/v1/recordings/{rid}/resume")).status == 202
    await a.wait_for(rid, lambda rec: not rec["paused"], timeout=10)
    rec = await wait_terminal(a, rid, timeout=120)

    assert rec["status"] == "completed", rec
    metadata = object_json(s3, rec["metadata_location"])
    assert len(metadata["pauses"]) == 1, metadata["pauses"]
    pause = metadata["pauses"][0]
    paused_for = pause["ended_at"] - pause["started_at"]
    assert 4.0 <= paused_for <= 8.0, pause
    # 16 s on the page from the first frame, the pause absent from the file.
    assert abs(rec["quality"]["duration"] - (16 - paused_for)) <= 1.0, (rec["quality"]["duration"], paused_for)
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")


async def test_audio_only_and_a_failed_join_with_its_screenshot(
    farm: Callable[..., OrchestratorProcess], api: Callable[[OrchestratorProcess], Api], s3: S3Env, test_page
) -> None:
    proc = farm(POOL_MAX="1", POOL_SPARE="1", S3_BUCKET=s3.bucket, S3_ENDPOINT_URL=s3.endpoint)
    a = api(proc)
    audio = (await a.create(url=test_page.url("/grid?tone=1000"), max_duration=4, video=False)).body["id"]
    rec = await wait_terminal(a, audio, timeout=120)
    assert rec["status"] == "completed", rec
    assert rec["location"].endswith(f"/{audio}/attempt-1/rec.m4a"), rec
    assert rec["quality"]["video"] is None and rec["quality"]["audio"]["codec"] == "aac", rec["quality"]

    script = [*JOIN[:1], {"do": "click", "selector": "#no-such-button", "timeout": 2}]
    failed = (
        await a.create(url=test_page.url("/meeting?lobby=1"), actions=script, wait_for=IN_MEETING, max_duration=10)
    ).body["id"]
    rec = await wait_terminal(a, failed, timeout=120)
    assert rec["status"] == "failed", rec
    error = rec["error"]
    assert error["code"] == "action_failed" and "#no-such-button" in error["message"], error
    assert error["screenshot"] == f"/v1/recordings/{failed}/screenshot", error
    shot = await a.request("GET", error["screenshot"])
    assert shot.status == 302 and f"/{failed}/attempt-1/failure.png" in shot.headers["Location"], shot
    listing = s3.client.list_objects_v2(Bucket=s3.bucket)
    pngs = [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(f"/{failed}/attempt-1/failure.png")]
    assert len(pngs) == 1, listing
    body = s3.client.get_object(Bucket=s3.bucket, Key=pngs[0])["Body"].read()
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
