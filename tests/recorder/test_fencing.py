"""Lease fencing reaches the bucket: a worker whose lease lapsed never overwrites, or aborts, its successor's work.

- Storage: keys, local folders and pending state are per attempt; `confirm` is asked right before an object
  becomes visible, and a "no" aborts only the attempt's own multipart upload.
- The job: a worker whose heartbeats do not get through for one lease TTL stops capturing, keeps its file
  and uploads nothing until the orchestrator answers (held: stored as usual; 410: dropped).
- The farm: worker A is cut off mid-recording, its lease lapses, worker B records attempt 2 and completes;
  when A comes back, B's object is byte-identical, none of B's uploads was aborted, and A wrote nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from contract.errors import ErrorCode, RecorderError
from contract.protocol import Heartbeat, HeartbeatReply, Lease, Progress, Report, UploadTarget, WorkerState
from contract.spec import RecordingSpec
from orchestrator.app import Orchestrator
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.control import CaptureControl
from recorder.storage import Destination, TransferOptions, destination_for, resume_pending
from recorder.storage.pending import PENDING_NAME, PendingStore, PendingUpload
from recorder.storage.transfer import abort_attempt
from recorder.worker.client import LeaseLost, OrchestratorClient, Unavailable
from recorder.worker.job import Job, JobTimings
from recorder.worker.loop import EXIT_OK, Worker, WorkerOptions
from tests.support.orchestrator import API_TOKEN, PUBLIC_URL, WORKER_TOKEN, Api, free_port, orchestrator_settings
from tests.support.s3 import S3Env, TcpGate

MiB = 1024 * 1024
STARTED = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
SMALL_PARTS = TransferOptions(multipart_threshold=6 * MiB, part_size=5 * MiB, max_concurrency=2, max_attempts=2)


def settings_for(tmp_path: Path, endpoint: str | None, bucket: str | None) -> RecorderSettings:
    return RecorderSettings(
        records_dir=tmp_path / "records", s3_bucket=bucket, s3_endpoint_url=endpoint, s3_prefix="recordings"
    )


def attempt_files(settings: RecorderSettings, rid: str, attempt: int, size: int) -> dict[str, Path]:
    home = settings.records_dir / rid / f"attempt-{attempt}"
    home.mkdir(parents=True, exist_ok=True)
    media = home / "rec.mp4"
    media.write_bytes(os.urandom(size))
    return {"rec.mp4": media}


def destination(
    settings: RecorderSettings, rid: str, attempt: int = 1, options: TransferOptions | None = None
) -> Destination:
    """The attempt's destination from the recorder's own settings (a bucket here), dated STARTED."""
    folder = AttemptFolder.under(settings.records_dir, rid, attempt)
    return destination_for(settings, folder, started_at=STARTED, options=options)


def key(rid: str, attempt: int, name: str = "rec.mp4") -> str:
    return f"recordings/2026/03/07/{rid}/attempt-{attempt}/{name}"


def uploads(s3: S3Env) -> dict[str, str]:
    """Open multipart uploads of the test bucket: upload id → key."""
    listed = s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    return {u["UploadId"]: u["Key"] for u in listed}


def objects(s3: S3Env, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]


class Counting:
    """A `confirm` that answers `answer` and counts how often it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answer


# -- storage -------------------------------------------------------------------------------------------


def test_an_unconfirmed_multipart_upload_is_aborted_and_the_successors_work_is_untouched(
    tmp_path: Path, s3: S3Env
) -> None:
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    # The successor (attempt 2) has a completed object and an upload in flight, at its own keys.
    successor = os.urandom(1000)
    s3.client.put_object(Bucket=s3.bucket, Key=key("f1", 2), Body=successor)
    in_flight = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=key("f1", 2, "other.mp4"))["UploadId"]
    etag = s3.client.head_object(Bucket=s3.bucket, Key=key("f1", 2))["ETag"]
    files = attempt_files(settings, "f1", 1, 12 * MiB)
    confirm = Counting(False)

    with pytest.raises(RecorderError) as info:
        destination(settings, "f1", 1, SMALL_PARTS).store(files, confirm=confirm)

    assert info.value.code is ErrorCode.LEASE_LOST
    assert confirm.asked == 1, "asked once, right before CompleteMultipartUpload"
    assert objects(s3, "recordings/2026/03/07/f1/attempt-1/") == [], "nothing of attempt 1 became visible"
    assert uploads(s3) == {in_flight: key("f1", 2, "other.mp4")}, "attempt 1's upload aborted, attempt 2's kept"
    assert s3.client.head_object(Bucket=s3.bucket, Key=key("f1", 2))["ETag"] == etag
    assert s3.client.get_object(Bucket=s3.bucket, Key=key("f1", 2))["Body"].read() == successor
    assert files["rec.mp4"].is_file(), "the file stays for the caller to judge"
    assert not (settings.records_dir / "f1" / "attempt-1" / PENDING_NAME).exists()
    assert resume_pending(settings, options=SMALL_PARTS) == []


