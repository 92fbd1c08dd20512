"""Test fixtures: no helper process outlives the test that started it, nor a thread or shared-memory segment
of the screen grab.

Every process this test run starts inherits a tag in its environment (orphans keep it too), so the check
sees this run's processes only, not those of another run sharing the machine.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

WATCHED = ("Xvfb", "chromium", "chrome", "chrome_crashpad", "ffmpeg", "pulseaudio")
# RECORDER_PROCESS_TAG is the recorder's own label for its processes; it reaches Chromium's minimal environment.
TAG = f"RECORDER_PROCESS_TAG={uuid.uuid4().hex}"
os.environ["RECORDER_PROCESS_TAG"] = TAG.split("=", 1)[1]


def _ours(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return TAG.encode() in f.read()
    except OSError:
        return False


def watched_processes() -> dict[int, str]:
    """pid → name of every live (not zombie) Xvfb, Chromium, FFmpeg and PulseAudio process of this run."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0]
        if state != "Z" and name.startswith(WATCHED) and _ours(entry):
            found[int(entry)] = name
    return found


def leftovers(before: dict[int, str], grace: float = 10.0) -> dict[int, str]:
    """Processes that appeared since `before` and are still alive after `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        extra = {pid: name for pid, name in watched_processes().items() if pid not in before}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.2)


SHM_TABLE = Path("/proc/sysvipc/shm")


def own_segments() -> set[str]:
    """The System V shared-memory segments this process created (the screen grab's images)."""
    if not SHM_TABLE.exists():  # a kernel without System V IPC in /proc: nothing to see
        return set()
    rows = [line.split() for line in SHM_TABLE.read_text().splitlines()[1:]]
    return {f"shm {row[1]}" for row in rows if row[4] == str(os.getpid())}  # shmid, by cpid (the creator)


def grab_threads() -> set[threading.Thread]:
    """The screen grab's threads (recorder/capture/grabber.py names them screen-*)."""
    return {t for t in threading.enumerate() if t.name.startswith("screen-") and t.is_alive()}


def grab_leftovers(before: tuple[set[threading.Thread], set[str]], grace: float = 5.0) -> list[str]:
    """The screen grab's threads and shared-memory segments that appeared since `before`, still there
    after `grace` seconds."""
    threads_before, segments_before = before
    deadline = time.monotonic() + grace
    while True:
        threads = sorted(t.name for t in grab_threads() - threads_before)
        left = threads + sorted(own_segments() - segments_before)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves an Xvfb, Chromium, FFmpeg or PulseAudio process behind, or anything of
    the screen grab."""
    before, grab_before = watched_processes(), (grab_threads(), own_segments())
    yield
    extra = leftovers(before)
    assert not extra, f"processes left behind: {extra}"
    grab = grab_leftovers(grab_before)
    assert not grab, f"the screen grab left behind: {grab}"
