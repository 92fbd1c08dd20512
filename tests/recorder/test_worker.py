"""The worker loop against a real orchestrator over HTTP, with a stand-in recorder (no browser).

The stand-in honours the pipeline's contract: `capture` reports progress through `on_progress`, stops
when `stop` is set, and leaves rec.mp4 and rec.json in the attempt folder; `finalize` hands that on;
`complete` runs the deferred analysis. End-to-end tests with the real recorder are in test_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from contract.errors import ErrorCode, RecorderError
from contract.protocol import Progress, WorkerState
from contract.spec import RecordingSpec
from orchestrator.app import Orchestrator
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.control import CaptureControl
from recorder.worker.client import OrchestratorClient
from recorder.worker.job import JobTimings
from recorder.worker.loop import EXIT_OK, EXIT_ORCHESTRATOR_GONE, EXIT_UNAUTHORIZED, Worker, WorkerOptions
from tests.support.orchestrator import (
    API_TOKEN,
    WORKER_TOKEN,
    Api,
    RunningOrchestrator,
    free_port,
    orchestrator_settings,
)
from tests.support.s3 import S3Env, TcpGate

FAST = {"heartbeat_interval": 0.2, "lease_ttl": 3.0, "lease_check_interval": 0.2}


@dataclass
class Result:
    recording_id: str
    out_dir: Path
    mp4: Path | None
    sidecar: Path | None
    quality: dict[str, Any] | None
    progress: Progress
    error: RecorderError | None
    stop_reason: str
    blocked: None = None  # no egress guard here
    files: dict[str, Path] = field(default_factory=dict)
    screenshot: Path | None = None
    timeline: Path | None = None


@dataclass
class StandInRecorder:
    """Records nothing, but behaves like the pipeline's Recorder towards the worker."""

    fail_with: RecorderError | None = None
    browser_sandboxed: bool | None = None  # no browser: nothing to tell /v1/pool
    started: int = 0
    closed: int = 0
    seen: list[str] = field(default_factory=list)
    recording: asyncio.Event = field(default_factory=asyncio.Event)
    out_dirs: list[Path] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1

    async def capture(
        self,
        spec: RecordingSpec,
        *,
        folder: AttemptFolder,
        on_progress: Callable[[WorkerState, Progress], None] | None = None,
        control: CaptureControl | None = None,
    ) -> Result:
        recording_id, out_dir = folder.recording_id, folder.root
        self.seen.append(recording_id)
        self.out_dirs.append(out_dir)
        report = on_progress or (lambda state, progress: None)
        report("starting", Progress())
        if self.fail_with is not None:
            raise self.fail_with
        first = time.time()
        stop = control.stopping if control is not None else asyncio.Event()
        report("recording", Progress(first_frame_at=first))
        (out_dir / "capture.mkv").write_bytes(b"partial")
        stop_reason = "duration"
        while time.time() - first < spec.duration:
            if stop.is_set():
                stop_reason = "api"
                break
            self.recording.set()
            elapsed = time.time() - first
            report(
                "recording",
                Progress(elapsed=elapsed, frames=int(elapsed * 30), fps=30.0, speed=1.0, first_frame_at=first),
            )
            await asyncio.sleep(0.05)
        self.recording.clear()
        elapsed = time.time() - first
        progress = Progress(elapsed=elapsed, frames=int(elapsed * 30), fps=30.0, speed=1.0, first_frame_at=first)
        report("finalizing", progress)
        mp4 = out_dir / "rec.mp4"
        mp4.write_bytes(b"\x00\x00\x00\x18ftypmp42" + recording_id.encode())
        sidecar = out_dir / "rec.json"
        sidecar.write_text(json.dumps({"recording_id": recording_id, "stop_reason": stop_reason}))
        (out_dir / "capture.mkv").unlink()
        # The analysis is deferred to `complete`, as the job wants it: no quality yet.
        return Result(recording_id, out_dir, mp4, sidecar, None, progress, None, stop_reason)

    async def finalize(self, captured: Result) -> Result:
        """The capture is already the finished recording here."""
        return captured

    async def complete(self, finished: Result, *, analyze: bool = True) -> None:
        """The deferred analysis: it reads rec.mp4 while storage runs, then rec.json gains its quality report."""
        if not analyze:
            return
        assert finished.mp4 is not None
        assert (await asyncio.to_thread(finished.mp4.read_bytes)).endswith(finished.recording_id.encode())
        self.completed.append(finished.recording_id)
        await asyncio.sleep(0.05)
        finished.quality = {"fps": 30.0}
        assert finished.sidecar is not None
        data = json.loads(finished.sidecar.read_text())
        finished.sidecar.write_text(json.dumps({**data, "quality": finished.quality}))


