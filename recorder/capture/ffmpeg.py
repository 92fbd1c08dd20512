"""Running the capture: start FFmpeg, follow its progress, stop it gracefully (SIGINT), kill if it hangs.

A capture is one or more parts, one FFmpeg process each: `pause()` stops the running part (nothing is
captured while paused, not a frame nor a sample) and `resume()` starts the next into its own file, which
finalize joins to the others. Progress keeps counting across parts, and `exited` fires only for a part
that ended by itself (or once the capture is stopped), never for a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import Progress
from recorder import procs
from recorder.capture.command import CaptureSettings, build_capture_command
from recorder.capture.detect import Detection, LogReader
from recorder.capture.grabber import PHASE_SETTLE, PHASE_WINDOW, STOPPED_READING, GrabberError, ScreenGrabber
from recorder.capture.pause import PauseSpan
from recorder.capture.progress import ProgressTracker

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

FIRST_FRAME_TIMEOUT = 15.0
# A stop first lets FFmpeg write what it had grabbed up to the stop's moment (Capture._drain): an overloaded
# encoder lags behind its grab, and SIGINT drops what is still queued. Bounded, for an FFmpeg that is stuck.
DRAIN_STALL = 5.0  # seconds without the file growing before the drain gives up
DRAIN_LIMIT = 60.0


class _Part:
    """One FFmpeg process and the file it writes."""

    def __init__(self, number: int, path: Path, origin: float) -> None:
        self.number = number
        self.path = path
        self.origin = origin
        self.proc: asyncio.subprocess.Process | None = None
        self.grabber: ScreenGrabber | None = None  # RECORDER_GRABBER=damage: what feeds FFmpeg its pictures
        self.readers: list[asyncio.Task[object]] = []
        self.log = LogReader()
        self.first_frame = asyncio.Event()
        self.first_frame_at: float | None = None
        self.first_media_time: float | None = None  # its first output timestamp, from its origin
        self.media_seconds = 0.0  # how much of the file it wrote, once stopped
        self.av_offset_ms: float | None = None  # the A/V correction its FFmpeg applied
        self.deliberate = False  # stopped by pause or stop, not by itself

    async def stop(self, timeout: float) -> int | None:
        self.deliberate = True
        if self.grabber is not None:
            self.grabber.halt()  # a grab blocked on a full pipe ends when FFmpeg exits and closes it
        code = await procs.stop(self.proc, sig=signal.SIGINT, timeout=timeout, name="ffmpeg")
        if self.grabber is not None:
            await asyncio.to_thread(self.grabber.join, timeout)
        for task in self.readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2)
        return code


class Capture:
    def __init__(
        self,
        settings: CaptureSettings,
        output: Path,
        *,
        live_dir: Path | None = None,
        env: dict[str, str] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        stop_timeout: float = 10.0,
        part_path: Callable[[int], Path] | None = None,
    ) -> None:
        """`output` is the first part's file; `part_path(n)` names the n-th (n >= 2, after each resume),
        by default `<output stem>-00n<suffix>` beside it (the worker passes `AttemptFolder.capture_part`)."""
        self.settings = settings
        self.output = output
        self.live_dir = live_dir
        self.env = env or {}
        self.on_progress = on_progress
        self.stop_timeout = stop_timeout
        self.part_path = part_path or (lambda n: output.with_name(f"{output.stem}-{n:03d}{output.suffix}"))
        self.tracker = ProgressTracker(target_fps=settings.fps)
        self.started_at: float | None = None
        self.first_frame_at: float | None = None
        self.exited = asyncio.Event()
        self.detected = asyncio.Event()
        self.detected_reason: Detection | None = None
        self.pauses: list[PauseSpan] = []
        self.paused = False
        self._parts: list[_Part] = []
        self._current: _Part | None = None
        self._watching: ScreenGrabber | None = None  # the next part's grabber, watching the page's drawing
        self._failure: RecorderError | None = None
        self._stopping = False
        self._lock = asyncio.Lock()

    @property
    def progress(self) -> Progress:
        return self.tracker.progress

    @property
    def files(self) -> list[Path]:
        """The capture parts in order, one per FFmpeg process started (the first is `output`)."""
        return [part.path for part in self._parts]

    async def prepare(self) -> None:
        """Begin watching the page's drawing for the paced grab's grid, so `start()` need not wait for it:
        called as the page opens, it runs while the page loads. Does nothing for x11grab or audio alone,
        and `stop()` ends it if the capture never starts."""
        s = self.settings
        if self._watching is not None or not (s.video and s.grabber == "damage"):
            return
        settle = PHASE_WINDOW if s.loading else PHASE_SETTLE  # a loading page has no rhythm to wait for
        grabber = ScreenGrabber(s.display, s.width, s.height, s.fps, settle=settle)
        await self._in_thread(grabber, grabber.open)
        self._watching = grabber

    async def start(self) -> None:
        """Start FFmpeg and return once the first frame has been written."""
        await self._start_part()

    async def pause(self) -> None:
        """Stop capturing until `resume()`: the running FFmpeg finishes its file and exits. No-op when
        paused or stopped already."""
        async with self._lock:
            part = self._current
            if self.paused or part is None or self._stopping:
                return
            started = time.time()
            # No drain here: what FFmpeg still holds is from before the pause, but a drain would also let
            # it grab past the pause, and nothing of a paused span may reach the file.
            await part.stop(self.stop_timeout)
            self._current = None
            if not self.exited.is_set():  # it did not die by itself meanwhile
                part.media_seconds = self._media_seconds(part)
                self.paused = True
                self.pauses.append(PauseSpan(started_at=started, media_at=round(self._media_time(), 3)))
                log.info("capture paused", part=part.number, media_at=self.pauses[-1].media_at)
                with contextlib.suppress(RecorderError):  # the resume opens its own instead
                    await self.prepare()  # the page is watched through the pause, for the next part's grid

    async def resume(self) -> None:
        """Capture again, into the next part; returns once its first frame is written. A part that cannot
        start ends the capture as a failure (`exited`, `failure()`) and raises."""
        async with self._lock:
            if not self.paused or self._stopping:
                return
            try:
                await self._start_part()
            except RecorderError as exc:
                self._failure = exc
                self.exited.set()
                raise
            self.paused = False
            assert self._current is not None
            self.pauses[-1].ended_at = self._current.first_frame_at
            log.info("capture resumed", part=len(self._parts))

    async def _start_part(self) -> None:
        number = len(self._parts) + 1
        path = self.output if number == 1 else self.part_path(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.live_dir is not None:
            self.live_dir.mkdir(parents=True, exist_ok=True)
        grabber, origin = await self._open_grabber()
        stdin: int = asyncio.subprocess.DEVNULL
        feed: int | None = None
        try:
            settings = self._part_settings(grabber)
            argv = build_capture_command(settings, path, origin=origin, live_dir=self.live_dir, part=number)
            log.debug("capture command", argv=argv)
            if grabber is not None:
                stdin, feed = os.pipe()
            proc = await procs.spawn(
                argv,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env},
                death_signal=signal.SIGKILL,
            )
        except BaseException:
            if feed is not None:
                os.close(feed)
            if grabber is not None:
                await asyncio.to_thread(grabber.close)
            raise
        finally:
            if feed is not None:
                os.close(stdin)
        if grabber is not None:
            assert feed is not None
            grabber.start(feed)
        part = _Part(number, path, origin)
        part.grabber = grabber
        part.proc = proc
        part.av_offset_ms = settings.av_offset_ms
        if number == 1:
            self.started_at = origin
            self.tracker.started_at = origin
        else:
            self.tracker.next_part()
        self._parts.append(part)
        self._current = part
        part.readers = [
            asyncio.ensure_future(self._read_progress(part)),
            asyncio.ensure_future(self._read_stderr(part)),
            asyncio.ensure_future(self._watch_exit(part)),
        ]
        waiter = asyncio.ensure_future(part.first_frame.wait())
        ended = asyncio.ensure_future(part.proc.wait())
        try:
            await asyncio.wait({waiter, ended}, timeout=FIRST_FRAME_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            ended.cancel()
        if not part.first_frame.is_set():
            await part.stop(self.stop_timeout)
            self._current = None
            detail = " | ".join(part.log.tail[-3:]) or f"no frame within {FIRST_FRAME_TIMEOUT:g} s"
            raise RecorderError(ErrorCode.CAPTURE_FAILED, f"FFmpeg did not start capturing: {detail}")

    async def _open_grabber(self) -> tuple[ScreenGrabber | None, float]:
        """The grabber that feeds FFmpeg, when the settings ask for it, and the origin of the part's time."""
        s = self.settings
        if not (s.video and s.grabber == "damage"):
            return None, time.time()
        await self.prepare()
        grabber, self._watching = self._watching, None
        assert grabber is not None
        # The part before saw this page's video presented (its grab learnt the phase as it ended; None once the
        # page showed none): that places this grid at once, and `place_grid` judges whether it is still fresh.
        before = self._parts[-1].grabber if self._parts else None
        if before is not None:
            grabber.presentation_phase, grabber.phase_seen_at = before.presentation_phase, before.phase_seen_at
        origin = await self._in_thread(grabber, grabber.place_grid)
        return grabber, origin

    def _part_settings(self, grabber: ScreenGrabber | None) -> CaptureSettings:
        """The settings a part's FFmpeg runs with. A grid placed by a known video phase stamps a picture a
        known time after the page drew it; the calibrated A/V offset holds for half a frame (the grid placed
        by the page's rhythm), so another delay moves the audio by the difference."""
        s = self.settings
        if grabber is None or grabber.stamp_delay is None:
            return s
        shift_ms = (grabber.period / 2 - grabber.stamp_delay) * 1000.0
        return dataclasses.replace(s, av_offset_ms=round(s.av_offset_ms + shift_ms, 3)) if shift_ms else s

    @property
    def av_offset_ms(self) -> float:
        """The A/V correction the first part applied: the calibrated one, moved by its grid's stamp delay."""
        if self._parts and self._parts[0].av_offset_ms is not None:
            return self._parts[0].av_offset_ms
        return self.settings.av_offset_ms

    @staticmethod
    async def _in_thread(grabber: ScreenGrabber, step: Callable[[], _T]) -> _T:
        """A blocking step of the grabber's set-up; when it fails or is cancelled, the grabber is closed once
        the step is over (however often the wait for it is cancelled), so nothing of it is left."""
        running = asyncio.ensure_future(asyncio.to_thread(step))
        try:
            return await asyncio.shield(running)
        except BaseException as exc:
            while not running.done():
                with contextlib.suppress(BaseException):
                    await asyncio.shield(running)
            await asyncio.shield(asyncio.to_thread(grabber.close))
            if isinstance(exc, GrabberError):
                raise RecorderError(ErrorCode.CAPTURE_FAILED, f"the screen grab did not start: {exc}") from exc
            raise

    async def _read_progress(self, part: _Part) -> None:
        assert part.proc is not None and part.proc.stdout is not None
        async for raw in part.proc.stdout:
            progress = self.tracker.feed(raw.decode(errors="replace"))
            if progress is None:
                continue
            if not part.first_frame.is_set() and self._writing(self.tracker.part):
                part.first_frame_at = self._first_frame_time(part, self.tracker.part)
                part.first_media_time = self.tracker.part.elapsed
                if self.first_frame_at is None:
                    self.first_frame_at = progress.first_frame_at = part.first_frame_at
                part.first_frame.set()
            if self.on_progress is not None:
                self.on_progress(progress)

    def _writing(self, part_progress: Progress) -> bool:
        """Frames for video; audio alone has no frames, and its first timestamp says it is written."""
        return part_progress.frames > 0 if self.settings.video else part_progress.elapsed > 0

    def _first_frame_time(self, part: _Part, progress: Progress) -> float:
        """When the part's first frame was grabbed. Output timestamps count from the part's origin
        (`-copyts`), so the newest one minus the frames written so far gives it, however late the report
        came. Audio alone: the first report comes with the first packets, so its timestamp is near enough."""
        now = time.time()
        estimate = part.origin + progress.elapsed
        if self.settings.video:
            estimate -= progress.frames / self.settings.fps
        return min(now, max(part.origin, estimate))

    async def _drain(self, part: _Part, until: float) -> None:
        """Wait until the part's file reaches `until`, so a stop loses nothing an overloaded encoder still had
        queued. The paced grab ends its stream at `until`, and FFmpeg ends by itself once it has written all
        of it; x11grab's FFmpeg is stopped once its file is within a frame of `until`."""
        if part.proc is None or part.proc.returncode is not None:
            return
        target = until - (part.first_frame_at or part.origin) - 1.0 / self.settings.fps
        if part.grabber is not None:
            part.deliberate = True  # FFmpeg ending by itself is this stop
            part.grabber.end_at(until)
            target = math.inf
        began = last_change = time.monotonic()
        written = self._media_seconds(part)
        while self._media_seconds(part) < target and part.proc.returncode is None:
            now = time.monotonic()
            if self._media_seconds(part) != written:
                written, last_change = self._media_seconds(part), now
            if now - last_change > DRAIN_STALL or now - began > DRAIN_LIMIT:
                log.warning("capture not drained", written_s=round(written, 2), waited_s=round(now - began, 1))
                return
            await asyncio.sleep(0.05)
        waited = time.monotonic() - began
        if waited > 0.5:
            log.info("capture drained", waited_s=round(waited, 2))

    def _media_seconds(self, part: _Part) -> float:
        """How long the part's file is so far: its frames for video (constant rate, so time since its first
        frame), its span of timestamps for audio alone (time since its first sound)."""
        done = self.tracker.part
        if self.settings.video:
            return done.frames / self.settings.fps
        return max(0.0, done.elapsed - (part.first_media_time or 0.0))

    def _media_time(self) -> float:
        return sum(part.media_seconds for part in self._parts)

    async def _read_stderr(self, part: _Part) -> None:
        assert part.proc is not None and part.proc.stderr is not None
        async for raw in part.proc.stderr:
            found = part.log.line(raw.decode(errors="replace"))
            if found is not None and not self.detected.is_set():
                self.detected_reason = found
                self.detected.set()
                log.info("capture detected", reason=found, part=part.number)

    async def _watch_exit(self, part: _Part) -> None:
        assert part.proc is not None
        await part.proc.wait()
        if not part.deliberate:
            self.exited.set()

    @property
    def failed_unexpectedly(self) -> bool:
        return self.exited.is_set() and not self._stopping

    def failure(self) -> RecorderError:
        if self._failure is not None:
            return self._failure
        part = self._parts[-1] if self._parts else None
        code = part.proc.returncode if part and part.proc else None
        detail = " | ".join(part.log.tail[-3:]) if part and part.log.tail else "no message"
        if part is not None and part.grabber is not None and part.grabber.error not in (None, STOPPED_READING):
            detail += f" | the screen grab: {part.grabber.error}"
        return RecorderError(ErrorCode.CAPTURE_FAILED, f"FFmpeg stopped by itself (exit {code}): {detail}")

    async def stop(self, until: float | None = None) -> int | None:
        """Ask FFmpeg to finish the file (SIGINT), kill it after the timeout. With `until` (unix time), first
        let it write what it grabbed up to then. Idempotent; while paused there is nothing to stop, and the
        last pause ends here."""
        self._stopping = True
        async with self._lock:
            if self._watching is not None:
                await asyncio.to_thread(self._watching.close)
                self._watching = None
            part, self._current = self._current, None
            code = None
            if part is not None:
                if until is not None:
                    await self._drain(part, until)
                code = await part.stop(self.stop_timeout)
            elif self._parts and self._parts[-1].proc is not None:
                code = self._parts[-1].proc.returncode
            if self.paused and self.pauses and self.pauses[-1].ended_at is None:
                self.pauses[-1].ended_at = time.time()
            self.exited.set()
            return code
