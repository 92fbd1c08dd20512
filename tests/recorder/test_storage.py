"""Storage: verified S3 uploads through a real S3 HTTP server (moto), pending/resume, local default, live upload."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from structlog.testing import capture_logs

from contract.errors import ErrorCode, RecorderError
from contract.protocol import UploadTarget
from recorder.attempt import FAILED_NAME, PENDING_NAME, AttemptFolder
from recorder.config import RecorderSettings
from recorder.storage import (
    LiveUploader,
    StoredResult,
    TransferOptions,
    destination_for,
    resume_pending,
)
from recorder.storage.bucket import BucketDestination
from recorder.storage.keys import check_template, live_prefix, object_key
from recorder.storage.pending import PendingStore, PendingUpload
from recorder.storage.transfer import abort_attempt
from tests.support.s3 import AUTH_BUCKET, MotoServer, S3Env, TcpGate

MiB = 1024 * 1024
STARTED = datetime(2026, 3, 7, 23, 30, tzinfo=UTC)
SMALL_PARTS = TransferOptions(multipart_threshold=6 * MiB, part_size=5 * MiB, max_concurrency=2, max_attempts=2)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def sha256(path_or_bytes: Path | bytes) -> str:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return hashlib.sha256(data).hexdigest()


def settings_for(
    tmp_path: Path, endpoint: str | None = None, bucket: str | None = None, **extra: object
) -> RecorderSettings:
    return RecorderSettings(
        records_dir=tmp_path / "records", s3_bucket=bucket, s3_endpoint_url=endpoint, s3_prefix="recordings", **extra
    )


def store(
    recording_id: str,
    files: dict[str, Path],
    target: UploadTarget | None,
    settings: RecorderSettings,
    started: datetime,
    *,
    attempt: int = 1,
    options: TransferOptions | None = None,
    **kwargs: Any,
) -> StoredResult:
    """Store an attempt's files the way the worker and the CLI do: through the attempt's one destination."""
    folder = AttemptFolder.under(settings.records_dir, recording_id, attempt)
    return destination_for(settings, folder, target, started_at=started, options=options).store(files, **kwargs)


def bucket_destination(
    settings: RecorderSettings, recording_id: str, options: TransferOptions = SMALL_PARTS
) -> BucketDestination:
    folder = AttemptFolder.under(settings.records_dir, recording_id)
    dest = destination_for(settings, folder, started_at=STARTED, options=options)
    assert isinstance(dest, BucketDestination)
    return dest


def random_recording(settings: RecorderSettings, recording_id: str, size: int, subdir: str = "") -> dict[str, Path]:
    """rec.mp4 of random bytes (size matters here, not content) and a rec.json, where the recorder puts them."""
    home = settings.records_dir / recording_id / subdir
    home.mkdir(parents=True, exist_ok=True)
    media = home / "rec.mp4"
    media.write_bytes(os.urandom(size))
    meta = home / "rec.json"
    meta.write_text(json.dumps({"recording_id": recording_id, "duration": 1.0}))
    return {"rec.mp4": media, "rec.json": meta}


def real_recording(settings: RecorderSettings, recording_id: str) -> dict[str, Path]:
    """A genuine short H.264/AAC MP4 (faststart) generated with lavfi, plus its rec.json."""
    home = settings.records_dir / recording_id
    home.mkdir(parents=True, exist_ok=True)
    media = home / "rec.mp4"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
            "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-movflags", "+faststart", str(media),
        ],
        check=True,
        timeout=60,
    )
    meta = home / "rec.json"
    meta.write_text(json.dumps({"recording_id": recording_id, "duration": 2.0}))
    return {"rec.mp4": media, "rec.json": meta}


def download(s3: S3Env, bucket: str, key: str) -> bytes:
    return s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()


def open_uploads(s3: S3Env, bucket: str) -> list[dict]:
    return s3.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def pending_state(settings: RecorderSettings, recording_id: str) -> PendingUpload:
    path = settings.records_dir / recording_id / "attempt-1" / PENDING_NAME
    return PendingUpload.model_validate_json(path.read_bytes())


# -- keys ----------------------------------------------------------------------------------------


DEFAULT_TEMPLATE = RecorderSettings.model_fields["s3_key_template"].default


def test_default_key_template_files_by_utc_day_and_attempt() -> None:
    assert DEFAULT_TEMPLATE == "{prefix}/{yyyy}/{mm}/{dd}/{recording_id}/attempt-{attempt}/{name}"
    local_evening = datetime.fromisoformat("2026-03-07T20:30:00-05:00")  # already 8 March in UTC
    key = object_key(
        DEFAULT_TEMPLATE, prefix="/recordings/", recording_id="r1", attempt=2, name="rec.mp4", started_at=local_evening
    )
    assert key == "recordings/2026/03/08/r1/attempt-2/rec.mp4"
    assert object_key("{prefix}/{recording_id}/attempt-{attempt}/{name}", prefix="", recording_id="r1", attempt=1,
                      name="rec.json", started_at=STARTED) == "r1/attempt-1/rec.json"
    assert live_prefix(DEFAULT_TEMPLATE, prefix="p", recording_id="r1", attempt=3,
                       started_at=STARTED) == "p/2026/03/07/r1/attempt-3/live/"


@pytest.mark.parametrize(
    "template",
    [
        "{prefix}/{name}",
        "{prefix}/{recording_id}/attempt-{attempt}/{name}/{bogus}",
        "{prefix}/{recording_id}/{name}",  # two attempts would share keys
        "{prefix}/{recording_id}/{attempt}/{name}",  # no attempt-<n> segment: the orchestrator refuses it
        "{prefix}/attempt-{attempt}/{recording_id}/{name}",  # attempt before the recording
        "{recording_id}/attempt-{attempt}/{name}",  # not under the leased prefix
        "{prefix}/{recording_id}-attempt-{attempt}/{name}",
    ],
)
def test_key_template_that_would_collide_or_is_unknown_is_refused(template: str) -> None:
    with pytest.raises(RecorderError) as info:
        check_template(template)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_a_template_without_the_attempt_stops_the_recorder_at_start(tmp_path: Path) -> None:
    """Refused when the settings are read (worker start, exit 2), not after a recording was made."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"S3_KEY_TEMPLATE.*\{attempt\}"):
        settings_for(tmp_path, s3_key_template="{prefix}/{yyyy}/{mm}/{dd}/{recording_id}/{name}")


