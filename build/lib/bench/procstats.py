"""CPU seconds and memory of process trees, sampled from /proc (a recorder is a tree of processes).

A recording's cost is Chromium (browser, GPU, renderer and utility processes), FFmpeg, Xvfb and the
PulseAudio daemon, plus the recorder's own Python process and Playwright's Node driver. A sampler thread
walks /proc every `interval` seconds, finds every descendant of each group's root pids, and keeps each
process's cumulative CPU ticks, RSS and (less often, it is costlier to read) PSS.

CPU over a window is the growth of each process's ticks between the first and the last sample inside it;
a process born inside the window counts from zero. A process that exits between samples loses at most
one interval of its CPU. RSS sums double-count pages that Chromium's processes share; PSS splits them
fairly, so PSS is the figure to compare with a memory budget.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CATEGORIES = ("chromium", "ffmpeg", "xvfb", "pulseaudio", "driver", "recorder", "gstreamer", "other")


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


BOOT_TIME = _boot_time()


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    ticks: int  # utime + stime
    started: float  # unix time
    rss_kb: int


def read_proc(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except (OSError, ValueError):
        return None
    # comm may contain spaces and parentheses: split at the last ')'.
    head, _, rest = stat.rpartition(")")
    comm = head.split("(", 1)[1] if "(" in head else ""
    fields = rest.split()
    # fields[0] is state (field 3); utime is field 14, stime 15, starttime 22.
    ppid = int(fields[1])
    ticks = int(fields[11]) + int(fields[12])
    started = BOOT_TIME + int(fields[19]) / CLK_TCK
    return ProcInfo(pid, ppid, comm, ticks, started, int(statm[1]) * PAGE_KB)


def read_pss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def machine_jiffies() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def all_processes() -> dict[int, ProcInfo]:
    procs = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = read_proc(int(entry.name))
            if info is not None:
                procs[info.pid] = info
    return procs


def descendants(roots: list[int], procs: dict[int, ProcInfo]) -> set[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for info in procs.values():
        children[info.ppid].append(info.pid)
    found: set[int] = set()
    stack = [pid for pid in roots if pid in procs]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def category(comm: str) -> str:
    name = comm.lower()
    if name.startswith(("chrom", "headless_shell")):
        return "chromium"
    if name.startswith("ffmpeg"):
        return "ffmpeg"
    if name.startswith("xvfb"):
        return "xvfb"
    if name.startswith("pulseaudio"):
        return "pulseaudio"
    if name.startswith("node"):
        return "driver"
    if name.startswith("python"):
        return "recorder"
    if name.startswith(("gst", "queue", "videorate", "x264")):
        return "gstreamer"
    return "other"


@dataclass
class Sample:
    at: float
    # pid -> (category, ticks, started, rss_kb, pss_kb or None)
    procs: dict[int, tuple[str, int, float, int, int | None]]


@dataclass
class Usage:
    seconds: float
    cpu_cores: dict[str, float]
    cpu_cores_total: float
    peak_rss_mb: float
    peak_pss_mb: float | None
    peak_rss_mb_by_category: dict[str, float]
    peak_pss_mb_by_category: dict[str, float]
    processes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_s": round(self.seconds, 2),
            "cpu_cores_total": round(self.cpu_cores_total, 3),
            "cpu_cores": {k: round(v, 3) for k, v in self.cpu_cores.items() if v > 0},
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "peak_pss_mb": None if self.peak_pss_mb is None else round(self.peak_pss_mb, 1),
            "peak_rss_mb_by_category": {k: round(v, 1) for k, v in self.peak_rss_mb_by_category.items()},
            "peak_pss_mb_by_category": {k: round(v, 1) for k, v in self.peak_pss_mb_by_category.items()},
            "processes": self.processes,
        }


@dataclass
class TreeSampler:
    """Samples the process trees of named groups in a background thread."""

    interval: float = 1.0
    pss_every: int = 5  # read PSS on every n-th sample (smaps_rollup of Chromium is not free)
    groups: dict[str, list[int]] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=lambda: defaultdict(list))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0
    # (time, busy jiffies, total jiffies) of the whole machine at each sample
    _machine: list[tuple[float, float, float]] = field(default_factory=list)

    def watch(self, group: str, *roots: int) -> None:
        with self._lock:
            self.groups.setdefault(group, []).extend(roots)

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="procstats", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sample_once()

    def __enter__(self) -> TreeSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.sample_once()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def sample_once(self) -> None:
        now = time.time()
        busy, total = machine_jiffies()
        procs = all_processes()
        with self._lock:
            groups = {name: list(roots) for name, roots in self.groups.items()}
            self._count += 1
            self._machine.append((now, busy, total))
            with_pss = self._count % self.pss_every == 1 or self.pss_every == 1
        for name, roots in groups.items():
            members = descendants(roots, procs)
            entry = {}
            for pid in members:
                p = procs[pid]
                pss = read_pss_kb(pid) if with_pss else None
                entry[pid] = (category(p.comm), p.ticks, p.started, p.rss_kb, pss)
            with self._lock:
                self.samples[name].append(Sample(now, entry))

    def usage(self, group: str, start: float | None = None, end: float | None = None) -> Usage | None:
        """CPU cores and peak memory of `group` between `start` and `end` (unix times; default: all)."""
        with self._lock:
            inside = [
                s
                for s in self.samples.get(group, [])
                if (start is None or s.at >= start) and (end is None or s.at <= end)
            ]
        if len(inside) < 2:
            return None
        t0, t1 = inside[0].at, inside[-1].at
        first: dict[int, int] = {}
        last: dict[int, tuple[str, int]] = {}
        for s in inside:
            for pid, (cat, ticks, started, _rss, _pss) in s.procs.items():
                if pid not in first:
                    first[pid] = 0 if started >= t0 else ticks
                last[pid] = (cat, ticks)
        cpu: dict[str, float] = defaultdict(float)
        for pid, (cat, ticks) in last.items():
            cpu[cat] += max(0, ticks - first[pid]) / CLK_TCK / (t1 - t0)
        peak_rss = 0.0
        peak_pss: float | None = None
        rss_by: dict[str, float] = defaultdict(float)
        pss_by: dict[str, float] = defaultdict(float)
        for s in inside:
            totals: dict[str, float] = defaultdict(float)
            pss_totals: dict[str, float] = defaultdict(float)
            has_pss = all(v[4] is not None for v in s.procs.values()) and bool(s.procs)
            for cat, _ticks, _started, rss, pss in s.procs.values():
                totals[cat] += rss / 1024
                if has_pss and pss is not None:
                    pss_totals[cat] += pss / 1024
            peak_rss = max(peak_rss, sum(totals.values()))
            for cat, mb in totals.items():
                rss_by[cat] = max(rss_by[cat], mb)
            if has_pss:
                peak_pss = max(peak_pss or 0.0, sum(pss_totals.values()))
                for cat, mb in pss_totals.items():
                    pss_by[cat] = max(pss_by[cat], mb)
        return Usage(
            seconds=t1 - t0,
            cpu_cores=dict(cpu),
            cpu_cores_total=sum(cpu.values()),
            peak_rss_mb=peak_rss,
            peak_pss_mb=peak_pss,
            peak_rss_mb_by_category=dict(rss_by),
            peak_pss_mb_by_category=dict(pss_by),
            processes=len(last),
        )

    def machine_cores(self, start: float | None = None, end: float | None = None) -> float | None:
        """Cores the whole machine was busy between `start` and `end`: ours and anyone else's."""
        with self._lock:
            inside = [m for m in self._machine if (start is None or m[0] >= start) and (end is None or m[0] <= end)]
        if len(inside) < 2 or inside[-1][2] <= inside[0][2]:
            return None
        share = (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])
        return share * (os.cpu_count() or 1)

    def rss_series(self, group: str) -> list[dict[str, Any]]:
        """Per sample: time and RSS (and PSS when read) by category, for the soak benchmark."""
        with self._lock:
            samples = list(self.samples.get(group, []))
        series = []
        for s in samples:
            rss: dict[str, float] = defaultdict(float)
            pss: dict[str, float] = defaultdict(float)
            for cat, _ticks, _started, r, p in s.procs.values():
                rss[cat] += r / 1024
                if p is not None:
                    pss[cat] += p / 1024
            series.append({"at": s.at, "rss_mb": dict(rss), "pss_mb": dict(pss) if pss else None})
        return series
