"""The machine a benchmark ran on, recorded with every result: a figure means nothing without it."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any


def _first(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _first_line(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None and not os.access(argv[0], os.X_OK):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in (out.stdout or out.stderr).splitlines() if line.strip()]
    return lines[0].strip() if lines else None


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


@cache
def tool_versions(chromium: str = "/usr/bin/chromium") -> dict[str, str | None]:
    return {
        "chromium": _first_line([chromium, "--version"]),
        "ffmpeg": _first_line(["ffmpeg", "-version"]),
        "xvfb": "Xvfb " + (_package_version("xvfb") or "?"),
        "pulseaudio": _first_line(["pulseaudio", "--version"]),
        "gstreamer": _first_line(["gst-launch-1.0", "--version"]),
    }


def _package_version(package: str) -> str | None:
    return _first_line(["dpkg-query", "-W", "-f", "${Version}", package])


def describe(chromium: str = "/usr/bin/chromium") -> dict[str, Any]:
    """Cores, memory, CPU model, kernel, tool versions, date and the load when the run began."""
    mem_kb = _first("/proc/meminfo", "MemTotal")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "load_at_start": [round(x, 2) for x in load_average()],
        **tool_versions(chromium),
    }


def _os_name() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        return None
    return None


MEDIA_NAMES = ("chrom", "ffmpeg", "Xvfb", "gst-launch", "pulseaudio")


def _media_ticks() -> dict[str, int]:
    """'pid comm' -> CPU ticks of every media process (Chromium, FFmpeg, Xvfb, GStreamer, PulseAudio)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, rest = stat.rpartition(")")
        comm = head.split("(", 1)[-1]
        if comm.startswith(MEDIA_NAMES):
            fields = rest.split()
            found[f"{entry.name} {comm}"] = int(fields[11]) + int(fields[12])
    return found


def media_processes(window: float = 2.0, busy_cores: float = 0.05) -> tuple[list[str], list[str]]:
    """Other media processes on the machine, split into (busy, idle) by the CPU they use over `window` s.

    An idle one (say, a warm recorder left waiting by another run) costs nothing worth waiting for, but is
    named in the results all the same.
    """
    before = _media_ticks()
    time.sleep(window)
    after = _media_ticks()
    tick = os.sysconf("SC_CLK_TCK")
    busy, idle = [], []
    for name, ticks in after.items():
        cores = (ticks - before.get(name, ticks)) / tick / window
        (busy if cores >= busy_cores else idle).append(f"{name} ({cores:.2f} cores)")
    return busy, idle


def busy_processes() -> list[str]:
    """Other media processes that are using the CPU (they would skew any figure)."""
    return media_processes()[0]


# A virtual machine's CPUs lent to the host's other guests, as a share of its CPU time: above this, the
# figures are the neighbours' as much as ours: 5.6 % stolen, read during two sync runs that lost pictures in 11
# of 16 files (docs/benchmarks.md).
MAX_STEAL = 0.02
STEAL_WINDOW = 2.0  # seconds over which the steal is measured


def cpu_steal(seconds: float = STEAL_WINDOW) -> float:
    """The share of this machine's CPU time the hypervisor gave to other guests over `seconds` (/proc/stat's
    steal; 0 on bare metal, or where it cannot be read)."""

    def totals() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields), fields[7] if len(fields) > 7 else 0

    try:
        total, stolen = totals()
        time.sleep(seconds)
        total_after, stolen_after = totals()
    except (OSError, ValueError):
        return 0.0
    return (stolen_after - stolen) / max(1, total_after - total)


def quiet(max_load: float = 0.7) -> tuple[bool, str]:
    """Whether the machine is quiet enough for figures worth publishing, and why not."""
    load = load_average()[0]
    if load >= max_load:
        return False, f"1-minute load {load:.2f} >= {max_load}"
    busy, idle = media_processes()
    if busy:
        return False, "other media processes busy: " + ", ".join(busy[:6])
    steal = cpu_steal()
    if steal >= MAX_STEAL:
        return False, f"CPU steal {steal:.1%} >= {MAX_STEAL:.0%} (the host's other guests)"
    note = f"; idle media processes present: {', '.join(idle[:8])}" if idle else ""
    return True, f"1-minute load {load:.2f}, CPU steal {steal:.1%}, no other media process busy{note}"


def wait_until_quiet(max_load: float = 0.7, timeout: float = 1200.0, poll: float = 30.0) -> str:
    """Block until `quiet`, polling; raise TimeoutError with the last reason if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        ok, why = quiet(max_load)
        if ok:
            return why
        if time.monotonic() > deadline:
            raise TimeoutError(f"the machine stayed busy: {why}")
        print(f"waiting for a quiet machine: {why}", flush=True)
        time.sleep(poll)


def add_quiet_arguments(parser: argparse.ArgumentParser) -> None:
    """`--require-quiet` and `--no-write`, which every timing benchmark takes."""
    parser.add_argument("--require-quiet", action="store_true", help="wait (up to 20 min) for a quiet machine first")
    parser.add_argument("--no-write", action="store_true", help="print only; write no result file")


def check_quiet(args: argparse.Namespace) -> str:
    """Wait for a quiet machine if asked to; otherwise say when it is not, as the figures then mean less."""
    if args.require_quiet:
        return wait_until_quiet()
    ok, why = quiet()
    if not ok:
        print(f"warning: the machine is not quiet ({why}); figures are for development only", flush=True)
    return why