@pytest.mark.parametrize("attempt", [0, -1, True])
def test_an_attempt_that_is_not_a_lease_attempt_is_refused(attempt: int) -> None:
    with pytest.raises(RecorderError):
        object_key(DEFAULT_TEMPLATE, prefix="p", recording_id="r1", attempt=attempt, name="rec.mp4",
                   started_at=STARTED)


@pytest.mark.parametrize("recording_id", ["../etc", "a/b", ".hidden", "", "x" * 200])
def test_recording_id_that_could_escape_records_dir_is_refused(tmp_path: Path, recording_id: str) -> None:
    settings = settings_for(tmp_path)
    files = random_recording(settings, "ok", 10)
    with pytest.raises(RecorderError) as info:
        store(recording_id, files, None, settings, STARTED)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_part_size_grows_to_fit_ten_thousand_parts() -> None:
    options = TransferOptions(part_size=8 * MiB)
    assert options.part_size_for(100 * MiB) == 8 * MiB
    huge = 200 * 1024 * MiB
    part = options.part_size_for(huge)
    assert -(-huge // part) <= 10_000 and part % MiB == 0 and part > 8 * MiB


# -- local storage -------------------------------------------------------------------------------


def test_without_bucket_files_stay_in_records_dir_with_file_locations(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    files = random_recording(settings, "loc1", 300_000)
    digest = sha256(files["rec.mp4"])
    elsewhere = tmp_path / "work" / "quality.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text("{}")

    result = store("loc1", {**files, "quality.json": elsewhere}, None, settings, STARTED)

    home = (settings.records_dir / "loc1" / "attempt-1").resolve()
    assert result.location == (home / "rec.mp4").as_uri()
    assert result.metadata_location == (home / "rec.json").as_uri()
    assert not result.pending and result.destination is None
    assert result.sha256 == digest == sha256(home / "rec.mp4")
    assert result.bytes == 300_000
    assert (home / "quality.json").is_file() and not elsewhere.exists()


# -- upload after finalize -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_real_recording_uploaded_verified_and_local_copy_removed(tmp_path: Path, s3: S3Env) -> None:
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    files = real_recording(settings, "rec-real")
    media_bytes = files["rec.mp4"].read_bytes()
    meta_bytes = files["rec.json"].read_bytes()

    result = store("rec-real", files, None, settings, STARTED)

    key = "recordings/2026/03/07/rec-real/attempt-1/rec.mp4"
    assert result.location == f"s3://{s3.bucket}/{key}"
    assert result.metadata_location == f"s3://{s3.bucket}/recordings/2026/03/07/rec-real/attempt-1/rec.json"
    assert not result.pending and result.error is None
    assert result.sha256 == sha256(media_bytes) and result.bytes == len(media_bytes)
    assert sha256(download(s3, s3.bucket, key)) == sha256(media_bytes)
    head = s3.client.head_object(Bucket=s3.bucket, Key=key)
    assert head["ContentType"] == "video/mp4"
    meta_head = s3.client.head_object(Bucket=s3.bucket, Key=key.replace("rec.mp4", "rec.json"))
    assert meta_head["ContentType"] == "application/json"
    assert download(s3, s3.bucket, key.replace("rec.mp4", "rec.json")) == meta_bytes
    # confirmed, so the local copies are gone, and so is the recording's directory
    assert not (settings.records_dir / "rec-real").exists()


def test_keep_local_and_target_bucket_and_prefix(tmp_path: Path, s3: S3Env) -> None:
    other = s3.new_bucket()
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket, keep_local=True)
    files = random_recording(settings, "keep1", 100_000)

    result = store("keep1", files, UploadTarget(bucket=other, prefix="tenant-a"), settings, STARTED)

    assert result.location == f"s3://{other}/tenant-a/2026/03/07/keep1/attempt-1/rec.mp4"
    assert files["rec.mp4"].is_file() and files["rec.json"].is_file()
    assert sha256(download(s3, other, "tenant-a/2026/03/07/keep1/attempt-1/rec.mp4")) == sha256(files["rec.mp4"])
    assert not (settings.records_dir / "keep1" / "attempt-1" / PENDING_NAME).exists()


def test_file_above_threshold_goes_in_several_verified_parts(tmp_path: Path, s3: S3Env) -> None:
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    files = random_recording(settings, "big1", 12 * MiB + 12345, subdir="attempt-1")  # the worker's layout
    digest = sha256(files["rec.mp4"])
    (settings.records_dir / "big1" / "attempt-1" / "capture.log").write_text("the caller's")

    result = store("big1", files, None, settings, STARTED, options=SMALL_PARTS)

    key = "recordings/2026/03/07/big1/attempt-1/rec.mp4"
    assert result.objects[0].parts == 3
    head = s3.client.head_object(Bucket=s3.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == 12 * MiB + 12345
    assert head["ContentType"] == "video/mp4"
    assert head.get("ChecksumSHA256"), "the SHA-256 checksum was stored with the object"
    assert sha256(download(s3, s3.bucket, key)) == digest == result.sha256
    assert open_uploads(s3, s3.bucket) == []
    # only the stored files and storage's own bookkeeping are removed; the rest of the attempt is the caller's
    assert [p.name for p in (settings.records_dir / "big1").iterdir()] == ["attempt-1"]
    assert [p.name for p in (settings.records_dir / "big1" / "attempt-1").iterdir()] == ["capture.log"]


def test_recordings_stored_from_several_threads_at_once(tmp_path: Path, s3: S3Env) -> None:
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    sets = {f"par{i}": random_recording(settings, f"par{i}", 7 * MiB + i) for i in range(3)}
    digests = {rid: sha256(files["rec.mp4"]) for rid, files in sets.items()}

    with ThreadPoolExecutor(3) as pool:
        futures = {
            rid: pool.submit(store, rid, files, None, settings, STARTED, options=SMALL_PARTS)
            for rid, files in sets.items()
        }
        results = {rid: f.result(timeout=120) for rid, f in futures.items()}

    for rid, result in results.items():
        assert not result.pending
        assert sha256(download(s3, s3.bucket, f"recordings/2026/03/07/{rid}/attempt-1/rec.mp4")) == digests[rid]


# -- when S3 misbehaves --------------------------------------------------------------------------


@pytest.fixture
def gated(tmp_path: Path, s3: S3Env, s3_gate: TcpGate) -> Iterator[tuple[RecorderSettings, TcpGate]]:
    yield settings_for(tmp_path, s3_gate.endpoint, s3.bucket), s3_gate


def test_outage_mid_upload_keeps_it_pending_then_resumes_the_same_upload(
    gated: tuple[RecorderSettings, TcpGate], s3: S3Env
) -> None:
    settings, gate = gated
    files = random_recording(settings, "out1", 17 * MiB)  # 4 parts of 5, 5, 5, 2 MiB
    digest, meta = sha256(files["rec.mp4"]), files["rec.json"].read_bytes()
    # S3 "stops" as the third part is about to be sent: part 1 or 2 is confirmed, the rest is not
    gate.close_when(lambda method, path: method == "PUT" and "partNumber=3" in path)

    started = time.monotonic()
    result = store("out1", files, None, settings, STARTED, options=SMALL_PARTS)
    assert time.monotonic() - started < 30, "a closed endpoint fails fast (refused or reset), no hang"

    assert result.pending and not gate.is_open
    assert "unreachable" in (result.reason or "")
    assert result.location == files["rec.mp4"].resolve().as_uri()
    assert result.destination == f"s3://{s3.bucket}/recordings/2026/03/07/out1/attempt-1/rec.mp4"
    assert files["rec.mp4"].is_file(), "nothing is deleted before the object is confirmed"
    state = pending_state(settings, "out1")
    media = state.find("rec.mp4")
    assert media is not None and media.upload_id and not media.done
    confirmed_before = set(media.parts)
    assert confirmed_before and 3 not in confirmed_before and len(confirmed_before) < 4
    upload_id = media.upload_id

    # still down: stays pending, same upload
    again = resume_pending(settings, options=SMALL_PARTS)
    assert [r.pending for r in again] == [True]
    assert pending_state(settings, "out1").find("rec.mp4").upload_id == upload_id  # type: ignore[union-attr]

    gate.open()
    seen = len(gate.requests)
    resumed = resume_pending(settings, options=SMALL_PARTS)

    assert len(resumed) == 1 and not resumed[0].pending and resumed[0].error is None
    assert resumed[0].location == result.destination
    assert sha256(download(s3, s3.bucket, "recordings/2026/03/07/out1/attempt-1/rec.mp4")) == digest
    assert download(s3, s3.bucket, "recordings/2026/03/07/out1/attempt-1/rec.json") == meta
    assert open_uploads(s3, s3.bucket) == [], "no duplicate or orphan multipart upload left"
    # the same multipart upload was continued: one create in all, parts confirmed before were not resent
    assert len(gate.calls("POST", "?uploads")) == 1
    after = gate.requests[seen:]
    resent = {n for n in confirmed_before for m, p in after if m == "PUT" and f"partNumber={n}&" in p + "&"}
    assert resent == set()
    completes = [p for m, p in after if m == "POST" and "uploadId=" in p]
    assert len(completes) == 1 and (f"uploadId={quote(upload_id, safe='')}" in completes[0]
                                    or f"uploadId={upload_id}" in completes[0])
    assert not (settings.records_dir / "out1").exists()
    assert resume_pending(settings, options=SMALL_PARTS) == []


def test_s3_down_from_the_start_is_pending_then_uploaded(
    gated: tuple[RecorderSettings, TcpGate], s3: S3Env
) -> None:
    settings, gate = gated
    files = random_recording(settings, "down1", 12 * MiB)
    digest = sha256(files["rec.mp4"])
    gate.close()

    result = store("down1", files, None, settings, STARTED, options=SMALL_PARTS)

    assert result.pending and result.location.startswith("file://")
    assert pending_state(settings, "down1").find("rec.mp4").upload_id is None  # type: ignore[union-attr]
    gate.open()
    [resumed] = resume_pending(settings, options=SMALL_PARTS)
    assert not resumed.pending and resumed.sha256 == digest
    assert sha256(download(s3, s3.bucket, "recordings/2026/03/07/down1/attempt-1/rec.mp4")) == digest
    assert open_uploads(s3, s3.bucket) == []


def pending_while_s3_was_down(settings: RecorderSettings, gate: TcpGate, recording_id: str) -> str:
    """Leave `recording_id` (attempt 1) pending, as an outage would, with S3 back; the SHA-256 of its rec.mp4."""
    files = random_recording(settings, recording_id, 12 * MiB)
    gate.close()
    assert store(recording_id, files, None, settings, STARTED, options=SMALL_PARTS).pending
    gate.open()
    return sha256(files["rec.mp4"])


def test_an_idle_resume_leaves_a_live_jobs_pending_upload_to_that_job(
    gated: tuple[RecorderSettings, TcpGate], s3: S3Env
) -> None:
    """Only the job that owns an attempt may complete its upload (it confirms its lease first); what a dead
    worker left behind is anyone's to finish."""
    settings, gate = gated
    digest = pending_while_s3_was_down(settings, gate, "own1")
    store = PendingStore(settings.records_dir)
    with store.owner("own1", 1):
        assert store.owned("own1", 1)
        assert resume_pending(settings, options=SMALL_PARTS) == []
        assert gate.calls("POST", "?uploads") == [], "nothing was sent for an upload its job owns"
        [own] = resume_pending(settings, options=SMALL_PARTS, only=("own1", 1))
        assert own.pending is False and own.error is None
    assert sha256(download(s3, s3.bucket, "recordings/2026/03/07/own1/attempt-1/rec.mp4")) == digest


def test_an_idle_resume_finishes_what_a_dead_job_left(gated: tuple[RecorderSettings, TcpGate], s3: S3Env) -> None:
    settings, gate = gated
    digest = pending_while_s3_was_down(settings, gate, "dead1")
    store = PendingStore(settings.records_dir)
    with store.owner("dead1", 1):
        pass  # the owning job ended (a dead process releases its lock the same way)
    assert not store.owned("dead1", 1)
    [resumed] = resume_pending(settings, options=SMALL_PARTS)
    assert not resumed.pending and resumed.sha256 == digest


def test_resume_from_two_threads_at_once_uploads_once(gated: tuple[RecorderSettings, TcpGate], s3: S3Env) -> None:
    settings, gate = gated
    files = random_recording(settings, "twice1", 12 * MiB)
    gate.close()
    assert store("twice1", files, None, settings, STARTED, options=SMALL_PARTS).pending
    gate.open()
    barrier = threading.Barrier(2)

    def resume() -> list:
        barrier.wait()
        return resume_pending(settings, options=SMALL_PARTS)

    with ThreadPoolExecutor(2) as pool:
        outcomes = [r for batch in pool.map(lambda _: resume(), range(2)) for r in batch]

    done = [r for r in outcomes if not r.pending]
    busy = [r for r in outcomes if r.pending]
    assert len(done) == 1, "one thread did the upload"
    assert all("another thread or process" in (r.reason or "") for r in busy), "the other found it busy or done"
    assert len(gate.calls("POST", "?uploads")) == 1
    assert open_uploads(s3, s3.bucket) == []


def test_lost_answer_to_complete_is_recognised_not_uploaded_again(
    gated: tuple[RecorderSettings, TcpGate], s3: S3Env
) -> None:
    settings, gate = gated
    files = random_recording(settings, "lost1", 12 * MiB)
    digest = sha256(files["rec.mp4"])
    gate.close_on_answer(b"CompleteMultipartUploadResult")  # S3 completed it; the answer never arrives

    result = store("lost1", files, None, settings, STARTED, options=SMALL_PARTS)
    assert result.pending
    gate.open()
    seen = len(gate.requests)
    [resumed] = resume_pending(settings, options=SMALL_PARTS)

    assert not resumed.pending and resumed.location == result.destination
    assert sha256(download(s3, s3.bucket, "recordings/2026/03/07/lost1/attempt-1/rec.mp4")) == digest
    after = gate.requests[seen:]
    assert not [p for m, p in after if m == "PUT" and "rec.mp4" in p], "no byte of rec.mp4 sent again"
    assert len(gate.calls("POST", "?uploads")) == 1
    assert open_uploads(s3, s3.bucket) == []


def test_missing_bucket_is_denied_at_once_without_retries(tmp_path: Path, s3: S3Env, s3_gate: TcpGate) -> None:
    settings = settings_for(tmp_path, s3_gate.endpoint, "no-such-bucket-here")
    files = random_recording(settings, "deny1", 12 * MiB)
    options = TransferOptions(multipart_threshold=6 * MiB, part_size=5 * MiB, max_attempts=5)

    started = time.monotonic()
    with pytest.raises(RecorderError) as info:
        store("deny1", files, None, settings, STARTED, options=options)
    elapsed = time.monotonic() - started

    assert info.value.code is ErrorCode.UPLOAD_DENIED
    assert "no-such-bucket-here" in info.value.message and "NoSuchBucket" in info.value.message
    assert len(gate_s3_calls(s3_gate)) == 1, f"one request, no retry storm: {s3_gate.requests}"
    assert elapsed < 10
    home = settings.records_dir / "deny1" / "attempt-1"
    assert files["rec.mp4"].is_file()
    assert not (home / PENDING_NAME).exists() and (home / FAILED_NAME).is_file()
    assert resume_pending(settings, options=options) == []


def gate_s3_calls(gate: TcpGate) -> list[tuple[str, str]]:
    return [(m, p) for m, p in gate.requests if not p.startswith("/moto-api")]


def test_wrong_credentials_are_denied_naming_bucket_and_cause(
    tmp_path: Path, aws_env: None, moto_auth_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    settings = settings_for(tmp_path, moto_auth_server.endpoint, AUTH_BUCKET)
    files = random_recording(settings, "cred1", 1000)

    started = time.monotonic()
    with pytest.raises(RecorderError) as info:
        store("cred1", files, None, settings, STARTED)

    assert time.monotonic() - started < 10
    assert info.value.code is ErrorCode.UPLOAD_DENIED
    assert AUTH_BUCKET in info.value.message and "InvalidAccessKeyId" in info.value.message
    assert "credentials" in info.value.message


def test_abort_pending_leaves_no_parts_behind(gated: tuple[RecorderSettings, TcpGate], s3: S3Env) -> None:
    settings, gate = gated
    files = random_recording(settings, "ab1", 12 * MiB)
    gate.close_when(lambda method, path: method == "PUT" and "partNumber=2" in path)
    assert store("ab1", files, None, settings, STARTED, options=SMALL_PARTS).pending
    gate.open()
    assert len(open_uploads(s3, s3.bucket)) == 1

    folder = AttemptFolder.under(settings.records_dir, "ab1")
    assert abort_attempt(folder, settings, SMALL_PARTS) is True

    assert open_uploads(s3, s3.bucket) == []
    assert not (settings.records_dir / "ab1" / "attempt-1" / PENDING_NAME).exists()
    assert resume_pending(settings, options=SMALL_PARTS) == []
    assert abort_attempt(folder, settings, SMALL_PARTS) is False


def test_cancel_during_upload_aborts_the_multipart_upload(
    gated: tuple[RecorderSettings, TcpGate], s3: S3Env
) -> None:
    settings, gate = gated
    files = random_recording(settings, "cx1", 17 * MiB)
    cancel = threading.Event()

    def cancel_at_part_two(method: str, path: str) -> bool:
        if method == "PUT" and "partNumber=2" in path:
            cancel.set()
        return False  # the gate stays open

    gate.close_when(cancel_at_part_two)
    with pytest.raises(RecorderError) as info:
        store("cx1", files, None, settings, STARTED, options=SMALL_PARTS, cancel=cancel)

    assert info.value.code is ErrorCode.CANCELLED
    assert open_uploads(s3, s3.bucket) == []
    assert gate.calls("DELETE", "uploadId="), "the upload was aborted"
    assert not (settings.records_dir / "cx1" / "attempt-1" / PENDING_NAME).exists()
    assert files["rec.mp4"].is_file()


# -- upload while recording ----------------------------------------------------------------------

HLS_OUTPUT = ["-f", "hls", "-hls_time", "2", "-hls_list_size", "0", "-hls_segment_filename"]


def start_live_ffmpeg(live: Path, *, realtime: bool, seconds: float) -> subprocess.Popen[bytes]:
    """What capture runs with live_upload: H.264 with a keyframe every 2 s, AAC, 2 s HLS segments."""
    live.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            *(["-re"] if realtime else []),
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
            "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
            "-c:a", "aac", "-ar", "48000",
            *HLS_OUTPUT, str(live / "seg_%05d.ts"), str(live / "index.m3u8"),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def listed(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


def bucket_names(s3: S3Env, prefix: str) -> set[str]:
    page = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    return {obj["Key"][len(prefix):] for obj in page.get("Contents", [])}


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def probe_hls(playlist: Path) -> tuple[float, set[str], int]:
    """Duration, stream types and video frame count of an HLS recording, read as a whole (VOD)."""
    text = playlist.read_text()
    if "#EXT-X-ENDLIST" not in text:  # a killed FFmpeg leaves a live playlist: read what it lists, to the end
        playlist = playlist.with_name("vod.m3u8")
        playlist.write_text(text + "#EXT-X-ENDLIST\n")
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-count_packets",
            "-show_entries", "format=duration:stream=codec_type,nb_read_packets", "-of", "json", str(playlist),
        ],
        check=True, capture_output=True, text=True, timeout=60,
    )
    info = json.loads(out.stdout)
    frames = sum(int(s["nb_read_packets"]) for s in info["streams"] if s["codec_type"] == "video")
    return float(info["format"]["duration"]), {s["codec_type"] for s in info["streams"]}, frames


@needs_ffmpeg
def test_live_upload_keeps_every_completed_segment_when_ffmpeg_is_killed(tmp_path: Path, s3: S3Env) -> None:
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    dest = bucket_destination(settings, "live1", TransferOptions())
    live = dest.folder.live_dir
    uploader = dest.live_uploader()
    assert uploader is not None
    uploader.poll_interval = 0.2
    prefix = "recordings/2026/03/07/live1/attempt-1/live/"
    assert uploader.key_prefix == prefix
    ffmpeg = start_live_ffmpeg(live, realtime=True, seconds=60)
    uploader.start()
    try:
        playlist = live / "index.m3u8"
        wait_for(lambda: playlist.exists() and len(listed(playlist.read_text())) >= 3, 45, "3 finished segments")
        os.killpg(ffmpeg.pid, signal.SIGKILL)  # the recorder dies mid-recording
        ffmpeg.wait(timeout=10)

        on_disk = sorted(p.name for p in live.glob("seg_*.ts"))
        finished = listed(playlist.read_text())
        in_progress = [name for name in on_disk if name not in finished]
        assert len(in_progress) <= 1 and finished == on_disk[: len(finished)]
        wait_for(lambda: set(finished) | {"index.m3u8"} <= bucket_names(s3, prefix), 20, "segments in the bucket")
    finally:
        uploader.close()
        if ffmpeg.poll() is None:
            os.killpg(ffmpeg.pid, signal.SIGKILL)
            ffmpeg.wait()

    in_bucket = bucket_names(s3, prefix)
    assert set(in_progress).isdisjoint(in_bucket), "a segment still being written is never uploaded"
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for name in [*finished, "index.m3u8"]:
        data = download(s3, s3.bucket, prefix + name)
        assert data == (live / name).read_bytes()
        (fetched / name).write_bytes(data)
    head = s3.client.head_object(Bucket=s3.bucket, Key=prefix + finished[0])
    assert head["ContentType"] == "video/mp2t"
    duration, streams, frames = probe_hls(fetched / "index.m3u8")
    assert streams == {"video", "audio"}
    assert abs(duration - 2.0 * len(finished)) < 0.5, (duration, finished)
    assert frames == 60 * len(finished), "2 s of 30 fps video in every finished segment, none lost"


@needs_ffmpeg
def test_live_upload_finish_sends_the_rest_and_the_final_playlist(tmp_path: Path, s3: S3Env) -> None:
    live = tmp_path / "live"
    prefix = "rec/live2/live/"
    with LiveUploader(live, s3.bucket, prefix, client=s3.client, poll_interval=0.2) as uploader:
        ffmpeg = start_live_ffmpeg(live, realtime=False, seconds=7)
        try:
            assert ffmpeg.wait(timeout=60) == 0
        finally:
            if ffmpeg.poll() is None:
                os.killpg(ffmpeg.pid, signal.SIGKILL)
                ffmpeg.wait()
        summary = uploader.finish()

    segments = sorted(p.name for p in live.glob("seg_*.ts"))
    assert len(segments) == 4  # 2 + 2 + 2 + 1 s
    assert summary.missing == [] and summary.error is None
    assert sorted(summary.uploaded) == segments
    assert bucket_names(s3, prefix) == {*segments, "index.m3u8"}
    final = download(s3, s3.bucket, prefix + "index.m3u8").decode()
    assert "#EXT-X-ENDLIST" in final and listed(final) == segments


class RefusingDeletes:
    """An S3 client whose DeleteObjects answers 200 and refuses every key, as S3 does without s3:DeleteObject."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def delete_objects(self, *, Bucket: str, Delete: dict[str, object]) -> dict[str, object]:
        keys = [o["Key"] for o in Delete["Objects"]]  # type: ignore[attr-defined]
        self.asked.append(keys)
        return {"Errors": [{"Key": k, "Code": "AccessDenied", "Message": "Access Denied"} for k in keys]}


def test_live_discard_says_so_when_the_bucket_keeps_the_segments(tmp_path: Path) -> None:
    client = RefusingDeletes()
    uploader = LiveUploader(tmp_path / "live", "bucket", "rec/x/attempt-1/live/", client=client)
    uploader._uploaded = {"seg_00000.ts", "seg_00001.ts"}
    with capture_logs() as logs:
        uploader.discard()
    assert client.asked == [["rec/x/attempt-1/live/seg_00000.ts", "rec/x/attempt-1/live/seg_00001.ts"]]
    events = [entry["event"] for entry in logs]
    assert not [e for e in events if e == "live segments deleted"], events
    warning = next(entry for entry in logs if entry["event"].startswith("could not delete live segments"))
    assert "s3:DeleteObject" in warning["event"] and warning["objects"] == 2


def start_fmp4_ffmpeg(path: Path, seconds: float) -> subprocess.Popen[bytes]:
    """A fragmented MP4 written in real time at ~1 MB/s, as the live-mode capture writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-y", "-re", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=30",
         "-f", "lavfi", "-i", "sine", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
         "-b:v", "8M", "-g", "60", "-c:a", "aac", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
         str(path)],
        start_new_session=True,
    )  # fmt: skip