@dataclass
class Farm:
    """An in-process orchestrator on a fixed port (so it can be restarted) and workers to run against it."""

    tmp_path: Path
    port: int = field(default_factory=free_port)
    orchestrator: Orchestrator | None = None
    server: TestServer | None = None
    api: Api | None = None
    tasks: list[asyncio.Task[int]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, **overrides: Any) -> RunningOrchestrator:
        self.overrides = {**FAST, **self.overrides, **overrides}
        self.orchestrator = Orchestrator(orchestrator_settings(self.tmp_path, **self.overrides))
        self.server = TestServer(self.orchestrator.web_app(), host="127.0.0.1", port=self.port)
        await self.server.start_server()
        if self.api is None:
            self.api = Api(self.url, API_TOKEN)
        return self.orchestrator

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    def settings(self, **overrides: Any) -> RecorderSettings:
        values: dict[str, Any] = {
            "records_dir": self.tmp_path / "records",
            "orchestrator_url": self.url,
            "worker_token": WORKER_TOKEN,
            "s3_bucket": None,
            "s3_endpoint_url": None,
        }
        values.update(overrides)
        return RecorderSettings(**values)

    def worker(
        self,
        recorder: StandInRecorder,
        *,
        worker_id: str = "w1",
        token: str | None = WORKER_TOKEN,
        settings: RecorderSettings | None = None,
        **options: Any,
    ) -> Worker:
        settings = settings or self.settings()
        client = OrchestratorClient(self.url, token, backoff_first=0.1, backoff_cap=0.5)
        opts = WorkerOptions(worker_id=worker_id, lease_wait=1.0, **options)
        return Worker(settings, recorder, client, opts)

    def run(self, worker: Worker) -> asyncio.Task[int]:
        task = asyncio.create_task(worker.run())
        self.tasks.append(task)
        return task


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    f = Farm(tmp_path)
    yield f
    for task in f.tasks:
        task.cancel()
    await asyncio.gather(*f.tasks, return_exceptions=True)
    if f.api is not None:
        await f.api.close()
    await f.stop()


async def finished(task: asyncio.Task[int], within: float = 30.0) -> int:
    return await asyncio.wait_for(task, within)


