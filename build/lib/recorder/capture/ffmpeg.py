"""Running the capture: start FFmpeg, follow its progress, stop it gracefully (SIGINT), kill if it hangs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from contract.errors import ErrorCode, RecorderError
from contract.protocol import Progress
from recorder import procs
from recorder.capture.command import CaptureSettings, build_capture_command
from recorder.capture.progress import ProgressTracker

log = structlog.get_logger(__name__)

FIRST_FRAME_TIMEOUT = 15.0


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
    ) -> None:
        self.settings = settings
        self.output = output
        self.live_dir = live_dir
        self.env = env or {}
        self.on_progress = on_progress
        self.stop_timeout = stop_timeout
        self.tracker = ProgressTracker(target_fps=settings.fps)
        self.started_at: float | None = None
        self.first_frame_at: float | None = None
        self.exited = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[object]] = []
        self._stderr: list[str] = []
        self._first_frame = asyncio.Event()
        self._stopping = False

    @property
    def progress(self) -> Progress:
        return self.tracker.progress

    async def start(self) -> None:
        """Start FFmpeg and return once the first frame has been written."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if self.live_dir is not None:
            self.live_dir.mkdir(parents=True, exist_ok=True)
        origin = time.time()
        argv = build_capture_command(self.settings, self.output, origin=origin, live_dir=self.live_dir)
        log.debug("capture command", argv=argv)
        self.started_at = origin
        self.tracker.started_at = origin
        self._proc = await procs.spawn(
            argv, stdout=asyncio.subprocess.PIPE, env={**os.environ, **self.env}, death_signal=signal.SIGKILL
        )
        self._readers = [
            asyncio.ensure_future(self._read_progress()),
            asyncio.ensure_future(self._read_stderr()),
            asyncio.ensure_future(self._watch_exit()),
        ]
        waiter = asyncio.ensure_future(self._first_frame.wait())
        try:
            await asyncio.wait(
                {waiter, asyncio.ensure_future(self.exited.wait())},
                timeout=FIRST_FRAME_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        if not self._first_frame.is_set():
            await self.stop()
            detail = " | ".join(self._stderr[-3:]) or f"no frame within {FIRST_FRAME_TIMEOUT:g} s"
            raise RecorderError(ErrorCode.CAPTURE_FAILED, f"FFmpeg did not start capturing: {detail}")

    async def _read_progress(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            progress = self.tracker.feed(raw.decode(errors="replace"))
            if progress is None:
                continue
            if progress.frames > 0 and progress.first_frame_at is None:
                progress.first_frame_at = self._first_frame_time(progress)
                self.first_frame_at = progress.first_frame_at
                self._first_frame.set()
            if self.on_progress is not None:
                self.on_progress(progress)

    def _first_frame_time(self, progress: Progress) -> float:
        """When the first frame was grabbed. Output timestamps count from the capture's origin (`-copyts`),
        so the newest one minus the frames written so far gives it, however late the report came."""
        assert self.started_at is not None
        now = time.time()
        estimate = self.started_at + progress.elapsed - progress.frames / self.settings.fps
        return min(now, max(self.started_at, estimate))

    async def _read_stderr(self) -> None:
        assert self._proc is not None
        self._stderr = await procs.drain_stderr(self._proc)

    async def _watch_exit(self) -> None:
        assert self._proc is not None
        await self._proc.wait()
        self.exited.set()

    @property
    def failed_unexpectedly(self) -> bool:
        return self.exited.is_set() and not self._stopping

    def failure(self) -> RecorderError:
        code = self._proc.returncode if self._proc else None
        detail = " | ".join(self._stderr[-3:]) or "no message"
        return RecorderError(ErrorCode.CAPTURE_FAILED, f"FFmpeg stopped by itself (exit {code}): {detail}")

    async def stop(self) -> int | None:
        """Ask FFmpeg to finish the file (SIGINT), kill it after the timeout. Idempotent."""
        self._stopping = True
        code = await procs.stop(self._proc, sig=signal.SIGINT, timeout=self.stop_timeout, name="ffmpeg")
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2)
        return code
