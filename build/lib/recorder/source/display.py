"""The virtual display Chromium renders into and FFmpeg grabs from.

Xvfb picks its own free display number and writes it to a pipe (`-displayfd`), so recorders that share a
machine never race for the same `:N`.
"""

from __future__ import annotations

import asyncio
import os

import structlog

from contract.errors import ErrorCode, RecorderError
from recorder import procs

log = structlog.get_logger(__name__)


class Display:
    def __init__(self, width: int, height: int, *, depth: int = 24, start_timeout: float = 10.0) -> None:
        self.width = width
        self.height = height
        self.depth = depth
        self.start_timeout = start_timeout
        self.name: str | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> str:
        read_fd, write_fd = os.pipe()
        try:
            self._proc = await procs.spawn(
                [
                    "Xvfb",
                    "-displayfd", str(write_fd),
                    "-screen", "0", f"{self.width}x{self.height}x{self.depth}",
                    "-nolisten", "tcp",
                    "-ac",  # local unix socket only; no cookie to hand around
                    "-noreset",
                    "+extension", "RANDR",
                ],
                pass_fds=[write_fd],
            )
        finally:
            os.close(write_fd)
        try:
            number = await asyncio.wait_for(asyncio.to_thread(_read_display_number, read_fd), self.start_timeout)
        except (TimeoutError, ValueError) as exc:
            err = await self._stderr_tail()
            await self.stop()
            raise RecorderError(ErrorCode.DISPLAY_FAILED, f"Xvfb did not start: {err or exc}") from exc
        finally:
            os.close(read_fd)
        self.name = f":{number}"
        log.info("display started", display=self.name, size=f"{self.width}x{self.height}", pid=self._proc.pid)
        return self.name

    async def _stderr_tail(self) -> str:
        if self._proc is None or self._proc.stderr is None:
            return ""
        try:
            data = await asyncio.wait_for(self._proc.stderr.read(4096), 0.5)
        except TimeoutError:
            return ""
        return data.decode(errors="replace").strip().splitlines()[-1:][0] if data.strip() else ""

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        await procs.stop(proc, name="Xvfb", timeout=3.0)
        self.name = None


def _read_display_number(fd: int) -> int:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 16)
        if not chunk:
            break
        data += chunk
    return int(data.strip())
