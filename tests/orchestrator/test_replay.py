"""The replay page and what serves it: timeline.json accepted from a report and served (local disk and the
bucket), caller-scoped; the signed links a browser opens (`/view/...`), refused unsigned, expired, tampered
or signed for another recording; no token in anything they serve; the list's filters; the WebRTC quality
metrics. Then the page itself in real Chromium: it plays, draws the frozen span where it is, seeks on a
click and jumps with `n`. No recording is made: a FakeWorker reports an MP4 made with FFmpeg and a
timeline built from the contract's models.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from contract.timeline import Timeline, TimelineEvent, TimelineSpan, TimelineSummary, Track
from orchestrator.metrics import OrchestratorMetrics
from tests.support.orchestrator import WORKER_TOKEN, RunningOrchestrator

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
TOKENS = [f"alice:{ALICE}", f"bob:{BOB}"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "replay.png"
FROZEN = (3.0, 5.0)
ERROR_AT = 6.0
CLEAN = {"worst_inbound_loss": None, "errors": 0, "warnings": 0, "problems": 0}
# What a hostile worker may write as timeline.json: only the console error, the navigation and the frozen
# span are readable; 7 of the dropped counts are events (not refused reports, spans or tracks).
HOSTILE_TIMELINE: dict[str, Any] = {
    "duration": 1e15,
    "events": [
        {"t": 1.0, "source": "page", "kind": "console", "level": "error", "message": {"nested": "message"}},
        {"t": 2.0, "source": "page", "kind": "navigation", "level": 7, "message": 42, "track": ["x"]},
        {"t": 3.0, "source": "page", "kind": 5, "message": "a kind that is a number"},
        {"t": 3.0, "source": "page", "kind": {"replace": 1}, "message": "a kind that is an object"},
        {"t": "soon", "source": "page", "kind": "console", "message": "a time that is not a number"},
        {"t": 4.0, "source": "page", "kind": "Bad Kind<script>", "message": "not a name"},
        "not an event",
        None,
    ],
    "spans": [
        {"start": 3.0, "end": 5.0, "kind": "frozen", "source": "analyzer", "message": None},
        {"start": 1.0, "end": 2.0, "kind": "constructor", "source": "analyzer"},
        {"start": 1.0, "end": None, "kind": "black", "source": "analyzer"},
    ],
    "tracks": "not a list",
    "summary": {"problems": "many", "errors": {"x": 1}, "freeze_seconds": "none", "worst_inbound_loss": "high"},
    "dropped": {"page.console": 5, "control.stop": 2, "webrtc.report": 900, "spans": 40, "webrtc.track": 3},
}


def timeline_of(recording_id: str, duration: float = 8.0) -> Timeline:
    """A frozen stretch at 3-5 s, an error at 6 s, a network span on one inbound track, a pause and a wait."""
    return Timeline(
        recording_id=recording_id,
        attempt=1,
        duration=duration,
        first_frame_at=1_700_000_000.0,
        events=[
            TimelineEvent(t=-2.0, source="control", kind="waiting", message="waiting room"),
            TimelineEvent(
                t=0.4, source="page", kind="signal", message="START_RECORDING", data={"name": "START_RECORDING"}
            ),
            TimelineEvent(t=1.0, source="page", kind="navigation", message="https://meet.example.com/room"),
            TimelineEvent(
                t=ERROR_AT, source="page", kind="console", level="error", message="TypeError: x is undefined"
            ),
            TimelineEvent(t=6.5, source="page", kind="request_blocked", level="warning", message="10.0.0.1:80 private"),
        ],
        spans=[
            TimelineSpan(start=-2.0, end=0.0, kind="waiting", source="control", wall_seconds=2.0),
            TimelineSpan(start=FROZEN[0], end=FROZEN[1], kind="frozen", source="analyzer", message="no change"),
            TimelineSpan(start=2.0, end=2.0, kind="paused", source="control", wall_seconds=12.5),
            TimelineSpan(start=6.8, end=7.6, kind="network", source="webrtc", track="v1", message="loss 9 %"),
        ],
        tracks=[Track(id="v1", kind="video", first_seen=0.2, last_seen=7.9, freeze_count=1, freeze_seconds=0.8)],
        summary=TimelineSummary(worst_inbound_loss=0.09, freeze_seconds={"v1": 0.8}, errors=1, warnings=1, problems=3),
    )


async def _completed(
    o: RunningOrchestrator,
    api: Any,
    worker_id: str,
    media: bytes | Path = b"\0" * 64,
    *,
    timeline: bool = True,
    outcome: str = "completed",
    summary: dict[str, Any] | None = None,
    raw_timeline: dict[str, Any] | None = None,
) -> str:
    """A recording a FakeWorker completed with rec.mp4 and timeline.json in its attempt folder (`raw_timeline`:
    whatever a hostile worker writes there instead of a valid one)."""
    rid = (await api.create()).body["id"]
    worker = o.worker(worker_id)
    lease = (await worker.lease(wait=5)).body
    assert lease["recording_id"] == rid
    folder = Path(o.location(lease).removeprefix("file://")).parent
    folder.mkdir(parents=True)
    if isinstance(media, Path):
        shutil.copyfile(media, folder / "rec.mp4")
    else:
        (folder / "rec.mp4").write_bytes(media)
    fields: dict[str, Any] = {"location": o.location(lease)}
    tl = timeline_of(rid)
    if timeline:
        (folder / "timeline.json").write_text(json.dumps(raw_timeline) if raw_timeline else tl.model_dump_json())
        fields["timeline_location"] = o.location(lease, "timeline.json")
    quality = {
        "duration": 8.0,
        "video": {"delivered_fps": 22.5, "nominal_fps": 30.0, "frozen_total": 2.0, "black_total": 0.0},
        "audio": {"silent_total": 0.0},
        "sync": {"mean_ms": 12.0},
        "timeline": summary if summary is not None else tl.summary.model_dump(),
    }
    if outcome == "failed":
        fields["error"] = {"code": "page_crashed", "message": "the page crashed"}
    r = await worker.report(lease["lease_id"], outcome, quality=quality, stop_reason="duration", **fields)
    assert r.status == 200, r.body
    return rid


def _signed(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _no_secret(text: str) -> None:
    for secret in (ALICE, BOB, WORKER_TOKEN, "Bearer"):
        assert secret not in text, f"{secret!r} in a /view answer"


# -- storage and the API ----------------------------------------------------------------------------


async def test_the_timeline_is_stored_served_and_caller_scoped(start_orchestrator):
    o = await start_orchestrator(api_tokens=TOKENS)
    alice, bob = o.client(ALICE), o.client(BOB)
    rid = await _completed(o, alice, "w1")

    rec = (await alice.request("GET", f"/v1/recordings/{rid}")).body
    assert rec["timeline"] == f"/v1/recordings/{rid}/timeline"
    assert rec["quality"]["timeline"]["problems"] == 3
    served = await alice.request("GET", rec["timeline"])
    assert served.status == 200 and served.headers["Content-Type"].startswith("application/json")
    assert Timeline.model_validate(served.body).spans[1].kind == "frozen"

    for path in (f"/v1/recordings/{rid}/timeline", f"/v1/recordings/{rid}/view"):
        foreign = await bob.request("GET", path)
        missing = await alice.request("GET", path.replace(rid, "rec_" + "0" * 32))
        assert foreign.status == missing.status == 404, (path, foreign.body)
        assert foreign.body["error"]["code"] == missing.body["error"]["code"] == "not_found"

    # A recording without one says so.
    bare = await _completed(o, alice, "w2", timeline=False)
    assert (await alice.get(bare))["timeline"] is None
    assert (await alice.request("GET", f"/v1/recordings/{bare}/timeline")).status == 404

    # Purged: gone with the attempt folder, and the row forgets it.
    assert (await alice.request("DELETE", f"/v1/recordings/{rid}?purge=true")).status == 202
    assert (await alice.get(rid))["timeline"] is None
    assert not (o.orchestrator.settings.records_dir / rid).exists()


async def test_a_timeline_location_the_orchestrator_did_not_compute_is_refused(start_orchestrator):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    elsewhere = o.location(lease, "timeline.json").replace(rid, "rec_" + "1" * 32)
    r = await worker.report(lease["lease_id"], "completed", location=o.location(lease), timeline_location=elsewhere)
    assert r.status == 422 and r.body["error"]["details"][0]["field"] == "timeline_location"
    assert (await o.api.get(rid))["status"] == "failed"


async def test_a_local_timeline_link_is_refused_even_after_the_check(start_orchestrator, tmp_path, monkeypatch):
    """A worker sharing RECORDS_DIR swaps timeline.json (or its attempt folder) for a link: the read opens
    every component without following links and checks the descriptor, so it serves nothing of the target,
    also when the link appears after the path was checked."""
    o = await start_orchestrator()
    rid = await _completed(o, o.api, "w1")
    (timeline,) = (o.orchestrator.settings.records_dir / rid).rglob("timeline.json")
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"secret": "orchestrator-only"}))

    async def served() -> Any:
        return await o.api.request("GET", f"/v1/recordings/{rid}/timeline")

    ok = await served()
    assert ok.status == 200 and ok.body["recording_id"] == rid
    original = timeline.read_bytes()
    locations = o.orchestrator.media.locations
    for swap in ("file link", "hard link", "folder link"):
        for checked in (False, True):  # True: the link appears between the check and the open
            if checked:
                monkeypatch.setattr(locations, "servable", lambda path: path)
            folder = timeline.parent
            if swap == "file link":
                timeline.unlink()
                timeline.symlink_to(secret)
            elif swap == "hard link":
                timeline.unlink()
                os.link(secret, timeline)
            else:  # the worker's folder moved away, a link to another folder with a timeline of its own there
                elsewhere = tmp_path / f"attempt-{checked}"
                folder.rename(tmp_path / "kept")
                elsewhere.mkdir()
                shutil.copyfile(secret, elsewhere / "timeline.json")
                folder.symlink_to(elsewhere, target_is_directory=True)
            r = await served()
            assert r.status == 404, (swap, checked, r.body)
            assert "orchestrator-only" not in json.dumps(r.body)
            # Put the worker's file back.
            if folder.is_symlink():
                folder.unlink()
                (tmp_path / "kept").rename(folder)
            else:
                timeline.unlink()
                timeline.write_bytes(original)
            monkeypatch.undo()
            assert (await served()).status == 200


async def test_a_timeline_in_the_bucket_is_fetched_and_served(start_orchestrator, s3):
    o = await start_orchestrator(s3_endpoint_url=s3.endpoint, s3_bucket=s3.bucket, s3_prefix="recordings")
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    tl = timeline_of(rid).model_dump_json().encode()
    key = o.location(lease, "timeline.json").removeprefix(f"s3://{s3.bucket}/")
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=tl)
    r = await worker.report(
        lease["lease_id"], "completed", location=o.location(lease), timeline_location=o.location(lease, "timeline.json")
    )
    assert r.status == 200, r.body
    served = await o.api.request("GET", f"/v1/recordings/{rid}/timeline")
    assert served.status == 200 and json.dumps(served.body, separators=(",", ":")).encode() == tl
    link = (await o.api.request("GET", f"/v1/recordings/{rid}/view")).body["url"]
    page = await o.client(None).request("GET", f"/view/{rid}/timeline?" + urlsplit(link).query)
    assert page.status == 200 and page.body["recording_id"] == rid
    media = await o.client(None).request("GET", f"/view/{rid}/media?" + urlsplit(link).query)
    assert media.status == 302 and media.headers["Location"].startswith(s3.endpoint)
    assert media.headers["Referrer-Policy"] == "no-referrer"
    assert s3.endpoint in media.headers["Content-Security-Policy"]


# -- signed links ------------------------------------------------------------------------------------


async def test_view_routes_accept_only_their_own_current_signature(start_orchestrator):
    o = await start_orchestrator(api_tokens=TOKENS)
    alice, bob, anyone = o.client(ALICE), o.client(BOB), o.client(None)
    rid = await _completed(o, alice, "w1")
    other = await _completed(o, alice, "w2")
    link = (await alice.request("GET", f"/v1/recordings/{rid}/view")).body
    assert link["url"].startswith(f"/view/{rid}?") and "expires_at" in link
    query = urlsplit(link["url"]).query
    sig = _signed(link["url"])

    for path in ("", "/media", "/timeline", "/recording"):
        ok = await anyone.request("GET", f"/view/{rid}{path}?{query}")
        assert ok.status == 200, (path, ok.body)
        assert ok.headers["Cache-Control"] == "no-store" and ok.headers["Referrer-Policy"] == "no-referrer"
        assert "script-src 'self'" in ok.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in ok.headers["Content-Security-Policy"]
        assert ok.headers["X-Content-Type-Options"] == "nosniff"
        if path != "/media":
            _no_secret(ok.body.decode() if isinstance(ok.body, bytes) else json.dumps(ok.body))
        refused = {
            "unsigned": f"/view/{rid}{path}",
            "no sig": f"/view/{rid}{path}?exp={sig['exp']}",
            "tampered expiry": f"/view/{rid}{path}?exp={int(sig['exp']) + 3600}&sig={sig['sig']}",
            "another recording": f"/view/{other}{path}?{query}",
            "a missing recording": f"/view/rec_{'2' * 32}{path}?{query}",
            "garbage": f"/view/{rid}{path}?exp=soon&sig=x",
        }
        for why, url in refused.items():
            r = await anyone.request("GET", url)
            assert r.status == 403, (why, path, r.status)
            assert r.body["error"]["code"] == "forbidden" and "link" in r.body["error"]["message"]

    recording = (await anyone.request("GET", f"/view/{rid}/recording?{query}")).body
    assert "request" not in recording and "upload" not in recording and "location" not in recording
    assert recording["has_timeline"] and recording["quality"]["timeline"]["errors"] == 1

    # An expired link, made by the same signer an hour ago.
    signer = o.orchestrator.signer
    real_clock = signer.clock
    signer.clock = lambda: real_clock() - 3600
    try:
        expired = signer.recording_link(rid, "alice").url
    finally:
        signer.clock = real_clock
    r = await anyone.request("GET", expired)
    assert r.status == 403 and "expired" in r.body["error"]["message"]

    # A list link opens no recording, and a recording link no list.
    listing = (await bob.request("GET", "/v1/view")).body["url"]
    assert (await anyone.request("GET", f"/view/{rid}?" + urlsplit(listing).query)).status == 403
    assert (await anyone.request("GET", f"/view?{query}")).status == 403
    # Bob's list link does not list Alice's recordings, nor does it become Alice's by editing the caller.
    bobs = await anyone.request("GET", "/view/recordings?" + urlsplit(listing).query)
    assert bobs.status == 200 and bobs.body["items"] == []
    forged = urlsplit(listing).query.replace("caller=bob", "caller=alice")
    assert (await anyone.request("GET", f"/view/recordings?{forged}")).status == 403

    # Static files need no signature and carry nothing secret; anything else there is a 404.
    for name in ("replay.js", "replay.css", "list.js"):
        r = await anyone.request("GET", f"/view/static/{name}")
        assert r.status == 200
        _no_secret(r.body.decode() if isinstance(r.body, bytes) else str(r.body))
    assert (await anyone.request("GET", "/view/static/routes.py")).status == 404
    assert (await anyone.request("GET", "/view/static/..%2Froutes.py")).status == 404


def _page_headers(r: Any, where: str) -> None:
    assert "script-src 'self'" in r.headers.get("Content-Security-Policy", ""), where
    assert r.headers.get("Cache-Control") == "no-store", where
    assert r.headers.get("Referrer-Policy") == "no-referrer", where
    assert r.headers.get("X-Content-Type-Options") == "nosniff", where


async def test_every_view_error_carries_the_page_headers(start_orchestrator, monkeypatch):
    """Not only the 403s: a 404, 409, 416, 422 and 500 under /view have the CSP, no-store, no-referrer and
    nosniff too, in the API's error body."""
    o = await start_orchestrator()
    anyone = o.client(None)
    rid = await _completed(o, o.api, "w1")
    bare = await _completed(o, o.api, "w2", timeline=False)
    queued = (await o.api.create()).body["id"]

    links = {r: (await o.api.request("GET", f"/v1/recordings/{r}/view")).body["url"] for r in (rid, bare, queued)}

    def signed(recording_id: str) -> str:
        return urlsplit(links[recording_id]).query

    listing = urlsplit((await o.api.request("GET", "/v1/view")).body["url"]).query
    errors = {
        f"/view/{bare}/timeline?{signed(bare)}": 404,
        f"/view/{queued}/media?{signed(queued)}": 409,
        f"/view/{rid}/nothing/here?{signed(rid)}": 404,
        "/view/static/nothing.js": 404,
        f"/view/recordings?{listing}&status=done": 422,
    }
    for url, status in errors.items():
        r = await anyone.request("GET", url)
        assert r.status == status, (url, r.status, r.body)
        assert r.body["error"]["message"], url
        _page_headers(r, url)

    # A Range past the end of the file (rec.mp4 has 64 bytes).
    r = await anyone.request("GET", f"/view/{rid}/media?{signed(rid)}", headers={"Range": "bytes=1000-"})
    assert r.status == 416
    _page_headers(r, "416")

    # Something unexpected in a handler: the API's 500, with the headers, and the next request is served.
    async def broken(row: Any) -> bytes:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(o.orchestrator.media, "timeline", broken)
    r = await anyone.request("GET", f"/view/{rid}/timeline?{signed(rid)}")
    assert r.status == 500 and r.body["error"]["code"] == "internal" and "fire" not in json.dumps(r.body)
    _page_headers(r, "500")
    monkeypatch.undo()
    assert (await anyone.request("GET", f"/view/{rid}/timeline?{signed(rid)}")).status == 200

    # The static files keep their own cache header.
    r = await anyone.request("GET", "/view/static/replay.js")
    assert r.status == 200 and r.headers["Cache-Control"].startswith("public")
    assert r.headers["Referrer-Policy"] == "no-referrer"


