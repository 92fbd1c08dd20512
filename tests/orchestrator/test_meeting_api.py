"""Recording a meeting, the orchestrator's side, over real HTTP: the waiting room (`waiting`), pause and
resume, stop reasons, failure screenshots, audio-only media, and the operator's bounds on join scripts."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.store.schema import MIGRATIONS
from orchestrator.store.sqlite import SQLiteStore
from tests.orchestrator.test_webhooks import FAST_RETRY, receiver  # noqa: F401  (the receiver fixture)
from tests.support.orchestrator import API_TOKEN, CONTINUE, FakeWorker, RunningOrchestrator

OTHER_CALLER = "other-caller-token"
LOBBY = {"kind": "signal", "timeout": 120}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


async def _leased(o: RunningOrchestrator, **fields: Any) -> tuple[str, FakeWorker, dict[str, Any]]:
    r = await o.api.create(**fields)
    assert r.status == 202, r.body
    worker = o.worker("w1")
    lease = await worker.lease(wait=5)
    assert lease.status == 200, lease.body
    return r.body["id"], worker, lease.body


async def _beat(worker: FakeWorker, lease: dict[str, Any], state: str, paused: bool = False) -> dict[str, Any]:
    """A heartbeat as a recorder sends it, `paused` included (the fake worker's helper predates it)."""
    body = {"lease_id": lease["lease_id"], "worker_id": worker.worker_id, "state": state, "paused": paused}
    r = await worker.request("POST", "/v1/worker/heartbeat", json=body)
    assert r.status == 200, r.body
    return r.body


async def _metrics(o: RunningOrchestrator) -> str:
    return (await o.client(None).request("GET", "/metrics")).body.decode()


def _sample(text: str, series: str) -> float | None:
    """The value of one exposition line `series value`, None when absent."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


# -- the waiting room ------------------------------------------------------------------------------


async def test_waiting_then_recording_shows_in_the_api_and_in_webhook_deliveries(start_orchestrator, receiver):  # noqa: F811
    hook = await receiver()
    o = await start_orchestrator(**FAST_RETRY)
    rid, worker, lease = await _leased(o, wait_for=LOBBY, webhook_url=hook.url)

    assert (await _beat(worker, lease, "waiting"))["action"] == "continue"
    rec = await o.api.get(rid)
    assert rec["status"] == "waiting"
    assert rec["timestamps"]["waiting"] is not None and rec["timestamps"]["recording"] is None
    listed = await o.api.request("GET", "/v1/recordings?status=waiting")
    assert [item["id"] for item in listed.body["items"]] == [rid]

    await _beat(worker, lease, "recording")
    await _beat(worker, lease, "waiting")  # never backwards
    rec = await o.api.get(rid)
    assert rec["status"] == "recording"
    assert rec["timestamps"]["starting"] <= rec["timestamps"]["waiting"] <= rec["timestamps"]["recording"]

    done = await worker.report(lease["lease_id"], "completed", location=o.location(lease), stop_reason="selector")
    assert done.status == 200, done.body
    await hook.wait_for(lambda r: ("recording", "completed") in r.transitions())
    assert hook.transitions() == [
        (None, "queued"),
        ("queued", "starting"),
        ("starting", "waiting"),
        ("waiting", "recording"),
        ("recording", "completed"),
    ]
    events = list(hook.events.values())
    assert events[2]["type"] == "recording.state_changed"
    assert events[2]["recording"]["status"] == "waiting"
    assert events[-1]["recording"]["stop_reason"] == "selector"


async def test_a_page_without_a_waiting_room_goes_from_starting_to_recording(start_orchestrator):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o)
    await _beat(worker, lease, "recording")
    rec = await o.api.get(rid)
    assert rec["status"] == "recording"
    assert rec["timestamps"]["waiting"] is None


# -- pause and resume ------------------------------------------------------------------------------


async def test_pause_and_resume_reach_the_worker_and_show_the_wish_and_the_fact(start_orchestrator):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o, wait_for=LOBBY)

    early = await o.api.request("POST", f"/v1/recordings/{rid}/pause")
    assert (early.status, early.body["error"]["code"]) == (409, "illegal_transition")
    assert "is starting" in early.body["error"]["message"]
    await _beat(worker, lease, "waiting")
    lobby = await o.api.request("POST", f"/v1/recordings/{rid}/pause")
    assert lobby.status == 409 and "is waiting" in lobby.body["error"]["message"]
    not_paused = await o.api.request("POST", f"/v1/recordings/{rid}/resume")
    assert not_paused.status == 409 and "is waiting" in not_paused.body["error"]["message"]

    assert await _beat(worker, lease, "recording") == CONTINUE
    running = await o.api.request("POST", f"/v1/recordings/{rid}/resume")
    assert running.status == 409
    assert "already running" in running.body["error"]["message"]
    assert f"/v1/recordings/{rid}/pause" in running.body["error"]["message"]

    paused = await o.api.request("POST", f"/v1/recordings/{rid}/pause")
    assert paused.status == 202, paused.body
    assert (paused.body["pause_requested"], paused.body["paused"], paused.body["status"]) == (True, False, "recording")
    again = await o.api.request("POST", f"/v1/recordings/{rid}/pause")
    assert (again.status, again.body["error"]["code"]) == (409, "illegal_transition")
    assert f"recording {rid} is already paused" in again.body["error"]["message"]
    assert f"/v1/recordings/{rid}/resume" in again.body["error"]["message"]

    # The worker learns the wish from the reply, then reports the fact.
    assert await _beat(worker, lease, "recording") == {**CONTINUE, "pause": True}
    await _beat(worker, lease, "recording", paused=True)
    rec = await o.api.get(rid)
    assert (rec["status"], rec["pause_requested"], rec["paused"]) == ("recording", True, True)

    resumed = await o.api.request("POST", f"/v1/recordings/{rid}/resume")
    assert resumed.status == 202
    assert (resumed.body["pause_requested"], resumed.body["paused"]) == (False, True)
    assert await _beat(worker, lease, "recording", paused=True) == CONTINUE
    await _beat(worker, lease, "recording", paused=False)
    assert (await o.api.get(rid))["paused"] is False

    await o.api.request("POST", f"/v1/recordings/{rid}/pause")
    await _beat(worker, lease, "recording", paused=True)
    await worker.report(lease["lease_id"], "completed", location=o.location(lease), stop_reason="duration")
    rec = await o.api.get(rid)
    assert (rec["status"], rec["paused"]) == ("completed", False), "nothing is paused once capture is over"
    over = await o.api.request("POST", f"/v1/recordings/{rid}/resume")
    assert over.status == 409 and "is completed" in over.body["error"]["message"]


async def test_pause_is_refused_for_queued_and_stopping_recordings_and_hidden_from_other_callers(start_orchestrator):
    o = await start_orchestrator(api_tokens=[API_TOKEN, OTHER_CALLER])
    rid, worker, lease = await _leased(o)
    await _beat(worker, lease, "recording")
    queued = (await o.api.create()).body["id"]
    r = await o.api.request("POST", f"/v1/recordings/{queued}/pause")
    assert r.status == 409 and f"recording {queued} is queued" in r.body["error"]["message"]

    other = o.client(OTHER_CALLER)
    for action in ("pause", "resume"):
        foreign = await other.request("POST", f"/v1/recordings/{rid}/{action}")
        missing = await o.api.request("POST", f"/v1/recordings/rec_missing/{action}")
        assert foreign.status == missing.status == 404
        assert foreign.body["error"]["code"] == "not_found"
    assert (await o.api.get(rid))["pause_requested"] is False, "another caller changed nothing"

    assert (await o.api.request("POST", f"/v1/recordings/{rid}/stop")).status == 202
    stopping = await o.api.request("POST", f"/v1/recordings/{rid}/pause")
    assert stopping.status == 409 and "asked to stop" in stopping.body["error"]["message"]


# -- stop reasons, screenshots, audio-only media -----------------------------------------------------


async def test_a_failure_shows_its_stop_reason_and_serves_its_screenshot(start_orchestrator, tmp_path):
    o = await start_orchestrator(api_tokens=[API_TOKEN, OTHER_CALLER])
    rid, worker, lease = await _leased(o, wait_for=LOBBY)
    none_yet = await o.api.request("GET", f"/v1/recordings/{rid}/screenshot")
    assert none_yet.status == 404

    await _beat(worker, lease, "waiting")
    shot = tmp_path / "records" / rid / f"attempt-{lease['attempt']}" / "failure.png"
    shot.parent.mkdir(parents=True)
    shot.write_bytes(PNG)
    failed = await worker.report(
        lease["lease_id"],
        "failed",
        error={"code": "waiting_room_timeout", "message": "the lobby did not admit the recorder in 120 s"},
        screenshot_location=shot.as_uri(),
        stop_reason="error",
    )
    assert failed.status == 200, failed.body

    rec = await o.api.get(rid)
    assert rec["status"] == "failed"
    assert rec["stop_reason"] == "error"
    assert rec["error"] == {
        "code": "waiting_room_timeout",
        "message": "the lobby did not admit the recorder in 120 s",
        "screenshot": f"/v1/recordings/{rid}/screenshot",
    }
    got = await o.api.request("GET", rec["error"]["screenshot"])
    assert got.status == 200
    assert got.body == PNG
    assert got.headers["Content-Type"] == "image/png"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert (await o.client(OTHER_CALLER).request("GET", rec["error"]["screenshot"])).status == 404

    text = await _metrics(o)
    assert _sample(text, 'orchestrator_failures_total{code="waiting_room_timeout",side="caller"}') == 1.0
    assert _sample(text, 'orchestrator_recordings_stopped_total{stop_reason="error"}') == 1.0


async def test_a_screenshot_outside_the_leases_attempt_is_refused_like_any_location(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o)
    elsewhere = tmp_path / "records" / rid / "attempt-2" / "failure.png"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(PNG)
    refused = await worker.report(
        lease["lease_id"],
        "failed",
        error={"code": "action_failed", "message": 'step 1 (click "#join") found nothing'},
        screenshot_location=elsewhere.as_uri(),
    )
    assert (refused.status, refused.body["error"]["code"]) == (422, "invalid_report")
    assert refused.body["error"]["details"][0]["field"] == "screenshot_location"
    rec = await o.api.get(rid)
    assert (rec["status"], rec["error"]["code"], rec["error"]["screenshot"]) == ("failed", "invalid_report", None)
    assert (await o.api.request("GET", f"/v1/recordings/{rid}/screenshot")).status == 404


async def test_an_s3_screenshot_must_carry_the_leases_attempt_and_its_own_name(start_orchestrator, monkeypatch):
    # Presigning is local computation: any credentials sign a URL (nothing is sent to S3 here).
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    o = await start_orchestrator(s3_bucket="farm")
    for wrong in (
        lambda lease: o.location(lease, "failure.png").replace("/attempt-1/", "/attempt-7/"),
        lambda lease: o.location(lease, "rec.json"),
        lambda lease: o.location(lease, "failure.png").replace("s3://farm/", "s3://elsewhere/"),
    ):
        rid, worker, lease = await _leased(o)
        r = await worker.report(
            lease["lease_id"],
            "failed",
            error={"code": "browser_crashed", "message": "x"},
            screenshot_location=wrong(lease),
        )
        assert (r.status, r.body["error"]["code"]) == (422, "invalid_report"), wrong(lease)
        assert (await o.api.get(rid))["error"]["screenshot"] is None
    rid, worker, lease = await _leased(o)
    ok = await worker.report(
        lease["lease_id"],
        "failed",
        error={"code": "browser_crashed", "message": "x"},
        screenshot_location=o.location(lease, "failure.png"),
    )
    assert ok.status == 200, ok.body
    shot = await o.api.request("GET", f"/v1/recordings/{rid}/screenshot")
    assert shot.status == 302
    presigned = urlsplit(shot.headers["Location"])
    assert "farm" in presigned.netloc + presigned.path.split("/")[1]
    assert presigned.path.endswith(f"/{rid}/attempt-1/failure.png") and "Signature=" in presigned.query
    assert shot.headers["X-Content-Type-Options"] == "nosniff"


async def test_an_audio_only_recording_reports_and_serves_rec_m4a(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o, video=False)
    assert lease["spec"]["video"] is False
    wrong = await worker.report(lease["lease_id"], "completed", location=o.location(lease, "rec.mp4"))
    assert (wrong.status, wrong.body["error"]["code"]) == (422, "invalid_report"), "no video, so no rec.mp4"

    rid, worker, lease = await _leased(o, video=False)
    audio = tmp_path / "records" / rid / f"attempt-{lease['attempt']}" / "rec.m4a"
    audio.parent.mkdir(parents=True)
    audio.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(4000))
    done = await worker.report(lease["lease_id"], "completed", location=audio.as_uri(), stop_reason="silence")
    assert done.status == 200, done.body
    media = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert media.status == 200
    assert media.body == audio.read_bytes()
    assert media.headers["Content-Type"] == "audio/mp4"
    assert media.headers["X-Content-Type-Options"] == "nosniff"
    assert (await o.api.get(rid))["stop_reason"] == "silence"


# -- metrics -----------------------------------------------------------------------------------------


async def test_metrics_count_waiting_time_stop_reasons_and_the_side_of_failures(start_orchestrator):
    o = await start_orchestrator()
    _, worker, lease = await _leased(o, wait_for=LOBBY)
    await _beat(worker, lease, "waiting")
    text = await _metrics(o)
    assert _sample(text, 'orchestrator_recordings{state="waiting"}') == 1.0
    assert _sample(text, "orchestrator_waiting_seconds_count") == 0.0, "observed when the recording leaves waiting"

    await asyncio.sleep(0.5)
    await _beat(worker, lease, "recording")
    await worker.report(lease["lease_id"], "completed", location=o.location(lease), stop_reason="api")
    text = await _metrics(o)
    assert _sample(text, "orchestrator_waiting_seconds_count") == 1.0
    waited = _sample(text, "orchestrator_waiting_seconds_sum")
    assert waited is not None and 0.4 <= waited < 120
    assert _sample(text, 'orchestrator_recordings{state="waiting"}') == 0.0
    assert _sample(text, 'orchestrator_recordings_stopped_total{stop_reason="api"}') == 1.0

    _, worker, lease = await _leased(o)
    await worker.report(lease["lease_id"], "failed", error={"code": "action_failed", "message": "no #join button"})
    _, worker, lease = await _leased(o)
    await worker.report(lease["lease_id"], "failed", error={"code": "browser_crashed", "message": "SIGSEGV"})
    text = await _metrics(o)
    assert _sample(text, 'orchestrator_failures_total{code="action_failed",side="caller"}') == 1.0
    assert _sample(text, 'orchestrator_failures_total{code="browser_crashed",side="system"}') == 1.0
    assert 'side="caller",code=' not in text and 'code="action_failed",side="system"' not in text


# -- operator bounds and readable script errors -------------------------------------------------------


async def _refused(o: RunningOrchestrator, **fields: Any) -> dict[str, Any]:
    r = await o.api.create(**fields)
    assert r.status == 422, (fields, r.status, r.body)
    assert r.body["error"]["code"] == "validation_error"
    return r.body["error"]


async def test_a_waiting_room_longer_than_the_operator_allows_is_refused(start_orchestrator):
    o = await start_orchestrator(max_waiting=600)
    for kind in ({"kind": "signal"}, {"kind": "selector", "selector": "#stage"}):
        error = await _refused(o, wait_for={**kind, "timeout": 601})
        assert [d["field"] for d in error["details"]] == ["wait_for.timeout"]
        assert "600" in error["message"] and "ORCHESTRATOR_MAX_WAITING" in error["message"]
        assert (await o.api.create(wait_for={**kind, "timeout": 600})).status == 202
    # Loading is not a waiting room: the spec's own bound on loading applies (600 s), not the operator's.
    assert (await o.api.create(wait_for={"kind": "load", "timeout": 600})).status == 202


async def test_evaluate_steps_need_the_operator(start_orchestrator):
    script = [{"do": "click", "selector": "#join"}, {"do": "evaluate", "script": "document.title = 'x'"}]
    closed = await start_orchestrator()
    error = await _refused(closed, actions=script)
    assert [d["field"] for d in error["details"]] == ["actions[1]"]
    assert "the operator has not enabled" in error["message"] and "ACTIONS_ALLOW_EVALUATE" in error["message"]
    assert (await closed.api.create(actions=script[:1])).status == 202

    opened = await start_orchestrator(
        actions_allow_evaluate=True, db=closed.orchestrator.settings.db_path.with_name("b.db")
    )
    r = await opened.api.create(actions=script)
    assert r.status == 202, r.body
    assert r.body["request"]["actions"][1] == {"do": "evaluate", "script": "document.title = 'x'", "timeout": 10.0}


def test_the_operator_bounds_come_from_their_variables(monkeypatch, tmp_path):
    from orchestrator.config import OrchestratorSettings

    defaults = OrchestratorSettings(records_dir=tmp_path)
    assert (defaults.max_waiting, defaults.actions_allow_evaluate) == (1800.0, False)
    monkeypatch.setenv("ORCHESTRATOR_MAX_WAITING", "90")
    monkeypatch.setenv("ACTIONS_ALLOW_EVALUATE", "true")
    configured = OrchestratorSettings(records_dir=tmp_path)
    assert (configured.max_waiting, configured.actions_allow_evaluate) == (90.0, True)


async def test_bad_join_scripts_name_the_field_as_the_caller_wrote_it(start_orchestrator):
    o = await start_orchestrator()
    two_good = [{"do": "click", "selector": "#a"}, {"do": "wait", "seconds": 1}]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"actions": [*two_good, {"do": "tap", "selector": "#b"}]}, "actions[2]", "'tap'"),
        ({"actions": [*two_good, {"do": "click", "selector": ""}]}, "actions[2].selector", "at least 1 character"),
        ({"actions": [*two_good, {"do": "click", "selector": "   "}]}, "actions[2].selector", "at least 1 character"),
        ({"actions": [{"do": "click"}]}, "actions[0].selector", "Field required"),
        ({"actions": [{"do": "click", "selector": "#a", "timeout": 500}]}, "actions[0].timeout", "120"),
        ({"actions": [{"do": "wait", "seconds": 1}] * 51}, "actions", "at most 50"),
        ({"actions": [{"do": "press", "key": "Enter", "frame": ["iframe", ""]}]}, "actions[0].frame[1]", "at least"),
        ({"stop_when": {"silence": 0}}, "stop_when.silence", "greater than or equal to 1"),
        ({"stop_when": {"quiet": 10}}, "stop_when.quiet", "unknown field"),
        ({"stop_when": "silence"}, "stop_when", "StopWhen"),
        ({"from": "later"}, "from", "'ready' or 'commit'"),
    ]
    for fields, field, says in cases:
        error = await _refused(o, **fields)
        assert [d["field"] for d in error["details"]] == [field], (fields, error)
        assert says in error["details"][0]["message"], (fields, error)
        assert error["message"].startswith(f"{field}: "), error["message"]


async def test_a_valid_meeting_request_is_leased_as_the_recorders_spec(start_orchestrator):
    o = await start_orchestrator()
    script = [
        {"do": "fill", "selector": "input[name=name]", "value": "Recorder", "frame": ["#prejoin"]},
        {"do": "click", "selector": "button:has-text('Join')"},
    ]
    _, _, lease = await _leased(
        o,
        actions=script,
        actions_timeout=60,
        wait_for={"kind": "selector", "selector": "#stage", "timeout": 900},
        stop_when={"selector": ".meeting-ended", "silence": 300},
        video=False,
    )
    spec = lease["spec"]
    assert [step["do"] for step in spec["actions"]] == ["fill", "click"]
    assert spec["actions"][0]["frame"] == ["#prejoin"]
    assert (spec["actions_timeout"], spec["video"], spec["from"]) == (60, False, "ready")
    assert spec["stop_when"]["selector"] == ".meeting-ended" and spec["stop_when"]["silence"] == 300


# -- the store ---------------------------------------------------------------------------------------


async def test_a_store_from_before_meetings_migrates_and_keeps_its_rows(tmp_path: Path):
    path = tmp_path / "v2.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(f"BEGIN;\n{MIGRATIONS[0]}\n{MIGRATIONS[1]}\nPRAGMA user_version=2;\nCOMMIT;")
        db.execute(
            "INSERT INTO recordings (id, status, request, spec, upload, created_at, updated_at, queued_at, owner)"
            " VALUES ('rec_old', 'completed', '{}', '{}', '{}', 1.0, 2.0, 1.0, 'a')"
        )
        db.commit()
    store = SQLiteStore(path)
    await store.open()
    try:
        row = await store.get("rec_old")
        assert row is not None
        assert (row.paused, row.pause_requested, row.stop_reason, row.screenshot_location) == (False, False, None, None)
        assert "waiting" not in row.timestamps
        updated = await store.update("rec_old", {"stop_reason": "api", "pause_requested": True})
        assert updated is not None and (updated.stop_reason, updated.pause_requested) == ("api", True)
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_combinations_and_spellings_the_api_does_not_take_name_their_field(start_orchestrator):
    o = await start_orchestrator()
    cases = [
        ({"from": "commit", "wait_for": {"kind": "signal"}}, "from"),
        ({"from": "commit", "stop_when": {"silence": 5}}, "stop_when"),
        ({"video": False, "stop_when": {"frozen": 5}}, "video"),
        ({"wait_for": {"kind": "load", "timeout": 900}}, "wait_for.timeout"),
        ({"actions": [{"do": "press", "key": "Enter", "frame": ["iframe"]}]}, "actions[0].frame"),
        ({"duration": 30}, "duration"),  # the API's name is max_duration
        ({"start_from": "commit"}, "start_from"),  # the API's name is from
    ]
    for fields, named in cases:
        error = await _refused(o, **fields)
        assert named in [d["field"] for d in error["details"]], (fields, error)
