"""The orchestrator derives where a recording's files are; a worker's report cannot choose.

A leaked worker token is the attacker here: it leases a recording and reports a location of its choice
(the store's WAL, another recording's file, a foreign bucket). Each such report is refused, the
recording fails naming the worker, and the media route never serves what was named.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from orchestrator.app import move_legacy_store
from orchestrator.locations import Locations
from orchestrator.store.schema import MIGRATIONS
from orchestrator.store.sqlite import SQLiteStore
from tests.support.orchestrator import PUBLIC_URL, RunningOrchestrator, leased_location

ADMIN_TOKEN = "test-admin-token"


async def _leased(o: RunningOrchestrator, worker_id: str = "w-evil") -> tuple[str, Any, dict[str, Any]]:
    rid = (await o.api.create()).body["id"]
    worker = o.worker(worker_id)
    lease = (await worker.lease(wait=5)).body
    assert lease["recording_id"] == rid
    return rid, worker, lease


def _secret_file(path: Path, content: bytes = b"every caller's requests") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


async def _assert_refused(o: RunningOrchestrator, rid: str, worker: Any, lease: dict[str, Any], **fields: Any) -> None:
    field, location = next(iter(fields.items()))
    r = await worker.report(lease["lease_id"], "completed", **fields)
    assert r.status == 422, r.body
    assert r.body["error"]["code"] == "invalid_report"
    assert r.body["error"]["details"][0]["field"] == field
    rec = await o.api.get(rid)
    assert rec["status"] == "failed"
    assert rec["error"]["code"] == "invalid_report"
    assert worker.worker_id in rec["error"]["message"] and location[:60] in rec["error"]["message"], rec["error"]
    assert rec["location"] is None and rec["metadata_location"] is None
    media = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert media.status == 404, media.body
    # The lease ended with the refusal: the worker's retry is told so, not accepted.
    again = await worker.report(lease["lease_id"], "completed", **fields)
    assert again.status == 410


async def test_the_store_wal_next_to_records_dir_is_refused_and_never_served(start_orchestrator, tmp_path):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o)
    records = o.orchestrator.settings.records_dir
    wal = _secret_file(tmp_path / "state" / "orchestrator.db-wal")
    forged = f"file://{records}/../state/orchestrator.db-wal"
    assert records.parent / "state" / wal.name == wal  # what `..` in the forged path leads to
    await _assert_refused(o, rid, worker, lease, location=forged)


async def test_the_real_store_file_is_refused(start_orchestrator):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o)
    db = o.orchestrator.settings.db_path
    assert db.exists()
    await _assert_refused(o, rid, worker, lease, location=db.resolve().as_uri())


async def test_another_recordings_file_is_refused(start_orchestrator):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o)
    other = (await o.api.create()).body["id"]
    theirs = leased_location({**lease, "recording_id": other}, o.orchestrator.settings.records_dir)
    _secret_file(Path(theirs.removeprefix("file://")), b"someone else's meeting")
    await _assert_refused(o, rid, worker, lease, location=theirs)


async def test_an_earlier_attempts_file_is_refused(start_orchestrator):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o)
    stale = leased_location({**lease, "attempt": lease["attempt"] + 1}, o.orchestrator.settings.records_dir)
    await _assert_refused(o, rid, worker, lease, location=stale)


async def test_a_forged_metadata_location_is_refused_too(start_orchestrator):
    o = await start_orchestrator()
    rid, worker, lease = await _leased(o)
    r = await worker.report(
        lease["lease_id"],
        "completed",
        location=o.location(lease),
        metadata_location=o.orchestrator.settings.db_path.resolve().as_uri(),
    )
    assert (r.status, r.body["error"]["details"][0]["field"]) == (422, "metadata_location")
    assert (await o.api.get(rid))["status"] == "failed"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda lease, good: good.replace("s3://farm/", "s3://other-bucket/"), id="foreign bucket"),
        pytest.param(lambda lease, good: good.replace(f"/attempt-{lease['attempt']}", ""), id="no attempt"),
        pytest.param(lambda lease, good: good.replace("attempt-1", "attempt-2"), id="another attempt"),
        pytest.param(lambda lease, good: good.replace("s3://farm/team-a/", "s3://farm/team-b/"), id="outside prefix"),
        pytest.param(lambda lease, good: good.replace("/2026/", "/2026/../"), id="dot-dot segment"),
        pytest.param(lambda lease, good: good.replace("/2026/", "/2026//"), id="empty segment"),
        pytest.param(lambda lease, good: good.replace(lease["recording_id"], "rec_other"), id="another id"),
        pytest.param(lambda lease, good: good.replace("rec.mp4", "rec.mp4/x"), id="not rec.mp4"),
        pytest.param(lambda lease, good: good.replace("s3://", "file:///"), id="file on an S3 lease"),
    ],
)
async def test_s3_locations_outside_the_lease_are_refused(start_orchestrator, forge):
    o = await start_orchestrator(s3_bucket="farm", s3_prefix="team-a")
    rid, worker, lease = await _leased(o)
    good = o.location(lease)
    assert good.startswith(f"s3://farm/team-a/2026/01/02/{rid}/attempt-1/")
    forged = forge(lease, good)
    assert forged != good
    await _assert_refused(o, rid, worker, lease, location=forged)


async def test_the_derived_places_are_accepted(start_orchestrator, s3):
    o = await start_orchestrator(s3_bucket=s3.bucket, s3_prefix="/team-a//x/", s3_endpoint_url=s3.endpoint)
    rid, worker, lease = await _leased(o, "w-good")
    assert lease["upload"] == {"bucket": s3.bucket, "prefix": "team-a/x"}
    location = o.location(lease)
    key = location.removeprefix(f"s3://{s3.bucket}/")
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"mp4")
    r = await worker.report(
        lease["lease_id"], "completed", location=location, metadata_location=o.location(lease, "rec.json")
    )
    assert r.status == 200, r.body
    media = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert media.status == 302 and media.headers["Location"].startswith(f"{s3.endpoint}/{s3.bucket}/{key}?")


async def test_a_stored_location_that_was_not_derived_is_never_served(start_orchestrator, s3):
    """Rows written before these checks (or by hand) are judged again when media is asked for."""
    o = await start_orchestrator(s3_bucket=s3.bucket, s3_endpoint_url=s3.endpoint)
    store = o.orchestrator.store
    for forged in (
        o.orchestrator.settings.db_path.resolve().as_uri(),
        "s3://other-bucket/recordings/2026/01/02/{rid}/attempt-1/rec.mp4",
        f"s3://{s3.bucket}/somebody-elses/key.mp4",
    ):
        rid, worker, lease = await _leased(o)
        assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
        assert await store.update(rid, {"location": forged.replace("{rid}", rid)}) is not None
        media = await o.api.request("GET", f"/v1/recordings/{rid}/media")
        assert (media.status, media.body["error"]["code"]) == (404, "not_found"), forged
        assert "Location" not in media.headers


async def test_a_pending_upload_on_the_workers_disk_is_not_stored_and_a_forged_one_is_refused(start_orchestrator):
    o = await start_orchestrator(s3_bucket="farm")
    rid, worker, lease = await _leased(o)
    own_disk = f"file:///records/{rid}/attempt-{lease['attempt']}/rec.mp4"
    r = await worker.report(lease["lease_id"], "completed", location=own_disk, upload_pending=True)
    assert r.status == 200, r.body
    assert (await o.api.get(rid))["location"] is None
    r = await worker.report(lease["lease_id"], "completed", location="file:///etc/passwd", upload_pending=True)
    assert r.status == 422
    rec = await o.api.get(rid)
    assert (rec["status"], rec["error"]["code"]) == ("failed", "invalid_report")


def test_location_rules_as_a_table(tmp_path):
    places = Locations(tmp_path / "records")
    local: dict[str, Any] = {"bucket": None, "prefix": ""}
    s3: dict[str, Any] = {"bucket": "b", "prefix": "p/q"}
    good_local = (tmp_path / "records" / "rec_1" / "attempt-2" / "rec.mp4").resolve().as_uri()
    assert places.problem(good_local, recording_id="rec_1", attempt=2, upload=local) is None
    for bad in (
        good_local + "?x",
        good_local.replace("file:///", "file://host/"),
        good_local.replace("attempt-2", "attempt-2/../attempt-2"),
        good_local.replace("rec.mp4", "rec.json"),
    ):
        assert places.problem(bad, recording_id="rec_1", attempt=2, upload=local) is not None, bad
    assert places.problem("s3://b/p/q/rec_1/x/attempt-2/rec.mp4", recording_id="rec_1", attempt=2, upload=s3) is None
    for bad in (
        "s3://b/p/q/attempt-2/rec_1/rec.mp4",  # the attempt must come after the id
        "s3://b/p/qq/rec_1/attempt-2/rec.mp4",
        "s3://b/p/q/rec_1/attempt-2/./rec.mp4",
        "s3://b/p/q/rec_1/attempt-2/rec.mp4\n",
        "http://b/p/q/rec_1/attempt-2/rec.mp4",
    ):
        assert places.problem(bad, recording_id="rec_1", attempt=2, upload=s3) is not None, bad


# The store moves out of RECORDS_DIR


async def test_a_store_in_records_dir_is_moved_to_the_state_dir_at_start(start_orchestrator, tmp_path):
    records, state = tmp_path / "records", tmp_path / "state"
    legacy = records / "orchestrator.db"
    first = SQLiteStore(legacy)
    await first.open()
    await first.close()
    (records / "orchestrator.db-wal").write_bytes(b"")
    o = await start_orchestrator(db=None, state_dir=state, records_dir=records)
    assert o.orchestrator.settings.db_path == state / "orchestrator.db"
    assert (state / "orchestrator.db").is_file() and (state / "orchestrator.db-wal").exists()
    assert not legacy.exists() and not (records / "orchestrator.db-wal").exists()
    assert (await o.api.create()).status == 202
    # Once the new store exists an old file is left alone (nothing is overwritten).
    legacy.write_bytes(b"stale")
    assert move_legacy_store(legacy, state / "orchestrator.db") is False
    assert legacy.read_bytes() == b"stale"


async def test_rows_from_before_owners_are_the_admins_and_their_media_is_found(start_orchestrator, tmp_path):
    """An existing store migrates: old rows get no owner (only the admin sees them) and keep their media."""
    db = tmp_path / "old.db"
    records = tmp_path / "records"
    con = sqlite3.connect(db)
    con.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version=1;\nCOMMIT;")
    old_file = _secret_file(records / "rec_old" / "rec.mp4", b"an old recording")
    con.execute(
        """INSERT INTO recordings (id, status, request, spec, upload, created_at, updated_at, queued_at, attempts,
                                   location) VALUES (?, 'completed', ?, ?, ?, 1, 1, 1, 1, ?)""",
        (
            "rec_old",
            f'{{"url": "{PUBLIC_URL}"}}',
            f'{{"url": "{PUBLIC_URL}", "duration": 10}}',
            '{"bucket": null, "prefix": ""}',
            old_file.resolve().as_uri(),
        ),
    )
    con.commit()
    con.close()
    o = await start_orchestrator(db=db, records_dir=records, api_admin_token=ADMIN_TOKEN)
    assert (await o.api.request("GET", "/v1/recordings/rec_old")).status == 404
    assert (await o.api.request("GET", "/v1/recordings")).body["items"] == []
    admin = o.client(ADMIN_TOKEN)
    assert (await admin.get("rec_old"))["status"] == "completed"
    media = await admin.request("GET", "/v1/recordings/rec_old/media")
    assert (media.status, media.body) == (200, b"an old recording")


def test_what_the_workers_storage_writes_is_what_the_orchestrator_accepts(tmp_path):
    """The contract between the halves: the recorder's own storage code yields accepted locations."""
    from datetime import UTC, datetime

    from recorder.attempt import AttemptFolder
    from recorder.config import RecorderSettings
    from recorder.storage import destination_for
    from recorder.storage.keys import object_key

    settings = RecorderSettings(records_dir=tmp_path / "records", s3_bucket=None)
    places = Locations(tmp_path / "records")
    files = {}
    for name in ("rec.mp4", "rec.json"):
        files[name] = tmp_path / "out" / name
        _secret_file(files[name], b"x")
    folder = AttemptFolder.under(settings.records_dir, "rec_abc", 3)
    stored = destination_for(settings, folder, started_at=datetime.now(UTC)).store(files)
    local = {"bucket": None, "prefix": ""}
    assert places.problem(stored.location, recording_id="rec_abc", attempt=3, upload=local) is None
    assert (
        places.problem(stored.metadata_location, recording_id="rec_abc", attempt=3, upload=local, name="rec.json")
        is None
    )
    assert places.problem(stored.location, recording_id="rec_abc", attempt=2, upload=local) is not None

    upload = {"bucket": "farm", "prefix": "team-a/x"}
    key = object_key(
        settings.s3_key_template,
        prefix=upload["prefix"],
        recording_id="rec_abc",
        attempt=3,
        name="rec.mp4",
        started_at=datetime(2026, 11, 30, tzinfo=UTC),
    )
    assert places.problem(f"s3://farm/{key}", recording_id="rec_abc", attempt=3, upload=upload) is None