async def test_the_list_data_filters_by_status_and_problems_with_signed_rows(start_orchestrator):
    o = await start_orchestrator(api_tokens=TOKENS)
    alice, anyone = o.client(ALICE), o.client(None)
    clean = await _completed(
        o, alice, "w1", summary={"worst_inbound_loss": None, "errors": 0, "warnings": 0, "problems": 0}
    )
    troubled = await _completed(o, alice, "w2")
    failed = await _completed(o, alice, "w3", outcome="failed", timeline=False)
    query = urlsplit((await alice.request("GET", "/v1/view")).body["url"]).query

    async def ids(extra: str) -> list[str]:
        r = await anyone.request("GET", f"/view/recordings?{query}{extra}")
        assert r.status == 200, r.body
        for item in r.body["items"]:
            page = await anyone.request("GET", item["url"])
            assert page.status == 200, "every row links to its signed replay page"
        return [item["id"] for item in r.body["items"]]

    assert await ids("") == [failed, troubled, clean]
    assert await ids("&problems=true") == [failed, troubled]
    assert await ids("&status=completed") == [troubled, clean]
    assert await ids("&status=completed&problems=true") == [troubled]
    bad = await anyone.request("GET", f"/view/recordings?{query}&status=done")
    assert bad.status == 422 and "status" in bad.body["error"]["message"]


