"""The virtual display Chromium renders into and FFmpeg grabs from.

Xvfb picks its own free display number and writes it to a pipe (`-displayfd`), so recorders that share a
machine never race for the same `:N`.

The screen gets a mode at the capture rate (`rate`). Xvfb's built-in mode has no timings, and Chromium's
X11 output then draws at its 60 Hz fallback: twice the frames the capture keeps, each composited, and a
page's animation frames twice as often. With a 30 Hz mode Chromium's frame clock runs at the capture rate.
The mode's pixel clock is chosen so the rate is exact (dot clock = htotal x vtotal x rate, in whole Hz):
a mode a hair off the capture rate would drift against the grab and, each time their phases cross,
repeat one frame and skip the next.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import structlog

from contract.errors import ErrorCode, RecorderError
from recorder import procs

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScreenMode:
    """An X modeline at exactly `rate` frames per second (blanking as a typical reduced-blanking mode)."""

    width: int
    height: int
    rate: int

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}_{self.rate}"

    @property
    def htotal(self) -> int:
        return self.width + 160

    @property
    def vtotal(self) -> int:
        return self.height + 30

    @property
    def dot_clock_mhz(self) -> str:
        return f"{self.htotal * self.vtotal * self.rate / 1e6:.6f}"

    def newmode_args(self) -> list[str]:
        w, h = self.width, self.height
        return [
            self.name, self.dot_clock_mhz,
            str(w), str(w + 48), str(w + 80), str(self.htotal),
            str(h), str(h + 3), str(h + 8), str(self.vtotal),
        ]  # fmt: skip


MIN_SCREEN_RATE = 24

# Xvfb's extensions turned off and on. GLX off: it loads Mesa's software GL and LLVM into Xvfb, about 55
# of its 73 MB PSS (docs/benchmarks.md), and nothing here draws with it (Chromium composites in software and
# puts its pictures with XShm; the grab reads them the same way). RANDR on: the screen's mode is set with it.
EXTENSIONS_OFF: tuple[str, ...] = ("GLX",)
EXTENSIONS_ON: tuple[str, ...] = ("RANDR",)


def extension_args() -> list[str]:
    return [
        *(a for name in EXTENSIONS_OFF for a in ("-extension", name)),
        *(a for name in EXTENSIONS_ON for a in ("+extension", name)),
    ]


def screen_rate(fps: int) -> int:
    """The screen's rate for a capture at `fps`: fps itself, or for a slow capture the smallest multiple
    of it from 24 up, so a page's own animation never runs slower than a film's (a 10 fps capture keeps
    every third frame of a 30 Hz screen, and the page runs as it would anywhere)."""
    return fps * -(-MIN_SCREEN_RATE // fps) if fps < MIN_SCREEN_RATE else fps


class Display:
    def __init__(
        self, width: int, height: int, *, rate: int | None = None, depth: int = 24, start_timeout: float = 10.0
    ) -> None:
        """`rate`: frames per second of the screen's mode (the capture rate); None keeps Xvfb's own (60 Hz
        to Chromium)."""
        self.width = width
        self.height = height
        self.rate = rate
        self.depth = depth
        self.start_timeout = start_timeout
        self.name: str | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self) -> str:
        read_fd, write_fd = os.pipe()
        try:
            self._proc = await procs.spawn(
                [
                    "Xvfb",
                    "-displayfd",
                    str(write_fd),
                    "-screen",
                    "0",
                    f"{self.width}x{self.height}x{self.depth}",
                    "-nolisten",
                    "tcp",
                    "-ac",  # local unix socket only; no cookie to hand around
                    "-noreset",
                    *extension_args(),
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
        if self.rate:
            await self._set_mode(ScreenMode(self.width, self.height, self.rate))
        log.info(
            "display started", display=self.name, size=f"{self.width}x{self.height}", rate=self.rate, pid=self._proc.pid
        )
        return self.name

    async def _set_mode(self, mode: ScreenMode) -> None:
        """Add the mode to the screen's output and select it (xrandr); a display that refuses is stopped."""
        steps = [
            ["--newmode", *mode.newmode_args()],
            ["--addmode", "screen", mode.name],
            ["--output", "screen", "--mode", mode.name],
        ]
        for step in steps:
            problem = await self._xrandr(step)
            if problem is not None:
                await self.stop()
                raise RecorderError(ErrorCode.DISPLAY_FAILED, f"could not set the screen to {mode.name}: {problem}")

    async def _xrandr(self, args: list[str]) -> str | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                "xrandr", *args,
                env={**os.environ, "DISPLAY": self.name or ""},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except FileNotFoundError:
            return "xrandr is not installed (Debian: x11-xserver-utils; scripts/install-system-deps.sh installs it)"
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.start_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return "xrandr did not answer"
        if proc.returncode != 0:
            return err.decode(errors="replace").strip()[-300:] or f"xrandr exited with {proc.returncode}"
        return None

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
