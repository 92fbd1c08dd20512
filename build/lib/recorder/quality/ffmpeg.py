"""Child FFmpeg/ffprobe processes whose raw output is streamed, never held whole.

Analysis decodes hours of media, so output is read in chunks while stderr drains on a thread
(a full stderr pipe would stall the child). A child is always reaped: killed if the reader stops early.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from contract.errors import ErrorCode, RecorderError

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


def run_json(args: list[str], *, timeout: float = 60.0) -> dict[str, Any]:
    """Run ffprobe-like command that prints JSON; a failure names the file and FFmpeg's own reason."""
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise RecorderError(ErrorCode.INTERNAL, f"{args[0]} is not installed: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise RecorderError(ErrorCode.INTERNAL, f"{args[0]} took more than {timeout:.0f} s") from exc
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise RecorderError(
            ErrorCode.INVALID_ARGUMENT,
            f"{args[-1]}: not a media file FFmpeg can read ({reason[-1] if reason else 'no reason given'})",
        )
    return json.loads(done.stdout or b"{}")


class RawPipe:
    """An FFmpeg child writing raw samples to stdout; iterate `chunks()` then call `finish()`."""

    def __init__(self, args: list[str], source: Path, on_stderr_line: Callable[[str], None] | None = None):
        self._source = source
        self._on_line = on_stderr_line
        self._tail: deque[str] = deque(maxlen=12)
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError as exc:
            raise RecorderError(ErrorCode.INTERNAL, f"{args[0]} is not installed: {exc}") from exc
        self._stderr_thread = threading.Thread(target=self._drain, daemon=True)
        self._stderr_thread.start()

    def _drain(self) -> None:
        stream: IO[bytes] = self._proc.stderr  # type: ignore[assignment]
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if self._on_line is not None:
                self._on_line(line)
            if line and "Parsed_showinfo" not in line:
                self._tail.append(line)

    def chunks(self, size: int) -> Iterator[bytes]:
        """Yield blocks of exactly `size` bytes (the last one may be shorter)."""
        stream: IO[bytes] = self._proc.stdout  # type: ignore[assignment]
        while True:
            block = stream.read(size)
            if not block:
                return
            yield block

    def finish(self, timeout: float = 30.0) -> None:
        """Reap the child; a non-zero exit is an analysis failure that quotes FFmpeg's last words."""
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise RecorderError(ErrorCode.INTERNAL, f"FFmpeg did not exit while decoding {self._source}") from exc
        self._stderr_thread.join(timeout=5)
        if code != 0:
            reason = self._tail[-1] if self._tail else f"exit code {code}"
            raise RecorderError(ErrorCode.INVALID_ARGUMENT, f"{self._source}: FFmpeg could not decode it ({reason})")

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        self._stderr_thread.join(timeout=5)

    def __enter__(self) -> RawPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
