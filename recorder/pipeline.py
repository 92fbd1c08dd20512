"""One recording, start to finish: sources → capture → finalize.

`Recorder` owns the warm resources of one recorder (a display, an audio server and a browser) and runs
recordings on them one after another. `recorder record` uses it for a single recording; the worker keeps
one alive between leases so a recording starts on a browser that is already up.

Whatever happens (page errors, a crash, cancellation), what was captured is finalized to a playable
file, and every process and sink started for the recording is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import ErrorInfo, Progress, WorkerState
from contract.security import AddressPolicy
from contract.spec import RecordingSpec
from recorder import __version__
from recorder.capture import calibration
from recorder.capture.command import CAPTURE_NAME, LIVE_CAPTURE_NAME, CaptureSettings
from recorder.capture.ffmpeg import Capture
from recorder.config import RecorderSettings
from recorder.egress import BlockedSummary, EgressGuard
from recorder.finalize.remux import remux_to_mp4
from recorder.finalize.sidecar import Sidecar, Timings, write_sidecar
from recorder.quality import QualityReport, analyze_file
from recorder.source.audio import AudioServer
from recorder.source.browser import Browser, PageSession
from recorder.source.display import Display

log = structlog.get_logger(__name__)

MP4_NAME = "rec.mp4"
SIDECAR_NAME = "rec.json"
LIVE_DIR = "live"

ProgressCallback = Callable[[WorkerState, Progress], None]


@dataclass
class RecordingResult:
    recording_id: str
    out_dir: Path
    mp4: Path | None
    sidecar: Path | None
    quality: dict[str, Any] | None
    progress: Progress
    error: RecorderError | None
    stopped_by: str
    timings: Timings | None = None
    files: dict[str, Path] = field(default_factory=dict)
    # The sidecar as written; `add_quality` completes it when the analysis was deferred.
    metadata: Sidecar | None = None
    # What the egress guard denied during the recording (None when the guard is off).
    blocked: BlockedSummary | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.mp4 is not None


class Recorder:
    """Warm resources for one recorder, reused across recordings."""

    def __init__(self, settings: RecorderSettings, *, width: int = 1280, height: int = 720) -> None:
        self.settings = settings
        self.width = width
        self.height = height
        self.display: Display | None = None
        self.audio: AudioServer | None = None
        self.browser: Browser | None = None
        self.guard: EgressGuard | None = None

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Warm up: display, audio server, the next recording's sink and the browser."""
        try:
            if self.audio is None:
                self.audio = AudioServer()
                await self.audio.start()
            await self.audio.prepare()
            await self._ensure_screen(self.width, self.height)
        except BaseException:
            await self.close()
            raise

    async def _ensure_screen(self, width: int, height: int) -> None:
        """Display and browser at the requested size; a different size restarts both."""
        if self.display is not None and (self.display.width, self.display.height) != (width, height):
            await self._stop_screen()
        if self.display is None or not self.display.running:
            await self._stop_screen()
            self.display = Display(width, height)
            await self.display.start()
            self.width, self.height = width, height
        if self.browser is None or not self.browser.connected:
            if self.browser is not None:
                await self.browser.close()
            assert self.audio is not None and self.display.name is not None
            guard = await self._ensure_guard()
            self.browser = Browser(
                self.settings.chromium_path,
                display=self.display.name,
                width=width,
                height=height,
                env=self.audio.client_env(),
                network_args=guard.chromium_args() if guard else (),
                denial_of=guard.ledger.reason_for if guard else None,
                browser_user=self.settings.browser_user,
                require_sandbox=self.settings.require_sandbox,
            )
            await self.browser.start()

    async def _ensure_guard(self) -> EgressGuard | None:
        """The egress guard every connection of the browser goes through; started before the browser."""
        if not self.settings.egress_guard:
            log.warning(
                "EGRESS GUARD OFF: recorded pages can reach every address this machine can reach; "
                "RECORDER_EGRESS_GUARD=false is meant only for measuring the guard's cost"
            )
            return None
        if self.guard is None:
            guard = EgressGuard(AddressPolicy(self.settings.url_allowlist), dns_server=self.settings.dns_server)
            await guard.start()
            self.guard = guard
        return self.guard

    @property
    def browser_sandboxed(self) -> bool | None:
        """Whether the running browser is sandboxed; None before it has started. The worker reports it."""
        if self.browser is None or self.browser.sandbox is None:
            return None
        return self.browser.sandbox.enabled

    async def _stop_screen(self) -> None:
        browser, self.browser = self.browser, None
        if browser is not None:
            await browser.close()
        display, self.display = self.display, None
        if display is not None:
            await display.stop()

    async def close(self) -> None:
        """Stop everything this recorder started."""
        await self._stop_screen()
        guard, self.guard = self.guard, None
        if guard is not None:
            await guard.stop()
        audio, self.audio = self.audio, None
        if audio is not None:
            await audio.stop()

    async def complete(self, result: RecordingResult, media: Path | None = None) -> None:
        """The analysis a `record(analyze=False)` deferred, in a thread: rec.json gets its quality report.

        `media` is the file to analyze when rec.mp4 itself may go away meanwhile (uploaded, then deleted)."""
        await asyncio.to_thread(add_quality, result, media)

    async def record(
        self,
        spec: RecordingSpec,
        *,
        recording_id: str,
        out_dir: Path,
        on_progress: ProgressCallback | None = None,
        stop: asyncio.Event | None = None,
        analyze: bool = True,
    ) -> RecordingResult:
        """Record one page. With `analyze=False` the quality report is left to `add_quality`, so a caller
        can upload rec.mp4 while the (CPU-heavy, minutes-long for long files) analysis runs."""
        run = _Run(self, spec, recording_id, out_dir, on_progress, stop or asyncio.Event(), analyze)
        return await run.execute()