def part_numbers(requests: list[tuple[str, str]]) -> list[int]:
    """The part numbers of the UploadPart calls among `requests`, in the order they reached S3."""
    return [int(m.group(1)) for method, path in requests if method == "PUT" and (m := PART_NUMBER.search(path))]


PART_NUMBER = re.compile(r"[?&]partNumber=(\d+)")


@needs_ffmpeg
def test_growing_rec_mp4_is_uploaded_while_written_leaving_only_its_tail(
    gated: tuple[RecorderSettings, TcpGate], s3: S3Env
) -> None:
    settings, gate = gated
    dest = bucket_destination(settings, "grow1")
    uploader = dest.growing_upload()
    assert uploader is not None and uploader.key == "recordings/2026/03/07/grow1/attempt-1/rec.mp4"
    media = dest.folder.media  # in live mode FFmpeg writes rec.mp4 itself
    ffmpeg = start_fmp4_ffmpeg(media, seconds=14)
    uploader.start()
    try:
        wait_for(lambda: len(uploader.obj.parts) >= 1, 30, "a part sent while the file is still being written")
        assert ffmpeg.poll() is None
        assert ffmpeg.wait(timeout=60) == 0
    finally:
        if ffmpeg.poll() is None:
            os.killpg(ffmpeg.pid, signal.SIGKILL)
            ffmpeg.wait()
    size, digest = media.stat().st_size, sha256(media)
    wait_for(lambda: len(uploader.obj.parts) == size // SMALL_PARTS.part_size, 10, "every full part sent")
    sent_while_recording = sorted(uploader.obj.parts)
    seen = len(gate.requests)

    stored = dest.store({"rec.mp4": media}, growing=uploader)

    assert not stored.pending and stored.location == f"s3://{s3.bucket}/{uploader.key}"
    tail_bytes = size - len(sent_while_recording) * SMALL_PARTS.part_size
    assert tail_bytes <= SMALL_PARTS.part_size, "only the tail is left to send after the stop"
    assert part_numbers(gate.requests[seen:]) == ([len(sent_while_recording) + 1] if tail_bytes else []), (
        "the store sent the tail alone, none of the parts sent while recording"
    )
    assert len(gate.calls("POST", "?uploads")) == 1, "the upload that followed the file is the one completed"
    assert stored.objects[0].parts == len(uploader.obj.parts) >= 2, "parts sent while recording, plus the tail"
    assert sha256(download(s3, s3.bucket, uploader.key)) == digest == stored.sha256
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")


@needs_ffmpeg
def test_cancelled_growing_upload_leaves_no_parts(tmp_path: Path, s3: S3Env) -> None:
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    dest = bucket_destination(settings, "grow2")
    uploader = dest.growing_upload()
    assert uploader is not None
    ffmpeg = start_fmp4_ffmpeg(dest.folder.media, seconds=30)
    uploader.start()
    try:
        wait_for(lambda: len(uploader.obj.parts) >= 1, 30, "a part sent")
    finally:
        os.killpg(ffmpeg.pid, signal.SIGKILL)
        ffmpeg.wait()
    uploader.cancel()
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    assert "Contents" not in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="recordings/2026/03/07/grow2/")