def test_webrtc_quality_metrics_judge_the_whole_recording_by_pool_and_region():
    """Bad means lossy over the whole recording or often frozen: one bad second of an otherwise clean call
    is not; a freeze longer than the recording counts as the whole recording, not as nothing."""
    m = OrchestratorMetrics(pool="eu-pool", region="eu-west")
    labels = {"pool": "eu-pool", "region": "eu-west"}

    def sample(name: str) -> float:
        return m.registry.get_sample_value(name, labels) or 0.0

    def quality(duration: float, **summary: Any) -> dict[str, Any]:
        return {"duration": duration, "timeline": {"freeze_seconds": {}, "errors": 0, **summary}}

    one_bad_second = quality(120.0, worst_inbound_loss=0.3, inbound_loss=0.004, freeze_seconds={"v": 2.0})
    frozen = quality(60.0, worst_inbound_loss=0.0, inbound_loss=0.0, freeze_seconds={"a": 1.0, "b": 9.0})
    lossy = quality(60.0, worst_inbound_loss=0.2, inbound_loss=0.08)
    frozen_through_a_pause = quality(60.0, worst_inbound_loss=0.0, inbound_loss=0.0, freeze_seconds={"v": 90.0})
    older_worker = quality(60.0, worst_inbound_loss=0.3)  # no whole-recording loss: not judged by one interval
    no_webrtc = quality(60.0, worst_inbound_loss=None)
    absurd = quality(60.0, worst_inbound_loss=7, inbound_loss=float("nan"))
    negative = quality(60.0, worst_inbound_loss=0.0, inbound_loss=-0.5, freeze_seconds={"v": -5.0})
    for q in (one_bad_second, frozen, lossy, frozen_through_a_pause, older_worker, no_webrtc, absurd, None):
        m.observe_webrtc(q)
    m.observe_webrtc(negative)
    m.observe_webrtc({"duration": 60.0})
    m.observe_webrtc(quality(float("inf"), worst_inbound_loss=0.0, inbound_loss=0.0))

    assert sample("orchestrator_webrtc_recordings_total") == 6
    assert sample("orchestrator_webrtc_bad_quality_recordings_total") == 3  # frozen, lossy, frozen through a pause
    assert sample("orchestrator_webrtc_freeze_seconds_per_minute_sum") == pytest.approx(1.0 + 9.0 + 60.0)
    assert sample("orchestrator_webrtc_freeze_seconds_per_minute_count") == 6
    # The loss observed is the whole recording's; a summary without it adds no loss sample.
    assert sample("orchestrator_webrtc_inbound_loss_sum") == pytest.approx(0.004 + 0.08)
    assert sample("orchestrator_webrtc_inbound_loss_count") == 4