def test_a_single_put_is_not_sent_without_a_confirmed_lease(tmp_path: Path, s3: S3Env) -> None:
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    files = attempt_files(settings, "f2", 1, 1000)
    with pytest.raises(RecorderError) as info:
        destination(settings, "f2").store(files, confirm=Counting(False))
    assert info.value.code is ErrorCode.LEASE_LOST
    assert objects(s3, "recordings/") == []

    confirm = Counting(True)
    stored = destination(settings, "f2").store(files, confirm=confirm)
    assert confirm.asked == 1 and stored.location == f"s3://{s3.bucket}/{key('f2', 1)}"


def test_pending_state_and_abort_are_per_attempt(tmp_path: Path, s3: S3Env, s3_gate: TcpGate) -> None:
    """Two attempts of one recording pending on one RECORDS_DIR: aborting attempt 1 leaves attempt 2's upload."""
    settings = settings_for(tmp_path, s3_gate.endpoint, s3.bucket)
    first = attempt_files(settings, "f3", 1, 12 * MiB)
    second = attempt_files(settings, "f3", 2, 12 * MiB)
    second_digest = hashlib.sha256(second["rec.mp4"].read_bytes()).digest()
    for attempt, files in ((1, first), (2, second)):
        s3_gate.close_when(lambda method, path: method == "PUT" and "partNumber=2" in path)
        assert destination(settings, "f3", attempt, SMALL_PARTS).store(files).pending
        s3_gate.open()
    assert PendingStore(settings.records_dir).pending() == [("f3", 1), ("f3", 2)]
    open_before = uploads(s3)
    assert sorted(open_before.values()) == [key("f3", 1), key("f3", 2)]

    assert abort_attempt(AttemptFolder.under(settings.records_dir, "f3", 1), settings, SMALL_PARTS) is True

    assert list(uploads(s3).values()) == [key("f3", 2)], "only attempt 1's upload was aborted"
    (kept,) = uploads(s3)
    [resumed] = resume_pending(settings, options=SMALL_PARTS)
    assert (resumed.pending, resumed.location) == (False, f"s3://{s3.bucket}/{key('f3', 2)}")
    assert len([p for m, p in s3_gate.requests if m == "DELETE" and kept in p]) == 0, "attempt 2's upload continued"
    digest = hashlib.sha256(s3.client.get_object(Bucket=s3.bucket, Key=key("f3", 2))["Body"].read()).digest()
    assert digest == second_digest
    assert first["rec.mp4"].is_file() and objects(s3, "recordings/2026/03/07/f3/attempt-1/") == []


def test_a_pending_upload_of_the_older_layout_is_still_resumed(tmp_path: Path, s3: S3Env) -> None:
    """State written before attempts had folders (no `attempt`) is found and finished: nothing is lost."""
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    media = settings.records_dir / "old1" / "rec.mp4"
    media.parent.mkdir(parents=True)
    media.write_bytes(b"recorded before the upgrade")
    legacy_key = "recordings/2026/03/07/old1/rec.mp4"
    state = PendingUpload(
        recording_id="old1",
        bucket=s3.bucket,
        objects=[{"name": "rec.mp4", "path": media, "key": legacy_key, "content_type": "video/mp4",
                  "size": media.stat().st_size}],
    )  # fmt: skip
    (media.parent / PENDING_NAME).write_text(state.model_dump_json())
    [resumed] = resume_pending(settings)
    assert resumed.location == f"s3://{s3.bucket}/{legacy_key}"
    assert s3.client.get_object(Bucket=s3.bucket, Key=legacy_key)["Body"].read() == b"recorded before the upgrade"


