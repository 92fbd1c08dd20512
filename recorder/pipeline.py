"""One recording, start to finish: sources → capture (here) → finalize (`recorder.finalize`).

`Recorder` owns the warm resources of one recorder (a display, an audio server and a browser) and runs
recordings on them one after another. `recorder record` uses it for a single recording; the worker keeps
one alive between leases so a recording starts on a browser that is already up.

The stages are separate calls so a caller can act between them (the worker reports, uploads rec.mp4
while the analysis runs): `capture` returns a `Captured`, `finalize` makes it a `Finished`, `complete`
analyzes it and writes rec.json. Whatever happens (page errors, a crash, cancellation), every process
and sink started for the recording is stopped, and what was captured stays on disk for finalize.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import Progress, WorkerState
from contract.redact import shown_url
from contract.security import AddressPolicy
from contract.spec import RecordingSpec, StopReason
from recorder.attempt import AttemptFolder
from recorder.capture import calibration
from recorder.capture.captured import Captured
from recorder.capture.command import CaptureSettings
from recorder.capture.ffmpeg import Capture
from recorder.capture.progress import ProgressTimeline
from recorder.config import RecorderSettings
from recorder.control import CaptureControl
from recorder.egress import EgressGuard
from recorder.finalize import Finished
from recorder.finalize import finalize as finalize_capture
from recorder.source import presentation
from recorder.source.audio import AudioServer
from recorder.source.browser import Browser, PageSession, loading_timeout
from recorder.source.display import Display, screen_rate
from recorder.timeline.collector import TimelineCollector
from recorder.timeline.page_events import PageEventFeed, control_event
from recorder.timeline.webrtc import WebRtcWatch, install_webrtc_wrapper, watch_webrtc
from recorder.timings import Timings
from recorder.versions import tool_versions

log = structlog.get_logger(__name__)

PAGE_BOUND_GRACE = 10.0  # on top of the page's own bounds (loading, join script, waiting room)

ProgressCallback = Callable[[WorkerState, Progress], None]


class Recorder:
    """Warm resources for one recorder, reused across recordings."""

    def __init__(self, settings: RecorderSettings, *, width: int = 1280, height: int = 720, fps: int = 30) -> None:
        self.settings = settings
        self.width = width
        self.height = height
        self.fps = fps
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
        """Warm up at the recorder's size: display, audio server, the next recording's sink and the browser."""
        await self.prepare(self.width, self.height, self.fps)

    async def prepare(self, width: int, height: int, fps: int = 30) -> None:
        """Ready for a recording at this size and rate, starting or restarting whatever is missing. A failure stops
        everything, so the next call starts from scratch rather than on half-started resources."""
        try:
            if self.audio is None:
                self.audio = AudioServer()
                await self.audio.start()
            await self.audio.prepare()
            await self._ensure_screen(width, height, fps)
        except BaseException:
            await self.close()
            raise

    async def _ensure_screen(self, width: int, height: int, fps: int) -> None:
        """Display and browser at the requested size and rate; a different one restarts both."""
        rate = screen_rate(fps) if self.settings.screen_mode else None
        shown = self.display
        if shown is not None and (shown.width, shown.height, shown.rate) != (width, height, rate):
            await self._stop_screen()
        if self.display is None or not self.display.running:
            await self._stop_screen()
            self.display = Display(width, height, rate=rate)
            await self.display.start()
            self.width, self.height, self.fps = width, height, fps
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
                allow_evaluate=self.settings.allow_evaluate,
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

    async def capture(
        self,
        spec: RecordingSpec,
        *,
        folder: AttemptFolder,
        on_progress: ProgressCallback | None = None,
        control: CaptureControl | None = None,
    ) -> Captured:
        """Record one page into `folder`; what was captured is returned for `finalize`, also on failure.
        `control` stops or pauses it while it runs. Cancellation stops every process and sink of the
        recording and propagates."""
        return await _CaptureRun(self, spec, folder, on_progress, control or CaptureControl()).execute()

    async def finalize(self, captured: Captured) -> Finished:
        """rec.mp4 from the capture (see `recorder.finalize`); rec.json waits for `complete`."""
        return await finalize_capture(captured)

    async def complete(self, finished: Finished, *, analyze: bool = True) -> None:
        """The quality analysis (when `analyze`) and rec.json, in a thread: minutes of CPU for a long file."""
        await asyncio.to_thread(finished.complete, analyze=analyze)

    async def record(
        self,
        spec: RecordingSpec,
        *,
        folder: AttemptFolder,
        on_progress: ProgressCallback | None = None,
        control: CaptureControl | None = None,
        analyze: bool = True,
    ) -> Finished:
        """Capture, finalize and complete one recording, for callers with nothing to do in between."""
        captured = await self.capture(spec, folder=folder, on_progress=on_progress, control=control)
        finished = await self.finalize(captured)
        await self.complete(finished, analyze=analyze)
        return finished


class _CaptureRun:
    """The state of one capture while it runs; split out so Recorder stays about resources.

    The page's path: open → navigate (to DOMContentLoaded, `load`, or only the commit) → join script →
    the waiting room (readiness by selector or START_RECORDING, reported as `waiting`) → watch the stop
    conditions → capture. With `from: commit` the capture starts right after the navigation commits and
    the rest runs while it records. When the page fails, a picture of it is kept (failure.png)."""

    def __init__(
        self,
        recorder: Recorder,
        spec: RecordingSpec,
        folder: AttemptFolder,
        on_progress: ProgressCallback | None,
        control: CaptureControl,
    ) -> None:
        self.recorder = recorder
        self.spec = spec
        self.folder = folder
        self.capture_file = folder.capture(live=spec.live_upload)
        self.on_progress = on_progress
        self.control = control
        self.state: WorkerState = "starting"
        self.timings = Timings(started=time.time())
        self.capture: Capture | None = None
        self.session: PageSession | None = None
        self.error: RecorderError | None = None
        self.stop_reason: StopReason = "error"
        self.screenshot: Path | None = None
        offsets = calibration.in_force(recorder.settings)
        self.av_offset_ms = offsets.av_offset_ms
        self.on_time_offset_ms = offsets.on_time_offset_ms
        self.lateness_ms: float | None = None  # how late the page presented its audible video while recorded
        self.log = log.bind(recording_id=folder.recording_id)
        # The timeline (RECORDER_TIMELINE): collected from the page's creation to the capture's stop.
        self.timeline = TimelineCollector() if recorder.settings.timeline else None
        self.page_feed: PageEventFeed | None = None
        self.progress_timeline = ProgressTimeline(self.timeline) if self.timeline is not None else None
        self.webrtc: WebRtcWatch | None = None  # while the page is recorded
        self._stop_noted = False
        self._file_ends_at: float | None = None  # wall time the file should end at, once decided

    def _report(self, state: WorkerState, progress: Progress | None = None) -> None:
        self.state = state
        if self.on_progress is not None:
            progress = progress or (self.capture.progress if self.capture else Progress())
            with contextlib.suppress(Exception):
                self.on_progress(state, progress)

    def _on_capture_progress(self, progress: Progress) -> None:
        if self.progress_timeline is not None:
            self.progress_timeline.note(progress)
        if self.state == "recording":
            self._report("recording", progress)

    def _on_waiting(self) -> None:
        self.timings.waiting = time.time()
        control_event(self.timeline, "waiting", "waiting to be admitted", wait_for=self.spec.wait_for.kind)
        self.log.info("waiting room", wait_for=self.spec.wait_for.kind, timeout=self.spec.wait_for.timeout)
        self._report("waiting")

    async def execute(self) -> Captured:
        self.folder.create()
        self._report("starting")
        rec = self.recorder
        sink = None
        try:
            # Audio alone keeps whatever screen the recorder has: its rate changes nothing in the file.
            fps = self.spec.fps if self.spec.video else rec.fps
            await rec.prepare(self.spec.width, self.spec.height, fps)
            assert rec.audio is not None and rec.browser is not None and rec.display is not None
            if rec.guard is not None:
                rec.guard.ledger.reset()  # one recording at a time per recorder: its denials start here
            if self.timeline is not None:
                denial_of = rec.guard.ledger.reason_for if rec.guard is not None else None
                self.page_feed = PageEventFeed(self.timeline, denial_of=denial_of)
            sink = await rec.audio.take_sink(self.folder.recording_id)
            self.capture = self._new_capture(sink.monitor)
            await self.capture.prepare()  # the page's drawing is watched while it loads
            self.session = session = await self._open_page(rec.browser)
            if self.spec.start_from == "commit":
                if await self._before_capture(session.navigate("commit")):
                    await self._watch_webrtc()
                    await self._start_capture()
                    self.stop_reason = await self._wait_for_end(loading=self._join_while_capturing())
            elif await self._before_capture(session.prepare(on_waiting=self._on_waiting)):
                self.timings.ready = time.time()
                await self._watch_webrtc()
                await self._start_capture()
                self.stop_reason = await self._wait_for_end()
        except RecorderError as exc:
            self.error = exc
            await self._picture()
        except asyncio.CancelledError:
            self.error = RecorderError(ErrorCode.CANCELLED, "the recording was cancelled")
            raise
        except Exception as exc:  # a bug must not lose what was captured
            self.log.exception("recording failed unexpectedly")
            self.error = RecorderError(ErrorCode.INTERNAL, f"unexpected error: {exc!r}")
        finally:
            # Shielded: even a cancelled recording stops its processes and keeps a playable file.
            await asyncio.shield(self._wind_down(sink))
        captured = self._captured()
        if captured.has_media:
            self._report("finalizing", captured.progress)
        return captured

    def _page_bound(self) -> float:
        """The longest the page may take from navigation to readiness: loading, the join script and the
        waiting room, each bounded on its own, plus a grace; past it the page is busy in a script of its own
        (the browser's calls into it never return) and is given up on."""
        wait_for = self.spec.wait_for
        waiting = wait_for.timeout if wait_for.is_waiting_room else 0.0
        return loading_timeout(wait_for) + self.spec.actions_timeout + waiting + PAGE_BOUND_GRACE

    async def _before_capture(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run the page's way to readiness, bounded, until a stop: False when a stop (or a cancel) came first,
        which ends the recording before anything was captured."""
        bound = self._page_bound()
        task = asyncio.ensure_future(asyncio.wait_for(work, bound))
        stopping = asyncio.ensure_future(self.control.stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if not task.cancelled() and task.done():
            try:
                task.result()
            except TimeoutError:
                raise RecorderError(
                    ErrorCode.READINESS_TIMEOUT,
                    f"{self.spec.url} was not ready within {bound:g} s (loading, the join script and the waiting"
                    " room together): the page may be stuck in a script of its own",
                ) from None
            return True
        self.stop_reason = self.control.stop_reason
        self.error = RecorderError(
            ErrorCode.CANCELLED, f"stopped ({self.stop_reason}) before the recording started: nothing was captured"
        )
        self.log.info("stopped before capture", state=self.state, reason=self.stop_reason)
        return False

    async def _join_while_capturing(self) -> None:
        """`from: commit`: the rest of loading and the join script run while the capture records."""
        assert self.session is not None
        await asyncio.wait_for(self._finish_joining(), self._page_bound())

    async def _finish_joining(self) -> None:
        assert self.session is not None
        await self.session.finish_loading()
        await self.session.run_actions()
        self.timings.ready = time.time()
        self.session.watch()

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
        session = await browser.open(self.spec, observer=self.page_feed)
        if self.spec.video:
            try:
                await presentation.install_probe(session.context)  # before the first navigation
            except Exception as exc:  # the correction by it is never worth the recording
                self.log.warning("the presentation probe could not be installed", error=str(exc)[:300])
            except BaseException:
                await session.close()
                raise
        if self.timeline is not None:
            try:
                await install_webrtc_wrapper(session.context)  # before the first navigation
            except Exception as exc:  # the timeline is never worth the recording
                self.log.warning("the WebRTC wrapper could not be installed", error=str(exc)[:300])
            except BaseException:
                await session.close()
                raise
        return session

    async def _watch_webrtc(self) -> None:
        """getStats() of the page's peer connections, once a second, into the timeline."""
        if self.timeline is None or self.session is None or self.session.page is None:
            return
        try:
            self.webrtc = await watch_webrtc(self.session.page, self.timeline)
        except Exception as exc:  # the timeline is never worth the recording
            self.log.warning("the WebRTC watcher did not start", error=str(exc)[:300])

    def _new_capture(self, audio_source: str) -> Capture:
        rec = self.recorder
        assert rec.display is not None and rec.audio is not None
        stop_when = self.spec.stop_when
        return Capture(
            CaptureSettings(
                display=rec.display.name or "",
                audio_source=audio_source,
                width=self.spec.width,
                height=self.spec.height,
                fps=self.spec.fps,
                video=self.spec.video,
                preset=rec.settings.preset,
                crf=rec.settings.crf,
                threads=rec.settings.encoder_threads,
                x264_params=rec.settings.x264_params,
                grabber=rec.settings.grabber,
                loading=self.spec.start_from == "commit",
                av_offset_ms=self.av_offset_ms,
                silence=stop_when.silence,
                silence_db=stop_when.silence_db,
                frozen=stop_when.frozen,
            ),
            self.capture_file,
            part_path=lambda n: self.folder.capture_part(n, live=self.spec.live_upload),
            live_dir=self.folder.live_dir if self.spec.live_upload else None,
            env=rec.audio.client_env(),
            on_progress=self._on_capture_progress,
            stop_timeout=rec.settings.stop_timeout,
        )

    async def _start_capture(self) -> None:
        assert self.capture is not None
        await self.capture.start()
        self.timings.first_frame = self.capture.first_frame_at
        control_event(self.timeline, "recording", "recording started", at=self.capture.first_frame_at)
        self.log.info("recording", url=self.spec.url, start_latency=round(time.time() - self.timings.started, 3))
        self._report("recording")
        if self.spec.video and self.spec.start_from != "commit" and self.session and self.session.page:
            # The page's presentation, counted from about the first frame (a page still loading counts from its
            # start). A few frames more or less do not move a mean over the recording.
            await presentation.restart(self.session.page)

    async def _wait_for_end(self, loading: Coroutine[Any, Any, None] | None = None) -> StopReason:
        """Until a stop condition holds, following the caller's pause and resume meanwhile; with `loading`
        (`from: commit`), the page's join runs alongside, and its failure ends the recording."""
        assert self.capture is not None and self.session is not None
        joining = asyncio.ensure_future(loading) if loading is not None else None
        try:
            while True:
                ended = await self._next_event(joining)
                if ended == "joined":
                    assert joining is not None
                    joining.result()  # a join that failed raises here: the recording fails with its error
                    joining = None
                elif ended == "pause":
                    self.control.pause_changed.clear()
                    await self._follow_pause()
                else:
                    return self._stop_reason(ended)
        except TimeoutError:
            raise RecorderError(
                ErrorCode.READINESS_TIMEOUT,
                f"{self.spec.url} was not ready within {self._page_bound():g} s of its navigation committing",
            ) from None
        finally:
            if joining is not None and not joining.done():
                joining.cancel()
                with contextlib.suppress(BaseException):
                    await joining

    async def _next_event(self, joining: asyncio.Future[None] | None) -> str:
        assert self.capture is not None and self.session is not None
        events = self.session.events
        waits = {
            "duration": asyncio.ensure_future(asyncio.sleep(self._remaining())),
            "stop": asyncio.ensure_future(self.control.stopping.wait()),
            "page_ended": asyncio.ensure_future(events.ended.wait()),
            "page_failed": asyncio.ensure_future(events.failed.wait()),
            "capture_exited": asyncio.ensure_future(self.capture.exited.wait()),
            "detected": asyncio.ensure_future(self.capture.detected.wait()),
            "pause": asyncio.ensure_future(self.control.pause_changed.wait()),
        }
        watched = [*waits.values(), *([joining] if joining is not None else [])]
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits.values():
                task.cancel()
        # Several at once: a stop outranks a pause, so a recording asked to stop never pauses first.
        return next((name for name, task in waits.items() if task in done), "joined")

    def _stop_reason(self, ended: str) -> StopReason:
        assert self.capture is not None and self.session is not None
        events = self.session.events
        reason: StopReason = "error"
        # The file ends at the moment the recording was meant to end, however far the encoder lags behind.
        if ended != "capture_exited":
            first = self.capture.first_frame_at
            self._file_ends_at = first + self.spec.duration if ended == "duration" and first else time.time()
        if ended == "duration":
            reason = "duration"
        elif ended == "stop":
            reason = self.control.stop_reason
        elif ended == "page_ended":
            reason = events.stop_reason or "page_closed"
        elif ended == "detected":
            reason = self.capture.detected_reason or "error"
        elif ended == "page_failed":
            self.error = events.error or RecorderError(ErrorCode.BROWSER_CRASHED, "the page failed")
        elif ended == "capture_exited":
            self.error = self.capture.failure()
        self.log.info("recording stopping", reason=reason, error=str(self.error) if self.error else None)
        self._note_stop(reason)
        return reason

    def _note_stop(self, reason: StopReason) -> None:
        """The timeline's `stop` event, once: why the recording ended (an error says what went wrong)."""
        if self._stop_noted:
            return
        self._stop_noted = True
        why = f"stopped: {reason}" if self.error is None else f"stopped: {self.error.message}"
        # The meeting's URL may carry its token in the query: the timeline shows it without (the collector
        # also redacts every URL it finds in a message).
        why = why.replace(self.spec.url, shown_url(self.spec.url))
        control_event(self.timeline, "stop", why, level="error" if self.error else "info", reason=reason)

    async def _follow_pause(self) -> None:
        assert self.capture is not None
        wanted = self.control.pause_wanted
        if wanted == self.capture.paused:
            return
        if wanted:
            await self.capture.pause()
            if self.capture.paused and self.capture.pauses:
                control_event(self.timeline, "pause", "paused", at=self.capture.pauses[-1].started_at)
        else:
            await self.capture.resume()
            if not self.capture.paused and self.capture.pauses:
                control_event(self.timeline, "resume", "resumed", at=self.capture.pauses[-1].ended_at)
        self.control.paused = self.capture.paused
        self.log.info("capture paused" if self.capture.paused else "capture resumed")
        self._report("recording")

    async def _picture(self) -> None:
        """failure.png: the page at the moment the recording failed, when there still is a page to picture."""
        if self.session is not None:
            with contextlib.suppress(Exception):
                self.screenshot = await self.session.screenshot(self.folder.screenshot)

    def _remaining(self) -> float:
        """Time left from the first frame, which under load can come well after FFmpeg was started, so a
        file is as long as asked whatever FFmpeg's start-up cost. Pauses count: the duration bounds the
        time spent on the page, and the file is shorter by the pauses."""
        assert self.capture is not None
        first = self.capture.first_frame_at or self.capture.started_at or time.time()
        return max(0.0, self.spec.duration - (time.time() - first))

    async def _wind_down(self, sink: Any) -> None:
        rec = self.recorder
        if self.error is not None and self.screenshot is None and self.error.code != ErrorCode.CANCELLED:
            await self._picture()  # a page that failed while recording (a denied navigation, a crash)
        self._note_stop(self.stop_reason)
        webrtc, self.webrtc = self.webrtc, None
        if webrtc is not None:
            try:
                await asyncio.wait_for(webrtc.stop(), 10)
            except Exception as exc:
                self.log.warning("the WebRTC watcher did not stop cleanly", error=str(exc)[:300])
        if self.capture is not None:
            await self.capture.stop(until=self._file_ends_at)
            if self.spec.video and self.session is not None and self.session.page is not None:
                try:
                    presented = await presentation.read(self.session.page)
                    self.lateness_ms = presented.mean_ms
                    self.log.debug("page presentation", frames=presented.count, lateness_ms=self.lateness_ms)
                except Exception as exc:  # what a page reports is never worth the recording's cleanup
                    self.log.warning("the page's presentation could not be read", error=str(exc)[:300])
        if self.progress_timeline is not None:
            self.progress_timeline.flush()
        self.control.paused = False
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

    def _audio_shift_ms(self) -> float:
        """How much more finalize is to move the sound for this page load's presentation of its video: the
        correction for its lateness less the machine's mean the capture was built with (both as read when
        the recording began). Finalize makes it at the remux of a single part or of the joined parts
        (recorder/finalize/stage.py)."""
        if self.lateness_ms is None or self.on_time_offset_ms is None:
            return 0.0
        return round(self.on_time_offset_ms - self.lateness_ms - self.av_offset_ms, 2)

    def _captured(self) -> Captured:
        rec = self.recorder
        return Captured(
            folder=self.folder,
            spec=self.spec,
            capture_file=self.capture_file,
            progress=self.capture.progress if self.capture else Progress(),
            timings=self.timings,
            stop_reason=self.stop_reason,
            error=self.error,
            blocked=rec.guard.ledger.summary() if rec.guard is not None else None,
            versions=tool_versions(rec.browser.version if rec.browser else None),
            av_offset_correction_ms=self.capture.av_offset_ms if self.capture else self.av_offset_ms,
            presentation_lateness_ms=self.lateness_ms,
            audio_shift_ms=self._audio_shift_ms(),
            behind_real_time=bool(self.capture and self.capture.tracker.ever_behind),
            screenshot=self.screenshot,
            capture_files=self.capture.files if self.capture else [],
            pauses=list(self.capture.pauses) if self.capture else [],
            timeline=self.timeline,
            console_levels=dict(self.page_feed.console_levels) if self.page_feed is not None else {},
            ends_at=self._file_ends_at,
        )