class _Run:
    """The state of one recording while it runs; split out so Recorder stays about resources."""

    def __init__(
        self,
        recorder: Recorder,
        spec: RecordingSpec,
        recording_id: str,
        out_dir: Path,
        on_progress: ProgressCallback | None,
        stop: asyncio.Event,
        analyze: bool,
    ) -> None:
        self.recorder = recorder
        self.analyze = analyze
        self.spec = spec
        self.recording_id = recording_id
        self.out_dir = out_dir
        self.on_progress = on_progress
        self.stop = stop
        self.state: WorkerState = "starting"
        self.timings = Timings(started=time.time())
        self.capture: Capture | None = None
        self.session: PageSession | None = None
        self.error: RecorderError | None = None
        self.stopped_by = "error"
        self.blocked: BlockedSummary | None = None
        self.log = log.bind(recording_id=recording_id)

    @property
    def _capture_file(self) -> Path:
        return self.out_dir / (LIVE_CAPTURE_NAME if self.spec.live_upload else CAPTURE_NAME)

    def _report(self, state: WorkerState, progress: Progress | None = None) -> None:
        self.state = state
        if self.on_progress is not None:
            progress = progress or (self.capture.progress if self.capture else Progress())
            with contextlib.suppress(Exception):
                self.on_progress(state, progress)

    def _on_capture_progress(self, progress: Progress) -> None:
        if self.state == "recording":
            self._report("recording", progress)

    async def execute(self) -> RecordingResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._report("starting")
        rec = self.recorder
        sink = None
        try:
            await rec.start()
            await rec._ensure_screen(self.spec.width, self.spec.height)
            assert rec.audio is not None and rec.browser is not None and rec.display is not None
            if rec.guard is not None:
                rec.guard.ledger.reset()  # one recording at a time per recorder: its denials start here
            sink = await rec.audio.take_sink(self.recording_id)
            self.session = await self._open_page(rec.browser)
            self.timings.ready = time.time()
            self.capture = Capture(
                CaptureSettings(
                    display=rec.display.name or "",
                    audio_source=sink.monitor,
                    width=self.spec.width,
                    height=self.spec.height,
                    fps=self.spec.fps,
                    preset=rec.settings.preset,
                    crf=rec.settings.crf,
                    threads=rec.settings.encoder_threads,
                    av_offset_ms=calibration.av_offset_ms(rec.settings),
                ),
                self._capture_file,
                live_dir=self.out_dir / LIVE_DIR if self.spec.live_upload else None,
                env=rec.audio.client_env(),
                on_progress=self._on_capture_progress,
                stop_timeout=rec.settings.stop_timeout,
            )
            await self.capture.start()
            self.timings.first_frame = self.capture.first_frame_at
            self.log.info("recording", url=self.spec.url, start_latency=round(time.time() - self.timings.started, 3))
            self._report("recording")
            self.stopped_by = await self._wait_for_end()
        except RecorderError as exc:
            self.error = exc
        except asyncio.CancelledError:
            self.stopped_by = "cancelled"
            self.error = RecorderError(ErrorCode.CANCELLED, "the recording was cancelled")
            raise
        except Exception as exc:  # a bug must not lose what was captured
            self.log.exception("recording failed unexpectedly")
            self.error = RecorderError(ErrorCode.INTERNAL, f"unexpected error: {exc!r}")
        finally:
            # Shielded: even a cancelled recording stops its processes and keeps a playable file.
            await asyncio.shield(self._wind_down(sink))
        return await self._finalize()

    async def _open_page(self, browser: Browser) -> PageSession:
        guard = self.recorder.guard
        if guard is not None:
            # The guard would deny it anyway; checking first gives the reason instead of a network error.
            verdict = await guard.check_url(self.spec.url)
            if not verdict.allowed:
                guard.deny(verdict)
                if verdict.reason == "unresolvable":  # a name that does not exist is not a policy matter
                    raise RecorderError(ErrorCode.UNREACHABLE, f"could not open {self.spec.url}: {verdict.explain()}")
                raise RecorderError(
                    ErrorCode.URL_NOT_ALLOWED, f"{self.spec.url} cannot be recorded: {verdict.explain()}"
                )
        return await browser.open(self.spec.url, self.spec.wait_for, stop_on_signal=self.spec.stop_on_signal)

    async def _wait_for_end(self) -> str:
        assert self.capture is not None and self.session is not None
        events = self.session.events
        waits = {
            "duration": asyncio.ensure_future(asyncio.sleep(self._remaining())),
            "stop": asyncio.ensure_future(self.stop.wait()),
            "page_signal": asyncio.ensure_future(events.ended.wait()),
            "page_failed": asyncio.ensure_future(events.failed.wait()),
            "capture_exited": asyncio.ensure_future(self.capture.exited.wait()),
        }
        try:
            done, _ = await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits.values():
                task.cancel()
        reason = next(name for name, task in waits.items() if task in done)
        if reason == "page_failed":
            self.error = events.error or RecorderError(ErrorCode.BROWSER_CRASHED, "the page failed")
        elif reason == "capture_exited":
            self.error = self.capture.failure()
        self.log.info("recording stopping", reason=reason)
        return reason

    def _remaining(self) -> float:
        """Time left from the first frame, which under load can come well after FFmpeg was started, so a
        file is as long as asked whatever FFmpeg's start-up cost."""
        assert self.capture is not None
        first = self.capture.first_frame_at or self.capture.started_at or time.time()
        return max(0.0, self.spec.duration - (time.time() - first))

    async def _wind_down(self, sink: Any) -> None:
        rec = self.recorder
        if self.capture is not None:
            await self.capture.stop()
        self.timings.stopped = time.time()
        if self.session is not None:
            await self.session.close()
        if sink is not None and rec.audio is not None:
            await rec.audio.remove_sink(sink)
        if rec.browser is not None and not rec.browser.connected:
            self.log.warning("browser went away; it will be restarted for the next recording")
        if rec.audio is not None:
            with contextlib.suppress(RecorderError):
                await rec.audio.prepare()

    async def _finalize(self) -> RecordingResult:
        progress = self.capture.progress if self.capture else Progress()
        guard = self.recorder.guard
        self.blocked = guard.ledger.summary() if guard is not None else None
        capture_file = self._capture_file
        mp4: Path | None = None
        quality: QualityReport | None = None
        if capture_file.is_file() and capture_file.stat().st_size > 0:
            self._report("finalizing", progress)
            try:
                if capture_file.name == LIVE_CAPTURE_NAME:
                    # Already an MP4 with `moov` first, possibly uploaded as it grew: kept byte for byte.
                    mp4 = capture_file.replace(self.out_dir / MP4_NAME)
                else:
                    mp4 = await asyncio.to_thread(remux_to_mp4, capture_file, self.out_dir / MP4_NAME)
                    capture_file.unlink(missing_ok=True)
                if self.analyze:
                    quality = await asyncio.to_thread(analyze_file, mp4, expected_fps=self.spec.fps)
            except RecorderError as exc:
                self.log.error("finalize failed; the capture file is kept", error=str(exc))
                self.error = self.error or exc
        self.timings.finalized = time.time()
        metadata = self._sidecar(mp4, quality, progress)
        sidecar = _write_sidecar(self.out_dir / SIDECAR_NAME, metadata)
        files = {name: path for name, path in ((MP4_NAME, mp4), (SIDECAR_NAME, sidecar)) if path is not None}
        if mp4 is None and capture_file.is_file():
            files[capture_file.name] = capture_file
        result = RecordingResult(
            recording_id=self.recording_id,
            out_dir=self.out_dir,
            mp4=mp4,
            sidecar=sidecar,
            quality=quality.model_dump(mode="json") if quality else None,
            progress=progress,
            error=self.error,
            stopped_by=self.stopped_by,
            timings=self.timings,
            files=files,
            metadata=metadata,
            blocked=self.blocked,
        )
        self.log.info(
            "recording finished",
            ok=result.ok,
            stopped_by=self.stopped_by,
            error=str(self.error) if self.error else None,
            file=str(mp4) if mp4 else None,
        )
        return result

    def _sidecar(self, mp4: Path | None, quality: QualityReport | None, progress: Progress) -> Sidecar:
        rec = self.recorder
        return _with_quality(
            Sidecar(
                recording_id=self.recording_id,
                url=self.spec.url,
                spec=self.spec,
                timings=self.timings,
                start_latency=self.timings.start_latency,
                stopped_by=self.stopped_by,
                file=mp4.name if mp4 else None,
                size=mp4.stat().st_size if mp4 else None,
                capture=progress,
                behind_real_time=bool(self.capture and self.capture.tracker.ever_behind),
                av_offset_correction_ms=calibration.av_offset_ms(rec.settings),
                versions=tool_versions(rec.browser.version if rec.browser else None),
                error=ErrorInfo(**self.error.as_dict()) if self.error else None,
                blocked=self.blocked,
            ),
            quality,
        )


