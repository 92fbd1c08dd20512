"""Child processes that never outlive the recorder.

Every helper process (Xvfb, PulseAudio, FFmpeg) runs in its own process group, is told to die with its
parent (PR_SET_PDEATHSIG), and is stopped with a polite signal first and SIGKILL after a timeout. So a
recorder that crashes or is killed with SIGKILL leaves nothing behind.

FFmpeg dies with its parent by SIGKILL, not SIGTERM: the display and the audio server it reads die at the
same moment, and a graceful wind-down on inputs that vanished was seen to hang for good. Nothing is lost
by it that SIGTERM would have kept: the capture is crash-safe (Matroska clusters flushed every second, or
an append-only fragmented MP4 and finished HLS segments).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
from collections.abc import Sequence

import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int = signal.SIGTERM) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def preexec_die_with_parent(sig: int = signal.SIGTERM) -> None:
    """For subprocess preexec_fn: new session (own process group) and death with the parent, by `sig`."""
    os.setsid()
    _die_with_parent(sig)


async def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdin: int | None = asyncio.subprocess.DEVNULL,
    stdout: int | None = asyncio.subprocess.DEVNULL,
    stderr: int | None = asyncio.subprocess.PIPE,
    pass_fds: Sequence[int] = (),
    death_signal: int = signal.SIGTERM,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=tuple(pass_fds),
        preexec_fn=functools.partial(preexec_die_with_parent, death_signal),
    )


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def stop(
    proc: asyncio.subprocess.Process | None,
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 5.0,
    name: str = "process",
) -> int | None:
    """Stop a child politely, then for sure. Returns its exit code (None if there was none to stop)."""
    if proc is None:
        return None
    if proc.returncode is None:
        _signal_group(proc, sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("process did not stop in time, killing", process=name, pid=proc.pid, timeout=timeout)
            _signal_group(proc, signal.SIGKILL)
            await proc.wait()
    # Whatever the leader left in its group (helpers it forked) goes too.
    _signal_group(proc, signal.SIGKILL)
    return proc.returncode


async def drain_stderr(proc: asyncio.subprocess.Process, keep: int = 40) -> list[str]:
    """Read a child's stderr to the end, keeping the last lines for error messages."""
    lines: list[str] = []
    if proc.stderr is None:
        return lines
    async for raw in proc.stderr:
        line = raw.decode(errors="replace").rstrip()
        if line:
            lines.append(line)
            del lines[:-keep]
    return lines