async def until(predicate: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def local_path(location: str) -> Path:
    assert location.startswith("file://"), location
    return Path(location.removeprefix("file://"))


async def test_records_stores_and_reports_with_heartbeats(farm: Farm) -> None:
    await farm.start()
    recorder = StandInRecorder()
    task = farm.run(farm.worker(recorder, single_use=True))
    rid = (await farm.api.create(max_duration=1.5)).body["id"]

    # Heartbeats carry the state and the progress while it records.
    rec = await farm.api.wait_for(rid, lambda r: r["status"] == "recording" and (r.get("progress") or {}).get("frames"))
    assert rec["worker"] == "w1"
    assert rec["progress"]["fps"] == 30.0

    assert await finished(task) == EXIT_OK
    rec = await farm.api.get(rid)
    assert rec["status"] == "completed", rec
    mp4 = local_path(rec["location"])
    # Stored where it was recorded: the attempt's own folder, which no other attempt writes.
    assert mp4 == (farm.tmp_path / "records" / rid / "attempt-1" / "rec.mp4").resolve()
    assert mp4.read_bytes().endswith(rid.encode())
    metadata = json.loads(local_path(rec["metadata_location"]).read_text())
    assert metadata["stop_reason"] == "duration"
    assert metadata["quality"] == {"fps": 30.0}, "rec.json is stored once the deferred analysis is done"
    assert recorder.completed == [rid]
    assert rec["quality"] == {"fps": 30.0}
    assert rec["timestamps"]["first_frame"] is not None
    # Only the stored files remain in the attempt's folder: no partial capture, no analysis link, no lock.
    assert recorder.out_dirs[0].resolve() == mp4.parent
    assert sorted(p.name for p in mp4.parent.iterdir()) == ["rec.json", "rec.mp4"]
    assert (recorder.started, recorder.closed) == (1, 1)


async def test_one_warm_recorder_serves_consecutive_recordings(farm: Farm) -> None:
    await farm.start()
    recorder = StandInRecorder()
    worker = farm.worker(recorder)
    task = farm.run(worker)
    ids = [(await farm.api.create(max_duration=0.3)).body["id"] for _ in range(3)]
    for rid in ids:
        assert (await farm.api.wait_status(rid, "completed", "failed", timeout=30))["status"] == "completed"
    assert recorder.seen == ids
    assert recorder.started == 1  # warm: started once, not per recording
    worker.request_shutdown()
    assert await finished(task) == EXIT_OK
    assert recorder.closed == 1


async def test_stop_through_the_api_keeps_the_file(farm: Farm) -> None:
    await farm.start()
    recorder = StandInRecorder()
    task = farm.run(farm.worker(recorder, single_use=True))
    rid = (await farm.api.create(max_duration=120)).body["id"]
    await asyncio.wait_for(recorder.recording.wait(), 20)
    started = time.monotonic()
    assert (await farm.api.request("POST", f"/v1/recordings/{rid}/stop")).status in (200, 202)
    assert await finished(task) == EXIT_OK
    assert time.monotonic() - started < 15
    rec = await farm.api.get(rid)
    assert rec["status"] == "completed", rec
    assert json.loads(local_path(rec["metadata_location"]).read_text())["stop_reason"] == "api"


async def test_cancel_through_the_api_discards_the_files(farm: Farm) -> None:
    await farm.start()
    recorder = StandInRecorder()
    task = farm.run(farm.worker(recorder, single_use=True))
    rid = (await farm.api.create(max_duration=120)).body["id"]
    await asyncio.wait_for(recorder.recording.wait(), 20)
    assert (await farm.api.request("DELETE", f"/v1/recordings/{rid}")).status in (200, 202)
    assert await finished(task) == EXIT_OK
    rec = await farm.api.get(rid)
    assert rec["status"] == "cancelled", rec
    assert rec.get("location") is None
    assert not (farm.tmp_path / "records" / rid).exists()


async def test_recorder_error_is_reported_with_its_code(farm: Farm) -> None:
    await farm.start()
    recorder = StandInRecorder(fail_with=RecorderError(ErrorCode.HTTP_ERROR, "the page answered 404 Not Found"))
    task = farm.run(farm.worker(recorder, single_use=True))
    rid = (await farm.api.create(max_duration=5)).body["id"]
    assert await finished(task) == EXIT_OK
    rec = await farm.api.get(rid)
    assert rec["status"] == "failed"
    assert rec["error"] == {"code": "http_error", "message": "the page answered 404 Not Found", "screenshot": None}


class DeafClient(OrchestratorClient):
    """Its heartbeats never get through while `deaf` is set, as if the network dropped them."""

    deaf = False

    async def heartbeat(self, heartbeat):  # type: ignore[no-untyped-def]
        if self.deaf:
            from recorder.worker.client import Unavailable

            raise Unavailable("dropped")
        return await super().heartbeat(heartbeat)


async def test_a_lost_lease_stops_and_drops_the_recording(farm: Farm) -> None:
    await farm.start(lease_ttl=1.0, max_attempts=1)
    recorder = StandInRecorder()
    client = DeafClient(farm.url, WORKER_TOKEN, backoff_first=0.1, backoff_cap=0.5)
    worker = Worker(farm.settings(), recorder, client, WorkerOptions(worker_id="w1", lease_wait=1.0, single_use=True))
    task = farm.run(worker)
    rid = (await farm.api.create(max_duration=120)).body["id"]
    await asyncio.wait_for(recorder.recording.wait(), 20)
    client.deaf = True
    # The lease lapses at the orchestrator: with one attempt allowed, the recording fails, naming the worker.
    rec = await farm.api.wait_status(rid, "failed", timeout=20)
    assert rec["error"]["code"] == "worker_lost"
    assert "w1" in rec["error"]["message"]
    client.deaf = False
    # The next heartbeat gets 410: the worker stops at once and keeps nothing.
    assert await finished(task) == EXIT_OK
    assert worker.results[0].outcome is None
    assert not recorder.out_dirs[0].exists()
    assert (await farm.api.get(rid))["status"] == "failed"


async def test_sigterm_lets_the_recording_finish_within_the_grace_then_stops_it(farm: Farm) -> None:
    await farm.start()
    recorder = StandInRecorder()
    worker = farm.worker(recorder, grace=1.0)
    task = farm.run(worker)
    rid = (await farm.api.create(max_duration=120)).body["id"]
    await asyncio.wait_for(recorder.recording.wait(), 20)
    asked = time.monotonic()
    worker.request_shutdown()
    await asyncio.sleep(0.5)
    assert (await farm.api.get(rid))["status"] == "recording"  # still going within the grace
    assert await finished(task) == EXIT_OK
    assert time.monotonic() - asked >= 1.0
    rec = await farm.api.get(rid)
    assert rec["status"] == "completed", rec
    assert local_path(rec["location"]).is_file()
    # It took no further lease.
    rid2 = (await farm.api.create(max_duration=1)).body["id"]
    await asyncio.sleep(1.5)
    assert (await farm.api.get(rid2))["status"] == "queued"


async def test_an_orchestrator_restart_mid_recording_loses_nothing(farm: Farm) -> None:
    await farm.start()
    recorder = StandInRecorder()
    task = farm.run(farm.worker(recorder, single_use=True))
    rid = (await farm.api.create(max_duration=3)).body["id"]
    await asyncio.wait_for(recorder.recording.wait(), 20)
    await farm.stop()
    # The recording ends and its report is retried while the orchestrator is away.
    await until(lambda: not recorder.recording.is_set(), within=20)
    await asyncio.sleep(1.0)
    assert not task.done()
    await farm.start()
    assert await finished(task) == EXIT_OK
    rec = await farm.api.get(rid)
    assert rec["status"] == "completed", rec
    assert rec["attempts"] == 1
    assert local_path(rec["location"]).is_file()


async def test_a_worker_waits_for_an_orchestrator_that_is_not_up_yet(farm: Farm) -> None:
    recorder = StandInRecorder()
    task = farm.run(farm.worker(recorder, single_use=True))
    await asyncio.sleep(1.0)
    assert not task.done()
    await farm.start()
    rid = (await farm.api.create(max_duration=0.3)).body["id"]
    assert await finished(task) == EXIT_OK
    assert (await farm.api.get(rid))["status"] == "completed"


async def test_an_idle_worker_gives_up_on_an_orchestrator_that_stays_away(farm: Farm) -> None:
    recorder = StandInRecorder()
    started = time.monotonic()
    assert await finished(farm.run(farm.worker(recorder, give_up_after=1.0))) == EXIT_ORCHESTRATOR_GONE
    assert 0.9 <= time.monotonic() - started < 15
    assert recorder.closed == 1


async def test_a_wrong_token_stops_the_worker_with_a_clear_exit(farm: Farm) -> None:
    await farm.start()
    recorder = StandInRecorder()
    assert await finished(farm.run(farm.worker(recorder, token="not-the-token"))) == EXIT_UNAUTHORIZED


async def test_an_upload_s3_refuses_for_a_while_is_resumed_and_reported(
    farm: Farm, s3: S3Env, s3_gate: TcpGate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_MAX_ATTEMPTS", "2")
    await farm.start(s3_bucket=s3.bucket, s3_endpoint_url=s3_gate.endpoint)
    settings = farm.settings(s3_bucket=s3.bucket, s3_endpoint_url=s3_gate.endpoint)
    recorder = StandInRecorder()
    timings = JobTimings(upload_retry_first=0.5, upload_retry_cap=1.0)
    task = farm.run(farm.worker(recorder, settings=settings, single_use=True, timings=timings))
    s3_gate.close()
    rid = (await farm.api.create(max_duration=0.5)).body["id"]

    rec = await farm.api.wait_status(rid, "uploading", timeout=60)
    await asyncio.sleep(2 * FAST["lease_ttl"])
    # Heartbeats keep the lease while S3 is away: still uploading, not retried elsewhere.
    rec = await farm.api.get(rid)
    assert (rec["status"], rec["attempts"]) == ("uploading", 1)

    s3_gate.open()
    assert await finished(task, within=60) == EXIT_OK
    rec = await farm.api.get(rid)
    assert rec["status"] == "completed", rec
    assert rec["location"].startswith(f"s3://{s3.bucket}/")
    assert rec["location"].endswith(f"/{rid}/attempt-1/rec.mp4")
    key = rec["location"].removeprefix(f"s3://{s3.bucket}/")
    body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert body.endswith(rid.encode())
    assert not (farm.tmp_path / "records" / rid / "attempt-1").exists()


def test_a_misspelt_worker_variable_stops_the_worker_naming_the_nearest_name(tmp_path: Path) -> None:
    """WORKER_MAX_RECORDINGS=1 once left pods reusable without a word; now nothing starts (exit 2)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "RECORDER_"))}
    env.update(WORKER_MAX_RECORDINGS="1", RECORDS_DIR=str(tmp_path))
    for command in (["worker", "--orchestrator", "http://127.0.0.1:9"], ["record", "http://93.184.215.14/"]):
        done = subprocess.run(
            [sys.executable, "-m", "recorder.cli", *command], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done
        assert "WORKER_MAX_RECORDINGS" in done.stderr and "did you mean WORKER_SINGLE_USE" in done.stderr, done.stderr
        assert not list(tmp_path.iterdir()), "nothing was started or written"


def test_the_known_names_are_the_settings_read_now_plus_the_internal_markers() -> None:
    from contract.envcheck import UnknownVariable
    from recorder.config import RecorderSettings, check_recorder_environment, known_variables

    known = known_variables()
    assert {"WORKER_SINGLE_USE", "RECORDER_SHUTDOWN_GRACE", "RECORDER_LOG_LEVEL"} <= known
    for setting in RecorderSettings.model_fields.values():  # a setting added later counts, with no list to edit
        choices = getattr(setting.validation_alias, "choices", [])
        assert next(c for c in choices if isinstance(c, str) and c.isupper()) in known
    # Chromium's process marker, the settings, and foreign names do not trip the check...
    check_recorder_environment({"RECORDER_BROWSER_INSTANCE": "x", "RECORDER_PRESET": "fast", "PATH": "/bin"})
    # ...but anything else with an owned prefix does, all of them named at once.
    with pytest.raises(UnknownVariable) as info:
        check_recorder_environment({"RECORDER_PRESSET": "fast", "WORKER_TOKN": "t", "ORCHESTRATOR_X": "ignored"})
    message = str(info.value)
    assert "RECORDER_PRESSET; did you mean RECORDER_PRESET" in message
    assert "WORKER_TOKN; did you mean WORKER_TOKEN" in message
    assert "ORCHESTRATOR_X" not in message, "not a prefix the recorder owns"