def test_the_growing_upload_asks_before_completing(tmp_path: Path, s3: S3Env) -> None:
    """The upload that followed rec.mp4 is completed by the destination's store, which asks first."""
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    files = attempt_files(settings, "f4", 3, 11 * MiB)
    capture = files["rec.mp4"]
    dest = destination(settings, "f4", 3, SMALL_PARTS)
    growing = dest.growing_upload()
    assert growing is not None and growing.key == key("f4", 3)
    growing.start()
    deadline = time.monotonic() + 30
    while len(growing.obj.parts) < 2:
        assert time.monotonic() < deadline, "the follower sends full parts"
        time.sleep(0.05)
    with pytest.raises(RecorderError) as info:
        dest.store(files, growing=growing, confirm=Counting(False))
    assert info.value.code is ErrorCode.LEASE_LOST
    assert uploads(s3) == {} and objects(s3, "recordings/") == []
    assert capture.is_file()


# -- the job, with a scripted orchestrator ---------------------------------------------------------


@dataclass
class SlowRecorder:
    """Records until told to stop (or the duration), then leaves a rec.mp4 of `size` bytes ending in a marker."""

    marker: bytes
    size: int = 1000
    browser_sandboxed: bool | None = None  # no browser: nothing to tell /v1/pool
    recording: asyncio.Event = field(default_factory=asyncio.Event)
    stopped_at: float | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    out_dirs: list[Path] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def capture(
        self,
        spec: RecordingSpec,
        *,
        folder: AttemptFolder,
        on_progress: Callable[[WorkerState, Progress], None] | None = None,
        control: CaptureControl | None = None,
    ) -> Any:
        out_dir = folder.root
        self.out_dirs.append(out_dir)
        report = on_progress or (lambda state, progress: None)
        stop = control.stopping if control is not None else asyncio.Event()
        first = time.time()
        report("recording", Progress(first_frame_at=first))
        self.recording.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=spec.duration)
        self.stopped_at = time.monotonic()
        self.stopped.set()
        self.recording.clear()
        report("finalizing", Progress(elapsed=time.time() - first, first_frame_at=first))
        mp4 = out_dir / "rec.mp4"
        mp4.write_bytes(os.urandom(max(0, self.size - len(self.marker))) + self.marker)
        return _Output(mp4=mp4, sidecar=None, progress=Progress(elapsed=time.time() - first), folder=folder)

    async def finalize(self, captured: Any) -> Any:
        """The capture is already the finished recording here."""
        return captured

    async def complete(self, finished: Any, *, analyze: bool = True) -> None:
        """As the real one: the analysis (when asked), then rec.json, written once."""
        if analyze:
            finished.quality = {"fps": 30.0}
        finished.sidecar = finished.folder.metadata
        finished.sidecar.write_text(json.dumps({"marker": self.marker.decode()}))


@dataclass
class _Output:
    mp4: Path | None
    sidecar: Path | None
    progress: Progress
    quality: dict[str, Any] | None = None
    error: RecorderError | None = None
    stop_reason: str = "api"
    blocked: None = None  # no egress guard here
    files: dict[str, Path] = field(default_factory=dict)
    folder: AttemptFolder | None = None
    screenshot: Path | None = None
    timeline: Path | None = None


class ScriptedClient:
    """The orchestrator as the job sees it: heartbeats answered while `mode` is "up", dropped while "cut",
    refused with 410 once "gone"."""

    request_timeout = 1.0

    def __init__(self) -> None:
        self.mode = "up"
        self.last_ack: float | None = None
        self.reports: list[Report] = []

    def _answer(self) -> HeartbeatReply:
        if self.mode == "cut":
            raise Unavailable("dropped")
        if self.mode == "gone":
            raise LeaseLost("410 lease gone")
        self.last_ack = time.monotonic()
        return HeartbeatReply()

    async def heartbeat(self, heartbeat: Heartbeat) -> HeartbeatReply:
        return self._answer()

    async def report(self, report: Report, *, deadline: float | None = None) -> HeartbeatReply:
        reply = self._answer()  # the real client retries Unavailable until the deadline; none is cut here
        self.reports.append(report)
        return reply


def lease_for(
    rid: str, settings: RecorderSettings, *, attempt: int = 1, ttl: float = 1.0, duration: float = 120.0
) -> Lease:
    """A lease as the orchestrator grants it: its upload target is the bucket these settings name."""
    spec = RecordingSpec(url=PUBLIC_URL, duration=duration)
    upload = UploadTarget(bucket=settings.s3_bucket, prefix=settings.s3_prefix)
    return Lease(lease_id=f"lease-{rid}-{attempt}", recording_id=rid, attempt=attempt, spec=spec, upload=upload,
                 heartbeat_interval=0.1, lease_ttl=ttl)  # fmt: skip