def _with_quality(sidecar: Sidecar, quality: QualityReport | None) -> Sidecar:
    if quality is not None:
        sidecar.quality = quality
        sidecar.duration = quality.duration
        sidecar.video = quality.video.model_dump(mode="json") if quality.video else None
        sidecar.audio = quality.audio.model_dump(mode="json") if quality.audio else None
    return sidecar


def _write_sidecar(path: Path, sidecar: Sidecar) -> Path | None:
    try:
        return write_sidecar(path, sidecar)
    except OSError as exc:
        log.error("could not write rec.json", error=str(exc), path=str(path))
        return None


def add_quality(result: RecordingResult, media: Path | None = None) -> RecordingResult:
    """Analyze rec.mp4 (or `media`, a link to it) and complete rec.json; blocking, run it in a thread."""
    if result.mp4 is None or result.metadata is None or result.quality is not None:
        return result
    try:
        quality = analyze_file(media or result.mp4, expected_fps=result.metadata.spec.fps)
    except RecorderError as exc:
        log.error("analysis failed", recording_id=result.recording_id, error=str(exc))
        return result
    result.quality = quality.model_dump(mode="json")
    result.metadata = _with_quality(result.metadata, quality)
    result.sidecar = _write_sidecar(result.out_dir / SIDECAR_NAME, result.metadata)
    return result


@cache
def _ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" ")[0]


def tool_versions(chromium: str | None) -> dict[str, str]:
    return {"recorder": __version__, "chromium": chromium or "unknown", "ffmpeg": _ffmpeg_version()}


def discard_outputs(out_dir: Path) -> None:
    """For a cancelled recording whose files are not wanted."""
    shutil.rmtree(out_dir, ignore_errors=True)