def test_growing_upload_cut_off_by_an_outage_is_resumed_not_started_over(
    gated: tuple[RecorderSettings, TcpGate], s3: S3Env
) -> None:
    """S3 going away when the recording stops costs only what was not sent yet: the pending upload continues
    the parts sent while recording, in the same multipart upload."""
    settings, gate = gated
    dest = bucket_destination(settings, "grow3")
    uploader = dest.growing_upload()
    assert uploader is not None
    uploader.poll = 0.05
    media = dest.folder.create().media
    written = bytearray()

    def append(data: bytes) -> None:
        with media.open("ab") as f:
            f.write(data)
        written.extend(data)

    uploader.start()
    for _ in range(5):  # 10 MiB + 1 byte: two full parts while "recording"
        append(os.urandom(2 * MiB))
        time.sleep(0.05)
    append(b"x")
    wait_for(lambda: sorted(uploader.obj.parts) == [1, 2], 30, "two parts sent while the file grows")
    upload_id = uploader.obj.upload_id
    assert upload_id

    gate.close()  # S3 goes away
    append(os.urandom(2 * MiB + 4321))  # the recording stops: a tail shorter than a part
    result = dest.store({"rec.mp4": media}, growing=uploader)

    assert result.pending and "unreachable" in (result.reason or "")
    assert result.destination == f"s3://{s3.bucket}/{uploader.key}"
    assert media.read_bytes() == written, "nothing is deleted before the object is confirmed"
    state = pending_state(settings, "grow3").find("rec.mp4")
    assert state is not None and not state.done
    assert state.upload_id == upload_id, "upload.pending.json holds the growing upload's own id"
    assert sorted(state.parts) == [1, 2] and state.size == len(written)

    gate.open()
    seen = len(gate.requests)
    [resumed] = resume_pending(settings, options=SMALL_PARTS)

    assert not resumed.pending and resumed.error is None and resumed.location == result.destination
    assert download(s3, s3.bucket, uploader.key) == bytes(written), "the object is the file, byte for byte"
    assert resumed.sha256 == sha256(bytes(written))
    after = gate.requests[seen:]
    assert part_numbers(after) == [3], "only the tail was sent after the outage"
    assert sorted(part_numbers(gate.requests)) == [1, 2, 3], "no part was sent twice"
    assert len(gate.calls("POST", "?uploads")) == 1, "one multipart upload in all"
    completes = [p for m, p in after if m == "POST" and "uploadId=" in p]
    assert len(completes) == 1 and (f"uploadId={quote(upload_id, safe='')}" in completes[0]
                                    or f"uploadId={upload_id}" in completes[0])
    assert open_uploads(s3, s3.bucket) == []
    assert not (settings.records_dir / "grow3").exists()
    assert resume_pending(settings, options=SMALL_PARTS) == []