@pytest.mark.parametrize("answer", ["held", "gone", "never"])
async def test_a_worker_cut_off_for_one_ttl_stops_capturing_and_keeps_its_file_until_told(
    tmp_path: Path, s3: S3Env, s3_gate: TcpGate, answer: str
) -> None:
    settings = settings_for(tmp_path, s3_gate.endpoint, s3.bucket)
    client = ScriptedClient()
    recorder = SlowRecorder(marker=b"worker-a")
    ttl = 1.0
    job = Job(lease_for("j1", settings, ttl=ttl), worker_id="a", recorder=recorder,  # type: ignore[arg-type]
              client=client, settings=settings, timings=JobTimings(report_patience=60.0))  # fmt: skip
    run = asyncio.create_task(job.run())
    try:
        await asyncio.wait_for(recorder.recording.wait(), 10)
        await asyncio.sleep(0.3)
        client.mode = "cut"
        cut_at = time.monotonic()
        await asyncio.wait_for(until_stopped(recorder), 10)
        assert client.last_ack is not None and recorder.stopped_at is not None
        silent = recorder.stopped_at - client.last_ack
        # One TTL after the last heartbeat that got through (the margin is for a busy machine, not the design).
        assert ttl - 0.05 <= silent <= ttl + 1.5, f"capture stopped {silent:.2f} s after the last heartbeat"
        assert recorder.stopped_at - cut_at <= ttl + 1.5

        # Fenced: the file is finalized and kept, nothing goes to the bucket while the lease is in doubt.
        await asyncio.sleep(3 * ttl)
        assert not run.done()
        mp4 = settings.records_dir / "j1" / "attempt-1" / "rec.mp4"
        assert mp4.is_file() and mp4.read_bytes().endswith(b"worker-a")
        assert s3_gate.requests == [], "no S3 request while fenced"

        if answer == "held":  # e.g. the orchestrator restarted and extended its leases
            client.mode = "up"
            result = await asyncio.wait_for(run, 30)
            assert (result.outcome, result.reported) == ("completed", True)
            assert result.location == f"s3://{s3.bucket}/recordings/{key_date()}/j1/attempt-1/rec.mp4"
            assert [r.outcome for r in client.reports] == ["completed"]
            body = s3.client.get_object(Bucket=s3.bucket, Key=result.location.split("/", 3)[3])["Body"].read()
            assert body.endswith(b"worker-a")
        elif answer == "gone":  # another attempt owns the recording: drop everything of this one
            client.mode = "gone"
            result = await asyncio.wait_for(run, 30)
            assert result.outcome is None and client.reports == []
            assert not (settings.records_dir / "j1").exists()
            assert not [m for m, _ in s3_gate.requests if m in ("PUT", "POST")], "nothing was uploaded"
        else:  # the worker is going away without an answer: keep the files, upload and report nothing
            job.give_up_pending_upload()
            result = await asyncio.wait_for(run, 30)
            assert result.outcome is None and client.reports == []
            assert mp4.is_file() and result.location == mp4.parent.resolve().as_uri()
            assert json.loads((mp4.parent / "rec.json").read_text()) == {"marker": "worker-a"}, "rec.json says what"
            assert s3_gate.requests == []
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


@dataclass
class LiveSlowRecorder(SlowRecorder):
    """Writes an HLS segment every 0.2 s while recording and for `wind_down` seconds after the stop, as
    FFmpeg does while it closes its file."""

    wind_down: float = 1.5

    async def capture(self, spec: RecordingSpec, *, folder: AttemptFolder, **kwargs: Any) -> Any:
        live = folder.live_dir
        live.mkdir(parents=True, exist_ok=True)
        writing = asyncio.Event()
        writing.set()

        async def segments() -> None:
            n = 0
            while writing.is_set():
                (live / f"seg_{n:05d}.ts").write_bytes(os.urandom(2048))
                n += 1
                await asyncio.sleep(0.2)

        writer = asyncio.create_task(segments())
        try:
            output = await super().capture(spec, folder=folder, **kwargs)
            await asyncio.sleep(self.wind_down)
            return output
        finally:
            writing.clear()
            await writer


