"""Test fixtures: no helper process outlives the test that started it.

Every process this test run starts inherits a tag in its environment (orphans keep it too), so the check
sees this run's processes only, not those of another run sharing the machine.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

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


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves an Xvfb, Chromium, FFmpeg or PulseAudio process behind."""
    before = watched_processes()
    yield
    extra = leftovers(before)
    assert not extra, f"processes left behind: {extra}"