# -- the page in Chromium ----------------------------------------------------------------------------


@pytest.fixture
def frozen_clip(tmp_path: Path) -> Path:
    """8 s of testsrc2 at 30 fps with a sine tone; frames 3 s to 5 s repeat the frame at 3 s."""
    out = tmp_path / "clip.mp4"
    first, last = int(FROZEN[0] * 30), int(FROZEN[1] * 30) - 1
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=8",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=8",
            "-filter_complex",
            f"[0:v]split[a][b];[a][b]freezeframes=first={first}:last={last}:replace={first}[v]",
            "-map",
            "[v]",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-movflags",
            "+faststart",
            "-shortest",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    return out


async def _chromium():
    from playwright.async_api import async_playwright

    from recorder.source.sandbox import BrowserLaunch, browser_environment, launch_sandboxed

    launch = BrowserLaunch("/usr/bin/chromium", "recorder-browser")
    launch.prepare()
    env = browser_environment(os.environ, {"HOME": launch.home} if launch.home else {})
    pw = await async_playwright().start()

    async def start(sandbox: bool):
        return await pw.chromium.launch(
            executable_path=launch.executable,
            headless=True,
            chromium_sandbox=sandbox,
            args=["--autoplay-policy=no-user-gesture-required", "--disable-gpu", "--disable-dev-shm-usage"],
            env=env,
        )

    try:
        browser, _ = await launch_sandboxed(launch, start, require=False)
    except BaseException:
        await pw.stop()
        launch.cleanup()
        raise
    return pw, browser, launch