async def test_a_fenced_live_recording_sends_no_segment_while_ffmpeg_winds_down(
    tmp_path: Path, s3: S3Env, s3_gate: TcpGate
) -> None:
    settings = settings_for(tmp_path, s3_gate.endpoint, s3.bucket)
    client = ScriptedClient()
    recorder = LiveSlowRecorder(marker=b"live-a")
    lease = lease_for("jl", settings, ttl=1.0)
    lease = lease.model_copy(update={"spec": lease.spec.model_copy(update={"live_upload": True})})
    job = Job(lease, worker_id="a", recorder=recorder, client=client,  # type: ignore[arg-type]
              settings=settings, timings=JobTimings(report_patience=60.0))  # fmt: skip
    run = asyncio.create_task(job.run())
    try:
        await asyncio.wait_for(recorder.recording.wait(), 10)
        await asyncio.sleep(1.0)  # segments are being uploaded while the lease is ours
        assert s3_gate.calls("PUT", "/live/seg_"), "live segments go up while the lease is confirmed"
        client.mode = "cut"
        await asyncio.wait_for(until_stopped(recorder), 10)
        await asyncio.sleep(0.7)  # a sweep already under way when the fence fell may finish
        sent = len(s3_gate.calls("PUT", "/live/seg_"))
        await asyncio.sleep(recorder.wind_down + 0.5)  # FFmpeg is still writing segments meanwhile
        assert len(s3_gate.calls("PUT", "/live/seg_")) == sent, "a segment went up while the lease was in doubt"
        client.mode = "gone"
        result = await asyncio.wait_for(run, 30)
        assert result.outcome is None and not (settings.records_dir / "jl").exists()
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


def key_date() -> str:
    now = datetime.now(UTC)
    return f"{now.year:04d}/{now.month:02d}/{now.day:02d}"


async def until_stopped(recorder: SlowRecorder) -> None:
    await recorder.stopped.wait()


async def test_a_heartbeat_that_gets_through_keeps_the_recording_going(tmp_path: Path) -> None:
    """Missed heartbeats shorter than a TTL (an orchestrator restart) do not fence: nothing is lost."""
    settings = settings_for(tmp_path, None, None)
    client = ScriptedClient()
    recorder = SlowRecorder(marker=b"steady")
    job = Job(lease_for("j2", settings, ttl=2.0, duration=6.0), worker_id="a", recorder=recorder,  # type: ignore[arg-type]
              client=client, settings=settings)  # fmt: skip
    run = asyncio.create_task(job.run())
    await asyncio.wait_for(recorder.recording.wait(), 10)
    for _ in range(3):  # three outages of 1.1 s: each shorter than the TTL, together longer
        client.mode = "cut"
        await asyncio.sleep(1.1)
        client.mode = "up"
        await asyncio.sleep(0.5)
    assert recorder.stopped_at is None, "still recording after 3.3 s of missed heartbeats in all"
    result = await asyncio.wait_for(run, 30)
    assert not job.fenced and job.stopped_for is None
    assert result.outcome == "completed"
    assert result.location == (settings.records_dir / "j2" / "attempt-1" / "rec.mp4").resolve().as_uri()


async def test_a_rec_json_the_bucket_did_not_take_stays_on_disk(
    tmp_path: Path, s3: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rec.mp4 stored, rec.json refused: the report completes and rec.json is kept, as the log says."""

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise RecorderError(ErrorCode.UPLOAD_FAILED, "the bucket refused rec.json")

    monkeypatch.setattr("recorder.storage.bucket.BucketDestination.store_small", refuse)
    settings = settings_for(tmp_path, s3.endpoint, s3.bucket)
    recorder = SlowRecorder(marker=b"meta")
    job = Job(lease_for("j3", settings, ttl=5.0, duration=0.5), worker_id="a", recorder=recorder,  # type: ignore[arg-type]
              client=ScriptedClient(), settings=settings)  # fmt: skip
    result = await asyncio.wait_for(job.run(), 30)
    assert result.outcome == "completed" and result.location is not None
    assert result.location.startswith(f"s3://{s3.bucket}/")
    home = settings.records_dir / "j3" / "attempt-1"
    assert json.loads((home / "rec.json").read_text()) == {"marker": "meta"}
    assert not (home / "rec.mp4").exists(), "the stored media is not kept twice"


class BrokenClient(ScriptedClient):
    async def heartbeat(self, heartbeat: Heartbeat) -> HeartbeatReply:
        raise RuntimeError("Session is closed")


async def test_a_lease_check_that_fails_or_finds_no_loop_is_a_no_not_a_hang(tmp_path: Path) -> None:
    """Storage threads ask through `confirm_from_thread`: a failing check or a closed loop answers False."""
    settings = settings_for(tmp_path, None, None)
    job = Job(lease_for("j4", settings), worker_id="a", recorder=SlowRecorder(marker=b"x"),  # type: ignore[arg-type]
              client=BrokenClient(), settings=settings)  # fmt: skip
    job.lease_keeper._loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(asyncio.to_thread(job.lease_keeper.confirm_from_thread), 10) is False
    assert job.undecided

    closed = asyncio.new_event_loop()
    closed.close()
    job = Job(lease_for("j5", settings), worker_id="a", recorder=SlowRecorder(marker=b"x"),  # type: ignore[arg-type]
              client=ScriptedClient(), settings=settings)  # fmt: skip
    job.lease_keeper._loop = closed
    assert await asyncio.wait_for(asyncio.to_thread(job.lease_keeper.confirm_from_thread), 10) is False
    assert job.undecided


# -- the farm: a real orchestrator, two workers, one bucket --------------------------------------------


class GatedClient(OrchestratorClient):
    """Every call fails as if the network dropped it while `cut` is set."""

    cut = False

    async def _call(self, path, body, model, *, timeout):  # type: ignore[no-untyped-def]
        if self.cut:
            raise Unavailable(f"POST {path}: cut off")
        return await super()._call(path, body, model, timeout=timeout)


@dataclass
class Farm:
    tmp_path: Path
    s3: S3Env
    port: int = field(default_factory=free_port)
    server: TestServer | None = None
    api: Api | None = None
    tasks: list[asyncio.Task[int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, **overrides: Any) -> None:
        settings = orchestrator_settings(
            self.tmp_path, s3_bucket=self.s3.bucket, s3_endpoint_url=self.s3.endpoint, **overrides
        )
        self.server = TestServer(Orchestrator(settings).web_app(), host="127.0.0.1", port=self.port)
        await self.server.start_server()
        self.api = self.api or Api(self.url, API_TOKEN)

    def worker(self, name: str, recorder: SlowRecorder, endpoint: str) -> tuple[Worker, GatedClient]:
        settings = RecorderSettings(
            records_dir=self.tmp_path / "records", orchestrator_url=self.url, worker_token=WORKER_TOKEN,
            s3_bucket=self.s3.bucket, s3_endpoint_url=endpoint, s3_prefix="recordings",
        )  # fmt: skip
        client = GatedClient(self.url, WORKER_TOKEN, request_timeout=2.0, backoff_first=0.1, backoff_cap=0.3)
        options = WorkerOptions(worker_id=name, lease_wait=1.0, single_use=True, give_up_after=None)
        worker = Worker(settings, recorder, client, options)
        self.tasks.append(asyncio.create_task(worker.run()))
        return worker, client


@pytest.fixture
async def farm(tmp_path: Path, s3: S3Env, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Farm]:
    # Multipart from 5 MiB, so each worker's rec.mp4 goes up in several parts.
    monkeypatch.setenv("S3_MULTIPART_THRESHOLD", str(5 * MiB))
    monkeypatch.setenv("S3_PART_SIZE", str(5 * MiB))
    f = Farm(tmp_path, s3)
    yield f
    for task in f.tasks:
        task.cancel()
    await asyncio.gather(*f.tasks, return_exceptions=True)
    if f.api is not None:
        await f.api.close()
    if f.server is not None:
        await f.server.close()


async def test_a_cut_off_worker_leaves_its_successors_object_and_uploads_alone(
    farm: Farm, s3: S3Env, s3_gate: TcpGate
) -> None:
    ttl = 2.0
    await farm.start(lease_ttl=ttl, heartbeat_interval=0.2, lease_check_interval=0.2, max_attempts=3)
    assert farm.api is not None
    recorder_a = SlowRecorder(marker=b"worker-a", size=12 * MiB)
    recorder_b = SlowRecorder(marker=b"worker-b", size=12 * MiB)
    # A reaches S3 through the gate, so every S3 request it makes is seen.
    worker_a, client_a = farm.worker("a", recorder_a, s3_gate.endpoint)
    rid = (await farm.api.create(max_duration=600)).body["id"]
    await asyncio.wait_for(recorder_a.recording.wait(), 20)

    client_a.cut = True  # A's orchestrator calls fail from now on; A itself goes on
    await farm.api.wait_for(rid, lambda r: r["status"] == "queued" and r["worker"] is None, timeout=30)  # lapsed
    assert recorder_a.stopped_at is not None, "A stopped capturing once its lease could not be confirmed"

    # B takes attempt 2, records, is stopped through the API, stores and completes.
    farm.worker("b", recorder_b, s3.endpoint)
    await asyncio.wait_for(recorder_b.recording.wait(), 20)
    assert (await farm.api.request("POST", f"/v1/recordings/{rid}/stop")).status in (200, 202)
    rec = await farm.api.wait_status(rid, "completed", "failed", timeout=60)
    assert rec["status"] == "completed", rec
    b_key = rec["location"].removeprefix(f"s3://{s3.bucket}/")
    assert b_key.endswith(f"/{rid}/attempt-2/rec.mp4")
    b_head = s3.client.head_object(Bucket=s3.bucket, Key=b_key)
    assert b_head["ETag"].strip('"').endswith("-3"), "B's object went up in parts"
    b_body = s3.client.get_object(Bucket=s3.bucket, Key=b_key)["Body"].read()
    assert b_body.endswith(b"worker-b")
    assert uploads(s3) == {}

    # Meanwhile A uploaded nothing: its file waits on its disk.
    a_dir = farm.tmp_path / "records" / rid / "attempt-1"
    assert (a_dir / "rec.mp4").read_bytes().endswith(b"worker-a")
    assert s3_gate.requests == []

    # A comes back: the orchestrator answers 410, and A drops its attempt.
    client_a.cut = False
    assert await asyncio.wait_for(farm.tasks[0], 30) == EXIT_OK
    assert worker_a.results[0].outcome is None
    assert not a_dir.exists()
    assert s3.client.head_object(Bucket=s3.bucket, Key=b_key)["ETag"] == b_head["ETag"]
    assert s3.client.get_object(Bucket=s3.bucket, Key=b_key)["Body"].read() == b_body
    assert uploads(s3) == {}
    assert not [p for _, p in s3_gate.requests if "attempt-2" in p], "A never touched a key of attempt 2"
    assert objects(s3, b_key.rsplit("/attempt-2/", 1)[0] + "/attempt-1/") == []
    final = await farm.api.get(rid)
    assert (final["status"], final["location"], final["attempts"]) == ("completed", rec["location"], 2)
    assert await asyncio.wait_for(farm.tasks[1], 30) == EXIT_OK


async def test_a_worker_whose_lease_survives_a_long_orchestrator_restart_stores_and_reports(
    farm: Farm, s3: S3Env
) -> None:
    """Down longer than the TTL: the worker stops capturing; the restarted orchestrator extended the lease,
    so the worker's next heartbeat is answered and the recording is stored and reported as attempt 1."""
    ttl = 2.0
    await farm.start(lease_ttl=ttl, heartbeat_interval=0.2, lease_check_interval=0.2)
    assert farm.api is not None and farm.server is not None
    recorder = SlowRecorder(marker=b"survivor", size=6 * MiB)
    farm.worker("a", recorder, s3.endpoint)
    rid = (await farm.api.create(max_duration=600)).body["id"]
    await asyncio.wait_for(recorder.recording.wait(), 20)
    await farm.server.close()
    await asyncio.wait_for(until_stopped(recorder), ttl + 5)
    await asyncio.sleep(1.0)
    assert objects(s3, "recordings/") == [], "nothing uploaded while the lease was unconfirmed"
    await farm.start(lease_ttl=ttl, heartbeat_interval=0.2, lease_check_interval=0.2)
    assert await asyncio.wait_for(farm.tasks[0], 60) == EXIT_OK
    rec = await farm.api.get(rid)
    assert (rec["status"], rec["attempts"]) == ("completed", 1), rec
    assert rec["location"].endswith(f"/{rid}/attempt-1/rec.mp4")
    body = s3.client.get_object(Bucket=s3.bucket, Key=rec["location"].removeprefix(f"s3://{s3.bucket}/"))
    assert body["Body"].read().endswith(b"survivor")