async def _until(page: Any, expression: str, timeout: int = 10_000) -> None:
    """Poll `expression` in the page (the page's CSP forbids the eval behind `wait_for_function`)."""
    deadline = asyncio.get_running_loop().time() + timeout / 1000
    while not await page.evaluate(f"() => Boolean({expression})"):
        if asyncio.get_running_loop().time() > deadline:
            now = await page.evaluate("() => document.querySelector('video')?.currentTime")
            raise AssertionError(f"timed out waiting for {expression}; currentTime {now}")
        await asyncio.sleep(0.05)


def _shrink_png(source: Path, target: Path) -> None:
    """A small PNG for the docs: a 256-colour palette, made by FFmpeg."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-vf",
            "split[a][b];[a]palettegen=max_colors=128[p];[b][p]paletteuse=dither=none",
            str(target),
        ],
        check=True,
        timeout=60,
    )


@pytest.mark.browser
@pytest.mark.ffmpeg
async def test_the_replay_page_plays_draws_the_freeze_seeks_and_filters(start_orchestrator, frozen_clip, tmp_path):
    o = await start_orchestrator(api_tokens=TOKENS)
    alice = o.client(ALICE)
    rid = await _completed(o, alice, "w1", frozen_clip)
    other = await _completed(o, alice, "w2", summary=CLEAN)
    hostile = await _completed(o, alice, "w3", frozen_clip, raw_timeline=HOSTILE_TIMELINE, summary=CLEAN)
    hostile_link = (await alice.request("GET", f"/v1/recordings/{hostile}/view")).body["url"]
    base = o.base_url
    link = (await alice.request("GET", f"/v1/recordings/{rid}/view")).body["url"]
    listing = (await alice.request("GET", "/v1/view")).body["url"]

    pw, browser, launch = await _chromium()
    try:
        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        problems: list[str] = []

        def console(message: Any) -> None:
            # A refused load's page has no icon link, so the browser may ask for /favicon.ico after it, and
            # that 404 can be logged after the refusals are cleared below (one full run failed on a 404 it
            # did not name). The replay pages carry their own icon. Each problem names its resource.
            where = message.location.get("url", "")
            if message.type == "error" and not where.endswith("/favicon.ico"):
                problems.append(f"{message.text} at {where}")

        page.on("console", console)
        page.on("pageerror", lambda e: problems.append(str(e)))

        # Refused links show no page.
        for url in (f"/view/{rid}", f"/view/{other}?" + urlsplit(link).query):
            answer = await page.goto(base + url)
            assert answer is not None and answer.status == 403
        problems.clear()  # the browser logs each refused load

        answer = await page.goto(base + link)
        assert answer is not None and answer.status == 200
        await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        await _until(page, "document.querySelector('video').readyState >= 1", timeout=15_000)
        html = await page.content()
        _no_secret(html)

        # The frozen span sits at 3-5 s on the strip's scale.
        span = page.locator(".span.frozen")
        assert await span.count() == 1
        box = await span.bounding_box()
        lane = await page.locator(".lane-track").first.bounding_box()
        assert box and lane
        scale = lane["width"] / 8.0
        assert abs((box["x"] - lane["x"]) / scale - FROZEN[0]) <= 0.5
        assert abs((box["x"] + box["width"] - lane["x"]) / scale - FROZEN[1]) <= 0.5
        assert await page.locator(".marker.error").count() == 1
        assert await page.locator(".span.network").count() == 1
        assert "12.5 s on the wall clock" in (await page.locator(".marker.paused").get_attribute("aria-label") or "")

        # It plays.
        await page.keyboard.press("Space")
        await _until(page, "document.querySelector('video').currentTime > 0.5", timeout=15_000)
        await page.keyboard.press("Space")
        assert await page.evaluate("document.querySelector('video').paused")

        # A click on the span seeks to its start; n jumps to the next problem (the error at 6 s).
        await span.click()
        await _until(page, "Math.abs(document.querySelector('video').currentTime - 3) < 0.2")
        await page.keyboard.press("n")
        await _until(page, f"Math.abs(document.querySelector('video').currentTime - {ERROR_AT}) < 0.2")
        await page.keyboard.press("p")
        await _until(page, "Math.abs(document.querySelector('video').currentTime - 3) < 0.2")
        await page.keyboard.press("ArrowRight")
        await _until(page, "Math.abs(document.querySelector('video').currentTime - 8) < 0.3")

        shot = tmp_path / "replay.png"
        await page.keyboard.press("p")
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
            _shrink_png(shot, DOCS_SCREENSHOT)
            assert DOCS_SCREENSHOT.stat().st_size < 150_000
        assert problems == [], problems

        # The list page: both rows, then only the one with problems; its link opens the replay page.
        await page.goto(base + listing)
        await page.wait_for_selector("body[data-ready=true]")
        assert await page.locator("#rows tr").count() == 3
        await page.check("#problems")
        await _until(page, "document.querySelectorAll('#rows tr').length === 1")
        assert await page.locator("#rows tr").get_attribute("data-id") == rid
        await page.select_option("#status", "failed")
        await _until(page, "document.querySelectorAll('#rows tr').length === 0")
        await page.select_option("#status", "")
        await _until(page, "document.querySelectorAll('#rows tr').length === 1")
        await page.click(f"#rows a:text('{rid}')")
        await page.wait_for_selector("body[data-ready=true] .span.frozen")
        _no_secret(await page.content())

        # A hostile worker's timeline: an absurd duration, kinds and texts of every type. The page draws
        # what it can read, with a bounded axis, and throws nothing.
        problems.clear()
        await page.goto(base + hostile_link)
        await page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        assert 1 < await page.locator(".axis .tick").count() <= 21
        assert await page.locator(".span.frozen").count() == 1
        assert await page.locator("#events li").count() == 3  # the two readable events and the span
        listed = await page.locator("#events").inner_text()
        assert "[object Object]" not in listed and '{"nested":"message"}' in listed
        assert await page.locator("#event-count").inner_text() == "(3, 7 more not kept)"
        assert problems == [], problems
    finally:
        await browser.close()
        await pw.stop()
        launch.cleanup()
